//! Channels-last (NHWC) int8 kernels: the depthwise 3×3 conv of MobileNet's
//! inverted-residual blocks, an NHWC im2col for small ungrouped convs, and
//! the byte layout conversions.
//!
//! In NCHW a depthwise conv works plane by plane, and the 7×7 or 4×4 planes
//! of a small network's deep layers fill a fraction of a vector; in NHWC the
//! channels of one pixel are contiguous, so 16 channels go through every
//! step together on any plane size. The 1×1 convs need no kernel of their
//! own: an NHWC activation is a row-major `[pixels × C]` u8 matrix, which
//! is exactly the A operand of [`super::gemm_bias`].
//!
//! The depthwise sums are exact and equal the canonical requantisation's
//! `acc = Σ (q_x − z_x)·w + bias` (see [`super::Requant`]):
//! the image is copied into a buffer padded by one pixel of `z_x` on every
//! side (a padded tap then contributes `(z_x − z_x)·w = 0`, as ONNX's zero
//! padding of the real values requires), the sum is split as
//! `Σ q_x·w + (bias − z_x·Σ w)`, and `Σ q_x·w` is accumulated with f32
//! fused multiply-adds: each product is at most 255·128 in magnitude and
//! nine of them stay below 2²⁴, so every partial sum is an integer f32
//! represents exactly. The second term is per channel and added in i32
//! (wrapping, as every integer path does).

use super::Requant;
use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// Channels per vector step (one AVX-512 register of i32/f32).
pub const LANES: usize = 16;

/// Geometry of a depthwise 3×3 conv over one NHWC image: padding 1 on every
/// side, the same stride (1 or 2) on both axes, `c` channels in and out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dw3x3 {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub stride: usize,
}

impl Dw3x3 {
    /// Output height and width: `(h + 2 − 3)/s + 1`.
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h.max(1) - 1) / self.stride.max(1) + 1,
            (self.w.max(1) - 1) / self.stride.max(1) + 1,
        )
    }
    fn check(&self) -> Result<()> {
        if self.h == 0 || self.w == 0 || self.c == 0 || !(1..=2).contains(&self.stride) {
            return Err(KernelError::Unsupported {
                what: "NHWC depthwise 3×3",
                why: format!(
                    "needs a non-empty image and stride 1 or 2, got {}×{}×{} stride {}",
                    self.h, self.w, self.c, self.stride
                ),
            });
        }
        Ok(())
    }
}

/// Depthwise taps packed once per session: `[9][cp]` with `cp` = `c`
/// rounded up to [`LANES`] (zeros past `c`), as f32 for the FMA path and
/// i32 for the portable one, and the per-channel tap sums `Σ w`.
#[derive(Debug, Clone)]
pub struct DwTaps {
    c: usize,
    cp: usize,
    taps: Vec<f32>,
    taps_i: Vec<i32>,
    sums: Vec<i32>,
}

impl DwTaps {
    /// `w`: `c × 9` in ONNX order (`[C, 1, 3, 3]`), zero point already
    /// subtracted (the caller folds a non-zero weight zero point into `w`
    /// only when every `w − z_w` fits i8).
    pub fn pack(w: &[i8], c: usize) -> Result<Self> {
        check_len("depthwise 3×3 taps (C×9)", c * 9, w.len())?;
        let cp = c.div_ceil(LANES) * LANES;
        let mut taps_i = vec![0i32; 9 * cp];
        let mut sums = vec![0i32; cp];
        for ch in 0..c {
            for t in 0..9 {
                let v = w[ch * 9 + t] as i32;
                taps_i[t * cp + ch] = v;
                sums[ch] += v;
            }
        }
        Ok(DwTaps {
            c,
            cp,
            taps: taps_i.iter().map(|&v| v as f32).collect(),
            taps_i,
            sums,
        })
    }
    /// Channels.
    pub fn channels(&self) -> usize {
        self.c
    }
}

/// Reusable per-thread buffers of [`depthwise3x3`]: the padded image (its
/// `z_x` border is written only when the geometry or `z_x` changes) and the
/// per-channel constants.
#[derive(Debug, Default)]
pub struct DwScratch {
    key: (usize, usize, usize, usize, u8),
    pad: Vec<u8>,
    fix: Vec<i32>,
    bias: Vec<i32>,
    mult: Vec<f32>,
    plane: Vec<f32>,
}

/// Plain loops over the definition (`Σ` over the taps inside the image of
/// `(x − z_x)·w`, plus bias, requantised): the reference every path must
/// equal. `w` as for [`DwTaps::pack`]; returns the output codes.
pub fn depthwise3x3_reference(s: &Dw3x3, x: &[u8], x_zero: u8, w: &[i8], rq: &Requant) -> Vec<i32> {
    let (oh, ow) = s.out_hw();
    let mut y = vec![0i32; oh * ow * s.c];
    for oy in 0..oh {
        for ox in 0..ow {
            for ch in 0..s.c {
                let mut acc = rq.bias_at(ch);
                for ky in 0..3 {
                    for kx in 0..3 {
                        let iy = (oy * s.stride + ky) as isize - 1;
                        let ix = (ox * s.stride + kx) as isize - 1;
                        if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                            continue;
                        }
                        let xv = x[(iy as usize * s.w + ix as usize) * s.c + ch] as i32;
                        let wv = w[ch * 9 + ky * 3 + kx] as i32;
                        acc = acc.wrapping_add((xv - x_zero as i32) * wv);
                    }
                }
                y[(oy * ow + ox) * s.c + ch] = rq.apply(acc, ch);
            }
        }
    }
    y
}

/// Depthwise 3×3 over one NHWC image `x` (`h·w·c` bytes) into `out`
/// (`oh·ow·c` bytes, requantised; two's complement for i8 ranges), on the
/// best path for this CPU.
pub fn depthwise3x3(
    s: &Dw3x3,
    x: &[u8],
    x_zero: u8,
    taps: &DwTaps,
    rq: &Requant,
    scratch: &mut DwScratch,
    out: &mut [u8],
) -> Result<()> {
    depthwise3x3_with(cpu::best(), s, x, x_zero, taps, rq, scratch, out)
}

