//! Linkage quality: a link table scored against a truth file.
//!
//! Synthetic populations ([`crate::synth`]) come with `truth.csv`, the true entity (child) of
//! every record, and `twins.csv`, the pairs of children born in the same multiple birth. This
//! module reads a link table (`links.csv`: `link_id,agency,record_id,score,status`) and measures
//! it against them.
//!
//! # Definitions
//!
//! Every count is over **pairs of records of different agencies** (cross-agency pairs): linking
//! a health record to a police record is what the partnership needs, so a within-agency
//! duplicate pair is counted neither as a true nor as a predicted pair.
//!
//! - **predicted pair**: two records of different agencies with the same `link_id` (and, with
//!   [`StatusFilter::Match`], both rows of status `match`);
//! - **true pair**: two records of different agencies with the same `entity_id`;
//! - **TP** = predicted ∧ true, **FP** = predicted − TP, **FN** = true − TP;
//! - **precision** = TP / predicted, **recall** = TP / true, **F1** = 2·TP / (2·TP + FP + FN)
//!   (the harmonic mean of precision and recall); each is `None` when its denominator is 0.
//!
//! These are reported overall and per agency pair (`education–health`: the names sorted).
//!
//! **Cluster exactness** = the share of true entities with at least two records whose records
//! are all in one link holding no record of anyone else. Within-agency duplicates count here
//! (the entity is exact only if its duplicate is in the link too), so the same share is also
//! given among entities with records in at least two agencies, whatever their duplicates.
//!
//! **Twins** (optional `twins.csv`: `entity_a,entity_b`): the pairs are joined into twin sets (a
//! set of triplets listed as three pairs is one set). Among predicted pairs whose two records
//! belong to entities of the same twin set — the same child, or two co-twins —
//! `twin_false_merges` are those joining two *different* co-twins, and **twin precision** =
//! 1 − false merges / those predicted pairs. **Twin recall** = correctly linked pairs of
//! twins' records (same child) / true pairs of twins' records.
//!
//! Pairs are never materialised: records are grouped (counting sort) by link and by entity,
//! and within a link by entity and by twin set; each group adds `nₐ·n_b` pairs for every two
//! agencies `a`, `b` with `nₐ`, `n_b` records in it. Time is linear in the number of records
//! and dominated by reading the files and looking up their ids.
//!
//! Errors name the file, line and column, never a record or entity id: record ids can be
//! personal data (an NHS number used as id).

use std::fs::File;
use std::hash::BuildHasher;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};

/// Header of a truth file.
pub const TRUTH_HEADER: [&str; 3] = ["entity_id", "agency", "record_id"];
/// Header of a link table.
pub const LINKS_HEADER: [&str; 5] = ["link_id", "agency", "record_id", "score", "status"];
/// Header of a twins file.
pub const TWINS_HEADER: [&str; 2] = ["entity_a", "entity_b"];
/// Most distinct agencies a truth file may name.
pub const MAX_AGENCIES: usize = 64;

/// "No link" / "no twin set".
const NONE: u32 = u32::MAX;

/// Which rows of the link table count as predicted links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Only rows of status `match` (the confident links).
    Match,
    /// Rows of status `match` and `review`.
    All,
}

/// A truth file: the true entity of every record.
#[derive(Debug)]
pub struct Truth {
    path: PathBuf,
    /// Agency names, sorted.
    agencies: Vec<String>,
    /// Per sorted agency: its tag in `records` (agencies are tagged in order of appearance).
    agency_tag: Vec<u8>,
    /// Per record: index into `agencies`.
    record_agency: Vec<u8>,
    /// Per record: entity index.
    record_entity: Vec<u32>,
    /// Entity ids; the id's index is the entity index.
    entities: Interner,
    /// (agency tag, record id); the index is the record index.
    records: Interner,
}

impl Truth {
    /// Reads a truth file (`entity_id,agency,record_id`, header required, one row per record).
    ///
    /// Refuses a missing or empty file, a wrong header, a row with empty fields or the wrong
    /// number of fields, more than [`MAX_AGENCIES`] agencies and a record listed twice.
    pub fn read(path: &Path) -> Result<Truth> {
        let mut csv = CsvFile::open(path, &TRUTH_HEADER)?;
        let mut agency_names: Vec<String> = Vec::new();
        let mut record_agency = Vec::new();
        let mut record_entity = Vec::new();
        let mut entities = Interner::default();
        let mut records = Interner::default();
        // Truth files usually list an entity's records together: look the entity up only when
        // it changes.
        let mut last_entity: Vec<u8> = Vec::new();
        let mut last_e = NONE;
        while csv.next_batch()? {
            if record_entity.is_empty() {
                let (rows, record_bytes) = csv.estimate(2, false);
                record_agency.reserve(rows);
                record_entity.reserve(rows);
                records.reserve(rows, record_bytes + rows);
                let (distinct, entity_bytes) = csv.estimate(0, true);
                entities.reserve(distinct, entity_bytes + distinct);
            }
            for k in 0..csv.filled {
                let (rec, line) = csv.row(k)?;
                let entity = csv.bytes(rec, 0, line, false)?;
                let agency = csv.text(rec, 1, line)?;
                let record = csv.bytes(rec, 2, line, false)?;
                let a = match agency_names.iter().position(|n| n == agency) {
                    Some(a) => a,
                    None if agency_names.len() == MAX_AGENCIES => {
                        return Err(too_many_agencies(path, line));
                    }
                    None => {
                        agency_names.push(agency.to_string());
                        agency_names.len() - 1
                    }
                };
                if records.insert(a as u8, record).is_err() {
                    let first = first_line(path, agency, record)?;
                    return Err(Error::input(
                        path,
                        format!(
                            "line {line}: the record (agency {agency}, column `record_id`) is \
                             listed twice, first on line {first}: a record belongs to one entity"
                        ),
                    ));
                }
                if last_e == NONE || entity != last_entity.as_slice() {
                    last_e = entities.insert(0, entity).unwrap_or_else(|e| e);
                    last_entity.clear();
                    last_entity.extend_from_slice(entity);
                }
                record_agency.push(a as u8);
                record_entity.push(last_e);
            }
        }
        if record_entity.is_empty() {
            return Err(Error::input(
                path,
                "has a header but no records: expected one row per record",
            ));
        }
        // Agencies in name order, so agency pairs and tables come out sorted.
        let mut order: Vec<usize> = (0..agency_names.len()).collect();
        order.sort_by(|&x, &y| agency_names[x].cmp(&agency_names[y]));
        let mut new_index = vec![0u8; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new as u8;
        }
        for a in &mut record_agency {
            *a = new_index[*a as usize];
        }
        Ok(Truth {
            path: path.to_path_buf(),
            agencies: order.iter().map(|&o| agency_names[o].clone()).collect(),
            agency_tag: order.iter().map(|&o| o as u8).collect(),
            record_agency,
            record_entity,
            entities,
            records,
        })
    }

