//! `ModelProto` -> [`Graph`].

use super::proto::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, TensorShapeProto, ValueInfoProto,
};
use super::tensor::{dtype_from_code, sparse_to_dense, tensor_from_proto};
use super::{meta, normalize_domain};
use crate::{Attr, Dim, Graph, GraphError, Node, Result, ValueInfo};
use prost::Message;
use shrink_tensor::{Tensor, TensorData};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Decodes and converts a serialized model. Errors do not name a file (the
/// caller wraps them); they name the graph element at fault.
pub(super) fn model_from_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        GraphError::Invalid(format!(
            "not a valid ONNX model ({} bytes; protobuf decoding failed: {e})",
            bytes.len()
        ))
    })?;
    model_from_proto(&model, base_dir)
}

pub(super) fn model_from_proto(model: &ModelProto, base_dir: Option<&Path>) -> Result<Graph> {
    let gp = model
        .graph
        .as_ref()
        .ok_or_else(|| GraphError::Invalid("the model has no graph (truncated file?)".into()))?;
    if model.opset_import.is_empty() {
        return Err(GraphError::Invalid(
            "the model declares no opset_import (truncated file, or a pre-2018 model)".into(),
        ));
    }
    let mut opsets = BTreeMap::new();
    for o in &model.opset_import {
        opsets.insert(normalize_domain(&o.domain).to_string(), o.version);
    }
    if !model.functions.is_empty() {
        let local: HashSet<(String, String)> = model
            .functions
            .iter()
            .map(|f| (normalize_domain(&f.domain).to_string(), f.name.clone()))
            .collect();
        if let Some(n) = find_call(&gp.node, &local) {
            return Err(GraphError::Unsupported(format!(
                "node '{}' calls model-local function {}:{}; local functions are not supported",
                n.name, n.domain, n.op_type
            )));
        }
    }
    let importer = Importer { base_dir };
    let mut g = importer.graph(gp)?;
    g.opsets = opsets;
    let m = &mut g.metadata;
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            m.insert(k.to_string(), v.to_string());
        }
    };
    put(meta::PRODUCER_NAME, &model.producer_name);
    put(meta::PRODUCER_VERSION, &model.producer_version);
    put(meta::DOMAIN, &model.domain);
    put(meta::DOC_STRING, &model.doc_string);
    if model.model_version != 0 {
        put(meta::MODEL_VERSION, &model.model_version.to_string());
    }
    for p in &model.metadata_props {
        g.metadata.insert(p.key.clone(), p.value.clone());
    }
    Ok(g)
}

/// First node (searching subgraphs too) whose (domain, op) is in `funcs`.
fn find_call<'a>(
    nodes: &'a [NodeProto],
    funcs: &HashSet<(String, String)>,
) -> Option<&'a NodeProto> {
    for n in nodes {
        if funcs.contains(&(normalize_domain(&n.domain).to_string(), n.op_type.clone())) {
            return Some(n);
        }
        for a in &n.attribute {
            let sub = a.g.iter().chain(&a.graphs);
            for g in sub {
                if let Some(c) = find_call(&g.node, funcs) {
                    return Some(c);
                }
            }
        }
    }
    None
}

struct Importer<'a> {
    base_dir: Option<&'a Path>,
}

