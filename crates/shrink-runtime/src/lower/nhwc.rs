//! Channels-last execution of lowered int8 conv chains.
//!
//! A lowered MobileNet runs planar (NCHW) `QConv`s whose depthwise 3×3
//! layers work one small plane at a time. This pass, run once at session
//! build on the lowered graph ([`QdqMode::Integer`] only), finds connected
//! chains of `QConv`s of three kinds, with the `QAdd`s of equal-shaped
//! values between them:
//!
//! - **depthwise 3×3** (pad 1, stride 1 or 2): vectorised over channels,
//!   [`shrink_kernels::int8::nhwc::depthwise3x3`];
//! - **1×1** (stride 1, unpadded, ungrouped): an NHWC activation is a
//!   row-major `[pixels × C]` u8 matrix, so the conv is one VNNI GEMM over
//!   every pixel of the batch ([`shrink_kernels::int8::gemm_bias`]);
//! - **small ungrouped** convs (`C_in·kh·kw ≤` [`SMALL_K`], e.g. a
//!   1-channel 3×3 stem): NHWC im2col rows, then the same GEMM;
//!
//! and, when a chain holds a depthwise conv and at least two convs, runs it
//! channels-last: the convs become `QNhwcConv`, the adds `QNhwcAdd` (the
//! same arithmetic, equal shapes required), and `QNchwToNhwc` /
//! `QNhwcToNchw` byte transposes are put where values enter or leave the
//! chain. Every op keeps the canonical requantisation, so outputs are
//! bit-identical to the planar lowered graph and to the simulation.
//!
//! Only u8 activations (u8 zero points in and out), i8 weights with zero
//! points 0 and no `simulate` attribute are rewritten; anything else stays
//! planar. A registry without these ops gets no rewrite (tests use that to
//! compare both layouts).

use super::qops;
use super::{QdqMode, DOMAIN};
use crate::ops::{OpContext, Registry};
use crate::Result;
use rayon::prelude::*;
use shrink_graph::{Dim, Graph, Node};
use shrink_kernels::cpu::{self, Isa};
use shrink_kernels::epilogue::{Epilogue, Output};
use shrink_kernels::int8::nhwc::{
    self as k8nhwc, Dw3x3, DwScratch, DwTaps, Im2colNhwc, PwTaps, SmallTaps,
};
use shrink_kernels::int8::{self as k8, PackedI8, Requant};
use shrink_tensor::{DType, Tensor, TensorData};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Ops this module registers; the rewrite needs all of them.
pub(super) const OPS: &[&str] = &[
    "QNhwcConv",
    "QNhwcAdd",
    "QNhwcGlobalAveragePool",
    "QNchwToNhwc",
    "QNhwcToNchw",
];

/// Largest `C_in·kh·kw` of a non-depthwise, non-1×1 conv run channels-last
/// (its im2col rows are that many bytes per pixel).
pub const SMALL_K: usize = 64;

pub(super) fn register(r: &mut Registry) {
    r.add(DOMAIN, "QNhwcConv", qnhwc_conv);
    r.add(DOMAIN, "QNhwcAdd", qnhwc_add);
    r.add(DOMAIN, "QNhwcGlobalAveragePool", qnhwc_global_avg);
    r.add(DOMAIN, "QNchwToNhwc", |c, i| layout(c, i, true));
    r.add(DOMAIN, "QNhwcToNchw", |c, i| layout(c, i, false));
}

// ---------------------------------------------------------------- rewrite

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Depthwise,
    Pointwise,
    Small,
}

fn lowered(n: &Node, op: &str) -> bool {
    n.domain == DOMAIN && n.op_type == op && n.attr_int("simulate", 0).is_ok_and(|s| s == 0)
}

/// Input `k` of `n` as an initializer.
fn constant<'g>(g: &'g Graph, n: &Node, k: usize) -> Option<&'g Tensor> {
    g.initializers.get(n.input(k)?)
}

/// Input `k` is a scalar u8 zero point (the NHWC ops' activations are u8).
fn u8_zero(g: &Graph, n: &Node, k: usize) -> bool {
    constant(g, n, k).is_some_and(|t| t.dtype() == DType::U8 && t.len() == 1)
}