/// [`depthwise3x3`] on a chosen path (lowered to what the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn depthwise3x3_with(
    isa: Isa,
    s: &Dw3x3,
    x: &[u8],
    x_zero: u8,
    taps: &DwTaps,
    rq: &Requant,
    scratch: &mut DwScratch,
    out: &mut [u8],
) -> Result<()> {
    s.check()?;
    if taps.c != s.c {
        return Err(KernelError::Length {
            what: "depthwise taps (channels)",
            expected: s.c,
            got: taps.c,
        });
    }
    rq.check(s.c)?;
    let (oh, ow) = s.out_hw();
    check_len("NHWC depthwise input (H·W·C)", s.h * s.w * s.c, x.len())?;
    check_len("NHWC depthwise output (OH·OW·C)", oh * ow * s.c, out.len())?;
    let (c, cp) = (s.c, taps.cp);
    let (hp, wp) = (s.h + 2, s.w + 2);
    let key = (hp, wp, c, cp, x_zero);
    if scratch.key != key || scratch.pad.len() != hp * wp * cp {
        scratch.pad.clear();
        scratch.pad.resize(hp * wp * cp, x_zero);
        scratch.key = key;
    }
    // Interior rows; the border and channels past c keep z_x.
    for iy in 0..s.h {
        let src = &x[iy * s.w * c..(iy + 1) * s.w * c];
        let dst = &mut scratch.pad[((iy + 1) * wp + 1) * cp..((iy + 1) * wp + 1 + s.w) * cp];
        if c == cp {
            dst.copy_from_slice(src);
        } else {
            for (d, sp) in dst.chunks_exact_mut(cp).zip(src.chunks_exact(c)) {
                d[..c].copy_from_slice(sp);
            }
        }
    }
    scratch.fix.clear();
    scratch.fix.extend((0..cp).map(|ch| {
        if ch < c {
            rq.bias_at(ch)
                .wrapping_sub((x_zero as i32).wrapping_mul(taps.sums[ch]))
        } else {
            0
        }
    }));
    scratch.bias.clear();
    scratch
        .bias
        .extend((0..cp).map(|ch| if ch < c { rq.bias_at(ch) } else { 0 }));
    scratch.mult.clear();
    scratch
        .mult
        .extend((0..cp).map(|ch| if ch < c { rq.mult_at(ch) } else { 0.0 }));
    let k = Kernel {
        s,
        oh,
        ow,
        wp,
        cp,
        pad: &scratch.pad,
        taps,
        fix: &scratch.fix,
        bias: &scratch.bias,
        x_zero,
        mult: &scratch.mult,
        zy: rq.out_zero,
        lo: rq.lo,
        hi: rq.hi,
    };
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: the CPU supports AVX-512 F/BW (clamped above); the
            // padded buffer holds hp·wp·cp bytes, bias/mult/taps cp-wide
            // rows and out oh·ow·c bytes (checked above).
            unsafe { avx512::depthwise(&k, &mut scratch.plane, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the CPU supports AVX2 + FMA (clamped above).
            unsafe { portable_avx2(&k, out) }
        }
        _ => portable(&k, out),
    }
    Ok(())
}

/// Everything the depthwise loops read, prepared by [`depthwise3x3_with`].
struct Kernel<'a> {
    s: &'a Dw3x3,
    oh: usize,
    ow: usize,
    wp: usize,
    cp: usize,
    pad: &'a [u8],
    taps: &'a DwTaps,
    /// `bias − z_x·Σ w` per channel (the integer paths sum `q_x·w`).
    fix: &'a [i32],
    /// The bias alone (the FMA path sums `(q_x − z_x)·w`).
    bias: &'a [i32],
    x_zero: u8,
    mult: &'a [f32],
    zy: i32,
    lo: i32,
    hi: i32,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn portable_avx2(k: &Kernel, out: &mut [u8]) {
    portable(k, out)
}

