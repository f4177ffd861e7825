//! The data-free quantisation pipeline (Nagel et al. 2019) end to end:
//! fold BN → [ReLU6 → ReLU] → cross-layer equalisation → high-bias
//! absorption → analytic bias correction → activation ranges from BN
//! statistics → QDQ graph. No data at any step.
//!
//! The last step (weights to codes + QuantizeLinear/DequantizeLinear
//! insertion) is the `quantize` pass ([`insert_qdq`]) fed with the data-free
//! ranges; [`simulate_quantized`] is a simpler simulation (dequantised
//! weights, Q/DQ on layer inputs) kept for weight-only experiments.

use crate::bias_absorb::{absorb_high_bias, AbsorbOptions};
use crate::bias_correct::{analytic_means, correct_bias, WeightGranularity, WeightQuant};
use crate::cle::{equalize_cross_layer, CleOptions};
use crate::fold_bn::{fold_batchnorm, BnStats};
use crate::linear_layer::LinearLayer;
use crate::quantize::{insert_qdq, QuantPlan, WeightFormat, WeightGranularity as QGranularity};
use crate::ranges::{ActivationRanges, TensorRange};
use crate::ranges_bn::{ranges_from_bn, BnRangeOptions};
use crate::relu6::{relu6_to_relu, Relu6Scope};
use crate::{CompressError, PassRecord, Result};
use shrink_formats::intq::{QuantParams, Scheme};
use shrink_graph::{Graph, Node};
use shrink_tensor::{Tensor, TensorData};
use std::collections::BTreeSet;

/// Options of [`dfq_pipeline`]; the default is the paper's int8 recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct DfqOptions {
    pub weights: WeightQuant,
    /// Activation bits (unsigned affine codes).
    pub activation_bits: u32,
    /// Replace Clip(0, 6) between layers by ReLU so CLE can pair them.
    pub relu6_to_relu: bool,
    /// `None` skips equalisation.
    pub cle: Option<CleOptions>,
    /// `None` skips high-bias absorption.
    pub absorb: Option<AbsorbOptions>,
    pub bias_correction: bool,
    pub ranges: BnRangeOptions,
    /// What to do with activations whose data-free range is only an
    /// interval-arithmetic bound (layers without BN statistics).
    pub loose_ranges: LooseRanges,
    pub quantizer: Quantizer,
}

/// Activations without BN statistics upstream have only a guaranteed
/// interval bound, which can be far wider than real inputs reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LooseRanges {
    /// Quantise with the bound anyway (static QDQ everywhere).
    Static,
    /// Quantise those tensors with ranges measured at run time on each
    /// input (DynamicQuantizeLinear, as ONNX Runtime's dynamic mode): still
    /// no data at quantisation time, and no static range to get wrong.
    Dynamic,
}

impl Default for DfqOptions {
    fn default() -> Self {
        DfqOptions {
            weights: WeightQuant::new(8, WeightGranularity::PerChannel),
            activation_bits: 8,
            relu6_to_relu: false,
            cle: Some(CleOptions::default()),
            absorb: Some(AbsorbOptions::default()),
            bias_correction: true,
            ranges: BnRangeOptions::default(),
            loose_ranges: LooseRanges::Dynamic,
            quantizer: Quantizer::Qdq,
        }
    }
}

/// The float part of DFQ: the transformed fp32 graph (weights not yet
/// quantised, biases already corrected for the weight format in `opts`), its
/// BN statistics and the data-free activation ranges.
pub struct DfqPrepared {
    pub graph: Graph,
    pub stats: BnStats,
    pub ranges: ActivationRanges,
    /// Values whose range is only an interval bound (see [`LooseRanges`]).
    pub bound_only: BTreeSet<String>,
    pub records: Vec<PassRecord>,
}

