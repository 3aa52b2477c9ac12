//! `bloomlink encode`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use bloomlink::audit::{Event, FileRef, SignerRef};
use bloomlink::colmap::{ColumnMap, TextEncoding};
use bloomlink::date::Date;
use bloomlink::encode::{self, EncodeOptions, EncodeReport, Reject};
use bloomlink::format::{self, Header};
use bloomlink::fsutil::{self, Mode, Overwrite};
use bloomlink::key::{Expiry, LinkageKey, Retired};
use bloomlink::schema::Schema;
use bloomlink::signing::{SignerInfo, SigningKey};
use bloomlink::Error;
use clap::Args;
use serde::Serialize;

use super::output::{self, pct, thousands};

/// What `encode` and `risk` both read: an agency export, the key, its column map, the schema.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The agency export (CSV).
    #[arg(value_name = "INPUT.csv")]
    pub input: PathBuf,
    /// Partnership linkage key file.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Column map for this agency's export (TOML).
    #[arg(long, value_name = "MAP")]
    pub columns: PathBuf,
    /// Linkage schema (TOML) [default: built-in UK child schema].
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<PathBuf>,
}

impl ExportArgs {
    /// Notes the input, schema and column map in an audit entry.
    pub fn note(&self, ev: &mut Event) {
        ev.inputs.push(FileRef {
            path: self.input.display().to_string(),
            ..FileRef::default()
        });
        let schema = self.schema.as_ref().map(|p| p.display().to_string());
        let o = &mut ev.options;
        o.insert(
            "schema".into(),
            schema.unwrap_or_else(|| "built-in".into()).into(),
        );
        o.insert("columns".into(), self.columns.display().to_string().into());
    }

    /// The files read, each with how messages name it.
    pub fn read_files(&self) -> Vec<(&'static str, &Path)> {
        let mut v: Vec<(&'static str, &Path)> = vec![
            ("the export being encoded", &self.input),
            ("the linkage key", &self.key),
            ("the column map", &self.columns),
        ];
        if let Some(s) = &self.schema {
            v.push(("the schema", s));
        }
        v
    }

    /// Refuses an input that is missing or not a regular file.
    pub fn check_input(&self) -> Result<(), Error> {
        if self.input.is_file() {
            return Ok(());
        }
        let e = std::fs::metadata(&self.input).err().unwrap_or_else(|| {
            std::io::Error::other(
                "is not a regular file: the export is read from a file (its size and checksum \
                 are recorded), not from a pipe or standard input; save it to a file first",
            )
        });
        Err(Error::io(&self.input, e))
    }

    /// The schema given, or the built-in one.
    pub fn load_schema(&self) -> Result<Schema, Error> {
        match &self.schema {
            Some(p) => Schema::load(p),
            None => Ok(Schema::default_uk()),
        }
    }
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub export: ExportArgs,
    /// Output encoding file.
    #[arg(short, long, value_name = "OUTPUT.clk")]
    pub output: PathBuf,
    /// Rejects file: row, line, column, field and reason of every rejected row (no values)
    /// [default: the output's name with `.rejects.csv` for its extension].
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Replace record ids by opaque references and write the mapping (mode 0600) to MAPFILE,
    /// for the agency to keep. Use when the record id is itself personal data.
    #[arg(long, value_name = "MAPFILE")]
    pub opaque_ids: Option<PathBuf>,
    /// Fail (exit 3: no encoding written, only the rejects file) if more than this share of
    /// rows is rejected.
    #[arg(long, default_value_t = 0.05, value_name = "RATE", value_parser = parse_rate)]
    pub max_reject_rate: f64,
    /// Fail (exit 3: no encoding written, only the rejects file) if a mapped field is invalid
    /// in more than this share of rows (and at least 10): a wrong date format or column in the
    /// map (1 to accept any).
    #[arg(long, default_value_t = 0.5, value_name = "RATE", value_parser = parse_rate)]
    pub max_invalid_rate: f64,
    /// Replace existing output files (also to rerun after a run that failed with exit 3: its
    /// rejects file is there).
    #[arg(long)]
    pub force: bool,
    /// Accept an expired key (the override is recorded in the summary and the audit log).
    #[arg(long)]
    pub allow_expired: bool,
    /// Accept a retired key (the override is recorded in the summary and the audit log).
    #[arg(long)]
    pub allow_retired: bool,
    /// Sign the encoding file's manifest with this agency signing key (format version 2). Its
    /// agency must be the column map's.
    #[arg(long, value_name = "SIGNING_KEY")]
    pub sign_with: Option<PathBuf>,
    /// Worker threads, 1 to 1024 (0: all cores) [default: all cores].
    #[arg(long, default_value_t = 0, hide_default_value = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub threads: usize,
    /// Print one JSON object on stdout, whatever the outcome: the summary with `"outcome":
    /// "done"`, or `outcome`, `exit_code` and `error` when the run fails (README, "the nightly
    /// encode"). Warnings and errors also go to stderr.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a share between 0 and 1, e.g. 0.05".into()),
    }
}

