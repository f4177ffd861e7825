//! Shape and type inference.
//!
//! Walks the (topologically sorted) nodes once, computing each output's dtype
//! and shape from its inputs' and the node's attributes. Symbolic dimensions
//! (a dynamic batch `N`) flow through unchanged wherever the op leaves them
//! alone, so per-sample costs can be computed without fixing a batch size.
//! A dimension that depends on an unknown in a way we cannot name becomes
//! `Dim::Symbol("?")`.
//!
//! Small integer tensors that describe shapes (`Shape` -> `Gather` ->
//! `Concat` -> `Reshape`, as PyTorch exports them) are propagated as
//! partially symbolic values, so such reshapes resolve too.
//!
//! An op we have no rule for leaves its outputs unknown; it never fails the
//! whole inference (ops are added here, not guessed).

use crate::{Attr, DType, Dim, Graph, Node, Result, Tensor, ValueInfo};
use std::collections::HashMap;

const UNKNOWN: &str = crate::onnx::UNKNOWN_DIM;

fn unknown_dim() -> Dim {
    Dim::Symbol(UNKNOWN.to_string())
}

/// Fills `g.value_info` with the dtype and shape of every node output it can
/// infer (graph outputs' own declarations are completed instead), recursing
/// into `If`/`Loop`/`Scan` bodies.
pub fn infer_shapes(g: &mut Graph) -> Result<()> {
    let mut env = Env::default();
    let opset = g.opset();
    infer_graph(g, &mut env, opset);
    Ok(())
}

/// One element of a small integer tensor whose value we track: a number, or
/// a symbolic dimension (what `Shape` returns for a dynamic batch).
#[derive(Debug, Clone, PartialEq)]
enum SymInt {
    Val(i64),
    Sym(String),
}

/// The tracked value of a rank-0 or rank-1 integer tensor.
#[derive(Debug, Clone, PartialEq)]
struct SymVal {
    scalar: bool,
    items: Vec<SymInt>,
}

impl SymVal {
    fn ints(&self) -> Option<Vec<i64>> {
        self.items
            .iter()
            .map(|s| match s {
                SymInt::Val(v) => Some(*v),
                SymInt::Sym(_) => None,
            })
            .collect()
    }
}

#[derive(Default, Clone)]
struct Env {
    types: HashMap<String, ValueInfo>,
    consts: HashMap<String, Tensor>,
    syms: HashMap<String, SymVal>,
}

impl Env {
    fn ty(&self, name: &str) -> Option<&ValueInfo> {
        self.types.get(name)
    }

    fn shape(&self, name: &str) -> Option<&Vec<Dim>> {
        self.types.get(name)?.shape.as_ref()
    }

    fn dtype(&self, name: &str) -> Option<DType> {
        self.types.get(name)?.dtype
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.syms.get(name)?.ints()
    }

    fn floats(&self, name: &str) -> Option<Vec<f64>> {
        self.consts.get(name).map(|t| t.to_f64_vec())
    }
}

/// `opset` is the default-domain opset of the model (subgraphs declare none).
fn infer_graph(g: &mut Graph, env: &mut Env, opset: i64) {
    for v in g.inputs.iter().chain(g.value_info.values()) {
        env.types.insert(v.name.clone(), v.clone());
    }
    for (name, t) in &g.initializers {
        let dims = t.shape().iter().map(|&d| Dim::Known(d)).collect();
        env.types
            .insert(name.clone(), ValueInfo::new(name.clone(), t.dtype(), dims));
        env.consts.insert(name.clone(), t.clone());
        if t.rank() <= 1 && t.dtype().is_int() && t.len() <= 64 {
            env.syms.insert(
                name.clone(),
                SymVal {
                    scalar: t.rank() == 0,
                    items: t.to_i64_vec().into_iter().map(SymInt::Val).collect(),
                },
            );
        }
    }
    let output_names: Vec<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
    for i in 0..g.nodes.len() {
        infer_subgraphs(&mut g.nodes[i], env, opset);
        let node = &g.nodes[i];
        let outs = infer_node(node, env, opset);
        propagate_values(node, env);
        for (k, name) in node.outputs.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let Some((dtype, shape)) = outs.get(k).cloned() else {
                continue;
            };
            if dtype.is_none() && shape.is_none() {
                continue;
            }
            let vi = ValueInfo {
                name: name.clone(),
                dtype,
                shape,
            };
            env.types.insert(name.clone(), vi.clone());
            if !output_names.contains(name) {
                g.value_info.insert(name.clone(), vi);
            }
        }
    }
    for o in &mut g.outputs {
        if let Some(inf) = env.types.get(&o.name) {
            complete(o, inf);
        }
    }
}

/// Fills what a declaration leaves open from an inferred type; declared
/// facts win (a producer may know more than our rules).
fn complete(decl: &mut ValueInfo, inferred: &ValueInfo) {
    if decl.dtype.is_none() {
        decl.dtype = inferred.dtype;
    }
    match (&mut decl.shape, &inferred.shape) {
        (None, s) => decl.shape = s.clone(),
        (Some(d), Some(s)) if d.len() == s.len() => {
            for (a, b) in d.iter_mut().zip(s) {
                if *a == unknown_dim() {
                    *a = b.clone();
                }
            }
        }
        _ => {}
    }
}

/// Subgraphs see the enclosing scope's values (ONNX captures by name).
fn infer_subgraphs(node: &mut Node, env: &Env, opset: i64) {
    for a in node.attrs.values_mut() {
        match a {
            Attr::Graph(sg) => {
                let mut inner = env.clone();
                infer_graph(sg, &mut inner, opset);
            }
            Attr::Graphs(sgs) => {
                for sg in sgs {
                    let mut inner = env.clone();
                    infer_graph(sg, &mut inner, opset);
                }
            }
            _ => {}
        }
    }
}

type Out = (Option<DType>, Option<Vec<Dim>>);

fn same_as(env: &Env, name: Option<&str>) -> Out {
    match name.and_then(|n| env.ty(n)) {
        Some(v) => (v.dtype, v.shape.clone()),
        None => (None, None),
    }
}

/// Normalises a possibly negative axis for rank `r`.
fn axis_of(a: i64, r: usize) -> Option<usize> {
    let a = if a < 0 { a + r as i64 } else { a };
    (0..r as i64).contains(&a).then_some(a as usize)
}

