//! Shape and data-movement ops: Reshape, Flatten, Transpose, Concat, Split,
//! Slice, Squeeze, Unsqueeze, Gather, GatherElements, Shape, Size, Cast,
//! CastLike, Expand, Pad, ConstantOfShape, Range, Tile.
//!
//! These ops work for every element type: they compute where elements go
//! from shapes and attributes (checked against the input, so user data never
//! indexes out of bounds) and leave the copying to [`super::layout`].

use super::args::{attr_int, attr_ints, axes as norm_axes, axis, dim, ints, numel, opt_ints};
use super::broadcast::{broadcast_shapes, expand as expand_vec};
use super::layout::{append, axis_range, join_blocks, select, strided};
use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::{map_data, strides_of, DType, Tensor, TensorData};

pub(super) fn register(r: &mut Registry) {
    r.add("", "Reshape", reshape);
    r.add("", "Flatten", flatten);
    // Views: when the input dies here its storage becomes the output as is.
    r.add_inplace("", "Reshape", |c, x, i| {
        let s = reshape_dims(c, x.shape(), i)?;
        view_inplace(c, x, s)
    });
    r.add_inplace("", "Flatten", |c, x, _| {
        let s = flatten_dims(c, x.shape())?;
        view_inplace(c, x, s)
    });
    r.add_inplace("", "Squeeze", |c, x, i| {
        let s = squeeze_dims(c, x.shape(), i)?;
        view_inplace(c, x, s)
    });
    r.add_inplace("", "Unsqueeze", |c, x, i| {
        let s = unsqueeze_dims(c, x.shape(), i)?;
        view_inplace(c, x, s)
    });
    r.add("", "Transpose", transpose);
    r.add("", "Concat", concat);
    r.add("", "Split", split);
    r.add("", "Slice", slice);
    r.add("", "Squeeze", squeeze);
    r.add("", "Unsqueeze", unsqueeze);
    r.add("", "Gather", gather);
    r.add("", "GatherElements", gather_elements);
    r.add("", "Shape", shape);
    r.add("", "Size", size);
    r.add("", "Cast", cast);
    r.add("", "CastLike", cast_like);
    r.add("", "Expand", expand);
    r.add("", "Pad", pad);
    r.add("", "ConstantOfShape", constant_of_shape);
    r.add("", "Range", range);
    r.add("", "Tile", tile);
}

fn with_shape(ctx: &OpContext, x: &Tensor, shape: Vec<usize>) -> Result<Tensor> {
    x.clone()
        .reshape(shape)
        .map_err(|e| ctx.error(e.to_string()))
}

/// In-place form of a view op: `x` (dead after this node) takes `shape`
/// without a copy of its data.
fn view_inplace(ctx: &OpContext, x: &mut Tensor, shape: Vec<usize>) -> Result<bool> {
    let t = std::mem::replace(x, Tensor::zeros(x.dtype(), vec![0]));
    *x = t.reshape(shape).map_err(|e| ctx.error(e.to_string()))?;
    Ok(true)
}

/// Reshape: `0` copies the input's dimension (unless `allowzero`), one `-1`
/// takes what is left.
fn reshape(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let out = reshape_dims(ctx, x.shape(), inputs)?;
    Ok(vec![with_shape(ctx, x, out)?])
}

/// Output shape of Reshape for an input of shape `xs`.
fn reshape_dims(ctx: &OpContext, xs: &[usize], inputs: &[Option<&Tensor>]) -> Result<Vec<usize>> {
    let xlen: usize = xs.iter().product();
    let spec = if ctx.opset < 5 {
        attr_ints(ctx, "shape")?.ok_or_else(|| ctx.error("missing 'shape' attribute"))?
    } else {
        ints(ctx, ctx.required(inputs, 1)?, "shape")?
    };
    let allowzero = attr_int(ctx, "allowzero", 0)? != 0;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if infer.is_some() => {
                return Err(ctx.error(format!("shape {spec:?} has more than one -1")))
            }
            -1 => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*xs.get(i).ok_or_else(|| {
                ctx.error(format!(
                    "shape {spec:?} copies dimension {i} (0) but the input {xs:?} has rank {}",
                    xs.len()
                ))
            })?),
            s => out.push(dim(ctx, s, "shape")?),
        }
    }
    if let Some(i) = infer {
        let known = numel(ctx, &out, "shape")?;
        if known == 0 || !xlen.is_multiple_of(known) {
            return Err(ctx.error(format!(
                "cannot infer the -1 in {spec:?} for an input of shape {xs:?}"
            )));
        }
        out[i] = xlen / known;
    }
    Ok(out)
}

fn flatten(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let out = flatten_dims(ctx, x.shape())?;
    Ok(vec![with_shape(ctx, x, out)?])
}

