//! Encoding the shipped synthetic testdata: no personal data in any output, determinism,
//! reconciliation.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

const AGENCIES: [&str; 3] = ["health", "police", "education"];

fn encode(dir: &Path, key: &Path, agency: &str, out: &str, extra: &[&str]) -> serde_json::Value {
    success_json(
        bloomlink()
            .args(["encode", "--quiet", "--json", "--key"])
            .arg(key)
            .arg("--columns")
            .arg(testdata(&format!("{agency}.toml")))
            .arg(testdata(&format!("{agency}.csv")))
            .arg("-o")
            .arg(dir.join(out))
            .args(extra),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    aho_corasick::AhoCorasick::new([needle])
        .unwrap()
        .is_match(hay)
}

#[test]
fn outputs_contain_no_personal_values() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    for agency in AGENCIES {
        let summary = encode(dir.path(), &key, agency, &format!("{agency}.clk"), &[]);
        let values = personal_values(agency);
        assert!(
            values.len() > 100,
            "{agency}: too few values to be a real check"
        );
        let clk = std::fs::read(dir.path().join(format!("{agency}.clk"))).unwrap();
        let rejects = std::fs::read(dir.path().join(format!("{agency}.rejects.csv"))).unwrap();
        let summary = serde_json::to_vec(&summary).unwrap();
        for (what, hay) in [
            ("encoding", &clk),
            ("rejects", &rejects),
            ("summary", &summary),
        ] {
            if let Some(len) = any_found(hay, &values) {
                panic!("{agency}: a personal value of length {len} appears in the {what} file");
            }
        }
        // The check can fail: the same scan finds the values in the export itself.
        let csv = std::fs::read(testdata(&format!("{agency}.csv"))).unwrap();
        let csv_text = String::from_utf8_lossy(&csv).to_uppercase();
        assert!(any_found(csv_text.as_bytes(), &values).is_some());
    }
}

#[test]
fn opaque_ids_hide_record_ids() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let map = dir.path().join("ids.csv");
    encode(
        dir.path(),
        &key,
        "health",
        "h.clk",
        &["--opaque-ids", map.to_str().unwrap()],
    );
    let clk = std::fs::read(dir.path().join("h.clk")).unwrap();
    let mapping = std::fs::read_to_string(&map).unwrap();
    let ids: Vec<&str> = mapping
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(ids.len(), 1970);
    let ids: BTreeSet<String> = ids.into_iter().map(String::from).collect();
    assert!(
        any_found(&clk, &ids).is_none(),
        "record id in the encoding file"
    );
    assert!(contains(
        &std::fs::read(testdata("health.csv")).unwrap(),
        ids.iter().next().unwrap().as_bytes()
    ));
}

#[test]
fn byte_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    for agency in AGENCIES {
        let a = format!("{agency}-1.clk");
        let b = format!("{agency}-4.clk");
        encode(dir.path(), &key, agency, &a, &["--threads", "1"]);
        encode(dir.path(), &key, agency, &b, &["--threads", "4"]);
        let fa = std::fs::read(dir.path().join(&a)).unwrap();
        let fb = std::fs::read(dir.path().join(&b)).unwrap();
        assert!(fa == fb, "{agency}: outputs differ between 1 and 4 threads");
    }
}

#[test]
fn counts_reconcile_and_match_the_truth_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let truth = std::fs::read_to_string(testdata("truth.csv")).unwrap();
    for agency in AGENCIES {
        let s = encode(dir.path(), &key, agency, &format!("{agency}.clk"), &[]);
        let r = &s["report"];
        let read = r["rows_read"].as_u64().unwrap();
        assert_eq!(
            read,
            r["encoded"].as_u64().unwrap() + r["rejected"].as_u64().unwrap()
        );
        let in_truth = truth
            .lines()
            .filter(|l| l.split(',').nth(1) == Some(agency))
            .count();
        assert_eq!(read as usize, in_truth, "{agency}");
        for f in r["fields"].as_array().unwrap() {
            let invalid: u64 = f["invalid"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            assert_eq!(
                f["present"].as_u64().unwrap() + f["missing"].as_u64().unwrap() + invalid,
                read,
                "{agency} {}: present + missing + invalid must equal rows read",
                f["field"]
            );
        }
    }
}