    /// The record index of `record` of agency `a` (sorted index).
    fn record(&self, a: usize, record: &[u8]) -> Option<u32> {
        self.records.get(self.agency_tag[a], record)
    }

    /// Agency names, sorted.
    pub fn agencies(&self) -> &[String] {
        &self.agencies
    }

    /// Number of records.
    pub fn records(&self) -> usize {
        self.record_entity.len()
    }

    /// Number of entities.
    pub fn entities(&self) -> usize {
        self.entities.len()
    }

    fn agency_index(&self, name: &str) -> Option<usize> {
        self.agencies.iter().position(|a| a == name)
    }
}

fn too_many_agencies(path: &Path, line: u64) -> Error {
    Error::input(
        path,
        format!(
            "line {line}: more than {MAX_AGENCIES} different agencies: is the second column \
             `agency`?"
        ),
    )
}

/// A link table as read, before its records are looked up in a truth file (so it can be read
/// while the truth file is).
#[derive(Debug)]
pub struct LinkTable {
    path: PathBuf,
    /// Agency names in order of appearance, with the line of their first row.
    agencies: Vec<(String, u64)>,
    /// Per linked row (rows with an empty link id are left out): link index, agency index,
    /// status `review`, line, and record id in `records`.
    link: Vec<u32>,
    agency: Vec<u8>,
    review: Vec<bool>,
    line: Vec<u64>,
    records: Strings,
    /// Rows with an empty link id.
    unlinked_rows: u64,
}

impl LinkTable {
    /// Reads a link table (`link_id,agency,record_id,score,status`, header required). Rows with
    /// an empty `link_id` are unlinked records and are skipped; `status` must be `match` or
    /// `review`; `score` is not used.
    ///
    /// Refuses a missing or empty file, a wrong header, a row with the wrong number of fields,
    /// an empty agency or record id, or another status.
    pub fn read(path: &Path) -> Result<LinkTable> {
        let mut csv = CsvFile::open(path, &LINKS_HEADER)?;
        let mut t = LinkTable {
            path: path.to_path_buf(),
            agencies: Vec::new(),
            link: Vec::new(),
            agency: Vec::new(),
            review: Vec::new(),
            line: Vec::new(),
            records: Strings::default(),
            unlinked_rows: 0,
        };
        let mut link_ids = Interner::default();
        // Link tables usually list a link's records together: look the link up only when it
        // changes.
        let mut last_link: Vec<u8> = Vec::new();
        let mut last_l = NONE;
        let mut first = true;
        while csv.next_batch()? {
            if first {
                first = false;
                let (rows, record_bytes) = csv.estimate(2, false);
                t.link.reserve(rows);
                t.agency.reserve(rows);
                t.review.reserve(rows);
                t.line.reserve(rows);
                t.records.reserve(rows, record_bytes);
                let (distinct, link_bytes) = csv.estimate(0, true);
                link_ids.reserve(distinct, link_bytes + distinct);
            }
            for k in 0..csv.filled {
                let (rec, line) = csv.row(k)?;
                let link_id = &rec[0];
                if link_id.is_empty() {
                    t.unlinked_rows += 1;
                    continue;
                }
                let agency = csv.text(rec, 1, line)?;
                let record = csv.bytes(rec, 2, line, false)?;
                let review = match &rec[4] {
                    b"match" => false,
                    b"review" => true,
                    _ => {
                        return Err(Error::input(
                            path,
                            format!("line {line}, column `status`: expected `match` or `review`"),
                        ))
                    }
                };
                let a = match t.agencies.iter().position(|(n, _)| n == agency) {
                    Some(a) => a,
                    None if t.agencies.len() == MAX_AGENCIES => {
                        return Err(too_many_agencies(path, line));
                    }
                    None => {
                        t.agencies.push((agency.to_string(), line));
                        t.agencies.len() - 1
                    }
                };
                if last_l == NONE || link_id != last_link.as_slice() {
                    last_l = link_ids.insert(0, link_id).unwrap_or_else(|l| l);
                    last_link.clear();
                    last_link.extend_from_slice(link_id);
                }
                t.link.push(last_l);
                t.agency.push(a as u8);
                t.review.push(review);
                t.line.push(line);
                t.records.push(record);
            }
        }
        Ok(t)
    }

