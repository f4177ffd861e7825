//! Pruning: remove what does not matter.
//!
//! Two families live here. *Unstructured* passes ([`magnitude`], [`nm`],
//! OBD saliency via [`magnitude::prune_by_score`]) zero single weights: the
//! graph keeps its shapes and the zeros pay off only once storage codes them
//! sparsely (the `.shrink` container's CSR) — the runtime still multiplies
//! them. *Structured* passes ([`structured`]) delete whole filters, channels,
//! neurons or residual branches and really shrink the graph, so latency falls
//! with the MACs. [`schedule`] gives gradual (AGP) targets and [`mask`] keeps
//! pruned weights at zero while fine-tuning.

pub mod finetune;
pub mod magnitude;
pub mod mask;
pub mod nm;
pub mod schedule;
pub mod sensitivity;
pub mod structured;

use crate::{CompressError, Result};
use shrink_graph::{Graph, Node};
use shrink_tensor::{DType, Tensor};

/// How a weight matrix maps (output unit, input index) to its flat storage:
/// element `(o, i)` lives at `o * out_stride + i * in_stride`.
///
/// Conv weights `[O, I/g, kh, kw]` and Gemm `transB = 1` weights `[N, K]` are
/// row-major per output; Gemm `transB = 0` and MatMul weights `[K, N]` keep an
/// output's inputs in a column. Passes that reason "per output row" (N:M,
/// neuron norms) go through this so they need not know which op they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub outputs: usize,
    /// Inputs per output (the GEMM reduction length: `I/g * kh * kw` for Conv).
    pub inputs: usize,
    pub out_stride: usize,
    pub in_stride: usize,
}

impl Layout {
    pub fn index(&self, o: usize, i: usize) -> usize {
        o * self.out_stride + i * self.in_stride
    }
}

/// A weight tensor a pruning pass may zero: an f32 initializer read as the
/// weight of a Conv, Gemm or MatMul.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunableWeight {
    pub tensor: String,
    pub node: String,
    pub op: String,
    pub layout: Layout,
}

/// Every prunable weight of `g`, in node order. Each initializer appears once
/// (at its first reader); biases are never listed (they are < 1% of the
/// parameters and pruning them buys nothing, as in Han et al.).
pub fn prunable_weights(g: &Graph) -> Vec<PrunableWeight> {
    let mut out: Vec<PrunableWeight> = Vec::new();
    for n in &g.nodes {
        let Some(layout) = weight_layout(g, n) else {
            continue;
        };
        let name = n.inputs[1].clone();
        if out.iter().any(|w| w.tensor == name) {
            continue;
        }
        out.push(PrunableWeight {
            tensor: name,
            node: n.name.clone(),
            op: n.op_type.clone(),
            layout,
        });
    }
    out
}

/// The layout of `n`'s weight (input 1) if it is an f32 initializer of a
/// Conv, Gemm or MatMul with a shape that op accepts.
pub fn weight_layout(g: &Graph, n: &Node) -> Option<Layout> {
    let w = g.initializers.get(n.input(1)?)?;
    if w.dtype() != DType::F32 {
        return None;
    }
    let s = w.shape();
    match n.op_type.as_str() {
        "Conv" if s.len() >= 3 => {
            let inputs: usize = s[1..].iter().product();
            Some(Layout {
                outputs: s[0],
                inputs,
                out_stride: inputs,
                in_stride: 1,
            })
        }
        "Gemm" if s.len() == 2 => {
            if n.attr_int("transB", 0).ok()? != 0 {
                Some(Layout {
                    outputs: s[0],
                    inputs: s[1],
                    out_stride: s[1],
                    in_stride: 1,
                })
            } else {
                Some(Layout {
                    outputs: s[1],
                    inputs: s[0],
                    out_stride: 1,
                    in_stride: s[1],
                })
            }
        }
        "MatMul" if s.len() == 2 => Some(Layout {
            outputs: s[1],
            inputs: s[0],
            out_stride: 1,
            in_stride: s[1],
        }),
        _ => None,
    }
}

/// The f32 values of initializer `name`, or an error naming it.
pub(crate) fn f32_weights<'a>(g: &'a Graph, pass: &str, name: &str) -> Result<&'a [f32]> {
    let t = g
        .initializers
        .get(name)
        .ok_or_else(|| tensor_error(pass, name, "no such initializer"))?;
    t.as_slice::<f32>()
        .map_err(|_| tensor_error(pass, name, format!("expected f32, found {}", t.dtype())))
}

/// Replaces initializer `name`'s values, keeping its shape.
pub(crate) fn set_f32(g: &mut Graph, name: &str, values: Vec<f32>) -> Result<()> {
    let shape = g.initializers[name].shape().to_vec();
    g.initializers
        .insert(name.to_string(), Tensor::from_vec(shape, values)?);
    Ok(())
}

pub(crate) fn tensor_error(pass: &str, tensor: &str, msg: impl Into<String>) -> CompressError {
    CompressError::Tensor {
        pass: pass.to_string(),
        tensor: tensor.to_string(),
        msg: msg.into(),
    }
}

pub(crate) fn pass_error(pass: &str, msg: impl Into<String>) -> CompressError {
    CompressError::Pass {
        pass: pass.to_string(),
        msg: msg.into(),
    }
}

/// Fraction of zeros among the prunable weights of `g` (0 when there are none).
pub fn sparsity(g: &Graph) -> f64 {
    let (mut zeros, mut total) = (0usize, 0usize);
    for w in prunable_weights(g) {
        if let Ok(v) = g.initializers[&w.tensor].as_slice::<f32>() {
            zeros += v.iter().filter(|x| **x == 0.0).count();
            total += v.len();
        }
    }
    if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    }
}

/// Checks a sparsity target is a fraction.
pub(crate) fn check_fraction(pass: &str, what: &str, s: f64) -> Result<()> {
    if (0.0..=1.0).contains(&s) {
        Ok(())
    } else {
        Err(pass_error(
            pass,
            format!("{what} must lie in [0, 1], got {s}"),
        ))
    }
}
