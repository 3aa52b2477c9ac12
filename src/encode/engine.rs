//! The per-worker encoder: batches of parsed records to stored filters, popcounts and keyed
//! exact tokens, written straight into the block's output space.
//!
//! The encoder is bound by memory latency, so what is cached is shaped to cost a cache line or
//! two per row, and each batch is worked column by column, so that its lookups have their cache
//! misses in flight together (docs/DESIGN-NOTES.md, "Encoder"):
//! - **Values**, per field, in a dictionary keyed by the *raw, unsalted* bytes: the status, the
//!   token parts (text, and an interned id where a cache needs one), and either the segment's
//!   hashed bits and stored (hardened) form (unsalted fields) or the ids of the filter tokens
//!   (salted fields). A name is normalised once, whatever the year of birth it comes with.
//! - **Salted values**, per field, by (salt, value): the hashed bits and stored form. Their
//!   bits come from dense per-salt tables of each filter token's positions: the tokens
//!   (bigrams) and salts (years) are few, so those tables stay small.
//! - **Keyed exact tokens**, per kind, by the ids of their parts.
//! - A segment fed by several values is the XOR of their stored forms, corrected for the bits
//!   they share, when its hardening is linear (diffusion, folding); otherwise their bits are
//!   ORed and hardened per row.
//!
//! A cache that does not earn its keep switches itself off, and a worker whose caches outgrow
//! their bounds empties them. Caching never changes results, only speed: the output is
//! identical for any thread count and any order of rows (tests/vectors.rs, tests/hardening.rs).

use super::blocks::RecordBatch;
use super::table::{hash_bytes, Dict, Interner, Payload, U64Map, WordMap};
use super::{decode, enc_name, normalise_value, Plan, Reject};
use crate::colmap::TextEncoding;
use crate::harden;
use crate::normalise::{self, Invalid};
use crate::schema::{Normaliser, SaltMissing, Transform};
use crate::tokens::{self, TokenBuf, Value};

/// Number of token-part transforms (see [`Transform::ALL`]).
pub const PARTS: usize = 5;
/// No interned id.
const NO_ID: u32 = u32::MAX;
/// A part reference for a part the value does not have.
const NO_PART: u64 = u64::MAX;
/// A cache that finds its key less often than this, once it has seen [`PROBE`] lookups, is
/// switched off. A keyed-token cache miss (a lookup and an insert, often a cache miss on a
/// large table) costs about a third of the HMAC a hit saves; a value or salted-value cache
/// saves a normalisation or a few dozen bit operations per hit, and pays at lower hit rates.
const MIN_TOKEN_HIT_RATE: f64 = 0.3;
const MIN_VALUE_HIT_RATE: f64 = 0.05;
const MIN_SALTED_HIT_RATE: f64 = 0.2;
const PROBE: u64 = 1 << 16;
/// Bounds on a worker's caches: past them, the worker empties its caches and starts again
/// (only inputs far beyond national scale, or schemas that put unique values in the filter,
/// get there).
const MAX_DICT_WORDS: usize = 1 << 25;
const MAX_INTERNED: usize = 1 << 22;
const MAX_CACHED: usize = 1 << 22;
/// Salts with a position table each; records with other salts hash their tokens directly.
const MAX_SALTS: usize = 1 << 12;

/// Status codes kept in a value's first payload word.
const ST_PRESENT: u8 = 0;
const ST_MISSING: u8 = 1;
const ST_BAD_BYTES: u8 = 2;
const ST_INVALID: u8 = 3; // + index into Invalid::ALL

/// Why a raw field value gives no usable value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Empty or a null marker.
    Missing,
    /// Unusable, with the reason.
    Invalid(Invalid),
    /// Bytes not valid in the declared text encoding.
    BadBytes,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Missing => ST_MISSING,
            Status::BadBytes => ST_BAD_BYTES,
            Status::Invalid(why) => ST_INVALID + invalid_index(why) as u8,
        }
    }
}

fn invalid_index(why: Invalid) -> usize {
    Invalid::ALL.iter().position(|&w| w == why).unwrap_or(0)
}

/// How one field is encoded and how its values are laid out.
///
/// A value's payload (in its field's dictionary, or in the batch's scratch space) is: a word
/// holding the status, whether the value sets bits, the payload's length and the number of
/// filter tokens; a reference per kept token part (id, and the offset and length of its text);
/// then, for an unsalted field with a segment, the segment's hashed words and, when kept, its
/// stored words, or, for a salted field, the ids of its filter tokens (two per word); then the
/// parts' texts.
#[derive(Clone, Debug)]
pub struct FieldPlan {
    /// The field's segment, bits per token and the segment's first bit.
    pub segment: Option<usize>,
    pub k: u32,
    pub start_bit: u32,
    /// Filter tokens are salted (their bits depend on the record's salt).
    pub salted: bool,
    /// Values are looked up in a dictionary (not for identifiers: unique per child, so a
    /// dictionary would only cost).
    pub cached: bool,
    /// Per transform: its slot among the kept parts (those a keyed token or the salt uses).
    part_slot: [Option<usize>; PARTS],
    nparts: usize,
    /// The segment's hashed words, and its stored words when values keep their stored form.
    seg_words: usize,
    stored_words: usize,
    /// Values keep their hashed words (not needed when the field alone feeds a hardened
    /// segment: its stored form is all that is used).
    keep_raw: bool,
}

impl FieldPlan {
    /// `kept`: which transforms some keyed token or the salt uses; `segment`: (index, bits per
    /// token, first bit, hashed words, stored words kept per value or 0, whether values keep
    /// their hashed words).
    pub fn new(
        segment: Option<(usize, u32, u32, usize, usize, bool)>,
        salted: bool,
        cached: bool,
        kept: [bool; PARTS],
    ) -> FieldPlan {
        let mut part_slot = [None; PARTS];
        let mut n = 0;
        for (slot, keep) in part_slot.iter_mut().zip(kept) {
            if keep {
                *slot = Some(n);
                n += 1;
            }
        }
        FieldPlan {
            segment: segment.map(|s| s.0),
            k: segment.map_or(0, |s| s.1),
            start_bit: segment.map_or(0, |s| s.2),
            salted: salted && segment.is_some(),
            cached,
            part_slot,
            nparts: n,
            seg_words: segment.map_or(0, |s| s.3),
            stored_words: segment.map_or(0, |s| s.4),
            keep_raw: segment.is_some_and(|s| s.5),
        }
    }

