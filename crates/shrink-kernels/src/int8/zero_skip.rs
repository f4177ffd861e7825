//! Skipping the zero activation quads of an int8 GEMM.
//!
//! The VNNI kernels consume activations four bytes (one "quad", `a[4q..4q+4]`)
//! at a time against 16 or 32 weight columns. A quad whose four bytes are all
//! zero adds nothing to any sum, whatever the zero points (they are folded
//! out of the products, see the parent module). Real inputs have many:
//! half the pixels of a Fashion-MNIST image are exactly 0, and 38% of its
//! 196 quads are all zero. The dense kernel's tile of 8 images cannot use
//! that (only 5% of quads are zero in 8 images at once), and one image on
//! its own re-loads a weight vector for every two `vpdpbusd` (measured: 58%
//! of the dense kernel's speed per product, so skipping 38% gained nothing).
//!
//! So rows go in *pairs of similar images*: each pair keeps the quads
//! nonzero in either image, and each weight load then feeds four products.
//! Pairs are chosen greedily (rows sorted by their count of nonzero quads,
//! each paired with the candidate among the next [`PAIR_WINDOW`] whose union
//! is smallest): on Fashion-MNIST a pair keeps 65–68% of its quads, against
//! 78% for neighbouring rows and 62% for single images. Integer sums do not
//! depend on the order of their terms, so the result is bit for bit the
//! dense kernel's.
//!
//! Whether it pays is decided per call from the data: rows whose pairs keep
//! more than `max_kept` of their quads run dense (random or post-ReLU
//! activations keep 90–100%), after a probe of the first rows so dense data
//! pays almost nothing for the check.

/// Whether the first rows of `a` are sparse enough (at most `max_kept` of
/// their quads nonzero, and so their pairs' at most about that) for the
/// walk to be tried: a quick look that keeps dense data (random or
/// post-ReLU activations) off the build entirely.
pub(crate) fn probe(a: &[u8], m: usize, k: usize, max_kept: f32) -> bool {
    let rows = m.min(PROBE_ROWS);
    let quads = k.div_ceil(4);
    let mut mask = vec![0u64; quads.div_ceil(64)];
    let kept: u32 = (0..rows)
        .map(|i| nonzero_mask(&a[i * k..(i + 1) * k], &mut mask))
        .sum();
    kept as f32 <= max_kept * (rows * quads) as f32
}

/// Candidates examined for each row's partner (in count order).
pub(crate) const PAIR_WINDOW: usize = 16;
/// Rows whose single density decides early that a call stays dense.
const PROBE_ROWS: usize = 8;
/// Marks the missing second row of an odd row out.
const NONE: u32 = u32::MAX;

/// Per pair of rows `(a, b)`, the quads nonzero in either: their bytes in
/// row a (`va`) and row b (`vb`, zeros for a lone row) and the byte offset of
/// their 128-byte block in a weight panel (`offs` = 128·q); pair `t` owns
/// entries `start[t]..start[t+1]`. The vectors keep 16 spare entries so the
/// 16-lane builder may store whole registers.
#[derive(Debug, Default)]
pub(crate) struct PairLists {
    rows: Vec<(u32, u32)>,
    start: Vec<usize>,
    offs: Vec<u32>,
    va: Vec<u32>,
    vb: Vec<u32>,
    quads: usize,
    /// Build scratch kept with the lists so its storage is reused too:
    /// per-row nonzero-quad bitmaps and counts, and a zero row.
    masks: Vec<u64>,
    counts: Vec<u32>,
    zero: Vec<u8>,
}

