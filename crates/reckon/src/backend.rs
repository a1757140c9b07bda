//! Backends. The default CPU backend is burn's pure-Rust **Flex** (multithreaded gemm through rayon, AVX-512
//! kernels picked at run time with the `avx512` feature). Flex over NdArray: it is burn's maintained CPU backend,
//! and its storage is reachable from outside the crate, which the fused CPU kernels of the performance work need.
//! CUDA (`--features cuda`) and LibTorch (`--features tch`) builds use the same model code.

/// Graph-free CPU backend used for inference and the no-grad cycles.
pub type Cpu = burn::backend::Flex;
/// CPU backend with autodiff, used for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type CudaTrain = burn::backend::Autodiff<Cuda>;

#[cfg(feature = "tch")]
pub type LibTorch = burn::backend::LibTorch;
#[cfg(feature = "tch")]
pub type LibTorchTrain = burn::backend::Autodiff<LibTorch>;
