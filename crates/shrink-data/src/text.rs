//! Sentences → BERT inputs, through a Hugging Face `tokenizer.json`.
//!
//! The `tokenizers` crate does the WordPiece work; this wrapper pins the two
//! settings that must match how the reference embeddings were made and that
//! `tokenizer.json` files often get wrong for sentence encoders: truncation at
//! the model's `max_seq_length` (256 for all-MiniLM-L6-v2, while its
//! tokenizer.json says 128) and padding to the longest row of the batch (the
//! file says fixed 128).

use crate::{DataError, Result};
use shrink_tensor::Tensor;
use std::path::{Path, PathBuf};

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
pub const DEFAULT_MAX_LEN: usize = 256;

/// A batch of tokenised sentences, each `i64 [B, L]`, L = the longest row.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    /// All zeros: single-segment inputs.
    pub token_type_ids: Tensor,
}

/// A tokenizer loaded from `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    max_len: usize,
    pad_id: i64,
}

impl Tokenizer {
    /// Loads `tokenizer.json` (a file, or a model directory containing one).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        if !path.is_file() {
            return Err(DataError::Tokenizer {
                path,
                msg: "file not found; run scripts/fetch-assets".into(),
            });
        }
        let err = |path: &Path, e: &dyn std::fmt::Display| DataError::Tokenizer {
            path: path.to_path_buf(),
            msg: e.to_string(),
        };
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| err(&path, &e))?;
        let pad_id = inner.get_padding().map(|p| p.pad_id as i64).unwrap_or(0);
        // Padding is done here (to the batch's longest row), not by the library.
        inner.with_padding(None);
        let mut t = Tokenizer {
            inner,
            path,
            max_len: DEFAULT_MAX_LEN,
            pad_id,
        };
        t.set_max_len(DEFAULT_MAX_LEN)?;
        Ok(t)
    }

    /// Sets truncation (in tokens, special tokens included).
    pub fn set_max_len(&mut self, max_len: usize) -> Result<()> {
        let params = tokenizers::TruncationParams {
            max_length: max_len,
            ..Default::default()
        };
        self.inner
            .with_truncation(Some(params))
            .map_err(|e| DataError::Tokenizer {
                path: self.path.clone(),
                msg: e.to_string(),
            })?;
        self.max_len = max_len;
        Ok(())
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids of one sentence, with [CLS]/[SEP], truncated.
    pub fn encode_one(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| DataError::Tokenizer {
                path: self.path.clone(),
                msg: format!("encoding {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Encodes a batch, padded with the pad id to its longest row.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Encoding> {
        let rows: Vec<Vec<i64>> = texts
            .iter()
            .map(|t| self.encode_one(t.as_ref()))
            .collect::<Result<_>>()?;
        let b = rows.len();
        let l = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = vec![self.pad_id; b * l];
        let mut mask = vec![0i64; b * l];
        for (r, row) in rows.iter().enumerate() {
            ids[r * l..r * l + row.len()].copy_from_slice(row);
            mask[r * l..r * l + row.len()].fill(1);
        }
        Ok(Encoding {
            input_ids: Tensor::from_vec(vec![b, l], ids)?,
            attention_mask: Tensor::from_vec(vec![b, l], mask)?,
            token_type_ids: Tensor::from_vec(vec![b, l], vec![0i64; b * l])?,
        })
    }
}
