//! Pooling over NCHW planes (ONNX MaxPool / AveragePool semantics, floor mode).

use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// Geometry of a 2-D pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// Planes (N·C).
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    /// (top, left, bottom, right); padded cells never win a max and are not
    /// counted by the average.
    pub pad: (usize, usize, usize, usize),
}

impl Pool2d {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + self.pad.0 + self.pad.2 - self.kh) / self.stride.0 + 1,
            (self.w + self.pad.1 + self.pad.3 - self.kw) / self.stride.1 + 1,
        )
    }
    fn check(&self, in_len: usize, out_len: usize) -> Result<()> {
        if [
            self.h,
            self.w,
            self.kh,
            self.kw,
            self.stride.0,
            self.stride.1,
        ]
        .contains(&0)
            || self.h + self.pad.0 + self.pad.2 < self.kh
            || self.w + self.pad.1 + self.pad.3 < self.kw
            || self.pad.0 >= self.kh
            || self.pad.1 >= self.kw
        {
            return Err(KernelError::Unsupported {
                what: "pool2d shape",
                why: format!("{self:?}"),
            });
        }
        let (oh, ow) = self.out_hw();
        check_len(
            "pool2d input (planes×H×W)",
            self.planes * self.h * self.w,
            in_len,
        )?;
        check_len(
            "pool2d output (planes×OH×OW)",
            self.planes * oh * ow,
            out_len,
        )
    }
    /// Visits the in-bounds cells of output (oy, ox).
    #[inline]
    fn window(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let y0 = (oy * self.stride.0).saturating_sub(self.pad.0);
        let y1 = (oy * self.stride.0 + self.kh - self.pad.0).min(self.h);
        let x0 = (ox * self.stride.1).saturating_sub(self.pad.1);
        let x1 = (ox * self.stride.1 + self.kw - self.pad.1).min(self.w);
        (y0..y1, x0..x1)
    }
}

/// Max pooling for any ordered element (u8, i8, f32): quantised max pooling
/// needs no requantisation because max commutes with a monotone affine map.
pub fn maxpool<T: Copy + PartialOrd>(p: &Pool2d, x: &[T], out: &mut [T]) -> Result<()> {
    p.check(x.len(), out.len())?;
    let (oh, ow) = p.out_hw();
    if p.kh == 2 && p.kw == 2 && p.stride == (2, 2) && p.pad == (0, 0, 0, 0) {
        // LeNet's window (the int8 models' pools): the four taps of each
        // output in the tap order and comparison of the loops below, so the
        // same result, without their per-tap strided passes over the row.
        for (plane, o) in x.chunks_exact(p.h * p.w).zip(out.chunks_exact_mut(oh * ow)) {
            for (oy, orow) in o.chunks_exact_mut(ow).enumerate() {
                let r0 = &plane[2 * oy * p.w..][..2 * ow];
                let r1 = &plane[(2 * oy + 1) * p.w..][..2 * ow];
                for ((m, a), b) in orow
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    let mut v = a[0];
                    for &t in [a[1], b[0], b[1]].iter() {
                        if t > v {
                            v = t;
                        }
                    }
                    *m = v;
                }
            }
        }
        return Ok(());
    }
    if p.pad == (0, 0, 0, 0) {
        // Every window is whole: a row of outputs takes one tap at a time
        // (same tap order and comparison as below, so the same result,
        // NaN included), which keeps the inner loop free of window bounds.
        for (plane, o) in x.chunks_exact(p.h * p.w).zip(out.chunks_exact_mut(oh * ow)) {
            for (oy, orow) in o.chunks_exact_mut(ow).enumerate() {
                for ky in 0..p.kh {
                    let row = &plane[(oy * p.stride.0 + ky) * p.w..][..p.w];
                    for kx in 0..p.kw {
                        let taps = row[kx..].iter().step_by(p.stride.1);
                        if ky == 0 && kx == 0 {
                            for (m, &v) in orow.iter_mut().zip(taps) {
                                *m = v;
                            }
                        } else {
                            for (m, &v) in orow.iter_mut().zip(taps) {
                                if v > *m {
                                    *m = v;
                                }
                            }
                        }
                    }
                }
            }
        }
        return Ok(());
    }
    for (plane, o) in x.chunks_exact(p.h * p.w).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            for ox in 0..ow {
                let (ys, xs) = p.window(oy, ox);
                let mut m = plane[ys.start * p.w + xs.start];
                for y in ys {
                    for &v in &plane[y * p.w + xs.start..y * p.w + xs.end] {
                        if v > m {
                            m = v;
                        }
                    }
                }
                o[oy * ow + ox] = m;
            }
        }
    }
    Ok(())
}

