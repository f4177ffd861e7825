//! QDQ → QOperator: the form ONNX Runtime's `quantize_static(...,
//! quant_format=QuantFormat.QOperator)` writes, built from shrink's QDQ graph.
//!
//! In the QDQ form every quantised layer is `DQ(x_q) [+ DQ(w_q) + DQ(b_i32)]
//! → op → Q`, and the integer kernels are found by pattern matching (ORT's QDQ
//! fusion, shrink's integer planner). The QOperator form spells the integer
//! op out — tools without a QDQ fuser, or that want the fused graph as
//! written, run it as is. The rewrite, per node of the QDQ graph:
//!
//! | QDQ pattern                          | QOperator                          |
//! |--------------------------------------|------------------------------------|
//! | `DQ → Conv (w, b via DQ) → Q`        | `QLinearConv`                      |
//! | `DQ → Gemm (w, b via DQ) → Q`        | `com.microsoft QGemm` (bias in the i32 accumulator, what ORT emits) |
//! | `DQ → MatMul (w via DQ) → Q`         | `QLinearMatMul`                    |
//! | `DQ, DQ → Add → Q`                   | `com.microsoft QLinearAdd`         |
//! | `DQ → GlobalAveragePool → Q`         | `com.microsoft QLinearGlobalAveragePool` |
//! | `DQ → MaxPool/Flatten/Reshape/… → Q` (same scale and zero point) | the op on the u8 codes |
//!
//! A `Relu` between the op and its `Q` is dropped when the quantiser's zero
//! point is the bottom of its range (then saturation *is* the ReLU, exactly).
//! The graph input keeps its `QuantizeLinear`, the output its
//! `DequantizeLinear`; any pattern that does not match stays in QDQ form
//! (DQ → float op → Q), which is also what ORT does with ops it cannot
//! quantise. Arithmetic is unchanged: every QOperator op above computes the
//! canonical requantisation (COMMON §2) the integer planner uses for the same
//! QDQ pattern, so shrink runs both graphs to the same codes.

use crate::{CompressError, PassRecord, Result};
use shrink_graph::{Attr, Graph, Node};
use shrink_tensor::{DType, Tensor};
use std::collections::{HashMap, HashSet};

const PASS: &str = "qoperator";
/// Domain of ONNX Runtime's contrib ops.
pub const MS_DOMAIN: &str = "com.microsoft";

/// Ops that only move or select codes: they run on u8 as they are when their
/// input and output share scale and zero point.
const ON_CODES: &[&str] = &[
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
];

/// A quantised activation feeding a float op: `DQ(q, scale, zero)`.
#[derive(Debug, Clone)]
struct ActDq {
    q: String,
    scale: String,
    zero: String,
}

/// A quantised constant (weight or bias) behind its DequantizeLinear.
#[derive(Debug, Clone)]
struct ConstDq {
    q: String,
    scale: String,
    zero: String,
    axis: i64,
}

/// The QuantizeLinear that ends a pattern (plus an absorbed Relu).
#[derive(Debug, Clone)]
struct QAfter {
    y: String,
    scale: String,
    zero: String,
    /// Node indices the rewrite replaces (the Q, and the Relu if any).
    nodes: Vec<usize>,
}

struct Rewriter<'g> {
    g: &'g Graph,
    producers: HashMap<&'g str, usize>,
    consumers: HashMap<String, Vec<usize>>,
    outputs: HashSet<&'g str>,
}

type Match = std::result::Result<(Node, Vec<usize>), String>;

impl<'g> Rewriter<'g> {
    fn new(g: &'g Graph) -> Self {
        Rewriter {
            g,
            producers: g.producers(),
            consumers: g.consumers(),
            outputs: g.outputs.iter().map(|o| o.name.as_str()).collect(),
        }
    }

