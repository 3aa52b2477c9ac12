//! Synthetic, entirely fictitious child populations and agency exports.
//!
//! The project must never hold real people's data, so every test, demo and
//! linkage-quality measurement runs on populations made here. [`generate`]
//! builds a population of children aged 0–18 living in households (siblings,
//! twins, a few triplets, half-siblings, families that moved), then writes
//! what three agencies would export about them, each in its own dialect:
//!
//! | file | encoding | line ends | columns |
//! | --- | --- | --- | --- |
//! | `health.csv` | UTF-8, no BOM | CRLF | `Patient ID,NHS Number,Forename,Middle Names,Surname,Date of Birth,Gender,Postcode` |
//! | `police.csv` | Windows-1252 | LF | `PERSON_REF,SURNAME,FIRST_NAME,MIDDLE_NAME,DOB,SEX,POSTCODE,NHS_NO` |
//! | `education.csv` | UTF-8 with BOM | CRLF | `Pupil ID,UPN,Legal Forename,Middle Name(s),Legal Surname,Preferred Surname,DOB,Sex,Postcode` |
//! | `truth.csv` | UTF-8 | LF | `entity_id,agency,record_id` |
//! | `twins.csv` | UTF-8 | LF | `entity_a,entity_b` |
//!
//! plus one column map per agency (`health.toml`, `police.toml`,
//! `education.toml`) telling the encoder how to read each export.
//! `truth.csv` gives every record's true entity (child); `twins.csv` has one
//! row per unordered pair of children born in the same multiple birth
//! (`entity_a` < `entity_b`, sorted; a set of triplets gives three rows),
//! whether or not an agency holds a record of them, for measuring false
//! merges of twins.
//!
//! Records are corrupted the way real ones are (nicknames, typos, swapped
//! names, changed surnames, swapped day/month, stale addresses, missing and
//! invalid identifiers, placeholders, duplicates within an agency); every rate
//! is a named constant below. NHS numbers come from the NHS test range
//! `999 000 0000`–`999 999 9999`; only populations needing more than its
//! ~909,000 valid numbers continue into the (never issued) `998…`, `997…`
//! blocks. Output is byte-identical for the same [`SynthConfig`].

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::data::*;

// ---------------------------------------------------------------------------
// Rates (all probabilities; "per record" unless said otherwise)
// ---------------------------------------------------------------------------

/// Share of births (deliveries) that are twins.
pub const TWIN_BIRTH_RATE: f64 = 0.016;
/// Share of births that are triplets.
pub const TRIPLET_BIRTH_RATE: f64 = 0.0003;
/// Share of twin sets of the same sex (identical twins are always so).
pub const TWIN_SAME_SEX_RATE: f64 = 0.66;
/// Chance the second twin's name is alliterative with the first's (Amelia/Ava).
pub const TWIN_ALLITERATION_RATE: f64 = 0.40;
/// Chance, when the first twin's name has a known "twin partner" name
/// (Hassan/Hussain), that the partner is used.
pub const TWIN_PAIR_NAME_RATE: f64 = 0.50;
/// Per child after the first birth in a household: a half-sibling with a different surname.
pub const HALF_SIBLING_RATE: f64 = 0.12;
/// Share of households whose surname is double-barrelled (Smith-Jones).
pub const DOUBLE_BARREL_HOUSEHOLD_RATE: f64 = 0.05;
/// Share of South Asian girls whose surname is Begum, Bibi or Khatun rather than the family name.
pub const BEGUM_RATE: f64 = 0.12;
/// Share of households that moved: they have a previous postcode that stale records still carry.
pub const HOUSEHOLD_MOVED_RATE: f64 = 0.10;
/// Average number of households sharing one postcode (unrelated neighbours).
pub const HOUSEHOLDS_PER_POSTCODE: f64 = 3.0;

/// Share of children registered with the NHS and so present in `health.csv`.
pub const HEALTH_COVERAGE: f64 = 0.97;
/// Mean share of children known to police; the chance rises with age.
pub const POLICE_COVERAGE: f64 = 0.085;
/// Share of children in Reception–Year 11 on a state-school roll (the rest
/// are at independent schools or home-educated and absent from `education.csv`).
pub const STATE_SCHOOL_RATE: f64 = 0.93;
/// Share of state-school children still on a school roll in Years 12–13.
pub const SIXTH_FORM_RATE: f64 = 0.55;
/// Share of children with a second record (own id, own corruption) in one agency.
pub const DUPLICATE_RATE: f64 = 0.02;
/// Chance that a duplicate health/education record carries a newly issued
/// (different, valid) NHS number / UPN instead of the child's usual one.
pub const DUPLICATE_NEW_ID_RATE: f64 = 0.25;
/// Share of children with middle names (culture-dependent; this is the mean
/// aimed at, the per-culture rates are in the culture table).
pub const MIDDLE_NAME_RATE: f64 = 0.60;
/// Share of those with middle names who have two.
pub const TWO_MIDDLE_NAMES_RATE: f64 = 0.12;

/// Per name field (forename, each middle name, surname): one typo
/// (substitution, deletion, insertion, adjacent transposition or keyboard neighbour).
pub const TYPO_RATE: f64 = 0.04;
/// Health records: forename replaced by a nickname / spelling variant.
pub const NICKNAME_RATE_HEALTH: f64 = 0.03;
/// Police records: forename replaced by a nickname / "known as" variant.
pub const NICKNAME_RATE_POLICE: f64 = 0.12;
/// Education records: forename replaced by a nickname / spelling variant.
pub const NICKNAME_RATE_EDUCATION: f64 = 0.02;
/// Forename and first middle name swapped.
pub const NAME_SWAP_RATE: f64 = 0.01;
/// Forename and middle name swapped when the forename is a religious prefix
/// name (Muhammad Hamza → Hamza Muhammad).
pub const PREFIX_NAME_SWAP_RATE: f64 = 0.15;
/// Surname changed: step-family name, double-barrel added or dropped.
pub const SURNAME_CHANGE_RATE: f64 = 0.02;
/// Surname spelled another common way (Mohamed/Mohammed, Clarke/Clark).
pub const SURNAME_VARIANT_RATE: f64 = 0.02;
/// Health/education records whose system drops diacritics (Zoë → Zoe).
pub const DIACRITIC_DROP_RATE: f64 = 0.15;
/// Police records folded to plain ASCII (besides the Windows-1252 limits).
pub const POLICE_ASCII_FOLD_RATE: f64 = 0.30;
/// Names holding an apostrophe or hyphen written another way (O'Neill/O’Neill/ONeill/O Neill).
pub const PUNCTUATION_VARIANT_RATE: f64 = 0.20;
/// Health/education records with the surname in capitals.
pub const UPPERCASE_SURNAME_RATE: f64 = 0.04;
/// Health records keeping middle names (when the child has them).
pub const MIDDLE_PRESENT_HEALTH: f64 = 0.90;
/// Police records keeping middle names (when the child has them).
pub const MIDDLE_PRESENT_POLICE: f64 = 0.30;
/// Education records keeping middle names (when the child has them).
pub const MIDDLE_PRESENT_EDUCATION: f64 = 0.85;
/// Education records with a non-empty Preferred Surname differing from the legal one.
pub const PREFERRED_SURNAME_RATE: f64 = 0.06;

/// Day and month swapped, for dates whose day is 12 or less.
pub const DOB_DAY_MONTH_SWAP_RATE: f64 = 0.01;
/// Some other date-of-birth typo (a day, month or year digit).
pub const DOB_TYPO_RATE: f64 = 0.005;
/// Police records with the placeholder date of birth 01-Jan-1900.
pub const DOB_PLACEHOLDER_RATE_POLICE: f64 = 0.001;

/// Postcode missing.
pub const POSTCODE_MISSING_RATE: f64 = 0.03;
/// Health record of a household that moved still carrying the old postcode.
pub const STALE_POSTCODE_RATE_HEALTH: f64 = 0.20;
/// Police/education record of a household that moved carrying the old postcode.
pub const STALE_POSTCODE_RATE_OTHER: f64 = 0.50;
/// Health record of a household that did not move carrying some other, older postcode.
pub const OTHER_OLD_POSTCODE_RATE_HEALTH: f64 = 0.01;
/// Police/education record of a household that did not move carrying some
/// other, older postcode (with the above, ~8 % of these records carry a previous address).
pub const OTHER_OLD_POSTCODE_RATE_OTHER: f64 = 0.035;
/// Postcode with a one-character typo.
pub const POSTCODE_TYPO_RATE: f64 = 0.005;
/// Police postcodes written without the space (M145QT).
pub const POLICE_POSTCODE_NO_SPACE_RATE: f64 = 0.60;
/// Police records with "NFA" (no fixed abode) as the postcode.
pub const POLICE_NFA_RATE: f64 = 0.002;

/// Health records carrying an NHS number.
pub const HEALTH_NHS_PRESENT_RATE: f64 = 0.97;
/// Police records carrying an NHS number.
pub const POLICE_NHS_PRESENT_RATE: f64 = 0.20;
/// Health NHS numbers formatted `999 123 4567` (the rest are 10 plain digits).
pub const HEALTH_NHS_SPACED_RATE: f64 = 0.65;
/// NHS numbers / UPNs present but with a one-digit typo that fails the check.
pub const INVALID_ID_RATE: f64 = 0.01;

/// Sex missing or recorded as unknown.
pub const SEX_UNKNOWN_RATE: f64 = 0.01;
/// Sex recorded wrongly.
pub const SEX_ERROR_RATE: f64 = 0.002;
/// Health records of under-ones with the placeholder forename "BABY".
pub const BABY_PLACEHOLDER_RATE: f64 = 0.003;
/// Police records with the placeholder forename "UNKNOWN".
pub const UNKNOWN_PLACEHOLDER_RATE_POLICE: f64 = 0.002;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Options for a synthetic population.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// Number of children in the population.
    pub children: usize,
    /// Seed: the same configuration always gives byte-identical files.
    pub seed: u64,
    /// Reference date `(year, month, day)`: children are aged 0–18 on it.
    pub as_of: (i32, u32, u32),
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            children: 10_000,
            seed: 42,
            as_of: (2026, 1, 1),
        }
    }
}

impl SynthConfig {
    /// A configuration with `children` children, `seed`, and the default reference date 2026-01-01.
    pub fn new(children: usize, seed: u64) -> Self {
        Self {
            children,
            seed,
            ..Self::default()
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Number of children in the population (some may be in no agency).
    pub children: usize,
    /// `(agency, rows)` for `health`, `police`, `education`, in that order.
    pub rows: Vec<(String, usize)>,
    /// Pairs of children born in the same multiple birth (a set of triplets counts 3 pairs).
    pub twins_pairs: usize,
    /// Every file written: the three exports, `truth.csv`, `twins.csv`, the three column maps.
    pub files: Vec<PathBuf>,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// Creating or writing a file or directory failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot be used.
    #[error("invalid synthetic-data configuration: {0}")]
    Config(String),
}

/// Most children one population may have (NHS numbers are drawn from the
/// `990`–`999` blocks, about 9 million valid numbers).
pub const MAX_CHILDREN: usize = 8_000_000;

/// Header of `health.csv`.
pub const HEALTH_HEADERS: [&str; 8] = [
    "Patient ID",
    "NHS Number",
    "Forename",
    "Middle Names",
    "Surname",
    "Date of Birth",
    "Gender",
    "Postcode",
];
/// Header of `police.csv`.
pub const POLICE_HEADERS: [&str; 8] = [
    "PERSON_REF",
    "SURNAME",
    "FIRST_NAME",
    "MIDDLE_NAME",
    "DOB",
    "SEX",
    "POSTCODE",
    "NHS_NO",
];
/// Header of `education.csv`.
pub const EDUCATION_HEADERS: [&str; 9] = [
    "Pupil ID",
    "UPN",
    "Legal Forename",
    "Middle Name(s)",
    "Legal Surname",
    "Preferred Surname",
    "DOB",
    "Sex",
    "Postcode",
];
/// Header of `truth.csv`.
pub const TRUTH_HEADERS: [&str; 3] = ["entity_id", "agency", "record_id"];
/// Header of `twins.csv`.
pub const TWINS_HEADERS: [&str; 2] = ["entity_a", "entity_b"];

/// Generates a synthetic population of `cfg.children` children and writes
/// `health.csv`, `police.csv`, `education.csv`, `truth.csv`, `twins.csv` and
/// the column maps `health.toml`, `police.toml`, `education.toml` into `out_dir`
/// (created if missing; existing files are overwritten).
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<SynthSummary, SynthError> {
    let as_of = validate(cfg)?;
    fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir, e))?;
    let tables = Tables::new();
    let pop = Population::build(cfg, as_of, &tables);

    let mut truth: Vec<(u32, u8, String)> = Vec::with_capacity(cfg.children * 17 / 10 + 16);
    let mut files = Vec::with_capacity(8);
    let mut rows = Vec::with_capacity(3);
    for agency in [Agency::Health, Agency::Police, Agency::Education] {
        let mut rng = stream_rng(cfg.seed, 100 + agency as u64);
        let path = out_dir.join(format!("{}.csv", agency.name()));
        let n = write_agency(&pop, &tables, agency, &mut rng, &path, &mut truth)?;
        rows.push((agency.name().to_string(), n));
        files.push(path);
    }
    let truth_path = out_dir.join("truth.csv");
    write_truth(&pop, &mut truth, &truth_path)?;
    files.push(truth_path);
    let twins_path = out_dir.join("twins.csv");
    write_twins(&pop, &twins_path)?;
    files.push(twins_path);
    files.extend(write_column_maps(out_dir)?);

    Ok(SynthSummary {
        children: cfg.children,
        rows,
        twins_pairs: pop.twin_pairs,
        files,
    })
}

/// Writes the column maps `health.toml`, `police.toml` and `education.toml`
/// describing the exports [`generate`] writes; returns their paths.
pub fn write_column_maps(out_dir: &Path) -> Result<Vec<PathBuf>, SynthError> {
    fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir, e))?;
    let mut paths = Vec::with_capacity(3);
    for agency in [Agency::Health, Agency::Police, Agency::Education] {
        let path = out_dir.join(format!("{}.toml", agency.name()));
        fs::write(&path, column_map(agency)).map_err(|e| io_err(&path, e))?;
        paths.push(path);
    }
    Ok(paths)
}

/// The column map (TOML text) for one agency's export: `"health"`,
/// `"police"` or `"education"`; `None` for any other name.
pub fn column_map_toml(agency: &str) -> Option<String> {
    [Agency::Health, Agency::Police, Agency::Education]
        .into_iter()
        .find(|a| a.name() == agency)
        .map(column_map)
}

/// The NHS modulus-11 check digit for the first nine digits of an NHS
/// number, or `None` when the nine digits cannot form a valid number.
pub fn nhs_check_digit(first_nine: u64) -> Option<u8> {
    if first_nine >= 1_000_000_000 {
        return None;
    }
    let mut sum = 0u64;
    let mut x = first_nine;
    // Rightmost of the nine digits has weight 2, leftmost weight 10.
    for w in 2..=10u64 {
        sum += (x % 10) * w;
        x /= 10;
    }
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        c => Some(c as u8),
    }
}

/// Whether `s` (spaces and hyphens ignored) is ten digits passing the NHS modulus-11 check.
pub fn is_valid_nhs_number(s: &str) -> bool {
    let digits: Vec<u64> = s
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| c.to_digit(10).map(u64::from))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    if digits.len() != 10 {
        return false;
    }
    let first_nine = digits[..9].iter().fold(0u64, |a, d| a * 10 + d);
    nhs_check_digit(first_nine) == Some(digits[9] as u8)
}

/// Check letters of a UPN, indexed by the weighted sum modulo 23.
pub const UPN_CHECK_LETTERS: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

/// The DfE check letter (UPN character 1) for UPN characters 2–13 when
/// they are twelve digits: digit *i* (2-based position) weighted *i*, sum mod 23.
pub fn upn_check_letter(digits: &str) -> Option<char> {
    let b = digits.as_bytes();
    if b.len() != 12 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(d - b'0') * (i as u32 + 2))
        .sum();
    Some(UPN_CHECK_LETTERS[(sum % 23) as usize] as char)
}

/// Whether `s` is a permanent UPN (check letter + 12 digits) whose check letter is right.
pub fn is_valid_upn(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => upn_check_letter(chars.as_str()) == Some(first),
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Agencies and column maps
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Agency {
    Health = 0,
    Police = 1,
    Education = 2,
}

impl Agency {
    fn name(self) -> &'static str {
        match self {
            Agency::Health => "health",
            Agency::Police => "police",
            Agency::Education => "education",
        }
    }
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
    fn from_index(i: u8) -> Agency {
        match i {
            0 => Agency::Health,
            1 => Agency::Police,
            _ => Agency::Education,
        }
    }
}

