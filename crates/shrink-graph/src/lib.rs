//! The model IR every shrink layer shares.
//!
//! A [`Graph`] is an ONNX-shaped dataflow graph: named values, nodes with an
//! op type and typed [`Attr`]ibutes, initializers holding weights. Keeping ONNX's
//! vocabulary (op names, attribute names, input order) means import and export
//! are near-lossless and the ONNX spec is our op documentation; shrink adds its
//! own passes and encodings on top rather than a second op set to translate to.

pub mod analysis;
pub mod builders;
pub mod container;
mod dce;
mod graph;
mod infer;
pub mod onnx;
pub mod safetensors;
mod validate;

pub use container::Encoding;
pub use dce::eliminate_dead_nodes;
pub use graph::{captured_names, node_uses, Attr, Dim, Graph, Node, ValueInfo};
pub use infer::{infer_shapes, value_types};
pub use shrink_tensor::{DType, Tensor, TensorData};
pub use validate::validate;

/// Errors of the IR layer; every variant names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("attribute '{attr}' of node '{node}' ({op}): {msg}")]
    Attr {
        node: String,
        op: String,
        attr: String,
        msg: String,
    },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("invalid graph: {0}")]
    Invalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Tensor(#[from] shrink_tensor::TensorError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;
