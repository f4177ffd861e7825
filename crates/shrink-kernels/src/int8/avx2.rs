//! AVX2 int8 kernel: bytes widened to i16 and multiplied with `vpmaddwd`.
//!
//! `vpmaddubsw` would add two u8×s8 products into a saturating i16
//! (255·127·2 > 32767) — the reason ONNX Runtime needs `reduce_range` on AVX2.
//! Widening first makes every pair sum fit an i32 exactly.

use super::{PackedI8, ZeroFix, NR};
use crate::epilogue::{store_scalar, Epilogue, OutPtr};
use std::arch::x86_64::*;

/// Rows `r0..r1` of panel `p`, one row at a time (8 accumulators of 4 columns).
///
/// # Safety
/// CPU supports AVX2; `out` valid and exclusively ours for these elements.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn panel_rows(
    a: &[u8],
    k: usize,
    r0: usize,
    r1: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    let b = w.panel(p).as_ptr();
    let quads = w.k4 / 4;
    let j0 = p * NR;
    let cols = (w.n - j0).min(NR);
    for i in r0..r1 {
        let row = &a[i * k..(i + 1) * k];
        let mut acc = [_mm256_setzero_si256(); 8];
        for q in 0..quads {
            let mut qb = [0u8; 4];
            let end = (4 * q + 4).min(k);
            qb[..end - 4 * q].copy_from_slice(&row[4 * q..end]);
            // SAFETY: the panel holds `quads` blocks of 128 bytes.
            unsafe {
                let av = _mm256_cvtepu8_epi16(_mm_set1_epi32(i32::from_le_bytes(qb)));
                for (c, s) in acc.iter_mut().enumerate() {
                    let wb = _mm_loadu_si128(b.add(q * 128 + c * 16) as *const _);
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(av, _mm256_cvtepi8_epi16(wb)));
                }
            }
        }
        let mut sums = [0i32; NR];
        // Each accumulator holds (col, half) pairs: [c0a c0b c1a c1b | c2a c2b c3a c3b].
        for h in 0..4 {
            // SAFETY: AVX2 is enabled; `sums` has room for 8 i32 at 8h.
            unsafe {
                let s = _mm256_hadd_epi32(acc[2 * h], acc[2 * h + 1]);
                let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
                _mm256_storeu_si256(sums.as_mut_ptr().add(8 * h) as *mut _, s);
            }
        }
        for (c, s) in sums.iter_mut().enumerate().take(cols) {
            *s = fix.apply(*s, i, j0 + c);
        }
        // SAFETY: columns j0..j0+cols of row i are in bounds and ours.
        unsafe { store_scalar(ep, &sums[..cols], out, i, w.n, j0) };
    }
}
