//! `bloomlink key …`

use std::path::PathBuf;

use anyhow::Context;
use bloomlink::date::Date;
use bloomlink::key::{LinkageKey, NewKey};
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
}

fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse_iso(s).ok_or_else(|| "expected a date as YYYY-MM-DD".to_string())
}

pub fn run(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
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
            if json {
                output::print_json(&serde_json::json!({ "file": path, "key": info }))
            } else {
                output::print(&format!(
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
            let today = Date::today_utc();
            let status = if info.is_expired(today) {
                format!("EXPIRED on {}", info.expires)
            } else {
                let days = info.expires.to_days() - today.to_days();
                format!("valid, expires {} (in {days} days)", info.expires)
            };
            if json {
                output::print_json(&serde_json::json!({
                    "file": file, "key": info, "expired": info.is_expired(today)
                }))
            } else {
                output::print(&format!(
                    "{}\n  fingerprint  {}\n  partnership  {}\n  purpose      {}\n  epoch        \
                     {}\n  created      {}\n  status       {status}\n",
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
