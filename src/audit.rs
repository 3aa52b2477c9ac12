//! The tamper-evident audit log: append-only JSON lines, each entry hash-chained to the one
//! before it.
//!
//! Every entry records who (user, host), when, what (`action`), with which key (fingerprint and
//! epoch, never the key), schema, files (path and SHA-256), counts, options that matter, and the
//! outcome (`done` or `refused` with the refusal's message). `prev` is the SHA-256 of the
//! previous entry's exact line bytes (64 zeros for the first entry) and `hash` the SHA-256 of the
//! entry's canonical serialisation without `hash`: JSON with object keys sorted bytewise and no
//! insignificant whitespace, which is also exactly the form of the line written.
//!
//! Appends take an exclusive lock on the log file, read the last line under the lock to chain
//! to it, and write the new line with a single append, so concurrent writers on one machine
//! never interleave. [`verify`] recomputes the chain and names the first bad entry.
//!
//! No personal data is ever put in an entry: callers pass file paths, digests, counts, options
//! and error messages, which never carry personal values.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The `prev` of the first entry of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The default file name of the log, placed next to a command's main output.
pub const DEFAULT_FILE_NAME: &str = "bloomlink-audit.jsonl";

/// The environment variable naming the log (overridden by `--audit-log`).
pub const ENV_VAR: &str = "BLOOMLINK_AUDIT_LOG";

/// Entries longer than this are not bloomlink's (a guard when reading the tail).
const MAX_LINE: u64 = 16 * 1024 * 1024;

/// How an action ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action completed.
    #[default]
    Done,
    /// The action was refused or failed; `reason` says why.
    Refused,
}

/// A file an action read or wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The path as given on the command line.
    pub path: String,
    /// SHA-256 of the whole file (hex), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For encoding files: the agency in its header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    /// For encoding files: the key fingerprint in its header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// For encoding files: the key epoch in its header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_epoch: Option<u32>,
    /// For encoding files checked against a trust file: `verified` or `allowed-unsigned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// For signed encoding files: the signing key that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<SignerRef>,
}

/// A signing key in the log: its agency and public key fingerprint (never the key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRef {
    /// The agency whose key it is.
    pub agency: String,
    /// The public key's fingerprint.
    pub fingerprint: String,
}

impl SignerRef {
    /// The reference for a signing key's public facts.
    pub fn of(info: &crate::signing::SignerInfo) -> SignerRef {
        SignerRef {
            agency: info.agency.clone(),
            fingerprint: info.fingerprint.clone(),
        }
    }
}

impl FileRef {
    /// A reference to `path` with its SHA-256 computed now (left out if the file is unreadable).
    pub fn hashed(path: &Path) -> FileRef {
        FileRef {
            path: path.display().to_string(),
            sha256: sha256_file(path).ok(),
            ..FileRef::default()
        }
    }

    /// A reference with a known SHA-256.
    pub fn with_sha256(path: &Path, sha256: impl Into<String>) -> FileRef {
        FileRef {
            path: path.display().to_string(),
            sha256: Some(sha256.into()),
            ..FileRef::default()
        }
    }
}

/// A key's public facts, recorded by `key.new` and `key.show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFacts {
    /// The partnership the key belongs to.
    pub partnership: String,
    /// The key's purpose.
    pub purpose: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// Last day of use (YYYY-MM-DD).
    pub expires: String,
    /// The fingerprint of the key it replaced (rotation lineage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// When it was retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

/// What a command reports to the log; [`append`] adds sequence, time, user, host and chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    /// What was done: `key.new`, `key.show`, `encode`, `match`, `audit.checkpoint`, ….
    pub action: String,
    /// Fingerprint of the key used, once verified.
    pub key_fingerprint: Option<String>,
    /// Fingerprint a refused key file claims in its comments (not verified).
    pub key_fingerprint_unverified: Option<String>,
    /// Epoch of the key used.
    pub key_epoch: Option<u32>,
    /// Public facts of the key (key commands).
    pub key_info: Option<KeyFacts>,
    /// The signing key used (signing-key commands, signed encodes, signed checkpoints).
    pub signer: Option<SignerRef>,
    /// Digest of the linkage schema.
    pub schema_digest: Option<String>,
    /// The agency (encode).
    pub agency: Option<String>,
    /// Files read.
    pub inputs: Vec<FileRef>,
    /// Files written.
    pub outputs: Vec<FileRef>,
    /// Counts (rows read, encoded, links, …).
    pub counts: Map<String, Value>,
    /// Options that matter (overrides, thresholds, …).
    pub options: Map<String, Value>,
    /// How it ended.
    pub outcome: Outcome,
    /// The refusal's message, when refused.
    pub reason: Option<String>,
}

impl Event {
    /// An event for `action`, outcome `done` until told otherwise.
    pub fn new(action: &str) -> Event {
        Event {
            action: action.to_string(),
            ..Event::default()
        }
    }

