//! f32 → int8 per-channel quantize and byte-code bit-plane packing, single
//! thread, bytes of input per second:
//! `cargo bench -p shrink-kernels --bench quantize`.
//!
//! Before criterion's wall-clock runs, each kernel is also timed with the
//! thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`), which a machine loaded by
//! other processes inflates much less than wall time; both are printed.

use criterion::{criterion_group, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_kernels::bitplanes;
use shrink_kernels::bitserial::Planes;
use shrink_kernels::cpu::{self, Isa};
use shrink_kernels::quantize::{self, Saturation};
use std::hint::black_box;
use std::time::Instant;

const ROWS: usize = 512;
const COLS: usize = 1024;

fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

struct Inputs {
    x: Vec<f32>,
    scales: Vec<f32>,
    c8: Vec<u8>,
    c4: Vec<u8>,
}

fn inputs() -> Inputs {
    let mut g = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..ROWS * COLS)
        .map(|_| g.gen_range(-1.0f32..1.0))
        .collect();
    let scales: Vec<f32> = x
        .chunks(COLS)
        .map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
        .collect();
    let c8 = (0..ROWS * COLS).map(|_| g.gen::<u8>()).collect();
    let c4 = (0..ROWS * COLS)
        .map(|_| g.gen_range(-8i8..8) as u8)
        .collect();
    Inputs { x, scales, c8, c4 }
}

type Job<'a> = Box<dyn FnMut() + 'a>;

/// (name, input bytes, job) for every kernel at `isa`; each job owns its output.
fn jobs<'a>(inp: &'a Inputs, isa: Isa) -> Vec<(String, usize, Job<'a>)> {
    let wd = COLS.div_ceil(64);
    let mut q = vec![0i8; ROWS * COLS];
    let pack = |codes: &'a [u8], bits: u32| -> Job<'a> {
        let mut o = vec![0u64; ROWS * bits as usize * wd];
        let pl = Planes { bits, signed: true };
        Box::new(move || {
            bitplanes::pack_into_with(isa, black_box(codes), ROWS, COLS, pl, &mut o).unwrap()
        })
    };
    vec![
        (
            format!("quantize-i8-per-channel/{isa:?}"),
            4 * ROWS * COLS,
            Box::new(move || {
                quantize::quantize_i8_per_channel_with(
                    isa,
                    black_box(&inp.x),
                    ROWS,
                    COLS,
                    &inp.scales,
                    None,
                    Saturation::Narrow,
                    &mut q,
                )
                .unwrap()
            }),
        ),
        (
            format!("pack-int8-planes/{isa:?}"),
            ROWS * COLS,
            pack(&inp.c8, 8),
        ),
        (
            format!("pack-int4-planes/{isa:?}"),
            ROWS * COLS,
            pack(&inp.c4, 4),
        ),
    ]
}

fn gbs(bytes: usize, s: f64) -> f64 {
    bytes as f64 / s / 1e9
}

/// Median wall and thread-CPU seconds per call over ≥ 20 calls and ≥ 0.5 s.
fn cpu_time_table(inp: &Inputs) {
    println!(
        "single thread, {ROWS}x{COLS}, GB/s of input (1e9 B/s): wall median | thread-CPU median"
    );
    for isa in cpu::available().into_iter().filter(|&i| i <= Isa::Avx512) {
        for (name, bytes, mut f) in jobs(inp, isa) {
            f();
            let (mut w, mut c) = (Vec::new(), Vec::new());
            let start = Instant::now();
            while w.len() < 20 || (start.elapsed().as_secs_f64() < 0.5 && w.len() < 2000) {
                let (t0, c0) = (Instant::now(), thread_cpu_s());
                f();
                c.push(thread_cpu_s() - c0);
                w.push(t0.elapsed().as_secs_f64());
            }
            w.sort_by(f64::total_cmp);
            c.sort_by(f64::total_cmp);
            let (wm, cm) = (w[w.len() / 2], c[c.len() / 2]);
            println!(
                "{name:<36} {:>8.2} | {:>8.2}",
                gbs(bytes, wm),
                gbs(bytes, cm)
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    let inp = inputs();
    cpu_time_table(&inp);
    let mut g = c.benchmark_group("quantize");
    for isa in [Isa::Scalar, cpu::best().min(Isa::Avx512)] {
        for (name, bytes, mut f) in jobs(&inp, isa) {
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_function(name, |b| b.iter(&mut f));
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion::criterion_main!(benches);