fn dim_mul(dims: &[Dim]) -> Dim {
    let mut known = 1usize;
    let mut syms: Vec<&Dim> = Vec::new();
    for d in dims {
        match d {
            Dim::Known(n) => known = known.saturating_mul(*n),
            s => syms.push(s),
        }
    }
    match (syms.as_slice(), known) {
        ([], k) => Dim::Known(k),
        ([s], 1) => (*s).clone(),
        _ if known == 0 => Dim::Known(0),
        _ => unknown_dim(),
    }
}

/// numpy broadcasting of several shapes.
fn broadcast(shapes: &[&Vec<Dim>]) -> Option<Vec<Dim>> {
    let r = shapes.iter().map(|s| s.len()).max()?;
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let mut d: Option<Dim> = None;
        for s in shapes {
            let Some(k) = (i + s.len()).checked_sub(r) else {
                continue;
            };
            let x = &s[k];
            d = Some(match (d, x) {
                (None, x) => x.clone(),
                (Some(Dim::Known(1)), x) => x.clone(),
                (Some(a), Dim::Known(1)) => a,
                (Some(Dim::Known(a)), Dim::Known(b)) if a == *b => Dim::Known(a),
                (Some(Dim::Known(a)), Dim::Known(_)) => Dim::Known(a), // invalid model; keep first
                (Some(Dim::Known(a)), Dim::Symbol(_)) => Dim::Known(a),
                (Some(Dim::Symbol(_)), Dim::Known(b)) => Dim::Known(*b),
                (Some(Dim::Symbol(a)), Dim::Symbol(b)) if a == *b => Dim::Symbol(a),
                (Some(Dim::Symbol(_)), Dim::Symbol(_)) => unknown_dim(),
            });
        }
        out.push(d.unwrap_or(Dim::Known(1)));
    }
    Some(out)
}

fn broadcast_inputs(node: &Node, env: &Env, inputs: &[usize]) -> Option<Vec<Dim>> {
    let shapes: Option<Vec<&Vec<Dim>>> = inputs
        .iter()
        .map(|&i| node.input(i).and_then(|n| env.shape(n)))
        .collect();
    broadcast(&shapes?)
}

/// Output size of a sliding window along one axis (Conv, pooling).
fn window_out(
    input: &Dim,
    k: usize,
    stride: usize,
    dil: usize,
    pads: (usize, usize),
    auto_pad: &str,
    ceil: bool,
) -> Dim {
    let Dim::Known(n) = input else {
        return unknown_dim();
    };
    let stride = stride.max(1);
    let eff = dil.saturating_mul(k.max(1) - 1).saturating_add(1);
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => Dim::Known(n.div_ceil(stride)),
        "VALID" => Dim::Known(if *n >= eff { (n - eff) / stride + 1 } else { 0 }),
        _ => {
            let total = n.saturating_add(pads.0).saturating_add(pads.1);
            if total < eff {
                return Dim::Known(0);
            }
            let span = total - eff;
            let mut out = if ceil {
                span.div_ceil(stride)
            } else {
                span / stride
            } + 1;
            // ceil_mode: the last window must start inside the (left-padded) input.
            if ceil && (out - 1) * stride >= n.saturating_add(pads.0) {
                out -= 1;
            }
            Dim::Known(out)
        }
    }
}

fn usize_list(v: Option<&[i64]>, n: usize, default: usize) -> Vec<usize> {
    match v {
        Some(v) if v.len() == n => v.iter().map(|&x| x.max(0) as usize).collect(),
        _ => vec![default; n],
    }
}

/// Spatial output dims of Conv-like ops; `kernel` from the attribute or weight.
fn spatial_out(node: &Node, x: &[Dim], kernel: &[usize], ceil: bool) -> Vec<Dim> {
    let n = kernel.len();
    let strides = usize_list(node.attr_ints("strides").ok().flatten(), n, 1);
    let dils = usize_list(node.attr_ints("dilations").ok().flatten(), n, 1);
    let pads = usize_list(node.attr_ints("pads").ok().flatten(), 2 * n, 0);
    let auto_pad = node.attr_str("auto_pad", "NOTSET").unwrap_or("NOTSET");
    (0..n)
        .map(|i| {
            window_out(
                &x[2 + i],
                kernel[i],
                strides[i],
                dils[i],
                (pads[i], pads[i + n]),
                auto_pad,
                ceil,
            )
        })
        .collect()
}

fn conv_like(node: &Node, env: &Env, x_idx: usize, w_idx: usize) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(x_idx)?)?;
    let w = env.shape(node.input(w_idx)?)?;
    if x.len() < 3 || w.len() != x.len() {
        return None;
    }
    let kernel: Vec<usize> = match node.attr_ints("kernel_shape").ok().flatten() {
        Some(k) => k.iter().map(|&v| v.max(0) as usize).collect(),
        None => w[2..].iter().map(Dim::known).collect::<Option<_>>()?,
    };
    if kernel.len() != x.len() - 2 {
        return None;
    }
    let mut out = vec![x[0].clone(), w[0].clone()];
    out.extend(spatial_out(node, x, &kernel, false));
    Some(out)
}