    /// Hashed words kept per value.
    fn raw_words(&self) -> usize {
        if self.keep_raw {
            self.seg_words
        } else {
            0
        }
    }

    /// Words of a payload before its bits (unsalted) or token ids (salted).
    fn body_at(&self) -> usize {
        1 + self.nparts
    }

    /// Words of an unsalted value's bits and stored form in its payload.
    fn bits_words(&self) -> usize {
        if self.salted || self.segment.is_none() {
            0
        } else {
            self.raw_words() + self.stored_words
        }
    }

    /// Words a salted value keeps per salt: its hashed words (when kept) and stored form.
    fn salted_words(&self) -> usize {
        self.raw_words() + self.stored_words
    }

    /// Whether values keep the segment's stored form.
    fn keeps_stored(&self) -> bool {
        self.stored_words > 0
    }
}

// A payload's first word: status (bits 0..8), sets bits (bit 8), length in words (16..32),
// number of filter tokens (32..64).
const META_BITS: u64 = 1 << 8;

fn payload_len(meta: u64) -> usize {
    (meta >> 16 & 0xffff) as usize
}

fn meta_ntok(meta: u64) -> usize {
    (meta >> 32) as usize
}

/// Where a payload's part texts start.
fn text_at(fp: &FieldPlan, meta: u64) -> usize {
    fp.body_at()
        + fp.bits_words()
        + if fp.salted {
            meta_ntok(meta).div_ceil(2)
        } else {
            0
        }
}

/// Part `t` of a payload: its interned id (if it has one) and its text; `None` if the value
/// has no such part.
fn part_of<'w>(fp: &FieldPlan, words: &'w [u64], t: usize) -> Option<(Option<u32>, &'w [u8])> {
    let r = *words.get(1 + fp.part_slot[t]?)?;
    if r == NO_PART {
        return None;
    }
    let id = r as u32;
    let (off, len) = ((r >> 32) as u16 as usize, (r >> 48) as usize);
    let text = bytemuck::cast_slice::<u64, u8>(&words[text_at(fp, words[0])..]);
    Some(((id != NO_ID).then_some(id), &text[off..off + len]))
}

/// The ids of a salted payload's filter tokens.
fn token_ids<'w>(fp: &FieldPlan, words: &'w [u64]) -> impl Iterator<Item = u32> + 'w {
    let a = fp.body_at();
    let n = meta_ntok(words[0]);
    words[a..a + n.div_ceil(2)]
        .iter()
        .flat_map(|&w| [w as u32, (w >> 32) as u32])
        .take(n)
}

/// Per salt, the segment-relative bit positions of each filter token, computed on first use.
#[derive(Default)]
struct Positions {
    /// Per salt id: `k` positions per token id, and which token ids are filled in.
    tables: Vec<(Vec<u16>, Vec<u64>)>,
}

impl Positions {
    /// The positions of token `tok` under salt `salt`, computing them with `compute` (which
    /// appends `k` segment-relative positions) the first time.
    #[inline]
    fn get(
        &mut self,
        salt: usize,
        tok: u32,
        k: usize,
        compute: impl FnOnce(&mut Vec<u16>),
    ) -> &[u16] {
        let t = tok as usize;
        let known = self
            .tables
            .get(salt)
            .is_some_and(|(_, known)| known.get(t / 64).is_some_and(|w| w >> (t % 64) & 1 == 1));
        if !known {
            self.fill(salt, t, k, compute);
        }
        &self.tables[salt].0[t * k..(t + 1) * k]
    }

    #[cold]
    fn fill(&mut self, salt: usize, t: usize, k: usize, compute: impl FnOnce(&mut Vec<u16>)) {
        if self.tables.len() <= salt {
            self.tables.resize_with(salt + 1, Default::default);
        }
        let (pos, known) = &mut self.tables[salt];
        if known.len() <= t / 64 {
            let n = (t / 64 + 1).next_power_of_two();
            known.resize(n, 0);
            pos.resize(n * 64 * k, 0);
        }
        let mut got = Vec::with_capacity(k);
        compute(&mut got);
        pos[t * k..(t + 1) * k].copy_from_slice(&got);
        known[t / 64] |= 1 << (t % 64);
    }
}

/// One field's caches.
struct FieldState {
    dict: Dict,
    /// The dictionary is in use (switched off, between batches, when it does not earn its
    /// keep).
    use_dict: bool,
    /// Interned token-part texts, for the ids that keyed-token caches and the salt use.
    parts: Interner,
    /// Per transform: its parts get ids (a live cache or the salt needs them).
    need_id: [bool; PARTS],
    /// Interned filter tokens, and their positions per salt.
    tokens: Interner,
    positions: Positions,
    /// Salted fields: hashed words and stored form by (salt, value), while it earns its keep.
    salted: WordMap,
    salted_on: bool,
    /// Payloads of this batch's values computed without the dictionary.
    scratch: Vec<u64>,
}

impl FieldState {
    /// The payload `cur` points to.
    #[inline]
    fn payload(&self, cur: Cur) -> &[u64] {
        match cur {
            Cur::None => &[],
            Cur::Cached(p, len) => self.dict.payload(p, len as usize),
            Cur::Scratch(at, len) => &self.scratch[at as usize..(at + len) as usize],
        }
    }
}

/// Where a row's value of a field is.
#[derive(Clone, Copy)]
enum Cur {
    /// Not present (missing, invalid or unmapped).
    None,
    /// In the dictionary: payload offset and length.
    Cached(Payload, u32),
    /// In the field's batch scratch: offset and length.
    Scratch(u32, u32),
}

/// How a segment's stored form is built from the values that feed it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SegMode {
    /// No transform: the values' bits are ORed.
    Plain,
    /// One field feeds the segment: its value's stored form.
    Single,
    /// The transforms are linear and every value keeps its stored form: the XOR of the
    /// stored forms, corrected for the bits the values share (T(a|b) = T(a)^T(b)^T(a&b)).
    Linear,
    /// Otherwise: the values' bits are ORed, then hardened.
    General,
}

/// The row's salt: salted fields are hashed under this salt (an id in [`Worker::salts`];
/// [`MARKER`] is the "no salt" marker, the empty text), or [`NO_BITS`] (no salt, and the
/// schema says salted fields then set no bits). Salts past [`MAX_SALTS`] have no position
/// tables: their tokens are hashed directly.
type Salt = usize;
const MARKER: Salt = 0;
const NO_BITS: Salt = usize::MAX;

