//! Quantisation-aware fine-tuning of a finished QDQ model (the `qat` pass).
//!
//! At ~2.5 bits per weight (mixed W2/W3/W4/W8 under 30% of the int8 size)
//! post-training rounding alone loses points; letting the float weights move
//! while the forward pass sees exactly the quantised model recovers them
//! (Jacob et al. 2018; Krishnamoorthi 2018 §3). The pass keeps every decision
//! of the width search — bits, per-channel weight scales, activation scales and
//! zero points — and only re-learns which code each weight gets and the biases:
//!
//! 1. the QDQ graph becomes a training graph: each weight's `codes →
//!    DequantizeLinear` turns into `float weight → FakeQuant` with the same
//!    scale and code range (the float weight starts from the source model's
//!    fp32 value when it has one, else from the dequantised codes); each int32
//!    bias becomes a float bias; each activation `QuantizeLinear →
//!    DequantizeLinear` pair becomes one `FakeQuant` (same arithmetic in f32,
//!    straight-through gradient inside the range);
//! 2. [`crate::prune::finetune::finetune`] trains it (Adam, cosine schedule,
//!    optional distillation from the fp32 model);
//! 3. the trained weights are quantised back with `FakeQuant`'s own formula
//!    (`clamp(round_half_even(w / s))` in f32), so the stored codes give
//!    exactly the forward pass that was trained; biases are re-quantised to
//!    int32 at `s_x·s_w[c]` as the quantiser does.
//!
//! The output is the same QDQ graph (same nodes, names, scales, encodings)
//! with new codes: ONNX export and the container see nothing new.

use crate::prune::finetune::{finetune, Constraint, FinetuneOptions, FinetuneReport};
use crate::{CompressError, PassRecord, Result};
use shrink_data::Dataset;
use shrink_graph::{Attr, Graph, Node};
use shrink_tensor::{DType, Tensor};
use std::collections::BTreeMap;

const PASS: &str = "qat";

fn err(msg: impl Into<String>) -> CompressError {
    crate::prune::pass_error(PASS, msg.into())
}

/// A weight whose codes the training graph learns through a float copy.
struct LearnedWeight {
    /// The code initializer of the QDQ graph (`{w}_quantized`).
    codes: String,
    /// The float parameter of the training graph.
    param: String,
    scale: Vec<f32>,
    axis: usize,
    lo: f32,
    hi: f32,
}

/// An int32 bias learned as a float.
struct LearnedBias {
    codes: String,
    param: String,
    scale: Vec<f32>,
}

/// The training graph of `q` and how to map its parameters back.
struct Plan {
    train: Graph,
    weights: Vec<LearnedWeight>,
    biases: Vec<LearnedBias>,
}

/// Dequantised value of a `DequantizeLinear` input triple.
fn dequantize(codes: &Tensor, scale: &[f32], zero: &[f64], axis: usize) -> Vec<f32> {
    let shape = codes.shape();
    let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    let n = scale.len();
    codes
        .to_f64_vec()
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let k = if n == 1 { 0 } else { (i / inner.max(1)) % n };
            (c as f32 - zero[k] as f32) * scale[k]
        })
        .collect()
}

