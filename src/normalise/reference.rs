//! The normalisers as they were before their fast paths (commit f76d135):
//! the slow paths they had, kept as the reference that `tests` below hold
//! the fast code to: every fast path must give exactly these results, error
//! codes included.
//! Test-only; shared helpers whose behaviour did not change (`NameBuf`,
//! the character-by-character scans of postcodes, UPNs and NHS numbers, the
//! postcode, NHS and UPN checks, the date-of-birth steps after the prelude,
//! given the original date matcher) are used from the parent module.

use super::*;

/// Original [`super::is_null_marker`].
pub(super) fn is_null_marker(trimmed_upper: &str) -> bool {
    trimmed_upper.len() <= 12
        && (NULL_MARKERS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(trimmed_upper))
            || CASED_NULL_MARKERS.contains(&trimmed_upper))
}

/// Original `prepare`: length guard, Unicode trim, null markers.
fn prepare(raw: &str) -> Result<&str, Normalised<()>> {
    if raw.len() > MAX_FIELD_BYTES {
        return Err(Err(Invalid::TooLong));
    }
    let s = raw.trim();
    if is_null_marker(s) {
        return Err(Ok(None));
    }
    Ok(s)
}

/// Original [`super::name`] (its null-marker check; newborn placeholders
/// without the first-letter check).
pub(super) fn name(raw: &str) -> Normalised<String> {
    let s = match prepare(raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    name_verdict(name_text(s), is_null_marker, is_placeholder_words)
}

/// Original [`super::postcode`].
pub(super) fn postcode(raw: &str) -> Normalised<String> {
    let raw = super::visible(raw);
    let s = match prepare(&raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    let (buf, len) = compact_alnum_chars::<7>(s)?;
    if super::is_postcode_placeholder(&buf[..len]) {
        return Ok(None);
    }
    check_postcode(&buf[..len])?;
    let (outward, inward) = buf[..len].split_at(len - 3);
    let mut out = String::with_capacity(len + 1);
    out.extend(outward.iter().map(|&b| char::from(b)));
    out.push(' ');
    out.extend(inward.iter().map(|&b| char::from(b)));
    Ok(Some(out))
}

/// Original [`super::nhs_number`].
pub(super) fn nhs_number(raw: &str) -> Normalised<String> {
    let raw = super::visible(raw);
    let s = match prepare(&raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    let digits = nhs_digits_chars(s.strip_suffix(".0").unwrap_or(s))?;
    if !check_nhs(&digits)? {
        return Ok(None);
    }
    Ok(Some(digits.iter().map(|&d| char::from(b'0' + d)).collect()))
}

/// Original [`super::upn`].
pub(super) fn upn(raw: &str) -> Normalised<String> {
    let raw = super::visible(raw);
    let s = match prepare(&raw) {
        Ok(s) => s,
        Err(e) => return early(e),
    };
    let (buf, len) = compact_alnum_chars::<13>(s)?;
    if len != buf.len() {
        return Err(Invalid::WrongLength);
    }
    check_upn(&buf)?;
    Ok(Some(buf.iter().map(|&b| char::from(b)).collect()))
}

/// Original [`super::date_of_birth`]: the original prelude and the
/// backtracking date matcher (what follows the prelude is unchanged and
/// shared).
pub(super) fn date_of_birth(raw: &str, formats: &[DateFormat], today: Date) -> Normalised<Date> {
    match prepare(&super::visible(raw)) {
        Ok(NOT_A_TIME) => Ok(None),
        Ok(s) => prepared_date_of_birth(s, formats, today, DateFormat::match_date_backtracking),
        Err(e) => early(e),
    }
}

/// The `sex` branch of `encode::normalise_value` before its fast path:
/// whether a trimmed coded value is missing.
pub(super) fn coded_is_missing(t: &str) -> bool {
    t.is_empty() || is_null_marker(&t.to_uppercase()) || CASED_NULL_MARKERS.contains(&t)
}

/// The `text` branch of `encode::normalise_value` before its fast path.
pub(super) fn free_text(text: &str) -> Option<String> {
    if CASED_NULL_MARKERS.contains(&text.trim()) {
        return None;
    }
    let t: Vec<String> = text.split_whitespace().map(str::to_uppercase).collect();
    let t = t.join(" ");
    if t.is_empty() || is_null_marker(&t) {
        None
    } else {
        Some(t)
    }
}

mod tests {
    use super::super::{
        date_of_birth, free_text, is_null_marker, is_null_marker_uppercased, name, nhs_number,
        postcode, trim, upn,
    };
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// Pieces of field values from the corners the fast paths must get
    /// right: ASCII digits, letters and separators; every ASCII whitespace
    /// byte, including `\x0B` (whitespace to `char`, not to `u8`) and the
    /// `\x1C`..`\x1F` separators (whitespace to neither); Unicode whitespace,
    /// dashes and invisible characters; non-ASCII letters that uppercase or
    /// fold to ASCII; null markers, month names and placeholder words in
    /// odd case; and anything at all.
    fn token() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            " ",
            "  ",
            "\t",
            "\n",
            "\x0B",
            "\x0C",
            "\r",
            "\x1C",
            "\x1F",
            "\0",
            "-",
            "--",
            ".",
            "/",
            ":",
            "'",
            "`",
            "T",
            "t",
            "Z",
            "+",
            ",",
            "?",
            "%",
            "\u{85}",
            "\u{A0}",
            "\u{1680}",
            "\u{2000}",
            "\u{2007}",
            "\u{200A}",
            "\u{200B}",
            "\u{2028}",
            "\u{202F}",
            "\u{3000}",
            "\u{FEFF}",
            "\u{AD}",
            "\u{2010}",
            "\u{2013}",
            "\u{2015}",
            "\u{2212}",
            "\u{FE63}",
            "\u{FF0D}",
            "\u{FF11}",
            "\u{661}",
            "é",
            "É",
            "ſ",
            "ﬆ",
            "ı",
            "\u{212A}",
            "ß",
            "Ł",
            "’",
            "ʼ",
            "n/a",
            "N/A",
            "na",
            "N A",
            "n.k.",
            "nk",
            "N/K",
            "null",
            "NuLl",
            "none",
            "not known",
            "Not Known",
            "NOT  KNOWN",
            "unknown",
            "unk",
            "not stated",
            "tbc",
            "xx",
            "Xx",
            "baby",
            "Baby",
            "girl",
            "twin",
            "of",
            "infant",
            "Jan",
            "MAR",
            "sept",
            "Sep",
            "May",
            "March",
            "september",
            "00:00",
            "00:00:00",
            "12:00 AM",
            "00:00:00.000Z",
            "+01:00",
            "AM",
            "pm",
            "GIR",
            "0AA",
        ];
        prop_oneof![
            4 => "[0-9]{1,4}",
            1 => "[0-9]{5,13}",
            3 => "[A-Za-z]{1,6}",
            1 => "[A-Z]{1,2}[0-9]{1,2}[A-Z]? ?[0-9][A-Z]{2}",
            6 => select(PIECES).prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ]
    }

    /// Values made of [`token`]s, sometimes padded with whitespace up to
    /// and past [`MAX_FIELD_BYTES`].
    fn tricky() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(token(), 0..10),
            prop_oneof![8 => Just(0usize), 1 => 0usize..8, 1 => 240usize..260],
            select(&[" ", "\t", "\u{A0}", "\u{3000}", "\x0B"][..]),
            any::<bool>(),
        )
            .prop_map(|(tokens, pad, ws, front)| {
                let s = tokens.concat();
                let padding = ws.repeat(pad / ws.len().max(1));
                if front {
                    padding + &s
                } else {
                    s + &padding
                }
            })
    }

    /// NHS-number-like values: ten or so digits (sometimes a valid number,
    /// sometimes one digit repeated) with separators between groups.
    fn nhs_like() -> impl Strategy<Value = String> {
        let digits = prop_oneof![
            "[0-9]{9,11}",
            "[0-9]{9}".prop_map(|n| {
                let sum: u32 = n
                    .bytes()
                    .zip((2..=10u32).rev())
                    .map(|(b, w)| u32::from(b - b'0') * w)
                    .sum();
                format!("{n}{}", (11 - sum % 11) % 11 % 10)
            }),
            (0u8..10).prop_map(|d| char::from(b'0' + d).to_string().repeat(10)),
        ];
        let sep = select(
            &[
                "", " ", "-", ".", "\t", "\x0B", "\u{2013}", "\u{A0}", "/", "\u{FF10}",
            ][..],
        );
        (digits, sep.clone(), sep, 0usize..4, 0usize..12).prop_map(|(d, a, b, i, j)| {
            let (i, j) = (i.min(d.len()), (i + j).min(d.len()));
            format!("{}{a}{}{b}{}", &d[..i], &d[i..j], &d[j..])
        })
    }

    /// UPN-like values: a letter and twelve characters, with spaces.
    fn upn_like() -> impl Strategy<Value = String> {
        (
            "[A-Za-z0-9]",
            "[0-9]{10,12}",
            "[0-9A-Za-z]?",
            select(&["", " ", "  ", "\u{A0}", "-"][..]),
        )
            .prop_map(|(a, b, c, sep)| format!("{a}{sep}{}{sep}{}{c}", &b[..3], &b[3..]))
    }

    /// Date-like values in every format used here, with day and month out
    /// of range, two- and four-digit years, month names in odd case, time
    /// suffixes and whitespace.
    fn date_like() -> impl Strategy<Value = String> {
        const MONTHS: [&str; 14] = [
            "Jan", "FEB", "mar", "Apr", "may", "JUN", "Jul", "aug", "Sept", "SEP", "oct", "Nov",
            "dec", "Mrz",
        ];
        const SUFFIXES: [&str; 12] = [
            "",
            " 00:00:00",
            "T00:00:00",
            "T00:00:00Z",
            "t10:30:05+01:00",
            " 12:00 AM",
            "  0:00",
            " 00:00:00.0000000",
            " junk",
            "T",
            " 00",
            " 00:00 +0000",
        ];
        (
            0u8..40,
            0u8..15,
            prop_oneof![1985i32..2030, 0i32..100, 0i32..10_000],
            0usize..7,
            any::<bool>(),
            select(&SUFFIXES[..]),
            select(&["", " ", "\t", "\u{A0}"][..]),
        )
            .prop_map(|(d, m, y, shape, pad, suffix, ws)| {
                let dd = if pad {
                    format!("{d:02}")
                } else {
                    d.to_string()
                };
                let mm = if pad {
                    format!("{m:02}")
                } else {
                    m.to_string()
                };
                let mon = MONTHS[usize::from(m) % MONTHS.len()];
                let date = match shape {
                    0 => format!("{y:04}-{mm}-{dd}"),
                    1 => format!("{dd}/{mm}/{y:04}"),
                    2 => format!("{dd}-{mon}-{y:04}"),
                    3 => format!("{dd}.{mm}.{:02}", y % 100),
                    4 => format!("{y:04}{m:02}{d:02}"),
                    5 => format!("{dd} {mon}ember {y}"),
                    _ => format!("{dd}{mm}{y}"),
                };
                format!("{ws}{date}{suffix}{ws}")
            })
    }

    /// Any of the above, or arbitrary text.
    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => tricky(),
            2 => nhs_like(),
            2 => upn_like(),
            2 => date_like(),
            1 => "\\PC{0,40}",
            1 => ".{0,300}",
        ]
    }

    /// The column maps' formats (testdata/*.toml), the defaults, and
    /// others with two-digit years, full month names and no separators.
    fn format_lists() -> Vec<Vec<DateFormat>> {
        let lists: [&[&str]; 8] = [
            &[],
            &["%d/%m/%Y"],
            &["%Y-%m-%d"],
            &["%d-%b-%Y"],
            &["%d.%m.%y", "%Y%m%d"],
            &["%d %B %Y", "%d%m%Y"],
            &["%y-%m-%d", "%d/%m/%y"],
            &["%Y-%m-%d", "%d/%m/%Y", "%d-%b-%Y"],
        ];
        lists
            .iter()
            .map(|l| l.iter().map(|f| DateFormat::compile(f).unwrap()).collect())
            .collect()
    }

    fn todays() -> [Date; 4] {
        [
            Date::new(2026, 11, 22).unwrap(),
            Date::new(2015, 3, 12).unwrap(),
            Date::new(1999, 12, 31).unwrap(),
            Date::new(2100, 1, 1).unwrap(),
        ]
    }

    #[test]
    fn fixed_cases_agree() {
        let cases = [
            "",
            " ",
            "\x0B943 476 5919\x0B",
            "\x1C9434765919",
            "943 476 5919\u{A0}",
            "\u{A0}943 476 5919",
            "943\u{2013}476\u{2013}5919",
            "94347659190",
            "943476591X0",
            "94347659190X",
            "0000000000",
            " - ",
            "N/A",
            " n/a\t",
            "not ſtated",
            "NOT ﬆATED",
            "UNK",
            "\u{212A}",
            "h801 2000 01001",
            "H8012000010011!",
            "H801200001001!",
            "sw1a1aa",
            "SW1A 1AA\u{3000}",
            "GIR 0AA",
            "Mary Jane",
            "Mary  Jane",
            "Mary-Jane",
            " o'brien ",
            "BABY",
            "baby of smith",
            "N A",
            "n k",
            "12/03/2015 00:00",
            "12-Sept-2015",
            "31/02/2015",
            "12.03.27",
            "\u{FEFF}2015-03-12",
        ];
        let lists = format_lists();
        for s in cases {
            check_all(s, &lists);
        }
    }

    fn check_all(s: &str, lists: &[Vec<DateFormat>]) {
        assert_eq!(trim(s), s.trim(), "trim {s:?}");
        assert_eq!(
            is_null_marker(s),
            super::is_null_marker(s),
            "is_null_marker {s:?}"
        );
        let t = s.trim();
        assert_eq!(
            t.is_empty() || is_null_marker_uppercased(t),
            coded_is_missing(t),
            "coded {s:?}"
        );
        assert_eq!(free_text(s), super::free_text(s), "free_text {s:?}");
        assert_eq!(name(s), super::name(s), "name {s:?}");
        assert_eq!(postcode(s), super::postcode(s), "postcode {s:?}");
        assert_eq!(nhs_number(s), super::nhs_number(s), "nhs_number {s:?}");
        assert_eq!(upn(s), super::upn(s), "upn {s:?}");
        for formats in lists {
            for today in todays() {
                assert_eq!(
                    date_of_birth(s, formats, today),
                    super::date_of_birth(s, formats, today),
                    "date_of_birth {s:?} {today} {:?}",
                    formats.iter().map(DateFormat::as_str).collect::<Vec<_>>()
                );
            }
        }
    }

    proptest! {
        #[test]
        fn fast_paths_agree_with_the_originals(s in any_value()) {
            check_all(&s, &format_lists());
        }

        #[test]
        fn fast_paths_agree_on_near_misses(s in "[0-9A-Za-z /:.\\-'’é \\x0B\\u{A0}]{0,24}") {
            check_all(&s, &format_lists());
        }

        #[test]
        fn null_marker_checks_agree(
            m in select(&NULL_MARKERS[..]),
            flips in any::<u16>(),
            tail in select(&["", " ", "X", "\u{A0}", "."][..]),
        ) {
            // Markers in mixed case, some with something after them.
            let s: String = m
                .chars()
                .enumerate()
                .map(|(i, c)| if flips >> (i % 16) & 1 == 1 { c.to_ascii_lowercase() } else { c })
                .collect::<String>()
                + tail;
            check_all(&s, &format_lists());
            prop_assert_eq!(is_null_marker(&s), super::is_null_marker(&s));
        }
    }
}
