//! `bloomlink match`

use std::path::{Path, PathBuf};
use std::time::Instant;

use bloomlink::audit::{Event, FileRef, SignerRef};
use bloomlink::format::EncodingFile;
use bloomlink::linkage::block::Method;
use bloomlink::linkage::job::{self, MatchOptions, Report};
use bloomlink::linkage::{InputPolicy, Inputs};
use bloomlink::signing::{self, InputSignature, Trust, Unsigned};
use bloomlink::similarity::Kernel;
use bloomlink::Error;
use clap::{Args, ValueEnum};

use super::output::{self, thousands};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CandidateMethod {
    /// Exhaustive for small jobs, blocking for large ones.
    Auto,
    /// Compare every cross-agency pair.
    Exhaustive,
    /// Keyed-token blocks only.
    Blocking,
}

#[derive(Args, Debug)]
pub struct MatchArgs {
    /// Encoding files, one per agency (two or more).
    #[arg(value_name = "FILE.clk", num_args = 0..)]
    pub inputs: Vec<PathBuf>,
    /// Output directory (written atomically; must not exist unless --force).
    #[arg(short, long, value_name = "OUTDIR")]
    pub output: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Allow several files of one agency and several records of one input per link.
    #[arg(long)]
    pub dedupe: bool,
    /// Match threshold on the posterior probability [default: chosen from the data].
    #[arg(long, value_parser = parse_prob)]
    pub threshold: Option<f64>,
    /// Lower bound of the clerical-review band [default: a fifth of the threshold, at least 0.05].
    #[arg(long, value_parser = parse_prob)]
    pub review: Option<f64>,
    /// How candidate pairs are found.
    #[arg(long, value_enum, default_value = "auto")]
    pub candidates: CandidateMethod,
    /// Skip keyed-token blocks with more records than this.
    #[arg(long, default_value_t = 500)]
    pub max_block: usize,
    /// Also block by locality-sensitive hashing on filter bits (finds pairs that share no keyed
    /// token; see README "How it links").
    #[arg(long)]
    pub lsh: bool,
    /// Also compare every pair and report how many of the pairs it scores above the threshold
    /// blocking found (blocking recall; slow: for extracts, not nightly runs).
    #[arg(long)]
    pub check_blocking: bool,
    /// Token kinds used as identifier evidence (agree / disagree).
    #[arg(long, value_delimiter = ',', default_value = "nhs,upn")]
    pub evidence_tokens: Vec<String>,
    /// Also list records that link to nothing (with an empty link id).
    #[arg(long)]
    pub include_unlinked: bool,
    /// The links.csv of an earlier job (last night's): each link that continues one of its
    /// links keeps that link's id, so agencies can follow a link from night to night.
    #[arg(long, value_name = "LINKS.csv")]
    pub previous_links: Option<PathBuf>,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress display (shown on a terminal only: the step under way and the time taken).
    #[arg(short, long)]
    pub quiet: bool,
    /// Trust file (agency → public signing key): every input must be signed with its agency's
    /// trusted key, or the job is refused (exit 5).
    #[arg(long, value_name = "TRUST.toml")]
    pub trust: Option<PathBuf>,
    /// With --trust: accept unsigned inputs (recorded in the audit log and report.json).
    #[arg(long, requires = "trust")]
    pub allow_unsigned: bool,
    /// Refused: the linkage unit must never hold the key.
    #[arg(long, hide = true, value_name = "KEY")]
    pub key: Option<PathBuf>,
}

impl MatchArgs {
    /// The defaults, for `demo`.
    pub fn for_demo(inputs: Vec<PathBuf>, output: PathBuf) -> MatchArgs {
        MatchArgs {
            inputs,
            output,
            force: true,
            dedupe: false,
            threshold: None,
            review: None,
            candidates: CandidateMethod::Auto,
            max_block: 500,
            lsh: false,
            check_blocking: false,
            evidence_tokens: vec!["nhs".into(), "upn".into()],
            include_unlinked: false,
            previous_links: None,
            json: false,
            quiet: false,
            trust: None,
            allow_unsigned: false,
            key: None,
        }
    }
}

fn parse_prob(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err("expected a probability between 0 and 1".into()),
    }
}

pub fn run(a: MatchArgs, audit_log: Option<&Path>) -> anyhow::Result<()> {
    // With --json, a failed job's JSON object is printed by `cli::main`, as for every command.
    output::print(&run_recorded(a, audit_log)?)
}

