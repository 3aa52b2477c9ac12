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
use super::table::{hash_bytes, Dict, Found, Interner, Payload, U64Map, WordMap};
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

/// What a raw field value turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Empty or a null marker.
    Missing,
    /// Unusable, with the reason.
    Invalid(Invalid),
    /// Bytes not valid in the declared text encoding.
    BadBytes,
    /// Usable.
    Present,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Present => ST_PRESENT,
            Status::Missing => ST_MISSING,
            Status::BadBytes => ST_BAD_BYTES,
            Status::Invalid(why) => ST_INVALID + invalid_index(why) as u8,
        }
    }

    fn from_code(c: u8) -> Status {
        match c {
            ST_PRESENT => Status::Present,
            ST_MISSING => Status::Missing,
            ST_BAD_BYTES => Status::BadBytes,
            c => Status::Invalid(Invalid::ALL[usize::from(c - ST_INVALID) % Invalid::ALL.len()]),
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
}

impl FieldPlan {
    /// `kept`: which transforms some keyed token or the salt uses; `segment`: (index, bits per
    /// token, first bit, hashed words, stored words kept per value or 0).
    pub fn new(
        segment: Option<(usize, u32, u32, usize, usize)>,
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
        }
    }

    /// Words of a payload before its token ids (salted) or texts (unsalted).
    fn body_at(&self) -> usize {
        1 + self.nparts
    }

    /// Words of an unsalted value's bits and stored form.
    fn bits_words(&self) -> usize {
        if self.salted || self.segment.is_none() {
            0
        } else {
            self.seg_words + self.stored_words
        }
    }
}

/// A value's payload, read.
#[derive(Clone, Copy)]
struct Val<'a> {
    words: &'a [u64],
    plan: &'a FieldPlan,
}

impl<'a> Val<'a> {
    fn status(self) -> Status {
        Status::from_code(self.words[0] as u8)
    }

    fn has_bits(self) -> bool {
        self.words[0] >> 8 & 1 == 1
    }

    fn ntok(self) -> usize {
        (self.words[0] >> 32) as usize
    }

    fn text_at(self) -> usize {
        let p = self.plan;
        p.body_at() + p.bits_words() + if p.salted { self.ntok().div_ceil(2) } else { 0 }
    }

    /// Token part `t`: its interned id (if it has one) and its text; `None` if the value has
    /// no such part.
    fn part(self, t: usize) -> Option<(Option<u32>, &'a [u8])> {
        let r = self.words[1 + self.plan.part_slot[t]?];
        if r == NO_PART {
            return None;
        }
        let id = r as u32;
        let (off, len) = ((r >> 32) as u16 as usize, (r >> 48) as usize);
        let text = bytemuck::cast_slice::<u64, u8>(&self.words[self.text_at()..]);
        Some(((id != NO_ID).then_some(id), &text[off..off + len]))
    }

    fn raw(self) -> &'a [u64] {
        let a = self.plan.body_at();
        &self.words[a..a + self.plan.seg_words]
    }

    fn stored(self) -> &'a [u64] {
        let a = self.plan.body_at() + self.plan.seg_words;
        &self.words[a..a + self.plan.stored_words]
    }

    fn tokens(self) -> impl Iterator<Item = u32> + 'a {
        let a = self.plan.body_at();
        let n = self.ntok();
        self.words[a..a + n.div_ceil(2)]
            .iter()
            .flat_map(|&w| [w as u32, (w >> 32) as u32])
            .take(n)
    }
}

