//! Cross-layer equalisation (Nagel et al., "Data-Free Quantization through
//! Weight Equalization and Bias Correction", ICCV 2019, §4.1).
//!
//! For two layers `y = W2 · f(W1 · x + b1) + b2` with `f` positively
//! homogeneous (ReLU, identity), `f(S⁻¹ z) = S⁻¹ f(z)` for a positive diagonal
//! `S`, so scaling output channel `i` of layer 1 by `1/s_i` and input channel
//! `i` of layer 2 by `s_i` leaves the function unchanged. Choosing
//! `s_i = √(r1_i · r2_i) / r2_i` (r1: range of output channel `i` of W1, r2:
//! range of input channel `i` of W2) makes both ranges `√(r1_i · r2_i)`, which
//! maximises the total per-tensor quantisation precision of the pair. Channels
//! a per-tensor quantiser used to flush to zero get their share of the grid.
//!
//! Chains (pointwise → depthwise → pointwise in MobileNet blocks) share
//! layers between pairs, so the pairs are swept repeatedly until no scale
//! moves by more than the tolerance.

use crate::fold_bn::BnStats;
use crate::linear_layer::{LayerKind, LinearLayer};
use crate::{PassRecord, Result};
use shrink_graph::Graph;

/// What equalisation may pair and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct CleOptions {
    /// Sweeps over all pairs at most.
    pub max_iterations: usize,
    /// Converged when every `|s_i − 1|` of a sweep is below this.
    pub tolerance: f64,
    /// Pair Gemm layers too (not only Conv → Conv). Off by default: on the
    /// LeNet MLP heads equalisation made per-tensor W4 worse (lenet300100:
    /// 88.5% → 86.8% on 2000 test images), and the reference CLE
    /// (cle.json) pairs convolutions only.
    pub include_gemm: bool,
}

impl Default for CleOptions {
    fn default() -> Self {
        CleOptions {
            max_iterations: 200,
            tolerance: 1e-6,
            include_gemm: false,
        }
    }
}

/// Two layers that can be equalised, `first`'s output reaching `second`
/// through at most one ReLU and nothing else.
#[derive(Debug, Clone)]
pub struct LayerPair {
    pub first: LinearLayer,
    pub second: LinearLayer,
    /// The ReLU between them, if any.
    pub activation: Option<String>,
}

/// Finds the equalisable pairs of `g`: `first`'s output (and the ReLU's, if
/// any) has exactly one reader, is no graph output, and `second` reads it as
/// its data input. Weights read by more than one node are left alone.
pub fn find_pairs(g: &Graph, include_gemm: bool) -> Vec<LayerPair> {
    let consumers = g.consumers();
    let outputs = g.output_names();
    let sole = |name: &str| -> Option<usize> {
        if outputs.contains(&name) {
            return None;
        }
        match consumers.get(name).map(Vec::as_slice) {
            Some([one]) => Some(*one),
            _ => None,
        }
    };
    let uses = |w: &str| consumers.get(w).map_or(0, Vec::len);
    let usable = |l: &LinearLayer| {
        let kind_ok = match l.kind {
            LayerKind::Conv { .. } => true,
            LayerKind::Gemm { .. } => include_gemm,
            LayerKind::ConvTranspose { .. } => false,
        };
        kind_ok && uses(&l.weight) == 1 && l.bias.as_ref().is_none_or(|b| uses(b) == 1)
    };
    let mut pairs = Vec::new();
    for first in LinearLayer::all(g).into_iter().filter(usable) {
        let y = first.output(g);
        let Some(mut next) = sole(y) else { continue };
        let mut activation = None;
        let mut x = y.to_string();
        let n = &g.nodes[next];
        if n.op_type == "Relu" && n.domain.is_empty() {
            activation = Some(n.name.clone());
            x = n.outputs[0].clone();
            match sole(&x) {
                Some(k) => next = k,
                None => continue,
            }
        }
        let Some(second) = LinearLayer::at(g, next).filter(usable) else {
            continue;
        };
        if second.input(g) != x || second.in_channels != first.out_channels {
            continue;
        }
        pairs.push(LayerPair {
            first,
            second,
            activation,
        });
    }
    pairs
}

/// Mean over channels of `r_i / max_j r_j`: 1 when every channel uses the
/// whole per-tensor grid.
fn range_ratio(r: &[f32]) -> f64 {
    let m = r.iter().copied().fold(0f32, f32::max) as f64;
    if m == 0.0 || r.is_empty() {
        return 1.0;
    }
    r.iter().map(|&v| v as f64 / m).sum::<f64>() / r.len() as f64
}

