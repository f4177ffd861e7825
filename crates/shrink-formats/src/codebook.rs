//! Codebooks (weight sharing, Deep Compression §3): a tensor whose values take
//! at most `2^bits` distinct values is stored as the table of those values
//! (the centroids) plus one `bits`-bit index per element.
//!
//! The codebook is *exact*: it is built from the distinct values already in
//! the tensor (k-means weight sharing is a pass that runs before storage), so
//! decoding gives back the very same bits. Centroids are kept as opaque bit
//! patterns sorted ascending; callers choose their width (f32, or fp16 when
//! every centroid is exactly an fp16 value, see [`fp16_exact`]).

use crate::{FormatError, Result};
use half::f16;

/// Distinct values and one index per element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codebook {
    /// Distinct bit patterns, ascending.
    pub centroids: Vec<u64>,
    /// Index into `centroids` for every element.
    pub indices: Vec<u32>,
}

impl Codebook {
    /// Builds the exact codebook of `values`; more than `max_codes` distinct
    /// values is an error naming the count (run weight sharing first).
    pub fn build(values: &[u64], max_codes: usize) -> Result<Codebook> {
        let mut centroids = values.to_vec();
        centroids.sort_unstable();
        centroids.dedup();
        if centroids.len() > max_codes {
            return Err(FormatError::Invalid(format!(
                "{} distinct values do not fit a codebook of {max_codes} entries \
                 (share weights with k-means first, or use more bits)",
                centroids.len()
            )));
        }
        let indices = values
            .iter()
            .map(|v| centroids.binary_search(v).map(|i| i as u32))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| FormatError::Invalid("value missing from its own codebook".into()))?;
        Ok(Codebook { centroids, indices })
    }

    /// Index bits needed for this many centroids (at least 1).
    pub fn index_bits(&self) -> u32 {
        bits_for(self.centroids.len())
    }

    /// Values back from indices; an index past the table is an error.
    pub fn decode(&self) -> Result<Vec<u64>> {
        self.indices
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                self.centroids.get(k as usize).copied().ok_or_else(|| {
                    FormatError::Invalid(format!(
                        "index {k} of element {i} is past the {} centroids",
                        self.centroids.len()
                    ))
                })
            })
            .collect()
    }
}

/// Bits to index `n` codes (`⌈log2 n⌉`, at least 1).
pub fn bits_for(n: usize) -> u32 {
    (usize::BITS - n.saturating_sub(1).leading_zeros()).max(1)
}

/// Whether every f32 bit pattern in `patterns` is exactly an fp16 value, so
/// centroids can be stored in 16 bits without changing the model.
pub fn fp16_exact(patterns: &[u64]) -> bool {
    patterns.iter().all(|&p| {
        let x = f32::from_bits(p as u32);
        f16::from_f32(x).to_f32().to_bits() == x.to_bits()
    })
}

/// f32 bit patterns → fp16 bit patterns (callers check [`fp16_exact`] first).
pub fn f32_patterns_to_f16(patterns: &[u64]) -> Vec<u64> {
    patterns
        .iter()
        .map(|&p| f16::from_f32(f32::from_bits(p as u32)).to_bits() as u64)
        .collect()
}

/// fp16 bit patterns → f32 bit patterns.
pub fn f16_patterns_to_f32(patterns: &[u64]) -> Vec<u64> {
    patterns
        .iter()
        .map(|&p| f16::from_bits(p as u16).to_f32().to_bits() as u64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(table in proptest::collection::vec(any::<u64>(), 1..40), picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..300)) {
            let values: Vec<u64> = picks.iter().map(|p| table[p.index(table.len())]).collect();
            let cb = Codebook::build(&values, 64).unwrap();
            prop_assert_eq!(cb.decode().unwrap(), values.clone());
            prop_assert!(cb.centroids.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(cb.centroids.len() <= table.len());
            prop_assert!(cb.indices.iter().all(|&i| (i as usize) < cb.centroids.len()));
        }
    }

    #[test]
    fn limits_and_fp16() {
        assert!(Codebook::build(&[1, 2, 3], 2).is_err());
        assert_eq!(bits_for(1), 1);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(32), 5);
        assert_eq!(bits_for(33), 6);
        let exact = [0.5f32, -1.25, 0.0].map(|x| x.to_bits() as u64);
        assert!(fp16_exact(&exact));
        assert_eq!(f16_patterns_to_f32(&f32_patterns_to_f16(&exact)), exact);
        assert!(!fp16_exact(&[0.1f32.to_bits() as u64]));
        let bad = Codebook {
            centroids: vec![1],
            indices: vec![0, 1],
        };
        assert!(bad.decode().is_err());
    }
}
