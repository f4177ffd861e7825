//! Table-driven decoding of the frames of [`super::encode`].
//!
//! Two tables of `2^tl` entries (`tl` = 12, the format's longest code),
//! indexed by the next `tl` bits of a stream (least-significant bit = first
//! bit):
//!
//! ```text
//!  single  u16:  sym(12) | len(4)               the one code the index starts with
//!  multi   u32 (u8 symbols) or u64 (u16 symbols):
//!          bits(6) | sym0 | sym1 | sym2 | … | count(2) in the top two bits
//!          up to three whole codes that fit in the tl-bit window; bits = their
//!          total length, count = how many (1–3), symbols 8 or 16 bits each
//! ```
//! A 12-bit window holds two 6-bit int8-weight codes or three 4-bit cluster
//! indices, so one lookup yields 1.6–2.5 symbols on weight-like streams.
//! Frames must use a complete code (Kraft sum exactly 1, what package-merge
//! produces), so every table entry is a valid code and the fast loops need no
//! per-lookup validity check; `parse` rejects any other code.
//!
//! Decoding runs three loops per frame, fastest first:
//! 1. `fast_lanes` over the four streams at once (four independent
//!    dependency chains), four lookups per stream per 8-byte refill, each
//!    lookup one table load, one 4-symbol store and two shifts; it runs in
//!    blocks of rounds counted up front so the body has no bounds checks,
//!    and stops when any stream is within 8 bytes of its end or 13 symbols
//!    of the end of its quarter of the output.
//! 2. `fast_lanes` over each stream alone (a stream whose quarter codes
//!    much longer than the others, e.g. a block of rare symbols, is not left
//!    to the slow loop).
//! 3. The checked one-code-per-lookup loop: finishes every stream, reading
//!    zeros past its end, then checks that it ends exactly on its last byte
//!    with zero padding; the whole output is then compared with the frame's
//!    check value. Corrupt or truncated frames are errors, never panics or
//!    wrong symbols.
//!
//! The fast loops are unsafe Rust (unchecked loads, stores and table reads,
//! each with its bound argued in a SAFETY comment); on x86-64 with BMI2 they
//! are compiled a second time with BMI2 and picked at run time. The tests
//! compare every loop against the checked one on random frames.

use super::{
    canonical_codes, get_varint, reverse_bits, FrameInfo, HuffmanError, Result, Symbol,
    MAX_ALPHABET, MAX_CODE_LEN,
};

const TABLE: usize = 1 << MAX_CODE_LEN;

/// Most symbols one multi-symbol entry holds.
const MAX_RUN: u32 = 3;

/// Symbols one store writes ([`Symbol::store4`]).
const STORE: usize = 4;

/// Bit where an entry's symbols start (below: the bits the entry consumes).
const SYM_SHIFT: u32 = 6;

