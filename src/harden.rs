//! Hardening of finished Bloom filters against re-identification attacks: the diffusion layer,
//! balancing, XOR folding and randomised response (BLIP), applied per segment in that order.
//! Salting happens earlier, when tokens are hashed (`encode`, `schema::SaltLayout`).
//!
//! Invariants:
//! - Everything is deterministic under the linkage key: the permutation of balancing and the
//!   selections of the diffusion layer are fixed per key, schema and segment (every agency must
//!   use the same ones, or nothing would link); the BLIP noise is fixed per key, agency and
//!   record id (so re-encoding a record every night gives the same noise, and an observer
//!   cannot average it away across releases).
//! - A segment with no bits (the field is missing) stays empty, so the matcher still scores it
//!   as *missing*; a filled segment is never stored empty by balancing or folding.
//! - Stored segments stay 64-bit-word aligned (the schema checks the lengths).

use std::ops::Range;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use ring::hmac;

use crate::key::LinkageKey;
use crate::schema::Schema;
use crate::tokens::TOKEN_PART_SEPARATOR;

/// A keyed, reproducible random stream: ChaCha20 seeded with HMAC-SHA256(`key`, `message`).
pub fn keyed_stream(key: &hmac::Key, message: &[u8]) -> ChaCha20Rng {
    let tag = hmac::sign(key, message);
    let mut seed = [0u8; 32];
    seed.copy_from_slice(tag.as_ref());
    ChaCha20Rng::from_seed(seed)
}

/// A uniform integer in `[0, n)` by multiply-shift of 64 random bits (bias below n / 2^64).
fn below(rng: &mut ChaCha20Rng, n: u32) -> u32 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u32
}

fn bit(words: &[u64], i: u32) -> bool {
    words[(i / 64) as usize] >> (i % 64) & 1 == 1
}

fn set(words: &mut [u64], i: u32) {
    words[(i / 64) as usize] |= 1 << (i % 64);
}

fn flip(words: &mut [u64], i: u32) {
    words[(i / 64) as usize] ^= 1 << (i % 64);
}

/// The diffusion layer of one segment. Output bit j is the XOR of `t` keyed-random input bits;
/// equivalently, each set input bit XORs its *column* (the outputs it feeds, as output words)
/// into the result, so applying the layer costs one short word-XOR per set input bit.
struct Diffusion {
    out_words: usize,
    /// `in_bits × out_words` words: column i is the set of outputs input bit i feeds.
    columns: Vec<u64>,
}

impl Diffusion {
    /// Output bit j is the XOR of `t` distinct input bits chosen by the keyed stream.
    fn new(rng: &mut ChaCha20Rng, in_bits: u32, out_bits: u32, t: u32) -> Diffusion {
        let out_words = (out_bits / 64) as usize;
        let mut columns = vec![0u64; in_bits as usize * out_words];
        let mut chosen = Vec::with_capacity(t as usize);
        for j in 0..out_bits {
            chosen.clear();
            while chosen.len() < t as usize {
                let i = below(rng, in_bits);
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
            for &i in &chosen {
                set(&mut columns[i as usize * out_words..], j);
            }
        }
        Diffusion { out_words, columns }
    }

    fn apply(&self, input: &[u64], out: &mut Vec<u64>) {
        out.clear();
        out.resize(self.out_words, 0);
        self.apply_into(input, out);
    }

    /// Writes the layer's output for `input` into `out` (`out_words` long). Segments of up to
    /// eight output words (512 bits) take a loop specialised on their width, whose accumulators
    /// stay in registers; this is the per-record cost of the layer in the encoder.
    fn apply_into(&self, input: &[u64], out: &mut [u64]) {
        match self.out_words {
            1 => self.apply_n::<1>(input, out),
            2 => self.apply_n::<2>(input, out),
            3 => self.apply_n::<3>(input, out),
            4 => self.apply_n::<4>(input, out),
            5 => self.apply_n::<5>(input, out),
            6 => self.apply_n::<6>(input, out),
            7 => self.apply_n::<7>(input, out),
            8 => self.apply_n::<8>(input, out),
            _ => {
                out.fill(0);
                self.xor_into(input, out);
            }
        }
    }

    /// XORs the layer's output for `input` into `out`.
    fn xor_into(&self, input: &[u64], out: &mut [u64]) {
        let ow = self.out_words;
        for_each_set_bit(input, |i| {
            for (o, c) in out.iter_mut().zip(&self.columns[i * ow..(i + 1) * ow]) {
                *o ^= c;
            }
        });
    }

    fn apply_n<const N: usize>(&self, input: &[u64], out: &mut [u64]) {
        let mut acc = [0u64; N];
        for_each_set_bit(input, |i| {
            let c = &self.columns[i * N..(i + 1) * N];
            for (a, x) in acc.iter_mut().zip(c) {
                *a ^= x;
            }
        });
        out.copy_from_slice(&acc);
    }
}

/// Calls `f` with the index of every set bit of `words`, in order.
#[inline(always)]
fn for_each_set_bit(words: &[u64], mut f: impl FnMut(usize)) {
    for (w, &word) in words.iter().enumerate() {
        let mut x = word;
        while x != 0 {
            f(w * 64 + x.trailing_zeros() as usize);
            x &= x - 1;
        }
    }
}

/// Balancing: the segment followed by its complement, under a keyed permutation of the 2L
/// positions (`perm[i]` is where position i of the concatenation goes).
fn balance(input: &[u64], perm: &[u32], out: &mut Vec<u64>) {
    let l = (input.len() * 64) as u32;
    out.clear();
    out.resize(input.len() * 2, 0);
    for i in 0..l {
        let dest = if bit(input, i) {
            perm[i as usize]
        } else {
            perm[(l + i) as usize]
        };
        set(out, dest);
    }
}

/// XOR folding: the first half of the segment XOR the second half.
fn fold(input: &[u64], out: &mut Vec<u64>) {
    let half = input.len() / 2;
    out.clear();
    out.extend(input[..half].iter().zip(&input[half..]).map(|(a, b)| a ^ b));
}

/// A keyed permutation of `0..n` (Fisher–Yates driven by the keyed stream).
fn permutation(rng: &mut ChaCha20Rng, n: u32) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(rng, i + 1);
        p.swap(i as usize, j as usize);
    }
    p
}