/// Output shape of Flatten for an input of shape `xs`.
fn flatten_dims(ctx: &OpContext, xs: &[usize]) -> Result<Vec<usize>> {
    let a = attr_int(ctx, "axis", 1)?;
    let r = xs.len() as i64;
    if a < -r || a > r {
        return Err(ctx.error(format!("axis {a} out of range for rank {r}")));
    }
    let a = if a < 0 { a + r } else { a } as usize;
    let outer: usize = xs[..a].iter().product();
    let inner: usize = xs[a..].iter().product();
    Ok(vec![outer, inner])
}

fn transpose(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let rank = x.rank();
    let perm = match attr_ints(ctx, "perm")? {
        Some(p) => {
            let p = norm_axes(ctx, &p, rank)?;
            if p.len() != rank {
                return Err(ctx.error(format!("perm {p:?} does not cover rank {rank}")));
            }
            p
        }
        None => (0..rank).rev().collect(),
    };
    let st = strides_of(x.shape());
    let dims: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let strides: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
    let data = strided(x.data(), 0, &dims, &strides);
    Ok(vec![Tensor::new(dims, data)?])
}

fn concat(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let parts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let first = *parts
        .first()
        .ok_or_else(|| ctx.error("needs at least one input"))?;
    let ax = axis(ctx, attr_int(ctx, "axis", 0)?, first.rank())?;
    let mut out_shape = first.shape().to_vec();
    out_shape[ax] = 0;
    for p in &parts {
        let same = p.rank() == first.rank()
            && (0..p.rank()).all(|d| d == ax || p.shape()[d] == first.shape()[d]);
        if !same {
            return Err(ctx.error(format!(
                "input shapes {:?} and {:?} differ outside axis {ax}",
                first.shape(),
                p.shape()
            )));
        }
        out_shape[ax] += p.shape()[ax];
    }
    let outer: usize = first.shape()[..ax].iter().product();
    let inner: usize = first.shape()[ax + 1..].iter().product();
    let blocks: Vec<usize> = parts.iter().map(|p| p.shape()[ax] * inner).collect();
    let datas: Vec<&TensorData> = parts.iter().map(|p| p.data()).collect();
    let data = join_blocks(&datas, &blocks, outer)
        .ok_or_else(|| ctx.error("inputs have different dtypes"))?;
    Ok(vec![Tensor::new(out_shape, data)?])
}

