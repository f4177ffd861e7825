//! Ternary formats {−α_n, 0, +α_p}.
//!
//! * TWN (Li & Liu 2016): threshold Δ = 0.7·mean|W| (their approximation of the
//!   optimal threshold for Gaussian-like weights) and one α = mean of |W| over
//!   the weights above Δ, the α minimising ‖W − α·T‖² for that mask.
//! * TTQ (Zhu et al. 2017): separate positive and negative scales; TTQ trains
//!   them, and post-training the L2-optimal values are the means of the
//!   positive and of the negative weights beyond Δ, which is what we set.
//!
//! A ternary tensor is a sparse binary tensor: codes −1/0/+1 (2 bits stored).

use crate::intq::SlotMap;
use crate::{check_shape, Format, FormatError, Granularity, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TernaryKind {
    Twn,
    Ttq,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ternary {
    pub kind: TernaryKind,
    pub granularity: Granularity,
    /// Δ = threshold_factor · mean|W| (0.7 in TWN).
    pub threshold_factor: f32,
}

impl Ternary {
    pub fn twn(granularity: Granularity) -> Ternary {
        Ternary {
            kind: TernaryKind::Twn,
            granularity,
            threshold_factor: 0.7,
        }
    }
    pub fn ttq(granularity: Granularity) -> Ternary {
        Ternary {
            kind: TernaryKind::Ttq,
            granularity,
            threshold_factor: 0.7,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TernaryTensor {
    pub shape: Vec<usize>,
    pub ternary: Ternary,
    pub delta: Vec<f32>,
    pub alpha_pos: Vec<f32>,
    pub alpha_neg: Vec<f32>,
    pub codes: Vec<i8>,
}

impl Format for Ternary {
    type Encoded = TernaryTensor;
    fn name(&self) -> String {
        match self.kind {
            TernaryKind::Twn => "ternary/twn".into(),
            TernaryKind::Ttq => "ternary/ttq".into(),
        }
    }
    fn bits_per_value(&self) -> f64 {
        2.0
    }
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<TernaryTensor> {
        check_shape(values.len(), shape, "ternarise")?;
        if matches!(self.granularity, Granularity::PerGroup { .. }) {
            return Err(FormatError::Invalid(
                "ternary scales are per tensor or per channel".into(),
            ));
        }
        let map = SlotMap::new(shape, self.granularity)?;
        let n = map.slots();
        let (mut sum, mut count) = (vec![0f64; n], vec![0usize; n]);
        map.for_each(|s, i| {
            sum[s] += values[i].abs() as f64;
            count[s] += 1;
        });
        let delta: Vec<f32> = (0..n)
            .map(|s| (self.threshold_factor as f64 * sum[s] / count[s] as f64) as f32)
            .collect();
        let mut codes = vec![0i8; values.len()];
        let (mut sp, mut cp, mut sn, mut cn) = (
            vec![0f64; n],
            vec![0usize; n],
            vec![0f64; n],
            vec![0usize; n],
        );
        map.for_each(|s, i| {
            let x = values[i];
            if x > delta[s] {
                codes[i] = 1;
                sp[s] += x as f64;
                cp[s] += 1;
            } else if x < -delta[s] {
                codes[i] = -1;
                sn[s] -= x as f64;
                cn[s] += 1;
            }
        });
        let mean = |a: f64, c: usize| if c == 0 { 0.0 } else { (a / c as f64) as f32 };
        let (alpha_pos, alpha_neg) = match self.kind {
            TernaryKind::Twn => {
                let a: Vec<f32> = (0..n).map(|s| mean(sp[s] + sn[s], cp[s] + cn[s])).collect();
                (a.clone(), a)
            }
            TernaryKind::Ttq => (
                (0..n).map(|s| mean(sp[s], cp[s])).collect(),
                (0..n).map(|s| mean(sn[s], cn[s])).collect(),
            ),
        };
        Ok(TernaryTensor {
            shape: shape.to_vec(),
            ternary: *self,
            delta,
            alpha_pos,
            alpha_neg,
            codes,
        })
    }
    fn decode(&self, e: &TernaryTensor) -> Result<Vec<f32>> {
        let map = SlotMap::new(&e.shape, e.ternary.granularity)?;
        let mut out = vec![0f32; e.codes.len()];
        map.for_each(|s, i| {
            out[i] = match e.codes[i] {
                1 => e.alpha_pos[s],
                -1 => -e.alpha_neg[s],
                _ => 0.0,
            }
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twn_threshold_and_alpha_by_hand() {
        let w = [0.9f32, -0.1, 0.05, -1.1, 0.3, 0.0];
        // mean|w| = 2.45/6, Δ = 0.7·that = 0.285833…; above: 0.9, -1.1, 0.3 → α = 2.3/3
        let t = Ternary::twn(Granularity::PerTensor);
        let e = t.encode(&w, &[6]).unwrap();
        assert!((e.delta[0] - 0.7 * 2.45 / 6.0).abs() < 1e-6);
        assert_eq!(e.codes, vec![1, 0, 0, -1, 1, 0]);
        assert!((e.alpha_pos[0] - 2.3 / 3.0).abs() < 1e-6);
        let d = t.decode(&e).unwrap();
        assert_eq!(d[1], 0.0);
        assert!((d[3] + 2.3 / 3.0).abs() < 1e-6);
        // α is L2-optimal for the mask: perturbing it only increases the error
        let err = |a: f32| {
            w.iter()
                .zip(&e.codes)
                .map(|(x, &c)| (x - a * c as f32).powi(2))
                .sum::<f32>()
        };
        assert!(
            err(e.alpha_pos[0]) < err(e.alpha_pos[0] * 1.02)
                && err(e.alpha_pos[0]) < err(e.alpha_pos[0] * 0.98)
        );
    }

    #[test]
    fn ttq_scales_are_separate_means() {
        let w = [1.0f32, 0.8, -0.3, -0.5, 0.01, -0.02, 0.6, -0.4];
        let t = Ternary::ttq(Granularity::PerChannel { axis: 0 });
        let e = t.encode(&w, &[2, 4]).unwrap();
        // row 0: mean|.|=0.65, Δ=0.455 → +1.0,+0.8, −0.5 ; row 1: mean=0.2575, Δ=0.18025 → +0.6, −0.4
        assert_eq!(e.codes, vec![1, 1, 0, -1, 0, 0, 1, -1]);
        assert!((e.alpha_pos[0] - 0.9).abs() < 1e-6 && (e.alpha_neg[0] - 0.5).abs() < 1e-6);
        assert!((e.alpha_pos[1] - 0.6).abs() < 1e-6 && (e.alpha_neg[1] - 0.4).abs() < 1e-6);
        assert_eq!(
            t.decode(&e).unwrap(),
            vec![
                e.alpha_pos[0],
                e.alpha_pos[0],
                0.0,
                -0.5,
                0.0,
                0.0,
                0.6,
                -0.4
            ]
        );
    }
}
