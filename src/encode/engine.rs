//! The per-worker encoder: one record at a time, from raw CSV fields to the stored filter, the
//! popcounts and the keyed exact tokens.
//!
//! What is cached, and why it is shaped this way (docs/DESIGN-NOTES.md, "Encoder"):
//! - **Values, unsalted.** Per field, a dictionary maps the *raw* bytes of a value to what the
//!   value is: its status, the interned ids of its token parts (for keyed tokens and the salt)
//!   and either its segment bits (unsalted fields; plus the segment's stored, hardened form when
//!   the field alone feeds its segment) or the ids of its filter tokens (salted fields). Salting
//!   does not multiply the keys: a name is looked up once whatever the year of birth.
//! - **Bit positions**, per field, salt and filter token, in dense tables: the filter tokens
//!   (bigrams, date parts) and the salts (years) are few, so the tables stay small and hot and a
//!   salted name costs a few table reads per row instead of a cache miss on a large table.
//! - **Keyed exact tokens**, per kind, by the ids of their parts. A cache that does not earn its
//!   keep (a token of near-unique parts, such as postcode + year) switches itself off.
//! - Per row, what is left is setting the salted fields' bits and hardening the segments fed by
//!   more than one value or by a salted one (the diffusion layer is one word-XOR of a column per
//!   set bit).
//!
//! Caching never changes results, only speed: the output is identical for any thread count and
//! any order of rows (tests/vectors.rs, tests/hardening.rs).

use super::blocks::RecordBatch;
use super::table::{hash_bytes, Dict, Interner, Payload, U64Map};
use super::{decode, enc_name, normalise_value, Plan, Reject};
use crate::colmap::TextEncoding;
use crate::harden;
use crate::normalise::{self, Invalid};
use crate::schema::{Normaliser, SaltMissing, Transform};
use crate::tokens::{self, Value};

/// Number of token-part transforms (see [`Transform::ALL`]).
pub const PARTS: usize = 5;
/// No interned id: the part does not apply to the value.
const NO_ID: u32 = u32::MAX;
/// A cache that finds its key less often than this, once it has seen [`PROBE`] lookups, is
/// switched off. A keyed-token cache miss (a lookup and an insert, often a cache miss on a large
/// table) costs about a third of the HMAC it saves on a hit; a value dictionary saves a whole
/// normalisation and tokenisation per hit, so it pays at much lower hit rates.
const MIN_TOKEN_HIT_RATE: f64 = 0.3;
const MIN_DICT_HIT_RATE: f64 = 0.05;
const PROBE: u64 = 1 << 16;
/// Bounds on a worker's caches: past them, the worker empties its caches and starts again
/// (only inputs far beyond national scale, or schemas that put unique values in the filter,
/// get there).
const MAX_DICT_WORDS: usize = 1 << 25;
const MAX_INTERNED: usize = 1 << 22;
const MAX_TOKEN_ENTRIES: usize = 1 << 22;
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
            Status::Invalid(why) => {
                ST_INVALID + Invalid::ALL.iter().position(|&w| w == why).unwrap_or(0) as u8
            }
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

/// How a field's values are laid out in its payloads (see [`FieldPlan`]): the first word holds
/// the status, whether the value sets bits, and its number of filter tokens; then the ids of
/// the interned token parts, two per word; then, for an unsalted field with a segment, the
/// segment's bits and, when the field alone feeds its segment, the stored form; for a salted
/// field, the ids of its filter tokens, two per word.
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
    /// Per transform: its slot among the interned parts, if interned.
    part_slot: [Option<usize>; PARTS],
    part_words: usize,
    /// Segment words kept per value (unsalted fields with a segment).
    raw_words: usize,
    /// Stored (hardened) segment words kept per value.
    stored_words: usize,
}