fn column_map(agency: Agency) -> String {
    let q = |s: &str| format!("\"{s}\"");
    match agency {
        Agency::Health => {
            let h = &HEALTH_HEADERS;
            format!(
                "# Column map: how the synthetic health export (health.csv) feeds the linkage schema.\n\
                 # Written by bloomlink's synthetic-data generator; it describes fictitious data only.\n\
                 agency = \"health\"\n\
                 record_id = {}\n\
                 encoding = \"utf-8\"\n\
                 delimiter = \",\"\n\
                 date_formats = [\"%d/%m/%Y\"]\n\
                 \n\
                 [columns]\n\
                 given_name    = {}\n\
                 other_names   = {}\n\
                 family_name   = {}\n\
                 date_of_birth = {}\n\
                 sex           = {}\n\
                 postcode      = {}\n\
                 nhs_number    = {}\n\
                 \n\
                 [sex_codes]\n\
                 \"M\" = \"M\"\n\
                 \"F\" = \"F\"\n\
                 \"U\" = \"U\"\n",
                q(h[0]),
                q(h[2]),
                q(h[3]),
                q(h[4]),
                q(h[5]),
                q(h[6]),
                q(h[7]),
                q(h[1])
            )
        }
        Agency::Police => {
            let h = &POLICE_HEADERS;
            format!(
                "# Column map: how the synthetic police export (police.csv) feeds the linkage schema.\n\
                 # Written by bloomlink's synthetic-data generator; it describes fictitious data only.\n\
                 # Legacy system: Windows-1252 bytes, upper-case names, surname first.\n\
                 agency = \"police\"\n\
                 record_id = {}\n\
                 encoding = \"windows-1252\"\n\
                 delimiter = \",\"\n\
                 date_formats = [\"%d-%b-%Y\"]\n\
                 \n\
                 [columns]\n\
                 given_name    = {}\n\
                 other_names   = {}\n\
                 family_name   = {}\n\
                 date_of_birth = {}\n\
                 sex           = {}\n\
                 postcode      = {}\n\
                 nhs_number    = {}\n\
                 \n\
                 [sex_codes]\n\
                 \"1\" = \"M\"\n\
                 \"2\" = \"F\"\n\
                 \"9\" = \"U\"\n",
                q(h[0]),
                q(h[2]),
                q(h[3]),
                q(h[1]),
                q(h[4]),
                q(h[5]),
                q(h[6]),
                q(h[7])
            )
        }
        Agency::Education => {
            let h = &EDUCATION_HEADERS;
            format!(
                "# Column map: how the synthetic education export (education.csv) feeds the linkage schema.\n\
                 # Written by bloomlink's synthetic-data generator; it describes fictitious data only.\n\
                 # \"{}\" is not mapped: the schema has one family name, the legal one.\n\
                 agency = \"education\"\n\
                 record_id = {}\n\
                 encoding = \"utf-8-bom\"\n\
                 delimiter = \",\"\n\
                 date_formats = [\"%Y-%m-%d\"]\n\
                 \n\
                 [columns]\n\
                 given_name    = {}\n\
                 other_names   = {}\n\
                 family_name   = {}\n\
                 date_of_birth = {}\n\
                 sex           = {}\n\
                 postcode      = {}\n\
                 upn           = {}\n\
                 \n\
                 [sex_codes]\n\
                 \"Male\" = \"M\"\n\
                 \"Female\" = \"F\"\n",
                h[5],
                q(h[0]),
                q(h[2]),
                q(h[3]),
                q(h[4]),
                q(h[6]),
                q(h[7]),
                q(h[8]),
                q(h[1])
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers: errors, RNG streams, dates, samplers, permutations
// ---------------------------------------------------------------------------

fn io_err(path: &Path, source: std::io::Error) -> SynthError {
    SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn validate(cfg: &SynthConfig) -> Result<i32, SynthError> {
    let (y, m, d) = cfg.as_of;
    if !(1950..=2200).contains(&y) || !valid_date(y, m, d) {
        return Err(SynthError::Config(format!(
            "as_of {y:04}-{m:02}-{d:02} is not a valid date between 1950 and 2200"
        )));
    }
    if cfg.children > MAX_CHILDREN {
        return Err(SynthError::Config(format!(
            "{} children requested; at most {MAX_CHILDREN} are supported",
            cfg.children
        )));
    }
    Ok(days_from_civil(y, m, d))
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

fn valid_date(y: i32, m: u32, d: u32) -> bool {
    (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

/// Days since 1970-01-01 (proleptic Gregorian).
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i32 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whole years of age on `as_of`.
fn age_years(dob: i32, as_of: i32) -> i32 {
    let (by, bm, bd) = civil_from_days(dob);
    let (ay, am, ad) = civil_from_days(as_of);
    let mut age = ay - by;
    if (am, ad) < (bm, bd) {
        age -= 1;
    }
    age
}

static MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Cumulative-weight sampler.
struct Cdf {
    cdf: Vec<f64>,
}

impl Cdf {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut acc = 0.0;
        let cdf = weights
            .into_iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Cdf { cdf }
    }
    /// Zipf–Mandelbrot weights 1/(rank + offset) over `n` items (plain
    /// division, no `powf`, so every platform gets the same bits).
    fn zipf(n: usize, offset: f64) -> Self {
        Cdf::new((0..n).map(|i| 1.0 / (i as f64 + offset)))
    }
    fn sample<R: Rng>(&self, rng: &mut R) -> usize {
        let total = *self.cdf.last().expect("non-empty sampler");
        let u = rng.random::<f64>() * total;
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// A keyed bijection on `0..modulus` (4-round Feistel network with cycle
/// walking): turns row positions into scattered, unique record ids.
struct IdPerm {
    keys: [u64; 4],
    half_bits: u32,
    modulus: u64,
}

impl IdPerm {
    fn new<R: Rng>(modulus: u64, rng: &mut R) -> Self {
        let bits = (64 - modulus.saturating_sub(1).leading_zeros()).max(2);
        let bits = bits + (bits & 1);
        IdPerm {
            keys: [rng.random(), rng.random(), rng.random(), rng.random()],
            half_bits: bits / 2,
            modulus,
        }
    }
    fn round(x: u64, key: u64) -> u64 {
        // splitmix64 finaliser
        let mut z = x ^ key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.modulus);
        let mask = (1u64 << self.half_bits) - 1;
        let mut v = x;
        loop {
            let (mut l, mut r) = (v >> self.half_bits, v & mask);
            for k in self.keys {
                let nl = r;
                r = l ^ (Self::round(r, k) & mask);
                l = nl;
            }
            v = (l << self.half_bits) | r;
            if v < self.modulus {
                return v;
            }
        }
    }
}

fn decimal_width(mut n: u64) -> usize {
    let mut w = 1;
    while n >= 10 {
        n /= 10;
        w += 1;
    }
    w
}

// ---------------------------------------------------------------------------
// Cultures and name tables
// ---------------------------------------------------------------------------

const BRIT: u8 = 0;
const SASIAN: u8 = 2;
const EEURO: u8 = 3;

struct CultureDef {
    /// Share of households.
    weight: f64,
    boys: &'static [&'static str],
    girls: &'static [&'static str],
    surnames: &'static [&'static str],
    /// Chance a given/middle name comes from another culture's list.
    cross_given: f64,
    /// Share of children with middle names.
    middle_rate: f64,
    /// Share of surnames drawn from the synthetic place-name tail.
    compound_surname: f64,
}

static CULTURES: [CultureDef; 7] = [
    // British, Irish, Welsh, Scottish
    CultureDef {
        weight: 0.70,
        boys: BRIT_BOYS,
        girls: BRIT_GIRLS,
        surnames: BRIT_SURNAMES,
        cross_given: 0.03,
        middle_rate: 0.66,
        compound_surname: 0.35,
    },
    // Caribbean
    CultureDef {
        weight: 0.03,
        boys: BRIT_BOYS,
        girls: BRIT_GIRLS,
        surnames: CARIB_SURNAMES,
        cross_given: 0.05,
        middle_rate: 0.70,
        compound_surname: 0.05,
    },
    // South Asian
    CultureDef {
        weight: 0.10,
        boys: SASIAN_BOYS,
        girls: SASIAN_GIRLS,
        surnames: SASIAN_SURNAMES,
        cross_given: 0.08,
        middle_rate: 0.50,
        compound_surname: 0.0,
    },
    // Polish, Romanian, other Eastern European
    CultureDef {
        weight: 0.06,
        boys: EEURO_BOYS,
        girls: EEURO_GIRLS,
        surnames: EEURO_SURNAMES,
        cross_given: 0.15,
        middle_rate: 0.30,
        compound_surname: 0.0,
    },
    // West/East/Southern African
    CultureDef {
        weight: 0.05,
        boys: AFRICAN_BOYS,
        girls: AFRICAN_GIRLS,
        surnames: AFRICAN_SURNAMES,
        cross_given: 0.35,
        middle_rate: 0.75,
        compound_surname: 0.0,
    },
    // Somali and Arabic
    CultureDef {
        weight: 0.03,
        boys: SOMARAB_BOYS,
        girls: SOMARAB_GIRLS,
        surnames: SOMARAB_SURNAMES,
        cross_given: 0.05,
        middle_rate: 0.30,
        compound_surname: 0.0,
    },
    // Chinese and Vietnamese
    CultureDef {
        weight: 0.03,
        boys: EASIAN_BOYS,
        girls: EASIAN_GIRLS,
        surnames: EASIAN_SURNAMES,
        cross_given: 0.40,
        middle_rate: 0.40,
        compound_surname: 0.0,
    },
];

struct CultureTables {
    boys: Cdf,
    girls: Cdf,
    surnames: Cdf,
}

/// Everything precomputed once per generation.
struct Tables {
    cultures: Vec<CultureTables>,
    culture_pick: Cdf,
    given_group: HashMap<&'static str, u16>,
    surname_group: HashMap<&'static str, u16>,
    area_pick: Cdf,
}

const GIVEN_ZIPF_OFFSET: f64 = 8.0;
const SURNAME_ZIPF_OFFSET: f64 = 10.0;

impl Tables {
    fn new() -> Self {
        let cultures = CULTURES
            .iter()
            .map(|c| CultureTables {
                boys: Cdf::zipf(c.boys.len(), GIVEN_ZIPF_OFFSET),
                girls: Cdf::zipf(c.girls.len(), GIVEN_ZIPF_OFFSET),
                surnames: Cdf::zipf(c.surnames.len(), SURNAME_ZIPF_OFFSET),
            })
            .collect();
        let mut given_group = HashMap::new();
        for (g, names) in GIVEN_VARIANTS.iter().enumerate() {
            for n in names.iter() {
                given_group.entry(*n).or_insert(g as u16);
            }
        }
        let mut surname_group = HashMap::new();
        for (g, names) in SURNAME_VARIANTS.iter().enumerate() {
            for n in names.iter() {
                surname_group.entry(*n).or_insert(g as u16);
            }
        }
        Tables {
            cultures,
            culture_pick: Cdf::new(CULTURES.iter().map(|c| c.weight)),
            given_group,
            surname_group,
            area_pick: Cdf::new(AREAS.iter().map(|a| f64::from(a.1).sqrt())),
        }
    }

    fn pick_from_culture<R: Rng>(&self, culture: u8, female: bool, rng: &mut R) -> &'static str {
        let c = &CULTURES[culture as usize];
        let t = &self.cultures[culture as usize];
        if female {
            c.girls[t.girls.sample(rng)]
        } else {
            c.boys[t.boys.sample(rng)]
        }
    }

    fn pick_given<R: Rng>(&self, culture: u8, female: bool, rng: &mut R) -> &'static str {
        let src = if rng.random_bool(CULTURES[culture as usize].cross_given) {
            if culture == BRIT {
                rng.random_range(1..CULTURES.len() as u8)
            } else {
                BRIT
            }
        } else {
            culture
        };
        self.pick_from_culture(src, female, rng)
    }

    fn pick_surname<R: Rng>(&self, culture: u8, rng: &mut R) -> String {
        let c = &CULTURES[culture as usize];
        if c.compound_surname > 0.0 && rng.random_bool(c.compound_surname) {
            let p = SURNAME_PREFIXES[rng.random_range(0..SURNAME_PREFIXES.len())];
            let s = SURNAME_SUFFIXES[rng.random_range(0..SURNAME_SUFFIXES.len())];
            return format!("{p}{s}");
        }
        c.surnames[self.cultures[culture as usize].surnames.sample(rng)].to_string()
    }

    fn given_variant<R: Rng>(&self, name: &str, rng: &mut R) -> Option<&'static str> {
        let g = *self.given_group.get(name)?;
        pick_other(GIVEN_VARIANTS[g as usize], name, rng)
    }

    fn surname_variant<R: Rng>(&self, name: &str, rng: &mut R) -> Option<&'static str> {
        let g = *self.surname_group.get(name)?;
        pick_other(SURNAME_VARIANTS[g as usize], name, rng)
    }

    fn same_given_group(&self, a: &str, b: &str) -> bool {
        a == b
            || matches!((self.given_group.get(a), self.given_group.get(b)), (Some(x), Some(y)) if x == y)
    }
}

fn pick_other<R: Rng>(
    group: &'static [&'static str],
    name: &str,
    rng: &mut R,
) -> Option<&'static str> {
    let others = group.iter().filter(|n| **n != name).count();
    if others == 0 {
        return None;
    }
    let k = rng.random_range(0..others);
    group.iter().copied().filter(|n| *n != name).nth(k)
}

fn is_prefix_name(name: &str) -> bool {
    matches!(
        name,
        "Muhammad" | "Mohammed" | "Mohammad" | "Mohamed" | "Abdul" | "Abdi" | "Mohamud"
    )
}

