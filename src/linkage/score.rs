//! Scoring candidate pairs: field-level comparison and Fellegi–Sunter weights learned by EM.
//!
//! Each pair is compared segment by segment (given names, family name, birth, address: Dice of
//! the segment's bits, binned into levels; "missing" when either side has no bits there) and on
//! each evidence token (NHS number, UPN: agree, disagree, or missing). A comparison *pattern* is
//! the tuple of levels. EM fits a two-class mixture (match / non-match) with per-feature level
//! probabilities m and u over the pattern counts, without ground truth; every pair gets the
//! posterior probability of being a match. The threshold is the one maximising the expected F1
//! under the fitted model, which also gives estimated precision and recall.

use std::collections::HashMap;

/// A hash map with a fixed fast hasher (keys are pattern codes, not attacker-chosen).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

use rayon::prelude::*;
use serde::Serialize;

use super::Inputs;
use crate::similarity::{self, Kernel};

/// Dice level boundaries (lower bounds), from the best level down. Below the last: level 5.
pub const DICE_LEVELS: [f32; 5] = [0.95, 0.85, 0.75, 0.6, 0.4];
const SEG_LEVELS: usize = DICE_LEVELS.len() + 2; // + below-last + missing
const MISSING: u8 = (SEG_LEVELS - 1) as u8;
const TOKEN_LEVELS: usize = 3; // agree, disagree, missing
/// Most filter segments the matcher compares (3 bits of pattern code each).
pub const MAX_SEGMENTS: usize = 16;
/// Most evidence token kinds.
pub const MAX_EVIDENCE: usize = 4;
/// No token of that kind. A real token never has all bits set: its kind byte is a valid index.
const NO_TOKEN: u64 = u64::MAX;

/// A pair's comparison pattern: a level per feature.
pub type Pattern = Vec<u8>;

/// What to compare.
#[derive(Clone, Debug, Serialize)]
pub struct Features {
    /// Segment names, in filter order.
    pub segments: Vec<String>,
    /// Token kinds used as evidence (index into the file's token kinds, and name).
    pub evidence: Vec<(usize, String)>,
}

impl Features {
    /// Features for the inputs: every segment, and the named evidence token kinds present.
    pub fn for_inputs(inputs: &Inputs, evidence: &[String]) -> Features {
        let h = inputs.files()[0].header();
        Features {
            segments: h.segments.iter().map(|s| s.name.clone()).collect(),
            evidence: h
                .token_kinds
                .iter()
                .enumerate()
                .filter(|(_, n)| evidence.iter().any(|e| e == *n))
                .map(|(i, n)| (i, n.clone()))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.segments.len() + self.evidence.len()
    }

    fn levels(&self, f: usize) -> usize {
        if f < self.segments.len() {
            SEG_LEVELS
        } else {
            TOKEN_LEVELS
        }
    }

    /// Human name of level `l` of feature `f`.
    pub fn level_name(&self, f: usize, l: usize) -> String {
        if f < self.segments.len() {
            match l {
                l if l < DICE_LEVELS.len() => format!("dice>={}", DICE_LEVELS[l]),
                l if l == DICE_LEVELS.len() => {
                    format!("dice<{}", DICE_LEVELS[DICE_LEVELS.len() - 1])
                }
                _ => "missing".into(),
            }
        } else {
            ["agree", "disagree", "missing"][l].into()
        }
    }
}

fn dice_level(d: f32) -> u8 {
    DICE_LEVELS
        .iter()
        .position(|&b| d >= b)
        .unwrap_or(DICE_LEVELS.len()) as u8
}

/// Compares pairs of records feature by feature. Levels are packed 3 bits per feature into a
/// `u64` code (no allocation per pair); [`patterns_from_codes`] turns codes into patterns.
pub struct Comparer<'a> {
    inputs: &'a Inputs,
    /// Word index where each segment ends; the segments tile the filter from word 0.
    seg_ends: Vec<usize>,
    /// Whether the segments cover the whole filter (then the whole count is their sum).
    seg_cover: bool,
    evidence: Vec<usize>,
    kernel: Kernel,
    dice_floor: f32,
    /// Per segment, indexed by the sum of the two records' counts in it: the smallest AND count
    /// reaching each Dice level boundary. Comparing counts with these gives exactly the level
    /// [`dice_level`] gives, without a division per segment.
    level_counts: Vec<Vec<[u32; DICE_LEVELS.len()]>>,
}

