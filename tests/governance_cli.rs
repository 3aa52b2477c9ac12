//! Governance through the real binary: key rotation and retirement, signing keys, signed
//! exports checked against a trust file, signed audit checkpoints, and the attacks of issue 4
//! §5 (forged or relabelled signatures, expired/retired/world-readable/corrupted keys, keys of
//! the wrong kind, foreign log entries, concurrent writers). Each must be refused clearly, with
//! an audit entry where one makes sense.

mod common;

use std::path::{Path, PathBuf};

use bloomlink::date::Date;
use bloomlink::key::{LinkageKey, NewKey};
use common::*;
use predicates::prelude::*;
use predicates::str::contains;

const LOG: &str = "bloomlink-audit.jsonl";
const ROWS: &str = "H1,943 476 5919,Zoë,Mary,O'Brien,12/03/2015,F,sw1a 1aa\n\
H2,,Jack,,Smith-Jones,01/02/2016,M,LS6 2AB\nH3,,Aisha,,Khan,03/04/2012,F,M1 1AE\n";

/// A working directory with the demo key, one small export, a column map per agency, and
/// signing keys made on demand.
struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    input: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let key = demo_key(dir.path());
        let input = dir.path().join("in.csv");
        std::fs::write(&input, format!("{HEALTH_HEADER}{ROWS}")).unwrap();
        Setup { dir, key, input }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> PathBuf {
        self.path(LOG)
    }

    /// The column map of `agency` (the health map relabelled).
    fn map(&self, agency: &str) -> PathBuf {
        let p = self.path(&format!("{agency}.toml"));
        if !p.exists() {
            let text = HEALTH_MAP.replace("agency = \"health\"", &format!("agency = \"{agency}\""));
            std::fs::write(&p, text).unwrap();
        }
        p
    }

    /// `signing-key new --agency AGENCY -o NAME`.
    fn signing_key(&self, agency: &str, name: &str) -> PathBuf {
        let p = self.path(name);
        bloomlink()
            .args(["signing-key", "new", "--agency", agency, "-o"])
            .arg(&p)
            .assert()
            .success();
        p
    }

    /// A trust file with the public keys of the given signing key files.
    fn trust(&self, signing_keys: &[&Path]) -> PathBuf {
        let mut text = String::from("[agencies]\n");
        for k in signing_keys {
            let out = bloomlink()
                .args(["signing-key", "public"])
                .arg(k)
                .assert()
                .success()
                .get_output()
                .stdout
                .clone();
            let line = String::from_utf8(out)
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .to_string();
            text.push_str(&line);
            text.push('\n');
        }
        let p = self.path("trust.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `encode` of the export as `agency` with `key`, to `out`.
    fn encode_with(&self, key: &Path, agency: &str, out: &str) -> assert_cmd::Command {
        let mut c = bloomlink();
        c.args(["encode", "--quiet", "--key"])
            .arg(key)
            .arg("--columns")
            .arg(self.map(agency))
            .arg(&self.input)
            .arg("-o")
            .arg(self.path(out));
        c
    }

    fn encode(&self, agency: &str, out: &str) -> assert_cmd::Command {
        self.encode_with(&self.key, agency, out)
    }

    fn signed(&self, agency: &str, signing_key: &Path, out: &str) -> PathBuf {
        self.encode(agency, out)
            .arg("--sign-with")
            .arg(signing_key)
            .assert()
            .success();
        self.path(out)
    }

    fn entries(&self) -> Vec<serde_json::Value> {
        log_entries(&self.log())
    }

    fn last_entry(&self) -> serde_json::Value {
        self.entries().pop().expect("an audit entry")
    }

    fn match_cmd(&self, files: &[&Path], out: &str) -> assert_cmd::Command {
        let mut c = bloomlink();
        c.arg("match").args(files).arg("-o").arg(self.path(out));
        c
    }
}

fn log_entries(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `bloomlink inspect FILE [--trust TRUST]`.
fn inspect(file: &Path, trust: Option<&Path>) -> assert_cmd::assert::Assert {
    let mut c = bloomlink();
    c.arg("inspect").arg(file);
    if let Some(t) = trust {
        c.arg("--trust").arg(t);
    }
    c.assert()
}

fn verify_log(log: &Path) -> assert_cmd::assert::Assert {
    bloomlink().args(["audit", "verify"]).arg(log).assert()
}

fn replace_once(b: &mut [u8], from: &[u8], to: &[u8], start: usize) -> usize {
    assert_eq!(from.len(), to.len());
    let at = start
        + b[start..]
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
    b[at..at + to.len()].copy_from_slice(to);
    at
}

// ---------------------------------------------------------------------------------------------
// Key lifecycle.

#[test]
fn rotation_makes_the_next_epoch_and_records_the_lineage() {
    let s = Setup::new();
    let old = s.path("k1.key");
    bloomlink()
        .args([
            "key",
            "new",
            "--partnership",
            "Test Partnership",
            "--purpose",
            "p1",
        ])
        .arg("-o")
        .arg(&old)
        .assert()
        .success();
    let new = s.path("k2.key");
    let j = success_json(
        bloomlink()
            .args(["key", "rotate", "--json"])
            .arg(&old)
            .arg("-o")
            .arg(&new),
    );
    let old_fp = j["previous"]["fingerprint"].as_str().unwrap().to_string();
    let new_fp = j["key"]["fingerprint"].as_str().unwrap().to_string();
    assert_ne!(old_fp, new_fp);
    assert_eq!(j["key"]["epoch"], 2);
    assert_eq!(j["key"]["previous"], old_fp.as_str());
    assert_eq!(j["key"]["partnership"], "Test Partnership");
    assert_eq!(j["key"]["purpose"], "p1");
    assert_eq!(mode_of(&new), 0o600);
    let text = std::fs::read_to_string(&new).unwrap();
    assert!(text.contains(&format!("# previous: {old_fp}")));
    // The expiry is a YYYY-MM-DD date, as in the key file (not a {day, month, year} object).
    let expires = j["key"]["expires"].as_str().expect("expires as text");
    assert!(Date::parse_iso(expires).is_some(), "{expires}");
    assert!(
        text.contains(&format!("# expires: {expires}\n")),
        "{expires}"
    );
    let previous = j["previous"]["expires"].as_str().expect("expires as text");
    assert!(Date::parse_iso(previous).is_some(), "{previous}");
    let shown = success_json(bloomlink().args(["key", "show", "--json"]).arg(&new));
    assert_eq!(shown["key"]["expires"], expires);
    bloomlink()
        .args(["key", "show"])
        .arg(&new)
        .assert()
        .success()
        .stdout(contains(format!("replaces     {old_fp}")).and(contains("epoch        2")));
    // Never over an existing file.
    let old_text = std::fs::read_to_string(&old).unwrap();
    bloomlink()
        .args(["key", "rotate"])
        .arg(&new)
        .arg("-o")
        .arg(&old)
        .assert()
        .code(1)
        .stderr(contains("already exists").and(contains("--force").not()));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), old_text);
    // Never the same key twice: that would make two different keys of epoch 2. The log
    // remembers the first rotation.
    let fork = s.path("k2-again.key");
    bloomlink()
        .args(["key", "rotate"])
        .arg(&old)
        .arg("-o")
        .arg(&fork)
        .assert()
        .code(4)
        .stderr(contains("already rotated").and(contains(new_fp.as_str())));
    assert!(!fork.exists());
    assert_eq!(std::fs::read_to_string(&new).unwrap(), text);
    let e = s.entries();
    let rot: Vec<_> = e.iter().filter(|x| x["action"] == "key.rotate").collect();
    assert_eq!(rot.len(), 3);
    assert_eq!(rot[2]["outcome"], "refused");
    assert_eq!(rot[0]["outcome"], "done");
    assert_eq!(rot[0]["key_fingerprint"], new_fp.as_str());
    assert_eq!(rot[0]["key_epoch"], 2);
    assert_eq!(rot[0]["options"]["previous_fingerprint"], old_fp.as_str());
    assert_eq!(rot[0]["key_info"]["previous"], old_fp.as_str());
    assert_eq!(rot[1]["outcome"], "refused");
    verify_log(&s.log()).success();
    // The report shows the lineage.
    bloomlink()
        .args(["audit", "report"])
        .arg(s.log())
        .assert()
        .success()
        .stdout(contains(format!("epoch 2 (replaces {old_fp})")));
}

