//! Measuring what pruning costs: accuracy and output drift (KL divergence
//! from the unpruned model's predictions) on real data, and the per-layer
//! sensitivity scan that turns those measurements into per-layer targets.
//!
//! Layers differ wildly in how much they tolerate (Han et al. 2015, Fig. 6:
//! the first conv and the last fc are the fragile ones), so one global
//! sparsity wastes either accuracy or compression. The scan prunes one layer
//! at a time at several sparsities, leaving the others intact, and a layer's
//! target is the highest sparsity whose accuracy loss stays within budget.

use super::magnitude::{magnitude_prune, PruneOptions};
use super::{pass_error, prunable_weights};
use crate::Result;
use shrink_data::Dataset;
use shrink_graph::Graph;
use shrink_runtime::{Session, SessionOptions};
use std::collections::BTreeMap;

/// Predictions of a model on a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    pub samples: usize,
    pub classes: usize,
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
    /// Logits `[samples, classes]`, row-major.
    pub logits: Vec<f32>,
}

/// Runs `g` over `data` in batches and scores top-1 accuracy (ties go to the
/// lower class, as numpy's argmax).
pub fn evaluate(g: &Graph, data: &Dataset, batch: usize, threads: usize) -> Result<Eval> {
    let session = Session::new(
        g.clone(),
        SessionOptions {
            threads,
            ..Default::default()
        },
    )?;
    let mut logits = Vec::new();
    let mut correct = 0usize;
    let mut classes = 0usize;
    for b in data.batches(batch) {
        let (x, y) = b?;
        let out = session.run(vec![x])?;
        let first = out
            .into_iter()
            .next()
            .ok_or_else(|| pass_error("evaluate", "model has no output"))?;
        let v = first.to_f32_vec();
        if y.is_empty() || v.len() % y.len() != 0 {
            return Err(pass_error(
                "evaluate",
                format!("{} outputs for {} samples", v.len(), y.len()),
            ));
        }
        classes = v.len() / y.len();
        for (i, &label) in y.iter().enumerate() {
            let row = &v[i * classes..(i + 1) * classes];
            if argmax(row) as i64 == label {
                correct += 1;
            }
        }
        logits.extend(v);
    }
    let samples = data.len();
    Ok(Eval {
        samples,
        classes,
        accuracy: 100.0 * correct as f64 / samples.max(1) as f64,
        logits,
    })
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Mean over samples of KL(softmax(reference) ‖ softmax(other)), in nats.
pub fn kl_divergence(reference: &[f32], other: &[f32], classes: usize) -> f64 {
    if classes == 0 || reference.len() != other.len() || reference.is_empty() {
        return 0.0;
    }
    let log_softmax = |r: &[f32]| -> Vec<f64> {
        let m = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = m + r.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        r.iter().map(|&x| x as f64 - lse).collect()
    };
    let n = reference.len() / classes;
    let mut total = 0.0;
    for i in 0..n {
        let p = log_softmax(&reference[i * classes..(i + 1) * classes]);
        let q = log_softmax(&other[i * classes..(i + 1) * classes]);
        total += p
            .iter()
            .zip(&q)
            .map(|(lp, lq)| lp.exp() * (lp - lq))
            .sum::<f64>();
    }
    total / n as f64
}

/// One measurement of the scan.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub sparsity: f64,
    pub accuracy: f64,
    pub kl: f64,
}

/// How one layer responds to pruning alone.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSensitivity {
    pub tensor: String,
    pub points: Vec<Point>,
}

/// Prunes each prunable weight alone (magnitude, per layer) at each of
/// `sparsities` and measures accuracy and KL against the unpruned model.
/// Returns the baseline accuracy and one entry per layer.
pub fn sensitivity_scan(
    g: &Graph,
    data: &Dataset,
    sparsities: &[f64],
    batch: usize,
    threads: usize,
) -> Result<(f64, Vec<LayerSensitivity>)> {
    let base = evaluate(g, data, batch, threads)?;
    let mut out = Vec::new();
    for w in prunable_weights(g) {
        let mut points = Vec::new();
        for &s in sparsities {
            let others: Vec<String> = prunable_weights(g)
                .into_iter()
                .map(|o| o.tensor)
                .filter(|t| t != &w.tensor)
                .collect();
            let opts = PruneOptions {
                sparsity: s,
                exclude: others,
                ..PruneOptions::default()
            };
            let (pg, _) = magnitude_prune(g, &opts)?;
            let e = evaluate(&pg, data, batch, threads)?;
            points.push(Point {
                sparsity: s,
                accuracy: e.accuracy,
                kl: kl_divergence(&base.logits, &e.logits, base.classes),
            });
        }
        out.push(LayerSensitivity {
            tensor: w.tensor,
            points,
        });
    }
    Ok((base.accuracy, out))
}

/// Per-layer targets from a scan: for each layer, the highest scanned
/// sparsity whose accuracy stays within `max_drop` points of `base` (0 if
/// none does).
pub fn targets_from_scan(
    base: f64,
    scan: &[LayerSensitivity],
    max_drop: f64,
) -> BTreeMap<String, f64> {
    scan.iter()
        .map(|l| {
            let best = l
                .points
                .iter()
                .filter(|p| base - p.accuracy <= max_drop)
                .map(|p| p.sparsity)
                .fold(0.0f64, f64::max);
            (l.tensor.clone(), best)
        })
        .collect()
}
