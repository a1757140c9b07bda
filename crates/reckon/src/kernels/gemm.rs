//! The single-threaded GEMM that every CPU kernel runs on its row block, and which implementation runs it.
//!
//! Three implementations ([`GemmPath`]):
//! - [`GemmPath::Crate`]: the pure-Rust `gemm` crate (AVX-512 or FMA micro-kernels, picked at run time). Always
//!   built; the default.
//! - [`GemmPath::Blas`]: a system BLAS through its CBLAS interface: OpenBLAS (`--features openblas`, Debian's
//!   `libopenblas-dev`) or BLIS (`--features blis`, `libblis-dev`). Run single-threaded: the kernels already split
//!   the work across rayon's threads, one GEMM per task.
//! - [`GemmPath::Direct`]: register-blocked AVX-512 tiles straight from the operands, no packing (`gemm/direct.rs`).
//!   Built on x86-64, available where the CPU has AVX-512F. It runs the f32 weight products whose right operand is
//!   a weight (`x · Wᵀ`, `dy · W`) from the weight laid out once per optimiser step in [`Panels`] ([`weight_panels`]:
//!   under `direct`, and under `auto` in a build without a system BLAS), and under `auto` every product but thin
//!   ones ([`auto_pick`]) and, on Intel, those with a transposed operand ([`auto_path`]).
//!
//! Which one runs is a process-wide [`GemmChoice`] (`--gemm`, or the environment's `RECKON_GEMM`): one path for
//! every call, or `auto`, which picks per shape class ([`ShapeClass`]): without a system BLAS by rule (the direct
//! kernel but for thin products where the CPU has it, the crate otherwise), with one by timing the paths on that
//! class's canonical shape once per process. The paths compute the same products up to rounding; `kernels::tests`
//! runs every fused kernel on each path against the composed burn ops. (A build without a BLAS picks by rule, so
//! its runs are bit-reproducible; in a BLAS build, `auto` may pick differently from one process to the next, so a
//! resumed run that must match an uninterrupted one bit for bit names its path.)
//!
//! Measured (`reckon bench gemm`, Intel Xeon with AVX-512, 2 cores, Debian's OpenBLAS 0.3.21): the crate is faster
//! on the MLP blocks (346 vs 288 GFLOP/s, FLOP-weighted) and larger products (333 vs 302); OpenBLAS on the small
//! products of attention at head dimension 32 (305 vs 253), both `Q·Kᵀ` and `P·V`. In a later run the same day,
//! the default build: the direct kernel 271 against the crate's 247 on those, the crate 330 against the direct kernel's 297 on
//! the thin MLP blocks of a hidden-64 model.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use gemm::{gemm, Parallelism};

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod amx;
pub(crate) mod bf16;
#[cfg(target_arch = "x86_64")]
mod direct;
#[cfg(target_arch = "x86_64")]
mod dot;
/// Elsewhere the direct kernel is never available, so never called.
#[cfg(not(target_arch = "x86_64"))]
mod direct {
    pub(super) fn available() -> bool {
        false
    }
    pub(super) fn matmul(_: usize, _: usize, _: usize, _: &mut [f32], _: bool, _: super::Mat, _: super::Mat) {
        unreachable!("the direct GEMM is x86-64 only")
    }
    /// Never made: [`super::weight_panels`] is false without the direct kernel.
    pub(crate) enum Panels {}
    impl Panels {
        pub(crate) fn new(_: super::Mat, _: usize, _: usize) -> Self {
            unreachable!("the direct GEMM is x86-64 only")
        }
        pub(crate) fn depth(&self) -> usize {
            match *self {}
        }
        pub(crate) fn cols(&self) -> usize {
            match *self {}
        }
        pub(crate) fn count(&self) -> usize {
            match *self {}
        }
        pub(crate) fn width(&self, _: usize) -> usize {
            match *self {}
        }
        pub(crate) fn start(&self, _: usize) -> usize {
            match *self {}
        }
        pub(crate) fn split_at(_: super::Mat, _: usize, _: usize, _: usize) -> Self {
            unreachable!("the direct GEMM is x86-64 only")
        }
    }
    pub(crate) fn matmul_panels(_: usize, _: &mut [f32], _: bool, _: super::Mat, panels: &Panels) {
        match *panels {}
    }
    pub(crate) fn matmul_panel(_: usize, _: &mut [f32], _: usize, _: bool, _: super::Mat, panels: &Panels, _: usize) {
        match *panels {}
    }
    pub(crate) fn matmul_glu_grads(_: usize, _: usize, _: usize, _: super::Mat, _: super::Mat, _: super::GluGrads) {
        unreachable!("the direct GEMM is x86-64 only")
    }
    pub(crate) fn matmul_panels_glu_grads(_: usize, _: super::Mat, panels: &Panels, _: super::GluGrads) {
        match *panels {}
    }
    pub(crate) fn matmul_gated(_: usize, _: usize, _: usize, _: super::Mat, _: super::Mat, _: super::Gated) {
        unreachable!("the direct GEMM is x86-64 only")
    }
    pub(crate) fn matmul_panel_gated(_: usize, _: super::Mat, panels: &Panels, _: usize, _: super::Gated) {
        match *panels {}
    }
}
pub(crate) use direct::Panels;

/// Where the direct kernel puts the gradients of a SiLU-gated product `act = silu(gate) · up` (SwiGLU), computed
/// in the epilogue of the GEMM that yields the product's gradient `d_act`, from each finished tile's registers:
/// `d_act` is never written out, and the gates are computed while the GEMM's operands are still in cache. (As a
/// pass of its own after the GEMM, which wrote `d_act` and read it back, the gating was 4.6% of shape B's training
/// samples in `perf`; in the epilogue it is 1.6%.) Element `(r, c)` of the product: its gate pre-activation at
/// `g[r·stride + c]`, its up one at `g[r·stride + up + c]`; their gradients at the same places of `dg`, and the
/// product itself to `act[r·act_stride + c]`.
pub(crate) struct GluGrads<'a> {
    pub g: &'a [f32],
    pub dg: &'a mut [f32],
    pub stride: usize,
    pub up: usize,
    pub act: &'a mut [f32],
    pub act_stride: usize,
}

/// Where the direct kernel puts a SiLU-gated product `act = silu(gate) · up` (SwiGLU's forward), computed in the
/// epilogue of the GEMM that yields the up projection, from each finished tile's registers, instead of a pass that
/// read both projections back (in `perf` on the Zen 4 development machine, shape B's inference spent 2.9% of its
/// samples in that pass and spends 2.3% in the epilogue: the sigmoid is most of either). Element `(r, c)`:
/// its gate pre-activation (already computed) at `g[r·stride + c]`; the up projection kept at
/// `g[r·stride + up + c]` when `up` is given (training keeps both for the backward), not stored at all otherwise;
/// the product to `act[r·act_stride + c]`.
pub(crate) struct Gated<'a> {
    pub g: &'a mut [f32],
    pub stride: usize,
    pub up: Option<usize>,
    pub act: &'a mut [f32],
    pub act_stride: usize,
}

