//! The `reckon` binary: see `reckon --help`. It picks the backend (`reckon::cli::run`, from `--device`) and owns
//! the CPU benchmark tooling (`bench`), which is not part of the library.

mod bench;

use clap::Parser;

fn main() {
    reckon::backend::keep_freed_memory();
    let cli = reckon::cli::Cli::parse();
    if let Err(err) = reckon::cli::run(cli, bench::run) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