    /// Marks the event refused with `reason` (an error message: never a personal value).
    pub fn refuse(&mut self, reason: impl Into<String>) {
        self.outcome = Outcome::Refused;
        self.reason = Some(reason.into());
    }
}

/// One line of the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 0.
    pub seq: u64,
    /// When it was written (RFC 3339 UTC, as the machine's clock says).
    pub time: String,
    /// The operating-system user, as the environment says.
    pub user: String,
    /// The machine's host name.
    pub host: String,
    /// What was done.
    pub action: String,
    /// Fingerprint of the key used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// Fingerprint a refused key file claims (not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint_unverified: Option<String>,
    /// Epoch of the key used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_epoch: Option<u32>,
    /// Public facts of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_info: Option<KeyFacts>,
    /// The signing key used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<SignerRef>,
    /// Digest of the linkage schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_digest: Option<String>,
    /// The agency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    /// Files read.
    #[serde(default)]
    pub inputs: Vec<FileRef>,
    /// Files written.
    #[serde(default)]
    pub outputs: Vec<FileRef>,
    /// Counts.
    #[serde(default)]
    pub counts: Map<String, Value>,
    /// Options that matter.
    #[serde(default)]
    pub options: Map<String, Value>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// SHA-256 (hex) of the previous line's bytes; [`GENESIS`] for the first entry.
    pub prev: String,
    /// SHA-256 (hex) of this entry's canonical serialisation without `hash`.
    pub hash: String,
}

/// SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    // A device would be read forever, a pipe wait for a writer.
    crate::fsutil::check_regular(path)?;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The canonical serialisation of a JSON value: object keys sorted bytewise, no whitespace.
pub fn canonical(v: &Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    s
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The hash of an entry given as a JSON object: SHA-256 of its canonical form without `hash`.
fn entry_hash(obj: &Map<String, Value>) -> String {
    let mut o = obj.clone();
    o.remove("hash");
    sha256_hex(canonical(&Value::Object(o)).as_bytes())
}

/// The user running the process. On Linux the account of the process's user id, as
/// `/etc/passwd` names it (not `$USER`, which the caller can set to anything), or `uid N` when
/// it has no entry there (a container, a service account from a directory service); elsewhere
/// `$USER`, else `$LOGNAME`, else `unknown` (before, `unknown` also on Linux whenever `$USER`
/// was unset, as under some schedulers).
pub fn current_user() -> String {
    #[cfg(target_os = "linux")]
    {
        let uid = rustix::process::getuid().as_raw();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        account_of(&passwd, uid).unwrap_or_else(|| format!("uid {uid}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        ["USER", "LOGNAME"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .map(|s| s.trim().to_string())
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// The account name of user id `uid` in the text of an `/etc/passwd` file.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn account_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?.trim();
        let _password = f.next()?;
        let id: u32 = f.next()?.trim().parse().ok()?;
        (id == uid && !name.is_empty() && !name.starts_with('#')).then(|| name.to_string())
    })
}

/// The machine's name: `/etc/hostname`, else `$HOSTNAME`, else `unknown`.
pub fn current_host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn log_problem(path: &Path, problem: impl Into<String>) -> Error {
    Error::AuditWrite {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Opens (creating with mode 0600 if new) and exclusively locks the log for appending.
fn open_locked(path: &Path) -> Result<File> {
    // A symbolic link in a directory anyone can write to may have been put there by anyone, to
    // have this run (perhaps as a service account) append to a file of their choice.
    #[cfg(unix)]
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Some(mode) = std::fs::metadata(dir)
            .ok()
            .and_then(|m| crate::fsutil::is_world_writable(&m))
        {
            return Err(log_problem(
                path,
                format!(
                    "is a symbolic link in a directory that anyone can write to (mode \
                     {mode:04o}): anyone could have pointed it at another file, which this \
                     run would append to. Keep the audit log (or the link) in a directory only \
                     its owner can write to"
                ),
            ));
        }
    }
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path).map_err(|e| Error::io(path, e))?;
    file.lock().map_err(|e| Error::io(path, e))?;
    Ok(file)
}

/// The last line of the log (without its newline), read under the lock; `None` if empty.
fn last_line(path: &Path, file: &mut File) -> Result<Option<Vec<u8>>> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))
        .and_then(|_| file.read_exact(&mut last))
        .map_err(|e| Error::io(path, e))?;
    if last[0] != b'\n' {
        return Err(log_problem(
            path,
            "its last line is incomplete (the log was truncated or written by something else); \
             run `bloomlink audit verify` on it and keep it as evidence; start a new log",
        ));
    }
    // Read backwards in chunks until the newline before the last line is found.
    let end = len - 1;
    let mut start = end;
    let mut buf: Vec<u8> = Vec::new();
    const CHUNK: u64 = 64 * 1024;
    while start > 0 {
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.seek(SeekFrom::Start(from))
            .and_then(|_| file.read_exact(&mut chunk))
            .map_err(|e| Error::io(path, e))?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
        let line_len = (end - start) as usize;
        if let Some(p) = buf[..line_len].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(buf[p + 1..line_len].to_vec()));
        }
        if end - start > MAX_LINE {
            return Err(log_problem(
                path,
                "its last line is too long to be an entry",
            ));
        }
    }
    let line_len = (end - start) as usize;
    Ok(Some(buf[..line_len].to_vec()))
}

