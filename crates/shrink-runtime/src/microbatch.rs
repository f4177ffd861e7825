//! Running a large batch as a sequence of small ones (micro-batching).
//!
//! A conv net run layer by layer over a whole batch writes every
//! intermediate for all images before the next layer reads it back: at
//! batch 256 MobileNetV2-tiny's expand conv writes 51 MB that the depthwise
//! conv then re-reads from memory, and the 1-thread run is memory bound
//! (≈ 4100 images/s at batch 256 against ≈ 6000 at batch 16, the same
//! kernels). When every op of the planned graph treats the images of a batch
//! independently, the session instead runs the graph over slices of
//! [`CHUNK_PER_THREAD`]·threads images, so each slice's intermediates stay
//! in the core's L2, and concatenates the outputs: each slice's rows are
//! bit for bit those of a run of that slice alone, and agree with the
//! whole-batch run to rounding (a kernel may tile a smaller batch
//! differently).
//!
//! Only graphs proven batch-separable are split: f32 runtime inputs and
//! outputs whose first dimension is one shared symbol, and nodes from a
//! short list of ops known to be per-image (convs, pools, activations,
//! layout conversions, `Flatten` at axis 1, `Gemm` with the batch as A and
//! constant B and C). Anything else runs whole.
//!
//! Lowered int8 graphs ([`crate::lower`]) qualify too: their ops (listed in
//! [`LOWERED`]) work image by image on integer codes, and the graph's
//! inputs and outputs stay f32 behind a QuantizeLinear / DequantizeLinear
//! with one scale and zero point. Integer arithmetic is exact, so a sliced
//! int8 run is bit for bit the whole-batch run.

use crate::fuse::{FUSED_DOMAIN, LAYOUT_DOMAIN};
use crate::lower::DOMAIN as LOWERED_DOMAIN;
use crate::{Result, RuntimeError};
use shrink_graph::{Dim, Graph, Node};
use shrink_tensor::{DType, Tensor};

/// Images per slice and per thread: the measured best on MobileNetV2-tiny
/// (1 thread: 5900, 5800, 6200, 5300 images/s at slices of 4, 8, 16, 32;
/// 2 MB L2), small enough that a slice's largest intermediate (16 × 200 KB
/// for the 64-channel 28×28 expand output) mostly stays in cache.
pub(crate) const CHUNK_PER_THREAD: usize = 16;

/// Images per slice and per thread for integer graphs: their intermediates
/// are a quarter of f32's, and per-node costs weigh more on their faster
/// kernels (1 thread, batch 256, images/s at slices of 8/16/32/64:
/// MobileNetV2-tiny int8 13 470 / 12 270 / 13 480 / 13 570, LeNet-5 int8
/// 143 600 / 150 700 / 154 000 / 156 100; 32 is the choice that is good for
/// both without growing the slice's largest intermediate past L2).
pub(crate) const INT8_CHUNK_PER_THREAD: usize = 32;

/// Images per slice and per thread for `g` (a batch-separable graph), or
/// `None` when slicing does not pay: a graph without convolutions (an MLP)
/// has intermediates of a few hundred values per image that stay in cache
/// anyway, and slicing only cuts its GEMMs' rows (LeNet-300-100 at batch
/// 256, 1 thread: int8 561k images/s in slices of 16 against 662k whole,
/// fp32 187k against 193k).
pub(crate) fn chunk_per_thread(g: &Graph) -> Option<usize> {
    let conv = |n: &Node| {
        matches!(
            n.op_type.as_str(),
            "Conv" | "FusedConv" | "NhwcConv" | "QConv" | "QNhwcConv"
        )
    };
    let integer = |n: &Node| n.domain == LOWERED_DOMAIN && n.op_type.starts_with('Q');
    if !g.nodes.iter().any(conv) {
        None
    } else if g.nodes.iter().any(integer) {
        Some(INT8_CHUNK_PER_THREAD)
    } else {
        Some(CHUNK_PER_THREAD)
    }
}

/// Lowered ops (domain `ai.shrink`) that treat each image on its own, with
/// the inputs that carry the batch; every other input (scales, zero points,
/// weights, bias) must be a constant. QConv's input 0 may be f32 (a folded
/// QuantizeLinear) or codes; QAdd's two operands are both batched.
const LOWERED: &[(&str, &[usize])] = &[
    ("QConv", &[0]),
    ("QGemm", &[0]),
    ("QMaxPool", &[0]),
    ("QGlobalAveragePool", &[0]),
    ("QAdd", &[0, 3]),
];

