//! Direct int8 convolution for few channels (LeNet's 1→6 and 6→16 5×5
//! convs), computed exactly in f32 on the direct f32 kernel.
//!
//! im2col + VNNI GEMM is the wrong tool there: with K = 25 or 150 and 6 or
//! 16 output rows, unfolding and quad-interleaving the input costs more
//! than the multiply-adds. But the sums are small: every product
//! `(q_x − z_x)·(q_w − z_w)` is an integer of magnitude ≤ 255·128 < 2¹⁵,
//! so any partial sum of at most [`MAX_K`] of them stays below 2²⁴ and is
//! exact in f32, in any order, fused multiply-add or not. The centred
//! codes are therefore converted to f32 once, convolved by
//! [`crate::directconv`] (no bias, no clamp), and each exact sum converted
//! back to i32 for the canonical requantisation ([`super::Requant::apply`]):
//! the codes are bit for bit those of the integer definition.
//!
//! On CPUs with AVX-512 VNNI and VBMI a second path computes the same
//! integer sums with `vpdpbusd` directly ([`vnni`]): 16 output pixels of a
//! row per vector, the four bytes of lane j for taps kx..kx+3 gathered from
//! one loaded input row by a byte permutation (`vpermb`), weights four at a
//! time broadcast; no unfolded matrix either, and four multiply-adds per
//! lane and instruction. Both paths give the integer definition's codes.
//!
//! The input may also be the f32 tensor in front of the model's first
//! QuantizeLinear ([`Source::Float`]): it is quantised on the fly with the
//! same formula as [`super::elementwise::quantize_one`], so the pair
//! QuantizeLinear → QConv costs one pass over the image.

use super::Requant;
use crate::conv::Conv2d;
use crate::cpu::{self, Isa};
use crate::{check_len, directconv, KernelError, Result};

/// Longest reduction (`C_in·kh·kw`) taken: the direct f32 kernel's limit,
/// well inside the exactness bound (K·255·128 < 2²⁴ holds up to K = 514).
pub const MAX_K: usize = directconv::MAX_K;

/// Whether [`image`] takes `s`: what the direct f32 kernel takes.
pub fn fits(s: &Conv2d) -> bool {
    directconv::fits(s) && s.k() <= MAX_K
}

/// Whether [`image`] runs `s` on the `vpdpbusd` path on this CPU (for
/// kernel labels).
pub fn uses_vnni(s: &Conv2d) -> bool {
    #[cfg(target_arch = "x86_64")]
    if cpu::best() >= Isa::Avx512 && fits(s) && vnni::fits(s) {
        return true;
    }
    let _ = s;
    false
}

/// Centred weights `q_w − z_w` as f32, ONNX order `C_out × C_in × kh × kw`,
/// prepared once per session.
#[derive(Debug, Clone)]
pub struct DirectWeights {
    w: Vec<f32>,
    /// For the VNNI path: per (c, ky, quad of kx) and output channel
    /// (padded to [`vnni::LANES_M`]), four i8 taps as one i32 (0 past kw).
    quads: Vec<i32>,
    /// Per output channel, Σ of its taps (folds the input zero point out).
    wsum: Vec<i32>,
}

impl DirectWeights {
    /// From centred i8 weights (zero point already subtracted).
    pub fn new(s: &Conv2d, w: &[i8]) -> Result<Self> {
        check_len("int8 direct conv weights", s.c_out * s.k(), w.len())?;
        let (k, nq, mp) = (s.k(), s.kw.div_ceil(4), vnni::LANES_M);
        let mut quads = vec![0i32; s.c_in * s.kh * nq * mp];
        for m in 0..s.c_out.min(mp) {
            for c in 0..s.c_in {
                for ky in 0..s.kh {
                    for q in 0..nq {
                        let mut b = [0u8; 4];
                        for (t, bt) in b.iter_mut().enumerate() {
                            let kx = 4 * q + t;
                            if kx < s.kw {
                                *bt = w[m * k + (c * s.kh + ky) * s.kw + kx] as u8;
                            }
                        }
                        quads[((c * s.kh + ky) * nq + q) * mp + m] = i32::from_le_bytes(b);
                    }
                }
            }
        }
        Ok(DirectWeights {
            w: w.iter().map(|&v| v as f32).collect(),
            quads,
            wsum: w
                .chunks(k)
                .map(|r| r.iter().map(|&v| v as i32).sum())
                .collect(),
        })
    }
}

