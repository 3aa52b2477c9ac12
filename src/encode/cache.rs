//! Per-worker caches for the encoder, laid out flat for memory locality.
//!
//! Encoding is bound by memory latency, not hashing: a cached field value must cost a few cache
//! lines, not a chain of pointers. Keys of up to [`INLINE`] bytes live inside the hash table's
//! buckets; each entry's filter contribution (its segment's words, already ORed) and token-part
//! texts live in contiguous arenas indexed by the entry number. Longer values are computed
//! without caching. A cache that does not earn its keep (unique identifiers) switches itself off.

use std::collections::HashMap;

use crate::normalise::Invalid;

type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Longest key stored inline.
pub const INLINE: usize = 31;
/// A token cache looks at its hit rate over lookups `PROBE/2..PROBE` (after warming up) and
/// switches off below [`MIN_HIT_RATE`]: a lookup that misses, plus the insert, costs about half
/// an HMAC (mostly a cache miss on a large table), so a cache hit under 30 % of the time loses.
const PROBE: u64 = 1 << 16;
const MIN_HIT_RATE: f64 = 0.3;
/// Entries kept before a cache is emptied and starts again (bounds memory on huge inputs).
const MAX_ENTRIES: usize = 1 << 20;
const NO_PART: u8 = u8::MAX;
/// Number of token-part transforms kept per value (see `schema::Transform::ALL`).
pub const PARTS: usize = 5;

/// A cache key stored inline (bytes past `len` are zero).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineKey {
    len: u8,
    bytes: [u8; INLINE],
}

impl std::hash::Hash for InlineKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..self.len as usize]);
    }
}

impl InlineKey {
    /// The key for `b`, if it is short enough to be cached.
    pub fn new(b: &[u8]) -> Option<InlineKey> {
        (b.len() <= INLINE).then(|| {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            InlineKey {
                len: b.len() as u8,
                bytes,
            }
        })
    }
}

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

#[derive(Clone, Copy)]
#[repr(align(32))]
struct Entry {
    /// The cache key (`InlineKey` as words), compared on lookup.
    key: [u64; 4],
    status: Status,
    /// Whether the value sets any filter bits.
    has_bits: bool,
    parts: [(u32, u8); PARTS],
    /// Interned ids of the parts (`NO_ID`: no part, or not interned).
    ids: [u32; PARTS],
}

const NO_ID: u32 = u32::MAX;

const EMPTY_ENTRY: Entry = Entry {
    key: [0; 4],
    status: Status::Missing,
    has_bits: false,
    parts: [(0, NO_PART); PARTS],
    ids: [NO_ID; PARTS],
};

/// Where a computed value writes its results.
pub struct Sink<'a> {
    /// The value's contribution to its segment (zeroed before the call).
    pub words: &'a mut [u64],
    /// Room for the segment's stored (hardened) form when this value is the segment's only
    /// contribution; empty when the cache keeps no stored form.
    pub stored: &'a mut [u64],
    parts: &'a mut [(u32, u8); PARTS],
    text: &'a mut Vec<u8>,
}

/// Appends a token-part text (at most 254 bytes of it) to `arena`; returns its span.
fn push_part(arena: &mut Vec<u8>, text: &[u8]) -> (u32, u8) {
    let t = &text[..text.len().min(254)];
    let span = (arena.len() as u32, t.len() as u8);
    arena.extend_from_slice(t);
    span
}

impl Sink<'_> {
    /// Records the text of token-part transform `index` (at most 254 bytes are kept).
    pub fn set_part(&mut self, index: usize, text: &[u8]) {
        self.parts[index] = push_part(self.text, text);
    }
}

/// A reference to a value's data: an entry number, or the field's scratch slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

const SCRATCH: Slot = Slot(u32::MAX);

