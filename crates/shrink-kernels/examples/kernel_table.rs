//! Times every GEMM kernel at the benchmark shapes and prints JSON lines
//! (`bench/peers/compare.py` merges them with the peers' numbers).
//!
//! `cargo run -p shrink-kernels --release --example kernel_table -- [threads] [min_seconds]`

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_kernels::bitserial::{self, Planes};
use shrink_kernels::epilogue::{Epilogue, Output};
use shrink_kernels::f32gemm::{self, F32Epilogue, F32Path};
use shrink_kernels::{bf16gemm, binary, cpu, int4, int8, peak};
use std::time::Instant;

const SHAPES: [(usize, usize, usize); 5] = [
    (1024, 1024, 1024),
    (256, 4096, 1024),
    (1, 4096, 4096),
    (64, 784, 300),
    (3136, 576, 64),
];

/// CPU time of the calling thread: unlike wall time it does not grow when
/// other processes take the core (this machine is shared), so single-thread
/// medians of it are stable; multi-threaded runs report wall time only.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// (wall median, wall min, thread-CPU median) seconds of `f` over at least
/// 5 runs and `min_s` seconds.
fn median<F: FnMut()>(min_s: f64, mut f: F) -> (f64, f64, f64) {
    f();
    let (mut t, mut c) = (Vec::new(), Vec::new());
    let start = Instant::now();
    while t.len() < 5 || (start.elapsed().as_secs_f64() < min_s && t.len() < 1000) {
        let (s, cs) = (Instant::now(), thread_cpu_s());
        f();
        c.push(thread_cpu_s() - cs);
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    c.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[t.len() / 2], t[0], c[c.len() / 2])
}

