//! Mixed precision: how much each layer suffers from fewer weight bits, and
//! which layers can take them under a size or energy budget.
//!
//! Sensitivity of a layer = the damage of lowering only that layer from the
//! base width (W8) to the low width (W4), everything else as in the base
//! plan, measured on calibration data as the mean KL divergence of the
//! model's softmax from the fp32 model's (no labels needed), or as the
//! accuracy drop when labels are given. The search then lowers layers in
//! order of least damage per byte (or picojoule) saved until the budget
//! holds — the greedy knapsack order, which is optimal when damages add up.
//!
//! Size can be counted two ways ([`SizeModel`]): nominally (codes at their
//! bit width, everything else at its dtype's), or as the `.shrink` container
//! really stores the graph ([`encoded_bytes`]): each tensor takes the smaller
//! of its plain form (dense, or packed at its bit width) and the canonical
//! Huffman code of that form. Entropy coding matters for the choice: per-
//! channel codes of bell-shaped weights use ~7.4 of 8 bits at W8 but ~3.3 of
//! 4 at W4 and ~2.1 of 3 at W3, so a layer's real saving is not its nominal
//! one. [`search_widths`] lowers layers step by step through several widths
//! (e.g. 8 → 4 → 3 → 2), each step the least extra damage per byte saved.

use crate::quantize::{insert_qdq, stored_bytes, weighted_layers, QuantPlan, WeightFormat};
use crate::ranges::ActivationRanges;
use crate::{CompressError, PassRecord, Result};
use serde::{Deserialize, Serialize};
use shrink_energy::{estimate, layer_work, Assignment, MemoryConfig, Precision};
use shrink_graph::container::{encode_tensor, Encoding};
use shrink_graph::Graph;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::{DType, Tensor};
use std::collections::BTreeMap;

/// Runs `g` over `batches` and returns the first output of each batch.
pub fn outputs(g: &Graph, batches: &[Tensor], threads: usize) -> Result<Vec<Tensor>> {
    let s = Session::new(
        g.clone(),
        SessionOptions {
            threads,
            ..Default::default()
        },
    )?;
    batches
        .iter()
        .map(|x| Ok(s.run(vec![x.clone()])?.remove(0)))
        .collect()
}

/// Top-1 accuracy in percent of logits `[B, C]` batches against labels.
/// Ties go to the lower class (NumPy's argmax).
pub fn accuracy(logits: &[Tensor], labels: &[i64]) -> Result<f64> {
    let mut correct = 0usize;
    let mut n = 0usize;
    for t in logits {
        let c = *t.shape().last().unwrap_or(&1);
        for row in t.to_f32_vec().chunks(c.max(1)) {
            let Some(&label) = labels.get(n) else {
                return Err(CompressError::Pass {
                    pass: "evaluate".into(),
                    msg: format!("more outputs than the {} labels", labels.len()),
                });
            };
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            correct += (best as i64 == label) as usize;
            n += 1;
        }
    }
    Ok(100.0 * correct as f64 / n.max(1) as f64)
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    row.iter().map(|&v| v as f64 - m - s.ln()).collect()
}

/// Mean over samples of KL(softmax(reference) ‖ softmax(test)).
pub fn mean_kl(reference: &[Tensor], test: &[Tensor]) -> f64 {
    let mut total = 0.0;
    let mut n = 0usize;
    for (r, t) in reference.iter().zip(test) {
        let c = *r.shape().last().unwrap_or(&1);
        let (rv, tv) = (r.to_f32_vec(), t.to_f32_vec());
        for (a, b) in rv.chunks(c.max(1)).zip(tv.chunks(c.max(1))) {
            let (la, lb) = (log_softmax(a), log_softmax(b));
            total += la
                .iter()
                .zip(&lb)
                .map(|(&x, &y)| x.exp() * (x - y))
                .sum::<f64>();
            n += 1;
        }
    }
    total / n.max(1) as f64
}

