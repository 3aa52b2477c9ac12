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
    /// Add locality-sensitive-hashing blocks on the filter bits to the keyed-token blocks.
    pub lsh: bool,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            method: Method::Auto,
            exhaustive_limit: 200_000_000,
            max_block: 500,
            dice_floor: 0.4,
            within_files: false,
            lsh: false,
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
        let mut kinds = files[0].header().token_kinds.clone();
        let lsh = self.opts.lsh.then(|| Lsh::new(&files[0].header().segments));
        // (key, global id) for every keyed token and LSH key of every record, sorted: runs are
        // blocks.
        let mut entries: Vec<(u64, u32)> = files
            .par_iter()
            .enumerate()
            .flat_map_iter(|(fi, f)| {
                let lsh = lsh.as_ref();
                (0..f.len()).flat_map(move |r| {
                    let g = inputs.global(super::RecordRef {
                        file: fi as u32,
                        row: r as u32,
                    });
                    let mut keys: Vec<u64> = f.tokens_of(r).to_vec();
                    if let Some(l) = lsh {
                        l.keys(f.filter(r), f.popcounts_of(r), &mut keys);
                    }
                    keys.into_iter().map(move |t| (t, g))
                })
            })
            .collect();
        entries.par_sort_unstable();
        // LSH keys are counted under one pseudo-kind after the token kinds.
        let lsh_kind = kinds.len();
        kinds.push("lsh".into());
        let mut used = vec![0u64; kinds.len()];
        let mut skipped = vec![0u64; kinds.len()];
        let mut start = 0usize;
        for run in entries.chunk_by(|a, b| a.0 == b.0) {
            let range = (start as u32, (start + run.len()) as u32);
            start += run.len();
            if run.len() < 2 {
                continue;
            }
            let kind = if run[0].0 >> 56 == LSH_KIND {
                lsh_kind
            } else {
                crate::tokens::token_kind(run[0].0).min(lsh_kind.saturating_sub(1))
            };
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

    /// Whether blocking proposes the pair `(a, b)` (global ids). Always true for exhaustive plans.
    pub fn proposes(&self, a: u32, b: u32) -> bool {
        if self.stats.exhaustive {
            return true;
        }
        a != b
            && (self.opts.within_files || self.inputs.file_of(a) != self.inputs.file_of(b))
            && first_shared(self.keys_of(a), self.keys_of(b)).is_some()
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

/// Top byte of an LSH key. Token kinds are indices below 255, so no keyed token has it.
const LSH_KIND: u64 = 0xFF;
/// MinHash values combined into one LSH key (more: fewer, surer collisions).
const LSH_ROWS: usize = 8;
/// Keys per pair of segments (more: higher recall for near matches, more keys per record).
const LSH_BANDS: usize = 2;

/// Locality-sensitive hashing on filter bits: MinHash over the set bits of each pair of filter
/// segments (e.g. given + family names, family name + address). Two records whose bits in a
/// pair of segments are nearly the same (Jaccard J) share that band's key with probability
/// about `1 − (1 − J^LSH_ROWS)^LSH_BANDS` (J = 1: always; J = 0.9: 0.78; unrelated records,
/// J ≈ 0.1: one in a million per band). This finds candidates that share no keyed token — a
/// typo in the date of birth *and* a nickname, say, which change every token — without the
/// key: the bit positions are already keyed. The hash functions are fixed, so keys are the
/// same in every run.
struct Lsh {
    /// Word range of each segment.
    segments: Vec<std::ops::Range<usize>>,
    /// Segment pairs used as bands.
    combos: Vec<(usize, usize)>,
    /// Odd multipliers of the MinHash functions (LSH_BANDS × LSH_ROWS).
    mult: Vec<u64>,
}

impl Lsh {
    fn new(segments: &[crate::schema::SegmentLayout]) -> Lsh {
        let ranges: Vec<std::ops::Range<usize>> = segments
            .iter()
            .map(|s| (s.start_bit / 64) as usize..((s.start_bit + s.bits) / 64) as usize)
            .collect();
        let n = ranges.len();
        let combos: Vec<(usize, usize)> = if n == 1 {
            vec![(0, 0)]
        } else if n <= 6 {
            (0..n)
                .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
                .collect()
        } else {
            (0..n - 1).map(|i| (i, i + 1)).collect()
        };
        let mut state = 0x243F_6A88_85A3_08D3u64;
        let mult = (0..LSH_BANDS * LSH_ROWS)
            .map(|_| splitmix(&mut state) | 1)
            .collect();
        Lsh {
            segments: ranges,
            combos,
            mult,
        }
    }

    /// Appends the record's LSH keys (none for a band with an empty segment).
    fn keys(&self, filter: &[u64], pops: &[u16], out: &mut Vec<u64>) {
        let h = self.mult.len();
        // Per segment, the minimum of each hash function over its set bits.
        let mut mins = vec![u64::MAX; self.segments.len() * h];
        for (s, r) in self.segments.iter().enumerate() {
            let m = &mut mins[s * h..(s + 1) * h];
            for (w, &word) in filter[r.clone()].iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let pos = ((r.start + w) * 64) as u64 + u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    let x = pos.wrapping_add(1);
                    for (mi, &a) in m.iter_mut().zip(&self.mult) {
                        let v = x.wrapping_mul(a);
                        let v = v ^ (v >> 29);
                        if v < *mi {
                            *mi = v;
                        }
                    }
                }
            }
        }
        for (c, &(s1, s2)) in self.combos.iter().enumerate() {
            if pops.get(1 + s1) == Some(&0) || pops.get(1 + s2) == Some(&0) {
                continue;
            }
            for band in 0..LSH_BANDS {
                let mut state = ((c * LSH_BANDS + band) as u64) ^ 0x9E37_79B9_7F4A_7C15;
                let mut acc = splitmix(&mut state);
                for row in 0..LSH_ROWS {
                    let i = band * LSH_ROWS + row;
                    let v = mins[s1 * h + i].min(mins[s2 * h + i]);
                    state ^= v;
                    acc ^= splitmix(&mut state);
                }
                out.push((LSH_KIND << 56) | (acc & ((1u64 << 56) - 1)));
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
