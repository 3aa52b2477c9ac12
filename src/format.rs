//! The encoding file (`.clk`): writing, and reading (into memory, then used in place) with full
//! validation.
//!
//! Layout (all integers little-endian; see `docs/FORMAT.md`):
//!
//! ```text
//! 0      8   magic "BLOOMLNK"
//! 8      4   format version (u32)
//! 12     4   header length H (u32, at most 1 MiB)
//! 16     H   header (bincode 1.3, fixed-width integers), including the section table
//!        …   zero padding to a multiple of 64
//!            sections, each starting at a multiple of 64, zero padding between:
//!              id_offsets     (n+1) × u64   byte offsets into id_bytes
//!              id_bytes       UTF-8 row references, concatenated
//!              filters        n × words × u64
//!              popcounts      n × (1 + segments) × u16: total, then per segment
//!              token_offsets  (n+1) × u32   offsets into tokens
//!              tokens         u64 keyed exact tokens, kind in the top byte
//!        …   version 2 only: zero padding to a multiple of 64, then the signature block:
//!              "BLOOMSIG", u32 length L, L bytes bincode (agency, public key, signature)
//! end-32 32  SHA-256 of every byte before it
//! ```
//!
//! Unsigned files are written as version 1, signed files as version 2; this build reads both.
//! The signature is an agency's Ed25519 signature of the file's **manifest** ([`manifest`]): the
//! format version, the SHA-256 of the header bytes and of each section, and the signer's agency
//! and public key. Checking it against a trust file is [`crate::signing`]'s job; the reader here
//! only checks that the block is well formed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::encode::Records;
use crate::error::{Error, Result};
use crate::fsutil::{self, Mode, Overwrite};
use crate::schema::SegmentLayout;
use crate::signing::{PublicKey, SigningKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};

#[cfg(target_endian = "big")]
compile_error!("bloomlink's encoding files are little-endian and read zero-copy; big-endian hosts are not supported");

/// File magic.
pub const MAGIC: &[u8; 8] = b"BLOOMLNK";
/// The format version of unsigned files (written and read by this build).
pub const FORMAT_VERSION: u32 = 1;
/// The format version of signed files: version 1 plus a signature block before the trailer.
pub const FORMAT_VERSION_SIGNED: u32 = 2;
/// Magic at the start of the signature block.
const SIG_MAGIC: &[u8; 8] = b"BLOOMSIG";
/// Largest signature block accepted.
const MAX_SIG_BLOCK: u32 = 4096;
const MANIFEST_LABEL: &str = "bloomlink encoding manifest v1";
const SECTION_NAMES: [&str; 6] = [
    "id_offsets",
    "id_bytes",
    "filters",
    "popcounts",
    "token_offsets",
    "tokens",
];
/// Largest header accepted.
pub const MAX_HEADER_BYTES: u32 = 1 << 20;
const ALIGN: u64 = 64;
const PREAMBLE: u64 = 16;
const TRAILER: u64 = 32;

/// Where a section lies in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Byte offset from the start of the file (a multiple of 64).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The section table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sections {
    /// Row reference offsets.
    pub id_offsets: Span,
    /// Row reference bytes.
    pub id_bytes: Span,
    /// Filters.
    pub filters: Span,
    /// Popcounts.
    pub popcounts: Span,
    /// Token offsets.
    pub token_offsets: Span,
    /// Tokens.
    pub tokens: Span,
}

impl Sections {
    fn spans(&self) -> [Span; 6] {
        [
            self.id_offsets,
            self.id_bytes,
            self.filters,
            self.popcounts,
            self.token_offsets,
            self.tokens,
        ]
    }
}

/// The signature of a signed (version 2) file, as read from its signature block. Only its form
/// is checked on opening; [`crate::signing`] verifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The agency whose key signed the file (as the block says).
    pub agency: String,
    /// The signer's public key.
    pub public_key: PublicKey,
    /// Ed25519 signature of the manifest.
    pub signature: [u8; SIGNATURE_LEN],
}