/// What sensitivity measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Mean KL divergence from the fp32 outputs.
    Kl,
    /// Accuracy drop in points (needs labels).
    Accuracy,
}

/// One layer's cost of going low.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    pub layer: String,
    pub weight: String,
    /// Damage (KL, or accuracy points lost) when only this layer is low.
    pub damage: f64,
    /// Bytes saved by storing it at the low width.
    pub bytes_saved: f64,
    /// Picojoules per inference saved (energy model).
    pub pj_saved: f64,
}

/// Data sensitivity is measured on.
pub struct SensitivityData<'a> {
    pub batches: &'a [Tensor],
    /// Labels for [`Metric::Accuracy`].
    pub labels: Option<&'a [i64]>,
    pub threads: usize,
}

fn damage(
    metric: Metric,
    fp32: &[Tensor],
    test: &[Tensor],
    labels: Option<&[i64]>,
    base_acc: f64,
) -> Result<f64> {
    Ok(match metric {
        Metric::Kl => mean_kl(fp32, test),
        Metric::Accuracy => {
            let labels = labels.ok_or_else(|| CompressError::Pass {
                pass: "mixed-precision".into(),
                msg: "metric 'accuracy' needs labelled calibration data".into(),
            })?;
            base_acc - accuracy(test, labels)?
        }
    })
}

/// Energy of one inference (pJ) for per-layer weight widths, activations at `act_bits`.
pub fn energy_pj(g: &Graph, widths: &[(String, u32)], act_bits: u32) -> Result<f64> {
    let layers = layer_work(g).map_err(|e| CompressError::Pass {
        pass: "mixed-precision".into(),
        msg: format!("energy model: {e}"),
    })?;
    let mut asg = Assignment::uniform(Precision::Int(8), Precision::Int(act_bits));
    asg.overrides = widths
        .iter()
        .map(|(n, b)| (n.clone(), Precision::Int(*b), Precision::Int(act_bits)))
        .collect();
    Ok(estimate(&layers, &asg, &MemoryConfig::new(256 * 1024))
        .total
        .total_pj())
}

/// Sensitivity of every weighted layer of `fp32` to going from `base` to
/// `low` weights, with the rest of `plan` as given.
pub fn sensitivities(
    fp32: &Graph,
    plan: &QuantPlan,
    ranges: &ActivationRanges,
    low: WeightFormat,
    metric: Metric,
    data: &SensitivityData,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Sensitivity>> {
    let reference = outputs(fp32, data.batches, data.threads)?;
    let base_acc = match (metric, data.labels) {
        (Metric::Accuracy, Some(l)) => accuracy(&reference, l)?,
        _ => 0.0,
    };
    let (base_graph, _) = insert_qdq(fp32, plan, ranges)?;
    let base_bytes = stored_bytes(&base_graph);
    let act_bits = plan.activations.bits();
    let base_widths: Vec<(String, u32)> = weighted_layers(fp32)
        .into_iter()
        .map(|(n, _)| {
            let b = plan.weight_format(&n).bits();
            (n, b)
        })
        .collect();
    let base_pj = energy_pj(fp32, &base_widths, act_bits)?;
    let mut out = Vec::new();
    for (layer, weight) in weighted_layers(fp32) {
        if plan.skip.contains(&layer) {
            continue;
        }
        progress(&layer);
        let mut p = plan.clone();
        p.layers.insert(layer.clone(), low);
        let (g, _) = insert_qdq(fp32, &p, ranges)?;
        let test = outputs(&g, data.batches, data.threads)?;
        let d = damage(metric, &reference, &test, data.labels, base_acc)?;
        let widths: Vec<(String, u32)> = base_widths
            .iter()
            .map(|(n, b)| (n.clone(), if *n == layer { low.bits() } else { *b }))
            .collect();
        out.push(Sensitivity {
            layer,
            weight,
            damage: d,
            bytes_saved: base_bytes - stored_bytes(&g),
            pj_saved: base_pj - energy_pj(fp32, &widths, act_bits)?,
        });
    }
    Ok(out)
}

/// What the search must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Budget {
    /// Stored bytes of the quantised model.
    Bytes(f64),
    /// Energy per inference in pJ (shrink-energy, 256 KiB SRAM).
    EnergyPj(f64),
}

