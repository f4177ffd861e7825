use crate::lower::{self, QdqMode};

use crate::buffers::BufferPool;
use crate::microbatch;
use crate::ops::{OpContext, Prepared, Registry};
use crate::plan::{domain_opset, unsupported, Plan, Src};
use crate::{Result, RuntimeError};
use shrink_graph::{node_uses, Attr, Graph, Node};
use shrink_tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How a [`Session`] runs.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Worker threads for kernels; 0 (the default) means one per core.
    pub threads: usize,
    /// How quantised (QDQ) patterns run: lowered to integer kernels (the
    /// default), lowered to the scalar reference of the same arithmetic, or
    /// left as the float QDQ graph.
    pub qdq: QdqMode,
}

/// When each value of a subgraph can be dropped: `free_after[i]` lists the
/// values whose last reader is node `i` (graph outputs are never freed). The
/// top-level graph uses the slot form of the same plan ([`Plan`]).
#[derive(Debug, Clone, Default)]
struct Liveness {
    free_after: Vec<Vec<String>>,
}

impl Liveness {
    fn of(g: &Graph) -> Liveness {
        let keep: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for u in node_uses(n) {
                last.insert(u, i);
            }
            // An output nobody reads dies right away.
            for o in &n.outputs {
                last.entry(o.clone()).or_insert(i);
            }
        }
        let mut free_after = vec![Vec::new(); g.nodes.len()];
        for (name, i) in last {
            if !keep.contains(name.as_str()) && !g.initializers.contains_key(&name) {
                free_after[i].push(name);
            }
        }
        Liveness { free_after }
    }
}

/// Per-node wall time of one run, in node order.
#[derive(Debug, Clone)]
pub struct NodeTiming {
    pub node: String,
    pub op: String,
    pub time: Duration,
    /// Which kernel ran (e.g. "int8-vnni conv 1x1", "f32 fallback"); empty
    /// when the op does not say.
    pub kernel: String,
}

/// A graph ready to run: ops resolved, liveness planned, thread pool built.
pub struct Session {
    /// The graph as given (what [`Session::graph`] shows).
    graph: Graph,
    /// The graph as run, when fusion rewrote it (see `crate::fuse`).
    plan: Option<Graph>,
    registry: Registry,
    /// The run graph in index form: slots, steps, liveness, labels.
    plan_steps: Plan,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Per top-level node: state its op prepared once (packed weights).
    prepared: Vec<Prepared>,

    /// Storage of dead f32 values, reused for later outputs (and runs).
    buffers: BufferPool,
    /// Slots of the batched inputs when the planned graph is
    /// batch-separable, and the images per slice and thread: large batches
    /// then run in slices (see `crate::microbatch`).
    micro: Option<(Vec<usize>, usize)>,
    /// A one-thread pool for runs too small to split (see
    /// [`SERIAL_LAYER_MACS`]), when the session has several threads.
    serial: Option<rayon::ThreadPool>,
    /// Mean multiply-accumulates per image of the layers that have any.
    layer_macs: Option<f64>,
}

/// Runs whose layers average fewer multiply-accumulates than this (over the
/// batch) run on one thread. Splitting a layer of a few µs over threads
/// costs more than it saves: the idle thread must be woken, the layer waits
/// for its slower half, and the next layer reads half its input from the
/// other core's cache. MobileNetV2-tiny int8 at batch 1 (≈ 240k MACs per
/// layer) ran at 10.6k images/s on 1 thread and 9.3k on 2.
pub const SERIAL_LAYER_MACS: f64 = 1.0e6;

/// Mean MACs per image over the layers that multiply (Conv, Gemm, MatMul
/// and their quantised forms), or `None` when unknown.
fn mean_layer_macs(g: &Graph) -> Option<f64> {
    let layers = shrink_graph::analysis::layer_stats(g);
    let macs: Vec<u64> = layers
        .iter()
        .map(|l| l.macs)
        .collect::<Option<Vec<u64>>>()?
        .into_iter()
        .filter(|&m| m > 0)
        .collect();
    (!macs.is_empty()).then(|| macs.iter().sum::<u64>() as f64 / macs.len() as f64)
}

