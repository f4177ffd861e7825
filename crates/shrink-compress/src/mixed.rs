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

use crate::quantize::{insert_qdq, stored_bytes, weighted_layers, QuantPlan, WeightFormat};
use crate::ranges::ActivationRanges;
use crate::{CompressError, PassRecord, Result};
use serde::{Deserialize, Serialize};
use shrink_energy::{estimate, layer_work, Assignment, MemoryConfig, Precision};
use shrink_graph::Graph;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;

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