struct SegmentPlan {
    raw: Range<usize>,
    stored: Range<usize>,
    diffusion: Option<Diffusion>,
    balance: Option<Vec<u32>>,
    fold: bool,
}

/// The hardening of one schema under one key, ready to apply to each record's filter.
pub struct Hardener {
    segments: Vec<SegmentPlan>,
    /// BLIP subkey and flip threshold on a 16-bit uniform value.
    blip: Option<(hmac::Key, u32)>,
    transforms: bool,
}

/// Reusable buffers for [`Hardener::apply`] (one per worker thread).
#[derive(Default)]
pub struct Scratch {
    a: Vec<u64>,
    b: Vec<u64>,
    seed: Vec<u8>,
}

impl Hardener {
    /// Derives the permutations, selections and noise key for `schema` from `key`. Each has
    /// its own HKDF subkey (`bloomlink/v1/harden/<method>/<segment>`, `bloomlink/v1/harden/blip`).
    pub fn new(key: &LinkageKey, schema: &Schema) -> Hardener {
        let h = &schema.def.hardening;
        let segments = schema
            .segments
            .iter()
            .zip(&schema.stored_segments)
            .map(|(raw, stored)| {
                let mut bits = raw.bits;
                let diffusion = h.diffusion.as_ref().map(|d| {
                    let k = key.subkey(&format!("bloomlink/v1/harden/diffusion/{}", raw.name));
                    let mut rng = keyed_stream(&k, b"selection");
                    let out = bits * d.output_factor;
                    let layer = Diffusion::new(&mut rng, bits, out, d.t);
                    bits = out;
                    layer
                });
                let balance = h.balance.then(|| {
                    let k = key.subkey(&format!("bloomlink/v1/harden/balance/{}", raw.name));
                    let p = permutation(&mut keyed_stream(&k, b"permutation"), 2 * bits);
                    bits *= 2;
                    p
                });
                SegmentPlan {
                    raw: raw.word_range(),
                    stored: stored.word_range(),
                    diffusion,
                    balance,
                    fold: h.xor_fold,
                }
            })
            .collect();
        let blip = h.blip.as_ref().map(|b| {
            let threshold = ((b.flip_probability * 65536.0).round() as u32).clamp(1, 32768);
            (key.subkey("bloomlink/v1/harden/blip"), threshold)
        });
        Hardener {
            segments,
            blip,
            transforms: h.transforms_filter(),
        }
    }

    /// True when the stored filter differs from the hashed one; when false, [`Hardener::apply`]
    /// need not be called (salting alone is done while hashing).
    pub fn transforms(&self) -> bool {
        self.transforms
    }

    /// True when the stored form of a segment depends only on its hashed bits (no BLIP noise,
    /// which also depends on the record), so it can be computed once per distinct value.
    pub fn segment_is_pure(&self) -> bool {
        self.blip.is_none()
    }

