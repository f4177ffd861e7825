//! BatchNormalization folding: `BN(conv(x))` becomes one conv with scaled
//! weights and a shifted bias, so inference does one op instead of two and the
//! quantiser sees the weights that actually run.
//!
//! The BN parameters are not thrown away: after folding, `β` and `|γ|` are the
//! per-channel mean and standard deviation of the conv's (pre-activation)
//! output on the training distribution, which is exactly what the data-free
//! passes need (high-bias absorption, analytic bias correction, activation
//! ranges). They are returned as [`BnStats`], keyed by the value they
//! describe, and the later passes keep them up to date as they rescale.

use crate::linear_layer::LinearLayer;
use crate::{CompressError, PassRecord, Result};
use shrink_graph::{Graph, Node};
use std::collections::BTreeMap;

/// Mean and standard deviation per channel of one value (axis 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Per-channel statistics of the values BatchNorm used to produce, keyed by
/// value name (after folding: the folded conv's output).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BnStats {
    pub values: BTreeMap<String, ChannelStats>,
}

impl BnStats {
    pub fn get(&self, name: &str) -> Option<&ChannelStats> {
        self.values.get(name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut ChannelStats> {
        self.values.get_mut(name)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

const PASS: &str = "fold-batchnorm";

/// The constant value of a name: an initializer or a `Constant` node's output.
pub(crate) fn constant_f32(g: &Graph, name: &str) -> Option<Vec<f32>> {
    if let Some(t) = g.initializers.get(name) {
        return Some(t.to_f32_vec());
    }
    g.nodes
        .iter()
        .find(|n| n.op_type == "Constant" && n.outputs.first().map(String::as_str) == Some(name))
        .and_then(|n| n.attr_tensor("value").ok().flatten())
        .map(|t| t.to_f32_vec())
}

fn bn_error(n: &Node, msg: impl Into<String>) -> CompressError {
    CompressError::Node {
        pass: PASS.into(),
        node: n.name.clone(),
        op: n.op_type.clone(),
        msg: msg.into(),
    }
}

/// Inference-mode parameters of one BN node: `(a, shift, β, γ)` with
/// `BN(x) = a·x + shift`.
type BnAffine = (Vec<f64>, Vec<f64>, Vec<f32>, Vec<f32>);

fn bn_affine(g: &Graph, n: &Node) -> Result<Option<BnAffine>> {
    if n.attr_int("training_mode", 0)
        .map_err(CompressError::Graph)?
        != 0
        || n.outputs.iter().skip(1).any(|o| !o.is_empty())
    {
        return Ok(None);
    }
    let eps = n
        .attr_float("epsilon", 1e-5)
        .map_err(CompressError::Graph)? as f64;
    let mut p = Vec::with_capacity(4);
    for i in 1..5 {
        match n.input(i).and_then(|name| constant_f32(g, name)) {
            Some(v) => p.push(v),
            None => return Ok(None),
        }
    }
    let c = p[0].len();
    if p.iter().any(|v| v.len() != c) {
        return Err(bn_error(
            n,
            "scale, B, mean and var must have one value per channel",
        ));
    }
    let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
    let a: Vec<f64> = (0..c)
        .map(|k| gamma[k] as f64 / (var[k] as f64 + eps).sqrt())
        .collect();
    let shift = (0..c)
        .map(|k| beta[k] as f64 - a[k] * mean[k] as f64)
        .collect();
    Ok(Some((a, shift, beta.clone(), gamma.clone())))
}

/// Folds every BatchNormalization whose input comes from a Conv,
/// ConvTranspose or Gemm (constant weights) read by nothing else.
///
/// A BN with any other producer (an input, an Add, a BN after a ReLU) stays
/// and is reported; its statistics are still returned.
pub fn fold_batchnorm(g: &Graph) -> Result<(Graph, PassRecord, BnStats)> {
    let mut out = g.clone();
    let mut rec = PassRecord::new(PASS);
    let mut stats = BnStats::default();
    let consumers = g.consumers();
    let producers = g.producers();
    let graph_outputs: Vec<&str> = g.output_names();
    let mut remove = vec![false; g.nodes.len()];
    let mut kept = 0usize;
    for (bi, bn) in g.nodes.iter().enumerate() {
        if bn.op_type != "BatchNormalization" || !bn.domain.is_empty() {
            continue;
        }
        let Some((a, shift, beta, gamma)) = bn_affine(g, bn)? else {
            rec.change(format!(
                "kept {}: not an inference-mode BN with constant parameters",
                bn.name
            ));
            kept += 1;
            continue;
        };
        let c = a.len();
        stats.values.insert(
            bn.outputs[0].clone(),
            ChannelStats {
                mean: beta,
                std: gamma.iter().map(|v| v.abs()).collect(),
            },
        );
        let x = bn.inputs[0].as_str();
        let layer = producers
            .get(x)
            .and_then(|&p| LinearLayer::at(&out, p).filter(|_| !remove[p]));
        let sole_reader =
            consumers.get(x).is_some_and(|v| v.len() == 1) && !graph_outputs.contains(&x);
        let Some(mut layer) = layer.filter(|l| sole_reader && l.out_channels == c) else {
            rec.change(format!(
                "kept {}: its input '{x}' is not the sole use of a Conv/ConvTranspose/Gemm output with {c} channels",
                bn.name
            ));
            kept += 1;
            continue;
        };
        // Shared weights would change another layer too.
        let shared = out.nodes.iter().enumerate().any(|(i, n)| {
            i != layer.node
                && n.inputs
                    .iter()
                    .any(|s| Some(s) == Some(&layer.weight) || layer.bias.as_ref() == Some(s))
        });
        if shared {
            rec.change(format!(
                "kept {}: the weights of {} are shared",
                bn.name, layer.name
            ));
            kept += 1;
            continue;
        }
        let mut w = layer.weight_values(&out);
        layer.for_each(|flat, o, _| w[flat] = (w[flat] as f64 * a[o]) as f32);
        let b: Vec<f32> = layer
            .bias_values(&out)
            .iter()
            .enumerate()
            .map(|(o, &bo)| (bo as f64 * a[o] + shift[o]) as f32)
            .collect();
        layer.set_weight(&mut out, w)?;
        layer.set_bias(&mut out, b)?;
        out.nodes[layer.node].outputs[0] = bn.outputs[0].clone();
        remove[bi] = true;
        rec.change(format!("folded {} into {}", bn.name, layer.name));
    }
    let mut i = 0;
    out.nodes.retain(|_| {
        i += 1;
        !remove[i - 1]
    });
    // The folded conv now writes the BN's output; its old output is gone.
    let folded = remove.iter().filter(|&&r| r).count();
    drop_unused_initializers(&mut out);
    rec.metric("folded", folded as f64);
    rec.metric("kept", kept as f64);
    Ok((out, rec, stats))
}

/// Removes initializers no node reads (the folded BNs' parameters).
pub(crate) fn drop_unused_initializers(g: &mut Graph) {
    let used: std::collections::HashSet<String> =
        g.nodes.iter().flat_map(shrink_graph::node_uses).collect();
    let outs: Vec<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    g.initializers
        .retain(|k, _| used.contains(k) || outs.contains(k));
}
