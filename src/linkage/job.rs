//! A whole match job: candidates → comparison → model fit → clustering → link table, and the
//! output directory (`links.csv`, `links-<agency>.csv`, `report.json`) written atomically.
//!
//! [`run`] is the library entry point the CLI calls; it knows nothing of the command line, the
//! terminal or the audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::block::{self, BlockOptions, Method};
use super::cluster::{self, Edge, Status};
use super::score::{self, Comparer, FastMap, Features};
use super::Inputs;
use crate::error::{Error, Result};
use crate::fsutil::csv_field;
use crate::similarity::Kernel;

/// Options of a match job.
#[derive(Clone, Debug)]
pub struct MatchOptions {
    /// Allow several files of one agency and several records of one input per link.
    pub dedupe: bool,
    /// Fixed match threshold on the posterior probability (`None`: chosen from the data).
    pub threshold: Option<f64>,
    /// Fixed lower bound of the review band (`None`: derived from the threshold).
    pub review: Option<f64>,
    /// How candidate pairs are found.
    pub method: Method,
    /// Keyed-token blocks with more records than this are skipped.
    pub max_block: usize,
    /// Token kinds used as identifier evidence (agree / disagree).
    pub evidence_tokens: Vec<String>,
    /// Also list records that link to nothing (with an empty link id).
    pub include_unlinked: bool,
    /// Add LSH blocks on the filter bits to the keyed-token blocks (large jobs).
    pub lsh: bool,
    /// An earlier job's link table, whose link ids carry over to the links that continue them.
    pub previous: Option<std::sync::Arc<PreviousLinks>>,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions {
            dedupe: false,
            threshold: None,
            review: None,
            method: Method::Auto,
            max_block: BlockOptions::default().max_block,
            evidence_tokens: vec!["nhs".into(), "upn".into()],
            include_unlinked: false,
            lsh: false,
            previous: None,
        }
    }
}

/// The link ids of an earlier job's `links.csv`, by (agency, record id): read by
/// [`PreviousLinks::read`], used by `match --previous-links` so that a link keeps its id from
/// night to night.
#[derive(Clone, Debug, Default)]
pub struct PreviousLinks {
    /// The file read.
    pub path: PathBuf,
    /// `agency` 0x1F `record_id` → index into `ids`.
    by_record: std::collections::HashMap<String, u32>,
    /// The distinct link ids, in order of first appearance.
    ids: Vec<String>,
    /// The agencies of the earlier job (of its linked and, if listed, unlinked records).
    pub agencies: BTreeSet<String>,
}

impl PreviousLinks {
    /// Reads a `links.csv` (`link_id,agency,record_id,…`; rows with an empty link id, the
    /// unlinked, are skipped).
    pub fn read(path: &Path) -> Result<PreviousLinks> {
        crate::fsutil::check_regular(path)?;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut rd = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
        let bad = |problem: String| Error::input(path, problem);
        let header = rd
            .headers()
            .map_err(|e| bad(format!("cannot be read as CSV: {e}")))?
            .clone();
        let col = |name: &str| header.iter().position(|h| h == name);
        let (Some(l), Some(a), Some(r)) = (col("link_id"), col("agency"), col("record_id")) else {
            return Err(bad(
                "is not a link table: give the links.csv of an earlier match job (its header \
                 has link_id, agency and record_id)"
                    .into(),
            ));
        };
        let mut prev = PreviousLinks {
            path: path.to_path_buf(),
            ..Default::default()
        };
        let mut index: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        for (i, rec) in rd.records().enumerate() {
            // The header is line 1; links.csv has no line breaks in its fields.
            let rec = rec.map_err(|e| bad(format!("row {} cannot be read: {e}", i + 1)))?;
            let (Some(link), Some(agency), Some(record)) = (rec.get(l), rec.get(a), rec.get(r))
            else {
                return Err(bad(format!("row {} has too few fields", i + 1)));
            };
            prev.agencies.insert(agency.to_string());
            if link.is_empty() {
                continue;
            }
            // Written into every agency's link table: only ids bloomlink writes.
            if !is_link_id(link) {
                return Err(bad(format!(
                    "row {}: the link id is not one bloomlink writes (L and 20 hex digits)",
                    i + 1
                )));
            }
            let next = index.len() as u32;
            let id = *index.entry(link.to_string()).or_insert_with(|| {
                prev.ids.push(link.to_string());
                next
            });
            prev.by_record
                .entry(format!("{agency}\x1f{record}"))
                .or_insert(id);
        }
        Ok(prev)
    }

    /// Number of distinct link ids.
    pub fn links(&self) -> usize {
        self.ids.len()
    }

    fn id_of(&self, agency: &str, record: &str) -> Option<u32> {
        self.by_record
            .get(&format!("{agency}\x1f{record}"))
            .copied()
    }
}