/// Stride, pads and group of a conv node, when it has explicit padding and
/// no dilation.
fn conv_attrs(n: &Node) -> Option<(Vec<i64>, Vec<i64>, i64)> {
    let auto_pad = n.attr_str("auto_pad", "NOTSET").ok()?;
    if !(auto_pad == "NOTSET" || auto_pad.is_empty()) {
        return None;
    }
    let ints = |k: &str, d: Vec<i64>| n.attr_ints(k).ok().map(|v| v.map_or(d, <[i64]>::to_vec));
    let dil = ints("dilations", vec![1, 1])?;
    let strides = ints("strides", vec![1, 1])?;
    let pads = ints("pads", vec![0; 4])?;
    let group = n.attr_int("group", 1).ok()?;
    let ok = dil == [1, 1]
        && strides.len() == 2
        && strides.iter().all(|&s| s >= 1)
        && pads.len() == 4
        && pads.iter().all(|&p| p >= 0);
    ok.then_some((strides, pads, group))
}

/// What kind of channels-last conv lowered node `n` is, if any.
fn conv_kind(g: &Graph, n: &Node) -> Option<Kind> {
    if !lowered(n, "QConv") || n.outputs.len() != 1 || n.input(0).is_none() {
        return None;
    }
    if !u8_zero(g, n, 2) || !u8_zero(g, n, 7) {
        return None;
    }
    let w = constant(g, n, 3)?;
    if w.dtype() != DType::I8 || w.rank() != 4 {
        return None;
    }
    if n.input(5).is_some() && constant(g, n, 5)?.to_i64_vec().iter().any(|&z| z != 0) {
        return None;
    }
    if n.input(8).is_some() && constant(g, n, 8)?.dtype() != DType::I32 {
        return None;
    }
    let (strides, pads, group) = conv_attrs(n)?;
    let ws = w.shape();
    if group == 1 && ws[2..] == [1, 1] && strides == [1, 1] && pads == [0; 4] {
        return Some(Kind::Pointwise);
    }
    let dw = ws[1] == 1 && ws[2..] == [3, 3] && group == ws[0] as i64 && pads == [1; 4];
    if dw && (strides == [1, 1] || strides == [2, 2]) {
        return Some(Kind::Depthwise);
    }
    (group == 1 && ws[1] * ws[2] * ws[3] <= SMALL_K).then_some(Kind::Small)
}

/// Shapes of the values that matter (graph inputs, initializers, and what
/// quantize / lowered conv / add nodes make of them). An unknown batch
/// dimension of a graph input becomes a symbol of its own, so values
/// derived from the same input compare equal.
fn value_shapes(g: &Graph) -> HashMap<String, Vec<Dim>> {
    let mut s: HashMap<String, Vec<Dim>> = HashMap::new();
    for i in &g.inputs {
        if let Some(sh) = &i.shape {
            let sh = sh
                .iter()
                .enumerate()
                .map(|(k, d)| match d {
                    Dim::Symbol(x) if x.is_empty() || x == shrink_graph::onnx::UNKNOWN_DIM => {
                        Dim::Symbol(format!("{}#{k}", i.name))
                    }
                    d => d.clone(),
                })
                .collect();
            s.insert(i.name.clone(), sh);
        }
    }
    for (k, t) in &g.initializers {
        s.insert(
            k.clone(),
            t.shape().iter().map(|&d| Dim::Known(d)).collect(),
        );
    }
    for n in &g.nodes {
        let Some(x) = n.input(0).and_then(|v| s.get(v)).cloned() else {
            continue;
        };
        let onnx = n.domain.is_empty() || n.domain == "ai.onnx";
        let out = if onnx
            && matches!(
                n.op_type.as_str(),
                "QuantizeLinear" | "DequantizeLinear" | "Relu" | "Clip"
            ) {
            Some(x)
        } else if n.domain == DOMAIN && n.op_type == "QConv" {
            conv_shape(g, n, &x)
        } else if n.domain == DOMAIN && n.op_type == "QAdd" {
            let b = n.input(3).and_then(|b| s.get(b));
            b.is_some_and(|b| *b == x).then_some(x)
        } else {
            None
        };
        if let (Some(o), Some(name)) = (out, n.outputs.first()) {
            s.insert(name.clone(), o);
        }
    }
    s
}

