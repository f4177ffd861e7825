//! Constant folding: evaluate ahead of time every node whose inputs are all
//! known, and replace it by initializers.
//!
//! Exporters (PyTorch's above all) emit shape arithmetic as graph nodes —
//! `Shape → Gather → Unsqueeze → Concat → Reshape` — and wrap constants in
//! `Constant` nodes. Left in place, these hide plain weights from the
//! compression passes and cost the runtime a dozen tiny ops per layer. Folding
//! runs the runtime's own op implementations ([`Registry::standard`]), so a
//! folded value is bit-identical to what the session would compute, and
//! `Shape` folds even on a runtime input whenever `value_info` (or the graph
//! input's declaration) gives its full static shape.
//!
//! Nodes are never folded when they carry subgraphs (`If`, `Loop`), are
//! random (their value differs per run), or would produce a tensor above
//! [`FoldOptions::max_elements`] (a `ConstantOfShape` that makes a 100 MB
//! buffer belongs to run time, not to the file).

use crate::ops::{OpContext, Registry};
use crate::{Result, RuntimeError};
use shrink_graph::{node_uses, Attr, Graph, Node};
use shrink_tensor::Tensor;
use std::collections::HashSet;

/// Ops whose output is not a function of their inputs. (Dropout is: in
/// training mode its op refuses to run, so folding leaves it in place.)
const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// Limits of [`fold_constants_with`].
#[derive(Debug, Clone)]
pub struct FoldOptions {
    /// A node is folded only if every output has at most this many elements.
    pub max_elements: usize,
    /// Whether an initializer that is also listed as a graph input counts as
    /// a constant. ONNX IR < 4 lists every initializer as an input and ONNX
    /// Runtime treats them as constants; from IR 4 on such an initializer is a
    /// default the caller may override. The IR keeps no IR version, so this
    /// is the caller's call; the default (true) suits the models that list
    /// weights as inputs, which are in practice all of the IR < 4 kind.
    /// Inputs that folding leaves unread are then dropped with their weights.
    pub initializer_inputs_are_constant: bool,
}

impl Default for FoldOptions {
    fn default() -> Self {
        // 1 Mi elements: every shape tensor and typical transposed weight, but
        // not the broadcast masks and zero buffers a model builds at run time.
        FoldOptions {
            max_elements: 1 << 20,
            initializer_inputs_are_constant: true,
        }
    }
}

/// One node replaced by initializers.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedNode {
    pub name: String,
    pub op: String,
    /// The initializers that replace its outputs.
    pub outputs: Vec<String>,
}

/// What [`fold_constants`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FoldReport {
    /// Folded nodes, in graph order.
    pub folded: Vec<FoldedNode>,
    /// Nodes with constant inputs left in place, with the reason
    /// (output over the size cap, or the op failed on these inputs — the
    /// session will report that failure when it runs the node).
    pub kept: Vec<(String, String)>,
    /// Initializers no node reads any more after folding, removed.
    pub removed_initializers: Vec<String>,
}

/// [`fold_constants_with`] under the default [`FoldOptions`].
pub fn fold_constants(g: &mut Graph) -> Result<FoldReport> {
    fold_constants_with(g, &FoldOptions::default())
}

/// Folds every foldable node of `g` (not of its subgraphs) in one pass in
/// topological order — a node whose inputs were just folded is itself
/// evaluated in the same pass — then drops initializers left unused.
pub fn fold_constants_with(g: &mut Graph, opts: &FoldOptions) -> Result<FoldReport> {
    g.sort_topologically()?;
    let registry = Registry::standard();
    // An initializer that is also a graph input is only a default the caller
    // may override: it is not a constant.
    let overridable: HashSet<String> = if opts.initializer_inputs_are_constant {
        HashSet::new()
    } else {
        g.inputs.iter().map(|i| i.name.clone()).collect()
    };
    let mut report = FoldReport::default();
    let nodes = std::mem::take(&mut g.nodes);
    let mut kept_nodes = Vec::with_capacity(nodes.len());
    for node in nodes {
        match try_fold(g, &node, &registry, &overridable, opts) {
            Ok(Some(outputs)) => {
                let mut names = Vec::new();
                for (name, t) in node.outputs.iter().zip(outputs) {
                    if !name.is_empty() {
                        g.initializers.insert(name.clone(), t);
                        names.push(name.clone());
                    }
                }
                report.folded.push(FoldedNode {
                    name: node.name.clone(),
                    op: node.op_type.clone(),
                    outputs: names,
                });
            }
            Ok(None) => kept_nodes.push(node),
            Err(reason) => {
                report.kept.push((node.name.clone(), reason));
                kept_nodes.push(node);
            }
        }
    }
    g.nodes = kept_nodes;
    report.removed_initializers =
        remove_unused_initializers(g, opts.initializer_inputs_are_constant);
    Ok(report)
}

