//! The `.shrink` container: one file holding a compressed model exactly as
//! the passes left it — graph, tensors in their chosen [`Encoding`]s,
//! quantisation parameters (the QDQ scale/zero-point initializers of the
//! graph, stored like any tensor), provenance, and a checksum per section.
//!
//! # API
//!
//! ```text
//! use shrink_graph::container::{save_shrink, load_shrink, read_shrink, Provenance};
//! g.encodings.insert("fc1.weight".into(), Encoding::deep_compression(5));
//! let report = save_shrink(&g, &Provenance::new().with_recipe(text), "out.shrink")?;
//! let g2 = load_shrink("out.shrink")?;           // initializers decoded, encodings restored
//! let file = read_shrink("out.shrink")?;         // + provenance, per-tensor bytes and streams
//! ```
//! In memory, initializers always hold decoded values; `Graph::encodings`
//! says how [`save_shrink`] stores each one (absent = `Dense`). Every
//! encoding is lossless: `load_shrink(save_shrink(g)) == g`.
//!
//! # File layout (versions 1 and 2), little-endian, `varint` = LEB128
//!
//! ```text
//!  magic     8 bytes   89 'S' 'H' 'R' 'K' 0D 0A 1A   (PNG-style: catches text-mode mangling)
//!  version   u16       1 or 2
//!  sections  varint    count, then per section:
//!              kind     u8      1 graph · 2 provenance · 3 tensor · 4 bundle (v2)
//!              name     varint length + UTF-8 (tensor name; empty otherwise)
//!              length   varint  bytes of the section body
//!              check    8 bytes first 8 bytes of SHA-256 of the body
//!  table check 8 bytes first 8 bytes of SHA-256 of everything above
//!  bodies    back to back, in table order
//! ```
//! - graph: zlib-deflated ONNX `ModelProto` of the graph *without*
//!   initializers (nodes, attributes, subgraphs, IO, value_info, opsets and
//!   metadata). Reusing ONNX's encoding means no second serialiser of the IR
//!   to keep in sync — the ONNX importer and exporter are already tested
//!   lossless — and it is small once the weights are out.
//! - provenance: zlib-deflated JSON [`Provenance`].
//! - tensor (one per initializer, in graph order): `u8` ONNX dtype code,
//!   `varint` rank, `varint` dims, the encoding descriptor, then the payload
//!   of `codec` (parts: fixed-width code streams or Huffman frames).
//!
//! - bundle (version 2, kind 4, at most one): zlib-deflated `varint` count,
//!   then per tensor `varint` name length, name, `varint` body length and the
//!   body of a tensor section — small tensors (scales, zero points, biases)
//!   without a table entry and checksum each ([`WriteOptions::bundle_below`]).
//!
//! Version 2 adds the bundle and the encodings `constant`, `fp16` and
//! `product:a*b` (a tensor derived at load as the f32 product of two stored
//! ones: the int32 bias scale `s_x·s_w[c]`); a file uses version 2 only when
//! it holds one of them, so files without them stay readable by version-1
//! readers, and this reader reads both.
//!
//! A tensor's *stored bytes* are its table entry plus its body, so the
//! per-tensor figures, the graph, the provenance and the file header add up
//! to the file size exactly ([`ShrinkFile::check_sizes`]); a bundled tensor's
//! figure is its record before deflation, and the bundle's real bytes are
//! [`ShrinkFile::bundle_bytes`].
//!
//! Files are written atomically: a temporary file in the target directory,
//! fsync, rename; on any error the temporary file is removed and the
//! destination is untouched. Read errors name the file and the section.

mod codec;
mod elements;
mod encoding;

pub use codec::{decode_tensor, encode_tensor, EncodedTensor, StreamStats};
pub use encoding::Encoding;

use crate::{Graph, GraphError, Result};
use codec::{get_varint, put_varint};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shrink_tensor::{DType, Tensor};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of every `.shrink` file.
pub const MAGIC: [u8; 8] = [0x89, b'S', b'H', b'R', b'K', 0x0d, 0x0a, 0x1a];
/// Newest format version this code writes and reads (it reads every older
/// one). A file is written at the lowest version that holds it: version 1
/// unless it uses a version-2 encoding ([`Encoding::needs_v2`]) or a bundle.
pub const VERSION: u16 = 2;

