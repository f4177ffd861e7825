//! Binary formats: {−α,+α} (BinaryConnect/BNN sign, XNOR-Net scale) and {0,1}.
//!
//! XNOR-Net (Rastegari et al. 2016) scales each output channel's signs by
//! α = mean|W|, the α minimising ‖W − α·sign(W)‖². Binarisation is
//! deterministic (sign, threshold at 0) or stochastic (BinaryConnect: +1 with
//! probability hard_sigmoid(x) = clip((x+1)/2, 0, 1)), seeded.
//!
//! Codes are one bit per value: 1 = +1 (or 1), 0 = −1 (or 0); see
//! [`crate::pack::pack_signs`] for the packed layout the kernels read.

use crate::intq::SlotMap;
use crate::rounding::SplitMix64;
use crate::{check_shape, Format, FormatError, Granularity, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BinaryKind {
    /// {−α, +α} with α = mean|x| per scale slot (α = 1 with `scaled: false`).
    PlusMinus { scaled: bool },
    /// {0, 1}: 1 where x ≥ 0.5 (deterministic) or with probability clip(x, 0, 1).
    ZeroOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    pub kind: BinaryKind,
    /// Slots sharing one α (per tensor or per channel).
    pub granularity: Granularity,
    /// `Some(seed)`: stochastic binarisation.
    pub stochastic: Option<u64>,
}

impl Binary {
    /// XNOR-Net weights: signs with one α per output channel (axis 0).
    pub fn xnor() -> Binary {
        Binary::xnor_along(0)
    }

    /// XNOR-Net signs with one α per index of `axis` (the output-channel axis).
    pub fn xnor_along(axis: usize) -> Binary {
        Binary {
            kind: BinaryKind::PlusMinus { scaled: true },
            granularity: Granularity::PerChannel { axis },
            stochastic: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryTensor {
    pub shape: Vec<usize>,
    pub binary: Binary,
    /// One α per slot.
    pub alpha: Vec<f32>,
    /// 0 or 1 per value.
    pub codes: Vec<u8>,
}

impl Format for Binary {
    type Encoded = BinaryTensor;
    fn name(&self) -> String {
        match self.kind {
            BinaryKind::PlusMinus { scaled: true } => "binary±α".into(),
            BinaryKind::PlusMinus { scaled: false } => "binary±1".into(),
            BinaryKind::ZeroOne => "binary01".into(),
        }
    }
    fn bits_per_value(&self) -> f64 {
        1.0
    }
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<BinaryTensor> {
        check_shape(values.len(), shape, "binarise")?;
        if matches!(self.granularity, Granularity::PerGroup { .. }) {
            return Err(FormatError::Invalid(
                "binary scales are per tensor or per channel".into(),
            ));
        }
        let map = SlotMap::new(shape, self.granularity)?;
        let mut sum = vec![0f64; map.slots()];
        let mut count = vec![0usize; map.slots()];
        map.for_each(|s, i| {
            sum[s] += values[i].abs() as f64;
            count[s] += 1;
        });
        let alpha: Vec<f32> = match self.kind {
            BinaryKind::PlusMinus { scaled: true } => sum
                .iter()
                .zip(&count)
                .map(|(s, &c)| (s / c as f64) as f32)
                .collect(),
            _ => vec![1.0; map.slots()],
        };
        let mut rng = self.stochastic.map(SplitMix64::new);
        let codes = values
            .iter()
            .map(|&x| {
                let (p, threshold) = match self.kind {
                    BinaryKind::PlusMinus { .. } => (((x as f64 + 1.0) / 2.0).clamp(0.0, 1.0), 0.0),
                    BinaryKind::ZeroOne => ((x as f64).clamp(0.0, 1.0), 0.5),
                };
                match rng.as_mut() {
                    Some(r) => (r.next_f64() < p) as u8,
                    None => (x >= threshold) as u8,
                }
            })
            .collect();
        Ok(BinaryTensor {
            shape: shape.to_vec(),
            binary: *self,
            alpha,
            codes,
        })
    }
    fn decode(&self, e: &BinaryTensor) -> Result<Vec<f32>> {
        let map = SlotMap::new(&e.shape, e.binary.granularity)?;
        let mut out = vec![0f32; e.codes.len()];
        map.for_each(|s, i| {
            out[i] = match e.binary.kind {
                BinaryKind::PlusMinus { .. } => {
                    if e.codes[i] == 1 {
                        e.alpha[s]
                    } else {
                        -e.alpha[s]
                    }
                }
                BinaryKind::ZeroOne => e.codes[i] as f32,
            }
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xnor_alpha_is_the_l2_optimum_per_channel() {
        let w: Vec<f32> = (0..12)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1 * (1 + i / 4) as f32)
            .collect();
        let b = Binary::xnor();
        let e = b.encode(&w, &[3, 4]).unwrap();
        for c in 0..3 {
            let row = &w[c * 4..c * 4 + 4];
            let alpha = row.iter().map(|x| x.abs()).sum::<f32>() / 4.0;
            assert!((e.alpha[c] - alpha).abs() < 1e-7);
            let err = |a: f32| {
                row.iter()
                    .map(|&x| (x - a * if x >= 0.0 { 1.0 } else { -1.0 }).powi(2))
                    .sum::<f32>()
            };
            assert!(err(alpha) <= err(alpha * 1.01) && err(alpha) <= err(alpha * 0.99));
        }
        let d = b.decode(&e).unwrap();
        for (i, (x, y)) in w.iter().zip(&d).enumerate() {
            assert_eq!(y.abs(), e.alpha[i / 4]);
            assert_eq!(*x >= 0.0, *y > 0.0);
        }
    }

    #[test]
    fn stochastic_follows_hard_sigmoid_and_is_seeded() {
        let n = 200_000;
        let b = Binary {
            kind: BinaryKind::PlusMinus { scaled: false },
            granularity: Granularity::PerTensor,
            stochastic: Some(4),
        };
        for x in [-0.6f32, 0.0, 0.3, 2.0] {
            let e = b.encode(&vec![x; n], &[n]).unwrap();
            let frac = e.codes.iter().map(|&c| c as f64).sum::<f64>() / n as f64;
            let p = ((x as f64 + 1.0) / 2.0).clamp(0.0, 1.0);
            assert!((frac - p).abs() < 0.005, "x={x}: {frac} vs {p}");
            // E[decoded] = 2p − 1 = x inside [−1, 1]: unbiased there
            assert_eq!(e, b.encode(&vec![x; n], &[n]).unwrap());
        }
        let z = Binary {
            kind: BinaryKind::ZeroOne,
            granularity: Granularity::PerTensor,
            stochastic: None,
        };
        assert_eq!(
            z.decode(&z.encode(&[0.2, 0.7, -1.0, 3.0], &[4]).unwrap())
                .unwrap(),
            vec![0.0, 1.0, 0.0, 1.0]
        );
    }
}