fn build(q: &Graph, source: Option<&Graph>) -> Result<Plan> {
    let bits = crate::quantize::weight_bits(q);
    let mut t = q.clone();
    t.encodings.clear();
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    let producers: BTreeMap<String, usize> = t
        .producers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut drop_nodes = vec![false; t.nodes.len()];
    let mut rewired: BTreeMap<String, String> = BTreeMap::new();
    let mut new_nodes: Vec<(usize, Node)> = Vec::new();
    for (i, n) in q.nodes.iter().enumerate() {
        if n.op_type != "DequantizeLinear" || !n.domain.is_empty() {
            continue;
        }
        let (Some(x), Some(s), out) = (n.input(0), n.input(1), n.outputs[0].clone()) else {
            continue;
        };
        let zp = n.input(2).and_then(|z| q.initializers.get(z));
        let zero: Vec<f64> = zp.map(|z| z.to_f64_vec()).unwrap_or_default();
        let Some(scale_t) = q.initializers.get(s) else {
            continue;
        };
        let scale = scale_t.to_f32_vec();
        let zero = if zero.is_empty() {
            vec![0.0; scale.len()]
        } else {
            zero
        };
        let axis = n.attr_int("axis", 1).unwrap_or(1);
        if let Some(codes) = q.initializers.get(x) {
            let axis = if codes.rank() == 0 {
                0
            } else {
                axis.rem_euclid(codes.rank() as i64) as usize
            };
            match codes.dtype() {
                DType::I8 if zero.iter().all(|&z| z == 0.0) => {
                    let b = bits.get(x).copied().unwrap_or(8);
                    let (lo, hi) = crate::quantize::weight_code_range(b)?;
                    let base = x.strip_suffix("_quantized").unwrap_or(x);
                    let init = source
                        .and_then(|g| g.initializers.get(base))
                        .filter(|w| w.shape() == codes.shape() && w.dtype() == DType::F32)
                        .map(|w| w.to_f32_vec())
                        .unwrap_or_else(|| dequantize(codes, &scale, &zero, axis));
                    let param = format!("{base}_qat");
                    t.initializers.insert(
                        param.clone(),
                        Tensor::from_vec(codes.shape().to_vec(), init)?,
                    );
                    let mut fq = Node::new(
                        format!("{base}_qat_FakeQuant"),
                        "FakeQuant",
                        &[&param, s],
                        &[&out],
                    );
                    fq.domain = shrink_train::SHRINK_DOMAIN.to_string();
                    fq.attrs.insert("bits".into(), Attr::Int(b as i64));
                    fq.attrs
                        .insert("scheme".into(), Attr::String("symmetric_narrow".into()));
                    fq.attrs.insert("axis".into(), Attr::Int(axis as i64));
                    fq.attrs
                        .insert("ste".into(), Attr::String("clipped".into()));
                    drop_nodes[i] = true;
                    new_nodes.push((i, fq));
                    weights.push(LearnedWeight {
                        codes: x.to_string(),
                        param,
                        scale,
                        axis,
                        lo: lo as f32,
                        hi: hi as f32,
                    });
                }
                DType::I32 if codes.rank() == 1 && zero.iter().all(|&z| z == 0.0) => {
                    let base = x.strip_suffix("_quantized").unwrap_or(x);
                    let param = format!("{base}_qat");
                    let v = dequantize(codes, &scale, &zero, 0);
                    t.initializers
                        .insert(param.clone(), Tensor::from_vec(vec![v.len()], v)?);
                    drop_nodes[i] = true;
                    rewired.insert(out, param.clone());
                    biases.push(LearnedBias {
                        codes: x.to_string(),
                        param,
                        scale,
                    });
                }
                _ => {}
            }
            continue;
        }
        // Activation pair: X → QuantizeLinear → (this) DequantizeLinear.
        let Some(&p) = producers.get(x) else { continue };
        let qn = &q.nodes[p];
        if qn.op_type != "QuantizeLinear" || !qn.domain.is_empty() {
            continue;
        }
        let readers = q.nodes.iter().filter(|m| m.inputs.iter().any(|v| v == x));
        if readers.count() != 1 || q.outputs.iter().any(|o| o.name == *x) {
            continue;
        }
        let Some(zp) = zp else { continue };
        let (signed, bits) = match zp.dtype() {
            DType::U8 => (0, 8),
            DType::I8 => (1, 8),
            _ => continue,
        };
        let src = qn.input(0).unwrap_or_default().to_string();
        let mut fq = Node::new(
            format!("{}_qat_FakeQuant", n.name),
            "FakeQuant",
            &[&src, s, n.input(2).unwrap_or_default()],
            &[&out],
        );
        fq.domain = shrink_train::SHRINK_DOMAIN.to_string();
        fq.attrs.insert("bits".into(), Attr::Int(bits));
        fq.attrs.insert("signed".into(), Attr::Int(signed));
        fq.attrs.insert("narrow".into(), Attr::Int(0));
        if scale.len() > 1 {
            fq.attrs.insert("axis".into(), Attr::Int(axis));
        }
        fq.attrs
            .insert("ste".into(), Attr::String("clipped".into()));
        drop_nodes[p] = true;
        drop_nodes[i] = true;
        new_nodes.push((i, fq));
    }
    let mut nodes = Vec::with_capacity(t.nodes.len());
    let mut pending: BTreeMap<usize, Node> = new_nodes.into_iter().collect();
    for (i, n) in t.nodes.iter().enumerate() {
        if let Some(fq) = pending.remove(&i) {
            nodes.push(fq);
        }
        if !drop_nodes[i] {
            let mut n = n.clone();
            for v in n.inputs.iter_mut() {
                if let Some(r) = rewired.get(v) {
                    *v = r.clone();
                }
            }
            nodes.push(n);
        }
    }
    t.nodes = nodes;
    t.opsets
        .entry(shrink_train::SHRINK_DOMAIN.to_string())
        .or_insert(1);
    // Codes no node reads any more would be trained as parameters otherwise.
    let used: std::collections::HashSet<&str> = t
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(String::as_str))
        .collect();
    let unused: Vec<String> = t
        .initializers
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect();
    for k in unused {
        t.initializers.shift_remove(&k);
    }
    t.sort_topologically()
        .map_err(|e| err(format!("training graph: {e}")))?;
    if weights.is_empty() {
        return Err(err(
            "no quantised weights (DequantizeLinear of int8 codes): run a quantising pass first",
        ));
    }
    Ok(Plan {
        train: t,
        weights,
        biases,
    })
}

