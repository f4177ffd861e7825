use crate::lower::{self, QdqMode};

use crate::buffers::BufferPool;
use crate::ops::{OpContext, Prepared, Registry};
use crate::{Result, RuntimeError};
use shrink_graph::{node_uses, Attr, Graph};
use shrink_tensor::Tensor;
use std::collections::{HashMap, HashSet};
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

/// When each value can be dropped: `free_after[i]` lists the values whose last
/// reader is node `i` (graph outputs are never freed).
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
    liveness: Liveness,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Per top-level node: state its op prepared once (packed weights).
    prepared: Vec<Prepared>,
    /// Per top-level node name: the kernel label reported when the op sets
    /// none (float ops left inside a quantised region read "f32 fallback").
    /// Keyed by name because fusion renumbers the nodes it plans.
    labels: HashMap<String, &'static str>,

    /// Storage of dead f32 values, reused for later outputs (and runs).
    buffers: BufferPool,
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
        // Integer lowering of QDQ patterns, when the registry has its ops.
        let (graph, labels) = if options.qdq != QdqMode::Float && lower::available(&registry) {
            lower::lower(graph, options.qdq)?
        } else {
            let n = graph.nodes.len();
            (graph, vec![""; n])
        };
        let labels = graph
            .nodes
            .iter()
            .zip(labels)
            .filter(|(_, l)| !l.is_empty())
            .map(|(n, l)| (n.name.clone(), l))
            .collect();
        check_supported(&graph, &registry)?;
        let threads = if options.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            options.threads
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
        let liveness = Liveness::of(run);
        let prepared = (0..run.nodes.len()).map(|_| Prepared::new()).collect();
        Ok(Session {
            graph,
            plan,
            registry,
            liveness,
            pool,
            threads,
            prepared,
            labels,
            buffers: BufferPool::default(),
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

    /// Runs with inputs given in the order of the graph's inputs (initializers
    /// listed as inputs may be left out); returns outputs in graph order.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let names: Vec<String> = self
            .runtime_inputs()
            .iter()
            .map(|s| s.to_string())
            .collect();
        if inputs.len() > names.len() {
            return Err(RuntimeError::Input {
                name: "(inputs)".into(),
                msg: format!("graph takes {} inputs, {} given", names.len(), inputs.len()),
            });
        }
        self.run_named(names.into_iter().zip(inputs).collect())
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
        self.run_inner(inputs, None)
    }

    /// Like [`Session::run_named`], also timing every node.
    pub fn run_profiled(
        &self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<(Vec<Tensor>, Vec<NodeTiming>)> {
        let mut t = Vec::with_capacity(self.planned_graph().nodes.len());
        let out = self.run_inner(inputs, Some(&mut t))?;
        Ok((out, t))
    }

    fn run_inner(
        &self,
        inputs: Vec<(String, Tensor)>,
        timing: Option<&mut Vec<NodeTiming>>,
    ) -> Result<Vec<Tensor>> {
        let mut values = HashMap::new();
        for (name, t) in inputs {
            let info = self
                .graph
                .inputs
                .iter()
                .find(|i| i.name == name)
                .ok_or_else(|| RuntimeError::Input {
                    name: name.clone(),
                    msg: format!(
                        "the graph has no input of that name (inputs: {:?})",
                        self.runtime_inputs()
                    ),
                })?;
            check_input(info, &t)?;
            values.insert(name, t);
        }
        for name in self.runtime_inputs() {
            if !values.contains_key(name) {
                return Err(RuntimeError::Input {
                    name: name.to_string(),
                    msg: "required input was not given".into(),
                });
            }
        }
        let none = |_: &str| -> Option<&Tensor> { None };
        self.buffers.next_run();
        self.pool.install(|| {
            self.execute(
                self.planned_graph(),
                &self.liveness,
                values,
                &none,
                timing,
                Some(&self.prepared),
            )
        })
    }

    /// Runs the nodes of `g` over `values` (its inputs), resolving names first
    /// locally, then in `g`'s initializers, then through `outer`.
    fn execute<'o>(
        &self,
        g: &Graph,
        live: &Liveness,
        mut values: HashMap<String, Tensor>,
        outer: &'o dyn Fn(&str) -> Option<&'o Tensor>,
        mut timing: Option<&mut Vec<NodeTiming>>,
        prepared: Option<&[Prepared]>,
    ) -> Result<Vec<Tensor>> {
        for (i, node) in g.nodes.iter().enumerate() {
            let op = self
                .registry
                .get(&node.domain, &node.op_type)
                .ok_or_else(|| unsupported(g, node))?;
            let start = timing.as_ref().map(|_| Instant::now());
            let kernel = std::sync::OnceLock::new();
            // A single-output op with an in-place form may overwrite its first
            // input when that value dies here (not a graph output, not used
            // again, not read twice by this node). Only in the planned graph.
            let inplace = prepared.and(self.registry.get_inplace(&node.domain, &node.op_type));
            let mut donated: Option<Tensor> = None;
            if let (Some(_), Some(first)) = (inplace, node.inputs.first()) {
                let dies = live.free_after[i].iter().any(|f| f == first);
                let once = node.inputs.iter().filter(|n| *n == first).count() == 1;
                if !first.is_empty() && dies && once && node.outputs.len() == 1 {
                    donated = values.remove(first);
                }
            }
            let outputs = {
                let lookup = |name: &str| -> Option<&Tensor> {
                    values
                        .get(name)
                        .or_else(|| g.initializers.get(name))
                        .or_else(|| outer(name))
                };
                let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
                for (j, name) in node.inputs.iter().enumerate() {
                    if name.is_empty() || (j == 0 && donated.is_some()) {
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
                    self.execute(sg, &sl, sv, &lookup, None, None)
                };
                let is_const = |name: &str| g.initializers.contains_key(name);
                let ctx = OpContext {
                    node,
                    opset: domain_opset(g, &node.domain),
                    threads: self.threads,
                    subgraph: &sub,
                    prepared: prepared.and_then(|p| p.get(i)),
                    constants: &is_const,
                    kernel: &kernel,
                    buffers: prepared.and(Some(&self.buffers)),
                };
                let mut done = false;
                if let (Some(f), Some(t)) = (inplace, donated.as_mut()) {
                    done = f(&ctx, t, &args)?;
                }
                match donated.take() {
                    Some(t) if done => vec![t],
                    Some(t) => {
                        args[0] = Some(&t);
                        op(&ctx, &args)?
                    }
                    None => op(&ctx, &args)?,
                }
            };
            if let (Some(t), Some(s)) = (timing.as_deref_mut(), start) {
                t.push(NodeTiming {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    time: s.elapsed(),
                    kernel: match kernel.into_inner() {
                        Some(k) => k.into_owned(),
                        None if prepared.is_some() => self
                            .labels
                            .get(&node.name)
                            .copied()
                            .unwrap_or("")
                            .to_string(),
                        None => String::new(),
                    },
                });
            }
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
                match values.remove(dead) {
                    Some(t) if prepared.is_some() => self.buffers.recycle(t),
                    _ => {}
                }
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

fn domain_opset(g: &Graph, domain: &str) -> i64 {
    let d = if domain == "ai.onnx" { "" } else { domain };
    g.opsets.get(d).copied().unwrap_or_else(|| g.opset())
}

fn unsupported(g: &Graph, node: &shrink_graph::Node) -> RuntimeError {
    RuntimeError::Unsupported {
        node: node.name.clone(),
        op: node.op_type.clone(),
        domain: node.domain.clone(),
        opset: domain_opset(g, &node.domain),
    }
}

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