/// Integer loops over the padded image (LLVM vectorises the channel loop
/// in the AVX2 wrapper); the same sums as the FMA path, exactly.
#[inline(always)]
fn portable(k: &Kernel, out: &mut [u8]) {
    let (c, cp, st) = (k.s.c, k.cp, k.s.stride);
    let mut acc = vec![0i32; cp];
    for oy in 0..k.oh {
        for ox in 0..k.ow {
            acc.copy_from_slice(k.fix);
            for ky in 0..3 {
                for kx in 0..3 {
                    let at = ((oy * st + ky) * k.wp + ox * st + kx) * cp;
                    let xs = &k.pad[at..at + cp];
                    let t = ky * 3 + kx;
                    let ws = &k.taps.taps_i[t * cp..(t + 1) * cp];
                    for ((a, &xv), &wv) in acc.iter_mut().zip(xs).zip(ws) {
                        *a = a.wrapping_add(xv as i32 * wv);
                    }
                }
            }
            let o = &mut out[(oy * k.ow + ox) * c..(oy * k.ow + ox + 1) * c];
            for (ch, q) in o.iter_mut().enumerate() {
                let r = (acc[ch] as f32 * k.mult[ch]).round_ties_even();
                let r = r.max((k.lo - k.zy) as f32).min((k.hi - k.zy) as f32);
                *q = (r as i32 + k.zy) as u8;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Kernel, LANES};
    use std::arch::x86_64::*;

    /// Per channel block of 16: the block's padded plane is converted once
    /// to f32 `q_x − z_x` (`[hp][wp][16]`, so each tap is one FMA with a
    /// memory operand and every input byte is widened once, not nine
    /// times); then rows, eight / four / two / one output pixels at a time
    /// (independent FMA chains hide the FMA latency), with the block's nine
    /// tap vectors, bias and multiplier in registers. `|q_x − z_x|·|w| ≤
    /// 255·128` and nine such products stay below 2²⁴: the sums are exact.
    ///
    /// # Safety
    /// AVX-512 F/BW; `k`'s buffers as [`super::depthwise3x3_with`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn depthwise(k: &Kernel, plane: &mut Vec<f32>, out: &mut [u8]) {
        let (c, cp, st, wp) = (k.s.c, k.cp, k.s.stride, k.wp);
        let hp = k.s.h + 2;
        plane.resize(hp * wp * LANES, 0.0);
        let pl = plane.as_mut_ptr();
        let lo = _mm512_set1_ps((k.lo - k.zy) as f32);
        let hi = _mm512_set1_ps((k.hi - k.zy) as f32);
        let zy = _mm512_set1_epi32(k.zy);
        let zx = _mm512_set1_epi32(k.x_zero as i32);
        for cb in (0..cp).step_by(LANES) {
            let valid = (c - cb).min(LANES);
            let mask: __mmask16 = if valid == LANES {
                0xffff
            } else {
                ((1u32 << valid) - 1) as u16
            };
            // SAFETY (this block): the padded image has hp·wp pixels of cp
            // bytes and cb + 16 ≤ cp; the plane has hp·wp·16 floats; tap
            // rows, bias and mult are cp wide; every plane read is inside
            // ((oh−1)·s + 2 < hp, likewise for columns); every store writes
            // the `valid` channels of an output pixel.
            unsafe {
                for p in 0..hp * wp {
                    let xb = _mm_loadu_si128(k.pad.as_ptr().add(p * cp + cb) as *const __m128i);
                    let v = _mm512_sub_epi32(_mm512_cvtepu8_epi32(xb), zx);
                    _mm512_storeu_ps(pl.add(p * LANES), _mm512_cvtepi32_ps(v));
                }
                let consts = Consts {
                    wv: std::array::from_fn(|t| {
                        _mm512_loadu_ps(k.taps.taps.as_ptr().add(t * cp + cb))
                    }),
                    bias: _mm512_loadu_si512(k.bias.as_ptr().add(cb) as *const _),
                    mult: _mm512_loadu_ps(k.mult.as_ptr().add(cb)),
                    lo,
                    hi,
                    zy,
                    mask,
                };
                let g = Geom { st, wp, c };
                for oy in 0..k.oh {
                    let row = pl.add(oy * st * wp * LANES) as *const f32;
                    let orow = out.as_mut_ptr().add(oy * k.ow * c + cb);
                    let mut ox = 0;
                    while ox + 8 <= k.ow {
                        pixels::<8>(row, ox, &g, &consts, orow);
                        ox += 8;
                    }
                    if ox + 4 <= k.ow {
                        pixels::<4>(row, ox, &g, &consts, orow);
                        ox += 4;
                    }
                    if ox + 2 <= k.ow {
                        pixels::<2>(row, ox, &g, &consts, orow);
                        ox += 2;
                    }
                    if ox < k.ow {
                        pixels::<1>(row, ox, &g, &consts, orow);
                    }
                }
            }
        }
    }

    struct Geom {
        st: usize,
        wp: usize,
        c: usize,
    }

    struct Consts {
        wv: [__m512; 9],
        bias: __m512i,
        mult: __m512,
        lo: __m512,
        hi: __m512,
        zy: __m512i,
        mask: __mmask16,
    }

    /// Output pixels `ox..ox+P` of one row, one channel block.
    ///
    /// # Safety
    /// As [`depthwise`]; `row` points at the block plane's first padded
    /// input row of this output row, `orow` at the row's output bytes of
    /// the block.
    #[inline(always)]
    unsafe fn pixels<const P: usize>(
        row: *const f32,
        ox: usize,
        g: &Geom,
        k: &Consts,
        orow: *mut u8,
    ) {
        // SAFETY: forwarded from the caller (reads inside the plane,
        // masked stores inside the output pixels).
        unsafe {
            let mut acc = [_mm512_setzero_ps(); P];
            for ky in 0..3 {
                for kx in 0..3 {
                    let w = k.wv[ky * 3 + kx];
                    for (p, a) in acc.iter_mut().enumerate() {
                        let ptr = row.add((ky * g.wp + (ox + p) * g.st + kx) * LANES);
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(ptr), w, *a);
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                // The f32 sum is an exact integer: convert, add the bias in i32.
                let s = _mm512_add_epi32(_mm512_cvtps_epi32(*a), k.bias);
                let q = crate::int8::requant16(s, k.mult, k.lo, k.hi, k.zy);
                _mm512_mask_cvtepi32_storeu_epi8(orow.add((ox + p) * g.c) as *mut i8, k.mask, q);
            }
        }
    }
}

/// Weights of a conv with few taps per output (`k = C_in·kh·kw`, at most
/// [`SMALL_K_MAX`]) for [`small_conv`]: `[k][np]` f32, `np` = output
/// channels rounded up to [`LANES`] (zeros past `n`).
#[derive(Debug, Clone)]
pub struct SmallTaps {
    k: usize,
    n: usize,
    np: usize,
    w: Vec<f32>,
}

/// Largest reduction [`small_conv`] accepts: `k·255·128 < 2²⁴` keeps its
/// f32 sums exact.
pub const SMALL_K_MAX: usize = 512;

impl SmallTaps {
    /// `w`: `n × k` (one row per output channel, in the order of the
    /// im2col rows), zero point already subtracted.
    pub fn pack(w: &[i8], n: usize, k: usize) -> Result<Self> {
        check_len("small conv weights (N×K)", n * k, w.len())?;
        if n == 0 || k == 0 || k > SMALL_K_MAX {
            return Err(KernelError::Unsupported {
                what: "small conv weights",
                why: format!("N={n} K={k}: need N ≥ 1 and 1 ≤ K ≤ {SMALL_K_MAX}"),
            });
        }
        let np = n.div_ceil(LANES) * LANES;
        let mut wf = vec![0f32; k * np];
        for j in 0..n {
            for kk in 0..k {
                wf[kk * np + j] = w[j * k + kk] as f32;
            }
        }
        Ok(SmallTaps { k, n, np, w: wf })
    }
}

/// `out[i][j] = requant(Σ_k (rows[i][k] − z_x)·w[j][k] + bias[j])` for `m`
/// im2col rows of `k` bytes (e.g. a 1-channel 3×3 stem, `k` = 9, where a
/// VNNI GEMM spends more on its zero-point fix-up and epilogue than on
/// the nine products): each output pixel is `k` f32 FMAs of a broadcast
/// input with a vector of output channels, four pixels at a time. Exact
/// (see [`SMALL_K_MAX`]); on the best path for this CPU.
pub fn small_conv(
    rows: &[u8],
    m: usize,
    x_zero: u8,
    taps: &SmallTaps,
    rq: &Requant,
    out: &mut [u8],
) -> Result<()> {
    small_conv_with(cpu::best(), rows, m, x_zero, taps, rq, out)
}

/// [`small_conv`] on a chosen path (lowered to what the CPU supports).
pub fn small_conv_with(
    isa: Isa,
    rows: &[u8],
    m: usize,
    x_zero: u8,
    taps: &SmallTaps,
    rq: &Requant,
    out: &mut [u8],
) -> Result<()> {
    let k = taps.k;
    check_len("small conv rows (M×K)", m * k, rows.len())?;
    let bases: Vec<usize> = (0..m).map(|i| i * k).collect();
    let offs: Vec<usize> = (0..k).collect();
    small_conv_at(isa, rows, &bases, &offs, x_zero, taps, rq, out)
}

/// [`small_conv`] straight from one NHWC image (no im2col rows): the image
/// is copied into `scratch` padded with `z_x`, and tap `(ky, kx, c)` of
/// output pixel `(oy, ox)` is read at a fixed offset from the pixel's
/// window corner. `out` is `oh·ow × N`.
pub fn small_conv_image(
    g: &Im2colNhwc,
    x: &[u8],
    x_zero: u8,
    taps: &SmallTaps,
    rq: &Requant,
    scratch: &mut Vec<u8>,
    out: &mut [u8],
) -> Result<()> {
    check_len("NHWC conv image (H·W·C)", g.h * g.w * g.c, x.len())?;
    check_len("small conv taps (kh·kw·C)", g.kh * g.kw * g.c, taps.k)?;
    g.check()?;
    let (oh, ow) = g.out_hw();
    let c = g.c;
    let (hp, wp) = (g.h + g.pad.0 + g.pad.2, g.w + g.pad.1 + g.pad.3);
    scratch.clear();
    scratch.resize(hp * wp * c, x_zero);
    for iy in 0..g.h {
        let at = ((iy + g.pad.0) * wp + g.pad.1) * c;
        scratch[at..at + g.w * c].copy_from_slice(&x[iy * g.w * c..(iy + 1) * g.w * c]);
    }
    let bases: Vec<usize> = (0..oh * ow)
        .map(|i| ((i / ow) * g.stride.0 * wp + (i % ow) * g.stride.1) * c)
        .collect();
    let mut offs = Vec::with_capacity(taps.k);
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            offs.extend((0..c).map(|ci| (ky * wp + kx) * c + ci));
        }
    }
    small_conv_at(cpu::best(), scratch, &bases, &offs, x_zero, taps, rq, out)
}