/// The length of a payload, from its first word.
fn payload_len(meta: u64) -> usize {
    (meta >> 16 & 0xffff) as usize
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
    fn get(
        &mut self,
        salt: usize,
        tok: u32,
        k: usize,
        compute: impl FnOnce(&mut Vec<u16>),
    ) -> &[u16] {
        if self.tables.len() <= salt {
            self.tables.resize_with(salt + 1, Default::default);
        }
        let (pos, known) = &mut self.tables[salt];
        let t = tok as usize;
        if known.len() <= t / 64 {
            let n = (t / 64 + 1).next_power_of_two();
            known.resize(n, 0);
            pos.resize(n * 64 * k, 0);
        }
        if known[t / 64] >> (t % 64) & 1 == 0 {
            let mut got = Vec::with_capacity(k);
            compute(&mut got);
            pos[t * k..(t + 1) * k].copy_from_slice(&got);
            known[t / 64] |= 1 << (t % 64);
        }
        &pos[t * k..(t + 1) * k]
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

/// Where a row's salted bits of a field are.
#[derive(Clone, Copy)]
enum Salted {
    None,
    /// In the field's salted cache, at this slot.
    Slot(usize),
    /// In the batch's salted scratch, at this offset.
    Scratch(usize),
}

/// The row's salt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Salt {
    /// Salted fields are hashed under this salt (an id in [`Worker::salts`]; [`MARKER`] is the
    /// "no salt" marker, the empty text). Salts past [`MAX_SALTS`] have no position tables:
    /// their tokens are hashed directly.
    Id(usize),
    /// No salt, and the schema says salted fields then set no bits.
    NoBits,
}

/// The salt id of the "no salt" marker (the empty text, interned first).
const MARKER: usize = 0;

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
    /// The record id (trimmed).
    id: String,
}

/// Where a batch's encoded rows go: the block's output space and lists.
pub struct BatchOut<'o, 'd> {
    pub dest: &'o mut super::Dest<'d>,
    pub out: &'o mut super::BlockOut,
    /// Encoded rows written so far in the block.
    pub encoded: &'o mut usize,
}

/// Buffers for building a segment.
#[derive(Default)]
struct SegScratch {
    acc: Vec<u64>,
    overlap: Vec<u64>,
    harden: harden::Scratch,
}

/// Encodes records for one worker thread.
pub struct Worker<'p, 'a> {
    plan: &'p Plan<'a>,
    fields: Vec<FieldState>,
    /// Per token kind: token by the ids of its parts, while it earns its keep.
    token_cache: Vec<U64Map>,
    token_cache_on: Vec<bool>,
    /// Salt texts → salt ids; and per salt-source part id, its salt id (dense).
    salts: Interner,
    salt_of_part: Vec<u32>,
    /// Per batch: each row's state; per row and field, where its value and its salted bits
    /// are.
    rows: Vec<RowState>,
    cur: Vec<Cur>,
    salted: Vec<Salted>,
    salted_scratch: Vec<u64>,
    hashes: Vec<u64>,
    /// Per batch: each row's keyed tokens (`ntok` slots per row) and their number.
    row_tokens: Vec<u64>,
    row_ntok: Vec<u8>,
    keys: Vec<u64>,
    seg: SegScratch,
    tmp: Vec<u64>,
    text: Vec<u8>,
    msg: Vec<u8>,
    pos_buf: Vec<u32>,
    tok_buf: TokenBuf,
    decode_buf: String,
    /// Per field counts for the block being encoded.
    pub counts: Vec<FieldCounts>,
}

/// `keys` entry of a row whose token is not emitted (a part is missing).
const ABSENT: u64 = u64::MAX;

