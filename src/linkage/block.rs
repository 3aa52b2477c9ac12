//! Candidate pairs: which pairs of records are worth scoring.
//!
//! Small jobs compare every cross-agency pair (with the SIMD Dice kernels and a low similarity
//! floor). Large jobs block on the keyed exact tokens: records sharing a token (same hashed NHS
//! number, same year of birth and family-name code, …) become candidates. Blocks larger than
//! `max_block` records are skipped (a token shared by thousands says little) and counted in the
//! report. Pairs are deduplicated and sorted, so the result does not depend on thread count.

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

/// Candidate pairs and how they were found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Candidates {
    /// Pairs of global record ids (a < b), sorted and unique.
    #[serde(skip)]
    pub pairs: Vec<(u32, u32)>,
    /// Whether all pairs were compared.
    pub exhaustive: bool,
    /// Filter comparisons made while generating (exhaustive) or pairs proposed by blocks.
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

/// Proposes candidate pairs.
pub fn candidates(inputs: &Inputs, opts: &BlockOptions, kernel: Kernel) -> Candidates {
    let exhaustive = match opts.method {
        Method::Exhaustive => true,
        Method::Blocking => false,
        Method::Auto => cross_pairs(inputs, opts.within_files) <= opts.exhaustive_limit,
    };
    if exhaustive {
        exhaustive_pairs(inputs, opts, kernel)
    } else {
        blocked_pairs(inputs, opts)
    }
}

fn totals(f: &crate::format::EncodingFile) -> Vec<u32> {
    let k = 1 + f.header().segments.len();
    f.popcounts()
        .chunks_exact(k)
        .map(|p| u32::from(p[0]))
        .collect()
}

fn exhaustive_pairs(inputs: &Inputs, opts: &BlockOptions, kernel: Kernel) -> Candidates {
    let files = inputs.files();
    let words = files[0].header().words();
    let pops: Vec<Vec<u32>> = files.iter().map(totals).collect();
    let mut jobs = Vec::new();
    for i in 0..files.len() {
        if opts.within_files {
            jobs.push((i, i));
        }
        for j in i + 1..files.len() {
            jobs.push((i, j));
        }
    }
    // Split the left side into chunks so both cores work on every file pair.
    const CHUNK: usize = 2048;
    let mut tasks = Vec::new();
    for &(i, j) in &jobs {
        for start in (0..files[i].len()).step_by(CHUNK) {
            tasks.push((i, j, start, (start + CHUNK).min(files[i].len())));
        }
    }
    let results: Vec<(Vec<(u32, u32)>, u64)> = tasks
        .par_iter()
        .map(|&(i, j, s, e)| {
            let a = &files[i].filters()[s * words..e * words];
            let b = files[j].filters();
            let mut out = Vec::new();
            similarity::all_pairs_above(
                kernel,
                a,
                &pops[i][s..e],
                b,
                &pops[j],
                words,
                opts.dice_floor,
                |x, y, _| {
                    let (gx, gy) = (
                        inputs.global(super::RecordRef {
                            file: i as u32,
                            row: (s + x) as u32,
                        }),
                        inputs.global(super::RecordRef {
                            file: j as u32,
                            row: y as u32,
                        }),
                    );
                    if gx != gy && (i != j || gx < gy) {
                        out.push((gx.min(gy), gx.max(gy)));
                    }
                },
            );
            (out, ((e - s) * files[j].len()) as u64)
        })
        .collect();
    let comparisons = results.iter().map(|r| r.1).sum();
    let mut pairs: Vec<(u32, u32)> = results.into_iter().flat_map(|r| r.0).collect();
    pairs.par_sort_unstable();
    pairs.dedup();
    Candidates {
        pairs,
        exhaustive: true,
        comparisons,
        ..Default::default()
    }
}

fn blocked_pairs(inputs: &Inputs, opts: &BlockOptions) -> Candidates {
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
    let mut blocks: Vec<&[(u64, u32)]> = Vec::new();
    for run in entries.chunk_by(|a, b| a.0 == b.0) {
        if run.len() < 2 {
            continue;
        }
        let kind = crate::tokens::token_kind(run[0].0).min(kinds.len().saturating_sub(1));
        if run.len() > opts.max_block {
            skipped[kind] += 1;
            continue;
        }
        used[kind] += 1;
        blocks.push(run);
    }
    let mut pairs: Vec<(u32, u32)> = blocks
        .par_iter()
        .flat_map_iter(|run| {
            let mut out = Vec::new();
            for (x, &(_, a)) in run.iter().enumerate() {
                for &(_, b) in &run[x + 1..] {
                    if a != b && (opts.within_files || inputs.file_of(a) != inputs.file_of(b)) {
                        out.push((a.min(b), a.max(b)));
                    }
                }
            }
            out
        })
        .collect();
    let proposed = pairs.len() as u64;
    pairs.par_sort_unstable();
    pairs.dedup();
    let named = |v: Vec<u64>| kinds.iter().cloned().zip(v).collect();
    Candidates {
        pairs,
        exhaustive: false,
        comparisons: proposed,
        blocks_used: named(used),
        blocks_skipped: named(skipped),
    }
}