/// Lowers layers in order of least damage per unit saved until `budget`
/// holds. Returns the plan and a record; an unreachable budget is an error
/// naming the least the low width can reach.
pub fn search(
    fp32: &Graph,
    plan: &QuantPlan,
    ranges: &ActivationRanges,
    low: WeightFormat,
    sens: &[Sensitivity],
    budget: Budget,
) -> Result<(QuantPlan, PassRecord)> {
    let mut rec = PassRecord::new("mixed-precision")
        .option("low", format!("{low:?}"))
        .option("budget", format!("{budget:?}"));
    let act_bits = plan.activations.bits();
    let widths_of = |p: &QuantPlan| -> Vec<(String, u32)> {
        weighted_layers(fp32)
            .into_iter()
            .map(|(n, _)| {
                let b = p.weight_format(&n).bits();
                (n, b)
            })
            .collect()
    };
    let cost = |p: &QuantPlan| -> Result<f64> {
        Ok(match budget {
            Budget::Bytes(_) => stored_bytes(&insert_qdq(fp32, p, ranges)?.0),
            Budget::EnergyPj(_) => energy_pj(fp32, &widths_of(p), act_bits)?,
        })
    };
    let limit = match budget {
        Budget::Bytes(b) | Budget::EnergyPj(b) => b,
    };
    let mut order: Vec<&Sensitivity> = sens
        .iter()
        .filter(|s| match budget {
            Budget::Bytes(_) => s.bytes_saved > 0.0,
            Budget::EnergyPj(_) => s.pj_saved > 0.0,
        })
        .collect();
    let per_unit = |s: &Sensitivity| {
        let saved = match budget {
            Budget::Bytes(_) => s.bytes_saved,
            Budget::EnergyPj(_) => s.pj_saved,
        };
        s.damage.max(0.0) / saved
    };
    order.sort_by(|a, b| {
        per_unit(a)
            .total_cmp(&per_unit(b))
            .then(a.layer.cmp(&b.layer))
    });
    let mut p = plan.clone();
    let mut current = cost(&p)?;
    rec.metric("start_cost", current);
    let mut lowered = 0;
    for s in order {
        if current <= limit {
            break;
        }
        p.layers.insert(s.layer.clone(), low);
        current = cost(&p)?;
        lowered += 1;
        rec.change(format!(
            "'{}' → {}-bit weights (damage {:.3e}, saves {:.0} B, {:.0} pJ)",
            s.layer,
            low.bits(),
            s.damage,
            s.bytes_saved,
            s.pj_saved
        ));
    }
    rec.metric("layers_lowered", lowered as f64);
    rec.metric("final_cost", current);
    rec.metric("budget", limit);
    if current > limit {
        return Err(CompressError::Pass {
            pass: "mixed-precision".into(),
            msg: format!(
                "budget {limit:.0} is unreachable: with every layer at {} bits the model still costs {current:.0}",
                low.bits()
            ),
        });
    }
    Ok((p, rec))
}

/// How the search counts a model's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SizeModel {
    /// Codes at their bit width, other tensors at their dtype's width
    /// ([`stored_bytes`]).
    Nominal,
    /// The container's bytes with the best of plain / Huffman per tensor
    /// ([`encoded_bytes`]).
    Encoded,
    /// [`SizeModel::Encoded`] with the version-2 quantisation parameters
    /// ([`compact_bytes`]): constant zero points, fp16 scales, bias scales
    /// derived from `s_x·s_w[c]`.
    Compact,
}

