//! Pooling: MaxPool (with Indices), AveragePool, LpPool and their global forms.
//!
//! All share [`Window`] with the convolutions (1-D to 3-D, auto_pad, ceil_mode
//! with ONNX Runtime's rule that a window may not start in the end padding).
//! Integer inputs of MaxPool (u8/i8 …) go through f32, which represents every
//! 8- and 16-bit value exactly.

use super::conv::{window, Rounding, Window};
use super::linalg::{float_tensor, floats};
use super::{OpContext, Registry};
use crate::Result;
use rayon::prelude::*;
use shrink_kernels::pool as shrink_pool;
use shrink_tensor::{DType, Tensor};
use std::borrow::Cow;

pub(super) fn register(r: &mut Registry) {
    r.add("", "MaxPool", max_pool);
    r.add("", "AveragePool", average_pool);
    r.add("", "LpPool", lp_pool);
    r.add("", "GlobalAveragePool", global_average_pool);
    r.add("", "GlobalMaxPool", global_max_pool);
    r.add("", "GlobalLpPool", global_lp_pool);
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Max,
    /// Average; `true` counts padding taps in the divisor.
    Average(bool),
    /// p-norm of the window.
    Lp(f32),
}

/// Planes worth of work below which pooling stays on one thread.
const PARALLEL_ELEMS: usize = 1 << 16;

/// Pools every N×C plane of `x`; returns values and (for Max) the flat input
/// index of each maximum, row-major or (`column_major`) column-major within
/// the spatial dims, offset by the plane's start as ONNX specifies.
fn pool(
    x: &[f32],
    planes: usize,
    win: &Window,
    kind: Kind,
    column_major: bool,
) -> (Vec<f32>, Vec<i64>) {
    let in_sz = win.input_size();
    let out_sz = win.output_size();
    let mut y = vec![0f32; planes * out_sz];
    let mut idx = vec![
        0i64;
        if kind == Kind::Max {
            planes * out_sz
        } else {
            0
        }
    ];
    let [id, ih, iw] = win.input;
    // Per dim and output position: the taps landing inside the input, and
    // the first input coordinate; computed once, shared by every plane.
    let spans: Vec<Vec<Span>> = (0..3)
        .map(|d| (0..win.output[d]).map(|o| span(win, d, o)).collect())
        .collect();
    // With count_include_pad every tap counts: padding and, as ONNX's
    // reference pads up to the last ceil_mode window, taps past the end too.
    let full = win.kernel_size() as f32;
    let [dd, dh, dw] = win.dilation;
    let one = |p: usize, yp: &mut [f32], ip: &mut [i64]| {
        let xp = &x[p * in_sz..(p + 1) * in_sz];
        let mut o = 0;
        for sz in &spans[0] {
            for sy in &spans[1] {
                for sx in &spans[2] {
                    let mut best = f32::NEG_INFINITY;
                    let mut best_at = usize::MAX;
                    let mut sum = 0f32;
                    for a in 0..sz.taps {
                        let zi = sz.first + a * dd;
                        for b in 0..sy.taps {
                            let yi = sy.first + b * dh;
                            let row = (zi * ih + yi) * iw;
                            let r = &xp[row + sx.first..];
                            match kind {
                                Kind::Max => {
                                    for e in 0..sx.taps {
                                        let v = r[e * dw];
                                        if best_at == usize::MAX || v > best {
                                            best = v;
                                            let xi = sx.first + e * dw;
                                            best_at = if column_major {
                                                zi + yi * id + xi * id * ih
                                            } else {
                                                row + xi
                                            };
                                        }
                                    }
                                }
                                Kind::Average(_) => {
                                    for e in 0..sx.taps {
                                        sum += r[e * dw];
                                    }
                                }
                                Kind::Lp(pw) => {
                                    for e in 0..sx.taps {
                                        sum += r[e * dw].abs().powf(pw);
                                    }
                                }
                            }
                        }
                    }
                    let count = sz.taps * sy.taps * sx.taps;
                    yp[o] = match kind {
                        Kind::Max => best,
                        Kind::Average(true) => sum / full,
                        Kind::Average(false) if count == 0 => 0.0,
                        Kind::Average(false) => sum / count as f32,
                        Kind::Lp(pw) => sum.powf(1.0 / pw),
                    };
                    if kind == Kind::Max {
                        ip[o] = if best_at == usize::MAX {
                            -1
                        } else {
                            (p * in_sz + best_at) as i64
                        };
                    }
                    o += 1;
                }
            }
        }
    };
    let parallel = planes > 1 && planes * out_sz * win.kernel_size() >= PARALLEL_ELEMS;
    if kind == Kind::Max {
        if parallel {
            y.par_chunks_mut(out_sz)
                .zip(idx.par_chunks_mut(out_sz))
                .enumerate()
                .for_each(|(p, (yp, ip))| one(p, yp, ip));
        } else {
            for (p, (yp, ip)) in y.chunks_mut(out_sz).zip(idx.chunks_mut(out_sz)).enumerate() {
                one(p, yp, ip);
            }
        }
    } else if parallel {
        y.par_chunks_mut(out_sz)
            .enumerate()
            .for_each(|(p, yp)| one(p, yp, &mut []));
    } else {
        for (p, yp) in y.chunks_mut(out_sz).enumerate() {
            one(p, yp, &mut []);
        }
    }
    (y, idx)
}

