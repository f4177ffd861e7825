//! Runs one op outside a session, for the op modules' unit tests.

use super::{OpContext, Registry};
use crate::Result;
use shrink_graph::{Graph, Node};
use shrink_tensor::Tensor;

pub(crate) fn try_run_op_at(node: Node, opset: i64, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let reg = Registry::standard();
    let op = reg
        .get(&node.domain, &node.op_type)
        .unwrap_or_else(|| panic!("op {} is not registered", node.op_type));
    let no_subgraphs = |_: &Graph, _: &[Tensor]| -> Result<Vec<Tensor>> {
        panic!("unit-tested ops have no subgraphs")
    };
    let ctx = OpContext {
        node: &node,
        opset,
        threads: 1,
        subgraph: &no_subgraphs,
        prepared: None,
        constants: &|_: &str| false,
        kernel: &std::sync::OnceLock::new(),

        buffers: None,
    };
    let args: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
    op(&ctx, &args)
}

/// Runs `node` at opset 21 and unwraps (tests expect success).
pub(crate) fn run_op(node: Node, inputs: &[&Tensor]) -> Vec<Tensor> {
    run_op_at(node, 21, inputs)
}

pub(crate) fn run_op_at(node: Node, opset: i64, inputs: &[&Tensor]) -> Vec<Tensor> {
    let what = node.op_type.clone();
    try_run_op_at(node, opset, inputs).unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// Runs `node` at opset 21 expecting an error; returns its message.
pub(crate) fn run_op_err(node: Node, inputs: &[&Tensor]) -> String {
    match try_run_op_at(node, 21, inputs) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}
