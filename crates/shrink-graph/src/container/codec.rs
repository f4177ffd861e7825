//! Encoding one tensor to its stored bytes and back.
//!
//! A payload is a list of *parts*, each `varint length + bytes`, in an order
//! fixed by the encoding:
//!
//! ```text
//!  Dense       [raw little-endian elements (int4: two per byte) | string TensorProto]
//!  Packed      [codes]
//!  BitPlanes   [u64 words, little-endian]
//!  Codebook    varint k, [k centroids at the dtype width (or 16 for fp16)], [indices]
//!  Csr         varint entries, (codebook values: varint k, [centroids]),
//!              [gaps at index_bits], [values]
//! ```
//! A *stream* part (codes, indices, gaps, values) is `bitpack` fixed-width
//! codes, or under `Huffman` one Huffman frame (`shrink_kernels::huffman`).
//! Decoding checks every count and width and errors instead of guessing.

use super::elements::{from_patterns, int_pattern, int_value, to_patterns, width};
use super::Encoding;
use crate::{GraphError, Result};
use serde::Serialize;
use shrink_formats::bitpack::{from_twos, pack_bits, packed_len, to_twos, unpack_bits};
use shrink_formats::codebook::{
    bits_for, f16_patterns_to_f32, f32_patterns_to_f16, fp16_exact, Codebook,
};
use shrink_formats::pack::BitPlanes;
use shrink_formats::sparse::{transpose, zero_runs, RelativeSparse};
use shrink_kernels::huffman;
use shrink_tensor::{DType, Tensor, TensorData};

/// One code stream of a stored tensor: how many symbols, their order-0
/// entropy, and the bytes they take as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamStats {
    /// `codes`, `indices`, `gaps` or `values`.
    pub name: &'static str,
    pub symbols: usize,
    /// Width of a symbol before entropy coding.
    pub bits: u32,
    /// Order-0 entropy of the symbols, in bits (whole stream); `None` for
    /// raw dense elements, where it is not computed.
    pub entropy_bits: Option<f64>,
    /// Bytes of the part as stored (frame or packed codes, length prefix excluded).
    pub stored_bytes: usize,
    /// Huffman frames: the coded bits alone (stored minus the frame header
    /// with its code-length table) — what the entropy bound is about.
    pub payload_bytes: usize,
    pub huffman: bool,
}

/// A tensor's payload, the encoding with every automatic choice resolved
/// (e.g. `index_bits: 0` replaced by the width used), and its streams.
#[derive(Debug, Clone)]
pub struct EncodedTensor {
    pub encoding: Encoding,
    pub payload: Vec<u8>,
    pub streams: Vec<StreamStats>,
}

fn bad(msg: impl Into<String>) -> GraphError {
    GraphError::Invalid(msg.into())
}

fn fmt_err(e: shrink_formats::FormatError) -> GraphError {
    GraphError::Invalid(e.to_string())
}

fn huff_err(e: huffman::HuffmanError) -> GraphError {
    GraphError::Invalid(e.to_string())
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn get_varint(b: &[u8], pos: &mut usize, what: &str) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*pos)
            .ok_or_else(|| bad(format!("truncated: {what}")))?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad(format!("{what}: varint longer than 64 bits")))
}

fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    put_varint(out, part.len() as u64);
    out.extend_from_slice(part);
}

struct Parts<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Parts<'a> {
    fn varint(&mut self, what: &str) -> Result<u64> {
        get_varint(self.b, &mut self.pos, what)
    }

    fn count(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.varint(what)?;
        if v > max as u64 {
            return Err(bad(format!("{what} {v} exceeds {max}")));
        }
        Ok(v as usize)
    }

    fn part(&mut self, what: &str) -> Result<&'a [u8]> {
        let len = self.varint(what)? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| bad(format!("truncated: {what} ({len} bytes announced)")))?;
        let p = &self.b[self.pos..end];
        self.pos = end;
        Ok(p)
    }

    fn finish(&self) -> Result<()> {
        if self.pos != self.b.len() {
            return Err(bad(format!(
                "{} unexpected bytes after the last part",
                self.b.len() - self.pos
            )));
        }
        Ok(())
    }
}