    /// Looks the records up in `truth`.
    ///
    /// Refuses an agency not in the truth file (naming it, with its first line, when it looks
    /// like an agency name), a record listed twice, and record ids not in the truth file (with
    /// their count and the first line).
    pub fn resolve(&self, truth: &Truth) -> Result<Links> {
        let mut agency = Vec::with_capacity(self.agencies.len());
        for (name, line) in &self.agencies {
            let Some(a) = truth.agency_index(name) else {
                let which = if looks_like_label(name) {
                    format!("agency `{name}`")
                } else {
                    "the agency (not shown: it does not look like an agency name)".to_string()
                };
                return Err(Error::input(
                    &self.path,
                    format!(
                        "line {line}: {which} is not in the truth file {} (its agencies: {})",
                        truth.path.display(),
                        truth.agencies.join(", ")
                    ),
                ));
            };
            agency.push(a);
        }
        // Read-only lookups: in parallel.
        let found: Vec<u32> = (0..self.link.len())
            .into_par_iter()
            .with_min_len(1 << 14)
            .map(|i| {
                truth
                    .record(agency[self.agency[i] as usize], self.records.get(i))
                    .unwrap_or(NONE)
            })
            .collect();
        let n = truth.records();
        let mut links = Links {
            link: vec![NONE; n],
            review: vec![false; n],
            linked_rows: self.link.len() as u64,
            unlinked_rows: self.unlinked_rows,
        };
        let (mut unknown, mut first_unknown) = (0u64, 0u64);
        for (i, &r) in found.iter().enumerate() {
            if r == NONE {
                unknown += 1;
                if first_unknown == 0 {
                    first_unknown = self.line[i];
                }
                continue;
            }
            let r = r as usize;
            if links.link[r] != NONE {
                let first = found.iter().position(|&f| f as usize == r).unwrap_or(i);
                return Err(Error::input(
                    &self.path,
                    format!(
                        "line {}: the record (agency {}, column `record_id`) is listed again, \
                         first on line {}: a record may be in one link only",
                        self.line[i],
                        truth.agencies[truth.record_agency[r] as usize],
                        self.line[first]
                    ),
                ));
            }
            links.link[r] = self.link[i];
            links.review[r] = self.review[i];
        }
        if unknown > 0 {
            return Err(Error::input(
                &self.path,
                format!(
                    "{unknown} row{} name a record id that is not in the truth file {} (first on \
                     line {first_unknown}): were the links made from the population of that \
                     truth file, and without --opaque-ids?",
                    if unknown == 1 { "" } else { "s" },
                    truth.path.display()
                ),
            ));
        }
        Ok(links)
    }
}

/// A link table read against a [`Truth`]: the link of each truth record.
#[derive(Debug)]
pub struct Links {
    /// Per truth record: link index, or `NONE`.
    link: Vec<u32>,
    /// Per truth record: the row's status is `review`.
    review: Vec<bool>,
    /// Rows with a link id.
    linked_rows: u64,
    /// Rows with an empty link id (unlinked records).
    unlinked_rows: u64,
}

impl Links {
    /// Reads a link table and looks its records up in `truth`: [`LinkTable::read`] then
    /// [`LinkTable::resolve`].
    pub fn read(path: &Path, truth: &Truth) -> Result<Links> {
        LinkTable::read(path)?.resolve(truth)
    }
}

/// Reads the truth file, the link table and the twins file. The truth file and the link table
/// are read at the same time, on two threads: they are independent until the link table's
/// records are looked up. Errors in the truth file are reported first.
pub fn read_inputs(
    truth: &Path,
    links: &Path,
    twins: Option<&Path>,
) -> Result<(Truth, Links, Option<Twins>)> {
    let (truth, table) = std::thread::scope(|s| {
        let table = s.spawn(|| LinkTable::read(links));
        (Truth::read(truth), table.join())
    });
    let truth = truth?;
    let table = table.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let twins = twins.map(|p| Twins::read(p, &truth)).transpose()?;
    let links = table.resolve(&truth)?;
    Ok((truth, links, twins))
}

/// Twin sets read against a [`Truth`].
#[derive(Debug)]
pub struct Twins {
    /// Per truth entity: twin set index, or `NONE`.
    set_of: Vec<u32>,
    /// Twin sets in the file (including those of children without records).
    sets: u64,
    /// Pair rows read.
    pairs: u64,
}

impl Twins {
    /// Reads a twins file (`entity_a,entity_b`, header required, one row per pair of entities
    /// born in the same multiple birth). Entities absent from the truth file (children without
    /// records) are allowed; a file none of whose entities is in the truth file is refused.
    pub fn read(path: &Path, truth: &Truth) -> Result<Twins> {
        let mut csv = CsvFile::open(path, &TWINS_HEADER)?;
        let n = truth.entities();
        // Union-find over truth entities, then entities known only from this file.
        let mut parent: Vec<u32> = (0..n as u32).collect();
        let mut extra = Interner::default();
        let mut pairs = 0u64;
        let mut in_truth = false;
        while csv.next_batch()? {
            for k in 0..csv.filled {
                let (rec, line) = csv.row(k)?;
                let a = csv.bytes(rec, 0, line, false)?;
                let b = csv.bytes(rec, 1, line, false)?;
                if a == b {
                    return Err(Error::input(
                        path,
                        format!("line {line}: `entity_a` and `entity_b` are the same entity"),
                    ));
                }
                let mut index = |id: &[u8]| match truth.entities.get(0, id) {
                    Some(e) => {
                        in_truth = true;
                        e
                    }
                    None => match extra.insert(0, id) {
                        Ok(x) => {
                            parent.push(parent.len() as u32);
                            debug_assert_eq!(parent.len(), n + x as usize + 1);
                            (n + x as usize) as u32
                        }
                        Err(x) => (n + x as usize) as u32,
                    },
                };
                let (x, y) = (index(a), index(b));
                let (rx, ry) = (find(&mut parent, x), find(&mut parent, y));
                if rx != ry {
                    parent[rx.max(ry) as usize] = rx.min(ry);
                }
                pairs += 1;
            }
        }
        if pairs > 0 && !in_truth {
            return Err(Error::input(
                path,
                format!(
                    "none of its entities is in the truth file {}: are both from the same \
                     population?",
                    truth.path.display()
                ),
            ));
        }
        // Every entity named in a pair is in a component of two or more: a twin set.
        let mut size = vec![0u32; parent.len()];
        for e in 0..parent.len() as u32 {
            size[find(&mut parent, e) as usize] += 1;
        }
        let mut set_of_root = vec![NONE; parent.len()];
        let mut sets = 0u64;
        let mut set_of = vec![NONE; parent.len()];
        for e in 0..parent.len() as u32 {
            let root = find(&mut parent, e) as usize;
            if size[root] < 2 {
                continue;
            }
            if set_of_root[root] == NONE {
                set_of_root[root] = sets as u32;
                sets += 1;
            }
            set_of[e as usize] = set_of_root[root];
        }
        // Entities known only from this file have no records.
        set_of.truncate(n);
        Ok(Twins {
            set_of,
            sets,
            pairs,
        })
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let up = parent[parent[x as usize] as usize];
        parent[x as usize] = up;
        x = up;
    }
    x
}

