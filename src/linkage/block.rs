//! Candidate pairs: which pairs of records are worth scoring.
//!
//! Small jobs compare every cross-agency pair (with the SIMD Dice kernels and a low similarity
//! floor). Large jobs block on the keyed exact tokens: records sharing a token (same hashed NHS
//! number, same year of birth and family-name code, …) become candidates. Blocks larger than
//! `max_block` records are skipped (a token shared by thousands says little) and counted in the
//! report. Pairs are streamed, never all held in memory: a pair in several blocks is visited only
//! in the block of the smallest key its two records share, so each is visited exactly once.

use rayon::prelude::*;
use serde::Serialize;

use super::Inputs;
use crate::similarity::{self, Kernel};

/// How candidates are generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Exhaustive when the number of cross pairs is at most `exhaustive_limit`, else blocking.
    Auto,
    /// Every cross pair above the Dice floor.
    Exhaustive,
    /// Keyed-token blocks only.
    Blocking,
}

/// Options for [`candidates`].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BlockOptions {
    /// Generation method.
    pub method: Method,
    /// Largest job (cross pairs) compared exhaustively under [`Method::Auto`].
    pub exhaustive_limit: u64,
    /// Blocks with more records than this are skipped.
    pub max_block: usize,
    /// Pairs whose whole-filter Dice is below this are dropped (unless they share an
    /// identifier token).
    pub dice_floor: f32,
    /// Also pair records of the same input file (deduplication).
    pub within_files: bool,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            method: Method::Auto,
            exhaustive_limit: 200_000_000,
            max_block: 500,
            dice_floor: 0.4,
            within_files: false,
        }
    }
}

/// How candidate pairs were found (for the report).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Candidates {
    /// Whether all pairs were compared.
    pub exhaustive: bool,
    /// Filter comparisons made while generating (exhaustive) or distinct pairs proposed by
    /// blocks.
    pub comparisons: u64,
    /// Blocks used, per token kind.
    pub blocks_used: Vec<(String, u64)>,
    /// Blocks skipped as too large, per token kind.
    pub blocks_skipped: Vec<(String, u64)>,
}

fn cross_pairs(inputs: &Inputs, within: bool) -> u64 {
    let sizes: Vec<u64> = inputs.files().iter().map(|f| f.len() as u64).collect();
    let mut total = 0u64;
    for i in 0..sizes.len() {
        if within {
            total += sizes[i] * sizes[i].saturating_sub(1) / 2;
        }
        for j in i + 1..sizes.len() {
            total += sizes[i] * sizes[j];
        }
    }
    total
}

fn totals(f: &crate::format::EncodingFile) -> Vec<u32> {
    let k = 1 + f.header().segments.len();
    f.popcounts()
        .chunks_exact(k)
        .map(|p| u32::from(p[0]))
        .collect()
}

/// Pairs per unit of work when scanning exhaustive pairs.
const SCAN_CHUNK: usize = 4096;

/// A plan for visiting the candidate pairs of a job. Pairs are never all held in memory at once:
/// [`Plan::scan`] streams them to a visitor, tile by tile or block by block, each pair exactly
/// once. The matcher scans twice (once to count comparison patterns, once to keep the pairs
/// that matter), which costs a little time and saves gigabytes at national scale.
pub struct Plan<'a> {
    inputs: &'a Inputs,
    opts: BlockOptions,
    kernel: Kernel,
    stats: Candidates,
    /// Exhaustive: the pairs above the Dice floor (small jobs only, so they fit in memory).
    pairs: Vec<(u32, u32)>,
    /// Blocking: (key, global id) sorted, and the ranges of it that are blocks.
    entries: Vec<(u64, u32)>,
    blocks: Vec<(u32, u32)>,
    /// Blocking: each record's keys that form used blocks, sorted (CSR by global id). A pair is
    /// visited only in the block of the smallest key its two records share, so it is visited
    /// once however many blocks it is in.
    key_offsets: Vec<u32>,
    keys: Vec<u64>,
}

