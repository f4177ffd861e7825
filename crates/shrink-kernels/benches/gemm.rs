//! Every GEMM kernel at the shapes, 1 and 2 threads:
//! `cargo bench -p shrink-kernels --bench gemm [-- FILTER]`.
//! Throughput is in operations (2 per MAC; binary: 1 per binary MAC).
//! The tables in bench/results/kernels.md come from `bench/run_kernels.sh`,
//! which also runs the peers in the same session.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_kernels::bitserial::{self, Planes};
use shrink_kernels::epilogue::{Epilogue, Output};
use shrink_kernels::f32gemm::{self, F32Epilogue};
use shrink_kernels::{bf16gemm, binary, int4, int8};

const SHAPES: [(usize, usize, usize); 5] = [
    (1024, 1024, 1024),
    (256, 4096, 1024),
    (1, 4096, 4096),
    (64, 784, 300),
    (3136, 576, 64),
];

fn gemms(c: &mut Criterion) {
    let mut r = ChaCha8Rng::seed_from_u64(1);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut g = c.benchmark_group(format!("gemm_t{threads}"));
        for &(m, k, n) in &SHAPES {
            let id = format!("{m}x{k}x{n}");
            let macs = (m * k * n) as u64;
            g.throughput(Throughput::Elements(2 * macs));

            let af: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() - 0.5).collect();
            let wf: Vec<f32> = (0..n * k).map(|_| r.gen::<f32>() - 0.5).collect();
            let mut yf = vec![0f32; m * n];
            let p = f32gemm::PackedF32::pack(&wf, n, k).unwrap();
            g.bench_function(BenchmarkId::new("f32", &id), |b| {
                b.iter(|| {
                    pool.install(|| {
                        f32gemm::gemm(&af, m, &p, &F32Epilogue::default(), &mut yf).unwrap()
                    })
                })
            });
            let wb: Vec<half::bf16> = wf.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let p = bf16gemm::PackedBf16::pack(&wb, n, k).unwrap();
            g.bench_function(BenchmarkId::new("bf16", &id), |b| {
                b.iter(|| {
                    pool.install(|| {
                        bf16gemm::gemm(&af, m, &p, &F32Epilogue::default(), &mut yf).unwrap()
                    })
                })
            });

            let a8: Vec<u8> = (0..m * k).map(|_| r.gen()).collect();
            let w8: Vec<i8> = (0..n * k).map(|_| r.gen()).collect();
            let p = int8::PackedI8::pack(&w8, n, k, 0).unwrap();
            let mut yi = vec![0i32; m * n];
            g.bench_function(BenchmarkId::new("int8_i32", &id), |b| {
                b.iter(|| {
                    pool.install(|| {
                        int8::gemm(&a8, m, 3, &p, &Epilogue::default(), Output::I32(&mut yi))
                            .unwrap()
                    })
                })
            });

            let codes: Vec<i8> = (0..n * k).map(|_| r.gen_range(-8..=7)).collect();
            let scales = vec![0.01f32; n * k.div_ceil(128)];
            let p = int4::PackedI4::pack(
                &int4::pack_nibbles(&codes, n, k).unwrap(),
                n,
                k,
                128,
                &scales,
            )
            .unwrap();
            g.bench_function(BenchmarkId::new("int4_g128", &id), |b| {
                b.iter(|| {
                    pool.install(|| {
                        int4::gemm(&a8, m, &p, &int4::Int4Params::default(), &mut yf).unwrap()
                    })
                })
            });

            let ab = binary::pack_signs(&af, m, k).unwrap();
            let p =
                binary::PackedBinary::pack(&binary::pack_signs(&wf, n, k).unwrap(), n, k).unwrap();
            g.throughput(Throughput::Elements(macs));
            g.bench_function(BenchmarkId::new("binary_xnor", &id), |b| {
                b.iter(|| {
                    pool.install(|| {
                        binary::gemm(&ab, m, &p, &Epilogue::default(), Output::I32(&mut yi))
                            .unwrap()
                    })
                })
            });
            g.throughput(Throughput::Elements(2 * macs));
            for (wbits, abits) in [(1u32, 1u32), (2, 2)] {
                let (wp, ap) = (
                    Planes {
                        bits: wbits,
                        signed: true,
                    },
                    Planes {
                        bits: abits,
                        signed: false,
                    },
                );
                let wc: Vec<i32> = (0..n * k)
                    .map(|_| r.gen_range(-(1 << (wbits - 1))..(1 << (wbits - 1)).max(1)))
                    .collect();
                let ac: Vec<i32> = (0..m * k).map(|_| r.gen_range(0..(1 << abits))).collect();
                let p = bitserial::PackedBitSerial::pack(
                    &bitserial::pack_planes(&wc, n, k, wp).unwrap(),
                    n,
                    k,
                    wp,
                )
                .unwrap();
                let a = bitserial::pack_planes(&ac, m, k, ap).unwrap();
                g.bench_function(
                    BenchmarkId::new(format!("bitserial_w{wbits}a{abits}"), &id),
                    |b| {
                        b.iter(|| {
                            pool.install(|| {
                                bitserial::gemm(
                                    &a,
                                    m,
                                    ap,
                                    &p,
                                    &Epilogue::default(),
                                    Output::I32(&mut yi),
                                )
                                .unwrap()
                            })
                        })
                    },
                );
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = gemms
}
criterion_main!(benches);