/// The smallest `and` with `dice(and, sum) >= bound` (by [`similarity::dice`] itself, so the
/// result is exactly the same), or `u32::MAX` if none.
fn min_count_for(bound: f32, sum: u32) -> u32 {
    let (mut lo, mut hi) = (0u32, sum / 2 + 1);
    // dice(and, ·) is monotone in `and`: binary search on [0, sum/2].
    if similarity::dice(sum / 2, sum - sum / 2, sum / 2) < bound {
        return u32::MAX;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if similarity::dice(mid, sum - sum / 2, sum / 2) >= bound {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

impl<'a> Comparer<'a> {
    /// A comparer for the inputs. Pairs whose whole-filter Dice is below `dice_floor` and that
    /// agree on no identifier are not scored.
    pub fn new(
        inputs: &'a Inputs,
        features: &Features,
        kernel: Kernel,
        dice_floor: f32,
    ) -> Comparer<'a> {
        let h = inputs.files()[0].header();
        assert!(
            h.segments.len() <= MAX_SEGMENTS,
            "at most {MAX_SEGMENTS} segments"
        );
        let seg_ends: Vec<usize> = h
            .segments
            .iter()
            .map(|s| ((s.start_bit + s.bits) / 64) as usize)
            .collect();
        Comparer {
            inputs,
            seg_cover: seg_ends.last().copied().unwrap_or(0) == h.words(),
            seg_ends,
            evidence: features.evidence.iter().map(|e| e.0).collect(),
            kernel,
            dice_floor,
            level_counts: h
                .segments
                .iter()
                .map(|s| {
                    (0..=2 * s.bits)
                        .map(|sum| DICE_LEVELS.map(|b| min_count_for(b, sum)))
                        .collect()
                })
                .collect(),
        }
    }

    /// What comparing needs of one record, gathered once (a record is compared with every
    /// other member of its blocks: gathering first keeps the pair loop free of lookups).
    #[inline]
    pub fn view(&self, g: u32) -> View<'a> {
        let files = self.inputs.files();
        let r = self.inputs.record(g);
        let f = &files[r.file as usize];
        let i = r.row as usize;
        let mut pops = [0u16; MAX_SEGMENTS + 1];
        let p = f.popcounts_of(i);
        pops[..p.len().min(MAX_SEGMENTS + 1)].copy_from_slice(&p[..p.len().min(MAX_SEGMENTS + 1)]);
        let mut evidence = [NO_TOKEN; MAX_EVIDENCE];
        let tokens = f.tokens_of(i);
        for (e, &kind) in evidence.iter_mut().zip(&self.evidence) {
            // Tokens are sorted and carry their kind in the top byte.
            if let Some(t) = tokens
                .iter()
                .copied()
                .find(|&t| crate::tokens::token_kind(t) == kind)
            {
                *e = t;
            }
        }
        View {
            g,
            file: r.file,
            filter: f.filter(i),
            pops,
            evidence,
        }
    }

    /// The whole-filter Dice and pattern code of a pair, or `None` below the floor.
    pub fn code(&self, a: u32, b: u32) -> Option<(f32, u64)> {
        self.compare(&self.view(a), &self.view(b))
    }

    /// [`Comparer::code`] for gathered records.
    #[inline]
    pub fn compare(&self, a: &View<'_>, b: &View<'_>) -> Option<(f32, u64)> {
        let (pa, pb) = (&a.pops, &b.pops);
        let mut identifier_agrees = false;
        let mut evidence_code = 0u64;
        let mut shift = 0;
        for (&x, &y) in a.evidence.iter().zip(&b.evidence).take(self.evidence.len()) {
            let level = if x == NO_TOKEN || y == NO_TOKEN {
                2
            } else if x == y {
                identifier_agrees = true;
                0u64
            } else {
                1
            };
            evidence_code |= level << shift;
            shift += 3;
        }
        let mut ands = [0u32; MAX_SEGMENTS];
        let ands = &mut ands[..self.seg_ends.len()];
        similarity::and_popcount_segments(self.kernel, a.filter, b.filter, &self.seg_ends, ands);
        let and = if self.seg_cover {
            ands.iter().sum()
        } else {
            similarity::and_popcount(self.kernel, a.filter, b.filter)
        };
        let dice = similarity::dice(and, u32::from(pa[0]), u32::from(pb[0]));
        if !(dice >= self.dice_floor || identifier_agrees) {
            return None;
        }
        let mut code = 0u64;
        shift = 0;
        for (s, &and) in ands.iter().enumerate() {
            let (ca, cb) = (u32::from(pa[1 + s]), u32::from(pb[1 + s]));
            let level = if ca == 0 || cb == 0 {
                MISSING
            } else if let Some(min) = self.level_counts[s].get((ca + cb) as usize) {
                min.iter()
                    .position(|&m| and >= m)
                    .unwrap_or(DICE_LEVELS.len()) as u8
            } else {
                // Counts beyond the segment's length: only in a file the reader should have
                // refused; fall back to the division.
                dice_level(similarity::dice(and, ca, cb))
            };
            code |= u64::from(level) << shift;
            shift += 3;
        }
        code |= evidence_code << shift;
        Some((dice, code))
    }
}

/// A record as the comparer needs it: see [`Comparer::view`].
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// Global id.
    pub g: u32,
    /// Input file.
    pub file: u32,
    filter: &'a [u64],
    pops: [u16; MAX_SEGMENTS + 1],
    evidence: [u64; MAX_EVIDENCE],
}

