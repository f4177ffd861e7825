//! Graph rewrites a session makes once, before planning, so that fewer and
//! cheaper nodes run:
//!
//! - **BatchNormalization after Conv** (inference form, every parameter a
//!   constant) is folded into the conv's weights and bias:
//!   `W'[m] = W[m]·γ[m]/√(σ²[m]+ε)`, `B'[m] = (B[m] − μ[m])·γ[m]/√(σ²[m]+ε) + β[m]`.
//! - **Relu / Clip after Conv or Gemm** becomes the GEMM's (or depthwise
//!   kernel's) output clamp: the pair is replaced by one `FusedConv` /
//!   `FusedGemm` node (domain `com.microsoft`, attributes `activation` and
//!   `activation_params` as ONNX Runtime names them), saving a full pass
//!   over the activation.
//!
//! A pair is only rewritten when the intermediate value has exactly one
//! reader and is not a graph output, so nothing else can observe it. The
//! results equal the unfused graph up to float rounding (BN folding changes
//! the order of operations; the clamp is exact).

use crate::ops::Registry;
use shrink_graph::{node_uses, Attr, Graph, Node};
use shrink_tensor::{DType, Tensor};
use std::collections::{HashMap, HashSet};

/// Domain of the fused ops (ONNX Runtime's contrib domain, same semantics).
pub(crate) const FUSED_DOMAIN: &str = "com.microsoft";

/// The rewritten graph, or `None` when no rewrite applies (the session
/// then runs `g` itself; a graph without Conv or Gemm is not even copied).
pub(crate) fn fused(g: &Graph, registry: &Registry) -> Option<Graph> {
    if !g
        .nodes
        .iter()
        .any(|n| is_onnx(n, "Conv") || is_onnx(n, "Gemm"))
    {
        return None;
    }
    let mut plan = g.clone();
    (fuse(&mut plan, registry) > 0).then(|| {
        drop_unused_initializers(&mut plan);
        plan
    })
}

/// Removes initializers nothing reads any more (weights replaced by their
/// BN-folded copies), unless they are also graph inputs or outputs.
fn drop_unused_initializers(g: &mut Graph) {
    let (count, outputs) = readers(g);
    let inputs: HashSet<&str> = g.inputs.iter().map(|i| i.name.as_str()).collect();
    let dead: Vec<String> = g
        .initializers
        .keys()
        .filter(|k| {
            !count.contains_key(*k) && !outputs.contains(*k) && !inputs.contains(k.as_str())
        })
        .cloned()
        .collect();
    for k in dead {
        g.initializers.shift_remove(&k);
    }
}

/// Applies every rewrite the registry can run; returns how many nodes were
/// removed. A registry without `FusedConv` (e.g. a test that wants the graph
/// run exactly as written) gets no rewrite at all.
pub(crate) fn fuse(g: &mut Graph, registry: &Registry) -> usize {
    let before = g.nodes.len();
    if registry.get(FUSED_DOMAIN, "FusedConv").is_none() {
        return 0;
    }
    fold_batch_norm(g);
    fuse_activations(g, "Conv", "FusedConv");
    if registry.get(FUSED_DOMAIN, "FusedGemm").is_some() {
        fuse_activations(g, "Gemm", "FusedGemm");
    }
    before - g.nodes.len()
}

/// Readers of every value (subgraph captures included) and the graph outputs.
fn readers(g: &Graph) -> (HashMap<String, usize>, HashSet<String>) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for n in &g.nodes {
        for u in node_uses(n) {
            *count.entry(u).or_default() += 1;
        }
    }
    let outputs = g.outputs.iter().map(|o| o.name.clone()).collect();
    (count, outputs)
}

/// The node reading `value`, when it is the only reader and `value` is not
/// a graph output.
fn sole_reader(
    g: &Graph,
    value: &str,
    count: &HashMap<String, usize>,
    outputs: &HashSet<String>,
) -> Option<usize> {
    if value.is_empty() || outputs.contains(value) || count.get(value) != Some(&1) {
        return None;
    }
    g.nodes
        .iter()
        .position(|n| n.inputs.iter().any(|i| i == value))
}

