//! Pattern-mining attack in the style of Christen, Ranbaduge, Vatsalan and Schnell (2018),
//! applied to one filter segment.
//!
//! The attacker holds the segment bits of every record and a reference list of plaintext values
//! (with the schema's tokeniser, so it knows each value's tokens), but not the key.
//!
//! 1. **Bit columns.** The filters are transposed: one bitset over the records per bit position,
//!    so "records with all of these positions set" is an AND and a popcount.
//! 2. **Mining, recursively.** Start with all records and all reference values. Take the most
//!    frequent token of the values (skipping tokens already identified on this branch) that
//!    stands apart in frequency from the next more and the next less frequent token (tokens
//!    too close to tell apart are skipped, Christen et al.'s stopping rule). Look for the
//!    largest set of positions, at most the token's `bits_per_token`, that are set *together*
//!    in at least as many records as hold the token (a greedy stand-in for the paper's Apriori
//!    search for the longest frequent position tuple, seeded from co-occurring pairs; see
//!    `mine_positions`). The set is then checked against the whole population: it must be set
//!    in about as many records as hold the token overall (fewer: positions of a token that only
//!    co-occurs with it in this partition were mixed in; more: a part of a more frequent
//!    token's positions). If that fails, the next token that stands apart is tried. Once the
//!    positions are taken as the token's, the records split into those with all of them set
//!    (values containing the token) and the rest, and the reference values split the same way;
//!    both halves are mined again. Largest partitions go first; a floor on partition size and a
//!    step budget end the search.
//! 3. **Re-identification.** A reference value is *consistent* with a record when every
//!    identified token of the value has all its positions set in the record, and the record's
//!    set bits not explained by those positions could come from the value's unidentified tokens
//!    (at most `bits_per_token` each; the schema is public). A record whose segment is
//!    consistent with exactly one reference value is re-identified as that value.
//!
//! Nothing here uses the key. Hardening that makes bits noisy or shared (BLIP, balancing,
//! folding, diffusion) breaks the consistency tests, so the attack then guesses less, which is
//! what the risk check should measure.

use std::collections::{BinaryHeap, HashMap};

use rayon::prelude::*;

use super::truth::{Attribute, Target, NONE};
use crate::encode::Records;
use crate::similarity::{and_popcount, popcount, Kernel};

/// Tuning of the pattern-mining attack.
#[derive(Clone, Debug)]
pub struct PatternOptions {
    /// Smallest partition (records) that is mined further; at least this many records per
    /// thousand are required too (see [`PatternOptions::min_partition_per_mille`]).
    pub min_partition: usize,
    /// Floor on the partition size as a share of all records, per mille.
    pub min_partition_per_mille: f64,
    /// Most mining steps (token identifications attempted) per segment.
    pub max_steps: usize,
    /// The most frequent token must be at least this much more frequent than the runner-up,
    /// relative (Christen et al.'s stopping rule).
    pub min_gap: f64,
    /// Seeds tried for the greedy position search.
    pub seeds: usize,
    /// Tokens tried per partition when a token's positions cannot be found or fail the check
    /// against the whole population.
    pub tries: usize,
    /// How far below the reference's count of a token (relative) the rows with all its
    /// positions set may fall: 0 for an exact reference (every record holding the token has
    /// all its positions set).
    pub count_slack: f64,
}

impl Default for PatternOptions {
    fn default() -> Self {
        PatternOptions {
            min_partition: 20,
            min_partition_per_mille: 0.5,
            max_steps: 3000,
            min_gap: 0.02,
            seeds: 6,
            count_slack: 0.0,
            tries: 4,
        }
    }
}

/// What the attack did on one segment.
#[derive(Clone, Debug, Default)]
pub(crate) struct SegmentOutcome {
    /// Per record: guessed value id or [`NONE`].
    pub guesses: Vec<u32>,
    /// Tokens whose positions were identified, with their positions (relative to the segment).
    pub identified: Vec<(u32, Vec<u32>)>,
    /// Mining steps taken.
    pub steps: usize,
}

/// Bit columns of one segment over a set of records: for each position, a bitset over them.
struct Columns {
    rows: usize,
    nwords: usize,
    data: Vec<u64>,
}

