//! Canonical Huffman codec: length-limited codes, interleaved streams,
//! table-driven multi-symbol decoding.
//!
//! Deep Compression's last stage (Han et al. 2016, §4) entropy-codes the
//! codebook indices and the relative sparse indices of every layer. This is
//! that coder, built for decode speed: a frame splits its symbols into four
//! contiguous quarters coded as four independent bit streams, so the decoder
//! runs four dependency chains at once; codes are limited to
//! [`MAX_CODE_LEN`] bits (optimal under the limit, by package-merge), so one
//! lookup in a 12-bit table resolves a code — and as many whole codes (up to
//! three) as fit in those 12 bits: 1.6 symbols per lookup on int8 weight
//! codes, 2.5 on 5-bit cluster indices (decoding: `decode.rs`).
//!
//! Order-0 Huffman is only near the entropy when no symbol is very likely;
//! a 90%-zero weight stream is not such a stream (69% above entropy). Zeros
//! should be coded as positions (relative indices, `shrink_formats::sparse`)
//! and this coder applied to the gaps and values — which is what the
//! `.shrink` container's `Huffman` encodings do.
//!
//! # Frame layout
//!
//! ```text
//!  varint  n            symbol count
//!  u8      width        1: u8 symbols, 2: u16 symbols
//!  varint  alphabet     largest symbol + 1 (≤ 4096)            ┐ only when n > 0
//!  u8      max_len      0: every symbol equal (varint symbol follows, no payload)
//!                       0x80 | b: raw mode — u32 check, then n codes of b bits
//!                       (LSB first) — used when shorter than the Huffman frame
//!                       (tiny streams, where the code table costs more than it saves)
//!                       1..=12: longest code length
//!  u8 × ⌈alphabet/2⌉    code length per symbol, 4 bits each, low nibble first
//!  u8      streams      1 or 4
//!  varint × (streams−1) byte length of each stream but the last
//!  u32 LE  check        checksum::checksum_bytes of the symbols
//!  bytes                the streams, back to back                ┘
//! ```
//! Stream k codes symbols `[k·q, min((k+1)·q, n))`, `q = ⌈n/streams⌉`. Bits
//! are read least-significant first; each code is stored bit-reversed so the
//! first bit of the canonical (MSB-first) code comes first. The last byte of
//! a stream is zero-padded; the decoder checks that each stream ends exactly
//! there and that the check value matches, so corrupt or truncated frames
//! give [`HuffmanError`]s, never wrong symbols or panics.

mod checksum;
mod decode;
mod lengths;

pub use checksum::{checksum_bytes, checksum_u16};
pub use decode::{decode, decode_into};
pub use lengths::{canonical_codes, limited_lengths, reverse_bits, MAX_CODE_LEN};

/// Largest alphabet a frame can code (`2^MAX_CODE_LEN`).
pub const MAX_ALPHABET: usize = 1 << MAX_CODE_LEN;

/// Frames with fewer symbols use one stream: four would cost more in stream
/// lengths than they gain in speed.
const MIN_SYMBOLS_FOR_4_STREAMS: usize = 256;

/// Why a frame cannot be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HuffmanError {
    #[error("huffman frame truncated: {0}")]
    Truncated(&'static str),
    #[error("corrupt huffman frame: {0}")]
    Corrupt(String),
    #[error("huffman: {0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, HuffmanError>;

/// A symbol type the codec reads and writes: `u8` or `u16`.
///
/// The associated items describe the decoder's multi-symbol table entries
/// (see `decode.rs`); they are public only because the trait is.
pub trait Symbol: Copy + Default + Send + Sync + 'static {
    /// Frame `width` byte.
    const WIDTH: u8;
    /// A decode-table entry: `u32` for bytes (16 KiB tables), `u64` for
    /// `u16` symbols (three 16-bit symbols do not fit 32 bits).
    #[doc(hidden)]
    type Entry: Copy + Default + Into<u64> + Send + Sync + 'static;
    /// Bit where an entry's symbol count (1–3) starts.
    #[doc(hidden)]
    const COUNT_SHIFT: u32;
    fn to_u32(self) -> u32;
    fn from_u32(x: u32) -> Self;
    fn checksum(s: &[Self]) -> u32;
    /// An entry from its bits (which fit the entry type by construction).
    #[doc(hidden)]
    fn entry(bits: u64) -> Self::Entry;
    /// Stores four symbols packed little-endian in `syms` (one write).
    ///
    /// # Safety
    /// `p .. p + 4` must be valid for writes.
    #[doc(hidden)]
    unsafe fn store4(p: *mut Self, syms: u64);
}

