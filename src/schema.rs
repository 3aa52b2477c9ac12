//! The linkage schema: which fields exist, how each is normalised and tokenised, how many bits
//! each token sets in which filter segment, and which keyed exact tokens are emitted.
//!
//! All agencies of a partnership share one schema. It is identified by its **digest**: SHA-256
//! over a canonical JSON rendering of the parsed schema (defaults filled in), so comments, key
//! order and layout of the TOML file do not change it, while any change of meaning does.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The built-in default schema for UK child records, as TOML.
pub const DEFAULT_SCHEMA_TOML: &str = include_str!("schema_default.toml");

/// Most keyed tokens a schema may define (the token kind is kept in the top byte of a token).
pub const MAX_TOKEN_KINDS: usize = 255;

/// How a field's raw text is turned into a canonical value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normaliser {
    /// Personal names: diacritics folded, upper case, punctuation removed, parts split.
    Name,
    /// Date of birth, parsed with the column map's formats and checked for plausibility.
    Date,
    /// Sex, mapped to M/F/U with the column map's codes (U counts as missing).
    Sex,
    /// UK postcode, validated and written `OUT IN`.
    Postcode,
    /// NHS number with modulus-11 check.
    NhsNumber,
    /// DfE unique pupil number with modulus-23 check letter.
    Upn,
    /// Free text: upper case, whitespace collapsed.
    Text,
}

/// How a canonical value is split into tokens for the Bloom filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokeniser {
    /// Padded bigrams of each name part (`_J JO OH HN N_`).
    Bigrams,
    /// The whole value as one token.
    Exact,
    /// Year, month, day, year-month, full date and the unordered day/month pair (so a
    /// day/month swap still shares most tokens).
    DateParts,
    /// Full postcode, sector, district and area.
    PostcodeParts,
}

/// How a token's bit positions are derived from its HMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hashing {
    /// Independent positions taken from the HMAC output (more HMAC blocks when needed).
    Random,
    /// Double hashing: position i = (h1 + i·h2) mod segment length.
    Double,
}

/// A part of a keyed exact token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// The canonical value.
    Value,
    /// Year of a date.
    Year,
    /// First letter of a name.
    Initial,
    /// Soundex code of a name's first part.
    Soundex,
    /// Postcode outward code (district).
    Outward,
}

impl Transform {
    /// Every transform, in index order.
    pub const ALL: [Transform; 5] = [
        Transform::Value,
        Transform::Year,
        Transform::Initial,
        Transform::Soundex,
        Transform::Outward,
    ];

    /// Position in [`Transform::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A filter segment: a word-aligned range of the filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Segment name.
    pub name: String,
    /// Length in bits (a multiple of 64).
    pub bits: u32,
}

/// One field of the schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Field name, used by column maps (e.g. `family_name`).
    pub name: String,
    /// Normaliser.
    pub normaliser: Normaliser,
    /// Tokeniser.
    pub tokeniser: Tokeniser,
    /// Segment the field's tokens go into; required when `bits_per_token > 0`.
    #[serde(default)]
    pub segment: Option<String>,
    /// Bits set per token (0 = not in the filter).
    #[serde(default)]
    pub bits_per_token: u32,
}

/// A keyed exact token definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDef {
    /// Token name (e.g. `nhs`).
    pub name: String,
    /// Parts, each `field` or `field:transform`.
    pub parts: Vec<String>,
}

/// A linkage schema as written in TOML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaDef {
    /// Schema name.
    pub name: String,
    /// Total filter length in bits.
    pub filter_bits: u32,
    /// Bit position derivation.
    #[serde(default = "default_hashing")]
    pub hashing: Hashing,
    /// Minimum number of filter fields present for a row to be encoded.
    #[serde(default = "default_min_fields")]
    pub min_fields: u32,
    /// Filter segments, in order.
    #[serde(rename = "segment")]
    pub segments: Vec<Segment>,
    /// Fields.
    #[serde(rename = "field")]
    pub fields: Vec<Field>,
    /// Keyed exact tokens.
    #[serde(rename = "token", default)]
    pub tokens: Vec<TokenDef>,
}

fn default_hashing() -> Hashing {
    Hashing::Random
}

fn default_min_fields() -> u32 {
    2
}

/// A segment's place in the filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentLayout {
    /// Segment name.
    pub name: String,
    /// First bit.
    pub start_bit: u32,
    /// Length in bits.
    pub bits: u32,
}

impl SegmentLayout {
    /// The segment's words within a filter.
    pub fn word_range(&self) -> std::ops::Range<usize> {
        let s = (self.start_bit / 64) as usize;
        s..s + (self.bits / 64) as usize
    }
}

