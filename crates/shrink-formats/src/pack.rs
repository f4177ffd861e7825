//! Bit packing: the layouts `shrink-kernels` consumes.
//!
//! # Bit planes (BISMO's parallel-to-serial conversion)
//!
//! An integer matrix product is a weighted sum of binary matrix products, one
//! per pair of bit planes, so a bit-serial kernel wants each bit of every code
//! gathered into its own plane. For a row-major matrix of `rows × K` codes of
//! `bits` bits:
//!
//! ```text
//!  data: [row 0][row 1] … [row R−1]
//!  row r:   [plane 0][plane 1] … [plane bits−1]        plane 0 = LSB
//!  plane b: [word 0][word 1] … [word W−1]              W = ceil(K/64) = words_per_row
//!  word w:  u64, bit j = bit b of code[r][64·w + j]    (little-endian bit order)
//!
//!   code[r][0..64]  ──▶ word 0 of each plane     bit 63 ……… bit 1 bit 0
//!                                                   │            │     └─ code[r][64w+0]
//!                                                   │            └─────── code[r][64w+1]
//!                                                   └──────────────────── code[r][64w+63]
//!  padding bits (j with 64w + j ≥ K) are 0.
//! ```
//!
//! Index of a word: `data[(r · bits + b) · words_per_row + w]`.
//! Unsigned codes: `code = Σ_b 2^b · bit_b`. Two's-complement codes (`signed`):
//! the top plane weighs −2^(bits−1), i.e. `code = Σ_{b<bits−1} 2^b·bit_b − 2^(bits−1)·bit_{bits−1}`.
//!
//! # Binary {−1, +1}
//! One plane in the same word layout: bit 1 = +1, bit 0 = −1, padding 0
//! (kernels must mask or correct for padding, which reads as −1).
//!
//! # Dense 1/2/4-bit and int4
//! `pack_dense`: codes of `bits` ∈ {1, 2, 4} back to back in bytes, lowest bits
//! first (code i sits at bit `(i·bits) % 8` of byte `i·bits/8`).
//! `pack_int4`: two's-complement int4, two per byte, low nibble = even index.

use crate::{FormatError, Result};
use serde::{Deserialize, Serialize};

/// Bit-plane packed integer matrix; see the module docs for the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitPlanes {
    pub rows: usize,
    /// K, the number of codes per row.
    pub cols: usize,
    pub bits: u32,
    pub signed: bool,
    pub words_per_row: usize,
    /// `[row][plane][word]`.
    pub data: Vec<u64>,
}

fn check_matrix(len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows * cols != len {
        return Err(FormatError::Shape {
            shape: vec![rows, cols],
            expected: rows * cols,
            got: len,
        });
    }
    if len == 0 {
        return Err(FormatError::Empty("pack"));
    }
    Ok(())
}

fn code_bounds(bits: u32, signed: bool) -> Result<(i32, i32)> {
    if !(1..=16).contains(&bits) {
        return Err(FormatError::Bits(bits));
    }
    Ok(if signed {
        if bits < 2 {
            return Err(FormatError::Invalid(
                "signed bit planes need at least 2 bits (use unsigned or pack_signs for 1 bit)"
                    .into(),
            ));
        }
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    } else {
        (0, (1 << bits) - 1)
    })
}

/// Transposes an 8×8 bit matrix held in a u64 (byte i = row i, bit j of a
/// byte = column j): afterwards byte b holds bit b of each of the 8 input
/// bytes. Hacker's Delight, `transpose8`, three rounds of masked swaps.
#[inline(always)]
fn transpose_bits_8x8(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Transposes an 8×8 byte matrix held in 8 u64 (row i = y[i], byte b = column b).
#[inline(always)]
fn transpose_bytes_8x8(y: &mut [u64; 8]) {
    const LO32: u64 = 0x0000_0000_FFFF_FFFF;
    const M16: u64 = 0x0000_FFFF_0000_FFFF;
    const M8: u64 = 0x00FF_00FF_00FF_00FF;
    for i in 0..4 {
        let (a, c) = (y[i], y[i + 4]);
        y[i] = (a & LO32) | (c << 32);
        y[i + 4] = (a >> 32) | (c & !LO32);
    }
    for base in [0, 4] {
        for i in base..base + 2 {
            let (a, c) = (y[i], y[i + 2]);
            y[i] = (a & M16) | ((c & M16) << 16);
            y[i + 2] = ((a >> 16) & M16) | (c & !M16);
        }
    }
    for i in (0..8).step_by(2) {
        let (a, c) = (y[i], y[i + 1]);
        y[i] = (a & M8) | ((c & M8) << 8);
        y[i + 1] = ((a >> 8) & M8) | (c & !M8);
    }
}

/// All 8 bit planes of 64 byte codes: `out[b]` bit j = bit b of `chunk[j]`.
#[inline(always)]
fn planes_of_64(chunk: &[u8; 64]) -> [u64; 8] {
    let mut y = [0u64; 8];
    for (i, yi) in y.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&chunk[8 * i..8 * i + 8]);
        *yi = transpose_bits_8x8(u64::from_le_bytes(b));
    }
    // y[i] byte b = plane b bits of codes 8i..8i+8; gather byte b of every y[i]
    transpose_bytes_8x8(&mut y);
    y
}

