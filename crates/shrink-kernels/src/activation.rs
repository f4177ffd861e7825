//! Vectorised `exp` and `erf` over f32 slices (transformer activations:
//! GELU's erf, Softmax's exp), accurate to a few 1e-7 relative.
//!
//! - `exp(x) = 2ⁿ·e^r` with `n = round(x/ln 2)`, `r = x − n·ln 2` (ln 2 split
//!   in two so `r` is exact to f32), `e^r` a degree-7 Taylor polynomial on
//!   |r| ≤ ln2/2 (truncation < 2e-8), `2ⁿ` by `vscalefps` (handles overflow
//!   to ∞ and underflow to 0 without special cases).
//! - `erf(x)`: for |x| < 0.5 the odd Taylor series to x¹⁵ (truncation
//!   < 1e-9 relative); beyond, Abramowitz & Stegun 7.1.26,
//!   `1 − t·P(t)·e^{−x²}` with `t = 1/(1 + 0.3275911|x|)` (absolute error
//!   ≤ 1.5e-7, i.e. ≤ 3e-7 relative since erf ≥ 0.52 there), sign restored.
//!
//! The portable path evaluates the same formulas element by element, so
//! both paths agree to rounding; the tests compare them with libm's f64.

use crate::cpu::{self, Isa};
use crate::{check_len, Result};

const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// e^r Taylor coefficients 1/k!, k = 0..7.
const EXP_C: [f32; 8] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];
/// erf Taylor series: 2/√π · (−1)ᵏ / (k!·(2k+1)), k = 0..7 (coefficient of x^{2k+1}).
const ERF_SMALL: [f32; 8] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -0.376_126_4,
    0.112_837_92,
    -0.026_866_171,
    0.005_223_977_5,
    -0.000_854_832_7,
    0.000_120_553_3,
    -1.492_565e-5,
];
const AS_P: f32 = 0.327_591_1;
const AS_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152,
    1.061_405_4,
];

/// Scalar `e^x` by the same formula as the SIMD path.
pub fn exp_scalar(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(-104.0, 89.0);
    let n = (x * LOG2E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_C[7];
    for &c in EXP_C[..7].iter().rev() {
        p = p.mul_add(r, c);
    }
    // 2ⁿ in two steps so that n down to −150 stays representable.
    let n = n as i32;
    let (a, b) = (n / 2, n - n / 2);
    p * f32::from_bits(((a + 127) as u32) << 23) * f32::from_bits(((b + 127) as u32) << 23)
}

/// Scalar `erf(x)` by the same formula as the SIMD path.
pub fn erf_scalar(x: f32) -> f32 {
    let a = x.abs();
    if a < 0.5 {
        let z = x * x;
        let mut p = ERF_SMALL[7];
        for &c in ERF_SMALL[..7].iter().rev() {
            p = p.mul_add(z, c);
        }
        return x * p;
    }
    let t = 1.0 / AS_P.mul_add(a, 1.0);
    let mut p = AS_A[4];
    for &c in AS_A[..4].iter().rev() {
        p = p.mul_add(t, c);
    }
    let y = 1.0 - t * p * exp_scalar(-a * a);
    if x.is_nan() {
        x
    } else {
        y.copysign(x)
    }
}

/// `out[i] = e^{x[i]}` on the best path for this CPU.
pub fn exp(x: &[f32], out: &mut [f32]) -> Result<()> {
    exp_with(cpu::best(), x, out)
}

/// `out[i] = erf(x[i])` on the best path for this CPU.
pub fn erf(x: &[f32], out: &mut [f32]) -> Result<()> {
    erf_with(cpu::best(), x, out)
}

/// [`exp`] on a chosen path (lowered to what the CPU supports).
pub fn exp_with(isa: Isa, x: &[f32], out: &mut [f32]) -> Result<()> {
    check_len("exp output", x.len(), out.len())?;
    #[cfg(target_arch = "x86_64")]
    if cpu::clamp(isa) >= Isa::Avx512 {
        // SAFETY: AVX-512F present (clamped); lengths equal (checked).
        unsafe { avx512::map(x, out, |v| avx512::exp(v)) };
        return Ok(());
    }
    let _ = isa;
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = exp_scalar(v));
    Ok(())
}

/// [`erf`] on a chosen path (lowered to what the CPU supports).
pub fn erf_with(isa: Isa, x: &[f32], out: &mut [f32]) -> Result<()> {
    check_len("erf output", x.len(), out.len())?;
    #[cfg(target_arch = "x86_64")]
    if cpu::clamp(isa) >= Isa::Avx512 {
        // SAFETY: AVX-512F present (clamped); lengths equal (checked).
        unsafe { avx512::map(x, out, |v| avx512::erf(v)) };
        return Ok(());
    }
    let _ = isa;
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = erf_scalar(v));
    Ok(())
}