fn conv_transpose(node: &Node, env: &Env) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let w = env.shape(node.input(1)?)?;
    if x.len() < 3 || w.len() != x.len() {
        return None;
    }
    let n = x.len() - 2;
    let group = node.attr_int("group", 1).ok()?.max(1) as usize;
    let m = match &w[1] {
        Dim::Known(c) => Dim::Known(c.saturating_mul(group)),
        _ => unknown_dim(),
    };
    let mut out = vec![x[0].clone(), m];
    if let Ok(Some(os)) = node.attr_ints("output_shape") {
        let os = &os[os.len().saturating_sub(n)..];
        out.extend(os.iter().map(|&v| Dim::Known(v.max(0) as usize)));
        return Some(out);
    }
    let kernel: Vec<usize> = match node.attr_ints("kernel_shape").ok().flatten() {
        Some(k) => k.iter().map(|&v| v.max(0) as usize).collect(),
        None => w[2..].iter().map(Dim::known).collect::<Option<_>>()?,
    };
    if kernel.len() != n {
        return None;
    }
    let strides = usize_list(node.attr_ints("strides").ok().flatten(), n, 1);
    let dils = usize_list(node.attr_ints("dilations").ok().flatten(), n, 1);
    let pads = usize_list(node.attr_ints("pads").ok().flatten(), 2 * n, 0);
    let opad = usize_list(node.attr_ints("output_padding").ok().flatten(), n, 0);
    let auto_pad = node.attr_str("auto_pad", "NOTSET").unwrap_or("NOTSET");
    for i in 0..n {
        out.push(match &x[2 + i] {
            Dim::Known(v) => {
                if auto_pad.starts_with("SAME") {
                    Dim::Known(v.saturating_mul(strides[i]))
                } else {
                    let full = strides[i]
                        .saturating_mul(v.max(&1) - 1)
                        .saturating_add(opad[i])
                        .saturating_add(kernel[i].saturating_sub(1).saturating_mul(dils[i]))
                        .saturating_add(1);
                    Dim::Known(full.saturating_sub(pads[i].saturating_add(pads[i + n])))
                }
            }
            _ => unknown_dim(),
        });
    }
    Some(out)
}

fn pool(node: &Node, env: &Env) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let kernel: Vec<usize> = node
        .attr_ints("kernel_shape")
        .ok()
        .flatten()?
        .iter()
        .map(|&v| v.max(0) as usize)
        .collect();
    if x.len() != kernel.len() + 2 {
        return None;
    }
    let ceil = node.attr_int("ceil_mode", 0).unwrap_or(0) != 0;
    let mut out = vec![x[0].clone(), x[1].clone()];
    out.extend(spatial_out(node, x, &kernel, ceil));
    Some(out)
}

fn matmul(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2: Vec<Dim> = if a.len() == 1 {
        vec![Dim::Known(1), a[0].clone()]
    } else {
        a.to_vec()
    };
    let b2: Vec<Dim> = if b.len() == 1 {
        vec![b[0].clone(), Dim::Known(1)]
    } else {
        b.to_vec()
    };
    let batch = broadcast(&[&a2[..a2.len() - 2].to_vec(), &b2[..b2.len() - 2].to_vec()])?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Some(out)
}

fn reduce(node: &Node, env: &Env, opset: i64) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let r = x.len();
    let axes_in_input = (node.op_type == "ReduceSum" && opset >= 13) || opset >= 18;
    let axes: Option<Vec<i64>> = if axes_in_input {
        match node.input(1) {
            Some(n) => Some(env.ints(n)?),
            None => node.attr_ints("axes").ok().flatten().map(<[i64]>::to_vec),
        }
    } else {
        node.attr_ints("axes").ok().flatten().map(<[i64]>::to_vec)
    };
    let keep = node.attr_int("keepdims", 1).ok()? != 0;
    let noop = node.attr_int("noop_with_empty_axes", 0).ok()? != 0;
    let axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a.iter().map(|&a| axis_of(a, r)).collect::<Option<_>>()?,
        _ if noop => return Some(x.clone()),
        _ => (0..r).collect(),
    };
    Some(
        x.iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), keep) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
            })
            .collect(),
    )
}

fn reshape(node: &Node, env: &Env) -> Option<Vec<Dim>> {
    let target = env.syms.get(node.input(1)?)?;
    let x = node.input(0).and_then(|n| env.shape(n));
    let allowzero = node.attr_int("allowzero", 0).unwrap_or(0) != 0;
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.items.len());
    for (i, t) in target.items.iter().enumerate() {
        out.push(match t {
            SymInt::Val(0) if !allowzero => Some(x?.get(i)?.clone()),
            SymInt::Val(-1) => None,
            SymInt::Val(v) if *v >= 0 => Some(Dim::Known(*v as usize)),
            SymInt::Val(_) => return None,
            SymInt::Sym(s) => Some(Dim::Symbol(s.clone())),
        });
    }
    if let Some(pos) = out.iter().position(Option::is_none) {
        let known_out: Vec<Dim> = out.iter().flatten().cloned().collect();
        out[pos] = Some(match x {
            Some(x) => divide_dims(x, &known_out),
            None => unknown_dim(),
        });
    }
    out.into_iter().collect()
}

/// `prod(num) / prod(den)` where both are products of dims: exact when known,
/// the leftover symbol when the known parts cancel.
fn divide_dims(num: &[Dim], den: &[Dim]) -> Dim {
    let mut num_syms: Vec<&String> = Vec::new();
    let mut den_syms: Vec<&String> = Vec::new();
    let (mut kn, mut kd) = (1usize, 1usize);
    for d in num {
        match d {
            Dim::Known(n) => kn = kn.saturating_mul(*n),
            Dim::Symbol(s) => num_syms.push(s),
        }
    }
    for d in den {
        match d {
            Dim::Known(n) => kd = kd.saturating_mul(*n),
            Dim::Symbol(s) => den_syms.push(s),
        }
    }
    // Cancel identical symbols.
    num_syms.retain(|s| {
        if *s == UNKNOWN {
            return true;
        }
        if let Some(p) = den_syms.iter().position(|d| d == s) {
            den_syms.remove(p);
            false
        } else {
            true
        }
    });
    if !den_syms.is_empty() || kd == 0 || kn % kd != 0 {
        return unknown_dim();
    }
    let k = kn / kd;
    match num_syms.as_slice() {
        [] => Dim::Known(k),
        [s] if k == 1 && *s != UNKNOWN => Dim::Symbol((*s).clone()),
        _ => unknown_dim(),
    }
}

/// Constant `starts`, `ends`, `axes`, `steps` of a Slice.
type SliceParams = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>);

