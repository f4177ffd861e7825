//! Puts the custom training ops of [`crate::custom`] around a value of a
//! graph (a weight initializer or an activation): QAT inserts `FakeQuant` or
//! `LsqQuant` after weights, pruning a `Mask`, binary/ternary training
//! `SignSte`/`TernarySte`. Every consumer of the value then reads the new
//! node's output; graph outputs keep the original value.

use crate::{Result, TrainError, SHRINK_DOMAIN};
use shrink_formats::intq::Scheme;
use shrink_graph::{Attr, Graph, Node};
use shrink_tensor::Tensor;
use std::collections::BTreeMap;

/// Straight-through estimator of a `FakeQuant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ste {
    /// Gradient passes everywhere.
    Plain,
    /// Gradient passes only where the value was inside the code range.
    Clipped,
}

/// A fixed (calibrated) quantiser: `bits`, code range, per-tensor or
/// per-channel scales and zero points.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuantSpec {
    pub bits: u32,
    pub scheme: Scheme,
    /// Channel axis when there is more than one scale.
    pub axis: Option<usize>,
    pub ste: Ste,
    pub scale: Vec<f32>,
    pub zero_point: Vec<i32>,
}

impl FakeQuantSpec {
    /// Symmetric narrow-range scales `max|w| / qmax`, per tensor or per
    /// channel along `axis` (all-zero channels get scale 1).
    pub fn symmetric_max(
        w: &Tensor,
        bits: u32,
        axis: Option<usize>,
        ste: Ste,
    ) -> Result<FakeQuantSpec> {
        let v = w.to_f32_vec();
        let qmax = ((1i64 << (bits.clamp(2, 16) - 1)) - 1) as f32;
        let scale = match axis {
            None => vec![v.iter().fold(0f32, |m, x| m.max(x.abs()))],
            Some(a) => {
                if a >= w.rank() {
                    return Err(TrainError::State(format!(
                        "axis {a} out of range for a weight of shape {:?}",
                        w.shape()
                    )));
                }
                let c = w.shape()[a];
                let inner: usize = w.shape()[a + 1..].iter().product();
                let mut m = vec![0f32; c];
                for (i, x) in v.iter().enumerate() {
                    let k = (i / inner) % c;
                    m[k] = m[k].max(x.abs());
                }
                m
            }
        };
        let scale: Vec<f32> = scale
            .into_iter()
            .map(|m| if m > 0.0 { m / qmax } else { 1.0 })
            .collect();
        Ok(FakeQuantSpec {
            bits,
            scheme: Scheme::SymmetricNarrow,
            axis,
            ste,
            zero_point: vec![0; scale.len()],
            scale,
        })
    }
}

fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::SymmetricNarrow => "symmetric_narrow",
        Scheme::SymmetricFull => "symmetric_full",
        Scheme::Affine => "affine",
    }
}

/// Inserts `FakeQuant` after `value`; scale and zero point become
/// initializers `{value}_fq_scale` / `{value}_fq_zero` (buffers, never
/// trained). Returns the new output's name.
pub fn insert_fake_quant(g: &mut Graph, value: &str, spec: &FakeQuantSpec) -> Result<String> {
    let n = spec.scale.len();
    if n == 0 || spec.zero_point.len() != n {
        return Err(TrainError::State(format!(
            "fake-quant of '{value}': {} scales and {} zero points",
            n,
            spec.zero_point.len()
        )));
    }
    let mut attrs = BTreeMap::new();
    attrs.insert("bits".into(), Attr::Int(spec.bits as i64));
    attrs.insert(
        "scheme".into(),
        Attr::String(scheme_name(spec.scheme).into()),
    );
    attrs.insert(
        "ste".into(),
        Attr::String(match spec.ste {
            Ste::Plain => "plain".into(),
            Ste::Clipped => "clipped".into(),
        }),
    );
    if let Some(a) = spec.axis {
        attrs.insert("axis".into(), Attr::Int(a as i64));
    }
    let shape = if n == 1 { vec![] } else { vec![n] };
    let zeros: Vec<f32> = spec.zero_point.iter().map(|&z| z as f32).collect();
    insert_after(
        g,
        value,
        "FakeQuant",
        "fq",
        vec![
            (
                "scale",
                Tensor::from_vec(shape.clone(), spec.scale.clone())?,
            ),
            ("zero", Tensor::from_vec(shape, zeros)?),
        ],
        attrs,
    )
}

