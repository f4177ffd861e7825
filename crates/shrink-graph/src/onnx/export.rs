//! [`Graph`] -> `ModelProto`, and crash-safe saving.

use super::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use super::tensor::{encode_raw, tensor_to_proto};
use super::{meta, UNKNOWN_DIM};
use crate::{Attr, Dim, Graph, GraphError, Node, Result, ValueInfo};
use prost::Message;
use shrink_tensor::{DType, Tensor};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// How [`super::save_with`] lays a model out on disk.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Initializers of at least this many bytes go to `<model file>.data`
    /// next to the model instead of inside it (ONNX external data). Needed
    /// past protobuf's 2 GiB limit, and lets big weights be memory-mapped.
    /// `None` keeps everything inline.
    pub external_data_threshold: Option<usize>,
}

/// External data offsets are aligned to this so readers can mmap tensors
/// (the ONNX spec recommends page-size multiples).
const EXTERNAL_ALIGN: u64 = 4096;

/// Serializes a graph to ONNX protobuf bytes (all tensors inline).
pub fn to_bytes(g: &Graph) -> Result<Vec<u8>> {
    Ok(model_to_proto(g, &mut None)?.encode_to_vec())
}

/// Saves a graph as an ONNX file, all tensors inline. See [`save_with`].
pub fn save(g: &Graph, path: impl AsRef<Path>) -> Result<()> {
    save_with(g, path, &SaveOptions::default())
}

