//! The per-worker encoder: batches of parsed records to stored filters, popcounts and keyed
//! exact tokens, written into the block's output space.
//!
//! The encoder is bound by the latency of its table lookups, so each row costs as few lookups
//! as the schema allows, and each batch is worked column by column, so that a column's
//! lookups have their cache misses in flight together (docs/DESIGN-NOTES.md, "Encoder"):
//! - **One entry per field and row.** An unsalted field's entry is keyed by the value's raw
//!   bytes; a salted field's by the row's salt and the raw bytes. The entry holds everything
//!   the row needs of that value: its status, its token parts (text, and an interned id where
//!   a cache needs one), its segment's hashed bits and stored (hardened) form, and the keyed
//!   tokens whose parts are all in the entry (`dob` from the date; `yob_family` from a salted
//!   surname, whose salt is the year). A salted name costs one lookup per row, whatever its
//!   year.
//! - **Values, unsalted**, for salted fields: a salted entry's bits are computed from the
//!   value's filter tokens (kept in a dictionary by raw bytes, so each name is normalised
//!   once) and dense per-salt tables of each token's positions (tokens and salts are few).
//! - **Keyed exact tokens** of parts from several entries, per kind, by the ids of the parts.
//! - A segment fed by several values is the XOR of their stored forms, corrected for the bits
//!   they share, when its hardening is linear (diffusion, folding); otherwise their bits are
//!   ORed and hardened per row. Each row's filter is built in a small per-batch buffer as its
//!   entries are looked up (while they are in cache) and copied out afterwards.
//!
//! A cache that does not earn its keep switches itself off, and a worker whose caches outgrow
//! their bounds empties them. Caching never changes results, only speed: the output is
//! identical for any thread count and any order of rows (tests/vectors.rs, tests/hardening.rs).

use super::blocks::{Rec, RecordBatch};
use super::table::{hash_bytes, push_words, Dict, Interner, Payload, U64Map};
use super::{decode, enc_name, normalise_value, Plan, Reject};
use crate::colmap::TextEncoding;
use crate::harden;
use crate::normalise::{self, Invalid};
use crate::schema::{Normaliser, SaltMissing, Schema, Transform};
use crate::tokens::{self, TokenBuf, Value};

/// Number of token-part transforms (see [`Transform::ALL`]).
pub const PARTS: usize = 5;
/// No interned id.
const NO_ID: u32 = u32::MAX;
/// A part reference for a part the value does not have.
const NO_PART: u64 = u64::MAX;
/// An embedded keyed token that is not emitted (a part is missing). Never a token: a token's
/// top byte is its kind, and there are fewer than 255 kinds.
const NO_TOKEN: u64 = u64::MAX;
/// A cache that finds its key less often than this, once it has seen [`Limits::probe`] lookups, is
/// switched off. A keyed-token cache miss (a lookup and an insert, often a cache miss on a
/// large table) costs about a third of the HMAC a hit saves; an entry dictionary saves a
/// normalisation, tokenisation and hardening per hit, and pays at much lower hit rates.
const MIN_TOKEN_HIT_RATE: f64 = 0.3;
const MIN_ENTRY_HIT_RATE: f64 = 0.05;

/// When caches switch off and how large they grow.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Lookups a cache sees before its hit rate is judged.
    pub probe: u64,
    /// Bounds on a worker's caches: past them, the worker empties its caches and starts again
    /// (only inputs far beyond national scale, or schemas that put unique values in the
    /// filter, get there).
    pub max_dict_words: usize,
    pub max_interned: usize,
    pub max_cached: usize,
    /// Salts with a position table each; records with other salts hash their tokens directly.
    pub max_salts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            probe: 1 << 16,
            max_dict_words: 1 << 25,
            max_interned: 1 << 22,
            max_cached: 1 << 22,
            max_salts: 1 << 12,
        }
    }
}

/// Status codes kept in an entry's first word.
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

/// How one field is encoded and how its entries are laid out.
///
/// An **entry** (what a row uses; in the field's entry dictionary, or in the batch's scratch
/// space) is: a word holding the status, whether the value sets bits and the entry's length;
/// a reference per kept token part (id, and the offset and length of its text); the segment's
/// hashed words (when kept) and stored words (when kept); the embedded keyed tokens; then the
/// parts' texts. A salted field's **value** (its unsalted form, in its value dictionary) has
/// the same first word (with the number of filter tokens in the top half), the part
/// references, the ids of its filter tokens (two per word), and the texts.
#[derive(Clone, Debug)]
pub struct FieldPlan {
    /// The field's segment, bits per token and the segment's first bit.
    pub segment: Option<usize>,
    pub k: u32,
    pub start_bit: u32,
    /// Filter tokens are salted (their bits depend on the record's salt).
    pub salted: bool,
    /// Entries are kept in a dictionary (not for identifiers: unique per child, so a
    /// dictionary would only cost).
    pub cached: bool,
    /// Per transform: its slot among the kept parts (those a keyed token or the salt uses).
    part_slot: [Option<usize>; PARTS],
    nparts: usize,
    /// The segment's hashed words, and its stored words when entries keep their stored form.
    seg_words: usize,
    stored_words: usize,
    /// Entries keep their hashed words (not needed when the field alone feeds a hardened
    /// segment: its stored form is all that is used).
    keep_raw: bool,
    /// Keyed-token kinds computed once per entry: all their parts are this field's, or (for a
    /// salted field) the salt.
    embedded: Vec<usize>,
}

impl FieldPlan {
    /// `kept`: which transforms some keyed token or the salt uses; `segment`: (index, bits per
    /// token, first bit, hashed words, stored words kept per entry or 0, whether entries keep
    /// their hashed words); `embedded`: see [`embedded_tokens`].
    pub fn new(
        segment: Option<(usize, u32, u32, usize, usize, bool)>,
        salted: bool,
        cached: bool,
        kept: [bool; PARTS],
        embedded: Vec<usize>,
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
            embedded,
        }
    }

    /// Hashed words kept per entry.
    fn raw_words(&self) -> usize {
        if self.keep_raw {
            self.seg_words
        } else {
            0
        }
    }

    /// Words before an entry's bits (or a value's token ids).
    fn body_at(&self) -> usize {
        1 + self.nparts
    }

    /// Words of an entry's bits and stored form.
    fn bits_words(&self) -> usize {
        self.raw_words() + self.stored_words
    }

    /// Where an entry's embedded tokens start.
    fn emb_at(&self) -> usize {
        self.body_at() + self.bits_words()
    }

    /// Where an entry's part texts start.
    fn entry_text_at(&self) -> usize {
        self.emb_at() + self.embedded.len()
    }

    /// Whether entries keep the segment's stored form.
    fn keeps_stored(&self) -> bool {
        self.stored_words > 0
    }
}

