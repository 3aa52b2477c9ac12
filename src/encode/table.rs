//! Flat, open-addressing hash tables for the encoder's per-worker caches.
//!
//! The encoder is bound by memory latency: a cached value must cost one or two cache lines, not
//! a chain of pointers. So each table is a vector of 64-bit slots (a 32-bit hash tag and a
//! 32-bit reference) probed linearly and kept at most half full, over a contiguous arena. The
//! hashes are fast and unkeyed: the tables only ever hold values of the agency's own export, and
//! a poor spread would only slow them down.

/// Slots a table starts with.
const MIN_SLOTS: usize = 1 << 10;

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    p as u64 ^ (p >> 64) as u64
}

/// Up to eight bytes as a little-endian word, zero-padded. Read with two overlapping 4-byte
/// loads (or three single bytes), not a copy into a buffer: a copy of a length known only at
/// run time is a call to `memcpy`, and this runs several times per field and row.
fn word(b: &[u8]) -> u64 {
    let n = b.len();
    debug_assert!(n <= 8);
    match n {
        0 => 0,
        1..=3 => {
            u64::from(b[0])
                | u64::from(b[n / 2]) << (n / 2 * 8)
                | u64::from(b[n - 1]) << ((n - 1) * 8)
        }
        _ => {
            let four =
                |at: usize| u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]));
            four(0) | four(n - 4) << ((n - 4) * 8)
        }
    }
}

/// Appends `bytes` to `words` as whole little-endian words, the last zero-padded (how the
/// arenas keep keys and texts).
pub fn push_words(words: &mut Vec<u64>, bytes: &[u8]) {
    words.extend(bytes.chunks(8).map(word));
}

/// A fast hash of a byte string (folded multiplies over 16-byte chunks, seeded by the length).
pub fn hash_bytes(b: &[u8]) -> u64 {
    const K: [u64; 4] = [
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    ];
    let mut h = (b.len() as u64) ^ K[2];
    let mut chunks = b.chunks_exact(16);
    for c in &mut chunks {
        h = fold(word(&c[..8]) ^ K[0] ^ h, word(&c[8..]) ^ K[1]);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() || b.is_empty() {
        let (lo, hi) = rest.split_at(rest.len().min(8));
        h = fold(word(lo) ^ K[0] ^ h, word(hi) ^ K[3]);
    }
    fold(h, 0x9e37_79b9_7f4a_7c15)
}

/// A fast hash of a 64-bit key (the MurmurHash3 finaliser: every input bit affects every
/// output bit, so keys that differ only in their high bits spread over the table).
pub fn hash_u64(k: u64) -> u64 {
    let mut h = k;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ h >> 33
}

/// `n` zeroed items, written rather than taken zeroed from the allocator.
///
/// A large `vec![0; n]` is fresh zero pages from the kernel, mapped on first *read* to the
/// shared zero page. A table probes (reads) a slot before it writes it, so each of its pages
/// then faults twice, and the second fault (copy-on-write from the zero page) flushes the TLB
/// of every core the process runs on, an interrupt to the other workers. Writing the zeros
/// first costs one fault per page and no interrupt (docs/DESIGN-NOTES.md, "Encoder").
fn zeroed<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, T::default());
    v
}

/// The slot array shared by the tables: 0 is empty, otherwise the hash's top 32 bits above a
/// nonzero 32-bit reference.
#[derive(Clone)]
struct Slots {
    slots: Vec<u64>,
    used: usize,
}

impl Slots {
    fn new() -> Slots {
        Slots {
            slots: zeroed(MIN_SLOTS),
            used: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The references whose tag matches `hash`, in probe order, until an empty slot.
    fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let mask = self.mask();
        let tag = hash >> 32;
        let mut i = hash as usize & mask;
        std::iter::from_fn(move || loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            i = (i + 1) & mask;
            if s >> 32 == tag {
                return Some(s as u32);
            }
        })
    }