/// One image's input.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// u8 codes with their zero point (i8 codes are passed shifted by 128).
    Codes { x: &'a [u8], zero: u8 },
    /// f32 values quantised on the fly: `clamp(round_half_even(x / scale)
    /// + zero, lo, hi)`, NaN → `zero`, as ONNX QuantizeLinear.
    Float {
        x: &'a [f32],
        scale: f32,
        zero: i32,
        lo: i32,
        hi: i32,
    },
}

impl Source<'_> {
    fn len(&self) -> usize {
        match self {
            Source::Codes { x, .. } => x.len(),
            Source::Float { x, .. } => x.len(),
        }
    }
}

/// Per-thread buffers (centred input, f32 sums), reused across images.
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<f32>,
    acc: Vec<f32>,
    /// The VNNI path's zero-point-padded u8 input.
    padded: Vec<u8>,
}

/// One image: `out[c][p] = requant(Σ (q_x − z_x)·w + bias[c])`, NCHW, as
/// bytes (two's complement for an i8 output range). Best path for this CPU.
pub fn image(
    s: &Conv2d,
    src: Source,
    w: &DirectWeights,
    rq: &Requant,
    sc: &mut Scratch,
    out: &mut [u8],
) -> Result<()> {
    image_with(cpu::best(), s, src, w, rq, sc, out)
}

/// [`image`] on a chosen path (lowered to what the CPU supports).
pub fn image_with(
    isa: Isa,
    s: &Conv2d,
    src: Source,
    w: &DirectWeights,
    rq: &Requant,
    sc: &mut Scratch,
    out: &mut [u8],
) -> Result<()> {
    if !fits(s) {
        return Err(KernelError::Unsupported {
            what: "int8 direct conv",
            why: format!("shape outside what it handles: {s:?}"),
        });
    }
    let (oh, ow) = s.out_hw();
    let p = oh * ow;
    check_len(
        "int8 direct conv input (C×H×W)",
        s.c_in * s.h * s.w,
        src.len(),
    )?;
    check_len("int8 direct conv weights", s.c_out * s.k(), w.w.len())?;
    check_len("int8 direct conv output", s.c_out * p, out.len())?;
    rq.check(s.c_out)?;
    let isa = cpu::clamp(isa);
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 && vnni::fits(s) {
        vnni::pad_input(s, src, &mut sc.padded);
        let za = match src {
            Source::Codes { zero, .. } => zero,
            Source::Float { zero, lo, .. } => (zero - lo) as u8,
        };
        // SAFETY: AVX-512 F/BW/VNNI (Isa::Avx512, clamped) and VBMI
        // (vnni::fits) present; lengths checked above, the padded input
        // built for `s`.
        unsafe { vnni::image(s, &sc.padded, za, w, rq, out) };
        return Ok(());
    }
    sc.x.resize(src.len(), 0.0);
    centre(isa, src, &mut sc.x);
    sc.acc.resize(s.c_out * p, 0.0);
    directconv::conv_with(
        isa,
        s,
        &sc.x,
        &w.w,
        None,
        f32::NEG_INFINITY,
        f32::INFINITY,
        &mut sc.acc,
    )?;
    for (c, (o, a)) in out.chunks_mut(p).zip(sc.acc.chunks(p)).enumerate() {
        requant(isa, a, rq, c, o);
    }
    Ok(())
}

