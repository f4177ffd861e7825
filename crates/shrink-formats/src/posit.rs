//! Posit⟨n, es⟩ arithmetic (Gustafson; Posit Standard 2022), n in 2..=32, es in 0..=4.
//!
//! Bit layout of an n-bit posit (two's complement for negative values):
//!
//! ```text
//!   n-1   n-2 ...                                     0
//!  ┌────┬──────────────────┬───────────┬──────────────┐
//!  │ s  │ regime r…r r̄     │ exponent  │ fraction     │
//!  └────┴──────────────────┴───────────┴──────────────┘
//!        run of m equal bits  es bits     what is left
//!        ended by its opposite (may be cut off at the right end)
//!  k = m−1 for a run of 1s, −m for a run of 0s;  value = 2^(k·2^es + e) · 1.f
//!  0…0 = zero, 10…0 = NaR (not a real)
//! ```
//!
//! Rounding follows the standard: the exact result is written as an unbounded
//! bit string (regime, exponent, fraction) and rounded to n bits, nearest with
//! ties to even on the bit string; results never round to zero or NaR (they
//! saturate at ±minpos / ±maxpos). Because exponent bits can be cut off, the
//! rounding boundary between two neighbouring posits is the value of the
//! (n+1)-bit posit between them — what the tests check independently.
//!
//! Add and mul compute the exact result (u128 significands plus a sticky bit)
//! and round once. The [`Quire`] is a fixed-point accumulator wide enough to
//! hold any sum of posit products exactly, so a dot product rounds only once.

use crate::{check_shape, Format, FormatError, Result};
use serde::{Deserialize, Serialize};

/// A posit configuration; codes are `u32` holding the n-bit pattern in the low bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posit {
    n: u32,
    es: u32,
}

/// A decoded non-zero real posit: `(−1)^neg · sig · 2^exp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts {
    neg: bool,
    sig: u64,
    exp: i32,
}

enum Decoded {
    Zero,
    NaR,
    Real(Parts),
}

impl Posit {
    pub fn new(n: u32, es: u32) -> Result<Posit> {
        if !(2..=32).contains(&n) || es > 4 {
            return Err(FormatError::Posit { n, es });
        }
        Ok(Posit { n, es })
    }
    pub fn n(&self) -> u32 {
        self.n
    }
    pub fn es(&self) -> u32 {
        self.es
    }
    pub fn mask(&self) -> u32 {
        if self.n == 32 {
            u32::MAX
        } else {
            (1u32 << self.n) - 1
        }
    }
    /// The NaR (not a real) code.
    pub fn nar(&self) -> u32 {
        1u32 << (self.n - 1)
    }
    pub fn maxpos(&self) -> u32 {
        self.nar() - 1
    }
    /// log2(maxpos) = (n−2)·2^es.
    pub fn max_scale(&self) -> i32 {
        (self.n as i32 - 2) << self.es
    }

    fn negate(&self, code: u32) -> u32 {
        code.wrapping_neg() & self.mask()
    }

    fn decode_parts(&self, code: u32) -> Decoded {
        let code = code & self.mask();
        if code == 0 {
            return Decoded::Zero;
        }
        if code == self.nar() {
            return Decoded::NaR;
        }
        let neg = code >> (self.n - 1) & 1 == 1;
        let mag = if neg { self.negate(code) } else { code };
        // the n−1 bits after the sign, left-aligned
        let mut b = (mag as u64) << (65 - self.n);
        let body = self.n - 1;
        let ones = b >> 63 == 1;
        let m = if ones {
            b.leading_ones()
        } else {
            b.leading_zeros()
        }
        .min(body);
        let k = if ones { m as i32 - 1 } else { -(m as i32) };
        let used = (m + 1).min(body);
        let rem = body - used;
        b = if used >= 64 { 0 } else { b << used };
        let e = if self.es == 0 {
            0
        } else {
            (b >> (64 - self.es)) as i32
        };
        b <<= self.es;
        let fb = rem.saturating_sub(self.es);
        let frac = if fb == 0 { 0 } else { b >> (64 - fb) };
        Decoded::Real(Parts {
            neg,
            sig: (1u64 << fb) | frac,
            exp: (k << self.es) + e - fb as i32,
        })
    }

