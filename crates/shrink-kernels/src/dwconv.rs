//! Depthwise 3×3 f32 convolution of one plane, stride 1 or 2, any padding,
//! with the bias and a clamp (ReLU / ReLU6 / Clip) fused on the way out.
//!
//! MobileNet-style networks spend a large share of their time here at small
//! batch, and a GEMM cannot help (one input channel per output channel). The
//! AVX-512 path computes 16 output columns of a row per register: each of
//! the 9 taps is one masked load (stride 2: two loads and an even-lane
//! permute) and one FMA. Masked loads make the padding free: lanes whose
//! input column falls outside the row are loaded as zero and never touched,
//! so borders, odd widths and tails run the same code as the interior.

use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// Geometry of one depthwise 3×3 plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dw3x3 {
    pub h: usize,
    pub w: usize,
    /// The same stride along both axes: 1 or 2.
    pub stride: usize,
    /// (top, left, bottom, right)
    pub pad: (usize, usize, usize, usize),
}

/// Bias added to every output, then the clamp `[lo, hi]` (±∞ for none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DwEpilogue {
    pub bias: f32,
    pub lo: f32,
    pub hi: f32,
}

impl Default for DwEpilogue {
    fn default() -> Self {
        DwEpilogue {
            bias: 0.0,
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        }
    }
}

impl Dw3x3 {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (self.h + self.pad.0 + self.pad.2).saturating_sub(3) / s + 1,
            (self.w + self.pad.1 + self.pad.3).saturating_sub(3) / s + 1,
        )
    }

    fn check(&self, x: usize, w: usize, out: usize) -> Result<()> {
        if !(1..=2).contains(&self.stride) || self.h == 0 || self.w == 0 {
            return Err(KernelError::Unsupported {
                what: "depthwise 3×3 shape",
                why: format!("stride must be 1 or 2 and the plane non-empty: {self:?}"),
            });
        }
        if self.h + self.pad.0 + self.pad.2 < 3 || self.w + self.pad.1 + self.pad.3 < 3 {
            return Err(KernelError::Unsupported {
                what: "depthwise 3×3 shape",
                why: format!("padded plane smaller than the kernel: {self:?}"),
            });
        }
        let (oh, ow) = self.out_hw();
        check_len("depthwise input plane", self.h * self.w, x)?;
        check_len("depthwise 3×3 weights", 9, w)?;
        check_len("depthwise output plane", oh * ow, out)
    }

    /// Input (row, col) of output (oy, ox), tap (ky, kx), if inside the plane.
    fn src(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride + ky).checked_sub(self.pad.0)?;
        let x = (ox * self.stride + kx).checked_sub(self.pad.1)?;
        (y < self.h && x < self.w).then_some((y, x))
    }
}

/// Direct definition: `clamp(Σ_{ky,kx} w·x + bias)`, taps in row-major
/// order, products rounded then summed (no FMA). The test reference.
pub fn reference(s: &Dw3x3, x: &[f32], w: &[f32], ep: DwEpilogue) -> Vec<f32> {
    let (oh, ow) = s.out_hw();
    let mut y = vec![0f32; oh * ow];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = 0f32;
            for ky in 0..3 {
                for kx in 0..3 {
                    if let Some((iy, ix)) = s.src(oy, ox, ky, kx) {
                        acc += w[ky * 3 + kx] * x[iy * s.w + ix];
                    }
                }
            }
            y[oy * ow + ox] = (acc + ep.bias).max(ep.lo).min(ep.hi);
        }
    }
    y
}

/// One plane on the best path for this CPU.
pub fn plane(s: &Dw3x3, x: &[f32], w: &[f32], ep: DwEpilogue, out: &mut [f32]) -> Result<()> {
    plane_with(cpu::best(), s, x, w, ep, out)
}

/// One plane on a chosen path (lowered to what the CPU supports).
pub fn plane_with(
    isa: Isa,
    s: &Dw3x3,
    x: &[f32],
    w: &[f32],
    ep: DwEpilogue,
    out: &mut [f32],
) -> Result<()> {
    s.check(x.len(), w.len(), out.len())?;
    #[cfg(target_arch = "x86_64")]
    if cpu::clamp(isa) >= Isa::Avx512 {
        // SAFETY: AVX-512F is present (clamped to the CPU's level); lengths
        // were checked against the geometry above.
        unsafe { avx512::plane(s, x, w, ep, out) };
        return Ok(());
    }
    let _ = isa;
    portable(s, x, w, ep, out);
    Ok(())
}

