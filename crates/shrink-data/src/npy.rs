//! NumPy's `.npy` and `.npz` files.
//!
//! `.npy` is a magic string, a version, a little-endian header length (u16 in
//! v1, u32 in v2/v3) and a Python-literal dict `{'descr': '<f4',
//! 'fortran_order': False, 'shape': (2, 3), }` padded with spaces to a 64-byte
//! boundary, followed by the raw elements. Reading accepts either byte order and
//! either memory order and always yields a row-major, native [`Tensor`]; writing
//! produces C-order little-endian v1 files (v2 when the header outgrows u16), as
//! `numpy.save` does. `.npz` is a zip archive of `.npy` members, stored or
//! deflated.

use crate::{DataError, Result};
use half::{bf16, f16};
use shrink_tensor::{strides_of, DType, Tensor, TensorData};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Reads a `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_npy(&bytes).map_err(|msg| DataError::format(path, msg))
}

/// Writes a `.npy` file atomically (a temporary file renamed into place, so a
/// reader never sees half a file and a crash never leaves one).
pub fn write_npy(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_npy(t, Order::C).map_err(|msg| DataError::format(path, msg))?;
    write_atomic(path, &bytes)
}

/// Memory order of the elements in an encoded `.npy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Row-major (last index fastest), NumPy's default.
    C,
    /// Column-major (first index fastest).
    Fortran,
}

/// Parses `.npy` bytes; the error is a message the caller prefixes with the file.
pub fn parse_npy(b: &[u8]) -> std::result::Result<Tensor, String> {
    if b.len() < 10 || &b[..6] != MAGIC {
        return Err("not a .npy file (missing \\x93NUMPY magic)".into());
    }
    let major = b[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10usize),
        2 | 3 => {
            if b.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy format version {v}.{}", b[7])),
    };
    let end = start
        .checked_add(len)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| format!("header length {len} runs past the end of the file"))?;
    let header =
        std::str::from_utf8(&b[start..end]).map_err(|_| "header is not valid UTF-8".to_string())?;
    let h = parse_header(header)?;
    let n = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} overflows", h.shape))?;
    let width = h.dtype.bits() / 8;
    let body = &b[end..];
    if body.len() != n * width {
        return Err(format!(
            "shape {:?} of {} needs {} data bytes, the file has {}",
            h.shape,
            h.dtype,
            n * width,
            body.len()
        ));
    }
    let data = decode(body, h.dtype, h.big_endian)?;
    let t = Tensor::new(h.shape.clone(), data).map_err(|e| e.to_string())?;
    Ok(if h.fortran && h.shape.len() > 1 {
        fortran_to_c(&t)
    } else {
        t
    })
}

/// Encodes a tensor as `.npy` bytes in the given memory order (little endian).
pub fn encode_npy(t: &Tensor, order: Order) -> std::result::Result<Vec<u8>, String> {
    let descr = descr_of(t.dtype())?;
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let fortran = order == Order::Fortran;
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    // Pad so that magic + version + length + dict + '\n' is a multiple of 64.
    let (version, len_bytes) = if dict.len() + 1 + 10 <= u16::MAX as usize {
        (1u8, 2)
    } else {
        (2u8, 4)
    };
    let prefix = 8 + len_bytes;
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let mut header = dict.into_bytes();
    header.resize(total - prefix - 1, b' ');
    header.push(b'\n');
    let mut out = Vec::with_capacity(total + t.nbytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(&header);
    let body = if fortran && t.rank() > 1 {
        c_to_fortran(t)
    } else {
        t.clone()
    };
    encode_le(body.data(), &mut out);
    Ok(out)
}

/// Reads every `.npy` member of an `.npz` archive, in archive order, named
/// without the `.npy` suffix (as `numpy.load` does).
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| DataError::format(path, format!("not a readable zip archive: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| DataError::format(path, format!("member {i}: {e}")))?;
        let name = member.name().to_string();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::format(path, format!("member '{name}': {e}")))?;
        let t = parse_npy(&bytes)
            .map_err(|msg| DataError::format(path, format!("member '{name}': {msg}")))?;
        out.push((key.to_string(), t));
    }
    Ok(out)
}

