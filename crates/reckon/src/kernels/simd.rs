//! Vectorisable elementwise math for the Flex kernels, and run-time selection of the instruction set.
//!
//! The binary targets baseline x86-64 so it runs on any such CPU; [`multiversion!`] compiles a loop a second
//! and third time with AVX2+FMA and AVX-512 enabled and picks the best one the CPU has, once per call (the
//! feature check is a cached atomic load). The loops are written so LLVM vectorises them: no libm calls (our own
//! [`exp`]), and reductions over several independent accumulators ([`dot`]).

/// Defines `fn $name(args)` that runs its body compiled for AVX-512, AVX2+FMA or baseline x86-64, whichever is
/// the best this CPU supports.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) { generic($($arg),*) }
                if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the CPU has the features this version was compiled for (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `e^x` in f32, within 2 ulp of the correctly rounded value on [-87, 88] (its argument is clamped to that
/// range, which is all a sigmoid needs), written
/// without branches or library calls so loops over it vectorise. Cody–Waite range reduction
/// `x = n·ln2 + r`, `|r| ≤ ln2/2`, then a degree-6 polynomial (the Cephes `expf` coefficients) and `2^n` built
/// in the exponent bits. (libm's `expf` is a call per element, which blocks vectorisation: it was 10% of a
/// training step.)
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer in the default rounding mode.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Plain products and sums, not `mul_add`: on a CPU without FMA that would be a library call per element.
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n from the exponent bits. `n` is an integer in [-126, 127]; adding 1.5·2^23 + 127 puts n + 127 in the
    // low mantissa bits, read back as an integer (an `as i32` cast would be saturating, hence scalar, code).
    let biased = (n + (ROUND + 127.0)).to_bits().wrapping_sub(ROUND.to_bits());
    p * f32::from_bits(biased << 23)
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `atan2(y, x)` for `x ≥ 0` (AdamATan2's `atan2(m̂, √v̂)`), within 3 ulp of the exact value (libm's `atan2f`: 1),
/// with its signed zeros and ±π/2 at `x = 0`, and NaN in, NaN out; written without branches or library calls so
/// loops over it vectorise (libm's is a call per element). The ratio of the smaller to the larger magnitude
/// `t ∈ [0, 1]`; above tan(π/8), `atan t = π/4 + atan((t − 1)/(t + 1))`; then the Cephes `atanf` polynomial on
/// `|u| ≤ tan(π/8)`, and `π/2 − r` where `|y| > x`.
#[inline(always)]
pub fn atan2_nonneg_x(y: f32, x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, FRAC_PI_4};
    const TAN_PI_8: f32 = 0.414_213_57;
    let ay = y.abs();
    let swapped = ay > x;
    let (lo, hi) = if swapped { (x, ay) } else { (ay, x) };
    let t = if hi > 0.0 { lo / hi } else { 0.0 };
    let reduced = t > TAN_PI_8;
    let u = if reduced { (t - 1.0) / (t + 1.0) } else { t };
    let z = u * u;
    let p = (((8.053_744_5e-2 * z - 1.387_768_6e-1) * z + 1.997_771_1e-1) * z - 3.333_295e-1) * z * u + u;
    let r = if reduced { FRAC_PI_4 + p } else { p };
    let r = if swapped { FRAC_PI_2 - r } else { r };
    // `y != y` is NaN's test in a form that stays a vector compare.
    #[allow(clippy::eq_op)]
    let nan = y != y || x != x;
    if nan {
        f32::NAN
    } else {
        r.copysign(y)
    }
}

/// Elements per chunk of [`silu_mul`] and friends: small enough that the intermediate stays in L1.
const CHUNK: usize = 256;

/// `out[i] = σ(x[i]) = 1 / (1 + e^(−x[i]))`. On AVX-512 the division is a reciprocal estimate refined by one
/// Newton step (relative error ≈ 2⁻²⁸, below f32 rounding): a vector division costs about ten times as much and
/// was most of the SwiGLU passes' time. Elsewhere, a plain division.
#[inline(always)]
pub fn sigmoid_into(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        unsafe { sigmoid_avx512(x, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = sigmoid(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sigmoid_avx512(x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(out.len() <= x.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp(-v);
    }
    let (one, two) = (_mm512_set1_ps(1.0), _mm512_set1_ps(2.0));
    let main = out.len() / 16 * 16;
    for i in (0..main).step_by(16) {
        // SAFETY: i + 16 ≤ out.len(); unaligned loads and stores.
        unsafe {
            let d = _mm512_add_ps(one, _mm512_loadu_ps(out.as_ptr().add(i)));
            let r = _mm512_rcp14_ps(d);
            let r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, two));
            _mm512_storeu_ps(out.as_mut_ptr().add(i), r);
        }
    }
    for o in &mut out[main..] {
        *o = 1.0 / (1.0 + *o);
    }
}

/// `act[i] = silu(g[i]) · u[i] = g[i] · σ(g[i]) · u[i]`.
#[inline(always)]
pub fn silu_mul(g: &[f32], u: &[f32], act: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        unsafe { avx512::silu_mul(g, u, act) };
        return;
    }
    let mut sig = [0.0f32; CHUNK];
    for ((g, u), a) in g.chunks(CHUNK).zip(u.chunks(CHUNK)).zip(act.chunks_mut(CHUNK)) {
        let sig = &mut sig[..g.len()];
        sigmoid_into(g, sig);
        for (((a, &g), &u), &s) in a.iter_mut().zip(g).zip(u).zip(sig.iter()) {
            *a = g * s * u;
        }
    }
}

/// Gradients of `silu(g) · u`: `du = da · g · σ(g)`, `dg = da · u · σ(g) · (1 + g · (1 − σ(g)))`.
#[inline(always)]
pub fn silu_mul_grad(g: &[f32], u: &[f32], da: &[f32], dg: &mut [f32], du: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        unsafe { avx512::silu_mul_grad(g, u, da, dg, du) };
        return;
    }
    let mut sig = [0.0f32; CHUNK];
    for start in (0..da.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(da.len());
        let sig = &mut sig[..end - start];
        sigmoid_into(&g[start..end], sig);
        for (k, &s) in sig.iter().enumerate() {
            let i = start + k;
            du[i] = da[i] * g[i] * s;
            dg[i] = da[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        }
    }
}

/// SwiGLU's products in one pass of AVX-512 registers: σ, the products and the stores for 16 elements at a time,
/// with no intermediate buffer (the portable path computes σ for a chunk into a buffer, then reads it back; this
/// halves the memory traffic of the SwiGLU passes, which were 5–7% of a step at hidden 128).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// `e^x` for 16 lanes as [`super::exp`] computes it (the argument clamped to [-87, 88], Cody–Waite reduction,
    /// the same polynomial), `2^n` by `scalef`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, n)
    }

    /// σ(g) for 16 lanes: [`exp16`] of `−g`, then `1/(1 + e)` by a reciprocal estimate and one Newton step.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn sigmoid16(g: __m512) -> __m512 {
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
        let d = _mm512_add_ps(_mm512_set1_ps(1.0), e);
        let inv = _mm512_rcp14_ps(d);
        _mm512_mul_ps(inv, _mm512_fnmadd_ps(d, inv, _mm512_set1_ps(2.0)))
    }

    /// `softmax(scale · row)` in place for rows of `n`: the maximum, then the exponentials and their sum in one pass,
    /// then the normalisation; the last vector of a row masked (rows of 97 scores: 6 vectors and one lane).
    #[target_feature(enable = "avx512f")]
    pub(crate) fn softmax_rows(s: &mut [f32], n: usize, scale: f32) {
        let scale_v = _mm512_set1_ps(scale);
        for row in s.chunks_mut(n) {
            let (len, at) = (row.len(), row.as_mut_ptr());
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for i in (0..len).step_by(16) {
                // SAFETY (every load and store here): lanes past `len - i` are masked off, i < len = the row's length.
                let v = unsafe { _mm512_maskz_loadu_ps(tail_mask(len - i), at.add(i)) };
                max = _mm512_mask_max_ps(max, tail_mask(len - i), max, v);
            }
            let shift = _mm512_set1_ps(_mm512_reduce_max_ps(max) * scale);
            let mut sum = _mm512_setzero_ps();
            for i in (0..len).step_by(16) {
                let m = tail_mask(len - i);
                // SAFETY: as above.
                unsafe {
                    let v = _mm512_maskz_loadu_ps(m, at.add(i));
                    let e = exp16(_mm512_sub_ps(_mm512_mul_ps(v, scale_v), shift));
                    _mm512_mask_storeu_ps(at.add(i), m, e);
                    sum = _mm512_mask_add_ps(sum, m, sum, e);
                }
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            for i in (0..len).step_by(16) {
                let m = tail_mask(len - i);
                // SAFETY: as above.
                unsafe { _mm512_mask_storeu_ps(at.add(i), m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, at.add(i)), inv)) };
            }
        }
    }

    /// The first `len` lanes as a mask (for the tail).
    fn tail_mask(len: usize) -> __mmask16 {
        ((1u32 << len.min(16)) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_mul(g: &[f32], u: &[f32], act: &mut [f32]) {
        let len = act.len();
        assert!(g.len() >= len && u.len() >= len);
        for i in (0..len).step_by(16) {
            let m = tail_mask(len - i);
            // SAFETY: lanes past `len - i` are masked off in every load and store; i < len ≤ each slice's length.
            unsafe {
                let gv = _mm512_maskz_loadu_ps(m, g.as_ptr().add(i));
                let uv = _mm512_maskz_loadu_ps(m, u.as_ptr().add(i));
                _mm512_mask_storeu_ps(act.as_mut_ptr().add(i), m, silu_mul16(gv, uv));
            }
        }
    }

    /// `silu(g) · u` for 16 lanes. Shared by [`silu_mul`] and the direct GEMM's gating epilogue (`gemm::direct`), so
    /// the two give the same bits.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn silu_mul16(gv: __m512, uv: __m512) -> __m512 {
        _mm512_mul_ps(_mm512_mul_ps(gv, sigmoid16(gv)), uv)
    }

    /// [`silu_mul`] and [`silu_mul_grad`] in one pass, the same expressions in the same order.
    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_mul_and_grad(g: &[f32], u: &[f32], da: &[f32], act: &mut [f32], dg: &mut [f32], du: &mut [f32]) {
        silu_pass::<true>(g, u, da, act, dg, du);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn silu_mul_grad(g: &[f32], u: &[f32], da: &[f32], dg: &mut [f32], du: &mut [f32]) {
        silu_pass::<false>(g, u, da, &mut [], dg, du);
    }

    /// The gradients of `silu(g) · u`, and with `WITH_ACT` the product itself, 16 lanes at a time.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn silu_pass<const WITH_ACT: bool>(
        g: &[f32],
        u: &[f32],
        da: &[f32],
        act: &mut [f32],
        dg: &mut [f32],
        du: &mut [f32],
    ) {
        let len = da.len();
        assert!(g.len() >= len && u.len() >= len && dg.len() >= len && du.len() >= len);
        assert!(!WITH_ACT || act.len() >= len);
        for i in (0..len).step_by(16) {
            let m = tail_mask(len - i);
            // SAFETY: as in `silu_mul`: masked lanes, i < len ≤ each slice's length (`act`'s when it is written).
            unsafe {
                let gv = _mm512_maskz_loadu_ps(m, g.as_ptr().add(i));
                let uv = _mm512_maskz_loadu_ps(m, u.as_ptr().add(i));
                let dav = _mm512_maskz_loadu_ps(m, da.as_ptr().add(i));
                let [actv, duv, dgv] = silu_grad16(gv, uv, dav);
                if WITH_ACT {
                    _mm512_mask_storeu_ps(act.as_mut_ptr().add(i), m, actv);
                }
                _mm512_mask_storeu_ps(du.as_mut_ptr().add(i), m, duv);
                _mm512_mask_storeu_ps(dg.as_mut_ptr().add(i), m, dgv);
            }
        }
    }

    /// `[silu(g) · u, da · g · σ, da · u · σ · (1 + g · (1 − σ))]` for 16 lanes: the product and the gradients of
    /// `u` and `g` from that of the product, `da`. Shared by the pass above and the direct GEMM's epilogue
    /// (`gemm::direct`), so the two give the same bits.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn silu_grad16(gv: __m512, uv: __m512, dav: __m512) -> [__m512; 3] {
        let one = _mm512_set1_ps(1.0);
        let s = sigmoid16(gv);
        let act = _mm512_mul_ps(_mm512_mul_ps(gv, s), uv);
        let du = _mm512_mul_ps(_mm512_mul_ps(dav, gv), s);
        let factor = _mm512_fmadd_ps(gv, _mm512_sub_ps(one, s), one);
        let dg = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dav, uv), s), factor);
        [act, du, dg]
    }
}

