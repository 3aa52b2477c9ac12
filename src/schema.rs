//! The linkage schema: which fields exist, how each is normalised and tokenised, how many bits
//! each token sets in which filter segment, and which keyed exact tokens are emitted.
//!
//! All agencies of a partnership share one schema. It is identified by its **digest**: SHA-256
//! over a canonical JSON rendering of the parsed schema (defaults filled in), so comments, key
//! order and layout of the TOML file do not change it, while any change of meaning does.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The built-in default schema for UK child records, as TOML: [`UNHARDENED_SCHEMA_TOML`] plus
/// its `[hardening]` table (salting by year of birth and diffusion, chosen in docs/privacy.md).
pub const DEFAULT_SCHEMA_TOML: &str = concat!(
    include_str!("schema_default.toml"),
    include_str!("schema_default_hardening.toml")
);

/// The default schema without its `[hardening]` table (the same as
/// `testdata/schemas/none.toml`): a base to add other hardening to, and the measured baseline.
pub const UNHARDENED_SCHEMA_TOML: &str = include_str!("schema_default.toml");

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaDef {
    /// Schema name.
    pub name: String,
    /// Total filter length in bits.
    pub filter_bits: u32,
    /// Bit position derivation.
    #[serde(default = "default_hashing")]
    pub hashing: Hashing,
    /// Minimum number of filter fields present for a row to be encoded: from 1 to the number of
    /// fields that set filter bits.
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
    /// Hardening of the filters (none by default). Left out of the canonical form when empty,
    /// so schemas written before hardening existed keep their digests.
    #[serde(default, skip_serializing_if = "Hardening::is_none")]
    pub hardening: Hardening,
}

/// Hardening of the Bloom filters against re-identification attacks (README, "Hardening").
///
/// Salting changes which bits tokens set; the other methods transform each segment of the
/// finished filter, in this fixed order: diffusion → balance → xor_fold → blip. Every method is
/// deterministic under the linkage key, and a segment with no bits (a missing field) stays
/// empty, so the matcher still sees it as missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardening {
    /// Attribute salting: mix a stable value (e.g. year of birth) into the hashing of some
    /// fields' tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<SaltDef>,
    /// Linear diffusion layer (Armknecht, Heng & Schnell 2023).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffusion: Option<DiffusionDef>,
    /// Balancing (Schnell & Borgs 2016): each segment is stored with its complement, under a
    /// keyed permutation, so every stored segment has exactly half its bits set.
    #[serde(default, skip_serializing_if = "is_false")]
    pub balance: bool,
    /// XOR folding (Schnell, Borgs & Encarnação 2016): each segment is folded in half by XOR.
    #[serde(default, skip_serializing_if = "is_false")]
    pub xor_fold: bool,
    /// Randomised response (BLIP): each stored bit is flipped with a small probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blip: Option<BlipDef>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Hardening {
    /// True when no hardening is configured.
    pub fn is_none(&self) -> bool {
        self == &Hardening::default()
    }

    /// A one-line description for summaries, in the order the methods are applied.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.salt {
            parts.push(format!(
                "salt by {} ({}; when missing: {})",
                s.value,
                s.fields.join(", "),
                match s.when_missing {
                    SaltMissing::Marker => "marker",
                    SaltMissing::Skip => "skip",
                }
            ));
        }
        if let Some(d) = &self.diffusion {
            parts.push(format!("diffusion t={} x{}", d.t, d.output_factor));
        }
        if self.balance {
            parts.push("balance".into());
        }
        if self.xor_fold {
            parts.push("xor_fold".into());
        }
        if let Some(b) = &self.blip {
            parts.push(format!(
                "blip p={} (ε {:.1} per bit)",
                b.flip_probability,
                b.epsilon_per_bit()
            ));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" → ")
        }
    }

    /// True when the stored filter differs from the hashed one (anything but salting).
    pub fn transforms_filter(&self) -> bool {
        self.diffusion.is_some() || self.balance || self.xor_fold || self.blip.is_some()
    }
}

/// What salting does when a record has no usable salt value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaltMissing {
    /// Hash the salted fields with a fixed "no salt" marker instead: the record still links
    /// with other records that lack the salt, but not with records that have one.
    #[default]
    Marker,
    /// The salted fields set no filter bits (they still feed the keyed exact tokens and count
    /// as present in the field statistics, but not towards `min_fields`).
    Skip,
}

