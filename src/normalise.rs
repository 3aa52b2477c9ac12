//! UK-specific field normalisers: names, postcodes, NHS numbers, unique
//! pupil numbers (UPNs) and dates of birth.
//!
//! Every normaliser returns a [`Normalised`] value: `Ok(None)` when the field
//! is missing (empty, or a null marker such as `N/A`), `Ok(Some(canonical))`
//! when it is usable, and `Err(reason)` when it is present but unusable.
//! Reasons are the small [`Invalid`] enum, whose text never contains the
//! value itself, so it is safe to put in logs and tickets.
//!
//! Common rules: input longer than [`MAX_FIELD_BYTES`] bytes is rejected as
//! [`Invalid::TooLong`] before any other work; otherwise the value is
//! trimmed and checked with [`is_null_marker`]. No function here panics.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

use crate::date::{default_date_formats, Date, DateFormat};

/// Why a field value was not usable. Display text never contains the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invalid {
    /// The raw value is longer than [`MAX_FIELD_BYTES`] bytes.
    TooLong,
    /// A name with no letters in it.
    NoLetters,
    /// Characters or structure that the field's format does not allow.
    BadFormat,
    /// An identifier whose check digit or check letter is wrong.
    BadCheckDigit,
    /// An identifier with the wrong number of characters.
    WrongLength,
    /// A date of birth before [`MIN_DATE_OF_BIRTH`].
    BeforeMinDate,
    /// A date of birth after today.
    InFuture,
    /// Date-shaped, but the day or month is out of range (e.g. 31/02/2015).
    ImpossibleDate,
    /// A coded value that is not one of the known codes.
    UnknownCode,
}

impl Invalid {
    /// Every variant, in declaration order.
    pub const ALL: [Invalid; 9] = [
        Invalid::TooLong,
        Invalid::NoLetters,
        Invalid::BadFormat,
        Invalid::BadCheckDigit,
        Invalid::WrongLength,
        Invalid::BeforeMinDate,
        Invalid::InFuture,
        Invalid::ImpossibleDate,
        Invalid::UnknownCode,
    ];

    /// A stable snake_case code for reports, e.g. `"too_long"`.
    pub fn code(self) -> &'static str {
        match self {
            Invalid::TooLong => "too_long",
            Invalid::NoLetters => "no_letters",
            Invalid::BadFormat => "bad_format",
            Invalid::BadCheckDigit => "bad_check_digit",
            Invalid::WrongLength => "wrong_length",
            Invalid::BeforeMinDate => "before_min_date",
            Invalid::InFuture => "in_future",
            Invalid::ImpossibleDate => "impossible_date",
            Invalid::UnknownCode => "unknown_code",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::TooLong => write!(f, "is longer than {MAX_FIELD_BYTES} bytes"),
            Invalid::NoLetters => f.write_str("contains no letters"),
            Invalid::BadFormat => f.write_str("is not in a recognised format"),
            Invalid::BadCheckDigit => {
                f.write_str("fails its check digit (NHS number modulus-11 or UPN check letter)")
            }
            Invalid::WrongLength => f.write_str("has the wrong number of characters"),
            Invalid::BeforeMinDate => {
                write!(
                    f,
                    "is before the earliest accepted date {MIN_DATE_OF_BIRTH}"
                )
            }
            Invalid::InFuture => f.write_str("is in the future"),
            Invalid::ImpossibleDate => {
                f.write_str("is not a real calendar date (day or month out of range)")
            }
            Invalid::UnknownCode => f.write_str("is not a recognised code"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Result of normalising one field: `Ok(None)` = missing (empty or a null
/// marker), `Ok(Some(v))` = canonical value, `Err(reason)` = invalid.
pub type Normalised<T> = Result<Option<T>, Invalid>;

/// The earliest date of birth accepted by [`date_of_birth`].
pub const MIN_DATE_OF_BIRTH: Date = Date {
    year: 1990,
    month: 1,
    day: 1,
};

/// Longest raw field, in bytes, that any normaliser will look at.
pub const MAX_FIELD_BYTES: usize = 256;

/// Values that mean "no value", compared ASCII-case-insensitively.
/// `<NA>`, `#N/A`, `#NULL!` and `(BLANK)` are how pandas, R and Excel write an empty cell;
/// `#NAME?`, `#VALUE!` and `#REF!` are Excel's formula errors; the rest are case systems' fillers.
const NULL_MARKERS: [&str; 31] = [
    "",
    "-",
    "--",
    ".",
    "?",
    "NULL",
    "NONE",
    "N/A",
    "NA",
    "NK",
    "N/K",
    "NOT KNOWN",
    "UNKNOWN",
    "UNK",
    "NOT STATED",
    "TBC",
    "XX",
    "<NA>",
    "#N/A",
    "#NULL!",
    "(BLANK)",
    "#NAME?",
    "#VALUE!",
    "#REF!",
    "NOT RECORDED",
    "NOT GIVEN",
    "NOT PROVIDED",
    "REFUSED",
    "WITHHELD",
    "NO NAME",
    "ANONYMOUS",
];

/// Null markers compared as written: pandas and R write a missing number as `nan` or `NaN`,
/// while `Nan` and `NAN` are names (the given name Nan).
const CASED_NULL_MARKERS: [&str; 2] = ["nan", "NaN"];

/// pandas' missing date, as written: a null marker in date fields only (Nat is a name).
const NOT_A_TIME: &str = "NaT";

/// Bit `n` is set when some null marker is `n` bytes long.
const NULL_MARKER_LENGTHS: u32 = {
    let mut bits = 0u32;
    let mut i = 0;
    while i < NULL_MARKERS.len() {
        // A marker of 32 bytes or more would overflow the shift and stop
        // the build, so the mask cannot silently miss one.
        bits |= 1 << NULL_MARKERS[i].len();
        i += 1;
    }
    bits
};

/// Entry `b` is true when some null marker starts with byte `b` in either
/// ASCII case.
const NULL_MARKER_FIRST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < NULL_MARKERS.len() {
        if let Some(&b) = NULL_MARKERS[i].as_bytes().first() {
            table[b.to_ascii_uppercase() as usize] = true;
            table[b.to_ascii_lowercase() as usize] = true;
        }
        i += 1;
    }
    table
};

/// Whether an already-trimmed value is a null marker such as `N/A`, `NULL`,
/// `NOT KNOWN` or `-`. The comparison is ASCII-case-insensitive, so the
/// argument need not actually be uppercased; `nan` and `NaN` are markers
/// only as written ([`CASED_NULL_MARKERS`]).
///
/// Every value goes through this, and most are not markers: values whose
/// length or first byte no marker has (`SMITH`, `15/06/2010`) are turned
/// away before the markers are compared one by one.
pub fn is_null_marker(trimmed_upper: &str) -> bool {
    let b = trimmed_upper.as_bytes();
    if b.len() >= 32 || NULL_MARKER_LENGTHS & (1 << b.len()) == 0 {
        return false;
    }
    if b.first()
        .is_some_and(|&c| !NULL_MARKER_FIRST_BYTES[usize::from(c)])
    {
        return false;
    }
    NULL_MARKERS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(trimmed_upper))
        || CASED_NULL_MARKERS.contains(&trimmed_upper)
}

/// Whether `t` is a null marker once uppercased with the full Unicode
/// mapping: `is_null_marker(&t.to_uppercase())`, for coded fields. ASCII
/// needs no uppercased copy, since the comparison ignores ASCII case; other
/// text can uppercase to a marker (`not ſtated` → `NOT STATED`), so it
/// still takes the copy.
pub fn is_null_marker_uppercased(t: &str) -> bool {
    if t.is_ascii() {
        is_null_marker(t)
    } else {
        is_null_marker(&t.to_uppercase())
    }
}

/// Whether `b` is whitespace in the sense of [`char::is_whitespace`] (and so
/// of [`str::trim`]). For ASCII that is space, `\t`, `\n`, `\x0B`, `\x0C`
/// and `\r`; [`u8::is_ascii_whitespace`] leaves out `\x0B`, so it will not do.
const fn is_ascii_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t'..=b'\r')
}

/// [`str::trim`], with ASCII ends handled byte by byte: `str::trim` decodes
/// each character and asks whether it is Unicode whitespace. Only when an
/// end is a non-ASCII character (which may be whitespace, such as a
/// no-break space) is the rest left to `str::trim`.
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_ascii_ws(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !is_ascii_ws(c))
        .map_or(start, |i| i + 1);
    // Both ends are next to ASCII bytes (or the ends of s), so they are
    // character boundaries.
    let t = &s[start..end];
    let tb = t.as_bytes();
    if tb.first().is_some_and(|c| !c.is_ascii()) || tb.last().is_some_and(|c| !c.is_ascii()) {
        t.trim()
    } else {
        t
    }
}

/// Common prelude: length guard, trim, null markers. `Err` = return this.
fn prepare(raw: &str) -> Result<&str, Normalised<()>> {
    if raw.len() > MAX_FIELD_BYTES {
        return Err(Err(Invalid::TooLong));
    }
    let s = trim(raw);
    if is_null_marker(s) {
        return Err(Ok(None));
    }
    Ok(s)
}

/// The ASCII `bytes` as a `String`. When the trimmed input `s` already is
/// that text (a UPN typed `H801200001001`, a postcode typed `LS6 2AB`), it
/// is copied as it stands, with no UTF-8 validation; otherwise the bytes
/// are copied and validated, which is still cheaper than collecting
/// `char`s. (Never lossy: the bytes are ASCII.)
fn ascii_output(bytes: &[u8], s: &str) -> String {
    if bytes == s.as_bytes() {
        return s.to_owned();
    }
    String::from_utf8(bytes.to_vec())
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Free text, normalised the way the encoder treats fields with no
/// specific normaliser: split on Unicode whitespace, each word uppercased
/// (full Unicode mapping), words joined by one space; `None` when nothing
/// is left or the result is a null marker. ASCII text is uppercased in
/// place in one buffer instead of word by word.
pub fn free_text(raw: &str) -> Option<String> {
    if CASED_NULL_MARKERS.contains(&trim(raw)) {
        return None;
    }
    let t = if raw.is_ascii() {
        let mut t = String::with_capacity(raw.len());
        for w in raw.split_whitespace() {
            if !t.is_empty() {
                t.push(' ');
            }
            t.push_str(w);
        }
        t.make_ascii_uppercase();
        t
    } else {
        let words: Vec<String> = raw.split_whitespace().map(str::to_uppercase).collect();
        words.join(" ")
    };
    if t.is_empty() || is_null_marker(&t) {
        None
    } else {
        Some(t)
    }
}

/// Converts the prelude's early exit to the caller's value type.
fn early<T>(r: Normalised<()>) -> Normalised<T> {
    r.map(|_| None)
}

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Apostrophe-like characters, removed from names without splitting them.
fn is_apostrophe(c: char) -> bool {
    matches!(
        c,
        '\'' | '`'
            | '\u{00B4}' // acute accent
            | '\u{02B9}' // modifier prime
            | '\u{02BB}' // turned comma (okina)
            | '\u{02BC}' // modifier apostrophe
            | '\u{02BD}' // reversed comma
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201B}'
            | '\u{2032}' // prime
            | '\u{FF07}' // fullwidth apostrophe
    )
}

