//! Requantising element-wise addition of two quantised tensors (residual
//! connections), in the canonical form shared with the scalar simulation:
//!
//! `v = (a − z_a)·m_a + (b − z_b)·m_b` (two f32 products, one f32 sum — no
//! fused multiply-add, so the vector and scalar paths round identically),
//! `q = clamp(round_half_even(v) + z_y, lo, hi)`, with `m_a = s_a/s_y` and
//! `m_b = s_b/s_y`.
//!
//! Operands are bytes in the u8 domain: i8 tensors are passed shifted by 128
//! (`q ^ 0x80`, zero point + 128), which leaves `q − z` unchanged; outputs
//! are stored as bytes (two's complement for i8 ranges).

use crate::cpu::{self, Isa};
use crate::{check_len, Result};

/// Quantisation of one operand: zero point (u8 domain) and multiplier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Operand {
    pub zero: i32,
    pub mult: f32,
}

/// One element, the definition.
#[inline(always)]
pub fn add_one(a: u8, b: u8, qa: Operand, qb: Operand, zy: i32, lo: i32, hi: i32) -> i32 {
    let v = (a as i32 - qa.zero) as f32 * qa.mult + (b as i32 - qb.zero) as f32 * qb.mult;
    let r = v.round_ties_even();
    let r = r.max((lo - zy) as f32).min((hi - zy) as f32);
    r as i32 + zy
}

/// `out[i] = add_one(a[i], b[i])` on the best path for this CPU.
#[allow(clippy::too_many_arguments)]
pub fn add(
    a: &[u8],
    qa: Operand,
    b: &[u8],
    qb: Operand,
    zy: i32,
    lo: i32,
    hi: i32,
    out: &mut [u8],
) -> Result<()> {
    add_with(cpu::best(), a, qa, b, qb, zy, lo, hi, out)
}

/// [`add`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn add_with(
    isa: Isa,
    a: &[u8],
    qa: Operand,
    b: &[u8],
    qb: Operand,
    zy: i32,
    lo: i32,
    hi: i32,
    out: &mut [u8],
) -> Result<()> {
    check_len("quantised add b", a.len(), b.len())?;
    check_len("quantised add output", a.len(), out.len())?;
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: the CPU supports AVX-512 F/BW (clamped above).
            unsafe { add_avx512(a, qa, b, qb, zy, lo, hi, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the CPU supports AVX2 + FMA (clamped above).
            unsafe { add_avx2(a, qa, b, qb, zy, lo, hi, out) }
        }
        _ => add_body(a, qa, b, qb, zy, lo, hi, out),
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn add_avx512(
    a: &[u8],
    qa: Operand,
    b: &[u8],
    qb: Operand,
    zy: i32,
    lo: i32,
    hi: i32,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    let n = out.len().min(a.len()).min(b.len());
    let (za, zb) = (_mm512_set1_epi32(qa.zero), _mm512_set1_epi32(qb.zero));
    let (ma, mb) = (_mm512_set1_ps(qa.mult), _mm512_set1_ps(qb.mult));
    let (flo, fhi) = (
        _mm512_set1_ps((lo - zy) as f32),
        _mm512_set1_ps((hi - zy) as f32),
    );
    let zyv = _mm512_set1_epi32(zy);
    let mut i = 0;
    // 16 elements a step, the operations of `add_one` in its order (two
    // products, one sum: no FMA), so the result is bit-identical.
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n, the length of all three slices.
        unsafe {
            let av = _mm512_cvtepu8_epi32(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
            let bv = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.as_ptr().add(i) as *const __m128i));
            let fa = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(av, za)), ma);
            let fb = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(bv, zb)), mb);
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_add_ps(fa, fb),
            );
            let r = _mm512_min_ps(_mm512_max_ps(r, flo), fhi);
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(r), zyv);
            _mm_storeu_si128(
                out.as_mut_ptr().add(i) as *mut __m128i,
                _mm512_cvtepi32_epi8(q),
            );
        }
        i += 16;
    }
    add_body(&a[i..n], qa, &b[i..n], qb, zy, lo, hi, &mut out[i..n])
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_avx2(
    a: &[u8],
    qa: Operand,
    b: &[u8],
    qb: Operand,
    zy: i32,
    lo: i32,
    hi: i32,
    out: &mut [u8],
) {
    add_body(a, qa, b, qb, zy, lo, hi, out)
}

