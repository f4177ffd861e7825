//! Op implementations, one module per family, all registered by ONNX op name.
//!
//! An op is a plain function: it gets the node (attributes, names), the opset,
//! and its inputs (`None` for an omitted optional input), and returns its
//! outputs in order. Ops never panic on bad input: shapes, dtypes and
//! attributes are checked and reported through [`OpContext::error`].

use crate::{Result, RuntimeError};
use shrink_graph::{Graph, Node};
use shrink_tensor::Tensor;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// One node's once-per-session state (see [`OpContext::prepared`]).
pub type Prepared = OnceLock<Option<Arc<dyn Any + Send + Sync>>>;

mod args;
mod broadcast;
mod control;
mod conv;
mod dispatch;
mod elementwise;
mod fake;
mod layout;
mod linalg;
mod logic;
mod norm;
mod pool;
mod quant;
mod reduce;
mod resize;
mod rnn;
mod scalar;
mod shape;
#[cfg(test)]
mod testing;
mod unary;

/// What an op sees besides its inputs.
pub struct OpContext<'a> {
    pub node: &'a Node,
    /// Opset of the node's domain.
    pub opset: i64,
    /// Number of threads the op may use (rayon's pool is already sized to it).
    pub threads: usize,
    /// Runs a subgraph (If/Loop bodies) with access to the enclosing scope.
    #[allow(clippy::type_complexity)]
    pub(crate) subgraph: &'a dyn Fn(&Graph, &[Tensor]) -> Result<Vec<Tensor>>,
    /// This node's slot for state prepared once per session (packed weights,
    /// im2col plans …); `None` inside subgraphs, which are not planned.
    pub(crate) prepared: Option<&'a Prepared>,
    /// Whether a value name is an initializer of the graph being run.
    pub(crate) constants: &'a dyn Fn(&str) -> bool,
}

/// Subgraph runner of a [`OpContext::standalone`] context: there is none.
fn no_subgraph(_: &Graph, _: &[Tensor]) -> Result<Vec<Tensor>> {
    Err(RuntimeError::Input {
        name: "(subgraph)".into(),
        msg: "this op context runs single nodes; subgraphs (If/Loop bodies) are not available"
            .into(),
    })
}

fn never_constant(_: &str) -> bool {
    false
}

impl<'a> OpContext<'a> {
    /// A context for running one node outside a [`crate::Session`] (the
    /// training executor calls the runtime's forward kernels this way):
    /// nothing is prepared or cached, inputs never count as constants, and
    /// subgraph ops report an error.
    pub fn standalone(node: &'a Node, opset: i64, threads: usize) -> OpContext<'a> {
        OpContext {
            node,
            opset,
            threads,
            subgraph: &no_subgraph,
            prepared: None,
            constants: &never_constant,
        }
    }
}

impl OpContext<'_> {
    /// An error naming this node and its op.
    pub fn error(&self, msg: impl Into<String>) -> RuntimeError {
        RuntimeError::Node {
            node: self.node.name.clone(),
            op: self.node.op_type.clone(),
            msg: msg.into(),
        }
    }

    /// Runs `g` (an attribute of this node) with the given explicit inputs;
    /// names `g` reads from the enclosing scope resolve to the caller's values.
    pub fn run_subgraph(&self, g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        (self.subgraph)(g, inputs)
    }

    /// State built once per session for this node and reused on every run:
    /// the op packs constant weights for its kernel on the first call and
    /// gets them back afterwards. `build` returns `None` when the state
    /// cannot be reused (e.g. the weight is not a constant); the op then
    /// works without it. Inside subgraphs nothing is cached.
    pub fn prepared<T: Any + Send + Sync>(
        &self,
        build: impl FnOnce() -> Result<Option<T>>,
    ) -> Result<Option<Arc<T>>> {
        let Some(slot) = self.prepared else {
            return Ok(build()?.map(Arc::new));
        };
        if let Some(v) = slot.get() {
            return Ok(v.clone().and_then(|a| a.downcast::<T>().ok()));
        }
        let built: Option<Arc<dyn Any + Send + Sync>> = build()?.map(|t| Arc::new(t) as _);
        // A concurrent run may have filled the slot first; either value is valid.
        let _ = slot.set(built);
        Ok(slot
            .get()
            .cloned()
            .flatten()
            .and_then(|a| a.downcast::<T>().ok()))
    }

    /// True when `name` is a constant of the graph (an initializer), i.e. its
    /// value cannot change between runs and may be prepared once.
    pub fn is_constant_input(&self, i: usize) -> bool {
        self.node.input(i).is_some_and(|n| (self.constants)(n))
    }

    /// Input `i`, or an error saying it is required.
    pub fn required<'t>(&self, inputs: &[Option<&'t Tensor>], i: usize) -> Result<&'t Tensor> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.error(format!("required input #{i} is missing")))
    }
}

/// The signature of every op.
pub type OpFn = fn(&OpContext, &[Option<&Tensor>]) -> Result<Vec<Tensor>>;

/// An op's in-place form, for a single-output op whose first input dies at
/// this node: it overwrites that input with the output and returns `true`,
/// or returns `false` without touching it when the case does not fit (the
/// ordinary [`OpFn`] then runs). `inputs[0]` is `None`; the others are as
/// for the [`OpFn`]. Saves a fresh output buffer (and its page faults) on
/// big activations such as MobileNet's Clip and Add.
pub type InplaceFn = fn(&OpContext, &mut Tensor, &[Option<&Tensor>]) -> Result<bool>;

/// Op name -> implementation, for the default ONNX domain and `com.microsoft`
/// style extensions alike (keyed by `domain::op`, domain empty for ONNX).
#[derive(Clone)]
pub struct Registry {
    ops: HashMap<String, OpFn>,
    inplace: HashMap<String, InplaceFn>,
}

impl Registry {
    pub fn empty() -> Registry {
        Registry {
            ops: HashMap::new(),
            inplace: HashMap::new(),
        }
    }

    /// Every op shrink implements.
    pub fn standard() -> Registry {
        let mut r = Registry::empty();
        control::register(&mut r);
        conv::register(&mut r);
        elementwise::register(&mut r);
        fake::register(&mut r);
        linalg::register(&mut r);
        logic::register(&mut r);
        norm::register(&mut r);
        pool::register(&mut r);
        quant::register(&mut r);
        reduce::register(&mut r);
        resize::register(&mut r);
        rnn::register(&mut r);
        shape::register(&mut r);
        unary::register(&mut r);
        r
    }

    pub fn add(&mut self, domain: &str, op: &str, f: OpFn) {
        self.ops.insert(key(domain, op), f);
    }

    /// Registers the in-place form of an op registered with [`Registry::add`].
    pub fn add_inplace(&mut self, domain: &str, op: &str, f: InplaceFn) {
        self.inplace.insert(key(domain, op), f);
    }

    /// The in-place form of an op, if it has one.
    pub fn get_inplace(&self, domain: &str, op: &str) -> Option<InplaceFn> {
        let d = if domain == "ai.onnx" { "" } else { domain };
        self.inplace.get(&key(d, op)).copied()
    }

    pub fn get(&self, domain: &str, op: &str) -> Option<OpFn> {
        let d = if domain == "ai.onnx" { "" } else { domain };
        self.ops.get(&key(d, op)).copied()
    }

    /// Names of the registered ops, sorted (for `shrink ops` and docs).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.ops.keys().cloned().collect();
        v.sort();
        v
    }
}

fn key(domain: &str, op: &str) -> String {
    if domain.is_empty() {
        op.to_string()
    } else {
        format!("{domain}::{op}")
    }
}