pub(super) struct Header<'a> {
    pub info: FrameInfo,
    lengths: Vec<u8>,
    single_symbol: Option<u32>,
    /// Raw mode: bits per code.
    raw_bits: Option<u32>,
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
            raw_bits: None,
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
    if max_len & 0x80 != 0 {
        let bits = max_len & 0x7f;
        if bits != super::raw_bits(alphabet) {
            return Err(corrupt(format!(
                "raw mode with {bits}-bit codes for {alphabet} symbols"
            )));
        }
        let check = frame
            .get(pos..pos + 4)
            .ok_or(HuffmanError::Truncated("check value"))?;
        let check = u32::from_le_bytes(check.try_into().expect("4 bytes"));
        pos += 4;
        let need = (n as u128 * bits as u128).div_ceil(8);
        if need != (frame.len() - pos) as u128 {
            return Err(HuffmanError::Truncated("raw codes"));
        }
        info.symbols = n as usize;
        info.streams = 1;
        info.payload_bytes = frame.len() - pos;
        return Ok(Header {
            info: FrameInfo {
                header_bytes: pos,
                ..info
            },
            lengths: Vec::new(),
            raw_bits: Some(bits),
            single_symbol: None,
            check,
            streams: vec![&frame[pos..]],
        });
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
    if super::lengths::kraft_units(&lengths, max_len) != 1 << max_len {
        return Err(corrupt("code lengths do not form a complete prefix code"));
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

/// Decode tables for one frame, indexed by the next `tl` bits of a stream.
struct Tables<S: Symbol> {
    tl: u32,
    /// `sym(12) | len(4)` of the one code the index starts with.
    single: Box<[u16; TABLE]>,
    /// Multi-symbol entries (only the first `2^tl` are used): see the module docs.
    multi: Box<[S::Entry; TABLE]>,
}

/// Table index width for a frame whose longest code is `max_len` bits.
///
/// 12 bits fit more codes per lookup (two 6-bit weight codes, three 4-bit
/// cluster indices) at four lookups per refill; 11 bits allow five. 12 wins
/// when the code is short enough that a 12-bit window holds clearly more
/// symbols than an 11-bit one — measured on the bench streams, it always did
/// for codes ≤ 11 bits, so 11 is only kept for tests of the 5-lookup loop.
fn table_bits(max_len: u32) -> u32 {
    max_len.max(12)
}

/// Builds both tables by walking the code tree to depth three rather than
/// decoding every index: for each first code (shortest first), the entries
/// it starts get its single-symbol entry, then those where a second code
/// fits get the pair, then those where a third fits get the triple. Each
/// fill is a strided run of equal entries (LSB-first indices: a prefix of
/// `n` bits fixes the low `n` bits), so the cost is about three stores per
/// entry instead of three dependent lookups.
fn build_tables<S: Symbol>(lengths: &[u8], tl: u32) -> Result<Tables<S>> {
    debug_assert!(tl <= MAX_CODE_LEN);
    let codes = canonical_codes(lengths).ok_or_else(|| corrupt("over-subscribed code"))?;
    // (length, symbol, bit-reversed code), shortest first
    let mut by_len: Vec<(u32, u64, usize)> = lengths
        .iter()
        .zip(&codes)
        .enumerate()
        .filter(|(_, (&l, _))| l > 0)
        .map(|(sym, (&l, &c))| (l as u32, sym as u64, reverse_bits(c, l) as usize))
        .collect();
    by_len.sort_unstable();
    if by_len.last().is_some_and(|&(l, _, _)| l > tl) {
        return Err(corrupt(format!("code longer than the {tl}-bit table")));
    }
    let covered: u64 = by_len.iter().map(|&(l, _, _)| 1u64 << (tl - l)).sum();
    if covered != 1 << tl {
        return Err(corrupt("incomplete code"));
    }
    let sym_bits = 8 * S::WIDTH as u32;
    let entry = |bits: u32, syms: u64, count: u64| {
        S::entry(bits as u64 | syms << SYM_SHIFT | count << S::COUNT_SHIFT)
    };
    let mut single = Box::new([0u16; TABLE]);
    let mut multi = Box::new([S::Entry::default(); TABLE]);
    // entries whose low `n` bits are `base`
    fn fill<T: Copy>(t: &mut [T; TABLE], base: usize, n: u32, tl: u32, v: T) {
        for i in 0..1usize << (tl - n) {
            t[(base | i << n) & (TABLE - 1)] = v;
        }
    }
    for &(l0, s0, r0) in &by_len {
        fill(&mut single, r0, l0, tl, s0 as u16 | (l0 as u16) << 12);
        fill(&mut multi, r0, l0, tl, entry(l0, s0, 1));
        for &(l1, s1, r1) in &by_len {
            let n1 = l0 + l1;
            if n1 > tl {
                break;
            }
            let (b1, p1) = (r0 | r1 << l0, s0 | s1 << sym_bits);
            fill(&mut multi, b1, n1, tl, entry(n1, p1, 2));
            for &(l2, s2, r2) in &by_len {
                let n2 = n1 + l2;
                if n2 > tl {
                    break;
                }
                let p2 = p1 | s2 << (2 * sym_bits);
                fill(&mut multi, b1 | r2 << n1, n2, tl, entry(n2, p2, 3));
            }
        }
    }
    Ok(Tables { tl, single, multi })
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
    decode_parsed_with(h, out, Path::Fast)
}

/// Which loops decode: the fast table-driven loops first ([`Path::Fast`]), or
/// only the checked one-code-per-lookup loop ([`Path::Scalar`], the
/// reference the tests compare the fast loops against).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Path {
    Fast,
    /// Fast loops with 11-bit tables (five lookups per refill) where the
    /// code allows: exercised by the tests, never chosen by [`decode`].
    #[cfg(test)]
    Fast11,
    #[cfg(test)]
    Scalar,
    /// [`Path::Fast`] without the CPU-specific (BMI2) build.
    #[cfg(test)]
    Portable,
}

impl Path {
    fn portable(self) -> bool {
        match self {
            Path::Fast => false,
            #[cfg(test)]
            Path::Fast11 | Path::Scalar => false,
            #[cfg(test)]
            Path::Portable => true,
        }
    }

    fn uses_fast_loops(self) -> bool {
        match self {
            Path::Fast => true,
            #[cfg(test)]
            Path::Fast11 | Path::Portable => true,
            #[cfg(test)]
            Path::Scalar => false,
        }
    }
}

/// [`decode_into`] through the given [`Path`].
#[cfg(test)]
pub(crate) fn decode_into_with<S: Symbol>(frame: &[u8], out: &mut [S], path: Path) -> Result<()> {
    let h = parse(frame)?;
    if h.info.symbols != out.len() {
        return Err(corrupt("symbol count"));
    }
    decode_parsed_with(&h, out, path)
}

fn decode_parsed_with<S: Symbol>(h: &Header<'_>, out: &mut [S], path: Path) -> Result<()> {
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
    if let Some(bits) = h.raw_bits {
        return decode_raw(h, bits, out);
    }
    let max_len = h.info.max_len;
    let tl = match path {
        Path::Fast => table_bits(max_len),
        #[cfg(test)]
        Path::Fast11 => max_len.max(11),
        #[cfg(test)]
        Path::Scalar => max_len,
        #[cfg(test)]
        Path::Portable => table_bits(max_len),
    };
    let t = build_tables::<S>(&h.lengths, tl)?;
    let streams = h.streams.len();
    let q = n.div_ceil(streams);
    let mut readers: Vec<Reader<'_>> = h.streams.iter().map(|s| Reader::new(s)).collect();
    let mut at: Vec<usize> = (0..streams).map(|k| (k * q).min(n)).collect();
    let ends: Vec<usize> = (0..streams).map(|k| ((k + 1) * q).min(n)).collect();
    let portable = path.portable();
    if path.uses_fast_loops() {
        if streams == 4 {
            let r: &mut [Reader<'_>; 4] = (&mut readers[..]).try_into().expect("4 streams");
            let o: &mut [usize; 4] = (&mut at[..]).try_into().expect("4 streams");
            let e: &[usize; 4] = (&ends[..]).try_into().expect("4 streams");
            if tl == 11 {
                fast_lanes::<S, 11, 4>(&t, r, o, e, out, portable);
            } else {
                fast_lanes::<S, 12, 4>(&t, r, o, e, out, portable);
            }
        }
        // streams the 4-lane loop left (or a 1-stream frame): one lane each
        for k in 0..streams {
            let r: &mut [Reader<'_>; 1] = (&mut readers[k..k + 1]).try_into().expect("1");
            let o: &mut [usize; 1] = (&mut at[k..k + 1]).try_into().expect("1");
            let e: &[usize; 1] = (&ends[k..k + 1]).try_into().expect("1");
            if tl == 11 {
                fast_lanes::<S, 11, 1>(&t, r, o, e, out, portable);
            } else {
                fast_lanes::<S, 12, 1>(&t, r, o, e, out, portable);
            }
        }
    }
    let mask = (1usize << tl) - 1;
    for (k, r) in readers.iter_mut().enumerate() {
        for o in &mut out[at[k]..ends[k]] {
            if r.count < tl {
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

fn decode_raw<S: Symbol>(h: &Header<'_>, bits: u32, out: &mut [S]) -> Result<()> {
    let data = h.streams[0];
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut have, mut pos) = (0u64, 0u32, 0usize);
    for o in out.iter_mut() {
        while have < bits {
            acc |= (data[pos] as u64) << have;
            pos += 1;
            have += 8;
        }
        let c = (acc & mask) as u32;
        if c as usize >= h.info.alphabet {
            return Err(corrupt(format!("raw code {c} outside the alphabet")));
        }
        *o = S::from_u32(c);
        acc >>= bits;
        have -= bits;
    }
    if acc != 0 {
        return Err(corrupt("non-zero padding after the raw codes"));
    }
    if S::checksum(out) != h.check {
        return Err(corrupt("check value mismatch: the coded bits are damaged"));
    }
    Ok(())
}

/// Rounds a lane can run with no bounds check, given the input bytes and
/// output symbols left to it: each round loads 8 bytes then advances the
/// input by at most 7, and each of its `k` lookups stores 4 symbols then
/// advances the output by at most [`MAX_RUN`].
#[inline(always)]
fn safe_rounds(in_left: usize, out_left: usize, k: usize) -> usize {
    let need_out = MAX_RUN as usize * (k - 1) + STORE;
    let by_in = match in_left.checked_sub(8) {
        Some(room) => room / 7 + 1,
        None => 0,
    };
    let by_out = match out_left.checked_sub(need_out) {
        Some(room) => room / (MAX_RUN as usize * k) + 1,
        None => 0,
    };
    by_in.min(by_out)
}

/// The table-driven loop over `N` lanes (streams) at once, `TL`-bit tables:
/// picks the BMI2 build where the CPU has it (flag-free variable shifts;
/// measured faster), else the portable one. Both are the same code.
fn fast_lanes<S: Symbol, const TL: u32, const N: usize>(
    t: &Tables<S>,
    r: &mut [Reader<'_>; N],
    o: &mut [usize; N],
    ends: &[usize; N],
    out: &mut [S],
    portable: bool,
) {
    // 56 / TL lookups per refill, and indices within the 2^12-entry tables
    assert!(t.tl == TL && (4..=MAX_CODE_LEN).contains(&TL));
    for s in 0..N {
        assert!(ends[s] <= out.len() && o[s] <= ends[s]);
        assert!(r[s].pos <= r[s].data.len() && r[s].count <= 63);
    }
    #[cfg(target_arch = "x86_64")]
    if !portable
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("lzcnt")
    {
        // SAFETY: the CPU has BMI2 (checked just above); the lane bounds
        // the loop relies on were asserted above.
        unsafe { fast_lanes_bmi2::<S, TL, N>(t, r, o, ends, out) };
        return;
    }
    let _ = portable;
    // SAFETY: the lane bounds the loop relies on were asserted above.
    unsafe { fast_lanes_body::<S, TL, N>(t, r, o, ends, out) }
}

/// [`fast_lanes_body`] compiled with BMI2 (`shlx`/`shrx`).
///
/// # Safety
/// The CPU must support BMI2; otherwise as [`fast_lanes_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi1,bmi2,lzcnt")]
#[inline(never)]
unsafe fn fast_lanes_bmi2<S: Symbol, const TL: u32, const N: usize>(
    t: &Tables<S>,
    r: &mut [Reader<'_>; N],
    o: &mut [usize; N],
    ends: &[usize; N],
    out: &mut [S],
) {
    // SAFETY: forwarded from the caller.
    unsafe { fast_lanes_body::<S, TL, N>(t, r, o, ends, out) }
}

/// Each round refills every lane to 56–63 bits with one unaligned 8-byte
/// load, then does `56 / TL` lookups per lane, round-robin so the `N`
/// dependency chains overlap. A lookup stores its entry's symbols with one
/// 4-symbol write and advances the lane's output by the entry's count; later
/// writes overwrite the spare symbols. Lanes stop (for the safe loop to
/// finish) once [`safe_rounds`] is 0 for any.
///
/// The refill is Giesen's branchless one (advance the input by the whole
/// bytes consumed, so the next load's address never waits for this round's
/// lookups), with the bit count kept *in* the buffer: a marker bit sits just
/// above the valid bits and lookups shift it down with them, so
/// `63 - leading_zeros` is the count. That frees the four count registers
/// (and a subtraction per lookup), which keeps the four lanes' state in
/// registers.
///
/// # Safety
/// For every lane `s`: `o[s] <= ends[s] <= out.len()`,
/// `r[s].pos <= r[s].data.len()`, `r[s].count <= 63`, and distinct lanes'
/// ranges `o[s]..ends[s]` do not overlap.
#[inline(always)]
unsafe fn fast_lanes_body<S: Symbol, const TL: u32, const N: usize>(
    t: &Tables<S>,
    r: &mut [Reader<'_>; N],
    o: &mut [usize; N],
    ends: &[usize; N],
    out: &mut [S],
) {
    let k = (56 / TL) as usize;
    let table: *const S::Entry = t.multi.as_ptr();
    let mask = (1usize << TL) - 1;
    // the valid bits, then the marker (bits above the count may hold stream
    // bits the reader already has; they are read again by the next refill)
    let mut bufs: [u64; N] = std::array::from_fn(|s| {
        let c = r[s].count;
        (r[s].buf & ((1u64 << c) - 1)) | 1u64 << c
    });
    let out_ptr = out.as_mut_ptr();
    // SAFETY (all `add`s here): offsets within or one past their slices,
    // per the caller's contract.
    let mut ip: [*const u8; N] =
        std::array::from_fn(|s| unsafe { r[s].data.as_ptr().add(r[s].pos) });
    let in_end: [*const u8; N] =
        std::array::from_fn(|s| unsafe { r[s].data.as_ptr().add(r[s].data.len()) });
    let mut op: [*mut S; N] = std::array::from_fn(|s| unsafe { out_ptr.add(o[s]) });
    let out_end: [*mut S; N] = std::array::from_fn(|s| unsafe { out_ptr.add(ends[s]) });
    loop {
        let mut rounds = usize::MAX;
        for s in 0..N {
            let in_left = in_end[s] as usize - ip[s] as usize;
            let out_left = (out_end[s] as usize - op[s] as usize) / std::mem::size_of::<S>();
            rounds = rounds.min(safe_rounds(in_left, out_left, k));
        }
        if rounds == 0 {
            break;
        }
        for _ in 0..rounds {
            for s in 0..N {
                // SAFETY: 8 bytes are left at ip[s] for each of the `rounds`
                // rounds safe_rounds counted (ip advances ≤ 7 per round).
                let w = u64::from_le(unsafe { (ip[s] as *const u64).read_unaligned() }) ^ 1;
                let lz = bufs[s].leading_zeros();
                let c = 63 - lz; // valid bits; the marker is bit c
                let m = lz & 56; // whole bytes that fit above them, in bits
                                 // the new bytes with the marker above them; bit 0 flipped so
                                 // that XOR-ing over the old marker both clears it and puts
                                 // the first new bit there
                let fresh = (w & ((1u64 << m) - 1)) | 1u64 << m;
                bufs[s] ^= fresh << c;
                // SAFETY: stays within the stream, as above.
                ip[s] = unsafe { ip[s].add((lz >> 3) as usize) };
            }
            for _ in 0..k {
                for s in 0..N {
                    // SAFETY: the index is masked to TL ≤ 12 bits; the table
                    // has 2^12 entries.
                    let e: u64 = unsafe { *table.add((bufs[s] as usize) & mask) }.into();
                    // SAFETY: safe_rounds left room for k lookups of at most
                    // MAX_RUN symbols each plus a 4-symbol store, inside lane
                    // s's own part of `out`.
                    unsafe {
                        S::store4(op[s], e >> SYM_SHIFT);
                        op[s] = op[s].add((e >> S::COUNT_SHIFT) as usize);
                    }
                    bufs[s] >>= e & 63;
                }
            }
        }
    }
    for s in 0..N {
        let c = 63 - bufs[s].leading_zeros();
        r[s].buf = bufs[s] ^ 1u64 << c;
        r[s].count = c;
        r[s].pos = ip[s] as usize - r[s].data.as_ptr() as usize;
        o[s] = (op[s] as usize - out_ptr as usize) / std::mem::size_of::<S>();
    }
}
