//! f32 → int8 quantization per output channel (one scale, optional zero
//! point per row of a row-major `[rows, cols]` matrix), at memory speed.
//!
//! `shrink-formats` holds the scalar definition (it may not use `unsafe` or
//! `target_feature`, so it compiles for baseline SSE2 only); this module holds
//! the run-time dispatched AVX-512 / AVX2 paths that must equal it bit for bit.
//!
//! Per element: `v = x · (1/s)` in f64 (the reciprocal rounds the same as the
//! exact quotient, see `shrink_formats::intq::quantize_i8_per_channel`);
//! NaN → 0 (so the code is the zero point); `q = round_half_even(v) + zp`
//! saturated to [`Saturation`]'s range. ±inf saturate. f64 keeps every f32
//! quotient exact enough that ties are real ties, which an f32 multiply would not.

use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// Which int8 range the codes saturate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saturation {
    /// [−128, 127].
    Full,
    /// [−127, 127]: symmetric, so negating a code never overflows.
    Narrow,
}

impl Saturation {
    /// Inclusive code range.
    pub fn range(self) -> (i32, i32) {
        match self {
            Saturation::Full => (-128, 127),
            Saturation::Narrow => (-127, 127),
        }
    }
}

fn check(
    x: &[f32],
    rows: usize,
    cols: usize,
    scales: &[f32],
    zero_points: Option<&[i32]>,
    sat: Saturation,
    out: &[i8],
) -> Result<()> {
    check_len("quantize input (rows×cols)", rows * cols, x.len())?;
    check_len("quantize output (rows×cols)", rows * cols, out.len())?;
    check_len("quantize scales (one per row)", rows, scales.len())?;
    for (i, &s) in scales.iter().enumerate() {
        if !s.is_finite() || s == 0.0 {
            return Err(KernelError::Unsupported {
                what: "quantize scales",
                why: format!("scale {s} of row {i} is not finite and nonzero"),
            });
        }
    }
    if let Some(zp) = zero_points {
        check_len("quantize zero points (one per row)", rows, zp.len())?;
        let (lo, hi) = sat.range();
        if let Some(i) = zp.iter().position(|z| !(lo..=hi).contains(z)) {
            return Err(KernelError::Unsupported {
                what: "quantize zero points",
                why: format!("zero point {} of row {i} outside [{lo}, {hi}]", zp[i]),
            });
        }
    }
    Ok(())
}

/// Scalar reference: the definition the SIMD paths are tested against.
pub fn reference(
    x: &[f32],
    rows: usize,
    cols: usize,
    scales: &[f32],
    zero_points: Option<&[i32]>,
    sat: Saturation,
    out: &mut [i8],
) -> Result<()> {
    check(x, rows, cols, scales, zero_points, sat, out)?;
    let (lo, hi) = sat.range();
    for r in 0..rows {
        let inv = 1.0 / scales[r] as f64;
        let zp = zero_points.map_or(0, |z| z[r]);
        for c in 0..cols {
            let v = x[r * cols + c] as f64 * inv;
            let v = if v.is_nan() { 0.0 } else { v };
            let q = v.round_ties_even() + zp as f64;
            out[r * cols + c] = q.clamp(lo as f64, hi as f64) as i8;
        }
    }
    Ok(())
}

/// Quantizes with the best path this CPU has.
pub fn quantize_i8_per_channel(
    x: &[f32],
    rows: usize,
    cols: usize,
    scales: &[f32],
    zero_points: Option<&[i32]>,
    sat: Saturation,
    out: &mut [i8],
) -> Result<()> {
    quantize_i8_per_channel_with(cpu::best(), x, rows, cols, scales, zero_points, sat, out)
}