/// The taps of one window along one dim that land inside the input: `taps`
/// consecutive (dilated) taps starting at input coordinate `first`.
#[derive(Clone, Copy)]
struct Span {
    first: usize,
    taps: usize,
}

fn span(win: &Window, d: usize, o: usize) -> Span {
    let start = (o * win.stride[d]) as isize - win.pad_begin[d] as isize;
    let dil = win.dilation[d] as isize;
    let n = win.input[d] as isize;
    // First tap k with start + k·dil ≥ 0, and one past the last with < n.
    let k0 = if start >= 0 {
        0
    } else {
        (-start + dil - 1) / dil
    };
    let k1 = if n - start <= 0 {
        0
    } else {
        (n - start + dil - 1) / dil
    };
    let k1 = k1.min(win.kernel[d] as isize);
    if k1 <= k0 {
        return Span { first: 0, taps: 0 };
    }
    Span {
        first: (start + k0 * dil) as usize,
        taps: (k1 - k0) as usize,
    }
}

/// The pooled tensor's float view: floats as-is, integers through f32.
fn pool_input<'t>(ctx: &OpContext, x: &'t Tensor, allow_int: bool) -> Result<Cow<'t, [f32]>> {
    match x.dtype() {
        DType::I8 | DType::U8 | DType::I16 | DType::U16 if allow_int => {
            Ok(Cow::Owned(x.to_f32_vec()))
        }
        _ => floats(ctx, x, "X"),
    }
}

fn pool_output(dtype: DType, shape: Vec<usize>, y: Vec<f32>) -> Result<Tensor> {
    if dtype.is_int() {
        // Max of integers is one of them: the f32 round trip is exact.
        Ok(Tensor::from_vec(shape, y)?.cast(dtype))
    } else {
        float_tensor(dtype, shape, y)
    }
}

/// f32 max pooling over 2-D undilated windows whose indices nobody asked
/// for, on the kernels crate's plain window loop (the general path also
/// tracks the argmax of every window). `None` when the case does not fit.
fn fast_max_pool_2d(
    ctx: &OpContext,
    x: &Tensor,
    win: &Window,
    kind: Kind,
) -> Result<Option<Tensor>> {
    let wants_indices = ctx.node.outputs.get(1).is_some_and(|o| !o.is_empty());
    let Ok(xv) = x.as_slice::<f32>() else {
        return Ok(None);
    };
    if kind != Kind::Max
        || wants_indices
        || win.input[0] != 1
        || win.kernel[0] != 1
        || win.output[0] != 1
        || win.dilation != [1; 3]
    {
        return Ok(None);
    }
    let xs = x.shape();
    let p = shrink_pool::Pool2d {
        planes: xs[0] * xs[1],
        h: win.input[1],
        w: win.input[2],
        kh: win.kernel[1],
        kw: win.kernel[2],
        stride: (win.stride[1], win.stride[2]),
        pad: (
            win.pad_begin[1],
            win.pad_begin[2],
            win.pad_end[1],
            win.pad_end[2],
        ),
    };
    if p.pad.0 >= p.kh
        || p.pad.1 >= p.kw
        || p.h + p.pad.0 + p.pad.2 < p.kh
        || p.w + p.pad.1 + p.pad.3 < p.kw
        || p.out_hw() != (win.output[1], win.output[2])
    {
        return Ok(None);
    }
    // maxpool writes every output: a recycled buffer needs no clearing.
    let mut y = ctx.output_f32(p.planes * win.output[1] * win.output[2]);
    shrink_pool::maxpool_f32(&p, xv, &mut y).map_err(|e| ctx.error(e.to_string()))?;
    let mut shape = xs[..2].to_vec();
    shape.extend(win.output_dims());
    Ok(Some(Tensor::from_vec(shape, y)?))
}