/// `Ok(Some(outputs))` if `node` folds, `Ok(None)` if it is not constant,
/// `Err(reason)` if it is constant but stays (cap, op failure).
fn try_fold(
    g: &Graph,
    node: &Node,
    registry: &Registry,
    overridable: &HashSet<String>,
    opts: &FoldOptions,
) -> std::result::Result<Option<Vec<Tensor>>, String> {
    let has_subgraph = node
        .attrs
        .values()
        .any(|a| matches!(a, Attr::Graph(_) | Attr::Graphs(_)));
    if has_subgraph || NONDETERMINISTIC.contains(&node.op_type.as_str()) {
        return Ok(None);
    }
    let Some(op) = registry.get(&node.domain, &node.op_type) else {
        return Ok(None);
    };
    let constant = |name: &str| -> Option<&Tensor> {
        if overridable.contains(name) {
            None
        } else {
            g.initializers.get(name)
        }
    };
    let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
    let opset = {
        let d = if default_domain { "" } else { &node.domain };
        g.opsets.get(d).copied().unwrap_or_else(|| g.opset())
    };
    let no_subgraphs = |_: &Graph, _: &[Tensor]| -> Result<Vec<Tensor>> {
        Err(RuntimeError::Input {
            name: node.name.clone(),
            msg: "constant folding does not run subgraphs".into(),
        })
    };
    // Folding runs each node once, so there is nothing to prepare or cache.
    let not_cached = |_: &str| false;
    let ctx = OpContext {
        node,
        opset,
        threads: 1,
        subgraph: &no_subgraphs,
        prepared: None,
        constants: &not_cached,
        kernel: &std::sync::OnceLock::new(),

        buffers: None,
    };
    let outputs = if default_domain && node.op_type == "Shape" && node.input(0).is_some() {
        let x = node.inputs[0].as_str();
        match constant(x)
            .map(|t| t.shape().to_vec())
            .or_else(|| static_shape(g, x))
        {
            Some(dims) => vec![shape_of(&ctx, &dims).map_err(|e| e.to_string())?],
            None => return Ok(None),
        }
    } else if default_domain && node.op_type == "Size" && node.input(0).is_some() {
        let x = node.inputs[0].as_str();
        match constant(x)
            .map(|t| t.shape().to_vec())
            .or_else(|| static_shape(g, x))
        {
            Some(dims) => vec![Tensor::scalar(dims.iter().product::<usize>() as i64)],
            None => return Ok(None),
        }
    } else {
        let mut args = Vec::with_capacity(node.inputs.len());
        for name in &node.inputs {
            if name.is_empty() {
                args.push(None);
            } else {
                match constant(name) {
                    Some(t) => args.push(Some(t)),
                    None => return Ok(None),
                }
            }
        }
        op(&ctx, &args).map_err(|e| e.to_string())?
    };
    if let Some(big) = outputs.iter().find(|t| t.len() > opts.max_elements) {
        return Err(format!(
            "output of {} elements exceeds the folding cap of {}",
            big.len(),
            opts.max_elements
        ));
    }
    Ok(Some(outputs))
}

/// The fully known shape of a runtime value, from `value_info` or the
/// declaration of a graph input.
fn static_shape(g: &Graph, name: &str) -> Option<Vec<usize>> {
    g.value_info
        .get(name)
        .and_then(|v| v.concrete_shape())
        .or_else(|| {
            g.inputs
                .iter()
                .find(|i| i.name == name)
                .and_then(|v| v.concrete_shape())
        })
}