/// Attribute salting as written in the schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaltDef {
    /// Where the salt comes from: `field` or `field:transform` (e.g. `date_of_birth:year`).
    pub value: String,
    /// Fields whose filter tokens are salted.
    pub fields: Vec<String>,
    /// What happens when the salt value is missing or invalid.
    #[serde(default)]
    pub when_missing: SaltMissing,
}

/// The diffusion layer as written in the schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffusionDef {
    /// Input bits XORed into each output bit (2 to 64).
    pub t: u32,
    /// Output length as a multiple of the segment length (1 to 4).
    #[serde(default = "one")]
    pub output_factor: u32,
}

fn one() -> u32 {
    1
}

/// Randomised response as written in the schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlipDef {
    /// Probability that a stored bit is flipped, strictly between 0 and 0.5.
    pub flip_probability: f64,
}

impl BlipDef {
    /// Differential-privacy parameter ε for one stored bit: ln((1 − p)/p) with p the flip
    /// probability. A change of one token changes up to 2k bits (k = bits per token), so a
    /// token is protected with ε = 2k · ln((1 − p)/p); with RAPPOR's f = 2p this is the
    /// familiar 2k · ln((1 − f/2)/(f/2)).
    pub fn epsilon_per_bit(&self) -> f64 {
        let p = self.flip_probability;
        ((1.0 - p) / p).ln()
    }

    /// ε for one token that sets `bits_per_token` bits (see [`BlipDef::epsilon_per_bit`]).
    pub fn epsilon_per_token(&self, bits_per_token: u32) -> f64 {
        2.0 * f64::from(bits_per_token) * self.epsilon_per_bit()
    }
}

