//! Linking the encodings of several agencies: compatibility checks, candidate pairs, scoring,
//! and clustering into links. The linkage unit runs this; it never needs the key.
//!
//! Pipeline: [`Inputs::open`] checks that every file was made with the same key, schema and
//! filter layout → [`block::candidates`] proposes pairs (keyed-token blocks, or all pairs when
//! the job is small) → [`score`] compares each pair field by field and fits Fellegi–Sunter
//! weights by EM → [`cluster`] links records greedily by score, at most one record per agency
//! per link unless deduplicating.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::EncodingFile;

pub mod block;
pub mod cluster;
pub mod job;
pub mod score;

/// A record across all inputs: (input index, record index within it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RecordRef {
    /// Index of the input file.
    pub file: u32,
    /// Index of the record in that file.
    pub row: u32,
}

/// The opened, mutually compatible inputs.
pub struct Inputs {
    files: Vec<EncodingFile>,
    /// Global index of each file's first record (prefix sums), plus the total at the end.
    starts: Vec<u32>,
}

/// Options that decide which inputs are acceptable.
#[derive(Clone, Copy, Debug, Default)]
pub struct InputPolicy {
    /// Allow two files of the same agency (deduplication).
    pub dedupe: bool,
}

impl Inputs {
    /// Opens every file (each is fully validated) and checks they can be compared: same key
    /// fingerprint, schema digest and filter layout; distinct agencies unless deduplicating.
    pub fn open(paths: &[PathBuf], policy: InputPolicy) -> Result<Inputs> {
        if paths.len() < 2 {
            return Err(Error::Usage(format!(
                "match needs at least two encoding files (one per agency), got {}",
                paths.len()
            )));
        }
        let mut files = Vec::with_capacity(paths.len());
        for p in paths {
            let f = EncodingFile::open(p)?;
            if f.is_empty() {
                return Err(Error::format(p, "holds no records: was the export empty?"));
            }
            files.push(f);
        }
        check_compatible(&files, policy)?;
        let mut starts = Vec::with_capacity(files.len() + 1);
        let mut total: u64 = 0;
        for f in &files {
            starts.push(total as u32);
            total += f.len() as u64;
        }
        if total > u64::from(u32::MAX) {
            return Err(Error::Usage(
                "more than 4 billion records in one job".into(),
            ));
        }
        starts.push(total as u32);
        Ok(Inputs { files, starts })
    }

    /// The files, in the order given.
    pub fn files(&self) -> &[EncodingFile] {
        &self.files
    }

    /// Total records.
    pub fn total(&self) -> usize {
        *self.starts.last().unwrap_or(&0) as usize
    }

    /// Global id of a record.
    pub fn global(&self, r: RecordRef) -> u32 {
        self.starts[r.file as usize] + r.row
    }

    /// Record of a global id.
    pub fn record(&self, g: u32) -> RecordRef {
        let file = self.starts.partition_point(|&s| s <= g) - 1;
        RecordRef {
            file: file as u32,
            row: g - self.starts[file],
        }
    }

    /// Agency of a global record.
    pub fn agency_of(&self, g: u32) -> &str {
        &self.files[self.record(g).file as usize].header().agency
    }

    /// Input file index of a global record.
    pub fn file_of(&self, g: u32) -> usize {
        self.record(g).file as usize
    }
}

fn check_compatible(files: &[EncodingFile], policy: InputPolicy) -> Result<()> {
    let first = &files[0];
    let h0 = first.header();
    for f in &files[1..] {
        let h = f.header();
        if h.key_fingerprint != h0.key_fingerprint {
            let epochs = if h.key_epoch != h0.key_epoch {
                let (newer, older) = if h.key_epoch > h0.key_epoch {
                    ((f, h), (first, h0))
                } else {
                    ((first, h0), (f, h))
                };
                format!(
                    ": {} encoded with epoch {}, {} with epoch {}. Re-encode {} with the current key",
                    older.1.agency, older.1.key_epoch, newer.1.agency, newer.1.key_epoch, older.1.agency
                )
            } else {
                ". They were made with different linkage keys: every agency must encode with the \
                 partnership's current key"
                    .to_string()
            };
            return Err(Error::Usage(format!(
                "{} (key {}) and {} (key {}) were encoded with different keys{epochs}",
                show(first.path()),
                h0.key_fingerprint,
                show(f.path()),
                h.key_fingerprint
            )));
        }
        if h.schema_digest != h0.schema_digest {
            return Err(Error::Usage(format!(
                "{} (schema {} {}) and {} (schema {} {}) were encoded with different linkage \
                 schemas: every agency must use the partnership's schema (compare with `bloomlink \
                 schema digest`)",
                show(first.path()),
                h0.schema_name,
                &h0.schema_digest[..16.min(h0.schema_digest.len())],
                show(f.path()),
                h.schema_name,
                &h.schema_digest[..16.min(h.schema_digest.len())]
            )));
        }
        if h.filter_bits != h0.filter_bits
            || h.segments != h0.segments
            || h.token_kinds != h0.token_kinds
        {
            return Err(Error::Usage(format!(
                "{} and {} have different filter layouts ({} vs {} bits)",
                show(first.path()),
                show(f.path()),
                h0.filter_bits,
                h.filter_bits
            )));
        }
    }
    if !policy.dedupe {
        for (i, a) in files.iter().enumerate() {
            for b in &files[i + 1..] {
                if a.header().agency == b.header().agency {
                    return Err(Error::Usage(format!(
                        "{} and {} are both from agency `{}`: pass --dedupe to link records within \
                         one agency, or give one file per agency",
                        show(a.path()),
                        show(b.path()),
                        a.header().agency
                    )));
                }
            }
        }
    }
    let mut checksums: Vec<String> = files.iter().map(|f| f.checksum_hex()).collect();
    checksums.sort();
    if checksums.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::Usage("the same encoding file is given twice".into()));
    }
    Ok(())
}

fn show(p: &Path) -> String {
    p.display().to_string()
}
