//! Bias correction (Nagel et al. 2019, §4.2).
//!
//! Quantising weights `W → W_q = W + ε` shifts every output by `ε · x`; its
//! expectation `ε · E[x]` is a systematic bias that rounding does not average
//! away (per-tensor 4-bit grids make it large). Subtracting `ε · E[x]` from
//! the layer's bias removes it. `E[x]` per input channel comes either from
//! BatchNorm statistics with no data at all (analytic: the previous layer's
//! pre-activation is `N(β, γ²)`, the mean after a ReLU/Clip is the
//! clipped-normal mean) or from calibration data run through the fp32 model
//! (empirical).
//!
//! The correction is only right for the `W_q` the quantiser will produce, so
//! the weight format here must be the one the quantise pass uses.

use crate::fold_bn::BnStats;
use crate::linear_layer::LinearLayer;
use crate::relu6::clip_bounds;
use crate::{CompressError, PassRecord, Result};
use shrink_formats::intq::{Granularity, QuantConfig, ScaleSource, Scheme};
use shrink_formats::Rounding;
use shrink_graph::{Graph, ValueInfo};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use std::collections::HashMap;

/// How weights are quantised, independent of the layer kind (the channel
/// axis follows from the layer: 0 for Conv and Gemm `transB=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightGranularity {
    PerTensor,
    PerChannel,
    /// Groups of `n` consecutive input channels per output channel; layers
    /// whose input-channel axis `n` does not divide fall back to per channel.
    PerGroup(usize),
}

/// Weight format of the quantise pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightQuant {
    pub bits: u32,
    pub scheme: Scheme,
    pub granularity: WeightGranularity,
}

impl WeightQuant {
    pub fn new(bits: u32, granularity: WeightGranularity) -> WeightQuant {
        WeightQuant {
            bits,
            scheme: Scheme::SymmetricNarrow,
            granularity,
        }
    }

    /// The intQ granularity for this layer's weight.
    pub fn granularity_for(&self, layer: &LinearLayer) -> Granularity {
        match self.granularity {
            WeightGranularity::PerTensor => Granularity::PerTensor,
            WeightGranularity::PerChannel => Granularity::PerChannel {
                axis: layer.out_axis(),
            },
            WeightGranularity::PerGroup(n) => {
                let axis = layer.in_axis();
                if n > 0 && layer.weight_shape[axis].is_multiple_of(n) {
                    Granularity::PerGroup { axis, group: n }
                } else {
                    Granularity::PerChannel {
                        axis: layer.out_axis(),
                    }
                }
            }
        }
    }

    pub fn config_for(&self, layer: &LinearLayer) -> QuantConfig {
        QuantConfig {
            bits: self.bits,
            scheme: self.scheme,
            granularity: self.granularity_for(layer),
            rounding: Rounding::NearestEven,
            source: ScaleSource::Data,
        }
    }

    /// `W_q` as floats (dequantised codes).
    pub fn fake_quantize(&self, layer: &LinearLayer, w: &[f32]) -> Result<Vec<f32>> {
        let cfg = self.config_for(layer);
        let params = cfg.params_for(w, &layer.weight_shape)?;
        let codes = params.quantize(w, &layer.weight_shape, Rounding::NearestEven)?;
        Ok(params.dequantize(&codes, &layer.weight_shape)?)
    }
}

