//! A small proleptic-Gregorian civil date type, UTC timestamps, and a
//! compiled strftime-subset date parser.
//!
//! Hand-written (no chrono/time): the conversions between civil dates and a
//! day count use Howard Hinnant's `days_from_civil` / `civil_from_days`
//! algorithms (<https://howardhinnant.github.io/date_algorithms.html>).
//! Nothing in this module panics, whatever the input.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar date in the proleptic Gregorian calendar.
///
/// Ordering is chronological (year, then month, then day). Values built with
/// [`Date::new`] or [`Date::from_days`] are always valid; the fields are
/// public, so a hand-built value may not be, but no method panics on one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Date {
    /// Year (astronomical numbering: 0 is 1 BC).
    pub year: i32,
    /// Month, 1 (January) to 12 (December).
    pub month: u8,
    /// Day of the month, starting at 1.
    pub day: u8,
}

/// Whether `year` is a Gregorian leap year.
const fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Number of days in `month` (1..=12) of `year`; 0 for an invalid month.
const fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Hinnant's `days_from_civil`, in `i64` so that it cannot overflow for any
/// `i32` year and any `u8` month/day (out-of-range months or days give a
/// meaningless but finite result).
const fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let m = month as i64;
    let d = day as i64;
    let y = year as i64 - if m <= 2 { 1 } else { 0 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365] for valid input
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Smallest day count representable as a [`Date`] (year `i32::MIN`).
const MIN_DAYS: i64 = days_from_civil(i32::MIN, 1, 1);
/// Largest day count representable as a [`Date`] (year `i32::MAX`).
const MAX_DAYS: i64 = days_from_civil(i32::MAX, 12, 31);

impl Date {
    /// Builds a date, returning `None` unless `month` is 1..=12 and `day` is
    /// a real day of that month (29 February only in leap years).
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        if day >= 1 && day <= days_in_month(i64::from(year), month) {
            Some(Date { year, month, day })
        } else {
            None
        }
    }

    /// The date `days_since_1970_01_01` days after 1970-01-01 (negative for
    /// earlier dates). Values beyond the `i32` year range saturate to the
    /// first or last representable day.
    pub fn from_days(days_since_1970_01_01: i64) -> Date {
        let z = days_since_1970_01_01.clamp(MIN_DAYS, MAX_DAYS) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097; // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
        let mp = (5 * doy + 2) / 153; // [0, 11]
        let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
        let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
        let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
        Date {
            // The clamp above keeps the year inside the i32 range.
            year: i32::try_from(year).unwrap_or(if year < 0 { i32::MIN } else { i32::MAX }),
            month: u8::try_from(month).unwrap_or(1),
            day: u8::try_from(day).unwrap_or(1),
        }
    }

    /// Days since 1970-01-01 (negative before it).
    pub fn to_days(self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// Today's date in UTC, from the system clock.
    pub fn today_utc() -> Date {
        Date::from_days(unix_now_secs().div_euclid(86_400))
    }

    /// The date `months` calendar months later (earlier if negative). The day
    /// is clamped to the end of the target month, so 31 January plus one
    /// month is 28 (or 29) February. Saturates at the ends of the `i32` year
    /// range.
    pub fn add_months(self, months: i32) -> Date {
        let month0 = i64::from(self.month.clamp(1, 12)) - 1;
        let total = i64::from(self.year) * 12 + month0 + i64::from(months);
        let year = total.div_euclid(12);
        let Ok(year) = i32::try_from(year) else {
            return if year < 0 {
                Date {
                    year: i32::MIN,
                    month: 1,
                    day: 1,
                }
            } else {
                Date {
                    year: i32::MAX,
                    month: 12,
                    day: 31,
                }
            };
        };
        // rem_euclid(12) is in 0..12, so the month is 1..=12.
        let month = u8::try_from(total.rem_euclid(12) + 1).unwrap_or(1);
        let day = self.day.clamp(1, days_in_month(i64::from(year), month));
        Date { year, month, day }
    }

    /// Parses a strict ISO 8601 calendar date `YYYY-MM-DD` (exactly ten
    /// characters, zero-padded, and a real date).
    pub fn parse_iso(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = ascii_number(&b[0..4])?;
        let month = ascii_number(&b[5..7])?;
        let day = ascii_number(&b[8..10])?;
        Date::new(
            i32::try_from(year).ok()?,
            u8::try_from(month).ok()?,
            u8::try_from(day).ok()?,
        )
    }

    /// [`Date::parse_iso`] for command-line arguments, saying why a text is refused: it is not
    /// written `YYYY-MM-DD`, or it is but names a day that does not exist (`2026-02-30`).
    pub fn parse_iso_explained(s: &str) -> Result<Date, String> {
        if let Some(date) = Date::parse_iso(s) {
            return Ok(date);
        }
        let b = s.as_bytes();
        let shaped = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
        let parts = if shaped {
            ascii_number(&b[0..4]).zip(ascii_number(&b[5..7]).zip(ascii_number(&b[8..10])))
        } else {
            None
        };
        let Some((year, (month, _))) = parts else {
            return Err("expected a date as YYYY-MM-DD".into());
        };
        let month = u8::try_from(month).unwrap_or(0);
        match MONTH_FULL.get(usize::from(month).wrapping_sub(1)) {
            Some((name, _)) => Err(format!(
                "that day does not exist: {}{} {year:04} has days 01 to {:02}",
                name[..1].to_uppercase(),
                &name[1..],
                days_in_month(i64::from(year), month)
            )),
            None => Err("that month does not exist: months are 01 to 12".into()),
        }
    }
}

