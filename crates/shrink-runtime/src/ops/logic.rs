//! Comparisons and boolean logic with numpy broadcasting: Equal, Greater,
//! Less, GreaterOrEqual, LessOrEqual, Not, And, Or, Xor, Where, and the
//! integer bitwise family (BitwiseAnd/Or/Xor/Not, BitShift).

use super::args::slice_of;
use super::broadcast::{broadcast_shapes, expand, zip_map};
use super::dispatch::{with_int, with_numeric};
use super::layout::select;
use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::{DType, Tensor, TensorData};
use std::cmp::Ordering;

pub(super) fn register(r: &mut Registry) {
    r.add("", "Equal", |c, i| compare(c, i, |o| o == Ordering::Equal));
    r.add("", "Greater", |c, i| {
        compare(c, i, |o| o == Ordering::Greater)
    });
    r.add("", "Less", |c, i| compare(c, i, |o| o == Ordering::Less));
    r.add("", "GreaterOrEqual", |c, i| {
        compare(c, i, |o| o != Ordering::Less)
    });
    r.add("", "LessOrEqual", |c, i| {
        compare(c, i, |o| o != Ordering::Greater)
    });
    r.add("", "And", |c, i| logical(c, i, |a, b| a && b));
    r.add("", "Or", |c, i| logical(c, i, |a, b| a || b));
    r.add("", "Xor", |c, i| logical(c, i, |a, b| a != b));
    r.add("", "Not", not);
    r.add("", "Where", where_op);
    r.add("", "BitwiseAnd", |c, i| bitwise(c, i, Bit::And));
    r.add("", "BitwiseOr", |c, i| bitwise(c, i, Bit::Or));
    r.add("", "BitwiseXor", |c, i| bitwise(c, i, Bit::Xor));
    r.add("", "BitwiseNot", bitwise_not);
    r.add("", "BitShift", bit_shift);
}

fn two<'t>(
    ctx: &OpContext,
    inputs: &[Option<&'t Tensor>],
) -> Result<(&'t Tensor, &'t Tensor, Vec<usize>)> {
    let a = ctx.required(inputs, 0)?;
    let b = ctx.required(inputs, 1)?;
    if a.dtype() != b.dtype() {
        return Err(ctx.error(format!(
            "inputs have different dtypes {} and {}",
            a.dtype(),
            b.dtype()
        )));
    }
    let out = broadcast_shapes(a.shape(), b.shape()).ok_or_else(|| {
        ctx.error(format!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        ))
    })?;
    Ok((a, b, out))
}

/// A comparison: `keep(ordering)` decides the boolean. Unordered pairs (NaN)
/// are false for every comparison, as in IEEE and numpy.
fn compare(
    ctx: &OpContext,
    inputs: &[Option<&Tensor>],
    keep: fn(Ordering) -> bool,
) -> Result<Vec<Tensor>> {
    let (a, b, out) = two(ctx, inputs)?;
    let v: Vec<bool> = match (a.data(), b.data()) {
        (TensorData::Bool(x), TensorData::Bool(y)) => {
            zip_map(x, a.shape(), y, b.shape(), &out, |p, q| keep(p.cmp(q)))
        }
        (TensorData::String(x), TensorData::String(y)) => {
            zip_map(x, a.shape(), y, b.shape(), &out, |p, q| keep(p.cmp(q)))
        }
        _ => with_numeric!(a.dtype(), T => {
            let x = slice_of::<T>(ctx, a)?;
            let y = slice_of::<T>(ctx, b)?;
            zip_map(x, a.shape(), y, b.shape(), &out, |p, q| {
                p.partial_cmp(q).is_some_and(keep)
            })
        }, dt => return Err(ctx.error(format!("dtype {dt} cannot be compared")))),
    };
    Ok(vec![Tensor::from_vec(out, v)?])
}

fn bools<'t>(ctx: &OpContext, t: &'t Tensor) -> Result<&'t [bool]> {
    if t.dtype() != DType::Bool {
        return Err(ctx.error(format!("needs bool inputs, got {}", t.dtype())));
    }
    slice_of::<bool>(ctx, t)
}

fn logical(
    ctx: &OpContext,
    inputs: &[Option<&Tensor>],
    f: fn(bool, bool) -> bool,
) -> Result<Vec<Tensor>> {
    let (a, b, out) = two(ctx, inputs)?;
    let v = zip_map(
        bools(ctx, a)?,
        a.shape(),
        bools(ctx, b)?,
        b.shape(),
        &out,
        |&p, &q| f(p, q),
    );
    Ok(vec![Tensor::from_vec(out, v)?])
}

fn not(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let v: Vec<bool> = bools(ctx, x)?.iter().map(|b| !b).collect();
    Ok(vec![Tensor::from_vec(x.shape().to_vec(), v)?])
}

/// `cond ? x : y`, all three broadcast together; x and y of any one type.
fn where_op(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let c = ctx.required(inputs, 0)?;
    let x = ctx.required(inputs, 1)?;
    let y = ctx.required(inputs, 2)?;
    let cond = bools(ctx, c)?;
    if x.dtype() != y.dtype() {
        return Err(ctx.error(format!(
            "X and Y have different dtypes {} and {}",
            x.dtype(),
            y.dtype()
        )));
    }
    let out = broadcast_shapes(c.shape(), x.shape())
        .and_then(|s| broadcast_shapes(&s, y.shape()))
        .ok_or_else(|| {
            ctx.error(format!(
                "shapes {:?}, {:?} and {:?} do not broadcast",
                c.shape(),
                x.shape(),
                y.shape()
            ))
        })?;
    // Each output picks position i of the expanded x (offset 0) or y (offset n).
    let n: usize = out.iter().product();
    let ce = expand(cond, c.shape(), &out);
    let xi: Vec<usize> = (0..x.len()).collect();
    let yi: Vec<usize> = (0..y.len()).collect();
    let xe = expand(&xi, x.shape(), &out);
    let ye = expand(&yi, y.shape(), &out);
    let both = super::layout::append(x.data(), y.data())
        .ok_or_else(|| ctx.error("X and Y have different dtypes"))?;
    let pos: Vec<usize> = (0..n)
        .map(|i| if ce[i] { xe[i] } else { x.len() + ye[i] })
        .collect();
    Ok(vec![Tensor::new(out, select(&both, &pos))?])
}

