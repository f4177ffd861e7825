//! Matrix products: MatMul, Gemm, MatMulInteger, and the f32 GEMM entry point
//! the convolution ops share.
//!
//! Float ops compute in f32 (f64/f16/bf16 inputs are converted on the way in
//! and out): the runtime is a reference executor whose speed target is f32,
//! and one code path keeps every float dtype consistent.

use super::conv::Activation;
use super::{OpContext, Registry};
use crate::Result;
use rayon::prelude::*;
use shrink_kernels::f32gemm::{self, F32Epilogue, PackedF32};
use shrink_tensor::{DType, Tensor, TensorData};
use std::borrow::Cow;

pub(super) fn register(r: &mut Registry) {
    r.add("", "MatMul", matmul);
    r.add("", "Gemm", gemm_op);
    // Gemm + Relu/Clip fused by the session (see `crate::fuse`).
    r.add("com.microsoft", "FusedGemm", gemm_op);
    r.add("", "MatMulInteger", matmul_integer);
}

/// The elements of a float tensor as f32: borrowed when already f32,
/// converted for the other float types, an error naming the node otherwise.
pub(super) fn floats<'t>(ctx: &OpContext, t: &'t Tensor, what: &str) -> Result<Cow<'t, [f32]>> {
    match t.data() {
        TensorData::F32(v) => Ok(Cow::Borrowed(v)),
        TensorData::F64(_) | TensorData::F16(_) | TensorData::BF16(_) => {
            Ok(Cow::Owned(t.to_f32_vec()))
        }
        _ => Err(ctx.error(format!(
            "{what} has dtype {}; this op supports f32, f64, f16 and bf16",
            t.dtype()
        ))),
    }
}

/// Wraps f32 results as a tensor of `dtype` (the dtype of the op's float input).
pub(super) fn float_tensor(dtype: DType, shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor> {
    let t = Tensor::from_vec(shape, v)?;
    Ok(if dtype == DType::F32 {
        t
    } else {
        t.cast(dtype)
    })
}

pub(super) use shrink_kernels::f32gemm::MatRef;

/// `c[m×n] (row-major) = alpha · a[m×k] · b[k×n] + beta · c`, where `beta`
/// `None` means `c` is overwritten without being read: the kernels crate's
/// strided GEMM for operands that change on every run.
///
/// `threads` > 1 lets the work split over the current rayon pool when the
/// problem is big enough to pay for it. Operands that do not fit their
/// slices are a bug of the calling op, hence the panic.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    alpha: f32,
    beta: Option<f32>,
    threads: usize,
) {
    if let Err(e) = f32gemm::sgemm_strided(m, n, k, a, b, c, alpha, beta, threads) {
        panic!("sgemm operands out of bounds (caller bug): {e}");
    }
}

/// Broadcasts two batch shapes numpy-style; `None` if incompatible.
pub(super) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// For every index of the broadcast `out` shape, the flat index into a tensor
/// of shape `src` (right-aligned, size-1 dimensions repeat).
pub(super) fn broadcast_offsets(src: &[usize], out: &[usize]) -> Vec<usize> {
    let total: usize = out.iter().product();
    let r = out.len();
    let mut strides = vec![0; r];
    let mut s = 1;
    for i in (0..src.len()).rev() {
        let o = i + r - src.len();
        strides[o] = if src[i] == 1 { 0 } else { s };
        s *= src[i];
    }
    let mut offs = Vec::with_capacity(total);
    let mut idx = vec![0; r];
    for _ in 0..total {
        offs.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    offs
}

/// Shapes of a numpy-style matmul: operands promoted to rank ≥ 2, the
/// broadcast batch shape, and the output shape with promoted dims removed.
struct MatMulShape {
    m: usize,
    k: usize,
    n: usize,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    batch: Vec<usize>,
    out: Vec<usize>,
}

fn matmul_shape(ctx: &OpContext, a: &[usize], b: &[usize]) -> Result<MatMulShape> {
    if a.is_empty() || b.is_empty() {
        return Err(ctx.error("MatMul operands must have rank ≥ 1"));
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(ctx.error(format!("inner dimensions differ: A {a:?} and B {b:?}")));
    }
    let a_batch = a2[..a2.len() - 2].to_vec();
    let b_batch = b2[..b2.len() - 2].to_vec();
    let batch = broadcast_shapes(&a_batch, &b_batch).ok_or_else(|| {
        ctx.error(format!(
            "batch dimensions of A {a:?} and B {b:?} do not broadcast"
        ))
    })?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MatMulShape {
        m,
        k,
        n,
        a_batch,
        b_batch,
        batch,
        out,
    })
}