/// Reads one named array of an `.npz` archive.
pub fn read_npz_array(path: impl AsRef<Path>, name: &str) -> Result<Tensor> {
    let path = path.as_ref();
    let all = read_npz(path)?;
    let names: Vec<String> = all.iter().map(|(k, _)| k.clone()).collect();
    all.into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            DataError::format(
                path,
                format!("no array '{name}' (the archive has {names:?})"),
            )
        })
}

/// Writes an `.npz` archive atomically; `compress` chooses deflate
/// (`numpy.savez_compressed`) over stored members (`numpy.savez`).
pub fn write_npz(path: impl AsRef<Path>, arrays: &[(&str, &Tensor)], compress: bool) -> Result<()> {
    let path = path.as_ref();
    let method = if compress {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(arrays.iter().any(|(_, t)| t.nbytes() >= u32::MAX as usize));
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, t) in arrays {
        let bytes = encode_npy(t, Order::C)
            .map_err(|msg| DataError::format(path, format!("array '{name}': {msg}")))?;
        zw.start_file(format!("{name}.npy"), opts)
            .map_err(|e| DataError::format(path, e.to_string()))?;
        zw.write_all(&bytes).map_err(|e| DataError::io(path, e))?;
    }
    let cursor = zw
        .finish()
        .map_err(|e| DataError::format(path, e.to_string()))?;
    write_atomic(path, &cursor.into_inner())
}

/// Writes `bytes` to a temporary sibling, syncs it, and renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| DataError::format(path, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}

struct Header {
    dtype: DType,
    big_endian: bool,
    fortran: bool,
    shape: Vec<usize>,
}

/// Parses the Python-literal header dict (only the three keys NumPy writes).
fn parse_header(h: &str) -> std::result::Result<Header, String> {
    let descr = dict_value(h, "descr")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let (dtype, big_endian) = parse_descr(descr)?;
    let fortran = match dict_value(h, "fortran_order")?.trim() {
        "True" => true,
        "False" => false,
        other => {
            return Err(format!(
                "fortran_order is '{other}', expected True or False"
            ))
        }
    };
    let shape_src = dict_value(h, "shape")?;
    let inner = shape_src
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("shape '{shape_src}' is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("shape entry '{s}' is not a non-negative integer"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Header {
        dtype,
        big_endian,
        fortran,
        shape,
    })
}

/// The source text of `key`'s value: up to the next top-level comma or brace.
fn dict_value<'a>(h: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let pos = [format!("'{key}'"), format!("\"{key}\"")]
        .iter()
        .find_map(|k| h.find(k.as_str()).map(|p| p + k.len()))
        .ok_or_else(|| format!("header has no '{key}' key: {}", h.trim()))?;
    let rest = h[pos..]
        .trim_start()
        .strip_prefix(':')
        .ok_or_else(|| format!("header key '{key}' is not followed by ':'"))?;
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(&rest[..i]),
            _ => {}
        }
    }
    Err(format!("header value of '{key}' is not terminated"))
}

fn parse_descr(d: &str) -> std::result::Result<(DType, bool), String> {
    let (order, ty) = match d.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &d[1..]),
        _ => ('=', d),
    };
    let dtype = match ty {
        "f2" | "e" => DType::F16,
        "f4" | "f" => DType::F32,
        "f8" | "d" => DType::F64,
        "i1" | "b" => DType::I8,
        "u1" | "B" => DType::U8,
        "i2" | "h" => DType::I16,
        "u2" | "H" => DType::U16,
        "i4" => DType::I32,
        "u4" => DType::U32,
        "i8" => DType::I64,
        "u8" => DType::U64,
        "b1" | "?" => DType::Bool,
        _ => return Err(format!("unsupported dtype descriptor '{d}'")),
    };
    let big = match order {
        '>' => true,
        '<' | '|' => false,
        _ => cfg!(target_endian = "big"),
    };
    Ok((dtype, big))
}

fn descr_of(dt: DType) -> std::result::Result<&'static str, String> {
    Ok(match dt {
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        // bf16 has no NumPy dtype; i4/u4/strings have no fixed-width one.
        other => return Err(format!("{other} has no .npy representation")),
    })
}

macro_rules! decode_as {
    ($body:expr, $big:expr, $t:ty, $n:expr) => {
        $body
            .chunks_exact($n)
            .map(|c| {
                let a: [u8; $n] = c.try_into().unwrap();
                if $big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            })
            .collect::<Vec<$t>>()
    };
}

