//! Local response normalisation (AlexNet-era models: AlexNet, ZFNet, Inception v1).

use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut Registry) {
    r.add("", "LRN", lrn);
}

/// `y = x / (bias + alpha/size · Σ x²)^beta`, the sum running over `size`
/// neighbouring channels (ONNX: floor((size-1)/2) before, ceil((size-1)/2) after).
fn lrn(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let n = ctx.node;
    let err = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let size = n
        .attr_int_opt("size")
        .map_err(err)?
        .ok_or_else(|| ctx.error("attribute 'size' is required"))?;
    if size < 1 {
        return Err(ctx.error(format!("size must be positive, got {size}")));
    }
    let alpha = n.attr_float("alpha", 1e-4).map_err(err)? as f64;
    let beta = n.attr_float("beta", 0.75).map_err(err)? as f64;
    let bias = n.attr_float("bias", 1.0).map_err(err)? as f64;
    if x.rank() < 2 {
        return Err(ctx.error(format!(
            "input must be at least 2-D [N, C, ...], got {:?}",
            x.shape()
        )));
    }
    let (batch, c) = (x.shape()[0], x.shape()[1]);
    let inner: usize = x.shape()[2..].iter().product();
    let v = x.to_f64_vec();
    let (before, after) = ((size - 1) / 2, (size - 1 + 1) / 2);
    let mut out = vec![0f64; v.len()];
    for b in 0..batch {
        for ch in 0..c {
            let lo = ch.saturating_sub(before as usize);
            let hi = (ch + after as usize).min(c - 1);
            for i in 0..inner {
                let sq: f64 = (lo..=hi).map(|k| v[(b * c + k) * inner + i].powi(2)).sum();
                let idx = (b * c + ch) * inner + i;
                out[idx] = v[idx] / (bias + alpha / size as f64 * sq).powf(beta);
            }
        }
    }
    let t = Tensor::from_vec(x.shape().to_vec(), out)?.cast(x.dtype());
    Ok(vec![t])
}
