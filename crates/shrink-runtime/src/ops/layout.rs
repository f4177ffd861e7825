//! Moving elements between layouts, for every element type: strided copies
//! (transpose, slice), contiguous block copies (concat, split, gather), and
//! selection by index (pad, gather_elements). Shape ops compute *where*
//! elements go from their attributes; these functions do the copying, with the
//! innermost contiguous run copied as a slice whenever it is one.

use shrink_tensor::{map_data, TensorData};

/// Copies the elements at `base + Σ idx[d] * strides[d]` for every index of
/// `dims` (row-major). Offsets must stay inside `d`, which the callers
/// guarantee by clamping their parameters against the input shape first.
pub(crate) fn strided(
    d: &TensorData,
    base: usize,
    dims: &[usize],
    strides: &[isize],
) -> TensorData {
    map_data!(d, v => strided_vec(v, base, dims, strides))
}

fn strided_vec<T: Clone>(v: &[T], base: usize, dims: &[usize], strides: &[isize]) -> Vec<T> {
    let n: usize = dims.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let rank = dims.len();
    if rank == 0 {
        return vec![v[base].clone()];
    }
    let (len, step) = (dims[rank - 1], strides[rank - 1]);
    let outer = &dims[..rank - 1];
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; outer.len()];
    let mut off = base as isize;
    loop {
        if step == 1 {
            let s = off as usize;
            out.extend_from_slice(&v[s..s + len]);
        } else {
            out.extend((0..len as isize).map(|k| v[(off + k * step) as usize].clone()));
        }
        let mut dd = outer.len();
        loop {
            if dd == 0 {
                return out;
            }
            dd -= 1;
            idx[dd] += 1;
            off += strides[dd];
            if idx[dd] < outer[dd] {
                break;
            }
            off -= strides[dd] * outer[dd] as isize;
            idx[dd] = 0;
        }
    }
}

/// The elements of `d` at positions `idx` (each `< d.len()`).
pub(crate) fn select(d: &TensorData, idx: &[usize]) -> TensorData {
    fn go<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
        idx.iter().map(|&i| v[i].clone()).collect()
    }
    map_data!(d, v => go(v, idx))
}

/// Rows `[start, start + len)` of the middle axis of `d` viewed as
/// `[outer, n, inner]`.
pub(crate) fn axis_range(
    d: &TensorData,
    (outer, n, inner): (usize, usize, usize),
    start: usize,
    len: usize,
) -> TensorData {
    map_data!(d, v => {
        let mut out = Vec::with_capacity(outer * len * inner);
        for o in 0..outer {
            let s = (o * n + start) * inner;
            out.extend_from_slice(&v[s..s + len * inner]);
        }
        out
    })
}

/// Interleaves `parts`: for each of `outer` rounds, `blocks[i]` elements from
/// part `i` in turn (concatenation along an axis). `None` if the parts do not
/// all share one element type.
pub(crate) fn join_blocks(
    parts: &[&TensorData],
    blocks: &[usize],
    outer: usize,
) -> Option<TensorData> {
    fn go<T: Clone>(parts: &[&[T]], blocks: &[usize], outer: usize) -> Vec<T> {
        let total: usize = blocks.iter().sum::<usize>() * outer;
        let mut out = Vec::with_capacity(total);
        for o in 0..outer {
            for (p, &b) in parts.iter().zip(blocks) {
                out.extend_from_slice(&p[o * b..(o + 1) * b]);
            }
        }
        out
    }
    macro_rules! arm {
        ($v:ident) => {{
            let mut sl = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    TensorData::$v(x) => sl.push(&x[..]),
                    _ => return None,
                }
            }
            TensorData::$v(go(&sl, blocks, outer))
        }};
    }
    Some(match parts.first()? {
        TensorData::F32(_) => arm!(F32),
        TensorData::F64(_) => arm!(F64),
        TensorData::F16(_) => arm!(F16),
        TensorData::BF16(_) => arm!(BF16),
        TensorData::I8(_) => arm!(I8),
        TensorData::U8(_) => arm!(U8),
        TensorData::I16(_) => arm!(I16),
        TensorData::U16(_) => arm!(U16),
        TensorData::I32(_) => arm!(I32),
        TensorData::U32(_) => arm!(U32),
        TensorData::I64(_) => arm!(I64),
        TensorData::U64(_) => arm!(U64),
        TensorData::Bool(_) => arm!(Bool),
        TensorData::I4(_) => arm!(I4),
        TensorData::U4(_) => arm!(U4),
        TensorData::F8E4M3FN(_) => arm!(F8E4M3FN),
        TensorData::F8E4M3FNUZ(_) => arm!(F8E4M3FNUZ),
        TensorData::F8E5M2(_) => arm!(F8E5M2),
        TensorData::F8E5M2FNUZ(_) => arm!(F8E5M2FNUZ),
        TensorData::String(_) => arm!(String),
    })
}

/// `d` followed by `e`, or `None` if their element types differ.
pub(crate) fn append(d: &TensorData, e: &TensorData) -> Option<TensorData> {
    join_blocks(&[d, e], &[d.len(), e.len()], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_copies_transpose_and_reverse() {
        let d = TensorData::I32((0..6).collect());
        // [2,3] transposed: dims [3,2], strides [1,3].
        assert_eq!(
            strided(&d, 0, &[3, 2], &[1, 3]),
            TensorData::I32(vec![0, 3, 1, 4, 2, 5])
        );
        // Second row reversed.
        assert_eq!(strided(&d, 5, &[3], &[-1]), TensorData::I32(vec![5, 4, 3]));
        assert_eq!(strided(&d, 0, &[0, 3], &[3, 1]), TensorData::I32(vec![]));
    }

    #[test]
    fn join_interleaves_and_rejects_mixed_types() {
        let a = TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]);
        let b = TensorData::F32(vec![9.0, 8.0]);
        assert_eq!(
            join_blocks(&[&a, &b], &[2, 1], 2),
            Some(TensorData::F32(vec![1.0, 2.0, 9.0, 3.0, 4.0, 8.0]))
        );
        assert_eq!(append(&a, &TensorData::I64(vec![1])), None);
    }
}