/// A matrix operand of [`matmul_1t`]: its elements and the strides (in elements) between rows and columns.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with rows of `cols` elements.
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// A row-major matrix whose rows start `row_stride` elements apart (a column block of a wider matrix, e.g.
    /// one head of packed projections).
    pub(crate) fn strided_rows(data: &'a [f32], row_stride: usize) -> Self {
        Self { data, row_stride, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with rows of `cols` elements.
    pub(crate) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols }
    }

    fn assert_covers(&self, rows: usize, cols: usize) {
        if rows == 0 || cols == 0 {
            return; // nothing is read
        }
        let last = (rows.max(1) - 1) * self.row_stride + (cols.max(1) - 1) * self.col_stride;
        assert!(last < self.data.len(), "matmul operand out of bounds");
    }

    /// Whether the operand is read transposed from row-major storage (its columns are contiguous).
    fn is_transposed(&self) -> bool {
        self.col_stride != 1
    }
}

/// An implementation of the kernels' GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmPath {
    /// The pure-Rust `gemm` crate.
    Crate,
    /// The system BLAS this binary was linked with (see [`blas_name`]).
    Blas,
    /// Register-blocked AVX-512 tiles without packing, for small products (x86-64 CPUs with AVX-512F).
    Direct,
}

impl GemmPath {
    /// Every path this binary was built with.
    pub fn available() -> Vec<GemmPath> {
        let mut paths = vec![GemmPath::Crate];
        if blas_name().is_some() {
            paths.push(GemmPath::Blas);
        }
        if direct::available() {
            paths.push(GemmPath::Direct);
        }
        paths
    }

    /// Its name in tables and on the command line: `gemm` for the crate, the BLAS library's name otherwise.
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Crate => "gemm",
            GemmPath::Blas => blas_name().unwrap_or("blas"),
            GemmPath::Direct => "direct",
        }
    }
}

/// The system BLAS linked into this binary (`openblas` or `blis`), if any.
pub fn blas_name() -> Option<&'static str> {
    if cfg!(feature = "openblas") {
        Some("openblas")
    } else if cfg!(feature = "blis") {
        Some("blis")
    } else {
        None
    }
}

/// Which path the kernels use: one for every GEMM, or `Auto` (the faster per shape class, measured).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GemmChoice {
    #[default]
    Auto,
    Only(GemmPath),
}

impl std::str::FromStr for GemmChoice {
    type Err = anyhow::Error;

    /// `auto`, `gemm` (the crate), or `blas` / the linked library's name.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "auto" => Ok(GemmChoice::Auto),
            "gemm" | "crate" => Ok(GemmChoice::Only(GemmPath::Crate)),
            "direct" if direct::available() => Ok(GemmChoice::Only(GemmPath::Direct)),
            "direct" => anyhow::bail!("--gemm direct: this CPU has no AVX-512F, which the direct kernel needs"),
            "blas" | "openblas" | "blis" => match blas_name() {
                Some(name) if s == "blas" || s == name => Ok(GemmChoice::Only(GemmPath::Blas)),
                Some(name) => anyhow::bail!("--gemm {s}: this binary is linked with {name}, not {s}"),
                None => anyhow::bail!(
                    "--gemm {s}: this binary has no system BLAS; build it with `--features openblas` (Debian: \
                     libopenblas-dev) or `--features blis` (libblis-dev)"
                ),
            },
            other => anyhow::bail!("--gemm {other:?}: expected auto, gemm, blas, or direct"),
        }
    }
}

const CHOICE_AUTO: u8 = 0;
/// Not set yet: the first read takes `RECKON_GEMM` from the environment.
const CHOICE_UNSET: u8 = u8::MAX;
static CHOICE: AtomicU8 = AtomicU8::new(CHOICE_UNSET);

/// The choice the environment's `RECKON_GEMM` names (`auto` when unset), or why it names none.
pub fn env_gemm_choice() -> anyhow::Result<GemmChoice> {
    match std::env::var("RECKON_GEMM") {
        Ok(v) => v.parse().map_err(|e: anyhow::Error| e.context("RECKON_GEMM")),
        Err(_) => Ok(GemmChoice::Auto),
    }
}

/// [`env_gemm_choice`] for the kernels, which have no caller to return an error to: an invalid value is reported
/// and ignored (the binary refuses it up front).
fn choice_from_env() -> GemmChoice {
    env_gemm_choice().unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; using auto");
        GemmChoice::Auto
    })
}

fn encode(choice: GemmChoice) -> u8 {
    match choice {
        GemmChoice::Auto => CHOICE_AUTO,
        GemmChoice::Only(GemmPath::Crate) => 1,
        GemmChoice::Only(GemmPath::Blas) => {
            assert!(blas_name().is_some(), "no system BLAS in this build");
            2
        }
        GemmChoice::Only(GemmPath::Direct) => {
            assert!(direct::available(), "no AVX-512F for the direct GEMM");
            3
        }
    }
}

/// Sets the process-wide [`GemmChoice`]; returns the previous one.
pub fn set_gemm_choice(choice: GemmChoice) -> GemmChoice {
    let previous = gemm_choice();
    CHOICE.store(encode(choice), Ordering::SeqCst);
    previous
}

/// The process-wide [`GemmChoice`]: the last one set, else `RECKON_GEMM`'s (so a test run can be put on one path:
/// `RECKON_GEMM=blas cargo test --features openblas`), else `auto`.
pub fn gemm_choice() -> GemmChoice {
    match CHOICE.load(Ordering::Relaxed) {
        CHOICE_UNSET => {
            let from_env = encode(choice_from_env());
            let _ = CHOICE.compare_exchange(CHOICE_UNSET, from_env, Ordering::SeqCst, Ordering::SeqCst);
            decode(CHOICE.load(Ordering::SeqCst))
        }
        code => decode(code),
    }
}

fn decode(code: u8) -> GemmChoice {
    match code {
        1 => GemmChoice::Only(GemmPath::Crate),
        2 => GemmChoice::Only(GemmPath::Blas),
        3 => GemmChoice::Only(GemmPath::Direct),
        _ => GemmChoice::Auto,
    }
}

/// Runs `f` with every GEMM on `path`, then restores the previous choice. Process-wide (the GEMMs run on rayon's
/// threads), so concurrent callers are serialised: two tests forcing different paths cannot overlap.
pub fn with_gemm_path<R>(path: GemmPath, f: impl FnOnce() -> R) -> R {
    static EXCLUSIVE: Mutex<()> = Mutex::new(());
    let _guard = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    struct Restore(GemmChoice);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_gemm_choice(self.0);
        }
    }
    let _restore = Restore(set_gemm_choice(GemmChoice::Only(path)));
    f()
}

