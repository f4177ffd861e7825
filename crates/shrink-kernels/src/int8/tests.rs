use super::*;
use crate::cpu;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Runs every available path with every output kind and compares to the
/// reference followed by the scalar epilogue.
#[allow(clippy::too_many_arguments)]
fn check_all(a: &[u8], m: usize, k: usize, za: u8, w: &[i8], n: usize, zw: i8, relu: bool) {
    let expect = reference(a, m, k, za, w, n, zw);
    let packed = PackedI8::pack(w, n, k, zw).unwrap();
    let scale: Vec<f32> = (0..n).map(|j| 0.001 + 0.0007 * (j % 13) as f32).collect();
    let bias: Vec<f32> = (0..n).map(|j| (j as f32 - 7.5) * 0.37).collect();
    let mut ep = Epilogue::scaled(&scale).with_bias(&bias).out_zero(3);
    if relu {
        ep = ep.relu();
    }
    for isa in cpu::available() {
        let mut y = vec![0i32; m * n];
        gemm_with(isa, a, m, za, &packed, &ep, Output::I32(&mut y)).unwrap();
        assert_eq!(y, expect, "{isa:?} i32 m={m} k={k} n={n}");
        let mut f = vec![0f32; m * n];
        gemm_with(isa, a, m, za, &packed, &ep, Output::F32(&mut f)).unwrap();
        let mut u = vec![0u8; m * n];
        gemm_with(isa, a, m, za, &packed, &ep, Output::U8(&mut u)).unwrap();
        let mut s = vec![0i8; m * n];
        gemm_with(isa, a, m, za, &packed, &ep, Output::I8(&mut s)).unwrap();
        for (idx, &acc) in expect.iter().enumerate() {
            let j = idx % n;
            assert_eq!(
                f[idx].to_bits(),
                ep.float(acc, j).to_bits(),
                "{isa:?} f32 at {idx}"
            );
            assert_eq!(
                u[idx] as i32,
                ep.quant(acc, j, 0, 255),
                "{isa:?} u8 at {idx}"
            );
            assert_eq!(
                s[idx] as i32,
                ep.quant(acc, j, -128, 127),
                "{isa:?} i8 at {idx}"
            );
        }
    }
}

fn random(m: usize, k: usize, n: usize, seed: u64) -> (Vec<u8>, Vec<i8>) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let a = (0..m * k).map(|_| r.gen()).collect();
    let w = (0..n * k).map(|_| r.gen()).collect();
    (a, w)
}

#[test]
fn edge_shapes_all_paths() {
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 3, 5),
        (2, 4, 16),
        (7, 5, 31),
        (8, 64, 32),
        (9, 17, 33),
        (13, 67, 65),
        (17, 130, 100),
        (3, 257, 64),
        (1, 1000, 77),
        // LeNet-300-100's layers: 16-column tail panels (300 = 9·32 + 12,
        // 100 = 3·32 + 4, 10) take the one-register path.
        (1, 784, 300),
        (37, 300, 100),
        (19, 100, 10),
        (11, 6, 16),
        (2, 8, 48),
    ] {
        let (a, w) = random(m, k, n, (m * 1000 + k * 10 + n) as u64);
        check_all(&a, m, k, 0, &w, n, 0, false);
        check_all(&a, m, k, 128, &w, n, 0, true);
        check_all(&a, m, k, 7, &w, n, -3, false);
    }
}

#[test]
fn extreme_values_do_not_saturate() {
    // 255 × -128 products summed in pairs would saturate vpmaddubsw's i16.
    for &(a_val, w_val) in &[(255u8, -128i8), (255, 127), (0, -128), (255, 0)] {
        for &(m, k, n) in &[(3, 1024, 40), (9, 1023, 33), (1, 4099, 17)] {
            let a = vec![a_val; m * k];
            let w = vec![w_val; n * k];
            check_all(&a, m, k, 0, &w, n, 0, false);
            check_all(&a, m, k, 255, &w, n, 127, false);
            check_all(&a, m, k, 0, &w, n, -128, true);
        }
    }
}

