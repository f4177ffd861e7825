//! 2-D convolution (NCHW, ONNX semantics) on top of the GEMMs.
//!
//! General case: im2col. For f32 the weights are the GEMM's left operand and
//! the im2col matrix is packed as its right operand, so the product comes out
//! directly in NCHW (`OC × OH·OW` per image and group). For int8 the im2col
//! rows (padded with the input zero point, so padding adds exactly zero) are
//! the u8 activations against weights packed once ahead of time, and the
//! `OH·OW × OC` result is transposed to NCHW. 1×1 convolutions with stride 1
//! and no padding skip im2col (the input already is the matrix). Depthwise
//! convolutions (groups = C_in = C_out) use direct loops: a GEMM with one
//! output channel per group would waste its register tile.

use crate::epilogue::{Epilogue, Output};
use crate::f32gemm::{self, F32Epilogue, PackedF32};
use crate::int8::{self, PackedI8};
use crate::{check_len, KernelError, Result};

/// Geometry of a 2-D convolution (one image; batches loop over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    /// (stride_h, stride_w)
    pub stride: (usize, usize),
    /// (top, left, bottom, right)
    pub pad: (usize, usize, usize, usize),
    /// (dilation_h, dilation_w)
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Conv2d {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let eh = self.dilation.0 * (self.kh - 1) + 1;
        let ew = self.dilation.1 * (self.kw - 1) + 1;
        (
            (self.h + self.pad.0 + self.pad.2 - eh) / self.stride.0 + 1,
            (self.w + self.pad.1 + self.pad.3 - ew) / self.stride.1 + 1,
        )
    }
    /// Reduction length per output: `C_in/groups · kh · kw`.
    pub fn k(&self) -> usize {
        self.c_in / self.groups * self.kh * self.kw
    }
    pub(crate) fn check(&self) -> Result<()> {
        let bad = |why: String| {
            Err(KernelError::Unsupported {
                what: "conv2d shape",
                why,
            })
        };
        if [
            self.c_in,
            self.h,
            self.w,
            self.c_out,
            self.kh,
            self.kw,
            self.groups,
            self.stride.0,
            self.stride.1,
            self.dilation.0,
            self.dilation.1,
        ]
        .contains(&0)
        {
            return bad(format!("zero-sized parameter in {self:?}"));
        }
        if !self.c_in.is_multiple_of(self.groups) || !self.c_out.is_multiple_of(self.groups) {
            return bad(format!(
                "groups {} must divide C_in {} and C_out {}",
                self.groups, self.c_in, self.c_out
            ));
        }
        let eh = self.dilation.0 * (self.kh - 1) + 1;
        let ew = self.dilation.1 * (self.kw - 1) + 1;
        if self.h + self.pad.0 + self.pad.2 < eh || self.w + self.pad.1 + self.pad.3 < ew {
            return bad(format!(
                "kernel {}×{} (dilated) larger than padded input {}×{}",
                self.kh, self.kw, self.h, self.w
            ));
        }
        Ok(())
    }
    fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.groups == self.c_out
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.pad == (0, 0, 0, 0)
    }
    /// Input row/col of output (oy, ox) and tap (ky, kx), or None in the padding.
    #[inline]
    fn src(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let y = (oy * self.stride.0 + ky * self.dilation.0).checked_sub(self.pad.0)?;
        let x = (ox * self.stride.1 + kx * self.dilation.1).checked_sub(self.pad.1)?;
        (y < self.h && x < self.w).then_some((y, x))
    }
    /// im2col of group `g` of one image: `OH·OW × K` rows, padding = `fill`.
    fn im2col<T: Copy>(&self, x: &[T], g: usize, fill: T) -> Vec<T> {
        let (oh, ow) = self.out_hw();
        let cg = self.c_in / self.groups;
        let k = self.k();
        let mut col = vec![fill; oh * ow * k];
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &mut col[(oy * ow + ox) * k..][..k];
                for c in 0..cg {
                    let plane = &x[(g * cg + c) * self.h * self.w..][..self.h * self.w];
                    for ky in 0..self.kh {
                        for kx in 0..self.kw {
                            if let Some((y, xx)) = self.src(oy, ox, ky, kx) {
                                row[(c * self.kh + ky) * self.kw + kx] = plane[y * self.w + xx];
                            }
                        }
                    }
                }
            }
        }
        col
    }
}