impl Symbol for u8 {
    const WIDTH: u8 = 1;
    type Entry = u32;
    const COUNT_SHIFT: u32 = 30;
    #[inline(always)]
    fn to_u32(self) -> u32 {
        self as u32
    }
    #[inline(always)]
    fn from_u32(x: u32) -> Self {
        x as u8
    }
    fn checksum(s: &[u8]) -> u32 {
        checksum_bytes(s)
    }
    #[inline(always)]
    fn entry(bits: u64) -> u32 {
        bits as u32
    }
    #[inline(always)]
    unsafe fn store4(p: *mut u8, syms: u64) {
        // SAFETY: the caller guarantees p .. p + 4 are writable; the store is
        // unaligned-safe and little-endian puts the first symbol at p.
        unsafe { (p as *mut u32).write_unaligned((syms as u32).to_le()) }
    }
}

impl Symbol for u16 {
    const WIDTH: u8 = 2;
    type Entry = u64;
    const COUNT_SHIFT: u32 = 62;
    #[inline(always)]
    fn to_u32(self) -> u32 {
        self as u32
    }
    #[inline(always)]
    fn from_u32(x: u32) -> Self {
        x as u16
    }
    fn checksum(s: &[u16]) -> u32 {
        checksum_u16(s)
    }
    #[inline(always)]
    fn entry(bits: u64) -> u64 {
        bits
    }
    #[inline(always)]
    unsafe fn store4(p: *mut u16, syms: u64) {
        // SAFETY: as for u8: p .. p + 4 are writable per the caller.
        unsafe { (p as *mut u64).write_unaligned(syms.to_le()) }
    }
}

/// Symbol counts; `alphabet` = largest symbol + 1.
pub fn histogram<S: Symbol>(symbols: &[S]) -> Vec<u64> {
    let size = symbols
        .iter()
        .map(|s| s.to_u32() as usize + 1)
        .max()
        .unwrap_or(0);
    let mut h = vec![0u64; size];
    // four sub-histograms break the store-to-load dependency on repeats
    let mut h4 = vec![[0u32; 4]; size];
    let mut chunks = symbols.chunks_exact(4);
    for c in &mut chunks {
        for (k, s) in c.iter().enumerate() {
            let i = s.to_u32() as usize;
            h4[i][k] += 1;
            if h4[i][k] == u32::MAX {
                h[i] += u32::MAX as u64;
                h4[i][k] = 0;
            }
        }
    }
    for s in chunks.remainder() {
        h[s.to_u32() as usize] += 1;
    }
    for (hi, q) in h.iter_mut().zip(&h4) {
        *hi += q.iter().map(|&x| x as u64).sum::<u64>();
    }
    let alphabet = h.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
    h.truncate(alphabet);
    h
}

/// Order-0 entropy of a histogram, in bits for the whole stream.
pub fn entropy_bits(hist: &[u64]) -> f64 {
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let nf = n as f64;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64) * (c as f64 / nf).log2())
        .sum()
}

/// The sizes a frame is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub symbols: usize,
    pub width: u8,
    pub alphabet: usize,
    /// 0 for a single-symbol frame.
    pub max_len: u32,
    pub streams: usize,
    /// Everything before the streams: counts, code lengths, stream sizes, check.
    pub header_bytes: usize,
    /// The coded bits, padding included.
    pub payload_bytes: usize,
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(b: &[u8], pos: &mut usize, what: &'static str) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos).ok_or(HuffmanError::Truncated(what))?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(HuffmanError::Corrupt(format!(
        "{what}: varint longer than 64 bits"
    )))
}

/// Code lengths for a frame: limited to 11 bits (five lookups per 64-bit
/// refill in the decoder) unless 12-bit codes save more than 0.2% of the
/// payload (wide alphabets with long tails), or the used symbols need 12.
fn frame_lengths(hist: &[u64], used: usize) -> Option<Vec<u8>> {
    let cost = |l: &[u8]| -> u64 { hist.iter().zip(l).map(|(&f, &x)| f * x as u64).sum() };
    let twelve = limited_lengths(hist, 12)?;
    if used > 1 << 11 {
        return Some(twelve);
    }
    let eleven = limited_lengths(hist, 11)?;
    if (cost(&twelve) as f64) < 0.998 * cost(&eleven) as f64 {
        Some(twelve)
    } else {
        Some(eleven)
    }
}

