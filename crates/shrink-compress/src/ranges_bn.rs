//! Data-free activation ranges.
//!
//! With no data at all, a range for every activation still follows from two
//! facts about the model:
//! - BatchNorm statistics: a BN-normalised pre-activation is `≈ N(β, γ²)` per
//!   channel, so its range is `β ± n·γ` (DFQ §5; `n` trades clipping of rare
//!   outliers against resolution);
//! - the input domain (Fashion-MNIST inputs are `pixel / 255 ∈ [0, 1]`) and
//!   interval arithmetic: `W·x + b` for `x ∈ [lo, hi]` lies within
//!   `b + Σ min/max(w·lo, w·hi)`, a guaranteed (if loose) bound.
//!
//! Both are propagated through the graph (ReLU/Clip clamp, pooling keeps,
//! Add sums, Flatten merges channels); where both exist the BN range is
//! intersected with the guaranteed bound. Models without BN (LeNet) get
//! guaranteed bounds only. The result is the same [`ActivationRanges`] the
//! calibration observers produce from data.

use crate::fold_bn::BnStats;
use crate::linear_layer::LinearLayer;
use crate::ranges::{ActivationRanges, TensorRange};
use crate::relu6::clip_bounds;
use crate::{PassRecord, Result};
use shrink_graph::Graph;
use std::collections::{BTreeSet, HashMap};

/// Data-free ranges and how far each can be trusted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BnRanges {
    pub ranges: ActivationRanges,
    /// Values whose range rests on interval arithmetic through at least one
    /// layer without BN statistics: guaranteed, but possibly many times wider
    /// than what real inputs reach (the bound assumes every weight meets its
    /// worst-case input at once).
    pub bound_only: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BnRangeOptions {
    /// Range of a BN-normalised channel: `β ± n_sigma·γ`.
    pub n_sigma: f32,
    /// Range of every graph input (the model's input domain, e.g. `[0, 1]`
    /// for images scaled by 1/255); `None` leaves inputs, and what only they
    /// bound, without a range.
    pub input_range: Option<(f32, f32)>,
}

impl Default for BnRangeOptions {
    fn default() -> Self {
        BnRangeOptions {
            n_sigma: 6.0,
            input_range: Some((0.0, 1.0)),
        }
    }
}

/// Per-channel interval (one entry: the whole tensor).
#[derive(Debug, Clone)]
struct Interval {
    lo: Vec<f32>,
    hi: Vec<f32>,
    /// Derived from a layer bound without BN statistics somewhere upstream.
    loose: bool,
}

impl Interval {
    fn tensor(lo: f32, hi: f32) -> Interval {
        Interval {
            lo: vec![lo],
            hi: vec![hi],
            loose: false,
        }
    }

    fn channel(&self, i: usize) -> (f32, f32) {
        if self.lo.len() == 1 {
            (self.lo[0], self.hi[0])
        } else {
            (self.lo[i], self.hi[i])
        }
    }

    fn collapse(&self) -> Interval {
        Interval {
            loose: self.loose,
            ..Interval::tensor(
                self.lo.iter().copied().fold(f32::INFINITY, f32::min),
                self.hi.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            )
        }
    }

    fn map(&self, f: impl Fn(f32) -> f32) -> Interval {
        Interval {
            lo: self.lo.iter().map(|&v| f(v)).collect(),
            hi: self.hi.iter().map(|&v| f(v)).collect(),
            loose: self.loose,
        }
    }
}

/// `b + Σ min/max(w·lo, w·hi)` per output channel.
fn layer_bound(g: &Graph, l: &LinearLayer, x: &Interval) -> Option<Interval> {
    if x.lo.len() != 1 && x.lo.len() != l.in_channels {
        return None;
    }
    let w = l.weight_values(g);
    let b = l.bias_values(g);
    let pads = l.pads(g);
    let mut lo: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let mut hi = lo.clone();
    l.for_each(|f, o, i| {
        let (mut a, mut c) = x.channel(i);
        if pads {
            // Zero padding feeds 0 to border taps.
            a = a.min(0.0);
            c = c.max(0.0);
        }
        let (p, q) = (w[f] as f64 * a as f64, w[f] as f64 * c as f64);
        lo[o] += p.min(q);
        hi[o] += p.max(q);
    });
    Some(Interval {
        lo: lo.into_iter().map(|v| v as f32).collect(),
        hi: hi.into_iter().map(|v| v as f32).collect(),
        loose: true,
    })
}