/// Saves a graph as an ONNX file atomically: the model (and its external data
/// file, if any) are written to temporary files in the target directory,
/// synced, then renamed over the destination, so a crash never leaves a
/// half-written model behind under the real name.
pub fn save_with(g: &Graph, path: impl AsRef<Path>, opts: &SaveOptions) -> Result<()> {
    let path = path.as_ref();
    let file_name = path
        .file_name()
        .and_then(|s| s.to_str())
        .ok_or_else(|| GraphError::File {
            path: path.display().to_string(),
            msg: "not a file path".into(),
        })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut ext = match opts.external_data_threshold {
        Some(threshold) => {
            let location = format!("{file_name}.data");
            let final_path = dir.join(&location);
            let tmp = temp_path(&final_path);
            let file = File::create(&tmp).map_err(io_err(&tmp))?;
            Some(ExternalWriter {
                out: BufWriter::new(file),
                tmp,
                final_path,
                location,
                offset: 0,
                threshold,
                used: false,
            })
        }
        None => None,
    };
    let model = model_to_proto(g, &mut ext);
    let model = match model {
        Ok(m) => m,
        Err(e) => {
            if let Some(x) = ext {
                let _ = std::fs::remove_file(&x.tmp);
            }
            return Err(e);
        }
    };
    if let Some(x) = ext {
        x.finish()?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&model.encode_to_vec()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        sync_dir(&dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> GraphError + '_ {
    move |source| GraphError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes the rename durable; best effort (not every platform can open a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

struct ExternalWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    location: String,
    offset: u64,
    threshold: usize,
    used: bool,
}

impl ExternalWriter {
    /// Appends a tensor's raw bytes and turns `p` into a reference to them.
    fn write(&mut self, p: &mut TensorProto, t: &Tensor) -> Result<()> {
        let pad = (EXTERNAL_ALIGN - self.offset % EXTERNAL_ALIGN) % EXTERNAL_ALIGN;
        let bytes = encode_raw(t.data());
        let io = io_err(&self.tmp);
        self.out.write_all(&vec![0u8; pad as usize]).map_err(&io)?;
        self.offset += pad;
        self.out.write_all(&bytes).map_err(&io)?;
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        p.external_data = vec![
            entry("location", self.location.clone()),
            entry("offset", self.offset.to_string()),
            entry("length", bytes.len().to_string()),
        ];
        p.data_location = DataLocation::External as i32;
        p.raw_data.clear();
        self.offset += bytes.len() as u64;
        self.used = true;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let ExternalWriter {
            out,
            tmp,
            final_path,
            used,
            ..
        } = self;
        if !used {
            drop(out);
            let _ = std::fs::remove_file(&tmp);
            return Ok(());
        }
        let f = out.into_inner().map_err(|e| GraphError::Io {
            path: tmp.display().to_string(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &final_path).map_err(io_err(&final_path))?;
        Ok(())
    }
}

/// IR version to declare: 8 (ONNX 1.10, read by every current runtime) unless
/// the opset or a 4-bit type needs a newer one (ONNX's release table).
fn ir_version_for(g: &Graph) -> i64 {
    let by_opset = match g.opset() {
        o if o >= 21 => 10,
        o if o >= 19 => 9,
        _ => 8,
    };
    if uses_4bit(g) {
        by_opset.max(10)
    } else {
        by_opset
    }
}

fn uses_4bit(g: &Graph) -> bool {
    let is4 = |d: DType| matches!(d, DType::I4 | DType::U4);
    g.initializers.values().any(|t| is4(t.dtype()))
        || g.inputs
            .iter()
            .chain(&g.outputs)
            .chain(g.value_info.values())
            .any(|v| v.dtype.is_some_and(is4))
        || g.nodes.iter().any(|n| {
            n.attrs.values().any(|a| match a {
                Attr::Tensor(t) => is4(t.dtype()),
                Attr::Tensors(ts) => ts.iter().any(|t| is4(t.dtype())),
                Attr::Graph(sg) => uses_4bit(sg),
                Attr::Graphs(sgs) => sgs.iter().any(uses_4bit),
                _ => false,
            })
        })
}

fn uses_default_domain(g: &Graph) -> bool {
    g.nodes.iter().any(|n| {
        n.domain.is_empty()
            || n.attrs.values().any(|a| match a {
                Attr::Graph(sg) => uses_default_domain(sg),
                Attr::Graphs(sgs) => sgs.iter().any(uses_default_domain),
                _ => false,
            })
    })
}

fn model_to_proto(g: &Graph, ext: &mut Option<ExternalWriter>) -> Result<ModelProto> {
    let mut opsets = g.opsets.clone();
    // A graph built in code may not declare the default domain it uses.
    if !opsets.contains_key("") && uses_default_domain(g) {
        opsets.insert(String::new(), g.opset());
    }
    let get = |k: &str| g.metadata.get(k).cloned().unwrap_or_default();
    let producer_name = g
        .metadata
        .get(meta::PRODUCER_NAME)
        .cloned()
        .unwrap_or_else(|| "shrink".into());
    let producer_version = match g.metadata.get(meta::PRODUCER_NAME) {
        Some(_) => get(meta::PRODUCER_VERSION),
        None => env!("CARGO_PKG_VERSION").to_string(),
    };
    let model_version = match g.metadata.get(meta::MODEL_VERSION) {
        Some(v) => v.parse().map_err(|_| {
            GraphError::Invalid(format!(
                "metadata '{}' = '{v}' is not an integer",
                meta::MODEL_VERSION
            ))
        })?,
        None => 0,
    };
    Ok(ModelProto {
        ir_version: ir_version_for(g),
        opset_import: opsets
            .into_iter()
            .map(|(domain, version)| OperatorSetIdProto { domain, version })
            .collect(),
        producer_name,
        producer_version,
        domain: get(meta::DOMAIN),
        model_version,
        doc_string: get(meta::DOC_STRING),
        graph: Some(graph_to_proto(g, ext)?),
        metadata_props: g
            .metadata
            .iter()
            .filter(|(k, _)| !meta::RESERVED.contains(&k.as_str()))
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    })
}

fn graph_to_proto(g: &Graph, ext: &mut Option<ExternalWriter>) -> Result<GraphProto> {
    let mut initializer = Vec::with_capacity(g.initializers.len());
    for (name, t) in &g.initializers {
        let mut p = tensor_to_proto(name, t);
        if let Some(x) = ext.as_mut() {
            if t.dtype() != DType::String && t.nbytes() >= x.threshold {
                x.write(&mut p, t)?;
            }
        }
        initializer.push(p);
    }
    let mut node = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        node.push(node_to_proto(n, ext)?);
    }
    Ok(GraphProto {
        name: g.name.clone(),
        node,
        initializer,
        input: g.inputs.iter().map(value_info_to_proto).collect(),
        output: g.outputs.iter().map(value_info_to_proto).collect(),
        value_info: g.value_info.values().map(value_info_to_proto).collect(),
        ..Default::default()
    })
}

fn node_to_proto(n: &Node, ext: &mut Option<ExternalWriter>) -> Result<NodeProto> {
    let mut attribute = Vec::with_capacity(n.attrs.len());
    for (name, a) in &n.attrs {
        let mut p = AttributeProto {
            name: name.clone(),
            ..Default::default()
        };
        let kind = match a {
            Attr::Float(x) => {
                p.f = *x;
                AttributeType::Float
            }
            Attr::Int(x) => {
                p.i = *x;
                AttributeType::Int
            }
            Attr::String(s) => {
                p.s = s.as_bytes().to_vec();
                AttributeType::String
            }
            Attr::Tensor(t) => {
                p.t = Some(tensor_to_proto("", t));
                AttributeType::Tensor
            }
            Attr::Graph(g) => {
                p.g = Some(graph_to_proto(g, ext)?);
                AttributeType::Graph
            }
            Attr::Floats(v) => {
                p.floats = v.clone();
                AttributeType::Floats
            }
            Attr::Ints(v) => {
                p.ints = v.clone();
                AttributeType::Ints
            }
            Attr::Strings(v) => {
                p.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
                AttributeType::Strings
            }
            Attr::Tensors(v) => {
                p.tensors = v.iter().map(|t| tensor_to_proto("", t)).collect();
                AttributeType::Tensors
            }
            Attr::Graphs(v) => {
                p.graphs = v
                    .iter()
                    .map(|g| graph_to_proto(g, ext))
                    .collect::<Result<_>>()?;
                AttributeType::Graphs
            }
        };
        p.r#type = kind as i32;
        attribute.push(p);
    }
    Ok(NodeProto {
        name: n.name.clone(),
        op_type: n.op_type.clone(),
        domain: n.domain.clone(),
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        attribute,
        ..Default::default()
    })
}

fn value_info_to_proto(v: &ValueInfo) -> ValueInfoProto {
    let typed = v.dtype.is_some() || v.shape.is_some();
    ValueInfoProto {
        name: v.name.clone(),
        r#type: typed.then(|| TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: v.dtype.map_or(0, DType::onnx_code),
                shape: v.shape.as_ref().map(|s| TensorShapeProto {
                    dim: s.iter().map(dim_to_proto).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn dim_to_proto(d: &Dim) -> tensor_shape_proto::Dimension {
    use tensor_shape_proto::dimension::Value;
    tensor_shape_proto::Dimension {
        value: match d {
            Dim::Known(n) => Some(Value::DimValue(*n as i64)),
            Dim::Symbol(s) if s == UNKNOWN_DIM => None,
            Dim::Symbol(s) => Some(Value::DimParam(s.clone())),
        },
        ..Default::default()
    }
}