/// Runs every DFQ step up to (not including) quantisation.
pub fn dfq_prepare(graph: &Graph, opts: &DfqOptions) -> Result<DfqPrepared> {
    let mut records = Vec::new();
    let (mut g, rec, mut stats) = fold_batchnorm(graph)?;
    records.push(rec);
    if opts.relu6_to_relu {
        let (g2, rec) = relu6_to_relu(&g, Relu6Scope::BetweenLayers)?;
        g = g2;
        records.push(rec);
    }
    if let Some(cle) = &opts.cle {
        let (g2, rec) = equalize_cross_layer(&g, cle, Some(&mut stats))?;
        g = g2;
        records.push(rec);
    }
    if let Some(absorb) = &opts.absorb {
        let (g2, rec) = absorb_high_bias(&g, &mut stats, absorb)?;
        g = g2;
        records.push(rec);
    }
    if opts.bias_correction {
        let means = analytic_means(&g, &stats);
        let (g2, rec) = correct_bias(&g, &means, &opts.weights, "analytic (BN statistics)")?;
        g = g2;
        records.push(rec);
    }
    let (r, rec) = ranges_from_bn(&g, &stats, &opts.ranges)?;
    records.push(rec);
    Ok(DfqPrepared {
        graph: g,
        stats,
        ranges: r.ranges,
        bound_only: r.bound_only,
        records,
    })
}

/// How the last step turns the prepared fp32 graph into a quantised one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantizer {
    /// The canonical QDQ graph of the `quantize` pass ([`insert_qdq`]): int
    /// weight codes → DequantizeLinear, int32 biases, activation
    /// QuantizeLinear/DequantizeLinear with ReLUs folded as ONNX Runtime does.
    Qdq,
    /// [`simulate_quantized`]: dequantised float weights, Q/DQ pairs on the
    /// inputs of Conv/Gemm/Add only (the stopgap used before `quantize` existed).
    Simulated,
}

/// The `quantize` pass's plan for a DFQ weight format, u8 activations.
pub fn quant_plan(wq: &WeightQuant) -> QuantPlan {
    let granularity = match wq.granularity {
        WeightGranularity::PerTensor => QGranularity::Tensor,
        WeightGranularity::PerChannel => QGranularity::Channel,
        WeightGranularity::PerGroup(n) => QGranularity::Group(n),
    };
    QuantPlan {
        weights: WeightFormat::Int {
            bits: wq.bits,
            granularity,
            scheme: wq.scheme,
        },
        ..QuantPlan::int8()
    }
}

/// Data-free quantisation of `graph`: returns the quantised graph and the
/// record of every pass.
pub fn dfq_pipeline(graph: &Graph, opts: &DfqOptions) -> Result<(Graph, Vec<PassRecord>)> {
    let DfqPrepared {
        graph: g,
        ranges,
        bound_only,
        mut records,
        ..
    } = dfq_prepare(graph, opts)?;
    let dynamic = match opts.loose_ranges {
        LooseRanges::Static => BTreeSet::new(),
        LooseRanges::Dynamic => bound_only,
    };
    if opts.activation_bits != 8 {
        return Err(CompressError::Pass {
            pass: "dfq".into(),
            msg: format!(
                "activation bits {}: only 8-bit (u8) activations are supported",
                opts.activation_bits
            ),
        });
    }
    match opts.quantizer {
        Quantizer::Simulated => {
            let act = ActivationQuant {
                ranges: &ranges,
                bits: opts.activation_bits,
                dynamic: &dynamic,
            };
            let (q, rec) = simulate_quantized(&g, &opts.weights, Some(act))?;
            records.push(rec);
            Ok((q, records))
        }
        Quantizer::Qdq => {
            // Integer kernels take one scale per activation tensor.
            let mut per_tensor = ActivationRanges::new();
            for (name, r) in &ranges.tensors {
                let (lo, hi) = r.merged();
                per_tensor.insert(name.clone(), TensorRange::scalar(lo, hi));
            }
            let (mut q, rec) = insert_qdq(&g, &quant_plan(&opts.weights), &per_tensor)?;
            records.push(rec);
            if !dynamic.is_empty() {
                records.push(make_dynamic(&mut q, &dynamic, &per_tensor)?);
            }
            Ok((q, records))
        }
    }
}

