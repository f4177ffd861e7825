//! Reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
//! ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, and
//! ArgMax/ArgMin.
//!
//! Axes are an attribute up to opset 12 for ReduceSum and up to 17 for the
//! others, then an optional input; no axes means every axis unless
//! `noop_with_empty_axes` is set. Values accumulate in f64 (exact for every
//! integer below 2^53, and no f32 drift over long rows), then convert back to
//! the input type; reducing an empty set yields the op's identity (0, 1,
//! -inf, +inf …) exactly as the ONNX reference does.

use super::args::{attr_int, attr_ints, axes as norm_axes, axis, opt_ints};
use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::{strides_of, DType, Tensor, TensorData};

pub(super) fn register(r: &mut Registry) {
    r.add("", "ReduceSum", |c, i| reduce(c, i, Kind::Sum));
    r.add("", "ReduceMean", |c, i| reduce(c, i, Kind::Mean));
    r.add("", "ReduceMax", |c, i| reduce(c, i, Kind::Max));
    r.add("", "ReduceMin", |c, i| reduce(c, i, Kind::Min));
    r.add("", "ReduceProd", |c, i| reduce(c, i, Kind::Prod));
    r.add("", "ReduceL1", |c, i| reduce(c, i, Kind::L1));
    r.add("", "ReduceL2", |c, i| reduce(c, i, Kind::L2));
    r.add("", "ReduceLogSum", |c, i| reduce(c, i, Kind::LogSum));
    r.add("", "ReduceLogSumExp", |c, i| reduce(c, i, Kind::LogSumExp));
    r.add("", "ReduceSumSquare", |c, i| reduce(c, i, Kind::SumSquare));
    r.add("", "ArgMax", |c, i| arg_extreme(c, i, true));
    r.add("", "ArgMin", |c, i| arg_extreme(c, i, false));
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// Which axes an op reduces, after the attribute/input and empty-list rules.
/// `None` means "no reduction at all" (`noop_with_empty_axes` with no axes).
fn reduced_axes(
    ctx: &OpContext,
    inputs: &[Option<&Tensor>],
    kind: Kind,
    rank: usize,
) -> Result<Option<Vec<usize>>> {
    let from_input = ctx.opset >= 18 || (kind == Kind::Sum && ctx.opset >= 13);
    let list = if from_input {
        opt_ints(ctx, inputs, 1, "axes")?
    } else {
        attr_ints(ctx, "axes")?
    };
    let noop = attr_int(ctx, "noop_with_empty_axes", 0)? != 0;
    match list {
        Some(l) if !l.is_empty() => Ok(Some(norm_axes(ctx, &l, rank)?)),
        _ if noop && from_input => Ok(None),
        _ => Ok(Some((0..rank).collect())),
    }
}

/// Folds `vals` (row-major in `shape`) over `axes`: `step(acc, x, out_index)`
/// per element, starting every output from `init`. Returns one accumulator per
/// output element (reduced dims removed, order kept).
fn fold(
    vals: &[f64],
    shape: &[usize],
    axes: &[usize],
    init: f64,
    step: impl Fn(f64, f64, usize) -> f64,
) -> Vec<f64> {
    let out_n: usize = shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .product();
    let mut acc = vec![init; out_n];
    if vals.is_empty() {
        return acc;
    }
    let rank = shape.len();
    // Trailing axes only: each output owns one contiguous run.
    let first = rank - axes.len();
    if axes.iter().all(|&a| a >= first) {
        let inner: usize = shape[first..].iter().product();
        for (o, chunk) in vals.chunks(inner.max(1)).enumerate() {
            acc[o] = chunk.iter().fold(acc[o], |a, &x| step(a, x, o));
        }
        return acc;
    }
    // General case: walk the input with an odometer, tracking the output offset.
    let out_shape: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 1 } else { shape[i] })
        .collect();
    let os = strides_of(&out_shape);
    let ostride: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 0 } else { os[i] })
        .collect();
    let mut idx = vec![0usize; rank];
    let mut o = 0usize;
    for &x in vals {
        acc[o] = step(acc[o], x, o);
        for d in (0..rank).rev() {
            idx[d] += 1;
            o += ostride[d];
            if idx[d] < shape[d] {
                break;
            }
            o -= ostride[d] * shape[d];
            idx[d] = 0;
        }
    }
    acc
}

