//! Column maps: how one agency's CSV export feeds the schema's fields.
//!
//! A column map is per agency and not part of the schema digest: exports differ between agencies
//! and over time, the meaning of the encoded fields does not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::date::{default_date_formats, DateFormat};
use crate::error::{Error, Result};
use crate::normalise;
use crate::schema::Schema;

/// The rule for agency labels, for messages.
pub const AGENCY_LABEL_RULE: &str =
    "agency must be 1-64 characters of lower-case letters, digits, - and _";

/// True if `s` is a valid agency label (column maps, signing keys, trust files).
pub fn is_agency_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Character encoding of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum TextEncoding {
    /// UTF-8; a leading byte-order mark is accepted and skipped.
    #[serde(rename = "utf-8", alias = "utf8", alias = "UTF-8")]
    Utf8,
    /// UTF-8 with a byte-order mark (accepted with or without one, like `utf-8`).
    #[serde(rename = "utf-8-bom", alias = "utf-8-sig", alias = "UTF-8-BOM")]
    Utf8Bom,
    /// Windows code page 1252, as legacy case-management systems export.
    #[serde(rename = "windows-1252", alias = "cp1252", alias = "Windows-1252")]
    Windows1252,
}

impl TextEncoding {
    /// The `encoding` value that names it in a column map.
    pub fn map_value(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Utf8Bom => "utf-8-bom",
            TextEncoding::Windows1252 => "windows-1252",
        }
    }
}

/// Canonical sex value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Sex {
    /// Male.
    M,
    /// Female.
    F,
    /// Unknown / not stated / indeterminate: treated as missing.
    U,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnMapFile {
    agency: String,
    record_id: String,
    #[serde(default = "default_encoding")]
    encoding: TextEncoding,
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(default)]
    date_formats: Option<Vec<String>>,
    columns: BTreeMap<String, String>,
    #[serde(default)]
    sex_codes: Option<BTreeMap<String, Sex>>,
    #[serde(default)]
    missing: Option<MissingFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MissingFile {
    #[serde(default)]
    extra: Vec<String>,
    #[serde(default)]
    keep: Vec<String>,
}

/// How one export spells "no value", beyond the built-in null markers: the column map's
/// `[missing]` table. Values are compared trimmed and regardless of case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// Values that mean "no value" in every mapped column of this export (`ZZZ`, `#N/A`).
    pub extra: Vec<String>,
    /// Built-in null markers and newborn placeholders that are real names in this export (the
    /// surname Na): read as names in the name fields.
    pub keep: Vec<String>,
}

/// What the column map's `[missing]` table says about a raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingVerdict {
    /// Not listed: the normaliser decides.
    Unlisted,
    /// Listed in `extra`: the field is missing.
    Missing,
    /// Listed in `keep`: a name, whatever the built-in lists say.
    Kept,
}

impl Missing {
    /// The table's verdict on `raw` (untrimmed).
    pub fn verdict(&self, raw: &str) -> MissingVerdict {
        let t = raw.trim();
        let listed = |list: &[String]| {
            list.iter().any(|v| {
                if t.is_ascii() {
                    v.eq_ignore_ascii_case(t)
                } else {
                    *v == t.to_uppercase()
                }
            })
        };
        if listed(&self.extra) {
            MissingVerdict::Missing
        } else if listed(&self.keep) {
            MissingVerdict::Kept
        } else {
            MissingVerdict::Unlisted
        }
    }
}

fn default_encoding() -> TextEncoding {
    TextEncoding::Utf8
}

/// A validated column map.
#[derive(Clone, Debug)]
pub struct ColumnMap {
    /// Agency label (`[a-z0-9_-]+`).
    pub agency: String,
    /// Header of the record-id column.
    pub record_id: String,
    /// Text encoding of the export.
    pub encoding: TextEncoding,
    /// Field delimiter byte.
    pub delimiter: u8,
    /// Date formats, tried in order.
    pub date_formats: Vec<DateFormat>,
    /// Schema field name → CSV header.
    pub columns: BTreeMap<String, String>,
    /// Upper-cased raw sex code → canonical value.
    pub sex_codes: BTreeMap<String, Sex>,
    /// The export's own missing values, if its map has a `[missing]` table.
    pub missing: Option<Missing>,
    /// The file it came from.
    pub path: PathBuf,
}

