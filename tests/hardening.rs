//! Hardening through the command line: the example schemas load, hardened encodings still
//! link on the testdata, and encode warns about known-weak schemas.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use predicates::str::contains;

/// Every example schema of the trade-off table.
const EXAMPLES: [&str; 9] = [
    "none",
    "balance",
    "xorfold",
    "salt-yob",
    "blip",
    "diffusion",
    "salt-yob+blip",
    "salt-yob+diffusion",
    "balance+salt-yob",
];

fn example(name: &str) -> PathBuf {
    testdata(&format!("schemas/{name}.toml"))
}

#[test]
fn example_schemas_load_and_differ() {
    let listed: Vec<String> = std::fs::read_dir(testdata("schemas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed.len(), EXAMPLES.len(), "{listed:?}");
    let default = bloomlink::schema::Schema::default_uk().digest;
    let mut digests = std::collections::BTreeSet::new();
    for name in EXAMPLES {
        let out = bloomlink()
            .args(["schema", "digest"])
            .arg(example(name))
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let digest = String::from_utf8(out).unwrap().trim().to_string();
        assert_eq!(digest.len(), 64, "{name}");
        // The default is hardened: none.toml (the unhardened baseline) is not it, and no example
        // is (their names differ from the default's).
        assert_ne!(digest, default, "{name}");
        assert!(
            digests.insert(digest),
            "{name}: same digest as another example"
        );
        let s = bloomlink::schema::Schema::load(&example(name)).unwrap();
        assert_eq!(name == "none", s.def.hardening.is_none(), "{name}");
    }
}

fn encode(dir: &Path, key: &Path, agency: &str, schema: &Path) -> PathBuf {
    let out = dir.join(format!("{agency}.clk"));
    bloomlink()
        .args(["encode", "--quiet", "--key"])
        .arg(key)
        .arg("--columns")
        .arg(testdata(&format!("{agency}.toml")))
        .arg(testdata(&format!("{agency}.csv")))
        .arg("--schema")
        .arg(schema)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    out
}

/// Encodes the three testdata exports with `schema`, matches them (with `match_args`) and
/// evaluates the links; returns the overall F1.
fn link_testdata(name: &str, match_args: &[&str]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let files: Vec<PathBuf> = ["health", "police", "education"]
        .iter()
        .map(|a| encode(dir.path(), &key, a, &example(name)))
        .collect();
    let out = dir.path().join("links");
    bloomlink()
        .arg("match")
        .args(&files)
        .arg("-o")
        .arg(&out)
        .args(match_args)
        .assert()
        .success();
    let report = success_json(
        bloomlink()
            .args(["evaluate", "--json", "--truth"])
            .arg(testdata("truth.csv"))
            .arg(out.join("links.csv")),
    );
    report["overall"]["f1"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: no overall F1 in {report}"))
}

#[test]
fn agencies_with_the_same_hardened_schema_still_link() {
    // The floor is the one tests/match_cli.rs uses for unhardened encodings, below the ≈ 0.99
    // these reach (README, "Hardening"), so a regression that breaks linkage of hardened
    // encodings fails. Balanced and diffused filters are matched with keyed-token blocking:
    // unrelated records have Dice ≈ 0.5 there, so the exhaustive mode's floor of 0.4 keeps
    // nearly every pair, far too slow for a debug-build test.
    for (name, args) in [
        ("salt-yob+blip", &[][..]),
        ("balance+salt-yob", &["--candidates", "blocking"][..]),
        ("salt-yob+diffusion", &["--candidates", "blocking"][..]),
    ] {
        let f1 = link_testdata(name, args);
        assert!(f1 > 0.965, "{name}: F1 {f1}");
    }
}

#[test]
fn different_hardening_is_refused_by_the_matcher() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let health = encode(&a, &key, "health", &example("salt-yob"));
    let police = encode(&b, &key, "police", &example("salt-yob+blip"));
    bloomlink()
        .arg("match")
        .arg(&health)
        .arg(&police)
        .arg("-o")
        .arg(dir.path().join("out"))
        .assert()
        .code(2)
        .stderr(contains("different linkage schemas"));
}

#[test]
fn encode_warns_about_weak_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let run = |schema: &Path, out: &str| {
        let mut c = bloomlink();
        c.args(["encode", "--json", "--quiet", "--key"])
            .arg(&key)
            .arg("--columns")
            .arg(testdata("police.toml"))
            .arg(testdata("police.csv"))
            .arg("--schema")
            .arg(schema)
            .arg("-o")
            .arg(dir.path().join(out));
        let o = c.assert().success().get_output().clone();
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let warnings: Vec<String> = json["report"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        (warnings, String::from_utf8(o.stderr).unwrap())
    };
    // No hardening: warned on stderr and in the JSON summary.
    let (w, err) = run(&example("none"), "none.clk");
    assert!(w.iter().any(|w| w.contains("no hardening")), "{w:?}");
    assert!(err.contains("no hardening"), "{err}");
    // Hardened: no such warning.
    let (w, err) = run(&example("balance+salt-yob"), "bs.clk");
    assert!(w.iter().all(|w| !w.contains("no hardening")), "{w:?}");
    assert!(!err.contains("no hardening"), "{err}");
    // Double hashing, a tiny segment, a crowded segment, and feeble BLIP.
    let weak = bloomlink::schema::UNHARDENED_SCHEMA_TOML
        .replace("hashing = \"random\"", "hashing = \"double\"")
        .replace("bits = 192", "bits = 64")
        .replace("filter_bits = 1024", "filter_bits = 896")
        + "\n[hardening]\nblip = { flip_probability = 0.001 }\n";
    let weak_path = dir.path().join("weak.toml");
    std::fs::write(&weak_path, weak).unwrap();
    let (w, err) = run(&weak_path, "weak.clk");
    for expect in [
        "Niedermeyer",
        "segment `birth` is stored in only 64 bits",
        "segment `birth` is expected to be about",
        "flips fewer than 1 %",
    ] {
        assert!(w.iter().any(|w| w.contains(expect)), "{expect}: {w:?}");
        assert!(err.contains(expect), "{expect}: {err}");
    }
    // A salt field the column map does not feed: every record is unsalted.
    let map = dir.path().join("police.toml");
    let text = std::fs::read_to_string(testdata("police.toml")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("date_of_birth"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&map, text).unwrap();
    let o = bloomlink()
        .args(["encode", "--quiet", "--key"])
        .arg(&key)
        .arg("--columns")
        .arg(&map)
        .arg(testdata("police.csv"))
        .arg("--schema")
        .arg(example("salt-yob"))
        .arg("-o")
        .arg(dir.path().join("nodob.clk"))
        .assert()
        .success();
    o.stdout(contains(
        "the salt field date_of_birth is not in the column map",
    ));
}

/// Encodes the CSV `data` through the library with `threads` workers (dates of birth judged
/// against a fixed day, so results do not depend on when the test runs).
fn encode_with(
    key: &bloomlink::key::LinkageKey,
    schema: &bloomlink::schema::Schema,
    map: &bloomlink::colmap::ColumnMap,
    data: &[u8],
    threads: usize,
) -> bloomlink::encode::Encoded {
    let opts = bloomlink::encode::EncodeOptions {
        today: bloomlink::date::Date::new(2026, 11, 1).unwrap(),
        threads,
        ..Default::default()
    };
    bloomlink::encode::encode_reader(
        data,
        Path::new("input.csv"),
        data.len() as u64,
        key,
        schema,
        map,
        &opts,
    )
    .unwrap()
}

/// Encodes `rows` (after the health header) with `schema` through the library.
fn encode_lib(schema: &bloomlink::schema::Schema, rows: &str) -> bloomlink::encode::Encoded {
    use bloomlink::key::{Expiry, LinkageKey};
    let dir = tempfile::tempdir().unwrap();
    let key = LinkageKey::load(&demo_key(dir.path()), Expiry::Enforce).unwrap();
    let map = bloomlink::colmap::ColumnMap::from_toml(HEALTH_MAP, Path::new("map.toml")).unwrap();
    let csv = format!("{HEALTH_HEADER}{rows}");
    encode_with(&key, schema, &map, csv.as_bytes(), 1)
}

fn dice(a: &[u64], b: &[u64]) -> f64 {
    let and: u32 = a.iter().zip(b).map(|(x, y)| (x & y).count_ones()).sum();
    let n: u32 = a.iter().chain(b).map(|x| x.count_ones()).sum();
    2.0 * f64::from(and) / f64::from(n)
}

#[test]
fn salt_errors_cost_the_name_evidence_and_missing_salts_follow_the_schema() {
    use bloomlink::schema::Schema;
    let salted = Schema::load(&example("salt-yob")).unwrap();
    let plain = Schema::load(&example("none")).unwrap();
    // The same child with the year of birth mistyped in the second row, and one without a date.
    let rows = "A1,,Olivia,,Hargreaves,12/03/2015,F,LS6 2AB\n\
                A2,,Olivia,,Hargreaves,12/03/2016,F,LS6 2AB\n\
                A3,,Olivia,,Hargreaves,,F,LS6 2AB\n";
    let (p, s) = (encode_lib(&plain, rows), encode_lib(&salted, rows));
    let names = |r: &bloomlink::encode::Records, i: usize| r.filter(i)[..9].to_vec();
    // Unsalted, the names agree exactly; salted with different years they look unrelated.
    assert_eq!(dice(&names(&p.records, 0), &names(&p.records, 1)), 1.0);
    let d = dice(&names(&s.records, 0), &names(&s.records, 1));
    assert!(d < 0.4, "salted names with different years: Dice {d}");
    // Marker (the default): the record without a year is encoded and its names are hashed
    // with the marker, unlike either salted record.
    assert_eq!(s.records.len(), 3);
    assert!(dice(&names(&s.records, 2), &names(&s.records, 0)) < 0.4);
    assert!(names(&s.records, 2).iter().any(|&w| w != 0));
    // Skip: the names set no bits without a salt; only sex and postcode are left, still two
    // fields, so the row is kept with an empty given/family part.
    let skip = std::fs::read_to_string(example("salt-yob"))
        .unwrap()
        .replace("when_missing = \"marker\"", "when_missing = \"skip\"");
    let skip = Schema::from_toml(&skip, "skip.toml").unwrap();
    let k = encode_lib(&skip, rows);
    assert_eq!(k.records.len(), 3);
    assert!(names(&k.records, 2).iter().all(|&w| w == 0));
    assert_eq!(
        k.records.filter(0),
        s.records.filter(0),
        "a salted row is the same"
    );
    // With only the names and no date, skip leaves too few fields and the row is rejected.
    let k = encode_lib(&skip, "A4,,Olivia,,Hargreaves,,,\n");
    assert_eq!(k.records.len(), 0);
    assert_eq!(k.rejects[0].reason, "too_few_fields");
    let m = encode_lib(&salted, "A4,,Olivia,,Hargreaves,,,\n");
    assert_eq!(m.records.len(), 1);
}

#[test]
fn hardened_encodings_are_identical_for_any_thread_count() {
    use bloomlink::key::{Expiry, LinkageKey};
    // The testdata health export repeated under new record ids: about 2.5 MB, several of the
    // encoder's 1 MiB blocks, so threads really do share the work.
    let map = bloomlink::colmap::ColumnMap::load(&testdata("health.toml")).unwrap();
    let mut rdr = csv::Reader::from_path(testdata("health.csv")).unwrap();
    let header = rdr.headers().unwrap().clone();
    let id_col = header.iter().position(|h| h == map.record_id).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).unwrap();
    for k in 0..20 {
        for r in &rows {
            let mut r = r.clone();
            let id = format!("{k}-{}", &r[id_col]);
            let mut fields: Vec<String> = r.iter().map(String::from).collect();
            fields[id_col] = id;
            r = csv::StringRecord::from(fields);
            w.write_record(&r).unwrap();
        }
    }
    let data = w.into_inner().unwrap();
    assert!(data.len() > (2 << 20), "{} bytes", data.len());
    let dir = tempfile::tempdir().unwrap();
    let key = LinkageKey::load(&demo_key(dir.path()), Expiry::Enforce).unwrap();
    for name in ["salt-yob+blip", "balance+salt-yob"] {
        let schema = bloomlink::schema::Schema::load(&example(name)).unwrap();
        let encode = |threads| encode_with(&key, &schema, &map, &data, threads).records;
        let one = encode(1);
        assert_eq!(one.len(), rows.len() * 20, "{name}");
        assert!(one == encode(3), "{name}: bits depend on the thread count");
    }
}

#[test]
fn encode_summary_names_the_hardening() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    for (name, expect) in [
        ("none", "none"),
        (
            "balance+salt-yob",
            "salt by date_of_birth:year (given_name, other_names, family_name; when missing: marker) → balance",
        ),
    ] {
        let mut c = bloomlink();
        c.args(["encode", "--quiet", "--key"])
            .arg(&key)
            .arg("--columns")
            .arg(testdata("police.toml"))
            .arg(testdata("police.csv"))
            .arg("--schema")
            .arg(example(name))
            .arg("-o")
            .arg(dir.path().join(format!("{name}.clk")));
        c.assert()
            .success()
            .stdout(contains(format!("  hardening {expect}\n")));
        let json = success_json(c.arg("--json").arg("--force"));
        assert_eq!(json["hardening"], expect, "{name}");
    }
}

#[test]
fn cached_hardened_segments_equal_hardening_each_record() {
    use bloomlink::harden::{Hardener, Scratch};
    use bloomlink::key::{Expiry, LinkageKey};
    use bloomlink::schema::Schema;
    // The encoder keeps each value's hardened segment and transforms per row only segments fed
    // by two values. Reference: encode without the filter transforms (salting kept, it changes
    // the hashed tokens), then harden every record's whole filter.
    let dir = tempfile::tempdir().unwrap();
    let key = LinkageKey::load(&demo_key(dir.path()), Expiry::Enforce).unwrap();
    let map = bloomlink::colmap::ColumnMap::load(&testdata("health.toml")).unwrap();
    let data = std::fs::read(testdata("health.csv")).unwrap();
    let encode = |schema: &Schema| encode_with(&key, schema, &map, &data, 2).records;
    for name in EXAMPLES.iter().filter(|&&n| n != "none" && n != "salt-yob") {
        let text = std::fs::read_to_string(example(name)).unwrap();
        let hard = Schema::from_toml(&text, name).unwrap();
        let mut plain: toml::Table = toml::from_str(&text).unwrap();
        let h = plain["hardening"].as_table_mut().unwrap();
        h.retain(|k, _| k == "salt");
        let plain = Schema::from_toml(&toml::to_string(&plain).unwrap(), "plain.toml").unwrap();
        let (raw, stored) = (encode(&plain), encode(&hard));
        assert!(raw.ids().eq(stored.ids()), "{name}");
        assert!(stored.len() > 1000, "{name}");
        let hardener = Hardener::new(&key, &hard);
        let mut scratch = Scratch::default();
        let mut out = vec![0u64; stored.words];
        for i in 0..stored.len() {
            hardener.apply(
                raw.filter(i),
                &mut out,
                &map.agency,
                stored.id(i),
                &mut scratch,
            );
            assert_eq!(out, stored.filter(i), "{name}: record {i}");
        }
    }
}