/// Whether `s` is a link id as [`link_id`] writes it: `L` and 20 lower-case hex digits.
fn is_link_id(s: &str) -> bool {
    s.len() == 21
        && s.starts_with('L')
        && s.bytes()
            .skip(1)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How the link ids of an earlier job carried over (`match --previous-links`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LinkIdCarry {
    /// The earlier link table.
    pub previous_file: PathBuf,
    /// Links in it.
    pub previous_links: u64,
    /// Links of this job that kept an earlier id.
    pub kept: u64,
    /// Links of this job with a new id.
    pub new: u64,
    /// Earlier ids no link of this job kept (the link split off, merged into another, or no
    /// longer found).
    pub retired: u64,
}

/// One input as described in the report.
#[derive(Clone, Debug, Serialize)]
pub struct InputInfo {
    /// Path as given.
    pub file: PathBuf,
    /// Agency label from the file header.
    pub agency: String,
    /// Records in the file.
    pub records: usize,
    /// Key fingerprint from the header.
    pub key_fingerprint: String,
    /// Key epoch from the header.
    pub key_epoch: u32,
    /// Schema digest from the header.
    pub schema_digest: String,
    /// The file's SHA-256 trailer.
    pub checksum_sha256: String,
    /// The bloomlink version that encoded it.
    pub tool_version: String,
}

/// Wall-clock seconds per stage.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Seconds {
    /// Opening and validating the inputs (filled in by the caller, which opens them).
    pub open: f64,
    /// Candidate generation.
    pub candidates: f64,
    /// Field-level comparison of the candidate pairs.
    pub compare: f64,
    /// Model fit and operating point.
    pub fit: f64,
    /// Clustering.
    pub cluster: f64,
    /// Building the link table and writing the outputs.
    pub write: f64,
    /// Whole job.
    pub total: f64,
}

/// `report.json`: everything about a job except the links themselves. It holds no score of any
/// single pair, only aggregates (histograms), so it can be shared.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Tool version.
    pub bloomlink_version: &'static str,
    /// The inputs.
    pub inputs: Vec<InputInfo>,
    /// Dice kernel used.
    pub kernel: &'static str,
    /// How candidates were found.
    pub candidates: block::Candidates,
    /// Distinct candidate pairs.
    pub candidate_pairs: u64,
    /// Pairs scored (candidates above the Dice floor or sharing an identifier).
    pub pairs_scored: u64,
    /// Distinct comparison patterns.
    pub distinct_patterns: usize,
    /// Share of the candidate pairs the model was fitted on (1 unless the job is very large).
    pub fit_sample_share: f64,
    /// Whole-filter Dice below which pairs were not scored (unless sharing an identifier).
    pub dice_floor: f32,
    /// 99th percentile of the whole-filter Dice of random pairs (what unrelated records score).
    pub random_pair_dice_q99: f32,
    /// Pairs agreeing on an identifier token, used to estimate m for the segments.
    pub anchor_pairs: u64,
    /// Where the m-probabilities came from.
    pub m_source: &'static str,
    /// The fitted Fellegi–Sunter model.
    pub model: score::Model,
    /// The comparison features.
    pub features: Features,
    /// Threshold, review band and the model's own estimates of precision and recall.
    pub operating_point: score::Operating,
    /// The model's estimate of the quality of the links themselves (after assignment), with
    /// no ground truth: see [`estimate_quality`].
    pub estimated: Estimate,
    /// Whether the threshold was given or estimated.
    pub threshold_source: &'static str,
    /// Links (groups of two or more records).
    pub links: u64,
    /// Records linked, per agency.
    pub records_linked: BTreeMap<String, u64>,
    /// Linked records whose best edge is in the review band.
    pub records_in_review: u64,
    /// Links joining each pair of agencies.
    pub links_per_agency_pair: BTreeMap<String, u64>,
    /// Pairs above the threshold refused because they would put two records of one input in
    /// one link.
    pub conflicting_pairs_refused: u64,
    /// Review-band edges not used because both records were already linked.
    pub review_merges_skipped: u64,
    /// Scored pairs per posterior-probability bin (20 bins of 0.05).
    pub posterior_histogram: Vec<u64>,
    /// Scored pairs per whole-filter Dice bin (20 bins of 0.05).
    pub dice_histogram: Vec<u64>,
    /// Time per stage.
    pub seconds: Seconds,
    /// Per input, its signature as checked against a trust file (`match --trust`; set by the
    /// caller, absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Vec<crate::signing::InputSignature>>,
    /// Blocking recall against exhaustive comparison (`--check-blocking`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocking_check: Option<BlockingRecall>,
    /// How an earlier job's link ids carried over (`--previous-links`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_ids: Option<LinkIdCarry>,
    /// What the linkage unit should know about the inputs (see [`input_warnings`]).
    pub warnings: Vec<String>,
}

/// Warnings about the inputs that do not stop the job: encodings made by different bloomlink
/// versions. Names are folded with the Unicode tables of the build (README, "Security notes"),
/// so a name with rare characters can encode differently under two builds and its records fail
/// to link; the schema digest and key fingerprint cannot show that.
pub fn input_warnings(inputs: &Inputs) -> Vec<String> {
    let versions: BTreeSet<&str> = inputs
        .files()
        .iter()
        .map(|f| f.header().tool_version.as_str())
        .collect();
    let mut warnings = Vec::new();
    if versions.len() > 1 {
        let list: Vec<&str> = versions.into_iter().collect();
        warnings.push(format!(
            "the inputs were encoded by different bloomlink versions ({}): a name with rare \
             characters can encode differently between builds and miss its links; move every \
             agency to one build",
            list.join(", ")
        ));
    }
    warnings
}

/// Estimated quality of the links, over pairs of linked records of different inputs.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Estimate {
    /// Expected share of linked pairs that are true matches.
    pub precision: f64,
    /// Expected share of true matching pairs that are linked.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Pairs of records of different inputs in the same link (status match).
    pub linked_pairs: u64,
    /// Expected true matching pairs among all records.
    pub expected_true_pairs: f64,
}