/// Invisible format characters dropped without splitting (soft hyphen,
/// zero-width space, joiners, direction marks, byte-order mark).
pub(crate) fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

/// `raw` without the invisible format characters of [`is_ignorable`], for the identifier and
/// date normalisers: a postcode, NHS number, UPN or date copied from a web page or a document
/// can carry a zero-width space or a direction mark that nobody sees. ASCII text (nearly every
/// value) is returned as it is, after one scan; so is a value too long to normalise, which
/// [`prepare`] then refuses as such.
pub(crate) fn visible(raw: &str) -> Cow<'_, str> {
    if raw.len() > MAX_FIELD_BYTES || raw.is_ascii() || !raw.chars().any(is_ignorable) {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(raw.chars().filter(|&c| !is_ignorable(c)).collect())
    }
}

/// Letters that do not decompose under NFKD, folded to ASCII.
fn special_fold(c: char) -> Option<&'static str> {
    Some(match c {
        'Ł' | 'ł' | 'Ŀ' | 'ŀ' | 'Ƚ' | 'ƚ' | 'Ɫ' | 'ɫ' => "L",
        'Ø' | 'ø' | 'Ɵ' | 'ɵ' => "O",
        'Đ' | 'đ' | 'Ð' | 'ð' | 'Ɖ' | 'ɖ' | 'ȡ' => "D",
        'Þ' | 'þ' => "TH",
        'ß' | 'ẞ' => "SS",
        'Æ' | 'æ' => "AE",
        'Œ' | 'œ' => "OE",
        'ı' | 'Ɨ' | 'ɨ' => "I",
        'Ħ' | 'ħ' => "H",
        'Ŧ' | 'ŧ' => "T",
        'ĸ' => "K",
        'Ƀ' | 'ƀ' => "B",
        'Ɍ' | 'ɍ' => "R",
        'Ʉ' | 'ʉ' => "U",
        'Ƶ' | 'ƶ' => "Z",
        'Ǥ' | 'ǥ' => "G",
        'Ɉ' | 'ɉ' => "J",
        'Ƒ' | 'ƒ' => "F",
        'Ŋ' | 'ŋ' => "NG",
        _ => return None,
    })
}

/// Accumulates name output: letters, with a single space wherever one or
/// more separators occurred between letters.
struct NameBuf {
    out: String,
    pending_sep: bool,
}

impl NameBuf {
    fn letter(&mut self, c: char) {
        if self.pending_sep && !self.out.is_empty() {
            self.out.push(' ');
        }
        self.pending_sep = false;
        self.out.push(c);
    }

    fn ascii_letters(&mut self, s: &str) {
        for c in s.chars() {
            self.letter(c);
        }
    }

    fn separator(&mut self) {
        self.pending_sep = true;
    }

    /// One input character (non-ASCII path).
    fn push_char(&mut self, c: char) {
        if c.is_ascii() {
            self.push_ascii(c as u8);
        } else if is_apostrophe(c) || is_ignorable(c) {
        } else if let Some(rep) = special_fold(c) {
            self.ascii_letters(rep);
        } else {
            decompose_compatible(c, |d| self.push_decomposed(d));
        }
    }

    /// One ASCII byte.
    fn push_ascii(&mut self, b: u8) {
        if b.is_ascii_alphabetic() {
            self.letter(char::from(b.to_ascii_uppercase()));
        } else if b != b'\'' && b != b'`' {
            self.separator();
        }
    }

    /// One character of an NFKD decomposition.
    fn push_decomposed(&mut self, d: char) {
        if d.is_ascii() {
            self.push_ascii(d as u8);
        } else if is_combining_mark(d) || is_apostrophe(d) || is_ignorable(d) {
        } else if let Some(rep) = special_fold(d) {
            self.ascii_letters(rep);
        } else if d.is_alphabetic() {
            for u in d.to_uppercase() {
                self.push_upper(u);
            }
        } else {
            self.separator();
        }
    }

    /// One character of an uppercase mapping. Uppercase forms are normalised
    /// once more (they may themselves decompose or need folding) so that
    /// the output is a fixed point of [`name`]. Letters with no uppercase
    /// form are dropped.
    fn push_upper(&mut self, u: char) {
        if u.is_ascii() {
            if u.is_ascii_alphabetic() {
                self.letter(u);
            }
            return;
        }
        decompose_compatible(u, |v| {
            if is_combining_mark(v) || is_apostrophe(v) || is_ignorable(v) {
            } else if let Some(rep) = special_fold(v) {
                self.ascii_letters(rep);
            } else if v.is_alphabetic() && !v.is_lowercase() {
                self.letter(v);
            }
        });
    }
}

/// What [`NameBuf`] makes of the most common names, without going through
/// it character by character: when `s` is words of ASCII letters separated
/// by single spaces or hyphens, with a letter at each end (`Mohammed`,
/// `Mary Jane`, `Smith-Jones`), the output is `s` uppercased with hyphens
/// turned into spaces. `None` for anything else.
fn plain_name(s: &str) -> Option<String> {
    let mut after_sep = true; // so that a leading separator fails
    let mut hyphens = false;
    for &c in s.as_bytes() {
        if c == b' ' || c == b'-' {
            if after_sep {
                return None;
            }
            after_sep = true;
            hyphens |= c == b'-';
        } else if c.is_ascii_alphabetic() {
            after_sep = false;
        } else {
            return None;
        }
    }
    if after_sep {
        return None;
    }
    let mut out = if hyphens {
        s.replace('-', " ")
    } else {
        s.to_owned()
    };
    out.make_ascii_uppercase();
    Some(out)
}

/// First words of placeholder names given to newborns, and to unborn children in children's
/// social care ("UNBORN", "UNBORN BABY").
const PLACEHOLDER_HEADS: [&str; 10] = [
    "BABY", "BABYBOY", "BABYGIRL", "INFANT", "NEWBORN", "TWIN", "TRIPLET", "UNNAMED", "UNBORN",
    "UNKNOWN",
];

/// Words that may follow a placeholder head ("BABY GIRL", "TWIN A", "UNKNOWN MALE").
const PLACEHOLDER_TAILS: [&str; 28] = [
    "BOY", "GIRL", "MALE", "FEMALE", "A", "B", "C", "D", "I", "II", "III", "ONE", "TWO", "THREE",
    "FIRST", "SECOND", "THIRD", "CHILD", "BABY", "BABYBOY", "BABYGIRL", "INFANT", "NEWBORN",
    "TWIN", "TRIPLET", "UNNAMED", "UNBORN", "UNKNOWN",
];

/// Entry `b` is true when some placeholder head starts with byte `b`.
const PLACEHOLDER_FIRST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < PLACEHOLDER_HEADS.len() {
        if let Some(&b) = PLACEHOLDER_HEADS[i].as_bytes().first() {
            table[b as usize] = true;
        }
        i += 1;
    }
    table
};

/// Whether a normalised name is a newborn placeholder: "BABY", "BABY BOY",
/// "TWIN A", "TWIN" (from "TWIN 1"), "BABY OF SMITH", ...
///
/// Most names do not start with the first letter of a placeholder head
/// and are turned away on that alone.
fn is_placeholder_name(n: &str) -> bool {
    if !n
        .as_bytes()
        .first()
        .is_some_and(|&b| PLACEHOLDER_FIRST_BYTES[usize::from(b)])
    {
        return false;
    }
    is_placeholder_words(n)
}

/// [`is_placeholder_name`] without the first-letter check: a placeholder
/// head, then placeholder tails or `OF`.
fn is_placeholder_words(n: &str) -> bool {
    let mut words = n.split(' ');
    let Some(head) = words.next() else {
        return false;
    };
    if !PLACEHOLDER_HEADS.contains(&head) {
        return false;
    }
    for (i, w) in words.enumerate() {
        if i == 0 && w == "OF" {
            return true; // "BABY OF <mother's surname>"
        }
        if !PLACEHOLDER_TAILS.contains(&w) {
            return false;
        }
    }
    true
}

