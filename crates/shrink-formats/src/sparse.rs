//! Sparse storage with relative indices (Han, Mao & Dally 2016, §2, Fig. 2).
//!
//! A pruned tensor is stored as the list of its non-zero entries, each with
//! the distance from the previous entry instead of an absolute position:
//! `gap` = number of zeros skipped before the entry. Gaps are stored in
//! `index_bits` bits; when a run of zeros is longer than `2^b − 1`, a
//! *filler zero* is inserted — an entry with gap `2^b − 1` whose value is zero
//! — which moves the cursor `2^b` positions. Zeros after the last non-zero
//! need no entries (the tensor length is stored).
//!
//! ```text
//!  dense (b = 3):  index 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19
//!                  value . a . . . . . . . . .  .  .  .  b  .  .  .  .  c
//!  entries:        (gap 1, a) (gap 7, 0 filler) (gap 4, b) (gap 4, c)
//! ```
//!
//! CSR and CSC are the same stream over the row-major resp. column-major
//! order of a `[rows, cols]` view; row pointers are not stored (the decoder
//! recomputes them from the cursor), which is what makes the format small.
//! Values are opaque codes (`u64` bit patterns): a zero entry is the code 0,
//! so callers map their zero (0.0, codebook index of 0.0, …) to code 0.
//!
//! `b` is chosen per layer by [`best_index_bits`]: fewer bits mean more
//! fillers, more bits mean wider indices; the size is exact for each `b`.

use crate::{FormatError, Result};

/// Gaps and values of a relative-index sparse stream; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelativeSparse {
    /// Number of positions of the dense stream.
    pub len: usize,
    pub index_bits: u32,
    /// Zeros skipped before each entry, each `< 2^index_bits`.
    pub gaps: Vec<u32>,
    /// Value code of each entry (0 for fillers).
    pub values: Vec<u64>,
}

fn check_index_bits(b: u32) -> Result<()> {
    if !(1..=16).contains(&b) {
        return Err(FormatError::Invalid(format!(
            "relative index width must be in 1..=16 bits, got {b}"
        )));
    }
    Ok(())
}

impl RelativeSparse {
    /// Encodes a dense stream of codes (0 = zero).
    pub fn encode(dense: &[u64], index_bits: u32) -> Result<RelativeSparse> {
        check_index_bits(index_bits)?;
        let max_gap = (1u64 << index_bits) - 1;
        let mut gaps = Vec::new();
        let mut values = Vec::new();
        let mut run = 0u64;
        for &v in dense {
            if v == 0 {
                run += 1;
                continue;
            }
            while run > max_gap {
                gaps.push(max_gap as u32);
                values.push(0);
                run -= max_gap + 1;
            }
            gaps.push(run as u32);
            values.push(v);
            run = 0;
        }
        Ok(RelativeSparse {
            len: dense.len(),
            index_bits,
            gaps,
            values,
        })
    }

    /// Number of entries (fillers included).
    pub fn entries(&self) -> usize {
        self.gaps.len()
    }

    /// Number of filler entries (zero values).
    pub fn fillers(&self) -> usize {
        self.values.iter().filter(|&&v| v == 0).count()
    }

    /// Back to the dense stream. Errors (never panics) when gaps run past
    /// `len`, a gap does not fit `index_bits`, or the two lists disagree.
    pub fn decode(&self) -> Result<Vec<u64>> {
        check_index_bits(self.index_bits)?;
        if self.gaps.len() != self.values.len() {
            return Err(FormatError::Invalid(format!(
                "sparse stream has {} gaps but {} values",
                self.gaps.len(),
                self.values.len()
            )));
        }
        let mut out = vec![0u64; self.len];
        let mut pos = 0usize;
        for (i, (&g, &v)) in self.gaps.iter().zip(&self.values).enumerate() {
            if g as u64 >> self.index_bits != 0 {
                return Err(FormatError::Invalid(format!(
                    "gap {g} of entry {i} does not fit {} bits",
                    self.index_bits
                )));
            }
            pos += g as usize;
            if pos >= self.len {
                return Err(FormatError::Invalid(format!(
                    "entry {i} lands at position {pos}, past the {} positions of the tensor",
                    self.len
                )));
            }
            out[pos] = v;
            pos += 1;
        }
        Ok(out)
    }
}

