//! BatchNormalization (training and inference) and LayerNormalization.
//!
//! Training-mode BatchNorm normalises with the batch's mean and biased
//! variance and updates the running statistics ONNX-style,
//! `running = momentum·running + (1 − momentum)·batch`, with the *unbiased*
//! batch variance for `running_var` as PyTorch does (the reference models
//! were trained by PyTorch, whose exported `momentum` is 1 − its own).

use super::{f32s, grad0, rt, tensor, BackwardCtx, DiffOp, Forward, ForwardCtx, Mode, OpRegistry};
use crate::Result;
use rayon::prelude::*;
use shrink_tensor::Tensor;
use std::sync::Arc;

pub(super) fn register(r: &mut OpRegistry) {
    r.register("", "BatchNormalization", Arc::new(BatchNorm));
    rt(r, "LayerNormalization", layer_norm);
}

struct BatchNorm;

/// Batch statistics of a training forward: per-channel mean and 1/σ.
struct BatchStats {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

/// (N, C, spatial size) of a BatchNorm input.
fn dims(x: &Tensor) -> (usize, usize, usize) {
    let s = x.shape();
    let n = s.first().copied().unwrap_or(1);
    let c = s.get(1).copied().unwrap_or(1);
    (n, c, s.iter().skip(2).product())
}

/// Per-channel mean and biased variance (f64 sums).
fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = 0f64;
            for b in 0..n {
                s += x[(b * c + ch) * hw..][..hw]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>();
            }
            let m = s / (n * hw).max(1) as f64;
            let mut q = 0f64;
            for b in 0..n {
                q += x[(b * c + ch) * hw..][..hw]
                    .iter()
                    .map(|&v| (v as f64 - m) * (v as f64 - m))
                    .sum::<f64>();
            }
            (m, q / (n * hw).max(1) as f64)
        })
        .unzip()
}

impl DiffOp for BatchNorm {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        if cx.mode == Mode::Eval {
            return Ok(Forward::new(cx.runtime(inputs)?));
        }
        let x = cx.required(inputs, 0)?;
        let (n, c, hw) = dims(x);
        let gamma = f32s(cx.node, cx.required(inputs, 1)?, "scale")?;
        let beta = f32s(cx.node, cx.required(inputs, 2)?, "B")?;
        let rmean = f32s(cx.node, cx.required(inputs, 3)?, "input_mean")?;
        let rvar = f32s(cx.node, cx.required(inputs, 4)?, "input_var")?;
        for (v, what) in [
            (gamma, "scale"),
            (beta, "B"),
            (rmean, "input_mean"),
            (rvar, "input_var"),
        ] {
            if v.len() != c {
                return Err(cx.error(format!(
                    "{what} has {} elements, the input {c} channels",
                    v.len()
                )));
            }
        }
        let eps = cx.node.attr_float("epsilon", 1e-5)? as f64;
        let momentum = cx.node.attr_float("momentum", 0.9)?;
        let xv = f32s(cx.node, x, "X")?;
        let (mean, var) = channel_stats(xv, n, c, hw);
        let inv_std: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v + eps).sqrt()) as f32)
            .collect();
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let mut y = vec![0f32; xv.len()];
        y.par_chunks_mut(hw.max(1))
            .zip(xv.par_chunks(hw.max(1)))
            .enumerate()
            .for_each(|(i, (yo, xi))| {
                let ch = i % c;
                let a = gamma[ch] * inv_std[ch];
                let b = beta[ch] - mean32[ch] * a;
                for (o, &v) in yo.iter_mut().zip(xi) {
                    *o = v * a + b;
                }
            });
        let m = (n * hw) as f64;
        let unbias = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let new_mean: Vec<f32> = rmean
            .iter()
            .zip(&mean)
            .map(|(&r, &b)| momentum * r + (1.0 - momentum) * b as f32)
            .collect();
        let new_var: Vec<f32> = rvar
            .iter()
            .zip(&var)
            .map(|(&r, &b)| momentum * r + (1.0 - momentum) * (b * unbias) as f32)
            .collect();
        let mut outs = vec![tensor(x.shape(), y)?];
        if cx.node.outputs.len() > 1 {
            outs.push(tensor(&[c], new_mean.clone())?);
            outs.push(tensor(&[c], new_var.clone())?);
        }
        Ok(Forward {
            outputs: outs,
            saved: Some(Box::new(BatchStats {
                mean: mean32,
                inv_std,
            })),
            updates: vec![(3, tensor(&[c], new_mean)?), (4, tensor(&[c], new_var)?)],
        })
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let x = cx.input(0)?;
        let (n, c, hw) = dims(x);
        let xv = f32s(cx.node, x, "X")?;
        let gamma = f32s(cx.node, cx.input(1)?, "scale")?;
        let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
        let (mean, inv_std, train) = match cx.saved.and_then(|s| s.downcast_ref::<BatchStats>()) {
            Some(s) => (s.mean.clone(), s.inv_std.clone(), true),
            None => {
                let eps = cx.node.attr_float("epsilon", 1e-5)?;
                let rm = f32s(cx.node, cx.input(3)?, "input_mean")?.to_vec();
                let rv = f32s(cx.node, cx.input(4)?, "input_var")?;
                (
                    rm,
                    rv.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect(),
                    false,
                )
            }
        };
        // Per channel: Σ g and Σ g·x̂.
        let (sum_g, sum_gx): (Vec<f64>, Vec<f64>) = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut sg, mut sgx) = (0f64, 0f64);
                for b in 0..n {
                    let o = (b * c + ch) * hw;
                    for (&gv, &xv) in g[o..o + hw].iter().zip(&xv[o..o + hw]) {
                        sg += gv as f64;
                        sgx += (gv * (xv - mean[ch]) * inv_std[ch]) as f64;
                    }
                }
                (sg, sgx)
            })
            .unzip();
        let mut out = vec![None; cx.inputs.len()];
        if cx.needs(0) {
            let m = (n * hw) as f32;
            let mut dx = vec![0f32; xv.len()];
            dx.par_chunks_mut(hw.max(1))
                .zip(xv.par_chunks(hw.max(1)).zip(g.par_chunks(hw.max(1))))
                .enumerate()
                .for_each(|(i, (d, (xi, gi)))| {
                    let ch = i % c;
                    let k = gamma[ch] * inv_std[ch];
                    if train {
                        let (sg, sgx) = (sum_g[ch] as f32 / m, sum_gx[ch] as f32 / m);
                        for ((o, &xv), &gv) in d.iter_mut().zip(xi).zip(gi) {
                            let xh = (xv - mean[ch]) * inv_std[ch];
                            *o = k * (gv - sg - xh * sgx);
                        }
                    } else {
                        for (o, &gv) in d.iter_mut().zip(gi) {
                            *o = k * gv;
                        }
                    }
                });
            out[0] = Some(tensor(x.shape(), dx)?);
        }
        if cx.needs(1) {
            out[1] = Some(tensor(&[c], sum_gx.iter().map(|&v| v as f32).collect())?);
        }
        if cx.needs(2) {
            out[2] = Some(tensor(&[c], sum_g.iter().map(|&v| v as f32).collect())?);
        }
        Ok(out)
    }

    fn buffer_inputs(&self) -> &[usize] {
        &[3, 4]
    }
}

