//! Backends. The default CPU backend is burn's pure-Rust **Flex** (multithreaded gemm through rayon, AVX-512
//! kernels picked at run time with the `avx512` feature). Flex over NdArray: it is burn's maintained CPU backend,
//! and its storage is reachable from outside the crate, which the fused CPU kernels of the performance work need.
//! CUDA (`--features cuda`), wgpu (`--features wgpu`: Vulkan, Metal, DX12) and LibTorch (`--features tch`) builds
//! use the same model code; the GPU backends run with burn's kernel fusion.

use crate::kernels::{FusedOps, TrainInner};

/// A backend reckon trains on: autodiff over a graph-free backend, both with the fused ops (their composed
/// defaults on backends without kernels). Model, trainer, evaluator and inference are generic over it; only the
/// binary picks one ([`DeviceChoice`]).
pub trait TrainBackend: burn::tensor::backend::AutodiffBackend<InnerBackend: TrainInner> + FusedOps {}

impl<B: burn::tensor::backend::AutodiffBackend<InnerBackend: TrainInner> + FusedOps> TrainBackend for B {}

/// Where a command runs (`--device`): `cpu` (default); `cuda` / `cuda:N` in a build with the `cuda` feature;
/// `wgpu` (the best adapter wgpu finds) / `wgpu:N` (the N-th discrete GPU) with the `wgpu` feature;
/// `tch` / `tch:cuda:N` / `tch:mps` (LibTorch's CPU, CUDA or Metal) with the `tch` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    Wgpu(Option<usize>),
    Tch(TchTarget),
}

/// The LibTorch device of `--device tch[:...]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TchTarget {
    Cpu,
    Cuda(usize),
    Mps,
}

impl DeviceChoice {
    /// The cargo feature a build needs for this device.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceChoice::Cpu => None,
            DeviceChoice::Cuda(_) => Some("cuda"),
            DeviceChoice::Wgpu(_) => Some("wgpu"),
            DeviceChoice::Tch(_) => Some("tch"),
        }
    }

    /// The error for a device this build cannot run.
    pub fn not_built(self) -> anyhow::Error {
        let feature = self.feature().unwrap_or("default");
        anyhow::anyhow!("--device {self}: this reckon was built without `--features {feature}` (cargo build --release --features {feature})")
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Wgpu(None) => write!(f, "wgpu"),
            DeviceChoice::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
            DeviceChoice::Tch(TchTarget::Cpu) => write!(f, "tch"),
            DeviceChoice::Tch(TchTarget::Cuda(n)) => write!(f, "tch:cuda:{n}"),
            DeviceChoice::Tch(TchTarget::Mps) => write!(f, "tch:mps"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let index = |n: &str| {
            n.parse::<usize>().map_err(|_| format!("{s:?}: {}:N wants a GPU index", &s[..s.len() - n.len() - 1]))
        };
        match s.split_once(':') {
            None if s == "cpu" => Ok(DeviceChoice::Cpu),
            None if s == "cuda" => Ok(DeviceChoice::Cuda(0)),
            None if s == "wgpu" => Ok(DeviceChoice::Wgpu(None)),
            Some(("cuda", n)) => index(n).map(DeviceChoice::Cuda),
            Some(("wgpu", n)) => index(n).map(|n| DeviceChoice::Wgpu(Some(n))),
            None if s == "tch" => Ok(DeviceChoice::Tch(TchTarget::Cpu)),
            Some(("tch", "cpu")) => Ok(DeviceChoice::Tch(TchTarget::Cpu)),
            Some(("tch", "mps")) => Ok(DeviceChoice::Tch(TchTarget::Mps)),
            Some(("tch", "cuda")) => Ok(DeviceChoice::Tch(TchTarget::Cuda(0))),
            Some(("tch", rest)) if rest.starts_with("cuda:") => {
                index(&rest[5..]).map(|n| DeviceChoice::Tch(TchTarget::Cuda(n)))
            }
            _ => Err(format!("{s:?}: the devices are cpu, cuda[:N], wgpu[:N] and tch[:cpu|:cuda:N|:mps]")),
        }
    }
}

