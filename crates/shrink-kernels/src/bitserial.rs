//! Bit-serial GEMM (BISMO): any w_bits × a_bits in 1..=8 as a weighted sum of
//! binary AND-popcount products over bit planes.
//!
//! A code is `Σ_b s_b·2^b·bit_b`, where `s_b = −1` only for the MSB plane of
//! a two's-complement operand. Hence
//! `Σ_k a_k·w_k = Σ_{p<wb} Σ_{q<ab} s_p·s_q·2^{p+q}·popcount(W_p AND A_q)`:
//! w·a binary products, so the cost grows with w·a and w1a1 costs one binary
//! GEMM. Operands use the agreed row layout `[row][plane][word]` (see
//! [`crate::bits`]); all sums wrap modulo 2³² like the integer reference.

use crate::bits::{self, count, BlockedBits, BLOCK};
use crate::cpu::{self, Isa};
use crate::epilogue::{store_scalar, Epilogue, OutPtr, Output};
use crate::{check_len, tiling, KernelError, Result};

/// Rows per AVX-512 register tile.
const MR: usize = 4;

/// How the codes of one operand are stored in planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planes {
    /// Bits per code, 1..=8.
    pub bits: u32,
    /// Two's complement (MSB plane weighs −2^(bits−1)) or unsigned.
    pub signed: bool,
}

impl Planes {
    fn check(self, what: &'static str) -> Result<()> {
        if (1..=8).contains(&self.bits) {
            Ok(())
        } else {
            Err(KernelError::Unsupported {
                what,
                why: format!("bits must be in 1..=8, got {}", self.bits),
            })
        }
    }
    fn range(self) -> (i32, i32) {
        if self.signed {
            (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1)
        } else {
            (0, (1 << self.bits) - 1)
        }
    }
    /// Sign of plane `b`'s weight.
    fn negative(self, b: u32) -> bool {
        self.signed && b == self.bits - 1
    }
}

/// Splits row-major `rows × k` integer codes into the agreed plane layout.
pub fn pack_planes(codes: &[i32], rows: usize, k: usize, planes: Planes) -> Result<Vec<u64>> {
    planes.check("bit planes")?;
    check_len("codes (rows×K)", rows * k, codes.len())?;
    let (lo, hi) = planes.range();
    let wd = bits::words(k);
    let nb = planes.bits as usize;
    let mut out = vec![0u64; rows * nb * wd];
    for r in 0..rows {
        for (i, &c) in codes[r * k..(r + 1) * k].iter().enumerate() {
            if c < lo || c > hi {
                return Err(KernelError::Unsupported {
                    what: "bit-plane codes",
                    why: format!(
                        "code {c} at row {r}, column {i} outside [{lo}, {hi}] for {planes:?}"
                    ),
                });
            }
            for b in 0..nb {
                if (c as u32) >> b & 1 == 1 {
                    out[(r * nb + b) * wd + i / 64] |= 1 << (i % 64);
                }
            }
        }
    }
    Ok(out)
}

/// Bit-plane weights (`N` rows) repacked for the kernels.
#[derive(Debug, Clone)]
pub struct PackedBitSerial {
    bits: BlockedBits,
    planes: Planes,
}

impl PackedBitSerial {
    /// Repacks `w` in the agreed layout (`N × bits × ceil(K/64)` u64).
    pub fn pack(w: &[u64], n: usize, k: usize, planes: Planes) -> Result<Self> {
        planes.check("bit-serial weights")?;
        Ok(PackedBitSerial {
            bits: BlockedBits::from_rows(
                "bit-serial weights (N×bits×words)",
                w,
                n,
                planes.bits as usize,
                k,
            )?,
            planes,
        })
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.bits.rows
    }
    /// Reduction length.
    pub fn k(&self) -> usize {
        self.bits.k
    }
}

/// Integer GEMM on the codes themselves: the reference (`A: M×K`, `W: N×K`).
pub fn reference(a: &[i32], m: usize, w: &[i32], n: usize, k: usize) -> Vec<i32> {
    let mut y = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).fold(0i32, |s, t| {
                s.wrapping_add(a[i * k + t].wrapping_mul(w[j * k + t]))
            });
        }
    }
    y
}

/// `out = epilogue(A·Wᵀ)` with A given as planes (`M × a.bits × words`), best path.
pub fn gemm(
    a: &[u64],
    m: usize,
    a_planes: Planes,
    w: &PackedBitSerial,
    ep: &Epilogue,
    out: Output,
) -> Result<()> {
    gemm_with(cpu::best(), a, m, a_planes, w, ep, out)
}

