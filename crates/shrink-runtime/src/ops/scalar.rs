//! Per-element arithmetic with ONNX semantics for every numeric element type.
//!
//! Integers wrap on overflow (as ONNX Runtime's C++ kernels do) and divide
//! truncating toward zero; half-precision floats compute in f32 and round once.
//! Division or remainder by an integer zero is rejected by the ops before the
//! kernel runs, so nothing here can panic.

use half::{bf16, f16};
use shrink_tensor::Element;

/// What the generic elementwise, unary and reduction code needs from an element.
pub(crate) trait Scalar: Element + PartialOrd + std::fmt::Debug {
    const IS_FLOAT: bool;
    const ZERO: Self;
    const ONE: Self;
    /// Smallest and largest finite value (-inf/+inf for floats).
    const LOWEST: Self;
    const HIGHEST: Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// Truncating for integers; the caller guarantees a non-zero integer divisor.
    fn div(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (Python's `%`, ONNX `Mod` fmod=0).
    fn floor_mod(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (C's `fmod`, ONNX `Mod` fmod=1).
    fn trunc_mod(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn to_f64(self) -> f64;
    /// Rounds floats; saturates and truncates toward zero for integers.
    fn from_f64(x: f64) -> Self;
    fn is_nan(self) -> bool;
}

macro_rules! float_scalar {
    ($t:ty, $to:expr, $from:expr) => {
        impl Scalar for $t {
            const IS_FLOAT: bool = true;
            const ZERO: Self = <$t>::ZERO_CONST;
            const ONE: Self = <$t>::ONE_CONST;
            const LOWEST: Self = <$t>::NEG_INF_CONST;
            const HIGHEST: Self = <$t>::INF_CONST;
            fn add(self, o: Self) -> Self {
                self + o
            }
            fn sub(self, o: Self) -> Self {
                self - o
            }
            fn mul(self, o: Self) -> Self {
                self * o
            }
            fn div(self, o: Self) -> Self {
                self / o
            }
            fn floor_mod(self, o: Self) -> Self {
                let r = self % o;
                if r != Self::ZERO && ((r < Self::ZERO) != (o < Self::ZERO)) {
                    r + o
                } else {
                    r
                }
            }
            fn trunc_mod(self, o: Self) -> Self {
                self % o
            }
            fn neg(self) -> Self {
                -self
            }
            fn abs(self) -> Self {
                if self < Self::ZERO {
                    -self
                } else {
                    self
                }
            }
            fn to_f64(self) -> f64 {
                ($to)(self)
            }
            fn from_f64(x: f64) -> Self {
                ($from)(x)
            }
            fn is_nan(self) -> bool {
                self.to_f64().is_nan()
            }
        }
    };
}

/// Constants spelled the same for every float type, so one macro covers all four.
trait FloatConsts {
    const ZERO_CONST: Self;
    const ONE_CONST: Self;
    const NEG_INF_CONST: Self;
    const INF_CONST: Self;
}
impl FloatConsts for f32 {
    const ZERO_CONST: Self = 0.0;
    const ONE_CONST: Self = 1.0;
    const NEG_INF_CONST: Self = f32::NEG_INFINITY;
    const INF_CONST: Self = f32::INFINITY;
}
impl FloatConsts for f64 {
    const ZERO_CONST: Self = 0.0;
    const ONE_CONST: Self = 1.0;
    const NEG_INF_CONST: Self = f64::NEG_INFINITY;
    const INF_CONST: Self = f64::INFINITY;
}
impl FloatConsts for f16 {
    const ZERO_CONST: Self = f16::ZERO;
    const ONE_CONST: Self = f16::ONE;
    const NEG_INF_CONST: Self = f16::NEG_INFINITY;
    const INF_CONST: Self = f16::INFINITY;
}
impl FloatConsts for bf16 {
    const ZERO_CONST: Self = bf16::ZERO;
    const ONE_CONST: Self = bf16::ONE;
    const NEG_INF_CONST: Self = bf16::NEG_INFINITY;
    const INF_CONST: Self = bf16::INFINITY;
}

float_scalar!(f32, |x: f32| x as f64, |x: f64| x as f32);
float_scalar!(f64, |x: f64| x, |x: f64| x);
float_scalar!(f16, |x: f16| x.to_f64(), f16::from_f64);
float_scalar!(bf16, |x: bf16| x.to_f64(), bf16::from_f64);

macro_rules! int_scalar {
    ($t:ty) => {
        impl Scalar for $t {
            const IS_FLOAT: bool = false;
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            fn div(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_div(o)
                }
            }
            fn floor_mod(self, o: Self) -> Self {
                let r = self.trunc_mod(o);
                #[allow(unused_comparisons)]
                if r != 0 && ((r < 0) != (o < 0)) {
                    r.wrapping_add(o)
                } else {
                    r
                }
            }
            fn trunc_mod(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_rem(o)
                }
            }
            fn neg(self) -> Self {
                (0 as $t).wrapping_sub(self)
            }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self {
                if self < 0 {
                    self.neg()
                } else {
                    self
                }
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn is_nan(self) -> bool {
                false
            }
        }
    };
}
int_scalar!(i8);
int_scalar!(u8);
int_scalar!(i16);
int_scalar!(u16);
int_scalar!(i32);
int_scalar!(u32);
int_scalar!(i64);
int_scalar!(u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod_follows_python_and_c() {
        assert_eq!((-4i32).floor_mod(3), 2);
        assert_eq!(4i32.floor_mod(-3), -2);
        assert_eq!((-4i32).trunc_mod(3), -1);
        assert_eq!((-4.5f32).floor_mod(2.0), 1.5);
        assert_eq!((-4.5f32).trunc_mod(2.0), -0.5);
        assert_eq!(7u8.floor_mod(3), 1);
    }

    #[test]
    fn integer_arithmetic_wraps_and_truncates() {
        assert_eq!(250u8.add(10), 4);
        assert_eq!((-7i32).div(2), -3);
        assert_eq!(i8::MIN.div(-1), i8::MIN, "overflowing division wraps");
        assert_eq!(5i8.div(0), 0, "never reached by ops, but must not panic");
        assert_eq!(Scalar::abs(i8::MIN), i8::MIN);
        assert_eq!(f16::from_f32(1.5).add(f16::from_f32(2.25)).to_f32(), 3.75);
    }
}