/// The keyed-token kinds that field `fi`'s entries can hold: those all of whose parts are
/// `fi`'s, or, when `fi` is salted, the salt (which is then the row's salt text). Each kind is
/// embedded in at most one field.
pub fn embedded_tokens(schema: &Schema, fi: usize) -> Vec<usize> {
    let salt = schema.salt.as_ref();
    let salted = salt.is_some_and(|s| s.salted[fi] && s.source.0 != fi);
    schema
        .tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            t.parts.iter().any(|&(f, _)| f == fi)
                && t.parts.iter().all(|&(f, tr)| {
                    f == fi || (salted && salt.is_some_and(|s| s.source == (f, tr)))
                })
        })
        .map(|(kind, _)| kind)
        .collect()
}

// An entry's first word: status (bits 0..8), sets bits (bit 8), length in words (16..32), and
// for a salted field's value, its number of filter tokens (32..64).
const META_BITS: u64 = 1 << 8;

fn payload_len(meta: u64) -> usize {
    (meta >> 16 & 0xffff) as usize
}

fn meta_ntok(meta: u64) -> usize {
    (meta >> 32) as usize
}

/// Part `t` of a payload whose texts start at word `text_at`: its interned id (if it has one)
/// and its text; `None` if the value has no such part.
fn part_of<'w>(
    fp: &FieldPlan,
    words: &'w [u64],
    text_at: usize,
    t: usize,
) -> Option<(Option<u32>, &'w [u8])> {
    let r = *words.get(1 + fp.part_slot[t]?)?;
    if r == NO_PART {
        return None;
    }
    let id = r as u32;
    let text = bytemuck::cast_slice::<u64, u8>(&words[text_at..]);
    Some(((id != NO_ID).then_some(id), ref_text(r, text)))
}

/// A part reference: interned id `id` (or [`NO_ID`]) of the text at `off..off + len`.
fn part_ref(id: u32, off: usize, len: usize) -> u64 {
    u64::from(id) | (off as u64) << 32 | (len as u64) << 48
}

/// The text of part reference `r` in an entry's part texts `text`.
fn ref_text(r: u64, text: &[u8]) -> &[u8] {
    let (off, len) = ((r >> 32) as u16 as usize, (r >> 48) as usize);
    &text[off..off + len]
}

/// Where a salted field's value's texts start.
fn value_text_at(fp: &FieldPlan, meta: u64) -> usize {
    fp.body_at() + meta_ntok(meta).div_ceil(2)
}

/// The ids of a salted field's value's filter tokens.
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

    /// Starts loading the positions of token `tok` under `salt` (and whether they are known).
    #[inline]
    fn prefetch(&self, salt: usize, tok: u32, k: usize) {
        let t = tok as usize;
        if let Some((pos, known)) = self.tables.get(salt) {
            if let (Some(w), Some(p)) = (known.get(t / 64), pos.get(t * k)) {
                super::table::prefetch(w);
                super::table::prefetch(p);
            }
        }
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
    /// Entries by key (raw bytes; for a salted field, the salt then the raw bytes), while the
    /// dictionary earns its keep.
    entries: Dict,
    use_entries: bool,
    /// A salted field's values by raw bytes (their filter token ids and parts).
    values: Dict,
    use_values: bool,
    /// Interned token-part texts, for the ids that keyed-token caches and the salt use.
    parts: Interner,
    /// Per transform: its parts get ids (a live cache or the salt needs them).
    need_id: [bool; PARTS],
    /// Per embedded token kind of a salted field: the transform of the field's one part when
    /// the token is that part and the salt (cached by salt and part id), else `None`.
    salt_keyed: Vec<Option<usize>>,
    /// Interned filter tokens, and their positions per salt.
    tokens: Interner,
    positions: Positions,
    /// Entries of this batch made without the dictionary.
    scratch: Vec<u64>,
    /// Rows of the last batch whose entry was not in the dictionary.
    misses: usize,
}

impl FieldState {
    /// The entry `cur` points to.
    #[inline]
    fn entry(&self, cur: Cur) -> &[u64] {
        match cur {
            Cur::None => &[],
            Cur::Cached(p, len) => self.entries.payload(p, len as usize),
            Cur::Scratch(at, len) => &self.scratch[at as usize..(at + len) as usize],
        }
    }
}

/// Where a row's entry of a field is.
#[derive(Clone, Copy)]
enum Cur {
    /// Not present (missing, invalid or unmapped).
    None,
    /// In the entry dictionary: payload offset and length.
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
/// schema says salted fields then set no bits). Salts past [`Limits::max_salts`] have no
/// position tables: their tokens are hashed directly.
type Salt = u32;
/// A salted field's dictionary key starts with the row's salt, as these little-endian bytes.
const SALT_BYTES: usize = std::mem::size_of::<Salt>();
const MARKER: Salt = 0;
const NO_BITS: Salt = u32::MAX;

/// Token flags of a row and kind: not emitted (a part is missing); hashed from its message
/// (its parts have no ids, or its cache is off); found in an entry (its value is in `tkeys`).
const T_ABSENT: u8 = 1;
const T_UNCACHED: u8 = 2;
const T_EMBEDDED: u8 = 4;

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

/// Buffers for computing entries and building segments.
#[derive(Default)]
struct Scratch {
    overlap: Vec<u64>,
    raw: Vec<u64>,
    harden: harden::Scratch,
    payload: Vec<u64>,
    value: Vec<u64>,
    text: Vec<u8>,
    msg: Vec<u8>,
    pos: Vec<u32>,
    tokens: TokenBuf,
    decode: String,
    /// Values read under Windows-1252 that have bytes outside ASCII (the only ones the
    /// declared encoding changes): counted as they are computed, so once per distinct value.
    non_ascii: u64,
    /// Name values with `?` or U+FFFD between letters ([`lossy_name`]), likewise.
    lossy_names: u64,
}

/// A keyed-token part a field's entry gives: the token kind, the shift of the part's id in the
/// cache key (`u32::MAX`: the kind is not cached), and the entry word with the part's
/// reference.
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
    /// Per field: the keyed-token parts its entries give (kinds not embedded); per token kind:
    /// some part's field has no column (the token is never emitted).
    token_uses: Vec<Vec<TokenUse>>,
    token_unmapped: Vec<bool>,
    /// Per segment, how its stored form is built.
    seg_mode: Vec<SegMode>,
    /// Salt texts → salt ids; and per salt-source part id, its salt id (dense).
    salts: Interner,
    salt_of_part: Vec<u32>,
    /// Per batch: each row's state; per row and field, where its entry is; per row and token
    /// kind, the cache key (or the token) and flags; the record ids, one after another.
    rows: Vec<RowState>,
    cur: Vec<Cur>,
    tkeys: Vec<u64>,
    tflags: Vec<u8>,
    ids: String,
    /// Per batch: each row's stored filter, built as its entries are looked up, then copied
    /// to the output; per row, the hashed bits of its segments (layout of
    /// `Schema::segments`) and which segments have a value yet.
    fbuf: Vec<u64>,
    acc: Vec<u64>,
    seen: Vec<bool>,
    hashes: Vec<u64>,
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    /// Per batch and salted field: the rows whose entry is missing, and their values' hashes.
    miss_rows: Vec<(usize, u64)>,
    sc: Scratch,
    /// Per field counts for the block being encoded.
    pub counts: Vec<FieldCounts>,
}

