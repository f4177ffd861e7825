//! Resize (opsets 10–19) and the deprecated Upsample.
//!
//! Every mode ONNX defines (nearest, linear, cubic, with or without
//! antialiasing) is a separable filter: each output index along an axis reads
//! a few input indices with fixed weights. So we compute, per axis, a table of
//! (index, weight) taps exactly as ONNX's reference does (same coordinate
//! transforms, neighbour choice and edge padding), then apply the axes one at
//! a time. Axes whose table is the identity are skipped.

use super::linalg::{float_tensor, floats};
use super::{OpContext, Registry};
use crate::Result;
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut Registry) {
    r.add("", "Resize", resize);
    r.add("", "Upsample", upsample);
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

/// Everything that decides the taps of one axis.
struct Filter<'a> {
    mode: Mode,
    nearest: &'a str,
    coord: &'a str,
    cubic_a: f64,
    antialias: bool,
    exclude_outside: bool,
}

/// Taps of one axis: for output `j`, inputs `idx[j*n + t]` with weights `w[j*n + t]`.
struct Taps {
    n: usize,
    idx: Vec<usize>,
    w: Vec<f32>,
    /// Output indices whose source coordinate falls outside the crop
    /// (tf_crop_and_resize): they take the extrapolation value.
    outside: Vec<bool>,
}

impl Taps {
    fn is_identity(&self, len_in: usize) -> bool {
        self.outside.len() == len_in
            && !self.outside.iter().any(|&o| o)
            && (0..len_in).all(|j| {
                (0..self.n).all(|t| {
                    let (i, w) = (self.idx[j * self.n + t], self.w[j * self.n + t]);
                    (i == j && w == 1.0) || w == 0.0
                })
            })
    }
}

fn nearest_coeffs(ratio: f64, mode: &str) -> Vec<f64> {
    if ratio.fract() == 0.0 {
        return vec![0.0, 1.0];
    }
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    match mode {
        "round_prefer_ceil" => vec![b(ratio < 0.5), b(ratio >= 0.5)],
        "floor" => vec![1.0, 0.0],
        "ceil" => vec![0.0, 1.0],
        _ => vec![b(ratio <= 0.5), b(ratio > 0.5)],
    }
}

fn cubic_coeffs(r: f64, a: f64) -> Vec<f64> {
    let s = 1.0 - r;
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
    ]
}

