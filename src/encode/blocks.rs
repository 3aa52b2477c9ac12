//! Splitting CSV input into blocks of whole records, so that workers can parse blocks in
//! parallel with exactly the results (fields, line numbers) of one sequential `csv` reader.
//!
//! A block always ends right after the terminator byte that ends a record, which is where a
//! sequential `csv_core` reader is back in its start-of-record state (a `\n` after a `\r`, or a
//! blank line, is skipped in that state exactly as it would be after the `\r`). Where the cut
//! goes: if a block holds no quote character (and the delimiter is not a line break), every
//! `\r` or `\n` ends a record or a blank line, so the cut is found by a byte scan and the
//! records are the runs of bytes other than `\r` and `\n`. Otherwise the reader runs `csv_core`
//! over the block to find the cut and count the records (slower, always right).
//!
//! Workers read a block's records the same two ways ([`BlockRecords`]): a quote-free block's
//! records are split on the delimiter where they lie, and its fields stay slices of the block;
//! a block with quotes goes through `csv_core`, whose unquoted fields are copied out.

use std::io::Read;

/// Bytes read per block (grows for records longer than this).
pub const BLOCK_BYTES: usize = 1 << 20;

fn is_term(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// A `csv_core` reader configured like the `csv` crate's reader with `delimiter`, in the
/// start-of-record state, with the UTF-8 byte-order-mark check already spent (a block may start
/// with those bytes as data) and its line counter at `line`.
pub fn core_reader(delimiter: u8, line: u64) -> csv_core::Reader {
    let mut r = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
    // A blank line is skipped in the start state; reading one marks the reader as started.
    let (mut out, mut ends) = ([0u8; 1], [0usize; 1]);
    let _ = r.read_record(b"\n", &mut out, &mut ends);
    r.set_line(line);
    r
}

/// Parses one record at a time out of a block.
pub struct RecordParser {
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    nend: usize,
    /// The record's [`Rec::bounds`].
    bounds: Vec<usize>,
}

/// One parsed record: its fields, as the `csv` crate's `ByteRecord` would hold them.
pub struct Rec<'a> {
    /// The fields' bytes: `csv_core`'s output (fields back to back), or the record's own bytes
    /// in a quote-free block (fields apart by a delimiter byte).
    out: &'a [u8],
    /// Where each field starts and ends in `out`, field after field (whichever way the fields
    /// lie, a field is one range: no test for the first one or for a gap).
    bounds: &'a [usize],
}

impl<'a> Rec<'a> {
    /// Line breaks inside the record's fields (quoted; `\r\n` counts once).
    pub fn line_breaks(&self) -> u64 {
        (0..self.len()).map(|i| line_breaks(self.get(i))).sum()
    }

    /// Lines a stray quote swallowed into the record: its line breaks, less one that ends its
    /// last field. That one is the file's last line break, taken in by a quote left open to
    /// the end of the file, and no line follows it.
    pub fn swallowed_lines(&self) -> u64 {
        let last = self.len().checked_sub(1).map(|i| self.get(i));
        let trailing = last.is_some_and(|f| matches!(f.last(), Some(b'\n' | b'\r')));
        self.line_breaks() - u64::from(trailing)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.bounds.len() / 2
    }

    /// Field `i` (which must be < `len()`).
    pub fn get(&self, i: usize) -> &'a [u8] {
        match self.bounds.get(2 * i..2 * i + 2) {
            Some(&[start, end]) => &self.out[start..end],
            _ => panic!("field {i} of a record of {} fields", self.len()),
        }
    }
}

impl RecordParser {
    /// A parser for blocks of a file with `delimiter`.
    pub fn new(delimiter: u8) -> RecordParser {
        Self::with_core(core_reader(delimiter, 1))
    }

    /// A parser for the start of a file: a leading UTF-8 byte-order mark is skipped, as the
    /// `csv` crate does.
    pub fn file_start(delimiter: u8) -> RecordParser {
        Self::with_core(csv_core::ReaderBuilder::new().delimiter(delimiter).build())
    }

    fn with_core(core: csv_core::Reader) -> RecordParser {
        RecordParser {
            core,
            out: vec![0; 4096],
            ends: vec![0; 64],
            nend: 0,
            bounds: Vec::new(),
        }
    }

