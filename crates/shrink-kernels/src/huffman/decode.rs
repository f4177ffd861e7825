//! Table-driven decoding of the frames of [`super::encode`].
//!
//! Two tables of `2^max_len` entries, indexed by the next `max_len` bits of a
//! stream (least-significant bit = first bit):
//!
//! ```text
//!  single  u16:  sym(12) | len(4)                  len 0 = no code starts here
//!  multi   u32:  sym0(12) | sym1(12) | bits(4) | count(2) | bad(1, bit 31)
//!               count 2 when a second whole code fits in the same max_len bits
//! ```
//!
//! The fast loop refills each of the four streams to ≥ 56 bits with one
//! unaligned 8-byte load (Giesen's branchless refill), then does five lookups
//! per stream (four when codes reach 12 bits), round-robin so the four
//! dependency chains overlap. Each lookup stores two symbols and advances by
//! `count`; the loop stops while every stream is at least 10 symbols short of
//! the end of its quarter, so the spare store never reaches another stream's
//! output. The safe single-symbol loop finishes each stream and checks that
//! it ends exactly on its last byte.

use super::{
    canonical_codes, get_varint, reverse_bits, FrameInfo, HuffmanError, Result, Symbol,
    MAX_ALPHABET, MAX_CODE_LEN,
};

const TABLE: usize = 1 << MAX_CODE_LEN;
const BAD: u32 = 1 << 31;

pub(super) struct Header<'a> {
    pub info: FrameInfo,
    lengths: Vec<u8>,
    single_symbol: Option<u32>,
    check: u32,
    streams: Vec<&'a [u8]>,
}

fn corrupt(msg: impl Into<String>) -> HuffmanError {
    HuffmanError::Corrupt(msg.into())
}

/// Reads and validates everything before the streams.
pub(super) fn parse(frame: &[u8]) -> Result<Header<'_>> {
    let mut pos = 0usize;
    let n = get_varint(frame, &mut pos, "symbol count")?;
    let width = *frame
        .get(pos)
        .ok_or(HuffmanError::Truncated("symbol width"))?;
    pos += 1;
    if width != 1 && width != 2 {
        return Err(corrupt(format!("symbol width {width} is neither 1 nor 2")));
    }
    let mut info = FrameInfo {
        symbols: 0,
        width,
        alphabet: 0,
        max_len: 0,
        streams: 0,
        header_bytes: 0,
        payload_bytes: 0,
    };
    let done = |info: FrameInfo, pos: usize, single, lengths, check, streams| {
        if pos != frame.len() && streams == Vec::<&[u8]>::new() {
            return Err(corrupt(format!(
                "{} bytes after the end of the frame",
                frame.len() - pos
            )));
        }
        Ok(Header {
            info: FrameInfo {
                header_bytes: pos,
                ..info
            },
            lengths,
            single_symbol: single,
            check,
            streams,
        })
    };
    if n == 0 {
        return done(info, pos, None, Vec::new(), 0, Vec::new());
    }
    let alphabet = get_varint(frame, &mut pos, "alphabet size")? as usize;
    if alphabet == 0 || alphabet > MAX_ALPHABET || (width == 1 && alphabet > 256) {
        return Err(corrupt(format!(
            "alphabet of {alphabet} symbols for {width}-byte symbols"
        )));
    }
    info.alphabet = alphabet;
    let max_len = *frame
        .get(pos)
        .ok_or(HuffmanError::Truncated("code length limit"))? as u32;
    pos += 1;
    if max_len == 0 {
        let sym = get_varint(frame, &mut pos, "the single symbol")?;
        if sym as usize >= alphabet {
            return Err(corrupt(format!("symbol {sym} outside the alphabet")));
        }
        // a 0-bit code: guard the allocation the caller makes from n
        if n > u32::MAX as u64 {
            return Err(corrupt(format!("{n} symbols in a single-symbol frame")));
        }
        info.symbols = n as usize;
        return done(info, pos, Some(sym as u32), Vec::new(), 0, Vec::new());
    }
    if max_len > MAX_CODE_LEN {
        return Err(corrupt(format!(
            "code length limit {max_len} > {MAX_CODE_LEN}"
        )));
    }
    info.max_len = max_len;
    let nib = alphabet.div_ceil(2);
    let packed = frame
        .get(pos..pos + nib)
        .ok_or(HuffmanError::Truncated("code lengths"))?;
    pos += nib;
    let mut lengths: Vec<u8> = packed.iter().flat_map(|&b| [b & 15, b >> 4]).collect();
    if alphabet % 2 == 1 && lengths.pop() != Some(0) {
        return Err(corrupt("padding nibble of the code lengths is not zero"));
    }
    if lengths.iter().any(|&l| l as u32 > max_len) || !lengths.iter().any(|&l| l as u32 == max_len)
    {
        return Err(corrupt(format!(
            "code lengths disagree with the limit {max_len}"
        )));
    }
    if lengths.iter().filter(|&&l| l > 0).count() < 2 {
        return Err(corrupt("fewer than two coded symbols"));
    }
    if super::lengths::kraft_units(&lengths, max_len) > 1 << max_len {
        return Err(corrupt("code lengths over-subscribe the code space"));
    }
    let streams = *frame
        .get(pos)
        .ok_or(HuffmanError::Truncated("stream count"))? as usize;
    pos += 1;
    if streams != 1 && streams != 4 {
        return Err(corrupt(format!("{streams} streams (1 or 4 expected)")));
    }
    let mut sizes = Vec::with_capacity(streams);
    for _ in 0..streams - 1 {
        sizes.push(get_varint(frame, &mut pos, "stream size")? as usize);
    }
    let check = frame
        .get(pos..pos + 4)
        .ok_or(HuffmanError::Truncated("check value"))?;
    let check = u32::from_le_bytes(check.try_into().expect("4 bytes"));
    pos += 4;
    let payload = frame.len() - pos;
    let listed: usize = sizes
        .iter()
        .try_fold(0usize, |a, &s| a.checked_add(s))
        .unwrap_or(usize::MAX);
    if listed > payload {
        return Err(HuffmanError::Truncated("stream bytes"));
    }
    sizes.push(payload - listed);
    // every symbol costs at least one bit: bounds n before anyone allocates
    if n > 8 * payload as u64 {
        return Err(HuffmanError::Truncated("fewer bits than symbols"));
    }
    info.symbols = n as usize;
    info.streams = streams;
    info.payload_bytes = payload;
    let mut parts = Vec::with_capacity(streams);
    let mut p = pos;
    for s in sizes {
        parts.push(&frame[p..p + s]);
        p += s;
    }
    done(info, pos, None, lengths, check, parts)
}