    /// Rounds `(−1)^neg · (sig · 2^exp + sticky·ε)` to the nearest posit, where
    /// `sticky` says that non-zero bits lie below `sig`'s last bit.
    fn round_exact(&self, neg: bool, sig: u128, exp: i32, sticky: bool) -> u32 {
        if sig == 0 {
            // only reachable with sticky set: a positive amount below any posit
            return if sticky { self.sign(neg, 1) } else { 0 };
        }
        let p = 127 - sig.leading_zeros() as i32;
        let scale = exp + p;
        let maxs = self.max_scale();
        if scale > maxs {
            return self.sign(neg, self.maxpos());
        }
        if scale < -maxs {
            return self.sign(neg, 1);
        }
        let es = self.es as i32;
        let k = scale >> es;
        let e = (scale - (k << es)) as u128;
        let (regime, len_r) = if k >= 0 {
            (((1u128 << (k + 1)) - 1) << 1, k + 2)
        } else {
            (1u128, -k + 1)
        };
        // fraction below the hidden bit, left-aligned in 128 bits
        let frac = sig ^ (1u128 << p);
        let fa = if p == 0 { 0 } else { frac << (128 - p) };
        let top = fa >> 64;
        let sticky = sticky || (fa as u64) != 0;
        let mut v = regime << (128 - len_r);
        if es > 0 {
            v |= e << (128 - len_r - es);
        }
        v |= top << (64 - len_r - es);
        let keep = self.n - 1;
        let mut r = (v >> (128 - keep)) as u32;
        let guard = (v >> (127 - keep)) & 1 == 1;
        let rest = sticky || v & ((1u128 << (127 - keep)) - 1) != 0;
        if guard && (rest || r & 1 == 1) {
            r += 1;
        }
        self.sign(neg, r)
    }

    fn sign(&self, neg: bool, mag: u32) -> u32 {
        if neg {
            self.negate(mag)
        } else {
            mag
        }
    }

    /// Correctly rounded conversion; NaN and ±∞ become NaR.
    pub fn from_f64(&self, x: f64) -> u32 {
        if !x.is_finite() {
            return self.nar();
        }
        if x == 0.0 {
            return 0;
        }
        let bits = x.to_bits();
        let be = ((bits >> 52) & 0x7ff) as i32;
        let mant = bits & ((1u64 << 52) - 1);
        let (sig, exp) = if be == 0 {
            (mant, -1074)
        } else {
            (mant | (1u64 << 52), be - 1075)
        };
        self.round_exact(x < 0.0, sig as u128, exp, false)
    }

    /// Correctly rounded (f32 → f64 is exact).
    pub fn from_f32(&self, x: f32) -> u32 {
        self.from_f64(x as f64)
    }

    /// Exact: every posit with n ≤ 32, es ≤ 4 is an f64 (≤ 30 significant bits, |scale| ≤ 480).
    pub fn to_f64(&self, code: u32) -> f64 {
        match self.decode_parts(code) {
            Decoded::Zero => 0.0,
            Decoded::NaR => f64::NAN,
            Decoded::Real(p) => {
                let v = p.sig as f64 * pow2(p.exp);
                if p.neg {
                    -v
                } else {
                    v
                }
            }
        }
    }

    pub fn to_f32(&self, code: u32) -> f32 {
        self.to_f64(code) as f32
    }

    pub fn mul(&self, a: u32, b: u32) -> u32 {
        match (self.decode_parts(a), self.decode_parts(b)) {
            (Decoded::NaR, _) | (_, Decoded::NaR) => self.nar(),
            (Decoded::Zero, _) | (_, Decoded::Zero) => 0,
            (Decoded::Real(x), Decoded::Real(y)) => self.round_exact(
                x.neg != y.neg,
                x.sig as u128 * y.sig as u128,
                x.exp + y.exp,
                false,
            ),
        }
    }