/// `key new --expires EXPIRES -o OUT` for partnership P.
fn key_new_expiring(expires: &str, out: &Path) -> assert_cmd::Command {
    let mut c = bloomlink();
    c.args([
        "key",
        "new",
        "--partnership",
        "P",
        "--expires",
        expires,
        "-o",
    ])
    .arg(out);
    c
}

#[test]
fn a_day_that_does_not_exist_is_refused_as_such() {
    let s = Setup::new();
    let out = s.path("new.key");
    key_new_expiring("2030-02-30", &out)
        .assert()
        .code(2)
        .stderr(
            contains("that day does not exist: February 2030 has days 01 to 28")
                .and(contains("expected a date as YYYY-MM-DD").not()),
        );
    bloomlink()
        .args(["key", "rotate"])
        .arg(&s.key)
        .args(["--expires", "2030-13-01", "-o"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("that month does not exist: months are 01 to 12"));
    key_new_expiring("30/01/2030", &out)
        .assert()
        .code(2)
        .stderr(contains("expected a date as YYYY-MM-DD"));
    assert!(!out.exists());
}

#[test]
fn a_key_may_expire_today_but_not_in_the_past() {
    use assert_cmd::assert::OutputAssertExt;
    let s = Setup::new();
    let today = Date::today_utc();
    let out = s.path("today.key");
    let new = key_new_expiring(&today.to_string(), &out).output().unwrap();
    let show = bloomlink()
        .args(["key", "show"])
        .arg(&out)
        .output()
        .unwrap();
    if Date::today_utc() == today {
        // (Unless the test ran across midnight UTC.)
        new.assert().success();
        show.assert().success().stdout(contains(format!(
            "valid, expires {today} (today is its last day of use)"
        )));
    }
    let past = Date::from_days(today.to_days() - 2);
    let old = s.path("past.key");
    key_new_expiring(&past.to_string(), &old)
        .assert()
        .code(2)
        .stderr(contains(format!("expiry date {past} is in the past")));
    assert!(!old.exists());
}

#[test]
fn a_retired_key_is_refused_unless_overridden_and_the_override_is_audited() {
    let s = Setup::new();
    let key = s.path("k.key");
    bloomlink()
        .args(["key", "new", "--partnership", "Test Partnership", "-o"])
        .arg(&key)
        .assert()
        .success();
    let backup = s.path("backup.key");
    std::fs::copy(&key, &backup).unwrap();
    set_mode(&backup, 0o600);
    s.encode_with(&key, "health", "a.clk").assert().success();
    bloomlink()
        .args(["key", "retire"])
        .arg(&key)
        .assert()
        .success()
        .stdout(contains("Retired linkage key"));
    assert_eq!(mode_of(&key), 0o600);
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("# retired: "));
    bloomlink()
        .args(["key", "show"])
        .arg(&key)
        .assert()
        .success()
        .stdout(contains("RETIRED on"));
    // Retiring twice is refused.
    bloomlink()
        .args(["key", "retire"])
        .arg(&key)
        .assert()
        .code(4)
        .stderr(contains("already retired"));
    // A retired key has been replaced already: rotating it again is refused.
    bloomlink()
        .args(["key", "rotate"])
        .arg(&key)
        .arg("-o")
        .arg(s.path("from-retired.key"))
        .assert()
        .code(4)
        .stderr(contains("was retired"));
    assert!(!s.path("from-retired.key").exists());
    s.encode_with(&key, "health", "b.clk")
        .assert()
        .code(4)
        .stderr(contains("retired").and(contains("--allow-retired")));
    assert!(!s.path("b.clk").exists());
    let e = s.last_entry();
    assert_eq!(e["action"], "encode");
    assert_eq!(e["outcome"], "refused");
    assert!(e["reason"].as_str().unwrap().contains("retired"));
    // Editing the retirement away breaks the check value.
    let edited = s.path("edited.key");
    let text: String = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("# retired:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&edited, text).unwrap();
    set_mode(&edited, 0o600);
    s.encode_with(&edited, "health", "c.clk")
        .assert()
        .code(4)
        .stderr(contains("checksum"));
    // A copy restored from before the retirement is refused through the audit log.
    s.encode_with(&backup, "health", "d.clk")
        .assert()
        .code(4)
        .stderr(contains("retired").and(contains("old copy")));
    // The override works and is recorded.
    s.encode_with(&key, "health", "e.clk")
        .arg("--allow-retired")
        .assert()
        .success()
        .stderr(contains("retired"));
    let e = s.last_entry();
    assert_eq!(e["outcome"], "done");
    assert_eq!(e["options"]["allow_retired"], true);
    assert_eq!(e["options"]["key_retired_override"], true);
    let actions: Vec<String> = s
        .entries()
        .iter()
        .map(|x| x["action"].as_str().unwrap().to_string())
        .collect();
    assert!(actions.contains(&"key.retire".to_string()));
    verify_log(&s.log()).success();
    let j = success_json(bloomlink().args(["audit", "report", "--json"]).arg(s.log()));
    let k = &j["report"]["keys"][0];
    assert_eq!(k["status"], "retired");
    let overrides = k["overrides"].as_array().unwrap();
    assert!(overrides
        .iter()
        .any(|o| o["what"].as_str().unwrap().contains("--allow-retired")));
    // `risk` refuses the retired key too, naming the override it accepts.
    let risk = |extra: &[&str]| {
        let mut c = bloomlink();
        c.args(["risk", "--key"])
            .arg(&key)
            .arg("--columns")
            .arg(s.map("health"))
            .arg(&s.input)
            .arg("--audit-log")
            .arg(s.log())
            .args(extra);
        c
    };
    risk(&[])
        .assert()
        .code(4)
        .stderr(contains("retired").and(contains("--allow-retired")));
    risk(&["--allow-retired"]).assert().success();
    assert_eq!(s.last_entry()["options"]["allow_retired"], true);
}

#[test]
fn an_expired_key_is_refused_unless_overridden_and_the_override_is_audited() {
    let s = Setup::new();
    let today = Date::today_utc();
    let made = Date::from_days(today.to_days() - 400);
    let key = LinkageKey::generate_as_of(
        &NewKey {
            partnership: "Test Partnership".into(),
            purpose: "test".into(),
            expires: Some(Date::from_days(today.to_days() - 10)),
            epoch: 3,
        },
        made,
    )
    .unwrap();
    let p = s.path("old.key");
    key.save(&p).unwrap();
    s.encode_with(&p, "health", "a.clk")
        .assert()
        .code(4)
        .stderr(contains("expired").and(contains("--allow-expired")));
    assert_eq!(s.last_entry()["outcome"], "refused");
    // The summary says the key was used expired (encode_with runs it with --quiet, which
    // hides only the progress bar).
    s.encode_with(&p, "health", "a.clk")
        .arg("--allow-expired")
        .assert()
        .success()
        .stdout(contains("(EXPIRED, used with --allow-expired)"));
    let e = s.last_entry();
    assert_eq!(e["outcome"], "done");
    assert_eq!(e["key_epoch"], 3);
    assert_eq!(e["options"]["key_expired_override"], true);
}

#[test]
fn corrupted_and_world_readable_keys_are_refused_and_audited() {
    let s = Setup::new();
    // A mangled secret line.
    let bad = s.path("bad.key");
    let text = std::fs::read_to_string(&s.key).unwrap();
    std::fs::write(
        &bad,
        text.replace("bloomlink-key-1:bf", "bloomlink-key-1:zz"),
    )
    .unwrap();
    set_mode(&bad, 0o600);
    s.encode_with(&bad, "health", "a.clk")
        .assert()
        .code(4)
        .stderr(contains("mangled"));
    // One flipped hex digit: the check value catches it.
    std::fs::write(
        &bad,
        text.replace("bloomlink-key-1:bf", "bloomlink-key-1:bE"),
    )
    .unwrap();
    s.encode_with(&bad, "health", "a.clk")
        .assert()
        .code(4)
        .stderr(contains("checksum").or(contains("mangled")));
    // A signing key readable by others.
    let sk = s.signing_key("health", "health.sig");
    set_mode(&sk, 0o640);
    s.encode("health", "a.clk")
        .arg("--sign-with")
        .arg(&sk)
        .assert()
        .code(4)
        .stderr(contains("chmod 600").and(contains("signing key must be private")));
    let e = s.entries();
    let refused: Vec<_> = e
        .iter()
        .filter(|x| x["action"] == "encode" && x["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 3);
    assert!(!s.path("a.clk").exists());
    // Files holding secrets are never hashed into the log, and no secret is in it.
    let log = std::fs::read_to_string(s.log()).unwrap();
    let secret = text.lines().last().unwrap();
    assert!(!log.contains(&secret["bloomlink-key-1:".len()..][..64]));
}

#[test]
fn a_directory_given_as_a_key_is_refused_as_a_directory() {
    let s = Setup::new();
    let dir = s.path("keys");
    std::fs::create_dir(&dir).unwrap();
    set_mode(&dir, 0o755);
    let refused = |a: assert_cmd::assert::Assert| {
        a.code(4)
            .stderr(contains("is a directory, not a key file").and(contains("chmod").not()));
    };
    refused(bloomlink().args(["key", "show"]).arg(&dir).assert());
    refused(s.encode_with(&dir, "health", "a.clk").assert());
    refused(
        s.encode("health", "a.clk")
            .arg("--sign-with")
            .arg(&dir)
            .assert(),
    );
    refused(
        bloomlink()
            .args(["signing-key", "public"])
            .arg(&dir)
            .assert(),
    );
    assert!(!s.path("a.clk").exists());
}

#[test]
fn keys_of_the_wrong_kind_are_refused_by_name() {
    let s = Setup::new();
    let sk = s.signing_key("health", "health.sig");
    // A signing key offered as the linkage key.
    s.encode_with(&sk, "health", "a.clk")
        .assert()
        .code(4)
        .stderr(contains("is a signing key, not a linkage key"));
    assert_eq!(s.last_entry()["outcome"], "refused");
    // A linkage key offered as the signing key.
    s.encode("health", "a.clk")
        .arg("--sign-with")
        .arg(&s.key)
        .assert()
        .code(4)
        .stderr(contains("is a linkage key, not a signing key"));
    assert_eq!(s.last_entry()["outcome"], "refused");
    // A public key offered as either.
    let public = s.path("health.pub");
    bloomlink()
        .args(["signing-key", "public"])
        .arg(&sk)
        .arg("-o")
        .arg(&public)
        .assert()
        .success();
    // Readable by all, as a public key is meant to be: named, no `chmod` advice.
    set_mode(&public, 0o644);
    s.encode_with(&public, "health", "a.clk")
        .assert()
        .code(4)
        .stderr(contains("public signing key").and(contains("chmod").not()));
    s.encode("health", "a.clk")
        .arg("--sign-with")
        .arg(&public)
        .assert()
        .code(4)
        .stderr(contains("public signing key").and(contains("chmod").not()));
    set_mode(&public, 0o600);
    s.encode_with(&public, "health", "a.clk")
        .assert()
        .code(4)
        .stderr(contains("public signing key, not a linkage key"));
    s.encode("health", "a.clk")
        .arg("--sign-with")
        .arg(&public)
        .assert()
        .code(4)
        .stderr(contains("is a public key"));
    // `signing-key public` on a linkage key, and `key show` on a signing key.
    bloomlink()
        .args(["signing-key", "public"])
        .arg(&s.key)
        .assert()
        .code(4)
        .stderr(contains("is a linkage key"));
    bloomlink()
        .args(["key", "show"])
        .arg(&sk)
        .assert()
        .code(4)
        .stderr(contains("is a signing key"));
    assert!(!s.path("a.clk").exists());
    verify_log(&s.log()).success();
}

// ---------------------------------------------------------------------------------------------
// Signing keys and signed exports.

#[test]
fn signing_keys_are_private_files_and_their_actions_are_audited() {
    let s = Setup::new();
    let sk = s.signing_key("health", "health.sig");
    assert_eq!(mode_of(&sk), 0o600);
    let text = std::fs::read_to_string(&sk).unwrap();
    assert!(text.contains("# agency: health"));
    assert!(text.contains("# public-key: ed25519:"));
    // Never over an existing file.
    bloomlink()
        .args(["signing-key", "new", "--agency", "health", "-o"])
        .arg(&sk)
        .assert()
        .code(1)
        .stderr(contains("already exists").and(contains("--force").not()));
    assert_eq!(std::fs::read_to_string(&sk).unwrap(), text);
    bloomlink()
        .args(["signing-key", "new", "--agency", "Health Team", "-o"])
        .arg(s.path("x.sig"))
        .assert()
        .code(2)
        .stderr(contains("lower-case"));
    let j = success_json(
        bloomlink()
            .args(["signing-key", "public", "--json"])
            .arg(&sk),
    );
    assert_eq!(j["agency"], "health");
    let pk = j["public_key"].as_str().unwrap();
    assert!(pk.starts_with("ed25519:") && pk.len() == 8 + 64);
    assert!(text.contains(pk));
    // Edited agency line: refused.
    let edited = s.path("edited.sig");
    std::fs::write(
        &edited,
        text.replace("# agency: health", "# agency: police"),
    )
    .unwrap();
    set_mode(&edited, 0o600);
    bloomlink()
        .args(["signing-key", "public"])
        .arg(&edited)
        .assert()
        .code(4)
        .stderr(contains("checksum"));
    let e = s.entries();
    let actions: Vec<(&str, &str)> = e
        .iter()
        .map(|x| {
            (
                x["action"].as_str().unwrap(),
                x["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("signing-key.new", "done"),
            ("signing-key.new", "refused"),
            ("signing-key.new", "refused"),
            ("signing-key.public", "done"),
            ("signing-key.public", "refused"),
        ]
    );
    assert_eq!(e[0]["signer"]["agency"], "health");
    assert_eq!(e[0]["signer"]["fingerprint"], j["fingerprint"]);
    verify_log(&s.log()).success();
    bloomlink()
        .args(["audit", "report"])
        .arg(s.log())
        .assert()
        .success()
        .stdout(contains("Signing key actions: 5"));
}

#[test]
fn a_signing_key_of_another_agency_is_refused_at_encode_time() {
    let s = Setup::new();
    let police = s.signing_key("police", "police.sig");
    s.encode("health", "a.clk")
        .arg("--sign-with")
        .arg(&police)
        .assert()
        .code(4)
        .stderr(contains("police's signing key").and(contains("agency health")));
    assert!(!s.path("a.clk").exists());
    assert_eq!(s.last_entry()["outcome"], "refused");
}

#[test]
fn signed_files_verify_against_the_trust_file_and_are_matched() {
    let s = Setup::new();
    let hk = s.signing_key("health", "health.sig");
    let pk = s.signing_key("police", "police.sig");
    let trust = s.trust(&[&hk, &pk]);
    let h = s.signed("health", &hk, "health.clk");
    let p = s.signed("police", &pk, "police.clk");
    let e = s.last_entry();
    assert_eq!(e["options"]["signed"], true);
    assert_eq!(e["signer"]["agency"], "police");
    assert_eq!(&std::fs::read(&h).unwrap()[8..12], &2u32.to_le_bytes());
    inspect(&h, Some(&trust))
        .success()
        .stdout(contains("signed by health").and(contains("verified against the trust file")));
    let j = success_json(bloomlink().args(["inspect", "--json"]).arg(&h));
    assert_eq!(j["format_version"], 2);
    assert_eq!(j["signature"]["agency"], "health");
    assert_eq!(j["signature"]["valid"], true);
    s.match_cmd(&[&h, &p], "links")
        .arg("--trust")
        .arg(&trust)
        .assert()
        .success()
        .stdout(contains("health verified, police verified"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("links/report.json")).unwrap()).unwrap();
    let sigs = report["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2);
    for x in sigs {
        assert_eq!(x["status"], "verified");
        assert_eq!(x["signer"], x["agency"]);
    }
    let e = s.last_entry();
    assert_eq!(e["action"], "match");
    assert_eq!(e["outcome"], "done");
    // Which trust file decided is on record.
    let trust_sha = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&trust).unwrap(),
    ));
    assert_eq!(e["options"]["trust_sha256"], trust_sha.as_str());
    for i in e["inputs"].as_array().unwrap() {
        assert_eq!(i["signature"], "verified");
        assert_eq!(i["signer"]["agency"], i["agency"]);
    }
}

#[test]
fn unsigned_inputs_are_refused_unless_allowed_and_the_allowance_is_recorded() {
    let s = Setup::new();
    let hk = s.signing_key("health", "health.sig");
    let pk = s.signing_key("police", "police.sig");
    let trust = s.trust(&[&hk, &pk]);
    let h = s.signed("health", &hk, "health.clk");
    s.encode("police", "police.clk").assert().success();
    let p = s.path("police.clk");
    // An unsigned (version 1) file is still read.
    inspect(&p, None).success().stdout(contains("unsigned"));
    inspect(&p, Some(&trust))
        .code(5)
        .stderr(contains("police.clk").and(contains("is not signed")));
    s.match_cmd(&[&h, &p], "links")
        .arg("--trust")
        .arg(&trust)
        .assert()
        .code(5)
        .stderr(contains("police.clk").and(contains("is not signed")));
    assert!(!s.path("links").exists());
    let e = s.last_entry();
    assert_eq!(e["outcome"], "refused");
    assert_eq!(e["inputs"][0]["signature"], "verified");
    assert_eq!(e["inputs"][1]["signature"], "refused");
    // --allow-unsigned needs --trust.
    s.match_cmd(&[&h, &p], "links")
        .arg("--allow-unsigned")
        .assert()
        .code(2);
    s.match_cmd(&[&h, &p], "links")
        .arg("--trust")
        .arg(&trust)
        .arg("--allow-unsigned")
        .assert()
        .success()
        .stdout(contains("police allowed-unsigned"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("links/report.json")).unwrap()).unwrap();
    assert_eq!(report["signatures"][0]["status"], "verified");
    assert_eq!(report["signatures"][1]["status"], "allowed-unsigned");
    assert!(report["signatures"][1]["signer"].is_null());
    let e = s.last_entry();
    assert_eq!(e["outcome"], "done");
    assert_eq!(e["options"]["allow_unsigned"], true);
    assert_eq!(e["inputs"][1]["signature"], "allowed-unsigned");
    bloomlink()
        .args(["audit", "report"])
        .arg(s.log())
        .assert()
        .success()
        .stdout(contains(
            "signatures: health verified, police allowed-unsigned",
        ));
    let j = success_json(bloomlink().args(["audit", "report", "--json"]).arg(s.log()));
    let m = j["report"]["keys"][0]["matches"].as_array().unwrap();
    assert_eq!(
        m.last().unwrap()["signatures"]["police"],
        "allowed-unsigned"
    );
    let overrides = j["report"]["keys"][0]["overrides"].as_array().unwrap();
    assert!(overrides
        .iter()
        .any(|o| o["what"].as_str().unwrap().contains("--allow-unsigned")));
}

#[test]
fn an_agency_missing_from_the_trust_file_is_refused() {
    let s = Setup::new();
    let hk = s.signing_key("health", "health.sig");
    let ek = s.signing_key("education", "education.sig");
    let trust = s.trust(&[&hk]);
    let h = s.signed("health", &hk, "health.clk");
    let e = s.signed("education", &ek, "education.clk");
    s.match_cmd(&[&h, &e], "links")
        .arg("--trust")
        .arg(&trust)
        .arg("--allow-unsigned")
        .assert()
        .code(5)
        .stderr(
            contains("education.clk").and(contains("agency education is not in the trust file")),
        );
}

#[test]
fn a_forged_signature_is_refused() {
    let s = Setup::new();
    let hk = s.signing_key("health", "health.sig");
    let pk = s.signing_key("police", "police.sig");
    let trust = s.trust(&[&hk, &pk]);
    let h = s.signed("health", &hk, "health.clk");
    let p = s.signed("police", &pk, "police.clk");
    let good = std::fs::read(&h).unwrap();

    // A changed signature byte (trailer re-forged).
    let mut b = good.clone();
    let n = b.len();
    b[n - 33] ^= 0x01;
    reforge(&mut b);
    std::fs::write(&h, &b).unwrap();
    s.match_cmd(&[&h, &p], "links")
        .arg("--trust")
        .arg(&trust)
        .assert()
        .code(5)
        .stderr(contains("health.clk").and(contains("bad signature")));

    // Content changed after signing (a bit of the first filter; trailer re-forged): the file
    // is still well formed, only the signature catches it.
    std::fs::write(&h, &good).unwrap();
    let j = success_json(bloomlink().args(["inspect", "--json"]).arg(&h));
    assert_eq!(j["outcome"], "done");
    let filters = j["header"]["sections"]["filters"]["offset"]
        .as_u64()
        .unwrap() as usize;
    let mut b = good.clone();
    b[filters + 3] ^= 0x10;
    reforge(&mut b);
    std::fs::write(&h, &b).unwrap();
    // `inspect` prints its report and fails (exit 5), trust file or not, so that a script's
    // `inspect f && send f` stops here.
    let a = bloomlink()
        .args(["inspect", "--json"])
        .arg(&h)
        .assert()
        .code(5)
        .stderr(contains("altered after signing"));
    let j: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(j["signature"]["valid"], false);
    assert_eq!(j["outcome"], "signature_invalid");
    assert_eq!(j["exit_code"], 5);
    inspect(&h, None)
        .code(5)
        .stdout(contains("INVALID"))
        .stderr(contains("health.clk").and(contains("altered after signing")));
    // So does `match` without a trust file: the signature does not hold even by itself.
    s.match_cmd(&[&h, &p], "links-no-trust")
        .assert()
        .code(5)
        .stderr(contains("health.clk").and(contains("altered after signing")));
    assert!(!s.path("links-no-trust").exists());
    inspect(&h, Some(&trust))
        .code(5)
        .stderr(contains("health.clk").and(contains("bad signature")));

    // Re-signed by someone else's key that claims to be health.
    std::fs::write(&h, &good).unwrap();
    let rogue = s.signing_key("health", "rogue.sig");
    let forged = s.signed("health", &rogue, "forged.clk");
    s.match_cmd(&[&forged, &p], "links")
        .arg("--trust")
        .arg(&trust)
        .assert()
        .code(5)
        .stderr(contains("forged.clk").and(contains("not by health's trusted key")));
    assert!(!s.path("links").exists());
    let refused = s
        .entries()
        .into_iter()
        .filter(|e| e["action"] == "match" && e["outcome"] == "refused")
        .count();
    assert_eq!(refused, 3);
}

/// `inspect` fails on a bad signature even when the reader of its report has gone
/// (`inspect f | head` under `set -o pipefail`): the closed pipe does not make it exit 0.
#[test]
fn inspect_refuses_a_bad_signature_even_when_stdout_is_closed() {
    let s = Setup::new();
    let hk = s.signing_key("health", "health.sig");
    let h = s.signed("health", &hk, "health.clk");
    // Content changed after signing (trailer re-forged): without a trust file, inspect prints
    // its report and then fails.
    let j = success_json(bloomlink().args(["inspect", "--json"]).arg(&h));
    let filters = j["header"]["sections"]["filters"]["offset"]
        .as_u64()
        .unwrap() as usize;
    let mut b = std::fs::read(&h).unwrap();
    b[filters + 3] ^= 0x10;
    reforge(&mut b);
    std::fs::write(&h, &b).unwrap();
    for json in [false, true] {
        // A pipe whose reading end is closed before inspect starts.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("bloomlink"));
        c.arg("inspect").arg(&h).stdout(writer);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(5), "json {json}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("altered after signing"));
    }
}

#[test]
fn a_file_signed_by_one_agency_but_labelled_as_another_is_refused() {
    let s = Setup::new();
    let hk = s.signing_key("health", "health.sig");
    let pk = s.signing_key("police", "police.sig");
    let trust = s.trust(&[&hk, &pk]);
    let h = s.signed("health", &hk, "health.clk");
    let p = s.signed("police", &pk, "police.clk");
    // Police's file relabelled as health in the header (same length), trailer re-forged.
    let mut b = std::fs::read(&p).unwrap();
    replace_once(&mut b, b"police", b"health", 16);
    reforge(&mut b);
    let relabelled = s.path("relabelled.clk");
    std::fs::write(&relabelled, &b).unwrap();
    s.match_cmd(&[&relabelled, &p], "links")
        .arg("--trust")
        .arg(&trust)
        .assert()
        .code(5)
        .stderr(contains("relabelled.clk").and(contains(
            "labelled agency health but signed with agency police's key",
        )));
    // `inspect` fails on it too, with no trust file.
    inspect(&relabelled, None)
        .code(5)
        .stderr(contains("relabelled.clk"));
    // …and the signature block relabelled too: the key is still police's.
    let sig_at = b.windows(8).position(|w| w == b"BLOOMSIG").unwrap();
    replace_once(&mut b, b"police", b"health", sig_at);
    reforge(&mut b);
    std::fs::write(&relabelled, &b).unwrap();
    s.match_cmd(&[&h, &relabelled], "links")
        .arg("--trust")
        .arg(&trust)
        .arg("--dedupe")
        .assert()
        .code(5)
        .stderr(
            contains("relabelled.clk")
                .and(contains("not by health's trusted key"))
                .and(contains("the trust file's key of police")),
        );
}

#[test]
fn a_trust_file_naming_the_current_linkage_key_refuses_encodings_made_with_another() {
    let s = Setup::new();
    let hk = s.signing_key("health", "health.sig");
    let pk = s.signing_key("police", "police.sig");
    let trust = s.trust(&[&hk, &pk]);
    // The custodian rotated from the demo key (epoch 1) to epoch 2.
    let next = s.path("next.key");
    bloomlink()
        .args(["key", "rotate"])
        .arg(&s.key)
        .arg("-o")
        .arg(&next)
        .assert()
        .success();
    let j = success_json(bloomlink().args(["key", "show", "--json"]).arg(&next));
    let fp = j["key"]["fingerprint"].as_str().unwrap().to_string();
    let mut text = std::fs::read_to_string(&trust).unwrap();
    text.push_str(&format!("\n[linkage_key]\nfingerprint = \"{fp}\"\n"));
    std::fs::write(&trust, text).unwrap();
    // Health moved to the new key; police still encodes with the old one.
    s.encode_with(&next, "health", "health.clk")
        .arg("--sign-with")
        .arg(&hk)
        .assert()
        .success();
    let p = s.signed("police", &pk, "police.clk");
    let h = s.path("health.clk");
    inspect(&h, Some(&trust)).success();
    inspect(&p, Some(&trust))
        .code(5)
        .stderr(contains("police.clk").and(contains("not the partnership's current key")));
    // Police re-encodes with the current key: accepted.
    s.encode_with(&next, "police", "police2.clk")
        .arg("--sign-with")
        .arg(&pk)
        .assert()
        .success();
    s.match_cmd(&[&h, &s.path("police2.clk")], "links")
        .arg("--trust")
        .arg(&trust)
        .assert()
        .success();
    // A malformed pin is refused.
    let text = std::fs::read_to_string(&trust).unwrap();
    std::fs::write(&trust, text.replace(&fp, "xyz")).unwrap();
    inspect(&h, Some(&trust))
        .code(1)
        .stderr(contains("trust file").and(contains("16 hex digits")));
}

// ---------------------------------------------------------------------------------------------
// The audit log: signed checkpoints, foreign entries, concurrent writers.

/// A small log of a few key actions in `s`'s directory; returns its path.
fn small_log(s: &Setup) -> PathBuf {
    for i in 0..3 {
        bloomlink()
            .args(["key", "new", "--partnership", "Test Partnership", "-o"])
            .arg(s.path(&format!("k{i}.key")))
            .assert()
            .success();
    }
    s.log()
}

#[test]
fn a_signed_checkpoint_proves_the_log_was_not_rewritten() {
    let s = Setup::new();
    let ig = s.signing_key("ig-lead", "ig.sig");
    let log = small_log(&s);
    let other = s.signing_key("health", "health.sig");
    let trust = s.trust(&[&ig, &other]);
    let cp = s.path("cp.json");
    let j = success_json(
        bloomlink()
            .args(["audit", "checkpoint", "--json", "--sign-with"])
            .arg(&ig)
            .arg("-o")
            .arg(&cp)
            .arg(&log),
    );
    // 3 key.new + 2 signing-key.new + 2 signing-key.public, then the checkpoint.
    assert_eq!(j["entries"], 8);
    assert_eq!(j["seq"], 7);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    assert_eq!(file["head"], j["head"]);
    assert_eq!(file["agency"], "ig-lead");
    assert_eq!(file["signature"].as_str().unwrap().len(), 128);
    let last = log_entries(&log).pop().unwrap();
    assert_eq!(last["action"], "audit.checkpoint");
    assert_eq!(last["signer"]["agency"], "ig-lead");
    let verify_cp = |trust: &Path| {
        let mut c = bloomlink();
        c.args(["audit", "verify", "--checkpoint"])
            .arg(&cp)
            .arg("--trust")
            .arg(trust)
            .arg(&log);
        c
    };
    verify_cp(&trust)
        .assert()
        .success()
        .stdout(contains("OK: 8 entries").and(contains("signed by ig-lead verified")));
    // The log grows: still fine.
    bloomlink()
        .args(["key", "show"])
        .arg(s.path("k0.key"))
        .assert()
        .success();
    verify_cp(&trust).assert().success();
    // A refused signing key is recorded, and no checkpoint is made.
    bloomlink()
        .args(["audit", "checkpoint", "--sign-with"])
        .arg(&s.key)
        .arg("-o")
        .arg(s.path("cp2.json"))
        .arg(&log)
        .assert()
        .code(4)
        .stderr(contains("is a linkage key"));
    assert!(!s.path("cp2.json").exists());
    let last = log_entries(&log).pop().unwrap();
    assert_eq!(last["action"], "audit.checkpoint");
    assert_eq!(last["outcome"], "refused");
    verify_cp(&trust).assert().success();
    // A signed checkpoint needs a trust file.
    bloomlink()
        .args(["audit", "verify", "--checkpoint"])
        .arg(&cp)
        .arg(&log)
        .assert()
        .code(2)
        .stderr(contains("--trust"));
    // A signer not in the trust file.
    let only_health = s.path("only-health.toml");
    let t = std::fs::read_to_string(&trust).unwrap();
    let health_line = t.lines().find(|l| l.starts_with("health")).unwrap();
    std::fs::write(&only_health, format!("[agencies]\n{health_line}\n")).unwrap();
    verify_cp(&only_health)
        .assert()
        .code(6)
        .stderr(contains("agency ig-lead is not in the trust file"));
    // An edited checkpoint (another head) does not verify.
    let original = std::fs::read_to_string(&cp).unwrap();
    let head = file["head"].as_str().unwrap();
    let first_hash = log_entries(&log)[0]["hash"].as_str().unwrap().to_string();
    std::fs::write(&cp, original.replace(head, &first_hash)).unwrap();
    verify_cp(&trust)
        .assert()
        .code(6)
        .stderr(contains("does not verify"));
    std::fs::write(&cp, &original).unwrap();
    // The log rewritten wholesale (a fresh, valid chain of the same length): caught.
    let saved = std::fs::read(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    for i in 0..9 {
        bloomlink()
            .args(["key", "show"])
            .arg(s.path(&format!("k{}.key", i % 3)))
            .arg("--audit-log")
            .arg(&log)
            .assert()
            .success();
    }
    verify_log(&log).success();
    verify_cp(&trust)
        .assert()
        .code(6)
        .stderr(contains("checkpointed head"));
    // Truncated at a line boundary before the checkpoint: caught.
    let lines: Vec<&[u8]> = saved.split_inclusive(|&b| b == b'\n').collect();
    std::fs::write(&log, lines[..6].concat()).unwrap();
    verify_log(&log).success();
    verify_cp(&trust)
        .assert()
        .code(6)
        .stderr(contains("checkpointed head"));
}

#[test]
fn entries_of_a_forked_copy_of_the_log_appended_are_foreign() {
    let s = Setup::new();
    let log = small_log(&s);
    // The log is copied to another machine; both go on writing.
    let other = tempfile::tempdir().unwrap();
    let copy = other.path().join(LOG);
    std::fs::copy(&log, &copy).unwrap();
    bloomlink()
        .args(["key", "show"])
        .arg(s.path("k0.key"))
        .assert()
        .success();
    bloomlink()
        .args(["key", "show"])
        .arg(s.path("k1.key"))
        .arg("--audit-log")
        .arg(&copy)
        .assert()
        .success();
    verify_log(&log).success();
    verify_log(&copy).success();
    // The copy's new entry appended to the original: seq 3 twice, chained to line 3.
    let mut text = std::fs::read_to_string(&log).unwrap();
    let theirs = std::fs::read_to_string(&copy).unwrap();
    text.push_str(theirs.lines().last().unwrap());
    text.push('\n');
    std::fs::write(&log, &text).unwrap();
    verify_log(&log)
        .code(6)
        .stderr(contains("line 5 (seq 3): foreign").and(contains("copy of this log")));
    // An entry duplicated verbatim is named too.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    let dup = lines[1];
    lines.push(dup);
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    verify_log(&log)
        .code(6)
        .stderr(contains("line 5 (seq 1)").and(contains("repeats line 2")));
}

#[test]
fn concurrent_bloomlink_processes_share_one_log_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shared.jsonl");
    const PROCS: usize = 8;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(PROCS));
    let workers: Vec<_> = (0..PROCS)
        .map(|i| {
            let (dir, log, barrier) = (dir.path().to_path_buf(), log.clone(), barrier.clone());
            std::thread::spawn(move || {
                let run = |args: Vec<std::ffi::OsString>| {
                    let out = bloomlink()
                        .args(&args)
                        .arg("--audit-log")
                        .arg(&log)
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{args:?}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                };
                let key = dir.join(format!("k{i}.key"));
                let sig = dir.join(format!("s{i}.sig"));
                barrier.wait();
                run(vec![
                    "key".into(),
                    "new".into(),
                    "--partnership".into(),
                    "P".into(),
                    "-o".into(),
                    key.clone().into(),
                ]);
                run(vec![
                    "signing-key".into(),
                    "new".into(),
                    "--agency".into(),
                    format!("a{i}").into(),
                    "-o".into(),
                    sig.clone().into(),
                ]);
                for _ in 0..2 {
                    run(vec!["key".into(), "show".into(), key.clone().into()]);
                    run(vec![
                        "signing-key".into(),
                        "public".into(),
                        sig.clone().into(),
                    ]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    verify_log(&log)
        .success()
        .stdout(contains(format!("OK: {} entries", PROCS * 6)));
    let e = log_entries(&log);
    assert_eq!(e.len(), PROCS * 6);
    let count = |a: &str| e.iter().filter(|x| x["action"] == a).count();
    assert_eq!(count("key.new"), PROCS);
    assert_eq!(count("signing-key.new"), PROCS);
    assert_eq!(count("key.show"), 2 * PROCS);
    assert_eq!(count("signing-key.public"), 2 * PROCS);
    for (i, x) in e.iter().enumerate() {
        assert_eq!(x["seq"], i as u64);
    }
}