/// `act[i] = tanh(g[i]) · u[i]`, with `tanh(x) = 2σ(2x) − 1` through the same vectorised sigmoid (absolute
/// error below 1e-6, which is what a bounded activation needs).
#[inline(always)]
pub fn tanh_mul(g: &[f32], u: &[f32], act: &mut [f32]) {
    let (mut twice, mut sig) = ([0.0f32; CHUNK], [0.0f32; CHUNK]);
    for ((g, u), a) in g.chunks(CHUNK).zip(u.chunks(CHUNK)).zip(act.chunks_mut(CHUNK)) {
        let (twice, sig) = (&mut twice[..g.len()], &mut sig[..g.len()]);
        twice.iter_mut().zip(g).for_each(|(t, &g)| *t = 2.0 * g);
        sigmoid_into(twice, sig);
        for ((a, &u), &s) in a.iter_mut().zip(u).zip(sig.iter()) {
            *a = (2.0 * s - 1.0) * u;
        }
    }
}

/// Gradients of `tanh(g) · u`: `du = da · tanh(g)`, `dg = da · u · sech²(g)`.
///
/// `sech²(g)` is computed as `4·σ(2g)·σ(−2g)` = `4·(e·s)·s` with `e = e^(−2g)`, `s = 1/(1 + e)`: accurate to a
/// few ulp *relative* to its value everywhere. The textbook `1 − tanh²(g)` cancels catastrophically once the gate
/// saturates (at g = 5 it is 1.8e-4, and the rounding of `tanh(g)` near 1 leaves it with a relative error near
/// 1e-3), which is what large, unscaled gate inputs hit.
#[inline(always)]
pub fn tanh_mul_grad(g: &[f32], u: &[f32], da: &[f32], dg: &mut [f32], du: &mut [f32]) {
    let mut e = [0.0f32; CHUNK];
    for start in (0..da.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(da.len());
        let e = &mut e[..end - start];
        e.iter_mut().zip(&g[start..end]).for_each(|(e, &g)| *e = exp(-2.0 * g));
        for (k, &e) in e.iter().enumerate() {
            let i = start + k;
            let s = 1.0 / (1.0 + e);
            du[i] = da[i] * (2.0 * s - 1.0);
            dg[i] = da[i] * u[i] * (4.0 * (e * s) * s);
        }
    }
}

