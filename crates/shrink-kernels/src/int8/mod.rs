//! int8 GEMM: u8 activations × s8 weights → i32, with zero points and a fused epilogue.
//!
//! `Y[i][j] = Σ_k (A[i][k] − za)·(W[j][k] − zw)` for `A: M×K` u8 (row-major) and
//! `W: N×K` s8 (one row per output channel), then [`Epilogue`] per element.
//! The zero points are folded out of the inner loop:
//! `Σ a·w − za·Σ_k w − zw·Σ_k a + K·za·zw`, with `Σ_k w` computed at packing.
//! All arithmetic wraps modulo 2³² in every path (so paths agree bit for bit
//! even past K ≈ 66 000, where a true sum could overflow i32).
//!
//! Paths: AVX-512 VNNI (`vpdpbusd`, u8×s8 summed in i32 without saturation),
//! AVX2 (bytes widened to i16 and `vpmaddwd`: a pair of products is at most
//! 2·255·128 < 2³¹, so it can never saturate, unlike `vpmaddubsw`), and a
//! portable scalar loop over the same packed layout.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod depthwise;
pub mod direct;
pub mod elementwise;
pub mod nhwc;
pub mod planar;
mod zero_skip;

/// The canonical requantisation of quantised models (one definition shared
/// by every integer kernel, so they agree bit for bit with each other and
/// with a scalar simulation of the model):
///
/// `q = clamp(round_half_even(acc as f32 · m[c]) + z_y, lo, hi)`
///
/// where `acc` already includes the i32 bias, `m[c] = s_x·s_w[c]/s_y` was
/// computed in f32 in that order, and `[lo, hi]` is the output type's range
/// narrowed by a fused Relu (`lo = z_y`) or Clip.
#[derive(Debug, Clone, Copy)]
pub struct Requant<'a> {
    /// One multiplier per output channel, or a single one.
    pub mult: &'a [f32],
    /// i32 bias per output channel (scale `s_x·s_w[c]`), added to the sums.
    pub bias: Option<&'a [i32]>,
    pub out_zero: i32,
    pub lo: i32,
    pub hi: i32,
}

impl Requant<'_> {
    pub(crate) fn check(&self, channels: usize) -> Result<()> {
        if self.mult.len() != 1 && self.mult.len() != channels {
            return Err(KernelError::Length {
                what: "requantisation multipliers (1 or channels)",
                expected: channels,
                got: self.mult.len(),
            });
        }
        if let Some(b) = self.bias {
            check_len("requantisation bias (channels)", channels, b.len())?;
        }
        if self.lo > self.hi {
            return Err(KernelError::Unsupported {
                what: "requantisation range",
                why: format!("lo {} > hi {}", self.lo, self.hi),
            });
        }
        Ok(())
    }
    #[inline]
    pub fn mult_at(&self, c: usize) -> f32 {
        if self.mult.len() == 1 {
            self.mult[0]
        } else {
            self.mult[c]
        }
    }
    #[inline]
    pub fn bias_at(&self, c: usize) -> i32 {
        self.bias.map_or(0, |b| b[c])
    }
    /// Requantises one accumulator (bias already added) of channel `c`.
    #[inline]
    pub fn apply(&self, acc: i32, c: usize) -> i32 {
        let r = (acc as f32 * self.mult_at(c)).round_ties_even();
        let r = r
            .max((self.lo - self.out_zero) as f32)
            .min((self.hi - self.out_zero) as f32);
        r as i32 + self.out_zero
    }
}

/// [`Requant::apply`] on 16 lanes: `s` holds sums with the bias already
/// added, `lo`/`hi` the clamp bounds less the zero point (`lo − z_y` as
/// f32). One definition of the canonical arithmetic for every AVX-512 int8
/// kernel (f32 multiply, `vrndscaleps` to nearest-even, clamp, exact
/// conversion of the now integral value, `+ z_y`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn requant16(
    s: std::arch::x86_64::__m512i,
    mult: std::arch::x86_64::__m512,
    lo: std::arch::x86_64::__m512,
    hi: std::arch::x86_64::__m512,
    zy: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let r = _mm512_mul_ps(_mm512_cvtepi32_ps(s), mult);
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(r);
    let r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
    _mm512_add_epi32(_mm512_cvtps_epi32(r), zy)
}

