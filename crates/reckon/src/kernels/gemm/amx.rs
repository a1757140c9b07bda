//! The bf16 GEMM on Intel AMX tiles (`TDPBF16PS`): `C[f32] += A[bf16] · B[bf16]`, 16×16 f32 accumulators.
//!
//! One `TDPBF16PS` multiplies a 16×32 bf16 tile by a 32×16 one (8,192 multiply-adds); measured on this project's
//! development machine (Xeon with AMX, one core) at 2.2–3.5 TFLOP/s (on different days) in a register-only loop, against 160 GFLOP/s
//! for AVX-512 f32 FMAs, while AVX512-BF16's `VDPBF16PS` ran at 81 (half the f32 rate there), so tiles are the
//! only bf16 route worth taking on such a CPU. The compiler has no stable AMX intrinsics (Rust 1.95), so the
//! tile instructions are inline assembly.
//!
//! The kernel takes operands already laid out for the tiles ([`super::bf16::Bf16Matrix`]): grids of whole 1 KiB
//! tiles, zero-padded to multiples of 32 both ways, the tiles of one 16-row band of the left operand (one
//! 16-column band of the right, its row pairs interleaved as `TDPBF16PS` reads them) consecutive along the inner
//! dimension, so every tile load reads 1 KiB of consecutive memory and a block's operands stream front to back;
//! every tile starts on a cache line (a tile row across two lines made the loads three times slower).
//! Each 32×32 block of the output takes two left tiles and two right tiles per 32-deep step into four accumulator
//! tiles (the eight tile registers), summed in place in the destination; a block on the output's edge goes
//! through a scratch block, of which the valid part is copied (or added). The blocks run in panels of columns
//! (see [`panel_columns`]); each step's tile loads are issued right after the last product that reads the
//! register they overwrite. (Software prefetching of the next bands into L2 was tried: a tenth faster in
//! isolation, a fifth slower in shape A's inference step.)

use std::arch::asm;
use std::sync::OnceLock;

use super::bf16::{panel_columns, TILE};

/// The scratch for an output block on the edge, aligned as the tile stores want (see `pool::Bf16Block`).
#[repr(C, align(64))]
struct AlignedBlock([f32; 32 * 32]);

/// The tile configuration `LDTILECFG` reads: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn sixteen_by_sixty_four() -> Self {
        let mut config = Self { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
        for tile in 0..8 {
            config.bytes_per_row[tile] = 64;
            config.rows[tile] = 16;
        }
        config
    }
}

/// Whether this CPU and kernel run AMX bf16 tiles: CPUID says AMX-TILE and AMX-BF16 (and AVX512-BF16, which
/// the conversions use), and Linux grants this process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`,
/// asked once; without it the first tile instruction faults). `RECKON_AMX=off` in the environment says no, so the
/// f32 fallback (what a CPU without AMX runs) can be run and tested on a machine that has it.
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("RECKON_AMX").is_ok_and(|v| v == "off") {
            return false;
        }
        let max_leaf = std::arch::x86_64::__cpuid(0).eax;
        if max_leaf < 7 || !std::is_x86_feature_detected!("avx512bf16") {
            return false;
        }
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        let (amx_bf16, amx_tile) = (edx & (1 << 22) != 0, edx & (1 << 24) != 0);
        amx_bf16 && amx_tile && request_tile_permission()
    })
}

/// Asks Linux for the AMX tile data state (XFEATURE 18) for this process.
fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permitted XSAVE features.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

