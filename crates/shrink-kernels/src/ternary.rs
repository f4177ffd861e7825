//! Ternary weights {−1, 0, +1} as two bit masks, × binary or × u8 activations.
//!
//! Layout: the agreed row layout with two planes per row, `[row][plane][word]`:
//! plane 0 marks the +1 weights (P), plane 1 the −1 weights (N); a bit set in
//! both is an error. Against binary activations A (bit 1 = +1, bit 0 = −1):
//! `Σ_P a − Σ_N a = 2·popcount(P∧A) − |P| − 2·popcount(N∧A) + |N|`, two
//! AND-popcount products (shared kernels with the bit-serial GEMM). Against
//! u8 activations: masked byte sums (`vpsadbw`), additions only.

use crate::bits::{self, count, BlockedBits, BLOCK};
use crate::cpu::{self, Isa};
use crate::epilogue::{store_scalar, Epilogue, Output};
use crate::{check_len, tiling, KernelError, Result};

/// Packs ternary codes (row-major `rows × k`, values in {−1, 0, 1}) into the two-plane layout.
pub fn pack_ternary(codes: &[i8], rows: usize, k: usize) -> Result<Vec<u64>> {
    check_len("ternary codes (rows×K)", rows * k, codes.len())?;
    let wd = bits::words(k);
    let mut out = vec![0u64; rows * 2 * wd];
    for r in 0..rows {
        for t in 0..k {
            let plane = match codes[r * k + t] {
                1 => 0,
                -1 => 1,
                0 => continue,
                c => {
                    return Err(KernelError::Unsupported {
                        what: "ternary codes",
                        why: format!("code {c} at row {r}, column {t} is not -1, 0 or 1"),
                    })
                }
            };
            out[(r * 2 + plane) * wd + t / 64] |= 1 << (t % 64);
        }
    }
    Ok(out)
}

/// Ternary weights, kept in row layout (for u8 activations) and column blocks (for binary).
#[derive(Debug, Clone)]
pub struct TernaryWeights {
    n: usize,
    k: usize,
    words: usize,
    rows: Vec<u64>,
    blocked: BlockedBits,
    /// `|N| − |P|` per row.
    fix: Vec<i32>,
}

impl TernaryWeights {
    /// Takes the two-plane row layout (`N × 2 × ceil(K/64)` u64).
    pub fn new(w: &[u64], n: usize, k: usize) -> Result<Self> {
        let blocked = BlockedBits::from_rows("ternary weights (N×2×words)", w, n, 2, k)?;
        let words = bits::words(k);
        let mut fix = Vec::with_capacity(n);
        for j in 0..n {
            let (p, q) = (
                &w[(2 * j) * words..][..words],
                &w[(2 * j + 1) * words..][..words],
            );
            if p.iter().zip(q).any(|(a, b)| a & b != 0) {
                return Err(KernelError::Unsupported {
                    what: "ternary weights",
                    why: format!("row {j} marks a weight both +1 and -1"),
                });
            }
            let pc: i32 = p.iter().map(|v| v.count_ones() as i32).sum();
            let nc: i32 = q.iter().map(|v| v.count_ones() as i32).sum();
            fix.push(nc - pc);
        }
        Ok(TernaryWeights {
            n,
            k,
            words,
            rows: w.to_vec(),
            blocked,
            fix,
        })
    }
}

/// Binary activations (`M × words`, row layout) × ternary weights, through the epilogue.
pub fn gemm_binary(
    a: &[u64],
    m: usize,
    w: &TernaryWeights,
    ep: &Epilogue,
    out: Output,
) -> Result<()> {
    gemm_binary_with(cpu::best(), a, m, w, ep, out)
}

/// [`gemm_binary`] on a chosen path.
pub fn gemm_binary_with(
    isa: Isa,
    a: &[u64],
    m: usize,
    w: &TernaryWeights,
    ep: &Epilogue,
    mut out: Output,
) -> Result<()> {
    let (n, k, wd) = (w.n, w.k, w.words);
    bits::check_rows("ternary×binary activations (M×words)", a, m, 1, k)?;
    check_len("ternary output (M×N)", m * n, out.len())?;
    ep.check(n)?;
    let isa = cpu::clamp(isa);
    let optr = out.ptr();
    let tasks = tiling::plan(m, w.blocked.blocks(), 4);
    tiling::run(&tasks, usize::MAX, |r0, r1, b| {
        let j0 = b * BLOCK;
        let cols = (n - j0).min(BLOCK);
        let (mut cp, mut cn) = ([0u32; BLOCK], [0u32; BLOCK]);
        for i in r0..r1 {
            let row = &a[i * wd..(i + 1) * wd];
            for (plane, c) in [(0, &mut cp), (1, &mut cn)] {
                let blk = w.blocked.plane(b, plane);
                #[cfg(target_arch = "x86_64")]
                if isa >= Isa::Avx2 {
                    // SAFETY: Avx2 and above imply POPCNT (cpu::best checks it).
                    unsafe { count::row_block_popcnt::<false>(row, blk, c) };
                    continue;
                }
                let _ = isa;
                count::row_block::<false>(row, blk, c);
            }
            let y: Vec<i32> = (0..cols)
                .map(|c| 2 * cp[c] as i32 - 2 * cn[c] as i32 + w.fix[j0 + c])
                .collect();
            // SAFETY: row i, columns j0..j0+cols are ours and in bounds.
            unsafe { store_scalar(ep, &y, optr, i, n, j0) };
        }
    });
    Ok(())
}

