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
    // No output is left that the log does not record (before, second.clk stayed, unrecorded).
    assert!(stderr.contains("nothing was done"), "{stderr}");
    assert!(!dir.join("second.clk").exists() && !dir.join("second.rejects.csv").exists());
    // With --force, the files replaced are put back (the new encoding would differ: another
    // creation time).
    let first_clk = std::fs::read(dir.join("first.clk")).unwrap();
    let mut forced = with_file_size_limit(before.len() as u64 + 1024).unwrap();
    forced
        .env("SOURCE_DATE_EPOCH", "1767312000")
        .args(encode_args(&f, &dir.join("first.clk")))
        .arg("--force")
        .assert()
        .failure();
    assert_eq!(std::fs::read(dir.join("first.clk")).unwrap(), first_clk);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
    assert_eq!(
        names(&dir),
        ["bloomlink-audit.jsonl", "first.clk", "first.rejects.csv"]
    );
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

/// Encodes fixture `f` with `during` called once the export has been read (from the progress
/// callback, which the encoder calls after its last read).
fn encode_while(f: &Fixture, during: impl Fn(&Path) + Sync) -> bloomlink::Result<u64> {
    use bloomlink::encode::{encode_csv, EncodeOptions};
    use bloomlink::key::{Expiry, LinkageKey};
    let key = LinkageKey::load(&f.key, Expiry::Enforce).unwrap();
    let map = bloomlink::colmap::ColumnMap::load(&f.map).unwrap();
    let schema = bloomlink::schema::Schema::default_uk();
    let done = std::sync::atomic::AtomicBool::new(false);
    let progress = |_: u64| {
        if !done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            during(&f.input);
        }
    };
    let opts = EncodeOptions {
        progress: Some(&progress),
        ..EncodeOptions::default()
    };
    encode_csv(&f.input, &key, &schema, &map, &opts).map(|e| e.report.rows_read)
}

/// An export that the agency's job is still writing (it grows, or is rewritten, while encode
/// reads it) is refused rather than encoded in part (before: exit 0 with the rows written so
/// far, the last one maybe cut short).
#[test]
fn an_export_that_changes_while_it_is_read_is_refused() {
    use std::io::Write;
    let text = format!("{HEALTH_HEADER}{GOOD}");
    let f = Fixture::new(text.as_bytes());
    assert_eq!(encode_while(&f, |_| {}).unwrap(), 3, "unchanged: encoded");
    let grown = encode_while(&f, |p| {
        let mut w = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        w.write_all(b"H4,,Lily,,Evans,05/06/2014,F,SW1A 1AA\n")
            .unwrap();
    });
    let e = grown.expect_err("grew while read");
    assert!(
        e.to_string().contains("changed while it was being read"),
        "{e}"
    );
    let f = Fixture::new(text.as_bytes());
    let cut = encode_while(&f, |p| {
        let w = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        w.set_len(text.len() as u64 / 2).unwrap();
    });
    let e = cut.expect_err("truncated while read");
    assert!(e.to_string().contains("still being written"), "{e}");
}

/// An encoding file truncated after it was opened (a transfer into the inbox redone in place
/// while `match` or `inspect` reads it) no longer kills the reader: what was read is in memory
/// (before, the file was memory-mapped and touching its pages raised SIGBUS, killing this test
/// binary).
#[test]
fn an_encoding_file_truncated_after_it_was_opened_stays_readable() {
    use bloomlink::format::EncodingFile;
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let out = f.path("out.clk");
    f.encode().assert().success();
    let file = EncodingFile::open(&out).unwrap();
    let len = std::fs::metadata(&out).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .unwrap()
        .set_len(0)
        .unwrap();
    let bits: u32 = file.filters().iter().map(|w| w.count_ones()).sum();
    assert!(bits > 0);
    assert_eq!(file.row_ref(2), "H3");
    assert!(!file.tokens_of(0).is_empty());
    // Opened now, it is refused as what it is (empty), with an error, not a signal.
    let e = EncodingFile::open(&out).unwrap_err();
    assert!(
        e.to_string().contains("is empty"),
        "{e} ({len} bytes before)"
    );
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An output name that is not valid UTF-8 (Linux file names are bytes): the rejects file is
/// named after it byte for byte (before, its invalid bytes became U+FFFD: `out\xff.clk` gave
/// `out\u{FFFD}.rejects.csv`, and two such outputs shared one rejects file).
#[cfg(target_os = "linux")]
#[test]
fn a_non_utf8_output_name_keeps_its_bytes_in_the_rejects_file_name() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let dir = f.path("out");
    std::fs::create_dir(&dir).unwrap();
    let out = dir.join(OsStr::from_bytes(b"night \xff\nly.clk"));
    let mut c = bloomlink();
    c.args(encode_args(&f, &out));
    c.assert().success();
    assert!(out.exists());
    assert!(dir
        .join(OsStr::from_bytes(b"night \xff\nly.rejects.csv"))
        .exists());
    assert_eq!(names(&dir).len(), 3, "{:?}", names(&dir)); // and the audit log
}

