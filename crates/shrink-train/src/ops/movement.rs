//! Ops that only move elements. The reshape family passes the gradient
//! through with the input's shape. The others (Transpose, Concat, Split,
//! Slice, Expand, Tile, GatherElements) share one backward: run the same op
//! on *index* tensors (each data input filled with the flat positions
//! 0, 1, 2 … of all data inputs laid end to end), which says for every
//! output element which input element it came from; the gradient is then a
//! scatter-add of the output gradient through that map. One backward,
//! exactly the forward's semantics (negative steps, clamped slice ends,
//! broadcasting expand), no second implementation to keep in sync.
//! Gather (embeddings) scatters rows directly: an index map of a whole
//! embedding table would be as large as the table.

use super::{f32s, grad0, node_error, rt, runtime_forward, tensor, BackwardCtx, OpRegistry};
use super::{DiffOp, Forward, ForwardCtx};
use crate::Result;
use shrink_tensor::Tensor;
use std::sync::Arc;

pub(super) fn register(r: &mut OpRegistry) {
    for op in ["Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"] {
        rt(r, op, reshape_back);
    }
    rt(r, "Gather", gather);
    for (op, data) in [
        ("Transpose", DataInputs::First),
        ("Concat", DataInputs::All),
        ("Split", DataInputs::First),
        ("Slice", DataInputs::First),
        ("Expand", DataInputs::First),
        ("Tile", DataInputs::First),
        ("GatherElements", DataInputs::First),
    ] {
        r.register("", op, Arc::new(IndexMapped { data }));
    }
}

/// The gradient of a reshape: the output gradient with the input's shape.
fn reshape_back(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let mut out = vec![None; cx.inputs.len()];
    if cx.needs(0) {
        let g = grad0(cx, grads)?;
        out[0] = Some(g.clone().reshape(cx.input(0)?.shape().to_vec())?);
    }
    Ok(out)
}

/// Gather along `axis`: `dx[o, idx[j], i] += dy[o, j, i]`.
fn gather(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    if !cx.needs(0) {
        return Ok(vec![None, None]);
    }
    let data = cx.input(0)?;
    let idx = cx.input(1)?;
    let r = data.rank() as i64;
    let a = cx.node.attr_int("axis", 0)?;
    if a < -r || a >= r {
        return Err(cx.error(format!("axis {a} out of range for rank {r}")));
    }
    let axis = if a < 0 { a + r } else { a } as usize;
    let shape = data.shape();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape[axis] as i64;
    let ids = idx.to_i64_vec();
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let mut dx = vec![0f32; data.len()];
    for o in 0..outer {
        for (j, &id) in ids.iter().enumerate() {
            let id = if id < 0 { id + len } else { id };
            if id < 0 || id >= len {
                return Err(cx.error(format!("index {id} out of range for axis of {len}")));
            }
            let src = &g[(o * ids.len() + j) * inner..][..inner];
            let dst = &mut dx[(o * len as usize + id as usize) * inner..][..inner];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    Ok(vec![Some(tensor(shape, dx)?), None])
}

#[derive(Clone, Copy)]
enum DataInputs {
    /// Input 0 carries data; the rest are indices, shapes, axes.
    First,
    /// Every input carries data (Concat).
    All,
}

/// A movement op differentiated through index maps (see the module docs).
struct IndexMapped {
    data: DataInputs,
}

impl DiffOp for IndexMapped {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        Ok(Forward::new(cx.runtime(inputs)?))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let data: Vec<usize> = match self.data {
            DataInputs::First => vec![0],
            DataInputs::All => (0..cx.inputs.len()).collect(),
        };
        // Index tensors: data input d holds base[d] .. base[d] + len.
        let mut base = vec![0usize; cx.inputs.len() + 1];
        let mut iotas: Vec<Option<Tensor>> = vec![None; cx.inputs.len()];
        let mut total = 0usize;
        for &d in &data {
            let Some(t) = cx.inputs.get(d).copied().flatten() else {
                continue;
            };
            base[d] = total;
            let v: Vec<i64> = (total as i64..(total + t.len()) as i64).collect();
            iotas[d] = Some(Tensor::from_vec(t.shape().to_vec(), v)?);
            total += t.len();
        }
        let args: Vec<Option<&Tensor>> = cx
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| iotas[i].as_ref().or(*t))
            .collect();
        let maps = runtime_forward(cx.node, cx.opset, &args)?;
        let mut flat = vec![0f32; total];
        for (k, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let map = maps
                .get(k)
                .ok_or_else(|| node_error(cx.node, "index map lacks an output"))?
                .to_i64_vec();
            let gv = f32s(cx.node, g, "output gradient")?;
            if map.len() != gv.len() {
                return Err(cx.error("index map and output gradient differ in size"));
            }
            for (&m, &gv) in map.iter().zip(gv) {
                flat[m as usize] += gv;
            }
        }
        let mut out = vec![None; cx.inputs.len()];
        for &d in &data {
            if !cx.needs(d) {
                continue;
            }
            let t = cx.input(d)?;
            out[d] = Some(tensor(
                t.shape(),
                flat[base[d]..base[d] + t.len()].to_vec(),
            )?);
        }
        Ok(out)
    }
}
