//! int8 depthwise convolution of one NCHW plane with canonical requantisation.
//!
//! A depthwise conv has one output channel per input channel, so a GEMM
//! would have a single row per group. Direct loops instead: the plane is
//! copied once into a zero-padded i16 buffer of `x − z_x` (so padding adds
//! exactly nothing and the loops have no bounds tests), then every tap adds
//! `w·row` to a row of i32 accumulators. The same generic body is compiled
//! for AVX-512, AVX2 and baseline x86-64 (LLVM vectorises the tap loop); all
//! are exact integer sums followed by the same [`Requant::apply`], so every
//! path equals [`reference`] bit for bit.

use super::Requant;
use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// Geometry of one depthwise plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dw2d {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    /// (stride_h, stride_w)
    pub stride: (usize, usize),
    /// (top, left, bottom, right)
    pub pad: (usize, usize, usize, usize),
    /// (dilation_h, dilation_w)
    pub dilation: (usize, usize),
}

impl Dw2d {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let eh = self.dilation.0 * (self.kh - 1) + 1;
        let ew = self.dilation.1 * (self.kw - 1) + 1;
        (
            (self.h + self.pad.0 + self.pad.2 - eh) / self.stride.0 + 1,
            (self.w + self.pad.1 + self.pad.3 - ew) / self.stride.1 + 1,
        )
    }
    fn check(&self) -> Result<()> {
        let zero = [
            self.h,
            self.w,
            self.kh,
            self.kw,
            self.stride.0,
            self.stride.1,
            self.dilation.0,
            self.dilation.1,
        ]
        .contains(&0);
        let eh = self.dilation.0 * (self.kh.max(1) - 1) + 1;
        let ew = self.dilation.1 * (self.kw.max(1) - 1) + 1;
        if zero || self.h + self.pad.0 + self.pad.2 < eh || self.w + self.pad.1 + self.pad.3 < ew {
            return Err(KernelError::Unsupported {
                what: "int8 depthwise shape",
                why: format!("{self:?}"),
            });
        }
        Ok(())
    }
}

/// Direct loops with bounds tests: the reference. Returns requantised values.
pub fn reference(s: &Dw2d, x: &[u8], za: u8, taps: &[i8], c: usize, rq: &Requant) -> Vec<i32> {
    let (oh, ow) = s.out_hw();
    let mut y = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = rq.bias_at(c);
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let yy = (oy * s.stride.0 + ky * s.dilation.0) as isize - s.pad.0 as isize;
                    let xx = (ox * s.stride.1 + kx * s.dilation.1) as isize - s.pad.1 as isize;
                    if yy >= 0 && xx >= 0 && (yy as usize) < s.h && (xx as usize) < s.w {
                        let v = x[yy as usize * s.w + xx as usize] as i32 - za as i32;
                        acc += v * taps[ky * s.kw + kx] as i32;
                    }
                }
            }
            y.push(rq.apply(acc, c));
        }
    }
    y
}

/// Reusable buffers of [`plane`] (one per thread).
#[derive(Debug, Default)]
pub struct DwScratch {
    padded: Vec<i16>,
    acc: Vec<i32>,
}

/// Depthwise conv of plane `x` (channel `c`, for the bias and multiplier)
/// into `out` (`OH×OW` bytes; i8 outputs as two's-complement bytes).
#[allow(clippy::too_many_arguments)]
pub fn plane(
    s: &Dw2d,
    x: &[u8],
    za: u8,
    taps: &[i8],
    c: usize,
    rq: &Requant,
    scratch: &mut DwScratch,
    out: &mut [u8],
) -> Result<()> {
    plane_with(cpu::best(), s, x, za, taps, c, rq, scratch, out)
}

