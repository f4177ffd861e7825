//! Structured pruning with physical removal: filters, channels, neurons and
//! whole residual branches leave the graph, so shapes, MACs and latency fall.
//!
//! The unit of removal is a **channel group**: the set of values whose
//! channel axis (axis 1, NCHW or `[N, F]`) is tied. Channel `c` is created
//! by the *sources* of the group (filter `c` of a Conv, row `c` of a Gemm),
//! carried unchanged through per-channel ops (BatchNormalization, Relu,
//! Clip, pooling, a depthwise Conv, a residual `Add` — the Add ties the
//! channels of both its operands, so a residual stage is pruned together or
//! not at all), and read by *consumers* (input channel `c` of a Conv, input
//! column `c` of a Gemm, or the block of `H·W` columns a `Flatten` puts in
//! front of a Gemm). Removing channel `c` slices all of them; the graph
//! computes exactly what the original computes with the consumers' weights
//! for `c` zeroed ([`zero_channels`] builds that reference).
//!
//! A group touching anything else (a graph output, a Concat, a Reshape, an
//! initializer shared between nodes…) is *blocked* and left alone, with the
//! reason recorded: correctness first, coverage second.

use super::{pass_error, tensor_error};
use crate::{PassRecord, Result};
use shrink_graph::analysis::{layer_stats, totals};
use shrink_graph::{eliminate_dead_nodes, infer_shapes, value_types, Attr, Graph};
use shrink_tensor::Tensor;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How a channel's importance is measured from its source filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Criterion {
    /// Σ|w| over the filter (Li et al. 2017).
    #[default]
    L1,
    /// √Σw².
    L2,
}

impl std::str::FromStr for Criterion {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Criterion, String> {
        match s {
            "l1" | "L1" => Ok(Criterion::L1),
            "l2" | "L2" => Ok(Criterion::L2),
            _ => Err(format!("unknown criterion '{s}' (expected l1 or l2)")),
        }
    }
}

/// What a sliced tensor is to its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A source's weight or bias: channel `c` is produced here.
    Source,
    /// A per-channel parameter on the way (BN statistics, depthwise filters).
    Carrier,
    /// A consumer's weight: channel `c` is read here.
    Consumer,
}

/// One tensor to slice when channels go: along `axis`, `block` consecutive
/// entries per channel (H·W for a Gemm behind a Flatten, else 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub tensor: String,
    pub axis: usize,
    pub block: usize,
    pub role: Role,
}

/// A set of values with tied channels, and everything removing one touches.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelGroup {
    pub channels: usize,
    /// The tied values, in graph order.
    pub values: Vec<String>,
    /// Nodes creating the channels (Conv filters, Gemm neurons).
    pub sources: Vec<String>,
    /// Op types of the sources (`Conv`, `Gemm`).
    pub source_ops: Vec<String>,
    pub slices: Vec<Slice>,
    /// Depthwise Convs whose `group` attribute follows the channel count.
    pub depthwise: Vec<String>,
    /// True when a residual `Add` ties the channels.
    pub residual: bool,
    /// Why the group cannot be pruned, if it cannot.
    pub blocked: Option<String>,
}

impl ChannelGroup {
    pub fn prunable(&self) -> bool {
        self.blocked.is_none()
    }

    /// True when every source is a Conv (filters), false when any is a Gemm (neurons).
    pub fn is_conv(&self) -> bool {
        self.source_ops.iter().all(|o| o == "Conv")
    }
}

/// Ops that keep channel `c` in channel `c` (input 0 → output 0).
const CARRIERS: &[&str] = &[
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Softplus",
    "Identity",
    "Dropout",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "BatchNormalization",
];

