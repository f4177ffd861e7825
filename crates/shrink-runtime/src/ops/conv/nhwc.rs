//! Channels-last convs: `ai.shrink::NhwcConv` and the layout conversions
//! `ai.shrink::NchwToNhwc` / `ai.shrink::NhwcToNchw` that the session's
//! layout pass ([`crate::fuse`]) puts around chains of 1×1 and depthwise
//! 3×3 convs (MobileNet's inverted-residual blocks).
//!
//! `NhwcConv` takes Conv's (and `FusedConv`'s) inputs and attributes, with
//! X and Y in `[N, H, W, C]` order and the weights in ONNX order; input 3,
//! optional, is `Z` (Y's shape), added before the activation as in ONNX
//! Runtime's `FusedConv`: `Y = act(conv(X, W) + B + Z)`. 1×1 stride-1
//! convs run as one row-major GEMM over all positions of the batch and
//! depthwise 3×3 convs vectorise over channels (see
//! `shrink_kernels::nhwc`); any other conv is converted to NCHW, run by the
//! ordinary Conv path and converted back, so the op accepts every Conv.

use super::super::linalg::{float_tensor, floats};
use super::super::{OpContext, Registry};
use super::{conv_dims, conv_f32, dw3x3_shape, fused_activation, Activation, PARALLEL_WORK};
use crate::Result;
use rayon::prelude::*;
use shrink_kernels::nhwc::{self, DwWeights, PwWeights};
use shrink_tensor::Tensor;

use crate::fuse::LAYOUT_DOMAIN as DOMAIN;

pub(in super::super) fn register(r: &mut Registry) {
    r.add(DOMAIN, "NhwcConv", nhwc_conv);
    r.add(DOMAIN, "NchwToNhwc", nchw_to_nhwc);
    r.add(DOMAIN, "NhwcToNchw", nhwc_to_nchw);
}

/// A rank-4 input's dims, or an error naming the expected layout.
fn dims4(ctx: &OpContext, t: &Tensor, layout: &str) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(t.shape())
        .map_err(|_| ctx.error(format!("X {:?} must be rank 4 ({layout})", t.shape())))
}

fn nchw_to_nhwc(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let [n, c, h, w] = dims4(ctx, x, "NCHW")?;
    let xv = floats(ctx, x, "X")?;
    let mut y = ctx.output_f32(xv.len());
    let img = c * h * w;
    for (xi, yi) in xv.chunks(img.max(1)).zip(y.chunks_mut(img.max(1))) {
        nhwc::nchw_to_nhwc(c, h * w, xi, yi).map_err(|e| ctx.error(e.to_string()))?;
    }
    Ok(vec![float_tensor(x.dtype(), vec![n, h, w, c], y)?])
}

fn nhwc_to_nchw(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let [n, h, w, c] = dims4(ctx, x, "NHWC")?;
    let xv = floats(ctx, x, "X")?;
    let mut y = ctx.output_f32(xv.len());
    let img = c * h * w;
    for (xi, yi) in xv.chunks(img.max(1)).zip(y.chunks_mut(img.max(1))) {
        nhwc::nhwc_to_nchw(c, h * w, xi, yi).map_err(|e| ctx.error(e.to_string()))?;
    }
    Ok(vec![float_tensor(x.dtype(), vec![n, c, h, w], y)?])
}

/// Weights repacked once per session for the NHWC kernels.
enum Packed {
    Pointwise(PwWeights),
    Depthwise(DwWeights),
}