/// Inserts `LsqQuant` (learned step size) after `value`, with the step
/// sizes as a trainable initializer `{value}_lsq_scale`, initialised to
/// Esser et al.'s `2·mean|x| / √qmax` from `init` (per tensor, or per channel
/// along `axis`). Returns the new output's name.
pub fn insert_lsq(
    g: &mut Graph,
    value: &str,
    bits: u32,
    scheme: Scheme,
    axis: Option<usize>,
    init: &Tensor,
) -> Result<String> {
    let v = init.to_f32_vec();
    let qmax = match scheme {
        Scheme::Affine => ((1i64 << bits) - 1) as f32,
        _ => ((1i64 << (bits.max(2) - 1)) - 1) as f32,
    };
    let step = |s: f64, n: usize| -> f32 {
        let m = s / n.max(1) as f64;
        if m > 0.0 {
            (2.0 * m / (qmax as f64).sqrt()) as f32
        } else {
            1.0
        }
    };
    let scale = match axis {
        None => vec![step(v.iter().map(|x| x.abs() as f64).sum(), v.len())],
        Some(a) => {
            if a >= init.rank() {
                return Err(TrainError::State(format!(
                    "axis {a} out of range for '{value}' of shape {:?}",
                    init.shape()
                )));
            }
            let c = init.shape()[a];
            let inner: usize = init.shape()[a + 1..].iter().product();
            let mut sums = vec![0f64; c];
            for (i, x) in v.iter().enumerate() {
                sums[(i / inner) % c] += x.abs() as f64;
            }
            sums.iter().map(|&s| step(s, v.len() / c)).collect()
        }
    };
    let mut attrs = BTreeMap::new();
    attrs.insert("bits".into(), Attr::Int(bits as i64));
    attrs.insert("scheme".into(), Attr::String(scheme_name(scheme).into()));
    if let Some(a) = axis {
        attrs.insert("axis".into(), Attr::Int(a as i64));
    }
    let shape = if scale.len() == 1 {
        vec![]
    } else {
        vec![scale.len()]
    };
    insert_after(
        g,
        value,
        "LsqQuant",
        "lsq",
        vec![("scale", Tensor::from_vec(shape, scale)?)],
        attrs,
    )
}

/// Inserts `Mask` after `value` with the given 0/1 mask (a buffer
/// initializer `{value}_mask_mask`).
pub fn insert_mask(g: &mut Graph, value: &str, mask: Tensor) -> Result<String> {
    insert_after(
        g,
        value,
        "Mask",
        "mask",
        vec![("mask", mask)],
        BTreeMap::new(),
    )
}

/// Inserts `SignSte` (binarisation with a clipped straight-through gradient).
pub fn insert_sign_ste(g: &mut Graph, value: &str) -> Result<String> {
    insert_after(g, value, "SignSte", "sign", vec![], BTreeMap::new())
}

/// Inserts `TernarySte` with threshold `factor·mean|x|` (TWN: 0.7) and the
/// TWN scale α.
pub fn insert_ternary_ste(g: &mut Graph, value: &str, factor: f32) -> Result<String> {
    let mut attrs = BTreeMap::new();
    attrs.insert("threshold_factor".into(), Attr::Float(factor));
    insert_after(g, value, "TernarySte", "tern", vec![], attrs)
}

/// Inserts `Detach` (stops gradients) after `value`.
pub fn insert_detach(g: &mut Graph, value: &str) -> Result<String> {
    insert_after(g, value, "Detach", "detach", vec![], BTreeMap::new())
}

/// The general form: a node `op_type` of domain `ai.shrink` reading
/// `value` then one initializer per `extra` (named `{value}_{tag}_{suffix}`),
/// placed right after `value`'s producer; every other reader of `value`
/// is rewired to the new output `{value}_{tag}`. Returns that name.
pub fn insert_after(
    g: &mut Graph,
    value: &str,
    op_type: &str,
    tag: &str,
    extra: Vec<(&str, Tensor)>,
    attrs: BTreeMap<String, Attr>,
) -> Result<String> {
    let produced = g.producers().get(value).copied();
    let known = produced.is_some()
        || g.initializers.contains_key(value)
        || g.inputs.iter().any(|i| i.name == value);
    if !known {
        return Err(TrainError::State(format!(
            "cannot insert {op_type}: '{value}' is not an initializer, input or node output"
        )));
    }
    let taken = |g: &Graph, n: &str| {
        g.initializers.contains_key(n)
            || g.inputs.iter().any(|i| i.name == n)
            || g.nodes.iter().any(|x| x.outputs.iter().any(|o| o == n))
    };
    let mut out = format!("{value}_{tag}");
    let mut k = 1;
    while taken(g, &out) {
        out = format!("{value}_{tag}{k}");
        k += 1;
    }
    let mut inputs = vec![value.to_string()];
    for (suffix, t) in extra {
        let name = format!("{out}_{suffix}");
        if taken(g, &name) {
            return Err(TrainError::State(format!(
                "initializer name '{name}' is taken"
            )));
        }
        g.initializers.insert(name.clone(), t);
        inputs.push(name);
    }
    for n in g.nodes.iter_mut() {
        for i in n.inputs.iter_mut() {
            if i == value {
                *i = out.clone();
            }
        }
    }
    let node = Node {
        name: format!("{value}/{op_type}"),
        op_type: op_type.to_string(),
        domain: SHRINK_DOMAIN.to_string(),
        inputs,
        outputs: vec![out.clone()],
        attrs,
    };
    let at = produced.map_or(0, |p| p + 1);
    g.nodes.insert(at, node);
    g.opsets.entry(SHRINK_DOMAIN.to_string()).or_insert(1);
    if let Some(vi) = g.value_info.get(value).cloned() {
        let mut vi = vi;
        vi.name = out.clone();
        g.value_info.insert(out.clone(), vi);
    }
    Ok(out)
}