#[derive(Clone, Copy)]
enum Bit {
    And,
    Or,
    Xor,
}

fn bitwise(ctx: &OpContext, inputs: &[Option<&Tensor>], op: Bit) -> Result<Vec<Tensor>> {
    let (a, b, out) = two(ctx, inputs)?;
    with_int!(a.dtype(), T => {
        let x = slice_of::<T>(ctx, a)?;
        let y = slice_of::<T>(ctx, b)?;
        let v = zip_map(x, a.shape(), y, b.shape(), &out, |&p, &q| match op {
            Bit::And => p & q,
            Bit::Or => p | q,
            Bit::Xor => p ^ q,
        });
        Ok(vec![Tensor::from_vec(out, v)?])
    }, dt => Err(ctx.error(format!("needs integer inputs, got {dt}"))))
}

fn bitwise_not(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    with_int!(x.dtype(), T => {
        let v: Vec<T> = slice_of::<T>(ctx, x)?.iter().map(|&p| !p).collect();
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), v)?])
    }, dt => Err(ctx.error(format!("needs an integer input, got {dt}"))))
}

/// Logical shifts of unsigned integers; shifting by the bit width or more gives 0.
fn bit_shift(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let (a, b, out) = two(ctx, inputs)?;
    let left = match ctx
        .node
        .attr_str("direction", "")
        .map_err(|e| ctx.error(e.to_string()))?
    {
        "LEFT" => true,
        "RIGHT" => false,
        other => return Err(ctx.error(format!("direction must be LEFT or RIGHT, got '{other}'"))),
    };
    if a.dtype().is_signed() {
        return Err(ctx.error(format!("needs unsigned integers, got {}", a.dtype())));
    }
    with_int!(a.dtype(), T => {
        let x = slice_of::<T>(ctx, a)?;
        let y = slice_of::<T>(ctx, b)?;
        let v = zip_map(x, a.shape(), y, b.shape(), &out, |&p, &q| {
            let s = (q as u128).min(u32::MAX as u128) as u32;
            if left { p.checked_shl(s).unwrap_or(0) } else { p.checked_shr(s).unwrap_or(0) }
        });
        Ok(vec![Tensor::from_vec(out, v)?])
    }, dt => Err(ctx.error(format!("needs unsigned integers, got {dt}"))))
}

#[cfg(test)]
mod tests {
    use crate::ops::testing::{run_op, run_op_err};
    use shrink_graph::Node;
    use shrink_tensor::{Tensor, TensorData};

    #[test]
    fn comparisons_broadcast_and_nan_is_unordered() {
        let a = Tensor::from_vec(vec![2, 2], vec![1f32, f32::NAN, 3., 4.]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![3f32, 3.]).unwrap();
        let g = run_op(Node::new("n", "Greater", &["a", "b"], &["y"]), &[&a, &b]);
        assert_eq!(
            g[0].as_slice::<bool>().unwrap(),
            &[false, false, false, true]
        );
        let le = run_op(
            Node::new("n", "LessOrEqual", &["a", "b"], &["y"]),
            &[&a, &b],
        );
        assert_eq!(
            le[0].as_slice::<bool>().unwrap(),
            &[true, false, true, false]
        );
        let s = Tensor::new(vec![2], TensorData::String(vec!["x".into(), "y".into()])).unwrap();
        let t = Tensor::new(vec![], TensorData::String(vec!["y".into()])).unwrap();
        let e = run_op(Node::new("n", "Equal", &["a", "b"], &["y"]), &[&s, &t]);
        assert_eq!(e[0].as_slice::<bool>().unwrap(), &[false, true]);
    }

    #[test]
    fn where_broadcasts_three_ways() {
        let c = Tensor::from_vec(vec![2, 1], vec![true, false]).unwrap();
        let x = Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap();
        let y = Tensor::scalar(-1i64);
        let out = run_op(
            Node::new("n", "Where", &["c", "x", "y"], &["o"]),
            &[&c, &x, &y],
        );
        assert_eq!(out[0].shape(), &[2, 3]);
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[1, 2, 3, -1, -1, -1]);
        let e = run_op_err(
            Node::new("n", "Where", &["c", "x", "y"], &["o"]),
            &[&x, &x, &y],
        );
        assert!(e.contains("bool"), "{e}");
    }

    #[test]
    fn logic_ops_need_bools() {
        let a = Tensor::from_vec(vec![4], vec![true, true, false, false]).unwrap();
        let b = Tensor::from_vec(vec![4], vec![true, false, true, false]).unwrap();
        let x = run_op(Node::new("n", "Xor", &["a", "b"], &["y"]), &[&a, &b]);
        assert_eq!(
            x[0].as_slice::<bool>().unwrap(),
            &[false, true, true, false]
        );
        let n = run_op(Node::new("n", "Not", &["a"], &["y"]), &[&a]);
        assert_eq!(
            n[0].as_slice::<bool>().unwrap(),
            &[false, false, true, true]
        );
    }
}
