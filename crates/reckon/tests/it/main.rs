//! reckon's integration tests as one test binary (burn is linked once, not once per file): each module is one
//! area, `common` holds the shared helpers and fixture readers.

mod common;

mod bad_input;
mod cli;
mod cmm_parity;
mod cmm_training;
mod configs_and_init;
mod deq_learning;
mod device_head;
mod divergence;
mod fast_path;
mod fuzz;
mod hrm_parity;
mod import;
mod kill;
mod learning;
mod parallel;
mod parity;
mod puzzle_table;
mod resume;
mod rsm_learning;
mod rsm_memory;
mod rsm_parity;
mod rsm_training;
#[cfg(feature = "wgpu")]
mod wgpu;