/// The signature block as stored (bincode).
#[derive(Serialize, Deserialize)]
struct SignatureBlock {
    agency: String,
    public_key: Vec<u8>,
    signature: Vec<u8>,
}

/// The manifest an agency signs: the format version, the SHA-256 of the header bytes and of
/// each section (in file order), and the signer's agency and public key, as lines of text.
pub fn manifest(
    version: u32,
    header_sha256: &[u8],
    section_sha256: &[[u8; 32]; 6],
    agency: &str,
    public_key: &PublicKey,
) -> Vec<u8> {
    let mut m = format!(
        "{MANIFEST_LABEL}\nformat_version {version}\nheader_sha256 {}\n",
        hex::encode(header_sha256)
    );
    for (name, d) in SECTION_NAMES.iter().zip(section_sha256) {
        m.push_str(&format!("{name}_sha256 {}\n", hex::encode(d)));
    }
    m.push_str(&format!(
        "signer_agency {agency}\nsigner_public_key {public_key}\n"
    ));
    m.into_bytes()
}

/// Each section's bytes as [`write()`] lays them out, in file order.
fn section_bytes(records: &Records) -> [&[u8]; 6] {
    [
        id_offsets_bytes(records),
        &records.id_bytes,
        bytemuck::cast_slice(&records.filters),
        bytemuck::cast_slice(&records.popcounts),
        bytemuck::cast_slice(&records.token_offsets),
        bytemuck::cast_slice(&records.tokens),
    ]
}

/// SHA-256 of each section's bytes, computed from the records.
fn section_digests(records: &Records) -> [[u8; 32]; 6] {
    section_bytes(records).map(|b| {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
        out
    })
}

/// The file header. Holds no personal data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Agency label from the column map.
    pub agency: String,
    /// When the file was written (RFC 3339 UTC).
    pub created: String,
    /// bloomlink version that wrote it.
    pub tool_version: String,
    /// Fingerprint of the linkage key.
    pub key_fingerprint: String,
    /// Epoch of the linkage key.
    pub key_epoch: u32,
    /// Schema name.
    pub schema_name: String,
    /// Schema digest (hex SHA-256).
    pub schema_digest: String,
    /// Filter length in bits.
    pub filter_bits: u32,
    /// Segment layout.
    pub segments: Vec<SegmentLayout>,
    /// Names of the keyed exact token kinds, by kind index.
    pub token_kinds: Vec<String>,
    /// Records in the file.
    pub records: u64,
    /// Data rows read from the export.
    pub rows_read: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// SHA-256 of the input export (hex).
    pub input_sha256: String,
    /// Whether row references are opaque.
    pub opaque_ids: bool,
    /// Section table.
    pub sections: Sections,
}

impl Header {
    /// The header for a file of records encoded from `report` with `key` and `schema`.
    pub fn for_encoding(
        key: &crate::key::KeyInfo,
        schema: &crate::schema::Schema,
        report: &crate::encode::EncodeReport,
        opaque_ids: bool,
    ) -> Header {
        Header {
            agency: report.agency.clone(),
            created: creation_time(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            key_fingerprint: key.fingerprint.clone(),
            key_epoch: key.epoch,
            schema_name: schema.def.name.clone(),
            schema_digest: schema.digest.clone(),
            // The stored layout (after hardening): what the matcher compares.
            filter_bits: schema.stored_bits(),
            segments: schema.stored_segments.clone(),
            token_kinds: schema.tokens.iter().map(|t| t.name.clone()).collect(),
            records: report.encoded,
            rows_read: report.rows_read,
            rows_rejected: report.rejected,
            input_sha256: report.input_sha256.clone(),
            opaque_ids,
            sections: Sections::default(),
        }
    }

    /// Filter length in words.
    pub fn words(&self) -> usize {
        (self.filter_bits / 64) as usize
    }
}

fn bincode_opts() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(u64::from(MAX_HEADER_BYTES))
        .reject_trailing_bytes()
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// The creation time to record in a new file: `SOURCE_DATE_EPOCH` (seconds since 1970, the
/// reproducible-builds convention) when set, so that reruns can be byte-identical; otherwise now.
pub fn creation_time() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map(crate::date::rfc3339_from_unix)
        .unwrap_or_else(crate::date::now_rfc3339)
}

