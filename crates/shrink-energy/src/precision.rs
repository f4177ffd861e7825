//! Precisions a layer can compute in, and their MAC cost.
//!
//! Scaling beyond the table (see [`crate::horowitz`]):
//! * integers: multiply ∝ w·a, add ∝ bits; a MAC is one multiply plus one add
//!   at the operand width — the convention of the seed's "int8 MAC 0.23 pJ"
//!   (0.2 + 0.03) against "fp32 MAC 4.6 pJ" (3.7 + 0.9), 20×;
//! * bf16: multiplier energy and area scale from fp16 by the full-adder count
//!   (M+1)²: 64/121; its adder is taken as fp16's (same width);
//! * posit⟨n,es⟩: a float unit with M = n−3−es mantissa bits: multiplier from
//!   fp16 by (M+1)²/121, adder from fp16 by n/16 (decode/encode overhead not modelled);
//! * flex16+5: integer 16×16 multiply and 16-bit add (the shared exponent is
//!   handled once per tensor, not per MAC);
//! * int × float: weights are dequantised, the MAC runs in the float format.

use crate::horowitz::{self, Cost};
use crate::{EnergyError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
    Int(u32),
    Posit { n: u32, es: u32 },
    Flex16,
}

impl Precision {
    /// Storage bits per value (what memory traffic is made of).
    pub fn bits(self) -> u32 {
        match self {
            Precision::Fp32 => 32,
            Precision::Fp16 | Precision::Bf16 | Precision::Flex16 => 16,
            Precision::Int(b) => b,
            Precision::Posit { n, .. } => n,
        }
    }

    /// Stored mantissa bits of float-like formats (None for integers).
    pub fn mantissa_bits(self) -> Option<u32> {
        match self {
            Precision::Fp32 => Some(23),
            Precision::Fp16 => Some(10),
            Precision::Bf16 => Some(7),
            Precision::Posit { n, es } => Some(n.saturating_sub(3 + es)),
            Precision::Int(_) | Precision::Flex16 => None,
        }
    }

    fn integer_bits(self) -> Option<u32> {
        match self {
            Precision::Int(b) => Some(b),
            Precision::Flex16 => Some(16),
            _ => None,
        }
    }

    fn float_mult(self) -> Cost {
        match self {
            Precision::Fp32 => horowitz::FP32_MULT,
            Precision::Fp16 => horowitz::FP16_MULT,
            _ => {
                let m = self.mantissa_bits().unwrap_or(10);
                let f = horowitz::float_multiplier_full_adders(m) as f64
                    / horowitz::float_multiplier_full_adders(10) as f64;
                Cost {
                    pj: horowitz::FP16_MULT.pj * f,
                    um2: horowitz::FP16_MULT.um2 * f,
                }
            }
        }
    }

    fn float_add(self) -> Cost {
        match self {
            Precision::Fp32 => horowitz::FP32_ADD,
            Precision::Posit { n, .. } => Cost {
                pj: horowitz::FP16_ADD.pj * n as f64 / 16.0,
                um2: horowitz::FP16_ADD.um2 * n as f64 / 16.0,
            },
            _ => horowitz::FP16_ADD,
        }
    }
}

/// Cost of one multiply-accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MacCost {
    pub mult_pj: f64,
    pub add_pj: f64,
    pub mult_um2: f64,
    pub add_um2: f64,
}

impl MacCost {
    pub fn pj(&self) -> f64 {
        self.mult_pj + self.add_pj
    }
    pub fn um2(&self) -> f64 {
        self.mult_um2 + self.add_um2
    }
}

/// MAC cost for weights in `w` and activations in `a`.
pub fn mac(w: Precision, a: Precision) -> MacCost {
    let (m, ad) = match (w.integer_bits(), a.integer_bits()) {
        (Some(wb), Some(ab)) => (horowitz::int_mult(wb, ab), horowitz::int_add(wb.max(ab))),
        _ => {
            // the float-like side(s) decide; the wider wins, ties go to the activations
            let f = match (w.integer_bits(), a.integer_bits()) {
                (Some(_), None) => a,
                (None, Some(_)) => w,
                _ => {
                    if w.bits() > a.bits() {
                        w
                    } else {
                        a
                    }
                }
            };
            (f.float_mult(), f.float_add())
        }
    };
    MacCost {
        mult_pj: m.pj,
        add_pj: ad.pj,
        mult_um2: m.um2,
        add_um2: ad.um2,
    }
}