    /// Adds `reference` (nonzero) under `hash`; `rehash` gives the hash of every reference
    /// already in, for when the table grows.
    fn insert(&mut self, hash: u64, reference: u32, rehash: impl Fn(u32) -> u64) {
        debug_assert!(reference != 0);
        if (self.used + 1) * 2 > self.slots.len() {
            let grown = zeroed(self.slots.len() * 2);
            let old = std::mem::replace(&mut self.slots, grown);
            for s in old.into_iter().filter(|&s| s != 0) {
                let r = s as u32;
                Self::place(&mut self.slots, rehash(r), r);
            }
        }
        Self::place(&mut self.slots, hash, reference);
        self.used += 1;
    }

    fn place(slots: &mut [u64], hash: u64, reference: u32) {
        let mask = slots.len() - 1;
        let mut i = hash as usize & mask;
        while slots[i] != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = (hash >> 32) << 32 | u64::from(reference);
    }

    fn prefetch(&self, hash: u64) {
        prefetch(&self.slots[hash as usize & self.mask()]);
    }
}

/// Byte strings → dense ids (0, 1, 2, …), with the strings kept for [`Interner::text`].
/// Strings of one to seven bytes (bigrams, most date and postcode parts) are found through a
/// map keyed by the string itself, one probe and no comparison of texts.
pub struct Interner {
    slots: Slots,
    short: U64Map,
    spans: Vec<(u32, u32)>,
    /// Per id, the [`head`] of its string: strings of up to 15 bytes are told apart by it
    /// alone, longer ones by it first (one load instead of the span, the text and a call to
    /// compare them).
    heads: Vec<[u64; 2]>,
    text: Vec<u8>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            slots: Slots::new(),
            short: U64Map::default(),
            spans: Vec::new(),
            heads: Vec::new(),
            text: Vec::new(),
        }
    }
}

/// The key of a string of one to seven bytes: its bytes, and its length in the top byte.
fn short_key(b: &[u8]) -> Option<u64> {
    (1..8)
        .contains(&b.len())
        .then(|| word(b) | (b.len() as u64) << 56)
}

/// A string's first 15 bytes as two words, zero-padded, with its length (up to 255) in the
/// top byte.
fn head(b: &[u8]) -> [u64; 2] {
    let (lo, hi) = b.split_at(b.len().min(8));
    [
        word(lo),
        word(&hi[..hi.len().min(7)]) | (b.len().min(255) as u64) << 56,
    ]
}

impl Interner {
    /// The id of `b`, interning it if new.
    #[inline]
    pub fn id(&mut self, b: &[u8]) -> u32 {
        let Some(key) = short_key(b) else {
            return self.id_long(b);
        };
        if let Some(id) = self.short.get(key) {
            return id as u32;
        }
        let id = self.push(b);
        self.short.insert(key, u64::from(id));
        id
    }

    fn push(&mut self, b: &[u8]) -> u32 {
        let id = self.spans.len() as u32;
        self.spans.push((self.text.len() as u32, b.len() as u32));
        self.heads.push(head(b));
        self.text.extend_from_slice(b);
        id
    }

    fn id_long(&mut self, b: &[u8]) -> u32 {
        let hash = hash_bytes(b);
        let h = head(b);
        for r in self.slots.candidates(hash) {
            let id = r - 1;
            if self.heads[id as usize] == h && (b.len() < 16 || self.text(id) == b) {
                return id;
            }
        }
        let id = self.push(b);
        let (spans, text) = (&self.spans, &self.text);
        self.slots.insert(hash, id + 1, |r| {
            let (o, l) = spans[r as usize - 1];
            hash_bytes(&text[o as usize..(o + l) as usize])
        });
        id
    }

    /// The string with id `id`.
    pub fn text(&self, id: u32) -> &[u8] {
        let (o, l) = self.spans[id as usize];
        &self.text[o as usize..(o + l) as usize]
    }

    /// Number of strings interned.
    pub fn len(&self) -> usize {
        self.spans.len()
    }
}

/// Byte strings → records of `u64` words in one arena. Each record is stored as a header word
/// (key length), the key's bytes in whole words, then the payload; a lookup touches the slot
/// and then one contiguous stretch of the arena.
pub struct Dict {
    slots: Slots,
    arena: Vec<u64>,
    /// Lookups and hits, to switch off a dictionary that does not earn its keep.
    lookups: u64,
    hits: u64,
}