impl BitPlanes {
    pub fn words_for(cols: usize) -> usize {
        cols.div_ceil(64)
    }

    /// Index of word `w` of plane `b` of row `r` in `data`.
    #[inline]
    pub fn index(&self, r: usize, b: u32, w: usize) -> usize {
        (r * self.bits as usize + b as usize) * self.words_per_row + w
    }

    pub fn plane(&self, r: usize, b: u32) -> &[u64] {
        let i = self.index(r, b, 0);
        &self.data[i..i + self.words_per_row]
    }

    /// Packs byte codes (i8 two's complement when `signed`, else u8 values as i8
    /// bit patterns) of at most 8 bits; the fast path, ≥ 2 GB/s.
    pub fn from_bytes(
        codes: &[u8],
        rows: usize,
        cols: usize,
        bits: u32,
        signed: bool,
    ) -> Result<BitPlanes> {
        check_matrix(codes.len(), rows, cols)?;
        let (lo, hi) = code_bounds(bits, signed)?;
        if bits > 8 {
            return Err(FormatError::Invalid(format!(
                "{bits}-bit codes do not fit in bytes"
            )));
        }
        // min/max in one pass (vectorises); 8-bit codes are always in range
        if bits < 8 {
            let (mn, mx) = if signed {
                let (a, b) = codes.iter().fold((i8::MAX, i8::MIN), |(a, b), &c| {
                    (a.min(c as i8), b.max(c as i8))
                });
                (a as i32, b as i32)
            } else {
                let (a, b) = codes
                    .iter()
                    .fold((u8::MAX, u8::MIN), |(a, b), &c| (a.min(c), b.max(c)));
                (a as i32, b as i32)
            };
            if mn < lo || mx > hi {
                let bad = |&c: &u8| {
                    let v = if signed { c as i8 as i32 } else { c as i32 };
                    !(lo..=hi).contains(&v)
                };
                let c = codes.iter().position(bad).unwrap_or(0);
                return Err(FormatError::Invalid(format!(
                    "code at index {c} is outside the {bits}-bit {} range [{lo}, {hi}]",
                    if signed { "signed" } else { "unsigned" }
                )));
            }
        }
        let wpr = Self::words_for(cols);
        let bits_us = bits as usize;
        let mut data = vec![0u64; rows * bits_us * wpr];
        for (row, out) in codes
            .chunks_exact(cols)
            .zip(data.chunks_exact_mut(bits_us * wpr))
        {
            let mut chunks = row.chunks_exact(64);
            let mut w = 0;
            for chunk in &mut chunks {
                let planes = planes_of_64(chunk.try_into().expect("64-byte chunk"));
                for b in 0..bits_us {
                    out[b * wpr + w] = planes[b];
                }
                w += 1;
            }
            let tail = chunks.remainder();
            if !tail.is_empty() {
                let mut buf = [0u8; 64];
                buf[..tail.len()].copy_from_slice(tail);
                let planes = planes_of_64(&buf);
                for b in 0..bits_us {
                    out[b * wpr + w] = planes[b];
                }
            }
        }
        Ok(BitPlanes {
            rows,
            cols,
            bits,
            signed,
            words_per_row: wpr,
            data,
        })
    }

    /// Packs int8-stored codes (`bits` ≤ 8, two's complement).
    pub fn from_i8(codes: &[i8], rows: usize, cols: usize, bits: u32) -> Result<BitPlanes> {
        // i8 → u8 keeps each bit pattern.
        let bytes: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        Self::from_bytes(&bytes, rows, cols, bits, true)
    }