/// Appends an entry for `event` to the log at `path` (created mode 0600 if new) and returns it.
/// The log is locked for the duration, so concurrent appends never interleave; an incomplete or
/// unreadable last line is refused rather than chained to.
pub fn append(path: &Path, event: &Event) -> Result<Entry> {
    let mut file = open_locked(path)?;
    let (seq, prev) = match last_line(path, &mut file)? {
        None => (0, GENESIS.to_string()),
        Some(line) => {
            let v: Value = serde_json::from_slice(&line).map_err(|_| {
                log_problem(
                    path,
                    "its last line is not a bloomlink audit entry; run `bloomlink audit verify`",
                )
            })?;
            let seq = v.get("seq").and_then(Value::as_u64).ok_or_else(|| {
                log_problem(
                    path,
                    "its last line has no sequence number; run `audit verify`",
                )
            })?;
            (seq + 1, sha256_hex(&line))
        }
    };
    let mut entry = Entry {
        seq,
        time: crate::date::now_rfc3339(),
        user: current_user(),
        host: current_host(),
        action: event.action.clone(),
        key_fingerprint: event.key_fingerprint.clone(),
        key_fingerprint_unverified: event.key_fingerprint_unverified.clone(),
        key_epoch: event.key_epoch,
        key_info: event.key_info.clone(),
        signer: event.signer.clone(),
        schema_digest: event.schema_digest.clone(),
        agency: event.agency.clone(),
        inputs: event.inputs.clone(),
        outputs: event.outputs.clone(),
        counts: event.counts.clone(),
        options: event.options.clone(),
        outcome: event.outcome,
        reason: event.reason.clone(),
        prev,
        hash: String::new(),
    };
    let mut obj = match serde_json::to_value(&entry) {
        Ok(Value::Object(o)) => o,
        _ => return Err(log_problem(path, "entry cannot be serialised")),
    };
    entry.hash = entry_hash(&obj);
    obj.insert("hash".into(), Value::String(entry.hash.clone()));
    let mut line = canonical(&Value::Object(obj));
    line.push('\n');
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if let Err(e) = file
        .write_all(line.as_bytes())
        .and_then(|_| file.sync_data())
    {
        // A full disk (or a file size limit) can take part of the line: cut it off again, or the
        // log would end in an incomplete line, which `audit verify` reports as a truncated log
        // and every later command refuses to append to. Truncating frees space, so it works on
        // a full disk.
        let undone = file.set_len(len).and_then(|_| file.sync_data());
        return Err(Error::io(
            path,
            match undone {
                Ok(()) => e,
                Err(u) => std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; the part of the entry written could not be removed ({u}): the log \
                         now ends in an incomplete line"
                    ),
                ),
            },
        ));
    }
    // The lock is released when the file is closed.
    Ok(entry)
}

/// Checks, before a command does its work, that the log can be appended to: it opens (creating
/// if needed) and locks it, and checks its last line is complete.
pub fn check_appendable(path: &Path) -> Result<()> {
    let mut file = open_locked(path)?;
    last_line(path, &mut file)?;
    Ok(())
}

/// What is wrong with a log, found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The line number (from 1) of the first bad entry.
    pub line: usize,
    /// Its sequence number, when it could be read.
    pub seq: Option<u64>,
    /// What kind of damage: `edited`, `removed`, `reordered`, `truncated`, `foreign`,
    /// `malformed`.
    pub kind: &'static str,
    /// A sentence for a person.
    pub problem: String,
}

/// The result of verifying an intact log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Entries in the log.
    pub entries: u64,
    /// The hash of the last entry ([`GENESIS`] for an empty log).
    pub head: String,
    /// The time of the last entry, if any.
    pub head_time: Option<String>,
}

/// Recomputes the chain of the log at `path`. An intact log gives [`Verified`]; a damaged one an
/// [`Error::AuditChain`] naming the first bad entry. `checkpoint`, if given, is a head hash
/// recorded earlier, which must still be the hash of an entry in the log.
pub fn verify(path: &Path, checkpoint: Option<&str>) -> Result<Verified> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    verify_bytes(&bytes, checkpoint).map_err(|b| Error::AuditChain {
        path: path.to_path_buf(),
        line: b.line,
        seq: b.seq,
        kind: b.kind,
        problem: b.problem,
    })
}