/// Distinct pattern codes with their counts → patterns (in code order, so ids do not depend on
/// the order pairs were seen), counts, and the id of each code.
pub fn patterns_from_codes(
    features: &Features,
    codes: &FastMap<u64, u64>,
) -> (Vec<Pattern>, Vec<u64>, FastMap<u64, u32>) {
    let mut sorted: Vec<(u64, u64)> = codes.iter().map(|(&c, &n)| (c, n)).collect();
    sorted.sort_unstable();
    let patterns = sorted
        .iter()
        .map(|&(code, _)| pattern_of(features, code))
        .collect();
    let counts = sorted.iter().map(|&(_, n)| n).collect();
    let index = sorted
        .iter()
        .enumerate()
        .map(|(i, &(code, _))| (code, i as u32))
        .collect();
    (patterns, counts, index)
}

/// The pattern a code stands for.
pub fn pattern_of(features: &Features, code: u64) -> Pattern {
    (0..features.len())
        .map(|f| ((code >> (3 * f)) & 7) as u8)
        .collect()
}

/// Compares the given pairs; returns the distinct patterns and their counts.
pub fn pattern_counts(
    inputs: &Inputs,
    pairs: &[(u32, u32)],
    features: &Features,
    kernel: Kernel,
    dice_floor: f32,
) -> (Vec<Pattern>, Vec<u64>) {
    let cmp = Comparer::new(inputs, features, kernel, dice_floor);
    let codes = pairs
        .par_iter()
        .fold(FastMap::default, |mut acc: FastMap<u64, u64>, &(a, b)| {
            if let Some((_, code)) = cmp.code(a, b) {
                *acc.entry(code).or_default() += 1;
            }
            acc
        })
        .reduce(FastMap::default, merge_counts);
    let (patterns, counts, _) = patterns_from_codes(features, &codes);
    (patterns, counts)
}