use crate::cpu::{self, Isa};
use crate::epilogue::{store_scalar, Epilogue, OutPtr, Output};
use crate::{check_len, tiling, KernelError, Result};

/// Columns per packed panel (two 16-lane registers).
pub const NR: usize = 32;
/// Rows per register tile of the AVX-512 kernel.
pub(crate) const MR: usize = 8;

/// s8 weights packed once for every int8 path.
///
/// Layout (K4 = K rounded up to a multiple of 4, panels of NR = 32 columns):
///
/// ```text
///  panel p (columns 32p .. 32p+31), K4·32 bytes, panels one after another
///  ┌──────────── quad q = k 4q..4q+3: 128 bytes ─────────────┐
///  │ W[32p+0][4q..4q+4] │ W[32p+1][4q..4q+4] │ … │ W[32p+31][4q..4q+4] │  q = 0
///  │ W[32p+0][4..8]     │ …                                      │  q = 1
///  │  …                                                          │
///  └─────────────────────────────────────────────────────────────┘
///  byte offset of W[j][k] = (j/32)·K4·32 + (k/4)·128 + (j%32)·4 + k%4
///  columns ≥ N and k ≥ K hold 0 (they add nothing to any sum)
/// ```
///
/// One quad of a panel is exactly two `vpdpbusd` operands (16 columns × 4
/// bytes each), and a broadcast u32 of four activations is the other.
#[derive(Debug, Clone)]
pub struct PackedI8 {
    n: usize,
    k: usize,
    k4: usize,
    w_zero: i32,
    /// Cache-line blocks, so every panel (a multiple of 128 bytes) starts
    /// on a 64-byte boundary in every copy: a `Vec<i8>` from the allocator
    /// is only 16-aligned, and then each 64-byte weight load of the kernels
    /// straddles two lines (the weight-streaming M = 1 GEMV at 784×300 went
    /// from 2.9 to 2.6 µs).
    data: Vec<Line>,
    col_sums: Vec<i32>,
}

/// 64 bytes aligned to 64.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

impl PackedI8 {
    /// Packs `w` (`N×K`, row `j` = output channel `j`) with weight zero point `w_zero`.
    pub fn pack(w: &[i8], n: usize, k: usize, w_zero: i8) -> Result<Self> {
        check_len("int8 weights (N×K)", n * k, w.len())?;
        if n == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "int8 weights",
                why: format!("empty shape N={n} K={k}"),
            });
        }
        let k4 = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * k4 * NR];
        let mut col_sums = vec![0i32; panels * NR];
        for j in 0..n {
            let (p, c) = (j / NR, j % NR);
            let row = &w[j * k..(j + 1) * k];
            for (kk, &v) in row.iter().enumerate() {
                data[p * k4 * NR + (kk / 4) * 4 * NR + c * 4 + kk % 4] = v;
            }
            col_sums[j] = row.iter().fold(0i32, |s, &v| s.wrapping_add(v as i32));
        }
        let data = data
            .chunks_exact(64)
            .map(|c| Line(c.try_into().expect("64-byte chunk")))
            .collect();
        Ok(PackedI8 {
            n,
            k,
            k4,
            w_zero: w_zero as i32,
            data,
            col_sums,
        })
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }
    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
    fn panel(&self, p: usize) -> &[i8] {
        let lines = self.k4 * NR / 64;
        let panel = &self.data[p * lines..(p + 1) * lines];
        // SAFETY: `Line` is 64 plain bytes with no padding (repr C, size
        // 64), so `lines` of them are `lines · 64` initialised i8s.
        unsafe { std::slice::from_raw_parts(panel.as_ptr() as *const i8, lines * 64) }
    }
}