/// The bundle threshold of `layout = "compact"` recipes: every tensor but
/// the larger weight codes goes into the deflated bundle.
pub const COMPACT_LAYOUT: shrink_graph::container::WriteOptions =
    shrink_graph::container::WriteOptions { bundle_below: 2048 };

/// [`best_encoding`] among the version-2 encodings too: a constant
/// (all-equal elements) and fp16 (f32 values exact in fp16, plain or
/// Huffman-coded).
pub fn best_encoding_compact(t: &Tensor, hint: Option<&Encoding>) -> (Encoding, usize) {
    let (mut best, mut n) = best_encoding(t, hint);
    let fp16h = Encoding::Huffman {
        inner: Box::new(Encoding::Fp16),
    };
    for e in [Encoding::Constant, Encoding::Fp16, fp16h] {
        if let Ok(enc) = encode_tensor(t, &e) {
            if enc.payload.len() < n {
                (best, n) = (e, enc.payload.len());
            }
        }
    }
    (best, n)
}

/// The int32 bias scales of `g` that are exactly `s_x · s_w[c]` of their
/// layer (input activation scale times weight scale, in f32, bit for bit):
/// the container derives them ([`Encoding::Product`]) instead of storing them.
pub fn derived_bias_scales(g: &Graph) -> BTreeMap<String, Encoding> {
    let producers = g.producers();
    let dq_scale = |value: &str| -> Option<String> {
        let n = &g.nodes[*producers.get(value)?];
        (n.op_type == "DequantizeLinear")
            .then(|| n.input(1).map(String::from))
            .flatten()
    };
    let mut out = BTreeMap::new();
    for n in &g.nodes {
        if !matches!(n.op_type.as_str(), "Conv" | "Gemm") {
            continue;
        }
        let (Some(x), Some(w), Some(b)) = (n.input(0), n.input(1), n.input(2)) else {
            continue;
        };
        let (Some(sx), Some(sw)) = (dq_scale(x), dq_scale(w)) else {
            continue;
        };
        let Some(&bp) = producers.get(b) else {
            continue;
        };
        let bdq = &g.nodes[bp];
        let Some(bs) = bdq.input(1).filter(|_| bdq.op_type == "DequantizeLinear") else {
            continue;
        };
        let get = |k: &str| g.initializers.get(k).filter(|t| t.dtype() == DType::F32);
        let (Some(tb), Some(tx), Some(tw)) = (get(bs), get(&sx), get(&sw)) else {
            continue;
        };
        let (vb, vx, vw) = (tb.to_f32_vec(), tx.to_f32_vec(), tw.to_f32_vec());
        let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
        let fits = |v: &[f32]| v.len() == 1 || v.len() == vb.len();
        if bs == sx || bs == sw || !fits(&vx) || !fits(&vw) {
            continue;
        }
        let exact = (0..vb.len()).all(|i| (at(&vx, i) * at(&vw, i)).to_bits() == vb[i].to_bits());
        if exact {
            out.insert(
                bs.to_string(),
                Encoding::Product {
                    a: sx.clone(),
                    b: sw.clone(),
                },
            );
        }
    }
    out
}

/// Tensor payload bytes of `g` with [`best_encoding_compact`] per tensor
/// and the derived bias scales at 0.
pub fn compact_bytes(g: &Graph) -> f64 {
    let derived = derived_bias_scales(g);
    g.initializers
        .iter()
        .filter(|(k, _)| !derived.contains_key(*k))
        .map(|(k, t)| best_encoding_compact(t, g.encodings.get(k)).1 as f64)
        .sum()
}