/// Pair counts and the measures derived from them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairMetrics {
    /// True pairs: records of different agencies with the same entity.
    pub true_pairs: u64,
    /// Predicted pairs: records of different agencies in the same link.
    pub predicted_pairs: u64,
    /// True positives: pairs both true and predicted.
    pub tp: u64,
    /// False positives: predicted pairs that are not true.
    pub fp: u64,
    /// False negatives: true pairs not predicted.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// TP / predicted pairs (`None` when nothing was predicted).
    pub precision: Option<f64>,
    /// TP / true pairs (`None` when there are no true pairs).
    pub recall: Option<f64>,
    /// 2·TP / (2·TP + FP + FN) (`None` when that is 0 / 0).
    pub f1: Option<f64>,
}

impl PairMetrics {
    fn new(true_pairs: u64, predicted_pairs: u64, tp: u64) -> Self {
        let (fp, fn_) = (predicted_pairs - tp, true_pairs - tp);
        PairMetrics {
            true_pairs,
            predicted_pairs,
            tp,
            fp,
            fn_,
            precision: ratio(tp, predicted_pairs),
            recall: ratio(tp, true_pairs),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// [`PairMetrics`] of one agency pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgencyPairMetrics {
    /// `a–b` with `a` < `b` (en dash).
    pub pair: String,
    /// The first agency (by name).
    pub agency_a: String,
    /// The second agency.
    pub agency_b: String,
    /// The counts and measures.
    #[serde(flatten)]
    pub metrics: PairMetrics,
}

/// Record and link counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordCounts {
    /// Records in the truth file.
    pub truth_records: u64,
    /// Entities in the truth file.
    pub entities: u64,
    /// Link-table rows with a link id.
    pub link_rows: u64,
    /// Link-table rows with an empty link id (unlinked records).
    pub unlinked_rows: u64,
    /// Rows of status `review` left out (with [`StatusFilter::Match`]).
    pub review_rows_left_out: u64,
    /// Records in an evaluated link.
    pub linked_records: u64,
    /// Distinct evaluated links.
    pub links: u64,
}

/// Cluster exactness (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterExactness {
    /// Entities with at least two records.
    pub entities: u64,
    /// Of those, entities whose records are all in one link holding nothing else.
    pub exact: u64,
    /// `exact / entities`.
    pub exactness: Option<f64>,
    /// Entities with records in at least two agencies.
    pub multi_agency_entities: u64,
    /// Of those, entities whose records are all in one link holding nothing else.
    pub multi_agency_exact: u64,
    /// `multi_agency_exact / multi_agency_entities`.
    pub multi_agency_exactness: Option<f64>,
}

/// Twin measures (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TwinMetrics {
    /// Pair rows in the twins file.
    pub twin_pairs_listed: u64,
    /// Twin sets (connected pairs joined: triplets are one set).
    pub twin_sets: u64,
    /// Truth entities belonging to a twin set.
    pub twin_entities_with_records: u64,
    /// Predicted cross-agency pairs whose records belong to entities of the same twin set.
    pub twin_pairs_predicted: u64,
    /// Of those, pairs joining two different co-twins (false merges).
    pub twin_false_merges: u64,
    /// 1 − false merges / twin pairs predicted.
    pub twin_precision: Option<f64>,
    /// True cross-agency pairs of twins' records (same child).
    pub twin_true_pairs: u64,
    /// Of those, pairs predicted.
    pub twin_correct_pairs: u64,
    /// `twin_correct_pairs / twin_true_pairs`.
    pub twin_recall: Option<f64>,
}

/// Everything [`evaluate`] measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Which link rows were evaluated.
    pub status: StatusFilter,
    /// Agency names, sorted.
    pub agencies: Vec<String>,
    /// Record and link counts.
    pub records: RecordCounts,
    /// Over all agency pairs.
    pub overall: PairMetrics,
    /// Per agency pair, in name order.
    pub agency_pairs: Vec<AgencyPairMetrics>,
    /// Cluster exactness.
    pub clusters: ClusterExactness,
    /// Twin measures, when a twins file was given.
    pub twins: Option<TwinMetrics>,
}

