//! Pattern matching of QDQ chains and their rewrite into lowered nodes.
//!
//! Recognised (every activation DQ/Q with constant scalar scale and zero
//! point, u8 or i8):
//! - `DQ(x) , DQ(w) [, DQ(b_i32)] → Conv/Gemm/MatMul [→ Relu/Clip] → Q`
//!   → `QConv` / `QGemm` (weights int8/uint8/int4/uint4 initializers, per
//!   tensor or per output channel; the bias scale must be `s_x·s_w[c]`).
//! - `DQ(x) → MaxPool → Q` with the same parameters → `QMaxPool`.
//! - `DQ(x) → GlobalAveragePool → Q` → `QGlobalAveragePool`.
//! - `DQ(a), DQ(b) → Add [→ Relu] → Q` → `QAdd` (requantising both sides).
//! - `DQ(x) → Reshape/Flatten/Transpose/Squeeze/Unsqueeze/Concat → Q` with the
//!   same parameters everywhere → the same op on the quantised tensor.
//!
//! Anything else stays in float and is named in [`LowerReport::fallbacks`].

use super::DOMAIN;
use crate::Result;
use shrink_graph::{eliminate_dead_nodes, node_uses, Attr, Graph, Node};
use shrink_tensor::{DType, Tensor};
use std::collections::{HashMap, HashSet};

/// What lowering did to a graph.
#[derive(Debug, Clone, Default)]
pub struct LowerReport {
    /// Per node of the lowered graph: kernel label when its op sets none.
    pub labels: Vec<&'static str>,
    /// (node, lowered op) for every rewritten node.
    pub lowered: Vec<(String, String)>,
    /// (node, op, reason) for quantised-region nodes left in float.
    pub fallbacks: Vec<(String, String, String)>,
}

/// Scale and zero point of a quantised activation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ActQ {
    scale: f32,
    zero: i64,
    dt: DType,
}

impl ActQ {
    fn same(&self, o: &ActQ) -> bool {
        self.scale.to_bits() == o.scale.to_bits() && self.zero == o.zero && self.dt == o.dt
    }
    fn range(&self) -> (i64, i64) {
        if self.dt == DType::U8 {
            (0, 255)
        } else {
            (-128, 127)
        }
    }
    /// A real value's code: `saturate(round_half_even(v / s) + z)`.
    fn quantize(&self, v: f32) -> i64 {
        let (lo, hi) = self.range();
        let r = (v / self.scale).round_ties_even();
        if r.is_nan() {
            return self.zero;
        }
        (r as i64).saturating_add(self.zero).clamp(lo, hi)
    }
}

/// A DequantizeLinear of an activation.
struct ActDq {
    x: String,
    scale: String,
    zero: String,
    q: ActQ,
}

/// A DequantizeLinear of a constant weight.
struct WeightDq {
    w: String,
    scale: String,
    zero: String,
    scales: Vec<f32>,
}

/// The QuantizeLinear closing a pattern, through an optional activation.
struct QAfter {
    /// Nodes the lowered node replaces besides the op itself.
    nodes: Vec<usize>,
    y: String,
    scale: String,
    zero: String,
    q: ActQ,
    qmin: i64,
    qmax: i64,
}

struct Matcher<'g> {
    g: &'g Graph,
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    outputs: HashSet<String>,
    simulate: bool,
}

type Match = std::result::Result<(Node, Vec<usize>), String>;

impl<'g> Matcher<'g> {
    fn new(g: &'g Graph, simulate: bool) -> Self {
        let producer = g
            .producers()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Matcher {
            g,
            producer,
            consumers: g.consumers(),
            outputs: g.outputs.iter().map(|o| o.name.clone()).collect(),
            simulate,
        }
    }

