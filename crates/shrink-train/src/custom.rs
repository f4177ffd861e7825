//! shrink's own training ops, domain [`crate::SHRINK_DOMAIN`] (`ai.shrink`).
//! They are ordinary [`DiffOp`]s registered like the ONNX ones; later issues
//! add theirs the same way ([`OpRegistry::register`]).
//!
//! | op | inputs | attributes | forward | backward |
//! |---|---|---|---|---|
//! | `FakeQuant` | X, scale, zero_point? | `bits`, `signed` (1), `narrow` (0) or `scheme` ("symmetric_narrow", "symmetric_full", "affine"), `axis` (0, used when scale has > 1 element), `ste` ("clipped" or "plain") | `q = clamp(round_half_even(x/s) + z, qmin, qmax)`, `y = (q − z)·s`, all in f32 exactly as QuantizeLinear → DequantizeLinear | STE: `dx = dy` (plain) or `dy` where `q` was not clamped (clipped); none for scale and zero point (calibrated constants) |
//! | `LsqQuant` | X, scale | `bits`, `signed`/`narrow`/`scheme`, `axis` | `y = round_half_even(clamp(x/s, qmin, qmax))·s` | Esser et al. 2020: `dx = dy·[qmin ≤ x/s ≤ qmax]`; `ds = Σ dy·(round(x/s) − x/s` inside, `qmin` or `qmax` outside`)·g`, `g = 1/√(N·qmax)`, N = elements per scale |
//! | `Mask` | X, mask | — | `y = x ⊙ mask` | `dx = dy ⊙ mask`; the mask is a buffer (never trained) |
//! | `SignSte` | X | — | `y = +1` for x ≥ 0, else −1 | `dx = dy·[|x| ≤ 1]` (BinaryConnect / XNOR-Net) |
//! | `TernarySte` | X | `threshold` (absolute) or `threshold_factor` (0.7: Δ = 0.7·mean|x|, TWN), `scaled` (1) | `t = sign(x)·[|x| > Δ]`, `y = α·t` with `α` = mean |x| over `|x| > Δ` when scaled | `dx = dy` (STE) |
//! | `Detach` | X | — | `y = x` | none |
//!
//! A `FakeQuant` node carrying a `format` attribute (posit, flex16+5: the
//! runtime's simulated float formats) runs the runtime's forward with a
//! plain STE backward.

use crate::ops::{f32s, grad0, node_error, tensor, BackwardCtx, DiffOp, Forward, ForwardCtx};
use crate::ops::{runtime_has, OpRegistry};
use crate::{Result, SHRINK_DOMAIN};
use shrink_graph::Node;
use shrink_tensor::Tensor;
use std::sync::Arc;

pub(crate) fn register(r: &mut OpRegistry) {
    r.register(SHRINK_DOMAIN, "FakeQuant", Arc::new(FakeQuant));
    r.register(SHRINK_DOMAIN, "LsqQuant", Arc::new(LsqQuant));
    r.register(SHRINK_DOMAIN, "Mask", Arc::new(Mask));
    r.register(SHRINK_DOMAIN, "SignSte", Arc::new(SignSte));
    r.register(SHRINK_DOMAIN, "TernarySte", Arc::new(TernarySte));
    r.register(SHRINK_DOMAIN, "Detach", Arc::new(Detach));
}

/// Integer code range and layout of a quantising node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codes {
    pub qmin: f32,
    pub qmax: f32,
}

impl Codes {
    pub(crate) fn of(node: &Node) -> Result<Codes> {
        let bits = node.attr_int("bits", 8)?;
        if !(1..=16).contains(&bits) {
            return Err(node_error(
                node,
                format!("bits = {bits}: 1 to 16 are supported"),
            ));
        }
        let (signed, narrow) = match node.attr_str("scheme", "")? {
            "" => (
                node.attr_int("signed", 1)? != 0,
                node.attr_int("narrow", 0)? != 0,
            ),
            "symmetric_narrow" => (true, true),
            "symmetric_full" => (true, false),
            "affine" => (false, false),
            other => {
                return Err(node_error(
                    node,
                    format!(
                        "scheme '{other}': expected symmetric_narrow, symmetric_full or affine"
                    ),
                ))
            }
        };
        let b = bits as u32;
        let (lo, hi) = if signed {
            let half = (1i64 << (b - 1)) as f32;
            (if narrow { -(half - 1.0) } else { -half }, half - 1.0)
        } else {
            (0.0, ((1i64 << b) - 1) as f32)
        };
        if lo >= hi {
            return Err(node_error(
                node,
                format!("{bits}-bit narrow range has no codes"),
            ));
        }
        Ok(Codes { qmin: lo, qmax: hi })
    }
}

/// Which scale (and zero point) slot each element of `x` uses: per tensor
/// when the scale has one element, else per channel along `axis`.
pub(crate) struct Slots {
    inner: usize,
    len: usize,
}