/// Direct-loop f32 reference (any geometry), `batch` images.
pub fn reference_f32(
    s: &Conv2d,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (oh, ow) = s.out_hw();
    let (cg, og) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut y = vec![0f32; batch * s.c_out * oh * ow];
    for b in 0..batch {
        for oc in 0..s.c_out {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f64;
                    for c in 0..cg {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                if let Some((yy, xx)) = s.src(oy, ox, ky, kx) {
                                    let xv = x[((b * s.c_in + g * cg + c) * s.h + yy) * s.w + xx];
                                    acc += xv as f64
                                        * w[((oc * cg + c) * s.kh + ky) * s.kw + kx] as f64;
                                }
                            }
                        }
                    }
                    y[((b * s.c_out + oc) * oh + oy) * ow + ox] =
                        acc as f32 + bias.map_or(0.0, |v| v[oc]);
                }
            }
        }
    }
    y
}

/// f32 convolution: `out = clip(conv(x, w) + bias, lo, hi)`, NCHW, `batch` images.
/// `w` is `C_out × C_in/groups × kh × kw` (ONNX order).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_f32(
    s: &Conv2d,
    batch: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    lo: f32,
    hi: f32,
    out: &mut [f32],
) -> Result<()> {
    s.check()?;
    let (oh, ow) = s.out_hw();
    let p = oh * ow;
    check_len(
        "conv2d input (N×C×H×W)",
        batch * s.c_in * s.h * s.w,
        x.len(),
    )?;
    check_len("conv2d weights (OC×C/g×kh×kw)", s.c_out * s.k(), w.len())?;
    check_len("conv2d output (N×OC×OH×OW)", batch * s.c_out * p, out.len())?;
    if let Some(b) = bias {
        check_len("conv2d bias", s.c_out, b.len())?;
    }
    let clip = |v: f32| v.max(lo).min(hi);
    if s.is_depthwise() {
        for b in 0..batch {
            for c in 0..s.c_in {
                let plane = &x[(b * s.c_in + c) * s.h * s.w..][..s.h * s.w];
                let taps = &w[c * s.kh * s.kw..][..s.kh * s.kw];
                let bv = bias.map_or(0.0, |v| v[c]);
                let o = &mut out[(b * s.c_out + c) * p..][..p];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0f32;
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                if let Some((y, xx)) = s.src(oy, ox, ky, kx) {
                                    acc = plane[y * s.w + xx].mul_add(taps[ky * s.kw + kx], acc);
                                }
                            }
                        }
                        o[oy * ow + ox] = clip(acc + bv);
                    }
                }
            }
        }
        return Ok(());
    }
    let (cg, og, k) = (s.c_in / s.groups, s.c_out / s.groups, s.k());
    let ep = F32Epilogue::default();
    for b in 0..batch {
        let img = &x[b * s.c_in * s.h * s.w..][..s.c_in * s.h * s.w];
        for g in 0..s.groups {
            // Right operand: im2col rows (positions × K). For a pointwise conv
            // the transposed input plane block is exactly that matrix.
            let col = if s.is_pointwise() {
                let mut t = vec![0f32; p * cg];
                for c in 0..cg {
                    for (q, &v) in img[(g * cg + c) * p..][..p].iter().enumerate() {
                        t[q * cg + c] = v;
                    }
                }
                t
            } else {
                s.im2col(img, g, 0.0)
            };
            let packed = PackedF32::pack(&col, p, k)?;
            let wg = &w[g * og * k..(g + 1) * og * k];
            let o = &mut out[(b * s.c_out + g * og) * p..][..og * p];
            f32gemm::gemm(wg, og, &packed, &ep, o)?;
            for (oc, row) in o.chunks_exact_mut(p).enumerate() {
                let bv = bias.map_or(0.0, |v| v[g * og + oc]);
                for v in row {
                    *v = clip(*v + bv);
                }
            }
        }
    }
    Ok(())
}

/// int8 convolution weights, packed once per group.
#[derive(Debug, Clone)]
pub struct PackedConvI8 {
    shape: Conv2d,
    w_zero: i8,
    groups: Vec<PackedI8>,
    /// Depthwise weights are used unpacked.
    raw: Vec<i8>,
}

