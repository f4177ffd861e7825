//! NumPy broadcasting in reverse: the gradient of a broadcast operand is the
//! output gradient summed over the dimensions it was stretched along.

/// Strides of `input` read at the coordinates of `out` (right-aligned), with
/// 0 for the dimensions `input` is broadcast along.
pub(crate) fn strides_in(input: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len() - input.len();
    let own = shrink_tensor::strides_of(input);
    (0..out.len())
        .map(|d| {
            if d < lead || input[d - lead] == 1 {
                0
            } else {
                own[d - lead]
            }
        })
        .collect()
}

/// Calls `f(out_index, in_offset)` for every element of `out`, in order,
/// where `in_offset` is the flat index of the input element it reads.
pub(crate) fn for_each(out: &[usize], strides: &[usize], mut f: impl FnMut(usize, usize)) {
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    let r = out.len();
    if r == 0 {
        f(0, 0);
        return;
    }
    // Inner dimension as a tight loop, outer ones as an odometer.
    let inner = out[r - 1];
    let is = strides[r - 1];
    let mut idx = vec![0usize; r];
    let mut base = 0usize;
    let mut o = 0usize;
    loop {
        for j in 0..inner {
            f(o + j, base + j * is);
        }
        o += inner;
        if o >= n {
            return;
        }
        let mut d = r - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < out[d] {
                break;
            }
            base -= strides[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// The gradient of an operand of shape `target` broadcast to `out`: `g`
/// (shaped `out`) summed over the broadcast dimensions.
pub(crate) fn reduce_to(g: &[f32], out: &[usize], target: &[usize]) -> Vec<f32> {
    if out == target {
        return g.to_vec();
    }
    let n: usize = target.iter().product();
    let mut acc = vec![0f32; n];
    if n == 1 {
        acc[0] = g.iter().sum();
        return acc;
    }
    let s = strides_in(target, out);
    for_each(out, &s, |o, i| acc[i] += g[o]);
    acc
}

/// `x` (shaped `small`) broadcast to `out`.
pub(crate) fn expand(x: &[f32], small: &[usize], out: &[usize]) -> Vec<f32> {
    if small == out {
        return x.to_vec();
    }
    let n: usize = out.iter().product();
    let mut y = vec![0f32; n];
    let s = strides_in(small, out);
    for_each(out, &s, |o, i| y[o] = x[i]);
    y
}

/// The broadcast shape of two shapes, or `None` when they do not broadcast.
pub(crate) fn shape_of(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (d, o) in out.iter_mut().enumerate() {
        let x = if d + a.len() >= r {
            a[d + a.len() - r]
        } else {
            1
        };
        let y = if d + b.len() >= r {
            b[d + b.len() - r]
        } else {
            1
        };
        *o = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_to_sums_the_broadcast_dimensions() {
        // out [2,3], target [3]: column sums; target [2,1]: row sums.
        let g = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
        assert_eq!(reduce_to(&g, &[2, 3], &[3]), vec![11.0, 22.0, 33.0]);
        assert_eq!(reduce_to(&g, &[2, 3], &[2, 1]), vec![6.0, 60.0]);
        assert_eq!(reduce_to(&g, &[2, 3], &[]), vec![66.0]);
        assert_eq!(
            expand(&[1.0, 2.0], &[2, 1], &[2, 3]),
            vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
        assert_eq!(shape_of(&[4, 1, 3], &[5, 1]), Some(vec![4, 5, 3]));
        assert_eq!(shape_of(&[2], &[3]), None);
    }

    #[test]
    fn for_each_walks_a_middle_broadcast() {
        // input [2,1,2] read as out [2,3,2]
        let s = strides_in(&[2, 1, 2], &[2, 3, 2]);
        let mut seen = Vec::new();
        for_each(&[2, 3, 2], &s, |o, i| seen.push((o, i)));
        let ins: Vec<usize> = seen.iter().map(|p| p.1).collect();
        assert_eq!(ins, vec![0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3]);
    }
}