/// The kernel over any byte source: tap `kk` of output row `i` is
/// `src[bases[i] + offs[kk]]`.
#[allow(clippy::too_many_arguments)]
fn small_conv_at(
    isa: Isa,
    src: &[u8],
    bases: &[usize],
    offs: &[usize],
    x_zero: u8,
    taps: &SmallTaps,
    rq: &Requant,
    out: &mut [u8],
) -> Result<()> {
    let (n, m) = (taps.n, bases.len());
    check_len("small conv tap offsets", taps.k, offs.len())?;
    check_len("small conv output (M×N)", m * n, out.len())?;
    let reach = bases.iter().max().copied().unwrap_or(0) + offs.iter().max().copied().unwrap_or(0);
    if m > 0 && reach >= src.len() {
        return Err(KernelError::Length {
            what: "small conv input (reach of the taps)",
            expected: reach + 1,
            got: src.len(),
        });
    }
    rq.check(n)?;
    let bias: Vec<i32> = (0..taps.np)
        .map(|j| if j < n { rq.bias_at(j) } else { 0 })
        .collect();
    let mult: Vec<f32> = (0..taps.np)
        .map(|j| if j < n { rq.mult_at(j) } else { 0.0 })
        .collect();
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // Each source byte as an f32 `q − z_x` once, so a tap is one FMA
            // with a broadcast memory operand.
            let xf: Vec<f32> = src
                .iter()
                .map(|&b| (b as i32 - x_zero as i32) as f32)
                .collect();
            // SAFETY: AVX-512 F/BW present (clamped above); every
            // bases[i] + offs[kk] < src.len() = xf.len() (reach checked
            // above), out holds m·n bytes, bias/mult/taps np-wide rows.
            unsafe { small_avx512::run(&xf, bases, offs, taps, &bias, &mult, rq, out) }
        }
        _ => {
            for (&base, o) in bases.iter().zip(out.chunks_exact_mut(n)) {
                for (j, q) in o.iter_mut().enumerate() {
                    let mut acc = bias[j];
                    for (kk, &off) in offs.iter().enumerate() {
                        let x = src[base + off];
                        let w = taps.w[kk * taps.np + j] as i32;
                        acc = acc.wrapping_add((x as i32 - x_zero as i32) * w);
                    }
                    *q = rq.apply(acc, j) as u8;
                }
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod small_avx512 {
    use super::{Requant, SmallTaps, LANES};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512 F/BW; buffer sizes as [`super::small_conv_with`] checks.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn run(
        xf: &[f32],
        bases: &[usize],
        offs: &[usize],
        t: &SmallTaps,
        bias: &[i32],
        mult: &[f32],
        rq: &Requant,
        out: &mut [u8],
    ) {
        let (k, n, np, m) = (t.k, t.n, t.np, bases.len());
        let lo = _mm512_set1_ps((rq.lo - rq.out_zero) as f32);
        let hi = _mm512_set1_ps((rq.hi - rq.out_zero) as f32);
        let zy = _mm512_set1_epi32(rq.out_zero);
        for cb in (0..np).step_by(LANES) {
            let valid = (n - cb).min(LANES);
            let mask: __mmask16 = if valid == LANES {
                0xffff
            } else {
                ((1u32 << valid) - 1) as u16
            };
            // SAFETY (this block): tap rows, bias and mult are np wide and
            // cb + 16 ≤ np; source reads are at bases[i] + offs[kk] (i < m,
            // kk < k), in bounds by the caller; stores write the `valid`
            // channels of output row i.
            unsafe {
                let bv = _mm512_loadu_si512(bias.as_ptr().add(cb) as *const _);
                let mv = _mm512_loadu_ps(mult.as_ptr().add(cb));
                let w = t.w.as_ptr().add(cb);
                let mut finish = |acc: __m512, i: usize| {
                    let s = _mm512_add_epi32(_mm512_cvtps_epi32(acc), bv);
                    let q = crate::int8::requant16(s, mv, lo, hi, zy);
                    _mm512_mask_cvtepi32_storeu_epi8(
                        out.as_mut_ptr().add(i * n + cb) as *mut i8,
                        mask,
                        q,
                    );
                };
                let x = |i: usize, kk: usize| {
                    let at = *bases.get_unchecked(i) + *offs.get_unchecked(kk);
                    _mm512_set1_ps(*xf.get_unchecked(at))
                };
                let mut i = 0;
                while i + 4 <= m {
                    let mut a = [_mm512_setzero_ps(); 4];
                    for kk in 0..k {
                        let wk = _mm512_loadu_ps(w.add(kk * np));
                        for (r, ar) in a.iter_mut().enumerate() {
                            *ar = _mm512_fmadd_ps(x(i + r, kk), wk, *ar);
                        }
                    }
                    for (r, ar) in a.iter().enumerate() {
                        finish(*ar, i + r);
                    }
                    i += 4;
                }
                while i < m {
                    let mut a = _mm512_setzero_ps();
                    for kk in 0..k {
                        a = _mm512_fmadd_ps(x(i, kk), _mm512_loadu_ps(w.add(kk * np)), a);
                    }
                    finish(a, i);
                    i += 1;
                }
            }
        }
    }
}

/// 1×1 conv weights packed for [`pointwise`]: panels of 16 output
/// channels, each `K/4` quads of 64 bytes (`W[16p+j][4q..4q+4]` at byte
/// `(p·K/4 + q)·64 + 4j`), i.e. one `vpdpbusd` operand per quad; columns
/// past `n` are zero. `K` must be a multiple of 4.
#[derive(Debug, Clone)]
pub struct PwTaps {
    k: usize,
    n: usize,
    np: usize,
    data: Vec<i8>,
    col_sums: Vec<i32>,
    rows_i: Vec<i32>,
}

impl PwTaps {
    /// `w`: `n × k` (one row per output channel), zero point already 0.
    pub fn pack(w: &[i8], n: usize, k: usize) -> Result<Self> {
        check_len("1×1 conv weights (N×K)", n * k, w.len())?;
        if n == 0 || k == 0 || !k.is_multiple_of(4) {
            return Err(KernelError::Unsupported {
                what: "1×1 conv weights",
                why: format!("N={n} K={k}: need N ≥ 1 and K a positive multiple of 4"),
            });
        }
        let np = n.div_ceil(LANES) * LANES;
        let kq = k / 4;
        let mut data = vec![0i8; np * k];
        let mut col_sums = vec![0i32; np];
        for j in 0..n {
            let (p, l) = (j / LANES, j % LANES);
            for kk in 0..k {
                data[(p * kq + kk / 4) * 64 + 4 * l + kk % 4] = w[j * k + kk];
            }
            col_sums[j] = w[j * k..(j + 1) * k].iter().map(|&v| v as i32).sum();
        }
        Ok(PwTaps {
            k,
            n,
            np,
            data,
            col_sums,
            rows_i: w.iter().map(|&v| v as i32).collect(),
        })
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input channels.
    pub fn k(&self) -> usize {
        self.k
    }
}

/// `out[i][j] = requant(Σ_k (a[i][k] − z_a)·w[j][k] + bias[j])`: a 1×1
/// conv over `m` NHWC pixels (`a` row-major `m × K` u8, `out` `m × N`),
/// with the canonical requantisation fused into the store. The AVX-512
/// VNNI path keeps one 16-channel panel's quads, zero-point fix
/// (`bias − z_a·Σ_k w`) and multipliers in registers while blocks of rows
/// stream past, so the epilogue costs a handful of register operations per
/// 16 outputs (small-K layers such as MobileNet's are epilogue-bound).
pub fn pointwise(
    a: &[u8],
    m: usize,
    a_zero: u8,
    taps: &PwTaps,
    rq: &Requant,
    out: &mut [u8],
) -> Result<()> {
    pointwise_with(cpu::best(), a, m, a_zero, taps, rq, out)
}

/// [`pointwise`] on a chosen path (lowered to what the CPU supports).
pub fn pointwise_with(
    isa: Isa,
    a: &[u8],
    m: usize,
    a_zero: u8,
    taps: &PwTaps,
    rq: &Requant,
    out: &mut [u8],
) -> Result<()> {
    let (k, n) = (taps.k, taps.n);
    check_len("1×1 conv input (M×K)", m * k, a.len())?;
    check_len("1×1 conv output (M×N)", m * n, out.len())?;
    rq.check(n)?;
    match cpu::clamp(isa) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            let za = a_zero as i32;
            let fix: Vec<i32> = (0..taps.np)
                .map(|j| {
                    if j < n {
                        rq.bias_at(j)
                            .wrapping_sub(za.wrapping_mul(taps.col_sums[j]))
                    } else {
                        0
                    }
                })
                .collect();
            let mult: Vec<f32> = (0..taps.np)
                .map(|j| if j < n { rq.mult_at(j) } else { 0.0 })
                .collect();
            // SAFETY: AVX-512 F/BW/VNNI present (clamped above: the
            // AVX-512 level includes VNNI); a holds m·k bytes, out m·n,
            // fix/mult np entries, the panels np·k bytes (checked above).
            unsafe { pw_avx512::run(a, m, taps, &fix, &mult, rq, out) }
        }
        _ => {
            for (row, o) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
                for (j, q) in o.iter_mut().enumerate() {
                    let w = &taps.rows_i[j * k..(j + 1) * k];
                    let acc = row.iter().zip(w).fold(rq.bias_at(j), |s, (&x, &wv)| {
                        s.wrapping_add((x as i32 - a_zero as i32) * wv)
                    });
                    *q = rq.apply(acc, j) as u8;
                }
            }
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod pw_avx512 {
    use super::{PwTaps, Requant, LANES};
    use std::arch::x86_64::*;

    /// Rows per block: the block's activations stay in L1 while every
    /// panel passes over them.
    const MB: usize = 64;

    struct Panel {
        w: *const i8,
        kq: usize,
        fix: __m512i,
        mult: __m512,
        lo: __m512,
        hi: __m512,
        zy: __m512i,
        mask: __mmask16,
    }

    /// # Safety
    /// AVX-512 F/BW/VNNI; sizes as [`super::pointwise_with`] checks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(super) unsafe fn run(
        a: &[u8],
        m: usize,
        t: &PwTaps,
        fix: &[i32],
        mult: &[f32],
        rq: &Requant,
        out: &mut [u8],
    ) {
        let (k, n, kq) = (t.k, t.n, t.k / 4);
        let lo = _mm512_set1_ps((rq.lo - rq.out_zero) as f32);
        let hi = _mm512_set1_ps((rq.hi - rq.out_zero) as f32);
        let zy = _mm512_set1_epi32(rq.out_zero);
        let (ap, op) = (a.as_ptr(), out.as_mut_ptr());
        for r0 in (0..m).step_by(MB) {
            let r1 = (r0 + MB).min(m);
            for p in 0..t.np / LANES {
                let cb = p * LANES;
                let valid = (n - cb).min(LANES);
                // SAFETY (this block): panel p holds kq quads of 64 bytes;
                // fix/mult have np ≥ cb + 16 entries; rows i < r1 ≤ m are
                // inside a (k bytes each) and out (n each), and the masked
                // stores write columns cb..cb+valid ≤ n of row i.
                unsafe {
                    let pan = Panel {
                        w: t.data.as_ptr().add(p * kq * 64),
                        kq,
                        fix: _mm512_loadu_si512(fix.as_ptr().add(cb) as *const _),
                        mult: _mm512_loadu_ps(mult.as_ptr().add(cb)),
                        lo,
                        hi,
                        zy,
                        mask: if valid == LANES {
                            0xffff
                        } else {
                            ((1u32 << valid) - 1) as u16
                        },
                    };
                    let mut i = r0;
                    while i + 8 <= r1 {
                        rows::<8>(ap.add(i * k), k, &pan, op.add(i * n + cb), n);
                        i += 8;
                    }
                    if i + 4 <= r1 {
                        rows::<4>(ap.add(i * k), k, &pan, op.add(i * n + cb), n);
                        i += 4;
                    }
                    while i < r1 {
                        rows::<1>(ap.add(i * k), k, &pan, op.add(i * n + cb), n);
                        i += 1;
                    }
                }
            }
        }
    }

    /// `R` rows of one panel: `vpdpbusd` of each row's broadcast quad with
    /// the panel's quad, then the requantising store.
    ///
    /// # Safety
    /// As [`run`]: `a` at the first row (rows of `k` bytes), `o` at its
    /// panel's first output byte (rows of `n` bytes).
    #[inline(always)]
    unsafe fn rows<const R: usize>(a: *const u8, k: usize, p: &Panel, o: *mut u8, n: usize) {
        // SAFETY: forwarded from the caller.
        unsafe {
            let mut acc = [_mm512_setzero_si512(); R];
            for q in 0..p.kq {
                let wv = _mm512_loadu_si512(p.w.add(q * 64) as *const _);
                for (r, ar) in acc.iter_mut().enumerate() {
                    let av = (a.add(r * k + 4 * q) as *const i32).read_unaligned();
                    *ar = _mm512_dpbusd_epi32(*ar, _mm512_set1_epi32(av), wv);
                }
            }
            for (r, ar) in acc.iter().enumerate() {
                let s = _mm512_add_epi32(*ar, p.fix);
                let q = crate::int8::requant16(s, p.mult, p.lo, p.hi, p.zy);
                _mm512_mask_cvtepi32_storeu_epi8(o.add(r * n) as *mut i8, p.mask, q);
            }
        }
    }
}

/// Rows of an NHWC im2col: for each output pixel `(oy, ox)`, the
/// `kh·kw·c` bytes `x[oy·s+ky−pt][ox·s+kx−pl][0..c]` in `(ky, kx, c)`
/// order, `z_x` where the window leaves the image (a zero real value).
/// With the weights reordered to `[C_out][kh][kw][C_in]` the conv is one
/// GEMM of these rows (small convs such as a 1-channel stem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Im2colNhwc {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    /// Top, left, bottom, right.
    pub pad: (usize, usize, usize, usize),
}

impl Im2colNhwc {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        (
            (self.h + self.pad.0 + self.pad.2 - self.kh) / self.stride.0 + 1,
            (self.w + self.pad.1 + self.pad.3 - self.kw) / self.stride.1 + 1,
        )
    }

    fn check(&self) -> Result<()> {
        if self.kh == 0
            || self.kw == 0
            || self.stride.0 == 0
            || self.stride.1 == 0
            || self.h + self.pad.0 + self.pad.2 < self.kh
            || self.w + self.pad.1 + self.pad.3 < self.kw
        {
            return Err(KernelError::Unsupported {
                what: "NHWC im2col",
                why: format!("window does not fit: {self:?}"),
            });
        }
        Ok(())
    }

    /// Appends the rows of one image to `out`.
    pub fn rows(&self, x: &[u8], x_zero: u8, out: &mut Vec<u8>) -> Result<()> {
        check_len(
            "NHWC im2col image (H·W·C)",
            self.h * self.w * self.c,
            x.len(),
        )?;
        self.check()?;
        let (oh, ow) = self.out_hw();
        let (c, kw) = (self.c, self.kw);
        // Bytes of one kernel row (kw pixels) and of one output pixel.
        let kc = kw * c;
        let row = self.kh * kc;
        let start = out.len();
        // Everything starts as padding; the taps inside the image are copied.
        out.resize(start + oh * ow * row, x_zero);
        let dst = &mut out[start..];
        for oy in 0..oh {
            for ky in 0..self.kh {
                let iy = (oy * self.stride.0 + ky) as isize - self.pad.0 as isize;
                if iy < 0 || iy >= self.h as isize {
                    continue;
                }
                let xrow = &x[iy as usize * self.w * c..(iy as usize + 1) * self.w * c];
                for ox in 0..ow {
                    let ix0 = (ox * self.stride.1) as isize - self.pad.1 as isize;
                    let d = &mut dst[(oy * ow + ox) * row + ky * kc..][..kc];
                    if ix0 >= 0 && ix0 as usize + kw <= self.w {
                        // The kw pixels are contiguous in NHWC: one short copy.
                        for (a, &b) in d.iter_mut().zip(&xrow[ix0 as usize * c..][..kc]) {
                            *a = b;
                        }
                    } else {
                        for kx in 0..kw {
                            let ix = ix0 + kx as isize;
                            if ix >= 0 && (ix as usize) < self.w {
                                d[kx * c..(kx + 1) * c]
                                    .copy_from_slice(&xrow[ix as usize * c..][..c]);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// One NCHW image of bytes (`c` planes of `hw`) → NHWC (`hw` rows of `c`).
pub fn nchw_to_nhwc(c: usize, hw: usize, x: &[u8], out: &mut [u8]) -> Result<()> {
    check_len("NCHW image", c * hw, x.len())?;
    check_len("NHWC image", c * hw, out.len())?;
    transpose(c, hw, x, out);
    Ok(())
}

/// One NHWC image of bytes → NCHW, the inverse of [`nchw_to_nhwc`].
pub fn nhwc_to_nchw(c: usize, hw: usize, x: &[u8], out: &mut [u8]) -> Result<()> {
    check_len("NHWC image", c * hw, x.len())?;
    check_len("NCHW image", c * hw, out.len())?;
    transpose(hw, c, x, out);
    Ok(())
}

/// `out[j][i] = x[i][j]` for `x: rows × cols`, in 16×16 tiles (both sides'
/// lines stay in L1); a plain copy when either side is 1.
fn transpose(rows: usize, cols: usize, x: &[u8], out: &mut [u8]) {
    if rows == 1 || cols == 1 {
        out.copy_from_slice(x);
        return;
    }
    const T: usize = 16;
    for r0 in (0..rows).step_by(T) {
        let r1 = (r0 + T).min(rows);
        for c0 in (0..cols).step_by(T) {
            let c1 = (c0 + T).min(cols);
            for r in r0..r1 {
                for cc in c0..c1 {
                    out[cc * rows + r] = x[r * cols + cc];
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
    fn depthwise_every_path_equals_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // (h, w, c, stride): odd sizes, 1-pixel images, channel tails.
        let shapes = [
            (28, 28, 16, 1),
            (28, 28, 64, 2),
            (7, 7, 128, 1),
            (7, 7, 96, 2),
            (4, 4, 256, 1),
            (5, 9, 13, 1),
            (5, 9, 13, 2),
            (1, 1, 3, 1),
            (1, 6, 17, 2),
            (6, 1, 40, 2),
            (3, 3, 33, 1),
        ];
        for (si, &(h, w, c, stride)) in shapes.iter().enumerate() {
            let s = Dw3x3 { h, w, c, stride };
            for case in 0..3 {
                // Extreme inputs and weights in the first cases.
                let (x, wt): (Vec<u8>, Vec<i8>) = match case {
                    0 => (vec![255; h * w * c], vec![-128; c * 9]),
                    1 => (
                        (0..h * w * c)
                            .map(|i| if i % 2 == 0 { 0 } else { 255 })
                            .collect(),
                        (0..c * 9)
                            .map(|i| if i % 3 == 0 { 127 } else { -128 })
                            .collect(),
                    ),
                    _ => (
                        (0..h * w * c).map(|_| rng.gen()).collect(),
                        (0..c * 9).map(|_| rng.gen()).collect(),
                    ),
                };
                let zx: u8 = [0, 255, 131][case];
                let mult: Vec<f32> = (0..c).map(|_| rng.gen_range(1e-5f32..0.02)).collect();
                let bias: Vec<i32> = (0..c)
                    .map(|i| {
                        if i == 0 {
                            i32::MAX - 5
                        } else {
                            rng.gen_range(-40000..40000)
                        }
                    })
                    .collect();
                let (zy, lo, hi) = [(0, 0, 255), (128, 131, 200), (17, 17, 255)][(si + case) % 3];
                let rq = Requant {
                    mult: &mult,
                    bias: Some(&bias),
                    out_zero: zy,
                    lo,
                    hi,
                };
                let want: Vec<u8> = depthwise3x3_reference(&s, &x, zx, &wt, &rq)
                    .into_iter()
                    .map(|v| v as u8)
                    .collect();
                let taps = DwTaps::pack(&wt, c).unwrap();
                for isa in cpu::available() {
                    let mut sc = DwScratch::default();
                    let (oh, ow) = s.out_hw();
                    // Twice with one scratch: the cached border must stay valid.
                    for _ in 0..2 {
                        let mut out = vec![0xa5u8; oh * ow * c];
                        depthwise3x3_with(isa, &s, &x, zx, &taps, &rq, &mut sc, &mut out).unwrap();
                        assert_eq!(out, want, "{s:?} case {case} {isa:?}");
                    }
                }
            }
        }
        // A saturated product sum of the definition, spelled out: every tap
        // (255 − 0)·(−128) over the 4 inside taps of a corner, bias 0, m 1.
        let s = Dw3x3 {
            h: 2,
            w: 2,
            c: 1,
            stride: 1,
        };
        let rq = Requant {
            mult: &[1.0 / 1024.0],
            bias: None,
            out_zero: 0,
            lo: -128,
            hi: 127,
        };
        let y = depthwise3x3_reference(&s, &[255; 4], 0, &[-128; 9], &rq);
        assert_eq!(y, vec![-128; 4]); // 4·255·(−128)/1024 = −127.5 → −128 (ties to even)
    }

    #[test]
    fn depthwise_rejects_bad_shapes() {
        let taps = DwTaps::pack(&[1; 18], 2).unwrap();
        let rq = Requant {
            mult: &[1.0],
            bias: None,
            out_zero: 0,
            lo: 0,
            hi: 255,
        };
        let mut sc = DwScratch::default();
        let s = Dw3x3 {
            h: 2,
            w: 2,
            c: 2,
            stride: 3,
        };
        assert!(depthwise3x3(&s, &[0; 8], 0, &taps, &rq, &mut sc, &mut [0; 8]).is_err());
        let s = Dw3x3 { stride: 1, ..s };
        assert!(depthwise3x3(&s, &[0; 7], 0, &taps, &rq, &mut sc, &mut [0; 8]).is_err());
        let s = Dw3x3 { c: 3, ..s };
        assert!(depthwise3x3(&s, &[0; 12], 0, &taps, &rq, &mut sc, &mut [0; 12]).is_err());
    }

    /// Im2col spelled out tap by tap.
    fn im2col_reference(g: &Im2colNhwc, x: &[u8], zx: u8) -> Vec<u8> {
        let (oh, ow) = g.out_hw();
        let mut out = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.stride.0 + ky) as isize - g.pad.0 as isize;
                        let ix = (ox * g.stride.1 + kx) as isize - g.pad.1 as isize;
                        for ch in 0..g.c {
                            let inside =
                                iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize;
                            out.push(if inside {
                                x[(iy as usize * g.w + ix as usize) * g.c + ch]
                            } else {
                                zx
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn im2col_equals_tap_by_tap_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for &(h, w, c, kh, kw, stride, pad) in &[
            (28, 28, 1, 3, 3, (1, 1), (1, 1, 1, 1)),
            (7, 5, 3, 3, 2, (2, 1), (0, 1, 2, 0)),
            (4, 9, 2, 5, 5, (2, 3), (2, 2, 2, 2)),
            (1, 1, 4, 1, 1, (1, 1), (0, 0, 0, 0)),
        ] {
            let g = Im2colNhwc {
                h,
                w,
                c,
                kh,
                kw,
                stride,
                pad,
            };
            let x: Vec<u8> = (0..h * w * c).map(|_| rng.gen()).collect();
            let mut rows = vec![9u8; 5]; // appended after what is there
            g.rows(&x, 77, &mut rows).unwrap();
            assert_eq!(&rows[..5], &[9; 5]);
            assert_eq!(rows[5..], im2col_reference(&g, &x, 77)[..], "{g:?}");
        }
    }

    #[test]
    fn small_conv_every_path_equals_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &(m, k, n) in &[(784, 9, 16), (7, 27, 5), (13, 64, 33), (1, 1, 1)] {
            for case in 0..3 {
                let (rows, w): (Vec<u8>, Vec<i8>) = match case {
                    0 => (vec![255; m * k], vec![-128; n * k]),
                    1 => (vec![0; m * k], vec![127; n * k]),
                    _ => (
                        (0..m * k).map(|_| rng.gen()).collect(),
                        (0..n * k).map(|_| rng.gen()).collect(),
                    ),
                };
                let zx: u8 = [0, 255, 77][case];
                let mult: Vec<f32> = (0..n).map(|_| rng.gen_range(1e-5f32..0.01)).collect();
                let bias: Vec<i32> = (0..n).map(|_| rng.gen_range(-30000..30000)).collect();
                let (zy, lo, hi) = [(0, 0, 255), (128, 128, 250), (3, 0, 255)][case];
                let rq = Requant {
                    mult: &mult,
                    bias: Some(&bias),
                    out_zero: zy,
                    lo,
                    hi,
                };
                let want: Vec<u8> = (0..m * n)
                    .map(|e| {
                        let (i, j) = (e / n, e % n);
                        let mut acc = bias[j];
                        for kk in 0..k {
                            acc += (rows[i * k + kk] as i32 - zx as i32) * w[j * k + kk] as i32;
                        }
                        rq.apply(acc, j) as u8
                    })
                    .collect();
                let taps = SmallTaps::pack(&w, n, k).unwrap();
                for isa in cpu::available() {
                    let mut out = vec![0xa5; m * n];
                    small_conv_with(isa, &rows, m, zx, &taps, &rq, &mut out).unwrap();
                    assert_eq!(out, want, "m {m} k {k} n {n} case {case} {isa:?}");
                }
            }
        }
        // From the image directly: equal to im2col rows + the kernel.
        for &(h, w, c, kh, kw, stride, pad) in &[
            (28, 28, 1, 3, 3, (1, 1), (1, 1, 1, 1)),
            (7, 6, 3, 3, 2, (2, 1), (0, 1, 2, 0)),
        ] {
            let g = Im2colNhwc {
                h,
                w,
                c,
                kh,
                kw,
                stride,
                pad,
            };
            let n = 5;
            let k = kh * kw * c;
            let x: Vec<u8> = (0..h * w * c).map(|_| rng.gen()).collect();
            let wt: Vec<i8> = (0..n * k).map(|_| rng.gen()).collect();
            let taps = SmallTaps::pack(&wt, n, k).unwrap();
            let rq = Requant {
                mult: &[0.003],
                bias: None,
                out_zero: 9,
                lo: 9,
                hi: 255,
            };
            let mut rows = Vec::new();
            g.rows(&x, 200, &mut rows).unwrap();
            let (oh, ow) = g.out_hw();
            let mut want = vec![0; oh * ow * n];
            small_conv(&rows, oh * ow, 200, &taps, &rq, &mut want).unwrap();
            let mut got = vec![0; oh * ow * n];
            let mut sc = Vec::new();
            small_conv_image(&g, &x, 200, &taps, &rq, &mut sc, &mut got).unwrap();
            assert_eq!(got, want, "{g:?}");
        }
        assert!(SmallTaps::pack(&[0; 513], 1, 513).is_err());
        let taps = SmallTaps::pack(&[1; 9], 1, 9).unwrap();
        let rq = Requant {
            mult: &[1.0],
            bias: None,
            out_zero: 0,
            lo: 0,
            hi: 255,
        };
        assert!(small_conv(&[0; 8], 1, 0, &taps, &rq, &mut [0]).is_err());
    }

    #[test]
    fn pointwise_every_path_equals_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for &(m, k, n) in &[
            (784, 16, 64),
            (77, 24, 96),
            (13, 256, 33),
            (1, 4, 1),
            (9, 128, 17),
        ] {
            for case in 0..3 {
                let (a, w): (Vec<u8>, Vec<i8>) = match case {
                    0 => (vec![255; m * k], vec![-128; n * k]),
                    1 => (vec![0; m * k], vec![127; n * k]),
                    _ => (
                        (0..m * k).map(|_| rng.gen()).collect(),
                        (0..n * k).map(|_| rng.gen()).collect(),
                    ),
                };
                let za: u8 = [0, 255, 77][case];
                let mult: Vec<f32> = (0..n).map(|_| rng.gen_range(1e-6f32..0.002)).collect();
                let bias: Vec<i32> = (0..n)
                    .map(|j| {
                        if j == 0 {
                            i32::MIN + 3
                        } else {
                            rng.gen_range(-30000..30000)
                        }
                    })
                    .collect();
                let (zy, lo, hi) = [(0, 0, 255), (128, 128, 250), (3, 0, 255)][case];
                let rq = Requant {
                    mult: &mult,
                    bias: Some(&bias),
                    out_zero: zy,
                    lo,
                    hi,
                };
                let want: Vec<u8> = (0..m * n)
                    .map(|e| {
                        let (i, j) = (e / n, e % n);
                        let mut acc = bias[j];
                        for kk in 0..k {
                            let p = (a[i * k + kk] as i32 - za as i32) * w[j * k + kk] as i32;
                            acc = acc.wrapping_add(p);
                        }
                        rq.apply(acc, j) as u8
                    })
                    .collect();
                let taps = PwTaps::pack(&w, n, k).unwrap();
                for isa in cpu::available() {
                    let mut out = vec![0xa5; m * n];
                    pointwise_with(isa, &a, m, za, &taps, &rq, &mut out).unwrap();
                    assert_eq!(out, want, "m {m} k {k} n {n} case {case} {isa:?}");
                }
            }
        }
        assert!(PwTaps::pack(&[0; 6], 1, 6).is_err());
        let taps = PwTaps::pack(&[1; 4], 1, 4).unwrap();
        let rq = Requant {
            mult: &[1.0],
            bias: None,
            out_zero: 0,
            lo: 0,
            hi: 255,
        };
        assert!(pointwise(&[0; 7], 2, 0, &taps, &rq, &mut [0; 2]).is_err());
    }

    #[test]
    fn im2col_rows_and_transposes() {
        let g = Im2colNhwc {
            h: 3,
            w: 2,
            c: 2,
            kh: 3,
            kw: 3,
            stride: (2, 1),
            pad: (1, 1, 1, 1),
        };
        let x: Vec<u8> = (1..=12).collect();
        let mut rows = Vec::new();
        g.rows(&x, 0, &mut rows).unwrap();
        let (oh, ow) = g.out_hw();
        assert_eq!((oh, ow), (2, 2));
        assert_eq!(rows.len(), oh * ow * 18);
        // Output pixel (1, 0): input rows 1..4 (row 3 is padding), cols −1..2.
        let r = &rows[2 * 18..3 * 18];
        let at = |y: usize, xx: usize| &x[(y * 2 + xx) * 2..(y * 2 + xx) * 2 + 2];
        assert_eq!(&r[0..2], &[0, 0]);
        assert_eq!(&r[2..4], at(1, 0));
        assert_eq!(&r[4..6], at(1, 1));
        assert_eq!(&r[8..10], at(2, 0));
        assert_eq!(&r[12..18], &[0; 6]);
        let (c, hw) = (5, 7);
        let x: Vec<u8> = (0..35).collect();
        let mut t = vec![0; 35];
        nchw_to_nhwc(c, hw, &x, &mut t).unwrap();
        for ch in 0..c {
            for p in 0..hw {
                assert_eq!(t[p * c + ch], x[ch * hw + p]);
            }
        }
        let mut back = vec![0; 35];
        nhwc_to_nchw(c, hw, &t, &mut back).unwrap();
        assert_eq!(back, x);
        assert!(nchw_to_nhwc(c, hw, &x[1..], &mut t).is_err());
    }
}