/// One field's cache: an open-addressing table of entry numbers, the entries (each with its key
/// inline), and the entries' segment words in one arena. A lookup can be split in steps
/// ([`FieldCache::probe`], [`FieldCache::prefetch_entry`], [`FieldCache::get_probed`]) so that a
/// batch of rows has all its table slots and entries in flight at once: the encoder is bound
/// by memory latency, and a lookup done alone waits for two or three cache misses in a row.
pub struct FieldCache {
    words_per: usize,
    stored_per: usize,
    /// 0 = empty, else the hash's top 32 bits above (entry number + 1). Linear probing, kept at
    /// most half full.
    table: Vec<u64>,
    entries: Vec<Entry>,
    /// Per entry: its `words_per` segment words, then `stored_per` stored words.
    arena: Vec<u64>,
    text: Vec<u8>,
    scratch_entry: Entry,
    scratch_arena: Vec<u64>,
    scratch_text: Vec<u8>,
    enabled: bool,
    /// Which token parts are interned (the ones some keyed token or the salt uses).
    interned: [bool; PARTS],
}

/// A value's cache key and its hash, made before the lookup so the table slot can be loaded
/// ahead of it.
#[derive(Clone, Copy)]
pub struct Probe {
    key: [u64; 4],
    hash: u64,
}

/// Table slots a field cache starts with.
const MIN_TABLE: usize = 1 << 12;

/// The key of `raw` (at most [`INLINE`] bytes) as four words: its length, then its bytes,
/// zero-padded. Equal words mean equal values.
fn key_words(raw: &[u8]) -> [u64; 4] {
    let mut b = [0u8; 32];
    b[0] = raw.len() as u8;
    b[1..=raw.len()].copy_from_slice(raw);
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    [w(0), w(1), w(2), w(3)]
}

/// A fast hash of a key (folded multiplies). Not keyed: the table only ever holds values of the
/// agency's own export, and a poor spread only slows it.
fn key_hash(k: &[u64; 4]) -> u64 {
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        p as u64 ^ (p >> 64) as u64
    }
    let h = fold(k[0] ^ 0x243f_6a88_85a3_08d3, k[1] ^ 0x1319_8a2e_0370_7344)
        ^ fold(k[2] ^ 0xa409_3822_299f_31d0, k[3] ^ 0x082e_fa98_ec4e_6c89);
    fold(h, 0x9e37_79b9_7f4a_7c15)
}

impl FieldCache {
    /// A cache for a field whose segment has `words_per` words (0 if it sets no bits) and, when
    /// `stored_per > 0`, keeps that many words of the segment's stored form per value.
    /// `enabled = false` computes every value (for unique identifiers, where a cache only costs).
    pub fn new(words_per: usize, stored_per: usize, enabled: bool) -> FieldCache {
        FieldCache {
            words_per,
            stored_per,
            table: vec![0; MIN_TABLE],
            entries: Vec::new(),
            arena: Vec::new(),
            text: Vec::new(),
            scratch_entry: EMPTY_ENTRY,
            scratch_arena: vec![0; words_per + stored_per],
            scratch_text: Vec::new(),
            enabled,
            interned: [true; PARTS],
        }
    }

    /// Interns only the token parts marked in `interned` (the others are never looked up by id).
    pub fn interning(mut self, interned: [bool; PARTS]) -> FieldCache {
        self.interned = interned;
        self
    }

    /// Empties the cache if `n` more values might not fit under its size bound. Slots handed
    /// out before stay valid until the next call that empties it, so callers working in
    /// batches call this once per batch.
    pub fn make_room(&mut self, n: usize) {
        if self.entries.len() + n > MAX_ENTRIES {
            self.table.iter_mut().for_each(|s| *s = 0);
            self.entries.clear();
            self.arena.clear();
            self.text.clear();
        }
    }

    /// The probe for `raw`, or `None` when the value is computed without caching (the cache is
    /// off, or the value is too long to keep inline). Starts loading the table slot.
    pub fn probe(&self, raw: &[u8]) -> Option<Probe> {
        if !self.enabled || raw.len() > INLINE {
            return None;
        }
        let key = key_words(raw);
        let hash = key_hash(&key);
        prefetch(&self.table[hash as usize & (self.table.len() - 1)]);
        Some(Probe { key, hash })
    }

