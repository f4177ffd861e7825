//! Executes a [`Graph`] on CPU.
//!
//! The runtime is an interpreter over the IR: a [`Session`] checks that every
//! node has a kernel once, compiles the graph into an index-based plan
//! (`plan`: value names become slots, each node its resolved op, input
//! sources and the slots that die after it), then runs nodes in order,
//! dropping values as soon as they are dead so peak memory follows liveness
//! rather than graph size. Ops are plain
//! functions registered by name in [`ops::Registry`]; each op module owns one
//! family (convolution, elementwise, shape …).

mod buffers;
pub mod fold;
pub mod lower;

mod fuse;
mod microbatch;
pub mod ops;
mod plan;
mod session;

pub use fold::{fold_constants, fold_constants_with, FoldOptions, FoldReport};
pub use lower::QdqMode;
pub use ops::{OpContext, OpFn, Registry};
pub use session::{NodeTiming, Session, SessionOptions};
pub use shrink_graph::{Graph, Node};
pub use shrink_tensor::{DType, Tensor};

/// Errors while planning or running a graph. Every variant names the node.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("unsupported op '{op}' (domain '{domain}', opset {opset}) at node '{node}'")]
    Unsupported {
        node: String,
        op: String,
        domain: String,
        opset: i64,
    },
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    #[error(transparent)]
    Graph(#[from] shrink_graph::GraphError),
    #[error(transparent)]
    Tensor(#[from] shrink_tensor::TensorError),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