impl<'p, 'a> Worker<'p, 'a> {
    /// A worker with empty caches.
    pub fn new(plan: &'p Plan<'a>) -> Self {
        let schema = plan.schema;
        let nf = schema.fields.len();
        let mut salts = Interner::default();
        let marker = salts.id(b"");
        debug_assert_eq!(marker, MARKER);
        let token_embedded: Vec<bool> = (0..schema.tokens.len())
            .map(|kind| plan.fields.iter().any(|fp| fp.embedded.contains(&kind)))
            .collect();
        let token_uses = (0..nf)
            .map(|fi| {
                let fp = &plan.fields[fi];
                let mut uses = Vec::new();
                for (kind, t) in schema.tokens.iter().enumerate() {
                    if token_embedded[kind] {
                        continue;
                    }
                    for (i, &(f, tr)) in t.parts.iter().enumerate() {
                        let Some(slot) = fp.part_slot[tr.index()].filter(|_| f == fi) else {
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
                .enumerate()
                .map(|(fi, fp)| FieldState {
                    salt_keyed: fp
                        .embedded
                        .iter()
                        .map(|&kind| match schema.tokens[kind].parts.as_slice() {
                            [(a, ta), (b, tb)] if (*a == fi) != (*b == fi) => {
                                Some(if *a == fi { ta.index() } else { tb.index() })
                            }
                            _ => None,
                        })
                        .collect(),
                    entries: Dict::default(),
                    use_entries: fp.cached,
                    values: Dict::default(),
                    use_values: fp.cached && fp.salted,
                    parts: Interner::default(),
                    need_id: [false; PARTS],
                    tokens: Interner::default(),
                    positions: Positions::default(),
                    scratch: Vec::new(),
                    misses: 0,
                })
                .collect(),
            token_cache: schema.tokens.iter().map(|_| U64Map::default()).collect(),
            token_cache_on: schema
                .tokens
                .iter()
                .enumerate()
                .map(|(kind, t)| t.parts.len() <= 2 && !token_embedded[kind])
                .collect(),
            token_uses,
            token_unmapped: schema
                .tokens
                .iter()
                .map(|t| t.parts.iter().any(|(f, _)| plan.unmapped.contains(f)))
                .collect(),
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
            salts,
            salt_of_part: Vec::new(),
            rows: Vec::new(),
            cur: Vec::new(),
            tkeys: Vec::new(),
            tflags: Vec::new(),
            ids: String::new(),
            fbuf: Vec::new(),
            acc: Vec::new(),
            seen: Vec::new(),
            hashes: Vec::new(),
            keys: Vec::new(),
            key_ends: Vec::new(),
            miss_rows: Vec::new(),
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
        // Tokens embedded in salted entries are cached by (salt, part id) when an entry is
        // made.
        for (fi, fp) in self.plan.fields.iter().enumerate() {
            if !fp.salted {
                continue;
            }
            for &kind in &fp.embedded {
                for &(f, tr) in &schema.tokens[kind].parts {
                    if f == fi {
                        self.fields[fi].need_id[tr.index()] = true;
                    }
                }
            }
        }
    }

    /// Switches off caches that do not earn their keep, and empties every cache when one has
    /// outgrown its bound (between batches, so no reference into a cache outlives it).
    fn tend_caches(&mut self) {
        let lim = self.plan.limits;
        let probe = lim.probe;
        let tend = |on: &mut bool, dict: &mut Dict| {
            if *on && dict.hit_rate(probe).is_some_and(|r| r < MIN_ENTRY_HIT_RATE) {
                *on = false;
                *dict = Dict::default();
            }
        };
        for f in &mut self.fields {
            tend(&mut f.use_entries, &mut f.entries);
            tend(&mut f.use_values, &mut f.values);
        }
        let mut changed = false;
        for (c, on) in self.token_cache.iter_mut().zip(&mut self.token_cache_on) {
            if *on && c.hit_rate(probe).is_some_and(|r| r < MIN_TOKEN_HIT_RATE) {
                *on = false;
                *c = U64Map::default();
                changed = true;
            }
        }
        if changed {
            self.set_need_id();
        }
        let over = self.fields.iter().any(|f| {
            f.entries.arena_words() > lim.max_dict_words
                || f.values.arena_words() > lim.max_dict_words
                || f.parts.len() > lim.max_interned
                || f.tokens.len() > lim.max_interned
        }) || self.salts.len() > lim.max_interned
            || self.token_cache.iter().any(|c| c.len() > lim.max_cached);
        if over {
            let on: Vec<(bool, bool)> = self
                .fields
                .iter()
                .map(|f| (f.use_entries, f.use_values))
                .collect();
            let tok_on = self.token_cache_on.clone();
            let mut fresh = Worker::new(self.plan);
            fresh.counts = std::mem::take(&mut self.counts);
            *self = fresh;
            for (f, (e, v)) in self.fields.iter_mut().zip(on) {
                f.use_entries = e;
                f.use_values = v;
            }
            self.token_cache_on = tok_on;
            self.set_need_id();
        }
    }

    /// Encodes a batch of parsed records, whose first is row `first_row` of the export and
    /// `offset` of its block: accepted rows are written to `o` in order, rejected rows listed.
    /// Entries are looked up column by column, so that each step has the whole batch's memory
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
            // The stored segments lie end to end over the whole filter (`schema::stored_layout`),
            // so the filter's popcount is the sum of theirs.
            let pcs = &mut o.dest.popcounts[e * pw..(e + 1) * pw];
            let mut total = 0;
            for (p, s) in pcs[1..].iter_mut().zip(&plan.schema.stored_segments) {
                *p = filter[s.word_range()]
                    .iter()
                    .map(|w| w.count_ones())
                    .sum::<u32>() as u16;
                total += *p;
            }
            debug_assert_eq!(
                u32::from(total),
                filter.iter().map(|w| w.count_ones()).sum::<u32>()
            );
            pcs[0] = total;
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
            out.id_hashes.push(hash_bytes(id.as_bytes()));
            out.offsets.push((offset + r) as u32);
            out.lines.push(batch.line(r));
            if batch.may_hold_line_breaks() {
                note_unmapped_line_breaks(&batch.get(r), plan, batch.line(r), &mut out.multiline);
            }
            *o.encoded += 1;
        }
    }

    /// Name values with `?` or U+FFFD between letters since the last call (each distinct value
    /// at least once).
    pub fn take_lossy_names(&mut self) -> u64 {
        std::mem::take(&mut self.sc.lossy_names)
    }

    /// Values of mapped columns and record ids with bytes outside ASCII read under
    /// Windows-1252 since the last call (each distinct value at least once).
    pub fn take_non_ascii_read(&mut self) -> u64 {
        std::mem::take(&mut self.sc.non_ascii)
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
            let checked = if is_empty_row(&rec) {
                // Spreadsheets write formatted empty rows as delimiters only: no child.
                Err(reject(
                    at,
                    None,
                    "empty_row",
                    "the row is empty (only delimiters or spaces); not counted towards \
                     --max-reject-rate"
                        .to_string(),
                ))
            } else if !has_header_shape(&rec, plan.header.len(), plan.trailing_delimiter) {
                // Quoted line breaks in a record of the wrong shape are almost always a stray
                // or unclosed quote: the lines up to the closing quote (or the end of the
                // file) were swallowed into one field, and are no rows of their own.
                let shape = format!(
                    "has {} fields, the header has {}",
                    rec.len(),
                    plan.header.len()
                );
                let breaks = rec.swallowed_lines();
                Err(if rec.line_breaks() == 0 {
                    reject(at, None, "wrong_field_count", shape)
                } else {
                    let runs = if breaks == 0 {
                        "runs to the end of the file: a stray or unclosed quote".to_string()
                    } else {
                        format!(
                            "runs over {breaks} line break(s) to about line {}: a stray or \
                             unclosed quote that swallowed the lines after it (they are not \
                             counted as rows)",
                            at.1 + breaks
                        )
                    };
                    let mut r = reject(
                        at,
                        None,
                        "unclosed_quote",
                        format!(
                            "{shape}, and a quoted field {runs}; fix the quote and export again"
                        ),
                    );
                    r.swallowed_lines = breaks;
                    r
                })
            } else if let Some(c) = batch
                .may_hold_line_breaks()
                .then(|| mapped_swallowed_rows(&rec, plan))
                .flatten()
            {
                // A row of the right shape can hide a stray quote too: the lines it swallowed
                // happened to end in a closing quote and the right number of fields. Found by a
                // column the map reads (record id, names, dates, codes, postcodes, identifiers)
                // that holds swallowed rows.
                let breaks = rec.swallowed_lines();
                let name = plan.header[c].as_str();
                let mut r = reject(
                    at,
                    Some(name),
                    "unclosed_quote",
                    format!(
                        "column `{name}` holds line breaks and delimiters (the row runs over \
                         {breaks} line break(s) to about line {}): a stray quote that swallowed \
                         the lines after it (they are not counted as rows); fix the quote and \
                         export again",
                        at.1 + breaks
                    ),
                );
                r.swallowed_lines = breaks;
                Err(r)
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
                        bad_bytes_detail(id_col, rec.get(plan.id_column), plan.map.encoding, ""),
                    )),
                    Some("") => Err(reject(
                        at,
                        Some(id_col),
                        "missing_record_id",
                        format!("record id column `{id_col}` is empty"),
                    )),
                    Some(id)
                        if id.trim_start_matches('\u{FEFF}').trim() == id_col.trim()
                            && is_header(&rec, plan) =>
                    {
                        Err(reject(
                            at,
                            None,
                            "repeated_header",
                            "the row repeats the header line (two exports joined into one file?)"
                                .to_string(),
                        ))
                    }
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
                        if plan.map.encoding == TextEncoding::Windows1252 && !id.is_ascii() {
                            self.sc.non_ascii += 1;
                        }
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

    /// Looks up source `si`'s column for every live row of the batch: keys, hashes and table
    /// slots first, then the records the slots point to, then the entries themselves
    /// (making the ones not yet known); then counts them, notes their keyed-token parts and
    /// embedded tokens, adds their bits to the rows' filters and, for the salt source, sets
    /// each row's salt.
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
            keys,
            key_ends,
            token_uses,
            counts,
            sc,
            seg_mode,
            fbuf,
            acc,
            seen,
            salts,
            token_cache,
            miss_rows,
            ..
        } = self;
        let f = &mut fields[fi];
        let use_entries = f.use_entries;
        // Each live row's key (a salted field's starts with the row's salt), its hash, and the
        // table slot it lands on.
        keys.clear();
        key_ends.clear();
        for (r, st) in rows.iter().enumerate() {
            if st.live {
                if fp.salted {
                    keys.extend_from_slice(&st.salt.to_le_bytes());
                }
                keys.extend_from_slice(batch.get(r).get(col));
            }
            key_ends.push(keys.len());
        }
        let key = |r: usize| {
            let start = if r == 0 { 0 } else { key_ends[r - 1] };
            &keys[start..key_ends[r]]
        };
        if use_entries {
            hashes.clear();
            for (r, st) in rows.iter().enumerate() {
                let mut h = 0;
                if st.live {
                    h = hash_bytes(key(r));
                    f.entries.prefetch_slot(h);
                }
                hashes.push(h);
            }
            for (st, &h) in rows.iter().zip(hashes.iter()) {
                if st.live {
                    f.entries.prefetch_record(h);
                }
            }
        }
        // Looking ahead is a pass over the batch: worth it only while misses are common, not
        // on an export whose values repeat.
        if use_entries && fp.salted && f.use_values && f.misses * MISSES_TO_LOOK_AHEAD >= n {
            prefetch_for_misses(plan, fi, f, token_cache, rows, key, hashes, miss_rows);
        }
        f.misses = 0;
        let uses = &token_uses[fi];
        let counts = &mut counts[fi];
        let in_filter = fp.segment.is_some();
        let salt_bytes = if fp.salted { SALT_BYTES } else { 0 };
        for r in 0..n {
            let st = &mut rows[r];
            if !st.live {
                continue;
            }
            let k = key(r);
            let raw = &k[salt_bytes..];
            let salt = st.salt;
            let mut make = |f: &mut FieldState, sc: &mut Scratch, cached: bool| {
                if fp.salted {
                    let ctx = SaltCtx {
                        salt,
                        salts,
                        token_cache,
                    };
                    make_salted_entry(plan, fi, f, raw, ctx, cached, sc);
                } else {
                    compute_value(plan, fi, f, raw, cached, sc);
                }
            };
            let (c, words) = if use_entries && raw.len() <= normalise::MAX_FIELD_BYTES {
                let hash = hashes[r];
                match f.entries.find(hash, k) {
                    Some(p) => {
                        let words = f.entries.payload_from(p);
                        let len = payload_len(words[0]);
                        (Cur::Cached(p, len as u32), &words[..len])
                    }
                    None => {
                        f.misses += 1;
                        make(f, sc, true);
                        let len = sc.payload.len();
                        let p = f.entries.insert(hash, k, len);
                        f.entries.payload_mut(p, len).copy_from_slice(&sc.payload);
                        (Cur::Cached(p, len as u32), f.entries.payload(p, len))
                    }
                }
            } else {
                make(f, sc, false);
                let at = f.scratch.len();
                f.scratch.extend_from_slice(&sc.payload);
                let len = sc.payload.len();
                (
                    Cur::Scratch(at as u32, len as u32),
                    &f.scratch[at..at + len],
                )
            };
            let meta = words[0];
            let (tk, flags) = (
                &mut tkeys[r * ntok..(r + 1) * ntok],
                &mut tflags[r * ntok..(r + 1) * ntok],
            );
            match meta as u8 {
                ST_PRESENT => {
                    counts.present += 1;
                    cur[r * nf + fi] = c;
                    if in_filter && !(fp.salted && salt == NO_BITS) {
                        st.in_filter += 1;
                    }
                    for u in uses {
                        let part = words[u.word];
                        if part == NO_PART {
                            flags[u.kind] |= T_ABSENT;
                        } else if part as u32 == NO_ID || u.shift == u32::MAX {
                            flags[u.kind] |= T_UNCACHED;
                        } else {
                            tk[u.kind] |= ((part & 0xffff_ffff) + 1) << u.shift;
                        }
                    }
                    for (j, &kind) in fp.embedded.iter().enumerate() {
                        match words[fp.emb_at() + j] {
                            NO_TOKEN => flags[kind] |= T_ABSENT,
                            tok => {
                                tk[kind] = tok;
                                flags[kind] |= T_EMBEDDED;
                            }
                        }
                    }
                    if let (Some(seg), true) = (fp.segment, meta & META_BITS != 0) {
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
            for &kind in &fp.embedded {
                flags[kind] |= T_ABSENT;
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

    /// The salt given by part `t` of the salt source `fi`'s entry `cur`; `None` when it gives
    /// none (the default then stands).
    fn row_salt(&mut self, cur: Cur, fi: usize, t: usize) -> Option<Salt> {
        let fp = &self.plan.fields[fi];
        let (id, text) = part_of(fp, self.fields[fi].entry(cur), fp.entry_text_at(), t)?;
        if let Some(&s) = id.and_then(|part| self.salt_of_part.get(part as usize)) {
            if s != NO_ID {
                return Some(s);
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
        Some(sid)
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
                let detail = bad_bytes_detail(c, batch.get(r).get(col), plan.map.encoding, hint);
                out.rejects
                    .push(reject(at, Some(c), "invalid_encoding", detail));
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
            }
        }
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
    /// emitted when all its parts are present: from the entry that holds it, from its cache
    /// by the ids of its (one or two) parts, or hashed from its message.
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
            if flags & T_EMBEDDED != 0 {
                out[nt] = key;
                nt += 1;
                continue;
            }
            let cached = flags == 0;
            if cached {
                if let Some(tok) = self.token_cache[kind].get(key) {
                    out[nt] = tok;
                    nt += 1;
                    continue;
                }
            }
            let (fields, cur, msg) = (&self.fields, &self.cur, &mut self.sc.msg);
            // Every part is present (else the token is absent).
            token_message(&t.parts, msg, |fi, tr| {
                let fp = &plan.fields[fi];
                let words = fields[fi].entry(cur[r * nf + fi]);
                Some(part_of(fp, words, fp.entry_text_at(), tr.index()).map_or(&[][..], |p| p.1))
            });
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

/// Adds a value's hashed bits `raw` and stored form `stored` (either empty when not kept) to
/// segment `seg` of a row's filter, as `mode` says.
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

/// Field `fi`'s value of `raw`, as [`FieldPlan`] lays it out, into `sc.payload`: for an
/// unsalted field its entry (bits, stored form and embedded tokens included), for a salted
/// one its value (filter token ids, no bits). With `cached`, it goes into a dictionary and its
/// parts get the ids caches need.
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
        msg,
        non_ascii,
        lossy_names,
        ..
    } = sc;
    s.clear();
    let fixed = if fp.salted {
        fp.body_at()
    } else {
        fp.entry_text_at()
    };
    s.resize(fixed, 0);
    s[1..fp.body_at()].fill(NO_PART);
    text.clear();
    if plan.map.encoding == TextEncoding::Windows1252 && !raw.is_ascii() {
        *non_ascii += 1;
    }
    if fdef.def.normaliser == Normaliser::Name && lossy_name(raw) {
        *lossy_names += 1;
    }
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
        s[1 + slot] = part_ref(id, off, part.len());
    }
    let mut meta = u64::from(ST_PRESENT);
    if let Some(sg) = fp.segment {
        tok_buf.clear();
        tokens::tokenise_into(&value, fdef.def.tokeniser, tok_buf);
        let k = fp.k as usize;
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
            words.clear();
            words.resize(fp.seg_words, 0);
            for i in 0..tok_buf.len() {
                let t = tok_buf.get(i);
                // A token as rare as the value: nothing to gain from keeping its positions.
                if tok_buf.whole(i) {
                    set_bits(words, segment_positions(plan, fp, sg, t, pos_buf));
                    continue;
                }
                let id = f.tokens.id(t);
                let pos = f.positions.get(0, id, k, |out| {
                    out.extend(segment_positions(plan, fp, sg, t, pos_buf).map(|p| p as u16));
                });
                set_bits(words, pos.iter().map(|&p| u32::from(p)));
            }
            meta |= store_bits(plan, fp, sg, words, s, harden);
        }
    }
    if !fp.salted {
        // Embedded tokens: all their parts are this value's.
        for (j, &kind) in fp.embedded.iter().enumerate() {
            s[fp.emb_at() + j] = embedded_token(plan, kind, fi, s, text, None, msg);
        }
    }
    push_words(s, text);
    meta |= (s.len() as u64) << 16;
    s[0] = meta;
}

/// The bit positions of filter token `token` (its message) in field `fp`'s segment `sg`,
/// relative to the segment's first bit; `buf` holds them.
fn segment_positions<'b>(
    plan: &Plan<'_>,
    fp: &FieldPlan,
    sg: usize,
    token: &[u8],
    buf: &'b mut Vec<u32>,
) -> impl Iterator<Item = u32> + 'b {
    buf.clear();
    plan.hasher.positions(sg, fp.k, token, buf);
    let start = fp.start_bit;
    buf.iter().map(move |&p| p - start)
}

/// A salted field's batch looks ahead for its misses ([`prefetch_for_misses`]) when the
/// field's last batch missed on at least one row in this many.
const MISSES_TO_LOOK_AHEAD: usize = 16;

/// Starts loading, for all the rows of a batch whose salted entry is missing at once, what
/// making their entries reads: the value's record in the value dictionary, then its tokens'
/// positions under the row's salt and the keyed-token cache slots of its embedded tokens.
/// Each is a cache miss in a table the dictionaries keep evicting, and [`make_salted_entry`]
/// would otherwise wait for them one entry after another. Only hints: nothing is changed.
#[allow(clippy::too_many_arguments)]
fn prefetch_for_misses<'k>(
    plan: &Plan<'_>,
    fi: usize,
    f: &FieldState,
    token_cache: &[U64Map],
    rows: &[RowState],
    key: impl Fn(usize) -> &'k [u8],
    hashes: &[u64],
    miss_rows: &mut Vec<(usize, u64)>,
) {
    let fp = &plan.fields[fi];
    miss_rows.clear();
    for (r, st) in rows.iter().enumerate() {
        let k = key(r);
        if !st.live || k.len() - SALT_BYTES > normalise::MAX_FIELD_BYTES {
            continue;
        }
        if f.entries.peek(hashes[r], k).is_none() {
            let h = hash_bytes(&k[SALT_BYTES..]);
            f.values.prefetch_slot(h);
            miss_rows.push((r, h));
        }
    }
    for &(_, h) in miss_rows.iter() {
        f.values.prefetch_record(h);
    }
    let k = fp.k as usize;
    for &(r, h) in miss_rows.iter() {
        let salt = rows[r].salt;
        let Some(p) = f.values.peek(h, &key(r)[SALT_BYTES..]) else {
            continue;
        };
        let value = f.values.payload_from(p);
        if salt == NO_BITS || value[0] as u8 != ST_PRESENT {
            continue;
        }
        if fp.segment.is_some() && (salt as usize) < plan.limits.max_salts {
            for tok in token_ids(fp, value) {
                f.positions.prefetch(salt as usize, tok, k);
            }
        }
        for (j, &kind) in fp.embedded.iter().enumerate() {
            if let Some(key) = salted_token_key(fp, f, j, value, salt) {
                token_cache[kind].prefetch(key);
            }
        }
    }
}

/// The keyed-token cache key of embedded token `j` of a salted field's value `value` (its
/// payload) under `salt`: (salt, the id of the value's one part). `None` when the token is not
/// cached that way ([`FieldState::salt_keyed`]), the part has no id, or there is no salt.
fn salted_token_key(
    fp: &FieldPlan,
    f: &FieldState,
    j: usize,
    value: &[u64],
    salt: Salt,
) -> Option<u64> {
    if salt == NO_BITS || salt == MARKER {
        return None;
    }
    let (id, _) = part_of(fp, value, value_text_at(fp, value[0]), f.salt_keyed[j]?)?;
    Some((u64::from(salt) + 1) << 32 | (u64::from(id?) + 1))
}

/// Sets the bits at `positions` (relative to the segment's first bit) in `words`.
#[inline]
fn set_bits(words: &mut [u64], positions: impl Iterator<Item = u32>) {
    for p in positions {
        words[(p / 64) as usize] |= 1 << (p % 64);
    }
}

/// Writes a value's hashed segment `words` into its entry `s` (the hashed words when kept, and
/// the stored form when kept); returns [`META_BITS`] when the value sets bits.
fn store_bits(
    plan: &Plan<'_>,
    fp: &FieldPlan,
    sg: usize,
    words: &[u64],
    s: &mut [u64],
    harden: &mut harden::Scratch,
) -> u64 {
    let at = fp.body_at();
    let (raw, stored) = s[at..at + fp.bits_words()].split_at_mut(fp.raw_words());
    raw.copy_from_slice(&words[..raw.len()]);
    if fp.keeps_stored() {
        plan.hardener.apply_segment(sg, words, stored, harden);
    }
    if words.iter().any(|&w| w != 0) {
        META_BITS
    } else {
        0
    }
}

/// Keyed token `kind` of an entry of field `fi` whose part references are in `refs` (an
/// entry's first words) and texts in `text`; a part that is the salt takes `salt` (`None`:
/// no salt, the token is not emitted). [`NO_TOKEN`] when a part is missing.
fn embedded_token(
    plan: &Plan<'_>,
    kind: usize,
    fi: usize,
    refs: &[u64],
    text: &[u8],
    salt: Option<&[u8]>,
    msg: &mut Vec<u8>,
) -> u64 {
    let fp = &plan.fields[fi];
    let complete = token_message(&plan.schema.tokens[kind].parts, msg, |f, tr| {
        if f == fi {
            fp.part_slot[tr.index()]
                .map(|slot| refs[1 + slot])
                .filter(|&r| r != NO_PART)
                .map(|r| ref_text(r, text))
        } else {
            salt
        }
    });
    if complete {
        plan.hasher.exact_token(kind, msg)
    } else {
        NO_TOKEN
    }
}

/// The message of a keyed token with parts `parts` (field, transform) into `msg`: the parts'
/// texts, given by `part`, apart by the part separator. False (the message unfinished) when
/// `part` gives none for some part.
fn token_message<'t>(
    parts: &[(usize, Transform)],
    msg: &mut Vec<u8>,
    mut part: impl FnMut(usize, Transform) -> Option<&'t [u8]>,
) -> bool {
    msg.clear();
    for (i, &(f, tr)) in parts.iter().enumerate() {
        if i > 0 {
            msg.push(tokens::TOKEN_PART_SEPARATOR);
        }
        match part(f, tr) {
            Some(p) => msg.extend_from_slice(p),
            None => return false,
        }
    }
    true
}

/// A row's salt and what a salted entry needs of the worker to be made: the salt texts, and
/// the keyed-token caches (for the tokens embedded in entries, by salt and part id).
struct SaltCtx<'c> {
    salt: Salt,
    salts: &'c Interner,
    token_cache: &'c mut [U64Map],
}

