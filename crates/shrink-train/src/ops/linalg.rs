//! Gemm and MatMul backward: each operand's gradient is one more product of
//! the output gradient with the other operand, transposes expressed as
//! strides (shrink-kernels' `sgemm_strided`), never copied.

use super::broadcast::{for_each, reduce_to, shape_of, strides_in};
use super::{f32s, grad0, rt, tensor, BackwardCtx, OpRegistry};
use crate::Result;
use shrink_kernels::f32gemm::{sgemm_strided, MatRef};
use shrink_tensor::Tensor;

pub(super) fn register(r: &mut OpRegistry) {
    rt(r, "Gemm", gemm);
    rt(r, "MatMul", matmul);
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// `Y = α·op(A)·op(B) + β·C` with `A: M×K` (`K×M` if transA), `B: K×N`
/// (`N×K` if transB).
fn gemm(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let ta = cx.node.attr_int("transA", 0)? != 0;
    let tb = cx.node.attr_int("transB", 0)? != 0;
    let alpha = cx.node.attr_float("alpha", 1.0)?;
    let beta = cx.node.attr_float("beta", 1.0)?;
    if a.rank() != 2 || b.rank() != 2 {
        return Err(cx.error("Gemm operands must be 2-D"));
    }
    let (m, k) = if ta {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let n = if tb { b.shape()[0] } else { b.shape()[1] };
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let av = f32s(cx.node, a, "A")?;
    let bv = f32s(cx.node, b, "B")?;
    let mut out = vec![None; cx.inputs.len()];
    if cx.needs(0) {
        let mut da = vec![0f32; m * k];
        if !ta {
            // dA (M×K) = α·G·op(B)ᵀ
            let bt = if tb {
                MatRef::rows(bv, k)
            } else {
                MatRef::transposed(bv, n)
            };
            sgemm_strided(
                m,
                k,
                n,
                MatRef::rows(g, n),
                bt,
                &mut da,
                alpha,
                None,
                threads(),
            )?;
        } else {
            // dA (K×M) = α·op(B)·Gᵀ
            let ob = if tb {
                MatRef::transposed(bv, k)
            } else {
                MatRef::rows(bv, n)
            };
            sgemm_strided(
                k,
                m,
                n,
                ob,
                MatRef::transposed(g, n),
                &mut da,
                alpha,
                None,
                threads(),
            )?;
        }
        out[0] = Some(tensor(a.shape(), da)?);
    }
    if cx.needs(1) {
        let mut db = vec![0f32; k * n];
        if !tb {
            // dB (K×N) = α·op(A)ᵀ·G
            let at = if ta {
                MatRef::rows(av, m)
            } else {
                MatRef::transposed(av, k)
            };
            sgemm_strided(
                k,
                n,
                m,
                at,
                MatRef::rows(g, n),
                &mut db,
                alpha,
                None,
                threads(),
            )?;
        } else {
            // dB (N×K) = α·Gᵀ·op(A)
            let oa = if ta {
                MatRef::transposed(av, m)
            } else {
                MatRef::rows(av, k)
            };
            sgemm_strided(
                n,
                k,
                m,
                MatRef::transposed(g, n),
                oa,
                &mut db,
                alpha,
                None,
                threads(),
            )?;
        }
        out[1] = Some(tensor(b.shape(), db)?);
    }
    if cx.needs(2) {
        let c = cx.input(2)?;
        let mut dc = reduce_to(g, &[m, n], c.shape());
        if beta != 1.0 {
            dc.iter_mut().for_each(|v| *v *= beta);
        }
        out[2] = Some(tensor(c.shape(), dc)?);
    }
    Ok(out)
}

/// NumPy matmul: batch dimensions broadcast, 1-D operands promoted.
fn matmul(cx: &BackwardCtx, grads: &[Option<&Tensor>]) -> Result<Vec<Option<Tensor>>> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if a.rank() == 0 || b.rank() == 0 {
        return Err(cx.error("MatMul operands must have rank ≥ 1"));
    }
    let sa: Vec<usize> = if a.rank() == 1 {
        vec![1, a.shape()[0]]
    } else {
        a.shape().to_vec()
    };
    let sb: Vec<usize> = if b.rank() == 1 {
        vec![b.shape()[0], 1]
    } else {
        b.shape().to_vec()
    };
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let batch = shape_of(ba, bb).ok_or_else(|| cx.error("batch dimensions do not broadcast"))?;
    let g = f32s(cx.node, grad0(cx, grads)?, "output gradient")?;
    let av = f32s(cx.node, a, "A")?;
    let bv = f32s(cx.node, b, "B")?;
    // Pairs (index of A's matrix, index of B's matrix) per output matrix.
    let nb: usize = batch.iter().product();
    let mut ia = vec![0usize; nb];
    let mut ib = vec![0usize; nb];
    for_each(&batch, &strides_in(ba, &batch), |o, i| ia[o] = i);
    for_each(&batch, &strides_in(bb, &batch), |o, i| ib[o] = i);
    let mut out = vec![None, None];
    if cx.needs(0) {
        let mut da = vec![0f32; av.len()];
        for t in 0..nb {
            let gt = &g[t * m * n..][..m * n];
            let bt = &bv[ib[t] * k * n..][..k * n];
            let dst = &mut da[ia[t] * m * k..][..m * k];
            // dA += G·Bᵀ
            sgemm_strided(
                m,
                k,
                n,
                MatRef::rows(gt, n),
                MatRef::transposed(bt, n),
                dst,
                1.0,
                Some(1.0),
                threads(),
            )?;
        }
        out[0] = Some(tensor(a.shape(), da)?);
    }
    if cx.needs(1) {
        let mut db = vec![0f32; bv.len()];
        for t in 0..nb {
            let gt = &g[t * m * n..][..m * n];
            let at = &av[ia[t] * m * k..][..m * k];
            let dst = &mut db[ib[t] * k * n..][..k * n];
            // dB += Aᵀ·G
            sgemm_strided(
                k,
                n,
                m,
                MatRef::transposed(at, k),
                MatRef::rows(gt, n),
                dst,
                1.0,
                Some(1.0),
                threads(),
            )?;
        }
        out[1] = Some(tensor(b.shape(), db)?);
    }
    Ok(out)
}