impl PairLists {
    /// Pair lists for the `m` rows of `k` bytes in `a`, or `None` when the
    /// pairs keep more than `max_kept` (a fraction) of their quads.
    ///
    /// The storage of this thread's previous lists is reused (see
    /// [`PairLists::recycle`]): zeroing fresh vectors for every call cost
    /// more than building the lists.
    pub(crate) fn build(a: &[u8], m: usize, k: usize, max_kept: f32) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::features().popcnt {
            // SAFETY: the CPU has POPCNT.
            return unsafe { build_popcnt(a, m, k, max_kept) };
        }
        build_body(a, m, k, max_kept)
    }

    /// Hands the storage back for this thread's next [`PairLists::build`].
    pub(crate) fn recycle(self) {
        SPARE.with_borrow_mut(|s| *s = self);
    }
    /// Appends the union list of rows `a` and `b` at `pos`; returns the end.
    fn push_pair(&mut self, a: &[u8], b: &[u8], mut pos: usize) -> usize {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::features().avx512 && crate::cpu::features().popcnt {
            // SAFETY: the CPU supports AVX-512 F/BW and POPCNT; the vectors hold every
            // pair's union count plus 16, so each 16-entry store from `pos`
            // (never past this pair's end + 16) stays inside.
            return unsafe { push_pair_avx512(a, b, self, pos) };
        }
        for q in 0..a.len().div_ceil(4) {
            let (x, y) = (quad(a, q), quad(b, q));
            if x | y != 0 {
                self.offs[pos] = (q * 128) as u32;
                self.va[pos] = x;
                self.vb[pos] = y;
                pos += 1;
            }
        }
        pos
    }

    /// Number of pairs.
    pub(crate) fn pairs(&self) -> usize {
        self.rows.len()
    }

    /// Pair `t`: its rows (the second `None` for a lone row) and its lists.
    #[inline]
    pub(crate) fn pair(&self, t: usize) -> PairView<'_> {
        let (s, e) = (self.start[t], self.start[t + 1]);
        let (a, b) = self.rows[t];
        PairView {
            a: a as usize,
            b: (b != NONE).then_some(b as usize),
            offs: &self.offs[s..e],
            va: &self.va[s..e],
            vb: &self.vb[s..e],
        }
    }

    /// Quads walked, over all pairs.
    pub(crate) fn walked(&self) -> usize {
        self.start[self.rows.len()]
    }

    /// Fraction of the pairs' quads that are walked.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> f32 {
        let total = self.rows.len() * self.quads;
        if total == 0 {
            0.0
        } else {
            self.start[self.rows.len()] as f32 / total as f32
        }
    }
}

thread_local! {
    /// The storage of this thread's last lists (see [`PairLists::build`]).
    static SPARE: std::cell::RefCell<PairLists> = std::cell::RefCell::new(PairLists::default());
}

/// [`build_body`] compiled with POPCNT: without it every `count_ones` of the
/// bitmaps and unions is a dozen-instruction bit trick, and pairing 256
/// rows took 45 µs instead of a few.
///
/// # Safety
/// The CPU supports POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn build_popcnt(a: &[u8], m: usize, k: usize, max_kept: f32) -> Option<PairLists> {
    build_body(a, m, k, max_kept)
}

/// Grows `v` to at least `n` entries, keeping (not re-zeroing) what it
/// holds: every entry the lists read is written first.
fn at_least<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

#[inline(always)]
fn build_body(a: &[u8], m: usize, k: usize, max_kept: f32) -> Option<PairLists> {
    let quads = k.div_ceil(4);
    let words = quads.div_ceil(64);
    let row = |i: usize| &a[i * k..(i + 1) * k];
    let mut l = SPARE.with_borrow_mut(std::mem::take);
    l.quads = quads;
    // Nonzero-quad bitmaps, with an early way out for dense data.
    at_least(&mut l.masks, m * words);
    l.counts.clear();
    let probe = m.min(PROBE_ROWS);
    for i in 0..m {
        let c = nonzero_mask(row(i), &mut l.masks[i * words..(i + 1) * words]);
        l.counts.push(c);
        if i + 1 == probe {
            let kept: usize = l.counts.iter().map(|&c| c as usize).sum();
            if kept as f32 > max_kept * (probe * quads) as f32 {
                l.recycle();
                return None;
            }
        }
    }
    let mut rows = std::mem::take(&mut l.rows);
    pair_up(&l.masks, &l.counts, words, &mut rows);
    let union = |r: (u32, u32)| -> usize {
        let ma = &l.masks[r.0 as usize * words..][..words];
        if r.1 == NONE {
            return l.counts[r.0 as usize] as usize;
        }
        let mb = &l.masks[r.1 as usize * words..][..words];
        ma.iter()
            .zip(mb)
            .map(|(x, y)| (x | y).count_ones() as usize)
            .sum()
    };
    let total: usize = rows.iter().map(|&r| union(r)).sum();
    if total as f32 > max_kept * (rows.len() * quads) as f32 {
        l.rows = rows;
        l.recycle();
        return None;
    }
    at_least(&mut l.offs, total + 16);
    at_least(&mut l.va, total + 16);
    at_least(&mut l.vb, total + 16);
    l.start.clear();
    l.start.push(0);
    at_least(&mut l.zero, k);
    let zero = std::mem::take(&mut l.zero);
    let mut pos = 0;
    for &(ra, rb) in &rows {
        let b = if rb == NONE {
            &zero[..k]
        } else {
            row(rb as usize)
        };
        pos = l.push_pair(row(ra as usize), b, pos);
        l.start.push(pos);
    }
    l.zero = zero;
    l.rows = rows;
    Some(l)
}

