//! Channels-last (NHWC) f32 kernels for chains of 1×1 and depthwise 3×3
//! convolutions (MobileNet's inverted-residual blocks).
//!
//! Why a second layout: in NCHW a depthwise conv vectorises along the width
//! of one plane, so the 7×7 and 4×4 planes of a small MobileNet fill 4–7 of
//! 16 lanes and pay a per-plane setup each; and a 1×1 conv with few input
//! channels writes each output plane once per 16-step reduction, which makes
//! it store-bound. In NHWC both vectorise over channels: the depthwise conv
//! loads 16 channels of one input position per tap (full lanes whatever the
//! plane size), and the 1×1 conv is a plain row-major GEMM
//! `Y[positions × M] = X[positions × K] · Wᵀ[K × M]` whose rows are the
//! positions of the whole batch, with bias, clamp and a residual input
//! fused into the store.
//!
//! Each kernel has a scalar reference on the original (ONNX-layout) weights,
//! a portable path, and an AVX-512 path picked at run time.

use crate::cpu::{self, Isa};
use crate::dwconv::Dw3x3;
use crate::{check_len, KernelError, Result};

/// Channels per vector register.
const LANES: usize = 16;
/// Widest channel block of the 1×1 kernel (4 registers per row).
const MAX_BLOCK: usize = 64;

/// `x[c][p]` (one NCHW image, `hw` positions per channel) → `out[p][c]`
/// on the best path (AVX-512: one 16-lane gather per output vector).
pub fn nchw_to_nhwc(c: usize, hw: usize, x: &[f32], out: &mut [f32]) -> Result<()> {
    nchw_to_nhwc_with(cpu::best(), c, hw, x, out)
}

/// [`nchw_to_nhwc`] on a chosen path.
pub fn nchw_to_nhwc_with(isa: Isa, c: usize, hw: usize, x: &[f32], out: &mut [f32]) -> Result<()> {
    check_len("NCHW image", c * hw, x.len())?;
    check_len("NHWC image", c * hw, out.len())?;
    transpose(isa, c, hw, x, out);
    Ok(())
}

/// `x[p][c]` (one NHWC image) → `out[c][p]`, the inverse of [`nchw_to_nhwc`].
pub fn nhwc_to_nchw(c: usize, hw: usize, x: &[f32], out: &mut [f32]) -> Result<()> {
    nhwc_to_nchw_with(cpu::best(), c, hw, x, out)
}

/// [`nhwc_to_nchw`] on a chosen path.
pub fn nhwc_to_nchw_with(isa: Isa, c: usize, hw: usize, x: &[f32], out: &mut [f32]) -> Result<()> {
    check_len("NHWC image", c * hw, x.len())?;
    check_len("NCHW image", c * hw, out.len())?;
    transpose(isa, hw, c, x, out);
    Ok(())
}

/// `x[r][k]` (`rows` × `cols`) → `out[k][r]`: both layout conversions are
/// this one transpose with the dimensions swapped. Lengths checked by the
/// callers.
fn transpose(isa: Isa, rows: usize, cols: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if cpu::clamp(isa) >= Isa::Avx512 && rows * cols < i32::MAX as usize {
        // SAFETY: AVX-512F present; both callers checked x and out hold
        // rows·cols values; offsets fit in i32.
        unsafe { avx512::gather_transpose(rows, cols, x, out) };
        return;
    }
    let _ = isa;
    // Tiles of 16 × 16 keep both sides' lines in L1.
    for r0 in (0..rows).step_by(LANES) {
        let r1 = (r0 + LANES).min(rows);
        for k0 in (0..cols).step_by(LANES) {
            let k1 = (k0 + LANES).min(cols);
            for r in r0..r1 {
                let src = &x[r * cols + k0..r * cols + k1];
                for (k, &v) in (k0..k1).zip(src) {
                    out[k * rows + r] = v;
                }
            }
        }
    }
}

/// Depthwise 3×3 weights repacked tap-major (`taps[t][c]`, channels padded
/// with zeros to a multiple of 16) with the bias, built once per session.
#[derive(Debug, Clone, PartialEq)]
pub struct DwWeights {
    c: usize,
    c_pad: usize,
    taps: Vec<f32>,
    bias: Vec<f32>,
}

