//! Compression passes: each is `Graph -> Graph` with a record of what it
//! changed, and a recipe (TOML) is an ordered list of them.
//!
//! The quantised form every pass produces is the ONNX QDQ form
//! (`QuantizeLinear`/`DequantizeLinear` around float ops): the fp32 runtime
//! executes it as the simulated (fake-quant) model, the runtime's integer
//! planner lowers the same patterns onto integer kernels, and ONNX export is
//! the graph itself — one representation, three uses, and they must agree.

pub mod bias_absorb;
pub mod bias_correct;
pub mod calib;
pub mod cle;
pub mod deep_compression;
pub mod dfq;
pub mod error;
pub mod fold_bn;
pub mod kmeans;
pub mod linear_layer;
pub mod mixed;
pub mod pass;
pub mod prune;
pub mod qat;
pub mod qoperator;
pub mod quantize;
pub mod ranges;
pub mod ranges_bn;
pub mod recipe;
pub mod relu6;

pub use error::{CompressError, Result};
pub use pass::PassRecord;
pub use ranges::{ActivationRanges, TensorRange};