    /// Starts on a new block whose first byte is on line `line`.
    pub fn start(&mut self, delimiter: u8, line: u64) {
        self.core = core_reader(delimiter, line);
    }

    /// The current line (where the next record is reported to start).
    pub fn line(&self) -> u64 {
        self.core.line()
    }

    /// Reads the next record from `input` (`final_block`: the input ends there, so a last
    /// record without a terminator still counts). Returns the bytes consumed and the record,
    /// or `None` at the end of the input.
    pub fn next<'s>(&'s mut self, input: &[u8], final_block: bool) -> (usize, Option<Rec<'s>>) {
        use csv_core::ReadRecordResult::*;
        let (mut nin, mut nout) = (0usize, 0usize);
        self.nend = 0;
        loop {
            let rest = &input[nin..];
            if rest.is_empty() && !final_block {
                // Blocks end right after a record terminator: nothing is pending.
                return (nin, None);
            }
            let (res, i, o, e) =
                self.core
                    .read_record(rest, &mut self.out[nout..], &mut self.ends[self.nend..]);
            nin += i;
            nout += o;
            self.nend += e;
            match res {
                InputEmpty => {
                    if rest.is_empty() {
                        return (nin, None);
                    }
                }
                OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                Record => {
                    self.bounds.clear();
                    let mut start = 0;
                    for &end in &self.ends[..self.nend] {
                        self.bounds.extend([start, end]);
                        start = end;
                    }
                    return (
                        nin,
                        Some(Rec {
                            out: &self.out[..nout],
                            bounds: &self.bounds,
                        }),
                    );
                }
                End => return (nin, None),
            }
        }
    }
}

/// Records parsed ahead of encoding, so that a batch of rows can have its cache lookups in
/// flight together: each record's fields, and the line it starts on. The fields are slices of
/// the block `'a` (quote-free blocks) or copies of `csv_core`'s output held here.
#[derive(Default)]
pub struct RecordBatch<'a> {
    /// The block that borrowed records lie in.
    block: &'a [u8],
    /// The records lie in `block` (fields apart by a delimiter), else in `out`.
    borrowed: bool,
    /// Copied records' bytes.
    out: Vec<u8>,
    /// The records' [`Rec::bounds`], relative to each record's first byte.
    bounds: Vec<usize>,
    records: Vec<Span>,
}

/// Where a record of a [`RecordBatch`] lies.
struct Span {
    /// Its bytes, in the block or in `out`.
    bytes: std::ops::Range<usize>,
    /// Its fields' bounds in `bounds`.
    bounds: std::ops::Range<usize>,
    /// Line it starts on.
    line: u64,
}

impl<'a> RecordBatch<'a> {
    /// Empties the batch; the records pushed next are copies.
    pub fn clear(&mut self) {
        self.borrowed = false;
        self.out.clear();
        self.bounds.clear();
        self.records.clear();
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends a copy of `rec`, which starts on `line` (the batch must hold copies).
    pub fn push(&mut self, rec: &Rec<'_>, line: u64) {
        debug_assert!(!self.borrowed);
        let (out, bounds) = (self.out.len(), self.bounds.len());
        self.out.extend_from_slice(rec.out);
        self.bounds.extend_from_slice(rec.bounds);
        self.records.push(Span {
            bytes: out..self.out.len(),
            bounds: bounds..self.bounds.len(),
            line,
        });
    }

    /// Empties the batch; the records pushed next are slices of `block`.
    fn borrow(&mut self, block: &'a [u8]) {
        self.clear();
        self.block = block;
        self.borrowed = true;
    }

    /// Appends the record `block[start..end]`, which starts on `line`, whose fields' bounds
    /// (relative to `start`) were pushed since `bounds` held `first` of them.
    fn push_slice(&mut self, start: usize, end: usize, first: usize, line: u64) {
        debug_assert!(self.borrowed);
        self.records.push(Span {
            bytes: start..end,
            bounds: first..self.bounds.len(),
            line,
        });
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Rec<'_> {
        let s = &self.records[i];
        let src: &[u8] = if self.borrowed { self.block } else { &self.out };
        Rec {
            out: &src[s.bytes.clone()],
            bounds: &self.bounds[s.bounds.clone()],
        }
    }

    /// Whether a record may hold a line break in a field: only one read through `csv_core`
    /// can (a quote-free block's records end at every line break).
    pub fn may_hold_line_breaks(&self) -> bool {
        !self.borrowed
    }

    /// The line record `i` starts on.
    pub fn line(&self, i: usize) -> u64 {
        self.records[i].line
    }
}

/// Reads a block's records into [`RecordBatch`]es, with the fields and lines of one sequential
/// `csv_core` reader: a quote-free block by splitting its records where they lie, a block with
/// quotes through `csv_core`.
pub struct BlockRecords<'a> {
    /// The block's records.
    data: &'a [u8],
    /// Where the next record (or the blank lines before it) starts.
    at: usize,
    /// The input ends with the block.
    last: bool,
    delimiter: u8,
    /// See [`Block::quote_free`].
    quote_free: bool,
    /// Quote-free blocks: `csv_core`'s line counter at `at`, that is where it reports the next
    /// record to start.
    line: u64,
    /// Quote-free blocks: the delimiters and line breaks from `at` on.
    hits: Hits,
}

