//! Bit-packed operands shared by the binary and bit-serial GEMMs.
//!
//! The *row layout* is the interchange format agreed with `shrink-formats`:
//! a matrix of R rows × K elements becomes, per row and per bit plane,
//! `ceil(K/64)` little-endian u64 words; bit j of word w holds element
//! 64w + j; padding bits past K are 0. Planes of one row are consecutive
//! (`[row][plane][word]`), so a binary matrix is the one-plane case.
//!
//! Kernels repack the weight side into *column blocks* so one 512-bit load
//! feeds 8 output columns and no horizontal sum is ever needed.

use crate::{check_len, KernelError, Result};

/// Output columns per packed block (four 8-lane u64 registers).
pub const BLOCK: usize = 32;

/// Words per row per plane for K elements.
pub fn words(k: usize) -> usize {
    k.div_ceil(64)
}

/// Mask of the valid bits of the last word of a row.
pub(crate) fn last_mask(k: usize) -> u64 {
    match k % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// Checks a row-layout buffer's length and that no padding bit is set.
pub(crate) fn check_rows(
    what: &'static str,
    bits: &[u64],
    rows: usize,
    planes: usize,
    k: usize,
) -> Result<()> {
    let wd = words(k);
    check_len(what, rows * planes * wd, bits.len())?;
    let mask = last_mask(k);
    if mask != u64::MAX {
        for (r, row) in bits.chunks_exact(wd).enumerate() {
            if row[wd - 1] & !mask != 0 {
                return Err(KernelError::Unsupported {
                    what,
                    why: format!("padding bits past K={k} are set in row/plane {r}"),
                });
            }
        }
    }
    Ok(())
}

/// Weights repacked into column blocks.
///
/// ```text
///  block b = rows 32b..32b+31 of the row layout, for each plane p, for each word w:
///  ┌ row 32b+0, word w ┬ row 32b+1, word w ┬ … ┬ row 32b+31, word w ┐  256 bytes
///  u64 index of (row j, plane p, word w) = ((j/32)·planes + p)·words·32 + w·32 + j%32
///  rows ≥ N are all-zero words
/// ```
#[derive(Debug, Clone)]
pub struct BlockedBits {
    pub(crate) rows: usize,
    pub(crate) k: usize,
    pub(crate) planes: usize,
    pub(crate) words: usize,
    pub(crate) data: Vec<u64>,
}

impl BlockedBits {
    /// Repacks a row-layout matrix (`rows × planes × words(k)` u64).
    pub(crate) fn from_rows(
        what: &'static str,
        bits: &[u64],
        rows: usize,
        planes: usize,
        k: usize,
    ) -> Result<Self> {
        if rows == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what,
                why: format!("empty shape rows={rows} K={k}"),
            });
        }
        check_rows(what, bits, rows, planes, k)?;
        let wd = words(k);
        let blocks = rows.div_ceil(BLOCK);
        let mut data = vec![0u64; blocks * planes * wd * BLOCK];
        for j in 0..rows {
            for p in 0..planes {
                for w in 0..wd {
                    data[((j / BLOCK) * planes + p) * wd * BLOCK + w * BLOCK + j % BLOCK] =
                        bits[(j * planes + p) * wd + w];
                }
            }
        }
        Ok(BlockedBits {
            rows,
            k,
            planes,
            words: wd,
            data,
        })
    }
    pub(crate) fn blocks(&self) -> usize {
        self.rows.div_ceil(BLOCK)
    }
    /// Start of (block, plane).
    pub(crate) fn plane(&self, b: usize, p: usize) -> &[u64] {
        let len = self.words * BLOCK;
        let at = (b * self.planes + p) * len;
        &self.data[at..at + len]
    }
}

/// Popcount tiles: `cnt[r][c] = Σ_w popcount(a[r][w] OP blk[w][c])`, OP = XOR or AND.
pub(crate) mod count {
    use super::BLOCK;

    /// Portable count for one row against one 32-column block.
    #[inline(always)]
    pub(crate) fn row_block<const XOR: bool>(a: &[u64], blk: &[u64], out: &mut [u32; BLOCK]) {
        *out = [0; BLOCK];
        for (w, &av) in a.iter().enumerate() {
            let col = &blk[w * BLOCK..(w + 1) * BLOCK];
            for (o, &bv) in out.iter_mut().zip(col) {
                *o += if XOR { av ^ bv } else { av & bv }.count_ones();
            }
        }
    }

    /// The same loop compiled with the `popcnt` instruction enabled.
    ///
    /// # Safety
    /// CPU must support POPCNT.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    pub(crate) unsafe fn row_block_popcnt<const XOR: bool>(
        a: &[u64],
        blk: &[u64],
        out: &mut [u32; BLOCK],
    ) {
        row_block::<XOR>(a, blk, out)
    }

    #[cfg(target_arch = "x86_64")]
    pub(crate) mod avx512 {
        use std::arch::x86_64::*;

        /// R rows × 32 columns of counts as 16-lane i32 halves `[cols 0..16, 16..32]`.
        ///
        /// # Safety
        /// CPU supports AVX-512 F/VPOPCNTDQ; `a` valid for rows `r·stride + 0..words`;
        /// `blk` valid for `words·32` u64.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
        pub(crate) unsafe fn tile<const R: usize, const XOR: bool>(
            a: *const u64,
            stride: usize,
            blk: *const u64,
            words: usize,
        ) -> [[__m512i; 2]; R] {
            let mut acc = [[_mm512_setzero_si512(); 4]; R];
            // SAFETY: reads within the bounds the caller guarantees.
            unsafe {
                for w in 0..words {
                    let b = blk.add(w * 32);
                    let bv = [
                        _mm512_loadu_si512(b as *const _),
                        _mm512_loadu_si512(b.add(8) as *const _),
                        _mm512_loadu_si512(b.add(16) as *const _),
                        _mm512_loadu_si512(b.add(24) as *const _),
                    ];
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_epi64(*a.add(r * stride + w) as i64);
                        for (c, acc_rc) in acc_r.iter_mut().enumerate() {
                            let x = if XOR {
                                _mm512_xor_si512(av, bv[c])
                            } else {
                                _mm512_and_si512(av, bv[c])
                            };
                            *acc_rc = _mm512_add_epi64(*acc_rc, _mm512_popcnt_epi64(x));
                        }
                    }
                }
            }
            let mut out = [[_mm512_setzero_si512(); 2]; R];
            for (o, acc_r) in out.iter_mut().zip(acc.iter()) {
                for h in 0..2 {
                    let lo = _mm512_cvtepi64_epi32(acc_r[2 * h]);
                    let hi = _mm512_cvtepi64_epi32(acc_r[2 * h + 1]);
                    o[h] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                }
            }
            out
        }
    }
}
