//! `TensorProto` <-> [`Tensor`]: every storage variant ONNX allows on read
//! (raw little-endian bytes, the typed repeated fields, external files, sparse
//! tensors), and one canonical form on write (raw bytes, or an external file).

use super::proto::{tensor_proto, SparseTensorProto, StringStringEntryProto, TensorProto};
use crate::{GraphError, Result};
use shrink_tensor::{bf16, f16, DType, Tensor, TensorData};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Converts a `TensorProto` into a dense [`Tensor`].
///
/// `base_dir` is the directory external data locations are relative to (the
/// model's directory); a tensor with external data and no `base_dir` is an
/// error rather than a guess at the current directory.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let name = display_name(&t.name);
    let bad = |msg: String| GraphError::Invalid(format!("tensor '{name}': {msg}"));
    if t.segment.is_some() {
        return Err(GraphError::Unsupported(format!(
            "tensor '{name}' is a segment of a larger tensor"
        )));
    }
    let dtype = dtype_from_code(t.data_type, || format!("tensor '{name}'"))?;
    let shape = dims_to_shape(&t.dims).map_err(bad)?;
    let numel = numel_of(&shape).ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;

    let external = t.data_location == tensor_proto::DataLocation::External as i32
        || !t.external_data.is_empty();
    let data = if external {
        if dtype == DType::String {
            return Err(bad("string tensors cannot use external data".into()));
        }
        let bytes = read_external(&t.external_data, base_dir, name)?;
        decode_raw(dtype, &bytes, numel).map_err(bad)?
    } else if !t.raw_data.is_empty() {
        if dtype == DType::String {
            return Err(bad("string tensors cannot use raw_data".into()));
        }
        decode_raw(dtype, &t.raw_data, numel).map_err(bad)?
    } else {
        decode_typed(t, dtype, numel).map_err(bad)?
    };
    Ok(Tensor::new(shape, data)?)
}

/// Densifies a `SparseTensorProto` (COO: `values` [NNZ] and `indices` either
/// [NNZ] linear or [NNZ, rank]); shrink's IR only holds dense tensors.
pub(crate) fn sparse_to_dense(s: &SparseTensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let vals_proto = s
        .values
        .as_ref()
        .ok_or_else(|| GraphError::Invalid("sparse tensor without values".into()))?;
    let name = display_name(&vals_proto.name).to_string();
    let bad = |msg: String| GraphError::Invalid(format!("sparse tensor '{name}': {msg}"));
    let values = tensor_from_proto(vals_proto, base_dir)?;
    let indices = match &s.indices {
        Some(i) => tensor_from_proto(i, base_dir)?.to_i64_vec(),
        None => return Err(bad("no indices".into())),
    };
    let shape = dims_to_shape(&s.dims).map_err(&bad)?;
    let numel = numel_of(&shape).ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let nnz = values.len();
    let rank = shape.len();
    let linear: Vec<usize> = if indices.len() == nnz {
        indices
            .iter()
            .map(|&i| usize::try_from(i).ok().filter(|&i| i < numel))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("index out of range".into()))?
    } else if rank > 0 && indices.len() == nnz * rank {
        let strides = shrink_tensor::strides_of(&shape);
        indices
            .chunks_exact(rank)
            .map(|c| {
                c.iter()
                    .zip(&shape)
                    .zip(&strides)
                    .try_fold(0usize, |acc, ((&i, &d), &st)| {
                        usize::try_from(i)
                            .ok()
                            .filter(|&i| i < d)
                            .map(|i| acc + i * st)
                    })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad("index out of range".into()))?
    } else {
        return Err(bad(format!(
            "{} indices do not fit {nnz} values of rank {rank}",
            indices.len()
        )));
    };
    let mut dense = TensorData::zeros(values.dtype(), numel);
    macro_rules! scatter {
        ($($v:ident),*) => {
            match (&mut dense, values.data()) {
                $((TensorData::$v(d), TensorData::$v(v)) => {
                    for (k, &i) in linear.iter().enumerate() {
                        d[i] = v[k].clone();
                    }
                })*
                _ => unreachable!("dense buffer was made with the values' dtype"),
            }
        };
    }
    scatter!(
        F32, F64, F16, BF16, I8, U8, I16, U16, I32, U32, I64, U64, Bool, I4, U4, F8E4M3FN,
        F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, String
    );
    Ok(Tensor::new(shape, dense)?)
}

/// Serialises a tensor the canonical way: little-endian `raw_data` (4-bit
/// types packed two per byte, low nibble first), strings in `string_data`.
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let mut p = TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: t.dtype().onnx_code(),
        ..Default::default()
    };
    match t.data() {
        TensorData::String(v) => p.string_data = v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        other => p.raw_data = encode_raw(other),
    }
    p
}