/// Measures `links` against `truth` (and `twins`), counting rows as `status` says.
pub fn evaluate(
    truth: &Truth,
    links: &Links,
    twins: Option<&Twins>,
    status: StatusFilter,
) -> Evaluation {
    let mut review_left_out = 0u64;
    // Links numbered in order of their first record: dense (review-only links drop out), and
    // visited in about record order when counting (truth files list an entity's records
    // together), not in the link table's order, which jumps across the records.
    let mut number: Vec<u32> = Vec::new();
    let mut links_seen = 0u32;
    let link: Vec<u32> = links
        .link
        .iter()
        .zip(&links.review)
        .map(|(&l, &rev)| {
            if l == NONE {
                return NONE;
            }
            if rev && status == StatusFilter::Match {
                review_left_out += 1;
                return NONE;
            }
            if number.len() <= l as usize {
                number.resize(l as usize + 1, NONE);
            }
            if number[l as usize] == NONE {
                number[l as usize] = links_seen;
                links_seen += 1;
            }
            number[l as usize]
        })
        .collect();
    let na = truth.agencies.len();
    let s = score(&Input {
        agencies: na,
        entities: truth.entities(),
        agency: &truth.record_agency,
        entity: &truth.record_entity,
        link: &link,
        twin_set: twins.map(|t| t.set_of.as_slice()),
    });
    let mut agency_pairs = Vec::new();
    for a in 0..na {
        for b in a + 1..na {
            let i = a * na + b;
            agency_pairs.push(AgencyPairMetrics {
                pair: format!("{}–{}", truth.agencies[a], truth.agencies[b]),
                agency_a: truth.agencies[a].clone(),
                agency_b: truth.agencies[b].clone(),
                metrics: PairMetrics::new(s.true_pairs[i], s.predicted[i], s.tp[i]),
            });
        }
    }
    let sum = |v: &[u64]| v.iter().sum::<u64>();
    let twins = twins.map(|t| {
        let (predicted, correct, true_pairs) = s.twins;
        TwinMetrics {
            twin_pairs_listed: t.pairs,
            twin_sets: t.sets,
            twin_entities_with_records: t.set_of.iter().filter(|&&x| x != NONE).count() as u64,
            twin_pairs_predicted: predicted,
            twin_false_merges: predicted - correct,
            twin_precision: ratio(correct, predicted),
            twin_true_pairs: true_pairs,
            twin_correct_pairs: correct,
            twin_recall: ratio(correct, true_pairs),
        }
    });
    Evaluation {
        status,
        agencies: truth.agencies.clone(),
        records: RecordCounts {
            truth_records: truth.records() as u64,
            entities: truth.entities() as u64,
            link_rows: links.linked_rows,
            unlinked_rows: links.unlinked_rows,
            review_rows_left_out: review_left_out,
            linked_records: s.linked_records,
            links: s.links,
        },
        overall: PairMetrics::new(sum(&s.true_pairs), sum(&s.predicted), sum(&s.tp)),
        agency_pairs,
        clusters: ClusterExactness {
            entities: s.eligible,
            exact: s.exact,
            exactness: ratio(s.exact, s.eligible),
            multi_agency_entities: s.multi_eligible,
            multi_agency_exact: s.multi_exact,
            multi_agency_exactness: ratio(s.multi_exact, s.multi_eligible),
        },
        twins,
    }
}

// ---------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------

/// The inputs reduced to numbers; one entry per record in `agency`, `entity`, `link`.
struct Input<'a> {
    agencies: usize,
    entities: usize,
    agency: &'a [u8],
    entity: &'a [u32],
    /// Link index or `NONE`.
    link: &'a [u32],
    /// Per entity: twin set or `NONE`.
    twin_set: Option<&'a [u32]>,
}

/// Raw counts; the pair matrices are `agencies × agencies`, filled above the diagonal.
#[derive(Debug, PartialEq, Eq)]
struct Scores {
    predicted: Vec<u64>,
    true_pairs: Vec<u64>,
    tp: Vec<u64>,
    linked_records: u64,
    links: u64,
    eligible: u64,
    exact: u64,
    multi_eligible: u64,
    multi_exact: u64,
    /// (twin pairs predicted, of which same entity, true twin pairs).
    twins: (u64, u64, u64),
}

fn score(x: &Input<'_>) -> Scores {
    let n = x.agency.len();
    let na = x.agencies;
    // Link indices need not be dense (review-only links are left out): size by the largest.
    let max_link = x
        .link
        .iter()
        .filter(|&&l| l != NONE)
        .map(|&l| l as usize + 1)
        .max()
        .unwrap_or(0);
    let by_link = Buckets::new(max_link, n, |r| x.link[r]);
    let by_entity = Buckets::new(x.entities, n, |r| x.entity[r]);
    let twin_set = |r: u32| {
        x.twin_set
            .map_or(NONE, |t| t[x.entity[r as usize] as usize])
    };
    let mut s = Scores {
        predicted: vec![0; na * na],
        true_pairs: vec![0; na * na],
        tp: vec![0; na * na],
        linked_records: 0,
        links: 0,
        eligible: 0,
        exact: 0,
        multi_eligible: 0,
        multi_exact: 0,
        twins: (0, 0, 0),
    };
    let mut twin_matrix = vec![0; na * na];
    let mut scratch: Vec<(u32, u8)> = Vec::new();
    let mut runs: Vec<(usize, u64)> = Vec::with_capacity(na);
    for records in by_link.iter() {
        if records.is_empty() {
            continue;
        }
        s.links += 1;
        s.linked_records += records.len() as u64;
        if records.len() < 2 {
            continue;
        }
        // Predicted pairs: the whole link is one group.
        scratch.clear();
        scratch.extend(records.iter().map(|&r| (0, x.agency[r as usize])));
        add_pairs(&mut scratch, &mut runs, &mut s.predicted, na);
        // True positives: groups of one entity within the link.
        scratch.clear();
        scratch.extend(
            records
                .iter()
                .map(|&r| (x.entity[r as usize], x.agency[r as usize])),
        );
        add_pairs(&mut scratch, &mut runs, &mut s.tp, na);
        if x.twin_set.is_some() {
            // Correct twin pairs: twin entities' groups within the link.
            scratch.retain(|&(e, _)| x.twin_set.is_some_and(|t| t[e as usize] != NONE));
            twin_matrix.fill(0);
            add_pairs(&mut scratch, &mut runs, &mut twin_matrix, na);
            s.twins.1 += twin_matrix.iter().sum::<u64>();
            // Predicted twin pairs: groups of one twin set within the link.
            scratch.clear();
            scratch.extend(
                records
                    .iter()
                    .map(|&r| (twin_set(r), x.agency[r as usize]))
                    .filter(|&(t, _)| t != NONE),
            );
            twin_matrix.fill(0);
            add_pairs(&mut scratch, &mut runs, &mut twin_matrix, na);
            s.twins.0 += twin_matrix.iter().sum::<u64>();
        }
    }
    for (e, records) in by_entity.iter().enumerate() {
        if records.len() < 2 {
            continue;
        }
        scratch.clear();
        scratch.extend(records.iter().map(|&r| (0, x.agency[r as usize])));
        if x.twin_set.is_some_and(|t| t[e] != NONE) {
            twin_matrix.fill(0);
            add_pairs(&mut scratch, &mut runs, &mut twin_matrix, na);
            s.twins.2 += twin_matrix.iter().sum::<u64>();
            for (t, m) in s.true_pairs.iter_mut().zip(&twin_matrix) {
                *t += m;
            }
        } else {
            add_pairs(&mut scratch, &mut runs, &mut s.true_pairs, na);
        }
        // Exact: every record in the same link, which holds nothing else.
        let l = x.link[records[0] as usize];
        let exact = l != NONE
            && records.iter().all(|&r| x.link[r as usize] == l)
            && by_link.get(l as usize).len() == records.len();
        let agency = x.agency[records[0] as usize];
        let multi = records.iter().any(|&r| x.agency[r as usize] != agency);
        s.eligible += 1;
        s.exact += u64::from(exact);
        s.multi_eligible += u64::from(multi);
        s.multi_exact += u64::from(multi && exact);
    }
    s
}