/// Estimates precision and recall of the links from the fitted model, without ground truth.
///
/// Precision: the mean posterior of the linked pairs (a pair linked only through a third record
/// counts with the weaker of the two records' linking scores). Recall: expected true pairs
/// linked over expected true pairs, where each record can match at most one record of each
/// other input, so the expected number of matches of record r in input X is the best posterior
/// of any pair of r with a record of X, not the sum over all of them (summing over candidate
/// pairs counts a child's siblings and namesakes as extra matches and inflates it many times).
pub fn estimate_quality(
    inputs: &Inputs,
    clusters: &cluster::Clusters,
    edges: &[Edge],
    best: &[AtomicU64],
) -> Estimate {
    let nfiles = inputs.files().len();
    let status_match = |g: u32| matches!(clusters.linked[g as usize], Some((_, Status::Match)));
    let mut within: FastMap<(u32, u32), f64> = FastMap::default();
    for e in edges {
        if clusters.root[e.a as usize] == clusters.root[e.b as usize] {
            within.entry((e.a, e.b)).or_insert(e.p);
        }
    }
    let mut members: Vec<(u32, u32)> = (0..inputs.total() as u32)
        .filter(|&g| status_match(g))
        .map(|g| (clusters.root[g as usize], g))
        .collect();
    members.par_sort_unstable();
    let (mut linked_pairs, mut expected_tp) = (0u64, 0.0f64);
    for group in members.chunk_by(|x, y| x.0 == y.0) {
        for (i, &(_, x)) in group.iter().enumerate() {
            for &(_, y) in &group[i + 1..] {
                if inputs.file_of(x) == inputs.file_of(y) {
                    continue;
                }
                let (a, b) = (x.min(y), x.max(y));
                let p = within.get(&(a, b)).copied().unwrap_or_else(|| {
                    let s = |g: u32| clusters.linked[g as usize].map_or(0.0, |l| l.0);
                    s(a).min(s(b))
                });
                linked_pairs += 1;
                expected_tp += p;
            }
        }
    }
    // Which input's records each link holds (bit per input; at most 64 inputs, as clustering).
    let mut held = vec![0u64; inputs.total()];
    for &(root, g) in &members {
        held[root as usize] |= 1 << (inputs.file_of(g) % 64);
    }
    // Per record in parallel, summed in record order: a parallel sum would group the terms by
    // how the work was split, and the report would change in its last digits from run to run.
    let per_record: Vec<f64> = (0..inputs.total())
        .into_par_iter()
        .map(|g| {
            let own = inputs.file_of(g as u32);
            let root = clusters.root[g];
            (0..nfiles)
                .filter(|&x| x != own)
                .map(|x| {
                    let packed = best[g * nfiles + x].load(Ordering::Relaxed);
                    let (p, other) = (f32::from_bits((packed >> 32) as u32), packed as u32);
                    let other_root = clusters.root[other as usize];
                    // The best candidate went to a link that already holds another record of
                    // this record's input: one match per input, so it is this record's match
                    // only if that link is wrong.
                    let claimed = p > 0.0
                        && status_match(other)
                        && other_root != root
                        && held[other_root as usize] & (1 << (own % 64)) != 0;
                    if claimed {
                        let s = clusters.linked[other as usize].map_or(0.0, |l| l.0);
                        f64::from(p) * (1.0 - s)
                    } else {
                        f64::from(p)
                    }
                })
                .sum::<f64>()
        })
        .collect();
    let expected_true_pairs = per_record.iter().sum::<f64>() / 2.0;
    let precision = if linked_pairs == 0 {
        1.0
    } else {
        expected_tp / linked_pairs as f64
    };
    let recall = if expected_true_pairs <= 0.0 {
        1.0
    } else {
        (expected_tp / expected_true_pairs).min(1.0)
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Estimate {
        precision,
        recall,
        f1,
        linked_pairs,
        expected_true_pairs,
    }
}

/// What the second pass gathers: exact counts, and the pairs kept for clustering.
#[derive(Default)]
struct Pass2 {
    visited: u64,
    codes: score::CodeCounts,
    dice_hist: [u64; 20],
    /// Kept pairs, in pieces (one per task; joined once at the end, not at every merge).
    edges: Vec<Vec<Edge>>,
}

impl Pass2 {
    fn merge(mut self, mut other: Pass2) -> Pass2 {
        self.visited += other.visited;
        self.codes = self.codes.merge(other.codes);
        for (x, y) in self.dice_hist.iter_mut().zip(other.dice_hist) {
            *x += y;
        }
        self.edges.append(&mut other.edges);
        self
    }
}

/// The whole-filter Dice below which a pair is not scored (unless it shares an identifier):
/// 0.4, or the 99th percentile of the Dice of random (unrelated) pairs if that is higher, as it
/// is when hardening (balancing, diffusion) lifts the Dice of unrelated records towards 0.5 and
/// beyond; otherwise exhaustive comparison would keep nearly every pair.
fn dice_floor(random_q99: f32) -> f32 {
    const BASE: f32 = 0.4;
    BASE.max(random_q99)
}

/// Above this many proposed candidate pairs, the model is fitted on a sample of them.
pub const FIT_SAMPLE_PAIRS: u64 = 30_000_000;

/// One row of `links.csv`.
#[derive(Clone, Debug)]
pub struct LinkRow {
    /// Opaque link id; empty for an unlinked record.
    pub link_id: String,
    /// Agency label.
    pub agency: String,
    /// The agency's row reference.
    pub record_id: String,
    /// Posterior probability of the record's best edge in the link.
    pub score: Option<f64>,
    /// Match or review.
    pub status: Option<Status>,
}

/// The result of [`run`].
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// The link table, sorted by link id, agency, record id (unlinked rows last).
    pub rows: Vec<LinkRow>,
}

/// Runs a match job on opened inputs. Deterministic: the same inputs and options give the same
/// outcome whatever the thread count.
pub fn run(inputs: &Inputs, opts: &MatchOptions, kernel: Kernel) -> Result<Outcome> {
    run_reporting(inputs, opts, kernel, &|_| {})
}

/// The steps of a job, in order, as [`run_reporting`] reports them.
pub const STAGES: [&str; 6] = [
    "finding candidate pairs",
    "comparing candidate pairs to fit the model",
    "fitting the model",
    "scoring candidate pairs",
    "clustering",
    "building the link table",
];