/// The little-endian bytes ONNX `raw_data` (and external files) hold for `data`.
pub(crate) fn encode_raw(data: &TensorData) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match data {
        TensorData::F32(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::F16(v) => le!(v),
        TensorData::BF16(v) => le!(v),
        TensorData::I8(v) => le!(v),
        TensorData::U8(v)
        | TensorData::F8E4M3FN(v)
        | TensorData::F8E4M3FNUZ(v)
        | TensorData::F8E5M2(v)
        | TensorData::F8E5M2FNUZ(v) => v.clone(),
        TensorData::I16(v) => le!(v),
        TensorData::U16(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        TensorData::I4(v) => pack_nibbles(v.iter().map(|&x| x as u8)),
        TensorData::U4(v) => pack_nibbles(v.iter().copied()),
        TensorData::String(_) => Vec::new(),
    }
}

/// Two 4-bit values per byte, the first in the low nibble (ONNX's layout):
///
/// ```text
///   byte k:  [ x[2k+1] (bits 7..4) | x[2k] (bits 3..0) ]
/// ```
fn pack_nibbles(vals: impl Iterator<Item = u8>) -> Vec<u8> {
    let vals: Vec<u8> = vals.collect();
    vals.chunks(2)
        .map(|c| (c[0] & 0x0f) | (c.get(1).copied().unwrap_or(0) & 0x0f) << 4)
        .collect()
}

fn unpack_nibbles(bytes: &[u8], numel: usize) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|&b| [b & 0x0f, b >> 4])
        .take(numel)
        .collect()
}

fn sign_extend_4(x: u8) -> i8 {
    ((x << 4) as i8) >> 4
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "<unnamed>"
    } else {
        name
    }
}

/// Maps an ONNX data type code, naming `what` and the ONNX type when shrink
/// has no equivalent (complex).
pub(crate) fn dtype_from_code(code: i32, what: impl FnOnce() -> String) -> Result<DType> {
    DType::from_onnx_code(code).ok_or_else(|| {
        let onnx_name = tensor_proto::DataType::try_from(code)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| format!("code {code}"));
        GraphError::Unsupported(format!(
            "{} has ONNX data type {onnx_name}, which shrink does not support",
            what()
        ))
    })
}

fn dims_to_shape(dims: &[i64]) -> Result<Vec<usize>, String> {
    dims.iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {dims:?}")))
        .collect()
}

