//! ONNX import and export.
//!
//! The protobuf types in [`proto`] are generated once from onnx.proto3 (onnx
//! 1.17.0) by `scripts/gen-onnx-proto` and committed, so building shrink never
//! needs `protoc`.
//!
//! Import normalises a few things ONNX allows several ways, so passes see one
//! form: `Constant` nodes become initializers, sparse tensors become dense,
//! the `ai.onnx` domain is spelled `""`, unnamed nodes get `<op>_<index>`
//! names, and nodes are sorted topologically. Everything else the IR can hold
//! survives a load/save round trip unchanged.

mod export;
mod import;
#[allow(clippy::all, missing_docs)]
#[rustfmt::skip] // generated; kept byte-identical to scripts/gen-onnx-proto output
pub mod proto;
mod tensor;

pub use export::{save, save_with, to_bytes, SaveOptions};
pub(crate) use tensor::{decode_raw, encode_raw};
pub use tensor::{tensor_from_proto, tensor_to_proto};

use crate::{Graph, GraphError, Result};
use prost::Message;
use shrink_tensor::Tensor;
use std::path::Path;

/// Name of a dimension ONNX leaves without value or parameter.
pub const UNKNOWN_DIM: &str = "?";

/// Keys of [`Graph::metadata`] that map to `ModelProto` fields rather than
/// `metadata_props`.
pub mod meta {
    pub const PRODUCER_NAME: &str = "producer_name";
    pub const PRODUCER_VERSION: &str = "producer_version";
    pub const DOMAIN: &str = "domain";
    pub const MODEL_VERSION: &str = "model_version";
    pub const DOC_STRING: &str = "doc_string";
    pub(super) const RESERVED: [&str; 5] = [
        PRODUCER_NAME,
        PRODUCER_VERSION,
        DOMAIN,
        MODEL_VERSION,
        DOC_STRING,
    ];
}

/// Loads an ONNX model file. External data is resolved next to the file.
/// Every error names the file.
pub fn load(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| GraphError::Io {
        path: path.display().to_string(),
        source,
    })?;
    import::model_from_bytes(&bytes, path.parent()).map_err(|e| in_file(path, e))
}

/// Loads a model from serialized bytes; `base_dir` is where external data
/// files are looked up (`None`: a model with external data is an error).
pub fn from_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph> {
    import::model_from_bytes(bytes, base_dir)
}

/// Loads one serialized `TensorProto` (the backend test data's `input_*.pb`
/// and `output_*.pb`).
pub fn load_tensor_pb(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| GraphError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let proto = proto::TensorProto::decode(bytes.as_slice()).map_err(|e| GraphError::File {
        path: path.display().to_string(),
        msg: format!("not a valid TensorProto: {e}"),
    })?;
    tensor_from_proto(&proto, path.parent()).map_err(|e| in_file(path, e))
}

/// ONNX's default domain has two spellings; the IR uses `""`.
fn normalize_domain(d: &str) -> &str {
    if d == "ai.onnx" {
        ""
    } else {
        d
    }
}

fn in_file(path: &Path, e: GraphError) -> GraphError {
    GraphError::File {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}