/// Turns the static QuantizeLinear of every tensor in `dynamic` into a
/// DynamicQuantizeLinear whose run-time scale and zero point the matching
/// DequantizeLinear reads. A tensor known to be non-negative (a ReLU output,
/// whose ReLU the quantiser may have folded into its clamp) gets a Relu in
/// front, since a dynamic range does not clamp at zero.
fn make_dynamic(
    g: &mut Graph,
    dynamic: &BTreeSet<String>,
    ranges: &ActivationRanges,
) -> Result<PassRecord> {
    let mut rec = PassRecord::new("dynamic-activations");
    let mut extra = Vec::new();
    let mut rewire: Vec<(String, String, String)> = Vec::new();
    for n in g.nodes.iter_mut() {
        if n.op_type != "QuantizeLinear" || !n.domain.is_empty() {
            continue;
        }
        let x = n.inputs[0].clone();
        let t = x
            .strip_suffix("_QuantizeLinear_Input")
            .unwrap_or(&x)
            .to_string();
        if !dynamic.contains(&t) {
            continue;
        }
        let non_negative = ranges.get(&t).is_some_and(|r| r.merged().0 >= 0.0);
        let mut input = x.clone();
        if non_negative {
            input = format!("{t}_dynamic_relu");
            extra.push(Node::new(
                format!("{t}_DynamicRelu"),
                "Relu",
                &[&x],
                &[&input],
            ));
        }
        let (scale, zp) = (
            format!("{t}_dynamic_scale"),
            format!("{t}_dynamic_zero_point"),
        );
        let q = n.outputs[0].clone();
        *n = Node::new(
            format!("{t}_DynamicQuantizeLinear"),
            "DynamicQuantizeLinear",
            &[&input],
            &[&q, &scale, &zp],
        );
        rewire.push((q, scale, zp));
        rec.change(format!("{t}: run-time range (DynamicQuantizeLinear)"));
    }
    for n in g.nodes.iter_mut() {
        if n.op_type != "DequantizeLinear" {
            continue;
        }
        if let Some((_, s, z)) = rewire.iter().find(|(q, _, _)| n.inputs.first() == Some(q)) {
            n.inputs = vec![n.inputs[0].clone(), s.clone(), z.clone()];
            n.attrs.remove("axis");
        }
    }
    rec.metric("activations_dynamic", rewire.len() as f64);
    g.nodes.extend(extra);
    g.sort_topologically()?;
    crate::fold_bn::drop_unused_initializers(g);
    Ok(rec)
}

/// How [`simulate_quantized`] quantises activations.
#[derive(Debug, Clone, Copy)]
pub struct ActivationQuant<'a> {
    pub ranges: &'a ActivationRanges,
    pub bits: u32,
    /// Values quantised with run-time ranges (DynamicQuantizeLinear).
    pub dynamic: &'a BTreeSet<String>,
}

