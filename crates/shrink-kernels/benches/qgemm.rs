//! The u8×s8 int8 GEMM at LeNet-300-100's layers (the int8 speed acceptance
//! of issue #6), 1 thread, requantised u8 output as the runtime's QGemm
//! writes it, plus the input QuantizeLinear that precedes the first layer:
//! `cargo bench -p shrink-kernels --bench qgemm`.
//! Throughput is in operations (2 per MAC; elements for quantize).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_kernels::epilogue::{Epilogue, Output};
use shrink_kernels::int8;

/// `(M, K, N)`: the three layers 784→300→100→10 at batch 1 and 256.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 784, 300),
    (1, 300, 100),
    (1, 100, 10),
    (256, 784, 300),
    (256, 300, 100),
    (256, 100, 10),
];

fn qgemm(c: &mut Criterion) {
    let mut r = ChaCha8Rng::seed_from_u64(6);
    // One global worker: a one-thread GEMM then runs inline on the calling
    // thread, as in a one-thread session (a separate pool's `install` would
    // add a thread hand-off of a few µs to every call, more than the GEMV).
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("the bench sets up rayon's global pool first");
    let mut g = c.benchmark_group("qgemm_t1");
    for &(m, k, n) in &SHAPES {
        let a: Vec<u8> = (0..m * k).map(|_| r.gen()).collect();
        let w: Vec<i8> = (0..n * k).map(|_| r.gen()).collect();
        let bias: Vec<i32> = (0..n).map(|_| r.gen_range(-5000..5000)).collect();
        let scale: Vec<f32> = (0..n).map(|_| r.gen_range(1e-4f32..1e-3)).collect();
        let p = int8::PackedI8::pack(&w, n, k, 0).unwrap();
        let ep = Epilogue::scaled(&scale).relu().out_zero(0);
        let mut y = vec![0u8; m * n];
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        g.bench_function(BenchmarkId::new("u8", format!("{m}x{k}x{n}")), |b| {
            b.iter(|| int8::gemm_bias(&a, m, 3, &p, Some(&bias), &ep, Output::U8(&mut y)).unwrap())
        });
    }
    // fc1 on image-like rows (a random ellipse of nonzero pixels in a 28×28
    // frame, about half the pixels zero as in Fashion-MNIST): the dense
    // kernel against the zero-quad walk on the same data.
    {
        let (m, k, n) = (256, 784, 300);
        let a: Vec<u8> = (0..m)
            .flat_map(|_| {
                let (ry, rx) = (r.gen_range(8.0f32..14.0), r.gen_range(5.0f32..14.0));
                let px: Vec<u8> = (0..k)
                    .map(|i| {
                        let (y, x) = ((i / 28) as f32 - 13.5, (i % 28) as f32 - 13.5);
                        let inside = (y / ry).powi(2) + (x / rx).powi(2) <= 1.0;
                        if inside {
                            r.gen_range(1..=255)
                        } else {
                            0
                        }
                    })
                    .collect();
                px
            })
            .collect();
        let w: Vec<i8> = (0..n * k).map(|_| r.gen()).collect();
        let scale: Vec<f32> = (0..n).map(|_| r.gen_range(1e-4f32..1e-3)).collect();
        let p = int8::PackedI8::pack(&w, n, k, 0).unwrap();
        let ep = Epilogue::scaled(&scale).relu().out_zero(0);
        let mut y = vec![0u8; m * n];
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let isa = shrink_kernels::cpu::best();
        for (route, max_kept) in [("dense", -1.0f32), ("skip", int8::SKIP_MAX_KEPT)] {
            let id = BenchmarkId::new(format!("images_{route}"), format!("{m}x{k}x{n}"));
            g.bench_function(id, |b| {
                b.iter(|| {
                    int8::gemm_bias_skip_with(
                        isa,
                        max_kept,
                        &a,
                        m,
                        0,
                        &p,
                        None,
                        &ep,
                        Output::U8(&mut y),
                    )
                    .unwrap()
                })
            });
        }
    }
    // The input quantiser of LeNet-300-100 at batch 256 (1 MB in and out:
    // L2-sized) and at batch 8 (in L1: the arithmetic alone).
    for rows in [256, 8] {
        let x: Vec<f32> = (0..rows * 784).map(|_| r.gen::<f32>()).collect();
        let mut q = vec![0u8; x.len()];
        g.throughput(Throughput::Elements(x.len() as u64));
        g.bench_function(format!("quantize_{rows}x784"), |b| {
            b.iter(|| int8::elementwise::quantize(&x, 1.0 / 255.0, 0, 0, 255, &mut q).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = qgemm
}
criterion_main!(benches);