    fn init(&self, name: &str) -> Option<&'g Tensor> {
        self.g.initializers.get(name)
    }

    fn producer(&self, name: &str) -> Option<&'g Node> {
        self.producers.get(name).map(|&i| &self.g.nodes[i])
    }

    /// Whether a scale is one constant f32 (per-tensor activation quantiser).
    fn scalar_scale(&self, name: &str) -> bool {
        self.init(name)
            .is_some_and(|t| t.len() == 1 && t.dtype() == DType::F32)
    }

    fn act_dq(&self, name: &str) -> std::result::Result<ActDq, String> {
        let d = self
            .producer(name)
            .filter(|d| d.op_type == "DequantizeLinear" && d.domain.is_empty())
            .ok_or_else(|| format!("'{name}' is not a dequantised activation"))?;
        let q = d.input(0).unwrap_or("");
        if self.init(q).is_some() {
            return Err(format!("'{name}' dequantises a constant"));
        }
        let scale = d.input(1).unwrap_or("");
        if !self.scalar_scale(scale) {
            return Err(format!(
                "'{name}': activation scale is not one f32 constant"
            ));
        }
        let zero = d.input(2).unwrap_or("");
        if !zero.is_empty() && self.init(zero).is_none_or(|z| z.len() != 1) {
            return Err(format!(
                "'{name}': activation zero point is not one constant"
            ));
        }
        Ok(ActDq {
            q: q.into(),
            scale: scale.into(),
            zero: zero.into(),
        })
    }

    fn const_dq(&self, name: &str, dtypes: &[DType]) -> std::result::Result<ConstDq, String> {
        let d = self
            .producer(name)
            .filter(|d| d.op_type == "DequantizeLinear" && d.domain.is_empty())
            .ok_or_else(|| format!("'{name}' is not a dequantised constant"))?;
        let q = d.input(0).unwrap_or("");
        let t = self
            .init(q)
            .ok_or_else(|| format!("'{name}': codes are not a constant"))?;
        if !dtypes.contains(&t.dtype()) {
            return Err(format!(
                "'{q}' is {}, expected one of {dtypes:?}",
                t.dtype()
            ));
        }
        let scale = d.input(1).unwrap_or("");
        if self.init(scale).is_none_or(|s| s.dtype() != DType::F32) {
            return Err(format!("'{name}': scale is not an f32 constant"));
        }
        let zero = d.input(2).unwrap_or("");
        if !zero.is_empty() && self.init(zero).is_none() {
            return Err(format!("'{name}': zero point is not a constant"));
        }
        let axis = d.attr_int("axis", 1).map_err(|e| e.to_string())?;
        Ok(ConstDq {
            q: q.into(),
            scale: scale.into(),
            zero: zero.into(),
            axis,
        })
    }

    /// The only reader of `name`, when there is exactly one and `name` is not
    /// a graph output.
    fn sole_reader(&self, name: &str) -> Option<usize> {
        if self.outputs.contains(name) {
            return None;
        }
        match self.consumers.get(name).map(Vec::as_slice) {
            Some([i]) => Some(*i),
            _ => None,
        }
    }

    fn q_after(&self, out: &str, allow_relu: bool) -> std::result::Result<QAfter, String> {
        let mut nodes = Vec::new();
        let mut at = self
            .sole_reader(out)
            .ok_or_else(|| format!("'{out}' is not read by exactly one node"))?;
        let mut relu = false;
        if allow_relu && self.g.nodes[at].op_type == "Relu" && self.g.nodes[at].domain.is_empty() {
            nodes.push(at);
            relu = true;
            at = self
                .sole_reader(&self.g.nodes[at].outputs[0])
                .ok_or_else(|| format!("the Relu after '{out}' is not read by one node"))?;
        }
        let q = &self.g.nodes[at];
        if q.op_type != "QuantizeLinear" || !q.domain.is_empty() {
            return Err(format!("'{out}' is not quantised by its reader"));
        }
        let scale = q.input(1).unwrap_or("");
        if !self.scalar_scale(scale) {
            return Err(format!("'{out}': output scale is not one f32 constant"));
        }
        let zero = q.input(2).unwrap_or("");
        let z = if zero.is_empty() {
            None
        } else {
            Some(
                self.init(zero)
                    .filter(|z| z.len() == 1 && matches!(z.dtype(), DType::U8 | DType::I8))
                    .ok_or_else(|| {
                        format!("'{out}': output zero point is not one u8/i8 constant")
                    })?,
            )
        };
        if relu {
            // Saturation equals the ReLU only when the zero point is the
            // range's bottom (real 0 ↦ the lowest code).
            let bottom = match z {
                None => true,
                Some(t) => {
                    let v = t.to_i64_vec()[0];
                    (t.dtype() == DType::U8 && v == 0) || (t.dtype() == DType::I8 && v == -128)
                }
            };
            if !bottom {
                return Err(format!(
                    "'{out}': a Relu before a quantiser whose zero point is not the lowest code"
                ));
            }
        }
        nodes.push(at);
        Ok(QAfter {
            y: q.outputs[0].clone(),
            scale: scale.into(),
            zero: zero.into(),
            nodes,
        })
    }

    /// Same scale and zero point, by name or by value.
    fn same_q(&self, a: (&str, &str), b: (&str, &str)) -> bool {
        let eq = |x: &str, y: &str| {
            x == y
                || match (self.init(x), self.init(y)) {
                    (Some(p), Some(q)) => {
                        p.dtype() == q.dtype() && p.to_f64_vec() == q.to_f64_vec()
                    }
                    _ => false,
                }
        };
        eq(a.0, b.0) && eq(a.1, b.1)
    }

    /// Checks the i32 bias is quantised with `s_x·s_w[c]` and zero 0 — the
    /// only bias QLinearConv / QGemm can add to the accumulator.
    fn check_bias(&self, b: &ConstDq, x: &ActDq, w: &ConstDq) -> std::result::Result<(), String> {
        let bs = self
            .init(&b.scale)
            .map(|t| t.to_f32_vec())
            .unwrap_or_default();
        let sx = self
            .init(&x.scale)
            .map(|t| t.to_f32_vec()[0])
            .unwrap_or(0.0);
        let ws = self
            .init(&w.scale)
            .map(|t| t.to_f32_vec())
            .unwrap_or_default();
        let ok = bs.iter().enumerate().all(|(c, &s)| {
            let sw = ws[if ws.len() == 1 {
                0
            } else {
                c.min(ws.len() - 1)
            }];
            s == sx * sw
        });
        let zero_ok = b.zero.is_empty()
            || self
                .init(&b.zero)
                .is_some_and(|z| z.to_i64_vec().iter().all(|&v| v == 0));
        if !ok || !zero_ok {
            return Err(format!(
                "bias '{}' is not quantised with s_x·s_w and zero 0",
                b.q
            ));
        }
        Ok(())
    }

    fn new_node(&self, n: &Node, op: &str, domain: &str, inputs: Vec<String>, y: &str) -> Node {
        let mut node = Node::new(format!("{}_quant", n.name), op, &[], &[y]);
        node.domain = domain.into();
        node.inputs = inputs;
        node
    }

    fn conv(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let w = self.const_dq(n.input(1).unwrap_or(""), &[DType::I8, DType::U8])?;
        let per_channel = self.init(&w.scale).is_some_and(|s| s.len() > 1);
        if per_channel && w.axis != 0 {
            return Err(format!(
                "weight quantised along axis {}, QLinearConv needs 0",
                w.axis
            ));
        }
        let after = self.q_after(&n.outputs[0], true)?;
        let mut inputs = vec![
            x.q.clone(),
            x.scale.clone(),
            x.zero.clone(),
            w.q.clone(),
            w.scale.clone(),
            w.zero.clone(),
            after.scale,
            after.zero,
        ];
        if let Some(b) = n.input(2).filter(|b| !b.is_empty()) {
            let b = self.const_dq(b, &[DType::I32])?;
            self.check_bias(&b, &x, &w)?;
            inputs.push(b.q);
        }
        let mut node = self.new_node(n, "QLinearConv", "", inputs, &after.y);
        node.attrs = n.attrs.clone();
        Ok((node, after.nodes))
    }

    fn gemm(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let e = |e: shrink_graph::GraphError| e.to_string();
        let trans_a = n.attr_int("transA", 0).map_err(e)?;
        let trans_b = n.attr_int("transB", 0).map_err(e)?;
        let alpha = n.attr_float("alpha", 1.0).map_err(e)?;
        let beta = n.attr_float("beta", 1.0).map_err(e)?;
        if trans_a != 0 || alpha != 1.0 || beta != 1.0 {
            return Err("only Gemm with transA=0, alpha=beta=1 is converted".into());
        }
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let w = self.const_dq(n.input(1).unwrap_or(""), &[DType::I8, DType::U8])?;
        let per_channel = self.init(&w.scale).is_some_and(|s| s.len() > 1);
        let want_axis = if trans_b != 0 { 0 } else { 1 };
        if per_channel && w.axis != want_axis {
            return Err(format!(
                "weight quantised along axis {}, expected the output axis {want_axis}",
                w.axis
            ));
        }
        let after = self.q_after(&n.outputs[0], true)?;
        let bias = match n.input(2).filter(|b| !b.is_empty()) {
            Some(b) => {
                let b = self.const_dq(b, &[DType::I32])?;
                self.check_bias(&b, &x, &w)?;
                b.q
            }
            None => String::new(),
        };
        let inputs = vec![
            x.q,
            x.scale,
            x.zero,
            w.q,
            w.scale,
            w.zero,
            bias,
            after.scale,
            after.zero,
        ];
        let node = self
            .new_node(n, "QGemm", MS_DOMAIN, inputs, &after.y)
            .with("alpha", Attr::Float(1.0))
            .with("transB", Attr::Int(trans_b));
        Ok((node, after.nodes))
    }

    fn matmul(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let w = self.const_dq(n.input(1).unwrap_or(""), &[DType::I8, DType::U8])?;
        let wt = self.init(&w.q).ok_or("weight codes vanished")?;
        let per_channel = self.init(&w.scale).is_some_and(|s| s.len() > 1);
        if per_channel && (wt.shape().len() != 2 || w.axis != 1) {
            return Err("QLinearMatMul takes per-column scales of a 2-D [K, N] weight only".into());
        }
        let after = self.q_after(&n.outputs[0], true)?;
        let inputs = vec![
            x.q,
            x.scale,
            x.zero,
            w.q,
            w.scale,
            w.zero,
            after.scale,
            after.zero,
        ];
        Ok((
            self.new_node(n, "QLinearMatMul", "", inputs, &after.y),
            after.nodes,
        ))
    }

    fn add(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let a = self.act_dq(n.input(0).unwrap_or(""))?;
        let b = self.act_dq(n.input(1).unwrap_or(""))?;
        let after = self.q_after(&n.outputs[0], true)?;
        let inputs = vec![
            a.q,
            a.scale,
            a.zero,
            b.q,
            b.scale,
            b.zero,
            after.scale,
            after.zero,
        ];
        Ok((
            self.new_node(n, "QLinearAdd", MS_DOMAIN, inputs, &after.y),
            after.nodes,
        ))
    }

    fn global_avg(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let after = self.q_after(&n.outputs[0], false)?;
        let inputs = vec![x.q, x.scale, x.zero, after.scale, after.zero];
        let node = self
            .new_node(n, "QLinearGlobalAveragePool", MS_DOMAIN, inputs, &after.y)
            .with("channels_last", Attr::Int(0));
        Ok((node, after.nodes))
    }

    fn on_codes(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        if n.outputs.len() != 1 {
            return Err(format!("{} with {} outputs", n.op_type, n.outputs.len()));
        }
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let after = self.q_after(&n.outputs[0], false)?;
        if !self.same_q((&x.scale, &x.zero), (&after.scale, &after.zero)) {
            return Err("output is quantised differently from the input".into());
        }
        let mut node = n.clone();
        node.inputs[0] = x.q;
        node.outputs = vec![after.y];
        Ok((node, after.nodes))
    }

    fn try_convert(&self, i: usize) -> Option<Match> {
        let n = &self.g.nodes[i];
        if !n.domain.is_empty() {
            return None;
        }
        Some(match n.op_type.as_str() {
            "Conv" => self.conv(i),
            "Gemm" => self.gemm(i),
            "MatMul" => self.matmul(i),
            "Add" => self.add(i),
            "GlobalAveragePool" => self.global_avg(i),
            op if ON_CODES.contains(&op) => self.on_codes(i),
            _ => return None,
        })
    }
}