/// Token-key flags of a row and kind: the token is not emitted (a part is missing), or its
/// parts have no ids (hashed without the cache).
const T_ABSENT: u8 = 1;
const T_UNCACHED: u8 = 2;

/// Counts of one field's values over a block.
#[derive(Clone, Default)]
pub struct FieldCounts {
    pub present: u64,
    pub missing: u64,
    /// By [`Invalid::ALL`] index; the last slot counts invalid bytes.
    pub invalid: [u64; Invalid::ALL.len() + 1],
}

/// A row of the batch being encoded.
struct RowState {
    /// Still to be encoded (not rejected).
    live: bool,
    salt: Salt,
    in_filter: u32,
    /// First column with bytes invalid for the declared encoding.
    bad_bytes: Option<usize>,
    /// The record id (trimmed), in the batch's `ids`.
    id: (u32, u32),
}

/// Where a batch's encoded rows go: the block's output space and lists.
pub struct BatchOut<'o, 'd> {
    pub dest: &'o mut super::Dest<'d>,
    pub out: &'o mut super::BlockOut,
    /// Encoded rows written so far in the block.
    pub encoded: &'o mut usize,
}

/// Buffers for computing values and building segments.
#[derive(Default)]
struct Scratch {
    acc: Vec<u64>,
    overlap: Vec<u64>,
    raw: Vec<u64>,
    harden: harden::Scratch,
    payload: Vec<u64>,
    text: Vec<u8>,
    msg: Vec<u8>,
    pos: Vec<u32>,
    tokens: TokenBuf,
    decode: String,
}

/// A keyed-token part a field gives: the token kind, the shift of the part's id in the cache
/// key (`u32::MAX`: the kind is not cached), and the payload word with the part's reference.
#[derive(Clone, Copy)]
struct TokenUse {
    kind: usize,
    shift: u32,
    word: usize,
}

/// Encodes records for one worker thread.
pub struct Worker<'p, 'a> {
    plan: &'p Plan<'a>,
    fields: Vec<FieldState>,
    /// Per token kind: token by the ids of its parts, while it earns its keep.
    token_cache: Vec<U64Map>,
    token_cache_on: Vec<bool>,
    /// Per field: the keyed-token parts it gives; per token kind: some part's field has no
    /// column (the token is never emitted).
    token_uses: Vec<Vec<TokenUse>>,
    token_unmapped: Vec<bool>,
    /// Salt texts → salt ids; and per salt-source part id, its salt id (dense).
    salts: Interner,
    salt_of_part: Vec<u32>,
    /// Per batch: each row's state; per row and field, where its value and its salted bits
    /// are, and whether it sets bits; per row and token kind, the cache key and flags.
    rows: Vec<RowState>,
    cur: Vec<Cur>,
    /// Per segment, how its stored form is built.
    seg_mode: Vec<SegMode>,
    /// Per batch: each row's stored filter, built as its values are looked up (while they are
    /// in cache), then copied to the output; per row, the hashed bits of its segments (stored
    /// layout of `Schema::segments`) and which segments have a value yet.
    fbuf: Vec<u64>,
    acc: Vec<u64>,
    seen: Vec<bool>,
    tkeys: Vec<u64>,
    tflags: Vec<u8>,
    hashes: Vec<u64>,
    keys: Vec<u64>,
    /// Per batch: the rows' record ids, one after another.
    ids: String,
    sc: Scratch,
    /// Per field counts for the block being encoded.
    pub counts: Vec<FieldCounts>,
}

/// `keys` entry of a row whose salted bits need no lookup.
const ABSENT: u64 = u64::MAX;

impl<'p, 'a> Worker<'p, 'a> {
    /// A worker with empty caches.
    pub fn new(plan: &'p Plan<'a>) -> Self {
        let nf = plan.schema.fields.len();
        let mut salts = Interner::default();
        let marker = salts.id(b"") as usize;
        debug_assert_eq!(marker, MARKER);
        let token_uses = (0..nf)
            .map(|fi| {
                let fp = &plan.fields[fi];
                let mut uses = Vec::new();
                for (kind, t) in plan.schema.tokens.iter().enumerate() {
                    for (i, &(f, tr)) in t.parts.iter().enumerate() {
                        if f != fi {
                            continue;
                        }
                        let Some(slot) = fp.part_slot[tr.index()] else {
                            continue;
                        };
                        let shift = if t.parts.len() <= 2 {
                            32 * (1 - i as u32)
                        } else {
                            u32::MAX
                        };
                        uses.push(TokenUse {
                            kind,
                            shift,
                            word: 1 + slot,
                        });
                    }
                }
                uses
            })
            .collect();
        let mut w = Worker {
            plan,
            fields: plan
                .fields
                .iter()
                .map(|fp| FieldState {
                    dict: Dict::default(),
                    use_dict: fp.cached,
                    parts: Interner::default(),
                    need_id: [false; PARTS],
                    tokens: Interner::default(),
                    positions: Positions::default(),
                    salted: WordMap::new(if fp.salted { fp.salted_words() } else { 0 }),
                    salted_on: fp.cached && fp.salted,
                    scratch: Vec::new(),
                })
                .collect(),
            token_cache: plan
                .schema
                .tokens
                .iter()
                .map(|_| U64Map::default())
                .collect(),
            token_cache_on: plan
                .schema
                .tokens
                .iter()
                .map(|t| t.parts.len() <= 2)
                .collect(),
            token_uses,
            token_unmapped: plan
                .schema
                .tokens
                .iter()
                .map(|t| t.parts.iter().any(|(f, _)| plan.unmapped.contains(f)))
                .collect(),
            salts,
            salt_of_part: Vec::new(),
            rows: Vec::new(),
            cur: Vec::new(),
            seg_mode: plan
                .segment_fields
                .iter()
                .enumerate()
                .map(|(seg, fis)| {
                    let keeps = fis.iter().all(|&fi| plan.fields[fi].keeps_stored());
                    if !plan.hardener.transforms() {
                        SegMode::Plain
                    } else if fis.len() == 1 && keeps {
                        SegMode::Single
                    } else if keeps && plan.hardener.segment_is_linear(seg) {
                        SegMode::Linear
                    } else {
                        SegMode::General
                    }
                })
                .collect(),
            fbuf: Vec::new(),
            acc: Vec::new(),
            seen: Vec::new(),
            tkeys: Vec::new(),
            tflags: Vec::new(),
            hashes: Vec::new(),
            keys: Vec::new(),
            ids: String::new(),
            sc: Scratch::default(),
            counts: vec![FieldCounts::default(); nf],
        };
        w.set_need_id();
        w
    }