/// Portable path: the interior columns (all three taps inside the row)
/// without bounds checks per tap, the borders through [`Dw3x3::src`].
fn portable(s: &Dw3x3, x: &[f32], w: &[f32], ep: DwEpilogue, out: &mut [f32]) {
    let (oh, ow) = s.out_hw();
    let st = s.stride;
    // ox is interior when ox·st − pl ≥ 0 and ox·st − pl + 2 < w.
    let lo = s.pad.1.div_ceil(st).min(ow);
    let hi = if s.w + s.pad.1 >= 3 {
        ((s.w + s.pad.1 - 3) / st + 1).clamp(lo, ow)
    } else {
        lo
    };
    for oy in 0..oh {
        let row = &mut out[oy * ow..(oy + 1) * ow];
        for (ox, o) in row.iter_mut().enumerate() {
            let mut acc = 0f32;
            if ox >= lo && ox < hi {
                let c = ox * st - s.pad.1;
                for ky in 0..3 {
                    let Some(iy) = (oy * st + ky).checked_sub(s.pad.0).filter(|&y| y < s.h) else {
                        continue;
                    };
                    let r = &x[iy * s.w + c..iy * s.w + c + 3];
                    let k = &w[ky * 3..ky * 3 + 3];
                    acc += k[0] * r[0];
                    acc += k[1] * r[1];
                    acc += k[2] * r[2];
                }
            } else {
                for ky in 0..3 {
                    for kx in 0..3 {
                        if let Some((iy, ix)) = s.src(oy, ox, ky, kx) {
                            acc += w[ky * 3 + kx] * x[iy * s.w + ix];
                        }
                    }
                }
            }
            *o = (acc + ep.bias).max(ep.lo).min(ep.hi);
        }
    }
}

