//! Direct f32 convolution for few output channels (LeNet's 6 and 16, a
//! MobileNet stem's 16), stride 1 or 2, any kernel size and padding, fused
//! bias and clamp.
//!
//! im2col + GEMM is the wrong tool there: with 6 output channels and
//! K = 25 the GEMM does 6 multiply-adds per im2col element it packs, so the
//! unfolding, not the arithmetic, sets the pace (~10 GFLOP/s measured). Here
//! each input row segment is loaded once (a masked 16-lane load, zero where
//! the window hangs over the padding) and multiplied into up to 8 output
//! channels' accumulators, the weights coming as broadcast memory operands:
//! one load per 8 FMAs, no intermediate matrix at all.

use crate::conv::Conv2d;
use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// Whether [`conv`] takes `s` (and is worth it): ungrouped, undilated,
/// stride 1 or 2 along both axes, at most [`MAX_CHANNELS`] outputs and a
/// short reduction (≤ [`MAX_K`]: where unfolding costs as much as the
/// product), not pointwise (a 1×1 conv needs no unfolding at all).
pub fn fits(s: &Conv2d) -> bool {
    s.groups == 1
        && s.dilation == (1, 1)
        && s.stride.0 == s.stride.1
        && (s.stride.0 == 1 || s.stride.0 == 2)
        && s.c_out <= MAX_CHANNELS
        && s.k() <= MAX_K
        && s.kh * s.kw > 1
}

/// Most output channels this kernel is meant for.
pub const MAX_CHANNELS: usize = 16;
/// Longest reduction (`C_in·kh·kw`) this kernel is meant for.
pub const MAX_K: usize = 256;

/// One image: `out = clamp(conv(x, w) + bias, lo, hi)`, NCHW, `w` in ONNX
/// order `C_out × C_in × kh × kw`. Runs on AVX-512 where present, else on
/// the portable loop.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) -> Result<()> {
    conv_with(cpu::best(), s, x, w, bias, lo, hi, out)
}

/// [`conv`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn conv_with(
    isa: Isa,
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) -> Result<()> {
    if !fits(s) {
        return Err(KernelError::Unsupported {
            what: "direct conv",
            why: format!("shape outside what it handles: {s:?}"),
        });
    }
    s.check()?;
    let (oh, ow) = s.out_hw();
    check_len("direct conv input (C×H×W)", s.c_in * s.h * s.w, x.len())?;
    check_len("direct conv weights", s.c_out * s.k(), w.len())?;
    check_len(
        "direct conv output (OC×OH×OW)",
        s.c_out * oh * ow,
        out.len(),
    )?;
    if let Some(b) = bias {
        check_len("direct conv bias", s.c_out, b.len())?;
    }
    #[cfg(target_arch = "x86_64")]
    if cpu::clamp(isa) >= Isa::Avx512 {
        // SAFETY: AVX-512F present (clamped); all lengths checked above.
        unsafe { avx512::image(s, x, w, bias, lo, hi, out) };
        return Ok(());
    }
    let _ = isa;
    portable(s, x, w, bias, lo, hi, out);
    Ok(())
}

