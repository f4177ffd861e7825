//! ReduceSum / ReduceMean / ReduceSumSquare backward: the output gradient
//! broadcast back over the reduced axes (divided by the count for the mean,
//! times `2x` for the sum of squares).

use super::broadcast::expand;
use super::{f32s, grad0, rt, tensor, BackwardCtx, OpRegistry};
use crate::Result;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut OpRegistry) {
    rt(r, "ReduceSum", |cx, g| reduce(cx, g, Kind::Sum));
    rt(r, "ReduceMean", |cx, g| reduce(cx, g, Kind::Mean));
    rt(r, "ReduceSumSquare", |cx, g| reduce(cx, g, Kind::SumSquare));
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Sum,
    Mean,
    SumSquare,
}

/// The reduced axes of a Reduce* node (attribute before the opset that
/// moved them to input 1: 13 for ReduceSum, 18 for the others).
fn axes(cx: &BackwardCtx, rank: usize, kind: Kind) -> Result<Vec<usize>> {
    let from_input = cx.opset >= if kind == Kind::Sum { 13 } else { 18 };
    let list: Option<Vec<i64>> = if from_input {
        cx.inputs.get(1).copied().flatten().map(|t| t.to_i64_vec())
    } else {
        cx.node.attr_ints("axes")?.map(<[i64]>::to_vec)
    };
    let noop = cx.node.attr_int("noop_with_empty_axes", 0)? != 0;
    let list = match list {
        Some(l) if !l.is_empty() => l,
        _ if noop => return Ok(Vec::new()),
        _ => (0..rank as i64).collect(),
    };
    let r = rank as i64;
    list.iter()
        .map(|&a| {
            if a < -r || a >= r {
                Err(cx.error(format!("axis {a} out of range for rank {rank}")))
            } else {
                Ok(if a < 0 { a + r } else { a } as usize)
            }
        })
        .collect()
}

fn reduce(cx: &BackwardCtx, grads: &[Option<&Tensor>], kind: Kind) -> Result<Vec<Option<Tensor>>> {
    let mut out = vec![None; cx.inputs.len()];
    if !cx.needs(0) {
        return Ok(out);
    }
    let x = cx.input(0)?;
    let ax = axes(cx, x.rank(), kind)?;
    let mut kept = x.shape().to_vec();
    let mut count = 1usize;
    for &a in &ax {
        count *= kept[a];
        kept[a] = 1;
    }
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let mut dx = expand(g, &kept, x.shape());
    match kind {
        Kind::Sum => {}
        Kind::Mean => {
            let inv = 1.0 / count.max(1) as f32;
            dx.iter_mut().for_each(|v| *v *= inv);
        }
        Kind::SumSquare => {
            let xv = f32s(cx.node, x, "input")?;
            dx.iter_mut().zip(xv).for_each(|(d, &x)| *d *= 2.0 * x);
        }
    }
    out[0] = Some(tensor(x.shape(), dx)?);
    Ok(out)
}