/// A salted field's entry for value `raw` under the row's salt into `sc.payload`: the value
/// (from the field's value dictionary, or computed), its bits under the salt, the stored form,
/// and the embedded tokens.
#[inline(never)]
fn make_salted_entry(
    plan: &Plan<'_>,
    fi: usize,
    f: &mut FieldState,
    raw: &[u8],
    ctx: SaltCtx<'_>,
    cached: bool,
    sc: &mut Scratch,
) {
    let SaltCtx {
        salt,
        salts,
        token_cache,
    } = ctx;
    let fp = &plan.fields[fi];
    // The value, unsalted.
    let value_at = if f.use_values && cached && raw.len() <= normalise::MAX_FIELD_BYTES {
        let hash = hash_bytes(raw);
        match f.values.find(hash, raw) {
            Some(p) => Some(p),
            None => {
                compute_value(plan, fi, f, raw, true, sc);
                let len = sc.payload.len();
                let p = f.values.insert(hash, raw, len);
                f.values.payload_mut(p, len).copy_from_slice(&sc.payload);
                Some(p)
            }
        }
    } else {
        compute_value(plan, fi, f, raw, cached, sc);
        None
    };
    let mut value = std::mem::take(&mut sc.value);
    value.clear();
    match value_at {
        Some(p) => {
            let words = f.values.payload_from(p);
            value.extend_from_slice(&words[..payload_len(words[0])]);
        }
        None => value.extend_from_slice(&sc.payload),
    }
    // The entry: the value's status and part references, its bits under the salt, the
    // embedded tokens, the value's texts.
    let meta = value[0];
    let s = &mut sc.payload;
    s.clear();
    if meta as u8 != ST_PRESENT {
        s.extend_from_slice(&value);
        sc.value = value;
        return;
    }
    s.extend_from_slice(&value[..fp.body_at()]);
    s.resize(fp.entry_text_at(), 0);
    let salt_text = (salt != NO_BITS).then(|| salts.text(salt));
    let mut meta = u64::from(ST_PRESENT);
    if let (Some(sg), Some(salt_text)) = (fp.segment, salt_text) {
        let words = &mut sc.raw;
        words.clear();
        words.resize(fp.seg_words, 0);
        let k = fp.k as usize;
        let (msg, pos_buf) = (&mut sc.msg, &mut sc.pos);
        let FieldState {
            tokens, positions, ..
        } = &mut *f;
        // The tokens' positions are independent loads from tables the dictionaries keep
        // evicting: start them all before using any.
        if (salt as usize) < plan.limits.max_salts {
            for tok in token_ids(fp, &value) {
                positions.prefetch(salt as usize, tok, k);
            }
        }
        for tok in token_ids(fp, &value) {
            if salt as usize >= plan.limits.max_salts {
                let m = salted_message(salt_text, tokens.text(tok), msg);
                set_bits(words, segment_positions(plan, fp, sg, m, pos_buf));
                continue;
            }
            let pos = positions.get(salt as usize, tok, k, |out| {
                let m = salted_message(salt_text, tokens.text(tok), msg);
                out.extend(segment_positions(plan, fp, sg, m, pos_buf).map(|p| p as u16));
            });
            set_bits(words, pos.iter().map(|&p| u32::from(p)));
        }
        meta |= store_bits(plan, fp, sg, words, s, &mut sc.harden);
    }
    let text_words = &value[value_text_at(fp, value[0])..];
    let text = bytemuck::cast_slice::<u64, u8>(text_words);
    // The salt is the salt source's part: a token using it is not emitted without a salt.
    let salt_part = salt_text.filter(|_| salt != MARKER);
    for (j, &kind) in fp.embedded.iter().enumerate() {
        // Cached by (salt, the id of the field's one part) when the token has just those two.
        let key = salted_token_key(fp, f, j, &value, salt);
        let cache = &mut token_cache[kind];
        s[fp.emb_at() + j] = match key.and_then(|k| cache.get(k)) {
            Some(tok) => tok,
            None => {
                let tok = embedded_token(plan, kind, fi, &value, text, salt_part, &mut sc.msg);
                if let Some(k) = key.filter(|_| tok != NO_TOKEN) {
                    cache.insert(k, tok);
                }
                tok
            }
        };
    }
    s.extend_from_slice(text_words);
    meta |= (s.len() as u64) << 16;
    s[0] = meta;
    sc.value = value;
}