fn numel_of(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Bytes `numel` elements of `dtype` occupy in raw form.
fn raw_len(dtype: DType, numel: usize) -> Option<usize> {
    match dtype {
        DType::I4 | DType::U4 => Some(numel.div_ceil(2)),
        DType::String => None,
        dt => numel.checked_mul(dt.bits() / 8),
    }
}

pub(crate) fn decode_raw(dtype: DType, bytes: &[u8], numel: usize) -> Result<TensorData, String> {
    let expected = raw_len(dtype, numel).ok_or("string tensors have no raw form")?;
    if bytes.len() != expected {
        return Err(format!(
            "raw data holds {} bytes, but {numel} {dtype} elements need {expected}",
            bytes.len()
        ));
    }
    macro_rules! le {
        ($t:ty, $n:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                .collect()
        };
    }
    Ok(match dtype {
        DType::F32 => TensorData::F32(le!(f32, 4)),
        DType::F64 => TensorData::F64(le!(f64, 8)),
        DType::F16 => TensorData::F16(le!(f16, 2)),
        DType::BF16 => TensorData::BF16(le!(bf16, 2)),
        DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::I16 => TensorData::I16(le!(i16, 2)),
        DType::U16 => TensorData::U16(le!(u16, 2)),
        DType::I32 => TensorData::I32(le!(i32, 4)),
        DType::U32 => TensorData::U32(le!(u32, 4)),
        DType::I64 => TensorData::I64(le!(i64, 8)),
        DType::U64 => TensorData::U64(le!(u64, 8)),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::I4 => TensorData::I4(
            unpack_nibbles(bytes, numel)
                .into_iter()
                .map(sign_extend_4)
                .collect(),
        ),
        DType::U4 => TensorData::U4(unpack_nibbles(bytes, numel)),
        // Float8 raw data is the codes themselves, one byte each.
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => {
            TensorData::try_from_float8_codes(dtype, bytes.to_vec()).expect("float8 dtype")
        }
        DType::String => unreachable!("rejected by raw_len"),
    })
}

fn decode_typed(t: &TensorProto, dtype: DType, numel: usize) -> Result<TensorData, String> {
    fn check<T>(field: &str, v: &[T], want: usize) -> Result<(), String> {
        if v.len() == want {
            Ok(())
        } else {
            Err(format!("{field} holds {} values, expected {want}", v.len()))
        }
    }
    let i32s = |want: usize| check("int32_data", &t.int32_data, want).map(|_| &t.int32_data);
    Ok(match dtype {
        DType::F32 => {
            check("float_data", &t.float_data, numel)?;
            TensorData::F32(t.float_data.clone())
        }
        DType::F64 => {
            check("double_data", &t.double_data, numel)?;
            TensorData::F64(t.double_data.clone())
        }
        DType::I64 => {
            check("int64_data", &t.int64_data, numel)?;
            TensorData::I64(t.int64_data.clone())
        }
        DType::U64 => {
            check("uint64_data", &t.uint64_data, numel)?;
            TensorData::U64(t.uint64_data.clone())
        }
        DType::U32 => {
            check("uint64_data", &t.uint64_data, numel)?;
            TensorData::U32(t.uint64_data.iter().map(|&x| x as u32).collect())
        }
        DType::I32 => TensorData::I32(i32s(numel)?.clone()),
        DType::I16 => TensorData::I16(i32s(numel)?.iter().map(|&x| x as i16).collect()),
        DType::U16 => TensorData::U16(i32s(numel)?.iter().map(|&x| x as u16).collect()),
        DType::I8 => TensorData::I8(i32s(numel)?.iter().map(|&x| x as i8).collect()),
        DType::U8 => TensorData::U8(i32s(numel)?.iter().map(|&x| x as u8).collect()),
        DType::Bool => TensorData::Bool(i32s(numel)?.iter().map(|&x| x != 0).collect()),
        // 16-bit floats travel as their bit patterns in int32_data.
        DType::F16 => TensorData::F16(
            i32s(numel)?
                .iter()
                .map(|&x| f16::from_bits(x as u16))
                .collect(),
        ),
        DType::BF16 => TensorData::BF16(
            i32s(numel)?
                .iter()
                .map(|&x| bf16::from_bits(x as u16))
                .collect(),
        ),
        // Float8 codes travel one per int32_data entry.
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => {
            let codes = i32s(numel)?.iter().map(|&x| x as u8).collect();
            TensorData::try_from_float8_codes(dtype, codes).expect("float8 dtype")
        }
        // 4-bit values are packed two per int32_data entry, like raw bytes.
        DType::I4 | DType::U4 => {
            let bytes: Vec<u8> = i32s(numel.div_ceil(2))?.iter().map(|&x| x as u8).collect();
            decode_raw(dtype, &bytes, numel)?
        }
        DType::String => {
            check("string_data", &t.string_data, numel)?;
            TensorData::String(
                t.string_data
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        String::from_utf8(s.clone())
                            .map_err(|_| format!("string element {i} is not valid UTF-8"))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// Where a tensor's external bytes live, per its `external_data` entries.
struct ExternalRef {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn parse_external(entries: &[StringStringEntryProto], name: &str) -> Result<ExternalRef> {
    let bad = |msg: String| GraphError::Invalid(format!("tensor '{name}': external data {msg}"));
    let mut r = ExternalRef {
        location: String::new(),
        offset: 0,
        length: None,
    };
    for e in entries {
        match e.key.as_str() {
            "location" => r.location = e.value.clone(),
            "offset" => {
                r.offset = e
                    .value
                    .parse()
                    .map_err(|_| bad(format!("offset '{}' is not a number", e.value)))?
            }
            "length" => {
                r.length = Some(
                    e.value
                        .parse()
                        .map_err(|_| bad(format!("length '{}' is not a number", e.value)))?,
                )
            }
            _ => {} // checksum and unknown keys are advisory
        }
    }
    if r.location.is_empty() {
        return Err(bad("has no location".into()));
    }
    Ok(r)
}

/// Resolves an external data location inside `base_dir`, refusing absolute
/// paths and `..` so a model file cannot make us read arbitrary files.
fn resolve_location(base_dir: &Path, location: &str, name: &str) -> Result<PathBuf> {
    let rel = Path::new(location);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(GraphError::Invalid(format!(
            "tensor '{name}': external data location '{location}' must be a relative path inside the model's directory"
        )));
    }
    Ok(base_dir.join(rel))
}

fn read_external(
    entries: &[StringStringEntryProto],
    base_dir: Option<&Path>,
    name: &str,
) -> Result<Vec<u8>> {
    let r = parse_external(entries, name)?;
    let base = base_dir.ok_or_else(|| {
        GraphError::Invalid(format!(
            "tensor '{name}': external data '{}' needs the model's directory, but none was given",
            r.location
        ))
    })?;
    let path = resolve_location(base, &r.location, name)?;
    let io = |source: std::io::Error| GraphError::Io {
        path: format!("{} (external data of tensor '{name}')", path.display()),
        source,
    };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let length = match r.length {
        Some(l) => l,
        None => file_len.saturating_sub(r.offset),
    };
    if !matches!(r.offset.checked_add(length), Some(end) if end <= file_len) {
        return Err(GraphError::Invalid(format!(
            "tensor '{name}': external data {}: bytes {}..{} requested but the file holds {file_len}",
            path.display(),
            r.offset,
            r.offset.saturating_add(length)
        )));
    }
    f.seek(SeekFrom::Start(r.offset)).map_err(io)?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int4_packing_round_trips_odd_lengths() {
        let vals: Vec<i8> = vec![-8, -1, 0, 7, 3];
        let t = Tensor::new(vec![5], TensorData::I4(vals.clone())).unwrap();
        let p = tensor_to_proto("w", &t);
        // ONNX layout: first value in the low nibble.
        assert_eq!(p.raw_data, vec![0xf8, 0x70, 0x03]);
        let back = tensor_from_proto(&p, None).unwrap();
        assert_eq!(back.data(), &TensorData::I4(vals));
    }

    #[test]
    fn typed_fields_decode() {
        let p = TensorProto {
            name: "h".into(),
            dims: vec![2],
            data_type: DType::F16.onnx_code(),
            int32_data: vec![0x3c00, 0xc000],
            ..Default::default()
        };
        let t = tensor_from_proto(&p, None).unwrap();
        assert_eq!(t.to_f32_vec(), vec![1.0, -2.0]);
        let p = TensorProto {
            name: "u".into(),
            dims: vec![3],
            data_type: DType::U4.onnx_code(),
            int32_data: vec![0x21, 0x0f],
            ..Default::default()
        };
        let t = tensor_from_proto(&p, None).unwrap();
        assert_eq!(t.data(), &TensorData::U4(vec![1, 2, 15]));
    }

    #[test]
    fn size_mismatch_and_complex_are_errors_naming_the_tensor() {
        let p = TensorProto {
            name: "w".into(),
            dims: vec![3],
            data_type: 1,
            raw_data: vec![0; 8],
            ..Default::default()
        };
        let e = tensor_from_proto(&p, None).unwrap_err().to_string();
        assert!(e.contains("'w'") && e.contains("12"), "{e}");
        let p = TensorProto {
            name: "c".into(),
            dims: vec![1],
            data_type: 14,
            raw_data: vec![0; 8],
            ..Default::default()
        };
        let e = tensor_from_proto(&p, None).unwrap_err().to_string();
        assert!(e.contains("'c'") && e.contains("COMPLEX64"), "{e}");
    }

    #[test]
    fn float8_reads_raw_and_int32_data_and_writes_raw() {
        // E5M2 codes: 1.0, -2.0, +inf, NaN; onnx's make_tensor stores them
        // one per int32_data entry, numpy_helper.from_array as raw bytes.
        let codes = vec![0x3c, 0xc0, 0x7c, 0x7f];
        let p = TensorProto {
            name: "f8".into(),
            dims: vec![4],
            data_type: 19,
            int32_data: codes.iter().map(|&c| c as i32).collect(),
            ..Default::default()
        };
        let t = tensor_from_proto(&p, None).unwrap();
        assert_eq!(t.data(), &TensorData::F8E5M2(codes.clone()));
        let v = t.to_f32_vec();
        assert_eq!(&v[..3], &[1.0, -2.0, f32::INFINITY]);
        assert!(v[3].is_nan());
        let p = tensor_to_proto("f8", &t);
        assert_eq!((p.data_type, &p.raw_data), (19, &codes));
        assert_eq!(tensor_from_proto(&p, None).unwrap(), t);
        let short = TensorProto {
            raw_data: vec![0; 3],
            ..p
        };
        assert!(tensor_from_proto(&short, None).is_err());
    }

    #[test]
    fn huge_dims_do_not_allocate() {
        let p = TensorProto {
            name: "big".into(),
            dims: vec![1 << 40, 1 << 30],
            data_type: 1,
            ..Default::default()
        };
        assert!(tensor_from_proto(&p, None).is_err());
    }

    #[test]
    fn external_location_may_not_escape() {
        let p = TensorProto {
            name: "w".into(),
            dims: vec![1],
            data_type: 1,
            data_location: 1,
            external_data: vec![StringStringEntryProto {
                key: "location".into(),
                value: "../etc/passwd".into(),
            }],
            ..Default::default()
        };
        let e = tensor_from_proto(&p, Some(Path::new("/tmp"))).unwrap_err();
        assert!(e.to_string().contains("relative path"), "{e}");
    }
}
