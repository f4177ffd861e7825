//! Optimal length-limited code lengths (package-merge) and canonical codes.
//!
//! Package-merge (Larmore & Hirschberg 1990) gives the lengths of the best
//! prefix code whose longest code is at most `max_len` bits — plain Huffman
//! where the limit does not bind. The limit is what lets the decoder resolve
//! every code with one lookup in a `2^max_len` table.

/// Longest code the decoder tables support (a 4096-entry table, 16 KiB).
pub const MAX_CODE_LEN: u32 = 12;

/// Lengths (0 = unused symbol) of an optimal prefix code for `freqs` with no
/// code longer than `max_len`. One used symbol gets length 1.
///
/// Panics never; returns `None` when `2^max_len` codes cannot cover the used
/// symbols.
pub fn limited_lengths(freqs: &[u64], max_len: u32) -> Option<Vec<u8>> {
    let mut used: Vec<(u64, usize)> = freqs
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0)
        .map(|(s, &f)| (f, s))
        .collect();
    let mut lengths = vec![0u8; freqs.len()];
    match used.len() {
        0 => return Some(lengths),
        1 => {
            lengths[used[0].1] = 1;
            return Some(lengths);
        }
        n if max_len >= 64 || n as u128 > 1u128 << max_len => return None,
        _ => {}
    }
    used.sort_unstable();
    let n = used.len();
    let leaves: Vec<u64> = used.iter().map(|&(f, _)| f).collect();
    // lists[d] for depth d = max_len-1 … 0: per item, whether it is a leaf.
    let depth = max_len as usize;
    let mut is_leaf: Vec<Vec<bool>> = vec![Vec::new(); depth];
    let mut prev: Vec<u64> = leaves.clone();
    is_leaf[depth - 1] = vec![true; n];
    for d in (0..depth - 1).rev() {
        let packages: Vec<u64> = prev.chunks_exact(2).map(|p| p[0] + p[1]).collect();
        let mut merged = Vec::with_capacity(n + packages.len());
        let mut flags = Vec::with_capacity(n + packages.len());
        let (mut i, mut j) = (0, 0);
        while i < n || j < packages.len() {
            if j >= packages.len() || (i < n && leaves[i] <= packages[j]) {
                merged.push(leaves[i]);
                flags.push(true);
                i += 1;
            } else {
                merged.push(packages[j]);
                flags.push(false);
                j += 1;
            }
        }
        is_leaf[d] = flags;
        prev = merged;
    }
    // Take the 2n−2 cheapest items at the top; each package taken at depth d
    // stands for two items at depth d+1. Leaves taken form a prefix of the
    // sorted leaves, so a leaf's length = number of depths whose prefix holds it.
    let mut need = 2 * n - 2;
    let mut depth_len = vec![0u8; n];
    for flags in is_leaf.iter() {
        let take = need.min(flags.len());
        let leaves_taken = flags[..take].iter().filter(|&&l| l).count();
        for l in depth_len.iter_mut().take(leaves_taken) {
            *l += 1;
        }
        need = 2 * (take - leaves_taken);
    }
    for (i, &(_, s)) in used.iter().enumerate() {
        lengths[s] = depth_len[i];
    }
    Some(lengths)
}

