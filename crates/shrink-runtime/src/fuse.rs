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
//! - **Channels-last regions**: connected chains of 1×1 and depthwise 3×3
//!   convs (with the Add / Relu / Clip nodes between them) that contain a
//!   depthwise conv and at least two convs run in NHWC as
//!   `ai.shrink::NhwcConv` nodes, with `NchwToNhwc` / `NhwcToNchw` at the
//!   region's borders. In NHWC the depthwise conv fills all 16 lanes on any
//!   plane size and the 1×1 convs are one GEMM over the batch's positions
//!   (see `shrink_kernels::nhwc`). Inside a region, an Add of a plain 1×1
//!   conv's output and a same-shaped value becomes the conv's `Z` input
//!   (the residual add is done in the conv's store).
//!
//! A pair is only rewritten when the intermediate value has exactly one
//! reader and is not a graph output, so nothing else can observe it. The
//! results equal the unfused graph up to float rounding (BN folding changes
//! the order of operations; the clamp is exact).

use crate::ops::Registry;
use shrink_graph::{infer_shapes, node_uses, Attr, Dim, Graph, Node};
use shrink_tensor::{DType, Tensor};
use std::collections::{HashMap, HashSet};

/// Domain of the fused ops (ONNX Runtime's contrib domain, same semantics).
pub(crate) const FUSED_DOMAIN: &str = "com.microsoft";
/// Domain of shrink's channels-last conv and layout conversions.
pub(crate) const LAYOUT_DOMAIN: &str = "ai.shrink";

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
    let layout_ops = ["NhwcConv", "NchwToNhwc", "NhwcToNchw"];
    if layout_ops
        .iter()
        .all(|op| registry.get(LAYOUT_DOMAIN, op).is_some())
    {
        // Rewrites, not a node count: conversions are added.
        let removed = before.saturating_sub(g.nodes.len());
        return removed + channels_last(g);
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

/// Whether conv node `n` runs well in NHWC: a 2-D 1×1 stride-1 unpadded
/// ungrouped conv, or a depthwise 3×3 (stride 1 or 2, explicit padding),
/// with constant f32 weights and no `Z` yet. Returns `Some(is_depthwise)`.
fn nhwc_conv_kind(g: &Graph, n: &Node) -> Option<bool> {
    let conv = is_onnx(n, "Conv") || (n.domain == FUSED_DOMAIN && n.op_type == "FusedConv");
    if !conv || n.inputs.len() > 3 || n.outputs.len() != 1 || n.input(0).is_none() {
        return None;
    }
    let w = g.initializers.get(n.input(1)?)?;
    if w.dtype() != DType::F32 || w.rank() != 4 {
        return None;
    }
    if let Some(b) = n.input(2) {
        f32_constant(g, Some(b))?;
    }
    let ints = |k: &str| n.attr_ints(k).ok().map(|v| v.map(|v| v.to_vec()));
    let auto_pad = n.attr_str("auto_pad", "NOTSET").ok()?;
    if !(auto_pad == "NOTSET" || auto_pad.is_empty()) {
        return None;
    }
    let dil = ints("dilations")?.unwrap_or(vec![1, 1]);
    let strides = ints("strides")?.unwrap_or(vec![1, 1]);
    let pads = ints("pads")?.unwrap_or(vec![0; 4]);
    let group = n.attr_int("group", 1).ok()?;
    if dil != [1, 1] || pads.len() != 4 || pads.iter().any(|&p| p < 0) {
        return None;
    }
    let ws = w.shape();
    if ws[2..] == [1, 1] && group == 1 && strides == [1, 1] && pads == [0; 4] {
        return Some(false);
    }
    let depthwise = ws[1] == 1 && ws[2..] == [3, 3] && group == ws[0] as i64;
    (depthwise && (strides == [1, 1] || strides == [2, 2])).then_some(true)
}

/// The inferred shape of every value. `FusedConv` has no inference rule,
/// so a copy with the fused convs as plain Conv is typed (same shapes).
fn value_shapes(g: &Graph) -> HashMap<String, Vec<Dim>> {
    let mut typed = g.clone();
    for n in &mut typed.nodes {
        if n.domain == FUSED_DOMAIN && n.op_type == "FusedConv" {
            n.domain.clear();
            n.op_type = "Conv".into();
        }
    }
    if infer_shapes(&mut typed).is_err() {
        return HashMap::new();
    }
    typed
        .inputs
        .iter()
        .chain(typed.value_info.values())
        .chain(typed.outputs.iter())
        .filter_map(|vi| Some((vi.name.clone(), vi.shape.clone()?)))
        .collect()
}

/// Known equal shapes (a symbolic batch counts when both name it alike).
fn same_shape(a: Option<&Vec<Dim>>, b: Option<&Vec<Dim>>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    let known = |d: &Dim| match d {
        Dim::Known(_) => true,
        Dim::Symbol(s) => s != shrink_graph::onnx::UNKNOWN_DIM && !s.is_empty(),
    };
    a.len() == b.len() && a.iter().all(known) && a == b
}

/// Rewrites the channels-last regions (see the module doc); returns how many
/// nodes were rewritten (convs and Adds turned NHWC or fused).
fn channels_last(g: &mut Graph) -> usize {
    if !g.nodes.iter().any(|n| nhwc_conv_kind(g, n) == Some(true)) {
        return 0;
    }
    let shapes = value_shapes(g);
    let shape = |v: &str| shapes.get(v);
    // Region membership: eligible convs, then Relu/Clip on region values and
    // Adds of a region value and a same-shaped value.
    let mut kind: HashMap<usize, Option<bool>> = HashMap::new();
    let mut producer: HashMap<String, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let data_inputs: Vec<&str> = if let Some(dw) = nhwc_conv_kind(g, n) {
            kind.insert(i, Some(dw));
            for o in &n.outputs {
                producer.insert(o.clone(), i);
            }
            continue;
        } else if is_onnx(n, "Add") && n.inputs.len() == 2 && n.outputs.len() == 1 {
            n.inputs.iter().map(String::as_str).collect()
        } else if (is_onnx(n, "Relu") || clamp_of(g, n).is_some()) && n.outputs.len() == 1 {
            n.input(0).into_iter().collect()
        } else {
            continue;
        };
        let joins = match data_inputs[..] {
            [v] => producer.contains_key(v),
            [a, b] => {
                (producer.contains_key(a) || producer.contains_key(b))
                    && same_shape(shape(a), shape(b))
            }
            _ => false,
        };
        if joins {
            kind.insert(i, None);
            producer.insert(n.outputs[0].clone(), i);
        }
    }
    let region = channels_last_region(g, &kind, &producer);
    if region.is_empty() {
        return 0;
    }
    let nhwc_values: HashSet<String> = region
        .iter()
        .flat_map(|&i| g.nodes[i].outputs.iter().cloned())
        .collect();
    let removed = fuse_residual_adds(g, &region, &nhwc_values, &shapes);
    // Removal shifted indices: find the region again by output names.
    let region: HashSet<usize> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.outputs.iter().any(|o| nhwc_values.contains(o)))
        .map(|(i, _)| i)
        .collect();
    let inner = |v: &str| format!("{v}__nhwc");
    let (_, outputs) = readers(g);
    // Readers outside the region (or graph outputs) need an NCHW copy.
    let mut outside: HashSet<String> = outputs
        .iter()
        .filter(|o| nhwc_values.contains(*o))
        .cloned()
        .collect();
    for (i, n) in g.nodes.iter().enumerate() {
        if !region.contains(&i) {
            outside.extend(node_uses(n).into_iter().filter(|u| nhwc_values.contains(u)));
        }
    }
    let old = std::mem::take(&mut g.nodes);
    let mut nodes = Vec::with_capacity(old.len() + 8);
    let mut converted: HashSet<String> = HashSet::new();
    for (i, mut n) in old.into_iter().enumerate() {
        if region.contains(&i) {
            let conv = n.op_type.ends_with("Conv");
            let data: Vec<usize> = if conv {
                vec![0, 3]
            } else if n.op_type == "Add" {
                vec![0, 1]
            } else {
                vec![0]
            };
            for k in data {
                let Some(v) = n.input(k).map(str::to_string) else {
                    continue;
                };
                if !nhwc_values.contains(&v) && converted.insert(v.clone()) {
                    nodes.push(layout_node(
                        format!("{v}__to_nhwc"),
                        "NchwToNhwc",
                        &v,
                        &inner(&v),
                    ));
                }
                n.inputs[k] = inner(&v);
            }
            if conv {
                n.op_type = "NhwcConv".into();
                n.domain = LAYOUT_DOMAIN.into();
            }
            let outs = n.outputs.clone();
            for o in &mut n.outputs {
                *o = inner(o);
            }
            nodes.push(n);
            for o in outs.iter().filter(|o| outside.contains(*o)) {
                nodes.push(layout_node(
                    format!("{o}__to_nchw"),
                    "NhwcToNchw",
                    &inner(o),
                    o,
                ));
            }
        } else {
            nodes.push(n);
        }
    }
    g.nodes = nodes;
    removed + region.len()
}