/// [`verify`] on the log's bytes.
pub fn verify_bytes(
    bytes: &[u8],
    checkpoint: Option<&str>,
) -> std::result::Result<Verified, Break> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A complete log ends with a newline, leaving an empty last piece.
    let complete = lines.last().is_some_and(|l| l.is_empty());
    if complete {
        lines.pop();
    }
    let n = lines.len();
    // Parse everything first: reordering is told from removal by looking ahead.
    let parsed: Vec<Option<Map<String, Value>>> = lines
        .iter()
        .map(|l| match serde_json::from_slice::<Value>(l) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        })
        .collect();
    let seqs: Vec<Option<u64>> = parsed
        .iter()
        .map(|o| {
            o.as_ref()
                .and_then(|o| o.get("seq"))
                .and_then(Value::as_u64)
        })
        .collect();
    let mut prev_hash = GENESIS.to_string();
    let mut prev_host: Option<String> = None;
    let mut head_time = None;
    let mut found_checkpoint = checkpoint.is_none();
    for (i, line) in lines.iter().enumerate() {
        let no = i + 1;
        let is_last = i + 1 == n;
        let seq = seqs[i];
        if is_last && !complete {
            return Err(Break {
                line: no,
                seq,
                kind: "truncated",
                problem: "the last line is incomplete (no end of line): the log was truncated \
                          or a write was cut short"
                    .into(),
            });
        }
        let Some(obj) = &parsed[i] else {
            return Err(Break {
                line: no,
                seq: None,
                kind: if is_last { "truncated" } else { "malformed" },
                problem: if is_last {
                    "the last line is not a JSON entry: the log was truncated or damaged".into()
                } else {
                    "the line is not a JSON entry: it was edited or damaged".into()
                },
            });
        };
        let field = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(seq), Some(prev), Some(hash)) = (seq, field("prev"), field("hash")) else {
            return Err(Break {
                line: no,
                seq,
                kind: "malformed",
                problem: "the entry lacks seq, prev or hash: it is not a bloomlink audit entry \
                          or was edited"
                    .into(),
            });
        };
        let expected = i as u64;
        if entry_hash(obj) != hash {
            return Err(Break {
                line: no,
                seq: Some(seq),
                kind: "edited",
                problem: "the entry's content does not match its hash: it was edited".into(),
            });
        }
        if canonical(&Value::Object(obj.clone())).as_bytes() != *line {
            return Err(Break {
                line: no,
                seq: Some(seq),
                kind: "edited",
                problem: "the line is not in the form bloomlink writes (spacing or key order \
                          changed): it was edited"
                    .into(),
            });
        }
        let host = field("host");
        if seq != expected {
            let (kind, problem) = if seq == 0 {
                let other = match (&host, &prev_host) {
                    (Some(h), Some(p)) if h != p => format!(" (from host {h}, not {p})"),
                    _ => String::new(),
                };
                (
                    "foreign",
                    format!(
                        "the sequence restarts at 0 where {expected} was expected: entries of \
                         another log{other} were appended"
                    ),
                )
            } else if seq < expected && lines[seq as usize] == *line {
                (
                    "reordered",
                    format!(
                        "the entry repeats line {} (seq {seq}): an entry was copied",
                        seq + 1
                    ),
                )
            } else if seq < expected && prev == sha256_hex(lines[seq as usize - 1]) {
                (
                    "foreign",
                    format!(
                        "seq {seq} appears a second time, chained to line {seq}: entries of a \
                         copy of this log (taken at seq {}, then written to elsewhere) were \
                         appended",
                        seq - 1
                    ),
                )
            } else if seq < expected || seqs[i + 1..].contains(&Some(expected)) {
                (
                    "reordered",
                    format!(
                        "expected seq {expected}, found {seq}: entries were reordered (seq \
                         {expected} appears later)"
                    ),
                )
            } else {
                (
                    "removed",
                    format!(
                        "expected seq {expected}, found {seq}: {} entr{} removed",
                        seq - expected,
                        if seq - expected == 1 {
                            "y was"
                        } else {
                            "ies were"
                        }
                    ),
                )
            };
            return Err(Break {
                line: no,
                seq: Some(seq),
                kind,
                problem,
            });
        }
        if prev != prev_hash {
            let problem = if i == 0 {
                "the first entry does not start a chain (prev is not all zeros): the log's \
                 beginning was removed or it continues another log"
                    .to_string()
            } else {
                format!(
                    "prev does not match the hash of line {}: that line was altered, or this \
                     entry was written to another log (foreign) and appended here",
                    no - 1
                )
            };
            let kind = if i == 0 { "removed" } else { "foreign" };
            return Err(Break {
                line: no,
                seq: Some(seq),
                kind,
                problem,
            });
        }
        if let Some(c) = checkpoint {
            if c == hash {
                found_checkpoint = true;
            }
        }
        prev_hash = sha256_hex(line);
        prev_host = host;
        head_time = field("time");
    }
    if !found_checkpoint {
        return Err(Break {
            line: n,
            seq: seqs.last().copied().flatten(),
            kind: "removed",
            problem: "the checkpointed head hash is not the hash of any entry: the log was \
                      truncated or rewritten since the checkpoint"
                .into(),
        });
    }
    let head = match parsed.last() {
        Some(Some(o)) => o
            .get("hash")
            .and_then(Value::as_str)
            .unwrap_or(GENESIS)
            .to_string(),
        _ => GENESIS.to_string(),
    };
    Ok(Verified {
        entries: n as u64,
        head,
        head_time,
    })
}