/// Finds the channel groups of `g` (prunable and blocked), ordered by their
/// first source in graph order.
pub fn channel_groups(g: &Graph) -> Result<Vec<ChannelGroup>> {
    let pass = "channel-groups";
    let mut typed = g.clone();
    infer_shapes(&mut typed)?;
    let types = value_types(&typed);
    let shape = |v: &str| types.get(v).and_then(|t| t.concrete_shape_tail());
    let init = |v: &str| g.initializers.contains_key(v);

    // Uses of each initializer, to refuse slicing a shared one.
    let mut init_uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.nodes {
        for i in &n.inputs {
            if init(i) {
                *init_uses.entry(i.as_str()).or_default() += 1;
            }
        }
    }

    let mut uf = UnionFind::default();
    // Per value: sources, slices, blocks, found while walking nodes.
    let mut sources: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut slices: HashMap<String, Vec<Slice>> = HashMap::new();
    let mut depthwise: HashMap<String, Vec<String>> = HashMap::new();
    let mut blocks: HashMap<String, String> = HashMap::new();
    let mut residual: HashSet<String> = HashSet::new();
    let mut channels: HashMap<String, usize> = HashMap::new();
    let block = |blocks: &mut HashMap<String, String>, v: &str, why: String| {
        blocks.entry(v.to_string()).or_insert(why);
    };
    let mut consumed_ok: HashSet<(usize, usize)> = HashSet::new();
    let mut produced_ok: HashSet<String> = HashSet::new();

    let consumers = g.consumers();
    for (ni, n) in g.nodes.iter().enumerate() {
        let op = n.op_type.as_str();
        let x = n.input(0).unwrap_or("");
        let y = n.outputs.first().map(String::as_str).unwrap_or("");
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            continue;
        }
        match op {
            "Conv" => {
                let Some(w) = n.input(1).filter(|w| init(w)) else {
                    continue;
                };
                let ws = g.initializers[w].shape().to_vec();
                let groups = n.attr_int("group", 1).unwrap_or(1) as usize;
                let bias = n.input(2).filter(|b| init(b));
                if groups == 1 {
                    uf.add(x);
                    uf.add(y);
                    consumed_ok.insert((ni, 0));
                    slices.entry(x.to_string()).or_default().push(Slice {
                        tensor: w.to_string(),
                        axis: 1,
                        block: 1,
                        role: Role::Consumer,
                    });
                    produced_ok.insert(y.to_string());
                    channels.insert(y.to_string(), ws[0]);
                    sources
                        .entry(y.to_string())
                        .or_default()
                        .push((n.name.clone(), "Conv".into()));
                    let s = slices.entry(y.to_string()).or_default();
                    s.push(Slice {
                        tensor: w.to_string(),
                        axis: 0,
                        block: 1,
                        role: Role::Source,
                    });
                    if let Some(b) = bias {
                        s.push(Slice {
                            tensor: b.to_string(),
                            axis: 0,
                            block: 1,
                            role: Role::Source,
                        });
                    }
                    for t in [Some(w), bias].into_iter().flatten() {
                        if init_uses[t] > 1 {
                            block(&mut blocks, x, format!("initializer '{t}' is shared"));
                            block(&mut blocks, y, format!("initializer '{t}' is shared"));
                        }
                    }
                } else if ws[0] == groups && ws[1] == 1 {
                    // Depthwise (multiplier 1): carries channels through.
                    uf.union(x, y);
                    consumed_ok.insert((ni, 0));
                    produced_ok.insert(y.to_string());
                    let s = slices.entry(y.to_string()).or_default();
                    for t in [Some(w), bias].into_iter().flatten() {
                        s.push(Slice {
                            tensor: t.to_string(),
                            axis: 0,
                            block: 1,
                            role: Role::Carrier,
                        });
                        if init_uses[t] > 1 {
                            block(&mut blocks, y, format!("initializer '{t}' is shared"));
                        }
                    }
                    depthwise
                        .entry(y.to_string())
                        .or_default()
                        .push(n.name.clone());
                }
            }
            "Gemm" => {
                let Some(w) = n.input(1).filter(|w| init(w)) else {
                    continue;
                };
                if g.initializers[w].rank() != 2 || n.attr_int("transA", 0).unwrap_or(0) != 0 {
                    continue;
                }
                let trans_b = n.attr_int("transB", 0).unwrap_or(0) != 0;
                let (out_axis, in_axis) = if trans_b { (0, 1) } else { (1, 0) };
                let ws = g.initializers[w].shape().to_vec();
                uf.add(x);
                uf.add(y);
                consumed_ok.insert((ni, 0));
                slices.entry(x.to_string()).or_default().push(Slice {
                    tensor: w.to_string(),
                    axis: in_axis,
                    block: 1,
                    role: Role::Consumer,
                });
                produced_ok.insert(y.to_string());
                channels.insert(y.to_string(), ws[out_axis]);
                sources
                    .entry(y.to_string())
                    .or_default()
                    .push((n.name.clone(), "Gemm".into()));
                let s = slices.entry(y.to_string()).or_default();
                s.push(Slice {
                    tensor: w.to_string(),
                    axis: out_axis,
                    block: 1,
                    role: Role::Source,
                });
                let bias = n
                    .input(2)
                    .filter(|b| init(b) && g.initializers[*b].len() == ws[out_axis]);
                if let Some(b) = bias {
                    s.push(Slice {
                        tensor: b.to_string(),
                        axis: g.initializers[b].rank().saturating_sub(1),
                        block: 1,
                        role: Role::Source,
                    });
                } else if let Some(b) = n.input(2) {
                    if !(init(b) && g.initializers[b].len() == 1) {
                        block(&mut blocks, y, format!("bias '{b}' is not per-neuron"));
                    }
                }
                for t in [Some(w), bias].into_iter().flatten() {
                    if init_uses[t] > 1 {
                        block(&mut blocks, x, format!("initializer '{t}' is shared"));
                        block(&mut blocks, y, format!("initializer '{t}' is shared"));
                    }
                }
            }
            "Flatten" => {
                let gemms: Option<Vec<usize>> = consumers.get(y).map(|cs| {
                    cs.iter()
                        .copied()
                        .filter(|&c| {
                            let cn = &g.nodes[c];
                            cn.op_type == "Gemm"
                                && cn.input(0) == Some(y)
                                && cn.input(1).is_some_and(init)
                                && cn.attr_int("transA", 0).unwrap_or(0) == 0
                        })
                        .collect()
                });
                let all_gemm = gemms.as_ref().map(Vec::len) == consumers.get(y).map(Vec::len);
                let Some(xs) = shape(x) else { continue };
                if n.attr_int("axis", 1).unwrap_or(1) != 1 || !all_gemm || xs.len() < 2 {
                    continue;
                }
                let blk: usize = xs[2..].iter().product();
                uf.add(x);
                consumed_ok.insert((ni, 0));
                for c in gemms.unwrap_or_default() {
                    let cn = &g.nodes[c];
                    let w = cn.inputs[1].clone();
                    let trans_b = cn.attr_int("transB", 0).unwrap_or(0) != 0;
                    if init_uses[w.as_str()] > 1 {
                        block(&mut blocks, x, format!("initializer '{w}' is shared"));
                    }
                    slices.entry(x.to_string()).or_default().push(Slice {
                        tensor: w,
                        axis: if trans_b { 1 } else { 0 },
                        block: blk,
                        role: Role::Consumer,
                    });
                }
            }
            "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Sum" => {
                let data: Vec<&str> = n
                    .inputs
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !s.is_empty())
                    .collect();
                let consts: Vec<&&str> = data.iter().filter(|s| init(s)).collect();
                let vars: Vec<&str> = data.iter().copied().filter(|s| !init(s)).collect();
                if consts.iter().any(|c| g.initializers[**c].len() != 1) || vars.is_empty() {
                    continue;
                }
                let s0 = shape(vars[0]);
                if vars.iter().any(|v| shape(v) != s0) || s0.is_none() {
                    continue;
                }
                uf.add(y);
                for (pos, inp) in n.inputs.iter().enumerate() {
                    if !init(inp) && !inp.is_empty() {
                        uf.union(inp, y);
                        consumed_ok.insert((ni, pos));
                    }
                }
                produced_ok.insert(y.to_string());
                if vars.len() > 1 && op == "Add" {
                    residual.insert(y.to_string());
                }
            }
            _ if CARRIERS.contains(&op) => {
                if x.is_empty() || n.outputs.iter().filter(|o| !o.is_empty()).count() > 1 {
                    continue;
                }
                uf.union(x, y);
                consumed_ok.insert((ni, 0));
                produced_ok.insert(y.to_string());
                if op == "BatchNormalization" {
                    let s = slices.entry(y.to_string()).or_default();
                    for p in n.inputs.iter().skip(1) {
                        s.push(Slice {
                            tensor: p.clone(),
                            axis: 0,
                            block: 1,
                            role: Role::Carrier,
                        });
                        if !init(p) {
                            block(
                                &mut blocks,
                                y,
                                format!("BatchNorm parameter '{p}' is computed"),
                            );
                        } else if init_uses[p.as_str()] > 1 {
                            block(&mut blocks, y, format!("initializer '{p}' is shared"));
                        }
                    }
                } else if op == "Clip" {
                    // Clip bounds are scalars; a bound in the group would be odd.
                }
            }
            _ => {}
        }
    }
    // Every use of a tracked value must be one the walk understood.
    for (ni, n) in g.nodes.iter().enumerate() {
        for (pos, inp) in n.inputs.iter().enumerate() {
            if uf.contains(inp) && !consumed_ok.contains(&(ni, pos)) {
                block(
                    &mut blocks,
                    inp,
                    format!("read by {} '{}' (input {pos})", n.op_type, n.name),
                );
            }
        }
        for (_, a) in n.attrs.iter() {
            if matches!(a, Attr::Graph(_) | Attr::Graphs(_)) {
                for u in shrink_graph::node_uses(n) {
                    if uf.contains(&u) {
                        block(
                            &mut blocks,
                            &u,
                            format!("captured by subgraph of '{}'", n.name),
                        );
                    }
                }
            }
        }
    }
    for o in &g.outputs {
        if uf.contains(&o.name) {
            block(&mut blocks, &o.name, "a graph output".into());
        }
    }
    for v in uf.names() {
        if !produced_ok.contains(&v) && !blocks.contains_key(&v) {
            let why = if g.inputs.iter().any(|i| i.name == v) {
                "a graph input".to_string()
            } else {
                "produced by an op that does not keep channels".to_string()
            };
            block(&mut blocks, &v, why);
        }
    }

    // Gather per root, in graph order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut by_root: HashMap<String, ChannelGroup> = HashMap::new();
    let mut visit = |v: &str, uf: &mut UnionFind| {
        if !uf.contains(v) {
            return;
        }
        let r = uf.find(v);
        let grp = by_root.entry(r.clone()).or_insert_with(|| {
            order.push(r.clone());
            ChannelGroup {
                channels: 0,
                values: Vec::new(),
                sources: Vec::new(),
                source_ops: Vec::new(),
                slices: Vec::new(),
                depthwise: Vec::new(),
                residual: false,
                blocked: None,
            }
        });
        if grp.values.iter().any(|x| x == v) {
            return;
        }
        grp.values.push(v.to_string());
        for (s, op) in sources.get(v).cloned().unwrap_or_default() {
            grp.sources.push(s);
            grp.source_ops.push(op);
        }
        grp.slices
            .extend(slices.get(v).cloned().unwrap_or_default());
        grp.depthwise
            .extend(depthwise.get(v).cloned().unwrap_or_default());
        grp.residual |= residual.contains(v);
        if let Some(c) = channels.get(v) {
            if grp.channels != 0 && grp.channels != *c && grp.blocked.is_none() {
                grp.blocked = Some(format!("channel counts {} and {c} disagree", grp.channels));
            }
            grp.channels = *c;
        }
        if grp.blocked.is_none() {
            if let Some(why) = blocks.get(v) {
                grp.blocked = Some(format!("'{v}' is {why}"));
            }
        }
    };
    for i in g.inputs.iter() {
        visit(&i.name, &mut uf);
    }
    for n in &g.nodes {
        for v in n.inputs.iter().chain(&n.outputs) {
            visit(v, &mut uf);
        }
    }
    let mut groups: Vec<ChannelGroup> = order
        .into_iter()
        .map(|r| by_root.remove(&r).expect("root seen"))
        .filter(|grp| !grp.sources.is_empty())
        .collect();
    // Every slice must have `channels * block` entries on its axis.
    for grp in &mut groups {
        if grp.blocked.is_some() {
            continue;
        }
        for s in &grp.slices {
            let t = g
                .initializers
                .get(&s.tensor)
                .ok_or_else(|| tensor_error(pass, &s.tensor, "no such initializer"))?;
            if t.shape().get(s.axis) != Some(&(grp.channels * s.block)) {
                grp.blocked = Some(format!(
                    "'{}' has shape {:?}, expected {} × {} on axis {}",
                    s.tensor,
                    t.shape(),
                    grp.channels,
                    s.block,
                    s.axis
                ));
                break;
            }
        }
    }
    Ok(groups)
}