/// `dst[m×n] (+)= A · B` with `A` given as `a` and `B` as `b`, both in the tile grids of
/// [`super::bf16::Side`] (`Left` and `Right`), `depth` tiles (of 32) deep.
pub(super) fn matmul(m: usize, n: usize, depth: usize, dst: &mut [f32], accumulate: bool, a: &[u16], b: &[u16]) {
    assert!(available(), "the AMX GEMM needs AMX-BF16 and the kernel's permission");
    let (m_pad, n_pad) = (m.next_multiple_of(32), n.next_multiple_of(32));
    let band = depth * TILE; // one 16-row band of `A`, or one 16-column band of `B`
    assert!(a.len() >= (m_pad / 16) * band, "AMX: left operand too short");
    assert!(b.len() >= (n_pad / 16) * band, "AMX: right operand too short");
    assert_eq!(dst.len(), m * n, "matmul destination size");
    assert!(
        a.as_ptr().cast::<u8>().align_offset(64) == 0 && b.as_ptr().cast::<u8>().align_offset(64) == 0,
        "AMX: operands not cache-line aligned"
    );
    let config = TileConfig::sixteen_by_sixty_four();
    let mut block = AlignedBlock([0.0f32; 32 * 32]);
    let mut one_block = |i0: usize, j0: usize| {
        // SAFETY: AMX is present and permitted (asserted) and the tiles configured (below); the tile loads read
        // 16 rows of 64 bytes, `depth` tiles along bands `i0 / 16`, `i0 / 16 + 1` of `a` and `j0 / 16`,
        // `j0 / 16 + 1` of `b` (inside them, asserted above); every accumulator load or store is 16 rows of 16 f32
        // inside `block` or, for a block wholly inside `dst` (rows `i0..i0 + 32 ≤ m`, columns `j0..j0 + 32 ≤ n`),
        // inside `dst`.
        unsafe { block_product(i0, j0, m, n, depth, dst, accumulate, a, b, &mut block.0) }
    };
    // SAFETY: AMX is present and permitted (asserted); the tile registers are this function's alone between
    // LDTILECFG and TILERELEASE (no other code on this thread runs AMX in between).
    unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
    // Panels of columns outer, row blocks inside: a row block's two bands of `a` stay in L1 while the panel's
    // column blocks pass, and the panel's bands of `b` stay in L2 for every row block.
    let panel = panel_columns(depth);
    for p0 in (0..n_pad).step_by(panel) {
        for i0 in (0..m_pad).step_by(32) {
            (p0..n_pad.min(p0 + panel)).step_by(32).for_each(|j0| one_block(i0, j0));
        }
    }
    // SAFETY: as LDTILECFG above.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The 32×32 output block at `(i0, j0)`: four accumulator tiles, two tiles of each operand per 32-deep step.
/// Safety: the caller's (see [`matmul`]).
#[allow(clippy::too_many_arguments)] // a GEMM block's own argument list
#[inline(always)]
unsafe fn block_product(
    i0: usize,
    j0: usize,
    m: usize,
    n: usize,
    depth: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[u16],
    b: &[u16],
    block: &mut [f32; 32 * 32],
) {
    // A whole block inside `dst` is summed in place (its old values loaded when accumulating); an edge block goes
    // through `block`.
    let inside = i0 + 32 <= m && j0 + 32 <= n;
    let (c, c_stride) =
        if inside { (unsafe { dst.as_mut_ptr().add(i0 * n + j0) }, n) } else { (block.as_mut_ptr(), 32) };
    unsafe {
        if inside && accumulate {
            asm!(
                "tileloadd tmm0, [{c0} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c0 = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c.add(16 * c_stride),
                c3 = in(reg) c.add(16 * c_stride + 16), s = in(reg) 4 * c_stride,
                options(nostack, readonly),
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
        let band = depth * TILE;
        let (mut a0, mut b0) = (a.as_ptr().add((i0 / 16) * band), b.as_ptr().add((j0 / 16) * band));
        // Software-pipelined: tiles carry no register renaming, so a tile is reloaded for the next step as soon as
        // the last product reading it has been issued, and each product finds its operands loaded one or two
        // products earlier (loading each step's operands just before its products left every product waiting
        // for a load).
        asm!(
            "tileloadd tmm4, [{a0} + {s}*1]",
            "tileloadd tmm6, [{b0} + {s}*1]",
            "tileloadd tmm7, [{b1} + {s}*1]",
            "tileloadd tmm5, [{a1} + {s}*1]",
            a0 = in(reg) a0, a1 = in(reg) a0.add(band), b0 = in(reg) b0, b1 = in(reg) b0.add(band),
            s = in(reg) 64usize,
            options(nostack, readonly),
        );
        for _ in 1..depth {
            (a0, b0) = (a0.add(TILE), b0.add(TILE));
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tileloadd tmm7, [{b1} + {s}*1]",
                a0 = in(reg) a0, a1 = in(reg) a0.add(band), b0 = in(reg) b0, b1 = in(reg) b0.add(band),
                s = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        asm!(
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            options(nostack, nomem),
        );
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c, c1 = in(reg) c.add(16), c2 = in(reg) c.add(16 * c_stride),
            c3 = in(reg) c.add(16 * c_stride + 16), s = in(reg) 4 * c_stride,
            options(nostack),
        );
    }
    if !inside {
        write_block(block, dst, m, n, i0, j0, accumulate);
    }
}

/// The valid part of a 32×32 output block at `(i0, j0)` into `dst` `[m×n]`.
fn write_block(block: &[f32; 32 * 32], dst: &mut [f32], m: usize, n: usize, i0: usize, j0: usize, add: bool) {
    let width = (n - j0).min(32);
    for (r, row) in block.chunks(32).enumerate().take(m.saturating_sub(i0).min(32)) {
        let out = &mut dst[(i0 + r) * n + j0..][..width];
        if add {
            out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
        } else {
            out.copy_from_slice(&row[..width]);
        }
    }
}
