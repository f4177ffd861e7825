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
    /// `w` is stored `K×N` (as given to [`PackedF32::pack_kn`]) rather than `N×K`.
    kn: bool,
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
            kn: false,
            data,
        })
    }

    /// Packs weights given transposed, `wt: K×N` row-major (an ONNX MatMul
    /// right operand, or an im2col matrix whose columns are output
    /// positions). Rows of `wt` are contiguous runs of a panel, so this is a
    /// sequence of short copies.
    pub fn pack_kn(wt: &[f32], k: usize, n: usize) -> Result<Self> {
        check_len("f32 weights (K×N)", n * k, wt.len())?;
        if n == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "f32 weights",
                why: format!("empty shape N={n} K={k}"),
            });
        }
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for p in 0..panels {
            let j0 = p * NR;
            let cols = (n - j0).min(NR);
            let dst = &mut data[p * k * NR..(p + 1) * k * NR];
            for (kk, d) in dst.chunks_exact_mut(NR).enumerate() {
                d[..cols].copy_from_slice(&wt[kk * n + j0..kk * n + j0 + cols]);
            }
        }
        let w = if cpu::best() >= Isa::Avx512 {
            // Only the `gemm` crate fallback reads the unpacked copy.
            Vec::new()
        } else {
            wt.to_vec()
        };
        Ok(PackedF32 {
            n,
            k,
            w,
            kn: true,
            data,
        })
    }
    /// Takes panels a caller wrote itself in the layout shown on
    /// [`PackedF32`] (`⌈N/32⌉·K·32` floats), e.g. an im2col that writes its
    /// columns straight into panels instead of a `K×N` matrix packed after.
    /// Only our kernel can read it: [`gemm`] runs it on our scalar path
    /// where AVX-512 is missing.
    pub fn from_panels(data: Vec<f32>, k: usize, n: usize) -> Result<Self> {
        if n == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "f32 panels",
                why: format!("empty shape N={n} K={k}"),
            });
        }
        check_len(
            "f32 panels (⌈N/32⌉·K·32)",
            n.div_ceil(NR) * k * NR,
            data.len(),
        )?;
        Ok(PackedF32 {
            n,
            k,
            w: Vec::new(),
            kn: true,
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
    /// Added to column `j` (one value per output channel of `W`).
    pub bias: Option<&'a [f32]>,
    /// Added to row `i` (one per row of `A`): the bias of a convolution that
    /// puts its weights on the left, `Y = W·col`.
    pub row_bias: Option<&'a [f32]>,
    pub lo: f32,
    pub hi: f32,
}

impl Default for F32Epilogue<'_> {
    fn default() -> Self {
        F32Epilogue {
            bias: None,
            row_bias: None,
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

/// [`gemm`] on the calling thread only: for callers that already run one
/// product per rayon task (e.g. one per image of a batch), where splitting
/// each small product again would only add fork/join overhead.
pub fn gemm_serial(
    a: &[f32],
    m: usize,
    w: &PackedF32,
    ep: &F32Epilogue,
    out: &mut [f32],
) -> Result<()> {
    gemm_inner(choose(m, w.n, w.k), a, m, w, ep, out, false)
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
    gemm_inner(path, a, m, w, ep, out, true)
}

fn gemm_inner(
    path: F32Path,
    a: &[f32],
    m: usize,
    w: &PackedF32,
    ep: &F32Epilogue,
    out: &mut [f32],
    parallel: bool,
) -> Result<()> {
    let (n, k) = (w.n, w.k);
    check_len("f32 activations (M×K)", m * k, a.len())?;
    check_len("f32 output (M×N)", m * n, out.len())?;
    if let Some(b) = ep.bias {
        check_len("f32 bias", n, b.len())?;
    }
    if let Some(b) = ep.row_bias {
        check_len("f32 row bias", m, b.len())?;
    }
    if m == 0 {
        return Ok(());
    }
    // `pack_kn` drops the unpacked copy where our kernel always runs.
    let path = match path {
        F32Path::GemmCrate if w.w.is_empty() => F32Path::Own(cpu::best()),
        p => p,
    };
    match path {
        F32Path::GemmCrate => {
            let threads = rayon::current_num_threads();
            let par = if parallel && threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            };
            // rhs element (k, j) = W[j][k]: at j·K + k, or k·N + j when kept K×N.
            let (rhs_cs, rhs_rs) = if w.kn {
                (1, n as isize)
            } else {
                (k as isize, 1)
            };
            // SAFETY: dst is M×N row-major (col stride 1, row stride N), lhs
            // is A M×K row-major, rhs as above; all lengths checked above.
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
                    rhs_cs,
                    rhs_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            };
            for (i, row) in out.chunks_exact_mut(n).enumerate() {
                let rb = ep.row_bias.map_or(0.0, |b| b[i]);
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (*v + ep.bias.map_or(0.0, |b| b[j]) + rb)
                        .max(ep.lo)
                        .min(ep.hi);
                }
            }
        }
        F32Path::Own(isa) => {
            let isa = cpu::clamp(isa);
            let optr = SendPtr(out.as_mut_ptr());
            let tasks = if parallel {
                tiling::plan(m, n.div_ceil(NR), MR)
            } else {
                vec![(0, m, 0, n.div_ceil(NR))]
            };
            tiling::run(&tasks, usize::MAX, |r0, r1, p| {
                let o = optr;
                // SAFETY: disjoint in-bounds tiles; ISA clamped.
                unsafe { panel_rows(isa, a, r0, r1, w, p, ep, o.0) }
            });
        }
    }
    Ok(())
}