/// [`run`], calling `stage` with each entry of [`STAGES`] as that step starts (for a progress
/// display: a million-child job takes seconds per step, a national one minutes).
pub fn run_reporting(
    inputs: &Inputs,
    opts: &MatchOptions,
    kernel: Kernel,
    stage: &dyn Fn(&'static str),
) -> Result<Outcome> {
    let t0 = Instant::now();
    let first = &inputs.files()[0];
    if first.header().segments.len() > score::MAX_SEGMENTS {
        return Err(Error::format(
            first.path(),
            format!(
                "has {} filter segments; the matcher compares at most {}",
                first.header().segments.len(),
                score::MAX_SEGMENTS
            ),
        ));
    }
    let features = Features::for_inputs(inputs, &opts.evidence_tokens);
    if features.evidence.len() > score::MAX_EVIDENCE {
        return Err(Error::Usage(format!(
            "--evidence-tokens names {} token kinds; at most {} can be used as evidence",
            features.evidence.len(),
            score::MAX_EVIDENCE
        )));
    }
    let mut secs = Seconds::default();

    stage(STAGES[0]);
    let t = Instant::now();
    let random = score::random_pairs(inputs, 200_000, opts.dedupe);
    let random_q99 = score::dice_quantile(inputs, &random, kernel, 0.99);
    let bopts = BlockOptions {
        method: opts.method,
        max_block: opts.max_block,
        within_files: opts.dedupe,
        dice_floor: dice_floor(random_q99),
        lsh: opts.lsh,
        ..Default::default()
    };
    let plan = block::Plan::new(inputs, &bopts, kernel);
    secs.candidates = t.elapsed().as_secs_f64();

    // Pass 1: fit the model on the comparison patterns of the candidates: all of them for an
    // ordinary job; for a very large one, a deterministic sample of blocks holding about
    // FIT_SAMPLE_PAIRS pairs, its counts scaled up (EM needs pattern frequencies, not every pair).
    stage(STAGES[1]);
    let t = Instant::now();
    let cmp = Comparer::new(inputs, &features, kernel, bopts.dice_floor);
    let every = plan.proposed().div_ceil(FIT_SAMPLE_PAIRS).max(1);
    let share = plan.sample_share(every);
    let sample = plan
        .scan(
            every,
            score::CodeCounts::default,
            |g| cmp.view(g),
            |acc, a, b| {
                if let Some((_, code)) = cmp.compare(a, b) {
                    acc.add(code);
                }
            },
            score::CodeCounts::merge,
        )
        .into_map();
    let (patterns, counts, index) = score::patterns_from_codes(&features, &sample);
    let scaled: Vec<u64> = counts
        .iter()
        .map(|&n| (n as f64 / share.max(1e-12)).round() as u64)
        .collect();
    secs.compare = t.elapsed().as_secs_f64();

    stage(STAGES[2]);
    let t = Instant::now();
    let sizes: Vec<f64> = inputs.files().iter().map(|f| f.len() as f64).collect();
    let mut max_matches = 0.0;
    for i in 0..sizes.len() {
        for j in i + 1..sizes.len() {
            max_matches += sizes[i].min(sizes[j]);
        }
        if opts.dedupe {
            max_matches += sizes[i] / 2.0;
        }
    }
    let expected = 0.8 * max_matches;
    // u from random pairs (nearly all non-matches), m and λ by EM.
    let (rpatterns, rcounts) =
        score::pattern_counts(inputs, &random, &features, kernel, f32::NEG_INFINITY);
    let u = score::u_from_random_pairs(&features, &rpatterns, &rcounts);
    let (fixed_m, anchors) = score::m_from_anchors(&features, &patterns, &scaled);
    let model = score::fit(
        &features,
        &patterns,
        &scaled,
        expected,
        max_matches,
        Some(&u),
        &fixed_m,
    );
    secs.fit = t.elapsed().as_secs_f64();

    // Pass 2: every candidate pair again; exact pattern counts for the operating point and the
    // report, and the pairs that may matter (posterior at or above any possible review bound)
    // kept for clustering.
    stage(STAGES[3]);
    let t = Instant::now();
    let keep_floor = 0.05f64
        .min(opts.review.unwrap_or(1.0))
        .min(opts.threshold.unwrap_or(1.0));
    let posterior_of = |code: u64| -> f64 {
        match index.get(&code) {
            Some(&i) => model.posterior(&patterns[i as usize]),
            // A pattern the sample did not see.
            None => model.posterior(&score::pattern_of(&features, code)),
        }
    };
    let cached = score::Posteriors::new(index.keys().map(|&c| (c, posterior_of(c))));
    // Per record and input: the best posterior of any pair with a record of that input, and
    // that record, packed as (posterior bits << 32 | record) so one atomic max keeps both (and
    // breaks ties by the larger id, whatever the visiting order).
    let nfiles = inputs.files().len();
    let best: Vec<AtomicU64> = (0..inputs.total() * nfiles)
        .map(|_| AtomicU64::new(0))
        .collect();
    let raise = |slot: &AtomicU64, p: f32, other: u32| {
        // Non-negative f32s order as their bit patterns.
        let packed = (u64::from(p.to_bits()) << 32) | u64::from(other);
        if slot.load(Ordering::Relaxed) < packed {
            slot.fetch_max(packed, Ordering::Relaxed);
        }
    };
    let mut pass2 = plan.scan(
        1,
        Pass2::default,
        |g| cmp.view(g),
        |acc, a, b| {
            acc.visited += 1;
            if let Some((dice, code)) = cmp.compare(a, b) {
                acc.codes.add(code);
                acc.dice_hist[((dice * 20.0) as usize).min(19)] += 1;
                let p = cached.get(code).unwrap_or_else(|| posterior_of(code));
                if p >= 0.001 {
                    raise(
                        &best[a.g as usize * nfiles + b.file as usize],
                        p as f32,
                        b.g,
                    );
                    raise(
                        &best[b.g as usize * nfiles + a.file as usize],
                        p as f32,
                        a.g,
                    );
                }
                if p >= keep_floor {
                    if acc.edges.is_empty() {
                        acc.edges.push(Vec::new());
                    }
                    acc.edges[0].push(Edge {
                        a: a.g,
                        b: b.g,
                        p,
                        dice,
                    });
                }
            }
        },
        Pass2::merge,
    );
    let codes = std::mem::take(&mut pass2.codes).into_map();
    let mut weighted: Vec<(f64, u64)> = codes
        .iter()
        .map(|(&c, &n)| (cached.get(c).unwrap_or_else(|| posterior_of(c)), n))
        .collect();
    weighted.sort_by(|x, y| y.0.total_cmp(&x.0));
    let op = score::operating_point(&weighted, opts.threshold, opts.review);
    let mut post_hist = vec![0u64; 20];
    for &(p, n) in &weighted {
        post_hist[((p * 20.0) as usize).min(19)] += n;
    }
    let pairs_scored: u64 = codes.values().sum();
    let distinct_patterns = codes.len();
    secs.compare += t.elapsed().as_secs_f64();

    stage(STAGES[4]);
    let t = Instant::now();
    let mut edges = pass2.edges.concat();
    let clusters = cluster::cluster(
        inputs.total(),
        &mut edges,
        op.threshold,
        op.review,
        |g| inputs.file_of(g),
        opts.dedupe,
    );
    let estimate = estimate_quality(inputs, &clusters, &edges, &best);
    drop(edges);
    secs.cluster = t.elapsed().as_secs_f64();

    stage(STAGES[5]);
    let t = Instant::now();
    let table = link_table(
        inputs,
        &clusters,
        opts.include_unlinked,
        opts.previous.as_deref(),
    );
    secs.write = t.elapsed().as_secs_f64();
    secs.total = t0.elapsed().as_secs_f64();

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
                tool_version: f.header().tool_version.clone(),
            })
            .collect(),
        warnings: input_warnings(inputs),
        kernel: kernel.name(),
        candidate_pairs: pass2.visited,
        pairs_scored,
        distinct_patterns,
        fit_sample_share: share,
        dice_floor: bopts.dice_floor,
        random_pair_dice_q99: random_q99,
        anchor_pairs: anchors,
        m_source: if anchors >= score::MIN_ANCHORS {
            "segments: anchor pairs agreeing on an identifier token; identifiers: EM"
        } else {
            "EM (too few anchor pairs)"
        },
        candidates: plan.stats().clone(),
        model,
        features,
        operating_point: op,
        threshold_source: if opts.threshold.is_some() {
            "--threshold"
        } else {
            "estimated: maximum expected F1 under the fitted model"
        },
        estimated: estimate,
        links: table.links,
        records_linked: table.linked_per_agency,
        records_in_review: table.in_review,
        links_per_agency_pair: table.per_pair,
        conflicting_pairs_refused: clusters.conflicts,
        review_merges_skipped: clusters.review_merges_skipped,
        posterior_histogram: post_hist,
        dice_histogram: pass2.dice_hist.to_vec(),
        seconds: secs,
        signatures: None,
        blocking_check: None,
        link_ids: table.carry,
    };
    Ok(Outcome {
        report,
        rows: table.rows,
    })
}