fn slice_params(node: &Node, env: &Env, opset: i64) -> Option<SliceParams> {
    if opset < 10 {
        let starts = node.attr_ints("starts").ok().flatten()?.to_vec();
        let ends = node.attr_ints("ends").ok().flatten()?.to_vec();
        let axes = node
            .attr_ints("axes")
            .ok()
            .flatten()
            .map(<[i64]>::to_vec)
            .unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = vec![1; starts.len()];
        return Some((starts, ends, axes, steps));
    }
    let starts = env.ints(node.input(1)?)?;
    let ends = env.ints(node.input(2)?)?;
    let axes = match node.input(3) {
        Some(n) => env.ints(n)?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match node.input(4) {
        Some(n) => env.ints(n)?,
        None => vec![1; starts.len()],
    };
    Some((starts, ends, axes, steps))
}

/// Number of elements `Slice` keeps along an axis of length `n` (ONNX's clamping rules).
fn slice_len(n: i64, start: i64, end: i64, step: i64) -> i64 {
    if step == 0 {
        return 0;
    }
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let (s, e) = if step > 0 {
        (clamp(norm(start), 0, n), clamp(norm(end), 0, n))
    } else {
        (clamp(norm(start), -1, n - 1), clamp(norm(end), -1, n - 1))
    };
    // (span - 1) / |step| + 1 cannot overflow, unlike a rounded-up division.
    if step > 0 {
        if e > s {
            (e - s - 1) / step + 1
        } else {
            0
        }
    } else if s > e {
        (s - e - 1) / step.saturating_neg() + 1
    } else {
        0
    }
}

fn slice(node: &Node, env: &Env, opset: i64) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    if let Some(out) = slice_to_symbol(node, env, x, opset) {
        return Some(out);
    }
    let r = x.len();
    let (starts, ends, axes, steps) = slice_params(node, env, opset)?;
    let mut out = x.clone();
    for (k, &s) in starts.iter().enumerate() {
        let ax = axis_of(*axes.get(k)?, r)?;
        let (e, st) = (*ends.get(k)?, *steps.get(k)?);
        out[ax] = match &x[ax] {
            Dim::Known(n) => Dim::Known(slice_len(*n as i64, s, e, st).max(0) as usize),
            d if s == 0 && st == 1 && e >= i32::MAX as i64 => d.clone(),
            _ => unknown_dim(),
        };
    }
    Some(out)
}

/// `x[0:seq]` along one axis where `seq` is a symbolic length from `Shape`
/// (position embeddings cut to the sequence length): the result has length
/// `seq`, assuming the model is run within its table size.
fn slice_to_symbol(node: &Node, env: &Env, x: &[Dim], opset: i64) -> Option<Vec<Dim>> {
    if opset < 10 {
        return None;
    }
    let ends = env.syms.get(node.input(2)?)?;
    let [SymInt::Sym(sym)] = ends.items.as_slice() else {
        return None;
    };
    let starts = env.ints(node.input(1)?)?;
    let axis = match node.input(3) {
        Some(n) => *env.ints(n)?.first()?,
        None => 0,
    };
    let step = match node.input(4) {
        Some(n) => *env.ints(n)?.first()?,
        None => 1,
    };
    if starts != [0] || step != 1 {
        return None;
    }
    let mut out = x.to_vec();
    out[axis_of(axis, x.len())?] = Dim::Symbol(sym.clone());
    Some(out)
}

fn squeeze(node: &Node, env: &Env, opset: i64) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let axes = if opset >= 13 {
        match node.input(1) {
            Some(n) => Some(env.ints(n)?),
            None => None,
        }
    } else {
        node.attr_ints("axes").ok().flatten().map(<[i64]>::to_vec)
    };
    match axes {
        Some(a) => {
            let a: Vec<usize> = a
                .iter()
                .map(|&v| axis_of(v, x.len()))
                .collect::<Option<_>>()?;
            Some(
                x.iter()
                    .enumerate()
                    .filter(|(i, _)| !a.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect(),
            )
        }
        None if x.iter().all(|d| d.known().is_some()) => {
            Some(x.iter().filter(|d| **d != Dim::Known(1)).cloned().collect())
        }
        None => None,
    }
}

fn unsqueeze(node: &Node, env: &Env, opset: i64) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let axes = if opset >= 13 {
        env.ints(node.input(1)?)?
    } else {
        node.attr_ints("axes").ok().flatten()?.to_vec()
    };
    let r = x.len() + axes.len();
    let mut ax: Vec<usize> = axes.iter().map(|&a| axis_of(a, r)).collect::<Option<_>>()?;
    ax.sort_unstable();
    let mut out = Vec::with_capacity(r);
    let mut it = x.iter();
    for i in 0..r {
        if ax.contains(&i) {
            out.push(Dim::Known(1));
        } else {
            out.push(it.next()?.clone());
        }
    }
    Some(out)
}

fn concat(node: &Node, env: &Env) -> Option<Vec<Dim>> {
    let shapes: Vec<&Vec<Dim>> = node
        .inputs
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| env.shape(n))
        .collect::<Option<_>>()?;
    let first = shapes.first()?;
    let ax = axis_of(node.attr_int("axis", 0).ok()?, first.len())?;
    let mut out = (*first).clone();
    let mut total = Some(0usize);
    for s in &shapes {
        if s.len() != first.len() {
            return None;
        }
        total = match (total, &s[ax]) {
            (Some(t), Dim::Known(n)) => t.checked_add(*n),
            _ => None,
        };
        for (i, d) in s.iter().enumerate() {
            if i != ax {
                if let (Dim::Symbol(_), Dim::Known(_)) = (&out[i], d) {
                    out[i] = d.clone();
                }
            }
        }
    }
    out[ax] = total.map_or_else(unknown_dim, Dim::Known);
    Some(out)
}

fn split(node: &Node, env: &Env, opset: i64) -> Vec<Option<Vec<Dim>>> {
    let n_out = node.outputs.len();
    let none = vec![None; n_out];
    let Some(x) = node.input(0).and_then(|n| env.shape(n)) else {
        return none;
    };
    let Some(ax) = node
        .attr_int("axis", 0)
        .ok()
        .and_then(|a| axis_of(a, x.len()))
    else {
        return none;
    };
    let sizes: Option<Vec<i64>> = if opset >= 13 {
        match node.input(1) {
            Some(n) => match env.ints(n) {
                Some(v) => Some(v),
                // Sizes given at run time: only the rank is known.
                None => return vec![Some(vec![unknown_dim(); x.len()]); n_out],
            },
            None => None,
        }
    } else {
        node.attr_ints("split").ok().flatten().map(<[i64]>::to_vec)
    };
    let sizes: Vec<Dim> = match (sizes, &x[ax]) {
        (Some(s), _) => s.iter().map(|&v| Dim::Known(v.max(0) as usize)).collect(),
        (None, Dim::Known(total))
            if opset >= 18 && node.attr_int_opt("num_outputs").ok().flatten().is_some() =>
        {
            // opset 18: ceil-sized chunks, the last one smaller.
            let chunk = total.div_ceil(n_out.max(1));
            (0..n_out)
                .map(|i| Dim::Known(chunk.min(total.saturating_sub(i.saturating_mul(chunk)))))
                .collect()
        }
        (None, Dim::Known(total)) => {
            let chunk = total.div_ceil(n_out.max(1));
            (0..n_out)
                .map(|i| Dim::Known(chunk.min(total.saturating_sub(i.saturating_mul(chunk)))))
                .collect()
        }
        (None, _) => vec![unknown_dim(); n_out],
    };
    sizes
        .into_iter()
        .map(|d| {
            let mut s = x.clone();
            s[ax] = d;
            Some(s)
        })
        .collect()
}