impl fmt::Display for Date {
    /// Formats as `YYYY-MM-DD`, zero padded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Value of a non-empty run of ASCII digits (at most 9, so no overflow);
/// `None` if any byte is not a digit.
fn ascii_number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0')),
    )
}

/// Seconds since the Unix epoch (floor), negative if the clock is before it.
fn unix_now_secs() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            let floor_adjust = i64::from(before.subsec_nanos() > 0);
            (-secs).saturating_sub(floor_adjust)
        }
    }
}

/// The current UTC time as RFC 3339 with second precision, e.g.
/// `2026-11-22T10:30:05Z`.
pub fn now_rfc3339() -> String {
    rfc3339_from_unix(unix_now_secs())
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC with second
/// precision, e.g. `1970-01-01T00:00:00Z` for 0.
pub fn rfc3339_from_unix(secs: i64) -> String {
    let date = Date::from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Why a date format string could not be compiled. The format string is
/// configuration, not personal data, so a directive may be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DateFormatError {
    /// `%` followed by a character that is not a supported directive.
    #[error("unknown directive %{0} in date format")]
    UnknownDirective(char),
    /// A time-of-day directive (`%H`, `%M`, `%S`, ...): formats give the date only, and a time
    /// of day after the date is accepted without one.
    #[error("{}", time_directive_message(*.0))]
    TimeDirective(char),
    /// The format ends with a `%` that starts no directive.
    #[error("date format ends with a lone %")]
    TrailingPercent,
    /// The format has no `%Y` or `%y`.
    #[error("date format has no year directive (%Y or %y)")]
    MissingYear,
    /// The format has no `%m`, `%b` or `%B`.
    #[error("date format has no month directive (%m, %b or %B)")]
    MissingMonth,
    /// The format has no `%d`.
    #[error("date format has no day directive (%d)")]
    MissingDay,
    /// The format sets the same field (year, month or day) twice.
    #[error("date format has more than one {0} directive")]
    DuplicateField(&'static str),
}

/// What [`DateFormatError::TimeDirective`] says: which time shapes are ignored after a date
/// without being in the format, and that others cannot be read.
fn time_directive_message(directive: char) -> String {
    let minutes = if directive == 'M' {
        " (%M is minutes; the month is %m)"
    } else {
        ""
    };
    format!(
        "%{directive} is a time-of-day directive{minutes}: date formats give the date only. A \
         time of day after the date, after a space, `T` or `:`, is ignored without being in the \
         format when it reads `H:MM` or `HH:MM`, optionally with `:SS` and a fraction (or \
         Oracle's `HH.MM.SS`), then optionally `Z`, an offset (`+01:00`) or AM/PM \
         (`15/06/2010 00:00`, `2010-06-15T10:30:00Z`, `15JUN2010:00:00:00`): leave the time out \
         of the format (`%d/%m/%Y %H:%M` → `%d/%m/%Y`). A time in another shape cannot be read: \
         export the date alone"
    )
}

/// One compiled element of a [`DateFormat`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    /// Text that must appear exactly.
    Literal(String),
    /// `%d`: day, 1 or 2 digits.
    Day,
    /// `%m`: month, 1 or 2 digits.
    Month,
    /// `%Y`: year, exactly 4 digits.
    Year4,
    /// `%y`: year, exactly 2 digits, windowed by a pivot year.
    Year2,
    /// `%b`: abbreviated month name (`Jan`..`Dec`, also `Sept`).
    MonthAbbr,
    /// `%B`: full month name.
    MonthFull,
}

/// Abbreviated month names accepted by `%b` (matched case-insensitively),
/// with their month numbers. `sept` is listed before `sep` so the longer
/// spelling is tried first.
const MONTH_ABBR: [(&str, u8); 13] = [
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sept", 9),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];

/// Full month names accepted by `%B` (matched case-insensitively).
const MONTH_FULL: [(&str, u8); 12] = [
    ("january", 1),
    ("february", 2),
    ("march", 3),
    ("april", 4),
    ("may", 5),
    ("june", 6),
    ("july", 7),
    ("august", 8),
    ("september", 9),
    ("october", 10),
    ("november", 11),
    ("december", 12),
];

/// A compiled strftime-subset date format.
///
/// Supported directives: `%d` (day, 1 or 2 digits), `%m` (month, 1 or 2
/// digits), `%Y` (year, exactly 4 digits), `%y` (2-digit year, windowed so
/// that it is never after the pivot year), `%b` (`Jan`..`Dec`, also `Sept`,
/// case-insensitive), `%B` (full month name, case-insensitive) and `%%` (a
/// literal `%`). Every other character must appear exactly. The whole
/// input must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateFormat {
    source: String,
    items: Vec<Item>,
    two_digit_year: bool,
    /// Whether every field can end in only one place ([`is_unambiguous`]),
    /// so that [`scan`] gives the same answer as the backtracking [`walk`].
    unambiguous: bool,
}

/// Year, month and day as read from the input, before validation.
#[derive(Clone, Copy, Default)]
struct Fields {
    year: Option<i64>,
    month: Option<u8>,
    day: Option<u8>,
}

impl DateFormat {
    /// Compiles `fmt`. Fails on an unknown directive, a trailing lone `%`, a
    /// field given twice, or a missing year (`%Y`/`%y`), month
    /// (`%m`/`%b`/`%B`) or day (`%d`).
    pub fn compile(fmt: &str) -> Result<DateFormat, DateFormatError> {
        let mut items = Vec::new();
        let mut literal = String::new();
        let (mut year, mut month, mut day) = (false, false, false);
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                // Values are read without invisible format characters, so a format copied
                // from a document with one (a direction mark) must not need it.
                if !crate::normalise::is_ignorable(c) {
                    literal.push(c);
                }
                continue;
            }
            let directive = chars.next().ok_or(DateFormatError::TrailingPercent)?;
            let (item, seen, field) = match directive {
                '%' => {
                    literal.push('%');
                    continue;
                }
                'd' => (Item::Day, &mut day, "day"),
                'm' => (Item::Month, &mut month, "month"),
                'b' => (Item::MonthAbbr, &mut month, "month"),
                'B' => (Item::MonthFull, &mut month, "month"),
                'Y' => (Item::Year4, &mut year, "year"),
                'y' => (Item::Year2, &mut year, "year"),
                'H' | 'I' | 'M' | 'S' | 'p' | 'f' | 'z' | 'Z' | 'T' | 'R' => {
                    return Err(DateFormatError::TimeDirective(directive))
                }
                other => return Err(DateFormatError::UnknownDirective(other)),
            };
            if *seen {
                return Err(DateFormatError::DuplicateField(field));
            }
            *seen = true;
            if !literal.is_empty() {
                items.push(Item::Literal(std::mem::take(&mut literal)));
            }
            items.push(item);
        }
        if !literal.is_empty() {
            items.push(Item::Literal(literal));
        }
        if !year {
            return Err(DateFormatError::MissingYear);
        }
        if !month {
            return Err(DateFormatError::MissingMonth);
        }
        if !day {
            return Err(DateFormatError::MissingDay);
        }
        let two_digit_year = items.contains(&Item::Year2);
        let unambiguous = is_unambiguous(&items);
        Ok(DateFormat {
            source: fmt.to_owned(),
            items,
            two_digit_year,
            unambiguous,
        })
    }

    /// The format string this was compiled from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Parses `s`, which must match the whole format and be a real date.
    /// A `%y` year is windowed on the current UTC year: `yy` at or below the
    /// current year's last two digits is in this century, otherwise in the
    /// previous one.
    pub fn parse(&self, s: &str) -> Option<Date> {
        let pivot = if self.two_digit_year {
            Date::today_utc().year
        } else {
            0
        };
        self.parse_with_pivot(s, pivot)
    }

    /// As [`DateFormat::parse`], but windows `%y` years on `pivot_year`
    /// instead of the current year: `yy <= pivot_year % 100` gives a year in
    /// `pivot_year`'s century, anything larger the century before (pivot
    /// 2026: `26` is 2026, `27` is 1927).
    pub fn parse_with_pivot(&self, s: &str, pivot_year: i32) -> Option<Date> {
        let mut shape = false;
        self.match_date(s, pivot_year, &mut shape)
    }

    /// Matches `s`; sets `*shape` when the whole string matched the format's
    /// structure even if the fields did not form a real date.
    /// Formats whose fields are each followed by the end or by a separator
    /// that cannot continue them (all the usual ones: `%d/%m/%Y`,
    /// `%Y-%m-%d`, `%d-%b-%Y`) are matched in one pass by [`scan`]; the
    /// others (`%d%m%Y`) by the backtracking [`walk`]. Both give the same
    /// date and the same `*shape` for every input.
    pub(crate) fn match_date(&self, s: &str, pivot_year: i32, shape: &mut bool) -> Option<Date> {
        if self.unambiguous {
            scan(&self.items, s.as_bytes(), pivot_year, shape)
        } else {
            self.match_date_backtracking(s, pivot_year, shape)
        }
    }

    /// [`DateFormat::match_date`] with the general backtracking matcher,
    /// whatever the format: the reference [`scan`] is tested against.
    pub(crate) fn match_date_backtracking(
        &self,
        s: &str,
        pivot_year: i32,
        shape: &mut bool,
    ) -> Option<Date> {
        walk(
            &self.items,
            s.as_bytes(),
            Fields::default(),
            pivot_year,
            shape,
        )
    }
}

