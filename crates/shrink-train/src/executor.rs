//! The tape: a forward pass that remembers what each node read and wrote,
//! and a backward pass that walks it in reverse.

use crate::ops::{standard_registry, BackwardCtx, DiffOp, ForwardCtx, OpRegistry};
use crate::{ParamStore, Result, TrainError};
use indexmap::IndexMap;
use shrink_graph::{node_uses, Graph, Node, ValueInfo};
use shrink_tensor::{DType, Tensor};
use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::ops::Mode;

/// Gradients by parameter name, in the parameter store's order.
#[derive(Debug, Clone, Default)]
pub struct Grads {
    map: IndexMap<String, Tensor>,
}

impl Grads {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.map.get_mut(name)
    }
    pub fn names(&self) -> Vec<&str> {
        self.map.keys().map(String::as_str).collect()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.map.iter().map(|(n, t)| (n.as_str(), t))
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Tensor)> {
        self.map.iter_mut().map(|(n, t)| (n.as_str(), t))
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn into_map(self) -> IndexMap<String, Tensor> {
        self.map
    }
    /// Euclidean norm over every gradient element (for clipping, NaN checks).
    pub fn global_norm(&self) -> f64 {
        self.map
            .values()
            .flat_map(|t| t.as_slice::<f32>().unwrap_or(&[]).iter())
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt()
    }
}

/// One recorded node.
struct Entry {
    node: usize,
    inputs: Vec<Option<Arc<Tensor>>>,
    outputs: Vec<Arc<Tensor>>,
    saved: Option<Box<dyn Any + Send + Sync>>,
    needs: Vec<bool>,
}

struct Tape {
    mode: Mode,
    entries: Vec<Entry>,
    /// Values that depend on a trainable parameter (or a fed input whose
    /// gradient was asked for).
    requires: HashSet<String>,
    /// Shapes of the graph outputs, to check the output gradients.
    output_shapes: Vec<Vec<usize>>,
}

/// Runs a graph forward (recording a tape in training) and backward.
pub struct Executor {
    nodes: Vec<Node>,
    opsets: Vec<i64>,
    ops: Vec<Arc<dyn DiffOp>>,
    /// Initializers that are not f32 (shapes, indices): never parameters.
    consts: HashMap<String, Arc<Tensor>>,
    inputs: Vec<ValueInfo>,
    outputs: Vec<String>,
    /// Per node: values whose last reader it is (freed when not recording).
    free_after: Vec<Vec<String>>,
    /// Per node: whether its inputs are all constants (non-f32 initializers
    /// or outputs of such nodes): shape arithmetic and Constant nodes, run
    /// once and cached.
    fixed: Vec<bool>,
    cache: HashMap<usize, Vec<Arc<Tensor>>>,
    seed: u64,
    step: u64,
    input_grads: bool,
    tape: Option<Tape>,
    /// Per node: (forward, backward) wall time accumulated while profiling.
    profile: Option<Vec<(Duration, Duration)>>,
}

/// Wall time one node spent in forward and backward (see
/// [`Executor::set_profiling`]).
#[derive(Debug, Clone)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub forward: Duration,
    pub backward: Duration,
}

impl Executor {
    /// Resolves every node's op in the standard registry; fails naming the
    /// first node whose op has no backward (or no forward).
    pub fn new(graph: &Graph) -> Result<Executor> {
        Executor::with_registry(graph, standard_registry())
    }