fn nhwc_conv(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let w = ctx.required(inputs, 1)?;
    let [n, h, wd, c] = dims4(ctx, x, "NHWC")?;
    let d = conv_dims(ctx, &[n, c, h, wd], w.shape())?;
    let win = &d.win;
    if win.rank != 2 {
        return Err(ctx.error(format!("W {:?}: NhwcConv is 2-D", w.shape())));
    }
    let (m, oh, ow) = (d.out_channels, win.output[1], win.output[2]);
    let out_shape = vec![n, oh, ow, m];
    let act = fused_activation(ctx)?;
    let b = inputs.get(2).copied().flatten();
    if let Some(b) = b {
        if b.len() != m {
            return Err(ctx.error(format!("B has {} elements, expected {m}", b.len())));
        }
    }
    let z = inputs.get(3).copied().flatten();
    if let Some(z) = z {
        if z.shape() != out_shape.as_slice() {
            return Err(ctx.error(format!(
                "Z {:?} must have the output's shape {out_shape:?}",
                z.shape()
            )));
        }
    }
    let pointwise = d.group == 1 && win.is_pointwise();
    let dw = (d.group == c && d.group == m)
        .then(|| dw3x3_shape(win))
        .flatten();
    if !pointwise && dw.is_none() {
        return fallback(ctx, x, w, b, z, &d, act);
    }
    let xv = floats(ctx, x, "X")?;
    let build = || -> Result<Packed> {
        let wv = floats(ctx, w, "W")?;
        let bv = b.map(|b| floats(ctx, b, "B")).transpose()?;
        let r = if pointwise {
            PwWeights::new(m, c, &wv, bv.as_deref()).map(Packed::Pointwise)
        } else {
            DwWeights::new(c, &wv, bv.as_deref()).map(Packed::Depthwise)
        };
        r.map_err(|e| ctx.error(e.to_string()))
    };
    let constant = ctx.is_constant_input(1) && (b.is_none() || ctx.is_constant_input(2));
    let cached = if constant {
        ctx.prepared(|| build().map(Some))?
    } else {
        None
    };
    let owned;
    let packed: &Packed = match &cached {
        Some(p) => p,
        None => {
            owned = build()?;
            &owned
        }
    };
    let zv = z.map(|z| floats(ctx, z, "Z")).transpose()?;
    let len = n * oh * ow * m;
    let mut y = ctx.output_f32(len);
    let work = len * (c / d.group) * win.kernel_size();
    let parallel = ctx.threads > 1 && work >= PARALLEL_WORK;
    let err = |e: shrink_kernels::KernelError| ctx.error(e.to_string());
    match packed {
        Packed::Pointwise(p) => {
            ctx.set_kernel("nhwc-1x1");
            let rows = n * h * wd;
            if parallel {
                // Whole rows per task, a few tasks per thread.
                let per = rows.div_ceil(ctx.threads * 4).max(16);
                y.par_chunks_mut(per * m)
                    .enumerate()
                    .try_for_each(|(i, yc)| {
                        let r0 = i * per;
                        let nr = yc.len() / m;
                        let zc = zv.as_deref().map(|z| &z[r0 * m..(r0 + nr) * m]);
                        nhwc::pointwise(p, nr, &xv[r0 * c..(r0 + nr) * c], zc, act.lo, act.hi, yc)
                    })
                    .map_err(err)?;
            } else {
                nhwc::pointwise(p, rows, &xv, zv.as_deref(), act.lo, act.hi, &mut y)
                    .map_err(err)?;
            }
        }
        Packed::Depthwise(p) => {
            ctx.set_kernel("nhwc-dw3x3");
            let Some(s) = dw else {
                return Err(ctx.error("depthwise geometry lost (bug)"));
            };
            let with_z = zv.is_some();
            // With Z the clamp must follow the sum: run unclamped first.
            let (lo, hi) = if with_z {
                (Activation::NONE.lo, Activation::NONE.hi)
            } else {
                (act.lo, act.hi)
            };
            let (isz, osz) = (h * wd * c, oh * ow * m);
            if parallel && n > 1 {
                y.par_chunks_mut(osz)
                    .zip(xv.par_chunks(isz))
                    .try_for_each(|(yi, xi)| nhwc::depthwise(&s, 1, p, lo, hi, xi, yi))
                    .map_err(err)?;
            } else {
                nhwc::depthwise(&s, n, p, lo, hi, &xv, &mut y).map_err(err)?;
            }
            if let Some(zv) = &zv {
                y.iter_mut().zip(zv.iter()).for_each(|(v, z)| *v += z);
                act.apply(&mut y);
            }
        }
    }
    Ok(vec![float_tensor(x.dtype(), out_shape, y)?])
}

/// Any other conv: NHWC → NCHW, the ordinary conv path, → NHWC.
fn fallback(
    ctx: &OpContext,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    z: Option<&Tensor>,
    d: &super::ConvDims,
    act: Activation,
) -> Result<Vec<Tensor>> {
    ctx.set_kernel("nhwc-via-nchw");
    let err = |e: shrink_kernels::KernelError| ctx.error(e.to_string());
    let (n, c, m) = (d.batch, d.in_channels, d.out_channels);
    let (isz, osz) = (d.win.input_size(), d.win.output_size());
    let xv = floats(ctx, x, "X")?;
    let mut xc = vec![0f32; xv.len()];
    for (s, t) in xv.chunks(c * isz).zip(xc.chunks_mut(c * isz)) {
        nhwc::nhwc_to_nchw(c, isz, s, t).map_err(err)?;
    }
    let wv = floats(ctx, w, "W")?;
    let bv = b.map(|b| floats(ctx, b, "B")).transpose()?;
    let inner = if z.is_some() { Activation::NONE } else { act };
    let yc = conv_f32(
        &xc,
        &wv,
        bv.as_deref(),
        d,
        ctx.threads,
        inner,
        vec![0f32; n * m * osz],
    );
    let mut y = ctx.output_f32(yc.len());
    for (s, t) in yc.chunks(m * osz).zip(y.chunks_mut(m * osz)) {
        nhwc::nchw_to_nhwc(m, osz, s, t).map_err(err)?;
    }
    if let Some(z) = z {
        let zv = floats(ctx, z, "Z")?;
        y.iter_mut().zip(zv.iter()).for_each(|(v, z)| *v += z);
        act.apply(&mut y);
    }
    let (oh, ow) = (d.win.output[1], d.win.output[2]);
    Ok(vec![float_tensor(x.dtype(), vec![n, oh, ow, m], y)?])
}

