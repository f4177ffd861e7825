//! Binary arithmetic with numpy broadcasting: Add, Sub, Mul, Div, Pow, Mod,
//! and the variadic Max, Min, Sum, Mean.
//!
//! Each op is a zero-sized type implementing [`BinOp`], so the broadcasting
//! kernel is monomorphised per (op, element type) and the f32 inner loops are
//! plain slice zips the compiler vectorises (they run in every MiniLM layer).

use super::args::{attr_int, slice_of};
use super::broadcast::{broadcast_shapes, zip_map};
use super::dispatch::{with_float, with_numeric};
use super::scalar::Scalar;
use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut Registry) {
    r.add("", "Add", |c, i| variadic::<AddOp>(c, i, 2, 2));
    r.add("", "Sub", |c, i| variadic::<SubOp>(c, i, 2, 2));
    r.add("", "Mul", |c, i| variadic::<MulOp>(c, i, 2, 2));
    r.add_inplace("", "Add", |c, a, i| binary_inplace(c, a, i, |x, y| x + y));
    r.add_inplace("", "Mul", |c, a, i| binary_inplace(c, a, i, |x, y| x * y));
    r.add("", "Div", |c, i| variadic::<DivOp>(c, i, 2, 2));
    r.add("", "Max", |c, i| variadic::<MaxOp>(c, i, 1, usize::MAX));
    r.add("", "Min", |c, i| variadic::<MinOp>(c, i, 1, usize::MAX));
    r.add("", "Sum", |c, i| variadic::<AddOp>(c, i, 1, usize::MAX));
    r.add("", "Mean", mean);
    r.add("", "Pow", pow);
    r.add("", "Mod", modulo);
}

/// One elementwise binary operation, generic over the element type.
trait BinOp {
    /// Integer division-like ops reject a zero divisor up front.
    const NEEDS_NONZERO_INT_DIVISOR: bool = false;
    fn apply<T: Scalar>(x: T, y: T) -> T;
}

struct AddOp;
impl BinOp for AddOp {
    #[inline(always)]
    fn apply<T: Scalar>(x: T, y: T) -> T {
        x.add(y)
    }
}
struct SubOp;
impl BinOp for SubOp {
    #[inline(always)]
    fn apply<T: Scalar>(x: T, y: T) -> T {
        x.sub(y)
    }
}
struct MulOp;
impl BinOp for MulOp {
    #[inline(always)]
    fn apply<T: Scalar>(x: T, y: T) -> T {
        x.mul(y)
    }
}
struct DivOp;
impl BinOp for DivOp {
    const NEEDS_NONZERO_INT_DIVISOR: bool = true;
    #[inline(always)]
    fn apply<T: Scalar>(x: T, y: T) -> T {
        x.div(y)
    }
}
/// NaN-propagating maximum, like numpy's `maximum`.
struct MaxOp;
impl BinOp for MaxOp {
    #[inline(always)]
    fn apply<T: Scalar>(x: T, y: T) -> T {
        if x >= y || x.is_nan() {
            x
        } else {
            y
        }
    }
}
struct MinOp;
impl BinOp for MinOp {
    #[inline(always)]
    fn apply<T: Scalar>(x: T, y: T) -> T {
        if x <= y || x.is_nan() {
            x
        } else {
            y
        }
    }
}
struct FloorModOp;
impl BinOp for FloorModOp {
    const NEEDS_NONZERO_INT_DIVISOR: bool = true;
    fn apply<T: Scalar>(x: T, y: T) -> T {
        x.floor_mod(y)
    }
}
struct TruncModOp;
impl BinOp for TruncModOp {
    const NEEDS_NONZERO_INT_DIVISOR: bool = true;
    fn apply<T: Scalar>(x: T, y: T) -> T {
        x.trunc_mod(y)
    }
}

/// `op(a, b)` with broadcasting; both inputs must share a numeric dtype.
fn binary<O: BinOp>(ctx: &OpContext, a: &Tensor, b: &Tensor) -> Result<Tensor> {
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
    with_numeric!(a.dtype(), T => {
        let x = slice_of::<T>(ctx, a)?;
        let y = slice_of::<T>(ctx, b)?;
        if O::NEEDS_NONZERO_INT_DIVISOR && !T::IS_FLOAT && y.contains(&T::ZERO) {
            return Err(ctx.error("integer division by zero"));
        }
        let v = zip_map(x, a.shape(), y, b.shape(), &out, |&p, &q| O::apply(p, q));
        Ok(Tensor::from_vec(out, v)?)
    }, dt => Err(ctx.error(format!("dtype {dt} is not supported"))))
}