fn windowed(ctx: &OpContext, inputs: &[Option<&Tensor>], kind: Kind) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(ctx.error(format!("X {xs:?} must have rank ≥ 3 (N, C, spatial…)")));
    }
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let kernel: Vec<usize> = match ctx.node.attr_ints("kernel_shape").map_err(attr)? {
        Some(k) if k.iter().all(|&v| v > 0) => k.iter().map(|&v| v as usize).collect(),
        _ => return Err(ctx.error("kernel_shape is required and must be positive")),
    };
    let ceil = ctx.node.attr_int("ceil_mode", 0).map_err(attr)? != 0;
    let win = window(
        ctx,
        &xs[2..],
        &kernel,
        if ceil {
            Rounding::Ceil
        } else {
            Rounding::Floor
        },
    )?;
    let column_major = ctx.node.attr_int("storage_order", 0).map_err(attr)? != 0;
    if let Some(y) = fast_max_pool_2d(ctx, x, &win, kind)? {
        return Ok(vec![y]);
    }
    let xv = pool_input(ctx, x, kind == Kind::Max)?;
    let (y, idx) = pool(&xv, xs[0] * xs[1], &win, kind, column_major);
    let mut shape = xs[..2].to_vec();
    shape.extend(win.output_dims());
    let mut out = vec![pool_output(x.dtype(), shape.clone(), y)?];
    if kind == Kind::Max {
        out.push(Tensor::from_vec(shape, idx)?);
    }
    Ok(out)
}

fn max_pool(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    windowed(ctx, inputs, Kind::Max)
}

fn average_pool(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let include = ctx
        .node
        .attr_int("count_include_pad", 0)
        .map_err(|e| ctx.error(e.to_string()))?
        != 0;
    windowed(ctx, inputs, Kind::Average(include))
}

fn lp_pool(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let p = ctx
        .node
        .attr_int("p", 2)
        .map_err(|e| ctx.error(e.to_string()))?;
    windowed(ctx, inputs, Kind::Lp(p as f32))
}

/// Reduces every N×C plane to one value.
fn global(ctx: &OpContext, inputs: &[Option<&Tensor>], kind: Kind) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(ctx.error(format!("X {xs:?} must have rank ≥ 3 (N, C, spatial…)")));
    }
    let xv = pool_input(ctx, x, kind == Kind::Max)?;
    let plane: usize = xs[2..].iter().product();
    let planes = xs[0] * xs[1];
    let y: Vec<f32> = (0..planes)
        .map(|p| {
            let v = &xv[p * plane..(p + 1) * plane];
            match kind {
                Kind::Max => v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                Kind::Average(_) => v.iter().sum::<f32>() / plane as f32,
                Kind::Lp(pw) => v
                    .iter()
                    .map(|x| x.abs().powf(pw))
                    .sum::<f32>()
                    .powf(1.0 / pw),
            }
        })
        .collect();
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    Ok(vec![pool_output(x.dtype(), shape, y)?])
}

fn global_average_pool(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    global(ctx, inputs, Kind::Average(false))
}

fn global_max_pool(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    global(ctx, inputs, Kind::Max)
}

fn global_lp_pool(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let p = ctx
        .node
        .attr_int("p", 2)
        .map_err(|e| ctx.error(e.to_string()))?;
    global(ctx, inputs, Kind::Lp(p as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win2(h: usize, w: usize, k: usize, s: usize, p: usize, out: [usize; 2]) -> Window {
        Window {
            rank: 2,
            input: [1, h, w],
            kernel: [1, k, k],
            stride: [1, s, s],
            dilation: [1, 1, 1],
            pad_begin: [0, p, p],
            pad_end: [0, p, p],
            output: [1, out[0], out[1]],
        }
    }

    #[test]
    fn max_pool_picks_first_maximum_and_its_index() {
        // 4×4 input, 2×2 windows, stride 2 (hand-checked).
        let x: Vec<f32> = vec![
            1., 3., 2., 2., //
            4., 0., 2., 1., //
            5., 5., 0., 9., //
            5., 1., 8., 7.,
        ];
        let (y, i) = pool(&x, 1, &win2(4, 4, 2, 2, 0, [2, 2]), Kind::Max, false);
        assert_eq!(y, vec![4., 2., 5., 9.]);
        assert_eq!(i, vec![4, 2, 8, 11]);
        let (_, ic) = pool(&x, 1, &win2(4, 4, 2, 2, 0, [2, 2]), Kind::Max, true);
        // Column-major: index = h + w·H.
        assert_eq!(ic, vec![1, 2 * 4, 2, 3 * 4 + 2]);
    }

    #[test]
    fn average_pool_divisor_follows_count_include_pad() {
        // 2×2 input of ones, 3×3 window, pad 1: every window sees 4 real taps.
        let x = vec![1f32; 4];
        let w = win2(2, 2, 3, 1, 1, [2, 2]);
        let (y, _) = pool(&x, 1, &w, Kind::Average(false), false);
        assert_eq!(y, vec![1.0; 4]);
        let (y, _) = pool(&x, 1, &w, Kind::Average(true), false);
        assert_eq!(y, vec![4.0 / 9.0; 4]);
    }
}