impl Importer<'_> {
    fn graph(&self, gp: &GraphProto) -> Result<Graph> {
        let gname = if gp.name.is_empty() {
            "<unnamed graph>"
        } else {
            &gp.name
        };
        let mut g = Graph {
            name: gp.name.clone(),
            ..Default::default()
        };
        for (i, t) in gp.initializer.iter().enumerate() {
            if t.name.is_empty() {
                return Err(GraphError::Invalid(format!(
                    "graph '{gname}': initializer #{i} has no name"
                )));
            }
            let tensor = tensor_from_proto(t, self.base_dir)?;
            self.add_initializer(&mut g, gname, &t.name, tensor)?;
        }
        for s in &gp.sparse_initializer {
            let name = s
                .values
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            if name.is_empty() {
                return Err(GraphError::Invalid(format!(
                    "graph '{gname}': a sparse initializer has no name"
                )));
            }
            let tensor = sparse_to_dense(s, self.base_dir)?;
            self.add_initializer(&mut g, gname, &name, tensor)?;
        }
        g.inputs = gp.input.iter().map(value_info).collect::<Result<_>>()?;
        g.outputs = gp.output.iter().map(value_info).collect::<Result<_>>()?;
        for v in &gp.value_info {
            let vi = value_info(v)?;
            g.value_info.insert(vi.name.clone(), vi);
        }

        let mut used_names: HashSet<String> = gp
            .node
            .iter()
            .filter(|n| !n.name.is_empty())
            .map(|n| n.name.clone())
            .collect();
        for (i, np) in gp.node.iter().enumerate() {
            let mut name = np.name.clone();
            if name.is_empty() {
                // Errors, reports and per-layer statistics all name nodes, so
                // unnamed ones get a stable, unique name from op and position.
                name = format!("{}_{i}", np.op_type);
                while used_names.contains(&name) {
                    name.push('_');
                }
                used_names.insert(name.clone());
            }
            let node = self.node(np, name)?;
            if node.op_type == "Constant" && node.domain.is_empty() {
                let (out, tensor) = constant_value(&node)?;
                self.add_initializer(&mut g, gname, &out, tensor)?;
            } else {
                g.nodes.push(node);
            }
        }
        g.sort_topologically()
            .map_err(|e| GraphError::Invalid(format!("graph '{gname}': {e}")))?;
        Ok(g)
    }

    fn add_initializer(&self, g: &mut Graph, gname: &str, name: &str, t: Tensor) -> Result<()> {
        if g.initializers.insert(name.to_string(), t).is_some() {
            return Err(GraphError::Invalid(format!(
                "graph '{gname}': initializer '{name}' is defined twice"
            )));
        }
        Ok(())
    }

    fn node(&self, np: &NodeProto, name: String) -> Result<Node> {
        let mut node = Node {
            name,
            op_type: np.op_type.clone(),
            domain: normalize_domain(&np.domain).to_string(),
            inputs: np.input.clone(),
            outputs: np.output.clone(),
            attrs: BTreeMap::new(),
        };
        for a in &np.attribute {
            let value = self.attr(a).map_err(|msg| GraphError::Attr {
                node: node.name.clone(),
                op: np.op_type.clone(),
                attr: a.name.clone(),
                msg,
            })?;
            node.attrs.insert(a.name.clone(), value);
        }
        Ok(node)
    }

    fn attr(&self, a: &AttributeProto) -> Result<Attr, String> {
        if !a.ref_attr_name.is_empty() {
            return Err(format!(
                "refers to function attribute '{}' outside a function",
                a.ref_attr_name
            ));
        }
        let kind = match AttributeType::try_from(a.r#type) {
            Ok(AttributeType::Undefined) => guess_attr_type(a)?,
            Ok(k) => k,
            Err(_) => return Err(format!("unknown attribute type code {}", a.r#type)),
        };
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| "string is not valid UTF-8".to_string())
        };
        let tensor = |t| tensor_from_proto(t, self.base_dir).map_err(|e| e.to_string());
        let graph = |g| self.graph(g).map_err(|e| e.to_string());
        Ok(match kind {
            AttributeType::Float => Attr::Float(a.f),
            AttributeType::Int => Attr::Int(a.i),
            AttributeType::String => Attr::String(text(&a.s)?),
            AttributeType::Tensor => {
                Attr::Tensor(tensor(a.t.as_ref().ok_or("tensor value missing")?)?)
            }
            AttributeType::Graph => {
                Attr::Graph(Box::new(graph(a.g.as_ref().ok_or("graph value missing")?)?))
            }
            AttributeType::SparseTensor => Attr::Tensor(
                sparse_to_dense(
                    a.sparse_tensor.as_ref().ok_or("sparse tensor missing")?,
                    self.base_dir,
                )
                .map_err(|e| e.to_string())?,
            ),
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Strings => Attr::Strings(
                a.strings
                    .iter()
                    .map(|s| text(s))
                    .collect::<Result<_, _>>()?,
            ),
            AttributeType::Tensors => {
                Attr::Tensors(a.tensors.iter().map(tensor).collect::<Result<_, _>>()?)
            }
            AttributeType::Graphs => {
                Attr::Graphs(a.graphs.iter().map(graph).collect::<Result<_, _>>()?)
            }
            AttributeType::SparseTensors => Attr::Tensors(
                a.sparse_tensors
                    .iter()
                    .map(|s| sparse_to_dense(s, self.base_dir).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?,
            ),
            AttributeType::TypeProto | AttributeType::TypeProtos => {
                return Err("type-proto attributes are not supported".into())
            }
            AttributeType::Undefined => unreachable!("guessed above"),
        })
    }
}