/// A record's place in a [`Dict`]'s arena: the offset of its payload.
pub type Payload = u32;

fn key_words(len: usize) -> usize {
    len.div_ceil(8)
}

impl Default for Dict {
    fn default() -> Self {
        Dict {
            slots: Slots::new(),
            arena: vec![0],
            lookups: 0,
            hits: 0,
        }
    }
}

impl Dict {
    /// Whether the record at `at` has key `key`: the length, then word by word against the
    /// stored key's zero padding (no call to `memcmp` for these short keys).
    #[inline]
    fn key_is(&self, at: usize, key: &[u8]) -> bool {
        let Some(stored) = self.arena.get(at..at + 1 + key_words(key.len())) else {
            return false;
        };
        if stored[0] != key.len() as u64 {
            return false;
        }
        let mut chunks = key.chunks_exact(8);
        let mut i = 1;
        for c in &mut chunks {
            if u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) != stored[i] {
                return false;
            }
            i += 1;
        }
        let rest = chunks.remainder();
        rest.is_empty() || word(rest) == stored[i]
    }

    /// Starts loading the slot `hash` lands on.
    pub fn prefetch_slot(&self, hash: u64) {
        self.slots.prefetch(hash);
    }

    /// Starts loading the record that `hash` most likely finds (once its slot has arrived).
    pub fn prefetch_record(&self, hash: u64) {
        if let Some(r) = self.slots.candidates(hash).next() {
            // Records span two or three cache lines (key, then payload): load the first three.
            let at = r as usize;
            for w in [at, at + 8, at + 16] {
                if let Some(x) = self.arena.get(w) {
                    prefetch(x);
                }
            }
        }
    }

    /// The payload of `key` (with `hash = hash_bytes(key)`), if present.
    #[inline]
    pub fn find(&mut self, hash: u64, key: &[u8]) -> Option<Payload> {
        self.lookups += 1;
        let found = self.peek(hash, key);
        self.hits += u64::from(found.is_some());
        found
    }

    /// [`Dict::find`] without counting the lookup: for looking ahead.
    #[inline]
    pub fn peek(&self, hash: u64, key: &[u8]) -> Option<Payload> {
        let slots = &self.slots.slots;
        let mask = slots.len() - 1;
        let tag = hash >> 32;
        let mut i = hash as usize & mask;
        loop {
            let s = slots[i];
            if s == 0 {
                return None;
            }
            if s >> 32 == tag && self.key_is(s as u32 as usize, key) {
                return Some((s as u32 as usize + 1 + key_words(key.len())) as Payload);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `key` with a payload of `payload_words` zeroed words; returns where the payload is.
    /// The key must not be present.
    pub fn insert(&mut self, hash: u64, key: &[u8], payload_words: usize) -> Payload {
        let at = self.arena.len();
        self.arena.push(key.len() as u64);
        push_words(&mut self.arena, key);
        let kw = key_words(key.len());
        self.arena.resize(at + 1 + kw + payload_words, 0);
        let arena = &self.arena;
        let key_at = |r: u32| {
            let at = r as usize;
            let len = arena[at] as usize;
            hash_bytes(
                &bytemuck::cast_slice::<u64, u8>(&arena[at + 1..at + 1 + key_words(len)])[..len],
            )
        };
        self.slots.insert(hash, at as u32, key_at);
        (at + 1 + kw) as Payload
    }

    /// The payload words at `p`.
    pub fn payload(&self, p: Payload, words: usize) -> &[u64] {
        &self.arena[p as usize..p as usize + words]
    }

    /// The arena from payload `p` on (its first word holds its length).
    #[inline]
    pub fn payload_from(&self, p: Payload) -> &[u64] {
        &self.arena[p as usize..]
    }

    /// The payload words at `p`, to fill in.
    pub fn payload_mut(&mut self, p: Payload, words: usize) -> &mut [u64] {
        &mut self.arena[p as usize..p as usize + words]
    }

    /// Words in the arena.
    pub fn arena_words(&self) -> usize {
        self.arena.len()
    }

    /// Share of lookups that found their key, once `min_lookups` lookups were made.
    pub fn hit_rate(&self, min_lookups: u64) -> Option<f64> {
        (self.lookups >= min_lookups).then(|| self.hits as f64 / self.lookups as f64)
    }
}

/// Nonzero 64-bit keys → 64-bit values, kept inline in the slots (one cache line per lookup).
pub struct U64Map {
    slots: Vec<(u64, u64)>,
    len: usize,
    lookups: u64,
    hits: u64,
}

impl Default for U64Map {
    fn default() -> Self {
        U64Map {
            slots: zeroed(MIN_SLOTS),
            len: 0,
            lookups: 0,
            hits: 0,
        }
    }
}

impl U64Map {
    fn home(&self, key: u64) -> usize {
        hash_u64(key) as usize & (self.slots.len() - 1)
    }

    /// The value under `key` (nonzero), if present.
    pub fn get(&mut self, key: u64) -> Option<u64> {
        self.lookups += 1;
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let (k, v) = self.slots[i];
            if k == key {
                self.hits += 1;
                return Some(v);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Starts loading the slot of `key`.
    pub fn prefetch(&self, key: u64) {
        prefetch(&self.slots[self.home(key)]);
    }

    /// Adds `key` (nonzero, not present) with `value`.
    pub fn insert(&mut self, key: u64, value: u64) {
        debug_assert!(key != 0);
        // Kept at most 70 % full: the slots hold the keys and values themselves, so a larger
        // load costs a few more probes in one cache line but saves a table twice the size.
        if (self.len + 1) * 10 > self.slots.len() * 7 {
            let grown = zeroed(self.slots.len() * 2);
            let old = std::mem::replace(&mut self.slots, grown);
            for (k, v) in old.into_iter().filter(|&(k, _)| k != 0) {
                self.place(k, v);
            }
        }
        self.place(key, value);
        self.len += 1;
    }

    fn place(&mut self, key: u64, value: u64) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i].0 != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (key, value);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Share of lookups that found their key, once `min_lookups` lookups were made.
    pub fn hit_rate(&self, min_lookups: u64) -> Option<f64> {
        (self.lookups >= min_lookups).then(|| self.hits as f64 / self.lookups as f64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_is_the_zero_padded_little_endian_value_of_up_to_eight_bytes() {
        let bytes: Vec<u8> = (1..=8).map(|b| b * 0x11).collect();
        for n in 0..=8 {
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(word(&bytes[..n]), u64::from_le_bytes(w), "{n} bytes");
        }
        assert_eq!(word(&[0xff, 0, 0x01]), 0x01_00_ff);
    }

    #[test]
    fn peeking_finds_what_find_finds_without_counting_towards_the_hit_rate() {
        // Looking ahead for prefetches must not move a dictionary's hit rate, which decides
        // when it is switched off.
        let mut d = Dict::default();
        let keys: Vec<String> = (0..3000).map(|n| format!("key {n}")).collect();
        for k in &keys[..2000] {
            let h = hash_bytes(k.as_bytes());
            assert_eq!(d.find(h, k.as_bytes()), None);
            d.insert(h, k.as_bytes(), 2);
        }
        for _ in 0..2 {
            for k in &keys {
                let h = hash_bytes(k.as_bytes());
                assert_eq!(d.peek(h, k.as_bytes()), d.find(h, k.as_bytes()), "{k}");
            }
        }
        // 2000 misses while filling, then two rounds of 2000 hits and 1000 misses.
        assert_eq!(d.hit_rate(8000), Some(4000.0 / 8000.0));
    }

    #[test]
    fn interner_gives_dense_stable_ids_through_growth() {
        let mut i = Interner::default();
        // Strings of up to 7 bytes take their own map; of 8–15 bytes, the heads tell them
        // apart; longer ones are compared by their text too.
        let words: Vec<String> = (0..5000)
            .map(|n| match n % 3 {
                0 => format!("w{n}"),
                1 => format!("sec:{n:07}"),
                _ => format!("a token longer than fifteen bytes {n}"),
            })
            .collect();
        for (n, w) in words.iter().enumerate() {
            assert_eq!(i.id(w.as_bytes()), n as u32);
        }
        for (n, w) in words.iter().enumerate().rev() {
            assert_eq!(i.id(w.as_bytes()), n as u32);
            assert_eq!(i.text(n as u32), w.as_bytes());
        }
        assert_eq!(i.id(b""), 5000);
        assert_eq!(i.id(b""), 5000);
    }

    #[test]
    fn a_head_tells_apart_any_two_strings_of_up_to_fifteen_bytes() {
        // The interner compares strings of up to 15 bytes by their heads alone: trailing zero
        // bytes, lengths and the last byte must all count.
        let mut seen = std::collections::HashMap::new();
        let alphabet = [0u8, 1, b'A', 0xff];
        let mut strings = vec![Vec::new()];
        for len in 1..=15usize {
            // Every string over the alphabet for short lengths, a sample for longer ones.
            let count = alphabet.len().pow(len.min(4) as u32);
            for n in 0..count {
                let s: Vec<u8> = (0..len)
                    .map(|i| alphabet[((n >> (2 * (i % 4))) % 4) ^ (i / 4 % 4)])
                    .collect();
                strings.push(s);
            }
            // And strings that differ from one another in one byte, at every position.
            for at in 0..len {
                for &b in &alphabet {
                    let mut s = vec![b'A'; len];
                    s[at] = b;
                    strings.push(s);
                }
            }
        }
        for s in strings {
            if let Some(other) = seen.insert(head(&s), s.clone()) {
                assert_eq!(other, s, "two strings share a head");
            }
        }
    }

    #[test]
    fn interner_tells_apart_long_strings_that_share_their_first_fifteen_bytes() {
        // Strings of 8–15 bytes are compared by their head alone, longer ones by head then
        // text: these share heads' bytes, differ in length, or differ only past byte 15.
        let base = b"sec:AB12 3CD EFGH";
        let mut strings: Vec<Vec<u8>> = (8..=base.len()).map(|n| base[..n].to_vec()).collect();
        for last in [b'X', b'Y', 0] {
            let mut s = base.to_vec();
            s.push(last);
            strings.push(s);
        }
        strings.push([&base[..15], &[0u8][..]].concat());
        let mut i = Interner::default();
        for (n, s) in strings.iter().enumerate() {
            assert_eq!(i.id(s), n as u32, "{s:?}");
        }
        for (n, s) in strings.iter().enumerate() {
            assert_eq!(i.id(s), n as u32, "{s:?}");
            assert_eq!(i.text(n as u32), s.as_slice());
        }
    }

    #[test]
    fn dict_keeps_payloads_of_any_key_length_through_growth() {
        let mut d = Dict::default();
        let keys: Vec<Vec<u8>> = (0..3000usize)
            .map(|n| (0..n % 40).map(|j| (n * 7 + j) as u8).collect())
            .collect();
        let mut seen = std::collections::HashMap::new();
        for k in &keys {
            let h = hash_bytes(k);
            if seen.contains_key(k) {
                continue;
            }
            assert!(d.find(h, k).is_none());
            let p = d.insert(h, k, 2);
            d.payload_mut(p, 2).copy_from_slice(&[k.len() as u64, h]);
            seen.insert(k.clone(), ());
        }
        for k in &keys {
            let h = hash_bytes(k);
            let p = d.find(h, k).expect("present");
            assert_eq!(d.payload(p, 2), &[k.len() as u64, h]);
        }
        assert!(d.find(hash_bytes(b"absent key!"), b"absent key!").is_none());
    }

    #[test]
    fn u64_map_round_trips() {
        let mut m = U64Map::default();
        for k in 1..10_000u64 {
            m.insert(k * 0x9e37_79b9, k);
        }
        for k in 1..10_000u64 {
            assert_eq!(m.get(k * 0x9e37_79b9), Some(k));
        }
        assert_eq!(m.get(12345), None);
        assert_eq!(m.len(), 9_999);
    }

    #[test]
    fn hash_depends_on_every_byte_and_the_length() {
        let base = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".to_vec();
        let h = hash_bytes(&base);
        for i in 0..base.len() {
            let mut b = base.clone();
            b[i] ^= 1;
            assert_ne!(hash_bytes(&b), h, "byte {i}");
        }
        assert_ne!(hash_bytes(b"A"), hash_bytes(b"A\0"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
    }
}
