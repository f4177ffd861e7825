//! The channels-last kernels at MobileNetV2-tiny's shapes against the NCHW
//! kernels they replace (batch 1, one thread):
//! `cargo bench -p shrink-kernels --bench nhwc [-- FILTER]`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_kernels::dwconv::{self, Dw3x3, DwEpilogue};
use shrink_kernels::f32gemm::{self, F32Epilogue};
use shrink_kernels::nhwc::{self, DwWeights, PwWeights};

fn rnd(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.gen::<f32>() - 0.5).collect()
}

/// Depthwise 3×3 layers: (channels, plane, stride).
const DW: [(usize, usize, usize); 5] = [
    (16, 28, 1),
    (64, 28, 2),
    (96, 14, 1),
    (128, 7, 1),
    (256, 4, 1),
];

/// 1×1 layers: (out channels, in channels, plane).
const PW: [(usize, usize, usize); 5] = [
    (64, 16, 28),
    (24, 64, 14),
    (96, 24, 14),
    (128, 32, 7),
    (64, 256, 4),
];

fn depthwise(c: &mut Criterion) {
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("dw3x3");
    for &(ch, hw, stride) in &DW {
        let s = Dw3x3 {
            h: hw,
            w: hw,
            stride,
            pad: (1, 1, 1, 1),
        };
        let (oh, ow) = s.out_hw();
        g.throughput(Throughput::Elements((9 * ch * oh * ow) as u64));
        let id = format!("c{ch}_{hw}x{hw}_s{stride}");
        let x = rnd(&mut r, ch * hw * hw);
        let w = rnd(&mut r, ch * 9);
        let mut y = vec![0f32; ch * oh * ow];
        g.bench_function(BenchmarkId::new("nchw_planes", &id), |b| {
            b.iter(|| {
                for (i, yp) in y.chunks_mut(oh * ow).enumerate() {
                    let xp = &x[i * hw * hw..(i + 1) * hw * hw];
                    let ep = DwEpilogue::default();
                    dwconv::plane(&s, xp, &w[i * 9..i * 9 + 9], ep, yp).unwrap();
                }
            })
        });
        let p = DwWeights::new(ch, &w, None).unwrap();
        g.bench_function(BenchmarkId::new("nhwc", &id), |b| {
            b.iter(|| nhwc::depthwise(&s, 1, &p, 0.0, 6.0, &x, &mut y).unwrap())
        });
    }
}

fn pointwise(c: &mut Criterion) {
    let mut r = ChaCha8Rng::seed_from_u64(2);
    let mut g = c.benchmark_group("conv1x1");
    for &(m, k, hw) in &PW {
        let n = hw * hw;
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let id = format!("{m}x{k}_{hw}x{hw}");
        let x = rnd(&mut r, k * n);
        let w = rnd(&mut r, m * k);
        let mut y = vec![0f32; m * n];
        let ep = F32Epilogue::default();
        g.bench_function(BenchmarkId::new("nchw_gemm", &id), |b| {
            b.iter(|| {
                f32gemm::gemm_unpacked_b(&w, m, &x, k, n, &ep, &mut y, false).unwrap();
            })
        });
        let p = PwWeights::new(m, k, &w, None).unwrap();
        g.bench_function(BenchmarkId::new("nhwc", &id), |b| {
            b.iter(|| nhwc::pointwise(&p, n, &x, None, 0.0, 6.0, &mut y).unwrap())
        });
    }
}

criterion_group!(benches, depthwise, pointwise);
criterion_main!(benches);
