//! All-vs-all Dice of 2,000 × 2,000 random 1024-bit filters (~35 % density)
//! per available similarity kernel, reported as comparisons per second.
//!
//! `BLOOMLINK_KERNEL=avx2` (or a comma-separated list of kernel names)
//! restricts the run to those kernels; by default every kernel this CPU can
//! run is measured. Run single-core with e.g.
//! `cargo bench --bench dice --no-run && taskset -c 0 cargo bench --bench dice`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use bloomlink::similarity::{self as sim, Kernel};

const N: usize = 2_000;
const WORDS: usize = 16;
const DENSITY: f64 = 0.35;

/// SplitMix64, so the bench needs no extra dependencies.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` filters of `WORDS` words, each bit set with probability `DENSITY`.
fn random_filters(n: usize, seed: u64) -> Vec<u64> {
    let mut state = seed;
    let cut = (DENSITY * 65536.0) as u64;
    (0..n * WORDS)
        .map(|_| {
            (0..64).fold(0u64, |w, bit| {
                w | (u64::from(splitmix(&mut state) >> 48 < cut) << bit)
            })
        })
        .collect()
}

/// The kernels to measure: `BLOOMLINK_KERNEL` if set, else all available.
fn kernels() -> Vec<Kernel> {
    match std::env::var("BLOOMLINK_KERNEL") {
        Ok(list) => list
            .split(',')
            .map(|name| {
                Kernel::from_name(name).unwrap_or_else(|| panic!("unknown kernel `{name}`"))
            })
            .filter(|k| {
                let ok = k.is_available();
                if !ok {
                    eprintln!("skipping kernel {k}: not supported by this CPU");
                }
                ok
            })
            .collect(),
        Err(_) => Kernel::available(),
    }
}

fn bench_dice(c: &mut Criterion) {
    let a = random_filters(N, 1);
    let b = random_filters(N, 2);
    let detect = Kernel::detect();
    let mut pop_a = vec![0u32; N];
    let mut pop_b = vec![0u32; N];
    sim::popcount_each(detect, &a, WORDS, &mut pop_a);
    sim::popcount_each(detect, &b, WORDS, &mut pop_b);
    let kernels = kernels();
    eprintln!("detected kernel: {detect}; measuring: {kernels:?}");

    let mut group = c.benchmark_group("and_popcount_many");
    group.throughput(Throughput::Elements((N * N) as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for &k in &kernels {
        let mut out = vec![0u32; N];
        group.bench_function(BenchmarkId::from_parameter(k.name()), |bench| {
            bench.iter(|| {
                let mut total = 0u64;
                for query in a.chunks_exact(WORDS) {
                    sim::and_popcount_many(k, query, &b, WORDS, &mut out);
                    total += u64::from(out[N - 1]);
                }
                black_box(total)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("all_pairs_above");
    group.throughput(Throughput::Elements((N * N) as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for &k in &kernels {
        group.bench_function(BenchmarkId::from_parameter(k.name()), |bench| {
            bench.iter(|| {
                let mut hits = 0u64;
                sim::all_pairs_above(k, &a, &pop_a, &b, &pop_b, WORDS, 0.0, |_, _, _| hits += 1);
                assert_eq!(hits, (N * N) as u64);
                black_box(hits)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_dice);
criterion_main!(benches);