    fn constant(&self, name: &str) -> Option<&'g Tensor> {
        self.g.initializers.get(name)
    }

    fn produced_by(&self, name: &str, op: &str) -> Option<(usize, &'g Node)> {
        let &i = self.producer.get(name)?;
        let n = &self.g.nodes[i];
        (n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")).then_some((i, n))
    }

    /// Constant scalar f32 scale and u8/i8 zero point (absent: u8 0).
    fn act_params(&self, scale: &str, zero: Option<&str>, out_dt: Option<i64>) -> Option<ActQ> {
        let s = self.constant(scale)?;
        if s.dtype() != DType::F32 || s.len() != 1 {
            return None;
        }
        let scale = s.to_f32_vec()[0];
        if !(scale.is_finite() && scale > 0.0) {
            return None;
        }
        let (zero, dt) = match zero.filter(|z| !z.is_empty()) {
            Some(z) => {
                let t = self.constant(z)?;
                if t.len() != 1 || !matches!(t.dtype(), DType::U8 | DType::I8) {
                    return None;
                }
                (t.to_i64_vec()[0], t.dtype())
            }
            // output_dtype (opset 21): 2 = UINT8, 3 = INT8.
            None => match out_dt.unwrap_or(0) {
                0 | 2 => (0, DType::U8),
                3 => (0, DType::I8),
                _ => return None,
            },
        };
        Some(ActQ { scale, zero, dt })
    }

    fn act_dq(&self, name: &str) -> std::result::Result<ActDq, String> {
        let (_, n) = self
            .produced_by(name, "DequantizeLinear")
            .ok_or_else(|| format!("input '{name}' is not a DequantizeLinear output"))?;
        let x = n.inputs[0].clone();
        if self.constant(&x).is_some() {
            return Err(format!("'{name}' dequantises a constant"));
        }
        let scale = n.inputs.get(1).cloned().unwrap_or_default();
        let zero = n.inputs.get(2).cloned().unwrap_or_default();
        let q = self.act_params(&scale, Some(&zero), None).ok_or_else(|| {
            format!("'{name}': activation scale/zero point not constant scalars of u8/i8")
        })?;
        Ok(ActDq { x, scale, zero, q })
    }

    /// DQ of a constant weight of rank `rank`, per tensor or per channel
    /// along `axis`.
    fn weight_dq(
        &self,
        name: &str,
        rank: usize,
        axis: usize,
    ) -> std::result::Result<WeightDq, String> {
        let (_, n) = self
            .produced_by(name, "DequantizeLinear")
            .ok_or_else(|| format!("weight '{name}' is not a DequantizeLinear output"))?;
        let w = n.inputs[0].clone();
        let wt = self
            .constant(&w)
            .ok_or_else(|| format!("weight '{w}' is not a constant"))?;
        if !matches!(wt.dtype(), DType::I8 | DType::U8 | DType::I4 | DType::U4) {
            return Err(format!(
                "weight '{w}' is {} (int8/uint8/int4/uint4 lowered)",
                wt.dtype()
            ));
        }
        if wt.rank() != rank {
            return Err(format!(
                "weight '{w}' has rank {}, expected {rank}",
                wt.rank()
            ));
        }
        if n.attr_int("block_size", 0).unwrap_or(1) != 0 {
            return Err(format!(
                "weight '{w}' is block-quantised (no integer kernel)"
            ));
        }
        let scale = n.inputs.get(1).cloned().unwrap_or_default();
        let zero = n.inputs.get(2).cloned().unwrap_or_default();
        let st = self
            .constant(&scale)
            .filter(|s| s.dtype() == DType::F32)
            .ok_or_else(|| format!("weight scale '{scale}' is not an f32 constant"))?;
        let scales = st.to_f32_vec();
        if scales.len() != 1 {
            let a = n.attr_int("axis", 1).unwrap_or(1);
            let a = if a < 0 { a + rank as i64 } else { a };
            if a != axis as i64 || st.rank() != 1 || scales.len() != wt.shape()[axis] {
                return Err(format!(
                    "weight '{w}' is quantised along axis {a}, the kernel needs per-tensor or axis {axis}"
                ));
            }
        }
        if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("weight scale '{scale}' has a non-positive value"));
        }
        if !zero.is_empty() {
            let z = self
                .constant(&zero)
                .ok_or_else(|| format!("weight zero point '{zero}' is not a constant"))?;
            let zv = z.to_i64_vec();
            if zv.iter().any(|&v| v != zv[0]) {
                return Err(format!("weight '{w}' has per-channel zero points"));
            }
        }
        Ok(WeightDq {
            w,
            scale,
            zero,
            scales,
        })
    }

    /// DQ of an i32 bias whose scale is `s_x·s_w[c]` and zero point 0.
    fn bias_dq(
        &self,
        name: &str,
        sx: f32,
        w: &WeightDq,
        n: usize,
    ) -> std::result::Result<String, String> {
        let (_, d) = self.produced_by(name, "DequantizeLinear").ok_or_else(|| {
            format!("bias '{name}' is not a DequantizeLinear output (float bias)")
        })?;
        let b = d.inputs[0].clone();
        let bt = self
            .constant(&b)
            .filter(|t| t.dtype() == DType::I32 && t.len() == n)
            .ok_or_else(|| format!("bias '{b}' is not a constant i32 of {n} values"))?;
        let _ = bt;
        let s = d
            .inputs
            .get(1)
            .and_then(|s| self.constant(s))
            .filter(|s| s.dtype() == DType::F32)
            .ok_or_else(|| format!("bias scale of '{b}' is not an f32 constant"))?
            .to_f32_vec();
        if let Some(z) = d.inputs.get(2).filter(|z| !z.is_empty()) {
            let zv = self
                .constant(z)
                .ok_or_else(|| format!("bias zero point '{z}' is not constant"))?;
            if zv.to_i64_vec().iter().any(|&v| v != 0) {
                return Err(format!("bias '{b}' has a non-zero zero point"));
            }
        }
        for c in 0..n {
            let sw = w.scales[if w.scales.len() == 1 { 0 } else { c }];
            let sb = s[if s.len() == 1 { 0 } else { c.min(s.len() - 1) }];
            if sb.to_bits() != (sx * sw).to_bits() {
                return Err(format!(
                    "bias '{b}' scale {sb:e} at channel {c} is not s_x·s_w = {:e}",
                    sx * sw
                ));
            }
        }
        Ok(b)
    }

    /// The only consumer of `out`, if it has exactly one and is no graph output.
    fn single_consumer(&self, out: &str) -> Option<usize> {
        if self.outputs.contains(out) {
            return None;
        }
        match self.consumers.get(out).map(Vec::as_slice) {
            Some([j]) => Some(*j),
            _ => None,
        }
    }

    /// The QuantizeLinear after `out`, optionally through Relu or Clip
    /// (folded into the clamp range).
    fn q_after(&self, out: &str, allow_act: bool) -> std::result::Result<QAfter, String> {
        let none = || format!("output '{out}' does not go to a single QuantizeLinear");
        let mut j = self.single_consumer(out).ok_or_else(none)?;
        let mut nodes = Vec::new();
        let mut act: Option<&Node> = None;
        let n = &self.g.nodes[j];
        if allow_act && n.domain.is_empty() && (n.op_type == "Relu" || n.op_type == "Clip") {
            act = Some(n);
            nodes.push(j);
            j = self.single_consumer(&n.outputs[0]).ok_or_else(none)?;
        }
        let qn = &self.g.nodes[j];
        if qn.op_type != "QuantizeLinear" || !qn.domain.is_empty() {
            return Err(none());
        }
        nodes.push(j);
        let scale = qn.inputs.get(1).cloned().unwrap_or_default();
        let zero = qn.inputs.get(2).cloned().unwrap_or_default();
        let q = self
            .act_params(
                &scale,
                Some(&zero),
                qn.attr_int_opt("output_dtype").ok().flatten(),
            )
            .ok_or_else(|| {
                format!(
                    "QuantizeLinear '{}' has no constant scalar u8/i8 parameters",
                    qn.name
                )
            })?;
        let (mut qmin, mut qmax) = q.range();
        if let Some(a) = act {
            if a.op_type == "Relu" {
                qmin = qmin.max(q.zero);
            } else {
                let bound = |i: usize, attr: &str| -> std::result::Result<Option<f32>, String> {
                    if let Some(name) = a.inputs.get(i).filter(|s| !s.is_empty()) {
                        let t = self
                            .constant(name)
                            .filter(|t| t.len() == 1)
                            .ok_or_else(|| {
                                format!("Clip bound '{name}' is not a constant scalar")
                            })?;
                        return Ok(Some(t.to_f32_vec()[0]));
                    }
                    Ok(a.attr_float(attr, f32::NAN).ok().filter(|v| !v.is_nan()))
                };
                if let Some(lo) = bound(1, "min")? {
                    qmin = qmin.max(q.quantize(lo));
                }
                if let Some(hi) = bound(2, "max")? {
                    qmax = qmax.min(q.quantize(hi));
                }
                if qmin > qmax {
                    return Err("Clip range is empty after quantisation".into());
                }
            }
        }
        Ok(QAfter {
            nodes,
            y: qn.outputs[0].clone(),
            scale,
            zero,
            q,
            qmin,
            qmax,
        })
    }

    fn lowered(&self, n: &Node, op: &str, inputs: Vec<String>, y: &str) -> Node {
        let mut node = Node {
            name: n.name.clone(),
            op_type: op.to_string(),
            domain: DOMAIN.to_string(),
            inputs,
            outputs: vec![y.to_string()],
            attrs: Default::default(),
        };
        node.attrs
            .insert("simulate".into(), Attr::Int(self.simulate as i64));
        node
    }

    fn conv(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let w = self.weight_dq(n.input(1).unwrap_or(""), 4, 0)?;
        let oc = self.constant(&w.w).map_or(0, |t| t.shape()[0]);
        let bias = match n.input(2) {
            Some(b) => self.bias_dq(b, x.q.scale, &w, oc)?,
            None => String::new(),
        };
        match n.attr_str("auto_pad", "NOTSET") {
            Ok("NOTSET") | Ok("VALID") | Ok("") => {}
            _ => return Err("auto_pad SAME_* is not lowered".into()),
        }
        let after = self.q_after(&n.outputs[0], true)?;
        let mut node = self.lowered(
            n,
            "QConv",
            vec![
                x.x,
                x.scale,
                x.zero,
                w.w,
                w.scale,
                w.zero,
                after.scale,
                after.zero,
                bias,
            ],
            &after.y,
        );
        for key in [
            "kernel_shape",
            "pads",
            "strides",
            "dilations",
            "group",
            "auto_pad",
        ] {
            if let Some(a) = n.attrs.get(key) {
                node.attrs.insert(key.into(), a.clone());
            }
        }
        node.attrs.insert("qmin".into(), Attr::Int(after.qmin));
        node.attrs.insert("qmax".into(), Attr::Int(after.qmax));
        Ok((node, after.nodes))
    }

    fn gemm(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let attr = |k: &str, d: i64| n.attr_int(k, d).unwrap_or(-1);
        let is_gemm = n.op_type == "Gemm";
        if is_gemm {
            if attr("transA", 0) != 0 {
                return Err("Gemm with transA is not lowered".into());
            }
            if n.attr_float("alpha", 1.0).unwrap_or(0.0) != 1.0
                || n.attr_float("beta", 1.0).unwrap_or(0.0) != 1.0
            {
                return Err("Gemm with alpha/beta ≠ 1 is not lowered".into());
            }
        }
        let trans_b = if is_gemm { attr("transB", 0) } else { 0 };
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let w = self.weight_dq(
            n.input(1).unwrap_or(""),
            2,
            if trans_b == 1 { 0 } else { 1 },
        )?;
        let wt = self
            .constant(&w.w)
            .map(|t| t.shape().to_vec())
            .unwrap_or_default();
        let nout = if trans_b == 1 { wt[0] } else { wt[1] };
        let bias = match n.input(2).filter(|_| is_gemm) {
            Some(b) => {
                // Gemm's C must be a 1-D per-column bias to be lowered.
                if self
                    .produced_by(b, "DequantizeLinear")
                    .and_then(|(_, d)| self.constant(&d.inputs[0]))
                    .is_none_or(|t| t.rank() != 1)
                {
                    return Err("Gemm C is not a 1-D quantised bias".into());
                }
                self.bias_dq(b, x.q.scale, &w, nout)?
            }
            None => String::new(),
        };
        let after = self.q_after(&n.outputs[0], true)?;
        let mut node = self.lowered(
            n,
            "QGemm",
            vec![
                x.x,
                x.scale,
                x.zero,
                w.w,
                w.scale,
                w.zero,
                after.scale,
                after.zero,
                bias,
            ],
            &after.y,
        );
        node.attrs.insert("trans_b".into(), Attr::Int(trans_b));
        node.attrs
            .insert("matmul".into(), Attr::Int(!is_gemm as i64));
        node.attrs.insert("qmin".into(), Attr::Int(after.qmin));
        node.attrs.insert("qmax".into(), Attr::Int(after.qmax));
        Ok((node, after.nodes))
    }

    fn max_pool(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        if n.outputs.len() > 1 && !n.outputs[1].is_empty() {
            return Err("MaxPool indices are not lowered".into());
        }
        if n.attr_int("ceil_mode", 0).unwrap_or(1) != 0
            || n.attr_ints("dilations")
                .ok()
                .flatten()
                .is_some_and(|d| d.iter().any(|&v| v != 1))
            || !matches!(
                n.attr_str("auto_pad", "NOTSET"),
                Ok("NOTSET") | Ok("VALID") | Ok("")
            )
        {
            return Err("MaxPool with ceil_mode, dilations or auto_pad SAME is not lowered".into());
        }
        let k = n.attr_ints("kernel_shape").ok().flatten().unwrap_or(&[]);
        if k.len() != 2 {
            return Err("only 2-D MaxPool is lowered".into());
        }
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let after = self.q_after(&n.outputs[0], false)?;
        if !after.q.same(&x.q) {
            return Err("MaxPool output is quantised differently from its input".into());
        }
        let mut node = self.lowered(n, "QMaxPool", vec![x.x], &after.y);
        for key in ["kernel_shape", "pads", "strides"] {
            if let Some(a) = n.attrs.get(key) {
                node.attrs.insert(key.into(), a.clone());
            }
        }
        Ok((node, after.nodes))
    }

    fn global_avg(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let x = self.act_dq(n.input(0).unwrap_or(""))?;
        let after = self.q_after(&n.outputs[0], false)?;
        let mut node = self.lowered(
            n,
            "QGlobalAveragePool",
            vec![x.x, x.scale, x.zero, after.scale, after.zero],
            &after.y,
        );
        node.attrs.insert("qmin".into(), Attr::Int(after.qmin));
        node.attrs.insert("qmax".into(), Attr::Int(after.qmax));
        Ok((node, after.nodes))
    }

    fn add(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let a = self.act_dq(n.input(0).unwrap_or(""))?;
        let b = self.act_dq(n.input(1).unwrap_or(""))?;
        let after = self.q_after(&n.outputs[0], true)?;
        let mut node = self.lowered(
            n,
            "QAdd",
            vec![
                a.x,
                a.scale,
                a.zero,
                b.x,
                b.scale,
                b.zero,
                after.scale,
                after.zero,
            ],
            &after.y,
        );
        node.attrs.insert("qmin".into(), Attr::Int(after.qmin));
        node.attrs.insert("qmax".into(), Attr::Int(after.qmax));
        Ok((node, after.nodes))
    }

    /// Data movement on a quantised tensor: the same op on the codes, when
    /// input and output share scale and zero point.
    fn pass_through(&self, i: usize) -> Match {
        let n = &self.g.nodes[i];
        let data_inputs = if n.op_type == "Concat" {
            n.inputs.len()
        } else {
            1
        };
        let mut node = n.clone();
        let mut q: Option<ActQ> = None;
        for k in 0..data_inputs {
            let x = self.act_dq(&n.inputs[k])?;
            if q.is_some_and(|q| !q.same(&x.q)) {
                return Err("Concat inputs are quantised differently".into());
            }
            q = Some(x.q);
            node.inputs[k] = x.x;
        }
        let after = self.q_after(&n.outputs[0], false)?;
        if q.is_none_or(|q| !q.same(&after.q)) {
            return Err("output is quantised differently from the input".into());
        }
        node.outputs = vec![after.y.clone()];
        Ok((node, after.nodes))
    }

    fn try_lower(&self, i: usize) -> Option<Match> {
        let n = &self.g.nodes[i];
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return None;
        }
        Some(match n.op_type.as_str() {
            "Conv" => self.conv(i),
            "Gemm" | "MatMul" => self.gemm(i),
            "MaxPool" => self.max_pool(i),
            "GlobalAveragePool" => self.global_avg(i),
            "Add" => self.add(i),
            "Reshape" | "Flatten" | "Transpose" | "Squeeze" | "Unsqueeze" | "Concat" => {
                self.pass_through(i)
            }
            _ => return None,
        })
    }
}

