use crate::{GraphError, Result};
use indexmap::IndexMap;
use shrink_tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One dimension of a value's shape: known, or a named symbol such as `batch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Symbol(String),
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Symbol(_) => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// Type and (possibly partial) shape of a named value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: Option<DType>,
    /// `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    /// Why `t` cannot be fed as this value (dtype or a known dimension
    /// disagrees), or `None` when it fits; symbolic dimensions match any
    /// size. Shared by the runtime and the training executor.
    pub fn mismatch(&self, t: &Tensor) -> Option<String> {
        if let Some(dt) = self.dtype {
            if dt != t.dtype() {
                return Some(format!("expected dtype {dt}, got {}", t.dtype()));
            }
        }
        if let Some(shape) = &self.shape {
            let ok = shape.len() == t.rank()
                && shape.iter().zip(t.shape()).all(|(d, &n)| match d {
                    Dim::Known(k) => *k == n,
                    Dim::Symbol(_) => true,
                });
            if !ok {
                let want: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                return Some(format!(
                    "expected shape [{}], got {:?}",
                    want.join(", "),
                    t.shape()
                ));
            }
        }
        None
    }

    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<Dim>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype: Some(dtype),
            shape: Some(shape),
        }
    }

    pub fn unknown(name: impl Into<String>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype: None,
            shape: None,
        }
    }

    /// The shape if every dimension is known.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }
}

/// A typed node attribute (ONNX `AttributeProto`).
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(Tensor),
    Graph(Box<Graph>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
}

impl Attr {
    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Float(_) => "float",
            Attr::Int(_) => "int",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Graph(_) => "graph",
            Attr::Floats(_) => "floats",
            Attr::Ints(_) => "ints",
            Attr::Strings(_) => "strings",
            Attr::Tensors(_) => "tensors",
            Attr::Graphs(_) => "graphs",
        }
    }
}

/// One operation. `op_type` and attribute names follow ONNX; an empty input
/// name marks an omitted optional input, as in ONNX.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    /// Operator domain; empty for the default ONNX domain.
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Attr>,
}

impl Node {
    pub fn new(
        name: impl Into<String>,
        op_type: impl Into<String>,
        inputs: &[&str],
        outputs: &[&str],
    ) -> Node {
        Node {
            name: name.into(),
            op_type: op_type.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: BTreeMap::new(),
        }
    }

    /// Builder-style attribute setter.
    pub fn with(mut self, key: &str, value: Attr) -> Node {
        self.attrs.insert(key.to_string(), value);
        self
    }

    /// An error about this node, naming it and its op.
    pub fn error(&self, msg: impl Into<String>) -> GraphError {
        GraphError::Node {
            node: self.name.clone(),
            op: self.op_type.clone(),
            msg: msg.into(),
        }
    }

    fn attr_error(&self, attr: &str, msg: impl Into<String>) -> GraphError {
        GraphError::Attr {
            node: self.name.clone(),
            op: self.op_type.clone(),
            attr: attr.to_string(),
            msg: msg.into(),
        }
    }

    /// Input `i` if present and non-empty.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attrs.get(key)
    }

    pub fn attr_int(&self, key: &str, default: i64) -> Result<i64> {
        match self.attrs.get(key) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(a) => Err(self.attr_error(key, format!("expected int, found {}", a.kind()))),
        }
    }

    pub fn attr_int_opt(&self, key: &str) -> Result<Option<i64>> {
        match self.attrs.get(key) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(self.attr_error(key, format!("expected int, found {}", a.kind()))),
        }
    }

    pub fn attr_float(&self, key: &str, default: f32) -> Result<f32> {
        match self.attrs.get(key) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(a) => Err(self.attr_error(key, format!("expected float, found {}", a.kind()))),
        }
    }

    pub fn attr_str<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.attrs.get(key) {
            None => Ok(default),
            Some(Attr::String(v)) => Ok(v),
            Some(a) => Err(self.attr_error(key, format!("expected string, found {}", a.kind()))),
        }
    }

    pub fn attr_ints(&self, key: &str) -> Result<Option<&[i64]>> {
        match self.attrs.get(key) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(a) => Err(self.attr_error(key, format!("expected ints, found {}", a.kind()))),
        }
    }

    pub fn attr_floats(&self, key: &str) -> Result<Option<&[f32]>> {
        match self.attrs.get(key) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(a) => Err(self.attr_error(key, format!("expected floats, found {}", a.kind()))),
        }
    }

    pub fn attr_strings(&self, key: &str) -> Result<Option<&[String]>> {
        match self.attrs.get(key) {
            None => Ok(None),
            Some(Attr::Strings(v)) => Ok(Some(v)),
            Some(a) => Err(self.attr_error(key, format!("expected strings, found {}", a.kind()))),
        }
    }

    pub fn attr_tensor(&self, key: &str) -> Result<Option<&Tensor>> {
        match self.attrs.get(key) {
            None => Ok(None),
            Some(Attr::Tensor(v)) => Ok(Some(v)),
            Some(a) => Err(self.attr_error(key, format!("expected tensor, found {}", a.kind()))),
        }
    }

    pub fn attr_graph(&self, key: &str) -> Result<&Graph> {
        match self.attrs.get(key) {
            Some(Attr::Graph(g)) => Ok(g),
            None => Err(self.attr_error(key, "required graph attribute is missing")),
            Some(a) => Err(self.attr_error(key, format!("expected graph, found {}", a.kind()))),
        }
    }
}