/// `e^{x − max}` in place over a row and its sum: the heart of Softmax.
pub fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if cpu::best() >= Isa::Avx512 {
        // SAFETY: AVX-512F present.
        return unsafe { avx512::exp_shifted_sum(row, max) };
    }
    let mut s = 0f32;
    for v in row.iter_mut() {
        *v = exp_scalar(*v - max);
        s += *v;
    }
    s
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Applies `f` 16 lanes at a time, the tail under a mask.
    ///
    /// # Safety
    /// AVX-512F available; `out.len() == x.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn map(x: &[f32], out: &mut [f32], f: impl Fn(__m512) -> __m512) {
        let n = x.len();
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n for both slices.
            _mm512_storeu_ps(op.add(i), f(_mm512_loadu_ps(xp.add(i))));
            i += 16;
        }
        if i < n {
            let m = ((1u32 << (n - i)) - 1) as u16;
            // SAFETY: masked lanes 0..n−i are inside both slices.
            let v = _mm512_maskz_loadu_ps(m, xp.add(i));
            _mm512_mask_storeu_ps(op.add(i), m, f(v));
        }
    }

    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn exp(x: __m512) -> __m512 {
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
            _mm512_set1_ps(89.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_C[7]);
        for &c in EXP_C[..7].iter().rev() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_scalef_ps(p, n);
        _mm512_mask_mov_ps(y, nan, _mm512_set1_ps(f32::NAN))
    }

    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn erf(x: __m512) -> __m512 {
        let sign = _mm512_set1_epi32(i32::MIN);
        let a = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x)));
        // Small |x|: odd series.
        let z = _mm512_mul_ps(x, x);
        let mut p = _mm512_set1_ps(ERF_SMALL[7]);
        for &c in ERF_SMALL[..7].iter().rev() {
            p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(c));
        }
        let small = _mm512_mul_ps(x, p);
        // Large |x|: A&S 7.1.26 with the sign of x.
        let t = _mm512_div_ps(
            _mm512_set1_ps(1.0),
            _mm512_fmadd_ps(_mm512_set1_ps(AS_P), a, _mm512_set1_ps(1.0)),
        );
        let mut q = _mm512_set1_ps(AS_A[4]);
        for &c in AS_A[..4].iter().rev() {
            q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(c));
        }
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), z));
        let big = _mm512_fnmadd_ps(_mm512_mul_ps(t, q), e, _mm512_set1_ps(1.0));
        let big = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(big),
            _mm512_and_si512(sign, _mm512_castps_si512(x)),
        ));
        let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_set1_ps(0.5));
        let y = _mm512_mask_mov_ps(big, is_small, small);
        // NaN in, NaN out.
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_mov_ps(y, nan, x)
    }

    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
        let n = row.len();
        let p = row.as_mut_ptr();
        let m = _mm512_set1_ps(max);
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let k = (n - i).min(16);
            let mask = ((1u32 << k) - 1) as u16;
            // SAFETY: lanes 0..k from i are inside `row`.
            let v = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p.add(i)), m));
            _mm512_mask_storeu_ps(p.add(i), mask, v);
            acc = _mm512_mask_add_ps(acc, mask, acc, v);
            i += 16;
        }
        _mm512_reduce_add_ps(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<f32> {
        let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.002).collect();
        v.extend((-300..=300).map(|i| i as f32 * 0.37));
        v.extend([
            0.0, -0.0, 1e-30, -1e-20, 0.4999999, 0.5, -0.5, 88.7, -103.0, 200.0, -200.0,
        ]);
        v.extend((1..40).map(|e| 2f32.powi(-e)));
        v
    }

    #[test]
    fn exp_is_accurate_on_every_path() {
        let x = grid();
        for isa in cpu::available() {
            let mut y = vec![0f32; x.len()];
            exp_with(isa, &x, &mut y).unwrap();
            for (&a, &b) in x.iter().zip(&y) {
                let want = (a as f64).exp();
                if want > f32::MAX as f64 {
                    assert_eq!(b, f32::INFINITY, "{isa:?} exp({a})");
                } else if want < 1e-37 {
                    assert!(b.abs() < 1e-36, "{isa:?} exp({a}) = {b}");
                } else {
                    let rel = ((b as f64 - want) / want).abs();
                    assert!(
                        rel < 5e-7,
                        "{isa:?} exp({a}) = {b}, want {want} (rel {rel:e})"
                    );
                }
            }
            let mut nan = [0f32; 3];
            exp_with(isa, &[f32::NAN, f32::NEG_INFINITY, f32::INFINITY], &mut nan).unwrap();
            assert!(nan[0].is_nan());
            assert!(
                (0.0..1e-44).contains(&nan[1]),
                "{isa:?} exp(-inf) = {}",
                nan[1]
            );
            assert_eq!(nan[2], f32::INFINITY);
        }
    }

    #[test]
    fn erf_is_accurate_on_every_path() {
        let x = grid();
        for isa in cpu::available() {
            let mut y = vec![0f32; x.len()];
            erf_with(isa, &x, &mut y).unwrap();
            for (&a, &b) in x.iter().zip(&y) {
                let want = libm::erf(a as f64);
                let err = (b as f64 - want).abs();
                assert!(
                    err <= 1e-6 * want.abs() + 1e-30,
                    "{isa:?} erf({a}) = {b}, want {want} (err {err:e})"
                );
            }
            let mut nan = [0f32; 3];
            erf_with(isa, &[f32::NAN, f32::NEG_INFINITY, f32::INFINITY], &mut nan).unwrap();
            assert!(nan[0].is_nan());
            assert_eq!(nan[1], -1.0);
            assert_eq!(nan[2], 1.0);
        }
    }

    #[test]
    fn exp_shifted_sum_matches_the_scalar_sum() {
        for n in [1, 15, 16, 17, 100] {
            let mut row: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let want: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
            let s = exp_shifted_sum(&mut row, max);
            let ws: f64 = want.iter().sum();
            assert!(((s as f64 - ws) / ws).abs() < 1e-6, "n {n}: {s} vs {ws}");
            for (a, b) in row.iter().zip(&want) {
                assert!(((*a as f64 - b) / b).abs() < 5e-7);
            }
        }
    }
}
