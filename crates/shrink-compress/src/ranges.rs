//! Activation ranges: the one currency between whatever measures or derives
//! the range of an activation (calibration observers over data, or the
//! data-free estimate from BatchNorm statistics) and the pass that turns
//! ranges into QuantizeLinear/DequantizeLinear parameters.
//!
//! Keeping both sources on one type means a recipe can swap "calibrated" for
//! "data-free" without the quantiser knowing which one ran.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Range of one activation tensor: one `[min, max]` for the whole tensor, or
/// one per channel along `per_channel_axis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRange {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// `None`: per tensor (`min`/`max` hold one value each).
    pub per_channel_axis: Option<usize>,
}

impl TensorRange {
    pub fn per_tensor(min: f32, max: f32) -> TensorRange {
        TensorRange {
            min: vec![min],
            max: vec![max],
            per_channel_axis: None,
        }
    }

    pub fn per_channel(axis: usize, min: Vec<f32>, max: Vec<f32>) -> TensorRange {
        TensorRange {
            min,
            max,
            per_channel_axis: Some(axis),
        }
    }

    /// Number of channels (1 per tensor).
    pub fn channels(&self) -> usize {
        self.min.len()
    }

    /// The smallest `[min, max]` covering every channel: what a per-tensor
    /// activation quantiser (the usual case, and the only one ONNX
    /// QuantizeLinear kernels fuse well) needs.
    pub fn tensor_min_max(&self) -> (f32, f32) {
        let lo = self.min.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = self.max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo, hi)
    }

    /// Collapses per-channel ranges to one per-tensor range.
    pub fn to_per_tensor(&self) -> TensorRange {
        let (lo, hi) = self.tensor_min_max();
        TensorRange::per_tensor(lo, hi)
    }

    /// Widens `self` to also cover `other` (same granularity), e.g. when two
    /// batches of calibration data were observed separately.
    pub fn union(&self, other: &TensorRange) -> TensorRange {
        if self.per_channel_axis != other.per_channel_axis || self.channels() != other.channels() {
            let (a, b) = (self.tensor_min_max(), other.tensor_min_max());
            return TensorRange::per_tensor(a.0.min(b.0), a.1.max(b.1));
        }
        TensorRange {
            min: self
                .min
                .iter()
                .zip(&other.min)
                .map(|(a, b)| a.min(*b))
                .collect(),
            max: self
                .max
                .iter()
                .zip(&other.max)
                .map(|(a, b)| a.max(*b))
                .collect(),
            per_channel_axis: self.per_channel_axis,
        }
    }
}

/// Ranges of a graph's activations by value name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivationRanges {
    pub ranges: BTreeMap<String, TensorRange>,
}

impl ActivationRanges {
    pub fn new() -> ActivationRanges {
        ActivationRanges::default()
    }

    pub fn get(&self, name: &str) -> Option<&TensorRange> {
        self.ranges.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, range: TensorRange) {
        self.ranges.insert(name.into(), range);
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &TensorRange)> {
        self.ranges.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_collapses_to_the_covering_range() {
        let r = TensorRange::per_channel(1, vec![-1.0, 0.0, -3.0], vec![2.0, 5.0, 1.0]);
        assert_eq!(r.tensor_min_max(), (-3.0, 5.0));
        assert_eq!(r.to_per_tensor(), TensorRange::per_tensor(-3.0, 5.0));
    }

    #[test]
    fn union_widens_per_channel_and_falls_back_to_per_tensor() {
        let a = TensorRange::per_channel(1, vec![-1.0, 0.0], vec![2.0, 5.0]);
        let b = TensorRange::per_channel(1, vec![-2.0, 1.0], vec![1.0, 6.0]);
        assert_eq!(
            a.union(&b),
            TensorRange::per_channel(1, vec![-2.0, 0.0], vec![2.0, 6.0])
        );
        let c = TensorRange::per_tensor(-0.5, 9.0);
        assert_eq!(a.union(&c), TensorRange::per_tensor(-1.0, 9.0));
    }
}