/// The loop, inlined into each target-feature wrapper (LLVM vectorises it;
/// Rust never contracts `x·y + z` into an FMA, so every path rounds alike).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_body(
    a: &[u8],
    qa: Operand,
    b: &[u8],
    qb: Operand,
    zy: i32,
    lo: i32,
    hi: i32,
    out: &mut [u8],
) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = add_one(x, y, qa, qb, zy, lo, hi) as u8;
    }
}

/// ONNX QuantizeLinear of one f32 to a byte code (per-tensor):
/// `clamp(round_half_even(x / s) + z, lo, hi)`, NaN → `z`, ±inf saturate.
#[inline(always)]
pub fn quantize_one(x: f32, scale: f32, zero: i32, lo: i32, hi: i32) -> i32 {
    let r = (x / scale).round_ties_even();
    let r = if r.is_nan() { 0.0 } else { r };
    let r = r.max((lo - zero) as f32).min((hi - zero) as f32);
    r as i32 + zero
}

/// `out[i] = quantize_one(x[i])` (bytes; two's complement for i8 ranges),
/// on the best path for this CPU.
pub fn quantize(x: &[f32], scale: f32, zero: i32, lo: i32, hi: i32, out: &mut [u8]) -> Result<()> {
    quantize_with(cpu::best(), x, scale, zero, lo, hi, out)
}

/// [`quantize`] on a chosen path (lowered to what the CPU supports).
pub fn quantize_with(
    isa: Isa,
    x: &[f32],
    scale: f32,
    zero: i32,
    lo: i32,
    hi: i32,
    out: &mut [u8],
) -> Result<()> {
    check_len("quantize output", x.len(), out.len())?;
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: the CPU supports AVX-512 F/BW (clamped above).
            unsafe { quantize_avx512(x, scale, zero, lo, hi, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the CPU supports AVX2 + FMA (clamped above).
            unsafe { quantize_avx2(x, scale, zero, lo, hi, out) }
        }
        _ => quantize_body(x, scale, zero, lo, hi, out),
    }
    Ok(())
}

/// Sixteen values per step with the same IEEE operations as
/// [`quantize_one`]: the quotient `x / s` rounded to nearest-even, NaN
/// lanes replaced by 0, clamps to `[lo − z, hi − z]`, an exact conversion,
/// `+ z`, and `vpmovdb` keeping the low byte (what `as u8` keeps). The
/// compiler left the scalar loop unvectorised (the saturating `as i32` and
/// the NaN select), which made quantising a batch of inputs cost as much as
/// the first layer's GEMM.
///
/// That exact form costs about 10 cycles per 16 values on Zen 4 (the
/// division alone issues once per ~6), 40 µs of a 370 µs LeNet-300-100
/// batch. So each vector first takes the short route of
/// [`quantize_fast_exact`] and keeps it unless a lane is NaN or lies near a
/// rounding boundary, which the division then settles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn quantize_avx512(x: &[f32], scale: f32, zero: i32, lo: i32, hi: i32, out: &mut [u8]) {
    use std::arch::x86_64::*;
    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let n = x.len().min(out.len());
    let s = _mm512_set1_ps(scale);
    let lo_v = _mm512_set1_ps((lo - zero) as f32);
    let hi_v = _mm512_set1_ps((hi - zero) as f32);
    let z = _mm512_set1_epi32(zero);
    let fast = quantize_fast_exact(scale, zero, lo, hi);
    let inv = _mm512_set1_ps(1.0 / scale);
    let trust = _mm512_set1_ps(0.5 - FAST_MARGIN);
    // 1.5·2²³ + z: adding it rounds to an integer and leaves `q + z` in the
    // low mantissa bits (the magic number's low 22 bits are zero).
    let magic = _mm512_set1_ps(MAGIC + zero as f32);
    let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
    let mut i = 0;
    while i < n {
        let m: __mmask16 = if n - i >= 16 {
            0xFFFF
        } else {
            (1u16 << (n - i)) - 1
        };
        // SAFETY: loads and stores cover i..i+16 ≤ n or are masked to the
        // `n − i` elements left, all inside `x` and `out`; the CPU supports
        // AVX-512 F/BW.
        unsafe {
            let xv = if m == 0xFFFF {
                _mm512_loadu_ps(x.as_ptr().add(i))
            } else {
                _mm512_maskz_loadu_ps(m, x.as_ptr().add(i))
            };
            let mut q = _mm512_setzero_si512();
            let mut done = false;
            if fast {
                // Clamp first (rounding commutes with clamping to integer
                // bounds); operand order keeps NaN (vmaxps/vminps return
                // their second operand when one is NaN).
                let c = _mm512_min_ps(hi_v, _mm512_max_ps(lo_v, _mm512_mul_ps(xv, inv)));
                let t = _mm512_add_ps(c, magic);
                let d = _mm512_sub_ps(c, _mm512_sub_ps(t, magic));
                let d = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(d), abs_mask));
                // Not (|c − round c| ≤ ½ − margin): near a boundary, or NaN.
                let doubt = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(d, trust);
                q = _mm512_castps_si512(t);
                done = doubt & m == 0;
            }
            if !done {
                let r = _mm512_roundscale_ps::<RNE>(_mm512_div_ps(xv, s));
                let r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r), r);
                let r = _mm512_min_ps(_mm512_max_ps(r, lo_v), hi_v);
                q = _mm512_add_epi32(_mm512_cvtps_epi32(r), z);
            }
            // The register form of `vpmovdb` and a plain store: the masked
            // memory form is microcoded on Zen 4 (it was a third of the
            // loop's time).
            if m == 0xFFFF {
                _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut _, _mm512_cvtepi32_epi8(q));
            } else {
                _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(i) as *mut _, m, q);
            }
        }
        i += 16;
    }
}