    pub fn add(&self, a: u32, b: u32) -> u32 {
        let (x, y) = match (self.decode_parts(a), self.decode_parts(b)) {
            (Decoded::NaR, _) | (_, Decoded::NaR) => return self.nar(),
            (Decoded::Zero, _) => return b & self.mask(),
            (_, Decoded::Zero) => return a & self.mask(),
            (Decoded::Real(x), Decoded::Real(y)) => (x, y),
        };
        // Normalise both significands to bit 124 (room for a carry), larger magnitude first.
        let norm = |p: Parts| {
            let msb = 63 - p.sig.leading_zeros() as i32;
            ((p.sig as u128) << (124 - msb), p.exp + msb - 124, p.neg)
        };
        let (mut a, mut b) = (norm(x), norm(y));
        if (b.1, b.0) > (a.1, a.0) {
            std::mem::swap(&mut a, &mut b);
        }
        let d = (a.1 - b.1) as u32;
        let (bs, sticky) = if d >= 125 {
            (0, true)
        } else {
            (b.0 >> d, b.0 & ((1u128 << d) - 1) != 0)
        };
        if a.2 == b.2 {
            self.round_exact(a.2, a.0 + bs, a.1, sticky)
        } else {
            let mut s = a.0 - bs;
            if sticky {
                // exact = s − δ with 0 < δ < 1 unit: s − 1 plus a non-zero remainder
                s -= 1;
            }
            if s == 0 && !sticky {
                return 0;
            }
            self.round_exact(a.2, s, a.1, sticky)
        }
    }

    pub fn neg(&self, a: u32) -> u32 {
        self.negate(a & self.mask())
    }

    pub fn sub(&self, a: u32, b: u32) -> u32 {
        self.add(a, self.neg(b))
    }

    /// Dot product accumulated exactly in a quire, rounded once.
    pub fn dot(&self, a: &[u32], b: &[u32]) -> u32 {
        let mut q = Quire::new(*self);
        for (&x, &y) in a.iter().zip(b) {
            q.add_product(x, y);
        }
        q.to_posit()
    }
}

fn pow2(e: i32) -> f64 {
    // exact for |e| <= 1022, which covers every posit (|exp| <= 480 + 30)
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Exact accumulator of posit products: two's-complement fixed point, 64-bit
/// limbs, least significant limb first. The lowest bit weighs
/// 2^(−2·max_scale − 64), below minpos² and every product's last bit; 64
/// bits of headroom above maxpos² absorb carries of ≥ 2^63 additions.
#[derive(Debug, Clone)]
pub struct Quire {
    posit: Posit,
    limbs: Vec<u64>,
    /// weight of bit 0 is 2^(-offset)
    offset: i32,
    nar: bool,
}

impl Quire {
    pub fn new(posit: Posit) -> Quire {
        let offset = 2 * posit.max_scale() + 64;
        let width = 2 * offset + 2;
        Quire {
            posit,
            limbs: vec![0; (width as usize).div_ceil(64)],
            offset,
            nar: false,
        }
    }

    pub fn clear(&mut self) {
        self.limbs.fill(0);
        self.nar = false;
    }

    pub fn add_product(&mut self, a: u32, b: u32) {
        match (self.posit.decode_parts(a), self.posit.decode_parts(b)) {
            (Decoded::NaR, _) | (_, Decoded::NaR) => self.nar = true,
            (Decoded::Zero, _) | (_, Decoded::Zero) => {}
            (Decoded::Real(x), Decoded::Real(y)) => {
                let m = x.sig as u128 * y.sig as u128;
                self.accumulate(x.neg != y.neg, m, x.exp + y.exp);
            }
        }
    }

    /// Adds one posit (a product with 1).
    pub fn add_posit(&mut self, a: u32) {
        match self.posit.decode_parts(a) {
            Decoded::NaR => self.nar = true,
            Decoded::Zero => {}
            Decoded::Real(x) => self.accumulate(x.neg, x.sig as u128, x.exp),
        }
    }

    fn accumulate(&mut self, neg: bool, m: u128, exp: i32) {
        let shift = (exp + self.offset) as usize;
        let (limb, bit) = (shift / 64, shift % 64);
        // m < 2^62 fits in 3 limbs after a shift below 64
        let wide = [
            (m << bit) as u64,
            ((m << bit) >> 64) as u64,
            if bit == 0 {
                0
            } else {
                (m >> (128 - bit)) as u64
            },
        ];
        let mut carry = 0u64;
        let n = self.limbs.len();
        for i in limb..n {
            let w = wide.get(i - limb).copied().unwrap_or(0);
            let w = if neg { !w } else { w };
            // two's complement subtraction: add !m and 1 at the lowest limb
            let extra = if neg && i == limb { 1 } else { 0 };
            let (s1, c1) = self.limbs[i].overflowing_add(w);
            let (s2, c2) = s1.overflowing_add(carry + extra);
            self.limbs[i] = s2;
            carry = (c1 as u64) + (c2 as u64);
            if i >= limb + 3 && !neg && carry == 0 {
                break;
            }
        }
        // For a negative product the loop adds !(m·2^shift) + 1 from `limb` up: the
        // limbs below `limb` of m·2^shift are zero, so in full-width two's complement
        // their complement is all ones and the final +1 ripples through them as a
        // carry into `limb` leaving them unchanged — the `extra` 1 above.
    }

    fn is_negative(&self) -> bool {
        self.limbs.last().is_some_and(|&l| l >> 63 == 1)
    }

    pub fn to_posit(&self) -> u32 {
        if self.nar {
            return self.posit.nar();
        }
        let neg = self.is_negative();
        let mag: Vec<u64> = if neg {
            // two's complement negation
            let mut out = Vec::with_capacity(self.limbs.len());
            let mut carry = 1u64;
            for &l in &self.limbs {
                let (s, c) = (!l).overflowing_add(carry);
                out.push(s);
                carry = c as u64;
            }
            out
        } else {
            self.limbs.clone()
        };
        let Some(top) = mag.iter().rposition(|&l| l != 0) else {
            return 0;
        };
        // 128-bit window ending at the top non-zero limb; anything below is sticky
        let hi = mag[top] as u128;
        let lo = if top >= 1 { mag[top - 1] as u128 } else { 0 };
        let sig = (hi << 64) | lo;
        let sticky = top >= 2 && mag[..top - 1].iter().any(|&l| l != 0);
        let exp = (top as i32 - 1) * 64 - self.offset;
        self.posit.round_exact(neg, sig, exp, sticky)
    }
}

/// Posit codes of a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositTensor {
    pub shape: Vec<usize>,
    pub posit: Posit,
    pub codes: Vec<u32>,
}