/// Sets every storage hint to the compact choice ([`compact_bytes`]);
/// returns the bytes saved against the plain hints and the Huffman count.
pub fn choose_compact_encodings(g: &mut Graph) -> (f64, usize) {
    let before = encoded_bytes(g);
    let derived = derived_bias_scales(g);
    let mut huff = 0;
    let names: Vec<String> = g.initializers.keys().cloned().collect();
    for k in names {
        let e = match derived.get(&k) {
            Some(e) => e.clone(),
            None => best_encoding_compact(&g.initializers[&k], g.encodings.get(&k)).0,
        };
        huff += e.is_huffman() as usize;
        if e == Encoding::Dense {
            g.encodings.remove(&k);
        } else {
            g.encodings.insert(k, e);
        }
    }
    (before - compact_bytes(g), huff)
}

/// The container's smallest lossless encoding of `t` among its plain form
/// (`hint`, else dense), packed codes (integer tensors) and the Huffman code
/// of either, with the payload bytes it takes. Ties keep the simpler form.
pub fn best_encoding(t: &Tensor, hint: Option<&Encoding>) -> (Encoding, usize) {
    let plain = hint.cloned().unwrap_or_default();
    let mut candidates = vec![plain.clone()];
    if t.dtype().is_int() && !matches!(plain, Encoding::Packed { .. }) {
        candidates.push(Encoding::Packed { bits: 0 });
    }
    let with_h: Vec<Encoding> = candidates
        .iter()
        .filter(|e| !e.is_huffman())
        .map(|e| Encoding::Huffman {
            inner: Box::new(e.clone()),
        })
        .collect();
    candidates.extend(with_h);
    let mut best: Option<(Encoding, usize)> = None;
    for e in candidates {
        if let Ok(enc) = encode_tensor(t, &e) {
            let n = enc.payload.len();
            if best.as_ref().is_none_or(|(_, b)| n < *b) {
                best = Some((e, n));
            }
        }
    }
    best.unwrap_or_else(|| (plain, t.nbytes()))
}

/// Tensor bytes of `g` as the `.shrink` container stores them with
/// [`best_encoding`] per initializer (payloads; the per-tensor table entry,
/// graph and provenance sections come on top and are the same for every
/// width assignment).
pub fn encoded_bytes(g: &Graph) -> f64 {
    g.initializers
        .iter()
        .map(|(k, t)| best_encoding(t, g.encodings.get(k)).1 as f64)
        .sum()
}

/// Sets every initializer's storage hint to its [`best_encoding`]; returns
/// the bytes saved against the plain hints and how many tensors went to Huffman.
pub fn choose_encodings(g: &mut Graph) -> (f64, usize) {
    let mut saved = 0.0;
    let mut huff = 0;
    let names: Vec<String> = g.initializers.keys().cloned().collect();
    for k in names {
        let t = &g.initializers[&k];
        let hint = g.encodings.get(&k).cloned();
        let plain = encode_tensor(t, &hint.clone().unwrap_or_default())
            .map(|e| e.payload.len())
            .unwrap_or(t.nbytes());
        let (e, n) = best_encoding(t, hint.as_ref());
        saved += plain as f64 - n as f64;
        if e.is_huffman() {
            huff += 1;
        }
        if e == Encoding::Dense {
            g.encodings.remove(&k);
        } else {
            g.encodings.insert(k, e);
        }
    }
    (saved, huff)
}

/// Size of the QDQ graph of `plan` under `model`.
pub fn plan_bytes(
    fp32: &Graph,
    plan: &QuantPlan,
    ranges: &ActivationRanges,
    model: SizeModel,
) -> Result<f64> {
    let (g, _) = insert_qdq(fp32, plan, ranges)?;
    Ok(match model {
        SizeModel::Nominal => stored_bytes(&g),
        SizeModel::Encoded => encoded_bytes(&g),
        SizeModel::Compact => compact_bytes(&g),
    })
}

/// One layer at one width: its damage alone and its bytes under the size model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WidthCost {
    pub layer: String,
    pub bits: u32,
    /// Damage (KL or accuracy points) with only this layer at `bits`.
    pub damage: f64,
    /// Model bytes with only this layer at `bits` (rest as the base plan).
    pub bytes: f64,
}

