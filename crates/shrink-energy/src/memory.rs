//! Memory energy by level and size.
//!
//! SRAM read energy per 64 bits grows with the array (longer word and bit
//! lines): Horowitz gives 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB). Between
//! those points we interpolate a power law `E ∝ size^k` (k = 0.5 from 8 to
//! 32 KB, k = log(5)/log(32) ≈ 0.46 from 32 KB to 1 MB) and extend the nearest
//! segment's law outside them. Writes are priced like reads. DRAM costs
//! 1.3–2.6 nJ per 64 bits; we default to the low end, so savings from staying
//! on chip are, if anything, understated.

use crate::horowitz::{DRAM_64B_PJ, SRAM_READ_64B};
use crate::{EnergyError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// On-chip SRAM capacity in bytes (shared by weights and activations).
    pub sram_bytes: u64,
    /// DRAM energy per 64 bits moved.
    pub dram_pj_per_64b: f64,
}

impl MemoryConfig {
    pub fn new(sram_bytes: u64) -> MemoryConfig {
        MemoryConfig {
            sram_bytes,
            dram_pj_per_64b: DRAM_64B_PJ.0,
        }
    }

    /// Energy of moving `bits` through the on-chip SRAM.
    pub fn sram_pj(&self, bits: f64) -> f64 {
        bits / 64.0 * sram_pj_per_64b(self.sram_bytes as f64)
    }

    pub fn dram_pj(&self, bits: f64) -> f64 {
        bits / 64.0 * self.dram_pj_per_64b
    }
}

/// SRAM access energy per 64 bits for an array of `bytes` (power-law fit through the table).
pub fn sram_pj_per_64b(bytes: f64) -> f64 {
    let t = SRAM_READ_64B;
    let seg = if bytes <= t[1].0 {
        (t[0], t[1])
    } else {
        (t[1], t[2])
    };
    let ((s0, e0), (s1, e1)) = seg;
    let k = (e1 / e0).ln() / (s1 / s0).ln();
    e0 * (bytes.max(1.0) / s0).powf(k)
}

/// Parses `256KiB`, `1MiB`, `64KB` (= KiB; memories are binary-sized), `32768`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = [
        ("kib", 1u64 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("kb", 1 << 10),
        ("mb", 1 << 20),
        ("k", 1 << 10),
        ("m", 1 << 20),
        ("b", 1),
    ]
    .iter()
    .find_map(|(suf, m)| lower.strip_suffix(suf).map(|n| (n.trim().to_string(), *m)))
    .unwrap_or((lower.clone(), 1));
    let v: f64 = num.parse().map_err(|_| EnergyError::Size(s.to_string()))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(EnergyError::Size(s.to_string()));
    }
    Ok((v * mult as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_points_and_interpolation() {
        assert!((sram_pj_per_64b(8192.0) - 10.0).abs() < 1e-9);
        assert!((sram_pj_per_64b(32768.0) - 20.0).abs() < 1e-9);
        assert!((sram_pj_per_64b(1048576.0) - 100.0).abs() < 1e-9);
        // 16 KB sits on the sqrt law between 8 and 32 KB
        assert!((sram_pj_per_64b(16384.0) - 10.0 * 2f64.sqrt()).abs() < 1e-9);
        let e256 = sram_pj_per_64b(262144.0);
        assert!(e256 > 20.0 && e256 < 100.0);
        assert!((e256 - 20.0 * 8f64.powf(5f64.ln() / 32f64.ln())).abs() < 1e-9);
        let m = MemoryConfig::new(8192);
        assert!((m.sram_pj(128.0) - 20.0).abs() < 1e-9);
        assert!((m.dram_pj(64.0) - 1300.0).abs() < 1e-9);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256KiB").unwrap(), 262144);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("32768").unwrap(), 32768);
        assert_eq!(parse_size("64KB").unwrap(), 65536);
        assert!(parse_size("lots").is_err());
    }
}
