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

/// Makes glibc `malloc` keep freed memory for reuse instead of handing it back to the kernel.
///
/// By default, glibc serves large blocks with a fresh `mmap` and trims freed memory at the top of the heap, so
/// every large tensor burn allocates between our pooled kernels is page-faulted in (and zeroed by the kernel)
/// again on every step: tens of thousands of faults per step, measured by `reckon bench`. Raising the mmap
/// threshold to its maximum (32 MiB on 64-bit) and disabling trimming keeps those blocks in the heap. The
/// same effect as the baseline's `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…:trim_threshold=…`, applied by the
/// binary itself. The heap does not shrink afterwards, which is what a long training process wants.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called at start-up, before any thread is spawned.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands the heap's free memory back to the kernel (glibc `malloc_trim`), e.g. between benchmarks.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
