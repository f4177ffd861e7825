//! How a tensor is stored: the design's `Dense`, `Packed`, `BitPlanes`,
//! `Codebook`, `Csr` (relative-index sparse) and `Huffman` encodings.
//!
//! Encodings compose the way Deep Compression stacks its stages:
//! `Huffman { inner: Csr { values: Codebook } }` is pruning + weight sharing +
//! entropy coding (P+Q+H). Every encoding is lossless with respect to the
//! tensor in memory: it stores the values the graph holds, bit for bit, or
//! refuses (e.g. a codebook over more distinct values than it has slots).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Storage of one tensor; see the module docs. `Default` is [`Encoding::Dense`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Encoding {
    /// Every element at its dtype's width (int4: two per byte), little-endian.
    #[default]
    Dense,
    /// Integer codes at `bits` each (two's complement for signed dtypes);
    /// `bits: 0` picks the fewest bits that hold every value.
    Packed { bits: u8 },
    /// BISMO bit planes of the `[dim0, rest]` matrix of integer codes
    /// (`shrink_formats::pack::BitPlanes`), the bit-serial kernels' layout.
    BitPlanes { bits: u8 },
    /// Exact codebook: the distinct values (at most `2^bits`) + `bits`-bit
    /// indices; `fp16` stores f32 centroids as fp16 (each must be exact in fp16).
    Codebook {
        bits: u8,
        #[serde(default)]
        fp16: bool,
    },
    /// Relative-index sparse storage (Deep Compression): gaps of `index_bits`
    /// with filler zeros, over the row-major (`column_major`: column-major)
    /// order of the `[dim0, rest]` view; `values` is `Dense`, `Packed` or
    /// `Codebook`. `index_bits: 0` picks the width that minimises the size.
    Csr {
        index_bits: u8,
        values: Box<Encoding>,
        #[serde(default)]
        column_major: bool,
    },
    /// Canonical Huffman coding of every code stream of `inner` (`Dense`
    /// integer bytes, `Packed`, `Codebook` or `Csr`); tables stay fixed-width.
    Huffman { inner: Box<Encoding> },
    /// Every element has the same bit pattern, stored once (version 2):
    /// the all-zero zero points of symmetric weights and int32 biases.
    Constant,
    /// An f32 tensor whose every value is exactly an fp16 value, stored as
    /// fp16 (version 2). Lossless by construction: the writer refuses a
    /// value fp16 does not hold, so quantisers that want it pick
    /// fp16-representable scales up front.
    Fp16,
    /// Nothing stored: the f32 product `a[i] · b[i]` of two other stored
    /// tensors (a one-element tensor broadcasts), recomputed at load
    /// (version 2). The int32 bias scale of a QDQ layer is by construction
    /// `s_x · s_w[c]`; the writer checks that the product reproduces the
    /// tensor bit for bit and refuses otherwise.
    Product { a: String, b: String },
}

impl Encoding {
    /// Deep Compression's full pipeline for a pruned, weight-shared tensor:
    /// relative indices (width chosen per tensor) + `bits`-bit codebook, all
    /// Huffman-coded.
    pub fn deep_compression(bits: u8) -> Encoding {
        Encoding::Huffman {
            inner: Box::new(Encoding::Csr {
                index_bits: 0,
                values: Box::new(Encoding::Codebook { bits, fp16: false }),
                column_major: false,
            }),
        }
    }

    /// Whether the stored form depends on which elements are zero.
    pub fn is_sparse(&self) -> bool {
        match self {
            Encoding::Csr { .. } => true,
            Encoding::Huffman { inner } => inner.is_sparse(),
            _ => false,
        }
    }

    /// Codebook bits anywhere inside, if any.
    pub fn codebook_bits(&self) -> Option<u8> {
        match self {
            Encoding::Codebook { bits, .. } => Some(*bits),
            Encoding::Csr { values, .. } => values.codebook_bits(),
            Encoding::Huffman { inner } => inner.codebook_bits(),
            _ => None,
        }
    }

    /// Relative index bits, if sparse.
    pub fn index_bits(&self) -> Option<u8> {
        match self {
            Encoding::Csr { index_bits, .. } => Some(*index_bits),
            Encoding::Huffman { inner } => inner.index_bits(),
            _ => None,
        }
    }

    pub fn is_huffman(&self) -> bool {
        matches!(self, Encoding::Huffman { .. })
    }

