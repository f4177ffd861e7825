//! Element-wise kernels on quantised tensors.

use crate::{check_len, Result};

/// Affine quantisation of one tensor: `real = scale·(q − zero)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    pub scale: f32,
    pub zero: i32,
}

/// Requantising u8 addition (ONNX `QLinearAdd`, same shapes):
/// `q_y = clamp(round_half_even((s_a(q_a − z_a) + s_b(q_b − z_b)) / s_y) + z_y, 0, 255)`,
/// computed as `fma(q_a − z_a, s_a/s_y, (q_b − z_b)·s_b/s_y)` in f32.
pub fn add_u8(a: &[u8], qa: Quant, b: &[u8], qb: Quant, qy: Quant, out: &mut [u8]) -> Result<()> {
    check_len("add_u8 b", a.len(), b.len())?;
    check_len("add_u8 output", a.len(), out.len())?;
    let (ma, mb) = (qa.scale / qy.scale, qb.scale / qy.scale);
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        let v = ((x as i32 - qa.zero) as f32).mul_add(ma, (y as i32 - qb.zero) as f32 * mb);
        *o = (v.round_ties_even() as i32 + qy.zero).clamp(0, 255) as u8;
    }
    Ok(())
}

/// Requantise i32 accumulators or u8 values between scales: `q_y = clamp(round((q − z)·m) + z_y)`.
pub fn requant_u8(x: &[u8], qx: Quant, qy: Quant, out: &mut [u8]) -> Result<()> {
    check_len("requant_u8 output", x.len(), out.len())?;
    let m = qx.scale / qy.scale;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = ((((v as i32 - qx.zero) as f32) * m).round_ties_even() as i32 + qy.zero).clamp(0, 255)
            as u8;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn add_u8_matches_real_arithmetic() {
        let mut r = ChaCha8Rng::seed_from_u64(5);
        let n = 4096;
        let a: Vec<u8> = (0..n).map(|_| r.gen()).collect();
        let b: Vec<u8> = (0..n).map(|_| r.gen()).collect();
        let (qa, qb, qy) = (
            Quant {
                scale: 0.02,
                zero: 128,
            },
            Quant {
                scale: 0.05,
                zero: 10,
            },
            Quant {
                scale: 0.07,
                zero: 100,
            },
        );
        let mut y = vec![0u8; n];
        add_u8(&a, qa, &b, qb, qy, &mut y).unwrap();
        for i in 0..n {
            let real =
                qa.scale as f64 * (a[i] as f64 - 128.0) + qb.scale as f64 * (b[i] as f64 - 10.0);
            let exact = real / qy.scale as f64 + 100.0;
            let want = exact.round().clamp(0.0, 255.0);
            // Only exact ties may round differently (f32 vs f64): allow ±1 there.
            let tie = (exact - exact.floor() - 0.5).abs() < 1e-4;
            assert!(
                y[i] as f64 == want || (tie && (y[i] as f64 - want).abs() <= 1.0),
                "{i}: {} vs {want}",
                y[i]
            );
        }
        assert!(add_u8(&a, qa, &b[..3], qb, qy, &mut y).is_err());
    }

    #[test]
    fn requant_u8_saturates() {
        let mut y = [0u8; 3];
        requant_u8(
            &[0, 128, 255],
            Quant {
                scale: 1.0,
                zero: 128,
            },
            Quant {
                scale: 0.25,
                zero: 128,
            },
            &mut y,
        )
        .unwrap();
        assert_eq!(y, [0, 128, 255]);
    }
}
