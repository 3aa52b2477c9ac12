//! How fast could any cached encoder of the built-in schema be on this machine? A lower bound
//! for `bloomlink encode`, measured rather than argued.
//!
//! ```sh
//! cargo run --release -- synth --children 1000000 --seed 1 -o /tmp/s1m
//! cargo run --release --example encode_floor -- /tmp/s1m/health.csv
//! ```
//!
//! The encoder caches one entry per distinct field value, so a row costs at least: cutting the
//! row into fields, one dictionary lookup per cached field (given name, other names and family
//! name keyed by year of birth as the salt, date of birth, sex, postcode), one lookup in the
//! `given_family` keyed-token cache, the two HMACs no cache can save (`nhs` and `postcode_yob`
//! are unique per child) and writing the filter, popcounts and tokens out. This program does
//! only that, on dictionaries as large as the export's distinct values, built beforehand
//! (untimed) and shared by the threads, with the output arrays already touched. It leaves out
//! everything else the real encoder does: normalising and validating values, computing an
//! entry on a miss (about one per two rows on a fresh export, per worker), keyed-token flags,
//! hardening corrections, record ids, rejects and counts, the duplicate-id check, and writing
//! and hashing the file. So an encoder built this way cannot beat the "hit path" line, and
//! the lines below it show what each part costs. The file's write and trailer hash come on
//! top (about 0.13 s for a million rows, `bloomlink encode --json`).
//!
//! The dictionaries are flat open-addressing tables like the encoder's (`encode::table`): a
//! slot array of hash tag + arena offset, and an arena of key then payload words. Payloads are
//! filler: only their size and where they lie matter here.

use std::hash::BuildHasher;
use std::time::Instant;

use ring::hmac;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Payload words per entry of each cached field, as in the encoder's dictionaries for the
/// built-in hardened schema (status, parts, stored and hashed segment words, embedded tokens,
/// part texts).
const FIELDS: [(&str, bool, usize); 6] = [
    ("Forename", true, 15),
    ("Middle Names", true, 12),
    ("Surname", true, 9),
    ("Date of Birth", false, 10),
    ("Gender", false, 3),
    ("Postcode", false, 7),
];
/// Filter words (1024 bits), popcounts (four segments and the total) and tokens per row.
const WORDS: usize = 16;
const POPS: usize = 5;
const TOKENS: usize = 7;
const BATCH: usize = 128;

fn hash(b: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x243f_6a88_85a3_08d3).hash_one(b)
}

/// Distinct keys → payload words.
struct Table {
    slots: Vec<u64>,
    arena: Vec<u64>,
    payload: usize,
}

impl Table {
    fn build<'a>(keys: impl Iterator<Item = &'a [u8]>, payload: usize) -> Table {
        let mut distinct: Vec<&[u8]> = keys.collect();
        distinct.sort_unstable();
        distinct.dedup();
        let n = (distinct.len() * 2).next_power_of_two().max(1024);
        let mut t = Table {
            slots: vec![0; n],
            arena: vec![0],
            payload,
        };
        for k in distinct {
            let at = t.arena.len();
            t.arena.push(k.len() as u64);
            t.arena.extend(k.chunks(8).map(word));
            t.arena
                .extend((0..payload as u64).map(|i| (at as u64 ^ i).wrapping_mul(0x9e37_79b9)));
            let h = hash(k);
            let mut i = h as usize & (n - 1);
            while t.slots[i] != 0 {
                i = (i + 1) & (n - 1);
            }
            t.slots[i] = (h >> 32) << 32 | at as u64;
        }
        t
    }

    /// The payload of `key` (present), whose hash is `h`.
    fn find_hashed(&self, h: u64, key: &[u8]) -> &[u64] {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            let at = s as u32 as usize;
            if s >> 32 == h >> 32
                && self.arena[at] == key.len() as u64
                && key
                    .chunks(8)
                    .enumerate()
                    .all(|(j, c)| self.arena[at + 1 + j] == word(c))
            {
                let p = at + 1 + key.len().div_ceil(8);
                return &self.arena[p..p + self.payload];
            }
            i = (i + 1) & mask;
        }
    }
}

fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// Which parts of the hit path a run does.
#[derive(Clone, Copy)]
struct Parts {
    lookups: bool,
    token_cache: bool,
    hmacs: bool,
}

struct Export<'a> {
    rows: Vec<Vec<&'a [u8]>>,
    /// Columns of the six cached fields, the NHS number and the date of birth.
    cols: [usize; 6],
    nhs: usize,
    dob: usize,
}

