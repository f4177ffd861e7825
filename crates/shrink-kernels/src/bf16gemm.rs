//! bf16-weight GEMM `Y = act(A·Wᵀ + bias)`: f32 activations rounded to bf16
//! (nearest-even), bf16 weights, f32 accumulation with `vdpbf16ps`
//! (AVX512_BF16); elsewhere weights are widened to f32 exactly and
//! activations kept in f32.
//!
//! Tolerance (tests): products of bf16 values are exact in f32, so the only
//! errors are the activation rounding (relative 2⁻⁹ per element) and f32
//! summation: `|y − y_exact| ≤ (2⁻⁸ + 2·K·ε)·Σ|a·w|` with `y_exact` computed
//! from the bf16 weights and the f32 activations.

use crate::cpu::{self, Isa};
use crate::f32gemm::F32Epilogue;
use crate::{check_len, scratch, tiling, KernelError, Result};
use half::bf16;

/// Columns per packed panel.
pub const NR: usize = 32;
const MR: usize = 8;

/// bf16 weights packed in k-pairs for `vdpbf16ps`.
///
/// ```text
///  K2 = K rounded up to 2; panel p (columns 32p..32p+31): K2/2 pairs of 128 bytes
///  pair q: │ W[32p+0][2q] W[32p+0][2q+1] │ W[32p+1][2q] W[32p+1][2q+1] │ … │ W[32p+31][..] │
///  u16 index of W[j][k] = (j/32)·K2·32 + (k/2)·64 + (j%32)·2 + k%2;  padding = +0.0
/// ```
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    k2: usize,
    data: Vec<u16>,
}

impl PackedBf16 {
    /// Packs bf16 weights `w` (`N×K`).
    pub fn pack(w: &[bf16], n: usize, k: usize) -> Result<Self> {
        check_len("bf16 weights (N×K)", n * k, w.len())?;
        if n == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "bf16 weights",
                why: format!("empty shape N={n} K={k}"),
            });
        }
        let k2 = k.div_ceil(2) * 2;
        let mut data = vec![0u16; n.div_ceil(NR) * k2 * NR];
        for j in 0..n {
            for kk in 0..k {
                data[(j / NR) * k2 * NR + (kk / 2) * 2 * NR + (j % NR) * 2 + kk % 2] =
                    w[j * k + kk].to_bits();
            }
        }
        Ok(PackedBf16 { n, k, k2, data })
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// `out = clip(A·Wᵀ + bias)` on the best path, threaded.
pub fn gemm(a: &[f32], m: usize, w: &PackedBf16, ep: &F32Epilogue, out: &mut [f32]) -> Result<()> {
    gemm_with(cpu::best(), a, m, w, ep, out)
}

fn check(m: usize, a_len: usize, w: &PackedBf16, ep: &F32Epilogue, out: &[f32]) -> Result<()> {
    check_len("bf16 activations (M×K)", m * w.k, a_len)?;
    check_len("bf16 output (M×N)", m * w.n, out.len())?;
    if let Some(b) = ep.bias {
        check_len("bf16 bias", w.n, b.len())?;
    }
    if ep.row_bias.is_some() {
        return Err(KernelError::Unsupported {
            what: "bf16 epilogue",
            why: "a row bias is only supported by the f32 GEMM".into(),
        });
    }
    Ok(())
}

/// [`gemm`] on a chosen path (lowered to what the CPU supports).
pub fn gemm_with(
    isa: Isa,
    a: &[f32],
    m: usize,
    w: &PackedBf16,
    ep: &F32Epilogue,
    out: &mut [f32],
) -> Result<()> {
    check(m, a.len(), w, ep, out)?;
    let (k, k2) = (w.k, w.k2);
    let isa = cpu::clamp(isa);
    if isa != Isa::Avx512Bf16 {
        run_f32(a, m, w, ep, out);
        return Ok(());
    }
    // Activations rounded to bf16 pairs (u32 per pair) for `vdpbf16ps`.
    scratch::with_zeroed::<u16, _>(m * k2, |ab| {
        for i in 0..m {
            let (src, dst) = (&a[i * k..(i + 1) * k], &mut ab[i * k2..i * k2 + k]);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: BF16 supported (clamped); equal-length slices.
            unsafe {
                avx512bf16::round_row(src, dst)
            };
            #[cfg(not(target_arch = "x86_64"))]
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = bf16::from_f32(x).to_bits();
            }
        }
        run_bf16(ab, m, w, ep, out);
    });
    Ok(())
}