    /// Which parts get interned ids: the salt's, and those of keyed tokens whose cache is on.
    fn set_need_id(&mut self) {
        let schema = self.plan.schema;
        for f in &mut self.fields {
            f.need_id = [false; PARTS];
        }
        if let Some(s) = &schema.salt {
            self.fields[s.source.0].need_id[s.source.1.index()] = true;
        }
        for (t, on) in schema.tokens.iter().zip(&self.token_cache_on) {
            if *on {
                for &(fi, tr) in &t.parts {
                    self.fields[fi].need_id[tr.index()] = true;
                }
            }
        }
    }

    /// Switches off caches that do not earn their keep, and empties every cache when one has
    /// outgrown its bound (between batches, so no reference into a cache outlives it).
    fn tend_caches(&mut self) {
        for f in &mut self.fields {
            if f.use_dict
                && f.dict
                    .hit_rate(PROBE)
                    .is_some_and(|r| r < MIN_VALUE_HIT_RATE)
            {
                f.use_dict = false;
                f.dict = Dict::default();
            }
            if f.salted_on
                && f.salted
                    .hit_rate(PROBE)
                    .is_some_and(|r| r < MIN_SALTED_HIT_RATE)
            {
                f.salted_on = false;
                f.salted = WordMap::new(0);
            }
        }
        let mut changed = false;
        for (c, on) in self.token_cache.iter_mut().zip(&mut self.token_cache_on) {
            if *on && c.hit_rate(PROBE).is_some_and(|r| r < MIN_TOKEN_HIT_RATE) {
                *on = false;
                *c = U64Map::default();
                changed = true;
            }
        }
        if changed {
            self.set_need_id();
        }
        let over = self.fields.iter().any(|f| {
            f.dict.arena_words() > MAX_DICT_WORDS
                || f.parts.len() > MAX_INTERNED
                || f.tokens.len() > MAX_INTERNED
                || f.salted.len() > MAX_CACHED
        }) || self.salts.len() > MAX_INTERNED
            || self.token_cache.iter().any(|c| c.len() > MAX_CACHED);
        if over {
            let on: Vec<(bool, bool)> = self
                .fields
                .iter()
                .map(|f| (f.use_dict, f.salted_on))
                .collect();
            let tok_on = self.token_cache_on.clone();
            let mut fresh = Worker::new(self.plan);
            fresh.counts = std::mem::take(&mut self.counts);
            *self = fresh;
            for (f, (d, s)) in self.fields.iter_mut().zip(on) {
                f.use_dict = d;
                f.salted_on = s;
                if !s {
                    f.salted = WordMap::new(0);
                }
            }
            self.token_cache_on = tok_on;
            self.set_need_id();
        }
    }

    /// Encodes a batch of parsed records, whose first is row `first_row` of the export and
    /// `offset` of its block: accepted rows are written to `o` in order, rejected rows listed.
    /// Values are looked up column by column, so that each step has the whole batch's memory
    /// loads in flight together, where row by row each lookup would wait for its own cache
    /// misses; then each accepted row is finished in one pass.
    pub fn encode_batch(
        &mut self,
        batch: &RecordBatch<'_>,
        first_row: u64,
        offset: usize,
        o: BatchOut<'_, '_>,
    ) {
        let plan = self.plan;
        let n = batch.len();
        self.tend_caches();
        self.start_batch(batch, first_row, o.out);
        for si in 0..plan.sources.len() {
            self.look_up_column(batch, si);
        }
        self.check_rows(batch, first_row, o.out);
        self.finish_general_segments(n);
        self.prefetch_tokens(n);
        let words = plan.schema.stored_words();
        let pw = plan.schema.segments.len() + 1;
        let ntok = plan.schema.tokens.len();
        let mut toks = [0u64; 256];
        let out = &mut *o.out;
        for r in 0..n {
            if !self.rows[r].live {
                continue;
            }
            let e = *o.encoded;
            let filter = &mut self.fbuf[r * words..(r + 1) * words];
            if plan.hardener.transforms() {
                let (a, b) = self.rows[r].id;
                plan.hardener.apply_blip(
                    filter,
                    &plan.map.agency,
                    &self.ids[a as usize..b as usize],
                    &mut self.sc.harden,
                );
            }
            o.dest.filters[e * words..(e + 1) * words].copy_from_slice(filter);
            let pcs = &mut o.dest.popcounts[e * pw..(e + 1) * pw];
            pcs[0] = filter.iter().map(|w| w.count_ones()).sum::<u32>() as u16;
            for (p, s) in pcs[1..].iter_mut().zip(&plan.schema.stored_segments) {
                *p = filter[s.word_range()]
                    .iter()
                    .map(|w| w.count_ones())
                    .sum::<u32>() as u16;
            }
            let nt = self.row_tokens(r, &mut toks[..ntok]);
            let toks = &mut toks[..nt];
            toks.sort_unstable();
            let t = out.tokens;
            if let Some(dst) = o.dest.tokens.get_mut(t..t + nt) {
                dst.copy_from_slice(toks);
            }
            out.tokens += nt;
            out.token_counts.push(nt as u8);
            let id = self.row_id(r);
            if plan.opaque_ids {
                out.ids
                    .push(plan.hasher.opaque_ref(&plan.map.agency, id).as_bytes());
                out.original_ids.push(id.as_bytes());
            } else {
                out.ids.push(id.as_bytes());
            }
            out.offsets.push((offset + r) as u32);
            out.lines.push(batch.line(r));
            *o.encoded += 1;
        }
    }

    /// Row `r`'s record id.
    fn row_id(&self, r: usize) -> &str {
        let (a, b) = self.rows[r].id;
        &self.ids[a as usize..b as usize]
    }