/// Quantizes with `isa` (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn quantize_i8_per_channel_with(
    isa: Isa,
    x: &[f32],
    rows: usize,
    cols: usize,
    scales: &[f32],
    zero_points: Option<&[i32]>,
    sat: Saturation,
    out: &mut [i8],
) -> Result<()> {
    check(x, rows, cols, scales, zero_points, sat, out)?;
    let isa = cpu::clamp(isa);
    let (lo, hi) = sat.range();
    for r in 0..rows {
        let inv = 1.0 / scales[r] as f64;
        let zp = zero_points.map_or(0, |z| z[r]);
        let xr = &x[r * cols..(r + 1) * cols];
        let or = &mut out[r * cols..(r + 1) * cols];
        // Clamping to [lo−zp, hi−zp] before rounding equals clamping the
        // rounded code plus zp to [lo, hi]: the bounds are integers.
        let (vlo, vhi) = ((lo - zp) as f64, (hi - zp) as f64);
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 => {
                // SAFETY: `clamp` guarantees AVX-512 F/BW/VL/DQ; both slices have `cols` elements.
                unsafe { avx512::row(xr, or, inv, zp, vlo, vhi) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: `clamp` guarantees AVX2; both slices have `cols` elements.
                unsafe { avx2::row(xr, or, inv, zp, vlo, vhi) }
            }
            _ => row_scalar(xr, or, inv, zp, vlo, vhi),
        }
    }
    Ok(())
}

#[inline(always)]
fn one(x: f32, inv: f64, zp: i32, vlo: f64, vhi: f64) -> i8 {
    let v = x as f64 * inv;
    let v = if v.is_nan() { 0.0 } else { v };
    // v + M − M rounds half to even for |v| < 2^51 with plain adds
    // (`round_ties_even` is a libm call on baseline x86-64).
    ((v.clamp(vlo, vhi) + RNE_MAGIC - RNE_MAGIC) as i32 + zp) as i8
}

/// 1.5·2^52.
const RNE_MAGIC: f64 = 6_755_399_441_055_744.0;