/// Whether no item of a format can match the input in more than one way
/// that gets past the next item, so the first way found is the only one.
/// A `%d` or `%m` (one or two digits) must be followed by the end or by a
/// literal that does not start with a digit; a `%b` or `%B` by the end or
/// a literal that does not start with an ASCII letter (then the whole run
/// of letters must be the month name, and `Sept` cannot also match as
/// `Sep`). Literals and `%Y`/`%y` have a fixed width.
fn is_unambiguous(items: &[Item]) -> bool {
    items.iter().enumerate().all(|(i, item)| {
        // The first byte after this item: None at the end, Some(None)
        // before another field (or an empty literal, which compile never
        // makes).
        let next = match items.get(i + 1) {
            None => None,
            Some(Item::Literal(l)) => Some(l.as_bytes().first().copied()),
            Some(_) => Some(None),
        };
        match (item, next) {
            (Item::Literal(_) | Item::Year4 | Item::Year2, _) | (_, None) => true,
            (Item::Day | Item::Month, Some(b)) => b.is_some_and(|b| !b.is_ascii_digit()),
            (Item::MonthAbbr | Item::MonthFull, Some(b)) => {
                b.is_some_and(|b| !b.is_ascii_alphabetic())
            }
        }
    })
}

/// The end of a match, shared by [`walk`] and [`scan`]: all of `s` must
/// have been used; then the input has the format's shape, and is a date if
/// the fields make a real one.
fn finish(s: &[u8], f: Fields, shape: &mut bool) -> Option<Date> {
    if !s.is_empty() {
        return None;
    }
    *shape = true;
    let year = i32::try_from(f.year?).ok()?;
    Date::new(year, f.month?, f.day?)
}

