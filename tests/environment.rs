//! `encode`, `inspect` and the audit log when the environment fails as it does on a real
//! server: a full disk (simulated with a file size limit, which fails writes the same way without
//! root or a mount), an export still being written, a file truncated while it is read, awkward
//! file names.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const GOOD: &str = "H1,943 476 5919,Zoë,Mary,O'Brien,12/03/2015,F,sw1a 1aa\n\
H2,,Jack,,Smith-Jones,01/02/2016,M,LS6 2AB\n\
H3,,Aisha,,Khan,03/04/2012,F,M1 1AE\n";

/// `bloomlink` run with a file size limit of about `bytes` (RLIMIT_FSIZE, rounded down to the
/// shell's unit) and SIGXFSZ ignored: a write past the limit fails with EFBIG ("File too
/// large"), after writing what fits, as a write to a full disk does with ENOSPC. `None` where
/// that cannot be set up (not Linux).
fn with_file_size_limit(bytes: u64) -> Option<assert_cmd::Command> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    // `ulimit -f` counts 512- or 1024-byte blocks depending on the shell: ask the kernel.
    let probe = std::process::Command::new("sh")
        .args(["-c", "ulimit -f 1 && cat /proc/self/limits"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&probe.stdout);
    let unit: u64 = text
        .lines()
        .find(|l| l.starts_with("Max file size"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let mut c = assert_cmd::Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {} && exec \"$@\"",
            bytes / unit
        ))
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("bloomlink"))
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .env_remove("BLOOMLINK_AUDIT_LOG");
    Some(c)
}

/// The encode arguments for fixture `f`, writing `out`.
fn encode_args(f: &Fixture, out: &Path) -> Vec<PathBuf> {
    vec![
        "encode".into(),
        "--quiet".into(),
        "--key".into(),
        f.key.clone(),
        "--columns".into(),
        f.map.clone(),
        f.input.clone(),
        "-o".into(),
        out.to_path_buf(),
    ]
}

/// A full disk while the audit entry is appended: the part of the line that was written is
/// removed again, so the log stays verifiable and usable (before, it ended in an incomplete
/// line: `audit verify` reported it truncated and every later command refused it).
#[test]
fn an_audit_entry_cut_short_by_a_full_disk_is_removed() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    // A long directory name makes the entry longer than any file-size-limit unit, so that the
    // limit always falls inside it.
    let dir = f.path(&"d".repeat(200));
    std::fs::create_dir(&dir).unwrap();
    let log = dir.join("bloomlink-audit.jsonl");
    let mut first = bloomlink();
    first.args(encode_args(&f, &dir.join("first.clk")));
    first.assert().success();
    let before = std::fs::read_to_string(&log).unwrap();
    let Some(mut c) = with_file_size_limit(before.len() as u64 + 1024) else {
        eprintln!("skipped: no file size limit on this system");
        return;
    };
    let out = c
        .args(encode_args(&f, &dir.join("second.clk")))
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    // The cause is named, not only the log's path.
    assert!(stderr.contains("File too large"), "{stderr}");
    let after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(after, before, "the log is as it was: {stderr}");
    bloomlink()
        .args(["audit", "verify"])
        .arg(&log)
        .assert()
        .success();
    // And the next run can use it.
    let mut next = bloomlink();
    next.args(encode_args(&f, &dir.join("third.clk")));
    next.assert().success();
    bloomlink()
        .args(["audit", "verify"])
        .arg(&log)
        .assert()
        .success();
}
