//! The one extension point for differentiable ops: [`DiffOp`], registered
//! in an [`OpRegistry`] by (domain, op type).
//!
//! An op's forward returns its outputs plus anything it wants back in
//! backward (argmax positions, batch statistics …); the executor keeps the
//! node's input and output tensors on the tape, so most ops save nothing.
//! Backward gets the output gradients and returns one optional gradient per
//! input; it is only asked for the inputs that need one
//! ([`BackwardCtx::needs`]), so e.g. the first convolution never computes a
//! gradient for the image.
//!
//! Forward of most ops is the runtime's own kernel ([`runtime_forward`]):
//! training then computes exactly what inference computes.

use crate::{Result, TrainError};
use shrink_graph::Node;
use shrink_runtime::{OpContext, Registry};
use shrink_tensor::Tensor;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

pub(crate) mod activation;
pub(crate) mod broadcast;
pub(crate) mod conv;
pub(crate) mod dropout;
pub(crate) mod elementwise;
pub(crate) mod linalg;
pub(crate) mod movement;
pub(crate) mod nondiff;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod reduce;
pub(crate) mod softmax;

/// Whether the graph runs as in training or as in inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// BatchNorm normalises with batch statistics and updates its running
    /// statistics; Dropout drops; a forward records the tape.
    Train,
    /// Inference semantics (running statistics, no dropout).
    Eval,
}

/// What an op's forward sees besides its inputs.
pub struct ForwardCtx<'a> {
    pub node: &'a Node,
    /// Opset of the node's domain.
    pub opset: i64,
    pub mode: Mode,
    /// Seed for this node at this step (Dropout masks): derived from the
    /// executor's seed, the step count and the node index.
    pub seed: u64,
    /// Whether the forward is being recorded for a backward pass (ops may
    /// skip saving state when not).
    pub recording: bool,
}

impl ForwardCtx<'_> {
    /// An error naming this node and its op.
    pub fn error(&self, msg: impl Into<String>) -> TrainError {
        node_error(self.node, msg)
    }

    /// Input `i`, or an error saying it is required.
    pub fn required<'t>(&self, inputs: &[Option<&'t Tensor>], i: usize) -> Result<&'t Tensor> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.error(format!("required input #{i} is missing")))
    }

    /// Runs the runtime's forward kernel of this node's op.
    pub fn runtime(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        runtime_forward(self.node, self.opset, inputs)
    }
}

/// What an op's forward produced.
pub struct Forward {
    pub outputs: Vec<Tensor>,
    /// State the op needs again in backward (downcast with
    /// [`BackwardCtx::saved`]).
    pub saved: Option<Box<dyn Any + Send + Sync>>,
    /// New values for some of the op's inputs, by input index: state the op
    /// updates as it runs (BatchNorm's running statistics in training). The
    /// executor writes them into the [`crate::ParamStore`].
    pub updates: Vec<(usize, Tensor)>,
}

impl Forward {
    pub fn new(outputs: Vec<Tensor>) -> Forward {
        Forward {
            outputs,
            saved: None,
            updates: Vec::new(),
        }
    }

    pub fn with_saved(outputs: Vec<Tensor>, saved: impl Any + Send + Sync) -> Forward {
        Forward {
            outputs,
            saved: Some(Box::new(saved)),
            updates: Vec::new(),
        }
    }
}

/// What an op's backward sees: the node, the tensors of its forward, and
/// which inputs need a gradient.
pub struct BackwardCtx<'a> {
    pub node: &'a Node,
    pub opset: i64,
    pub mode: Mode,
    pub inputs: &'a [Option<&'a Tensor>],
    pub outputs: &'a [&'a Tensor],
    pub saved: Option<&'a (dyn Any + Send + Sync)>,
    pub needs: &'a [bool],
}

impl BackwardCtx<'_> {
    /// An error naming this node and its op.
    pub fn error(&self, msg: impl Into<String>) -> TrainError {
        node_error(self.node, msg)
    }

    /// Whether input `i` needs a gradient.
    pub fn needs(&self, i: usize) -> bool {
        self.needs.get(i).copied().unwrap_or(false)
    }

    /// Forward input `i`, or an error saying it is missing.
    pub fn input(&self, i: usize) -> Result<&Tensor> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.error(format!("forward input #{i} is missing on the tape")))
    }

    /// Forward output `i`.
    pub fn output(&self, i: usize) -> Result<&Tensor> {
        self.outputs
            .get(i)
            .copied()
            .ok_or_else(|| self.error(format!("forward output #{i} is missing on the tape")))
    }

    /// The state this op's forward saved, as `T`.
    pub fn saved<T: 'static>(&self) -> Result<&T> {
        self.saved
            .and_then(|s| s.downcast_ref::<T>())
            .ok_or_else(|| self.error("the state saved by forward is missing or of another type"))
    }
}

/// A differentiable op: forward, and the gradient of its inputs given the
/// gradients of its outputs.
pub trait DiffOp: Send + Sync {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward>;