/// An output whose name is as long as a file name may be (255 bytes) is written: the temporary
/// file's name is cut short to fit (before: "File name too long", after the whole job). A name
/// that is too long is refused before any work.
#[test]
fn an_output_name_of_255_bytes_is_written_and_a_longer_one_refused_early() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let dir = f.path("out");
    std::fs::create_dir(&dir).unwrap();
    // 251 bytes + ".clk"; the rejects file is given a short name.
    let long = dir.join(format!("{}.clk", "é".repeat(125) + "x"));
    assert_eq!(long.file_name().unwrap().len(), 255);
    let mut c = bloomlink();
    c.args(encode_args(&f, &long))
        .arg("--rejects")
        .arg(dir.join("r.csv"));
    c.assert().success();
    assert!(long.exists());
    assert_eq!(names(&dir).len(), 3, "{:?}", names(&dir));
    let too_long = dir.join(format!("{}.clk", "y".repeat(252)));
    let mut c = bloomlink();
    c.args(encode_args(&f, &too_long))
        .arg("--rejects")
        .arg(dir.join("r2.csv"));
    let out = c.assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("too long"), "{stderr}");
    // Refused before the key was even read: no encode work, nothing written.
    assert!(!stderr.contains("DEMO key"), "{stderr}");
    assert_eq!(names(&dir).len(), 3, "{:?}", names(&dir));
}

/// A full disk while encode writes its rejects file (here: a file size limit the small encoding
/// fits under and the large rejects file does not): the run fails with none of its outputs in
/// place and no temporary left, and the audit entry records no output (before, the encoding was
/// already in place, without its rejects file or id map, and the next run refused to replace
/// it).
#[test]
fn a_full_disk_on_a_later_output_leaves_no_output_in_place() {
    // One good row and 5,000 rows of the wrong shape: about 150 KB of rejects, against an
    // encoding of a few KB.
    let mut text = format!("{HEALTH_HEADER}{GOOD}");
    for _ in 0..5000 {
        text.push_str("x\n");
    }
    let f = Fixture::new(text.as_bytes());
    let dir = f.path("out");
    std::fs::create_dir(&dir).unwrap();
    let Some(mut c) = with_file_size_limit(64 * 1024) else {
        eprintln!("skipped: no file size limit on this system");
        return;
    };
    let out = c
        .args(encode_args(&f, &dir.join("h.clk")))
        .args(["--max-reject-rate", "1"])
        .arg("--opaque-ids")
        .arg(dir.join("h.ids.csv"))
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("h.rejects.csv") && stderr.contains("File too large"),
        "{stderr}"
    );
    assert_eq!(names(&dir), ["bloomlink-audit.jsonl"], "{stderr}");
    let log = std::fs::read_to_string(dir.join("bloomlink-audit.jsonl")).unwrap();
    let entry: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(entry["outcome"], "refused");
    assert_eq!(entry["outputs"], serde_json::json!([]), "{entry}");
    // With room, the same run writes all three.
    let mut c = bloomlink();
    c.args(encode_args(&f, &dir.join("h.clk")))
        .args(["--max-reject-rate", "1"])
        .arg("--opaque-ids")
        .arg(dir.join("h.ids.csv"));
    c.assert().success();
    assert_eq!(names(&dir).len(), 4, "{:?}", names(&dir));
}

/// An output path taken by a symbolic link to nothing is refused as existing before any work
/// (before: after the whole job, when the hard link that puts the output in place failed).
#[cfg(unix)]
#[test]
fn an_output_taken_by_a_dangling_symlink_is_refused_before_any_work() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let out = f.path("out.clk");
    std::os::unix::fs::symlink(f.path("nowhere.clk"), &out).unwrap();
    let mut c = bloomlink();
    c.args(encode_args(&f, &out));
    let done = c.assert().failure();
    let stderr = String::from_utf8_lossy(&done.get_output().stderr).into_owned();
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(
        !stderr.contains("DEMO key"),
        "refused before the key was read: {stderr}"
    );
    // --force replaces the link itself, not what it names.
    let mut c = bloomlink();
    c.args(encode_args(&f, &out)).arg("--force");
    c.assert().success();
    assert!(std::fs::symlink_metadata(&out).unwrap().is_file());
    assert!(!f.path("nowhere.clk").exists());
}

/// A full disk while `key new` records the new key: the key file is removed again, so that no
/// key exists that the audit log does not record (before, it stayed, with exit 1).
#[test]
fn a_new_key_whose_entry_cannot_be_written_is_removed() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("audit.jsonl");
    let key_new = |c: &mut assert_cmd::Command, name: &str| {
        c.args(["key", "new", "--partnership", "P", "--audit-log"])
            .arg(&log)
            .arg("-o")
            .arg(d.path().join(name))
            .assert()
    };
    key_new(&mut bloomlink(), "first.key").success();
    let before = std::fs::read_to_string(&log).unwrap();
    // Room for a key file (under 512 bytes), not for a second entry.
    let Some(mut c) = with_file_size_limit(512) else {
        eprintln!("skipped: no file size limit on this system");
        return;
    };
    assert!(before.len() > 256, "{before}");
    let out = key_new(&mut c, "second.key").failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("File too large"), "{stderr}");
    assert!(stderr.contains("nothing was done"), "{stderr}");
    assert!(!d.path().join("second.key").exists());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
    assert!(d.path().join("first.key").exists());
    // So does `signing-key new`, and with --json it prints the failure, not the key it
    // removed (before, its success object, then exit 1 with the key left).
    let sk = d.path().join("health.sk");
    let mut c = with_file_size_limit(512).unwrap();
    c.args([
        "signing-key",
        "new",
        "--agency",
        "health",
        "--json",
        "--audit-log",
    ])
    .arg(&log)
    .arg("-o")
    .arg(&sk);
    let out = c.assert().code(1).get_output().clone();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(j["outcome"], "error", "{j}");
    assert!(!sk.exists());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
}