/// Folds `op` over between `min` and `max` inputs left to right.
fn variadic<O: BinOp>(
    ctx: &OpContext,
    inputs: &[Option<&Tensor>],
    min: usize,
    max: usize,
) -> Result<Vec<Tensor>> {
    let present: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    if present.len() < min || present.len() > max || present.len() != inputs.len() {
        return Err(ctx.error(format!(
            "expects {} inputs, got {} ({} present)",
            if min == max {
                min.to_string()
            } else {
                format!("at least {min}")
            },
            inputs.len(),
            present.len()
        )));
    }
    let mut acc = present[0].clone();
    if present.len() == 1 {
        // A single input still has to be a supported type.
        binary::<O>(ctx, &acc, &acc)?;
    }
    for t in &present[1..] {
        acc = binary::<O>(ctx, &acc, t)?;
    }
    Ok(vec![acc])
}

fn mean(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let sum = variadic::<AddOp>(ctx, inputs, 1, usize::MAX)?.remove(0);
    let n = inputs.len() as f64;
    let shape = sum.shape().to_vec();
    with_float!(sum.dtype(), T => {
        let v: Vec<T> = slice_of::<T>(ctx, &sum)?
            .iter()
            .map(|&x| T::from_f64(x.to_f64() / n))
            .collect();
        Ok(vec![Tensor::from_vec(shape, v)?])
    }, dt => Err(ctx.error(format!("Mean needs float inputs, got {dt}"))))
}

/// `base ^ exponent`, the exponent of any numeric type; the result has the
/// base's type (computed in f64, then rounded or truncated like ONNX Runtime).
fn pow(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let base = ctx.required(inputs, 0)?;
    let exp = ctx.required(inputs, 1)?;
    if !(exp.dtype().is_float() || exp.dtype().is_int()) {
        return Err(ctx.error(format!("exponent dtype {} is not numeric", exp.dtype())));
    }
    let out = broadcast_shapes(base.shape(), exp.shape()).ok_or_else(|| {
        ctx.error(format!(
            "shapes {:?} and {:?} do not broadcast",
            base.shape(),
            exp.shape()
        ))
    })?;
    let e = exp.to_f64_vec();
    with_numeric!(base.dtype(), T => {
        let b = slice_of::<T>(ctx, base)?;
        let v = zip_map(b, base.shape(), &e, exp.shape(), &out, |&x, &y| {
            T::from_f64(x.to_f64().powf(y))
        });
        Ok(vec![Tensor::from_vec(out, v)?])
    }, dt => Err(ctx.error(format!("base dtype {dt} is not supported"))))
}

fn modulo(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.required(inputs, 0)?;
    let b = ctx.required(inputs, 1)?;
    let fmod = attr_int(ctx, "fmod", 0)?;
    if fmod == 0 && a.dtype().is_float() {
        return Err(ctx.error("fmod must be 1 for floating-point inputs"));
    }
    let t = if fmod == 0 {
        binary::<FloorModOp>(ctx, a, b)?
    } else {
        binary::<TruncModOp>(ctx, a, b)?
    };
    Ok(vec![t])
}

