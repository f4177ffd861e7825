//! Numpy-style multidirectional broadcasting.
//!
//! Shapes are right-aligned; a dimension of 1 stretches to its partner. The
//! kernel [`zip_map`] first merges adjacent dimensions that step through both
//! inputs the same way (so `[64,56,56] + [64,1,1]` becomes a `[64, 3136]` walk
//! and `[128,384] + [384]` a `[128, 384]` one), then runs a plain loop over the
//! innermost run: the per-element work is a slice zip, never index arithmetic.

/// The broadcast shape of `a` and `b`, or `None` if a dimension pair is
/// neither equal nor contains a 1.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

fn dim_from_right(shape: &[usize], k: usize) -> usize {
    if k < shape.len() {
        shape[shape.len() - 1 - k]
    } else {
        1
    }
}

/// Strides (in elements) that walk `shape` as if broadcast to `out`: 0 on
/// stretched dimensions. `shape` must broadcast to `out`.
fn strides_into(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut s = vec![0; out.len()];
    let mut step = 1;
    for k in 0..shape.len() {
        let d = shape[shape.len() - 1 - k];
        let i = out.len() - 1 - k;
        s[i] = if d == 1 { 0 } else { step };
        step *= d;
    }
    s
}

/// `f` applied to every pair of elements of `a` and `b` broadcast to `out`
/// (which must be `broadcast_shapes(a_shape, b_shape)`); the result is
/// row-major in `out`.
pub(crate) fn zip_map<A, B, O>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    out: &[usize],
    f: impl Fn(&A, &B) -> O,
) -> Vec<O> {
    let n: usize = out.iter().product();
    if n == 0 {
        return Vec::new();
    }
    if a.len() == n && b.len() == n {
        // Same element count as the output means neither side is stretched.
        return a.iter().zip(b).map(|(x, y)| f(x, y)).collect();
    }
    if a.len() == n && b.len() == 1 {
        let y = &b[0];
        return a.iter().map(|x| f(x, y)).collect();
    }
    if a.len() == 1 && b.len() == n {
        let x = &a[0];
        return b.iter().map(|y| f(x, y)).collect();
    }
    let sa = strides_into(a_shape, out);
    let sb = strides_into(b_shape, out);
    // (size, stride in a, stride in b), outermost first, size-1 dims dropped,
    // neighbours merged when they step through both inputs contiguously.
    let mut dims: Vec<(usize, usize, usize)> = Vec::with_capacity(out.len());
    for i in 0..out.len() {
        if out[i] == 1 {
            continue;
        }
        if let Some(last) = dims.last_mut() {
            if last.1 == sa[i] * out[i] && last.2 == sb[i] * out[i] {
                *last = (last.0 * out[i], sa[i], sb[i]);
                continue;
            }
        }
        dims.push((out[i], sa[i], sb[i]));
    }
    let (len, ia, ib) = dims.pop().unwrap_or((1, 0, 0));
    let outer = dims;
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; outer.len()];
    let (mut oa, mut ob) = (0usize, 0usize);
    loop {
        match (ia, ib) {
            (1, 1) => res.extend(
                a[oa..oa + len]
                    .iter()
                    .zip(&b[ob..ob + len])
                    .map(|(x, y)| f(x, y)),
            ),
            (1, 0) => {
                let y = &b[ob];
                res.extend(a[oa..oa + len].iter().map(|x| f(x, y)));
            }
            (0, 1) => {
                let x = &a[oa];
                res.extend(b[ob..ob + len].iter().map(|y| f(x, y)));
            }
            _ => res.extend((0..len).map(|k| f(&a[oa + k * ia], &b[ob + k * ib]))),
        }
        // Advance the odometer over the outer dimensions.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return res;
            }
            d -= 1;
            idx[d] += 1;
            oa += outer[d].1;
            ob += outer[d].2;
            if idx[d] < outer[d].0 {
                break;
            }
            oa -= outer[d].1 * outer[d].0;
            ob -= outer[d].2 * outer[d].0;
            idx[d] = 0;
        }
    }
}

/// `data` (of shape `shape`) materialised at the broadcast shape `out`.
pub(crate) fn expand<T: Clone>(data: &[T], shape: &[usize], out: &[usize]) -> Vec<T> {
    zip_map(data, shape, &[()], &[], out, |x, _| x.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: for every output index, pick the matching input
    /// index with stretched dimensions pinned to 0.
    fn reference(a: &[i64], sa: &[usize], b: &[i64], sb: &[usize], out: &[usize]) -> Vec<i64> {
        let n: usize = out.iter().product();
        let pick = |shape: &[usize], mut flat: usize| {
            let mut off = 0;
            let mut step = 1;
            let mut idx = vec![0; out.len()];
            for i in (0..out.len()).rev() {
                idx[i] = flat % out[i];
                flat /= out[i];
            }
            for k in 0..shape.len() {
                let d = shape[shape.len() - 1 - k];
                let i = idx[out.len() - 1 - k];
                off += if d == 1 { 0 } else { i * step };
                step *= d;
            }
            off
        };
        (0..n)
            .map(|i| a[pick(sa, i)] * 1000 + b[pick(sb, i)])
            .collect()
    }

    #[test]
    fn shapes_broadcast_like_numpy() {
        assert_eq!(broadcast_shapes(&[2, 3, 4], &[4]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shapes(&[0, 3], &[1, 3]), Some(vec![0, 3]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
        assert_eq!(broadcast_shapes(&[0], &[2]), None);
    }

    #[test]
    fn zip_map_matches_the_definition_on_many_shape_pairs() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 3, 4], &[2, 3, 4]),
            (&[2, 3, 4], &[4]),
            (&[2, 3, 4], &[3, 1]),
            (&[2, 1, 4], &[3, 1]),
            (&[1, 3, 1], &[2, 1, 5]),
            (&[4, 3, 5, 5], &[3, 1, 1]),
            (&[5], &[]),
            (&[], &[2, 2]),
            (&[1], &[3, 1, 2]),
            (&[3, 1, 2, 1], &[1, 4, 1, 3]),
            (&[0, 3], &[1, 3]),
        ];
        for (sa, sb) in cases {
            let out = broadcast_shapes(sa, sb).unwrap();
            let a: Vec<i64> = (0..sa.iter().product::<usize>() as i64).collect();
            let b: Vec<i64> = (0..sb.iter().product::<usize>() as i64)
                .map(|x| x + 7)
                .collect();
            let got = zip_map(&a, sa, &b, sb, &out, |x, y| x * 1000 + y);
            assert_eq!(got, reference(&a, sa, &b, sb, &out), "{sa:?} with {sb:?}");
            let got = zip_map(&b, sb, &a, sa, &out, |y, x| x * 1000 + y);
            assert_eq!(got, reference(&a, sa, &b, sb, &out), "{sb:?} with {sa:?}");
        }
    }

    #[test]
    fn expand_repeats_stretched_dims() {
        assert_eq!(expand(&[1, 2], &[2, 1], &[2, 3]), vec![1, 1, 1, 2, 2, 2]);
        assert_eq!(expand(&[7], &[], &[2]), vec![7, 7]);
    }
}