/// Which graph inputs carry the batch (by index in `g.inputs`), when `g`
/// is batch-separable; `None` when it is not (or has no batched input).
pub(crate) fn batched_inputs(g: &Graph) -> Option<Vec<bool>> {
    let first_symbol = |shape: &Option<Vec<Dim>>| -> Option<String> {
        match shape.as_ref()?.first()? {
            Dim::Symbol(s) => Some(s.clone()),
            Dim::Known(_) => None,
        }
    };
    let mut symbol: Option<String> = None;
    let mut batched = Vec::with_capacity(g.inputs.len());
    for i in &g.inputs {
        if g.initializers.contains_key(&i.name) {
            batched.push(false);
            continue;
        }
        let s = first_symbol(&i.shape)?;
        if i.dtype != Some(DType::F32) || symbol.as_ref().is_some_and(|b| *b != s) {
            return None;
        }
        symbol = Some(s);
        batched.push(true);
    }
    let symbol = symbol?;
    let outputs_ok = !g.outputs.is_empty()
        && g.outputs.iter().all(|o| {
            o.dtype == Some(DType::F32) && first_symbol(&o.shape).as_ref() == Some(&symbol)
        });
    (outputs_ok && g.nodes.iter().all(|n| per_image(g, n))).then_some(batched)
}

/// Whether node `n` maps each image of its batched inputs to the same image
/// of its outputs, independently of the others.
fn per_image(g: &Graph, n: &Node) -> bool {
    let constant = |k: usize| {
        n.inputs
            .get(k)
            .is_none_or(|name| name.is_empty() || g.initializers.contains_key(name))
    };
    // Inputs from 1 on (weights, bias, clip bounds) must be constants.
    let rest_constant = |from: usize| (from..n.inputs.len()).all(constant);
    // A one-value constant (a per-tensor scale or zero point), or absent.
    let scalar = |k: usize| {
        n.inputs.get(k).is_none_or(|name| {
            name.is_empty() || g.initializers.get(name).is_some_and(|t| t.len() == 1)
        })
    };
    match (n.domain.as_str(), n.op_type.as_str()) {
        // The fused and layout ops share the domain; matched further down.
        (LOWERED_DOMAIN, op) if LOWERED.iter().any(|(name, _)| *name == op) => {
            LOWERED.iter().any(|(name, batched)| {
                *name == op
                    && (0..n.inputs.len()).all(|k| batched.contains(&k) || constant(k))
                    && batched.iter().all(|&k| !constant(k))
            })
        }
        ("" | "ai.onnx", "QuantizeLinear" | "DequantizeLinear") => {
            n.inputs.len() >= 2 && scalar(1) && scalar(2) && rest_constant(1)
        }
        ("" | "ai.onnx", "Conv" | "Clip") => rest_constant(1),
        (FUSED_DOMAIN, "FusedConv") | (LAYOUT_DOMAIN, "NhwcConv") => {
            // Input 3 (Z, the residual) is a batched runtime value.
            (1..n.inputs.len().min(3)).all(constant)
        }
        (LAYOUT_DOMAIN, "NchwToNhwc" | "NhwcToNchw") => true,
        (
            LAYOUT_DOMAIN,
            "QNhwcConv" | "QNhwcAdd" | "QNhwcGlobalAveragePool" | "QNchwToNhwc" | "QNhwcToNchw",
        ) => (1..n.inputs.len()).all(|k| constant(k) || (k == 3 && n.op_type == "QNhwcAdd")),
        (
            "" | "ai.onnx",
            "Relu" | "Sigmoid" | "Tanh" | "GlobalAveragePool" | "GlobalMaxPool" | "MaxPool"
            | "AveragePool",
        ) => n.inputs.len() == 1,
        ("" | "ai.onnx", "Flatten") => n.attr_int("axis", 1).is_ok_and(|a| a == 1),
        ("" | "ai.onnx", "Gemm") | (FUSED_DOMAIN, "FusedGemm") => {
            // C broadcast over the rows, not one row per image.
            let c_per_row = n
                .inputs
                .get(2)
                .and_then(|c| g.initializers.get(c))
                .is_none_or(|c| c.shape().len() < 2 || c.shape()[0] == 1);
            n.attr_int("transA", 0).is_ok_and(|t| t == 0) && rest_constant(1) && c_per_row
        }
        _ => false,
    }
}

