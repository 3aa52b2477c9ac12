//! `bloomlink risk`: the attacks succeed on a deliberately weak schema and less on a protective
//! one; bad inputs are refused with the file named; reports hold no personal values.

mod common;

use std::path::Path;

use common::{any_found, bloomlink, demo_key, personal_values, set_mode, success_json, testdata};

/// One field per segment, many bits per token, double hashing: weak on purpose.
const WEAK: &str = r#"
name = "weak-test"
filter_bits = 1024
hashing = "double"
min_fields = 1
[[segment]]
name = "given"
bits = 256
[[segment]]
name = "family"
bits = 256
[[segment]]
name = "birth"
bits = 256
[[segment]]
name = "address"
bits = 256
[[field]]
name = "given_name"
normaliser = "name"
tokeniser = "bigrams"
segment = "given"
bits_per_token = 20
[[field]]
name = "family_name"
normaliser = "name"
tokeniser = "bigrams"
segment = "family"
bits_per_token = 20
[[field]]
name = "date_of_birth"
normaliser = "date"
tokeniser = "date_parts"
segment = "birth"
bits_per_token = 20
[[field]]
name = "postcode"
normaliser = "postcode"
tokeniser = "postcode_parts"
segment = "address"
bits_per_token = 20
[[field]]
name = "other_names"
normaliser = "name"
tokeniser = "bigrams"
[[field]]
name = "sex"
normaliser = "sex"
tokeniser = "exact"
[[field]]
name = "nhs_number"
normaliser = "nhs_number"
tokeniser = "exact"
[[field]]
name = "upn"
normaliser = "upn"
tokeniser = "exact"
[[token]]
name = "dob"
parts = ["date_of_birth"]
"#;

/// The same fields in one record-level filter (one 1024-bit segment): a field's value no longer
/// has a bit pattern of its own, and the dense filter hides the positions of single tokens.
fn record_level() -> String {
    let mut s = WEAK.to_string();
    for seg in ["given", "family", "birth", "address"] {
        s = s
            .replace(&format!("[[segment]]\nname = \"{seg}\"\nbits = 256\n"), "")
            .replace(&format!("segment = \"{seg}\""), "segment = \"all\"");
    }
    s.replacen(
        "min_fields = 1\n",
        "min_fields = 1\n[[segment]]\nname = \"all\"\nbits = 1024\n",
        1,
    )
}

fn risk_json(
    dir: &std::path::Path,
    key: &std::path::Path,
    schema: &str,
    margin: &str,
) -> serde_json::Value {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let schema_path = dir.join(format!("schema-{n}.toml"));
    std::fs::write(&schema_path, schema).unwrap();
    success_json(
        bloomlink()
            .arg("risk")
            .arg("--key")
            .arg(key)
            .arg("--columns")
            .arg(dir.join("pop/health.toml"))
            .arg("--schema")
            .arg(&schema_path)
            .arg(dir.join("pop/health.csv"))
            .arg("--json")
            .args(["--frequency-margin", margin])
            .arg("--audit-log")
            .arg(dir.join("audit.jsonl")),
    )
}

/// `bloomlink risk --key KEY --columns testdata/health.toml testdata/health.csv`, to add to.
fn risk_on_testdata(key: &Path) -> assert_cmd::Command {
    let mut c = bloomlink();
    c.arg("risk")
        .arg("--key")
        .arg(key)
        .arg("--columns")
        .arg(testdata("health.toml"))
        .arg(testdata("health.csv"));
    c
}

fn share(report: &serde_json::Value, attack: &str) -> f64 {
    report["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attack"] == attack)
        .unwrap()["share_reidentified"]
        .as_f64()
        .unwrap()
}

#[test]
fn attacks_succeed_on_a_weak_schema_and_less_on_a_record_level_filter() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    bloomlink()
        .args(["synth", "--children", "3000", "--seed", "11", "-o"])
        .arg(dir.path().join("pop"))
        .assert()
        .success();
    let weak = risk_json(dir.path(), &key, WEAK, "0");
    // An attacker whose reference counts may be off by two standard deviations.
    let noisy = risk_json(dir.path(), &key, WEAK, "2");
    let record = risk_json(dir.path(), &key, &record_level(), "0");
    let w = share(&weak, "all");
    let r = share(&record, "all");
    let (fw, fs) = (share(&weak, "frequency"), share(&noisy, "frequency"));
    eprintln!(
        "re-identified: weak {w:.4}, record-level {r:.4}; frequency exact {fw:.4}, noisy {fs:.4}"
    );
    assert!(w >= 0.005, "weak schema: only {w} of records re-identified");
    assert!(
        share(&weak, "frequency") > 0.0 && share(&weak, "pattern_mining") > 0.0,
        "both attacks should re-identify records on the weak schema: {weak}"
    );
    assert!(
        fs < fw,
        "a noisier reference should find less: {fs} vs {fw}"
    );
    assert_ne!(weak["verdict"], "LOW", "{}", weak["verdict_reason"]);
    // Every re-identified record is counted only when all claims were right.
    for a in weak["attacks"].as_array().unwrap() {
        assert!(a["records_reidentified"].as_u64() <= a["records_claimed"].as_u64());
    }
}

