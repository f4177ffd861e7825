//! Flexpoint flex16+5 (Köster et al., NIPS 2017): 16-bit integer mantissas
//! sharing one 5-bit exponent per tensor, so a dot product is integer
//! multiply-accumulate followed by one exponent add.
//!
//! ```text
//!  tensor:  exponent field f (5 bits, two's complement, −16..=15)
//!           mantissas m[i]  (i16, −32767..=32767)
//!  value[i] = m[i] · 2^(f + bias)          bias = −15 by default
//! ```
//!
//! With the default bias the exponent spans 2^−31..2^0: a tensor whose largest
//! magnitude lies between ~1.5e−5 and 32767 keeps 15 bits of precision; outside
//! that the exponent saturates (recorded, never silent wrap-around).
//!
//! Autoflex picks the exponent *before* seeing a tensor (hardware must fix the
//! scale before the values stream through) from a running statistic of the
//! tensor's past maxima: predicted max = max(history) + 3·std(history), so a
//! growing tensor keeps headroom; if a value would still overflow, the exponent
//! is raised and the event counted.

use crate::{check_shape, Format, FormatError, Result};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

const MANT_MAX: f64 = 32767.0;
const FIELD_MIN: i32 = -16;
const FIELD_MAX: i32 = 15;

/// The flex16+5 format; `bias` shifts the 5-bit exponent field's range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Flex16 {
    pub bias: i32,
}