/// The batch size of the batched inputs in `slots` (fed at `input_slots`),
/// when they all agree on one.
pub(crate) fn batch_of(slots: &[Option<Tensor>], input_slots: &[usize]) -> Option<usize> {
    let mut n = None;
    for &s in input_slots {
        let t = slots[s].as_ref()?;
        let b = *t.shape().first()?;
        if t.dtype() != DType::F32 || n.is_some_and(|n| n != b) {
            return None;
        }
        n = Some(b);
    }
    n
}

/// Images `lo..hi` of an f32 tensor whose first dimension is the batch.
pub(crate) fn slice(t: &Tensor, lo: usize, hi: usize) -> Result<Tensor> {
    let v = t.as_slice::<f32>().map_err(input_error)?;
    let per = t.shape()[1..].iter().product::<usize>();
    let mut shape = t.shape().to_vec();
    shape[0] = hi - lo;
    Tensor::from_vec(shape, v[lo * per..hi * per].to_vec()).map_err(input_error)
}

/// The slices' outputs, joined along the first dimension.
pub(crate) fn concat(parts: Vec<Vec<Tensor>>) -> Result<Vec<Tensor>> {
    let Some(first) = parts.first() else {
        return Ok(Vec::new());
    };
    (0..first.len())
        .map(|k| {
            let mut shape = first[k].shape().to_vec();
            if shape.is_empty() {
                return Err(output_error(k, "is a scalar"));
            }
            let mut data = Vec::new();
            let mut n = 0;
            for p in &parts {
                let t = &p[k];
                if t.shape().is_empty() || t.shape()[1..] != shape[1..] {
                    return Err(output_error(k, "changes shape between slices"));
                }
                n += t.shape()[0];
                data.extend_from_slice(t.as_slice::<f32>().map_err(input_error)?);
            }
            shape[0] = n;
            Tensor::from_vec(shape, data).map_err(input_error)
        })
        .collect()
}

fn input_error(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Input {
        name: "(micro-batch)".into(),
        msg: e.to_string(),
    }
}