struct Table {
    rows: Vec<LinkRow>,
    carry: Option<LinkIdCarry>,
    links: u64,
    in_review: u64,
    per_pair: BTreeMap<String, u64>,
    linked_per_agency: BTreeMap<String, u64>,
}

fn link_table(
    inputs: &Inputs,
    clusters: &cluster::Clusters,
    include_unlinked: bool,
    previous: Option<&PreviousLinks>,
) -> Table {
    let salt = job_salt(inputs);
    // Linked records by cluster: sorted (root, record) runs.
    let mut linked: Vec<(u32, u32)> = (0..inputs.total() as u32)
        .filter(|&g| clusters.linked[g as usize].is_some())
        .map(|g| (clusters.root[g as usize], g))
        .collect();
    linked.par_sort_unstable();
    let groups: Vec<&[(u32, u32)]> = linked
        .chunk_by(|x, y| x.0 == y.0)
        .filter(|g| g.len() >= 2)
        .collect();
    let key_of = |g: u32| {
        let r = inputs.record(g);
        let f = &inputs.files()[r.file as usize];
        (
            f.header().agency.clone(),
            f.row_ref(r.row as usize).to_string(),
        )
    };
    // Each link's rows and the agencies it joins, in parallel (link ids are hashes).
    let mut links: Vec<(Vec<LinkRow>, Vec<String>)> = groups
        .par_iter()
        .map(|group| {
            let mut keys: Vec<(String, String, u32)> = group
                .iter()
                .map(|&(_, g)| {
                    let (ag, id) = key_of(g);
                    (ag, id, g)
                })
                .collect();
            keys.sort();
            let link_id = link_id(&salt, &keys);
            let ags: Vec<String> = keys
                .iter()
                .map(|k| k.0.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let rows = keys
                .into_iter()
                .map(|(ag, id, g)| {
                    let (score, status) =
                        clusters.linked[g as usize].unwrap_or((0.0, Status::Match));
                    LinkRow {
                        link_id: link_id.clone(),
                        agency: ag,
                        record_id: id,
                        score: Some(score),
                        status: Some(status),
                    }
                })
                .collect();
            (rows, ags)
        })
        .collect();
    let carry = previous.map(|p| {
        let members: Vec<&[LinkRow]> = links.iter().map(|(rows, _)| rows.as_slice()).collect();
        let kept = carried_ids(&members, p);
        let n = kept.iter().flatten().count() as u64;
        for ((rows, _), id) in links.iter_mut().zip(kept) {
            if let Some(id) = id {
                for r in rows {
                    r.link_id = id.clone();
                }
            }
        }
        LinkIdCarry {
            previous_file: p.path.clone(),
            previous_links: p.links() as u64,
            kept: n,
            new: links.len() as u64 - n,
            retired: p.links() as u64 - n,
        }
    });
    // Links in link-id order; each link's rows are already in (agency, record id) order, so
    // the table comes out sorted without sorting its rows.
    links.par_sort_unstable_by(|x, y| x.0[0].link_id.cmp(&y.0[0].link_id));
    let mut t = Table {
        rows: Vec::with_capacity(linked.len()),
        carry,
        links: links.len() as u64,
        in_review: 0,
        per_pair: BTreeMap::new(),
        linked_per_agency: BTreeMap::new(),
    };
    for (rows, ags) in links {
        for i in 0..ags.len() {
            for j in i + 1..ags.len() {
                *t.per_pair
                    .entry(format!("{}–{}", ags[i], ags[j]))
                    .or_default() += 1;
            }
        }
        for r in rows {
            if r.status == Some(Status::Review) {
                t.in_review += 1;
            }
            *t.linked_per_agency.entry(r.agency.clone()).or_default() += 1;
            t.rows.push(r);
        }
    }
    if include_unlinked {
        let mut in_link = vec![false; inputs.total()];
        for group in &groups {
            for &(_, g) in *group {
                in_link[g as usize] = true;
            }
        }
        let first_unlinked = t.rows.len();
        for g in 0..inputs.total() as u32 {
            if !in_link[g as usize] {
                let (ag, id) = key_of(g);
                t.rows.push(LinkRow {
                    link_id: String::new(),
                    agency: ag,
                    record_id: id,
                    score: None,
                    status: None,
                });
            }
        }
        t.rows[first_unlinked..]
            .par_sort_by(|x, y| (&x.agency, &x.record_id).cmp(&(&y.agency, &y.record_id)));
    }
    t
}

/// Which earlier link id each link keeps (`None`: a new id). A link keeps the id of the earlier
/// link it shares the most records with, each earlier id going to one link at most: the link
/// sharing more records with it wins, then, between equals, the earlier id and the link whose
/// first member (agency, record id) comes first. So a link that gained or lost a record keeps
/// its id; of a link that split, the larger part keeps it; of two that merged, the merged link
/// keeps the id of the larger. `links` holds each link's rows in (agency, record id) order.
fn carried_ids(links: &[&[LinkRow]], previous: &PreviousLinks) -> Vec<Option<String>> {
    // (shared records, earlier id, link), best first.
    let mut candidates: Vec<(u32, u32, usize)> = Vec::new();
    for (i, rows) in links.iter().enumerate() {
        let mut shared: BTreeMap<u32, u32> = BTreeMap::new();
        for r in rows.iter() {
            if let Some(old) = previous.id_of(&r.agency, &r.record_id) {
                *shared.entry(old).or_default() += 1;
            }
        }
        candidates.extend(shared.into_iter().map(|(old, n)| (n, old, i)));
    }
    let first = |i: usize| (&links[i][0].agency, &links[i][0].record_id);
    candidates.sort_by(|x, y| {
        y.0.cmp(&x.0)
            .then_with(|| previous.ids[x.1 as usize].cmp(&previous.ids[y.1 as usize]))
            .then_with(|| first(x.2).cmp(&first(y.2)))
    });
    let mut kept: Vec<Option<String>> = vec![None; links.len()];
    let mut taken = vec![false; previous.ids.len()];
    for (_, old, i) in candidates {
        if kept[i].is_none() && !taken[old as usize] {
            taken[old as usize] = true;
            kept[i] = Some(previous.ids[old as usize].clone());
        }
    }
    kept
}

/// A score as written in `links.csv`: four decimals (empty for none), formatted without a
/// float-to-decimal conversion per row (this is most of the time of writing a large table).
struct Score(Option<f64>);

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => Ok(()),
            Some(s) if (0.0..=1.0).contains(&s) => {
                let q = (s * 10_000.0).round() as u32;
                write!(f, "{}.{:04}", q / 10_000, q % 10_000)
            }
            Some(s) => write!(f, "{s:.4}"),
        }
    }
}