#[test]
fn salting_by_year_of_birth_lowers_the_risk_of_the_default_schema() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    bloomlink()
        .args(["synth", "--children", "3000", "--seed", "12", "-o"])
        .arg(dir.path().join("pop"))
        .assert()
        .success();
    let read = |p: &str| std::fs::read_to_string(common::root().join(p)).unwrap();
    let plain = risk_json(dir.path(), &key, &read("testdata/schemas/none.toml"), "0");
    let salted = risk_json(
        dir.path(),
        &key,
        &read("testdata/schemas/salt-yob.toml"),
        "0",
    );
    let (p, s) = (share(&plain, "all"), share(&salted, "all"));
    eprintln!("re-identified: unhardened {p:.4}, salted by year of birth {s:.4}");
    assert!(
        p >= 0.01,
        "the unhardened default should be attackable: {p}"
    );
    assert!(s < p / 4.0, "salting should cut the risk: {s} vs {p}");
}

#[test]
fn default_schema_on_testdata_reports_without_personal_values() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let report = dir.path().join("risk.txt");
    let out = risk_on_testdata(&key)
        .arg("-o")
        .arg(&report)
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("VERDICT:"), "{stdout}");
    let values = personal_values("health");
    assert_eq!(any_found(&out.stderr, &values), None, "stderr");
    assert_eq!(any_found(stdout.as_bytes(), &values), None, "stdout");
    assert_eq!(
        any_found(&std::fs::read(&report).unwrap(), &values),
        None,
        "report file"
    );
    let log = std::fs::read(dir.path().join("bloomlink-audit.jsonl")).unwrap();
    assert_eq!(any_found(&log, &values), None, "audit log");
    assert!(String::from_utf8_lossy(&log).contains("\"action\":\"risk\""));
    // An existing report is not replaced without --force.
    risk_on_testdata(&key)
        .arg("-o")
        .arg(&report)
        .assert()
        .failure()
        .stderr(predicates::str::contains("already exists"));
}

#[test]
fn show_values_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    risk_on_testdata(&key)
        .arg("--show-values")
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .assert()
        .success()
        .stderr(predicates::str::contains("PERSONAL DATA"));
}

#[test]
fn bad_inputs_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let log = dir.path().join("audit.jsonl");
    let run = |key: &std::path::Path, map: &std::path::Path, input: &std::path::Path| {
        let mut c = bloomlink();
        c.arg("risk")
            .arg("--key")
            .arg(key)
            .arg("--columns")
            .arg(map)
            .arg(input)
            .arg("--audit-log")
            .arg(&log);
        c
    };
    // Missing input.
    let missing = dir.path().join("nope.csv");
    run(&key, &testdata("health.toml"), &missing)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("nope.csv"));
    // Key readable by others.
    let open_key = dir.path().join("open.key");
    std::fs::copy(&key, &open_key).unwrap();
    set_mode(&open_key, 0o644);
    run(&open_key, &testdata("health.toml"), &testdata("health.csv"))
        .assert()
        .code(4)
        .stderr(predicates::str::contains("open.key"))
        .stderr(predicates::str::contains("chmod"));
    // A column map naming a field the schema lacks.
    let map = dir.path().join("bad.toml");
    std::fs::write(
        &map,
        "agency = \"health\"\nrecord_id = \"Patient ID\"\n[columns]\nshoe_size = \"Forename\"\n",
    )
    .unwrap();
    run(&key, &map, &testdata("health.csv"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("bad.toml"));
    // A column map naming a column the export lacks.
    std::fs::write(
        &map,
        "agency = \"health\"\nrecord_id = \"Patient ID\"\n[columns]\ngiven_name = \"Vorname\"\n",
    )
    .unwrap();
    run(&key, &map, &testdata("health.csv"))
        .assert()
        .code(1)
        .stderr(predicates::str::contains("health.csv"))
        .stderr(predicates::str::contains("Vorname"));
    // The report may not replace the key (or the map) it reads, --force or not.
    let before = std::fs::read(&key).unwrap();
    run(&key, &testdata("health.toml"), &testdata("health.csv"))
        .arg("-o")
        .arg(&key)
        .arg("--force")
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "is the linkage key, which this run reads",
        ));
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

/// `risk` warns about a key that expires within 30 days, as `encode` does: the data team runs
/// it with the key it will encode with.
#[test]
fn a_key_about_to_expire_is_warned_about() {
    use bloomlink::date::Date;
    use bloomlink::key::{LinkageKey, NewKey};
    let dir = tempfile::tempdir().unwrap();
    let today = Date::today_utc();
    let key = LinkageKey::generate_as_of(
        &NewKey {
            partnership: "P".into(),
            purpose: "test".into(),
            expires: Some(Date::from_days(today.to_days() + 10)),
            epoch: 1,
        },
        today,
    )
    .unwrap();
    let path = dir.path().join("soon.key");
    key.save(&path).unwrap();
    risk_on_testdata(&path)
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .assert()
        .success()
        .stderr(predicates::str::contains("expires in 10 days"));
}