/// Feminine form of an Eastern-European surname (Kowalski → Kowalska, Černý → Černá).
fn feminine_surname(s: &str) -> String {
    if s.ends_with("ski") || s.ends_with("cki") || s.ends_with("dzki") {
        format!("{}a", &s[..s.len() - 1])
    } else if let Some(stem) = s.strip_suffix('ý') {
        format!("{stem}á")
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------
// Population
// ---------------------------------------------------------------------------

struct Household {
    culture: u8,
    postcode: u32,
    prev_postcode: Option<u32>,
}

struct Child {
    hh: u32,
    female: bool,
    given: &'static str,
    middles: [Option<&'static str>; 2],
    surname: String,
    dob: i32,
    nhs: u64,
    /// A second NHS number, issued by the duplicate health registration.
    alt_nhs: Option<u64>,
    /// UPN digits 2–13 (the check letter is derived).
    upn: Option<u64>,
    /// A second UPN, issued with the duplicate education record.
    alt_upn: Option<u64>,
    /// Bit set of agencies holding a record.
    agencies: u8,
    /// Agency holding a second record.
    dup: Option<Agency>,
}

struct Population {
    households: Vec<Household>,
    children: Vec<Child>,
    postcodes: Vec<String>,
    twin_pairs: usize,
    /// `(first child, children)` of every multiple birth, in child order; the
    /// children of one birth are consecutive.
    multiple_births: Vec<(u32, u8)>,
    as_of: i32,
    entity_width: usize,
}

/// Allocates unique valid NHS numbers: the 999 test block first, then 998, ….
struct NhsAlloc {
    block: u64,
    k: u64,
    perm: IdPerm,
}

impl NhsAlloc {
    const BLOCK: u64 = 1_000_000;
    fn new(rng: &mut ChaCha8Rng) -> Self {
        NhsAlloc {
            block: 0,
            k: 0,
            perm: IdPerm::new(Self::BLOCK, rng),
        }
    }
    fn next(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        loop {
            if self.k == Self::BLOCK {
                self.block += 1;
                self.k = 0;
                self.perm = IdPerm::new(Self::BLOCK, rng);
            }
            let base = (999 - self.block) * Self::BLOCK + self.perm.apply(self.k);
            self.k += 1;
            if let Some(c) = nhs_check_digit(base) {
                return base * 10 + u64::from(c);
            }
        }
    }
}

fn upn_string(digits12: u64) -> String {
    let d = format!("{digits12:012}");
    let letter = upn_check_letter(&d).expect("twelve digits");
    format!("{letter}{d}")
}

/// National Curriculum year group on `as_of` (0 = Reception, 13 = Year 13).
fn nc_year(dob: i32, as_of: i32) -> i32 {
    let (by, bm, _) = civil_from_days(dob);
    let (ay, am, _) = civil_from_days(as_of);
    let academic_start = if am >= 9 { ay } else { ay - 1 };
    let cohort = if bm >= 9 { by + 1 } else { by };
    academic_start - (cohort + 4)
}

fn police_age_weight(age: i32) -> f64 {
    match age {
        i32::MIN..=4 => 0.6,
        5..=9 => 0.5,
        10..=13 => 1.2,
        _ => 2.2,
    }
}

impl Population {
    fn build(cfg: &SynthConfig, as_of: i32, t: &Tables) -> Population {
        let n = cfg.children;
        let (ay, am, ad) = civil_from_days(as_of);
        // Aged 0–18: born after the same day nineteen years earlier.
        let min_dob = {
            let y = ay - 19;
            let d = ad.min(days_in_month(y, am));
            days_from_civil(y, am, d) + 1
        };
        let max_dob = as_of;

        // Postcode pool shared by unrelated neighbouring households.
        let mut rng = stream_rng(cfg.seed, 1);
        let est_households = (n as f64 / 1.8).ceil() as usize + 1;
        let pool_size = ((est_households as f64 / HOUSEHOLDS_PER_POSTCODE) as usize).max(8);
        let mut postcodes = Vec::with_capacity(pool_size);
        let mut postcode_area = Vec::with_capacity(pool_size);
        const UNIT: &[u8] = b"ABDEFGHJLNPQRSTUWXYZ";
        for _ in 0..pool_size {
            let a = t.area_pick.sample(&mut rng);
            let (area, max_d, _) = AREAS[a];
            let district = rng.random_range(1..=u32::from(max_d));
            let sector = rng.random_range(0..10u32);
            let u1 = UNIT[rng.random_range(0..UNIT.len())] as char;
            let u2 = UNIT[rng.random_range(0..UNIT.len())] as char;
            postcodes.push(format!("{area}{district} {sector}{u1}{u2}"));
            postcode_area.push(a as u8);
        }

        // Households and children.
        let year_weight = |d: i32| -> f64 {
            let y = civil_from_days(d).0;
            let w = BIRTHS_BY_YEAR
                .iter()
                .find(|(yy, _)| *yy == y)
                .map_or(600, |(_, w)| *w);
            f64::from(w) / 740.0
        };
        // Households are drawn from a stationary process: the anchor birth may
        // fall outside the window, and children born outside it are left out,
        // so ages stay evenly spread up to the window's edges.
        let margin = 3 * 1230;
        let sample_dob = |rng: &mut ChaCha8Rng| loop {
            let d = rng.random_range(min_dob - margin..=max_dob + margin);
            if rng.random::<f64>() < year_weight(d) {
                return d;
            }
        };
        let births_pick = Cdf::new([0.42, 0.38, 0.15, 0.05]);
        let mut households: Vec<Household> = Vec::with_capacity(est_households);
        let mut children: Vec<Child> = Vec::with_capacity(n);
        let mut twin_pairs = 0usize;
        let mut multiple_births: Vec<(u32, u8)> = Vec::new();
        let mut used: Vec<&'static str> = Vec::with_capacity(8);
        while children.len() < n {
            let culture = t.culture_pick.sample(&mut rng) as u8;
            let postcode = rng.random_range(0..pool_size) as u32;
            let prev_postcode = rng
                .random_bool(HOUSEHOLD_MOVED_RATE)
                .then(|| rng.random_range(0..pool_size) as u32);
            let mut hh_surname = t.pick_surname(culture, &mut rng);
            if rng.random_bool(DOUBLE_BARREL_HOUSEHOLD_RATE) {
                let other_culture = if rng.random_bool(0.5) { BRIT } else { culture };
                let other = t.pick_surname(other_culture, &mut rng);
                if other != hh_surname {
                    hh_surname = format!("{hh_surname}-{other}");
                }
            }
            let births = births_pick.sample(&mut rng) + 1;
            let anchor = rng.random_range(0..births);
            let mut dobs = vec![0i32; births];
            dobs[anchor] = sample_dob(&mut rng);
            let gap = |rng: &mut ChaCha8Rng| {
                330 + ((rng.random::<f64>() + rng.random::<f64>()) * 900.0) as i32
            };
            for i in anchor + 1..births {
                dobs[i] = dobs[i - 1] + gap(&mut rng);
            }
            for i in (0..anchor).rev() {
                dobs[i] = dobs[i + 1] - gap(&mut rng);
            }
            let hh = households.len() as u32;
            let first_child = children.len();
            used.clear();
            for &dob in &dobs {
                if dob < min_dob || dob > max_dob || children.len() >= n {
                    continue;
                }
                let r = rng.random::<f64>();
                let mut mult = if r < TRIPLET_BIRTH_RATE {
                    3
                } else if r < TRIPLET_BIRTH_RATE + TWIN_BIRTH_RATE {
                    2
                } else {
                    1
                };
                mult = mult.min(n - children.len());
                let birth_surname =
                    if children.len() > first_child && rng.random_bool(HALF_SIBLING_RATE) {
                        t.pick_surname(culture, &mut rng)
                    } else {
                        hh_surname.clone()
                    };
                let first_female = rng.random_bool(0.49);
                let birth_start = children.len();
                for k in 0..mult {
                    let same_sex = k == 0 || rng.random_bool(TWIN_SAME_SEX_RATE);
                    let female = first_female == same_sex;
                    let given = if k == 0 {
                        pick_distinct(t, culture, female, &used, &mut rng)
                    } else {
                        let first = &children[birth_start];
                        twin_name(
                            t,
                            culture,
                            first.given,
                            first.female,
                            female,
                            &used,
                            &mut rng,
                        )
                    };
                    used.push(given);
                    let mut middles = [None, None];
                    if rng.random_bool(CULTURES[culture as usize].middle_rate) {
                        let m1 = pick_distinct(t, culture, female, &[given], &mut rng);
                        middles[0] = Some(m1);
                        if rng.random_bool(TWO_MIDDLE_NAMES_RATE) {
                            middles[1] =
                                Some(pick_distinct(t, culture, female, &[given, m1], &mut rng));
                        }
                    }
                    let mut surname = if female && culture == EEURO {
                        feminine_surname(&birth_surname)
                    } else {
                        birth_surname.clone()
                    };
                    if culture == SASIAN {
                        // Sikh naming: Singh for boys, Kaur for girls; some
                        // Bangladeshi and Pakistani girls carry Begum/Bibi/Khatun.
                        if surname == "Singh" && female {
                            surname = "Kaur".to_string();
                        } else if female && rng.random_bool(BEGUM_RATE) {
                            surname = ["Begum", "Begum", "Bibi", "Khatun"][rng.random_range(0..4)]
                                .to_string();
                        }
                    }
                    children.push(Child {
                        hh,
                        female,
                        given,
                        middles,
                        surname,
                        dob,
                        nhs: 0,
                        alt_nhs: None,
                        upn: None,
                        alt_upn: None,
                        agencies: 0,
                        dup: None,
                    });
                }
                twin_pairs += mult * (mult - 1) / 2;
                if mult > 1 {
                    multiple_births.push((birth_start as u32, mult as u8));
                }
            }
            if children.len() > first_child {
                households.push(Household {
                    culture,
                    postcode,
                    prev_postcode,
                });
            }
        }

        // Agency membership and within-agency duplicates.
        let mut rng = stream_rng(cfg.seed, 2);
        let mean_police_weight = if children.is_empty() {
            1.0
        } else {
            children
                .iter()
                .map(|c| police_age_weight(age_years(c.dob, as_of)))
                .sum::<f64>()
                / children.len() as f64
        };
        for c in children.iter_mut() {
            if rng.random_bool(HEALTH_COVERAGE) {
                c.agencies |= Agency::Health.bit();
            }
            let p_police = (POLICE_COVERAGE * police_age_weight(age_years(c.dob, as_of))
                / mean_police_weight)
                .min(1.0);
            if rng.random_bool(p_police) {
                c.agencies |= Agency::Police.bit();
            }
            let ncy = nc_year(c.dob, as_of);
            let p_school = match ncy {
                0..=11 => STATE_SCHOOL_RATE,
                12 | 13 => STATE_SCHOOL_RATE * SIXTH_FORM_RATE,
                _ => 0.0,
            };
            if p_school > 0.0 && rng.random_bool(p_school) {
                c.agencies |= Agency::Education.bit();
            }
            if c.agencies != 0 && rng.random_bool(DUPLICATE_RATE) {
                // Health duplicates are the most common, police the least.
                let weights = [5.0, 2.0, 3.0];
                let present: Vec<(u8, f64)> = (0..3u8)
                    .filter(|a| c.agencies & (1 << a) != 0)
                    .map(|a| (a, weights[a as usize]))
                    .collect();
                let total: f64 = present.iter().map(|p| p.1).sum();
                let mut u = rng.random::<f64>() * total;
                let mut chosen = present[present.len() - 1].0;
                for (a, w) in &present {
                    if u < *w {
                        chosen = *a;
                        break;
                    }
                    u -= w;
                }
                c.dup = Some(Agency::from_index(chosen));
            }
        }

        // NHS numbers (every child has one; a duplicate registration may get another).
        let mut rng = stream_rng(cfg.seed, 3);
        let mut alloc = NhsAlloc::new(&mut rng);
        for c in children.iter_mut() {
            c.nhs = alloc.next(&mut rng);
            if c.dup == Some(Agency::Health) && rng.random_bool(DUPLICATE_NEW_ID_RATE) {
                c.alt_nhs = Some(alloc.next(&mut rng));
            }
        }

        // UPNs: LA code + establishment + year of allocation + serial.
        let mut rng = stream_rng(cfg.seed, 4);
        let mut seen: HashSet<u64> = HashSet::new();
        let academic_start = if am >= 9 { ay } else { ay - 1 };
        for c in children.iter_mut() {
            if c.agencies & Agency::Education.bit() == 0 {
                continue;
            }
            let area = postcode_area[households[c.hh as usize].postcode as usize] as usize;
            let las = AREAS[area].2;
            let ncy = nc_year(c.dob, as_of);
            let reception_year = academic_start - ncy;
            let mut next_upn = |rng: &mut ChaCha8Rng| loop {
                let la = u64::from(las[rng.random_range(0..las.len())]);
                let est = rng.random_range(2000..2999u64);
                // Most children get their UPN in Reception; some join later.
                let year = if rng.random_bool(0.9) {
                    reception_year
                } else {
                    rng.random_range(reception_year..=academic_start)
                };
                let serial = rng.random_range(0..1000u64);
                let d = la * 1_000_000_000
                    + est * 100_000
                    + (year.rem_euclid(100) as u64) * 1000
                    + serial;
                if seen.insert(d) {
                    return d;
                }
            };
            c.upn = Some(next_upn(&mut rng));
            if c.dup == Some(Agency::Education) && rng.random_bool(DUPLICATE_NEW_ID_RATE) {
                c.alt_upn = Some(next_upn(&mut rng));
            }
        }

        let entity_width = decimal_width(n as u64).max(7);
        Population {
            households,
            children,
            postcodes,
            twin_pairs,
            multiple_births,
            as_of,
            entity_width,
        }
    }
}

fn pick_distinct<R: Rng>(
    t: &Tables,
    culture: u8,
    female: bool,
    avoid: &[&str],
    rng: &mut R,
) -> &'static str {
    let mut name = t.pick_given(culture, female, rng);
    for _ in 0..20 {
        if !avoid.iter().any(|a| t.same_given_group(a, name)) {
            break;
        }
        name = t.pick_given(culture, female, rng);
    }
    name
}

/// A name for a co-twin: often alliterative or a known similar pair.
fn twin_name<R: Rng>(
    t: &Tables,
    culture: u8,
    first: &'static str,
    first_female: bool,
    female: bool,
    used: &[&'static str],
    rng: &mut R,
) -> &'static str {
    let partners: Vec<&'static str> = TWIN_PAIRS
        .iter()
        .filter_map(|&(a, af, b, bf)| {
            if a == first && af == first_female && bf == female {
                Some(b)
            } else if b == first && bf == first_female && af == female {
                Some(a)
            } else {
                None
            }
        })
        .filter(|n| !used.contains(n))
        .collect();
    if !partners.is_empty() && rng.random_bool(TWIN_PAIR_NAME_RATE) {
        return partners[rng.random_range(0..partners.len())];
    }
    if rng.random_bool(TWIN_ALLITERATION_RATE) {
        let c = &CULTURES[culture as usize];
        let list = if female { c.girls } else { c.boys };
        let initial = first.chars().next();
        let cands: Vec<(usize, &'static str)> = list
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, n)| {
                n.chars().next() == initial && !used.iter().any(|u| t.same_given_group(u, n))
            })
            .collect();
        if !cands.is_empty() {
            let pick = Cdf::new(
                cands
                    .iter()
                    .map(|(i, _)| 1.0 / (*i as f64 + GIVEN_ZIPF_OFFSET)),
            );
            return cands[pick.sample(rng)].1;
        }
    }
    pick_distinct(t, culture, female, used, rng)
}

// ---------------------------------------------------------------------------
// Record corruption
// ---------------------------------------------------------------------------

fn keyboard_neighbours(c: char) -> &'static str {
    match c {
        'q' => "wa",
        'w' => "qes",
        'e' => "wrd",
        'r' => "etf",
        't' => "ryg",
        'y' => "tuh",
        'u' => "yij",
        'i' => "uok",
        'o' => "ipl",
        'p' => "ol",
        'a' => "qsz",
        's' => "adwx",
        'd' => "sfec",
        'f' => "dgrv",
        'g' => "fhtb",
        'h' => "gjyn",
        'j' => "hkum",
        'k' => "jli",
        'l' => "kop",
        'z' => "asx",
        'x' => "zcs",
        'c' => "xvd",
        'v' => "cbf",
        'b' => "vng",
        'n' => "bmh",
        'm' => "nj",
        _ => "",
    }
}

fn match_case(template: char, c: char) -> char {
    if template.is_uppercase() {
        c.to_ascii_uppercase()
    } else {
        c
    }
}

/// One typo: substitution, deletion, insertion, adjacent transposition or
/// keyboard-neighbour substitution.
fn typo<R: Rng>(s: &str, rng: &mut R) -> String {
    let mut cs: Vec<char> = s.chars().collect();
    if cs.len() < 2 {
        return s.to_string();
    }
    let letters: Vec<usize> = (0..cs.len()).filter(|&i| cs[i].is_alphabetic()).collect();
    if letters.is_empty() {
        return s.to_string();
    }
    for _ in 0..8 {
        let i = letters[rng.random_range(0..letters.len())];
        let random_letter = (b'a' + rng.random_range(0..26u8)) as char;
        let mut out = cs.clone();
        match rng.random_range(0..5) {
            0 => out[i] = match_case(cs[i], random_letter),
            1 => {
                out.remove(i);
            }
            2 => {
                let c = if rng.random_bool(0.5) {
                    cs[i].to_lowercase().next().unwrap_or(cs[i])
                } else {
                    random_letter
                };
                out.insert(i + 1, c);
            }
            3 => {
                if i + 1 < cs.len() {
                    out.swap(i, i + 1);
                } else {
                    out.swap(i - 1, i);
                }
            }
            _ => {
                let lower = cs[i].to_ascii_lowercase();
                let nb = keyboard_neighbours(lower);
                let c = if nb.is_empty() {
                    random_letter
                } else {
                    nb.as_bytes()[rng.random_range(0..nb.len())] as char
                };
                out[i] = match_case(cs[i], c);
            }
        }
        if out != cs && out.iter().any(|c| c.is_alphabetic()) {
            cs = out;
            return cs.into_iter().collect();
        }
    }
    s.to_string()
}

/// Plain-ASCII (or apostrophe) spelling of a letter with a diacritic.
fn fold_lower(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' | 'ạ' | 'ả' | 'ấ' | 'ầ' | 'ẩ' | 'ẫ'
        | 'ậ' | 'ắ' | 'ằ' | 'ẳ' | 'ẵ' | 'ặ' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' | 'ĉ' | 'ċ' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' | 'ẹ' | 'ẻ' | 'ẽ' | 'ế' | 'ề' | 'ể'
        | 'ễ' | 'ệ' => "e",
        'ğ' | 'ģ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'į' | 'ı' | 'ỉ' | 'ị' => "i",
        'ķ' => "k",
        'ł' | 'ľ' | 'ļ' | 'ĺ' => "l",
        'ñ' | 'ń' | 'ň' | 'ņ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' | 'ơ' | 'ọ' | 'ỏ' | 'ố' | 'ồ' | 'ổ' | 'ỗ'
        | 'ộ' | 'ớ' | 'ờ' | 'ở' | 'ỡ' | 'ợ' => "o",
        'œ' => "oe",
        'ŕ' | 'ř' => "r",
        'ś' | 'š' | 'ş' | 'ș' | 'ŝ' => "s",
        'ß' => "ss",
        'ť' | 'ţ' | 'ț' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' | 'ư' | 'ụ' | 'ủ' | 'ứ' | 'ừ'
        | 'ử' | 'ữ' | 'ự' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' | 'ỳ' | 'ỵ' | 'ỷ' | 'ỹ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        '’' | '‘' => "'",
        _ => return None,
    })
}

/// Appends the ASCII spelling of `c` to `out`; false if there is none.
fn push_folded(c: char, out: &mut String) -> bool {
    let lower = c.to_lowercase().next().unwrap_or(c);
    match fold_lower(lower) {
        Some(f) => {
            if c.is_uppercase() {
                out.push_str(&f.to_uppercase());
            } else {
                out.push_str(f);
            }
            true
        }
        None => false,
    }
}

/// Drops all diacritics (and curly apostrophes).
fn ascii_fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() || !push_folded(c, &mut out) {
            out.push(c);
        }
    }
    out
}

fn in_windows_1252(c: char) -> bool {
    let u = c as u32;
    u < 0x80
        || (0xA0..=0xFF).contains(&u)
        || matches!(
            c,
            '€' | '‚'
                | 'ƒ'
                | '„'
                | '…'
                | '†'
                | '‡'
                | 'ˆ'
                | '‰'
                | 'Š'
                | '‹'
                | 'Œ'
                | 'Ž'
                | '‘'
                | '’'
                | '“'
                | '”'
                | '•'
                | '–'
                | '—'
                | '˜'
                | '™'
                | 'š'
                | '›'
                | 'œ'
                | 'ž'
                | 'Ÿ'
        )
}

/// What a legacy Windows-1252 system stores: letters it cannot hold lose
/// their diacritic (Ł → L, Ş → S); anything else becomes `?`.
fn legacy_1252(s: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() || (!ascii_only && in_windows_1252(c)) {
            out.push(c);
        } else if !push_folded(c, &mut out) {
            out.push(if in_windows_1252(c) { c } else { '?' });
        }
    }
    out
}

/// Apostrophe/hyphen/space written another way.
fn punctuation_variant<R: Rng>(s: &str, rng: &mut R) -> String {
    if s.contains('\'') || s.contains('’') {
        let repl = ["’", "'", "", " "];
        let r = repl[rng.random_range(0..repl.len())];
        let out = s.replace(['\'', '’'], r);
        if out != s {
            return out;
        }
        return s.replace(['\'', '’'], "");
    }
    if s.contains('-') {
        return if rng.random_bool(0.7) {
            s.replace('-', " ")
        } else {
            s.replace('-', "")
        };
    }
    if s.contains(' ') {
        return if rng.random_bool(0.5) {
            s.replace(' ', "")
        } else {
            s.replace(' ', "-")
        };
    }
    s.to_string()
}

