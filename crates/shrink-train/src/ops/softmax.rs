//! Softmax and LogSoftmax backward along `axis` (opset ≥ 13: one axis;
//! before: the input flattened to 2-D at `axis`, default 1).

use super::{f32s, grad0, rt, tensor, BackwardCtx, OpRegistry};
use crate::Result;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut OpRegistry) {
    rt(r, "Softmax", |cx, g| softmax(cx, g, false));
    rt(r, "LogSoftmax", |cx, g| softmax(cx, g, true));
}

/// (outer, axis length, inner) of the softmax's layout.
fn layout(cx: &BackwardCtx, shape: &[usize]) -> Result<(usize, usize, usize)> {
    let r = shape.len() as i64;
    let default = if cx.opset >= 13 { -1 } else { 1 };
    let a = cx.node.attr_int("axis", default)?;
    if a < -r || a >= r.max(1) {
        return Err(cx.error(format!("axis {a} out of range for rank {r}")));
    }
    let axis = if a < 0 { a + r } else { a } as usize;
    if cx.opset >= 13 {
        Ok((
            shape[..axis].iter().product(),
            shape.get(axis).copied().unwrap_or(1),
            shape[axis + 1..].iter().product(),
        ))
    } else {
        Ok((
            shape[..axis].iter().product(),
            shape[axis..].iter().product(),
            1,
        ))
    }
}

/// Softmax: `dx = y·(g − Σ g·y)`; LogSoftmax: `dx = g − exp(y)·Σ g`.
fn softmax(cx: &BackwardCtx, grads: &[Option<&Tensor>], log: bool) -> Result<Vec<Option<Tensor>>> {
    if !cx.needs(0) {
        return Ok(vec![None]);
    }
    let y = cx.output(0)?;
    let (outer, n, inner) = layout(cx, y.shape())?;
    let yv = f32s(cx.node, y, "output")?;
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let mut dx = vec![0f32; yv.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            if log {
                let s: f32 = (0..n).map(|j| g[at(j)]).sum();
                for j in 0..n {
                    dx[at(j)] = g[at(j)] - yv[at(j)].exp() * s;
                }
            } else {
                let s: f32 = (0..n).map(|j| g[at(j)] * yv[at(j)]).sum();
                for j in 0..n {
                    dx[at(j)] = yv[at(j)] * (g[at(j)] - s);
                }
            }
        }
    }
    Ok(vec![Some(tensor(y.shape(), dx)?)])
}
