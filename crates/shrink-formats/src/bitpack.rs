//! Fixed-width packing of unsigned codes at any width 1..=64.
//!
//! The stored form of every code stream that is not entropy-coded: codebook
//! indices, sparse relative indices, sub-byte integer weights. Codes sit back
//! to back, lowest bits first, so width 8/16/32/64 is plain little-endian:
//!
//! ```text
//!  byte:   [        0        ][        1        ] …
//!  bits:    7 6 5 4 3 2 1 0    7 6 5 4 3 2 1 0
//!  bits=3:  c2c2c1 c1c1c0c0c0  c5 c4c4c4 c3c3c3 c2     code i at bit 3·i
//! ```
//! The last byte is zero-padded; `unpack_bits` rejects non-zero padding so a
//! stream with trailing garbage is an error, not a silent success.

use crate::{FormatError, Result};

/// Bytes that `n` codes of `bits` bits occupy.
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n as u128 * bits as u128).div_ceil(8) as usize
}

fn check_bits(bits: u32) -> Result<()> {
    if !(1..=64).contains(&bits) {
        return Err(FormatError::Invalid(format!(
            "code width must be in 1..=64 bits, got {bits}"
        )));
    }
    Ok(())
}

/// Packs `codes` at `bits` each; a code that needs more bits is an error.
pub fn pack_bits(codes: &[u64], bits: u32) -> Result<Vec<u8>> {
    check_bits(bits)?;
    if bits < 64 {
        if let Some(i) = codes.iter().position(|&c| c >> bits != 0) {
            return Err(FormatError::Invalid(format!(
                "code {} at index {i} needs more than {bits} bits",
                codes[i]
            )));
        }
    }
    let mut out = Vec::with_capacity(packed_len(codes.len(), bits));
    match bits {
        8 => out.extend(codes.iter().map(|&c| c as u8)),
        16 => codes
            .iter()
            .for_each(|&c| out.extend_from_slice(&(c as u16).to_le_bytes())),
        32 => codes
            .iter()
            .for_each(|&c| out.extend_from_slice(&(c as u32).to_le_bytes())),
        64 => codes
            .iter()
            .for_each(|&c| out.extend_from_slice(&c.to_le_bytes())),
        _ => {
            // 128-bit accumulator: a 64-bit code on top of up to 7 pending bits.
            let (mut acc, mut n) = (0u128, 0u32);
            for &c in codes {
                acc |= (c as u128) << n;
                n += bits;
                while n >= 8 {
                    out.push(acc as u8);
                    acc >>= 8;
                    n -= 8;
                }
            }
            if n > 0 {
                out.push(acc as u8);
            }
        }
    }
    Ok(out)
}

/// Unpacks `n` codes of `bits` bits; `bytes` must be exactly
/// [`packed_len`]`(n, bits)` long with zero padding.
pub fn unpack_bits(bytes: &[u8], bits: u32, n: usize) -> Result<Vec<u64>> {
    check_bits(bits)?;
    let want = packed_len(n, bits);
    if bytes.len() != want {
        return Err(FormatError::Invalid(format!(
            "{} bytes do not hold exactly {n} codes of {bits} bits ({want} bytes)",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    match bits {
        8 => out.extend(bytes.iter().map(|&b| b as u64)),
        16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u64),
        ),
        32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as u64),
        ),
        64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
        ),
        _ => {
            let mask = (1u128 << bits) - 1;
            let (mut acc, mut have) = (0u128, 0u32);
            let mut it = bytes.iter();
            for _ in 0..n {
                while have < bits {
                    // the length check above guarantees enough bytes
                    acc |= (*it.next().unwrap_or(&0) as u128) << have;
                    have += 8;
                }
                out.push((acc & mask) as u64);
                acc >>= bits;
                have -= bits;
            }
            if acc != 0 {
                return Err(FormatError::Invalid(
                    "non-zero padding after the last packed code".into(),
                ));
            }
        }
    }
    Ok(out)
}

/// Two's-complement `value` truncated to `bits` bits, if it fits.
pub fn to_twos(value: i64, bits: u32) -> Option<u64> {
    if bits == 64 {
        return Some(value as u64);
    }
    let lo = -(1i64 << (bits - 1));
    let hi = (1i64 << (bits - 1)) - 1;
    (lo..=hi)
        .contains(&value)
        .then_some(value as u64 & ((1u64 << bits) - 1))
}

/// Sign-extends a `bits`-bit two's-complement code.
pub fn from_twos(code: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((code << shift) as i64) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-by-bit reference of the layout in the module docs.
    fn reference(codes: &[u64], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; packed_len(codes.len(), bits)];
        for (i, &c) in codes.iter().enumerate() {
            for b in 0..bits as usize {
                if (c >> b) & 1 == 1 {
                    let pos = i * bits as usize + b;
                    out[pos / 8] |= 1 << (pos % 8);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn round_trip_matches_layout(bits in 1u32..=64, raw in proptest::collection::vec(any::<u64>(), 0..200)) {
            let codes: Vec<u64> = raw.iter().map(|&c| if bits == 64 { c } else { c & ((1 << bits) - 1) }).collect();
            let packed = pack_bits(&codes, bits).unwrap();
            prop_assert_eq!(&packed, &reference(&codes, bits));
            prop_assert_eq!(unpack_bits(&packed, bits, codes.len()).unwrap(), codes);
        }

        #[test]
        fn twos_complement_round_trip(bits in 1u32..=64, v in any::<i64>()) {
            match to_twos(v, bits) {
                Some(c) => prop_assert_eq!(from_twos(c, bits), v),
                None => prop_assert!(bits < 64 && (v < -(1i64 << (bits - 1)) || v >= (1i64 << (bits - 1)))),
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(pack_bits(&[8], 3).is_err());
        assert!(pack_bits(&[1], 0).is_err());
        assert!(unpack_bits(&[0, 0], 3, 2).is_err(), "wrong length");
        assert!(unpack_bits(&[0x80], 3, 2).is_err(), "non-zero padding");
        assert_eq!(to_twos(-5, 4), Some(0b1011));
        assert_eq!(to_twos(8, 4), None);
    }
}