/// Step-family name, or a double-barrel added or dropped.
fn change_surname<R: Rng>(s: &str, culture: u8, t: &Tables, rng: &mut R) -> String {
    if s.contains('-') && rng.random_bool(0.7) {
        let parts: Vec<&str> = s.split('-').filter(|p| !p.is_empty()).collect();
        if parts.len() >= 2 {
            return parts[rng.random_range(0..parts.len())].to_string();
        }
    }
    let other_culture = if rng.random_bool(0.8) { culture } else { BRIT };
    for _ in 0..10 {
        let other = t.pick_surname(other_culture, rng);
        if other == s {
            continue;
        }
        return if rng.random_bool(0.5) {
            other
        } else if rng.random_bool(0.5) {
            format!("{s}-{other}")
        } else {
            format!("{other}-{s}")
        };
    }
    s.to_string()
}

struct RecNames {
    given: String,
    middle: String,
    surname: String,
}

fn record_names<R: Rng>(
    c: &Child,
    culture: u8,
    agency: Agency,
    t: &Tables,
    rng: &mut R,
) -> RecNames {
    let mut given = c.given.to_string();
    let mut middles: Vec<String> = c.middles.iter().flatten().map(|m| m.to_string()).collect();
    let nickname_rate = match agency {
        Agency::Health => NICKNAME_RATE_HEALTH,
        Agency::Police => NICKNAME_RATE_POLICE,
        Agency::Education => NICKNAME_RATE_EDUCATION,
    };
    if rng.random_bool(nickname_rate) {
        if let Some(v) = t.given_variant(&given, rng) {
            given = v.to_string();
        }
    }
    if !middles.is_empty() {
        let rate = if is_prefix_name(c.given) {
            PREFIX_NAME_SWAP_RATE
        } else {
            NAME_SWAP_RATE
        };
        if rng.random_bool(rate) {
            std::mem::swap(&mut given, &mut middles[0]);
        }
    }
    let mut surname = c.surname.clone();
    if rng.random_bool(SURNAME_CHANGE_RATE) {
        surname = change_surname(&surname, culture, t, rng);
    }
    if rng.random_bool(SURNAME_VARIANT_RATE) {
        if let Some(v) = t.surname_variant(&surname, rng) {
            surname = v.to_string();
        }
    }
    if rng.random_bool(TYPO_RATE) {
        given = typo(&given, rng);
    }
    for m in middles.iter_mut() {
        if rng.random_bool(TYPO_RATE) {
            *m = typo(m, rng);
        }
    }
    if rng.random_bool(TYPO_RATE) {
        surname = typo(&surname, rng);
    }
    if rng.random_bool(PUNCTUATION_VARIANT_RATE) {
        surname = punctuation_variant(&surname, rng);
    }
    if rng.random_bool(PUNCTUATION_VARIANT_RATE) {
        given = punctuation_variant(&given, rng);
    }
    let keep_middle = match agency {
        Agency::Health => MIDDLE_PRESENT_HEALTH,
        Agency::Police => MIDDLE_PRESENT_POLICE,
        Agency::Education => MIDDLE_PRESENT_EDUCATION,
    };
    let middle = if !middles.is_empty() && rng.random_bool(keep_middle) {
        middles.join(" ")
    } else {
        String::new()
    };
    let mut n = RecNames {
        given,
        middle,
        surname,
    };
    match agency {
        Agency::Police => {
            let ascii = rng.random_bool(POLICE_ASCII_FOLD_RATE);
            n.given = legacy_1252(&n.given.to_uppercase(), ascii);
            n.middle = legacy_1252(&n.middle.to_uppercase(), ascii);
            n.surname = legacy_1252(&n.surname.to_uppercase(), ascii);
        }
        Agency::Health | Agency::Education => {
            if rng.random_bool(DIACRITIC_DROP_RATE) {
                n.given = ascii_fold(&n.given);
                n.middle = ascii_fold(&n.middle);
                n.surname = ascii_fold(&n.surname);
            }
            if rng.random_bool(UPPERCASE_SURNAME_RATE) {
                n.surname = n.surname.to_uppercase();
            }
        }
    }
    n
}

/// The date of birth as recorded: sometimes day/month swapped or mistyped.
fn record_dob<R: Rng>(dob: i32, rng: &mut R) -> (i32, u32, u32) {
    let (y, m, d) = civil_from_days(dob);
    if d <= 12 && d != m && rng.random_bool(DOB_DAY_MONTH_SWAP_RATE) {
        return (y, d, m);
    }
    if rng.random_bool(DOB_TYPO_RATE) {
        for _ in 0..6 {
            let cand = match rng.random_range(0..5) {
                0 => civil_from_days(dob + if rng.random_bool(0.5) { 1 } else { -1 }),
                1 => {
                    // one digit of the day
                    let (tens, units) = (d / 10, d % 10);
                    if rng.random_bool(0.5) {
                        (y, m, tens * 10 + rng.random_range(0..10))
                    } else {
                        (y, m, rng.random_range(0..4) * 10 + units)
                    }
                }
                2 => (
                    y,
                    if rng.random_bool(0.5) {
                        m + 1
                    } else {
                        m.wrapping_sub(1)
                    },
                    d,
                ),
                3 => (y + if rng.random_bool(0.5) { 1 } else { -1 }, m, d),
                _ => (y, m, (d % 10) * 10 + d / 10),
            };
            if cand != (y, m, d) && valid_date(cand.0, cand.1, cand.2) {
                return cand;
            }
        }
    }
    (y, m, d)
}

fn postcode_typo<R: Rng>(pc: &str, rng: &mut R) -> String {
    let mut cs: Vec<char> = pc.chars().collect();
    let positions: Vec<usize> = (0..cs.len()).filter(|&i| cs[i] != ' ').collect();
    let i = positions[rng.random_range(0..positions.len())];
    let old = cs[i];
    cs[i] = if old.is_ascii_digit() {
        let mut d = (b'0' + rng.random_range(0..10u8)) as char;
        if d == old {
            d = if old == '9' {
                '8'
            } else {
                (old as u8 + 1) as char
            };
        }
        d
    } else {
        let nb = keyboard_neighbours(old.to_ascii_lowercase());
        if nb.is_empty() {
            old
        } else {
            (nb.as_bytes()[rng.random_range(0..nb.len())] as char).to_ascii_uppercase()
        }
    };
    cs.into_iter().collect()
}

/// The postcode as recorded, canonical "A9 9AA" form (formatting is per agency).
fn record_postcode<R: Rng>(
    pop: &Population,
    c: &Child,
    agency: Agency,
    rng: &mut R,
) -> Option<String> {
    if rng.random_bool(POSTCODE_MISSING_RATE) {
        return None;
    }
    let h = &pop.households[c.hh as usize];
    let (stale, other) = match agency {
        Agency::Health => (STALE_POSTCODE_RATE_HEALTH, OTHER_OLD_POSTCODE_RATE_HEALTH),
        _ => (STALE_POSTCODE_RATE_OTHER, OTHER_OLD_POSTCODE_RATE_OTHER),
    };
    let idx = match h.prev_postcode {
        Some(prev) if rng.random_bool(stale) => prev,
        None if rng.random_bool(other) => rng.random_range(0..pop.postcodes.len()) as u32,
        _ => h.postcode,
    };
    let pc = &pop.postcodes[idx as usize];
    Some(if rng.random_bool(POSTCODE_TYPO_RATE) {
        postcode_typo(pc, rng)
    } else {
        pc.clone()
    })
}

/// An NHS number as recorded (10 digits), sometimes with a one-digit typo failing the check.
fn record_nhs<R: Rng>(nhs: u64, rng: &mut R) -> String {
    let s = format!("{nhs:010}");
    if rng.random_bool(INVALID_ID_RATE) {
        return digit_typo(&s, rng, is_valid_nhs_number);
    }
    s
}

