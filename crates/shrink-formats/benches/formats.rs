//! Encode/decode throughput per format, in bytes of input per second.
//! `cargo bench -p shrink-formats --bench formats`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shrink_formats::intq::{dequantize_i8_per_channel, i8_scales_per_row, quantize_i8_per_channel};
use shrink_formats::*;

const ROWS: usize = 512;
const COLS: usize = 1024;

fn weights() -> Vec<f32> {
    let mut r = SplitMix64::new(42);
    (0..ROWS * COLS)
        .map(|_| ((0..4).map(|_| r.next_f64()).sum::<f64>() - 2.0) as f32 * 0.05)
        .collect()
}

fn bench_format<F: Format>(c: &mut Criterion, f: F, x: &[f32]) {
    let shape = [ROWS, COLS];
    let mut g = c.benchmark_group(Format::name(&f));
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    g.sample_size(10);
    g.bench_function("encode", |b| {
        b.iter(|| f.encode(black_box(x), &shape).unwrap())
    });
    let e = f.encode(x, &shape).unwrap();
    g.bench_function("decode", |b| b.iter(|| f.decode(black_box(&e)).unwrap()));
    g.finish();
}

fn formats(c: &mut Criterion) {
    let x = weights();
    bench_format(c, Fp16::default(), &x);
    bench_format(c, Bf16::default(), &x);
    bench_format(
        c,
        IntQ::symmetric(8, Granularity::PerChannel { axis: 0 }),
        &x,
    );
    bench_format(
        c,
        IntQ::symmetric(4, Granularity::PerGroup { axis: 1, group: 64 }),
        &x,
    );
    bench_format(c, Posit::new(8, 0).unwrap(), &x);
    bench_format(c, Posit::new(16, 1).unwrap(), &x);
    bench_format(c, Posit::new(32, 2).unwrap(), &x);
    bench_format(c, Flex16::default(), &x);
    bench_format(c, Binary::xnor(), &x);
    bench_format(c, Ternary::twn(Granularity::PerChannel { axis: 0 }), &x);
}

fn fast_paths(c: &mut Criterion) {
    let x = weights();
    let scales = i8_scales_per_row(&x, COLS).unwrap();
    let mut q = vec![0i8; x.len()];
    let mut g = c.benchmark_group("int8-per-channel");
    g.throughput(Throughput::Bytes((x.len() * 4) as u64));
    g.bench_function("quantize (f32 in)", |b| {
        b.iter(|| quantize_i8_per_channel(black_box(&x), COLS, &scales, &mut q).unwrap())
    });
    let mut back = vec![0f32; x.len()];
    g.bench_function("dequantize (f32 out)", |b| {
        b.iter(|| dequantize_i8_per_channel(black_box(&q), COLS, &scales, &mut back))
    });
    g.finish();

    let bytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
    let mut g = c.benchmark_group("bitplanes");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("pack int8 (8 planes, bytes in)", |b| {
        b.iter(|| BitPlanes::from_bytes(black_box(&bytes), ROWS, COLS, 8, true).unwrap())
    });
    let q4: Vec<u8> = q.iter().map(|&v| (v / 16) as u8).collect();
    g.bench_function("pack int4 (4 planes, bytes in)", |b| {
        b.iter(|| BitPlanes::from_bytes(black_box(&q4), ROWS, COLS, 4, true).unwrap())
    });
    g.bench_function("pack signs (1 plane, f32 in)", |b| {
        b.iter(|| pack::pack_signs(black_box(&x), ROWS, COLS).unwrap())
    });
    g.finish();
}

criterion_group!(benches, formats, fast_paths);
criterion_main!(benches);