/// LayerNormalization over the dimensions from `axis` on; mean and 1/σ are
/// recomputed from the input (cheaper to keep than to store).
fn layer_norm(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let x = cx.input(0)?;
    let r = x.rank() as i64;
    let a = cx.node.attr_int("axis", -1)?;
    if a < -r || a >= r {
        return Err(cx.error(format!("axis {a} out of range for rank {r}")));
    }
    let axis = if a < 0 { a + r } else { a } as usize;
    let eps = cx.node.attr_float("epsilon", 1e-5)?;
    let d: usize = x.shape()[axis..].iter().product();
    let rows = x.len() / d.max(1);
    let xv = f32s(cx.node, x, "X")?;
    let gamma = f32s(cx.node, cx.input(1)?, "Scale")?;
    if gamma.len() != d && gamma.len() != 1 {
        return Err(cx.error(format!("Scale has {} elements, expected {d}", gamma.len())));
    }
    let gam = |j: usize| if gamma.len() == 1 { gamma[0] } else { gamma[j] };
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let mut dx = vec![0f32; if cx.needs(0) { xv.len() } else { 0 }];
    let mut dgamma = vec![0f64; d];
    let mut dbeta = vec![0f64; d];
    let mut xh = vec![0f32; d];
    for row in 0..rows {
        let xr = &xv[row * d..][..d];
        let gr = &g[row * d..][..d];
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for j in 0..d {
            xh[j] = ((xr[j] as f64 - mean) * inv) as f32;
            dgamma[j] += (gr[j] * xh[j]) as f64;
            dbeta[j] += gr[j] as f64;
        }
        if cx.needs(0) {
            let (mut s1, mut s2) = (0f64, 0f64);
            for j in 0..d {
                let dxh = (gr[j] * gam(j)) as f64;
                s1 += dxh;
                s2 += dxh * xh[j] as f64;
            }
            let (m1, m2) = (s1 / d as f64, s2 / d as f64);
            for j in 0..d {
                let dxh = (gr[j] * gam(j)) as f64;
                dx[row * d + j] = (inv * (dxh - m1 - xh[j] as f64 * m2)) as f32;
            }
        }
    }
    let mut out = vec![None; cx.inputs.len()];
    if cx.needs(0) {
        out[0] = Some(tensor(x.shape(), dx)?);
    }
    let fold = |v: &[f64], n: usize| -> Vec<f32> {
        if n == 1 {
            vec![v.iter().sum::<f64>() as f32]
        } else {
            v.iter().map(|&a| a as f32).collect()
        }
    };
    if cx.needs(1) {
        out[1] = Some(tensor(cx.input(1)?.shape(), fold(&dgamma, gamma.len()))?);
    }
    if cx.needs(2) {
        let b = cx.input(2)?;
        out[2] = Some(tensor(b.shape(), fold(&dbeta, b.len()))?);
    }
    Ok(out)
}