/// Facts about a written file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Written {
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file (hex).
    pub sha256: String,
}

/// Writes `records` with `header` (its counts and section table are filled in here) to `path`
/// atomically, unsigned (format version 1).
pub fn write(
    path: &Path,
    header: &Header,
    records: &Records,
    overwrite: Overwrite,
) -> Result<Written> {
    write_with(path, header, records, overwrite, None)
}

/// [`write()`], signed with `signer` when given (format version 2). The signer's agency must be
/// the header's agency.
pub fn write_with(
    path: &Path,
    header: &Header,
    records: &Records,
    overwrite: Overwrite,
    signer: Option<&SigningKey>,
) -> Result<Written> {
    let (prepared, written) = prepare_with(path, header, records, overwrite, signer)?;
    prepared.commit()?;
    Ok(written)
}

/// [`write_with`] up to the file's being put in place ([`fsutil::prepare_atomic`]): for a
/// command that writes other outputs with it and puts them all in place together.
pub fn prepare_with(
    path: &Path,
    header: &Header,
    records: &Records,
    overwrite: Overwrite,
    signer: Option<&SigningKey>,
) -> Result<(fsutil::Prepared, Written)> {
    use bincode::Options;
    if let Some(k) = signer {
        if k.info().agency != header.agency {
            return Err(Error::Usage(format!(
                "the signing key is agency {}'s, but this encoding is labelled agency {}: sign                  with the {} signing key",
                k.info().agency,
                header.agency,
                header.agency
            )));
        }
    }
    let n = records.len() as u64;
    let mut h = header.clone();
    h.records = n;
    let id_bytes = records.id_bytes.len() as u64;
    if records.tokens.len() > u32::MAX as usize {
        return Err(Error::Usage("too many tokens for one encoding file".into()));
    }
    let header_len = bincode_opts()
        .serialized_size(&h)
        .map_err(|e| Error::format(path, format!("header cannot be written: {e}")))?;
    let mut at = align(PREAMBLE + header_len);
    let mut span = |len: u64| {
        let s = Span { offset: at, len };
        at = align(at + len);
        s
    };
    h.sections = Sections {
        id_offsets: span((n + 1) * 8),
        id_bytes: span(id_bytes),
        filters: span(records.filters.len() as u64 * 8),
        popcounts: span(records.popcounts.len() as u64 * 2),
        token_offsets: span((n + 1) * 4),
        tokens: span(records.tokens.len() as u64 * 8),
    };
    let header_bytes = bincode_opts()
        .serialize(&h)
        .map_err(|e| Error::format(path, format!("header cannot be written: {e}")))?;
    debug_assert_eq!(header_bytes.len() as u64, header_len);
    let (version, sig_block) = match signer {
        None => (FORMAT_VERSION, None),
        Some(k) => {
            let m = manifest(
                FORMAT_VERSION_SIGNED,
                ring::digest::digest(&ring::digest::SHA256, &header_bytes).as_ref(),
                &section_digests(records),
                &k.info().agency,
                &k.info().public_key,
            );
            let block = SignatureBlock {
                agency: k.info().agency.clone(),
                public_key: k.info().public_key.0.to_vec(),
                signature: k.sign(&m).to_vec(),
            };
            let bytes = bincode_opts()
                .serialize(&block)
                .map_err(|e| Error::format(path, format!("signature cannot be written: {e}")))?;
            (FORMAT_VERSION_SIGNED, Some(bytes))
        }
    };

    // The file as a list of pieces, in order: the SHA-256 trailer is computed over them on a
    // second thread while this one writes them (both only read the records).
    let s = h.sections;
    let mut preamble = Vec::with_capacity(PREAMBLE as usize + header_bytes.len());
    preamble.extend_from_slice(MAGIC);
    preamble.extend_from_slice(&version.to_le_bytes());
    preamble.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    preamble.extend_from_slice(&header_bytes);
    let sig = sig_block.as_ref().map(|block| {
        let mut b = Vec::with_capacity(12 + block.len());
        b.extend_from_slice(SIG_MAGIC);
        b.extend_from_slice(&(block.len() as u32).to_le_bytes());
        b.extend_from_slice(block);
        b
    });
    const ZEROS: [u8; 64] = [0; 64];
    let mut pieces: Vec<&[u8]> = vec![&preamble];
    let mut at = preamble.len() as u64;
    for (span, bytes) in s.spans().into_iter().zip(section_bytes(records)) {
        pieces.push(&ZEROS[..(span.offset - at) as usize]);
        pieces.push(bytes);
        at = span.offset + bytes.len() as u64;
    }
    if let Some(sig) = &sig {
        let start = align(at);
        pieces.push(&ZEROS[..(start - at) as usize]);
        pieces.push(sig);
        at = start + sig.len() as u64;
    }
    let len = at;

    // Owner-only: an encoding is pseudonymised personal data (README, "Security notes").
    fsutil::prepare_atomic(path, overwrite, Mode::Private, |w| {
        let io = |e| Error::io(path, e);
        let (ctx, written) = std::thread::scope(|scope| {
            let hashing = scope.spawn(|| {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                for p in &pieces {
                    // In steps, so that hashing and writing stay near each other in memory.
                    for chunk in p.chunks(1 << 22) {
                        ctx.update(chunk);
                    }
                }
                ctx
            });
            let written: std::io::Result<()> = pieces.iter().try_for_each(|p| w.write_all(p));
            (hashing.join(), written)
        });
        written.map_err(io)?;
        let ctx = ctx.map_err(|_| Error::format(path, "the checksum thread failed"))?;
        let mut whole = ctx.clone();
        let trailer = ctx.finish();
        whole.update(trailer.as_ref());
        w.write_all(trailer.as_ref()).map_err(io)?;
        Ok(Written {
            bytes: len + TRAILER,
            sha256: hex::encode(whole.finish().as_ref()),
        })
    })
}

