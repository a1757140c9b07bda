//! The `reckon` binary: see `reckon --help`. It parses the command line, picks the backend from `--device` (the
//! one place a backend is named) and owns the CPU benchmark tooling (`bench`), which is not part of the library.

mod bench;

use anyhow::Result;
use clap::{Parser, Subcommand};
use reckon::backend::{CpuTrain, DeviceChoice};
use reckon::cli::Command;

#[derive(Parser, Debug)]
#[command(
    name = "reckon",
    version,
    about = "Train, evaluate and run tiny recursive reasoning models (TRM, HRM, RSM, CMM) on Sudoku and mazes."
)]
struct Cli {
    /// Where to train and evaluate: cpu; cuda / cuda:N (a build with `--features cuda`); wgpu / wgpu:N (Vulkan,
    /// Metal, DX12: a build with `--features wgpu`).
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceChoice,
    #[command(subcommand)]
    command: BinCommand,
}

#[derive(Subcommand, Debug)]
enum BinCommand {
    #[command(flatten)]
    Library(Command),
    /// Benchmarks: training/inference step times and the Sudoku solver.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    reckon::backend::keep_freed_memory();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let command = match cli.command {
        BinCommand::Bench(cmd) => {
            anyhow::ensure!(
                cli.device == DeviceChoice::Cpu,
                "reckon bench measures the CPU kernels: run it without --device"
            );
            return bench::run(cmd);
        }
        BinCommand::Library(command) => command,
    };
    match cli.device {
        DeviceChoice::Cpu => reckon::cli::run_on::<CpuTrain>(command, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(index) => {
            reckon::cli::run_on::<reckon::backend::CudaTrain>(command, burn::backend::cuda::CudaDevice { index })
        }
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu(index) => {
            reckon::cli::run_on::<reckon::backend::WgpuTrain>(command, reckon::backend::wgpu_device(index))
        }
        #[allow(unreachable_patterns)]
        other => Err(other.not_built()),
    }
}