const KIND_GRAPH: u8 = 1;
const KIND_PROVENANCE: u8 = 2;
const KIND_TENSOR: u8 = 3;
/// Version 2: small tensors together, zlib-deflated (see [`WriteOptions`]).
const KIND_BUNDLE: u8 = 4;

/// How [`save_shrink_with`] lays a file out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Tensors whose section body is at most this many bytes go into one
    /// deflated bundle section instead of a section each (0: no bundle).
    /// A QDQ model has several small tensors per layer (scales, zero points,
    /// biases): each own section costs its name plus ~11 bytes of table
    /// entry and checksum, ~50 bytes, which for MobileNetV2-tiny's ~250
    /// quantisation parameters is a third of a W2 model. In a bundle their
    /// names (shared prefixes) deflate to a few bytes each and one checksum
    /// covers them all.
    pub bundle_below: usize,
}

/// Where a model came from and what was done to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `shrink <version>` of the writer.
    pub tool: String,
    /// Recipe text (TOML) the model was compressed with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
    /// File name of the source model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_file: Option<String>,
    /// SHA-256 of the source model file, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    /// One record per pass (e.g. `shrink_compress::PassRecord` as JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<serde_json::Value>,
    /// Anything else worth keeping (dataset, accuracy, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

impl Provenance {
    /// Provenance naming this version of shrink as the tool.
    pub fn new() -> Provenance {
        Provenance {
            tool: format!("shrink {}", env!("CARGO_PKG_VERSION")),
            ..Provenance::default()
        }
    }

    pub fn with_recipe(mut self, text: impl Into<String>) -> Provenance {
        self.recipe = Some(text.into());
        self
    }

    /// Records the source model's file name and SHA-256 (a model directory
    /// hashes nothing; its name is kept).
    pub fn with_source(mut self, path: impl AsRef<Path>) -> Result<Provenance> {
        let path = path.as_ref();
        self.source_file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if path.is_file() {
            self.source_sha256 = Some(sha256_file(path)?);
        }
        Ok(self)
    }

    /// Appends a pass record (anything serialisable, e.g. `PassRecord`).
    pub fn with_pass(mut self, record: &impl Serialize) -> Result<Provenance> {
        self.passes.push(
            serde_json::to_value(record)
                .map_err(|e| GraphError::Invalid(format!("pass record: {e}")))?,
        );
        Ok(self)
    }

    pub fn note(mut self, key: impl Into<String>, value: impl Into<String>) -> Provenance {
        self.notes.insert(key.into(), value.into());
        self
    }
}

/// Hex SHA-256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|source| GraphError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = f.read(&mut buf).map_err(|source| GraphError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// One stored tensor as the file holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredTensor {
    pub name: String,
    #[serde(serialize_with = "dtype_name")]
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The encoding with automatic choices resolved.
    pub encoding: Encoding,
    /// Table entry + body: every byte this tensor costs in the file.
    pub stored_bytes: usize,
    /// Elements whose bit pattern is not zero.
    pub nonzero: usize,
    pub streams: Vec<StreamStats>,
    /// Stored in the bundle section: `stored_bytes` is then its record
    /// before deflation, and [`ShrinkFile::bundle_bytes`] what the bundle
    /// really takes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bundled: bool,
}

fn dtype_name<S: serde::Serializer>(d: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

impl StoredTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Stored bits per element (everything counted).
    pub fn bits_per_element(&self) -> f64 {
        8.0 * self.stored_bytes as f64 / self.numel().max(1) as f64
    }
}

/// What a `.shrink` file holds, with its byte accounting.
#[derive(Debug, Clone)]
pub struct ShrinkFile {
    pub graph: Graph,
    pub provenance: Provenance,
    pub version: u16,
    pub tensors: Vec<StoredTensor>,
    pub file_bytes: usize,
    /// Magic, version, section count, table checksum.
    pub header_bytes: usize,
    /// Table entry + body of the graph section.
    pub graph_bytes: usize,
    /// Table entry + body of the provenance section.
    pub provenance_bytes: usize,
    /// Table entry + deflated body of the bundle section (0: none).
    pub bundle_bytes: usize,
}

impl ShrinkFile {
    /// Bytes of every tensor together: own sections plus the bundle.
    pub fn tensor_bytes(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| !t.bundled)
            .map(|t| t.stored_bytes)
            .sum::<usize>()
            + self.bundle_bytes
    }

    /// Whether header + graph + provenance + tensors = the file size.
    pub fn check_sizes(&self) -> bool {
        self.header_bytes + self.graph_bytes + self.provenance_bytes + self.tensor_bytes()
            == self.file_bytes
    }
}