struct Tables {
    single: Box<[u16; TABLE]>,
    multi: Box<[u32; TABLE]>,
}

fn build_tables(lengths: &[u8], max_len: u32) -> Result<Tables> {
    let codes = canonical_codes(lengths).ok_or_else(|| corrupt("over-subscribed code"))?;
    let size = 1usize << max_len;
    let mut single = Box::new([0u16; TABLE]);
    for (sym, (&l, &c)) in lengths.iter().zip(&codes).enumerate() {
        if l == 0 {
            continue;
        }
        let r = reverse_bits(c, l) as usize;
        let entry = sym as u16 | (l as u16) << 12;
        for k in 0..1usize << (max_len - l as u32) {
            single[r | k << l] = entry;
        }
    }
    let mut multi = Box::new([0u32; TABLE]);
    for x in 0..size {
        let e0 = single[x] as u32;
        let l0 = e0 >> 12;
        multi[x] = if l0 == 0 {
            BAD | max_len << 24
        } else {
            let e1 = single[x >> l0] as u32;
            let l1 = e1 >> 12;
            if l1 > 0 && l0 + l1 <= max_len {
                (e0 & 0xfff) | (e1 & 0xfff) << 12 | (l0 + l1) << 24 | 2 << 28
            } else {
                (e0 & 0xfff) | l0 << 24 | 1 << 28
            }
        };
    }
    Ok(Tables { single, multi })
}

/// LSB-first bit reader over one stream.
struct Reader<'a> {
    data: &'a [u8],
    /// Next byte not yet in `buf`.
    pos: usize,
    buf: u64,
    /// Valid bits at the bottom of `buf`.
    count: u32,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader {
            data,
            pos: 0,
            buf: 0,
            count: 0,
        }
    }

    /// To ≥ 57 valid bits, reading zeros past the end (caught by [`Self::consumed`]).
    #[inline]
    fn refill_safe(&mut self) {
        while self.count <= 56 {
            let b = self.data.get(self.pos).copied().unwrap_or(0) as u64;
            self.buf |= b << self.count;
            self.pos += 1;
            self.count += 8;
        }
    }

    fn consumed(&self) -> u64 {
        self.pos as u64 * 8 - self.count as u64
    }
}

/// Decodes a frame of exactly `n` symbols (`n` is what the caller expects:
/// a frame holding another count is an error, and nothing larger than the
/// caller's `n` is ever allocated).
pub fn decode<S: Symbol>(frame: &[u8], n: usize) -> Result<Vec<S>> {
    let h = parse(frame)?;
    if h.info.symbols != n {
        return Err(corrupt(format!(
            "frame holds {} symbols, {n} expected",
            h.info.symbols
        )));
    }
    let mut out = vec![S::default(); n];
    decode_parsed(&h, &mut out)?;
    Ok(out)
}

/// Decodes a frame into `out`, whose length must be the frame's symbol count.
pub fn decode_into<S: Symbol>(frame: &[u8], out: &mut [S]) -> Result<()> {
    let h = parse(frame)?;
    if h.info.symbols != out.len() {
        return Err(corrupt(format!(
            "frame holds {} symbols, {} expected",
            h.info.symbols,
            out.len()
        )));
    }
    decode_parsed(&h, out)
}

