//! ReLU6 → ReLU replacement.
//!
//! Cross-layer equalisation relies on `f(s·x) = s·f(x)` for `s > 0`, which
//! holds for ReLU but not for ReLU6 (the 6 does not scale). Replacing the
//! Clip(0, 6) between two equalisable layers by a ReLU makes the pair
//! equalisable at the price of a (usually small) change of the fp32 function:
//! values above 6 now pass. The change is reported per node and its accuracy
//! effect is measured by the recipe run, never assumed to be nil.

use crate::fold_bn::constant_f32;
use crate::linear_layer::LinearLayer;
use crate::{PassRecord, Result};
use shrink_graph::{Graph, Node};

/// Which Clip(0, 6) nodes to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Relu6Scope {
    /// Only those between two weighted layers that equalisation could pair
    /// (the Clip reads the sole output of a Conv/Gemm and feeds only one).
    #[default]
    BetweenLayers,
    /// Every Clip(0, 6).
    All,
}

/// `(lo, hi)` of a Clip node when both are constants (opset ≥ 11 inputs or
/// opset < 11 attributes); a missing bound is ±∞.
pub(crate) fn clip_bounds(g: &Graph, n: &Node) -> Option<(f32, f32)> {
    if n.op_type != "Clip" || !n.domain.is_empty() {
        return None;
    }
    if n.inputs.len() <= 1 && (n.attr("min").is_some() || n.attr("max").is_some()) {
        let lo = n.attr_float("min", f32::NEG_INFINITY).ok()?;
        let hi = n.attr_float("max", f32::INFINITY).ok()?;
        return Some((lo, hi));
    }
    let bound = |i: usize, default: f32| -> Option<f32> {
        match n.input(i) {
            None => Some(default),
            Some(name) => constant_f32(g, name).and_then(|v| (v.len() == 1).then(|| v[0])),
        }
    };
    Some((bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?))
}

/// Replaces Clip(0, 6) by Relu within `scope`.
pub fn relu6_to_relu(g: &Graph, scope: Relu6Scope) -> Result<(Graph, PassRecord)> {
    let mut out = g.clone();
    let mut rec = PassRecord::new("relu6-to-relu").option(
        "scope",
        match scope {
            Relu6Scope::BetweenLayers => "between-layers",
            Relu6Scope::All => "all",
        },
    );
    let producers = g.producers();
    let consumers = g.consumers();
    let mut replaced = 0;
    for (i, n) in g.nodes.iter().enumerate() {
        if clip_bounds(g, n) != Some((0.0, 6.0)) {
            continue;
        }
        if scope == Relu6Scope::BetweenLayers {
            let x = n.inputs[0].as_str();
            let from_layer = producers
                .get(x)
                .is_some_and(|&p| LinearLayer::at(g, p).is_some())
                && consumers.get(x).is_some_and(|c| c.len() == 1);
            let readers = consumers.get(&n.outputs[0]).cloned().unwrap_or_default();
            let to_layer = readers.len() == 1
                && LinearLayer::at(g, readers[0])
                    .is_some_and(|_| g.nodes[readers[0]].inputs[0] == n.outputs[0]);
            if !(from_layer && to_layer) {
                continue;
            }
        }
        let node = &mut out.nodes[i];
        node.op_type = "Relu".into();
        node.inputs.truncate(1);
        node.attrs.clear();
        rec.change(format!("{}: Clip(0, 6) -> Relu", n.name));
        replaced += 1;
    }
    crate::fold_bn::drop_unused_initializers(&mut out);
    rec.metric("replaced", replaced as f64);
    Ok((out, rec))
}
