//! Encoding an agency export: CSV → canonical fields → tokens → keyed Bloom filter + keyed exact
//! tokens, with every row either encoded or rejected (and counted).
//!
//! A reader thread cuts the input into blocks of whole records; worker threads encode blocks
//! (`engine`: per-worker caches of field values, bit positions and keyed tokens) straight into
//! the output space; the rows are then checked for duplicate record ids and put in order.
//! Caching never changes results, only speed: output is identical for any thread count.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};

use blocks::{Block, BlockReader, BlockRecords, RecordBatch, RecordParser};
use engine::{FieldCounts, FieldPlan, Worker};

mod blocks;
mod engine;
#[cfg(test)]
mod reference;
mod table;

use serde::Serialize;

use crate::colmap::{ColumnMap, MissingVerdict, Sex, TextEncoding};
use crate::date::Date;
use crate::error::{Error, Result};
use crate::harden::Hardener;
use crate::key::LinkageKey;
use crate::normalise::{self, Invalid};
use crate::schema::{Normaliser, Schema, Transform};
use crate::tokens::{Hasher, Value};

/// Ctrl-Z, which DOS-era exports write at the end of the file.
pub(crate) const DOS_END: u8 = 0x1A;

/// Longest record id accepted, in bytes.
pub const MAX_RECORD_ID_BYTES: usize = 256;
/// Most rows given room in the shared output space up front (more rows still work).
const MAX_SHARED_ROWS: usize = 1 << 26;

/// The encoded records of one export, in input row order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Filter length in 64-bit words.
    pub words: usize,
    /// Number of segments (popcounts per record = 1 + segments).
    pub segments: usize,
    /// Where each row reference starts and ends in `id_bytes`: one more entry than there are
    /// records, the first 0 (as the file's `id_offsets` section). Use [`Records::id`].
    pub id_offsets: Vec<u64>,
    /// Row references (record ids, or opaque references), concatenated (UTF-8).
    pub id_bytes: Vec<u8>,
    /// Filters, `words` per record.
    pub filters: Vec<u64>,
    /// Per record: total popcount, then one popcount per segment.
    pub popcounts: Vec<u16>,
    /// CSR offsets into `tokens` (len = records + 1).
    pub token_offsets: Vec<u32>,
    /// Keyed exact tokens, kind in the top byte, sorted per record.
    pub tokens: Vec<u64>,
}

impl Records {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.id_offsets.len().saturating_sub(1)
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row reference of record `i`.
    pub fn id(&self, i: usize) -> &str {
        let bytes = &self.id_bytes[self.id_offsets[i] as usize..self.id_offsets[i + 1] as usize];
        // Built from `str`s only (`push_id`, or validated by the file reader).
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// The row references, in record order.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.id(i))
    }

    /// Appends a row reference (for the next record).
    pub fn push_id(&mut self, id: &str) {
        if self.id_offsets.is_empty() {
            self.id_offsets.push(0);
        }
        self.id_bytes.extend_from_slice(id.as_bytes());
        self.id_offsets.push(self.id_bytes.len() as u64);
    }

    /// Filter of record `i`.
    pub fn filter(&self, i: usize) -> &[u64] {
        &self.filters[i * self.words..(i + 1) * self.words]
    }

    /// Tokens of record `i`.
    pub fn tokens_of(&self, i: usize) -> &[u64] {
        &self.tokens[self.token_offsets[i] as usize..self.token_offsets[i + 1] as usize]
    }
}

/// A rejected row: where and why, never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reject {
    /// Data row number (1 = first row after the header).
    pub row: u64,
    /// Line in the file where the row starts.
    pub line: u64,
    /// CSV column involved, if one.
    pub column: Option<String>,
    /// Schema field involved, if one.
    pub field: Option<String>,
    /// Stable reason code.
    pub reason: &'static str,
    /// Human explanation.
    pub detail: String,
    /// Lines after the first that the row's quoted fields run over (an `unclosed_quote`
    /// swallowed them: they are no rows of their own).
    #[serde(skip)]
    pub swallowed_lines: u64,
}

/// Per-field counts over examined rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FieldStats {
    /// Schema field.
    pub field: String,
    /// CSV column, if mapped.
    pub column: Option<String>,
    /// Rows with a usable value.
    pub present: u64,
    /// Rows with an empty value or a null marker (or unmapped).
    pub missing: u64,
    /// Rows with an unusable value, by reason code.
    pub invalid: BTreeMap<String, u64>,
}

impl FieldStats {
    /// Share of the rows whose fields were read in which this field is invalid.
    pub fn invalid_rate(&self) -> f64 {
        let examined = self.present + self.missing + self.invalid_total();
        if examined == 0 {
            0.0
        } else {
            self.invalid_total() as f64 / examined as f64
        }
    }

    /// Total invalid.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }
}

/// What an encode run did. Rows read = encoded + rejected.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EncodeReport {
    /// Input file.
    pub input: PathBuf,
    /// Agency label.
    pub agency: String,
    /// Input size in bytes.
    pub input_bytes: u64,
    /// SHA-256 of the input bytes (hex).
    pub input_sha256: String,
    /// Data rows read (excluding the header).
    pub rows_read: u64,
    /// Rows encoded.
    pub encoded: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Rejections by reason code.
    pub reject_reasons: BTreeMap<String, u64>,
    /// Per-field statistics, in schema order.
    pub fields: Vec<FieldStats>,
    /// Warnings for the user (e.g. a field mostly invalid).
    pub warnings: Vec<String>,
    /// Seconds spent reading and encoding (parallel), and assembling (sequential).
    pub seconds: StageSeconds,
}

/// Wall-clock seconds per stage of an encode.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageSeconds {
    /// Reading, parsing and encoding rows.
    pub read_and_encode: f64,
    /// Putting rows in order, checking record ids, counting.
    pub assemble: f64,
    /// Writing output files (filled in by the caller).
    pub write: f64,
}

/// Options for [`encode_csv`].
pub struct EncodeOptions<'a> {
    /// Date against which "in the future" is judged.
    pub today: Date,
    /// Worker threads (0 = available cores).
    pub threads: usize,
    /// Replace record ids by opaque references.
    pub opaque_ids: bool,
    /// Called with the number of input bytes consumed so far.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Default for EncodeOptions<'_> {
    fn default() -> Self {
        EncodeOptions {
            today: Date::today_utc(),
            threads: 0,
            opaque_ids: false,
            progress: None,
        }
    }
}

/// The output of [`encode_csv`].
pub struct Encoded {
    /// Encoded records.
    pub records: Records,
    /// Rejected rows, in row order.
    pub rejects: Vec<Reject>,
    /// Summary counts.
    pub report: EncodeReport,
    /// Opaque reference → original record id, when opaque ids were requested.
    pub opaque_map: Vec<(String, String)>,
    /// The export's bytes in another encoding than the column map declares, if they are.
    pub encoding_mismatch: Option<EncodingMismatch>,
}

/// One column of the input feeding a field.
struct FieldSource {
    field: usize,
    column: usize,
}

/// Everything a worker needs, shared read-only.
struct Plan<'a> {
    schema: &'a Schema,
    map: &'a ColumnMap,
    hasher: Hasher,
    sources: Vec<FieldSource>,
    header: Vec<String>,
    id_column: usize,
    today: Date,
    opaque_ids: bool,
    /// Schema fields no column feeds (counted as missing on every row).
    unmapped: Vec<usize>,
    /// Diffusion, balancing, folding and BLIP for each finished filter.
    hardener: Hardener,
    /// Per segment, the schema fields that set its bits.
    segment_fields: Vec<Vec<usize>>,
    /// Per schema field, how the workers cache and lay out its values.
    fields: Vec<FieldPlan>,
    /// When the workers' caches switch off and how large they grow.
    limits: engine::Limits,
    /// The export's data rows end with a delimiter the header lacks
    /// ([`engine::export_shape`], from the first block).
    trailing_delimiter: bool,
}

impl Plan<'_> {
    /// Field statistics from a block's counts.
    fn stats_of(&self, counts: &[FieldCounts]) -> Vec<FieldStats> {
        let mut stats = self.stats_template();
        for (s, c) in stats.iter_mut().zip(counts) {
            s.present = c.present;
            s.missing = c.missing;
            for (i, &n) in c.invalid.iter().enumerate().filter(|(_, &n)| n > 0) {
                let code = Invalid::ALL.get(i).map_or("invalid_encoding", |w| w.code());
                *s.invalid.entry(code.to_string()).or_default() += n;
            }
        }
        stats
    }

    fn stats_template(&self) -> Vec<FieldStats> {
        self.schema
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| FieldStats {
                field: f.def.name.clone(),
                column: self
                    .sources
                    .iter()
                    .find(|s| s.field == i)
                    .map(|s| self.header[s.column].clone()),
                ..Default::default()
            })
            .collect()
    }
}

