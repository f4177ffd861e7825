//! f32 GEMM `Y = act(A·Wᵀ + bias)`: our AVX-512 register-tile kernel, or the
//! `gemm` crate, whichever measured faster for the shape (see [`F32Path`]).
//!
//! Results differ from the exact product only by f32 rounding; the tests
//! bound the error by `2·K·ε·Σ_k |a_k·w_k|` (the classic summation bound).

use crate::cpu::{self, Isa};
use crate::{check_len, tiling, KernelError, Result};

/// Columns per packed panel (two 16-lane registers).
pub const NR: usize = 32;
const MR: usize = 8;

/// Which implementation runs a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Path {
    /// Our packed-panel kernel at the given ISA level.
    Own(Isa),
    /// The `gemm` crate (packs A and B itself on every call).
    GemmCrate,
}

/// f32 weights `W: N×K` kept as given (for the `gemm` crate) and packed.
///
/// ```text
///  panel p (columns 32p..32p+31), K·32 floats, panels one after another
///  k = 0: │ W[32p+0][0] │ W[32p+1][0] │ … │ W[32p+31][0] │   128 bytes
///  k = 1: │ W[32p+0][1] │ …                              │
///  index of W[j][k] = (j/32)·K·32 + k·32 + j%32;  columns ≥ N hold 0
/// ```
#[derive(Debug, Clone)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    w: Vec<f32>,
    data: Vec<f32>,
}

impl PackedF32 {
    /// Packs `w` (`N×K`, row `j` = output channel `j`).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Result<Self> {
        check_len("f32 weights (N×K)", n * k, w.len())?;
        if n == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "f32 weights",
                why: format!("empty shape N={n} K={k}"),
            });
        }
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for j in 0..n {
            for kk in 0..k {
                data[(j / NR) * k * NR + kk * NR + j % NR] = w[j * k + kk];
            }
        }
        Ok(PackedF32 {
            n,
            k,
            w: w.to_vec(),
            data,
        })
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

/// What follows the product: bias and clip (`lo = 0` is ReLU).
#[derive(Debug, Clone, Copy)]
pub struct F32Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub lo: f32,
    pub hi: f32,
}

impl Default for F32Epilogue<'_> {
    fn default() -> Self {
        F32Epilogue {
            bias: None,
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        }
    }
}

/// Exact-order f64 reference `A·Wᵀ` rounded once to f32.
pub fn reference(a: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|t| a[i * k + t] as f64 * w[j * k + t] as f64)
                .sum();
            y[i * n + j] = s as f32;
        }
    }
    y
}

/// The path [`gemm`] takes for a shape on this CPU.
///
/// Our kernel keeps B packed ahead of time and skips packing A; measured on
/// this Zen 4 (bench/results/kernels.md) it beats the `gemm` crate at every
/// benchmark shape, so the crate is the fallback for CPUs without AVX-512
/// (its own AVX2/FMA kernels are better than our scalar loop there).
pub fn choose(_m: usize, _n: usize, _k: usize) -> F32Path {
    let isa = cpu::best();
    if isa >= Isa::Avx512 {
        F32Path::Own(isa)
    } else {
        F32Path::GemmCrate
    }
}

/// `out = clip(A·Wᵀ + bias)` on the path [`choose`] picks, threaded.
pub fn gemm(a: &[f32], m: usize, w: &PackedF32, ep: &F32Epilogue, out: &mut [f32]) -> Result<()> {
    gemm_with(choose(m, w.n, w.k), a, m, w, ep, out)
}

