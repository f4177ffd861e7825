//! Training checkpoints: everything needed to continue a run exactly where it
//! stopped, in one safetensors file.
//!
//! ```text
//! param/<name>            every parameter and buffer (BatchNorm running statistics)
//! optim/<name>.step       optimiser state per parameter (see Optimizer::state_tensors)
//! optim/<name>.first|second
//! meta/epoch              epochs completed (i64)
//! meta/step               optimiser steps taken (i64), drives the LR schedule
//! meta/rng_seed           the shuffling RNG's seed (u8 [32]) ...
//! meta/rng_word_pos       ... and its position in the stream (u64 [2], low word first)
//! meta/best_accuracy      early stopping: best evaluation accuracy so far (f64)
//! meta/best_epoch         ... the epoch it was reached (i64)
//! ```
//!
//! Files are written atomically (a temporary file in the same directory,
//! synced, then renamed over the old one), so a crash or a NaN mid-epoch
//! leaves the last good checkpoint intact, never a half-written one.

use indexmap::IndexMap;
use shrink_tensor::Tensor;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file name a checkpoint directory holds.
pub const FILE_NAME: &str = "checkpoint.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {msg}")]
    Format { path: PathBuf, msg: String },
}

pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// What a checkpoint holds besides tensors' names: the loop's position.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub params: IndexMap<String, Tensor>,
    pub optimizer: IndexMap<String, Tensor>,
    pub epoch: u64,
    pub step: u64,
    pub rng_seed: [u8; 32],
    pub rng_word_pos: u128,
    pub best_accuracy: f64,
    pub best_epoch: u64,
}

impl Checkpoint {
    /// Writes `dir/checkpoint.safetensors` atomically; returns its path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let io = |path: &Path, source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(FILE_NAME);
        let mut owned: Vec<(String, Tensor)> = Vec::new();
        for (k, t) in &self.params {
            owned.push((format!("param/{k}"), t.clone()));
        }
        for (k, t) in &self.optimizer {
            owned.push((format!("optim/{k}"), t.clone()));
        }
        let word = self.rng_word_pos;
        owned.extend([
            ("meta/epoch".into(), Tensor::scalar(self.epoch as i64)),
            ("meta/step".into(), Tensor::scalar(self.step as i64)),
            (
                "meta/rng_seed".into(),
                Tensor::from_vec(vec![32], self.rng_seed.to_vec()).expect("32"),
            ),
            (
                "meta/rng_word_pos".into(),
                Tensor::from_vec(vec![2], vec![word as u64, (word >> 64) as u64]).expect("2"),
            ),
            (
                "meta/best_accuracy".into(),
                Tensor::scalar(self.best_accuracy),
            ),
            (
                "meta/best_epoch".into(),
                Tensor::scalar(self.best_epoch as i64),
            ),
        ]);
        let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let bytes =
            shrink_graph::safetensors::to_bytes(&refs).map_err(|e| CheckpointError::Format {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        Ok(path)
    }

    /// Reads `dir/checkpoint.safetensors`; `Ok(None)` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Ok(None);
        }
        let bad = |msg: String| CheckpointError::Format {
            path: path.clone(),
            msg,
        };
        let all = shrink_graph::safetensors::load(&path).map_err(|e| bad(e.to_string()))?;
        let mut ck = Checkpoint {
            params: IndexMap::new(),
            optimizer: IndexMap::new(),
            epoch: 0,
            step: 0,
            rng_seed: [0; 32],
            rng_word_pos: 0,
            best_accuracy: f64::NEG_INFINITY,
            best_epoch: 0,
        };
        let mut seen = Vec::new();
        let count = |t: &Tensor, key: &str| -> Result<u64> {
            match t.to_i64_vec().as_slice() {
                [v] if *v >= 0 => Ok(*v as u64),
                other => Err(bad(format!("{key}: expected one count, found {other:?}"))),
            }
        };
        for (k, t) in all {
            if let Some(name) = k.strip_prefix("param/") {
                ck.params.insert(name.to_string(), t);
            } else if let Some(name) = k.strip_prefix("optim/") {
                ck.optimizer.insert(name.to_string(), t);
            } else {
                match k.as_str() {
                    "meta/epoch" => ck.epoch = count(&t, &k)?,
                    "meta/step" => ck.step = count(&t, &k)?,
                    "meta/best_epoch" => ck.best_epoch = count(&t, &k)?,
                    "meta/best_accuracy" => {
                        ck.best_accuracy = *t
                            .to_f64_vec()
                            .first()
                            .ok_or_else(|| bad(format!("{k} is empty")))?
                    }
                    "meta/rng_seed" => {
                        let v = t.as_slice::<u8>().map_err(|e| bad(format!("{k}: {e}")))?;
                        ck.rng_seed = v.try_into().map_err(|_| {
                            bad(format!("{k}: expected 32 bytes, found {}", v.len()))
                        })?;
                    }
                    "meta/rng_word_pos" => match t.as_slice::<u64>() {
                        Ok([lo, hi]) => ck.rng_word_pos = (*lo as u128) | ((*hi as u128) << 64),
                        _ => return Err(bad(format!("{k}: expected two u64 words"))),
                    },
                    other => return Err(bad(format!("unexpected entry '{other}'"))),
                }
                seen.push(k);
            }
        }
        for needed in [
            "meta/epoch",
            "meta/step",
            "meta/rng_seed",
            "meta/rng_word_pos",
        ] {
            if !seen.iter().any(|k| k == needed) {
                return Err(bad(format!(
                    "missing '{needed}'; not a shrink training checkpoint"
                )));
            }
        }
        Ok(Some(ck))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = std::env::temp_dir().join(format!("shrink-ck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Checkpoint::load(&dir).unwrap().is_none());
        let mut ck = Checkpoint {
            params: [(
                "fc.weight".to_string(),
                Tensor::from_vec(vec![2, 2], vec![1.0f32, -2.0, 3.5, 0.25]).unwrap(),
            )]
            .into_iter()
            .collect(),
            optimizer: [("fc.weight.step".to_string(), Tensor::scalar(3i64))]
                .into_iter()
                .collect(),
            epoch: 2,
            step: 940,
            rng_seed: [7; 32],
            rng_word_pos: (5u128 << 64) | 123,
            best_accuracy: 88.5,
            best_epoch: 1,
        };
        ck.save(&dir).unwrap();
        assert_eq!(Checkpoint::load(&dir).unwrap().unwrap(), ck);
        ck.epoch = 3;
        ck.save(&dir).unwrap();
        assert_eq!(Checkpoint::load(&dir).unwrap().unwrap().epoch, 3);
        // Only the checkpoint itself remains: no temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
        // A safetensors file that is not a checkpoint is refused, by name.
        let t = Tensor::scalar(1.0f32);
        let bytes = shrink_graph::safetensors::to_bytes(&[("x", &t)]).unwrap();
        std::fs::write(dir.join(FILE_NAME), bytes).unwrap();
        let e = Checkpoint::load(&dir).unwrap_err().to_string();
        assert!(
            e.contains(FILE_NAME) && e.contains("unexpected entry 'x'"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
