//! QNN-style minimum-energy exploration (Moons et al., "Minimum energy
//! quantized neural networks", Asilomar 2017): energy per inference for every
//! weight/activation width 1..=8 and several on-chip memory sizes.
//!
//! Energy alone always prefers fewer bits; Moons et al. find the minimum at
//! *equal accuracy* between 1 and 4 bits. This grid is the energy side; the
//! accuracy side comes from evaluating the quantized models, so the minimum
//! reported here is per SRAM size and can be restricted to a least width.

use crate::memory::MemoryConfig;
use crate::model::{estimate, Assignment, Breakdown};
use crate::precision::Precision;
use crate::workload::LayerWork;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepCell {
    pub sram_bytes: u64,
    pub weight_bits: u32,
    pub act_bits: u32,
    pub energy: Breakdown,
    pub total_pj: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    pub sram_sizes: Vec<u64>,
    pub bits: Vec<u32>,
    /// `[sram][weight_bits][act_bits]` flattened in that order.
    pub cells: Vec<SweepCell>,
    /// Per SRAM size, the cheapest cell with both widths ≥ `min_bits`.
    pub minimum: Vec<SweepCell>,
    pub min_bits: u32,
}

/// SRAM sizes swept by default: 32 KiB … 4 MiB.
pub const DEFAULT_SRAM: [u64; 6] = [32 << 10, 64 << 10, 128 << 10, 256 << 10, 1 << 20, 4 << 20];

pub fn sweep(
    layers: &[LayerWork],
    sram_sizes: &[u64],
    dram_pj_per_64b: f64,
    min_bits: u32,
) -> SweepResult {
    let bits: Vec<u32> = (1..=8).collect();
    let mut cells = Vec::new();
    let mut minimum = Vec::new();
    for &s in sram_sizes {
        let mem = MemoryConfig {
            sram_bytes: s,
            dram_pj_per_64b,
        };
        let mut best: Option<SweepCell> = None;
        for &w in &bits {
            for &a in &bits {
                let r = estimate(
                    layers,
                    &Assignment::uniform(Precision::Int(w), Precision::Int(a)),
                    &mem,
                );
                let c = SweepCell {
                    sram_bytes: s,
                    weight_bits: w,
                    act_bits: a,
                    energy: r.total,
                    total_pj: r.total.total_pj(),
                };
                if w >= min_bits && a >= min_bits && best.is_none_or(|b| c.total_pj < b.total_pj) {
                    best = Some(c);
                }
                cells.push(c);
            }
        }
        minimum.extend(best);
    }
    SweepResult {
        sram_sizes: sram_sizes.to_vec(),
        bits,
        cells,
        minimum,
        min_bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_monotonic_in_bits_and_minimum_respects_floor() {
        let layers = vec![LayerWork {
            name: "fc".into(),
            op: "Gemm".into(),
            macs: 200_000,
            weights: 200_000,
            input_elems: 1000,
            output_elems: 200,
        }];
        let r = sweep(&layers, &[64 << 10, 1 << 20], 1300.0, 2);
        assert_eq!(r.cells.len(), 2 * 64);
        for c in &r.cells {
            if c.weight_bits < 8 {
                let next = r
                    .cells
                    .iter()
                    .find(|d| {
                        d.sram_bytes == c.sram_bytes
                            && d.weight_bits == c.weight_bits + 1
                            && d.act_bits == c.act_bits
                    })
                    .unwrap();
                assert!(next.total_pj > c.total_pj);
            }
        }
        assert!(r
            .minimum
            .iter()
            .all(|m| m.weight_bits == 2 && m.act_bits == 2));
        // 64 KiB holds 2-bit weights (50 kB) but not 3-bit (75 kB): the jump shows the DRAM cliff
        let at = |w| {
            r.cells
                .iter()
                .find(|c| c.sram_bytes == 64 << 10 && c.weight_bits == w && c.act_bits == 8)
                .unwrap()
                .energy
                .offchip_pj
        };
        assert!(at(3) > 10.0 * at(2));
    }
}