fn gather(node: &Node, env: &Env) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let idx = env.shape(node.input(1)?)?;
    let ax = axis_of(node.attr_int("axis", 0).ok()?, x.len())?;
    let mut out: Vec<Dim> = x[..ax].to_vec();
    out.extend(idx.iter().cloned());
    out.extend(x[ax + 1..].iter().cloned());
    Some(out)
}

fn transpose(node: &Node, env: &Env) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    match node.attr_ints("perm").ok().flatten() {
        Some(p) => p
            .iter()
            .map(|&i| axis_of(i, x.len()).map(|i| x[i].clone()))
            .collect(),
        None => Some(x.iter().rev().cloned().collect()),
    }
}

fn flatten(node: &Node, env: &Env) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let a = node.attr_int("axis", 1).ok()?;
    let a = if a < 0 { a + x.len() as i64 } else { a };
    if a < 0 || a as usize > x.len() {
        return None;
    }
    let a = a as usize;
    Some(vec![dim_mul(&x[..a]), dim_mul(&x[a..])])
}

fn pad(node: &Node, env: &Env, opset: i64) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let r = x.len();
    let pads = if opset < 11 {
        node.attr_ints("pads").ok().flatten()?.to_vec()
    } else {
        env.ints(node.input(1)?)?
    };
    let axes: Vec<usize> = match node.input(3) {
        Some(n) => env
            .ints(n)?
            .iter()
            .map(|&a| axis_of(a, r))
            .collect::<Option<_>>()?,
        None => (0..r).collect(),
    };
    let k = axes.len();
    if pads.len() != 2 * k {
        return None;
    }
    let mut out = x.clone();
    for (j, &ax) in axes.iter().enumerate() {
        out[ax] = match &x[ax] {
            Dim::Known(n) => Dim::Known(
                (*n as i64)
                    .saturating_add(pads[j])
                    .saturating_add(pads[j + k])
                    .max(0) as usize,
            ),
            d if pads[j] == 0 && pads[j + k] == 0 => d.clone(),
            _ => unknown_dim(),
        };
    }
    Some(out)
}

fn resize(node: &Node, env: &Env, opset: i64) -> Option<Vec<Dim>> {
    let x = env.shape(node.input(0)?)?;
    let (scales_idx, sizes_idx) = if opset < 11 { (1, usize::MAX) } else { (2, 3) };
    if let Some(sizes) = node.input(sizes_idx).and_then(|n| env.ints(n)) {
        if !sizes.is_empty() {
            let axes = node.attr_ints("axes").ok().flatten();
            let mut out = x.clone();
            match axes {
                Some(a) => {
                    for (k, &ax) in a.iter().enumerate() {
                        out[axis_of(ax, x.len())?] = Dim::Known(*sizes.get(k)? as usize);
                    }
                }
                None if sizes.len() == x.len() => {
                    out = sizes
                        .iter()
                        .map(|&s| Dim::Known(s.max(0) as usize))
                        .collect()
                }
                None => return None,
            }
            return Some(out);
        }
    }
    let scales = node.input(scales_idx).and_then(|n| env.floats(n))?;
    let axes: Vec<usize> = match node.attr_ints("axes").ok().flatten() {
        Some(a) => a
            .iter()
            .map(|&v| axis_of(v, x.len()))
            .collect::<Option<_>>()?,
        None => (0..x.len()).collect(),
    };
    if scales.len() != axes.len() {
        return None;
    }
    let mut out = x.clone();
    for (k, &ax) in axes.iter().enumerate() {
        out[ax] = match &x[ax] {
            Dim::Known(n) => Dim::Known((*n as f64 * scales[k]).floor() as usize),
            d if scales[k] == 1.0 => d.clone(),
            _ => unknown_dim(),
        };
    }
    Some(out)
}

fn recurrent(node: &Node, env: &Env) -> Vec<Option<Vec<Dim>>> {
    let none = vec![None; node.outputs.len()];
    let Some(x) = node.input(0).and_then(|n| env.shape(n)) else {
        return none;
    };
    if x.len() != 3 {
        return none;
    }
    let Ok(Some(h)) = node.attr_int_opt("hidden_size") else {
        return none;
    };
    let h = Dim::Known(h.max(0) as usize);
    let dirs = Dim::Known(
        if node.attr_str("direction", "forward").unwrap_or("forward") == "bidirectional" {
            2
        } else {
            1
        },
    );
    let layout = node.attr_int("layout", 0).unwrap_or(0);
    let (seq, batch) = if layout == 0 {
        (x[0].clone(), x[1].clone())
    } else {
        (x[1].clone(), x[0].clone())
    };
    let (y, state) = if layout == 0 {
        (
            vec![seq, dirs.clone(), batch.clone(), h.clone()],
            vec![dirs, batch, h],
        )
    } else {
        (
            vec![batch.clone(), seq, dirs.clone(), h.clone()],
            vec![batch, dirs, h],
        )
    };
    let mut out = vec![Some(y), Some(state.clone())];
    if node.op_type == "LSTM" {
        out.push(Some(state));
    }
    out.truncate(node.outputs.len());
    out.resize(node.outputs.len(), None);
    out
}