/// A node of the layout domain with one input and one output.
fn layout_node(name: String, op: &str, input: &str, output: &str) -> Node {
    let mut n = Node::new(name, op, &[input], &[output]);
    n.domain = LAYOUT_DOMAIN.into();
    n
}

/// Inside a region, `Add(conv_out, z)` where the conv is a plain 1×1 conv
/// (no activation: ONNX Runtime's `Z` is added before it) read only by the
/// Add, and `z` has the conv output's shape: `z` becomes the conv's input 3
/// and the conv takes over the Add's output. Returns the Adds removed.
fn fuse_residual_adds(
    g: &mut Graph,
    region: &HashSet<usize>,
    nhwc: &HashSet<String>,
    shapes: &HashMap<String, Vec<Dim>>,
) -> usize {
    let shape = |v: &str| shapes.get(v);
    let (count, outputs) = readers(g);
    let mut fused: Vec<(usize, usize, String)> = Vec::new();
    let mut used: HashSet<usize> = HashSet::new();
    for &j in region {
        let add = &g.nodes[j];
        if !is_onnx(add, "Add") {
            continue;
        }
        for (a, z) in [(0, 1), (1, 0)] {
            // Z may come from outside the region (it is converted then).
            let (av, zv) = (&add.inputs[a], &add.inputs[z]);
            if !nhwc.contains(av) {
                continue;
            }
            let Some(i) = sole_reader_producer(g, av, &count, &outputs) else {
                continue;
            };
            let conv = &g.nodes[i];
            // Z must exist when the conv runs (a graph input always does).
            let z_before = g
                .nodes
                .iter()
                .position(|n| n.outputs.iter().any(|o| o == zv))
                .is_none_or(|p| p < i);
            let plain = !conv.attrs.contains_key("activation") && z_before;
            let pointwise = region.contains(&i) && nhwc_conv_kind(g, conv) == Some(false);
            if plain && pointwise && !used.contains(&i) && same_shape(shape(av), shape(zv)) {
                used.insert(i);
                fused.push((i, j, zv.clone()));
                break;
            }
        }
    }
    for (i, j, z) in &fused {
        let y = g.nodes[*j].outputs[0].clone();
        let conv = &mut g.nodes[*i];
        conv.inputs.resize(3, String::new());
        conv.inputs.push(z.clone());
        conv.outputs[0] = y;
    }
    let drop: HashSet<usize> = fused.iter().map(|f| f.1).collect();
    let mut k = 0;
    g.nodes.retain(|_| {
        k += 1;
        !drop.contains(&(k - 1))
    });
    drop.len()
}