/// A block of raw rows from the reader, and where its encoded rows go.
struct Job<'o> {
    index: usize,
    first_row: u64,
    block: Block,
    dest: Option<Dest<'o>>,
}

/// Output space for the encoded rows of one block (room for every row of the block), written
/// from the start: encoded rows are contiguous, rejected rows take no room.
struct Dest<'o> {
    filters: &'o mut [u64],
    popcounts: &'o mut [u16],
    tokens: &'o mut [u64],
}

/// Output space a block brought itself, when the shared output was full.
struct OwnDest {
    filters: Vec<u64>,
    popcounts: Vec<u16>,
    tokens: Vec<u64>,
}

/// Strings in one buffer: a block's row references.
#[derive(Default)]
struct IdList {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl IdList {
    fn push(&mut self, s: &[u8]) {
        self.bytes.extend_from_slice(s);
        self.ends.push(self.bytes.len() as u32);
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// A block after encoding.
struct BlockOut {
    index: usize,
    first_row: u64,
    /// Rows in the block (encoded + rejected).
    rows: usize,
    /// Per encoded row: row reference, original id (opaque ids), row offset in the block,
    /// line, token count.
    ids: IdList,
    original_ids: IdList,
    offsets: Vec<u32>,
    lines: Vec<u64>,
    token_counts: Vec<u8>,
    /// Per encoded row: [`table::hash_bytes`] of the agency's own record id (the original id
    /// under opaque ids), hashed by the worker while the id is in cache.
    id_hashes: Vec<u64>,
    /// Tokens written (contiguous from the start of the block's token space).
    tokens: usize,
    rejects: Vec<Reject>,
    stats: Vec<FieldStats>,
    /// Encoded rows whose quoted values (in columns the map does not read: the others are
    /// checked) run over line breaks.
    multiline: Multiline,
    /// Values read under Windows-1252 with bytes outside ASCII ([`engine::Worker::take_non_ascii_read`]).
    non_ascii_read: u64,
    /// Name values with letters replaced by `?` or U+FFFD ([`engine::Worker::take_lossy_names`]).
    lossy_names: u64,
    own: Option<OwnDest>,
}

/// Encoded rows with line breaks inside quoted values: real multi-line notes, or a stray quote
/// in a column the map does not read that swallowed the rows after it (which are then missing).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Multiline {
    /// Such rows.
    pub rows: u64,
    /// Line breaks inside their values.
    pub lines: u64,
    /// The first one's line.
    pub first_line: Option<u64>,
    /// Of those rows, the ones with a value holding a whole row's worth of delimiters after a
    /// line break (what swallowed rows look like).
    pub row_like: u64,
}

impl Multiline {
    pub(crate) fn note(&mut self, line: u64, breaks: u64, row_like: bool) {
        self.add(&Multiline {
            rows: 1,
            lines: breaks,
            first_line: Some(line),
            row_like: u64::from(row_like),
        });
    }

    fn add(&mut self, o: &Multiline) {
        self.rows += o.rows;
        self.lines += o.lines;
        self.row_like += o.row_like;
        self.first_line = self.first_line.into_iter().chain(o.first_line).min();
    }
}

/// Rows parsed and encoded together (see [`Worker::encode_batch`]).
pub(crate) const BATCH_ROWS: usize = 128;

/// The encoded rows whose string in `list` (their own record id, or their row reference) an
/// earlier row already has, per block (in `outs` order): (the row's index among the block's
/// encoded rows, the row number of the string's first occurrence), in order. `hash(b, e)` is
/// [`table::hash_bytes`] of row `e`'s string in block `b` (tests force collisions).
///
/// Rows are sorted by (hash, position), so that rows with equal strings sit together, earliest
/// first; only rows whose hashes collide have their strings compared. Hashing and sorting in
/// parallel keep this step short at the end of a run: a hash set over a million ids costs a
/// cache miss each.
fn duplicates(
    outs: &[BlockOut],
    list: fn(&BlockOut) -> &IdList,
    hash: impl Fn(&BlockOut, usize) -> u64 + Sync,
) -> Vec<Vec<(usize, u64)>> {
    use rayon::prelude::*;
    let mut keyed: Vec<(u64, u64)> = outs
        .par_iter()
        .enumerate()
        .flat_map_iter(|(bi, b)| {
            let hash = &hash;
            (0..list(b).len()).map(move |e| (hash(b, e), (bi as u64) << 32 | e as u64))
        })
        .collect();
    keyed.par_sort_unstable();
    let text = |p: u64| list(&outs[(p >> 32) as usize]).get(p as u32 as usize);
    let row_of = |p: u64| {
        let b = &outs[(p >> 32) as usize];
        b.first_row + u64::from(b.offsets[p as u32 as usize])
    };
    let mut dups: Vec<Vec<(usize, u64)>> = vec![Vec::new(); outs.len()];
    // The first occurrence of each distinct string among rows with one hash (nearly always one).
    let mut firsts: Vec<u64> = Vec::new();
    for group in keyed.chunk_by(|a, b| a.0 == b.0).filter(|g| g.len() > 1) {
        firsts.clear();
        for &(_, p) in group {
            match firsts.iter().find(|&&q| text(q) == text(p)) {
                Some(&q) => dups[(p >> 32) as usize].push((p as u32 as usize, row_of(q))),
                None => firsts.push(p),
            }
        }
    }
    for d in &mut dups {
        d.sort_unstable();
    }
    dups
}

/// Whether two different record ids got one opaque reference, given the rows whose own id is a
/// duplicate (`duplicate_of`, from [`duplicates`]). Rows with one id share a reference, so
/// every such row also repeats an earlier reference; any further row that does is a collision.
fn opaque_refs_collide(outs: &[BlockOut], duplicate_of: &[Vec<(usize, u64)>]) -> bool {
    let count = |d: &[Vec<(usize, u64)>]| d.iter().map(Vec::len).sum::<usize>();
    let refs = duplicates(outs, |b| &b.ids, |b, e| table::hash_bytes(b.ids.get(e)));
    count(&refs) != count(duplicate_of)
}

/// Encodes a block; also returns the block's buffer for reuse.
fn run_block(
    w: &mut Worker<'_, '_>,
    plan: &Plan<'_>,
    job: Job<'_>,
    parser: &mut RecordParser,
) -> (BlockOut, Vec<u8>) {
    let words = plan.schema.stored_words();
    let nseg = plan.schema.segments.len();
    let ntok = plan.schema.tokens.len();
    let Job {
        index,
        first_row,
        block,
        dest,
    } = job;
    let n = block.rows;
    let mut own = None;
    let mut dest = match dest {
        Some(d) => d,
        None => {
            let o = own.insert(OwnDest {
                filters: vec![0; n * words],
                popcounts: vec![0; n * (nseg + 1)],
                tokens: vec![0; n * ntok],
            });
            Dest {
                filters: &mut o.filters,
                popcounts: &mut o.popcounts,
                tokens: &mut o.tokens,
            }
        }
    };
    let mut out = BlockOut {
        index,
        first_row,
        rows: 0,
        ids: IdList::default(),
        original_ids: IdList::default(),
        offsets: Vec::with_capacity(n),
        lines: Vec::with_capacity(n),
        token_counts: Vec::with_capacity(n),
        id_hashes: Vec::with_capacity(n),
        tokens: 0,
        rejects: Vec::new(),
        stats: Vec::new(),
        multiline: Multiline::default(),
        non_ascii_read: 0,
        lossy_names: 0,
        own: None,
    };
    for c in &mut w.counts {
        *c = FieldCounts::default();
    }
    let mut encoded = 0usize;
    // The batch may hold slices of the block: both end before the block's buffer is returned.
    let mut records = BlockRecords::new(&block, plan.map.delimiter, parser);
    let mut batch = RecordBatch::default();
    loop {
        records.fill(&mut batch, parser, BATCH_ROWS);
        if batch.is_empty() {
            break;
        }
        // The reader counted the block's rows with the same parser: room is always there.
        if out.rows + batch.len() > n {
            break;
        }
        let first = first_row + out.rows as u64;
        let offset = out.rows;
        out.rows += batch.len();
        w.encode_batch(
            &batch,
            first,
            offset,
            engine::BatchOut {
                dest: &mut dest,
                out: &mut out,
                encoded: &mut encoded,
            },
        );
    }
    out.stats = plan.stats_of(&w.counts);
    out.non_ascii_read = w.take_non_ascii_read();
    out.lossy_names = w.take_lossy_names();
    out.own = own;
    (out, block.data)
}

/// The token parts of field `fi` that are looked up by id: those of keyed tokens and the salt.
fn interned_parts(schema: &Schema, fi: usize) -> [bool; engine::PARTS] {
    let mut keep = [false; engine::PARTS];
    let used = schema.tokens.iter().flat_map(|t| t.parts.iter().copied());
    let salt = schema.salt.as_ref().map(|s| s.source);
    for (f, tr) in used.chain(salt) {
        if f == fi {
            keep[tr.index()] = true;
        }
    }
    keep
}

fn enc_name(e: TextEncoding) -> &'static str {
    match e {
        TextEncoding::Utf8 | TextEncoding::Utf8Bom => "UTF-8",
        TextEncoding::Windows1252 => "Windows-1252",
    }
}

/// Decodes one field into `buf`; `None` if the bytes are invalid for the encoding, or hold a
/// NUL byte, which is no text in either (an export in UTF-16, or padded with NULs).
pub(crate) fn decode<'b>(enc: TextEncoding, raw: &'b [u8], buf: &'b mut String) -> Option<&'b str> {
    if memchr::memchr(0, raw).is_some() {
        return None;
    }
    match enc {
        TextEncoding::Utf8 | TextEncoding::Utf8Bom => std::str::from_utf8(raw).ok(),
        TextEncoding::Windows1252 => {
            if raw.is_ascii() {
                return std::str::from_utf8(raw).ok();
            }
            let (s, _had_errors) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(raw);
            buf.clear();
            buf.push_str(&s);
            Some(buf.as_str())
        }
    }
}

/// The canonical value of one decoded raw field under `normaliser`, as the encoder sees it:
/// `Ok(None)` for a missing value, `Err` for an unusable one. Column-map settings (date formats,
/// sex codes) come from `map`; `today` bounds dates of birth.
pub fn normalise_value(
    normaliser: Normaliser,
    text: &str,
    map: &ColumnMap,
    today: Date,
) -> std::result::Result<Option<Value>, Invalid> {
    if let Some(m) = &map.missing {
        // The identifier and date normalisers read the text without invisible characters; so
        // does the list (`NOT ON FILE` with a zero-width space is still listed).
        let seen = match normaliser {
            Normaliser::Date
            | Normaliser::Postcode
            | Normaliser::NhsNumber
            | Normaliser::Upn
            | Normaliser::Sex => normalise::visible(text),
            _ => std::borrow::Cow::Borrowed(text),
        };
        match m.verdict(&seen) {
            MissingVerdict::Unlisted => {}
            MissingVerdict::Missing => return Ok(None),
            MissingVerdict::Kept if normaliser == Normaliser::Name => {
                return normalise::name_kept(text).map(|o| o.map(Value::Text));
            }
            MissingVerdict::Kept => {}
        }
    }
    match normaliser {
        Normaliser::Name => normalise::name(text).map(|o| o.map(Value::Text)),
        Normaliser::Date => {
            normalise::date_of_birth(text, &map.date_formats, today).map(|o| o.map(Value::Date))
        }
        Normaliser::Postcode => normalise::postcode(text).map(|o| o.map(Value::Text)),
        Normaliser::NhsNumber => normalise::nhs_number(text).map(|o| o.map(Value::Text)),
        Normaliser::Upn => normalise::upn(text).map(|o| o.map(Value::Text)),
        Normaliser::Sex => {
            // A code is short: a zero-width space pasted into it is no part of it.
            let v = normalise::visible(text);
            let t = v.trim();
            if t.is_empty() || normalise::is_null_marker_uppercased(t) {
                Ok(None)
            } else {
                match map.sex(t) {
                    Some(Sex::U) => Ok(None),
                    Some(s) => Ok(Some(Value::Sex(s))),
                    None => Err(Invalid::UnknownCode),
                }
            }
        }
        Normaliser::Text => Ok(normalise::free_text(text).map(Value::Text)),
    }
}

/// A reader that hashes and counts what passes through it, and for an export declared
/// Windows-1252, watches whether it is UTF-8 after all.
struct HashingReader<R> {
    inner: R,
    ctx: ring::digest::Context,
    bytes: u64,
    utf8: Utf8Probe,
    /// The last byte read, if any, and the one before it.
    last: Option<u8>,
    before_last: Option<u8>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.bytes += n as u64;
        if n > 1 {
            self.before_last = Some(buf[n - 2]);
        } else if n == 1 {
            self.before_last = self.last;
        }
        if n > 0 {
            self.last = Some(buf[n - 1]);
        }
        self.utf8.feed(&buf[..n]);
        Ok(n)
    }
}

