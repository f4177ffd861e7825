//! Elementwise one-input ops. Forward is the runtime's; backward is
//! `dx = dy · f'(x)`, written from `x` or from `y` (whichever is cheaper:
//! sigmoid and tanh from their output).

use super::{f32s, grad0, rt, tensor, BackwardCtx, OpRegistry};
use crate::Result;
use rayon::prelude::*;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut OpRegistry) {
    rt(r, "Relu", relu);
    rt(r, "LeakyRelu", leaky_relu);
    rt(r, "Clip", clip);
    rt(r, "Sigmoid", sigmoid);
    rt(r, "Tanh", tanh);
    rt(r, "HardSigmoid", hard_sigmoid);
    rt(r, "HardSwish", hard_swish);
    rt(r, "Erf", erf);
    rt(r, "Gelu", gelu);
    rt(r, "Sqrt", sqrt);
    rt(r, "Exp", exp);
    rt(r, "Log", log);
    rt(r, "Neg", neg);
    rt(r, "Abs", abs);
    rt(r, "Reciprocal", reciprocal);
    rt(r, "Softplus", softplus);
    rt(r, "Elu", elu);
}

/// Below this many elements the closures run on one thread.
const PAR_MIN: usize = 1 << 15;

/// `dx[i] = f(x[i], y[i], dy[i])`, threaded for big tensors.
fn map(
    cx: &BackwardCtx,
    grads: &[Option<&Tensor>],
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) -> Result<Vec<Option<Tensor>>> {
    if !cx.needs(0) {
        return Ok(vec![None]);
    }
    let x = cx.input(0)?;
    let xs = f32s(cx.node, x, "input")?;
    let ys = f32s(cx.node, cx.output(0)?, "output")?;
    let gs = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let mut dx = vec![0f32; xs.len()];
    if xs.len() >= PAR_MIN {
        dx.par_chunks_mut(4096)
            .zip(xs.par_chunks(4096))
            .zip(ys.par_chunks(4096).zip(gs.par_chunks(4096)))
            .for_each(|((d, x), (y, g))| {
                for i in 0..d.len() {
                    d[i] = f(x[i], y[i], g[i]);
                }
            });
    } else {
        for i in 0..xs.len() {
            dx[i] = f(xs[i], ys[i], gs[i]);
        }
    }
    Ok(vec![Some(tensor(x.shape(), dx)?)])
}

fn relu(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |x, _, g| if x > 0.0 { g } else { 0.0 })
}

fn leaky_relu(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let alpha = cx.node.attr_float("alpha", 0.01)?;
    map(cx, g, move |x, _, g| if x > 0.0 { g } else { alpha * g })
}

/// Clip passes the gradient strictly inside `(min, max)` (PyTorch's
/// hardtanh/ReLU6 convention); bounds get none (they are constants).
fn clip(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let (lo, hi) = if cx.opset < 11 {
        (
            cx.node.attr_float("min", f32::NEG_INFINITY)?,
            cx.node.attr_float("max", f32::INFINITY)?,
        )
    } else {
        let bound = |i: usize, d: f32| -> Result<f32> {
            match cx.inputs.get(i).copied().flatten() {
                Some(t) => Ok(f32s(cx.node, t, "clip bound")?
                    .first()
                    .copied()
                    .unwrap_or(d)),
                None => Ok(d),
            }
        };
        (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
    };
    let mut r = map(cx, g, move |x, _, g| if x > lo && x < hi { g } else { 0.0 })?;
    r.resize(cx.inputs.len(), None);
    Ok(r)
}

fn sigmoid(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |_, y, g| g * y * (1.0 - y))
}

fn tanh(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |_, y, g| g * (1.0 - y * y))
}

fn hard_sigmoid(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let alpha = cx.node.attr_float("alpha", 0.2)?;
    let beta = cx.node.attr_float("beta", 0.5)?;
    map(cx, g, move |x, _, g| {
        let v = alpha * x + beta;
        if v > 0.0 && v < 1.0 {
            g * alpha
        } else {
            0.0
        }
    })
}

/// HardSwish `x·max(0, min(1, x/6 + 1/2))`: slope `x/3 + 1/2` on (−3, 3).
fn hard_swish(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |x, _, g| {
        if x <= -3.0 {
            0.0
        } else if x >= 3.0 {
            g
        } else {
            g * (x / 3.0 + 0.5)
        }
    })
}

const FRAC_2_SQRT_PI: f32 = std::f32::consts::FRAC_2_SQRT_PI;

fn erf(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |x, _, g| g * FRAC_2_SQRT_PI * (-x * x).exp())
}

/// Gelu (opset 20): exact `x·Φ(x)` or the tanh approximation.
fn gelu(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let approx = cx.node.attr_str("approximate", "none")? == "tanh";
    if approx {
        let c = (2.0f32 / std::f32::consts::PI).sqrt();
        map(cx, g, move |x, _, g| {
            let u = c * (x + 0.044715 * x * x * x);
            let t = u.tanh();
            let du = c * (1.0 + 3.0 * 0.044715 * x * x);
            g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
        })
    } else {
        map(cx, g, |x, _, g| {
            let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
            g * (cdf + x * pdf)
        })
    }
}

fn sqrt(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |_, y, g| g * 0.5 / y)
}

fn exp(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |_, y, g| g * y)
}

fn log(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |x, _, g| g / x)
}

fn neg(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |_, _, g| -g)
}

fn abs(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |x, _, g| {
        if x > 0.0 {
            g
        } else if x < 0.0 {
            -g
        } else {
            0.0
        }
    })
}

fn reciprocal(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |_, y, g| -g * y * y)
}

fn softplus(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    map(cx, g, |x, _, g| g / (1.0 + (-x).exp()))
}

fn elu(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let alpha = cx.node.attr_float("alpha", 1.0)?;
    map(
        cx,
        g,
        move |x, y, g| if x > 0.0 { g } else { g * (y + alpha) },
    )
}
