//! `bloomlink match`

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bloomlink::audit::{Event, FileRef, SignerRef};
use bloomlink::format::EncodingFile;
use bloomlink::linkage::block::{self, BlockOptions, Method};
use bloomlink::linkage::cluster::{self, Edge, Status};
use bloomlink::linkage::score::{self, Features};
use bloomlink::linkage::{InputPolicy, Inputs};
use bloomlink::signing::{self, InputSignature, Trust, Unsigned};
use bloomlink::similarity::Kernel;
use bloomlink::Error;
use clap::{Args, ValueEnum};
use serde::Serialize;

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
    /// Token kinds used as identifier evidence (agree / disagree).
    #[arg(long, value_delimiter = ',', default_value = "nhs,upn")]
    pub evidence_tokens: Vec<String>,
    /// Also list records that link to nothing (with an empty link id).
    #[arg(long)]
    pub include_unlinked: bool,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
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
            evidence_tokens: vec!["nhs".into(), "upn".into()],
            include_unlinked: false,
            json: false,
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

#[derive(Serialize)]
struct InputInfo {
    file: PathBuf,
    agency: String,
    records: usize,
    key_fingerprint: String,
    key_epoch: u32,
    schema_digest: String,
    checksum_sha256: String,
}

#[derive(Serialize, Default)]
struct Seconds {
    open: f64,
    candidates: f64,
    compare: f64,
    fit: f64,
    cluster: f64,
    write: f64,
    total: f64,
}

#[derive(Serialize)]
struct Report {
    bloomlink_version: &'static str,
    inputs: Vec<InputInfo>,
    kernel: &'static str,
    candidates: block::Candidates,
    pairs_scored: u64,
    distinct_patterns: usize,
    anchor_pairs: u64,
    m_source: &'static str,
    model: score::Model,
    features: Features,
    operating_point: score::Operating,
    threshold_source: &'static str,
    links: u64,
    records_linked: BTreeMap<String, u64>,
    records_in_review: u64,
    links_per_agency_pair: BTreeMap<String, u64>,
    conflicting_pairs_refused: u64,
    review_merges_skipped: u64,
    posterior_histogram: Vec<u64>,
    dice_histogram: Vec<u64>,
    seconds: Seconds,
    /// Per input, its signature as checked against --trust (absent without --trust).
    #[serde(skip_serializing_if = "Option::is_none")]
    signatures: Option<Vec<InputSignature>>,
}