/// Damage and size of every weighted layer at each of `lows` (rest as `plan`).
#[allow(clippy::too_many_arguments)]
pub fn width_costs(
    fp32: &Graph,
    plan: &QuantPlan,
    ranges: &ActivationRanges,
    lows: &[WeightFormat],
    metric: Metric,
    model: SizeModel,
    data: &SensitivityData,
    mut progress: impl FnMut(&str),
) -> Result<Vec<WidthCost>> {
    let reference = outputs(fp32, data.batches, data.threads)?;
    let base_acc = match (metric, data.labels) {
        (Metric::Accuracy, Some(l)) => accuracy(&reference, l)?,
        _ => 0.0,
    };
    let mut out = Vec::new();
    for (layer, _) in weighted_layers(fp32) {
        if plan.skip.contains(&layer) {
            continue;
        }
        progress(&layer);
        for &low in lows {
            let mut p = plan.clone();
            p.layers.insert(layer.clone(), low);
            let (g, _) = insert_qdq(fp32, &p, ranges)?;
            let test = outputs(&g, data.batches, data.threads)?;
            out.push(WidthCost {
                layer: layer.clone(),
                bits: low.bits(),
                damage: damage(metric, &reference, &test, data.labels, base_acc)?,
                bytes: match model {
                    SizeModel::Nominal => stored_bytes(&g),
                    SizeModel::Encoded => encoded_bytes(&g),
                    SizeModel::Compact => compact_bytes(&g),
                },
            });
        }
    }
    Ok(out)
}