/// Normalises a personal name (given name or surname).
///
/// Unicode NFKD with combining marks dropped (Zoë → `ZOE`, Ştefan →
/// `STEFAN`, Nguyễn → `NGUYEN`), letters that do not decompose folded to
/// ASCII (Łukasz → `LUKASZ`, ß → `SS`, Æ → `AE`), full Unicode uppercase
/// (letters of other scripts are kept: محمد stays Arabic). Apostrophes are
/// removed without splitting (O'Brien → `OBRIEN`); every other non-letter
/// (hyphen, dot, digit, whitespace, ...) separates words, and words are
/// joined by one ASCII space (Smith-Jones → `SMITH JONES`). All combining
/// marks are dropped, including the vowel signs of Indic scripts; that is
/// lossy but identical for every data source, so matching is unaffected.
///
/// `Err(NoLetters)` if no letters remain. Newborn placeholders ("BABY",
/// "BABY GIRL", "TWIN 1", "BABY OF SMITH", ...) and values that normalise
/// to a null marker ("n.k.", "Not-Known") are `Ok(None)`. Pure-ASCII input
/// takes a fast path with no Unicode work. The output is a fixed point:
/// `name(v) == Ok(Some(v))` for every output `v`.
pub fn name(raw: &str) -> Normalised<String> {
    let s = match prepare(raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    let out = plain_name(s).unwrap_or_else(|| name_text(s));
    name_verdict(out, is_null_marker, is_placeholder_name)
}

/// [`name`] for a value the column map keeps (`[missing] keep`): a null marker or newborn
/// placeholder that is a real name in this export (the surname Na), so neither list applies.
pub fn name_kept(raw: &str) -> Normalised<String> {
    if raw.len() > MAX_FIELD_BYTES {
        return Err(Invalid::TooLong);
    }
    let s = trim(raw);
    let out = plain_name(s).unwrap_or_else(|| name_text(s));
    if out.is_empty() {
        return Err(Invalid::NoLetters);
    }
    if out.len() > MAX_FIELD_BYTES {
        return Err(Invalid::TooLong);
    }
    Ok(Some(out))
}

/// A trimmed name through [`NameBuf`], character by character (byte by
/// byte when ASCII).
fn name_text(s: &str) -> String {
    let mut buf = NameBuf {
        out: String::with_capacity(s.len()),
        pending_sep: false,
    };
    if s.is_ascii() {
        for &b in s.as_bytes() {
            buf.push_ascii(b);
        }
    } else {
        for c in s.chars() {
            buf.push_char(c);
        }
    }
    buf.out
}

/// What [`name`] makes of the normalised text `out`, given how null markers
/// and newborn placeholders are recognised.
fn name_verdict(
    out: String,
    is_null_marker: fn(&str) -> bool,
    is_placeholder_name: fn(&str) -> bool,
) -> Normalised<String> {
    if out.is_empty() {
        return Err(Invalid::NoLetters);
    }
    if out.len() > MAX_FIELD_BYTES {
        // Compatibility decompositions can expand the text; keep the
        // output within the limit so that it is a valid input again.
        return Err(Invalid::TooLong);
    }
    if is_null_marker(&out) || out == "N A" || out == "N K" || is_placeholder_name(&out) {
        return Ok(None);
    }
    Ok(Some(out))
}

// ---------------------------------------------------------------------------
// Postcodes
// ---------------------------------------------------------------------------

/// Letters allowed in the first position of an outward code.
fn pc_first(b: u8) -> bool {
    b.is_ascii_uppercase() && !matches!(b, b'Q' | b'V' | b'X')
}

/// Letters allowed in the second position of an outward code.
fn pc_second(b: u8) -> bool {
    b.is_ascii_uppercase() && !matches!(b, b'I' | b'J' | b'Z')
}

/// Letters allowed in the third position of an `A9A` outward code.
fn pc_third_a9a(b: u8) -> bool {
    b"ABCDEFGHJKPSTUW".contains(&b)
}

/// Letters allowed in the fourth position of an `AA9A` outward code.
fn pc_fourth_aa9a(b: u8) -> bool {
    b"ABEHMNPRVWXY".contains(&b)
}

/// Letters allowed in the last two positions of an inward code.
fn pc_inward_letter(b: u8) -> bool {
    b.is_ascii_uppercase() && !matches!(b, b'C' | b'I' | b'K' | b'M' | b'O' | b'V')
}

/// Whether an uppercase outward code is `A9`, `A99`, `AA9`, `AA99`, `A9A` or
/// `AA9A` with the letter restrictions of the UK postcode format.
fn valid_outward(o: &[u8]) -> bool {
    let digit = |i: usize| o[i].is_ascii_digit();
    match o.len() {
        2 => pc_first(o[0]) && digit(1),
        3 => {
            pc_first(o[0])
                && ((digit(1) && digit(2)) // A99
                    || (pc_second(o[1]) && digit(2)) // AA9
                    || (digit(1) && pc_third_a9a(o[2]))) // A9A
        }
        4 => {
            pc_first(o[0]) && pc_second(o[1]) && digit(2) && (digit(3) || pc_fourth_aa9a(o[3]))
            // AA99 | AA9A
        }
        _ => false,
    }
}

/// Normalises a UK postcode to `OUTWARD INWARD`, e.g. `sw1a1aa` →
/// `SW1A 1AA`, ` ls6  2ab ` → `LS6 2AB`.
///
/// All whitespace is removed and letters uppercased. Any character other
/// than ASCII letters and digits is `BadFormat`; fewer than 5 or more than 7
/// characters is `WrongLength`; a string that is not `A9`, `A99`, `AA9`,
/// `AA99`, `A9A` or `AA9A` followed by `9AA` (with the standard letter
/// restrictions) is `BadFormat`. `GIR 0AA` is accepted. `NFA` and the NHS pseudo-postcodes
/// `ZZ99 ???` are missing. BFPO numbers and the overseas territories' codes (`ASCN 1ZZ`) are
/// `BadFormat`.
pub fn postcode(raw: &str) -> Normalised<String> {
    let raw = visible(raw);
    let s = match prepare(&raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    let (buf, len) = compact_alnum::<7>(s)?;
    if is_postcode_placeholder(&buf[..len]) {
        return Ok(None);
    }
    check_postcode(&buf[..len])?;
    let (outward, inward) = buf[..len].split_at(len - 3);
    let mut out = [b' '; 8];
    out[..len - 3].copy_from_slice(outward);
    out[len - 2..=len].copy_from_slice(inward);
    Ok(Some(ascii_output(&out[..=len], s)))
}

/// Whether a postcode (uppercased, without spaces) stands for no address: `NFA` (no fixed
/// abode) and the NHS pseudo-postcodes `ZZ99 ???` (no fixed abode, not known, born abroad).
/// They are missing values, not invalid ones.
pub(crate) fn is_postcode_placeholder(code: &[u8]) -> bool {
    code == b"NFA" || (code.len() == 7 && code.starts_with(b"ZZ99"))
}

/// Checks a postcode's letters and digits, uppercased and without spaces:
/// `WrongLength` under five, `BadFormat` unless the last three are a valid
/// inward code and the rest a valid outward code (or it is `GIR0AA`).
fn check_postcode(code: &[u8]) -> Result<(), Invalid> {
    if code.len() < 5 {
        return Err(Invalid::WrongLength);
    }
    let (outward, inward) = code.split_at(code.len() - 3);
    let valid = code == b"GIR0AA"
        || (valid_outward(outward)
            && inward[0].is_ascii_digit()
            && pc_inward_letter(inward[1])
            && pc_inward_letter(inward[2]));
    if valid {
        Ok(())
    } else {
        Err(Invalid::BadFormat)
    }
}

/// The letters and digits of a postcode or UPN, uppercased, with
/// whitespace removed: up to `N` of them in a buffer, and how many.
/// `BadFormat` at the first character that is neither whitespace nor an
/// ASCII letter or digit; `WrongLength` at the first letter or digit past
/// `N` (whichever comes first). ASCII input is read byte by byte; the first
/// non-ASCII byte sends the whole value to [`compact_alnum_chars`].
fn compact_alnum<const N: usize>(s: &str) -> Result<([u8; N], usize), Invalid> {
    let mut buf = [0u8; N];
    let mut len = 0usize;
    for &b in s.as_bytes() {
        match ALNUM_UPPER[usize::from(b)] {
            SKIP => {}
            0 if b.is_ascii() => return Err(Invalid::BadFormat),
            0 => return compact_alnum_chars(s),
            upper => {
                if len == N {
                    return Err(Invalid::WrongLength);
                }
                buf[len] = upper;
                len += 1;
            }
        }
    }
    Ok((buf, len))
}

/// [`ALNUM_UPPER`]'s mark for whitespace.
const SKIP: u8 = 1;

/// What [`compact_alnum`] does with each byte, in one look-up: an ASCII
/// letter or digit maps to its uppercase form, ASCII whitespace to
/// [`SKIP`], anything else to 0.
const ALNUM_UPPER: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric() {
            table[i] = b.to_ascii_uppercase();
        } else if is_ascii_ws(b) {
            table[i] = SKIP;
        }
        i += 1;
    }
    table
};

/// [`compact_alnum`] character by character, for text that is not all
/// ASCII (where Unicode whitespace is skipped too).
fn compact_alnum_chars<const N: usize>(s: &str) -> Result<([u8; N], usize), Invalid> {
    let mut buf = [0u8; N];
    let mut len = 0usize;
    for c in s.chars().filter(|c| !c.is_whitespace()) {
        if !c.is_ascii_alphanumeric() {
            return Err(Invalid::BadFormat);
        }
        if len == N {
            return Err(Invalid::WrongLength);
        }
        buf[len] = (c as u8).to_ascii_uppercase();
        len += 1;
    }
    Ok((buf, len))
}

// ---------------------------------------------------------------------------
// NHS numbers
// ---------------------------------------------------------------------------

/// Separators allowed inside an NHS number: whitespace, dots, hyphens and
/// the other Unicode dashes spreadsheets like to produce.
fn is_nhs_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '.' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}

/// Normalises an NHS number to its 10 digits, e.g. `943 476 5919` →
/// `9434765919`.
///
/// Whitespace, dashes and dots are removed. Any other non-digit is
/// `BadFormat`; a digit count other than 10 is `WrongLength`; a failed
/// modulus-11 check (weights 10..2 on the first nine digits, check digit
/// `11 - sum % 11`, 11 meaning 0 and 10 meaning never valid) is
/// `BadCheckDigit`. Numbers of one repeated digit (`0000000000`,
/// `9999999999`, ...) all pass the check but are filler values, so they are
/// treated as missing: `Ok(None)`.
pub fn nhs_number(raw: &str) -> Normalised<String> {
    let raw = visible(raw);
    let s = match prepare(&raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    let digits = nhs_digits(float_suffix_dropped(s))?;
    if !check_nhs(&digits)? {
        return Ok(None);
    }
    Ok(Some(ascii_output(&digits.map(|d| b'0' + d), s)))
}

/// `s` without a trailing `.0`: an NHS number that went through a spreadsheet or pandas as a
/// number comes out as `9991107134.0`.
fn float_suffix_dropped(s: &str) -> &str {
    s.strip_suffix(".0").unwrap_or(s)
}

/// The checks on an NHS number's ten digit values: `Ok(false)` for a filler
/// number of one repeated digit, `BadCheckDigit` when the modulus-11 check
/// fails.
fn check_nhs(digits: &[u8; 10]) -> Result<bool, Invalid> {
    if digits.iter().all(|&d| d == digits[0]) {
        return Ok(false);
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10u32).rev())
        .map(|(&d, w)| u32::from(d) * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return Err(Invalid::BadCheckDigit),
        c => c,
    };
    if check != u32::from(digits[9]) {
        return Err(Invalid::BadCheckDigit);
    }
    Ok(true)
}

