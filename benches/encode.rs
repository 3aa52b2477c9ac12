//! Encoding benchmarks: normalisers, keyed token hashing, and whole-record encoding.
//!
//! `cargo bench --bench encode`. Figures reported in the encode issue's closing note come from
//! this and from timing `bloomlink encode` as a whole process (see README, "Performance").

use std::path::Path;

use bloomlink::colmap::ColumnMap;
use bloomlink::date::{default_date_formats, Date};
use bloomlink::encode::{encode_reader, EncodeOptions};
use bloomlink::key::{Expiry, LinkageKey};
use bloomlink::normalise;
use bloomlink::schema::Schema;
use bloomlink::tokens::Hasher;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn demo_key() -> (tempfile::TempDir, LinkageKey) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("demo.key");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/demo.key"),
        &p,
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let k = LinkageKey::load(&p, Expiry::Enforce).unwrap();
    (dir, k)
}

fn normalisers(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalise");
    g.throughput(Throughput::Elements(1));
    g.bench_function("name_ascii", |b| {
        b.iter(|| normalise::name(black_box("  mary-jane o'brien ")))
    });
    g.bench_function("name_diacritics", |b| {
        b.iter(|| normalise::name(black_box("Zoë Łukasz-Nguyễn")))
    });
    g.bench_function("postcode", |b| {
        b.iter(|| normalise::postcode(black_box("sw1a1aa")))
    });
    g.bench_function("nhs_number", |b| {
        b.iter(|| normalise::nhs_number(black_box("943 476 5919")))
    });
    g.bench_function("upn", |b| {
        b.iter(|| normalise::upn(black_box("H801200001001")))
    });
    let formats = default_date_formats();
    let today = Date::new(2026, 1, 1).unwrap();
    g.bench_function("date_of_birth", |b| {
        b.iter(|| normalise::date_of_birth(black_box("12-Mar-2015"), &formats, today))
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let (_dir, key) = demo_key();
    let schema = Schema::default_uk();
    let h = Hasher::new(&key, &schema);
    let mut g = c.benchmark_group("keyed_hash");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(64);
    g.bench_function("bigram_positions_k8", |b| {
        b.iter(|| {
            out.clear();
            h.positions(0, 8, black_box(b"JO"), &mut out);
        })
    });
    g.bench_function("positions_k14", |b| {
        b.iter(|| {
            out.clear();
            h.positions(3, 14, black_box(b"pc:SW1A1AA"), &mut out);
        })
    });
    g.bench_function("exact_token", |b| {
        b.iter(|| h.exact_token(0, black_box(b"9434765919")))
    });
    g.finish();
}

fn records(c: &mut Criterion) {
    let (_dir, key) = demo_key();
    let schema = Schema::default_uk();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let map = ColumnMap::load(&root.join("health.toml")).unwrap();
    let csv = std::fs::read(root.join("health.csv")).unwrap();
    let rows = csv.iter().filter(|&&b| b == b'\n').count() as u64 - 1;
    let mut g = c.benchmark_group("encode_records");
    // The testdata export repeated 20 times under fresh record ids: after the first copy the
    // workers' caches hold every value, so this measures the steady state of a large export
    // (cache hits), where the plain testdata file measures a small one (mostly misses).
    let mut repeated = Vec::with_capacity(csv.len() * 20);
    let (header, body) = csv.split_at(csv.iter().position(|&b| b == b'\n').unwrap() + 1);
    repeated.extend_from_slice(header);
    for copy in 0..20 {
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            repeated.extend_from_slice(format!("R{copy}-").as_bytes());
            repeated.extend_from_slice(line);
            repeated.push(b'\n');
        }
    }
    let inputs = [
        ("testdata_health", &csv[..], rows),
        ("health_x20", &repeated[..], rows * 20),
    ];
    for (name, data, n) in inputs {
        g.throughput(Throughput::Elements(n));
        for threads in [1, 2] {
            g.bench_function(format!("{name}_{threads}_threads"), |b| {
                b.iter_batched(
                    || EncodeOptions {
                        today: Date::new(2026, 1, 1).unwrap(),
                        threads,
                        ..Default::default()
                    },
                    |opts| {
                        encode_reader(data, Path::new("health.csv"), 0, &key, &schema, &map, &opts)
                            .unwrap()
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, normalisers, hashing, records);
criterion_main!(benches);