/// The gated product `gate(g) · u` of a GLU, for either gate.
#[inline(always)]
pub fn glu_mul(kind: super::Gate, g: &[f32], u: &[f32], act: &mut [f32]) {
    match kind {
        super::Gate::Silu => silu_mul(g, u, act),
        super::Gate::Tanh => tanh_mul(g, u, act),
    }
}

/// Its gradients with respect to `g` and `u`.
#[inline(always)]
pub fn glu_mul_grad(kind: super::Gate, g: &[f32], u: &[f32], da: &[f32], dg: &mut [f32], du: &mut [f32]) {
    match kind {
        super::Gate::Silu => silu_mul_grad(g, u, da, dg, du),
        super::Gate::Tanh => tanh_mul_grad(g, u, da, dg, du),
    }
}

/// The gated product and its gradients in one pass (the backward needs both: the product for the down
/// projection's weight gradient, the gradients for the gate/up pre-activations), each value computed as
/// [`glu_mul`] and [`glu_mul_grad`] compute it, so the results are the same bits; the gate's sigmoid is evaluated
/// once, not twice, where the CPU has AVX-512.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // two inputs, the incoming gradient and three outputs
pub fn glu_mul_and_grad(
    kind: super::Gate,
    g: &[f32],
    u: &[f32],
    da: &[f32],
    act: &mut [f32],
    dg: &mut [f32],
    du: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if kind == super::Gate::Silu && std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        unsafe { avx512::silu_mul_and_grad(g, u, da, act, dg, du) };
        return;
    }
    glu_mul(kind, g, u, act);
    glu_mul_grad(kind, g, u, da, dg, du);
}

