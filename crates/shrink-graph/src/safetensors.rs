//! Reading `.safetensors` weight files.
//!
//! Layout: an 8-byte little-endian header length N, N bytes of JSON mapping
//! each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`
//! (offsets relative to the end of the header; an optional `__metadata__`
//! string map), then the raw little-endian data. The file is memory-mapped so
//! that listing names/shapes, or pulling out a few tensors of a large
//! checkpoint, costs no more than the bytes actually touched.

use crate::{GraphError, Result};
use half::{bf16, f16};
use shrink_tensor::{DType, Tensor, TensorData};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name, type and shape of one stored tensor, and where its bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub offsets: (usize, usize),
}

/// A memory-mapped `.safetensors` file: the header is parsed and checked up
/// front, tensors are copied out only when asked for.
pub struct SafeTensors {
    path: PathBuf,
    map: memmap2::Mmap,
    data_start: usize,
    /// In data-offset order (the order the writer laid them out).
    infos: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("path", &self.path)
            .field("tensors", &self.infos.len())
            .finish()
    }
}

impl SafeTensors {
    /// Maps `path` and validates its header against the file size.
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|source| GraphError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // SAFETY: the map is read-only and private to this value; the file
        // could be truncated by another process while mapped (then reads
        // fault), which is the accepted contract of every mmap-based weight
        // loader; we never hand out references that outlive `self`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| GraphError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let (data_start, infos, metadata) =
            parse_header(&map).map_err(|msg| file_error(&path, msg))?;
        Ok(SafeTensors {
            path,
            map,
            data_start,
            infos,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name, dtype and shape, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    pub fn names(&self) -> Vec<&str> {
        self.infos.iter().map(|i| i.name.as_str()).collect()
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.infos.iter().find(|i| i.name == name)
    }

    /// The `__metadata__` map (e.g. `format: pt`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The raw little-endian bytes of a tensor, borrowed from the map.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name).ok_or_else(|| self.missing(name))?;
        Ok(&self.map[self.data_start + info.offsets.0..self.data_start + info.offsets.1])
    }

    /// Copies one tensor out of the file.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name).ok_or_else(|| self.missing(name))?;
        let bytes = self.bytes(name)?;
        let data = decode(bytes, info.dtype);
        Tensor::new(info.shape.clone(), data)
            .map_err(|e| file_error(&self.path, format!("tensor '{name}': {e}")))
    }

    /// Copies every tensor out, in file order.
    pub fn load_all(&self) -> Result<Vec<(String, Tensor)>> {
        self.infos
            .iter()
            .map(|i| Ok((i.name.clone(), self.tensor(&i.name)?)))
            .collect()
    }

    fn missing(&self, name: &str) -> GraphError {
        file_error(&self.path, format!("no tensor named '{name}'"))
    }
}

/// Loads every tensor of a `.safetensors` file into a name → tensor map.
pub fn load(path: impl AsRef<Path>) -> Result<indexmap::IndexMap<String, Tensor>> {
    Ok(SafeTensors::open(path)?.load_all()?.into_iter().collect())
}