impl<'a> BlockRecords<'a> {
    /// The records of `block`; `parser` is set to its start (for blocks with quotes).
    pub fn new(block: &'a Block, delimiter: u8, parser: &mut RecordParser) -> Self {
        parser.start(delimiter, block.first_line);
        let data = &block.data[..block.len];
        BlockRecords {
            data,
            at: 0,
            last: block.last,
            delimiter,
            quote_free: block.quote_free,
            line: block.first_line,
            hits: Hits::new(data, delimiter),
        }
    }

    /// Empties `batch` and fills it with the next records, at most `max`; `parser` is the one
    /// given to [`BlockRecords::new`].
    pub fn fill(&mut self, batch: &mut RecordBatch<'a>, parser: &mut RecordParser, max: usize) {
        if self.quote_free {
            self.fill_quote_free(batch, max);
        } else {
            self.fill_with_core(batch, parser, max);
        }
    }

    fn fill_with_core(
        &mut self,
        batch: &mut RecordBatch<'a>,
        parser: &mut RecordParser,
        max: usize,
    ) {
        batch.clear();
        while batch.len() < max {
            let rest = &self.data[self.at..];
            let line = parser.line() + leading_line_feeds(rest);
            let (used, rec) = parser.next(rest, self.last);
            self.at += used;
            match rec {
                Some(rec) => batch.push(&rec, line),
                None => break,
            }
        }
    }

    /// A record is a maximal run of bytes other than `\r` and `\n`, its fields what the
    /// delimiters in it separate. Its line counts the `\n` bytes before its first byte,
    /// including those of the blank lines (and of the `\r\n`) before it, as the `csv_core`
    /// path does.
    fn fill_quote_free(&mut self, batch: &mut RecordBatch<'a>, max: usize) {
        batch.borrow(self.data);
        let data = self.data;
        let mut blank_lines = 0;
        while batch.len() < max && self.at < data.len() {
            let start = self.at;
            let mut hit = self.hits.next(data);
            if hit == start && data[hit] != self.delimiter {
                // A blank line's byte.
                blank_lines += u64::from(data[hit] == b'\n');
                self.at += 1;
                continue;
            }
            let first = batch.bounds.len();
            let mut field = 0;
            while hit < data.len() && data[hit] == self.delimiter {
                batch.bounds.extend([field, hit - start]);
                field = hit - start + 1;
                hit = self.hits.next(data);
            }
            batch.bounds.extend([field, hit - start]);
            self.line += blank_lines;
            batch.push_slice(start, hit, first, self.line);
            blank_lines = 0;
            self.at = hit;
            if let Some(&t) = data.get(hit) {
                self.line += u64::from(t == b'\n');
                self.at += 1;
            }
        }
    }
}

/// The `\n` bytes in the run of line-end bytes that `data` starts with: the blank lines (or
/// the rest of a `\r\n`) that `csv_core` skips before a record, and counts only as it reads
/// them. A record's line is `csv_core`'s count before it plus these: the line its first byte
/// is on, whatever the line ends.
fn leading_line_feeds(data: &[u8]) -> u64 {
    data.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// Line breaks in `field`: `\n`, `\r\n` and a lone `\r` count one each.
pub fn line_breaks(field: &[u8]) -> u64 {
    let lf = memchr::memchr_iter(b'\n', field).count();
    let lone_cr = memchr::memchr_iter(b'\r', field)
        .filter(|&i| field.get(i + 1) != Some(&b'\n'))
        .count();
    (lf + lone_cr) as u64
}

/// Bytes `0x7f` repeated: the low seven bits of each byte of a word.
const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);