/// The element type of the CPU kernels' weight products (`train.dtype`, `--dtype`): f32, or bf16 with f32 sums
/// ([`bf16`]) for the forward products (`x · Wᵀ`), the input gradients' (`dy · W`) and the weight gradients'
/// (`dyᵀ · x`), as PyTorch's autocast does, or f32 values split into two bf16 terms in three products (`bf16x3`,
/// 16 significant bits: PyTorch's `"high"` float32 matmul precision; IEEE f32 where the CPU has no AMX); the attention's per-head products, norms,
/// master weights and the optimiser stay f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmDtype {
    #[default]
    F32,
    Bf16,
    Bf16x3,
}

impl std::str::FromStr for GemmDtype {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "f32" => Ok(GemmDtype::F32),
            "bf16" => Ok(GemmDtype::Bf16),
            "bf16x3" => Ok(GemmDtype::Bf16x3),
            other => anyhow::bail!("dtype {other:?}: expected f32, bf16 or bf16x3"),
        }
    }
}

impl GemmDtype {
    pub fn name(self) -> &'static str {
        match self {
            GemmDtype::F32 => "f32",
            GemmDtype::Bf16 => "bf16",
            GemmDtype::Bf16x3 => "bf16x3",
        }
    }

    /// The bf16 operands' precision, for the dtypes whose products run on bf16 operands here.
    ///
    /// `bf16x3` runs on bf16 operands only where AMX is: without it, its three products (emulated on the f32 GEMM
    /// at three times the depth) would cost about three f32 products, so the products run in IEEE f32, which keeps
    /// more than the 16 bits promised. PyTorch's `"high"` float32 matmul precision does the same on a CPU without
    /// a faster path.
    pub(crate) fn bf16_precision(self) -> Option<bf16::Precision> {
        match self {
            GemmDtype::F32 => None,
            GemmDtype::Bf16 => Some(bf16::Precision::Bf16),
            GemmDtype::Bf16x3 => bf16::amx_available().then_some(bf16::Precision::Bf16x3),
        }
    }
}

/// Whether bf16 products run on AMX tiles on this machine (see [`bf16_engine`]).
pub fn bf16_on_amx() -> bool {
    bf16::amx_available()
}

/// Where the products of `--dtype bf16` run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Engine {
    /// AMX tiles (Intel Sapphire Rapids and later).
    Amx,
    /// AVX512-BF16 dot products (AMD Zen 4 and later, Intel Cooper Lake).
    DotProducts,
    /// The f32 GEMM on the rounded operands: the same results, slower than f32.
    Emulated,
}

impl Bf16Engine {
    pub fn name(self) -> &'static str {
        match self {
            Bf16Engine::Amx => "AMX tiles",
            Bf16Engine::DotProducts => "AVX512-BF16 dot products",
            Bf16Engine::Emulated => "emulated on the f32 GEMM",
        }
    }
}

/// The engine of this machine's bf16 products (`RECKON_AMX=off` rules out AMX).
pub fn bf16_engine() -> Bf16Engine {
    #[cfg(target_arch = "x86_64")]
    let dot = dot::available();
    #[cfg(not(target_arch = "x86_64"))]
    let dot = false;
    if bf16::amx_available() {
        Bf16Engine::Amx
    } else if dot {
        Bf16Engine::DotProducts
    } else {
        Bf16Engine::Emulated
    }
}

thread_local! {
    static GEMM_DTYPE: std::cell::Cell<GemmDtype> = const { std::cell::Cell::new(GemmDtype::F32) };
}

/// Runs `f` with the CPU kernels' weight products in `dtype` on the calling thread, then restores the previous
/// dtype. Scoped and per thread like [`crate::kernels::with_fast_path`]: a kernel reads it once where it is called
/// (its worker threads never do), so a bf16 run cannot change what concurrent work in the same process computes.
pub fn with_gemm_dtype<R>(dtype: GemmDtype, f: impl FnOnce() -> R) -> R {
    super::with_thread_setting(&GEMM_DTYPE, dtype, f)
}

/// The calling thread's [`GemmDtype`] (f32 outside [`with_gemm_dtype`]).
pub fn gemm_dtype() -> GemmDtype {
    GEMM_DTYPE.with(|d| d.get())
}

/// Per-path call counters, one cache line per rayon thread slot: the attention kernels make tens of thousands of
/// small GEMM calls per step from every core, and one shared counter would bounce its cache line between them.
#[repr(align(64))]
struct CallCounters([AtomicU64; 3]);

const COUNTER_SLOTS: usize = 16;
static CALLS: [CallCounters; COUNTER_SLOTS] =
    [const { CallCounters([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]) }; COUNTER_SLOTS];

fn count_call(path: GemmPath) {
    let slot = rayon::current_thread_index().map_or(0, |i| (i + 1) % COUNTER_SLOTS);
    CALLS[slot].0[path as usize].fetch_add(1, Ordering::Relaxed);
}

/// GEMM calls made on `path` since the process started (what a test forcing a path checks).
pub fn gemm_calls(path: GemmPath) -> u64 {
    CALLS.iter().map(|slot| slot.0[path as usize].load(Ordering::Relaxed)).sum()
}

/// The shape of one GEMM call: `[m×k]·[k×n]`, each operand plain or transposed, into a fresh or accumulated output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs_transposed: bool,
    pub rhs_transposed: bool,
    pub accumulate: bool,
}

impl GemmShape {
    pub fn flop(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }

    /// `m×n×k` plus the layout (`ᵀ` on a transposed operand, `+=` when accumulating).
    pub fn label(&self) -> String {
        format!(
            "{}{}x{}{}x{}{}",
            self.m,
            if self.lhs_transposed { "ᵀ" } else { "" },
            self.n,
            if self.rhs_transposed { "ᵀ" } else { "" },
            self.k,
            if self.accumulate { " +=" } else { "" }
        )
    }

    /// Its [`ShapeClass`].
    pub fn class(&self) -> ShapeClass {
        ShapeClass::of(self.m, self.n, self.k, self.rhs_transposed)
    }
}

/// Shape classes the `auto` choice decides per: GEMMs of one class favour the same implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShapeClass {
    /// Under 2²⁰ multiply-adds, the right operand row-major: attention's per-head products (97×97×32 at head dim
    /// 32), where a call's fixed costs (packing, dispatch) weigh most.
    Small,
    /// Otherwise some dimension ≤ 64: thin products (the MLP blocks of hidden-64 models), where packing and edge
    /// tiles dominate.
    Thin,
    /// Every dimension > 64, under 2²⁵ multiply-adds: the row blocks of the MLP sub-layers.
    Block,
    /// Larger products.
    Large,
}

impl ShapeClass {
    pub const ALL: [ShapeClass; 4] = [ShapeClass::Small, ShapeClass::Thin, ShapeClass::Block, ShapeClass::Large];

    fn of(m: usize, n: usize, k: usize, rhs_transposed: bool) -> Self {
        if m * n * k < 1 << 20 && !rhs_transposed {
            ShapeClass::Small
        } else if m.min(n).min(k) <= 64 {
            ShapeClass::Thin
        } else if m * n * k < 1 << 25 {
            ShapeClass::Block
        } else {
            ShapeClass::Large
        }
    }