fn if_outputs(node: &Node) -> Vec<Out> {
    let (Ok(t), Ok(e)) = (
        node.attr_graph("then_branch"),
        node.attr_graph("else_branch"),
    ) else {
        return vec![];
    };
    t.outputs
        .iter()
        .zip(&e.outputs)
        .map(|(a, b)| {
            let dtype = if a.dtype == b.dtype { a.dtype } else { None };
            let shape = match (&a.shape, &b.shape) {
                (Some(x), Some(y)) if x.len() == y.len() => Some(
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| if p == q { p.clone() } else { unknown_dim() })
                        .collect(),
                ),
                _ => None,
            };
            (dtype, shape)
        })
        .collect()
}

const UNARY_SAME: &[&str] = &[
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Erf",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Clip",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Celu",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Softplus",
    "Softsign",
    "Mish",
    "ThresholdedRelu",
    "Sign",
    "Identity",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "LRN",
    "InstanceNormalization",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "MeanVarianceNormalization",
    "CumSum",
    "Trilu",
    "Shrink",
    "PRelu",
    "ReverseSequence",
    "Dropout",
    "Not",
    "BitwiseNot",
];
const BINARY_SAME: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
];
const BINARY_BOOL: &[&str] = &[
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "And",
    "Or",
    "Xor",
];

/// dtype and shape of each output of `node` (None where unknown).
fn infer_node(node: &Node, env: &Env, opset: i64) -> Vec<Out> {
    if !node.domain.is_empty() && node.domain != "com.microsoft" {
        return vec![];
    }
    let op = node.op_type.as_str();
    let x0 = node.input(0);
    let dt = |i: usize| node.input(i).and_then(|n| env.dtype(n));
    let one = |o: Out| vec![o];
    match op {
        _ if UNARY_SAME.contains(&op) => {
            let mut outs = vec![same_as(env, x0)];
            match op {
                "Dropout" => outs.push((Some(DType::Bool), same_as(env, x0).1)),
                "BatchNormalization" => {
                    // Training-mode extra outputs: running mean/var of shape [C].
                    let c = env
                        .shape(x0.unwrap_or_default())
                        .and_then(|s| s.get(1).cloned());
                    for _ in 1..node.outputs.len() {
                        outs.push((dt(0), c.clone().map(|c| vec![c])));
                    }
                }
                "LayerNormalization" => {
                    let x = env.shape(x0.unwrap_or_default());
                    let axis = node.attr_int("axis", -1).unwrap_or(-1);
                    let stat = x.and_then(|x| {
                        let a = axis_of(axis, x.len())?;
                        Some(
                            x.iter()
                                .enumerate()
                                .map(|(i, d)| if i < a { d.clone() } else { Dim::Known(1) })
                                .collect(),
                        )
                    });
                    let stash = node
                        .attr_int("stash_type", 1)
                        .ok()
                        .and_then(|c| DType::from_onnx_code(c as i32));
                    for _ in 1..node.outputs.len() {
                        outs.push((stash, stat.clone()));
                    }
                }
                _ => {}
            }
            outs
        }
        _ if BINARY_SAME.contains(&op) => {
            let all: Vec<usize> = (0..node.inputs.len())
                .filter(|&i| node.input(i).is_some())
                .collect();
            one((dt(0), broadcast_inputs(node, env, &all)))
        }
        _ if BINARY_BOOL.contains(&op) => {
            one((Some(DType::Bool), broadcast_inputs(node, env, &[0, 1])))
        }
        "IsNaN" | "IsInf" => one((Some(DType::Bool), same_as(env, x0).1)),
        "Where" => one((dt(1), broadcast_inputs(node, env, &[0, 1, 2]))),
        "Cast" => {
            let to = node
                .attr_int("to", 0)
                .ok()
                .and_then(|c| DType::from_onnx_code(c as i32));
            one((to, same_as(env, x0).1))
        }
        "CastLike" => one((dt(1), same_as(env, x0).1)),
        "Conv" => one((dt(0), conv_like(node, env, 0, 1))),
        "ConvInteger" => one((Some(DType::I32), conv_like(node, env, 0, 1))),
        "QLinearConv" => one((dt(7), conv_like(node, env, 0, 3))),
        "ConvTranspose" => one((dt(0), conv_transpose(node, env))),
        "MaxPool" | "AveragePool" | "LpPool" => {
            let s = pool(node, env);
            vec![(dt(0), s.clone()), (Some(DType::I64), s)]
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let s = env.shape(x0.unwrap_or_default()).map(|x| {
                x.iter()
                    .enumerate()
                    .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) })
                    .collect()
            });
            one((dt(0), s))
        }
        "Gemm" => {
            let s = (|| {
                let a = env.shape(x0?)?;
                let b = env.shape(node.input(1)?)?;
                if a.len() != 2 || b.len() != 2 {
                    return None;
                }
                let ta = node.attr_int("transA", 0).ok()? != 0;
                let tb = node.attr_int("transB", 0).ok()? != 0;
                Some(vec![
                    a[if ta { 1 } else { 0 }].clone(),
                    b[if tb { 0 } else { 1 }].clone(),
                ])
            })();
            one((dt(0), s))
        }
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => {
            let b_idx = if op == "QLinearMatMul" { 3 } else { 1 };
            let s = (|| matmul(env.shape(x0?)?, env.shape(node.input(b_idx)?)?))();
            let d = match op {
                "MatMul" => dt(0),
                "MatMulInteger" => Some(DType::I32),
                _ => dt(7),
            };
            one((d, s))
        }
        "QuantizeLinear" => {
            let d = dt(2)
                .or_else(|| {
                    node.attr_int("output_dtype", 0)
                        .ok()
                        .and_then(|c| DType::from_onnx_code(c as i32))
                })
                .or(Some(DType::U8));
            one((d, same_as(env, x0).1))
        }
        "DequantizeLinear" => one((dt(1).or(Some(DType::F32)), same_as(env, x0).1)),
        "DynamicQuantizeLinear" => vec![
            (Some(DType::U8), same_as(env, x0).1),
            (Some(DType::F32), Some(vec![])),
            (Some(DType::U8), Some(vec![])),
        ],
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => {
            one((dt(0), reduce(node, env, opset)))
        }
        "ArgMax" | "ArgMin" => {
            let s = (|| {
                let x = env.shape(x0?)?;
                let ax = axis_of(node.attr_int("axis", 0).ok()?, x.len())?;
                let keep = node.attr_int("keepdims", 1).ok()? != 0;
                let mut s = x.clone();
                if keep {
                    s[ax] = Dim::Known(1);
                } else {
                    s.remove(ax);
                }
                Some(s)
            })();
            one((Some(DType::I64), s))
        }
        "Reshape" => one((dt(0), reshape(node, env))),
        "Flatten" => one((dt(0), flatten(node, env))),
        "Transpose" => one((dt(0), transpose(node, env))),
        "Concat" => one((dt(0), concat(node, env))),
        "Split" => split(node, env, opset)
            .into_iter()
            .map(|s| (dt(0), s))
            .collect(),
        "Slice" => one((dt(0), slice(node, env, opset))),
        "Squeeze" => one((dt(0), squeeze(node, env, opset))),
        "Unsqueeze" => one((dt(0), unsqueeze(node, env, opset))),
        "Gather" => one((dt(0), gather(node, env))),
        "GatherElements" => one((dt(0), same_as(env, node.input(1)).1)),
        "Shape" => {
            let s = env.shape(x0.unwrap_or_default()).map(|x| {
                let r = x.len() as i64;
                let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
                let start = clampi(node.attr_int("start", 0).unwrap_or(0));
                let end = clampi(node.attr_int("end", r).unwrap_or(r));
                vec![Dim::Known((end - start).max(0) as usize)]
            });
            one((Some(DType::I64), s))
        }
        "Size" => one((Some(DType::I64), Some(vec![]))),
        "Expand" => {
            let s = (|| {
                let x = env.shape(x0?)?;
                let target = env.syms.get(node.input(1)?)?;
                let t: Vec<Dim> = target
                    .items
                    .iter()
                    .map(|v| match v {
                        SymInt::Val(n) => Dim::Known((*n).max(0) as usize),
                        SymInt::Sym(s) => Dim::Symbol(s.clone()),
                    })
                    .collect();
                broadcast(&[x, &t])
            })();
            one((dt(0), s))
        }
        "Tile" => {
            let s = (|| {
                let x = env.shape(x0?)?;
                let reps = env.ints(node.input(1)?)?;
                if reps.len() != x.len() {
                    return None;
                }
                Some(
                    x.iter()
                        .zip(&reps)
                        .map(|(d, &r)| match d {
                            Dim::Known(n) => Dim::Known(n.saturating_mul(r.max(0) as usize)),
                            d if r == 1 => d.clone(),
                            _ => unknown_dim(),
                        })
                        .collect(),
                )
            })();
            one((dt(0), s))
        }
        "Pad" => one((dt(0), pad(node, env, opset))),
        "Resize" | "Upsample" => one((dt(0), resize(node, env, opset))),
        "ConstantOfShape" => {
            let d = match node.attr_tensor("value") {
                Ok(Some(t)) => Some(t.dtype()),
                _ => Some(DType::F32),
            };
            let s = node
                .input(0)
                .and_then(|n| env.ints(n))
                .map(|v| v.iter().map(|&x| Dim::Known(x.max(0) as usize)).collect());
            one((d, s))
        }
        "Range" => {
            let s = (|| {
                let start = env.floats(x0?)?;
                let limit = env.floats(node.input(1)?)?;
                let delta = env.floats(node.input(2)?)?;
                let n = ((limit.first()? - start.first()?) / delta.first()?)
                    .ceil()
                    .max(0.0);
                Some(vec![Dim::Known(n as usize)])
            })()
            .or(Some(vec![unknown_dim()]));
            one((dt(0), s))
        }
        "TopK" => {
            let s = (|| {
                let x = env.shape(x0?)?;
                let k = *env.ints(node.input(1)?)?.first()?;
                let ax = axis_of(node.attr_int("axis", -1).ok()?, x.len())?;
                let mut s = x.clone();
                s[ax] = Dim::Known(k.max(0) as usize);
                Some(s)
            })();
            vec![(dt(0), s.clone()), (Some(DType::I64), s)]
        }
        "NonZero" => {
            let r = env.shape(x0.unwrap_or_default()).map(|x| x.len());
            one((
                Some(DType::I64),
                r.map(|r| vec![Dim::Known(r), unknown_dim()]),
            ))
        }
        "LSTM" | "GRU" | "RNN" => recurrent(node, env)
            .into_iter()
            .map(|s| (dt(0), s))
            .collect(),
        "If" => if_outputs(node),
        _ => vec![],
    }
}