/// Importance of each channel of `group`: the norm of its source filters,
/// summed over the sources (all Convs feeding a residual Add count).
pub fn channel_importance(
    g: &Graph,
    group: &ChannelGroup,
    criterion: Criterion,
) -> Result<Vec<f64>> {
    let mut score = vec![0.0f64; group.channels];
    for s in group.slices.iter().filter(|s| s.role == Role::Source) {
        let t = &g.initializers[&s.tensor];
        if t.rank() < 2 {
            continue; // biases do not say how much a filter matters
        }
        let v = t
            .as_slice::<f32>()
            .map_err(|_| tensor_error("structured-prune", &s.tensor, "expected f32 weights"))?;
        let shape = t.shape();
        let inner: usize = shape[s.axis + 1..].iter().product();
        let len = shape[s.axis];
        let mut per = vec![0.0f64; group.channels];
        for (i, &x) in v.iter().enumerate() {
            let c = (i / inner) % len / s.block;
            per[c] += match criterion {
                Criterion::L1 => x.abs() as f64,
                Criterion::L2 => (x as f64) * (x as f64),
            };
        }
        for (acc, p) in score.iter_mut().zip(per) {
            *acc += match criterion {
                Criterion::L1 => p,
                Criterion::L2 => p.sqrt(),
            };
        }
    }
    Ok(score)
}

