//! The previous decoder (main at 2a27e6c: 2-symbol 11/12-bit tables, five
//! lookups per refill), kept here only so the bench can time it against the
//! current one in the same run. Byte symbols only; same frame format. Not
//! used by the library.

use shrink_kernels::huffman::{canonical_codes, checksum_bytes, reverse_bits, MAX_CODE_LEN};

const TABLE: usize = 1 << MAX_CODE_LEN;

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Decodes a 4-stream Huffman frame of byte symbols into `out`; `None` on any
/// frame this copy does not handle (the bench only feeds it such frames).
pub fn decode_into(frame: &[u8], out: &mut [u8]) -> Option<()> {
    let mut pos = 0;
    let n = varint(frame, &mut pos)? as usize;
    if n != out.len() || frame[pos] != 1 {
        return None;
    }
    pos += 1;
    let alphabet = varint(frame, &mut pos)? as usize;
    let max_len = frame[pos] as u32;
    pos += 1;
    if max_len == 0 || max_len > MAX_CODE_LEN {
        return None;
    }
    let nib = alphabet.div_ceil(2);
    let mut lengths: Vec<u8> = frame[pos..pos + nib]
        .iter()
        .flat_map(|&b| [b & 15, b >> 4])
        .collect();
    lengths.truncate(alphabet);
    pos += nib;
    let streams = frame[pos] as usize;
    pos += 1;
    if streams != 4 {
        return None;
    }
    let mut sizes = Vec::new();
    for _ in 0..3 {
        sizes.push(varint(frame, &mut pos)? as usize);
    }
    let check = u32::from_le_bytes(frame[pos..pos + 4].try_into().ok()?);
    pos += 4;
    sizes.push(frame.len() - pos - sizes.iter().sum::<usize>());
    let mut parts = Vec::new();
    for s in sizes {
        parts.push(&frame[pos..pos + s]);
        pos += s;
    }
    let t = build_tables(&lengths, max_len)?;
    let q = n.div_ceil(4);
    let mut readers: Vec<Reader<'_>> = parts.iter().map(|s| Reader::new(s)).collect();
    let mut starts: Vec<usize> = (0..4).map(|k| (k * q).min(n)).collect();
    let ends: Vec<usize> = (0..4).map(|k| ((k + 1) * q).min(n)).collect();
    if max_len <= 11 {
        fast4::<5>(&t, max_len, &mut readers, &mut starts, &ends, out)
    } else {
        fast4::<4>(&t, max_len, &mut readers, &mut starts, &ends, out)
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
                return None;
            }
            *o = (e & 0xfff) as u8;
            r.buf >>= len;
            r.count -= len;
        }
        let used = r.pos as u64 * 8 - r.count as u64;
        if used.div_ceil(8) != r.data.len() as u64 {
            return None;
        }
    }
    (checksum_bytes(out) == check).then_some(())
}

struct Tables {
    single: Box<[u16; TABLE]>,
    multi: Box<[u64; TABLE]>,
}

fn build_tables(lengths: &[u8], max_len: u32) -> Option<Tables> {
    let codes = canonical_codes(lengths)?;
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
    let mut multi = Box::new([0u64; TABLE]);
    for x in 0..size {
        let e0 = single[x] as u32;
        let l0 = e0 >> 12;
        if l0 == 0 {
            return None;
        }
        let e1 = single[x >> l0] as u32;
        let l1 = e1 >> 12;
        let pair = |s0: u32, s1: u32| (s0 | s1 << 8) as u64;
        multi[x] = if l1 > 0 && l0 + l1 <= max_len {
            (l0 + l1) as u64 | 2 << 6 | pair(e0 & 0xfff, e1 & 0xfff) << 32
        } else {
            l0 as u64 | 1 << 6 | pair(e0 & 0xfff, 0) << 32
        };
    }
    Some(Tables { single, multi })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
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

    fn refill_safe(&mut self) {
        while self.count <= 56 {
            let b = self.data.get(self.pos).copied().unwrap_or(0) as u64;
            self.buf |= b << self.count;
            self.pos += 1;
            self.count += 8;
        }
    }
}

#[inline(never)]
fn fast4<const K: usize>(
    t: &Tables,
    max_len: u32,
    r: &mut [Reader<'_>],
    op: &mut [usize],
    ends: &[usize],
    out: &mut [u8],
) {
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
    loop {
        let mut go = true;
        for s in 0..4 {
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
                // SAFETY: o[s] + 2K <= ends[s] at the top of this iteration
                // and each lookup advances o[s] by at most 2.
                unsafe {
                    (out_ptr.add(o[s]) as *mut u16).write_unaligned(((e >> 32) as u16).to_le())
                };
                o[s] += ((e >> 6) & 3) as usize;
                let nb = (e & 63) as u32;
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
}