/// The byte `b` in every byte of a word.
const fn splat(b: u8) -> u64 {
    b as u64 * 0x0101_0101_0101_0101
}

/// Each byte of `w` that differs from the byte `b` repeats (`splat`), as its high bit; the
/// other bits are noise.
fn bytes_differ(w: u64, b: u64) -> u64 {
    let x = w ^ b;
    // The high bit of a byte is clear only where `x` is 0 (no carry crosses bytes).
    ((x & LOW7) + LOW7) | x
}

/// Finds the delimiters and line breaks of a quote-free block in order, eight bytes at a time
/// (one `memchr` call per field costs more than the field on short fields).
struct Hits {
    /// Offset of the word in `mask`.
    word: usize,
    /// The high bit of each byte of the word that is a hit not yet taken.
    mask: u64,
    delimiter: u64,
}

impl Hits {
    fn new(data: &[u8], delimiter: u8) -> Hits {
        let mut h = Hits {
            word: 0,
            mask: 0,
            delimiter: splat(delimiter),
        };
        h.mask = h.word_mask(data);
        h
    }

    /// Hits in the word at `self.word` (none past the end of `data`).
    fn word_mask(&self, data: &[u8]) -> u64 {
        let (w, keep) = match data.get(self.word..self.word + 8) {
            Some(b) => (u64::from_le_bytes(b.try_into().unwrap_or_default()), !0),
            None => {
                let rest = data.get(self.word..).unwrap_or_default();
                let mut b = [0u8; 8];
                b[..rest.len()].copy_from_slice(rest);
                (u64::from_le_bytes(b), (1u64 << (8 * rest.len())) - 1)
            }
        };
        let differ = bytes_differ(w, self.delimiter)
            & bytes_differ(w, splat(b'\r'))
            & bytes_differ(w, splat(b'\n'));
        !(differ | LOW7) & keep
    }

    /// Offset of the next hit, or `data.len()` if there is none.
    fn next(&mut self, data: &[u8]) -> usize {
        while self.mask == 0 {
            if self.word + 8 >= data.len() {
                return data.len();
            }
            self.word += 8;
            self.mask = self.word_mask(data);
        }
        let at = self.word + (self.mask.trailing_zeros() / 8) as usize;
        self.mask &= self.mask - 1;
        at
    }
}

/// A block of whole records.
pub struct Block {
    /// Block buffer; the records are `data[..len]`.
    pub data: Vec<u8>,
    /// Bytes of records in `data`.
    pub len: usize,
    /// Line on which a record starting at the block's first byte is reported.
    pub first_line: u64,
    /// Records in the block.
    pub rows: usize,
    /// The input ends with this block.
    pub last: bool,
    /// The block holds no quote character and the delimiter is not a line break: its records
    /// are the runs of bytes other than `\r` and `\n`, its fields whatever the delimiter
    /// separates.
    pub quote_free: bool,
}

/// Reads blocks of whole records.
pub struct BlockReader<R> {
    inner: R,
    delimiter: u8,
    carry: Vec<u8>,
    eof: bool,
    line: u64,
    block_bytes: usize,
    /// Bytes read so far.
    pub bytes: u64,
}

impl<R: Read> BlockReader<R> {
    /// Blocks of `inner`, whose first byte is on line `line`; `carry` holds bytes already read.
    pub fn new(inner: R, delimiter: u8, carry: Vec<u8>, line: u64) -> Self {
        BlockReader {
            inner,
            delimiter,
            carry,
            eof: false,
            line,
            block_bytes: BLOCK_BYTES,
            bytes: 0,
        }
    }

    /// Reads the header (the first record, after a possible byte-order mark). `None` if the
    /// input holds no record at all.
    pub fn read_header(&mut self) -> std::io::Result<Option<Vec<Vec<u8>>>> {
        let mut buf = std::mem::take(&mut self.carry);
        let mut len = buf.len();
        let mut target = self.block_bytes;
        loop {
            buf.resize(target.max(len), 0);
            self.fill(&mut buf, &mut len)?;
            let mut p = RecordParser::file_start(self.delimiter);
            let (n, rec) = p.next(&buf[..len], self.eof);
            if let Some(rec) = rec {
                let fields = (0..rec.len()).map(|i| rec.get(i).to_vec()).collect();
                self.line = p.line();
                self.carry.extend_from_slice(&buf[n..len]);
                return Ok(Some(fields));
            }
            if self.eof {
                return Ok(None);
            }
            target *= 2;
        }
    }

