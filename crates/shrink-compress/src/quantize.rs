//! Weight quantisation and QDQ insertion: from an fp32 graph, a
//! [`QuantPlan`] and [`ActivationRanges`] to the canonical ONNX QDQ graph that
//! ONNX Runtime's `quantize_static` writes, so ORT (and shrink's integer
//! planner) recognise and fuse the same patterns:
//!
//! ```text
//!   W_quantized (int8 codes) ─ DequantizeLinear(axis 0) ─┐
//!   b_quantized (int32, scale s_x·s_w[c]) ─ DequantizeLinear ─┤
//!   x ─ QuantizeLinear ─ DequantizeLinear ───────────── Conv/Gemm ─ y ─ QuantizeLinear ─ DequantizeLinear ─ …
//! ```
//!
//! * A Relu or Clip right after a Conv/Gemm/MatMul/Add is removed when the
//!   output quantiser already clamps to its bounds (u8 with zero point 0 is a
//!   Relu; a range ending at ≤ 6 is the top of a ReLU6), exactly as ORT does;
//!   otherwise it stays and both its input and output are quantised.
//! * Ops that only move values (MaxPool, Flatten, Reshape, Transpose, …)
//!   reuse their input's scale for their output, so integer execution can
//!   pass codes through them unchanged.
//! * Weights of 2..=7 bits are stored as I8 codes (the ONNX graph stays opset
//!   17 and ORT runs it); the true width is recorded as a storage encoding
//!   (`Graph::encodings`, packed in the .shrink container) and in the graph
//!   metadata under [`WEIGHT_BITS_KEY`] (which survives ONNX export).
//! * Float formats are simulated: fp16/bf16 weights become fp16/bf16
//!   initializers plus a Cast, activations a Cast→Cast pair; posit and
//!   flex16+5 use the `ai.shrink::FakeQuant` node (attribute `format`).

use crate::ranges::{ActivationRanges, TensorRange};
use crate::{CompressError, PassRecord, Result};
use serde::{Deserialize, Serialize};
use shrink_formats::intq::code_range;
use shrink_formats::{Granularity, QuantParams, Rounding, Scheme};
use shrink_graph::{Attr, Graph, Node};
use shrink_tensor::{DType, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Graph metadata key: JSON object `initializer name → bits` for weight codes
/// narrower than their storage type (e.g. 4-bit codes held in I8).
pub const WEIGHT_BITS_KEY: &str = "shrink.weight_bits";

/// Domain of shrink's own ops (`FakeQuant`).
pub const SHRINK_DOMAIN: &str = "ai.shrink";

/// A simulated non-integer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SimFormat {
    Fp16,
    Bf16,
    Posit8,
    Posit16,
    Flex16,
}

impl SimFormat {
    /// The `format` attribute of `FakeQuant` and the recipe spelling.
    pub fn name(self) -> &'static str {
        match self {
            SimFormat::Fp16 => "fp16",
            SimFormat::Bf16 => "bf16",
            SimFormat::Posit8 => "posit8",
            SimFormat::Posit16 => "posit16",
            SimFormat::Flex16 => "flex16+5",
        }
    }

    fn parse(s: &str) -> Option<SimFormat> {
        Some(match s {
            "fp16" => SimFormat::Fp16,
            "bf16" => SimFormat::Bf16,
            "posit8" => SimFormat::Posit8,
            "posit16" => SimFormat::Posit16,
            "flex16+5" | "flex16" => SimFormat::Flex16,
            _ => return None,
        })
    }

    fn bits(self) -> u32 {
        match self {
            SimFormat::Posit8 => 8,
            _ => 16,
        }
    }
}

/// Weight scale layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightGranularity {
    Tensor,
    /// One scale per output channel (axis 0 for Conv and Gemm transB=1, axis 1 for MatMul [K, N]).
    Channel,
    /// One scale per block of this many input channels (DequantizeLinear `block_size`, opset 21).
    Group(usize),
}

/// How one layer's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum WeightFormat {
    Fp32,
    Int {
        bits: u32,
        granularity: WeightGranularity,
        scheme: Scheme,
    },
    Sim(SimFormat),
}

impl WeightFormat {
    /// Symmetric narrow-range per-channel integers: the usual weight format.
    pub fn int(bits: u32) -> WeightFormat {
        WeightFormat::Int {
            bits,
            granularity: WeightGranularity::Channel,
            scheme: Scheme::SymmetricNarrow,
        }
    }

    /// Bits per stored weight.
    pub fn bits(&self) -> u32 {
        match self {
            WeightFormat::Fp32 => 32,
            WeightFormat::Int { bits, .. } => *bits,
            WeightFormat::Sim(s) => s.bits(),
        }
    }

