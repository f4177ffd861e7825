//! Compression passes: each is `Graph -> Graph` with a record of what it
//! changed, and a recipe (TOML) is an ordered list of them.
//!
//! The quantised form every pass produces is the ONNX QDQ form
//! (`QuantizeLinear`/`DequantizeLinear` around float ops): the fp32 runtime
//! executes it as the simulated (fake-quant) model, the runtime's integer
//! planner lowers the same patterns onto integer kernels, and ONNX export is
//! the graph itself — one representation, three uses, and they must agree.

pub mod calib;
pub mod deep_compression;
pub mod error;
pub mod kmeans;
pub mod mixed;
pub mod pass;
pub mod prune;
pub mod quantize;
pub mod ranges;
pub mod recipe;

pub use error::{CompressError, Result};
pub use pass::PassRecord;
pub use ranges::{ActivationRanges, TensorRange};