/// What a byte stream looks like as UTF-8: how many valid multi-byte characters and invalid
/// byte sequences it has. Text declared Windows-1252 that is valid UTF-8 with multi-byte
/// characters is almost certainly UTF-8 (accented letters in Windows-1252 are single bytes that
/// cannot form UTF-8 sequences), and decoding it as Windows-1252 garbles every such name (`Zoë`
/// becomes `ZoÃ«`) without an invalid byte to show for it. Text declared UTF-8 with more invalid
/// sequences than multi-byte characters is almost certainly a single-byte encoding (Excel's
/// plain "CSV" is Windows-1252): its rows with accented names are rejected.
#[derive(Default)]
struct Utf8Probe {
    /// The start of a character cut off at the end of the last read.
    carry: Vec<u8>,
    /// Whether the first read has been seen (its UTF-8 byte-order mark is no evidence).
    started: bool,
    /// Valid multi-byte characters.
    multibyte: u64,
    /// Invalid byte sequences.
    invalid: u64,
}

impl Utf8Probe {
    fn feed(&mut self, mut data: &[u8]) {
        if !self.started {
            self.started = true;
            data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
        }
        if self.carry.is_empty() && data.is_ascii() {
            return;
        }
        let joined;
        let mut bytes = if self.carry.is_empty() {
            data
        } else {
            joined = [std::mem::take(&mut self.carry).as_slice(), data].concat();
            &joined
        };
        loop {
            match std::str::from_utf8(bytes) {
                Ok(_) => {
                    self.multibyte += lead_bytes(bytes);
                    return;
                }
                Err(e) => {
                    let (valid, rest) = bytes.split_at(e.valid_up_to());
                    self.multibyte += lead_bytes(valid);
                    match e.error_len() {
                        // A character continues in the next read.
                        None => {
                            self.carry = rest.to_vec();
                            return;
                        }
                        Some(n) => {
                            self.invalid += 1;
                            bytes = &rest[n..];
                        }
                    }
                }
            }
        }
    }

    /// The stream ended: valid UTF-8 with a multi-byte character.
    fn looks_utf8(&self) -> bool {
        self.multibyte > 0 && self.invalid == 0 && self.carry.is_empty()
    }

    /// The stream ended: more invalid byte sequences than valid multi-byte characters (a
    /// single-byte encoding, perhaps with a stray UTF-8 character pasted in). A character cut
    /// off at the very end is a file cut short, no evidence either way.
    fn looks_single_byte(&self) -> bool {
        self.invalid > self.multibyte
    }
}

/// Multi-byte characters in valid UTF-8: their lead bytes.
fn lead_bytes(valid: &[u8]) -> u64 {
    valid.iter().filter(|&&b| b >= 0xC0).count() as u64
}

/// The export's bytes in another character encoding than its column map declares, found by
/// [`Utf8Probe`] over the whole file: `bloomlink encode` refuses the run (exit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingMismatch {
    /// Declared Windows-1252, but valid UTF-8 with multi-byte characters: accented names would
    /// be garbled, with no invalid byte to show for it.
    Utf8DeclaredWindows1252,
    /// Declared UTF-8, with rows rejected for invalid bytes and more invalid sequences than
    /// UTF-8 characters in the file: a single-byte encoding (Windows-1252), whose rows with
    /// accented names were rejected.
    SingleByteDeclaredUtf8 {
        /// Rows rejected as `invalid_encoding`.
        rejected: u64,
    },
}

/// What the row references of `records` look like, if most are personal identifiers (NHS
/// numbers, UPNs, postcodes) that must not leave the agency in clear: of up to 1,000 ids
/// spread evenly over the file, more than half pass the identifier's check. Local record ids
/// (`H26422900`, `P/21/964233`) do not; a random 10-digit id passes the NHS number's check 1
/// time in 11.
pub fn identifying_ids(records: &Records) -> Option<&'static str> {
    const SAMPLE: usize = 1000;
    let n = records.len();
    if n == 0 {
        return None;
    }
    let step = n.div_ceil(SAMPLE);
    let sample: Vec<&str> = (0..n).step_by(step).map(|i| records.id(i)).collect();
    type Looks = fn(&str) -> bool;
    let kinds: [(&str, Looks); 3] = [
        // Also with letters around it (`N9991107134`, `NHS-9991107134`): still the number.
        ("NHS numbers", |s| {
            let nhs = |t: &str| matches!(normalise::nhs_number(t), Ok(Some(_)));
            nhs(s)
                || s.split(|c: char| !c.is_ascii_digit())
                    .any(|run| run.len() == 10 && nhs(run))
        }),
        ("unique pupil numbers (UPNs)", |s| {
            matches!(normalise::upn(s), Ok(Some(_)))
        }),
        ("postcodes", |s| {
            matches!(normalise::postcode(s), Ok(Some(_)))
        }),
    ];
    kinds
        .into_iter()
        .find(|(_, looks)| sample.iter().filter(|s| looks(s)).count() * 2 > sample.len())
        .map(|(kind, _)| kind)
}