/// Record indices grouped by a dense key (a counting sort): `get(k)` are the records with key
/// `k`, in record order. Records whose key is `NONE` are left out.
struct Buckets {
    start: Vec<u32>,
    order: Vec<u32>,
}

impl Buckets {
    fn new(keys: usize, records: usize, key: impl Fn(usize) -> u32) -> Buckets {
        let mut start = vec![0u32; keys + 1];
        for r in 0..records {
            let k = key(r);
            if k != NONE {
                start[k as usize + 1] += 1;
            }
        }
        for k in 0..keys {
            start[k + 1] += start[k];
        }
        let mut next = start.clone();
        let mut order = vec![0u32; start[keys] as usize];
        for r in 0..records {
            let k = key(r);
            if k != NONE {
                order[next[k as usize] as usize] = r as u32;
                next[k as usize] += 1;
            }
        }
        Buckets { start, order }
    }

    fn get(&self, k: usize) -> &[u32] {
        &self.order[self.start[k] as usize..self.start[k + 1] as usize]
    }

    fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        (0..self.start.len() - 1).map(|k| self.get(k))
    }
}

/// Adds to `matrix` (`agencies × agencies`, above the diagonal) the cross-agency pairs of
/// records sharing a group key: `items` are `(group, agency)`; a group with `nₐ` and `n_b`
/// records of agencies `a` < `b` adds `nₐ·n_b` pairs at `(a, b)`.
fn add_pairs(
    items: &mut [(u32, u8)],
    runs: &mut Vec<(usize, u64)>,
    matrix: &mut [u64],
    agencies: usize,
) {
    items.sort_unstable();
    let mut i = 0;
    while i < items.len() {
        let group = items[i].0;
        // (agency, records) of this group; agencies ascend.
        runs.clear();
        while i < items.len() && items[i].0 == group {
            let a = usize::from(items[i].1);
            match runs.last_mut() {
                Some((b, c)) if *b == a => *c += 1,
                _ => runs.push((a, 1)),
            }
            i += 1;
        }
        for (p, &(a, ca)) in runs.iter().enumerate() {
            for &(b, cb) in &runs[p + 1..] {
                matrix[a * agencies + b] += ca * cb;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// CSV reading
// ---------------------------------------------------------------------------

/// A CSV file with a fixed header, read in batches of reused records with their line numbers;
/// the first batch also sizes the readers' tables (see [`CsvFile::estimate`]).
struct CsvFile<'p> {
    path: &'p Path,
    /// File size in bytes.
    len: u64,
    header: &'static [&'static str],
    rdr: csv::Reader<BufReader<File>>,
    /// The current batch: `rows[..filled]`, starting on `lines[k]`.
    rows: Vec<csv::ByteRecord>,
    lines: Vec<u64>,
    filled: usize,
    /// A read error met after the current batch's rows, reported after them.
    pending: Option<Error>,
}

/// Rows per batch.
const BATCH_ROWS: usize = 1024;

impl<'p> CsvFile<'p> {
    fn open(path: &'p Path, header: &'static [&'static str]) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let expected = header.join(",");
        let empty = || {
            Error::input(
                path,
                format!("is empty: expected the header `{expected}` and one row per record"),
            )
        };
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Err(empty());
        }
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(1 << 20)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let mut first = csv::ByteRecord::new();
        if !rdr
            .read_byte_record(&mut first)
            .map_err(|e| csv_error(path, e))?
        {
            return Err(empty());
        }
        let found: Vec<String> = first
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = if i == 0 {
                    h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h)
                } else {
                    h
                };
                String::from_utf8_lossy(h).trim().to_string()
            })
            .collect();
        if found != header {
            // A "header" with digits is probably a data row: do not echo it.
            let problem = if found.iter().any(|h| h.bytes().any(|b| b.is_ascii_digit())) {
                format!("line 1 looks like data, not the header `{expected}`: add the header row")
            } else {
                let shown: Vec<String> = found
                    .iter()
                    .map(|h| h.chars().take(40).collect::<String>())
                    .collect();
                format!(
                    "line 1: the header is `{}`, expected `{expected}`",
                    shown.join(",")
                )
            };
            return Err(Error::input(path, problem));
        }
        Ok(CsvFile {
            path,
            len,
            header,
            rdr,
            rows: Vec::new(),
            lines: Vec::new(),
            filled: 0,
            pending: None,
        })
    }

    /// Reads the next batch of rows; `false` at the end of the file.
    fn next_batch(&mut self) -> Result<bool> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        self.filled = 0;
        self.lines.clear();
        while self.filled < BATCH_ROWS {
            if self.rows.len() == self.filled {
                self.rows.push(csv::ByteRecord::new());
            }
            match self.rdr.read_byte_record(&mut self.rows[self.filled]) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.pending = Some(csv_error(self.path, e));
                    break;
                }
            }
            let line = self.rows[self.filled].position().map_or(0, |p| p.line());
            self.lines.push(line);
            self.filled += 1;
        }
        if self.filled == 0 {
            if let Some(e) = self.pending.take() {
                return Err(e);
            }
        }
        Ok(self.filled > 0)
    }

    /// Row `k` of the batch and its line, its number of fields checked.
    fn row(&self, k: usize) -> Result<(&csv::ByteRecord, u64)> {
        let (rec, line) = (&self.rows[k], self.lines[k]);
        if rec.len() != self.header.len() {
            return Err(Error::input(
                self.path,
                format!(
                    "line {line}: has {} fields, expected {} (`{}`)",
                    rec.len(),
                    self.header.len(),
                    self.header.join(",")
                ),
            ));
        }
        Ok((rec, line))
    }

    /// Extrapolates from the current (first) batch to the whole file, by bytes read: the number
    /// of rows (or of runs of equal values in column `col` when `runs`) and the bytes of column
    /// `col` in those rows. For sizing tables once.
    fn estimate(&self, col: usize, runs: bool) -> (usize, usize) {
        let (mut count, mut bytes) = (0usize, 0usize);
        for k in 0..self.filled {
            let value = self.rows[k].get(col);
            if !runs || k == 0 || value != self.rows[k - 1].get(col) {
                count += 1;
                bytes += value.map_or(0, <[u8]>::len);
            }
        }
        let scale = self.len as f64 / self.rdr.position().byte().max(1) as f64 * 1.05;
        let grow = |n: usize| (n as f64 * scale) as usize + 16;
        (grow(count), grow(bytes))
    }

    /// Field `i` of `rec`; refused when empty unless `may_be_empty`.
    fn bytes<'r>(
        &self,
        rec: &'r csv::ByteRecord,
        i: usize,
        line: u64,
        may_be_empty: bool,
    ) -> Result<&'r [u8]> {
        let b = &rec[i];
        if b.is_empty() && !may_be_empty {
            return Err(Error::input(
                self.path,
                format!("line {line}, column `{}`: is empty", self.header[i]),
            ));
        }
        Ok(b)
    }

    /// Field `i` of `rec` as text; refused when empty.
    fn text<'r>(&self, rec: &'r csv::ByteRecord, i: usize, line: u64) -> Result<&'r str> {
        std::str::from_utf8(self.bytes(rec, i, line, false)?).map_err(|_| {
            Error::input(
                self.path,
                format!("line {line}, column `{}`: not valid UTF-8", self.header[i]),
            )
        })
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::Io(_) => Error::input(path, format!("read failed: {e}")),
        _ => Error::input(path, format!("line {line}: not valid CSV: {e}")),
    }
}

