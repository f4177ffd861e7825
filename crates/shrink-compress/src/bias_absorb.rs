//! High-bias absorption (Nagel et al. 2019, §4.1.1).
//!
//! Equalisation can leave large biases: a channel whose pre-activation
//! `z ~ N(β, γ²)` sits well above zero inflates the activation range without
//! carrying information in its offset. With `c = max(0, β − 3γ)`, `ReLU(z) =
//! ReLU(z − c) + c` for (nearly) every input, and the constant `c` passes
//! through the next linear layer as `W2 · c`, so it can move into that
//! layer's bias: `b1 −= c`, `b2 += W2 · c`. The function changes only for the
//! ~0.1% of inputs below `β − 3γ`, and the activation range shrinks by `c`.

use crate::cle::find_pairs;
use crate::fold_bn::BnStats;
use crate::{PassRecord, Result};
use shrink_graph::Graph;

#[derive(Debug, Clone, PartialEq)]
pub struct AbsorbOptions {
    /// `c = max(0, β − n·γ)`; the paper uses 3.
    pub n_sigma: f32,
    /// Also absorb into a layer that zero-pads its input. The constant then
    /// does not reach border outputs in full, so this is approximate; off by
    /// default.
    pub through_padding: bool,
}

impl Default for AbsorbOptions {
    fn default() -> Self {
        AbsorbOptions {
            n_sigma: 3.0,
            through_padding: false,
        }
    }
}

/// Absorbs high biases across every Layer → ReLU → Layer pair whose first
/// output has BN statistics, updating those statistics.
pub fn absorb_high_bias(
    g: &Graph,
    stats: &mut BnStats,
    opts: &AbsorbOptions,
) -> Result<(Graph, PassRecord)> {
    let mut out = g.clone();
    let mut rec = PassRecord::new("bias-absorption")
        .option("n_sigma", opts.n_sigma)
        .option("through_padding", opts.through_padding);
    let mut absorbed_pairs = 0;
    let mut total = 0f64;
    for p in find_pairs(g, true) {
        if p.activation.is_none() {
            continue;
        }
        let Some(st) = stats.get_mut(p.first.output(g)) else {
            continue;
        };
        if p.second.pads(g) && !opts.through_padding {
            rec.change(format!(
                "skipped {} -> {}: {} pads its input",
                p.first.name, p.second.name, p.second.name
            ));
            continue;
        }
        let c: Vec<f32> = st
            .mean
            .iter()
            .zip(&st.std)
            .map(|(&m, &s)| (m - opts.n_sigma * s).max(0.0))
            .collect();
        if c.iter().all(|&v| v == 0.0) {
            continue;
        }
        let mut first = p.first.clone();
        let mut second = p.second.clone();
        let b1: Vec<f32> = first
            .bias_values(&out)
            .iter()
            .zip(&c)
            .map(|(b, c)| b - c)
            .collect();
        let sums = second.channel_sums(&second.weight_values(&out));
        let b2: Vec<f32> = second
            .bias_values(&out)
            .iter()
            .enumerate()
            .map(|(o, &b)| {
                (b as f64
                    + sums[o]
                        .iter()
                        .zip(&c)
                        .map(|(w, &ci)| w * ci as f64)
                        .sum::<f64>()) as f32
            })
            .collect();
        first.set_bias(&mut out, b1)?;
        second.set_bias(&mut out, b2)?;
        for (m, ci) in st.mean.iter_mut().zip(&c) {
            *m -= ci;
        }
        let moved: f64 = c.iter().map(|&v| v as f64).sum();
        total += moved;
        absorbed_pairs += 1;
        rec.change(format!(
            "{} -> {}: absorbed Σc = {moved:.4} over {} of {} channels",
            p.first.name,
            p.second.name,
            c.iter().filter(|&&v| v > 0.0).count(),
            c.len()
        ));
    }
    rec.metric("pairs", absorbed_pairs as f64);
    rec.metric("absorbed_total", total);
    Ok((out, rec))
}