    /// The shape `auto` times the paths on for this class (shapes of the bench models: the attention scores at
    /// head dim 32, the quickstart's channel MLP at hidden 64, a channel-MLP row block at hidden 128, the token
    /// mixer at hidden 512).
    fn canonical(self) -> GemmShape {
        let (m, n, k) = match self {
            ShapeClass::Small => (97, 97, 32),
            ShapeClass::Thin => (216, 512, 64),
            ShapeClass::Block => (128, 1024, 128),
            ShapeClass::Large => (1024, 512, 97),
        };
        GemmShape { m, n, k, lhs_transposed: false, rhs_transposed: false, accumulate: false }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The path `auto` picks for a class. Without a system BLAS, by rule, so runs reproduce bit for bit across
/// processes: the direct kernel for every class but thin products where the CPU has it, the crate for thin products
/// and where it has not. Measured with `reckon bench gemm` on the shapes of the bench models, FLOP-weighted, direct
/// against the crate: on the Zen 4 development machine (2 cores, 2026-12-05) small 216 vs 204 GFLOP/s, block 222
/// vs 218 (shapes A and C), block 205 vs 193 and large 221 vs 214 (shape B); on an Intel Xeon (2026-12-04)
/// attention's small products 271 vs 247, but on the thin MLP blocks of a hidden-64 model the crate was ahead, 330
/// to 297. With a BLAS, the fastest of the class's candidates (the direct kernel among them, but for thin
/// products), timed once per process, the first time the class is used.
pub fn auto_pick(class: ShapeClass) -> GemmPath {
    static PICKS: [OnceLock<GemmPath>; 4] = [const { OnceLock::new() }; 4];
    let direct = class != ShapeClass::Thin && direct::available();
    if blas_name().is_none() {
        return if direct { GemmPath::Direct } else { GemmPath::Crate };
    }
    *PICKS[class.index()].get_or_init(|| {
        let candidates: Vec<GemmPath> =
            GemmPath::available().into_iter().filter(|&p| p != GemmPath::Direct || direct).collect();
        fastest_path(&class.canonical(), &candidates)
    })
}

/// The path `auto` runs `shape` on: its class's pick ([`auto_pick`]), except that on an Intel CPU, in a build
/// without a system BLAS, a product with a transposed operand (the weight gradients `dgᵀ·x` and `dzᵀ·act`, the token
/// mixer's products with `xᵀ`), small ones apart, runs on the crate, which packs its operands.
///
/// Why: the direct kernel reads a transposed left operand down its columns, one broadcast per summed index with
/// the rows a whole weight's width apart (12 KiB for the channel MLP's `dgᵀ` at hidden 512, every line in one L1
/// set), and copies a transposed right operand into panels first. On the Intel development machine (family 6 model
/// 207, 2026-12-06, `reckon bench gemm --shape B`, both cores) that ran `3072ᵀx512x194 +=` at 115 GFLOP/s against
/// the crate's 218, `97ᵀx512x1024 +=` at 80 against 140 and `1024x97ᵀx512 +=` at 159 against 196; in four
/// alternated pairs of runs of B's training step, the step was 1.07–1.31x as fast with these products on the crate
/// (C's 0.98–1.15x, A's 0.95–1.15x). On the Zen 4 machine (2026-12-05) the direct
/// kernel ran the same weight gradients close to its FMA limit, and all-direct was the faster `auto` there, so other
/// CPUs keep the class's pick. Keyed on the vendor, a fixed property of the
/// machine, so a run still reproduces bit for bit from one process to the next.
pub fn auto_path(shape: &GemmShape) -> GemmPath {
    auto_path_on(shape, cpu_is_intel(), blas_name().is_some())
}

fn auto_path_on(shape: &GemmShape, intel: bool, blas: bool) -> GemmPath {
    let class = shape.class();
    let transposed = shape.lhs_transposed || shape.rhs_transposed;
    if intel && !blas && transposed && class != ShapeClass::Small {
        return GemmPath::Crate;
    }
    auto_pick(class)
}

/// Whether the CPU's vendor string (CPUID leaf 0) is `GenuineIntel`.
fn cpu_is_intel() -> bool {
    static INTEL: OnceLock<bool> = OnceLock::new();
    *INTEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // The vendor string's twelve bytes, four per register in this order.
            let id = std::arch::x86_64::__cpuid(0);
            [id.ebx, id.edx, id.ecx].map(u32::to_le_bytes).as_flattened() == b"GenuineIntel"
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// The fastest of `candidates` on `shape`, single-threaded: the best of several timed rounds each.
pub fn fastest_path(shape: &GemmShape, candidates: &[GemmPath]) -> GemmPath {
    let mut timed: Vec<(GemmPath, f64)> = candidates.iter().map(|&p| (p, time_shape(p, shape, 1, 0.02).0)).collect();
    timed.sort_by(|a, b| b.1.total_cmp(&a.1));
    timed[0].0
}

/// GFLOP/s of `shape` on `path` with `parallel` threads each running its own copy (the kernels' situation: every
/// core busy with its own block), timed for about `seconds`: (the best round's GFLOP/s, the rounds' median).
pub fn time_shape(path: GemmPath, shape: &GemmShape, parallel: usize, seconds: f64) -> (f64, f64) {
    let GemmShape { m, n, k, accumulate, .. } = *shape;
    timed_rounds(shape, parallel, seconds, |reps| {
        with_operands(shape, |lhs, rhs| {
            let mut c = vec![0.0f32; m * n];
            let t = std::time::Instant::now();
            for _ in 0..reps {
                matmul_on(path, m, n, k, &mut c, accumulate, lhs, rhs);
            }
            t.elapsed().as_secs_f64()
        })
    })
}

/// `f` on constant operands of `shape` (transposed where it says).
fn with_operands<R>(shape: &GemmShape, f: impl FnOnce(Mat, Mat) -> R) -> R {
    let GemmShape { m, n, k, lhs_transposed, rhs_transposed, .. } = *shape;
    let (a, b) = (vec![0.5f32; m * k], vec![0.25f32; k * n]);
    let lhs = if lhs_transposed { Mat::transposed(&a, m) } else { Mat::rows(&a, k) };
    let rhs = if rhs_transposed { Mat::transposed(&b, k) } else { Mat::rows(&b, n) };
    f(lhs, rhs)
}

/// As [`time_shape`], for the bf16 product (`--dtype bf16`'s weight products, on [`bf16_engine`]), operands
/// converted to the tiles' layout beforehand (as a weight is, once per optimiser step); `None` where the bf16
/// products are only emulated.
pub fn time_bf16_shape(shape: &GemmShape, parallel: usize, seconds: f64) -> Option<(f64, f64)> {
    use bf16::{Bf16Matrix, Side};
    let GemmShape { m, n, k, accumulate, .. } = *shape;
    (bf16_engine() != Bf16Engine::Emulated).then(|| {
        timed_rounds(shape, parallel, seconds, |reps| {
            let (lhs, rhs) = with_operands(shape, |lhs, rhs| {
                let precision = bf16::Precision::Bf16;
                (Bf16Matrix::new(lhs, m, k, Side::Left, precision), Bf16Matrix::new(rhs, k, n, Side::Right, precision))
            });
            let mut c = vec![0.0f32; m * n];
            let t = std::time::Instant::now();
            for _ in 0..reps {
                bf16::matmul(&mut c, accumulate, &lhs, &rhs);
            }
            t.elapsed().as_secs_f64()
        })
    })
}

/// Rounds of `run(reps)` (seconds for `reps` products) on `parallel` threads at once, for about `seconds`:
/// (the best round's GFLOP/s, the rounds' median).
fn timed_rounds(shape: &GemmShape, parallel: usize, seconds: f64, run: impl Fn(usize) -> f64 + Sync) -> (f64, f64) {
    use rayon::prelude::*;
    let reps = ((2e8 / shape.flop().max(1.0)).ceil() as usize).max(1);
    let mut rounds = Vec::new();
    let started = std::time::Instant::now();
    while rounds.len() < 3 || (started.elapsed().as_secs_f64() < seconds && rounds.len() < 50) {
        let worst = (0..parallel).into_par_iter().map(|_| run(reps)).reduce(|| 0.0, f64::max);
        rounds.push(parallel as f64 * shape.flop() * reps as f64 / worst / 1e9);
    }
    rounds.sort_by(f64::total_cmp);
    (rounds[rounds.len() - 1], rounds[rounds.len() / 2])
}

static RECORDING: AtomicBool = AtomicBool::new(false);
static RECORDED: Mutex<Option<HashMap<GemmShape, u64>>> = Mutex::new(None);

/// Runs `f` and returns every GEMM shape the kernels ran meanwhile (in any thread), with its call count.
pub fn record_gemm_shapes<R>(f: impl FnOnce() -> R) -> (R, Vec<(GemmShape, u64)>) {
    *RECORDED.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
    RECORDING.store(true, Ordering::SeqCst);
    let out = f();
    RECORDING.store(false, Ordering::SeqCst);
    let map = RECORDED.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    let mut shapes: Vec<_> = map.into_iter().collect();
    shapes.sort();
    (out, shapes)
}

/// `dst[m×n]` (row-major) `= lhs[m×k] · rhs[k×n]`, plus the old `dst` when `accumulate`, on the calling thread
/// (the kernels parallelise over row blocks instead, which keeps each block's intermediates in cache), on the
/// path the [`GemmChoice`] gives.
pub(crate) fn matmul_1t(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
    let shape =
        GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: rhs.is_transposed(), accumulate };
    record(shape);
    let path = match gemm_choice() {
        GemmChoice::Only(path) => path,
        GemmChoice::Auto => auto_path(&shape),
    };
    matmul_on(path, m, n, k, dst, accumulate, lhs, rhs);
}

/// Whether the f32 weight products take their right operand as [`Panels`] on the direct kernel: where the CPU has
/// AVX-512F and the choice is `direct`, or `auto` without a system BLAS (with one, `auto` times the paths per class
/// instead). On the Zen 4 development machine this took the channel MLP's products off the `gemm` crate, which
/// repacks the weight in every call, mostly from beyond L2 (9% of shape B's training step went to packing).
pub(crate) fn weight_panels() -> bool {
    direct::available()
        && match gemm_choice() {
            GemmChoice::Only(path) => path == GemmPath::Direct,
            GemmChoice::Auto => blas_name().is_none(),
        }
}

/// `dst[m×n] (+)= lhs[m×k] · B` for a weight `B` laid out as [`Panels`] (see [`weight_panels`]), on the calling
/// thread.
pub(crate) fn matmul_panels_1t(m: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, panels: &Panels) {
    let (n, k) = (panels.cols(), panels.depth());
    let shape = GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: false, accumulate };
    record(shape);
    lhs.assert_covers(m, k);
    count_call(GemmPath::Direct);
    direct::matmul_panels(m, dst, accumulate, lhs, panels);
}

/// `dst[m×w] (+)= lhs[m×k] · B[:, s..][..w]` for panel `g` (from column `s`, `w` wide) of a weight laid out as
/// [`Panels`], into the first `w` columns of `dst`'s rows (`dst_stride` apart), on the calling thread: the fused
/// SwiGLU forward's products (see [`weight_panels`]).
pub(crate) fn matmul_panel_1t(
    m: usize,
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    lhs: Mat,
    panels: &Panels,
    g: usize,
) {
    let (n, k) = (panels.width(g), panels.depth());
    record(GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: false, accumulate });
    lhs.assert_covers(m, k);
    count_call(GemmPath::Direct);
    direct::matmul_panel(m, dst, dst_stride, accumulate, lhs, panels, g);
}

