//! The lowered ops (domain `ai.shrink`): quantised tensors in and out.
//!
//! Each op reads its quantisation parameters from constant inputs, so a
//! lowered node is self-describing. With attribute `simulate = 1` it runs
//! the scalar reference ([`super::simulate`]); otherwise the integer kernels
//! of `shrink-kernels`, with weights packed once per session
//! ([`OpContext::prepared`]). Both produce the same codes bit for bit.

use super::simulate::{self, ConvGeom, LinearQ};
use super::DOMAIN;
use crate::ops::{OpContext, Registry};
use crate::Result;
use rayon::prelude::*;
use shrink_kernels::conv::Conv2d;
use shrink_kernels::cpu::{self, Isa};
use shrink_kernels::epilogue::{Epilogue, Output};
use shrink_kernels::int8::depthwise::{self, Dw2d, DwScratch};
use shrink_kernels::int8::direct::{self, DirectWeights};
use shrink_kernels::int8::planar::{self, Im2col, PackedRowsI8, QuadInput};
use shrink_kernels::int8::{self as k8, PackedI8, Requant};
use shrink_kernels::pool::{self as kpool, Pool2d};
use shrink_tensor::{DType, Tensor, TensorData};

/// Ops this module registers (all must be present for lowering).
pub(super) const OPS: &[&str] = &["QConv", "QGemm", "QMaxPool", "QGlobalAveragePool", "QAdd"];

pub(super) fn register(r: &mut Registry) {
    r.add(DOMAIN, "QConv", qconv);
    r.add(DOMAIN, "QGemm", qgemm);
    r.add(DOMAIN, "QMaxPool", qmax_pool);
    r.add(DOMAIN, "QGlobalAveragePool", qglobal_avg);
    r.add(DOMAIN, "QAdd", qadd);
}

fn simulating(ctx: &OpContext) -> bool {
    ctx.node.attr_int("simulate", 0).unwrap_or(0) != 0
}

fn isa_name() -> &'static str {
    match cpu::best() {
        Isa::Avx512 | Isa::Avx512Bf16 => "int8-vnni",
        Isa::Avx2 => "int8-avx2",
        Isa::Scalar => "int8-scalar",
    }
}

/// A scalar f32 scale input.
fn scale(ctx: &OpContext, inputs: &[Option<&Tensor>], i: usize) -> Result<f32> {
    let t = ctx.required(inputs, i)?;
    if t.dtype() != DType::F32 || t.len() != 1 {
        return Err(ctx.error(format!("input #{i} must be a scalar f32 scale")));
    }
    Ok(t.to_f32_vec()[0])
}

/// A scalar u8/i8 zero point input (absent: u8 0) and its dtype.
fn zero(ctx: &OpContext, inputs: &[Option<&Tensor>], i: usize) -> Result<(i32, DType)> {
    match inputs.get(i).copied().flatten() {
        None => Ok((0, DType::U8)),
        Some(t) if t.len() == 1 && matches!(t.dtype(), DType::U8 | DType::I8) => {
            Ok((t.to_i64_vec()[0] as i32, t.dtype()))
        }
        Some(t) => Err(ctx.error(format!(
            "input #{i} must be a scalar u8/i8 zero point, got {} of {} values",
            t.dtype(),
            t.len()
        ))),
    }
}

/// A quantised activation's codes, checked against its zero point's dtype.
fn check_act(ctx: &OpContext, x: &Tensor, dt: DType, what: &str) -> Result<()> {
    if x.dtype() != dt {
        return Err(ctx.error(format!(
            "{what} is {} but its zero point is {dt}",
            x.dtype()
        )));
    }
    Ok(())
}

/// Activation bytes as u8 with the zero point to match: i8 codes are
/// shifted by 128 (`q ^ 0x80`), which leaves every `q − z` unchanged.
pub(super) fn as_u8(x: &Tensor, z: i32) -> (std::borrow::Cow<'_, [u8]>, u8) {
    match x.data() {
        TensorData::U8(v) => (std::borrow::Cow::Borrowed(v.as_slice()), z as u8),
        TensorData::I8(v) => (
            std::borrow::Cow::Owned(v.iter().map(|&b| (b as u8) ^ 0x80).collect()),
            (z + 128) as u8,
        ),
        _ => (std::borrow::Cow::Owned(Vec::new()), 0),
    }
}

/// Bytes written by a kernel as a tensor of the output type.
pub(super) fn bytes_tensor(dt: DType, shape: Vec<usize>, v: Vec<u8>) -> Result<Tensor> {
    Ok(match dt {
        DType::I8 => Tensor::from_vec(shape, v.into_iter().map(|b| b as i8).collect::<Vec<_>>())?,
        _ => Tensor::from_vec(shape, v)?,
    })
}

