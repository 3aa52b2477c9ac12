//! `bloomlink risk`

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::encode::ExportArgs;
use bloomlink::audit::{Event, FileRef};
use bloomlink::colmap::ColumnMap;
use bloomlink::date::Date;
use bloomlink::fsutil::{self, Mode, Overwrite};
use bloomlink::key::{Expiry, LinkageKey, Retired};
use bloomlink::risk::{self, RiskOptions, RiskReport, Verdict};
use clap::Args;

use super::output::{self, thousands};

#[derive(Args, Debug)]
pub struct RiskArgs {
    #[command(flatten)]
    pub export: ExportArgs,
    /// Also write the report to this file (atomically; JSON with --json). It holds counts and
    /// shares only, unless --show-values.
    #[arg(short, long, value_name = "REPORT")]
    pub output: Option<PathBuf>,
    /// Replace an existing report file.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Include up to N re-identified records WITH THEIR PERSONAL VALUES in the report (to show
    /// an IG lead what an attacker learns). The report file is then written mode 0600.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "10")]
    pub show_values: Option<usize>,
    /// Frequency attack: neighbouring counts must differ by at least Z·√count (and 1) for a
    /// pairing to count as confident. 0 = the attacker knows the value distribution exactly.
    #[arg(long, value_name = "Z", default_value_t = 0.0)]
    pub frequency_margin: f64,
    /// Accept an expired key.
    #[arg(long)]
    pub allow_expired: bool,
    /// Accept a retired key (to assess encodings made before it was retired; recorded in the
    /// audit log).
    #[arg(long)]
    pub allow_retired: bool,
    /// Encoder threads, 1 to 1024 (0: all cores) [default: all cores].
    #[arg(long, default_value_t = 0, hide_default_value = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub threads: usize,
}

pub fn run(a: RiskArgs, audit_log: Option<&Path>) -> anyhow::Result<()> {
    let anchor = a.output.clone().unwrap_or_else(|| a.export.input.clone());
    let log = super::auditcmd::log_path(audit_log, &anchor);
    if let Some(o) = &a.output {
        super::encode::refuse_outputs_over_inputs(
            &[("the report (-o)", o)],
            &a.export.read_files(),
        )?;
        fsutil::check_output(o, overwrite(&a))?;
    }
    super::auditcmd::precheck(&log)?;
    let mut ev = Event::new("risk");
    a.export.note(&mut ev);
    let o = &mut ev.options;
    o.insert("allow_expired".into(), a.allow_expired.into());
    o.insert("allow_retired".into(), a.allow_retired.into());
    o.insert("show_values".into(), a.show_values.is_some().into());
    super::auditcmd::note_running(&log, &ev);
    let result = assess(&a, &log, &mut ev);
    if result.is_err() && ev.key_fingerprint.is_none() {
        ev.key_fingerprint_unverified = LinkageKey::claimed_fingerprint(&a.export.key);
    }
    let text = super::auditcmd::record_committed(&log, ev, result)?;
    output::print(&text)
}

fn overwrite(a: &RiskArgs) -> Overwrite {
    if a.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    }
}

/// Runs the attacks, noting in `ev` what the audit entry needs; returns the text to print and
/// the report file (`-o`), in place but kept only once the audit entry is written.
fn assess(a: &RiskArgs, log: &Path, ev: &mut Event) -> anyhow::Result<(String, fsutil::Committed)> {
    let start = Instant::now();
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
    ev.key_fingerprint = Some(key.info().fingerprint.clone());
    ev.key_epoch = Some(key.info().epoch);
    // As encode warns: the data team checks the risk with the key it will encode with.
    if let Some(w) = key.info().expiry_warning(Date::today_utc()) {
        eprintln!("warning: {w}");
    }
    let schema = a.export.load_schema()?;
    ev.schema_digest = Some(schema.digest.clone());
    let map = ColumnMap::load(&a.export.columns)?;
    ev.agency = Some(map.agency.clone());
    super::auditcmd::note_running(log, ev);
    map.check_against(&schema)?;
    let show = a.show_values.unwrap_or(0);
    if show > 0 {
        eprintln!(
            "WARNING: --show-values: this report will contain PERSONAL DATA (recovered names, \
             dates, postcodes). Do not send, print or store it outside the agency."
        );
    }
    let opts = RiskOptions {
        today: Date::today_utc(),
        threads: a.threads,
        show_values: show,
        frequency_z: a.frequency_margin.max(0.0),
        ..RiskOptions::default()
    };
    let report = risk::assess(&a.export.input, &key, &schema, &map, &opts)?;
    ev.inputs[0].sha256 = Some(report.input_sha256.clone());
    ev.counts.insert("records".into(), report.records.into());
    if let Some(all) = report.attacks.last() {
        ev.counts.insert(
            "records_reidentified".into(),
            all.records_reidentified.into(),
        );
    }
    let text = if a.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        human(&report, start.elapsed().as_secs_f64())
    };
    if let Some(o) = &a.output {
        let mode = if show > 0 {
            Mode::Private
        } else {
            Mode::Default
        };
        let report = fsutil::prepare_text(o, overwrite(a), mode, &text)?;
        let committed = fsutil::commit_all(vec![report])?;
        ev.outputs.push(FileRef::hashed(o));
        return Ok((text, committed));
    }
    Ok((text, fsutil::Committed::default()))
}

