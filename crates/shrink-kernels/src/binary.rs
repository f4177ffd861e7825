//! Binary GEMM: XNOR-popcount over bit-packed {−1,+1} operands.
//!
//! With bit 1 = +1 and bit 0 = −1, the dot product of two K-element rows is
//! `K − 2·popcount(a XOR w)`: every differing bit is a −1 product. Padding
//! bits past K are 0 in both operands, so their XOR is 0 and they are never
//! counted (inputs with a set padding bit are rejected, not silently miscounted).
//! The per-output-channel α (and bias, clip, requantisation) come from the
//! shared [`Epilogue`]: `y = α[j]·dot + bias[j]`.

use crate::bits::{self, count, BlockedBits, BLOCK};
use crate::cpu::{self, Isa};
use crate::epilogue::{store_scalar, Epilogue, OutPtr, Output};
use crate::{check_len, tiling, Result};

/// Rows per AVX-512 register tile.
const MR: usize = 4;

/// Packs signs of a row-major `rows × k` float matrix into the row layout
/// (`x ≥ 0` → bit 1 = +1).
pub fn pack_signs(x: &[f32], rows: usize, k: usize) -> Result<Vec<u64>> {
    check_len("binary values (rows×K)", rows * k, x.len())?;
    let wd = bits::words(k);
    let mut out = vec![0u64; rows * wd];
    for r in 0..rows {
        for (i, &v) in x[r * k..(r + 1) * k].iter().enumerate() {
            if v >= 0.0 {
                out[r * wd + i / 64] |= 1 << (i % 64);
            }
        }
    }
    Ok(out)
}

/// Binary weights (`N×K`, row layout) repacked for the kernels.
#[derive(Debug, Clone)]
pub struct PackedBinary {
    bits: BlockedBits,
}

impl PackedBinary {
    /// Repacks `w` given in the agreed row layout (`N × ceil(K/64)` u64).
    pub fn pack(w: &[u64], n: usize, k: usize) -> Result<Self> {
        Ok(PackedBinary {
            bits: BlockedBits::from_rows("binary weights (N×words)", w, n, 1, k)?,
        })
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.bits.rows
    }
    /// Reduction length in elements.
    pub fn k(&self) -> usize {
        self.bits.k
    }
}

/// Element-by-element ±1 products: the reference every path must equal.
pub fn reference(a: &[u64], m: usize, w: &[u64], n: usize, k: usize) -> Vec<i32> {
    let wd = bits::words(k);
    let sign = |row: &[u64], i: usize| {
        if row[i / 64] >> (i % 64) & 1 == 1 {
            1
        } else {
            -1
        }
    };
    let mut y = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let (ar, wr) = (&a[i * wd..(i + 1) * wd], &w[j * wd..(j + 1) * wd]);
            y[i * n + j] = (0..k).map(|t| sign(ar, t) * sign(wr, t)).sum();
        }
    }
    y
}

/// `out = epilogue(dot(A, W))` for bit-packed A (`M × ceil(K/64)` u64) on the best path.
pub fn gemm(a: &[u64], m: usize, w: &PackedBinary, ep: &Epilogue, out: Output) -> Result<()> {
    gemm_with(cpu::best(), a, m, w, ep, out)
}

/// [`gemm`] on a chosen path (lowered to what the CPU supports).
pub fn gemm_with(
    isa: Isa,
    a: &[u64],
    m: usize,
    w: &PackedBinary,
    ep: &Epilogue,
    mut out: Output,
) -> Result<()> {
    let (n, k) = (w.n(), w.k());
    bits::check_rows("binary activations (M×words)", a, m, 1, k)?;
    check_len("binary output (M×N)", m * n, out.len())?;
    ep.check(n)?;
    if m == 0 {
        return Ok(());
    }
    let isa = cpu::clamp(isa);
    let optr = out.ptr();
    let tasks = tiling::plan(m, w.bits.blocks(), MR);
    tiling::run(
        &tasks,
        tiling::rows_per_block(8 * bits::words(k), MR),
        |r0, r1, b| {
            // SAFETY: disjoint in-bounds tiles (lengths checked above); ISA clamped.
            unsafe { block_rows(isa, a, r0, r1, w, b, ep, optr) }
        },
    );
    Ok(())
}