fn decode(body: &[u8], dt: DType, big: bool) -> std::result::Result<TensorData, String> {
    Ok(match dt {
        DType::F16 => TensorData::F16(
            decode_as!(body, big, u16, 2)
                .into_iter()
                .map(f16::from_bits)
                .collect(),
        ),
        DType::F32 => TensorData::F32(decode_as!(body, big, f32, 4)),
        DType::F64 => TensorData::F64(decode_as!(body, big, f64, 8)),
        DType::I8 => TensorData::I8(body.iter().map(|&x| x as i8).collect()),
        DType::U8 => TensorData::U8(body.to_vec()),
        DType::I16 => TensorData::I16(decode_as!(body, big, i16, 2)),
        DType::U16 => TensorData::U16(decode_as!(body, big, u16, 2)),
        DType::I32 => TensorData::I32(decode_as!(body, big, i32, 4)),
        DType::U32 => TensorData::U32(decode_as!(body, big, u32, 4)),
        DType::I64 => TensorData::I64(decode_as!(body, big, i64, 8)),
        DType::U64 => TensorData::U64(decode_as!(body, big, u64, 8)),
        DType::Bool => {
            if let Some(i) = body.iter().position(|&x| x > 1) {
                return Err(format!("bool element {i} has byte value {}", body[i]));
            }
            TensorData::Bool(body.iter().map(|&x| x == 1).collect())
        }
        other => return Err(format!("cannot decode {other}")),
    })
}