/// Encodes the CSV file at `input`.
pub fn encode_csv(
    input: &Path,
    key: &LinkageKey,
    schema: &Schema,
    map: &ColumnMap,
    opts: &EncodeOptions<'_>,
) -> Result<Encoded> {
    let file = std::fs::File::open(input).map_err(|e| Error::io(input, e))?;
    let before = file.metadata().map_err(|e| Error::io(input, e))?;
    let mut reader = CountingReader {
        inner: &file,
        bytes: 0,
    };
    let encoded = encode_reader(&mut reader, input, before.len(), key, schema, map, opts)?;
    // An export still being written (or rewritten) by the agency's job: what was read is some
    // state of it, maybe cut in the middle of a row, and nothing else would show it. Refused,
    // so that the run fails instead of quietly encoding part of the night's export.
    let after = file.metadata().map_err(|e| Error::io(input, e))?;
    if reader.bytes != before.len()
        || after.len() != before.len()
        || after.modified().ok() != before.modified().ok()
    {
        return Err(Error::input(
            input,
            format!(
                "changed while it was being read ({} bytes when opened, {} read, {} now): is \
                 the export still being written? Nothing was encoded; run again once the export \
                 is complete",
                before.len(),
                reader.bytes,
                after.len()
            ),
        ));
    }
    Ok(encoded)
}

/// Counts the bytes read through it.
struct CountingReader<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Encodes CSV from any reader; `input` names it in messages.
pub fn encode_reader(
    reader: impl Read,
    input: &Path,
    input_bytes: u64,
    key: &LinkageKey,
    schema: &Schema,
    map: &ColumnMap,
    opts: &EncodeOptions<'_>,
) -> Result<Encoded> {
    let limits = engine::Limits::default();
    encode_reader_with(reader, input, input_bytes, key, schema, map, opts, limits)
}