/// Plain triple loop over unpacked weights: the reference every path must equal.
pub fn reference(
    a: &[u8],
    m: usize,
    k: usize,
    a_zero: u8,
    w: &[i8],
    n: usize,
    w_zero: i8,
) -> Vec<i32> {
    let mut y = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i32;
            for kk in 0..k {
                let av = a[i * k + kk] as i32 - a_zero as i32;
                let wv = w[j * k + kk] as i32 - w_zero as i32;
                s = s.wrapping_add(av.wrapping_mul(wv));
            }
            y[i * n + j] = s;
        }
    }
    y
}

/// The terms that do not depend on the product, per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZeroFix<'a> {
    /// Added per column: `bias[j] − za·colsum[j] + K·za·zw` (panels·NR
    /// entries, so SIMD loads of whole panels stay in bounds).
    pub col_fix: &'a [i32],
    /// `zw·rowsum[i]` is subtracted per row (all zeros when zw = 0).
    pub row_fix: &'a [i32],
}

impl ZeroFix<'_> {
    #[inline]
    pub(crate) fn apply(&self, acc: i32, i: usize, j: usize) -> i32 {
        acc.wrapping_add(self.col_fix[j])
            .wrapping_sub(self.row_fix[i])
    }
}

/// How a GEMM call ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Route {
    /// Every activation quad against every panel.
    Dense,
    /// Only the nonzero activation quads of pairs of rows (`kept` of them;
    /// see `int8/zero_skip.rs`): bit for bit the dense result.
    SkipZeroQuads { kept: f32 },
}

impl Route {
    /// A profile label: `kernel` for the dense route, with the skipped
    /// share appended for the walk (one wording for every op that reports
    /// a GEMM's route).
    pub fn label(&self, kernel: &str) -> String {
        match self {
            Route::Dense => kernel.to_string(),
            Route::SkipZeroQuads { kept } => {
                format!("{kernel}, zero quads skipped ({:.0}% kept)", 100.0 * kept)
            }
        }
    }
}

/// The zero-quad walk runs when its pairs keep at most this fraction of
/// their quads. A walked quad costs about 1/0.72 of a dense one, so the
/// break-even is near 0.75; at 0.79 (LeNet-300-100's fc2 on synthetic
/// inputs) the walk measured 66 µs against 45 dense, so the bar sits lower.
/// LeNet-300-100's fc1 on Fashion-MNIST images keeps 0.65.
pub const SKIP_MAX_KEPT: f32 = 0.7;

/// `out = epilogue(A·Wᵀ)` on the best path for this CPU, threaded with rayon.
pub fn gemm(
    a: &[u8],
    m: usize,
    a_zero: u8,
    w: &PackedI8,
    ep: &Epilogue,
    out: Output,
) -> Result<()> {
    gemm_with(cpu::best(), a, m, a_zero, w, ep, out)
}

/// [`gemm`] on a chosen path (lowered to what the CPU supports).
pub fn gemm_with(
    isa: Isa,
    a: &[u8],
    m: usize,
    a_zero: u8,
    w: &PackedI8,
    ep: &Epilogue,
    out: Output,
) -> Result<()> {
    gemm_bias_with(isa, a, m, a_zero, w, None, ep, out).map(|_| ())
}

/// `out = epilogue(A·Wᵀ + bias)`: like [`gemm`] with an i32 bias per output
/// column added to the exact sums before the epilogue (the quantised-model
/// bias, whose scale is `s_a·s_w[j]`).
pub fn gemm_bias(
    a: &[u8],
    m: usize,
    a_zero: u8,
    w: &PackedI8,
    bias: Option<&[i32]>,
    ep: &Epilogue,
    out: Output,
) -> Result<Route> {
    gemm_bias_with(cpu::best(), a, m, a_zero, w, bias, ep, out)
}

