//! The agency's export read back as plaintext: the ground truth for every encoded record, and
//! the attacker's reference distribution (the same values, without the link to the records).
//!
//! Values are normalised exactly as the encoder normalises them
//! ([`crate::encode::normalise_value`]), so a value here is what the encoding was made from.

use std::collections::HashMap;
use std::path::Path;

use crate::colmap::{ColumnMap, TextEncoding};
use crate::date::Date;
use crate::encode::{decode, normalise_value, Records};
use crate::error::{Error, Result};
use crate::schema::{SaltMissing, Schema, SegmentLayout, Transform};
use crate::tokens::{self, Value};

/// "No value" in the per-record id vectors.
pub(crate) const NONE: u32 = u32::MAX;

/// What an attacker can learn a value of.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A filter segment: its bit pattern encodes the values of the fields in it.
    Segment {
        /// The segment as laid out in the encoding (stored layout).
        layout: SegmentLayout,
        /// Most bits any field of the segment sets per token.
        k_max: u32,
    },
    /// A keyed exact token kind.
    Token {
        /// Kind index (top byte of the token).
        kind: usize,
    },
}

/// One target with its plaintext values.
#[derive(Clone, Debug)]
pub(crate) struct Attribute {
    /// Human name, e.g. `segment given` or `token dob`.
    pub name: String,
    pub target: Target,
    /// Schema fields a value reveals in full (segment: its fields; token: its `value` parts).
    pub fields: Vec<usize>,
    /// Per record: the value id, or [`NONE`].
    pub truth: Vec<u32>,
    /// Per value id: number of records holding it.
    pub counts: Vec<u32>,
    /// Per value id: the field value id of each of `fields` ([`NONE`] if missing).
    pub components: Vec<Vec<u32>>,
    /// Segment targets only: per value id, its filter tokens (ids into `token_text`), sorted.
    pub tokens: Vec<Vec<u32>>,
    /// Segment targets only: the text of each filter token.
    pub token_text: Vec<Vec<u8>>,
    /// Segment targets only: bits each filter token sets. A token is the pair (text, bits per
    /// token of its field): fields of one segment share positions, so a token of a field with
    /// fewer bits sets a subset of the positions the same text sets in a field with more.
    pub token_bits: Vec<u32>,
}

impl Attribute {
    /// An attribute with no values yet, over `n` records.
    fn empty(name: String, target: Target, fields: Vec<usize>, n: usize) -> Attribute {
        Attribute {
            name,
            target,
            fields,
            truth: vec![NONE; n],
            counts: Vec::new(),
            components: Vec::new(),
            tokens: Vec::new(),
            token_text: Vec::new(),
            token_bits: Vec::new(),
        }
    }
}

/// The export's values, per encoded record.
pub(crate) struct Truth {
    /// Number of encoded records.
    pub n: usize,
    /// Per schema field, per record: field value id or [`NONE`].
    pub field_ids: Vec<Vec<u32>>,
    /// Per schema field: canonical text of each value id.
    pub field_text: Vec<Vec<String>>,
    /// The targets: segments in stored order, then token kinds.
    pub attrs: Vec<Attribute>,
}