/// The lane-range mask the direct conv kernel shares (see `avx512::lanes`).
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::lanes as avx512_lanes;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Dw3x3, DwEpilogue};
    use std::arch::x86_64::*;

    /// Lanes `lo..hi` of a 16-lane mask (empty when `hi <= lo`).
    #[inline(always)]
    pub(crate) fn lanes(lo: isize, hi: isize) -> u16 {
        let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
        if hi <= lo {
            0
        } else {
            ((1u32 << hi) - (1u32 << lo)) as u16
        }
    }

    /// # Safety
    /// AVX-512F must be available; `x`, `w`, `out` checked against `s`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn plane(s: &Dw3x3, x: &[f32], w: &[f32], ep: DwEpilogue, out: &mut [f32]) {
        let (oh, ow) = s.out_hw();
        let (h, wd) = (s.h as isize, s.w as isize);
        let (pt, pl) = (s.pad.0 as isize, s.pad.1 as isize);
        let st = s.stride as isize;
        let stride2 = s.stride == 2;
        let k: [__m512; 9] = std::array::from_fn(|i| _mm512_set1_ps(w[i]));
        let (bias, lo, hi) = (
            _mm512_set1_ps(ep.bias),
            _mm512_set1_ps(ep.lo),
            _mm512_set1_ps(ep.hi),
        );
        let xp = x.as_ptr();
        let op = out.as_mut_ptr();
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let mut ox = 0;
        while ox < ow {
            let n = (ow - ox).min(16);
            let omask = lanes(0, n as isize);
            // Per kernel column: first input column and the load masks
            // (the same for every output row, so computed once here).
            let cols: [(isize, u16, u16); 3] = std::array::from_fn(|kx| {
                let c0 = ox as isize * st + kx as isize - pl;
                (c0, lanes(-c0, wd - c0), lanes(-c0 - 16, wd - c0 - 16))
            });
            for oy in 0..oh {
                // One accumulator per kernel row: three independent FMA chains.
                let mut acc = [_mm512_setzero_ps(); 3];
                for (ky, a) in acc.iter_mut().enumerate() {
                    let iy = oy as isize * st + ky as isize - pt;
                    if iy < 0 || iy >= h {
                        continue;
                    }
                    // SAFETY: row iy is inside the plane (checked just above).
                    let row = xp.add(iy as usize * s.w);
                    for (kx, &(c0, m0, m1)) in cols.iter().enumerate() {
                        // SAFETY: only lanes whose column lies inside the row
                        // are read (masks); the others are neither read nor faulted.
                        let v = if stride2 {
                            let lo = _mm512_maskz_loadu_ps(m0, row.wrapping_offset(c0));
                            let hi = _mm512_maskz_loadu_ps(m1, row.wrapping_offset(c0 + 16));
                            _mm512_permutex2var_ps(lo, even, hi)
                        } else {
                            _mm512_maskz_loadu_ps(m0, row.wrapping_offset(c0))
                        };
                        *a = _mm512_fmadd_ps(k[ky * 3 + kx], v, *a);
                    }
                }
                let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), acc[2]);
                let y = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(sum, bias), lo), hi);
                // SAFETY: lanes 0..n of row oy from column ox are inside `out`.
                _mm512_mask_storeu_ps(op.add(oy * ow + ox), omask, y);
            }
            ox += 16;
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

    /// Every path equals the reference within the FMA/summation rounding
    /// bound, over odd sizes (tails of a 16-lane vector, planes narrower
    /// than one vector, wider than two), both strides, symmetric and
    /// asymmetric padding, with and without a clamp.
    #[test]
    fn every_path_matches_the_reference() {
        let sizes = [
            (1, 1),
            (1, 3),
            (3, 3),
            (2, 5),
            (4, 4),
            (7, 7),
            (14, 14),
            (5, 16),
            (9, 17),
            (6, 31),
            (3, 33),
            (28, 28),
        ];
        let pads = [
            (0, 0, 0, 0),
            (1, 1, 1, 1),
            (0, 1, 1, 0),
            (2, 1, 0, 2),
            (1, 0, 1, 0),
        ];
        let eps = [
            DwEpilogue::default(),
            DwEpilogue {
                bias: 0.25,
                lo: 0.0,
                hi: 6.0,
            },
            DwEpilogue {
                bias: -0.5,
                lo: -0.3,
                hi: 0.4,
            },
        ];
        let mut checked = 0;
        for (i, &(h, w)) in sizes.iter().enumerate() {
            for stride in [1, 2] {
                for (j, &pad) in pads.iter().enumerate() {
                    let s = Dw3x3 { h, w, stride, pad };
                    if h + pad.0 + pad.2 < 3 || w + pad.1 + pad.3 < 3 {
                        let mut o = vec![0.0; 1];
                        assert!(plane(&s, &vec![0.0; h * w], &[0.0; 9], eps[0], &mut o).is_err());
                        continue;
                    }
                    let x = data(h * w, (i * 10 + j) as u32);
                    let k = data(9, 7 + i as u32);
                    let (oh, ow) = s.out_hw();
                    for ep in eps {
                        let want = reference(&s, &x, &k, ep);
                        // Bound: 9 terms of |w·x| ≤ 1 each, a few ε apiece.
                        let tol = 1e-5;
                        for isa in cpu::available() {
                            let mut got = vec![f32::NAN; oh * ow];
                            plane_with(isa, &s, &x, &k, ep, &mut got).unwrap();
                            for (q, (a, b)) in got.iter().zip(&want).enumerate() {
                                assert!(
                                    (a - b).abs() <= tol,
                                    "{isa:?} {s:?} {ep:?} out {q}: {a} vs {b}"
                                );
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 100);
    }

    #[test]
    fn rejects_bad_geometry_and_lengths() {
        let s = Dw3x3 {
            h: 4,
            w: 4,
            stride: 3,
            pad: (1, 1, 1, 1),
        };
        let mut o = vec![0.0; 4];
        assert!(plane(&s, &[0.0; 16], &[0.0; 9], DwEpilogue::default(), &mut o).is_err());
        let s = Dw3x3 { stride: 1, ..s };
        let mut o = vec![0.0; 15];
        assert!(plane(&s, &[0.0; 16], &[0.0; 9], DwEpilogue::default(), &mut o).is_err());
    }
}
