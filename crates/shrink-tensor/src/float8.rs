//! The four 8-bit float formats of ONNX (opset 19+): E4M3FN, E4M3FNUZ, E5M2 and
//! E5M2FNUZ, as raw one-byte codes.
//!
//! shrink keeps float8 tensors as their codes (one `u8` per element) because
//! that is what they are for: compact storage of weights and activations. All
//! arithmetic happens after [`Float8::decode`] to f32 (exact: every float8
//! value is an f32) and results come back through [`Float8::encode`], which
//! rounds correctly (to nearest, ties to even) and applies ONNX's `saturate`
//! rule. The formats differ only in a few parameters, so one implementation
//! driven by them covers all four; the special encodings follow the
//! definitions of `ml_dtypes` and the ONNX Cast specification:
//!
//! | format   | bias | max finite | inf          | NaN              | -0   |
//! |----------|------|------------|--------------|------------------|------|
//! | E4M3FN   | 7    | 448        | none         | S.1111.111       | 0x80 |
//! | E4M3FNUZ | 8    | 240        | none         | 0x80 only        | none |
//! | E5M2     | 15   | 57344      | S.11111.00   | S.11111.{01..11} | 0x80 |
//! | E5M2FNUZ | 16   | 57344      | none         | 0x80 only        | none |

use crate::DType;

/// One of the float8 formats; see the module documentation for their encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Float8 {
    E4M3FN,
    E4M3FNUZ,
    E5M2,
    E5M2FNUZ,
}

impl Float8 {
    pub const ALL: [Float8; 4] = [
        Float8::E4M3FN,
        Float8::E4M3FNUZ,
        Float8::E5M2,
        Float8::E5M2FNUZ,
    ];

    /// The format of a float8 [`DType`], `None` for every other type.
    pub fn of(dtype: DType) -> Option<Float8> {
        match dtype {
            DType::F8E4M3FN => Some(Float8::E4M3FN),
            DType::F8E4M3FNUZ => Some(Float8::E4M3FNUZ),
            DType::F8E5M2 => Some(Float8::E5M2),
            DType::F8E5M2FNUZ => Some(Float8::E5M2FNUZ),
            _ => None,
        }
    }

    pub fn dtype(self) -> DType {
        match self {
            Float8::E4M3FN => DType::F8E4M3FN,
            Float8::E4M3FNUZ => DType::F8E4M3FNUZ,
            Float8::E5M2 => DType::F8E5M2,
            Float8::E5M2FNUZ => DType::F8E5M2FNUZ,
        }
    }

    /// Mantissa (fraction) bits.
    fn man_bits(self) -> u32 {
        match self {
            Float8::E4M3FN | Float8::E4M3FNUZ => 3,
            Float8::E5M2 | Float8::E5M2FNUZ => 2,
        }
    }

    fn bias(self) -> i32 {
        match self {
            Float8::E4M3FN => 7,
            Float8::E4M3FNUZ => 8,
            Float8::E5M2 => 15,
            Float8::E5M2FNUZ => 16,
        }
    }

    /// "Unsigned zero" formats: 0x80 is the only NaN and there is no -0.
    fn is_uz(self) -> bool {
        matches!(self, Float8::E4M3FNUZ | Float8::E5M2FNUZ)
    }

    /// The code (without sign) of the largest finite value.
    fn max_mag(self) -> u8 {
        match self {
            Float8::E4M3FN => 0x7E,
            Float8::E5M2 => 0x7B,
            Float8::E4M3FNUZ | Float8::E5M2FNUZ => 0x7F,
        }
    }

    /// The largest finite value (448, 240, 57344, 57344).
    pub fn max_finite(self) -> f32 {
        self.decode(self.max_mag())
    }

    /// The canonical NaN code for a value of the given sign.
    fn nan(self, negative: bool) -> u8 {
        if self.is_uz() {
            0x80
        } else {
            0x7F | if negative { 0x80 } else { 0 }
        }
    }

    /// Whether `code` is a NaN.
    pub fn is_nan(self, code: u8) -> bool {
        match self {
            Float8::E4M3FN => code & 0x7F == 0x7F,
            Float8::E5M2 => code & 0x7F > 0x7C,
            Float8::E4M3FNUZ | Float8::E5M2FNUZ => code == 0x80,
        }
    }