/// [`gemm`] on a chosen path.
pub fn gemm_with(
    path: F32Path,
    a: &[f32],
    m: usize,
    w: &PackedF32,
    ep: &F32Epilogue,
    out: &mut [f32],
) -> Result<()> {
    let (n, k) = (w.n, w.k);
    check_len("f32 activations (M×K)", m * k, a.len())?;
    check_len("f32 output (M×N)", m * n, out.len())?;
    if let Some(b) = ep.bias {
        check_len("f32 bias", n, b.len())?;
    }
    if m == 0 {
        return Ok(());
    }
    match path {
        F32Path::GemmCrate => {
            let threads = rayon::current_num_threads();
            let par = if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: dst is M×N row-major (col stride 1, row stride N), lhs
            // is A M×K row-major, rhs element (k, j) = W[j][k] at j·K + k; all
            // lengths checked above.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    w.w.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            };
            for row in out.chunks_exact_mut(n) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (*v + ep.bias.map_or(0.0, |b| b[j])).max(ep.lo).min(ep.hi);
                }
            }
        }
        F32Path::Own(isa) => {
            let isa = cpu::clamp(isa);
            let optr = SendPtr(out.as_mut_ptr());
            let tasks = tiling::plan(m, n.div_ceil(NR), MR);
            tiling::run(&tasks, usize::MAX, |r0, r1, p| {
                let o = optr;
                // SAFETY: disjoint in-bounds tiles; ISA clamped.
                unsafe { panel_rows(isa, a, r0, r1, w, p, ep, o.0) }
            });
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: built from a live `&mut [f32]` outliving the parallel region; tasks
// write disjoint elements.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// # Safety
/// `isa` supported; `out` valid `M×N`, these elements ours alone.
#[allow(clippy::too_many_arguments)]
unsafe fn panel_rows(
    isa: Isa,
    a: &[f32],
    r0: usize,
    r1: usize,
    w: &PackedF32,
    p: usize,
    ep: &F32Epilogue,
    out: *mut f32,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: forwarded.
            unsafe { avx512::panel_rows(a, r0, r1, w, p, ep, out) }
        }
        _ => {
            let (n, k) = (w.n, w.k);
            let panel = &w.data[p * k * NR..(p + 1) * k * NR];
            let j0 = p * NR;
            let cols = (n - j0).min(NR);
            for i in r0..r1 {
                let mut acc = [0f32; NR];
                for (kk, &av) in a[i * k..(i + 1) * k].iter().enumerate() {
                    for (s, &wv) in acc.iter_mut().zip(&panel[kk * NR..(kk + 1) * NR]) {
                        *s = av.mul_add(wv, *s);
                    }
                }
                for (c, &s) in acc.iter().enumerate().take(cols) {
                    let v = (s + ep.bias.map_or(0.0, |b| b[j0 + c]))
                        .max(ep.lo)
                        .min(ep.hi);
                    // SAFETY: row i, column j0+c in bounds and ours.
                    unsafe { *out.add(i * n + j0 + c) = v };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{F32Epilogue, PackedF32, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F; `out` valid `M×N`, rows `r0..r1` × panel `p` ours alone.
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    pub(super) unsafe fn panel_rows(
        a: &[f32],
        r0: usize,
        r1: usize,
        w: &PackedF32,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let mut i = r0;
        // SAFETY: tiles stay inside rows r0..r1 and the panel; forwarded.
        unsafe {
            if r1 - r0 == 1 {
                return tile1(a, i, w, p, ep, out);
            }
            while i + MR <= r1 {
                tile::<MR>(a, i, w, p, ep, out);
                i += MR;
            }
            match r1 - i {
                0 => {}
                1 => tile::<1>(a, i, w, p, ep, out),
                2 => tile::<2>(a, i, w, p, ep, out),
                3 => tile::<3>(a, i, w, p, ep, out),
                4 => tile::<4>(a, i, w, p, ep, out),
                5 => tile::<5>(a, i, w, p, ep, out),
                6 => tile::<6>(a, i, w, p, ep, out),
                _ => tile::<7>(a, i, w, p, ep, out),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    unsafe fn store(
        v: [__m512; 2],
        i: usize,
        w: &PackedF32,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let j0 = p * NR;
        let cols = (w.n - j0).min(NR);
        for (h, &x) in v.iter().enumerate() {
            let wc = cols.saturating_sub(16 * h).min(16);
            if wc == 0 {
                break;
            }
            let m: __mmask16 = if wc == 16 { 0xFFFF } else { (1u16 << wc) - 1 };
            // SAFETY: masked to in-bounds columns of row i.
            unsafe {
                let b = match ep.bias {
                    Some(b) => _mm512_maskz_loadu_ps(m, b.as_ptr().add(j0 + 16 * h)),
                    None => _mm512_setzero_ps(),
                };
                let y = _mm512_add_ps(x, b);
                let y = _mm512_min_ps(
                    _mm512_max_ps(y, _mm512_set1_ps(ep.lo)),
                    _mm512_set1_ps(ep.hi),
                );
                _mm512_mask_storeu_ps(out.add(i * w.n + j0 + 16 * h), m, y);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    unsafe fn tile<const R: usize>(
        a: &[f32],
        i0: usize,
        w: &PackedF32,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let k = w.k;
        let b = w.data.as_ptr().wrapping_add(p * k * NR);
        let ap = a.as_ptr().wrapping_add(i0 * k);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: rows i0..i0+R of A and the K×32 panel are in bounds.
        unsafe {
            for kk in 0..k {
                let b0 = _mm512_loadu_ps(b.add(kk * NR));
                let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r * k + kk));
                    acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                store(*acc_r, i0 + r, w, p, ep, out);
            }
        }
    }

    /// One row: four k-interleaved accumulator pairs hide the FMA latency.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    unsafe fn tile1(
        a: &[f32],
        i0: usize,
        w: &PackedF32,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let k = w.k;
        let b = w.data.as_ptr().wrapping_add(p * k * NR);
        let ap = a.as_ptr().wrapping_add(i0 * k);
        let z = _mm512_setzero_ps();
        let mut acc = [z; 8];
        // SAFETY: as in `tile`.
        unsafe {
            let mut kk = 0;
            while kk + 4 <= k {
                // Weights stream from memory once; fetching 32 rows (4 KiB)
                // ahead keeps more cache-line misses in flight than the
                // hardware prefetcher alone does.
                for u in 0..8 {
                    _mm_prefetch::<_MM_HINT_T0>(
                        b.wrapping_add((kk + 32) * NR + 16 * u) as *const i8
                    );
                }
                for u in 0..4 {
                    let av = _mm512_set1_ps(*ap.add(kk + u));
                    let bq = b.add((kk + u) * NR);
                    acc[2 * u] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bq), acc[2 * u]);
                    acc[2 * u + 1] =
                        _mm512_fmadd_ps(av, _mm512_loadu_ps(bq.add(16)), acc[2 * u + 1]);
                }
                kk += 4;
            }
            while kk < k {
                let av = _mm512_set1_ps(*ap.add(kk));
                let bq = b.add(kk * NR);
                acc[0] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bq), acc[0]);
                acc[1] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bq.add(16)), acc[1]);
                kk += 1;
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
        let w: Vec<f32> = (0..n * k).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1 - 1.0).collect();
        let exact = reference(&a, m, &w, n, k);
        let p = PackedF32::pack(&w, n, k).unwrap();
        let ep = F32Epilogue {
            bias: Some(&bias),
            lo: 0.0,
            hi: 6.0,
        };
        let mut paths = vec![F32Path::GemmCrate];
        paths.extend(cpu::available().into_iter().map(F32Path::Own));
        for path in paths {
            let mut y = vec![0f32; m * n];
            gemm_with(path, &a, m, &p, &ep, &mut y).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let mag: f32 = (0..k).map(|t| (a[i * k + t] * w[j * k + t]).abs()).sum();
                    let tol = 2.0 * k as f32 * f32::EPSILON * mag + 1e-6;
                    let want = (exact[i * n + j] + bias[j]).clamp(0.0, 6.0);
                    let got = y[i * n + j];
                    assert!(
                        (got - want).abs() <= tol,
                        "{path:?} ({i},{j}) m={m} k={k} n={n}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn edge_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 7, 33),
            (2, 16, 32),
            (9, 17, 65),
            (17, 100, 31),
            (1, 1000, 64),
        ] {
            check(m, k, n, (m * k + n) as u64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes(m in 1usize..20, k in 1usize..200, n in 1usize..80, seed in any::<u64>()) {
            check(m, k, n, seed);
        }
    }
}