    /// Parses `fp32`, `int8`/`int4`/…, `fp16`, `bf16`, `posit8`, `posit16`, `flex16+5`
    /// (granularity and scheme come from separate recipe fields).
    pub fn parse(s: &str, granularity: WeightGranularity, scheme: Scheme) -> Option<WeightFormat> {
        if s == "fp32" {
            return Some(WeightFormat::Fp32);
        }
        if let Some(b) = s.strip_prefix("int").and_then(|b| b.parse::<u32>().ok()) {
            return Some(WeightFormat::Int {
                bits: b,
                granularity,
                scheme,
            });
        }
        SimFormat::parse(s).map(WeightFormat::Sim)
    }
}

/// How activations are represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActFormat {
    Fp32,
    /// u8 affine (ORT's default).
    U8,
    /// i8 symmetric (zero point 0).
    I8,
    Sim(SimFormat),
}

impl ActFormat {
    pub fn parse(s: &str) -> Option<ActFormat> {
        Some(match s {
            "fp32" => ActFormat::Fp32,
            "u8" | "uint8" => ActFormat::U8,
            "i8" | "int8" => ActFormat::I8,
            other => ActFormat::Sim(SimFormat::parse(other)?),
        })
    }

    pub fn bits(&self) -> u32 {
        match self {
            ActFormat::Fp32 => 32,
            ActFormat::U8 | ActFormat::I8 => 8,
            ActFormat::Sim(s) => s.bits(),
        }
    }

    /// Storage type and scheme of integer activation codes (`None` for float formats).
    pub fn integer(&self) -> Option<(DType, Scheme)> {
        match self {
            ActFormat::U8 => Some((DType::U8, Scheme::Affine)),
            ActFormat::I8 => Some((DType::I8, Scheme::SymmetricNarrow)),
            _ => None,
        }
    }
}

/// What to quantise and how: a default weight format, per-layer overrides
/// (by node name), the activation format, and layers left in fp32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantPlan {
    pub weights: WeightFormat,
    pub activations: ActFormat,
    pub layers: BTreeMap<String, WeightFormat>,
    /// Nodes that stay fp32 (no weight quantisation, no QDQ on their tensors
    /// unless another quantised node needs them).
    pub skip: BTreeSet<String>,
    /// Activation tensors left in float (e.g. ranges known only as loose bounds).
    #[serde(default)]
    pub float_tensors: BTreeSet<String>,
    /// Integer weights of at most this many bits get MSE-optimal clipping per
    /// scale slot (0: never; scales from the max |w|, ORT's choice).
    #[serde(default)]
    pub mse_clip_bits: u32,
    /// Integer weight scales rounded to the nearest fp16 value before the
    /// codes are computed, so the container can store them as fp16
    /// (`Encoding::Fp16`) and the model is exactly what is stored: the
    /// rounding moves a scale by at most 2^-11 of itself, far below the
    /// step of any code, and the codes follow the rounded scale.
    #[serde(default)]
    pub fp16_scales: bool,
}

impl QuantPlan {
    /// W`bits` per channel, u8 activations.
    pub fn int8() -> QuantPlan {
        QuantPlan {
            weights: WeightFormat::int(8),
            activations: ActFormat::U8,
            layers: BTreeMap::new(),
            skip: BTreeSet::new(),
            float_tensors: BTreeSet::new(),
            mse_clip_bits: 0,
            fp16_scales: false,
        }
    }

    pub fn weight_format(&self, node: &str) -> WeightFormat {
        if self.skip.contains(node) {
            return WeightFormat::Fp32;
        }
        self.layers.get(node).copied().unwrap_or(self.weights)
    }
}

/// Ops whose outputs carry new values worth their own scale.
const COMPUTE_OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "GlobalAveragePool",
    "AveragePool",
    "Concat",
];
/// Ops that only move or select values: their output reuses the input's scale.
const PASS_OPS: &[&str] = &[
    "MaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
];
/// Ops whose weights (input 1, an initializer) are quantised.
const WEIGHTED_OPS: &[&str] = &["Conv", "Gemm", "MatMul"];

/// Layers with quantisable weights, in node order: `(node name, weight initializer)`.
pub fn weighted_layers(g: &Graph) -> Vec<(String, String)> {
    g.nodes
        .iter()
        .filter(|n| WEIGHTED_OPS.contains(&n.op_type.as_str()) && n.domain.is_empty())
        .filter_map(|n| {
            let w = n.input(1)?;
            let t = g.initializers.get(w)?;
            (t.dtype() == DType::F32 && t.rank() >= 2).then(|| (n.name.clone(), w.to_string()))
        })
        .collect()
}

/// Inputs of a node that carry activations (not shapes, axes or bounds).
fn data_inputs(n: &Node) -> Vec<&str> {
    let k = match n.op_type.as_str() {
        "Reshape" | "Squeeze" | "Unsqueeze" | "Clip" => 1,
        "Conv" | "Gemm" | "MatMul" => 1,
        _ => n.inputs.len(),
    };
    n.inputs
        .iter()
        .take(k)
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .collect()
}