    /// Checks each row's field count and record id, and resets the batch's state.
    fn start_batch(&mut self, batch: &RecordBatch<'_>, first_row: u64, out: &mut super::BlockOut) {
        let plan = self.plan;
        let n = batch.len();
        let nf = plan.schema.fields.len();
        let ntok = plan.schema.tokens.len();
        let salt0 = match plan.schema.salt.as_ref() {
            Some(s) if s.when_missing == SaltMissing::Skip => NO_BITS,
            _ => MARKER,
        };
        self.rows.clear();
        self.ids.clear();
        let id_col = plan.header[plan.id_column].as_str();
        for r in 0..n {
            let rec = batch.get(r);
            let at = (first_row + r as u64, batch.line(r));
            let mut st = RowState {
                live: false,
                salt: salt0,
                in_filter: 0,
                bad_bytes: None,
                id: (0, 0),
            };
            let checked = if rec.len() != plan.header.len() {
                Err(reject(
                    at,
                    None,
                    "wrong_field_count",
                    format!(
                        "has {} fields, the header has {}",
                        rec.len(),
                        plan.header.len()
                    ),
                ))
            } else {
                match decode(
                    plan.map.encoding,
                    rec.get(plan.id_column),
                    &mut self.sc.decode,
                )
                .map(str::trim)
                {
                    None => Err(reject(
                        at,
                        Some(id_col),
                        "invalid_encoding",
                        format!(
                            "column `{id_col}` is not valid {}",
                            enc_name(plan.map.encoding)
                        ),
                    )),
                    Some("") => Err(reject(
                        at,
                        Some(id_col),
                        "missing_record_id",
                        format!("record id column `{id_col}` is empty"),
                    )),
                    Some(id) if id.len() > super::MAX_RECORD_ID_BYTES => Err(reject(
                        at,
                        Some(id_col),
                        "record_id_too_long",
                        format!(
                            "record id is longer than {} bytes",
                            super::MAX_RECORD_ID_BYTES
                        ),
                    )),
                    Some(id) => {
                        let start = self.ids.len() as u32;
                        self.ids.push_str(id);
                        Ok((start, self.ids.len() as u32))
                    }
                }
            };
            match checked {
                Ok(id) => {
                    st.live = true;
                    st.id = id;
                }
                Err(rej) => out.rejects.push(rej),
            }
            self.rows.push(st);
        }
        self.cur.clear();
        self.cur.resize(n * nf, Cur::None);
        self.fbuf.clear();
        self.fbuf.resize(n * plan.schema.stored_words(), 0);
        self.acc.clear();
        self.acc.resize(n * plan.schema.words(), 0);
        self.seen.clear();
        self.seen.resize(n * plan.schema.segments.len(), false);
        self.tkeys.clear();
        self.tkeys.resize(n * ntok, 0);
        self.tflags.clear();
        let kind_flags: Vec<u8> = (0..ntok)
            .map(|kind| {
                let mut f = 0;
                if self.token_unmapped[kind] {
                    f |= T_ABSENT;
                }
                if !self.token_cache_on[kind] {
                    f |= T_UNCACHED;
                }
                f
            })
            .collect();
        for st in &self.rows {
            let dead = if st.live { 0 } else { T_ABSENT };
            self.tflags.extend(kind_flags.iter().map(|f| f | dead));
        }
        for f in &mut self.fields {
            f.scratch.clear();
        }
    }

    /// Looks up source `si`'s column for every live row of the batch: hashes and table slots
    /// first, then the records the slots point to, then the values themselves (computing the
    /// ones not yet known); then counts them, notes their keyed-token parts and, for the salt
    /// source, sets each row's salt.
    fn look_up_column(&mut self, batch: &RecordBatch<'_>, si: usize) {
        let plan = self.plan;
        let src = &plan.sources[si];
        let (fi, col) = (src.field, src.column);
        let nf = plan.schema.fields.len();
        let ntok = plan.schema.tokens.len();
        let fp = &plan.fields[fi];
        let n = batch.len();
        let Worker {
            fields,
            rows,
            cur,
            tkeys,
            tflags,
            hashes,
            token_uses,
            counts,
            sc,
            seg_mode,
            fbuf,
            acc,
            seen,
            ..
        } = self;
        let f = &mut fields[fi];
        let use_dict = f.use_dict;
        // The column's values, and (dictionary) their hashes with the table slots loaded.
        let mut raws: [&[u8]; super::BATCH_ROWS] = [&[]; super::BATCH_ROWS];
        for (r, st) in rows.iter().enumerate() {
            if st.live {
                raws[r] = batch.get(r).get(col);
            }
        }
        if use_dict {
            hashes.clear();
            for (st, raw) in rows.iter().zip(raws.iter()) {
                let mut h = 0;
                if st.live {
                    h = hash_bytes(raw);
                    f.dict.prefetch_slot(h);
                }
                hashes.push(h);
            }
            for (st, &h) in rows.iter().zip(hashes.iter()) {
                if st.live {
                    f.dict.prefetch_record(h);
                }
            }
        }
        let uses = &token_uses[fi];
        let counts = &mut counts[fi];
        let in_filter = fp.segment.is_some();
        for r in 0..n {
            let st = &mut rows[r];
            if !st.live {
                continue;
            }
            let raw = raws[r];
            let (c, words) = if use_dict && raw.len() <= normalise::MAX_FIELD_BYTES {
                let hash = hashes[r];
                match f.dict.find(hash, raw) {
                    Some(p) => {
                        let words = f.dict.payload_from(p);
                        let len = payload_len(words[0]);
                        (Cur::Cached(p, len as u32), &words[..len])
                    }
                    None => {
                        compute_value(plan, fi, f, raw, true, sc);
                        let len = sc.payload.len();
                        let p = f.dict.insert(hash, raw, len);
                        f.dict.payload_mut(p, len).copy_from_slice(&sc.payload);
                        (Cur::Cached(p, len as u32), f.dict.payload(p, len))
                    }
                }
            } else {
                compute_value(plan, fi, f, raw, false, sc);
                let at = f.scratch.len();
                f.scratch.extend_from_slice(&sc.payload);
                let len = sc.payload.len();
                (
                    Cur::Scratch(at as u32, len as u32),
                    &f.scratch[at..at + len],
                )
            };
            let meta = words[0];
            let (keys, flags) = (
                &mut tkeys[r * ntok..(r + 1) * ntok],
                &mut tflags[r * ntok..(r + 1) * ntok],
            );
            match meta as u8 {
                ST_PRESENT => {
                    counts.present += 1;
                    cur[r * nf + fi] = c;
                    if in_filter && !(fp.salted && st.salt == NO_BITS) {
                        st.in_filter += 1;
                    }
                    if let (Some(seg), false, true) = (fp.segment, fp.salted, meta & META_BITS != 0)
                    {
                        let a = fp.body_at();
                        let (raw, stored) = words[a..a + fp.bits_words()].split_at(fp.raw_words());
                        contribute(
                            plan,
                            seg,
                            seg_mode[seg],
                            Row::new(plan, r, fbuf, acc, seen),
                            raw,
                            stored,
                            sc,
                        );
                    }
                    for u in uses {
                        let part = words[u.word];
                        if part == NO_PART {
                            flags[u.kind] |= T_ABSENT;
                        } else if part as u32 == NO_ID || u.shift == u32::MAX {
                            flags[u.kind] |= T_UNCACHED;
                        } else {
                            keys[u.kind] |= ((part & 0xffff_ffff) + 1) << u.shift;
                        }
                    }
                    continue;
                }
                ST_MISSING => counts.missing += 1,
                ST_BAD_BYTES => {
                    counts.invalid[Invalid::ALL.len()] += 1;
                    st.bad_bytes.get_or_insert(col);
                }
                code => counts.invalid[usize::from(code - ST_INVALID)] += 1,
            }
            // Not present: the tokens it is part of are not emitted.
            for u in uses {
                flags[u.kind] |= T_ABSENT;
            }
        }
        if let Some(s) = plan.schema.salt.as_ref().filter(|s| s.source.0 == fi) {
            let t = s.source.1.index();
            for r in 0..n {
                if self.rows[r].live {
                    if let Some(salt) = self.row_salt(self.cur[r * nf + fi], fi, t) {
                        self.rows[r].salt = salt;
                    }
                }
            }
        }
        if fp.salted {
            self.salted_column(fi, n);
        }
    }