impl Slots {
    pub(crate) fn of(node: &Node, x: &Tensor, scales: usize) -> Result<Slots> {
        if scales == 1 {
            return Ok(Slots { inner: 1, len: 1 });
        }
        let r = x.rank() as i64;
        let a = node.attr_int("axis", 0)?;
        if a < -r || a >= r {
            return Err(node_error(
                node,
                format!("axis {a} out of range for rank {r}"),
            ));
        }
        let axis = if a < 0 { a + r } else { a } as usize;
        if x.shape()[axis] != scales {
            return Err(node_error(
                node,
                format!(
                    "{scales} scales for axis {axis} of length {} (input {:?})",
                    x.shape()[axis],
                    x.shape()
                ),
            ));
        }
        Ok(Slots {
            inner: x.shape()[axis + 1..].iter().product(),
            len: scales,
        })
    }
    #[inline]
    pub(crate) fn at(&self, i: usize) -> usize {
        if self.len == 1 {
            0
        } else {
            (i / self.inner) % self.len
        }
    }
}

struct FakeQuant;

impl FakeQuant {
    fn uses_format(node: &Node) -> bool {
        node.attr("format").is_some()
    }
}

/// Per-element "was not clamped" flags of a FakeQuant forward.
struct Inside(Vec<bool>);

impl DiffOp for FakeQuant {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        if FakeQuant::uses_format(cx.node) {
            if !runtime_has(&cx.node.domain, &cx.node.op_type) {
                return Err(cx.error(
                    "FakeQuant with a 'format' attribute needs the runtime's FakeQuant kernel",
                ));
            }
            return Ok(Forward::new(cx.runtime(inputs)?));
        }
        let x = cx.required(inputs, 0)?;
        let xv = f32s(cx.node, x, "X")?;
        let s = f32s(cx.node, cx.required(inputs, 1)?, "scale")?;
        let z: Vec<f32> = match inputs.get(2).copied().flatten() {
            Some(t) => t.to_f64_vec().iter().map(|&v| v as f32).collect(),
            None => vec![0.0; s.len()],
        };
        if z.len() != s.len() {
            return Err(cx.error(format!("{} zero points for {} scales", z.len(), s.len())));
        }
        if s.iter().any(|&v| !(v > 0.0) || !v.is_finite()) {
            return Err(cx.error("scales must be positive and finite"));
        }
        let codes = Codes::of(cx.node)?;
        let slots = Slots::of(cx.node, x, s.len())?;
        let mut y = vec![0f32; xv.len()];
        let mut inside = vec![false; xv.len()];
        for (i, (&v, o)) in xv.iter().zip(y.iter_mut()).enumerate() {
            let k = slots.at(i);
            let r = (v / s[k]).round_ties_even() + z[k];
            let q = r.clamp(codes.qmin, codes.qmax);
            inside[i] = r >= codes.qmin && r <= codes.qmax;
            *o = (q - z[k]) * s[k];
        }
        Ok(Forward::with_saved(
            vec![tensor(x.shape(), y)?],
            Inside(inside),
        ))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let mut out = vec![None; cx.inputs.len()];
        if !cx.needs(0) {
            return Ok(out);
        }
        let g = grad0(cx, grads)?;
        let clipped = cx.node.attr_str("ste", "clipped")?;
        out[0] = Some(match (clipped, FakeQuant::uses_format(cx.node)) {
            ("plain", _) | (_, true) => g.clone(),
            ("clipped", false) => {
                let inside = &cx.saved::<Inside>()?.0;
                let gv = f32s(cx.node, g, "output gradient")?;
                let d = gv
                    .iter()
                    .zip(inside)
                    .map(|(&g, &k)| if k { g } else { 0.0 })
                    .collect();
                tensor(g.shape(), d)?
            }
            (other, _) => {
                return Err(cx.error(format!("ste = '{other}': expected 'plain' or 'clipped'")))
            }
        });
        Ok(out)
    }

    fn buffer_inputs(&self) -> &[usize] {
        &[1, 2]
    }
}

struct LsqQuant;

impl DiffOp for LsqQuant {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        let x = cx.required(inputs, 0)?;
        let xv = f32s(cx.node, x, "X")?;
        let s = f32s(cx.node, cx.required(inputs, 1)?, "scale")?;
        if s.iter().any(|&v| !(v > 0.0) || !v.is_finite()) {
            return Err(cx.error("step sizes must be positive and finite"));
        }
        let codes = Codes::of(cx.node)?;
        let slots = Slots::of(cx.node, x, s.len())?;
        let y: Vec<f32> = xv
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let k = slots.at(i);
                (v / s[k]).clamp(codes.qmin, codes.qmax).round_ties_even() * s[k]
            })
            .collect();
        Ok(Forward::new(vec![tensor(x.shape(), y)?]))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let x = cx.input(0)?;
        let xv = f32s(cx.node, x, "X")?;
        let st = cx.input(1)?;
        let s = f32s(cx.node, st, "scale")?;
        let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
        let codes = Codes::of(cx.node)?;
        let slots = Slots::of(cx.node, x, s.len())?;
        let per_scale = (xv.len() / s.len()).max(1) as f64;
        let gscale = 1.0 / (per_scale * codes.qmax.max(1.0) as f64).sqrt();
        let mut dx = vec![0f32; if cx.needs(0) { xv.len() } else { 0 }];
        let mut ds = vec![0f64; s.len()];
        for (i, (&v, &gv)) in xv.iter().zip(g).enumerate() {
            let k = slots.at(i);
            let r = v / s[k];
            let (inside, dq) = if r <= codes.qmin {
                (r == codes.qmin, codes.qmin)
            } else if r >= codes.qmax {
                (r == codes.qmax, codes.qmax)
            } else {
                (true, r.round_ties_even() - r)
            };
            if cx.needs(0) && inside {
                dx[i] = gv;
            }
            ds[k] += (gv * dq) as f64;
        }
        let mut out = vec![None; cx.inputs.len()];
        if cx.needs(0) {
            out[0] = Some(tensor(x.shape(), dx)?);
        }
        if cx.needs(1) {
            let d = ds.iter().map(|&v| (v * gscale) as f32).collect();
            out[1] = Some(tensor(st.shape(), d)?);
        }
        Ok(out)
    }
}