/// [`matmul_1t`] on the direct kernel whatever the choice (the CPU must have AVX-512F): for the slices of the fused
/// token-mixer forward, which its caller runs where [`weight_panels`] says the weight products take the direct
/// kernel (on the `gemm` crate, each slice would repack the whole right operand).
pub(crate) fn matmul_direct_1t(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
    let shape =
        GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: rhs.is_transposed(), accumulate };
    record(shape);
    matmul_on(GemmPath::Direct, m, n, k, dst, accumulate, lhs, rhs);
}

/// `d_act[m×n] = lhs[m×k] · rhs[k×n]` on the direct kernel (`rhs` row-major), and from each finished tile the
/// SwiGLU gradients into `grads` instead of `d_act` itself (see [`GluGrads`]): the token mixer's backward, which
/// runs it where [`weight_panels`] says the f32 products take the direct kernel.
pub(crate) fn matmul_glu_grads_1t(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, grads: GluGrads) {
    record(GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: false, accumulate: false });
    lhs.assert_covers(m, k);
    rhs.assert_covers(k, n);
    count_call(GemmPath::Direct);
    direct::matmul_glu_grads(m, n, k, lhs, rhs, grads);
}

/// [`matmul_glu_grads_1t`] for a weight laid out as [`Panels`] (see [`weight_panels`]): the channel MLP's backward.
pub(crate) fn matmul_panels_glu_grads_1t(m: usize, lhs: Mat, panels: &Panels, grads: GluGrads) {
    let (n, k) = (panels.cols(), panels.depth());
    record(GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: false, accumulate: false });
    lhs.assert_covers(m, k);
    count_call(GemmPath::Direct);
    direct::matmul_panels_glu_grads(m, lhs, panels, grads);
}

/// `up[m×n] = lhs[m×k] · rhs[k×n]` on the direct kernel (`rhs` row-major), and from each finished tile the SiLU-gated
/// product into `gated` (see [`Gated`]): the token mixer's forward slices, which run where [`weight_panels`] says the
/// f32 products take the direct kernel.
pub(crate) fn matmul_gated_1t(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, gated: Gated) {
    record(GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: false, accumulate: false });
    lhs.assert_covers(m, k);
    rhs.assert_covers(k, n);
    count_call(GemmPath::Direct);
    direct::matmul_gated(m, n, k, lhs, rhs, gated);
}