/// The activation tensors calibration must observe for `g` to be quantised:
/// data inputs and outputs of every quantisable op, and the outputs of any
/// Relu/Clip that may be fused into the op before it.
pub fn activation_tensors(g: &Graph) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |t: &str, out: &mut Vec<String>| {
        if !t.is_empty() && !g.initializers.contains_key(t) && seen.insert(t.to_string()) {
            out.push(t.to_string());
        }
    };
    for n in &g.nodes {
        let op = n.op_type.as_str();
        if COMPUTE_OPS.contains(&op) || PASS_OPS.contains(&op) || op == "Relu" || op == "Clip" {
            for i in data_inputs(n) {
                push(i, &mut out);
            }
            for o in &n.outputs {
                push(o, &mut out);
            }
        }
    }
    out
}

fn pass_err(msg: impl Into<String>) -> CompressError {
    CompressError::Pass {
        pass: "quantize".into(),
        msg: msg.into(),
    }
}

fn tensor_err(t: &str, msg: impl Into<String>) -> CompressError {
    CompressError::Tensor {
        pass: "quantize".into(),
        tensor: t.to_string(),
        msg: msg.into(),
    }
}

/// Scale and zero point of one quantised activation tensor.
#[derive(Debug, Clone)]
struct ActQ {
    scale: Vec<f32>,
    axis: Option<usize>,
    scale_name: String,
    zp_name: String,
}

fn act_params(
    t: &str,
    range: &TensorRange,
    dtype: DType,
    scheme: Scheme,
) -> Result<(Vec<f32>, Vec<i32>)> {
    let mut scale = Vec::with_capacity(range.min.len());
    let mut zp = Vec::with_capacity(range.min.len());
    for (&lo, &hi) in range.min.iter().zip(&range.max) {
        let (s, z) = QuantParams::from_range(8, scheme, lo, hi)
            .map_err(|e| tensor_err(t, format!("activation range: {e}")))?;
        // i8 affine codes would be u8 codes shifted by 128; only symmetric is used for i8.
        let z = if dtype == DType::I8 && scheme == Scheme::Affine {
            z - 128
        } else {
            z
        };
        scale.push(s);
        zp.push(z);
    }
    Ok((scale, zp))
}

/// The clamp bounds a Relu or Clip node applies (Clip bounds from opset 11+
/// inputs or opset 6 attributes; absent bounds are infinite).
fn clamp_bounds(g: &Graph, n: &Node) -> Option<(f32, f32)> {
    match n.op_type.as_str() {
        "Relu" => Some((0.0, f32::INFINITY)),
        "Clip" => {
            let bound = |i: usize, attr: &str, default: f32| -> Option<f32> {
                match n.input(i) {
                    Some(name) => {
                        let t = g.initializers.get(name)?;
                        t.to_f32_vec().first().copied()
                    }
                    None => Some(n.attr_float(attr, default).ok()?),
                }
            };
            Some((
                bound(1, "min", f32::NEG_INFINITY)?,
                bound(2, "max", f32::INFINITY)?,
            ))
        }
        _ => None,
    }
}

/// Quantised weight codes and their DequantizeLinear.
struct WeightQ {
    codes: Vec<i32>,
    params: QuantParams,
    scale_shape: Vec<usize>,
    attrs: BTreeMap<String, Attr>,
    /// Per output channel scale (for bias), when the layout has one.
    channel_scale: Option<Vec<f32>>,
}