/// [`encode_reader`] with the workers' caches switching off and bounded as `limits` says
/// (tests shrink them to run those paths on small inputs).
#[allow(clippy::too_many_arguments)]
fn encode_reader_with(
    reader: impl Read,
    input: &Path,
    input_bytes: u64,
    key: &LinkageKey,
    schema: &Schema,
    map: &ColumnMap,
    opts: &EncodeOptions<'_>,
    limits: engine::Limits,
) -> Result<Encoded> {
    map.check_against(schema)?;
    let mut hashing = HashingReader {
        inner: reader,
        ctx: ring::digest::Context::new(&ring::digest::SHA256),
        bytes: 0,
        utf8: Utf8Probe::default(),
        last: None,
        before_last: None,
    };
    // Look at the first bytes for byte-order marks.
    let mut head = [0u8; 3];
    let mut got = 0;
    while got < 3 {
        let n = hashing
            .read(&mut head[got..])
            .map_err(|e| Error::io(input, e))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = &head[..got];
    if got == 0 {
        return Err(Error::input(
            input,
            "is empty: expected a header row followed by data rows",
        ));
    }
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(Error::input(
            input,
            "is UTF-16 (it starts with a UTF-16 byte-order mark): export it as UTF-8 or Windows-1252",
        ));
    }
    // A workbook or an archive given by mistake: its bytes would read as one garbled column.
    for (magic, what) in [
        (&b"PK\x03"[..], "a ZIP archive or an Excel workbook (.xlsx)"),
        (&[0xD0, 0xCF, 0x11][..], "an old Excel workbook (.xls)"),
        (&[0x1F, 0x8B, 0x08][..], "gzip-compressed"),
    ] {
        if head == magic {
            return Err(Error::input(
                input,
                format!(
                    "is {what}, not a CSV export: save or export the sheet as CSV (or \
                     decompress it), then encode the CSV file"
                ),
            ));
        }
    }
    let has_bom = head == [0xEF, 0xBB, 0xBF];
    if has_bom && map.encoding == TextEncoding::Windows1252 {
        return Err(Error::input(
            input,
            format!(
                "starts with a UTF-8 byte-order mark but the column map {} says windows-1252: set \
                 encoding = \"utf-8\"",
                map.path.display()
            ),
        ));
    }
    let prefix: Vec<u8> = if has_bom { Vec::new() } else { head.to_vec() };
    let mut blocks = BlockReader::new(&mut hashing, map.delimiter, prefix, 1);
    let Some(header_rec) = blocks
        .read_header()
        .map_err(|e| Error::input(input, format!("read failed: {e}")))?
    else {
        return Err(Error::input(
            input,
            "has no header row: expected a header row followed by data rows",
        ));
    };
    let mut decode_buf = String::new();
    let mut header = Vec::with_capacity(header_rec.len());
    for (i, h) in header_rec.iter().enumerate() {
        let h = h.as_slice();
        match decode(map.encoding, h, &mut decode_buf) {
            Some(s) => header.push(s.trim().to_string()),
            None if h.contains(&0) => {
                return Err(Error::input(
                    input,
                    format!(
                        "line 1 (header), column {}: holds NUL bytes (0x00): the export is \
                         probably UTF-16 (\"Unicode\" in SQL Server and Excel); export it as \
                         UTF-8 or Windows-1252 CSV",
                        i + 1
                    ),
                ))
            }
            None => {
                return Err(Error::input(
                    input,
                    format!(
                        "line 1 (header), column {}: not valid {}{}",
                        i + 1,
                        enc_name(map.encoding),
                        if map.encoding == TextEncoding::Windows1252 {
                            ""
                        } else {
                            "; if the export comes from a legacy system set encoding = \"windows-1252\" in the column map"
                        }
                    ),
                ))
            }
        }
    }
    // Resolve every named column; report all missing ones at once.
    let mut wanted: Vec<(&str, Option<usize>)> = vec![(map.record_id.as_str(), None)];
    for (field, column) in &map.columns {
        let fi = schema.field_index(field).ok_or_else(|| Error::ColumnMap {
            path: map.path.clone(),
            problem: format!("maps unknown field `{field}`"),
        })?;
        wanted.push((column.as_str(), Some(fi)));
    }
    let mut missing = Vec::new();
    let mut id_column = 0;
    let mut sources = Vec::new();
    for (name, field) in wanted {
        let hits: Vec<usize> = header
            .iter()
            .enumerate()
            .filter(|(_, h)| h.as_str() == name)
            .map(|(i, _)| i)
            .collect();
        match (hits.as_slice(), field) {
            ([i], None) => id_column = *i,
            ([i], Some(fi)) => sources.push(FieldSource {
                field: fi,
                column: *i,
            }),
            ([], _) => missing.push(name),
            _ => {
                return Err(Error::input(
                    input,
                    format!("the header has column `{name}` more than once; rename the duplicates"),
                ))
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::input(
            input,
            missing_column_message(&missing, &header, map),
        ));
    }
    sources.sort_by_key(|s| s.field);
    // The salt source first: salted fields need its value.
    if let Some(s) = &schema.salt {
        sources.sort_by_key(|x| x.field != s.source.0);
    }

    let unmapped = (0..schema.fields.len())
        .filter(|i| !sources.iter().any(|s| s.field == *i))
        .collect();
    let hardener = Hardener::new(key, schema);
    let segment_fields: Vec<Vec<usize>> = (0..schema.segments.len())
        .map(|seg| {
            (0..schema.fields.len())
                .filter(|&fi| schema.fields[fi].segment == Some(seg))
                .collect()
        })
        .collect();
    // A value keeps its segment's stored form when the hardening transforms the filter and
    // the value alone feeds the segment, or the segment's transforms are linear (so several
    // values' stored forms combine by XOR). BLIP is applied to the whole filter afterwards.
    let fields = schema
        .fields
        .iter()
        .enumerate()
        .map(|(fi, f)| {
            let seg = f.segment.map(|s| {
                let single = segment_fields[s].len() == 1;
                let keep = hardener.transforms() && (hardener.segment_is_linear(s) || single);
                (
                    s,
                    f.def.bits_per_token,
                    schema.segments[s].start_bit,
                    schema.segments[s].word_range().len(),
                    if keep {
                        schema.stored_segments[s].word_range().len()
                    } else {
                        0
                    },
                    // A value alone in a hardened segment is only ever used in stored form.
                    !(hardener.transforms() && single),
                )
            });
            FieldPlan::new(
                seg,
                schema.salt.as_ref().is_some_and(|s| s.salted[fi]),
                engine::worth_caching(f.def.normaliser),
                interned_parts(schema, fi),
                engine::embedded_tokens(schema, fi),
            )
        })
        .collect();
    let mut plan = Plan {
        schema,
        map,
        hasher: Hasher::new(key, schema),
        sources,
        header,
        id_column,
        today: opts.today,
        opaque_ids: opts.opaque_ids,
        unmapped,
        segment_fields,
        fields,
        hardener,
        limits,
        trailing_delimiter: false,
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        opts.threads
    };

    let started = std::time::Instant::now();
    let read_err =
        |e: std::io::Error| Error::input(input, format!("line 0: cannot be read as CSV: {e}"));
    let words = schema.stored_words();
    let nseg = schema.segments.len();
    let ntok = schema.tokens.len();

    // Encoded rows are written straight into output space sized from the first block's rows
    // per byte (untouched space costs no memory); blocks past it bring their own.
    let first = blocks.next_block(Vec::new()).map_err(read_err)?;
    if let Some(b) = &first {
        let (columns, trailing) =
            engine::export_shape(&b.data[..b.len], map.delimiter, &plan.header);
        plan.header.truncate(columns);
        plan.trailing_delimiter = trailing;
    }
    let room = match &first {
        Some(b) if b.rows > 0 && b.len > 0 => {
            let est = input_bytes as f64 / b.len as f64 * b.rows as f64 * 1.25;
            (est.min(MAX_SHARED_ROWS as f64) as usize).max(b.rows)
        }
        _ => 0,
    };
    let mut filters = vec![0u64; room * words];
    let mut popcounts = vec![0u16; room * (nseg + 1)];
    let mut tokens = vec![0u64; room * ntok];

    // Reader on this thread, `threads` workers encoding blocks.
    let (out_tx, out_rx) = mpsc::channel::<BlockOut>();
    // Block buffers go back to the reader for reuse.
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
    let mut rows_read = 0u64;
    let mut block_rows: Vec<usize> = Vec::new();
    let read_result: Result<()> = std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job<'_>>(threads * 2);
        let job_rx = std::sync::Arc::new(Mutex::new(job_rx));
        for _ in 0..threads {
            let out_tx = out_tx.clone();
            let recycle_tx = recycle_tx.clone();
            let job_rx = job_rx.clone();
            let plan = &plan;
            scope.spawn(move || {
                let mut w = Worker::new(plan);
                let mut parser = RecordParser::new(plan.map.delimiter);
                loop {
                    let next = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = next else { return };
                    let (out, data) = run_block(&mut w, plan, job, &mut parser);
                    let _ = recycle_tx.send(data);
                    if out_tx.send(out).is_err() {
                        return;
                    }
                }
            });
        }
        drop(out_tx);
        let mut index = 0;
        let mut last_progress = 0u64;
        let (mut rest_f, mut rest_p, mut rest_t) = (
            filters.as_mut_slice(),
            popcounts.as_mut_slice(),
            tokens.as_mut_slice(),
        );
        let mut shared = true;
        let mut next = first;
        while let Some(block) = next.take() {
            let n = block.rows;
            let last = block.last;
            shared &= n * words <= rest_f.len()
                && n * (nseg + 1) <= rest_p.len()
                && n * ntok <= rest_t.len();
            let dest = if shared {
                let (f, rf) = std::mem::take(&mut rest_f).split_at_mut(n * words);
                let (p, rp) = std::mem::take(&mut rest_p).split_at_mut(n * (nseg + 1));
                let (t, rt) = std::mem::take(&mut rest_t).split_at_mut(n * ntok);
                (rest_f, rest_p, rest_t) = (rf, rp, rt);
                Some(Dest {
                    filters: f,
                    popcounts: p,
                    tokens: t,
                })
            } else {
                None
            };
            let first_row = rows_read + 1;
            rows_read += n as u64;
            block_rows.push(n);
            if job_tx
                .send(Job {
                    index,
                    first_row,
                    block,
                    dest,
                })
                .is_err()
            {
                break;
            }
            index += 1;
            if let Some(p) = opts.progress {
                if blocks.bytes - last_progress > (4 << 20) {
                    p(blocks.bytes);
                    last_progress = blocks.bytes;
                }
            }
            if last {
                break;
            }
            let buf = recycle_rx.try_recv().unwrap_or_default();
            next = blocks.next_block(buf).map_err(read_err)?;
        }
        drop(job_tx);
        Ok(())
    });
    drop(recycle_tx);
    read_result?;
    drop(blocks);
    let mut outs: Vec<BlockOut> = out_rx.iter().collect();
    outs.sort_by_key(|b| b.index);
    if let Some(p) = opts.progress {
        p(hashing.bytes);
    }
    if rows_read == 0 {
        return Err(Error::input(
            input,
            "has a header row but no data rows: is the export empty?",
        ));
    }
    if outs.len() != block_rows.len() || outs.iter().zip(&block_rows).any(|(o, &n)| o.rows != n) {
        return Err(Error::input(
            input,
            "internal error: rows were lost between reading and encoding; please report this",
        ));
    }
    let input_sha256 = hex::encode(hashing.ctx.finish().as_ref());
    let read_and_encode = started.elapsed().as_secs_f64();

    // Assemble in row order; duplicates of a record id are rejected (first occurrence wins).
    let own_ids: fn(&BlockOut) -> &IdList = if plan.opaque_ids {
        |b| &b.original_ids
    } else {
        |b| &b.ids
    };
    let duplicate_of = duplicates(&outs, own_ids, |b, e| b.id_hashes[e]);
    if plan.opaque_ids && opaque_refs_collide(&outs, &duplicate_of) {
        return Err(Error::input(
            input,
            "two record ids map to the same opaque reference (a 64-bit collision); \
             re-run without --opaque-ids and report this",
        ));
    }
    // At most this many rows and id bytes are kept (duplicates are not).
    let rows_out = outs.iter().map(|b| b.ids.len()).sum::<usize>();
    let id_bytes_out = outs.iter().map(|b| b.ids.bytes.len()).sum::<usize>();

    // Move kept rows down into place (nothing moves when no row was rejected).
    let mut id_offsets = Vec::with_capacity(rows_out + 1);
    id_offsets.push(0u64);
    let mut id_bytes = Vec::with_capacity(id_bytes_out);
    let mut token_offsets = Vec::with_capacity(rows_out + 1);
    token_offsets.push(0u32);
    let mut rejects = Vec::new();
    let mut stats = plan.stats_template();
    let mut opaque_map = Vec::new();
    let id_col = plan.header[plan.id_column].clone();
    let (mut j, mut tj) = (0usize, 0usize); // rows and tokens kept so far
    let (mut region_rows, mut shared_done) = (0usize, false);
    let pw = nseg + 1;
    let mut multiline = Multiline::default();
    let mut non_ascii_read = 0u64;
    let mut lossy_names = 0u64;
    for b in &outs {
        multiline.add(&b.multiline);
        non_ascii_read += b.non_ascii_read;
        lossy_names += b.lossy_names;
    }
    for (b, dups) in outs.into_iter().zip(duplicate_of) {
        for (s, bs) in stats.iter_mut().zip(&b.stats) {
            s.present += bs.present;
            s.missing += bs.missing;
            for (k, v) in &bs.invalid {
                *s.invalid.entry(k.clone()).or_default() += v;
            }
        }
        rejects.extend(b.rejects);
        let BlockOut {
            rows,
            ids: bids,
            original_ids,
            offsets,
            lines,
            token_counts,
            own,
            first_row,
            ..
        } = b;
        if own.is_some() && !shared_done {
            filters.truncate(j * words);
            popcounts.truncate(j * pw);
            tokens.truncate(tj);
            shared_done = true;
        }
        let mut dup_iter = dups.into_iter().peekable();
        let mut t_src = 0usize; // token offset within the block's token space
        for e in 0..bids.len() {
            let id = bids.get(e);
            let tc = usize::from(token_counts[e]);
            if let Some((_, first)) = dup_iter.next_if(|&(de, _)| de == e) {
                rejects.push(Reject {
                    row: first_row + u64::from(offsets[e]),
                    line: lines[e],
                    column: Some(id_col.clone()),
                    field: None,
                    reason: "duplicate_record_id",
                    detail: format!("record id already used by row {first}"),
                    swallowed_lines: 0,
                });
                t_src += tc;
                continue;
            }
            if plan.opaque_ids {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                opaque_map.push((text(id), text(original_ids.get(e))));
            }
            match &own {
                None => {
                    let src = region_rows + e;
                    if src != j {
                        filters.copy_within(src * words..(src + 1) * words, j * words);
                        popcounts.copy_within(src * pw..(src + 1) * pw, j * pw);
                    }
                    let ts = region_rows * ntok + t_src;
                    if ts != tj {
                        tokens.copy_within(ts..ts + tc, tj);
                    }
                }
                Some(o) => {
                    filters.extend_from_slice(&o.filters[e * words..(e + 1) * words]);
                    popcounts.extend_from_slice(&o.popcounts[e * pw..(e + 1) * pw]);
                    tokens.extend_from_slice(&o.tokens[t_src..t_src + tc]);
                }
            }
            t_src += tc;
            j += 1;
            tj += tc;
            id_bytes.extend_from_slice(id);
            id_offsets.push(id_bytes.len() as u64);
            token_offsets.push(tj as u32);
        }
        region_rows += rows;
    }
    if !shared_done {
        filters.truncate(j * words);
        popcounts.truncate(j * pw);
        tokens.truncate(tj);
    }
    let records = Records {
        words,
        segments: nseg,
        id_offsets,
        id_bytes,
        filters,
        popcounts,
        token_offsets,
        tokens,
    };
    rejects.sort_by_key(|r| r.row);

    let mut reject_reasons = BTreeMap::new();
    for r in &rejects {
        *reject_reasons.entry(r.reason.to_string()).or_default() += 1;
    }
    if reject_reasons.get("empty_row") == Some(&rows_read) {
        return Err(Error::input(
            input,
            format!(
                "has a header row but no data rows, only {rows_read} empty row(s) (delimiters \
                 or spaces): is the export empty?"
            ),
        ));
    }
    let mut warnings: Vec<String> = schema
        .weaknesses()
        .into_iter()
        .map(|w| format!("schema {}: {w}", schema.origin))
        .collect();
    if let Some(s) = &schema.salt {
        if plan.unmapped.contains(&s.source.0) {
            warnings.push(format!(
                "the salt field {} is not in the column map: every record is encoded without a \
                 salt ({:?}), so its salted fields will not link with other agencies' salted ones",
                schema.fields[s.source.0].def.name, s.when_missing
            ));
        }
    }
    let bad_bytes = reject_reasons.get("invalid_encoding").copied().unwrap_or(0);
    let probe = &hashing.utf8;
    // Declared Windows-1252 but UTF-8: refused only when something the map reads (a mapped
    // value or a record id) is not ASCII, the only text the declared encoding changes.
    let encoding_mismatch = match map.encoding {
        TextEncoding::Windows1252 if probe.looks_utf8() && non_ascii_read > 0 => {
            Some(EncodingMismatch::Utf8DeclaredWindows1252)
        }
        TextEncoding::Utf8 | TextEncoding::Utf8Bom
            if bad_bytes > 0 && probe.looks_single_byte() =>
        {
            Some(EncodingMismatch::SingleByteDeclaredUtf8 {
                rejected: bad_bytes,
            })
        }
        _ => None,
    };
    if matches!(map.encoding, TextEncoding::Utf8 | TextEncoding::Utf8Bom) {
        if bad_bytes > 0 && encoding_mismatch.is_none() {
            warnings.push(format!(
                "{bad_bytes} row(s) rejected as invalid_encoding: bytes that are not valid \
                 UTF-8 (a damaged file, or exports of two encodings joined); their children are \
                 missing from the encoding"
            ));
        } else if bad_bytes == 0 && probe.looks_single_byte() {
            warnings.push(format!(
                "{} has bytes that are not valid UTF-8 in columns the map does not read: it is \
                 probably Windows-1252 (Excel's plain CSV), not UTF-8 as the column map {} \
                 declares. Nothing the map reads was affected; set encoding = \"windows-1252\" \
                 to read it as it is",
                input.display(),
                map.path.display()
            ));
        }
    }
    if map.encoding == TextEncoding::Windows1252 && probe.looks_utf8() && non_ascii_read == 0 {
        warnings.push(format!(
            "{} is valid UTF-8 with accented or other non-ASCII letters, but only in columns the \
             map does not read (or the header): it is probably UTF-8, not Windows-1252 as the \
             column map {} declares. Nothing the map reads was affected; set encoding = \
             \"utf-8\" so that a later export with accented names is read right",
            input.display(),
            map.path.display()
        ));
    }
    if encoding_mismatch == Some(EncodingMismatch::Utf8DeclaredWindows1252) {
        warnings.push(format!(
            "the column map {} declares encoding = \"windows-1252\", but the file is valid \
             UTF-8 with accented or other non-ASCII letters: it is almost certainly UTF-8, and \
             read as Windows-1252 those names are garbled (Zoë as ZoÃ«) and will not link. Set \
             encoding = \"utf-8\" and encode again",
            map.path.display()
        ));
    }
    // Exports end their last row with a line break; a transfer or export job that stopped
    // part-way leaves a file that does not, whose last row may be cut in a value (a postcode
    // `E` for `E1 6AN`), still with the right number of fields.
    // DOS-era exports end with Ctrl-Z (0x1A) after the last line break.
    let ends_with_line = match hashing.last {
        Some(b'\n' | b'\r') => true,
        Some(DOS_END) => matches!(hashing.before_last, Some(b'\n' | b'\r')),
        _ => false,
    };
    if rows_read > 0 && !ends_with_line {
        warnings.push(format!(
            "{} does not end with a line break: if the export or its transfer was cut short, \
             its last row (row {rows_read}) is incomplete and the rows after it are missing. \
             Check that the export is whole",
            input.display()
        ));
    }
    let quoted: Vec<&Reject> = rejects.iter().filter(|r| r.swallowed_lines > 0).collect();
    if let Some(first) = quoted.first() {
        let lines: u64 = quoted.iter().map(|r| r.swallowed_lines).sum();
        warnings.push(format!(
            "{} row(s) rejected as unclosed_quote, the first at line {}: a stray or unclosed \
             quote swallowed {lines} line(s) after it, which are not counted as rows (and count \
             as rejected towards --max-reject-rate); fix the quotes and export again",
            quoted.len(),
            first.line
        ));
    }
    if let Some(&dups) = reject_reasons.get("duplicate_record_id") {
        warnings.push(format!(
            "{dups} row(s) repeat the record id of an earlier row and were rejected as \
             duplicate_record_id: the first row of each id is the one encoded. If the export \
             lists a child's records oldest first (a history table), that is the oldest one \
             (an old address): export one row per child, the current one"
        ));
    }
    if let Some(first) = multiline.first_line {
        let head = format!(
            "{} encoded row(s) have quoted values in columns the map does not read that run over \
             {} line break(s), the first at line {first}",
            multiline.rows, multiline.lines
        );
        warnings.push(if multiline.row_like > 0 {
            format!(
                "{head}; {} of them hold a whole row's worth of delimiters after a line break, \
                 as a stray quote that swallowed the rows after it does. The rows on lines a \
                 stray quote swallowed are missing from the encoding, since rows read counts \
                 records, not lines: check the quotes from line {first}",
                multiline.row_like
            )
        } else {
            format!(
                "{head}: multi-line notes, or a stray quote, which leaves the rows on the lines \
                 it swallowed out of the encoding (rows read counts records, not lines). If the \
                 export has no multi-line values, check the quotes from line {first}"
            )
        });
    }
    warnings.extend(shared_values(schema, &records, &rejects));
    // A few are typing slips; more are an export that could not write accented letters.
    if lossy_names >= 3 {
        warnings.push(format!(
            "name values have `?` between letters or the replacement character U+FFFD \
             (`Bj?rn`; found {lossy_names} times, once per distinct value and worker): the export replaced letters it could not \
             write (Windows PowerShell 5.1's Export-Csv writes ASCII unless given -Encoding \
             UTF8; a conversion through a code page without them). Those names are read as two \
             parts and link less well: export the file as UTF-8"
        ));
    }
    for s in &stats {
        if s.column.is_some() {
            let rate = s.invalid_rate();
            // A date of birth, or the salt's field, counts most: rows without it lose their
            // date tokens, or have nothing to salt the salted fields with, and link poorly.
            let fi = schema.fields.iter().position(|f| f.def.name == s.field);
            let date = fi.is_some_and(|i| schema.fields[i].def.normaliser == Normaliser::Date);
            let salt = fi.is_some() && schema.salt.as_ref().is_some_and(|l| Some(l.source.0) == fi);
            // A sex code the map does not list is a gap in [sex_codes], not noise in the data.
            let sex = fi.is_some_and(|i| schema.fields[i].def.normaliser == Normaliser::Sex);
            let limit = if date || salt || sex { 0.02 } else { 0.2 };
            if rate > limit {
                let hint = invalid_hint(schema, &s.field);
                let cost = if salt {
                    format!(
                        "; those rows have no {} to salt the salted fields with, so they link \
                         poorly",
                        s.field
                    )
                } else if date {
                    format!("; those rows have no {} to link on", s.field)
                } else {
                    String::new()
                };
                warnings.push(format!(
                    "field {} (column `{}`) is invalid in {:.1} % of rows{hint}{cost}",
                    s.field,
                    s.column.as_deref().unwrap_or(""),
                    rate * 100.0
                ));
            }
        }
    }
    let report = EncodeReport {
        input: input.to_path_buf(),
        agency: map.agency.clone(),
        input_bytes: input_bytes.max(hashing.bytes),
        input_sha256,
        rows_read,
        encoded: records.len() as u64,
        rejected: rejects.len() as u64,
        reject_reasons,
        fields: stats,
        warnings,
        seconds: StageSeconds {
            read_and_encode,
            assemble: started.elapsed().as_secs_f64() - read_and_encode,
            write: 0.0,
        },
    };
    debug_assert_eq!(report.rows_read, report.encoded + report.rejected);

    Ok(Encoded {
        records,
        rejects,
        report,
        opaque_map,
        encoding_mismatch,
    })
}