fn codes_tensor(dt: DType, shape: Vec<usize>, v: Vec<i32>) -> Result<Tensor> {
    Ok(match dt {
        DType::I8 => Tensor::from_vec(shape, v.into_iter().map(|b| b as i8).collect::<Vec<_>>())?,
        _ => Tensor::from_vec(shape, v.into_iter().map(|b| b as u8).collect::<Vec<_>>())?,
    })
}

fn codes(x: &Tensor) -> Vec<i32> {
    x.to_i64_vec().into_iter().map(|v| v as i32).collect()
}

pub(super) fn clamp_range(ctx: &OpContext, dt: DType) -> Result<(i32, i32)> {
    let (tlo, thi) = if dt == DType::I8 {
        (-128, 127)
    } else {
        (0, 255)
    };
    let lo = ctx
        .node
        .attr_int("qmin", tlo)
        .map_err(|e| ctx.error(e.to_string()))?;
    let hi = ctx
        .node
        .attr_int("qmax", thi)
        .map_err(|e| ctx.error(e.to_string()))?;
    Ok((lo.max(tlo) as i32, hi.min(thi) as i32))
}

/// The parameters of a QConv/QGemm node: inputs `[x, x_scale, x_zero, w,
/// w_scale, w_zero, y_scale, y_zero, bias]`.
pub(super) struct Linear<'t> {
    /// Codes, or (QConv only) f32 values still to quantise with `x_scale`.
    pub(super) x: &'t Tensor,
    pub(super) x_scale: f32,
    pub(super) w: &'t Tensor,
    pub(super) q: LinearQ,
    pub(super) y_dt: DType,
    /// The type of x's codes (its zero point's).
    pub(super) x_dt: DType,
}

pub(super) fn linear<'t>(
    ctx: &OpContext,
    inputs: &[Option<&'t Tensor>],
    out_ch: impl Fn(&[usize]) -> usize,
) -> Result<Linear<'t>> {
    let x = ctx.required(inputs, 0)?;
    let sx = scale(ctx, inputs, 1)?;
    let (zx, xdt) = zero(ctx, inputs, 2)?;
    if x.dtype() != DType::F32 {
        check_act(ctx, x, xdt, "x")?;
    }
    let w = ctx.required(inputs, 3)?;
    let sw = ctx.required(inputs, 4)?;
    if sw.dtype() != DType::F32 {
        return Err(ctx.error("w_scale must be f32"));
    }
    let sw = sw.to_f32_vec();
    let w_zero = match inputs.get(5).copied().flatten() {
        None => 0,
        Some(z) => {
            let zv = z.to_i64_vec();
            if zv.is_empty() || zv.iter().any(|&v| v != zv[0]) {
                return Err(ctx.error("w_zero_point must be one value for every channel"));
            }
            zv[0] as i32
        }
    };
    let sy = scale(ctx, inputs, 6)?;
    let (zy, ydt) = zero(ctx, inputs, 7)?;
    let n = out_ch(w.shape());
    if sw.len() != 1 && sw.len() != n {
        return Err(ctx.error(format!(
            "w_scale has {} values; expected 1 or {n} (one per output channel)",
            sw.len()
        )));
    }
    let mult: Vec<f32> = sw.iter().map(|&s| (sx * s) / sy).collect();
    let bias = match inputs.get(8).copied().flatten() {
        None => None,
        Some(b) => {
            let bv = b
                .as_slice::<i32>()
                .map_err(|_| ctx.error(format!("bias must be i32, got {}", b.dtype())))?;
            if bv.len() != n {
                return Err(ctx.error(format!("bias has {} values, expected {n}", bv.len())));
            }
            Some(bv.to_vec())
        }
    };
    let (lo, hi) = clamp_range(ctx, ydt)?;
    Ok(Linear {
        x,
        x_scale: sx,
        w,
        q: LinearQ {
            x_zero: zx,
            // Filled by `with_weights` only where needed (simulation,
            // packing once): converting every run would cost more than the GEMM.
            w: Vec::new(),
            w_zero,
            mult,
            bias,
            y_zero: zy,
            lo,
            hi,
        },
        y_dt: ydt,
        x_dt: xdt,
    })
}