impl Session {
    /// Checks that every node (subgraphs included) has an implementation and
    /// plans buffer lifetimes. Fails naming the first unsupported node.
    pub fn new(graph: Graph, options: SessionOptions) -> Result<Session> {
        Session::with_registry(graph, options, Registry::standard())
    }

    pub fn with_registry(
        graph: Graph,
        options: SessionOptions,
        registry: Registry,
    ) -> Result<Session> {
        let threads = if options.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            options.threads
        };
        // Per-image work, counted on the graph as given (lowered and fused
        // ops are not counted by the analysis), only when there is a choice
        // of thread count to make.
        let layer_macs = (threads > 1).then(|| mean_layer_macs(&graph)).flatten();
        // Integer lowering of QDQ patterns, when the registry has its ops.
        let (graph, labels) = if options.qdq != QdqMode::Float && lower::available(&registry) {
            lower::lower(graph, options.qdq)?
        } else {
            let n = graph.nodes.len();
            (graph, vec![""; n])
        };
        let (graph, labels) = lower::channels_last(graph, labels, options.qdq, &registry);
        let (graph, labels) = lower::fold_input_quantize(graph, labels);
        // Kernel labels reported when an op sets none (float ops left inside
        // a quantised region read "f32 fallback"), keyed by node name
        // because fusion renumbers the nodes it plans.
        let labels: HashMap<String, &'static str> = graph
            .nodes
            .iter()
            .zip(labels)
            .filter(|(_, l)| !l.is_empty())
            .map(|(n, l)| (n.name.clone(), l))
            .collect();
        check_supported(&graph, &registry)?;
        let serial = match layer_macs {
            Some(_) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .map_err(|e| RuntimeError::Input {
                        name: "threads".into(),
                        msg: e.to_string(),
                    })?,
            ),
            None => None,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| RuntimeError::Input {
                name: "threads".into(),
                msg: e.to_string(),
            })?;
        let plan = crate::fuse::fused(&graph, &registry);
        let run = plan.as_ref().unwrap_or(&graph);
        let label = |n: &Node| labels.get(&n.name).copied().unwrap_or("");
        let plan_steps = Plan::new(run, &registry, &label)?;
        let prepared = (0..run.nodes.len()).map(|_| Prepared::new()).collect();
        let micro = microbatch::chunk_per_thread(run).and_then(|chunk| {
            let b = microbatch::batched_inputs(run)?;
            let slots = b
                .iter()
                .enumerate()
                .filter(|(_, &b)| b)
                .map(|(k, _)| plan_steps.inputs[k])
                .collect();
            Some((slots, chunk))
        });
        Ok(Session {
            graph,
            plan,
            registry,
            plan_steps,
            pool,
            threads,
            prepared,
            buffers: BufferPool::default(),
            micro,
            serial,
            layer_macs,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph as executed: [`Session::graph`] after fusion (Conv/Gemm
    /// with their Relu/Clip as one `FusedConv`/`FusedGemm` node, BatchNorm
    /// folded into the Conv before it). Profiles name these nodes.
    pub fn planned_graph(&self) -> &Graph {
        self.plan.as_ref().unwrap_or(&self.graph)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether batches larger than a slice run in slices (the planned graph
    /// is batch-separable, see `crate::microbatch`).
    pub fn micro_batched(&self) -> bool {
        self.micro.is_some()
    }

    /// Runs with inputs given in the order of the graph's inputs (initializers
    /// listed as inputs may be left out); returns outputs in graph order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let p = &self.plan_steps;
        if inputs.len() > p.required.len() {
            return Err(RuntimeError::Input {
                name: "(inputs)".into(),
                msg: format!(
                    "graph takes {} inputs, {} given",
                    p.required.len(),
                    inputs.len()
                ),
            });
        }
        let mut slots = self.empty_slots();
        for (&k, t) in p.required.iter().zip(inputs) {
            check_input(&self.planned_graph().inputs[k], &t)?;
            slots[p.inputs[k]] = Some(t);
        }
        self.check_required(&slots)?;
        self.run_slots(slots, None)
    }

    /// Runs `f` on this session's thread pool, the calling thread waiting.
    ///
    /// Every run hands its work to the session's pool (so that kernels see
    /// exactly [`SessionOptions::threads`] rayon threads) and waits for it to
    /// come back; a caller outside the pool pays two thread wake-ups per run.
    /// On a small model at batch 1 that round trip costs as much as the
    /// arithmetic (LeNet-5: ≈ 13 µs of ≈ 30 µs per run, measured on the
    /// shared 2-core build machine). Runs made inside `f` are already on the
    /// pool and skip it, so a loop of many inferences (a benchmark, an
    /// evaluation) belongs in here.
    pub fn in_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        // Small runs go to the one-thread pool, so a loop runs there and
        // they run inline; large runs hand over to the full pool from it.
        match &self.serial {
            Some(one) => one.install(f),
            None => self.pool.install(f),
        }
    }

    /// Graph inputs that are not initializers: what a caller must feed.
    pub fn runtime_inputs(&self) -> Vec<&str> {
        self.graph
            .inputs
            .iter()
            .filter(|i| !self.graph.initializers.contains_key(&i.name))
            .map(|i| i.name.as_str())
            .collect()
    }

    /// Runs with named inputs; returns outputs in graph order.
    pub fn run_named(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<Tensor>> {
        let slots = self.fed_slots(inputs)?;
        self.run_slots(slots, None)
    }

    /// Like [`Session::run_named`], also timing every node.
    pub fn run_profiled(
        &self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<(Vec<Tensor>, Vec<NodeTiming>)> {
        let mut t = Vec::with_capacity(self.planned_graph().nodes.len());
        let slots = self.fed_slots(inputs)?;
        let out = self.run_slots(slots, Some(&mut t))?;
        Ok((out, t))
    }

    fn empty_slots(&self) -> Vec<Option<Tensor>> {
        let mut v = Vec::new();
        v.resize_with(self.plan_steps.names.len(), || None);
        v
    }

    /// Checks named inputs against the graph and places them in their slots.
    fn fed_slots(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<Option<Tensor>>> {
        let g = self.planned_graph();
        let p = &self.plan_steps;
        let mut slots = self.empty_slots();
        for (name, t) in inputs {
            let k = g
                .inputs
                .iter()
                .position(|i| i.name == name)
                .ok_or_else(|| RuntimeError::Input {
                    name: name.clone(),
                    msg: format!(
                        "the graph has no input of that name (inputs: {:?})",
                        self.runtime_inputs()
                    ),
                })?;
            check_input(&g.inputs[k], &t)?;
            slots[p.inputs[k]] = Some(t);
        }
        self.check_required(&slots)?;
        Ok(slots)
    }

    /// Fails naming the first input a caller must feed that has no value.
    fn check_required(&self, slots: &[Option<Tensor>]) -> Result<()> {
        let p = &self.plan_steps;
        match p.required.iter().find(|&&k| slots[p.inputs[k]].is_none()) {
            Some(&k) => Err(RuntimeError::Input {
                name: self.planned_graph().inputs[k].name.clone(),
                msg: "required input was not given".into(),
            }),
            None => Ok(()),
        }
    }

    fn run_slots(
        &self,
        slots: Vec<Option<Tensor>>,
        timing: Option<&mut Vec<NodeTiming>>,
    ) -> Result<Vec<Tensor>> {
        if let Some((batched, per_thread)) = &self.micro {
            // Untimed runs on several threads give each thread whole slices
            // (see `run_sliced`); otherwise a slice is spread over them all.
            let chunk = if timing.is_none() && self.threads > 1 {
                *per_thread
            } else {
                per_thread * self.threads
            };
            match microbatch::batch_of(&slots, batched) {
                Some(n) if n > chunk => {
                    return self
                        .pool
                        .install(|| self.run_sliced(slots, batched, n, chunk, timing))
                }
                _ => {}
            }
        }
        self.buffers.next_run();
        match self.serial.as_ref().filter(|_| self.small(&slots)) {
            Some(one) => one.install(|| self.execute_plan(slots, timing)),
            None => self.pool.install(|| self.execute_plan(slots, timing)),
        }
    }

    /// Whether a run of these inputs is too small to split over threads:
    /// the batch (the first dimension of the first fed input whose graph
    /// shape starts with a symbol, else 1) times the mean layer's MACs is
    /// below [`SERIAL_LAYER_MACS`].
    fn small(&self, slots: &[Option<Tensor>]) -> bool {
        let Some(macs) = self.layer_macs else {
            return false;
        };
        let g = self.planned_graph();
        let p = &self.plan_steps;
        let batch = p
            .required
            .iter()
            .find_map(|&k| {
                let symbolic = matches!(
                    g.inputs[k].shape.as_ref().and_then(|s| s.first()),
                    Some(shrink_graph::Dim::Symbol(_))
                );
                let t = slots[p.inputs[k]].as_ref()?;
                symbolic.then(|| t.shape().first().copied()).flatten()
            })
            .unwrap_or(1);
        macs * (batch as f64) < SERIAL_LAYER_MACS
    }

    /// A batch of `n` images run `chunk` at a time, the outputs joined;
    /// node timings are summed over the slices.
    ///
    /// Untimed runs on several threads run the slices in parallel, one
    /// slice per thread at a time: the layers of a slice then need no
    /// hand-off between threads (a layer split across threads waits for its
    /// slowest part before the next starts, and small kernels such as the
    /// int8 stem conv or the residual adds ran on one thread while the
    /// other idled: MobileNetV2-tiny int8 at batch 256 went from 13.7k
    /// images/s on 1 thread to only 14.6k on 2). Each slice's rows are the
    /// same as in a sequential run (integer kernels bit for bit). Profiled
    /// runs stay sequential so that node times add up to the wall time.
    fn run_sliced(
        &self,
        slots: Vec<Option<Tensor>>,
        batched: &[usize],
        n: usize,
        chunk: usize,
        mut timing: Option<&mut Vec<NodeTiming>>,
    ) -> Result<Vec<Tensor>> {
        let part_of = |lo: usize, hi: usize| -> Result<Vec<Option<Tensor>>> {
            let mut part = self.empty_slots();
            for (s, (dst, src)) in part.iter_mut().zip(&slots).enumerate() {
                if let Some(t) = src {
                    *dst = Some(if batched.contains(&s) {
                        microbatch::slice(t, lo, hi)?
                    } else {
                        t.clone()
                    });
                }
            }
            Ok(part)
        };
        if timing.is_none() && self.threads > 1 {
            use rayon::prelude::*;
            self.buffers.next_run();
            let parts = (0..n.div_ceil(chunk))
                .into_par_iter()
                .map(|c| {
                    let (lo, hi) = (c * chunk, ((c + 1) * chunk).min(n));
                    self.execute_plan(part_of(lo, hi)?, None)
                })
                .collect::<Result<Vec<_>>>()?;
            return microbatch::concat(parts);
        }
        let mut parts = Vec::with_capacity(n.div_ceil(chunk));
        let mut lo = 0;
        while lo < n {
            let hi = (lo + chunk).min(n);
            let part = part_of(lo, hi)?;
            self.buffers.next_run();
            match timing.as_deref_mut() {
                Some(total) if lo > 0 => {
                    let mut t = Vec::with_capacity(total.len());
                    parts.push(self.execute_plan(part, Some(&mut t))?);
                    for (a, b) in total.iter_mut().zip(t) {
                        a.time += b.time;
                    }
                }
                t => parts.push(self.execute_plan(part, t)?),
            }
            lo = hi;
        }
        microbatch::concat(parts)
    }

    /// The run loop of the top-level graph over its [`Plan`]: no name is
    /// hashed, nothing is allocated but the ops' outputs (and their argument
    /// list when a node has more than [`INLINE_ARGS`] inputs), and the clock
    /// is read only when profiling.
    fn execute_plan(
        &self,
        mut slots: Vec<Option<Tensor>>,
        mut timing: Option<&mut Vec<NodeTiming>>,
    ) -> Result<Vec<Tensor>> {
        let g = self.planned_graph();
        let p = &self.plan_steps;
        let constant = |c: usize| -> Result<&Tensor> {
            g.initializers
                .get_index(c)
                .map(|(_, t)| t)
                .ok_or_else(|| RuntimeError::Input {
                    name: format!("(initializer #{c})"),
                    msg: "planned initializer is missing".into(),
                })
        };
        let is_const = |name: &str| g.initializers.contains_key(name);
        for (i, (step, node)) in p.steps.iter().zip(&g.nodes).enumerate() {
            let start = timing.as_ref().map(|_| Instant::now());
            let kernel = OnceLock::new();
            let mut donated: Option<Tensor> = match (step.inplace, step.args.first()) {
                (Some(_), Some(&Src::Slot(s))) => slots[s].take(),
                _ => None,
            };
            let outputs = {
                let values = &slots;
                let mut inline: [Option<&Tensor>; INLINE_ARGS] = [None; INLINE_ARGS];
                let mut spilled: Vec<Option<&Tensor>>;
                let n = step.args.len();
                let args: &mut [Option<&Tensor>] = if n <= INLINE_ARGS {
                    &mut inline[..n]
                } else {
                    spilled = vec![None; n];
                    &mut spilled
                };
                for (j, (&src, a)) in step.args.iter().zip(args.iter_mut()).enumerate() {
                    *a = match src {
                        Src::Absent => None,
                        Src::Slot(_) if j == 0 && donated.is_some() => None,
                        Src::Slot(s) => Some(values[s].as_ref().ok_or_else(|| {
                            RuntimeError::Node {
                                node: node.name.clone(),
                                op: node.op_type.clone(),
                                msg: format!(
                                    "input '{}' has no value (not produced, fed, or an initializer)",
                                    p.names[s]
                                ),
                            }
                        })?),
                        Src::Const(c) => Some(constant(c)?),
                        Src::SlotOr(s, c) => match values[s].as_ref() {
                            Some(t) => Some(t),
                            None => Some(constant(c)?),
                        },
                    };
                }
                // Names a subgraph reads from this scope.
                let outer = |name: &str| -> Option<&Tensor> {
                    p.slot_of
                        .get(name)
                        .and_then(|&s| values[s].as_ref())
                        .or_else(|| g.initializers.get(name))
                };
                let sub = |sg: &Graph, inputs: &[Tensor]| -> Result<Vec<Tensor>> {
                    let mut sv = HashMap::new();
                    for (info, t) in sg.inputs.iter().zip(inputs) {
                        sv.insert(info.name.clone(), t.clone());
                    }
                    let sl = Liveness::of(sg);
                    self.execute(sg, &sl, sv, &outer)
                };
                let ctx = OpContext {
                    node,
                    opset: step.opset,
                    // The pool running this node: 1 for a small run on
                    // the one-thread pool (see `Session::small`).
                    threads: rayon::current_num_threads(),
                    subgraph: &sub,
                    prepared: self.prepared.get(i),
                    constants: &is_const,
                    kernel: &kernel,
                    buffers: Some(&self.buffers),
                };
                let mut done = false;
                if let (Some(f), Some(t)) = (step.inplace, donated.as_mut()) {
                    done = f(&ctx, t, args)?;
                }
                match donated.take() {
                    Some(t) if done => vec![t],
                    Some(t) => {
                        args[0] = Some(&t);
                        let out = (step.op)(&ctx, args);
                        // The donated value is dead either way.
                        self.buffers.recycle(t);
                        out?
                    }
                    None => (step.op)(&ctx, args)?,
                }
            };
            if let (Some(t), Some(s)) = (timing.as_deref_mut(), start) {
                t.push(NodeTiming {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    time: s.elapsed(),
                    kernel: match kernel.into_inner() {
                        Some(k) => k.into_owned(),
                        None => step.label.to_string(),
                    },
                });
            }
            if outputs.len() < step.outs.iter().filter(|o| o.is_some()).count() {
                return Err(RuntimeError::Node {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    msg: format!(
                        "produced {} outputs, the node names {}",
                        outputs.len(),
                        node.outputs.len()
                    ),
                });
            }
            for (o, t) in step.outs.iter().zip(outputs) {
                if let Some(s) = *o {
                    slots[s] = Some(t);
                }
            }
            for &s in &step.free {
                if let Some(t) = slots[s].take() {
                    self.buffers.recycle(t);
                }
            }
        }
        p.outputs
            .iter()
            .zip(&g.outputs)
            .map(|(&(src, last), o)| {
                let v = match src {
                    Src::Slot(s) if last => slots[s].take(),
                    Src::Slot(s) => slots[s].clone(),
                    Src::Const(c) => Some(constant(c)?.clone()),
                    Src::SlotOr(s, c) => match slots[s].as_ref() {
                        Some(t) => Some(t.clone()),
                        None => Some(constant(c)?.clone()),
                    },
                    Src::Absent => None,
                };
                v.ok_or_else(|| RuntimeError::Input {
                    name: o.name.clone(),
                    msg: "graph output was never produced".into(),
                })
            })
            .collect()
    }

    /// Runs the nodes of a subgraph `g` over `values` (its inputs),
    /// resolving names first locally, then in `g`'s initializers, then
    /// through `outer`. Subgraphs run by name: nothing is prepared, pooled
    /// or done in place.
    fn execute<'o>(
        &self,
        g: &Graph,
        live: &Liveness,
        mut values: HashMap<String, Tensor>,
        outer: &'o dyn Fn(&str) -> Option<&'o Tensor>,
    ) -> Result<Vec<Tensor>> {
        for (i, node) in g.nodes.iter().enumerate() {
            let op = self
                .registry
                .get(&node.domain, &node.op_type)
                .ok_or_else(|| unsupported(g, node))?;
            let kernel = OnceLock::new();
            let outputs = {
                let lookup = |name: &str| -> Option<&Tensor> {
                    values
                        .get(name)
                        .or_else(|| g.initializers.get(name))
                        .or_else(|| outer(name))
                };
                let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
                for name in &node.inputs {
                    if name.is_empty() {
                        args.push(None);
                    } else {
                        args.push(Some(lookup(name).ok_or_else(|| RuntimeError::Node {
                            node: node.name.clone(),
                            op: node.op_type.clone(),
                            msg: format!("input '{name}' has no value (not produced, fed, or an initializer)"),
                        })?));
                    }
                }
                let sub = |sg: &Graph, inputs: &[Tensor]| -> Result<Vec<Tensor>> {
                    let mut sv = HashMap::new();
                    for (info, t) in sg.inputs.iter().zip(inputs) {
                        sv.insert(info.name.clone(), t.clone());
                    }
                    let sl = Liveness::of(sg);
                    self.execute(sg, &sl, sv, &lookup)
                };
                let is_const = |name: &str| g.initializers.contains_key(name);
                let ctx = OpContext {
                    node,
                    opset: domain_opset(g, &node.domain),
                    // The pool running this node: 1 for a small run on
                    // the one-thread pool (see `Session::small`).
                    threads: rayon::current_num_threads(),
                    subgraph: &sub,
                    prepared: None,
                    constants: &is_const,
                    kernel: &kernel,
                    buffers: None,
                };
                op(&ctx, &args)?
            };
            if outputs.len() < node.outputs.iter().filter(|o| !o.is_empty()).count() {
                return Err(RuntimeError::Node {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    msg: format!(
                        "produced {} outputs, the node names {}",
                        outputs.len(),
                        node.outputs.len()
                    ),
                });
            }
            for (name, t) in node.outputs.iter().zip(outputs) {
                if !name.is_empty() {
                    values.insert(name.clone(), t);
                }
            }
            for dead in &live.free_after[i] {
                values.remove(dead);
            }
        }
        g.outputs
            .iter()
            .map(|o| {
                values
                    .remove(&o.name)
                    .or_else(|| g.initializers.get(&o.name).cloned())
                    .or_else(|| outer(&o.name).cloned())
                    .ok_or_else(|| RuntimeError::Input {
                        name: o.name.clone(),
                        msg: "graph output was never produced".into(),
                    })
            })
            .collect()
    }
}

/// Node inputs passed on the stack; nodes with more spill to a `Vec`.
const INLINE_ARGS: usize = 8;

fn check_supported(g: &Graph, registry: &Registry) -> Result<()> {
    for node in &g.nodes {
        if registry.get(&node.domain, &node.op_type).is_none() {
            return Err(unsupported(g, node));
        }
        for a in node.attrs.values() {
            match a {
                Attr::Graph(sg) => check_supported(sg, registry)?,
                Attr::Graphs(gs) => gs.iter().try_for_each(|sg| check_supported(sg, registry))?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Rejects an input whose dtype or known dimensions disagree with the graph.
fn check_input(info: &shrink_graph::ValueInfo, t: &Tensor) -> Result<()> {
    match info.mismatch(t) {
        Some(msg) => Err(RuntimeError::Input {
            name: info.name.clone(),
            msg,
        }),
        None => Ok(()),
    }
}