    /// Packs codes of up to 16 bits (general path, scalar).
    pub fn from_codes(
        codes: &[i32],
        rows: usize,
        cols: usize,
        bits: u32,
        signed: bool,
    ) -> Result<BitPlanes> {
        check_matrix(codes.len(), rows, cols)?;
        let (lo, hi) = code_bounds(bits, signed)?;
        if let Some(i) = codes.iter().position(|c| !(lo..=hi).contains(c)) {
            return Err(FormatError::Invalid(format!(
                "code {} at index {i} is outside [{lo}, {hi}]",
                codes[i]
            )));
        }
        let wpr = Self::words_for(cols);
        let mut p = BitPlanes {
            rows,
            cols,
            bits,
            signed,
            words_per_row: wpr,
            data: vec![0u64; rows * bits as usize * wpr],
        };
        for r in 0..rows {
            for c in 0..cols {
                let v = codes[r * cols + c] as u32;
                for b in 0..bits {
                    let i = p.index(r, b, c / 64);
                    p.data[i] |= ((v >> b) & 1) as u64 * (1u64 << (c % 64));
                }
            }
        }
        Ok(p)
    }

    /// Code at `(r, c)`.
    pub fn code(&self, r: usize, c: usize) -> i32 {
        let mut v = 0i32;
        for b in 0..self.bits {
            let bit = (self.data[self.index(r, b, c / 64)] >> (c % 64)) & 1;
            let weight = if self.signed && b == self.bits - 1 {
                -(1i32 << b)
            } else {
                1i32 << b
            };
            v += bit as i32 * weight;
        }
        v
    }

    pub fn to_codes(&self) -> Vec<i32> {
        (0..self.rows)
            .flat_map(|r| (0..self.cols).map(move |c| (r, c)))
            .map(|(r, c)| self.code(r, c))
            .collect()
    }
}

/// Binary {−1,+1} packing from signs: bit 1 where `x ≥ 0` (+1), 0 for −1; one plane.
pub fn pack_signs(values: &[f32], rows: usize, cols: usize) -> Result<BitPlanes> {
    check_matrix(values.len(), rows, cols)?;
    let wpr = BitPlanes::words_for(cols);
    let mut data = vec![0u64; rows * wpr];
    for (row, out) in values.chunks_exact(cols).zip(data.chunks_exact_mut(wpr)) {
        for (w, chunk) in row.chunks(64).enumerate() {
            out[w] = chunk
                .iter()
                .enumerate()
                .fold(0u64, |acc, (j, &x)| acc | (((x >= 0.0) as u64) << j));
        }
    }
    Ok(BitPlanes {
        rows,
        cols,
        bits: 1,
        signed: false,
        words_per_row: wpr,
        data,
    })
}

/// Dense packing of unsigned codes of 1, 2 or 4 bits, lowest bits first.
pub fn pack_dense(codes: &[u8], bits: u32) -> Result<Vec<u8>> {
    if ![1, 2, 4].contains(&bits) {
        return Err(FormatError::Invalid(format!(
            "dense packing takes 1, 2 or 4 bits, not {bits}"
        )));
    }
    if let Some(i) = codes.iter().position(|&c| (c as u32) >> bits != 0) {
        return Err(FormatError::Invalid(format!(
            "code {} at index {i} needs more than {bits} bits",
            codes[i]
        )));
    }
    let per = (8 / bits) as usize;
    Ok(codes
        .chunks(per)
        .map(|ch| {
            ch.iter()
                .enumerate()
                .fold(0u8, |acc, (j, &c)| acc | (c << (j as u32 * bits)))
        })
        .collect())
}

/// Inverse of [`pack_dense`] for `n` codes.
pub fn unpack_dense(packed: &[u8], bits: u32, n: usize) -> Result<Vec<u8>> {
    if ![1, 2, 4].contains(&bits) {
        return Err(FormatError::Invalid(format!(
            "dense packing takes 1, 2 or 4 bits, not {bits}"
        )));
    }
    let per = (8 / bits) as usize;
    if packed.len() < n.div_ceil(per) {
        return Err(FormatError::Invalid(format!(
            "{} bytes cannot hold {n} {bits}-bit codes",
            packed.len()
        )));
    }
    let mask = ((1u32 << bits) - 1) as u8;
    Ok((0..n)
        .map(|i| (packed[i / per] >> ((i % per) as u32 * bits)) & mask)
        .collect())
}

/// int4 (two's complement, −8..=7) two per byte: low nibble = even index.
pub fn pack_int4(codes: &[i8]) -> Result<Vec<u8>> {
    if let Some(i) = codes.iter().position(|c| !(-8..=7).contains(c)) {
        return Err(FormatError::Invalid(format!(
            "code {} at index {i} is not an int4",
            codes[i]
        )));
    }
    Ok(codes
        .chunks(2)
        .map(|p| (p[0] as u8 & 0x0f) | (p.get(1).map_or(0, |&c| c as u8 & 0x0f) << 4))
        .collect())
}