pub fn run(a: MatchArgs, audit_log: Option<&Path>) -> anyhow::Result<()> {
    let log = super::auditcmd::log_path(audit_log, &a.output);
    // A missing output directory is reported as such, not as an unwritable audit log.
    bloomlink::fsutil::check_output(&a.output, bloomlink::fsutil::Overwrite::Replace)?;
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
    o.insert("evidence_tokens".into(), a.evidence_tokens.clone().into());
    o.insert("include_unlinked".into(), a.include_unlinked.into());
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
    let text = super::auditcmd::record(&log, ev, result)?;
    output::print(&text)
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

/// Runs the match job, noting in `ev` what the audit entry needs; returns the text to print.
fn link(a: &MatchArgs, ev: &mut Event) -> anyhow::Result<String> {
    if a.key.is_some() {
        return Err(Error::Usage(
            "match takes no key: the linkage unit must never hold the linkage key (whoever has \
             the key and the encodings can test guesses against them). Remove --key."
                .into(),
        )
        .into());
    }
    let t0 = Instant::now();
    let mut secs = Seconds::default();
    if a.output.exists() && !a.force {
        return Err(Error::OutputExists {
            path: a.output.clone(),
        }
        .into());
    }
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
        None => None,
    };
    secs.open = t0.elapsed().as_secs_f64();
    let kernel = Kernel::detect();

    let t = Instant::now();
    let opts = BlockOptions {
        method: match a.candidates {
            CandidateMethod::Auto => Method::Auto,
            CandidateMethod::Exhaustive => Method::Exhaustive,
            CandidateMethod::Blocking => Method::Blocking,
        },
        max_block: a.max_block,
        within_files: a.dedupe,
        ..Default::default()
    };
    let cands = block::candidates(&inputs, &opts, kernel);
    secs.candidates = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let features = Features::for_inputs(&inputs, &a.evidence_tokens);
    let (scored, patterns) =
        score::compare(&inputs, &cands.pairs, &features, kernel, opts.dice_floor);
    secs.compare = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut counts = vec![0u64; patterns.len()];
    for s in &scored {
        counts[s.pattern as usize] += 1;
    }
    let sizes: Vec<f64> = inputs.files().iter().map(|f| f.len() as f64).collect();
    let mut max_matches = 0.0;
    for i in 0..sizes.len() {
        for j in i + 1..sizes.len() {
            max_matches += sizes[i].min(sizes[j]);
        }
        if a.dedupe {
            max_matches += sizes[i] / 2.0;
        }
    }
    let expected = 0.8 * max_matches;
    // u from random pairs (nearly all non-matches), m and λ by EM.
    let random = score::random_pairs(&inputs, 200_000, a.dedupe);
    let (rscored, rpatterns) =
        score::compare(&inputs, &random, &features, kernel, f32::NEG_INFINITY);
    let mut rcounts = vec![0u64; rpatterns.len()];
    for s in &rscored {
        rcounts[s.pattern as usize] += 1;
    }
    let u = score::u_from_random_pairs(&features, &rpatterns, &rcounts);
    let (fixed_m, anchors) = score::m_from_anchors(&features, &patterns, &counts);
    let model = score::fit(
        &features,
        &patterns,
        &counts,
        expected,
        max_matches,
        Some(&u),
        &fixed_m,
    );
    let post: Vec<f64> = patterns.iter().map(|p| model.posterior(p)).collect();
    let mut sorted: Vec<f64> = scored.iter().map(|s| post[s.pattern as usize]).collect();
    sorted.sort_by(|x, y| y.total_cmp(x));
    let op = score::operating_point(&sorted, a.threshold, a.review);
    secs.fit = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let edges: Vec<Edge> = scored
        .iter()
        .map(|s| Edge {
            a: s.a,
            b: s.b,
            p: post[s.pattern as usize],
            dice: s.dice,
        })
        .collect();
    let clusters = cluster::cluster(
        inputs.total(),
        edges,
        op.threshold,
        op.review,
        |g| inputs.file_of(g),
        a.dedupe,
    );
    secs.cluster = t.elapsed().as_secs_f64();

    // Build the link table.
    let t = Instant::now();
    let salt = job_salt(&inputs);
    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for g in 0..inputs.total() as u32 {
        if clusters.linked[g as usize].is_some() {
            members
                .entry(clusters.root[g as usize])
                .or_default()
                .push(g);
        }
    }
    let key_of = |g: u32| {
        let r = inputs.record(g);
        let f = &inputs.files()[r.file as usize];
        (
            f.header().agency.clone(),
            f.row_ref(r.row as usize).to_string(),
        )
    };
    struct Row {
        link_id: String,
        agency: String,
        record_id: String,
        score: Option<f64>,
        status: Option<Status>,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut per_pair: BTreeMap<String, u64> = BTreeMap::new();
    let mut linked_per_agency: BTreeMap<String, u64> = BTreeMap::new();
    let mut in_review = 0u64;
    let mut n_links = 0u64;
    for group in members.values() {
        if group.len() < 2 {
            continue;
        }
        n_links += 1;
        let mut keys: Vec<(String, String, u32)> = group
            .iter()
            .map(|&g| {
                let (ag, id) = key_of(g);
                (ag, id, g)
            })
            .collect();
        keys.sort();
        let link_id = link_id(&salt, &keys);
        let agencies: std::collections::BTreeSet<&str> =
            keys.iter().map(|k| k.0.as_str()).collect();
        let ags: Vec<&str> = agencies.into_iter().collect();
        for i in 0..ags.len() {
            for j in i + 1..ags.len() {
                *per_pair
                    .entry(format!("{}–{}", ags[i], ags[j]))
                    .or_default() += 1;
            }
        }
        for (ag, id, g) in keys {
            let (score, status) = clusters.linked[g as usize].unwrap_or((0.0, Status::Match));
            if status == Status::Review {
                in_review += 1;
            }
            *linked_per_agency.entry(ag.clone()).or_default() += 1;
            rows.push(Row {
                link_id: link_id.clone(),
                agency: ag,
                record_id: id,
                score: Some(score),
                status: Some(status),
            });
        }
    }
    if a.include_unlinked {
        for g in 0..inputs.total() as u32 {
            let linked = clusters.linked[g as usize].is_some()
                && members
                    .get(&clusters.root[g as usize])
                    .is_some_and(|m| m.len() > 1);
            if !linked {
                let (ag, id) = key_of(g);
                rows.push(Row {
                    link_id: String::new(),
                    agency: ag,
                    record_id: id,
                    score: None,
                    status: None,
                });
            }
        }
    }
    rows.sort_by(|x, y| {
        (x.link_id.is_empty(), &x.link_id, &x.agency, &x.record_id).cmp(&(
            y.link_id.is_empty(),
            &y.link_id,
            &y.agency,
            &y.record_id,
        ))
    });

    let mut post_hist = vec![0u64; 20];
    let mut dice_hist = vec![0u64; 20];
    for s in &scored {
        let p = post[s.pattern as usize];
        post_hist[((p * 20.0) as usize).min(19)] += 1;
        dice_hist[((s.dice * 20.0) as usize).min(19)] += 1;
    }
    let report = Report {
        bloomlink_version: env!("CARGO_PKG_VERSION"),
        inputs: inputs
            .files()
            .iter()
            .map(|f| InputInfo {
                file: f.path().to_path_buf(),
                agency: f.header().agency.clone(),
                records: f.len(),
                key_fingerprint: f.header().key_fingerprint.clone(),
                key_epoch: f.header().key_epoch,
                schema_digest: f.header().schema_digest.clone(),
                checksum_sha256: f.checksum_hex(),
            })
            .collect(),
        kernel: kernel.name(),
        pairs_scored: scored.len() as u64,
        distinct_patterns: patterns.len(),
        anchor_pairs: anchors,
        m_source: if anchors >= score::MIN_ANCHORS {
            "segments: anchor pairs agreeing on an identifier token; identifiers: EM"
        } else {
            "EM (too few anchor pairs)"
        },
        candidates: cands,
        model,
        features,
        operating_point: op,
        threshold_source: if a.threshold.is_some() {
            "--threshold"
        } else {
            "estimated (maximum expected F1 under the fitted model)"
        },
        links: n_links,
        records_linked: linked_per_agency,
        records_in_review: in_review,
        links_per_agency_pair: per_pair,
        conflicting_pairs_refused: clusters.conflicts,
        review_merges_skipped: clusters.review_merges_skipped,
        posterior_histogram: post_hist,
        dice_histogram: dice_hist,
        seconds: secs,
        signatures,
    };

    // Write everything into a fresh directory next to OUTDIR, then rename it into place.
    let parent = match a.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = a
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "links".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| -> anyhow::Result<Report> {
        let mut report = report;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| Error::io(&p, e)
        };
        let lp = tmp.join("links.csv");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&lp).map_err(io(&lp))?);
        writeln!(w, "link_id,agency,record_id,score,status").map_err(io(&lp))?;
        let mut per_agency: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for r in &rows {
            writeln!(
                w,
                "{},{},{},{},{}",
                r.link_id,
                r.agency,
                output::csv_field(&r.record_id),
                r.score.map(|s| format!("{s:.4}")).unwrap_or_default(),
                match r.status {
                    Some(Status::Match) => "match",
                    Some(Status::Review) => "review",
                    None => "",
                }
            )
            .map_err(io(&lp))?;
            if !r.link_id.is_empty() {
                per_agency
                    .entry(&r.agency)
                    .or_default()
                    .push((&r.record_id, &r.link_id));
            }
        }
        w.flush().map_err(io(&lp))?;
        w.get_ref().sync_all().map_err(io(&lp))?;
        for f in inputs.files() {
            let ag = f.header().agency.as_str();
            let p = tmp.join(format!("links-{ag}.csv"));
            let mut w = std::io::BufWriter::new(std::fs::File::create(&p).map_err(io(&p))?);
            writeln!(w, "record_id,link_id").map_err(io(&p))?;
            let mut list = per_agency.get(ag).cloned().unwrap_or_default();
            list.sort();
            list.dedup();
            for (id, link) in list {
                writeln!(w, "{},{link}", output::csv_field(id)).map_err(io(&p))?;
            }
            w.flush().map_err(io(&p))?;
            w.get_ref().sync_all().map_err(io(&p))?;
        }
        report.seconds.write = t.elapsed().as_secs_f64();
        report.seconds.total = t0.elapsed().as_secs_f64();
        let rp = tmp.join("report.json");
        std::fs::write(&rp, serde_json::to_string_pretty(&report)? + "\n").map_err(io(&rp))?;
        Ok(report)
    })();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if a.output.exists() {
        std::fs::remove_dir_all(&a.output).map_err(|e| Error::io(&a.output, e))?;
    }
    std::fs::rename(&tmp, &a.output).map_err(|e| Error::io(&a.output, e))?;

    let mut names = vec!["links.csv".to_string()];
    let agencies: std::collections::BTreeSet<&str> = inputs
        .files()
        .iter()
        .map(|f| f.header().agency.as_str())
        .collect();
    names.extend(agencies.iter().map(|ag| format!("links-{ag}.csv")));
    names.push("report.json".into());
    ev.outputs = names
        .iter()
        .map(|n| FileRef::hashed(&a.output.join(n)))
        .collect();
    let c = &mut ev.counts;
    c.insert("inputs".into(), report.inputs.len().into());
    c.insert("records".into(), (inputs.total() as u64).into());
    c.insert(
        "candidate_pairs".into(),
        (report.candidates.pairs.len() as u64).into(),
    );
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

    if a.json {
        return Ok(serde_json::to_string_pretty(&report)? + "\n");
    }
    Ok(summary(&report, &a.output))
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
        let path = f.path().display().to_string();
        if let Some(r) = ev.inputs.iter_mut().find(|r| r.path == path) {
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

fn job_salt(inputs: &Inputs) -> Vec<u8> {
    let mut sums: Vec<String> = inputs.files().iter().map(|f| f.checksum_hex()).collect();
    sums.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"bloomlink link id salt v1");
    for s in sums {
        ctx.update(s.as_bytes());
    }
    ctx.finish().as_ref().to_vec()
}

/// An opaque link id: a hash of the job's inputs and the link's members, which reveals nothing
/// about the records to anyone without all the input files.
fn link_id(salt: &[u8], keys: &[(String, String, u32)]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    for (ag, id, _) in keys {
        ctx.update(ag.as_bytes());
        ctx.update(&[0x1f]);
        ctx.update(id.as_bytes());
        ctx.update(&[0x1e]);
    }
    format!("L{}", hex::encode(&ctx.finish().as_ref()[..10]))
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
    let c = &r.candidates;
    t.push_str(&format!(
        "  candidates   {} pairs ({}), {} scored above the floor, {} patterns, kernel {}\n",
        thousands(c.pairs.len() as u64),
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
    t.push_str(&format!(
        "  estimated    precision {:.4}, recall {:.4}, F1 {:.4} (from the fitted model, no truth used)\n",
        op.est_precision, op.est_recall, op.est_f1
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
    if let Some(sigs) = &r.signatures {
        let list: Vec<String> = sigs
            .iter()
            .map(|s| format!("{} {}", s.agency, s.status.label()))
            .collect();
        t.push_str(&format!("  signatures   {}\n", list.join(", ")));
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
