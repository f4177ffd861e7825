use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Symbols drawn from a discretised Laplace distribution over `alphabet`
/// (the shape of quantised weights), deterministic by seed.
pub(super) fn laplace_symbols(n: usize, alphabet: u32, scale: f64, seed: u64) -> Vec<u16> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mid = alphabet as f64 / 2.0;
    (0..n)
        .map(|_| {
            let u: f64 = rng.gen::<f64>() - 0.5;
            let x = mid - scale * u.signum() * (1.0 - 2.0 * u.abs()).ln();
            x.clamp(0.0, alphabet as f64 - 1.0) as u16
        })
        .collect()
}

fn check_round_trip_u16(v: &[u16]) {
    let f = encode(v).unwrap();
    assert_eq!(decode::<u16>(&f, v.len()).unwrap(), v);
}

proptest! {
    #[test]
    fn round_trip_u8(v in proptest::collection::vec(prop_oneof![4 => 0u8..4, 1 => any::<u8>()], 0..3000)) {
        let f = encode(&v).unwrap();
        prop_assert_eq!(decode::<u8>(&f, v.len()).unwrap(), v.clone());
        let info = frame_info(&f).unwrap();
        prop_assert_eq!(info.header_bytes + info.payload_bytes, f.len());
        prop_assert_eq!(info.symbols, v.len());
    }

    #[test]
    fn round_trip_u16(v in proptest::collection::vec(prop_oneof![4 => 0u16..30, 1 => 0u16..4096], 0..3000)) {
        check_round_trip_u16(&v);
    }

    #[test]
    fn round_trip_skewed(n in 0usize..5000, alphabet in 2u32..300, scale in 0.05f64..40.0, seed in any::<u64>()) {
        check_round_trip_u16(&laplace_symbols(n, alphabet, scale, seed));
    }

    /// Any damage to a frame is an error, or (where the damaged bit carried
    /// no information) the exact original symbols; never other symbols.
    #[test]
    fn corruption_is_detected(seed in any::<u64>(), n in 1usize..3000, flips in 1usize..4) {
        let v: Vec<u8> = laplace_symbols(n, 64, 6.0, seed).iter().map(|&s| s as u8).collect();
        let f = encode(&v).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5555);
        let mut g = f.clone();
        for _ in 0..flips {
            let i = rng.gen_range(0..g.len());
            g[i] ^= 1 << rng.gen_range(0..8);
        }
        if let Ok(w) = decode::<u8>(&g, n) {
            prop_assert_eq!(w, v);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), n in 0usize..2000) {
        let _ = decode::<u8>(&bytes, n);
        let _ = decode::<u16>(&bytes, n);
        let _ = frame_info(&bytes);
    }
}

#[test]
fn truncation_is_an_error_at_every_length() {
    for (n, alphabet) in [(100usize, 20u32), (5000, 200)] {
        let v: Vec<u8> = laplace_symbols(n, alphabet, 5.0, 7)
            .iter()
            .map(|&s| s as u8)
            .collect();
        let f = encode(&v).unwrap();
        for cut in 0..f.len() {
            assert!(
                decode::<u8>(&f[..cut], n).is_err(),
                "cut at {cut} of {}",
                f.len()
            );
        }
        let mut longer = f.clone();
        longer.push(0);
        assert!(decode::<u8>(&longer, n).is_err(), "trailing byte");
        assert!(decode::<u8>(&f, n + 1).is_err(), "wrong count");
        assert!(decode::<u16>(&f, n).is_err(), "wrong width");
    }
}