fn quantize_weight(
    node: &Node,
    w_name: &str,
    w: &Tensor,
    bits: u32,
    gran: WeightGranularity,
    scheme: Scheme,
    choice: ScaleChoice,
) -> Result<WeightQ> {
    let ScaleChoice {
        mse_clip,
        fp16: fp16_scales,
    } = choice;
    if !(2..=8).contains(&bits) {
        return Err(CompressError::Node {
            pass: "quantize".into(),
            node: node.name.clone(),
            op: node.op_type.clone(),
            msg: format!("weight bits must be in 2..=8, got {bits}"),
        });
    }
    if scheme == Scheme::Affine {
        return Err(tensor_err(
            w_name,
            "affine weights are not supported by the QDQ export (ORT expects symmetric int8 weights)",
        ));
    }
    let shape = w.shape().to_vec();
    let rank = shape.len();
    // Output-channel axis: Conv [O, I, ...] and Gemm transB=1 [N, K] → 0; MatMul [K, N] and Gemm transB=0 → last.
    let out_axis = match node.op_type.as_str() {
        "Conv" => 0,
        "Gemm" if node.attr_int("transB", 0).unwrap_or(0) != 0 => 0,
        _ => rank - 1,
    };
    let in_axis = if out_axis == 0 { 1 } else { rank - 2 };
    let granularity = match gran {
        WeightGranularity::Tensor => Granularity::PerTensor,
        WeightGranularity::Channel => Granularity::PerChannel { axis: out_axis },
        WeightGranularity::Group(g) => Granularity::PerGroup {
            axis: in_axis,
            group: g,
        },
    };
    let values = w.to_f32_vec();
    let cfg = shrink_formats::QuantConfig {
        bits,
        scheme,
        granularity,
        rounding: Rounding::NearestEven,
        source: shrink_formats::intq::ScaleSource::Data,
    };
    let mut params = cfg
        .params_for(&values, &shape)
        .map_err(|e| tensor_err(w_name, e.to_string()))?;
    if mse_clip && !matches!(granularity, Granularity::PerGroup { .. }) {
        let slot_of = |i: usize| match granularity {
            Granularity::PerChannel { axis } => {
                let inner: usize = shape[axis + 1..].iter().product();
                (i / inner) % shape[axis]
            }
            _ => 0,
        };
        let mut slots: Vec<Vec<f32>> = vec![Vec::new(); params.scale.len()];
        for (i, &v) in values.iter().enumerate() {
            slots[slot_of(i)].push(v);
        }
        let (lo, hi) = code_range(bits, scheme).map_err(|e| tensor_err(w_name, e.to_string()))?;
        for (c, vals) in slots.iter().enumerate() {
            params.scale[c] = mse_scale(vals, params.scale[c], lo, hi);
        }
    }
    if fp16_scales {
        for s in params.scale.iter_mut() {
            *s = fp16_scale(*s);
        }
    }
    let codes = params
        .quantize(&values, &shape, Rounding::NearestEven)
        .map_err(|e| tensor_err(w_name, e.to_string()))?;
    let mut attrs = BTreeMap::new();
    let (scale_shape, channel_scale) = match granularity {
        Granularity::PerTensor => (vec![], Some(vec![params.scale[0]; shape[out_axis]])),
        Granularity::PerChannel { axis } => {
            attrs.insert("axis".to_string(), Attr::Int(axis as i64));
            (vec![shape[axis]], Some(params.scale.clone()))
        }
        Granularity::PerGroup { axis, group } => {
            attrs.insert("axis".to_string(), Attr::Int(axis as i64));
            attrs.insert("block_size".to_string(), Attr::Int(group as i64));
            let mut s = shape.clone();
            s[axis] /= group;
            (s, None)
        }
    };
    Ok(WeightQ {
        codes,
        params,
        scale_shape,
        attrs,
        channel_scale,
    })
}

/// How [`quantize_weight`] picks a weight's scales beyond max |w|.
#[derive(Debug, Clone, Copy)]
struct ScaleChoice {
    /// MSE-optimal clipping per scale slot.
    mse_clip: bool,
    /// Round the scales to fp16 ([`fp16_scale`]).
    fp16: bool,
}

/// `s` rounded to the nearest fp16 value (ties to even); a scale below
/// fp16's smallest subnormal becomes that subnormal, never 0.
pub fn fp16_scale(s: f32) -> f32 {
    let h = half::f16::from_f32(s).to_f32();
    if h > 0.0 && h.is_finite() {
        h
    } else if h == 0.0 {
        half::f16::from_bits(1).to_f32()
    } else {
        half::f16::MAX.to_f32()
    }
}

/// The scale in `[0.3, 1]·s_max` (steps of 0.01) minimising the squared
/// error of round-to-nearest codes clamped to `[lo, hi]`: clipping the few
/// largest weights buys a finer step for the many small ones, which at 2–4
/// bits is worth more than the outliers' accuracy. Ties keep the larger scale.
fn mse_scale(vals: &[f32], s_max: f32, lo: i32, hi: i32) -> f32 {
    let err = |s: f32| -> f64 {
        vals.iter()
            .map(|&v| {
                let q = (v / s).round_ties_even().clamp(lo as f32, hi as f32);
                let d = (v - q * s) as f64;
                d * d
            })
            .sum()
    };
    let mut best = (err(s_max), s_max);
    for k in (30..100).rev() {
        let s = s_max * k as f32 / 100.0;
        if s <= 0.0 || !s.is_finite() {
            continue;
        }
        let e = err(s);
        if e < best.0 {
            best = (e, s);
        }
    }
    best.1
}