    /// The exact value of `code`.
    pub fn decode(self, code: u8) -> f32 {
        if self.is_nan(code) {
            return f32::NAN;
        }
        let negative = code & 0x80 != 0;
        let mag = code & 0x7F;
        if self == Float8::E5M2 && mag == 0x7C {
            return if negative {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            };
        }
        let m = self.man_bits();
        let exp_field = (mag >> m) as i32;
        let man = (mag & ((1 << m) - 1)) as i32;
        // Subnormals share the exponent of the smallest normal binade.
        let (significand, exp) = if exp_field == 0 {
            (man, 1 - self.bias() - m as i32)
        } else {
            (man + (1 << m), exp_field - self.bias() - m as i32)
        };
        // Both factors and the product are exact in f32 (|exp| <= 17).
        let v = significand as f32 * 2f32.powi(exp);
        if negative {
            -v
        } else {
            v
        }
    }

    /// `x` rounded to the nearest float8 code (ties to even).
    ///
    /// With `saturate`, values beyond the largest finite value (infinities
    /// included) become that value with their sign; without it they become
    /// infinity in E5M2 and NaN in the formats that have no infinity. This is
    /// the ONNX Cast rule. Rounding is decided on the unbounded exponent range,
    /// so e.g. for E4M3FN 464 (halfway between 448 and the nonexistent 480)
    /// rounds to 448 and anything above it overflows.
    pub fn encode(self, x: f64, saturate: bool) -> u8 {
        if x.is_nan() {
            return self.nan(x.is_sign_negative());
        }
        let negative = x.is_sign_negative();
        let sign: u8 = if negative { 0x80 } else { 0 };
        let overflow = || {
            if saturate {
                sign | self.max_mag()
            } else if self == Float8::E5M2 {
                sign | 0x7C
            } else {
                self.nan(negative)
            }
        };
        let a = x.abs();
        if a.is_infinite() {
            return overflow();
        }
        let m = self.man_bits() as i32;
        let emin = 1 - self.bias();
        // Exponent of `a`'s binade (exact from the bits; subnormal f64s are far
        // below every float8 and land in the `emin` quantum anyway).
        let e = if a == 0.0 {
            emin
        } else {
            ((a.to_bits() >> 52) as i32 - 1023).max(emin)
        };
        if e > 20 {
            // Far beyond 57344, whatever the format.
            return overflow();
        }
        // `a / quantum` is exact (power-of-two scaling in range); rounding it
        // to an integer is the one rounding step.
        let quantum = 2f64.powi(e - m);
        let n = (a / quantum).round_ties_even() as i64;
        // Normal: n in [2^m, 2^(m+1)] and the code is (e - emin) * 2^m + n,
        // which also carries correctly into the next binade; subnormal
        // (e == emin, n < 2^m) is the same formula with exponent field 0.
        let mag = (e - emin) as i64 * (1i64 << m) + n;
        if mag > self.max_mag() as i64 {
            return overflow();
        }
        if mag == 0 && self.is_uz() {
            return 0;
        }
        sign | mag as u8
    }