impl ColumnMap {
    /// Loads a column map file.
    pub fn load(path: &Path) -> Result<ColumnMap> {
        let bytes = crate::fsutil::read_small_file(path, 1 << 20, "a column map")?;
        let text = String::from_utf8(bytes).map_err(|e| Error::ColumnMap {
            path: path.to_path_buf(),
            problem: format!(
                "is not UTF-8 text (byte {} is not): save the column map as UTF-8 (the export's \
                 own character encoding is what its `encoding` setting names)",
                e.utf8_error().valid_up_to() + 1
            ),
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses column map TOML; `path` is used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<ColumnMap> {
        let bad = |p: String| Error::ColumnMap {
            path: path.to_path_buf(),
            problem: p,
        };
        let f: ColumnMapFile =
            toml::from_str(text).map_err(|e| bad(crate::error::toml_problem(&e, text)))?;
        if !is_agency_label(&f.agency) {
            return Err(bad(AGENCY_LABEL_RULE.into()));
        }
        let delimiter = match f.delimiter.as_deref() {
            None => b',',
            Some("\\t") | Some("\t") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() && !matches!(d, "\"" | "\n" | "\r") => {
                d.as_bytes()[0]
            }
            Some(_) => {
                return Err(bad(
                    "delimiter must be one ASCII character other than a quote or a line break \
                     (write a tab as \"\\t\")"
                        .into(),
                ))
            }
        };
        let date_formats = match f.date_formats {
            None => default_date_formats(),
            Some(v) if v.is_empty() => return Err(bad("date_formats is empty".into())),
            Some(v) => {
                // The first format that reads a date wins: with day-first and month-first
                // both listed, every date with a day up to 12 is read by the first.
                let swapped = |f: &str| {
                    f.replace("%d", "\0")
                        .replace("%m", "%d")
                        .replace('\0', "%m")
                };
                for (i, a) in v.iter().enumerate() {
                    if let Some(b) = v[i + 1..].iter().find(|b| **b != *a && **b == swapped(a)) {
                        return Err(bad(format!(
                            "date_formats lists both `{a}` and `{b}`: a date such as 12/03/2015 \
                             fits both, and the first would always win. An export has one \
                             order: keep the one it uses"
                        )));
                    }
                }
                v.iter()
                    .map(|s| {
                        DateFormat::compile(s).map_err(|e| bad(format!("date format `{s}`: {e}")))
                    })
                    .collect::<Result<_>>()?
            }
        };
        let sex_codes = match f.sex_codes {
            Some(m) => {
                // Codes are matched regardless of case: two that differ only in case (or
                // spaces) must not say different things.
                let mut codes: BTreeMap<String, (String, Sex)> = BTreeMap::new();
                for (k, v) in m {
                    let key = k.trim().to_uppercase();
                    if let Some((first, w)) = codes.get(&key) {
                        if *w != v {
                            return Err(bad(format!(
                                "[sex_codes] maps `{first}` and `{k}` to different values, but \
                                 codes are matched regardless of case and surrounding spaces: \
                                 keep one of them"
                            )));
                        }
                    }
                    codes.insert(key, (k, v));
                }
                codes.into_iter().map(|(k, (_, v))| (k, v)).collect()
            }
            None => default_sex_codes(),
        };
        if f.columns.is_empty() {
            return Err(bad("[columns] maps no fields".into()));
        }
        let mut by_column: BTreeMap<&str, &str> = BTreeMap::new();
        for (field, column) in &f.columns {
            if let Some(other) = by_column.insert(column, field) {
                return Err(bad(format!(
                    "[columns] maps both `{other}` and `{field}` to the column `{column}`: each \
                     field needs its own column (leave a field out if the export does not have it)"
                )));
            }
        }
        let missing = match f.missing {
            None => None,
            Some(m) => Some(missing_table(m).map_err(bad)?),
        };
        Ok(ColumnMap {
            agency: f.agency,
            record_id: f.record_id,
            encoding: f.encoding,
            delimiter,
            date_formats,
            columns: f.columns,
            sex_codes,
            missing,
            path: path.to_path_buf(),
        })
    }

    /// Checks that every mapped field exists in the schema.
    pub fn check_against(&self, schema: &Schema) -> Result<()> {
        for field in self.columns.keys() {
            if schema.field_index(field).is_none() {
                let known: Vec<&str> = schema.fields.iter().map(|f| f.def.name.as_str()).collect();
                return Err(Error::ColumnMap {
                    path: self.path.clone(),
                    problem: format!(
                        "[columns] maps `{field}`, which the schema `{}` does not have (it has: {})",
                        schema.def.name,
                        known.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Maps a raw sex code; `None` if the code is not in the map.
    pub fn sex(&self, raw: &str) -> Option<Sex> {
        let t = raw.trim();
        if let Some(s) = self.sex_codes.get(t) {
            return Some(*s);
        }
        self.sex_codes.get(&t.to_uppercase()).copied()
    }
}

/// Validates a `[missing]` table: every value means one thing, and a `keep` value must be
/// something the built-in lists read as missing, so that a typo does not pass unseen. (An
/// `extra` value that is a built-in marker already is harmless.)
fn missing_table(m: MissingFile) -> std::result::Result<Missing, String> {
    let canon = |list: Vec<String>, what: &str| -> std::result::Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for v in list {
            let c = v.trim().to_uppercase();
            if c.is_empty() {
                return Err(format!(
                    "[missing] {what} lists an empty value: empty fields are always missing"
                ));
            }
            if c.len() > normalise::MAX_FIELD_BYTES {
                return Err(format!(
                    "[missing] {what} lists a value over {} bytes, which no field can hold",
                    normalise::MAX_FIELD_BYTES
                ));
            }
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    };
    let extra = canon(m.extra, "extra")?;
    let keep = canon(m.keep, "keep")?;
    if let Some(v) = extra.iter().find(|v| keep.contains(v)) {
        return Err(format!(
            "[missing] lists `{v}` in both extra and keep: say which it means in this export"
        ));
    }
    if let Some(v) = keep
        .iter()
        .find(|v| !matches!(normalise::name(v), Ok(None)))
    {
        return Err(format!(
            "[missing] keep lists `{v}`, but names are not read as missing when they are `{v}`: \
             keep is for built-in null markers and newborn placeholders (NA, BABY) that are real \
             names in this export"
        ));
    }
    Ok(Missing { extra, keep })
}

fn default_sex_codes() -> BTreeMap<String, Sex> {
    let mut m = BTreeMap::new();
    for c in ["M", "MALE", "BOY", "MAN"] {
        m.insert(c.to_string(), Sex::M);
    }
    for c in ["F", "FEMALE", "GIRL", "WOMAN"] {
        m.insert(c.to_string(), Sex::F);
    }
    for c in [
        "U",
        "UNKNOWN",
        "X",
        "I",
        "N",
        "NOT KNOWN",
        "NOT STATED",
        "INDETERMINATE",
    ] {
        m.insert(c.to_string(), Sex::U);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"
agency = "police"
record_id = "PERSON_REF"
encoding = "windows-1252"
date_formats = ["%d-%b-%Y"]
[columns]
family_name = "SURNAME"
given_name = "FIRST_NAME"
[sex_codes]
"1" = "M"
"2" = "F"
"9" = "U"
"#;

    #[test]
    fn parses_and_maps_sex() {
        let m = ColumnMap::from_toml(MAP, Path::new("p.toml")).unwrap();
        assert_eq!(m.encoding, TextEncoding::Windows1252);
        assert_eq!(m.sex(" 1 "), Some(Sex::M));
        assert_eq!(m.sex("2"), Some(Sex::F));
        assert_eq!(m.sex("M"), None);
        m.check_against(&Schema::default_uk()).unwrap();
    }

    #[test]
    fn default_sex_codes_are_case_insensitive() {
        let m = ColumnMap::from_toml(
            "agency='a'\nrecord_id='id'\n[columns]\nsex='Sex'\n",
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(m.sex("female"), Some(Sex::F));
        assert_eq!(m.sex("Male"), Some(Sex::M));
        assert_eq!(m.sex("x"), Some(Sex::U));
    }

    #[test]
    fn rejects_unknown_field_and_bad_agency() {
        let m = ColumnMap::from_toml(
            "agency='a'\nrecord_id='id'\n[columns]\nshoe_size='S'\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let e = m
            .check_against(&Schema::default_uk())
            .unwrap_err()
            .to_string();
        assert!(e.contains("shoe_size") && e.contains("family_name"), "{e}");
        let e = ColumnMap::from_toml("agency='A B'\nrecord_id='id'\n[columns]\n", Path::new("a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("agency"), "{e}");
    }

    #[test]
    fn a_column_map_that_is_not_utf8_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(
            &p,
            b"agency='a'\nrecord_id='id'\n[columns]\nfamily_name='Nom de fam\xe9'\n",
        )
        .unwrap();
        let e = ColumnMap::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("m.toml") && e.contains("is not UTF-8 text (byte 60 is not)"),
            "{e}"
        );
    }

    #[test]
    fn a_time_of_day_in_a_date_format_is_refused_with_the_fix() {
        let e = ColumnMap::from_toml(
            "agency='a'\nrecord_id='id'\ndate_formats=['%d/%m/%Y %H:%M']\n[columns]\n",
            Path::new("a.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a.toml"), "{e}");
        assert!(e.contains("date format `%d/%m/%Y %H:%M`"), "{e}");
        assert!(e.contains("%H is a time-of-day directive"), "{e}");
        assert!(e.contains("leave the time out of the format"), "{e}");
    }

    /// The identifier and date normalisers read text without invisible characters, and so does
    /// the `[missing]` list for them; names keep their own rules (the marker is not a name).
    #[test]
    fn missing_lists_see_identifiers_without_invisible_characters() {
        use crate::encode::normalise_value;
        use crate::schema::Normaliser;
        use crate::tokens::Value;
        let m = ColumnMap::from_toml(
            "agency='a'\nrecord_id='id'\n[columns]\npostcode='P'\n[missing]\nextra=['NOT ON FILE']\n",
            Path::new("a.toml"),
        )
        .unwrap();
        let today = crate::date::Date::today_utc();
        for n in [
            Normaliser::Postcode,
            Normaliser::NhsNumber,
            Normaliser::Upn,
            Normaliser::Date,
        ] {
            for t in [
                "NOT ON FILE\u{200B}",
                "not\u{2060} on file",
                " NOT ON FILE ",
            ] {
                assert_eq!(normalise_value(n, t, &m, today), Ok(None), "{n:?} {t:?}");
            }
        }
        assert_eq!(
            normalise_value(Normaliser::Postcode, "LS6\u{200B} 2AB", &m, today),
            Ok(Some(Value::Text("LS6 2AB".into())))
        );
        // A name with the listed words and a zero-width space is not the listed value as
        // written, so the name rules decide (the space is dropped there and the words kept).
        assert_eq!(
            normalise_value(Normaliser::Name, "NOT ON FILE\u{200B}", &m, today),
            Ok(Some(Value::Text("NOT ON FILE".into())))
        );
    }

    #[test]
    fn missing_table_is_read_and_checked() {
        let head = "agency='a'\nrecord_id='id'\n[columns]\nfamily_name='Surname'\n";
        let m = ColumnMap::from_toml(
            &format!("{head}[missing]\nextra=[' zzz ', '#Value!', 'ZZZ', 'n/a']\nkeep=['Na']\n"),
            Path::new("a.toml"),
        )
        .unwrap();
        let t = m.missing.as_ref().unwrap();
        assert_eq!(t.extra, ["ZZZ", "#VALUE!", "N/A"]);
        assert_eq!(t.verdict(" Zzz"), MissingVerdict::Missing);
        assert_eq!(t.verdict("#value!"), MissingVerdict::Missing);
        assert_eq!(t.verdict("nA "), MissingVerdict::Kept);
        assert_eq!(t.verdict("Nab"), MissingVerdict::Unlisted);
        assert_eq!(t.verdict("#N/A"), MissingVerdict::Unlisted);
        let err = |table: &str| {
            ColumnMap::from_toml(&format!("{head}[missing]\n{table}\n"), Path::new("a.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err("keep=['Smith']");
        assert!(e.contains("`SMITH`") && e.contains("keep is for"), "{e}");
        let e = err("extra=['Baby']\nkeep=['baby']");
        assert!(e.contains("both extra and keep"), "{e}");
        let e = err("extra=['  ']");
        assert!(e.contains("empty"), "{e}");
        let e = err("missing=['x']");
        assert!(e.contains("missing"), "{e}");
    }

    /// Map mistakes that would otherwise encode wrongly without a word.
    #[test]
    fn refuses_conflicting_codes_shared_columns_and_line_break_delimiters() {
        let head = "agency='a'\nrecord_id='id'\n";
        let err = |text: &str| {
            ColumnMap::from_toml(text, Path::new("a.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err(&format!(
            "{head}[columns]\nsex='Sex'\n[sex_codes]\nM='M'\nm='F'\n"
        ));
        assert!(
            e.contains("`M` and `m`") && e.contains("regardless of case"),
            "{e}"
        );
        // The same meaning twice is harmless.
        let m = ColumnMap::from_toml(
            &format!("{head}[columns]\nsex='Sex'\n[sex_codes]\nM='M'\nm='M'\nf='F'\n"),
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(m.sex("m"), Some(Sex::M));
        assert_eq!(m.sex("F"), Some(Sex::F));
        let e = err(&format!(
            "{head}[columns]\ngiven_name='Surname'\nfamily_name='Surname'\n"
        ));
        assert!(e.contains("`Surname`") && e.contains("own column"), "{e}");
        let e = err(&format!(
            "{head}date_formats = ['%d/%m/%Y', '%m/%d/%Y']\n[columns]\nsex='Sex'\n"
        ));
        assert!(e.contains("`%d/%m/%Y` and `%m/%d/%Y`"), "{e}");
        for d in ["\\n", "\\r", "\\\""] {
            let e = err(&format!("{head}delimiter=\"{d}\"\n[columns]\nsex='Sex'\n"));
            assert!(e.contains("delimiter"), "{d}: {e}");
        }
    }
}