/// Lengths of the zero runs before each non-zero of `dense`.
pub fn zero_runs(dense: &[u64]) -> Vec<u64> {
    let mut runs = Vec::new();
    let mut run = 0u64;
    for &v in dense {
        if v == 0 {
            run += 1;
        } else {
            runs.push(run);
            run = 0;
        }
    }
    runs
}

/// Entries (non-zeros + fillers) that `index_bits` would need for these runs.
pub fn entries_for(runs: &[u64], index_bits: u32) -> u64 {
    runs.iter().map(|&r| 1 + (r >> index_bits)).sum()
}

/// The relative-index width in `candidates` minimising the fixed-width size
/// `entries · (index_bits + value_bits)` in bits; returns `(b, bits)`.
/// Ties go to the smaller `b`.
pub fn best_index_bits(
    runs: &[u64],
    value_bits: u32,
    candidates: impl IntoIterator<Item = u32>,
) -> Option<(u32, u64)> {
    candidates
        .into_iter()
        .filter(|b| (1..=16).contains(b))
        .map(|b| (b, entries_for(runs, b) * (b + value_bits) as u64))
        .min_by_key(|&(b, size)| (size, b))
}

/// Row-major → column-major order of a `[rows, cols]` matrix (for CSC).
pub fn transpose<T: Copy>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for c in 0..cols {
        out.extend((0..rows).map(|r| data[r * cols + c]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paper_figure() {
        // The module-doc example: fillers exactly where a run exceeds 7.
        let mut dense = vec![0u64; 20];
        dense[1] = 10;
        dense[14] = 20;
        dense[19] = 30;
        let s = RelativeSparse::encode(&dense, 3).unwrap();
        assert_eq!(s.gaps, vec![1, 7, 4, 4]);
        assert_eq!(s.values, vec![10, 0, 20, 30]);
        assert_eq!(s.fillers(), 1);
        assert_eq!(s.decode().unwrap(), dense);
        assert_eq!(entries_for(&zero_runs(&dense), 3), 4);
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let bad = RelativeSparse {
            len: 4,
            index_bits: 2,
            gaps: vec![3, 1],
            values: vec![1, 2],
        };
        assert!(bad.decode().is_err(), "runs past the end");
        let bad = RelativeSparse {
            len: 40,
            index_bits: 2,
            gaps: vec![4],
            values: vec![1],
        };
        assert!(bad.decode().is_err(), "gap wider than index bits");
        assert!(RelativeSparse::encode(&[1], 0).is_err());
    }

    proptest! {
        #[test]
        fn round_trip_and_exact_entry_count(
            dense in proptest::collection::vec(prop_oneof![8 => Just(0u64), 1 => 1u64..1000], 0..400),
            b in 1u32..=8,
        ) {
            let s = RelativeSparse::encode(&dense, b).unwrap();
            prop_assert_eq!(s.decode().unwrap(), dense.clone());
            prop_assert_eq!(s.entries() as u64, entries_for(&zero_runs(&dense), b));
            prop_assert!(s.gaps.iter().all(|&g| g < (1 << b)));
            let nnz = dense.iter().filter(|&&v| v != 0).count();
            prop_assert_eq!(s.entries() - s.fillers(), nnz);
        }

        #[test]
        fn best_bits_is_the_minimum(dense in proptest::collection::vec(prop_oneof![9 => Just(0u64), 1 => Just(1u64)], 1..500)) {
            let runs = zero_runs(&dense);
            let (b, size) = best_index_bits(&runs, 5, 1..=12).unwrap();
            for c in 1..=12u32 {
                let sc = RelativeSparse::encode(&dense, c).unwrap().entries() as u64 * (c as u64 + 5);
                prop_assert!(size <= sc);
                if c == b { prop_assert_eq!(size, sc); }
            }
        }
    }

    #[test]
    fn transpose_is_column_major() {
        let m = [1, 2, 3, 4, 5, 6];
        assert_eq!(transpose(&m, 2, 3), vec![1, 4, 2, 5, 3, 6]);
    }
}