/// Tracks the values of small integer tensors that describe shapes.
fn propagate_values(node: &Node, env: &mut Env) {
    let Some(out) = node.outputs.first().filter(|o| !o.is_empty()) else {
        return;
    };
    let get = |i: usize| node.input(i).and_then(|n| env.syms.get(n)).cloned();
    let val = match node.op_type.as_str() {
        "Shape" => node.input(0).and_then(|n| env.shape(n)).map(|x| {
            let r = x.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(node.attr_int("start", 0).unwrap_or(0));
            let end = clampi(node.attr_int("end", r).unwrap_or(r));
            SymVal {
                scalar: false,
                items: x[start..end.max(start)]
                    .iter()
                    .map(|d| match d {
                        Dim::Known(n) => SymInt::Val(*n as i64),
                        Dim::Symbol(s) => SymInt::Sym(s.clone()),
                    })
                    .collect(),
            }
        }),
        "Identity" | "Cast" => get(0).filter(|_| {
            node.op_type == "Identity"
                || node
                    .attr_int("to", 0)
                    .ok()
                    .and_then(|c| DType::from_onnx_code(c as i32))
                    .is_some_and(DType::is_int)
        }),
        "Gather" if node.attr_int("axis", 0).unwrap_or(0) == 0 => (|| {
            let data = get(0)?;
            let idx = get(1)?;
            let n = data.items.len() as i64;
            let items = idx
                .ints()?
                .iter()
                .map(|&i| {
                    data.items
                        .get((if i < 0 { i + n } else { i }) as usize)
                        .cloned()
                })
                .collect::<Option<_>>()?;
            Some(SymVal {
                scalar: idx.scalar,
                items,
            })
        })(),
        "Concat" => node
            .inputs
            .iter()
            .map(|n| env.syms.get(n).cloned())
            .collect::<Option<Vec<_>>>()
            .map(|vs| SymVal {
                scalar: false,
                items: vs.into_iter().flat_map(|v| v.items).collect(),
            }),
        "Unsqueeze" => get(0).filter(|v| v.scalar).map(|v| SymVal {
            scalar: false,
            items: v.items,
        }),
        "Squeeze" => get(0).filter(|v| v.items.len() == 1).map(|v| SymVal {
            scalar: true,
            items: v.items,
        }),
        "Slice" => (|| {
            let data = get(0)?;
            let starts = get(1)?.ints()?;
            let ends = get(2)?.ints()?;
            let step = match node.input(4) {
                Some(_) => *get(4)?.ints()?.first()?,
                None => 1,
            };
            if step != 1 || starts.len() != 1 {
                return None;
            }
            let n = data.items.len() as i64;
            let norm = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
            let (s, e) = (norm(starts[0]), norm(*ends.first()?));
            Some(SymVal {
                scalar: false,
                items: data.items.get(s..e.max(s))?.to_vec(),
            })
        })(),
        "Size" => node
            .input(0)
            .and_then(|n| env.shape(n))
            .and_then(|x| {
                x.iter()
                    .try_fold(1i64, |acc, d| acc.checked_mul(d.known()? as i64))
            })
            .map(|n| SymVal {
                scalar: true,
                items: vec![SymInt::Val(n)],
            }),
        "Neg" => get(0).and_then(|v| {
            let items = v
                .ints()?
                .into_iter()
                .map(|x| SymInt::Val(x.wrapping_neg()))
                .collect();
            Some(SymVal {
                scalar: v.scalar,
                items,
            })
        }),
        // Integer fills describe shapes (e.g. a run of ones for reduced axes).
        "ConstantOfShape" => (|| {
            let shape = get(0)?.ints()?;
            let fill = match node.attr_tensor("value").ok()? {
                Some(t) if t.dtype().is_int() && t.len() == 1 => t.to_i64_vec()[0],
                _ => return None,
            };
            let [n] = shape.as_slice() else { return None };
            let n = usize::try_from(*n).ok().filter(|&n| n <= 64)?;
            Some(SymVal {
                scalar: false,
                items: vec![SymInt::Val(fill); n],
            })
        })(),
        "Add" | "Sub" | "Mul" | "Div" => (|| {
            let a = get(0)?;
            let b = get(1)?;
            let (x, y) = (a.ints()?, b.ints()?);
            let n = x.len().max(y.len());
            if !(x.len() == n || x.len() == 1) || !(y.len() == n || y.len() == 1) {
                return None;
            }
            let items = (0..n)
                .map(|i| {
                    let (p, q) = (x[i.min(x.len() - 1)], y[i.min(y.len() - 1)]);
                    match node.op_type.as_str() {
                        "Add" => Some(p.wrapping_add(q)),
                        "Sub" => Some(p.wrapping_sub(q)),
                        "Mul" => Some(p.wrapping_mul(q)),
                        _ => p.checked_div(q),
                    }
                    .map(SymInt::Val)
                })
                .collect::<Option<_>>()?;
            Some(SymVal {
                scalar: a.scalar && b.scalar,
                items,
            })
        })(),
        _ => None,
    };
    if let Some(v) = val {
        env.syms.insert(out.clone(), v);
    }
}