#[cfg(test)]
mod tests {
    use super::super::conv;
    use super::*;
    use shrink_graph::{Attr, Node};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(7);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn t(shape: &[usize], seed: u32) -> Tensor {
        Tensor::from_vec(shape.to_vec(), data(shape.iter().product(), seed)).unwrap()
    }

    fn permute(ctx: &OpContext, op: OpFn, x: &Tensor) -> Tensor {
        op(ctx, &[Some(x)]).unwrap().remove(0)
    }

    type OpFn = fn(&OpContext, &[Option<&Tensor>]) -> Result<Vec<Tensor>>;

    /// NhwcConv on transposed data equals Conv (+ Z, then the clamp) on the
    /// NCHW data: 1×1 (channel tails, blocks), depthwise stride 2 with Z,
    /// and a dense 3×3 conv that takes the fallback path.
    #[test]
    fn nhwc_conv_matches_conv() {
        let plain = Node::new("c", "Conv", &["x", "w", "b"], &["y"]);
        // (n, c, h, w, m, k, group, stride, pad)
        let cases = [
            (2, 16, 5, 7, 24, 1, 1, 1, 0),
            (3, 20, 7, 7, 20, 3, 20, 2, 1),
            (1, 96, 4, 4, 96, 3, 96, 1, 1),
            (2, 3, 6, 5, 5, 3, 1, 1, 1),
        ];
        for (i, &(n, c, h, w, m, k, group, s, p)) in cases.iter().enumerate() {
            let node = |op: &str| {
                plain
                    .clone()
                    .with("group", Attr::Int(group as i64))
                    .with("strides", Attr::Ints(vec![s as i64; 2]))
                    .with("pads", Attr::Ints(vec![p as i64; 4]))
                    .with("activation", Attr::String("Clip".into()))
                    .with("activation_params", Attr::Floats(vec![-0.5, 0.7]))
                    .with("op", Attr::String(op.into()))
            };
            let (nc, nh) = (node("nchw"), node("nhwc"));
            let (cc, ch) = (
                OpContext::standalone(&nc, 17, 1),
                OpContext::standalone(&nh, 17, 1),
            );
            let x = t(&[n, c, h, w], i as u32);
            let wt = t(&[m, c / group, k, k], 10 + i as u32);
            let b = t(&[m], 20 + i as u32);
            let want = conv(&cc, &[Some(&x), Some(&wt), Some(&b)])
                .unwrap()
                .remove(0);
            let z = t(want.shape(), 30 + i as u32);
            let want_z = conv(&cc, &[Some(&x), Some(&wt), Some(&b), Some(&z)])
                .unwrap()
                .remove(0);
            let xh = permute(&ch, nchw_to_nhwc, &x);
            let zh = permute(&ch, nchw_to_nhwc, &z);
            for threads in [1, 2] {
                let ch = OpContext::standalone(&nh, 17, threads);
                for (zin, want) in [(None, &want), (Some(&zh), &want_z)] {
                    let got = nhwc_conv(&ch, &[Some(&xh), Some(&wt), Some(&b), zin])
                        .unwrap()
                        .remove(0);
                    let got = permute(&ch, nhwc_to_nchw, &got);
                    assert_eq!(got.shape(), want.shape(), "case {i}");
                    let (g, e) = (
                        got.as_slice::<f32>().unwrap(),
                        want.as_slice::<f32>().unwrap(),
                    );
                    for (q, (a, b)) in g.iter().zip(e).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4,
                            "case {i} z {} at {q}: {a} vs {b}",
                            zin.is_some()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let node = Node::new("c", "NhwcConv", &["x", "w"], &["y"]);
        let ctx = OpContext::standalone(&node, 17, 1);
        let w = t(&[4, 2, 1, 1], 1);
        let x3 = t(&[1, 3, 2], 2);
        let e = nhwc_conv(&ctx, &[Some(&x3), Some(&w)]).unwrap_err();
        assert!(e.to_string().contains("rank 4"), "{e}");
        let x = t(&[1, 3, 3, 2], 3);
        let z = t(&[1, 3, 3, 5], 4);
        let e = nhwc_conv(&ctx, &[Some(&x), Some(&w), None, Some(&z)]).unwrap_err();
        assert!(e.to_string().contains("Z"), "{e}");
        let x = t(&[1, 3, 3, 5], 3);
        assert!(nhwc_conv(&ctx, &[Some(&x), Some(&w)]).is_err());
    }
}
