//! Folding a model's input QuantizeLinear into the QConv that reads it.
//!
//! A quantised conv net starts `x (f32) → QuantizeLinear → QConv`: one pass
//! writes the codes, the conv reads them back. When the QuantizeLinear has
//! that QConv as its only reader and the same per-tensor parameters, the
//! QConv takes `x` itself and quantises as it reads (input 0 of a QConv may
//! be f32: see `qops::qconv`), with the same formula, so the codes — and
//! everything after — are unchanged. At batch 1 this saves a node
//! (≈ its dispatch and a buffer); at any batch, a pass over the input.

use super::DOMAIN;
use shrink_graph::Graph;
use shrink_tensor::DType;

/// Folds every eligible QuantizeLinear → QConv pair; `labels` (one per node)
/// is kept aligned with `g.nodes`.
pub(super) fn fold(g: &mut Graph, labels: &mut Vec<&'static str>) {
    // (QuantizeLinear, QConv) pairs to fold.
    let mut folds = Vec::new();
    for (qi, q) in g.nodes.iter().enumerate() {
        if q.op_type != "QuantizeLinear" || !matches!(q.domain.as_str(), "" | "ai.onnx") {
            continue;
        }
        let (Some(x), Some(y)) = (q.inputs.first(), q.outputs.first()) else {
            continue;
        };
        // The input must be a runtime f32 graph input (not an initializer).
        let f32_input = g
            .inputs
            .iter()
            .any(|i| &i.name == x && i.dtype == Some(DType::F32))
            && !g.initializers.contains_key(x);
        if !f32_input
            || q.attrs.contains_key("output_dtype")
            || g.outputs.iter().any(|o| &o.name == y)
        {
            continue;
        }
        let readers: Vec<usize> = (0..g.nodes.len())
            .filter(|&j| g.nodes[j].inputs.iter().any(|i| i == y))
            .collect();
        let [c] = readers[..] else {
            continue;
        };
        let conv = &g.nodes[c];
        let param = |name: Option<&String>| {
            name.filter(|n| !n.is_empty())
                .and_then(|n| g.initializers.get(n))
                .filter(|t| t.len() == 1)
                .map(|t| (t.dtype(), t.to_f64_vec()[0]))
        };
        let same = |k: usize| param(q.inputs.get(k)) == param(conv.inputs.get(k));
        let zero_ok = |name: Option<&String>| {
            param(name).is_some_and(|(dt, _)| matches!(dt, DType::U8 | DType::I8))
        };
        let eligible = conv.domain == DOMAIN
            && conv.op_type == "QConv"
            && conv.inputs.first() == Some(y)
            && conv.inputs.iter().skip(1).all(|i| i != y)
            && param(q.inputs.get(1)).is_some_and(|(dt, _)| dt == DType::F32)
            && zero_ok(q.inputs.get(2))
            && same(1)
            && same(2);
        if eligible {
            folds.push((qi, c));
        }
    }
    let mut gone = vec![false; g.nodes.len()];
    for (qi, c) in folds {
        g.nodes[c].inputs[0] = g.nodes[qi].inputs[0].clone();
        gone[qi] = true;
    }
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !gone[k - 1]
    });
    if labels.len() != gone.len() {
        return;
    }
    let mut k = 0;
    labels.retain(|_| {
        k += 1;
        !gone[k - 1]
    });
}