impl Columns {
    /// Columns for the records `rows` (indices into `records`), in that order.
    fn build(records: &Records, range: &std::ops::Range<usize>, rows: &[u32]) -> Columns {
        let bits = range.len() * 64;
        let nwords = rows.len().div_ceil(64);
        let chunks: Vec<Vec<u64>> = rows
            .par_chunks(64)
            .map(|chunk| {
                let mut local = vec![0u64; bits];
                for (j, &i) in chunk.iter().enumerate() {
                    let Some(seg) = records.filter(i as usize).get(range.clone()) else {
                        continue;
                    };
                    for (wi, &word) in seg.iter().enumerate() {
                        let mut x = word;
                        while x != 0 {
                            let b = x.trailing_zeros() as usize;
                            local[wi * 64 + b] |= 1u64 << j;
                            x &= x - 1;
                        }
                    }
                }
                local
            })
            .collect();
        let mut data = vec![0u64; bits * nwords];
        for (c, local) in chunks.iter().enumerate() {
            for (p, &v) in local.iter().enumerate() {
                data[p * nwords + c] = v;
            }
        }
        Columns {
            rows: rows.len(),
            nwords,
            data,
        }
    }

    fn col(&self, p: usize) -> &[u64] {
        &self.data[p * self.nwords..(p + 1) * self.nwords]
    }
}

/// A partition of the records with the reference values that correspond to it.
struct Node {
    seq: u32,
    rows: Vec<u32>,
    values: Vec<u32>,
    /// Tokens identified on the way here (not mined again).
    path: Vec<u32>,
    /// Positions set in every row of this partition by construction.
    fixed: Vec<u32>,
}

impl PartialEq for Node {
    fn eq(&self, o: &Self) -> bool {
        (self.rows.len(), self.seq) == (o.rows.len(), o.seq)
    }
}
impl Eq for Node {}
impl PartialOrd for Node {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Node {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Largest partition first; earlier nodes first among equals (deterministic).
        self.rows
            .len()
            .cmp(&o.rows.len())
            .then(o.seq.cmp(&self.seq))
    }
}

/// Most candidate positions considered per mining step (by count), bounding the pair search.
const MAX_CANDIDATES: usize = 128;
/// An identified token whose positions are all set in a record is taken as present when the
/// chance of that happening without it (segment fill to the power of its positions) is below
/// this.
const SURE_FALSE_POSITIVE: f64 = 0.01;
/// Seed pairs grown per mining step.
const SEEDS: usize = 8;