    /// The salt given by part `t` of the salt source `fi`'s value `cur`; `None` when it gives
    /// none (the default then stands).
    fn row_salt(&mut self, cur: Cur, fi: usize, t: usize) -> Option<Salt> {
        let (id, text) = part_of(&self.plan.fields[fi], self.fields[fi].payload(cur), t)?;
        if let Some(&s) = id.and_then(|part| self.salt_of_part.get(part as usize)) {
            if s != NO_ID {
                return Some(s as Salt);
            }
        }
        let text = text.to_vec();
        let sid = self.salts.id(&text);
        if let Some(part) = id.map(|p| p as usize) {
            if self.salt_of_part.len() <= part {
                self.salt_of_part.resize(part + 1, NO_ID);
            }
            self.salt_of_part[part] = sid;
        }
        Some(sid as Salt)
    }

    /// Rejects the rows whose values make them unusable (their fields were counted).
    fn check_rows(&mut self, batch: &RecordBatch<'_>, first_row: u64, out: &mut super::BlockOut) {
        let plan = self.plan;
        for (r, st) in self.rows.iter_mut().enumerate() {
            if !st.live {
                continue;
            }
            for &fi in &plan.unmapped {
                self.counts[fi].missing += 1;
            }
            let at = (first_row + r as u64, batch.line(r));
            if let Some(col) = st.bad_bytes {
                let c = plan.header[col].as_str();
                let hint = if plan.map.encoding == TextEncoding::Windows1252 {
                    ""
                } else {
                    " (if the export comes from a legacy system, set encoding = \"windows-1252\" in the column map)"
                };
                st.live = false;
                out.rejects.push(reject(
                    at,
                    Some(c),
                    "invalid_encoding",
                    format!(
                        "column `{c}` is not valid {}{hint}",
                        enc_name(plan.map.encoding)
                    ),
                ));
                continue;
            }
            if st.in_filter < plan.schema.def.min_fields {
                st.live = false;
                out.rejects.push(reject(
                    at,
                    None,
                    "too_few_fields",
                    format!(
                        "only {} of the linking fields are usable, at least {} are needed",
                        st.in_filter, plan.schema.def.min_fields
                    ),
                ));
                continue;
            }
        }
    }

    /// Salted field `fi`'s bits in each live row of the batch: from the field's salted cache
    /// (slots and words loaded for the whole batch first) or computed, and added to the row's
    /// filter.
    fn salted_column(&mut self, fi: usize, n: usize) {
        let plan = self.plan;
        let nf = plan.schema.fields.len();
        let fp = &plan.fields[fi];
        let Some(seg) = fp.segment else {
            return;
        };
        let Worker {
            fields,
            rows,
            cur,
            keys,
            salts,
            sc,
            seg_mode,
            fbuf,
            acc,
            seen,
            ..
        } = self;
        let f = &mut fields[fi];
        let on = f.salted_on;
        keys.clear();
        for r in 0..n {
            let c = cur[r * nf + fi];
            let salt = rows[r].salt;
            let feeds = rows[r].live
                && salt != NO_BITS
                && f.payload(c).first().is_some_and(|m| m & META_BITS != 0);
            let key = match c {
                _ if !feeds => ABSENT,
                Cur::Cached(p, _) if on => (salt as u64 + 1) << 32 | u64::from(p),
                _ => 0,
            };
            if key != ABSENT && key != 0 {
                f.salted.prefetch_slot(key);
            }
            keys.push(key);
        }
        for &key in keys.iter() {
            if key != ABSENT && key != 0 {
                f.salted.prefetch_words(key);
            }
        }
        let w = fp.salted_words();
        let mut bits = std::mem::take(&mut sc.acc);
        for r in 0..n {
            let key = keys[r];
            if key == ABSENT {
                continue;
            }
            let (c, salt) = (cur[r * nf + fi], rows[r].salt);
            let words: &[u64] = if key != 0 {
                match f.salted.find_or_add(key) {
                    Ok(e) => f.salted.get(e),
                    Err(e) => {
                        compute_salted(plan, fi, f, c, salts.text(salt as u32), salt, sc);
                        let dst = f.salted.get_mut(e);
                        dst.copy_from_slice(&sc.payload[..w]);
                        dst
                    }
                }
            } else {
                compute_salted(plan, fi, f, c, salts.text(salt as u32), salt, sc);
                bits.clear();
                bits.extend_from_slice(&sc.payload[..w]);
                &bits
            };
            let (raw, stored) = words.split_at(fp.raw_words());
            contribute(
                plan,
                seg,
                seg_mode[seg],
                Row::new(plan, r, fbuf, acc, seen),
                raw,
                stored,
                sc,
            );
        }
        sc.acc = bits;
    }