/// Every value's known type: graph inputs and outputs, `value_info`, and
/// initializers (which are fully known), by name.
pub fn value_types(g: &Graph) -> HashMap<&str, ValueInfo> {
    let mut m: HashMap<&str, ValueInfo> = HashMap::new();
    for v in g.value_info.values().chain(&g.inputs).chain(&g.outputs) {
        m.insert(v.name.as_str(), v.clone());
    }
    for (name, t) in &g.initializers {
        m.insert(
            name.as_str(),
            ValueInfo::new(
                name.clone(),
                t.dtype(),
                t.shape().iter().map(|&d| Dim::Known(d)).collect(),
            ),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Dim {
        Dim::Symbol(s.into())
    }

    #[test]
    fn broadcast_follows_numpy() {
        let a = vec![sym("N"), Dim::Known(3), Dim::Known(1)];
        let b = vec![Dim::Known(4)];
        assert_eq!(
            broadcast(&[&a, &b]).unwrap(),
            vec![sym("N"), Dim::Known(3), Dim::Known(4)]
        );
        let c = vec![Dim::Known(5), Dim::Known(1), Dim::Known(1)];
        assert_eq!(
            broadcast(&[&a, &c]).unwrap(),
            vec![Dim::Known(5), Dim::Known(3), Dim::Known(1)]
        );
    }

    #[test]
    fn slice_len_matches_python_slicing() {
        // Exhaustive over small ranges against Python/numpy semantics of range(*slice.indices(n)).
        for n in 0..6i64 {
            for s in -8..8 {
                for e in -8..8 {
                    for st in [-3, -2, -1, 1, 2, 3] {
                        let want = python_slice_len(n, s, e, st);
                        assert_eq!(slice_len(n, s, e, st), want, "n={n} {s}:{e}:{st}");
                    }
                }
            }
        }
    }

    /// CPython's PySlice_AdjustIndices.
    fn python_slice_len(n: i64, start: i64, stop: i64, step: i64) -> i64 {
        let adj = |v: i64, lo: i64, hi: i64| {
            if v < 0 {
                (v + n).max(lo)
            } else {
                v.min(hi)
            }
        };
        let (s, e) = if step > 0 {
            (adj(start, 0, n), adj(stop, 0, n))
        } else {
            (adj(start, -1, n - 1), adj(stop, -1, n - 1))
        };
        if step > 0 {
            if e > s {
                (e - s - 1) / step + 1
            } else {
                0
            }
        } else if s > e {
            (s - e - 1) / (-step) + 1
        } else {
            0
        }
    }

    #[test]
    fn divide_dims_cancels_symbols() {
        let num = vec![sym("N"), Dim::Known(16), Dim::Known(5), Dim::Known(5)];
        assert_eq!(divide_dims(&num, &[Dim::Known(400)]), sym("N"));
        assert_eq!(divide_dims(&num, &[sym("N")]), Dim::Known(400));
        assert_eq!(divide_dims(&num, &[Dim::Known(3)]), unknown_dim());
    }
}