fn reduce(ctx: &OpContext, inputs: &[Option<&Tensor>], kind: Kind) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let dt = x.dtype();
    let numeric = dt.is_float() || dt.is_int() || dt == DType::Bool;
    if !numeric {
        return Err(ctx.error(format!("dtype {dt} cannot be reduced")));
    }
    let Some(axes) = reduced_axes(ctx, inputs, kind, x.rank())? else {
        return Ok(vec![x.clone()]);
    };
    let keepdims = attr_int(ctx, "keepdims", 1)? != 0;
    let shape = x.shape();
    let vals = x.to_f64_vec();
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    fn sum_of(vals: &[f64], shape: &[usize], axes: &[usize], f: impl Fn(f64) -> f64) -> Vec<f64> {
        fold(vals, shape, axes, 0.0, |a, v, _| a + f(v))
    }
    let out = match kind {
        Kind::Sum => sum_of(&vals, shape, &axes, |v| v),
        Kind::Mean => sum_of(&vals, shape, &axes, |v| v)
            .into_iter()
            .map(|s| s / count as f64)
            .collect(),
        Kind::Max => fold(&vals, shape, &axes, f64::NEG_INFINITY, |a, v, _| {
            if v > a || v.is_nan() {
                v
            } else {
                a
            }
        }),
        Kind::Min => fold(&vals, shape, &axes, f64::INFINITY, |a, v, _| {
            if v < a || v.is_nan() {
                v
            } else {
                a
            }
        }),
        Kind::Prod => fold(&vals, shape, &axes, 1.0, |a, v, _| a * v),
        Kind::L1 => sum_of(&vals, shape, &axes, f64::abs),
        Kind::L2 => sum_of(&vals, shape, &axes, |v| v * v)
            .into_iter()
            .map(f64::sqrt)
            .collect(),
        Kind::SumSquare => sum_of(&vals, shape, &axes, |v| v * v),
        Kind::LogSum => sum_of(&vals, shape, &axes, |v| v)
            .into_iter()
            .map(f64::ln)
            .collect(),
        Kind::LogSumExp => {
            // Subtract each output's max first so large inputs do not overflow.
            let m = fold(&vals, shape, &axes, f64::NEG_INFINITY, |a, v, _| a.max(v));
            let s = fold(&vals, shape, &axes, 0.0, |a, v, o| {
                a + if m[o].is_finite() {
                    (v - m[o]).exp()
                } else {
                    v.exp()
                }
            });
            s.iter()
                .zip(&m)
                .map(|(&s, &m)| if m.is_finite() { s.ln() + m } else { s.ln() })
                .collect()
        }
    };
    let out_shape: Vec<usize> = if keepdims {
        (0..x.rank())
            .map(|i| if axes.contains(&i) { 1 } else { shape[i] })
            .collect()
    } else {
        (0..x.rank())
            .filter(|i| !axes.contains(i))
            .map(|i| shape[i])
            .collect()
    };
    let data = TensorData::F64(out).cast(dt);
    Ok(vec![Tensor::new(out_shape, data)?])
}

