//! `bloomlink signing-key …`

use std::path::{Path, PathBuf};

use anyhow::Context;
use bloomlink::audit::{Event, FileRef, SignerRef};
use bloomlink::fsutil::{self, Mode, Overwrite};
use bloomlink::signing::SigningKey;
use clap::Subcommand;

use super::output;

#[derive(Subcommand, Debug)]
pub enum SigningKeyCommand {
    /// Generate an agency's Ed25519 signing key (mode 0600; never overwrites an existing file).
    /// The agency keeps it and signs its encodings with `encode --sign-with`.
    New {
        /// The agency label (as in its column map).
        #[arg(long, value_name = "AGENCY")]
        agency: String,
        /// Where to write the signing key file.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the public key of a signing key (or write it with -o): the line the linkage unit
    /// adds under [agencies] in its trust.toml.
    Public {
        /// The signing key file.
        file: PathBuf,
        /// Write the public key file here instead of printing it (never overwrites).
        #[arg(short, long, value_name = "PUB")]
        output: Option<PathBuf>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A secret file in the log: its path only.
fn path_only(path: &Path) -> FileRef {
    FileRef {
        path: path.display().to_string(),
        ..FileRef::default()
    }
}

pub fn run(cmd: SigningKeyCommand, audit_log: Option<&Path>) -> anyhow::Result<()> {
    // Writing a key file and recording it are one finishing step (see `key new`).
    let writes = match &cmd {
        SigningKeyCommand::New { .. } => true,
        SigningKeyCommand::Public { output, .. } => output.is_some(),
    };
    let _finishing = writes.then(fsutil::finishing);
    output::print(&run_recorded(cmd, audit_log)?)
}

/// The command, with its audit entry written; returns the text to print.
fn run_recorded(cmd: SigningKeyCommand, audit_log: Option<&Path>) -> anyhow::Result<String> {
    match &cmd {
        SigningKeyCommand::New { output, agency, .. } => {
            let log = super::auditcmd::log_path(audit_log, output);
            fsutil::check_output(output, Overwrite::Replace)?;
            super::auditcmd::precheck(&log)?;
            let mut ev = Event::new("signing-key.new");
            ev.agency = Some(agency.clone());
            ev.outputs.push(path_only(output));
            let new = output.clone();
            let result = run_inner(cmd, &mut ev);
            let made = |t| (t, fsutil::Committed::placed(new, None));
            super::auditcmd::record_committed(&log, ev, result.map(made))
        }
        SigningKeyCommand::Public { file, output, .. } => {
            // Like `key show`: reading a key changes nothing, so an unwritable log only warns,
            // unless a public key file is written.
            let log = super::auditcmd::log_path(audit_log, output.as_deref().unwrap_or(file));
            if output.is_some() {
                super::auditcmd::precheck(&log)?;
            }
            let mut ev = Event::new("signing-key.public");
            ev.inputs.push(path_only(file));
            let written = output.clone();
            let result = run_inner(cmd, &mut ev);
            match (result, written) {
                (Ok(text), None) => {
                    if let Err(e) = bloomlink::audit::append(&log, &ev) {
                        eprintln!(
                            "warning: this action could not be recorded in the audit log {}: {e}",
                            log.display()
                        );
                    }
                    Ok(text)
                }
                (other, None) => super::auditcmd::record(&log, ev, other),
                (other, Some(out)) => {
                    let made = |t| (t, fsutil::Committed::placed(out, None));
                    super::auditcmd::record_committed(&log, ev, other.map(made))
                }
            }
        }
    }
}

/// Does the command, noting in `ev` what its audit entry needs; returns the text to print once
/// the entry is written.
fn run_inner(cmd: SigningKeyCommand, ev: &mut Event) -> anyhow::Result<String> {
    match cmd {
        SigningKeyCommand::New {
            agency,
            output: path,
            json,
        } => {
            let key = SigningKey::generate(&agency)?;
            key.save(&path)?;
            let info = key.info();
            ev.signer = Some(SignerRef::of(info));
            if json {
                output::json_text(&serde_json::json!({ "file": path, "signing_key": info }))
            } else {
                Ok(format!(
                    "Wrote signing key {} (mode 0600) for agency {}\n  public key   {}\n  \
                     fingerprint  {}\nKeep it at the agency. Give the linkage unit the public \
                     key: bloomlink signing-key public {}\n",
                    path.display(),
                    info.agency,
                    info.public_key,
                    info.fingerprint,
                    path.display()
                ))
            }
        }
        SigningKeyCommand::Public { file, output, json } => {
            let key = SigningKey::load(&file)
                .with_context(|| "cannot read the signing key".to_string())?;
            let info = key.info();
            ev.signer = Some(SignerRef::of(info));
            ev.agency = Some(info.agency.clone());
            let text = key.public_file_text();
            if let Some(out) = &output {
                fsutil::write_text_atomic(out, Overwrite::Never, Mode::Default, &text)?;
                ev.outputs.push(FileRef::hashed(out));
            }
            if json {
                output::json_text(&serde_json::json!({
                    "agency": info.agency,
                    "public_key": info.public_key,
                    "fingerprint": info.fingerprint,
                    "created": info.created,
                    "trust_line": format!("{} = \"{}\"", info.agency, info.public_key),
                }))
            } else if let Some(out) = &output {
                Ok(format!(
                    "Wrote the public key of agency {} ({}) to {}\n",
                    info.agency,
                    info.fingerprint,
                    out.display()
                ))
            } else {
                Ok(text)
            }
        }
    }
}
