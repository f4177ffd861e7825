//! Control flow and trivial ops: If, Identity, Constant.

use super::{OpContext, Registry};
use crate::Result;
use shrink_graph::Attr;
use shrink_tensor::{Tensor, TensorData};

pub(super) fn register(r: &mut Registry) {
    r.add("", "If", if_op);
    r.add("", "Identity", identity);
    // A dead input is the output itself.
    r.add_inplace("", "Identity", |_, _, _| Ok(true));
    r.add("", "Constant", constant);
}

fn if_op(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let cond = ctx.required(inputs, 0)?;
    if cond.len() != 1 {
        return Err(ctx.error(format!(
            "condition must have one element, has {}",
            cond.len()
        )));
    }
    let take_then = cond.to_f64_vec()[0] != 0.0;
    let branch = if take_then {
        "then_branch"
    } else {
        "else_branch"
    };
    let g = ctx
        .node
        .attr_graph(branch)
        .map_err(|e| ctx.error(e.to_string()))?;
    ctx.run_subgraph(g, &[])
}

fn identity(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    Ok(vec![ctx.required(inputs, 0)?.clone()])
}

fn constant(ctx: &OpContext, _inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let n = ctx.node;
    let t = match n.attrs.iter().next() {
        Some((_, Attr::Tensor(t))) => t.clone(),
        Some((k, Attr::Float(v))) if k == "value_float" => Tensor::scalar(*v),
        Some((k, Attr::Int(v))) if k == "value_int" => Tensor::scalar(*v),
        Some((k, Attr::Floats(v))) if k == "value_floats" => {
            Tensor::from_vec(vec![v.len()], v.clone())?
        }
        Some((k, Attr::Ints(v))) if k == "value_ints" => {
            Tensor::from_vec(vec![v.len()], v.clone())?
        }
        Some((k, Attr::String(v))) if k == "value_string" => {
            Tensor::new(vec![], TensorData::String(vec![v.clone()]))?
        }
        Some((k, Attr::Strings(v))) if k == "value_strings" => {
            Tensor::new(vec![v.len()], TensorData::String(v.clone()))?
        }
        _ => return Err(ctx.error("Constant needs exactly one value attribute")),
    };
    Ok(vec![t])
}