/// [`maxpool`] on u8 codes (the quantised models' pools), on the best path
/// for this CPU: LeNet's 2×2 stride-2 window over rows of at most 64 bytes
/// is one masked byte max of the two rows and one 16-bit-lane max of the
/// byte pairs per output row on AVX-512 BW; anything else takes [`maxpool`].
pub fn maxpool_u8(p: &Pool2d, x: &[u8], out: &mut [u8]) -> Result<()> {
    maxpool_u8_with(cpu::best(), p, x, out)
}

/// [`maxpool_u8`] on a chosen path (lowered to what the CPU supports).
pub fn maxpool_u8_with(isa: Isa, p: &Pool2d, x: &[u8], out: &mut [u8]) -> Result<()> {
    p.check(x.len(), out.len())?;
    let (_, ow) = p.out_hw();
    let lenet = p.kh == 2 && p.kw == 2 && p.stride == (2, 2) && p.pad == (0, 0, 0, 0);
    #[cfg(target_arch = "x86_64")]
    if lenet && 2 * ow <= 64 && cpu::clamp(isa) >= Isa::Avx512 {
        // SAFETY: AVX-512 F/BW present (clamped); lengths checked above,
        // rows of 2·ow ≤ 64 bytes.
        unsafe { avx512::max2x2_u8(p, x, out) };
        return Ok(());
    }
    let _ = (isa, lenet, ow);
    maxpool(p, x, out)
}

/// Average pooling in f32 over the in-bounds cells (count_include_pad = 0).
pub fn avgpool_f32(p: &Pool2d, x: &[f32], out: &mut [f32]) -> Result<()> {
    p.check(x.len(), out.len())?;
    let (oh, ow) = p.out_hw();
    for (plane, o) in x.chunks_exact(p.h * p.w).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            for ox in 0..ow {
                let (ys, xs) = p.window(oy, ox);
                let n = (ys.len() * xs.len()) as f32;
                let s: f32 = ys
                    .flat_map(|y| plane[y * p.w + xs.start..y * p.w + xs.end].iter())
                    .sum();
                o[oy * ow + ox] = s / n;
            }
        }
    }
    Ok(())
}

/// f32 max pooling: [`maxpool`], with the 2×2 stride-2 unpadded window
/// (LeNet's) on AVX-512 where present. Bit-identical to [`maxpool`], NaN
/// placement included: `vmaxps(t, m)` is exactly `if t > m { m = t }`.
pub fn maxpool_f32(p: &Pool2d, x: &[f32], out: &mut [f32]) -> Result<()> {
    maxpool_f32_with(cpu::best(), p, x, out)
}