/// Index of the first (or, with `select_last_index`, last) maximum/minimum
/// along `axis`, as i64.
fn arg_extreme(ctx: &OpContext, inputs: &[Option<&Tensor>], max: bool) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    if !(x.dtype().is_float() || x.dtype().is_int()) {
        return Err(ctx.error(format!("dtype {} is not supported", x.dtype())));
    }
    let ax = axis(ctx, attr_int(ctx, "axis", 0)?, x.rank())?;
    let keepdims = attr_int(ctx, "keepdims", 1)? != 0;
    let last = attr_int(ctx, "select_last_index", 0)? != 0;
    let shape = x.shape();
    let n = shape[ax];
    if n == 0 {
        return Err(ctx.error(format!("axis {ax} has size 0: no element to pick")));
    }
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    let vals = x.to_f64_vec();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| vals[(o * n + k) * inner + i];
            let mut best = 0;
            for k in 1..n {
                let (v, b) = (at(k), at(best));
                let better = if max { v > b } else { v < b };
                if better || (last && v == b) {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    let mut out_shape = shape.to_vec();
    if keepdims {
        out_shape[ax] = 1;
    } else {
        out_shape.remove(ax);
    }
    Ok(vec![Tensor::from_vec(out_shape, out)?])
}

#[cfg(test)]
mod tests {
    use crate::ops::testing::{run_op, run_op_at, run_op_err};
    use shrink_graph::{Attr, Node};
    use shrink_tensor::Tensor;

    fn x234() -> Tensor {
        Tensor::from_vec(vec![2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap()
    }

    /// Sums over `axes` by brute force, the independent check for `fold`.
    fn brute_sum(x: &Tensor, axes: &[usize]) -> Vec<f32> {
        let s = x.shape();
        let v = x.as_slice::<f32>().unwrap();
        let mut out = std::collections::BTreeMap::new();
        for i in 0..s[0] {
            for j in 0..s[1] {
                for k in 0..s[2] {
                    let key: Vec<usize> = [(0, i), (1, j), (2, k)]
                        .iter()
                        .filter(|(a, _)| !axes.contains(a))
                        .map(|&(_, x)| x)
                        .collect();
                    *out.entry(key).or_insert(0.0) += v[(i * s[1] + j) * s[2] + k];
                }
            }
        }
        out.into_values().collect()
    }

    #[test]
    fn sum_over_every_axis_subset_matches_brute_force() {
        let x = x234();
        for axes in [
            vec![0],
            vec![1],
            vec![2],
            vec![0, 2],
            vec![1, 2],
            vec![0, 1],
        ] {
            let ai: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
            let at = Tensor::from_vec(vec![ai.len()], ai).unwrap();
            let n = Node::new("n", "ReduceSum", &["x", "a"], &["y"]).with("keepdims", Attr::Int(0));
            let out = run_op(n, &[&x, &at]);
            assert_eq!(
                out[0].as_slice::<f32>().unwrap(),
                brute_sum(&x, &axes),
                "{axes:?}"
            );
        }
    }

    #[test]
    fn axes_attribute_before_18_negative_axes_and_keepdims() {
        let x = x234();
        let n = Node::new("n", "ReduceMean", &["x"], &["y"]).with("axes", Attr::Ints(vec![-1]));
        let out = run_op_at(n, 13, &[&x]);
        assert_eq!(out[0].shape(), &[2, 3, 1]);
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[1.5, 5.5, 9.5, 13.5, 17.5, 21.5]
        );
        let n = Node::new("n", "ReduceMax", &["x"], &["y"]).with("keepdims", Attr::Int(0));
        let out = run_op_at(n, 13, &[&x]);
        assert_eq!(out[0].shape(), &[] as &[usize]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[23.0]);
    }

    #[test]
    fn empty_axes_with_noop_is_identity_and_empty_set_gives_identity_element() {
        let x = x234();
        let empty = Tensor::from_vec(vec![0], Vec::<i64>::new()).unwrap();
        let n = Node::new("n", "ReduceSum", &["x", "a"], &["y"])
            .with("noop_with_empty_axes", Attr::Int(1));
        assert_eq!(run_op(n, &[&x, &empty])[0], x);
        let z = Tensor::from_vec(vec![2, 0], Vec::<f32>::new()).unwrap();
        let one = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let out = run_op(
            Node::new("n", "ReduceProd", &["x", "a"], &["y"]),
            &[&z, &one],
        );
        assert_eq!(out[0].shape(), &[2, 1]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1.0, 1.0]);
        let out = run_op(
            Node::new("n", "ReduceMax", &["x", "a"], &["y"]),
            &[&z, &one],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[f32::NEG_INFINITY; 2]);
    }

    #[test]
    fn bad_axis_is_an_error() {
        let x = x234();
        let a = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        let e = run_op_err(Node::new("n", "ReduceSum", &["x", "a"], &["y"]), &[&x, &a]);
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn argmax_first_and_last_index() {
        let x = Tensor::from_vec(vec![2, 3], vec![1f32, 3., 3., 5., 2., 5.]).unwrap();
        let n = Node::new("n", "ArgMax", &["x"], &["y"]).with("axis", Attr::Int(1));
        assert_eq!(
            run_op(n.clone(), &[&x])[0].as_slice::<i64>().unwrap(),
            &[1, 0]
        );
        let n = n.with("select_last_index", Attr::Int(1));
        assert_eq!(run_op(n, &[&x])[0].as_slice::<i64>().unwrap(), &[2, 2]);
    }
}