/// Very old models (IR version 1) leave `type` unset; the value tells.
fn guess_attr_type(a: &AttributeProto) -> Result<AttributeType, String> {
    Ok(if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else if !a.s.is_empty() {
        AttributeType::String
    } else if a.i != 0 {
        AttributeType::Int
    } else if a.f != 0.0 {
        AttributeType::Float
    } else {
        return Err("attribute has no type and no value".into());
    })
}

/// The value a `Constant` node produces (every `value*` attribute form),
/// so it can become an initializer: weights then live in one place however
/// the exporter (e.g. PaddlePaddle) chose to write them.
fn constant_value(node: &Node) -> Result<(String, Tensor)> {
    if node.outputs.len() != 1 || node.outputs[0].is_empty() {
        return Err(node.error(format!(
            "Constant must have exactly one output, found {:?}",
            node.outputs
        )));
    }
    if node.attrs.len() != 1 {
        return Err(node.error(format!(
            "Constant must have exactly one value attribute, found {:?}",
            node.attrs.keys().collect::<Vec<_>>()
        )));
    }
    let (key, attr) = node.attrs.iter().next().expect("one attribute");
    let mismatch = || {
        node.error(format!(
            "attribute '{key}' has unexpected kind {}",
            attr.kind()
        ))
    };
    let tensor = match (key.as_str(), attr) {
        ("value" | "sparse_value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(x)) => Tensor::scalar(*x),
        ("value_int", Attr::Int(x)) => Tensor::scalar(*x),
        ("value_string", Attr::String(s)) => {
            Tensor::new(vec![], TensorData::String(vec![s.clone()]))?
        }
        ("value_floats", Attr::Floats(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
        ("value_ints", Attr::Ints(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
        ("value_strings", Attr::Strings(v)) => {
            Tensor::new(vec![v.len()], TensorData::String(v.clone()))?
        }
        (
            "value" | "sparse_value" | "value_float" | "value_int" | "value_string"
            | "value_floats" | "value_ints" | "value_strings",
            _,
        ) => return Err(mismatch()),
        _ => return Err(node.error(format!("Constant has unknown attribute '{key}'"))),
    };
    Ok((node.outputs[0].clone(), tensor))
}

fn value_info(v: &ValueInfoProto) -> Result<ValueInfo> {
    let mut vi = ValueInfo::unknown(v.name.clone());
    // Sequence, map and optional types have no counterpart in the IR: such
    // values stay untyped rather than failing the whole import.
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
        if t.elem_type != 0 {
            vi.dtype = Some(dtype_from_code(t.elem_type, || {
                format!("value '{}'", v.name)
            })?);
        }
        vi.shape = t.shape.as_ref().map(shape_from_proto);
    }
    Ok(vi)
}

fn shape_from_proto(s: &TensorShapeProto) -> Vec<Dim> {
    s.dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(n)) if *n >= 0 => Dim::Known(*n as usize),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
            _ => Dim::Symbol(super::UNKNOWN_DIM.to_string()),
        })
        .collect()
}