fn stats(name: &'static str, codes: &[u64], bits: u32, part: &[u8], huff: bool) -> StreamStats {
    let stored = part.len();
    let payload_bytes = if huff {
        huffman::frame_info(part).map_or(stored, |i| i.payload_bytes)
    } else {
        stored
    };
    let entropy_bits = if bits <= 16 {
        let mut h = vec![0u64; 1 << bits];
        codes.iter().for_each(|&c| h[c as usize] += 1);
        huffman::entropy_bits(&h)
    } else {
        let mut sorted = codes.to_vec();
        sorted.sort_unstable();
        let h: Vec<u64> = sorted
            .chunk_by(|a, b| a == b)
            .map(|c| c.len() as u64)
            .collect();
        huffman::entropy_bits(&h)
    };
    StreamStats {
        name,
        symbols: codes.len(),
        bits,
        entropy_bits: Some(entropy_bits),
        stored_bytes: stored,
        payload_bytes,
        huffman: huff,
    }
}

/// Writes one code stream (fixed width or Huffman frame).
fn put_stream(
    out: &mut Vec<u8>,
    st: &mut Vec<StreamStats>,
    name: &'static str,
    codes: &[u64],
    bits: u32,
    huff: bool,
) -> Result<()> {
    let part = if huff {
        if bits > huffman::MAX_CODE_LEN {
            return Err(bad(format!(
                "Huffman codes symbols of at most {} bits; the {name} stream has {bits}",
                huffman::MAX_CODE_LEN
            )));
        }
        if bits <= 8 {
            let s: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
            huffman::encode(&s).map_err(huff_err)?
        } else {
            let s: Vec<u16> = codes.iter().map(|&c| c as u16).collect();
            huffman::encode(&s).map_err(huff_err)?
        }
    } else {
        pack_bits(codes, bits).map_err(fmt_err)?
    };
    st.push(stats(name, codes, bits, &part, huff));
    put_part(out, &part);
    Ok(())
}

fn get_stream(
    p: &mut Parts<'_>,
    st: &mut Vec<StreamStats>,
    name: &'static str,
    n: usize,
    bits: u32,
    huff: bool,
) -> Result<Vec<u64>> {
    let part = p.part(name)?;
    let codes: Vec<u64> = if huff {
        if bits > huffman::MAX_CODE_LEN {
            return Err(bad(format!(
                "{name}: {bits}-bit symbols cannot be Huffman-coded"
            )));
        }
        let codes: Vec<u64> = if bits <= 8 {
            huffman::decode::<u8>(part, n)
                .map_err(|e| bad(format!("{name}: {e}")))?
                .into_iter()
                .map(u64::from)
                .collect()
        } else {
            huffman::decode::<u16>(part, n)
                .map_err(|e| bad(format!("{name}: {e}")))?
                .into_iter()
                .map(u64::from)
                .collect()
        };
        if let Some(c) = codes.iter().find(|&&c| c >> bits != 0) {
            return Err(bad(format!("{name}: symbol {c} does not fit {bits} bits")));
        }
        codes
    } else {
        if part.len() != packed_len(n, bits) {
            return Err(bad(format!(
                "{name}: {} bytes stored, {n} codes of {bits} bits need {}",
                part.len(),
                packed_len(n, bits)
            )));
        }
        unpack_bits(part, bits, n).map_err(|e| bad(format!("{name}: {e}")))?
    };
    st.push(stats(name, &codes, bits, part, huff));
    Ok(codes)
}