/// The node producing `value` when `value` has exactly one reader and is
/// not a graph output.
fn sole_reader_producer(
    g: &Graph,
    value: &str,
    count: &HashMap<String, usize>,
    outputs: &HashSet<String>,
) -> Option<usize> {
    if outputs.contains(value) || count.get(value) != Some(&1) {
        return None;
    }
    g.nodes
        .iter()
        .position(|n| n.outputs.iter().any(|o| o == value))
}

/// The nodes worth running channels-last: `kind` holds the candidates
/// (`Some(depthwise?)` for a conv, `None` for a joining op such as an add),
/// `producer` the candidate that writes each value. Candidates linked by
/// values form components; a component is kept when it has at least two
/// convs and a depthwise one (a lone conv would pay two layout conversions
/// for nothing). Shared by the fp32 rewrite here and the int8 one
/// (`lower::nhwc`).
pub(crate) fn channels_last_region(
    g: &Graph,
    kind: &HashMap<usize, Option<bool>>,
    producer: &HashMap<String, usize>,
) -> HashSet<usize> {
    let mut parent: HashMap<usize, usize> = kind.keys().map(|&i| (i, i)).collect();
    fn root(p: &mut HashMap<usize, usize>, mut i: usize) -> usize {
        while p[&i] != i {
            let up = p[&p[&i]];
            p.insert(i, up);
            i = up;
        }
        i
    }
    for &i in kind.keys() {
        for v in &g.nodes[i].inputs {
            if let Some(&j) = producer.get(v) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent.insert(a, b);
            }
        }
    }
    let mut stats: HashMap<usize, (usize, bool)> = HashMap::new();
    let members: Vec<usize> = kind.keys().copied().collect();
    for &i in &members {
        let r = root(&mut parent, i);
        let e = stats.entry(r).or_default();
        if let Some(dw) = kind[&i] {
            e.0 += 1;
            e.1 |= dw;
        }
    }
    members
        .into_iter()
        .filter(|&i| {
            let (convs, dw) = stats[&root(&mut parent, i)];
            convs >= 2 && dw
        })
        .collect()
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
    /// (Conv 1×1 + residual Add of the depthwise input, from outside the
    /// region) → (Conv 1×1 + residual Add, the conv output second) → Conv
    /// 1×1 → [out]; Flatten → Gemm → Relu →
    /// [logits]; plus a Conv whose output is also a graph output (must not
    /// fuse). The depthwise conv and the 1×1 convs form a channels-last
    /// region.
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
        init(&mut g, "wr", t(&[8, 8, 1, 1], 12));
        init(&mut g, "br", t(&[8], 13));
        init(&mut g, "wr2", t(&[8, 8, 1, 1], 14));
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
            Node::new("pr", "Conv", &["a1", "wr", "br"], &["q"]),
            Node::new("res", "Add", &["q", "a0"], &["r"]),
            Node::new("pr2", "Conv", &["r", "wr2"], &["q2"]),
            Node::new("res2", "Add", &["r", "q2"], &["r2"]),
            Node::new("pw", "Conv", &["r2", "wp"], &["p"]),
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
        // BN, Clip, Relu after dw, Relu after Gemm (not the Relu reading the
        // graph output `p`), the residual Adds, and the region's five nodes
        // (four convs and that Relu, which runs in NHWC too).
        assert_eq!(removed, 11, "{:#?}", fused.nodes);
        let ops: Vec<&str> = fused.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "FusedConv",
                "NchwToNhwc",
                "NhwcConv",
                "NhwcConv",
                "NhwcConv",
                "NhwcConv",
                "NhwcToNchw",
                "Relu",
                "NhwcToNchw",
                "Flatten",
                "FusedGemm"
            ]
        );
        // The residual Adds became the 1×1 convs' Z, read in NHWC.
        let pr = &fused.nodes[3];
        assert_eq!(pr.inputs[3], "a0__nhwc");
        assert_eq!(pr.outputs, ["r__nhwc"]);
        let pr2 = &fused.nodes[4];
        assert_eq!(pr2.inputs[3], "r__nhwc");
        assert_eq!(pr2.outputs, ["r2__nhwc"]);
        assert!(fused.nodes[2].attrs.contains_key("activation"));
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
        assert_eq!(session.planned_graph().nodes.len(), 11);
        // The session still shows the graph as given.
        assert_eq!(session.graph(), &g);
        // The BN-folded conv's old weights and the BN parameters are gone.
        for k in ["w0", "b0", "gamma", "beta", "mean", "var", "lo", "hi"] {
            // (the 1×1 convs' weights stay: NhwcConv packs them on first run)
            assert!(!session.planned_graph().initializers.contains_key(k), "{k}");
        }
        // Two threads and a batch big enough to split the NHWC kernels.
        let session2 = Session::new(
            g.clone(),
            SessionOptions {
                threads: 2,
                ..Default::default()
            },
        )
        .unwrap();
        for (batch, s) in [(1, &session), (3, &session), (64, &session2)] {
            let x = t(&[batch, 3, 9, 9], 20 + batch as u32);
            let want = reference.run(vec![x.clone()]).unwrap();
            let got = s.run(vec![x]).unwrap();
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