/// Changes one digit so that `valid` fails.
fn digit_typo<R: Rng>(s: &str, rng: &mut R, valid: fn(&str) -> bool) -> String {
    let digits: Vec<usize> = s
        .bytes()
        .enumerate()
        .filter(|(_, b)| b.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    loop {
        let mut b = s.as_bytes().to_vec();
        let i = digits[rng.random_range(0..digits.len())];
        let nd = b'0' + rng.random_range(0..10u8);
        if nd == b[i] {
            continue;
        }
        b[i] = nd;
        let out = String::from_utf8(b).expect("ASCII");
        if !valid(&out) {
            return out;
        }
    }
}

fn spaced_nhs(s: &str) -> String {
    if s.len() == 10 {
        format!("{} {} {}", &s[..3], &s[3..6], &s[6..])
    } else {
        s.to_string()
    }
}

fn sex_unknown<R: Rng>(rng: &mut R) -> bool {
    rng.random_bool(SEX_UNKNOWN_RATE)
}

fn recorded_female<R: Rng>(c: &Child, rng: &mut R) -> bool {
    if rng.random_bool(SEX_ERROR_RATE) {
        !c.female
    } else {
        c.female
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Formats record ids for one agency's export: unique, scattered over the
/// id space, unrelated to entity ids.
struct RecordIds {
    agency: Agency,
    perm: IdPerm,
    width: usize,
    base: u64,
    first_year: i64,
}

impl RecordIds {
    fn new(agency: Agency, n: u64, as_of_year: i32, rng: &mut ChaCha8Rng) -> Self {
        let room = n.saturating_mul(4).max(1);
        let (modulus, width, base) = match agency {
            // H + 7 digits (more when needed).
            Agency::Health => {
                let w = decimal_width(room.saturating_mul(3)).max(7);
                (10u64.pow(w as u32), w, 0)
            }
            // P/yy/serial over sixteen years of 6-digit serials.
            Agency::Police => {
                let mut w = 6;
                while 16 * 10u64.pow(w as u32) < room {
                    w += 1;
                }
                (16 * 10u64.pow(w as u32), w, 0)
            }
            // 8-digit pupil ids not starting with 0.
            Agency::Education => {
                let mut w = 8;
                while 9 * 10u64.pow(w as u32 - 1) < room {
                    w += 1;
                }
                (9 * 10u64.pow(w as u32 - 1), w, 10u64.pow(w as u32 - 1))
            }
        };
        RecordIds {
            agency,
            perm: IdPerm::new(modulus, rng),
            width,
            base,
            first_year: i64::from(as_of_year) - 15,
        }
    }

    fn id(&self, position: u64) -> String {
        let v = self.perm.apply(position);
        let w = self.width;
        match self.agency {
            Agency::Health => format!("H{v:0w$}"),
            Agency::Police => {
                let per_year = 10u64.pow(w as u32);
                let yy = (self.first_year + (v / per_year) as i64).rem_euclid(100);
                format!("P/{yy:02}/{:0w$}", v % per_year)
            }
            Agency::Education => (self.base + v).to_string(),
        }
    }
}

/// Appends one CSV field, quoted only when needed (RFC 4180).
fn push_field(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        buf.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                buf.push(b'"');
            }
            buf.push(b);
        }
        buf.push(b'"');
    } else {
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Appends one CSV row ending in `eol`.
fn push_row<S: AsRef<str>>(buf: &mut Vec<u8>, fields: &[S], eol: &[u8]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_field(buf, f.as_ref());
    }
    buf.extend_from_slice(eol);
}

fn write_agency(
    pop: &Population,
    t: &Tables,
    agency: Agency,
    rng: &mut ChaCha8Rng,
    path: &Path,
    truth: &mut Vec<(u32, u8, String)>,
) -> Result<usize, SynthError> {
    let bit = agency.bit();
    let mut entries: Vec<(u32, bool)> = Vec::new();
    for (i, c) in pop.children.iter().enumerate() {
        if c.agencies & bit != 0 {
            entries.push((i as u32, false));
            if c.dup == Some(agency) {
                entries.push((i as u32, true));
            }
        }
    }
    let n = entries.len();
    // Rows are written in a shuffled order; records are made in child order
    // (cache-friendly) into one buffer and then copied out in that order.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(rng);
    let mut position = vec![0u32; n];
    for (row, &k) in order.iter().enumerate() {
        position[k as usize] = row as u32;
    }
    let ids = RecordIds::new(agency, n as u64, civil_from_days(pop.as_of).0, rng);
    let eol: &[u8] = if agency == Agency::Police {
        b"\n"
    } else {
        b"\r\n"
    };

    let mut buf: Vec<u8> = Vec::with_capacity(n * 72);
    let mut offsets: Vec<usize> = Vec::with_capacity(n + 1);
    offsets.push(0);
    for (k, &(ci, is_dup)) in entries.iter().enumerate() {
        let id = ids.id(u64::from(position[k]));
        match agency {
            Agency::Health => push_row(
                &mut buf,
                &health_record(pop, t, ci, is_dup, id.clone(), rng),
                eol,
            ),
            Agency::Police => push_row(&mut buf, &police_record(pop, t, ci, id.clone(), rng), eol),
            Agency::Education => push_row(
                &mut buf,
                &education_record(pop, t, ci, is_dup, id.clone(), rng),
                eol,
            ),
        }
        offsets.push(buf.len());
        truth.push((ci, agency as u8, id));
    }

    let mut out: Vec<u8> = Vec::with_capacity(buf.len() + 256);
    match agency {
        Agency::Health => push_row(&mut out, &HEALTH_HEADERS, eol),
        Agency::Police => push_row(&mut out, &POLICE_HEADERS, eol),
        Agency::Education => {
            out.extend_from_slice("\u{feff}".as_bytes());
            push_row(&mut out, &EDUCATION_HEADERS, eol);
        }
    }
    for &k in &order {
        out.extend_from_slice(&buf[offsets[k as usize]..offsets[k as usize + 1]]);
    }
    drop(buf);
    if agency == Agency::Police {
        out = encode_windows_1252(&out);
    }
    fs::write(path, &out).map_err(|e| io_err(path, e))?;
    Ok(n)
}

fn encode_windows_1252(utf8: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(utf8);
    let mut encoder = encoding_rs::WINDOWS_1252.new_encoder();
    let mut out = vec![0u8; text.len() + 16];
    let mut written_total = 0;
    let mut src: &str = &text;
    loop {
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(src, &mut out[written_total..], true);
        written_total += written;
        src = &src[read..];
        match result {
            encoding_rs::EncoderResult::InputEmpty => break,
            encoding_rs::EncoderResult::OutputFull => {
                out.resize(out.len() * 2 + 16, 0);
            }
            encoding_rs::EncoderResult::Unmappable(_) => {
                if written_total >= out.len() {
                    out.resize(out.len() * 2 + 16, 0);
                }
                out[written_total] = b'?';
                written_total += 1;
            }
        }
    }
    out.truncate(written_total);
    out
}

fn health_record<R: Rng>(
    pop: &Population,
    t: &Tables,
    ci: u32,
    is_dup: bool,
    id: String,
    rng: &mut R,
) -> [String; 8] {
    let c = &pop.children[ci as usize];
    let culture = pop.households[c.hh as usize].culture;
    let nhs_value = match (is_dup, c.alt_nhs) {
        (true, Some(alt)) => alt,
        _ => c.nhs,
    };
    let nhs = if rng.random_bool(HEALTH_NHS_PRESENT_RATE) {
        let s = record_nhs(nhs_value, rng);
        if rng.random_bool(HEALTH_NHS_SPACED_RATE) {
            spaced_nhs(&s)
        } else {
            s
        }
    } else {
        String::new()
    };
    let mut names = record_names(c, culture, Agency::Health, t, rng);
    if age_years(c.dob, pop.as_of) < 1 && rng.random_bool(BABY_PLACEHOLDER_RATE) {
        names.given = "BABY".to_string();
        names.middle.clear();
    }
    let (y, m, d) = record_dob(c.dob, rng);
    let gender = if sex_unknown(rng) {
        if rng.random_bool(0.6) {
            "U"
        } else {
            ""
        }
    } else if recorded_female(c, rng) {
        "F"
    } else {
        "M"
    };
    let postcode = match record_postcode(pop, c, Agency::Health, rng) {
        None => String::new(),
        Some(pc) => {
            let r = rng.random::<f64>();
            if r < 0.03 {
                pc.replace(' ', "")
            } else if r < 0.05 {
                pc.to_lowercase()
            } else {
                pc
            }
        }
    };
    [
        id,
        nhs,
        names.given,
        names.middle,
        names.surname,
        format!("{d:02}/{m:02}/{y:04}"),
        gender.to_string(),
        postcode,
    ]
}

fn police_record<R: Rng>(
    pop: &Population,
    t: &Tables,
    ci: u32,
    reference: String,
    rng: &mut R,
) -> [String; 8] {
    let c = &pop.children[ci as usize];
    let culture = pop.households[c.hh as usize].culture;
    let mut names = record_names(c, culture, Agency::Police, t, rng);
    if rng.random_bool(UNKNOWN_PLACEHOLDER_RATE_POLICE) {
        names.given = "UNKNOWN".to_string();
        names.middle.clear();
    }
    let dob = if rng.random_bool(DOB_PLACEHOLDER_RATE_POLICE) {
        "01-Jan-1900".to_string()
    } else {
        let (y, m, d) = record_dob(c.dob, rng);
        format!("{d:02}-{}-{y:04}", MONTHS[(m - 1) as usize])
    };
    let sex = if sex_unknown(rng) {
        if rng.random_bool(0.7) {
            "9"
        } else {
            ""
        }
    } else if recorded_female(c, rng) {
        "2"
    } else {
        "1"
    };
    let postcode = if rng.random_bool(POLICE_NFA_RATE) {
        "NFA".to_string()
    } else {
        match record_postcode(pop, c, Agency::Police, rng) {
            None => String::new(),
            Some(pc) if rng.random_bool(POLICE_POSTCODE_NO_SPACE_RATE) => pc.replace(' ', ""),
            Some(pc) => pc,
        }
    };
    let nhs = if rng.random_bool(POLICE_NHS_PRESENT_RATE) {
        record_nhs(c.nhs, rng)
    } else {
        String::new()
    };
    [
        reference,
        names.surname,
        names.given,
        names.middle,
        dob,
        sex.to_string(),
        postcode,
        nhs,
    ]
}

fn education_record<R: Rng>(
    pop: &Population,
    t: &Tables,
    ci: u32,
    is_dup: bool,
    id: String,
    rng: &mut R,
) -> [String; 9] {
    let c = &pop.children[ci as usize];
    let culture = pop.households[c.hh as usize].culture;
    let upn_digits = match (is_dup, c.alt_upn) {
        (true, Some(alt)) => alt,
        _ => c.upn.expect("education children have a UPN"),
    };
    let mut upn = upn_string(upn_digits);
    if rng.random_bool(INVALID_ID_RATE) {
        upn = digit_typo(&upn, rng, is_valid_upn);
    }
    let names = record_names(c, culture, Agency::Education, t, rng);
    let preferred = if rng.random_bool(PREFERRED_SURNAME_RATE) {
        change_surname(&c.surname, culture, t, rng)
    } else {
        String::new()
    };
    let (y, m, d) = record_dob(c.dob, rng);
    let sex = if sex_unknown(rng) {
        ""
    } else if recorded_female(c, rng) {
        "Female"
    } else {
        "Male"
    };
    let postcode = match record_postcode(pop, c, Agency::Education, rng) {
        None => String::new(),
        Some(pc) if rng.random_bool(0.02) => pc.replace(' ', ""),
        Some(pc) => pc,
    };
    [
        id,
        upn,
        names.given,
        names.middle,
        names.surname,
        preferred,
        format!("{y:04}-{m:02}-{d:02}"),
        sex.to_string(),
        postcode,
    ]
}

fn write_truth(
    pop: &Population,
    truth: &mut [(u32, u8, String)],
    path: &Path,
) -> Result<(), SynthError> {
    // Entity order, then agency; a duplicate follows its original record.
    truth.sort_by_key(|r| (r.0, r.1));
    let file = File::create(path).map_err(|e| io_err(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut line: Vec<u8> = Vec::with_capacity(64);
    push_row(&mut line, &TRUTH_HEADERS, b"\n");
    let w = pop.entity_width;
    for (ci, agency, record_id) in truth.iter() {
        write!(line, "E{:0w$},", ci + 1).map_err(|e| io_err(path, e))?;
        push_row(
            &mut line,
            &[Agency::from_index(*agency).name(), record_id.as_str()],
            b"\n",
        );
        if line.len() > 60_000 {
            out.write_all(&line).map_err(|e| io_err(path, e))?;
            line.clear();
        }
    }
    out.write_all(&line).map_err(|e| io_err(path, e))?;
    out.flush().map_err(|e| io_err(path, e))
}

/// Writes `twins.csv`: one row per unordered pair of children of the same
/// multiple birth, smaller entity id first, rows sorted (entity ids are
/// fixed-width, so text order is child order).
fn write_twins(pop: &Population, path: &Path) -> Result<(), SynthError> {
    let mut text: Vec<u8> = Vec::with_capacity(32 + pop.twin_pairs * 20);
    push_row(&mut text, &TWINS_HEADERS, b"\n");
    let w = pop.entity_width;
    for &(first, mult) in &pop.multiple_births {
        let last = first + u32::from(mult);
        for a in first..last {
            for b in a + 1..last {
                writeln!(text, "E{:0w$},E{:0w$}", a + 1, b + 1).map_err(|e| io_err(path, e))?;
            }
        }
    }
    fs::write(path, &text).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        r.records()
            .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
            .collect()
    }

    struct Out {
        _dir: tempfile::TempDir,
        summary: SynthSummary,
        bytes: BTreeMap<String, Vec<u8>>,
    }

    fn run(cfg: &SynthConfig) -> Out {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested").join("synth");
        let summary = generate(cfg, &out).unwrap();
        let bytes = summary
            .files
            .iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read(p).unwrap(),
                )
            })
            .collect();
        Out {
            _dir: dir,
            summary,
            bytes,
        }
    }

    fn hamming(a: &str, b: &str) -> usize {
        if a.len() != b.len() {
            return usize::MAX;
        }
        a.bytes().zip(b.bytes()).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn check_digits() {
        assert_eq!(nhs_check_digit(943_476_591), Some(9));
        assert!(is_valid_nhs_number("943 476 5919"));
        assert!(is_valid_nhs_number("9434765919"));
        assert!(!is_valid_nhs_number("9434765918"));
        assert!(!is_valid_nhs_number("943476591"));
        assert!(!is_valid_nhs_number("94347659x9"));
        // Every single-digit change of a valid UPN or NHS number is caught.
        let upn = upn_string(330_212_315_042);
        assert!(is_valid_upn(&upn));
        assert_eq!(upn.len(), 13);
        let nhs = "9990000018";
        assert!(is_valid_nhs_number(nhs));
        for s in [upn.as_str(), nhs] {
            for i in 0..s.len() {
                for d in b'0'..=b'9' {
                    let mut b = s.as_bytes().to_vec();
                    if !b[i].is_ascii_digit() || b[i] == d {
                        continue;
                    }
                    b[i] = d;
                    let t = String::from_utf8(b).unwrap();
                    assert!(!is_valid_upn(&t) && !is_valid_nhs_number(&t), "{t}");
                }
            }
        }
        assert!(!is_valid_upn(""));
        assert!(!is_valid_upn("A12345678901"));
    }

    #[test]
    fn nhs_allocation_is_unique_and_in_test_range() {
        let mut rng = stream_rng(1, 1);
        let mut alloc = NhsAlloc::new(&mut rng);
        let mut seen = HashSet::new();
        for _ in 0..50_000 {
            let n = alloc.next(&mut rng);
            assert!((9_990_000_000..=9_999_999_999).contains(&n));
            assert!(is_valid_nhs_number(&format!("{n:010}")));
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn dates_round_trip() {
        for z in days_from_civil(1999, 1, 1)..days_from_civil(2031, 1, 1) {
            let (y, m, d) = civil_from_days(z);
            assert!(valid_date(y, m, d));
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            age_years(days_from_civil(2015, 3, 12), days_from_civil(2026, 3, 11)),
            10
        );
        assert_eq!(
            age_years(days_from_civil(2015, 3, 12), days_from_civil(2026, 3, 12)),
            11
        );
        let as_of = days_from_civil(2026, 1, 1);
        assert_eq!(nc_year(days_from_civil(2020, 9, 1), as_of), 0);
        assert_eq!(nc_year(days_from_civil(2021, 8, 31), as_of), 0);
        assert_eq!(nc_year(days_from_civil(2021, 9, 1), as_of), -1);
        assert_eq!(nc_year(days_from_civil(2007, 9, 1), as_of), 13);
    }

    #[test]
    fn id_perm_is_a_bijection() {
        let mut rng = stream_rng(9, 9);
        for m in [1u64, 2, 7, 1000, 12_345] {
            let p = IdPerm::new(m, &mut rng);
            let set: HashSet<u64> = (0..m).map(|x| p.apply(x)).collect();
            assert_eq!(set.len() as u64, m);
            assert!(set.iter().all(|&v| v < m));
        }
    }

    #[test]
    fn every_listed_name_survives_windows_1252() {
        let lists: [&[&str]; 18] = [
            BRIT_BOYS,
            BRIT_GIRLS,
            BRIT_SURNAMES,
            CARIB_SURNAMES,
            SASIAN_BOYS,
            SASIAN_GIRLS,
            SASIAN_SURNAMES,
            EEURO_BOYS,
            EEURO_GIRLS,
            EEURO_SURNAMES,
            AFRICAN_BOYS,
            AFRICAN_GIRLS,
            AFRICAN_SURNAMES,
            SOMARAB_BOYS,
            SOMARAB_GIRLS,
            SOMARAB_SURNAMES,
            EASIAN_BOYS,
            EASIAN_GIRLS,
        ];
        let mut total = 0;
        let groups = GIVEN_VARIANTS
            .iter()
            .chain(SURNAME_VARIANTS.iter())
            .copied();
        for list in lists.into_iter().chain([EASIAN_SURNAMES]).chain(groups) {
            for name in list {
                total += 1;
                for n in [name.to_string(), feminine_surname(name)] {
                    let legacy = legacy_1252(&n.to_uppercase(), false);
                    assert!(!legacy.contains('?'), "{n} -> {legacy}");
                    assert!(legacy.chars().all(in_windows_1252), "{n}");
                    assert!(ascii_fold(&n).is_ascii(), "{n} -> {}", ascii_fold(&n));
                }
            }
        }
        assert!(total > 1000, "{total} names");
        assert_eq!(legacy_1252("ŁUKASZ", false), "LUKASZ");
        assert_eq!(legacy_1252("ŞTEFAN", false), "STEFAN");
        assert_eq!(legacy_1252("ZOË", false), "ZOË");
        assert_eq!(legacy_1252("ZOË", true), "ZOE");
        assert_eq!(ascii_fold("Nguyễn"), "Nguyen");
        assert_eq!(feminine_surname("Kowalski"), "Kowalska");
        assert_eq!(feminine_surname("Černý"), "Černá");
        let enc = encode_windows_1252("O’NEILL,ZOË\n".as_bytes());
        assert_eq!(enc, b"O\x92NEILL,ZO\xcb\n");
    }

    #[test]
    fn culture_table_matches_documented_rates() {
        let total: f64 = CULTURES.iter().map(|c| c.weight).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let middle: f64 = CULTURES.iter().map(|c| c.weight * c.middle_rate).sum();
        assert!((middle - MIDDLE_NAME_RATE).abs() < 0.02, "{middle}");
        for c in &CULTURES {
            assert!(c.boys.len() >= 30 && c.girls.len() >= 30 && c.surnames.len() >= 40);
        }
    }

    #[test]
    fn csv_rows_round_trip() {
        let fields = [
            "plain",
            "",
            "O'Brien",
            "a,b",
            "say \"hi\"",
            "two\nlines",
            "Zoë",
        ];
        let mut buf = Vec::new();
        push_row(&mut buf, &fields, b"\r\n");
        push_row(&mut buf, &fields, b"\r\n");
        let rows = parse_csv(std::str::from_utf8(&buf).unwrap());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], fields);
        assert!(buf.starts_with(b"plain,,O'Brien,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",Zo"));
    }

    #[test]
    fn typos_change_names() {
        let mut rng = stream_rng(3, 3);
        for _ in 0..500 {
            let t = typo("Katherine", &mut rng);
            assert_ne!(t, "Katherine");
            let len = t.chars().count() as i64;
            assert!((len - 9).abs() <= 1, "{t}");
        }
        assert_eq!(typo("A", &mut rng), "A");
        for _ in 0..200 {
            let pc = postcode_typo("SW12 4AB", &mut rng);
            assert_eq!(hamming(&pc, "SW12 4AB"), 1, "{pc}");
        }
    }

    #[test]
    fn deterministic_and_seed_sensitive() {
        let cfg = SynthConfig::new(1_500, 11);
        let a = run(&cfg);
        let b = run(&cfg);
        assert_eq!(a.summary.rows, b.summary.rows);
        assert_eq!(a.bytes, b.bytes);
        let c = run(&SynthConfig::new(1_500, 12));
        assert_ne!(a.bytes["health.csv"], c.bytes["health.csv"]);
    }

    #[test]
    fn tiny_populations() {
        for n in [0, 1, 2, 5] {
            let out = run(&SynthConfig::new(n, 5));
            assert_eq!(out.summary.children, n);
            assert_eq!(out.summary.files.len(), 8);
            assert!(out.bytes["twins.csv"].starts_with(b"entity_a,entity_b\n"));
            let truth = parse_csv(std::str::from_utf8(&out.bytes["truth.csv"]).unwrap());
            let rows: usize = out.summary.rows.iter().map(|r| r.1).sum();
            assert_eq!(truth.len() - 1, rows);
        }
        for as_of in [(2024, 2, 29), (1960, 6, 15), (2026, 9, 1), (2199, 12, 31)] {
            let cfg = SynthConfig {
                children: 400,
                seed: 8,
                as_of,
            };
            let out = run(&cfg);
            assert!(out.summary.rows.iter().all(|r| r.1 > 0), "{as_of:?}");
            let day = validate(&cfg).unwrap();
            let pop = Population::build(&cfg, day, &Tables::new());
            assert_eq!(pop.children.len(), 400);
            assert!(pop
                .children
                .iter()
                .all(|c| (0..=18).contains(&age_years(c.dob, day))));
        }
        let bad = SynthConfig {
            as_of: (2026, 2, 30),
            ..SynthConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            generate(&bad, dir.path()),
            Err(SynthError::Config(_))
        ));
    }

    #[test]
    fn column_maps_parse_and_name_real_headers() {
        let out = run(&SynthConfig::new(300, 2));
        let headers = |file: &str| -> Vec<String> {
            let b = &out.bytes[file];
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(b);
            let text = text.trim_start_matches('\u{feff}').to_string();
            let text = if file == "police.csv" {
                text
            } else {
                String::from_utf8(b.clone())
                    .unwrap()
                    .trim_start_matches('\u{feff}')
                    .to_string()
            };
            parse_csv(&text)[0].clone()
        };
        for (agency, enc, fmt) in [
            ("health", "utf-8", "%d/%m/%Y"),
            ("police", "windows-1252", "%d-%b-%Y"),
            ("education", "utf-8-bom", "%Y-%m-%d"),
        ] {
            let text = std::str::from_utf8(&out.bytes[&format!("{agency}.toml")]).unwrap();
            assert_eq!(column_map_toml(agency).as_deref(), Some(text));
            let v: toml::Table = toml::from_str(text).unwrap();
            assert_eq!(v["agency"].as_str(), Some(agency));
            assert_eq!(v["encoding"].as_str(), Some(enc));
            assert_eq!(v["delimiter"].as_str(), Some(","));
            assert_eq!(v["date_formats"].as_array().unwrap()[0].as_str(), Some(fmt));
            let hdr = headers(&format!("{agency}.csv"));
            assert!(hdr.contains(&v["record_id"].as_str().unwrap().to_string()));
            let cols = v["columns"].as_table().unwrap();
            let allowed = [
                "given_name",
                "other_names",
                "family_name",
                "date_of_birth",
                "sex",
                "postcode",
                "nhs_number",
                "upn",
            ];
            for (field, col) in cols {
                assert!(allowed.contains(&field.as_str()), "{field}");
                assert!(
                    hdr.contains(&col.as_str().unwrap().to_string()),
                    "{agency}: {col}"
                );
            }
            assert_eq!(cols.len(), 7);
            for (_, code) in v["sex_codes"].as_table().unwrap() {
                assert!(["M", "F", "U"].contains(&code.as_str().unwrap()));
            }
        }
        assert_eq!(column_map_toml("social_care"), None);
    }

    #[test]
    fn realistic_population() {
        let cfg = SynthConfig::new(3_000, 20_260_101);
        let out = run(&cfg);
        let n = cfg.children as f64;
        let s = &out.summary;
        let rows: BTreeMap<&str, usize> = s.rows.iter().map(|(a, r)| (a.as_str(), *r)).collect();
        let frac = |a: &str| rows[a] as f64 / n;
        assert!(
            (0.94..1.01).contains(&frac("health")),
            "health {}",
            frac("health")
        );
        assert!(
            (0.06..0.12).contains(&frac("police")),
            "police {}",
            frac("police")
        );
        assert!(
            (0.52..0.75).contains(&frac("education")),
            "education {}",
            frac("education")
        );
        assert!(s.twins_pairs > 10, "twins {}", s.twins_pairs);

        // Byte-level format of each export.
        let health_b = &out.bytes["health.csv"];
        let police_b = &out.bytes["police.csv"];
        let edu_b = &out.bytes["education.csv"];
        assert!(!health_b.starts_with(b"\xEF\xBB\xBF"));
        assert!(health_b.starts_with(b"Patient ID,"));
        let lf = health_b.iter().filter(|&&b| b == b'\n').count();
        let crlf = health_b.windows(2).filter(|w| w == b"\r\n").count();
        assert_eq!(lf, crlf);
        assert!(edu_b.starts_with(b"\xEF\xBB\xBFPupil ID,UPN,"));
        assert!(edu_b.windows(2).any(|w| w == b"\r\n"));
        assert!(
            std::str::from_utf8(police_b).is_err(),
            "police.csv must be Windows-1252"
        );
        assert!(!police_b.contains(&b'\r'));
        let (police_text, _, had_errors) = encoding_rs::WINDOWS_1252.decode(police_b);
        assert!(!had_errors);
        assert!(!police_text.is_ascii());

        let health = parse_csv(std::str::from_utf8(health_b).unwrap());
        let police = parse_csv(&police_text);
        let edu_text = std::str::from_utf8(edu_b)
            .unwrap()
            .trim_start_matches('\u{feff}');
        let edu = parse_csv(edu_text);
        let truth = parse_csv(std::str::from_utf8(&out.bytes["truth.csv"]).unwrap());
        assert_eq!(health[0], HEALTH_HEADERS);
        assert_eq!(police[0], POLICE_HEADERS);
        assert_eq!(edu[0], EDUCATION_HEADERS);
        assert_eq!(truth[0], TRUTH_HEADERS);
        assert_eq!(health.len() - 1, rows["health"]);
        assert_eq!(police.len() - 1, rows["police"]);
        assert_eq!(edu.len() - 1, rows["education"]);

        // truth.csv and the exports hold exactly the same records.
        let mut truth_ids: BTreeMap<(String, String), String> = BTreeMap::new();
        for r in &truth[1..] {
            assert!(r[0].starts_with('E') && r[0].len() == 8, "{}", r[0]);
            let prev = truth_ids.insert((r[1].clone(), r[2].clone()), r[0].clone());
            assert!(prev.is_none(), "duplicate record id {r:?}");
        }
        let mut file_ids = BTreeSet::new();
        for (agency, recs) in [
            ("health", &health),
            ("police", &police),
            ("education", &edu),
        ] {
            for r in &recs[1..] {
                assert!(file_ids.insert((agency.to_string(), r[0].clone())), "{r:?}");
            }
        }
        let truth_keys: BTreeSet<_> = truth_ids.keys().cloned().collect();
        assert_eq!(truth_keys, file_ids);
        assert!(health[1..]
            .iter()
            .all(|r| r[0].starts_with('H') && r[0].len() == 8));
        assert!(police[1..]
            .iter()
            .all(|r| r[0].starts_with("P/") && r[0].len() == 11));
        assert!(edu[1..]
            .iter()
            .all(|r| r[0].len() == 8 && r[0].bytes().all(|b| b.is_ascii_digit())));

        // Within-agency duplicates share an entity.
        let mut per_entity: BTreeMap<(String, String), usize> = BTreeMap::new();
        for ((agency, _), e) in &truth_ids {
            *per_entity.entry((e.clone(), agency.clone())).or_default() += 1;
        }
        let dups = per_entity.values().filter(|&&c| c == 2).count();
        assert!(per_entity.values().all(|&c| c <= 2));
        assert!((20..=110).contains(&dups), "duplicates {dups}");

        // Rebuild the population to know each entity's true identifiers.
        let tables = Tables::new();
        let as_of = validate(&cfg).unwrap();
        let pop = Population::build(&cfg, as_of, &tables);
        let entity = |agency: &str, id: &str| -> &Child {
            let e = &truth_ids[&(agency.to_string(), id.to_string())];
            &pop.children[e[1..].parse::<usize>().unwrap() - 1]
        };

        // NHS numbers: valid ones are the child's; invalid ones are one-digit typos.
        let mut present = 0;
        let mut invalid = 0;
        for (agency, recs, col) in [("health", &health, 1), ("police", &police, 7)] {
            for r in &recs[1..] {
                if r[col].is_empty() {
                    continue;
                }
                present += 1;
                let digits: String = r[col].chars().filter(|c| *c != ' ').collect();
                let c = entity(agency, &r[0]);
                let own: Vec<String> = [Some(c.nhs), c.alt_nhs]
                    .iter()
                    .flatten()
                    .map(|n| format!("{n:010}"))
                    .collect();
                if is_valid_nhs_number(&digits) {
                    assert!(own.contains(&digits), "{r:?}");
                    assert!(digits.starts_with("999"));
                } else {
                    invalid += 1;
                    assert!(own.iter().any(|o| hamming(o, &digits) == 1), "{r:?}");
                }
            }
        }
        let nhs_rate =
            present as f64 / (rows["health"] as f64 * 0.97 + rows["police"] as f64 * 0.2);
        assert!((0.9..1.1).contains(&nhs_rate), "{nhs_rate}");
        assert!(
            invalid > 0 && (invalid as f64) < 0.03 * present as f64,
            "{invalid}/{present}"
        );
        assert!(health[1..]
            .iter()
            .any(|r| r[1].len() == 12 && r[1].as_bytes()[3] == b' '));

        // UPNs likewise.
        let mut bad_upns = 0;
        for r in &edu[1..] {
            let c = entity("education", &r[0]);
            let own: Vec<String> = [c.upn, c.alt_upn]
                .iter()
                .flatten()
                .map(|u| upn_string(*u))
                .collect();
            if is_valid_upn(&r[1]) {
                assert!(own.contains(&r[1]), "{r:?}");
            } else {
                bad_upns += 1;
                assert!(own.iter().any(|o| hamming(o, &r[1]) == 1), "{r:?}");
            }
            // Only school-age children (Reception to Year 13) are on a roll.
            let ncy = nc_year(c.dob, as_of);
            assert!((0..=13).contains(&ncy), "{r:?}");
        }
        assert!((bad_upns as f64) < 0.04 * edu.len() as f64);

        // Field formats.
        let date_ok = |s: &str, sep: char, order: [usize; 3]| {
            let p: Vec<&str> = s.split(sep).collect();
            p.len() == 3 && p[order[0]].len() == 2 && p[order[2]].len() == 4
        };
        assert!(health[1..].iter().all(|r| date_ok(&r[5], '/', [0, 1, 2])));
        assert!(edu[1..].iter().all(|r| date_ok(&r[6], '-', [2, 1, 0])));
        assert!(police[1..].iter().all(|r| {
            let p: Vec<&str> = r[4].split('-').collect();
            p.len() == 3 && MONTHS.contains(&p[1]) && p[2].len() == 4
        }));
        assert!(health[1..]
            .iter()
            .all(|r| ["M", "F", "U", ""].contains(&r[6].as_str())));
        assert!(police[1..]
            .iter()
            .all(|r| ["1", "2", "9", ""].contains(&r[5].as_str())));
        assert!(edu[1..]
            .iter()
            .all(|r| ["Male", "Female", ""].contains(&r[7].as_str())));
        assert!(police[1..]
            .iter()
            .all(|r| !r[1..4].iter().any(|f| f.chars().any(char::is_lowercase))));
        let pc_ok = |s: &str| {
            let t: String = s.chars().filter(|c| *c != ' ').collect();
            s.is_empty()
                || s == "NFA"
                || ((5..=7).contains(&t.len())
                    && t.chars().next().unwrap().is_ascii_alphabetic()
                    && t.chars().all(|c| c.is_ascii_alphanumeric()))
        };
        assert!(health[1..].iter().all(|r| pc_ok(&r[7])));
        assert!(police[1..].iter().all(|r| pc_ok(&r[6])));
        assert!(edu[1..].iter().all(|r| pc_ok(&r[8])));
        let missing_pc = health[1..].iter().filter(|r| r[7].is_empty()).count() as f64;
        assert!((0.01..0.06).contains(&(missing_pc / rows["health"] as f64)));
        assert!(police[1..]
            .iter()
            .any(|r| r[6].len() >= 5 && !r[6].contains(' ')));

        // Names: diverse, with diacritics, apostrophes and hyphens.
        let forenames: BTreeSet<&str> = health[1..].iter().map(|r| r[2].as_str()).collect();
        let surnames: BTreeSet<&str> = health[1..].iter().map(|r| r[4].as_str()).collect();
        assert!(forenames.len() > 400, "{}", forenames.len());
        assert!(surnames.len() > 500, "{}", surnames.len());
        assert!(health[1..]
            .iter()
            .any(|r| !r[2].is_ascii() || !r[4].is_ascii()));
        assert!(health[1..]
            .iter()
            .any(|r| r[4].contains('\'') || r[4].contains('’')));
        assert!(health[1..].iter().any(|r| r[4].contains('-')));
        let with_middle = health[1..].iter().filter(|r| !r[3].is_empty()).count() as f64;
        assert!((0.45..0.65).contains(&(with_middle / rows["health"] as f64)));

        // Twins: different children, same surname, date of birth and household.
        let mut births: BTreeMap<(u32, i32), Vec<&Child>> = BTreeMap::new();
        for c in &pop.children {
            births.entry((c.hh, c.dob)).or_default().push(c);
        }
        let twin_sets: Vec<&Vec<&Child>> = births.values().filter(|v| v.len() > 1).collect();
        let pairs: usize = twin_sets.iter().map(|v| v.len() * (v.len() - 1) / 2).sum();
        assert_eq!(pairs, s.twins_pairs);
        // twins.csv lists exactly those pairs, smaller id first, sorted.
        let twins = parse_csv(std::str::from_utf8(&out.bytes["twins.csv"]).unwrap());
        assert_eq!(twins[0], TWINS_HEADERS);
        assert_eq!(twins.len() - 1, s.twins_pairs);
        assert!(twins[1..].windows(2).all(|w| w[0] < w[1]));
        for r in &twins[1..] {
            assert!(r[0] < r[1], "{r:?}");
            let child = |e: &str| &pop.children[e[1..].parse::<usize>().unwrap() - 1];
            let (a, b) = (child(&r[0]), child(&r[1]));
            assert_eq!((a.hh, a.dob), (b.hh, b.dob), "{r:?}");
        }
        assert!(twin_sets.iter().all(|v| v[0].given != v[1].given));
        let twin_children: usize = twin_sets.iter().map(|v| v.len()).sum();
        let twin_share = twin_children as f64 / n;
        assert!((0.015..0.05).contains(&twin_share), "{twin_share}");
        // ... and they show up in the health export as separate entities.
        let mut by_key: BTreeMap<(&str, &str, &str), BTreeSet<&String>> = BTreeMap::new();
        for r in &health[1..] {
            let e = &truth_ids[&("health".to_string(), r[0].clone())];
            by_key.entry((&r[4], &r[5], &r[7])).or_default().insert(e);
        }
        assert!(by_key.values().any(|es| es.len() > 1));
    }
}

// ---------------------------------------------------------------------------
// Static name and place data. Lists are ordered roughly by popularity: the
// samplers give earlier entries more weight (Zipf–Mandelbrot).
// ---------------------------------------------------------------------------

mod data {
    //! Name, postcode-area and local-authority tables (all public knowledge,
    //! no personal data).

    pub(super) static BRIT_BOYS: &[&str] = &[
        "Oliver",
        "George",
        "Noah",
        "Arthur",
        "Harry",
        "Leo",
        "Jack",
        "Charlie",
        "Oscar",
        "Jacob",
        "Henry",
        "Thomas",
        "Freddie",
        "Alfie",
        "Theo",
        "William",
        "Theodore",
        "Archie",
        "Joshua",
        "Alexander",
        "James",
        "Isaac",
        "Edward",
        "Lucas",
        "Tommy",
        "Finley",
        "Max",
        "Logan",
        "Ethan",
        "Mason",
        "Albert",
        "Hugo",
        "Harrison",
        "Teddy",
        "Reggie",
        "Joseph",
        "Samuel",
        "Daniel",
        "Benjamin",
        "Sebastian",
        "Dylan",
        "Jaxon",
        "Riley",
        "Elijah",
        "Jude",
        "Louie",
        "Adam",
        "Toby",
        "Rory",
        "Frankie",
        "Ronnie",
        "Jenson",
        "Arlo",
        "Elliot",
        "Louis",
        "Ollie",
        "Zachary",
        "Jayden",
        "Reuben",
        "Albie",
        "Luca",
        "Caleb",
        "Stanley",
        "Bobby",
        "Harvey",
        "Jackson",
        "Liam",
        "Matthew",
        "Michael",
        "Nathan",
        "Ryan",
        "Callum",
        "Connor",
        "Jake",
        "Kyle",
        "Lewis",
        "Luke",
        "Owen",
        "Rhys",
        "Ewan",
        "Cameron",
        "Jamie",
        "Kieran",
        "Declan",
        "Seán",
        "Ciarán",
        "Oisín",
        "Cian",
        "Conor",
        "Darragh",
        "Cillian",
        "Fionn",
        "Tadhg",
        "Eoin",
        "Aled",
        "Gethin",
        "Iwan",
        "Osian",
        "Emyr",
        "Dafydd",
        "Llŷr",
        "Hamish",
        "Angus",
        "Fraser",
        "Alasdair",
        "Ruaridh",
        "Jonathan",
        "Christopher",
        "Andrew",
        "Anthony",
        "Peter",
        "David",
        "Robert",
        "Richard",
        "Stephen",
        "Patrick",
        "Kevin",
        "Jordan",
        "Brandon",
        "Tyler",
        "Kai",
        "Ashton",
        "Tyrone",
        "Jerome",
        "Marcus",
        "Dwayne",
        "Andre",
        "Nathaniel",
        "Isaiah",
        "Josiah",
        "Malachi",
        "Ezra",
        "Dominic",
        "Christian",
        "Aaron",
        "Tobias",
        "Felix",
        "Rowan",
        "Ralph",
        "Jasper",
        "Otis",
        "Ellis",
        "Blake",
        "Charles",
        "Frederick",
        "Kayden",
        "Cody",
        "Aiden",
        "Gabriel",
        "Nicholas",
        "Timothy",
        "Tommy-Lee",
        "Kristian",
        "Alistair",
        "Bradley",
        "Mathias",
        "Jean-Luc",
        "René",
        "Joël",
        "Dáithí",
    ];

    pub(super) static BRIT_GIRLS: &[&str] = &[
        "Olivia",
        "Amelia",
        "Isla",
        "Ava",
        "Ivy",
        "Freya",
        "Lily",
        "Florence",
        "Mia",
        "Willow",
        "Rosie",
        "Sophia",
        "Isabella",
        "Grace",
        "Daisy",
        "Sienna",
        "Poppy",
        "Elsie",
        "Emily",
        "Ella",
        "Evelyn",
        "Phoebe",
        "Sofia",
        "Evie",
        "Charlotte",
        "Harper",
        "Millie",
        "Matilda",
        "Maya",
        "Sophie",
        "Alice",
        "Emilia",
        "Isabelle",
        "Ruby",
        "Luna",
        "Maisie",
        "Aria",
        "Penelope",
        "Mila",
        "Bonnie",
        "Eva",
        "Hallie",
        "Eliza",
        "Ada",
        "Violet",
        "Esme",
        "Arabella",
        "Imogen",
        "Jessica",
        "Delilah",
        "Chloe",
        "Chloé",
        "Zoe",
        "Zoë",
        "Renée",
        "Katherine",
        "Catherine",
        "Kate",
        "Katie",
        "Elizabeth",
        "Lucy",
        "Hannah",
        "Holly",
        "Megan",
        "Lauren",
        "Amy",
        "Rebecca",
        "Bethany",
        "Abigail",
        "Molly",
        "Scarlett",
        "Georgia",
        "Erin",
        "Eleanor",
        "Jasmine",
        "Leah",
        "Summer",
        "Niamh",
        "Aoife",
        "Róisín",
        "Saoirse",
        "Siobhán",
        "Orla",
        "Ciara",
        "Caoimhe",
        "Clodagh",
        "Aisling",
        "Siân",
        "Cerys",
        "Ffion",
        "Seren",
        "Carys",
        "Eira",
        "Mali",
        "Elin",
        "Nia",
        "Gwen",
        "Eilidh",
        "Kirsty",
        "Morag",
        "Skye",
        "Iona",
        "Ailsa",
        "Keira",
        "Kayla",
        "Shanice",
        "Tia",
        "Jade",
        "Chantelle",
        "Beatrice",
        "Nancy",
        "Mabel",
        "Edith",
        "Iris",
        "Hazel",
        "Elodie",
        "Aurora",
        "Thea",
        "Margot",
        "Heidi",
        "Lyla",
        "Victoria",
        "Natalie",
        "Stephanie",
        "Samantha",
        "Jennifer",
        "Sarah",
        "Emma",
        "Anna",
        "Laura",
        "Rachel",
        "Naomi",
        "Josephine",
        "Courtney",
        "Paige",
        "Amber",
        "Jodie",
        "Kelsey",
        "Lacey",
        "Brooke",
        "Madison",
        "Frances",
        "Clara",
        "Annabel",
        "Lottie",
        "Harriet",
        "Rosa",
        "Lola",
        "Lily-Mae",
        "Ellie-May",
        "Mary-Jane",
        "Billie-Jo",
        "Ellie",
        "Maryam",
        "Ayla",
        "Nevaeh",
        "Destiny",
        "Tianna",
        "Mya",
        "Aimée",
        "Noémie",
        "Séverine",
    ];

    pub(super) static BRIT_SURNAMES: &[&str] = &[
        "Smith",
        "Jones",
        "Williams",
        "Taylor",
        "Brown",
        "Davies",
        "Evans",
        "Wilson",
        "Thomas",
        "Johnson",
        "Roberts",
        "Robinson",
        "Thompson",
        "Wright",
        "Walker",
        "White",
        "Edwards",
        "Hughes",
        "Green",
        "Hall",
        "Lewis",
        "Harris",
        "Clarke",
        "Jackson",
        "Wood",
        "Turner",
        "Martin",
        "Cooper",
        "Hill",
        "Ward",
        "Morris",
        "Moore",
        "Clark",
        "Lee",
        "King",
        "Baker",
        "Harrison",
        "Morgan",
        "Allen",
        "James",
        "Scott",
        "Phillips",
        "Watson",
        "Davis",
        "Parker",
        "Price",
        "Bennett",
        "Young",
        "Griffiths",
        "Mitchell",
        "Kelly",
        "Cook",
        "Carter",
        "Richardson",
        "Bailey",
        "Collins",
        "Bell",
        "Shaw",
        "Murphy",
        "Miller",
        "Cox",
        "Richards",
        "Marshall",
        "Anderson",
        "Simpson",
        "Ellis",
        "Adams",
        "Wilkinson",
        "Foster",
        "Chapman",
        "Powell",
        "Webb",
        "Rogers",
        "Gray",
        "Mason",
        "Hunt",
        "Holmes",
        "Mills",
        "Owen",
        "Barnes",
        "Knight",
        "Lloyd",
        "Butler",
        "Russell",
        "Barker",
        "Fisher",
        "Stevens",
        "Jenkins",
        "Murray",
        "Dixon",
        "Harvey",
        "Graham",
        "Pearson",
        "Fletcher",
        "Walsh",
        "Gibson",
        "Howard",
        "Andrews",
        "Stewart",
        "Elliott",
        "Reynolds",
        "Saunders",
        "Payne",
        "Fox",
        "Ford",
        "Pearce",
        "Day",
        "Brooks",
        "West",
        "Lawrence",
        "Cole",
        "Atkinson",
        "Bradley",
        "Spencer",
        "Gill",
        "Dawson",
        "Ball",
        "Burton",
        "O'Brien",
        "Watts",
        "Rose",
        "Booth",
        "Perry",
        "Ryan",
        "Grant",
        "Wells",
        "Armstrong",
        "Francis",
        "Rees",
        "Hayes",
        "Hart",
        "Hudson",
        "Newman",
        "Barrett",
        "Webster",
        "Hunter",
        "Gregory",
        "Carr",
        "Lowe",
        "Page",
        "Marsh",
        "Riley",
        "Dunn",
        "Woods",
        "Parsons",
        "Berry",
        "Stone",
        "Reid",
        "Holland",
        "Hawkins",
        "Harding",
        "Porter",
        "Robertson",
        "Newton",
        "Oliver",
        "Reed",
        "Kennedy",
        "Williamson",
        "Bird",
        "Gardner",
        "Dean",
        "Lane",
        "Cooke",
        "Bates",
        "Henderson",
        "Parry",
        "Burgess",
        "Bishop",
        "Walton",
        "Burns",
        "Nicholson",
        "Shepherd",
        "Ross",
        "Cross",
        "Long",
        "Freeman",
        "Warren",
        "Nicholls",
        "Hamilton",
        "Byrne",
        "Sutton",
        "McDonald",
        "Yates",
        "Hodgson",
        "Robson",
        "Curtis",
        "Hopkins",
        "O'Connor",
        "Harper",
        "Coleman",
        "Watkins",
        "Moss",
        "McCarthy",
        "Chambers",
        "O'Neill",
        "O’Neill",
        "Griffin",
        "Sharp",
        "Hardy",
        "Wheeler",
        "Potter",
        "Osborne",
        "Johnston",
        "Gordon",
        "Doyle",
        "Wallace",
        "George",
        "Jordan",
        "Hutchinson",
        "Rowe",
        "Burke",
        "May",
        "Pritchard",
        "Gilbert",
        "Willis",
        "Higgins",
        "Read",
        "Miles",
        "Stevenson",
        "Stephenson",
        "Hammond",
        "Arnold",
        "Buckley",
        "Walters",
        "Hewitt",
        "Barber",
        "Nelson",
        "Slater",
        "Austin",
        "Sullivan",
        "Whitehead",
        "Mann",
        "Frost",
        "Lambert",
        "Stephens",
        "Blake",
        "Lynch",
        "Goodwin",
        "Barton",
        "Woodward",
        "Thomson",
        "Cunningham",
        "Quinn",
        "Barnett",
        "Baxter",
        "Clayton",
        "Nash",
        "Greenwood",
        "Jennings",
        "Holt",
        "Kemp",
        "Poole",
        "Gallagher",
        "Bond",
        "Stokes",
        "Tucker",
        "Davidson",
        "Fowler",
        "Heath",
        "Norman",
        "Middleton",
        "Lawson",
        "Banks",
        "French",
        "Stanley",
        "Jarvis",
        "Gibbs",
        "Ferguson",
        "Hayward",
        "Carroll",
        "Farrell",
        "Duncan",
        "Fitzgerald",
        "Llewellyn",
        "Pugh",
        "Vaughan",
        "Prosser",
        "Bowen",
        "MacLeod",
        "MacDonald",
        "Mackenzie",
        "McKenzie",
        "Fraser",
        "Campbell",
        "Sinclair",
        "McLaughlin",
        "McGuinness",
        "O’Sullivan",
        "O'Donnell",
        "Ní Bhriain",
        "Ó Súilleabháin",
        "ap Rhys",
        "Rhydderch",
        "Gruffydd",
        "Llwyd",
    ];

    /// British-style place-name surname parts: combined they give a long
    /// realistic tail (Ashworth, Bradley, Whitfield, ...).
    pub(super) static SURNAME_PREFIXES: &[&str] = &[
        "Ash", "Black", "Brad", "Brom", "Bur", "Cald", "Carl", "Chat", "Clif", "Cole", "Craw",
        "Dun", "East", "Fair", "Farn", "Gold", "Green", "Hart", "Hay", "Hol", "Kings", "Lang",
        "Lock", "Mar", "Mid", "Mor", "New", "North", "Oak", "Pen", "Red", "Rid", "Rock", "Rush",
        "Shel", "South", "Stan", "Sum", "Thorn", "Wal", "West", "Whit", "Wood", "Wy", "Har",
        "Brook", "Ald", "Bram", "Hal", "Ship", "Mel", "Bil", "Wain", "Stock", "Brad",
    ];
    /// Suffixes for [`SURNAME_PREFIXES`].
    pub(super) static SURNAME_SUFFIXES: &[&str] = &[
        "ley", "ton", "worth", "wood", "field", "ford", "by", "ham", "well", "combe", "stead",
        "ridge", "more", "dale", "hurst", "wick", "bury", "land", "brook", "croft", "gate", "shaw",
        "thwaite", "er", "stone", "cliffe",
    ];

    pub(super) static CARIB_SURNAMES: &[&str] = &[
        "Campbell", "Brown", "Williams", "Francis", "Henry", "Grant", "Gordon", "McKenzie", "Reid",
        "Samuels", "Gayle", "Da Costa", "DaCosta", "Beckford", "Clarke", "Richards", "Walker",
        "Lewis", "Bailey", "Forbes", "Morrison", "Ferguson", "Spence", "Blake", "Stewart",
        "Robinson", "Facey", "Levy", "Lindo", "Powell", "Barrett", "Edwards", "Thompson",
        "Johnson", "Anderson", "Wright", "Allen", "Bennett", "Hylton", "Whyte", "Chin",
    ];

    pub(super) static SASIAN_BOYS: &[&str] = &[
        "Muhammad", "Mohammed", "Mohammad", "Ibrahim", "Yusuf", "Ali", "Ahmed", "Hamza", "Zayn",
        "Ayaan", "Rayyan", "Zain", "Hassan", "Hussain", "Idris", "Ismail", "Musa", "Omar", "Bilal",
        "Arham", "Haris", "Imran", "Asif", "Tariq", "Faisal", "Aryan", "Arjun", "Rohan", "Krish",
        "Vihaan", "Aarav", "Dev", "Rahul", "Aditya", "Harpreet", "Gurpreet", "Jaspreet",
        "Manpreet", "Harjit", "Arjan", "Jaskaran", "Sahil", "Kabir", "Nikhil", "Ravi", "Sanjay",
        "Vikram", "Abdul", "Abdullah", "Rehan", "Shayan", "Danyal", "Rizwan", "Kamran", "Sufyan",
        "Ehsan", "Tahmid", "Rafi", "Nabil", "Sami", "Ayan", "Zakir", "Junaid", "Usman", "Hasnain",
        "Armaan", "Reyansh", "Ishaan", "Jai", "Kiaan", "Anay", "Parth", "Tejas", "Yuvraj",
    ];

    pub(super) static SASIAN_GIRLS: &[&str] = &[
        "Aisha", "Ayesha", "Fatima", "Maryam", "Zara", "Hafsa", "Khadija", "Amira", "Inaya",
        "Anaya", "Hana", "Safa", "Zainab", "Sana", "Alisha", "Amaira", "Eesha", "Priya", "Anika",
        "Diya", "Riya", "Saanvi", "Ananya", "Aaliyah", "Harpreet", "Simran", "Navneet", "Jasleen",
        "Gurleen", "Amrit", "Kiran", "Manisha", "Nisha", "Pooja", "Shreya", "Tanvi", "Meera",
        "Sabrina", "Nusrat", "Tasnim", "Sumaiya", "Farhana", "Rukhsana", "Salma", "Shabnam",
        "Mehreen", "Iqra", "Noor", "Aleena", "Haniya", "Mahnoor", "Zoya", "Aiza", "Anaya",
        "Ishani", "Kavya", "Myra", "Navya", "Sia", "Tara", "Jannat", "Mariam", "Raisa", "Tahira",
    ];

    pub(super) static SASIAN_SURNAMES: &[&str] = &[
        "Khan",
        "Patel",
        "Ahmed",
        "Hussain",
        "Ali",
        "Akhtar",
        "Shah",
        "Singh",
        "Mahmood",
        "Iqbal",
        "Rahman",
        "Islam",
        "Miah",
        "Uddin",
        "Chowdhury",
        "Hossain",
        "Sharma",
        "Kumar",
        "Gupta",
        "Mistry",
        "Parmar",
        "Chauhan",
        "Sandhu",
        "Gill",
        "Dhillon",
        "Sidhu",
        "Bains",
        "Malik",
        "Butt",
        "Rashid",
        "Aziz",
        "Qureshi",
        "Siddiqui",
        "Anwar",
        "Javed",
        "Nawaz",
        "Raza",
        "Mirza",
        "Sheikh",
        "D'Souza",
        "Fernandes",
        "Pereira",
        "Desai",
        "Joshi",
        "Mehta",
        "Shukla",
        "Rana",
        "Bhatti",
        "Choudhury",
        "Sarkar",
        "Das",
        "Bose",
        "Ahmad",
        "Hussein",
        "Rehman",
        "Mohammed",
        "Karim",
        "Haque",
        "Alam",
        "Lal",
        "Thakkar",
        "Solanki",
        "Vaghela",
        "Grewal",
        "Johal",
        "Sahota",
        "Virdee",
        "Kang",
    ];

    pub(super) static EEURO_BOYS: &[&str] = &[
        "Jakub",
        "Szymon",
        "Filip",
        "Kacper",
        "Antoni",
        "Jan",
        "Aleksander",
        "Franciszek",
        "Mikołaj",
        "Wojciech",
        "Adam",
        "Michał",
        "Łukasz",
        "Mateusz",
        "Bartosz",
        "Piotr",
        "Paweł",
        "Krzysztof",
        "Tomasz",
        "Dawid",
        "Oskar",
        "Igor",
        "Maksymilian",
        "Stanisław",
        "Ignacy",
        "Wiktor",
        "Andrei",
        "Alexandru",
        "Ştefan",
        "Mihai",
        "Ionuț",
        "Gabriel",
        "Matei",
        "Luca",
        "David",
        "Darius",
        "Răzvan",
        "Cristian",
        "Vlad",
        "Bogdan",
        "Lukas",
        "Matas",
        "Nojus",
        "Jonas",
        "Artūras",
        "Daniil",
        "Maksim",
        "Nikita",
        "Dmytro",
        "Oleksandr",
        "Ivan",
        "Marko",
        "Nikola",
        "Luka",
        "Tomáš",
        "Jiří",
        "Matej",
        "Dominik",
        "Patrik",
        "Kuba",
        "Grzegorz",
        "Przemysław",
        "Radosław",
        "Sebastian",
        "Marcin",
        "Emil",
        "Tymon",
        "Natan",
        "Nicolae",
        "Sorin",
        "Dragoș",
        "Călin",
    ];

    pub(super) static EEURO_GIRLS: &[&str] = &[
        "Zofia",
        "Zuzanna",
        "Julia",
        "Maja",
        "Hanna",
        "Laura",
        "Oliwia",
        "Alicja",
        "Lena",
        "Amelia",
        "Wiktoria",
        "Natalia",
        "Aleksandra",
        "Maria",
        "Pola",
        "Nikola",
        "Gabriela",
        "Martyna",
        "Małgorzata",
        "Agnieszka",
        "Katarzyna",
        "Magdalena",
        "Weronika",
        "Kinga",
        "Emilia",
        "Antonina",
        "Iga",
        "Ioana",
        "Andreea",
        "Elena",
        "Alexandra",
        "Ana",
        "Sofia",
        "Bianca",
        "Ştefania",
        "Daria",
        "Irina",
        "Ecaterina",
        "Teodora",
        "Iulia",
        "Mădălina",
        "Roxana",
        "Gabija",
        "Emilija",
        "Austėja",
        "Ugnė",
        "Anastasia",
        "Sofiya",
        "Yelyzaveta",
        "Viktoriya",
        "Milena",
        "Tereza",
        "Eliška",
        "Anežka",
        "Natálie",
        "Petra",
        "Łucja",
        "Jagoda",
        "Nadia",
        "Klara",
        "Róża",
        "Patrycja",
        "Dominika",
        "Paulina",
        "Ewa",
        "Ilinca",
        "Ştefana",
        "Denisa",
        "Alina",
    ];

    /// Masculine forms; feminine forms (-ska, -cka, -dzka, -á) are derived.
    pub(super) static EEURO_SURNAMES: &[&str] = &[
        "Nowak",
        "Kowalski",
        "Wiśniewski",
        "Wójcik",
        "Kowalczyk",
        "Kamiński",
        "Lewandowski",
        "Zieliński",
        "Szymański",
        "Woźniak",
        "Dąbrowski",
        "Kozłowski",
        "Jankowski",
        "Mazur",
        "Kwiatkowski",
        "Krawczyk",
        "Piotrowski",
        "Grabowski",
        "Nowakowski",
        "Pawłowski",
        "Michalski",
        "Król",
        "Wieczorek",
        "Jabłoński",
        "Wróbel",
        "Nowicki",
        "Majewski",
        "Olszewski",
        "Stępień",
        "Malinowski",
        "Jaworski",
        "Adamczyk",
        "Dudek",
        "Górski",
        "Zawadzki",
        "Sadowski",
        "Pop",
        "Popescu",
        "Ionescu",
        "Popa",
        "Rusu",
        "Stan",
        "Munteanu",
        "Constantin",
        "Dumitru",
        "Ştefănescu",
        "Florea",
        "Gheorghe",
        "Matei",
        "Ciobanu",
        "Lungu",
        "Țurcanu",
        "Kazlauskas",
        "Jankauskas",
        "Petrauskas",
        "Stankevičius",
        "Vasiliauskas",
        "Bērziņš",
        "Kalniņš",
        "Ozols",
        "Shevchenko",
        "Kovalenko",
        "Bondarenko",
        "Horváth",
        "Nagy",
        "Kovács",
        "Novák",
        "Svoboda",
        "Dvořák",
        "Černý",
        "Kovač",
        "Horvat",
        "Ivanov",
        "Petrov",
        "Nowacki",
        "Wilczyński",
        "Sikora",
        "Baran",
        "Chmielewski",
        "Ostrowski",
        "Przybylski",
    ];

    pub(super) static AFRICAN_BOYS: &[&str] = &[
        "David",
        "Daniel",
        "Samuel",
        "Joshua",
        "Emmanuel",
        "Chidi",
        "Chukwuemeka",
        "Emeka",
        "Obinna",
        "Oluwaseun",
        "Oluwadamilare",
        "Olumide",
        "Ayodele",
        "Tobi",
        "Tobenna",
        "Tunde",
        "Femi",
        "Ade",
        "Adebayo",
        "Kwame",
        "Kofi",
        "Kwabena",
        "Yaw",
        "Kojo",
        "Kwesi",
        "Nana",
        "Ebuka",
        "Chinedu",
        "Ikenna",
        "Uche",
        "Somto",
        "Israel",
        "Favour",
        "Divine",
        "Marvellous",
        "Godswill",
        "Tendai",
        "Tinashe",
        "Tatenda",
        "Themba",
        "Sipho",
        "Jabari",
        "Kayode",
        "Damilola",
        "Ifeanyi",
        "Nnamdi",
        "Chibuike",
        "Ebenezer",
        "Oluwatobiloba",
        "Ayomide",
        "Toluwani",
        "Jesutofunmi",
        "Ebube",
        "Kelechi",
        "Osagie",
        "Efosa",
        "Kweku",
        "Elikem",
        "Fiifi",
        "Mamadou",
        "Ibrahima",
        "Moussa",
        "Abdoulaye",
    ];

    pub(super) static AFRICAN_GIRLS: &[&str] = &[
        "Precious",
        "Blessing",
        "Favour",
        "Grace",
        "Chioma",
        "Chiamaka",
        "Adaeze",
        "Ngozi",
        "Amaka",
        "Ifeoma",
        "Nneka",
        "Oluwatoyin",
        "Oluwabukola",
        "Folake",
        "Funmilayo",
        "Temitope",
        "Titilayo",
        "Yetunde",
        "Abena",
        "Akosua",
        "Ama",
        "Efua",
        "Adwoa",
        "Esi",
        "Afia",
        "Peace",
        "Mercy",
        "Gift",
        "Princess",
        "Tiwa",
        "Ayomide",
        "Damilola",
        "Ife",
        "Eniola",
        "Simisola",
        "Chidinma",
        "Ebere",
        "Nia",
        "Tariro",
        "Rutendo",
        "Nyasha",
        "Thandiwe",
        "Zanele",
        "Amara",
        "Kemi",
        "Bisola",
        "Morenike",
        "Oluwafunmilayo",
        "Oreoluwa",
        "Jesulayomi",
        "Deborah",
        "Esther",
        "Ruth",
        "Miracle",
        "Fatoumata",
        "Aminata",
        "Mariama",
        "Adjoa",
        "Nhyira",
    ];

    pub(super) static AFRICAN_SURNAMES: &[&str] = &[
        "Adeyemi",
        "Okafor",
        "Mensah",
        "Okonkwo",
        "Oyelaran",
        "Adebayo",
        "Ogunleye",
        "Afolabi",
        "Oladipo",
        "Balogun",
        "Bello",
        "Eze",
        "Nwosu",
        "Okeke",
        "Obi",
        "Uchenna",
        "Chukwu",
        "Nwachukwu",
        "Ibekwe",
        "Asante",
        "Boateng",
        "Owusu",
        "Osei",
        "Appiah",
        "Agyeman",
        "Acheampong",
        "Addo",
        "Darko",
        "Frimpong",
        "Ofori",
        "Danso",
        "Ansah",
        "Opoku",
        "Kamara",
        "Sesay",
        "Conteh",
        "Bangura",
        "Koroma",
        "Moyo",
        "Ndlovu",
        "Dube",
        "Sibanda",
        "Mutasa",
        "Mwangi",
        "Kamau",
        "Otieno",
        "Odhiambo",
        "Oyeleke",
        "Akinola",
        "Oduya",
        "Adewale",
        "Ajayi",
        "Oyewole",
        "Fashola",
        "Abiodun",
        "Olawale",
        "Babatunde",
        "Ogunbiyi",
        "Onyekachi",
        "Diallo",
        "Traoré",
        "Koné",
        "Ndiaye",
        "Mensa",
        "Quaye",
        "Annan",
        "Tetteh",
        "Adjei",
    ];

    pub(super) static SOMARAB_BOYS: &[&str] = &[
        "Mohamed",
        "Abdi",
        "Abdirahman",
        "Abdullahi",
        "Mohamud",
        "Ahmed",
        "Ali",
        "Hassan",
        "Hussein",
        "Omar",
        "Yusuf",
        "Ibrahim",
        "Ismail",
        "Khalid",
        "Mustafa",
        "Abdulkadir",
        "Abdiaziz",
        "Liban",
        "Guled",
        "Hamza",
        "Bilal",
        "Yahya",
        "Zakariya",
        "Idris",
        "Ayub",
        "Adam",
        "Mahad",
        "Said",
        "Farah",
        "Osman",
        "Karim",
        "Youssef",
        "Ahmad",
        "Amir",
        "Tariq",
        "Jamal",
        "Rami",
        "Sami",
        "Kareem",
        "Nasser",
        "Abdiwali",
        "Sharmarke",
        "Bashir",
        "Hamse",
        "Khadar",
        "Anas",
        "Zayd",
        "Ilyas",
        "Yasin",
    ];

    pub(super) static SOMARAB_GIRLS: &[&str] = &[
        "Hodan", "Amina", "Hibo", "Fadumo", "Faduma", "Halima", "Sagal", "Ayan", "Nasra", "Hawa",
        "Asha", "Ikran", "Ifrah", "Najma", "Sahra", "Yasmin", "Deeqa", "Muna", "Ubah", "Idil",
        "Ladan", "Samira", "Hamdi", "Maryan", "Khadija", "Hafsa", "Layla", "Nour", "Rania", "Yara",
        "Salma", "Mariam", "Reem", "Lina", "Dalia", "Huda", "Fatima", "Zahra", "Sumaya", "Hanan",
        "Ilhan", "Nimco", "Ayaan", "Hiba", "Safiya",
    ];

    pub(super) static SOMARAB_SURNAMES: &[&str] = &[
        "Mohamed",
        "Ali",
        "Ahmed",
        "Hassan",
        "Hussein",
        "Abdi",
        "Omar",
        "Farah",
        "Warsame",
        "Abdullahi",
        "Yusuf",
        "Ibrahim",
        "Osman",
        "Ismail",
        "Mohamud",
        "Jama",
        "Hirsi",
        "Aden",
        "Egal",
        "Noor",
        "Duale",
        "Elmi",
        "Gedi",
        "Samatar",
        "Abdillahi",
        "Nur",
        "Haji",
        "Dahir",
        "Musse",
        "Awale",
        "Al-Hashimi",
        "Al-Sayed",
        "El-Amin",
        "Haddad",
        "Mansour",
        "Nasser",
        "Saleh",
        "Khalil",
        "Hamdan",
        "Aziz",
        "Karimi",
        "Abdulle",
        "Guleid",
        "Shire",
        "Mahamed",
    ];

    pub(super) static EASIAN_BOYS: &[&str] = &[
        "Wei", "Jun", "Hao", "Yu", "Jie", "Ming", "Hong", "Jian", "Zihan", "Haoran", "Yichen",
        "Zixuan", "Yuxuan", "Junjie", "Tianyu", "Kai", "Long", "Bao", "Minh", "Anh", "Duc", "Huy",
        "Khoa", "Nam", "Quang", "Tuấn", "Đức", "Phúc", "Hiếu", "Dũng", "Thành", "Hoàng", "Trung",
        "Ka Ho", "Chun", "Wing", "Hin", "Lok",
    ];

    pub(super) static EASIAN_GIRLS: &[&str] = &[
        "Mei", "Li", "Xin", "Yan", "Jing", "Ying", "Hui", "Xiaoling", "Yuting", "Zixin", "Yutong",
        "Ruoxi", "Siyu", "Xinyi", "Lan", "Linh", "Mai", "Ngọc", "Thảo", "Hương", "Trang", "Vy",
        "Hà", "Thu", "My", "Nhi", "Quỳnh", "Hằng", "Phương", "Hoa", "Wing Yan", "Hoi Yan",
    ];

    pub(super) static EASIAN_SURNAMES: &[&str] = &[
        "Chen", "Wang", "Li", "Zhang", "Liu", "Nguyễn", "Yang", "Huang", "Zhao", "Wu", "Zhou",
        "Xu", "Sun", "Nguyen", "Ma", "Zhu", "Hu", "Trần", "Guo", "He", "Lin", "Luo", "Zheng",
        "Liang", "Xie", "Tang", "Han", "Cao", "Wong", "Chan", "Cheung", "Lau", "Leung", "Ng", "Ho",
        "Lam", "Yip", "Tsang", "Tran", "Lê", "Le", "Phạm", "Pham", "Hoàng", "Hoang", "Huỳnh", "Vũ",
        "Võ", "Đặng", "Bùi", "Đỗ", "Ngô", "Dương", "Lý",
    ];

    /// Groups of interchangeable given names (nicknames, spellings,
    /// transliterations). A name is looked up in the first group holding it.
    pub(super) static GIVEN_VARIANTS: &[&[&str]] = &[
        &["Katherine", "Catherine", "Kathryn", "Kate", "Katie", "Kat"],
        &[
            "Mohammed", "Muhammad", "Mohammad", "Mohamed", "Mohamad", "Muhammed",
        ],
        &[
            "Aleksander",
            "Alexander",
            "Alex",
            "Olek",
            "Alexandru",
            "Alistair",
        ],
        &["Jonathan", "Jon", "Jonny", "John"],
        &["William", "Will", "Billy", "Liam"],
        &["Elizabeth", "Beth", "Lizzie", "Eliza", "Libby", "Elisabeth"],
        &["Thomas", "Tom", "Tommy", "Tomasz", "Tomáš"],
        &["James", "Jim", "Jamie", "Jimmy"],
        &["Joseph", "Joe", "Joey"],
        &["Samuel", "Sam", "Sammy"],
        &["Daniel", "Dan", "Danny", "Daniil"],
        &["Benjamin", "Ben", "Benji"],
        &["Matthew", "Matt", "Matty", "Mateusz"],
        &["Michael", "Mike", "Mikey", "Micheal", "Michał"],
        &["Christopher", "Chris", "Kristopher"],
        &["Nicholas", "Nick", "Nicky", "Nicolas", "Mikołaj"],
        &["Robert", "Rob", "Bobby", "Robbie"],
        &["Richard", "Rich", "Ricky"],
        &["Edward", "Ed", "Eddie", "Ted"],
        &["Frederick", "Fred", "Freddie", "Freddy"],
        &["Alfred", "Alfie"],
        &["Theodore", "Theo", "Teddy"],
        &["Oliver", "Ollie", "Olly"],
        &["Charles", "Charlie", "Chas"],
        &["Henry", "Harry", "Hal"],
        &["Zachary", "Zach", "Zak", "Zack", "Zakariya", "Zakaria"],
        &["Nathaniel", "Nathan", "Nat", "Natan"],
        &["Anthony", "Tony", "Antony", "Antoni"],
        &["Stephen", "Steven", "Steve", "Ştefan", "Stefan"],
        &["Andrew", "Andy", "Drew", "Andrei"],
        &["Dominic", "Dom", "Dominik"],
        &["Sebastian", "Seb"],
        &["Maximilian", "Max", "Maksymilian", "Maks"],
        &["Jakub", "Kuba", "Jacob", "Jake"],
        &["Łukasz", "Lukasz", "Luke", "Lucas", "Lukas"],
        &["Wojciech", "Wojtek"],
        &["Małgorzata", "Gosia", "Malgorzata"],
        &["Katarzyna", "Kasia"],
        &["Aleksandra", "Ola", "Alexandra", "Alex"],
        &["Ionuț", "Ionut", "Ion"],
        &["Abdirahman", "Abdi", "Abdurahman"],
        &["Abdullahi", "Abdullah", "Abdillahi"],
        &["Hussein", "Hussain", "Husein", "Husain"],
        &["Hassan", "Hasan"],
        &["Yusuf", "Yousef", "Youssef", "Yousuf"],
        &["Ibrahim", "Ibraheem"],
        &["Ismail", "Ismael"],
        &["Aisha", "Ayesha", "Aishah"],
        &["Fatima", "Fatimah", "Fatuma"],
        &["Faduma", "Fadumo"],
        &["Maryam", "Mariam", "Maryan", "Mary"],
        &["Khadija", "Khadijah", "Khadeeja"],
        &["Zainab", "Zaynab"],
        &["Oluwaseun", "Seun"],
        &["Oluwadamilare", "Dami", "Damilare"],
        &["Oluwatoyin", "Toyin"],
        &["Oluwabukola", "Bukola", "Bukky"],
        &["Temitope", "Tope", "Temi"],
        &["Chukwuemeka", "Emeka"],
        &["Chiamaka", "Amaka"],
        &["Ayodele", "Ayo"],
        &["Tobenna", "Tobi"],
        &["Funmilayo", "Funmi"],
        &["Kwabena", "Kobby"],
        &["Siobhán", "Siobhan", "Shivaun"],
        &["Róisín", "Roisin", "Rosheen"],
        &["Seán", "Sean", "Shaun", "Shawn"],
        &["Ciarán", "Ciaran", "Kieran"],
        &["Oisín", "Oisin"],
        &["Siân", "Sian"],
        &["Saoirse", "Seersha"],
        &["Niamh", "Neve", "Neeve"],
        &["Dáithí", "Daithi"],
        &["Zoë", "Zoe", "Zoey"],
        &["Chloé", "Chloe"],
        &["Renée", "Renee"],
        &["Aimée", "Aimee", "Amy"],
        &["Isabella", "Isabelle", "Izzy", "Bella", "Isobel"],
        &["Amelia", "Millie"],
        &["Sophia", "Sophie", "Sofia", "Sofiya"],
        &["Rebecca", "Becky", "Becca"],
        &["Jessica", "Jess", "Jessie"],
        &["Abigail", "Abi", "Abbie", "Abby"],
        &["Eleanor", "Ellie", "Nell"],
        &["Victoria", "Vicky", "Tori", "Wiktoria", "Viktoriya"],
        &["Samantha", "Sammie"],
        &["Natalie", "Natalia", "Natálie"],
        &["Jennifer", "Jenny", "Jen"],
        &["Charlotte", "Lottie"],
        &["Matilda", "Tilly", "Tilda"],
        &["Florence", "Flo", "Florrie"],
        &["Penelope", "Penny"],
        &["Harriet", "Hattie"],
        &["Annabel", "Annabelle"],
        &["Josephine", "Josie", "Jo"],
        &["Jayden", "Jaden", "Jaiden"],
        &["Aiden", "Aidan", "Ayden"],
        &["Kayden", "Caden"],
        &["Lewis", "Louis", "Louie"],
        &["Lily", "Lilly", "Lillie"],
        &["Leah", "Lea", "Leia"],
        &["Zayn", "Zain", "Zane"],
        &["Rayyan", "Rayan", "Raiyan"],
        &["Hamza", "Hamzah"],
        &["Idris", "Idrees"],
        &["Yahya", "Yahia"],
        &["Ayub", "Ayoub"],
        &["Sahra", "Zahra"],
        &["Abdulkadir", "Abdikadir"],
        &["Gabriel", "Gabe"],
        &["Elena", "Helena"],
        &["Ioana", "Joanna"],
        &["Zofia", "Zosia", "Sophie"],
        &["Zuzanna", "Zuzia", "Susanna"],
        &["Oleksandr", "Sasha", "Olexandr"],
        &["Dmytro", "Dmitri", "Dima"],
        &["Wei", "Will"],
    ];

    /// Groups of surname spellings seen for the same family across agencies.
    pub(super) static SURNAME_VARIANTS: &[&[&str]] = &[
        &["Mohamed", "Mohammed", "Mohamud", "Muhammad", "Mahamed"],
        &["Ahmed", "Ahmad"],
        &["Hussain", "Hussein", "Husain", "Hossain"],
        &["Chowdhury", "Choudhury", "Chaudhry"],
        &["McDonald", "MacDonald"],
        &["Mackenzie", "McKenzie"],
        &["Thompson", "Thomson"],
        &["Nguyễn", "Nguyen"],
        &["Trần", "Tran"],
        &["Lê", "Le"],
        &["Phạm", "Pham"],
        &["Hoàng", "Hoang"],
        &["Stevens", "Stephens"],
        &["Stevenson", "Stephenson"],
        &["Clarke", "Clark"],
        &["Reid", "Reed", "Read"],
        &["Phillips", "Philips"],
        &["Davies", "Davis"],
        &["Abdullahi", "Abdillahi"],
        &["Rahman", "Rehman"],
        &["Sheikh", "Shaikh"],
        &["Lee", "Li", "Leigh"],
        &["Chen", "Chan"],
        &["Wang", "Wong"],
        &["Liu", "Lau"],
        &["Wu", "Ng"],
        &["Mensah", "Mensa"],
        &["Da Costa", "DaCosta", "Dacosta"],
        &["Ştefănescu", "Stefanescu"],
        &["Gray", "Grey"],
        &["Ali", "Aly"],
        &["Abdi", "Abdy"],
        &["Khan", "Khaan"],
    ];

    /// Similar-sounding pairs often given to twins: (name, female, name, female).
    pub(super) static TWIN_PAIRS: &[(&str, bool, &str, bool)] = &[
        ("Hassan", false, "Hussain", false),
        ("Hassan", false, "Hussein", false),
        ("Amelia", true, "Ava", true),
        ("Jacob", false, "Joshua", false),
        ("Ella", true, "Emma", true),
        ("Lily", true, "Lola", true),
        ("Oliver", false, "Olivia", true),
        ("Harry", false, "Harriet", true),
        ("Aisha", true, "Ayesha", true),
        ("Zain", false, "Zara", true),
        ("Chidi", false, "Chioma", true),
        ("Zofia", true, "Zuzanna", true),
        ("Isla", true, "Isabella", true),
        ("Leo", false, "Lily", true),
        ("Ayaan", false, "Aisha", true),
        ("Hodan", true, "Hibo", true),
        ("Kwame", false, "Kofi", false),
        ("Mei", true, "Ming", false),
    ];

    /// Postcode areas: (area letters, highest district number, local-authority
    /// codes used for UPNs of children living there).
    pub(super) static AREAS: &[(&str, u8, &[u16])] = &[
        ("B", 98, &[330, 332, 333, 334, 335]),
        ("BS", 49, &[801, 800, 803]),
        ("CF", 83, &[681, 676, 667]),
        ("E", 18, &[211, 210, 316, 320]),
        ("G", 84, &[951, 952]),
        ("L", 75, &[341, 340, 343]),
        ("LS", 29, &[383]),
        ("M", 90, &[352, 355, 356, 358]),
        ("N", 22, &[206, 309, 308]),
        ("NE", 71, &[391, 390, 392]),
        ("NG", 34, &[892, 891]),
        ("S", 75, &[373, 372]),
        ("SE", 28, &[208, 209, 210, 303]),
        ("SW", 20, &[212, 213, 319]),
        ("W", 14, &[207, 205, 307]),
        ("BD", 24, &[380]),
        ("BN", 45, &[846, 845]),
        ("CV", 47, &[331, 937]),
        ("LE", 19, &[856, 855]),
        ("OX", 49, &[931]),
        ("PL", 35, &[879, 908]),
        ("SO", 53, &[852, 850]),
        ("EH", 55, &[953]),
        ("LU", 7, &[821]),
        ("MK", 46, &[826]),
        ("PR", 26, &[888]),
        ("WV", 16, &[336]),
        ("HU", 20, &[810, 811]),
        ("DE", 75, &[831, 830]),
        ("ST", 21, &[861, 860]),
        ("SR", 8, &[394]),
        ("RG", 45, &[870, 872]),
        ("TS", 29, &[806, 807, 808]),
        ("WF", 17, &[384]),
        ("HD", 9, &[382]),
        ("BB", 18, &[889, 888]),
        ("BL", 9, &[350]),
        ("OL", 16, &[353, 354]),
        ("SA", 73, &[670, 671]),
        ("NP", 44, &[680, 679]),
        ("IG", 11, &[317, 320]),
        ("CR", 9, &[306]),
        ("UB", 11, &[312, 313]),
        ("HA", 9, &[305, 310]),
        ("EN", 11, &[308]),
        ("DN", 41, &[371]),
        ("PE", 38, &[873, 874]),
        ("NR", 35, &[926]),
        ("EX", 39, &[878]),
        ("BH", 31, &[839]),
    ];

    /// Births in England and Wales (thousands) by year, used to weight dates of birth.
    pub(super) static BIRTHS_BY_YEAR: &[(i32, u32)] = &[
        (2000, 604),
        (2001, 595),
        (2002, 596),
        (2003, 622),
        (2004, 640),
        (2005, 646),
        (2006, 670),
        (2007, 690),
        (2008, 708),
        (2009, 706),
        (2010, 723),
        (2011, 724),
        (2012, 730),
        (2013, 698),
        (2014, 696),
        (2015, 697),
        (2016, 696),
        (2017, 679),
        (2018, 657),
        (2019, 641),
        (2020, 613),
        (2021, 625),
        (2022, 606),
        (2023, 591),
        (2024, 594),
        (2025, 590),
    ];
}