fn file_error(path: &Path, msg: impl Into<String>) -> GraphError {
    GraphError::File {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

type Header = (usize, Vec<TensorInfo>, BTreeMap<String, String>);

fn parse_header(b: &[u8]) -> std::result::Result<Header, String> {
    if b.len() < 8 {
        return Err(format!(
            "{} bytes is too short for a safetensors header",
            b.len()
        ));
    }
    let n = u64::from_le_bytes(b[..8].try_into().unwrap());
    let data_start = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&e| e <= b.len())
        .ok_or_else(|| {
            format!(
                "header length {n} runs past the end of the file ({} bytes)",
                b.len()
            )
        })?;
    let json: serde_json::Value = serde_json::from_slice(&b[8..data_start])
        .map_err(|e| format!("header is not valid JSON: {e}"))?;
    let obj = json.as_object().ok_or("header is not a JSON object")?;
    let mut infos = Vec::new();
    let mut metadata = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            for (k, val) in v.as_object().ok_or("__metadata__ is not an object")? {
                metadata.insert(k.clone(), val.as_str().unwrap_or_default().to_string());
            }
            continue;
        }
        let field = |f: &str| {
            v.get(f)
                .ok_or_else(|| format!("tensor '{name}': missing '{f}'"))
        };
        let dtype_s = field("dtype")?
            .as_str()
            .ok_or_else(|| format!("tensor '{name}': dtype is not a string"))?;
        let dtype = parse_dtype(dtype_s)
            .ok_or_else(|| format!("tensor '{name}': unsupported dtype '{dtype_s}'"))?;
        let ints = |f: &str| -> std::result::Result<Vec<usize>, String> {
            field(f)?
                .as_array()
                .ok_or_else(|| format!("tensor '{name}': '{f}' is not a list"))?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| format!("tensor '{name}': '{f}' holds a non-integer"))
                })
                .collect()
        };
        let shape = ints("shape")?;
        let off = ints("data_offsets")?;
        if off.len() != 2 || off[0] > off[1] {
            return Err(format!("tensor '{name}': bad data_offsets {off:?}"));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor '{name}': shape {shape:?} overflows"))?;
        let want = numel * dtype.bits() / 8;
        if off[1] - off[0] != want {
            return Err(format!(
                "tensor '{name}': {dtype} {shape:?} needs {want} bytes, data_offsets {off:?} give {}",
                off[1] - off[0]
            ));
        }
        if data_start + off[1] > b.len() {
            return Err(format!(
                "tensor '{name}': data_offsets {off:?} run past the end of the file"
            ));
        }
        infos.push(TensorInfo {
            name: name.clone(),
            dtype,
            shape,
            offsets: (off[0], off[1]),
        });
    }
    infos.sort_by_key(|i| i.offsets);
    for w in infos.windows(2) {
        if w[1].offsets.0 < w[0].offsets.1 {
            return Err(format!(
                "tensors '{}' and '{}' overlap",
                w[0].name, w[1].name
            ));
        }
    }
    Ok((data_start, infos, metadata))
}

fn parse_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "I8" => DType::I8,
        "U64" => DType::U64,
        "U32" => DType::U32,
        "U16" => DType::U16,
        "U8" => DType::U8,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

fn dtype_name(dt: DType) -> Option<&'static str> {
    Some(match dt {
        DType::F64 => "F64",
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::I16 => "I16",
        DType::I8 => "I8",
        DType::U64 => "U64",
        DType::U32 => "U32",
        DType::U16 => "U16",
        DType::U8 => "U8",
        DType::Bool => "BOOL",
        _ => return None,
    })
}

macro_rules! le {
    ($b:expr, $t:ty, $n:expr) => {
        $b.chunks_exact($n)
            .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<$t>>()
    };
}

/// Decodes little-endian bytes whose length the header check already matched.
fn decode(b: &[u8], dt: DType) -> TensorData {
    match dt {
        DType::F64 => TensorData::F64(le!(b, f64, 8)),
        DType::F32 => TensorData::F32(le!(b, f32, 4)),
        DType::F16 => TensorData::F16(le!(b, u16, 2).into_iter().map(f16::from_bits).collect()),
        DType::BF16 => TensorData::BF16(le!(b, u16, 2).into_iter().map(bf16::from_bits).collect()),
        DType::I64 => TensorData::I64(le!(b, i64, 8)),
        DType::I32 => TensorData::I32(le!(b, i32, 4)),
        DType::I16 => TensorData::I16(le!(b, i16, 2)),
        DType::I8 => TensorData::I8(b.iter().map(|&x| x as i8).collect()),
        DType::U64 => TensorData::U64(le!(b, u64, 8)),
        DType::U32 => TensorData::U32(le!(b, u32, 4)),
        DType::U16 => TensorData::U16(le!(b, u16, 2)),
        DType::Bool => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
        _ => TensorData::U8(b.to_vec()),
    }
}