/// The JSON summary.
#[derive(Serialize)]
struct Summary<'a> {
    /// Always `done` here; a failed run prints [`super::failure_json`]'s object instead.
    outcome: &'static str,
    output: &'a PathBuf,
    /// Records in the encoding file (`report.encoded`; 0 in a refused run's object, whose
    /// `report` counts what would have been encoded).
    rows_written: usize,
    output_bytes: u64,
    output_sha256: String,
    rejects_file: &'a PathBuf,
    opaque_id_map: Option<&'a PathBuf>,
    key_fingerprint: &'a str,
    /// The key's last day of use, `YYYY-MM-DD`.
    key_expires: String,
    /// Days from today to `key_expires` (0 on that day, negative when used expired).
    key_expires_in_days: i64,
    key_expired_override: bool,
    key_retired_override: bool,
    signed_by: Option<&'a SignerInfo>,
    schema: &'a str,
    schema_digest: &'a str,
    hardening: String,
    seconds: f64,
    rows_per_second: f64,
    report: &'a EncodeReport,
}

pub fn run(a: EncodeArgs, audit_log: Option<&Path>) -> anyhow::Result<()> {
    // A run refused on its export (too many rejects or invalid values) notes here what its
    // --json failure object adds: `output: null`, the counts and the rejects file. Other
    // failures leave no encoding (one whose audit entry cannot be written is taken back).
    let mut refused = serde_json::Map::new();
    let result = run_recorded(&a, audit_log, &mut refused);
    // (An interrupt that came first has printed the JSON: `output::print` then waits for it to
    // exit the process.)
    match result {
        Ok(text) => output::print(&text),
        Err(e) => {
            // With --json, every failure prints one JSON object on stdout (the error also goes
            // to stderr): a monitor parses stdout whatever happened.
            // A failure to print it (a monitor that closed the pipe) must not replace the
            // run's own error: that would turn a refused run into exit 0 (a closed pipe is
            // not an error for a run that succeeded).
            if a.json {
                let _ = output::print_json(&super::failure_json(&e, refused));
            }
            Err(e)
        }
    }
}