/// The line of the first row of the truth file `path` naming `record` of `agency`. Only for
/// error messages: reading keeps no line numbers.
fn first_line(path: &Path, agency: &str, record: &[u8]) -> Result<u64> {
    let mut csv = CsvFile::open(path, &TRUTH_HEADER)?;
    while csv.next_batch()? {
        for k in 0..csv.filled {
            let (rec, line) = csv.row(k)?;
            if &rec[1] == agency.as_bytes() && &rec[2] == record {
                return Ok(line);
            }
        }
    }
    Ok(0)
}

/// Byte strings in one arena: no allocation per string.
#[derive(Debug, Default)]
struct Strings {
    text: Vec<u8>,
    /// End of each string in `text`.
    ends: Vec<usize>,
}

impl Strings {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    fn push(&mut self, s: &[u8]) {
        self.text.extend_from_slice(s);
        self.ends.push(self.text.len());
    }

    fn reserve(&mut self, strings: usize, bytes: usize) {
        self.text.reserve(bytes.saturating_sub(self.text.len()));
        self.ends.reserve(strings.saturating_sub(self.len()));
    }
}

/// Byte strings, each with a small tag (the agency), numbered in order of insertion and found
/// through an open-addressing table of integers: millions of ids cost no allocation each, and
/// a lookup about two cache misses.
#[derive(Debug, Default)]
struct Interner {
    hasher: foldhash::fast::RandomState,
    /// Each string's tag, then its bytes.
    strings: Strings,
    /// Linear probing: (high half of the hash, index + 1); `(_, 0)` is empty. At most half full.
    slots: Vec<(u32, u32)>,
}

impl Interner {
    fn len(&self) -> usize {
        self.strings.len()
    }

    fn hash(&self, tag: u8, s: &[u8]) -> u64 {
        self.hasher.hash_one((tag, s))
    }