/// [`plane`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn plane_with(
    isa: Isa,
    s: &Dw2d,
    x: &[u8],
    za: u8,
    taps: &[i8],
    c: usize,
    rq: &Requant,
    scratch: &mut DwScratch,
    out: &mut [u8],
) -> Result<()> {
    s.check()?;
    let (oh, ow) = s.out_hw();
    check_len("int8 depthwise plane (H×W)", s.h * s.w, x.len())?;
    check_len("int8 depthwise taps (kh×kw)", s.kh * s.kw, taps.len())?;
    check_len("int8 depthwise output (OH×OW)", oh * ow, out.len())?;
    // Output codes are bytes; bounds this small keep the f32 → i32
    // conversion of the requantisation exact and in range.
    let small = |v: i32| v.unsigned_abs() < (1 << 20);
    if !(small(rq.lo) && small(rq.hi) && small(rq.out_zero)) || rq.lo > rq.hi {
        return Err(KernelError::Unsupported {
            what: "int8 depthwise output range",
            why: format!("lo {} hi {} zero {}", rq.lo, rq.hi, rq.out_zero),
        });
    }
    if rq.mult.len() <= c && rq.mult.len() != 1 || rq.bias.is_some_and(|b| b.len() <= c) {
        return Err(KernelError::Unsupported {
            what: "int8 depthwise channel",
            why: format!("channel {c} has no multiplier or bias"),
        });
    }
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: the CPU supports AVX-512 F/BW (clamped above).
            unsafe { body_avx512(s, x, za, taps, c, rq, scratch, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the CPU supports AVX2 + FMA (clamped above).
            unsafe { body_avx2(s, x, za, taps, c, rq, scratch, out) }
        }
        _ => body(s, x, za, taps, c, rq, scratch, out),
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn body_avx512(
    s: &Dw2d,
    x: &[u8],
    za: u8,
    taps: &[i8],
    c: usize,
    rq: &Requant,
    scratch: &mut DwScratch,
    out: &mut [u8],
) {
    body(s, x, za, taps, c, rq, scratch, out)
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn body_avx2(
    s: &Dw2d,
    x: &[u8],
    za: u8,
    taps: &[i8],
    c: usize,
    rq: &Requant,
    scratch: &mut DwScratch,
    out: &mut [u8],
) {
    body(s, x, za, taps, c, rq, scratch, out)
}

/// The shared loop body (inlined into each target-feature wrapper).
///
/// Accumulators cover whole rows of the *padded* width `wp` (the columns
/// past the last output are computed and dropped), so each tap is one long
/// contiguous multiply-add over `rows·wp` elements that LLVM vectorises
/// without tails per output row; with a vertical stride of 1 all output rows
/// form a single span. Horizontal strides pick every `sw`-th column when
/// requantising.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn body(
    s: &Dw2d,
    x: &[u8],
    za: u8,
    taps: &[i8],
    c: usize,
    rq: &Requant,
    scratch: &mut DwScratch,
    out: &mut [u8],
) {
    let (oh, ow) = s.out_hw();
    let hp = s.h + s.pad.0 + s.pad.2;
    let wp = s.w + s.pad.1 + s.pad.3;
    // Room past the last row for the widest tap offset of the dropped columns.
    let slack = s.dilation.1 * (s.kw - 1) + 1;
    let padded = &mut scratch.padded;
    padded.clear();
    padded.resize(hp * wp + slack, 0);
    for y in 0..s.h {
        let dst = &mut padded[(y + s.pad.0) * wp + s.pad.1..][..s.w];
        for (d, &v) in dst.iter_mut().zip(&x[y * s.w..(y + 1) * s.w]) {
            *d = v as i16 - za as i16;
        }
    }
    let bias = rq.bias_at(c);
    let (sh, sw) = s.stride;
    // Spans of accumulator rows: all rows at once when sh = 1.
    let (span_rows, spans) = if sh == 1 { (oh, 1) } else { (1, oh) };
    let len = span_rows * wp;
    let acc = &mut scratch.acc;
    acc.clear();
    acc.resize(len, 0);
    for sp in 0..spans {
        let oy0 = sp * span_rows;
        acc.iter_mut().for_each(|a| *a = bias);
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let wv = taps[ky * s.kw + kx] as i32;
                let off = (oy0 * sh + ky * s.dilation.0) * wp + kx * s.dilation.1;
                let src = &padded[off..off + len];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += wv * v as i32;
                }
            }
        }
        // Requant::apply with the channel's constants hoisted and a plain
        // truncating conversion, so the loop vectorises.
        let m = rq.mult_at(c);
        let zo = rq.out_zero;
        let (lo, hi) = ((rq.lo - zo) as f32, (rq.hi - zo) as f32);
        let requant = |a: i32| -> u8 {
            let r = (a as f32 * m).round_ties_even().max(lo).min(hi);
            // SAFETY: max/min against the finite bounds make `r` finite
            // (NaN gives `lo`, ±inf a bound) and integer-valued in
            // [lo, hi], |lo|, |hi| < 2^21 (checked in `plane_with`).
            (unsafe { r.to_int_unchecked::<i32>() } + zo) as u8
        };
        for r in 0..span_rows {
            let oy = oy0 + r;
            let row = &acc[r * wp..(r + 1) * wp];
            let dst = &mut out[oy * ow..(oy + 1) * ow];
            if sw == 1 {
                for (o, &a) in dst.iter_mut().zip(row) {
                    *o = requant(a);
                }
            } else {
                for (ox, o) in dst.iter_mut().enumerate() {
                    *o = requant(row[ox * sw]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn every_path_equals_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let base = Dw2d {
            h: 14,
            w: 14,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (1, 1, 1, 1),
            dilation: (1, 1),
        };
        let shapes = [
            base,
            Dw2d {
                stride: (2, 2),
                ..base
            },
            Dw2d {
                h: 7,
                w: 9,
                pad: (0, 2, 1, 0),
                stride: (2, 1),
                ..base
            },
            Dw2d {
                kh: 5,
                kw: 5,
                dilation: (2, 1),
                pad: (4, 2, 4, 2),
                ..base
            },
            Dw2d {
                h: 1,
                w: 1,
                kh: 1,
                kw: 1,
                pad: (0, 0, 0, 0),
                ..base
            },
        ];
        for s in shapes {
            let x: Vec<u8> = (0..s.h * s.w).map(|_| rng.gen()).collect();
            let taps: Vec<i8> = (0..s.kh * s.kw).map(|_| rng.gen()).collect();
            let (oh, ow) = s.out_hw();
            for &(za, zo, lo, hi, m) in &[
                (0u8, 0, 0, 255, 0.01f32),
                (255, 3, 3, 255, 0.002),
                (128, 0, -128, 127, 0.0007),
                (9, -128, -128, 127, 1.5),
            ] {
                let rq = Requant {
                    mult: &[0.5, m],
                    bias: Some(&[0, -700]),
                    out_zero: zo,
                    lo,
                    hi,
                };
                let want = reference(&s, &x, za, &taps, 1, &rq);
                for isa in cpu::available() {
                    let mut out = vec![0u8; oh * ow];
                    let mut sc = DwScratch::default();
                    plane_with(isa, &s, &x, za, &taps, 1, &rq, &mut sc, &mut out).unwrap();
                    let got: Vec<i32> = out
                        .iter()
                        .map(|&b| if lo < 0 { b as i8 as i32 } else { b as i32 })
                        .collect();
                    assert_eq!(got, want, "{isa:?} {s:?} za={za}");
                }
            }
        }
    }
}