/// [`matmul_gated_1t`] for panel `g` of a weight laid out as [`Panels`] (the up projection's panel of a gate/up
/// pair): the channel MLP's forward.
pub(crate) fn matmul_panel_gated_1t(m: usize, lhs: Mat, panels: &Panels, g: usize, gated: Gated) {
    let (n, k) = (panels.width(g), panels.depth());
    record(GemmShape { m, n, k, lhs_transposed: lhs.is_transposed(), rhs_transposed: false, accumulate: false });
    lhs.assert_covers(m, k);
    count_call(GemmPath::Direct);
    direct::matmul_panel_gated(m, lhs, panels, g, gated);
}

fn record(shape: GemmShape) {
    if RECORDING.load(Ordering::Relaxed) {
        if let Some(map) = RECORDED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *map.entry(shape).or_default() += 1;
        }
    }
}

#[allow(clippy::too_many_arguments)] // a GEMM's own argument list
fn matmul_on(path: GemmPath, m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
    assert_eq!(dst.len(), m * n, "matmul destination size");
    lhs.assert_covers(m, k);
    rhs.assert_covers(k, n);
    count_call(path);
    match path {
        GemmPath::Crate => crate_matmul(m, n, k, dst, accumulate, lhs, rhs),
        GemmPath::Blas => blas::matmul(m, n, k, dst, accumulate, lhs, rhs),
        GemmPath::Direct => direct::matmul(m, n, k, dst, accumulate, lhs, rhs),
    }
}

fn crate_matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
    // SAFETY: every operand was bounds-checked (matmul_on) for the (m, k), (k, n), (m, n) index ranges gemm
    // walks; dst is exclusively borrowed and does not alias lhs/rhs (distinct borrows).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

#[cfg(any(feature = "openblas", feature = "blis"))]
mod blas {
    use super::Mat;
    use cblas_sys::{cblas_sgemm, CblasNoTrans, CblasRowMajor, CblasTrans};

    #[cfg(all(feature = "openblas", feature = "blis"))]
    compile_error!("features `openblas` and `blis` both export cblas_sgemm: enable one");

    // cblas-sys declares the CBLAS interface only; the library that implements it is linked here. Our own
    // thread-count calls: the kernels call the BLAS from every rayon thread, so it must not start threads itself.
    #[cfg_attr(feature = "openblas", link(name = "openblas"))]
    #[cfg_attr(feature = "blis", link(name = "blis"))]
    extern "C" {
        #[cfg(feature = "openblas")]
        fn openblas_set_num_threads(n: std::ffi::c_int);
        #[cfg(feature = "blis")]
        fn bli_thread_set_num_threads(n: i64);
    }

    fn single_threaded() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: sets the library's thread count; called once, before its first GEMM.
        ONCE.call_once(|| unsafe {
            #[cfg(feature = "openblas")]
            openblas_set_num_threads(1);
            #[cfg(feature = "blis")]
            bli_thread_set_num_threads(1);
        });
    }

    /// A row-major operand as CBLAS takes it: transposed or not, and its leading dimension.
    fn operand(mat: &Mat) -> (cblas_sys::CBLAS_TRANSPOSE, i32) {
        assert!(mat.row_stride == 1 || mat.col_stride == 1, "BLAS operands need one unit stride");
        if mat.is_transposed() {
            (CblasTrans, mat.col_stride.max(1) as i32)
        } else {
            (CblasNoTrans, mat.row_stride.max(1) as i32)
        }
    }

    pub(super) fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
        if m == 0 || n == 0 {
            return;
        }
        single_threaded();
        let ((ta, lda), (tb, ldb)) = (operand(&lhs), operand(&rhs));
        // The leading dimension must cover a row of the stored matrix, even where k or n makes it unused.
        let lda = lda.max(if lhs.is_transposed() { m } else { k }.max(1) as i32);
        let ldb = ldb.max(if rhs.is_transposed() { k } else { n }.max(1) as i32);
        // SAFETY: the operands were bounds-checked for these (m, k), (k, n), (m, n) ranges; dst does not alias.
        unsafe {
            cblas_sgemm(
                CblasRowMajor,
                ta,
                tb,
                m as i32,
                n as i32,
                k as i32,
                1.0,
                lhs.data.as_ptr(),
                lda,
                rhs.data.as_ptr(),
                ldb,
                if accumulate { 1.0 } else { 0.0 },
                dst.as_mut_ptr(),
                n as i32,
            )
        }
    }
}

#[cfg(not(any(feature = "openblas", feature = "blis")))]
mod blas {
    use super::Mat;