    /// Hardens the filter `raw` (the schema's hashed layout) into `stored` (its stored layout).
    /// `agency` and `record_id` (the agency's own id, not an opaque reference) seed the BLIP
    /// noise.
    pub fn apply(
        &self,
        raw: &[u64],
        stored: &mut [u64],
        agency: &str,
        record_id: &str,
        scratch: &mut Scratch,
    ) {
        for (i, s) in self.segments.iter().enumerate() {
            self.apply_segment(
                i,
                &raw[s.raw.clone()],
                &mut stored[s.stored.clone()],
                scratch,
            );
        }
        self.apply_blip(stored, agency, record_id, scratch);
    }

    /// The record-independent transforms (diffusion, balancing, folding) of segment `seg`:
    /// `input` is its hashed words, `out` its stored words. An empty segment stays empty.
    pub fn apply_segment(&self, seg: usize, input: &[u64], out: &mut [u64], scratch: &mut Scratch) {
        let s = &self.segments[seg];
        if input.iter().all(|&w| w == 0) {
            out.fill(0);
            return;
        }
        match (&s.diffusion, &s.balance, s.fold) {
            (Some(d), None, false) => return d.apply_into(input, out),
            (None, None, false) => return out.copy_from_slice(input),
            _ => {}
        }
        let Scratch { a, b, .. } = scratch;
        a.clear();
        a.extend_from_slice(input);
        if let Some(d) = &s.diffusion {
            d.apply(a, b);
            std::mem::swap(a, b);
        }
        if let Some(p) = &s.balance {
            balance(a, p, b);
            std::mem::swap(a, b);
        }
        if s.fold {
            fold(a, b);
            std::mem::swap(a, b);
        }
        out.copy_from_slice(a);
    }

    /// True when the transforms of segment `seg` are linear over GF(2) (diffusion and folding;
    /// balancing is not). Then the stored form of ORed inputs follows from the inputs' own
    /// stored forms: T(a | b) = T(a) ^ T(b) ^ T(a & b), where a & b has few bits.
    pub fn segment_is_linear(&self, seg: usize) -> bool {
        self.segments[seg].balance.is_none()
    }

    /// XORs the transform of `input` (hashed words) into `out` (stored words), for a segment
    /// where [`Hardener::segment_is_linear`] holds. T(0) = 0, so an empty input changes nothing.
    pub fn xor_segment(&self, seg: usize, input: &[u64], out: &mut [u64], scratch: &mut Scratch) {
        debug_assert!(self.segment_is_linear(seg));
        if input.iter().all(|&w| w == 0) {
            return;
        }
        let s = &self.segments[seg];
        match (&s.diffusion, s.fold) {
            (Some(d), false) => d.xor_into(input, out),
            (None, false) => {
                for (o, x) in out.iter_mut().zip(input) {
                    *o ^= x;
                }
            }
            (d, true) => {
                let Scratch { a, b, .. } = scratch;
                a.clear();
                a.extend_from_slice(input);
                if let Some(d) = d {
                    d.apply(a, b);
                    std::mem::swap(a, b);
                }
                fold(a, b);
                for (o, x) in out.iter_mut().zip(b.iter()) {
                    *o ^= x;
                }
            }
        }
    }