    /// Whether a version-1 reader lacks this encoding (the writer then
    /// writes format version 2).
    pub fn needs_v2(&self) -> bool {
        match self {
            Encoding::Constant | Encoding::Fp16 | Encoding::Product { .. } => true,
            Encoding::Csr { values, .. } => values.needs_v2(),
            Encoding::Huffman { inner } => inner.needs_v2(),
            _ => false,
        }
    }

    /// Parses the CLI spelling (the inverse of `Display`): `dense`,
    /// `packed4`, `bitplanes2`, `codebook5`, `codebook5h` (fp16 centroids),
    /// `csr5:<values>`, `csc5:<values>` (`csr:<values>` = auto width),
    /// `huffman:<inner>`, and `dc5` for `huffman:csr:codebook5`.
    pub fn parse(s: &str) -> Result<Encoding, String> {
        let num = |rest: &str, what: &str| -> Result<u8, String> {
            if rest.is_empty() {
                return Ok(0);
            }
            rest.parse::<u8>()
                .map_err(|_| format!("'{s}': '{rest}' is not a bit count for {what}"))
        };
        if let Some(inner) = s.strip_prefix("huffman:") {
            return Ok(Encoding::Huffman {
                inner: Box::new(Encoding::parse(inner)?),
            });
        }
        for (prefix, column_major) in [("csr", false), ("csc", true)] {
            if let Some(rest) = s.strip_prefix(prefix) {
                let (b, values) = rest.split_once(':').ok_or_else(|| {
                    format!("'{s}': write {prefix}<bits>:<values>, e.g. {prefix}5:codebook4")
                })?;
                return Ok(Encoding::Csr {
                    index_bits: num(b, "relative indices")?,
                    values: Box::new(Encoding::parse(values)?),
                    column_major,
                });
            }
        }
        if s == "dense" {
            return Ok(Encoding::Dense);
        }
        if s == "constant" {
            return Ok(Encoding::Constant);
        }
        if s == "fp16" {
            return Ok(Encoding::Fp16);
        }
        if let Some(rest) = s.strip_prefix("product:") {
            let (a, b) = rest
                .split_once('*')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .ok_or_else(|| format!("'{s}': write product:<tensor>*<tensor>"))?;
            return Ok(Encoding::Product {
                a: a.to_string(),
                b: b.to_string(),
            });
        }
        if let Some(b) = s.strip_prefix("dc") {
            return Ok(Encoding::deep_compression(num(b, "the codebook")?));
        }
        if let Some(b) = s.strip_prefix("packed") {
            return Ok(Encoding::Packed {
                bits: num(b, "packed codes")?,
            });
        }
        if let Some(b) = s.strip_prefix("bitplanes") {
            return Ok(Encoding::BitPlanes {
                bits: num(b, "bit planes")?,
            });
        }
        if let Some(b) = s.strip_prefix("codebook") {
            let (b, fp16) = match b.strip_suffix('h') {
                Some(b) => (b, true),
                None => (b, false),
            };
            return Ok(Encoding::Codebook {
                bits: num(b, "the codebook")?,
                fp16,
            });
        }
        Err(format!(
            "unknown encoding '{s}' (dense, packed<b>, bitplanes<b>, codebook<b>[h], \
             csr<b>:<values>, csc<b>:<values>, huffman:<inner>, dc<b>, constant, fp16, \
             product:<a>*<b>)"
        ))
    }