/// [`gemm_bias`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_with(
    isa: Isa,
    a: &[u8],
    m: usize,
    a_zero: u8,
    w: &PackedI8,
    bias: Option<&[i32]>,
    ep: &Epilogue,
    out: Output,
) -> Result<Route> {
    gemm_bias_skip_with(isa, SKIP_MAX_KEPT, a, m, a_zero, w, bias, ep, out)
}

/// [`gemm_bias_with`] skipping zero activation quads when at most
/// `max_kept` of them are nonzero (AVX-512 VNNI only, and at least
/// [`SKIP_MIN_ROWS`] rows; 1.0 forces the walk where it exists, for tests).
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_skip_with(
    isa: Isa,
    max_kept: f32,
    a: &[u8],
    m: usize,
    a_zero: u8,
    w: &PackedI8,
    bias: Option<&[i32]>,
    ep: &Epilogue,
    mut out: Output,
) -> Result<Route> {
    let (n, k) = (w.n, w.k);
    check_len("int8 activations (M×K)", m * k, a.len())?;
    check_len("int8 output (M×N)", m * n, out.len())?;
    if let Some(b) = bias {
        check_len("int8 GEMM bias (N)", n, b.len())?;
    }
    ep.check(n)?;
    if m == 0 {
        return Ok(Route::Dense);
    }
    let za = a_zero as i32;
    let row_fix: Vec<i32> = if w.w_zero != 0 {
        a.chunks_exact(k)
            .map(|r| {
                let s = r.iter().fold(0i32, |s, &v| s.wrapping_add(v as i32));
                w.w_zero.wrapping_mul(s)
            })
            .collect()
    } else {
        vec![0; m]
    };
    let kzz = (k as i32).wrapping_mul(za).wrapping_mul(w.w_zero);
    let col_fix: Vec<i32> = w
        .col_sums
        .iter()
        .enumerate()
        .map(|(j, &cs)| {
            let b = bias.map_or(0, |b| b.get(j).copied().unwrap_or(0));
            b.wrapping_sub(za.wrapping_mul(cs)).wrapping_add(kzz)
        })
        .collect();
    let fix = ZeroFix {
        col_fix: &col_fix,
        row_fix: &row_fix,
    };
    let isa = cpu::clamp(isa);
    let optr = out.ptr();
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16)
        && m >= SKIP_MIN_ROWS
        && zero_skip::probe(a, m, k, max_kept)
    {
        return Ok(skip_run(isa, a, m, k, max_kept, w, &fix, ep, optr));
    }
    let tasks = tiling::plan(m, w.panels(), MR);
    tiling::run(&tasks, tiling::rows_per_block(k, MR), |r0, r1, p| {
        // SAFETY: tasks cover disjoint (row range × panel) tiles of the
        // output, all in bounds (checked lengths above), and the ISA was
        // clamped to what this CPU supports.
        unsafe { tile_rows(isa, a, k, r0, r1, w, p, &fix, ep, optr) };
    });
    Ok(Route::Dense)
}

