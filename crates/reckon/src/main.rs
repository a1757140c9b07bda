//! The `reckon` binary: see `reckon --help`.

use clap::Parser;

fn main() {
    let cli = reckon::cli::Cli::parse();
    if let Err(err) = reckon::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