impl PackedConvI8 {
    /// Packs `w` (`C_out × C_in/groups × kh × kw`, s8, zero point `w_zero`).
    pub fn pack(shape: &Conv2d, w: &[i8], w_zero: i8) -> Result<Self> {
        shape.check()?;
        let k = shape.k();
        check_len(
            "int8 conv2d weights (OC×C/g×kh×kw)",
            shape.c_out * k,
            w.len(),
        )?;
        let og = shape.c_out / shape.groups;
        let groups = if shape.is_depthwise() {
            Vec::new()
        } else {
            (0..shape.groups)
                .map(|g| PackedI8::pack(&w[g * og * k..(g + 1) * og * k], og, k, w_zero))
                .collect::<Result<_>>()?
        };
        Ok(PackedConvI8 {
            shape: *shape,
            w_zero,
            groups,
            raw: w.to_vec(),
        })
    }
}

/// Direct-loop int8 reference: i32 sums of `(x − za)(w − zw)`, NCHW.
pub fn reference_i8(s: &Conv2d, batch: usize, x: &[u8], za: u8, w: &[i8], zw: i8) -> Vec<i32> {
    let (oh, ow) = s.out_hw();
    let (cg, og) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut y = vec![0i32; batch * s.c_out * oh * ow];
    for b in 0..batch {
        for oc in 0..s.c_out {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i32;
                    for c in 0..cg {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                if let Some((yy, xx)) = s.src(oy, ox, ky, kx) {
                                    let xv = x[((b * s.c_in + g * cg + c) * s.h + yy) * s.w + xx]
                                        as i32
                                        - za as i32;
                                    acc += xv
                                        * (w[((oc * cg + c) * s.kh + ky) * s.kw + kx] as i32
                                            - zw as i32);
                                }
                            }
                        }
                    }
                    y[((b * s.c_out + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// int8 convolution (u8 input with zero point `za`) through the epilogue
/// (`ep.scale`/`ep.bias` indexed by output channel), NCHW output.
pub fn conv2d_u8(
    pw: &PackedConvI8,
    batch: usize,
    x: &[u8],
    za: u8,
    ep: &Epilogue,
    mut out: Output,
) -> Result<()> {
    let s = &pw.shape;
    let (oh, ow) = s.out_hw();
    let p = oh * ow;
    check_len(
        "int8 conv2d input (N×C×H×W)",
        batch * s.c_in * s.h * s.w,
        x.len(),
    )?;
    check_len(
        "int8 conv2d output (N×OC×OH×OW)",
        batch * s.c_out * p,
        out.len(),
    )?;
    ep.check(s.c_out)?;
    let og = s.c_out / s.groups;
    for b in 0..batch {
        let img = &x[b * s.c_in * s.h * s.w..][..s.c_in * s.h * s.w];
        if s.is_depthwise() {
            for c in 0..s.c_in {
                let plane = &img[c * s.h * s.w..][..s.h * s.w];
                let taps = &pw.raw[c * s.kh * s.kw..][..s.kh * s.kw];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0i32;
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                if let Some((y, xx)) = s.src(oy, ox, ky, kx) {
                                    acc += (plane[y * s.w + xx] as i32 - za as i32)
                                        * (taps[ky * s.kw + kx] as i32 - pw.w_zero as i32);
                                }
                            }
                        }
                        put(&mut out, ep, (b * s.c_out + c) * p + oy * ow + ox, acc, c);
                    }
                }
            }
            continue;
        }
        for g in 0..s.groups {
            let col = s.im2col(img, g, za);
            // The group's channels as columns: per-channel epilogue parameters
            // must be indexed from g·og, so run the GEMM to i32 and finish here.
            let mut acc = vec![0i32; p * og];
            int8::gemm(
                &col,
                p,
                za,
                &pw.groups[g],
                &Epilogue::default(),
                Output::I32(&mut acc),
            )?;
            for q in 0..p {
                for oc in 0..og {
                    let ch = g * og + oc;
                    put(
                        &mut out,
                        ep,
                        (b * s.c_out + ch) * p + q,
                        acc[q * og + oc],
                        ch,
                    );
                }
            }
        }
    }
    Ok(())
}