/// f32 `a ∘ b` written over the dying `a`, when the output has `a`'s shape:
/// `b` of the same shape, a single value, or a trailing block of `a`'s
/// shape (a bias row). Other broadcasts go to the ordinary op.
fn binary_inplace(
    _: &OpContext,
    a: &mut Tensor,
    inputs: &[Option<&Tensor>],
    f: impl Fn(f32, f32) -> f32,
) -> Result<bool> {
    let Some(b) = inputs.get(1).copied().flatten() else {
        return Ok(false);
    };
    let Ok(bv) = b.as_slice::<f32>() else {
        return Ok(false);
    };
    let (ash, bsh) = (a.shape().to_vec(), b.shape());
    // b's shape without leading 1s must be a suffix of a's shape, and b's
    // rank at most a's (otherwise the output grows).
    let trimmed: &[usize] = &bsh[bsh.iter().take_while(|&&d| d == 1).count()..];
    if bsh.len() > ash.len() || !ash.ends_with(trimmed) || bv.is_empty() {
        return Ok(false);
    }
    let Ok(av) = a.as_mut_slice::<f32>() else {
        return Ok(false);
    };
    if bv.len() == 1 {
        let y = bv[0];
        av.iter_mut().for_each(|x| *x = f(*x, y));
    } else {
        for row in av.chunks_exact_mut(bv.len()) {
            for (x, &y) in row.iter_mut().zip(bv) {
                *x = f(*x, y);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use crate::ops::testing::{run_op, run_op_err};
    use shrink_graph::{Attr, Node};
    use shrink_tensor::Tensor;

    fn t<T: shrink_tensor::Element>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    #[test]
    fn add_broadcasts_rows_and_scalars() {
        let a = t(&[2, 3], vec![1f32, 2., 3., 4., 5., 6.]);
        let row = t(&[3], vec![10f32, 20., 30.]);
        let out = run_op(Node::new("n", "Add", &["a", "b"], &["y"]), &[&a, &row]);
        assert_eq!(out[0].shape(), &[2, 3]);
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[11., 22., 33., 14., 25., 36.]
        );
        let s = Tensor::scalar(2f32);
        let out = run_op(Node::new("n", "Mul", &["a", "b"], &["y"]), &[&s, &a]);
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[2., 4., 6., 8., 10., 12.]
        );
    }

    #[test]
    fn integer_division_truncates_and_zero_is_an_error() {
        let a = t(&[4], vec![7i32, -7, 7, -7]);
        let b = t(&[4], vec![2i32, 2, -2, -2]);
        let out = run_op(Node::new("n", "Div", &["a", "b"], &["y"]), &[&a, &b]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[3, -3, -3, 3]);
        let z = t(&[1], vec![0i32]);
        let e = run_op_err(Node::new("n", "Div", &["a", "b"], &["y"]), &[&a, &z]);
        assert!(e.contains("division by zero"), "{e}");
    }

    #[test]
    fn bad_broadcast_and_mixed_dtypes_are_errors() {
        let a = t(&[2, 3], vec![0f32; 6]);
        let b = t(&[2], vec![0f32; 2]);
        let e = run_op_err(Node::new("n", "Sub", &["a", "b"], &["y"]), &[&a, &b]);
        assert!(e.contains("do not broadcast"), "{e}");
        let c = t(&[3], vec![0i64; 3]);
        let e = run_op_err(Node::new("n", "Sub", &["a", "b"], &["y"]), &[&a, &c]);
        assert!(e.contains("different dtypes"), "{e}");
    }

    #[test]
    fn mod_python_and_c_semantics() {
        let a = t(&[4], vec![-4i64, 4, -4, 4]);
        let b = t(&[4], vec![3i64, 3, -3, -3]);
        let out = run_op(Node::new("n", "Mod", &["a", "b"], &["y"]), &[&a, &b]);
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[2, 1, -1, -2]);
        let n = Node::new("n", "Mod", &["a", "b"], &["y"]).with("fmod", Attr::Int(1));
        let out = run_op(n, &[&a, &b]);
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[-1, 1, -1, 1]);
    }

    #[test]
    fn variadic_max_and_mean() {
        let a = t(&[3], vec![1f32, 5., 3.]);
        let b = t(&[1], vec![2f32]);
        let c = t(&[3], vec![0f32, 0., 4.]);
        let out = run_op(
            Node::new("n", "Max", &["a", "b", "c"], &["y"]),
            &[&a, &b, &c],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2., 5., 4.]);
        let out = run_op(
            Node::new("n", "Mean", &["a", "b", "c"], &["y"]),
            &[&a, &b, &c],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[1., 7. / 3., 3.]);
    }

    #[test]
    fn pow_mixes_base_and_exponent_types() {
        let a = t(&[3], vec![2i32, 3, -2]);
        let e = t(&[3], vec![3f32, 0.5, 2.]);
        let out = run_op(Node::new("n", "Pow", &["a", "b"], &["y"]), &[&a, &e]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[8, 1, 4]);
    }
}
