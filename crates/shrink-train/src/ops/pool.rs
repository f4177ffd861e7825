//! Pooling. MaxPool runs its own forward, which records the argmax of each
//! window (the values equal the runtime's: a max is exact); backward routes
//! each output gradient to its argmax. AveragePool and GlobalAveragePool run
//! the runtime's forward and spread each gradient evenly over its window.

use super::conv::Geom;
use super::OpRegistry;
use super::{f32s, grad0, node_error, rt, tensor, BackwardCtx, DiffOp, Forward, ForwardCtx};
use crate::Result;
use rayon::prelude::*;
use shrink_graph::Node;
use shrink_tensor::Tensor;
use std::sync::Arc;

pub(super) fn register(r: &mut OpRegistry) {
    r.register("", "MaxPool", Arc::new(MaxPool));
    rt(r, "AveragePool", average_pool);
    rt(r, "GlobalAveragePool", global_average_pool);
}

/// Kernel shape of a pooling node (required attribute).
fn kernel(node: &Node) -> Result<Vec<usize>> {
    let k = node
        .attr_ints("kernel_shape")?
        .ok_or_else(|| node_error(node, "missing 'kernel_shape' attribute"))?;
    if k.iter().any(|&v| v < 1) {
        return Err(node_error(
            node,
            format!("kernel_shape {k:?} must be positive"),
        ));
    }
    Ok(k.iter().map(|&v| v as usize).collect())
}

/// Output spatial dims and end pads of a pooling window (ONNX rules,
/// `ceil_mode` included).
fn out_dims(node: &Node, spatial: &[usize], k: &[usize]) -> Result<(Vec<usize>, Vec<usize>)> {
    let r = k.len();
    if spatial.len() != r {
        return Err(node_error(
            node,
            format!("kernel {k:?} does not match the input's spatial dims {spatial:?}"),
        ));
    }
    let ints = |key: &str, d: i64, len: usize| -> Result<Vec<usize>> {
        Ok(node
            .attr_ints(key)?
            .map(|v| v.iter().map(|&x| x.max(0) as usize).collect())
            .unwrap_or_else(|| vec![d as usize; len]))
    };
    let s = ints("strides", 1, r)?;
    let dil = ints("dilations", 1, r)?;
    let ceil = node.attr_int("ceil_mode", 0)? != 0;
    let auto = node.attr_str("auto_pad", "NOTSET")?;
    let pads = ints("pads", 0, 2 * r)?;
    let mut out = vec![0; r];
    let mut end = vec![0; r];
    for i in 0..r {
        let n = spatial[i];
        let dk = (k[i] - 1) * dil[i] + 1;
        let st = s[i].max(1);
        match auto {
            "SAME_UPPER" | "SAME_LOWER" => {
                out[i] = n.div_ceil(st);
                let total = ((out[i].max(1) - 1) * st + dk).saturating_sub(n);
                end[i] = if auto == "SAME_UPPER" {
                    total - total / 2
                } else {
                    total / 2
                };
            }
            "VALID" => {
                if n < dk {
                    return Err(node_error(node, "kernel larger than the input"));
                }
                out[i] = (n - dk) / st + 1;
            }
            _ => {
                let (pb, pe) = (pads[i], pads[i + r]);
                let padded = n + pb + pe;
                if padded < dk {
                    return Err(node_error(node, "kernel larger than the padded input"));
                }
                out[i] = if ceil {
                    let mut o = (padded - dk).div_ceil(st) + 1;
                    if (o - 1) * st >= n + pb {
                        o -= 1;
                    }
                    o
                } else {
                    (padded - dk) / st + 1
                };
                end[i] = pe;
            }
        }
    }
    Ok((out, end))
}

struct MaxPool;

/// Per output element, the plane-local index of its window's maximum.
struct Argmax(Vec<u32>);