/// A field resolved against the layout.
#[derive(Clone, Debug)]
pub struct FieldLayout {
    /// The field definition.
    pub def: Field,
    /// Index into [`Schema::segments`] when the field sets filter bits.
    pub segment: Option<usize>,
}

/// A token resolved against the fields.
#[derive(Clone, Debug)]
pub struct TokenLayout {
    /// Token name.
    pub name: String,
    /// (field index, transform) for each part.
    pub parts: Vec<(usize, Transform)>,
}

/// A validated schema with its layout and digest.
#[derive(Clone, Debug)]
pub struct Schema {
    /// The definition as parsed.
    pub def: SchemaDef,
    /// Hex SHA-256 of the canonical form.
    pub digest: String,
    /// Segment layout.
    pub segments: Vec<SegmentLayout>,
    /// Fields.
    pub fields: Vec<FieldLayout>,
    /// Keyed tokens.
    pub tokens: Vec<TokenLayout>,
    /// Where it came from (file path or "built-in default"), for messages.
    pub origin: String,
}

impl Schema {
    /// The built-in default.
    pub fn default_uk() -> Schema {
        match Self::from_toml(DEFAULT_SCHEMA_TOML, "built-in default") {
            Ok(s) => s,
            Err(e) => unreachable!("the built-in schema is valid (tested): {e}"),
        }
    }

    /// Loads and validates a schema file.
    pub fn load(path: &Path) -> Result<Schema> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates schema TOML.
    pub fn from_toml(text: &str, origin: &str) -> Result<Schema> {
        let def: SchemaDef = toml::from_str(text).map_err(|e| Error::Schema {
            origin: origin.into(),
            problem: e.to_string().trim_end().to_string(),
        })?;
        Self::from_def(def, origin)
    }

    /// Validates a parsed definition and computes the layout and digest.
    pub fn from_def(def: SchemaDef, origin: &str) -> Result<Schema> {
        let bad = |p: String| Error::Schema {
            origin: origin.into(),
            problem: p,
        };
        let mut segments = Vec::new();
        let mut start = 0u32;
        for s in &def.segments {
            if s.bits == 0 || s.bits % 64 != 0 {
                return Err(bad(format!(
                    "segment `{}` has {} bits; segment lengths must be positive multiples of 64",
                    s.name, s.bits
                )));
            }
            if segments.iter().any(|x: &SegmentLayout| x.name == s.name) {
                return Err(bad(format!("segment `{}` is defined twice", s.name)));
            }
            segments.push(SegmentLayout {
                name: s.name.clone(),
                start_bit: start,
                bits: s.bits,
            });
            start = start
                .checked_add(s.bits)
                .ok_or_else(|| bad("filter too long".into()))?;
        }
        if start != def.filter_bits {
            return Err(bad(format!(
                "filter_bits is {} but the segments add up to {start}",
                def.filter_bits
            )));
        }
        if def.filter_bits == 0 || def.filter_bits > 65_536 {
            return Err(bad("filter_bits must be between 64 and 65536".into()));
        }
        let mut fields = Vec::new();
        for f in &def.fields {
            if f.name.is_empty()
                || !f
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(bad(format!(
                    "field name `{}` must be lower-case letters, digits and _",
                    f.name
                )));
            }
            if fields.iter().any(|x: &FieldLayout| x.def.name == f.name) {
                return Err(bad(format!("field `{}` is defined twice", f.name)));
            }
            if f.bits_per_token > 64 {
                return Err(bad(format!(
                    "field `{}`: bits_per_token {} is more than 64",
                    f.name, f.bits_per_token
                )));
            }
            let segment = match (&f.segment, f.bits_per_token) {
                (_, 0) => None,
                (None, _) => {
                    return Err(bad(format!(
                        "field `{}` sets {} bits per token but names no segment",
                        f.name, f.bits_per_token
                    )))
                }
                (Some(s), _) => Some(
                    segments
                        .iter()
                        .position(|x| &x.name == s)
                        .ok_or_else(|| bad(format!("field `{}`: no segment `{s}`", f.name)))?,
                ),
            };
            let ok = matches!(
                (f.normaliser, f.tokeniser),
                (_, Tokeniser::Exact)
                    | (Normaliser::Name | Normaliser::Text, Tokeniser::Bigrams)
                    | (Normaliser::Date, Tokeniser::DateParts)
                    | (Normaliser::Postcode, Tokeniser::PostcodeParts)
            );
            if !ok {
                return Err(bad(format!(
                    "field `{}`: tokeniser {:?} does not fit normaliser {:?}",
                    f.name, f.tokeniser, f.normaliser
                )));
            }
            fields.push(FieldLayout {
                def: f.clone(),
                segment,
            });
        }
        if !fields.iter().any(|f| f.segment.is_some()) {
            return Err(bad("no field sets any filter bits".into()));
        }
        if def.tokens.len() > MAX_TOKEN_KINDS {
            return Err(bad(format!("more than {MAX_TOKEN_KINDS} tokens")));
        }
        let mut tokens = Vec::new();
        for t in &def.tokens {
            if tokens.iter().any(|x: &TokenLayout| x.name == t.name) {
                return Err(bad(format!("token `{}` is defined twice", t.name)));
            }
            if t.parts.is_empty() {
                return Err(bad(format!("token `{}` has no parts", t.name)));
            }
            let mut parts = Vec::new();
            for p in &t.parts {
                let (field, transform) = match p.split_once(':') {
                    None => (p.as_str(), Transform::Value),
                    Some((f, tr)) => (
                        f,
                        match tr {
                            "value" => Transform::Value,
                            "year" => Transform::Year,
                            "initial" => Transform::Initial,
                            "soundex" => Transform::Soundex,
                            "outward" => Transform::Outward,
                            other => {
                                return Err(bad(format!(
                                    "token `{}`: unknown transform `{other}` (value, year, \
                                     initial, soundex, outward)",
                                    t.name
                                )))
                            }
                        },
                    ),
                };
                let fi = fields
                    .iter()
                    .position(|x| x.def.name == field)
                    .ok_or_else(|| bad(format!("token `{}`: no field `{field}`", t.name)))?;
                let norm = fields[fi].def.normaliser;
                let fits = match transform {
                    Transform::Value => true,
                    Transform::Year => norm == Normaliser::Date,
                    Transform::Initial | Transform::Soundex => {
                        matches!(norm, Normaliser::Name | Normaliser::Text)
                    }
                    Transform::Outward => norm == Normaliser::Postcode,
                };
                if !fits {
                    return Err(bad(format!(
                        "token `{}`: transform {transform:?} does not apply to field `{field}`",
                        t.name
                    )));
                }
                parts.push((fi, transform));
            }
            tokens.push(TokenLayout {
                name: t.name.clone(),
                parts,
            });
        }
        let digest = digest_of(&def);
        Ok(Schema {
            def,
            digest,
            segments,
            fields,
            tokens,
            origin: origin.into(),
        })
    }

    /// Filter length in 64-bit words.
    pub fn words(&self) -> usize {
        (self.def.filter_bits / 64) as usize
    }

    /// Index of a field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.def.name == name)
    }

    /// The canonical JSON the digest is computed over.
    pub fn canonical_json(&self) -> String {
        canonical_json(&self.def)
    }
}