/// Rewrites the QDQ graph `g` into QOperator form. Nodes no pattern fits stay
/// in QDQ form and are listed in the record (`kept`), so a caller can insist
/// on a complete conversion with [`float_compute_nodes`].
pub fn to_qoperator(g: &Graph) -> Result<(Graph, PassRecord)> {
    let mut rec = PassRecord::new(PASS);
    let rw = Rewriter::new(g);
    let mut replace: HashMap<usize, Node> = HashMap::new();
    let mut drop: HashSet<usize> = HashSet::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..g.nodes.len() {
        let Some(m) = rw.try_convert(i) else { continue };
        match m {
            Ok((node, gone)) => {
                rec.change(format!(
                    "'{}' ({}) → {}{}",
                    g.nodes[i].name,
                    g.nodes[i].op_type,
                    if node.domain.is_empty() {
                        ""
                    } else {
                        "com.microsoft."
                    },
                    node.op_type
                ));
                *counts.entry(node.op_type.clone()).or_default() += 1;
                replace.insert(i, node);
                drop.extend(gone);
            }
            Err(why) => rec.change(format!(
                "kept '{}' ({}) in QDQ form: {why}",
                g.nodes[i].name, g.nodes[i].op_type
            )),
        }
    }
    let mut out = g.clone();
    out.nodes = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(i, n)| replace.remove(&i).unwrap_or_else(|| n.clone()))
        .collect();
    let removed = remove_dead_dequantizers(&mut out);
    remove_unused_initializers(&mut out);
    if out.nodes.iter().any(|n| n.domain == MS_DOMAIN) {
        out.opsets.insert(MS_DOMAIN.into(), 1);
    }
    // Float value infos of tensors that are now codes (or gone) would lie.
    let live: HashSet<String> = out
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().cloned())
        .collect();
    out.value_info.retain(|k, _| live.contains(k));
    out.sort_topologically()?;
    for (op, c) in &counts {
        rec.metric(&format!("nodes/{op}"), *c as f64);
    }
    rec.metric("dequantizers_removed", removed as f64);
    rec.metric("float_compute_left", float_compute_nodes(&out).len() as f64);
    Ok((out, rec))
}

