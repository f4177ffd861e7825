//! A session's run plan: the graph compiled once into index form.
//!
//! Interpreting the graph by name costs, per node and per run, a registry
//! lookup (a formatted key and a hash), a hash of every input name, a
//! `String` clone per output stored, and a search of the liveness list.
//! On a small model at batch 1 (LeNet-5: 8 nodes, 20 µs of kernels) that
//! bookkeeping was as large as the arithmetic. So at session build every
//! value name gets a slot number, and every node becomes a [`Step`]: its op
//! function resolved, where each input comes from ([`Src`]), which slots
//! its outputs fill, which slots die after it, whether its first input may
//! be overwritten in place. A run then only indexes a `Vec<Option<Tensor>>`.
//!
//! Names are kept (slot → name) for error messages and for subgraphs, which
//! still run by name (If/Loop bodies are rare and small).

use crate::ops::{InplaceFn, OpFn, Registry};
use crate::{Result, RuntimeError};
use shrink_graph::{node_uses, Graph, Node};
use std::collections::{HashMap, HashSet};

/// Where a node input or a graph output comes from during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    /// An omitted optional input (empty name).
    Absent,
    /// A value fed or computed during the run.
    Slot(usize),
    /// An initializer of the run graph: its index in `Graph::initializers`.
    Const(usize),
    /// An initializer that is also a graph input (old PyTorch exports) or a
    /// node output: the slot's value when it has one, else the initializer.
    SlotOr(usize, usize),
}

/// One node of the plan.
pub(crate) struct Step {
    pub op: OpFn,
    /// The op's in-place form, present only when the node's first input may
    /// be donated: it is a run value (not a constant) that dies here, the
    /// node reads it once and has one output.
    pub inplace: Option<InplaceFn>,
    /// Opset of the node's domain.
    pub opset: i64,
    pub args: Vec<Src>,
    /// Slot of each output; `None` for an omitted (empty-named) output.
    pub outs: Vec<Option<usize>>,
    /// Slots whose last reader is this node (never graph outputs).
    pub free: Vec<usize>,
    /// Kernel label reported when the op sets none.
    pub label: &'static str,
}

/// The compiled graph (see the module doc).
pub(crate) struct Plan {
    pub steps: Vec<Step>,
    /// Value name → slot, for feeding inputs and for subgraphs' outer scope.
    pub slot_of: HashMap<String, usize>,
    /// Slot → value name, for errors.
    pub names: Vec<String>,
    /// Slot of each graph input, in graph order.
    pub inputs: Vec<usize>,
    /// Graph inputs a caller must feed (not initializers), as input indices.
    pub required: Vec<usize>,
    /// Each graph output: where it is, and whether this is its last listing
    /// (then the value is moved out, else cloned).
    pub outputs: Vec<(Src, bool)>,
}

impl Plan {
    /// Compiles `g`; `label` gives a node's default kernel label. Every op
    /// must be registered (the session checked it; an error otherwise).
    pub fn new(
        g: &Graph,
        registry: &Registry,
        label: &dyn Fn(&Node) -> &'static str,
    ) -> Result<Plan> {
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut slot = |name: &str, slot_of: &mut HashMap<String, usize>| -> usize {
            if let Some(&s) = slot_of.get(name) {
                return s;
            }
            let s = names.len();
            names.push(name.to_string());
            slot_of.insert(name.to_string(), s);
            s
        };
        let inputs: Vec<usize> = g
            .inputs
            .iter()
            .map(|i| slot(&i.name, &mut slot_of))
            .collect();
        for n in &g.nodes {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                slot(o, &mut slot_of);
            }
        }
        // Names read but never fed, produced or constant still get a slot:
        // the run reports them, naming the node, when it gets there.
        for n in &g.nodes {
            for u in n.inputs.iter().filter(|u| !u.is_empty()) {
                if !g.initializers.contains_key(u) {
                    slot(u, &mut slot_of);
                }
            }
        }
        let src = |name: &str| -> Src {
            if name.is_empty() {
                return Src::Absent;
            }
            let c = g.initializers.get_index_of(name);
            match (slot_of.get(name), c) {
                (Some(&s), Some(c)) => Src::SlotOr(s, c),
                (Some(&s), None) => Src::Slot(s),
                (None, Some(c)) => Src::Const(c),
                // Not reachable: every non-constant input got a slot above.
                (None, None) => Src::Absent,
            }
        };

        // Liveness: the last node that reads (or, for an unread output,
        // writes) each slot frees it; graph outputs live to the end.
        let keep: HashSet<usize> = g
            .outputs
            .iter()
            .filter_map(|o| slot_of.get(&o.name).copied())
            .collect();
        let mut last: Vec<Option<usize>> = vec![None; names.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for u in node_uses(n) {
                if let Some(&s) = slot_of.get(&u) {
                    last[s] = Some(i);
                }
            }
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                let s = slot_of[o.as_str()];
                last[s].get_or_insert(i);
            }
        }
        let mut free = vec![Vec::new(); g.nodes.len()];
        for (s, l) in last.iter().enumerate() {
            if let Some(i) = *l {
                if !keep.contains(&s) {
                    free[i].push(s);
                }
            }
        }

        let mut steps = Vec::with_capacity(g.nodes.len());
        for (n, free) in g.nodes.iter().zip(free) {
            let op = registry
                .get(&n.domain, &n.op_type)
                .ok_or_else(|| unsupported(g, n))?;
            let args: Vec<Src> = n.inputs.iter().map(|u| src(u)).collect();
            let inplace = registry.get_inplace(&n.domain, &n.op_type).filter(|_| {
                match (args.first(), n.inputs.first()) {
                    (Some(Src::Slot(s)), Some(first)) => {
                        free.contains(s)
                            && n.inputs.iter().filter(|u| *u == first).count() == 1
                            && n.outputs.len() == 1
                    }
                    _ => false,
                }
            });
            steps.push(Step {
                op,
                inplace,
                opset: domain_opset(g, &n.domain),
                args,
                outs: n
                    .outputs
                    .iter()
                    .map(|o| (!o.is_empty()).then(|| slot_of[o.as_str()]))
                    .collect(),
                free,
                label: label(n),
            });
        }
        let outputs = g
            .outputs
            .iter()
            .enumerate()
            .map(|(k, o)| {
                let again = g.outputs[k + 1..].iter().any(|p| p.name == o.name);
                (src(&o.name), !again)
            })
            .collect();
        let required = g
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, i)| !g.initializers.contains_key(&i.name))
            .map(|(k, _)| k)
            .collect();
        Ok(Plan {
            steps,
            slot_of,
            names,
            inputs,
            required,
            outputs,
        })
    }
}