/// Reads `input` again with `map`, normalises every mapped field as the encoder does, and lines
/// the rows up with the encoded `records` by record id (the encoder keeps the first row of a
/// duplicated id and drops rejected rows, so every encoded id is found exactly once).
pub(crate) fn load(
    input: &Path,
    schema: &Schema,
    layout: &[SegmentLayout],
    map: &ColumnMap,
    today: Date,
    records: &Records,
) -> Result<Truth> {
    let bytes = std::fs::read(input).map_err(|e| Error::io(input, e))?;
    let body: &[u8] = match map.encoding {
        TextEncoding::Utf8 | TextEncoding::Utf8Bom => {
            bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(&bytes)
        }
        TextEncoding::Windows1252 => &bytes,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(map.delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(body);
    let bad_csv = |e: csv::Error| Error::input(input, format!("cannot be read as CSV: {e}"));
    let mut buf = String::new();
    let header: Vec<String> = rdr
        .byte_headers()
        .map_err(bad_csv)?
        .iter()
        .map(|h| {
            decode(map.encoding, h, &mut buf)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        })
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let id_col = column(&map.record_id).ok_or_else(|| {
        Error::input(
            input,
            format!("the header has no column `{}`", map.record_id),
        )
    })?;
    let mut sources = Vec::new();
    for (field, col) in &map.columns {
        let fi = schema.field_index(field).ok_or_else(|| Error::ColumnMap {
            path: map.path.clone(),
            problem: format!("maps unknown field `{field}`"),
        })?;
        let ci = column(col)
            .ok_or_else(|| Error::input(input, format!("the header has no column `{col}`")))?;
        sources.push((fi, ci));
    }

    let n = records.len();
    let mut wanted: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, id) in records.ids().enumerate() {
        wanted.insert(id, i);
    }
    let nf = schema.fields.len();
    let mut values: Vec<Vec<Option<Value>>> = vec![vec![None; nf]; n];
    let mut found = vec![false; n];
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(bad_csv(e)),
        }
        let Some(raw_id) = rec.get(id_col) else {
            continue;
        };
        let Some(id) = decode(map.encoding, raw_id, &mut buf).map(|s| s.trim().to_string()) else {
            continue;
        };
        let Some(&i) = wanted.get(id.as_str()) else {
            continue;
        };
        if found[i] || rec.len() != header.len() {
            continue;
        }
        // A row the encoder rejected as a whole may share its id with the row it kept: skip
        // rows it would reject (undecodable bytes, too few linking fields).
        let mut row: Vec<Option<Value>> = vec![None; nf];
        let mut bad_bytes = false;
        let mut in_filter = 0u32;
        for &(fi, ci) in &sources {
            let Some(raw) = rec.get(ci) else { continue };
            if raw.len() > crate::normalise::MAX_FIELD_BYTES {
                continue;
            }
            let Some(text) = decode(map.encoding, raw, &mut buf) else {
                bad_bytes = true;
                break;
            };
            if let Ok(Some(v)) = normalise_value(schema.fields[fi].def.normaliser, text, map, today)
            {
                in_filter += u32::from(schema.fields[fi].segment.is_some());
                row[fi] = Some(v);
            }
        }
        if bad_bytes || in_filter < schema.def.min_fields {
            continue;
        }
        found[i] = true;
        values[i] = row;
    }
    let missing = found.iter().filter(|f| !**f).count();
    if missing > 0 {
        return Err(Error::input(
            input,
            format!(
                "{missing} encoded records were not found when the file was read again: was it \
                 changed during the run?"
            ),
        ));
    }
    Ok(build(schema, layout, &values))
}