fn emit(
    kernel: &str,
    (m, k, n): (usize, usize, usize),
    threads: usize,
    (s, best, cpu): (f64, f64, f64),
    ops: f64,
) {
    println!(
        "{{\"kernel\":\"{kernel}\",\"m\":{m},\"k\":{k},\"n\":{n},\"threads\":{threads},\"median_s\":{s:.9},\"min_s\":{best:.9},\"cpu_median_s\":{cpu:.9},\"gops\":{:.3},\"gops_best\":{:.3},\"gops_cpu\":{:.3}}}",
        ops / s / 1e9,
        ops / best / 1e9,
        ops / cpu / 1e9
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let min_s: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0.3);
    let only: Option<&str> = args.get(3).map(|s| s.as_str());
    let want = |k: &str| only.is_none_or(|o| k.starts_with(o));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    if threads == 1 && want("peak") {
        for (name, p) in peak::measure_all(40) {
            println!(
                "{{\"kernel\":\"peak\",\"name\":\"{name}\",\"gops\":{:.3}}}",
                p.ops_per_s / 1e9
            );
        }
    }
    let mut r = ChaCha8Rng::seed_from_u64(7);
    eprintln!("isa: {:?}", cpu::best());
    pool.install(|| {
        for &(m, k, n) in &SHAPES {
            let flops = 2.0 * (m * k * n) as f64;
            if want("f32") {
                let a: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() - 0.5).collect();
                let w: Vec<f32> = (0..n * k).map(|_| r.gen::<f32>() - 0.5).collect();
                let p = f32gemm::PackedF32::pack(&w, n, k).unwrap();
                let mut y = vec![0f32; m * n];
                let ep = F32Epilogue::default();
                for (name, path) in [
                    ("f32_own", F32Path::Own(cpu::best())),
                    ("f32_gemmcrate", F32Path::GemmCrate),
                ] {
                    let s = median(min_s, || {
                        f32gemm::gemm_with(path, &a, m, &p, &ep, &mut y).unwrap()
                    });
                    emit(name, (m, k, n), threads, s, flops);
                }
            }
            if want("bf16") {
                let a: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() - 0.5).collect();
                let w: Vec<half::bf16> = (0..n * k)
                    .map(|_| half::bf16::from_f32(r.gen::<f32>() - 0.5))
                    .collect();
                let p = bf16gemm::PackedBf16::pack(&w, n, k).unwrap();
                let mut y = vec![0f32; m * n];
                let s = median(min_s, || {
                    bf16gemm::gemm(&a, m, &p, &F32Epilogue::default(), &mut y).unwrap()
                });
                emit("bf16_own_f32act", (m, k, n), threads, s, flops);
                let ah: Vec<half::bf16> = a.iter().map(|&v| half::bf16::from_f32(v)).collect();
                let s = median(min_s, || {
                    bf16gemm::gemm_bf16_act(&ah, m, &p, &F32Epilogue::default(), &mut y).unwrap()
                });
                emit("bf16_own", (m, k, n), threads, s, flops);
            }
            if want("int4") {
                let a: Vec<u8> = (0..m * k).map(|_| r.gen()).collect();
                let codes: Vec<i8> = (0..n * k).map(|_| r.gen_range(-8..=7)).collect();
                let group = 128;
                let scales = vec![0.01f32; n * k.div_ceil(group)];
                let w = int4::pack_nibbles(&codes, n, k).unwrap();
                let p = int4::PackedI4::pack(&w, n, k, group, &scales).unwrap();
                let mut y = vec![0f32; m * n];
                let pr = int4::Int4Params {
                    a_zero: 3,
                    ..Default::default()
                };
                let s = median(min_s, || int4::gemm(&a, m, &p, &pr, &mut y).unwrap());
                emit("int4_own", (m, k, n), threads, s, flops);
            }
            if want("int8") {
                let a: Vec<u8> = (0..m * k).map(|_| r.gen()).collect();
                let w: Vec<i8> = (0..n * k).map(|_| r.gen()).collect();
                let p = int8::PackedI8::pack(&w, n, k, 0).unwrap();
                let mut y = vec![0i32; m * n];
                let s = median(min_s, || {
                    int8::gemm(&a, m, 3, &p, &Epilogue::default(), Output::I32(&mut y)).unwrap()
                });
                emit("int8_vnni_i32out", (m, k, n), threads, s, flops);
                let scale = vec![0.01f32; n];
                let mut yu = vec![0u8; m * n];
                let ep = Epilogue::scaled(&scale).relu();
                let s = median(min_s, || {
                    int8::gemm(&a, m, 3, &p, &ep, Output::U8(&mut yu)).unwrap()
                });
                emit("int8_vnni_u8out", (m, k, n), threads, s, flops);
            }
            if want("binary") || want("bitserial") {
                let x: Vec<f32> = (0..m * k).map(|_| r.gen::<f32>() - 0.5).collect();
                let wv: Vec<f32> = (0..n * k).map(|_| r.gen::<f32>() - 0.5).collect();
                let a = binary::pack_signs(&x, m, k).unwrap();
                let wb = binary::pack_signs(&wv, n, k).unwrap();
                let p = binary::PackedBinary::pack(&wb, n, k).unwrap();
                let mut y = vec![0i32; m * n];
                if want("binary") {
                    let s = median(min_s, || {
                        binary::gemm(&a, m, &p, &Epilogue::default(), Output::I32(&mut y)).unwrap()
                    });
                    emit("binary_xnor", (m, k, n), threads, s, (m * k * n) as f64);
                }
            }
            if want("bitserial") {
                let pairs: &[(u32, u32)] = if (m, k, n) == (1024, 1024, 1024) {
                    &[
                        (1, 1),
                        (1, 2),
                        (2, 2),
                        (1, 4),
                        (2, 3),
                        (3, 3),
                        (2, 4),
                        (4, 3),
                        (4, 4),
                        (1, 8),
                        (8, 2),
                    ]
                } else {
                    &[(1, 1), (2, 2)]
                };
                for &(wb, ab) in pairs {
                    let (wp, ap) = (
                        Planes {
                            bits: wb,
                            signed: true,
                        },
                        Planes {
                            bits: ab,
                            signed: false,
                        },
                    );
                    let wc: Vec<i32> = (0..n * k)
                        .map(|_| r.gen_range(-(1 << (wb - 1))..(1 << (wb - 1)).max(1)))
                        .collect();
                    let ac: Vec<i32> = (0..m * k).map(|_| r.gen_range(0..(1 << ab))).collect();
                    let w = bitserial::PackedBitSerial::pack(
                        &bitserial::pack_planes(&wc, n, k, wp).unwrap(),
                        n,
                        k,
                        wp,
                    )
                    .unwrap();
                    let a = bitserial::pack_planes(&ac, m, k, ap).unwrap();
                    let mut y = vec![0i32; m * n];
                    let s = median(min_s, || {
                        bitserial::gemm(&a, m, ap, &w, &Epilogue::default(), Output::I32(&mut y))
                            .unwrap()
                    });
                    emit(
                        &format!("bitserial_w{wb}a{ab}"),
                        (m, k, n),
                        threads,
                        s,
                        flops,
                    );
                }
            }
        }
    });
}