/// The job, with its audit entry written; returns the text to print.
fn run_recorded(a: MatchArgs, audit_log: Option<&Path>) -> anyhow::Result<String> {
    let log = super::auditcmd::log_path(audit_log, &a.output);
    // A missing output directory is reported as such, not as an unwritable audit log.
    bloomlink::fsutil::check_parent(&a.output)?;
    super::warn_abandoned(&[&a.output]);
    super::auditcmd::precheck(&log)?;
    let mut ev = Event::new("match");
    let o = &mut ev.options;
    o.insert("threshold".into(), a.threshold.into());
    o.insert("review".into(), a.review.into());
    o.insert("dedupe".into(), a.dedupe.into());
    o.insert("force".into(), a.force.into());
    o.insert(
        "candidates".into(),
        format!("{:?}", a.candidates).to_lowercase().into(),
    );
    o.insert("max_block".into(), a.max_block.into());
    o.insert("lsh".into(), a.lsh.into());
    o.insert("evidence_tokens".into(), a.evidence_tokens.clone().into());
    o.insert("include_unlinked".into(), a.include_unlinked.into());
    o.insert(
        "previous_links".into(),
        a.previous_links
            .as_ref()
            .map(|p| p.display().to_string())
            .into(),
    );
    o.insert(
        "previous_links_sha256".into(),
        a.previous_links
            .as_ref()
            .and_then(|p| bloomlink::audit::sha256_file(p).ok())
            .into(),
    );
    o.insert("key_given".into(), a.key.is_some().into());
    o.insert(
        "trust".into(),
        a.trust.as_ref().map(|p| p.display().to_string()).into(),
    );
    o.insert(
        "trust_sha256".into(),
        a.trust
            .as_ref()
            .and_then(|p| bloomlink::audit::sha256_file(p).ok())
            .into(),
    );
    o.insert("allow_unsigned".into(), a.allow_unsigned.into());
    ev.inputs = a.inputs.iter().map(|p| FileRef::hashed(p)).collect();
    super::auditcmd::note_running(&log, &ev);
    // From the output's replacement to the audit entry, an interrupt waits (fsutil).
    let _finishing = bloomlink::fsutil::FinishingScope;
    let result = link(&a, &mut ev);
    if result.is_err() {
        // Best effort: which agencies and keys the refused inputs claim.
        for (r, p) in ev.inputs.iter_mut().zip(&a.inputs) {
            if r.key_fingerprint.is_none() {
                if let Ok(f) = EncodingFile::open(p) {
                    note_input(r, &f);
                }
            }
        }
    }
    note_common_key(&mut ev);
    super::auditcmd::record_committed(&log, ev, result)
}

fn note_input(r: &mut FileRef, f: &EncodingFile) {
    r.agency = Some(f.header().agency.clone());
    r.key_fingerprint = Some(f.header().key_fingerprint.clone());
    r.key_epoch = Some(f.header().key_epoch);
}

/// Sets the entry's key and schema when all inputs agree on them.
fn note_common_key(ev: &mut Event) {
    let fps: std::collections::BTreeSet<(&str, u32)> = ev
        .inputs
        .iter()
        .filter_map(|i| Some((i.key_fingerprint.as_deref()?, i.key_epoch?)))
        .collect();
    if fps.len() == 1 {
        if let Some((fp, epoch)) = fps.into_iter().next() {
            ev.key_fingerprint = Some(fp.to_string());
            ev.key_epoch = Some(epoch);
        }
    }
}

