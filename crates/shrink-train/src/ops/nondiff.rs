//! Ops whose outputs carry no gradient: shape arithmetic (Shape, Range,
//! ConstantOfShape …), comparisons and logic, integer rounding and the
//! quantisation ops of an already-quantised graph. They run on the runtime's
//! kernels and are never recorded for backward; Cast passes a float
//! gradient through.

use super::{grad0, rt, BackwardCtx, DiffOp, Forward, ForwardCtx, OpRegistry};
use crate::Result;
use shrink_tensor::{DType, Tensor};
use std::sync::Arc;

/// Forward-only ops.
const OPS: &[&str] = &[
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Range",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "ArgMax",
    "ArgMin",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "IsNaN",
    "IsInf",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "NonZero",
];

pub(super) fn register(r: &mut OpRegistry) {
    for op in OPS {
        r.register("", op, Arc::new(ForwardOnly));
    }
    rt(r, "Cast", cast);
}

struct ForwardOnly;

impl DiffOp for ForwardOnly {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        Ok(Forward::new(cx.runtime(inputs)?))
    }
    fn backward(
        &self,
        cx: &super::BackwardCtx,
        _: &[Option<&Tensor>],
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None; cx.inputs.len()])
    }
    fn differentiable(&self) -> bool {
        false
    }
}

/// Cast between float types passes the gradient (as f32, the only type
/// parameters and gradients have); from or to integers there is none.
fn cast(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let x = cx.input(0)?;
    if !cx.needs(0) || x.dtype() != DType::F32 || !cx.output(0)?.dtype().is_float() {
        return Ok(vec![None]);
    }
    Ok(vec![Some(grad0(cx, grads)?.cast(DType::F32))])
}