/// Multi-width greedy search under a byte budget: from `plan` (every layer
/// at its base width), repeatedly take the move "layer ℓ from its current
/// width to a lower one" with the least extra damage per byte saved (damages
/// and savings from [`width_costs`], assumed additive across layers), until
/// the real size of the assembled plan is within `budget`. Errors when even
/// every layer at its lowest width does not fit, naming that size.
pub fn search_widths(
    fp32: &Graph,
    plan: &QuantPlan,
    ranges: &ActivationRanges,
    lows: &[WeightFormat],
    costs: &[WidthCost],
    model: SizeModel,
    budget: f64,
) -> Result<(QuantPlan, PassRecord)> {
    let mut rec = PassRecord::new("mixed-precision")
        .option(
            "widths",
            format!("{:?}", lows.iter().map(|l| l.bits()).collect::<Vec<_>>()),
        )
        .option("size_model", format!("{model:?}"))
        .option("budget_bytes", format!("{budget:.0}"));
    let base_bytes = plan_bytes(fp32, plan, ranges, model)?;
    let mut p = plan.clone();
    let mut current = base_bytes;
    rec.metric("start_bytes", current);
    // (damage, bytes) of a layer at a width; the base width costs no damage.
    let at = |layer: &str, bits: u32| -> Option<(f64, f64)> {
        if bits == plan.weight_format(layer).bits() {
            return Some((0.0, base_bytes));
        }
        costs
            .iter()
            .find(|c| c.layer == layer && c.bits == bits)
            .map(|c| (c.damage.max(0.0), c.bytes))
    };
    let layers: Vec<String> = {
        let mut v: Vec<String> = costs.iter().map(|c| c.layer.clone()).collect();
        v.dedup();
        v
    };
    // Few layers: the exact optimum of the additive model (a layer's bytes
    // are its own tensors', so sizes add exactly; damages are the estimate).
    if layers.len() <= 7 {
        let options: Vec<Vec<(u32, f64, f64)>> = layers
            .iter()
            .map(|l| {
                let base = plan.weight_format(l).bits();
                std::iter::once(base)
                    .chain(lows.iter().map(|w| w.bits()).filter(|&b| b < base))
                    .filter_map(|b| at(l, b).map(|(d, by)| (b, d, by - base_bytes)))
                    .collect()
            })
            .collect();
        let mut best: Option<(f64, Vec<usize>)> = None;
        let mut pick = vec![0usize; layers.len()];
        loop {
            let bytes: f64 =
                base_bytes + pick.iter().zip(&options).map(|(&k, o)| o[k].2).sum::<f64>();
            if bytes <= budget {
                let dmg: f64 = pick.iter().zip(&options).map(|(&k, o)| o[k].1).sum();
                if best.as_ref().is_none_or(|(d, _)| dmg < *d) {
                    best = Some((dmg, pick.clone()));
                }
            }
            // Next combination (odometer).
            let mut i = 0;
            while i < pick.len() {
                pick[i] += 1;
                if pick[i] < options[i].len() {
                    break;
                }
                pick[i] = 0;
                i += 1;
            }
            if i == pick.len() {
                break;
            }
        }
        if let Some((dmg, choice)) = best {
            let mut q = plan.clone();
            for ((l, o), &k) in layers.iter().zip(&options).zip(&choice) {
                if let Some(w) = lows.iter().find(|w| w.bits() == o[k].0) {
                    q.layers.insert(l.clone(), *w);
                }
            }
            let bytes = plan_bytes(fp32, &q, ranges, model)?;
            if bytes <= budget {
                for ((l, o), &k) in layers.iter().zip(&options).zip(&choice) {
                    rec.change(format!("'{l}' → W{} (exhaustive search)", o[k].0));
                }
                rec.metric("estimated_damage", dmg);
                rec.metric("final_bytes", bytes);
                rec.metric("budget", budget);
                return Ok((q, rec));
            }
        }
    }
    let mut steps = 0;
    while current > budget {
        // The last step: when single moves reach the budget on their own
        // (by the additive estimate), the least damaging of them — not the
        // best ratio, which may overshoot with a costlier layer.
        let mut finish: Option<(f64, String, WeightFormat)> = None;
        for l in &layers {
            let cur = p.weight_format(l).bits();
            let Some((d0, b0)) = at(l, cur) else { continue };
            for &low in lows.iter().filter(|w| w.bits() < cur) {
                let Some((d1, b1)) = at(l, low.bits()) else {
                    continue;
                };
                if current - (b0 - b1) <= budget {
                    let extra = (d1 - d0).max(0.0);
                    if finish
                        .as_ref()
                        .is_none_or(|(e, bl, _)| extra < *e || (extra == *e && l < bl))
                    {
                        finish = Some((extra, l.clone(), low));
                    }
                }
            }
        }
        if let Some((extra, l, low)) = finish {
            let mut q = p.clone();
            q.layers.insert(l.clone(), low);
            let bytes = plan_bytes(fp32, &q, ranges, model)?;
            if bytes <= budget {
                let from = p.weight_format(&l).bits();
                p = q;
                current = bytes;
                steps += 1;
                rec.change(format!(
                    "'{l}' W{from} → W{} (finishing move, damage +{extra:.3e}; model now {current:.0} B)",
                    low.bits()
                ));
                break;
            }
        }
        let mut best: Option<(f64, String, WeightFormat)> = None;
        for l in &layers {
            let cur = p.weight_format(l).bits();
            let Some((d0, b0)) = at(l, cur) else { continue };
            for &low in lows.iter().filter(|w| w.bits() < cur) {
                let Some((d1, b1)) = at(l, low.bits()) else {
                    continue;
                };
                let saved = b0 - b1;
                if saved <= 0.0 {
                    continue;
                }
                let score = (d1 - d0).max(0.0) / saved;
                if best
                    .as_ref()
                    .is_none_or(|(s, bl, _)| score < *s || (score == *s && l < bl))
                {
                    best = Some((score, l.clone(), low));
                }
            }
        }
        let Some((score, l, low)) = best else { break };
        let from = p.weight_format(&l).bits();
        p.layers.insert(l.clone(), low);
        current = plan_bytes(fp32, &p, ranges, model)?;
        steps += 1;
        rec.change(format!(
            "'{l}' W{from} → W{} ({score:.3e} damage per byte; model now {current:.0} B)",
            low.bits()
        ));
    }
    rec.metric("steps", steps as f64);
    rec.metric("final_bytes", current);
    rec.metric("budget", budget);
    if current > budget {
        return Err(CompressError::Pass {
            pass: "mixed-precision".into(),
            msg: format!(
                "budget {budget:.0} B is unreachable: with every layer at its lowest width ({:?} bits) the model still takes {current:.0} B",
                lows.iter().map(|l| l.bits()).min()
            ),
        });
    }
    Ok((p, rec))
}