/// Runs the attack on one segment target.
pub(crate) fn attack(records: &Records, attr: &Attribute, opts: &PatternOptions) -> SegmentOutcome {
    let n = records.len();
    let Target::Segment { layout, k_max, .. } = &attr.target else {
        return SegmentOutcome {
            guesses: vec![NONE; n],
            ..SegmentOutcome::default()
        };
    };
    let range = layout.word_range();
    if n == 0 || range.is_empty() || *k_max == 0 {
        return SegmentOutcome {
            guesses: vec![NONE; n],
            ..SegmentOutcome::default()
        };
    }
    let kernel = Kernel::detect();
    let bits = range.len() * 64;
    let floor = (opts.min_partition as f64)
        .max(n as f64 * opts.min_partition_per_mille / 1000.0)
        .ceil() as usize;
    let ntok = attr.token_text.len();

    // Records with an empty segment carry nothing to mine.
    let all: Vec<u32> = (0..n as u32)
        .filter(|&i| {
            records
                .filter(i as usize)
                .get(range.clone())
                .is_some_and(|s| s.iter().any(|w| *w != 0))
        })
        .collect();
    // The whole population's columns and token frequencies, to check every identification
    // against all records and not only the partition it was found in.
    let root = Columns::build(records, &range, &all);
    let root_counts: Vec<u32> = (0..bits).map(|p| popcount(root.col(p))).collect();
    let mut global = vec![0u64; ntok];
    for (v, toks) in attr.tokens.iter().enumerate() {
        for &t in toks {
            global[t as usize] += u64::from(attr.counts[v]);
        }
    }
    let population = all.len() as f64;
    let mut heap = BinaryHeap::new();
    let mut seq = 0u32;
    heap.push(Node {
        seq,
        rows: all,
        values: (0..attr.counts.len() as u32).collect(),
        path: Vec::new(),
        fixed: Vec::new(),
    });
    let mut identified: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut order: Vec<u32> = Vec::new();
    let mut freq = vec![0u64; ntok];
    let mut ranked: Vec<(u64, u32)> = Vec::new();
    let mut steps = 0;
    while let Some(node) = heap.pop() {
        if steps >= opts.max_steps {
            break;
        }
        if node.rows.len() < floor || node.values.is_empty() {
            continue;
        }
        steps += 1;
        // Token frequencies among the node's reference values.
        freq.iter_mut().for_each(|f| *f = 0);
        let mut total = 0u64;
        for &v in &node.values {
            let c = u64::from(attr.counts[v as usize]);
            total += c;
            for &t in &attr.tokens[v as usize] {
                freq[t as usize] += c;
            }
        }
        for &t in &node.path {
            freq[t as usize] = 0;
        }
        // The most frequent token whose frequency stands apart from the next more and the next
        // less frequent token (a token in every value cannot split the partition).
        ranked.clear();
        ranked.extend(
            freq.iter()
                .enumerate()
                .filter(|&(_, &f)| f > 0 && f < total)
                .map(|(t, &f)| (f, t as u32)),
        );
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let apart = |hi: u64, lo: u64| (hi - lo) as f64 / hi as f64 >= opts.min_gap;
        let eligible = (0..ranked.len()).filter(|&i| {
            let f = ranked[i].0;
            (i == 0 || apart(ranked[i - 1].0, f))
                && ranked.get(i + 1).is_none_or(|&(lo, _)| apart(f, lo))
        });
        let cols = Columns::build(records, &range, &node.rows);
        let mut found = None;
        for i in eligible.take(opts.tries.max(1)) {
            let (f1, t1) = ranked[i];
            let below = ranked.get(i + 1).map_or(0, |r| r.0);
            let above = if i == 0 { None } else { Some(ranked[i - 1].0) };
            let scale = node.rows.len() as f64 / total as f64;
            let e1 = f1 as f64 * scale;
            // Every record holding the token has all its positions set, so the token's
            // position set is set in at least as many rows as the reference says hold it (less
            // a slack for a reference that is not exact); halfway to the runner-up at least.
            let expected = (f1 as f64).min(e1) * (1.0 - opts.count_slack);
            let min_count = ((e1 + below as f64 * scale) / 2.0)
                .max(expected.floor() - 1.0)
                .max(1.0) as u32;
            // A position set found must not be explained better by a more frequent token.
            let max_count = above.map_or(u32::MAX, |a| ((e1 + a as f64 * scale) / 2.0) as u32);
            let k1 = attr.token_bits[t1 as usize].max(1) as usize;
            let want = Want {
                min_count,
                max_count,
                expected: e1,
                k: k1,
            };
            let Some(mut set) = mine_positions(&cols, bits, &node.fixed, want, kernel) else {
                continue;
            };
            set.sort_unstable();
            // Over all records, the set must be set in about as many rows as hold the token:
            // fewer means positions of a token that merely co-occurs with it in this partition
            // were mixed in; more means a subset of a more frequent token's positions.
            let fg = global[t1 as usize] as f64;
            let mut acc = root.col(set[0] as usize).to_vec();
            for &p in &set[1..] {
                acc.iter_mut()
                    .zip(root.col(p as usize))
                    .for_each(|(a, b)| *a &= b);
            }
            let cnt = f64::from(popcount(&acc));
            let chance = (population - fg).max(0.0)
                * set
                    .iter()
                    .map(|&p| f64::from(root_counts[p as usize]) / population.max(1.0))
                    .product::<f64>();
            let slack = fg * opts.count_slack;
            if cnt < fg - slack - 1.0 || cnt > fg + slack + chance + 3.0 * (chance + 1.0).sqrt() {
                continue;
            }
            found = Some((t1, set));
            break;
        }
        let Some((t1, set)) = found else { continue };
        if let std::collections::hash_map::Entry::Vacant(e) = identified.entry(t1) {
            e.insert(set.clone());
            order.push(t1);
        }
        let base = range.start;
        let (with, without): (Vec<u32>, Vec<u32>) = node.rows.iter().partition(|&&i| {
            let f = records.filter(i as usize);
            set.iter()
                .all(|&p| f[base + p as usize / 64] & (1 << (p % 64)) != 0)
        });
        let (v_with, v_without): (Vec<u32>, Vec<u32>) = node
            .values
            .iter()
            .partition(|&&v| attr.tokens[v as usize].binary_search(&t1).is_ok());
        let mut path = node.path.clone();
        path.push(t1);
        let mut fixed = node.fixed.clone();
        fixed.extend_from_slice(&set);
        for (rows, values, fixed) in [(with, v_with, fixed), (without, v_without, node.fixed)] {
            seq += 1;
            heap.push(Node {
                seq,
                rows,
                values,
                path: path.clone(),
                fixed,
            });
        }
    }
    let identified: Vec<(u32, Vec<u32>)> = order
        .iter()
        .map(|t| (*t, identified.remove(t).unwrap_or_default()))
        .collect();
    let guesses = reidentify(records, attr, range, &identified);
    SegmentOutcome {
        guesses,
        identified,
        steps,
    }
}