impl Linear<'_> {
    pub(super) fn with_weights(&self) -> LinearQ {
        let mut q = self.q.clone();
        q.w = codes(self.w);
        q
    }

    /// The code range of x's type.
    fn x_range(&self) -> (i32, i32) {
        if self.x_dt == DType::I8 {
            (-128, 127)
        } else {
            (0, 255)
        }
    }

    /// x as codes: quantised here (ONNX QuantizeLinear, per tensor) when
    /// it is the f32 input of a folded QuantizeLinear.
    fn x_codes(&self, ctx: &OpContext) -> Result<std::borrow::Cow<'_, Tensor>> {
        if self.x.dtype() != DType::F32 {
            return Ok(std::borrow::Cow::Borrowed(self.x));
        }
        let (lo, hi) = self.x_range();
        let mut out = vec![0u8; self.x.len()];
        k8::elementwise::quantize(
            self.x.as_slice::<f32>()?,
            self.x_scale,
            self.q.x_zero,
            lo,
            hi,
            &mut out,
        )
        .map_err(|e| ctx.error(e.to_string()))?;
        Ok(std::borrow::Cow::Owned(bytes_tensor(
            self.x_dt,
            self.x.shape().to_vec(),
            out,
        )?))
    }
}

/// Weight codes as i8 with a zero point the kernels accept: `w − z_w` when
/// every value fits (zero point 0), else codes and zero point shifted by 128
/// (uint8 weights), else `None`.
pub(super) fn weights_i8(q: &LinearQ) -> Option<(Vec<i8>, i8)> {
    let fits = |v: i32| (-128..=127).contains(&v);
    if q.w.iter().all(|&v| fits(v - q.w_zero)) {
        return Some((q.w.iter().map(|&v| (v - q.w_zero) as i8).collect(), 0));
    }
    if fits(q.w_zero) && q.w.iter().all(|&v| fits(v)) {
        return Some((q.w.iter().map(|&v| v as i8).collect(), q.w_zero as i8));
    }
    if fits(q.w_zero - 128) && q.w.iter().all(|&v| fits(v - 128)) {
        return Some((
            q.w.iter().map(|&v| (v - 128) as i8).collect(),
            (q.w_zero - 128) as i8,
        ));
    }
    None
}

// ---------------------------------------------------------------- QConv

pub(super) fn conv_geom(ctx: &OpContext, xs: &[usize], ws: &[usize]) -> Result<ConvGeom> {
    if xs.len() != 4 || ws.len() != 4 {
        return Err(ctx.error(format!("QConv is 2-D: X {xs:?}, W {ws:?}")));
    }
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let ints = |k: &str, d: usize, len: usize| -> Result<Vec<usize>> {
        match ctx.node.attr_ints(k).map_err(attr)? {
            None => Ok(vec![d; len]),
            Some(v) if v.len() == len && v.iter().all(|&x| x >= 0) => {
                Ok(v.iter().map(|&x| x as usize).collect())
            }
            Some(v) => Err(ctx.error(format!("attribute {k} = {v:?}: expected {len} values ≥ 0"))),
        }
    };
    let valid = ctx.node.attr_str("auto_pad", "NOTSET").map_err(attr)? == "VALID";
    let pads = if valid {
        vec![0; 4]
    } else {
        ints("pads", 0, 4)?
    };
    let strides = ints("strides", 1, 2)?;
    let dil = ints("dilations", 1, 2)?;
    let groups = ctx.node.attr_int("group", 1).map_err(attr)?.max(1) as usize;
    let g = ConvGeom {
        n: xs[0],
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out: ws[0],
        kh: ws[2],
        kw: ws[3],
        stride: (strides[0], strides[1]),
        pad: (pads[0], pads[1], pads[2], pads[3]),
        dilation: (dil[0], dil[1]),
        groups,
    };
    let bad = [
        g.kh,
        g.kw,
        g.stride.0,
        g.stride.1,
        g.dilation.0,
        g.dilation.1,
    ]
    .contains(&0)
        || !g.c_in.is_multiple_of(groups)
        || !g.c_out.is_multiple_of(groups)
        || ws[1] * groups != g.c_in
        || g.h + g.pad.0 + g.pad.2 < g.dilation.0 * (g.kh - 1) + 1
        || g.w + g.pad.1 + g.pad.3 < g.dilation.1 * (g.kw - 1) + 1;
    if bad {
        return Err(ctx.error(format!(
            "X {xs:?} and W {ws:?} do not make a valid convolution ({g:?})"
        )));
    }
    Ok(g)
}