/// Which channels of which group survive: group index (into
/// [`channel_groups`]' list) → kept channel indices, ascending.
pub type ChannelPlan = BTreeMap<usize, Vec<usize>>;

/// Keeps the `keep` highest-scoring channels (ties: lower index), ascending.
pub fn top_channels(score: &[f64], keep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = idx.into_iter().take(keep).collect();
    kept.sort_unstable();
    kept
}

/// Physically removes the channels `plan` drops: sources lose filters
/// (rows) and biases, BatchNorm and depthwise Convs lose channels, consumers
/// lose input channels (columns, or column blocks behind a Flatten). Shapes
/// are re-inferred; dead nodes are dropped.
pub fn remove_channels(
    g: &Graph,
    groups: &[ChannelGroup],
    plan: &ChannelPlan,
) -> Result<(Graph, PassRecord)> {
    let pass = "structured-prune";
    let mut out = g.clone();
    let mut rec = PassRecord::new(pass);
    let before = totals(&layer_stats(g));
    for (&gi, keep) in plan {
        let grp = groups.get(gi).ok_or_else(|| {
            pass_error(
                pass,
                format!("plan names group {gi}, graph has {}", groups.len()),
            )
        })?;
        if let Some(why) = &grp.blocked {
            return Err(pass_error(
                pass,
                format!("group of {:?} cannot be pruned: {why}", grp.sources),
            ));
        }
        check_keep(pass, grp, keep)?;
        if keep.len() == grp.channels {
            continue;
        }
        for s in &grp.slices {
            let t = &out.initializers[&s.tensor];
            let sliced = gather_axis(t, s.axis, s.block, keep)?;
            out.initializers.insert(s.tensor.clone(), sliced);
        }
        for d in &grp.depthwise {
            if let Some(n) = out.nodes.iter_mut().find(|n| &n.name == d) {
                n.attrs.insert("group".into(), Attr::Int(keep.len() as i64));
            }
        }
        for v in &grp.values {
            out.value_info.shift_remove(v);
        }
        rec.change(format!(
            "{}: {} → {} channels{}",
            grp.sources.join(" + "),
            grp.channels,
            keep.len(),
            if grp.residual {
                " (residual group)"
            } else {
                ""
            }
        ));
    }
    infer_shapes(&mut out)?;
    eliminate_dead_nodes(&mut out);
    let after = totals(&layer_stats(&out));
    rec.metric("params_before", before.params as f64);
    rec.metric("params_after", after.params as f64);
    if let (Some(b), Some(a)) = (before.macs, after.macs) {
        rec.metric("macs_before", b as f64);
        rec.metric("macs_after", a as f64);
        rec.metric("macs_fraction", a as f64 / b.max(1) as f64);
    }
    Ok((out, rec))
}