/// The `id_offsets` section's bytes (a lone 0 when there are no records).
fn id_offsets_bytes(records: &Records) -> &[u8] {
    if records.id_offsets.is_empty() {
        &[0; 8]
    } else {
        bytemuck::cast_slice(&records.id_offsets)
    }
}

/// SHA-256 of a whole file (hex), streaming.
pub fn file_sha256(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// An opened, validated encoding file, read into 64-byte-aligned memory and used in place.
///
/// Not memory-mapped: a mapped file that is truncated while it is read (an agency's copy into
/// the linkage unit's inbox being redone in place) kills the process with SIGBUS, and bytes
/// changed in place after the checksum was verified would be used unverified. Read into memory,
/// every byte used is a byte the checksum covered.
pub struct EncodingFile {
    path: PathBuf,
    /// The file's bytes, from word `start` on (64-byte aligned), in `u64` words so that
    /// sections can be cast in place; see [`EncodingFile::bytes`].
    words: Vec<u64>,
    /// The word of `words` where the file starts.
    start: usize,
    /// The file's length in bytes.
    len: usize,
    version: u32,
    header_len: u64,
    header: Header,
    signature: Option<Signature>,
    checksum: [u8; 32],
}

impl std::fmt::Debug for EncodingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodingFile")
            .field("path", &self.path)
            .field("records", &self.header.records)
            .finish()
    }
}