impl DiffOp for MaxPool {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        let x = cx.required(inputs, 0)?;
        if x.rank() < 3 {
            return Err(cx.error(format!("input {:?} must be N×C×spatial", x.shape())));
        }
        let k = kernel(cx.node)?;
        let (out, _) = out_dims(cx.node, &x.shape()[2..], &k)?;
        let s = Geom::of(cx.node, x.shape(), &k, &out)?;
        let xv = f32s(cx.node, x, "X")?;
        let planes = x.shape()[0] * x.shape()[1];
        let (hw, p) = (s.h * s.w, s.oh * s.ow);
        let mut y = vec![0f32; planes * p];
        let mut arg = vec![0u32; planes * p];
        y.par_chunks_mut(p.max(1))
            .zip(arg.par_chunks_mut(p.max(1)))
            .enumerate()
            .for_each(|(pl, (yo, ao))| {
                let plane = &xv[pl * hw..][..hw];
                for oy in 0..s.oh {
                    for ox in 0..s.ow {
                        let mut best = f32::NEG_INFINITY;
                        let mut at = u32::MAX;
                        for ky in 0..s.kh {
                            let iy = (oy * s.sh + ky * s.dh) as isize - s.pt as isize;
                            if iy < 0 || iy >= s.h as isize {
                                continue;
                            }
                            for kx in 0..s.kw {
                                let ix = (ox * s.sw + kx * s.dw) as isize - s.pl as isize;
                                if ix < 0 || ix >= s.w as isize {
                                    continue;
                                }
                                let i = iy as usize * s.w + ix as usize;
                                let v = plane[i];
                                // The first NaN wins (it propagates).
                                if at == u32::MAX || v > best || (v.is_nan() && !best.is_nan()) {
                                    best = v;
                                    at = i as u32;
                                }
                            }
                        }
                        yo[oy * s.ow + ox] = best;
                        ao[oy * s.ow + ox] = at;
                    }
                }
            });
        let mut shape = x.shape()[..2].to_vec();
        shape.extend(&out);
        let mut outs = vec![tensor(&shape, y)?];
        if cx.node.outputs.len() > 1 && !cx.node.outputs[1].is_empty() {
            // ONNX Indices: flat positions in the whole N×C×H×W input.
            let idx: Vec<i64> = arg
                .iter()
                .enumerate()
                .map(|(o, &a)| {
                    if a == u32::MAX {
                        -1
                    } else {
                        ((o / p.max(1)) * hw + a as usize) as i64
                    }
                })
                .collect();
            outs.push(Tensor::from_vec(shape.clone(), idx)?);
        }
        Ok(Forward::with_saved(outs, Argmax(arg)))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        if !cx.needs(0) {
            return Ok(vec![None]);
        }
        let x = cx.input(0)?;
        let arg = &cx.saved::<Argmax>()?.0;
        let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
        let planes = x.shape()[0] * x.shape()[1];
        let hw: usize = x.shape()[2..].iter().product();
        let p = g.len() / planes.max(1);
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(hw.max(1))
            .enumerate()
            .for_each(|(pl, d)| {
                let gp = &g[pl * p..][..p];
                let ap = &arg[pl * p..][..p];
                for (gv, &a) in gp.iter().zip(ap) {
                    if a != u32::MAX {
                        d[a as usize] += gv;
                    }
                }
            });
        Ok(vec![Some(tensor(x.shape(), dx)?)])
    }
}

/// Each output's gradient divided by its window's element count (valid
/// positions only, or the window clipped to the padded extent with
/// `count_include_pad`) and added to every position of the window.
fn average_pool(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    if !cx.needs(0) {
        return Ok(vec![None]);
    }
    let x = cx.input(0)?;
    let k = kernel(cx.node)?;
    let y = cx.output(0)?;
    let (_, end) = out_dims(cx.node, &x.shape()[2..], &k)?;
    let s = Geom::of(cx.node, x.shape(), &k, &y.shape()[2..])?;
    let (pb, pr) = if k.len() == 2 {
        (end[0], end[1])
    } else {
        (0, end[0])
    };
    let include_pad = cx.node.attr_int("count_include_pad", 0)? != 0;
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let (hw, p) = (s.h * s.w, s.oh * s.ow);
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(pl, d)| {
            let gp = &g[pl * p..][..p];
            for oy in 0..s.oh {
                for ox in 0..s.ow {
                    let mut taps = Vec::with_capacity(s.kh * s.kw);
                    let mut padded = 0usize;
                    for ky in 0..s.kh {
                        let iy = (oy * s.sh + ky * s.dh) as isize - s.pt as isize;
                        for kx in 0..s.kw {
                            let ix = (ox * s.sw + kx * s.dw) as isize - s.pl as isize;
                            let in_pad = iy >= -(s.pt as isize)
                                && iy < (s.h + pb) as isize
                                && ix >= -(s.pl as isize)
                                && ix < (s.w + pr) as isize;
                            if in_pad {
                                padded += 1;
                            }
                            if iy >= 0 && iy < s.h as isize && ix >= 0 && ix < s.w as isize {
                                taps.push(iy as usize * s.w + ix as usize);
                            }
                        }
                    }
                    let count = if include_pad { padded } else { taps.len() };
                    if count == 0 {
                        continue;
                    }
                    let share = gp[oy * s.ow + ox] / count as f32;
                    for t in taps {
                        d[t] += share;
                    }
                }
            }
        });
    Ok(vec![Some(tensor(x.shape(), dx)?)])
}

fn global_average_pool(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    if !cx.needs(0) {
        return Ok(vec![None]);
    }
    let x = cx.input(0)?;
    if x.rank() < 2 {
        return Err(cx.error("input must be N×C×spatial"));
    }
    let hw: usize = x.shape()[2..].iter().product();
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let inv = 1.0 / hw.max(1) as f32;
    let mut dx = vec![0f32; x.len()];
    for (d, &gv) in dx.chunks_mut(hw.max(1)).zip(g) {
        d.fill(gv * inv);
    }
    Ok(vec![Some(tensor(x.shape(), dx)?)])
}