/// The `q`-quantile (0 ≤ q ≤ 1) of the whole-filter Dice of the given pairs (0 for none).
pub fn dice_quantile(inputs: &Inputs, pairs: &[(u32, u32)], kernel: Kernel, q: f64) -> f32 {
    let files = inputs.files();
    let mut d: Vec<f32> = pairs
        .par_iter()
        .map(|&(a, b)| {
            let (ra, rb) = (inputs.record(a), inputs.record(b));
            let (fa, fb) = (&files[ra.file as usize], &files[rb.file as usize]);
            let (ia, ib) = (ra.row as usize, rb.row as usize);
            let and = similarity::and_popcount(kernel, fa.filter(ia), fb.filter(ib));
            similarity::dice(
                and,
                u32::from(fa.popcounts_of(ia)[0]),
                u32::from(fb.popcounts_of(ib)[0]),
            )
        })
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    let at = ((d.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    *d.select_nth_unstable_by(at, f32::total_cmp).1
}

/// Pattern codes below this are counted in a flat array (six features of 3 bits: the default
/// schema's four segments and two evidence tokens); larger ones in a hash map. Counting is on
/// the matcher's hottest path (once per candidate pair).
const DENSE_CODES: u64 = 1 << 18;

/// Counts of pattern codes, made for one pass over the candidates.
#[derive(Default)]
pub struct CodeCounts {
    dense: Vec<u32>,
    sparse: FastMap<u64, u64>,
}

impl CodeCounts {
    /// Counts one pair with this code.
    #[inline]
    pub fn add(&mut self, code: u64) {
        if code >= DENSE_CODES {
            *self.sparse.entry(code).or_default() += 1;
            return;
        }
        if self.dense.is_empty() {
            self.dense = vec![0; DENSE_CODES as usize];
        }
        let slot = &mut self.dense[code as usize];
        if *slot == u32::MAX {
            *self.sparse.entry(code).or_default() += u64::from(*slot);
            *slot = 0;
        }
        *slot += 1;
    }

    /// Joins the counts of two passes' parts.
    pub fn merge(mut self, mut other: CodeCounts) -> CodeCounts {
        if self.dense.is_empty() {
            std::mem::swap(&mut self.dense, &mut other.dense);
        }
        for (i, n) in other.dense.into_iter().enumerate() {
            if n > 0 {
                let slot = &mut self.dense[i];
                match slot.checked_add(n) {
                    Some(s) => *slot = s,
                    None => *self.sparse.entry(i as u64).or_default() += u64::from(n),
                }
            }
        }
        self.sparse = merge_counts(self.sparse, other.sparse);
        self
    }

    /// Code → count for every code seen.
    pub fn into_map(self) -> FastMap<u64, u64> {
        let mut map = self.sparse;
        for (i, n) in self.dense.into_iter().enumerate() {
            if n > 0 {
                *map.entry(i as u64).or_default() += u64::from(n);
            }
        }
        map
    }
}

/// Posterior of each pattern code, looked up once per candidate pair: a flat array for short
/// codes (NaN where unknown), a hash map otherwise.
pub struct Posteriors {
    dense: Vec<f64>,
    sparse: FastMap<u64, f64>,
}

impl Posteriors {
    /// The table for the given codes and posteriors.
    pub fn new(known: impl Iterator<Item = (u64, f64)>) -> Posteriors {
        let mut t = Posteriors {
            dense: vec![f64::NAN; DENSE_CODES as usize],
            sparse: FastMap::default(),
        };
        for (c, p) in known {
            if c < DENSE_CODES {
                t.dense[c as usize] = p;
            } else {
                t.sparse.insert(c, p);
            }
        }
        t
    }

    /// The posterior of `code`, if known.
    #[inline]
    pub fn get(&self, code: u64) -> Option<f64> {
        if code < DENSE_CODES {
            Some(self.dense[code as usize]).filter(|p| !p.is_nan())
        } else {
            self.sparse.get(&code).copied()
        }
    }
}

/// Adds two code → count maps.
pub fn merge_counts(mut a: FastMap<u64, u64>, b: FastMap<u64, u64>) -> FastMap<u64, u64> {
    if a.len() < b.len() {
        return merge_counts(b, a);
    }
    for (c, n) in b {
        *a.entry(c).or_default() += n;
    }
    a
}

/// A fitted Fellegi–Sunter model.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    /// Share of candidate pairs that are matches.
    pub lambda: f64,
    /// P(level | match), per feature.
    pub m: Vec<Vec<f64>>,
    /// P(level | non-match), per feature.
    pub u: Vec<Vec<f64>>,
    /// EM iterations run.
    pub iterations: usize,
}

impl Model {
    /// Posterior probability of a match for a pattern.
    pub fn posterior(&self, p: &[u8]) -> f64 {
        let mut log_ratio = (self.lambda / (1.0 - self.lambda)).ln();
        for (f, &l) in p.iter().enumerate() {
            log_ratio += (self.m[f][l as usize] / self.u[f][l as usize]).ln();
        }
        1.0 / (1.0 + (-log_ratio).exp())
    }

    /// The match weight (log2 likelihood ratio) of a pattern.
    pub fn weight(&self, p: &[u8]) -> f64 {
        p.iter()
            .enumerate()
            .map(|(f, &l)| (self.m[f][l as usize] / self.u[f][l as usize]).log2())
            .sum()
    }
}

/// Smallest probability EM may give a level under the match class: no single disagreement
/// (a move, a surname change) may be treated as impossible for a true match.
pub const M_FLOOR: f64 = 0.005;

/// Level frequencies among random pairs: nearly all random pairs are non-matches, so these are
/// direct estimates of u (as Splink does), free of the EM's tendency to let a "same household"
/// class pass for the match class.
pub fn u_from_random_pairs(
    features: &Features,
    patterns: &[Pattern],
    counts: &[u64],
) -> Vec<Vec<f64>> {
    let mut u: Vec<Vec<f64>> = (0..features.len())
        .map(|f| vec![0.5; features.levels(f)])
        .collect();
    for (p, &c) in patterns.iter().zip(counts) {
        for (f, &l) in p.iter().enumerate() {
            u[f][l as usize] += c as f64;
        }
    }
    u.into_iter().map(normalised).collect()
}

/// Fewest anchor pairs for their level frequencies to be used as m.
pub const MIN_ANCHORS: u64 = 30;

/// m for the segment features from *anchor* pairs: candidates that agree on an identifier
/// token (the same keyed NHS number or UPN) are near-certain matches, so their level
/// frequencies estimate m directly. Returns `None` per feature when anchors are too few (EM then
/// fits that feature's m). Evidence features are left to EM (anchors agree on them by choice).
pub fn m_from_anchors(
    features: &Features,
    patterns: &[Pattern],
    counts: &[u64],
) -> (Vec<Option<Vec<f64>>>, u64) {
    let nseg = features.segments.len();
    let mut acc: Vec<Vec<f64>> = (0..nseg).map(|f| vec![0.5; features.levels(f)]).collect();
    let mut anchors = 0u64;
    for (p, &c) in patterns.iter().zip(counts) {
        if p[nseg..].contains(&0) {
            anchors += c;
            for f in 0..nseg {
                acc[f][p[f] as usize] += c as f64;
            }
        }
    }
    let mut out: Vec<Option<Vec<f64>>> = vec![None; features.len()];
    if anchors >= MIN_ANCHORS {
        for (f, v) in acc.into_iter().enumerate() {
            out[f] = Some(floored(normalised(v)));
        }
    }
    (out, anchors)
}

/// `n` random cross-input pairs of global ids, deterministic for the inputs.
pub fn random_pairs(inputs: &Inputs, n: usize, within_files: bool) -> Vec<(u32, u32)> {
    let total = inputs.total() as u64;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ total;
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n);
    let mut tries = 0;
    while out.len() < n && tries < n * 20 {
        tries += 1;
        let a = (next() % total) as u32;
        let b = (next() % total) as u32;
        if a != b && (within_files || inputs.file_of(a) != inputs.file_of(b)) {
            out.push((a.min(b), a.max(b)));
        }
    }
    out
}