impl FieldPlan {
    /// `interned`: which transforms some keyed token or the salt uses; `raw_words`: the
    /// segment's hashed words (0 without a segment); `stored_words`: the segment's stored
    /// words when the field alone feeds it and the hardening adds no per-record noise.
    pub fn new(
        segment: Option<(usize, u32, u32)>,
        salted: bool,
        cached: bool,
        interned: [bool; PARTS],
        raw_words: usize,
        stored_words: usize,
    ) -> FieldPlan {
        let mut part_slot = [None; PARTS];
        let mut n = 0;
        for (slot, keep) in part_slot.iter_mut().zip(interned) {
            if keep {
                *slot = Some(n);
                n += 1;
            }
        }
        let (raw_words, stored_words) = if salted || segment.is_none() {
            (0, 0)
        } else {
            (raw_words, stored_words)
        };
        FieldPlan {
            segment: segment.map(|s| s.0),
            k: segment.map_or(0, |s| s.1),
            start_bit: segment.map_or(0, |s| s.2),
            salted: salted && segment.is_some(),
            cached,
            part_slot,
            part_words: n.div_ceil(2),
            raw_words,
            stored_words,
        }
    }

    fn fixed_words(&self) -> usize {
        1 + self.part_words + self.raw_words + self.stored_words
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

    fn part(self, t: usize) -> Option<u32> {
        let s = self.plan.part_slot[t]?;
        let id = (self.words[1 + s / 2] >> (32 * (s % 2))) as u32;
        (id != NO_ID).then_some(id)
    }

    fn raw(self) -> &'a [u64] {
        let a = 1 + self.plan.part_words;
        &self.words[a..a + self.plan.raw_words]
    }

    fn stored(self) -> &'a [u64] {
        let a = 1 + self.plan.part_words + self.plan.raw_words;
        &self.words[a..a + self.plan.stored_words]
    }

    fn tokens(self) -> impl Iterator<Item = u32> + 'a {
        let a = self.plan.fixed_words();
        let n = self.ntok();
        self.words[a..a + n.div_ceil(2)]
            .iter()
            .flat_map(|&w| [w as u32, (w >> 32) as u32])
            .take(n)
    }
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
    /// Interned token-part texts (for keyed tokens and the salt).
    parts: Interner,
    /// Interned filter tokens, and their positions per salt.
    tokens: Interner,
    positions: Positions,
    /// Values of this batch computed without the dictionary: their payloads, and their parts'
    /// texts (the part ids in such a payload index `scratch_spans`).
    scratch: Vec<u64>,
    scratch_text: Vec<u8>,
    scratch_spans: Vec<(u32, u32)>,
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