/// Weights packed once per session for the conv kernels.
struct ConvState {
    /// Depthwise taps (`w − z_w` as i8), when groups = C_in = C_out.
    depthwise: Option<Vec<i8>>,
    /// Per group, for the planar GEMM.
    groups: Vec<PackedRowsI8>,
    /// Centred f32 weights for the direct conv (few channels, short K).
    direct: Option<(Conv2d, DirectWeights)>,
}

/// The direct kernel's view of a conv geometry.
fn conv2d(g: &ConvGeom) -> Conv2d {
    Conv2d {
        c_in: g.c_in,
        h: g.h,
        w: g.w,
        c_out: g.c_out,
        kh: g.kh,
        kw: g.kw,
        stride: g.stride,
        pad: g.pad,
        dilation: g.dilation,
        groups: g.groups,
    }
}

fn conv_state(l: &Linear, g: &ConvGeom) -> Result<Option<ConvState>> {
    let Some((w, zw)) = weights_i8(&l.with_weights()) else {
        return Ok(None);
    };
    if zw != 0 {
        return Ok(None);
    }
    if g.groups == g.c_in && g.groups == g.c_out {
        return Ok(Some(ConvState {
            depthwise: Some(w),
            groups: Vec::new(),
            direct: None,
        }));
    }
    let c2 = conv2d(g);
    // Few channels and a short reduction: the direct kernel (faster than
    // im2col + GEMM there: LeNet-5's convs at batch 256, 1 thread, measured
    // 1.6× on the whole model).
    if direct::fits(&c2) {
        let d = DirectWeights::new(&c2, &w).map_err(|e| crate::RuntimeError::Input {
            name: "QConv weights".into(),
            msg: e.to_string(),
        })?;
        return Ok(Some(ConvState {
            depthwise: None,
            groups: Vec::new(),
            direct: Some((c2, d)),
        }));
    }
    let og = g.c_out / g.groups;
    let k = g.c_in / g.groups * g.kh * g.kw;
    let groups = (0..g.groups)
        .map(|gi| PackedRowsI8::pack(&w[gi * og * k..(gi + 1) * og * k], og, k))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| crate::RuntimeError::Input {
            name: "QConv weights".into(),
            msg: e.to_string(),
        })?;
    Ok(Some(ConvState {
        depthwise: None,
        groups,
        direct: None,
    }))
}

