//! reckon-data's integration tests as one test binary, one module per area.

mod arc;
mod arc_eval;
mod arc_reference;
mod builder;
mod dataset;
mod maze;
mod reference_format;
mod sampler;
mod sudoku_fixtures;