/// Inserts QDQ (or simulated-format) nodes for `plan`. Integer activation
/// formats need a range for every tensor [`activation_tensors`] lists.
pub fn insert_qdq(
    g: &Graph,
    plan: &QuantPlan,
    ranges: &ActivationRanges,
) -> Result<(Graph, PassRecord)> {
    let mut rec = PassRecord::new("quantize")
        .option("weights", format!("{:?}", plan.weights))
        .option("activations", format!("{:?}", plan.activations));
    let mut g = g.clone();
    let graph_outputs: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let graph_inputs: HashSet<String> = g.inputs.iter().map(|o| o.name.clone()).collect();

    // 1. Which tensors get activation QDQ, and which Relu/Clip nodes fold into them.
    let mut quantised: Vec<String> = Vec::new();
    let mut qset: HashSet<String> = HashSet::new();
    let mut shares: HashMap<String, (String, bool)> = HashMap::new();
    let add = |t: &str, quantised: &mut Vec<String>, qset: &mut HashSet<String>| {
        if !t.is_empty()
            && !g.initializers.contains_key(t)
            && !plan.float_tensors.contains(t)
            && qset.insert(t.to_string())
        {
            quantised.push(t.to_string());
        }
    };
    let mut removed_nodes: HashSet<usize> = HashSet::new();
    let mut renames: HashMap<String, String> = HashMap::new();
    let int_acts = plan.activations.integer();
    if plan.activations != ActFormat::Fp32 {
        let consumers = g.consumers();
        let producers: HashMap<String, usize> = g
            .producers()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // Fusable activations first (they decide the names the producers write).
        if let Some((dtype, scheme)) = int_acts {
            for (i, n) in g.nodes.iter().enumerate() {
                let Some((lo, hi)) = clamp_bounds(&g, n) else {
                    continue;
                };
                let (Some(t), Some(r)) = (n.input(0), n.outputs.first()) else {
                    continue;
                };
                let Some(&p) = producers.get(t) else { continue };
                let prod = &g.nodes[p];
                let fusable_producer = ["Conv", "Gemm", "MatMul", "Add"]
                    .contains(&prod.op_type.as_str())
                    && !plan.skip.contains(&prod.name)
                    && !plan.skip.contains(&n.name);
                let only_reader = consumers.get(t).is_some_and(|c| c.len() == 1);
                if !fusable_producer || !only_reader || graph_outputs.contains(t) {
                    continue;
                }
                if plan.float_tensors.contains(r.as_str()) {
                    continue;
                }
                let Some(range) = ranges.get(r) else { continue };
                let (scale, zp) = act_params(r, range, dtype, scheme)?;
                let (qmin, qmax) = match dtype {
                    DType::U8 => (0i32, 255i32),
                    _ => (-128, 127),
                };
                let clamps = scale.iter().zip(&zp).all(|(&s, &z)| {
                    let low = (qmin - z) as f32 * s;
                    let high = (qmax - z) as f32 * s;
                    low >= lo - 1e-6 * lo.abs().max(1.0) && high <= hi + 1e-6 * hi.abs().max(1.0)
                });
                if clamps {
                    removed_nodes.insert(i);
                    renames.insert(t.to_string(), r.clone());
                    rec.change(format!(
                        "{} '{}' folded into the quantisation of '{r}'",
                        n.op_type, n.name
                    ));
                }
            }
        }
        let renamed = |t: &str| renames.get(t).cloned().unwrap_or_else(|| t.to_string());
        for (i, n) in g.nodes.iter().enumerate() {
            if removed_nodes.contains(&i) || plan.skip.contains(&n.name) {
                continue;
            }
            let op = n.op_type.as_str();
            let compute = COMPUTE_OPS.contains(&op);
            let pass = PASS_OPS.contains(&op);
            if !(compute || pass) || !n.domain.is_empty() {
                continue;
            }
            for t in data_inputs(n) {
                add(&renamed(t), &mut quantised, &mut qset);
            }
            for o in &n.outputs {
                add(&renamed(o), &mut quantised, &mut qset);
                if pass {
                    if let Some(src) = n.input(0) {
                        shares.insert(renamed(o), (renamed(src), op == "MaxPool"));
                    }
                }
            }
        }
    }
    // Apply the fusion: drop the folded nodes, producers write the folded outputs.
    if !removed_nodes.is_empty() {
        let mut nodes = Vec::with_capacity(g.nodes.len());
        for (i, mut n) in std::mem::take(&mut g.nodes).into_iter().enumerate() {
            if removed_nodes.contains(&i) {
                continue;
            }
            for o in n.outputs.iter_mut() {
                if let Some(r) = renames.get(o) {
                    *o = r.clone();
                }
            }
            nodes.push(n);
        }
        g.nodes = nodes;
        rec.metric("activations_folded", removed_nodes.len() as f64);
    }

    // 2. Activation parameters and Q/DQ (or simulation) nodes.
    let mut act_q: HashMap<String, ActQ> = HashMap::new();
    let mut new_nodes: Vec<Node> = Vec::new();
    let mut rewire: HashMap<String, String> = HashMap::new();
    let mut out_renames: HashMap<String, String> = HashMap::new();
    for t in &quantised {
        let is_output = graph_outputs.contains(t);
        // Graph outputs keep their names: the producer writes `<t>_QuantizeLinear_Input`.
        let (src, dst) = if is_output {
            let src = format!("{t}_QuantizeLinear_Input");
            out_renames.insert(t.clone(), src.clone());
            (src, t.clone())
        } else {
            (t.clone(), format!("{t}_DequantizeLinear_Output"))
        };
        match plan.activations {
            ActFormat::Fp32 => continue,
            ActFormat::U8 | ActFormat::I8 => {
                let (dtype, scheme) = int_acts.expect("integer format");
                // A per-channel scale only carries over when the op keeps the
                // channel axis where it was (MaxPool), not through Flatten & co.
                let source = shares.get(t);
                let shared = source
                    .and_then(|(s, keeps_axis)| {
                        act_q.get(s).filter(|q| *keeps_axis || q.axis.is_none())
                    })
                    .cloned();
                let merged;
                let q = match shared {
                    Some(q) => q,
                    None => {
                        let range = match ranges.get(t) {
                            Some(r) => r,
                            None => {
                                let from =
                                    source.and_then(|(s, _)| ranges.get(s)).ok_or_else(|| {
                                        tensor_err(
                                        t,
                                        "no activation range: calibrate (or estimate ranges from \
                                         BatchNorm statistics) before quantising",
                                    )
                                    })?;
                                let (lo, hi) = from.merged();
                                merged = TensorRange::scalar(lo, hi);
                                &merged
                            }
                        };
                        let (scale, zero_point) = act_params(t, range, dtype, scheme)?;
                        let scale_name = format!("{t}_scale");
                        let zp_name = format!("{t}_zero_point");
                        let dims = |n: usize| {
                            if range.axis.is_some() {
                                vec![n]
                            } else {
                                vec![]
                            }
                        };
                        g.initializers.insert(
                            scale_name.clone(),
                            Tensor::from_vec(dims(scale.len()), scale.clone())?,
                        );
                        let zpt = if dtype == DType::U8 {
                            Tensor::from_vec(
                                dims(zero_point.len()),
                                zero_point.iter().map(|&z| z as u8).collect::<Vec<u8>>(),
                            )?
                        } else {
                            Tensor::from_vec(
                                dims(zero_point.len()),
                                zero_point.iter().map(|&z| z as i8).collect::<Vec<i8>>(),
                            )?
                        };
                        g.initializers.insert(zp_name.clone(), zpt);
                        ActQ {
                            scale,
                            axis: range.axis,
                            scale_name,
                            zp_name,
                        }
                    }
                };
                let qname = format!("{t}_QuantizeLinear_Output");
                let mut qn = Node::new(
                    format!("{t}_QuantizeLinear"),
                    "QuantizeLinear",
                    &[&src, &q.scale_name, &q.zp_name],
                    &[&qname],
                );
                let mut dq = Node::new(
                    format!("{t}_DequantizeLinear"),
                    "DequantizeLinear",
                    &[&qname, &q.scale_name, &q.zp_name],
                    &[&dst],
                );
                if let Some(axis) = q.axis {
                    qn = qn.with("axis", Attr::Int(axis as i64));
                    dq = dq.with("axis", Attr::Int(axis as i64));
                }
                new_nodes.push(qn);
                new_nodes.push(dq);
                // Readers see the DQ output; the bias step looks the scale up by that name.
                act_q.insert(dst.clone(), q.clone());
                act_q.insert(t.clone(), q);
            }
            ActFormat::Sim(f) => {
                new_nodes.extend(sim_nodes(t, &src, &dst, f));
            }
        }
        if !is_output {
            rewire.insert(t.clone(), dst);
        }
    }
    let inserted: HashSet<String> = new_nodes.iter().map(|n| n.name.clone()).collect();
    for n in g.nodes.iter_mut() {
        for o in n.outputs.iter_mut() {
            if let Some(r) = out_renames.get(o) {
                *o = r.clone();
            }
        }
        for i in n.inputs.iter_mut() {
            if let Some(r) = rewire.get(i) {
                *i = r.clone();
            }
        }
    }
    g.nodes.extend(new_nodes);
    rec.metric(
        "activations_quantised",
        quantised.len() as f64 * (plan.activations != ActFormat::Fp32) as u8 as f64,
    );

    // 3. Weights (and int32 biases).
    let mut weight_bits: BTreeMap<String, u32> = BTreeMap::new();
    let mut weights_done = 0usize;
    let mut biases_done = 0usize;
    let mut opset_needed = g.opset();
    let layer_nodes: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| {
            let n = &g.nodes[i];
            WEIGHTED_OPS.contains(&n.op_type.as_str())
                && n.domain.is_empty()
                && !inserted.contains(&n.name)
        })
        .collect();
    let mut extra: Vec<Node> = Vec::new();
    for i in layer_nodes {
        let node = g.nodes[i].clone();
        let Some(w_name) = node.input(1).map(str::to_string) else {
            continue;
        };
        let Some(w) = g.initializers.get(&w_name).cloned() else {
            continue;
        };
        if w.dtype() != DType::F32 || w.rank() < 2 {
            continue;
        }
        let fmt = plan.weight_format(&node.name);
        match fmt {
            WeightFormat::Fp32 => continue,
            WeightFormat::Sim(f) => {
                let out = format!("{w_name}_{}", f.name());
                match f {
                    SimFormat::Fp16 | SimFormat::Bf16 => {
                        let dt = if f == SimFormat::Fp16 {
                            DType::F16
                        } else {
                            DType::BF16
                        };
                        let stored = format!("{w_name}_stored_{}", f.name());
                        g.initializers.insert(stored.clone(), w.cast(dt));
                        extra.push(
                            Node::new(format!("{w_name}_Cast"), "Cast", &[&stored], &[&out])
                                .with("to", Attr::Int(DType::F32.onnx_code() as i64)),
                        );
                    }
                    _ => {
                        let mut n = Node::new(
                            format!("{w_name}_FakeQuant"),
                            "FakeQuant",
                            &[&w_name],
                            &[&out],
                        )
                        .with("format", Attr::String(f.name().into()));
                        n.domain = SHRINK_DOMAIN.into();
                        extra.push(n);
                    }
                }
                g.nodes[i].inputs[1] = out;
                weights_done += 1;
                rec.change(format!(
                    "weights of '{}' simulated as {}",
                    node.name,
                    f.name()
                ));
            }
            WeightFormat::Int {
                bits,
                granularity,
                scheme,
            } => {
                let wq = quantize_weight(
                    &node,
                    &w_name,
                    &w,
                    bits,
                    granularity,
                    scheme,
                    ScaleChoice {
                        mse_clip: bits <= plan.mse_clip_bits,
                        fp16: plan.fp16_scales,
                    },
                )?;
                if matches!(granularity, WeightGranularity::Group(_)) {
                    opset_needed = opset_needed.max(21);
                }
                let qn = format!("{w_name}_quantized");
                let sn = format!("{w_name}_scale");
                let zn = format!("{w_name}_zero_point");
                let out = format!("{w_name}_DequantizeLinear_Output");
                g.initializers.insert(
                    qn.clone(),
                    Tensor::from_vec(
                        w.shape().to_vec(),
                        wq.codes.iter().map(|&c| c as i8).collect::<Vec<i8>>(),
                    )?,
                );
                g.initializers.insert(
                    sn.clone(),
                    Tensor::from_vec(wq.scale_shape.clone(), wq.params.scale.clone())?,
                );
                g.initializers.insert(
                    zn.clone(),
                    Tensor::from_vec(wq.scale_shape.clone(), vec![0i8; wq.params.scale.len()])?,
                );
                let mut dq = Node::new(
                    format!("{w_name}_DequantizeLinear"),
                    "DequantizeLinear",
                    &[&qn, &sn, &zn],
                    &[&out],
                );
                dq.attrs = wq.attrs.clone();
                extra.push(dq);
                g.nodes[i].inputs[1] = out;
                if bits < 8 {
                    weight_bits.insert(qn.clone(), bits);
                    g.encodings.insert(
                        qn.clone(),
                        shrink_graph::container::Encoding::Packed { bits: bits as u8 },
                    );
                }
                weights_done += 1;
                rec.change(format!(
                    "weights of '{}' ({w_name}) → int{bits} {granularity:?}",
                    node.name
                ));
                // Bias → int32 with scale s_x·s_w[c], when x has one integer scale.
                let bias_slot = match node.op_type.as_str() {
                    "Conv" | "Gemm" => 2,
                    _ => usize::MAX,
                };
                let x_name = node.input(0).unwrap_or("");
                let x_q = act_q.get(x_name).filter(|q| q.axis.is_none());
                if let (Some(b_name), Some(xq), Some(sw)) =
                    (node.input(bias_slot), x_q, wq.channel_scale.as_ref())
                {
                    if let Some(b) = g.initializers.get(b_name).cloned() {
                        if b.dtype() == DType::F32 && b.rank() == 1 && b.len() == sw.len() {
                            let sx = xq.scale[0];
                            let bs: Vec<f32> = sw.iter().map(|&s| sx * s).collect();
                            let codes: Vec<i32> = b
                                .to_f32_vec()
                                .iter()
                                .zip(&bs)
                                .map(|(&v, &s)| {
                                    (v as f64 / s as f64)
                                        .round_ties_even()
                                        .clamp(i32::MIN as f64, i32::MAX as f64)
                                        as i32
                                })
                                .collect();
                            let bq = format!("{b_name}_quantized");
                            let bsn = format!("{b_name}_quantized_scale");
                            let bzn = format!("{b_name}_quantized_zero_point");
                            let n_out = b.len();
                            g.initializers
                                .insert(bq.clone(), Tensor::from_vec(vec![n_out], codes)?);
                            g.initializers
                                .insert(bsn.clone(), Tensor::from_vec(vec![n_out], bs)?);
                            g.initializers.insert(
                                bzn.clone(),
                                Tensor::from_vec(vec![n_out], vec![0i32; n_out])?,
                            );
                            let bout = format!("{b_name}_DequantizeLinear_Output");
                            extra.push(
                                Node::new(
                                    format!("{b_name}_DequantizeLinear"),
                                    "DequantizeLinear",
                                    &[&bq, &bsn, &bzn],
                                    &[&bout],
                                )
                                .with("axis", Attr::Int(0)),
                            );
                            g.nodes[i].inputs[bias_slot] = bout;
                            biases_done += 1;
                        }
                    }
                }
            }
        }
    }
    g.nodes.extend(extra);
    // Float initializers no node reads any more (the replaced weights and biases).
    let used: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().cloned())
        .chain(g.outputs.iter().map(|o| o.name.clone()))
        .collect();
    g.initializers
        .retain(|k, _| used.contains(k) || graph_inputs.contains(k));
    let live: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().cloned())
        .chain(g.inputs.iter().map(|i| i.name.clone()))
        .collect();
    g.value_info.retain(|k, _| live.contains(k));
    if opset_needed > g.opset() {
        g.opsets.insert(String::new(), opset_needed);
    }
    if plan.activations == ActFormat::Sim(SimFormat::Posit8)
        || plan.activations == ActFormat::Sim(SimFormat::Posit16)
        || plan.activations == ActFormat::Sim(SimFormat::Flex16)
        || g.nodes.iter().any(|n| n.domain == SHRINK_DOMAIN)
    {
        g.opsets.insert(SHRINK_DOMAIN.into(), 1);
    }
    if weight_bits.is_empty() {
        g.metadata.remove(WEIGHT_BITS_KEY);
    } else {
        let json = weight_bits
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_string(k)))
            .collect::<Vec<_>>()
            .join(",");
        g.metadata
            .insert(WEIGHT_BITS_KEY.into(), format!("{{{json}}}"));
    }
    g.sort_topologically()?;
    rec.metric("weights_quantised", weights_done as f64);
    rec.metric("biases_int32", biases_done as f64);
    rec.metric("stored_bytes", stored_bytes(&g));
    Ok((g, rec))
}