/// Integer codes of an integer tensor at `bits` (0 = fewest that fit).
fn packed_codes(dtype: DType, patterns: &[u64], bits: u8) -> Result<(Vec<u64>, u32)> {
    if !dtype.is_int() {
        return Err(bad(format!(
            "packed codes need an integer tensor, this one is {}",
            dtype.name()
        )));
    }
    let w = width(dtype)?;
    let signed = dtype.is_signed();
    let values: Vec<i64> = patterns.iter().map(|&p| int_value(dtype, p, w)).collect();
    let bits = if bits == 0 {
        let (lo, hi) = values
            .iter()
            .fold((0i64, 0i64), |(a, b), &v| (a.min(v), b.max(v)));
        (1..=w)
            .find(|&b| {
                if signed {
                    to_twos(lo, b).is_some() && to_twos(hi, b).is_some()
                } else {
                    b == 64 || (hi as u64) >> b == 0
                }
            })
            .unwrap_or(w)
    } else {
        bits as u32
    };
    if bits == 0 || bits > w {
        return Err(bad(format!(
            "{bits}-bit packing of a {w}-bit {} tensor",
            dtype.name()
        )));
    }
    let codes = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = if signed {
                to_twos(v, bits)
            } else {
                (bits == 64 || (v as u64) >> bits == 0).then_some(v as u64)
            };
            c.ok_or_else(|| bad(format!("element {i} = {v} does not fit {bits}-bit codes")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((codes, bits))
}

fn unpack_codes(dtype: DType, codes: &[u64], bits: u32) -> Result<Vec<u64>> {
    let w = width(dtype)?;
    if !dtype.is_int() || bits == 0 || bits > w {
        return Err(bad(format!(
            "{bits}-bit codes for a {} tensor",
            dtype.name()
        )));
    }
    Ok(codes
        .iter()
        .map(|&c| {
            let v = if dtype.is_signed() {
                from_twos(c, bits)
            } else {
                c as i64
            };
            int_pattern(v, w)
        })
        .collect())
}

/// Centroid table: (stored width, stored patterns).
fn centroid_table(dtype: DType, centroids: &[u64], fp16: bool) -> Result<(u32, Vec<u64>)> {
    if fp16 {
        if dtype != DType::F32 {
            return Err(bad(format!(
                "fp16 centroids are for f32 tensors, this one is {}",
                dtype.name()
            )));
        }
        if !fp16_exact(centroids) {
            return Err(bad(
                "a centroid is not exactly representable in fp16: round the shared \
                 weights to fp16 first, or store f32 centroids",
            ));
        }
        Ok((16, f32_patterns_to_f16(centroids)))
    } else {
        Ok((width(dtype)?, centroids.to_vec()))
    }
}

fn read_centroids(p: &mut Parts<'_>, dtype: DType, fp16: bool, max: usize) -> Result<Vec<u64>> {
    let k = p.count("centroid count", max)?;
    let w = if fp16 { 16 } else { width(dtype)? };
    if fp16 && dtype != DType::F32 {
        return Err(bad("fp16 centroids in a tensor that is not f32"));
    }
    let part = p.part("centroids")?;
    let c = unpack_bits(part, w, k).map_err(|e| bad(format!("centroids: {e}")))?;
    Ok(if fp16 { f16_patterns_to_f32(&c) } else { c })
}

fn check_bits(bits: u8, max: u32, what: &str) -> Result<u32> {
    if bits as u32 > max {
        return Err(bad(format!("{what}: {bits} bits is more than {max}")));
    }
    Ok(bits as u32)
}

/// `[rows, cols]` view of a shape: dim 0 by the rest.
fn matrix_view(shape: &[usize], n: usize) -> (usize, usize) {
    match shape.first() {
        Some(&r) if r > 0 => (r, n / r),
        _ => (1, n),
    }
}

/// Encodes a tensor's elements under `enc`.
pub fn encode_tensor(t: &Tensor, enc: &Encoding) -> Result<EncodedTensor> {
    let mut payload = Vec::new();
    let mut st = Vec::new();
    let dtype = t.dtype();
    let resolved = encode_into(t, enc, false, &mut payload, &mut st)?;
    let _ = dtype;
    Ok(EncodedTensor {
        encoding: resolved,
        payload,
        streams: st,
    })
}

fn encode_into(
    t: &Tensor,
    enc: &Encoding,
    huff: bool,
    out: &mut Vec<u8>,
    st: &mut Vec<StreamStats>,
) -> Result<Encoding> {
    let dtype = t.dtype();
    match enc {
        Encoding::Dense => {
            if huff {
                let w = width(dtype)?;
                if w > 8 {
                    return Err(bad(format!(
                        "Huffman over dense elements needs a byte-sized type, this one is {}",
                        dtype.name()
                    )));
                }
                put_stream(out, st, "codes", &to_patterns(t.data())?, w, true)?;
            } else if dtype == DType::String {
                use prost::Message;
                put_part(out, &crate::onnx::tensor_to_proto("", t).encode_to_vec());
            } else {
                let raw = crate::onnx::encode_raw(t.data());
                st.push(StreamStats {
                    name: "codes",
                    symbols: t.len(),
                    bits: width(dtype)?,
                    entropy_bits: None,
                    stored_bytes: raw.len(),
                    payload_bytes: raw.len(),
                    huffman: false,
                });
                put_part(out, &raw);
            }
            Ok(Encoding::Dense)
        }
        Encoding::Packed { bits } => {
            let (codes, b) = packed_codes(dtype, &to_patterns(t.data())?, *bits)?;
            put_stream(out, st, "codes", &codes, b, huff)?;
            Ok(Encoding::Packed { bits: b as u8 })
        }
        Encoding::BitPlanes { bits } => {
            if huff {
                return Err(bad(
                    "bit planes are a kernel layout; Huffman-code packed codes instead",
                ));
            }
            if !dtype.is_int() {
                return Err(bad(format!(
                    "bit planes need an integer tensor, not {}",
                    dtype.name()
                )));
            }
            let w = width(dtype)?;
            let b = check_bits(*bits, 16, "bit planes")?;
            let codes: Vec<i32> = to_patterns(t.data())?
                .iter()
                .map(|&p| int_value(dtype, p, w) as i32)
                .collect();
            let (rows, cols) = matrix_view(t.shape(), t.len());
            let planes =
                BitPlanes::from_codes(&codes, rows, cols, b, dtype.is_signed()).map_err(fmt_err)?;
            let bytes: Vec<u8> = planes.data.iter().flat_map(|w| w.to_le_bytes()).collect();
            st.push(StreamStats {
                name: "planes",
                symbols: t.len(),
                bits: b,
                entropy_bits: None,
                stored_bytes: bytes.len(),
                payload_bytes: bytes.len(),
                huffman: false,
            });
            put_part(out, &bytes);
            Ok(enc.clone())
        }
        Encoding::Codebook { bits, fp16 } => {
            let patterns = to_patterns(t.data())?;
            let max_bits = if huff { huffman::MAX_CODE_LEN } else { 16 };
            let b = check_bits(*bits, max_bits, "codebook")?;
            let cap = if b == 0 { 1 << max_bits } else { 1usize << b };
            let cb = Codebook::build(&patterns, cap).map_err(fmt_err)?;
            let b = if b == 0 { cb.index_bits() } else { b };
            let (cw, table) = centroid_table(dtype, &cb.centroids, *fp16)?;
            put_varint(out, table.len() as u64);
            put_part(out, &pack_bits(&table, cw).map_err(fmt_err)?);
            let idx: Vec<u64> = cb.indices.iter().map(|&i| i as u64).collect();
            put_stream(out, st, "indices", &idx, b, huff)?;
            Ok(Encoding::Codebook {
                bits: b as u8,
                fp16: *fp16,
            })
        }
        Encoding::Csr {
            index_bits,
            values,
            column_major,
        } => encode_sparse(t, *index_bits, values, *column_major, huff, out, st),
        Encoding::Huffman { inner } => {
            if huff || matches!(**inner, Encoding::Huffman { .. }) {
                return Err(bad("Huffman inside Huffman"));
            }
            let r = encode_into(t, inner, true, out, st)?;
            Ok(Encoding::Huffman { inner: Box::new(r) })
        }
        Encoding::Constant => {
            if huff {
                return Err(bad("a constant has nothing to Huffman-code"));
            }
            let p = to_patterns(t.data())?;
            let first = p.first().copied().unwrap_or(0);
            if let Some(i) = p.iter().position(|&x| x != first) {
                return Err(bad(format!(
                    "element {i} differs from element 0: not a constant tensor"
                )));
            }
            let mut part = Vec::new();
            put_varint(&mut part, first);
            st.push(stats("codes", &[first], width(dtype)?, &part, false));
            put_part(out, &part);
            Ok(Encoding::Constant)
        }
        Encoding::Fp16 => {
            if dtype != DType::F32 {
                return Err(bad(format!(
                    "fp16 storage is for f32 tensors, this one is {}",
                    dtype.name()
                )));
            }
            let p = to_patterns(t.data())?;
            if let Some(i) = p.iter().position(|&x| !fp16_exact(&[x])) {
                return Err(bad(format!(
                    "element {i} ({}) is not exactly representable in fp16",
                    f32::from_bits(p[i] as u32)
                )));
            }
            put_stream(out, st, "codes", &f32_patterns_to_f16(&p), 16, huff)?;
            Ok(Encoding::Fp16)
        }
        Encoding::Product { .. } => Err(bad(
            "a product of two tensors is derived by the container, not encoded alone",
        )),
    }
}

/// How the values of a sparse tensor are coded.
enum ValueCoding {
    /// Element patterns at the dtype width.
    Dense(u32),
    /// Integer codes at `bits`.
    Packed(u32),
    /// Index into `centroids` (which hold 0 when fillers need it).
    Codebook {
        bits: u32,
        centroids: Vec<u64>,
        fp16: bool,
    },
}

#[allow(clippy::too_many_arguments)]
fn encode_sparse(
    t: &Tensor,
    index_bits: u8,
    values: &Encoding,
    column_major: bool,
    huff: bool,
    out: &mut Vec<u8>,
    st: &mut Vec<StreamStats>,
) -> Result<Encoding> {
    let dtype = t.dtype();
    let mut patterns = to_patterns(t.data())?;
    if column_major {
        let (r, c) = matrix_view(t.shape(), t.len());
        patterns = transpose(&patterns, r, c);
    }
    let max_index = if huff { huffman::MAX_CODE_LEN } else { 16 };
    let index_bits = check_bits(index_bits, max_index, "relative indices")?;
    let runs = zero_runs(&patterns);
    // Value codes of the non-zeros (in order) and of a filler zero.
    let nonzero: Vec<u64> = patterns.iter().copied().filter(|&p| p != 0).collect();
    let (coding, nz_codes, resolved_values) = match values {
        Encoding::Dense => {
            let w = width(dtype)?;
            if huff && w > 8 {
                return Err(bad(format!(
                    "Huffman over dense {} values: use a codebook or packed codes",
                    dtype.name()
                )));
            }
            (ValueCoding::Dense(w), nonzero.clone(), Encoding::Dense)
        }
        Encoding::Packed { bits } => {
            let (codes, b) = packed_codes(dtype, &nonzero, *bits)?;
            (
                ValueCoding::Packed(b),
                codes,
                Encoding::Packed { bits: b as u8 },
            )
        }
        Encoding::Codebook { bits, fp16 } => {
            let max_bits = if huff { huffman::MAX_CODE_LEN } else { 16 };
            let b = check_bits(*bits, max_bits, "codebook")?;
            let mut c = nonzero.clone();
            c.sort_unstable();
            c.dedup();
            let b = if b == 0 { bits_for(c.len() + 1) } else { b };
            (
                ValueCoding::Codebook {
                    bits: b,
                    centroids: c,
                    fp16: *fp16,
                },
                Vec::new(),
                Encoding::Codebook {
                    bits: b as u8,
                    fp16: *fp16,
                },
            )
        }
        other => {
            return Err(bad(format!(
                "sparse values are dense, packed or codebook, not {other}"
            )))
        }
    };
    let value_bits = match &coding {
        ValueCoding::Dense(w) => *w,
        ValueCoding::Packed(b) => *b,
        ValueCoding::Codebook { bits, .. } => *bits,
    };
    // A codebook needs a slot for the filler zero only when fillers occur.
    let feasible = |b: u32| -> bool {
        match &coding {
            ValueCoding::Codebook {
                bits, centroids, ..
            } => {
                let fillers = runs.iter().any(|&r| r >> b > 0);
                centroids.len() + fillers as usize <= 1 << bits
            }
            _ => true,
        }
    };
    if index_bits == 0 {
        // Rank the widths by a size estimate, then encode the best few (all
        // of them for small tensors) and keep the smallest exact payload: the
        // estimate ignores byte rounding and the filler's codebook slot.
        let mut ranked: Vec<(u64, u32)> = (1..=max_index)
            .filter(|&b| feasible(b))
            .map(|b| {
                let est = if huff {
                    huffman_cost_bits(&runs, b, &coding, &nz_codes, &nonzero)
                } else {
                    shrink_formats::sparse::entries_for(&runs, b) * (b + value_bits) as u64
                };
                (est, b)
            })
            .collect();
        if ranked.is_empty() {
            return Err(bad("no relative index width fits the codebook"));
        }
        ranked.sort_unstable();
        let tries = if patterns.len() <= 1 << 16 {
            ranked.len()
        } else {
            3
        };
        let mut best: Option<(Vec<u8>, Vec<StreamStats>, Encoding)> = None;
        for &(_, b) in ranked.iter().take(tries) {
            let (mut o, mut s) = (Vec::new(), Vec::new());
            let e = encode_sparse(t, b as u8, values, column_major, huff, &mut o, &mut s)?;
            if best.as_ref().is_none_or(|(bo, _, _)| o.len() < bo.len()) {
                best = Some((o, s, e));
            }
        }
        let (o, s, e) = best.expect("at least one width");
        out.extend_from_slice(&o);
        st.extend(s);
        return Ok(e);
    }
    let b = index_bits;
    let sparse = RelativeSparse::encode(&patterns, b).map_err(fmt_err)?;
    let gaps: Vec<u64> = sparse.gaps.iter().map(|&g| g as u64).collect();
    put_varint(out, sparse.entries() as u64);
    let vcodes: Vec<u64> = match &coding {
        ValueCoding::Dense(_) => sparse.values.clone(),
        ValueCoding::Packed(_) => {
            // nz_codes follow the non-zeros in order; fillers are code 0
            let mut it = nz_codes.iter();
            sparse
                .values
                .iter()
                .map(|&v| {
                    if v == 0 {
                        0
                    } else {
                        *it.next().expect("one code per non-zero")
                    }
                })
                .collect()
        }
        ValueCoding::Codebook {
            bits,
            centroids,
            fp16,
        } => {
            let mut table = centroids.clone();
            if sparse.fillers() > 0 {
                table.push(0);
                table.sort_unstable();
            }
            if table.len() > 1 << bits {
                return Err(bad(format!(
                    "{} distinct non-zero values{} do not fit a {bits}-bit codebook",
                    centroids.len(),
                    if sparse.fillers() > 0 {
                        " + the filler zero"
                    } else {
                        ""
                    }
                )));
            }
            let (cw, stored) = centroid_table(dtype, &table, *fp16)?;
            put_varint(out, stored.len() as u64);
            put_part(out, &pack_bits(&stored, cw).map_err(fmt_err)?);
            sparse
                .values
                .iter()
                .map(|v| {
                    table
                        .binary_search(v)
                        .map(|i| i as u64)
                        .map_err(|_| bad("value missing from codebook"))
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    put_stream(out, st, "gaps", &gaps, b, huff)?;
    put_stream(out, st, "values", &vcodes, value_bits, huff)?;
    Ok(Encoding::Csr {
        index_bits: b as u8,
        values: Box::new(resolved_values),
        column_major,
    })
}

/// Huffman-coded size in bits of the gap and value streams at index width
/// `b` (payload + code-length tables), used to pick `b`.
fn huffman_cost_bits(
    runs: &[u64],
    b: u32,
    coding: &ValueCoding,
    nz_codes: &[u64],
    nonzero: &[u64],
) -> u64 {
    let max_gap = (1u64 << b) - 1;
    let mut gh = vec![0u64; 1 << b];
    let mut fillers = 0u64;
    for &r in runs {
        let f = r >> b;
        fillers += f;
        gh[max_gap as usize] += f;
        gh[(r & max_gap) as usize] += 1;
    }
    let mut vh: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    match coding {
        ValueCoding::Packed(_) => nz_codes
            .iter()
            .for_each(|&c| *vh.entry(c).or_default() += 1),
        _ => nonzero.iter().for_each(|&c| *vh.entry(c).or_default() += 1),
    }
    if fillers > 0 {
        *vh.entry(0).or_default() += fillers;
    }
    let vhist: Vec<u64> = vh.values().copied().collect();
    let cost = |h: &[u64]| -> u64 {
        match huffman::limited_lengths(h, 11) {
            Some(l) => {
                let used = l.iter().filter(|&&x| x > 0).count();
                let payload: u64 = h.iter().zip(&l).map(|(&f, &x)| f * x as u64).sum();
                if used <= 1 {
                    0
                } else {
                    payload + 4 * h.len() as u64
                }
            }
            None => u64::MAX / 4,
        }
    };
    cost(&gh) + cost(&vhist)
}

/// Decodes a payload written by [`encode_tensor`].
pub fn decode_tensor(
    dtype: DType,
    shape: &[usize],
    enc: &Encoding,
    payload: &[u8],
) -> Result<(TensorData, Vec<StreamStats>)> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let mut p = Parts { b: payload, pos: 0 };
    let mut st = Vec::new();
    let data = decode_from(dtype, shape, n, enc, false, &mut p, &mut st)?;
    p.finish()?;
    if data.len() != n {
        return Err(bad(format!(
            "decoded {} elements, shape needs {n}",
            data.len()
        )));
    }
    Ok((data, st))
}

fn decode_from(
    dtype: DType,
    shape: &[usize],
    n: usize,
    enc: &Encoding,
    huff: bool,
    p: &mut Parts<'_>,
    st: &mut Vec<StreamStats>,
) -> Result<TensorData> {
    match enc {
        Encoding::Dense => {
            if huff {
                let w = width(dtype)?;
                if w > 8 {
                    return Err(bad("Huffman over dense elements wider than a byte"));
                }
                let codes = get_stream(p, st, "codes", n, w, true)?;
                return from_patterns(dtype, codes);
            }
            let part = p.part("dense elements")?;
            if dtype == DType::String {
                use prost::Message;
                let proto = crate::onnx::proto::TensorProto::decode(part)
                    .map_err(|e| bad(format!("string elements: {e}")))?;
                let t = crate::onnx::tensor_from_proto(&proto, None)?;
                if t.len() != n {
                    return Err(bad("string element count disagrees with the shape"));
                }
                return Ok(t.into_parts().1);
            }
            st.push(StreamStats {
                name: "codes",
                symbols: n,
                bits: width(dtype)?,
                entropy_bits: None,
                stored_bytes: part.len(),
                payload_bytes: part.len(),
                huffman: false,
            });
            crate::onnx::decode_raw(dtype, part, n).map_err(bad)
        }
        Encoding::Packed { bits } => {
            let b = check_bits(*bits, 64, "packed codes")?;
            let codes = get_stream(p, st, "codes", n, b, huff)?;
            from_patterns(dtype, unpack_codes(dtype, &codes, b)?)
        }
        Encoding::BitPlanes { bits } => {
            if huff || !dtype.is_int() {
                return Err(bad(format!("bit planes of a {} tensor", dtype.name())));
            }
            let b = check_bits(*bits, 16, "bit planes")?;
            if b == 0 || (dtype.is_signed() && b < 2) {
                return Err(bad(format!("{b}-bit planes")));
            }
            let (rows, cols) = matrix_view(shape, n);
            let wpr = BitPlanes::words_for(cols);
            let part = p.part("bit planes")?;
            let words = rows * b as usize * wpr;
            if part.len() != words * 8 {
                return Err(bad(format!(
                    "bit planes: {} bytes stored, {words} words expected",
                    part.len()
                )));
            }
            let planes = BitPlanes {
                rows,
                cols,
                bits: b,
                signed: dtype.is_signed(),
                words_per_row: wpr,
                data: part
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            };
            st.push(StreamStats {
                name: "planes",
                symbols: n,
                bits: b,
                entropy_bits: None,
                stored_bytes: part.len(),
                payload_bytes: part.len(),
                huffman: false,
            });
            let w = width(dtype)?;
            let codes = if n == 0 {
                Vec::new()
            } else {
                planes.to_codes()
            };
            let pats = codes.iter().map(|&c| int_pattern(c as i64, w)).collect();
            from_patterns(dtype, pats)
        }
        Encoding::Codebook { bits, fp16 } => {
            let b = check_bits(*bits, 16, "codebook")?;
            if b == 0 {
                return Err(bad("0-bit codebook"));
            }
            let centroids = read_centroids(p, dtype, *fp16, 1 << b)?;
            let idx = get_stream(p, st, "indices", n, b, huff)?;
            let cb = Codebook {
                centroids,
                indices: idx.iter().map(|&i| i as u32).collect(),
            };
            from_patterns(dtype, cb.decode().map_err(fmt_err)?)
        }
        Encoding::Csr {
            index_bits,
            values,
            column_major,
        } => {
            let b = check_bits(*index_bits, 16, "relative indices")?;
            if b == 0 {
                return Err(bad("0-bit relative indices"));
            }
            let entries = p.count("sparse entries", n)?;
            let (vbits, centroids) = match &**values {
                Encoding::Dense => (width(dtype)?, None),
                Encoding::Packed { bits } => (check_bits(*bits, 64, "packed values")?, None),
                Encoding::Codebook { bits, fp16 } => {
                    let vb = check_bits(*bits, 16, "codebook")?;
                    if vb == 0 {
                        return Err(bad("0-bit codebook"));
                    }
                    (vb, Some(read_centroids(p, dtype, *fp16, 1 << vb)?))
                }
                other => return Err(bad(format!("sparse values stored as {other}"))),
            };
            let gaps = get_stream(p, st, "gaps", entries, b, huff)?;
            let vcodes = get_stream(p, st, "values", entries, vbits, huff)?;
            let vals: Vec<u64> = match (&**values, centroids) {
                (_, Some(c)) => Codebook {
                    centroids: c,
                    indices: vcodes.iter().map(|&i| i as u32).collect(),
                }
                .decode()
                .map_err(fmt_err)?,
                (Encoding::Packed { .. }, None) => unpack_codes(dtype, &vcodes, vbits)?,
                _ => vcodes,
            };
            let sparse = RelativeSparse {
                len: n,
                index_bits: b,
                gaps: gaps.iter().map(|&g| g as u32).collect(),
                values: vals,
            };
            let mut dense = sparse.decode().map_err(fmt_err)?;
            if *column_major {
                let (r, c) = matrix_view(shape, n);
                // column-major [c][r] back to row-major [r][c]
                dense = transpose(&dense, c, r);
            }
            from_patterns(dtype, dense)
        }
        Encoding::Huffman { inner } => {
            if huff || matches!(**inner, Encoding::Huffman { .. }) {
                return Err(bad("Huffman inside Huffman"));
            }
            decode_from(dtype, shape, n, inner, true, p, st)
        }
        Encoding::Constant => {
            if huff {
                return Err(bad("a Huffman-coded constant"));
            }
            let part = p.part("constant")?;
            let mut pos = 0;
            let v = get_varint(part, &mut pos, "constant element")?;
            if pos != part.len() {
                return Err(bad("constant: bytes after the element"));
            }
            st.push(stats("codes", &[v], width(dtype)?, part, false));
            if width(dtype)? < 64 && v >> width(dtype)? != 0 {
                return Err(bad(format!(
                    "constant: {v:#x} has bits beyond the {} bits of {}",
                    width(dtype)?,
                    dtype.name()
                )));
            }
            from_patterns(dtype, vec![v; n])
        }
        Encoding::Fp16 => {
            if dtype != DType::F32 {
                return Err(bad(format!("fp16 storage of a {} tensor", dtype.name())));
            }
            let codes = get_stream(p, st, "codes", n, 16, huff)?;
            from_patterns(dtype, f16_patterns_to_f32(&codes))
        }
        Encoding::Product { .. } => Err(bad(
            "a product of two tensors is derived by the container, not decoded alone",
        )),
    }
}