/// `dst[i] = q_x[i] − z_x` as f32 (quantising first for a float source).
fn centre(isa: Isa, src: Source, dst: &mut [f32]) {
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: the CPU supports AVX-512 F/BW (clamped above).
            unsafe { centre_avx512(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the CPU supports AVX2 + FMA (clamped above).
            unsafe { centre_avx2(src, dst) }
        }
        _ => centre_body(src, dst),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn centre_avx512(src: Source, dst: &mut [f32]) {
    centre_body(src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn centre_avx2(src: Source, dst: &mut [f32]) {
    centre_body(src, dst)
}

#[inline(always)]
fn centre_body(src: Source, dst: &mut [f32]) {
    match src {
        Source::Codes { x, zero } => {
            let z = zero as f32;
            for (d, &v) in dst.iter_mut().zip(x) {
                *d = v as f32 - z;
            }
        }
        Source::Float {
            x,
            scale,
            zero,
            lo,
            hi,
        } => {
            // quantize_one's f32 steps, minus the zero point: the clamped,
            // rounded quotient is already q − z.
            let (l, h) = ((lo - zero) as f32, (hi - zero) as f32);
            for (d, &v) in dst.iter_mut().zip(x) {
                let r = (v / scale).round_ties_even();
                let r = if r.is_nan() { 0.0 } else { r };
                *d = r.max(l).min(h);
            }
        }
    }
}

/// Requantises one output plane of exact f32 sums.
fn requant(isa: Isa, acc: &[f32], rq: &Requant, c: usize, out: &mut [u8]) {
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: the CPU supports AVX-512 F/BW (clamped above).
            unsafe { requant_avx512(acc, rq, c, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the CPU supports AVX2 + FMA (clamped above).
            unsafe { requant_avx2(acc, rq, c, out) }
        }
        _ => requant_body(acc, rq, c, out),
    }
}

/// 16 sums at a time: the exact f32 sum to i32, bias added in i32, then
/// the canonical f32 steps (the scalar casts of [`requant_body`] would not
/// vectorise: Rust's `as` saturates).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn requant_avx512(acc: &[f32], rq: &Requant, c: usize, out: &mut [u8]) {
    use std::arch::x86_64::*;
    let n = acc.len().min(out.len());
    let (m, b, z) = (rq.mult_at(c), rq.bias_at(c), rq.out_zero);
    let vm = _mm512_set1_ps(m);
    let vb = _mm512_set1_epi32(b);
    let vz = _mm512_set1_epi32(z);
    let vl = _mm512_set1_ps((rq.lo - z) as f32);
    let vh = _mm512_set1_ps((rq.hi - z) as f32);
    let mut i = 0;
    while i < n {
        let k: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            (1u16 << (n - i)) - 1
        };
        // SAFETY: lanes of mask k lie below n ≤ both lengths.
        let a = _mm512_maskz_loadu_ps(k, acc.as_ptr().add(i));
        let v = _mm512_add_epi32(_mm512_cvttps_epi32(a), vb);
        let q = crate::int8::requant16(v, vm, vl, vh, vz);
        // SAFETY: as above; vpmovdb keeps each lane's low byte (`as u8`).
        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(i) as *mut _, k, q);
        i += 16;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn requant_avx2(acc: &[f32], rq: &Requant, c: usize, out: &mut [u8]) {
    use std::arch::x86_64::*;
    let n = acc.len().min(out.len());
    let (m, b, z) = (rq.mult_at(c), rq.bias_at(c), rq.out_zero);
    let vm = _mm256_set1_ps(m);
    let vb = _mm256_set1_epi32(b);
    let vz = _mm256_set1_epi32(z);
    let vl = _mm256_set1_ps((rq.lo - z) as f32);
    let vh = _mm256_set1_ps((rq.hi - z) as f32);
    let mut i = 0;
    let mut lanes = [0i32; 8];
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n ≤ acc.len().
        let a = _mm256_loadu_ps(acc.as_ptr().add(i));
        let v = _mm256_add_epi32(_mm256_cvttps_epi32(a), vb);
        let r = _mm256_mul_ps(_mm256_cvtepi32_ps(v), vm);
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(r);
        let r = _mm256_min_ps(_mm256_max_ps(r, vl), vh);
        let q = _mm256_add_epi32(_mm256_cvttps_epi32(r), vz);
        // SAFETY: `lanes` holds 8 i32.
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut _, q);
        for (o, &l) in out[i..i + 8].iter_mut().zip(&lanes) {
            *o = l as u8;
        }
        i += 8;
    }
    requant_body(&acc[i..n], rq, c, &mut out[i..n]);
}

#[inline(always)]
fn requant_body(acc: &[f32], rq: &Requant, c: usize, out: &mut [u8]) {
    let (m, b, z) = (rq.mult_at(c), rq.bias_at(c), rq.out_zero);
    let (l, h) = ((rq.lo - z) as f32, (rq.hi - z) as f32);
    for (o, &a) in out.iter_mut().zip(acc) {
        // `a` is an exact integer below 2²⁴: the conversion is exact.
        let v = (a as i32).wrapping_add(b);
        let r = (v as f32 * m).round_ties_even().max(l).min(h);
        *o = (r as i32 + z) as u8;
    }
}

/// The `vpdpbusd` path (see the module doc).
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{DirectWeights, Source};
    use crate::conv::Conv2d;
    use crate::int8::elementwise::quantize;
    use crate::int8::Requant;
    use std::arch::x86_64::*;

    /// Output channels per register tile (one accumulator each).
    pub(super) const LANES_M: usize = 16;

    /// Stride 1, ≤ 16 output channels, and every quad of kx within the 64
    /// bytes one load brings (`15 + 4·⌈kw/4⌉ ≤ 63`); needs VBMI.
    pub(super) fn fits(s: &Conv2d) -> bool {
        s.stride == (1, 1)
            && s.c_out <= LANES_M
            && s.kw.div_ceil(4) * 4 <= 48
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    }

    /// The input with its padding as u8 codes (i8 codes and float inputs
    /// quantised to i8 shifted by 128), the pad cells at the zero point.
    pub(super) fn pad_input(s: &Conv2d, src: Source, xp: &mut Vec<u8>) {
        let (ph, pw) = (s.h + s.pad.0 + s.pad.2, s.w + s.pad.1 + s.pad.3);
        let fill = match src {
            Source::Codes { zero, .. } => zero,
            Source::Float { zero, lo, .. } => (zero - lo) as u8,
        };
        xp.clear();
        xp.resize(s.c_in * ph * pw, fill);
        for c in 0..s.c_in {
            for y in 0..s.h {
                let dst = &mut xp[(c * ph + y + s.pad.0) * pw + s.pad.1..][..s.w];
                let at = (c * s.h + y) * s.w;
                match src {
                    Source::Codes { x, .. } => dst.copy_from_slice(&x[at..at + s.w]),
                    Source::Float {
                        x,
                        scale,
                        zero,
                        lo,
                        hi,
                    } => {
                        // Lengths are equal by construction.
                        let _ = quantize(&x[at..at + s.w], scale, zero, lo, hi, dst);
                        if lo < 0 {
                            // Two's complement i8 codes to q − lo = q + 128.
                            for d in dst.iter_mut() {
                                *d ^= 0x80;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One image over the padded input `xp` (zero point `za`).
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI/VBMI present; `xp` is `C_in × (h+pads) × (w+pads)`,
    /// `out` `C_out × oh × ow`, `w` built for `s`, `rq` checked for C_out.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
    pub(super) unsafe fn image(
        s: &Conv2d,
        xp: &[u8],
        za: u8,
        w: &DirectWeights,
        rq: &Requant,
        out: &mut [u8],
    ) {
        match s.c_out {
            0..=8 => tile::<8>(s, xp, za, w, rq, out),
            _ => tile::<16>(s, xp, za, w, rq, out),
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
    unsafe fn tile<const M: usize>(
        s: &Conv2d,
        xp: &[u8],
        za: u8,
        w: &DirectWeights,
        rq: &Requant,
        out: &mut [u8],
    ) {
        let (oh, ow) = s.out_hw();
        let (ph, pw) = (s.h + s.pad.0 + s.pad.2, s.w + s.pad.1 + s.pad.3);
        let nq = s.kw.div_ceil(4);
        // idx_q: lane j, byte t ← input byte j + 4q + t.
        let mut idx = [_mm512_setzero_si512(); 12];
        for (q, v) in idx.iter_mut().enumerate().take(nq) {
            let mut b = [0u8; 64];
            for (i, bi) in b.iter_mut().enumerate() {
                *bi = (i / 4 + 4 * q + i % 4) as u8;
            }
            // SAFETY: 64 bytes.
            *v = _mm512_loadu_si512(b.as_ptr() as *const _);
        }
        for oy in 0..oh {
            let mut ox0 = 0;
            while ox0 < ow {
                let nb = (ow - ox0).min(16);
                let mut acc = [_mm512_setzero_si512(); M];
                let len = (pw - ox0).min(64);
                let kin: __mmask64 = if len >= 64 { !0 } else { (1u64 << len) - 1 };
                for c in 0..s.c_in {
                    for ky in 0..s.kh {
                        // SAFETY: row (c, oy + ky) < C_in·ph; bytes ox0..ox0+len
                        // of it (masked load).
                        let row = xp.as_ptr().add((c * ph + oy + ky) * pw + ox0);
                        let data = _mm512_maskz_loadu_epi8(kin, row as *const _);
                        let wq = w.quads.as_ptr().add((c * s.kh + ky) * nq * LANES_M);
                        for (q, iq) in idx.iter().enumerate().take(nq) {
                            let op = _mm512_permutexvar_epi8(*iq, data);
                            for (m, a) in acc.iter_mut().enumerate() {
                                // SAFETY: quads hold C_in·kh·nq·LANES_M values.
                                let wb = _mm512_set1_epi32(*wq.add(q * LANES_M + m));
                                *a = _mm512_dpbusd_epi32(*a, op, wb);
                            }
                        }
                    }
                }
                let kout: __mmask16 = if nb >= 16 { !0 } else { (1u16 << nb) - 1 };
                for (m, a) in acc.iter().enumerate().take(s.c_out) {
                    // Σ w·(x − za) = Σ w·x − za·Σ w, then the bias, wrapping.
                    let corr = rq
                        .bias_at(m)
                        .wrapping_sub((za as i32).wrapping_mul(w.wsum[m]));
                    let v = _mm512_add_epi32(*a, _mm512_set1_epi32(corr));
                    let (mm, z) = (rq.mult_at(m), rq.out_zero);
                    let q = crate::int8::requant16(
                        v,
                        _mm512_set1_ps(mm),
                        _mm512_set1_ps((rq.lo - z) as f32),
                        _mm512_set1_ps((rq.hi - z) as f32),
                        _mm512_set1_epi32(z),
                    );
                    // SAFETY: nb ≤ ow − ox0 bytes at (m, oy, ox0) of out.
                    _mm512_mask_cvtepi32_storeu_epi8(
                        out.as_mut_ptr().add((m * oh + oy) * ow + ox0) as *mut _,
                        kout,
                        q,
                    );
                }
                ox0 += 16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::elementwise::quantize_one;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The integer definition: i32 sums over the padded window, zero-point
    /// padding, canonical requantisation.
    fn reference(s: &Conv2d, q: &[i32], zx: i32, w: &[i8], rq: &Requant) -> Vec<u8> {
        let (oh, ow) = s.out_hw();
        let mut out = vec![0u8; s.c_out * oh * ow];
        for m in 0..s.c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0i32;
                    for c in 0..s.c_in {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * s.stride.0 + ky) as isize - s.pad.0 as isize;
                                let ix = (ox * s.stride.1 + kx) as isize - s.pad.1 as isize;
                                let inside = iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < s.h
                                    && (ix as usize) < s.w;
                                let xv = if inside {
                                    q[(c * s.h + iy as usize) * s.w + ix as usize]
                                } else {
                                    zx
                                };
                                let wv = w[((m * s.c_in + c) * s.kh + ky) * s.kw + kx];
                                acc += (xv - zx) * wv as i32;
                            }
                        }
                    }
                    out[(m * oh + oy) * ow + ox] =
                        rq.apply(acc.wrapping_add(rq.bias_at(m)), m) as u8;
                }
            }
        }
        out
    }

    fn geom(c_in: usize, hw: usize, c_out: usize, k: usize, stride: usize, pad: usize) -> Conv2d {
        Conv2d {
            c_in,
            h: hw,
            w: hw + 3,
            c_out,
            kh: k,
            kw: k,
            stride: (stride, stride),
            pad: (pad, pad, pad, pad),
            dilation: (1, 1),
            groups: 1,
        }
    }

    /// Every path equals the integer definition on random codes with
    /// extreme values (full-range weights, codes at 0 and 255), for codes
    /// and for f32 inputs quantised on the fly, at several geometries
    /// (LeNet's two convs, stride 2, K at the limit).
    #[test]
    fn every_path_equals_integer_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (gi, s) in [
            geom(1, 28, 6, 5, 1, 2),
            geom(6, 14, 16, 5, 1, 0),
            geom(3, 17, 16, 3, 2, 1),
            geom(16, 9, 5, 4, 1, 3), // K = 256
        ]
        .into_iter()
        .enumerate()
        {
            assert!(fits(&s), "{s:?}");
            let (oh, ow) = s.out_hw();
            let n_in = s.c_in * s.h * s.w;
            let w: Vec<i8> = (0..s.c_out * s.k())
                .map(|i| match i % 11 {
                    0 => -128,
                    1 => 127,
                    _ => rng.gen(),
                })
                .collect();
            let dw = DirectWeights::new(&s, &w).unwrap();
            let mult: Vec<f32> = (0..s.c_out).map(|_| rng.gen_range(1e-5f32..3e-3)).collect();
            let bias: Vec<i32> = (0..s.c_out)
                .map(|_| rng.gen_range(-300_000..300_000))
                .collect();
            for (zx, zy, lo, hi, signed) in [
                (0, 0, 0, 255, false),
                (255, 128, 128, 255, false),
                (128, 3, -128, 127, true),
            ] {
                let rq = Requant {
                    mult: &mult,
                    bias: Some(&bias),
                    out_zero: zy,
                    lo,
                    hi,
                };
                let codes: Vec<u8> = (0..n_in)
                    .map(|i| match i % 13 {
                        0 => 0,
                        1 => 255,
                        _ => rng.gen(),
                    })
                    .collect();
                let q: Vec<i32> = codes.iter().map(|&v| v as i32).collect();
                let want = reference(&s, &q, zx, &w, &rq);
                // f32 input: values around the grid, exact ties, NaN, ±inf.
                let (xs, xz, xlo, xhi) = (0.05f32, if signed { -7 } else { 9 }, 0, 255);
                let (xlo, xhi) = if signed { (-128, 127) } else { (xlo, xhi) };
                let xf: Vec<f32> = (0..n_in)
                    .map(|i| match i % 17 {
                        0 => f32::NAN,
                        1 => f32::INFINITY,
                        2 => -f32::INFINITY,
                        3 => (i % 40) as f32 * 0.025, // half-way points
                        _ => rng.gen_range(-8.0f32..8.0),
                    })
                    .collect();
                let qf: Vec<i32> = xf
                    .iter()
                    .map(|&v| quantize_one(v, xs, xz, xlo, xhi))
                    .collect();
                let want_f = reference(&s, &qf, xz, &w, &rq);
                for isa in cpu::available() {
                    let mut sc = Scratch::default();
                    let mut out = vec![0u8; s.c_out * oh * ow];
                    let src = Source::Codes {
                        x: &codes,
                        zero: zx as u8,
                    };
                    image_with(isa, &s, src, &dw, &rq, &mut sc, &mut out).unwrap();
                    assert_eq!(out, want, "geometry {gi}, z_x {zx}, {isa:?}");
                    let src = Source::Float {
                        x: &xf,
                        scale: xs,
                        zero: xz,
                        lo: xlo,
                        hi: xhi,
                    };
                    image_with(isa, &s, src, &dw, &rq, &mut sc, &mut out).unwrap();
                    assert_eq!(out, want_f, "geometry {gi}, f32 input, {isa:?}");
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = geom(1, 28, 6, 5, 1, 2);
        let w = DirectWeights::new(&s, &[0; 150]).unwrap();
        let rq = Requant {
            mult: &[1.0],
            bias: None,
            out_zero: 0,
            lo: 0,
            hi: 255,
        };
        let mut sc = Scratch::default();
        let x = vec![0u8; 28 * 31];
        let src = Source::Codes { x: &x, zero: 0 };
        assert!(image(&s, src, &w, &rq, &mut sc, &mut [0; 10]).is_err());
        let src = Source::Codes {
            x: &x[1..],
            zero: 0,
        };
        assert!(image(&s, src, &w, &rq, &mut sc, &mut [0; 6 * 28 * 31]).is_err());
        assert!(DirectWeights::new(&s, &[0; 149]).is_err());
        let mut big = s;
        big.c_out = 17;
        assert!(!fits(&big));
    }
}