/// Portable path: per output channel and row, tap by tap over the valid
/// column range (vectorisable inner loop).
fn portable(
    s: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) {
    let (oh, ow) = s.out_hw();
    let st = s.stride.0;
    for m in 0..s.c_out {
        let plane = &mut out[m * oh * ow..(m + 1) * oh * ow];
        plane.fill(bias.map_or(0.0, |b| b[m]));
        for c in 0..s.c_in {
            let xc = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let wv = w[((m * s.c_in + c) * s.kh + ky) * s.kw + kx];
                    // Output columns whose tap column lies inside the row.
                    let off = kx as isize - s.pad.1 as isize;
                    let lo_x = if off >= 0 {
                        0
                    } else {
                        ((-off) as usize).div_ceil(st)
                    };
                    let hi_x = if (s.w as isize) - off <= 0 {
                        0
                    } else {
                        ((s.w as isize - off) as usize).div_ceil(st)
                    };
                    let (lo_x, hi_x) = (lo_x.min(ow), hi_x.min(ow));
                    for oy in 0..oh {
                        let Some(iy) = (oy * st + ky).checked_sub(s.pad.0).filter(|&y| y < s.h)
                        else {
                            continue;
                        };
                        let row = &xc[iy * s.w..(iy + 1) * s.w];
                        let o = &mut plane[oy * ow..(oy + 1) * ow];
                        for (ox, v) in o.iter_mut().enumerate().take(hi_x).skip(lo_x) {
                            *v += wv * row[(ox as isize * st as isize + off) as usize];
                        }
                    }
                }
            }
        }
        for v in plane.iter_mut() {
            *v = v.max(lo).min(hi);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::conv::Conv2d;
    use crate::dwconv::avx512_lanes as lanes;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F available; slices checked against `s` by the caller.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image(
        s: &Conv2d,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        lo: f32,
        hi: f32,
        out: &mut [f32],
    ) {
        let mut m0 = 0;
        while m0 < s.c_out {
            let mb = (s.c_out - m0).min(8);
            // SAFETY (all arms): same contract as this function, channels m0..m0+MB.
            match mb {
                8 => block::<8>(s, x, w, bias, lo, hi, out, m0),
                7 => block::<7>(s, x, w, bias, lo, hi, out, m0),
                6 => block::<6>(s, x, w, bias, lo, hi, out, m0),
                5 => block::<5>(s, x, w, bias, lo, hi, out, m0),
                4 => block::<4>(s, x, w, bias, lo, hi, out, m0),
                3 => block::<3>(s, x, w, bias, lo, hi, out, m0),
                2 => block::<2>(s, x, w, bias, lo, hi, out, m0),
                _ => block::<1>(s, x, w, bias, lo, hi, out, m0),
            }
            m0 += mb;
        }
    }

    /// Output channels `m0..m0+MB`, 16 columns of one row at a time.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const MB: usize>(
        s: &Conv2d,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        lo: f32,
        hi: f32,
        out: &mut [f32],
        m0: usize,
    ) {
        let (oh, ow) = s.out_hw();
        let (h, wd) = (s.h as isize, s.w as isize);
        let (pt, pl) = (s.pad.0 as isize, s.pad.1 as isize);
        let st = s.stride.0 as isize;
        let stride2 = st == 2;
        let kk = s.kh * s.kw;
        let per_m = s.c_in * kk;
        let (vlo, vhi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let xp = x.as_ptr();
        let wp = w.as_ptr().add(m0 * per_m);
        let op = out.as_mut_ptr();
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let mut ox = 0;
        while ox < ow {
            let n = (ow - ox).min(16) as u32;
            let omask = ((1u32 << n) - 1) as u16;
            // Per kernel column: first input column and load masks, shared
            // by every output row and input channel of this column block.
            let cols: Vec<(isize, u16, u16)> = (0..s.kw)
                .map(|kx| {
                    let c0 = ox as isize * st + kx as isize - pl;
                    (c0, lanes(-c0, wd - c0), lanes(-c0 - 16, wd - c0 - 16))
                })
                .collect();
            for oy in 0..oh {
                let mut acc = [_mm512_setzero_ps(); MB];
                for c in 0..s.c_in {
                    for ky in 0..s.kh {
                        let iy = oy as isize * st + ky as isize - pt;
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        // SAFETY: row iy of channel c lies inside `x`.
                        let row = xp.add((c * s.h + iy as usize) * s.w);
                        let wk = wp.add(c * kk + ky * s.kw);
                        for (kx, &(c0, m0, m1)) in cols.iter().enumerate() {
                            // SAFETY: only lanes whose column lies inside the
                            // row are read (masks); others are not touched.
                            let v = if stride2 {
                                let lo = _mm512_maskz_loadu_ps(m0, row.wrapping_offset(c0));
                                let hi = _mm512_maskz_loadu_ps(m1, row.wrapping_offset(c0 + 16));
                                _mm512_permutex2var_ps(lo, even, hi)
                            } else {
                                _mm512_maskz_loadu_ps(m0, row.wrapping_offset(c0))
                            };
                            for (j, a) in acc.iter_mut().enumerate() {
                                // SAFETY: weight (m0+j, c, ky, kx) is inside `w`.
                                let wv = _mm512_set1_ps(*wk.add(j * per_m + kx));
                                *a = _mm512_fmadd_ps(wv, v, *a);
                            }
                        }
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    let b = _mm512_set1_ps(bias.map_or(0.0, |b| b[m0 + j]));
                    let y = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(*a, b), vlo), vhi);
                    // SAFETY: lanes 0..n of row oy, channel m0+j, are inside `out`.
                    _mm512_mask_storeu_ps(op.add(((m0 + j) * oh + oy) * ow + ox), omask, y);
                }
            }
            ox += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::reference_f32;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(7);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every path equals the f64 reference within summation rounding on
    /// LeNet's and a MobileNet stem's shapes and odd ones: widths that
    /// leave 16-lane tails, rows narrower than one vector, stride 2,
    /// asymmetric padding, channel counts that leave partial 8-blocks.
    #[test]
    fn every_path_matches_the_reference() {
        let base = Conv2d {
            c_in: 1,
            h: 28,
            w: 28,
            c_out: 6,
            kh: 5,
            kw: 5,
            stride: (1, 1),
            pad: (2, 2, 2, 2),
            dilation: (1, 1),
            groups: 1,
        };
        let shapes = [
            base,
            Conv2d {
                c_in: 6,
                h: 14,
                w: 14,
                c_out: 16,
                pad: (0, 0, 0, 0),
                ..base
            },
            Conv2d {
                c_out: 16,
                kh: 3,
                kw: 3,
                pad: (1, 1, 1, 1),
                ..base
            },
            Conv2d {
                c_in: 3,
                h: 9,
                w: 19,
                c_out: 11,
                kh: 3,
                kw: 2,
                stride: (2, 2),
                pad: (0, 1, 2, 0),
                ..base
            },
            Conv2d {
                c_in: 2,
                h: 5,
                w: 3,
                c_out: 13,
                kh: 3,
                kw: 3,
                pad: (1, 2, 1, 2),
                ..base
            },
            Conv2d {
                c_in: 4,
                h: 7,
                w: 33,
                c_out: 9,
                kh: 1,
                kw: 3,
                stride: (2, 2),
                pad: (0, 0, 0, 1),
                ..base
            },
        ];
        for (i, s) in shapes.iter().enumerate() {
            assert!(fits(s), "{s:?}");
            let x = data(s.c_in * s.h * s.w, i as u32);
            let w = data(s.c_out * s.k(), 50 + i as u32);
            let b = data(s.c_out, 90 + i as u32);
            let (oh, ow) = s.out_hw();
            for (lo, hi) in [(f32::NEG_INFINITY, f32::INFINITY), (0.0, 0.5)] {
                let want: Vec<f32> = reference_f32(s, 1, &x, &w, Some(&b))
                    .into_iter()
                    .map(|v| v.max(lo).min(hi))
                    .collect();
                // Terms |w·x| ≤ 1: the error stays within K·ε per output.
                let tol = s.k() as f32 * 2.4e-7 + 1e-6;
                for isa in cpu::available() {
                    let mut got = vec![f32::NAN; s.c_out * oh * ow];
                    conv_with(isa, s, &x, &w, Some(&b), lo, hi, &mut got).unwrap();
                    for (q, (a, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - e).abs() <= tol,
                            "{isa:?} shape {i} out {q}: {a} vs {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_what_it_does_not_handle() {
        let s = Conv2d {
            c_in: 2,
            h: 6,
            w: 6,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (0, 0, 0, 0),
            dilation: (2, 2),
            groups: 1,
        };
        let mut o = vec![0.0; 4 * 4];
        assert!(conv(&s, &[0.0; 72], &[0.0; 72], None, 0.0, 1.0, &mut o).is_err());
        let s = Conv2d {
            dilation: (1, 1),
            ..s
        };
        // Output of the wrong length.
        assert!(conv(&s, &[0.0; 72], &[0.0; 72], None, 0.0, 1.0, &mut o).is_err());
    }
}
