//! Per-layer and per-model energy of one inference.
//!
//! ```text
//! E = Σ_layers  MACs·(1−s) · E_MAC(w, a)                         compute
//!             + (weights read on chip + inputs read + outputs written) · E_SRAM(size)   on-chip
//!             + (weights streamed + spilled activations + model I/O) · E_DRAM          off-chip
//! ```
//!
//! Memory model (batch 1): the on-chip SRAM first reserves the largest
//! activation working set of any layer (its inputs + outputs); the remaining
//! capacity holds weights, layer by layer in graph order, as long as a layer's
//! weights fit whole. Resident weights are loaded once and read from SRAM each
//! inference; the others stream from DRAM every inference. A layer whose own
//! activations exceed the SRAM reads its input from and writes its output to
//! DRAM. The model input is read from DRAM and the final output written back.
//! Operand reuse inside the datapath (registers) is taken as ideal: every value
//! crosses the SRAM once per layer, so the on-chip figure is a lower bound.
//! Bytes moved follow each format's width; with weight sparsity `s`, MACs and
//! weight traffic scale by (1−s) and each non-zero carries `index_bits`.

use crate::memory::MemoryConfig;
use crate::precision::{mac, Precision};
use crate::workload::LayerWork;
use serde::{Deserialize, Serialize};

/// Which precision the weights and activations use, per layer or for all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub weights: Precision,
    pub acts: Precision,
    /// Per-layer overrides `(layer name, weights, acts)`.
    pub overrides: Vec<(String, Precision, Precision)>,
    /// Fraction of weights that are zero and skipped (0 = dense).
    pub weight_sparsity: f64,
    /// Index bits stored per non-zero weight when sparse.
    pub index_bits: u32,
}

impl Assignment {
    pub fn uniform(weights: Precision, acts: Precision) -> Assignment {
        Assignment {
            weights,
            acts,
            overrides: Vec::new(),
            weight_sparsity: 0.0,
            index_bits: 0,
        }
    }

    fn for_layer(&self, name: &str) -> (Precision, Precision) {
        self.overrides
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, w, a)| (*w, *a))
            .unwrap_or((self.weights, self.acts))
    }
}

/// Energy split in picojoules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub compute_pj: f64,
    pub onchip_pj: f64,
    pub offchip_pj: f64,
}