/// The ten digit values of an NHS number, separators dropped: `BadFormat`
/// at the first character that is neither a separator nor an ASCII digit,
/// else `WrongLength` unless there are exactly ten digits. ASCII input is
/// read byte by byte (its only separators are ASCII whitespace, `-` and
/// `.`); the first non-ASCII byte sends the whole value to
/// [`nhs_digits_chars`].
fn nhs_digits(s: &str) -> Result<[u8; 10], Invalid> {
    let mut digits = [0u8; 10];
    let mut len = 0usize;
    for &b in s.as_bytes() {
        if b.is_ascii_digit() {
            // Count digits past the tenth, but keep looking for BadFormat.
            if let Some(d) = digits.get_mut(len) {
                *d = b - b'0';
            }
            len += 1;
        } else if !(is_ascii_ws(b) || b == b'-' || b == b'.') {
            if !b.is_ascii() {
                return nhs_digits_chars(s);
            }
            return Err(Invalid::BadFormat);
        }
    }
    if len != digits.len() {
        return Err(Invalid::WrongLength);
    }
    Ok(digits)
}

/// [`nhs_digits`] character by character, for text that is not all ASCII.
fn nhs_digits_chars(s: &str) -> Result<[u8; 10], Invalid> {
    let mut digits = [0u8; 10];
    let mut len = 0usize;
    let mut too_long = false;
    for c in s.chars().filter(|&c| !is_nhs_separator(c)) {
        if !c.is_ascii_digit() {
            return Err(Invalid::BadFormat);
        }
        if len < digits.len() {
            digits[len] = c as u8 - b'0';
            len += 1;
        } else {
            too_long = true;
        }
    }
    if too_long || len != digits.len() {
        return Err(Invalid::WrongLength);
    }
    Ok(digits)
}

// ---------------------------------------------------------------------------
// Unique pupil numbers
// ---------------------------------------------------------------------------

/// The UPN check-letter alphabet: A..Z without I, O and S (0 → A, 22 → Z).
/// Also the letters allowed as the last character of a temporary UPN,
/// which count as their index here.
const UPN_ALPHABET: &[u8; 23] = b"ABCDEFGHJKLMNPQRTUVWXYZ";

/// Normalises a DfE Unique Pupil Number, e.g. `h801 2000 01001` →
/// `H801200001001`.
///
/// Whitespace is removed and letters uppercased. Any character other than
/// ASCII letters and digits is `BadFormat`; a length other than 13 is
/// `WrongLength`; character 1 must be a letter, 2-12 digits and 13 a digit
/// or (temporary UPN) a letter of the check alphabet, else `BadFormat`. The
/// check letter is `ABCDEFGHJKLMNPQRTUVWXYZ[sum % 23]`, where `sum` weights
/// characters 2..13 by 2..13 (a final letter counts as its index in that
/// alphabet); a mismatch is `BadCheckDigit`. Local-authority codes
/// (characters 2-4) are not checked against the DfE list.
pub fn upn(raw: &str) -> Normalised<String> {
    let raw = visible(raw);
    let s = match prepare(&raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    let (buf, len) = compact_alnum::<13>(s)?;
    if len != buf.len() {
        return Err(Invalid::WrongLength);
    }
    check_upn(&buf)?;
    Ok(Some(ascii_output(&buf, s)))
}

/// The checks on a UPN's thirteen characters, uppercased: the format
/// (`BadFormat`), then the check letter (`BadCheckDigit`).
fn check_upn(buf: &[u8; 13]) -> Result<(), Invalid> {
    if !buf[0].is_ascii_uppercase() || !buf[1..12].iter().all(u8::is_ascii_digit) {
        return Err(Invalid::BadFormat);
    }
    let last = if buf[12].is_ascii_digit() {
        u32::from(buf[12] - b'0')
    } else {
        match UPN_ALPHABET.iter().position(|&l| l == buf[12]) {
            Some(i) => i as u32,
            None => return Err(Invalid::BadFormat),
        }
    };
    let sum: u32 = buf[1..12]
        .iter()
        .zip(2u32..)
        .map(|(&d, w)| u32::from(d - b'0') * w)
        .sum::<u32>()
        + last * 13;
    if UPN_ALPHABET[(sum % 23) as usize] != buf[0] {
        return Err(Invalid::BadCheckDigit);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Dates of birth
// ---------------------------------------------------------------------------

/// The default formats, compiled once.
fn default_formats() -> &'static [DateFormat] {
    static DEFAULTS: OnceLock<Vec<DateFormat>> = OnceLock::new();
    DEFAULTS.get_or_init(default_date_formats)
}

/// Advances `*i` over `min..=max` ASCII digits; false if fewer than `min`.
fn take_digits(b: &[u8], i: &mut usize, min: usize, max: usize) -> bool {
    let n = b[*i..]
        .iter()
        .take(max)
        .take_while(|c| c.is_ascii_digit())
        .count();
    *i += n;
    n >= min
}

/// A time of day after a date: its hour and minute, and whether it is marked as UTC (`Z`, or
/// an offset of zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimeOfDay {
    hour: u32,
    minute: u32,
    utc: bool,
}

/// `t` read as a time of day such as `00:00`, `0:00:00`, `10:30:05.123Z`, `00:00:00+01:00`,
/// `12:00 AM` or Oracle's `12.00.00.000000000 AM` (dots need the seconds); `None` if it is not
/// one.
fn time_suffix(t: &str) -> Option<TimeOfDay> {
    let b = t.as_bytes();
    let mut i = 0;
    let number = |b: &[u8], from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'))
    };
    if !take_digits(b, &mut i, 1, 2) {
        return None;
    }
    let sep = match b.get(i) {
        Some(&c @ (b':' | b'.')) => c,
        _ => return None,
    };
    let hour = number(b, 0, i);
    i += 1;
    let m = i;
    if !take_digits(b, &mut i, 2, 2) {
        return None;
    }
    let minute = number(b, m, i);
    if sep == b'.' && b.get(i) != Some(&b'.') {
        return None;
    }
    if b.get(i) == Some(&sep) {
        i += 1;
        if !take_digits(b, &mut i, 2, 2) {
            return None;
        }
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            if !take_digits(b, &mut i, 1, 9) {
                return None;
            }
        }
    }
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let mut utc = false;
    match b.get(i) {
        None => {}
        Some(b'Z' | b'z') => {
            i += 1;
            utc = true;
        }
        Some(b'+' | b'-') => {
            i += 1;
            let o = i;
            if !take_digits(b, &mut i, 2, 2) {
                return None;
            }
            if b.get(i) == Some(&b':') {
                i += 1;
                if !take_digits(b, &mut i, 2, 2) {
                    return None;
                }
            } else {
                take_digits(b, &mut i, 0, 2);
            }
            utc = b[o..i].iter().all(|&c| c == b'0' || c == b':');
        }
        Some(_) => {
            let ampm = b.get(i..i + 2);
            if ampm.is_some_and(|x| x.eq_ignore_ascii_case(b"AM") || x.eq_ignore_ascii_case(b"PM"))
            {
                i += 2;
            } else {
                return None;
            }
        }
    }
    (i == b.len()).then_some(TimeOfDay { hour, minute, utc })
}

/// The date in the UK (GMT, or BST in summer) of a time given in UTC on `date`: a system that
/// stores a local midnight, or a time of birth, as UTC writes a summer birthday's date as the
/// day before (`2010-07-07T23:00:00Z` is 00:00 BST on 8 July). BST runs from 01:00 UTC on the
/// last Sunday of March to 01:00 UTC on the last Sunday of October (from 1996; before, the
/// first Sunday on or after 22 October). A time past 23:59 is left as it is.
pub(crate) fn uk_date_of_utc(date: Date, hour: u32, minute: u32) -> Date {
    // Only 23:xx UTC can fall on another UK day (BST is one hour ahead).
    if hour != 23 || minute > 59 {
        return date;
    }
    let sunday_on_or_before = |d: Date| {
        // 1970-01-01 was a Thursday: days % 7 == 3 is a Sunday.
        let days = d.to_days();
        Date::from_days(days - (days - 3).rem_euclid(7))
    };
    let y = date.year;
    let on = |m: u8, d: u8| Date::new(y, m, d).unwrap_or(date);
    let start = sunday_on_or_before(on(3, 31));
    let end = if y >= 1996 {
        sunday_on_or_before(on(10, 31))
    } else {
        sunday_on_or_before(on(10, 28))
    };
    // At 23:xx, on or after the day BST starts (01:00 UTC) and before the day it ends.
    if start <= date && date < end {
        Date::from_days(date.to_days() + 1)
    } else {
        date
    }
}

/// A date matcher: [`DateFormat::match_date`], or in tests the reference
/// backtracking one.
type Matcher = fn(&DateFormat, &str, i32, &mut bool) -> Option<Date>;

/// Normalises a date of birth.
///
/// The trimmed value is tried against `formats` in order
/// ([`default_date_formats`] if empty); a trailing time of day after a space
/// or `T` is ignored (`2015-03-12 00:00:00`, `12/03/2015 00:00`,
/// `2015-03-12T00:00:00Z`). Two-digit years (`%y`) are windowed on
/// `today.year`. If nothing parses: `ImpossibleDate` when the value has the
/// shape of a date but the day or month is out of range (`31/02/2015`,
/// `2015-13-01`), else `BadFormat`. Dates before [`MIN_DATE_OF_BIRTH`] are
/// `BeforeMinDate`; dates after `today` are `InFuture`.
pub fn date_of_birth(raw: &str, formats: &[DateFormat], today: Date) -> Normalised<Date> {
    match prepare(&visible(raw)) {
        Ok(NOT_A_TIME) => Ok(None),
        Ok(s) => prepared_date_of_birth(s, formats, today, DateFormat::match_date),
        Err(e) => early(e),
    }
}

