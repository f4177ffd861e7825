//! Rounding of real values to integers, including seeded stochastic rounding.
//!
//! Stochastic rounding rounds `v` up with probability `v − ⌊v⌋`, so the
//! expected result is exactly `v` (unbiased): small updates survive low
//! precision on average instead of always being rounded away. It is
//! reproducible: the same seed gives the same codes.

use serde::{Deserialize, Serialize};

/// How a real value becomes an integer code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Rounding {
    /// Round to nearest, ties to even (IEEE default; unbiased on ties).
    #[default]
    NearestEven,
    /// Round to nearest, ties away from zero (C `round`).
    NearestAway,
    /// Round toward −∞.
    Floor,
    /// Round up with probability equal to the fractional part; seeded.
    Stochastic { seed: u64 },
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed generator.
/// Enough for rounding noise; we need determinism by seed, not cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A rounding mode with its random state (only stochastic rounding uses it).
#[derive(Debug, Clone)]
pub struct Rounder {
    mode: Rounding,
    rng: SplitMix64,
}

impl Rounder {
    pub fn new(mode: Rounding) -> Self {
        let seed = match mode {
            Rounding::Stochastic { seed } => seed,
            _ => 0,
        };
        Rounder {
            mode,
            rng: SplitMix64::new(seed),
        }
    }

    /// Rounds `v` to an integer-valued f64 under this mode.
    #[inline]
    pub fn round(&mut self, v: f64) -> f64 {
        match self.mode {
            Rounding::NearestEven => v.round_ties_even(),
            Rounding::NearestAway => v.round(),
            Rounding::Floor => v.floor(),
            // floor(v + u), u ~ U[0,1): P(round up) = frac(v), so E[result] = v.
            Rounding::Stochastic { .. } => (v + self.rng.next_f64()).floor(),
        }
    }

    /// Uniform random bits for formats that round by adding noise below the
    /// kept bits (fp16/bf16 stochastic rounding).
    #[inline]
    pub fn random_bits(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_modes_match_std() {
        let cases = [
            (2.5, 2.0, 3.0, 2.0),
            (3.5, 4.0, 4.0, 3.0),
            (-2.5, -2.0, -3.0, -3.0),
            (-0.4, 0.0, 0.0, -1.0),
            (1.49, 1.0, 1.0, 1.0),
        ];
        for (v, even, away, floor) in cases {
            assert_eq!(Rounder::new(Rounding::NearestEven).round(v), even, "{v}");
            assert_eq!(Rounder::new(Rounding::NearestAway).round(v), away, "{v}");
            assert_eq!(Rounder::new(Rounding::Floor).round(v), floor, "{v}");
        }
    }

    #[test]
    fn stochastic_is_unbiased_and_reproducible() {
        let mut r = Rounder::new(Rounding::Stochastic { seed: 7 });
        let n = 1_000_000;
        let mut err = 0.0;
        let mut first = Vec::new();
        for i in 0..n {
            let v = (i as f64 * 0.618_033_988_7).fract() * 10.0 - 5.0;
            let q = r.round(v);
            assert!(q == v.floor() || q == v.floor() + 1.0);
            if i < 100 {
                first.push(q);
            }
            err += q - v;
        }
        assert!(
            (err / n as f64).abs() < 1e-3,
            "mean error {}",
            err / n as f64
        );
        let mut r2 = Rounder::new(Rounding::Stochastic { seed: 7 });
        let again: Vec<f64> = (0..100)
            .map(|i| r2.round((i as f64 * 0.618_033_988_7).fract() * 10.0 - 5.0))
            .collect();
        assert_eq!(first, again);
    }
}
