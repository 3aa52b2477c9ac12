//! The audit log: a real log made by key new, three encodes and a match on the testdata; every
//! kind of tampering detected at the right line; concurrent writers; no personal data; refusals
//! recorded; the IG report.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bloomlink::audit;
use common::*;
use predicates::prelude::*;
use predicates::str::contains;

const AGENCIES: [&str; 3] = ["health", "police", "education"];
const LOG: &str = "bloomlink-audit.jsonl";

fn encode_cmd(key: &Path, agency: &str, out: &Path) -> assert_cmd::Command {
    let mut c = bloomlink();
    c.args(["encode", "--quiet", "--key"])
        .arg(key)
        .arg("--columns")
        .arg(testdata(&format!("{agency}.toml")))
        .arg(testdata(&format!("{agency}.csv")))
        .arg("-o")
        .arg(out);
    c
}

/// Makes a log in `dir` the way it is made in use, all at the default location: key new,
/// encode ×3, match. Returns the log path (5 entries).
fn make_log(dir: &Path) -> PathBuf {
    let key = dir.join("northshire.key");
    bloomlink()
        .args(["key", "new", "--partnership", "Test Partnership", "-o"])
        .arg(&key)
        .assert()
        .success();
    let mut files = Vec::new();
    for agency in AGENCIES {
        let out = dir.join(format!("{agency}.clk"));
        encode_cmd(&key, agency, &out).assert().success();
        files.push(out);
    }
    bloomlink()
        .arg("match")
        .args(&files)
        .arg("-o")
        .arg(dir.join("links"))
        .assert()
        .success();
    dir.join(LOG)
}

/// The log of [`make_log`], made once for all tests; each test works on its own copy.
fn shared_log() -> &'static Path {
    static LOG_PATH: OnceLock<PathBuf> = OnceLock::new();
    LOG_PATH.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("audit-shared-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        make_log(&dir)
    })
}

fn copy_log(dir: &Path) -> PathBuf {
    let p = dir.join("copy.jsonl");
    std::fs::copy(shared_log(), &p).unwrap();
    p
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(p, s).unwrap();
}

fn verify(p: &Path) -> assert_cmd::assert::Assert {
    bloomlink().args(["audit", "verify"]).arg(p).assert()
}