/// The zero-quad walk: the rows in contiguous blocks (one on one thread,
/// four per thread otherwise), each block pairing and listing its own rows
/// and walking them past every panel, so a thread reads only lists it built
/// (in its own cache) and the blocks' similar mixes of images balance the
/// threads. A block whose pairs keep more than `max_kept` runs dense.
/// Every row is computed either way; the route reports the walked fraction
/// over the walked blocks, or `Dense` when no block walked.
///
/// One block for all rows on several threads measured slower than the
/// dense kernel (149 against 144 µs for fc1 on 2 threads): the other thread
/// pulled every list from the builder's cache, and the builder's serial
/// 19 µs did not shrink.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn skip_run(
    isa: Isa,
    a: &[u8],
    m: usize,
    k: usize,
    max_kept: f32,
    w: &PackedI8,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) -> Route {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads().max(1);
    let blocks = if threads == 1 { 1 } else { 4 * threads };
    // Whole pairs and at least SKIP_MIN_ROWS rows per block.
    let per = m.div_ceil(blocks).next_multiple_of(2).max(SKIP_MIN_ROWS);
    let block = |r0: usize| -> (usize, usize) {
        let r1 = (r0 + per).min(m);
        match zero_skip::PairLists::build(&a[r0 * k..r1 * k], r1 - r0, k, max_kept) {
            Some(lists) => {
                for p in 0..w.panels() {
                    // SAFETY: the CPU supports AVX-512 VNNI (the caller's
                    // route); the lists' rows are r0..r1 (offset by r0),
                    // which no other block writes, inside the checked M×N
                    // output.
                    unsafe { avx512::skip_pairs(&lists, r0, 0, lists.pairs(), w, p, fix, ep, out) };
                }
                let (walked, total) = (lists.walked(), lists.pairs() * k.div_ceil(4));
                lists.recycle();
                (walked, total)
            }
            None => {
                for p in 0..w.panels() {
                    // SAFETY: rows r0..r1 × panel p are this block's alone,
                    // in bounds; the ISA is supported.
                    unsafe { tile_rows(isa, a, k, r0, r1, w, p, fix, ep, out) };
                }
                (0, 0)
            }
        }
    };
    let starts: Vec<usize> = (0..m).step_by(per).collect();
    let (walked, total) = if starts.len() == 1 {
        block(0)
    } else {
        starts
            .into_par_iter()
            .map(block)
            .reduce(|| (0, 0), |x, y| (x.0 + y.0, x.1 + y.1))
    };
    if total > 0 {
        Route::SkipZeroQuads {
            kept: walked as f32 / total as f32,
        }
    } else {
        Route::Dense
    }
}

/// Fewer rows than this always run dense: a single image's walk reloads
/// every weight it uses (no row shares a load), and the probe would cost
/// as much as it saves.
pub const SKIP_MIN_ROWS: usize = 8;

/// Computes rows `r0..r1` of panel `p` on path `isa`.
///
/// # Safety
/// `isa` must be supported by the CPU; `out` must be a valid `M×N` buffer with
/// no other writer of these elements.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_rows(
    isa: Isa,
    a: &[u8],
    k: usize,
    r0: usize,
    r1: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: forwarded from the caller.
            unsafe { avx512::panel_rows(a, k, r0, r1, w, p, fix, ep, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: forwarded from the caller.
            unsafe { avx2::panel_rows(a, k, r0, r1, w, p, fix, ep, out) }
        }
        _ => {
            // SAFETY: forwarded from the caller.
            unsafe { portable_panel_rows(a, k, r0, r1, w, p, fix, ep, out) }
        }
    }
}

/// Scalar loop over the packed layout: the path for CPUs without AVX2.
#[allow(clippy::too_many_arguments)]
unsafe fn portable_panel_rows(
    a: &[u8],
    k: usize,
    r0: usize,
    r1: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    let panel = w.panel(p);
    let j0 = p * NR;
    let cols = (w.n - j0).min(NR);
    for i in r0..r1 {
        let row = &a[i * k..(i + 1) * k];
        let mut acc = [0i32; NR];
        for (kk, &av) in row.iter().enumerate() {
            let q = &panel[(kk / 4) * 4 * NR + kk % 4..];
            for (c, s) in acc.iter_mut().enumerate() {
                *s = s.wrapping_add((av as i32) * (q[c * 4] as i32));
            }
        }
        for (c, s) in acc.iter_mut().enumerate().take(cols) {
            *s = fix.apply(*s, i, j0 + c);
        }
        // SAFETY: columns j0..j0+cols of row i are in bounds and ours.
        unsafe { store_scalar(ep, &acc[..cols], out, i, w.n, j0) };
    }
}

#[cfg(test)]
mod tests;