#[test]
fn edge_cases() {
    check_round_trip_u16(&[]);
    check_round_trip_u16(&[7]);
    check_round_trip_u16(&[3; 10000]);
    check_round_trip_u16(&[0, 4095]);
    let two: Vec<u16> = (0..1000).map(|i| (i % 2) as u16).collect();
    check_round_trip_u16(&two);
    // a single-symbol frame is a few bytes whatever n is
    assert!(encode(&[3u16; 10000]).unwrap().len() < 10);
    // tiny or flat streams fall back to raw codes, never worse than fixed width
    for v in [
        vec![1u16, 2, 3, 0, 5, 6, 7, 4],
        (0..1024u16).collect::<Vec<_>>(),
    ] {
        let f = encode(&v).unwrap();
        let info = frame_info(&f).unwrap();
        assert_eq!(
            info.payload_bytes,
            (v.len() * (if v.len() == 8 { 3 } else { 10 })).div_ceil(8)
        );
        check_round_trip_u16(&v);
    }
    assert!(encode(&[4096u16]).is_err());
    // more than 2048 used symbols force 12-bit codes
    let all: Vec<u16> = (0..3000u16).chain(std::iter::repeat_n(0, 3000)).collect();
    let f = encode(&all).unwrap();
    assert_eq!(frame_info(&f).unwrap().max_len, 12);
    check_round_trip_u16(&all);
    // a skewed alphabet that hits the 11-bit limit round-trips through the tables
    let mut fib = vec![1u64, 1];
    for i in 2..24 {
        fib.push(fib[i - 1] + fib[i - 2]);
    }
    let mut v = Vec::new();
    for (s, &c) in fib.iter().enumerate() {
        v.extend(std::iter::repeat_n(s as u16, c as usize));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for i in (1..v.len()).rev() {
        v.swap(i, rng.gen_range(0..=i));
    }
    let f = encode(&v).unwrap();
    assert_eq!(frame_info(&f).unwrap().max_len, 11);
    check_round_trip_u16(&v);
}

/// Coded payload within 2% of the order-0 entropy on weight-like streams
/// (the bound the storage issue sets); plain Huffman redundancy is below
/// p_max + 0.086 bits/symbol, small for these alphabets.
#[test]
fn coded_size_is_near_entropy() {
    for (alphabet, scale) in [(32u32, 4.0), (256, 20.0), (64, 12.0), (1024, 100.0)] {
        let v = laplace_symbols(200_000, alphabet, scale, 3);
        let h = entropy_bits(&histogram(&v));
        let f = encode(&v).unwrap();
        let info = frame_info(&f).unwrap();
        let coded = 8.0 * info.payload_bytes as f64;
        assert!(
            coded <= 1.02 * h,
            "alphabet {alphabet}: {coded} bits coded vs {h:.0} bits of entropy"
        );
        assert!(coded >= h, "below entropy is impossible");
    }
}

#[test]
fn entropy_of_known_distributions() {
    assert_eq!(entropy_bits(&[5, 5]), 10.0);
    assert_eq!(entropy_bits(&[1, 1, 1, 1]), 8.0);
    assert_eq!(entropy_bits(&[7]), 0.0);
    assert_eq!(histogram(&[2u8, 2, 0]), vec![1, 0, 2]);
}

/// Every decode path on one frame: the fast loops (BMI2 where the CPU has
/// it, and portable), the 11-bit-table variant, and the scalar reference
/// loop must give the same symbols, and the same verdict on damaged frames.
fn all_paths_agree<S: Symbol + std::fmt::Debug + PartialEq>(
    frame: &[u8],
    n: usize,
) -> Option<Vec<S>> {
    use decode::{decode_into_with, Path};
    let mut results = Vec::new();
    for path in [Path::Scalar, Path::Fast, Path::Portable, Path::Fast11] {
        let mut out = vec![S::default(); n];
        let r = decode_into_with(frame, &mut out, path).map(|()| out);
        results.push((path, r));
    }
    let (_, reference) = &results[0];
    for (path, r) in &results[1..] {
        match (reference, r) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{path:?} disagrees with the scalar loop"),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{path:?}: {:?} vs scalar {:?}",
                r.as_ref().err(),
                reference.as_ref().err()
            ),
        }
    }
    results.swap_remove(0).1.ok()
}