struct Section {
    kind: u8,
    name: String,
    body: Vec<u8>,
}

fn checksum(body: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(body);
    d[..8].try_into().expect("8 bytes")
}

fn entry_len(s: &Section) -> usize {
    let mut v = Vec::new();
    put_varint(&mut v, s.name.len() as u64);
    put_varint(&mut v, s.body.len() as u64);
    1 + v.len() + s.name.len() + 8
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

fn inflate(bytes: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The graph without its initializers (what the graph section stores).
fn skeleton(g: &Graph) -> Graph {
    Graph {
        name: g.name.clone(),
        inputs: g.inputs.clone(),
        outputs: g.outputs.clone(),
        initializers: Default::default(),
        nodes: g.nodes.clone(),
        value_info: g.value_info.clone(),
        opsets: g.opsets.clone(),
        metadata: g.metadata.clone(),
        encodings: BTreeMap::new(),
    }
}

/// Serialises a graph to `.shrink` bytes; see the module docs.
pub fn to_shrink_bytes(g: &Graph, prov: &Provenance) -> Result<(Vec<u8>, ShrinkFile)> {
    to_shrink_bytes_with(g, prov, &WriteOptions::default())
}

/// The f32 product `a[i]·b[i]` (one-element operands broadcast) of two
/// initializers of `g`, for a tensor of `numel` elements; errors say why not.
fn product_of(
    name: &str,
    numel: usize,
    a: &str,
    b: &str,
    get: &dyn Fn(&str) -> Option<(Tensor, bool)>,
) -> std::result::Result<Vec<f32>, String> {
    let operand = |o: &str| -> std::result::Result<Vec<f32>, String> {
        let (t, derived) = get(o).ok_or_else(|| format!("operand '{o}' is not a stored tensor"))?;
        if derived {
            return Err(format!("operand '{o}' is itself derived"));
        }
        if o == name {
            return Err("a tensor cannot be derived from itself".into());
        }
        if t.dtype() != DType::F32 {
            return Err(format!("operand '{o}' is {}, not f32", t.dtype().name()));
        }
        if t.len() != 1 && t.len() != numel {
            return Err(format!(
                "operand '{o}' has {} elements for a tensor of {numel}",
                t.len()
            ));
        }
        Ok(t.to_f32_vec())
    };
    let (va, vb) = (operand(a)?, operand(b)?);
    let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    Ok((0..numel).map(|i| at(&va, i) * at(&vb, i)).collect())
}

/// [`to_shrink_bytes`] with layout options.
pub fn to_shrink_bytes_with(
    g: &Graph,
    prov: &Provenance,
    opts: &WriteOptions,
) -> Result<(Vec<u8>, ShrinkFile)> {
    if let Some(name) = g
        .encodings
        .keys()
        .find(|k| !g.initializers.contains_key(*k))
    {
        return Err(GraphError::Invalid(format!(
            "an encoding is given for '{name}', which is not an initializer"
        )));
    }
    let mut sections = Vec::with_capacity(g.initializers.len() + 2);
    let graph_body = deflate(&crate::onnx::to_bytes(&skeleton(g))?);
    sections.push(Section {
        kind: KIND_GRAPH,
        name: String::new(),
        body: graph_body,
    });
    let prov_json =
        serde_json::to_vec(prov).map_err(|e| GraphError::Invalid(format!("provenance: {e}")))?;
    sections.push(Section {
        kind: KIND_PROVENANCE,
        name: String::new(),
        body: deflate(&prov_json),
    });
    let mut tensors = Vec::with_capacity(g.initializers.len());
    let mut bundle: Vec<u8> = Vec::new();
    let mut bundled = 0u64;
    let mut v2 = false;
    let lookup = |o: &str| -> Option<(Tensor, bool)> {
        g.initializers.get(o).map(|t| {
            let derived = matches!(g.encodings.get(o), Some(Encoding::Product { .. }));
            (t.clone(), derived)
        })
    };
    for (name, t) in &g.initializers {
        let enc = g.encodings.get(name).cloned().unwrap_or_default();
        v2 |= enc.needs_v2();
        let e = match &enc {
            Encoding::Product { a, b } => {
                let fail =
                    |m: String| GraphError::Invalid(format!("tensor '{name}' as {enc}: {m}"));
                if t.dtype() != DType::F32 {
                    return Err(fail(format!("{} is not f32", t.dtype().name())));
                }
                let v = product_of(name, t.len(), a, b, &lookup).map_err(fail)?;
                let same = v
                    .iter()
                    .zip(t.to_f32_vec())
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                if !same {
                    return Err(fail(
                        "the product of its operands differs from the tensor".into(),
                    ));
                }
                EncodedTensor {
                    encoding: enc.clone(),
                    payload: Vec::new(),
                    streams: Vec::new(),
                }
            }
            _ => encode_tensor(t, &enc).map_err(|e| {
                GraphError::Invalid(format!("tensor '{name}' as {enc}: {}", strip(&e)))
            })?,
        };
        let mut body = Vec::with_capacity(e.payload.len() + 16);
        body.push(t.dtype().onnx_code() as u8);
        put_varint(&mut body, t.rank() as u64);
        for &d in t.shape() {
            put_varint(&mut body, d as u64);
        }
        e.encoding.write(&mut body);
        body.extend_from_slice(&e.payload);
        let in_bundle = body.len() <= opts.bundle_below;
        let stored_bytes = if in_bundle {
            let start = bundle.len();
            put_varint(&mut bundle, name.len() as u64);
            bundle.extend_from_slice(name.as_bytes());
            put_varint(&mut bundle, body.len() as u64);
            bundle.extend_from_slice(&body);
            bundled += 1;
            bundle.len() - start
        } else {
            0
        };
        let s = Section {
            kind: KIND_TENSOR,
            name: name.clone(),
            body,
        };
        tensors.push(StoredTensor {
            name: name.clone(),
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            encoding: e.encoding,
            stored_bytes: if in_bundle {
                stored_bytes
            } else {
                entry_len(&s) + s.body.len()
            },
            nonzero: count_nonzero(t),
            streams: e.streams,
            bundled: in_bundle,
        });
        if !in_bundle {
            sections.push(s);
        }
    }
    let mut bundle_bytes = 0;
    if bundled > 0 {
        v2 = true;
        let mut raw = Vec::with_capacity(bundle.len() + 4);
        put_varint(&mut raw, bundled);
        raw.extend_from_slice(&bundle);
        let s = Section {
            kind: KIND_BUNDLE,
            name: String::new(),
            body: deflate(&raw),
        };
        bundle_bytes = entry_len(&s) + s.body.len();
        sections.insert(2, s);
        // The accounting lists tensors in file order, as the reader does.
        tensors.sort_by_key(|t| !t.bundled);
    }
    let version: u16 = if v2 { 2 } else { 1 };
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    put_varint(&mut out, sections.len() as u64);
    let header_bytes = out.len();
    for s in &sections {
        out.push(s.kind);
        put_varint(&mut out, s.name.len() as u64);
        out.extend_from_slice(s.name.as_bytes());
        put_varint(&mut out, s.body.len() as u64);
        out.extend_from_slice(&checksum(&s.body));
    }
    let table_check = checksum(&out);
    out.extend_from_slice(&table_check);
    let header_bytes = header_bytes + 8;
    for s in &sections {
        out.extend_from_slice(&s.body);
    }
    let mut graph = g.clone();
    for t in &tensors {
        graph.encodings.insert(t.name.clone(), t.encoding.clone());
    }
    graph.encodings.retain(|_, e| *e != Encoding::Dense);
    let info = ShrinkFile {
        graph,
        provenance: prov.clone(),
        version,
        bundle_bytes,
        file_bytes: out.len(),
        header_bytes,
        graph_bytes: entry_len(&sections[0]) + sections[0].body.len(),
        provenance_bytes: entry_len(&sections[1]) + sections[1].body.len(),
        tensors,
    };
    Ok((out, info))
}

fn count_nonzero(t: &Tensor) -> usize {
    elements::to_patterns(t.data())
        .map(|p| p.iter().filter(|&&x| x != 0).count())
        .unwrap_or(t.len())
}

/// The message of an error without its variant prefix.
fn strip(e: &GraphError) -> String {
    match e {
        GraphError::Invalid(m) | GraphError::Unsupported(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Writes `g` to `path` atomically; returns what was written, byte by byte.
pub fn save_shrink(g: &Graph, prov: &Provenance, path: impl AsRef<Path>) -> Result<ShrinkFile> {
    save_shrink_with(g, prov, path, &WriteOptions::default())
}

/// [`save_shrink`] with layout options.
pub fn save_shrink_with(
    g: &Graph,
    prov: &Provenance,
    path: impl AsRef<Path>,
    opts: &WriteOptions,
) -> Result<ShrinkFile> {
    let path = path.as_ref();
    let (bytes, info) = to_shrink_bytes_with(g, prov, opts).map_err(|e| GraphError::File {
        path: path.display().to_string(),
        msg: strip(&e),
    })?;
    write_atomically(path, &bytes)?;
    Ok(info)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> GraphError + '_ {
    move |source| GraphError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Temp file in the same directory, fsync, rename, fsync the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| GraphError::File {
            path: path.display().to_string(),
            msg: "not a file path".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether the file at `path` starts with the `.shrink` magic.
pub fn is_shrink_file(path: impl AsRef<Path>) -> bool {
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| head == MAGIC)
        .unwrap_or(false)
}

/// Loads the graph of a `.shrink` file, initializers decoded.
pub fn load_shrink(path: impl AsRef<Path>) -> Result<Graph> {
    read_shrink(path).map(|f| f.graph)
}

/// Reads a `.shrink` file: graph, provenance and per-tensor accounting.
pub fn read_shrink(path: impl AsRef<Path>) -> Result<ShrinkFile> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    from_shrink_bytes(&bytes).map_err(|e| GraphError::File {
        path: path.display().to_string(),
        msg: strip(&e),
    })
}

/// Parses `.shrink` bytes; errors name the section.
pub fn from_shrink_bytes(bytes: &[u8]) -> Result<ShrinkFile> {
    let inv = |m: String| GraphError::Invalid(m);
    if bytes.len() < 10 || bytes[..8] != MAGIC {
        return Err(inv("not a .shrink file (bad magic)".into()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if !(1..=VERSION).contains(&version) {
        return Err(inv(format!(
            "format version {version}; this shrink reads versions 1 to {VERSION}"
        )));
    }
    let mut pos = 10;
    let count = get_varint(bytes, &mut pos, "section count")?;
    // each table entry takes at least 11 bytes: bounds the allocation
    if count > (bytes.len() / 11) as u64 {
        return Err(inv(format!(
            "section count {count} is larger than the file"
        )));
    }
    let header_bytes = pos;
    let mut table = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let what = || format!("section table entry #{i}");
        let start = pos;
        let kind = *bytes
            .get(pos)
            .ok_or_else(|| inv(format!("{}: truncated", what())))?;
        pos += 1;
        let nlen = get_varint(bytes, &mut pos, "section name length")? as usize;
        let name = bytes
            .get(pos..pos.saturating_add(nlen))
            .ok_or_else(|| inv(format!("{}: truncated name", what())))?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| inv(format!("{}: name is not UTF-8", what())))?;
        pos += nlen;
        let len = get_varint(bytes, &mut pos, "section length")? as usize;
        let check: [u8; 8] = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| inv(format!("{}: truncated checksum", what())))?
            .try_into()
            .expect("8 bytes");
        pos += 8;
        table.push((kind, name, len, check, pos - start));
    }
    let table_check = bytes
        .get(pos..pos + 8)
        .ok_or_else(|| inv("truncated section table".into()))?;
    if table_check != checksum(&bytes[..pos]) {
        return Err(inv(
            "section table checksum mismatch (the file is damaged)".into()
        ));
    }
    pos += 8;
    let header_bytes = header_bytes + 8;
    let mut graph: Option<Graph> = None;
    let mut prov: Option<Provenance> = None;
    let (mut graph_bytes, mut provenance_bytes, mut bundle_bytes) = (0, 0, 0);
    let mut tensors = Vec::new();
    let mut inits = Vec::new();
    let mut derived: Vec<(String, Vec<usize>, String, String)> = Vec::new();
    for (i, (kind, name, len, check, entry)) in table.into_iter().enumerate() {
        let label = match kind {
            KIND_GRAPH => "graph".to_string(),
            KIND_PROVENANCE => "provenance".to_string(),
            KIND_TENSOR => format!("tensor '{name}'"),
            KIND_BUNDLE => "bundle".to_string(),
            k => format!("#{i} of unknown kind {k}"),
        };
        let err = |m: String| inv(format!("section {label}: {m}"));
        let body = bytes
            .get(pos..pos.saturating_add(len))
            .ok_or_else(|| err(format!("truncated ({len} bytes announced)")))?;
        pos += len;
        if checksum(body) != check {
            return Err(err("checksum mismatch (the file is damaged)".into()));
        }
        match kind {
            KIND_GRAPH => {
                let raw = inflate(body, 1 << 32).map_err(&err)?;
                graph = Some(crate::onnx::from_bytes(&raw, None).map_err(|e| err(e.to_string()))?);
                graph_bytes = entry + len;
            }
            KIND_PROVENANCE => {
                let raw = inflate(body, 1 << 28).map_err(&err)?;
                prov = Some(serde_json::from_slice(&raw).map_err(|e| err(e.to_string()))?);
                provenance_bytes = entry + len;
            }
            KIND_TENSOR => {
                let r = read_tensor(body).map_err(|e| err(strip(&e)))?;
                accept(
                    r,
                    name,
                    entry + len,
                    false,
                    &mut tensors,
                    &mut inits,
                    &mut derived,
                )
                .map_err(|e| err(strip(&e)))?;
            }
            KIND_BUNDLE if version >= 2 => {
                if bundle_bytes != 0 {
                    return Err(err("a second bundle".into()));
                }
                bundle_bytes = entry + len;
                let raw = inflate(body, 1 << 32).map_err(&err)?;
                let mut p = 0;
                let n = get_varint(&raw, &mut p, "bundle count").map_err(|e| err(strip(&e)))?;
                if n > raw.len() as u64 {
                    return Err(err(format!("{n} tensors announced in {} bytes", raw.len())));
                }
                for k in 0..n {
                    let start = p;
                    let rec_err = |m: String| err(format!("tensor #{k}: {m}"));
                    let nlen = get_varint(&raw, &mut p, "name length")
                        .map_err(|e| rec_err(strip(&e)))? as usize;
                    let tname = raw
                        .get(p..p.saturating_add(nlen))
                        .ok_or_else(|| rec_err("truncated name".into()))?;
                    let tname = String::from_utf8(tname.to_vec())
                        .map_err(|_| rec_err("name is not UTF-8".into()))?;
                    p += nlen;
                    let blen = get_varint(&raw, &mut p, "body length")
                        .map_err(|e| rec_err(strip(&e)))? as usize;
                    let tb = raw
                        .get(p..p.saturating_add(blen))
                        .ok_or_else(|| rec_err(format!("'{tname}' truncated")))?;
                    p += blen;
                    let r = read_tensor(tb)
                        .map_err(|e| rec_err(format!("'{tname}': {}", strip(&e))))?;
                    accept(
                        r,
                        tname,
                        p - start,
                        true,
                        &mut tensors,
                        &mut inits,
                        &mut derived,
                    )
                    .map_err(|e| err(strip(&e)))?;
                }
                if p != raw.len() {
                    return Err(err(format!(
                        "{} bytes after the last tensor",
                        raw.len() - p
                    )));
                }
            }
            _ => return Err(err("unknown section kind".into())),
        }
    }
    if pos != bytes.len() {
        return Err(inv(format!(
            "{} bytes after the last section",
            bytes.len() - pos
        )));
    }
    let mut graph = graph.ok_or_else(|| inv("no graph section".into()))?;
    let provenance = prov.ok_or_else(|| inv("no provenance section".into()))?;
    for (name, t) in inits {
        if graph.initializers.insert(name.clone(), t).is_some() {
            return Err(inv(format!("tensor '{name}' is stored twice")));
        }
    }
    // Derived tensors last: their operands are stored ones (never derived).
    let stored = graph.initializers.clone();
    let derived_names: std::collections::BTreeSet<&str> =
        derived.iter().map(|d| d.0.as_str()).collect();
    let get = |o: &str| {
        stored
            .get(o)
            .map(|t| (t.clone(), derived_names.contains(o)))
    };
    for (name, shape, a, b) in &derived {
        let numel: usize = shape.iter().product();
        let v = product_of(name, numel, a, b, &get)
            .map_err(|m| inv(format!("section tensor '{name}': {m}")))?;
        let t = Tensor::from_vec(shape.clone(), v)?;
        if graph.initializers.insert(name.clone(), t).is_some() {
            return Err(inv(format!("tensor '{name}' is stored twice")));
        }
    }
    // Initializers in the order the file lists them (the writer's order).
    let order: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
    let mut sorted = indexmap::IndexMap::new();
    for n in &order {
        if let Some(t) = graph.initializers.shift_remove(n) {
            sorted.insert(n.clone(), t);
        }
    }
    sorted.extend(graph.initializers.drain(..));
    graph.initializers = sorted;
    for t in &tensors {
        if t.encoding != Encoding::Dense {
            graph.encodings.insert(t.name.clone(), t.encoding.clone());
        }
    }
    Ok(ShrinkFile {
        graph,
        provenance,
        version,
        tensors,
        bundle_bytes,
        file_bytes: bytes.len(),
        header_bytes,
        graph_bytes,
        provenance_bytes,
    })
}

/// A tensor as its section holds it: decoded, or the operands it derives from.
enum ReadTensor {
    Decoded(Tensor, Encoding, Vec<StreamStats>),
    Derived {
        dtype: DType,
        shape: Vec<usize>,
        encoding: Encoding,
        a: String,
        b: String,
    },
}

type Derived = (String, Vec<usize>, String, String);

/// Records one read tensor (decoded now, or derived once all are read).
fn accept(
    r: ReadTensor,
    name: String,
    stored_bytes: usize,
    bundled: bool,
    tensors: &mut Vec<StoredTensor>,
    inits: &mut Vec<(String, Tensor)>,
    derived: &mut Vec<Derived>,
) -> Result<()> {
    match r {
        ReadTensor::Decoded(t, encoding, streams) => {
            tensors.push(StoredTensor {
                name: name.clone(),
                stored_bytes,
                nonzero: count_nonzero(&t),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                encoding,
                streams,
                bundled,
            });
            inits.push((name, t));
        }
        ReadTensor::Derived {
            dtype,
            shape,
            encoding,
            a,
            b,
        } => {
            if dtype != DType::F32 {
                return Err(GraphError::Invalid(format!(
                    "derived tensor '{name}' is {}, not f32",
                    dtype.name()
                )));
            }
            let numel: usize = shape.iter().product();
            tensors.push(StoredTensor {
                name: name.clone(),
                stored_bytes,
                // The product's bits are checked once its operands are read.
                nonzero: numel,
                dtype,
                shape: shape.clone(),
                encoding,
                streams: Vec::new(),
                bundled,
            });
            derived.push((name, shape, a, b));
        }
    }
    Ok(())
}

fn read_tensor(body: &[u8]) -> Result<ReadTensor> {
    let inv = |m: String| GraphError::Invalid(m);
    let code = *body
        .first()
        .ok_or_else(|| inv("empty tensor section".into()))?;
    let dtype = DType::from_onnx_code(code as i32)
        .ok_or_else(|| inv(format!("unknown dtype code {code}")))?;
    let mut pos = 1;
    let rank = get_varint(body, &mut pos, "rank")?;
    if rank > 64 {
        return Err(inv(format!("rank {rank}")));
    }
    let mut shape = Vec::with_capacity(rank as usize);
    for _ in 0..rank {
        shape.push(get_varint(body, &mut pos, "dimension")? as usize);
    }
    let enc = Encoding::read(body, &mut pos).map_err(inv)?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| inv(format!("shape {shape:?} overflows")))?;
    // Dense elements take at least one bit each: a cheap sanity bound before
    // allocating (sparse and entropy-coded payloads may be far smaller).
    let tiny = matches!(enc, Encoding::Constant | Encoding::Product { .. });
    if tiny && numel > (1usize << 26) {
        return Err(inv(format!(
            "shape {shape:?} is implausibly large for a {enc} tensor"
        )));
    }
    if !tiny && !enc.is_sparse() && !enc.is_huffman() && dtype != DType::String {
        let need = (numel as u128 * dtype.bits().min(1) as u128).div_ceil(8);
        if need > (body.len() - pos) as u128 {
            return Err(inv(format!(
                "shape {shape:?} needs more bytes than the section holds"
            )));
        }
    }
    if numel > (1usize << 36) {
        return Err(inv(format!("shape {shape:?} is implausibly large")));
    }
    if let Encoding::Product { a, b } = &enc {
        if pos != body.len() {
            return Err(inv("a derived tensor with a payload".into()));
        }
        return Ok(ReadTensor::Derived {
            dtype,
            shape,
            a: a.clone(),
            b: b.clone(),
            encoding: enc,
        });
    }
    let (data, st) = decode_tensor(dtype, &shape, &enc, &body[pos..])?;
    let t = Tensor::new(shape, data)?;
    Ok(ReadTensor::Decoded(t, enc, st))
}

#[cfg(test)]
mod tests;