/// DequantizeLinear nodes nobody reads any more; returns how many went.
fn remove_dead_dequantizers(g: &mut Graph) -> usize {
    let mut removed = 0;
    loop {
        let outputs: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        let read: HashSet<String> = g.nodes.iter().flat_map(shrink_graph::node_uses).collect();
        let before = g.nodes.len();
        g.nodes.retain(|n| {
            !(n.op_type == "DequantizeLinear"
                && n.outputs
                    .iter()
                    .all(|o| !read.contains(o) && !outputs.contains(o)))
        });
        let gone = before - g.nodes.len();
        if gone == 0 {
            return removed;
        }
        removed += gone;
    }
}

fn remove_unused_initializers(g: &mut Graph) {
    let read: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(shrink_graph::node_uses)
        .chain(g.outputs.iter().map(|o| o.name.clone()))
        .collect();
    g.initializers.retain(|k, _| read.contains(k));
    g.encodings.retain(|k, _| read.contains(k));
}

/// Names of the Conv/Gemm/MatMul nodes still computing in float (a complete
/// QOperator conversion leaves none).
pub fn float_compute_nodes(g: &Graph) -> Vec<String> {
    g.nodes
        .iter()
        .filter(|n| {
            n.domain.is_empty()
                && ["Conv", "Gemm", "MatMul", "ConvTranspose"].contains(&n.op_type.as_str())
        })
        .map(|n| n.name.clone())
        .collect()
}

/// [`to_qoperator`], failing when any Conv/Gemm/MatMul stayed in float — the
/// form `shrink compress --qoperator` writes.
pub fn to_qoperator_complete(g: &Graph) -> Result<(Graph, PassRecord)> {
    let (q, rec) = to_qoperator(g)?;
    let left = float_compute_nodes(&q);
    if !left.is_empty() {
        let why: Vec<&String> = rec
            .changes
            .iter()
            .filter(|c| c.starts_with("kept"))
            .collect();
        return Err(CompressError::Pass {
            pass: PASS.into(),
            msg: format!(
                "{} layer(s) have no QOperator form: {} ({})",
                left.len(),
                left.join(", "),
                why.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    Ok((q, rec))
}
