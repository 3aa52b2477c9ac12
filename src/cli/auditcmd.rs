//! `bloomlink audit …`, and the helpers the other commands use to write their audit entries.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bloomlink::audit::{self, Event, KeyReport, Notable, Outcome, SignedCheckpoint, SignerRef};
use bloomlink::date::Date;
use bloomlink::fsutil::{self, Mode, Overwrite};
use bloomlink::signing::{SigningKey, Trust};
use clap::Subcommand;

use super::output::{self, thousands};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute a log's hash chain: OK (exit 0), or the first bad entry (exit 6).
    Verify {
        /// The audit log.
        log: PathBuf,
        /// A head hash recorded earlier by `audit checkpoint`, or a signed checkpoint file
        /// (`audit checkpoint --sign-with … -o FILE`): that head must still be in the log.
        #[arg(long, value_name = "HASH|FILE")]
        checkpoint: Option<String>,
        /// Trust file (agency → public key) that a signed checkpoint's signer must be in.
        #[arg(long, value_name = "TRUST.toml")]
        trust: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the log, append an `audit.checkpoint` entry and print the new head hash, entry
    /// count and time, to be recorded outside the log; with --sign-with, also a signature.
    Checkpoint {
        /// The audit log.
        log: PathBuf,
        /// Sign the checkpoint with this signing key.
        #[arg(long, value_name = "SIGNING_KEY")]
        sign_with: Option<PathBuf>,
        /// Write the signed checkpoint (JSON) to this file (never overwrites).
        #[arg(short, long, value_name = "CP", requires = "sign_with")]
        output: Option<PathBuf>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per key: partnership, purpose, epoch, expiry; which agencies encoded with it, how many
    /// rows, when; which match jobs used it; every refusal and override.
    Report {
        /// The audit log.
        log: PathBuf,
        /// Only activity on or after this day (YYYY-MM-DD).
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        since: Option<Date>,
        /// Complete report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse_iso_explained(s)
}

/// Where a command's entry goes: `--audit-log`, else `$BLOOMLINK_AUDIT_LOG`, else next to the
/// main output.
pub fn log_path(explicit: Option<&Path>, main_output: &Path) -> PathBuf {
    audit::resolve_path(explicit, &audit::dir_of(main_output))
}

/// Checks before any work that the log can be appended to.
pub fn precheck(log: &Path) -> anyhow::Result<()> {
    audit::check_appendable(log).with_context(|| {
        format!(
            "cannot write the audit log {} (set --audit-log or {}); nothing was done",
            log.display(),
            audit::ENV_VAR
        )
    })
}

/// The entry of the audited command running now (`encode`, `match`, `risk`), as far as it is
/// known, for an interrupt to record ([`record_interrupted`]) until the command records its own.
static RUNNING: std::sync::Mutex<Option<(std::path::PathBuf, Event)>> = std::sync::Mutex::new(None);

fn running() -> std::sync::MutexGuard<'static, Option<(std::path::PathBuf, Event)>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Set once an audited command has recorded its entry (done or refused): an interrupt after
/// that (during its last steps) lets it end as it would have, with its own exit code.
static RECORDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the running command has recorded its audit entry.
pub fn completed() -> bool {
    RECORDED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Appends `ev`, noting that the command has recorded its entry.
fn append(log: &Path, ev: &Event) -> bloomlink::Result<audit::Entry> {
    let entry = audit::append(log, ev)?;
    RECORDED.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(entry)
}

/// Notes what the running command's entry in `log` holds so far (its inputs, options, the key
/// once verified), so that an interrupt before the command ends records it: an IG lead then
/// sees a run stopped half way, not nothing.
pub fn note_running(log: &Path, ev: &Event) {
    *running() = Some((log.to_path_buf(), ev.clone()));
}

/// For the interrupt handler, once `fsutil::interrupt` has stopped the command (which then
/// cannot record an entry of its own: recording is a finishing step): records the running
/// command's entry, refused with `reason`. Returns the log written to.
pub fn record_interrupted(reason: &str) -> Option<anyhow::Result<std::path::PathBuf>> {
    let (log, mut ev) = running().take()?;
    ev.refuse(reason.to_string());
    Some(audit::append(&log, &ev).map(|_| log).map_err(Into::into))
}

/// Appends a completed command's entry.
fn append_done(log: &Path, ev: &Event) -> anyhow::Result<()> {
    append(log, ev).with_context(|| {
        format!(
            "the {} completed but its audit entry could not be written to {}",
            ev.action,
            log.display()
        )
    })?;
    Ok(())
}

/// [`record`] for a command whose outputs are in place but not yet kept: they are kept once the
/// entry is written, and undone if it cannot be (new outputs removed, the files they replaced
/// put back), so that no output is left that the log does not record.
pub fn record_committed(
    log: &Path,
    ev: Event,
    result: anyhow::Result<(String, bloomlink::fsutil::Committed)>,
) -> anyhow::Result<String> {
    let (text, committed) = match result {
        Ok(done) => done,
        Err(e) => return record(log, ev, Err(e)),
    };
    // As in `record`: an interrupt waits for the entry and the outputs' fate.
    let _finishing = bloomlink::fsutil::finishing();
    running().take();
    match append(log, &ev) {
        Ok(_) => {
            committed.keep();
            Ok(text)
        }
        Err(e) => {
            drop(committed);
            Err(anyhow::Error::from(e).context(format!(
                "the {} could not be recorded in the audit log {}, so its outputs were removed \
                 again and anything they replaced put back: nothing was done; rerun once the \
                 log can be written",
                ev.action,
                log.display()
            )))
        }
    }
}

/// Records the outcome of a command: on success the entry must be written (an error
/// otherwise); on failure the refusal is recorded (a failure to do so is reported on stderr)
/// and the command's own error is returned.
pub fn record<T>(log: &Path, mut ev: Event, result: anyhow::Result<T>) -> anyhow::Result<T> {
    // The entry is a finishing step: an interrupt waits for it (and then lets the command end
    // with its own exit code); one that came first has recorded the interruption, and this
    // waits for the exit.
    let _finishing = bloomlink::fsutil::finishing();
    running().take();
    match result {
        Ok(v) => {
            append_done(log, &ev)?;
            Ok(v)
        }
        Err(e) => {
            ev.refuse(format!("{e:#}"));
            if let Err(le) = append(log, &ev) {
                // `{:#}`: the cause too (an I/O error's own text is only the path).
                let le = anyhow::Error::from(le);
                eprintln!(
                    "error: the refusal could not be recorded in the audit log {}: {le:#}",
                    log.display()
                );
            }
            Err(e)
        }
    }
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify {
            log,
            checkpoint,
            trust,
            json,
        } => {
            let is_hash = |c: &str| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit());
            let (v, signed) = match checkpoint.as_deref() {
                Some(c) if !is_hash(c) => {
                    let cp_path = PathBuf::from(c);
                    let cp = SignedCheckpoint::load(&cp_path)?;
                    let Some(trust) = trust else {
                        return Err(bloomlink::Error::Usage(
                            "a signed checkpoint is only as good as the key that verifies it: \
                             pass --trust TRUST.toml"
                                .into(),
                        )
                        .into());
                    };
                    let trust = Trust::load(&trust)?;
                    (cp.verify(&cp_path, &log, &trust)?, Some(cp))
                }
                c => (audit::verify(&log, c)?, None),
            };
            if json {
                output::print_json(&serde_json::json!({
                    "entries": v.entries, "head": v.head, "head_time": v.head_time,
                    "checkpoint": signed,
                }))
            } else {
                let cp = signed
                    .map(|c| {
                        format!(
                            "; checkpoint of seq {} signed by {} verified and still in the log",
                            c.seq, c.agency
                        )
                    })
                    .unwrap_or_default();
                output::print(&format!("OK: {} entries, head {}{cp}\n", v.entries, v.head))
            }
        }
        AuditCommand::Checkpoint {
            log,
            sign_with,
            output: cp_out,
            json,
        } => {
            let before = audit::verify(&log, None)?;
            let mut ev = Event::new("audit.checkpoint");
            ev.counts
                .insert("entries_before".into(), before.entries.into());
            ev.options
                .insert("head_before".into(), before.head.clone().into());
            ev.options
                .insert("signed".into(), sign_with.is_some().into());
            // A refused signing key (readable by others, corrupted, a linkage key) is recorded.
            let signer = match sign_with.as_deref().map(SigningKey::load).transpose() {
                Ok(k) => k,
                Err(e) => {
                    let e = anyhow::Error::from(e).context("cannot sign the checkpoint");
                    return record(&log, ev, Err(e));
                }
            };
            if let Some(p) = &cp_out {
                fsutil::check_output(p, Overwrite::Never)?;
            }
            ev.signer = signer.as_ref().map(|k| SignerRef::of(k.info()));
            // The entry, the signed checkpoint file and the printed signature go together: an
            // interrupt waits for them (before, 32 of 300 interrupted runs left a signed entry
            // whose signature was neither printed nor written, and cannot be made again).
            let _finishing = fsutil::finishing();
            let entry = append(&log, &ev)?;
            let entries = entry.seq + 1;
            let signed = signer.as_ref().map(|k| SignedCheckpoint::sign(&entry, k));
            if let (Some(p), Some(cp)) = (&cp_out, &signed) {
                fsutil::write_text_atomic(p, Overwrite::Never, Mode::Default, &cp.to_text())?;
            }
            if json {
                output::print_json(&serde_json::json!({
                    "log": log, "head": entry.hash, "seq": entry.seq, "entries": entries,
                    "time": entry.time, "signed": signed,
                }))
            } else {
                let sig = match &signed {
                    Some(cp) => format!(
                        "  signer   {} {}\n  signature {}\n{}",
                        cp.agency,
                        cp.public_key,
                        cp.signature,
                        cp_out
                            .as_ref()
                            .map(|p| format!("Signed checkpoint written to {}.\n", p.display()))
                            .unwrap_or_default()
                    ),
                    None => String::new(),
                };
                output::print(&format!(
                    "Checkpoint of {}\n  head     {}\n  seq      {}\n  entries  {}\n  time     \
                     {}\n{sig}Record these lines outside the log (e.g. in the IG register). \
                     Later, `bloomlink audit verify {} --checkpoint {}` proves the log up to this \
                     point was not edited, truncated or rewritten since.\n",
                    log.display(),
                    entry.hash,
                    entry.seq,
                    entries,
                    entry.time,
                    log.display(),
                    cp_out
                        .as_ref()
                        .map(|p| format!("{} --trust TRUST.toml", p.display()))
                        .unwrap_or_else(|| entry.hash.clone())
                ))
            }
        }
        AuditCommand::Report { log, since, json } => {
            let chain = audit::verify(&log, None);
            let entries = audit::read_entries(&log)?;
            let since = since.map(|d| d.to_string());
            let rep = audit::report(&entries, since.as_deref(), Date::today_utc());
            let chain_note = match &chain {
                Ok(v) => format!("chain OK, {} entries, head {}", v.entries, v.head),
                Err(e) => format!("CHAIN BROKEN, do not rely on this report: {e}"),
            };
            if json {
                return output::print_json(&serde_json::json!({
                    "log": log,
                    "chain": chain.as_ref().map(|_| "ok").unwrap_or("broken"),
                    "chain_problem": chain.as_ref().err().map(|e| e.to_string()),
                    "report": rep,
                }));
            }
            output::print(&human_report(&log, &chain_note, &rep))
        }
    }
}

fn day(time: &str) -> &str {
    time.get(..10).unwrap_or(time)
}

fn line_of(n: &Notable) -> String {
    format!(
        "    {} seq {:<5} {:<16} {}{}: {}\n",
        day(&n.time),
        n.seq,
        n.action,
        n.agency
            .as_deref()
            .map(|a| format!("{a}, "))
            .unwrap_or_default(),
        n.user,
        n.what
    )
}

/// ", signatures verified" when every input verified; otherwise each agency's status; nothing
/// for a job run without --trust.
fn signatures_note(sigs: &std::collections::BTreeMap<String, String>) -> String {
    if sigs.is_empty() {
        ", signatures not checked".into()
    } else if sigs.values().all(|s| s == "verified") {
        ", signatures verified".into()
    } else {
        let list: Vec<String> = sigs.iter().map(|(a, s)| format!("{a} {s}")).collect();
        format!(", signatures: {}", list.join(", "))
    }
}

fn human_key(k: &KeyReport) -> String {
    let mut t = format!("Key {}", k.fingerprint);
    match &k.info {
        Some(i) => t.push_str(&format!(
            "  {} · purpose {} · epoch {}{} · expires {} ({}{})\n",
            i.partnership,
            i.purpose,
            k.epoch.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
            i.previous
                .as_deref()
                .map(|p| format!(" (replaces {p})"))
                .unwrap_or_default(),
            i.expires,
            k.status,
            i.retired
                .as_deref()
                .map(|r| format!(" on {}", day(r)))
                .unwrap_or_default()
        )),
        None => t.push_str(&format!(
            "  epoch {} · partnership and expiry not in this log (no key new/show entry)\n",
            k.epoch.map(|e| e.to_string()).unwrap_or_else(|| "?".into())
        )),
    }
    if k.agencies.is_empty() {
        t.push_str("  encoded by: nobody (no completed encode)\n");
    } else {
        t.push_str("  encoded by:\n");
        for (ag, u) in &k.agencies {
            t.push_str(&format!(
                "    {ag:<12} {:>3} run{}  {:>10} rows  {} … {}\n",
                u.encodes,
                if u.encodes == 1 { " " } else { "s" },
                thousands(u.rows_encoded),
                u.first.as_deref().map(day).unwrap_or("?"),
                u.last.as_deref().map(day).unwrap_or("?"),
            ));
        }
    }
    let done: Vec<_> = k
        .matches
        .iter()
        .filter(|m| m.outcome == Outcome::Done)
        .collect();
    if !done.is_empty() {
        t.push_str(&format!("  match jobs: {}\n", done.len()));
        for m in done.iter().rev().take(5).rev() {
            t.push_str(&format!(
                "    {} seq {:<5} {} → {} links{}\n",
                day(&m.time),
                m.seq,
                m.agencies.join(" + "),
                m.counts
                    .get("links")
                    .and_then(|v| v.as_u64())
                    .map(thousands)
                    .unwrap_or_else(|| "?".into()),
                signatures_note(&m.signatures)
            ));
        }
        if done.len() > 5 {
            t.push_str(&format!("    … {} earlier (see --json)\n", done.len() - 5));
        }
    }
    for (what, list) in [("refusals", &k.refusals), ("overrides", &k.overrides)] {
        if list.is_empty() {
            t.push_str(&format!("  {what}: none\n"));
        } else {
            t.push_str(&format!("  {what}: {}\n", list.len()));
            for n in list {
                t.push_str(&line_of(n));
            }
        }
    }
    t
}

fn human_report(log: &Path, chain: &str, rep: &audit::Report) -> String {
    let mut t = format!("Audit report for {} ({chain})\n", log.display());
    t.push_str(&format!(
        "  {} of {} entries{}; status as of {}\n\n",
        rep.entries,
        rep.entries_total,
        rep.since
            .as_deref()
            .map(|s| format!(" since {s}"))
            .unwrap_or_default(),
        rep.as_of
    ));
    for k in &rep.keys {
        t.push_str(&human_key(k));
        t.push('\n');
    }
    if !rep.refusals_without_key.is_empty() {
        t.push_str(&format!(
            "Refusals with no key known: {}\n",
            rep.refusals_without_key.len()
        ));
        for n in &rep.refusals_without_key {
            t.push_str(&line_of(n));
        }
    }
    if !rep.signing_keys.is_empty() {
        t.push_str(&format!(
            "Signing key actions: {}\n",
            rep.signing_keys.len()
        ));
        for n in &rep.signing_keys {
            t.push_str(&line_of(n));
        }
    }
    match rep.checkpoints.last() {
        Some(c) => t.push_str(&format!(
            "Checkpoints: {}, last {} by {}\n",
            rep.checkpoints.len(),
            c.time,
            c.user
        )),
        None => t.push_str("Checkpoints: none (run `bloomlink audit checkpoint`)\n"),
    }
    t
}
