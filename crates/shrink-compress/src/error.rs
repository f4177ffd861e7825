//! One error type for every pass, so a recipe can report which pass, node or
//! field went wrong without the caller knowing the pass.

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("pass '{pass}': node '{node}' ({op}): {msg}")]
    Node {
        pass: String,
        node: String,
        op: String,
        msg: String,
    },
    #[error("pass '{pass}': tensor '{tensor}': {msg}")]
    Tensor {
        pass: String,
        tensor: String,
        msg: String,
    },
    #[error("recipe {file}: field '{field}': {msg}")]
    Recipe {
        file: String,
        field: String,
        msg: String,
    },
    #[error("pass '{pass}': {msg}")]
    Pass { pass: String, msg: String },
    #[error(transparent)]
    Graph(#[from] shrink_graph::GraphError),
    #[error(transparent)]
    Runtime(#[from] shrink_runtime::RuntimeError),
    #[error(transparent)]
    Format(#[from] shrink_formats::FormatError),
    #[error(transparent)]
    Data(#[from] shrink_data::DataError),
    #[error(transparent)]
    TensorData(#[from] shrink_tensor::TensorError),
}

pub type Result<T, E = CompressError> = std::result::Result<T, E>;