/// Canonical codes for `lengths`, MSB-first (the DEFLATE convention): codes
/// of equal length are consecutive in symbol order, shorter codes first.
/// Returns `None` when the lengths over-subscribe the code space (Kraft sum > 1).
pub fn canonical_codes(lengths: &[u8]) -> Option<Vec<u32>> {
    let max = *lengths.iter().max().unwrap_or(&0) as usize;
    let mut count = vec![0u32; max + 1];
    for &l in lengths {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = vec![0u32; max + 2];
    let mut code = 0u32;
    for len in 1..=max {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
        if (code as u64 + count[len] as u64) > (1u64 << len) {
            return None;
        }
    }
    Some(
        lengths
            .iter()
            .map(|&l| {
                if l == 0 {
                    0
                } else {
                    let c = next[l as usize];
                    next[l as usize] += 1;
                    c
                }
            })
            .collect(),
    )
}

/// Kraft sum `Σ 2^(max − len)` over used symbols, in units of `2^-max`.
pub fn kraft_units(lengths: &[u8], max: u32) -> u64 {
    lengths
        .iter()
        .filter(|&&l| l > 0)
        .map(|&l| 1u64 << (max - l as u32))
        .sum()
}

/// `code` (MSB-first, `len` bits) with its bits reversed: the LSB-first
/// bit stream then yields the first code bit first.
pub fn reverse_bits(code: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        code.reverse_bits() >> (32 - len as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Plain Huffman cost by the textbook two-smallest merge (no limit).
    fn huffman_cost(freqs: &[u64]) -> u64 {
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<u64>> = freqs
            .iter()
            .filter(|&&f| f > 0)
            .map(|&f| std::cmp::Reverse(f))
            .collect();
        if heap.len() < 2 {
            return freqs.iter().sum();
        }
        let mut cost = 0;
        while heap.len() > 1 {
            let a = heap.pop().unwrap().0;
            let b = heap.pop().unwrap().0;
            cost += a + b;
            heap.push(std::cmp::Reverse(a + b));
        }
        cost
    }

    fn cost(freqs: &[u64], lengths: &[u8]) -> u64 {
        freqs.iter().zip(lengths).map(|(&f, &l)| f * l as u64).sum()
    }

    /// Exhaustive optimum over all length vectors for tiny alphabets.
    fn brute_best(freqs: &[u64], max_len: u32) -> u64 {
        let used: Vec<u64> = freqs.iter().copied().filter(|&f| f > 0).collect();
        let mut best = u64::MAX;
        let k = used.len();
        let mut ls = vec![1u32; k];
        loop {
            let kraft: u64 = ls.iter().map(|&l| 1u64 << (max_len - l)).sum();
            if kraft <= 1 << max_len {
                best = best.min(used.iter().zip(&ls).map(|(&f, &l)| f * l as u64).sum());
            }
            let mut i = 0;
            while i < k {
                ls[i] += 1;
                if ls[i] <= max_len {
                    break;
                }
                ls[i] = 1;
                i += 1;
            }
            if i == k {
                return best;
            }
        }
    }

    proptest! {
        #[test]
        fn unlimited_equals_huffman(freqs in proptest::collection::vec(0u64..1000, 2..60)) {
            prop_assume!(freqs.iter().filter(|&&f| f > 0).count() >= 2);
            let l = limited_lengths(&freqs, 30).unwrap();
            prop_assert_eq!(cost(&freqs, &l), huffman_cost(&freqs));
            prop_assert_eq!(kraft_units(&l, 30), 1 << 30, "complete code");
        }

        #[test]
        fn limited_is_optimal_and_within_limit(freqs in proptest::collection::vec(0u64..5000, 2..7), max_len in 3u32..6) {
            let used = freqs.iter().filter(|&&f| f > 0).count();
            prop_assume!(used >= 2 && used <= 1 << max_len);
            let l = limited_lengths(&freqs, max_len).unwrap();
            prop_assert!(l.iter().all(|&x| x as u32 <= max_len));
            prop_assert!(kraft_units(&l, max_len) <= 1 << max_len);
            prop_assert_eq!(cost(&freqs, &l), brute_best(&freqs, max_len));
        }

        #[test]
        fn canonical_codes_are_prefix_free(freqs in proptest::collection::vec(0u64..100, 2..40)) {
            prop_assume!(freqs.iter().filter(|&&f| f > 0).count() >= 2);
            let l = limited_lengths(&freqs, 12).unwrap();
            let c = canonical_codes(&l).unwrap();
            for i in 0..l.len() {
                for j in 0..l.len() {
                    if i != j && l[i] > 0 && l[j] > 0 && l[i] <= l[j] {
                        prop_assert_ne!(c[j] >> (l[j] - l[i]), c[i], "{} is a prefix of {}", i, j);
                    }
                }
            }
        }
    }

    #[test]
    fn skewed_distribution_hits_the_limit() {
        // Fibonacci frequencies make plain Huffman codes as deep as possible.
        let mut f = vec![1u64, 1];
        for i in 2..20 {
            f.push(f[i - 1] + f[i - 2]);
        }
        assert!(limited_lengths(&f, 30).unwrap().iter().any(|&l| l > 12));
        let l = limited_lengths(&f, 12).unwrap();
        assert_eq!(*l.iter().max().unwrap(), 12);
        assert_eq!(kraft_units(&l, 12), 1 << 12);
        assert!(limited_lengths(&[1; 9], 3).is_none());
        assert!(canonical_codes(&[1, 1, 1]).is_none(), "over-subscribed");
    }
}