fn conv_shape(g: &Graph, n: &Node, x: &[Dim]) -> Option<Vec<Dim>> {
    let ws = constant(g, n, 3)?.shape();
    let (strides, pads, _) = conv_attrs(n)?;
    let (Dim::Known(h), Dim::Known(w)) = (x.get(2)?, x.get(3)?) else {
        return None;
    };
    if x.len() != 4 || ws.len() != 4 {
        return None;
    }
    let out = |i: usize, k: usize, s: i64, p0: i64, p1: i64| {
        let span = i as i64 + p0 + p1 - k as i64;
        (span >= 0).then(|| Dim::Known((span / s) as usize + 1))
    };
    Some(vec![
        x[0].clone(),
        Dim::Known(ws[0]),
        out(*h, ws[2], strides[0], pads[0], pads[2])?,
        out(*w, ws[3], strides[1], pads[1], pads[3])?,
    ])
}

/// Rewrites the channels-last chains of a lowered graph (see the module
/// doc); `labels` (per node, the kernel label reported when an op sets
/// none) follow their nodes, and inserted conversions get none.
pub(crate) fn channels_last(
    g: Graph,
    labels: Vec<&'static str>,
    mode: QdqMode,
    registry: &Registry,
) -> (Graph, Vec<&'static str>) {
    let usable =
        mode == QdqMode::Integer && OPS.iter().all(|op| registry.get(DOMAIN, op).is_some());
    if !usable
        || !g
            .nodes
            .iter()
            .any(|n| conv_kind(&g, n) == Some(Kind::Depthwise))
    {
        return (g, labels);
    }
    let shapes = value_shapes(&g);
    let mut kind: HashMap<usize, Option<Kind>> = HashMap::new();
    let mut producer: HashMap<String, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some(k) = conv_kind(&g, n) {
            kind.insert(i, Some(k));
            producer.insert(n.outputs[0].clone(), i);
            continue;
        }
        let add = lowered(n, "QAdd")
            && n.outputs.len() == 1
            && [2, 5, 7].iter().all(|&k| u8_zero(&g, n, k));
        let (Some(a), Some(b)) = (n.input(0), n.input(3)) else {
            continue;
        };
        let equal = shapes
            .get(a)
            .zip(shapes.get(b))
            .is_some_and(|(x, y)| x == y);
        if add && equal && (producer.contains_key(a) || producer.contains_key(b)) {
            kind.insert(i, None);
            producer.insert(n.outputs[0].clone(), i);
        }
    }
    let convs: HashMap<usize, Option<bool>> = kind
        .iter()
        .map(|(&i, k)| (i, k.map(|k| k == Kind::Depthwise)))
        .collect();
    let region = crate::fuse::channels_last_region(&g, &convs, &producer);
    if region.is_empty() {
        return (g, labels);
    }
    let nhwc_values: HashSet<String> = region
        .iter()
        .map(|&i| g.nodes[i].outputs[0].clone())
        .collect();
    let inner = |v: &str| format!("{v}__nhwc");
    // Global average pools of a region value read it channels-last.
    let pools: HashSet<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            lowered(n, "QGlobalAveragePool")
                && u8_zero(&g, n, 2)
                && u8_zero(&g, n, 4)
                && n.input(0).is_some_and(|v| nhwc_values.contains(v))
        })
        .map(|(i, _)| i)
        .collect();
    // Other readers outside the region (and graph outputs) need an NCHW copy.
    let mut outside: HashSet<String> = g
        .outputs
        .iter()
        .filter(|o| nhwc_values.contains(&o.name))
        .map(|o| o.name.clone())
        .collect();
    for (i, n) in g.nodes.iter().enumerate() {
        if !region.contains(&i) && !pools.contains(&i) {
            outside.extend(
                shrink_graph::node_uses(n)
                    .into_iter()
                    .filter(|u| nhwc_values.contains(u)),
            );
        }
    }
    let mut g = g;
    let old = std::mem::take(&mut g.nodes);
    let mut nodes = Vec::with_capacity(old.len() + 8);
    let mut new_labels = Vec::with_capacity(old.len() + 8);
    let mut converted: HashSet<String> = HashSet::new();
    for (i, (mut n, label)) in old.into_iter().zip(labels).enumerate() {
        if pools.contains(&i) {
            n.inputs[0] = inner(&n.inputs[0]);
            n.op_type = "QNhwcGlobalAveragePool".into();
        }
        if !region.contains(&i) {
            nodes.push(n);
            new_labels.push(label);
            continue;
        }
        let conv = n.op_type == "QConv";
        let data: &[usize] = if conv { &[0] } else { &[0, 3] };
        for &k in data {
            let v = n.inputs[k].clone();
            if !nhwc_values.contains(&v) && converted.insert(v.clone()) {
                nodes.push(layout_node(
                    format!("{v}__to_nhwc"),
                    "QNchwToNhwc",
                    &v,
                    &inner(&v),
                ));
                new_labels.push("");
            }
            n.inputs[k] = inner(&v);
        }
        n.op_type = if conv { "QNhwcConv" } else { "QNhwcAdd" }.into();
        let out = n.outputs[0].clone();
        n.outputs[0] = inner(&out);
        nodes.push(n);
        new_labels.push(label);
        if outside.contains(&out) {
            nodes.push(layout_node(
                format!("{out}__to_nchw"),
                "QNhwcToNchw",
                &inner(&out),
                &out,
            ));
            new_labels.push("");
        }
    }
    g.nodes = nodes;
    (g, new_labels)
}