/// [`gemm`] on a chosen path (lowered to what the CPU supports).
pub fn gemm_with(
    isa: Isa,
    a: &[u64],
    m: usize,
    a_planes: Planes,
    w: &PackedBitSerial,
    ep: &Epilogue,
    mut out: Output,
) -> Result<()> {
    a_planes.check("bit-serial activations")?;
    let (n, k) = (w.n(), w.k());
    bits::check_rows(
        "bit-serial activations (M×bits×words)",
        a,
        m,
        a_planes.bits as usize,
        k,
    )?;
    check_len("bit-serial output (M×N)", m * n, out.len())?;
    ep.check(n)?;
    if m == 0 {
        return Ok(());
    }
    let isa = cpu::clamp(isa);
    let optr = out.ptr();
    let tasks = tiling::plan(m, w.bits.blocks(), MR);
    tiling::run(
        &tasks,
        tiling::rows_per_block(8 * bits::words(k) * a_planes.bits as usize, MR),
        |r0, r1, b| {
            // SAFETY: disjoint in-bounds tiles (lengths checked above); ISA clamped.
            unsafe { block_rows(isa, a, a_planes, r0, r1, w, b, ep, optr) }
        },
    );
    Ok(())
}

/// # Safety
/// `isa` supported; `out` valid `M×N` with these elements ours alone.
#[allow(clippy::too_many_arguments)]
unsafe fn block_rows(
    isa: Isa,
    a: &[u64],
    ap: Planes,
    r0: usize,
    r1: usize,
    w: &PackedBitSerial,
    b: usize,
    ep: &Epilogue,
    out: OutPtr,
) {
    let (n, wd) = (w.n(), w.bits.words);
    let j0 = b * BLOCK;
    let cols = (n - j0).min(BLOCK);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: forwarded from the caller.
            unsafe { avx512::block_rows(a, ap, r0, r1, w, b, j0, cols, ep, out) }
        }
        _ => {
            let ab = ap.bits as usize;
            let mut cnt = [0u32; BLOCK];
            for i in r0..r1 {
                let mut tot = [0i32; BLOCK];
                for p in 0..w.planes.bits {
                    let blk = w.bits.plane(b, p as usize);
                    for q in 0..ap.bits {
                        let row = &a[(i * ab + q as usize) * wd..][..wd];
                        #[cfg(target_arch = "x86_64")]
                        if isa == Isa::Avx2 {
                            // SAFETY: Avx2 implies POPCNT (cpu::best checks it).
                            unsafe { count::row_block_popcnt::<false>(row, blk, &mut cnt) };
                        } else {
                            count::row_block::<false>(row, blk, &mut cnt);
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        count::row_block::<false>(row, blk, &mut cnt);
                        let neg = w.planes.negative(p) != ap.negative(q);
                        for (t, &c) in tot.iter_mut().zip(&cnt) {
                            let v = (c as i32).wrapping_shl(p + q);
                            *t = if neg {
                                t.wrapping_sub(v)
                            } else {
                                t.wrapping_add(v)
                            };
                        }
                    }
                }
                // SAFETY: row i, columns j0..j0+cols are ours and in bounds.
                unsafe { store_scalar(ep, &tot[..cols], out, i, n, j0) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedBitSerial, Planes, MR};
    use crate::bits::count::avx512::tile;
    use crate::epilogue::{avx512::store16, Epilogue, OutPtr};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512 F/BW/VPOPCNTDQ; `a` holds rows `r0..r1`; `out` as in the caller.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    pub(super) unsafe fn block_rows(
        a: &[u64],
        ap: Planes,
        r0: usize,
        r1: usize,
        w: &PackedBitSerial,
        b: usize,
        j0: usize,
        cols: usize,
        ep: &Epilogue,
        out: OutPtr,
    ) {
        let mut i = r0;
        // SAFETY: row ranges stay below r1; forwarded guarantees.
        unsafe {
            while i + MR <= r1 {
                rows::<MR>(a, ap, i, w, b, j0, cols, ep, out);
                i += MR;
            }
            match r1 - i {
                0 => {}
                1 => rows::<1>(a, ap, i, w, b, j0, cols, ep, out),
                2 => rows::<2>(a, ap, i, w, b, j0, cols, ep, out),
                _ => rows::<3>(a, ap, i, w, b, j0, cols, ep, out),
            }
        }
    }

    /// R rows × one 32-column block: w·a AND-popcount passes, shifted and summed.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    unsafe fn rows<const R: usize>(
        a: &[u64],
        ap: Planes,
        i0: usize,
        w: &PackedBitSerial,
        b: usize,
        j0: usize,
        cols: usize,
        ep: &Epilogue,
        out: OutPtr,
    ) {
        let wd = w.bits.words;
        let ab = ap.bits as usize;
        let mut tot = [[_mm512_setzero_si512(); 2]; R];
        // SAFETY: plane reads stay inside rows i0..i0+R of `a` and the block.
        unsafe {
            for p in 0..w.planes.bits {
                let blk = w.bits.plane(b, p as usize).as_ptr();
                for q in 0..ap.bits {
                    let c = tile::<R, false>(
                        a.as_ptr().add((i0 * ab + q as usize) * wd),
                        ab * wd,
                        blk,
                        wd,
                    );
                    let sh = _mm_cvtsi32_si128((p + q) as i32);
                    let neg = w.planes.negative(p) != ap.negative(q);
                    for (t, cr) in tot.iter_mut().zip(c.iter()) {
                        for h in 0..2 {
                            let v = _mm512_sll_epi32(cr[h], sh);
                            t[h] = if neg {
                                _mm512_sub_epi32(t[h], v)
                            } else {
                                _mm512_add_epi32(t[h], v)
                            };
                        }
                    }
                }
            }
            for (r, t) in tot.iter().enumerate() {
                for (h, &v) in t.iter().enumerate() {
                    let wc = cols.saturating_sub(16 * h).min(16);
                    if wc > 0 {
                        store16(ep, v, out, i0 + r, w.n(), j0 + 16 * h, wc);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn codes(rows: usize, k: usize, p: Planes, r: &mut ChaCha8Rng) -> Vec<i32> {
        let (lo, hi) = p.range();
        (0..rows * k).map(|_| r.gen_range(lo..=hi)).collect()
    }

    fn check(m: usize, k: usize, n: usize, wp: Planes, apl: Planes, seed: u64) {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let (ac, wc) = (codes(m, k, apl, &mut r), codes(n, k, wp, &mut r));
        let expect = reference(&ac, m, &wc, n, k);
        let a = pack_planes(&ac, m, k, apl).unwrap();
        let w = PackedBitSerial::pack(&pack_planes(&wc, n, k, wp).unwrap(), n, k, wp).unwrap();
        for isa in cpu::available() {
            let mut y = vec![0i32; m * n];
            gemm_with(
                isa,
                &a,
                m,
                apl,
                &w,
                &Epilogue::default(),
                Output::I32(&mut y),
            )
            .unwrap();
            assert_eq!(y, expect, "{isa:?} m={m} k={k} n={n} w={wp:?} a={apl:?}");
        }
    }

    #[test]
    fn plane_layout_matches_the_agreed_format() {
        // 3-bit two's complement, K = 66 (two words, 2 padding-free bits in word 1).
        // Codes: column 0 = -1 (111), column 1 = 2 (010), column 65 = -4 (100), others 0.
        let mut codes = vec![0i32; 66];
        codes[0] = -1;
        codes[1] = 2;
        codes[65] = -4;
        let p = pack_planes(
            &codes,
            1,
            66,
            Planes {
                bits: 3,
                signed: true,
            },
        )
        .unwrap();
        // [row 0][plane b][word w]
        assert_eq!(p, vec![0b01, 0, 0b11, 0, 0b01, 0b10]);
    }

    #[test]
    fn every_bit_width_pair() {
        for wb in 1..=8 {
            for ab in 1..=8 {
                for &(ws, asg) in &[(false, false), (true, false), (true, true), (false, true)] {
                    let (wp, apl) = (
                        Planes {
                            bits: wb,
                            signed: ws,
                        },
                        Planes {
                            bits: ab,
                            signed: asg,
                        },
                    );
                    check(5, 70, 33, wp, apl, (wb * 8 + ab) as u64);
                }
            }
        }
    }

    #[test]
    fn extremes_of_two_complement() {
        let p = Planes {
            bits: 8,
            signed: true,
        };
        let k = 129;
        let a = vec![-128i32; 2 * k];
        let w = vec![-128i32; 3 * k];
        let wp = PackedBitSerial::pack(&pack_planes(&w, 3, k, p).unwrap(), 3, k, p).unwrap();
        let mut y = vec![0i32; 6];
        gemm(
            &pack_planes(&a, 2, k, p).unwrap(),
            2,
            p,
            &wp,
            &Epilogue::default(),
            Output::I32(&mut y),
        )
        .unwrap();
        assert_eq!(y, vec![128 * 128 * k as i32; 6]);
    }

    #[test]
    fn out_of_range_codes_are_errors() {
        let p = Planes {
            bits: 2,
            signed: true,
        };
        assert!(pack_planes(&[2], 1, 1, p).is_err());
        assert!(pack_planes(&[-2, 1], 1, 2, p).is_ok());
        assert!(pack_planes(
            &[0],
            1,
            1,
            Planes {
                bits: 9,
                signed: false
            }
        )
        .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn random_shapes(m in 1usize..10, k in 1usize..200, n in 1usize..70,
                         wb in 1u32..=8, ab in 1u32..=8, ws: bool, asg: bool, seed in any::<u64>()) {
            check(m, k, n, Planes { bits: wb, signed: ws }, Planes { bits: ab, signed: asg }, seed);
        }
    }
}
