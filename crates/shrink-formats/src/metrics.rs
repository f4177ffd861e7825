//! Error metrics of an approximation `y` of a reference `x`.
//!
//! SQNR (signal-to-quantization-noise ratio) is `10·log10(Σx² / Σ(x−y)²)` dB:
//! about 6.02 dB per bit for a uniform quantizer, which is why a chip
//! architect can read bit widths off an SQNR table. Sums run in f64.

use crate::{DynFormat, FormatError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorStats {
    pub mse: f64,
    /// +∞ when the approximation is exact.
    pub sqnr_db: f64,
    pub max_abs: f64,
}

impl ErrorStats {
    pub fn between(reference: &[f32], approx: &[f32]) -> Result<ErrorStats> {
        if reference.len() != approx.len() {
            return Err(FormatError::Shape {
                shape: vec![reference.len()],
                expected: reference.len(),
                got: approx.len(),
            });
        }
        if reference.is_empty() {
            return Err(FormatError::Empty("measure error of"));
        }
        let (mut sig, mut noise, mut max_abs) = (0f64, 0f64, 0f64);
        for (&x, &y) in reference.iter().zip(approx) {
            let (x, y) = (x as f64, y as f64);
            let d = (x - y).abs();
            sig += x * x;
            noise += d * d;
            max_abs = max_abs.max(d);
        }
        Ok(ErrorStats {
            mse: noise / reference.len() as f64,
            sqnr_db: 10.0 * (sig / noise).log10(),
            max_abs,
        })
    }

    /// Error of `format` on `values` (encode, decode, compare).
    pub fn of(format: &dyn DynFormat, values: &[f32], shape: &[usize]) -> Result<ErrorStats> {
        let y = format.round_trip(values, shape)?;
        ErrorStats::between(values, &y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Granularity, IntQ};

    #[test]
    fn hand_computed() {
        let e = ErrorStats::between(&[1.0, -2.0, 2.0], &[1.0, -1.0, 2.5]).unwrap();
        assert!((e.mse - 1.25 / 3.0).abs() < 1e-12);
        assert!((e.sqnr_db - 10.0 * (9.0f64 / 1.25).log10()).abs() < 1e-12);
        assert_eq!(e.max_abs, 1.0);
        assert_eq!(
            ErrorStats::between(&[1.0], &[1.0]).unwrap().sqnr_db,
            f64::INFINITY
        );
        assert!(ErrorStats::between(&[], &[]).is_err());
    }

    #[test]
    fn uniform_quantizer_matches_theory() {
        // uniform data on [-1, 1], step Δ = 1/qmax: SQNR = 10·log10((1/3) / (Δ²/12)),
        // i.e. ≈ 6.02 dB per bit
        let n = 100_000;
        let x: Vec<f32> = (0..n)
            .map(|i| (i as f32 + 0.5) / n as f32 * 2.0 - 1.0)
            .collect();
        for b in 4..=12u32 {
            let s = ErrorStats::of(&IntQ::symmetric(b, Granularity::PerTensor), &x, &[n])
                .unwrap()
                .sqnr_db;
            let step = 1.0 / ((1u32 << (b - 1)) - 1) as f64;
            let theory = 10.0 * ((1.0 / 3.0) / (step * step / 12.0)).log10();
            assert!((s - theory).abs() < 0.1, "bits {b}: {s} vs {theory}");
        }
    }
}