/// bf16 activations (`M×K`) — what a bf16 network passes between layers, and
/// what the peers' bf16 GEMMs take — so no rounding pass is needed.
pub fn gemm_bf16_act(
    a: &[bf16],
    m: usize,
    w: &PackedBf16,
    ep: &F32Epilogue,
    out: &mut [f32],
) -> Result<()> {
    check(m, a.len(), w, ep, out)?;
    let (k, k2) = (w.k, w.k2);
    if cpu::best() != Isa::Avx512Bf16 {
        let af: Vec<f32> = a.iter().map(|v| v.to_f32()).collect();
        run_f32(&af, m, w, ep, out);
        return Ok(());
    }
    if k == k2 {
        // SAFETY: bf16 is a transparent 16-bit value; same length and alignment as u16.
        let ab = unsafe { std::slice::from_raw_parts(a.as_ptr() as *const u16, a.len()) };
        run_bf16(ab, m, w, ep, out);
    } else {
        scratch::with_zeroed::<u16, _>(m * k2, |ab| {
            for i in 0..m {
                for (d, s) in ab[i * k2..i * k2 + k]
                    .iter_mut()
                    .zip(&a[i * k..(i + 1) * k])
                {
                    *d = s.to_bits();
                }
            }
            run_bf16(ab, m, w, ep, out);
        });
    }
    Ok(())
}