/// u8 activations (`M×K`, zero point `za`) × ternary weights, through the epilogue.
pub fn gemm_u8(
    a: &[u8],
    m: usize,
    za: u8,
    w: &TernaryWeights,
    ep: &Epilogue,
    mut out: Output,
) -> Result<()> {
    let (n, k, wd) = (w.n, w.k, w.words);
    check_len("ternary×u8 activations (M×K)", m * k, a.len())?;
    check_len("ternary output (M×N)", m * n, out.len())?;
    ep.check(n)?;
    let isa = cpu::best();
    let optr = out.ptr();
    let tasks = tiling::plan(m, n.div_ceil(BLOCK), 1);
    tiling::run(&tasks, usize::MAX, |r0, r1, b| {
        let (j0, j1) = (b * BLOCK, ((b + 1) * BLOCK).min(n));
        let mut y = [0i32; BLOCK];
        for i in r0..r1 {
            let row = &a[i * k..(i + 1) * k];
            for j in j0..j1 {
                let (p, q) = (
                    &w.rows[(2 * j) * wd..][..wd],
                    &w.rows[(2 * j + 1) * wd..][..wd],
                );
                let sum = |mask: &[u64]| -> i32 {
                    #[cfg(target_arch = "x86_64")]
                    if isa >= Isa::Avx512 {
                        // SAFETY: AVX-512 BW supported; mask has ceil(K/64) words.
                        return unsafe { crate::binary_connect::masked_sum_u8_avx512(row, mask) };
                    }
                    let _ = isa;
                    row.iter()
                        .enumerate()
                        .filter(|(t, _)| mask[t / 64] >> (t % 64) & 1 == 1)
                        .map(|(_, &v)| v as i32)
                        .sum()
                };
                // Σ w·(a − za) = Σ_P a − Σ_N a − za·(|P| − |N|)
                y[j - j0] = sum(p) - sum(q) + za as i32 * w.fix[j];
            }
            // SAFETY: row i, columns j0..j1 are ours and in bounds.
            unsafe { store_scalar(ep, &y[..j1 - j0], optr, i, n, j0) };
        }
    });
    Ok(())
}

/// Element-by-element reference for both activation kinds: `a` as integers.
pub fn reference(a: &[i32], m: usize, codes: &[i8], n: usize, k: usize) -> Vec<i32> {
    let mut y = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|t| a[i * k + t] * codes[j * k + t] as i32).sum();
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check(m: usize, k: usize, n: usize, seed: u64) {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let codes: Vec<i8> = (0..n * k).map(|_| r.gen_range(-1..=1)).collect();
        let w = TernaryWeights::new(&pack_ternary(&codes, n, k).unwrap(), n, k).unwrap();
        // Binary activations.
        let af: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() - 0.5).collect();
        let ab = crate::binary::pack_signs(&af, m, k).unwrap();
        let signs: Vec<i32> = af.iter().map(|&v| if v >= 0.0 { 1 } else { -1 }).collect();
        let want = reference(&signs, m, &codes, n, k);
        for isa in cpu::available() {
            let mut y = vec![0i32; m * n];
            gemm_binary_with(isa, &ab, m, &w, &Epilogue::default(), Output::I32(&mut y)).unwrap();
            assert_eq!(y, want, "{isa:?} binary m={m} k={k} n={n}");
        }
        // u8 activations with a zero point.
        let a: Vec<u8> = (0..m * k).map(|_| r.gen()).collect();
        let za: u8 = r.gen();
        let centered: Vec<i32> = a.iter().map(|&v| v as i32 - za as i32).collect();
        let mut y = vec![0i32; m * n];
        gemm_u8(&a, m, za, &w, &Epilogue::default(), Output::I32(&mut y)).unwrap();
        assert_eq!(
            y,
            reference(&centered, m, &codes, n, k),
            "u8 m={m} k={k} n={n}"
        );
    }

    #[test]
    fn edge_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (2, 63, 33),
            (5, 64, 32),
            (3, 130, 7),
            (1, 1000, 40),
        ] {
            check(m, k, n, (m + k + n) as u64);
        }
    }

    #[test]
    fn invalid_codes_and_overlapping_masks_are_errors() {
        assert!(pack_ternary(&[2], 1, 1).is_err());
        assert!(TernaryWeights::new(&[1, 1], 1, 1).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes(m in 1usize..8, k in 1usize..300, n in 1usize..70, seed in any::<u64>()) {
            check(m, k, n, seed);
        }
    }
}