/// The same plan as masks: every consumer's weights for a dropped channel
/// (and the source filter and bias) set to zero, shapes unchanged. The
/// physically pruned graph must compute what this graph computes.
pub fn zero_channels(g: &Graph, groups: &[ChannelGroup], plan: &ChannelPlan) -> Result<Graph> {
    let pass = "structured-prune";
    let mut out = g.clone();
    for (&gi, keep) in plan {
        let grp = groups
            .get(gi)
            .ok_or_else(|| pass_error(pass, format!("plan names group {gi}")))?;
        check_keep(pass, grp, keep)?;
        let kept: HashSet<usize> = keep.iter().copied().collect();
        for s in grp.slices.iter().filter(|s| s.role != Role::Carrier) {
            let t = out.initializers[&s.tensor].clone();
            let shape = t.shape().to_vec();
            let inner: usize = shape[s.axis + 1..].iter().product();
            let len = shape[s.axis];
            let mut v = t
                .into_vec::<f32>()
                .map_err(|_| tensor_error(pass, &s.tensor, "expected f32"))?;
            for (i, x) in v.iter_mut().enumerate() {
                if !kept.contains(&((i / inner) % len / s.block)) {
                    *x = 0.0;
                }
            }
            out.initializers
                .insert(s.tensor.clone(), Tensor::from_vec(shape, v)?);
        }
    }
    Ok(out)
}

fn check_keep(pass: &str, grp: &ChannelGroup, keep: &[usize]) -> Result<()> {
    if keep.is_empty()
        || keep.windows(2).any(|w| w[0] >= w[1])
        || keep.iter().any(|&c| c >= grp.channels)
    {
        return Err(pass_error(
            pass,
            format!(
                "kept channels of {:?} must be ascending, distinct, non-empty and < {}",
                grp.sources, grp.channels
            ),
        ));
    }
    Ok(())
}