fn row_scalar(x: &[f32], out: &mut [i8], inv: f64, zp: i32, vlo: f64, vhi: f64) {
    for (xi, oi) in x.iter().zip(out.iter_mut()) {
        *oi = one(*xi, inv, zp, vlo, vhi);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Two f64 halves of 16 floats → 16 i32 codes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    fn codes16(v: __m512, inv: __m512d, zp: __m512i, lo: __m512d, hi: __m512d) -> __m512i {
        let half = |h: __m256| {
            let d = _mm512_mul_pd(_mm512_cvtps_pd(h), inv);
            // NaN lanes → 0 (the zero point after the shift)
            let d = _mm512_maskz_mov_pd(_mm512_cmp_pd_mask::<_CMP_ORD_Q>(d, d), d);
            let d = _mm512_min_pd(_mm512_max_pd(d, lo), hi);
            _mm512_cvt_roundpd_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(d)
        };
        let a = half(_mm512_castps512_ps256(v));
        let b = half(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
            _mm512_castps_pd(v),
        )));
        _mm512_add_epi32(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b), zp)
    }

    /// # Safety
    /// CPU supports AVX-512 F/BW/VL/DQ; `x.len() == out.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn row(x: &[f32], out: &mut [i8], inv: f64, zp: i32, vlo: f64, vhi: f64) {
        let (inv, zpv) = (_mm512_set1_pd(inv), _mm512_set1_epi32(zp));
        let (lo, hi) = (_mm512_set1_pd(vlo), _mm512_set1_pd(vhi));
        let n = x.len();
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        // SAFETY: every load/store covers i..i+16 ≤ n, or is masked to i..n.
        unsafe {
            while i + 32 <= n {
                let a = codes16(_mm512_loadu_ps(xp.add(i)), inv, zpv, lo, hi);
                let b = codes16(_mm512_loadu_ps(xp.add(i + 16)), inv, zpv, lo, hi);
                _mm_storeu_si128(op.add(i) as *mut __m128i, _mm512_cvtepi32_epi8(a));
                _mm_storeu_si128(op.add(i + 16) as *mut __m128i, _mm512_cvtepi32_epi8(b));
                i += 32;
            }
            while i < n {
                let m: __mmask16 = if n - i >= 16 {
                    0xFFFF
                } else {
                    (1u16 << (n - i)) - 1
                };
                let a = codes16(_mm512_maskz_loadu_ps(m, xp.add(i)), inv, zpv, lo, hi);
                _mm_mask_storeu_epi8(op.add(i), m, _mm512_cvtepi32_epi8(a));
                i += 16;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// 4 floats → 4 i32 codes (before the zero point).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn codes4(h: __m128, inv: __m256d, lo: __m256d, hi: __m256d) -> __m128i {
        let d = _mm256_mul_pd(_mm256_cvtps_pd(h), inv);
        let d = _mm256_and_pd(d, _mm256_cmp_pd::<_CMP_ORD_Q>(d, d));
        let d = _mm256_min_pd(_mm256_max_pd(d, lo), hi);
        _mm256_cvtpd_epi32(_mm256_round_pd::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(d))
    }

    /// # Safety
    /// CPU supports AVX2; `x.len() == out.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row(x: &[f32], out: &mut [i8], inv: f64, zp: i32, vlo: f64, vhi: f64) {
        let (invv, zpv) = (_mm256_set1_pd(inv), _mm_set1_epi32(zp));
        let (lo, hi) = (_mm256_set1_pd(vlo), _mm256_set1_pd(vhi));
        let n = x.len();
        let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        // SAFETY: loads read i..i+8 ≤ n floats, stores write i..i+8 ≤ n bytes.
        unsafe {
            while i + 8 <= n {
                let v = _mm256_loadu_ps(xp.add(i));
                let a = _mm_add_epi32(codes4(_mm256_castps256_ps128(v), invv, lo, hi), zpv);
                let b = _mm_add_epi32(codes4(_mm256_extractf128_ps::<1>(v), invv, lo, hi), zpv);
                let w = _mm_packs_epi32(a, b);
                _mm_storel_epi64(op.add(i) as *mut __m128i, _mm_packs_epi16(w, w));
                i += 8;
            }
        }
        super::row_scalar(&x[i..], &mut out[i..], inv, zp, vlo, vhi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Values that hit every special case: ties at ±k.5 in units of the scale,
    /// saturation, ±inf, NaN, ±0, subnormals.
    fn data(n: usize, scales: &[f32], cols: usize, seed: u64) -> Vec<f32> {
        let mut g = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let s = scales[i / cols];
                match g.gen_range(0..12) {
                    0 => (g.gen_range(-140i32..140) as f32 + 0.5) * s,
                    1 => g.gen_range(-140i32..140) as f32 * s,
                    2 => f32::NAN,
                    3 => [f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-45][g.gen_range(0..4)],
                    4 => g.gen_range(-1e6f32..1e6),
                    _ => g.gen_range(-130.0f32..130.0) * s,
                }
            })
            .collect()
    }

    fn scales(rows: usize, seed: u64) -> Vec<f32> {
        let mut g = ChaCha8Rng::seed_from_u64(seed);
        (0..rows)
            .map(|_| {
                // power-of-two scales make the (k + 0.5)·s inputs exact ties
                let s = if g.gen_bool(0.4) {
                    2f32.powi(g.gen_range(-6..3))
                } else {
                    g.gen_range(1e-3f32..2.0)
                };
                if g.gen_bool(0.2) {
                    -s
                } else {
                    s
                }
            })
            .collect()
    }

    #[test]
    fn every_path_equals_reference_and_formats() {
        let shapes = [
            (1, 1),
            (1, 7),
            (3, 15),
            (2, 16),
            (5, 17),
            (4, 31),
            (3, 33),
            (7, 100),
            (2, 257),
        ];
        for (si, &(rows, cols)) in shapes.iter().enumerate() {
            let s = scales(rows, si as u64);
            let x = data(rows * cols, &s, cols, 100 + si as u64);
            let mut zg = ChaCha8Rng::seed_from_u64(7 + si as u64);
            let zps: Vec<i32> = (0..rows).map(|_| zg.gen_range(-127..=127)).collect();
            for sat in [Saturation::Full, Saturation::Narrow] {
                for zp in [None, Some(&zps[..])] {
                    let mut want = vec![0i8; rows * cols];
                    reference(&x, rows, cols, &s, zp, sat, &mut want).unwrap();
                    for isa in cpu::available() {
                        let mut got = vec![99i8; rows * cols];
                        quantize_i8_per_channel_with(isa, &x, rows, cols, &s, zp, sat, &mut got)
                            .unwrap();
                        assert_eq!(
                            got,
                            want,
                            "{isa:?} {rows}x{cols} {sat:?} zp={}",
                            zp.is_some()
                        );
                    }
                }
                // formats: the general QuantParams path (divides), zero points 0
                let scheme = match sat {
                    Saturation::Full => shrink_formats::Scheme::SymmetricFull,
                    Saturation::Narrow => shrink_formats::Scheme::SymmetricNarrow,
                };
                let p = shrink_formats::QuantParams {
                    bits: 8,
                    scheme,
                    granularity: shrink_formats::Granularity::PerChannel { axis: 0 },
                    scale: s.clone(),
                    zero_point: vec![0; rows],
                };
                let f = p
                    .quantize(&x, &[rows, cols], shrink_formats::Rounding::NearestEven)
                    .unwrap();
                let mut got = vec![0i8; rows * cols];
                quantize_i8_per_channel(&x, rows, cols, &s, None, sat, &mut got).unwrap();
                let got32: Vec<i32> = got.iter().map(|&c| c as i32).collect();
                assert_eq!(got32, f, "formats QuantParams {rows}x{cols} {sat:?}");
            }
            // formats: its int8 fast path (symmetric narrow, no zero point)
            let mut f = vec![0i8; rows * cols];
            shrink_formats::intq::quantize_i8_per_channel(&x, cols, &s, &mut f).unwrap();
            let mut got = vec![0i8; rows * cols];
            quantize_i8_per_channel(&x, rows, cols, &s, None, Saturation::Narrow, &mut got)
                .unwrap();
            assert_eq!(got, f, "formats fast path {rows}x{cols}");
        }
    }

    #[test]
    fn special_values() {
        let x = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            2.5,
            -2.5,
            3.5,
            -0.5,
            1e30,
        ];
        let mut out = [0i8; 8];
        for isa in cpu::available() {
            quantize_i8_per_channel_with(
                isa,
                &x,
                1,
                8,
                &[1.0],
                Some(&[3]),
                Saturation::Full,
                &mut out,
            )
            .unwrap();
            assert_eq!(out, [3, 127, -128, 5, 1, 7, 3, 127], "{isa:?}");
            quantize_i8_per_channel_with(isa, &x, 1, 8, &[1.0], None, Saturation::Narrow, &mut out)
                .unwrap();
            assert_eq!(out, [0, 127, -127, 2, -2, 4, 0, 127], "{isa:?}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut out = [0i8; 4];
        let x = [1.0f32; 4];
        let q = |s: &[f32], zp: Option<&[i32]>, out: &mut [i8]| {
            quantize_i8_per_channel(&x, 2, 2, s, zp, Saturation::Narrow, out)
        };
        assert!(q(&[1.0], None, &mut out).is_err());
        assert!(q(&[1.0, 0.0], None, &mut out).is_err());
        assert!(q(&[1.0, f32::NAN], None, &mut out).is_err());
        assert!(q(&[1.0, 1.0], Some(&[0, -128]), &mut out).is_err());
        assert!(q(&[1.0, 1.0], None, &mut out[..3]).is_err());
        assert!(q(&[1.0, 1.0], Some(&[0, -127]), &mut out).is_ok());
    }
}