/// Serialises tensors to safetensors bytes (names sorted, as the reference
/// writer does). Used to write weights back and by the tests.
pub fn to_bytes(tensors: &[(&str, &Tensor)]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(&str, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(n, _)| *n);
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, t) in sorted {
        let dt = dtype_name(t.dtype()).ok_or_else(|| {
            GraphError::Unsupported(format!("tensor '{name}': {} in safetensors", t.dtype()))
        })?;
        let begin = data.len();
        encode(t.data(), &mut data);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dt, "shape": t.shape(), "data_offsets": [begin, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| GraphError::Invalid(e.to_string()))?;
    // Pad the header with spaces to 8-byte alignment, as the reference writer does.
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    Ok(out)
}

fn encode(d: &TensorData, out: &mut Vec<u8>) {
    macro_rules! put {
        ($v:expr) => {
            $v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        };
    }
    match d {
        TensorData::F64(v) => put!(v),
        TensorData::F32(v) => put!(v),
        TensorData::F16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
        TensorData::BF16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
        TensorData::I64(v) => put!(v),
        TensorData::I32(v) => put!(v),
        TensorData::I16(v) => put!(v),
        TensorData::I8(v) => put!(v),
        TensorData::U64(v) => put!(v),
        TensorData::U32(v) => put!(v),
        TensorData::U16(v) => put!(v),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        TensorData::I4(_) | TensorData::U4(_) | TensorData::String(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shrink-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn round_trips_every_dtype() {
        let ts = vec![
            (
                "a.f32",
                Tensor::from_vec(vec![2, 2], vec![1.0f32, -2.5, 3.0, 1e-8]).unwrap(),
            ),
            (
                "b.f16",
                Tensor::from_vec(vec![2], vec![f16::from_f32(0.5), f16::MIN]).unwrap(),
            ),
            (
                "c.bf16",
                Tensor::from_vec(vec![1], vec![bf16::from_f32(-3.0)]).unwrap(),
            ),
            (
                "d.i64",
                Tensor::from_vec(vec![3], vec![i64::MIN, 0, 7]).unwrap(),
            ),
            (
                "e.i8",
                Tensor::from_vec(vec![2], vec![-128i8, 127]).unwrap(),
            ),
            ("f.u8", Tensor::from_vec(vec![2], vec![0u8, 255]).unwrap()),
            (
                "g.bool",
                Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
            ),
            ("h.f64", Tensor::scalar(std::f64::consts::PI)),
            (
                "i.i32",
                Tensor::from_vec(vec![0, 2], Vec::<i32>::new()).unwrap(),
            ),
        ];
        let refs: Vec<(&str, &Tensor)> = ts.iter().map(|(n, t)| (*n, t)).collect();
        let p = tmp("all.safetensors", &to_bytes(&refs).unwrap());
        let st = SafeTensors::open(&p).unwrap();
        assert_eq!(st.tensors().len(), ts.len());
        for (n, t) in &ts {
            assert_eq!(&st.tensor(n).unwrap(), t, "{n}");
            assert_eq!(st.info(n).unwrap().shape, t.shape());
        }
        let err = st.tensor("nope").unwrap_err().to_string();
        assert!(
            err.contains("all.safetensors") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_headers_are_errors_naming_file_and_tensor() {
        let t = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let good = to_bytes(&[("w", &t)]).unwrap();
        // Truncated data.
        let p = tmp("short.safetensors", &good[..good.len() - 1]);
        let e = SafeTensors::open(&p).unwrap_err().to_string();
        assert!(e.contains("short.safetensors") && e.contains("'w'"), "{e}");
        // Header length beyond the file.
        let mut b = good.clone();
        b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(SafeTensors::open(tmp("len.safetensors", &b)).is_err());
        // Shape disagreeing with the byte range.
        let h = br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h);
        b.extend_from_slice(&[0; 8]);
        let e = SafeTensors::open(tmp("shape.safetensors", &b))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 12 bytes"), "{e}");
        // Unknown dtype, and not JSON.
        let h = br#"{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#;
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h);
        b.push(0);
        assert!(SafeTensors::open(tmp("dt.safetensors", &b))
            .unwrap_err()
            .to_string()
            .contains("F8_E4M3"));
        assert!(SafeTensors::open(tmp("tiny.safetensors", b"abc")).is_err());
    }
}