/// Keeps, along `axis`, the entries of the channels in `keep` (each channel
/// owning `block` consecutive entries).
pub fn gather_axis(t: &Tensor, axis: usize, block: usize, keep: &[usize]) -> Result<Tensor> {
    let shape = t.shape().to_vec();
    let outer: usize = shape[..axis].iter().product();
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let idx: Vec<usize> = keep
        .iter()
        .flat_map(|&c| c * block..(c + 1) * block)
        .collect();
    fn pick<T: Clone>(v: &[T], outer: usize, len: usize, inner: usize, idx: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in idx {
                let at = (o * len + i) * inner;
                out.extend_from_slice(&v[at..at + inner]);
            }
        }
        out
    }
    let data = shrink_tensor::map_data!(t.data(), v => pick(v, outer, len, inner, &idx));
    let mut new_shape = shape;
    new_shape[axis] = idx.len();
    Ok(Tensor::new(new_shape, data)?)
}

/// Options of [`prune_channels`].
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Fraction of the model's MACs to keep (e.g. 0.5); the uniform per-group
    /// removal ratio is searched to meet it.
    pub macs_fraction: f64,
    pub criterion: Criterion,
    /// Prune Conv filters/channels.
    pub filters: bool,
    /// Prune Gemm neurons (rows, with the next layer's columns).
    pub neurons: bool,
    /// Prune residual groups (channels tied across Adds, all together).
    pub residual: bool,
    /// Channels every group keeps at least.
    pub min_channels: usize,
    /// Source node names whose groups stay whole.
    pub exclude: Vec<String>,
    /// Kept channel counts are rounded to the nearest multiple of this (0 or
    /// 1: no rounding) in every group wider than it. GEMM and conv kernels
    /// work in SIMD-width tiles of output channels (8 f32 lanes on AVX2):
    /// 45 channels cost as much as 48 and leave a scalar tail, so NNCF and
    /// AIMET round pruned widths the same way. The MACs budget still holds:
    /// the search sees the rounded counts.
    pub align: usize,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            macs_fraction: 0.5,
            criterion: Criterion::L1,
            filters: true,
            neurons: false,
            residual: true,
            min_channels: 1,
            exclude: Vec::new(),
            align: 0,
        }
    }
}

/// The plan removing `ratio` of every eligible group's channels (rounded
/// down, keeping at least `min_channels`), lowest importance first.
pub fn uniform_plan(
    g: &Graph,
    groups: &[ChannelGroup],
    ratio: f64,
    opts: &ChannelOptions,
) -> Result<ChannelPlan> {
    let mut plan = ChannelPlan::new();
    for (gi, grp) in groups.iter().enumerate() {
        if !eligible(grp, opts) {
            continue;
        }
        let drop = ((ratio * grp.channels as f64).floor() as usize)
            .min(grp.channels.saturating_sub(opts.min_channels.max(1)));
        let keep = aligned_keep(grp.channels, grp.channels - drop, opts.align);
        if keep >= grp.channels {
            continue;
        }
        let score = channel_importance(g, grp, opts.criterion)?;
        plan.insert(gi, top_channels(&score, keep));
    }
    Ok(plan)
}

/// `keep` rounded to the nearest multiple of `align` (at least `align`, at
/// most `channels`). So a group exactly `align` wide is kept whole: it fills
/// one SIMD vector, and pruning it off the kernels' full-vector paths costs
/// more than its MACs save (measured: MobileNetV2-tiny's 16-channel stem
/// pruned to 11 made the following depthwise conv 2× slower). Groups
/// narrower than `align` (LeNet-5's 6-filter conv1 at align 8) cannot be
/// rounded and are pruned as asked. Non-increasing in the ratio removed, so
/// the MACs bisection stays valid.
pub fn aligned_keep(channels: usize, keep: usize, align: usize) -> usize {
    if align <= 1 || channels < align {
        return keep;
    }
    ((keep + align / 2) / align * align).clamp(align, channels)
}

fn eligible(grp: &ChannelGroup, opts: &ChannelOptions) -> bool {
    grp.prunable()
        && (if grp.is_conv() {
            opts.filters
        } else {
            opts.neurons
        })
        && (opts.residual || !grp.residual)
        && !grp.sources.iter().any(|s| opts.exclude.contains(s))
}

