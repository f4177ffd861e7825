//! Broadcasting binary ops (Add, Sub, Mul, Div, Pow) and Where. Each input
//! gradient is computed at the output's shape, then summed back over the
//! dimensions that input was broadcast along.

use super::broadcast::{for_each, reduce_to, strides_in};
use super::{f32s, grad0, rt, tensor, BackwardCtx, OpRegistry};
use crate::Result;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut OpRegistry) {
    rt(r, "Add", add);
    rt(r, "Sub", sub);
    rt(r, "Mul", mul);
    rt(r, "Div", div);
    rt(r, "Pow", pow);
    rt(r, "Where", where_);
}

/// Gradient of input `which` (0 or 1): `f(a, b, y, g)` at each output
/// element, summed to that input's shape.
fn binary(
    cx: &BackwardCtx,
    grads: &[Option<&Tensor>],
    which: usize,
    f: impl Fn(f32, f32, f32, f32) -> f32,
) -> Result<Option<Tensor>> {
    if !cx.needs(which) {
        return Ok(None);
    }
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let y = cx.output(0)?;
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let (av, bv, yv) = (
        f32s(cx.node, a, "input A")?,
        f32s(cx.node, b, "input B")?,
        f32s(cx.node, y, "output")?,
    );
    let out = y.shape();
    let sb = strides_in(b.shape(), out);
    let sa = strides_in(a.shape(), out);
    // Walk the output once for A's offsets and once for B's (both cheap).
    let mut boff = vec![0usize; g.len()];
    for_each(out, &sb, |o, i| boff[o] = i);
    let mut full = vec![0f32; g.len()];
    for_each(out, &sa, |o, i| {
        full[o] = f(av[i], bv[boff[o]], yv[o], g[o]);
    });
    let target = if which == 0 { a.shape() } else { b.shape() };
    Ok(Some(tensor(target, reduce_to(&full, out, target))?))
}

fn add(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![plain(cx, g, 0, 1.0)?, plain(cx, g, 1, 1.0)?])
}

fn sub(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![plain(cx, g, 0, 1.0)?, plain(cx, g, 1, -1.0)?])
}

/// `sign · dy` summed to input `which`'s shape (Add and Sub need no operands).
fn plain(
    cx: &BackwardCtx,
    grads: &[Option<&Tensor>],
    which: usize,
    sign: f32,
) -> Result<Option<Tensor>> {
    if !cx.needs(which) {
        return Ok(None);
    }
    let g = grad0(cx, grads)?;
    let out = cx.output(0)?.shape();
    let target = cx.input(which)?.shape();
    let gv = f32s(cx.node, g, "output gradient")?;
    let mut v = reduce_to(gv, out, target);
    if sign != 1.0 {
        v.iter_mut().for_each(|x| *x *= sign);
    }
    Ok(Some(tensor(target, v)?))
}

fn mul(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![
        binary(cx, g, 0, |_, b, _, g| g * b)?,
        binary(cx, g, 1, |a, _, _, g| g * a)?,
    ])
}

fn div(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![
        binary(cx, g, 0, |_, b, _, g| g / b)?,
        binary(cx, g, 1, |_, b, y, g| -g * y / b)?,
    ])
}

/// `y = a^b`: `da = g·b·a^(b−1)`, `db = g·y·ln a` (defined for a > 0).
fn pow(cx: &BackwardCtx, g: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![
        binary(cx, g, 0, |a, b, _, g| {
            if b == 0.0 {
                0.0
            } else {
                g * b * a.powf(b - 1.0)
            }
        })?,
        binary(
            cx,
            g,
            1,
            |a, _, y, g| if a > 0.0 { g * y * a.ln() } else { 0.0 },
        )?,
    ])
}

/// `Where(cond, x, y)`: the gradient goes to `x` where `cond`, else to `y`.
fn where_(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let cond = cx.input(0)?;
    let c: Vec<bool> = cond.to_f64_vec().iter().map(|&v| v != 0.0).collect();
    let out = cx.output(0)?.shape().to_vec();
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let sc = strides_in(cond.shape(), &out);
    let mut mask = vec![false; g.len()];
    for_each(&out, &sc, |o, i| mask[o] = c[i]);
    let mut res = vec![None];
    for (which, take) in [(1usize, true), (2, false)] {
        if !cx.needs(which) {
            res.push(None);
            continue;
        }
        let full: Vec<f32> = g
            .iter()
            .zip(&mask)
            .map(|(&g, &m)| if m == take { g } else { 0.0 })
            .collect();
        let target = cx.input(which)?.shape();
        res.push(Some(tensor(target, reduce_to(&full, &out, target))?));
    }
    Ok(res)
}