/// Graph-free CPU backend used for inference and the no-grad cycles.
pub type Cpu = burn::backend::Flex;
/// CPU backend with autodiff, used for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type CudaTrain = burn::backend::Autodiff<Cuda>;

#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;
#[cfg(feature = "wgpu")]
pub type WgpuTrain = burn::backend::Autodiff<Wgpu>;

/// The wgpu device `--device wgpu[:N]` names.
#[cfg(feature = "wgpu")]
pub fn wgpu_device(index: Option<usize>) -> burn::backend::wgpu::WgpuDevice {
    match index {
        None => burn::backend::wgpu::WgpuDevice::DefaultDevice,
        Some(n) => burn::backend::wgpu::WgpuDevice::DiscreteGpu(n),
    }
}

#[cfg(feature = "tch")]
pub type LibTorch = burn::backend::LibTorch;
#[cfg(feature = "tch")]
pub type LibTorchTrain = burn::backend::Autodiff<LibTorch>;

/// The LibTorch device `--device tch[:...]` names.
#[cfg(feature = "tch")]
pub fn tch_device(target: TchTarget) -> burn::backend::libtorch::LibTorchDevice {
    use burn::backend::libtorch::LibTorchDevice;
    match target {
        TchTarget::Cpu => LibTorchDevice::Cpu,
        TchTarget::Cuda(n) => LibTorchDevice::Cuda(n),
        TchTarget::Mps => LibTorchDevice::Mps,
    }
}

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

/// The global allocator the `reckon` binary (and this crate's tests) run under: the system's, with every block of
/// 4 KiB or more aligned to a 64-byte cache line.
///
/// Why: glibc aligns blocks to 16 bytes, so a 64-byte row of an activation (one AVX-512 vector, one row of an AMX
/// accumulator tile) straddles two cache lines three times in four, and each such load or store is a split one.
/// Measured on the development machine (2026-12-05, one core), bf16 tile products storing their f32 output to a
/// 16-byte-aligned buffer against a 64-byte-aligned one: `1024×97 · 97×512` 0.50 against 0.82 TFLOP/s,
/// `256×512 · 512×256` 1.23 against 1.54, `256×512 · 512×3072` 0.95 against 1.10. Small blocks keep the system's
/// alignment (the padding would cost more than it saves). Register it with `#[global_allocator]`.
pub struct CacheLineAligned;

impl CacheLineAligned {
    /// Blocks at least this large are cache-line aligned.
    const LARGE: usize = 4096;

    /// `layout` as allocated: its alignment raised to 64 bytes for a large block. A function of the layout
    /// alone, so a block is freed (and resized) with the layout it was allocated with.
    fn widened(layout: std::alloc::Layout) -> std::alloc::Layout {
        if layout.size() >= Self::LARGE && layout.align() < 64 {
            // A power of two, and the size is unchanged (and so cannot overflow when rounded to it: it is far
            // below isize::MAX for any layout `alloc` was given).
            std::alloc::Layout::from_size_align(layout.size(), 64).unwrap_or(layout)
        } else {
            layout
        }
    }
}