impl Format for Posit {
    type Encoded = PositTensor;
    fn name(&self) -> String {
        format!("posit{}/es{}", self.n, self.es)
    }
    fn bits_per_value(&self) -> f64 {
        self.n as f64
    }
    fn encode(&self, values: &[f32], shape: &[usize]) -> Result<PositTensor> {
        check_shape(values.len(), shape, "encode as posit")?;
        Ok(PositTensor {
            shape: shape.to_vec(),
            posit: *self,
            codes: values.iter().map(|&x| self.from_f32(x)).collect(),
        })
    }
    fn decode(&self, e: &PositTensor) -> Result<Vec<f32>> {
        Ok(e.codes.iter().map(|&c| e.posit.to_f32(c)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let p = Posit::new(8, 0).unwrap();
        assert_eq!(p.to_f64(0x40), 1.0);
        assert_eq!(p.to_f64(0x7f), 64.0);
        assert_eq!(p.to_f64(0x01), 1.0 / 64.0);
        assert_eq!(p.to_f64(0xc0), -1.0);
        assert!(p.to_f64(0x80).is_nan());
        let p16 = Posit::new(16, 1).unwrap();
        assert_eq!(p16.to_f64(0x7fff), 2f64.powi(28));
        assert_eq!(p16.from_f64(1.0), 0x4000);
        let p32 = Posit::new(32, 2).unwrap();
        assert_eq!(p32.to_f64(0x7fff_ffff), 2f64.powi(120));
        assert_eq!(p32.from_f64(f64::NAN), 0x8000_0000);
        assert_eq!(p32.from_f64(1e300), 0x7fff_ffff, "saturates, never NaR");
        assert_eq!(p32.from_f64(-1e-300), 0xffff_ffff, "−minpos, never zero");
        let p = Posit::new(32, 4).unwrap();
        assert_eq!(p.to_f64(1), 2f64.powi(-480));
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(Posit::new(8, 5), Err(FormatError::Posit { n: 8, es: 5 }));
        assert!(Posit::new(33, 2).is_err());
        assert!(Posit::new(1, 0).is_err());
        assert!(Posit::new(16, 1).unwrap().encode(&[], &[0]).is_err());
    }

    #[test]
    fn quire_is_exact_where_rounding_each_step_is_not() {
        let p = Posit::new(16, 1).unwrap();
        let big = p.from_f64(4096.0);
        let one = p.from_f64(1.0);
        let neg_big = p.neg(big);
        // 4096 + 1 rounds back to 4096 in posit16, so a naive sum loses the 1s
        let a = [big, one, one, one, one, neg_big];
        let b = [one; 6];
        assert_eq!(p.to_f64(p.dot(&a, &b)), 4.0);
        let naive = a.iter().fold(0, |acc, &x| p.add(acc, x));
        assert_eq!(p.to_f64(naive), 0.0);
    }
}