/// What to check when a mapped field is mostly invalid.
pub fn invalid_hint(schema: &Schema, field: &str) -> &'static str {
    match schema
        .fields
        .iter()
        .find(|f| f.def.name == field)
        .map(|f| f.def.normaliser)
    {
        Some(Normaliser::Date) => ": check date_formats in the column map",
        Some(Normaliser::Sex) => ": check [sex_codes] in the column map",
        Some(Normaliser::NhsNumber | Normaliser::Upn) => {
            ": check that the column map points at the right column, and that the export writes \
             the numbers as text (a spreadsheet shows 9434765919 as 9.43E+09, which has lost \
             digits)"
        }
        _ => ": check that the column map points at the right column",
    }
}

/// Warnings for keyed tokens of a whole value (a part not reduced to a year, initial, soundex
/// or district: `nhs`, `upn`, `dob`, `postcode_yob`) that one value gives to at least 1 % of the
/// records, and at least 20: one child's identifier, date of birth or address is on no more than
/// a few rows of an export, so that many is a placeholder (a dummy NHS number, 01/01/2000, the
/// office's postcode), which makes unrelated children look alike to the matcher. Found from a
/// sample of at most 20,000 records, then counted exactly; the value itself is never known here
/// (the tokens are keyed), so the warning names the first row that has it.
pub fn shared_values(schema: &Schema, records: &Records, rejects: &[Reject]) -> Vec<String> {
    const SAMPLE: usize = 20_000;
    let n = records.len();
    let limit = (n / 100).max(20);
    let whole: Vec<bool> = schema
        .tokens
        .iter()
        .map(|t| t.parts.iter().any(|p| p.1 == Transform::Value))
        .collect();
    if n < limit || !whole.contains(&true) {
        return Vec::new();
    }
    let is_whole = |t: &u64| whole.get(crate::tokens::token_kind(*t)) == Some(&true);
    let step = n.div_ceil(SAMPLE);
    let mut sample: Vec<u64> = (0..n)
        .step_by(step)
        .flat_map(|i| records.tokens_of(i).iter().copied())
        .filter(is_whole)
        .collect();
    sample.sort_unstable();
    // Generous: a value at the limit has about limit / step copies in the sample.
    let candidates: Vec<u64> = sample
        .chunk_by(|a, b| a == b)
        .filter(|run| run.len() * step * 2 >= limit)
        .map(|run| run[0])
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<(usize, Option<usize>)> = vec![(0, None); candidates.len()];
    for i in 0..n {
        for t in records.tokens_of(i) {
            if let Some(c) = candidates.iter().position(|x| x == t) {
                found[c].0 += 1;
                found[c].1.get_or_insert(i);
            }
        }
    }
    // Per token kind: values over the limit, their records, and the commonest (count, row).
    let mut kinds: BTreeMap<usize, (usize, usize, (usize, u64))> = BTreeMap::new();
    for (&token, (count, first)) in candidates.iter().zip(found) {
        let (Some(first), true) = (first, count >= limit) else {
            continue;
        };
        let row = row_of_record(first, rejects);
        let k = kinds
            .entry(crate::tokens::token_kind(token))
            .or_insert((0, 0, (0, 0)));
        k.0 += 1;
        k.1 += count;
        if count > k.2 .0 {
            k.2 = (count, row);
        }
    }
    let pct = |c: usize| c as f64 * 100.0 / n as f64;
    kinds
        .into_iter()
        .map(|(kind, (values, total, (top, row)))| {
            let def = &schema.tokens[kind];
            let parts = schema
                .def
                .tokens
                .iter()
                .find(|d| d.name == def.name)
                .map_or_else(String::new, |d| d.parts.join(" + "));
            let head = if values == 1 {
                format!(
                    "{top} records ({:.1} %) share one value of {parts} (keyed token `{}`), \
                     the first at row {row}",
                    pct(top),
                    def.name
                )
            } else {
                format!(
                    "{values} values of {parts} (keyed token `{}`) are each shared by at least \
                     1 % of the records ({total} records, {:.1} %, in all; the commonest by \
                     {top}, the first at row {row})",
                    def.name,
                    pct(total)
                )
            };
            format!(
                "{head}: one child's value is on a few rows at most, so this is probably a \
                 placeholder (a dummy NHS number, a default date of birth or postcode), which \
                 makes unrelated children look alike to the matcher. Check those rows of the \
                 export; list the placeholder under [missing] extra in the column map to read it \
                 as missing"
            )
        })
        .collect()
}

