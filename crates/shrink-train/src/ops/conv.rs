//! Conv backward (1-D and 2-D, groups, dilation, stride, padding).
//!
//! Per image and group, with `col` the `K × P` im2col matrix of the input
//! (`K = C/g·kh·kw`, `P = OH·OW`):
//! `dW += dY·colᵀ`, `dcol = Wᵀ·dY` then col2im into `dX`, `db += Σ_p dY`.
//! Images are split over rayon's threads, each accumulating its own `dW`
//! and reusing its `col` buffers; the GEMMs inside run single-threaded.
//! 1×1 stride-1 unpadded convs use the input plane block as `col` directly.
//! Depthwise convs (one channel per group) use direct loops: a GEMM with
//! one row would waste its register tile.

use super::{f32s, grad0, node_error, rt, tensor, BackwardCtx, OpRegistry};
use crate::Result;
use rayon::prelude::*;
use shrink_graph::Node;
use shrink_kernels::f32gemm::{sgemm_strided, MatRef};
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut OpRegistry) {
    rt(r, "Conv", conv);
}

/// 2-D geometry of one convolution (1-D convs have `h = kh = oh = 1`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pt: usize,
    pub pl: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    /// Reads strides, dilations and pads (`pads` or `auto_pad`) of a
    /// Conv/Pool node; `out_spatial` is the recorded output's spatial shape.
    pub(crate) fn of(
        node: &Node,
        in_shape: &[usize],
        kernel: &[usize],
        out_spatial: &[usize],
    ) -> Result<Geom> {
        let r = kernel.len();
        if !(1..=2).contains(&r) || in_shape.len() != r + 2 || out_spatial.len() != r {
            return Err(node_error(
                node,
                format!("1-D and 2-D windows are supported; input {in_shape:?}, kernel {kernel:?}"),
            ));
        }
        let ints = |key: &str, default: usize, len: usize| -> Result<Vec<usize>> {
            match node.attr_ints(key)? {
                None => Ok(vec![default; len]),
                Some(v) if v.len() == len && v.iter().all(|&x| x >= 0) => {
                    Ok(v.iter().map(|&x| x as usize).collect())
                }
                Some(v) => Err(node_error(
                    node,
                    format!("attribute '{key}' = {v:?}: expected {len} values"),
                )),
            }
        };
        let strides = ints("strides", 1, r)?;
        let dil = ints("dilations", 1, r)?;
        let auto = node.attr_str("auto_pad", "NOTSET")?;
        let mut begin = vec![0usize; r];
        match auto {
            "NOTSET" | "" => {
                let p = ints("pads", 0, 2 * r)?;
                begin.copy_from_slice(&p[..r]);
            }
            "VALID" => {}
            "SAME_UPPER" | "SAME_LOWER" => {
                for i in 0..r {
                    let n = in_shape[2 + i];
                    let dk = (kernel[i] - 1) * dil[i] + 1;
                    let total = ((out_spatial[i].max(1) - 1) * strides[i] + dk).saturating_sub(n);
                    begin[i] = if auto == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                }
            }
            other => return Err(node_error(node, format!("unknown auto_pad '{other}'"))),
        }
        let two = |v: &[usize], d: usize| if r == 2 { (v[0], v[1]) } else { (d, v[0]) };
        let (h, w) = two(&in_shape[2..], 1);
        let (kh, kw) = two(kernel, 1);
        let (sh, sw) = two(&strides, 1);
        let (dh, dw) = two(&dil, 1);
        let (pt, pl) = two(&begin, 0);
        let (oh, ow) = two(out_spatial, 1);
        Ok(Geom {
            c: in_shape[1],
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pt,
            pl,
            oh,
            ow,
        })
    }

    /// Output positions along one axis whose tap `k` lands inside the input:
    /// `lo..hi`, reading input index `o·s + k·d − p`.
    #[inline]
    pub(crate) fn valid(
        n: usize,
        out: usize,
        s: usize,
        k: usize,
        d: usize,
        p: usize,
    ) -> (usize, usize) {
        let off = (k * d) as isize - p as isize;
        let (s, n, out) = (s as isize, n as isize, out as isize);
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        let hi = if n - off <= 0 {
            0
        } else {
            (n - off + s - 1) / s
        };
        let lo = lo.clamp(0, out);
        (lo as usize, hi.clamp(lo, out) as usize)
    }

    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pt == 0
            && self.pl == 0
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// `cg` channels of one image (`x`: cg planes) into `col` (`cg·kh·kw × P`).
fn im2col(x: &[f32], cg: usize, s: &Geom, col: &mut [f32]) {
    let p = s.oh * s.ow;
    for c in 0..cg {
        let plane = &x[c * s.h * s.w..][..s.h * s.w];
        for ky in 0..s.kh {
            let (y0, y1) = Geom::valid(s.h, s.oh, s.sh, ky, s.dh, s.pt);
            for kx in 0..s.kw {
                let (x0, x1) = Geom::valid(s.w, s.ow, s.sw, kx, s.dw, s.pl);
                let row = &mut col[((c * s.kh + ky) * s.kw + kx) * p..][..p];
                row.fill(0.0);
                for oy in y0..y1 {
                    let iy = oy * s.sh + ky * s.dh - s.pt;
                    let src = &plane[iy * s.w..][..s.w];
                    let dst = &mut row[oy * s.ow..][..s.ow];
                    if s.sw == 1 {
                        let ix0 = x0 + kx * s.dw - s.pl;
                        dst[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
                    } else {
                        for ox in x0..x1 {
                            dst[ox] = src[ox * s.sw + kx * s.dw - s.pl];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `col` back into the planes of `dx`.
fn col2im(col: &[f32], cg: usize, s: &Geom, dx: &mut [f32]) {
    let p = s.oh * s.ow;
    for c in 0..cg {
        let plane = &mut dx[c * s.h * s.w..][..s.h * s.w];
        for ky in 0..s.kh {
            let (y0, y1) = Geom::valid(s.h, s.oh, s.sh, ky, s.dh, s.pt);
            for kx in 0..s.kw {
                let (x0, x1) = Geom::valid(s.w, s.ow, s.sw, kx, s.dw, s.pl);
                let row = &col[((c * s.kh + ky) * s.kw + kx) * p..][..p];
                for oy in y0..y1 {
                    let iy = oy * s.sh + ky * s.dh - s.pt;
                    let dst = &mut plane[iy * s.w..][..s.w];
                    let src = &row[oy * s.ow..][..s.ow];
                    for ox in x0..x1 {
                        dst[ox * s.sw + kx * s.dw - s.pl] += src[ox];
                    }
                }
            }
        }
    }
}

fn conv(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let x = cx.input(0)?;
    let w = cx.input(1)?;
    let y = cx.output(0)?;
    let groups = cx.node.attr_int("group", 1)?.max(1) as usize;
    let s = Geom::of(cx.node, x.shape(), &w.shape()[2..], &y.shape()[2..])?;
    let xv = f32s(cx.node, x, "X")?;
    let wv = f32s(cx.node, w, "W")?;
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let batch = x.shape()[0];
    let c_out = w.shape()[0];
    let (cg, og) = (s.c / groups, c_out / groups);
    let k = cg * s.kh * s.kw;
    let p = s.oh * s.ow;
    let img_in = s.c * s.h * s.w;
    let img_out = c_out * p;
    let (need_x, need_w, need_b) = (cx.needs(0), cx.needs(1), cx.needs(2));
    let depthwise = cg == 1 && og == 1;

    let mut dx = vec![0f32; if need_x { batch * img_in } else { 0 }];
    let threads = rayon::current_num_threads().max(1);
    let per = batch.div_ceil(threads * 2).max(1);
    let n_chunks = batch.div_ceil(per);
    // Each chunk of images: (its dW, its db); dX written in place.
    let work = |ci: usize, dxc: &mut [f32]| -> Result<(Vec<f32>, Vec<f32>)> {
        let mut dw = vec![0f32; if need_w { wv.len() } else { 0 }];
        let mut db = vec![0f32; if need_b { c_out } else { 0 }];
        let mut col = vec![0f32; if depthwise || s.pointwise() { 0 } else { k * p }];
        let mut dcol = vec![
            0f32;
            if need_x && !depthwise && !s.pointwise() {
                k * p
            } else {
                0
            }
        ];
        let b0 = ci * per;
        let b1 = (b0 + per).min(batch);
        for b in b0..b1 {
            let xi = &xv[b * img_in..][..img_in];
            let gi = &g[b * img_out..][..img_out];
            let mut dxi = if need_x {
                Some(&mut dxc[(b - b0) * img_in..][..img_in])
            } else {
                None
            };
            if need_b {
                for (o, d) in db.iter_mut().enumerate() {
                    *d += gi[o * p..][..p].iter().sum::<f32>();
                }
            }
            if depthwise {
                depthwise_back(
                    &s,
                    xi,
                    wv,
                    gi,
                    need_w.then_some(&mut dw[..]),
                    dxi.as_deref_mut(),
                );
                continue;
            }
            for gr in 0..groups {
                let xg = &xi[gr * cg * s.h * s.w..][..cg * s.h * s.w];
                let gg = &gi[gr * og * p..][..og * p];
                let colm: &[f32] = if s.pointwise() {
                    xg
                } else {
                    im2col(xg, cg, &s, &mut col);
                    &col
                };
                if need_w {
                    let dwg = &mut dw[gr * og * k..][..og * k];
                    sgemm_strided(
                        og,
                        k,
                        p,
                        MatRef::rows(gg, p),
                        MatRef::transposed(colm, p),
                        dwg,
                        1.0,
                        Some(1.0),
                        1,
                    )?;
                }
                if let Some(dxi) = dxi.as_deref_mut() {
                    let wg = &wv[gr * og * k..][..og * k];
                    let dxg = &mut dxi[gr * cg * s.h * s.w..][..cg * s.h * s.w];
                    if s.pointwise() {
                        sgemm_strided(
                            k,
                            p,
                            og,
                            MatRef::transposed(wg, k),
                            MatRef::rows(gg, p),
                            dxg,
                            1.0,
                            None,
                            1,
                        )?;
                    } else {
                        sgemm_strided(
                            k,
                            p,
                            og,
                            MatRef::transposed(wg, k),
                            MatRef::rows(gg, p),
                            &mut dcol,
                            1.0,
                            None,
                            1,
                        )?;
                        col2im(&dcol, cg, &s, dxg);
                    }
                }
            }
        }
        Ok((dw, db))
    };
    let parts: Vec<Result<(Vec<f32>, Vec<f32>)>> = if need_x {
        dx.par_chunks_mut(per * img_in)
            .enumerate()
            .map(|(ci, dxc)| work(ci, dxc))
            .collect()
    } else {
        (0..n_chunks)
            .into_par_iter()
            .map(|ci| work(ci, &mut []))
            .collect()
    };
    let mut dw_total: Option<Vec<f32>> = None;
    let mut db_total: Option<Vec<f32>> = None;
    for part in parts {
        let (dw, db) = part?;
        for (tot, v) in [(&mut dw_total, dw), (&mut db_total, db)] {
            match tot {
                None => *tot = Some(v),
                Some(t) => t.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
            }
        }
    }
    let mut out = vec![None; cx.inputs.len()];
    if need_x {
        out[0] = Some(tensor(x.shape(), dx)?);
    }
    if need_w {
        out[1] = Some(tensor(w.shape(), dw_total.unwrap_or_default())?);
    }
    if need_b {
        out[2] = Some(tensor(&[c_out], db_total.unwrap_or_default())?);
    }
    Ok(out)
}

/// Depthwise backward of one image: per channel, `dW[c] += Σ dY·x` over the
/// taps, `dX += dY·W[c]` scattered back.
fn depthwise_back(
    s: &Geom,
    x: &[f32],
    w: &[f32],
    g: &[f32],
    mut dw: Option<&mut [f32]>,
    mut dx: Option<&mut [f32]>,
) {
    let (hw, p, kk) = (s.h * s.w, s.oh * s.ow, s.kh * s.kw);
    for c in 0..s.c {
        let plane = &x[c * hw..][..hw];
        let gp = &g[c * p..][..p];
        for ky in 0..s.kh {
            let (y0, y1) = Geom::valid(s.h, s.oh, s.sh, ky, s.dh, s.pt);
            for kx in 0..s.kw {
                let (x0, x1) = Geom::valid(s.w, s.ow, s.sw, kx, s.dw, s.pl);
                let tap = c * kk + ky * s.kw + kx;
                let wt = w[tap];
                let mut acc = 0f32;
                for oy in y0..y1 {
                    let iy = oy * s.sh + ky * s.dh - s.pt;
                    let grow = &gp[oy * s.ow..][..s.ow];
                    let row = iy * s.w;
                    if x1 <= x0 {
                        continue;
                    }
                    if s.sw == 1 {
                        let ix0 = row + x0 + kx * s.dw - s.pl;
                        let n = x1 - x0;
                        let xr = &plane[ix0..ix0 + n];
                        let gr = &grow[x0..x1];
                        acc += xr.iter().zip(gr).map(|(a, b)| a * b).sum::<f32>();
                        if let Some(dx) = dx.as_deref_mut() {
                            let dr = &mut dx[c * hw + ix0..c * hw + ix0 + n];
                            dr.iter_mut().zip(gr).for_each(|(d, g)| *d += g * wt);
                        }
                    } else {
                        for ox in x0..x1 {
                            let i = row + ox * s.sw + kx * s.dw - s.pl;
                            acc += plane[i] * grow[ox];
                            if let Some(dx) = dx.as_deref_mut() {
                                dx[c * hw + i] += grow[ox] * wt;
                            }
                        }
                    }
                }
                if let Some(dw) = dw.as_deref_mut() {
                    dw[tap] += acc;
                }
            }
        }
    }
}