impl Export<'_> {
    fn year<'r>(&self, row: &[&'r [u8]]) -> &'r [u8] {
        let d = row[self.dob];
        &d[d.len().saturating_sub(4)..]
    }

    /// Appends field `f`'s dictionary key (salted fields: the year, then the value).
    fn key(&self, row: &[&[u8]], f: usize, out: &mut Vec<u8>) {
        if FIELDS[f].1 {
            out.extend_from_slice(self.year(row));
        }
        out.extend_from_slice(row[self.cols[f]]);
    }

    /// Appends the `given_family` cache key (the encoder keys it by the parts' ids).
    fn pair_key(&self, row: &[&[u8]], out: &mut Vec<u8>) {
        out.extend_from_slice(row[self.cols[0]]);
        out.push(0);
        out.extend_from_slice(row[self.cols[2]]);
    }
}

struct Out<'o> {
    filters: &'o mut [u64],
    popcounts: &'o mut [u16],
    tokens: &'o mut [u64],
}

/// A batch's keys, one after another, and their hashes.
#[derive(Default)]
struct Lookups {
    keys: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<u64>,
}

/// Looks up a batch's `keys` in `t` and hands each row's payload to `each`. As the encoder
/// does, the batch's slots and then its records are loaded together, so that their cache
/// misses overlap (plain loads stand in for the encoder's prefetch hints, which need `unsafe`).
fn look_up<'r>(
    t: &Table,
    rows: impl Iterator<Item = &'r [&'r [u8]]>,
    key: impl Fn(&[&[u8]], &mut Vec<u8>),
    lk: &mut Lookups,
    mut each: impl FnMut(usize, &[u64]),
) {
    lk.keys.clear();
    lk.ends.clear();
    for row in rows {
        key(row, &mut lk.keys);
        lk.ends.push(lk.keys.len());
    }
    let Lookups { keys, ends, hashes } = lk;
    let key = |r: usize| &keys[if r == 0 { 0 } else { ends[r - 1] }..ends[r]];
    hashes.clear();
    hashes.extend((0..ends.len()).map(|r| hash(key(r))));
    let mask = t.slots.len() - 1;
    let mut touch = 0u64;
    for &h in hashes.iter() {
        touch ^= t.slots[h as usize & mask];
    }
    for &h in hashes.iter() {
        let at = t.slots[h as usize & mask] as u32 as usize;
        touch ^= t.arena[at] ^ t.arena.get(at + 8).copied().unwrap_or(0);
    }
    std::hint::black_box(touch);
    for (r, &h) in hashes.iter().enumerate() {
        each(r, t.find_hashed(h, key(r)));
    }
}

/// Encodes `lines` (one block of the export) into `out`, batch by batch and column by column.
fn run(
    ex: &Export<'_>,
    lines: &[&[u8]],
    tables: &[Table],
    pairs: &Table,
    key: &hmac::Key,
    parts: Parts,
    out: Out<'_>,
) {
    let width = ex.rows.first().map_or(0, Vec::len);
    let mut fields: Vec<&[u8]> = Vec::with_capacity(BATCH * width);
    let mut k = Vec::with_capacity(64);
    let mut lk = Lookups::default();
    let mut fbuf = vec![0u64; BATCH * WORDS];
    for (b, batch) in lines.chunks(BATCH).enumerate() {
        fields.clear();
        for l in batch {
            fields.extend(l.split(|&c| c == b','));
        }
        fbuf.fill(0);
        if parts.lookups {
            for (f, t) in tables.iter().enumerate() {
                let key = |row: &[&[u8]], out: &mut Vec<u8>| ex.key(row, f, out);
                look_up(t, fields.chunks(width), key, &mut lk, |r, p| {
                    let filter = &mut fbuf[r * WORDS..(r + 1) * WORDS];
                    for (j, x) in p.iter().enumerate() {
                        filter[(f * 3 + j) % WORDS] ^= x;
                    }
                });
            }
        }
        if parts.token_cache {
            let key = |row: &[&[u8]], out: &mut Vec<u8>| ex.pair_key(row, out);
            look_up(pairs, fields.chunks(width), key, &mut lk, |r, p| {
                out.tokens[(b * BATCH + r) * TOKENS] = p[0];
            });
        }
        for (r, row) in fields.chunks(width).enumerate() {
            let at = b * BATCH + r;
            let toks = &mut out.tokens[at * TOKENS..(at + 1) * TOKENS];
            if parts.hmacs {
                let first = |m: &[u8]| {
                    let tag = hmac::sign(key, m);
                    u64::from_le_bytes(tag.as_ref()[..8].try_into().unwrap_or_default())
                };
                toks[1] = first(row[ex.nhs]);
                k.clear();
                k.extend_from_slice(row[ex.cols[5]]);
                k.extend_from_slice(ex.year(row));
                toks[2] = first(&k);
            }
            let filter = &fbuf[r * WORDS..(r + 1) * WORDS];
            out.filters[at * WORDS..(at + 1) * WORDS].copy_from_slice(filter);
            out.popcounts[at * POPS] = filter.iter().map(|x| x.count_ones() as u16).sum();
        }
    }
}