impl<'p, 'a> Worker<'p, 'a> {
    /// A worker with empty caches.
    pub fn new(plan: &'p Plan<'a>) -> Self {
        let nf = plan.schema.fields.len();
        let mut salts = Interner::default();
        let marker = salts.id(b"") as usize;
        debug_assert_eq!(marker, MARKER);
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
                    salted: WordMap::new(if fp.salted {
                        fp.seg_words + fp.stored_words
                    } else {
                        0
                    }),
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
            salts,
            salt_of_part: Vec::new(),
            rows: Vec::new(),
            cur: Vec::new(),
            salted: Vec::new(),
            salted_scratch: Vec::new(),
            hashes: Vec::new(),
            row_tokens: Vec::new(),
            row_ntok: Vec::new(),
            keys: Vec::new(),
            seg: SegScratch::default(),
            tmp: Vec::new(),
            text: Vec::new(),
            msg: Vec::new(),
            pos_buf: Vec::new(),
            tok_buf: TokenBuf::default(),
            decode_buf: String::new(),
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
    fn tend_caches(&mut self, batch_rows: usize) {
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
        for f in &mut self.fields {
            if f.salted_on {
                f.salted.reserve(batch_rows);
            }
        }
    }

    /// Encodes a batch of parsed records, whose first is row `first_row` of the export and
    /// `offset` of its block: accepted rows are written to `o` in order, rejected rows listed.
    /// Works column by column, so that each step has the whole batch's memory loads in flight
    /// together, where row by row each lookup would wait for its own cache misses.
    pub fn encode_batch(
        &mut self,
        batch: &RecordBatch<'_>,
        first_row: u64,
        offset: usize,
        o: BatchOut<'_, '_>,
    ) {
        let plan = self.plan;
        let n = batch.len();
        let nf = plan.schema.fields.len();
        self.tend_caches(n);
        self.start_rows(batch, first_row, o.out);
        self.cur.clear();
        self.cur.resize(n * nf, Cur::None);
        for f in &mut self.fields {
            f.scratch.clear();
        }
        for si in 0..plan.sources.len() {
            self.look_up_column(batch, si);
        }
        // Rows rejected for their values (after their fields were counted).
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
                o.out.rejects.push(reject(
                    at,
                    Some(c),
                    "invalid_encoding",
                    format!(
                        "column `{c}` is not valid {}{hint}",
                        enc_name(plan.map.encoding)
                    ),
                ));
            } else if st.in_filter < plan.schema.def.min_fields {
                st.live = false;
                o.out.rejects.push(reject(
                    at,
                    None,
                    "too_few_fields",
                    format!(
                        "only {} of the linking fields are usable, at least {} are needed",
                        st.in_filter, plan.schema.def.min_fields
                    ),
                ));
            }
        }
        self.salted_bits(n);
        // Filters, straight into the output, segment by segment; then noise and popcounts.
        let words = plan.schema.stored_words();
        let pw = plan.schema.segments.len() + 1;
        let e0 = *o.encoded;
        let mut seg_scratch = std::mem::take(&mut self.seg);
        for seg in 0..plan.schema.segments.len() {
            let mut e = e0;
            for r in 0..n {
                if !self.rows[r].live {
                    continue;
                }
                let filter = &mut o.dest.filters[e * words..(e + 1) * words];
                self.build_segment(r, seg, filter, &mut seg_scratch);
                e += 1;
            }
        }
        let mut e = e0;
        for r in 0..n {
            if !self.rows[r].live {
                continue;
            }
            let filter = &mut o.dest.filters[e * words..(e + 1) * words];
            if plan.hardener.transforms() {
                plan.hardener.apply_blip(
                    filter,
                    &plan.map.agency,
                    &self.rows[r].id,
                    &mut seg_scratch.harden,
                );
            }
            let pcs = &mut o.dest.popcounts[e * pw..(e + 1) * pw];
            pcs[0] = filter.iter().map(|w| w.count_ones()).sum::<u32>() as u16;
            for (p, s) in pcs[1..].iter_mut().zip(&plan.schema.stored_segments) {
                *p = filter[s.word_range()]
                    .iter()
                    .map(|w| w.count_ones())
                    .sum::<u32>() as u16;
            }
            e += 1;
        }
        self.seg = seg_scratch;
        self.keyed_tokens(n);
        // Accepted rows' tokens, ids and places, in row order.
        let ntok = plan.schema.tokens.len();
        let out = &mut *o.out;
        for r in 0..n {
            if !self.rows[r].live {
                continue;
            }
            let toks = &mut self.row_tokens[r * ntok..r * ntok + usize::from(self.row_ntok[r])];
            toks.sort_unstable();
            let t = out.tokens;
            if let Some(d) = o.dest.tokens.get_mut(t..t + toks.len()) {
                d.copy_from_slice(toks);
            }
            out.tokens += toks.len();
            out.token_counts.push(toks.len() as u8);
            let id = std::mem::take(&mut self.rows[r].id);
            if plan.opaque_ids {
                out.ids.push(plan.hasher.opaque_ref(&plan.map.agency, &id));
                out.original_ids.push(id);
            } else {
                out.ids.push(id);
            }
            out.offsets.push((offset + r) as u32);
            out.lines.push(batch.line(r));
            *o.encoded += 1;
        }
    }

    /// Checks each row's field count and record id, and resets the batch's row states.
    fn start_rows(&mut self, batch: &RecordBatch<'_>, first_row: u64, out: &mut super::BlockOut) {
        let plan = self.plan;
        let salt0 = match plan.schema.salt.as_ref() {
            Some(s) if s.when_missing == SaltMissing::Skip => Salt::NoBits,
            _ => Salt::Id(MARKER),
        };
        self.rows.clear();
        let id_col = plan.header[plan.id_column].as_str();
        for r in 0..batch.len() {
            let rec = batch.get(r);
            let at = (first_row + r as u64, batch.line(r));
            let mut st = RowState {
                live: false,
                salt: salt0,
                in_filter: 0,
                bad_bytes: None,
                id: String::new(),
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
                    &mut self.decode_buf,
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
                    Some(id) => Ok(id.to_string()),
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
    }

    /// Looks up source `si`'s column for every live row of the batch: hashes and table slots
    /// first, then the records the slots point to, then the values themselves (computing the
    /// ones not yet known); then counts them and, for the salt source, sets each row's salt.
    fn look_up_column(&mut self, batch: &RecordBatch<'_>, si: usize) {
        let plan = self.plan;
        let src = &plan.sources[si];
        let (fi, col) = (src.field, src.column);
        let nf = plan.schema.fields.len();
        let fp = &plan.fields[fi];
        let n = batch.len();
        if self.fields[fi].use_dict {
            self.hashes.clear();
            for r in 0..n {
                let mut h = 0;
                if self.rows[r].live {
                    h = hash_bytes(batch.get(r).get(col));
                    self.fields[fi].dict.prefetch_slot(h);
                }
                self.hashes.push(h);
            }
            for r in 0..n {
                if self.rows[r].live {
                    self.fields[fi].dict.prefetch_record(self.hashes[r]);
                }
            }
        }
        for r in 0..n {
            if !self.rows[r].live {
                continue;
            }
            let raw = batch.get(r).get(col);
            let f = &mut self.fields[fi];
            let cur = if f.use_dict && raw.len() <= normalise::MAX_FIELD_BYTES {
                let hash = self.hashes[r];
                match f.dict.find(hash, raw) {
                    Some(p) => {
                        let len = payload_len(f.dict.payload(p, 1)[0]);
                        Cur::Cached(p, len as u32)
                    }
                    None => {
                        self.compute(fi, raw, true);
                        let f = &mut self.fields[fi];
                        let len = self.tmp.len();
                        let p = f.dict.insert(hash, raw, len);
                        f.dict.payload_mut(p, len).copy_from_slice(&self.tmp);
                        Cur::Cached(p, len as u32)
                    }
                }
            } else {
                self.compute(fi, raw, false);
                let f = &mut self.fields[fi];
                let at = f.scratch.len() as u32;
                f.scratch.extend_from_slice(&self.tmp);
                Cur::Scratch(at, self.tmp.len() as u32)
            };
            let status = self.val(fi, cur).map_or(Status::Missing, |v| v.status());
            let c = &mut self.counts[fi];
            let st = &mut self.rows[r];
            match status {
                Status::Missing => c.missing += 1,
                Status::Invalid(why) => c.invalid[invalid_index(why)] += 1,
                Status::BadBytes => {
                    c.invalid[Invalid::ALL.len()] += 1;
                    st.bad_bytes.get_or_insert(col);
                }
                Status::Present => {
                    c.present += 1;
                    self.cur[r * nf + fi] = cur;
                    if fp.segment.is_some() && !(fp.salted && st.salt == Salt::NoBits) {
                        st.in_filter += 1;
                    }
                }
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
    }

    fn val(&self, fi: usize, cur: Cur) -> Option<Val<'_>> {
        let plan = &self.plan.fields[fi];
        let f = &self.fields[fi];
        match cur {
            Cur::None => None,
            Cur::Cached(p, len) => Some(Val {
                words: f.dict.payload(p, len as usize),
                plan,
            }),
            Cur::Scratch(at, len) => Some(Val {
                words: &f.scratch[at as usize..(at + len) as usize],
                plan,
            }),
        }
    }

    /// The salt given by part `t` of the salt source `fi`'s value `cur`; `None` when it gives
    /// none (the default then stands).
    fn row_salt(&mut self, cur: Cur, fi: usize, t: usize) -> Option<Salt> {
        let (id, text) = self.val(fi, cur)?.part(t)?;
        if let Some(&s) = id.and_then(|part| self.salt_of_part.get(part as usize)) {
            if s != NO_ID {
                return Some(Salt::Id(s as usize));
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
        Some(Salt::Id(sid as usize))
    }

    /// Computes field `fi`'s value of `raw` into `tmp` (the payload laid out as [`FieldPlan`]
    /// says); with `cached`, it goes into the dictionary, and its parts get the ids caches
    /// need.
    fn compute(&mut self, fi: usize, raw: &[u8], cached: bool) {
        let plan = self.plan;
        let fp = &plan.fields[fi];
        let fdef = &plan.schema.fields[fi];
        let Worker {
            fields,
            decode_buf,
            tok_buf,
            pos_buf,
            seg,
            tmp: s,
            text,
            ..
        } = self;
        let f = &mut fields[fi];
        s.clear();
        s.resize(fp.body_at() + fp.bits_words(), 0);
        s[1..fp.body_at()].fill(NO_PART);
        text.clear();
        let value = match field_value(plan, fi, raw, decode_buf) {
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
                    meta |= 1 << 8;
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
                let words = &mut s[at..at + fp.seg_words];
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
                    meta |= 1 << 8;
                }
                if fp.stored_words > 0 {
                    let (a, b) = s[at..at + fp.bits_words()].split_at_mut(fp.seg_words);
                    plan.hardener.apply_segment(sg, a, b, &mut seg.harden);
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

    /// Whether field `fi`'s value `cur` sets bits in a row salted `salt`.
    fn feeds(&self, fi: usize, cur: Cur, salt: Salt) -> bool {
        let fp = &self.plan.fields[fi];
        self.val(fi, cur)
            .is_some_and(|v| v.has_bits() && !(fp.salted && salt == Salt::NoBits))
    }

    /// Each live row's salted fields' hashed words and stored forms, from the fields' salted
    /// caches (slots and words loaded for the whole batch first) or computed.
    fn salted_bits(&mut self, n: usize) {
        let plan = self.plan;
        let nf = plan.schema.fields.len();
        self.salted.clear();
        self.salted.resize(n * nf, Salted::None);
        self.salted_scratch.clear();
        for fi in (0..nf).filter(|&fi| plan.fields[fi].salted) {
            let fp = &plan.fields[fi];
            let on = self.fields[fi].salted_on;
            self.keys.clear();
            for r in 0..n {
                let cur = self.cur[r * nf + fi];
                let salt = self.rows[r].salt;
                let key = match (cur, salt) {
                    _ if !self.rows[r].live || !self.feeds(fi, cur, salt) => ABSENT,
                    (Cur::Cached(p, _), Salt::Id(sid)) if on => {
                        (sid as u64 + 1) << 32 | u64::from(p)
                    }
                    _ => 0,
                };
                if key != ABSENT && key != 0 {
                    self.fields[fi].salted.prefetch(key);
                }
                self.keys.push(key);
            }
            let w = fp.seg_words + fp.stored_words;
            let mut bits = std::mem::take(&mut self.tmp);
            for r in 0..n {
                let key = self.keys[r];
                if key == ABSENT {
                    continue;
                }
                let (cur, salt) = (self.cur[r * nf + fi], self.rows[r].salt);
                let place = match (key, key != 0) {
                    (_, true) => match self.fields[fi].salted.find(key) {
                        Found::Hit(slot) => Salted::Slot(slot),
                        Found::Miss(slot) => {
                            self.compute_salted(fi, cur, salt, &mut bits);
                            self.fields[fi]
                                .salted
                                .insert_at(slot, key)
                                .copy_from_slice(&bits[..w]);
                            Salted::Slot(slot)
                        }
                    },
                    _ => {
                        self.compute_salted(fi, cur, salt, &mut bits);
                        let at = self.salted_scratch.len();
                        self.salted_scratch.extend_from_slice(&bits[..w]);
                        Salted::Scratch(at)
                    }
                };
                self.salted[r * nf + fi] = place;
            }
            self.tmp = bits;
        }
    }

    /// A salted field's hashed words under `salt`, then (when kept) their stored form, into
    /// `bits`.
    fn compute_salted(&mut self, fi: usize, cur: Cur, salt: Salt, bits: &mut Vec<u64>) {
        let plan = self.plan;
        let fp = &plan.fields[fi];
        bits.clear();
        bits.resize(fp.seg_words + fp.stored_words, 0);
        let Salt::Id(sid) = salt else {
            return;
        };
        let sg = fp.segment.unwrap_or(0);
        let (k, start) = (fp.k as usize, fp.start_bit);
        let Worker {
            fields,
            msg,
            pos_buf,
            salts,
            seg,
            ..
        } = self;
        let f = &mut fields[fi];
        let v = match cur {
            Cur::None => return,
            Cur::Cached(p, len) => Val {
                words: f.dict.payload(p, len as usize),
                plan: fp,
            },
            Cur::Scratch(at, len) => Val {
                words: &f.scratch[at as usize..(at + len) as usize],
                plan: fp,
            },
        };
        let hasher = &plan.hasher;
        let salt_text = salts.text(sid as u32);
        let (words, stored) = bits.split_at_mut(fp.seg_words);
        for tok in v.tokens() {
            if sid >= MAX_SALTS {
                let m = salted_message(salt_text, f.tokens.text(tok), msg);
                pos_buf.clear();
                hasher.positions(sg, fp.k, m, pos_buf);
                for &p in pos_buf.iter() {
                    let p = p - start;
                    words[(p / 64) as usize] |= 1 << (p % 64);
                }
                continue;
            }
            let pos = f.positions.get(sid, tok, k, |out| {
                let m = salted_message(salt_text, f.tokens.text(tok), msg);
                pos_buf.clear();
                hasher.positions(sg, fp.k, m, pos_buf);
                out.extend(pos_buf.iter().map(|&p| (p - start) as u16));
            });
            for &p in pos {
                words[usize::from(p) / 64] |= 1 << (p % 64);
            }
        }
        if fp.stored_words > 0 {
            plan.hardener
                .apply_segment(sg, words, stored, &mut seg.harden);
        }
    }

    /// Field `fi`'s hashed words and stored form (empty when not kept) in row `r`.
    fn contribution(&self, r: usize, fi: usize) -> (&[u64], &[u64]) {
        let nf = self.plan.schema.fields.len();
        let fp = &self.plan.fields[fi];
        if fp.salted {
            let words = match self.salted[r * nf + fi] {
                Salted::None => &[][..],
                Salted::Slot(slot) => self.fields[fi].salted.get(slot),
                Salted::Scratch(at) => {
                    &self.salted_scratch[at..at + fp.seg_words + fp.stored_words]
                }
            };
            return words.split_at(words.len().min(fp.seg_words));
        }
        match self.val(fi, self.cur[r * nf + fi]) {
            Some(v) => (v.raw(), v.stored()),
            None => (&[], &[]),
        }
    }

    /// Writes segment `seg` of row `r`'s stored filter into `filter`.
    fn build_segment(&self, r: usize, seg: usize, filter: &mut [u64], sc: &mut SegScratch) {
        let plan = self.plan;
        let schema = plan.schema;
        let nf = schema.fields.len();
        let salt = self.rows[r].salt;
        let fis = &plan.segment_fields[seg];
        let feeds = |fi: usize| self.feeds(fi, self.cur[r * nf + fi], salt);
        if !plan.hardener.transforms() {
            let out = &mut filter[schema.segments[seg].word_range()];
            out.fill(0);
            for &fi in fis.iter().filter(|&&fi| feeds(fi)) {
                for (d, s) in out.iter_mut().zip(self.contribution(r, fi).0) {
                    *d |= s;
                }
            }
            return;
        }
        let out = &mut filter[schema.stored_segments[seg].word_range()];
        let mut feeding = fis.iter().copied().filter(|&fi| feeds(fi));
        let Some(first) = feeding.next() else {
            out.fill(0);
            return;
        };
        let second = feeding.next();
        let (raw1, stored1) = self.contribution(r, first);
        let keeps = |fi: usize| plan.fields[fi].stored_words > 0;
        match second {
            None if keeps(first) => out.copy_from_slice(stored1),
            Some(_) if plan.hardener.segment_is_linear(seg) && fis.iter().all(|&fi| keeps(fi)) => {
                // T(a | b) = T(a) ^ T(b) ^ T(a & b): XOR the stored forms, then correct for the
                // few bits the values share.
                out.copy_from_slice(stored1);
                sc.acc.clear();
                sc.acc.extend_from_slice(raw1);
                for fi in fis.iter().copied().filter(|&fi| feeds(fi)).skip(1) {
                    let (raw, stored) = self.contribution(r, fi);
                    for (o, s) in out.iter_mut().zip(stored) {
                        *o ^= s;
                    }
                    sc.overlap.clear();
                    sc.overlap
                        .extend(sc.acc.iter().zip(raw).map(|(a, w)| a & w));
                    plan.hardener
                        .xor_segment(seg, &sc.overlap, out, &mut sc.harden);
                    for (a, w) in sc.acc.iter_mut().zip(raw) {
                        *a |= w;
                    }
                }
            }
            _ => {
                sc.acc.clear();
                sc.acc.resize(schema.segments[seg].word_range().len(), 0);
                for fi in fis.iter().copied().filter(|&fi| feeds(fi)) {
                    for (a, w) in sc.acc.iter_mut().zip(self.contribution(r, fi).0) {
                        *a |= w;
                    }
                }
                plan.hardener
                    .apply_segment(seg, &sc.acc, out, &mut sc.harden);
            }
        }
    }

    /// Each live row's keyed exact tokens into `row_tokens`: a token is emitted when all its
    /// parts are present, cached by the ids of its (one or two) parts, else hashed from its
    /// message. Kind by kind, with the whole batch's cache slots loaded first.
    fn keyed_tokens(&mut self, n: usize) {
        let plan = self.plan;
        let nf = plan.schema.fields.len();
        let ntok = plan.schema.tokens.len();
        self.row_tokens.clear();
        self.row_tokens.resize(n * ntok, 0);
        self.row_ntok.clear();
        self.row_ntok.resize(n, 0);
        for (kind, t) in plan.schema.tokens.iter().enumerate() {
            let on = self.token_cache_on[kind];
            self.keys.clear();
            for r in 0..n {
                let mut key = if self.rows[r].live { 0 } else { ABSENT };
                let mut cacheable = on;
                for (i, &(fi, tr)) in t.parts.iter().enumerate() {
                    if key == ABSENT {
                        break;
                    }
                    match self
                        .val(fi, self.cur[r * nf + fi])
                        .and_then(|v| v.part(tr.index()))
                    {
                        None => key = ABSENT,
                        Some((None, _)) => cacheable = false,
                        Some((Some(id), _)) => key |= u64::from(id + 1) << (32 * (1 - i)),
                    }
                }
                if key != ABSENT && !cacheable {
                    key = 0;
                }
                if key != ABSENT && key != 0 {
                    self.token_cache[kind].prefetch(key);
                }
                self.keys.push(key);
            }
            for r in 0..n {
                let key = self.keys[r];
                if key == ABSENT {
                    continue;
                }
                let cached = if key != 0 {
                    self.token_cache[kind].get(key)
                } else {
                    None
                };
                let tok = match cached {
                    Some(tok) => tok,
                    None => {
                        let mut msg = std::mem::take(&mut self.msg);
                        msg.clear();
                        for (i, &(fi, tr)) in t.parts.iter().enumerate() {
                            if i > 0 {
                                msg.push(tokens::TOKEN_PART_SEPARATOR);
                            }
                            if let Some((_, p)) = self
                                .val(fi, self.cur[r * nf + fi])
                                .and_then(|v| v.part(tr.index()))
                            {
                                msg.extend_from_slice(p);
                            }
                        }
                        let tok = plan.hasher.exact_token(kind, &msg);
                        self.msg = msg;
                        if key != 0 {
                            self.token_cache[kind].insert(key, tok);
                        }
                        tok
                    }
                };
                let c = &mut self.row_ntok[r];
                self.row_tokens[r * ntok + usize::from(*c)] = tok;
                *c += 1;
            }
        }
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