impl Breakdown {
    pub fn total_pj(&self) -> f64 {
        self.compute_pj + self.onchip_pj + self.offchip_pj
    }
    fn add(&mut self, o: &Breakdown) {
        self.compute_pj += o.compute_pj;
        self.onchip_pj += o.onchip_pj;
        self.offchip_pj += o.offchip_pj;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerEnergy {
    pub name: String,
    pub op: String,
    pub weights: Precision,
    pub acts: Precision,
    pub macs: u64,
    pub mac_pj: f64,
    pub weight_bytes: f64,
    pub weights_on_chip: bool,
    pub acts_on_chip: bool,
    pub energy: Breakdown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReport {
    pub memory: MemoryConfig,
    pub sram_pj_per_64b: f64,
    pub layers: Vec<LayerEnergy>,
    pub total: Breakdown,
    pub macs: u64,
    pub weight_bytes: f64,
}

/// Prices one inference of `layers`.
pub fn estimate(layers: &[LayerWork], asg: &Assignment, mem: &MemoryConfig) -> EnergyReport {
    let keep = 1.0 - asg.weight_sparsity.clamp(0.0, 1.0);
    let wbits = |l: &LayerWork, w: Precision| {
        l.weights as f64 * keep * (w.bits() + if keep < 1.0 { asg.index_bits } else { 0 }) as f64
    };
    let act_bits =
        |l: &LayerWork, a: Precision| ((l.input_elems + l.output_elems) * a.bits() as u64) as f64;
    let sram_bits = mem.sram_bytes as f64 * 8.0;
    let peak_acts = layers
        .iter()
        .map(|l| act_bits(l, asg.for_layer(&l.name).1))
        .filter(|&b| b <= sram_bits)
        .fold(0f64, f64::max);
    let mut free = sram_bits - peak_acts;
    let mut out = Vec::with_capacity(layers.len());
    let mut total = Breakdown::default();
    for (i, l) in layers.iter().enumerate() {
        let (w, a) = asg.for_layer(&l.name);
        let m = mac(w, a);
        let wb = wbits(l, w);
        let ab = act_bits(l, a);
        let weights_on_chip = wb <= free;
        if weights_on_chip {
            free -= wb;
        }
        let acts_on_chip = ab <= sram_bits;
        let mut e = Breakdown {
            compute_pj: l.macs as f64 * keep * m.pj(),
            ..Default::default()
        };
        if weights_on_chip {
            e.onchip_pj += mem.sram_pj(wb);
        } else {
            e.offchip_pj += mem.dram_pj(wb);
        }
        if acts_on_chip {
            e.onchip_pj += mem.sram_pj(ab);
        } else {
            e.offchip_pj += mem.dram_pj(ab);
        }
        if i == 0 {
            e.offchip_pj += mem.dram_pj((l.input_elems * a.bits() as u64) as f64);
        }
        if i + 1 == layers.len() {
            e.offchip_pj += mem.dram_pj((l.output_elems * a.bits() as u64) as f64);
        }
        total.add(&e);
        out.push(LayerEnergy {
            name: l.name.clone(),
            op: l.op.clone(),
            weights: w,
            acts: a,
            macs: l.macs,
            mac_pj: m.pj(),
            weight_bytes: wb / 8.0,
            weights_on_chip,
            acts_on_chip,
            energy: e,
        });
    }
    EnergyReport {
        memory: *mem,
        sram_pj_per_64b: crate::memory::sram_pj_per_64b(mem.sram_bytes as f64),
        macs: layers.iter().map(|l| l.macs).sum(),
        weight_bytes: out.iter().map(|l| l.weight_bytes).sum(),
        layers: out,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> Vec<LayerWork> {
        [(784u64, 300u64), (300, 100), (100, 10)]
            .iter()
            .enumerate()
            .map(|(i, &(k, n))| LayerWork {
                name: format!("fc{}", i + 1),
                op: "Gemm".into(),
                macs: k * n,
                weights: k * n + n,
                input_elems: k,
                output_elems: n,
            })
            .collect()
    }

    #[test]
    fn hand_computed_small_case() {
        // one layer, everything on chip: 1000 MACs int8, 1000 weights, 10+10 activations
        let l = vec![LayerWork {
            name: "l".into(),
            op: "Gemm".into(),
            macs: 1000,
            weights: 1000,
            input_elems: 10,
            output_elems: 10,
        }];
        let mem = MemoryConfig::new(8192);
        let r = estimate(
            &l,
            &Assignment::uniform(Precision::Int(8), Precision::Int(8)),
            &mem,
        );
        assert!((r.total.compute_pj - 230.0).abs() < 1e-9);
        // SRAM 8 KiB = 10 pJ / 64 bit: (8000 + 160) bits → 1275 pJ
        assert!((r.total.onchip_pj - (8160.0 / 64.0 * 10.0)).abs() < 1e-9);
        // DRAM: input 80 bits + output 80 bits at 1300 pJ / 64 bit
        assert!((r.total.offchip_pj - 160.0 / 64.0 * 1300.0).abs() < 1e-9);
    }

    #[test]
    fn weights_spill_to_dram_when_sram_is_full() {
        let mem = MemoryConfig::new(256 * 1024);
        let r4 = estimate(
            &mlp(),
            &Assignment::uniform(Precision::Int(4), Precision::Int(8)),
            &mem,
        );
        assert!(r4.layers.iter().all(|l| l.weights_on_chip));
        let r32 = estimate(
            &mlp(),
            &Assignment::uniform(Precision::Fp32, Precision::Fp32),
            &mem,
        );
        assert!(!r32.layers[0].weights_on_chip, "fc1 fp32 is 941 kB");
        assert!(r32.layers[1].weights_on_chip && r32.layers[2].weights_on_chip);
        assert!(r32.total.offchip_pj > r32.layers[0].weight_bytes * 8.0 / 64.0 * 1300.0 - 1e-6);
        // sparsity halves MACs and weight traffic
        let mut s = Assignment::uniform(Precision::Int(8), Precision::Int(8));
        s.weight_sparsity = 0.5;
        let rs = estimate(&mlp(), &s, &mem);
        let rd = estimate(
            &mlp(),
            &Assignment::uniform(Precision::Int(8), Precision::Int(8)),
            &mem,
        );
        assert!((rs.total.compute_pj * 2.0 - rd.total.compute_pj).abs() < 1e-6);
    }
}