/// Structured pruning to a MACs budget: finds (by bisection) the smallest
/// uniform ratio whose physical removal leaves at most `macs_fraction` of
/// the MACs, and applies it. Errors if the eligible groups cannot get there.
pub fn prune_channels(g: &Graph, opts: &ChannelOptions) -> Result<(Graph, PassRecord)> {
    let pass = "structured-prune";
    super::check_fraction(pass, "macs_fraction", opts.macs_fraction)?;
    let groups = channel_groups(g)?;
    let macs = |gr: &Graph| totals(&layer_stats(gr)).macs;
    let base = macs(g)
        .ok_or_else(|| pass_error(pass, "MACs unknown: the input shape is not fully known"))?;
    let goal = opts.macs_fraction * base as f64;
    let eval = |ratio: f64| -> Result<(Graph, PassRecord, f64)> {
        let plan = uniform_plan(g, &groups, ratio, opts)?;
        let (pg, rec) = remove_channels(g, &groups, &plan)?;
        let m = macs(&pg).unwrap_or(base) as f64;
        Ok((pg, rec, m))
    };
    let (mut pg, mut rec, m_hi) = eval(1.0)?;
    if m_hi > goal {
        return Err(pass_error(
            pass,
            format!(
                "even removing all but {} channel(s) of every eligible group leaves {:.1}% of the MACs (goal {:.1}%)",
                opts.min_channels,
                100.0 * m_hi / base as f64,
                100.0 * opts.macs_fraction
            ),
        ));
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..24 {
        let mid = 0.5 * (lo + hi);
        let (g2, r2, m) = eval(mid)?;
        if m <= goal {
            hi = mid;
            pg = g2;
            rec = r2;
        } else {
            lo = mid;
        }
    }
    rec.options
        .insert("macs_fraction".into(), opts.macs_fraction.to_string());
    rec.options.insert(
        "criterion".into(),
        format!("{:?}", opts.criterion).to_lowercase(),
    );
    rec.metric("ratio", hi);
    let blocked: Vec<String> = groups
        .iter()
        .filter_map(|grp| {
            grp.blocked
                .as_ref()
                .map(|b| format!("{}: {b}", grp.sources.join(" + ")))
        })
        .collect();
    for b in blocked {
        rec.change(format!("kept whole: {b}"));
    }
    Ok((pg, rec))
}

/// A residual branch: `add = skip + branch(skip)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualBranch {
    /// The Add node.
    pub add: String,
    /// The identity (skip) value.
    pub skip: String,
    /// The branch's output value.
    pub branch: String,
    /// Nodes only the branch uses.
    pub nodes: Vec<String>,
}

/// Finds every `Add(x, f(x))` where `f` is a subgraph reading only `x`
/// (and constants): removing `f` leaves the identity, which is what makes
/// layer removal safe in a residual network.
pub fn residual_branches(g: &Graph) -> Vec<ResidualBranch> {
    let prod = g.producers();
    let consumers = g.consumers();
    let mut out = Vec::new();
    for n in g
        .nodes
        .iter()
        .filter(|n| n.op_type == "Add" && n.inputs.len() == 2)
    {
        for (s, b) in [(0, 1), (1, 0)] {
            let (skip, branch) = (&n.inputs[s], &n.inputs[b]);
            // Walk back from the branch output until the skip value.
            let mut nodes: Vec<usize> = Vec::new();
            let mut stack = vec![branch.clone()];
            let mut ok = true;
            let mut reached = false;
            while let Some(v) = stack.pop() {
                if &v == skip {
                    reached = true;
                    continue;
                }
                if g.initializers.contains_key(&v) {
                    continue;
                }
                let Some(&pi) = prod.get(v.as_str()) else {
                    ok = false; // a graph input other than the skip
                    break;
                };
                if nodes.contains(&pi) {
                    continue;
                }
                nodes.push(pi);
                stack.extend(g.nodes[pi].inputs.iter().filter(|i| !i.is_empty()).cloned());
            }
            if !ok || !reached {
                continue;
            }
            // The branch's inner values must not escape it.
            let inside: HashSet<usize> = nodes.iter().copied().collect();
            let escapes = nodes.iter().any(|&ni| {
                g.nodes[ni].outputs.iter().any(|o| {
                    g.outputs.iter().any(|go| &go.name == o)
                        || consumers
                            .get(o)
                            .into_iter()
                            .flatten()
                            .any(|c| !inside.contains(c) && g.nodes[*c].name != n.name)
                })
            });
            if escapes {
                continue;
            }
            nodes.sort_unstable();
            out.push(ResidualBranch {
                add: n.name.clone(),
                skip: skip.clone(),
                branch: branch.clone(),
                nodes: nodes.iter().map(|&i| g.nodes[i].name.clone()).collect(),
            });
            break;
        }
    }
    out
}