fn entries(p: &Path) -> Vec<serde_json::Value> {
    lines(p)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_real_log_verifies_and_records_each_action() {
    let log = shared_log();
    let e = entries(log);
    let actions: Vec<&str> = e.iter().map(|x| x["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["key.new", "encode", "encode", "encode", "match"]);
    for (i, x) in e.iter().enumerate() {
        assert_eq!(x["seq"], i as u64);
        assert_eq!(x["outcome"], "done");
        assert_eq!(x["hash"].as_str().unwrap().len(), 64);
        assert!(x["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(e[0]["prev"], audit::GENESIS);
    let fp = e[0]["key_fingerprint"].as_str().unwrap();
    assert_eq!(e[0]["key_info"]["partnership"], "Test Partnership");
    assert_eq!(e[1]["agency"], "health");
    assert_eq!(e[1]["key_fingerprint"], fp);
    assert_eq!(e[1]["key_epoch"], 1);
    assert_eq!(e[1]["options"]["allow_expired"], false);
    assert_eq!(e[1]["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
    let clk_sha = e[1]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["path"].as_str().unwrap().ends_with("health.clk"))
        .unwrap()["sha256"]
        .clone();
    // The match records the same file by the same digest: the report can join them.
    assert_eq!(e[4]["inputs"][0]["sha256"], clk_sha);
    assert_eq!(e[4]["inputs"][0]["key_fingerprint"], fp);
    assert_eq!(e[4]["key_fingerprint"], fp);
    assert!(e[4]["counts"]["links"].as_u64().unwrap() > 100);
    assert_eq!(e[4]["outputs"].as_array().unwrap().len(), 5);
    let rows: u64 = (1..4)
        .map(|i| e[i]["counts"]["rows_read"].as_u64().unwrap())
        .sum();
    assert!(rows > 1000);
    verify(log)
        .success()
        .stdout(contains("OK: 5 entries, head "));
    assert_eq!(mode_of(log), 0o600);
}

#[test]
fn an_edited_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_log(dir.path());
    let mut l = lines(&log);
    assert!(l[2].contains(r#""agency":"police""#));
    l[2] = l[2].replace(r#""agency":"police""#, r#""agency":"polite""#);
    write_lines(&log, &l);
    verify(&log)
        .code(6)
        .stderr(contains("line 3 (seq 2): edited"));
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_log(dir.path());
    let mut l = lines(&log);
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&l[1]).unwrap();
    v.insert("user".into(), "someone-else".into());
    v.remove("hash");
    let h = hex_sha256(audit::canonical(&serde_json::Value::Object(v.clone())).as_bytes());
    v.insert("hash".into(), h.into());
    l[1] = audit::canonical(&serde_json::Value::Object(v));
    write_lines(&log, &l);
    verify(&log)
        .code(6)
        .stderr(contains("line 3 (seq 2)").and(contains("line 2")));
}

fn hex_sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

#[test]
fn a_removed_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_log(dir.path());
    let mut l = lines(&log);
    l.remove(2);
    write_lines(&log, &l);
    verify(&log)
        .code(6)
        .stderr(contains("line 3 (seq 3): removed"));
}

#[test]
fn swapped_entries_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_log(dir.path());
    let mut l = lines(&log);
    l.swap(1, 2);
    write_lines(&log, &l);
    verify(&log)
        .code(6)
        .stderr(contains("line 2 (seq 2): reordered"));
}

#[test]
fn a_truncated_last_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_log(dir.path());
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() - 40]).unwrap();
    verify(&log)
        .code(6)
        .stderr(contains("line 5").and(contains("truncated")));
    // Only the newline lost: still incomplete.
    std::fs::write(&log, &bytes[..bytes.len() - 1]).unwrap();
    verify(&log)
        .code(6)
        .stderr(contains("line 5 (seq 4): truncated"));
    // And nothing more is chained to an incomplete line.
    let dir2 = tempfile::tempdir().unwrap();
    let key = demo_key(dir2.path());
    encode_cmd(&key, "health", &dir2.path().join("h.clk"))
        .arg("--audit-log")
        .arg(&log)
        .assert()
        .code(1)
        .stderr(contains("incomplete"));
    assert!(!dir2.path().join("h.clk").exists());
}

#[test]
fn a_log_from_another_machine_appended_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_log(dir.path());
    // A second log, made in another directory (another "machine").
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("other.key");
    bloomlink()
        .args(["key", "new", "--partnership", "Elsewhere", "-o"])
        .arg(&key)
        .assert()
        .success();
    bloomlink()
        .args(["key", "show"])
        .arg(&key)
        .assert()
        .success();
    let foreign = lines(&other.path().join(LOG));
    assert_eq!(foreign.len(), 2);
    let mut l = lines(&log);
    l.extend(foreign.iter().cloned());
    write_lines(&log, &l);
    verify(&log)
        .code(6)
        .stderr(contains("line 6 (seq 0): foreign"));
    // Spliced into the middle with its seq made to fit, the chain still breaks.
    let mut l = lines(&log)[..5].to_vec();
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&foreign[1]).unwrap();
    v.insert("seq".into(), 5.into());
    v.remove("hash");
    let h = hex_sha256(audit::canonical(&serde_json::Value::Object(v.clone())).as_bytes());
    v.insert("hash".into(), h.into());
    l.push(audit::canonical(&serde_json::Value::Object(v)));
    write_lines(&log, &l);
    verify(&log)
        .code(6)
        .stderr(contains("line 6 (seq 5): foreign"));
}

#[test]
fn checkpoint_detects_a_truncation_at_a_line_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let log = copy_log(dir.path());
    let cp: serde_json::Value = success_json(
        bloomlink()
            .args(["audit", "checkpoint", "--json"])
            .arg(&log),
    );
    assert_eq!(cp["entries"], 6);
    let head = cp["head"].as_str().unwrap().to_string();
    let l = lines(&log);
    assert_eq!(entries(&log)[5]["action"], "audit.checkpoint");
    verify(&log)
        .success()
        .stdout(contains(format!("OK: 6 entries, head {head}")));
    bloomlink()
        .args(["audit", "verify", "--checkpoint", &head])
        .arg(&log)
        .assert()
        .success();
    // Whole entries removed from the end leave a valid chain, but not the checkpointed head.
    write_lines(&log, &l[..4]);
    verify(&log).success();
    bloomlink()
        .args(["audit", "verify", "--checkpoint", &head])
        .arg(&log)
        .assert()
        .code(6)
        .stderr(contains("checkpointed head"));
}