/// What a token's position set must look like.
#[derive(Clone, Copy)]
struct Want {
    /// Fewest rows with all positions set.
    min_count: u32,
    /// Most rows with all positions set.
    max_count: u32,
    /// Rows expected (the token's frequency).
    expected: f64,
    /// Bits per token.
    k: usize,
}

/// The positions of one token. Seeds are the candidate pairs set together in more rows than
/// their counts alone predict (a shared token causes that), with between `min_count` and
/// `max_count` rows (more would be a more frequent token). Each seed grows best-first by the
/// position that keeps the most rows, while at least `min_count` rows have all positions set,
/// up to `k` positions. The longest set wins (then the one whose row count is nearest the
/// token's frequency); `None` unless at least three quarters of `k` positions are found.
fn mine_positions(
    cols: &Columns,
    bits: usize,
    fixed: &[u32],
    want: Want,
    kernel: Kernel,
) -> Option<Vec<u32>> {
    let Want {
        min_count,
        max_count,
        expected: e1,
        k,
    } = want;
    let mut cands: Vec<(u32, u32)> = (0..bits as u32)
        .into_par_iter()
        .filter(|p| !fixed.contains(p))
        .map(|p| (popcount(cols.col(p as usize)), p))
        .filter(|&(c, _)| c >= min_count)
        .collect();
    cands.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    cands.truncate(MAX_CANDIDATES);
    let need = (k * 3).div_ceil(4).max(1);
    if cands.len() < need {
        return None;
    }
    if k == 1 {
        return cands
            .iter()
            .find(|&&(c, _)| c <= max_count)
            .map(|&(_, p)| vec![p]);
    }
    // Seed pairs: positions set together in more rows than their counts alone would predict
    // (the co-occurrence a shared token causes), within [min_count, max_count].
    let size = cols.rows.max(1) as f64;
    let mut pairs: Vec<(f64, usize, usize)> = (0..cands.len())
        .into_par_iter()
        .flat_map_iter(|a| {
            let cands = &cands;
            ((a + 1)..cands.len()).filter_map(move |b| {
                let c = and_popcount(
                    kernel,
                    cols.col(cands[a].1 as usize),
                    cols.col(cands[b].1 as usize),
                );
                if c < min_count || c > max_count {
                    return None;
                }
                let expected = f64::from(cands[a].0) * f64::from(cands[b].0) / size;
                Some((f64::from(c) - expected, a, b))
            })
        })
        .collect();
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    pairs.truncate(SEEDS);
    let grown: Vec<(Vec<u32>, u32)> = pairs
        .par_iter()
        .map(|&(_, a, b)| {
            let (pa, pb) = (cands[a].1, cands[b].1);
            let mut set = vec![pa, pb];
            let mut acc: Vec<u64> = cols
                .col(pa as usize)
                .iter()
                .zip(cols.col(pb as usize))
                .map(|(x, y)| x & y)
                .collect();
            let mut count = popcount(&acc);
            while set.len() < k {
                let next = cands
                    .iter()
                    .filter(|(_, p)| !set.contains(p))
                    .map(|&(_, p)| (and_popcount(kernel, &acc, cols.col(p as usize)), p))
                    .max_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
                match next {
                    Some((c, p)) if c >= min_count => {
                        acc.iter_mut()
                            .zip(cols.col(p as usize))
                            .for_each(|(x, y)| *x &= y);
                        set.push(p);
                        count = c;
                    }
                    _ => break,
                }
            }
            (set, count)
        })
        .collect();
    let target = e1;
    grown
        .into_iter()
        .filter(|(set, count)| set.len() >= need && *count <= max_count)
        .min_by(|x, y| {
            y.0.len().cmp(&x.0.len()).then(
                (f64::from(x.1) - target)
                    .abs()
                    .total_cmp(&(f64::from(y.1) - target).abs()),
            )
        })
        .map(|(set, _)| set)
}

