//! Elementwise unary ops and activations: Relu, LeakyRelu, PRelu, Clip,
//! Sigmoid, HardSigmoid, HardSwish, Tanh, Erf, Gelu, Elu, Selu, Celu,
//! Softplus, Softsign, ThresholdedRelu, Shrink, Sqrt, Neg, Abs, Exp, Log,
//! Reciprocal, Floor, Ceil, Round, Sign, the trigonometric family, IsNaN, IsInf.
//!
//! Transcendental functions evaluate in f64 and round once to the element
//! type, so f32 results are correctly rounded up to the last ulp of the f64
//! routine; `erf` comes from `libm` (a port of musl's, accurate to < 1 ulp in
//! f64) because the standard library has none.

use super::args::{attr_float, attr_int, slice_of};
use super::broadcast::{broadcast_shapes, zip_map};
use super::dispatch::{with_float, with_numeric};
use super::scalar::Scalar;
use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::{Element, Tensor};

pub(super) fn register(r: &mut Registry) {
    r.add("", "Relu", relu);
    r.add("", "LeakyRelu", leaky_relu);
    r.add("", "PRelu", prelu);
    r.add("", "Clip", clip);
    r.add_inplace("", "Relu", relu_inplace);
    r.add_inplace("", "Clip", clip_inplace);
    r.add("", "Neg", neg);
    r.add("", "Abs", abs);
    r.add("", "Sign", sign);
    r.add("", "Sigmoid", |c, i| {
        float_fast(c, i, sigmoid, |x| 1.0 / (1.0 + (-x).exp()))
    });
    r.add("", "HardSigmoid", hard_sigmoid);
    r.add("", "HardSwish", |c, i| {
        float(c, i, |x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0))
    });
    r.add("", "Tanh", |c, i| float_fast(c, i, f64::tanh, f32::tanh));
    r.add("", "Erf", erf);
    r.add("", "Gelu", gelu);
    r.add("", "Elu", elu);
    r.add("", "Selu", selu);
    r.add("", "Celu", celu);
    r.add("", "Softplus", |c, i| float(c, i, softplus));
    r.add("", "Softsign", |c, i| float(c, i, |x| x / (1.0 + x.abs())));
    r.add("", "ThresholdedRelu", thresholded_relu);
    r.add("", "Shrink", shrink);
    r.add("", "Sqrt", |c, i| float_fast(c, i, f64::sqrt, f32::sqrt));
    r.add("", "Exp", |c, i| float_fast(c, i, f64::exp, f32::exp));
    r.add("", "Log", |c, i| float_fast(c, i, f64::ln, f32::ln));
    r.add("", "Reciprocal", |c, i| float(c, i, |x| 1.0 / x));
    r.add("", "Floor", |c, i| float(c, i, f64::floor));
    r.add("", "Ceil", |c, i| float(c, i, f64::ceil));
    r.add("", "Round", |c, i| float(c, i, f64::round_ties_even));
    r.add("", "Sin", |c, i| float(c, i, f64::sin));
    r.add("", "Cos", |c, i| float(c, i, f64::cos));
    r.add("", "Tan", |c, i| float(c, i, f64::tan));
    r.add("", "Asin", |c, i| float(c, i, f64::asin));
    r.add("", "Acos", |c, i| float(c, i, f64::acos));
    r.add("", "Atan", |c, i| float(c, i, f64::atan));
    r.add("", "Sinh", |c, i| float(c, i, f64::sinh));
    r.add("", "Cosh", |c, i| float(c, i, f64::cosh));
    r.add("", "Asinh", |c, i| float(c, i, f64::asinh));
    r.add("", "Acosh", |c, i| float(c, i, f64::acosh));
    r.add("", "Atanh", |c, i| float(c, i, f64::atanh));
    r.add("", "IsNaN", is_nan);
    r.add("", "IsInf", is_inf);
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)` without overflow for large `x`.
fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The same-shape result of `f` over every element of a float tensor.
fn map_float(ctx: &OpContext, x: &Tensor, f: impl Fn(f64) -> f64) -> Result<Tensor> {
    with_float!(x.dtype(), T => {
        let v: Vec<T> = slice_of::<T>(ctx, x)?
            .iter()
            .map(|&a| T::from_f64(f(a.to_f64())))
            .collect();
        Ok(Tensor::from_vec(x.shape().to_vec(), v)?)
    }, dt => Err(ctx.error(format!("needs a float input, got {dt}"))))
}

fn float(ctx: &OpContext, inputs: &[Option<&Tensor>], f: fn(f64) -> f64) -> Result<Vec<Tensor>> {
    Ok(vec![map_float(ctx, ctx.required(inputs, 0)?, f)?])
}

/// Like [`float`], with a native-f32 routine for f32 tensors: the
/// transformer and mobile-net activations run on millions of f32 elements per
/// inference, where the f32 functions (within an ulp or two of the correctly
/// rounded result) are several times faster than the f64 detour.
fn float_fast(
    ctx: &OpContext,
    inputs: &[Option<&Tensor>],
    f: impl Fn(f64) -> f64,
    f32_fn: impl Fn(f32) -> f32,
) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    if x.dtype() == shrink_tensor::DType::F32 {
        return Ok(vec![map_typed::<f32>(ctx, x, f32_fn)?]);
    }
    Ok(vec![map_float(ctx, x, f)?])
}

/// Erf: f32 on the kernels crate's vectorised erf (≤ 3e-7 relative error),
/// other float types through f64 libm.
fn erf(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    if x.dtype() != shrink_tensor::DType::F32 {
        return Ok(vec![map_float(ctx, x, libm::erf)?]);
    }
    let xs = slice_of::<f32>(ctx, x)?;
    let mut out = ctx.output_f32(xs.len());
    shrink_kernels::activation::erf(xs, &mut out).map_err(|e| ctx.error(e.to_string()))?;
    Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)?])
}

fn map_typed<T: Element>(ctx: &OpContext, x: &Tensor, f: impl Fn(T) -> T) -> Result<Tensor> {
    let v: Vec<T> = slice_of::<T>(ctx, x)?.iter().map(|&a| f(a)).collect();
    Ok(Tensor::from_vec(x.shape().to_vec(), v)?)
}

fn neg(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let out = with_numeric!(x.dtype(), T => map_typed::<T>(ctx, x, <T as Scalar>::neg),
        dt => Err(ctx.error(format!("dtype {dt} is not supported"))))?;
    Ok(vec![out])
}

fn abs(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let out = with_numeric!(x.dtype(), T => map_typed::<T>(ctx, x, <T as Scalar>::abs),
        dt => Err(ctx.error(format!("dtype {dt} is not supported"))))?;
    Ok(vec![out])
}

fn sign(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let out = with_numeric!(x.dtype(), T => map_typed::<T>(ctx, x, |a| {
        if a > T::ZERO {
            T::ONE
        } else if is_negative(a) {
            T::ZERO.sub(T::ONE)
        } else {
            a // zero stays zero, NaN stays NaN
        }
    }), dt => Err(ctx.error(format!("dtype {dt} is not supported"))))?;
    Ok(vec![out])
}

/// `max(x, 0)`, integers too (opset 14); NaN passes through as in ONNX Runtime.
fn relu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let out = with_numeric!(x.dtype(), T => map_typed::<T>(ctx, x, |a| {
        if a > T::ZERO || a.is_nan() { a } else { T::ZERO }
    }), dt => Err(ctx.error(format!("dtype {dt} is not supported"))))?;
    Ok(vec![out])
}

/// [`relu`] on f32, overwriting its dying input.
fn relu_inplace(_: &OpContext, x: &mut Tensor, _: &[Option<&Tensor>]) -> Result<bool> {
    let Ok(v) = x.as_mut_slice::<f32>() else {
        return Ok(false);
    };
    // Unconditional stores of a select: vectorised, no branch to mispredict.
    for a in v {
        *a = if *a > 0.0 || a.is_nan() { *a } else { 0.0 };
    }
    Ok(true)
}

/// [`clip`] on f32 from opset 11 (bounds as optional one-value inputs),
/// overwriting its dying input; anything unusual goes to [`clip`].
fn clip_inplace(ctx: &OpContext, x: &mut Tensor, inputs: &[Option<&Tensor>]) -> Result<bool> {
    if ctx.opset < 11 || x.dtype() != shrink_tensor::DType::F32 {
        return Ok(false);
    }
    let bound = |i: usize| -> std::result::Result<Option<f32>, ()> {
        match inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(t) => match t.as_slice::<f32>() {
                Ok([v]) => Ok(Some(*v)),
                _ => Err(()),
            },
        }
    };
    let (Ok(lo), Ok(hi)) = (bound(1), bound(2)) else {
        return Ok(false);
    };
    let Ok(v) = x.as_mut_slice::<f32>() else {
        return Ok(false);
    };
    let (lo, hi) = (lo.unwrap_or(f32::NEG_INFINITY), hi.unwrap_or(f32::INFINITY));
    for a in v {
        // Same comparisons as `clip` (NaN stays NaN, min > max gives max),
        // as selects with unconditional stores so that they vectorise.
        let x = if *a < lo { lo } else { *a };
        *a = if x > hi { hi } else { x };
    }
    Ok(true)
}

fn leaky_relu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = attr_float(ctx, "alpha", 0.01)? as f64;
    let x = ctx.required(inputs, 0)?;
    Ok(vec![map_float(ctx, x, |v| {
        if v < 0.0 {
            alpha * v
        } else {
            v
        }
    })?])
}

/// `x < 0 ? slope * x : x` with `slope` broadcast to `x`.
fn prelu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let slope = ctx.required(inputs, 1)?;
    if x.dtype() != slope.dtype() {
        return Err(ctx.error(format!(
            "slope dtype {} differs from input dtype {}",
            slope.dtype(),
            x.dtype()
        )));
    }
    let out = broadcast_shapes(x.shape(), slope.shape()).ok_or_else(|| {
        ctx.error(format!(
            "slope shape {:?} does not broadcast to input shape {:?}",
            slope.shape(),
            x.shape()
        ))
    })?;
    with_numeric!(x.dtype(), T => {
        let a = slice_of::<T>(ctx, x)?;
        let s = slice_of::<T>(ctx, slope)?;
        let v = zip_map(a, x.shape(), s, slope.shape(), &out, |&p, &q| {
            if is_negative(p) { p.mul(q) } else { p }
        });
        Ok(vec![Tensor::from_vec(out, v)?])
    }, dt => Err(ctx.error(format!("dtype {dt} is not supported"))))
}

/// Generic so unsigned types do not trip the "always false" lint per type.
fn is_negative<T: Scalar>(x: T) -> bool {
    x < T::ZERO
}

/// Clamp to `[min, max]`: attributes before opset 11, optional scalar inputs
/// from 11 on. Integers compare exactly in their own type. With `min > max`
/// every element becomes `max`, as numpy's `clip` does.
fn clip(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let bound = |i: usize, attr: &str| -> Result<Option<Tensor>> {
        if ctx.opset < 11 {
            return Ok(match ctx.node.attr(attr) {
                Some(_) => Some(Tensor::scalar(attr_float(ctx, attr, 0.0)?).cast(x.dtype())),
                None => None,
            });
        }
        match inputs.get(i).copied().flatten() {
            None => Ok(None),
            Some(t) if t.len() != 1 => Err(ctx.error(format!(
                "input #{i} ({attr}) must hold one value, has shape {:?}",
                t.shape()
            ))),
            Some(t) if t.dtype() != x.dtype() => Err(ctx.error(format!(
                "input #{i} ({attr}) has dtype {}, the input {}",
                t.dtype(),
                x.dtype()
            ))),
            Some(t) => Ok(Some(t.clone())),
        }
    };
    let lo = bound(1, "min")?;
    let hi = bound(2, "max")?;
    let out = with_numeric!(x.dtype(), T => {
        let first = |b: &Option<Tensor>| -> Result<Option<T>> {
            match b {
                Some(t) => Ok(slice_of::<T>(ctx, t)?.first().copied()),
                None => Ok(None),
            }
        };
        let lo = first(&lo)?.unwrap_or(T::LOWEST);
        let hi = first(&hi)?.unwrap_or(T::HIGHEST);
        map_typed::<T>(ctx, x, |a| {
            let a = if a < lo { lo } else { a };
            if a > hi { hi } else { a }
        })
    }, dt => Err(ctx.error(format!("dtype {dt} is not supported"))))?;
    Ok(vec![out])
}

fn hard_sigmoid(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = attr_float(ctx, "alpha", 0.2)? as f64;
    let beta = attr_float(ctx, "beta", 0.5)? as f64;
    let x = ctx.required(inputs, 0)?;
    Ok(vec![map_float(ctx, x, |v| {
        (alpha * v + beta).clamp(0.0, 1.0)
    })?])
}

/// Gelu (opset 20): exact with `erf`, or the tanh approximation.
fn gelu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let approx = ctx
        .node
        .attr_str("approximate", "none")
        .map_err(|e| ctx.error(e.to_string()))?;
    let out = match approx {
        "none" => map_float(ctx, x, |v| {
            0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2))
        })?,
        "tanh" => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            map_float(ctx, x, |v| {
                0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh())
            })?
        }
        other => {
            return Err(ctx.error(format!(
                "approximate must be 'none' or 'tanh', got '{other}'"
            )))
        }
    };
    Ok(vec![out])
}

fn elu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = attr_float(ctx, "alpha", 1.0)? as f64;
    let x = ctx.required(inputs, 0)?;
    Ok(vec![map_float(ctx, x, |v| {
        if v < 0.0 {
            alpha * v.exp_m1()
        } else {
            v
        }
    })?])
}

fn selu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = attr_float(ctx, "alpha", 1.673_263_2)? as f64;
    let gamma = attr_float(ctx, "gamma", 1.050_701)? as f64;
    let x = ctx.required(inputs, 0)?;
    Ok(vec![map_float(ctx, x, |v| {
        if v <= 0.0 {
            gamma * (alpha * v.exp() - alpha)
        } else {
            gamma * v
        }
    })?])
}

fn celu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = attr_float(ctx, "alpha", 1.0)? as f64;
    let x = ctx.required(inputs, 0)?;
    Ok(vec![map_float(ctx, x, |v| {
        v.max(0.0) + (alpha * ((v / alpha).exp() - 1.0)).min(0.0)
    })?])
}

fn thresholded_relu(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = attr_float(ctx, "alpha", 1.0)? as f64;
    let x = ctx.required(inputs, 0)?;
    Ok(vec![map_float(
        ctx,
        x,
        |v| if v > alpha { v } else { 0.0 },
    )?])
}

fn shrink(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let lambd = attr_float(ctx, "lambd", 0.5)? as f64;
    let bias = attr_float(ctx, "bias", 0.0)? as f64;
    let x = ctx.required(inputs, 0)?;
    let f = |v: f64| {
        if v < -lambd {
            v + bias
        } else if v > lambd {
            v - bias
        } else {
            0.0
        }
    };
    let out = if x.dtype().is_float() {
        map_float(ctx, x, f)?
    } else {
        with_numeric!(x.dtype(), T => map_typed::<T>(ctx, x, |a| T::from_f64(f(a.to_f64()))),
            dt => Err(ctx.error(format!("dtype {dt} is not supported"))))?
    };
    Ok(vec![out])
}

fn float_predicate(ctx: &OpContext, x: &Tensor, f: impl Fn(f64) -> bool) -> Result<Tensor> {
    if !x.dtype().is_float() {
        return Err(ctx.error(format!("needs a float input, got {}", x.dtype())));
    }
    let v: Vec<bool> = x.to_f64_vec().into_iter().map(f).collect();
    Ok(Tensor::from_vec(x.shape().to_vec(), v)?)
}

fn is_nan(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    Ok(vec![float_predicate(
        ctx,
        ctx.required(inputs, 0)?,
        f64::is_nan,
    )?])
}

fn is_inf(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let neg = attr_int(ctx, "detect_negative", 1)? != 0;
    let pos = attr_int(ctx, "detect_positive", 1)? != 0;
    let x = ctx.required(inputs, 0)?;
    Ok(vec![float_predicate(ctx, x, |v| {
        (pos && v == f64::INFINITY) || (neg && v == f64::NEG_INFINITY)
    })?])
}

#[cfg(test)]
mod tests {
    use crate::ops::testing::{run_op, run_op_at, run_op_err};
    use shrink_graph::{Attr, Node};
    use shrink_tensor::Tensor;

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn erf_and_gelu_match_published_values() {
        // erf(0.5) = 0.5204998778130465, erf(-1.5) = -0.9661051464753108 (A&S tables).
        let out = run_op(
            Node::new("n", "Erf", &["x"], &["y"]),
            &[&f32s(&[0.5, -1.5, 0.0])],
        );
        // f32 Erf runs the kernels crate's vectorised erf, documented to
        // ≤ 3e-7 relative error (not correctly rounded): bound at 1e-6.
        let y = out[0].as_slice::<f32>().unwrap();
        let want = [0.520_499_877_813_046_5_f64, -0.966_105_146_475_310_8, 0.0];
        assert_eq!(y.len(), 3);
        for (&g, &w) in y.iter().zip(&want) {
            assert!((g as f64 - w).abs() <= 1e-6 * w.abs(), "erf: {g} vs {w}");
        }
        // gelu(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429.
        let out = run_op(Node::new("n", "Gelu", &["x"], &["y"]), &[&f32s(&[1.0])]);
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[0.841_344_746_068_542_9_f64 as f32]
        );
    }

    #[test]
    fn clip_takes_attributes_before_opset_11_and_inputs_after() {
        let x = f32s(&[-2.0, 0.5, 3.0]);
        let n = Node::new("n", "Clip", &["x"], &["y"])
            .with("min", Attr::Float(-1.0))
            .with("max", Attr::Float(1.0));
        let out = run_op_at(n, 6, &[&x]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-1.0, 0.5, 1.0]);
        let lo = Tensor::scalar(0.0f32);
        let out = run_op(Node::new("n", "Clip", &["x", "lo"], &["y"]), &[&x, &lo]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.0, 0.5, 3.0]);
        let xi = Tensor::from_vec(vec![3], vec![-100i8, 5, 120]).unwrap();
        let (lo, hi) = (Tensor::scalar(-10i8), Tensor::scalar(10i8));
        let out = run_op(
            Node::new("n", "Clip", &["x", "lo", "hi"], &["y"]),
            &[&xi, &lo, &hi],
        );
        assert_eq!(out[0].as_slice::<i8>().unwrap(), &[-10, 5, 10]);
        let bad = Tensor::scalar(0.0f64);
        let e = run_op_err(Node::new("n", "Clip", &["x", "lo"], &["y"]), &[&x, &bad]);
        assert!(e.contains("dtype"), "{e}");
    }

    #[test]
    fn relu_neg_abs_on_integers_and_floats() {
        let x = Tensor::from_vec(vec![3], vec![-3i32, 0, 4]).unwrap();
        let out = run_op(Node::new("n", "Relu", &["x"], &["y"]), &[&x]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[0, 0, 4]);
        let out = run_op(Node::new("n", "Abs", &["x"], &["y"]), &[&x]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[3, 0, 4]);
        let out = run_op(
            Node::new("n", "Neg", &["x"], &["y"]),
            &[&f32s(&[1.5, -2.0])],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-1.5, 2.0]);
        let e = run_op_err(Node::new("n", "Exp", &["x"], &["y"]), &[&x]);
        assert!(e.contains("float"), "{e}");
    }

    #[test]
    fn sigmoid_hardswish_round() {
        let out = run_op(
            Node::new("n", "Sigmoid", &["x"], &["y"]),
            &[&f32s(&[0.0, 100.0])],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.5, 1.0]);
        let out = run_op(
            Node::new("n", "HardSwish", &["x"], &["y"]),
            &[&f32s(&[-4.0, 1.0, 4.0])],
        );
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            &[0.0, 1.0 * (1.0 / 6.0 + 0.5), 4.0]
        );
        let out = run_op(
            Node::new("n", "Round", &["x"], &["y"]),
            &[&f32s(&[0.5, 1.5, -2.5, 2.6])],
        );
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0.0, 2.0, -2.0, 3.0]);
    }
}