/// A dataflow graph: inputs, outputs, weights (initializers) and nodes.
///
/// Nodes are kept in a valid topological order by every pass (import sorts them);
/// executors may rely on it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Weights and other constants, in file order.
    pub initializers: IndexMap<String, Tensor>,
    pub nodes: Vec<Node>,
    /// Known types/shapes of intermediate values (filled by shape inference).
    pub value_info: IndexMap<String, ValueInfo>,
    /// Opset per domain ("" is the default ONNX domain).
    pub opsets: BTreeMap<String, i64>,
    /// Free-form metadata (producer, doc strings, provenance) carried through export.
    pub metadata: BTreeMap<String, String>,
    /// How the `.shrink` container stores each initializer (name → encoding;
    /// absent = dense). Initializers always hold decoded values; this is only
    /// a storage hint, which ONNX export ignores.
    pub encodings: BTreeMap<String, crate::container::Encoding>,
}

impl Graph {
    /// Opset of the default ONNX domain (defaults to 17 when unset).
    pub fn opset(&self) -> i64 {
        self.opsets.get("").copied().unwrap_or(17)
    }

    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|v| v.name.as_str()).collect()
    }

    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|v| v.name.as_str()).collect()
    }

    /// Name -> index of the node producing it.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                if !o.is_empty() {
                    m.insert(o.as_str(), i);
                }
            }
        }
        m
    }

    /// Name -> indices of the nodes consuming it (subgraph captures included).
    pub fn consumers(&self) -> HashMap<String, Vec<usize>> {
        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for name in node_uses(n) {
                m.entry(name).or_default().push(i);
            }
        }
        m
    }

    /// Reorders nodes topologically (stable: keeps file order where possible).
    ///
    /// A name no node produces counts as available (a graph input, an
    /// initializer, or an outer-scope value of a subgraph); dangling names are
    /// [`crate::validate`]'s business. Errors on a cycle, naming a node in it.
    pub fn sort_topologically(&mut self) -> Result<()> {
        let produced: HashSet<String> = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().cloned())
            .collect();
        let mut available: HashSet<String> = HashSet::new();
        let mut remaining: Vec<Node> = std::mem::take(&mut self.nodes);
        let mut sorted = Vec::with_capacity(remaining.len());
        while !remaining.is_empty() {
            let before = remaining.len();
            let mut rest = Vec::new();
            for n in remaining {
                let ready = node_uses(&n)
                    .iter()
                    .all(|i| !produced.contains(i) || available.contains(i));
                if ready {
                    available.extend(n.outputs.iter().cloned());
                    sorted.push(n);
                } else {
                    rest.push(n);
                }
            }
            remaining = rest;
            if remaining.len() == before {
                let n = remaining[0].clone();
                let waiting: Vec<_> = node_uses(&n)
                    .into_iter()
                    .filter(|i| !available.contains(i))
                    .collect();
                self.nodes = sorted.into_iter().chain(remaining).collect();
                return Err(GraphError::Invalid(format!(
                    "cycle: node '{}' ({}) waits on {:?}, which depend on its own output",
                    n.name, n.op_type, waiting
                )));
            }
        }
        self.nodes = sorted;
        Ok(())
    }
}

/// Every value name a node reads, including names its subgraphs capture from
/// the enclosing scope (ONNX `If`/`Loop` bodies may read outer values).
pub fn node_uses(n: &Node) -> Vec<String> {
    let mut uses: Vec<String> = n.inputs.iter().filter(|s| !s.is_empty()).cloned().collect();
    for a in n.attrs.values() {
        match a {
            Attr::Graph(g) => uses.extend(captured_names(g)),
            Attr::Graphs(gs) => gs.iter().for_each(|g| uses.extend(captured_names(g))),
            _ => {}
        }
    }
    uses
}

/// Names a subgraph reads that it does not define itself.
pub fn captured_names(g: &Graph) -> Vec<String> {
    let mut defined: HashSet<&str> = g.inputs.iter().map(|v| v.name.as_str()).collect();
    defined.extend(g.initializers.keys().map(String::as_str));
    for n in &g.nodes {
        defined.extend(n.outputs.iter().map(String::as_str));
    }
    let mut out = Vec::new();
    for n in &g.nodes {
        for u in node_uses(n) {
            if !defined.contains(u.as_str()) && !out.contains(&u) {
                out.push(u);
            }
        }
    }
    for o in &g.outputs {
        if !defined.contains(o.name.as_str()) && !out.contains(&o.name) {
            out.push(o.name.clone());
        }
    }
    out
}