    /// Reads until `buf[..*len]` is full or the input ends.
    fn fill(&mut self, buf: &mut [u8], len: &mut usize) -> std::io::Result<()> {
        while *len < buf.len() && !self.eof {
            match self.inner.read(&mut buf[*len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    *len += n;
                    self.bytes += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next block (reusing `buf`), or `None` when the input is exhausted.
    pub fn next_block(&mut self, mut buf: Vec<u8>) -> std::io::Result<Option<Block>> {
        let mut target = self.block_bytes.max(self.carry.len() * 2);
        if buf.len() < target {
            buf.resize(target, 0);
        }
        let mut len = self.carry.len();
        buf[..len].copy_from_slice(&self.carry);
        self.carry.clear();
        loop {
            self.fill(&mut buf, &mut len)?;
            let data = &buf[..len];
            let free = self.quote_free(data);
            let cut = if self.eof {
                Some((len, self.count_final(data, free)))
            } else {
                self.cut(data, free)
            };
            if let Some((cut, rows)) = cut {
                if self.eof && len == 0 {
                    return Ok(None);
                }
                // The quote may lie past the cut.
                let quote_free = free || self.quote_free(&buf[..cut]);
                self.carry.extend_from_slice(&buf[cut..len]);
                let first_line = self.line;
                self.line += memchr::memchr_iter(b'\n', &buf[..cut]).count() as u64;
                return Ok(Some(Block {
                    data: buf,
                    len: cut,
                    first_line,
                    rows,
                    last: self.eof,
                    quote_free,
                }));
            }
            // No whole record yet: read more. A reused buffer can be longer than `target`
            // (and full): grow from its length, never shrink it below the bytes read.
            target = buf.len() * 2;
            buf.resize(target, 0);
        }
    }

    fn quote_free(&self, data: &[u8]) -> bool {
        !is_term(self.delimiter) && self.delimiter != b'"' && memchr::memchr(b'"', data).is_none()
    }

    /// Where to cut `data` (not the end of the input) after its last whole record, and the
    /// number of records before the cut; `None` if it holds no whole record. `free`: `data` is
    /// quote-free.
    fn cut(&self, data: &[u8], free: bool) -> Option<(usize, usize)> {
        if free {
            // The last terminator run that follows record bytes; cut after its first byte.
            let mut i = memchr::memrchr2(b'\n', b'\r', data)?;
            while i > 0 && is_term(data[i - 1]) {
                i -= 1;
            }
            if i == 0 {
                return None;
            }
            let cut = i + 1;
            Some((cut, count_runs(&data[..cut])))
        } else {
            let mut p = RecordParser::new(self.delimiter);
            let (mut at, mut rows, mut cut) = (0, 0, None);
            loop {
                let (n, rec) = p.next(&data[at..], false);
                at += n;
                if rec.is_none() {
                    break;
                }
                rows += 1;
                cut = Some((at, rows));
            }
            cut
        }
    }

    /// Records in the final block (`free`: it is quote-free).
    fn count_final(&self, data: &[u8], free: bool) -> usize {
        if free {
            count_runs(data)
        } else {
            let mut p = RecordParser::new(self.delimiter);
            let (mut at, mut rows) = (0, 0);
            loop {
                let (n, rec) = p.next(&data[at..], true);
                at += n;
                if rec.is_none() {
                    return rows;
                }
                rows += 1;
            }
        }
    }
}

/// Number of maximal runs of bytes other than `\r` and `\n` (the records of quote-free CSV):
/// bytes other than those that follow one of them (or start `data`), eight at a time.
fn count_runs(data: &[u8]) -> usize {
    const HIGH: u64 = !LOW7;
    /// High bits of the bytes of `w` other than `\r` and `\n`.
    fn other(w: u64) -> u64 {
        bytes_differ(w, splat(b'\r')) & bytes_differ(w, splat(b'\n')) & HIGH
    }
    let mut n = 0usize;
    // High bit of the last byte before the word: a line break (or the start of `data`).
    let mut after_break = 1u64 << 63;
    let mut count = |w: u64| {
        let other = other(w);
        let breaks = other ^ HIGH;
        n += (other & ((breaks << 8) | (after_break >> 56))).count_ones() as usize;
        after_break = breaks & (1 << 63);
    };
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        count(u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    // The tail, padded with line breaks (which start no run).
    let mut b = [b'\n'; 8];
    b[..words.remainder().len()].copy_from_slice(words.remainder());
    count(u64::from_le_bytes(b));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record and its line, as the `csv` crate reports them.
    fn with_csv(data: &[u8], delimiter: u8) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(data);
        let mut out = Vec::new();
        let mut rec = csv::ByteRecord::new();
        while rdr.read_byte_record(&mut rec).unwrap() {
            // The csv crate's line is its count of `\n` before the blank lines it skipped
            // ahead of the record; the line the record is on adds those.
            let pos = rec.position().unwrap();
            let line = pos.line() + leading_line_feeds(&data[pos.byte() as usize..]);
            out.push((line, rec.iter().map(|f| f.to_vec()).collect()));
        }
        out
    }

    /// How the tests read blocks.
    #[derive(Clone, Copy, PartialEq)]
    enum Path {
        /// As the encoder's workers do: quote-free blocks split where they lie.
        Encoder,
        /// Every block through `csv_core`.
        Core,
    }

    /// Blocks as they were read.
    #[derive(Default, Debug)]
    struct Parsed {
        records: Vec<(u64, Vec<Vec<u8>>)>,
        blocks: usize,
        quote_free: usize,
    }

    /// Every record and its line, read in blocks of about `block` bytes and batches of at most
    /// `batch_rows` records along `path`.
    fn read_blocks(
        data: &[u8],
        delimiter: u8,
        block: usize,
        batch_rows: usize,
        path: Path,
    ) -> Parsed {
        // Small reads make small blocks.
        struct Slow<'a>(&'a [u8], usize);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.1).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = BlockReader::new(Slow(data, block), delimiter, Vec::new(), 1);
        r.block_bytes = block;
        let mut out = Parsed::default();
        if let Some(h) = r.read_header().unwrap() {
            out.records.push((1 + leading_line_feeds(data), h));
        }
        let mut p = RecordParser::new(delimiter);
        let mut buf = vec![0u8; block];
        while let Some(b) = r.next_block(std::mem::take(&mut buf)).unwrap() {
            out.blocks += 1;
            out.quote_free += usize::from(b.quote_free);
            // Records go through batches, as the encoder's workers read them.
            let mut records = BlockRecords::new(&b, delimiter, &mut p);
            records.quote_free &= path == Path::Encoder;
            let mut batch = RecordBatch::default();
            let mut rows = 0;
            loop {
                records.fill(&mut batch, &mut p, batch_rows);
                if batch.is_empty() {
                    break;
                }
                rows += batch.len();
                for i in 0..batch.len() {
                    let rec = batch.get(i);
                    let fields = (0..rec.len()).map(|i| rec.get(i).to_vec()).collect();
                    out.records.push((batch.line(i), fields));
                }
            }
            assert_eq!(rows, b.rows);
            buf = b.data;
        }
        out
    }

    /// [`read_blocks`] as the encoder reads, checked against every block through `csv_core`.
    fn with_blocks(data: &[u8], delimiter: u8, block: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
        let fast = read_blocks(data, delimiter, block, 3, Path::Encoder);
        let core = read_blocks(data, delimiter, block, 3, Path::Core);
        assert_eq!(fast.records, core.records);
        fast.records
    }

    #[test]
    fn blocks_parse_like_one_csv_reader() {
        let cases: Vec<&[u8]> = vec![
            b"a,b\n1,2\n3,4\n",
            b"a,b\r\n1,2\r\n\r\n3,4",
            b"a,b\n\n\n1,\"x\ny\"\n\"q\"\"q\",2\n\r\r\n5,6\n\n",
            b"a,\"b\n1,2\n3,4\n",
            b"a,b\n1,ab\"c\n2,\"\"\n3,\"x\"y,z\n",
            b"\xef\xbb\xbfa,b\n\xef\xbb\xbf1,2\n",
            b"x\ry\rz",
            b"\n\n\n",
            b"",
            b"a\n\"\n\n\n\n\"\n",
        ];
        for data in cases {
            let expect = with_csv(data, b',');
            for block in [1, 2, 3, 5, 8, 64] {
                assert_eq!(
                    with_blocks(data, b',', block),
                    expect,
                    "{:?} / {block}",
                    String::from_utf8_lossy(data)
                );
            }
        }
        let semi = b"a;b\n1;\"2\n3\";4\n";
        assert_eq!(with_blocks(semi, b';', 4), with_csv(semi, b';'));
        let nl = b"a\nb\rc\n\nd";
        assert_eq!(with_blocks(nl, b'\n', 2), with_csv(nl, b'\n'));
    }

    /// A reused buffer longer than the block size, full of a record that does not end in it,
    /// grows (it was once cut back below the bytes read, and the reader panicked).
    #[test]
    fn reused_buffer_grows_for_a_long_record() {
        let data = b"h\nbbbbbbb\ncccccccccccccccccccccccccccccc\nd\n";
        let mut r = BlockReader::new(&data[..], b',', Vec::new(), 1);
        r.block_bytes = 2;
        r.read_header().unwrap();
        let mut buf = vec![0u8; 8];
        let mut rows = 0;
        while let Some(b) = r.next_block(std::mem::take(&mut buf)).unwrap() {
            rows += b.rows;
            buf = b.data;
        }
        assert_eq!(rows, 3);
    }

    /// A record's line is the line its first byte is on, after `\r\n` and blank lines alike
    /// (`csv_core` alone reports a record after `\r\n` on the line of the `\r`, and counts blank
    /// lines only from the record after). A lone `\r` ends a record but is not counted as a
    /// line end.
    #[test]
    fn lines_are_where_records_start() {
        let data = b"h\r\na\r\nb\n\n\nc\r\rd\n\r\ne\r\n\r\nf";
        let expect: Vec<(u64, Vec<Vec<u8>>)> = [
            (1, "h"),
            (2, "a"),
            (3, "b"),
            (6, "c"),
            (6, "d"),
            (8, "e"),
            (10, "f"),
        ]
        .iter()
        .map(|&(l, f)| (l, vec![f.as_bytes().to_vec()]))
        .collect();
        assert_eq!(with_csv(data, b','), expect);
        for block in [1, 2, 4, 7, 64] {
            let read = read_blocks(data, b',', block, 2, Path::Encoder);
            assert_eq!(read.records, expect, "{block}");
            assert_eq!(read.quote_free, read.blocks);
        }
    }

    #[test]
    fn quote_free_fields_are_split_on_the_delimiter() {
        let cases: [(&[u8], u8); 5] = [
            (
                b"a;b;c\r\n;;\r\nx;y\r\n1;2;3;4\r\n\xff\xfe;\xc3\xa9\r\n;",
                b';',
            ),
            (b"a|b\n|\n\xef\xbb\xbf|x\n,|;\n", b'|'),
            (b"a\tb\n\t\t\n c \t d \n", b'\t'),
            (b"a,b\r\r\n\r,\r \r\x00,\x80", b','),
            (b"\xef\xbb\xbfa,b\n1,2\n", b','),
        ];
        for (data, delimiter) in cases {
            let expect = with_csv(data, delimiter);
            for block in [1, 2, 3, 5, 8, 64] {
                let read = read_blocks(data, delimiter, block, 2, Path::Encoder);
                assert_eq!(
                    read.records,
                    expect,
                    "{:?} / {block}",
                    String::from_utf8_lossy(data)
                );
                assert_eq!(read.quote_free, read.blocks);
            }
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Field bytes: other delimiters, spaces, non-ASCII UTF-8, invalid UTF-8, a byte-order
        /// mark's bytes, NUL; no quote and no line break.
        fn field() -> impl Strategy<Value = Vec<u8>> {
            let bytes: Vec<u8> = b"aZ0 ,;|\t'\x00\xc3\xa9\xff\x80\xef\xbb\xbf".to_vec();
            proptest::collection::vec(proptest::sample::select(bytes), 0..5)
        }

        /// Line breaks, with blank lines among them.
        fn terminator() -> impl Strategy<Value = &'static [u8]> {
            let terms: Vec<&'static [u8]> = vec![
                b"\n",
                b"\r\n",
                b"\r",
                b"\n\n",
                b"\r\n\r\n",
                b"\r\r",
                b"\n\r",
                b"\r\n\n",
                b"\n\r\n",
            ];
            proptest::sample::select(terms)
        }

        /// The usual delimiters, and a few that field bytes also use (any byte but `"`, `\r`
        /// and `\n` may be one).
        fn delimiter() -> impl Strategy<Value = u8> {
            let usual = proptest::sample::select(b",;|\t".to_vec());
            let odd = proptest::sample::select(b" a\x00\xff".to_vec());
            prop_oneof![4 => usual, 1 => odd]
        }

        /// Records of 0 to 6 fields (none: a blank line) with their line breaks; the last one's
        /// is left off unless `end`.
        fn csv_text(
            delimiter: u8,
            records: &[(Vec<Vec<u8>>, &[u8])],
            end: bool,
            field_text: impl Fn(&[u8]) -> Vec<u8>,
        ) -> Vec<u8> {
            let mut data = Vec::new();
            for (i, (fields, term)) in records.iter().enumerate() {
                for (j, f) in fields.iter().enumerate() {
                    if j > 0 {
                        data.push(delimiter);
                    }
                    data.extend_from_slice(&field_text(f));
                }
                if end || i + 1 < records.len() {
                    data.extend_from_slice(term);
                }
            }
            data
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The runs counted eight bytes at a time are those counted byte by byte.
            #[test]
            fn runs_are_counted_like_byte_by_byte(
                data in proptest::collection::vec(
                    proptest::sample::select(b"ab\r\n\x8a\x8d\x0a\x00\xff".to_vec()),
                    0..80,
                ),
            ) {
                let mut n = 0;
                let mut prev_break = true;
                for &b in &data {
                    n += usize::from(prev_break && !is_term(b));
                    prev_break = is_term(b);
                }
                prop_assert_eq!(count_runs(&data), n);
            }

            /// Quote-free text, read as the encoder reads it (every block split where it lies),
            /// gives the records and lines of `csv_core` block by block and of one `csv` reader.
            #[test]
            fn quote_free_blocks_parse_like_csv_core(
                delimiter in delimiter(),
                records in proptest::collection::vec(
                    (proptest::collection::vec(field(), 0..7), terminator()),
                    0..24,
                ),
                end in any::<bool>(),
                block in 1usize..48,
                batch_rows in 1usize..5,
            ) {
                let data = csv_text(delimiter, &records, end, |f| f.to_vec());
                let fast = read_blocks(&data, delimiter, block, batch_rows, Path::Encoder);
                let core = read_blocks(&data, delimiter, block, batch_rows, Path::Core);
                prop_assert_eq!(fast.quote_free, fast.blocks);
                prop_assert_eq!(&fast.records, &core.records);
                prop_assert_eq!(&fast.records, &with_csv(&data, delimiter));
            }

            /// Text where some fields are quoted (with line breaks, delimiters and doubled
            /// quotes inside) or hold a stray quote: quote-free blocks and blocks with quotes
            /// follow each other, and the lines carry from one to the next.
            #[test]
            fn mixed_blocks_parse_like_one_csv_reader(
                delimiter in delimiter(),
                records in proptest::collection::vec(
                    (proptest::collection::vec((field(), 0u8..16), 0..7), terminator()),
                    0..24,
                ),
                end in any::<bool>(),
                block in 1usize..48,
                batch_rows in 1usize..5,
            ) {
                let records: Vec<(Vec<Vec<u8>>, &[u8])> = records
                    .into_iter()
                    .map(|(fields, term)| {
                        let fields = fields
                            .into_iter()
                            .map(|(mut f, kind)| {
                                match kind {
                                    0 => {
                                        f.splice(f.len() / 2..f.len() / 2, *b"\"\r\n\"\"");
                                        f.insert(0, b'"');
                                        f.push(b'"');
                                    }
                                    1 => {
                                        f.insert(0, b'"');
                                        f.push(delimiter);
                                        f.extend_from_slice(b"\n\"");
                                    }
                                    2 => f.insert(f.len() / 2, b'"'),
                                    _ => {}
                                }
                                f
                            })
                            .collect();
                        (fields, term)
                    })
                    .collect();
                let data = csv_text(delimiter, &records, end, |f| f.to_vec());
                let fast = read_blocks(&data, delimiter, block, batch_rows, Path::Encoder);
                prop_assert_eq!(&fast.records, &with_csv(&data, delimiter));
            }
        }
    }
}