/// Fits the model by EM over pattern counts. With `fixed_u`, only m and λ are estimated.
/// `max_matches` bounds λ: a record matches at most one record of each other input, so there
/// cannot be more matches than Σ min(nᵢ, nⱼ) over input pairs. Deterministic: fixed start,
/// fixed iteration order.
pub fn fit(
    features: &Features,
    patterns: &[Pattern],
    counts: &[u64],
    expected_matches: f64,
    max_matches: f64,
    fixed_u: Option<&[Vec<f64>]>,
    fixed_m: &[Option<Vec<f64>>],
) -> Model {
    let nf = features.len();
    let total: f64 = counts.iter().sum::<u64>() as f64;
    let mut m: Vec<Vec<f64>> = (0..nf)
        .map(|f| {
            let n = features.levels(f);
            if f < features.segments.len() {
                // Matches mostly agree well; missing is as likely as anywhere.
                let mut v: Vec<f64> = (0..n - 1).map(|l| 0.5f64.powi(l as i32 + 1)).collect();
                v.push(0.1);
                normalised(v)
            } else {
                normalised(vec![0.6, 0.01, 0.39])
            }
        })
        .collect();
    let mut u: Vec<Vec<f64>> = (0..nf)
        .map(|f| {
            let n = features.levels(f);
            if f < features.segments.len() {
                let mut v: Vec<f64> = (0..n - 1)
                    .map(|l| 0.5f64.powi((n - 2 - l) as i32 + 1))
                    .collect();
                v.push(0.1);
                normalised(v)
            } else {
                normalised(vec![0.001, 0.6, 0.399])
            }
        })
        .collect();
    if let Some(fu) = fixed_u {
        u = fu.to_vec();
    }
    for (f, fm) in fixed_m.iter().enumerate() {
        if let Some(v) = fm {
            m[f] = v.clone();
        }
    }
    let mut lambda = (expected_matches / total.max(1.0)).clamp(1e-6, 0.5);
    let mut iterations = 0;
    for it in 0..200 {
        iterations = it + 1;
        let model = Model {
            lambda,
            m: m.clone(),
            u: u.clone(),
            iterations,
        };
        let mut mm: Vec<Vec<f64>> = (0..nf).map(|f| vec![1e-9; features.levels(f)]).collect();
        let mut uu = mm.clone();
        let mut sum_g = 0.0;
        for (p, &c) in patterns.iter().zip(counts) {
            let g = model.posterior(p);
            let c = c as f64;
            sum_g += g * c;
            for (f, &l) in p.iter().enumerate() {
                mm[f][l as usize] += g * c;
                uu[f][l as usize] += (1.0 - g) * c;
            }
        }
        let cap = (max_matches / total.max(1.0)).clamp(1e-9, 1.0 - 1e-9);
        let new_lambda = (sum_g / total.max(1.0)).clamp(1e-9, cap);
        let new_m: Vec<Vec<f64>> = mm
            .into_iter()
            .enumerate()
            .map(|(f, v)| match fixed_m.get(f).and_then(|x| x.as_ref()) {
                Some(fm) => fm.clone(),
                None => floored(normalised(v)),
            })
            .collect();
        let new_u: Vec<Vec<f64>> = match fixed_u {
            Some(fu) => fu.to_vec(),
            None => uu.into_iter().map(normalised).collect(),
        };
        let delta = (new_lambda - lambda).abs()
            + new_m
                .iter()
                .flatten()
                .zip(m.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>();
        lambda = new_lambda;
        m = new_m;
        u = new_u;
        if delta < 1e-7 {
            break;
        }
    }
    Model {
        lambda,
        m,
        u,
        iterations,
    }
}

/// Raises every level to at least [`M_FLOOR`] and renormalises.
fn floored(v: Vec<f64>) -> Vec<f64> {
    normalised(v.into_iter().map(|x| x.max(M_FLOOR)).collect())
}

fn normalised(v: Vec<f64>) -> Vec<f64> {
    let s: f64 = v.iter().sum();
    v.into_iter().map(|x| (x / s).max(1e-12)).collect()
}

/// The chosen operating point.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Operating {
    /// Posterior at or above which a pair is a match.
    pub threshold: f64,
    /// Posterior at or above which a non-match pair goes to clerical review.
    pub review: f64,
    /// Estimated precision at the threshold (from the fitted model).
    pub est_precision: f64,
    /// Estimated recall at the threshold.
    pub est_recall: f64,
    /// Estimated F1.
    pub est_f1: f64,
    /// Expected number of true matches among the candidates.
    pub est_matches: f64,
}

