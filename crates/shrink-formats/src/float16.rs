//! 16-bit floats: IEEE fp16 (1 sign, 5 exponent, 10 mantissa bits) and bf16
//! (1 sign, 8 exponent, 7 mantissa bits — fp32's range at half the width).
//!
//! Codes are the raw 16-bit patterns (`half`'s layout). Round-to-nearest-even
//! uses `half`'s conversion; stochastic rounding picks between the two
//! neighbouring codes with probability proportional to proximity, so the
//! expected decoded value equals the input.

use crate::rounding::{Rounder, Rounding};
use crate::{check_shape, Format, Result};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// Codes of a 16-bit float tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Half16Tensor {
    pub shape: Vec<usize>,
    pub codes: Vec<u16>,
}

/// IEEE binary16.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Fp16 {
    pub rounding: Rounding,
}

/// bfloat16.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Bf16 {
    pub rounding: Rounding,
}

/// The two 16-bit layouts behind one set of rounding code.
trait Half16 {
    fn rne(x: f32) -> u16;
    fn value(code: u16) -> f32;
    /// Code of +infinity (the magnitude code after the largest finite one).
    const INF: u16;
}

struct F16;
struct B16;

impl Half16 for F16 {
    fn rne(x: f32) -> u16 {
        f16::from_f32(x).to_bits()
    }
    fn value(code: u16) -> f32 {
        f16::from_bits(code).to_f32()
    }
    const INF: u16 = 0x7c00;
}

impl Half16 for B16 {
    fn rne(x: f32) -> u16 {
        bf16::from_f32(x).to_bits()
    }
    fn value(code: u16) -> f32 {
        bf16::from_bits(code).to_f32()
    }
    const INF: u16 = 0x7f80;
}