/// The row's salt.
#[derive(Clone, Copy)]
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
    /// Per batch: each row's state, and per row and field where its value is.
    rows: Vec<RowState>,
    cur: Vec<Cur>,
    hashes: Vec<u64>,
    /// Per batch: each row's keyed tokens (`ntok` slots per row) and their number.
    row_tokens: Vec<u64>,
    row_ntok: Vec<u8>,
    keys: Vec<u64>,
    raw: Vec<u64>,
    tmp: Vec<u64>,
    harden_scratch: harden::Scratch,
    msg: Vec<u8>,
    pos_buf: Vec<u32>,
    tok_buf: Vec<Vec<u8>>,
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
        Worker {
            plan,
            fields: (0..nf)
                .map(|fi| FieldState {
                    dict: Dict::default(),
                    use_dict: plan.fields[fi].cached,
                    parts: Interner::default(),
                    tokens: Interner::default(),
                    positions: Positions::default(),
                    scratch: Vec::new(),
                    scratch_text: Vec::new(),
                    scratch_spans: Vec::new(),
                })
                .collect(),
            token_cache: plan
                .schema
                .tokens
                .iter()
                .map(|_| U64Map::default())
                .collect(),
            token_cache_on: vec![true; plan.schema.tokens.len()],
            salts,
            salt_of_part: Vec::new(),
            rows: Vec::new(),
            cur: Vec::new(),
            hashes: Vec::new(),
            row_tokens: Vec::new(),
            row_ntok: Vec::new(),
            keys: Vec::new(),
            raw: vec![0; plan.schema.words()],
            tmp: Vec::new(),
            harden_scratch: harden::Scratch::default(),
            msg: Vec::new(),
            pos_buf: Vec::new(),
            tok_buf: Vec::new(),
            decode_buf: String::new(),
            counts: vec![FieldCounts::default(); nf],
        }
    }

    /// Empties every cache when one has outgrown its bound, and switches off caches that do
    /// not earn their keep (called between batches).
    fn tend_caches(&mut self) {
        for f in &mut self.fields {
            if f.use_dict
                && f.dict
                    .hit_rate(PROBE)
                    .is_some_and(|r| r < MIN_DICT_HIT_RATE)
            {
                f.use_dict = false;
                f.dict = Dict::default();
            }
        }
        for (c, on) in self.token_cache.iter_mut().zip(&mut self.token_cache_on) {
            if *on && c.hit_rate(PROBE).is_some_and(|r| r < MIN_TOKEN_HIT_RATE) {
                *on = false;
                *c = U64Map::default();
            }
        }
        let over = self.fields.iter().any(|f| {
            f.dict.arena_words() > MAX_DICT_WORDS
                || f.parts.len() > MAX_INTERNED
                || f.tokens.len() > MAX_INTERNED
        }) || self.salts.len() > MAX_INTERNED
            || self.token_cache.iter().any(|c| c.len() > MAX_TOKEN_ENTRIES);
        if over {
            let on: Vec<bool> = self.fields.iter().map(|f| f.use_dict).collect();
            let tok_on = self.token_cache_on.clone();
            let mut fresh = Worker::new(self.plan);
            fresh.counts = std::mem::take(&mut self.counts);
            *self = fresh;
            for (f, on) in self.fields.iter_mut().zip(on) {
                f.use_dict = on;
            }
            self.token_cache_on = tok_on;
        }
    }

    /// Encodes a batch of parsed records, whose first is row `first_row` of the export and
    /// `offset` of its block: accepted rows are written to `out` in order, rejected rows listed.
    /// Works column by column, so that each step has the whole batch's memory loads in flight
    /// together, where row by row each lookup would wait for its own cache misses.
    pub fn encode_batch(
        &mut self,
        batch: &RecordBatch,
        first_row: u64,
        offset: usize,
        o: BatchOut<'_, '_>,
    ) {
        self.tend_caches();
        let plan = self.plan;
        let n = batch.len();
        let nf = plan.schema.fields.len();
        self.start_rows(batch, first_row, o.out);
        self.cur.clear();
        self.cur.resize(n * nf, Cur::None);
        for f in &mut self.fields {
            f.scratch.clear();
            f.scratch_text.clear();
            f.scratch_spans.clear();
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
            let (row, line) = (first_row + r as u64, batch.line(r));
            if let Some(col) = st.bad_bytes {
                let c = plan.header[col].as_str();
                let hint = if plan.map.encoding == TextEncoding::Windows1252 {
                    ""
                } else {
                    " (if the export comes from a legacy system, set encoding = \"windows-1252\" in the column map)"
                };
                st.live = false;
                o.out.rejects.push(reject(
                    (row, line),
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
                    (row, line),
                    None,
                    "too_few_fields",
                    format!(
                        "only {} of the linking fields are usable, at least {} are needed",
                        st.in_filter, plan.schema.def.min_fields
                    ),
                ));
            }
        }
        // Filters, straight into the output, segment by segment; then noise and popcounts.
        let words = plan.schema.stored_words();
        let pw = plan.schema.segments.len() + 1;
        let e0 = *o.encoded;
        for seg in 0..plan.schema.segments.len() {
            let mut e = e0;
            for r in 0..n {
                if !self.rows[r].live {
                    continue;
                }
                let filter = &mut o.dest.filters[e * words..(e + 1) * words];
                self.build_segment(r, seg, filter);
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
                    &mut self.harden_scratch,
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
    fn start_rows(&mut self, batch: &RecordBatch, first_row: u64, out: &mut super::BlockOut) {
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
    fn look_up_column(&mut self, batch: &RecordBatch, si: usize) {
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
                        let mut len = fp.fixed_words();
                        if fp.salted {
                            len += ((f.dict.payload(p, 1)[0] >> 32) as usize).div_ceil(2);
                        }
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
                Status::Invalid(why) => {
                    c.invalid[Invalid::ALL.iter().position(|&w| w == why).unwrap_or(0)] += 1
                }
                Status::BadBytes => {
                    c.invalid[Invalid::ALL.len()] += 1;
                    st.bad_bytes.get_or_insert(col);
                }
                Status::Present => {
                    c.present += 1;
                    self.cur[r * nf + fi] = cur;
                    if fp.segment.is_some() && !(fp.salted && matches!(st.salt, Salt::NoBits)) {
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

    /// The text of part `t` of field `fi`'s value `cur`.
    fn part_text(&self, fi: usize, cur: Cur, t: usize) -> Option<&[u8]> {
        let id = self.val(fi, cur)?.part(t)?;
        let f = &self.fields[fi];
        Some(match cur {
            Cur::Scratch(..) => {
                let (a, l) = f.scratch_spans[id as usize];
                &f.scratch_text[a as usize..(a + l) as usize]
            }
            _ => f.parts.text(id),
        })
    }

    /// The salt given by part `t` of the salt source `fi`'s value `cur`; `None` when it gives
    /// none (the default then stands).
    fn row_salt(&mut self, cur: Cur, fi: usize, t: usize) -> Option<Salt> {
        let part = self.val(fi, cur)?.part(t)?;
        let id = match cur {
            Cur::Cached(..) => {
                let i = part as usize;
                match self.salt_of_part.get(i) {
                    Some(&s) if s != NO_ID => s,
                    _ => {
                        let s = self.salts.id(self.fields[fi].parts.text(part));
                        if self.salt_of_part.len() <= i {
                            self.salt_of_part.resize(i + 1, NO_ID);
                        }
                        self.salt_of_part[i] = s;
                        s
                    }
                }
            }
            _ => {
                let text = self.part_text(fi, cur, t)?.to_vec();
                self.salts.id(&text)
            }
        };
        Some(Salt::Id(id as usize))
    }

    /// Computes field `fi`'s value of `raw` into `tmp`; with `intern`, its parts are interned
    /// ids, otherwise indexes into the field's batch scratch spans.
    fn compute(&mut self, fi: usize, raw: &[u8], intern: bool) {
        let plan = self.plan;
        let fp = &plan.fields[fi];
        let fdef = &plan.schema.fields[fi];
        let Worker {
            fields,
            decode_buf,
            tok_buf,
            pos_buf,
            harden_scratch,
            tmp: s,
            ..
        } = self;
        let f = &mut fields[fi];
        s.clear();
        s.resize(fp.fixed_words(), 0);
        for w in &mut s[1..1 + fp.part_words] {
            *w = u64::MAX; // NO_ID in both halves
        }
        let value = match field_value(plan, fi, raw, decode_buf) {
            Ok(v) => v,
            Err(st) => {
                s[0] = u64::from(st.code());
                return;
            }
        };
        // Token parts.
        for (t, tr) in Transform::ALL.iter().enumerate() {
            let Some(slot) = fp.part_slot[t] else {
                continue;
            };
            let Some(text) = tokens::part_text(&value, *tr) else {
                continue;
            };
            let id = if intern {
                f.parts.id(text.as_bytes())
            } else {
                let a = f.scratch_text.len() as u32;
                f.scratch_text.extend_from_slice(text.as_bytes());
                f.scratch_spans.push((a, text.len() as u32));
                (f.scratch_spans.len() - 1) as u32
            };
            let w = &mut s[1 + slot / 2];
            let shift = 32 * (slot % 2);
            *w = (*w & !(0xffff_ffffu64 << shift)) | u64::from(id) << shift;
        }
        let mut meta = u64::from(ST_PRESENT);
        if let Some(seg) = fp.segment {
            tok_buf.clear();
            tokens::tokenise(&value, fdef.def.tokeniser, tok_buf);
            let k = fp.k as usize;
            let hasher = &plan.hasher;
            let start = fp.start_bit;
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
                let raw_at = 1 + fp.part_words;
                for t in tok_buf.iter() {
                    let id = f.tokens.id(t);
                    let pos = f.positions.get(0, id, k, |out| {
                        pos_buf.clear();
                        hasher.positions(seg, fp.k, t, pos_buf);
                        out.extend(pos_buf.iter().map(|&p| (p - start) as u16));
                    });
                    let words = &mut s[raw_at..raw_at + fp.raw_words];
                    for &p in pos {
                        words[usize::from(p) / 64] |= 1 << (p % 64);
                    }
                }
                let words = &s[raw_at..raw_at + fp.raw_words];
                if words.iter().any(|&w| w != 0) {
                    meta |= 1 << 8;
                }
                if fp.stored_words > 0 {
                    let (a, b) = s[raw_at..].split_at_mut(fp.raw_words);
                    plan.hardener
                        .apply_segment(seg, a, &mut b[..fp.stored_words], harden_scratch);
                }
            }
        }
        s[0] = meta;
    }

    /// Whether field `fi`'s value `cur` sets bits in a row salted `salt`.
    fn feeds(&self, fi: usize, cur: Cur, salt: Salt) -> bool {
        let fp = &self.plan.fields[fi];
        self.val(fi, cur)
            .is_some_and(|v| v.has_bits() && !(fp.salted && matches!(salt, Salt::NoBits)))
    }

    /// ORs field `fi`'s bits for value `cur` under `salt` into `words` (its segment's hashed
    /// words).
    fn add_bits(&mut self, fi: usize, cur: Cur, salt: Salt, words: &mut [u64]) {
        let plan = self.plan;
        let fp = &plan.fields[fi];
        if !fp.salted {
            if let Some(v) = self.val(fi, cur) {
                for (d, s) in words.iter_mut().zip(v.raw()) {
                    *d |= s;
                }
            }
            return;
        }
        let Salt::Id(sid) = salt else {
            return;
        };
        let seg = fp.segment.unwrap_or(0);
        let k = fp.k as usize;
        let start = fp.start_bit;
        let Worker {
            fields,
            msg,
            pos_buf,
            salts,
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
        if sid >= MAX_SALTS {
            for tok in v.tokens() {
                let m = salted_message(salt_text, f.tokens.text(tok), msg);
                pos_buf.clear();
                hasher.positions(seg, fp.k, m, pos_buf);
                for &p in pos_buf.iter() {
                    let p = p - start;
                    words[(p / 64) as usize] |= 1 << (p % 64);
                }
            }
            return;
        }
        for tok in v.tokens() {
            let pos = f.positions.get(sid, tok, k, |out| {
                let m = salted_message(salt_text, f.tokens.text(tok), msg);
                pos_buf.clear();
                hasher.positions(seg, fp.k, m, pos_buf);
                out.extend(pos_buf.iter().map(|&p| (p - start) as u16));
            });
            for &p in pos {
                words[usize::from(p) / 64] |= 1 << (p % 64);
            }
        }
    }

    /// Writes segment `seg` of row `r`'s stored filter into `filter`.
    fn build_segment(&mut self, r: usize, seg: usize, filter: &mut [u64]) {
        let plan = self.plan;
        let schema = plan.schema;
        let nf = schema.fields.len();
        let salt = self.rows[r].salt;
        let fis = &plan.segment_fields[seg];
        if !plan.hardener.transforms() {
            let out = &mut filter[schema.segments[seg].word_range()];
            out.fill(0);
            for &fi in fis {
                let c = self.cur[r * nf + fi];
                if self.feeds(fi, c, salt) {
                    self.add_bits(fi, c, salt, out);
                }
            }
            return;
        }
        let out = &mut filter[schema.stored_segments[seg].word_range()];
        let cur = |fi: usize| self.cur[r * nf + fi];
        let mut feeding = fis
            .iter()
            .copied()
            .filter(|&fi| self.feeds(fi, cur(fi), salt));
        match (feeding.next(), feeding.next()) {
            (None, _) => out.fill(0),
            (Some(fi), None) if plan.fields[fi].stored_words > 0 => {
                if let Some(v) = self.val(fi, cur(fi)) {
                    out.copy_from_slice(v.stored());
                }
            }
            _ => {
                let mut raw = std::mem::take(&mut self.raw);
                let rw = &mut raw[..schema.segments[seg].word_range().len()];
                rw.fill(0);
                for &fi in fis {
                    let c = self.cur[r * nf + fi];
                    if self.feeds(fi, c, salt) {
                        self.add_bits(fi, c, salt, rw);
                    }
                }
                plan.hardener
                    .apply_segment(seg, rw, out, &mut self.harden_scratch);
                self.raw = raw;
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
            let on = self.token_cache_on[kind] && t.parts.len() <= 2;
            self.keys.clear();
            for r in 0..n {
                let mut key = if self.rows[r].live { 0 } else { ABSENT };
                let mut cacheable = on;
                for (i, &(fi, tr)) in t.parts.iter().enumerate() {
                    if key == ABSENT {
                        break;
                    }
                    let cur = self.cur[r * nf + fi];
                    match self.val(fi, cur).and_then(|v| v.part(tr.index())) {
                        None => key = ABSENT,
                        Some(id) => {
                            cacheable &= matches!(cur, Cur::Cached(..));
                            key |= u64::from(id + 1) << (32 * (1 - i));
                        }
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
                            let cur = self.cur[r * nf + fi];
                            if let Some(p) = self.part_text(fi, cur, tr.index()) {
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
