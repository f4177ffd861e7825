//! Pooling over NCHW planes (ONNX MaxPool / AveragePool semantics, floor mode).

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

#[cfg(test)]
mod tests {
    use super::*;

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