/// Reads the `len` bytes of `file` into `u64` words, starting at the returned word, which is
/// 64-byte aligned as a memory map's pages were (sections start at multiples of 64 bytes, so
/// each section is 64-byte aligned too; the allocator only promises 8). A file that is shorter
/// or longer than `len` by the end of the read changed while it was read: refused.
fn read_aligned(path: &Path, mut file: &File, len: u64) -> Result<(Vec<u64>, usize, usize)> {
    use std::io::Read;
    let n = usize::try_from(len).map_err(|_| Error::format(path, "is too large to read"))?;
    let mut words = vec![0u64; n.div_ceil(8) + 7];
    let start = (64 - words.as_ptr() as usize % 64) % 64 / 8;
    let buf = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words[start..])[..n];
    let changed = || {
        Error::format(
            path,
            format!(
                "changed while it was being read ({len} bytes when opened): is it still being \
                 copied or written? Try again once it is complete"
            ),
        )
    };
    file.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => changed(),
        _ => Error::io(path, e),
    })?;
    let mut more = [0u8; 1];
    if file.read(&mut more).map_err(|e| Error::io(path, e))? != 0 {
        return Err(changed());
    }
    Ok((words, start, n))
}

impl EncodingFile {
    /// The whole file's bytes.
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words[self.start..])[..self.len]
    }

    /// Opens and validates `path`: magic, version, checksum over the whole file, header, and
    /// the consistency of every section. A truncated or altered file is refused.
    pub fn open(path: &Path) -> Result<EncodingFile> {
        use bincode::Options;
        let bad = |p: &str| Error::format(path, p);
        // Before opening: a pipe would wait for a writer.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() && !m.is_dir() => {
                return Err(bad("is a device, pipe or socket, not an encoding file"))
            }
            _ => {}
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(bad("is a directory, not an encoding file"));
        }
        let len = meta.len();
        if len == 0 {
            return Err(bad("is empty"));
        }
        if len < PREAMBLE + TRAILER {
            return Err(bad(
                "is too short to be a bloomlink encoding file (truncated?)",
            ));
        }
        let (words, start, b_len) = read_aligned(path, &file, len)?;
        let b: &[u8] = &bytemuck::cast_slice(&words[start..])[..b_len];
        if &b[0..8] != MAGIC {
            return Err(bad(
                "is not a bloomlink encoding file (wrong magic bytes); was it produced by `bloomlink encode`?",
            ));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_SIGNED {
            return Err(Error::format(
                path,
                format!(
                    "has format version {version}, this bloomlink reads versions \
                     {FORMAT_VERSION} and {FORMAT_VERSION_SIGNED}: encode and match with the \
                     same bloomlink release"
                ),
            ));
        }
        let body_end = len - TRAILER;
        let computed = ring::digest::digest(&ring::digest::SHA256, &b[..body_end as usize]);
        let mut checksum = [0u8; 32];
        checksum.copy_from_slice(&b[body_end as usize..]);
        if computed.as_ref() != checksum {
            return Err(bad(
                "is truncated or altered: its SHA-256 checksum does not match. Ask the agency to \
                 send the file again",
            ));
        }
        let hlen = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if hlen > MAX_HEADER_BYTES || PREAMBLE + u64::from(hlen) > body_end {
            return Err(bad("has a header length out of range"));
        }
        let header: Header = bincode_opts()
            .deserialize(&b[PREAMBLE as usize..(PREAMBLE + u64::from(hlen)) as usize])
            .map_err(|e| {
                let why = match *e {
                    // bincode's text for a header cut short by its stated length is empty.
                    bincode::ErrorKind::Io(_) => "it ends before its fields do (its stated \
                                                  length is wrong: the file was altered)"
                        .to_string(),
                    other => other.to_string(),
                };
                Error::format(path, format!("has an unreadable header: {why}"))
            })?;
        validate(&header, b, PREAMBLE + u64::from(hlen), body_end)
            .map_err(|p| Error::format(path, p))?;
        let signature = read_tail(version, &header, b, PREAMBLE + u64::from(hlen), body_end)
            .map_err(|p| Error::format(path, p))?;
        Ok(EncodingFile {
            path: path.to_path_buf(),
            words,
            start,
            len: b_len,
            version,
            header_len: u64::from(hlen),
            header,
            signature,
            checksum,
        })
    }

    /// The format version (1 unsigned, 2 signed).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The signature block of a signed file (its form checked, not its validity).
    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    /// The manifest a signed file's signature must cover, recomputed from the file's bytes;
    /// `None` for an unsigned file.
    pub fn manifest(&self) -> Option<Vec<u8>> {
        let s = self.signature.as_ref()?;
        let header = &self.bytes()[PREAMBLE as usize..(PREAMBLE + self.header_len) as usize];
        let sections = self.header.sections.spans().map(|sp| {
            let mut out = [0u8; 32];
            out.copy_from_slice(
                ring::digest::digest(&ring::digest::SHA256, self.section(sp)).as_ref(),
            );
            out
        });
        Some(manifest(
            self.version,
            ring::digest::digest(&ring::digest::SHA256, header).as_ref(),
            &sections,
            &s.agency,
            &s.public_key,
        ))
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The SHA-256 trailer (identifies the file's content).
    pub fn checksum_hex(&self) -> String {
        hex::encode(self.checksum)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.header.records as usize
    }

    /// True if the file holds no records.
    pub fn is_empty(&self) -> bool {
        self.header.records == 0
    }

    fn section(&self, s: Span) -> &[u8] {
        &self.bytes()[s.offset as usize..(s.offset + s.len) as usize]
    }

    /// All filters, `words` per record, contiguous and 64-byte aligned.
    pub fn filters(&self) -> &[u64] {
        bytemuck::cast_slice(self.section(self.header.sections.filters))
    }

    /// Filter of record `i`.
    pub fn filter(&self, i: usize) -> &[u64] {
        let w = self.header.words();
        &self.filters()[i * w..(i + 1) * w]
    }

    /// All popcounts: per record the total, then per segment.
    pub fn popcounts(&self) -> &[u16] {
        bytemuck::cast_slice(self.section(self.header.sections.popcounts))
    }

    /// Popcounts of record `i` (total, then per segment).
    pub fn popcounts_of(&self, i: usize) -> &[u16] {
        let k = 1 + self.header.segments.len();
        &self.popcounts()[i * k..(i + 1) * k]
    }

    /// Keyed exact tokens of record `i`.
    pub fn tokens_of(&self, i: usize) -> &[u64] {
        let offs: &[u32] = bytemuck::cast_slice(self.section(self.header.sections.token_offsets));
        let toks: &[u64] = bytemuck::cast_slice(self.section(self.header.sections.tokens));
        &toks[offs[i] as usize..offs[i + 1] as usize]
    }

    /// Row reference of record `i`.
    pub fn row_ref(&self, i: usize) -> &str {
        let offs: &[u64] = bytemuck::cast_slice(self.section(self.header.sections.id_offsets));
        let bytes = self.section(self.header.sections.id_bytes);
        // Validated at open: offsets are monotonic, in range, and every slice is UTF-8.
        std::str::from_utf8(&bytes[offs[i] as usize..offs[i + 1] as usize]).unwrap_or("")
    }

    /// Copies everything into owned [`Records`].
    pub fn to_records(&self) -> Records {
        let n = self.len();
        let mut token_offsets = Vec::with_capacity(n + 1);
        token_offsets.extend_from_slice(bytemuck::cast_slice::<u8, u32>(
            self.section(self.header.sections.token_offsets),
        ));
        Records {
            words: self.header.words(),
            segments: self.header.segments.len(),
            id_offsets: bytemuck::cast_slice::<u8, u64>(
                self.section(self.header.sections.id_offsets),
            )
            .to_vec(),
            id_bytes: self.section(self.header.sections.id_bytes).to_vec(),
            filters: self.filters().to_vec(),
            popcounts: self.popcounts().to_vec(),
            token_offsets,
            tokens: bytemuck::cast_slice(self.section(self.header.sections.tokens)).to_vec(),
        }
    }
}

/// Checks what follows the last section: nothing in version 1; in version 2 zero padding and a
/// well-formed signature block ending exactly at the trailer. Also checks that all padding
/// between header and sections is zero, so no byte of the file is outside the checksummed,
/// signed or validated content.
fn read_tail(
    version: u32,
    h: &Header,
    b: &[u8],
    header_end: u64,
    body_end: u64,
) -> std::result::Result<Option<Signature>, String> {
    use bincode::Options;
    let zero = |from: u64, to: u64| b[from as usize..to as usize].iter().all(|&x| x == 0);
    let mut prev_end = header_end;
    for sp in h.sections.spans() {
        if !zero(prev_end, sp.offset) {
            return Err("has non-zero bytes in the padding between sections".into());
        }
        prev_end = sp.offset + sp.len;
    }
    if version == FORMAT_VERSION {
        if prev_end != body_end {
            return Err("has unexpected bytes after its last section".into());
        }
        return Ok(None);
    }
    let start = align(prev_end);
    if start + 12 > body_end {
        return Err("is a signed file (version 2) without a signature block".into());
    }
    if !zero(prev_end, start) {
        return Err("has non-zero bytes in the padding before the signature block".into());
    }
    let at = start as usize;
    if &b[at..at + 8] != SIG_MAGIC {
        return Err("has a damaged signature block (wrong magic bytes)".into());
    }
    let len = u32::from_le_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]);
    if len > MAX_SIG_BLOCK || start + 12 + u64::from(len) != body_end {
        return Err("has a signature block of the wrong length".into());
    }
    let block: SignatureBlock = bincode_opts()
        .deserialize(&b[at + 12..body_end as usize])
        .map_err(|_| "has an unreadable signature block".to_string())?;
    if !crate::colmap::is_agency_label(&block.agency) {
        return Err("has a signature block with an invalid agency label".into());
    }
    let (Ok(pk), Ok(sig)) = (
        <[u8; PUBLIC_KEY_LEN]>::try_from(block.public_key.as_slice()),
        <[u8; SIGNATURE_LEN]>::try_from(block.signature.as_slice()),
    ) else {
        return Err("has a signature block with a key or signature of the wrong size".into());
    };
    Ok(Some(Signature {
        agency: block.agency,
        public_key: PublicKey(pk),
        signature: sig,
    }))
}