fn json_string(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The `name → bits` map of [`WEIGHT_BITS_KEY`].
pub fn weight_bits(g: &Graph) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let Some(s) = g.metadata.get(WEIGHT_BITS_KEY) else {
        return out;
    };
    // Written by `insert_qdq` as a flat JSON object of string → integer.
    let body = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut rest = body;
    while let Some(start) = rest.find('"') {
        let mut name = String::new();
        let mut chars = rest[start + 1..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        name.push(e);
                    }
                }
                '"' => {
                    end = Some(start + 1 + i);
                    break;
                }
                c => name.push(c),
            }
        }
        let Some(end) = end else { break };
        let tail = &rest[end + 1..];
        let num: String = tail
            .trim_start_matches([':', ' '])
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(b) = num.parse() {
            out.insert(name, b);
        }
        rest = tail;
    }
    out
}

/// Bytes the model's initializers need when each is stored at its true
/// width (sub-8-bit codes packed), scales and zero points included.
pub fn stored_bytes(g: &Graph) -> f64 {
    let bits = weight_bits(g);
    g.initializers
        .iter()
        .map(|(k, t)| match bits.get(k) {
            Some(&b) => t.len() as f64 * b as f64 / 8.0,
            None => t.nbytes() as f64,
        })
        .sum()
}