fn human(r: &RiskReport, secs: f64) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "Re-identification risk check: {} ({}), {} records encoded in memory\n",
        r.input.display(),
        r.agency,
        thousands(r.records)
    ));
    t.push_str(&format!(
        "  key {}   schema {} {}\n",
        r.key_fingerprint,
        r.schema,
        &r.schema_digest[..16.min(r.schema_digest.len())]
    ));
    t.push_str(&format!("  Attacker: {}\n\n", r.threat_model));
    let verdict = match r.verdict {
        Verdict::Low => "LOW",
        Verdict::Medium => "MEDIUM",
        Verdict::High => "HIGH",
    };
    t.push_str(&format!(
        "  VERDICT: {verdict} RISK. {}\n\n",
        r.verdict_reason
    ));
    t.push_str("  records re-identified\n");
    for a in &r.attacks {
        t.push_str(&format!(
            "    {:<15} {:>9} ({:.3} %)   records with any claim {}\n",
            a.attack,
            thousands(a.records_reidentified),
            a.share_reidentified * 100.0,
            thousands(a.records_claimed)
        ));
    }
    t.push_str("\n  field values re-identified: share of records with the field (precision)\n");
    t.push_str(&format!("    {:<15}", "field"));
    for a in &r.attacks {
        t.push_str(&format!(" {:>22}", a.attack));
    }
    t.push('\n');
    if let Some(first) = r.attacks.first() {
        for (i, f) in first.fields.iter().enumerate() {
            t.push_str(&format!("    {:<15}", f.field));
            for a in &r.attacks {
                if let Some(x) = a.fields.get(i) {
                    t.push_str(&format!(
                        " {:>13.2} % ({:.2})",
                        x.share_of_records * 100.0,
                        x.precision
                    ));
                }
            }
            t.push('\n');
        }
    }
    t.push_str("\n  targets: records guessed / correct\n");
    if let Some(first) = r.attacks.first() {
        for (i, g) in first.targets.iter().enumerate() {
            t.push_str(&format!("    {:<22}", g.target));
            for a in &r.attacks {
                if let Some(x) = a.targets.get(i) {
                    t.push_str(&format!(
                        " {:>9} / {:<9}",
                        thousands(x.guessed),
                        thousands(x.correct)
                    ));
                }
            }
            t.push('\n');
        }
    }
    for a in &r.attacks {
        for n in &a.notes {
            t.push_str(&format!("  {}: {n}\n", a.attack));
        }
    }
    t.push_str("\n  What to change:\n");
    for a in &r.advice {
        t.push_str(&format!("  - {a}\n"));
    }
    t.push_str(&format!("\n  Definition: {}\n", r.definition));
    if let Some(ex) = &r.examples {
        t.push_str(
            "\n  !!! PERSONAL DATA BELOW (--show-values): re-identified records and the values \
             the attacker recovered !!!\n",
        );
        for e in ex {
            let vals: Vec<String> = e.values.iter().map(|(f, v)| format!("{f}={v}")).collect();
            t.push_str(&format!("    {}: {}\n", e.record_id, vals.join(", ")));
        }
    }
    let s = &r.seconds;
    t.push_str(&format!(
        "\n  {secs:.1} s (encode {:.1}, plaintext {:.1}, frequency {:.1}, pattern mining {:.1}, \
         scoring {:.1})\n",
        s.encode, s.plaintext, s.frequency, s.pattern_mining, s.scoring
    ));
    t
}