/// Encodes `symbols` as one frame (see the module docs).
pub fn encode<S: Symbol>(symbols: &[S]) -> Result<Vec<u8>> {
    let hist = histogram(symbols);
    encode_with_histogram(symbols, &hist)
}

/// [`encode`] with a histogram the caller already has (from [`histogram`]).
pub fn encode_with_histogram<S: Symbol>(symbols: &[S], hist: &[u64]) -> Result<Vec<u8>> {
    let alphabet = hist.len();
    if alphabet > MAX_ALPHABET {
        return Err(HuffmanError::Unsupported(format!(
            "symbol {} is past the largest codable alphabet of {MAX_ALPHABET}",
            alphabet - 1
        )));
    }
    let n = symbols.len();
    let mut out = Vec::new();
    put_varint(&mut out, n as u64);
    out.push(S::WIDTH);
    if n == 0 {
        return Ok(out);
    }
    put_varint(&mut out, alphabet as u64);
    let used = hist.iter().filter(|&&c| c > 0).count();
    if used == 1 {
        out.push(0);
        put_varint(&mut out, (alphabet - 1) as u64);
        return Ok(out);
    }
    let lengths = frame_lengths(hist, used).ok_or_else(|| {
        HuffmanError::Unsupported(format!("{used} symbols do not fit 12-bit codes"))
    })?;
    let codes = canonical_codes(&lengths)
        .ok_or_else(|| HuffmanError::Corrupt("code lengths over-subscribe the code".into()))?;
    let raw = raw_frame(symbols, alphabet, out.clone());
    let longest = *lengths.iter().max().unwrap_or(&1);
    out.push(longest);
    for pair in lengths.chunks(2) {
        out.push(pair[0] | pair.get(1).map_or(0, |&l| l << 4));
    }
    // (bit-reversed code, length) per symbol, packed for one load per symbol
    let table: Vec<u32> = codes
        .iter()
        .zip(&lengths)
        .map(|(&c, &l)| reverse_bits(c, l) | (l as u32) << 16)
        .collect();
    let streams = if n >= MIN_SYMBOLS_FOR_4_STREAMS { 4 } else { 1 };
    let q = n.div_ceil(streams);
    let coded: Vec<Vec<u8>> = symbols
        .chunks(q)
        .map(|part| encode_stream(part, &table))
        .collect();
    out.push(coded.len() as u8);
    for c in &coded[..coded.len() - 1] {
        put_varint(&mut out, c.len() as u64);
    }
    out.extend_from_slice(&S::checksum(symbols).to_le_bytes());
    for c in &coded {
        out.extend_from_slice(c);
    }
    Ok(if raw.len() < out.len() { raw } else { out })
}

/// Bits of a raw-mode code for `alphabet` symbols.
pub(crate) fn raw_bits(alphabet: usize) -> u32 {
    (usize::BITS - alphabet.saturating_sub(1).leading_zeros()).max(1)
}

/// The raw-mode frame: `prefix` (count, width, alphabet), mode byte, check,
/// fixed-width codes.
fn raw_frame<S: Symbol>(symbols: &[S], alphabet: usize, mut out: Vec<u8>) -> Vec<u8> {
    let bits = raw_bits(alphabet);
    out.push(0x80 | bits as u8);
    out.extend_from_slice(&S::checksum(symbols).to_le_bytes());
    let (mut acc, mut n) = (0u64, 0u32);
    for s in symbols {
        acc |= (s.to_u32() as u64) << n;
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
    out
}

fn encode_stream<S: Symbol>(symbols: &[S], table: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(symbols.len());
    let (mut acc, mut nbits) = (0u64, 0u32);
    for s in symbols {
        let e = table[s.to_u32() as usize];
        acc |= ((e & 0xffff) as u64) << nbits;
        nbits += e >> 16;
        if nbits >= 32 {
            out.extend_from_slice(&(acc as u32).to_le_bytes());
            acc >>= 32;
            nbits -= 32;
        }
    }
    while nbits > 0 {
        out.push(acc as u8);
        acc >>= 8;
        nbits = nbits.saturating_sub(8);
    }
    out
}

/// Parses a frame header (without decoding) to report its sizes.
pub fn frame_info(frame: &[u8]) -> Result<FrameInfo> {
    decode::parse(frame).map(|h| h.info)
}

#[cfg(test)]
mod tests;