/// The simulated quantised model: every Conv/Gemm weight replaced by its
/// dequantised `W_q`, and (with `activations`) every tensor read by a
/// Conv/Gemm or an Add fake-quantised to unsigned `bits`-bit codes through a
/// QuantizeLinear → DequantizeLinear pair, with per-tensor parameters from
/// its range (or a DynamicQuantizeLinear → DequantizeLinear pair for the
/// `dynamic` ones). Tensors without a range stay float and are listed in the
/// record.
pub fn simulate_quantized(
    g: &Graph,
    wq: &WeightQuant,
    activations: Option<ActivationQuant<'_>>,
) -> Result<(Graph, PassRecord)> {
    let mut out = g.clone();
    let mut rec = PassRecord::new("simulate-quantized")
        .option("weight_bits", wq.bits)
        .option("weight_granularity", format!("{:?}", wq.granularity));
    let layers = LinearLayer::all(g);
    for l in &layers {
        let w = l.weight_values(g);
        let q = wq.fake_quantize(l, &w)?;
        l.set_weight(&mut out, q)?;
    }
    rec.metric("weights_quantized", layers.len() as f64);
    let Some(ActivationQuant {
        ranges,
        bits,
        dynamic,
    }) = activations
    else {
        return Ok((out, rec));
    };
    rec.options
        .insert("activation_bits".into(), bits.to_string());
    if bits != 8 {
        return Err(CompressError::Pass {
            pass: "simulate-quantized".into(),
            msg: format!("activation bits {bits}: only 8-bit (u8) activations are simulated"),
        });
    }
    // Values to fake-quantise: data inputs of layers and Add inputs.
    let mut targets: Vec<String> = Vec::new();
    for n in &g.nodes {
        let reads: Vec<&String> = match n.op_type.as_str() {
            "Conv" | "Gemm" | "ConvTranspose" | "MatMul" => n.inputs.iter().take(1).collect(),
            "Add" => n.inputs.iter().take(2).collect(),
            _ => continue,
        };
        for x in reads {
            if !x.is_empty() && !g.initializers.contains_key(x) && !targets.contains(x) {
                targets.push(x.clone());
            }
        }
    }
    let mut quantized = 0;
    let mut dynamic_count = 0;
    let mut new_nodes: Vec<(String, Vec<Node>)> = Vec::new();
    for x in &targets {
        let (q, dq) = (format!("{x}.q"), format!("{x}.dq"));
        let (s_name, z_name) = (format!("{x}.act_scale"), format!("{x}.act_zero"));
        let nodes = if dynamic.contains(x) {
            dynamic_count += 1;
            rec.change(format!("{x}: run-time range (DynamicQuantizeLinear)"));
            vec![
                Node::new(
                    format!("{x}.DynamicQuantizeLinear"),
                    "DynamicQuantizeLinear",
                    &[x],
                    &[&q, &s_name, &z_name],
                ),
                Node::new(
                    format!("{x}.DequantizeLinear"),
                    "DequantizeLinear",
                    &[&q, &s_name, &z_name],
                    &[&dq],
                ),
            ]
        } else {
            let Some(r) = ranges.get(x) else {
                rec.change(format!("{x}: no range, left in float"));
                continue;
            };
            let (lo, hi) = r.merged();
            let (scale, zp) = QuantParams::from_range(bits, Scheme::Affine, lo, hi)?;
            out.initializers
                .insert(s_name.clone(), Tensor::scalar(scale));
            out.initializers.insert(
                z_name.clone(),
                Tensor::new(vec![], TensorData::U8(vec![zp as u8]))?,
            );
            vec![
                Node::new(
                    format!("{x}.QuantizeLinear"),
                    "QuantizeLinear",
                    &[x, &s_name, &z_name],
                    &[&q],
                ),
                Node::new(
                    format!("{x}.DequantizeLinear"),
                    "DequantizeLinear",
                    &[&q, &s_name, &z_name],
                    &[&dq],
                ),
            ]
        };
        for n in out.nodes.iter_mut() {
            let k = match n.op_type.as_str() {
                "Conv" | "Gemm" | "ConvTranspose" | "MatMul" => 1,
                "Add" => 2,
                _ => 0,
            };
            for inp in n.inputs.iter_mut().take(k) {
                if inp == x {
                    *inp = dq.clone();
                }
            }
        }
        new_nodes.push((x.clone(), nodes));
        quantized += 1;
    }
    // Insert each pair right after its producer (or first, for inputs).
    for (x, nodes) in new_nodes {
        let pos = out
            .nodes
            .iter()
            .position(|n| n.outputs.contains(&x))
            .map_or(0, |p| p + 1);
        for (k, n) in nodes.into_iter().enumerate() {
            out.nodes.insert(pos + k, n);
        }
    }
    rec.metric("activations_quantized", quantized as f64);
    rec.metric("activations_dynamic", dynamic_count as f64);
    Ok((out, rec))
}