fn main() -> Result<(), String> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: encode_floor HEALTH.csv (a `bloomlink synth` health export)")?;
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty());
    let header: Vec<&[u8]> = lines
        .next()
        .ok_or("empty file")?
        .split(|&c| c == b',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name.as_bytes())
            .ok_or(format!(
                "{path}: no column `{name}` (expected a synth health export)"
            ))
    };
    let lines: Vec<&[u8]> = lines.collect();
    let mut cols = [0; 6];
    for (c, (name, _, _)) in cols.iter_mut().zip(FIELDS) {
        *c = col(name)?;
    }
    let ex = Export {
        rows: lines
            .iter()
            .map(|l| l.split(|&c| c == b',').collect())
            .collect(),
        cols,
        nhs: col("NHS Number")?,
        dob: col("Date of Birth")?,
    };
    if ex.rows.iter().any(|r| r.len() != header.len()) {
        return Err(format!(
            "{path}: a row with quoted commas; use a synth health export"
        ));
    }
    let n = lines.len();
    let keys = |f: usize| -> Vec<Vec<u8>> {
        let mut k = Vec::new();
        ex.rows
            .iter()
            .map(|r| {
                k.clear();
                ex.key(r, f, &mut k);
                k.clone()
            })
            .collect()
    };
    let tables: Vec<Table> = (0..FIELDS.len())
        .map(|f| Table::build(keys(f).iter().map(Vec::as_slice), FIELDS[f].2))
        .collect();
    let pair_keys: Vec<Vec<u8>> = ex
        .rows
        .iter()
        .map(|r| {
            let mut k = Vec::new();
            ex.pair_key(r, &mut k);
            k
        })
        .collect();
    let pairs = Table::build(pair_keys.iter().map(Vec::as_slice), 1);
    let mb = |t: &Table| (t.slots.len() + t.arena.len()) * 8;
    println!(
        "{n} rows; dictionaries {} MB, given_family cache {} MB (shared by the threads)",
        tables.iter().map(mb).sum::<usize>() >> 20,
        mb(&pairs) >> 20
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32]);
    let mut filters = vec![1u64; n * WORDS];
    let mut popcounts = vec![1u16; n * POPS];
    let mut tokens = vec![1u64; n * TOKENS];
    let all = Parts {
        lookups: true,
        token_cache: true,
        hmacs: true,
    };
    let runs = [
        ("hit path (all of the below)", all),
        (
            "without the two HMACs",
            Parts {
                hmacs: false,
                ..all
            },
        ),
        (
            "without HMACs and the token cache",
            Parts {
                hmacs: false,
                token_cache: false,
                ..all
            },
        ),
        (
            "cutting rows into fields and writing out only",
            Parts {
                lookups: false,
                token_cache: false,
                hmacs: false,
            },
        ),
    ];
    for (what, parts) in runs {
        for threads in [1, 2] {
            let mut secs = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let per = n.div_ceil(threads).div_ceil(BATCH) * BATCH;
                std::thread::scope(|s| {
                    let mut rest = (&mut filters[..], &mut popcounts[..], &mut tokens[..]);
                    for block in lines.chunks(per) {
                        let m = block.len();
                        let (f, rf) = std::mem::take(&mut rest.0).split_at_mut(m * WORDS);
                        let (p, rp) = std::mem::take(&mut rest.1).split_at_mut(m * POPS);
                        let (t, rt) = std::mem::take(&mut rest.2).split_at_mut(m * TOKENS);
                        rest = (rf, rp, rt);
                        let (ex, tables, pairs, key) = (&ex, &tables, &pairs, &key);
                        let out = Out {
                            filters: f,
                            popcounts: p,
                            tokens: t,
                        };
                        s.spawn(move || run(ex, block, tables, pairs, key, parts, out));
                    }
                });
                secs.push(started.elapsed().as_secs_f64());
            }
            secs.sort_by(f64::total_cmp);
            println!(
                "{what:<48} {threads} thread(s): {:.3}–{:.3} s, best {:.0}k rows/s",
                secs[0],
                secs[2],
                n as f64 / secs[0] / 1e3
            );
        }
    }
    // Keep the outputs observable.
    let check = filters.iter().fold(0u64, |a, x| a ^ x) ^ tokens.iter().fold(0, |a, x| a ^ x);
    println!("(checksum {check:016x})");
    Ok(())
}
