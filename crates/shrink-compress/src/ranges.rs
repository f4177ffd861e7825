//! Activation ranges: what calibration (or a data-free estimate from
//! BatchNorm statistics) learns about each activation tensor, and all the
//! QDQ insertion pass needs to choose activation scales.
//!
//! Kept as plain `[min, max]` per slot rather than scales so that one set of
//! ranges serves every activation format (u8 affine, i8 symmetric, 4-bit …):
//! the format is a choice of the quantisation plan, not of calibration.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The range of one tensor: one `[min, max]` for the whole tensor
/// (`axis: None`, vectors of length 1) or one per channel along `axis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRange {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    pub axis: Option<usize>,
}

impl TensorRange {
    /// A per-tensor range.
    pub fn scalar(min: f32, max: f32) -> TensorRange {
        TensorRange {
            min: vec![min],
            max: vec![max],
            axis: None,
        }
    }

    /// The per-tensor range that covers every channel.
    pub fn merged(&self) -> (f32, f32) {
        let lo = self.min.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = self.max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo, hi)
    }
}

/// Tensor name → range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationRanges {
    pub tensors: BTreeMap<String, TensorRange>,
}

impl ActivationRanges {
    pub fn new() -> ActivationRanges {
        ActivationRanges::default()
    }

    pub fn get(&self, name: &str) -> Option<&TensorRange> {
        self.tensors.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, range: TensorRange) {
        self.tensors.insert(name.into(), range);
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}