impl Default for Flex16 {
    fn default() -> Self {
        Flex16 { bias: -15 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlexTensor {
    pub shape: Vec<usize>,
    /// The 5-bit exponent field.
    pub field: i8,
    pub bias: i32,
    pub mantissas: Vec<i16>,
    /// Values that did not fit and were clipped to ±32767 (0 unless the exponent saturated).
    pub clipped: usize,
}

impl FlexTensor {
    /// The power of two each mantissa unit weighs.
    pub fn exponent(&self) -> i32 {
        self.field as i32 + self.bias
    }

    /// Integer dot product: exact i64 sum of mantissa products and the exponent
    /// of its unit, `value = sum · 2^exp`.
    pub fn dot(&self, other: &FlexTensor) -> Result<(i64, i32)> {
        if self.mantissas.len() != other.mantissas.len() {
            return Err(FormatError::Invalid(format!(
                "dot of flex tensors of {} and {} values",
                self.mantissas.len(),
                other.mantissas.len()
            )));
        }
        let sum = self
            .mantissas
            .iter()
            .zip(&other.mantissas)
            .map(|(&a, &b)| a as i64 * b as i64)
            .sum();
        Ok((sum, self.exponent() + other.exponent()))
    }
}

impl Flex16 {
    /// Smallest exponent field whose range holds `max_abs`, saturated to 5 bits.
    pub fn field_for(&self, max_abs: f64) -> i32 {
        if max_abs <= 0.0 || !max_abs.is_finite() {
            return FIELD_MIN;
        }
        // want max_abs / 2^(f + bias) <= 32767
        let e = (max_abs / MANT_MAX).log2().ceil() as i32;
        let mut f = (e - self.bias).clamp(FIELD_MIN, FIELD_MAX);
        // guard against log2 rounding at exact powers of two
        while f > FIELD_MIN && max_abs / pow2(f - 1 + self.bias) <= MANT_MAX {
            f -= 1;
        }
        while f < FIELD_MAX && max_abs / pow2(f + self.bias) > MANT_MAX {
            f += 1;
        }
        f
    }

    /// Encodes with a given exponent field (nearest-even, clipping counted).
    pub fn encode_with_field(
        &self,
        values: &[f32],
        shape: &[usize],
        field: i32,
    ) -> Result<FlexTensor> {
        check_shape(values.len(), shape, "encode as flex16+5")?;
        if !(FIELD_MIN..=FIELD_MAX).contains(&field) {
            return Err(FormatError::Invalid(format!(
                "exponent field {field} does not fit in 5 bits"
            )));
        }
        let unit = pow2(field + self.bias);
        let mut clipped = 0;
        let mantissas = values
            .iter()
            .map(|&x| {
                let v = (x as f64 / unit).round_ties_even();
                if v.abs() > MANT_MAX {
                    clipped += 1;
                }
                if v.is_nan() {
                    0
                } else {
                    v.clamp(-MANT_MAX, MANT_MAX) as i16
                }
            })
            .collect();
        Ok(FlexTensor {
            shape: shape.to_vec(),
            field: field as i8,
            bias: self.bias,
            mantissas,
            clipped,
        })
    }
}

fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

fn max_abs(values: &[f32]) -> f64 {
    values
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f64, |m, &x| m.max(x.abs() as f64))
}

impl Format for Flex16 {
    type Encoded = FlexTensor;
    fn name(&self) -> String {
        "flex16+5".into()
    }
    fn bits_per_value(&self) -> f64 {
        16.0
    }
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<FlexTensor> {
        check_shape(values.len(), shape, "encode as flex16+5")?;
        self.encode_with_field(values, shape, self.field_for(max_abs(values)))
    }
    fn decode(&self, e: &FlexTensor) -> Result<Vec<f32>> {
        let unit = pow2(e.exponent());
        Ok(e.mantissas
            .iter()
            .map(|&m| (m as f64 * unit) as f32)
            .collect())
    }
}

/// Autoflex exponent management for one tensor that changes over iterations.
#[derive(Debug, Clone)]
pub struct Autoflex {
    pub format: Flex16,
    history: VecDeque<f64>,
    window: usize,
    /// Times a prediction was too low and the exponent had to be raised.
    pub overflows: usize,
}

impl Autoflex {
    pub fn new(format: Flex16, window: usize) -> Autoflex {
        Autoflex {
            format,
            history: VecDeque::new(),
            window: window.max(1),
            overflows: 0,
        }
    }

    /// Max magnitude expected next: max + 3σ of the recent maxima (none yet: None).
    pub fn predicted_max(&self) -> Option<f64> {
        if self.history.is_empty() {
            return None;
        }
        let n = self.history.len() as f64;
        let mean = self.history.iter().sum::<f64>() / n;
        let var = self.history.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / n;
        let max = self.history.iter().cloned().fold(0f64, f64::max);
        Some(max + 3.0 * var.sqrt())
    }

    /// Encodes the next value of the tensor with the predicted exponent,
    /// raising it on overflow, then records this tensor's maximum.
    pub fn encode(&mut self, values: &[f32], shape: &[usize]) -> Result<FlexTensor> {
        let actual = max_abs(values);
        let mut field = match self.predicted_max() {
            Some(p) => self.format.field_for(p),
            None => self.format.field_for(actual),
        };
        let needed = self.format.field_for(actual);
        if needed > field {
            self.overflows += 1;
            field = needed;
        }
        let t = self.format.encode_with_field(values, shape, field)?;
        self.history.push_back(actual);
        if self.history.len() > self.window {
            self.history.pop_front();
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    #[test]
    fn uses_full_mantissa_and_round_trips_codes() {
        let f = Flex16::default();
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.003).collect();
        let e = f.encode(&x, &[1000]).unwrap();
        let peak = e.mantissas.iter().map(|m| m.unsigned_abs()).max().unwrap();
        assert!(peak > 16383, "top mantissa bit used: {peak}");
        assert_eq!(e.clipped, 0);
        let d = f.decode(&e).unwrap();
        let unit = 2f64.powi(e.exponent());
        for (a, b) in x.iter().zip(&d) {
            assert!(((a - b).abs() as f64) <= unit / 2.0 + 1e-12);
        }
        // decoded values re-encode to the same codes
        assert_eq!(
            f.encode_with_field(&d, &[1000], e.field as i32)
                .unwrap()
                .mantissas,
            e.mantissas
        );
    }

    #[test]
    fn integer_dot_equals_exact_dot_of_decoded_values() {
        let f = Flex16::default();
        let mut r = SplitMix64::new(1);
        let a: Vec<f32> = (0..4096).map(|_| (r.next_f64() - 0.5) as f32).collect();
        let b: Vec<f32> = (0..4096)
            .map(|_| (r.next_f64() * 8.0 - 4.0) as f32)
            .collect();
        let (ea, eb) = (
            f.encode(&a, &[4096]).unwrap(),
            f.encode(&b, &[4096]).unwrap(),
        );
        let (sum, exp) = ea.dot(&eb).unwrap();
        let (da, db) = (f.decode(&ea).unwrap(), f.decode(&eb).unwrap());
        // decoded values are m·2^e exactly; their products sum exactly in i128 units
        let exact: i128 = ea
            .mantissas
            .iter()
            .zip(&eb.mantissas)
            .map(|(&x, &y)| x as i128 * y as i128)
            .sum();
        assert_eq!(sum as i128, exact);
        let f64dot: f64 = da.iter().zip(&db).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((sum as f64 * 2f64.powi(exp) - f64dot).abs() < 1e-9);
    }

    #[test]
    fn autoflex_tracks_a_growing_tensor_without_overflow() {
        let mut af = Autoflex::new(Flex16::default(), 8);
        let mut r = SplitMix64::new(3);
        for step in 0..200 {
            // magnitude grows 2% per step (a weight tensor during training)
            let scale = 0.01 * 1.02f64.powi(step);
            let x: Vec<f32> = (0..256)
                .map(|_| ((r.next_f64() - 0.5) * 2.0 * scale) as f32)
                .collect();
            let t = af.encode(&x, &[256]).unwrap();
            assert_eq!(t.clipped, 0);
            if step > 10 {
                // headroom stays small: the largest mantissa uses at least 12 bits
                let peak = t.mantissas.iter().map(|m| m.unsigned_abs()).max().unwrap();
                assert!(peak >= 2048, "step {step}: peak {peak}");
            }
        }
        assert!(af.overflows <= 1, "overflows: {}", af.overflows);
        // a sudden jump is caught (counted) rather than clipped
        let t = af.encode(&[1000.0, -3.0], &[2]).unwrap();
        assert_eq!(t.clipped, 0);
        assert!(af.overflows >= 1);
    }

    #[test]
    fn saturating_exponent_is_reported() {
        let f = Flex16::default();
        let e = f.encode_with_field(&[1.0e6], &[1], 15).unwrap();
        assert_eq!(e.clipped, 1);
        assert!(f.encode_with_field(&[1.0], &[1], 16).is_err());
    }
}