    /// BLIP noise on a stored filter (nothing when the schema has none): fixed per key, agency
    /// and record id; empty segments stay empty.
    pub fn apply_blip(
        &self,
        stored: &mut [u64],
        agency: &str,
        record_id: &str,
        scratch: &mut Scratch,
    ) {
        let Some((key, threshold)) = &self.blip else {
            return;
        };
        let seed = &mut scratch.seed;
        seed.clear();
        seed.extend_from_slice(agency.as_bytes());
        seed.push(TOKEN_PART_SEPARATOR);
        seed.extend_from_slice(record_id.as_bytes());
        let mut rng = keyed_stream(key, seed);
        for s in &self.segments {
            let out = &mut stored[s.stored.clone()];
            if out.iter().all(|&w| w == 0) {
                continue;
            }
            let mut pool = 0u64;
            for i in 0..(out.len() * 64) as u32 {
                if i % 4 == 0 {
                    pool = rng.next_u64();
                }
                if ((pool >> (16 * (i % 4))) & 0xffff) < u64::from(*threshold) {
                    flip(out, i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::UNHARDENED_SCHEMA_TOML;

    fn key() -> LinkageKey {
        crate::key::test_key("Test")
    }

    /// The default schema with segments resized and a `[hardening]` table appended.
    fn schema(hardening: &str, segments: &[(&str, u32)]) -> Schema {
        let mut text = UNHARDENED_SCHEMA_TOML.to_string();
        let mut total = 0;
        for (name, bits) in segments {
            let from = format!("name = \"{name}\"\nbits = ");
            let at = text.find(&from).unwrap() + from.len();
            let end = at + text[at..].find('\n').unwrap();
            text.replace_range(at..end, &bits.to_string());
            total += bits;
        }
        if !segments.is_empty() {
            text = text.replace("filter_bits = 1024", &format!("filter_bits = {total}"));
        }
        Schema::from_toml(&format!("{text}\n[hardening]\n{hardening}\n"), "test").unwrap()
    }

    /// Random raw filters with the given fill, one segment left empty in every fifth.
    fn filters(schema: &Schema, n: usize, fill: f64, seed: &[u8]) -> Vec<Vec<u64>> {
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"test filters");
        let mut rng = keyed_stream(&k, seed);
        let t = (fill * 65536.0) as u64;
        (0..n)
            .map(|r| {
                let mut f = vec![0u64; schema.words()];
                for i in 0..schema.words() * 64 {
                    if rng.next_u64() & 0xffff < t {
                        set(&mut f, i as u32);
                    }
                }
                if r % 5 == 0 {
                    f[schema.segments[1].word_range()].fill(0);
                }
                f
            })
            .collect()
    }

    fn harden(h: &Hardener, s: &Schema, raw: &[u64], id: &str) -> Vec<u64> {
        let mut out = vec![0u64; s.stored_words()];
        h.apply(raw, &mut out, "health", id, &mut Scratch::default());
        out
    }

    fn ones(w: &[u64]) -> u32 {
        w.iter().map(|x| x.count_ones()).sum()
    }

    #[test]
    fn empty_segments_stay_empty_and_key_decides_the_bits() {
        for h in [
            "balance = true",
            "diffusion = { t = 4 }",
            "blip = { flip_probability = 0.1 }",
            "balance = true\nxor_fold = true",
        ] {
            let s = schema(h, &[]);
            let k = key();
            let (h1, h2, h3) = (
                Hardener::new(&k, &s),
                Hardener::new(&k, &s),
                Hardener::new(&key(), &s),
            );
            for (i, raw) in filters(&s, 10, 0.2, b"e").iter().enumerate() {
                let id = format!("R{i}");
                let out = harden(&h1, &s, raw, &id);
                assert_eq!(out, harden(&h2, &s, raw, &id), "{h}: same key, same bits");
                assert_ne!(out, harden(&h3, &s, raw, &id), "{h}: other key, other bits");
                for (r, st) in s.segments.iter().zip(&s.stored_segments) {
                    let empty_in = raw[r.word_range()].iter().all(|&w| w == 0);
                    let empty_out = out[st.word_range()].iter().all(|&w| w == 0);
                    assert_eq!(empty_in, empty_out, "{h}: segment {}", r.name);
                }
            }
        }
    }

    #[test]
    fn balancing_sets_exactly_half_of_every_segment() {
        let s = schema("balance = true", &[]);
        assert_eq!(s.stored_bits(), 2048);
        let h = Hardener::new(&key(), &s);
        let mut flat = vec![0u32; s.stored_bits() as usize];
        let raws = filters(&s, 200, 0.25, b"b");
        for (i, raw) in raws.iter().enumerate() {
            let out = harden(&h, &s, raw, &i.to_string());
            for (r, st) in s.segments.iter().zip(&s.stored_segments) {
                let n = ones(&out[st.word_range()]);
                if raw[r.word_range()].iter().any(|&w| w != 0) {
                    assert_eq!(n, st.bits / 2, "segment {}", r.name);
                }
            }
            for b in 0..s.stored_bits() {
                flat[b as usize] += u32::from(bit(&out, b));
            }
        }
        // Bit frequencies flatten towards one half: raw bits are set in a quarter of the
        // filters, stored bits (a bit or its complement) in a quarter or three quarters.
        let mean = flat.iter().sum::<u32>() as f64 / flat.len() as f64;
        assert!((mean / 200.0 - 0.5).abs() < 0.1, "mean frequency {mean}");
    }

    #[test]
    fn folding_halves_segments_into_the_xor_of_their_halves() {
        let s = schema(
            "xor_fold = true",
            &[
                ("given", 384),
                ("family", 256),
                ("birth", 256),
                ("address", 256),
            ],
        );
        assert_eq!(s.stored_bits(), 576);
        let h = Hardener::new(&key(), &s);
        for raw in filters(&s, 20, 0.3, b"f") {
            let out = harden(&h, &s, &raw, "x");
            for (r, st) in s.segments.iter().zip(&s.stored_segments) {
                assert_eq!(st.bits * 2, r.bits);
                let seg = &raw[r.word_range()];
                let half = seg.len() / 2;
                let want: Vec<u64> = (0..half).map(|i| seg[i] ^ seg[half + i]).collect();
                assert_eq!(&out[st.word_range()], &want[..], "segment {}", r.name);
            }
        }
    }

    #[test]
    fn blip_flips_about_f_of_the_bits_and_noise_is_per_record() {
        let f = 0.08;
        let s = schema(&format!("blip = {{ flip_probability = {f} }}"), &[]);
        let h = Hardener::new(&key(), &s);
        let (mut flipped, mut total) = (0u32, 0u32);
        let raws = filters(&s, 10, 0.3, b"p");
        for (i, raw) in raws.iter().enumerate() {
            let out = harden(&h, &s, raw, &format!("R{i}"));
            for r in &s.segments {
                let a = &raw[r.word_range()];
                if a.iter().any(|&w| w != 0) {
                    flipped += a
                        .iter()
                        .zip(&out[r.word_range()])
                        .map(|(x, y)| (x ^ y).count_ones())
                        .sum::<u32>();
                    total += r.bits;
                }
            }
        }
        let rate = f64::from(flipped) / f64::from(total);
        // ~8,500 bits: the standard error is 0.003.
        assert!(
            total > 5000 && (rate - f).abs() < 0.015,
            "flip rate {rate} over {total}"
        );
        // The same filter under two record ids gets different noise; the same id the same.
        let a = harden(&h, &s, &raws[1], "A");
        assert_ne!(a, harden(&h, &s, &raws[1], "B"));
        assert_eq!(a, harden(&h, &s, &raws[1], "A"));
    }

    #[test]
    fn diffusion_output_bits_are_xors_of_t_inputs() {
        let t = 5;
        let s = schema(&format!("diffusion = {{ t = {t} }}"), &[]);
        let h = Hardener::new(&key(), &s);
        assert_eq!(s.stored_bits(), 1024);
        // Feeding single input bits reveals each output's inputs: every output bit depends on
        // exactly t inputs, and flipping one input flips exactly the outputs it feeds.
        let base = filters(&s, 1, 0.3, b"d").remove(0);
        let out0 = harden(&h, &s, &base, "x");
        let mut inputs_of = vec![0u32; 1024];
        for i in 0..1024u32 {
            let mut one = base.clone();
            flip(&mut one, i);
            let out = harden(&h, &s, &one, "x");
            let mut only = vec![0u64; s.words()];
            set(&mut only, i);
            let alone = harden(&h, &s, &only, "x");
            // Linear: the change equals the layer applied to the single bit.
            let diff: Vec<u64> = out.iter().zip(&out0).map(|(a, b)| a ^ b).collect();
            assert_eq!(diff, alone, "input {i}");
            for j in 0..1024u32 {
                inputs_of[j as usize] += u32::from(bit(&alone, j));
            }
        }
        assert!(
            inputs_of.iter().all(|&n| n == t),
            "each output has t inputs"
        );
        // Outputs of random inputs at density p are set with probability (1 − (1 − 2p)^t)/2.
        let p = 0.2f64;
        let want = (1.0 - (1.0 - 2.0 * p).powi(t as i32)) / 2.0;
        let (mut on, mut n) = (0u32, 0u32);
        for raw in filters(&s, 20, p, b"q") {
            let out = harden(&h, &s, &raw, "x");
            for r in &s.segments {
                if raw[r.word_range()].iter().any(|&w| w != 0) {
                    on += ones(&out[r.word_range()]);
                    n += r.bits;
                }
            }
        }
        let got = f64::from(on) / f64::from(n);
        assert!((got - want).abs() < 0.03, "density {got}, expected {want}");
    }

    #[test]
    fn diffusion_output_factor_lengthens_segments() {
        let s = schema("diffusion = { t = 3, output_factor = 2 }", &[]);
        assert_eq!(s.stored_bits(), 2048);
        let h = Hardener::new(&key(), &s);
        let raw = filters(&s, 1, 0.2, b"o").remove(0);
        let out = harden(&h, &s, &raw, "x");
        assert_eq!(out.len(), 32);
        assert!(ones(&out) > 0);
    }

    #[test]
    fn permutations_are_permutations() {
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"p");
        let mut p = permutation(&mut keyed_stream(&k, b"x"), 640);
        assert_ne!(p, (0..640).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..640).collect::<Vec<_>>());
    }
}
