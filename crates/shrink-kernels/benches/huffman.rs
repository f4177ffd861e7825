//! Huffman encode/decode throughput (symbols/s) on weight-like streams.
//!
//! `cargo bench -p shrink-kernels --bench huffman`
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not
//! wall time: on a shared machine the thread is descheduled for long spells
//! that say nothing about the decoder. (Cache and SMT sharing still count.)
//!
//! Streams: 8-bit weight codes (discretised Laplace, the shape of int8
//! per-channel weights: ~6 bits of entropy), 5-bit codebook indices, and
//! relative-index gaps of a 90%-sparse tensor (geometric). Each prints its
//! order-0 entropy and coded size once, so the size claim sits next to the
//! speed claim.
//!
//! Before the criterion groups, an interleaved same-run comparison of the
//! current decoder against the previous one (`huffman_prev`, main at
//! 2a27e6c): rounds alternate the two on each stream and the medians are
//! printed with their ratio and the load average, so a shared machine's
//! load weighs on both alike. With `SHRINK_HUFF_DUMP=DIR` the three streams
//! are also written to `DIR/<name>.u8` for `zstd -b` (Huff0) on the same data
//! (`bench/huffman_vs_huff0.sh`).

mod huffman_prev;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_kernels::huffman;
use std::hint::black_box;
use std::time::Duration;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` `iters` times and returns the thread CPU time it took.
fn cpu_timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let t0 = thread_cpu();
    for _ in 0..iters {
        f();
    }
    thread_cpu() - t0
}

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

fn streams(n: usize) -> [(&'static str, Vec<u8>); 3] {
    [
        ("int8-weights", laplace(n, 256, 12.0, 1)),
        ("codebook-5bit", laplace(n, 32, 3.0, 2)),
        ("gaps-90pct", gaps(n, 0.1, 31, 3)),
    ]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Previous vs current decoder, alternating, same streams, same thread.
fn interleaved_comparison(n: usize) {
    eprintln!(
        "same-run decode comparison (load average {})",
        load_average()
    );
    for (name, v) in &streams(n) {
        let frame = huffman::encode(v).expect("encode");
        let mut out = vec![0u8; n];
        huffman_prev::decode_into(&frame, &mut out).expect("previous decoder");
        assert_eq!(&out, v, "previous decoder");
        huffman::decode_into(&frame, &mut out).expect("decode");
        assert_eq!(&out, v, "current decoder");
        let (mut prev, mut cur) = (Vec::new(), Vec::new());
        let reps = 10;
        for _ in 0..15 {
            let t = cpu_timed(reps, || {
                huffman_prev::decode_into(black_box(&frame), &mut out).expect("decode");
            });
            prev.push((reps as usize * n) as f64 / t.as_secs_f64() / 1e9);
            let t = cpu_timed(reps, || {
                huffman::decode_into(black_box(&frame), &mut out).expect("decode");
            });
            cur.push((reps as usize * n) as f64 / t.as_secs_f64() / 1e9);
        }
        let (p, c) = (median(prev), median(cur));
        eprintln!(
            "  {name:14} previous {p:.3} Gsym/s   current {c:.3} Gsym/s   ×{:.2}",
            c / p
        );
    }
    eprintln!("  (load average after: {})", load_average());
    // fixed cost per frame (parse, tables, checksum set-up): a short frame
    let v = &streams(3000)[0].1;
    let frame = huffman::encode(v).expect("encode");
    let mut out = vec![0u8; v.len()];
    let reps = 2000;
    let (mut prev, mut cur) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = cpu_timed(reps, || {
            huffman_prev::decode_into(black_box(&frame), &mut out).expect("decode");
        });
        prev.push(t.as_secs_f64() * 1e6 / reps as f64);
        let t = cpu_timed(reps, || {
            huffman::decode_into(black_box(&frame), &mut out).expect("decode");
        });
        cur.push(t.as_secs_f64() * 1e6 / reps as f64);
    }
    eprintln!(
        "  a short frame (3000 int8 weight codes; mostly table set-up): previous {:.1} µs, current {:.1} µs",
        median(prev),
        median(cur)
    );
}

fn bench(c: &mut Criterion) {
    let n = 1 << 20;
    // the same streams as files, for peers' own benchmarks (`zstd -b`)
    if let Some(dir) = std::env::var_os("SHRINK_HUFF_DUMP") {
        for (name, v) in &streams(n) {
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.u8")), v)
                .expect("write stream");
        }
    }
    // only under `cargo bench` (which passes --bench), not `cargo test --benches`
    if std::env::args().any(|a| a == "--bench") {
        interleaved_comparison(n);
    }
    let streams = streams(n);
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
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    black_box(huffman::encode(black_box(v)).expect("encode"));
                })
            })
        });
        let mut out = vec![0u8; n];
        g.bench_with_input(BenchmarkId::new("decode", name), &frame, |b, f| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    huffman::decode_into(black_box(f), &mut out).expect("decode")
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("decode-prev", name), &frame, |b, f| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    huffman_prev::decode_into(black_box(f), &mut out).expect("decode")
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("checksum", name), v, |b, v| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    black_box(huffman::checksum_bytes(black_box(v)));
                })
            })
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