/// Standard normal pdf and cdf.
fn phi(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// `E[clamp(z, lo, hi)]` for `z ~ N(μ, σ²)` (the clipped-normal mean; `lo`
/// or `hi` may be infinite).
pub fn clipped_normal_mean(mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    if sigma <= 0.0 {
        return mu.clamp(lo, hi);
    }
    let a = (lo - mu) / sigma;
    let b = (hi - mu) / sigma;
    let (ca, cb) = (cdf(a), cdf(b));
    let low = if lo.is_finite() { lo * ca } else { 0.0 };
    let high = if hi.is_finite() { hi * (1.0 - cb) } else { 0.0 };
    low + mu * (cb - ca) + sigma * (phi(a) - phi(b)) + high
}

/// What is known about a value's per-channel distribution.
#[derive(Debug, Clone)]
enum Moments {
    /// `N(mean, std²)` per channel (a BN output).
    Normal(Vec<f64>, Vec<f64>),
    /// Only the per-channel mean.
    Mean(Vec<f64>),
}

impl Moments {
    fn mean(&self) -> &[f64] {
        match self {
            Moments::Normal(m, _) | Moments::Mean(m) => m,
        }
    }
}

/// Per-channel input means of every value that BN statistics determine,
/// without data: BN outputs are `N(β, γ²)`; ReLU/Clip of those give the
/// clipped-normal mean; Add sums means; global average pooling, a Flatten
/// after it, Identity and Dropout keep them. Anything else is unknown.
pub fn analytic_means(g: &Graph, stats: &BnStats) -> HashMap<String, Vec<f64>> {
    let mut known: HashMap<String, Moments> = HashMap::new();
    for (name, s) in &stats.values {
        known.insert(
            name.clone(),
            Moments::Normal(
                s.mean.iter().map(|&v| v as f64).collect(),
                s.std.iter().map(|&v| v as f64).collect(),
            ),
        );
    }
    let producers = g.producers();
    for n in &g.nodes {
        if !n.domain.is_empty() || n.outputs.is_empty() {
            continue;
        }
        let input = |i: usize| n.input(i).and_then(|x| known.get(x));
        let clip = match n.op_type.as_str() {
            "Relu" => Some((0.0, f64::INFINITY)),
            "Clip" => clip_bounds(g, n).map(|(a, b)| (a as f64, b as f64)),
            _ => None,
        };
        let result = match (n.op_type.as_str(), clip) {
            (_, Some((lo, hi))) => match input(0) {
                Some(Moments::Normal(m, s)) => Some(Moments::Mean(
                    m.iter()
                        .zip(s)
                        .map(|(&m, &s)| clipped_normal_mean(m, s, lo, hi))
                        .collect(),
                )),
                _ => None,
            },
            ("Add", _) => match (input(0), input(1)) {
                (Some(a), Some(b)) if a.mean().len() == b.mean().len() => Some(Moments::Mean(
                    a.mean().iter().zip(b.mean()).map(|(x, y)| x + y).collect(),
                )),
                _ => None,
            },
            ("GlobalAveragePool" | "Identity" | "Dropout", _) => {
                input(0).map(|m| Moments::Mean(m.mean().to_vec()))
            }
            ("Flatten", _) => {
                let after_gap = n
                    .input(0)
                    .and_then(|x| producers.get(x))
                    .is_some_and(|&p| g.nodes[p].op_type == "GlobalAveragePool");
                if after_gap {
                    input(0).map(|m| Moments::Mean(m.mean().to_vec()))
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(m) = result {
            known.insert(n.outputs[0].clone(), m);
        }
    }
    known
        .into_iter()
        .map(|(k, m)| (k, m.mean().to_vec()))
        .collect()
}

/// Per-channel (axis 1) means of every layer input over the given batches,
/// measured by running the fp32 graph.
pub fn empirical_means(
    g: &Graph,
    batches: &[Tensor],
    threads: usize,
) -> Result<HashMap<String, Vec<f64>>> {
    let mut probe = g.clone();
    let inputs: Vec<String> = {
        let mut v: Vec<String> = LinearLayer::all(g)
            .iter()
            .map(|l| l.input(g).to_string())
            .filter(|x| !g.initializers.contains_key(x))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let first_out = probe.outputs.len();
    for x in &inputs {
        if !probe.outputs.iter().any(|o| &o.name == x) {
            probe.outputs.push(ValueInfo::unknown(x.clone()));
        }
    }
    let index: Vec<usize> = inputs
        .iter()
        .map(|x| {
            probe
                .outputs
                .iter()
                .position(|o| &o.name == x)
                .unwrap_or(first_out)
        })
        .collect();
    let session = Session::new(
        probe,
        SessionOptions {
            threads,
            ..Default::default()
        },
    )?;
    let mut sums: Vec<Vec<f64>> = vec![Vec::new(); inputs.len()];
    let mut counts = vec![0f64; inputs.len()];
    for b in batches {
        let outs = session.run(vec![b.clone()])?;
        for (k, &oi) in index.iter().enumerate() {
            let t = &outs[oi];
            let s = t.shape();
            if s.len() < 2 {
                return Err(CompressError::Tensor {
                    pass: "bias-correction".into(),
                    tensor: inputs[k].clone(),
                    msg: format!("layer input of shape {s:?} has no channel axis"),
                });
            }
            let (n, c) = (s[0], s[1]);
            let plane: usize = s[2..].iter().product();
            if sums[k].is_empty() {
                sums[k] = vec![0.0; c];
            }
            let v = t.to_f32_vec();
            if sums[k].len() != c {
                return Err(CompressError::Tensor {
                    pass: "bias-correction".into(),
                    tensor: inputs[k].clone(),
                    msg: format!("{c} channels in one batch, {} in another", sums[k].len()),
                });
            }
            for (i, chunk) in v.chunks(plane.max(1)).enumerate().take(n * c) {
                sums[k][i % c] += chunk.iter().map(|&x| x as f64).sum::<f64>();
            }
            counts[k] += (n * plane) as f64;
        }
    }
    Ok(inputs
        .into_iter()
        .zip(sums)
        .zip(counts)
        .filter(|((_, s), _)| !s.is_empty())
        .map(|((x, s), c)| (x, s.into_iter().map(|v| v / c).collect()))
        .collect())
}

/// Subtracts `(W_q − W) · E[x]` from the bias of every layer whose input
/// mean is in `means`; `source` names where the means came from.
pub fn correct_bias(
    g: &Graph,
    means: &HashMap<String, Vec<f64>>,
    wq: &WeightQuant,
    source: &str,
) -> Result<(Graph, PassRecord)> {
    let mut out = g.clone();
    let mut rec = PassRecord::new("bias-correction")
        .option("source", source)
        .option("bits", wq.bits)
        .option("granularity", format!("{:?}", wq.granularity));
    let mut corrected = 0;
    let mut skipped = 0;
    for mut layer in LinearLayer::all(g) {
        let Some(mean) = means.get(layer.input(g)) else {
            skipped += 1;
            rec.change(format!("{}: input mean unknown, not corrected", layer.name));
            continue;
        };
        if mean.len() != layer.in_channels {
            skipped += 1;
            rec.change(format!(
                "{}: input mean has {} channels, layer reads {}; not corrected",
                layer.name,
                mean.len(),
                layer.in_channels
            ));
            continue;
        }
        let w = layer.weight_values(&out);
        let q = wq.fake_quantize(&layer, &w)?;
        let eps: Vec<f32> = q.iter().zip(&w).map(|(a, b)| a - b).collect();
        let sums = layer.channel_sums(&eps);
        let mut largest = 0f64;
        let b: Vec<f32> = layer
            .bias_values(&out)
            .iter()
            .enumerate()
            .map(|(o, &bo)| {
                let shift: f64 = sums[o].iter().zip(mean).map(|(e, m)| e * m).sum();
                largest = largest.max(shift.abs());
                (bo as f64 - shift) as f32
            })
            .collect();
        layer.set_bias(&mut out, b)?;
        corrected += 1;
        rec.change(format!("{}: largest |ε·E[x]| = {largest:.3e}", layer.name));
    }
    rec.metric("corrected", corrected as f64);
    rec.metric("skipped", skipped as f64);
    Ok((out, rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Midpoint-rule integral of clamp(z) against the normal density.
    fn numeric(mu: f64, s: f64, lo: f64, hi: f64) -> f64 {
        let n = 200_000;
        let (a, b) = (mu - 12.0 * s, mu + 12.0 * s);
        let h = (b - a) / n as f64;
        (0..n)
            .map(|i| {
                let z = a + (i as f64 + 0.5) * h;
                z.clamp(lo, hi) * phi((z - mu) / s) / s * h
            })
            .sum()
    }

    #[test]
    fn clipped_normal_mean_matches_numeric_integration() {
        for &(mu, s, lo, hi) in &[
            (0.0, 1.0, 0.0, f64::INFINITY),
            (-1.3, 0.7, 0.0, f64::INFINITY),
            (2.5, 1.9, 0.0, 6.0),
            (5.0, 3.0, 0.0, 6.0),
            (-0.2, 0.1, -1.0, 1.0),
        ] {
            let want = numeric(mu, s, lo, hi);
            let got = clipped_normal_mean(mu, s, lo, hi);
            assert!(
                (got - want).abs() < 1e-6,
                "{mu} {s} {lo} {hi}: {got} vs {want}"
            );
        }
        // ReLU of N(0,1): 1/√(2π).
        let r = clipped_normal_mean(0.0, 1.0, 0.0, f64::INFINITY);
        assert!((r - 0.398_942_280_4).abs() < 1e-9);
        assert_eq!(clipped_normal_mean(3.0, 0.0, 0.0, 2.0), 2.0);
    }
}