fn is_onnx(n: &Node, op: &str) -> bool {
    (n.domain.is_empty() || n.domain == "ai.onnx") && n.op_type == op
}

fn f32_constant<'g>(g: &'g Graph, name: Option<&str>) -> Option<&'g [f32]> {
    let t = g.initializers.get(name?)?;
    (t.dtype() == DType::F32).then(|| t.as_slice::<f32>().ok())?
}

/// A name not used by the graph yet, derived from `base`.
fn fresh_name(g: &Graph, base: &str) -> String {
    let mut k = 0;
    loop {
        let name = format!("{base}__fused{k}");
        if !g.initializers.contains_key(&name) && !g.nodes.iter().any(|n| n.outputs.contains(&name))
        {
            return name;
        }
        k += 1;
    }
}

// Reader counts stay valid across rewrites: a rewrite removes the
// intermediate value (read only by the removed node) and moves the removed
// node's output, with its readers, to the surviving node.
fn fold_batch_norm(g: &mut Graph) {
    let (count, outputs) = readers(g);
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some(j) = bn_after_conv(g, i, &count, &outputs) {
            if fold_one(g, i, j) {
                continue;
            }
        }
        i += 1;
    }
}

/// The BatchNormalization node folding into Conv node `i`, if any.
fn bn_after_conv(
    g: &Graph,
    i: usize,
    count: &HashMap<String, usize>,
    outputs: &HashSet<String>,
) -> Option<usize> {
    let conv = &g.nodes[i];
    if !is_onnx(conv, "Conv") || conv.outputs.len() != 1 {
        return None;
    }
    let j = sole_reader(g, &conv.outputs[0], count, outputs)?;
    let bn = &g.nodes[j];
    let inference = bn.attr_int("training_mode", 0).ok()? == 0
        && bn.outputs.iter().skip(1).all(|o| o.is_empty());
    (is_onnx(bn, "BatchNormalization") && inference && bn.input(0) == Some(&conv.outputs[0]))
        .then_some(j)
}

/// Folds BN node `j` into Conv node `i`; false (graph untouched) when the
/// parameters are not f32 constants of matching sizes.
fn fold_one(g: &mut Graph, i: usize, j: usize) -> bool {
    let (conv, bn) = (&g.nodes[i], &g.nodes[j]);
    let Some(w) = f32_constant(g, conv.input(1)) else {
        return false;
    };
    let m = g.initializers[conv.inputs[1].as_str()]
        .shape()
        .first()
        .copied()
        .unwrap_or(0);
    let params: Option<Vec<&[f32]>> = (1..5).map(|k| f32_constant(g, bn.input(k))).collect();
    let Some(p) = params else { return false };
    let bias = match conv.input(2) {
        Some(b) => match f32_constant(g, Some(b)) {
            Some(v) => Some(v),
            None => return false,
        },
        None => None,
    };
    if m == 0
        || w.len() % m != 0
        || p.iter().any(|v| v.len() != m)
        || bias.is_some_and(|b| b.len() != m)
    {
        return false;
    }
    let Ok(eps) = bn.attr_float("epsilon", 1e-5) else {
        return false;
    };
    let (gamma, beta, mean, var) = (p[0], p[1], p[2], p[3]);
    let per = w.len() / m;
    let factor: Vec<f32> = (0..m).map(|c| gamma[c] / (var[c] + eps).sqrt()).collect();
    let new_w: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(q, &v)| v * factor[q / per])
        .collect();
    let new_b: Vec<f32> = (0..m)
        .map(|c| (bias.map_or(0.0, |b| b[c]) - mean[c]) * factor[c] + beta[c])
        .collect();
    let w_shape = g.initializers[conv.inputs[1].as_str()].shape().to_vec();
    let (Ok(wt), Ok(bt)) = (
        Tensor::from_vec(w_shape, new_w),
        Tensor::from_vec(vec![m], new_b),
    ) else {
        return false;
    };
    let w_name = fresh_name(g, &conv.inputs[1]);
    g.initializers.insert(w_name.clone(), wt);
    let b_name = fresh_name(g, &format!("{}_bias", conv.name));
    g.initializers.insert(b_name.clone(), bt);
    let y = g.nodes[j].outputs[0].clone();
    let conv = &mut g.nodes[i];
    conv.inputs.truncate(2);
    conv.inputs[1] = w_name;
    conv.inputs.push(b_name);
    conv.outputs[0] = y;
    g.nodes.remove(j);
    true
}