// SAFETY: every call is forwarded to the system allocator with the widened layout, which is the same for an
// allocation and its deallocation (a function of size and alignment); `realloc` moves a block whose widened
// alignment changes with its size through a fresh allocation.
unsafe impl std::alloc::GlobalAlloc for CacheLineAligned {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        unsafe { std::alloc::System.alloc(Self::widened(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        unsafe { std::alloc::System.alloc_zeroed(Self::widened(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, Self::widened(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let old = Self::widened(layout);
        // SAFETY (of the layout): the caller guarantees `new_size`, rounded to `layout.align()`, fits isize.
        let new = Self::widened(unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) });
        if old.align() == new.align() {
            return unsafe { std::alloc::System.realloc(ptr, old, new_size) };
        }
        let fresh = unsafe { std::alloc::System.alloc(new) };
        if !fresh.is_null() {
            // SAFETY: both blocks are valid for the smaller size and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                std::alloc::System.dealloc(ptr, old);
            }
        }
        fresh
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

/// The process's peak resident set in MB (MiB, as `ru_maxrss / 1024`), from `/proc/self/status` `VmHWM` (the same
/// figure as `getrusage`'s `ru_maxrss`, without a libc dependency). 0 where unavailable.
pub fn peak_rss_mb() -> f64 {
    vm_hwm_mb(&std::fs::read_to_string("/proc/self/status").unwrap_or_default()).unwrap_or(0.0)
}

/// `VmHWM` of a `/proc/*/status` text, in MB.
pub fn vm_hwm_mb(status: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

/// `tensor` on `device`: itself when it is there already, else copied through host memory. burn 0.21's
/// `Tensor::to_device` between two devices of a CubeCL backend goes through CubeCL's device-to-device
/// communication, which only CUDA implements (on wgpu it panics `not implemented` in `comm_init`); the host copy
/// works on every backend. The data-parallel trainer moves only gradients, puzzle rows, replicas of the weights and
/// (at checkpoints) the carry this way, small next to a step.
pub fn transfer<B: burn::tensor::backend::Backend, const D: usize>(
    tensor: burn::tensor::Tensor<B, D>,
    device: &B::Device,
) -> burn::tensor::Tensor<B, D> {
    if tensor.device() == *device {
        tensor
    } else {
        burn::tensor::Tensor::from_data(tensor.into_data(), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the tests' allocator (the binary's): large blocks start on cache lines, also after growing past the
    /// threshold and back below it, and keep their contents through every move.
    #[test]
    fn large_blocks_are_cache_line_aligned_through_reallocation() {
        let aligned = |p: *const f32| p.cast::<u8>().align_offset(64) == 0;
        for len in [1024, 4096, 100_003, 1 << 22] {
            let v = vec![1.5f32; len];
            assert!(aligned(v.as_ptr()), "a fresh block of {len} f32");
            let z = vec![0.0f32; len];
            assert!(aligned(z.as_ptr()) && z.iter().all(|&x| x == 0.0), "a zeroed block of {len} f32");
        }
        let mut v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        v.reserve_exact(5000);
        assert!(aligned(v.as_ptr()), "grown past the threshold");
        v.extend((100..5000).map(|i| i as f32));
        v.truncate(50);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32), "contents kept through both moves");
        let layout = std::alloc::Layout::from_size_align(10_000, 4).unwrap();
        assert_eq!(CacheLineAligned::widened(layout).align(), 64);
        let small = std::alloc::Layout::from_size_align(100, 4).unwrap();
        assert_eq!(CacheLineAligned::widened(small), small, "small blocks keep their alignment");
    }

    #[test]
    fn device_names_parse_print_and_name_their_feature() {
        for (text, choice, feature) in [
            ("cpu", DeviceChoice::Cpu, None),
            ("cuda:2", DeviceChoice::Cuda(2), Some("cuda")),
            ("wgpu", DeviceChoice::Wgpu(None), Some("wgpu")),
            ("wgpu:1", DeviceChoice::Wgpu(Some(1)), Some("wgpu")),
            ("tch", DeviceChoice::Tch(TchTarget::Cpu), Some("tch")),
            ("tch:cuda:3", DeviceChoice::Tch(TchTarget::Cuda(3)), Some("tch")),
            ("tch:mps", DeviceChoice::Tch(TchTarget::Mps), Some("tch")),
        ] {
            let parsed: DeviceChoice = text.parse().unwrap();
            assert_eq!(parsed, choice, "{text}");
            assert_eq!(parsed.to_string(), text);
            assert_eq!(parsed.feature(), feature);
        }
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("tch:cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Tch(TchTarget::Cuda(0)));
        for bad in ["gpu", "cuda:x", "tch:cuda:y", "tch:rocm"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
        let err = DeviceChoice::Tch(TchTarget::Mps).not_built().to_string();
        assert!(err.contains("--features tch"), "{err}");
    }
}