/// `Σ a·b` with 16 independent partial sums (so it vectorises; the order differs from a sequential sum only
/// by rounding).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (a_main, a_tail) = a.split_at(a.len() / LANES * LANES);
    let (b_main, b_tail) = b.split_at(a_main.len());
    for (x, y) in a_main.chunks_exact(LANES).zip(b_main.chunks_exact(LANES)) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ a` with 16 independent partial sums (vectorisable).
#[inline(always)]
pub fn sum(a: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let main = a.len() / LANES * LANES;
    for x in a[..main].chunks_exact(LANES) {
        for j in 0..LANES {
            acc[j] += x[j];
        }
    }
    acc.iter().sum::<f32>() + a[main..].iter().sum::<f32>()
}

/// The largest element (−∞ for an empty slice), with 16 independent partial maxima (vectorisable; NaN
/// inputs are not propagated, which softmax inputs never are).
#[inline(always)]
pub fn max(a: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let main = a.len() / LANES * LANES;
    for x in a[..main].chunks_exact(LANES) {
        for j in 0..LANES {
            acc[j] = if x[j] > acc[j] { x[j] } else { acc[j] };
        }
    }
    a[main..].iter().chain(&acc).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Row-wise `softmax(scale · s)` in place over rows of `n` (attention's scores): in AVX-512 registers where the CPU
/// has them (the exponentials and their sum in one pass, the rows' last vector masked), else the portable loops.
pub fn softmax_rows(s: &mut [f32], n: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { avx512::softmax_rows(s, n, scale) };
    }
    softmax_rows_portable(s, n, scale);
}

multiversion! {
    /// [`softmax_rows`] without AVX-512.
    fn softmax_rows_portable(s: &mut [f32], n: usize, scale: f32) {
        for row in s.chunks_mut(n) {
            let max = max(row) * scale;
            row.iter_mut().for_each(|v| *v = exp(*v * scale - max));
            let inv = 1.0 / sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The softmax this CPU runs against an f64 softmax, on rows with a masked last vector, one lane, and scores wide
    /// enough to clamp; every row sums to one.
    #[test]
    fn softmax_rows_match_f64() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for n in [1, 5, 16, 33, 97] {
            let scores: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-40.0f32..40.0)).collect();
            for softmax in [softmax_rows, softmax_rows_portable] {
                let mut p = scores.clone();
                softmax(&mut p, n, 0.3);
                for (row, p) in scores.chunks(n).zip(p.chunks(n)) {
                    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(0.3 * v as f64));
                    let e: Vec<f64> = row.iter().map(|&v| (0.3 * v as f64 - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for (&p, e) in p.iter().zip(&e) {
                        assert!((p as f64 - e / total).abs() <= 1e-6 + 1e-5 * e / total, "n {n}: {p} vs {}", e / total);
                    }
                    assert!((p.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-5, "n {n}");
                }
            }
        }
    }

    #[test]
    fn atan2_is_within_three_ulp_of_the_exact_value_with_its_special_cases() {
        // Magnitudes from 1e-30 to 1e30 on both sides of the swap (|y| vs x), and both signs of y.
        let mut worst = 0.0f64;
        for i in 0..4000 {
            for j in 0..61 {
                let y = (1.0e-30f64 * 10f64.powf(i as f64 * 60.0 / 4000.0)) as f32;
                let x = (1.0e-30f64 * 10f64.powf(j as f64)) as f32;
                for y in [y, -y] {
                    let (ours, exact) = (atan2_nonneg_x(y, x) as f64, (y as f64).atan2(x as f64));
                    let ulp = (exact.abs() as f32).max(f32::MIN_POSITIVE).to_bits();
                    let ulp = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64;
                    worst = worst.max((ours - exact).abs() / ulp);
                }
            }
        }
        assert!(worst <= 3.0, "worst error {worst} ulp");
        let pi2 = std::f32::consts::FRAC_PI_2;
        assert_eq!(atan2_nonneg_x(3.0, 0.0), pi2);
        assert_eq!(atan2_nonneg_x(-3.0, 0.0), -pi2);
        assert_eq!(atan2_nonneg_x(1.0, 1.0), std::f32::consts::FRAC_PI_4);
        assert!(atan2_nonneg_x(0.0, 0.0) == 0.0 && atan2_nonneg_x(0.0, 0.0).is_sign_positive());
        assert!(atan2_nonneg_x(-0.0, 2.0) == 0.0 && atan2_nonneg_x(-0.0, 2.0).is_sign_negative());
        assert_eq!(atan2_nonneg_x(f32::INFINITY, 1.0), pi2);
        assert!(atan2_nonneg_x(f32::NAN, 1.0).is_nan() && atan2_nonneg_x(1.0, f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_the_useful_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (ours, libm) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.000_7;
        }
        assert!(worst < 2.5 * f32::EPSILON as f64, "worst relative error {worst:e}");
        // Clamped outside [-87, 88]: still tiny / huge, never NaN, so a sigmoid saturates correctly.
        assert!(exp(-200.0) < 1e-37 && exp(200.0) > 1e38);
        assert!((sigmoid(-200.0) - 0.0).abs() < 1e-37 && sigmoid(200.0) == 1.0);
    }

    #[test]
    fn fast_sigmoid_and_silu_match_the_exact_formulas() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let mut sig = vec![0.0; x.len()];
        sigmoid_into(&x, &mut sig);
        for (&v, &s) in x.iter().zip(&sig) {
            let exact = 1.0 / (1.0 + (-(v as f64)).exp());
            assert!((s as f64 - exact).abs() <= 3e-7 * exact, "σ({v}) = {s}, exact {exact}");
        }
        let u: Vec<f32> = x.iter().map(|v| v.cos()).collect();
        let mut act = vec![0.0; x.len()];
        silu_mul(&x, &u, &mut act);
        for i in 0..x.len() {
            let exact = x[i] as f64 / (1.0 + (-(x[i] as f64)).exp()) * u[i] as f64;
            assert!((act[i] as f64 - exact).abs() <= 1e-6 * exact.abs().max(1e-3), "silu·u at {i}");
        }
    }

    /// The one-pass product and gradients are the same bits as the two passes, for both gates, at lengths with
    /// every tail.
    #[test]
    fn one_pass_glu_and_gradients_equal_the_two_passes() {
        for kind in [super::super::Gate::Silu, super::super::Gate::Tanh] {
            for len in [1, 15, 16, 17, 100] {
                let g: Vec<f32> = (0..len).map(|i| (i as f32 - 50.0) * 0.13).collect();
                let u: Vec<f32> = g.iter().map(|v| (0.3 * v).sin() + 0.5).collect();
                let da: Vec<f32> = g.iter().map(|v| (0.7 * v).cos()).collect();
                let (mut act, mut dg, mut du) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
                glu_mul(kind, &g, &u, &mut act);
                glu_mul_grad(kind, &g, &u, &da, &mut dg, &mut du);
                let (mut act1, mut dg1, mut du1) = (vec![f32::NAN; len], vec![f32::NAN; len], vec![f32::NAN; len]);
                glu_mul_and_grad(kind, &g, &u, &da, &mut act1, &mut dg1, &mut du1);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&act1), bits(&act), "{kind:?} {len}: act");
                assert_eq!(bits(&dg1), bits(&dg), "{kind:?} {len}: d_gate");
                assert_eq!(bits(&du1), bits(&du), "{kind:?} {len}: d_up");
            }
        }
    }

    /// The SiLU gate's gradients (the vectorised path on AVX-512 CPUs, with a 7-element tail) against f64.
    #[test]
    fn fast_silu_gradients_match_the_exact_formulas() {
        let g: Vec<f32> = (0..999).map(|i| (i as f32 - 499.0) * 0.041).chain([-200.0, 200.0]).collect();
        let u: Vec<f32> = g.iter().map(|v| (0.3 * v).sin() + 0.5).collect();
        let da: Vec<f32> = g.iter().map(|v| (0.7 * v).cos()).collect();
        let (mut dg, mut du) = (vec![f32::NAN; g.len()], vec![f32::NAN; g.len()]);
        silu_mul_grad(&g, &u, &da, &mut dg, &mut du);
        for i in 0..g.len() {
            let (gv, uv, dav) = (g[i] as f64, u[i] as f64, da[i] as f64);
            let s = 1.0 / (1.0 + (-gv).exp());
            let (want_du, want_dg) = (dav * gv * s, dav * uv * s * (1.0 + gv * (1.0 - s)));
            assert!(
                (du[i] as f64 - want_du).abs() <= 1e-6 * want_du.abs().max(1e-3),
                "du at g = {gv}: {} vs {want_du}",
                du[i]
            );
            assert!(
                // Relative to `da·u·σ`, the size before `1 + g·(1 − σ)` cancels (near g = −1.28).
                (dg[i] as f64 - want_dg).abs() <= 1e-6 * want_dg.abs().max((dav * uv * s).abs()).max(1e-3),
                "dg at g = {gv}: {} vs {want_dg}",
                dg[i]
            );
        }
    }

    #[test]
    fn fast_tanh_gate_and_its_gradient_match_the_exact_formulas() {
        // ±11.5: well into saturation, where sech² is 1e-10 and `1 − tanh²` in f32 would be 0 or noise.
        let g: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.023).collect();
        let u: Vec<f32> = g.iter().map(|v| (v * 1.7).sin() * 2.0).collect();
        let da: Vec<f32> = g.iter().map(|v| (v * 0.3).cos()).collect();
        let mut act = vec![0.0; g.len()];
        tanh_mul(&g, &u, &mut act);
        let (mut dg, mut du) = (vec![0.0; g.len()], vec![0.0; g.len()]);
        tanh_mul_grad(&g, &u, &da, &mut dg, &mut du);
        for i in 0..g.len() {
            let t = (g[i] as f64).tanh();
            let (u64, da64) = (u[i] as f64, da[i] as f64);
            assert!((act[i] as f64 - t * u64).abs() <= 2e-6, "tanh·u at {i}: {} vs {}", act[i], t * u64);
            assert!((du[i] as f64 - da64 * t).abs() <= 2e-6, "du at {i}");
            let sech2 = 1.0 / (g[i] as f64).cosh().powi(2);
            let exact = da64 * u64 * sech2;
            assert!(
                (dg[i] as f64 - exact).abs() <= 2e-6 * exact.abs() + 1e-30,
                "dg at {i} (g = {}): {} vs {exact}",
                g[i],
                dg[i]
            );
        }
    }

    #[test]
    fn sum_and_max_match_sequential_ones() {
        let a: Vec<f32> = (0..133).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let seq: f64 = a.iter().map(|&x| x as f64).sum();
        assert!((sum(&a) as f64 - seq).abs() < 1e-5);
        assert_eq!(max(&a), a.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        assert_eq!(max(&a[..5]), a[..5].iter().copied().fold(f32::NEG_INFINITY, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn dot_matches_a_sequential_sum() {
        let a: Vec<f32> = (0..133).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..133).map(|i| (i as f32 * 0.11).cos()).collect();
        let seq: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - seq).abs() < 1e-5);
    }
}