/// Why the bytes `raw` of column `c` are no text in `encoding` (`hint`: advice to add when they
/// are not valid in it).
fn bad_bytes_detail(c: &str, raw: &[u8], encoding: TextEncoding, hint: &str) -> String {
    if raw.contains(&0) {
        format!(
            "column `{c}` holds a NUL byte (0x00), which is no text: is the export UTF-16, or \
             padded with NULs? Export it as UTF-8 CSV"
        )
    } else {
        format!("column `{c}` is not valid {}{hint}", enc_name(encoding))
    }
}

/// Whether a name's raw bytes have `?` between letters (`Bj?rn`) or U+FFFD anywhere: what an
/// export writes for letters its encoding lacks (Windows PowerShell 5.1's `Export-Csv` writes
/// ASCII by default; a conversion through a code page without them; or a decoder's
/// replacement). Such a name is read as two parts and links less well.
fn lossy_name(raw: &[u8]) -> bool {
    let letter = |b: u8| b.is_ascii_alphabetic() || b >= 0x80;
    raw.windows(3)
        .any(|w| w == "\u{FFFD}".as_bytes() || (w[1] == b'?' && letter(w[0]) && letter(w[2])))
}

/// Whether every field of `rec` is empty or ASCII whitespace: a spreadsheet's empty row (or
/// the Ctrl-Z, 0x1A, that DOS-era exports write after their last line).
fn is_empty_row(rec: &Rec<'_>) -> bool {
    // Most rows have something in their first field.
    (0..rec.len()).all(|i| {
        rec.get(i)
            .iter()
            .all(|b| b.is_ascii_whitespace() || *b == super::DOS_END)
    })
}