/// The row of the `i`-th record (from 0), given the run's `rejects` sorted by row: every row is
/// either a record, in order, or rejected once.
fn row_of_record(i: usize, rejects: &[Reject]) -> u64 {
    let mut row = i as u64 + 1;
    for r in rejects {
        if r.row > row {
            break;
        }
        row += 1;
    }
    row
}

/// When `field` is the schema's salt source: what its loss costs the salted fields, as a
/// parenthesis for a message.
pub fn salt_loss(schema: &Schema, field: &str) -> Option<String> {
    let salt = schema.salt.as_ref()?;
    if schema.fields[salt.source.0].def.name != field {
        return None;
    }
    let salted: Vec<&str> = schema
        .fields
        .iter()
        .zip(&salt.salted)
        .filter(|(_, &s)| s)
        .map(|(f, _)| f.def.name.as_str())
        .collect();
    Some(format!(
        " (it is also the salt: a row without it has {} hashed without a salt, unlike the same \
         values in other rows)",
        salted.join(", ")
    ))
}

fn missing_column_message(missing: &[&str], header: &[String], map: &ColumnMap) -> String {
    let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
    let what = if missing.len() == 1 {
        format!("the header has no column {}", names[0])
    } else {
        format!("the header has no columns {}", names.join(", "))
    };
    let map_path = map.path.display();
    // A line before the header that exporters write.
    let first = header.first().map_or("", String::as_str);
    if first.starts_with("#TYPE") {
        return format!(
            "{what} (named in {map_path}): line 1 is Windows PowerShell's type line (`#TYPE …`), \
             not the header: export with `Export-Csv -NoTypeInformation` (PowerShell 6 and \
             later leave it out), or delete the line"
        );
    }
    if header.len() <= 2 && first.to_ascii_lowercase().starts_with("sep=") {
        return format!(
            "{what} (named in {map_path}): line 1 is Excel's `sep=` line, not the header: \
             delete that line (and check that `delimiter` in the column map is the one it names)"
        );
    }
    // A wrong delimiter leaves the whole line in one cell.
    if header.len() == 1 && missing.len() > 1 {
        let seen = [b',', b';', b'\t', b'|']
            .into_iter()
            .find(|&d| d != map.delimiter && header[0].as_bytes().contains(&d));
        if let Some(d) = seen {
            return format!(
                "{what} (named in {map_path}): line 1 is one column here, but holds `{}` \
                 characters: is the file separated by `{}` rather than `{}`? Check `delimiter` \
                 in the column map",
                (d as char).escape_default(),
                (d as char).escape_default(),
                (map.delimiter as char).escape_default()
            );
        }
    }
    // The cells are only listed when line 1 is evidently a header: the file may have no header
    // row, or a stray quote may have joined it to the next line, and then its cells are a
    // child's record (which would also go into the audit log). A header has at least one of
    // the map's columns, or at least nothing that looks like a value.
    let mapped_found = header
        .iter()
        .any(|h| map.columns.values().any(|c| c == h) || *h == map.record_id);
    let value_like = |h: &str| {
        !looks_like_a_column_name(h)
            || matches!(normalise::postcode(h), Ok(Some(_)))
            || matches!(normalise::nhs_number(h), Ok(Some(_)))
            || map.date_formats.iter().any(|f| f.parse(h).is_some())
    };
    // Line 1 may run into a record (its line break lost, or a stray quote) where a cell looks
    // like a value. Then any of its cells may be a child's name (names look like column names,
    // and the record may start with them), so only the cells the map names are shown, and
    // those differing from a missing name only in case or spaces.
    let first_value = header.iter().position(|h| value_like(h));
    if !mapped_found && first_value.is_some() {
        return format!(
            "{what} (named in {map_path}), and line 1 looks like data rather than a header (it \
             has cells with digits, line breaks or other marks of values), so its cells are not \
             shown: export the file with a header row, and check `delimiter` in the column map"
        );
    }
    // Case, spaces (no-break ones too) and invisible characters aside.
    let key = |s: &str| -> String {
        s.chars()
            .filter(|&c| !c.is_whitespace() && !normalise::is_ignorable(c))
            .flat_map(char::to_lowercase)
            .collect()
    };
    // Spaces other than the plain one and invisible characters, written out.
    let shown_exactly = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c != ' ' && (c.is_whitespace() || c.is_control() || normalise::is_ignorable(c)) {
                    format!("\\u{{{:04X}}}", u32::from(c))
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let near_miss = |h: &str| missing.iter().find(|m| key(h) == key(m));
    let mapped = |h: &str| map.columns.values().any(|c| c == h) || h == map.record_id;
    let shown = |h: &str| first_value.is_none() || mapped(h) || near_miss(h).is_some();
    let mut found: Vec<String> = header
        .iter()
        .filter(|h| shown(h))
        .map(|h| format!("`{}`", shown_exactly(h)))
        .collect();
    if let Some(at) = first_value {
        let hidden = header.iter().filter(|h| !shown(h)).count();
        let why = if header[at].contains(['\n', '\r']) {
            "runs over several lines: an unclosed quote?"
        } else {
            "looks like a value (digits or other marks of data): is the line break after the \
             header missing, or a quote unclosed?"
        };
        found.push(format!(
            "and {hidden} more not shown, as line 1 may run into a record: its column {} {why}",
            at + 1
        ));
    }
    // Names are matched exactly; point at a near miss.
    let near: Vec<String> = missing
        .iter()
        .filter_map(|m| {
            header
                .iter()
                .find(|h| key(h) == key(m))
                .map(|h| format!("`{}` for `{m}`", shown_exactly(h)))
        })
        .collect();
    let hint = if near.is_empty() {
        String::new()
    } else {
        format!(
            " (column names must match exactly, case, spaces and invisible characters included: \
             the header has {})",
            near.join(", ")
        )
    };
    format!(
        "{what} (named in {map_path}){hint}; columns found: {}",
        found.join(", ")
    )
}

/// Whether a header cell may be shown in a message: short, on one line, and without the runs of
/// digits that dates and identifiers have.
fn looks_like_a_column_name(h: &str) -> bool {
    let digits = h.bytes().filter(u8::is_ascii_digit).count();
    h.chars().count() <= 40 && digits <= 2 && !h.contains(['\n', '\r', '"', ';', '\t', '|'])
}

#[cfg(test)]
mod utf8_probe_tests {
    use super::Utf8Probe;

    fn probe(chunks: &[&[u8]]) -> bool {
        let mut p = Utf8Probe::default();
        for c in chunks {
            p.feed(c);
        }
        p.looks_utf8()
    }

    #[test]
    fn utf8_is_recognised_whatever_the_reads_cut() {
        let text = "id,name\n1,Zoë\n2,Łukasz\n".as_bytes();
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert!(probe(&[a, b]), "cut at {cut}");
        }
        // Windows-1252: é is the single byte 0xE9.
        assert!(!probe(&[b"id,name\n1,Ren\xe9e\n"]));
        // Plain ASCII says nothing either way.
        assert!(!probe(&[b"id,name\n1,Zoe\n"]));
        // A character cut off by the end of the file is not valid UTF-8.
        assert!(!probe(&[b"1,Zo\xc3"]));
    }

    #[test]
    fn a_single_byte_encoding_is_told_from_damaged_utf8() {
        let single = |chunks: &[&[u8]]| {
            let mut p = Utf8Probe::default();
            for c in chunks {
                p.feed(c);
            }
            p.looks_single_byte()
        };
        // Windows-1252 (é and ë single bytes), wherever the reads cut.
        let text = b"id,name\n1,Ren\xe9e\n2,Zo\xeb\n3,Jack\n";
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert!(single(&[a, b]), "cut at {cut}");
        }
        // UTF-8 with one bad byte: damaged, not another encoding.
        assert!(!single(&["1,Zoë\n2,Ja".as_bytes(), b"\xffck\n"]));
        // Windows-1252 after a UTF-8 byte-order mark, or with one UTF-8 character pasted in.
        assert!(single(&[b"\xEF\xBB\xBFid,name\n1,Ren\xe9e\n"]));
        assert!(single(&[
            "1,Ren\u{e9}e".as_bytes(),
            b"\n2,Ren\xe9e\n3,Zo\xeb\n"
        ]));
        // A character cut off by the end of the file: no evidence.
        assert!(!single(&[b"1,Zoe\n2,Zo\xc3"]));
        // Valid UTF-8 and plain ASCII: neither.
        assert!(!single(&["1,Zoë\n".as_bytes()]));
        assert!(!single(&[b"1,Zoe\n"]));
        // Invalid bytes are all counted, not just the first.
        let mut p = Utf8Probe::default();
        p.feed(b"\xe9,\xeb,\xff");
        assert_eq!(p.invalid, 3);
    }
}