#[inline]
fn put(out: &mut Output, ep: &Epilogue, at: usize, acc: i32, ch: usize) {
    match out {
        Output::I32(o) => o[at] = acc,
        Output::F32(o) => o[at] = ep.float(acc, ch),
        Output::U8(o) => o[at] = ep.quant(acc, ch, 0, 255) as u8,
        Output::I8(o) => o[at] = ep.quant(acc, ch, -128, 127) as i8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn shapes() -> Vec<Conv2d> {
        let base = Conv2d {
            c_in: 3,
            h: 9,
            w: 7,
            c_out: 5,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (1, 1, 1, 1),
            dilation: (1, 1),
            groups: 1,
        };
        vec![
            base,
            Conv2d {
                stride: (2, 1),
                pad: (0, 2, 1, 0),
                ..base
            },
            Conv2d {
                dilation: (2, 2),
                pad: (2, 2, 2, 2),
                ..base
            },
            Conv2d {
                kh: 1,
                kw: 1,
                pad: (0, 0, 0, 0),
                c_out: 40,
                ..base
            },
            Conv2d {
                c_in: 4,
                c_out: 6,
                groups: 2,
                kh: 2,
                kw: 3,
                ..base
            },
            Conv2d {
                c_in: 6,
                c_out: 6,
                groups: 6,
                ..base
            },
            Conv2d {
                c_in: 1,
                h: 28,
                w: 28,
                c_out: 6,
                kh: 5,
                kw: 5,
                pad: (2, 2, 2, 2),
                ..base
            },
        ]
    }

    #[test]
    fn f32_matches_direct_loops() {
        let mut r = ChaCha8Rng::seed_from_u64(3);
        for s in shapes() {
            let batch = 2;
            let x: Vec<f32> = (0..batch * s.c_in * s.h * s.w)
                .map(|_| r.gen::<f32>() - 0.5)
                .collect();
            let w: Vec<f32> = (0..s.c_out * s.k()).map(|_| r.gen::<f32>() - 0.5).collect();
            let bias: Vec<f32> = (0..s.c_out).map(|i| i as f32 * 0.1).collect();
            let want = reference_f32(&s, batch, &x, &w, Some(&bias));
            let mut got = vec![0f32; want.len()];
            conv2d_f32(
                &s,
                batch,
                &x,
                &w,
                Some(&bias),
                f32::NEG_INFINITY,
                f32::INFINITY,
                &mut got,
            )
            .unwrap();
            for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()) * s.k() as f32,
                    "{s:?} at {i}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn int8_matches_direct_loops() {
        let mut r = ChaCha8Rng::seed_from_u64(4);
        for s in shapes() {
            let batch = 2;
            let x: Vec<u8> = (0..batch * s.c_in * s.h * s.w).map(|_| r.gen()).collect();
            let w: Vec<i8> = (0..s.c_out * s.k()).map(|_| r.gen()).collect();
            for &(za, zw) in &[(0u8, 0i8), (128, 0), (9, -5)] {
                let want = reference_i8(&s, batch, &x, za, &w, zw);
                let pw = PackedConvI8::pack(&s, &w, zw).unwrap();
                let mut got = vec![0i32; want.len()];
                conv2d_u8(
                    &pw,
                    batch,
                    &x,
                    za,
                    &Epilogue::default(),
                    Output::I32(&mut got),
                )
                .unwrap();
                assert_eq!(got, want, "{s:?} za={za} zw={zw}");
                let scale: Vec<f32> = (0..s.c_out).map(|c| 0.001 * (c + 1) as f32).collect();
                let ep = Epilogue::scaled(&scale).relu().out_zero(2);
                let mut q = vec![0u8; want.len()];
                conv2d_u8(&pw, batch, &x, za, &ep, Output::U8(&mut q)).unwrap();
                let (oh, ow) = s.out_hw();
                for (i, &acc) in want.iter().enumerate() {
                    let ch = i / (oh * ow) % s.c_out;
                    assert_eq!(q[i] as i32, ep.quant(acc, ch, 0, 255));
                }
            }
        }
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let s = Conv2d {
            c_in: 3,
            h: 2,
            w: 2,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            pad: (0, 0, 0, 0),
            dilation: (1, 1),
            groups: 1,
        };
        assert!(conv2d_f32(
            &s,
            1,
            &[0.0; 12],
            &[0.0; 108],
            None,
            0.0,
            1.0,
            &mut [0.0; 4]
        )
        .is_err());
        let s = Conv2d {
            groups: 2,
            h: 5,
            w: 5,
            ..s
        };
        assert!(PackedConvI8::pack(&s, &[0; 54], 0).is_err());
    }
}