/// [`maxpool_f32`] on a chosen path (lowered to what the CPU supports).
pub fn maxpool_f32_with(isa: Isa, p: &Pool2d, x: &[f32], out: &mut [f32]) -> Result<()> {
    let two_by_two = p.kh == 2 && p.kw == 2 && p.stride == (2, 2) && p.pad == (0, 0, 0, 0);
    #[cfg(target_arch = "x86_64")]
    if two_by_two && cpu::clamp(isa) >= Isa::Avx512 {
        p.check(x.len(), out.len())?;
        // SAFETY: AVX-512F present (clamped); lengths checked against `p`.
        unsafe { avx512::max2x2(p, x, out) };
        return Ok(());
    }
    let _ = (isa, two_by_two);
    maxpool(p, x, out)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Pool2d;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F available; 2×2 stride-2 unpadded `p`, lengths checked.
    /// 2×2 stride-2 max over u8 rows of 2·ow ≤ 64 bytes: the byte max of
    /// the two input rows, then the max of each byte pair as 16-bit lanes
    /// (low byte masked, high byte shifted down), narrowed back to bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn max2x2_u8(p: &Pool2d, x: &[u8], out: &mut [u8]) {
        let (oh, ow) = p.out_hw();
        let kin: __mmask64 = if 2 * ow >= 64 {
            !0
        } else {
            (1u64 << (2 * ow)) - 1
        };
        let kout: __mmask32 = if ow >= 32 { !0 } else { (1u32 << ow) - 1 };
        let low = _mm512_set1_epi16(0xff);
        for (plane, o) in x.chunks_exact(p.h * p.w).zip(out.chunks_exact_mut(oh * ow)) {
            for oy in 0..oh {
                // SAFETY: rows 2·oy and 2·oy + 1 < h; 2·ow ≤ w bytes read
                // from each (masked), ow written at oy·ow of the plane.
                let r0 = _mm512_maskz_loadu_epi8(kin, plane.as_ptr().add(2 * oy * p.w) as *const _);
                let r1 = _mm512_maskz_loadu_epi8(
                    kin,
                    plane.as_ptr().add((2 * oy + 1) * p.w) as *const _,
                );
                let v = _mm512_max_epu8(r0, r1);
                let m = _mm512_max_epu16(_mm512_and_si512(v, low), _mm512_srli_epi16::<8>(v));
                _mm512_mask_cvtepi16_storeu_epi8(o.as_mut_ptr().add(oy * ow) as *mut _, kout, m);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max2x2(p: &Pool2d, x: &[f32], out: &mut [f32]) {
        let (oh, ow) = p.out_hw();
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
        let lanes = |lo: usize, hi: usize| -> u16 {
            let hi = hi.min(16) as u32;
            let lo = lo.min(16) as u32;
            if hi <= lo {
                0
            } else {
                ((1u32 << hi) - (1u32 << lo)) as u16
            }
        };
        for plane in 0..p.planes {
            for oy in 0..oh {
                let r0 = xp.add((plane * p.h + 2 * oy) * p.w);
                let r1 = r0.add(p.w);
                let mut ox = 0;
                while ox < ow {
                    let n = (ow - ox).min(16);
                    let c = 2 * ox;
                    let (m0, m1) = (lanes(0, p.w - c), lanes(0, p.w.saturating_sub(c + 16)));
                    // SAFETY: masked lanes are columns < w of rows 2oy and
                    // 2oy+1 (both < h since oh = h/2 rounded down).
                    let load = |r: *const f32| {
                        let a = _mm512_maskz_loadu_ps(m0, r.add(c));
                        let b = _mm512_maskz_loadu_ps(m1, r.wrapping_add(c + 16));
                        (
                            _mm512_permutex2var_ps(a, even, b),
                            _mm512_permutex2var_ps(a, odd, b),
                        )
                    };
                    let (t00, t01) = load(r0);
                    let (t10, t11) = load(r1);
                    // Same tap order as the scalar loop: first tap, then
                    // `if t > m { m = t }` for each following tap.
                    let m = _mm512_max_ps(t01, t00);
                    let m = _mm512_max_ps(t10, m);
                    let m = _mm512_max_ps(t11, m);
                    // SAFETY: lanes 0..n of output row oy are inside `out`.
                    _mm512_mask_storeu_ps(op.add((plane * oh + oy) * ow + ox), lanes(0, n), m);
                    ox += 16;
                }
            }
        }
    }
}

#[cfg(test)]
mod simd_tests {
    use super::*;

    #[test]
    fn maxpool_f32_2x2_equals_the_generic_loop_bit_for_bit() {
        for &(planes, h, w) in &[
            (3, 28, 28),
            (2, 10, 10),
            (1, 5, 7),
            (2, 3, 37),
            (1, 2, 2),
            (4, 9, 33),
        ] {
            let mut x: Vec<f32> = (0..planes * h * w)
                .map(|i| ((i * 7919 % 1013) as f32 - 500.0) * 0.01)
                .collect();
            // NaNs in first and later taps, and ±0 ties.
            x[0] = f32::NAN;
            x[w + 3.min(w - 1)] = f32::NAN;
            x[1] = -0.0;
            let p = Pool2d {
                planes,
                h,
                w,
                kh: 2,
                kw: 2,
                stride: (2, 2),
                pad: (0, 0, 0, 0),
            };
            let (oh, ow) = p.out_hw();
            let mut want = vec![0f32; planes * oh * ow];
            maxpool(&p, &x, &mut want).unwrap();
            for isa in cpu::available() {
                let mut got = vec![1f32; planes * oh * ow];
                maxpool_f32_with(isa, &p, &x, &mut got).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{isa:?} {planes}×{h}×{w}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The u8 paths equal the generic loop (LeNet's planes, odd sizes, a
    /// 64-byte row, and windows that take the fallback).
    #[test]
    fn maxpool_u8_paths_equal_generic() {
        let mut v = 12345u32;
        for &(h, w, k, st) in &[
            (28, 28, 2, 2),
            (10, 10, 2, 2),
            (7, 9, 2, 2),
            (4, 64, 2, 2),
            (5, 70, 2, 2),
            (9, 9, 3, 2),
        ] {
            let p = Pool2d {
                planes: 3,
                h,
                w,
                kh: k,
                kw: k,
                stride: (st, st),
                pad: (0, 0, 0, 0),
            };
            let x: Vec<u8> = (0..3 * h * w)
                .map(|_| {
                    v ^= v << 13;
                    v ^= v >> 17;
                    v ^= v << 5;
                    (v >> 3) as u8
                })
                .collect();
            let (oh, ow) = p.out_hw();
            let mut want = vec![0u8; 3 * oh * ow];
            maxpool(&p, &x, &mut want).unwrap();
            for isa in cpu::available() {
                let mut got = vec![0u8; 3 * oh * ow];
                maxpool_u8_with(isa, &p, &x, &mut got).unwrap();
                assert_eq!(got, want, "{h}x{w} k{k} {isa:?}");
            }
            assert!(maxpool_u8(&p, &x[1..], &mut want).is_err());
        }
    }

    #[test]
    fn maxpool_2x2_path_equals_a_plain_window_max() {
        for &(planes, h, w) in &[(6, 24, 24), (2, 5, 7), (1, 2, 3), (3, 9, 2)] {
            let x: Vec<i8> = (0..planes * h * w)
                .map(|i| ((i * 7919 % 251) as i32 - 125) as i8)
                .collect();
            let p = Pool2d {
                planes,
                h,
                w,
                kh: 2,
                kw: 2,
                stride: (2, 2),
                pad: (0, 0, 0, 0),
            };
            let (oh, ow) = p.out_hw();
            let mut y = vec![0i8; planes * oh * ow];
            maxpool(&p, &x, &mut y).unwrap();
            for c in 0..planes {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at = |dy: usize, dx: usize| x[(c * h + 2 * oy + dy) * w + 2 * ox + dx];
                        let want = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                        assert_eq!(
                            y[(c * oh + oy) * ow + ox],
                            want,
                            "{planes}x{h}x{w} at {c},{oy},{ox}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn maxpool_u8_2x2_and_padded_3x3() {
        let x: Vec<u8> = (0..16).map(|v| (v * 37 % 251) as u8).collect();
        let p = Pool2d {
            planes: 1,
            h: 4,
            w: 4,
            kh: 2,
            kw: 2,
            stride: (2, 2),
            pad: (0, 0, 0, 0),
        };
        let mut y = [0u8; 4];
        maxpool(&p, &x, &mut y).unwrap();
        let want: Vec<u8> = [(0, 0), (0, 2), (2, 0), (2, 2)]
            .iter()
            .map(|&(r, c)| {
                *[
                    x[r * 4 + c],
                    x[r * 4 + c + 1],
                    x[r * 4 + c + 4],
                    x[r * 4 + c + 5],
                ]
                .iter()
                .max()
                .unwrap()
            })
            .collect();
        assert_eq!(y.to_vec(), want);
        let p = Pool2d {
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (1, 1, 1, 1),
            ..p
        };
        let mut y = [0u8; 16];
        maxpool(&p, &x, &mut y).unwrap();
        for r in 0..4usize {
            for c in 0..4usize {
                let mut m = 0;
                for dr in r.saturating_sub(1)..(r + 2).min(4) {
                    for dc in c.saturating_sub(1)..(c + 2).min(4) {
                        m = m.max(x[dr * 4 + dc]);
                    }
                }
                assert_eq!(y[r * 4 + c], m, "({r},{c})");
            }
        }
    }

    /// The unpadded fast path equals a naive first-tap-then-`>` loop over
    /// every window, NaN placement included.
    #[test]
    fn unpadded_maxpool_matches_naive() {
        for &(h, w, kh, kw, sh, sw) in &[
            (24, 24, 2, 2, 2, 2),
            (7, 9, 3, 2, 1, 3),
            (5, 5, 5, 5, 1, 1),
            (6, 11, 1, 3, 2, 2),
        ] {
            let p = Pool2d {
                planes: 2,
                h,
                w,
                kh,
                kw,
                stride: (sh, sw),
                pad: (0, 0, 0, 0),
            };
            let x: Vec<f32> = (0..2 * h * w)
                .map(|i| match i % 13 {
                    5 => f32::NAN,
                    r => ((i * 7919) % 101) as f32 - 50.0 + r as f32 * 0.25,
                })
                .collect();
            let (oh, ow) = p.out_hw();
            let mut y = vec![0f32; 2 * oh * ow];
            maxpool(&p, &x, &mut y).unwrap();
            for q in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let at =
                            |ky: usize, kx: usize| x[q * h * w + (oy * sh + ky) * w + ox * sw + kx];
                        let mut m = at(0, 0);
                        for ky in 0..kh {
                            for kx in 0..kw {
                                if at(ky, kx) > m {
                                    m = at(ky, kx);
                                }
                            }
                        }
                        let got = y[(q * oh + oy) * ow + ox];
                        assert!(
                            got == m || (got.is_nan() && m.is_nan()),
                            "{p:?} {q} {oy} {ox}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn avgpool_excludes_padding() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let p = Pool2d {
            planes: 1,
            h: 2,
            w: 2,
            kh: 2,
            kw: 2,
            stride: (1, 1),
            pad: (1, 1, 0, 0),
        };
        let mut y = [0f32; 4];
        avgpool_f32(&p, &x, &mut y).unwrap();
        assert_eq!(y, [1.0, 1.5, 2.0, 2.5]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let p = Pool2d {
            planes: 1,
            h: 2,
            w: 2,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (0, 0, 0, 0),
        };
        assert!(maxpool(&p, &[0u8; 4], &mut [0u8; 1]).is_err());
        let p = Pool2d { kh: 2, kw: 2, ..p };
        assert!(maxpool(&p, &[0u8; 3], &mut [0u8; 1]).is_err());
    }
}
