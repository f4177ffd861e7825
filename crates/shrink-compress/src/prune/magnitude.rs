//! Unstructured pruning by a per-weight score: magnitude |w| (Han et al.
//! 2015) or OBD saliency ½·h_kk·w² (LeCun et al. 1990), with one threshold
//! per layer or one global threshold.
//!
//! Exactly `round(s · n)` weights go (PyTorch's `l1_unstructured` rule), the
//! lowest scores first and ties broken by position, so results are
//! deterministic and comparable with PyTorch-made references. Weights that
//! are already zero score 0 and are the first to "go": re-pruning a pruned
//! model to a higher target only removes more.

use super::{check_fraction, f32_weights, prunable_weights, set_f32, tensor_error, PrunableWeight};
use crate::{PassRecord, Result};
use shrink_graph::Graph;
use shrink_tensor::Tensor;
use std::collections::BTreeMap;

/// Where the threshold is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every layer loses the same fraction (its own threshold).
    #[default]
    PerLayer,
    /// One threshold over all layers: layers with small weights lose more.
    Global,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Scope, String> {
        match s {
            "per-layer" | "layer" => Ok(Scope::PerLayer),
            "global" => Ok(Scope::Global),
            _ => Err(format!(
                "unknown scope '{s}' (expected per-layer or global)"
            )),
        }
    }
}

/// Options of [`magnitude_prune`] and [`prune_by_score`].
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Fraction of weights to zero (per layer, or overall with [`Scope::Global`]).
    pub sparsity: f64,
    pub scope: Scope,
    /// Per-tensor targets (e.g. from a sensitivity scan); a listed tensor is
    /// pruned to its own target and stays out of the global pool.
    pub targets: BTreeMap<String, f64>,
    /// Tensors left untouched.
    pub exclude: Vec<String>,
}

/// Magnitude pruning: score = |w|.
pub fn magnitude_prune(g: &Graph, opts: &PruneOptions) -> Result<(Graph, PassRecord)> {
    let mut scores = BTreeMap::new();
    for w in prunable_weights(g) {
        let v = f32_weights(g, "magnitude-prune", &w.tensor)?;
        scores.insert(w.tensor.clone(), v.iter().map(|x| x.abs()).collect());
    }
    prune_by_score(g, "magnitude-prune", &scores, opts)
}

/// OBD saliency ½·h_kk·w² of each weight given the Hessian's diagonal.
pub fn obd_saliency(w: &[f32], hessian_diag: &[f32]) -> Vec<f32> {
    w.iter()
        .zip(hessian_diag)
        .map(|(w, h)| 0.5 * h * w * w)
        .collect()
}

/// Optimal Brain Damage: prunes the weights whose removal raises the loss
/// least to second order, ½·h_kk·w², with `hessian_diag` per weight tensor
/// (from data: the empirical Fisher, mean squared per-sample gradients — see
/// [`crate::prune::sensitivity::fisher_diagonal`]). Tensors without a
/// Hessian in the map are left untouched.
pub fn obd_prune(
    g: &Graph,
    hessian_diag: &BTreeMap<String, Tensor>,
    opts: &PruneOptions,
) -> Result<(Graph, PassRecord)> {
    let pass = "obd-prune";
    let mut scores = BTreeMap::new();
    for w in prunable_weights(g) {
        let Some(h) = hessian_diag.get(&w.tensor) else {
            continue;
        };
        let v = f32_weights(g, pass, &w.tensor)?;
        let h = h
            .as_slice::<f32>()
            .map_err(|_| tensor_error(pass, &w.tensor, "Hessian diagonal must be f32"))?;
        if h.len() != v.len() {
            return Err(tensor_error(
                pass,
                &w.tensor,
                format!(
                    "Hessian diagonal has {} values for {} weights",
                    h.len(),
                    v.len()
                ),
            ));
        }
        scores.insert(w.tensor.clone(), obd_saliency(v, h));
    }
    prune_by_score(g, pass, &scores, opts)
}

/// Zeros the lowest-scoring weights of every tensor in `scores` (a score per
/// weight, same length as the tensor).
pub fn prune_by_score(
    g: &Graph,
    pass: &str,
    scores: &BTreeMap<String, Vec<f32>>,
    opts: &PruneOptions,
) -> Result<(Graph, PassRecord)> {
    check_fraction(pass, "sparsity", opts.sparsity)?;
    for (t, s) in &opts.targets {
        check_fraction(pass, &format!("target of {t}"), *s)?;
    }
    let layers: Vec<PrunableWeight> = prunable_weights(g)
        .into_iter()
        .filter(|w| scores.contains_key(&w.tensor) && !opts.exclude.contains(&w.tensor))
        .collect();
    for w in &layers {
        let n = g.initializers[&w.tensor].len();
        if scores[&w.tensor].len() != n {
            return Err(tensor_error(
                pass,
                &w.tensor,
                format!("{} scores for {n} weights", scores[&w.tensor].len()),
            ));
        }
    }
    // Which (layer, index) pairs go.
    let mut drop: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
    let mut pooled = Vec::new();
    for (li, w) in layers.iter().enumerate() {
        let own = opts.targets.get(&w.tensor).copied();
        match (opts.scope, own) {
            (Scope::Global, None) => pooled.push(li),
            (_, target) => {
                let s = &scores[&w.tensor];
                let k = count(target.unwrap_or(opts.sparsity), s.len());
                let mut order: Vec<usize> = (0..s.len()).collect();
                order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
                drop[li] = order[..k].to_vec();
            }
        }
    }
    if !pooled.is_empty() {
        let mut all: Vec<(f32, usize, usize)> = Vec::new();
        for &li in &pooled {
            let s = &scores[&layers[li].tensor];
            all.extend(s.iter().enumerate().map(|(i, &v)| (v, li, i)));
        }
        let k = count(opts.sparsity, all.len());
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        for &(_, li, i) in &all[..k] {
            drop[li].push(i);
        }
    }

    let mut out = g.clone();
    let mut rec = PassRecord::new(pass)
        .option("sparsity", opts.sparsity)
        .option(
            "scope",
            match opts.scope {
                Scope::PerLayer => "per-layer",
                Scope::Global => "global",
            },
        );
    let (mut zeros, mut total) = (0usize, 0usize);
    for (li, w) in layers.iter().enumerate() {
        let mut v = f32_weights(g, pass, &w.tensor)?.to_vec();
        for &i in &drop[li] {
            v[i] = 0.0;
        }
        let nz = v.iter().filter(|x| **x != 0.0).count();
        zeros += v.len() - nz;
        total += v.len();
        let kept = nz as f64 / v.len().max(1) as f64;
        rec.change(format!(
            "{} ({} '{}'): kept {:.2}% ({nz}/{})",
            w.tensor,
            w.op,
            w.node,
            100.0 * kept,
            v.len()
        ));
        rec.metric(&format!("kept.{}", w.tensor), kept);
        set_f32(&mut out, &w.tensor, v)?;
    }
    rec.metric(
        "sparsity",
        if total == 0 {
            0.0
        } else {
            zeros as f64 / total as f64
        },
    );
    Ok((out, rec))
}

/// How many of `n` weights a fraction `s` removes (round half away from zero, as PyTorch).
fn count(s: f64, n: usize) -> usize {
    ((s * n as f64).round() as usize).min(n)
}