fn canonical_json(def: &SchemaDef) -> String {
    // Struct fields serialise in declaration order and all defaults are explicit, so this is
    // canonical. A version label inside makes the digest change if the canonical form does.
    let wrapped = serde_json::json!({ "bloomlink_schema_canonical": 1, "schema": def });
    wrapped.to_string()
}

fn digest_of(def: &SchemaDef) -> String {
    hex::encode(
        ring::digest::digest(&ring::digest::SHA256, canonical_json(def).as_bytes()).as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_1024_bits() {
        let s = Schema::default_uk();
        assert_eq!(s.def.filter_bits, 1024);
        assert_eq!(s.words(), 16);
        assert!(s.field_index("nhs_number").is_some());
        assert_eq!(s.digest.len(), 64);
    }

    #[test]
    fn digest_ignores_formatting_but_not_meaning() {
        let a = Schema::default_uk();
        let reformatted: String = DEFAULT_SCHEMA_TOML
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{}   \n", l.replace(" = ", "=")))
            .collect();
        let b = Schema::from_toml(&reformatted, "x").unwrap();
        assert_eq!(a.digest, b.digest);
        let changed = DEFAULT_SCHEMA_TOML.replace("bits_per_token = 10", "bits_per_token = 11");
        let c = Schema::from_toml(&changed, "x").unwrap();
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn rejects_bad_layouts() {
        let cases = [
            ("bits = 320", "bits = 300", "multiples of 64"),
            ("filter_bits = 1024", "filter_bits = 960", "add up"),
            ("segment = \"family\"", "segment = \"nope\"", "no segment"),
            (
                "\"family_name:soundex\"",
                "\"family_name:year\"",
                "does not apply",
            ),
            ("name = \"nhs\"", "name = \"upn\"", "defined twice"),
        ];
        for (from, to, expect) in cases {
            let text = DEFAULT_SCHEMA_TOML.replacen(from, to, 1);
            let err = Schema::from_toml(&text, "x").unwrap_err().to_string();
            assert!(err.contains(expect), "{from} -> {to}: {err}");
        }
        let err = Schema::from_toml("name = 1", "x").unwrap_err().to_string();
        assert!(err.starts_with("schema x:"), "{err}");
    }
}