/// The clamp of a Relu / Clip node, when its bounds are known constants.
fn clamp_of(g: &Graph, n: &Node) -> Option<(&'static str, f32, f32)> {
    if is_onnx(n, "Relu") {
        return Some(("Relu", 0.0, f32::INFINITY));
    }
    if !is_onnx(n, "Clip") {
        return None;
    }
    let opset = g.opsets.get("").copied().unwrap_or_else(|| g.opset());
    let (lo, hi) = if opset < 11 {
        (
            n.attr_float("min", f32::NEG_INFINITY).ok()?,
            n.attr_float("max", f32::INFINITY).ok()?,
        )
    } else {
        let bound = |k: usize, default: f32| -> Option<f32> {
            match n.input(k) {
                None => Some(default),
                Some(name) => {
                    let t = g.initializers.get(name)?;
                    (t.dtype() == DType::F32 && t.len() == 1).then(|| t.to_f32_vec()[0])
                }
            }
        };
        (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
    };
    (!lo.is_nan() && !hi.is_nan()).then_some(("Clip", lo, hi))
}

fn fuse_activations(g: &mut Graph, op: &str, fused: &str) {
    let (count, outputs) = readers(g);
    let mut i = 0;
    while i < g.nodes.len() {
        let n = &g.nodes[i];
        if !is_onnx(n, op) || n.outputs.len() != 1 {
            i += 1;
            continue;
        }
        let Some(j) = sole_reader(g, &n.outputs[0], &count, &outputs) else {
            i += 1;
            continue;
        };
        let act = &g.nodes[j];
        let Some((name, lo, hi)) = clamp_of(g, act)
            .filter(|_| act.input(0) == Some(n.outputs[0].as_str()) && act.outputs.len() == 1)
        else {
            i += 1;
            continue;
        };
        let y = act.outputs[0].clone();
        let node = &mut g.nodes[i];
        node.op_type = fused.to_string();
        node.domain = FUSED_DOMAIN.to_string();
        node.outputs[0] = y;
        node.attrs
            .insert("activation".into(), Attr::String(name.to_string()));
        node.attrs
            .insert("activation_params".into(), Attr::Floats(vec![lo, hi]));
        g.nodes.remove(j);
        // The fused op's output must still be produced before its readers:
        // the activation sat after the conv, so order is kept.
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Session, SessionOptions};
    use shrink_graph::{Dim, ValueInfo};

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(99);
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
        let n = shape.iter().product();
        Tensor::from_vec(shape.to_vec(), pseudo(n, seed)).unwrap()
    }

    /// x → Conv(3×3, pad 1) → BN → Clip(0, 6) → depthwise Conv → Relu →
    /// Conv 1×1 → [out]; Flatten → Gemm → Relu → [logits]; plus a Conv whose
    /// output is also a graph output (must not fuse).
    fn model() -> Graph {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), 17);
        g.inputs.push(ValueInfo::new(
            "x",
            DType::F32,
            vec![
                Dim::Symbol("N".into()),
                Dim::Known(3),
                Dim::Known(9),
                Dim::Known(9),
            ],
        ));
        let init = |g: &mut Graph, name: &str, t: Tensor| {
            g.initializers.insert(name.to_string(), t);
        };
        init(&mut g, "w0", t(&[8, 3, 3, 3], 1));
        init(&mut g, "b0", t(&[8], 2));
        let var: Vec<f32> = pseudo(8, 3).iter().map(|v| v.abs() + 0.1).collect();
        init(&mut g, "gamma", t(&[8], 4));
        init(&mut g, "beta", t(&[8], 5));
        init(&mut g, "mean", t(&[8], 6));
        init(&mut g, "var", Tensor::from_vec(vec![8], var).unwrap());
        init(&mut g, "lo", Tensor::scalar(0.0f32));
        init(&mut g, "hi", Tensor::scalar(0.6f32));
        init(&mut g, "wd", t(&[8, 1, 3, 3], 7));
        init(&mut g, "bd", t(&[8], 8));
        init(&mut g, "wp", t(&[4, 8, 1, 1], 9));
        init(&mut g, "wg", t(&[5, 4 * 81], 10));
        init(&mut g, "bg", t(&[5], 11));
        let pads = Attr::Ints(vec![1, 1, 1, 1]);
        g.nodes = vec![
            Node::new("c0", "Conv", &["x", "w0", "b0"], &["c0"]).with("pads", pads.clone()),
            Node::new(
                "bn",
                "BatchNormalization",
                &["c0", "gamma", "beta", "mean", "var"],
                &["bn"],
            )
            .with("epsilon", Attr::Float(1e-3)),
            Node::new("clip", "Clip", &["bn", "lo", "hi"], &["a0"]),
            Node::new("dw", "Conv", &["a0", "wd", "bd"], &["d"])
                .with("pads", pads)
                .with("group", Attr::Int(8)),
            Node::new("relu", "Relu", &["d"], &["a1"]),
            Node::new("pw", "Conv", &["a1", "wp"], &["p"]),
            Node::new("relu_out", "Relu", &["p"], &["out2"]),
            Node::new("flat", "Flatten", &["p"], &["f"]),
            Node::new("fc", "Gemm", &["f", "wg", "bg"], &["g"]).with("transB", Attr::Int(1)),
            Node::new("relu2", "Relu", &["g"], &["logits"]),
        ];
        g.outputs = vec![
            ValueInfo::unknown("p"),
            ValueInfo::unknown("out2"),
            ValueInfo::unknown("logits"),
        ];
        g
    }

    #[test]
    fn fused_session_matches_the_unfused_graph() {
        let g = model();
        let mut fused = g.clone();
        let removed = fuse(&mut fused, &Registry::standard());
        // BN, Clip, Relu after dw, Relu after Gemm; not the Relu reading the
        // graph output `p`.
        assert_eq!(removed, 4, "{:#?}", fused.nodes);
        let ops: Vec<&str> = fused.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "FusedConv",
                "FusedConv",
                "Conv",
                "Relu",
                "Flatten",
                "FusedGemm"
            ]
        );
        // Reference: the unfused graph, op by op (no session rewrites).
        let reference = Session::with_registry(
            g.clone(),
            SessionOptions {
                threads: 1,
                ..Default::default()
            },
            {
                let mut r = Registry::standard();
                // Without the fused ops registered, fuse() leaves the graph as is.
                r.remove(FUSED_DOMAIN, "FusedConv");
                r.remove(FUSED_DOMAIN, "FusedGemm");
                r
            },
        )
        .unwrap();
        assert_eq!(reference.planned_graph().nodes.len(), g.nodes.len());
        let session = Session::new(
            g.clone(),
            SessionOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(session.planned_graph().nodes.len(), 6);
        // The session still shows the graph as given.
        assert_eq!(session.graph(), &g);
        // The BN-folded conv's old weights and the BN parameters are gone.
        for k in ["w0", "b0", "gamma", "beta", "mean", "var", "lo", "hi"] {
            assert!(!session.planned_graph().initializers.contains_key(k), "{k}");
        }
        for batch in [1, 3] {
            let x = t(&[batch, 3, 9, 9], 20 + batch as u32);
            let want = reference.run(vec![x.clone()]).unwrap();
            let got = session.run(vec![x]).unwrap();
            for (w, o) in want.iter().zip(&got) {
                assert_eq!(w.shape(), o.shape());
                let (w, o) = (w.as_slice::<f32>().unwrap(), o.as_slice::<f32>().unwrap());
                for (a, b) in w.iter().zip(o) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
                }
            }
            // The clamps really apply.
            let logits = got[2].as_slice::<f32>().unwrap();
            assert!(logits.iter().all(|&v| v >= 0.0));
        }
    }
}