#[test]
fn concurrent_writers_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.jsonl");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let mut ev = audit::Event::new("test.concurrent");
                    ev.counts.insert("thread".into(), t.into());
                    ev.counts.insert("i".into(), i.into());
                    // Long enough that an unlocked write could tear.
                    ev.options.insert("pad".into(), "x".repeat(5000).into());
                    audit::append(&log, &ev).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    verify(&log).success().stdout(contains("OK: 400 entries"));
}

#[test]
fn the_log_holds_no_personal_values() {
    let log = std::fs::read(shared_log()).unwrap();
    for agency in AGENCIES {
        let values = personal_values(agency);
        assert!(values.len() > 100);
        let ac = aho_corasick::AhoCorasick::new(&values).unwrap();
        if let Some(m) = ac.find(&log) {
            panic!(
                "{agency}: a personal value of length {} is in the audit log",
                m.len()
            );
        }
        // The scan can fail: it finds the values in the export itself.
        let csv =
            String::from_utf8_lossy(&std::fs::read(testdata(&format!("{agency}.csv"))).unwrap())
                .to_uppercase();
        assert!(ac.find(csv.as_bytes()).is_some());
    }
}

#[test]
fn refusals_are_recorded() {
    let f = Fixture::new(format!("{HEALTH_HEADER}H1,too,few,columns\n").as_bytes());
    // A world-readable key: refused (exit 4) and recorded, with the fingerprint it claims.
    set_mode(&f.key, 0o644);
    f.encode().assert().code(4).stderr(contains("chmod 600"));
    set_mode(&f.key, 0o600);
    let log = f.path(LOG);
    let e = entries(&log);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["action"], "encode");
    assert_eq!(e[0]["outcome"], "refused");
    assert!(e[0]["reason"].as_str().unwrap().contains("chmod 600"));
    assert!(e[0]["key_fingerprint"].is_null());
    assert_eq!(
        e[0]["key_fingerprint_unverified"].as_str().unwrap().len(),
        16
    );
    // Too many rejects: refused, with the key, agency and counts known.
    f.encode().assert().code(3);
    // The linkage unit offered the key: refused and recorded.
    bloomlink()
        .arg("match")
        .arg(f.path("a.clk"))
        .arg(f.path("b.clk"))
        .arg("--key")
        .arg(&f.key)
        .arg("-o")
        .arg(f.path("links"))
        .assert()
        .code(2);
    let e = entries(&log);
    assert_eq!(e.len(), 3);
    assert_eq!(e[1]["outcome"], "refused");
    assert_eq!(e[1]["agency"], "health");
    assert_eq!(e[1]["counts"]["rejected"], 1);
    assert!(e[1]["key_fingerprint"].is_string());
    assert!(e[1]["reason"].as_str().unwrap().contains("rows rejected"));
    assert_eq!(e[2]["action"], "match");
    assert_eq!(e[2]["outcome"], "refused");
    assert_eq!(e[2]["options"]["key_given"], true);
    verify(&log).success().stdout(contains("OK: 3 entries"));
    // The report shows the refusals.
    bloomlink()
        .args(["audit", "report"])
        .arg(&log)
        .assert()
        .success()
        .stdout(contains("refusals: 2").and(contains("chmod 600")));
}

#[test]
fn an_unwritable_log_stops_the_encode() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let out = dir.path().join("h.clk");
    encode_cmd(&key, "health", &out)
        .arg("--audit-log")
        .arg(dir.path().join("no-such-dir/audit.jsonl"))
        .assert()
        .code(1)
        .stderr(contains("cannot write the audit log"));
    assert!(!out.exists());
    // The environment variable is honoured too.
    let env_log = dir.path().join("env.jsonl");
    encode_cmd(&key, "health", &out)
        .env(audit::ENV_VAR, &env_log)
        .assert()
        .success();
    assert_eq!(entries(&env_log).len(), 1);
    assert!(!dir.path().join(LOG).exists());
}