/// Codes of the trained weights and biases written into a copy of `q`.
fn write_back(q: &Graph, plan: &Plan) -> Result<(Graph, usize)> {
    let mut out = q.clone();
    let mut changed = 0usize;
    for w in &plan.weights {
        let p = plan.train.initializers[&w.param].to_f32_vec();
        let old = &q.initializers[&w.codes];
        let shape = old.shape().to_vec();
        let inner: usize = shape.get(w.axis + 1..).map_or(1, |s| s.iter().product());
        let n = w.scale.len();
        let codes: Vec<i8> = p
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let k = if n == 1 { 0 } else { (i / inner.max(1)) % n };
                (v / w.scale[k]).round_ties_even().clamp(w.lo, w.hi) as i8
            })
            .collect();
        changed += codes
            .iter()
            .zip(old.to_f64_vec())
            .filter(|(&a, b)| a as f64 != *b)
            .count();
        out.initializers
            .insert(w.codes.clone(), Tensor::from_vec(shape, codes)?);
    }
    for b in &plan.biases {
        let p = plan.train.initializers[&b.param].to_f32_vec();
        let codes: Vec<i32> = p
            .iter()
            .zip(&b.scale)
            .map(|(&v, &s)| {
                (v as f64 / s as f64)
                    .round_ties_even()
                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32
            })
            .collect();
        out.initializers
            .insert(b.codes.clone(), Tensor::from_vec(vec![codes.len()], codes)?);
    }
    Ok((out, changed))
}

/// Fine-tunes the codes of the QDQ model `q` on `data` (training split);
/// `source` is the fp32 model the weights start from (and, through
/// `opts.distill`, the teacher). Returns the QDQ graph with the new codes.
pub fn qat(
    q: &Graph,
    source: Option<&Graph>,
    data: &Dataset,
    opts: &FinetuneOptions,
) -> Result<(Graph, PassRecord, FinetuneReport)> {
    let mut plan = build(q, source)?;
    let report = finetune(&mut plan.train, data, opts, Constraint::None)?;
    let (out, changed) = write_back(q, &plan)?;
    let mut rec = PassRecord::new(PASS)
        .option("epochs", opts.epochs.to_string())
        .option("lr", opts.lr.to_string())
        .option("batch", opts.batch.to_string())
        .option("samples", data.len().to_string());
    rec.metric("steps", report.steps as f64);
    rec.metric("first_loss", report.first_loss);
    rec.metric("last_loss", report.last_loss);
    rec.metric("learned_weights", plan.weights.len() as f64);
    rec.metric("learned_biases", plan.biases.len() as f64);
    rec.metric("codes_changed", changed as f64);
    rec.change(format!(
        "{} weight tensors and {} biases fine-tuned through FakeQuant ({} steps); {changed} weight codes changed",
        plan.weights.len(),
        plan.biases.len(),
        report.steps
    ));
    Ok((out, rec, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The training graph computes the QDQ graph's function exactly when the
    /// float weights start at the dequantised codes, and writing back an
    /// untrained plan returns the same codes.
    #[test]
    fn training_graph_matches_the_qdq_graph_and_round_trips() {
        let path = shrink_data::shared_data_dir()
            .expect("shared/data/fashion not found: set $SHRINK_SHARED to the shared/ directory")
            .join("fashion/lenet5_bn.onnx");
        let g = shrink_graph::onnx::load(&path).expect("LeNet-5-BN model (shared data)");
        let x: Vec<f32> = (0..2 * 784)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        let x = Tensor::from_vec(vec![2, 1, 28, 28], x).unwrap();
        let ranges = crate::calib::driver::calibrate(
            &g,
            &crate::quantize::activation_tensors(&g),
            std::slice::from_ref(&x),
            &crate::calib::driver::CalibConfig {
                observer: Default::default(),
                threads: 1,
            },
            |_| {},
        )
        .unwrap();
        let mut plan_q = crate::quantize::QuantPlan::int8();
        plan_q.weights = crate::quantize::WeightFormat::int(4);
        let (q, _) = crate::quantize::insert_qdq(&g, &plan_q, &ranges).unwrap();
        let plan = build(&q, None).unwrap();
        assert!(plan.weights.len() == 5 && plan.biases.len() == 5);
        let run = |g: &Graph| {
            shrink_runtime::Session::new(g.clone(), Default::default())
                .unwrap()
                .run(vec![x.clone()])
                .unwrap()[0]
                .to_f32_vec()
        };
        let mut exec = shrink_train::Executor::new(&plan.train).unwrap();
        let mut params =
            shrink_train::ParamStore::from_graph(&plan.train, &shrink_train::ParamFilter::All)
                .unwrap();
        let input = g.inputs[0].name.clone();
        let t = exec
            .forward(
                &mut params,
                &[(input.as_str(), &x)],
                shrink_train::Mode::Eval,
            )
            .unwrap()[0]
            .to_f32_vec();
        let r = run(&q);
        for (a, b) in t.iter().zip(&r) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let (back, changed) = write_back(&q, &plan).unwrap();
        assert_eq!(changed, 0);
        for w in &plan.weights {
            assert_eq!(back.initializers[&w.codes], q.initializers[&w.codes]);
        }
    }
}
