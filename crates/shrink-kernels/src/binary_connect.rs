//! BinaryConnect: binary weights (bit-packed ±1) × u8 or f32 activations,
//! with additions only — no multiplier anywhere.
//!
//! With `P_j = Σ_{k: w_jk = +1} a_k` (a masked sum) and `T = Σ_k a_k`,
//! `Σ_k w_jk·a_k = 2·P_j − T`. The u8 path sums masked bytes with `vpsadbw`
//! (exact, in u64 lanes); the f32 path uses masked `vaddps`. Weights use the
//! agreed row layout ([`crate::bits`]); per-channel α and the rest come from
//! the epilogue. For u8 activations with zero point `z_a`:
//! `Σ w·(a − z_a) = 2·P − T − z_a·(2·popcount(w) − K)`, exact in i32.

use crate::bits;
use crate::cpu::{self, Isa};
use crate::epilogue::{store_scalar, Epilogue, Output};
use crate::{check_len, tiling, KernelError, Result};

/// Binary weights with per-row `Σ w = 2·popcount − K`.
#[derive(Debug, Clone)]
pub struct BinaryWeights {
    n: usize,
    k: usize,
    words: usize,
    bits: Vec<u64>,
    sum: Vec<i32>,
}

impl BinaryWeights {
    /// Takes `w` in the agreed row layout (`N × ceil(K/64)` u64, padding 0).
    pub fn new(w: &[u64], n: usize, k: usize) -> Result<Self> {
        if n == 0 || k == 0 {
            return Err(KernelError::Unsupported {
                what: "binary weights",
                why: format!("empty shape N={n} K={k}"),
            });
        }
        bits::check_rows("binary weights (N×words)", w, n, 1, k)?;
        let words = bits::words(k);
        let sum = w
            .chunks_exact(words)
            .map(|r| 2 * r.iter().map(|v| v.count_ones() as i32).sum::<i32>() - k as i32)
            .collect();
        Ok(BinaryWeights {
            n,
            k,
            words,
            bits: w.to_vec(),
            sum,
        })
    }
    fn row(&self, j: usize) -> &[u64] {
        &self.bits[j * self.words..(j + 1) * self.words]
    }
}

/// `Σ_k w_jk·(a_ik − z_a)` from the signs, element by element (the reference).
pub fn reference_u8(a: &[u8], m: usize, za: u8, w: &[u64], n: usize, k: usize) -> Vec<i32> {
    let wd = bits::words(k);
    let mut y = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|t| {
                    let s = if w[j * wd + t / 64] >> (t % 64) & 1 == 1 {
                        1
                    } else {
                        -1
                    };
                    s * (a[i * k + t] as i32 - za as i32)
                })
                .sum();
        }
    }
    y
}

/// u8 activations (`M×K`, zero point `za`) × binary weights through the epilogue.
pub fn gemm_u8(
    a: &[u8],
    m: usize,
    za: u8,
    w: &BinaryWeights,
    ep: &Epilogue,
    out: Output,
) -> Result<()> {
    gemm_u8_with(cpu::best(), a, m, za, w, ep, out)
}

/// Columns per task unit.
const COLS: usize = 16;

/// [`gemm_u8`] on a chosen path.
pub fn gemm_u8_with(
    isa: Isa,
    a: &[u8],
    m: usize,
    za: u8,
    w: &BinaryWeights,
    ep: &Epilogue,
    mut out: Output,
) -> Result<()> {
    let (n, k) = (w.n, w.k);
    check_len("BinaryConnect activations (M×K)", m * k, a.len())?;
    check_len("BinaryConnect output (M×N)", m * n, out.len())?;
    ep.check(n)?;
    let isa = cpu::clamp(isa);
    let optr = out.ptr();
    let tasks = tiling::plan(m, n.div_ceil(COLS), 1);
    tiling::run(&tasks, usize::MAX, |r0, r1, b| {
        let mut acc = [0i32; COLS];
        let (j0, j1) = (b * COLS, ((b + 1) * COLS).min(n));
        for i in r0..r1 {
            let row = &a[i * k..(i + 1) * k];
            let total: i32 = row.iter().map(|&v| v as i32).sum();
            for j in j0..j1 {
                let p = match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX-512 BW supported (clamped ISA).
                    Isa::Avx512 | Isa::Avx512Bf16 => unsafe {
                        avx512::masked_sum_u8(row, w.row(j))
                    },
                    _ => masked_sum(row, w.row(j)),
                };
                acc[j - j0] = 2 * p - total - za as i32 * w.sum[j];
            }
            // SAFETY: row i, columns j0..j1 are ours and in bounds.
            unsafe { store_scalar(ep, &acc[..j1 - j0], optr, i, n, j0) };
        }
    });
    Ok(())
}

/// AVX-512 masked byte sum, shared with the ternary kernels.
///
/// # Safety
/// CPU supports AVX-512 F/BW; `w.len() == ceil(row.len()/64)`.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn masked_sum_u8_avx512(row: &[u8], w: &[u64]) -> i32 {
    // SAFETY: forwarded.
    unsafe { avx512::masked_sum_u8(row, w) }
}

fn masked_sum(row: &[u8], w: &[u64]) -> i32 {
    row.iter()
        .enumerate()
        .filter(|(t, _)| w[t / 64] >> (t % 64) & 1 == 1)
        .map(|(_, &v)| v as i32)
        .sum()
}

/// f32 activations (`M×K`) × binary weights: `out = α_j·Σ w·a + bias_j`.
pub fn gemm_f32(
    a: &[f32],
    m: usize,
    w: &BinaryWeights,
    alpha: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    gemm_f32_with(cpu::best(), a, m, w, alpha, bias, out)
}