    /// Binary descriptor written in front of each tensor's payload.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Encoding::Dense => out.push(0),
            Encoding::Packed { bits } => out.extend([1, *bits]),
            Encoding::BitPlanes { bits } => out.extend([2, *bits]),
            Encoding::Codebook { bits, fp16 } => out.extend([3, *bits, *fp16 as u8]),
            Encoding::Csr {
                index_bits,
                values,
                column_major,
            } => {
                out.extend([4, *index_bits, *column_major as u8]);
                values.write(out);
            }
            Encoding::Huffman { inner } => {
                out.push(5);
                inner.write(out);
            }
            Encoding::Constant => out.push(6),
            Encoding::Fp16 => out.push(7),
            Encoding::Product { a, b } => {
                out.push(8);
                for name in [a, b] {
                    super::codec::put_varint(out, name.len() as u64);
                    out.extend_from_slice(name.as_bytes());
                }
            }
        }
    }

    pub(super) fn read(b: &[u8], pos: &mut usize) -> Result<Encoding, String> {
        Self::read_depth(b, pos, 0)
    }

    fn read_depth(b: &[u8], pos: &mut usize, depth: u32) -> Result<Encoding, String> {
        if depth > 3 {
            return Err("encoding descriptor nested too deeply".into());
        }
        let mut byte = || -> Result<u8, String> {
            let v = *b.get(*pos).ok_or("encoding descriptor truncated")?;
            *pos += 1;
            Ok(v)
        };
        let flag = |v: u8| -> Result<bool, String> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(format!("flag byte {v} is neither 0 nor 1")),
            }
        };
        Ok(match byte()? {
            0 => Encoding::Dense,
            1 => Encoding::Packed { bits: byte()? },
            2 => Encoding::BitPlanes { bits: byte()? },
            3 => {
                let bits = byte()?;
                Encoding::Codebook {
                    bits,
                    fp16: flag(byte()?)?,
                }
            }
            4 => {
                let index_bits = byte()?;
                let column_major = flag(byte()?)?;
                Encoding::Csr {
                    index_bits,
                    column_major,
                    values: Box::new(Self::read_depth(b, pos, depth + 1)?),
                }
            }
            5 => Encoding::Huffman {
                inner: Box::new(Self::read_depth(b, pos, depth + 1)?),
            },
            6 => Encoding::Constant,
            7 => Encoding::Fp16,
            8 => {
                let mut name = || -> Result<String, String> {
                    let len = super::codec::get_varint(b, pos, "operand name length")
                        .map_err(|e| e.to_string())? as usize;
                    let bytes = b
                        .get(*pos..pos.saturating_add(len))
                        .ok_or("product operand name truncated")?;
                    *pos += len;
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| "product operand name is not UTF-8".to_string())
                };
                let a = name()?;
                let b = name()?;
                Encoding::Product { a, b }
            }
            t => return Err(format!("unknown encoding tag {t}")),
        })
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encoding::Dense => f.write_str("dense"),
            Encoding::Packed { bits } => write!(f, "packed{bits}"),
            Encoding::BitPlanes { bits } => write!(f, "bitplanes{bits}"),
            Encoding::Codebook { bits, fp16 } => {
                write!(f, "codebook{bits}{}", if *fp16 { "h" } else { "" })
            }
            Encoding::Csr {
                index_bits,
                values,
                column_major,
            } => {
                let kind = if *column_major { "csc" } else { "csr" };
                if *index_bits == 0 {
                    write!(f, "{kind}:{values}")
                } else {
                    write!(f, "{kind}{index_bits}:{values}")
                }
            }
            Encoding::Huffman { inner } => write!(f, "huffman:{inner}"),
            Encoding::Constant => f.write_str("constant"),
            Encoding::Fp16 => f.write_str("fp16"),
            Encoding::Product { a, b } => write!(f, "product:{a}*{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_and_descriptor_round_trip() {
        for s in [
            "dense",
            "packed4",
            "bitplanes3",
            "codebook5",
            "codebook4h",
            "csr5:codebook5",
            "csc:dense",
            "csr3:packed4",
            "huffman:csr:codebook5",
            "huffman:packed8",
            "constant",
            "fp16",
            "product:x_scale*w_scale",
        ] {
            let e = Encoding::parse(s).unwrap();
            assert_eq!(e.to_string(), s);
            let mut b = Vec::new();
            e.write(&mut b);
            let mut pos = 0;
            assert_eq!(Encoding::read(&b, &mut pos).unwrap(), e);
            assert_eq!(pos, b.len());
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Encoding>(&json).unwrap(), e);
        }
        assert_eq!(
            Encoding::parse("dc5").unwrap(),
            Encoding::deep_compression(5)
        );
        assert!(Encoding::parse("zip").is_err());
        assert!(Encoding::parse("csr5").is_err());
        assert!(Encoding::read(&[9], &mut 0).is_err());
        assert!(
            Encoding::read(&[5, 5, 5, 5, 5, 0], &mut 0).is_err(),
            "too deep"
        );
        assert!(Encoding::read(&[3, 5], &mut 0).is_err(), "truncated");
        assert!(
            Encoding::read(&[8, 3, b'a'], &mut 0).is_err(),
            "truncated name"
        );
        assert!(Encoding::parse("product:a").is_err());
        assert!(Encoding::parse("product:*b").is_err());
        assert!(Encoding::Fp16.needs_v2() && !Encoding::parse("dc5").unwrap().needs_v2());
    }
}