/// Split along `axis` by explicit sizes (attribute before opset 13, input
/// from 13), into `num_outputs` parts (opset 18; the last may be smaller), or
/// into as many equal parts as the node has outputs.
fn split(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let ax = axis(ctx, attr_int(ctx, "axis", 0)?, x.rank())?;
    let n = x.shape()[ax];
    let sizes_spec = if ctx.opset < 13 {
        attr_ints(ctx, "split")?
    } else {
        opt_ints(ctx, inputs, 1, "split")?
    };
    let outputs = ctx.node.outputs.len();
    let sizes: Vec<usize> = match sizes_spec {
        Some(s) => s
            .iter()
            .map(|&v| dim(ctx, v, "split"))
            .collect::<Result<_>>()?,
        None => {
            let parts = match ctx.node.attr("num_outputs") {
                Some(_) => attr_int(ctx, "num_outputs", 0)?,
                None => outputs as i64,
            };
            if parts < 1 {
                return Err(ctx.error(format!("cannot split into {parts} parts")));
            }
            let parts = parts as usize;
            let chunk = if ctx.node.attr("num_outputs").is_some() {
                n.div_ceil(parts)
            } else if n % parts != 0 {
                return Err(ctx.error(format!(
                    "axis {ax} of size {n} does not split into {parts} equal parts"
                )));
            } else {
                n / parts
            };
            (0..parts)
                .map(|i| chunk.min(n.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != n {
        return Err(ctx.error(format!(
            "split sizes {sizes:?} do not add up to axis {ax} of size {n}"
        )));
    }
    let outer: usize = x.shape()[..ax].iter().product();
    let inner: usize = x.shape()[ax + 1..].iter().product();
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for &len in &sizes {
        let data = axis_range(x.data(), (outer, n, inner), start, len);
        let mut shape = x.shape().to_vec();
        shape[ax] = len;
        out.push(Tensor::new(shape, data)?);
        start += len;
    }
    Ok(out)
}

/// Slice with ONNX clamping: negative starts/ends count from the end, then
/// clamp to `[0, d]` (`[-1, d-1]` for ends of negative steps).
fn slice(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let rank = x.rank();
    let (starts, ends, axes_spec, steps) = if ctx.opset < 10 {
        (
            attr_ints(ctx, "starts")?.ok_or_else(|| ctx.error("missing 'starts'"))?,
            attr_ints(ctx, "ends")?.ok_or_else(|| ctx.error("missing 'ends'"))?,
            attr_ints(ctx, "axes")?,
            None,
        )
    } else {
        (
            ints(ctx, ctx.required(inputs, 1)?, "starts")?,
            ints(ctx, ctx.required(inputs, 2)?, "ends")?,
            opt_ints(ctx, inputs, 3, "axes")?,
            opt_ints(ctx, inputs, 4, "steps")?,
        )
    };
    let axes_list = axes_spec.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes_list.len() != starts.len() || steps.len() != starts.len()
    {
        return Err(ctx.error(format!(
            "starts ({}), ends ({}), axes ({}) and steps ({}) must have the same length",
            starts.len(),
            ends.len(),
            axes_list.len(),
            steps.len()
        )));
    }
    let axes_n = norm_axes(ctx, &axes_list, rank)?;
    let st = strides_of(x.shape());
    let mut dims = x.shape().to_vec();
    let mut strides: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let mut base = 0usize;
    for (k, &a) in axes_n.iter().enumerate() {
        let d = x.shape()[a] as i64;
        let step = steps[k];
        if step == 0 {
            return Err(ctx.error(format!("step for axis {a} is 0")));
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (s, e) = (norm(starts[k]), norm(ends[k]));
        // i128: a step of ±i64::MAX must not overflow the count arithmetic.
        let (s, count): (i64, i128) = if d == 0 {
            (0, 0)
        } else if step > 0 {
            let (s, e) = (s.clamp(0, d), e.clamp(0, d));
            let span = (e - s) as i128;
            (
                s,
                if span > 0 {
                    (span + step as i128 - 1) / step as i128
                } else {
                    0
                },
            )
        } else {
            let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
            let (span, st) = ((s - e) as i128, -(step as i128));
            (s, if span > 0 { (span + st - 1) / st } else { 0 })
        };
        dims[a] = count as usize;
        if count > 0 {
            base += s as usize * st[a];
        }
        // With at most one element along the axis its stride is never used;
        // zero it so a huge step cannot overflow the offset arithmetic.
        strides[a] = if count > 1 {
            st[a] as isize * step as isize
        } else {
            0
        };
    }
    let data = if dims.iter().product::<usize>() == 0 {
        TensorData::zeros(x.dtype(), 0)
    } else {
        strided(x.data(), base, &dims, &strides)
    };
    Ok(vec![Tensor::new(dims, data)?])
}

/// Axes from the attribute (before opset 13) or input #1.
fn axes_arg(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>> {
    if ctx.opset < 13 {
        attr_ints(ctx, "axes")
    } else {
        opt_ints(ctx, inputs, 1, "axes")
    }
}

fn squeeze(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let shape = squeeze_dims(ctx, x.shape(), inputs)?;
    Ok(vec![with_shape(ctx, x, shape)?])
}

/// Output shape of Squeeze for an input of shape `xs`.
fn squeeze_dims(ctx: &OpContext, xs: &[usize], inputs: &[Option<&Tensor>]) -> Result<Vec<usize>> {
    let drop = match axes_arg(ctx, inputs)? {
        Some(a) => {
            let a = norm_axes(ctx, &a, xs.len())?;
            if let Some(&bad) = a.iter().find(|&&i| xs[i] != 1) {
                return Err(ctx.error(format!(
                    "cannot squeeze axis {bad} of size {} (shape {xs:?})",
                    xs[bad]
                )));
            }
            a
        }
        None => (0..xs.len()).filter(|&i| xs[i] == 1).collect(),
    };
    Ok((0..xs.len())
        .filter(|i| !drop.contains(i))
        .map(|i| xs[i])
        .collect())
}

fn unsqueeze(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let shape = unsqueeze_dims(ctx, x.shape(), inputs)?;
    Ok(vec![with_shape(ctx, x, shape)?])
}

/// Output shape of Unsqueeze for an input of shape `xs`.
fn unsqueeze_dims(ctx: &OpContext, xs: &[usize], inputs: &[Option<&Tensor>]) -> Result<Vec<usize>> {
    let a = axes_arg(ctx, inputs)?.ok_or_else(|| ctx.error("axes are required"))?;
    let rank = xs.len() + a.len();
    let a = norm_axes(ctx, &a, rank)?;
    let mut rest = xs.iter();
    Ok((0..rank)
        .map(|i| {
            if a.contains(&i) {
                1
            } else {
                *rest.next().unwrap_or(&1)
            }
        })
        .collect())
}

/// Index values checked against `n` (negative ones count from the end).
fn checked_indices(ctx: &OpContext, idx: &Tensor, n: usize) -> Result<Vec<usize>> {
    ints(ctx, idx, "indices")?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + n as i64 } else { i };
            if j < 0 || j >= n as i64 {
                Err(ctx.error(format!("index {i} is out of range for a dimension of {n}")))
            } else {
                Ok(j as usize)
            }
        })
        .collect()
}

fn gather(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let idx_t = ctx.required(inputs, 1)?;
    if x.rank() == 0 {
        return Err(ctx.error("cannot gather from a scalar"));
    }
    let ax = axis(ctx, attr_int(ctx, "axis", 0)?, x.rank())?;
    let n = x.shape()[ax];
    let idx = checked_indices(ctx, idx_t, n)?;
    let outer: usize = x.shape()[..ax].iter().product();
    let inner: usize = x.shape()[ax + 1..].iter().product();
    let data = map_data!(x.data(), v => {
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in &idx {
                let s = (o * n + i) * inner;
                out.extend_from_slice(&v[s..s + inner]);
            }
        }
        out
    });
    let mut shape = x.shape()[..ax].to_vec();
    shape.extend_from_slice(idx_t.shape());
    shape.extend_from_slice(&x.shape()[ax + 1..]);
    Ok(vec![Tensor::new(shape, data)?])
}

fn gather_elements(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let idx_t = ctx.required(inputs, 1)?;
    let ax = axis(ctx, attr_int(ctx, "axis", 0)?, x.rank())?;
    if idx_t.rank() != x.rank() {
        return Err(ctx.error(format!(
            "indices rank {} differs from data rank {}",
            idx_t.rank(),
            x.rank()
        )));
    }
    let idx = checked_indices(ctx, idx_t, x.shape()[ax])?;
    let xs = strides_of(x.shape());
    let is = idx_t.shape();
    if (0..x.rank()).any(|d| d != ax && is[d] > x.shape()[d]) {
        return Err(ctx.error(format!(
            "indices shape {is:?} exceeds data shape {:?} outside axis {ax}",
            x.shape()
        )));
    }
    let ist = strides_of(is);
    let pos: Vec<usize> = idx
        .iter()
        .enumerate()
        .map(|(flat, &i)| {
            (0..x.rank())
                .map(|d| {
                    let c = if d == ax { i } else { flat / ist[d] % is[d] };
                    c * xs[d]
                })
                .sum()
        })
        .collect();
    Ok(vec![Tensor::new(is.to_vec(), select(x.data(), &pos))?])
}

/// Shape, optionally sliced by `start`/`end` (opset 15, clamped like Slice).
fn shape(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let r = x.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(attr_int(ctx, "start", 0)?);
    let end = clamp(attr_int(ctx, "end", r)?);
    let dims: Vec<i64> = x.shape()[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(vec![Tensor::from_vec(vec![dims.len()], dims)?])
}

fn size(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    Ok(vec![Tensor::scalar(ctx.required(inputs, 0)?.len() as i64)])
}

fn cast(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let code = ctx
        .node
        .attr_int_opt("to")
        .map_err(|e| ctx.error(e.to_string()))?
        .ok_or_else(|| ctx.error("missing 'to' attribute"))?;
    let to = DType::from_onnx_code(code as i32)
        .ok_or_else(|| ctx.error(format!("target type code {code} is not supported")))?;
    Ok(vec![cast_tensor(x, to, saturate(ctx)?)])
}

/// Cast's `saturate` attribute (opset 19, default 1): whether out-of-range
/// values cast to a float8 type clamp to its largest finite value.
fn saturate(ctx: &OpContext) -> Result<bool> {
    let s = ctx
        .node
        .attr_int("saturate", 1)
        .map_err(|e| ctx.error(e.to_string()))?;
    Ok(s != 0)
}

/// ONNX Cast; floats print as the shortest string that reads back to the same
/// value *in their own type* (`0.039187793`, not the f64 expansion of it), and
/// f32 -> bfloat16 truncates the low mantissa bits as the ONNX reference does
/// (its backend data match truncation bit for bit, round-to-nearest-even only
/// 58% of the time).
fn cast_tensor(x: &Tensor, to: DType, saturate: bool) -> Tensor {
    if let (DType::BF16, TensorData::F32(v)) = (to, x.data()) {
        let b: Vec<half::bf16> = v
            .iter()
            .map(|&a| {
                if a.is_nan() {
                    half::bf16::NAN
                } else {
                    half::bf16::from_bits((a.to_bits() >> 16) as u16)
                }
            })
            .collect();
        if let Ok(t) = Tensor::new(x.shape().to_vec(), TensorData::BF16(b)) {
            return t;
        }
    }
    let short = |v: f32| {
        if v.is_nan() {
            "NaN".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "INF" } else { "-INF" }.to_string()
        } else {
            v.to_string()
        }
    };
    let strings: Option<Vec<String>> = match (to, x.data()) {
        (DType::String, TensorData::F32(v)) => Some(v.iter().map(|&a| short(a)).collect()),
        _ => None,
    };
    match strings.map(|s| Tensor::new(x.shape().to_vec(), TensorData::String(s))) {
        Some(Ok(t)) => t,
        _ => x.cast_saturate(to, saturate),
    }
}

fn cast_like(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let to = ctx.required(inputs, 1)?.dtype();
    Ok(vec![cast_tensor(x, to, saturate(ctx)?)])
}

/// A shape given as a 1-D integer tensor.
fn shape_input(ctx: &OpContext, t: &Tensor, what: &str) -> Result<Vec<usize>> {
    if t.rank() > 1 {
        return Err(ctx.error(format!("{what} must be 1-D, has shape {:?}", t.shape())));
    }
    ints(ctx, t, what)?
        .into_iter()
        .map(|v| dim(ctx, v, what))
        .collect()
}

fn expand(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let target = shape_input(ctx, ctx.required(inputs, 1)?, "shape")?;
    let out = broadcast_shapes(x.shape(), &target).ok_or_else(|| {
        ctx.error(format!(
            "input shape {:?} does not broadcast with {target:?}",
            x.shape()
        ))
    })?;
    numel(ctx, &out, "expanded shape")?;
    let data = map_data!(x.data(), v => expand_vec(v, x.shape(), &out));
    Ok(vec![Tensor::new(out, data)?])
}

/// Pad in `constant` (default), `reflect`, `edge` or `wrap` mode. Pads come
/// from the attribute before opset 11, else input #1; negative pads crop.
fn pad(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let rank = x.rank();
    let mode = ctx
        .node
        .attr_str("mode", "constant")
        .map_err(|e| ctx.error(e.to_string()))?
        .to_string();
    let (pads, fill) = if ctx.opset < 11 {
        let p = attr_ints(ctx, "pads")?.ok_or_else(|| ctx.error("missing 'pads'"))?;
        let v = ctx
            .node
            .attr_float("value", 0.0)
            .map_err(|e| ctx.error(e.to_string()))?;
        (p, Tensor::scalar(v).cast(x.dtype()))
    } else {
        let p = ints(ctx, ctx.required(inputs, 1)?, "pads")?;
        let v = match inputs.get(2).copied().flatten() {
            Some(v) if v.len() == 1 && v.dtype() == x.dtype() => v.clone(),
            Some(v) => {
                return Err(ctx.error(format!(
                    "constant_value must be one {} value, got {} of shape {:?}",
                    x.dtype(),
                    v.dtype(),
                    v.shape()
                )))
            }
            None => Tensor::zeros(x.dtype(), vec![]),
        };
        (p, v)
    };
    let axes_list = match opt_ints(ctx, inputs, 3, "axes")? {
        Some(a) => norm_axes(ctx, &a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes_list.len() {
        return Err(ctx.error(format!(
            "pads has {} values, expected {} (2 per padded axis)",
            pads.len(),
            2 * axes_list.len()
        )));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (k, &a) in axes_list.iter().enumerate() {
        begin[a] = pads[k];
        end[a] = pads[k + axes_list.len()];
    }
    let shape = x.shape();
    let mut out_shape = Vec::with_capacity(rank);
    for d in 0..rank {
        let n = shape[d] as i64 + begin[d] + end[d];
        out_shape.push(dim(ctx, n, "padded shape")?);
        if mode != "constant" && shape[d] == 0 && n > 0 {
            return Err(ctx.error(format!("cannot {mode}-pad axis {d} of size 0")));
        }
    }
    if !["constant", "reflect", "edge", "wrap"].contains(&mode.as_str()) {
        return Err(ctx.error(format!("unknown mode '{mode}'")));
    }
    // Every output element's source: an input offset, or the fill (index n).
    let n = x.len();
    let total = numel(ctx, &out_shape, "padded shape")?;
    let st = strides_of(shape);
    let mut idx = vec![0usize; rank];
    let mut pos = Vec::with_capacity(total);
    for _ in 0..total {
        let mut off = Some(0usize);
        for d in 0..rank {
            let len = shape[d] as i64;
            let c = idx[d] as i64 - begin[d];
            let src = if (0..len).contains(&c) {
                Some(c)
            } else {
                match mode.as_str() {
                    "edge" => Some(c.clamp(0, len - 1)),
                    "wrap" => Some(c.rem_euclid(len)),
                    "reflect" if len == 1 => Some(0),
                    "reflect" => {
                        let period = 2 * (len - 1);
                        let m = c.rem_euclid(period);
                        Some(if m >= len { period - m } else { m })
                    }
                    _ => None,
                }
            };
            off = match (off, src) {
                (Some(o), Some(s)) => Some(o + s as usize * st[d]),
                _ => None,
            };
        }
        pos.push(off.unwrap_or(n));
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let source = append(x.data(), fill.data())
        .ok_or_else(|| ctx.error("constant_value dtype differs from the input"))?;
    Ok(vec![Tensor::new(out_shape, select(&source, &pos))?])
}

fn constant_of_shape(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let shape = shape_input(ctx, ctx.required(inputs, 0)?, "shape")?;
    let value = ctx
        .node
        .attr_tensor("value")
        .map_err(|e| ctx.error(e.to_string()))?
        .cloned()
        .unwrap_or_else(|| Tensor::scalar(0f32));
    if value.len() != 1 {
        return Err(ctx.error(format!(
            "value must hold one element, has shape {:?}",
            value.shape()
        )));
    }
    let n = numel(ctx, &shape, "shape")?;
    fn fill<T: Clone>(v: &[T], n: usize) -> Vec<T> {
        vec![v[0].clone(); n]
    }
    let data = map_data!(value.data(), v => fill(v, n));
    Ok(vec![Tensor::new(shape, data)?])
}

/// `start, start + delta, …` while short of `limit`; integers stay exact.
fn range(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let start = ctx.required(inputs, 0)?;
    let limit = ctx.required(inputs, 1)?;
    let delta = ctx.required(inputs, 2)?;
    let dt = start.dtype();
    for t in [start, limit, delta] {
        if t.len() != 1 || t.dtype() != dt {
            return Err(ctx.error(format!(
                "start, limit and delta must be scalars of one type, got {} {:?}",
                t.dtype(),
                t.shape()
            )));
        }
    }
    if dt.is_int() {
        let (s, l, d) = (
            start.to_i64_vec()[0],
            limit.to_i64_vec()[0],
            delta.to_i64_vec()[0],
        );
        if d == 0 {
            return Err(ctx.error("delta is 0"));
        }
        let n = ((l as i128 - s as i128) + d as i128 - d.signum() as i128) / d as i128;
        let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
        numel(ctx, &[n], "range")?;
        let v: Vec<i64> = (0..n as i64).map(|i| s + i * d).collect();
        let t = Tensor::from_vec(vec![n], v)?;
        return Ok(vec![t.cast(dt)]);
    }
    if !dt.is_float() {
        return Err(ctx.error(format!("dtype {dt} is not supported")));
    }
    let (s, l, d) = (
        start.to_f64_vec()[0],
        limit.to_f64_vec()[0],
        delta.to_f64_vec()[0],
    );
    if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
        return Err(ctx.error(format!("range {s}..{l} step {d} is not finite")));
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    numel(ctx, &[n], "range")?;
    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    Ok(vec![Tensor::from_vec(vec![n], v)?.cast(dt)])
}

/// Tile as a broadcast: `[d0, d1]` viewed as `[1, d0, 1, d1]` and expanded to
/// `[r0, d0, r1, d1]` is exactly the tiled `[r0*d0, r1*d1]` in row-major order.
fn tile(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let reps = ints(ctx, ctx.required(inputs, 1)?, "repeats")?;
    if reps.len() != x.rank() {
        return Err(ctx.error(format!(
            "repeats has {} values for an input of rank {}",
            reps.len(),
            x.rank()
        )));
    }
    let mut from = Vec::with_capacity(2 * x.rank());
    let mut to = Vec::with_capacity(2 * x.rank());
    let mut out = Vec::with_capacity(x.rank());
    for (&d, &r) in x.shape().iter().zip(&reps) {
        let r = dim(ctx, r, "repeats")?;
        from.extend([1, d]);
        to.extend([r, d]);
        out.push(r.saturating_mul(d));
    }
    numel(ctx, &out, "tiled shape")?;
    let data = map_data!(x.data(), v => expand_vec(v, &from, &to));
    Ok(vec![Tensor::new(out, data)?])
}

#[cfg(test)]
mod tests {
    use crate::ops::testing::{run_op, run_op_at, run_op_err};
    use shrink_graph::{Attr, Node};
    use shrink_tensor::{DType, Tensor};

    fn i64s(v: &[i64]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }
    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape.to_vec(), (0..n as i32).collect()).unwrap()
    }

    #[test]
    fn reshape_zero_minus_one_and_allowzero() {
        let x = iota(&[2, 3, 4]);
        let out = run_op(
            Node::new("n", "Reshape", &["x", "s"], &["y"]),
            &[&x, &i64s(&[0, -1])],
        );
        assert_eq!(out[0].shape(), &[2, 12]);
        let e = run_op_err(
            Node::new("n", "Reshape", &["x", "s"], &["y"]),
            &[&x, &i64s(&[-1, -1])],
        );
        assert!(e.contains("more than one -1"), "{e}");
        let e = run_op_err(
            Node::new("n", "Reshape", &["x", "s"], &["y"]),
            &[&x, &i64s(&[5, -1])],
        );
        assert!(e.contains("cannot infer"), "{e}");
        let z = Tensor::from_vec(vec![0, 3], Vec::<f32>::new()).unwrap();
        let n = Node::new("n", "Reshape", &["x", "s"], &["y"]).with("allowzero", Attr::Int(1));
        assert_eq!(run_op(n, &[&z, &i64s(&[3, 0])])[0].shape(), &[3, 0]);
    }

    #[test]
    fn transpose_matches_index_definition() {
        let x = iota(&[2, 3, 4]);
        let n = Node::new("n", "Transpose", &["x"], &["y"]).with("perm", Attr::Ints(vec![1, 2, 0]));
        let out = run_op(n, &[&x]);
        assert_eq!(out[0].shape(), &[3, 4, 2]);
        let y = out[0].as_slice::<i32>().unwrap();
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    assert_eq!(y[(j * 4 + k) * 2 + i], ((i * 3 + j) * 4 + k) as i32);
                }
            }
        }
    }

    #[test]
    fn slice_negative_steps_and_clamping() {
        let x = iota(&[10]);
        let run = |s: i64, e: i64, st: i64| {
            let n = Node::new("n", "Slice", &["x", "s", "e", "a", "t"], &["y"]);
            run_op(
                n,
                &[&x, &i64s(&[s]), &i64s(&[e]), &i64s(&[0]), &i64s(&[st])],
            )[0]
            .as_slice::<i32>()
            .unwrap()
            .to_vec()
        };
        assert_eq!(run(2, 7, 2), vec![2, 4, 6]);
        assert_eq!(run(-1, i64::MIN, -3), vec![9, 6, 3, 0]);
        assert_eq!(run(20, -20, -4), vec![9, 5, 1]);
        assert_eq!(run(-3, 1000, 1), vec![7, 8, 9]);
        assert_eq!(run(5, 2, 1), Vec::<i32>::new());
        assert_eq!(run(3, 10, i64::MAX), vec![3]);
        assert_eq!(run(3, -20, i64::MIN), vec![3]);
        let empty = Tensor::from_vec(vec![0], Vec::<f32>::new()).unwrap();
        let n = Node::new("n", "Slice", &["x", "s", "e", "a", "t"], &["y"]);
        let out = run_op(
            n,
            &[
                &empty,
                &i64s(&[-1]),
                &i64s(&[i64::MIN]),
                &i64s(&[0]),
                &i64s(&[-1]),
            ],
        );
        assert_eq!(out[0].shape(), &[0]);
        let m = iota(&[3, 4]);
        let n = Node::new("n", "Slice", &["x", "s", "e", "a"], &["y"]);
        let out = run_op(n, &[&m, &i64s(&[1]), &i64s(&[3]), &i64s(&[-1])]);
        assert_eq!(out[0].shape(), &[3, 2]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[1, 2, 5, 6, 9, 10]);
    }

    #[test]
    fn concat_split_round_trip() {
        let a = iota(&[2, 2]);
        let b = iota(&[2, 3]);
        let n = Node::new("n", "Concat", &["a", "b"], &["y"]).with("axis", Attr::Int(-1));
        let c = run_op(n, &[&a, &b]).remove(0);
        assert_eq!(
            c.as_slice::<i32>().unwrap(),
            &[0, 1, 0, 1, 2, 2, 3, 3, 4, 5]
        );
        let n = Node::new("n", "Split", &["c", "s"], &["p", "q"]).with("axis", Attr::Int(1));
        let parts = run_op(n, &[&c, &i64s(&[2, 3])]);
        assert_eq!(parts[0], a);
        assert_eq!(parts[1], b);
        let n = Node::new("n", "Split", &["c"], &["p", "q"])
            .with("axis", Attr::Int(1))
            .with("num_outputs", Attr::Int(2));
        let parts = run_op(n, &[&c]);
        assert_eq!(
            (parts[0].shape(), parts[1].shape()),
            (&[2, 3][..], &[2, 2][..])
        );
        let n = Node::new("n", "Split", &["c"], &["p", "q"]).with("axis", Attr::Int(1));
        let e = run_op_err(n, &[&c]);
        assert!(e.contains("equal parts"), "{e}");
    }

    #[test]
    fn gather_negative_indices_and_out_of_range() {
        let x = iota(&[3, 2]);
        let idx = Tensor::from_vec(vec![2, 1], vec![-1i64, 0]).unwrap();
        let out = run_op(Node::new("n", "Gather", &["x", "i"], &["y"]), &[&x, &idx]);
        assert_eq!(out[0].shape(), &[2, 1, 2]);
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[4, 5, 0, 1]);
        let bad = i64s(&[3]);
        let e = run_op_err(Node::new("n", "Gather", &["x", "i"], &["y"]), &[&x, &bad]);
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn squeeze_unsqueeze_attr_and_input_forms() {
        let x = iota(&[1, 3, 1]);
        let out = run_op(Node::new("n", "Squeeze", &["x"], &["y"]), &[&x]);
        assert_eq!(out[0].shape(), &[3]);
        let n = Node::new("n", "Unsqueeze", &["x"], &["y"]).with("axes", Attr::Ints(vec![0, -1]));
        assert_eq!(run_op_at(n, 11, &[&out[0]])[0].shape(), &[1, 3, 1]);
        let n = Node::new("n", "Unsqueeze", &["x", "a"], &["y"]);
        assert_eq!(run_op(n, &[&out[0], &i64s(&[2, 0])])[0].shape(), &[1, 3, 1]);
        let e = run_op_err(
            Node::new("n", "Squeeze", &["x", "a"], &["y"]),
            &[&x, &i64s(&[1])],
        );
        assert!(e.contains("cannot squeeze"), "{e}");
    }

    #[test]
    fn pad_modes() {
        let x = Tensor::from_vec(vec![1, 3], vec![1f32, 2., 3.]).unwrap();
        let pads = i64s(&[0, 2, 0, 2]);
        let run = |mode: &str| {
            let n =
                Node::new("n", "Pad", &["x", "p"], &["y"]).with("mode", Attr::String(mode.into()));
            run_op(n, &[&x, &pads])[0]
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(run("constant"), vec![0., 0., 1., 2., 3., 0., 0.]);
        assert_eq!(run("edge"), vec![1., 1., 1., 2., 3., 3., 3.]);
        assert_eq!(run("reflect"), vec![3., 2., 1., 2., 3., 2., 1.]);
        assert_eq!(run("wrap"), vec![2., 3., 1., 2., 3., 1., 2.]);
        let crop = i64s(&[0, -1, 0, 0]);
        let out = run_op(Node::new("n", "Pad", &["x", "p"], &["y"]), &[&x, &crop]);
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2., 3.]);
    }

    #[test]
    fn expand_tile_range_constant_of_shape_shape() {
        let x = iota(&[3, 1]);
        let out = run_op(
            Node::new("n", "Expand", &["x", "s"], &["y"]),
            &[&x, &i64s(&[2, 1, 2])],
        );
        assert_eq!(out[0].shape(), &[2, 3, 2]);
        let t = run_op(
            Node::new("n", "Tile", &["x", "r"], &["y"]),
            &[&iota(&[2]), &i64s(&[3])],
        );
        assert_eq!(t[0].as_slice::<i32>().unwrap(), &[0, 1, 0, 1, 0, 1]);
        let r = run_op(
            Node::new("n", "Range", &["a", "b", "c"], &["y"]),
            &[
                &Tensor::scalar(10i32),
                &Tensor::scalar(4i32),
                &Tensor::scalar(-3i32),
            ],
        );
        assert_eq!(r[0].as_slice::<i32>().unwrap(), &[10, 7]);
        let n = Node::new("n", "ConstantOfShape", &["s"], &["y"]).with(
            "value",
            Attr::Tensor(Tensor::from_vec(vec![1], vec![7i64]).unwrap()),
        );
        let c = run_op(n, &[&i64s(&[2, 2])]);
        assert_eq!(c[0].as_slice::<i64>().unwrap(), &[7; 4]);
        let huge = i64s(&[1 << 40, 1 << 40]);
        let e = run_op_err(Node::new("n", "ConstantOfShape", &["s"], &["y"]), &[&huge]);
        assert!(e.contains("more than"), "{e}");
        let e = run_op_err(
            Node::new("n", "Expand", &["x", "s"], &["y"]),
            &[&x, &i64s(&[1 << 40, 1, 1 << 40])],
        );
        assert!(e.contains("more than"), "{e}");
        let n = Node::new("n", "Shape", &["x"], &["y"]).with("start", Attr::Int(-1));
        assert_eq!(
            run_op(n, &[&iota(&[2, 3, 4])])[0]
                .as_slice::<i64>()
                .unwrap(),
            &[4]
        );
        let n = Node::new("n", "Cast", &["x"], &["y"]).with("to", Attr::Int(1));
        assert_eq!(run_op(n, &[&x])[0].dtype(), DType::F32);
        // 0.48033667 is 0x3EF5_EE5E: truncation keeps 0x3EF5 (0.478515625).
        let f = Tensor::from_vec(vec![2], vec![0.480_336_67f32, f32::NAN]).unwrap();
        let n = Node::new("n", "Cast", &["x"], &["y"]).with("to", Attr::Int(16));
        let b = run_op(n, &[&f]).remove(0).cast(DType::F32);
        assert_eq!(b.as_slice::<f32>().unwrap()[0], f32::from_bits(0x3EF5_0000));
        assert!(b.as_slice::<f32>().unwrap()[1].is_nan());
    }
}