    /// Hardens the segments built by ORing their values' bits ([`SegMode::General`]), once
    /// every value of the batch has been added.
    fn finish_general_segments(&mut self, n: usize) {
        let plan = self.plan;
        let schema = plan.schema;
        let (words, raw_words, nseg) =
            (schema.stored_words(), schema.words(), schema.segments.len());
        for (seg, mode) in self.seg_mode.iter().enumerate() {
            if *mode != SegMode::General {
                continue;
            }
            for r in (0..n).filter(|&r| self.rows[r].live && self.seen[r * nseg + seg]) {
                let raw = &self.acc[r * raw_words..][schema.segments[seg].word_range()];
                let out = &mut self.fbuf[r * words..][schema.stored_segments[seg].word_range()];
                plan.hardener
                    .apply_segment(seg, raw, out, &mut self.sc.harden);
            }
        }
    }

    /// Starts loading the keyed-token cache slots of the whole batch, kind by kind.
    fn prefetch_tokens(&self, n: usize) {
        let ntok = self.token_cache.len();
        for (kind, c) in self.token_cache.iter().enumerate() {
            for r in 0..n {
                if self.tflags[r * ntok + kind] == 0 {
                    c.prefetch(self.tkeys[r * ntok + kind]);
                }
            }
        }
    }

    /// Row `r`'s keyed exact tokens into `out` (unsorted); returns how many. A token is
    /// emitted when all its parts are present: from its cache, by the ids of its (one or two)
    /// parts, or hashed from its message.
    fn row_tokens(&mut self, r: usize, out: &mut [u64]) -> usize {
        let plan = self.plan;
        let nf = plan.schema.fields.len();
        let ntok = plan.schema.tokens.len();
        let mut nt = 0;
        for (kind, t) in plan.schema.tokens.iter().enumerate() {
            let flags = self.tflags[r * ntok + kind];
            if flags & T_ABSENT != 0 {
                continue;
            }
            let key = self.tkeys[r * ntok + kind];
            let cached = flags == 0;
            if cached {
                if let Some(tok) = self.token_cache[kind].get(key) {
                    out[nt] = tok;
                    nt += 1;
                    continue;
                }
            }
            let msg = &mut self.sc.msg;
            msg.clear();
            for (i, &(fi, tr)) in t.parts.iter().enumerate() {
                if i > 0 {
                    msg.push(tokens::TOKEN_PART_SEPARATOR);
                }
                let words = self.fields[fi].payload(self.cur[r * nf + fi]);
                if let Some((_, p)) = part_of(&plan.fields[fi], words, tr.index()) {
                    msg.extend_from_slice(p);
                }
            }
            let tok = plan.hasher.exact_token(kind, msg);
            if cached {
                self.token_cache[kind].insert(key, tok);
            }
            out[nt] = tok;
            nt += 1;
        }
        nt
    }
}

/// One row's place in a batch's filter buffers.
struct Row<'b> {
    /// The row's stored filter, its segments' hashed bits, and which segments have a value.
    filter: &'b mut [u64],
    acc: &'b mut [u64],
    seen: &'b mut [bool],
}

impl<'b> Row<'b> {
    fn new(
        plan: &Plan<'_>,
        r: usize,
        fbuf: &'b mut [u64],
        acc: &'b mut [u64],
        seen: &'b mut [bool],
    ) -> Row<'b> {
        let (w, rw, ns) = (
            plan.schema.stored_words(),
            plan.schema.words(),
            plan.schema.segments.len(),
        );
        Row {
            filter: &mut fbuf[r * w..(r + 1) * w],
            acc: &mut acc[r * rw..(r + 1) * rw],
            seen: &mut seen[r * ns..(r + 1) * ns],
        }
    }
}

/// Adds a value's hashed bits `raw` and stored form `stored` (empty when not kept) to segment
/// `seg` of a row's filter, as `mode` says.
#[inline]
fn contribute(
    plan: &Plan<'_>,
    seg: usize,
    mode: SegMode,
    row: Row<'_>,
    raw: &[u64],
    stored: &[u64],
    sc: &mut Scratch,
) {
    let schema = plan.schema;
    let raw_range = schema.segments[seg].word_range();
    match mode {
        SegMode::Plain => {
            for (d, s) in row.filter[raw_range].iter_mut().zip(raw) {
                *d |= s;
            }
        }
        SegMode::Single => {
            row.filter[schema.stored_segments[seg].word_range()].copy_from_slice(stored);
        }
        SegMode::Linear => {
            let out = &mut row.filter[schema.stored_segments[seg].word_range()];
            let acc = &mut row.acc[raw_range];
            if !row.seen[seg] {
                row.seen[seg] = true;
                out.copy_from_slice(stored);
                acc.copy_from_slice(raw);
                return;
            }
            for (o, s) in out.iter_mut().zip(stored) {
                *o ^= s;
            }
            sc.overlap.clear();
            let mut any = 0;
            for (a, w) in acc.iter_mut().zip(raw) {
                sc.overlap.push(*a & w);
                any |= *a & w;
                *a |= w;
            }
            if any != 0 {
                plan.hardener
                    .xor_segment(seg, &sc.overlap, out, &mut sc.harden);
            }
        }
        SegMode::General => {
            row.seen[seg] = true;
            for (a, w) in row.acc[raw_range].iter_mut().zip(raw) {
                *a |= w;
            }
        }
    }
}