/// The run, with its audit entry written; returns the text to print.
fn run_recorded(
    a: &EncodeArgs,
    audit_log: Option<&Path>,
    refused: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<String> {
    // 4 KiB pages, not transparent huge pages. The encoder's memory is written once, mostly
    // at random, and on virtual machines that hand freed memory back to the host a fresh
    // 2 MiB page costs several times what 512 fresh 4 KiB pages do (measured: about 0.7 s of
    // system time on 984k rows; docs/DESIGN-NOTES.md, "Encoder"). Only a hint: failure is
    // harmless.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let log = super::auditcmd::log_path(audit_log, &a.output);
    // A missing output directory is reported as such, not as an unwritable audit log.
    bloomlink::fsutil::check_output(&a.output, bloomlink::fsutil::Overwrite::Replace)?;
    super::auditcmd::precheck(&log)?;
    let mut ev = Event::new("encode");
    a.export.note(&mut ev);
    let o = &mut ev.options;
    o.insert("allow_expired".into(), a.allow_expired.into());
    o.insert("allow_retired".into(), a.allow_retired.into());
    o.insert("signed".into(), a.sign_with.is_some().into());
    o.insert("force".into(), a.force.into());
    o.insert("max_reject_rate".into(), a.max_reject_rate.into());
    o.insert("max_invalid_rate".into(), a.max_invalid_rate.into());
    o.insert("opaque_ids".into(), a.opaque_ids.is_some().into());
    super::auditcmd::note_running(&log, &ev);
    // From the first output written to the audit entry, an interrupt waits (fsutil).
    let _finishing = bloomlink::fsutil::FinishingScope;
    let result = encode(a, &log, &mut ev, refused);
    if result.is_err() && ev.key_fingerprint.is_none() {
        ev.key_fingerprint_unverified = LinkageKey::claimed_fingerprint(&a.export.key);
    }
    super::auditcmd::record_committed(&log, ev, result)
}

/// The entries of an existing opaque id map at `path` that tonight's `map` does not have, in
/// their order: the map of a key epoch keeps every id it has seen, so that links of earlier
/// nights still map back. Every entry is checked against `reference` (tonight's key and
/// agency): a map written under another key or for another agency, or no opaque id map at
/// all, is refused, never merged.
fn earlier_opaque_ids(
    path: &Path,
    map: &[(String, String)],
    reference: impl Fn(&str) -> String + Sync,
) -> Result<Vec<(String, String)>, Error> {
    use rayon::prelude::*;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let refused = |why: String| {
        Error::Usage(format!(
            "the opaque id map {} {why}. Keep one map per key epoch and agency, and give a new \
             map file after a key rotation",
            path.display()
        ))
    };
    let mut rd = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    match rd.headers() {
        Ok(h) if h.iter().eq(["opaque_ref", "record_id"]) => {}
        _ => {
            return Err(refused(
                "is not an opaque id map (`opaque_ref,record_id`)".into(),
            ))
        }
    }
    let mut entries = Vec::new();
    for (i, rec) in rd.records().enumerate() {
        match rec {
            Ok(r) if r.len() == 2 => entries.push((r[0].to_string(), r[1].to_string())),
            _ => return Err(refused(format!("cannot be read at row {}", i + 1))),
        }
    }
    // Row numbers only: the ids are the agency's own and may be personal data.
    if let Some(row) = entries
        .par_iter()
        .position_first(|(r, id)| reference(id) != *r)
    {
        return Err(refused(format!(
            "was written under another key or for another agency (row {}'s reference is not \
             what tonight's key gives its record id)",
            row + 1
        )));
    }
    let tonight: std::collections::HashSet<&str> = map.iter().map(|(_, id)| id.as_str()).collect();
    entries.retain(|(_, id)| !tonight.contains(id.as_str()));
    Ok(entries)
}

/// The refusal of record ids that are personal data without `--opaque-ids`; `what` says which
/// ids and ends with the subject of "would go out in clear".
fn ids_in_clear(what: &str) -> Error {
    Error::Usage(format!(
        "{what} would go out in clear in the encoding file, beside the filters that hide them. \
         Pass --opaque-ids MAPFILE to replace them with opaque references (the mapping stays at \
         the agency)"
    ))
}

/// Does the encode, noting in `ev` what the audit entry needs; returns the text to print and
/// the outputs, in place but kept only once the audit entry is written.
/// Refuses an output that is one of the files the run reads (`--force` would replace the
/// export, the partnership's key, a signing key, the column map or the schema with it).
pub(super) fn refuse_outputs_over_inputs(
    outputs: &[(&str, &Path)],
    inputs: &[(&str, &Path)],
) -> anyhow::Result<()> {
    for (what, p) in outputs {
        if let Some((input, _)) = inputs.iter().find(|(_, q)| fsutil::same_file(p, q)) {
            anyhow::bail!(
                "{what} {} is {input}, which this run reads: choose another output",
                p.display()
            );
        }
    }
    Ok(())
}

fn encode(
    a: &EncodeArgs,
    log: &Path,
    ev: &mut Event,
    refused: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<(String, fsutil::Committed)> {
    let start = Instant::now();
    let overwrite = overwrite_of(a);
    let rejects_path = a
        .rejects
        .clone()
        .unwrap_or_else(|| super::sibling(&a.output, ".rejects.csv"));
    // Fail before any work if an output cannot be written, or would overwrite the export or
    // another output of this run.
    let mut files: Vec<(&str, &Path)> = vec![
        ("the encoding file (-o)", &a.output),
        ("the rejects file", &rejects_path),
    ];
    if let Some(m) = &a.opaque_ids {
        files.push(("the opaque id map", m));
    }
    let mut read = a.export.read_files();
    if let Some(s) = &a.sign_with {
        read.push(("the signing key", s));
    }
    refuse_outputs_over_inputs(&files, &read)?;
    for (i, (what, p)) in files.iter().enumerate() {
        if let Some((other, _)) = files[..i].iter().find(|(_, q)| fsutil::same_file(p, q)) {
            anyhow::bail!(
                "{what} and {other} are both {}: give them different paths",
                p.display()
            );
        }
    }
    fsutil::check_output(&a.output, overwrite)?;
    fsutil::check_output(&rejects_path, overwrite)?;
    if let Some(m) = &a.opaque_ids {
        // The map of a key epoch is kept from night to night: tonight's ids are added to it.
        fsutil::check_output(m, Overwrite::Replace)?;
    }
    let outputs: Vec<&Path> = files.iter().map(|(_, p)| *p).collect();
    super::warn_abandoned(&outputs);
    a.export.check_input()?;

    let expiry = if a.allow_expired {
        Expiry::Allow
    } else {
        Expiry::Enforce
    };
    let retired = if a.allow_retired {
        Retired::Allow
    } else {
        Retired::Enforce
    };
    let key = LinkageKey::load_for_use(&a.export.key, expiry, retired)?;
    let today = Date::today_utc();
    let expired_override = key.info().is_expired(today);
    ev.key_fingerprint = Some(key.info().fingerprint.clone());
    ev.key_epoch = Some(key.info().epoch);
    ev.options
        .insert("key_expired_override".into(), expired_override.into());
    // Retired in the file, or in this audit log: the latter catches a copy of the key restored
    // from before its retirement.
    let retired_at = key
        .info()
        .retired
        .clone()
        .or_else(|| bloomlink::audit::retirement_in_log(log, &key.info().fingerprint));
    if let (Some(when), false) = (&retired_at, a.allow_retired) {
        return Err(Error::key(
            &a.export.key,
            format!(
                "key {} (epoch {}) was retired on {when} (recorded in the audit log {}): this \
                 file is an old copy. Ask the key custodian for the current key (or pass \
                 --allow-retired, which is recorded)",
                key.info().fingerprint,
                key.info().epoch,
                log.display()
            ),
        )
        .into());
    }
    let retired_override = retired_at.is_some();
    ev.options
        .insert("key_retired_override".into(), retired_override.into());
    let schema = a.export.load_schema()?;
    ev.schema_digest = Some(schema.digest.clone());
    // Known-weak settings: warned here before any work, and listed in the summary.
    for w in schema.weaknesses() {
        eprintln!("warning: schema {}: {w}", schema.origin);
    }
    let map = ColumnMap::load(&a.export.columns)?;
    ev.agency = Some(map.agency.clone());
    super::auditcmd::note_running(log, ev);
    map.check_against(&schema)?;
    if a.opaque_ids.is_none() {
        if let Some(field) = map.columns.iter().find(|(_, c)| **c == map.record_id) {
            return Err(ids_in_clear(&format!(
                "the record-id column `{}` is also mapped as {} in {}: its values",
                map.record_id,
                field.0,
                a.export.columns.display()
            ))
            .into());
        }
    }
    let signer = match &a.sign_with {
        Some(p) => {
            let k = SigningKey::load(p).with_context(|| "cannot sign the encoding".to_string())?;
            if k.info().agency != map.agency {
                return Err(Error::key(
                    p,
                    format!(
                        "is agency {}'s signing key, but the column map {} says this export is \
                         agency {}: sign with the {} signing key",
                        k.info().agency,
                        a.export.columns.display(),
                        map.agency,
                        map.agency
                    ),
                )
                .into());
            }
            ev.signer = Some(SignerRef::of(k.info()));
            Some(k)
        }
        None => None,
    };
    // Warnings go to stderr with --json too: stdout carries only the JSON.
    if key.info().purpose == "demo" {
        eprintln!(
            "warning: {} is the DEMO key shipped with bloomlink: use it for synthetic data only",
            a.export.key.display()
        );
    }
    if let Some(when) = &retired_at {
        eprintln!(
            "warning: key {} was retired on {when}; encoding anyway because --allow-retired was \
             given",
            key.info().fingerprint
        );
    }
    if expired_override {
        eprintln!(
            "warning: key {} expired on {}; encoding anyway because --allow-expired was given",
            key.info().fingerprint,
            key.info().expires
        );
    }

    let total = std::fs::metadata(&a.export.input)
        .map(|m| m.len())
        .unwrap_or(0);
    let pb = output::byte_progress(total, a.quiet || a.json, "encoding");
    let progress = |b: u64| pb.set_position(b);
    let opts = EncodeOptions {
        today,
        threads: a.threads,
        opaque_ids: a.opaque_ids.is_some(),
        progress: Some(&progress),
    };
    let encoded = encode::encode_csv(&a.export.input, &key, &schema, &map, &opts);
    pb.finish_and_clear();
    let mut encoded = encoded?;
    // In the summary and the JSON, also of a run refused on its export.
    if let Some(w) = key.info().expiry_warning(today) {
        encoded.report.warnings.push(w);
    }

    let report = &encoded.report;
    ev.inputs[0].sha256 = Some(report.input_sha256.clone());
    for (k, v) in [
        ("rows_read", report.rows_read),
        ("encoded", report.encoded),
        ("rejected", report.rejected),
    ] {
        ev.counts.insert(k.into(), v.into());
    }
    // An export in another encoding than declared first: it is the cause of what follows.
    if let Some(m) = encoded.encoding_mismatch {
        let declared = map.encoding.map_value();
        let (looks, looks_as, evidence, harm) = match m {
            encode::EncodingMismatch::Utf8DeclaredWindows1252 => (
                "UTF-8",
                TextEncoding::Utf8,
                "the file is valid UTF-8 with non-ASCII characters".to_string(),
                "accented names are garbled (Zoë as ZoÃ«) and would not link".to_string(),
            ),
            encode::EncodingMismatch::SingleByteDeclaredUtf8 { rejected } => (
                "Windows-1252 (Excel's plain CSV)",
                TextEncoding::Windows1252,
                "most of its non-ASCII bytes are not UTF-8".to_string(),
                format!(
                    "the {rejected} row(s) with such bytes (names with accents, such as Zoë) \
                     are rejected, and those children would be missing from the linkage every \
                     night"
                ),
            ),
        };
        let limit = ("declared_encoding", declared.into());
        *refused = refused_export(a, &rejects_path, &encoded.rejects, report, ev, limit)?;
        return Err(Error::WrongEncoding {
            path: a.export.input.clone(),
            problem: format!(
                "the column map {} declares encoding = \"{declared}\", but {evidence}: it is \
                 almost certainly {looks}. Read as {declared}, {harm}, so nothing was written. \
                 Set encoding = \"{}\" in the column map and encode again",
                a.export.columns.display(),
                looks_as.map_value()
            ),
        }
        .into());
    }

    // Lines an unclosed quote swallowed were rows of the export: they count as rejected.
    let swallowed: u64 = encoded.rejects.iter().map(|r| r.swallowed_lines).sum();
    // Empty rows (a spreadsheet's formatted blank rows) are listed, but are no sign of a bad
    // export: they count on neither side of the rate.
    let empty = report.reject_reasons.get("empty_row").copied().unwrap_or(0);
    let (counted_rejects, counted_rows) = (
        report.rejected - empty + swallowed,
        report.rows_read - empty + swallowed,
    );
    let rate = if counted_rows == 0 {
        0.0
    } else {
        counted_rejects as f64 / counted_rows as f64
    };
    if rate > a.max_reject_rate {
        let bad_bytes = report
            .reject_reasons
            .get("invalid_encoding")
            .copied()
            .unwrap_or(0);
        let mut hint = if bad_bytes * 2 > report.rejected {
            format!(
                ". Most rejections are bytes that are not valid for the declared encoding: check \
                 `encoding` in {}",
                a.export.columns.display()
            )
        } else {
            String::new()
        };
        let limit = ("max_reject_rate", a.max_reject_rate.into());
        *refused = refused_export(a, &rejects_path, &encoded.rejects, report, ev, limit)?;
        if swallowed > 0 {
            hint.push_str(&format!(
                ". The counts include {swallowed} line(s) swallowed by unclosed quotes (see \
                 unclosed_quote in the rejects file)"
            ));
        }
        return Err(Error::TooManyRejects {
            path: a.export.input.clone(),
            rejects_file: rejects_path.clone(),
            rejected: counted_rejects,
            read: counted_rows,
            rate: rate * 100.0,
            limit: a.max_reject_rate * 100.0,
            hint,
        }
        .into());
    }

    if let Some(f) = report.fields.iter().find(|f| {
        // A few invalid values in a tiny export are no evidence of a broken map.
        f.column.is_some() && f.invalid_total() >= 10 && f.invalid_rate() > a.max_invalid_rate
    }) {
        let limit = ("max_invalid_rate", a.max_invalid_rate.into());
        *refused = refused_export(a, &rejects_path, &encoded.rejects, report, ev, limit)?;
        return Err(Error::TooManyInvalid {
            path: a.export.input.clone(),
            field: f.field.clone(),
            column: f.column.clone().unwrap_or_default(),
            rate: f.invalid_rate() * 100.0,
            limit: a.max_invalid_rate * 100.0,
            hint: format!(
                "{}{}",
                encode::invalid_hint(&schema, &f.field),
                encode::salt_loss(&schema, &f.field).unwrap_or_default()
            ),
        }
        .into());
    }

    if a.opaque_ids.is_none() {
        if let Some(kind) = encode::identifying_ids(&encoded.records) {
            return Err(ids_in_clear(&format!(
                "the record ids (column `{}` of {}) look like {kind}: they",
                map.record_id,
                a.export.input.display()
            ))
            .into());
        }
    }
    let header = Header::for_encoding(key.info(), &schema, report, a.opaque_ids.is_some());
    let write_start = Instant::now();
    // At national scale the write takes seconds: show that something is happening.
    let writing = output::spinner(
        a.quiet || a.json,
        &format!("writing {}", a.output.display()),
    );
    // Every output is written to its temporary file and flushed first, and only then are they
    // put in place, together: a full disk (or any write error) fails the run with none of them
    // in place. Before, the encoding was put in place first, and a failure on the id map or
    // rejects file left an encoding without them, which also blocked the next night's run.
    let (encoding, written) = format::prepare_with(
        &a.output,
        &header,
        &encoded.records,
        overwrite,
        signer.as_ref(),
    )?;
    let mut prepared = vec![encoding];
    if let Some(m) = &a.opaque_ids {
        let hasher = bloomlink::tokens::Hasher::new(&key, &schema);
        let earlier = earlier_opaque_ids(m, &encoded.opaque_map, |id| {
            hasher.opaque_ref(&map.agency, id)
        })?;
        let (map_file, ()) = fsutil::prepare_atomic(m, Overwrite::Replace, Mode::Private, |w| {
            let io = |e| Error::io(m, e);
            writeln!(w, "opaque_ref,record_id").map_err(io)?;
            for (r, id) in earlier.iter().chain(&encoded.opaque_map) {
                writeln!(w, "{},{}", r, output::csv_field(id)).map_err(io)?;
            }
            Ok(())
        })
        .with_context(|| "cannot write the opaque id map")?;
        prepared.push(map_file);
    }
    prepared.push(prepare_rejects(&rejects_path, &encoded.rejects, overwrite)?);
    // From here an interrupt waits for the outputs and the audit entry (`commit_all` begins the
    // finishing steps).
    let committed = fsutil::commit_all(prepared)?;
    ev.outputs
        .push(FileRef::with_sha256(&a.output, written.sha256.clone()));
    if let Some(m) = &a.opaque_ids {
        ev.outputs.push(FileRef::hashed(m));
    }
    ev.outputs.push(FileRef::hashed(&rejects_path));
    encoded.report.seconds.write = write_start.elapsed().as_secs_f64();
    writing.finish_and_clear();
    let report = &encoded.report;
    let secs = start.elapsed().as_secs_f64();
    let summary = Summary {
        outcome: "done",
        output: &a.output,
        rows_written: encoded.records.len(),
        output_bytes: written.bytes,
        output_sha256: written.sha256,
        rejects_file: &rejects_path,
        opaque_id_map: a.opaque_ids.as_ref(),
        key_fingerprint: &key.info().fingerprint,
        key_expires: key.info().expires.to_string(),
        key_expires_in_days: key.info().days_to_expiry(today),
        key_expired_override: expired_override,
        key_retired_override: retired_override,
        signed_by: signer.as_ref().map(|k| k.info()),
        schema: &schema.def.name,
        schema_digest: &schema.digest,
        hardening: schema.def.hardening.describe(),
        seconds: secs,
        rows_per_second: report.rows_read as f64 / secs.max(1e-9),
        report,
    };
    let text = if a.json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else {
        human_summary(&summary)
    };
    Ok((text, committed))
}

fn overwrite_of(a: &EncodeArgs) -> Overwrite {
    if a.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    }
}

/// Before a run fails on its export (too many rejected rows or invalid values): writes the
/// rejects file, which is what the data team needs to fix the export, and returns what the
/// --json failure object adds to `outcome`, `exit_code` and `error`: the counts, as a
/// successful run would print them, the rejects file and the limit exceeded.
fn refused_export(
    a: &EncodeArgs,
    rejects_path: &PathBuf,
    rejects: &[Reject],
    report: &EncodeReport,
    ev: &mut Event,
    (limit, value): (&str, serde_json::Value),
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    fsutil::begin_finishing();
    prepare_rejects(rejects_path, rejects, overwrite_of(a))?.commit()?;
    ev.outputs.push(FileRef::hashed(rejects_path));
    let mut o = serde_json::Map::new();
    o.insert("output".into(), serde_json::Value::Null);
    // `report.encoded` counts the rows that would have been encoded: none was written.
    o.insert("rows_written".into(), 0.into());
    o.insert("rejects_file".into(), serde_json::to_value(rejects_path)?);
    o.insert(limit.into(), value);
    o.insert("report".into(), serde_json::to_value(report)?);
    Ok(o)
}

/// The rejects file, written to its temporary file ([`fsutil::prepare_atomic`]).
fn prepare_rejects(
    path: &PathBuf,
    rejects: &[Reject],
    overwrite: Overwrite,
) -> anyhow::Result<fsutil::Prepared> {
    let (prepared, ()) = fsutil::prepare_atomic(path, overwrite, Mode::Default, |w| {
        let io = |e| Error::io(path, e);
        writeln!(w, "row,line,column,field,reason,detail").map_err(io)?;
        for r in rejects {
            writeln!(
                w,
                "{},{},{},{},{},{}",
                r.row,
                r.line,
                output::csv_field(r.column.as_deref().unwrap_or("")),
                output::csv_field(r.field.as_deref().unwrap_or("")),
                r.reason,
                output::csv_field(&r.detail)
            )
            .map_err(io)?;
        }
        Ok(())
    })?;
    Ok(prepared)
}

fn human_summary(s: &Summary<'_>) -> String {
    let r = s.report;
    let mut t = String::new();
    t.push_str(&format!(
        "Encoded {} ({}) → {}\n",
        r.input.display(),
        r.agency,
        s.output.display()
    ));
    t.push_str(&format!(
        "  key {}{}{}   schema {} {}\n",
        s.key_fingerprint,
        if s.key_expired_override {
            " (EXPIRED, used with --allow-expired)"
        } else {
            ""
        },
        if s.key_retired_override {
            " (RETIRED, used with --allow-retired)"
        } else {
            ""
        },
        s.schema,
        &s.schema_digest[..16]
    ));
    t.push_str(&format!("  hardening {}\n", s.hardening));
    if let Some(sig) = s.signed_by {
        t.push_str(&format!(
            "  signed by {} (key {})\n",
            sig.agency, sig.fingerprint
        ));
    }
    t.push_str(&format!(
        "  rows read {}   encoded {}   rejected {} ({:.2} %)\n",
        thousands(r.rows_read),
        thousands(r.encoded),
        thousands(r.rejected),
        pct(r.rejected, r.rows_read)
    ));
    if r.rejected > 0 {
        let reasons: Vec<String> = r
            .reject_reasons
            .iter()
            .map(|(k, v)| format!("{k} {}", thousands(*v)))
            .collect();
        t.push_str(&format!(
            "  rejections: {}   (details: {})\n",
            reasons.join(", "),
            s.rejects_file.display()
        ));
    }
    t.push_str(&format!(
        "  {:<15} {:<22} {:>9} {:>9} {:>9}  invalid reasons\n",
        "field", "column", "present", "missing", "invalid"
    ));
    for f in &r.fields {
        let n = f.present + f.missing + f.invalid_total();
        let reasons: Vec<String> = f
            .invalid
            .iter()
            .map(|(k, v)| format!("{k} {}", thousands(*v)))
            .collect();
        let col: String = f
            .column
            .as_deref()
            .unwrap_or("(not mapped)")
            .chars()
            .take(22)
            .collect();
        t.push_str(&format!(
            "  {:<15} {:<22} {:>8.1}% {:>8.1}% {:>8.1}%  {}\n",
            f.field,
            col,
            pct(f.present, n),
            pct(f.missing, n),
            pct(f.invalid_total(), n),
            reasons.join(", ")
        ));
    }
    for w in &r.warnings {
        t.push_str(&format!("  warning: {w}\n"));
    }
    if let Some(m) = s.opaque_id_map {
        t.push_str(&format!(
            "  record ids replaced by opaque references; keep the mapping {} at the agency\n",
            m.display()
        ));
    }
    t.push_str(&format!(
        "  {:.2} s ({:.2} encode, {:.2} assemble, {:.2} write), {} rows/s, {} bytes written\n",
        s.seconds,
        r.seconds.read_and_encode,
        r.seconds.assemble,
        r.seconds.write,
        thousands(s.rows_per_second as u64),
        thousands(s.output_bytes)
    ));
    t
}
