//! A fast 32-bit check value over decoded symbols.
//!
//! A complete prefix code decodes *any* bit string, so a flipped bit would
//! otherwise come out as plausible wrong symbols. The frame stores this value
//! of the symbols it encodes and the decoder compares: corruption becomes an
//! error, not garbage. Four independent multiply-rotate lanes keep it far
//! faster than the decoder (it is not cryptographic; the container adds
//! SHA-256 per section).

const P: u64 = 0x9E37_79B9_7F4A_7C15;
const SEEDS: [u64; 4] = [
    0x243F_6A88_85A3_08D3,
    0x1319_8A2E_0370_7344,
    0xA409_3822_299F_31D0,
    0x082E_FA98_EC4E_6C89,
];

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(P).rotate_left(29)
}

/// Check value of a byte string (symbols as stored: u8, or u16 little-endian).
pub fn checksum_bytes(bytes: &[u8]) -> u32 {
    let mut h = SEEDS;
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (i, hi) in h.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[8 * i..8 * i + 8].try_into().expect("8 bytes"));
            *hi = mix(*hi, w);
        }
    }
    let rest = chunks.remainder();
    for (i, c) in rest.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        h[i] = mix(h[i], u64::from_le_bytes(b));
    }
    let mut x = mix(h[0] ^ h[1].rotate_left(17), h[2] ^ h[3].rotate_left(41));
    x = mix(x, bytes.len() as u64);
    (x ^ (x >> 32)) as u32
}

/// Same value as [`checksum_bytes`] over the little-endian bytes of `v`.
pub fn checksum_u16(v: &[u16]) -> u32 {
    let mut bytes = Vec::with_capacity(v.len() * 2);
    for &x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    checksum_bytes(&bytes)
}