    /// [`Float8::encode`] of an f32.
    pub fn encode_f32(self, x: f32, saturate: bool) -> u8 {
        self.encode(x as f64, saturate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of a code from the textbook formula, written independently of
    /// `decode` (f64, powf, explicit special cases per format).
    fn reference(f: Float8, code: u8) -> f64 {
        let (e_bits, m_bits, bias) = match f {
            Float8::E4M3FN => (4, 3, 7),
            Float8::E4M3FNUZ => (4, 3, 8),
            Float8::E5M2 => (5, 2, 15),
            Float8::E5M2FNUZ => (5, 2, 16),
        };
        let s = if code >> 7 == 1 { -1.0 } else { 1.0 };
        let ef = ((code >> m_bits) & ((1 << e_bits) - 1)) as i32;
        let mf = (code & ((1 << m_bits) - 1)) as f64;
        match f {
            Float8::E4M3FN if ef == 15 && mf == 7.0 => return f64::NAN,
            Float8::E5M2 if ef == 31 && mf == 0.0 => return s * f64::INFINITY,
            Float8::E5M2 if ef == 31 => return f64::NAN,
            Float8::E4M3FNUZ | Float8::E5M2FNUZ if code == 0x80 => return f64::NAN,
            _ => {}
        }
        let frac = mf / 2f64.powi(m_bits);
        if ef == 0 {
            s * frac * 2f64.powf((1 - bias) as f64)
        } else {
            s * (1.0 + frac) * 2f64.powf((ef - bias) as f64)
        }
    }

    #[test]
    fn every_code_decodes_to_the_formula() {
        for f in Float8::ALL {
            for c in 0..=255u8 {
                let (got, want) = (f.decode(c) as f64, reference(f, c));
                assert!(
                    (got.is_nan() && want.is_nan()) || got == want,
                    "{f:?} {c:#04x}: {got} vs {want}"
                );
                assert_eq!(f.is_nan(c), want.is_nan(), "{f:?} {c:#04x}");
                if got == 0.0 {
                    assert_eq!(
                        got.is_sign_negative(),
                        c == 0x80,
                        "{f:?} {c:#04x} sign of 0"
                    );
                }
            }
        }
    }

    #[test]
    fn encode_inverts_decode_on_every_code() {
        for f in Float8::ALL {
            for c in 0..=255u8 {
                let v = f.decode(c);
                if v.is_nan() {
                    assert!(f.is_nan(f.encode_f32(v, false)));
                    continue;
                }
                if v.is_infinite() {
                    assert_eq!(f.encode_f32(v, false), c, "{f:?} {c:#04x}");
                    continue;
                }
                for sat in [false, true] {
                    assert_eq!(f.encode_f32(v, sat), c, "{f:?} {c:#04x} sat={sat}");
                }
            }
        }
    }

    /// Every midpoint between neighbouring finite codes rounds to the one with
    /// an even code (even mantissa), and a hair off the midpoint rounds to the
    /// nearer one; checked against the decoded neighbours, not the encoder.
    #[test]
    fn midpoints_round_to_even() {
        for f in Float8::ALL {
            for c in 0..f.max_mag() {
                let (lo, hi) = (f.decode(c) as f64, f.decode(c + 1) as f64);
                let mid = (lo + hi) / 2.0;
                let even = if c % 2 == 0 { c } else { c + 1 };
                assert_eq!(f.encode(mid, true), even, "{f:?} tie after {c:#04x}");
                let eps = (hi - lo) * 1e-6;
                assert_eq!(f.encode(mid - eps, true), c);
                assert_eq!(f.encode(mid + eps, true), c + 1);
                // Negative side mirrors, except that FNUZ has no -0.
                let neg = f.encode(-mid, true);
                if even == 0 && matches!(f, Float8::E4M3FNUZ | Float8::E5M2FNUZ) {
                    assert_eq!(neg, 0);
                } else {
                    assert_eq!(neg, even | 0x80, "{f:?} -tie after {c:#04x}");
                }
            }
        }
    }

    #[test]
    fn saturation_follows_the_onnx_cast_table() {
        for f in Float8::ALL {
            let max = f.max_finite() as f64;
            let max_code = f.encode(max, true);
            let max_neg = f.encode(-max, true);
            let beyond = [max * 1.25, 1e6, f64::INFINITY];
            for x in beyond {
                assert_eq!(f.encode(x, true), max_code, "{f:?} {x}");
                assert_eq!(f.encode(-x, true), max_neg, "{f:?} -{x}");
                let (p, n) = (f.decode(f.encode(x, false)), f.decode(f.encode(-x, false)));
                if f == Float8::E5M2 {
                    assert_eq!((p, n), (f32::INFINITY, f32::NEG_INFINITY), "{x}");
                } else {
                    assert!(p.is_nan() && n.is_nan(), "{f:?} {x}");
                }
            }
            assert!(f.decode(f.encode(f64::NAN, true)).is_nan());
        }
        assert_eq!(Float8::E4M3FN.max_finite(), 448.0);
        assert_eq!(Float8::E4M3FNUZ.max_finite(), 240.0);
        assert_eq!(Float8::E5M2.max_finite(), 57344.0);
        assert_eq!(Float8::E5M2FNUZ.max_finite(), 57344.0);
        // Just past the last tie stays finite; at the tie, even wins (448).
        assert_eq!(Float8::E4M3FN.encode(464.0, false), 0x7E);
        assert!(Float8::E4M3FN.is_nan(Float8::E4M3FN.encode(464.5, false)));
        // -0 keeps its sign where the format has one.
        assert_eq!(Float8::E4M3FN.encode(-0.0, true), 0x80);
        assert_eq!(Float8::E5M2FNUZ.encode(-0.0, true), 0x00);
        assert_eq!(Float8::E4M3FNUZ.encode(-1e-30, true), 0x00);
    }
}