/// Per-tensor range ratio of every layer that is part of a pair, averaged.
fn mean_ratio(g: &Graph, pairs: &[LayerPair]) -> f64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut sum = 0.0;
    for p in pairs {
        for l in [&p.first, &p.second] {
            if seen.insert(l.node) {
                let w = l.weight_values(g);
                sum += range_ratio(&l.out_ranges(&w));
            }
        }
    }
    if seen.is_empty() {
        1.0
    } else {
        sum / seen.len() as f64
    }
}

/// Equalises every pair [`find_pairs`] finds, sweeping until convergence.
///
/// `stats` (BN statistics of the first layers' outputs, if known) are
/// rescaled with the channels so later passes keep reading true statistics.
pub fn equalize_cross_layer(
    g: &Graph,
    opts: &CleOptions,
    mut stats: Option<&mut BnStats>,
) -> Result<(Graph, PassRecord)> {
    let mut out = g.clone();
    let mut rec = PassRecord::new("cle")
        .option("max_iterations", opts.max_iterations)
        .option("tolerance", opts.tolerance)
        .option("include_gemm", opts.include_gemm);
    let pairs = find_pairs(g, opts.include_gemm);
    rec.metric("pairs", pairs.len() as f64);
    rec.metric(
        "conv_pairs",
        pairs
            .iter()
            .filter(|p| {
                matches!(p.first.kind, LayerKind::Conv { .. })
                    && matches!(p.second.kind, LayerKind::Conv { .. })
            })
            .count() as f64,
    );
    rec.metric("range_ratio_before", mean_ratio(&out, &pairs));
    let mut iterations = 0;
    let mut last_change = 0.0;
    while iterations < opts.max_iterations {
        iterations += 1;
        let mut worst = 0f64;
        for p in &pairs {
            let mut w1 = p.first.weight_values(&out);
            let mut w2 = p.second.weight_values(&out);
            let r1 = p.first.out_ranges(&w1);
            let r2 = p.second.in_ranges(&w2);
            let s: Vec<f64> = r1
                .iter()
                .zip(&r2)
                .map(|(&a, &b)| {
                    let (a, b) = (a as f64, b as f64);
                    if a > 0.0 && b > 0.0 {
                        (a * b).sqrt() / b
                    } else {
                        1.0
                    }
                })
                .collect();
            worst = s.iter().fold(worst, |m, &v| m.max((v - 1.0).abs()));
            p.first
                .for_each(|f, o, _| w1[f] = (w1[f] as f64 / s[o]) as f32);
            p.second
                .for_each(|f, _, i| w2[f] = (w2[f] as f64 * s[i]) as f32);
            let b1: Vec<f32> = p
                .first
                .bias_values(&out)
                .iter()
                .zip(&s)
                .map(|(&b, &si)| (b as f64 / si) as f32)
                .collect();
            p.first.set_weight(&mut out, w1)?;
            p.second.set_weight(&mut out, w2)?;
            if p.first.bias.is_some() {
                let mut l = p.first.clone();
                l.set_bias(&mut out, b1)?;
            }
            if let Some(st) = stats
                .as_deref_mut()
                .and_then(|st| st.get_mut(p.first.output(g)))
            {
                for (o, &si) in s.iter().enumerate() {
                    st.mean[o] = (st.mean[o] as f64 / si) as f32;
                    st.std[o] = (st.std[o] as f64 / si) as f32;
                }
            }
        }
        last_change = worst;
        if worst < opts.tolerance {
            break;
        }
    }
    for p in &pairs {
        let w1 = p.first.weight_values(&out);
        rec.change(format!(
            "{} -> {}{}: {} channels, range ratio {:.3} -> {:.3}",
            p.first.name,
            p.activation.as_deref().unwrap_or("(identity)"),
            format_args!(" -> {}", p.second.name),
            p.first.out_channels,
            range_ratio(&p.first.out_ranges(&p.first.weight_values(g))),
            range_ratio(&p.first.out_ranges(&w1)),
        ));
    }
    rec.metric("iterations", iterations as f64);
    rec.metric("last_max_scale_change", last_change);
    rec.metric(
        "converged",
        f64::from(u8::from(last_change < opts.tolerance)),
    );
    rec.metric("range_ratio_after", mean_ratio(&out, &pairs));
    Ok((out, rec))
}