fn qconv(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let l = linear(ctx, inputs, |ws| ws.first().copied().unwrap_or(0))?;
    let g = conv_geom(ctx, l.x.shape(), l.w.shape())?;
    let (oh, ow) = g.out_hw();
    let shape = vec![g.n, g.c_out, oh, ow];
    let kname = format!("{}x{}", g.kh, g.kw);
    let st = if simulating(ctx) {
        None
    } else {
        ctx.prepared(|| conv_state(&l, &g))?
    };
    let quantising = if l.x.dtype() == DType::F32 {
        " + quantize"
    } else {
        ""
    };
    let Some(st) = st else {
        ctx.set_kernel(if simulating(ctx) {
            format!("scalar simulate conv {kname}{quantising}")
        } else {
            format!("int8 scalar conv {kname} (weight zero point){quantising}")
        });
        let y = simulate::conv(&codes(&*l.x_codes(ctx)?), &g, &l.with_weights());
        return Ok(vec![codes_tensor(l.y_dt, shape, y)?]);
    };
    let rq = Requant {
        mult: &l.q.mult,
        bias: l.q.bias.as_deref(),
        out_zero: l.q.y_zero,
        lo: l.q.lo,
        hi: l.q.hi,
    };
    let in_img = g.c_in * g.h * g.w;
    let p = oh * ow;
    let out_img = g.c_out * p;
    let mut out = vec![0u8; g.n * out_img];
    let kerr = |e: shrink_kernels::KernelError| ctx.error(e.to_string());
    let threads = rayon::current_num_threads();
    if let Some((c2, dw)) = &st.direct {
        ctx.set_kernel(if direct::uses_vnni(c2) {
            format!("int8-vnni direct conv {kname}{quantising}")
        } else {
            format!("int8 direct conv {kname} (exact f32){quantising}")
        });
        let (x_lo, x_hi) = l.x_range();
        let codes_u8 = (l.x.dtype() != DType::F32).then(|| as_u8(l.x, l.q.x_zero));
        let xf = match l.x.data() {
            TensorData::F32(v) => v.as_slice(),
            _ => &[],
        };
        let image = |b: usize, o: &mut [u8], sc: &mut direct::Scratch| {
            let src = match &codes_u8 {
                Some((x, za)) => direct::Source::Codes {
                    x: &x[b * in_img..(b + 1) * in_img],
                    zero: *za,
                },
                None => direct::Source::Float {
                    x: &xf[b * in_img..(b + 1) * in_img],
                    scale: l.x_scale,
                    zero: l.q.x_zero,
                    lo: x_lo,
                    hi: x_hi,
                },
            };
            direct::image(c2, src, dw, &rq, sc, o)
        };
        if threads <= 1 || g.n == 1 {
            let mut sc = direct::Scratch::default();
            for (b, o) in out.chunks_mut(out_img).enumerate() {
                image(b, o, &mut sc).map_err(kerr)?;
            }
        } else {
            out.par_chunks_mut(out_img)
                .enumerate()
                .try_for_each_init(direct::Scratch::default, |sc, (b, o)| image(b, o, sc))
                .map_err(kerr)?;
        }
        return Ok(vec![bytes_tensor(l.y_dt, shape, out)?]);
    }
    let xt = l.x_codes(ctx)?;
    let (x, za) = as_u8(&xt, l.q.x_zero);
    // Whole images per task when there are enough of them; otherwise the
    // channels of one image are split across threads.
    let per_image = threads <= 1 || g.n >= 2 * threads;
    if let Some(taps) = &st.depthwise {
        ctx.set_kernel(format!(
            "int8 depthwise {kname}{}",
            if cpu::best() >= Isa::Avx2 {
                " (simd)"
            } else {
                ""
            }
        ));
        let s = Dw2d {
            h: g.h,
            w: g.w,
            kh: g.kh,
            kw: g.kw,
            stride: g.stride,
            pad: g.pad,
            dilation: g.dilation,
        };
        let khw = g.kh * g.kw;
        let plane = |(i, o): (usize, &mut [u8]), sc: &mut DwScratch| {
            let (b, c) = (i / g.c_out, i % g.c_out);
            let xp = &x[(b * g.c_in + c) * g.h * g.w..][..g.h * g.w];
            depthwise::plane(&s, xp, za, &taps[c * khw..(c + 1) * khw], c, &rq, sc, o)
        };
        if threads <= 1 {
            let mut sc = DwScratch::default();
            for (i, o) in out.chunks_mut(p).enumerate() {
                plane((i, o), &mut sc).map_err(kerr)?;
            }
        } else {
            out.par_chunks_mut(p)
                .enumerate()
                .try_for_each_init(DwScratch::default, |sc, io| plane(io, sc))
                .map_err(kerr)?;
        }
        return Ok(vec![bytes_tensor(l.y_dt, shape, out)?]);
    }
    let pointwise = g.kh == 1 && g.kw == 1 && g.stride == (1, 1) && g.pad == (0, 0, 0, 0);
    ctx.set_kernel(format!(
        "{} conv {}",
        if cpu::best() >= Isa::Avx512 {
            "int8-vnni"
        } else {
            "int8-scalar"
        },
        if pointwise {
            "1x1".to_string()
        } else {
            format!("{kname} im2col")
        }
    ));
    let cg = g.c_in / g.groups;
    let og = g.c_out / g.groups;
    // One image, one group: fills the quad input, then rows of the output.
    let fill = |xq: &mut QuadInput,
                img: &[u8],
                gi: usize|
     -> std::result::Result<(), shrink_kernels::KernelError> {
        let xg = &img[gi * cg * g.h * g.w..][..cg * g.h * g.w];
        if pointwise {
            return xq.from_rows(xg, cg, p);
        }
        xq.from_image(
            &Im2col {
                c: cg,
                h: g.h,
                w: g.w,
                kh: g.kh,
                kw: g.kw,
                stride: g.stride,
                pad: g.pad,
                dilation: g.dilation,
            },
            xg,
            za,
        )
    };
    if per_image {
        let image = |b: usize,
                     o: &mut [u8],
                     xq: &mut QuadInput|
         -> std::result::Result<(), shrink_kernels::KernelError> {
            let img = &x[b * in_img..(b + 1) * in_img];
            for gi in 0..g.groups {
                fill(xq, img, gi)?;
                let og_rq = group_rq(&rq, gi, og);
                planar::gemm(
                    &st.groups[gi],
                    xq,
                    za,
                    &og_rq.as_requant(),
                    (0, og),
                    &mut o[gi * og * p..(gi + 1) * og * p],
                )?;
            }
            Ok(())
        };
        if threads <= 1 {
            let mut xq = QuadInput::default();
            for (b, o) in out.chunks_mut(out_img).enumerate() {
                image(b, o, &mut xq).map_err(kerr)?;
            }
        } else {
            out.par_chunks_mut(out_img)
                .enumerate()
                .try_for_each_init(QuadInput::default, |xq, (b, o)| image(b, o, xq))
                .map_err(kerr)?;
        }
    } else {
        let mut xq = QuadInput::default();
        // Row blocks: a multiple of 4 rows, about two per thread.
        let block = og.div_ceil(2 * threads).div_ceil(4).max(1) * 4;
        for (b, o) in out.chunks_mut(out_img).enumerate() {
            let img = &x[b * in_img..(b + 1) * in_img];
            for gi in 0..g.groups {
                fill(&mut xq, img, gi).map_err(kerr)?;
                let og_rq = group_rq(&rq, gi, og);
                let grq = og_rq.as_requant();
                let xq = &xq;
                o[gi * og * p..(gi + 1) * og * p]
                    .par_chunks_mut(block * p)
                    .enumerate()
                    .try_for_each(|(bi, ob)| {
                        let r0 = bi * block;
                        let r1 = (r0 + block).min(og);
                        planar::gemm(&st.groups[gi], xq, za, &grq, (r0, r1), ob)
                    })
                    .map_err(kerr)?;
            }
        }
    }
    Ok(vec![bytes_tensor(l.y_dt, shape, out)?])
}