fn output_error(k: usize, what: &str) -> RuntimeError {
    RuntimeError::Input {
        name: format!("(output #{k})"),
        msg: format!("micro-batched output {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Session, SessionOptions};
    use shrink_graph::{Attr, ValueInfo};

    fn t(shape: &[usize], seed: u32) -> Tensor {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(7);
        let v = (0..shape.iter().product::<usize>())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    fn batch_dim() -> Dim {
        Dim::Symbol("N".into())
    }

    /// A small inverted-residual net: stem conv → Clip → depthwise →
    /// 1×1 + residual → global pool → Flatten → Gemm, batch `N`.
    fn net() -> Graph {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), 17);
        let d = |n| Dim::Known(n);
        g.inputs.push(ValueInfo::new(
            "x",
            DType::F32,
            vec![batch_dim(), d(1), d(10), d(10)],
        ));
        for (name, shape, seed) in [
            ("w0", &[16usize, 1, 3, 3][..], 1),
            ("b0", &[16][..], 2),
            ("wd", &[16, 1, 3, 3][..], 3),
            ("bd", &[16][..], 4),
            ("wp", &[16, 16, 1, 1][..], 5),
            ("wg", &[16, 7][..], 6),
            ("bg", &[7][..], 7),
        ] {
            g.initializers.insert(name.into(), t(shape, seed));
        }
        g.initializers.insert("lo".into(), Tensor::scalar(0.0f32));
        g.initializers.insert("hi".into(), Tensor::scalar(6.0f32));
        let pads = Attr::Ints(vec![1; 4]);
        g.nodes = vec![
            Node::new("c0", "Conv", &["x", "w0", "b0"], &["c0"]).with("pads", pads.clone()),
            Node::new("clip", "Clip", &["c0", "lo", "hi"], &["a0"]),
            Node::new("dw", "Conv", &["a0", "wd", "bd"], &["d"])
                .with("pads", pads)
                .with("group", Attr::Int(16)),
            Node::new("relu", "Relu", &["d"], &["a1"]),
            Node::new("pw", "Conv", &["a1", "wp"], &["p"]),
            Node::new("res", "Add", &["p", "a0"], &["r"]),
            Node::new("pool", "GlobalAveragePool", &["r"], &["q"]),
            Node::new("flat", "Flatten", &["q"], &["f"]),
            Node::new("fc", "Gemm", &["f", "wg", "bg"], &["logits"]),
        ];
        g.outputs = vec![ValueInfo::new(
            "logits",
            DType::F32,
            vec![batch_dim(), Dim::Known(7)],
        )];
        g
    }

    fn session(g: Graph, threads: usize) -> Session {
        Session::new(
            g,
            SessionOptions {
                threads,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// A batch run in slices (37 = 16 + 16 + 5 at one thread; 37 = 32 + 5
    /// at two) gives exactly the logits of each slice run alone, the
    /// logits of each image run alone to rounding, and a profile with one
    /// timing per planned node.
    #[test]
    fn sliced_batch_matches_single_images() {
        for threads in [1, 2] {
            let s = session(net(), threads);
            assert!(
                batched_inputs(s.planned_graph()).is_some(),
                "{:#?}",
                s.planned_graph().nodes
            );
            let n = 37;
            let x = t(&[n, 1, 10, 10], 99);
            let got = s.run(vec![x.clone()]).unwrap().remove(0);
            assert_eq!(got.shape(), [n, 7]);
            let got = got.as_slice::<f32>().unwrap();
            let chunk = CHUNK_PER_THREAD * threads;
            for lo in (0..n).step_by(chunk) {
                let hi = (lo + chunk).min(n);
                let want = s.run(vec![slice(&x, lo, hi).unwrap()]).unwrap().remove(0);
                assert_eq!(
                    &got[lo * 7..hi * 7],
                    want.as_slice::<f32>().unwrap(),
                    "slice {lo}..{hi}, {threads} threads"
                );
            }
            for i in 0..n {
                let want = s.run(vec![slice(&x, i, i + 1).unwrap()]).unwrap().remove(0);
                for (a, b) in got[i * 7..(i + 1) * 7]
                    .iter()
                    .zip(want.as_slice::<f32>().unwrap())
                {
                    assert!((a - b).abs() <= 1e-5, "image {i}: {a} vs {b}");
                }
            }
            let (out, timing) = s.run_profiled(vec![("x".into(), x)]).unwrap();
            assert_eq!(out[0].as_slice::<f32>().unwrap(), got);
            assert_eq!(timing.len(), s.planned_graph().nodes.len());
        }
    }

    /// Ops that mix images, a non-f32 input, a fixed batch or a transposed
    /// Gemm keep the graph whole.
    #[test]
    fn graphs_that_mix_images_are_not_split() {
        let planned = session(net(), 1).planned_graph().clone();
        let net = || planned.clone();
        assert!(batched_inputs(&net()).is_some());
        // The unfused graph's residual Add is not on the list.
        assert!(batched_inputs(&self::net()).is_none());
        let gemm = planned
            .nodes
            .iter()
            .position(|n| n.op_type.ends_with("Gemm"))
            .unwrap();
        let mut g = net();
        g.nodes
            .insert(gemm, Node::new("tr", "Transpose", &["f"], &["ft"]));
        g.nodes[gemm + 1].inputs[0] = "ft".into();
        assert!(batched_inputs(&g).is_none());
        let mut g = net();
        g.nodes[gemm] = g.nodes[gemm].clone().with("transA", Attr::Int(1));
        assert!(batched_inputs(&g).is_none());
        let mut g = net();
        g.inputs[0].shape.as_mut().unwrap()[0] = Dim::Known(4);
        assert!(batched_inputs(&g).is_none());
        let mut g = net();
        g.inputs[0].dtype = Some(DType::F16);
        assert!(batched_inputs(&g).is_none());
        let mut g = net();
        g.outputs[0].shape = None;
        assert!(batched_inputs(&g).is_none());
        // A per-image op whose weight is a runtime value.
        let mut g = net();
        g.initializers.shift_remove("wp");
        g.inputs
            .push(ValueInfo::new("wp", DType::F32, vec![batch_dim()]));
        assert!(batched_inputs(&g).is_none());
    }
}