fn validate(
    h: &Header,
    b: &[u8],
    header_end: u64,
    body_end: u64,
) -> std::result::Result<(), String> {
    let n = h.records;
    // The label names output files (`links-<agency>.csv`) and is printed: one that no column
    // map allows (a path separator, a terminal escape) is a file made or altered elsewhere.
    if !crate::colmap::is_agency_label(&h.agency) {
        return Err(format!(
            "has an agency label that is not allowed ({})",
            crate::colmap::AGENCY_LABEL_RULE
        ));
    }
    if h.filter_bits == 0 || !h.filter_bits.is_multiple_of(64) {
        return Err(format!(
            "has an invalid filter length of {} bits",
            h.filter_bits
        ));
    }
    let seg_total: u64 = h.segments.iter().map(|s| u64::from(s.bits)).sum();
    let mut expect_start = 0u32;
    for s in &h.segments {
        if s.start_bit != expect_start || s.bits % 64 != 0 || s.bits == 0 {
            return Err("has an inconsistent segment layout".into());
        }
        expect_start = s.start_bit.saturating_add(s.bits);
    }
    if seg_total != u64::from(h.filter_bits) {
        return Err("has segments that do not cover the filter".into());
    }
    if h.token_kinds.len() > 255 {
        return Err("has too many token kinds".into());
    }
    if h.rows_read != n.saturating_add(h.rows_rejected) {
        return Err("has counts that do not reconcile (rows read ≠ encoded + rejected)".into());
    }
    let words = u64::from(h.filter_bits / 64);
    let nseg = h.segments.len() as u64;
    let s = &h.sections;
    let checks = [
        (
            "id_offsets",
            s.id_offsets,
            n.checked_add(1).and_then(|x| x.checked_mul(8)),
        ),
        ("id_bytes", s.id_bytes, None),
        (
            "filters",
            s.filters,
            n.checked_mul(words).and_then(|x| x.checked_mul(8)),
        ),
        (
            "popcounts",
            s.popcounts,
            n.checked_mul(1 + nseg).and_then(|x| x.checked_mul(2)),
        ),
        (
            "token_offsets",
            s.token_offsets,
            n.checked_add(1).and_then(|x| x.checked_mul(4)),
        ),
        ("tokens", s.tokens, None),
    ];
    let mut prev_end = header_end;
    for (name, span, expected) in checks {
        if span.offset % ALIGN != 0 || span.offset < prev_end {
            return Err(format!("has a misplaced {name} section"));
        }
        let end = span
            .offset
            .checked_add(span.len)
            .filter(|&e| e <= body_end)
            .ok_or_else(|| format!("has a {name} section beyond the end of the file"))?;
        if let Some(exp) = expected {
            if span.len != exp {
                return Err(format!("has a {name} section of the wrong size"));
            }
        }
        prev_end = end;
    }
    if !s.tokens.len.is_multiple_of(8) {
        return Err("has a tokens section of the wrong size".into());
    }
    let sect = |sp: Span| &b[sp.offset as usize..(sp.offset + sp.len) as usize];
    let id_offs: &[u64] =
        bytemuck::try_cast_slice(sect(s.id_offsets)).map_err(|_| "misaligned ids")?;
    let id_bytes = sect(s.id_bytes);
    if id_offs.first() != Some(&0) || id_offs.last() != Some(&(id_bytes.len() as u64)) {
        return Err("has row references out of range".into());
    }
    // All offsets are checked to be in order (hence within id_bytes) before any is used.
    if id_offs.windows(2).any(|w| w[0] > w[1]) {
        return Err("has row reference offsets out of order".into());
    }
    for w in id_offs.windows(2) {
        if std::str::from_utf8(&id_bytes[w[0] as usize..w[1] as usize]).is_err() {
            return Err("has a row reference that is not UTF-8".into());
        }
    }
    let tok_offs: &[u32] =
        bytemuck::try_cast_slice(sect(s.token_offsets)).map_err(|_| "misaligned token offsets")?;
    let toks: &[u64] = bytemuck::try_cast_slice(sect(s.tokens)).map_err(|_| "misaligned tokens")?;
    if tok_offs.first() != Some(&0) || tok_offs.last().map(|&x| x as usize) != Some(toks.len()) {
        return Err("has token offsets out of range".into());
    }
    if tok_offs.windows(2).any(|w| w[0] > w[1]) {
        return Err("has token offsets out of order".into());
    }
    let kinds = h.token_kinds.len();
    if toks.iter().any(|&t| crate::tokens::token_kind(t) >= kinds) {
        return Err("has a token of an unknown kind".into());
    }
    let _: &[u64] = bytemuck::try_cast_slice(sect(s.filters)).map_err(|_| "misaligned filters")?;
    let _: &[u16] =
        bytemuck::try_cast_slice(sect(s.popcounts)).map_err(|_| "misaligned popcounts")?;
    Ok(())
}
