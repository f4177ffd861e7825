//! Graphs built in code from a checkpoint's config and weights, for models
//! whose weights ship without an ONNX graph (safetensors-only checkpoints).
//!
//! Builders emit standard ONNX ops only, so what they produce runs on the
//! shrink runtime, exports to ONNX, and goes through every compression pass
//! exactly like an imported model.

pub mod bert;

use crate::safetensors::SafeTensors;
use crate::{Attr, Graph, GraphError, Node, Result};
use indexmap::IndexMap;
use shrink_tensor::Tensor;

/// Where a builder gets named weights from: a memory-mapped safetensors file
/// (tensors copied out one at a time) or tensors already in memory.
pub trait Weights {
    /// The tensor called `name`, or an error naming it and the source.
    fn get(&self, name: &str) -> Result<Tensor>;
    fn contains(&self, name: &str) -> bool;
}

impl Weights for SafeTensors {
    fn get(&self, name: &str) -> Result<Tensor> {
        self.tensor(name)
    }

    fn contains(&self, name: &str) -> bool {
        self.info(name).is_some()
    }
}

impl Weights for IndexMap<String, Tensor> {
    fn get(&self, name: &str) -> Result<Tensor> {
        self.get(name)
            .cloned()
            .ok_or_else(|| GraphError::Invalid(format!("weights have no tensor named '{name}'")))
    }

    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

/// Appends nodes and initializers to a graph under construction. Every node is
/// named after its (single) output so graph dumps read like the model code.
pub(crate) struct GraphBuilder {
    graph: Graph,
}

impl GraphBuilder {
    pub(crate) fn new(name: &str, opset: i64) -> GraphBuilder {
        let mut graph = Graph {
            name: name.to_string(),
            ..Graph::default()
        };
        graph.opsets.insert(String::new(), opset);
        GraphBuilder { graph }
    }

    /// Adds a node with one output called `out`; returns `out`.
    pub(crate) fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        out: &str,
        attrs: Vec<(&str, Attr)>,
    ) -> String {
        let mut node = Node::new(out, op_type, inputs, &[out]);
        for (k, v) in attrs {
            node = node.with(k, v);
        }
        self.graph.nodes.push(node);
        out.to_string()
    }

    /// Adds (or replaces) an initializer; returns its name.
    pub(crate) fn constant(&mut self, name: &str, t: Tensor) -> String {
        self.graph.initializers.insert(name.to_string(), t);
        name.to_string()
    }

    pub(crate) fn graph_mut(&mut self) -> &mut Graph {
        &mut self.graph
    }

    pub(crate) fn finish(self) -> Graph {
        self.graph
    }
}
