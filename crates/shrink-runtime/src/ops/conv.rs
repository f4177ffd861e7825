//! Convolutions: Conv, ConvTranspose, ConvInteger, and the sliding-window
//! geometry the pooling and quantized-conv ops share.
//!
//! Every op works on a geometry normalised to three spatial dimensions (1-D
//! and 2-D inputs get leading size-1 dims), so one im2col, one col2im and one
//! depthwise loop serve 1-D, 2-D and 3-D alike. Dense convs are im2col + GEMM
//! (1×1 stride-1 unpadded convs read the input directly as the GEMM operand);
//! depthwise convs (one input channel per group) use a direct loop, since
//! their im2col matrix would be as large as the work.

use super::linalg::{float_tensor, floats, int8_values, sgemm, MatRef, WrappingMac};
use super::{OpContext, Registry};
use crate::Result;
use rayon::prelude::*;
use shrink_kernels::conv::Conv2d;
use shrink_kernels::directconv;
use shrink_kernels::dwconv::{self, Dw3x3, DwEpilogue};
use shrink_kernels::f32gemm::{self, F32Epilogue, PackedF32};
use shrink_kernels::movement::copy_short;
use shrink_tensor::Tensor;

mod nhwc;

pub(super) fn register(r: &mut Registry) {
    nhwc::register(r);
    r.add("", "Conv", conv);
    // Conv + Relu/Clip fused by the session (see `crate::fuse`).
    r.add("com.microsoft", "FusedConv", conv);
    r.add("", "ConvTranspose", conv_transpose);
    r.add("", "ConvInteger", conv_integer);
}

/// Geometry of a sliding window over up to three spatial dimensions.
/// Window position `o` along a dimension reads input index
/// `o * stride - pad_begin + k * dilation` for kernel tap `k`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Window {
    /// Spatial rank of the op before normalisation (1, 2 or 3).
    pub rank: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
    pub output: [usize; 3],
}

impl Window {
    pub fn input_size(&self) -> usize {
        self.input.iter().product()
    }
    pub fn output_size(&self) -> usize {
        self.output.iter().product()
    }
    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }
    /// Output spatial dims in the op's own rank.
    pub fn output_dims(&self) -> Vec<usize> {
        self.output[3 - self.rank..].to_vec()
    }
    /// A 1×1 stride-1 unpadded window: the input already is the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1; 3]
            && self.stride == [1; 3]
            && self.pad_begin == [0; 3]
            && self.pad_end == [0; 3]
    }

    /// Output positions `o` in `lo..hi` along dim `d` whose tap `k` lands inside
    /// the input; returns (lo, hi, offset) with input index `o*stride + offset`.
    fn valid(&self, d: usize, k: usize) -> (usize, usize, isize) {
        let off = (k * self.dilation[d]) as isize - self.pad_begin[d] as isize;
        let s = self.stride[d] as isize;
        let n = self.input[d] as isize;
        let out = self.output[d] as isize;
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        let hi = if n - off <= 0 {
            0
        } else {
            (n - off + s - 1) / s
        };
        let lo = lo.clamp(0, out);
        let hi = hi.clamp(lo, out);
        (lo as usize, hi as usize, off)
    }

    /// Input index of output position `o`, tap `k` along dim `d`, if inside.
    fn index(&self, d: usize, o: usize, k: usize) -> Option<usize> {
        let i = (o * self.stride[d] + k * self.dilation[d]) as isize - self.pad_begin[d] as isize;
        (i >= 0 && i < self.input[d] as isize).then_some(i as usize)
    }
}

/// How the output length of a window follows from input, padding and stride.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Rounding {
    /// `floor` (Conv, and pools with ceil_mode=0).
    Floor,
    /// `ceil`, dropping a last window that would start in the end padding
    /// (pools with ceil_mode=1, as ONNX Runtime and PyTorch do).
    Ceil,
}

/// Reads strides, dilations, pads and auto_pad of the node and computes the
/// window geometry for the given input spatial dims and kernel.
pub(super) fn window(
    ctx: &OpContext,
    spatial: &[usize],
    kernel: &[usize],
    rounding: Rounding,
) -> Result<Window> {
    let r = spatial.len();
    if r == 0 || r > 3 {
        return Err(ctx.error(format!("{r} spatial dimensions; 1 to 3 are supported")));
    }
    if kernel.len() != r {
        return Err(ctx.error(format!(
            "kernel has {} dims but the input has {r} spatial dims",
            kernel.len()
        )));
    }
    let node = ctx.node;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let ints = |key: &str, default: i64, len: usize| -> Result<Vec<usize>> {
        match node.attr_ints(key).map_err(attr)? {
            None => Ok(vec![default as usize; len]),
            Some(v) if v.len() == len && v.iter().all(|&x| x >= 0) => {
                Ok(v.iter().map(|&x| x as usize).collect())
            }
            Some(v) => Err(ctx.error(format!(
                "attribute '{key}' = {v:?}: expected {len} non-negative values"
            ))),
        }
    };
    let strides = ints("strides", 1, r)?;
    let dilations = ints("dilations", 1, r)?;
    if strides.contains(&0) || dilations.contains(&0) || kernel.contains(&0) {
        return Err(ctx.error("strides, dilations and kernel sizes must be positive"));
    }
    let auto_pad = node.attr_str("auto_pad", "NOTSET").map_err(attr)?;
    let mut w = Window {
        rank: r,
        input: [1; 3],
        kernel: [1; 3],
        stride: [1; 3],
        dilation: [1; 3],
        pad_begin: [0; 3],
        pad_end: [0; 3],
        output: [1; 3],
    };
    let pads = match auto_pad {
        "NOTSET" | "" => ints("pads", 0, 2 * r)?,
        "VALID" | "SAME_UPPER" | "SAME_LOWER" => vec![0; 2 * r],
        other => return Err(ctx.error(format!("unknown auto_pad '{other}'"))),
    };
    for i in 0..r {
        let d = 3 - r + i;
        let (n, k, s, dil) = (spatial[i], kernel[i], strides[i], dilations[i]);
        let dk = (k - 1) * dil + 1;
        w.input[d] = n;
        w.kernel[d] = k;
        w.stride[d] = s;
        w.dilation[d] = dil;
        let (pb, pe, out) = match auto_pad {
            "SAME_UPPER" | "SAME_LOWER" => {
                let out = n.div_ceil(s);
                let total = ((out.max(1) - 1) * s + dk).saturating_sub(n);
                let small = total / 2;
                if auto_pad == "SAME_UPPER" {
                    (small, total - small, out)
                } else {
                    (total - small, small, out)
                }
            }
            _ => {
                let (pb, pe) = (pads[i], pads[i + r]);
                let padded = n + pb + pe;
                if padded < dk {
                    return Err(ctx.error(format!(
                        "kernel extent {dk} exceeds padded input {padded} along spatial dim {i}"
                    )));
                }
                let out = match rounding {
                    Rounding::Floor => (padded - dk) / s + 1,
                    Rounding::Ceil => {
                        let mut out = (padded - dk).div_ceil(s) + 1;
                        if (out - 1) * s >= n + pb {
                            out -= 1;
                        }
                        out
                    }
                };
                (pb, pe, out)
            }
        };
        w.pad_begin[d] = pb;
        w.pad_end[d] = pe;
        w.output[d] = out;
    }
    Ok(w)
}