/// 1.5·2²³.
const MAGIC: f32 = 12_582_912.0;
/// Distance from a half-integer below which the product is not trusted: 2⁻¹¹.
const FAST_MARGIN: f32 = 1.0 / 2048.0;

/// Whether the short route may stand in for `round(fl(x / s))`: the
/// product `q₀ = x · fl(1/s)`, clamped to `[lo − z, hi − z]` and rounded by
/// adding `1.5·2²³ + z`, whose low byte is then the code.
///
/// Why that is exact wherever the kernel keeps it:
/// - While `|x/s| < 1024`, `fl(1/s)` and the product each add at most 2⁻²⁴
///   relative error, so `|q₀ − x/s| ≤ 2⁻²³·1024 = 2⁻¹³`, and
///   `|fl(x/s) − x/s| ≤ 2⁻¹⁴`: they differ by under 2⁻¹² (subnormal
///   results only add an absolute 2⁻¹⁴⁹).
/// - Where the clamped `c` is farther than `FAST_MARGIN` = 2⁻¹¹ from every
///   half-integer, `q₀` and the quotient therefore round to the same
///   integer inside the clamp range, or both clamp to the same bound (a
///   clamped `c` is an integer; a `q₀` beyond 512 in magnitude has the
///   quotient beyond 511 on the same side, past any byte bound). Ties are
///   inside the margin, so the addition's tie rule never decides.
/// - `c + 1.5·2²³ + z` lies in [2²³, 2²⁴), where the float spacing is 1,
///   so it is `round(c) + z` exactly in the low mantissa bits when
///   `|round(c) + z| < 2²²`.
///
/// Needs `s` and `1/s` normal (a subnormal or huge scale makes the
/// reciprocal inexact or infinite) and a clamp range within 255 of z.
fn quantize_fast_exact(scale: f32, zero: i32, lo: i32, hi: i32) -> bool {
    let reach = (lo as i64 - zero as i64)
        .abs()
        .max((hi as i64 - zero as i64).abs());
    scale.is_normal() && (1.0 / scale).is_normal() && reach <= 255 && zero.abs() <= 255
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_avx2(x: &[f32], scale: f32, zero: i32, lo: i32, hi: i32, out: &mut [u8]) {
    quantize_body(x, scale, zero, lo, hi, out)
}

#[inline(always)]
fn quantize_body(x: &[f32], scale: f32, zero: i32, lo: i32, hi: i32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = quantize_one(v, scale, zero, lo, hi) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn every_path_equals_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let n = 1037;
        let a: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        let b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
        for &(za, zb, zy, lo, hi, ma, mb) in &[
            (0, 255, 0, 0, 255, 0.7f32, 1.3f32),
            (128, 128, 0, -128, 127, 0.5, 0.5),
            (3, 250, 255, 100, 255, 2.0, 0.01),
        ] {
            let (qa, qb) = (
                Operand { zero: za, mult: ma },
                Operand { zero: zb, mult: mb },
            );
            let want: Vec<u8> = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| add_one(x, y, qa, qb, zy, lo, hi) as u8)
                .collect();
            for isa in cpu::available() {
                let mut out = vec![0u8; n];
                add_with(isa, &a, qa, &b, qb, zy, lo, hi, &mut out).unwrap();
                assert_eq!(out, want, "{isa:?}");
            }
        }
        let x: Vec<f32> = (0..n)
            .map(|i| match i % 7 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -f32::INFINITY,
                3 => (i as f32 - 500.0) * 0.5, // exact ties at scale 1
                _ => rng.gen_range(-300.0f32..300.0),
            })
            .collect();
        for &(s, z, lo, hi) in &[
            (1.0f32, 0, 0, 255),
            (0.37, 128, 0, 255),
            (2.5, -3, -128, 127),
        ] {
            let want: Vec<u8> = x
                .iter()
                .map(|&v| quantize_one(v, s, z, lo, hi) as u8)
                .collect();
            for isa in cpu::available() {
                let mut out = vec![0u8; n];
                quantize_with(isa, &x, s, z, lo, hi, &mut out).unwrap();
                assert_eq!(out, want, "{isa:?}");
            }
        }
        // Near-ties at awkward scales: x = (k + ½ ± a few ulps)·s lands
        // next to a half-integer after the division, where any shortcut
        // (e.g. multiplying by 1/s) would round differently.
        for t in 0..300 {
            let s = rng.gen_range(1e-4f32..20.0) * if t % 7 == 0 { -1.0 } else { 1.0 };
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let k = (i % 300) as f32 - 40.0;
                    let base = (k + 0.5) * s;
                    let ulps = rng.gen_range(-4i32..=4);
                    match i % 5 {
                        0 => rng.gen_range(-400.0f32..400.0) * s,
                        1 => k * s,
                        _ => f32::from_bits((base.to_bits() as i32 + ulps) as u32),
                    }
                })
                .collect();
            for &(z, lo, hi) in &[(0, 0, 255), (128, 0, 255), (-3, -128, 127), (0, 0, 40)] {
                let want: Vec<u8> = x
                    .iter()
                    .map(|&v| quantize_one(v, s, z, lo, hi) as u8)
                    .collect();
                for isa in cpu::available() {
                    let mut out = vec![0u8; n];
                    quantize_with(isa, &x, s, z, lo, hi, &mut out).unwrap();
                    assert_eq!(out, want, "{isa:?} s={s} z={z}");
                }
            }
        }
        // Every float in a window of ±2⁻⁹ (in quotient units) around
        // half-integers: wider than the multiply-by-reciprocal shortcut's
        // margin, so lanes on both sides of its trust boundary are checked
        // against the division.
        for t in 0..40 {
            let s = rng.gen_range(1e-3f32..4.0);
            let k = rng.gen_range(-260i32..260) as f32;
            let (a, b) = ((k + 0.5 - 1.0 / 512.0) * s, (k + 0.5 + 1.0 / 512.0) * s);
            let (a, b) = (a.min(b), a.max(b));
            let mut x = Vec::new();
            let mut v = a;
            while v <= b && x.len() < 200_000 {
                x.push(v);
                v = v.next_up();
            }
            let z = if t % 2 == 0 { 0 } else { 128 };
            let want: Vec<u8> = x
                .iter()
                .map(|&v| quantize_one(v, s, z, 0, 255) as u8)
                .collect();
            for isa in cpu::available() {
                let mut out = vec![0u8; x.len()];
                quantize_with(isa, &x, s, z, 0, 255, &mut out).unwrap();
                assert_eq!(out, want, "{isa:?} s={s} k={k}");
            }
        }
        // Subnormal and huge scales and an extreme zero point.
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1e3f32..1e3)).collect();
        for &(s, z) in &[(1e-39f32, 0), (3e38, 0), (0.5, 100_000), (0.37, 0)] {
            let want: Vec<u8> = x
                .iter()
                .map(|&v| quantize_one(v, s, z, 0, 255) as u8)
                .collect();
            for isa in cpu::available() {
                let mut out = vec![0u8; n];
                quantize_with(isa, &x, s, z, 0, 255, &mut out).unwrap();
                assert_eq!(out, want, "{isa:?} s={s} z={z}");
            }
        }
        assert_eq!(quantize_one(f32::NAN, 1.0, 7, 0, 255), 7);
        assert_eq!(quantize_one(2.5, 1.0, 0, 0, 255), 2);
        assert_eq!(quantize_one(-1e30, 1.0, -3, -128, 127), -128);
        assert!(add(
            &a,
            Operand { zero: 0, mult: 1.0 },
            &b[..3],
            Operand { zero: 0, mult: 1.0 },
            0,
            0,
            255,
            &mut [0; 1037]
        )
        .is_err());
    }
}