/// Top-1 accuracy (%) of `g` on the first `limit` examples of `data`,
/// batches of `batch`, through the fp32 runtime.
pub fn top1_accuracy(
    g: &Graph,
    data: &shrink_data::Dataset,
    limit: usize,
    batch: usize,
    threads: usize,
) -> Result<f64> {
    let session = shrink_runtime::Session::new(
        g.clone(),
        shrink_runtime::SessionOptions {
            threads,
            ..Default::default()
        },
    )?;
    let part = data.take(limit);
    let (mut right, mut total) = (0usize, 0usize);
    for b in part.batches(batch) {
        let (x, y) = b?;
        let out = session.run(vec![x])?;
        let logits = out[0].to_f32_vec();
        let classes = logits.len() / y.len().max(1);
        for (i, &label) in y.iter().enumerate() {
            let row = &logits[i * classes..(i + 1) * classes];
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |m, (k, &v)| if v > m.1 { (k, v) } else { m },
                )
                .0;
            right += usize::from(best as i64 == label);
            total += 1;
        }
    }
    Ok(100.0 * right as f64 / total.max(1) as f64)
}

/// Options the recipe pass `dfq` accepts (see `recipes/int8-dfq.toml`).
pub const RECIPE_OPTIONS: &[&str] = &[
    "weights",
    "granularity",
    "relu6_to_relu",
    "cle",
    "cle_include_gemm",
    "absorb_high_bias",
    "bias_correction",
    "n_sigma",
    "loose_ranges",
];

/// The whole data-free pipeline as one recipe pass, so the BN statistics
/// every step reads stay inside it and the run-time-range fallback can follow
/// the quantisation it patches.
pub fn recipe_pass(
    g: &Graph,
    o: &crate::recipe::Options,
    _ctx: &mut crate::recipe::Context,
) -> Result<(Graph, PassRecord)> {
    let mut opts = DfqOptions::default();
    let weights = o.str("weights", "int8")?;
    let bits: u32 = weights
        .strip_prefix("int")
        .and_then(|b| b.parse().ok())
        .filter(|b| (2..=8).contains(b))
        .ok_or_else(|| o.err("weights", format!("'{weights}' is not int2..int8")))?;
    let granularity = match o.str("granularity", "channel")? {
        "tensor" => WeightGranularity::PerTensor,
        "channel" => WeightGranularity::PerChannel,
        g => match g
            .strip_prefix("group:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n > 0 => WeightGranularity::PerGroup(n),
            _ => {
                return Err(o.err(
                    "granularity",
                    format!("'{g}' is not tensor, channel or group:N"),
                ))
            }
        },
    };
    opts.weights = WeightQuant::new(bits, granularity);
    opts.relu6_to_relu = o.bool("relu6_to_relu", false)?;
    if !o.bool("cle", true)? {
        opts.cle = None;
    } else if let Some(c) = opts.cle.as_mut() {
        c.include_gemm = o.bool("cle_include_gemm", false)?;
    }
    if !o.bool("absorb_high_bias", true)? {
        opts.absorb = None;
    }
    opts.bias_correction = o.bool("bias_correction", true)?;
    if let Some(n) = o.float_opt("n_sigma")? {
        if !(n > 0.0 && n.is_finite()) {
            return Err(o.err("n_sigma", format!("must be positive, got {n}")));
        }
        opts.ranges.n_sigma = n as f32;
    }
    opts.loose_ranges = match o.str("loose_ranges", "dynamic")? {
        "dynamic" => LooseRanges::Dynamic,
        "static" => LooseRanges::Static,
        v => return Err(o.err("loose_ranges", format!("'{v}' is not dynamic or static"))),
    };
    let (q, records) = dfq_pipeline(g, &opts)?;
    let mut rec = PassRecord::new("dfq")
        .option("weights", weights)
        .option("granularity", format!("{granularity:?}"));
    for r in records {
        for c in r.changes {
            rec.change(format!("{}: {c}", r.pass));
        }
        for (k, v) in r.metrics {
            rec.metric(&format!("{}.{k}", r.pass), v);
        }
    }
    Ok((q, rec))
}
