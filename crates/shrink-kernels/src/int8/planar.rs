//! int8 convolution as a GEMM in NCHW: weights broadcast, pixels as vectors.
//!
//! `Y[r][p] = Σ_k W[r][k]·(X[k][p] − z_x) + bias[r]`, then canonical
//! requantisation ([`requantize`]), for `W: M×K` s8 (one row per output
//! channel) and `X: K×P` u8 — the im2col matrix of one image in NCHW order,
//! whose row `k` is a whole plane. Rows of `Y` are output planes, so the
//! result lands in NCHW directly: no transpose of the input (1×1 convs) nor
//! of the output, unlike the row-major [`super::gemm`].
//!
//! `vpdpbusd` multiplies four unsigned bytes by four signed bytes and adds
//! the four products into an i32 lane. Here the unsigned operand is a vector
//! of 16 pixels × 4 consecutive k (the activations), the signed one four
//! weights of one row broadcast to every lane; so X is stored
//! quad-interleaved ([`QuadInput`]): `x4[(k/4)·PP·4 + p·4 + k%4]`, PP = P
//! rounded up to 16. The zero point is folded out: `Σ w·(x − z) = Σ w·x −
//! z·Σ_k w`, with `Σ_k w` computed at packing. Weight zero points must be 0
//! (symmetric weights, which every per-channel quantiser writes).

use super::Requant;
use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// s8 weights `M×K` stored row by row with K padded to a multiple of 4.
#[derive(Debug, Clone)]
pub struct PackedRowsI8 {
    m: usize,
    k: usize,
    k4: usize,
    data: Vec<i8>,
    row_sums: Vec<i32>,
}

impl PackedRowsI8 {
    /// Packs `w` (`M×K`, row `r` = output channel `r`).
    pub fn pack(w: &[i8], m: usize, k: usize) -> Result<Self> {
        check_len("int8 planar weights (M×K)", m * k, w.len())?;
        if m == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "int8 planar weights",
                why: format!("empty shape M={m} K={k}"),
            });
        }
        let k4 = k.div_ceil(4) * 4;
        let mut data = vec![0i8; m * k4];
        let mut row_sums = vec![0i32; m];
        for r in 0..m {
            let row = &w[r * k..(r + 1) * k];
            data[r * k4..r * k4 + k].copy_from_slice(row);
            row_sums[r] = row.iter().map(|&v| v as i32).sum();
        }
        Ok(PackedRowsI8 {
            m,
            k,
            k4,
            data,
            row_sums,
        })
    }
    /// Output channels (rows).
    pub fn m(&self) -> usize {
        self.m
    }
    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// The activations of one GEMM, quad-interleaved (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct QuadInput {
    /// Pixels (columns of X).
    pub p: usize,
    /// `p` rounded up to 16.
    pub pp: usize,
    /// Reduction length (rows of X).
    pub k: usize,
    pub data: Vec<u8>,
    /// Scratch: the plain row-major im2col matrix.
    col: Vec<u8>,
}

/// Geometry of the im2col of one image (or group): `c` planes of `h×w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Im2col {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    /// (stride_h, stride_w)
    pub stride: (usize, usize),
    /// (top, left, bottom, right)
    pub pad: (usize, usize, usize, usize),
    /// (dilation_h, dilation_w)
    pub dilation: (usize, usize),
}

impl Im2col {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let eh = self.dilation.0 * (self.kh - 1) + 1;
        let ew = self.dilation.1 * (self.kw - 1) + 1;
        (
            (self.h + self.pad.0 + self.pad.2 - eh) / self.stride.0 + 1,
            (self.w + self.pad.1 + self.pad.3 - ew) / self.stride.1 + 1,
        )
    }
}

