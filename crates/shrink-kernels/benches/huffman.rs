//! Huffman encode/decode throughput (symbols/s) on weight-like streams.
//!
//! `cargo bench -p shrink-kernels --bench huffman`
//!
//! Streams: 8-bit weight codes (discretised Laplace, the shape of int8
//! per-channel weights: ~6 bits of entropy), 5-bit codebook indices, and
//! relative-index gaps of a 90%-sparse tensor (geometric). Each prints its
//! order-0 entropy and coded size once, so the size claim sits next to the
//! speed claim.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_kernels::huffman;
use std::hint::black_box;

fn laplace(n: usize, alphabet: u32, scale: f64, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mid = alphabet as f64 / 2.0;
    (0..n)
        .map(|_| {
            let u: f64 = rng.gen::<f64>() - 0.5;
            let x = mid - scale * u.signum() * (1.0 - 2.0 * u.abs()).ln();
            x.clamp(0.0, alphabet as f64 - 1.0) as u8
        })
        .collect()
}

fn gaps(n: usize, density: f64, max_gap: u32, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut g = 0u32;
            while g < max_gap && rng.gen::<f64>() > density {
                g += 1;
            }
            g as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let n = 1 << 20;
    let streams = [
        ("int8-weights", laplace(n, 256, 12.0, 1)),
        ("codebook-5bit", laplace(n, 32, 3.0, 2)),
        ("gaps-90pct", gaps(n, 0.1, 31, 3)),
    ];
    let mut g = c.benchmark_group("huffman");
    g.throughput(Throughput::Elements(n as u64));
    for (name, v) in &streams {
        let frame = huffman::encode(v).expect("encode");
        let info = huffman::frame_info(&frame).expect("info");
        let h = huffman::entropy_bits(&huffman::histogram(v));
        eprintln!(
            "{name}: entropy {:.4} bits/sym, coded {:.4} bits/sym (+{:.2}%), frame {} B (header {} B)",
            h / n as f64,
            8.0 * info.payload_bytes as f64 / n as f64,
            100.0 * (8.0 * info.payload_bytes as f64 / h - 1.0),
            frame.len(),
            info.header_bytes
        );
        g.bench_with_input(BenchmarkId::new("encode", name), v, |b, v| {
            b.iter(|| huffman::encode(black_box(v)).expect("encode"))
        });
        let mut out = vec![0u8; n];
        g.bench_with_input(BenchmarkId::new("decode", name), &frame, |b, f| {
            b.iter(|| huffman::decode_into(black_box(f), &mut out).expect("decode"))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