/// Names of the files [`write_outputs`] writes into the output directory.
pub fn output_names(inputs: &Inputs) -> Vec<String> {
    let mut names = vec!["links.csv".to_string()];
    let agencies: BTreeSet<&str> = inputs
        .files()
        .iter()
        .map(|f| f.header().agency.as_str())
        .collect();
    names.extend(agencies.iter().map(|ag| format!("links-{ag}.csv")));
    names.push("report.json".into());
    names
}

/// Writes `links.csv`, one `links-<agency>.csv` per agency (record id → link id, no scores) and
/// `report.json` into a fresh directory beside `out`, then renames it into place (replacing an
/// existing `out`: the caller decides whether that is allowed). The caller keeps the result once
/// it has recorded the job; dropped, the new directory is removed and the old one put back.
pub fn write_outputs(
    out: &Path,
    inputs: &Inputs,
    outcome: &mut Outcome,
) -> Result<crate::fsutil::Committed> {
    let t = Instant::now();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "links".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // Removed on an error, and by the command-line tool when it is interrupted.
    // Owner-only: the link tables join the agencies' record ids (README, "Security notes").
    let (guard, ()) =
        crate::fsutil::Temporary::create(tmp.clone(), crate::fsutil::create_private_dir)
            .map_err(|e| Error::io(&tmp, e))?;
    write_into(&tmp, inputs, outcome, t)?;
    // From here to the caller's audit entry an interrupt waits (the caller holds a
    // `fsutil::FinishingScope`), so it never leaves the old output removed and the new one not
    // yet in place.
    crate::fsutil::begin_finishing();
    let placed = replace_dir(&tmp, out, &parent, &name)?;
    guard.keep();
    Ok(placed)
}