impl DwWeights {
    /// From ONNX weights `[c, 1, 3, 3]` (flattened, `w[ch·9 + ky·3 + kx]`)
    /// and an optional bias of `c` values.
    pub fn new(c: usize, w: &[f32], bias: Option<&[f32]>) -> Result<DwWeights> {
        check_len("depthwise 3×3 weights", c * 9, w.len())?;
        if let Some(b) = bias {
            check_len("depthwise bias", c, b.len())?;
        }
        let c_pad = c.div_ceil(LANES) * LANES;
        let mut taps = vec![0f32; 9 * c_pad];
        for ch in 0..c {
            for t in 0..9 {
                taps[t * c_pad + ch] = w[ch * 9 + t];
            }
        }
        let mut b = vec![0f32; c_pad];
        if let Some(bias) = bias {
            b[..c].copy_from_slice(bias);
        }
        Ok(DwWeights {
            c,
            c_pad,
            taps,
            bias: b,
        })
    }

    pub fn channels(&self) -> usize {
        self.c
    }
}

/// Scalar definition of the NHWC depthwise conv over `images` images:
/// `clamp(Σ_{ky,kx} w·x + bias)`, taps in row-major order, on the ONNX
/// weights `w[ch·9 + t]` (the test reference: independent of the packing).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_reference(
    s: &Dw3x3,
    images: usize,
    c: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    x: &[f32],
) -> Vec<f32> {
    let (oh, ow) = s.out_hw();
    let mut y = vec![0f32; images * oh * ow * c];
    for n in 0..images {
        let xi = &x[n * s.h * s.w * c..];
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut acc = 0f32;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let iy = (oy * s.stride + ky) as isize - s.pad.0 as isize;
                            let ix = (ox * s.stride + kx) as isize - s.pad.1 as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            let p = iy as usize * s.w + ix as usize;
                            acc += w[ch * 9 + ky * 3 + kx] * xi[p * c + ch];
                        }
                    }
                    let v = acc + bias.map_or(0.0, |b| b[ch]);
                    y[((n * oh + oy) * ow + ox) * c + ch] = v.max(lo).min(hi);
                }
            }
        }
    }
    y
}

fn check_dw(s: &Dw3x3, images: usize, c: usize, x: usize, out: usize) -> Result<()> {
    if !(1..=2).contains(&s.stride)
        || s.h + s.pad.0 + s.pad.2 < 3
        || s.w + s.pad.1 + s.pad.3 < 3
        || c == 0
    {
        return Err(KernelError::Unsupported {
            what: "NHWC depthwise 3×3 shape",
            why: format!("stride 1 or 2, padded plane at least 3×3, channels > 0: {s:?}, c = {c}"),
        });
    }
    let (oh, ow) = s.out_hw();
    check_len("NHWC depthwise input", images * s.h * s.w * c, x)?;
    check_len("NHWC depthwise output", images * oh * ow * c, out)
}

/// Depthwise 3×3 over `images` NHWC images on the best path for this CPU,
/// bias and clamp `[lo, hi]` fused.
pub fn depthwise(
    s: &Dw3x3,
    images: usize,
    wts: &DwWeights,
    lo: f32,
    hi: f32,
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    depthwise_with(cpu::best(), s, images, wts, lo, hi, x, out)
}

/// [`depthwise`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_with(
    isa: Isa,
    s: &Dw3x3,
    images: usize,
    wts: &DwWeights,
    lo: f32,
    hi: f32,
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    check_dw(s, images, wts.c, x.len(), out.len())?;
    let (oh, ow) = s.out_hw();
    let (isz, osz) = (s.h * s.w * wts.c, oh * ow * wts.c);
    #[cfg(target_arch = "x86_64")]
    if cpu::clamp(isa) >= Isa::Avx512 {
        for n in 0..images {
            // SAFETY: AVX-512F is present (clamped to the CPU's level); the
            // image slices have exactly the checked lengths.
            unsafe {
                avx512::depthwise(
                    s,
                    wts,
                    lo,
                    hi,
                    &x[n * isz..(n + 1) * isz],
                    &mut out[n * osz..(n + 1) * osz],
                )
            };
        }
        return Ok(());
    }
    let _ = isa;
    for n in 0..images {
        dw_portable(
            s,
            wts,
            lo,
            hi,
            &x[n * isz..(n + 1) * isz],
            &mut out[n * osz..(n + 1) * osz],
        );
    }
    Ok(())
}

