//! The scalar reference of the lowered ops: plain loops over integer codes
//! that spell out the canonical arithmetic (COMMON §2), written without the
//! kernels' packing, zero-point folding or SIMD so that agreement with the
//! integer kernels is evidence, not tautology.
//!
//! - Conv/Gemm: `acc = Σ (q_x − z_x)·(q_w − z_w)` in wrapping i32, plus the
//!   i32 bias; `m[c] = (s_x·s_w[c]) / s_y` in f32 in that order;
//!   `q_y = clamp(round_half_even(acc as f32 · m[c]) + z_y, lo, hi)`.
//! - Global average pool: `acc = Σ (q_x − z_x)`, `m = s_x / (s_y · count)`.
//! - Add: `v = (q_a − z_a)·(s_a/s_y) + (q_b − z_b)·(s_b/s_y)` (two f32
//!   products, one f32 sum: no fused multiply-add, so SIMD and scalar agree),
//!   `q_y = clamp(round_half_even(v) + z_y, lo, hi)`.

/// `clamp(round_half_even(acc as f32 · m) + z, lo, hi)`, exact in i64.
pub fn requantize(acc: i32, m: f32, z: i32, lo: i32, hi: i32) -> i32 {
    requantize_f32(acc as f32 * m, z, lo, hi)
}

/// `clamp(round_half_even(v) + z, lo, hi)`; `as i64` saturates huge values.
pub fn requantize_f32(v: f32, z: i32, lo: i32, hi: i32) -> i32 {
    ((v.round_ties_even() as i64) + z as i64).clamp(lo as i64, hi as i64) as i32
}

/// Quantisation of a linear layer, read from the lowered node.
#[derive(Debug, Clone)]
pub struct LinearQ {
    pub x_zero: i32,
    /// Weight codes as stored (not zero-point corrected).
    pub w: Vec<i32>,
    pub w_zero: i32,
    /// Per output channel (or a single) `(s_x·s_w[c]) / s_y`.
    pub mult: Vec<f32>,
    pub bias: Option<Vec<i32>>,
    pub y_zero: i32,
    pub lo: i32,
    pub hi: i32,
}

impl LinearQ {
    fn mult(&self, c: usize) -> f32 {
        self.mult[if self.mult.len() == 1 { 0 } else { c }]
    }
    fn bias(&self, c: usize) -> i32 {
        self.bias.as_ref().map_or(0, |b| b[c])
    }
}

/// 2-D convolution geometry (NCHW, ONNX pads order top, left, bottom, right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub pad: (usize, usize, usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl ConvGeom {
    pub fn out_hw(&self) -> (usize, usize) {
        let eh = self.dilation.0 * (self.kh - 1) + 1;
        let ew = self.dilation.1 * (self.kw - 1) + 1;
        (
            (self.h + self.pad.0 + self.pad.2 - eh) / self.stride.0 + 1,
            (self.w + self.pad.1 + self.pad.3 - ew) / self.stride.1 + 1,
        )
    }
}

/// Quantised convolution, NCHW codes in and out.
pub fn conv(x: &[i32], g: &ConvGeom, q: &LinearQ) -> Vec<i32> {
    let (oh, ow) = g.out_hw();
    let (cg, og) = (g.c_in / g.groups, g.c_out / g.groups);
    let mut y = vec![0i32; g.n * g.c_out * oh * ow];
    for b in 0..g.n {
        for oc in 0..g.c_out {
            let grp = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = q.bias(oc);
                    for c in 0..cg {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride.0 + ky * g.dilation.0) as isize
                                    - g.pad.0 as isize;
                                let ix = (ox * g.stride.1 + kx * g.dilation.1) as isize
                                    - g.pad.1 as isize;
                                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                                    continue;
                                }
                                let xv = x[((b * g.c_in + grp * cg + c) * g.h + iy as usize) * g.w
                                    + ix as usize];
                                let wv = q.w[((oc * cg + c) * g.kh + ky) * g.kw + kx];
                                acc = acc.wrapping_add((xv - q.x_zero).wrapping_mul(wv - q.w_zero));
                            }
                        }
                    }
                    y[((b * g.c_out + oc) * oh + oy) * ow + ox] =
                        requantize(acc, q.mult(oc), q.y_zero, q.lo, q.hi);
                }
            }
        }
    }
    y
}

/// Quantised `Y[M×N] = X[M×K] · W`, W given as `N×K` (`trans_b`) or `K×N`.
pub fn gemm(x: &[i32], m: usize, k: usize, n: usize, trans_b: bool, q: &LinearQ) -> Vec<i32> {
    let mut y = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = q.bias(j);
            for kk in 0..k {
                let wv = if trans_b {
                    q.w[j * k + kk]
                } else {
                    q.w[kk * n + j]
                };
                acc = acc.wrapping_add((x[i * k + kk] - q.x_zero).wrapping_mul(wv - q.w_zero));
            }
            y[i * n + j] = requantize(acc, q.mult(j), q.y_zero, q.lo, q.hi);
        }
    }
    y
}

/// Max pooling of codes (any affine map with a positive scale is monotone,
/// so the max of codes is the code of the max). Padding never wins.
pub fn max_pool(
    x: &[i32],
    planes: usize,
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize, usize, usize),
) -> Vec<i32> {
    let oh = (h + pad.0 + pad.2 - kh) / stride.0 + 1;
    let ow = (w + pad.1 + pad.3 - kw) / stride.1 + 1;
    let mut y = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = i32::MIN;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * stride.0 + ky) as isize - pad.0 as isize;
                        let ix = (ox * stride.1 + kx) as isize - pad.1 as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            best = best.max(x[(p * h + iy as usize) * w + ix as usize]);
                        }
                    }
                }
                y.push(best);
            }
        }
    }
    y
}

/// Global average pool of `planes` planes of `count` codes each.
#[allow(clippy::too_many_arguments)]
pub fn global_avg_pool(
    x: &[i32],
    planes: usize,
    count: usize,
    (sx, zx): (f32, i32),
    (sy, zy): (f32, i32),
    lo: i32,
    hi: i32,
) -> Vec<i32> {
    let m = sx / (sy * count as f32);
    (0..planes)
        .map(|p| {
            let acc = x[p * count..(p + 1) * count]
                .iter()
                .fold(0i32, |s, &v| s.wrapping_add(v - zx));
            requantize(acc, m, zy, lo, hi)
        })
        .collect()
}

/// The requantising addition of two codes (see the module doc).
#[inline]
pub fn add_one(
    a: i32,
    b: i32,
    (za, ma): (i32, f32),
    (zb, mb): (i32, f32),
    zy: i32,
    lo: i32,
    hi: i32,
) -> i32 {
    let v = (a - za) as f32 * ma + (b - zb) as f32 * mb;
    requantize_f32(v, zy, lo, hi)
}
