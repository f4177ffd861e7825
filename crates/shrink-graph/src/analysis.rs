//! Per-layer statistics: shapes, parameters, multiply-accumulates, bytes.
//!
//! The CLI's `shrink inspect` prints these and the energy model prices them,
//! so the counting rules live in one place:
//! - costs are **per sample**: a symbolic leading (batch) dimension counts as 1;
//!   any other unknown dimension makes the figure unknown (`None`);
//! - a node's parameters are the initializer elements it reads, directly or
//!   through weight-only nodes (`DequantizeLinear` of int8 weights in a QDQ
//!   model, a `Transpose` of a constant...), so a quantized Conv still owns
//!   its weights; each initializer is counted once, at its first reader;
//! - MACs are counted for Conv, ConvTranspose, Gemm, MatMul (and their
//!   integer/QLinear forms) and LSTM/GRU/RNN; other ops report 0.

use crate::{infer_shapes, value_types, Attr, Dim, Graph, Node};
use std::collections::{HashMap, HashSet};

/// Statistics of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStats {
    pub name: String,
    pub op_type: String,
    /// Shape of each input (`None`: unknown or omitted input).
    pub input_shapes: Vec<Option<Vec<Dim>>>,
    pub output_shapes: Vec<Option<Vec<Dim>>>,
    /// Initializer elements this node reads (see the module doc).
    pub params: u64,
    /// Bytes those initializers occupy as stored (int8 weights: 1 byte each).
    pub weight_bytes: u64,
    /// Multiply-accumulates per sample; `None` when a shape is unknown.
    pub macs: Option<u64>,
    /// Elements of all outputs per sample; `None` when a shape is unknown.
    pub output_elements: Option<u64>,
    /// True for nodes computing only from constants (dequantizing weights):
    /// they cost nothing per sample once folded.
    pub weight_only: bool,
}

/// Sums over all layers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Totals {
    pub params: u64,
    pub weight_bytes: u64,
    /// `None` if any layer's MACs are unknown.
    pub macs: Option<u64>,
    /// Activation elements per sample, summed over all node outputs.
    pub output_elements: Option<u64>,
}

/// Statistics for every node of `g` (top level), in graph order. Shapes come
/// from [`infer_shapes`] run on a copy, so `g` need not carry `value_info`.
pub fn layer_stats(g: &Graph) -> Vec<LayerStats> {
    layer_stats_with(g, &HashMap::new())
}

/// [`layer_stats`] with values for symbolic dimensions other than the batch
/// (e.g. `seq` = 128 for a transformer), so their costs become numbers.
pub fn layer_stats_with(g: &Graph, dims: &HashMap<String, usize>) -> Vec<LayerStats> {
    let mut typed = g.clone();
    // Inference never fails as a whole; unknown stays unknown.
    let _ = infer_shapes(&mut typed);
    let types = value_types(&typed);
    let shape_of = |name: &str| -> Option<Vec<Dim>> {
        if name.is_empty() {
            return None;
        }
        types.get(name).and_then(|v| v.shape.clone())
    };
    let batch = batch_symbol(g);
    let sizes = Sizes {
        batch: batch.as_deref(),
        bound: dims,
    };

    // Values computed from constants only, and the initializers behind them.
    let mut const_roots: HashMap<&str, Vec<&str>> = g
        .initializers
        .keys()
        .map(|k| (k.as_str(), vec![k.as_str()]))
        .collect();
    let mut weight_only = vec![false; typed.nodes.len()];
    for (i, n) in typed.nodes.iter().enumerate() {
        let ins: Vec<&str> = n
            .inputs
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let has_subgraph = n
            .attrs
            .values()
            .any(|a| matches!(a, Attr::Graph(_) | Attr::Graphs(_)));
        if !ins.is_empty() && !has_subgraph && ins.iter().all(|s| const_roots.contains_key(s)) {
            weight_only[i] = true;
            let roots: Vec<&str> = ins.iter().flat_map(|s| const_roots[s].clone()).collect();
            for o in &n.outputs {
                const_roots.insert(o.as_str(), roots.clone());
            }
        }
    }

    let mut counted: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(typed.nodes.len());
    for (i, n) in typed.nodes.iter().enumerate() {
        let (mut params, mut weight_bytes) = (0u64, 0u64);
        if !weight_only[i] {
            for inp in &n.inputs {
                for root in const_roots.get(inp.as_str()).into_iter().flatten() {
                    if counted.insert(root) {
                        let t = &g.initializers[*root];
                        params += t.len() as u64;
                        weight_bytes += t.nbytes() as u64;
                    }
                }
            }
        }
        let input_shapes: Vec<Option<Vec<Dim>>> = n.inputs.iter().map(|s| shape_of(s)).collect();
        let output_shapes: Vec<Option<Vec<Dim>>> = n.outputs.iter().map(|s| shape_of(s)).collect();
        let output_elements = output_shapes
            .iter()
            .map(|s| s.as_ref().and_then(|s| sizes.per_sample(s)))
            .sum::<Option<u64>>();
        let macs = if weight_only[i] {
            Some(0)
        } else {
            macs_of(n, &input_shapes, &output_shapes, &sizes)
        };
        out.push(LayerStats {
            name: n.name.clone(),
            op_type: n.op_type.clone(),
            input_shapes,
            output_shapes,
            params,
            weight_bytes,
            macs,
            output_elements: if weight_only[i] {
                Some(0)
            } else {
                output_elements
            },
            weight_only: weight_only[i],
        });
    }
    out
}