/// The BF16 path over activation rows of `K2` bf16 values.
fn run_bf16(ab: &[u16], m: usize, w: &PackedBf16, ep: &F32Epilogue, out: &mut [f32]) {
    let optr = OutF32(out.as_mut_ptr());
    let tasks = tiling::plan(m, w.n.div_ceil(NR), MR);
    tiling::run(&tasks, usize::MAX, |r0, r1, p| {
        let o = optr;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only called when BF16 is supported; disjoint in-bounds tiles.
        unsafe {
            avx512bf16::panel_rows(ab, r0, r1, w, p, ep, o.0)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (ab, r0, r1, p, o);
    });
}

/// The portable path: weights widened to f32.
fn run_f32(a: &[f32], m: usize, w: &PackedBf16, ep: &F32Epilogue, out: &mut [f32]) {
    let optr = OutF32(out.as_mut_ptr());
    let tasks = tiling::plan(m, w.n.div_ceil(NR), MR);
    tiling::run(&tasks, usize::MAX, |r0, r1, p| {
        let o = optr;
        // SAFETY: disjoint in-bounds tiles.
        unsafe { portable_rows(a, r0, r1, w, p, ep, o.0) }
    });
}

#[derive(Clone, Copy)]
struct OutF32(*mut f32);
// SAFETY: from a live `&mut [f32]` outliving the parallel region; disjoint writes.
unsafe impl Send for OutF32 {}
// SAFETY: as above.
unsafe impl Sync for OutF32 {}

/// Weights widened to f32 (exact), f32 activations, f32 FMA.
///
/// # Safety
/// `out` valid `M×N`, rows `r0..r1` × panel `p` ours alone.
unsafe fn portable_rows(
    a: &[f32],
    r0: usize,
    r1: usize,
    w: &PackedBf16,
    p: usize,
    ep: &F32Epilogue,
    out: *mut f32,
) {
    let (n, k, k2) = (w.n, w.k, w.k2);
    let panel = &w.data[p * k2 * NR..(p + 1) * k2 * NR];
    let j0 = p * NR;
    let cols = (n - j0).min(NR);
    for i in r0..r1 {
        let mut acc = [0f32; NR];
        for kk in 0..k {
            let av = a[i * k + kk];
            let base = (kk / 2) * 2 * NR + kk % 2;
            for (c, s) in acc.iter_mut().enumerate() {
                *s = av.mul_add(bf16::from_bits(panel[base + 2 * c]).to_f32(), *s);
            }
        }
        for (c, &s) in acc.iter().enumerate().take(cols) {
            let v = (s + ep.bias.map_or(0.0, |b| b[j0 + c]))
                .max(ep.lo)
                .min(ep.hi);
            // SAFETY: in bounds and ours.
            unsafe { *out.add(i * n + j0 + c) = v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512bf16 {
    use super::{PackedBf16, MR, NR};
    use crate::f32gemm::F32Epilogue;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX512_BF16; `ab` = M rows of K2 bf16; `out` as in the caller.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn panel_rows(
        ab: &[u16],
        r0: usize,
        r1: usize,
        w: &PackedBf16,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let mut i = r0;
        // SAFETY: forwarded; tiles stay in rows r0..r1.
        unsafe {
            if r1 - r0 == 1 {
                return tile1(ab, i, w, p, ep, out);
            }
            while i + MR <= r1 {
                tile::<MR>(ab, i, w, p, ep, out);
                i += MR;
            }
            match r1 - i {
                0 => {}
                1 => tile::<1>(ab, i, w, p, ep, out),
                2 => tile::<2>(ab, i, w, p, ep, out),
                3 => tile::<3>(ab, i, w, p, ep, out),
                4 => tile::<4>(ab, i, w, p, ep, out),
                5 => tile::<5>(ab, i, w, p, ep, out),
                6 => tile::<6>(ab, i, w, p, ep, out),
                _ => tile::<7>(ab, i, w, p, ep, out),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn store(
        v: [__m512; 2],
        i: usize,
        w: &PackedBf16,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        // SAFETY: forwarded (row i, panel p of an M×N output); NR = 32.
        unsafe { crate::f32gemm::avx512::store_tile_row(v, i, w.n, p * NR, ep, out) }
    }

    /// f32 → bf16 with round-to-nearest-even, 16 at a time (`vcvtneps2bf16`).
    ///
    /// # Safety
    /// AVX512_BF16; `dst.len() == src.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
        let mut t = 0;
        // SAFETY: masked loads/stores stay inside both slices.
        unsafe {
            while t < src.len() {
                let w = (src.len() - t).min(16);
                let m: __mmask16 = if w == 16 { 0xFFFF } else { (1u16 << w) - 1 };
                let x = _mm512_maskz_loadu_ps(m, src.as_ptr().add(t));
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(x));
                _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(t) as *mut i16, m, h);
                t += 16;
            }
        }
    }

    #[inline(always)]
    unsafe fn bh(x: __m512i) -> __m512bh {
        // SAFETY: same size; bf16 vectors are plain 16-bit lanes.
        unsafe { std::mem::transmute(x) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile<const R: usize>(
        ab: &[u16],
        i0: usize,
        w: &PackedBf16,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let k2 = w.k2;
        let b = w.data.as_ptr().wrapping_add(p * k2 * NR);
        let a = ab.as_ptr().wrapping_add(i0 * k2);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: rows i0..i0+R of `ab` hold K2 values; the panel K2/2 pairs.
        unsafe {
            for q in 0..k2 / 2 {
                let b0 = bh(_mm512_loadu_si512(b.add(q * 64) as *const _));
                let b1 = bh(_mm512_loadu_si512(b.add(q * 64 + 32) as *const _));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = bh(_mm512_set1_epi32(
                        (a.add(r * k2 + 2 * q) as *const i32).read_unaligned(),
                    ));
                    acc_r[0] = _mm512_dpbf16_ps(acc_r[0], av, b0);
                    acc_r[1] = _mm512_dpbf16_ps(acc_r[1], av, b1);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                store(*acc_r, i0 + r, w, p, ep, out);
            }
        }
    }

    /// One row with four pair-interleaved accumulator pairs (latency hiding).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile1(
        ab: &[u16],
        i0: usize,
        w: &PackedBf16,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let k2 = w.k2;
        let pairs = k2 / 2;
        let b = w.data.as_ptr().wrapping_add(p * k2 * NR);
        let a = ab.as_ptr().wrapping_add(i0 * k2);
        let mut acc = [_mm512_setzero_ps(); 8];
        // SAFETY: as in `tile`.
        unsafe {
            let mut q = 0;
            while q + 4 <= pairs {
                for u in 0..4 {
                    let av = bh(_mm512_set1_epi32(
                        (a.add(2 * (q + u)) as *const i32).read_unaligned(),
                    ));
                    let bq = b.add((q + u) * 64);
                    acc[2 * u] =
                        _mm512_dpbf16_ps(acc[2 * u], av, bh(_mm512_loadu_si512(bq as *const _)));
                    acc[2 * u + 1] = _mm512_dpbf16_ps(
                        acc[2 * u + 1],
                        av,
                        bh(_mm512_loadu_si512(bq.add(32) as *const _)),
                    );
                }
                q += 4;
            }
            while q < pairs {
                let av = bh(_mm512_set1_epi32(
                    (a.add(2 * q) as *const i32).read_unaligned(),
                ));
                let bq = b.add(q * 64);
                acc[0] = _mm512_dpbf16_ps(acc[0], av, bh(_mm512_loadu_si512(bq as *const _)));
                acc[1] =
                    _mm512_dpbf16_ps(acc[1], av, bh(_mm512_loadu_si512(bq.add(32) as *const _)));
                q += 1;
            }
            let s0 = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[4], acc[6]));
            let s1 = _mm512_add_ps(_mm512_add_ps(acc[1], acc[3]), _mm512_add_ps(acc[5], acc[7]));
            store([s0, s1], i0, w, p, ep, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check(m: usize, k: usize, n: usize, seed: u64) {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
        let w: Vec<bf16> = (0..n * k)
            .map(|_| bf16::from_f32(r.gen::<f32>() * 2.0 - 1.0))
            .collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.05).collect();
        let ep = F32Epilogue {
            bias: Some(&bias),
            ..Default::default()
        };
        let exact = crate::f32gemm::reference(&a, m, &wf, n, k);
        let p = PackedBf16::pack(&w, n, k).unwrap();
        for isa in cpu::available() {
            let mut y = vec![0f32; m * n];
            gemm_with(isa, &a, m, &p, &ep, &mut y).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let mag: f32 = (0..k).map(|t| (a[i * k + t] * wf[j * k + t]).abs()).sum();
                    let tol = (1.0 / 256.0 + 2.0 * k as f32 * f32::EPSILON) * mag + 1e-6;
                    let (got, want) = (y[i * n + j], exact[i * n + j] + bias[j]);
                    assert!(
                        (got - want).abs() <= tol,
                        "{isa:?} ({i},{j}) m={m} k={k} n={n}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn edge_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 3, 33),
            (2, 16, 32),
            (9, 17, 65),
            (1, 1001, 40),
            (13, 64, 31),
        ] {
            check(m, k, n, (m + k * n) as u64);
        }
    }

    #[test]
    fn bf16_activations_equal_rounded_f32_activations() {
        let mut r = ChaCha8Rng::seed_from_u64(9);
        for &(m, k, n) in &[(3, 17, 40), (8, 64, 33), (1, 5, 7)] {
            let a: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() - 0.5).collect();
            let ah: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
            let w: Vec<bf16> = (0..n * k)
                .map(|_| bf16::from_f32(r.gen::<f32>() - 0.5))
                .collect();
            let p = PackedBf16::pack(&w, n, k).unwrap();
            let (mut y1, mut y2) = (vec![0f32; m * n], vec![0f32; m * n]);
            gemm_bf16_act(&ah, m, &p, &F32Epilogue::default(), &mut y1).unwrap();
            let back: Vec<f32> = ah.iter().map(|v| v.to_f32()).collect();
            gemm(&back, m, &p, &F32Epilogue::default(), &mut y2).unwrap();
            assert_eq!(y1, y2);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes(m in 1usize..20, k in 1usize..150, n in 1usize..70, seed in any::<u64>()) {
            check(m, k, n, seed);
        }
    }
}