/// Unfolds `channels` planes of one image (`x`, each plane `win.input`) into
/// the (channels·kernel) × output matrix `col`, zero-filled (T::default())
/// where a window hangs over padding.
pub(super) fn im2col<T: Copy + Default>(x: &[T], channels: usize, win: &Window, col: &mut [T]) {
    let [_, ih, iw] = win.input;
    let [kd, kh, kw] = win.kernel;
    let [od, oh, ow] = win.output;
    let in_sz = win.input_size();
    let out_sz = win.output_size();
    let sw = win.stride[2];
    let mut row = 0;
    for c in 0..channels {
        let xc = &x[c * in_sz..(c + 1) * in_sz];
        for a in 0..kd {
            for b in 0..kh {
                for e in 0..kw {
                    let dst = &mut col[row * out_sz..(row + 1) * out_sz];
                    row += 1;
                    let (lo, hi, off) = win.valid(2, e);
                    for z in 0..od {
                        let zi = win.index(0, z, a);
                        for y in 0..oh {
                            let drow = &mut dst[(z * oh + y) * ow..(z * oh + y + 1) * ow];
                            let (Some(zi), Some(yi)) = (zi, win.index(1, y, b)) else {
                                drow.fill(T::default());
                                continue;
                            };
                            let src = &xc[(zi * ih + yi) * iw..(zi * ih + yi + 1) * iw];
                            drow[..lo].fill(T::default());
                            drow[hi..].fill(T::default());
                            if sw == 1 {
                                let start = (lo as isize + off) as usize;
                                drow[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                            } else {
                                for (o, d) in drow[lo..hi].iter_mut().enumerate() {
                                    *d = src[(((o + lo) * sw) as isize + off) as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry back into the image
/// position it was read from (ConvTranspose's scatter).
fn col2im(col: &[f32], channels: usize, win: &Window, x: &mut [f32]) {
    let [_, ih, iw] = win.input;
    let [kd, kh, kw] = win.kernel;
    let [od, oh, ow] = win.output;
    let in_sz = win.input_size();
    let out_sz = win.output_size();
    let sw = win.stride[2];
    let mut row = 0;
    for c in 0..channels {
        let xc = &mut x[c * in_sz..(c + 1) * in_sz];
        for a in 0..kd {
            for b in 0..kh {
                for e in 0..kw {
                    let src = &col[row * out_sz..(row + 1) * out_sz];
                    row += 1;
                    let (lo, hi, off) = win.valid(2, e);
                    for z in 0..od {
                        let Some(zi) = win.index(0, z, a) else {
                            continue;
                        };
                        for y in 0..oh {
                            let Some(yi) = win.index(1, y, b) else {
                                continue;
                            };
                            let srow = &src[(z * oh + y) * ow..(z * oh + y + 1) * ow];
                            let dst = &mut xc[(zi * ih + yi) * iw..(zi * ih + yi + 1) * iw];
                            for o in lo..hi {
                                dst[((o * sw) as isize + off) as usize] += srow[o];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One output plane of a depthwise conv: `x` is the input plane, `w` its
/// kernel, `ranges` the [`Window::valid`] spans of each kernel column; `y`
/// must hold the bias (or zeros) on entry.
///
/// Per output row and kernel row, the columns where every kernel column
/// lands inside the input are done in one pass with the taps unrolled (3×3
/// and 5×5 kernels, the common ones); the few border columns tap by tap.
fn depthwise_plane(
    x: &[f32],
    w: &[f32],
    win: &Window,
    ranges: &[(usize, usize, isize)],
    y: &mut [f32],
) {
    let [_, ih, iw] = win.input;
    let [kd, kh, kw] = win.kernel;
    let [od, oh, ow] = win.output;
    let (sw, dw) = (win.stride[2], win.dilation[2]);
    // Columns where all kernel columns are valid.
    let inner_lo = ranges.iter().map(|r| r.0).max().unwrap_or(0);
    let inner_hi = ranges.iter().map(|r| r.1).min().unwrap_or(0).max(inner_lo);
    for z in 0..od {
        for a in 0..kd {
            let Some(zi) = win.index(0, z, a) else {
                continue;
            };
            for yo in 0..oh {
                let dst = &mut y[(z * oh + yo) * ow..(z * oh + yo + 1) * ow];
                for b in 0..kh {
                    let Some(yi) = win.index(1, yo, b) else {
                        continue;
                    };
                    let src = &x[(zi * ih + yi) * iw..(zi * ih + yi + 1) * iw];
                    let wrow = &w[(a * kh + b) * kw..(a * kh + b + 1) * kw];
                    // Border columns, tap by tap.
                    for (&wv, &(lo, hi, off)) in wrow.iter().zip(ranges) {
                        let edges = [(lo, hi.min(inner_lo)), (lo.max(inner_hi), hi)];
                        for (l, h) in edges {
                            for o in l..h {
                                dst[o] += wv * src[(o as isize * sw as isize + off) as usize];
                            }
                        }
                    }
                    if inner_lo >= inner_hi {
                        continue;
                    }
                    let start = (inner_lo as isize * sw as isize + ranges[0].2) as usize;
                    let d = &mut dst[inner_lo..inner_hi];
                    match (kw, dw) {
                        (3, 1) => row_taps::<3>(d, &src[start..], wrow, sw),
                        (5, 1) => row_taps::<5>(d, &src[start..], wrow, sw),
                        _ => {
                            for (e, &wv) in wrow.iter().enumerate() {
                                let s = &src[start + e * dw..];
                                for (o, v) in d.iter_mut().zip(s.iter().step_by(sw)) {
                                    *o += wv * v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `d[o] += Σ_e w[e] · src[o·stride + e]` for a kernel row of `K` taps.
fn row_taps<const K: usize>(d: &mut [f32], src: &[f32], w: &[f32], stride: usize) {
    let Ok(w) = <&[f32; K]>::try_from(w) else {
        return;
    };
    for (o, win) in d.iter_mut().zip(src.windows(K).step_by(stride)) {
        if let Ok(win) = <&[f32; K]>::try_from(win) {
            let mut acc = *o;
            for e in 0..K {
                acc += w[e] * win[e];
            }
            *o = acc;
        }
    }
}

/// Shapes of a (possibly grouped) convolution, checked against each other.
struct ConvDims {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
    win: Window,
}

fn conv_dims(ctx: &OpContext, x: &[usize], w: &[usize]) -> Result<ConvDims> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(ctx.error(format!("X {x:?} and W {w:?} must have the same rank ≥ 3")));
    }
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let group = ctx.node.attr_int("group", 1).map_err(attr)?;
    if group < 1 {
        return Err(ctx.error(format!("group = {group} must be ≥ 1")));
    }
    let group = group as usize;
    let (c, m) = (x[1], w[0]);
    if c % group != 0 || m % group != 0 || w[1] * group != c {
        return Err(ctx.error(format!(
            "X {x:?} and W {w:?} do not agree with group = {group} (W[1]·group must equal the input channels)"
        )));
    }
    let kernel = kernel_shape(ctx, &w[2..])?;
    let win = window(ctx, &x[2..], &kernel, Rounding::Floor)?;
    Ok(ConvDims {
        batch: x[0],
        in_channels: c,
        out_channels: m,
        group,
        win,
    })
}

/// The `kernel_shape` attribute if present (checked against the weights),
/// else the weights' spatial dims.
fn kernel_shape(ctx: &OpContext, w_spatial: &[usize]) -> Result<Vec<usize>> {
    match ctx
        .node
        .attr_ints("kernel_shape")
        .map_err(|e| ctx.error(e.to_string()))?
    {
        Some(k) if k.iter().map(|&x| x as usize).eq(w_spatial.iter().copied()) => {
            Ok(w_spatial.to_vec())
        }
        Some(k) => Err(ctx.error(format!(
            "kernel_shape {k:?} disagrees with the weights' spatial dims {w_spatial:?}"
        ))),
        None => Ok(w_spatial.to_vec()),
    }
}

fn output_shape(batch: usize, channels: usize, win: &Window) -> Vec<usize> {
    let mut s = vec![batch, channels];
    s.extend(win.output_dims());
    s
}

fn conv(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let w = ctx.required(inputs, 1)?;
    let d = conv_dims(ctx, x.shape(), w.shape())?;
    let xv = floats(ctx, x, "X")?;
    let wv = floats(ctx, w, "W")?;
    let bias = match inputs.get(2).copied().flatten() {
        Some(b) if b.len() != d.out_channels => {
            return Err(ctx.error(format!(
                "B has {} elements, expected {}",
                b.len(),
                d.out_channels
            )))
        }
        Some(b) => Some(floats(ctx, b, "B")?),
        None => None,
    };
    let len = d.batch * d.out_channels * d.win.output_size();
    let act = fused_activation(ctx)?;
    // FusedConv's optional Z (ONNX Runtime's sum input) is added before the
    // activation: Y = act(conv + B + Z).
    let z = inputs.get(3).copied().flatten();
    let out_shape = output_shape(d.batch, d.out_channels, &d.win);
    if let Some(z) = z {
        if z.shape() != out_shape.as_slice() {
            return Err(ctx.error(format!(
                "Z {:?} must have the output's shape {out_shape:?}",
                z.shape()
            )));
        }
    }
    let inner = if z.is_some() { Activation::NONE } else { act };
    let mut y = conv_f32(
        &xv,
        &wv,
        bias.as_deref(),
        &d,
        ctx.threads,
        inner,
        ctx.output_f32(len),
    );
    if let Some(z) = z {
        let zv = floats(ctx, z, "Z")?;
        y.iter_mut().zip(zv.iter()).for_each(|(v, z)| *v += z);
        act.apply(&mut y);
    }
    Ok(vec![float_tensor(x.dtype(), out_shape, y)?])
}

/// Below this many multiply-adds a conv runs on one thread.
const PARALLEL_WORK: usize = 1 << 17;

/// A clamp fused after a conv (Relu is `[0, ∞)`, Clip `[lo, hi]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Activation {
    pub lo: f32,
    pub hi: f32,
}

impl Activation {
    pub const NONE: Activation = Activation {
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };
    pub fn is_none(&self) -> bool {
        *self == Activation::NONE
    }
    pub fn apply(&self, y: &mut [f32]) {
        if !self.is_none() {
            y.iter_mut().for_each(|v| *v = v.max(self.lo).min(self.hi));
        }
    }
}

/// The clamp a `FusedConv` / `FusedGemm` node carries in ONNX Runtime's
/// attributes (`activation` = Relu or Clip, `activation_params` = [lo, hi]);
/// none for a plain Conv / Gemm.
pub(super) fn fused_activation(ctx: &OpContext) -> Result<Activation> {
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    match ctx.node.attr_str("activation", "").map_err(attr)? {
        "" => Ok(Activation::NONE),
        "Relu" => Ok(Activation {
            lo: 0.0,
            hi: f32::INFINITY,
        }),
        "Clip" => match ctx.node.attr_floats("activation_params").map_err(attr)? {
            Some(&[lo, hi]) => Ok(Activation { lo, hi }),
            p => Err(ctx.error(format!(
                "activation Clip needs activation_params = [min, max], got {p:?}"
            ))),
        },
        other => Err(ctx.error(format!(
            "fused activation '{other}' is not supported (Relu, Clip)"
        ))),
    }
}

/// The conv itself: `y` (exactly the output's length, contents unspecified,
/// e.g. a recycled buffer) is overwritten with `act(conv(x, w) + bias)`.
#[allow(clippy::too_many_arguments)]
fn conv_f32(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    d: &ConvDims,
    threads: usize,
    act: Activation,
    mut y: Vec<f32>,
) -> Vec<f32> {
    let win = &d.win;
    let (g, cg, mg) = (d.group, d.in_channels / d.group, d.out_channels / d.group);
    let (in_sz, out_sz, ksz) = (win.input_size(), win.output_size(), win.kernel_size());
    debug_assert_eq!(y.len(), d.batch * d.out_channels * out_sz);
    if y.is_empty() {
        return y;
    }
    let work = d.batch * d.out_channels * out_sz * cg * ksz;
    let parallel = threads > 1 && work >= PARALLEL_WORK;
    if cg == 1 && g > 1 {
        if let Some(shape) = dw3x3_shape(win) {
            depthwise_3x3(x, w, bias, d, &shape, act, parallel, &mut y);
            return y;
        }
        for (i, plane) in y.chunks_mut(out_sz).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[i % d.out_channels]));
        }
        // Depthwise (channel multiplier mg): output channel m reads input channel m / mg.
        let ranges: Vec<(usize, usize, isize)> =
            (0..win.kernel[2]).map(|e| win.valid(2, e)).collect();
        let phased = PhasePlanes::fits(win);
        let plane = |scratch: &mut PhasePlanes, (i, yp): (usize, &mut [f32])| {
            let (n, m) = (i / d.out_channels, i % d.out_channels);
            let c = m / mg;
            let xp = &x[(n * d.in_channels + c) * in_sz..][..in_sz];
            let wm = &w[m * ksz..(m + 1) * ksz];
            if phased {
                scratch.depthwise(xp, wm, win, yp);
            } else {
                depthwise_plane(xp, wm, win, &ranges, yp);
            }
        };
        if parallel {
            y.par_chunks_mut(out_sz)
                .enumerate()
                .for_each_init(|| PhasePlanes::new(win), plane);
        } else {
            let mut scratch = PhasePlanes::new(win);
            y.chunks_mut(out_sz)
                .enumerate()
                .for_each(|t| plane(&mut scratch, t));
        }
        act.apply(&mut y);
        return y;
    }
    if let Some(shape) = direct_shape(d) {
        let (x_img, y_img) = (d.in_channels * in_sz, d.out_channels * out_sz);
        let image = |(n, yi): (usize, &mut [f32])| {
            let xi = &x[n * x_img..(n + 1) * x_img];
            if let Err(e) = directconv::conv(&shape, xi, w, bias, act.lo, act.hi, yi) {
                panic!("direct conv sized wrongly (caller bug): {e}");
            }
        };
        if parallel && d.batch > 1 {
            y.par_chunks_mut(y_img).enumerate().for_each(image);
        } else {
            y.chunks_mut(y_img).enumerate().for_each(image);
        }
        return y;
    }
    let kdim = cg * ksz;
    let block = |(i, yb): (usize, &mut [f32]), col: &mut Vec<f32>, threads: usize| {
        let (n, gi) = (i / g, i % g);
        let xg = &x[(n * d.in_channels + gi * cg) * in_sz..][..cg * in_sz];
        let wg = &w[gi * mg * kdim..(gi + 1) * mg * kdim];
        let ep = F32Epilogue {
            row_bias: bias.map(|v| &v[gi * mg..(gi + 1) * mg]),
            lo: act.lo,
            hi: act.hi,
            ..Default::default()
        };
        if win.is_pointwise() {
            // The input block already is the K×N right operand: read in place.
            match f32gemm::gemm_unpacked_b(wg, mg, xg, cg, out_sz, &ep, yb, threads > 1) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => panic!("pointwise conv operands disagree (caller bug): {e}"),
            }
        }
        let packed = pack_columns(xg, cg, win, 1, in_sz, col);
        weights_left_gemm(wg, mg, &packed, &ep, yb, threads > 1);
    };
    // Small output planes make one GEMM per image too thin to run well:
    // unfold several images side by side into one wide column matrix instead.
    // Planes already wide enough go one image at a time, straight into `y`
    // (no side-by-side scratch to scatter back).
    let per_chunk = if out_sz >= CHUNK_COLUMNS / 4 {
        1
    } else {
        (CHUNK_COLUMNS / out_sz.max(1)).min(d.batch)
    };
    if g == 1 && per_chunk > 1 {
        conv_batched(
            x,
            w,
            bias,
            d,
            per_chunk,
            parallel.then_some(threads),
            act,
            &mut y,
        );
        return y;
    }
    let tasks = d.batch * g;
    if parallel && tasks >= threads {
        y.par_chunks_mut(mg * out_sz)
            .enumerate()
            .for_each_init(Vec::new, |col, t| block(t, col, 1));
    } else {
        let mut col = Vec::new();
        y.chunks_mut(mg * out_sz)
            .enumerate()
            .for_each(|t| block(t, &mut col, if parallel { threads } else { 1 }));
    }
    y
}

/// The kernels crate's depthwise 3×3 geometry for `win`, if it is one
/// (2-D, undilated, the same stride 1 or 2 along both axes).
fn dw3x3_shape(win: &Window) -> Option<Dw3x3> {
    let two_d = win.input[0] == 1 && win.kernel[0] == 1 && win.output[0] == 1;
    let s = win.stride[1];
    (two_d
        && win.kernel == [1, 3, 3]
        && win.dilation == [1; 3]
        && win.stride[2] == s
        && (s == 1 || s == 2))
        .then_some(Dw3x3 {
            h: win.input[1],
            w: win.input[2],
            stride: s,
            pad: (
                win.pad_begin[1],
                win.pad_begin[2],
                win.pad_end[1],
                win.pad_end[2],
            ),
        })
        .filter(|k| k.out_hw() == (win.output[1], win.output[2]))
}

/// The kernels crate's direct-conv geometry when it takes this conv (2-D,
/// ungrouped, few output channels: LeNet, a MobileNet stem) on a CPU where
/// its SIMD path runs; `None` sends the conv to im2col + GEMM.
fn direct_shape(d: &ConvDims) -> Option<Conv2d> {
    let win = &d.win;
    let two_d = win.input[0] == 1 && win.kernel[0] == 1 && win.output[0] == 1;
    if !two_d || d.group != 1 || shrink_kernels::cpu::best() < shrink_kernels::cpu::Isa::Avx512 {
        return None;
    }
    let s = Conv2d {
        c_in: d.in_channels,
        h: win.input[1],
        w: win.input[2],
        c_out: d.out_channels,
        kh: win.kernel[1],
        kw: win.kernel[2],
        stride: (win.stride[1], win.stride[2]),
        pad: (
            win.pad_begin[1],
            win.pad_begin[2],
            win.pad_end[1],
            win.pad_end[2],
        ),
        dilation: (win.dilation[1], win.dilation[2]),
        groups: 1,
    };
    (directconv::fits(&s) && s.out_hw() == (win.output[1], win.output[2])).then_some(s)
}

/// Depthwise 3×3 planes on the kernels crate's SIMD kernel, with the bias
/// and the fused activation applied as each plane is written.
#[allow(clippy::too_many_arguments)]
fn depthwise_3x3(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    d: &ConvDims,
    shape: &Dw3x3,
    act: Activation,
    parallel: bool,
    y: &mut [f32],
) {
    let (in_sz, out_sz) = (d.win.input_size(), d.win.output_size());
    let mg = d.out_channels / d.group;
    let plane = |(i, yp): (usize, &mut [f32])| {
        let (n, m) = (i / d.out_channels, i % d.out_channels);
        let xp = &x[(n * d.in_channels + m / mg) * in_sz..][..in_sz];
        let ep = DwEpilogue {
            bias: bias.map_or(0.0, |b| b[m]),
            lo: act.lo,
            hi: act.hi,
        };
        if let Err(e) = dwconv::plane(shape, xp, &w[m * 9..(m + 1) * 9], ep, yp) {
            panic!("depthwise plane sized wrongly (caller bug): {e}");
        }
    };
    if parallel {
        y.par_chunks_mut(out_sz).enumerate().for_each(plane);
    } else {
        y.chunks_mut(out_sz).enumerate().for_each(plane);
    }
}

/// The im2col matrices of `imgs` images (`x` holds them back to back,
/// `in_sz` values per channel) side by side, `K × imgs·out` with image `i`'s
/// positions at columns `i·out..`, written straight into the panel layout of
/// the kernels crate's GEMM ([`PackedF32`]): no `K×N` matrix is built and
/// packed after. A pointwise conv's input already is its im2col matrix;
/// other windows unfold one image at a time into `scratch` first.
fn pack_columns(
    x: &[f32],
    channels: usize,
    win: &Window,
    imgs: usize,
    in_sz: usize,
    scratch: &mut Vec<f32>,
) -> PackedF32 {
    const NR: usize = f32gemm::NR;
    let out_sz = win.output_size();
    let k = channels * win.kernel_size();
    let n = imgs * out_sz;
    let mut data = vec![0f32; n.div_ceil(NR) * k * NR];
    let two_d = win.input[0] == 1 && win.kernel[0] == 1 && win.output[0] == 1;
    for i in 0..imgs {
        let xi = &x[i * channels * in_sz..(i + 1) * channels * in_sz];
        if win.is_pointwise() {
            for (kk, row) in xi.chunks_exact(out_sz).enumerate() {
                put_columns(&mut data, k, kk, i * out_sz, row);
            }
        } else if two_d {
            // Straight from the image: padding stays the zeros `data` starts with.
            let [_, _, iw] = win.input;
            let [_, kh, kw] = win.kernel;
            let [_, oh, ow] = win.output;
            let sw = win.stride[2];
            for c in 0..channels {
                let xc = &xi[c * in_sz..(c + 1) * in_sz];
                for b in 0..kh {
                    for e in 0..kw {
                        let kk = (c * kh + b) * kw + e;
                        let (lo, hi, off) = win.valid(2, e);
                        if lo >= hi {
                            continue;
                        }
                        for y in 0..oh {
                            let Some(yi) = win.index(1, y, b) else {
                                continue;
                            };
                            let src = &xc[yi * iw..(yi + 1) * iw];
                            let j0 = i * out_sz + y * ow;
                            if sw == 1 {
                                let start = (lo as isize + off) as usize;
                                put_columns(
                                    &mut data,
                                    k,
                                    kk,
                                    j0 + lo,
                                    &src[start..start + hi - lo],
                                );
                            } else {
                                for o in lo..hi {
                                    let j = j0 + o;
                                    data[(j / NR) * k * NR + kk * NR + j % NR] =
                                        src[((o * sw) as isize + off) as usize];
                                }
                            }
                        }
                    }
                }
            }
        } else {
            scratch.resize(k * out_sz, 0.0);
            im2col(xi, channels, win, scratch);
            for (kk, row) in scratch.chunks_exact(out_sz).enumerate() {
                put_columns(&mut data, k, kk, i * out_sz, row);
            }
        }
    }
    match PackedF32::from_panels(data, k, n) {
        Ok(p) => p,
        Err(e) => panic!("conv panels sized wrongly (caller bug): {e}"),
    }
}

/// Writes `row` as columns `j0..` of row `kk` of a packed panel matrix with
/// reduction length `k` (column j of row kk lives at (j/NR)·K·NR + kk·NR + j%NR).
fn put_columns(data: &mut [f32], k: usize, kk: usize, j0: usize, row: &[f32]) {
    const NR: usize = f32gemm::NR;
    let mut j = j0;
    let mut o = 0;
    while o < row.len() {
        let (p, off) = (j / NR, j % NR);
        let len = (NR - off).min(row.len() - o);
        let at = p * k * NR + kk * NR + off;
        if let Err(e) = copy_short(&mut data[at..at + len], &row[o..o + len]) {
            panic!("panel run sized wrongly (caller bug): {e}");
        }
        o += len;
        j += len;
    }
}

/// `y[m×n] = clip(w[m×k] · cols + row_bias)` on the kernels crate's GEMM
/// with the weights on the left: the im2col columns are the packed right
/// operand, so the product comes out directly in NCHW order and the bias
/// is fused per output channel (= row). `parallel` lets the GEMM split over
/// the rayon pool.
fn weights_left_gemm(
    w: &[f32],
    m: usize,
    cols: &PackedF32,
    ep: &F32Epilogue,
    y: &mut [f32],
    parallel: bool,
) {
    let (k, n) = (cols.k(), cols.n());
    let r = if parallel {
        f32gemm::gemm(&w[..m * k], m, cols, ep, &mut y[..m * n])
    } else {
        f32gemm::gemm_serial(&w[..m * k], m, cols, ep, &mut y[..m * n])
    };
    if let Err(e) = r {
        panic!("conv GEMM operands disagree (caller bug): {e}");
    }
}

/// Target width (output positions) of one batched conv GEMM.
const CHUNK_COLUMNS: usize = 2048;

/// Ungrouped conv over chunks of `per_chunk` images: their im2col matrices
/// sit side by side (K × chunk·out), one GEMM computes all their outputs,
/// which are then scattered back to N×M×out order on top of the bias.
#[allow(clippy::too_many_arguments)]
fn conv_batched(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    d: &ConvDims,
    per_chunk: usize,
    threads: Option<usize>,
    act: Activation,
    y: &mut [f32],
) {
    let win = &d.win;
    let (c, m) = (d.in_channels, d.out_channels);
    let (in_sz, out_sz) = (win.input_size(), win.output_size());
    let chunk = |(col, tmp): &mut (Vec<f32>, Vec<f32>), (ci, yc): (usize, &mut [f32])| {
        let imgs = yc.len() / (m * out_sz);
        let cols = imgs * out_sz;
        let first = ci * per_chunk;
        let xs = &x[first * c * in_sz..(first + imgs) * c * in_sz];
        let packed = pack_columns(xs, c, win, imgs, in_sz, col);
        let ep = F32Epilogue {
            row_bias: bias,
            lo: act.lo,
            hi: act.hi,
            ..Default::default()
        };
        if imgs == 1 {
            weights_left_gemm(w, m, &packed, &ep, yc, false);
            return;
        }
        tmp.resize(m * cols, 0.0);
        weights_left_gemm(w, m, &packed, &ep, tmp, false);
        for j in 0..imgs {
            for o in 0..m {
                let dst = &mut yc[(j * m + o) * out_sz..(j * m + o + 1) * out_sz];
                dst.copy_from_slice(&tmp[o * cols + j * out_sz..o * cols + (j + 1) * out_sz]);
            }
        }
    };
    let block = per_chunk * m * out_sz;
    match threads {
        Some(_) => y
            .par_chunks_mut(block)
            .enumerate()
            .for_each_init(|| (Vec::new(), Vec::new()), chunk),
        None => {
            let mut scratch = (Vec::new(), Vec::new());
            y.chunks_mut(block)
                .enumerate()
                .for_each(|t| chunk(&mut scratch, t));
        }
    }
}

/// A depthwise plane split into stride×stride phase planes of the
/// zero-padded input, so that every kernel tap becomes one contiguous
/// multiply-add over the whole output (computed `pw` columns wide, the
/// extra columns dropped at the end).
///
/// ```text
///  padded input (stride 2)      phase (r, s) holds padded[2i + r][2j + s]
///  a b a b a b                  phase (0,0): a a a    phase (0,1): b b b
///  c d c d c d        ──►       phase (1,0): c c c    phase (1,1): d d d
///  a b a b a b                  tap (ky, kx) reads phase (ky % 2, kx % 2)
///                               shifted by (ky / 2, kx / 2)
/// ```
struct PhasePlanes {
    phases: Vec<f32>,
    acc: Vec<f32>,
    ph: usize,
    pw: usize,
}

impl PhasePlanes {
    /// Whether `win` is a 1-D/2-D undilated window this layout handles.
    fn fits(win: &Window) -> bool {
        win.input[0] == 1 && win.kernel[0] == 1 && win.output[0] == 1 && win.dilation == [1; 3]
    }

    fn new(win: &Window) -> PhasePlanes {
        let s = [win.stride[1], win.stride[2]];
        // Padded extent covering every tap of every window, in whole phases,
        // plus one spare phase row for the shifted reads of the last taps.
        let ext = |d: usize| {
            let need = (win.output[d] - 1) * win.stride[d] + win.kernel[d];
            need.max(win.pad_begin[d] + win.input[d])
                .div_ceil(win.stride[d])
        };
        let (ph, pw) = (ext(1) + 1, ext(2));
        PhasePlanes {
            phases: vec![0.0; s[0] * s[1] * ph * pw],
            acc: vec![0.0; win.output[1] * pw],
            ph,
            pw,
        }
    }

    fn depthwise(&mut self, x: &[f32], w: &[f32], win: &Window, y: &mut [f32]) {
        let (sh, sw) = (win.stride[1], win.stride[2]);
        let (ih, iw) = (win.input[1], win.input[2]);
        let (pt, pl) = (win.pad_begin[1], win.pad_begin[2]);
        let (oh, ow) = (win.output[1], win.output[2]);
        let (ph, pw) = (self.ph, self.pw);
        let plane = ph * pw;
        self.phases.fill(0.0);
        for (r, row) in x.chunks(iw).take(ih).enumerate() {
            let pr = r + pt;
            let (phase_r, i) = (pr % sh, pr / sh);
            // Column phase q takes input columns c ≡ q - pl (mod sw).
            for q in 0..sw.min(iw) {
                let c0 = (q + sw - pl % sw) % sw;
                if c0 >= iw {
                    continue;
                }
                let base = (phase_r * sw + q) * plane + i * pw + (c0 + pl) / sw;
                let dst = &mut self.phases[base..base + pw - (c0 + pl) / sw];
                for (d, &v) in dst.iter_mut().zip(row[c0..].iter().step_by(sw)) {
                    *d = v;
                }
            }
        }
        let len = oh * pw;
        self.acc[..len].fill(0.0);
        let acc = &mut self.acc[..len];
        for ky in 0..win.kernel[1] {
            for kx in 0..win.kernel[2] {
                let wv = w[ky * win.kernel[2] + kx];
                let p = (ky % sh) * sw + kx % sw;
                let off = p * plane + (ky / sh) * pw + kx / sw;
                for (a, v) in acc.iter_mut().zip(&self.phases[off..off + len]) {
                    *a += wv * v;
                }
            }
        }
        for (yo, dst) in y.chunks_mut(ow).enumerate() {
            for (d, a) in dst.iter_mut().zip(&acc[yo * pw..yo * pw + ow]) {
                *d += a;
            }
        }
    }
}

fn conv_transpose(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let w = ctx.required(inputs, 1)?;
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(ctx.error(format!("X {xs:?} and W {ws:?} must have the same rank ≥ 3")));
    }
    let node = ctx.node;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let group = node.attr_int("group", 1).map_err(attr)?.max(1) as usize;
    let (batch, c) = (xs[0], xs[1]);
    if ws[0] != c || c % group != 0 {
        return Err(ctx.error(format!(
            "W {ws:?} must have X's {c} channels first, divisible by group = {group}"
        )));
    }
    let (cg, mg) = (c / group, ws[1]);
    let m = mg * group;
    let r = xs.len() - 2;
    let kernel = kernel_shape(ctx, &ws[2..])?;
    let ints = |key: &str, default: i64, len: usize| -> Result<Vec<i64>> {
        match node.attr_ints(key).map_err(attr)? {
            None => Ok(vec![default; len]),
            Some(v) if v.len() == len => Ok(v.to_vec()),
            Some(v) => Err(ctx.error(format!("attribute '{key}' = {v:?}: expected {len} values"))),
        }
    };
    let strides = ints("strides", 1, r)?;
    let dilations = ints("dilations", 1, r)?;
    let out_pad = ints("output_padding", 0, r)?;
    let auto_pad = node.attr_str("auto_pad", "NOTSET").map_err(attr)?;
    let explicit_shape = match node.attr_ints("output_shape").map_err(attr)? {
        Some(s) if s.len() == r => Some(s.to_vec()),
        Some(s) if s.len() == r + 2 => Some(s[2..].to_vec()),
        Some(s) => {
            return Err(ctx.error(format!("output_shape {s:?} must list the {r} spatial dims")))
        }
        None => None,
    };
    if strides.iter().chain(&dilations).any(|&v| v < 1) {
        return Err(ctx.error("strides and dilations must be positive"));
    }
    let mut pads = ints("pads", 0, 2 * r)?;
    let mut out = vec![0i64; r];
    let same = auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER";
    for i in 0..r {
        let n = xs[2 + i] as i64;
        let dk = (kernel[i] as i64 - 1) * dilations[i] + 1;
        let full = strides[i] * (n - 1) + out_pad[i] + dk;
        if explicit_shape.is_some() || same {
            let target = explicit_shape
                .as_ref()
                .map(|s| s[i])
                .unwrap_or(n * strides[i]);
            // Floor division as ONNX's reference: a negative total (output_shape
            // beyond the full extent) leaves pad_begin at 0 and extends the end.
            let total = full - target;
            let half = total.div_euclid(2);
            let (pb, pe) = if auto_pad == "SAME_UPPER" {
                (half, total - half)
            } else {
                (total - half, half)
            };
            pads[i] = pb;
            pads[i + r] = pe;
            out[i] = target;
        } else {
            out[i] = full - pads[i] - pads[i + r];
        }
        if out[i] < 1 {
            return Err(ctx.error(format!(
                "computed output length {} along spatial dim {i} is not positive",
                out[i]
            )));
        }
    }
    // The scatter is the adjoint of a conv whose input is our output: build
    // that conv's window (input = our output dims, output = our input dims).
    // Negative pads (output_shape larger than the full extent) grow the end.
    let mut win = Window {
        rank: r,
        input: [1; 3],
        kernel: [1; 3],
        stride: [1; 3],
        dilation: [1; 3],
        pad_begin: [0; 3],
        pad_end: [0; 3],
        output: [1; 3],
    };
    if r > 3 {
        return Err(ctx.error(format!("{r} spatial dims; 1 to 3 are supported")));
    }
    for i in 0..r {
        let d = 3 - r + i;
        if pads[i] < 0 {
            return Err(ctx.error(format!(
                "output_shape asks for more than the full extent along spatial dim {i}"
            )));
        }
        win.input[d] = out[i] as usize;
        win.kernel[d] = kernel[i];
        win.stride[d] = strides[i] as usize;
        win.dilation[d] = dilations[i] as usize;
        win.pad_begin[d] = pads[i] as usize;
        win.pad_end[d] = pads[i + r].max(0) as usize;
        win.output[d] = xs[2 + i];
    }
    let xv = floats(ctx, x, "X")?;
    let wv = floats(ctx, w, "W")?;
    let bias = match inputs.get(2).copied().flatten() {
        Some(b) if b.len() != m => {
            return Err(ctx.error(format!("B has {} elements, expected {m}", b.len())))
        }
        Some(b) => Some(floats(ctx, b, "B")?),
        None => None,
    };
    let (y_sz, x_sz, ksz) = (win.input_size(), win.output_size(), win.kernel_size());
    let mut y = vec![0f32; batch * m * y_sz];
    if let Some(b) = &bias {
        for (i, plane) in y.chunks_mut(y_sz).enumerate() {
            plane.fill(b[i % m]);
        }
    }
    let rows = mg * ksz;
    let mut col = vec![0f32; rows * x_sz];
    for (i, yb) in y.chunks_mut(mg * y_sz).enumerate() {
        let (n, gi) = (i / group, i % group);
        let xg = &xv[(n * c + gi * cg) * x_sz..][..cg * x_sz];
        let wg = &wv[gi * cg * rows..(gi + 1) * cg * rows];
        sgemm(
            rows,
            x_sz,
            cg,
            MatRef::transposed(wg, rows),
            MatRef::rows(xg, x_sz),
            &mut col,
            1.0,
            None,
            ctx.threads,
        );
        col2im(&col, mg, &win, yb);
    }
    let mut shape = vec![batch, m];
    shape.extend(out.iter().map(|&v| v as usize));
    Ok(vec![float_tensor(x.dtype(), shape, y)?])
}

/// Integer convolution on zero-point-free i32 values: `x` is N×C×spatial,
/// `w` M×(C/group)×kernel; returns N×M×output i32 sums (wrapping).
pub(super) fn conv_i32(x: &[i32], w: &[i32], d: &ConvDimsPub) -> Vec<i32> {
    let win = &d.0.win;
    let dd = &d.0;
    let (g, cg, mg) = (
        dd.group,
        dd.in_channels / dd.group,
        dd.out_channels / dd.group,
    );
    let (in_sz, out_sz, ksz) = (win.input_size(), win.output_size(), win.kernel_size());
    let kdim = cg * ksz;
    let mut y = vec![0i32; dd.batch * dd.out_channels * out_sz];
    let mut col = vec![0i32; kdim * out_sz];
    for (i, yb) in y.chunks_mut(mg * out_sz).enumerate() {
        let (n, gi) = (i / g, i % g);
        let xg = &x[(n * dd.in_channels + gi * cg) * in_sz..][..cg * in_sz];
        im2col(xg, cg, win, &mut col);
        let wg = &w[gi * mg * kdim..(gi + 1) * mg * kdim];
        for m in 0..mg {
            let yrow = &mut yb[m * out_sz..(m + 1) * out_sz];
            for p in 0..kdim {
                let wv = wg[m * kdim + p];
                if wv == 0 {
                    continue;
                }
                for (yv, &cv) in yrow.iter_mut().zip(&col[p * out_sz..(p + 1) * out_sz]) {
                    *yv = yv.mac(wv, cv);
                }
            }
        }
    }
    y
}

/// Checked conv shapes, for the quantized conv ops elsewhere in `ops`.
pub(super) struct ConvDimsPub(ConvDims);

impl ConvDimsPub {
    pub fn new(ctx: &OpContext, x: &[usize], w: &[usize]) -> Result<ConvDimsPub> {
        conv_dims(ctx, x, w).map(ConvDimsPub)
    }
    pub fn out_channels(&self) -> usize {
        self.0.out_channels
    }
    pub fn output_shape(&self) -> Vec<usize> {
        output_shape(self.0.batch, self.0.out_channels, &self.0.win)
    }
}

/// Subtracts a zero point given as a scalar or one value per `channel_dim`
/// slice (per output channel for weights).
pub(super) fn remove_zero_point(
    ctx: &OpContext,
    v: &mut [i32],
    zp: &[i32],
    channels: usize,
    what: &str,
) -> Result<()> {
    match zp.len() {
        0 => Ok(()),
        1 => {
            v.iter_mut().for_each(|x| *x -= zp[0]);
            Ok(())
        }
        n if n == channels && channels > 0 => {
            let per = v.len() / channels;
            for (c, chunk) in v.chunks_mut(per.max(1)).enumerate() {
                chunk.iter_mut().for_each(|x| *x -= zp[c % channels]);
            }
            Ok(())
        }
        n => Err(ctx.error(format!("{what} has {n} elements; expected 1 or {channels}"))),
    }
}

fn conv_integer(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let w = ctx.required(inputs, 1)?;
    let d = ConvDimsPub::new(ctx, x.shape(), w.shape())?;
    let mut xv = int8_values(ctx, x, "x")?;
    let mut wv = int8_values(ctx, w, "w")?;
    if let Some(z) = inputs.get(2).copied().flatten() {
        let z = int8_values(ctx, z, "x_zero_point")?;
        remove_zero_point(ctx, &mut xv, &z, 1, "x_zero_point")?;
    }
    if let Some(z) = inputs.get(3).copied().flatten() {
        let z = int8_values(ctx, z, "w_zero_point")?;
        remove_zero_point(ctx, &mut wv, &z, d.out_channels(), "w_zero_point")?;
    }
    let y = conv_i32(&xv, &wv, &d);
    Ok(vec![Tensor::from_vec(d.output_shape(), y)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 2-D convolution by definition, the reference for im2col + GEMM.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv2d(
        x: &[f32],
        w: &[f32],
        n: usize,
        c: usize,
        h: usize,
        wd: usize,
        m: usize,
        g: usize,
        k: usize,
        s: usize,
        p: usize,
        dil: usize,
    ) -> (Vec<f32>, usize, usize) {
        let dk = (k - 1) * dil + 1;
        let oh = (h + 2 * p - dk) / s + 1;
        let ow = (wd + 2 * p - dk) / s + 1;
        let (cg, mg) = (c / g, m / g);
        let mut y = vec![0f32; n * m * oh * ow];
        for b in 0..n {
            for mo in 0..m {
                let gi = mo / mg;
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = 0f32;
                        for ci in 0..cg {
                            for a in 0..k {
                                for e in 0..k {
                                    let yi = (i * s + a * dil) as isize - p as isize;
                                    let xi = (j * s + e * dil) as isize - p as isize;
                                    if yi < 0 || xi < 0 || yi >= h as isize || xi >= wd as isize {
                                        continue;
                                    }
                                    let cin = gi * cg + ci;
                                    acc += x[((b * c + cin) * h + yi as usize) * wd + xi as usize]
                                        * w[((mo * cg + ci) * k + a) * k + e];
                                }
                            }
                        }
                        y[((b * m + mo) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        (y, oh, ow)
    }

    fn dims(n: usize, c: usize, m: usize, g: usize, win: Window) -> ConvDims {
        ConvDims {
            batch: n,
            in_channels: c,
            out_channels: m,
            group: g,
            win,
        }
    }

    #[test]
    fn conv_paths_match_direct_convolution() {
        // (n, c, h, w, m, group, k, stride, pad, dilation): dense, strided,
        // dilated, grouped, depthwise with multiplier, pointwise, batched
        // (images side by side in one GEMM), unpadded strided depthwise.
        let cases = [
            (1, 3, 9, 8, 4, 1, 3, 1, 1, 1),
            (2, 4, 10, 7, 6, 2, 3, 2, 1, 1),
            (1, 2, 11, 11, 3, 1, 3, 1, 2, 2),
            (3, 4, 7, 9, 8, 4, 3, 2, 1, 1),
            (2, 5, 6, 6, 7, 1, 1, 1, 0, 1),
            (1, 6, 5, 5, 6, 6, 5, 1, 2, 1),
            (5, 3, 8, 7, 5, 1, 3, 2, 1, 1),
            (3, 4, 9, 9, 4, 4, 3, 2, 0, 1),
        ];
        for (ci, &(n, c, h, wd, m, g, k, s, p, dil)) in cases.iter().enumerate() {
            let x: Vec<f32> = (0..n * c * h * wd)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let w: Vec<f32> = (0..m * (c / g) * k * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let (want, oh, ow) = naive_conv2d(&x, &w, n, c, h, wd, m, g, k, s, p, dil);
            let win = Window {
                rank: 2,
                input: [1, h, wd],
                kernel: [1, k, k],
                stride: [1, s, s],
                dilation: [1, dil, dil],
                pad_begin: [0, p, p],
                pad_end: [0, p, p],
                output: [1, oh, ow],
            };
            for threads in [1, 2] {
                let bias: Vec<f32> = (0..m).map(|i| i as f32).collect();
                let len = want.len();
                let got = conv_f32(
                    &x,
                    &w,
                    Some(&bias),
                    &dims(n, c, m, g, win.clone()),
                    threads,
                    Activation::NONE,
                    vec![f32::NAN; len],
                );
                assert_eq!(got.len(), want.len(), "case {ci}");
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    let b = b + bias[(i / (oh * ow)) % m];
                    assert!((a - b).abs() < 1e-4, "case {ci} idx {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for any x, c.
        let win = Window {
            rank: 2,
            input: [1, 5, 6],
            kernel: [1, 3, 2],
            stride: [1, 2, 1],
            dilation: [1, 1, 2],
            pad_begin: [0, 1, 0],
            pad_end: [0, 1, 1],
            output: [1, 3, 5],
        };
        let ch = 2;
        let x: Vec<f32> = (0..ch * 30).map(|i| (i as f32 * 0.3).sin()).collect();
        let rows = ch * win.kernel_size();
        let c: Vec<f32> = (0..rows * win.output_size())
            .map(|i| (i as f32 * 0.7).cos())
            .collect();
        let mut col = vec![0f32; c.len()];
        im2col(&x, ch, &win, &mut col);
        let mut back = vec![0f32; x.len()];
        col2im(&c, ch, &win, &mut back);
        let lhs: f32 = col.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
    }
}
