//! The `reckon` binary: see `reckon --help`. It parses the command line, picks the backend from `--device` (the
//! one place a backend is named) and owns the CPU benchmark tooling (`bench`), which is not part of the library.

mod bench;

/// Large blocks on cache lines (see [`reckon::backend::CacheLineAligned`]).
#[global_allocator]
static ALLOCATOR: reckon::backend::CacheLineAligned = reckon::backend::CacheLineAligned;

use anyhow::Result;
use clap::{Parser, Subcommand};
use reckon::backend::DeviceChoice;
use reckon::cli::Command;
use reckon::kernels::gemm::{with_gemm_dtype, GemmChoice, GemmDtype};

#[derive(Parser, Debug)]
#[command(
    name = "reckon",
    version,
    about = "Train, evaluate and run tiny recursive reasoning models (TRM, HRM, RSM, CMM) on Sudoku and mazes."
)]
struct Cli {
    /// Where to train and evaluate: cpu; cuda / cuda:N (a build with `--features cuda`); wgpu / wgpu:N (Vulkan,
    /// Metal, DX12: a build with `--features wgpu`); tch / tch:cuda:N / tch:mps (LibTorch: `--features tch`).
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceChoice,
    /// Train data-parallel, one rank per listed device of the `--device` kind, e.g. `--device cuda --devices
    /// 0,1,2,3`: the global batch is split evenly, gradients are summed, every rank applies the same update. On
    /// the CPU each entry is one rank run in turn on the one CPU (the weights N devices would reach; a batch in
    /// N slices). Other commands run on the first.
    #[arg(long, global = true, value_delimiter = ',', value_name = "N,N,...")]
    devices: Vec<usize>,
    /// The CPU kernels' GEMM: `auto` (the default: per shape class; the direct kernel for small products where the
    /// CPU has AVX-512, else the crate; in a BLAS build the fastest path, measured once per run), `gemm` (the
    /// pure-Rust crate), `blas` (the system BLAS of a `--features openblas` or `blis` build) or `direct` (AVX-512
    /// tiles without packing). The environment's `RECKON_GEMM` when not given.
    #[arg(long, global = true, value_name = "auto|gemm|blas|direct")]
    gemm: Option<GemmChoice>,
    /// The CPU kernels' weight products: `f32`, `bf16` (operands rounded to bfloat16, sums in f32; AMX tiles
    /// where the CPU has them, else AVX512-BF16 dot products where it has those) or `bf16x3` (f32 values as two bf16 terms in three products: 16 significant bits,
    /// PyTorch's "high" float32 matmul precision, about twice the f32 GEMM's speed on AMX; IEEE f32 products on a
    /// CPU without AMX) in the forward and both
    /// gradients; the weights stay f32. For `train` it sets `train.dtype` (without it, training follows its config,
    /// as the training inside `quickstart` does); other commands run in it.
    #[arg(long, global = true, value_name = "f32|bf16|bf16x3")]
    dtype: Option<GemmDtype>,
    #[command(subcommand)]
    command: BinCommand,
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size of the library's argument structs does not matter.
#[allow(clippy::large_enum_variant)]
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
    let gemm = match cli.gemm {
        Some(choice) => choice,
        None => reckon::kernels::gemm::env_gemm_choice()?,
    };
    reckon::kernels::gemm::set_gemm_choice(gemm);
    let dtype = cli.dtype.unwrap_or_default();
    if dtype != GemmDtype::F32 && cli.device != DeviceChoice::Cpu {
        anyhow::bail!(
            "--dtype {} puts the CPU kernels' weight products on bf16 operands; --device {:?} runs f32 only",
            dtype.name(),
            cli.device
        );
    }
    let mut command = match cli.command {
        BinCommand::Bench(cmd) => return with_gemm_dtype(dtype, || bench::run(cmd, cli.device)),
        BinCommand::Library(command) => command,
    };
    if let (Some(dtype), Command::Train { overrides, .. }) = (cli.dtype, &mut command) {
        overrides.push(format!("train.dtype={}", dtype.name()));
    }
    with_gemm_dtype(dtype, || run_library(command, cli.device, &cli.devices))
}

fn run_library(command: Command, device: DeviceChoice, devices: &[usize]) -> Result<()> {
    let list = |first: usize| if devices.is_empty() { vec![first] } else { devices.to_vec() };
    match device {
        #[cfg(not(feature = "distributed"))]
        DeviceChoice::Cpu => {
            let devices = vec![Default::default(); list(0).len()];
            reckon::cli::run_on::<reckon::backend::CpuTrain>(command, &devices)
        }
        // burn 0.21's `distributed` feature makes autodiff require an all-reducing backend (CUDA).
        #[cfg(feature = "distributed")]
        DeviceChoice::Cpu => anyhow::bail!(
            "this reckon was built with --features distributed, which (burn 0.21) runs only on CUDA: use --device cuda, \
             or a build without that feature for the CPU"
        ),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(index) => {
            let devices: Vec<_> = list(index).into_iter().map(|index| burn::backend::cuda::CudaDevice { index }).collect();
            reckon::cli::run_on::<reckon::backend::CudaTrain>(command, &devices)
        }
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu(index) => {
            let devices: Vec<_> = if devices.is_empty() {
                vec![reckon::backend::wgpu_device(index)]
            } else {
                devices.iter().map(|&i| reckon::backend::wgpu_device(Some(i))).collect()
            };
            reckon::cli::run_on::<reckon::backend::WgpuTrain>(command, &devices)
        }
        #[cfg(feature = "tch")]
        DeviceChoice::Tch(target) => {
            let devices = vec![reckon::backend::tch_device(target); list(0).len()];
            reckon::cli::run_on::<reckon::backend::LibTorchTrain>(command, &devices)
        }
        #[allow(unreachable_patterns)]
        other => Err(other.not_built()),
    }
}
