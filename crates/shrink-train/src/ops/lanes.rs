//! Reductions over short f32 runs (one image plane) in 8 independent lanes:
//! the compiler cannot reorder a plain float sum, so a single accumulator
//! runs at one add per cycle latency; eight vectorise. Callers add the
//! per-plane results in f64, so the f32 error stays that of a few hundred
//! terms.

const L: usize = 8;

/// `(Σ (a − s), Σ (a − s)²)`.
pub(crate) fn shifted_sums(a: &[f32], s: f32) -> (f32, f32) {
    let mut s1 = [0f32; L];
    let mut s2 = [0f32; L];
    let mut it = a.chunks_exact(L);
    for c in &mut it {
        for j in 0..L {
            let d = c[j] - s;
            s1[j] += d;
            s2[j] += d * d;
        }
    }
    let (mut t1, mut t2) = (s1.iter().sum::<f32>(), s2.iter().sum::<f32>());
    for &v in it.remainder() {
        let d = v - s;
        t1 += d;
        t2 += d * d;
    }
    (t1, t2)
}

/// `(Σ g, Σ g·(x − m))`.
pub(crate) fn grad_sums(g: &[f32], x: &[f32], m: f32) -> (f32, f32) {
    let mut s1 = [0f32; L];
    let mut s2 = [0f32; L];
    let n = g.len().min(x.len());
    let (g, x) = (&g[..n], &x[..n]);
    let mut gi = g.chunks_exact(L);
    let mut xi = x.chunks_exact(L);
    for (gc, xc) in (&mut gi).zip(&mut xi) {
        for j in 0..L {
            s1[j] += gc[j];
            s2[j] += gc[j] * (xc[j] - m);
        }
    }
    let (mut t1, mut t2) = (s1.iter().sum::<f32>(), s2.iter().sum::<f32>());
    for (&gv, &xv) in gi.remainder().iter().zip(xi.remainder()) {
        t1 += gv;
        t2 += gv * (xv - m);
    }
    (t1, t2)
}

/// `Σ a·b`.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0f32; L];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut ai = a.chunks_exact(L);
    let mut bi = b.chunks_exact(L);
    for (ac, bc) in (&mut ai).zip(&mut bi) {
        for j in 0..L {
            s[j] += ac[j] * bc[j];
        }
    }
    let mut t = s.iter().sum::<f32>();
    for (&x, &y) in ai.remainder().iter().zip(bi.remainder()) {
        t += x * y;
    }
    t
}

/// `Σ a`.
pub(crate) fn sum(a: &[f32]) -> f32 {
    shifted_sums(a, 0.0).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_match_f64_references() {
        let a: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 13.0 - 3.0)
            .collect();
        let b: Vec<f32> = (0..37)
            .map(|i| ((i * 104729) % 97) as f32 / 11.0 - 4.0)
            .collect();
        let s = 0.75f32;
        let r1: f64 = a.iter().map(|&v| (v - s) as f64).sum();
        let r2: f64 = a.iter().map(|&v| ((v - s) as f64).powi(2)).sum();
        let (t1, t2) = shifted_sums(&a, s);
        assert!((t1 as f64 - r1).abs() < 1e-4 && (t2 as f64 - r2).abs() < 1e-3);
        let (g1, g2) = grad_sums(&a, &b, s);
        let q2: f64 = a
            .iter()
            .zip(&b)
            .map(|(&g, &x)| g as f64 * (x - s) as f64)
            .sum();
        assert!((g1 as f64 - a.iter().map(|&v| v as f64).sum::<f64>()).abs() < 1e-4);
        assert!((g2 as f64 - q2).abs() < 1e-3);
        let d: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        assert!((dot(&a, &b) as f64 - d).abs() < 1e-3);
        assert!((sum(&a) as f64 - a.iter().map(|&v| v as f64).sum::<f64>()).abs() < 1e-4);
    }
}
