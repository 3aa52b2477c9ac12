//! `bloomlink key …`

use std::path::{Path, PathBuf};

use anyhow::Context;
use bloomlink::audit::{Event, FileRef, KeyFacts};
use bloomlink::date::Date;
use bloomlink::key::{KeyInfo, LinkageKey, NewKey};
use clap::Subcommand;

use super::output;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate a new 256-bit linkage key (mode 0600; never overwrites an existing file).
    New {
        /// Where to write the key file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Partnership the key belongs to.
        #[arg(long, value_name = "NAME")]
        partnership: String,
        /// Purpose of the key (recorded in the file and in encodings' audit trail).
        #[arg(long, default_value = "safeguarding-linkage")]
        purpose: String,
        /// Last day of use, YYYY-MM-DD [default: 12 months from today].
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        expires: Option<Date>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a key file's metadata and fingerprint (never the secret), after checking it.
    Show {
        /// The key file.
        file: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the next epoch's key from OLD: a new secret, the same partnership and purpose, epoch
    /// + 1, and OLD's fingerprint recorded as its predecessor (mode 0600, never overwrites).
    Rotate {
        /// The current key file.
        #[arg(value_name = "OLD")]
        old: PathBuf,
        /// Where to write the new key file.
        #[arg(short, long, value_name = "NEW")]
        output: PathBuf,
        /// Last day of use of the new key, YYYY-MM-DD [default: 12 months from today].
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        expires: Option<Date>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a key file retired (rewritten in place, mode 0600): encoding with it is then
    /// refused (exit 4) unless --allow-retired. Run it on every copy, or destroy the copies.
    Retire {
        /// The key file.
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse_iso_explained(s)
}

fn facts(info: &KeyInfo) -> KeyFacts {
    KeyFacts {
        partnership: info.partnership.clone(),
        purpose: info.purpose.clone(),
        created: info.created.clone(),
        expires: info.expires.to_string(),
        previous: info.previous.clone(),
        retired: info.retired.clone(),
    }
}

fn note_key(ev: &mut Event, info: &KeyInfo) {
    ev.key_fingerprint = Some(info.fingerprint.clone());
    ev.key_epoch = Some(info.epoch);
    ev.key_info = Some(facts(info));
}

/// A key file in the log: its path only (no digest of a file holding the secret).
fn key_file(path: &Path) -> FileRef {
    FileRef {
        path: path.display().to_string(),
        ..FileRef::default()
    }
}

pub fn run(cmd: KeyCommand, audit_log: Option<&Path>) -> anyhow::Result<()> {
    // Making a key file and recording it are one finishing step: an interrupt waits for both
    // (a few milliseconds), so it never leaves a key that no entry records.
    let writes = matches!(
        cmd,
        KeyCommand::New { .. } | KeyCommand::Rotate { .. } | KeyCommand::Retire { .. }
    );
    let _finishing = writes.then(bloomlink::fsutil::finishing);
    output::print(&run_recorded(cmd, audit_log)?)
}

/// A key file the command has just made: removed again if its audit entry cannot be written, so
/// that no key is left that the log does not record.
fn made(path: PathBuf) -> bloomlink::fsutil::Committed {
    bloomlink::fsutil::Committed::placed(path, None)
}

/// The command, with its audit entry written; returns the text to print.
fn run_recorded(cmd: KeyCommand, audit_log: Option<&Path>) -> anyhow::Result<String> {
    match cmd {
        KeyCommand::Rotate {
            ref old,
            ref output,
            ..
        } => {
            let log = super::auditcmd::log_path(audit_log, output);
            bloomlink::fsutil::check_output(output, bloomlink::fsutil::Overwrite::Replace)?;
            super::auditcmd::precheck(&log)?;
            let mut ev = Event::new("key.rotate");
            ev.inputs.push(key_file(old));
            ev.outputs.push(key_file(output));
            let (old, new) = (old.clone(), output.clone());
            let result = run_key(cmd, &log, &mut ev);
            if result.is_err() && ev.key_fingerprint.is_none() {
                ev.key_fingerprint_unverified = LinkageKey::claimed_fingerprint(&old);
            }
            super::auditcmd::record_committed(&log, ev, result.map(|t| (t, made(new))))
        }
        KeyCommand::Retire { ref file, .. } => {
            let log = super::auditcmd::log_path(audit_log, file);
            super::auditcmd::precheck(&log)?;
            let mut ev = Event::new("key.retire");
            ev.inputs.push(key_file(file));
            let path = file.clone();
            let result = run_key(cmd, &log, &mut ev);
            if result.is_err() && ev.key_fingerprint.is_none() {
                ev.key_fingerprint_unverified = LinkageKey::claimed_fingerprint(&path);
            }
            super::auditcmd::record(&log, ev, result)
        }
        KeyCommand::New { ref output, .. } => {
            let log = super::auditcmd::log_path(audit_log, output);
            // A missing output directory is reported as such, not as an unwritable audit log.
            bloomlink::fsutil::check_output(output, bloomlink::fsutil::Overwrite::Replace)?;
            super::auditcmd::precheck(&log)?;
            let mut ev = Event::new("key.new");
            ev.outputs.push(key_file(output));
            let new = output.clone();
            let result = run_key(cmd, &log, &mut ev);
            super::auditcmd::record_committed(&log, ev, result.map(|t| (t, made(new))))
        }
        KeyCommand::Show { ref file, .. } => {
            // Showing a key does not change anything: a log that cannot be written is a warning.
            let log = super::auditcmd::log_path(audit_log, file);
            let mut ev = Event::new("key.show");
            ev.inputs.push(key_file(file));
            let path = file.clone();
            let result = run_key(cmd, &log, &mut ev);
            if result.is_err() {
                ev.key_fingerprint_unverified = LinkageKey::claimed_fingerprint(&path);
            }
            match result {
                Ok(text) => {
                    if let Err(e) = bloomlink::audit::append(&log, &ev) {
                        eprintln!(
                            "warning: this key show could not be recorded in the audit log {}: \
                             {e}",
                            log.display()
                        );
                    }
                    Ok(text)
                }
                Err(e) => super::auditcmd::record(&log, ev, Err(e)),
            }
        }
    }
}

/// Refuses to rotate a retired key, or one the audit log shows was rotated already: either
/// would give the partnership two different keys of the same epoch.
fn refuse_second_rotation(key: &LinkageKey, old: &Path, log: &Path) -> anyhow::Result<()> {
    let info = key.info();
    let retired = info
        .retired
        .clone()
        .or_else(|| bloomlink::audit::retirement_in_log(log, &info.fingerprint));
    if let Some(when) = retired {
        return Err(bloomlink::Error::key(
            old,
            format!(
                "key {} was retired on {when}, so it has been replaced already: rotate the \
                 partnership's current key instead",
                info.fingerprint
            ),
        )
        .into());
    }
    if let Some((when, next, epoch)) = bloomlink::audit::rotation_in_log(log, &info.fingerprint) {
        return Err(bloomlink::Error::key(
            old,
            format!(
                "key {} was already rotated on {when} to key {next} (epoch {epoch}; audit log \
                 {}): hand out that key, or rotate it in turn. A second rotation would make two \
                 different keys of epoch {epoch}",
                info.fingerprint,
                log.display()
            ),
        )
        .into());
    }
    Ok(())
}

/// Does the key command, noting in `ev` what its audit entry needs; returns the text to print
/// once the entry is written.
fn run_key(cmd: KeyCommand, log: &Path, ev: &mut Event) -> anyhow::Result<String> {
    match cmd {
        KeyCommand::Rotate {
            old,
            output: path,
            expires,
            json,
        } => {
            let old_key = LinkageKey::load_unchecked_expiry(&old)
                .with_context(|| "cannot rotate the key".to_string())?;
            refuse_second_rotation(&old_key, &old, log)?;
            let key = old_key.rotate(expires)?;
            key.save(&path)?;
            let (info, prev) = (key.info(), old_key.info());
            note_key(ev, info);
            ev.options.insert(
                "previous_fingerprint".into(),
                prev.fingerprint.clone().into(),
            );
            ev.options
                .insert("previous_epoch".into(), prev.epoch.into());
            if json {
                output::json_text(
                    &serde_json::json!({ "file": path, "key": info, "previous": prev }),
                )
            } else {
                Ok(format!(
                    "Wrote linkage key {} (mode 0600), epoch {} of {}\n  fingerprint  {}\n  \
                     replaces     {} (epoch {})\n  expires      {}\nHand it to each agency out \
                     of band; once every agency encodes with it, retire the old key: \
                     bloomlink key retire {}\n",
                    path.display(),
                    info.epoch,
                    info.partnership,
                    info.fingerprint,
                    prev.fingerprint,
                    prev.epoch,
                    info.expires,
                    old.display()
                ))
            }
        }
        KeyCommand::Retire { file, json } => {
            let key =
                LinkageKey::retire(&file).with_context(|| "cannot retire the key".to_string())?;
            let info = key.info();
            note_key(ev, info);
            if json {
                output::json_text(&serde_json::json!({ "file": file, "key": info }))
            } else {
                Ok(format!(
                    "Retired linkage key {} (epoch {}) in {} at {}\nEncoding with this file is \
                     now refused. Other copies of the key are not changed: retire or destroy \
                     them too.\n",
                    info.fingerprint,
                    info.epoch,
                    file.display(),
                    info.retired.as_deref().unwrap_or("")
                ))
            }
        }
        KeyCommand::New {
            output: path,
            partnership,
            purpose,
            expires,
            json,
        } => {
            let key = LinkageKey::generate(&NewKey {
                partnership,
                purpose,
                expires,
                epoch: 1,
            })?;
            key.save(&path)?;
            let info = key.info();
            note_key(ev, info);
            if json {
                output::json_text(&serde_json::json!({ "file": path, "key": info }))
            } else {
                Ok(format!(
                    "Wrote linkage key {} (mode 0600)\n  fingerprint  {}\n  partnership  {}\n  \
                     expires      {}\nHand it to each agency out of band. Never give it to the \
                     linkage unit.\n",
                    path.display(),
                    info.fingerprint,
                    info.partnership,
                    info.expires
                ))
            }
        }
        KeyCommand::Show { file, json } => {
            let key = LinkageKey::load_unchecked_expiry(&file)
                .with_context(|| "cannot show the key".to_string())?;
            let info = key.info();
            note_key(ev, info);
            let today = Date::today_utc();
            let status = if let Some(when) = &info.retired {
                format!("RETIRED on {when}")
            } else if info.is_expired(today) {
                format!("EXPIRED on {}", info.expires)
            } else {
                match info.days_to_expiry(today) {
                    0 => format!(
                        "valid, expires {} (today is its last day of use)",
                        info.expires
                    ),
                    days => format!("valid, expires {} (in {days} days)", info.expires),
                }
            };
            if json {
                output::json_text(&serde_json::json!({
                    "file": file, "key": info, "expired": info.is_expired(today),
                    "retired": info.retired.is_some()
                }))
            } else {
                let previous = info
                    .previous
                    .as_deref()
                    .map(|p| format!("  replaces     {p}\n"))
                    .unwrap_or_default();
                Ok(format!(
                    "{}\n  fingerprint  {}\n  partnership  {}\n  purpose      {}\n  epoch        \
                     {}\n{previous}  created      {}\n  status       {status}\n",
                    file.display(),
                    info.fingerprint,
                    info.partnership,
                    info.purpose,
                    info.epoch,
                    info.created
                ))
            }
        }
    }
}
