//! Per-core peak of each format: `cargo bench -p shrink-kernels --bench peak`.
//! Criterion's throughput is operations per second (2 per MAC; 1 per binary MAC).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shrink_kernels::peak::Probe;

fn peaks(c: &mut Criterion) {
    let mut g = c.benchmark_group("peak");
    let iters = 100_000u64;
    for p in Probe::ALL {
        if p.run(1).is_none() {
            continue;
        }
        g.throughput(Throughput::Elements(
            (p.ops_per_iter() * iters as f64) as u64,
        ));
        g.bench_function(p.name(), |b| b.iter(|| p.run(std::hint::black_box(iters))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = peaks
}
criterion_main!(benches);