/// A strided read-only matrix: element (i, j) is `data[i * rs + j * cs]`,
/// so transposes cost nothing.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: cols,
        }
    }
    /// Whether an `r`×`c` matrix with these strides fits in the slice.
    fn fits(&self, r: usize, c: usize) -> bool {
        r == 0
            || c == 0
            || (r - 1)
                .checked_mul(self.rs)
                .zip((c - 1).checked_mul(self.cs))
                .and_then(|(x, y)| x.checked_add(y))
                .is_some_and(|last| last < self.data.len())
    }
}

/// Below this many multiply-adds [`sgemm_strided`] stays on one thread: the
/// fork/join cost of rayon exceeds the work.
const PARALLEL_FLOPS: usize = 1 << 18;

/// `c[m×n] (row-major) = alpha · a[m×k] · b[k×n] + beta · c` for operands
/// that are not packed ahead of time (both change on every call), on the
/// `gemm` crate, which packs them itself. `beta = None` overwrites `c`
/// without reading it. `threads > 1` splits big products over the current
/// rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    alpha: f32,
    beta: Option<f32>,
    threads: usize,
) -> Result<()> {
    if !a.fits(m, k) || !b.fits(k, n) {
        return Err(KernelError::Unsupported {
            what: "strided sgemm operands",
            why: format!("A {m}×{k} or B {k}×{n} does not fit its slice with the given strides"),
        });
    }
    if c.len() < m * n {
        return Err(KernelError::Length {
            what: "sgemm output (M×N)",
            expected: m * n,
            got: c.len(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let c = &mut c[..m * n];
    if k == 0 {
        match beta {
            Some(bt) => c.iter_mut().for_each(|x| *x *= bt),
            None => c.fill(0.0),
        }
        return Ok(());
    }
    let par = if threads > 1 && m * n * k >= PARALLEL_FLOPS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `fits` checked that every element read through the (rs, cs)
    // strides lies inside `a.data` / `b.data`; `c` holds the m·n row-major
    // elements written; the borrows last the whole call, so nothing aliases.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta.is_some(),
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            beta.unwrap_or(0.0),
            alpha,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// `out[M×N] = clip(A[M×K] · B[K×N] + bias)` with `B` read in place,
/// row-major with row stride `N`: no packing. A pointwise convolution's
/// input (NCHW: channel rows of `H·W` positions) is exactly such a `B`, so
/// its GEMM skips the copy into panels that otherwise costs as much as a
/// small product. Returns `Ok(false)` without touching `out` where the
/// AVX-512 kernel is missing (the caller packs and uses [`gemm`] then).
#[allow(clippy::too_many_arguments)]
pub fn gemm_unpacked_b(
    a: &[f32],
    m: usize,
    b: &[f32],
    k: usize,
    n: usize,
    ep: &F32Epilogue,
    out: &mut [f32],
    parallel: bool,
) -> Result<bool> {
    check_len("f32 left operand (M×K)", m * k, a.len())?;
    check_len("f32 right operand (K×N)", k * n, b.len())?;
    check_len("f32 output (M×N)", m * n, out.len())?;
    if let Some(bb) = ep.bias {
        check_len("f32 bias", n, bb.len())?;
    }
    if let Some(bb) = ep.row_bias {
        check_len("f32 row bias", m, bb.len())?;
    }
    if cpu::best() < Isa::Avx512 {
        return Ok(false);
    }
    if m == 0 || n == 0 {
        return Ok(true);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let optr = SendPtr(out.as_mut_ptr());
        let panels = n.div_ceil(NR);
        let tasks = if parallel {
            tiling::plan(m, panels, MR)
        } else {
            vec![(0, m, 0, panels)]
        };
        tiling::run(&tasks, usize::MAX, |r0, r1, p| {
            let o = optr;
            // SAFETY: AVX-512 checked above; disjoint in-bounds tiles; all
            // operand lengths checked against m, k, n.
            unsafe { avx512::unpacked_rows(a, r0, r1, b, k, n, p, ep, o.0) }
        });
        Ok(true)
    }
    #[cfg(not(target_arch = "x86_64"))]
    Ok(false)
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
                let rb = ep.row_bias.map_or(0.0, |b| b[i]);
                for (c, &s) in acc.iter().enumerate().take(cols) {
                    let v = (s + ep.bias.map_or(0.0, |b| b[j0 + c]) + rb)
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
pub(crate) mod avx512 {
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
        // SAFETY: forwarded (row i, panel p of an M×N output).
        unsafe { store_tile_row(v, i, w.n, p * NR, ep, out) }
    }

    /// Applies `ep` to one row of a 32-column tile (columns `j0..`, clipped
    /// to `n`) and stores it: the epilogue every AVX-512 f32-output GEMM
    /// (f32, bf16, unpacked-B) shares.
    ///
    /// # Safety
    /// AVX-512F; `out` is a valid row-major `…×n` output with row `i` and
    /// columns `j0..min(j0 + 32, n)` ours; `ep.bias` (if any) has `n` values
    /// and `ep.row_bias` (if any) covers row `i`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn store_tile_row(
        v: [__m512; 2],
        i: usize,
        n: usize,
        j0: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let cols = (n - j0).min(32);
        for (h, &x) in v.iter().enumerate() {
            let wc = cols.saturating_sub(16 * h).min(16);
            if wc == 0 {
                break;
            }
            let m: __mmask16 = if wc == 16 { 0xFFFF } else { (1u16 << wc) - 1 };
            // SAFETY: masked to in-bounds columns of row i (caller's contract).
            unsafe {
                let b = match ep.bias {
                    Some(b) => _mm512_maskz_loadu_ps(m, b.as_ptr().add(j0 + 16 * h)),
                    None => _mm512_setzero_ps(),
                };
                let y = _mm512_add_ps(x, b);
                let y = match ep.row_bias {
                    Some(rb) => _mm512_add_ps(y, _mm512_set1_ps(rb[i])),
                    None => y,
                };
                let y = _mm512_min_ps(
                    _mm512_max_ps(y, _mm512_set1_ps(ep.lo)),
                    _mm512_set1_ps(ep.hi),
                );
                _mm512_mask_storeu_ps(out.add(i * n + j0 + 16 * h), m, y);
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

    /// Rows `r0..r1` × panel `p` of `A·B` with `B` (`K×N`, row stride `N`)
    /// read in place; the last panel's columns past `N` are masked.
    ///
    /// # Safety
    /// AVX-512F; operands of the stated sizes; `out` valid `M×N`, these
    /// tiles ours alone.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    pub(super) unsafe fn unpacked_rows(
        a: &[f32],
        r0: usize,
        r1: usize,
        b: &[f32],
        k: usize,
        n: usize,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let mut i = r0;
        // SAFETY: tiles stay inside rows r0..r1 and columns < n; forwarded.
        unsafe {
            while i + MR <= r1 {
                tile_kn::<MR>(a, i, b, k, n, p, ep, out);
                i += MR;
            }
            match r1 - i {
                0 => {}
                1 => tile_kn::<1>(a, i, b, k, n, p, ep, out),
                2 => tile_kn::<2>(a, i, b, k, n, p, ep, out),
                3 => tile_kn::<3>(a, i, b, k, n, p, ep, out),
                4 => tile_kn::<4>(a, i, b, k, n, p, ep, out),
                5 => tile_kn::<5>(a, i, b, k, n, p, ep, out),
                6 => tile_kn::<6>(a, i, b, k, n, p, ep, out),
                _ => tile_kn::<7>(a, i, b, k, n, p, ep, out),
            }
        }
    }

    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    unsafe fn tile_kn<const R: usize>(
        a: &[f32],
        i0: usize,
        b: &[f32],
        k: usize,
        n: usize,
        p: usize,
        ep: &F32Epilogue,
        out: *mut f32,
    ) {
        let j0 = p * NR;
        let cols = (n - j0).min(NR);
        let mask = |h: usize| -> __mmask16 {
            let wc = cols.saturating_sub(16 * h).min(16);
            if wc == 16 {
                0xFFFF
            } else {
                ((1u32 << wc) - 1) as u16
            }
        };
        let (m0, m1) = (mask(0), mask(1));
        let bp = b.as_ptr().wrapping_add(j0);
        let ap = a.as_ptr().wrapping_add(i0 * k);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: rows i0..i0+R of A are in bounds; B loads are masked to
        // columns j0..j0+cols < n of rows kk < k.
        unsafe {
            for kk in 0..k {
                let row = bp.wrapping_add(kk * n);
                let b0 = _mm512_maskz_loadu_ps(m0, row);
                let b1 = _mm512_maskz_loadu_ps(m1, row.wrapping_add(16));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r * k + kk));
                    acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
                    acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                store_tile_row(*acc_r, i0 + r, n, j0, ep, out);
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

    /// The unpacked-B kernel equals the reference product within the
    /// summation bound, with bias, row bias and clamp, over shapes with
    /// partial panels and partial row tiles.
    #[test]
    fn unpacked_b_matches_the_reference() {
        for &(m, k, n) in &[
            (64, 16, 784),
            (24, 96, 196),
            (7, 5, 33),
            (9, 1, 16),
            (1, 3, 1),
            (16, 40, 49),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 50.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 17 % 89) as f32 - 44.0) / 45.0)
                .collect();
            let bt: Vec<f32> = (0..n * k).map(|q| b[(q % k) * n + q / k]).collect();
            let want = reference(&a, m, &bt, n, k);
            let rb: Vec<f32> = (0..m).map(|i| i as f32 * 0.1).collect();
            let cb: Vec<f32> = (0..n).map(|j| j as f32 * -0.01).collect();
            let ep = F32Epilogue {
                bias: Some(&cb),
                row_bias: Some(&rb),
                lo: -1.0,
                hi: 2.0,
            };
            for parallel in [false, true] {
                let mut out = vec![f32::NAN; m * n];
                if !gemm_unpacked_b(&a, m, &b, k, n, &ep, &mut out, parallel).unwrap() {
                    return; // no AVX-512 here: the caller packs instead
                }
                for i in 0..m {
                    for j in 0..n {
                        let e = (want[i * n + j] + cb[j] + rb[i]).clamp(-1.0, 2.0);
                        let g = out[i * n + j];
                        assert!(
                            (g - e).abs() <= 1e-5 * (k as f32 + 1.0),
                            "{m}×{k}×{n} ({i},{j}): {g} vs {e}"
                        );
                    }
                }
            }
        }
        assert!(gemm_unpacked_b(
            &[0.0; 4],
            2,
            &[0.0; 5],
            2,
            3,
            &F32Epilogue::default(),
            &mut [0.0; 6],
            false
        )
        .is_err());
    }
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
            ..Default::default()
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

    /// `pack_kn` of `Wᵀ` with a row bias equals the N×K packing with the
    /// bias added per row, on every path.
    #[test]
    fn pack_kn_and_row_bias_match_reference() {
        for &(m, k, n, seed) in &[
            (1, 1, 1, 1u64),
            (3, 9, 33, 2),
            (8, 27, 196, 3),
            (17, 5, 49, 4),
        ] {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            let a: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
            let w: Vec<f32> = (0..n * k).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
            let mut wt = vec![0f32; k * n];
            for j in 0..n {
                for t in 0..k {
                    wt[t * n + j] = w[j * k + t];
                }
            }
            let rb: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
            let exact = reference(&a, m, &w, n, k);
            let p = PackedF32::pack_kn(&wt, k, n).unwrap();
            let ep = F32Epilogue {
                row_bias: Some(&rb),
                lo: -0.5,
                ..Default::default()
            };
            let mut paths = vec![F32Path::GemmCrate];
            paths.extend(cpu::available().into_iter().map(F32Path::Own));
            for path in paths {
                let mut y = vec![0f32; m * n];
                gemm_with(path, &a, m, &p, &ep, &mut y).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want = (exact[i * n + j] + rb[i]).max(-0.5);
                        let tol = 2.0 * k as f32 * f32::EPSILON * k as f32 + 1e-6;
                        assert!((y[i * n + j] - want).abs() <= tol, "{path:?} ({i},{j})");
                    }
                }
            }
            let bad = F32Epilogue {
                row_bias: Some(&rb[..m - 1]),
                ..Default::default()
            };
            let mut y = vec![0f32; m * n];
            assert!(gemm(&a, m, &p, &bad, &mut y).is_err());
        }
    }

    /// Panels written by hand in the documented layout give the same
    /// product as `pack_kn`.
    #[test]
    fn from_panels_equals_pack_kn() {
        let (m, k, n): (usize, usize, usize) = (3, 5, 40);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 3.0).collect();
        let wt: Vec<f32> = (0..k * n).map(|v| (v % 7) as f32 - 3.0).collect();
        let mut data = vec![0f32; n.div_ceil(NR) * k * NR];
        for kk in 0..k {
            for j in 0..n {
                data[(j / NR) * k * NR + kk * NR + j % NR] = wt[kk * n + j];
            }
        }
        let (p1, p2) = (
            PackedF32::pack_kn(&wt, k, n).unwrap(),
            PackedF32::from_panels(data, k, n).unwrap(),
        );
        let (mut y1, mut y2) = (vec![0f32; m * n], vec![0f32; m * n]);
        let ep = F32Epilogue::default();
        gemm(&a, m, &p1, &ep, &mut y1).unwrap();
        gemm_with(F32Path::GemmCrate, &a, m, &p2, &ep, &mut y2).unwrap();
        assert_eq!(y1, y2);
        assert!(PackedF32::from_panels(vec![0.0; 3], k, n).is_err());
    }

    /// The strided product equals the naive one for every transpose, with
    /// alpha, beta, and out-of-bounds strides rejected.
    #[test]
    fn strided_matches_naive() {
        let (m, n, k) = (5, 7, 11);
        let mut r = ChaCha8Rng::seed_from_u64(9);
        let a: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|_| r.gen::<f32>() - 0.5).collect();
        let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        let c0: Vec<f32> = (0..m * n).map(|x| x as f32 * 0.01).collect();
        for (am, bm) in [
            (MatRef::rows(&a, k), MatRef::rows(&b, n)),
            (MatRef::transposed(&at, m), MatRef::transposed(&bt, k)),
        ] {
            let mut c = c0.clone();
            sgemm_strided(m, n, k, am, bm, &mut c, 2.0, Some(0.5), 1).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let s: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
                    let want = 2.0 * s + 0.5 * c0[i * n + j];
                    assert!((c[i * n + j] - want).abs() < 1e-5, "({i},{j})");
                }
            }
        }
        let mut c = vec![0f32; m * n];
        assert!(sgemm_strided(
            m,
            n,
            k,
            MatRef::rows(&a[1..], k),
            MatRef::rows(&b, n),
            &mut c,
            1.0,
            None,
            1
        )
        .is_err());
        assert!(sgemm_strided(
            m,
            n,
            k,
            MatRef::rows(&a, k),
            MatRef::rows(&b, n),
            &mut c[1..],
            1.0,
            None,
            1
        )
        .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes(m in 1usize..20, k in 1usize..200, n in 1usize..80, seed in any::<u64>()) {
            check(m, k, n, seed);
        }
    }
}
