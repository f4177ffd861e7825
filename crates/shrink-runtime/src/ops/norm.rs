//! Normalisations: BatchNormalization, LayerNormalization, Softmax, LogSoftmax.

use super::linalg::{broadcast_offsets, float_tensor, floats};
use super::{OpContext, Registry};
use crate::Result;
use rayon::prelude::*;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut Registry) {
    r.add("", "BatchNormalization", batch_norm);
    r.add("", "LayerNormalization", layer_norm);
    r.add("", "Softmax", softmax);
    r.add("", "LogSoftmax", log_softmax);
    r.add("", "LRN", lrn);
    r.add("", "Dropout", dropout);
}

/// Local response normalisation across channels (AlexNet-era models):
/// `y = x / (bias + alpha/size · Σ x²)^beta` over a window of `size` channels.
fn lrn(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let alpha = ctx.node.attr_float("alpha", 1e-4).map_err(attr)?;
    let beta = ctx.node.attr_float("beta", 0.75).map_err(attr)?;
    let bias = ctx.node.attr_float("bias", 1.0).map_err(attr)?;
    let size = ctx
        .node
        .attr_int_opt("size")
        .map_err(attr)?
        .filter(|&s| s > 0)
        .ok_or_else(|| ctx.error("attribute 'size' is required and must be positive"))?
        as usize;
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(ctx.error(format!("X {xs:?} must have rank ≥ 3 (N, C, spatial…)")));
    }
    let (n, c) = (xs[0], xs[1]);
    let plane: usize = xs[2..].iter().product();
    let xv = floats(ctx, x, "X")?;
    let (before, after) = ((size - 1) / 2, size.div_ceil(2) - 1);
    let mut y = vec![0f32; xv.len()];
    for b in 0..n {
        for ch in 0..c {
            let lo = ch.saturating_sub(before);
            let hi = (ch + after).min(c - 1);
            for p in 0..plane {
                let sq: f32 = (lo..=hi)
                    .map(|k| {
                        let v = xv[(b * c + k) * plane + p];
                        v * v
                    })
                    .sum();
                let i = (b * c + ch) * plane + p;
                y[i] = xv[i] / (bias + alpha / size as f32 * sq).powf(beta);
            }
        }
    }
    Ok(vec![float_tensor(x.dtype(), xs.to_vec(), y)?])
}

/// Dropout at inference: the identity, with an all-true mask. Training mode
/// with a non-zero ratio needs randomness the reference runtime does not
/// model, so it is an error rather than a silent identity.
fn dropout(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let training = inputs
        .get(2)
        .copied()
        .flatten()
        .map(|t| t.to_f64_vec().first().copied().unwrap_or(0.0) != 0.0)
        .unwrap_or(false);
    let ratio = match inputs.get(1).copied().flatten() {
        Some(r) => r.to_f64_vec().first().copied().unwrap_or(0.5),
        None => 0.5,
    };
    if training && ratio != 0.0 {
        return Err(ctx.error("training-mode Dropout (random masking) is not supported"));
    }
    let mask = Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?;
    Ok(vec![x.clone(), mask])
}