    pub(super) fn matmul(_: usize, _: usize, _: usize, _: &mut [f32], _: bool, _: Mat, _: Mat) {
        unreachable!("GemmPath::Blas is only chosen in builds with a system BLAS (set_gemm_choice checks)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], lt: bool, rt: bool) -> Vec<f32> {
        let at = |i: usize, p: usize| if lt { a[p * m + i] } else { a[i * k + p] };
        let bt = |p: usize, j: usize| if rt { b[j * k + p] } else { b[p * n + j] };
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    /// The weight products' panels ([`Panels`], where the CPU has AVX-512F): made from a row-major and from a
    /// transposed operand, against the f64 triple loop, writing and accumulating, at sizes that leave a narrow
    /// last panel (200 = 96 + 96 + 8 columns), a single partial vector, partial row tiles and a zero depth; and one
    /// panel at a time ([`matmul_panel_1t`], the fused SwiGLU's products) against the whole. They serve the weight
    /// products exactly when the choice is `direct`, or `auto` without a system BLAS.
    #[test]
    fn panels_compute_the_weight_products() {
        use rand::{Rng, SeedableRng};
        if !direct::available() {
            eprintln!("no AVX-512F on this CPU: the panels are not built here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        for (m, n, k) in [(37, 200, 53), (1, 7, 32), (9, 96, 97), (194, 130, 64), (5, 3, 0)] {
            for (rt, acc) in [(false, false), (true, true), (false, true)] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let old: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let panels = Panels::new(if rt { Mat::transposed(&b, k) } else { Mat::rows(&b, n) }, k, n);
                let mut c = old.clone();
                let before = gemm_calls(GemmPath::Direct);
                matmul_panels_1t(m, &mut c, acc, Mat::rows(&a, k), &panels);
                assert!(gemm_calls(GemmPath::Direct) > before);
                let want = reference(m, n, k, &a, &b, false, rt);
                for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                    let w = w + if acc { old[i] } else { 0.0 };
                    assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{n}x{k} rt={rt}: {got} vs {w} at {i}");
                }
                // One panel at a time into rows wider than the product (padding 5): the same bits in its columns,
                // nothing written outside them.
                let stride = n + 5;
                let mut one = vec![f32::NAN; m * stride];
                one.chunks_mut(stride).zip(old.chunks(n.max(1))).for_each(|(row, old)| row[..n].copy_from_slice(old));
                for g in 0..panels.count() {
                    matmul_panel_1t(m, &mut one[panels.start(g)..], stride, acc, Mat::rows(&a, k), &panels, g);
                }
                for (r, row) in one.chunks(stride).enumerate() {
                    assert!(row[n..].iter().all(|v| v.is_nan()), "{m}x{n}x{k}: a panel wrote past its columns");
                    let same = row[..n].iter().zip(&c[r * n..][..n]).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{m}x{n}x{k} rt={rt} acc={acc}: panel by panel differs in row {r}");
                }
            }
        }
        // Split at a column (a SwiGLU weight's halves): every panel within one part, the same product.
        for (n, split) in [(200, 100), (80, 40), (97, 0), (97, 97)] {
            let (m, k) = (9, 21);
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let panels = Panels::split_at(Mat::transposed(&b, k), k, n, split);
            for g in 0..panels.count() {
                let (start, width) = (panels.start(g), panels.width(g));
                assert!(width > 0 && width <= Panels::WIDTH, "n {n} split {split}: panel {g} width {width}");
                assert!(start >= split || start + width <= split, "n {n} split {split}: panel {g} straddles");
            }
            let covered: usize = (0..panels.count()).map(|g| panels.width(g)).sum();
            assert_eq!(covered, n, "n {n} split {split}: the panels cover the columns");
            let mut c = vec![0.0; m * n];
            matmul_panels_1t(m, &mut c, false, Mat::rows(&a, k), &panels);
            let want = reference(m, n, k, &a, &b, false, true);
            for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "n {n} split {split}: {got} vs {w} at {i}");
            }
        }
        for (path, panels) in [(GemmPath::Crate, false), (GemmPath::Direct, true)] {
            assert_eq!(with_gemm_path(path, weight_panels), panels, "{path:?}");
        }
    }

    /// The direct kernel's tiles at every row count up to 13 (every tile height, and every remainder of the last
    /// tile below it) and column widths of one to six vectors, full and partial, against the f64 triple loop.
    #[test]
    fn direct_tiles_cover_every_row_remainder() {
        use rand::{Rng, SeedableRng};
        if !direct::available() {
            eprintln!("no AVX-512F on this CPU: the direct kernel does not run here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        let k = 19;
        for n in [16, 31, 48, 64, 79, 96] {
            for m in 1..=13 {
                let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut c = vec![f32::NAN; m * n];
                matmul_on(GemmPath::Direct, m, n, k, &mut c, false, Mat::transposed(&a, m), Mat::rows(&b, n));
                let want = reference(m, n, k, &a, &b, true, false);
                for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                    assert!((got - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{n}x{k}: {got} vs {w} at {i}");
                }
            }
        }
    }

    /// The SwiGLU gradients computed in the direct kernel's epilogue ([`matmul_glu_grads_1t`] and, from panels,
    /// [`matmul_panels_glu_grads_1t`]) give the same bits as the product written out and then the SiLU pass, in the
    /// channel MLP's layout (gate and up halves side by side in each row) and the token mixer's (the up rows below
    /// the gate rows), and write nothing outside their places.
    #[test]
    fn glu_grads_in_the_epilogue_match_the_product_then_the_pass() {
        use crate::kernels::{simd, Gate};
        use rand::{Rng, SeedableRng};
        if !direct::available() {
            eprintln!("no AVX-512F on this CPU: the direct kernel does not run here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
        let mut uniform =
            |len: usize, scale: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(-scale..scale)).collect() };
        for (m, n, k) in [(13, 200, 37), (97, 64, 97), (5, 7, 3)] {
            let (lhs_t, rhs) = (uniform(k * m, 1.0), uniform(k * n, 1.0));
            let lhs = Mat::transposed(&lhs_t, m);
            let mut d_act = vec![0.0; m * n];
            matmul_on(GemmPath::Direct, m, n, k, &mut d_act, false, lhs, Mat::rows(&rhs, n));
            // (stride, up): side by side with a gap of 3; below all the gate rows.
            for (stride, up) in [(2 * n + 3, n + 1), (n, m * n)] {
                let g = uniform(up + (m - 1) * stride + n, 3.0);
                let act_stride = n + 5;
                let (mut want_dg, mut want_act) = (vec![f32::NAN; g.len()], vec![f32::NAN; m * act_stride]);
                for r in 0..m {
                    let (gate, up_row) = (&g[r * stride..][..n], &g[r * stride + up..][..n]);
                    let (mut d_gate, mut d_up) = (vec![0.0; n], vec![0.0; n]);
                    let act = &mut want_act[r * act_stride..][..n];
                    simd::glu_mul_and_grad(Gate::Silu, gate, up_row, &d_act[r * n..][..n], act, &mut d_gate, &mut d_up);
                    want_dg[r * stride..][..n].copy_from_slice(&d_gate);
                    want_dg[r * stride + up..][..n].copy_from_slice(&d_up);
                }
                let panels = Panels::new(Mat::rows(&rhs, n), k, n);
                for from_panels in [false, true] {
                    let (mut dg, mut act) = (vec![f32::NAN; g.len()], vec![f32::NAN; m * act_stride]);
                    let grads = GluGrads { g: &g, dg: &mut dg, stride, up, act: &mut act, act_stride };
                    if from_panels {
                        matmul_panels_glu_grads_1t(m, lhs, &panels, grads);
                    } else {
                        matmul_glu_grads_1t(m, n, k, lhs, Mat::rows(&rhs, n), grads);
                    }
                    let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
                    let case = format!("{m}x{n}x{k} stride {stride} up {up} panels {from_panels}");
                    assert!(same(&dg, &want_dg), "{case}: gate/up gradients (or a write outside them)");
                    assert!(same(&act, &want_act), "{case}: the product (or a write outside it)");
                }
            }
        }
    }

    /// The SiLU gating in the direct kernel's epilogue gives the bits of the product followed by the gating pass,
    /// from a row-major right operand and from a panel, with the up projection kept (beside the gate's places, or
    /// below all of them) or not, and writes nothing outside its places.
    #[test]
    fn gating_in_the_epilogue_matches_the_product_then_the_pass() {
        use crate::kernels::simd;
        use rand::{Rng, SeedableRng};
        if !direct::available() {
            eprintln!("no AVX-512F on this CPU: the direct kernel does not run here");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
        let mut uniform =
            |len: usize, scale: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(-scale..scale)).collect() };
        for (m, n, k) in [(13, 200, 37), (64, 97, 97), (5, 7, 3)] {
            let (lhs, rhs) = (uniform(m * k, 1.0), uniform(k * n, 1.0));
            let lhs = Mat::rows(&lhs, k);
            let mut up_product = vec![0.0; m * n];
            matmul_on(GemmPath::Direct, m, n, k, &mut up_product, false, lhs, Mat::rows(&rhs, n));
            // (stride, kept up's offset): beside the gate with a gap of 3; below all the gate rows; not kept.
            for (stride, up) in [(2 * n + 3, Some(n + 1)), (n, Some(m * n)), (n + 2, None)] {
                let gate = uniform(up.unwrap_or(0) + (m - 1) * stride + n, 3.0);
                let act_stride = n + 5;
                let (mut want_g, mut want_act) = (gate.clone(), vec![f32::NAN; m * act_stride]);
                for r in 0..m {
                    let up_row = &up_product[r * n..][..n];
                    simd::silu_mul(&gate[r * stride..][..n], up_row, &mut want_act[r * act_stride..][..n]);
                    if let Some(up) = up {
                        want_g[r * stride + up..][..n].copy_from_slice(up_row);
                    }
                }
                let panels = Panels::new(Mat::rows(&rhs, n), k, n);
                for from_panels in [false, true] {
                    let (mut g, mut act) = (gate.clone(), vec![f32::NAN; m * act_stride]);
                    if from_panels {
                        for p in 0..panels.count() {
                            let c = panels.start(p);
                            let gated = Gated { g: &mut g[c..], stride, up, act: &mut act[c..], act_stride };
                            matmul_panel_gated_1t(m, lhs, &panels, p, gated);
                        }
                    } else {
                        matmul_gated_1t(
                            m,
                            n,
                            k,
                            lhs,
                            Mat::rows(&rhs, n),
                            Gated { g: &mut g, stride, up, act: &mut act, act_stride },
                        );
                    }
                    let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
                    let case = format!("{m}x{n}x{k} stride {stride} up {up:?} panels {from_panels}");
                    assert!(same(&g, &want_g), "{case}: the kept up projection (or a write outside it)");
                    assert!(same(&act, &want_act), "{case}: the product (or a write outside it)");
                }
            }
        }
    }

    /// Every available path, on every layout and with accumulation, against a plain f64 triple loop, at odd sizes
    /// that leave edge tiles (and a zero inner dimension).
    #[test]
    fn every_path_computes_every_layout() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for path in GemmPath::available() {
            for (m, n, k) in [(37, 29, 53), (1, 97, 32), (97, 97, 32), (5, 3, 0)] {
                for (lt, rt, acc) in
                    [(false, false, false), (true, false, false), (false, true, true), (true, true, true)]
                {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let old: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let mut c = old.clone();
                    let lhs = if lt { Mat::transposed(&a, m) } else { Mat::rows(&a, k) };
                    let rhs = if rt { Mat::transposed(&b, k) } else { Mat::rows(&b, n) };
                    let before = gemm_calls(path);
                    matmul_on(path, m, n, k, &mut c, acc, lhs, rhs);
                    assert!(gemm_calls(path) > before);
                    let want = reference(m, n, k, &a, &b, lt, rt);
                    for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                        let w = w + if acc { old[i] } else { 0.0 };
                        assert!(
                            (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{path:?} {m}x{n}x{k} lt={lt} rt={rt}: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn choices_parse_and_name_what_is_missing() {
        assert_eq!("auto".parse::<GemmChoice>().unwrap(), GemmChoice::Auto);
        assert_eq!("gemm".parse::<GemmChoice>().unwrap(), GemmChoice::Only(GemmPath::Crate));
        let err = "mkl".parse::<GemmChoice>().unwrap_err().to_string();
        assert!(err.contains("auto, gemm, blas, or direct"), "{err}");
        match direct::available() {
            true => assert_eq!("direct".parse::<GemmChoice>().unwrap(), GemmChoice::Only(GemmPath::Direct)),
            false => assert!("direct".parse::<GemmChoice>().unwrap_err().to_string().contains("AVX-512F")),
        }
        match blas_name() {
            Some(_) => assert_eq!("blas".parse::<GemmChoice>().unwrap(), GemmChoice::Only(GemmPath::Blas)),
            None => assert!("blas".parse::<GemmChoice>().unwrap_err().to_string().contains("--features openblas")),
        }
    }

    /// GFLOP/s of the channel MLP's GEMMs at hidden 512 by block rows, both cores busy. A measurement, not a
    /// check: `cargo test --release -p reckon --lib block_rows_sweep -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn block_rows_sweep() {
        for (m, n, k, lt, rt) in [
            (97, 97, 32, false, true),
            (97, 97, 32, false, false),
            (97, 32, 97, false, false),
            (97, 32, 97, true, false),
        ] {
            for path in GemmPath::available() {
                let shape = GemmShape { m, n, k, lhs_transposed: lt, rhs_transposed: rt, accumulate: false };
                let (best, median) = time_shape(path, &shape, rayon::current_num_threads(), 0.3);
                println!("{path:?} {}: best {best:.1}, median {median:.1} GFLOP/s", shape.label());
            }
        }
        for (n, k) in [(3072, 512), (512, 1536), (1024, 128), (128, 512)] {
            for m in [96, 97, 120, 125, 128, 192, 194, 200, 208, 256] {
                let shape = GemmShape { m, n, k, lhs_transposed: false, rhs_transposed: false, accumulate: false };
                let (best, median) = time_shape(GemmPath::Crate, &shape, rayon::current_num_threads(), 0.3);
                println!("{m}x{n}x{k}: best {best:.1}, median {median:.1} GFLOP/s");
            }
        }
    }

    #[test]
    fn auto_sends_transposed_products_to_the_crate_on_intel_without_blas() {
        let shape = |m, n, k, lhs_transposed, rhs_transposed| GemmShape {
            m,
            n,
            k,
            lhs_transposed,
            rhs_transposed,
            accumulate: true,
        };
        let weight_gradient = shape(3072, 512, 194, true, false);
        let mixer_gradient = shape(1024, 97, 512, false, true);
        assert_eq!(auto_path_on(&weight_gradient, true, false), GemmPath::Crate);
        assert_eq!(auto_path_on(&mixer_gradient, true, false), GemmPath::Crate);
        // Elsewhere, with a BLAS, and for small or untransposed products: the class's pick.
        for (intel, blas) in [(false, false), (true, true)] {
            assert_eq!(auto_path_on(&weight_gradient, intel, blas), auto_pick(ShapeClass::Large));
            assert_eq!(auto_path_on(&mixer_gradient, intel, blas), auto_pick(mixer_gradient.class()));
        }
        let attention = shape(97, 32, 97, true, false);
        assert_eq!(attention.class(), ShapeClass::Small);
        assert_eq!(auto_path_on(&attention, true, false), auto_pick(ShapeClass::Small));
        let forward = shape(194, 512, 1536, false, false);
        assert_eq!(auto_path_on(&forward, true, false), auto_pick(ShapeClass::Large));
    }

    #[test]
    fn shape_classes() {
        assert_eq!(ShapeClass::of(97, 97, 32, false), ShapeClass::Small);
        assert_eq!(ShapeClass::of(97, 32, 97, false), ShapeClass::Small);
        assert_eq!(ShapeClass::of(81, 256, 64, true), ShapeClass::Thin);
        assert_eq!(ShapeClass::of(216, 512, 64, false), ShapeClass::Thin);
        assert_eq!(ShapeClass::of(128, 1024, 128, false), ShapeClass::Block);
        assert_eq!(ShapeClass::of(1024, 512, 97, false), ShapeClass::Large);
        for class in ShapeClass::ALL {
            assert_eq!(class.canonical().class(), class);
        }
    }
}
