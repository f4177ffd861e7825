//! Recurrent layers: LSTM.
//!
//! The input projection `X·Wᵀ` of every time step is one GEMM up front; the
//! recurrence then does one small `H·Rᵀ` GEMM per step and the gate math
//! (ONNX gate order i, o, f, c; peepholes i, o, f).

use super::linalg::{float_tensor, floats, sgemm, MatRef};
use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut Registry) {
    r.add("", "LSTM", lstm);
}

/// One of the activation functions ONNX RNNs accept, with its parameters.
#[derive(Clone, Copy)]
enum Act {
    Sigmoid,
    Tanh,
    Relu,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f32) -> f32 {
        match self {
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Tanh => x.tanh(),
            Act::Relu => x.max(0.0),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x < 0.0 {
                    a * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => x.exp().ln_1p(),
        }
    }
}

/// Parses the `activations` list (3 per direction) with their alpha/beta
/// parameters consumed in order, as the spec lays them out.
fn activations(ctx: &OpContext, dirs: usize) -> Result<Vec<[Act; 3]>> {
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let names: Vec<String> = match ctx.node.attr_strings("activations").map_err(attr)? {
        Some(v) => v.to_vec(),
        None => ["Sigmoid", "Tanh", "Tanh"]
            .iter()
            .cycle()
            .take(3 * dirs)
            .map(|s| s.to_string())
            .collect(),
    };
    if names.len() != 3 * dirs {
        return Err(ctx.error(format!(
            "activations lists {} functions; expected {} (3 per direction)",
            names.len(),
            3 * dirs
        )));
    }
    let alphas = ctx
        .node
        .attr_floats("activation_alpha")
        .map_err(attr)?
        .unwrap_or(&[]);
    let betas = ctx
        .node
        .attr_floats("activation_beta")
        .map_err(attr)?
        .unwrap_or(&[]);
    let (mut ai, mut bi) = (0, 0);
    let next = |v: &[f32], i: &mut usize, default: f32| {
        let r = v.get(*i).copied().unwrap_or(default);
        *i += 1;
        r
    };
    let mut acts = Vec::with_capacity(names.len());
    for n in &names {
        acts.push(match n.to_ascii_lowercase().as_str() {
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "relu" => Act::Relu,
            "affine" => Act::Affine(next(alphas, &mut ai, 1.0), next(betas, &mut bi, 0.0)),
            "leakyrelu" => Act::LeakyRelu(next(alphas, &mut ai, 0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(next(alphas, &mut ai, 1.0)),
            "scaledtanh" => Act::ScaledTanh(next(alphas, &mut ai, 1.0), next(betas, &mut bi, 1.0)),
            "hardsigmoid" => {
                Act::HardSigmoid(next(alphas, &mut ai, 0.2), next(betas, &mut bi, 0.5))
            }
            "elu" => Act::Elu(next(alphas, &mut ai, 1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            other => return Err(ctx.error(format!("unknown activation '{other}'"))),
        });
    }
    Ok(acts.chunks(3).map(|c| [c[0], c[1], c[2]]).collect())
}

fn lstm(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let w = ctx.required(inputs, 1)?;
    let r = ctx.required(inputs, 2)?;
    let opt = |i: usize| inputs.get(i).copied().flatten();
    let node = ctx.node;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let direction = node.attr_str("direction", "forward").map_err(attr)?;
    let dirs = match direction {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        other => return Err(ctx.error(format!("unknown direction '{other}'"))),
    };
    let layout = node.attr_int("layout", 0).map_err(attr)?;
    let clip = node.attr_float("clip", 0.0).map_err(attr)?;
    let clip = node.attrs.contains_key("clip").then_some(clip);
    let couple = node.attr_int("input_forget", 0).map_err(attr)? != 0;
    if x.rank() != 3 {
        return Err(ctx.error(format!("X must be 3-D, got {:?}", x.shape())));
    }
    let (seq, batch, input) = if layout == 0 {
        (x.shape()[0], x.shape()[1], x.shape()[2])
    } else {
        (x.shape()[1], x.shape()[0], x.shape()[2])
    };
    let hidden = match node.attr_int_opt("hidden_size").map_err(attr)? {
        Some(h) => h as usize,
        None => r.shape().get(2).copied().unwrap_or(0),
    };
    let g4 = 4 * hidden;
    if w.shape() != [dirs, g4, input] || r.shape() != [dirs, g4, hidden] {
        return Err(ctx.error(format!(
            "W {:?} / R {:?} must be [{dirs}, {g4}, {input}] / [{dirs}, {g4}, {hidden}]",
            w.shape(),
            r.shape()
        )));
    }
    let check = |t: Option<&Tensor>, name: &str, len: usize| -> Result<Option<Vec<f32>>> {
        match t {
            None => Ok(None),
            Some(t) if t.len() == len => Ok(Some(floats(ctx, t, name)?.into_owned())),
            Some(t) => Err(ctx.error(format!(
                "{name} {:?} has {} elements, expected {len}",
                t.shape(),
                t.len()
            ))),
        }
    };
    let b = check(opt(3), "B", dirs * 2 * g4)?;
    let seq_lens: Vec<usize> = match opt(4) {
        Some(t) => {
            let v = t.to_i64_vec();
            if v.len() != batch || v.iter().any(|&l| l < 0 || l as usize > seq) {
                return Err(ctx.error(format!(
                    "sequence_lens {v:?} must give {batch} lengths in 0..={seq}"
                )));
            }
            v.into_iter().map(|l| l as usize).collect()
        }
        None => vec![seq; batch],
    };
    let h0 = check(opt(5), "initial_h", dirs * batch * hidden)?;
    let c0 = check(opt(6), "initial_c", dirs * batch * hidden)?;
    let p = check(opt(7), "P", dirs * 3 * hidden)?;
    let acts = activations(ctx, dirs)?;
    let xv = floats(ctx, x, "X")?;
    // Time-major copy of X when the layout is batch-major.
    let xt: Vec<f32> = if layout == 0 {
        xv.into_owned()
    } else {
        let mut t = vec![0f32; xv.len()];
        for bi in 0..batch {
            for s in 0..seq {
                t[(s * batch + bi) * input..(s * batch + bi + 1) * input]
                    .copy_from_slice(&xv[(bi * seq + s) * input..(bi * seq + s + 1) * input]);
            }
        }
        t
    };
    let wv = floats(ctx, w, "W")?;
    let rv = floats(ctx, r, "R")?;
    // Outputs, time-major: Y [seq, dirs, batch, hidden], Y_h / Y_c [dirs, batch, hidden].
    let mut y = vec![0f32; seq * dirs * batch * hidden];
    let mut yh = vec![0f32; dirs * batch * hidden];
    let mut yc = vec![0f32; dirs * batch * hidden];
    for d in 0..dirs {
        let reverse = direction == "reverse" || d == 1;
        let wd = &wv[d * g4 * input..(d + 1) * g4 * input];
        let rd = &rv[d * g4 * hidden..(d + 1) * g4 * hidden];
        // X·Wᵀ for all steps at once: [seq·batch, 4H].
        let mut xw = vec![0f32; seq * batch * g4];
        sgemm(
            seq * batch,
            g4,
            input,
            MatRef::rows(&xt, input),
            MatRef::transposed(wd, input),
            &mut xw,
            1.0,
            None,
            ctx.threads,
        );
        let bias: Vec<f32> = match &b {
            Some(b) => (0..g4)
                .map(|i| b[d * 2 * g4 + i] + b[d * 2 * g4 + g4 + i])
                .collect(),
            None => vec![0.0; g4],
        };
        let peep = p.as_ref().map(|p| &p[d * 3 * hidden..(d + 1) * 3 * hidden]);
        let mut h: Vec<f32> = match &h0 {
            Some(v) => v[d * batch * hidden..(d + 1) * batch * hidden].to_vec(),
            None => vec![0.0; batch * hidden],
        };
        let mut c: Vec<f32> = match &c0 {
            Some(v) => v[d * batch * hidden..(d + 1) * batch * hidden].to_vec(),
            None => vec![0.0; batch * hidden],
        };
        let [fa, ga, ha] = acts[d];
        let mut gates = vec![0f32; batch * g4];
        for step in 0..seq {
            // H·Rᵀ for every batch row, then add the step's input projection.
            sgemm(
                batch,
                g4,
                hidden,
                MatRef::rows(&h, hidden),
                MatRef::transposed(rd, hidden),
                &mut gates,
                1.0,
                None,
                1,
            );
            for bi in 0..batch {
                let len = seq_lens[bi];
                if step >= len {
                    continue;
                }
                let t = if reverse { len - 1 - step } else { step };
                let xg = &xw[(t * batch + bi) * g4..(t * batch + bi + 1) * g4];
                let gr = &gates[bi * g4..(bi + 1) * g4];
                let hb = &mut h[bi * hidden..(bi + 1) * hidden];
                let cb = &mut c[bi * hidden..(bi + 1) * hidden];
                for k in 0..hidden {
                    let pre = |gi: usize| {
                        let v = xg[gi * hidden + k] + gr[gi * hidden + k] + bias[gi * hidden + k];
                        match clip {
                            Some(cl) => v.clamp(-cl, cl),
                            None => v,
                        }
                    };
                    let (pi, po, pf) = match peep {
                        Some(p) => (p[k], p[hidden + k], p[2 * hidden + k]),
                        None => (0.0, 0.0, 0.0),
                    };
                    let c_prev = cb[k];
                    let i_g = fa.apply(pre(0) + pi * c_prev);
                    let f_g = if couple {
                        1.0 - i_g
                    } else {
                        fa.apply(pre(2) + pf * c_prev)
                    };
                    let c_in = ga.apply(pre(3));
                    let c_new = f_g * c_prev + i_g * c_in;
                    let o_g = fa.apply(pre(1) + po * c_new);
                    cb[k] = c_new;
                    hb[k] = o_g * ha.apply(c_new);
                }
                let yo = ((t * dirs + d) * batch + bi) * hidden;
                y[yo..yo + hidden].copy_from_slice(hb);
            }
        }
        yh[d * batch * hidden..(d + 1) * batch * hidden].copy_from_slice(&h);
        yc[d * batch * hidden..(d + 1) * batch * hidden].copy_from_slice(&c);
    }
    let dt = x.dtype();
    if layout == 0 {
        return Ok(vec![
            float_tensor(dt, vec![seq, dirs, batch, hidden], y)?,
            float_tensor(dt, vec![dirs, batch, hidden], yh)?,
            float_tensor(dt, vec![dirs, batch, hidden], yc)?,
        ]);
    }
    // Batch-major: Y [batch, seq, dirs, hidden], Y_h / Y_c [batch, dirs, hidden].
    let mut yb = vec![0f32; y.len()];
    for s in 0..seq {
        for d in 0..dirs {
            for bi in 0..batch {
                let from = ((s * dirs + d) * batch + bi) * hidden;
                let to = ((bi * seq + s) * dirs + d) * hidden;
                yb[to..to + hidden].copy_from_slice(&y[from..from + hidden]);
            }
        }
    }
    let swap = |v: &[f32]| {
        let mut o = vec![0f32; v.len()];
        for d in 0..dirs {
            for bi in 0..batch {
                let from = (d * batch + bi) * hidden;
                let to = (bi * dirs + d) * hidden;
                o[to..to + hidden].copy_from_slice(&v[from..from + hidden]);
            }
        }
        o
    };
    Ok(vec![
        float_tensor(dt, vec![batch, seq, dirs, hidden], yb)?,
        float_tensor(dt, vec![batch, dirs, hidden], swap(&yh))?,
        float_tensor(dt, vec![batch, dirs, hidden], swap(&yc))?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_their_definitions() {
        assert!((Act::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
        assert_eq!(Act::HardSigmoid(0.2, 0.5).apply(10.0), 1.0);
        assert_eq!(Act::LeakyRelu(0.1).apply(-2.0), -0.2);
        assert!((Act::Softplus.apply(0.0) - 2f32.ln()).abs() < 1e-7);
    }
}