/// [`date_of_birth`] of a value already through the prelude, with `matcher`
/// trying one format.
fn prepared_date_of_birth(
    s: &str,
    formats: &[DateFormat],
    today: Date,
    matcher: Matcher,
) -> Normalised<Date> {
    let formats = if formats.is_empty() {
        default_formats()
    } else {
        formats
    };
    let pivot = today.year;
    let mut shape = false;
    // The last date of birth that is not in the future.
    let mut latest = today;
    // The first date any format gives for `s`; sets `*shape` if some format
    // matched the shape of `s` but not with a real date.
    let parse_any =
        |s: &str, shape: &mut bool| formats.iter().find_map(|f| matcher(f, s, pivot, shape));
    let parsed = parse_any(s, &mut shape).or_else(|| {
        s.char_indices()
            .filter(|&(_, c)| matches!(c, ' ' | 'T' | 't' | ':'))
            .find_map(|(i, _)| {
                // The separator is one ASCII byte, so i + 1 is a boundary.
                let (date, time) = (s[..i].trim_end(), s[i + 1..].trim_start());
                let time = time_suffix(time).filter(|_| !date.is_empty())?;
                let d = parse_any(date, &mut shape)?;
                Some(if time.utc {
                    let uk = uk_date_of_utc(d, time.hour, time.minute);
                    // Past 23:00 UTC in summer the UK is already on the next day.
                    latest = Date::from_days(today.to_days() + i64::from(uk != d));
                    uk
                } else {
                    d
                })
            })
    });
    match parsed {
        None if shape => Err(Invalid::ImpossibleDate),
        None => Err(Invalid::BadFormat),
        Some(d) if d < MIN_DATE_OF_BIRTH => Err(Invalid::BeforeMinDate),
        Some(d) if d > latest => Err(Invalid::InFuture),
        Some(d) => Ok(Some(d)),
    }
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    fn some(s: &str) -> Normalised<String> {
        Ok(Some(s.to_owned()))
    }

    // ---- Invalid ---------------------------------------------------------

    #[test]
    fn invalid_codes_are_stable_and_unique() {
        let codes: Vec<&str> = Invalid::ALL.iter().map(|i| i.code()).collect();
        assert_eq!(
            codes,
            [
                "too_long",
                "no_letters",
                "bad_format",
                "bad_check_digit",
                "wrong_length",
                "before_min_date",
                "in_future",
                "impossible_date",
                "unknown_code"
            ]
        );
        for i in Invalid::ALL {
            let text = i.to_string();
            assert!(!text.is_empty());
            assert!(!text.contains('{'), "{text}");
        }
        assert_eq!(Invalid::TooLong.to_string(), "is longer than 256 bytes");
        assert_eq!(
            Invalid::BeforeMinDate.to_string(),
            "is before the earliest accepted date 1990-01-01"
        );
    }

    #[test]
    fn null_markers() {
        for m in [
            "",
            "-",
            "--",
            ".",
            "?",
            "NULL",
            "null",
            "None",
            "N/A",
            "n/a",
            "NA",
            "nk",
            "N/K",
            "Not Known",
            "UNKNOWN",
            "unk",
            "not stated",
            "TBC",
            "xx",
            "nan",
            "NaN",
            "<NA>",
            "#N/A",
            "#null!",
            "(blank)",
        ] {
            assert!(is_null_marker(m), "{m:?}");
            assert_eq!(name(m), Ok(None), "{m:?}");
            assert_eq!(postcode(m), Ok(None), "{m:?}");
            assert_eq!(nhs_number(m), Ok(None), "{m:?}");
            assert_eq!(upn(m), Ok(None), "{m:?}");
            assert_eq!(date_of_birth(m, &[], Date::today_utc()), Ok(None), "{m:?}");
            let padded = format!("  {m}\t");
            assert_eq!(name(&padded), Ok(None), "{padded:?}");
        }
        // pandas' missing date, as written, in date fields; elsewhere the name Nat.
        assert_eq!(date_of_birth(" NaT ", &[], Date::today_utc()), Ok(None));
        assert!(date_of_birth("NAT", &[], Date::today_utc()).is_err());
        assert_eq!(name("NaT"), some("NAT"));
        for not in [
            "NOTKNOWN", "N", "NANA", "NULLS", "X", "XXX", "---", "#N/A!", "BLANK", "Nan", "NAN",
            "nAn",
        ] {
            assert!(!is_null_marker(not), "{not:?}");
        }
        // pandas' `nan` is missing everywhere, the given name Nan is a name.
        assert_eq!(name("Nan"), some("NAN"));
        assert_eq!(name(" NAN"), some("NAN"));
        assert_eq!(free_text(" nan "), None);
        assert_eq!(free_text("Nan"), Some("NAN".into()));
    }

    #[test]
    fn too_long_is_checked_first_and_fast() {
        let huge = "é".repeat(512 * 1024); // 1 MiB, non-ASCII
        let start = Instant::now();
        for _ in 0..1000 {
            assert_eq!(name(&huge), Err(Invalid::TooLong));
            assert_eq!(postcode(&huge), Err(Invalid::TooLong));
            assert_eq!(nhs_number(&huge), Err(Invalid::TooLong));
            assert_eq!(upn(&huge), Err(Invalid::TooLong));
            assert_eq!(
                date_of_birth(&huge, &[], Date::today_utc()),
                Err(Invalid::TooLong)
            );
        }
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
        let spaces = " ".repeat(MAX_FIELD_BYTES + 1);
        assert_eq!(name(&spaces), Err(Invalid::TooLong));
        let exact = "a".repeat(MAX_FIELD_BYTES);
        assert_eq!(name(&exact), Ok(Some("A".repeat(MAX_FIELD_BYTES))));
    }

    // ---- Names ------------------------------------------------------------

    #[test]
    fn names_ascii() {
        assert_eq!(name("Smith"), some("SMITH"));
        assert_eq!(name("O'Brien"), some("OBRIEN"));
        assert_eq!(name("o`brien"), some("OBRIEN"));
        assert_eq!(name("Smith-Jones"), some("SMITH JONES"));
        assert_eq!(name("  mary   jane "), some("MARY JANE"));
        assert_eq!(name("St. John"), some("ST JOHN"));
        assert_eq!(name("Mc Donald"), some("MC DONALD"));
        assert_eq!(name("smith,  john"), some("SMITH JOHN"));
        assert_eq!(name("a/b_c\\d"), some("A B C D"));
        assert_eq!(name("Henry 8th"), some("HENRY TH"));
        assert_eq!(name("--Jane--"), some("JANE"));
        assert_eq!(name("'Jane'"), some("JANE"));
        assert_eq!(name("jane\t\r\nann"), some("JANE ANN"));
    }

    #[test]
    fn names_diacritics_and_special_letters() {
        assert_eq!(name("Zoë"), some("ZOE"));
        assert_eq!(name("Chloé"), some("CHLOE"));
        assert_eq!(name("Seán"), some("SEAN"));
        assert_eq!(name("Siân"), some("SIAN"));
        assert_eq!(name("Ştefan"), some("STEFAN"));
        assert_eq!(name("Łukasz"), some("LUKASZ"));
        assert_eq!(name("Nguyễn"), some("NGUYEN"));
        assert_eq!(name("Đặng"), some("DANG"));
        assert_eq!(name("Søren Ørsted"), some("SOREN ORSTED"));
        assert_eq!(name("Þórður"), some("THORDUR"));
        assert_eq!(name("Weiß"), some("WEISS"));
        assert_eq!(name("Ægir"), some("AEGIR"));
        assert_eq!(name("Œdipe"), some("OEDIPE"));
        assert_eq!(name("Yıldız"), some("YILDIZ"));
        assert_eq!(name("İlkay"), some("ILKAY"));
        assert_eq!(name("Paŀla"), some("PALLA"));
        assert_eq!(name("Ħaġar"), some("HAGAR"));
        assert_eq!(name("Ŧ"), some("T"));
        assert_eq!(name("François"), some("FRANCOIS"));
        assert_eq!(name("Müller-Lüdenscheidt"), some("MULLER LUDENSCHEIDT"));
        assert_eq!(name("Ａｎｎａ"), some("ANNA")); // fullwidth
        assert_eq!(name("ﬁona"), some("FIONA")); // ligature
        assert_eq!(name("\u{FEFF}Anna"), some("ANNA")); // BOM
        assert_eq!(name("Ann\u{00AD}marie"), some("ANNMARIE")); // soft hyphen
        assert_eq!(name("Anne\u{00A0}Marie"), some("ANNE MARIE")); // NBSP
        assert_eq!(name("Zoe\u{0308}"), some("ZOE")); // already decomposed
        assert_eq!(name("Anna–Maria"), some("ANNA MARIA")); // en dash
    }

    #[test]
    fn names_apostrophes_do_not_split() {
        for n in [
            "O'Brien",
            "O’Brien",
            "O‘Brien",
            "O`Brien",
            "O´Brien",
            "OʼBrien",
            "O＇Brien",
        ] {
            assert_eq!(name(n), some("OBRIEN"), "{n:?}");
        }
        assert_eq!(name("D’Souza"), some("DSOUZA"));
        assert_eq!(name("N’Golo"), some("NGOLO"));
        // Invisible characters pasted into a name do not split it either.
        for n in ["Al\u{200B}i", "Al\u{200D}i", "\u{FEFF}Ali", "A\u{00AD}li"] {
            assert_eq!(name(n), some("ALI"), "{n:?}");
        }
    }

    #[test]
    fn names_other_scripts_are_kept() {
        assert_eq!(name("محمد"), some("محمد"));
        assert_eq!(name("مُحَمَّد"), some("محمد")); // harakat are marks
        assert_eq!(name("王 秀英"), some("王 秀英"));
        assert_eq!(name("Ольга"), some("ОЛЬГА"));
        assert_eq!(name("Σωκράτης"), some("ΣΩΚΡΑΤΗΣ"));
        assert_eq!(name("Άννα"), some("ΑΝΝΑ"));
        let ar = name("محمد").unwrap().unwrap();
        assert!(ar.chars().all(char::is_alphabetic));
    }

    #[test]
    fn names_without_letters() {
        assert_eq!(name("   "), Ok(None));
        assert_eq!(name(""), Ok(None));
        assert_eq!(name("12345"), Err(Invalid::NoLetters));
        assert_eq!(name("---"), Err(Invalid::NoLetters));
        assert_eq!(name("''"), Err(Invalid::NoLetters));
        assert_eq!(name("٣٤"), Err(Invalid::NoLetters)); // Arabic-Indic digits
        assert_eq!(name("😀"), Err(Invalid::NoLetters));
    }

    #[test]
    fn names_placeholders_and_normalised_nulls() {
        for p in [
            "BABY",
            "baby",
            "Baby Boy",
            "BABY GIRL",
            "Baby-Girl",
            "baby girl 2",
            "Infant",
            "TWIN",
            "Twin A",
            "twin b",
            "Twin 1",
            "TWIN 2",
            "Twin-1",
            "Triplet C",
            "Baby of Smith",
            "Unnamed",
            "Newborn Male",
            "n.k.",
            "Not-Known",
            "n. a.",
            "unknown!",
            // Unborn children in social care; case systems' fillers; Excel's errors.
            "Unborn",
            "UNBORN BABY",
            "Unborn Child",
            "Unknown Male",
            "unknown female",
            "Not Recorded",
            "NOT GIVEN",
            "Refused",
            "withheld",
            "No Name",
            "Anonymous",
            "#NAME?",
            "#VALUE!",
        ] {
            assert_eq!(name(p), Ok(None), "{p:?}");
        }
        assert_eq!(name("Unborn Smith"), some("UNBORN SMITH"));
        assert_eq!(name("Baby Jane"), some("BABY JANE"));
        assert_eq!(name("Babs"), some("BABS"));
        assert_eq!(name("Twinkle"), some("TWINKLE"));
        assert_eq!(name("Jane Baby"), some("JANE BABY"));
    }

    #[test]
    fn names_expanding_past_the_limit_are_too_long() {
        // U+FDFA expands to 18 letters and spaces under NFKD.
        let s = "\u{FDFA}".repeat(80); // 240 bytes in
        assert!(s.len() <= MAX_FIELD_BYTES);
        assert_eq!(name(&s), Err(Invalid::TooLong));
    }

    /// The output conditions every `Ok(Some(v))` from `name` must meet.
    fn assert_canonical_name(input: &str, v: &str) {
        assert!(!v.is_empty(), "{input:?}");
        assert!(
            !v.starts_with(' ') && !v.ends_with(' '),
            "{input:?} -> {v:?}"
        );
        assert!(!v.contains("  "), "{input:?} -> {v:?}");
        assert!(
            v.chars()
                .all(|c| c == ' ' || (c.is_alphabetic() && !c.is_lowercase())),
            "{input:?} -> {v:?}"
        );
        assert_eq!(name(v), Ok(Some(v.to_owned())), "{input:?} -> {v:?}");
    }

    #[test]
    fn names_every_single_char_is_canonical_and_idempotent() {
        // Exhaustive over all Unicode scalar values, alone and between
        // letters (so separators and apostrophes are exercised too).
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            for s in [c.to_string(), format!("a{c}b")] {
                match name(&s) {
                    Ok(Some(v)) => assert_canonical_name(&s, &v),
                    Ok(None) | Err(Invalid::NoLetters | Invalid::TooLong) => {}
                    Err(e) => panic!("{s:?}: {e:?}"),
                }
            }
        }
    }

    #[test]
    fn names_ascii_fast_path_matches_general_path() {
        // Every ASCII byte, in the middle of a word, through both paths.
        for b in 0u8..0x80 {
            let ascii = format!("ab{}cd", char::from(b));
            let mut general = NameBuf {
                out: String::new(),
                pending_sep: false,
            };
            for c in ascii.trim().chars() {
                general.push_char(c);
            }
            let expected = name(&ascii).map(|o| o.unwrap_or_default());
            assert_eq!(Ok(general.out), expected, "{b}");
        }
    }

    // ---- Postcodes ---------------------------------------------------------

    #[test]
    fn postcodes_valid() {
        for (raw, canon) in [
            ("sw1a1aa", "SW1A 1AA"),
            ("SW1A 1AA", "SW1A 1AA"),
            (" ls6  2ab ", "LS6 2AB"),
            ("M1 1AE", "M1 1AE"),
            ("b33 8th", "B33 8TH"),
            ("CR2 6XH", "CR2 6XH"),
            ("DN55 1PT", "DN55 1PT"),
            ("W1A 0AX", "W1A 0AX"),
            ("EC1A 1BB", "EC1A 1BB"),
            ("N1C 4AG", "N1C 4AG"),
            ("E1W 1AA", "E1W 1AA"),
            ("NW1W 8JN", "NW1W 8JN"),
            ("gir 0aa", "GIR 0AA"),
            ("GIR0AA", "GIR 0AA"),
            ("S W 1 A 1 A A", "SW1A 1AA"),
            ("sw1a\u{00A0}1aa", "SW1A 1AA"),
            ("BT7 1NN", "BT7 1NN"),
            ("CF10 3NQ", "CF10 3NQ"),
            ("EH1 1YZ", "EH1 1YZ"),
        ] {
            assert_eq!(postcode(raw), some(canon), "{raw:?}");
        }
    }

    #[test]
    fn postcodes_invalid() {
        use Invalid::*;
        for (raw, err) in [
            ("SW1A", WrongLength),
            ("SW1", WrongLength),
            ("SW1A 1AAA", WrongLength),
            ("SW1AB 1AA", WrongLength),
            ("SW1A-1AA", BadFormat),
            ("SW1A 1A@", BadFormat),
            ("SW1Ä 1AA", BadFormat),
            ("QA1 1AA", BadFormat), // Q first
            ("VA1 1AA", BadFormat), // V first
            ("XA1 1AA", BadFormat), // X first
            ("AI1 1AA", BadFormat), // I second
            ("AJ1 1AA", BadFormat), // J second
            ("AZ1 1AA", BadFormat), // Z second
            ("W1I 1AA", BadFormat), // A9A third letter not allowed
            ("W1Q 1AA", BadFormat),
            ("EC1C 1AA", BadFormat), // AA9A fourth letter not allowed
            ("EC1I 1AA", BadFormat),
            ("SW1A 1CA", BadFormat), // inward letters
            ("SW1A 1AI", BadFormat),
            ("SW1A 1AK", BadFormat),
            ("SW1A 1MA", BadFormat),
            ("SW1A 1OA", BadFormat),
            ("SW1A 1AV", BadFormat),
            ("SW1A AAA", BadFormat), // inward digit
            ("1W1A 1AA", BadFormat),
            ("S11A 1AA", BadFormat), // A99A not a format
            ("SWAA 1AA", BadFormat),
            ("SW1A1A", BadFormat),
            ("GIR 0AB", BadFormat),
            ("12345", BadFormat),
            ("BFPO 57", BadFormat),
            ("ASCN 1ZZ", BadFormat),
            ("ZZ99 3V", BadFormat), // a pseudo-postcode is seven characters
        ] {
            assert_eq!(postcode(raw), Err(err), "{raw:?}");
        }
    }

    /// No fixed abode and the NHS pseudo-postcodes stand for no address: missing, not invalid.
    #[test]
    fn postcode_placeholders_are_missing() {
        for raw in ["NFA", "nfa", " N F A ", "ZZ99 3VZ", "zz993wz", "ZZ99 3CZ"] {
            assert_eq!(postcode(raw), Ok(None), "{raw:?}");
            assert_eq!(reference::postcode(raw), Ok(None), "{raw:?}");
        }
    }

    // ---- NHS numbers ---------------------------------------------------------

    /// Independent check-digit computation used to build test vectors.
    fn nhs_check(first9: &str) -> Option<u32> {
        let sum: u32 = first9
            .chars()
            .enumerate()
            .map(|(i, c)| c.to_digit(10).unwrap() * (10 - i as u32))
            .sum();
        match 11 - sum % 11 {
            11 => Some(0),
            10 => None,
            c => Some(c),
        }
    }

    #[test]
    fn nhs_numbers_valid() {
        assert_eq!(nhs_number("9434765919"), some("9434765919"));
        assert_eq!(nhs_number("943 476 5919"), some("9434765919"));
        assert_eq!(nhs_number("943-476-5919"), some("9434765919"));
        assert_eq!(nhs_number("943.476.5919"), some("9434765919"));
        assert_eq!(
            nhs_number(" 943\u{2013}476\u{2013}5919 "),
            some("9434765919")
        );
        // Test-range numbers (999...) computed independently; check
        // digits 0 (remainder 0) included.
        let mut found = 0;
        for n in 999_000_000u32..999_000_200 {
            let first9 = n.to_string();
            match nhs_check(&first9) {
                Some(c) => {
                    let full = format!("{first9}{c}");
                    assert_eq!(nhs_number(&full), Ok(Some(full.clone())));
                    found += 1;
                }
                None => {
                    for c in 0..10 {
                        let full = format!("{first9}{c}");
                        assert_eq!(nhs_number(&full), Err(Invalid::BadCheckDigit), "{full}");
                    }
                }
            }
        }
        assert!(found > 150);
        assert_eq!(nhs_number("9990000026"), some("9990000026"));
        // Through a spreadsheet or pandas as a float: the `.0` is not a digit.
        assert_eq!(nhs_number("9434765919.0"), some("9434765919"));
        assert_eq!(nhs_number(" 9434765919.0 "), some("9434765919"));
        assert_eq!(nhs_number("943476591.0"), Err(Invalid::WrongLength));
        assert_eq!(nhs_number("9434765919.00"), Err(Invalid::WrongLength));
    }

    #[test]
    fn nhs_numbers_single_digit_changes_fail() {
        let good = b"9434765919";
        for pos in 0..10 {
            for d in b'0'..=b'9' {
                if d == good[pos] {
                    continue;
                }
                let mut bad = *good;
                bad[pos] = d;
                let bad = std::str::from_utf8(&bad).unwrap();
                assert_eq!(nhs_number(bad), Err(Invalid::BadCheckDigit), "{bad}");
            }
        }
        // Adjacent transposition.
        assert_eq!(nhs_number("4934765919"), Err(Invalid::BadCheckDigit));
    }

    #[test]
    fn nhs_numbers_invalid() {
        use Invalid::*;
        assert_eq!(nhs_number("943476591"), Err(WrongLength));
        assert_eq!(nhs_number("94347659190"), Err(WrongLength));
        assert_eq!(nhs_number("943476591X"), Err(BadFormat));
        assert_eq!(nhs_number("NHS9434765919"), Err(BadFormat));
        assert_eq!(nhs_number("９４３４７６５９１９"), Err(BadFormat)); // fullwidth digits
        assert_eq!(nhs_number("1234567890"), Err(BadCheckDigit)); // check would be 10
        assert_eq!(nhs_number("9434765918"), Err(BadCheckDigit));
    }

    #[test]
    fn nhs_numbers_repeated_digits_are_missing() {
        for d in '0'..='9' {
            let s: String = std::iter::repeat_n(d, 10).collect();
            assert_eq!(nhs_check(&s[..9]), d.to_digit(10), "passes mod 11");
            assert_eq!(nhs_number(&s), Ok(None), "{s}");
        }
        assert_eq!(nhs_number("000 000 0000"), Ok(None));
    }

    #[test]
    fn invisible_characters_in_identifiers_and_dates_are_dropped() {
        // A zero-width space, word joiner, direction mark, soft hyphen or BOM pasted into an
        // identifier or a date: nobody sees it, so it neither invalidates the value nor splits it.
        for z in ["\u{200B}", "\u{2060}", "\u{200E}", "\u{00AD}", "\u{FEFF}"] {
            let nhs = format!("943{z} 476 5919{z}");
            assert_eq!(nhs_number(&nhs), some("9434765919"), "{nhs:?}");
            let pc = format!("{z}LS6{z} 2AB");
            assert_eq!(postcode(&pc), some("LS6 2AB"), "{pc:?}");
            let u = format!("H8012{z}00001001");
            assert_eq!(upn(&u), some("H801200001001"), "{u:?}");
            let d = format!("12/03/{z}2015");
            assert_eq!(dob(&d), ok_date(2015, 3, 12), "{d:?}");
            // Only invisible characters, or one around a null marker: missing.
            assert_eq!(postcode(z), Ok(None), "{z:?}");
            assert_eq!(nhs_number(&format!("N/A{z}")), Ok(None), "{z:?}");
        }
        // Visible characters other than separators still make the value invalid.
        assert_eq!(nhs_number("943\u{00B7}476 5919"), Err(Invalid::BadFormat));
        assert_eq!(postcode("LS6\u{00B7}2AB"), Err(Invalid::BadFormat));
        assert!(matches!(visible("LS6 2AB"), Cow::Borrowed(_)));
        assert!(matches!(visible("Zoë"), Cow::Borrowed(_)));
    }

    // ---- UPNs ----------------------------------------------------------------

    #[test]
    fn upns_published_examples() {
        // DfE UPN guidance examples (permanent and temporary).
        assert_eq!(upn("H801200001001"), some("H801200001001"));
        assert_eq!(upn("G80120000101A"), some("G80120000101A"));
        assert_eq!(upn("Z801200001001"), Err(Invalid::BadCheckDigit));
        // python-stdnum gb.upn doctests.
        assert_eq!(upn("B801200005001"), some("B801200005001"));
        assert_eq!(upn("A801200005001"), Err(Invalid::BadCheckDigit));
        assert_eq!(upn("X80120000A001"), Err(Invalid::BadFormat));
        // CIN validator rule 1510 test data.
        assert_eq!(upn("A950000178301"), some("A950000178301"));
        assert_eq!(upn("H243278544154"), some("H243278544154"));
        assert_eq!(upn("R247962919251"), Err(Invalid::BadCheckDigit));
        assert_eq!(upn("X428558133462"), Err(Invalid::BadCheckDigit));
    }

    #[test]
    fn upns_formatting_and_errors() {
        use Invalid::*;
        assert_eq!(upn(" h801 2000 01001 "), some("H801200001001"));
        assert_eq!(upn("g80120000101a"), some("G80120000101A"));
        assert_eq!(upn("H80120000100"), Err(WrongLength));
        assert_eq!(upn("H8012000010011"), Err(WrongLength));
        assert_eq!(upn("H801-2000-01001"), Err(BadFormat));
        assert_eq!(upn("8801200001001"), Err(BadFormat)); // no check letter
        assert_eq!(upn("H80120000100I"), Err(BadFormat)); // I not allowed last
        assert_eq!(upn("H80120000100O"), Err(BadFormat));
        assert_eq!(upn("H80120000100S"), Err(BadFormat));
        assert_eq!(upn("O801200001001"), Err(BadCheckDigit));
        assert_eq!(upn("HÉ01200001001"), Err(BadFormat));
        // Every other check letter fails.
        for l in b'A'..=b'Z' {
            if l != b'H' {
                let s = format!("{}801200001001", char::from(l));
                assert_eq!(upn(&s), Err(BadCheckDigit), "{s}");
            }
        }
    }

    // ---- Dates of birth ----------------------------------------------------

    fn today() -> Date {
        Date::new(2026, 11, 22).unwrap()
    }

    fn dob(s: &str) -> Normalised<Date> {
        date_of_birth(s, &[], today())
    }

    fn ok_date(y: i32, m: u8, d: u8) -> Normalised<Date> {
        Ok(Date::new(y, m, d))
    }

    #[test]
    fn dob_default_formats() {
        assert_eq!(dob("2015-03-12"), ok_date(2015, 3, 12));
        assert_eq!(dob("12/03/2015"), ok_date(2015, 3, 12));
        assert_eq!(dob("12-MAR-2015"), ok_date(2015, 3, 12));
        assert_eq!(dob("12-mar-2015"), ok_date(2015, 3, 12));
        assert_eq!(dob("1-Sept-2015"), ok_date(2015, 9, 1));
        assert_eq!(dob("1/3/2015"), ok_date(2015, 3, 1));
        assert_eq!(dob("  2015-03-12\t"), ok_date(2015, 3, 12));
        assert_eq!(dob("2016-02-29"), ok_date(2016, 2, 29));
        assert_eq!(dob("29/02/2016"), ok_date(2016, 2, 29));
    }

    #[test]
    fn dob_time_suffixes_are_ignored() {
        for s in [
            "2015-03-12 00:00:00",
            "2015-03-12T00:00:00",
            "2015-03-12T00:00:00Z",
            "2015-03-12T00:00:00.000Z",
            "2015-03-12 00:00:00.0000000",
            "2015-03-12T10:30:05+01:00",
            "2015-03-12 10:30:05 +0000",
            "12/03/2015 00:00",
            "12/03/2015 0:00",
            "12/03/2015 12:00 AM",
            "12/03/2015  00:00:00",
            "12-OCT-2015 00:00",
        ] {
            let expected = if s.contains("OCT") {
                ok_date(2015, 10, 12)
            } else {
                ok_date(2015, 3, 12)
            };
            assert_eq!(dob(s), expected, "{s:?}");
        }
        assert_eq!(dob("12-OCT-2015"), ok_date(2015, 10, 12));
        assert_eq!(dob("2015-03-12 junk"), Err(Invalid::BadFormat));
        assert_eq!(dob("2015-03-12 00"), Err(Invalid::BadFormat));
        assert_eq!(dob("2015-03-12T"), Err(Invalid::BadFormat));
        assert_eq!(dob("00:00"), Err(Invalid::BadFormat));
        assert_eq!(dob("31/02/2015 00:00"), Err(Invalid::ImpossibleDate));
        // Oracle's TIMESTAMP (dots, seconds required) and SAS's DATETIME (a colon after the
        // date).
        let f = |fmt: &str| [DateFormat::compile(fmt).unwrap()];
        let today = Date::today_utc();
        for (s, fmt) in [
            ("15-JUN-10 12.00.00.000000000 AM", "%d-%b-%y"),
            ("15-JUN-10 00.00.00", "%d-%b-%y"),
            ("15JUN2010:00:00:00", "%d%b%Y"),
            ("15JUN2010:00:00:00.000", "%d%b%Y"),
            ("15/06/2010:00:00", "%d/%m/%Y"),
        ] {
            assert_eq!(
                date_of_birth(s, &f(fmt), today),
                ok_date(2010, 6, 15),
                "{s:?}"
            );
        }
        assert_eq!(
            date_of_birth("15-JUN-10 12.00", &f("%d-%b-%y"), today),
            Err(Invalid::BadFormat)
        );
        assert_eq!(
            date_of_birth("15-JUN-10 12.00:00", &f("%d-%b-%y"), today),
            Err(Invalid::BadFormat)
        );
    }

    /// A UTC time (`Z`, or an offset of zero) is read as the date in the UK: 23:xx UTC in
    /// summer is the next day's small hours in BST. Any other time is read as written.
    #[test]
    fn dob_utc_times_are_read_as_the_uk_date() {
        for (s, day) in [
            ("2010-07-07T23:00:00Z", 8), // midnight BST, stored as UTC
            ("2010-07-07T23:59:59.999Z", 8),
            ("2010-07-07 23:00:00 +00:00", 8),
            ("2010-07-07T23:00:00+0000", 8),
            ("2010-07-07T22:59:00Z", 7),      // 23:59 BST
            ("2010-07-07T23:00:00", 7),       // no zone: as written
            ("2010-07-07T23:00:00+01:00", 7), // the writer's own date
            ("2010-07-07T23:00:00-00:30", 7),
        ] {
            assert_eq!(dob(s), ok_date(2010, 7, day), "{s:?}");
        }
        // Winter: UTC is GMT.
        assert_eq!(dob("2010-01-07T23:00:00Z"), ok_date(2010, 1, 7));
        // The changes, at 01:00 UTC on the last Sundays of March and October (2010: 28 March,
        // 31 October), and in 1990-1995 on the first Sunday from 22 October (1993: 24th).
        assert_eq!(dob("2010-03-27T23:00:00Z"), ok_date(2010, 3, 27));
        assert_eq!(dob("2010-03-28T23:00:00Z"), ok_date(2010, 3, 29));
        assert_eq!(dob("2010-10-30T23:00:00Z"), ok_date(2010, 10, 31));
        assert_eq!(dob("2010-10-31T23:00:00Z"), ok_date(2010, 10, 31));
        assert_eq!(dob("1993-10-23T23:00:00Z"), ok_date(1993, 10, 24));
        assert_eq!(dob("1993-10-24T23:00:00Z"), ok_date(1993, 10, 24));
        assert_eq!(dob("1993-10-30T23:00:00Z"), ok_date(1993, 10, 30));
        // Run at 23:30 UTC on 7 July 2026 (00:30 BST on the 8th): a birth 20 minutes ago is
        // not in the future.
        let today = Date::new(2026, 7, 7).unwrap();
        assert_eq!(
            date_of_birth("2026-07-07T23:10:00Z", &[], today),
            ok_date(2026, 7, 8)
        );
        assert_eq!(
            date_of_birth("2026-07-08T00:10:00Z", &[], today),
            Err(Invalid::InFuture)
        );
        assert_eq!(
            date_of_birth("2026-07-08 00:10:00", &[], today),
            Err(Invalid::InFuture)
        );
        // 31 Dec 1989 23:00 UTC stays in 1989 (winter): before the minimum date.
        assert_eq!(dob("1989-12-31T23:00:00Z"), Err(Invalid::BeforeMinDate));
    }

    /// [`uk_date_of_utc`] agrees with the UK's clock changes as the tz database gives them
    /// (Europe/London, 1990-2030: the dates of the last hour before each change).
    #[test]
    fn uk_summer_time_rule_matches_the_tz_database() {
        // (year, BST starts, BST ends): days of March and October, from zoneinfo.
        let changes = [
            (1990, 25, 28),
            (1991, 31, 27),
            (1992, 29, 25),
            (1993, 28, 24),
            (1994, 27, 23),
            (1995, 26, 22),
            (1996, 31, 27),
            (2000, 26, 29),
            (2015, 29, 25),
            (2020, 29, 25),
            (2024, 31, 27),
            (2026, 29, 25),
            (2030, 31, 27),
        ];
        for (y, start, end) in changes {
            let d = |m, day| Date::new(y, m, day).unwrap();
            let next = |m, day| Date::from_days(d(m, day).to_days() + 1);
            assert_eq!(
                uk_date_of_utc(d(3, start - 1), 23, 0),
                d(3, start - 1),
                "{y}"
            );
            assert_eq!(uk_date_of_utc(d(3, start), 23, 0), next(3, start), "{y}");
            assert_eq!(
                uk_date_of_utc(d(10, end - 1), 23, 0),
                next(10, end - 1),
                "{y}"
            );
            assert_eq!(uk_date_of_utc(d(10, end), 23, 0), d(10, end), "{y}");
        }
    }

    #[test]
    fn dob_errors() {
        use Invalid::*;
        assert_eq!(dob("2015-02-29"), Err(ImpossibleDate));
        assert_eq!(dob("31/02/2015"), Err(ImpossibleDate));
        assert_eq!(dob("2015-13-01"), Err(ImpossibleDate));
        assert_eq!(dob("00/00/0000"), Err(ImpossibleDate));
        assert_eq!(dob("31-Apr-2015"), Err(ImpossibleDate));
        assert_eq!(dob("12.03.2015"), Err(BadFormat));
        assert_eq!(dob("12/03/15"), Err(BadFormat));
        assert_eq!(dob("March 12 2015"), Err(BadFormat));
        assert_eq!(dob("20150312"), Err(BadFormat));
        assert_eq!(dob("12-Mrz-2015"), Err(BadFormat));
        assert_eq!(dob("1989-12-31"), Err(BeforeMinDate));
        assert_eq!(dob("1990-01-01"), ok_date(1990, 1, 1));
        assert_eq!(dob("1900-01-01"), Err(BeforeMinDate));
        assert_eq!(dob("2026-11-22"), ok_date(2026, 11, 22)); // today
        assert_eq!(dob("2026-11-23"), Err(InFuture));
        assert_eq!(dob("01/01/2099"), Err(InFuture));
    }

    #[test]
    fn dob_custom_formats_and_two_digit_years() {
        let fmts = [
            DateFormat::compile("%d.%m.%y").unwrap(),
            DateFormat::compile("%Y%m%d").unwrap(),
        ];
        let t = today();
        assert_eq!(date_of_birth("12.03.15", &fmts, t), ok_date(2015, 3, 12));
        assert_eq!(date_of_birth("12.03.95", &fmts, t), ok_date(1995, 3, 12));
        assert_eq!(date_of_birth("12.03.26", &fmts, t), ok_date(2026, 3, 12));
        // 27 -> 1927 with a 2026 pivot.
        assert_eq!(
            date_of_birth("12.03.27", &fmts, t),
            Err(Invalid::BeforeMinDate)
        );
        assert_eq!(date_of_birth("20150312", &fmts, t), ok_date(2015, 3, 12));
        // Custom formats replace the defaults.
        assert_eq!(
            date_of_birth("2015-03-12", &fmts, t),
            Err(Invalid::BadFormat)
        );
        assert_eq!(
            date_of_birth("30.02.15", &fmts, t),
            Err(Invalid::ImpossibleDate)
        );
    }

    // ---- Property tests ----------------------------------------------------

    /// A syntactically valid postcode (outward, inward) from the grammar.
    fn valid_postcode() -> impl Strategy<Value = String> {
        let first = "[A-PR-UWYZ]";
        let second = "[A-HK-Y]";
        let outward = prop_oneof![
            Just(format!("{first}[0-9]")),
            Just(format!("{first}[0-9][0-9]")),
            Just(format!("{first}{second}[0-9]")),
            Just(format!("{first}{second}[0-9][0-9]")),
            Just(format!("{first}[0-9][ABCDEFGHJKPSTUW]")),
            Just(format!("{first}{second}[0-9][ABEHMNPRVWXY]")),
        ];
        let inward = "[0-9][ABD-HJLNP-UW-Z]{2}";
        (
            outward.prop_flat_map(|re| proptest::string::string_regex(&re).unwrap()),
            proptest::string::string_regex(inward).unwrap(),
        )
            .prop_map(|(o, i)| format!("{o} {i}"))
    }

    proptest! {
        #[test]
        fn normalisers_never_panic(s in "\\PC{0,40}|.{0,300}") {
            let _ = name(&s);
            let _ = postcode(&s);
            let _ = nhs_number(&s);
            let _ = upn(&s);
            let _ = date_of_birth(&s, &[], today());
        }

        #[test]
        fn normalisers_never_panic_on_near_misses(
            s in "[0-9A-Za-z /:.\\-'’é ]{0,24}",
        ) {
            let _ = name(&s);
            let _ = postcode(&s);
            let _ = nhs_number(&s);
            let _ = upn(&s);
            let _ = date_of_birth(&s, &[], today());
        }

        #[test]
        fn name_is_idempotent_and_canonical(s in "\\PC{0,40}") {
            if let Ok(Some(v)) = name(&s) {
                assert_canonical_name(&s, &v);
            }
        }

        #[test]
        fn name_is_idempotent_on_latin_text(s in "[A-Za-zÀ-ɏ '’.\\-0-9]{0,40}") {
            if let Ok(Some(v)) = name(&s) {
                assert_canonical_name(&s, &v);
                prop_assert!(v.is_ascii() || !s.is_ascii());
            }
        }

        #[test]
        fn postcode_round_trips(pc in valid_postcode(), lower in any::<bool>(), spaces in 0usize..3) {
            let mut raw = pc.replace(' ', &" ".repeat(spaces));
            if lower {
                raw = raw.to_lowercase();
            }
            let canon = postcode(&raw).unwrap().unwrap();
            prop_assert_eq!(&canon, &pc);
            prop_assert_eq!(postcode(&canon), Ok(Some(canon.clone())));
        }

        #[test]
        fn postcode_output_is_canonical(s in "[A-Za-z0-9 ]{0,9}") {
            if let Ok(Some(c)) = postcode(&s) {
                prop_assert_eq!(postcode(&c), Ok(Some(c.clone())));
                prop_assert_eq!(c.replace(' ', ""), s.replace(' ', "").to_uppercase());
                prop_assert_eq!(c.len() - c.find(' ').unwrap(), 4);
            }
        }

        #[test]
        fn valid_nhs_numbers_accepted_and_single_digit_errors_caught(
            first9 in "[0-9]{9}", pos in 0usize..10, delta in 1u8..10,
        ) {
            if let Some(c) = nhs_check(&first9) {
                let full = format!("{first9}{c}");
                let repdigit = full.bytes().all(|b| b == full.as_bytes()[0]);
                if !repdigit {
                    prop_assert_eq!(nhs_number(&full), Ok(Some(full.clone())));
                }
                let mut bad = full.into_bytes();
                bad[pos] = b'0' + (bad[pos] - b'0' + delta) % 10;
                let bad = String::from_utf8(bad).unwrap();
                let repdigit = bad.bytes().all(|b| b == bad.as_bytes()[0]);
                if !repdigit {
                    prop_assert_eq!(nhs_number(&bad), Err(Invalid::BadCheckDigit));
                }
            }
        }

        #[test]
        fn upn_check_letter_round_trips(body in "[0-9]{11}([0-9]|[A-HJ-NP-RT-Z])") {
            let matching: Vec<char> = ('A'..='Z')
                .filter(|l| upn(&format!("{l}{body}")).is_ok())
                .collect();
            prop_assert_eq!(matching.len(), 1);
            prop_assert!(!matches!(matching[0], 'I' | 'O' | 'S'));
            let good = format!("{}{body}", matching[0]);
            prop_assert_eq!(upn(&good.to_lowercase()), Ok(Some(good.clone())));
        }

        #[test]
        fn dob_accepts_every_valid_date_in_range(
            n in MIN_DATE_OF_BIRTH.to_days()..=Date::new(2026, 11, 22).unwrap().to_days(),
            which in 0usize..3,
        ) {
            let d = Date::from_days(n);
            let months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
            let s = match which {
                0 => d.to_string(),
                1 => format!("{:02}/{:02}/{:04}", d.day, d.month, d.year),
                _ => format!("{}-{}-{:04}", d.day, months[usize::from(d.month) - 1], d.year),
            };
            prop_assert_eq!(dob(&s), Ok(Some(d)));
            prop_assert_eq!(dob(&format!("{s} 00:00:00")), Ok(Some(d)));
        }
    }
}