    /// `(tag, s)`'s index, or the empty slot where it belongs.
    fn locate(&self, hash: u64, tag: u8, s: &[u8]) -> Result<u32, usize> {
        let mask = self.slots.len() - 1;
        let fragment = (hash >> 32) as u32;
        let mut i = hash as usize & mask;
        loop {
            let (f, id) = self.slots[i];
            if id == 0 {
                return Err(i);
            }
            if f == fragment {
                let stored = self.strings.get((id - 1) as usize);
                if stored[0] == tag && &stored[1..] == s {
                    return Ok(id - 1);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// The index of `(tag, s)`.
    fn get(&self, tag: u8, s: &[u8]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        self.locate(self.hash(tag, s), tag, s).ok()
    }

    /// Adds `(tag, s)`: `Ok(new index)`, or `Err(index)` when it is already there.
    fn insert(&mut self, tag: u8, s: &[u8]) -> Result<u32, u32> {
        if 2 * (self.len() + 1) > self.slots.len() {
            self.rebuild((self.slots.len() * 2).max(1024));
        }
        let hash = self.hash(tag, s);
        let slot = match self.locate(hash, tag, s) {
            Ok(id) => return Err(id),
            Err(slot) => slot,
        };
        let id = self.len() as u32;
        self.strings.text.push(tag);
        self.strings.push(s);
        self.slots[slot] = ((hash >> 32) as u32, id + 1);
        Ok(id)
    }

    /// Makes room for `strings` strings of `bytes` bytes in all (tags included).
    fn reserve(&mut self, strings: usize, bytes: usize) {
        self.strings.reserve(strings, bytes);
        let size = (2 * strings).next_power_of_two();
        if size > self.slots.len() {
            self.rebuild(size);
        }
    }

    fn rebuild(&mut self, size: usize) {
        self.slots = vec![(0, 0); size];
        let mask = size - 1;
        for k in 0..self.len() {
            let stored = self.strings.get(k);
            let hash = self.hash(stored[0], &stored[1..]);
            let mut i = hash as usize & mask;
            while self.slots[i].1 != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = ((hash >> 32) as u32, k as u32 + 1);
        }
    }
}

/// Whether a value may be shown in a message as an agency name: letters, `-`, `_` and spaces
/// only (record ids and NHS numbers hold digits).
fn looks_like_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_' || b == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Brute force over every pair of records.
    fn brute(x: &Input<'_>) -> Scores {
        let n = x.agency.len();
        let na = x.agencies;
        let mut s = Scores {
            predicted: vec![0; na * na],
            true_pairs: vec![0; na * na],
            tp: vec![0; na * na],
            linked_records: x.link.iter().filter(|&&l| l != NONE).count() as u64,
            links: {
                let mut l: Vec<u32> = x.link.iter().copied().filter(|&l| l != NONE).collect();
                l.sort_unstable();
                l.dedup();
                l.len() as u64
            },
            eligible: 0,
            exact: 0,
            multi_eligible: 0,
            multi_exact: 0,
            twins: (0, 0, 0),
        };
        let set = |r: usize| x.twin_set.map_or(NONE, |t| t[x.entity[r] as usize]);
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (x.agency[i], x.agency[j]);
                if a == b {
                    continue;
                }
                let m = usize::from(a.min(b)) * na + usize::from(a.max(b));
                let same_link = x.link[i] != NONE && x.link[i] == x.link[j];
                let same_entity = x.entity[i] == x.entity[j];
                s.predicted[m] += u64::from(same_link);
                s.true_pairs[m] += u64::from(same_entity);
                s.tp[m] += u64::from(same_link && same_entity);
                let twin = set(i) != NONE && set(i) == set(j);
                s.twins.0 += u64::from(twin && same_link);
                s.twins.1 += u64::from(twin && same_link && same_entity);
                s.twins.2 += u64::from(twin && same_entity);
            }
        }
        for e in 0..x.entities as u32 {
            let mine: Vec<usize> = (0..n).filter(|&r| x.entity[r] == e).collect();
            if mine.len() < 2 {
                continue;
            }
            let l = x.link[mine[0]];
            let exact = l != NONE
                && mine.iter().all(|&r| x.link[r] == l)
                && (0..n).all(|r| x.link[r] != l || x.entity[r] == e);
            let multi = mine.iter().any(|&r| x.agency[r] != x.agency[mine[0]]);
            s.eligible += 1;
            s.exact += u64::from(exact);
            s.multi_eligible += u64::from(multi);
            s.multi_exact += u64::from(multi && exact);
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn counting_equals_brute_force(
            agencies in 1usize..5,
            entities in 1usize..8,
            links in 1u32..6,
            rows in proptest::collection::vec((0u8..8, 0u32..64, 0u32..8), 0..40),
            twin_sets in proptest::collection::vec(0u32..4, 8),
        ) {
            let agency: Vec<u8> = rows.iter().map(|r| r.0 % agencies as u8).collect();
            let entity: Vec<u32> = rows.iter().map(|r| r.1 % entities as u32).collect();
            // About one record in four unlinked.
            let link: Vec<u32> = rows
                .iter()
                .map(|r| if r.2 % 4 == 3 { NONE } else { r.2 % links })
                .collect();
            // Twin sets 0 and 1; entities drawing 2 or 3 are not twins.
            let set: Vec<u32> = twin_sets[..entities]
                .iter()
                .map(|&s| if s < 2 { s } else { NONE })
                .collect();
            let input = Input {
                agencies,
                entities,
                agency: &agency,
                entity: &entity,
                link: &link,
                twin_set: Some(&set),
            };
            prop_assert_eq!(score(&input), brute(&input));
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn agencies_sorted_and_remapped() {
        let dir = tempfile::tempdir().unwrap();
        let t = write(
            dir.path(),
            "t.csv",
            "\u{feff}entity_id,agency,record_id\nE1,police,P1\nE1,health,H1\nE2,education,X\n",
        );
        let truth = Truth::read(&t).unwrap();
        assert_eq!(truth.agencies(), ["education", "health", "police"]);
        assert_eq!(truth.record_agency, [2, 1, 0]);
        assert_eq!(truth.record(2, b"P1"), Some(0));
        assert_eq!(truth.record(0, b"X"), Some(2));
        assert_eq!(truth.record(1, b"P1"), None);
    }

    #[test]
    fn interner_finds_what_it_holds() {
        let mut t = Interner::default();
        let id = |i: u32| format!("R{}", i * 7919 % 100_003).into_bytes();
        for i in 0..20_000u32 {
            assert_eq!(t.insert((i % 3) as u8, &id(i)), Ok(i), "{i}");
        }
        for i in 0..20_000u32 {
            assert_eq!(t.get((i % 3) as u8, &id(i)), Some(i));
            assert_eq!(t.insert((i % 3) as u8, &id(i)), Err(i));
            // The same id under another tag is another string.
            assert_eq!(t.get((i % 3 + 1) as u8, &id(i)), None);
        }
        assert_eq!(t.get(0, b""), None);
        assert_eq!(t.insert(0, b""), Ok(20_000));
        assert_eq!(Interner::default().get(0, b"x"), None);
        assert_eq!(t.len(), 20_001);
    }

    #[test]
    fn triplets_are_one_twin_set() {
        let dir = tempfile::tempdir().unwrap();
        let t = write(
            dir.path(),
            "t.csv",
            "entity_id,agency,record_id\nA,h,1\nB,h,2\nC,h,3\nD,h,4\nE,h,5\n",
        );
        let truth = Truth::read(&t).unwrap();
        let w = write(
            dir.path(),
            "w.csv",
            "entity_a,entity_b\nA,B\nA,C\nB,C\nD,Z\nY,X\n",
        );
        let twins = Twins::read(&w, &truth).unwrap();
        assert_eq!(twins.sets, 3);
        assert_eq!(twins.pairs, 5);
        let s = &twins.set_of;
        assert!(s[0] != NONE && s[0] == s[1] && s[1] == s[2]);
        assert!(s[3] != NONE && s[3] != s[0]);
        assert_eq!(s[4], NONE);
    }
}