fn encode_le(d: &TensorData, out: &mut Vec<u8>) {
    match d {
        TensorData::F16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
        TensorData::BF16(v) => v
            .iter()
            .for_each(|x: &bf16| out.extend_from_slice(&x.to_bits().to_le_bytes())),
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::I4(v) => out.extend(v.iter().map(|&x| x as u8)),
        TensorData::U4(v) => out.extend_from_slice(v),
        TensorData::String(_) => {}
        TensorData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Row-major index `i` of `shape` → its position in column-major storage.
fn fortran_offset(mut i: usize, shape: &[usize], f_strides: &[usize]) -> usize {
    let mut off = 0;
    for k in (0..shape.len()).rev() {
        off += (i % shape[k]) * f_strides[k];
        i /= shape[k];
    }
    off
}

fn fortran_strides(shape: &[usize]) -> Vec<usize> {
    let mut rev: Vec<usize> = shape.iter().rev().copied().collect();
    rev = strides_of(&rev);
    rev.reverse();
    rev
}

/// Reorders column-major elements (as read) into row-major ones.
fn fortran_to_c(t: &Tensor) -> Tensor {
    let shape = t.shape().to_vec();
    let fs = fortran_strides(&shape);
    let src: Vec<usize> = (0..t.len())
        .map(|i| fortran_offset(i, &shape, &fs))
        .collect();
    let data = shrink_tensor::map_data!(t.data(), v => gather(v, &src));
    Tensor::new(shape, data).expect("same element count")
}

/// Reorders row-major elements into column-major storage order.
fn c_to_fortran(t: &Tensor) -> Tensor {
    let shape = t.shape().to_vec();
    let fs = fortran_strides(&shape);
    let mut src = vec![0; t.len()];
    for (i, s) in (0..t.len()).map(|i| (i, fortran_offset(i, &shape, &fs))) {
        src[s] = i;
    }
    let data = shrink_tensor::map_data!(t.data(), v => gather(v, &src));
    Tensor::new(shape, data).expect("same element count")
}

/// `out[i] = v[src[i]]`.
fn gather<T: Clone>(v: &[T], src: &[usize]) -> Vec<T> {
    src.iter().map(|&i| v[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &Tensor, order: Order) -> Tensor {
        parse_npy(&encode_npy(t, order).unwrap()).unwrap()
    }

    #[test]
    fn round_trips_every_dtype() {
        let ts = vec![
            Tensor::from_vec(
                vec![2, 3],
                vec![1.5f32, -2.0, 0.0, f32::MAX, f32::MIN_POSITIVE, -0.0],
            )
            .unwrap(),
            Tensor::from_vec(vec![2], vec![1e300f64, -3.25]).unwrap(),
            Tensor::from_vec(
                vec![3],
                vec![f16::from_f32(0.5), f16::MAX, f16::from_f32(-7.0)],
            )
            .unwrap(),
            Tensor::from_vec(vec![3], vec![i8::MIN, 0, i8::MAX]).unwrap(),
            Tensor::from_vec(vec![3], vec![0u8, 128, 255]).unwrap(),
            Tensor::from_vec(vec![2], vec![i16::MIN, i16::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![0u16, u16::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![i32::MIN, i32::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![0u32, u32::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![i64::MIN, i64::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![0u64, u64::MAX]).unwrap(),
            Tensor::from_vec(vec![2, 2], vec![true, false, false, true]).unwrap(),
        ];
        for t in &ts {
            assert_eq!(&round_trip(t, Order::C), t, "{}", t.dtype());
            assert_eq!(&round_trip(t, Order::Fortran), t, "{}", t.dtype());
        }
    }

    #[test]
    fn edge_shapes_round_trip() {
        let scalar = Tensor::scalar(42i64);
        assert_eq!(round_trip(&scalar, Order::C), scalar);
        let empty = Tensor::from_vec(vec![0, 3], Vec::<f32>::new()).unwrap();
        assert_eq!(round_trip(&empty, Order::C), empty);
        assert_eq!(round_trip(&empty, Order::Fortran), empty);
        let t = Tensor::from_vec(vec![2, 3, 4], (0..24).collect::<Vec<i32>>()).unwrap();
        let f = round_trip(&t, Order::Fortran);
        assert_eq!(f, t);
        // The Fortran body really is column-major: element [1,0,0] comes second.
        let bytes = encode_npy(&t, Order::Fortran).unwrap();
        let body = &bytes[bytes.len() - 96..];
        assert_eq!(i32::from_le_bytes(body[4..8].try_into().unwrap()), 12);
    }

    #[test]
    fn header_is_aligned_and_parsable() {
        let t = Tensor::from_vec(vec![5], vec![0u8; 5]).unwrap();
        let b = encode_npy(&t, Order::C).unwrap();
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(b[10 + hlen - 1], b'\n');
        assert!(std::str::from_utf8(&b[10..10 + hlen])
            .unwrap()
            .contains("'shape': (5,)"));
    }

    #[test]
    fn big_endian_and_v2_headers_are_read() {
        let dict = "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[2, 0]);
        b.extend_from_slice(&(dict.len() as u32 + 1).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.push(b'\n');
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(parse_npy(&b).unwrap().as_slice::<i32>().unwrap(), &[1, -2]);
    }

    #[test]
    fn corrupt_files_are_errors() {
        let t = Tensor::from_vec(vec![4], vec![1.0f32; 4]).unwrap();
        let good = encode_npy(&t, Order::C).unwrap();
        assert!(parse_npy(&good[..good.len() - 1])
            .unwrap_err()
            .contains("needs 16 data bytes"));
        assert!(parse_npy(&good[..20]).is_err());
        let mut bad_magic = good.clone();
        bad_magic[1] = b'X';
        assert!(parse_npy(&bad_magic).is_err());
        let mut bad_version = good.clone();
        bad_version[6] = 9;
        assert!(parse_npy(&bad_version).unwrap_err().contains("version 9"));
        let patch = |from: &[u8], to: &[u8]| {
            let mut b = good.clone();
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        assert!(parse_npy(&patch(b"<f4", b"<c8"))
            .unwrap_err()
            .contains("<c8"));
        assert!(parse_npy(&patch(b"(4,)", b"(x,)")).is_err());
        assert!(parse_npy(&patch(b"False", b"Fals?")).is_err());
        let mut bad_bool =
            encode_npy(&Tensor::from_vec(vec![1], vec![true]).unwrap(), Order::C).unwrap();
        *bad_bool.last_mut().unwrap() = 7;
        assert!(parse_npy(&bad_bool).is_err());
    }

    #[test]
    fn bf16_and_strings_are_refused_on_write() {
        let t = Tensor::from_vec(vec![1], vec![bf16::ONE]).unwrap();
        assert!(encode_npy(&t, Order::C).unwrap_err().contains("bf16"));
    }
}
