//! Datasets and text inputs for shrink's models.
//!
//! Everything here turns files on disk into [`Tensor`]s: the IDX files of the
//! MNIST family, CIFAR-10's binary batches, NumPy's `.npy`/`.npz` (the lingua
//! franca for reference activations produced by Python), and sentences through
//! a Hugging Face `tokenizer.json`. Readers validate headers against file
//! lengths and report the file in every error, because a truncated download is
//! the most common way these inputs go wrong.

pub mod cifar;
pub mod dataset;
pub mod idx;
pub mod npy;
pub mod text;

pub use dataset::{Batches, Dataset, Scaling, Split};
pub use shrink_tensor::{DType, Tensor};
pub use text::{Encoding, Tokenizer};

use std::path::{Path, PathBuf};

/// Errors of the data layer; every variant names the file (or spec) concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("dataset '{spec}': {msg}")]
    Spec { spec: String, msg: String },
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    #[error(transparent)]
    Tensor(#[from] shrink_tensor::TensorError),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> DataError {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> DataError {
        DataError::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// The asset cache: `$SHRINK_CACHE`, else `~/.cache/shrink`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHRINK_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("shrink")
}

/// The project's shared read-only data (`shared/data`, with the Fashion-MNIST
/// models and the MiniLM references): `$SHRINK_SHARED/data` (the variable
/// names the `shared/` directory), else the first
/// `shared/data` found walking up from the working directory, then from this
/// crate's source tree. A checkout keeps `shared/` beside the repository, in
/// CI as on a developer's machine, so tests find it without configuration.
pub fn shared_data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SHRINK_SHARED").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("data"));
    }
    let starts = [
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    starts
        .into_iter()
        .flatten()
        .flat_map(|s| s.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .map(|a| a.join("shared").join("data"))
        .find(|d| d.join("fashion").is_dir())
}

/// Reads a whole file, transparently gunzipping names ending in `.gz`.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("bad gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
