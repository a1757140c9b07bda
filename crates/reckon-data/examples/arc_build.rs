//! Builds an ARC dataset from HRM-style directories, for a quick look at counts and time:
//! `cargo run --release -p reckon-data --example arc_build -- OUT NUM_AUG DIR...`
//! (e.g. `/tmp/arc-check 10 arc-agi-1/data conceptarc/corpus`). The CLI's `data build arc` is the real entry point.

use reckon_data::arc::{build, ArcBuildConfig, ArcSource};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() >= 3, "usage: arc_build OUT NUM_AUG DIR...");
    let source = ArcSource::dirs(args[2..].iter().map(PathBuf::from).collect());
    let cfg = ArcBuildConfig { num_aug: args[1].parse()?, force: true, ..ArcBuildConfig::new(source) };
    let start = std::time::Instant::now();
    let report = build(&cfg, &PathBuf::from(&args[0]), &|stage, done, total| {
        if done == total {
            eprintln!("{stage}: {done}/{total} at {:.1}s", start.elapsed().as_secs_f64());
        }
    })?;
    println!("{report}\nin {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}