#[cfg(test)]
mod duplicate_tests {
    use super::*;

    /// A block of encoded rows with record ids `ids` (row offsets 0, 1, …).
    fn block(first_row: u64, ids: &[&str]) -> BlockOut {
        let mut list = IdList::default();
        for id in ids {
            list.push(id.as_bytes());
        }
        BlockOut {
            index: 0,
            first_row,
            rows: ids.len(),
            id_hashes: ids
                .iter()
                .map(|id| table::hash_bytes(id.as_bytes()))
                .collect(),
            ids: list,
            original_ids: IdList::default(),
            offsets: (0..ids.len() as u32).collect(),
            lines: vec![0; ids.len()],
            token_counts: vec![0; ids.len()],
            tokens: 0,
            rejects: Vec::new(),
            stats: Vec::new(),
            multiline: Multiline::default(),
            non_ascii_read: 0,
            lossy_names: 0,
            own: None,
        }
    }

    fn blocks() -> Vec<BlockOut> {
        vec![
            block(1, &["A", "B", "A", "C"]),
            block(5, &["D", "A", "B", "B"]),
        ]
    }

    fn ids(b: &BlockOut) -> &IdList {
        &b.ids
    }

    /// Every later occurrence of an id names the row of its first one, in row order per block.
    const EXPECTED: [&[(usize, u64)]; 2] = [&[(2, 1)], &[(1, 1), (2, 2), (3, 2)]];

    #[test]
    fn later_occurrences_of_an_id_point_at_the_first() {
        assert_eq!(duplicates(&blocks(), ids, |b, e| b.id_hashes[e]), EXPECTED);
    }

    #[test]
    fn ids_whose_hashes_collide_are_told_apart_by_their_bytes() {
        assert_eq!(duplicates(&blocks(), ids, |_, _| 7), EXPECTED);
    }

    #[test]
    fn a_shared_opaque_reference_is_a_collision_unless_the_ids_repeat() {
        let mut bs = blocks();
        for b in &mut bs {
            // Each row's opaque reference derives from its own id, as the encoder's do.
            b.original_ids = std::mem::take(&mut b.ids);
            for e in 0..b.original_ids.len() {
                let r = format!("ref-{}", String::from_utf8_lossy(b.original_ids.get(e)));
                b.ids.push(r.as_bytes());
            }
        }
        fn original(b: &BlockOut) -> &IdList {
            &b.original_ids
        }
        let dups = duplicates(&bs, original, |b, e| b.id_hashes[e]);
        assert_eq!(dups, EXPECTED);
        // References repeat only with their ids: no collision.
        assert!(!opaque_refs_collide(&bs, &dups));
        // "C" (block 0, row 3) gets the reference of "D", another id: a collision.
        bs[0].ids = IdList::default();
        for r in ["ref-A", "ref-B", "ref-A", "ref-D"] {
            bs[0].ids.push(r.as_bytes());
        }
        assert!(opaque_refs_collide(&bs, &dups));
    }
}

#[cfg(test)]
mod normalise_value_tests {
    use super::*;

    /// A zero-width space or no-break space pasted into a sex code is no part of it (as for
    /// identifiers and dates); an empty code of only such characters is missing.
    #[test]
    fn a_sex_code_is_read_without_invisible_characters() {
        let map = ColumnMap::from_toml(
            "agency='a'\nrecord_id='id'\n[columns]\nsex='S'\n",
            Path::new("m"),
        )
        .unwrap();
        let sex = |t: &str| normalise_value(Normaliser::Sex, t, &map, Date::today_utc());
        assert_eq!(sex("\u{200b}M"), Ok(Some(Value::Sex(Sex::M))));
        assert_eq!(sex("F\u{feff} "), Ok(Some(Value::Sex(Sex::F))));
        assert_eq!(sex("\u{200b}"), Ok(None));
        assert_eq!(sex("Q"), Err(Invalid::UnknownCode));
    }
}