#[test]
fn report_answers_per_key() {
    let log = shared_log();
    bloomlink()
        .args(["audit", "report"])
        .arg(log)
        .assert()
        .success()
        .stdout(
            contains("Test Partnership")
                .and(contains("health"))
                .and(contains("police"))
                .and(contains("education"))
                .and(contains("match jobs: 1"))
                .and(contains("chain OK")),
        );
    let j: serde_json::Value =
        success_json(bloomlink().args(["audit", "report", "--json"]).arg(log));
    let keys = j["report"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(k["status"], "valid");
    assert_eq!(k["epoch"], 1);
    assert_eq!(k["agencies"].as_object().unwrap().len(), 3);
    assert_eq!(k["encodes"].as_array().unwrap().len(), 3);
    assert_eq!(k["matches"].as_array().unwrap().len(), 1);
    // --since in the future leaves no activity.
    bloomlink()
        .args(["audit", "report", "--json", "--since", "2999-01-01"])
        .arg(log)
        .assert()
        .success()
        .stdout(contains(r#""entries": 0"#));
}

/// Every command run with --json prints exactly one JSON object on stdout when it fails
/// (outcome, exit code, error), so that an IG script or monitor parses stdout whatever
/// happened: before, only encode and match did, and `audit verify --json` on an edited log
/// printed nothing (exit 6). A command that prints its own object on failure (inspect's report
/// of a file whose signature does not hold) gets no second one.
#[test]
fn every_command_prints_one_json_object_when_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let failed = |args: &[&std::ffi::OsStr], code: i32| failure_json(bloomlink().args(args), code);
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    // An edited log.
    let log = copy_log(dir.path());
    let mut l = lines(&log);
    l[1] = l[1].replacen("\"encode\"", "\"encodE\"", 1);
    write_lines(&log, &l);
    let j = failed(&[os("audit"), os("verify"), log.as_os_str()], 6);
    assert_eq!(j["outcome"], "error", "{j}");
    assert_eq!(j["exit_code"], 6, "{j}");
    assert!(j["error"].as_str().unwrap().contains("line 2"), "{j}");
    // A truncated encoding.
    let clk = dir.path().join("t.clk");
    let whole = std::fs::read(shared_log().parent().unwrap().join("health.clk")).unwrap();
    std::fs::write(&clk, &whole[..whole.len() / 2]).unwrap();
    let j = failed(&[os("inspect"), clk.as_os_str()], 5);
    assert_eq!(j["exit_code"], 5, "{j}");
    // A key readable by others.
    let key = demo_key(dir.path());
    set_mode(&key, 0o644);
    let j = failed(&[os("key"), os("show"), key.as_os_str()], 4);
    assert_eq!(j["outcome"], "key_refused", "{j}");
    // A missing input.
    let missing = dir.path().join("missing.csv");
    let j = failed(
        &[
            os("evaluate"),
            os("--truth"),
            missing.as_os_str(),
            missing.as_os_str(),
        ],
        1,
    );
    assert!(j["error"].as_str().unwrap().contains("missing.csv"), "{j}");
}

/// A log that is a symbolic link in a directory anyone can write to is refused: anyone could
/// have planted it, to have the run (perhaps as root) append to a file of their choosing. A
/// symbolic link in the owner's own directory is followed as before.
#[cfg(unix)]
#[test]
fn a_planted_symbolic_link_as_the_log_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let victim = dir.path().join("victim.txt");
    std::os::unix::fs::symlink(&victim, shared.join(LOG)).unwrap();
    bloomlink()
        .args(["key", "new", "--partnership", "P", "-o"])
        .arg(shared.join("k.key"))
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "a directory that anyone can write to",
        ));
    assert!(!victim.exists());
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::os::unix::fs::symlink(&victim, own.join(LOG)).unwrap();
    bloomlink()
        .args(["key", "new", "--partnership", "P", "-o"])
        .arg(own.join("k.key"))
        .assert()
        .success();
    assert!(std::fs::read_to_string(&victim)
        .unwrap()
        .contains("\"key.new\""));
}
