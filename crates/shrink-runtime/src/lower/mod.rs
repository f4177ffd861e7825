//! Integer lowering of quantised (QDQ) graphs, done once at session build.
//!
//! A quantised model is an ONNX QDQ graph (the pattern ONNX Runtime's
//! `quantize_static` writes): `Q(x) → DQ → op → Q → DQ → …`, with int8
//! weights and i32 biases behind their own DequantizeLinear. Run as written,
//! every layer dequantises to f32, computes in f32 and quantises again. This
//! pass rewrites each recognised `DQ(x_q) [+ DQ(w_q) + DQ(b_i32)] → op
//! [→ Relu/Clip] → Q` into one node of domain `ai.shrink` that reads and
//! writes the quantised tensors directly ([`patterns`]); the DequantizeLinear
//! nodes nobody reads any more are then dropped. What no pattern matches
//! stays as DQ → f32 op → Q ("f32 fallback" in per-layer reports).
//!
//! The lowered ops ([`qops`]) run either on the integer kernels of
//! `shrink-kernels` ([`QdqMode::Integer`]) or on plain scalar loops that
//! spell out the same canonical arithmetic ([`QdqMode::Simulate`],
//! [`simulate`]); the two agree bit for bit, which the tests check on the
//! shared Fashion-MNIST models and on random graphs.

mod nhwc;
mod patterns;
mod qops;
mod quantize_fold;
pub mod simulate;

use crate::ops::Registry;
use crate::Result;
use shrink_graph::Graph;
use std::fmt;
use std::str::FromStr;

pub(crate) use nhwc::channels_last;
pub use patterns::LowerReport;

/// Domain of the lowered (internal) ops.
pub const DOMAIN: &str = "ai.shrink";

/// How a session runs the QDQ patterns of a quantised graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QdqMode {
    /// Lowered to integer kernels (u8/i8 tensors between layers).
    #[default]
    Integer,
    /// Lowered to the same ops, evaluated by the scalar reference of the
    /// canonical requantisation arithmetic (bit-identical to `Integer`).
    Simulate,
    /// Not lowered: DequantizeLinear → f32 op → QuantizeLinear as written
    /// (ONNX Runtime's float semantics for a QDQ graph).
    Float,
}

impl FromStr for QdqMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "integer" | "int" => Ok(QdqMode::Integer),
            "simulate" | "sim" => Ok(QdqMode::Simulate),
            "float" | "f32" => Ok(QdqMode::Float),
            other => Err(format!(
                "unknown QDQ mode '{other}' (integer, simulate, float)"
            )),
        }
    }
}

impl fmt::Display for QdqMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QdqMode::Integer => "integer",
            QdqMode::Simulate => "simulate",
            QdqMode::Float => "float",
        })
    }
}

/// Registers the lowered ops (called by [`Registry::standard`]).
pub(crate) fn register(r: &mut Registry) {
    qops::register(r);
    nhwc::register(r);
}

/// Whether `r` can run lowered graphs (a custom registry may lack the ops).
pub(crate) fn available(r: &Registry) -> bool {
    qops::OPS.iter().all(|op| r.get(DOMAIN, op).is_some())
}

/// Lowers `g` for `mode` (a no-op for [`QdqMode::Float`]); returns the graph
/// and, per node of it, the kernel label to report when its op sets none.
///
/// The input QuantizeLinear is not folded here: the session first gives
/// the channels-last rewrite ([`channels_last`]) its pick of the stem conv
/// (NHWC's small-conv kernel, measured faster at batch 1 on MobileNetV2-tiny
/// than the planar direct conv with the folded quantise plus a layout
/// conversion), then folds what is left with [`fold_input_quantize`].
pub(crate) fn lower(g: Graph, mode: QdqMode) -> Result<(Graph, Vec<&'static str>)> {
    if mode == QdqMode::Float {
        let n = g.nodes.len();
        return Ok((g, vec![""; n]));
    }
    let (g, report) = patterns::lower(g, mode == QdqMode::Simulate)?;
    Ok((g, report.labels))
}

/// Folds the model's input QuantizeLinear into the QConv that reads it,
/// where it is that conv's only reader (see `quantize_fold`).
pub(crate) fn fold_input_quantize(
    mut g: Graph,
    mut labels: Vec<&'static str>,
) -> (Graph, Vec<&'static str>) {
    quantize_fold::fold(&mut g, &mut labels);
    (g, labels)
}

/// [`lower`], also saying what was lowered and why other nodes were not.
pub fn lower_with_report(g: Graph, mode: QdqMode) -> Result<(Graph, LowerReport)> {
    if mode == QdqMode::Float {
        let n = g.nodes.len();
        return Ok((
            g,
            LowerReport {
                labels: vec![""; n],
                ..Default::default()
            },
        ));
    }
    let (mut g, mut report) = patterns::lower(g, mode == QdqMode::Simulate)?;
    quantize_fold::fold(&mut g, &mut report.labels);
    Ok((g, report))
}