/// Salting resolved against the fields.
#[derive(Clone, Debug)]
pub struct SaltLayout {
    /// Field and transform giving the salt value.
    pub source: (usize, Transform),
    /// Per field: whether its filter tokens are salted.
    pub salted: Vec<bool>,
    /// What happens when the salt is missing.
    pub when_missing: SaltMissing,
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
    /// Attribute salting, when configured.
    pub salt: Option<SaltLayout>,
    /// Segment layout of the *stored* filter (after hardening; equal to `segments` without
    /// hardening): what encoding files' headers describe and the matcher compares.
    pub stored_segments: Vec<SegmentLayout>,
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
        let bytes = crate::fsutil::read_small_file(path, 1 << 20, "a schema")?;
        let text = String::from_utf8(bytes).map_err(|e| Error::Schema {
            origin: path.display().to_string(),
            problem: format!(
                "is not UTF-8 text (byte {} is not): use the schema file as distributed",
                e.utf8_error().valid_up_to() + 1
            ),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates schema TOML.
    pub fn from_toml(text: &str, origin: &str) -> Result<Schema> {
        let def: SchemaDef = toml::from_str(text).map_err(|e| Error::Schema {
            origin: origin.into(),
            problem: crate::error::toml_problem(&e, text),
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
        let in_filter = fields.iter().filter(|f| f.segment.is_some()).count();
        if in_filter == 0 {
            return Err(bad("no field sets any filter bits".into()));
        }
        // A row counts the fields that set filter bits, so only 1..=in_filter makes sense.
        if def.min_fields == 0 {
            return Err(bad(format!(
                "min_fields is 0, so a row with no usable linking field would be encoded (as an \
                 empty filter): set min_fields between 1 and {in_filter}, the number of fields \
                 that set filter bits"
            )));
        }
        if usize::try_from(def.min_fields).map_or(true, |m| m > in_filter) {
            return Err(bad(format!(
                "min_fields (2 when not set) is {}, but only {in_filter} field(s) set filter bits \
                 (bits_per_token > 0), so every row would be rejected: set min_fields between 1 \
                 and {in_filter}",
                def.min_fields
            )));
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
                parts.push(
                    resolve_part(p, &fields)
                        .map_err(|e| bad(format!("token `{}`: {e}", t.name)))?,
                );
            }
            tokens.push(TokenLayout {
                name: t.name.clone(),
                parts,
            });
        }
        let salt = match &def.hardening.salt {
            None => None,
            Some(sd) => Some(resolve_salt(sd, &fields).map_err(bad)?),
        };
        let stored_segments = stored_layout(&def.hardening, &segments).map_err(bad)?;
        let digest = digest_of(&def);
        Ok(Schema {
            def,
            digest,
            segments,
            fields,
            tokens,
            salt,
            stored_segments,
            origin: origin.into(),
        })
    }

    /// Length in 64-bit words of the filter as hashed (before hardening).
    pub fn words(&self) -> usize {
        (self.def.filter_bits / 64) as usize
    }

    /// Length in bits of the filter as stored (after hardening).
    pub fn stored_bits(&self) -> u32 {
        self.stored_segments.iter().map(|s| s.bits).sum()
    }

    /// Length in 64-bit words of the filter as stored (after hardening).
    pub fn stored_words(&self) -> usize {
        (self.stored_bits() / 64) as usize
    }

    /// Settings known to be weak against published attacks or for linkage, as warnings for the
    /// encode summary (empty when there are none). The fill estimate assumes typical values:
    /// a six-letter name (7 bigrams), 6 date parts, 4 postcode parts, 1 exact token.
    pub fn weaknesses(&self) -> Vec<String> {
        let mut w = Vec::new();
        let h = &self.def.hardening;
        if h.is_none() {
            w.push(
                "no hardening is configured: unhardened Bloom filters can be re-identified by \
                 frequency and pattern-mining attacks (Christen et al. 2018) and graph matching \
                 (Vidanage et al. 2020); enable [hardening] in the schema, e.g. salting by year of \
                 birth with balance or diffusion (README, \"Hardening\")"
                    .to_string(),
            );
        }
        if self.def.hashing == Hashing::Double {
            w.push(
                "hashing = \"double\": double hashing leaks structure that the attack of \
                 Niedermeyer et al. (2014) exploits; use hashing = \"random\""
                    .to_string(),
            );
        }
        for f in &self.fields {
            if f.segment.is_some() && f.def.bits_per_token <= 2 {
                w.push(format!(
                    "field `{}` sets only {} bit(s) per token: its similarity is mostly noise; use \
                     at least 3",
                    f.def.name, f.def.bits_per_token
                ));
            }
        }
        for (si, s) in self.segments.iter().enumerate() {
            let stored = &self.stored_segments[si];
            if stored.bits < 128 {
                w.push(format!(
                    "segment `{}` is stored in only {} bits: few bits make unrelated records look \
                     alike and leave little room for noise",
                    s.name, stored.bits
                ));
            }
            let set: f64 = self
                .fields
                .iter()
                .filter(|f| f.segment == Some(si))
                .map(|f| {
                    let tokens = match f.def.tokeniser {
                        Tokeniser::Bigrams => 7.0,
                        Tokeniser::DateParts => 6.0,
                        Tokeniser::PostcodeParts => 4.0,
                        Tokeniser::Exact => 1.0,
                    };
                    tokens * f64::from(f.def.bits_per_token)
                })
                .sum();
            let fill = 1.0 - (-set / f64::from(s.bits)).exp();
            if fill > 0.5 {
                w.push(format!(
                    "segment `{}` is expected to be about {:.0} % full for typical values: \
                     unrelated records will look similar (and dense filters are easier to attack); \
                     lower bits_per_token or lengthen the segment",
                    s.name,
                    fill * 100.0
                ));
            }
        }
        if let Some(b) = &h.blip {
            if b.flip_probability < 0.01 {
                w.push(format!(
                    "hardening.blip.flip_probability {} flips fewer than 1 % of bits: it adds \
                     little protection (ε = {:.1} per bit)",
                    b.flip_probability,
                    b.epsilon_per_bit()
                ));
            }
        }
        w
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

/// Resolves a part written `field` or `field:transform` against the fields.
fn resolve_part(
    p: &str,
    fields: &[FieldLayout],
) -> std::result::Result<(usize, Transform), String> {
    let (field, transform) = match p.split_once(':') {
        None => (p, Transform::Value),
        Some((f, tr)) => (
            f,
            match tr {
                "value" => Transform::Value,
                "year" => Transform::Year,
                "initial" => Transform::Initial,
                "soundex" => Transform::Soundex,
                "outward" => Transform::Outward,
                other => {
                    return Err(format!(
                        "unknown transform `{other}` (value, year, initial, soundex, outward)"
                    ))
                }
            },
        ),
    };
    let fi = fields
        .iter()
        .position(|x| x.def.name == field)
        .ok_or_else(|| format!("no field `{field}`"))?;
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
        return Err(format!(
            "transform {transform:?} does not apply to field `{field}`"
        ));
    }
    Ok((fi, transform))
}

fn resolve_salt(sd: &SaltDef, fields: &[FieldLayout]) -> std::result::Result<SaltLayout, String> {
    let source =
        resolve_part(&sd.value, fields).map_err(|e| format!("hardening.salt.value: {e}"))?;
    if sd.fields.is_empty() {
        return Err(
            "hardening.salt.fields is empty: name the fields to salt, e.g. \
                    [\"given_name\", \"family_name\"]"
                .into(),
        );
    }
    let mut salted = vec![false; fields.len()];
    for name in &sd.fields {
        let fi = fields
            .iter()
            .position(|f| &f.def.name == name)
            .ok_or_else(|| format!("hardening.salt.fields: no field `{name}`"))?;
        if fields[fi].segment.is_none() {
            return Err(format!(
                "hardening.salt.fields: field `{name}` sets no filter bits, so there is nothing \
                 to salt"
            ));
        }
        if fi == source.0 {
            return Err(format!(
                "hardening.salt.fields: field `{name}` is the salt's own source; salt other fields \
                 with it"
            ));
        }
        if std::mem::replace(&mut salted[fi], true) {
            return Err(format!(
                "hardening.salt.fields: field `{name}` is listed twice"
            ));
        }
    }
    Ok(SaltLayout {
        source,
        salted,
        when_missing: sd.when_missing,
    })
}

/// The stored segment layout: each segment's length after diffusion, balancing and folding.
fn stored_layout(
    h: &Hardening,
    segments: &[SegmentLayout],
) -> std::result::Result<Vec<SegmentLayout>, String> {
    if let Some(d) = &h.diffusion {
        if !(2..=64).contains(&d.t) {
            return Err(format!(
                "hardening.diffusion.t is {}; it must be between 2 and 64 (each output bit is the \
                 XOR of t input bits)",
                d.t
            ));
        }
        if !(1..=4).contains(&d.output_factor) {
            return Err(format!(
                "hardening.diffusion.output_factor is {}; it must be between 1 and 4",
                d.output_factor
            ));
        }
    }
    if let Some(b) = &h.blip {
        let p = b.flip_probability;
        if !(p > 0.0 && p < 0.5) {
            return Err(format!(
                "hardening.blip.flip_probability is {p}; it must be strictly between 0 and 0.5 \
                 (0 adds no noise, 0.5 destroys the filter)"
            ));
        }
    }
    let mut out = Vec::with_capacity(segments.len());
    let mut start = 0u32;
    for s in segments {
        let mut bits = s.bits;
        if let Some(d) = &h.diffusion {
            bits *= d.output_factor;
        }
        if h.balance {
            bits *= 2;
        }
        if h.xor_fold {
            if bits % 128 != 0 {
                let down = (s.bits / 128) * 128;
                let up = down + 128;
                let lengths = if down > 0 {
                    format!("{down} or {up}")
                } else {
                    up.to_string()
                };
                return Err(format!(
                    "hardening.xor_fold: segment `{}` has {bits} bits ({} words) when it is \
                     folded; folding halves a segment, so it needs an even number of 64-bit words: \
                     make the segment a multiple of 128 bits (e.g. {lengths}), or enable balance",
                    s.name,
                    bits / 64,
                ));
            }
            bits /= 2;
        }
        out.push(SegmentLayout {
            name: s.name.clone(),
            start_bit: start,
            bits,
        });
        start = start
            .checked_add(bits)
            .filter(|&t| t <= 65_536)
            .ok_or_else(|| "the hardened filter would be longer than 65536 bits".to_string())?;
    }
    Ok(out)
}

fn canonical_json(def: &SchemaDef) -> String {
    // Through `serde_json::Value`, whose maps are sorted by key (serde_json without its
    // `preserve_order` feature: were a dependency to turn it on, keys would come out in
    // declaration order and every digest would change, which the pinned default digest in
    // tests/vectors.rs would catch), and with all defaults explicit, so this is canonical. A
    // version label inside makes the digest change if the canonical form does.
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
    fn a_schema_file_that_is_not_utf8_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        let mut text = DEFAULT_SCHEMA_TOML.as_bytes().to_vec();
        text.extend_from_slice(b"# caf\xe9\n");
        std::fs::write(&p, &text).unwrap();
        let e = Schema::load(&p).unwrap_err().to_string();
        let at = DEFAULT_SCHEMA_TOML.len() + "# caf".len() + 1;
        assert!(e.contains("s.toml"), "{e}");
        assert!(
            e.contains(&format!("is not UTF-8 text (byte {at} is not)")),
            "{e}"
        );
        // The same text as UTF-8 loads.
        text.truncate(DEFAULT_SCHEMA_TOML.len());
        std::fs::write(&p, &text).unwrap();
        assert!(Schema::load(&p).is_ok());
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

    #[test]
    fn min_fields_must_be_between_one_and_the_fields_in_the_filter() {
        // The default schema has 6 fields that set filter bits (nhs_number and upn do not).
        let with = |m: &str| {
            Schema::from_toml(
                &DEFAULT_SCHEMA_TOML.replacen("min_fields = 2", m, 1),
                "m.toml",
            )
        };
        for ok in ["min_fields = 1", "min_fields = 6"] {
            assert_eq!(
                with(ok).unwrap().def.min_fields,
                ok[13..].parse::<u32>().unwrap()
            );
        }
        let err = with("min_fields = 0").unwrap_err().to_string();
        assert!(err.starts_with("schema m.toml: min_fields is 0"), "{err}");
        assert!(err.contains("set min_fields between 1 and 6"), "{err}");
        for too_many in ["min_fields = 7", "min_fields = 4294967295"] {
            let err = with(too_many).unwrap_err().to_string();
            assert!(
                err.contains("but only 6 field(s) set filter bits"),
                "{too_many}: {err}"
            );
            assert!(err.ends_with("set min_fields between 1 and 6"), "{err}");
        }
        // The default of 2 needs two fields in the filter: keep only family_name in it.
        let mut text = UNHARDENED_SCHEMA_TOML.replacen("min_fields = 2\n", "", 1);
        for bits in [3, 6, 8, 14] {
            text = text.replace(
                &format!("bits_per_token = {bits}\n"),
                "bits_per_token = 0\n",
            );
        }
        let err = Schema::from_toml(&text, "one.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("min_fields (2 when not set) is 2, but only 1 field(s)"),
            "{err}"
        );
        assert!(Schema::from_toml(&format!("min_fields = 1\n{text}"), "one.toml").is_ok());
    }

    fn hardened(h: &str) -> Result<Schema> {
        Schema::from_toml(
            &format!("{UNHARDENED_SCHEMA_TOML}\n[hardening]\n{h}\n"),
            "h.toml",
        )
    }

    #[test]
    fn hardening_is_in_the_digest_and_empty_hardening_is_not() {
        let d = Schema::from_toml(UNHARDENED_SCHEMA_TOML, "none.toml").unwrap();
        assert_eq!(hardened("").unwrap().digest, d.digest);
        assert_eq!(hardened("balance = false").unwrap().digest, d.digest);
        let mut digests = std::collections::BTreeSet::new();
        for h in [
            "balance = true",
            "blip = { flip_probability = 0.05 }",
            "blip = { flip_probability = 0.1 }",
            "diffusion = { t = 5 }",
            "diffusion = { t = 5, output_factor = 2 }",
            "salt = { value = \"date_of_birth:year\", fields = [\"family_name\"] }",
            "salt = { value = \"date_of_birth:year\", fields = [\"family_name\"], when_missing = \"skip\" }",
        ] {
            let s = hardened(h).unwrap();
            assert_ne!(s.digest, d.digest, "{h}");
            assert!(digests.insert(s.digest.clone()), "{h}: digest not unique");
            assert!(s.weaknesses().iter().all(|w| !w.contains("no hardening")));
        }
        assert!(d.weaknesses().iter().any(|w| w.contains("no hardening")));
        assert_eq!(d.def.hardening.describe(), "none");
        let all = hardened(
            "salt = { value = \"date_of_birth:year\", fields = [\"family_name\"] }\n\
             diffusion = { t = 3, output_factor = 2 }\nbalance = true\nxor_fold = true\n\
             blip = { flip_probability = 0.05 }",
        )
        .unwrap();
        assert_eq!(
            all.def.hardening.describe(),
            "salt by date_of_birth:year (family_name; when missing: marker) → diffusion t=3 x2 → \
             balance → xor_fold → blip p=0.05 (ε 2.9 per bit)"
        );
        // An explicit default equals the omitted one.
        assert_eq!(
            hardened("diffusion = { t = 5 }").unwrap().digest,
            hardened("diffusion = { t = 5, output_factor = 1 }")
                .unwrap()
                .digest
        );
    }

    #[test]
    fn stored_layout_follows_the_hardening() {
        let bits = |h: &str| -> Vec<u32> {
            hardened(h)
                .unwrap()
                .stored_segments
                .iter()
                .map(|s| s.bits)
                .collect()
        };
        assert_eq!(bits(""), [320, 256, 192, 256]);
        assert_eq!(bits("balance = true"), [640, 512, 384, 512]);
        assert_eq!(
            bits("balance = true\nxor_fold = true"),
            [320, 256, 192, 256]
        );
        assert_eq!(
            bits("diffusion = { t = 3, output_factor = 2 }\nxor_fold = true"),
            [320, 256, 192, 256]
        );
        let s = hardened("balance = true").unwrap();
        assert_eq!(
            (s.stored_bits(), s.stored_words(), s.words()),
            (2048, 32, 16)
        );
        let starts: Vec<u32> = s.stored_segments.iter().map(|x| x.start_bit).collect();
        assert_eq!(starts, [0, 640, 1152, 1536]);
    }

    #[test]
    fn rejects_bad_hardening_naming_the_parameter() {
        let cases = [
            ("blip = { flip_probability = 0.0 }", "hardening.blip.flip_probability"),
            ("blip = { flip_probability = 0.5 }", "strictly between 0 and 0.5"),
            ("blip = { flip_probability = -0.1 }", "hardening.blip.flip_probability"),
            ("blip = { flip_probability = nan }", "hardening.blip.flip_probability"),
            ("xor_fold = true", "segment `given` has 320 bits (5 words)"),
            ("diffusion = { t = 1 }", "hardening.diffusion.t"),
            ("diffusion = { t = 65 }", "hardening.diffusion.t"),
            ("diffusion = { t = 3, output_factor = 0 }", "output_factor"),
            ("diffusion = { t = 3, output_factor = 4 }\nbalance = true\n[[x]]", "unknown field"),
            ("balance = 1", "invalid type"),
            ("blur = true", "unknown field `blur`"),
            ("salt = { value = \"date_of_birth:soundex\", fields = [\"family_name\"] }", "hardening.salt.value"),
            ("salt = { value = \"dob\", fields = [\"family_name\"] }", "no field `dob`"),
            ("salt = { value = \"date_of_birth:year\", fields = [] }", "is empty"),
            ("salt = { value = \"date_of_birth:year\", fields = [\"nhs_number\"] }", "sets no filter bits"),
            ("salt = { value = \"date_of_birth:year\", fields = [\"date_of_birth\"] }", "own source"),
            ("salt = { value = \"date_of_birth:year\", fields = [\"sex\", \"sex\"] }", "listed twice"),
            ("salt = { value = \"date_of_birth:year\", fields = [\"sex\"], when_missing = \"drop\" }", "unknown variant"),
        ];
        for (h, expect) in cases {
            let err = hardened(h).unwrap_err().to_string();
            assert!(err.starts_with("schema h.toml:"), "{h}: {err}");
            assert!(err.contains(expect), "{h}: {err}");
        }
        // The diffusion output length counts against the filter limit.
        let long = UNHARDENED_SCHEMA_TOML
            .replace("bits = 320", "bits = 32448")
            .replace("filter_bits = 1024", "filter_bits = 33152");
        let err = Schema::from_toml(&format!("{long}\n[hardening]\nbalance = true\n"), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("longer than 65536"), "{err}");
    }

    #[test]
    fn blip_epsilon() {
        let b = BlipDef {
            flip_probability: 0.05,
        };
        assert!((b.epsilon_per_bit() - 19f64.ln()).abs() < 1e-12);
        // RAPPOR's form with f = 2p.
        let f = 0.1f64;
        let rappor = 2.0 * ((1.0 - f / 2.0) / (f / 2.0)).ln();
        assert!((b.epsilon_per_token(1) - rappor).abs() < 1e-12);
        assert!((b.epsilon_per_token(8) - 8.0 * rappor).abs() < 1e-12);
    }
}