fn decode_parsed<S: Symbol>(h: &Header<'_>, out: &mut [S]) -> Result<()> {
    let n = out.len();
    if n == 0 {
        return Ok(());
    }
    if h.info.width != S::WIDTH {
        return Err(HuffmanError::Unsupported(format!(
            "frame of {}-byte symbols decoded as {}-byte symbols",
            h.info.width,
            S::WIDTH
        )));
    }
    if let Some(sym) = h.single_symbol {
        out.fill(S::from_u32(sym));
        return Ok(());
    }
    let max_len = h.info.max_len;
    let t = build_tables(&h.lengths, max_len)?;
    let q = n.div_ceil(h.streams.len());
    let mut readers: Vec<Reader<'_>> = h.streams.iter().map(|s| Reader::new(s)).collect();
    let mut starts: Vec<usize> = (0..readers.len()).map(|k| (k * q).min(n)).collect();
    let ends: Vec<usize> = (0..readers.len()).map(|k| ((k + 1) * q).min(n)).collect();
    if readers.len() == 4 {
        let bad = if max_len <= 11 {
            fast4::<S, 5>(&t, max_len, &mut readers, &mut starts, &ends, out)
        } else {
            fast4::<S, 4>(&t, max_len, &mut readers, &mut starts, &ends, out)
        };
        if bad {
            return Err(corrupt("bit pattern that is no code"));
        }
    }
    let mask = (1usize << max_len) - 1;
    for (k, r) in readers.iter_mut().enumerate() {
        for o in &mut out[starts[k]..ends[k]] {
            if r.count < max_len {
                r.refill_safe();
            }
            let e = t.single[(r.buf as usize) & mask & (TABLE - 1)];
            let len = (e >> 12) as u32;
            if len == 0 {
                return Err(corrupt(format!("stream {k}: bit pattern that is no code")));
            }
            *o = S::from_u32((e & 0xfff) as u32);
            r.buf >>= len;
            r.count -= len;
        }
        let used = r.consumed();
        let bytes = r.data.len() as u64;
        if used.div_ceil(8) != bytes {
            return Err(corrupt(format!(
                "stream {k} ends at bit {used} but holds {bytes} bytes"
            )));
        }
        if used % 8 != 0 && r.data[r.data.len() - 1] >> (used % 8) != 0 {
            return Err(corrupt(format!("stream {k}: non-zero padding bits")));
        }
    }
    if S::checksum(out) != h.check {
        return Err(corrupt("check value mismatch: the coded bits are damaged"));
    }
    Ok(())
}

/// The interleaved multi-symbol loop; returns whether a non-code was met.
#[inline(never)]
fn fast4<S: Symbol, const K: usize>(
    t: &Tables,
    max_len: u32,
    r: &mut [Reader<'_>],
    op: &mut [usize],
    ends: &[usize],
    out: &mut [S],
) -> bool {
    let mask = (1usize << max_len) - 1;
    let (r0, rest) = r.split_at_mut(1);
    let (r1, rest) = rest.split_at_mut(1);
    let (r2, r3) = rest.split_at_mut(1);
    let rs: [&mut Reader<'_>; 4] = [&mut r0[0], &mut r1[0], &mut r2[0], &mut r3[0]];
    let mut bufs = [rs[0].buf, rs[1].buf, rs[2].buf, rs[3].buf];
    let mut counts = [rs[0].count, rs[1].count, rs[2].count, rs[3].count];
    let mut pos = [rs[0].pos, rs[1].pos, rs[2].pos, rs[3].pos];
    let datas = [rs[0].data, rs[1].data, rs[2].data, rs[3].data];
    let mut o = [op[0], op[1], op[2], op[3]];
    let out_ptr = out.as_mut_ptr();
    let mut bad = 0u32;
    loop {
        let mut go = true;
        for s in 0..4 {
            // each lookup may store at o and o+1 and advance by 2
            go &= pos[s] + 8 <= datas[s].len() && o[s] + 2 * K <= ends[s];
        }
        if !go {
            break;
        }
        for s in 0..4 {
            // SAFETY: pos[s] + 8 <= datas[s].len() was checked just above.
            let w = unsafe { (datas[s].as_ptr().add(pos[s]) as *const u64).read_unaligned() };
            bufs[s] |= u64::from_le(w) << counts[s];
            pos[s] += ((63 - counts[s]) >> 3) as usize;
            counts[s] |= 56;
        }
        for _ in 0..K {
            for s in 0..4 {
                let e = t.multi[(bufs[s] as usize) & mask & (TABLE - 1)];
                bad |= e;
                // SAFETY: o[s] + 2K <= ends[s] at the top of this iteration and each of the K lookups advances o[s] by at most
                // 2, so o[s] + 1 < ends[s] <= out.len(): both stores are in
                // bounds and inside stream s's own quarter of `out`.
                unsafe {
                    *out_ptr.add(o[s]) = S::from_u32(e & 0xfff);
                    *out_ptr.add(o[s] + 1) = S::from_u32((e >> 12) & 0xfff);
                }
                o[s] += ((e >> 28) & 3) as usize;
                let nb = (e >> 24) & 15;
                bufs[s] >>= nb;
                counts[s] -= nb;
            }
        }
    }
    for s in 0..4 {
        rs[s].buf = bufs[s];
        rs[s].count = counts[s];
        rs[s].pos = pos[s];
        op[s] = o[s];
    }
    bad & BAD != 0
}