/// Stochastic rounding to a 16-bit float: magnitude codes are monotonic, so the
/// neighbours of |x| are `lo` (round toward zero) and `lo + 1`.
fn stochastic<H: Half16>(x: f32, r: &mut Rounder) -> u16 {
    if !x.is_finite() {
        return H::rne(x);
    }
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    let a = x.abs();
    let mut lo = H::rne(a);
    if lo >= H::INF || H::value(lo) > a {
        lo -= 1;
    }
    let lo_v = H::value(lo) as f64;
    if lo_v == a as f64 {
        return sign | lo;
    }
    let hi_v = if lo + 1 >= H::INF {
        // Past the largest finite value: treat the gap as one more ulp; rounding up gives ∞.
        2.0 * lo_v - H::value(lo - 1) as f64
    } else {
        H::value(lo + 1) as f64
    };
    let p = (a as f64 - lo_v) / (hi_v - lo_v);
    let u = (r.random_bits() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    sign | if u < p { lo + 1 } else { lo }
}

fn encode16<H: Half16>(values: &[f32], rounding: Rounding) -> Vec<u16> {
    match rounding {
        Rounding::Stochastic { .. } => {
            let mut r = Rounder::new(rounding);
            values.iter().map(|&x| stochastic::<H>(x, &mut r)).collect()
        }
        _ => values.iter().map(|&x| H::rne(x)).collect(),
    }
}

fn check_rounding(name: &str, rounding: Rounding) -> Result<()> {
    match rounding {
        Rounding::NearestEven | Rounding::Stochastic { .. } => Ok(()),
        other => Err(crate::FormatError::Invalid(format!(
            "{name} supports nearest-even and stochastic rounding, not {other:?}"
        ))),
    }
}

impl Format for Fp16 {
    type Encoded = Half16Tensor;
    fn name(&self) -> String {
        "fp16".into()
    }
    fn bits_per_value(&self) -> f64 {
        16.0
    }
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<Half16Tensor> {
        check_shape(values.len(), shape, "encode as fp16")?;
        check_rounding("fp16", self.rounding)?;
        Ok(Half16Tensor {
            shape: shape.to_vec(),
            codes: encode16::<F16>(values, self.rounding),
        })
    }
    fn decode(&self, e: &Half16Tensor) -> Result<Vec<f32>> {
        Ok(e.codes.iter().map(|&c| F16::value(c)).collect())
    }
}

impl Format for Bf16 {
    type Encoded = Half16Tensor;
    fn name(&self) -> String {
        "bf16".into()
    }
    fn bits_per_value(&self) -> f64 {
        16.0
    }
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<Half16Tensor> {
        check_shape(values.len(), shape, "encode as bf16")?;
        check_rounding("bf16", self.rounding)?;
        Ok(Half16Tensor {
            shape: shape.to_vec(),
            codes: encode16::<B16>(values, self.rounding),
        })
    }
    fn decode(&self, e: &Half16Tensor) -> Result<Vec<f32>> {
        Ok(e.codes.iter().map(|&c| B16::value(c)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    /// Nearest-even check by brute force over the neighbouring codes, in f64.
    fn assert_nearest<H: Half16>(x: f32, code: u16) {
        let v = H::value(code) as f64;
        let d = (v - x as f64).abs();
        for nb in [code.wrapping_sub(1), code.wrapping_add(1)] {
            let w = H::value(nb) as f64;
            if !w.is_finite() || (nb ^ code) & 0x8000 != 0 {
                continue;
            }
            let dn = (w - x as f64).abs();
            assert!(
                d < dn || (d == dn && code & 1 == 0),
                "x={x} code={code:#x} ({v}) beaten by {nb:#x} ({w})"
            );
        }
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=u16::MAX {
            for (rne, val) in [
                (F16::rne as fn(f32) -> u16, F16::value as fn(u16) -> f32),
                (B16::rne, B16::value),
            ] {
                let v = val(c);
                if !v.is_nan() {
                    assert_eq!(rne(v), c);
                }
            }
        }
    }

    #[test]
    fn rne_is_nearest_even_on_random_and_midpoints() {
        let mut rng = SplitMix64::new(1);
        for i in 0..200_000 {
            let x = if i % 2 == 0 {
                f32::from_bits(rng.next_u64() as u32 & 0x477f_ffff) // |x| < 65536
            } else {
                // exact midpoints between neighbouring fp16 values
                let c = (rng.next_u64() % 0x7bff) as u16;
                ((F16::value(c) as f64 + F16::value(c + 1) as f64) / 2.0) as f32
            };
            if x.is_finite() && x.abs() <= 65504.0 {
                assert_nearest::<F16>(x, F16::rne(x));
            }
            let y = f32::from_bits(rng.next_u64() as u32);
            if y.is_finite() && y.abs() <= 3.0e38 {
                assert_nearest::<B16>(y, B16::rne(y));
            }
        }
    }

    #[test]
    fn stochastic_is_unbiased_and_reproducible() {
        for (x, is_bf) in [
            (0.1f32, false),
            (1000.3, false),
            (-3.0e-6, false),
            (0.1, true),
            (-7.7e20, true),
        ] {
            let n = 1_000_000;
            let fmt_codes = |seed| -> Vec<u16> {
                let v = vec![x; n];
                if is_bf {
                    Bf16 {
                        rounding: Rounding::Stochastic { seed },
                    }
                    .encode(&v, &[n])
                    .unwrap()
                    .codes
                } else {
                    Fp16 {
                        rounding: Rounding::Stochastic { seed },
                    }
                    .encode(&v, &[n])
                    .unwrap()
                    .codes
                }
            };
            let codes = fmt_codes(3);
            let val = |c: u16| if is_bf { B16::value(c) } else { F16::value(c) } as f64;
            let mean: f64 = codes.iter().map(|&c| val(c)).sum::<f64>() / n as f64;
            let lo = codes.iter().map(|&c| val(c)).fold(f64::INFINITY, f64::min);
            let hi = codes
                .iter()
                .map(|&c| val(c))
                .fold(f64::NEG_INFINITY, f64::max);
            let ulp = hi - lo;
            assert!(ulp > 0.0, "{x}: both neighbours must occur");
            assert!(((mean - x as f64) / ulp).abs() < 1e-3, "{x}: mean {mean}");
            assert_eq!(codes, fmt_codes(3));
        }
    }

    #[test]
    fn rejects_empty_and_floor() {
        assert!(Fp16::default().encode(&[], &[0]).is_err());
        assert!(Bf16 {
            rounding: Rounding::Floor
        }
        .encode(&[1.0], &[1])
        .is_err());
    }
}