/// The requantisation parameters of group `gi`'s output channels.
struct GroupRq<'a> {
    mult: &'a [f32],
    bias: Option<&'a [i32]>,
    out_zero: i32,
    lo: i32,
    hi: i32,
}

impl GroupRq<'_> {
    fn as_requant(&self) -> Requant<'_> {
        Requant {
            mult: self.mult,
            bias: self.bias,
            out_zero: self.out_zero,
            lo: self.lo,
            hi: self.hi,
        }
    }
}

fn group_rq<'a>(rq: &Requant<'a>, gi: usize, og: usize) -> GroupRq<'a> {
    GroupRq {
        mult: if rq.mult.len() == 1 {
            rq.mult
        } else {
            &rq.mult[gi * og..(gi + 1) * og]
        },
        bias: rq.bias.map(|b| &b[gi * og..(gi + 1) * og]),
        out_zero: rq.out_zero,
        lo: rq.lo,
        hi: rq.hi,
    }
}

// ---------------------------------------------------------------- QGemm

fn qgemm(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let trans_b = ctx.node.attr_int("trans_b", 0).unwrap_or(0) == 1;
    let matmul = ctx.node.attr_int("matmul", 0).unwrap_or(0) == 1;
    let l = linear(ctx, inputs, |ws| {
        if ws.len() != 2 {
            0
        } else if trans_b {
            ws[0]
        } else {
            ws[1]
        }
    })?;
    if l.x.dtype() == DType::F32 {
        return Err(ctx.error("X must be quantised codes (u8/i8), got f32"));
    }
    let ws = l.w.shape();
    if ws.len() != 2 {
        return Err(ctx.error(format!("weights must be 2-D, got {ws:?}")));
    }
    let (n, k) = if trans_b {
        (ws[0], ws[1])
    } else {
        (ws[1], ws[0])
    };
    let xs = l.x.shape();
    let ok = if matmul {
        xs.len() >= 2 && xs[xs.len() - 1] == k
    } else {
        xs.len() == 2 && xs[1] == k
    };
    if !ok {
        return Err(ctx.error(format!("X {xs:?} does not fit weights {ws:?} (K = {k})")));
    }
    let m = l.x.len() / k;
    let mut shape = xs[..xs.len() - 1].to_vec();
    shape.push(n);
    if simulating(ctx) {
        ctx.set_kernel("scalar simulate gemm");
        let y = simulate::gemm(&codes(l.x), m, k, n, trans_b, &l.with_weights());
        return Ok(vec![codes_tensor(l.y_dt, shape, y)?]);
    }
    let packed = ctx.prepared(|| {
        let Some((w, zw)) = weights_i8(&l.with_weights()) else {
            return Ok(None);
        };
        let w_nk: Vec<i8> = if trans_b {
            w
        } else {
            let mut t = vec![0i8; n * k];
            for kk in 0..k {
                for j in 0..n {
                    t[j * k + kk] = w[kk * n + j];
                }
            }
            t
        };
        PackedI8::pack(&w_nk, n, k, zw)
            .map(Some)
            .map_err(|e| ctx.error(e.to_string()))
    })?;
    let Some(packed) = packed else {
        ctx.set_kernel("int8 scalar gemm (weight range)");
        let y = simulate::gemm(&codes(l.x), m, k, n, trans_b, &l.with_weights());
        return Ok(vec![codes_tensor(l.y_dt, shape, y)?]);
    };
    let (x, za) = as_u8(l.x, l.q.x_zero);
    let ep = Epilogue {
        scale: &l.q.mult,
        bias: None,
        lo: (l.q.lo - l.q.y_zero) as f32,
        hi: (l.q.hi - l.q.y_zero) as f32,
        out_zero: l.q.y_zero,
    };
    let kerr = |e: shrink_kernels::KernelError| ctx.error(e.to_string());
    let route;
    let y = if l.y_dt == DType::I8 {
        let mut y = vec![0i8; m * n];
        route = k8::gemm_bias(
            &x,
            m,
            za,
            &packed,
            l.q.bias.as_deref(),
            &ep,
            Output::I8(&mut y),
        )
        .map_err(kerr)?;
        Tensor::from_vec(shape, y)?
    } else {
        let mut y = vec![0u8; m * n];
        route = k8::gemm_bias(
            &x,
            m,
            za,
            &packed,
            l.q.bias.as_deref(),
            &ep,
            Output::U8(&mut y),
        )
        .map_err(kerr)?;
        Tensor::from_vec(shape, y)?
    };
    ctx.set_kernel(route.label(&format!(
        "{} {}",
        isa_name(),
        if m == 1 { "gemv" } else { "gemm" }
    )));
    Ok(vec![y])
}