impl FromStr for Precision {
    type Err = EnergyError;
    fn from_str(s: &str) -> Result<Precision> {
        let l = s.trim().to_ascii_lowercase();
        let bad = || EnergyError::Precision(s.to_string());
        Ok(match l.as_str() {
            "fp32" | "f32" | "float32" => Precision::Fp32,
            "fp16" | "f16" | "float16" => Precision::Fp16,
            "bf16" | "bfloat16" => Precision::Bf16,
            "flex16" | "flex16+5" => Precision::Flex16,
            _ => {
                if let Some(b) = l.strip_prefix("int").or_else(|| l.strip_prefix("uint")) {
                    let b: u32 = b.parse().map_err(|_| bad())?;
                    if !(1..=32).contains(&b) {
                        return Err(bad());
                    }
                    Precision::Int(b)
                } else if let Some(rest) = l.strip_prefix("posit") {
                    // positN (es = 2, the 2022 standard) or positNeE
                    let (n, es) = match rest.split_once('e') {
                        Some((n, e)) => {
                            (n.parse().map_err(|_| bad())?, e.parse().map_err(|_| bad())?)
                        }
                        None => (rest.parse().map_err(|_| bad())?, 2),
                    };
                    if !(2..=32).contains(&n) || es > 4 {
                        return Err(bad());
                    }
                    Precision::Posit { n, es }
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precision::Fp32 => f.write_str("fp32"),
            Precision::Fp16 => f.write_str("fp16"),
            Precision::Bf16 => f.write_str("bf16"),
            Precision::Int(b) => write!(f, "int{b}"),
            Precision::Posit { n, es } => write!(f, "posit{n}e{es}"),
            Precision::Flex16 => f.write_str("flex16"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_mac_is_twenty_times_cheaper_than_fp32() {
        let i8m = mac(Precision::Int(8), Precision::Int(8)).pj();
        let f32m = mac(Precision::Fp32, Precision::Fp32).pj();
        assert!((i8m - 0.23).abs() < 1e-12);
        assert!((f32m - 4.6).abs() < 1e-12);
        assert!((f32m / i8m - 20.0).abs() < 1e-9);
        assert!((mac(Precision::Fp16, Precision::Fp16).pj() - 1.5).abs() < 1e-12);
    }

    #[test]
    fn float_multiplier_scaling_by_mantissa() {
        let bf = mac(Precision::Bf16, Precision::Bf16);
        assert!((bf.mult_pj - 1.1 * 64.0 / 121.0).abs() < 1e-12);
        assert!((bf.mult_um2 - 1640.0 * 64.0 / 121.0).abs() < 1e-9);
        // posit16 es1: M = 12 → 169 full adders
        let p = mac(
            Precision::Posit { n: 16, es: 1 },
            Precision::Posit { n: 16, es: 1 },
        );
        assert!((p.mult_pj - 1.1 * 169.0 / 121.0).abs() < 1e-12);
        // mixed: int4 weights with fp16 activations compute in fp16
        assert_eq!(
            mac(Precision::Int(4), Precision::Fp16),
            mac(Precision::Fp16, Precision::Fp16)
        );
        // w4a8 integer MAC: 4×8 multiplier, 8-bit add
        assert!((mac(Precision::Int(4), Precision::Int(8)).pj() - (0.1 + 0.03)).abs() < 1e-12);
    }

    #[test]
    fn parses_names() {
        assert_eq!("int4".parse::<Precision>().unwrap(), Precision::Int(4));
        assert_eq!("FP32".parse::<Precision>().unwrap(), Precision::Fp32);
        assert_eq!(
            "posit8e0".parse::<Precision>().unwrap(),
            Precision::Posit { n: 8, es: 0 }
        );
        assert_eq!(
            "posit16".parse::<Precision>().unwrap(),
            Precision::Posit { n: 16, es: 2 }
        );
        assert!("int0".parse::<Precision>().is_err());
        assert!("posit8e5".parse::<Precision>().is_err());
        assert!("fp8"
            .parse::<Precision>()
            .unwrap_err()
            .to_string()
            .contains("fp8"));
    }
}