/// Computes field `fi`'s value of `raw` into `sc.payload` (laid out as [`FieldPlan`] says);
/// with `cached`, it goes into the dictionary and its parts get the ids caches need, otherwise
/// into the batch's scratch space.
#[inline(never)]
fn compute_value(
    plan: &Plan<'_>,
    fi: usize,
    f: &mut FieldState,
    raw: &[u8],
    cached: bool,
    sc: &mut Scratch,
) {
    let fp = &plan.fields[fi];
    let fdef = &plan.schema.fields[fi];
    let Scratch {
        payload: s,
        text,
        tokens: tok_buf,
        pos: pos_buf,
        decode,
        harden,
        raw: words,
        ..
    } = sc;
    s.clear();
    s.resize(fp.body_at() + fp.bits_words(), 0);
    s[1..fp.body_at()].fill(NO_PART);
    text.clear();
    let value = match field_value(plan, fi, raw, decode) {
        Ok(v) => v,
        Err(st) => {
            s.truncate(fp.body_at());
            s[0] = u64::from(st.code()) | (s.len() as u64) << 16;
            return;
        }
    };
    for (t, tr) in Transform::ALL.iter().enumerate() {
        let Some(slot) = fp.part_slot[t] else {
            continue;
        };
        let off = text.len();
        if !tokens::part_text_into(&value, *tr, text) {
            continue;
        }
        let part = &text[off..];
        let id = if cached && f.need_id[t] {
            f.parts.id(part)
        } else {
            NO_ID
        };
        s[1 + slot] = u64::from(id) | (off as u64) << 32 | (part.len() as u64) << 48;
    }
    let mut meta = u64::from(ST_PRESENT);
    if let Some(sg) = fp.segment {
        tok_buf.clear();
        tokens::tokenise_into(&value, fdef.def.tokeniser, tok_buf);
        let hasher = &plan.hasher;
        let (k, start) = (fp.k as usize, fp.start_bit);
        if fp.salted {
            meta |= (tok_buf.len() as u64) << 32;
            if !tok_buf.is_empty() {
                meta |= META_BITS;
            }
            let mut pending = None;
            for t in tok_buf.iter() {
                let id = u64::from(f.tokens.id(t));
                match pending.take() {
                    None => pending = Some(id),
                    Some(lo) => s.push(lo | id << 32),
                }
            }
            if let Some(lo) = pending {
                s.push(lo);
            }
        } else {
            let at = fp.body_at();
            words.clear();
            words.resize(fp.seg_words, 0);
            for i in 0..tok_buf.len() {
                let t = tok_buf.get(i);
                // A token as rare as the value: nothing to gain from keeping its positions.
                if tok_buf.whole(i) {
                    pos_buf.clear();
                    hasher.positions(sg, fp.k, t, pos_buf);
                    for &p in pos_buf.iter() {
                        let p = p - start;
                        words[(p / 64) as usize] |= 1 << (p % 64);
                    }
                    continue;
                }
                let id = f.tokens.id(t);
                let pos = f.positions.get(0, id, k, |out| {
                    pos_buf.clear();
                    hasher.positions(sg, fp.k, t, pos_buf);
                    out.extend(pos_buf.iter().map(|&p| (p - start) as u16));
                });
                for &p in pos {
                    words[usize::from(p) / 64] |= 1 << (p % 64);
                }
            }
            if words.iter().any(|&w| w != 0) {
                meta |= META_BITS;
            }
            let (raw, stored) = s[at..at + fp.bits_words()].split_at_mut(fp.raw_words());
            raw.copy_from_slice(&words[..raw.len()]);
            if fp.keeps_stored() {
                plan.hardener.apply_segment(sg, words, stored, harden);
            }
        }
    }
    s.extend(text.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    }));
    meta |= (s.len() as u64) << 16;
    s[0] = meta;
}

/// A salted field's hashed words under `salt` (whose text is `salt_text`), then (when kept)
/// their stored form, into `sc.payload`.
#[inline(never)]
fn compute_salted(
    plan: &Plan<'_>,
    fi: usize,
    f: &mut FieldState,
    cur: Cur,
    salt_text: &[u8],
    salt: Salt,
    sc: &mut Scratch,
) {
    let fp = &plan.fields[fi];
    let Scratch {
        payload: bits,
        msg,
        pos: pos_buf,
        harden,
        ..
    } = sc;
    bits.clear();
    bits.resize(fp.seg_words + fp.stored_words, 0);
    let sg = fp.segment.unwrap_or(0);
    let (k, start) = (fp.k as usize, fp.start_bit);
    let hasher = &plan.hasher;
    let (words, stored) = bits.split_at_mut(fp.seg_words);
    let FieldState {
        dict,
        scratch,
        tokens,
        positions,
        ..
    } = f;
    let payload = match cur {
        Cur::None => &[][..],
        Cur::Cached(p, len) => dict.payload(p, len as usize),
        Cur::Scratch(at, len) => &scratch[at as usize..(at + len) as usize],
    };
    for tok in token_ids(fp, payload) {
        if salt >= MAX_SALTS {
            let m = salted_message(salt_text, tokens.text(tok), msg);
            pos_buf.clear();
            hasher.positions(sg, fp.k, m, pos_buf);
            for &p in pos_buf.iter() {
                let p = p - start;
                words[(p / 64) as usize] |= 1 << (p % 64);
            }
            continue;
        }
        let pos = positions.get(salt, tok, k, |out| {
            let m = salted_message(salt_text, tokens.text(tok), msg);
            pos_buf.clear();
            hasher.positions(sg, fp.k, m, pos_buf);
            out.extend(pos_buf.iter().map(|&p| (p - start) as u16));
        });
        for &p in pos {
            words[usize::from(p) / 64] |= 1 << (p % 64);
        }
    }
    if fp.keeps_stored() {
        plan.hardener.apply_segment(sg, words, stored, harden);
    }
    if !fp.keep_raw {
        bits.drain(..fp.seg_words);
    }
}

fn reject(
    (row, line): (u64, u64),
    column: Option<&str>,
    reason: &'static str,
    detail: String,
) -> Reject {
    Reject {
        row,
        line,
        column: column.map(String::from),
        field: None,
        reason,
        detail,
    }
}

/// The message hashed for a salted filter token: 0x1F ‖ salt ‖ 0x1F ‖ token (an empty salt is
/// the "no salt" marker).
fn salted_message<'m>(salt: &[u8], token: &[u8], buf: &'m mut Vec<u8>) -> &'m [u8] {
    buf.clear();
    buf.push(tokens::TOKEN_PART_SEPARATOR);
    buf.extend_from_slice(salt);
    buf.push(tokens::TOKEN_PART_SEPARATOR);
    buf.extend_from_slice(token);
    buf
}

/// The canonical value of a raw field, or the status that says why there is none.
fn field_value(
    plan: &Plan<'_>,
    fi: usize,
    raw: &[u8],
    decode_buf: &mut String,
) -> Result<Value, Status> {
    if raw.len() > normalise::MAX_FIELD_BYTES {
        return Err(Status::Invalid(Invalid::TooLong));
    }
    let Some(text) = decode(plan.map.encoding, raw, decode_buf) else {
        return Err(Status::BadBytes);
    };
    let f = &plan.schema.fields[fi];
    match normalise_value(f.def.normaliser, text, plan.map, plan.today) {
        Err(why) => Err(Status::Invalid(why)),
        Ok(None) => Err(Status::Missing),
        Ok(Some(v)) => Ok(v),
    }
}

/// Whether values of a field under `normaliser` are worth a dictionary: identifiers are unique
/// per child and cheap to check.
pub fn worth_caching(normaliser: Normaliser) -> bool {
    !matches!(normaliser, Normaliser::NhsNumber | Normaliser::Upn)
}