/// Runs the match job, noting in `ev` what the audit entry needs; returns the text to print and the
/// output directory, in place but kept only once the audit entry is written.
fn link(a: &MatchArgs, ev: &mut Event) -> anyhow::Result<(String, bloomlink::fsutil::Committed)> {
    if a.key.is_some() {
        return Err(Error::Usage(
            "match takes no key: the linkage unit must never hold the linkage key (whoever has \
             the key and the encodings can test guesses against them). Remove --key."
                .into(),
        )
        .into());
    }
    let t0 = Instant::now();
    // Refused before the work, not after it (write_outputs refuses it too).
    job::check_output_dir(&a.output)?;
    if a.output.exists() && !a.force {
        return Err(Error::OutputExists {
            path: a.output.clone(),
            force: true,
        }
        .into());
    }
    let progress = output::spinner(a.quiet || a.json, "opening the inputs");
    let inputs = Inputs::open(&a.inputs, InputPolicy { dedupe: a.dedupe })?;
    for f in inputs.files() {
        if let Some(r) = ev
            .inputs
            .iter_mut()
            .zip(&a.inputs)
            .find(|(_, p)| p.as_path() == f.path())
            .map(|(r, _)| r)
        {
            note_input(r, f);
        }
        if ev.schema_digest.is_none() {
            ev.schema_digest = Some(f.header().schema_digest.clone());
        }
    }
    let signatures = match &a.trust {
        Some(t) => Some(check_signatures(t, a.allow_unsigned, &inputs, ev)?),
        None => {
            // Without a trust file, a signature is still refused when it does not hold by
            // itself (the file was altered or relabelled after signing).
            for f in inputs.files() {
                if let Err(e) = signing::check_embedded(f) {
                    if let Some(r) = input_entry(ev, f) {
                        r.signature = Some("refused".to_string());
                    }
                    return Err(e.into());
                }
            }
            None
        }
    };
    // Read now: with --force and the same output directory, it is about to be replaced.
    let previous = match &a.previous_links {
        Some(p) => {
            let prev = job::PreviousLinks::read(p)?;
            // An agency of the earlier job that is not in this one holds its ids: carried
            // over, they would join its records to this job's, which it was never part of.
            let here: std::collections::BTreeSet<&str> = inputs
                .files()
                .iter()
                .map(|f| f.header().agency.as_str())
                .collect();
            let absent: Vec<&str> = prev
                .agencies
                .iter()
                .map(String::as_str)
                .filter(|ag| !here.contains(ag))
                .collect();
            if !absent.is_empty() {
                return Err(Error::Usage(format!(
                    "--previous-links {} is the table of a job with {}, which this job does not \
                     link: its link ids would let that agency join its records to this job's \
                     links. Give the table of a job whose agencies all take part in this one, \
                     or leave the option out (new link ids)",
                    p.display(),
                    absent.join(", ")
                ))
                .into());
            }
            Some(std::sync::Arc::new(prev))
        }
        None => None,
    };
    let opened = t0.elapsed().as_secs_f64();

    let opts = MatchOptions {
        dedupe: a.dedupe,
        threshold: a.threshold,
        review: a.review,
        method: match a.candidates {
            CandidateMethod::Auto => Method::Auto,
            CandidateMethod::Exhaustive => Method::Exhaustive,
            CandidateMethod::Blocking => Method::Blocking,
        },
        max_block: a.max_block,
        evidence_tokens: a.evidence_tokens.clone(),
        include_unlinked: a.include_unlinked,
        lsh: a.lsh,
        previous,
    };
    let mut outcome = job::run_reporting(&inputs, &opts, Kernel::detect(), &|stage| {
        progress.set_message(stage)
    })?;
    if a.check_blocking {
        progress.set_message("comparing every pair to check blocking");
        outcome.report.blocking_check =
            Some(job::blocking_recall(&inputs, &opts, Kernel::detect())?);
    }
    outcome.report.seconds.open = opened;
    outcome.report.seconds.total += opened;
    outcome.report.signatures = signatures;
    progress.set_message(format!("writing {}", a.output.display()));
    let committed = job::write_outputs(&a.output, &inputs, &mut outcome)?;
    progress.finish_and_clear();
    let report = &outcome.report;

    ev.outputs = job::output_names(&inputs)
        .iter()
        .map(|n| FileRef::hashed(&a.output.join(n)))
        .collect();
    let c = &mut ev.counts;
    c.insert("inputs".into(), report.inputs.len().into());
    c.insert("records".into(), (inputs.total() as u64).into());
    c.insert("candidate_pairs".into(), report.candidate_pairs.into());
    c.insert("pairs_scored".into(), report.pairs_scored.into());
    c.insert("links".into(), report.links.into());
    c.insert("records_in_review".into(), report.records_in_review.into());
    c.insert(
        "conflicting_pairs_refused".into(),
        report.conflicting_pairs_refused.into(),
    );
    c.insert(
        "threshold_used".into(),
        report.operating_point.threshold.into(),
    );
    c.insert("review_used".into(), report.operating_point.review.into());

    let text = if a.json {
        // `outcome` as in every command's JSON, so that a monitor reads one key for all.
        let mut j = serde_json::to_value(report)?;
        if let Some(o) = j.as_object_mut() {
            o.insert("outcome".into(), "done".into());
        }
        serde_json::to_string_pretty(&j)? + "\n"
    } else {
        summary(report, &a.output)
    };
    Ok((text, committed))
}

/// The audit entry's record of input `f`.
fn input_entry<'e>(ev: &'e mut Event, f: &EncodingFile) -> Option<&'e mut FileRef> {
    let path = f.path().display().to_string();
    ev.inputs.iter_mut().find(|r| r.path == path)
}

/// Verifies every input's signature against the trust file (the library decides); notes each
/// input's outcome and signer in the audit entry.
fn check_signatures(
    trust: &Path,
    allow_unsigned: bool,
    inputs: &Inputs,
    ev: &mut Event,
) -> anyhow::Result<Vec<InputSignature>> {
    let trust = Trust::load(trust)?;
    let unsigned = if allow_unsigned {
        Unsigned::Allow
    } else {
        Unsigned::Refuse
    };
    let mut out = Vec::new();
    for f in inputs.files() {
        let result = signing::check_file(f, &trust, unsigned);
        if let Some(r) = input_entry(ev, f) {
            r.signer = signing::embedded(f).map(|s| SignerRef {
                agency: s.agency,
                fingerprint: s.fingerprint,
            });
            r.signature = Some(match &result {
                Ok(s) => s.status.label().to_string(),
                Err(_) => "refused".to_string(),
            });
        }
        out.push(result?);
    }
    Ok(out)
}