// ---------------------------------------------------------------- pools

fn qmax_pool(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let xs = x.shape();
    if xs.len() != 4 {
        return Err(ctx.error(format!("QMaxPool is 2-D, X is {xs:?}")));
    }
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let get = |k: &str, d: usize, len: usize| -> Result<Vec<usize>> {
        match ctx.node.attr_ints(k).map_err(attr)? {
            None => Ok(vec![d; len]),
            Some(v) if v.len() == len && v.iter().all(|&x| x >= 0) => {
                Ok(v.iter().map(|&x| x as usize).collect())
            }
            Some(v) => Err(ctx.error(format!("attribute {k} = {v:?}: expected {len} values ≥ 0"))),
        }
    };
    let k = get("kernel_shape", 0, 2)?;
    let s = get("strides", 1, 2)?;
    let pd = get("pads", 0, 4)?;
    let pool = Pool2d {
        planes: xs[0] * xs[1],
        h: xs[2],
        w: xs[3],
        kh: k[0],
        kw: k[1],
        stride: (s[0], s[1]),
        pad: (pd[0], pd[1], pd[2], pd[3]),
    };
    if pool.kh == 0
        || pool.kw == 0
        || pool.stride.0 == 0
        || pool.stride.1 == 0
        || pool.h + pool.pad.0 + pool.pad.2 < pool.kh
        || pool.w + pool.pad.1 + pool.pad.3 < pool.kw
    {
        return Err(ctx.error(format!("pooling window {pool:?} does not fit the input")));
    }
    let (oh, ow) = pool.out_hw();
    let shape = vec![xs[0], xs[1], oh, ow];
    let kerr = |e: shrink_kernels::KernelError| ctx.error(e.to_string());
    if simulating(ctx) || pool.pad.0 >= pool.kh || pool.pad.1 >= pool.kw {
        ctx.set_kernel("scalar simulate maxpool");
        let y = simulate::max_pool(
            &codes(x),
            pool.planes,
            (pool.h, pool.w),
            (pool.kh, pool.kw),
            pool.stride,
            pool.pad,
        );
        return Ok(vec![codes_tensor(x.dtype(), shape, y)?]);
    }
    ctx.set_kernel("int8 maxpool");
    let y = match x.data() {
        TensorData::U8(v) => {
            let mut y = vec![0u8; pool.planes * oh * ow];
            kpool::maxpool_u8(&pool, v, &mut y).map_err(kerr)?;
            Tensor::from_vec(shape, y)?
        }
        TensorData::I8(v) => {
            let mut y = vec![0i8; pool.planes * oh * ow];
            kpool::maxpool(&pool, v, &mut y).map_err(kerr)?;
            Tensor::from_vec(shape, y)?
        }
        _ => return Err(ctx.error(format!("X must be u8 or i8, got {}", x.dtype()))),
    };
    Ok(vec![y])
}