/// Interns values and builds the targets from per-record canonical values.
fn build(schema: &Schema, layout: &[SegmentLayout], values: &[Vec<Option<Value>>]) -> Truth {
    let n = values.len();
    let nf = schema.fields.len();
    let mut field_ids = vec![vec![NONE; n]; nf];
    let mut field_text: Vec<Vec<String>> = vec![Vec::new(); nf];
    for fi in 0..nf {
        let mut ids: HashMap<String, u32> = HashMap::new();
        for (r, row) in values.iter().enumerate() {
            if let Some(v) = &row[fi] {
                let text = v.canonical();
                let next = ids.len() as u32;
                let id = *ids.entry(text.clone()).or_insert_with(|| {
                    field_text[fi].push(text);
                    next
                });
                field_ids[fi][r] = id;
            }
        }
    }

    let salt = schema.salt.as_ref();
    let salt_text: Vec<Option<String>> = values
        .iter()
        .map(|row| {
            let s = salt?;
            row[s.source.0]
                .as_ref()
                .and_then(|v| tokens::part_text(v, s.source.1))
        })
        .collect();
    let mut attrs = Vec::new();
    for seg in layout {
        let Some(si) = schema.segments.iter().position(|s| s.name == seg.name) else {
            continue;
        };
        let fields: Vec<usize> = (0..nf)
            .filter(|&f| schema.fields[f].segment == Some(si))
            .collect();
        if fields.is_empty() {
            continue;
        }
        let ks: Vec<u32> = fields
            .iter()
            .map(|&f| schema.fields[f].def.bits_per_token)
            .collect();
        let mut a = Attribute::empty(
            format!("segment {}", seg.name),
            Target::Segment {
                layout: seg.clone(),
                k_max: ks.iter().copied().max().unwrap_or(0),
            },
            fields.clone(),
            n,
        );
        let mut ids: HashMap<(Vec<u32>, Option<&str>), u32> = HashMap::new();
        let mut token_ids: HashMap<(u32, Vec<u8>), u32> = HashMap::new();
        let mut scratch = Vec::new();
        // With attribute salting the attacker knows the schema and adapts: a salted segment's
        // value is the fields' values *and* the salt (e.g. the year of birth), and its tokens
        // are hashed as the encoder hashes them (0x1F ‖ salt ‖ 0x1F ‖ token; an empty salt is
        // the marker; with `skip` a salted field without salt sets no bits).
        let salted = |f: usize| salt.is_some_and(|s| s.salted.get(f).copied().unwrap_or(false));
        let segment_salted = fields.iter().any(|&f| salted(f));
        for r in 0..n {
            let tuple: Vec<u32> = fields.iter().map(|&f| field_ids[f][r]).collect();
            if tuple.iter().all(|&t| t == NONE) {
                continue;
            }
            let salt_value = if segment_salted {
                salt_text[r].as_deref()
            } else {
                None
            };
            let key = (tuple, salt_value);
            let next = ids.len() as u32;
            let id = match ids.get(&key) {
                Some(&id) => id,
                None => {
                    let mut toks = Vec::new();
                    for &f in &fields {
                        let Some(v) = &values[r][f] else { continue };
                        let prefix: Option<Vec<u8>> = if salted(f) {
                            match (salt_value, salt.map(|s| s.when_missing)) {
                                (Some(sv), _) => Some(salt_prefix(sv.as_bytes())),
                                (None, Some(SaltMissing::Skip)) => continue,
                                (None, _) => Some(salt_prefix(b"")),
                            }
                        } else {
                            None
                        };
                        let k = schema.fields[f].def.bits_per_token;
                        scratch.clear();
                        tokens::tokenise(v, schema.fields[f].def.tokeniser, &mut scratch);
                        for t in scratch.drain(..) {
                            let t = match &prefix {
                                Some(p) => [p.as_slice(), t.as_slice()].concat(),
                                None => t,
                            };
                            let nt = token_ids.len() as u32;
                            let tid = *token_ids.entry((k, t.clone())).or_insert_with(|| {
                                a.token_text.push(t);
                                a.token_bits.push(k);
                                nt
                            });
                            toks.push(tid);
                        }
                    }
                    toks.sort_unstable();
                    toks.dedup();
                    a.tokens.push(toks);
                    a.components.push(key.0.clone());
                    a.counts.push(0);
                    ids.insert(key, next);
                    next
                }
            };
            a.truth[r] = id;
            a.counts[id as usize] += 1;
        }
        attrs.push(a);
    }

    for (kind, t) in schema.tokens.iter().enumerate() {
        let fields: Vec<usize> = t
            .parts
            .iter()
            .filter(|(_, tr)| *tr == Transform::Value)
            .map(|&(f, _)| f)
            .collect();
        let mut a = Attribute::empty(
            format!("token {}", t.name),
            Target::Token { kind },
            fields.clone(),
            n,
        );
        let mut ids: HashMap<Vec<u8>, u32> = HashMap::new();
        for (r, row) in values.iter().enumerate() {
            let mut msg = Vec::new();
            let mut complete = true;
            for (i, &(f, tr)) in t.parts.iter().enumerate() {
                match row[f].as_ref().and_then(|v| tokens::part_text(v, tr)) {
                    Some(p) => {
                        if i > 0 {
                            msg.push(tokens::TOKEN_PART_SEPARATOR);
                        }
                        msg.extend_from_slice(p.as_bytes());
                    }
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete {
                continue;
            }
            let next = ids.len() as u32;
            let id = *ids.entry(msg).or_insert_with(|| {
                a.components
                    .push(fields.iter().map(|&f| field_ids[f][r]).collect());
                a.counts.push(0);
                next
            });
            a.truth[r] = id;
            a.counts[id as usize] += 1;
        }
        attrs.push(a);
    }
    Truth {
        n,
        field_ids,
        field_text,
        attrs,
    }
}

/// The bytes a salted token starts with: 0x1F ‖ salt ‖ 0x1F (as the encoder salts).
fn salt_prefix(salt: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(salt.len() + 2);
    p.push(tokens::TOKEN_PART_SEPARATOR);
    p.extend_from_slice(salt);
    p.push(tokens::TOKEN_PART_SEPARATOR);
    p
}

/// Per record: the id of its encoding of `target` (equal encodings, equal ids), or [`NONE`]
/// when the record has none (an empty segment, a token not emitted). Returns the ids and the
/// number of distinct encodings.
pub(crate) fn encoding_ids(records: &Records, target: &Target) -> (Vec<u32>, usize) {
    let n = records.len();
    let mut out = vec![NONE; n];
    match target {
        Target::Segment { layout, .. } => {
            let range = layout.word_range();
            let mut ids: HashMap<&[u64], u32> = HashMap::new();
            for (i, o) in out.iter_mut().enumerate() {
                let Some(words) = records.filter(i).get(range.clone()) else {
                    continue;
                };
                if words.iter().all(|w| *w == 0) {
                    continue;
                }
                let next = ids.len() as u32;
                *o = *ids.entry(words).or_insert(next);
            }
            (out, ids.len())
        }
        Target::Token { kind } => {
            let mut ids: HashMap<u64, u32> = HashMap::new();
            for (i, o) in out.iter_mut().enumerate() {
                if let Some(&t) = records
                    .tokens_of(i)
                    .iter()
                    .find(|&&t| tokens::token_kind(t) == *kind)
                {
                    let next = ids.len() as u32;
                    *o = *ids.entry(t).or_insert(next);
                }
            }
            (out, ids.len())
        }
    }
}