/// [`gemm_f32`] on a chosen path.
pub fn gemm_f32_with(
    isa: Isa,
    a: &[f32],
    m: usize,
    w: &BinaryWeights,
    alpha: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let (n, k) = (w.n, w.k);
    check_len("BinaryConnect activations (M×K)", m * k, a.len())?;
    check_len("BinaryConnect output (M×N)", m * n, out.len())?;
    check_len("BinaryConnect alpha", n, alpha.len())?;
    if let Some(b) = bias {
        check_len("BinaryConnect bias", n, b.len())?;
    }
    let isa = cpu::clamp(isa);
    use rayon::prelude::*;
    out.par_chunks_mut(n).enumerate().for_each(|(i, o)| {
        let row = &a[i * k..(i + 1) * k];
        let total: f32 = row.iter().sum();
        for (j, y) in o.iter_mut().enumerate() {
            let p = match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F supported (clamped ISA).
                Isa::Avx512 | Isa::Avx512Bf16 => unsafe { avx512::masked_sum_f32(row, w.row(j)) },
                _ => row
                    .iter()
                    .enumerate()
                    .filter(|(t, _)| w.row(j)[t / 64] >> (t % 64) & 1 == 1)
                    .map(|(_, &v)| v)
                    .sum(),
            };
            *y = (2.0 * p - total).mul_add(alpha[j], bias.map_or(0.0, |b| b[j]));
        }
    });
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Σ of the bytes whose weight bit is 1: masked move + `vpsadbw`.
    ///
    /// # Safety
    /// AVX-512 F/BW; `w.len() == ceil(row.len()/64)`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn masked_sum_u8(row: &[u8], w: &[u64]) -> i32 {
        let mut acc = _mm512_setzero_si512();
        let z = _mm512_setzero_si512();
        // SAFETY: loads are masked to the row's length.
        unsafe {
            for (t, &bits) in w.iter().enumerate() {
                let len = (row.len() - 64 * t).min(64);
                let valid: u64 = if len == 64 {
                    u64::MAX
                } else {
                    (1u64 << len) - 1
                };
                let v =
                    _mm512_maskz_loadu_epi8(bits & valid, row.as_ptr().add(64 * t) as *const i8);
                acc = _mm512_add_epi64(acc, _mm512_sad_epu8(v, z));
            }
        }
        _mm512_reduce_add_epi64(acc) as i32
    }

    /// Σ of the floats whose weight bit is 1: masked adds, 16 lanes at a time.
    ///
    /// # Safety
    /// AVX-512F; `w.len() == ceil(row.len()/64)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn masked_sum_f32(row: &[f32], w: &[u64]) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        // SAFETY: loads are masked to the row's length.
        unsafe {
            for (t, &bits) in w.iter().enumerate() {
                for (q, a) in acc.iter_mut().enumerate() {
                    let at = 64 * t + 16 * q;
                    if at >= row.len() {
                        break;
                    }
                    let len = (row.len() - at).min(16);
                    let valid: u16 = if len == 16 {
                        u16::MAX
                    } else {
                        (1u16 << len) - 1
                    };
                    let m = (bits >> (16 * q)) as u16 & valid;
                    *a = _mm512_mask_add_ps(
                        *a,
                        m,
                        *a,
                        _mm512_maskz_loadu_ps(valid, row.as_ptr().add(at)),
                    );
                }
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binary::pack_signs;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check(m: usize, k: usize, n: usize, seed: u64) {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let ws: Vec<f32> = (0..n * k).map(|_| r.gen::<f32>() - 0.5).collect();
        let wb = pack_signs(&ws, n, k).unwrap();
        let w = BinaryWeights::new(&wb, n, k).unwrap();
        let a: Vec<u8> = (0..m * k).map(|_| r.gen()).collect();
        let za = r.gen();
        let want = reference_u8(&a, m, za, &wb, n, k);
        let af: Vec<f32> = a.iter().map(|&v| v as f32 / 255.0 - 0.5).collect();
        let alpha: Vec<f32> = (0..n).map(|j| 0.5 + j as f32 * 0.01).collect();
        for isa in cpu::available() {
            let mut y = vec![0i32; m * n];
            gemm_u8_with(
                isa,
                &a,
                m,
                za,
                &w,
                &Epilogue::default(),
                Output::I32(&mut y),
            )
            .unwrap();
            assert_eq!(y, want, "{isa:?} m={m} k={k} n={n}");
            let mut yf = vec![0f32; m * n];
            gemm_f32_with(isa, &af, m, &w, &alpha, None, &mut yf).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|t| {
                            if ws[j * k + t] >= 0.0 {
                                af[i * k + t] as f64
                            } else {
                                -(af[i * k + t] as f64)
                            }
                        })
                        .sum::<f64>()
                        * alpha[j] as f64;
                    let tol =
                        4.0 * k as f64 * f32::EPSILON as f64 * (k as f64 * 0.5 * alpha[j] as f64)
                            + 1e-6;
                    assert!(
                        (yf[i * n + j] as f64 - exact).abs() <= tol,
                        "{isa:?} f32 ({i},{j}): {} vs {exact}",
                        yf[i * n + j]
                    );
                }
            }
        }
    }

    #[test]
    fn edge_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (2, 63, 3),
            (3, 64, 17),
            (4, 65, 20),
            (1, 1000, 5),
        ] {
            check(m, k, n, (m * k + n) as u64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes(m in 1usize..6, k in 1usize..300, n in 1usize..40, seed in any::<u64>()) {
            check(m, k, n, seed);
        }
    }
}
