//! Byte codes (≤ 8 bits each) → bit planes in the agreed row layout of
//! [`crate::bits`], at memory speed.
//!
//! [`crate::bitserial::pack_planes`] is the general (i32 codes) reference;
//! `shrink_formats::BitPlanes` holds the portable packer. This module is the
//! run-time dispatched fast path: with AVX-512BW one `vptestmb` turns 64
//! codes into one u64 word of one plane (bit j = bit b of code j), so a plane
//! word costs one instruction; AVX2 does 32 codes per `vpmovmskb`.
//!
//! Codes are bytes: two's complement when [`Planes::signed`], else unsigned.
//! A code outside the range of `bits` is an error (the output is then
//! unspecified).

use crate::bits;
use crate::bitserial::Planes;
use crate::cpu::{self, Isa};
use crate::{check_len, KernelError, Result};

/// Packs `rows × k` byte codes into a new `rows × bits × ceil(k/64)` buffer.
pub fn pack(codes: &[u8], rows: usize, k: usize, planes: Planes) -> Result<Vec<u64>> {
    let mut out = vec![0u64; rows * planes.bits as usize * bits::words(k)];
    pack_into_with(cpu::best(), codes, rows, k, planes, &mut out)?;
    Ok(out)
}

/// [`pack`] for i8 codes (two's complement, so `planes.signed` should be true).
pub fn pack_i8(codes: &[i8], rows: usize, k: usize, planes: Planes) -> Result<Vec<u64>> {
    // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
    let bytes = unsafe { std::slice::from_raw_parts(codes.as_ptr() as *const u8, codes.len()) };
    pack(bytes, rows, k, planes)
}

/// Packs into `out` (`rows × bits × ceil(k/64)` u64; every word is written).
pub fn pack_into(
    codes: &[u8],
    rows: usize,
    k: usize,
    planes: Planes,
    out: &mut [u64],
) -> Result<()> {
    pack_into_with(cpu::best(), codes, rows, k, planes, out)
}

fn range(planes: Planes) -> Result<(i32, i32)> {
    if !(1..=8).contains(&planes.bits) || (planes.signed && planes.bits < 2) {
        return Err(KernelError::Unsupported {
            what: "byte bit planes",
            why: format!("bits must be in 1..=8 (2..=8 signed), got {planes:?}"),
        });
    }
    let b = planes.bits;
    Ok(if planes.signed {
        (-(1 << (b - 1)), (1 << (b - 1)) - 1)
    } else {
        (0, (1 << b) - 1)
    })
}

fn value(c: u8, signed: bool) -> i32 {
    if signed {
        c as i8 as i32
    } else {
        c as i32
    }
}

/// The error for the first out-of-range code of row `r`.
fn range_error(row: &[u8], r: usize, planes: Planes, lo: i32, hi: i32) -> KernelError {
    let i = row
        .iter()
        .position(|&c| !(lo..=hi).contains(&value(c, planes.signed)))
        .unwrap_or(0);
    KernelError::Unsupported {
        what: "bit-plane codes",
        why: format!(
            "code {} at row {r}, column {i} outside [{lo}, {hi}] for {planes:?}",
            value(row[i], planes.signed)
        ),
    }
}

/// [`pack_into`] with `isa` (lowered to what the CPU supports).
pub fn pack_into_with(
    isa: Isa,
    codes: &[u8],
    rows: usize,
    k: usize,
    planes: Planes,
    out: &mut [u64],
) -> Result<()> {
    let (lo, hi) = range(planes)?;
    check_len("byte codes (rows×K)", rows * k, codes.len())?;
    let nb = planes.bits as usize;
    let wd = bits::words(k);
    check_len("bit planes (rows×bits×words)", rows * nb * wd, out.len())?;
    if k == 0 {
        return Ok(());
    }
    let isa = cpu::clamp(isa);
    for (r, (row, o)) in codes
        .chunks_exact(k)
        .zip(out.chunks_exact_mut(nb * wd))
        .enumerate()
    {
        let ok = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 => {
                // SAFETY: `clamp` guarantees AVX-512 F/BW; `o` has nb·words(k) words.
                unsafe { avx512::row(row, o, nb, planes.signed, lo, hi) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: `clamp` guarantees AVX2; `o` has nb·words(k) words.
                unsafe { avx2::row(row, o, nb, planes.signed, lo, hi) }
            }
            _ => row_scalar(row, o, nb, planes.signed, lo, hi),
        };
        if !ok {
            return Err(range_error(row, r, planes, lo, hi));
        }
    }
    Ok(())
}

