//! Dead-node elimination: what cannot influence a graph output goes.
//!
//! Passes leave debris (a folded BatchNorm's parameters, a Constant no one
//! reads after fusion); dropping it keeps saved models small and cost
//! estimates honest.

use crate::{node_uses, Attr, Graph};
use std::collections::HashSet;

/// Removes nodes none of whose outputs reaches a graph output (directly or
/// through other nodes, subgraph captures included), then initializers
/// nothing reads. An unused initializer that is also listed as a graph input
/// (old PyTorch exports) leaves the input list too: it was optional anyway.
/// Plain graph inputs stay, as they are the model's interface. Recurses into
/// subgraphs. Returns the number of nodes removed.
pub fn eliminate_dead_nodes(g: &mut Graph) -> usize {
    // Subgraphs first, so outer values only their dead parts read die too.
    let mut removed = 0;
    for n in &mut g.nodes {
        for a in n.attrs.values_mut() {
            match a {
                Attr::Graph(sg) => removed += eliminate_dead_nodes(sg),
                Attr::Graphs(sgs) => {
                    for sg in sgs {
                        removed += eliminate_dead_nodes(sg);
                    }
                }
                _ => {}
            }
        }
    }
    let mut live: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| !o.is_empty() && live.contains(o)) {
            keep[i] = true;
            live.extend(node_uses(n));
        }
    }
    let before = g.nodes.len();
    let mut k = keep.iter();
    g.nodes.retain(|_| *k.next().expect("one flag per node"));
    removed += before - g.nodes.len();

    let dead_inits: Vec<String> = g
        .initializers
        .keys()
        .filter(|k| !live.contains(*k))
        .cloned()
        .collect();
    for name in &dead_inits {
        g.initializers.shift_remove(name);
    }
    g.inputs.retain(|v| !dead_inits.contains(&v.name));

    let produced: HashSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect();
    g.value_info
        .retain(|name, _| produced.contains(name.as_str()));
    removed
}