/// Whether `rec` has the header's `columns` fields, or, in an export whose data rows end with
/// a delimiter the header lacks ([`export_shape`]), one more that is empty.
pub(crate) fn has_header_shape(rec: &Rec<'_>, columns: usize, trailing_delimiter: bool) -> bool {
    rec.len() == columns
        || (trailing_delimiter && rec.len() == columns + 1 && rec.get(columns).is_empty())
}

/// Rows looked at by [`export_shape`].
pub const SHAPE_SAMPLE_ROWS: usize = 100;

/// How an export's rows are laid out against its `header` (names trimmed), from the first
/// [`SHAPE_SAMPLE_ROWS`] rows of `data` that hold more than delimiters and ASCII spaces: the
/// number of columns the header names, and whether the rows end with a delimiter the header
/// lacks. Decided per export, not per row:
/// - a header whose last cell is empty (it ends with a delimiter) names no last column when
///   more rows have one field fewer than it than as many (otherwise its rows fill that column,
///   unnamed);
/// - the rows end with a delimiter when more have one field more than the header's columns,
///   that field empty, than have as many. In an export without trailing delimiters, a row with
///   an unquoted delimiter in a value (`Smith, Jr`) and its last value empty has that shape
///   too, and read as the header's fields its values would be shifted into the wrong columns.
pub fn export_shape(data: &[u8], delimiter: u8, header: &[String]) -> (usize, bool) {
    let shapes: Vec<(usize, bool)> = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(data)
        .byte_records()
        .map_while(std::result::Result::ok)
        .filter(|r| !r.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)))
        .take(SHAPE_SAMPLE_ROWS)
        .map(|r| (r.len(), r.iter().next_back().is_some_and(<[u8]>::is_empty)))
        .collect();
    let with = |n: usize| shapes.iter().filter(|s| s.0 == n).count();
    let mut columns = header.len();
    if columns > 1
        && header.last().is_some_and(String::is_empty)
        && with(columns - 1) > with(columns)
    {
        columns -= 1;
    }
    let extra = shapes
        .iter()
        .filter(|&&(n, empty)| n == columns + 1 && empty)
        .count();
    (columns, extra > with(columns))
}