const PASS_THROUGH: &[&str] = &[
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Concat",
];

/// Rewrites every recognised pattern of `g`; `simulate` picks the scalar
/// reference evaluation for the lowered nodes.
pub(super) fn lower(mut g: Graph, simulate: bool) -> Result<(Graph, LowerReport)> {
    let mut report = LowerReport::default();
    let (replace, remove) = {
        let m = Matcher::new(&g, simulate);
        let mut replace: HashMap<usize, Node> = HashMap::new();
        let mut remove: HashSet<usize> = HashSet::new();
        for i in 0..g.nodes.len() {
            if remove.contains(&i) {
                continue;
            }
            let n = &g.nodes[i];
            match m.try_lower(i) {
                Some(Ok((node, gone))) => {
                    if gone
                        .iter()
                        .any(|j| remove.contains(j) || replace.contains_key(j))
                    {
                        continue;
                    }
                    report.lowered.push((n.name.clone(), node.op_type.clone()));
                    remove.extend(gone);
                    replace.insert(i, node);
                }
                Some(Err(why)) => {
                    // Only a node inside a quantised region is a fallback.
                    let quantised = n
                        .inputs
                        .iter()
                        .any(|x| m.produced_by(x, "DequantizeLinear").is_some());
                    if quantised {
                        report
                            .fallbacks
                            .push((n.name.clone(), n.op_type.clone(), why));
                    }
                }
                None => {}
            }
        }
        (replace, remove)
    };
    let old = std::mem::take(&mut g.nodes);
    let mut pass_names = HashSet::new();
    for (i, n) in old.into_iter().enumerate() {
        if remove.contains(&i) {
            continue;
        }
        match replace.get(&i) {
            Some(r) => {
                if PASS_THROUGH.contains(&r.op_type.as_str()) && r.domain.is_empty() {
                    pass_names.insert(r.name.clone());
                }
                g.nodes.push(r.clone());
            }
            None => g.nodes.push(n),
        }
    }
    if !replace.is_empty() {
        eliminate_dead_nodes(&mut g);
    }
    // Labels for ops that do not set their own kernel name.
    let producer: HashMap<String, &Node> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(move |o| (o.clone(), n)))
        .collect();
    let mut consumer_ops: HashMap<String, Vec<&str>> = HashMap::new();
    for n in &g.nodes {
        for u in node_uses(n) {
            consumer_ops.entry(u).or_default().push(n.op_type.as_str());
        }
    }
    report.labels = g
        .nodes
        .iter()
        .map(|n| {
            if n.domain == DOMAIN {
                return "";
            }
            if pass_names.contains(&n.name) {
                return "int8 pass-through";
            }
            match n.op_type.as_str() {
                "QuantizeLinear" => return "quantize f32→int8",
                "DequantizeLinear" => return "dequantize int8→f32",
                _ => {}
            }
            let from_dq = n.inputs.iter().any(|x| {
                producer
                    .get(x)
                    .is_some_and(|p| p.op_type == "DequantizeLinear")
            });
            let to_q = n.outputs.iter().any(|o| {
                consumer_ops
                    .get(o)
                    .is_some_and(|c| c.contains(&"QuantizeLinear"))
            });
            if from_dq || to_q {
                "f32 fallback"
            } else {
                ""
            }
        })
        .collect();
    Ok((g, report))
}
