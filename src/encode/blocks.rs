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
}

/// One parsed record: its fields, as the `csv` crate's `ByteRecord` would hold them.
pub struct Rec<'a> {
    out: &'a [u8],
    ends: &'a [usize],
}

impl<'a> Rec<'a> {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Field `i` (which must be < `len()`).
    pub fn get(&self, i: usize) -> &'a [u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.out[start..self.ends[i]]
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
                    return (
                        nin,
                        Some(Rec {
                            out: &self.out[..nout],
                            ends: &self.ends[..self.nend],
                        }),
                    )
                }
                End => return (nin, None),
            }
        }
    }
}

/// Records parsed ahead of encoding, so that a batch of rows can have its cache lookups in
/// flight together: each record's fields, and the line it starts on.
#[derive(Default)]
pub struct RecordBatch {
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Per record: where its bytes and its field ends start, and its line.
    records: Vec<(usize, usize, u64)>,
}

impl RecordBatch {
    /// Empties the batch.
    pub fn clear(&mut self) {
        self.out.clear();
        self.ends.clear();
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

    /// Appends a copy of `rec`, which starts on `line`.
    pub fn push(&mut self, rec: &Rec<'_>, line: u64) {
        self.records.push((self.out.len(), self.ends.len(), line));
        self.out.extend_from_slice(rec.out);
        self.ends.extend_from_slice(rec.ends);
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Rec<'_> {
        let (out, ends, _) = self.records[i];
        let (out_end, ends_end) = self
            .records
            .get(i + 1)
            .map_or((self.out.len(), self.ends.len()), |&(o, e, _)| (o, e));
        Rec {
            out: &self.out[out..out_end],
            ends: &self.ends[ends..ends_end],
        }
    }

    /// The line record `i` starts on.
    pub fn line(&self, i: usize) -> u64 {
        self.records[i].2
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
            let cut = if self.eof {
                Some((len, self.count_final(data)))
            } else {
                self.cut(data)
            };
            if let Some((cut, rows)) = cut {
                if self.eof && len == 0 {
                    return Ok(None);
                }
                self.carry.extend_from_slice(&buf[cut..len]);
                let first_line = self.line;
                self.line += memchr::memchr_iter(b'\n', &buf[..cut]).count() as u64;
                return Ok(Some(Block {
                    data: buf,
                    len: cut,
                    first_line,
                    rows,
                    last: self.eof,
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
    /// number of records before the cut; `None` if it holds no whole record.
    fn cut(&self, data: &[u8]) -> Option<(usize, usize)> {
        if self.quote_free(data) {
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

    /// Records in the final block.
    fn count_final(&self, data: &[u8]) -> usize {
        if self.quote_free(data) {
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

/// Number of maximal runs of bytes other than `\r` and `\n` (the records of quote-free CSV).
fn count_runs(data: &[u8]) -> usize {
    let mut n = 0usize;
    let mut prev_term = true;
    for chunk in data.chunks(4096) {
        let mut c = 0usize;
        let mut p = prev_term;
        for &b in chunk {
            let t = is_term(b);
            c += (p & !t) as usize;
            p = t;
        }
        n += c;
        prev_term = p;
    }
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
            let line = rec.position().unwrap().line();
            out.push((line, rec.iter().map(|f| f.to_vec()).collect()));
        }
        out
    }

    fn with_blocks(data: &[u8], delimiter: u8, block: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
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
        let mut out = Vec::new();
        if let Some(h) = r.read_header().unwrap() {
            out.push((1, h));
        }
        let mut p = RecordParser::new(delimiter);
        let mut buf = vec![0u8; block];
        // Records go through a batch, as the encoder's workers read them.
        let mut batch = RecordBatch::default();
        while let Some(b) = r.next_block(std::mem::take(&mut buf)).unwrap() {
            p.start(delimiter, b.first_line);
            let mut at = 0;
            batch.clear();
            loop {
                let line = p.line();
                let (n, rec) = p.next(&b.data[at..b.len], b.last);
                at += n;
                let Some(rec) = rec else { break };
                batch.push(&rec, line);
            }
            assert_eq!(batch.len(), b.rows);
            for i in 0..batch.len() {
                let rec = batch.get(i);
                let fields = (0..rec.len()).map(|i| rec.get(i).to_vec()).collect();
                out.push((batch.line(i), fields));
            }
            buf = b.data;
        }
        out
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
}