fn layout_node(name: String, op: &str, input: &str, output: &str) -> Node {
    let mut n = Node::new(name, op, &[input], &[output]);
    n.domain = DOMAIN.into();
    n
}

// ---------------------------------------------------------------- ops

fn kerr<'c>(
    ctx: &'c OpContext<'_>,
) -> impl Fn(shrink_kernels::KernelError) -> crate::RuntimeError + 'c {
    move |e| ctx.error(e.to_string())
}

fn dims4(ctx: &OpContext, t: &Tensor, layout: &str) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(t.shape())
        .map_err(|_| ctx.error(format!("X {:?} must be rank 4 ({layout})", t.shape())))
}

/// `QNchwToNhwc` / `QNhwcToNchw`: u8 or i8 codes, image by image.
fn layout(ctx: &OpContext, inputs: &[Option<&Tensor>], to_nhwc: bool) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let d = dims4(ctx, x, if to_nhwc { "NCHW" } else { "NHWC" })?;
    let (c, hw, shape) = if to_nhwc {
        (d[1], d[2] * d[3], vec![d[0], d[2], d[3], d[1]])
    } else {
        (d[3], d[1] * d[2], vec![d[0], d[3], d[1], d[2]])
    };
    let bytes: Cow<[u8]> = match x.data() {
        TensorData::U8(v) => Cow::Borrowed(v.as_slice()),
        TensorData::I8(v) => Cow::Owned(v.iter().map(|&b| b as u8).collect()),
        _ => return Err(ctx.error(format!("X must be u8 or i8, got {}", x.dtype()))),
    };
    ctx.set_kernel(if to_nhwc {
        "int8 layout nchw→nhwc"
    } else {
        "int8 layout nhwc→nchw"
    });
    let mut out = vec![0u8; bytes.len()];
    let img = c * hw;
    if img > 0 {
        for (xi, yi) in bytes.chunks(img).zip(out.chunks_mut(img)) {
            if to_nhwc {
                k8nhwc::nchw_to_nhwc(c, hw, xi, yi)
            } else {
                k8nhwc::nhwc_to_nchw(c, hw, xi, yi)
            }
            .map_err(kerr(ctx))?;
        }
    }
    Ok(vec![qops::bytes_tensor(x.dtype(), shape, out)?])
}