/// The weights of layer `node` as the QDQ graph `q` dequantises them
/// (`(code − zero)·scale` with its per-axis scales), in the stored layout.
fn dequantized_weight(q: &Graph, node: &str) -> Option<Vec<f32>> {
    let n = q.nodes.iter().find(|n| n.name == node)?;
    let dq = q.nodes.iter().find(|d| {
        d.op_type == "DequantizeLinear" && d.outputs.first().map(String::as_str) == n.input(1)
    })?;
    let codes = q.initializers.get(dq.input(0)?)?;
    let scale = q.initializers.get(dq.input(1)?)?.to_f32_vec();
    let zero = dq
        .input(2)
        .and_then(|z| q.initializers.get(z))
        .map(|z| z.to_f32_vec())
        .unwrap_or_else(|| vec![0.0; scale.len()]);
    let shape = codes.shape();
    let axis = dq.attr_int("axis", 1).ok()? as usize;
    let (dim, inner) = if scale.len() == 1 {
        (1, codes.len())
    } else {
        (shape[axis], shape[axis + 1..].iter().product())
    };
    Some(
        codes
            .to_f32_vec()
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let k = (i / inner.max(1)) % dim;
                (c - zero[k]) * scale[k]
            })
            .collect(),
    )
}

/// Empirical bias correction (Nagel et al. 2019) for the layers `plan` puts
/// below 8 bits: subtracts `(W_q − W)·E[x]` from each such layer's float bias
/// with `W_q` exactly as the QDQ graph of `plan` holds it (clipping and
/// per-layer width included) and `E[x]` measured on `batches` through the
/// fp32 model. Returns the corrected fp32 graph (quantise it with the same
/// plan) and the layers corrected. Weights are untouched, so the codes and
/// the stored size stay the same.
pub fn correct_low_bit_biases(
    fp32: &Graph,
    plan: &QuantPlan,
    ranges: &ActivationRanges,
    batches: &[Tensor],
    threads: usize,
) -> Result<(Graph, Vec<String>)> {
    let (q, _) = insert_qdq(fp32, plan, ranges)?;
    let means = crate::bias_correct::empirical_means(fp32, batches, threads)?;
    let mut out = fp32.clone();
    let mut done = Vec::new();
    for mut layer in crate::linear_layer::LinearLayer::all(fp32) {
        if plan.weight_format(&layer.name).bits() >= 8 {
            continue;
        }
        let Some(mean) = means.get(layer.input(fp32)) else {
            continue;
        };
        if mean.len() != layer.in_channels {
            continue;
        }
        let Some(wq) = dequantized_weight(&q, &layer.name) else {
            continue;
        };
        let w = layer.weight_values(&out);
        if wq.len() != w.len() {
            continue;
        }
        let eps: Vec<f32> = wq.iter().zip(&w).map(|(a, b)| a - b).collect();
        let sums = layer.channel_sums(&eps);
        let b: Vec<f32> = layer
            .bias_values(&out)
            .iter()
            .enumerate()
            .map(|(o, &bo)| {
                let shift: f64 = sums[o].iter().zip(mean).map(|(e, m)| e * m).sum();
                (bo as f64 - shift) as f32
            })
            .collect();
        layer.set_bias(&mut out, b)?;
        done.push(layer.name.clone());
    }
    Ok((out, done))
}