impl<'a> Plan<'a> {
    /// Plans candidate generation for the inputs.
    pub fn new(inputs: &'a Inputs, opts: &BlockOptions, kernel: Kernel) -> Plan<'a> {
        let exhaustive = match opts.method {
            Method::Exhaustive => true,
            Method::Blocking => false,
            Method::Auto => cross_pairs(inputs, opts.within_files) <= opts.exhaustive_limit,
        };
        let mut plan = Plan {
            inputs,
            opts: *opts,
            kernel,
            stats: Candidates {
                exhaustive,
                ..Default::default()
            },
            pairs: Vec::new(),
            entries: Vec::new(),
            blocks: Vec::new(),
            key_offsets: Vec::new(),
            keys: Vec::new(),
        };
        if exhaustive {
            plan.plan_exhaustive();
        } else {
            plan.plan_blocks();
        }
        plan
    }

    /// How candidates are found, and how many.
    pub fn stats(&self) -> &Candidates {
        &self.stats
    }

    fn plan_exhaustive(&mut self) {
        let inputs = self.inputs;
        let files = inputs.files();
        let words = files[0].header().words();
        let pops: Vec<Vec<u32>> = files.iter().map(totals).collect();
        // Split the left side into chunks so both cores work on every file pair.
        const CHUNK: usize = 2048;
        let mut tiles = Vec::new();
        for i in 0..files.len() {
            let rights = (if self.opts.within_files { i } else { i + 1 })..files.len();
            for j in rights {
                for start in (0..files[i].len()).step_by(CHUNK) {
                    let end = (start + CHUNK).min(files[i].len());
                    tiles.push((i, j, start, end));
                    self.stats.comparisons += ((end - start) * files[j].len()) as u64;
                }
            }
        }
        let (kernel, floor) = (self.kernel, self.opts.dice_floor);
        let mut pairs: Vec<(u32, u32)> = tiles
            .par_iter()
            .flat_map_iter(|&(i, j, s, e)| {
                let mut out = Vec::new();
                similarity::all_pairs_above(
                    kernel,
                    &files[i].filters()[s * words..e * words],
                    &pops[i][s..e],
                    files[j].filters(),
                    &pops[j],
                    words,
                    floor,
                    |x, y, _| {
                        let gx = inputs.global(super::RecordRef {
                            file: i as u32,
                            row: (s + x) as u32,
                        });
                        let gy = inputs.global(super::RecordRef {
                            file: j as u32,
                            row: y as u32,
                        });
                        if gx != gy && (i != j || gx < gy) {
                            out.push((gx.min(gy), gx.max(gy)));
                        }
                    },
                );
                out
            })
            .collect();
        pairs.par_sort_unstable();
        pairs.dedup();
        self.pairs = pairs;
    }

    fn plan_blocks(&mut self) {
        let inputs = self.inputs;
        let files = inputs.files();
        let kinds = files[0].header().token_kinds.clone();
        // (token, global id) for every token of every record, sorted: runs are blocks.
        let mut entries: Vec<(u64, u32)> = files
            .par_iter()
            .enumerate()
            .flat_map_iter(|(fi, f)| {
                (0..f.len()).flat_map(move |r| {
                    let g = inputs.global(super::RecordRef {
                        file: fi as u32,
                        row: r as u32,
                    });
                    f.tokens_of(r).iter().map(move |&t| (t, g))
                })
            })
            .collect();
        entries.par_sort_unstable();
        let mut used = vec![0u64; kinds.len()];
        let mut skipped = vec![0u64; kinds.len()];
        let mut start = 0usize;
        for run in entries.chunk_by(|a, b| a.0 == b.0) {
            let range = (start as u32, (start + run.len()) as u32);
            start += run.len();
            if run.len() < 2 {
                continue;
            }
            let kind = crate::tokens::token_kind(run[0].0).min(kinds.len().saturating_sub(1));
            if run.len() > self.opts.max_block {
                skipped[kind] += 1;
                continue;
            }
            used[kind] += 1;
            self.blocks.push(range);
        }
        // Each record's keys of used blocks.
        let mut per_record: Vec<u32> = vec![0; inputs.total() + 1];
        for &(s, e) in &self.blocks {
            for &(_, g) in &entries[s as usize..e as usize] {
                per_record[g as usize + 1] += 1;
            }
        }
        for i in 1..per_record.len() {
            per_record[i] += per_record[i - 1];
        }
        let mut fill = per_record.clone();
        let mut keys = vec![0u64; *per_record.last().unwrap_or(&0) as usize];
        for &(s, e) in &self.blocks {
            for &(t, g) in &entries[s as usize..e as usize] {
                keys[fill[g as usize] as usize] = t;
                fill[g as usize] += 1;
            }
        }
        // Blocks were visited in key order, so each record's keys are already sorted.
        self.key_offsets = per_record;
        self.keys = keys;
        self.entries = entries;
        let named = |v: Vec<u64>| kinds.iter().cloned().zip(v).collect();
        self.stats.blocks_used = named(used);
        self.stats.blocks_skipped = named(skipped);
        let mut proposed = 0u64;
        for &(s, e) in &self.blocks {
            let n = u64::from(e - s);
            proposed += n * (n - 1) / 2;
        }
        self.stats.comparisons = proposed;
    }

    fn keys_of(&self, g: u32) -> &[u64] {
        &self.keys[self.key_offsets[g as usize] as usize..self.key_offsets[g as usize + 1] as usize]
    }

    /// How many of the units [`Plan::scan`] works through (blocks, or chunks of exhaustive
    /// pairs) a sample of one in `every` keeps, as a share of all candidate pairs (by the
    /// pairs each unit proposes). 1.0 when `every` is 1.
    pub fn sample_share(&self, every: u64) -> f64 {
        if every <= 1 {
            return 1.0;
        }
        if self.stats.exhaustive {
            let kept = self
                .pairs
                .chunks(SCAN_CHUNK)
                .enumerate()
                .filter(|(i, _)| (*i as u64).is_multiple_of(every))
                .map(|(_, c)| c.len() as u64)
                .sum::<u64>();
            return kept as f64 / self.pairs.len().max(1) as f64;
        }
        let (mut kept, mut all) = (0u64, 0u64);
        for &(s, e) in &self.blocks {
            let n = u64::from(e - s);
            all += n * (n - 1) / 2;
            if self.entries[s as usize].0.is_multiple_of(every) {
                kept += n * (n - 1) / 2;
            }
        }
        kept as f64 / all.max(1) as f64
    }

    /// Candidate pairs proposed before deduplication (an upper bound on the distinct pairs).
    pub fn proposed(&self) -> u64 {
        if self.stats.exhaustive {
            self.pairs.len() as u64
        } else {
            self.stats.comparisons
        }
    }

    /// Visits every candidate pair `(a, b)` (a < b by global id) exactly once, in parallel,
    /// or, with `every` > 1, only those of a deterministic sample of one in `every` blocks (or
    /// chunks). `prepare` gathers what the visitor needs of a record (once per block member);
    /// `visit` folds pairs into per-task accumulators made by `identity`, which `reduce` joins.
    /// The visiting order varies with the thread count, so the result must not depend on it
    /// (sums, or collections sorted afterwards).
    pub fn scan<A, T, I, P, V, R>(
        &self,
        every: u64,
        identity: I,
        prepare: P,
        visit: V,
        reduce: R,
    ) -> A
    where
        A: Send,
        T: Send,
        I: Fn() -> A + Sync + Send,
        P: Fn(u32) -> T + Sync + Send,
        V: Fn(&mut A, &T, &T) + Sync + Send,
        R: Fn(A, A) -> A + Sync + Send,
    {
        let inputs = self.inputs;
        let every = every.max(1);
        if self.stats.exhaustive {
            return self
                .pairs
                .par_chunks(SCAN_CHUNK)
                .enumerate()
                .filter(|(i, _)| (*i as u64).is_multiple_of(every))
                .fold(&identity, |mut acc, (_, chunk)| {
                    for &(a, b) in chunk {
                        visit(&mut acc, &prepare(a), &prepare(b));
                    }
                    acc
                })
                .reduce(&identity, &reduce);
        }
        let within = self.opts.within_files;
        self.blocks
            .par_iter()
            .filter(|&&(s, _)| self.entries[s as usize].0.is_multiple_of(every))
            .fold(
                || (identity(), Vec::new()),
                |(mut acc, mut members), &(s, e)| {
                    let run = &self.entries[s as usize..e as usize];
                    let key = run[0].0;
                    members.clear();
                    members.extend(run.iter().map(|&(_, g)| {
                        let keys = self.keys_of(g);
                        (g, inputs.file_of(g), keys, prepare(g))
                    }));
                    for (x, (a, fa, ka, ta)) in members.iter().enumerate() {
                        for (b, fb, kb, tb) in &members[x + 1..] {
                            if a == b || (!within && fa == fb) {
                                continue;
                            }
                            if first_shared(ka, kb) != Some(key) {
                                continue;
                            }
                            if a < b {
                                visit(&mut acc, ta, tb);
                            } else {
                                visit(&mut acc, tb, ta);
                            }
                        }
                    }
                    (acc, members)
                },
            )
            .map(|(acc, _)| acc)
            .reduce(&identity, &reduce)
    }
}

/// The smallest key two records share (both lists sorted).
#[inline]
fn first_shared(x: &[u64], y: &[u64]) -> Option<u64> {
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some(x[i]),
        }
    }
    None
}