fn sim_nodes(t: &str, src: &str, dst: &str, f: SimFormat) -> Vec<Node> {
    match f {
        SimFormat::Fp16 | SimFormat::Bf16 => {
            let dt = if f == SimFormat::Fp16 {
                DType::F16
            } else {
                DType::BF16
            };
            let mid = format!("{t}_{}", f.name());
            vec![
                Node::new(format!("{t}_Cast_{}", f.name()), "Cast", &[src], &[&mid])
                    .with("to", Attr::Int(dt.onnx_code() as i64)),
                Node::new(format!("{t}_Cast_fp32"), "Cast", &[&mid], &[dst])
                    .with("to", Attr::Int(DType::F32.onnx_code() as i64)),
            ]
        }
        _ => {
            let mut n = Node::new(format!("{t}_FakeQuant"), "FakeQuant", &[src], &[dst])
                .with("format", Attr::String(f.name().into()));
            n.domain = SHRINK_DOMAIN.into();
            vec![n]
        }
    }
}

/// Checks a bit width a recipe or plan asks for.
pub fn check_weight_bits(bits: u32) -> Result<()> {
    if (2..=8).contains(&bits) {
        Ok(())
    } else {
        Err(pass_err(format!(
            "weight bits must be in 2..=8, got {bits}"
        )))
    }
}

/// Inclusive code range of a weight format (for reports).
pub fn weight_code_range(bits: u32) -> Result<(i32, i32)> {
    Ok(code_range(bits, Scheme::SymmetricNarrow)?)
}