/// Portable path, one image: per output position, the valid taps' channel
/// rows accumulated into the position's output row.
fn dw_portable(s: &Dw3x3, wts: &DwWeights, lo: f32, hi: f32, x: &[f32], out: &mut [f32]) {
    let (oh, ow) = s.out_hw();
    let c = wts.c;
    for oy in 0..oh {
        for ox in 0..ow {
            let o = &mut out[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
            o.fill(0.0);
            for t in 0..9 {
                let (ky, kx) = (t / 3, t % 3);
                let iy = (oy * s.stride + ky) as isize - s.pad.0 as isize;
                let ix = (ox * s.stride + kx) as isize - s.pad.1 as isize;
                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                    continue;
                }
                let p = iy as usize * s.w + ix as usize;
                let xr = &x[p * c..(p + 1) * c];
                let wr = &wts.taps[t * wts.c_pad..t * wts.c_pad + c];
                for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(wr) {
                    *o += wv * xv;
                }
            }
            for (o, &b) in o.iter_mut().zip(&wts.bias) {
                *o = (*o + b).max(lo).min(hi);
            }
        }
    }
}

/// 1×1 conv weights `Wᵀ` packed in channel blocks of at most 64 (each block
/// `K × width`, width a multiple of 16, zero-padded), with the bias.
#[derive(Debug, Clone, PartialEq)]
pub struct PwWeights {
    k: usize,
    m: usize,
    /// (first output channel, channels, padded width, offset in `data`,
    /// offset in `bias`).
    blocks: Vec<(usize, usize, usize, usize, usize)>,
    data: Vec<f32>,
    bias: Vec<f32>,
}

impl PwWeights {
    /// From ONNX weights `[m, k, 1, 1]` (flattened, `w[o·k + i]`) and an
    /// optional bias of `m` values. Blocks are balanced (96 channels = two
    /// blocks of 48) so no block is mostly padding.
    pub fn new(m: usize, k: usize, w: &[f32], bias: Option<&[f32]>) -> Result<PwWeights> {
        check_len("1×1 conv weights", m * k, w.len())?;
        if let Some(b) = bias {
            check_len("1×1 conv bias", m, b.len())?;
        }
        if m == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "1×1 conv shape",
                why: format!("channels must be positive: m = {m}, k = {k}"),
            });
        }
        let nblocks = m.div_ceil(MAX_BLOCK);
        let width = m.div_ceil(nblocks).div_ceil(LANES) * LANES;
        let mut blocks = Vec::new();
        let mut data = Vec::new();
        let mut bias_p = Vec::new();
        let mut o0 = 0;
        while o0 < m {
            let cnt = width.min(m - o0);
            let wpad = cnt.div_ceil(LANES) * LANES;
            let off = data.len();
            data.resize(off + k * wpad, 0.0);
            for kk in 0..k {
                for j in 0..cnt {
                    data[off + kk * wpad + j] = w[(o0 + j) * k + kk];
                }
            }
            let boff = bias_p.len();
            bias_p.resize(boff + wpad, 0.0);
            if let Some(b) = bias {
                bias_p[boff..boff + cnt].copy_from_slice(&b[o0..o0 + cnt]);
            }
            blocks.push((o0, cnt, wpad, off, boff));
            o0 += cnt;
        }
        Ok(PwWeights {
            k,
            m,
            blocks,
            data,
            bias: bias_p,
        })
    }

    pub fn in_channels(&self) -> usize {
        self.k
    }
    pub fn out_channels(&self) -> usize {
        self.m
    }
}

/// Scalar definition of the NHWC 1×1 conv: `y[r][o] = clamp(Σ_i x[r][i]·
/// w[o][i] + bias[o] + residual[r][o])` on the ONNX weights (test reference).
#[allow(clippy::too_many_arguments)]
pub fn pointwise_reference(
    m: usize,
    k: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    x: &[f32],
    residual: Option<&[f32]>,
    lo: f32,
    hi: f32,
) -> Vec<f32> {
    let mut y = vec![0f32; rows * m];
    for r in 0..rows {
        for o in 0..m {
            let mut acc = 0f32;
            for i in 0..k {
                acc += x[r * k + i] * w[o * k + i];
            }
            let v = acc + bias.map_or(0.0, |b| b[o]) + residual.map_or(0.0, |z| z[r * m + o]);
            y[r * m + o] = v.max(lo).min(hi);
        }
    }
    y
}

/// NHWC 1×1 conv of `rows` positions (`x` is `rows × K`) on the best path:
/// `out = clamp(x · Wᵀ + bias + residual)`, `residual` (rows × M) optional.
pub fn pointwise(
    wts: &PwWeights,
    rows: usize,
    x: &[f32],
    residual: Option<&[f32]>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) -> Result<()> {
    pointwise_with(cpu::best(), wts, rows, x, residual, lo, hi, out)
}