pub(crate) fn domain_opset(g: &Graph, domain: &str) -> i64 {
    let d = if domain == "ai.onnx" { "" } else { domain };
    g.opsets.get(d).copied().unwrap_or_else(|| g.opset())
}

pub(crate) fn unsupported(g: &Graph, node: &Node) -> RuntimeError {
    RuntimeError::Unsupported {
        node: node.name.clone(),
        op: node.op_type.clone(),
        domain: node.domain.clone(),
        opset: domain_opset(g, &node.domain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrink_graph::{Dim, ValueInfo};
    use shrink_tensor::{DType, Tensor};

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node::new(outputs[0], op, inputs, outputs)
    }

    #[test]
    fn slots_liveness_and_donation() {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::new(
            "x",
            DType::F32,
            vec![Dim::Known(1), Dim::Known(4)],
        ));
        g.outputs.push(ValueInfo::new("z", DType::F32, vec![]));
        g.initializers.insert(
            "w".into(),
            Tensor::from_vec(vec![4], vec![1f32; 4]).unwrap(),
        );
        g.nodes.push(node("Relu", &["x"], &["a"]));
        g.nodes.push(node("Add", &["a", "w"], &["b"]));
        g.nodes.push(node("Add", &["b", "b"], &["z"]));
        let p = Plan::new(&g, &Registry::standard(), &|_| "").unwrap();
        let s = |n: &str| p.slot_of[n];
        assert_eq!(p.inputs, vec![s("x")]);
        assert_eq!(p.required, vec![0]);
        assert_eq!(p.steps[1].args, vec![Src::Slot(s("a")), Src::Const(0)]);
        assert_eq!(p.steps[0].free, vec![s("x")]);
        assert_eq!(p.steps[1].free, vec![s("a")]);
        assert_eq!(p.steps[2].free, vec![s("b")]);
        // x and a die where they are read once: donated; b is read twice.
        assert!(p.steps[0].inplace.is_some());
        assert!(p.steps[1].inplace.is_some());
        assert!(p.steps[2].inplace.is_none());
        assert_eq!(p.outputs, vec![(Src::Slot(s("z")), true)]);
    }

    /// The slot form keeps the by-name semantics: an initializer that is
    /// also a graph input is overridden only when fed, an output listed
    /// twice comes back twice, a value nobody produces is an error naming
    /// it, and runs inside `in_pool` give the same results.
    #[test]
    fn session_semantics_over_slots() {
        use crate::{Session, SessionOptions};
        let mut g = Graph::default();
        g.inputs
            .push(ValueInfo::new("x", DType::F32, vec![Dim::Known(2)]));
        g.inputs
            .push(ValueInfo::new("w", DType::F32, vec![Dim::Known(2)]));
        g.initializers.insert(
            "w".into(),
            Tensor::from_vec(vec![2], vec![10f32, 20.]).unwrap(),
        );
        g.outputs.push(ValueInfo::new("y", DType::F32, vec![]));
        g.outputs.push(ValueInfo::new("y", DType::F32, vec![]));
        g.outputs.push(ValueInfo::new("r", DType::F32, vec![]));
        g.nodes.push(node("Add", &["x", "w"], &["y"]));
        g.nodes.push(node("Relu", &["y"], &["r"]));
        let s = Session::new(g.clone(), SessionOptions::default()).unwrap();
        let x = || Tensor::from_vec(vec![2], vec![1f32, -30.]).unwrap();
        let vals = |o: &[Tensor]| -> Vec<Vec<f32>> { o.iter().map(|t| t.to_f32_vec()).collect() };
        let out = s.run(vec![x()]).unwrap();
        assert_eq!(
            vals(&out),
            vec![vec![11., -10.], vec![11., -10.], vec![11., 0.]]
        );
        let fed = Tensor::from_vec(vec![2], vec![1f32, 1.]).unwrap();
        let out = s
            .run_named(vec![("x".into(), x()), ("w".into(), fed)])
            .unwrap();
        assert_eq!(
            vals(&out),
            vec![vec![2., -29.], vec![2., -29.], vec![2., 0.]]
        );
        let pooled = s.in_pool(|| s.run(vec![x()])).unwrap();
        assert_eq!(
            vals(&pooled),
            vec![vec![11., -10.], vec![11., -10.], vec![11., 0.]]
        );
        let e = s.run(vec![]).unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("not given"), "{e}");

        // A node reading a value nothing produces fails at that node.
        g.nodes.push(node("Add", &["r", "ghost"], &["z"]));
        g.outputs.push(ValueInfo::new("z", DType::F32, vec![]));
        let s = Session::new(g, SessionOptions::default()).unwrap();
        let e = s.run(vec![x()]).unwrap_err().to_string();
        assert!(e.contains("'ghost' has no value"), "{e}");
    }
}