/// Activation ranges of every value reachable from the graph inputs and BN
/// statistics.
pub fn ranges_from_bn(
    g: &Graph,
    stats: &BnStats,
    opts: &BnRangeOptions,
) -> Result<(BnRanges, PassRecord)> {
    let mut rec = PassRecord::new("ranges-from-bn")
        .option("n_sigma", opts.n_sigma)
        .option("input_range", format!("{:?}", opts.input_range));
    let mut known: HashMap<String, Interval> = HashMap::new();
    if let Some((lo, hi)) = opts.input_range {
        for i in &g.inputs {
            if !g.initializers.contains_key(&i.name) {
                known.insert(i.name.clone(), Interval::tensor(lo, hi));
            }
        }
    }
    let producers = g.producers();
    let (mut from_bn, mut from_bounds) = (0, 0);
    for (idx, n) in g.nodes.iter().enumerate() {
        if !n.domain.is_empty() || n.outputs.is_empty() {
            continue;
        }
        let input = |i: usize| n.input(i).and_then(|x| known.get(x)).cloned();
        let clip = match n.op_type.as_str() {
            "Relu" => Some((0.0, f32::INFINITY)),
            "Clip" => clip_bounds(g, n),
            _ => None,
        };
        let mut result = if let Some((a, b)) = clip {
            input(0).map(|x| x.map(|v| v.clamp(a, b)))
        } else if let Some(l) = LinearLayer::at(g, idx) {
            input(0).and_then(|x| layer_bound(g, &l, &x))
        } else {
            match n.op_type.as_str() {
                "MaxPool" | "GlobalMaxPool" | "Identity" | "Dropout" => input(0),
                "AveragePool" | "GlobalAveragePool" => input(0),
                "Add" => match (input(0), input(1)) {
                    (Some(a), Some(b)) => {
                        let c = a.lo.len().max(b.lo.len());
                        if a.lo.len() != b.lo.len() && a.lo.len() != 1 && b.lo.len() != 1 {
                            None
                        } else {
                            let (lo, hi) = (0..c)
                                .map(|i| {
                                    let (x, y) = (a.channel(i), b.channel(i));
                                    (x.0 + y.0, x.1 + y.1)
                                })
                                .unzip();
                            Some(Interval {
                                lo,
                                hi,
                                loose: a.loose || b.loose,
                            })
                        }
                    }
                    _ => None,
                },
                "Flatten" | "Reshape" | "Squeeze" => {
                    let after_global_pool =
                        n.input(0).and_then(|x| producers.get(x)).is_some_and(|&p| {
                            matches!(
                                g.nodes[p].op_type.as_str(),
                                "GlobalAveragePool" | "GlobalMaxPool"
                            )
                        });
                    // [N, C, 1, 1] → [N, C] keeps channels on axis 1.
                    if after_global_pool && n.op_type == "Flatten" {
                        input(0)
                    } else {
                        input(0).map(|x| x.collapse())
                    }
                }
                _ => None,
            }
        };
        if let Some(s) = stats.get(&n.outputs[0]) {
            let bn = Interval {
                lo: s
                    .mean
                    .iter()
                    .zip(&s.std)
                    .map(|(m, d)| m - opts.n_sigma * d)
                    .collect(),
                hi: s
                    .mean
                    .iter()
                    .zip(&s.std)
                    .map(|(m, d)| m + opts.n_sigma * d)
                    .collect(),
                loose: false,
            };
            result = Some(match result {
                Some(r) if r.lo.len() == bn.lo.len() => {
                    let (lo, hi) = (0..bn.lo.len())
                        .map(|i| {
                            let lo = bn.lo[i].max(r.lo[i]);
                            let hi = bn.hi[i].min(r.hi[i]);
                            if lo <= hi {
                                (lo, hi)
                            } else {
                                (bn.lo[i], bn.hi[i])
                            }
                        })
                        .unzip();
                    Interval {
                        lo,
                        hi,
                        loose: false,
                    }
                }
                _ => bn,
            });
            from_bn += 1;
        } else if result.is_some() {
            from_bounds += 1;
        }
        if let Some(r) = result {
            known.insert(n.outputs[0].clone(), r);
        }
    }
    let mut ranges = ActivationRanges::new();
    let mut bound_only = BTreeSet::new();
    for (name, iv) in known {
        if iv.loose {
            bound_only.insert(name.clone());
        }
        let r = if iv.lo.len() == 1 {
            TensorRange::scalar(iv.lo[0], iv.hi[0])
        } else {
            TensorRange {
                min: iv.lo,
                max: iv.hi,
                axis: Some(1),
            }
        };
        ranges.insert(name, r);
    }
    for (name, r) in ranges.tensors.iter() {
        if g.outputs.iter().any(|o| &o.name == name) || g.inputs.iter().any(|i| &i.name == name) {
            let (lo, hi) = r.merged();
            rec.change(format!("{name}: [{lo:.4}, {hi:.4}]"));
        }
    }
    rec.metric("values", ranges.len() as f64);
    rec.metric("from_bn", from_bn as f64);
    rec.metric("from_bounds", from_bounds as f64);
    rec.metric("bound_only", bound_only.len() as f64);
    Ok((BnRanges { ranges, bound_only }, rec))
}