    ///
    /// Also asks the allocator to keep freed memory (see
    /// [`shrink_kernels::memory::retain_freed_memory`]): every training step
    /// frees and reallocates the same activation-sized buffers.
    pub fn with_registry(graph: &Graph, registry: &OpRegistry) -> Result<Executor> {
        static TUNE: std::sync::Once = std::sync::Once::new();
        TUNE.call_once(|| {
            shrink_kernels::memory::retain_freed_memory();
        });
        let mut ops = Vec::with_capacity(graph.nodes.len());
        let mut opsets = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let op = registry
                .get(&n.domain, &n.op_type)
                .ok_or_else(|| TrainError::NoBackward {
                    node: n.name.clone(),
                    op: n.op_type.clone(),
                    domain: n.domain.clone(),
                })?;
            ops.push(op.clone());
            let d = if n.domain == "ai.onnx" { "" } else { &n.domain };
            opsets.push(
                graph
                    .opsets
                    .get(d)
                    .copied()
                    .unwrap_or_else(|| graph.opset()),
            );
        }
        let consts = graph
            .initializers
            .iter()
            .filter(|(_, t)| t.dtype() != DType::F32)
            .map(|(n, t)| (n.clone(), Arc::new(t.clone())))
            .collect();
        let keep: HashSet<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            for u in node_uses(n) {
                last.insert(u, i);
            }
            for o in &n.outputs {
                last.entry(o.clone()).or_insert(i);
            }
        }
        let mut free_after = vec![Vec::new(); graph.nodes.len()];
        for (name, i) in last {
            if !keep.contains(name.as_str()) && !graph.initializers.contains_key(&name) {
                free_after[i].push(name);
            }
        }
        let mut known: HashSet<&str> = graph
            .initializers
            .iter()
            .filter(|(_, t)| t.dtype() != DType::F32)
            .map(|(n, _)| n.as_str())
            .collect();
        let mut fixed = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let subgraph = n.attrs.values().any(|a| {
                matches!(
                    a,
                    shrink_graph::Attr::Graph(_) | shrink_graph::Attr::Graphs(_)
                )
            });
            let f = !subgraph
                && n.op_type != "Dropout"
                && n.inputs
                    .iter()
                    .all(|i| i.is_empty() || known.contains(i.as_str()));
            if f {
                known.extend(n.outputs.iter().map(String::as_str));
            }
            fixed.push(f);
        }
        Ok(Executor {
            fixed,
            cache: HashMap::new(),
            nodes: graph.nodes.clone(),
            opsets,
            ops,
            consts,
            inputs: graph
                .inputs
                .iter()
                .filter(|i| !graph.initializers.contains_key(&i.name))
                .cloned()
                .collect(),
            outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
            free_after,
            seed: 0,
            step: 0,
            input_grads: false,
            tape: None,
            profile: None,
        })
    }

    /// Seeds the random state of stochastic ops (Dropout); resets the step
    /// count, so the same seed replays the same masks.
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.step = 0;
    }

    /// Also return gradients for the fed inputs (by input name) from
    /// [`Executor::backward`].
    pub fn set_input_grads(&mut self, on: bool) {
        self.input_grads = on;
    }

    /// Starts (or stops) accumulating per-node forward/backward times.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![Default::default(); self.nodes.len()]);
    }

    /// Accumulated per-node times since profiling was switched on.
    pub fn node_times(&self) -> Vec<NodeTime> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .zip(p)
            .map(|(n, &(f, b))| NodeTime {
                node: n.name.clone(),
                op: n.op_type.clone(),
                forward: f,
                backward: b,
            })
            .collect()
    }

    /// Names the caller must feed.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|i| i.name.as_str()).collect()
    }

    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(String::as_str).collect()
    }

    /// Runs the graph; returns its outputs in graph order. [`Mode::Train`]
    /// records the tape for [`Executor::backward`] and updates BatchNorm
    /// running statistics in `params`.
    pub fn forward(
        &mut self,
        params: &mut ParamStore,
        feeds: &[(&str, &Tensor)],
        mode: Mode,
    ) -> Result<Vec<Tensor>> {
        self.run(params, feeds, mode, mode == Mode::Train)
    }

    /// Like [`Executor::forward`] but records the tape whatever the mode:
    /// gradients of an inference-mode graph (fine-tuning with frozen
    /// BatchNorm statistics, sensitivity analysis).
    pub fn forward_recorded(
        &mut self,
        params: &mut ParamStore,
        feeds: &[(&str, &Tensor)],
        mode: Mode,
    ) -> Result<Vec<Tensor>> {
        self.run(params, feeds, mode, true)
    }

    fn run(
        &mut self,
        params: &mut ParamStore,
        feeds: &[(&str, &Tensor)],
        mode: Mode,
        record: bool,
    ) -> Result<Vec<Tensor>> {
        self.tape = None;
        let step = self.step;
        self.step += 1;
        let mut values: HashMap<String, Arc<Tensor>> = HashMap::new();
        for (name, t) in feeds {
            let info = self
                .inputs
                .iter()
                .find(|i| i.name == *name)
                .ok_or_else(|| TrainError::Input {
                    name: name.to_string(),
                    msg: format!(
                        "the graph has no input of that name (inputs: {:?})",
                        self.input_names()
                    ),
                })?;
            check_input(info, t)?;
            values.insert(name.to_string(), Arc::new((*t).clone()));
        }
        for i in &self.inputs {
            if !values.contains_key(&i.name) {
                return Err(TrainError::Input {
                    name: i.name.clone(),
                    msg: "required input was not fed".into(),
                });
            }
        }
        let mut requires: HashSet<String> = HashSet::new();
        if record {
            requires.extend(params.trainable_names().into_iter().map(String::from));
            if self.input_grads {
                requires.extend(feeds.iter().map(|(n, _)| n.to_string()));
            }
        }
        let mut entries = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(outs) = self.cache.get(&i) {
                for (name, t) in node.outputs.iter().zip(outs) {
                    if !name.is_empty() {
                        values.insert(name.clone(), t.clone());
                    }
                }
                continue;
            }
            let mut args: Vec<Option<Arc<Tensor>>> = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                if name.is_empty() {
                    args.push(None);
                    continue;
                }
                let v = values
                    .get(name)
                    .or_else(|| params.shared(name))
                    .or_else(|| self.consts.get(name))
                    .ok_or_else(|| TrainError::Node {
                        node: node.name.clone(),
                        op: node.op_type.clone(),
                        msg: format!(
                            "input '{name}' has no value (not produced, fed, a parameter or a constant)"
                        ),
                    })?;
                args.push(Some(v.clone()));
            }
            let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_deref()).collect();
            let cx = ForwardCtx {
                node,
                opset: self.opsets[i],
                mode,
                seed: mix(self.seed, step, i as u64),
                recording: record,
            };
            let op = &self.ops[i];
            let start = Instant::now();
            let fwd = op.forward(&cx, &refs)?;
            if let Some(p) = self.profile.as_mut() {
                p[i].0 += start.elapsed();
            }
            let named = node.outputs.iter().filter(|o| !o.is_empty()).count();
            if fwd.outputs.len() < named {
                return Err(TrainError::Node {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    msg: format!(
                        "produced {} outputs, the node names {}",
                        fwd.outputs.len(),
                        node.outputs.len()
                    ),
                });
            }
            for (idx, t) in fwd.updates {
                if let Some(name) = node.input(idx) {
                    if params.contains(name) {
                        params.set(name, t)?;
                    }
                }
            }
            let needs: Vec<bool> = node
                .inputs
                .iter()
                .map(|n| !n.is_empty() && requires.contains(n))
                .collect();
            let outputs: Vec<Arc<Tensor>> = fwd.outputs.into_iter().map(Arc::new).collect();
            if self.fixed[i] {
                self.cache.insert(i, outputs.clone());
            }
            if record && op.differentiable() && needs.iter().any(|&b| b) {
                for (name, t) in node.outputs.iter().zip(&outputs) {
                    if !name.is_empty() && t.dtype().is_float() {
                        requires.insert(name.clone());
                    }
                }
                entries.push(Entry {
                    node: i,
                    inputs: args,
                    outputs: outputs.clone(),
                    saved: fwd.saved,
                    needs,
                });
            }
            for (name, t) in node.outputs.iter().zip(outputs) {
                if !name.is_empty() {
                    values.insert(name.clone(), t);
                }
            }
            if !record {
                for dead in &self.free_after[i] {
                    values.remove(dead);
                }
            }
        }
        let mut out = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let v = values
                .get(name)
                .or_else(|| params.shared(name))
                .or_else(|| self.consts.get(name))
                .ok_or_else(|| TrainError::Input {
                    name: name.clone(),
                    msg: "graph output was never produced".into(),
                })?;
            out.push((**v).clone());
        }
        if record {
            self.tape = Some(Tape {
                mode,
                entries,
                requires,
                output_shapes: out.iter().map(|t| t.shape().to_vec()).collect(),
            });
        }
        Ok(out)
    }

    /// Backpropagates `output_grads` (one per graph output, each shaped like
    /// it) through the tape of the last recorded forward, which it consumes.
    /// Returns a gradient for every trainable parameter (zeros where the
    /// parameter did not reach the outputs), and for the fed inputs when
    /// [`Executor::set_input_grads`] is on.
    pub fn backward(&mut self, params: &ParamStore, output_grads: &[Tensor]) -> Result<Grads> {
        let tape = self.tape.take().ok_or_else(|| {
            TrainError::State(
                "backward needs a recorded forward (Mode::Train or forward_recorded) first; \
                 each tape is used once"
                    .into(),
            )
        })?;
        if output_grads.len() != self.outputs.len() {
            return Err(TrainError::State(format!(
                "backward got {} output gradients, the graph has {} outputs",
                output_grads.len(),
                self.outputs.len()
            )));
        }
        let mut grads: HashMap<String, Tensor> = HashMap::new();
        for ((name, g), shape) in self
            .outputs
            .iter()
            .zip(output_grads)
            .zip(&tape.output_shapes)
        {
            if g.shape() != shape.as_slice() || g.dtype() != DType::F32 {
                return Err(TrainError::Input {
                    name: name.clone(),
                    msg: format!(
                        "output gradient is {:?} {}, the output is {:?} f32",
                        g.shape(),
                        g.dtype(),
                        shape
                    ),
                });
            }
            if tape.requires.contains(name) {
                accumulate(&mut grads, name, g.clone())?;
            }
        }
        for e in tape.entries.iter().rev() {
            let node = &self.nodes[e.node];
            let gout: Vec<Option<Tensor>> = node
                .outputs
                .iter()
                .map(|o| grads.remove(o.as_str()))
                .collect();
            if gout.iter().all(Option::is_none) {
                continue;
            }
            let grefs: Vec<Option<&Tensor>> = gout.iter().map(Option::as_ref).collect();
            let irefs: Vec<Option<&Tensor>> = e.inputs.iter().map(|a| a.as_deref()).collect();
            let orefs: Vec<&Tensor> = e.outputs.iter().map(|a| &**a).collect();
            let cx = BackwardCtx {
                node,
                opset: self.opsets[e.node],
                mode: tape.mode,
                inputs: &irefs,
                outputs: &orefs,
                saved: e.saved.as_deref(),
                needs: &e.needs,
            };
            let start = Instant::now();
            let res = self.ops[e.node].backward(&cx, &grefs)?;
            if let Some(p) = self.profile.as_mut() {
                p[e.node].1 += start.elapsed();
            }
            for (j, g) in res.into_iter().enumerate() {
                let (Some(g), true) = (g, e.needs.get(j).copied().unwrap_or(false)) else {
                    continue;
                };
                let input = irefs[j].expect("an input that needs a gradient is present");
                if g.shape() != input.shape() {
                    return Err(TrainError::Node {
                        node: node.name.clone(),
                        op: node.op_type.clone(),
                        msg: format!(
                            "backward gave input #{j} a gradient of shape {:?}, the input is {:?}",
                            g.shape(),
                            input.shape()
                        ),
                    });
                }
                accumulate(&mut grads, &node.inputs[j], g)?;
            }
        }
        let mut out = IndexMap::new();
        for name in params.trainable_names() {
            let g = match grads.remove(name) {
                Some(g) => g,
                None => {
                    let p = params.get(name).expect("trainable names are stored");
                    Tensor::zeros(DType::F32, p.shape().to_vec())
                }
            };
            out.insert(name.to_string(), g);
        }
        if self.input_grads {
            for i in &self.inputs {
                if let Some(g) = grads.remove(&i.name) {
                    out.insert(i.name.clone(), g);
                }
            }
        }
        Ok(Grads { map: out })
    }
}

/// Adds `g` into the gradient of `name`.
fn accumulate(grads: &mut HashMap<String, Tensor>, name: &str, g: Tensor) -> Result<()> {
    match grads.get_mut(name) {
        None => {
            grads.insert(name.to_string(), g);
        }
        Some(acc) => {
            let src = g.as_slice::<f32>()?;
            let dst = acc.as_mut_slice::<f32>()?;
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    Ok(())
}

/// SplitMix64 of the seed, step and node index: independent streams per
/// (step, node).
fn mix(seed: u64, step: u64, node: u64) -> u64 {
    let mut z =
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ node.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rejects a fed tensor whose dtype or known dimensions disagree with the graph.
fn check_input(info: &ValueInfo, t: &Tensor) -> Result<()> {
    match info.mismatch(t) {
        Some(msg) => Err(TrainError::Input {
            name: info.name.clone(),
            msg,
        }),
        None => Ok(()),
    }
}