/// Inputs `[x, x_scale, x_zero, y_scale, y_zero]`.
fn qglobal_avg(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let sx = scale(ctx, inputs, 1)?;
    let (zx, xdt) = zero(ctx, inputs, 2)?;
    check_act(ctx, x, xdt, "x")?;
    let sy = scale(ctx, inputs, 3)?;
    let (zy, ydt) = zero(ctx, inputs, 4)?;
    let (lo, hi) = clamp_range(ctx, ydt)?;
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(ctx.error(format!("X {xs:?} must have rank ≥ 3")));
    }
    let planes = xs[0] * xs[1];
    let count: usize = xs[2..].iter().product();
    let mut shape = xs[..2].to_vec();
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    if simulating(ctx) || count == 0 {
        ctx.set_kernel("scalar simulate global avgpool");
        let y =
            simulate::global_avg_pool(&codes(x), planes, count.max(1), (sx, zx), (sy, zy), lo, hi);
        return Ok(vec![codes_tensor(ydt, shape, y)?]);
    }
    ctx.set_kernel("int8 global avgpool");
    let (xb, za) = as_u8(x, zx);
    let m = sx / (sy * count as f32);
    let off = (za as i32).wrapping_mul(count as i32);
    let y: Vec<i32> = xb
        .chunks_exact(count)
        .map(|plane| {
            let s = plane.iter().fold(0u32, |s, &v| s.wrapping_add(v as u32)) as i32;
            k8::Requant {
                mult: std::slice::from_ref(&m),
                bias: None,
                out_zero: zy,
                lo,
                hi,
            }
            .apply(s.wrapping_sub(off), 0)
        })
        .collect();
    Ok(vec![codes_tensor(ydt, shape, y)?])
}

// ---------------------------------------------------------------- QAdd

/// Inputs `[a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero]`,
/// numpy broadcasting.
pub(super) fn qadd(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.required(inputs, 0)?;
    let sa = scale(ctx, inputs, 1)?;
    let (za, adt) = zero(ctx, inputs, 2)?;
    check_act(ctx, a, adt, "A")?;
    let b = ctx.required(inputs, 3)?;
    let sb = scale(ctx, inputs, 4)?;
    let (zb, bdt) = zero(ctx, inputs, 5)?;
    check_act(ctx, b, bdt, "B")?;
    let sy = scale(ctx, inputs, 6)?;
    let (zy, ydt) = zero(ctx, inputs, 7)?;
    let (lo, hi) = clamp_range(ctx, ydt)?;
    let (ma, mb) = (sa / sy, sb / sy);
    let shape = broadcast_shape(ctx, a.shape(), b.shape())?;
    let one = |x: i32, y: i32| simulate::add_one(x, y, (za, ma), (zb, mb), zy, lo, hi);
    if simulating(ctx) || a.shape() != b.shape() {
        ctx.set_kernel(if simulating(ctx) {
            "scalar simulate add"
        } else {
            "int8 add (broadcast)"
        });
        let (av, bv) = (codes(a), codes(b));
        let (ia, ib) = (
            broadcast_index(a.shape(), &shape),
            broadcast_index(b.shape(), &shape),
        );
        let n: usize = shape.iter().product();
        let y: Vec<i32> = (0..n).map(|i| one(av[ia(i)], bv[ib(i)])).collect();
        return Ok(vec![codes_tensor(ydt, shape, y)?]);
    }
    ctx.set_kernel("int8 add");
    let (ab, za8) = as_u8(a, za);
    let (bb, zb8) = as_u8(b, zb);
    let mut out = vec![0u8; ab.len()];
    k8::elementwise::add(
        &ab,
        k8::elementwise::Operand {
            zero: za8 as i32,
            mult: ma,
        },
        &bb,
        k8::elementwise::Operand {
            zero: zb8 as i32,
            mult: mb,
        },
        zy,
        lo,
        hi,
        &mut out,
    )
    .map_err(|e| ctx.error(e.to_string()))?;
    Ok(vec![bytes_tensor(ydt, shape, out)?])
}

fn broadcast_shape(ctx: &OpContext, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < r {
            1
        } else {
            s[i + s.len() - r]
        }
    };
    (0..r)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) => Err(ctx.error(format!(
                "shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"
            ))),
        })
        .collect()
}

/// Flat index into a tensor of shape `s` for flat index `i` of the
/// broadcast shape `out`.
fn broadcast_index(s: &[usize], out: &[usize]) -> impl Fn(usize) -> usize {
    let r = out.len();
    let mut strides = vec![0usize; r];
    let mut st = 1;
    for i in (0..s.len()).rev() {
        let o = i + r - s.len();
        strides[o] = if s[i] == 1 { 0 } else { st };
        st *= s[i];
    }
    let out = out.to_vec();
    move |mut i| {
        let mut idx = 0;
        for d in (0..r).rev() {
            idx += (i % out[d]) * strides[d];
            i /= out[d];
        }
        idx
    }
}