/// The year a `%y` value `yy` stands for with the given pivot year.
fn windowed_year(yy: u32, pivot: i32) -> i64 {
    let yy = i64::from(yy);
    let p = i64::from(pivot);
    let century = p - p.rem_euclid(100);
    if yy <= p.rem_euclid(100) {
        century + yy
    } else {
        century - 100 + yy
    }
}

/// The month names a `%b` (abbreviated) or `%B` (full) item matches.
fn month_table(item: &Item) -> &'static [(&'static str, u8)] {
    if *item == Item::MonthAbbr {
        &MONTH_ABBR
    } else {
        &MONTH_FULL
    }
}

/// Month number of a month name from `table` that is exactly `name`,
/// ignoring ASCII case. The tables are lowercase; names are compared in
/// full only when the length and first letter agree.
fn month_named(table: &[(&str, u8)], name: &[u8]) -> Option<u8> {
    let first = name.first()?.to_ascii_lowercase();
    table
        .iter()
        .find(|(n, _)| {
            let n = n.as_bytes();
            n.len() == name.len() && n.first() == Some(&first) && n.eq_ignore_ascii_case(name)
        })
        .map(|&(_, m)| m)
}

/// `s` without the prefix `lit`, if it starts with it. Separators are
/// mostly one byte, which is compared directly rather than by `memcmp`.
fn strip_literal<'a>(s: &'a [u8], lit: &[u8]) -> Option<&'a [u8]> {
    match (lit, s) {
        ([l], [c, rest @ ..]) => (l == c).then_some(rest),
        _ => s.strip_prefix(lit),
    }
}

/// Single-pass matcher for formats where [`is_unambiguous`] holds: each
/// `%d`/`%m` takes its whole run of digits (which must be one or two long)
/// and each month name its whole run of ASCII letters, which is what the
/// only successful branch of [`walk`] does for such formats. No recursion
/// and no retries, so it is several times cheaper than [`walk`].
fn scan(items: &[Item], mut s: &[u8], pivot: i32, shape: &mut bool) -> Option<Date> {
    let mut f = Fields::default();
    for item in items {
        match item {
            Item::Literal(lit) => s = strip_literal(s, lit.as_bytes())?,
            Item::Day | Item::Month => {
                let v = match *s {
                    [a @ b'0'..=b'9', b @ b'0'..=b'9', ref rest @ ..] => {
                        if rest.first().is_some_and(u8::is_ascii_digit) {
                            return None;
                        }
                        s = rest;
                        (a - b'0') * 10 + (b - b'0')
                    }
                    [a @ b'0'..=b'9', ref rest @ ..] => {
                        s = rest;
                        a - b'0'
                    }
                    _ => return None,
                };
                if matches!(item, Item::Day) {
                    f.day = Some(v);
                } else {
                    f.month = Some(v);
                }
            }
            Item::Year4 => {
                f.year = Some(i64::from(s.get(..4).and_then(ascii_number)?));
                s = &s[4..];
            }
            Item::Year2 => {
                let yy = s.get(..2).and_then(ascii_number)?;
                f.year = Some(windowed_year(yy, pivot));
                s = &s[2..];
            }
            Item::MonthAbbr | Item::MonthFull => {
                let n = s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
                f.month = Some(month_named(month_table(item), &s[..n])?);
                s = &s[n..];
            }
        }
    }
    finish(s, f, shape)
}

/// Backtracking matcher: tries each way the first item can match and
/// recurses. Recursion depth is bounded by the number of items (at most
/// three fields plus four literals), and branching by two alternatives per
/// item, so it is cheap for any input.
fn walk(items: &[Item], s: &[u8], f: Fields, pivot: i32, shape: &mut bool) -> Option<Date> {
    let Some((item, rest)) = items.split_first() else {
        return finish(s, f, shape);
    };
    match item {
        Item::Literal(lit) => {
            let tail = s.strip_prefix(lit.as_bytes())?;
            walk(rest, tail, f, pivot, shape)
        }
        Item::Day | Item::Month => {
            for len in [2, 1] {
                let Some(v) = s.get(..len).and_then(ascii_number) else {
                    continue;
                };
                let v = u8::try_from(v).ok()?;
                let mut g = f;
                if *item == Item::Day {
                    g.day = Some(v);
                } else {
                    g.month = Some(v);
                }
                if let Some(d) = walk(rest, &s[len..], g, pivot, shape) {
                    return Some(d);
                }
            }
            None
        }
        Item::Year4 => {
            let v = s.get(..4).and_then(ascii_number)?;
            let g = Fields {
                year: Some(i64::from(v)),
                ..f
            };
            walk(rest, &s[4..], g, pivot, shape)
        }
        Item::Year2 => {
            let yy = s.get(..2).and_then(ascii_number)?;
            let g = Fields {
                year: Some(windowed_year(yy, pivot)),
                ..f
            };
            walk(rest, &s[2..], g, pivot, shape)
        }
        Item::MonthAbbr | Item::MonthFull => {
            for &(name, m) in month_table(item) {
                let n = name.len();
                match s.get(..n) {
                    Some(head) if head.eq_ignore_ascii_case(name.as_bytes()) => {
                        let g = Fields {
                            month: Some(m),
                            ..f
                        };
                        if let Some(d) = walk(rest, &s[n..], g, pivot, shape) {
                            return Some(d);
                        }
                    }
                    _ => {}
                }
            }
            None
        }
    }
}