/// Refuses an output path that exists and is not a directory (followed through a symbolic
/// link): [`write_outputs`] would replace a file with its directory of link tables. And one
/// that is a directory holding anything but an earlier job's outputs (`links.csv`,
/// `links-<agency>.csv`, `report.json`): replacing it would delete its other files, the job's
/// own encodings among them (`-o .` in the directory of the inputs).
pub fn check_output_dir(out: &Path) -> Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if !m.is_dir() => Err(Error::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory (match writes a directory of link tables)",
            ),
        )),
        Ok(_) => {
            let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
            let mut others = Vec::new();
            for e in entries {
                let name = e.map_err(|e| Error::io(out, e))?.file_name();
                let name = name.to_string_lossy();
                if !is_output_name(&name) {
                    others.push(name.into_owned());
                }
            }
            if others.is_empty() {
                return Ok(());
            }
            others.sort();
            let more = if others.len() > 3 {
                format!(" and {} more", others.len() - 3)
            } else {
                String::new()
            };
            others.truncate(3);
            Err(Error::Usage(format!(
                "{} holds {}{more}, which match does not write: the output directory is \
                 replaced as a whole, so only a new directory, an empty one or an earlier \
                 match output (links.csv, links-<agency>.csv, report.json) can be given. Give \
                 another directory with -o",
                out.display(),
                others.join(", ")
            )))
        }
        Err(_) => Ok(()),
    }
}

/// Whether `name` is one of the files [`write_outputs`] writes.
fn is_output_name(name: &str) -> bool {
    name == "links.csv"
        || name == "report.json"
        || name
            .strip_prefix("links-")
            .is_some_and(|r| r.ends_with(".csv"))
}

/// Renames the finished directory `tmp` to `out`. An existing `out` is first moved aside, so a
/// failed rename leaves the old output as it was; it is removed when the caller keeps the new
/// one ([`crate::fsutil::Committed::keep`]), and put back if it does not.
fn replace_dir(
    tmp: &Path,
    out: &Path,
    parent: &Path,
    name: &str,
) -> Result<crate::fsutil::Committed> {
    use crate::fsutil::Committed;
    let rename = |from: &Path, to: &Path| std::fs::rename(from, to).map_err(|e| Error::io(out, e));
    check_output_dir(out)?;
    if std::fs::symlink_metadata(out).is_err() {
        rename(tmp, out)?;
        return Ok(Committed::placed(out.to_path_buf(), None));
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&old);
    rename(out, &old)?;
    if let Err(e) = rename(tmp, out) {
        let _ = std::fs::rename(&old, out);
        return Err(e);
    }
    Ok(Committed::placed(out.to_path_buf(), Some(old)))
}