#[test]
fn threaded_matches_single() {
    let (m, k, n) = (70, 96, 200);
    let (a, w) = random(m, k, n, 42);
    let packed = PackedI8::pack(&w, n, k, 0).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut y = vec![0i32; m * n];
    pool.install(|| gemm(&a, m, 5, &packed, &Epilogue::default(), Output::I32(&mut y)).unwrap());
    assert_eq!(y, reference(&a, m, k, 5, &w, n, 0));
}

#[test]
fn bad_lengths_are_errors() {
    assert!(PackedI8::pack(&[1, 2, 3], 2, 2, 0).is_err());
    let p = PackedI8::pack(&[1, 2, 3, 4], 2, 2, 0).unwrap();
    let mut y = vec![0i32; 4];
    let e = gemm(
        &[1, 2, 3],
        2,
        0,
        &p,
        &Epilogue::default(),
        Output::I32(&mut y),
    );
    assert!(matches!(e, Err(crate::KernelError::Length { .. })));
    let scale = [1.0f32; 3];
    let e = gemm(
        &[1, 2, 3, 4],
        2,
        0,
        &p,
        &Epilogue::scaled(&scale),
        Output::F32(&mut [0.0; 4]),
    );
    assert!(e.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The zero-quad walk (forced) against the reference on random shapes,
    /// zero points and densities, with the default pool's threads.
    #[test]
    fn zero_skip_random_shapes_bit_exact(m in 8usize..70, k in 1usize..300, n in 1usize..70,
                                         za in any::<u8>(), zw in any::<i8>(),
                                         zeros in 0.0f64..1.0, seed in any::<u64>()) {
        if cpu::available().contains(&Isa::Avx512) {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            let a: Vec<u8> = (0..m * k)
                .map(|_| if r.gen::<f64>() < zeros { 0 } else { r.gen() })
                .collect();
            let w: Vec<i8> = (0..n * k).map(|_| r.gen()).collect();
            let packed = PackedI8::pack(&w, n, k, zw).unwrap();
            let mut y = vec![0i32; m * n];
            let route = gemm_bias_skip_with(Isa::Avx512, 1.0, &a, m, za, &packed, None,
                                            &Epilogue::default(), Output::I32(&mut y)).unwrap();
            let walked = matches!(route, Route::SkipZeroQuads { .. });
            prop_assert!(walked, "route {:?}", route);
            prop_assert_eq!(y, reference(&a, m, k, za, &w, n, zw));
        }
    }

    #[test]
    fn random_shapes_bit_exact(m in 1usize..20, k in 1usize..150, n in 1usize..80,
                               za in any::<u8>(), zw in any::<i8>(), seed in any::<u64>()) {
        let (a, w) = random(m, k, n, seed);
        check_all(&a, m, k, za, &w, n, zw, seed % 2 == 0);
    }
}

/// The zero-quad walk equals the reference (and so the dense kernel) on
/// sparse activations of every density, odd K (a partial last quad), narrow
/// last panels, all-zero and all-dense rows, both zero points and every
/// output kind; and the route is what the data and threshold call for.
#[test]
fn zero_skip_equals_reference() {
    if !cpu::available().contains(&Isa::Avx512) {
        return;
    }
    let mut r = ChaCha8Rng::seed_from_u64(77);
    // One thread walks one block of all rows; three walk twelve blocks.
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            for &(m, k, n) in &[
                (8, 4, 1),
                (80, 40, 20),
                (9, 5, 17),
                (17, 63, 33),
                (33, 130, 300),
                (64, 784, 100),
                (13, 1029, 48),
            ] {
                for &zeros in &[0.0f32, 0.6, 0.95, 1.0] {
                    let mut a: Vec<u8> = (0..m * k)
                        .map(|_| if r.gen::<f32>() < zeros { 0 } else { r.gen() })
                        .collect();
                    // One all-zero row and one all-dense row.
                    a[..k].fill(0);
                    a[(m - 1) * k..].fill(255);
                    let w: Vec<i8> = (0..n * k).map(|_| r.gen()).collect();
                    for &(za, zw) in &[(0u8, 0i8), (3, -2)] {
                        let expect = reference(&a, m, k, za, &w, n, zw);
                        let packed = PackedI8::pack(&w, n, k, zw).unwrap();
                        let scale: Vec<f32> =
                            (0..n).map(|j| 0.002 + 0.0003 * (j % 7) as f32).collect();
                        let bias: Vec<i32> = (0..n).map(|j| j as i32 * 37 - 500).collect();
                        let ep = Epilogue::scaled(&scale).out_zero(5);
                        let mut y = vec![0i32; m * n];
                        let route = gemm_bias_skip_with(
                            Isa::Avx512,
                            1.0,
                            &a,
                            m,
                            za,
                            &packed,
                            None,
                            &ep,
                            Output::I32(&mut y),
                        )
                        .unwrap();
                        assert!(matches!(route, Route::SkipZeroQuads { .. }));
                        assert_eq!(y, expect, "i32 m={m} k={k} n={n} zeros={zeros}");
                        let mut u = vec![0u8; m * n];
                        gemm_bias_skip_with(
                            Isa::Avx512,
                            1.0,
                            &a,
                            m,
                            za,
                            &packed,
                            Some(&bias),
                            &ep,
                            Output::U8(&mut u),
                        )
                        .unwrap();
                        let mut dense = vec![0u8; m * n];
                        let route = gemm_bias_skip_with(
                            Isa::Avx512,
                            -1.0,
                            &a,
                            m,
                            za,
                            &packed,
                            Some(&bias),
                            &ep,
                            Output::U8(&mut dense),
                        )
                        .unwrap();
                        assert_eq!(route, Route::Dense);
                        assert_eq!(u, dense, "u8 m={m} k={k} n={n} zeros={zeros}");
                        for (idx, &acc) in expect.iter().enumerate() {
                            let j = idx % n;
                            let acc = acc.wrapping_add(bias[j]);
                            assert_eq!(u[idx] as i32, ep.quant(acc, j, 0, 255), "u8 at {idx}");
                        }
                    }
                }
            }
        });
    }
    // The default threshold: image-like rows (62% of quads kept) skip,
    // dense rows do not, and fewer than SKIP_MIN_ROWS rows never do.
    let (k, n) = (784, 32);
    let w: Vec<i8> = (0..n * k).map(|_| r.gen()).collect();
    let packed = PackedI8::pack(&w, n, k, 0).unwrap();
    let ep = Epilogue::default();
    let sparse: Vec<u8> = (0..16 * k)
        .map(|i| if (i / 4) % 8 < 5 { 0 } else { 9 })
        .collect();
    let mut y = vec![0i32; 16 * n];
    let route = gemm_bias(&sparse, 16, 0, &packed, None, &ep, Output::I32(&mut y)).unwrap();
    assert!(
        matches!(route, Route::SkipZeroQuads { kept } if (kept - 0.375).abs() < 1e-6),
        "{route:?}"
    );
    let dense = vec![9u8; 16 * k];
    let route = gemm_bias(&dense, 16, 0, &packed, None, &ep, Output::I32(&mut y)).unwrap();
    assert_eq!(route, Route::Dense);
    // Sparse first rows pass the probe, but the block's pairs keep too
    // much: the block runs dense (once), and the result is exact.
    let mut mixed = vec![9u8; 64 * k];
    mixed[..8 * k].copy_from_slice(&sparse[..8 * k]);
    let mut ym = vec![0i32; 64 * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let route = pool
        .install(|| gemm_bias(&mixed, 64, 0, &packed, None, &ep, Output::I32(&mut ym)))
        .unwrap();
    assert_eq!(route, Route::Dense);
    assert_eq!(ym, reference(&mixed, 64, k, 0, &w, n, 0));
    let route = gemm_bias(
        &sparse[..4 * k],
        4,
        0,
        &packed,
        None,
        &ep,
        Output::I32(&mut y[..4 * n]),
    )
    .unwrap();
    assert_eq!(route, Route::Dense);
}