/// Adds up [`layer_stats`].
pub fn totals(layers: &[LayerStats]) -> Totals {
    Totals {
        params: layers.iter().map(|l| l.params).sum(),
        weight_bytes: layers.iter().map(|l| l.weight_bytes).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        output_elements: layers.iter().map(|l| l.output_elements).sum(),
    }
}

/// The batch dimension's symbol: the leading symbolic dim of the first graph input.
fn batch_symbol(g: &Graph) -> Option<String> {
    let first = g
        .inputs
        .iter()
        .find(|v| !g.initializers.contains_key(&v.name))?;
    match first.shape.as_ref()?.first()? {
        Dim::Symbol(s) if s != crate::onnx::UNKNOWN_DIM => Some(s.clone()),
        _ => None,
    }
}

/// How symbolic dimensions count: the batch as 1, bound symbols as given.
struct Sizes<'a> {
    batch: Option<&'a str>,
    bound: &'a HashMap<String, usize>,
}

impl Sizes<'_> {
    /// Elements of `shape` for one sample.
    fn per_sample(&self, shape: &[Dim]) -> Option<u64> {
        shape.iter().try_fold(1u64, |acc, d| match d {
            Dim::Known(n) => acc.checked_mul(*n as u64),
            Dim::Symbol(s) if Some(s.as_str()) == self.batch => Some(acc),
            Dim::Symbol(s) => acc.checked_mul(*self.bound.get(s)? as u64),
        })
    }

    /// A single dimension's size (the batch counts 1).
    fn dim(&self, d: &Dim) -> Option<u64> {
        self.per_sample(std::slice::from_ref(d))
    }
}

fn known_product(dims: &[Dim]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(d.known()? as u64))
}

fn macs_of(
    n: &Node,
    ins: &[Option<Vec<Dim>>],
    outs: &[Option<Vec<Dim>>],
    sizes: &Sizes,
) -> Option<u64> {
    let input = |i: usize| ins.get(i).and_then(|s| s.as_deref());
    let out0 = || outs.first().and_then(|s| s.as_deref());
    match n.op_type.as_str() {
        // Each output element: C_in/group * prod(kernel) MACs = prod(W.shape[1..]).
        "Conv" | "ConvInteger" => {
            let w = input(1)?;
            sizes
                .per_sample(out0()?)?
                .checked_mul(known_product(&w[1..])?)
        }
        "QLinearConv" => {
            let w = input(3)?;
            sizes
                .per_sample(out0()?)?
                .checked_mul(known_product(&w[1..])?)
        }
        // Each input element scatters into (M/group) * prod(kernel) outputs.
        "ConvTranspose" => {
            let w = input(1)?;
            sizes
                .per_sample(input(0)?)?
                .checked_mul(known_product(&w[1..])?)
        }
        "Gemm" => {
            let a = input(0)?;
            let trans_a = n.attr_int("transA", 0).ok()? != 0;
            let k = sizes.dim(if trans_a { a.first()? } else { a.get(1)? })?;
            sizes.per_sample(out0()?)?.checked_mul(k)
        }
        "MatMul" | "MatMulInteger" => {
            let k = sizes.dim(input(0)?.last()?)?;
            sizes.per_sample(out0()?)?.checked_mul(k)
        }
        "QLinearMatMul" => {
            let k = sizes.dim(input(0)?.last()?)?;
            sizes.per_sample(out0()?)?.checked_mul(k)
        }
        "LSTM" | "GRU" | "RNN" => {
            let x = input(0)?;
            let w = input(1)?; // [dirs, gates*H, I]
            let r = input(2)?; // [dirs, gates*H, H]
            let layout = n.attr_int("layout", 0).ok()?;
            let (seq, b) = if layout == 0 {
                (x.first()?, x.get(1)?)
            } else {
                (x.get(1)?, x.first()?)
            };
            let seq = sizes.dim(seq)?;
            let b = sizes.dim(b)?;
            // Per step, direction and sequence in the batch: gates*H*(I + H) MACs.
            let per_step = known_product(w)?.checked_add(known_product(r)?)?;
            seq.checked_mul(b)?.checked_mul(per_step)
        }
        _ => Some(0),
    }
}