struct Mask;

impl DiffOp for Mask {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        let x = cx.required(inputs, 0)?;
        let m = cx.required(inputs, 1)?;
        if m.shape() != x.shape() {
            return Err(cx.error(format!(
                "mask {:?} must have the input's shape {:?}",
                m.shape(),
                x.shape()
            )));
        }
        let xv = f32s(cx.node, x, "X")?;
        let mv = f32s(cx.node, m, "mask")?;
        let y = xv.iter().zip(mv).map(|(a, b)| a * b).collect();
        Ok(Forward::new(vec![tensor(x.shape(), y)?]))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        let mut out = vec![None; cx.inputs.len()];
        if cx.needs(0) {
            let g = grad0(cx, grads)?;
            let gv = f32s(cx.node, g, "output gradient")?;
            let mv = f32s(cx.node, cx.input(1)?, "mask")?;
            out[0] = Some(tensor(
                g.shape(),
                gv.iter().zip(mv).map(|(a, b)| a * b).collect(),
            )?);
        }
        Ok(out)
    }

    fn buffer_inputs(&self) -> &[usize] {
        &[1]
    }
}

struct SignSte;

impl DiffOp for SignSte {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        let x = cx.required(inputs, 0)?;
        let xv = f32s(cx.node, x, "X")?;
        let y = xv
            .iter()
            .map(|&v| if v >= 0.0 { 1.0 } else { -1.0 })
            .collect();
        Ok(Forward::new(vec![tensor(x.shape(), y)?]))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        if !cx.needs(0) {
            return Ok(vec![None]);
        }
        let x = cx.input(0)?;
        let xv = f32s(cx.node, x, "X")?;
        let gv = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
        let d = xv
            .iter()
            .zip(gv)
            .map(|(&x, &g)| if x.abs() <= 1.0 { g } else { 0.0 })
            .collect();
        Ok(vec![Some(tensor(x.shape(), d)?)])
    }
}

struct TernarySte;

impl TernarySte {
    /// Threshold Δ and scale α of a ternarisation of `x`.
    pub(crate) fn params(node: &Node, x: &[f32]) -> Result<(f32, f32)> {
        let mean_abs = x.iter().map(|v| v.abs() as f64).sum::<f64>() / x.len().max(1) as f64;
        let delta = match node.attr("threshold") {
            Some(_) => node.attr_float("threshold", 0.0)?,
            None => (node.attr_float("threshold_factor", 0.7)? as f64 * mean_abs) as f32,
        };
        if !(delta >= 0.0) {
            return Err(node_error(node, format!("threshold {delta} must be ≥ 0")));
        }
        let alpha = if node.attr_int("scaled", 1)? != 0 {
            let (s, n) = x
                .iter()
                .filter(|v| v.abs() > delta)
                .fold((0f64, 0usize), |(s, n), v| (s + v.abs() as f64, n + 1));
            if n == 0 {
                0.0
            } else {
                (s / n as f64) as f32
            }
        } else {
            1.0
        };
        Ok((delta, alpha))
    }
}

impl DiffOp for TernarySte {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        let x = cx.required(inputs, 0)?;
        let xv = f32s(cx.node, x, "X")?;
        let (delta, alpha) = TernarySte::params(cx.node, xv)?;
        let y = xv
            .iter()
            .map(|&v| {
                if v > delta {
                    alpha
                } else if v < -delta {
                    -alpha
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Forward::new(vec![tensor(x.shape(), y)?]))
    }

    fn backward(&self, cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        if !cx.needs(0) {
            return Ok(vec![None]);
        }
        Ok(vec![Some(grad0(cx, grads)?.clone())])
    }
}

struct Detach;

impl DiffOp for Detach {
    fn forward(&self, cx: &ForwardCtx, inputs: &[Option<&Tensor>]) -> Result<Forward> {
        Ok(Forward::new(vec![cx.required(inputs, 0)?.clone()]))
    }

    fn backward(&self, cx: &BackwardCtx, _: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None; cx.inputs.len()])
    }

    fn differentiable(&self) -> bool {
        false
    }
}