/// `Shape`'s output for an input of shape `dims` (with opset-15 `start`/`end`).
fn shape_of(ctx: &OpContext, dims: &[usize]) -> Result<Tensor> {
    let r = dims.len() as i64;
    let attr = |k: &str, d: i64| {
        ctx.node
            .attr_int(k, d)
            .map_err(|e| ctx.error(e.to_string()))
    };
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (start, end) = (clamp(attr("start", 0)?), clamp(attr("end", r)?));
    let v: Vec<i64> = dims[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(Tensor::from_vec(vec![v.len()], v)?)
}

/// Drops initializers that no node (subgraph captures included) reads and
/// that are not graph outputs; returns their names. An initializer that is
/// also a graph input goes (with the input) only when `drop_inputs`.
fn remove_unused_initializers(g: &mut Graph, drop_inputs: bool) -> Vec<String> {
    let mut used: HashSet<String> = g.nodes.iter().flat_map(node_uses).collect();
    used.extend(g.outputs.iter().map(|o| o.name.clone()));
    if !drop_inputs {
        used.extend(g.inputs.iter().map(|i| i.name.clone()));
    }
    let dead: Vec<String> = g
        .initializers
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    for k in &dead {
        g.initializers.shift_remove(k);
    }
    g.inputs.retain(|i| !dead.contains(&i.name));
    dead
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Session, SessionOptions};
    use shrink_graph::{Dim, ValueInfo};
    use shrink_tensor::DType;

    fn i64s(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    /// `y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) * c`
    /// with `c` a Constant node: the PyTorch flatten-by-batch pattern.
    fn shape_subgraph(batch: Dim) -> Graph {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), 17);
        g.inputs.push(ValueInfo::new(
            "x",
            DType::F32,
            vec![batch, Dim::Known(3), Dim::Known(4)],
        ));
        g.outputs.push(ValueInfo::unknown("y"));
        g.initializers.insert("zero".into(), Tensor::scalar(0i64));
        g.initializers.insert("axes0".into(), i64s(&[0]));
        g.initializers.insert("minus1".into(), i64s(&[-1]));
        g.nodes = vec![
            Node::new("shape", "Shape", &["x"], &["s"]),
            Node::new("gather", "Gather", &["s", "zero"], &["b"]),
            Node::new("unsq", "Unsqueeze", &["b", "axes0"], &["b1"]),
            Node::new("concat", "Concat", &["b1", "minus1"], &["target"])
                .with("axis", Attr::Int(0)),
            Node::new("reshape", "Reshape", &["x", "target"], &["flat"]),
            Node::new("c", "Constant", &[], &["c"])
                .with("value", Attr::Tensor(Tensor::scalar(2.0f32))),
            Node::new("mul", "Mul", &["flat", "c"], &["y"]),
        ];
        g
    }

    fn run(g: &Graph, x: &Tensor) -> Vec<Tensor> {
        Session::new(
            g.clone(),
            SessionOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap()
        .run(vec![x.clone()])
        .unwrap()
    }

    #[test]
    fn shape_subgraph_collapses_and_outputs_are_unchanged() {
        let mut g = shape_subgraph(Dim::Known(2));
        let x = Tensor::from_vec(vec![2, 3, 4], (0..24).map(|v| v as f32 * 0.5).collect()).unwrap();
        let before = run(&g, &x);
        let report = fold_constants(&mut g).unwrap();
        let folded: Vec<&str> = report.folded.iter().map(|f| f.op.as_str()).collect();
        assert_eq!(
            folded,
            ["Shape", "Gather", "Unsqueeze", "Concat", "Constant"]
        );
        let left: Vec<&str> = g.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(left, ["Reshape", "Mul"]);
        assert_eq!(g.initializers["target"], i64s(&[2, -1]));
        // The inputs of the folded chain are gone; only what is still read stays.
        let mut inits: Vec<&str> = g.initializers.keys().map(String::as_str).collect();
        inits.sort();
        assert_eq!(inits, ["c", "target"]);
        assert_eq!(run(&g, &x), before);
        assert_eq!(before[0].shape(), &[2, 12]);
    }

    #[test]
    fn symbolic_dims_keep_the_shape_chain() {
        let mut g = shape_subgraph(Dim::Symbol("batch".into()));
        let report = fold_constants(&mut g).unwrap();
        let folded: Vec<&str> = report.folded.iter().map(|f| f.op.as_str()).collect();
        assert_eq!(folded, ["Constant"]);
        assert_eq!(g.nodes.len(), 6);
        // value_info from shape inference makes it foldable again.
        let mut g = shape_subgraph(Dim::Symbol("batch".into()));
        g.value_info.insert(
            "x".into(),
            ValueInfo::new(
                "x",
                DType::F32,
                vec![Dim::Known(5), Dim::Known(3), Dim::Known(4)],
            ),
        );
        fold_constants(&mut g).unwrap();
        assert_eq!(g.initializers["target"], i64s(&[5, -1]));
    }

    #[test]
    fn size_cap_and_overridable_initializers_are_respected() {
        let mut g = Graph::default();
        g.outputs.push(ValueInfo::unknown("big"));
        g.outputs.push(ValueInfo::unknown("w2"));
        g.initializers.insert("shape".into(), i64s(&[1000, 1000]));
        g.initializers.insert(
            "w".into(),
            Tensor::from_vec(vec![2], vec![1f32, 2.]).unwrap(),
        );
        // `w` is also a graph input: a caller may feed another value.
        g.inputs
            .push(ValueInfo::new("w", DType::F32, vec![Dim::Known(2)]));
        g.nodes = vec![
            Node::new("cos", "ConstantOfShape", &["shape"], &["big"]),
            Node::new("dbl", "Add", &["w", "w"], &["w2"]),
        ];
        let opts = FoldOptions {
            max_elements: 1000,
            initializer_inputs_are_constant: false,
        };
        let report = fold_constants_with(&mut g, &opts).unwrap();
        assert!(report.folded.is_empty());
        assert_eq!(report.kept.len(), 1);
        assert!(report.kept[0].1.contains("cap"), "{:?}", report.kept);
        assert_eq!(g.nodes.len(), 2);
        let opts = FoldOptions {
            initializer_inputs_are_constant: false,
            ..FoldOptions::default()
        };
        let report = fold_constants_with(&mut g, &opts).unwrap();
        assert_eq!(report.folded.len(), 1);
        assert_eq!(g.initializers["big"].len(), 1_000_000);
        // By default (ONNX IR < 4 reading) `w` is a weight: `w2` folds and the
        // now unread `w` leaves both the initializers and the inputs.
        let report = fold_constants(&mut g).unwrap();
        assert_eq!(report.folded[0].op, "Add");
        assert_eq!(g.initializers["w2"].as_slice::<f32>().unwrap(), &[2.0, 4.0]);
        assert!(g.inputs.is_empty() && !g.initializers.contains_key("w"));
    }

    #[test]
    fn subgraph_nodes_and_failing_ops_stay() {
        let mut g = Graph::default();
        g.outputs.push(ValueInfo::unknown("y"));
        g.outputs.push(ValueInfo::unknown("z"));
        g.initializers.insert("c".into(), Tensor::scalar(true));
        g.initializers.insert("a".into(), i64s(&[1, 2]));
        g.initializers.insert("b".into(), i64s(&[1, 2, 3]));
        let mut branch = Graph::default();
        branch.outputs.push(ValueInfo::unknown("a"));
        g.nodes = vec![
            Node::new("if", "If", &["c"], &["y"])
                .with("then_branch", Attr::Graph(Box::new(branch.clone())))
                .with("else_branch", Attr::Graph(Box::new(branch))),
            Node::new("bad", "Add", &["a", "b"], &["z"]),
        ];
        let report = fold_constants(&mut g).unwrap();
        assert!(report.folded.is_empty());
        assert_eq!(report.kept[0].0, "bad");
        assert!(report.kept[0].1.contains("broadcast"), "{:?}", report.kept);
        // The If branch captures `a`; it must survive the unused-initializer sweep.
        assert!(g.initializers.contains_key("a"));
    }
}