/// Chooses the threshold maximising expected F1 (or uses `fixed`), and estimates precision and
/// recall there. `posteriors` holds (posterior, number of pairs), sorted by posterior
/// descending; equal posteriors may appear in several entries.
pub fn operating_point(
    posteriors: &[(f64, u64)],
    fixed: Option<f64>,
    review: Option<f64>,
) -> Operating {
    let total_match: f64 = posteriors.iter().map(|&(p, n)| p * n as f64).sum();
    let mut best = (0.5, f64::MIN, 0.0, 0.0);
    let mut tp = 0.0;
    let mut predicted = 0.0;
    for (i, &(p, n)) in posteriors.iter().enumerate() {
        tp += p * n as f64;
        predicted += n as f64;
        if n == 0 {
            continue;
        }
        let prec = tp / predicted;
        let rec = if total_match > 0.0 {
            tp / total_match
        } else {
            0.0
        };
        let f1 = if prec + rec > 0.0 {
            2.0 * prec * rec / (prec + rec)
        } else {
            0.0
        };
        let next_differs = posteriors.get(i + 1).is_none_or(|&(q, _)| q < p);
        match fixed {
            Some(t) if p >= t && next_differs => best = (t, f1, prec, rec),
            None if next_differs && f1 > best.1 => best = (p, f1, prec, rec),
            _ => {}
        }
    }
    if let Some(t) = fixed {
        if best.1 == f64::MIN {
            best = (t, 0.0, 0.0, 0.0);
        }
    }
    let threshold = best.0;
    Operating {
        threshold,
        review: review.unwrap_or((threshold * 0.2).max(0.05)).min(threshold),
        est_precision: best.2,
        est_recall: best.3,
        est_f1: best.1.max(0.0),
        est_matches: total_match,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_thresholds_give_exactly_the_levels_of_the_division() {
        for sum in 2..=700u32 {
            let mins = DICE_LEVELS.map(|b| min_count_for(b, sum));
            for and in 0..=sum / 2 {
                let by_count = mins
                    .iter()
                    .position(|&m| and >= m)
                    .unwrap_or(DICE_LEVELS.len()) as u8;
                // Every split of the sum gives the same Dice: it depends on the sum only.
                let want = dice_level(similarity::dice(and, sum / 2, sum - sum / 2));
                assert_eq!(by_count, want, "and {and} sum {sum}");
            }
        }
    }

    #[test]
    fn a_bound_no_count_reaches_is_never_met() {
        assert_eq!(min_count_for(1.5, 10), u32::MAX);
        assert_eq!(min_count_for(0.0, 10), 0);
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;

    #[test]
    fn code_counts_agree_with_a_plain_map_across_merges() {
        let codes: Vec<u64> = (0..5000u64)
            .map(|i| {
                if i % 7 == 0 {
                    DENSE_CODES + i % 13
                } else {
                    (i * 2654435761) % 300
                }
            })
            .collect();
        let mut want: FastMap<u64, u64> = FastMap::default();
        for &c in &codes {
            *want.entry(c).or_default() += 1;
        }
        let (a, b) = codes.split_at(1234);
        let (mut x, mut y) = (CodeCounts::default(), CodeCounts::default());
        a.iter().for_each(|&c| x.add(c));
        b.iter().for_each(|&c| y.add(c));
        assert_eq!(x.merge(y).into_map(), want);
        // An empty part merges either way round.
        let mut z = CodeCounts::default();
        z.add(5);
        assert_eq!(CodeCounts::default().merge(z).into_map().get(&5), Some(&1));
    }

    #[test]
    fn posteriors_know_only_what_they_were_given() {
        let t = Posteriors::new([(3, 0.25), (DENSE_CODES + 1, 0.5)].into_iter());
        assert_eq!(t.get(3), Some(0.25));
        assert_eq!(t.get(DENSE_CODES + 1), Some(0.5));
        assert_eq!(t.get(4), None);
        assert_eq!(t.get(DENSE_CODES + 2), None);
    }
}