fn matmul(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.required(inputs, 0)?;
    let b = ctx.required(inputs, 1)?;
    if a.dtype() != b.dtype() {
        return Err(ctx.error(format!("A is {} but B is {}", a.dtype(), b.dtype())));
    }
    if a.dtype().is_int() {
        return matmul_int_typed(ctx, a, b);
    }
    let s = matmul_shape(ctx, a.shape(), b.shape())?;
    if let Some(y) = matmul_prepacked(ctx, &s, a, b)? {
        return Ok(vec![y]);
    }
    let av = floats(ctx, a, "A")?;
    let bv = floats(ctx, b, "B")?;
    let out = matmul_f32(&s, &av, &bv, ctx.threads);
    Ok(vec![float_tensor(a.dtype(), s.out, out)?])
}

fn matmul_f32(s: &MatMulShape, a: &[f32], b: &[f32], threads: usize) -> Vec<f32> {
    let (m, k, n) = (s.m, s.k, s.n);
    let batches: usize = s.batch.iter().product();
    let mut out = vec![0f32; batches * m * n];
    if out.is_empty() {
        return out;
    }
    let b_single = s.b_batch.iter().product::<usize>() == 1;
    if b_single && s.a_batch == s.batch {
        // B is shared by every batch: fold A's batch into M, one big GEMM.
        sgemm(
            batches * m,
            n,
            k,
            MatRef::rows(a, k),
            MatRef::rows(b, n),
            &mut out,
            1.0,
            None,
            threads,
        );
        return out;
    }
    let a_off = broadcast_offsets(&s.a_batch, &s.batch);
    let b_off = broadcast_offsets(&s.b_batch, &s.batch);
    let one = |(i, c): (usize, &mut [f32]), threads: usize| {
        let ao = a_off[i] * m * k;
        let bo = b_off[i] * k * n;
        sgemm(
            m,
            n,
            k,
            MatRef::rows(&a[ao..ao + m * k], k),
            MatRef::rows(&b[bo..bo + k * n], n),
            c,
            1.0,
            None,
            threads,
        );
    };
    if threads > 1 && batches > 1 && m * n * k * batches >= 1 << 18 {
        // Many independent products: one per task, each single-threaded.
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|x| one(x, 1));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|x| one(x, threads));
    }
    out
}

/// MatMul on integer tensors (opset 13 allows int32/int64/uint32/uint64):
/// wrapping integer arithmetic in i64, converted back to the input dtype.
fn matmul_int_typed(ctx: &OpContext, a: &Tensor, b: &Tensor) -> Result<Vec<Tensor>> {
    let s = matmul_shape(ctx, a.shape(), b.shape())?;
    let av = a.to_i64_vec();
    let bv = b.to_i64_vec();
    let out = int_matmul(&s, &av, &bv);
    let t = Tensor::from_vec(s.out, out)?;
    Ok(vec![t.cast(a.dtype())])
}

/// `acc + a·b` with two's-complement wrap-around, as ONNX Runtime's integer
/// kernels behave on overflow (and never a panic).
pub(super) trait WrappingMac: Copy + Default {
    fn mac(self, a: Self, b: Self) -> Self;
}