/// Whether `rec` repeats the header line: each field, decoded and trimmed, is its column's
/// name (the first may start with the byte-order mark of a second export joined on).
fn is_header(rec: &Rec<'_>, plan: &Plan<'_>) -> bool {
    let (header, encoding) = (&plan.header, plan.map.encoding);
    let mut buf = String::new();
    has_header_shape(rec, header.len(), plan.trailing_delimiter)
        && (0..header.len()).all(|i| {
            decode(encoding, rec.get(i), &mut buf)
                .is_some_and(|v| v.trim_start_matches('\u{FEFF}').trim() == header[i].trim())
        })
}

/// Notes an encoded row whose quoted values in columns the map does not read run over line
/// breaks (the columns it reads were checked: see [`mapped_swallowed_rows`]).
fn note_unmapped_line_breaks(
    rec: &Rec<'_>,
    plan: &Plan<'_>,
    line: u64,
    notes: &mut super::Multiline,
) {
    let unmapped = |c: &usize| *c != plan.id_column && !plan.sources.iter().any(|s| s.column == *c);
    let (mut breaks, mut row_like) = (0, false);
    for c in (0..rec.len()).filter(unmapped) {
        breaks += super::blocks::line_breaks(rec.get(c));
        row_like |= swallowed_rows(rec.get(c), plan.map.delimiter, plan.header.len());
    }
    if breaks > 0 {
        notes.note(line, breaks, row_like);
    }
}

/// The first column the map reads (the record id's, then the fields') whose value holds swallowed
/// rows, if any: see [`swallowed_rows`].
fn mapped_swallowed_rows(rec: &Rec<'_>, plan: &Plan<'_>) -> Option<usize> {
    std::iter::once(plan.id_column)
        .chain(plan.sources.iter().map(|s| s.column))
        .find(|&c| swallowed_rows(rec.get(c), plan.map.delimiter, plan.header.len()))
}

/// Whether a value holds the rows a stray quote swallowed: a line break, and at least as many
/// delimiters as a row of `columns` fields has. A stray quote that opens field k and closes in
/// a later line, leaving the row its `columns` fields, swallows the `columns - 1 - k`
/// delimiters after it on its own line, `columns - 1` on every whole line, and `k` on the line
/// it closes on. A value merely written over two lines (`"Mary` / `Jane"`) is not one.
fn swallowed_rows(value: &[u8], delimiter: u8, columns: usize) -> bool {
    super::blocks::line_breaks(value) > 0
        && value.iter().filter(|&&b| b == delimiter).count() + 1 >= columns
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
        swallowed_lines: 0,
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
