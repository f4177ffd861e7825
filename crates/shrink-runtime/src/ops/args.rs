//! Reading op arguments that arrive as tensors or attributes: integer lists
//! (shapes, axes, pads), axis normalisation, typed element slices. Every
//! failure names the node through [`OpContext::error`].

use super::OpContext;
use crate::Result;
use shrink_tensor::{Element, Tensor};

/// The elements of `t` as `T`, or an error naming the node and both dtypes.
pub(crate) fn slice_of<'t, T: Element>(ctx: &OpContext, t: &'t Tensor) -> Result<&'t [T]> {
    t.as_slice::<T>().map_err(|e| ctx.error(e.to_string()))
}

/// An integer tensor (`what` names it in errors) as i64 values.
pub(crate) fn ints(ctx: &OpContext, t: &Tensor, what: &str) -> Result<Vec<i64>> {
    if !t.dtype().is_int() {
        return Err(ctx.error(format!(
            "{what} must be an integer tensor, got {}",
            t.dtype()
        )));
    }
    Ok(t.to_i64_vec())
}

/// Optional input `i` as integers: `None` when the input is omitted.
pub(crate) fn opt_ints(
    ctx: &OpContext,
    inputs: &[Option<&Tensor>],
    i: usize,
    what: &str,
) -> Result<Option<Vec<i64>>> {
    match inputs.get(i).copied().flatten() {
        Some(t) => Ok(Some(ints(ctx, t, what)?)),
        None => Ok(None),
    }
}

/// Integer attribute list `key`, `None` when absent.
pub(crate) fn attr_ints(ctx: &OpContext, key: &str) -> Result<Option<Vec<i64>>> {
    Ok(ctx
        .node
        .attr_ints(key)
        .map_err(|e| ctx.error(e.to_string()))?
        .map(<[i64]>::to_vec))
}

pub(crate) fn attr_int(ctx: &OpContext, key: &str, default: i64) -> Result<i64> {
    ctx.node
        .attr_int(key, default)
        .map_err(|e| ctx.error(e.to_string()))
}

pub(crate) fn attr_float(ctx: &OpContext, key: &str, default: f32) -> Result<f32> {
    ctx.node
        .attr_float(key, default)
        .map_err(|e| ctx.error(e.to_string()))
}

/// Axis `a` (negative counts from the end) checked against `rank`.
pub(crate) fn axis(ctx: &OpContext, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(ctx.error(format!(
            "axis {a} is out of range for rank {rank} (valid: {}..{})",
            -r,
            r - 1
        )));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// Normalised axes, rejecting duplicates.
pub(crate) fn axes(ctx: &OpContext, list: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let x = axis(ctx, a, rank)?;
        if out.contains(&x) {
            return Err(ctx.error(format!("axis {a} appears twice in {list:?}")));
        }
        out.push(x);
    }
    Ok(out)
}

/// A non-negative dimension read from a shape-like tensor.
pub(crate) fn dim(ctx: &OpContext, v: i64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| ctx.error(format!("{what} has a negative dimension {v}")))
}

/// Largest element count an op builds from shapes it reads from data
/// (Reshape, Expand, Pad, Tile, ConstantOfShape, Range): 2^32, 16 GiB of f32.
/// Beyond it, or on overflow, the op errors instead of aborting on allocation.
pub(crate) const MAX_ELEMENTS: usize = 1 << 32;

/// Element count of a shape that came from data, checked for overflow and
/// against [`MAX_ELEMENTS`].
pub(crate) fn numel(ctx: &OpContext, dims: &[usize], what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            ctx.error(format!(
                "{what} {dims:?} has more than {MAX_ELEMENTS} elements"
            ))
        })
}
