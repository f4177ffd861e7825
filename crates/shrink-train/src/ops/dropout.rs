//! Dropout with a seeded mask: in [`Mode::Train`] each element is kept with
//! probability `1 − ratio` and scaled by `1 / (1 − ratio)`; the mask comes
//! from ChaCha8 seeded per node and step ([`ForwardCtx::seed`]), so a run
//! replays exactly. In [`Mode::Eval`] (or with ratio 0) it is the identity.
//! The training mode is ours, not the graph's `training_mode` input:
//! exported inference graphs carry `training_mode = false`.

use super::{f32s, grad0, tensor, BackwardCtx, DiffOp, Forward, ForwardCtx, Mode, OpRegistry};
use crate::Result;
use rand::{Rng, SeedableRng};
use shrink_tensor::Tensor;
use std::sync::Arc;

pub(super) fn register(r: &mut OpRegistry) {
    r.register("", "Dropout", Arc::new(Dropout));
}

struct Dropout;

/// The kept positions' scale (0 where dropped), saved for backward.
struct Kept(Option<Vec<f32>>);

impl DiffOp for Dropout {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        let x = cx.required(inputs, 0)?;
        let ratio = if cx.opset < 12 {
            cx.node.attr_float("ratio", 0.5)?
        } else {
            match inputs.get(1).copied().flatten() {
                Some(t) => t.to_f64_vec().first().copied().unwrap_or(0.5) as f32,
                None => 0.5,
            }
        };
        if !(0.0..1.0).contains(&ratio) {
            return Err(cx.error(format!("ratio {ratio} must be in [0, 1)")));
        }
        let want_mask = cx.node.outputs.len() > 1 && !cx.node.outputs[1].is_empty();
        if cx.mode == Mode::Eval || ratio == 0.0 {
            let mut outs = vec![x.clone()];
            if want_mask {
                outs.push(Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?);
            }
            return Ok(Forward::with_saved(outs, Kept(None)));
        }
        let xs = f32s(cx.node, x, "input")?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cx.seed);
        let scale = 1.0 / (1.0 - ratio);
        let keep: Vec<f32> = (0..xs.len())
            .map(|_| {
                if rng.gen::<f32>() >= ratio {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let y: Vec<f32> = xs.iter().zip(&keep).map(|(a, k)| a * k).collect();
        let mut outs = vec![tensor(x.shape(), y)?];
        if want_mask {
            let m: Vec<bool> = keep.iter().map(|&k| k != 0.0).collect();
            outs.push(Tensor::from_vec(x.shape().to_vec(), m)?);
        }
        Ok(Forward::with_saved(outs, Kept(Some(keep))))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let mut out = vec![None; cx.inputs.len()];
        if !cx.needs(0) {
            return Ok(out);
        }
        let g = grad0(cx, grads)?;
        out[0] = Some(match &cx.saved::<Kept>()?.0 {
            None => g.clone(),
            Some(keep) => {
                let gv = f32s(cx.node, g, "output gradient")?;
                tensor(g.shape(), gv.iter().zip(keep).map(|(a, k)| a * k).collect())?
            }
        });
        Ok(out)
    }
}