/// [`pointwise`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn pointwise_with(
    isa: Isa,
    wts: &PwWeights,
    rows: usize,
    x: &[f32],
    residual: Option<&[f32]>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) -> Result<()> {
    check_len("1×1 conv input", rows * wts.k, x.len())?;
    check_len("1×1 conv output", rows * wts.m, out.len())?;
    if let Some(z) = residual {
        check_len("1×1 conv residual", rows * wts.m, z.len())?;
    }
    #[cfg(target_arch = "x86_64")]
    if cpu::clamp(isa) >= Isa::Avx512 {
        // SAFETY: AVX-512F is present; every length was checked above.
        unsafe { avx512::pointwise(wts, rows, x, residual, lo, hi, out) };
        return Ok(());
    }
    let _ = isa;
    pw_portable(wts, rows, x, residual, lo, hi, out);
    Ok(())
}

/// Portable path: per row and block, the outputs accumulated over K rows of
/// the packed `Wᵀ` (contiguous, so the inner loop vectorises).
fn pw_portable(
    wts: &PwWeights,
    rows: usize,
    x: &[f32],
    residual: Option<&[f32]>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) {
    let (k, m) = (wts.k, wts.m);
    let mut acc = vec![0f32; MAX_BLOCK];
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for &(o0, cnt, wpad, off, boff) in &wts.blocks {
            let acc = &mut acc[..cnt];
            acc.fill(0.0);
            for (kk, &xv) in xr.iter().enumerate() {
                let wr = &wts.data[off + kk * wpad..off + kk * wpad + cnt];
                for (a, &wv) in acc.iter_mut().zip(wr) {
                    *a += xv * wv;
                }
            }
            let bias = &wts.bias[boff..boff + cnt];
            let dst = &mut out[r * m + o0..r * m + o0 + cnt];
            for (j, (d, (&a, &b))) in dst.iter_mut().zip(acc.iter().zip(bias)).enumerate() {
                let z = residual.map_or(0.0, |z| z[r * m + o0 + j]);
                *d = (a + b + z).max(lo).min(hi);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{DwWeights, PwWeights, LANES};
    use crate::dwconv::{avx512_lanes as lanes, Dw3x3};
    use std::arch::x86_64::*;

    /// A masked store, plain when every lane is kept (masked stores are
    /// much slower on some cores, e.g. Zen 4).
    #[inline(always)]
    unsafe fn store(p: *mut f32, mask: u16, v: __m512) {
        if mask == u16::MAX {
            _mm512_storeu_ps(p, v)
        } else {
            _mm512_mask_storeu_ps(p, mask, v)
        }
    }

    /// A zero-filling masked load, plain when every lane is read.
    #[inline(always)]
    unsafe fn load(p: *const f32, mask: u16) -> __m512 {
        if mask == u16::MAX {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }

    /// `out[i][j] = x[j][i]` for an `rows × cols` matrix `x` (out is
    /// `cols × rows`): each output row of `rows` values, 16 at a time, is
    /// one masked gather down a column of `x`.
    ///
    /// # Safety
    /// AVX-512F; `x` and `out` hold `rows·cols` values, which fit in i32.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_transpose(rows: usize, cols: usize, x: &[f32], out: &mut [f32]) {
        let step = _mm512_set1_epi32((LANES * cols) as i32);
        let base = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(cols as i32),
        );
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
        for j in 0..cols {
            let mut idx = base;
            let mut i0 = 0;
            while i0 < rows {
                let mask = lanes(0, (rows - i0) as isize);
                // SAFETY: lane l reads x[(i0 + l)·cols + j], inside x for
                // every unmasked lane (i0 + l < rows).
                let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, xp.add(j));
                _mm512_mask_storeu_ps(op.add(j * rows + i0), mask, v);
                idx = _mm512_add_epi32(idx, step);
                i0 += LANES;
            }
        }
    }

    /// One NHWC image, row by row; within a row, position groups outer and
    /// channel blocks inner, so the input is read in address order (each
    /// position's channels together) and an image streamed from memory is
    /// read once. The taps' weights are reloaded from L1 per block.
    ///
    /// # Safety
    /// AVX-512F must be available; `x` holds `h·w·c` and `out` `oh·ow·c`
    /// values (checked by the caller).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn depthwise(
        s: &Dw3x3,
        wts: &DwWeights,
        lo: f32,
        hi: f32,
        x: &[f32],
        out: &mut [f32],
    ) {
        let (oh, ow) = s.out_hw();
        let c = wts.c;
        let cp = wts.c_pad;
        let st = s.stride;
        let (h, w) = (s.h as isize, s.w as isize);
        let (pt, pl) = (s.pad.0 as isize, s.pad.1 as isize);
        // Output columns whose three taps all land inside the row.
        let col_lo = s.pad.1.div_ceil(st).min(ow);
        let col_hi = if s.w + s.pad.1 >= 3 {
            ((s.w + s.pad.1 - 3) / st + 1).clamp(col_lo, ow)
        } else {
            col_lo
        };
        let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let tp = wts.taps.as_ptr();
        let bp = wts.bias.as_ptr();
        for oy in 0..oh {
            let iy0 = (oy * st) as isize - pt;
            let ky_lo = (-iy0).clamp(0, 3) as usize;
            let ky_hi = (h - iy0).clamp(0, 3) as usize;
            let orow = op.add(oy * ow * c);
            // Position `ox` with every column checked (borders).
            let edge = |ox: usize| {
                let ix0 = (ox * st) as isize - pl;
                let mut c0 = 0;
                while c0 < c {
                    let mask = lanes(0, (c - c0) as isize);
                    // One short FMA chain per kernel row, each a value (not
                    // an array slot, which would keep them in memory);
                    // small planes are mostly border positions.
                    let row_sum = |ky: usize| {
                        let mut acc = _mm512_setzero_ps();
                        if ky < ky_lo || ky >= ky_hi {
                            return acc;
                        }
                        let row = (iy0 + ky as isize) * w;
                        for kx in 0..3 {
                            let ix = ix0 + kx as isize;
                            if ix < 0 || ix >= w {
                                continue;
                            }
                            // SAFETY: (iy, ix) is inside the image; masked
                            // lanes beyond channel c are not read; taps are
                            // padded to c_pad ≥ c0 + 16.
                            let v = load(xp.add(((row + ix) as usize) * c + c0), mask);
                            let k = _mm512_loadu_ps(tp.add((ky * 3 + kx) * cp + c0));
                            acc = _mm512_fmadd_ps(k, v, acc);
                        }
                        acc
                    };
                    let (r0, r1, r2) = (row_sum(0), row_sum(1), row_sum(2));
                    let acc = _mm512_add_ps(
                        _mm512_add_ps(_mm512_loadu_ps(bp.add(c0)), r0),
                        _mm512_add_ps(r1, r2),
                    );
                    let y = _mm512_min_ps(_mm512_max_ps(acc, vlo), vhi);
                    // SAFETY: position ox of row oy, lanes < c - c0.
                    store(orow.add(ox * c + c0), mask, y);
                    c0 += LANES;
                }
            };
            for ox in 0..col_lo {
                edge(ox);
            }
            // Interior: eight, then four positions at a time (independent
            // FMA chains; no column checks).
            let mut ox = col_lo;
            macro_rules! group {
                ($g:literal) => {
                    while ox + $g <= col_hi {
                        // Common channel counts: constant tap offsets.
                        // SAFETY: wrapping (row iy0 may lie above the
                        // image); `interior` reads only rows ky_lo..ky_hi
                        // and interior columns.
                        let x0 =
                            xp.wrapping_offset(((iy0 * w) + (ox * st) as isize - pl) * c as isize);
                        let o = orow.add(ox * c);
                        let rs = s.w * c;
                        let args = (x0, rs, ky_lo, ky_hi, tp, bp, vlo, vhi, o);
                        let done = match (st, c) {
                            (1, 16) => interior::<1, $g, 16>(args),
                            (2, 16) => interior::<2, $g, 16>(args),
                            (1, 32) => interior::<1, $g, 32>(args),
                            (2, 32) => interior::<2, $g, 32>(args),
                            (1, 64) => interior::<1, $g, 64>(args),
                            (2, 64) => interior::<2, $g, 64>(args),
                            (1, 96) => interior::<1, $g, 96>(args),
                            (2, 96) => interior::<2, $g, 96>(args),
                            (1, 128) => interior::<1, $g, 128>(args),
                            (2, 128) => interior::<2, $g, 128>(args),
                            _ => false,
                        };
                        if done {
                            ox += $g;
                            continue;
                        }
                        let mut c0 = 0;
                        while c0 < c {
                            let mask = lanes(0, (c - c0) as isize);
                            let b = _mm512_loadu_ps(bp.add(c0));
                            let mut acc = [b; $g];
                            for ky in ky_lo..ky_hi {
                                let row = (iy0 + ky as isize) * w;
                                // SAFETY: interior columns: ox·st − pl ≥ 0 and
                                // the last tap column < w for every position.
                                let base =
                                    xp.add(((row + (ox * st) as isize - pl) as usize) * c + c0);
                                for kx in 0..3 {
                                    let kv = _mm512_loadu_ps(tp.add((ky * 3 + kx) * cp + c0));
                                    for (q, a) in acc.iter_mut().enumerate() {
                                        let v = load(base.add((q * st + kx) * c), mask);
                                        *a = _mm512_fmadd_ps(kv, v, *a);
                                    }
                                }
                            }
                            for (q, a) in acc.iter().enumerate() {
                                let y = _mm512_min_ps(_mm512_max_ps(*a, vlo), vhi);
                                store(orow.add((ox + q) * c + c0), mask, y);
                            }
                            c0 += LANES;
                        }
                        ox += $g;
                    }
                };
            }
            group!(8);
            group!(4);
            for ox in ox..ow {
                edge(ox);
            }
        }
    }

    /// `G` interior positions of an image with `C` channels (a multiple of
    /// 16, so `c_pad == C`): every tap's offset from the kernel row's base
    /// is a constant `(q·ST + kx)·C + c0`, so the loop keeps one pointer and
    /// `G` accumulators in registers (the general path's `c`-scaled offsets
    /// were spilled to the stack and reloaded every kernel row). Returns
    /// true (so the caller's match reads as "handled").
    ///
    /// # Safety
    /// AVX-512F; `x0` is the (possibly out-of-image for skipped kernel
    /// rows, hence wrapping) address of input row `iy0`, column `ox·ST −
    /// pl`; rows `ky_lo..ky_hi` of it and columns up to `(G−1)·ST + 2` past
    /// it are inside the image; `tp` holds 9 × C taps, `bp` C biases, `out`
    /// `G·C` values.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    unsafe fn interior<const ST: usize, const G: usize, const C: usize>(
        (x0, row_stride, ky_lo, ky_hi, tp, bp, vlo, vhi, out): (
            *const f32,
            usize,
            usize,
            usize,
            *const f32,
            *const f32,
            __m512,
            __m512,
            *mut f32,
        ),
    ) -> bool {
        let mut c0 = 0;
        while c0 < C {
            let b = _mm512_loadu_ps(bp.add(c0));
            let mut acc = [b; G];
            for ky in ky_lo..ky_hi {
                // Row iy0 + ky is inside the image (caller).
                let base = x0.wrapping_add(ky * row_stride + c0);
                for kx in 0..3 {
                    let kv = _mm512_loadu_ps(tp.add((ky * 3 + kx) * C + c0));
                    for (q, a) in acc.iter_mut().enumerate() {
                        let v = _mm512_loadu_ps(base.add((q * ST + kx) * C));
                        *a = _mm512_fmadd_ps(kv, v, *a);
                    }
                }
            }
            for (q, a) in acc.iter().enumerate() {
                let y = _mm512_min_ps(_mm512_max_ps(*a, vlo), vhi);
                _mm512_storeu_ps(out.add(q * C + c0), y);
            }
            c0 += LANES;
        }
        true
    }

    /// Rows `r0..r0+n` (n ≤ MR) of one channel block: MR×NV accumulators,
    /// K steps of NV weight loads and MR broadcasts, then the epilogue.
    ///
    /// # Safety
    /// AVX-512F; `a` points at row r0 of X (stride `k`), `w` at the block's
    /// packed `K × NV·16` weights, `bias` at its NV·16 padded biases, `out`
    /// (and `res`) at row r0, column o0 (stride `m`); `n ≥ 1`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const MR: usize, const NV: usize>(
        n: usize,
        k: usize,
        m: usize,
        a: *const f32,
        w: *const f32,
        bias: *const f32,
        res: Option<*const f32>,
        out: *mut f32,
        masks: [u16; NV],
        lo: __m512,
        hi: __m512,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        // Rows past n repeat the last row (computed, never stored).
        let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r.min(n - 1) * k));
        for kk in 0..k {
            let wv: [__m512; NV] =
                std::array::from_fn(|j| _mm512_loadu_ps(w.add(kk * NV * 16 + j * 16)));
            for r in 0..MR {
                let av = _mm512_set1_ps(*rows[r].add(kk));
                for j in 0..NV {
                    acc[r][j] = _mm512_fmadd_ps(av, wv[j], acc[r][j]);
                }
            }
        }
        let b: [__m512; NV] = std::array::from_fn(|j| _mm512_loadu_ps(bias.add(j * 16)));
        for (r, accr) in acc.iter().enumerate().take(n) {
            for j in 0..NV {
                let mut v = _mm512_add_ps(accr[j], b[j]);
                if let Some(z) = res {
                    v = _mm512_add_ps(v, load(z.add(r * m + j * 16), masks[j]));
                }
                let y = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
                store(out.add(r * m + j * 16), masks[j], y);
            }
        }
    }

    /// # Safety
    /// AVX-512F; lengths checked by the caller (`x` rows×k, `out` and
    /// `residual` rows×m).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pointwise(
        wts: &PwWeights,
        rows: usize,
        x: &[f32],
        residual: Option<&[f32]>,
        lo: f32,
        hi: f32,
        out: &mut [f32],
    ) {
        let (k, m) = (wts.k, wts.m);
        let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let zp = residual.map(|z| z.as_ptr());
        // Row tiles are sized for the widest block (4 vectors → 6 rows);
        // narrower blocks take several of their own tiles per row tile.
        const RT: usize = 24;
        let mut r0 = 0;
        while r0 < rows {
            let nr = RT.min(rows - r0);
            for &(o0, cnt, wpad, off, boff) in &wts.blocks {
                let wp = wts.data.as_ptr().add(off);
                let bp = wts.bias.as_ptr().add(boff);
                let nv = wpad / LANES;
                let mask = |j: usize| lanes(0, cnt as isize - (j * LANES) as isize);
                macro_rules! run {
                    ($mr:literal, $nv:literal) => {{
                        let masks: [u16; $nv] = std::array::from_fn(mask);
                        let mut r = r0;
                        while r < r0 + nr {
                            let n = $mr.min(r0 + nr - r);
                            tile::<$mr, $nv>(
                                n,
                                k,
                                m,
                                xp.add(r * k),
                                wp,
                                bp,
                                zp.map(|z| z.add(r * m + o0)),
                                op.add(r * m + o0),
                                masks,
                                vlo,
                                vhi,
                            );
                            r += $mr;
                        }
                    }};
                }
                match nv {
                    1 => run!(12, 1),
                    2 => run!(12, 2),
                    3 => run!(8, 3),
                    _ => run!(6, 4),
                }
            }
            r0 += nr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what} at {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn layout_round_trip_is_exact() {
        for (c, hw) in [(1, 1), (3, 5), (16, 49), (17, 16), (96, 196), (40, 33)] {
            let x = data(c * hw, (c * hw) as u32);
            for isa in cpu::available() {
                let mut t = vec![f32::NAN; c * hw];
                nchw_to_nhwc_with(isa, c, hw, &x, &mut t).unwrap();
                for ch in 0..c {
                    for p in 0..hw {
                        assert_eq!(t[p * c + ch], x[ch * hw + p], "{isa:?}");
                    }
                }
                let mut back = vec![f32::NAN; c * hw];
                nhwc_to_nchw_with(isa, c, hw, &t, &mut back).unwrap();
                assert_eq!(back, x, "{isa:?}");
            }
        }
        assert!(nchw_to_nhwc(2, 3, &[0.0; 5], &mut [0.0; 6]).is_err());
    }

    /// Every path equals the reference: channel counts below, at and past a
    /// vector (tails), planes smaller than a tap group, both strides,
    /// symmetric and asymmetric padding, several images, with and without
    /// bias and clamp, and extreme inputs (zeros, ±1e30 saturating the clamp).
    #[test]
    fn depthwise_paths_match_the_reference() {
        let planes = [
            (1, 1),
            (3, 3),
            (4, 4),
            (7, 7),
            (5, 9),
            (14, 14),
            (2, 11),
            (3, 29),
        ];
        let pads = [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 1, 0), (2, 1, 0, 2)];
        let chans = [1, 5, 16, 24, 32, 33, 64, 96, 128];
        let mut checked = 0;
        for (i, &(h, w)) in planes.iter().enumerate() {
            for stride in [1, 2] {
                for (j, &pad) in pads.iter().enumerate() {
                    for (q, &c) in chans.iter().enumerate() {
                        let s = Dw3x3 { h, w, stride, pad };
                        let images = 1 + (i + q) % 3;
                        let wt = data(c * 9, (i * 100 + j * 10 + q) as u32);
                        let b = data(c, 77 + q as u32);
                        let bias = (q % 2 == 0).then_some(&b[..]);
                        let dww = DwWeights::new(c, &wt, bias).unwrap();
                        let x = data(images * h * w * c, (j + q) as u32 + 5);
                        let mut o = vec![0.0; 1];
                        if h + pad.0 + pad.2 < 3 || w + pad.1 + pad.3 < 3 {
                            assert!(depthwise(&s, images, &dww, 0.0, 1.0, &x, &mut o).is_err());
                            continue;
                        }
                        let (oh, ow) = s.out_hw();
                        for (lo, hi) in [(f32::NEG_INFINITY, f32::INFINITY), (0.0, 0.6)] {
                            let want = depthwise_reference(&s, images, c, &wt, bias, lo, hi, &x);
                            for isa in cpu::available() {
                                let mut got = vec![f32::NAN; images * oh * ow * c];
                                depthwise_with(isa, &s, images, &dww, lo, hi, &x, &mut got)
                                    .unwrap();
                                close(&got, &want, 1e-5, &format!("{isa:?} {s:?} c={c}"));
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 300, "{checked}");
        // Extremes: zero input gives bias; huge inputs saturate the clamp.
        let s = Dw3x3 {
            h: 5,
            w: 5,
            stride: 1,
            pad: (1, 1, 1, 1),
        };
        let c = 20;
        let wt = data(c * 9, 3);
        let b = data(c, 4);
        let dww = DwWeights::new(c, &wt, Some(&b)).unwrap();
        for x in [vec![0.0; 25 * c], vec![1e30; 25 * c], vec![-1e30; 25 * c]] {
            let want = depthwise_reference(&s, 1, c, &wt, Some(&b), -6.0, 6.0, &x);
            for isa in cpu::available() {
                let mut got = vec![f32::NAN; 25 * c];
                depthwise_with(isa, &s, 1, &dww, -6.0, 6.0, &x, &mut got).unwrap();
                close(&got, &want, 1e-5, &format!("{isa:?} extreme"));
            }
        }
    }

    #[test]
    fn pointwise_paths_match_the_reference() {
        // (m, k, rows): single channel, tails of one vector, balanced blocks
        // (96 = 2×48), several blocks (256), partial row tiles.
        let shapes = [
            (1, 1, 1),
            (16, 16, 49),
            (24, 96, 37),
            (64, 16, 100),
            (96, 24, 13),
            (17, 5, 7),
            (128, 32, 25),
            (256, 64, 16),
            (64, 256, 19),
            (10, 128, 3),
        ];
        for (i, &(m, k, rows)) in shapes.iter().enumerate() {
            let w = data(m * k, i as u32);
            let b = data(m, 50 + i as u32);
            let x = data(rows * k, 100 + i as u32);
            let z = data(rows * m, 200 + i as u32);
            for (bias, res, lo, hi) in [
                (None, None, f32::NEG_INFINITY, f32::INFINITY),
                (Some(&b[..]), None, 0.0, 6.0),
                (Some(&b[..]), Some(&z[..]), f32::NEG_INFINITY, f32::INFINITY),
                (None, Some(&z[..]), -0.5, 0.5),
            ] {
                let p = PwWeights::new(m, k, &w, bias).unwrap();
                let want = pointwise_reference(m, k, &w, bias, rows, &x, res, lo, hi);
                for isa in cpu::available() {
                    let mut got = vec![f32::NAN; rows * m];
                    pointwise_with(isa, &p, rows, &x, res, lo, hi, &mut got).unwrap();
                    // K terms of |x·w| ≤ 1: a few ε·K.
                    close(
                        &got,
                        &want,
                        1e-6 * k as f32 + 1e-6,
                        &format!("{isa:?} {m}x{k}x{rows}"),
                    );
                }
            }
        }
        let p = PwWeights::new(4, 3, &[0.0; 12], None).unwrap();
        assert!(pointwise(&p, 2, &[0.0; 5], None, 0.0, 1.0, &mut [0.0; 8]).is_err());
        assert!(pointwise(&p, 2, &[0.0; 6], Some(&[0.0; 7]), 0.0, 1.0, &mut [0.0; 8]).is_err());
        assert!(PwWeights::new(0, 3, &[], None).is_err());
        assert!(PwWeights::new(2, 3, &[0.0; 6], Some(&[0.0; 3])).is_err());
    }
}
