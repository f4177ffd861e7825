//! Structural checks of a graph, run after import and after every pass in
//! tests: a pass that breaks an invariant fails here, naming the node and
//! value, instead of producing a model some runtime rejects later.

use crate::{infer_shapes, node_uses, value_types, Attr, DType, Graph, GraphError, Node, Result};
use std::collections::{HashMap, HashSet};

/// Checks `g` (and its subgraphs): every value read is defined (a graph
/// input, an initializer, an earlier node's output, or for a subgraph an
/// enclosing-scope value), every value has one producer, nodes are in
/// topological order without cycles, graph outputs are produced, `Constant`
/// nodes carry a value, and inputs that must share a dtype do (where known
/// or inferable). All problems found are reported together.
pub fn validate(g: &Graph) -> Result<()> {
    let mut problems = Vec::new();
    check_graph(g, &HashSet::new(), "", &mut problems);
    if problems.is_empty() {
        let mut typed = g.clone();
        if infer_shapes(&mut typed).is_ok() {
            check_dtypes(&typed, &mut problems);
        }
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(problems.pop().expect("one problem")),
        n => Err(GraphError::Invalid(format!(
            "{n} problems: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

fn check_graph(g: &Graph, outer: &HashSet<String>, scope: &str, problems: &mut Vec<GraphError>) {
    let where_ = |what: String| {
        if scope.is_empty() {
            what
        } else {
            format!("{what} (in subgraph {scope})")
        }
    };
    // Who defines each name: graph inputs and initializers first.
    let mut defined: HashSet<&str> = g.inputs.iter().map(|v| v.name.as_str()).collect();
    let inputs: HashSet<&str> = defined.clone();
    for name in g.initializers.keys() {
        defined.insert(name);
    }
    let mut producer: HashMap<&str, &Node> = HashMap::new();
    for n in &g.nodes {
        if n.op_type.is_empty() {
            problems.push(n.error(where_("node has no op_type".into())));
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if let Some(prev) = producer.insert(o, n) {
                problems.push(n.error(where_(format!(
                    "output '{o}' is also produced by node '{}' ({})",
                    prev.name, prev.op_type
                ))));
            } else if g.initializers.contains_key(o) || inputs.contains(o.as_str()) {
                problems.push(n.error(where_(format!(
                    "output '{o}' is already defined as a graph input or initializer"
                ))));
            }
        }
        if n.op_type == "Constant" && n.domain.is_empty() {
            let has_value = n
                .attrs
                .keys()
                .any(|k| k.starts_with("value") || k == "sparse_value");
            if !has_value {
                problems.push(n.error(where_("Constant node has no value attribute".into())));
            }
        }
    }

    // Walk in order: a read must come after its producer.
    let mut available: HashSet<&str> = defined.clone();
    let position: HashMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    for (i, n) in g.nodes.iter().enumerate() {
        for u in node_uses(n) {
            if available.contains(u.as_str()) || outer.contains(&u) {
                continue;
            }
            let msg = match position.get(u.as_str()) {
                Some(&j) if j == i => format!("reads its own output '{u}' (a cycle)"),
                Some(&j) => {
                    let p = &g.nodes[j];
                    if reaches(g, i, j) {
                        format!(
                            "reads '{u}' from node '{}' ({}), which depends on this node: a cycle",
                            p.name, p.op_type
                        )
                    } else {
                        format!("reads '{u}' before node '{}' ({}) produces it: nodes are not in topological order", p.name, p.op_type)
                    }
                }
                None => format!("reads '{u}', which no node, graph input or initializer provides"),
            };
            problems.push(n.error(where_(msg)));
        }
        available.extend(n.outputs.iter().map(String::as_str));

        // Subgraphs see everything defined so far in this scope and outer ones.
        for (key, a) in &n.attrs {
            let subs: Vec<&Graph> = match a {
                Attr::Graph(sg) => vec![sg.as_ref()],
                Attr::Graphs(sgs) => sgs.iter().collect(),
                _ => continue,
            };
            let mut scope_names: HashSet<String> = outer.clone();
            scope_names.extend(available.iter().map(|s| s.to_string()));
            for sg in subs {
                let label = format!("{}.{key}", n.name);
                let label = if scope.is_empty() {
                    label
                } else {
                    format!("{scope}/{label}")
                };
                check_graph(sg, &scope_names, &label, problems);
            }
        }
    }

    for o in &g.outputs {
        if !available.contains(o.name.as_str()) && !outer.contains(&o.name) {
            problems.push(GraphError::Invalid(where_(format!(
                "graph output '{}' is never produced",
                o.name
            ))));
        }
    }
}

/// Whether node `from`'s outputs flow (transitively) into node `to`.
fn reaches(g: &Graph, from: usize, to: usize) -> bool {
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    let uses: Vec<Vec<String>> = g.nodes.iter().map(node_uses).collect();
    for (i, us) in uses.iter().enumerate() {
        for u in us {
            consumers.entry(u.as_str()).or_default().push(i);
        }
    }
    let mut seen = HashSet::new();
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        for o in &g.nodes[i].outputs {
            for &c in consumers.get(o.as_str()).into_iter().flatten() {
                if c == to {
                    return true;
                }
                stack.push(c);
            }
        }
    }
    false
}

/// Inputs (by index) of each op that the ONNX spec types with one shared
/// type variable.
fn same_dtype_inputs(op: &str) -> Option<&'static [usize]> {
    Some(match op {
        "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Equal" | "Greater" | "Less" | "GreaterOrEqual"
        | "LessOrEqual" | "And" | "Or" | "Xor" | "BitShift" | "BitwiseAnd" | "BitwiseOr"
        | "BitwiseXor" | "MatMul" | "PRelu" => &[0, 1],
        "Gemm" => &[0, 1, 2],
        "Conv" | "ConvTranspose" => &[0, 1, 2],
        "Where" => &[1, 2],
        "BatchNormalization" => &[1, 2],
        "Max" | "Min" | "Sum" | "Mean" | "Concat" => &[0, 1, 2, 3, 4, 5, 6, 7],
        _ => return None,
    })
}

fn check_dtypes(g: &Graph, problems: &mut Vec<GraphError>) {
    let types = value_types(g);
    for n in &g.nodes {
        if !n.domain.is_empty() {
            continue;
        }
        let Some(idx) = same_dtype_inputs(&n.op_type) else {
            continue;
        };
        let typed: Vec<(&str, DType)> = idx
            .iter()
            .filter_map(|&i| n.input(i))
            .filter_map(|name| Some((name, types.get(name)?.dtype?)))
            .collect();
        if let Some((first, d0)) = typed.first() {
            if let Some((other, d)) = typed.iter().find(|(_, d)| d != d0) {
                problems.push(n.error(format!(
                    "inputs '{first}' ({d0}) and '{other}' ({d}) must have the same element type"
                )));
            }
        }
    }
}