/// Reads every entry of a log (which should have been verified first).
pub fn read_entries(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_slice(line).map_err(|_| Error::AuditChain {
            path: path.to_path_buf(),
            line: i + 1,
            seq: None,
            kind: "malformed",
            problem: "the line is not a bloomlink audit entry".into(),
        })?;
        out.push(e);
    }
    Ok(out)
}

/// The first completed entry of `action` in the log at `path` that `pick` accepts. Lines that
/// are not entries are skipped: the callers are safety nets, not a verification of the log.
fn completed_in_log(path: &Path, action: &str, pick: impl Fn(&Entry) -> bool) -> Option<Entry> {
    let text = std::fs::read(path).ok()?;
    text.split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Entry>(l).ok())
        .find(|e| e.action == action && e.outcome == Outcome::Done && pick(e))
}

/// The time a completed `key.retire` entry in the log at `path` retired the key `fingerprint`,
/// if there is one: a retired key restored from a backup made before its retirement.
pub fn retirement_in_log(path: &Path, fingerprint: &str) -> Option<String> {
    completed_in_log(path, "key.retire", |e| {
        e.key_fingerprint.as_deref() == Some(fingerprint)
    })
    .map(|e| e.time)
}

/// A completed rotation of the key `fingerprint` in the log at `path`, if there is one: when,
/// and the new key's fingerprint and epoch (rotating the same key twice would make two
/// different keys of one epoch).
pub fn rotation_in_log(path: &Path, fingerprint: &str) -> Option<(String, String, u32)> {
    completed_in_log(path, "key.rotate", |e| {
        e.options
            .get("previous_fingerprint")
            .and_then(Value::as_str)
            == Some(fingerprint)
    })
    .map(|e| {
        (
            e.time,
            e.key_fingerprint.unwrap_or_default(),
            e.key_epoch.unwrap_or_default(),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Signed checkpoints.

/// The `format` of a signed checkpoint file.
pub const CHECKPOINT_FORMAT: &str = "bloomlink-checkpoint-1";
const CHECKPOINT_LABEL: &[u8] = b"bloomlink audit checkpoint v1\n";

/// A checkpoint of a log's head, signed with a signing key: a small JSON file to keep outside
/// the log. The signature covers every other field (label + canonical JSON without
/// `signature`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// The hash of the checkpoint entry (the log's head when it was made).
    pub head: String,
    /// The checkpoint entry's sequence number.
    pub seq: u64,
    /// Entries in the log up to and including it.
    pub entries: u64,
    /// When it was made.
    pub time: String,
    /// The signer's agency.
    pub agency: String,
    /// The signer's public key (`ed25519:` + hex).
    pub public_key: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

impl SignedCheckpoint {
    fn message(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.remove("signature");
        }
        let mut m = CHECKPOINT_LABEL.to_vec();
        m.extend_from_slice(canonical(&v).as_bytes());
        m
    }

    /// Signs the checkpoint `entry` (just appended) with `key`.
    pub fn sign(entry: &Entry, key: &crate::signing::SigningKey) -> SignedCheckpoint {
        let mut cp = SignedCheckpoint {
            format: CHECKPOINT_FORMAT.into(),
            head: entry.hash.clone(),
            seq: entry.seq,
            entries: entry.seq + 1,
            time: entry.time.clone(),
            agency: key.info().agency.clone(),
            public_key: key.info().public_key.to_string(),
            signature: String::new(),
        };
        cp.signature = hex::encode(key.sign(&cp.message()));
        cp
    }

    /// The checkpoint file's text (pretty JSON).
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<SignedCheckpoint> {
        let bad = |p: &str| Error::Checkpoint {
            path: path.to_path_buf(),
            problem: p.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > 64 * 1024 {
            return Err(bad("is too large to be a checkpoint file"));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let cp: SignedCheckpoint = serde_json::from_slice(&bytes)
            .map_err(|_| bad("is not a bloomlink signed checkpoint (JSON with head, seq, …)"))?;
        if cp.format != CHECKPOINT_FORMAT {
            return Err(bad("is not a bloomlink-checkpoint-1 file"));
        }
        Ok(cp)
    }

    /// Verifies the checkpoint (read from `path`) and the log against it: the signature must
    /// verify under the key it names, that key must be the trusted key of its agency, the log's
    /// chain must be intact, and the entry at `seq` must still have hash `head`.
    pub fn verify(
        &self,
        path: &Path,
        log: &Path,
        trust: &crate::signing::Trust,
    ) -> Result<Verified> {
        let bad = |p: String| Error::Checkpoint {
            path: path.to_path_buf(),
            problem: p,
        };
        let pk = crate::signing::PublicKey::parse(&self.public_key)
            .ok_or_else(|| bad("has a malformed public key".into()))?;
        let sig =
            hex::decode(&self.signature).map_err(|_| bad("has a malformed signature".into()))?;
        if !pk.verifies(&self.message(), &sig) {
            return Err(bad(format!(
                "the signature does not verify under the key it names ({}): the checkpoint was \
                 edited or forged",
                pk.fingerprint()
            )));
        }
        trust
            .check_signer(&self.agency, &pk)
            .map_err(|p| bad(format!("signer: {p}")))?;
        let v = verify(log, Some(&self.head))?;
        let at = read_entries(log)?
            .into_iter()
            .nth(self.seq as usize)
            .map(|e| e.hash);
        if at.as_deref() != Some(self.head.as_str()) {
            return Err(bad(format!(
                "the log's entry at seq {} is not the checkpointed head: the log was rewritten",
                self.seq
            )));
        }
        Ok(v)
    }
}

/// The log location: `explicit` (from `--audit-log`), else the environment variable, else
/// [`DEFAULT_FILE_NAME`] in `default_dir`.
pub fn resolve_path(explicit: Option<&Path>, default_dir: &Path) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    default_dir.join(DEFAULT_FILE_NAME)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

// ---------------------------------------------------------------------------------------------
// The IG report.

/// One encode with a key.
#[derive(Clone, Debug, Serialize)]
pub struct EncodeUse {
    /// Entry sequence number.
    pub seq: u64,
    /// When.
    pub time: String,
    /// Who and where.
    pub user: String,
    /// Host.
    pub host: String,
    /// The agency.
    pub agency: Option<String>,
    /// Rows read, encoded and rejected.
    pub counts: Map<String, Value>,
    /// Input and output files.
    pub inputs: Vec<FileRef>,
    /// Output files.
    pub outputs: Vec<FileRef>,
    /// The signing key that signed the output, if any.
    pub signer: Option<SignerRef>,
    /// Outcome.
    pub outcome: Outcome,
}

/// One match job that used a key.
#[derive(Clone, Debug, Serialize)]
pub struct MatchUse {
    /// Entry sequence number.
    pub seq: u64,
    /// When.
    pub time: String,
    /// User.
    pub user: String,
    /// Host.
    pub host: String,
    /// Agencies of the inputs.
    pub agencies: Vec<String>,
    /// Per input agency, its signature as checked against the trust file (`verified`,
    /// `allowed-unsigned`, `refused`); empty when the job ran without `--trust`.
    pub signatures: BTreeMap<String, String>,
    /// Counts (links, records, …).
    pub counts: Map<String, Value>,
    /// Outcome.
    pub outcome: Outcome,
}

/// A refusal or an override.
#[derive(Clone, Debug, Serialize)]
pub struct Notable {
    /// Entry sequence number.
    pub seq: u64,
    /// When.
    pub time: String,
    /// User.
    pub user: String,
    /// Host.
    pub host: String,
    /// The action.
    pub action: String,
    /// The agency, if known.
    pub agency: Option<String>,
    /// The refusal's message, or the override given.
    pub what: String,
}

/// Everything the log says about one key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyReport {
    /// The key's fingerprint.
    pub fingerprint: String,
    /// Partnership, purpose, creation and expiry, when a `key.new` or `key.show` recorded them.
    pub info: Option<KeyFacts>,
    /// Epoch, when known.
    pub epoch: Option<u32>,
    /// `valid`, `expired`, `retired` or `unknown`, as of the report's date.
    pub status: String,
    /// Key commands (new, show).
    pub key_actions: Vec<Notable>,
    /// Encodes with the key.
    pub encodes: Vec<EncodeUse>,
    /// Per agency: encodes done, rows encoded, first and last time.
    pub agencies: BTreeMap<String, AgencyUse>,
    /// Match jobs over encodings made with the key.
    pub matches: Vec<MatchUse>,
    /// Refusals.
    pub refusals: Vec<Notable>,
    /// Overrides (`allow_expired`, `force`, …).
    pub overrides: Vec<Notable>,
}

/// One agency's encodes with a key.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgencyUse {
    /// Completed encodes.
    pub encodes: u64,
    /// Rows encoded in them.
    pub rows_encoded: u64,
    /// First completed encode.
    pub first: Option<String>,
    /// Last completed encode.
    pub last: Option<String>,
}

/// The IG report over a log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Entries considered (after `since`).
    pub entries: u64,
    /// Entries in the log.
    pub entries_total: u64,
    /// Only activity on or after this date was reported.
    pub since: Option<String>,
    /// The report's date (for expiry status).
    pub as_of: String,
    /// Per key fingerprint.
    pub keys: Vec<KeyReport>,
    /// Refusals with no known key (e.g. a key file that could not be read).
    pub refusals_without_key: Vec<Notable>,
    /// Audit checkpoints.
    pub checkpoints: Vec<Notable>,
    /// Signing key actions (new, public), done or refused.
    pub signing_keys: Vec<Notable>,
}

fn notable(e: &Entry, what: String) -> Notable {
    Notable {
        seq: e.seq,
        time: e.time.clone(),
        user: e.user.clone(),
        host: e.host.clone(),
        action: e.action.clone(),
        agency: e.agency.clone(),
        what,
    }
}

/// The options of an entry that override a safety default.
fn overrides_of(e: &Entry) -> Vec<String> {
    let mut out = Vec::new();
    for name in [
        "allow_expired",
        "allow_retired",
        "force",
        "dedupe",
        "allow_unsigned",
    ] {
        if e.options.get(name) == Some(&Value::Bool(true)) {
            out.push(format!("--{}", name.replace('_', "-")));
        }
    }
    for name in ["max_reject_rate", "threshold", "review"] {
        if let Some(v) = e.options.get(name) {
            let default = match name {
                "max_reject_rate" => Some(0.05),
                _ => None,
            };
            let given = v.as_f64();
            let changed = match (given, default) {
                (Some(g), Some(d)) => (g - d).abs() > 1e-12,
                (Some(_), None) => true,
                _ => false,
            };
            if changed {
                out.push(format!("--{} {v}", name.replace('_', "-")));
            }
        }
    }
    out
}

/// Builds the IG report from a log's entries. `since` (YYYY-MM-DD) limits the activity
/// reported; key facts are taken from the whole log. `today` decides expiry status.
pub fn report(entries: &[Entry], since: Option<&str>, today: crate::date::Date) -> Report {
    let mut keys: BTreeMap<String, KeyReport> = BTreeMap::new();
    let mut rep = Report {
        entries_total: entries.len() as u64,
        since: since.map(str::to_string),
        as_of: today.to_string(),
        ..Report::default()
    };
    fn slot<'a>(keys: &'a mut BTreeMap<String, KeyReport>, fp: &str) -> &'a mut KeyReport {
        keys.entry(fp.to_string()).or_insert_with(|| KeyReport {
            fingerprint: fp.to_string(),
            ..KeyReport::default()
        })
    }
    // Key facts from the whole log.
    for e in entries {
        if let Some(fp) = &e.key_fingerprint {
            let k = slot(&mut keys, fp);
            if let Some(info) = &e.key_info {
                // A later `key show` of a restored, unretired copy does not undo a retirement.
                let retired = k.info.as_ref().and_then(|i| i.retired.clone());
                let mut info = info.clone();
                info.retired = info.retired.or(retired);
                k.info = Some(info);
            }
            if e.key_epoch.is_some() {
                k.epoch = e.key_epoch;
            }
        }
    }
    for e in entries {
        if since.is_some_and(|s| e.time.as_str() < s) {
            continue;
        }
        rep.entries += 1;
        if e.action == "audit.checkpoint" {
            let head = e
                .options
                .get("head_before")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let signed = e
                .signer
                .as_ref()
                .map(|s| format!(", signed by {} key {}", s.agency, s.fingerprint))
                .unwrap_or_default();
            let what = match e.outcome {
                Outcome::Done => format!("checkpoint after head {head}{signed}"),
                Outcome::Refused => format!("refused: {}", e.reason.clone().unwrap_or_default()),
            };
            rep.checkpoints.push(notable(e, what));
            continue;
        }
        if e.action.starts_with("signing-key.") {
            let what = match (&e.signer, e.outcome) {
                (Some(s), Outcome::Done) => format!("{} key {}", s.agency, s.fingerprint),
                _ => format!("refused: {}", e.reason.clone().unwrap_or_default()),
            };
            rep.signing_keys.push(notable(e, what));
            continue;
        }
        // The keys an entry concerns: its own, else those of its input encoding files.
        let mut fps: Vec<String> = Vec::new();
        if let Some(fp) = e
            .key_fingerprint
            .as_ref()
            .or(e.key_fingerprint_unverified.as_ref())
        {
            fps.push(fp.clone());
        }
        if fps.is_empty() {
            for i in &e.inputs {
                if let Some(fp) = &i.key_fingerprint {
                    if !fps.contains(fp) {
                        fps.push(fp.clone());
                    }
                }
            }
        }
        if fps.is_empty() {
            if e.outcome == Outcome::Refused {
                rep.refusals_without_key
                    .push(notable(e, e.reason.clone().unwrap_or_default()));
            }
            continue;
        }
        for fp in &fps {
            let k = slot(&mut keys, fp);
            if e.outcome == Outcome::Refused {
                k.refusals
                    .push(notable(e, e.reason.clone().unwrap_or_default()));
            }
            let ov = overrides_of(e);
            if !ov.is_empty() {
                k.overrides.push(notable(e, ov.join(" ")));
            }
            match e.action.as_str() {
                "encode" => {
                    k.encodes.push(EncodeUse {
                        seq: e.seq,
                        time: e.time.clone(),
                        user: e.user.clone(),
                        host: e.host.clone(),
                        agency: e.agency.clone(),
                        counts: e.counts.clone(),
                        inputs: e.inputs.clone(),
                        outputs: e.outputs.clone(),
                        signer: e.signer.clone(),
                        outcome: e.outcome,
                    });
                    if e.outcome == Outcome::Done {
                        let ag = k
                            .agencies
                            .entry(e.agency.clone().unwrap_or_else(|| "(unknown)".into()))
                            .or_default();
                        ag.encodes += 1;
                        ag.rows_encoded +=
                            e.counts.get("encoded").and_then(Value::as_u64).unwrap_or(0);
                        if ag.first.is_none() {
                            ag.first = Some(e.time.clone());
                        }
                        ag.last = Some(e.time.clone());
                    }
                }
                "match" => {
                    let mut agencies: Vec<String> =
                        e.inputs.iter().filter_map(|i| i.agency.clone()).collect();
                    agencies.dedup();
                    k.matches.push(MatchUse {
                        seq: e.seq,
                        time: e.time.clone(),
                        user: e.user.clone(),
                        host: e.host.clone(),
                        agencies,
                        signatures: e
                            .inputs
                            .iter()
                            .filter_map(|i| Some((i.agency.clone()?, i.signature.clone()?)))
                            .collect(),
                        counts: e.counts.clone(),
                        outcome: e.outcome,
                    });
                }
                other if other.starts_with("key.") => {
                    k.key_actions.push(notable(e, other.to_string()));
                }
                _ => {}
            }
        }
    }
    for k in keys.values_mut() {
        k.status = match &k.info {
            Some(info) if info.retired.is_some() => "retired".into(),
            Some(info) => match crate::date::Date::parse_iso(&info.expires) {
                Some(d) if today > d => "expired".into(),
                Some(_) => "valid".into(),
                None => "unknown".into(),
            },
            None => "unknown".into(),
        };
    }
    rep.keys = keys.into_values().collect();
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit entry's user is the account of the process's user id, as `/etc/passwd` names
    /// it, whatever `$USER` says.
    #[test]
    fn the_user_is_the_account_of_the_user_id() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/bash\n\nbad line\n\
                      etl:x:1001:1001::/home/etl:/bin/sh\n";
        assert_eq!(account_of(passwd, 0).as_deref(), Some("root"));
        assert_eq!(account_of(passwd, 1001).as_deref(), Some("etl"));
        assert_eq!(account_of(passwd, 7), None);
        #[cfg(target_os = "linux")]
        {
            let uid = rustix::process::getuid().as_raw();
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let want = account_of(&passwd, uid).unwrap_or_else(|| format!("uid {uid}"));
            assert_eq!(current_user(), want);
            assert_ne!(current_user(), "unknown");
        }
    }

    #[test]
    fn canonical_sorts_keys_and_has_no_spaces() {
        let v: Value = serde_json::from_str(r#"{"b": [1, {"z": 1, "a": "x"}], "a": null}"#)
            .expect("test JSON");
        assert_eq!(canonical(&v), r#"{"a":null,"b":[1,{"a":"x","z":1}]}"#);
    }

    #[test]
    fn append_chains_and_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("a.jsonl");
        for i in 0..3 {
            let mut ev = Event::new("test");
            ev.counts.insert("i".into(), i.into());
            let e = append(&log, &ev).expect("append");
            assert_eq!(e.seq, i);
        }
        let v = verify(&log, None).expect("verify");
        assert_eq!(v.entries, 3);
        let text = std::fs::read_to_string(&log).expect("read");
        let first = text.lines().next().expect("line");
        let second: Value = serde_json::from_str(text.lines().nth(1).expect("line")).expect("j");
        assert_eq!(second["prev"], sha256_hex(first.as_bytes()));
        assert!(verify(&log, Some(&v.head)).is_ok());
        assert!(verify(&log, Some(GENESIS)).is_err());
    }

    /// Floats (thresholds, rates) must survive parse and re-serialisation bit for bit, or a
    /// verify would call an untouched entry edited.
    #[test]
    fn floats_round_trip_through_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("f.jsonl");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20 {
            let mut ev = Event::new("test.float");
            for j in 0..50 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let f = (x >> 11) as f64 / (1u64 << 53) as f64;
                ev.counts.insert(format!("f{j}"), f.into());
            }
            append(&log, &ev).expect("append");
        }
        assert_eq!(verify(&log, None).expect("verify").entries, 20);
    }
}