/// Inverse of [`pack_int4`] for `n` codes (sign-extends each nibble).
pub fn unpack_int4(packed: &[u8], n: usize) -> Vec<i8> {
    (0..n)
        .map(|i| {
            let nib = (packed[i / 2] >> (4 * (i % 2))) & 0x0f;
            ((nib << 4) as i8) >> 4
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitMix64;

    /// The layout spelled out element by element, independent of the fast path.
    fn reference(codes: &[i32], rows: usize, cols: usize, bits: u32) -> Vec<u64> {
        let wpr = cols.div_ceil(64);
        let mut d = vec![0u64; rows * bits as usize * wpr];
        for r in 0..rows {
            for c in 0..cols {
                let u = codes[r * cols + c] as u32;
                for b in 0..bits {
                    if (u >> b) & 1 == 1 {
                        d[(r * bits as usize + b as usize) * wpr + c / 64] |= 1 << (c % 64);
                    }
                }
            }
        }
        d
    }

    #[test]
    fn transposes_are_transposes() {
        let mut rng = SplitMix64::new(2);
        for _ in 0..1000 {
            let x = rng.next_u64();
            let t = transpose_bits_8x8(x);
            for i in 0..8 {
                for j in 0..8 {
                    assert_eq!((x >> (8 * i + j)) & 1, (t >> (8 * j + i)) & 1);
                }
            }
            let mut y = [0u64; 8];
            y.iter_mut().for_each(|v| *v = rng.next_u64());
            let orig = y;
            transpose_bytes_8x8(&mut y);
            for (i, row) in orig.iter().enumerate() {
                for (b, col) in y.iter().enumerate() {
                    assert_eq!((row >> (8 * b)) & 0xff, (col >> (8 * i)) & 0xff);
                }
            }
        }
    }

    #[test]
    fn fast_and_general_paths_match_the_layout() {
        let mut rng = SplitMix64::new(8);
        for (rows, cols) in [(1, 1), (3, 64), (5, 130), (2, 7), (4, 200)] {
            for bits in 2..=8u32 {
                for signed in [false, true] {
                    let (lo, hi) = code_bounds(bits, signed).unwrap();
                    let codes: Vec<i32> = (0..rows * cols)
                        .map(|_| lo + (rng.next_u64() % (hi - lo + 1) as u64) as i32)
                        .collect();
                    let want = reference(&codes, rows, cols, bits);
                    let bytes: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
                    let fast = BitPlanes::from_bytes(&bytes, rows, cols, bits, signed).unwrap();
                    assert_eq!(fast.data, want, "{rows}x{cols} bits {bits} signed {signed}");
                    let gen = BitPlanes::from_codes(&codes, rows, cols, bits, signed).unwrap();
                    assert_eq!(gen, fast);
                    assert_eq!(fast.to_codes(), codes);
                }
            }
        }
        // 16-bit codes through the general path
        let codes: Vec<i32> = (0..300).map(|i| i * 97 - 14000).collect();
        let p = BitPlanes::from_codes(&codes, 3, 100, 16, true).unwrap();
        assert_eq!(p.to_codes(), codes);
    }

    #[test]
    fn signs_and_dense_and_int4() {
        let v: Vec<f32> = (0..70)
            .map(|i| if i % 3 == 0 { -1.0 } else { 0.5 })
            .collect();
        let p = pack_signs(&v, 1, 70).unwrap();
        assert_eq!(p.words_per_row, 2);
        for (j, x) in v.iter().enumerate() {
            assert_eq!((p.data[j / 64] >> (j % 64)) & 1 == 1, *x >= 0.0);
        }
        assert_eq!(p.data[1] >> 6, 0, "padding is zero");
        for bits in [1u32, 2, 4] {
            let codes: Vec<u8> = (0..37).map(|i| (i * 5 % (1 << bits)) as u8).collect();
            let packed = pack_dense(&codes, bits).unwrap();
            assert_eq!(packed.len(), (37 * bits as usize).div_ceil(8));
            assert_eq!(unpack_dense(&packed, bits, 37).unwrap(), codes);
            assert_eq!(packed[0] & ((1 << bits) - 1) as u8, codes[0]);
        }
        let c: Vec<i8> = (-8..8).chain([3]).collect();
        let packed = pack_int4(&c).unwrap();
        assert_eq!(packed[0], 0x9 << 4 | 0x8, "−7 high, −8 low");
        assert_eq!(unpack_int4(&packed, c.len()), c);
        assert!(pack_int4(&[8]).is_err());
        assert!(pack_dense(&[4], 2).is_err());
        assert!(BitPlanes::from_bytes(&[200], 1, 1, 4, false).is_err());
        assert!(BitPlanes::from_codes(&[], 0, 0, 4, false).is_err());
        assert_eq!(
            BitPlanes::from_codes(&[1], 1, 1, 17, false),
            Err(FormatError::Bits(17))
        );
    }
}