    /// Gradients of the inputs (`None` where not needed or not defined),
    /// given one optional gradient per output (`None`: the output did not
    /// influence the loss; at least one is `Some`).
    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>>;

    /// False for ops whose outputs never carry a gradient (Shape, Constant,
    /// comparisons …): backward is never called for them.
    fn differentiable(&self) -> bool {
        true
    }

    /// Inputs that are state rather than parameters when they are
    /// initializers (BatchNorm running statistics, a pruning mask, a
    /// calibrated fake-quant scale): never trainable.
    fn buffer_inputs(&self) -> &[usize] {
        &[]
    }
}

/// Differentiable ops by (domain, op type); the empty domain is ONNX's.
#[derive(Clone)]
pub struct OpRegistry {
    ops: HashMap<(String, String), Arc<dyn DiffOp>>,
}

impl OpRegistry {
    pub fn empty() -> OpRegistry {
        OpRegistry {
            ops: HashMap::new(),
        }
    }

    /// Every op shrink-train differentiates, and the custom ops of
    /// [`crate::SHRINK_DOMAIN`].
    pub fn standard() -> OpRegistry {
        let mut r = OpRegistry::empty();
        activation::register(&mut r);
        conv::register(&mut r);
        dropout::register(&mut r);
        elementwise::register(&mut r);
        linalg::register(&mut r);
        movement::register(&mut r);
        nondiff::register(&mut r);
        norm::register(&mut r);
        pool::register(&mut r);
        reduce::register(&mut r);
        softmax::register(&mut r);
        crate::custom::register(&mut r);
        r
    }

    /// Adds (or replaces) the op for `(domain, op_type)`.
    pub fn register(&mut self, domain: &str, op_type: &str, op: Arc<dyn DiffOp>) {
        self.ops
            .insert((norm_domain(domain).to_string(), op_type.to_string()), op);
    }

    pub fn get(&self, domain: &str, op_type: &str) -> Option<&Arc<dyn DiffOp>> {
        self.ops
            .get(&(norm_domain(domain).to_string(), op_type.to_string()))
    }

    /// `domain::op` names of the registered ops, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ops
            .keys()
            .map(|(d, o)| {
                if d.is_empty() {
                    o.clone()
                } else {
                    format!("{d}::{o}")
                }
            })
            .collect();
        v.sort();
        v
    }
}

fn norm_domain(d: &str) -> &str {
    if d == "ai.onnx" {
        ""
    } else {
        d
    }
}

/// The shared standard registry (building it is cheap, but ParamStore and
/// Executor constructors without an explicit registry use this one).
pub(crate) fn standard_registry() -> &'static OpRegistry {
    static R: OnceLock<OpRegistry> = OnceLock::new();
    R.get_or_init(OpRegistry::standard)
}

fn runtime_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::standard)
}

/// Runs the runtime's kernel for `node` (its forward), with all of rayon's
/// threads.
pub fn runtime_forward(node: &Node, opset: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let f = runtime_registry()
        .get(&node.domain, &node.op_type)
        .ok_or_else(|| {
            node_error(
                node,
                "the runtime has no forward kernel for this op".to_string(),
            )
        })?;
    let ctx = OpContext::standalone(node, opset, rayon::current_num_threads());
    Ok(f(&ctx, inputs)?)
}

/// Whether the runtime has a kernel for this op.
pub(crate) fn runtime_has(domain: &str, op: &str) -> bool {
    runtime_registry().get(domain, op).is_some()
}

pub(crate) fn node_error(node: &Node, msg: impl Into<String>) -> TrainError {
    TrainError::Node {
        node: node.name.clone(),
        op: node.op_type.clone(),
        msg: msg.into(),
    }
}

/// An op's forward through the runtime, with a backward given as a plain
/// function: the form most ops take.
pub(crate) struct RtOp {
    pub bwd: BwdFn,
}

pub(crate) type BwdFn = fn(&BackwardCtx, &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>>;

impl DiffOp for RtOp {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        Ok(Forward::new(cx.runtime(inputs)?))
    }
    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        (self.bwd)(cx, grads)
    }
}

pub(crate) fn rt(r: &mut OpRegistry, op: &str, bwd: BwdFn) {
    r.register("", op, Arc::new(RtOp { bwd }));
}

/// f32 elements of a tensor, or an error naming the node.
pub(crate) fn f32s<'t>(node: &Node, t: &'t Tensor, what: &str) -> Result<&'t [f32]> {
    t.as_slice::<f32>().map_err(|_| {
        node_error(
            node,
            format!("{what} must be float32 for training, got {}", t.dtype()),
        )
    })
}

/// The first output gradient (single-output ops), as f32.
pub(crate) fn grad0<'t>(cx: &BackwardCtx, grads: &[Option<&'t Tensor>]) -> Result<&'t Tensor> {
    grads
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| cx.error("backward called without an output gradient"))
}

/// A f32 tensor from a shape and values (lengths always agree by construction).
pub(crate) fn tensor(shape: &[usize], v: Vec<f32>) -> Result<Tensor> {
    Ok(Tensor::from_vec(shape.to_vec(), v)?)
}
