//! The `reckon` binary: see `reckon --help`.

use clap::Parser;

fn main() {
    reckon::backend::keep_freed_memory();
    let cli = reckon::cli::Cli::parse();
    if let Err(err) = reckon::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