/// Step 3: the unique consistent reference value of each record's segment, if there is one.
fn reidentify(
    records: &Records,
    attr: &Attribute,
    range: std::ops::Range<usize>,
    identified: &[(u32, Vec<u32>)],
) -> Vec<u32> {
    let n = records.len();
    let w = range.len();
    let nvals = attr.counts.len();
    let masks: Vec<Vec<u64>> = identified
        .iter()
        .map(|(_, ps)| {
            let mut m = vec![0u64; w];
            for &p in ps {
                m[p as usize / 64] |= 1 << (p % 64);
            }
            m
        })
        .collect();
    let index_of: HashMap<u32, usize> = identified
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (*t, i))
        .collect();
    // Per value: its identified tokens (by index), the union of their positions, and how many
    // bits its unidentified tokens may set.
    let mut known: Vec<Vec<u32>> = vec![Vec::new(); nvals];
    let mut union: Vec<Vec<u64>> = vec![vec![0u64; w]; nvals];
    let mut allowance = vec![0u32; nvals];
    let mut postings: Vec<Vec<u32>> = vec![Vec::new(); identified.len()];
    let mut unknown_only: Vec<(u32, u32)> = Vec::new(); // (allowance, value)
    for v in 0..nvals {
        for &t in &attr.tokens[v] {
            if let Some(&i) = index_of.get(&t) {
                known[v].push(i as u32);
                postings[i].push(v as u32);
                for (u, m) in union[v].iter_mut().zip(&masks[i]) {
                    *u |= m;
                }
            }
        }
        allowance[v] = attr.tokens[v]
            .iter()
            .filter(|t| !index_of.contains_key(t))
            .map(|&t| attr.token_bits[t as usize])
            .sum();
        if known[v].is_empty() {
            unknown_only.push((allowance[v], v as u32));
        }
    }
    unknown_only.sort_unstable_by(|a, b| b.cmp(a));

    // Distinct segment patterns, each resolved once.
    let mut pattern_of = vec![NONE; n];
    let mut patterns: Vec<&[u64]> = Vec::new();
    {
        let mut ids: HashMap<&[u64], u32> = HashMap::new();
        for (i, p) in pattern_of.iter_mut().enumerate() {
            let Some(seg) = records.filter(i).get(range.clone()) else {
                continue;
            };
            if seg.iter().all(|x| *x == 0) {
                continue;
            }
            let next = ids.len() as u32;
            *p = *ids.entry(seg).or_insert_with(|| {
                patterns.push(seg);
                next
            });
        }
    }
    let resolved: Vec<u32> = patterns
        .par_iter()
        .map_init(
            || (vec![0u32; nvals], vec![0u32; nvals], Vec::<u32>::new()),
            |(hits, sure_hits, touched), &r| {
                let bits = popcount(r);
                let fill = f64::from(bits) / (w * 64) as f64;
                let consistent = |v: usize| {
                    let uncovered: u32 = r
                        .iter()
                        .zip(&union[v])
                        .map(|(a, b)| (a & !b).count_ones())
                        .sum();
                    uncovered <= allowance[v]
                };
                let mut found = NONE;
                let mut count = 0;
                // Identified tokens whose positions are all set: in the value, or set by chance.
                // When chance is unlikely (fill^positions below SURE_FALSE_POSITIVE) the token is
                // taken as present and the value must contain it.
                let mut sure = 0u32;
                for (i, m) in masks.iter().enumerate() {
                    if m.iter().zip(r).all(|(m, r)| m & !r == 0) {
                        let is_sure = fill.powi(identified[i].1.len() as i32) < SURE_FALSE_POSITIVE;
                        sure += u32::from(is_sure);
                        for &v in &postings[i] {
                            if hits[v as usize] == 0 {
                                touched.push(v);
                            }
                            hits[v as usize] += 1;
                            sure_hits[v as usize] += u32::from(is_sure);
                        }
                    }
                }
                for &v in touched.iter() {
                    if count > 1 {
                        break;
                    }
                    let vi = v as usize;
                    if hits[vi] as usize == known[vi].len()
                        && sure_hits[vi] == sure
                        && consistent(vi)
                    {
                        found = v;
                        count += 1;
                    }
                }
                for &v in touched.iter() {
                    hits[v as usize] = 0;
                    sure_hits[v as usize] = 0;
                }
                touched.clear();
                // Values with no identified token: consistent when no token is surely present
                // and their tokens could set all the record's bits.
                if sure == 0 {
                    for &(allow, v) in &unknown_only {
                        if count > 1 || allow < bits {
                            break;
                        }
                        found = v;
                        count += 1;
                    }
                }
                if count == 1 {
                    found
                } else {
                    NONE
                }
            },
        )
        .collect();
    pattern_of
        .iter()
        .map(|&p| {
            if p == NONE {
                NONE
            } else {
                resolved[p as usize]
            }
        })
        .collect()
}