/// Removes whole residual branches (named by their Add node): readers of the
/// Add's output read the skip value instead, and the branch dies.
pub fn remove_residual_branches(g: &Graph, adds: &[String]) -> Result<(Graph, PassRecord)> {
    let pass = "remove-layers";
    let branches = residual_branches(g);
    let mut out = g.clone();
    let mut rec = PassRecord::new(pass);
    let before = totals(&layer_stats(g));
    for a in adds {
        let br = branches.iter().find(|b| &b.add == a).ok_or_else(|| {
            pass_error(
                pass,
                format!("'{a}' is not the Add of a removable residual branch"),
            )
        })?;
        let add = out
            .nodes
            .iter()
            .find(|n| &n.name == a)
            .ok_or_else(|| pass_error(pass, format!("no node '{a}'")))?;
        let y = add.outputs[0].clone();
        if out.outputs.iter().any(|o| o.name == y) {
            return Err(pass_error(
                pass,
                format!("'{a}' writes a graph output; keep it"),
            ));
        }
        for n in &mut out.nodes {
            for i in &mut n.inputs {
                if *i == y {
                    *i = br.skip.clone();
                }
            }
        }
        out.nodes.retain(|n| &n.name != a);
        rec.change(format!(
            "{a}: branch of {} node(s) removed, identity kept",
            br.nodes.len()
        ));
    }
    eliminate_dead_nodes(&mut out);
    infer_shapes(&mut out)?;
    let after = totals(&layer_stats(&out));
    if let (Some(b), Some(a)) = (before.macs, after.macs) {
        rec.metric("macs_before", b as f64);
        rec.metric("macs_after", a as f64);
    }
    Ok((out, rec))
}

/// Kernel-granularity pruning (masks): zeros the `sparsity` fraction of
/// whole kh×kw kernels `W[o, i, :, :]` of every Conv with kernels larger than
/// 1×1, lowest norm first, per layer. Shapes stay (a dense conv cannot skip
/// a kernel); the zeros are for sparse storage and kernels.
pub fn prune_kernels(
    g: &Graph,
    sparsity: f64,
    criterion: Criterion,
) -> Result<(Graph, PassRecord)> {
    let pass = "kernel-prune";
    super::check_fraction(pass, "sparsity", sparsity)?;
    let mut out = g.clone();
    let mut rec = PassRecord::new(pass).option("sparsity", sparsity);
    for w in super::prunable_weights(g)
        .into_iter()
        .filter(|w| w.op == "Conv")
    {
        let t = &g.initializers[&w.tensor];
        let k: usize = t.shape()[2..].iter().product();
        if k <= 1 {
            continue;
        }
        let mut v = super::f32_weights(g, pass, &w.tensor)?.to_vec();
        let kernels = v.len() / k;
        let score: Vec<f64> = (0..kernels)
            .map(|j| {
                let s = &v[j * k..(j + 1) * k];
                match criterion {
                    Criterion::L1 => s.iter().map(|x| x.abs() as f64).sum(),
                    Criterion::L2 => s.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(),
                }
            })
            .collect();
        let drop = ((sparsity * kernels as f64).round() as usize).min(kernels);
        let kept = top_channels(&score, kernels - drop);
        let kept: HashSet<usize> = kept.into_iter().collect();
        for j in (0..kernels).filter(|j| !kept.contains(j)) {
            v[j * k..(j + 1) * k].fill(0.0);
        }
        rec.change(format!(
            "{}: {} of {kernels} kernels zeroed",
            w.tensor, drop
        ));
        super::set_f32(&mut out, &w.tensor, v)?;
    }
    Ok((out, rec))
}

/// Union-find over value names.
#[derive(Default)]
struct UnionFind {
    parent: HashMap<String, String>,
}

impl UnionFind {
    fn add(&mut self, v: &str) {
        if !v.is_empty() {
            self.parent
                .entry(v.to_string())
                .or_insert_with(|| v.to_string());
        }
    }
    fn contains(&self, v: &str) -> bool {
        self.parent.contains_key(v)
    }
    fn find(&mut self, v: &str) -> String {
        let mut r = v.to_string();
        while self.parent[&r] != r {
            r = self.parent[&r].clone();
        }
        // Path compression.
        let mut c = v.to_string();
        while self.parent[&c] != r {
            let next = self.parent[&c].clone();
            self.parent.insert(c, r.clone());
            c = next;
        }
        r
    }
    fn union(&mut self, a: &str, b: &str) {
        if a.is_empty() || b.is_empty() {
            return;
        }
        self.add(a);
        self.add(b);
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(rb, ra);
        }
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.parent.keys().cloned().collect();
        v.sort();
        v
    }
}

trait ConcreteTail {
    fn concrete_shape_tail(&self) -> Option<Vec<usize>>;
}

impl ConcreteTail for shrink_graph::ValueInfo {
    /// The shape with a symbolic leading (batch) dimension read as 1.
    fn concrete_shape_tail(&self) -> Option<Vec<usize>> {
        let s = self.shape.as_ref()?;
        s.iter()
            .enumerate()
            .map(|(i, d)| d.known().or(if i == 0 { Some(1) } else { None }))
            .collect()
    }
}