    /// Starts loading the entry that `p` most likely finds (once its table slot has arrived).
    pub fn prefetch_entry(&self, p: &Probe) {
        let s = self.table[p.hash as usize & (self.table.len() - 1)];
        if s != 0 && s >> 32 == p.hash >> 32 {
            self.prefetch_slot(Slot((s as u32).wrapping_sub(1)));
        }
    }

    /// Starts loading a looked-up value's entry and words.
    pub fn prefetch_slot(&self, s: Slot) {
        let i = s.0 as usize;
        if let Some(e) = self.entries.get(i) {
            prefetch(e);
            let per = self.words_per + self.stored_per;
            if per > 0 {
                prefetch(&self.arena[i * per]);
                prefetch(&self.arena[i * per + per - 1]);
            }
        }
    }

    fn find(&self, p: &Probe) -> Option<u32> {
        let mask = self.table.len() - 1;
        let mut i = p.hash as usize & mask;
        loop {
            let s = self.table[i];
            if s == 0 {
                return None;
            }
            if s >> 32 == p.hash >> 32 {
                let e = (s as u32).wrapping_sub(1);
                if self.entries[e as usize].key == p.key {
                    return Some(e);
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn place(table: &mut [u64], hash: u64, e: u32) {
        let mask = table.len() - 1;
        let mut i = hash as usize & mask;
        while table[i] != 0 {
            i = (i + 1) & mask;
        }
        table[i] = (hash >> 32) << 32 | u64::from(e + 1);
    }

    /// Looks `raw` up, computing (and caching) it on a miss. A cached value's token parts are
    /// interned in `parts`, so token caches can be keyed by their ids.
    pub fn get(
        &mut self,
        raw: &[u8],
        parts: &mut Interner,
        compute: impl FnOnce(&mut Sink<'_>) -> Status,
    ) -> Slot {
        match self.probe(raw) {
            Some(p) => self.get_probed(&p, parts, compute),
            None => self.compute_scratch(compute),
        }
    }

    /// [`FieldCache::get`] for a value already probed.
    pub fn get_probed(
        &mut self,
        p: &Probe,
        parts: &mut Interner,
        compute: impl FnOnce(&mut Sink<'_>) -> Status,
    ) -> Slot {
        if let Some(e) = self.find(p) {
            return Slot(e);
        }
        let i = self.entries.len();
        if (i + 1) * 2 > self.table.len() {
            let mut table = vec![0; self.table.len() * 2];
            for (e, entry) in self.entries.iter().enumerate() {
                Self::place(&mut table, key_hash(&entry.key), e as u32);
            }
            self.table = table;
        }
        let per = self.words_per + self.stored_per;
        self.arena.resize((i + 1) * per, 0);
        let mut entry = EMPTY_ENTRY;
        entry.key = p.key;
        let (words, stored) = self.arena[i * per..].split_at_mut(self.words_per);
        let mut sink = Sink {
            words,
            stored,
            parts: &mut entry.parts,
            text: &mut self.text,
        };
        entry.status = compute(&mut sink);
        entry.has_bits = sink.words.iter().any(|&w| w != 0);
        for ((id, &(off, len)), _) in entry
            .ids
            .iter_mut()
            .zip(&entry.parts)
            .zip(&self.interned)
            .filter(|(_, &keep)| keep)
        {
            if len != NO_PART {
                let text = &self.text[off as usize..off as usize + len as usize];
                *id = parts.id(text).unwrap_or(NO_ID);
            }
        }
        self.entries.push(entry);
        Self::place(&mut self.table, p.hash, i as u32);
        Slot(i as u32)
    }

    fn compute_scratch(&mut self, compute: impl FnOnce(&mut Sink<'_>) -> Status) -> Slot {
        self.scratch_arena.iter_mut().for_each(|w| *w = 0);
        self.scratch_text.clear();
        let mut entry = EMPTY_ENTRY;
        let (words, stored) = self.scratch_arena.split_at_mut(self.words_per);
        let mut sink = Sink {
            words,
            stored,
            parts: &mut entry.parts,
            text: &mut self.scratch_text,
        };
        entry.status = compute(&mut sink);
        entry.has_bits = sink.words.iter().any(|&w| w != 0);
        self.scratch_entry = entry;
        SCRATCH
    }

    fn entry(&self, s: Slot) -> &Entry {
        if s == SCRATCH {
            &self.scratch_entry
        } else {
            &self.entries[s.0 as usize]
        }
    }

    /// The status of a looked-up value.
    pub fn status(&self, s: Slot) -> Status {
        self.entry(s).status
    }

    fn span(&self, s: Slot) -> &[u64] {
        let per = self.words_per + self.stored_per;
        if s == SCRATCH {
            &self.scratch_arena
        } else {
            let i = s.0 as usize * per;
            &self.arena[i..i + per]
        }
    }

    /// The value's contribution to its segment.
    pub fn words(&self, s: Slot) -> &[u64] {
        &self.span(s)[..self.words_per]
    }

    /// The segment's stored form when this value is its only contribution (empty when the
    /// cache keeps none).
    pub fn stored(&self, s: Slot) -> &[u64] {
        &self.span(s)[self.words_per..]
    }

    /// Whether the value sets any filter bits.
    pub fn has_bits(&self, s: Slot) -> bool {
        self.entry(s).has_bits
    }

    /// Whether token-part transform `index` applies to the value.
    pub fn has_part(&self, s: Slot, index: usize) -> bool {
        self.entry(s).parts[index].1 != NO_PART
    }

    /// The interned id of token-part transform `index`, if it applies and was interned.
    pub fn part_id(&self, s: Slot, index: usize) -> Option<u32> {
        Some(self.entry(s).ids[index]).filter(|&i| i != NO_ID)
    }

    /// The text of token-part transform `index`, if the transform applies.
    pub fn part(&self, s: Slot, index: usize) -> Option<&[u8]> {
        let (off, len) = self.entry(s).parts[index];
        if len == NO_PART {
            return None;
        }
        let text = if s == SCRATCH {
            &self.scratch_text
        } else {
            &self.text
        };
        Some(&text[off as usize..off as usize + len as usize])
    }
}

/// Asks the CPU to start loading the cache line holding `r`.
#[inline(always)]
#[allow(unsafe_code)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it has no architectural effect and cannot fault, and
    // SSE, which it needs, is part of the x86-64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// A cache of keyed exact tokens, by message (`InlineKey`) or by the ids of its parts (`u64`).
pub struct TokenCache<K> {
    map: Map<K, u64>,
    lookups: u64,
    hits: u64,
    enabled: bool,
}

impl<K: std::hash::Hash + Eq> Default for TokenCache<K> {
    fn default() -> Self {
        TokenCache {
            map: Map::default(),
            lookups: 0,
            hits: 0,
            enabled: true,
        }
    }
}

impl<K: std::hash::Hash + Eq> TokenCache<K> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token for `key`, computing (and caching) it on a miss; `None` keys are not cached.
    pub fn get(&mut self, key: Option<K>, compute: impl FnOnce() -> u64) -> u64 {
        let Some(key) = key.filter(|_| self.enabled) else {
            return compute();
        };
        self.lookups += 1;
        let hit = self.map.get(&key).copied();
        if self.lookups > PROBE / 2 && hit.is_some() {
            self.hits += 1;
        }
        if let Some(t) = hit {
            return t;
        }
        let t = compute();
        if self.lookups == PROBE && (self.hits as f64) < MIN_HIT_RATE * (PROBE / 2) as f64 {
            self.enabled = false;
            self.map = Map::default();
            return t;
        }
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, t);
        t
    }
}

/// Byte strings (filter tokens, salt values) → dense ids, per worker, so the position cache is
/// keyed by a number instead of a string. Ids stay valid for the worker's life; past
/// [`MAX_INTERNED`] strings (only a schema that puts unique values in the filter gets there),
/// new strings get no id and are hashed without caching.
#[derive(Default)]
pub struct Interner {
    map: Map<InlineKey, u32>,
    spans: Vec<(u32, u8)>,
    text: Vec<u8>,
}

/// Most strings one interner takes.
const MAX_INTERNED: usize = 1 << 22;

impl Interner {
    /// The id of `b`, interning it if new; `None` if it is too long or the interner is full.
    pub fn id(&mut self, b: &[u8]) -> Option<u32> {
        let k = InlineKey::new(b)?;
        if let Some(&i) = self.map.get(&k) {
            return Some(i);
        }
        if self.spans.len() >= MAX_INTERNED {
            return None;
        }
        let i = self.spans.len() as u32;
        self.spans.push((self.text.len() as u32, b.len() as u8));
        self.text.extend_from_slice(b);
        self.map.insert(k, i);
        Some(i)
    }

    /// The string with id `i`.
    pub fn text(&self, i: u32) -> &[u8] {
        let (off, len) = self.spans[i as usize];
        &self.text[off as usize..off as usize + len as usize]
    }
}

/// A salted field's values as normalised, before salting: status, token-part texts and the ids
/// of its filter tokens. Salting multiplies a field's distinct cache keys (one per salt value
/// it occurs with); this cache makes each of those misses a few table lookups instead of a
/// normalisation.
#[derive(Default)]
pub struct NormCache {
    map: Map<InlineKey, u32>,
    entries: Vec<NormEntry>,
    text: Vec<u8>,
    ids: Vec<u32>,
    scratch_text: Vec<u8>,
    scratch_ids: Vec<u32>,
}

#[derive(Clone, Copy)]
struct NormEntry {
    status: Status,
    parts: [(u32, u8); PARTS],
    /// Token ids `ids[start..end]`; `None` when a token could not be interned.
    tokens: Option<(u32, u32)>,
}

/// What [`NormCache::get`] hands back: the value's status and, if it is usable, its parts and
/// token ids.
pub struct Normalised<'c> {
    /// The value's status.
    pub status: Status,
    parts: [(u32, u8); PARTS],
    text: &'c [u8],
    /// Filter token ids, `None` if some token has no id (compute the value from scratch).
    pub tokens: Option<&'c [u32]>,
}

impl Normalised<'_> {
    /// Copies the token-part texts into `sink`.
    pub fn copy_parts(&self, sink: &mut Sink<'_>) {
        for (i, &(off, len)) in self.parts.iter().enumerate() {
            if len != NO_PART {
                sink.set_part(i, &self.text[off as usize..off as usize + len as usize]);
            }
        }
    }
}

/// Where [`NormCache::get`]'s `compute` writes a value's parts and token ids.
pub struct NormSink<'a> {
    parts: &'a mut [(u32, u8); PARTS],
    text: &'a mut Vec<u8>,
    ids: &'a mut Vec<u32>,
    complete: bool,
}

impl NormSink<'_> {
    /// Records the text of token-part transform `index` (at most 254 bytes are kept).
    pub fn set_part(&mut self, index: usize, text: &[u8]) {
        self.parts[index] = push_part(self.text, text);
    }

    /// Appends a filter token's id (`None`: it has none, so the value is not cached).
    pub fn push_token(&mut self, id: Option<u32>) {
        match id {
            Some(i) => self.ids.push(i),
            None => self.complete = false,
        }
    }
}

impl NormCache {
    /// The normalised form of `raw`, computed by `compute` on a miss. A key too long to inline
    /// is computed each time (into scratch space, not kept).
    ///
    /// With `keep = false` the value is computed into scratch space and not kept (for fields
    /// whose values are looked up only once per worker).
    pub fn get(
        &mut self,
        raw: &[u8],
        keep: bool,
        compute: impl FnOnce(&mut NormSink<'_>) -> Status,
    ) -> Normalised<'_> {
        let key = if keep { InlineKey::new(raw) } else { None };
        if let Some(&i) = key.as_ref().and_then(|k| self.map.get(k)) {
            let e = self.entries[i as usize];
            return Normalised {
                status: e.status,
                parts: e.parts,
                text: &self.text,
                tokens: e.tokens.map(|(a, b)| &self.ids[a as usize..b as usize]),
            };
        }
        if key.is_some() && self.entries.len() >= MAX_ENTRIES {
            self.map.clear();
            self.entries.clear();
            self.text.clear();
            self.ids.clear();
        }
        let (text, ids) = if key.is_some() {
            (&mut self.text, &mut self.ids)
        } else {
            self.scratch_text.clear();
            self.scratch_ids.clear();
            (&mut self.scratch_text, &mut self.scratch_ids)
        };
        let from = ids.len();
        let mut parts = [(0, NO_PART); PARTS];
        let mut sink = NormSink {
            parts: &mut parts,
            text,
            ids,
            complete: true,
        };
        let status = compute(&mut sink);
        let tokens = sink
            .complete
            .then_some((from as u32, sink.ids.len() as u32));
        let entry = NormEntry {
            status,
            parts,
            tokens,
        };
        let (text, ids) = match key {
            Some(k) => {
                self.map.insert(k, self.entries.len() as u32);
                self.entries.push(entry);
                (&self.text, &self.ids)
            }
            None => (&self.scratch_text, &self.scratch_ids),
        };
        Normalised {
            status,
            parts,
            text,
            tokens: tokens.map(|(a, b)| &ids[a as usize..b as usize]),
        }
    }
}

/// (segment, bits per token, salt id, token id) → bit positions relative to the segment start:
/// distinct tokens (bigrams, date parts) are few, so each is hashed once per worker.
#[derive(Default)]
pub struct PositionCache {
    map: Map<u64, (u32, u16)>,
    positions: Vec<u32>,
}

impl PositionCache {
    /// The cache key of a token.
    pub fn key(seg: usize, k: u32, salt: u16, token: u32) -> u64 {
        (seg as u64 & 0xff) << 56
            | (u64::from(k) & 0xff) << 48
            | u64::from(salt) << 32
            | u64::from(token)
    }