/// Gathers the LSB of each of the 8 bytes of `x` into one byte (byte i → bit i):
/// the multiply adds byte i's LSB, shifted by 56 − 7i + 8i = 56 + i, into the
/// top byte, and no two partial products collide there.
const GATHER: u64 = 0x0102_0408_1020_4080;
const LSBS: u64 = 0x0101_0101_0101_0101;

/// Portable row, 8 codes per u64 (SWAR). Returns false if a code is out of range.
fn row_scalar(row: &[u8], out: &mut [u64], nb: usize, signed: bool, lo: i32, hi: i32) -> bool {
    let wd = bits::words(row.len());
    let (mut mn, mut mx) = (0i32, 0i32);
    for (w, chunk) in row.chunks(64).enumerate() {
        let mut acc = [0u64; 8];
        for (g, bytes) in chunk.chunks(8).enumerate() {
            let mut b8 = [0u8; 8];
            b8[..bytes.len()].copy_from_slice(bytes);
            for &c in bytes {
                let v = value(c, signed);
                mn = mn.min(v);
                mx = mx.max(v);
            }
            let x = u64::from_le_bytes(b8);
            for (b, a) in acc.iter_mut().enumerate().take(nb) {
                *a |= ((((x >> b) & LSBS).wrapping_mul(GATHER)) >> 56) << (8 * g);
            }
        }
        for (b, &a) in acc.iter().enumerate().take(nb) {
            out[b * wd + w] = a;
        }
    }
    mn >= lo && mx <= hi
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// # Safety
    /// CPU supports AVX-512 F/BW; `out.len() == nb · ceil(row.len()/64)`, nb ≤ 8.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn row(
        row: &[u8],
        out: &mut [u64],
        nb: usize,
        signed: bool,
        lo: i32,
        hi: i32,
    ) -> bool {
        let k = row.len();
        let wd = k.div_ceil(64);
        let (rp, op) = (row.as_ptr(), out.as_mut_ptr());
        let bit = [1u8, 2, 4, 8, 16, 32, 64, 128].map(|m| _mm512_set1_epi8(m as i8));
        let mut mn = _mm512_set1_epi8(0);
        let mut mx = _mm512_set1_epi8(0);
        for w in 0..wd {
            let left = k - 64 * w;
            let m: __mmask64 = if left >= 64 { !0 } else { (1u64 << left) - 1 };
            // SAFETY: the load is masked to the row; padding lanes read as 0, a
            // valid code whose bits are the required zero padding.
            let v = unsafe { _mm512_maskz_loadu_epi8(m, rp.add(64 * w) as *const i8) };
            if signed {
                mn = _mm512_min_epi8(mn, v);
                mx = _mm512_max_epi8(mx, v);
            } else {
                mx = _mm512_max_epu8(mx, v);
            }
            for (b, bm) in bit.iter().enumerate().take(nb) {
                // SAFETY: b·wd + w < nb·wd = out.len().
                unsafe { *op.add(b * wd + w) = _mm512_test_epi8_mask(v, *bm) };
            }
        }
        if nb == 8 {
            return true;
        }
        if signed {
            min_i8(mn) as i32 >= lo && max_i8(mx) as i32 <= hi
        } else {
            max_u8(mx) as i32 <= hi
        }
    }

    // Byte min/max of a register, once per row (AVX-512BW has no byte reduction).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn bytes(v: __m512i) -> [i8; 64] {
        let mut a = [0i8; 64];
        // SAFETY: a has 64 bytes.
        unsafe { _mm512_storeu_si512(a.as_mut_ptr() as *mut _, v) };
        a
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    fn min_i8(v: __m512i) -> i8 {
        bytes(v).into_iter().min().unwrap_or(0)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    fn max_i8(v: __m512i) -> i8 {
        bytes(v).into_iter().max().unwrap_or(0)
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    fn max_u8(v: __m512i) -> u8 {
        bytes(v).into_iter().map(|c| c as u8).max().unwrap_or(0)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// # Safety
    /// CPU supports AVX2; `out.len() == nb · ceil(row.len()/64)`, nb ≤ 8.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row(
        row: &[u8],
        out: &mut [u64],
        nb: usize,
        signed: bool,
        lo: i32,
        hi: i32,
    ) -> bool {
        let k = row.len();
        let wd = k.div_ceil(64);
        let full = k / 64;
        let rp = row.as_ptr();
        let mut mn = _mm256_setzero_si256();
        let mut mx = _mm256_setzero_si256();
        for w in 0..full {
            // SAFETY: 64·w + 64 ≤ k.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(rp.add(64 * w) as *const __m256i),
                    _mm256_loadu_si256(rp.add(64 * w + 32) as *const __m256i),
                )
            };
            if signed {
                mn = _mm256_min_epi8(mn, _mm256_min_epi8(a, b));
                mx = _mm256_max_epi8(mx, _mm256_max_epi8(a, b));
            } else {
                mx = _mm256_max_epu8(mx, _mm256_max_epu8(a, b));
            }
            for b_ in 0..nb {
                // move bit b_ of each byte to its MSB; vpmovmskb gathers the MSBs
                let s = _mm_cvtsi32_si128(7 - b_ as i32);
                let lo32 = _mm256_movemask_epi8(_mm256_sll_epi16(a, s)) as u32 as u64;
                let hi32 = _mm256_movemask_epi8(_mm256_sll_epi16(b, s)) as u32 as u64;
                out[b_ * wd + w] = lo32 | hi32 << 32;
            }
        }
        let mut m = [0i8; 32];
        // SAFETY: m has 32 bytes.
        unsafe { _mm256_storeu_si256(m.as_mut_ptr() as *mut __m256i, mn) };
        let vmin = m.iter().copied().min().unwrap_or(0) as i32;
        // SAFETY: m has 32 bytes.
        unsafe { _mm256_storeu_si256(m.as_mut_ptr() as *mut __m256i, mx) };
        let vmax = if signed {
            m.iter().copied().max().unwrap_or(0) as i32
        } else {
            m.iter().map(|&c| c as u8).max().unwrap_or(0) as i32
        };
        let ok = nb == 8 || (vmin >= lo && vmax <= hi);
        if full < wd {
            // tail word: the portable loop writes plane words at stride wd
            let mut tmp = [0u64; 8];
            let ok_tail = super::row_scalar(&row[64 * full..], &mut tmp[..nb], nb, signed, lo, hi);
            for b in 0..nb {
                out[b * wd + full] = tmp[b];
            }
            return ok && ok_tail;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitserial::pack_planes;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn codes(n: usize, planes: Planes, seed: u64) -> Vec<u8> {
        let (lo, hi) = range(planes).unwrap();
        let mut g = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| g.gen_range(lo..=hi) as u8).collect()
    }

    const SHAPES: [(usize, usize); 10] = [
        (1, 1),
        (1, 63),
        (2, 64),
        (3, 65),
        (2, 127),
        (4, 128),
        (3, 200),
        (5, 1),
        (2, 33),
        (3, 640),
    ];

    /// Every path equals the kernels' i32 reference packer and formats' packers.
    #[test]
    fn every_path_equals_kernels_and_formats_packers() {
        for bits in 1..=8u32 {
            for signed in [false, true] {
                if signed && bits < 2 {
                    continue;
                }
                let planes = Planes { bits, signed };
                for (si, &(rows, k)) in SHAPES.iter().enumerate() {
                    let c = codes(rows * k, planes, bits as u64 * 100 + si as u64);
                    let c32: Vec<i32> = c.iter().map(|&b| value(b, signed)).collect();
                    let want = pack_planes(&c32, rows, k, planes).unwrap();
                    for isa in cpu::available() {
                        let mut got = vec![!0u64; want.len()];
                        pack_into_with(isa, &c, rows, k, planes, &mut got).unwrap();
                        assert_eq!(got, want, "{isa:?} {planes:?} {rows}x{k}");
                    }
                    let f =
                        shrink_formats::BitPlanes::from_bytes(&c, rows, k, bits, signed).unwrap();
                    assert_eq!(f.data, want, "formats from_bytes {planes:?} {rows}x{k}");
                    let f =
                        shrink_formats::BitPlanes::from_codes(&c32, rows, k, bits, signed).unwrap();
                    assert_eq!(f.data, want, "formats from_codes {planes:?} {rows}x{k}");
                }
            }
        }
    }

    /// The open cross-check: formats and kernels agree on the layout, both
    /// ways (formats packs, the kernels' bit-serial GEMM consumes).
    #[test]
    fn formats_planes_feed_the_bitserial_gemm() {
        let (m, n, k) = (3, 5, 130);
        let (wp, ap) = (
            Planes {
                bits: 4,
                signed: true,
            },
            Planes {
                bits: 3,
                signed: false,
            },
        );
        let w = codes(n * k, wp, 1);
        let a = codes(m * k, ap, 2);
        let w32: Vec<i32> = w.iter().map(|&b| b as i8 as i32).collect();
        let a32: Vec<i32> = a.iter().map(|&b| b as i32).collect();
        let fw = shrink_formats::BitPlanes::from_bytes(&w, n, k, 4, true).unwrap();
        let fa = shrink_formats::BitPlanes::from_bytes(&a, m, k, 3, false).unwrap();
        let pw = crate::bitserial::PackedBitSerial::pack(&fw.data, n, k, wp).unwrap();
        let mut got = vec![0i32; m * n];
        let ep = crate::epilogue::Epilogue::default();
        let out = crate::epilogue::Output::I32(&mut got);
        crate::bitserial::gemm(&fa.data, m, ap, &pw, &ep, out).unwrap();
        assert_eq!(got, crate::bitserial::reference(&a32, m, &w32, n, k));
    }

    #[test]
    fn out_of_range_codes_are_errors() {
        for isa in cpu::available() {
            let p = Planes {
                bits: 4,
                signed: true,
            };
            let mut c = vec![0u8; 2 * 70];
            let mut out = vec![0u64; 2 * 4 * 2];
            for (at, bad) in [(5usize, 8i8), (69, -9), (139, 100)] {
                c.fill(0);
                c[at] = bad as u8;
                let e = pack_into_with(isa, &c, 2, 70, p, &mut out).unwrap_err();
                assert!(
                    format!("{e}").contains(&format!("code {bad}")),
                    "{isa:?} {e}"
                );
            }
            let p = Planes {
                bits: 3,
                signed: false,
            };
            c.fill(7);
            c[66] = 8;
            let e = pack_into_with(isa, &c, 2, 70, p, &mut out[..12]).unwrap_err();
            assert!(
                format!("{e}").contains("code 8 at row 0, column 66"),
                "{isa:?} {e}"
            );
        }
        assert!(pack(
            &[0u8; 4],
            2,
            2,
            Planes {
                bits: 9,
                signed: false
            }
        )
        .is_err());
        assert!(pack(
            &[0u8; 4],
            2,
            3,
            Planes {
                bits: 2,
                signed: false
            }
        )
        .is_err());
    }
}
