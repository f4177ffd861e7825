/// Errors of the training executor. Every variant names what it is about
/// (node and op, parameter, or fed input).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("node '{node}': op '{op}' (domain '{domain}') has no backward in shrink-train")]
    NoBackward {
        node: String,
        op: String,
        domain: String,
    },
    #[error("parameter '{name}': {msg}")]
    Param { name: String, msg: String },
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    #[error("{0}")]
    State(String),
    #[error(transparent)]
    Runtime(#[from] shrink_runtime::RuntimeError),
    #[error(transparent)]
    Graph(#[from] shrink_graph::GraphError),
    #[error(transparent)]
    Tensor(#[from] shrink_tensor::TensorError),
    #[error(transparent)]
    Kernel(#[from] shrink_kernels::KernelError),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