proptest! {
    /// Random alphabets and skews through every path, u8 and u16, lengths
    /// that are not multiples of 4 (unequal quarters, short last stream).
    #[test]
    fn fast_paths_match_scalar(n in 0usize..6000, alphabet in 1u32..300, scale in 0.05f64..60.0, seed in any::<u64>()) {
        let v16 = laplace_symbols(n, alphabet, scale, seed);
        let f16 = encode(&v16).unwrap();
        prop_assert_eq!(all_paths_agree::<u16>(&f16, n), Some(v16.clone()));
        let v8: Vec<u8> = v16.iter().map(|&s| s.min(255) as u8).collect();
        let f8 = encode(&v8).unwrap();
        prop_assert_eq!(all_paths_agree::<u8>(&f8, n), Some(v8));
    }

    /// Wide u16 alphabets (12-bit codes, 64-bit table entries).
    #[test]
    fn fast_paths_match_scalar_wide(n in 0usize..20000, scale in 50f64..2000.0, seed in any::<u64>()) {
        let v = laplace_symbols(n, 4096, scale, seed);
        let f = encode(&v).unwrap();
        prop_assert_eq!(all_paths_agree::<u16>(&f, n), Some(v));
    }

    /// Damage: every path rejects it or (where the damaged bit carried no
    /// information) returns the original — and they agree with each other.
    #[test]
    fn fast_paths_reject_corruption(seed in any::<u64>(), n in 1usize..5000, flips in 1usize..4, cut in 0usize..16) {
        let v: Vec<u8> = laplace_symbols(n, 40, 3.0, seed).iter().map(|&s| s as u8).collect();
        let f = encode(&v).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa5a5);
        let mut g = f.clone();
        for _ in 0..flips {
            let i = rng.gen_range(0..g.len());
            g[i] ^= 1 << rng.gen_range(0..8);
        }
        if let Some(w) = all_paths_agree::<u8>(&g, n) {
            prop_assert_eq!(&w, &v);
        }
        g.truncate(g.len().saturating_sub(cut));
        if let Some(w) = all_paths_agree::<u8>(&g, n) {
            prop_assert_eq!(&w, &v);
        }
    }
}

/// Streams whose quarters code at very different rates (one all-short
/// codes, one all-long): the 4-lane loop stops on the fast quarter and the
/// others finish in the 1-lane loop, then the checked loop.
#[test]
fn unequal_quarters_round_trip() {
    let n = 40_001;
    let mut v: Vec<u8> = Vec::with_capacity(n);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for i in 0..n {
        v.push(match i * 4 / n {
            0 => 0,
            1 => rng.gen_range(0..200),
            2 => rng.gen_range(0..3),
            _ => 255 - rng.gen_range(0..30u8),
        });
    }
    let f = encode(&v).unwrap();
    assert_eq!(frame_info(&f).unwrap().streams, 4);
    assert_eq!(all_paths_agree::<u8>(&f, n), Some(v));
}

/// The longest codes the format allows (12 bits, forced by > 2048 used
/// symbols) and a 1-bit code (one symbol ~ always): table entries at both
/// extremes (1 and 3 symbols per lookup).
#[test]
fn extreme_code_lengths_round_trip() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let wide: Vec<u16> = (0..30_000)
        .map(|i| {
            if i % 2 == 0 {
                rng.gen_range(0..4096)
            } else {
                7
            }
        })
        .collect();
    let f = encode(&wide).unwrap();
    assert_eq!(frame_info(&f).unwrap().max_len, 12);
    assert_eq!(all_paths_agree::<u16>(&f, wide.len()), Some(wide));
    let skew: Vec<u8> = (0..30_003)
        .map(|_| {
            if rng.gen_bool(0.97) {
                9
            } else {
                rng.gen_range(0..16)
            }
        })
        .collect();
    let f = encode(&skew).unwrap();
    assert_eq!(all_paths_agree::<u8>(&f, skew.len()), Some(skew));
}