/// `QNhwcAdd`: `QAdd` of two NHWC tensors of one shape (broadcasting would
/// pair the wrong elements in this layout).
fn qnhwc_add(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.required(inputs, 0)?;
    let b = ctx.required(inputs, 3)?;
    if a.shape() != b.shape() {
        return Err(ctx.error(format!(
            "channels-last add needs equal shapes, got {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    ctx.set_kernel(if cpu::best() >= Isa::Avx512 {
        "int8 nhwc add (avx512)"
    } else {
        "int8 nhwc add"
    });
    qops::qadd(ctx, inputs)
}

thread_local! {
    static DW_SCRATCH: std::cell::RefCell<DwScratch> = std::cell::RefCell::new(DwScratch::default());
}

/// Weights prepared once per session.
enum State {
    Depthwise(DwTaps),
    /// `[C_out][kh][kw][C_in]`, for the GEMM over NHWC rows.
    Gemm(PackedI8),
    /// The same order, for the FMA kernel of convs with few taps.
    Small(SmallTaps),
    /// 1×1 convs with `C_in` a multiple of 4 and weight zero point 0.
    Pointwise(PwTaps),
}

/// `QNhwcConv`: `QConv`'s inputs and attributes with X and Y in NHWC.
fn qnhwc_conv(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let l = qops::linear(ctx, inputs, |ws| ws.first().copied().unwrap_or(0))?;
    let [n, h, w, c] = dims4(ctx, l.x, "NHWC")?;
    let g = qops::conv_geom(ctx, &[n, c, h, w], l.w.shape())?;
    let (oh, ow) = g.out_hw();
    let depthwise = g.groups == c
        && g.c_out == c
        && (g.kh, g.kw) == (3, 3)
        && g.pad == (1, 1, 1, 1)
        && g.dilation == (1, 1)
        && (g.stride == (1, 1) || g.stride == (2, 2));
    let pointwise =
        g.groups == 1 && (g.kh, g.kw) == (1, 1) && g.stride == (1, 1) && g.pad == (0, 0, 0, 0);
    if !depthwise && (g.groups != 1 || g.dilation != (1, 1)) {
        return Err(ctx.error(format!(
            "channels-last convs are depthwise 3×3 (pad 1, stride 1 or 2) or ungrouped and \
             undilated, got {g:?}"
        )));
    }
    let st = ctx
        .prepared(|| {
            let Some((wq, zw)) = qops::weights_i8(&l.with_weights()) else {
                return Err(ctx.error("weights do not fit the i8 kernels"));
            };
            if depthwise {
                if zw != 0 {
                    return Err(ctx.error("depthwise weights need zero point 0"));
                }
                return DwTaps::pack(&wq, c)
                    .map(|t| Some(State::Depthwise(t)))
                    .map_err(kerr(ctx));
            }
            // ONNX [C_out][C_in][kh][kw] → [C_out][kh][kw][C_in].
            let (co, kk) = (g.c_out, g.kh * g.kw);
            let mut wr = vec![0i8; co * c * kk];
            for o in 0..co {
                for ci in 0..c {
                    for t in 0..kk {
                        wr[(o * kk + t) * c + ci] = wq[(o * c + ci) * kk + t];
                    }
                }
            }
            if pointwise && zw == 0 && c.is_multiple_of(4) {
                return PwTaps::pack(&wr, co, c)
                    .map(|t| Some(State::Pointwise(t)))
                    .map_err(kerr(ctx));
            }
            if !pointwise && zw == 0 && kk * c <= SMALL_K {
                return SmallTaps::pack(&wr, co, kk * c)
                    .map(|t| Some(State::Small(t)))
                    .map_err(kerr(ctx));
            }
            PackedI8::pack(&wr, co, kk * c, zw)
                .map(|p| Some(State::Gemm(p)))
                .map_err(kerr(ctx))
        })?
        .ok_or_else(|| ctx.error("no prepared weights"))?;
    let (x, za) = qops::as_u8(l.x, l.q.x_zero);
    let shape = vec![n, oh, ow, g.c_out];
    let avx512 = cpu::best() >= Isa::Avx512;
    match &*st {
        State::Depthwise(taps) => {
            ctx.set_kernel(if avx512 {
                "int8 nhwc depthwise 3x3 (avx512)"
            } else {
                "int8 nhwc depthwise 3x3"
            });
            let s = Dw3x3 {
                h,
                w,
                c,
                stride: g.stride.0,
            };
            let rq = Requant {
                mult: &l.q.mult,
                bias: l.q.bias.as_deref(),
                out_zero: l.q.y_zero,
                lo: l.q.lo,
                hi: l.q.hi,
            };
            let (img, oimg) = (h * w * c, oh * ow * c);
            let mut out = vec![0u8; n * oimg];
            if oimg > 0 {
                let one = |b: usize, o: &mut [u8], sc: &mut DwScratch| {
                    k8nhwc::depthwise3x3(&s, &x[b * img..(b + 1) * img], za, taps, &rq, sc, o)
                };
                if rayon::current_num_threads() <= 1 || n < 2 {
                    // One scratch per thread for every depthwise layer: its
                    // buffers are allocated once, not per layer and run.
                    DW_SCRATCH
                        .with_borrow_mut(|sc| {
                            out.chunks_mut(oimg)
                                .enumerate()
                                .try_for_each(|(b, o)| one(b, o, sc))
                        })
                        .map_err(kerr(ctx))?;
                } else {
                    out.par_chunks_mut(oimg)
                        .enumerate()
                        .try_for_each_init(DwScratch::default, |sc, (b, o)| one(b, o, sc))
                        .map_err(kerr(ctx))?;
                }
            }
            Ok(vec![qops::bytes_tensor(l.y_dt, shape, out)?])
        }
        State::Pointwise(taps) => {
            ctx.set_kernel(if avx512 {
                "int8-vnni nhwc conv 1x1 (fused requant)"
            } else {
                "int8 nhwc conv 1x1"
            });
            let rq = Requant {
                mult: &l.q.mult,
                bias: l.q.bias.as_deref(),
                out_zero: l.q.y_zero,
                lo: l.q.lo,
                hi: l.q.hi,
            };
            let m = n * h * w;
            let co = g.c_out;
            let mut out = vec![0u8; m * co];
            let threads = rayon::current_num_threads();
            if threads <= 1 || m < 64 {
                k8nhwc::pointwise(&x, m, za, taps, &rq, &mut out).map_err(kerr(ctx))?;
            } else {
                // About two row blocks per thread, whole multiples of 8 rows.
                let rows = m.div_ceil(2 * threads).div_ceil(8) * 8;
                out.par_chunks_mut(rows * co)
                    .enumerate()
                    .try_for_each(|(bi, o)| {
                        let r0 = bi * rows;
                        let mr = o.len() / co;
                        k8nhwc::pointwise(&x[r0 * c..(r0 + mr) * c], mr, za, taps, &rq, o)
                    })
                    .map_err(kerr(ctx))?;
            }
            Ok(vec![qops::bytes_tensor(l.y_dt, shape, out)?])
        }
        State::Small(taps) => {
            ctx.set_kernel(if avx512 {
                "int8 nhwc small conv (avx512 fma)"
            } else {
                "int8 nhwc small conv"
            });
            let geom = Im2colNhwc {
                h,
                w,
                c,
                kh: g.kh,
                kw: g.kw,
                stride: g.stride,
                pad: g.pad,
            };
            let (img, m1) = (h * w * c, oh * ow);
            let mut out = vec![0u8; n * m1 * g.c_out];
            let rq = Requant {
                mult: &l.q.mult,
                bias: l.q.bias.as_deref(),
                out_zero: l.q.y_zero,
                lo: l.q.lo,
                hi: l.q.hi,
            };
            let mut scratch = Vec::new();
            if m1 > 0 {
                for (b, o) in out.chunks_mut(m1 * g.c_out).enumerate() {
                    let xb = &x[b * img..(b + 1) * img];
                    k8nhwc::small_conv_image(&geom, xb, za, taps, &rq, &mut scratch, o)
                        .map_err(kerr(ctx))?;
                }
            }
            Ok(vec![qops::bytes_tensor(l.y_dt, shape, out)?])
        }
        State::Gemm(packed) => {
            let a: Cow<[u8]> = if pointwise {
                x
            } else {
                let geom = Im2colNhwc {
                    h,
                    w,
                    c,
                    kh: g.kh,
                    kw: g.kw,
                    stride: g.stride,
                    pad: g.pad,
                };
                let img = h * w * c;
                let mut rows = Vec::with_capacity(n * oh * ow * g.kh * g.kw * c);
                for b in 0..n {
                    geom.rows(&x[b * img..(b + 1) * img], za, &mut rows)
                        .map_err(kerr(ctx))?;
                }
                Cow::Owned(rows)
            };
            let label = match (avx512, pointwise) {
                (true, true) => "int8-vnni nhwc conv 1x1",
                (true, false) => "int8-vnni nhwc conv im2col",
                (false, true) => "int8 nhwc conv 1x1",
                (false, false) => "int8 nhwc conv im2col",
            };
            let m = n * oh * ow;
            let ep = Epilogue {
                scale: &l.q.mult,
                bias: None,
                lo: (l.q.lo - l.q.y_zero) as f32,
                hi: (l.q.hi - l.q.y_zero) as f32,
                out_zero: l.q.y_zero,
            };
            let bias = l.q.bias.as_deref();
            let route;
            let y = if l.y_dt == DType::I8 {
                let mut y = vec![0i8; m * g.c_out];
                route = k8::gemm_bias(&a, m, za, packed, bias, &ep, Output::I8(&mut y))
                    .map_err(kerr(ctx))?;
                Tensor::from_vec(shape, y)?
            } else {
                let mut y = vec![0u8; m * g.c_out];
                route = k8::gemm_bias(&a, m, za, packed, bias, &ep, Output::U8(&mut y))
                    .map_err(kerr(ctx))?;
                Tensor::from_vec(shape, y)?
            };
            ctx.set_kernel(route.label(label));
            Ok(vec![y])
        }
    }
}

/// `QNhwcGlobalAveragePool`: `QGlobalAveragePool` (inputs `[x, x_scale,
/// x_zero, y_scale, y_zero]`) of an NHWC tensor, with the same arithmetic:
/// per image and channel the u8 codes are summed (wrapping u32), then
/// requantised with `m = s_x / (s_y·count)`. The output is `[N, C, 1, 1]`
/// as before (a 1×1 plane has one layout).
fn qnhwc_global_avg(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let [n, h, w, c] = dims4(ctx, x, "NHWC")?;
    let scale = |i: usize| -> Result<f32> {
        let t = ctx.required(inputs, i)?;
        match t.as_slice::<f32>() {
            Ok([v]) => Ok(*v),
            _ => Err(ctx.error(format!("input #{i} must be a scalar f32 scale"))),
        }
    };
    let zero = |i: usize| -> Result<i32> {
        let t = ctx.required(inputs, i)?;
        match t.as_slice::<u8>() {
            Ok([v]) => Ok(*v as i32),
            _ => Err(ctx.error(format!("input #{i} must be a scalar u8 zero point"))),
        }
    };
    let (sx, zx, sy, zy) = (scale(1)?, zero(2)?, scale(3)?, zero(4)?);
    let xv = x
        .as_slice::<u8>()
        .map_err(|_| ctx.error(format!("X must be u8, got {}", x.dtype())))?;
    let (lo, hi) = qops::clamp_range(ctx, DType::U8)?;
    let count = h * w;
    if count == 0 {
        return Err(ctx.error("X has an empty plane"));
    }
    ctx.set_kernel("int8 nhwc global avgpool");
    let m = sx / (sy * count as f32);
    let rq = Requant {
        mult: std::slice::from_ref(&m),
        bias: None,
        out_zero: zy,
        lo,
        hi,
    };
    let off = zx.wrapping_mul(count as i32);
    let mut sums = vec![0u32; c];
    let mut y = Vec::with_capacity(n * c);
    for img in xv.chunks_exact(count * c) {
        sums.fill(0);
        for px in img.chunks_exact(c) {
            for (s, &v) in sums.iter_mut().zip(px) {
                *s = s.wrapping_add(v as u32);
            }
        }
        y.extend(
            sums.iter()
                .map(|&s| rq.apply((s as i32).wrapping_sub(off), 0) as u8),
        );
    }
    Ok(vec![Tensor::from_vec(vec![n, c, 1, 1], y)?])
}