    /// ORs the positions for `key` into `words`, computing them with `compute` on a miss.
    pub fn set_bits(&mut self, key: u64, words: &mut [u64], compute: impl FnOnce(&mut Vec<u32>)) {
        let (off, len) = match self.map.get(&key) {
            Some(&v) => v,
            None => {
                if self.map.len() >= MAX_ENTRIES {
                    self.map.clear();
                    self.positions.clear();
                }
                let off = self.positions.len();
                compute(&mut self.positions);
                let v = (off as u32, (self.positions.len() - off) as u16);
                self.map.insert(key, v);
                v
            }
        };
        for &p in &self.positions[off as usize..off as usize + len as usize] {
            words[(p / 64) as usize] |= 1u64 << (p % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_cache_hits_and_scratch_agree() {
        let mut c = FieldCache::new(2, 0, true);
        let mut parts = Interner::default();
        let mut calls = 0;
        let compute = |s: &mut Sink<'_>| {
            s.words[1] = 0b1010;
            s.set_part(1, b"2015");
            Status::Present
        };
        let a = c.get(b"12/03/2015", &mut parts, |s| {
            calls += 1;
            compute(s)
        });
        let b = c.get(b"12/03/2015", &mut parts, |_| unreachable!("cached"));
        assert_eq!(a, b);
        assert_eq!(calls, 1);
        assert_eq!(c.words(a), &[0, 0b1010]);
        assert_eq!(c.part(a, 1), Some(&b"2015"[..]));
        assert_eq!(c.part(a, 0), None);
        assert!(c.has_bits(a) && c.has_part(a, 1) && !c.has_part(a, 0));
        assert_eq!(c.part_id(a, 1), parts.id(b"2015"));
        assert_eq!(c.part_id(a, 0), None);
        // A key too long to inline goes through the scratch slot with the same result.
        let long = [b'x'; INLINE + 1];
        let s = c.get(&long, &mut parts, compute);
        assert_eq!(c.words(s), &[0, 0b1010]);
        assert_eq!(c.part_id(s, 1), None, "scratch values are not interned");
        assert_eq!(c.part(s, 1), Some(&b"2015"[..]));
        assert_eq!(c.status(s), Status::Present);
    }

    #[test]
    fn field_cache_table_grows_and_keeps_every_value() {
        let mut c = FieldCache::new(1, 1, true);
        let mut parts = Interner::default();
        let value = |i: u32| format!("V{i}").into_bytes();
        let mut slots = Vec::new();
        // Enough values for several table doublings from `MIN_TABLE`.
        for i in 0..(MIN_TABLE as u32 * 5) {
            let s = c.get(&value(i), &mut parts, |s| {
                s.words[0] = u64::from(i);
                s.stored[0] = u64::from(i) << 32;
                Status::Present
            });
            slots.push(s);
        }
        assert!(c.table.len() > MIN_TABLE * 8);
        for (i, &s) in slots.iter().enumerate() {
            let probe = c.probe(&value(i as u32)).expect("short values are cached");
            c.prefetch_entry(&probe);
            let again = c.get_probed(&probe, &mut parts, |_| unreachable!("cached"));
            assert_eq!(again, s);
            assert_eq!(c.words(s), &[i as u64]);
            assert_eq!(c.stored(s), &[(i as u64) << 32]);
        }
        // Length is part of the key: a value and the same value with a trailing NUL differ.
        let a = c.get(b"A", &mut parts, |_| Status::Missing);
        let b = c.get(b"A\0", &mut parts, |_| Status::Present);
        assert_ne!(a, b);
        assert_eq!(c.status(a), Status::Missing);
        // Room for a batch is only made by emptying the cache once it is near its bound.
        c.make_room(64);
        assert_eq!(c.get(b"A", &mut parts, |_| unreachable!("kept")), a);
        c.make_room(MAX_ENTRIES);
        assert!(c.entries.is_empty());
        let mut recomputed = false;
        c.get(b"A", &mut parts, |_| {
            recomputed = true;
            Status::Missing
        });
        assert!(recomputed);
    }

    #[test]
    fn hopeless_token_cache_switches_off_and_stays_correct() {
        let mut c = TokenCache::new();
        for i in 0..(PROBE + 100) {
            assert_eq!(c.get(Some(i), || i * 3), i * 3);
        }
        assert!(!c.enabled);
        assert!(c.map.is_empty());
        let mut c = TokenCache::new();
        for i in 0..(PROBE + 100) {
            assert_eq!(c.get(Some(i % 100), || (i % 100) * 3), (i % 100) * 3);
        }
        assert!(c.enabled);
    }

    #[test]
    fn disabled_field_cache_computes_every_time() {
        let mut c = FieldCache::new(1, 0, false);
        let mut calls = 0;
        for _ in 0..3 {
            let s = c.get(b"same", &mut Interner::default(), |s| {
                calls += 1;
                s.words[0] = 5;
                Status::Present
            });
            assert_eq!(c.words(s), &[5]);
        }
        assert_eq!(calls, 3);
    }

    #[test]
    fn token_and_position_caches() {
        let mut t = TokenCache::new();
        assert_eq!(t.get(InlineKey::new(b"a"), || 7), 7);
        assert_eq!(t.get(InlineKey::new(b"a"), || 8), 7);
        assert_eq!(t.get(None, || 9), 9);
        let mut p = PositionCache::default();
        let mut words = [0u64; 2];
        let k = PositionCache::key(1, 8, 3, 42);
        p.set_bits(k, &mut words, |o| o.extend([1, 2, 65]));
        assert_eq!(words, [0b110, 0b10]);
        let mut again = [0u64; 2];
        p.set_bits(k, &mut again, |_| unreachable!("cached"));
        assert_eq!(again, words);
        assert_ne!(k, PositionCache::key(1, 8, 4, 42));
        let mut i = Interner::default();
        assert_eq!(i.id(b"JO"), Some(0));
        assert_eq!(i.id(b"OH"), Some(1));
        assert_eq!(i.id(b"JO"), Some(0));
        assert_eq!(i.text(1), b"OH");
        assert_eq!(i.id(&[b'x'; INLINE + 1]), None);
    }
}