/// # Safety
/// `isa` supported; `out` valid `M×N` with these elements ours alone.
#[allow(clippy::too_many_arguments)]
unsafe fn block_rows(
    isa: Isa,
    a: &[u64],
    r0: usize,
    r1: usize,
    w: &PackedBinary,
    b: usize,
    ep: &Epilogue,
    out: OutPtr,
) {
    let (n, k, wd) = (w.n(), w.k(), w.bits.words);
    let blk = w.bits.plane(b, 0);
    let j0 = b * BLOCK;
    let cols = (n - j0).min(BLOCK);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Bf16 => {
            // SAFETY: forwarded from the caller.
            unsafe { avx512::block_rows(a, r0, r1, blk, wd, k, j0, cols, n, ep, out) }
        }
        _ => {
            let mut cnt = [0u32; BLOCK];
            for i in r0..r1 {
                let row = &a[i * wd..(i + 1) * wd];
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx2 {
                    // SAFETY: Avx2 implies POPCNT (cpu::best checks it).
                    unsafe { count::row_block_popcnt::<true>(row, blk, &mut cnt) };
                } else {
                    count::row_block::<true>(row, blk, &mut cnt);
                }
                #[cfg(not(target_arch = "x86_64"))]
                count::row_block::<true>(row, blk, &mut cnt);
                let dots: Vec<i32> = cnt[..cols]
                    .iter()
                    .map(|&c| k as i32 - 2 * c as i32)
                    .collect();
                // SAFETY: row i, columns j0..j0+cols are ours and in bounds.
                unsafe { store_scalar(ep, &dots, out, i, n, j0) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::MR;
    use crate::bits::count::avx512::tile;
    use crate::epilogue::{avx512::store16, Epilogue, OutPtr};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512 F/BW/VPOPCNTDQ; `a` holds rows `r0..r1` of `wd` words; `blk`
    /// holds `wd·32` words; `out` as in the caller.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    pub(super) unsafe fn block_rows(
        a: &[u64],
        r0: usize,
        r1: usize,
        blk: &[u64],
        wd: usize,
        k: usize,
        j0: usize,
        cols: usize,
        n: usize,
        ep: &Epilogue,
        out: OutPtr,
    ) {
        let mut i = r0;
        // SAFETY: row ranges stay below r1; forwarded guarantees.
        unsafe {
            while i + MR <= r1 {
                let c = tile::<MR, true>(a.as_ptr().add(i * wd), wd, blk.as_ptr(), wd);
                finish(&c, i, k, j0, cols, n, ep, out);
                i += MR;
            }
            let ap = a.as_ptr().add(i * wd);
            match r1 - i {
                0 => {}
                1 => finish(
                    &tile::<1, true>(ap, wd, blk.as_ptr(), wd),
                    i,
                    k,
                    j0,
                    cols,
                    n,
                    ep,
                    out,
                ),
                2 => finish(
                    &tile::<2, true>(ap, wd, blk.as_ptr(), wd),
                    i,
                    k,
                    j0,
                    cols,
                    n,
                    ep,
                    out,
                ),
                _ => finish(
                    &tile::<3, true>(ap, wd, blk.as_ptr(), wd),
                    i,
                    k,
                    j0,
                    cols,
                    n,
                    ep,
                    out,
                ),
            }
        }
    }

    /// `dot = K − 2·count`, then the epilogue, for each row of a tile.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn finish(
        c: &[[__m512i; 2]],
        i0: usize,
        k: usize,
        j0: usize,
        cols: usize,
        n: usize,
        ep: &Epilogue,
        out: OutPtr,
    ) {
        let kv = _mm512_set1_epi32(k as i32);
        for (r, cr) in c.iter().enumerate() {
            for (h, &v) in cr.iter().enumerate() {
                let w = cols.saturating_sub(16 * h).min(16);
                if w == 0 {
                    break;
                }
                let dot = _mm512_sub_epi32(kv, _mm512_slli_epi32::<1>(v));
                // SAFETY: masked store of `w` in-bounds columns.
                unsafe { store16(ep, dot, out, i0 + r, n, j0 + 16 * h, w) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_bits(rows: usize, k: usize, r: &mut ChaCha8Rng) -> Vec<u64> {
        let x: Vec<f32> = (0..rows * k).map(|_| r.gen::<f32>() - 0.5).collect();
        pack_signs(&x, rows, k).unwrap()
    }

    fn check(m: usize, k: usize, n: usize, seed: u64) {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let (a, w) = (random_bits(m, k, &mut r), random_bits(n, k, &mut r));
        let expect = reference(&a, m, &w, n, k);
        let p = PackedBinary::pack(&w, n, k).unwrap();
        let alpha: Vec<f32> = (0..n).map(|j| 0.5 + j as f32 * 0.01).collect();
        let ep = Epilogue::scaled(&alpha);
        for isa in cpu::available() {
            let mut y = vec![0i32; m * n];
            gemm_with(isa, &a, m, &p, &ep, Output::I32(&mut y)).unwrap();
            assert_eq!(y, expect, "{isa:?} m={m} k={k} n={n}");
            let mut f = vec![0f32; m * n];
            gemm_with(isa, &a, m, &p, &ep, Output::F32(&mut f)).unwrap();
            for (idx, &d) in expect.iter().enumerate() {
                assert_eq!(f[idx].to_bits(), ep.float(d, idx % n).to_bits());
            }
        }
    }

    #[test]
    fn edge_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 63, 5),
            (2, 64, 32),
            (5, 65, 33),
            (7, 127, 31),
            (9, 1000, 70),
            (1, 4096, 64),
        ] {
            check(m, k, n, (m + k + n) as u64);
        }
    }

    #[test]
    fn sign_layout_matches_the_agreed_format() {
        // bit j of word w = element 64w + j, 1 = +1; padding bits 0.
        let mut x = vec![-1.0f32; 70];
        x[0] = 1.0;
        x[63] = 0.0;
        x[64] = 2.0;
        x[69] = 0.5;
        assert_eq!(
            pack_signs(&x, 1, 70).unwrap(),
            vec![1 | 1 << 63, 1 | 1 << 5]
        );
    }

    #[test]
    fn all_plus_and_all_minus() {
        let k = 100;
        let plus = pack_signs(&vec![1.0; 3 * k], 3, k).unwrap();
        let minus = pack_signs(&vec![-1.0; 3 * k], 3, k).unwrap();
        let p = PackedBinary::pack(&minus, 3, k).unwrap();
        let mut y = vec![0i32; 9];
        gemm(&plus, 3, &p, &Epilogue::default(), Output::I32(&mut y)).unwrap();
        assert_eq!(y, vec![-(k as i32); 9]);
        gemm(&minus, 3, &p, &Epilogue::default(), Output::I32(&mut y)).unwrap();
        assert_eq!(y, vec![k as i32; 9]);
    }

    #[test]
    fn set_padding_bits_are_rejected() {
        let w = vec![u64::MAX; 2];
        assert!(PackedBinary::pack(&w, 2, 10).is_err());
        let p = PackedBinary::pack(&[0b11, 0b01], 2, 10).unwrap();
        assert!(gemm(
            &[1 << 12],
            1,
            &p,
            &Epilogue::default(),
            Output::I32(&mut [0; 2])
        )
        .is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn random_shapes(m in 1usize..12, k in 1usize..300, n in 1usize..70, seed in any::<u64>()) {
            check(m, k, n, seed);
        }
    }
}