/// One pair's rows and union list.
pub(crate) struct PairView<'a> {
    pub a: usize,
    pub b: Option<usize>,
    pub offs: &'a [u32],
    pub va: &'a [u32],
    pub vb: &'a [u32],
}

/// Greedy pairing: rows in order of their nonzero count (ties by index, so
/// deterministic), each unpaired row taking the candidate among the next
/// [`PAIR_WINDOW`] unpaired rows with the smallest union; an odd row out
/// stays alone.
#[inline(always)]
fn pair_up(masks: &[u64], counts: &[u32], words: usize, rows: &mut Vec<(u32, u32)>) {
    let m = counts.len();
    let mut left: Vec<u32> = (0..m as u32).collect();
    left.sort_unstable_by_key(|&i| (counts[i as usize], i));
    let mask = |i: u32| &masks[i as usize * words..][..words];
    rows.clear();
    let mut head = 0;
    // `left[head..]` are the unpaired rows, in order; a taken partner is
    // removed by swapping the window's earlier rows one place on.
    while head < left.len() {
        let a = left[head];
        head += 1;
        let end = (head + PAIR_WINDOW).min(left.len());
        let mut best: Option<(usize, u32)> = None;
        for (j, &b) in left[head..end].iter().enumerate() {
            let u: u32 = mask(a)
                .iter()
                .zip(mask(b))
                .map(|(x, y)| (x | y).count_ones())
                .sum();
            if best.is_none_or(|(_, bu)| u < bu) {
                best = Some((head + j, u));
            }
        }
        match best {
            Some((j, _)) => {
                let b = left[j];
                // Keep the order of the rest: shift the skipped candidates.
                left.copy_within(head..j, head + 1);
                left[head] = b;
                head += 1;
                rows.push((a, b));
            }
            None => rows.push((a, NONE)),
        }
    }
}

/// Sets bit q of `mask` for every nonzero quad q of `row`; returns the count.
#[inline(always)]
fn nonzero_mask(row: &[u8], mask: &mut [u64]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::features().avx512 && crate::cpu::features().popcnt {
        // SAFETY: the CPU supports AVX-512 F/BW and POPCNT; `mask` has a bit for every
        // quad of the row (the caller sizes it ⌈quads/64⌉ words).
        return unsafe { nonzero_mask_avx512(row, mask) };
    }
    mask.fill(0);
    let mut n = 0;
    for q in 0..row.len().div_ceil(4) {
        if quad(row, q) != 0 {
            mask[q / 64] |= 1 << (q % 64);
            n += 1;
        }
    }
    n
}

/// Quad `q` of `row` as a little-endian u32, zero-filled past the row's end.
#[inline]
fn quad(row: &[u8], q: usize) -> u32 {
    let mut b = [0u8; 4];
    let at = 4 * q;
    let end = (at + 4).min(row.len());
    b[..end - at].copy_from_slice(&row[at..end]);
    u32::from_le_bytes(b)
}

/// The 64-byte block at `at` of `row`, zero past its end, as 16 quads.
///
/// # Safety
/// The CPU supports AVX-512 F/BW.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn block(row: &[u8], at: usize) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let left = row.len() - at;
    let bytes: __mmask64 = if left >= 64 { !0 } else { (1u64 << left) - 1 };
    // SAFETY: the load is masked to the row's bytes from `at`.
    unsafe { _mm512_maskz_loadu_epi8(bytes, row.as_ptr().add(at) as *const i8) }
}

/// # Safety
/// The CPU supports AVX-512 F/BW and POPCNT; `mask` has ⌈quads/64⌉ words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,popcnt")]
unsafe fn nonzero_mask_avx512(row: &[u8], mask: &mut [u64]) -> u32 {
    use std::arch::x86_64::*;
    mask.fill(0);
    let mut n = 0;
    let mut at = 0;
    while at < row.len() {
        // SAFETY: `at < row.len()`; forwarded CPU support.
        let v = unsafe { block(row, at) };
        let nz = _mm512_test_epi32_mask(v, v);
        let q = at / 4;
        mask[q / 64] |= (nz as u64) << (q % 64);
        n += nz.count_ones();
        at += 64;
    }
    n
}