fn cubic_coeffs_antialias(r: f64, scale: f64, a: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let k = |x: f64| {
        let x = x.abs();
        let (x2, x3) = (x * x, x * x * x);
        if x <= 1.0 {
            (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
        } else if x < 2.0 {
            a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let start = (-2.0 / scale).floor() as i64 + 1;
    let end = 2 - start;
    let c: Vec<f64> = (start..end).map(|i| k(scale * (i as f64 - r))).collect();
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

fn linear_coeffs_antialias(r: f64, scale: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let start = (-1.0 / scale).floor() as i64 + 1;
    let footprint = 2 - 2 * start;
    let c: Vec<f64> = (start..start + footprint)
        .map(|i| (1.0 - ((i as f64 - r) * scale).abs()).clamp(0.0, 1.0))
        .collect();
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

/// The `n` integers in `[0, limit)` nearest to `x` (ties prefer the smaller),
/// ascending, as ONNX's reference picks neighbours.
fn neighbours(x: f64, n: usize, limit: i64) -> Vec<i64> {
    let f = x.floor() as i64;
    let mut c: Vec<i64> = (f - n as i64 - 1..=f + n as i64 + 1)
        .filter(|&i| i >= 0 && i < limit)
        .collect();
    c.sort_by(|&a, &b| {
        let (da, db) = ((x - a as f64).abs(), (x - b as f64).abs());
        da.partial_cmp(&db)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    c.truncate(n);
    c.sort();
    c
}

/// Computes the taps of one axis resized from `len_in` to `len_out` by
/// `scale` (`roi` = (start, end) for tf_crop_and_resize).
fn taps(f: &Filter, len_in: usize, len_out: usize, scale: f64, roi: (f64, f64)) -> Taps {
    let in_w = len_in as f64;
    let out_w = scale * in_w;
    let mut t = Taps {
        n: 0,
        idx: Vec::new(),
        w: Vec::new(),
        outside: vec![false; len_out],
    };
    for j in 0..len_out {
        let x = j as f64;
        let x_ori = match f.coord {
            "align_corners" => {
                if out_w == 1.0 {
                    0.0
                } else {
                    x * (in_w - 1.0) / (out_w - 1.0)
                }
            }
            "asymmetric" => x / scale,
            "tf_crop_and_resize" => {
                let v = if out_w == 1.0 {
                    (roi.1 - roi.0) * (in_w - 1.0) / 2.0
                } else {
                    x * (roi.1 - roi.0) * (in_w - 1.0) / (out_w - 1.0)
                } + roi.0 * (in_w - 1.0);
                if v < 0.0 || v > in_w - 1.0 {
                    t.outside[j] = true;
                }
                v
            }
            "pytorch_half_pixel" => {
                if out_w == 1.0 {
                    -0.5
                } else {
                    (x + 0.5) / scale - 0.5
                }
            }
            "half_pixel_symmetric" => {
                let adjustment = len_out as f64 / out_w;
                let offset = in_w / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
            _ => (x + 0.5) / scale - 0.5,
        };
        let ratio = if x_ori.fract() == 0.0 {
            1.0
        } else {
            x_ori - x_ori.floor()
        };
        let mut c = match f.mode {
            Mode::Nearest => nearest_coeffs(ratio, f.nearest),
            Mode::Linear if f.antialias => linear_coeffs_antialias(ratio, scale),
            Mode::Linear => vec![1.0 - ratio, ratio],
            Mode::Cubic if f.antialias => cubic_coeffs_antialias(ratio, scale, f.cubic_a),
            Mode::Cubic => cubic_coeffs(ratio, f.cubic_a),
        };
        let n = c.len();
        let pad = n.div_ceil(2) as i64;
        let idx: Vec<i64> = neighbours(x_ori + pad as f64, n, len_in as i64 + 2 * pad)
            .into_iter()
            .map(|i| i - pad)
            .collect();
        if f.exclude_outside {
            for (ci, &i) in c.iter_mut().zip(&idx) {
                if i < 0 || i >= len_in as i64 {
                    *ci = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            c.iter_mut().for_each(|v| *v /= s);
        }
        t.n = n;
        for (ci, i) in c.into_iter().zip(idx) {
            t.idx.push(i.clamp(0, len_in as i64 - 1) as usize);
            t.w.push(ci as f32);
        }
    }
    t
}

/// Resamples `x` (shape `shape`) along `axis` with `taps`; updates `shape`.
fn apply_axis(
    x: &[f32],
    shape: &mut [usize],
    axis: usize,
    taps: &Taps,
    len_out: usize,
) -> Vec<f32> {
    let outer: usize = shape[..axis].iter().product();
    let len_in = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut y = vec![0f32; outer * len_out * inner];
    for o in 0..outer {
        let src = &x[o * len_in * inner..(o + 1) * len_in * inner];
        for j in 0..len_out {
            let dst = &mut y[(o * len_out + j) * inner..(o * len_out + j + 1) * inner];
            for t in 0..taps.n {
                let w = taps.w[j * taps.n + t];
                if w == 0.0 {
                    continue;
                }
                let i = taps.idx[j * taps.n + t];
                for (d, s) in dst.iter_mut().zip(&src[i * inner..(i + 1) * inner]) {
                    *d += w * s;
                }
            }
        }
    }
    shape[axis] = len_out;
    y
}

/// Resizes `x` to `out` with per-axis `scales`; sets every element any of
/// whose coordinates fell outside the crop to `extrapolation`.
fn interpolate(
    x: &[f32],
    in_shape: &[usize],
    out: &[usize],
    scales: &[f64],
    roi: &[(f64, f64)],
    f: &Filter,
    extrapolation: f32,
) -> Vec<f32> {
    let mut shape = in_shape.to_vec();
    let mut data = x.to_vec();
    let mut outside: Vec<Vec<bool>> = Vec::new();
    for a in 0..in_shape.len() {
        let t = taps(f, in_shape[a], out[a], scales[a], roi[a]);
        outside.push(t.outside.clone());
        if out[a] == in_shape[a] && t.is_identity(in_shape[a]) {
            continue;
        }
        data = apply_axis(&data, &mut shape, a, &t, out[a]);
    }
    if outside.iter().any(|o| o.iter().any(|&b| b)) {
        let strides = shrink_tensor::strides_of(out);
        for (i, v) in data.iter_mut().enumerate() {
            let hit = (0..out.len()).any(|a| outside[a][(i / strides[a]) % out[a]]);
            if hit {
                *v = extrapolation;
            }
        }
    }
    data
}

/// An optional input that may also be given as an empty tensor.
fn present<'t>(inputs: &[Option<&'t Tensor>], i: usize) -> Option<&'t Tensor> {
    inputs.get(i).copied().flatten().filter(|t| !t.is_empty())
}

fn resize(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let node = ctx.node;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let rank = x.rank();
    let (roi_t, scales_t, sizes_t) = if ctx.opset < 11 {
        (None, present(inputs, 1), None)
    } else {
        (present(inputs, 1), present(inputs, 2), present(inputs, 3))
    };
    let axes: Vec<usize> = match node.attr_ints("axes").map_err(attr)? {
        Some(a) => a
            .iter()
            .map(|&v| super::norm::resolve_axis(ctx, v, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    let mode = match node.attr_str("mode", "nearest").map_err(attr)? {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" | "trilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        other => return Err(ctx.error(format!("unknown mode '{other}'"))),
    };
    let legacy = ctx.opset < 11;
    let f = Filter {
        mode,
        nearest: if legacy {
            "floor"
        } else {
            node.attr_str("nearest_mode", "round_prefer_floor")
                .map_err(attr)?
        },
        coord: if legacy {
            "asymmetric"
        } else {
            node.attr_str("coordinate_transformation_mode", "half_pixel")
                .map_err(attr)?
        },
        cubic_a: node.attr_float("cubic_coeff_a", -0.75).map_err(attr)? as f64,
        antialias: node.attr_int("antialias", 0).map_err(attr)? != 0,
        exclude_outside: node.attr_int("exclude_outside", 0).map_err(attr)? != 0,
    };
    let extrapolation = node.attr_float("extrapolation_value", 0.0).map_err(attr)?;
    let policy = node
        .attr_str("keep_aspect_ratio_policy", "stretch")
        .map_err(attr)?;
    let in_shape = x.shape().to_vec();
    let mut scales = vec![1f64; rank];
    let mut out = in_shape.clone();
    if let Some(s) = sizes_t {
        let v = s.to_i64_vec();
        if v.len() != axes.len() || v.iter().any(|&d| d < 0) {
            return Err(ctx.error(format!(
                "sizes {v:?} must give one non-negative size per resized axis ({})",
                axes.len()
            )));
        }
        for (&a, &d) in axes.iter().zip(&v) {
            out[a] = d as usize;
            scales[a] = d as f64 / in_shape[a] as f64;
        }
        if policy != "stretch" {
            let pick = axes.iter().map(|&a| scales[a]);
            let s = match policy {
                "not_larger" => pick.fold(f64::INFINITY, f64::min),
                "not_smaller" => pick.fold(f64::NEG_INFINITY, f64::max),
                other => {
                    return Err(ctx.error(format!("unknown keep_aspect_ratio_policy '{other}'")))
                }
            };
            for &a in &axes {
                scales[a] = s;
                out[a] = (s * in_shape[a] as f64 + 0.5) as usize;
            }
        }
    } else if let Some(s) = scales_t {
        let v = floats(ctx, s, "scales")?;
        if v.len() != axes.len() || v.iter().any(|&d| d <= 0.0) {
            return Err(ctx.error(format!(
                "scales {v:?} must give one positive scale per resized axis ({})",
                axes.len()
            )));
        }
        for (&a, &sc) in axes.iter().zip(v.iter()) {
            scales[a] = sc as f64;
            out[a] = (sc as f64 * in_shape[a] as f64) as usize;
        }
    } else {
        return Err(ctx.error("one of 'scales' and 'sizes' must be given"));
    }
    let mut roi = vec![(0f64, 1f64); rank];
    if f.coord == "tf_crop_and_resize" {
        let r = roi_t.ok_or_else(|| ctx.error("tf_crop_and_resize needs the roi input"))?;
        let v = r.to_f64_vec();
        let n = axes.len();
        if v.len() != 2 * n {
            return Err(ctx.error(format!(
                "roi has {} values, expected {} (start and end per resized axis)",
                v.len(),
                2 * n
            )));
        }
        for (i, &a) in axes.iter().enumerate() {
            roi[a] = (v[i], v[n + i]);
        }
    }
    let xv = floats(ctx, x, "X")?;
    let y = interpolate(&xv, &in_shape, &out, &scales, &roi, &f, extrapolation);
    Ok(vec![float_tensor(x.dtype(), out, y)?])
}

/// Upsample (opsets 7–9): asymmetric coordinates, nearest rounds down;
/// scales come from the attribute (opset 7) or the second input (opset 9).
fn upsample(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let scales: Vec<f64> = match present(inputs, 1) {
        Some(s) => floats(ctx, s, "scales")?
            .iter()
            .map(|&v| v as f64)
            .collect(),
        None => match ctx.node.attr_floats("scales").map_err(attr)? {
            Some(s) => s.iter().map(|&v| v as f64).collect(),
            None => return Err(ctx.error("scales are missing")),
        },
    };
    if scales.len() != x.rank() {
        return Err(ctx.error(format!(
            "{} scales for a rank-{} input",
            scales.len(),
            x.rank()
        )));
    }
    let mode = match ctx.node.attr_str("mode", "nearest").map_err(attr)? {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        other => return Err(ctx.error(format!("unknown mode '{other}'"))),
    };
    let f = Filter {
        mode,
        nearest: "floor",
        coord: "asymmetric",
        cubic_a: -0.75,
        antialias: false,
        exclude_outside: false,
    };
    let out: Vec<usize> = x
        .shape()
        .iter()
        .zip(&scales)
        .map(|(&d, &s)| (d as f64 * s) as usize)
        .collect();
    let roi = vec![(0.0, 1.0); x.rank()];
    let xv = floats(ctx, x, "X")?;
    let y = interpolate(&xv, x.shape(), &out, &scales, &roi, &f, 0.0);
    Ok(vec![float_tensor(x.dtype(), out, y)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(mode: Mode, coord: &str) -> Filter<'_> {
        Filter {
            mode,
            nearest: "round_prefer_floor",
            coord,
            cubic_a: -0.75,
            antialias: false,
            exclude_outside: false,
        }
    }

    #[test]
    fn bilinear_half_pixel_upsample_by_two() {
        // 1-D [0, 1] → 4 samples at x_ori = -0.25, 0.25, 0.75, 1.25 (edge-clamped).
        let f = filter(Mode::Linear, "half_pixel");
        let y = interpolate(&[0.0, 1.0], &[2], &[4], &[2.0], &[(0.0, 1.0)], &f, 0.0);
        assert_eq!(y, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn nearest_asymmetric_repeats_and_identity_is_skipped() {
        let f = filter(Mode::Nearest, "asymmetric");
        let y = interpolate(
            &[1.0, 2.0, 3.0, 4.0],
            &[1, 2, 2],
            &[1, 2, 4],
            &[1.0, 1.0, 2.0],
            &[(0.0, 1.0); 3],
            &f,
            0.0,
        );
        assert_eq!(y, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]);
        assert!(taps(&f, 5, 5, 1.0, (0.0, 1.0)).is_identity(5));
    }

    #[test]
    fn neighbours_prefer_smaller_on_ties() {
        assert_eq!(neighbours(4.0, 2, 10), vec![3, 4]);
        assert_eq!(neighbours(4.5, 3, 10), vec![3, 4, 5]);
        assert_eq!(neighbours(4.6, 1, 10), vec![5]);
        assert_eq!(neighbours(0.2, 4, 10), vec![0, 1, 2, 3]);
    }
}