/// The default input formats, tried in this order: `%Y-%m-%d`, `%d/%m/%Y`,
/// `%d-%b-%Y`.
pub fn default_date_formats() -> Vec<DateFormat> {
    ["%Y-%m-%d", "%d/%m/%Y", "%d-%b-%Y"]
        .iter()
        .filter_map(|f| DateFormat::compile(f).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u8, day: u8) -> Date {
        Date::new(y, m, day).unwrap()
    }

    /// Test-only formatter mirroring the parser; `pad` zero-pads %d and %m.
    fn format_with(f: &DateFormat, date: Date, pad: bool, upper: bool) -> String {
        let mut out = String::new();
        for item in &f.items {
            match item {
                Item::Literal(l) => out.push_str(l),
                Item::Day if pad => out.push_str(&format!("{:02}", date.day)),
                Item::Day => out.push_str(&date.day.to_string()),
                Item::Month if pad => out.push_str(&format!("{:02}", date.month)),
                Item::Month => out.push_str(&date.month.to_string()),
                Item::Year4 => out.push_str(&format!("{:04}", date.year)),
                Item::Year2 => out.push_str(&format!("{:02}", date.year.rem_euclid(100))),
                Item::MonthAbbr | Item::MonthFull => {
                    let table: &[(&str, u8)] = if *item == Item::MonthAbbr {
                        &MONTH_ABBR
                    } else {
                        &MONTH_FULL
                    };
                    let name = table.iter().find(|(_, m)| *m == date.month).unwrap().0;
                    let mut name = name.to_string();
                    if upper {
                        name = name.to_ascii_uppercase();
                    } else {
                        name[..1].make_ascii_uppercase();
                    }
                    out.push_str(&name);
                }
            }
        }
        out
    }

    #[test]
    fn new_validates_month_lengths_and_leap_years() {
        assert!(Date::new(2016, 2, 29).is_some());
        assert!(Date::new(2015, 2, 29).is_none());
        assert!(Date::new(2000, 2, 29).is_some()); // divisible by 400
        assert!(Date::new(1900, 2, 29).is_none()); // divisible by 100
        assert!(Date::new(2024, 4, 31).is_none());
        assert!(Date::new(2024, 12, 31).is_some());
        assert!(Date::new(2024, 13, 1).is_none());
        assert!(Date::new(2024, 0, 1).is_none());
        assert!(Date::new(2024, 1, 0).is_none());
        assert!(Date::new(2024, 1, 32).is_none());
    }

    #[test]
    fn day_counts_match_known_values() {
        assert_eq!(d(1970, 1, 1).to_days(), 0);
        assert_eq!(d(1969, 12, 31).to_days(), -1);
        assert_eq!(d(2000, 3, 1).to_days(), 11_017);
        assert_eq!(d(2024, 2, 29).to_days(), 19_782);
        assert_eq!(Date::from_days(19_782), d(2024, 2, 29));
        assert_eq!(Date::from_days(-719_468), d(0, 3, 1));
        // Saturation instead of overflow.
        assert_eq!(Date::from_days(i64::MAX).year, i32::MAX);
        assert_eq!(Date::from_days(i64::MIN).year, i32::MIN);
        assert_eq!(Date::from_days(i64::MAX), d(i32::MAX, 12, 31));
        assert_eq!(Date::from_days(i64::MIN), d(i32::MIN, 1, 1));
    }

    #[test]
    fn add_months_clamps_to_month_end() {
        assert_eq!(d(2015, 1, 31).add_months(1), d(2015, 2, 28));
        assert_eq!(d(2016, 1, 31).add_months(1), d(2016, 2, 29));
        assert_eq!(d(2016, 3, 31).add_months(-1), d(2016, 2, 29));
        assert_eq!(d(2015, 11, 15).add_months(3), d(2016, 2, 15));
        assert_eq!(d(2015, 1, 15).add_months(-1), d(2014, 12, 15));
        assert_eq!(d(2015, 5, 15).add_months(-12 * 18), d(1997, 5, 15));
        assert_eq!(d(2015, 5, 15).add_months(0), d(2015, 5, 15));
        assert_eq!(d(i32::MAX, 12, 1).add_months(1), d(i32::MAX, 12, 31));
        assert_eq!(d(i32::MIN, 1, 5).add_months(-1), d(i32::MIN, 1, 1));
        // Hand-built invalid dates do not panic.
        let bad = Date {
            year: 2015,
            month: 0,
            day: 0,
        };
        assert_eq!(bad.add_months(1), d(2015, 2, 1));
    }

    #[test]
    fn parse_iso_is_strict() {
        assert_eq!(Date::parse_iso("2016-02-29"), Some(d(2016, 2, 29)));
        assert_eq!(Date::parse_iso("0001-01-01"), Some(d(1, 1, 1)));
        for bad in [
            "2015-02-29",
            "2016-2-29",
            "2016-02-29 ",
            " 2016-02-29",
            "2016/02/29",
            "20160229",
            "2016-02-2x",
            "+016-02-29",
            "2016-13-01",
            "",
            "é016-02-2",
        ] {
            assert_eq!(Date::parse_iso(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_iso_explained_says_why() {
        assert_eq!(Date::parse_iso_explained("2016-02-29"), Ok(d(2016, 2, 29)));
        let day = |s: &str| Date::parse_iso_explained(s).unwrap_err();
        assert_eq!(
            day("2026-02-30"),
            "that day does not exist: February 2026 has days 01 to 28"
        );
        assert_eq!(
            day("2015-02-29"),
            "that day does not exist: February 2015 has days 01 to 28"
        );
        assert_eq!(
            day("2026-04-31"),
            "that day does not exist: April 2026 has days 01 to 30"
        );
        assert_eq!(
            day("2026-01-00"),
            "that day does not exist: January 2026 has days 01 to 31"
        );
        for month in ["2026-13-01", "2026-00-10", "2026-99-99"] {
            assert_eq!(
                day(month),
                "that month does not exist: months are 01 to 12",
                "{month}"
            );
        }
        for bad in [
            "2016-2-29",
            "2016-02-29 ",
            "29/02/2016",
            "20160229",
            "2016-02-2x",
            "+016-02-29",
            "",
            "é016-02-2",
            "2016-é-29x",
        ] {
            assert_eq!(day(bad), "expected a date as YYYY-MM-DD", "{bad:?}");
        }
    }

    #[test]
    fn display_is_zero_padded_iso() {
        assert_eq!(d(2016, 2, 9).to_string(), "2016-02-09");
        assert_eq!(d(5, 1, 1).to_string(), "0005-01-01");
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_from_unix(1_795_343_405), "2026-11-22T10:30:05Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        // No panic at the extremes.
        let _ = rfc3339_from_unix(i64::MAX);
        let _ = rfc3339_from_unix(i64::MIN);
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
        assert_eq!(Date::parse_iso(&now[..10]), Some(Date::today_utc()));
    }

    #[test]
    fn today_is_plausible() {
        let today = Date::today_utc();
        assert!(today.year >= 2024 && today.year < 2200, "{today}");
    }

    #[test]
    fn compile_errors() {
        use DateFormatError::*;
        assert_eq!(DateFormat::compile("%d/%q/%Y"), Err(UnknownDirective('q')));
        assert_eq!(DateFormat::compile("%d/%m/%Y%"), Err(TrailingPercent));
        assert_eq!(DateFormat::compile("%d/%m"), Err(MissingYear));
        assert_eq!(DateFormat::compile("%d/%Y"), Err(MissingMonth));
        assert_eq!(DateFormat::compile("%m/%Y"), Err(MissingDay));
        assert_eq!(DateFormat::compile(""), Err(MissingYear));
        assert_eq!(
            DateFormat::compile("%d %b %m %Y"),
            Err(DuplicateField("month"))
        );
        assert_eq!(
            DateFormat::compile("%d/%m/%Y %y"),
            Err(DuplicateField("year"))
        );
        assert_eq!(
            UnknownDirective('q').to_string(),
            "unknown directive %q in date format"
        );
        for (fmt, d) in [
            ("%d/%m/%Y %H:%M", 'H'),
            ("%Y-%m-%dT%T", 'T'),
            ("%d/%m/%Y %I %p", 'I'),
        ] {
            assert_eq!(DateFormat::compile(fmt), Err(TimeDirective(d)), "{fmt}");
        }
        let msg = TimeDirective('H').to_string();
        assert!(msg.starts_with("%H is a time-of-day directive:"), "{msg}");
        assert!(
            msg.contains("`%d/%m/%Y`") && msg.contains("`HH:MM`"),
            "{msg}"
        );
        assert!(msg.contains("another shape cannot be read"), "{msg}");
        let msg = TimeDirective('M').to_string();
        assert!(msg.contains("(%M is minutes; the month is %m)"), "{msg}");
        // An invisible character in a format's literal text is not required of the value.
        let f = DateFormat::compile("%d/\u{200E}%m/%Y").unwrap();
        assert_eq!(f.parse("12/03/2015"), Some(d(2015, 3, 12)));
        let f = DateFormat::compile("%d%%%m%%%Y").unwrap();
        assert_eq!(f.as_str(), "%d%%%m%%%Y");
        assert_eq!(f.parse("1%2%2015"), Some(d(2015, 2, 1)));
    }

    #[test]
    fn default_formats() {
        let fs = default_date_formats();
        let names: Vec<&str> = fs.iter().map(DateFormat::as_str).collect();
        assert_eq!(names, ["%Y-%m-%d", "%d/%m/%Y", "%d-%b-%Y"]);
        assert_eq!(fs[0].parse("2015-03-12"), Some(d(2015, 3, 12)));
        assert_eq!(fs[0].parse("2015-3-2"), Some(d(2015, 3, 2)));
        assert_eq!(fs[1].parse("12/03/2015"), Some(d(2015, 3, 12)));
        assert_eq!(fs[1].parse("1/3/2015"), Some(d(2015, 3, 1)));
        assert_eq!(fs[2].parse("12-MAR-2015"), Some(d(2015, 3, 12)));
        assert_eq!(fs[2].parse("12-mar-2015"), Some(d(2015, 3, 12)));
        assert_eq!(fs[2].parse("12-Sept-2015"), Some(d(2015, 9, 12)));
        assert_eq!(fs[2].parse("12-SEP-2015"), Some(d(2015, 9, 12)));
        assert_eq!(fs[2].parse("12-Oct-2015"), Some(d(2015, 10, 12)));
        assert_eq!(fs[2].parse("12-March-2015"), None);
        assert_eq!(fs[1].parse("12/03/15"), None);
        assert_eq!(fs[1].parse("12/03/2015 "), None);
        assert_eq!(fs[1].parse("123/03/2015"), None);
        assert_eq!(fs[1].parse("31/02/2015"), None);
        assert_eq!(fs[0].parse("2015-03-12T00:00"), None);
    }

    #[test]
    fn full_month_names_and_shape_detection() {
        let f = DateFormat::compile("%d %B %Y").unwrap();
        assert_eq!(f.parse("1 September 2015"), Some(d(2015, 9, 1)));
        assert_eq!(f.parse("01 MAY 2015"), Some(d(2015, 5, 1)));
        assert_eq!(f.parse("1 Sep 2015"), None);
        let mut shape = false;
        assert_eq!(f.match_date("31 June 2015", 2026, &mut shape), None);
        assert!(shape);
        let mut shape = false;
        assert_eq!(f.match_date("31 Juno 2015", 2026, &mut shape), None);
        assert!(!shape);
    }

    #[test]
    fn backtracks_over_ambiguous_widths() {
        let f = DateFormat::compile("%d%m%Y").unwrap();
        assert_eq!(f.parse("12032015"), Some(d(2015, 3, 12)));
        assert_eq!(f.parse("1032015"), Some(d(2015, 3, 10)));
        // "31" + "2" is impossible, "3" + "12" is fine.
        assert_eq!(f.parse("3122015"), Some(d(2015, 12, 3)));
        let f = DateFormat::compile("%Y%m%d").unwrap();
        assert_eq!(f.parse("20150312"), Some(d(2015, 3, 12)));
    }

    #[test]
    fn two_digit_year_pivot() {
        let f = DateFormat::compile("%d/%m/%y").unwrap();
        assert_eq!(f.parse_with_pivot("12/03/15", 2026), Some(d(2015, 3, 12)));
        assert_eq!(f.parse_with_pivot("12/03/26", 2026), Some(d(2026, 3, 12)));
        assert_eq!(f.parse_with_pivot("12/03/27", 2026), Some(d(1927, 3, 12)));
        assert_eq!(f.parse_with_pivot("12/03/99", 2026), Some(d(1999, 3, 12)));
        assert_eq!(f.parse_with_pivot("12/03/00", 2026), Some(d(2000, 3, 12)));
        assert_eq!(f.parse_with_pivot("12/03/99", 2100), Some(d(2099, 3, 12)));
        assert_eq!(f.parse_with_pivot("12/03/2015", 2026), None);
        assert_eq!(f.parse_with_pivot("29/02/00", 2026), Some(d(2000, 2, 29)));
        assert_eq!(f.parse_with_pivot("29/02/00", 1999), None); // 1900
                                                                // Extreme pivots must not overflow.
        assert_eq!(f.parse_with_pivot("12/03/99", i32::MIN), None);
        let _ = f.parse_with_pivot("12/03/00", i32::MAX);
        // The real-clock variant agrees with an explicit pivot of this year.
        let this_year = Date::today_utc().year;
        assert_eq!(
            f.parse("12/03/15"),
            f.parse_with_pivot("12/03/15", this_year)
        );
    }

    #[test]
    fn non_ascii_input_does_not_panic() {
        let f = DateFormat::compile("%d-%b-%Y").unwrap();
        assert_eq!(f.parse("1é-mar-2015"), None);
        assert_eq!(f.parse("12-mé-2015"), None);
        let f = DateFormat::compile("%d·%m·%Y").unwrap();
        assert_eq!(f.parse("12·03·2015"), Some(d(2015, 3, 12)));
    }

    #[test]
    fn month_tables_are_lowercase() {
        // month_named relies on it.
        for (name, _) in MONTH_ABBR.iter().chain(&MONTH_FULL) {
            assert!(name.bytes().all(|b| b.is_ascii_lowercase()), "{name}");
        }
    }

    #[test]
    fn single_pass_formats() {
        for (fmt, unambiguous) in [
            ("%Y-%m-%d", true),
            ("%d/%m/%Y", true),
            ("%d-%b-%Y", true),
            ("%d.%m.%y", true),
            ("%d %B %Y", true),
            ("%d·%m·%Y", true),
            ("%Y%m-%d", true),
            ("%d%m%Y", false),
            ("%Y%m%d", false),
            ("%d%b%Y", false),
            ("%d-%bx%Y", false),
            ("%d-%m1%Y", false),
        ] {
            let f = DateFormat::compile(fmt).unwrap();
            assert_eq!(f.unambiguous, unambiguous, "{fmt}");
        }
    }

    /// Formats to hold [`scan`] to [`walk`] on: the defaults, the test
    /// data's, and others with every directive, multi-byte and
    /// letter-or-digit separators, and ambiguous ones (which must fall back
    /// to `walk`).
    const SCAN_FORMATS: [&str; 22] = [
        "%Y-%m-%d",
        "%d/%m/%Y",
        "%d-%b-%Y",
        "%d.%m.%y",
        "%d %B %Y",
        "%d %B %y",
        "%b %d, %Y",
        "%B/%d/%y",
        "%m/%d/%Y",
        "%Y/%b/%d",
        "%d·%m·%Y",
        "%Y%m-%d",
        "%y-%m-%d",
        "[%d|%m|%Y]",
        "%d%%%m%%%Y",
        "%d%m%Y",
        "%Y%m%d",
        "%d%b%Y",
        "%dT%m-%Y",
        "%d-%m1%Y",
        "%d-%bt%Y",
        "%d %Bx%y",
    ];

    /// One piece of a date-like input: a digit run, a month name in some
    /// case, a separator, letters, or anything.
    fn date_token() -> impl Strategy<Value = String> {
        let month = prop_oneof![
            proptest::sample::select(MONTH_ABBR.iter().map(|m| m.0).collect::<Vec<_>>()),
            proptest::sample::select(MONTH_FULL.iter().map(|m| m.0).collect::<Vec<_>>()),
        ];
        prop_oneof![
            4 => "[0-9]{1,5}",
            2 => (month, any::<bool>()).prop_map(|(m, up)| if up { m.to_ascii_uppercase() } else { m.to_owned() }),
            3 => "[-/. ,·T:%|\\[\\]1x]",
            1 => "[A-Za-z]{1,5}",
            1 => ".{1,2}",
        ]
    }

    /// The one-pass matcher and the backtracking one agree on `s`, shape flag included.
    fn agrees_with_backtracking(
        f: &DateFormat,
        fmt: &str,
        s: &str,
        pivot: i32,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let (mut shape, mut ref_shape) = (false, false);
        let got = f.match_date(s, pivot, &mut shape);
        let want = f.match_date_backtracking(s, pivot, &mut ref_shape);
        prop_assert_eq!(got, want, "{} {:?}", fmt, s);
        prop_assert_eq!(shape, ref_shape, "{} {:?}", fmt, s);
        Ok(())
    }

    proptest! {
        #[test]
        fn scan_agrees_with_walk(
            fmt in proptest::sample::select(SCAN_FORMATS.to_vec()),
            tokens in proptest::collection::vec(date_token(), 0..8),
            pivot in prop_oneof![Just(2026), Just(1999), Just(2100), Just(i32::MIN), Just(i32::MAX), any::<i32>()],
        ) {
            let f = DateFormat::compile(fmt).unwrap();
            let s = tokens.concat();
            agrees_with_backtracking(&f, fmt, &s, pivot)?;
        }

        #[test]
        fn scan_agrees_with_walk_on_dates(
            fmt in proptest::sample::select(SCAN_FORMATS.to_vec()),
            y in prop_oneof![1900i32..2100, 0i32..10_000],
            m in 0u8..14,
            dd in 0u8..33,
            pad in any::<bool>(),
            upper in any::<bool>(),
            pivot in prop_oneof![Just(2026), any::<i32>()],
        ) {
            // Possibly impossible dates, formatted as the format would.
            let f = DateFormat::compile(fmt).unwrap();
            let date = Date { year: y, month: m.clamp(1, 12), day: dd };
            let mut s = format_with(&f, date, pad, upper);
            if m == 0 || m == 13 {
                s = s.replacen(&format!("{:02}", date.month), &format!("{m:02}"), 1);
            }
            agrees_with_backtracking(&f, fmt, &s, pivot)?;
        }

        #[test]
        fn scan_agrees_with_walk_on_random_formats(
            fmt in "([%][dmyYbB%]|[-/. ·x1at]){1,7}",
            tokens in proptest::collection::vec(date_token(), 0..8),
            n in 0i64..20_000,
            day in 28u8..32,
            pad in any::<bool>(),
        ) {
            if let Ok(f) = DateFormat::compile(&fmt) {
                let date = Date { day, ..Date::from_days(n) };
                for s in [tokens.concat(), format_with(&f, date, pad, false)] {
                    agrees_with_backtracking(&f, &fmt, &s, 2026)?;
                }
            }
        }
    }

    fn any_valid_date() -> impl Strategy<Value = Date> {
        (any::<i32>(), 1u8..=12, 1u8..=31)
            .prop_map(|(y, m, dd)| Date::new(y, m, dd.min(days_in_month(i64::from(y), m))).unwrap())
    }

    proptest! {
        #[test]
        fn days_round_trip(date in any_valid_date()) {
            prop_assert_eq!(Date::from_days(date.to_days()), date);
        }

        #[test]
        fn from_days_round_trip(n in MIN_DAYS..=MAX_DAYS) {
            let date = Date::from_days(n);
            prop_assert!(Date::new(date.year, date.month, date.day).is_some());
            prop_assert_eq!(date.to_days(), n);
        }

        #[test]
        fn consecutive_days_are_consecutive(n in -1_000_000i64..1_000_000) {
            let a = Date::from_days(n);
            let b = Date::from_days(n + 1);
            prop_assert!(a < b);
            prop_assert_eq!(a.to_days() + 1, b.to_days());
        }

        #[test]
        fn add_months_never_panics(y in any::<i32>(), m in any::<u8>(), dd in any::<u8>(), k in any::<i32>()) {
            let r = Date { year: y, month: m, day: dd }.add_months(k);
            prop_assert!(Date::new(r.year, r.month, r.day).is_some());
        }

        #[test]
        fn arbitrary_hand_built_dates_do_not_panic(y in any::<i32>(), m in any::<u8>(), dd in any::<u8>()) {
            let date = Date { year: y, month: m, day: dd };
            let _ = date.to_days();
            let _ = date.to_string();
        }

        #[test]
        fn rfc3339_never_panics(secs in any::<i64>()) {
            let s = rfc3339_from_unix(secs);
            prop_assert!(s.ends_with('Z'));
        }

        #[test]
        fn iso_display_round_trip(n in -719_468i64..2_932_896) { // years 0000..=9999
            let date = Date::from_days(n);
            prop_assert_eq!(Date::parse_iso(&date.to_string()), Some(date));
        }

        #[test]
        fn default_formats_round_trip(
            n in Date::new(1990, 1, 1).unwrap().to_days()..=Date::new(2030, 12, 31).unwrap().to_days(),
            pad in any::<bool>(),
            upper in any::<bool>(),
        ) {
            let date = Date::from_days(n);
            for f in default_date_formats() {
                let text = format_with(&f, date, pad, upper);
                prop_assert_eq!(f.parse(&text), Some(date), "{} {}", f.as_str(), text);
            }
        }

        #[test]
        fn two_digit_year_round_trip(
            n in Date::new(1927, 1, 1).unwrap().to_days()..=Date::new(2026, 12, 31).unwrap().to_days(),
        ) {
            let date = Date::from_days(n);
            let f = DateFormat::compile("%d %B %y").unwrap();
            let text = format_with(&f, date, false, false);
            prop_assert_eq!(f.parse_with_pivot(&text, 2026), Some(date));
        }

        #[test]
        fn parse_never_panics(fmt in "([%]?[dmyYbBq%]|.){0,8}", s in ".{0,24}") {
            if let Ok(f) = DateFormat::compile(&fmt) {
                let _ = f.parse(&s);
                let _ = f.parse_with_pivot(&s, 2026);
            }
            let _ = Date::parse_iso(&s);
        }
    }
}