fn write_into(dir: &Path, inputs: &Inputs, outcome: &mut Outcome, t: Instant) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(&p, e)
    };
    let lp = dir.join("links.csv");
    let mut w = std::io::BufWriter::new(crate::fsutil::create_in_temporary(&lp).map_err(io(&lp))?);
    writeln!(w, "link_id,agency,record_id,score,status").map_err(io(&lp))?;
    let mut per_agency: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for r in &outcome.rows {
        writeln!(
            w,
            "{},{},{},{},{}",
            r.link_id,
            r.agency,
            csv_field(&r.record_id),
            Score(r.score),
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
    // One file per agency (record id → link id only), written in parallel.
    let agencies: BTreeSet<&str> = inputs
        .files()
        .iter()
        .map(|f| f.header().agency.as_str())
        .collect();
    agencies.into_par_iter().try_for_each(|ag| -> Result<()> {
        let p = dir.join(format!("links-{ag}.csv"));
        let mut w =
            std::io::BufWriter::new(crate::fsutil::create_in_temporary(&p).map_err(io(&p))?);
        writeln!(w, "record_id,link_id").map_err(io(&p))?;
        let mut list = per_agency.get(ag).cloned().unwrap_or_default();
        list.par_sort_unstable();
        list.dedup();
        for (id, link) in list {
            writeln!(w, "{},{link}", csv_field(id)).map_err(io(&p))?;
        }
        w.flush().map_err(io(&p))?;
        w.get_ref().sync_all().map_err(io(&p))
    })?;
    let report = &mut outcome.report;
    report.seconds.write += t.elapsed().as_secs_f64();
    report.seconds.total += t.elapsed().as_secs_f64();
    let rp = dir.join("report.json");
    let json = serde_json::to_string_pretty(report).expect("the report serialises") + "\n";
    crate::fsutil::create_in_temporary(&rp)
        .and_then(|mut f| f.write_all(json.as_bytes()))
        .map_err(io(&rp))
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

/// How much blocking loses against comparing every pair: [`blocking_recall`].
#[derive(Clone, Debug, Serialize)]
pub struct BlockingRecall {
    /// Pairs compared exhaustively (cross-input pairs).
    pub exhaustive_comparisons: u64,
    /// Match threshold of the exhaustive job, used for the blocked job too.
    pub threshold: f64,
    /// Pairs of records (of different inputs) in the same link, status match, when every pair
    /// is compared.
    pub exhaustive_link_pairs: u64,
    /// Pairs in the same link with blocking (same threshold).
    pub blocked_link_pairs: u64,
    /// Exhaustive link pairs that blocking also links.
    pub found_by_blocking: u64,
    /// `found_by_blocking / exhaustive_link_pairs`.
    pub recall: f64,
}

/// Largest job [`blocking_recall`] compares exhaustively.
pub const MAX_CHECK_PAIRS: u64 = 2_000_000_000;

/// Measures blocking against exhaustive comparison on the same inputs, as the links each finds:
/// the job is run comparing every cross-input pair, then with blocking at the exhaustive job's
/// threshold and review bound, and the pairs of records linked (status match) are compared.
pub fn blocking_recall(
    inputs: &Inputs,
    opts: &MatchOptions,
    kernel: Kernel,
) -> Result<BlockingRecall> {
    let mut cross = 0u64;
    let sizes: Vec<u64> = inputs.files().iter().map(|f| f.len() as u64).collect();
    for i in 0..sizes.len() {
        for j in i + 1..sizes.len() {
            cross += sizes[i] * sizes[j];
        }
        if opts.dedupe {
            cross += sizes[i] * sizes[i].saturating_sub(1) / 2;
        }
    }
    if cross > MAX_CHECK_PAIRS {
        return Err(Error::Usage(format!(
            "--check-blocking compares every pair: {cross} pairs is more than {MAX_CHECK_PAIRS}; \
             check on a smaller extract"
        )));
    }
    let ex = run(
        inputs,
        &MatchOptions {
            method: Method::Exhaustive,
            ..opts.clone()
        },
        kernel,
    )?;
    let op = &ex.report.operating_point;
    let bl = run(
        inputs,
        &MatchOptions {
            method: Method::Blocking,
            threshold: Some(op.threshold),
            review: Some(op.review),
            ..opts.clone()
        },
        kernel,
    )?;
    let (e, b) = (link_pairs(&ex.rows), link_pairs(&bl.rows));
    let found = e.intersection(&b).count() as u64;
    Ok(BlockingRecall {
        exhaustive_comparisons: ex.report.candidates.comparisons,
        threshold: op.threshold,
        exhaustive_link_pairs: e.len() as u64,
        blocked_link_pairs: b.len() as u64,
        found_by_blocking: found,
        recall: if e.is_empty() {
            1.0
        } else {
            found as f64 / e.len() as f64
        },
    })
}

/// Pairs of records of different agencies in the same link with status match.
fn link_pairs(rows: &[LinkRow]) -> BTreeSet<(&str, &str, &str, &str)> {
    let mut out = BTreeSet::new();
    for link in rows.chunk_by(|x, y| x.link_id == y.link_id) {
        if link[0].link_id.is_empty() {
            continue;
        }
        let members: Vec<&LinkRow> = link
            .iter()
            .filter(|r| r.status == Some(Status::Match))
            .collect();
        for (i, x) in members.iter().enumerate() {
            for y in &members[i + 1..] {
                if x.agency != y.agency {
                    out.insert((
                        x.agency.as_str(),
                        x.record_id.as_str(),
                        y.agency.as_str(),
                        y.record_id.as_str(),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(agency: &str, record: &str) -> LinkRow {
        LinkRow {
            link_id: String::new(),
            agency: agency.into(),
            record_id: record.into(),
            score: None,
            status: None,
        }
    }

    fn previous(table: &str) -> PreviousLinks {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("links.csv");
        std::fs::write(&p, table).unwrap();
        PreviousLinks::read(&p).unwrap()
    }

    /// A link that grew keeps its id; of a split link the larger part keeps it; of two merged
    /// links the larger's id wins and the other is retired; a link of new records gets none.
    #[test]
    fn links_keep_the_id_of_the_earlier_link_they_share_most_with() {
        let id = |c: char| format!("L{c:0>20}");
        let mut table = String::from("link_id,agency,record_id,score,status\n");
        for (link, members) in [
            ('a', "health:h1 police:p1"),
            ('b', "health:h2 police:p2 education:e2"),
            ('c', "health:h3 police:p3"),
            ('d', "health:h4 police:p4 education:e4"),
        ] {
            for m in members.split(' ') {
                let (agency, record) = m.split_once(':').unwrap();
                table.push_str(&format!("{},{agency},{record},0.99,match\n", id(link)));
            }
        }
        table.push_str(",health,h9,,\n");
        let prev = previous(&table);
        assert_eq!(prev.links(), 4);
        let grown = [
            row("education", "e1"),
            row("health", "h1"),
            row("police", "p1"),
        ];
        let split_small = [row("education", "e2"), row("police", "p2x")];
        let split_large = [row("health", "h2"), row("police", "p2")];
        // Links c (2 records) and d (3) merged: d's id wins.
        let merged = [
            row("education", "e4"),
            row("health", "h3"),
            row("health", "h4"),
            row("police", "p3"),
            row("police", "p4"),
        ];
        let fresh = [row("health", "h9"), row("police", "p9")];
        let links: Vec<&[LinkRow]> = vec![&grown, &split_small, &split_large, &merged, &fresh];
        let kept = carried_ids(&links, &prev);
        assert_eq!(
            kept,
            [Some(id('a')), None, Some(id('b')), Some(id('d')), None]
        );
    }

    #[test]
    fn a_file_that_is_no_link_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "name,dob\nAnn,2015-01-01\n").unwrap();
        let e = PreviousLinks::read(&p).unwrap_err().to_string();
        assert!(e.contains("is not a link table"), "{e}");
        assert!(PreviousLinks::read(&dir.path().join("none.csv")).is_err());
        std::fs::write(&p, "link_id,agency,record_id\nLb,health,h1\n").unwrap();
        let e = PreviousLinks::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("row 1: the link id is not one bloomlink writes"),
            "{e}"
        );
    }
}