/// Resolves a possibly negative axis against `rank` (valid range `-rank..rank`).
pub(super) fn resolve_axis(ctx: &OpContext, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) {
        return Err(ctx.error(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

fn batch_norm(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let eps = ctx.node.attr_float("epsilon", 1e-5).map_err(attr)?;
    let momentum = ctx.node.attr_float("momentum", 0.9).map_err(attr)?;
    let training = ctx.opset >= 14 && ctx.node.attr_int("training_mode", 0).map_err(attr)? != 0;
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(ctx.error(format!("X {xs:?} must have rank ≥ 2 (N, C, …)")));
    }
    let (n, c) = (xs[0], xs[1]);
    let plane: usize = xs[2..].iter().product();
    let mut params = Vec::with_capacity(4);
    for (i, name) in ["scale", "B", "input_mean", "input_var"].iter().enumerate() {
        let t = ctx.required(inputs, i + 1)?;
        if t.len() != c {
            return Err(ctx.error(format!(
                "{name} has {} elements, expected one per channel ({c})",
                t.len()
            )));
        }
        params.push(floats(ctx, t, name)?);
    }
    let xv = floats(ctx, x, "X")?;
    let (scale, bias) = (&params[0], &params[1]);
    let (mut mean, mut var) = (params[2].to_vec(), params[3].to_vec());
    let mut running = None;
    if training {
        // Batch statistics (population variance) normalise; the running
        // statistics move toward them by (1 - momentum).
        let count = (n * plane) as f64;
        let mut bm = vec![0f32; c];
        let mut bv = vec![0f32; c];
        for ch in 0..c {
            let planes = (0..n).map(|b| &xv[(b * c + ch) * plane..(b * c + ch + 1) * plane]);
            let s: f64 = planes.clone().flatten().map(|&v| v as f64).sum();
            let m = s / count;
            let q: f64 = planes.flatten().map(|&v| (v as f64 - m).powi(2)).sum();
            bm[ch] = m as f32;
            bv[ch] = (q / count) as f32;
        }
        let rm: Vec<f32> = (0..c)
            .map(|i| mean[i] * momentum + bm[i] * (1.0 - momentum))
            .collect();
        let rv: Vec<f32> = (0..c)
            .map(|i| var[i] * momentum + bv[i] * (1.0 - momentum))
            .collect();
        running = Some((rm, rv));
        mean = bm;
        var = bv;
    }
    let mut y = vec![0f32; xv.len()];
    let (mul, add): (Vec<f32>, Vec<f32>) = (0..c)
        .map(|i| {
            let m = scale[i] / (var[i] + eps).sqrt();
            (m, bias[i] - mean[i] * m)
        })
        .unzip();
    for (p, (yp, xp)) in y
        .chunks_mut(plane.max(1))
        .zip(xv.chunks(plane.max(1)))
        .enumerate()
    {
        let ch = p % c;
        for (o, &i) in yp.iter_mut().zip(xp) {
            *o = i * mul[ch] + add[ch];
        }
    }
    let dt = x.dtype();
    let mut out = vec![float_tensor(dt, xs.to_vec(), y)?];
    if let Some((rm, rv)) = running {
        out.push(float_tensor(dt, vec![c], rm)?);
        out.push(float_tensor(dt, vec![c], rv)?);
    }
    Ok(out)
}

/// One normalised row with its output, input, and mean / inverse-std slots.
type RowItem<'a> = ((&'a mut [f32], &'a [f32]), (&'a mut f32, &'a mut f32));

fn layer_norm(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let scale = ctx.required(inputs, 1)?;
    let bias = inputs.get(2).copied().flatten();
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let eps = ctx.node.attr_float("epsilon", 1e-5).map_err(attr)?;
    let xs = x.shape();
    let axis = resolve_axis(ctx, ctx.node.attr_int("axis", -1).map_err(attr)?, xs.len())?;
    let norm_shape = &xs[axis..];
    let cols: usize = norm_shape.iter().product();
    let rows: usize = xs[..axis].iter().product();
    let param = |t: &Tensor, name: &str| -> Result<Vec<f32>> {
        let v = floats(ctx, t, name)?;
        let ts = t.shape();
        let ok = ts.len() <= norm_shape.len()
            && ts
                .iter()
                .rev()
                .zip(norm_shape.iter().rev())
                .all(|(&a, &b)| a == b || a == 1);
        if !ok {
            return Err(ctx.error(format!(
                "{name} {ts:?} does not broadcast to the normalised shape {norm_shape:?}"
            )));
        }
        if v.len() == cols {
            return Ok(v.into_owned());
        }
        Ok(broadcast_offsets(ts, norm_shape)
            .into_iter()
            .map(|i| v[i])
            .collect())
    };
    let sv = param(scale, "Scale")?;
    let bv = bias.map(|b| param(b, "B")).transpose()?;
    let xv = floats(ctx, x, "X")?;
    // Every element is written below: a recycled buffer needs no clearing.
    let mut y = ctx.output_f32(xv.len());
    let mut means = vec![0f32; rows];
    let mut inv = vec![0f32; rows];
    let row = |((yr, xr), (m, is)): RowItem| {
        let n = cols as f32;
        let mean = lane_sum(xr, |v| v) / n;
        let var = lane_sum(xr, |v| (v - mean) * (v - mean)) / n;
        let inv_std = 1.0 / (var + eps).sqrt();
        match &bv {
            Some(b) => {
                for (((o, &v), &s), &b) in yr.iter_mut().zip(xr).zip(&sv).zip(b) {
                    *o = (v - mean) * inv_std * s + b;
                }
            }
            None => {
                for ((o, &v), &s) in yr.iter_mut().zip(xr).zip(&sv) {
                    *o = (v - mean) * inv_std * s;
                }
            }
        }
        *m = mean;
        *is = inv_std;
    };
    if cols > 0 {
        if rows * cols >= 1 << 16 {
            y.par_chunks_mut(cols)
                .zip(xv.par_chunks(cols))
                .zip(means.par_iter_mut().zip(inv.par_iter_mut()))
                .for_each(row);
        } else {
            y.chunks_mut(cols)
                .zip(xv.chunks(cols))
                .zip(means.iter_mut().zip(inv.iter_mut()))
                .for_each(row);
        }
    }
    let mut stat_shape = xs[..axis].to_vec();
    stat_shape.extend(std::iter::repeat_n(1, xs.len() - axis));
    let dt = x.dtype();
    Ok(vec![
        float_tensor(dt, xs.to_vec(), y)?,
        float_tensor(dt, stat_shape.clone(), means)?,
        float_tensor(dt, stat_shape, inv)?,
    ])
}

/// `Σ f(x)` over 16 interleaved partial sums, which the compiler keeps in
/// one SIMD register (a single running sum cannot be vectorised without
/// reordering the additions, which it may not do on its own).
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The (outer, axis length, inner) split softmax reduces over: opset < 13
/// flattens to 2-D at `axis` (default 1), opset ≥ 13 reduces along `axis`
/// alone (default -1).
fn softmax_split(ctx: &OpContext, shape: &[usize]) -> Result<(usize, usize, usize)> {
    let legacy = ctx.opset < 13;
    let default = if legacy { 1 } else { -1 };
    let a = ctx
        .node
        .attr_int("axis", default)
        .map_err(|e| ctx.error(e.to_string()))?;
    if shape.is_empty() {
        return Ok((1, 1, 1));
    }
    let axis = resolve_axis(ctx, a, shape.len())?;
    let outer: usize = shape[..axis].iter().product();
    if legacy {
        Ok((outer, shape[axis..].iter().product(), 1))
    } else {
        Ok((outer, shape[axis], shape[axis + 1..].iter().product()))
    }
}

fn softmax_impl(ctx: &OpContext, inputs: &[Option<&Tensor>], log: bool) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let (outer, len, inner) = softmax_split(ctx, x.shape())?;
    let xv = floats(ctx, x, "input")?;
    let mut y = vec![0f32; xv.len()];
    let block = len * inner;
    let one = |(yb, xb): (&mut [f32], &[f32])| {
        if inner == 1 {
            softmax_row(xb, yb, log);
        } else {
            let mut col = vec![0f32; len];
            let mut out = vec![0f32; len];
            for j in 0..inner {
                for (k, c) in col.iter_mut().enumerate() {
                    *c = xb[k * inner + j];
                }
                softmax_row(&col, &mut out, log);
                for (k, o) in out.iter().enumerate() {
                    yb[k * inner + j] = *o;
                }
            }
        }
    };
    if block > 0 {
        if outer > 1 && xv.len() >= 1 << 15 {
            y.par_chunks_mut(block)
                .zip(xv.par_chunks(block))
                .for_each(one);
        } else {
            y.chunks_mut(block).zip(xv.chunks(block)).for_each(one);
        }
    }
    Ok(vec![float_tensor(x.dtype(), x.shape().to_vec(), y)?])
}

/// Numerically stable (log-)softmax of one row: shifts by the max first.
fn softmax_row(x: &[f32], y: &mut [f32], log: bool) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !log {
        // Vectorised e^{x−max} and its sum (kernels crate).
        y.copy_from_slice(x);
        let inv = 1.0 / shrink_kernels::activation::exp_shifted_sum(y, max);
        y.iter_mut().for_each(|o| *o *= inv);
        return;
    }
    let mut sum = 0f32;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - max).exp();
        sum += *o;
    }
    if log {
        let ls = sum.ln();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v - max - ls;
        }
    } else {
        let inv = 1.0 / sum;
        y.iter_mut().for_each(|o| *o *= inv);
    }
}

fn softmax(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    softmax_impl(ctx, inputs, false)
}

fn log_softmax(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    softmax_impl(ctx, inputs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_row_is_stable_for_large_inputs() {
        let x = [1000f32, 1001.0, 1002.0];
        let mut y = [0f32; 3];
        softmax_row(&x, &mut y, false);
        // softmax([0, 1, 2]) computed by hand: e^k / (1 + e + e^2).
        let d = 1.0 + 1f32.exp() + 2f32.exp();
        for (k, v) in y.iter().enumerate() {
            assert!((v - (k as f32).exp() / d).abs() < 1e-6);
        }
        softmax_row(&x, &mut y, true);
        assert!((y[2] - (2.0 - d.ln())).abs() < 1e-5);
    }
}