fn summary(r: &Report, out: &Path) -> String {
    let mut t = format!("Linked {} inputs → {}\n", r.inputs.len(), out.display());
    for i in &r.inputs {
        t.push_str(&format!(
            "  {:<12} {:>10} records  {}\n",
            i.agency,
            thousands(i.records as u64),
            i.file.display()
        ));
    }
    for w in &r.warnings {
        t.push_str(&format!("  warning: {w}\n"));
    }
    let c = &r.candidates;
    t.push_str(&format!(
        "  candidates   {} pairs ({}), {} scored above the floor, {} patterns, kernel {}\n",
        thousands(r.candidate_pairs),
        if c.exhaustive {
            "exhaustive"
        } else {
            "keyed-token blocking"
        },
        thousands(r.pairs_scored),
        r.distinct_patterns,
        r.kernel
    ));
    let op = &r.operating_point;
    t.push_str(&format!(
        "  threshold    {:.3} ({}), review band [{:.3}, {:.3})\n",
        op.threshold, r.threshold_source, op.review, op.threshold
    ));
    let e = &r.estimated;
    t.push_str(&format!(
        "  estimated    precision {:.4}, recall {:.4}, F1 {:.4} of the links (from the fitted model, no truth used)\n",
        e.precision, e.recall, e.f1
    ));
    t.push_str(&format!(
        "  links        {} ({} records in the review band, {} conflicting pairs refused)\n",
        thousands(r.links),
        thousands(r.records_in_review),
        thousands(r.conflicting_pairs_refused)
    ));
    for (pair, n) in &r.links_per_agency_pair {
        t.push_str(&format!("    {pair:<24} {:>10} links\n", thousands(*n)));
    }
    if let Some(c) = &r.link_ids {
        t.push_str(&format!(
            "  link ids     {} kept from {} ({} links), {} new, {} retired\n",
            thousands(c.kept),
            c.previous_file.display(),
            thousands(c.previous_links),
            thousands(c.new),
            thousands(c.retired)
        ));
    }
    if let Some(sigs) = &r.signatures {
        let list: Vec<String> = sigs
            .iter()
            .map(|s| format!("{} {}", s.agency, s.status.label()))
            .collect();
        t.push_str(&format!("  signatures   {}\n", list.join(", ")));
    }
    t.push_str(&format!(
        "  scores       posterior {}  (0 → 1, log scale; the threshold's bin is marked |)\n",
        sparkline(&r.posterior_histogram, Some(r.operating_point.threshold))
    ));
    t.push_str(&format!(
        "               Dice      {}  (whole filter, 0 → 1)\n",
        sparkline(&r.dice_histogram, None)
    ));
    if let Some(b) = &r.blocking_check {
        t.push_str(&format!(
            "  blocking     recall {:.4} vs exhaustive: blocking links {} of the {} record pairs \
             exhaustive comparison of {} pairs links (threshold {:.3})\n",
            b.recall,
            thousands(b.found_by_blocking),
            thousands(b.exhaustive_link_pairs),
            thousands(b.exhaustive_comparisons),
            b.threshold
        ));
    }
    let s = &r.seconds;
    t.push_str(&format!(
        "  time         {:.2} s (open {:.2}, candidates {:.2}, compare {:.2}, fit {:.2}, cluster {:.2}, write {:.2})\n",
        s.total, s.open, s.candidates, s.compare, s.fit, s.cluster, s.write
    ));
    t.push_str(&format!(
        "  outputs      links.csv, links-<agency>.csv (record_id → link_id only), report.json in {}\n",
        out.display()
    ));
    t
}

/// A histogram in one line of block characters, heights on a log scale (scored pairs span many
/// orders of magnitude); `mark` puts a `|` before the bin holding that value.
fn sparkline(bins: &[u64], mark: Option<f64>) -> String {
    const LEVELS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let top = bins.iter().copied().max().unwrap_or(0);
    let scale = ((top + 1) as f64).ln().max(f64::MIN_POSITIVE);
    let marked = mark.map(|m| ((m * bins.len() as f64) as usize).min(bins.len().saturating_sub(1)));
    let mut s = String::new();
    for (i, &n) in bins.iter().enumerate() {
        if marked == Some(i) {
            s.push('|');
        }
        let level = if n == 0 {
            0
        } else {
            1 + ((((n + 1) as f64).ln() / scale) * 7.0).round() as usize
        };
        s.push(LEVELS[level.min(8)]);
    }
    s
}