/// Plain im2col: row `k = (c·kh + ky)·kw + kx` of a `K×P` matrix holds the
/// input under tap (ky, kx) of channel c for every output pixel, `fill`
/// (the zero point) in the padding. Rows are built from contiguous copies
/// where the stride is 1.
pub fn im2col(s: &Im2col, x: &[u8], fill: u8, col: &mut Vec<u8>) -> Result<()> {
    check_len("im2col input (C×H×W)", s.c * s.h * s.w, x.len())?;
    let bad = [
        s.kh,
        s.kw,
        s.stride.0,
        s.stride.1,
        s.dilation.0,
        s.dilation.1,
    ]
    .contains(&0)
        || s.h + s.pad.0 + s.pad.2 < s.dilation.0 * (s.kh.max(1) - 1) + 1
        || s.w + s.pad.1 + s.pad.3 < s.dilation.1 * (s.kw.max(1) - 1) + 1;
    if bad {
        return Err(KernelError::Unsupported {
            what: "im2col shape",
            why: format!("{s:?}"),
        });
    }
    let (oh, ow) = s.out_hw();
    let p = oh * ow;
    let k = s.c * s.kh * s.kw;
    col.clear();
    col.resize(k * p, fill);
    for c in 0..s.c {
        let plane = &x[c * s.h * s.w..][..s.h * s.w];
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let row = &mut col[((c * s.kh + ky) * s.kw + kx) * p..][..p];
                // Output columns whose tap lands inside the input:
                // ix = ox·sw + kx·dw − pl ∈ [0, w).
                let off = (kx * s.dilation.1) as isize - s.pad.1 as isize;
                let sw = s.stride.1 as isize;
                let lo = if off >= 0 {
                    0
                } else {
                    ((-off + sw - 1) / sw) as usize
                };
                let hi = if (s.w as isize) <= off {
                    0
                } else {
                    ((s.w as isize - off + sw - 1) / sw) as usize
                };
                let (lo, hi) = (lo.min(ow), hi.min(ow).max(lo.min(ow)));
                for oy in 0..oh {
                    let iy = (oy * s.stride.0 + ky * s.dilation.0) as isize - s.pad.0 as isize;
                    if iy < 0 || iy as usize >= s.h || lo == hi {
                        continue;
                    }
                    let src = &plane[iy as usize * s.w..][..s.w];
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    let first = (lo as isize * sw + off) as usize;
                    if sw == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (t, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[first + t * s.stride.1];
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

impl QuadInput {
    /// Re-sizes for a `k × p` matrix; padding k rows and pixel columns hold 0
    /// (their weights are 0, and padded pixels are never stored).
    pub fn reset(&mut self, k: usize, p: usize) {
        self.p = p;
        self.pp = p.div_ceil(16) * 16;
        self.k = k;
        let len = k.div_ceil(4) * self.pp * 4;
        self.data.clear();
        self.data.resize(len, 0);
    }

    /// Sets row `k` of X from `row` (P values).
    #[inline]
    pub fn set_row(&mut self, k: usize, row: &[u8]) {
        let base = (k / 4) * self.pp * 4 + k % 4;
        let dst = &mut self.data[base..];
        for (p, &v) in row.iter().enumerate().take(self.p) {
            dst[p * 4] = v;
        }
    }

    /// Fills with the im2col of one image (or group) `x` (see [`im2col`]).
    pub fn from_image(&mut self, s: &Im2col, x: &[u8], za: u8) -> Result<()> {
        let mut col = std::mem::take(&mut self.col);
        let r = im2col(s, x, za, &mut col).and_then(|_| {
            let (oh, ow) = s.out_hw();
            self.from_rows(&col, s.c * s.kh * s.kw, oh * ow)
        });
        self.col = col;
        r
    }

    /// Fills from a plain row-major `k × p` matrix (the 1×1 conv input).
    pub fn from_rows(&mut self, x: &[u8], k: usize, p: usize) -> Result<()> {
        check_len("int8 planar input (K×P)", k * p, x.len())?;
        self.reset(k, p);
        let pp = self.pp;
        for q in 0..k.div_ceil(4) {
            let dst = &mut self.data[q * pp * 4..q * pp * 4 + p * 4];
            let rows = (k - 4 * q).min(4);
            if rows == 4 {
                let (r0, r1, r2, r3) = (
                    &x[(4 * q) * p..][..p],
                    &x[(4 * q + 1) * p..][..p],
                    &x[(4 * q + 2) * p..][..p],
                    &x[(4 * q + 3) * p..][..p],
                );
                interleave4(r0, r1, r2, r3, dst);
            } else {
                for t in 0..rows {
                    let r = &x[(4 * q + t) * p..][..p];
                    for (i, &v) in r.iter().enumerate() {
                        dst[i * 4 + t] = v;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `dst[4i + t] = r_t[i]`: four rows into one of byte quads.
fn interleave4(r0: &[u8], r1: &[u8], r2: &[u8], r3: &[u8], dst: &mut [u8]) {
    let p = r0.len();
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while i + 16 <= p {
            // SAFETY: SSE2 is part of x86-64; 16 bytes are read at i of each
            // row (i + 16 ≤ p = every row's length) and 64 written at 4i
            // (dst holds 4p bytes).
            unsafe {
                let a = _mm_loadu_si128(r0.as_ptr().add(i) as *const _);
                let b = _mm_loadu_si128(r1.as_ptr().add(i) as *const _);
                let c = _mm_loadu_si128(r2.as_ptr().add(i) as *const _);
                let d = _mm_loadu_si128(r3.as_ptr().add(i) as *const _);
                let ab_lo = _mm_unpacklo_epi8(a, b);
                let ab_hi = _mm_unpackhi_epi8(a, b);
                let cd_lo = _mm_unpacklo_epi8(c, d);
                let cd_hi = _mm_unpackhi_epi8(c, d);
                let o = dst.as_mut_ptr().add(4 * i);
                _mm_storeu_si128(o as *mut _, _mm_unpacklo_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(o.add(16) as *mut _, _mm_unpackhi_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(o.add(32) as *mut _, _mm_unpacklo_epi16(ab_hi, cd_hi));
                _mm_storeu_si128(o.add(48) as *mut _, _mm_unpackhi_epi16(ab_hi, cd_hi));
            }
            i += 16;
        }
    }
    for j in i..p {
        dst[4 * j..4 * j + 4].copy_from_slice(&[r0[j], r1[j], r2[j], r3[j]]);
    }
}

/// Plain loops over unpacked operands: `Y[r][p]` requantised, the reference
/// every path must equal. `x` is row-major `K×P`.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    w: &[i8],
    m: usize,
    k: usize,
    x: &[u8],
    p: usize,
    za: u8,
    rq: &Requant,
) -> Vec<i32> {
    let mut y = vec![0i32; m * p];
    for r in 0..m {
        for c in 0..p {
            let mut acc = rq.bias_at(r);
            for kk in 0..k {
                acc = acc.wrapping_add(
                    (w[r * k + kk] as i32).wrapping_mul(x[kk * p + c] as i32 - za as i32),
                );
            }
            y[r * p + c] = rq.apply(acc, r);
        }
    }
    y
}

/// Rows `r0..r1` of `Y = requant(W·(X − za) + bias)` into `out` (those rows
/// only, row-major `(r1−r0)×P` bytes; i8 outputs are stored as their
/// two's-complement bytes), on the best path for this CPU.
pub fn gemm(
    w: &PackedRowsI8,
    x: &QuadInput,
    za: u8,
    rq: &Requant,
    rows: (usize, usize),
    out: &mut [u8],
) -> Result<()> {
    gemm_with(cpu::best(), w, x, za, rq, rows, out)
}

/// [`gemm`] on a chosen path (lowered to what the CPU supports).
pub fn gemm_with(
    isa: Isa,
    w: &PackedRowsI8,
    x: &QuadInput,
    za: u8,
    rq: &Requant,
    rows: (usize, usize),
    out: &mut [u8],
) -> Result<()> {
    let (r0, r1) = rows;
    if r0 > r1 || r1 > w.m {
        return Err(KernelError::Unsupported {
            what: "int8 planar rows",
            why: format!("rows {r0}..{r1} of {}", w.m),
        });
    }
    if x.k != w.k {
        return Err(KernelError::Length {
            what: "int8 planar input rows (K)",
            expected: w.k,
            got: x.k,
        });
    }
    check_len("int8 planar quad input", w.k4 / 4 * x.pp * 4, x.data.len())?;
    check_len("int8 planar output ((r1−r0)×P)", (r1 - r0) * x.p, out.len())?;
    rq.check(w.m)?;
    if x.p == 0 {
        return Ok(());
    }
    // Per row: bias − za·Σw, added to the raw products.
    let fix: Vec<i32> = (0..w.m)
        .map(|r| {
            rq.bias_at(r)
                .wrapping_sub((za as i32).wrapping_mul(w.row_sums[r]))
        })
        .collect();
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: the CPU supports AVX-512 VNNI (clamped above); the
            // lengths of weights, input and output were checked.
            unsafe { avx512::rows(w, x, &fix, rq, r0, r1, out) };
        }
        _ => portable_rows(w, x, &fix, rq, r0, r1, out),
    }
    Ok(())
}

/// Scalar loop over the packed operands: the path without AVX-512 VNNI.
fn portable_rows(
    w: &PackedRowsI8,
    x: &QuadInput,
    fix: &[i32],
    rq: &Requant,
    r0: usize,
    r1: usize,
    out: &mut [u8],
) {
    let mut acc = vec![0i32; x.p];
    for r in r0..r1 {
        acc.iter_mut().for_each(|a| *a = fix[r]);
        let wr = &w.data[r * w.k4..(r + 1) * w.k4];
        for q in 0..w.k4 / 4 {
            let xq = &x.data[q * x.pp * 4..][..x.p * 4];
            let wq = &wr[4 * q..4 * q + 4];
            for (a, xs) in acc.iter_mut().zip(xq.chunks_exact(4)) {
                let mut s = 0i32;
                for t in 0..4 {
                    s += xs[t] as i32 * wq[t] as i32;
                }
                *a = a.wrapping_add(s);
            }
        }
        for (o, &a) in out[(r - r0) * x.p..(r - r0 + 1) * x.p].iter_mut().zip(&acc) {
            *o = rq.apply(a, r) as u8;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedRowsI8, QuadInput, Requant};
    use std::arch::x86_64::*;

    /// Rows `r0..r1`, in tiles of 4 rows × 64 pixels (then narrower tails).
    ///
    /// # Safety
    /// CPU supports AVX-512 F/BW/VNNI; operand lengths checked by the caller.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn rows(
        w: &PackedRowsI8,
        x: &QuadInput,
        fix: &[i32],
        rq: &Requant,
        r0: usize,
        r1: usize,
        out: &mut [u8],
    ) {
        let mut r = r0;
        // SAFETY (all tiles): rows r..r+R < r1 ≤ M and `o` points at row r
        // of the output (which holds rows r0..r1); pixel blocks stay below
        // PP, which the quad input holds for every k quad.
        unsafe {
            while r + 4 <= r1 {
                let o = out.as_mut_ptr().add((r - r0) * x.p);
                cols::<4>(w, x, fix, rq, r, o);
                r += 4;
            }
            let o = out.as_mut_ptr().add((r - r0) * x.p);
            match r1 - r {
                0 => {}
                1 => cols::<1>(w, x, fix, rq, r, o),
                2 => cols::<2>(w, x, fix, rq, r, o),
                _ => cols::<3>(w, x, fix, rq, r, o),
            }
        }
    }

    /// All pixel blocks of rows `r..r+R`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn cols<const R: usize>(
        w: &PackedRowsI8,
        x: &QuadInput,
        fix: &[i32],
        rq: &Requant,
        r: usize,
        o: *mut u8,
    ) {
        let mut c = 0;
        // SAFETY: forwarded; blocks stay below PP.
        unsafe {
            while c + 64 <= x.pp {
                tile::<R, 4>(w, x, fix, rq, r, c, o);
                c += 64;
            }
            while c < x.pp {
                tile::<R, 1>(w, x, fix, rq, r, c, o);
                c += 16;
            }
        }
    }

    /// An R-row × 16V-pixel register tile over the full K; `o` points at
    /// the output row of `r`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const R: usize, const V: usize>(
        w: &PackedRowsI8,
        x: &QuadInput,
        fix: &[i32],
        rq: &Requant,
        r: usize,
        c: usize,
        o: *mut u8,
    ) {
        let quads = w.k4 / 4;
        let mut acc = [[_mm512_setzero_si512(); V]; R];
        let xb = x.data.as_ptr();
        let wb = w.data.as_ptr() as *const u8;
        // SAFETY: quad q of the input holds PP·4 bytes, c + 16V ≤ PP; weight
        // rows hold k4 bytes.
        unsafe {
            for q in 0..quads {
                let base = xb.add((q * x.pp + c) * 4);
                let mut xv = [_mm512_setzero_si512(); V];
                for (j, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(base.add(64 * j) as *const _);
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_epi32(
                        (wb.add((r + i) * w.k4 + 4 * q) as *const i32).read_unaligned(),
                    );
                    for j in 0..V {
                        acc_i[j] = _mm512_dpbusd_epi32(acc_i[j], xv[j], wv);
                    }
                }
            }
            for (i, acc_i) in acc.iter().enumerate() {
                let row = r + i;
                let f = _mm512_set1_epi32(fix[row]);
                let m = _mm512_set1_ps(rq.mult_at(row));
                let lo = _mm512_set1_ps((rq.lo - rq.out_zero) as f32);
                let hi = _mm512_set1_ps((rq.hi - rq.out_zero) as f32);
                let zo = _mm512_set1_epi32(rq.out_zero);
                for (j, &a) in acc_i.iter().enumerate() {
                    let c0 = c + 16 * j;
                    if c0 >= x.p {
                        break;
                    }
                    let n = (x.p - c0).min(16);
                    let mask: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
                    let q = crate::int8::requant16(_mm512_add_epi32(a, f), m, lo, hi, zo);
                    _mm512_mask_cvtepi32_storeu_epi8(o.add(i * x.p + c0) as *mut _, mask, q);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn every_path_equals_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for &(m, k, p) in &[
            (1, 1, 1),
            (3, 5, 17),
            (4, 16, 64),
            (7, 9, 100),
            (16, 27, 784),
            (5, 130, 49),
            (24, 96, 196),
        ] {
            let w: Vec<i8> = (0..m * k).map(|_| rng.gen()).collect();
            let x: Vec<u8> = (0..k * p).map(|_| rng.gen()).collect();
            let bias: Vec<i32> = (0..m).map(|_| rng.gen_range(-5000..5000)).collect();
            let mult: Vec<f32> = (0..m).map(|_| rng.gen_range(1e-5..3e-3)).collect();
            let packed = PackedRowsI8::pack(&w, m, k).unwrap();
            let mut xq = QuadInput::default();
            xq.from_rows(&x, k, p).unwrap();
            for &(za, zo, lo, hi) in &[
                (0u8, 0, 0, 255),
                (255, 255, 0, 255),
                (128, 7, 7, 200),
                (3, 0, -128, 127),
                (77, -128, -128, 127),
            ] {
                let rq = Requant {
                    mult: &mult,
                    bias: Some(&bias),
                    out_zero: zo,
                    lo,
                    hi,
                };
                let want = reference(&w, m, k, &x, p, za, &rq);
                for isa in cpu::available() {
                    let mut out = vec![0u8; m * p];
                    gemm_with(isa, &packed, &xq, za, &rq, (0, m), &mut out).unwrap();
                    // A row range writes just those rows.
                    if m > 2 {
                        let mut part = vec![0u8; (m - 1) * p];
                        gemm_with(isa, &packed, &xq, za, &rq, (1, m), &mut part).unwrap();
                        assert_eq!(part, out[p..], "{isa:?} rows 1..{m}");
                    }
                    let got: Vec<i32> = out
                        .iter()
                        .map(|&b| if lo < 0 { b as i8 as i32 } else { b as i32 })
                        .collect();
                    assert_eq!(got, want, "{isa:?} m={m} k={k} p={p} za={za} zo={zo}");
                }
            }
        }
    }

    /// The im2col input times the weights equals direct convolution loops.
    #[test]
    fn im2col_input_equals_direct_convolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for s in [
            Im2col {
                c: 3,
                h: 9,
                w: 7,
                kh: 3,
                kw: 3,
                stride: (1, 1),
                pad: (1, 1, 1, 1),
                dilation: (1, 1),
            },
            Im2col {
                c: 2,
                h: 10,
                w: 11,
                kh: 3,
                kw: 2,
                stride: (2, 3),
                pad: (0, 2, 1, 0),
                dilation: (1, 1),
            },
            Im2col {
                c: 1,
                h: 28,
                w: 28,
                kh: 5,
                kw: 5,
                stride: (1, 1),
                pad: (2, 2, 2, 2),
                dilation: (1, 1),
            },
            Im2col {
                c: 4,
                h: 6,
                w: 9,
                kh: 3,
                kw: 3,
                stride: (1, 2),
                pad: (2, 2, 2, 2),
                dilation: (2, 2),
            },
        ] {
            let (oh, ow) = s.out_hw();
            let k = s.c * s.kh * s.kw;
            let m = 5;
            let x: Vec<u8> = (0..s.c * s.h * s.w).map(|_| rng.gen()).collect();
            let w: Vec<i8> = (0..m * k).map(|_| rng.gen()).collect();
            let za = 37u8;
            let rq = Requant {
                mult: &[1.0],
                bias: None,
                out_zero: 0,
                lo: i32::MIN / 2,
                hi: i32::MAX / 2,
            };
            let packed = PackedRowsI8::pack(&w, m, k).unwrap();
            let mut xq = QuadInput::default();
            xq.from_image(&s, &x, za).unwrap();
            for isa in cpu::available() {
                let mut out = vec![0u8; m * oh * ow];
                // Exact sums are compared through a small multiplier-free check:
                // recompute them directly and requantise the same way.
                gemm_with(isa, &packed, &xq, za, &rq, (0, m), &mut out).unwrap();
                for r in 0..m {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = 0i32;
                            for c in 0..s.c {
                                for ky in 0..s.kh {
                                    for kx in 0..s.kw {
                                        let iy = (oy * s.stride.0 + ky * s.dilation.0) as isize
                                            - s.pad.0 as isize;
                                        let ix = (ox * s.stride.1 + kx * s.dilation.1) as isize
                                            - s.pad.1 as isize;
                                        if iy >= 0
                                            && ix >= 0
                                            && (iy as usize) < s.h
                                            && (ix as usize) < s.w
                                        {
                                            let xv = x[(c * s.h + iy as usize) * s.w + ix as usize]
                                                as i32
                                                - za as i32;
                                            acc +=
                                                xv * w[r * k + (c * s.kh + ky) * s.kw + kx] as i32;
                                        }
                                    }
                                }
                            }
                            assert_eq!(
                                out[r * oh * ow + oy * ow + ox],
                                rq.apply(acc, r) as u8,
                                "{isa:?} {s:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let w = PackedRowsI8::pack(&[1, 2, 3, 4, 5, 6], 2, 3).unwrap();
        let mut x = QuadInput::default();
        x.from_rows(&[0; 8], 4, 2).unwrap();
        let rq = Requant {
            mult: &[1.0],
            bias: None,
            out_zero: 0,
            lo: 0,
            hi: 255,
        };
        assert!(gemm(&w, &x, 0, &rq, (0, 2), &mut [0; 4]).is_err());
        assert!(PackedRowsI8::pack(&[0; 5], 2, 3).is_err());
    }
}