impl WrappingMac for i32 {
    fn mac(self, a: i32, b: i32) -> i32 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

impl WrappingMac for i64 {
    fn mac(self, a: i64, b: i64) -> i64 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

/// Plain integer matmul over broadcast batches (zero points already removed).
fn int_matmul<T: WrappingMac>(s: &MatMulShape, a: &[T], b: &[T]) -> Vec<T> {
    let (m, k, n) = (s.m, s.k, s.n);
    let batches: usize = s.batch.iter().product();
    let a_off = broadcast_offsets(&s.a_batch, &s.batch);
    let b_off = broadcast_offsets(&s.b_batch, &s.batch);
    let mut out = vec![T::default(); batches * m * n];
    for bi in 0..batches {
        let ao = a_off[bi] * m * k;
        let bo = b_off[bi] * k * n;
        let c = &mut out[bi * m * n..(bi + 1) * m * n];
        for i in 0..m {
            let crow = &mut c[i * n..(i + 1) * n];
            for p in 0..k {
                let x = a[ao + i * k + p];
                let brow = &b[bo + p * n..bo + (p + 1) * n];
                for (cv, &bv) in crow.iter_mut().zip(brow) {
                    *cv = cv.mac(x, bv);
                }
            }
        }
    }
    out
}

/// Numpy-style integer matmul of zero-point-free i32 operands with the given
/// shapes; returns the wrapping i32 sums and the output shape.
pub(super) fn matmul_i32(
    ctx: &OpContext,
    a_shape: &[usize],
    b_shape: &[usize],
    a: &[i32],
    b: &[i32],
) -> Result<(Vec<i32>, Vec<usize>)> {
    let s = matmul_shape(ctx, a_shape, b_shape)?;
    let out = int_matmul(&s, a, b);
    Ok((out, s.out))
}

fn gemm_op(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.required(inputs, 0)?;
    let b = ctx.required(inputs, 1)?;
    let c = inputs.get(2).copied().flatten();
    let node = ctx.node;
    let attr = |e: shrink_graph::GraphError| ctx.error(e.to_string());
    let alpha = node.attr_float("alpha", 1.0).map_err(attr)?;
    let beta = node.attr_float("beta", 1.0).map_err(attr)?;
    let ta = node.attr_int("transA", 0).map_err(attr)? != 0;
    let tb = node.attr_int("transB", 0).map_err(attr)? != 0;
    if a.rank() != 2 || b.rank() != 2 {
        return Err(ctx.error(format!(
            "A and B must be 2-D, got {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let (m, k) = if ta {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let (kb, n) = if tb {
        (b.shape()[1], b.shape()[0])
    } else {
        (b.shape()[0], b.shape()[1])
    };
    if k != kb {
        return Err(ctx.error(format!(
            "inner dimensions differ: A {:?} (transA={}) and B {:?} (transB={})",
            a.shape(),
            ta as i32,
            b.shape(),
            tb as i32
        )));
    }
    let act = super::conv::fused_activation(ctx)?;
    if let Some(y) = gemm_prepacked(ctx, a, b, c, [alpha, beta], ta, tb, [m, n, k], act)? {
        return Ok(vec![y]);
    }
    let av = floats(ctx, a, "A")?;
    let bv = floats(ctx, b, "B")?;
    let am = if ta {
        MatRef::transposed(&av, m)
    } else {
        MatRef::rows(&av, k)
    };
    let bm = if tb {
        MatRef::transposed(&bv, k)
    } else {
        MatRef::rows(&bv, n)
    };
    let mut out = vec![0f32; m * n];
    let mut read = None;
    if let Some(c) = c.filter(|_| beta != 0.0) {
        fill_broadcast_2d(ctx, c, m, n, &mut out)?;
        read = Some(beta);
    }
    sgemm(m, n, k, am, bm, &mut out, alpha, read, ctx.threads);
    act.apply(&mut out);
    Ok(vec![float_tensor(a.dtype(), vec![m, n], out)?])
}

/// A constant right operand packed once per session for the kernels
/// crate's GEMM, with `alpha` folded in, and the bias `beta·C` when `C` is a
/// constant row.
struct PackedRight {
    w: PackedF32,
    bias: Option<Vec<f32>>,
}

/// `out[rows×n] = a · W + bias` on the packed kernel; threaded only when the
/// product is big enough to pay for rayon.
fn packed_product(
    a: &[f32],
    rows: usize,
    p: &PackedRight,
    threads: usize,
    act: Activation,
    mut out: Vec<f32>,
) -> Result<Vec<f32>> {
    let ep = F32Epilogue {
        bias: p.bias.as_deref(),
        lo: act.lo,
        hi: act.hi,
        ..Default::default()
    };
    let work = rows * p.w.n() * p.w.k();
    let r = if threads > 1 && work >= 1 << 18 {
        f32gemm::gemm(a, rows, &p.w, &ep, &mut out)
    } else {
        f32gemm::gemm_serial(a, rows, &p.w, &ep, &mut out)
    };
    r.map_err(|e| crate::RuntimeError::Input {
        name: "packed GEMM".into(),
        msg: e.to_string(),
    })?;
    Ok(out)
}

/// Gemm with a constant f32 `B` (and `C` absent, ignored, or a constant
/// row): `B` is packed once per session and the bias fused into the
/// product. `None` when the node does not fit; the general path runs then.
#[allow(clippy::too_many_arguments)]
fn gemm_prepacked(
    ctx: &OpContext,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    [alpha, beta]: [f32; 2],
    ta: bool,
    tb: bool,
    [m, n, k]: [usize; 3],
    act: Activation,
) -> Result<Option<Tensor>> {
    if ta
        || m == 0
        || n == 0
        || k == 0
        || a.dtype() != DType::F32
        || b.dtype() != DType::F32
        || !ctx.is_constant_input(1)
    {
        return Ok(None);
    }
    let c = c.filter(|_| beta != 0.0);
    if let Some(ct) = c {
        let row = ct.len() == n && (ct.rank() == 1 || (ct.rank() == 2 && ct.shape()[0] == 1));
        if !row || ct.dtype() != DType::F32 || !ctx.is_constant_input(2) {
            return Ok(None);
        }
    }
    let prep = ctx.prepared(|| {
        let bv = b.as_slice::<f32>()?;
        let scaled: Cow<[f32]> = if alpha == 1.0 {
            Cow::Borrowed(bv)
        } else {
            Cow::Owned(bv.iter().map(|v| v * alpha).collect())
        };
        let w = if tb {
            PackedF32::pack(&scaled, n, k)
        } else {
            PackedF32::pack_kn(&scaled, k, n)
        }
        .map_err(|e| ctx.error(e.to_string()))?;
        let bias = match c {
            Some(ct) => Some(ct.as_slice::<f32>()?.iter().map(|v| v * beta).collect()),
            None => None,
        };
        Ok(Some(PackedRight { w, bias }))
    })?;
    let Some(p) = prep else { return Ok(None) };
    let out = packed_product(
        a.as_slice::<f32>()?,
        m,
        &p,
        ctx.threads,
        act,
        ctx.output_f32(m * n),
    )
    .map_err(|e| ctx.error(e.to_string()))?;
    Ok(Some(Tensor::from_vec(vec![m, n], out)?))
}

/// MatMul with a constant 2-D f32 `B` shared by every batch of `A`: `B` is
/// packed once per session, A's batch folds into M. `None` otherwise.
fn matmul_prepacked(
    ctx: &OpContext,
    s: &MatMulShape,
    a: &Tensor,
    b: &Tensor,
) -> Result<Option<Tensor>> {
    let (m, k, n) = (s.m, s.k, s.n);
    if a.dtype() != DType::F32
        || b.dtype() != DType::F32
        || b.rank() != 2
        || a.rank() < 2
        || s.a_batch != s.batch
        || m == 0
        || n == 0
        || k == 0
        || !ctx.is_constant_input(1)
    {
        return Ok(None);
    }
    let prep = ctx.prepared(|| {
        let w =
            PackedF32::pack_kn(b.as_slice::<f32>()?, k, n).map_err(|e| ctx.error(e.to_string()))?;
        Ok(Some(PackedRight { w, bias: None }))
    })?;
    let Some(p) = prep else { return Ok(None) };
    let rows = s.batch.iter().product::<usize>() * m;
    let out = packed_product(
        a.as_slice::<f32>()?,
        rows,
        &p,
        ctx.threads,
        Activation::NONE,
        ctx.output_f32(rows * n),
    )
    .map_err(|e| ctx.error(e.to_string()))?;
    Ok(Some(Tensor::from_vec(s.out.clone(), out)?))
}

/// Writes `c` broadcast (unidirectionally, numpy rules) to an m×n matrix.
fn fill_broadcast_2d(
    ctx: &OpContext,
    c: &Tensor,
    m: usize,
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let cv = floats(ctx, c, "C")?;
    let sh = c.shape();
    if sh.len() > 2 {
        return Err(ctx.error(format!("C must have rank ≤ 2, got {sh:?}")));
    }
    let cr = if sh.len() == 2 { sh[0] } else { 1 };
    let cc = if sh.is_empty() { 1 } else { sh[sh.len() - 1] };
    if (cr != 1 && cr != m) || (cc != 1 && cc != n) {
        return Err(ctx.error(format!("C {sh:?} does not broadcast to [{m}, {n}]")));
    }
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        let ci = if cr == 1 { 0 } else { i * cc };
        if cc == 1 {
            row.fill(cv[ci]);
        } else {
            row.copy_from_slice(&cv[ci..ci + n]);
        }
    }
    Ok(())
}

/// Integer values of a u8/i8 tensor as i32, or an error naming the operand.
pub(super) fn int8_values(ctx: &OpContext, t: &Tensor, what: &str) -> Result<Vec<i32>> {
    match t.data() {
        TensorData::U8(v) => Ok(v.iter().map(|&x| x as i32).collect()),
        TensorData::I8(v) => Ok(v.iter().map(|&x| x as i32).collect()),
        _ => Err(ctx.error(format!("{what} has dtype {}; expected u8 or i8", t.dtype()))),
    }
}

fn matmul_integer(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.required(inputs, 0)?;
    let b = ctx.required(inputs, 1)?;
    let s = matmul_shape(ctx, a.shape(), b.shape())?;
    let mut av = int8_values(ctx, a, "A")?;
    let mut bv = int8_values(ctx, b, "B")?;
    if let Some(zp) = inputs.get(2).copied().flatten() {
        let z = int8_values(ctx, zp, "a_zero_point")?;
        // Scalar, per row of A (length M), or one per row of every batch.
        let (m, k) = (s.m, s.k);
        let rows = av.len() / k.max(1);
        if z.len() != 1 && z.len() != m && z.len() != rows {
            return Err(ctx.error(format!(
                "a_zero_point has {} elements; expected 1 or M={m}",
                z.len()
            )));
        }
        for (i, x) in av.iter_mut().enumerate() {
            let r = i / k.max(1);
            *x -= z[if z.len() == 1 { 0 } else { r % z.len() }];
        }
    }
    if let Some(zp) = inputs.get(3).copied().flatten() {
        let z = int8_values(ctx, zp, "b_zero_point")?;
        let n = s.n;
        let b_batches = bv.len() / (s.k * n).max(1);
        if z.len() != 1 && z.len() != n && z.len() != b_batches * n {
            return Err(ctx.error(format!(
                "b_zero_point has {} elements; expected 1 or N={n}",
                z.len()
            )));
        }
        let k = s.k;
        for (i, x) in bv.iter_mut().enumerate() {
            let col = i % n.max(1);
            let batch = i / (k * n).max(1);
            let zi = if z.len() == 1 {
                0
            } else if z.len() == n {
                col
            } else {
                batch * n + col
            };
            *x -= z[zi];
        }
    }
    let out = int_matmul(&s, &av, &bv);
    Ok(vec![Tensor::from_vec(s.out, out)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        c
    }

    #[test]
    fn sgemm_matches_naive_with_transposes() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![0f32; m * n];
        sgemm(
            m,
            n,
            k,
            MatRef::rows(&a, k),
            MatRef::rows(&b, n),
            &mut c,
            1.0,
            None,
            1,
        );
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5);
        }
        // Aᵀ stored k×m, used transposed.
        let mut at = vec![0f32; m * k];
        for i in 0..m {
            for p in 0..k {
                at[p * m + i] = a[i * k + p];
            }
        }
        let mut c2 = vec![1f32; m * n];
        sgemm(
            m,
            n,
            k,
            MatRef::transposed(&at, m),
            MatRef::rows(&b, n),
            &mut c2,
            2.0,
            Some(0.5),
            1,
        );
        for (x, y) in c2.iter().zip(&want) {
            assert!((x - (2.0 * y + 0.5)).abs() < 1e-5);
        }
    }

    #[test]
    fn broadcast_offsets_repeat_size_one_dims() {
        assert_eq!(broadcast_offsets(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_offsets(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[2], &[3]), None);
    }
}