/// 16 quads (64 bytes) of both rows per step: `vptestmd` on their OR marks
/// the union, and the register form of `vpcompressd` packs offsets and both
/// rows' bytes (the memory form is microcoded on Zen 4); whole registers
/// are stored and `pos` advances by the count.
///
/// # Safety
/// The CPU supports AVX-512 F/BW and POPCNT; `a` and `b` have the same length; the
/// lists have room for this pair's union count + 16 entries from `pos`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,popcnt")]
unsafe fn push_pair_avx512(a: &[u8], b: &[u8], l: &mut PairLists, mut pos: usize) -> usize {
    use std::arch::x86_64::*;
    let step = _mm512_set1_epi32(16 * 128);
    let mut off = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(128),
    );
    let mut at = 0;
    while at < a.len() {
        // SAFETY: `at` is inside both rows; each store writes 16 entries
        // from `pos`, inside the lists by the caller's bound.
        let nz = unsafe {
            let (x, y) = (block(a, at), block(b, at));
            let u = _mm512_or_si512(x, y);
            let nz = _mm512_test_epi32_mask(u, u);
            let store = |dst: &mut Vec<u32>, v: __m512i| {
                _mm512_storeu_si512(
                    dst.as_mut_ptr().add(pos) as *mut _,
                    _mm512_maskz_compress_epi32(nz, v),
                )
            };
            store(&mut l.offs, off);
            store(&mut l.va, x);
            store(&mut l.vb, y);
            nz
        };
        pos += nz.count_ones() as usize;
        off = _mm512_add_epi32(off, step);
        at += 64;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Every row is in exactly one pair, and each pair's list is exactly the
    /// quads nonzero in either row, on every row length mod 64 and density.
    #[test]
    fn lists_equal_plain_scan() {
        let mut r = ChaCha8Rng::seed_from_u64(5);
        for &k in &[1usize, 3, 4, 5, 63, 64, 65, 127, 130, 256, 257, 784] {
            for &zeros in &[0.0f32, 0.5, 0.9, 1.0] {
                for m in [1usize, 2, 11, 40] {
                    let a: Vec<u8> = (0..m * k)
                        .map(|_| if r.gen::<f32>() < zeros { 0 } else { r.gen() })
                        .collect();
                    let l = PairLists::build(&a, m, k, 1.0).expect("max_kept 1 always builds");
                    let mut seen = vec![0; m];
                    let mut walked = 0;
                    for t in 0..l.pairs() {
                        let p = l.pair(t);
                        seen[p.a] += 1;
                        let ra = &a[p.a * k..(p.a + 1) * k];
                        let zero = vec![0u8; k];
                        let rb = match p.b {
                            Some(b) => {
                                seen[b] += 1;
                                &a[b * k..(b + 1) * k]
                            }
                            None => &zero[..],
                        };
                        let want: Vec<(u32, u32, u32)> = (0..k.div_ceil(4))
                            .map(|q| ((q * 128) as u32, quad(ra, q), quad(rb, q)))
                            .filter(|&(_, x, y)| x | y != 0)
                            .collect();
                        let got: Vec<(u32, u32, u32)> = (0..p.offs.len())
                            .map(|j| (p.offs[j], p.va[j], p.vb[j]))
                            .collect();
                        assert_eq!(got, want, "k={k} zeros={zeros} m={m} pair {t}");
                        walked += want.len();
                    }
                    assert!(seen.iter().all(|&s| s == 1), "k={k} m={m}: {seen:?}");
                    assert_eq!(l.pairs(), m.div_ceil(2));
                    let expect = walked as f32 / (l.pairs() * k.div_ceil(4)) as f32;
                    assert!((l.kept() - expect).abs() < 1e-6);
                }
            }
        }
    }

    /// Similar rows are paired with each other rather than with neighbours.
    #[test]
    fn pairs_similar_rows() {
        let k = 64;
        // Rows 0 and 2 share their left half, rows 1 and 3 their right half.
        let mut a = vec![0u8; 4 * k];
        for (i, row) in a.chunks_mut(k).enumerate() {
            let half = if i % 2 == 0 { 0..32 } else { 32..64 };
            row[half].fill(1);
        }
        let l = PairLists::build(&a, 4, k, 1.0).unwrap();
        let mut pairs: Vec<(usize, usize)> = (0..2)
            .map(|t| {
                let p = l.pair(t);
                let b = p.b.unwrap();
                (p.a.min(b), p.a.max(b))
            })
            .collect();
        pairs.sort();
        assert_eq!(pairs, vec![(0, 2), (1, 3)]);
        assert!((l.kept() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn dense_rows_are_refused() {
        let (m, k) = (32, 784);
        let a = vec![7u8; m * k];
        assert!(PairLists::build(&a, m, k, 0.75).is_none());
        let mut b = a.clone();
        for (i, v) in b.iter_mut().enumerate() {
            if (i / 4) % 2 == 0 {
                *v = 0;
            }
        }
        let l = PairLists::build(&b, m, k, 0.75).expect("half the quads are zero");
        assert!((l.kept() - 0.5).abs() < 1e-6);
    }
}
