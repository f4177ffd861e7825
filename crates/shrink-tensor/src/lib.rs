//! Dense, owned, row-major tensors and their element types.
//!
//! This crate sits at the very bottom of shrink: the IR (`shrink-graph`), the
//! datasets (`shrink-data`) and both executors speak in [`Tensor`]s, so it has to
//! be tiny and free of graph or kernel concerns. Storage is a plain `Vec` per
//! element type: every kernel wants a contiguous slice, and views/strides would
//! only move copies somewhere less visible.

mod dtype;
mod float8;
mod tensor;

pub use dtype::DType;
pub use float8::Float8;
pub use half::{bf16, f16};
pub use tensor::{strides_of, Element, Tensor, TensorData};

/// Errors from building or converting tensors.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {got} were given")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("expected a {expected} tensor, found {found}")]
    WrongDType { expected: DType, found: DType },
    #[error("cannot cast {from} to {to}")]
    BadCast { from: DType, to: DType },
    #[error("cannot reshape {from:?} into {to:?}")]
    BadReshape { from: Vec<usize>, to: Vec<usize> },
}

pub type Result<T, E = TensorError> = std::result::Result<T, E>;
