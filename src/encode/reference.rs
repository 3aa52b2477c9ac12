//! A deliberately naive encoder, row by row, straight from the library's primitives (decode,
//! normalise, tokenise, keyed positions, [`Hardener::apply`], keyed exact tokens), with no
//! cache of any kind: the specification the fast engine is tested against. Every cache of the
//! engine (entries, salted entries, values, token positions, embedded and cached keyed tokens,
//! the XOR combination of stored forms) must be invisible in its output.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::{decode, normalise_value, EncodeOptions, Encoded, Records};
use crate::colmap::ColumnMap;
use crate::date::Date;
use crate::harden::{Hardener, Scratch};
use crate::key::LinkageKey;
use crate::normalise::MAX_FIELD_BYTES;
use crate::schema::{SaltMissing, Schema};
use crate::tokens::{self, Hasher, Value, TOKEN_PART_SEPARATOR};

/// What the reference makes of an export: the records, and the rejected rows with reasons,
/// and per field (present, missing, invalid) counts.
struct Reference {
    records: Records,
    rejects: Vec<(u64, &'static str)>,
    counts: Vec<(u64, u64, u64)>,
}

/// One field's value in a row: missing, invalid (bytes or content), or present.
enum Got {
    Missing,
    Invalid,
    BadBytes,
    Present(Value),
}

fn reference(
    data: &[u8],
    key: &LinkageKey,
    schema: &Schema,
    map: &ColumnMap,
    today: Date,
) -> Reference {
    let hasher = Hasher::new(key, schema);
    let hardener = Hardener::new(key, schema);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(map.delimiter)
        .from_reader(data);
    let mut recs = rdr.byte_records();
    let mut header: Vec<String> = recs
        .next()
        .expect("a header")
        .expect("readable")
        .iter()
        .map(|h| {
            let mut buf = String::new();
            decode(map.encoding, h, &mut buf)
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    // Decided as the engine does, from the rows after the header.
    let body = {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(map.delimiter)
            .from_reader(data);
        let _ = r.byte_records().next();
        &data[r.position().byte() as usize..]
    };
    let (columns, trailing_delimiter) = super::engine::export_shape(body, map.delimiter, &header);
    header.truncate(columns);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .expect("mapped column")
    };
    let id_col = col(&map.record_id);
    let sources: Vec<(usize, usize)> = map
        .columns
        .iter()
        .map(|(field, column)| (schema.field_index(field).unwrap(), col(column)))
        .collect();
    let nf = schema.fields.len();
    let mut counts = vec![(0u64, 0u64, 0u64); nf];
    let mut records = Records {
        words: schema.stored_words(),
        segments: schema.segments.len(),
        id_offsets: vec![0],
        token_offsets: vec![0],
        ..Default::default()
    };
    let mut rejects = Vec::new();
    let mut seen_ids: HashMap<String, ()> = HashMap::new();
    let mut scratch = Scratch::default();
    let mut buf = String::new();
    for (i, rec) in recs.enumerate() {
        let row = i as u64 + 1;
        let rec = rec.expect("readable");
        if rec.iter().all(|f| {
            f.iter()
                .all(|b| b.is_ascii_whitespace() || *b == super::DOS_END)
        }) {
            rejects.push((row, "empty_row"));
            continue;
        }
        let trailing_empty =
            trailing_delimiter && rec.len() == header.len() + 1 && rec[header.len()].is_empty();
        if rec.len() != header.len() && !trailing_empty {
            let breaks: u64 = rec.iter().map(super::blocks::line_breaks).sum();
            let reason = if breaks == 0 {
                "wrong_field_count"
            } else {
                "unclosed_quote"
            };
            rejects.push((row, reason));
            continue;
        }
        // Swallowed rows in a column the map reads: a stray quote in a row of the right shape.
        let mapped = std::iter::once(id_col).chain(sources.iter().map(|s| s.1));
        let swallowed = |c: usize| {
            let v = &rec[c];
            v.iter().any(|&b| b == b'\n' || b == b'\r')
                && v.iter().filter(|&&b| b == map.delimiter).count() + 1 >= header.len()
        };
        if mapped.into_iter().any(swallowed) {
            rejects.push((row, "unclosed_quote"));
            continue;
        }
        let id = match decode(map.encoding, &rec[id_col], &mut buf).map(|s| s.trim().to_string()) {
            None => {
                rejects.push((row, "invalid_encoding"));
                continue;
            }
            Some(id) if id.is_empty() => {
                rejects.push((row, "missing_record_id"));
                continue;
            }
            Some(id)
                if id.trim_start_matches('\u{FEFF}').trim() == header[id_col].trim()
                    && rec.iter().zip(&header).all(|(f, h)| {
                        let mut b = String::new();
                        decode(map.encoding, f, &mut b)
                            .is_some_and(|v| v.trim_start_matches('\u{FEFF}').trim() == h.trim())
                    }) =>
            {
                rejects.push((row, "repeated_header"));
                continue;
            }
            Some(id) if id.len() > super::MAX_RECORD_ID_BYTES => {
                rejects.push((row, "record_id_too_long"));
                continue;
            }
            Some(id) => id,
        };
        // Every mapped field's value, counted.
        let mut values: Vec<Option<Value>> = vec![None; nf];
        let mut bad_bytes = false;
        for &(fi, c) in &sources {
            let raw = &rec[c];
            let got = if raw.len() > MAX_FIELD_BYTES {
                Got::Invalid
            } else {
                match decode(map.encoding, raw, &mut buf) {
                    None => Got::BadBytes,
                    Some(text) => {
                        match normalise_value(schema.fields[fi].def.normaliser, text, map, today) {
                            Err(_) => Got::Invalid,
                            Ok(None) => Got::Missing,
                            Ok(Some(v)) => Got::Present(v),
                        }
                    }
                }
            };
            match got {
                Got::Missing => counts[fi].1 += 1,
                Got::Invalid => counts[fi].2 += 1,
                Got::BadBytes => {
                    counts[fi].2 += 1;
                    bad_bytes = true;
                }
                Got::Present(v) => {
                    counts[fi].0 += 1;
                    values[fi] = Some(v);
                }
            }
        }
        for fi in (0..nf).filter(|fi| !sources.iter().any(|s| s.0 == *fi)) {
            counts[fi].1 += 1;
        }
        if bad_bytes {
            rejects.push((row, "invalid_encoding"));
            continue;
        }
        // The salt, and which fields set bits.
        let salt = schema.salt.as_ref();
        let salt_text: Option<String> = salt.and_then(|s| {
            values[s.source.0]
                .as_ref()
                .and_then(|v| tokens::part_text(v, s.source.1))
        });
        let no_bits = |fi: usize| {
            salt.is_some_and(|s| {
                s.salted[fi] && salt_text.is_none() && s.when_missing == SaltMissing::Skip
            })
        };
        let in_filter = (0..nf)
            .filter(|&fi| {
                values[fi].is_some() && schema.fields[fi].segment.is_some() && !no_bits(fi)
            })
            .count() as u32;
        if in_filter < schema.def.min_fields {
            rejects.push((row, "too_few_fields"));
            continue;
        }
        if seen_ids.insert(id.clone(), ()).is_some() {
            rejects.push((row, "duplicate_record_id"));
            continue;
        }
        // The hashed filter.
        let mut raw = vec![0u64; schema.words()];
        for (fi, f) in schema.fields.iter().enumerate() {
            let (Some(v), Some(seg)) = (&values[fi], f.segment) else {
                continue;
            };
            if no_bits(fi) {
                continue;
            }
            let mut toks = Vec::new();
            tokens::tokenise(v, f.def.tokeniser, &mut toks);
            for t in toks {
                let msg = match salt.filter(|s| s.salted[fi]) {
                    None => t,
                    Some(_) => {
                        let mut m = vec![TOKEN_PART_SEPARATOR];
                        m.extend_from_slice(salt_text.as_deref().unwrap_or("").as_bytes());
                        m.push(TOKEN_PART_SEPARATOR);
                        m.extend_from_slice(&t);
                        m
                    }
                };
                let mut pos = Vec::new();
                hasher.positions(seg, f.def.bits_per_token, &msg, &mut pos);
                for p in pos {
                    raw[(p / 64) as usize] |= 1 << (p % 64);
                }
            }
        }
        let filter = if hardener.transforms() {
            let mut stored = vec![0u64; schema.stored_words()];
            hardener.apply(&raw, &mut stored, &map.agency, &id, &mut scratch);
            stored
        } else {
            raw
        };
        // Keyed exact tokens.
        let mut toks = Vec::new();
        for (kind, t) in schema.tokens.iter().enumerate() {
            let parts: Option<Vec<String>> = t
                .parts
                .iter()
                .map(|&(fi, tr)| values[fi].as_ref().and_then(|v| tokens::part_text(v, tr)))
                .collect();
            if let Some(parts) = parts {
                let msg = parts.join("\u{1f}");
                toks.push(hasher.exact_token(kind, msg.as_bytes()));
            }
        }
        toks.sort_unstable();
        let ones = |w: &[u64]| w.iter().map(|x| x.count_ones()).sum::<u32>() as u16;
        records.popcounts.push(ones(&filter));
        for s in &schema.stored_segments {
            records.popcounts.push(ones(&filter[s.word_range()]));
        }
        records.filters.extend_from_slice(&filter);
        records.tokens.extend_from_slice(&toks);
        records.token_offsets.push(records.tokens.len() as u32);
        records.push_id(&id);
    }
    Reference {
        records,
        rejects,
        counts,
    }
}

fn key() -> LinkageKey {
    crate::key::test_key("Reference test")
}

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// The example schemas, the built-in one, and variants that reach the engine's other paths:
/// salting that skips unsalted records, and a keyed token of three parts (never cached).
fn schemas() -> Vec<(String, Schema)> {
    let mut out = vec![("built-in".to_string(), Schema::default_uk())];
    let dir = testdata("schemas");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).unwrap();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        out.push((name.clone(), Schema::from_toml(&text, &name).unwrap()));
        if name == "salt-yob+diffusion" {
            let skip = text.replace("when_missing = \"marker\"", "when_missing = \"skip\"");
            assert_ne!(skip, text);
            out.push((
                format!("{name} (skip)"),
                Schema::from_toml(&skip, "skip").unwrap(),
            ));
            let three = format!(
                "{text}\n[[token]]\nname = \"three\"\nparts = [\"given_name:initial\", \"family_name\", \"postcode:outward\"]\n"
            );
            out.push((
                format!("{name} (three)"),
                Schema::from_toml(&three, "three").unwrap(),
            ));
        }
    }
    out
}

fn map(agency: &str) -> ColumnMap {
    let path = testdata(&format!("{agency}.toml"));
    ColumnMap::from_toml(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
}

/// Cache limits small enough that, on a few thousand rows, caches switch themselves off,
/// workers empty caches that outgrow their bounds, and most salts have no position table.
fn tiny_limits() -> super::engine::Limits {
    super::engine::Limits {
        probe: 64,
        max_dict_words: 1 << 12,
        max_interned: 1 << 9,
        max_cached: 1 << 8,
        max_salts: 4,
    }
}

fn encode(
    data: &[u8],
    key: &LinkageKey,
    schema: &Schema,
    map: &ColumnMap,
    limits: super::engine::Limits,
    threads: usize,
) -> Encoded {
    let opts = EncodeOptions {
        today: Date::new(2026, 6, 1).unwrap(),
        threads,
        ..Default::default()
    };
    super::encode_reader_with(
        data,
        Path::new("reference-test.csv"),
        data.len() as u64,
        key,
        schema,
        map,
        &opts,
        limits,
    )
    .unwrap()
}

fn assert_same(what: &str, got: &Encoded, want: &Reference) {
    let (g, w) = (&got.records, &want.records);
    assert_eq!(g.len(), w.len(), "{what}: records");
    for i in 0..w.len() {
        assert_eq!(g.id(i), w.id(i), "{what}: id of record {i}");
        assert_eq!(
            g.filter(i),
            w.filter(i),
            "{what}: filter of record {i} ({})",
            w.id(i)
        );
        assert_eq!(
            g.tokens_of(i),
            w.tokens_of(i),
            "{what}: tokens of record {i} ({})",
            w.id(i)
        );
    }
    assert_eq!(g.popcounts, w.popcounts, "{what}: popcounts");
    let rejects: Vec<(u64, &str)> = got.rejects.iter().map(|r| (r.row, r.reason)).collect();
    assert_eq!(rejects, want.rejects, "{what}: rejects");
    for (fi, (s, &(present, missing, invalid))) in
        got.report.fields.iter().zip(&want.counts).enumerate()
    {
        assert_eq!(
            (s.present, s.missing, s.invalid_total()),
            (present, missing, invalid),
            "{what}: counts of field {fi} ({})",
            s.field
        );
    }
}

/// An export of `rows` rows in the testdata health layout that stresses the engine: names
/// repeated under many years of birth, unique names, missing and invalid dates (no salt),
/// null markers, non-ASCII names, invalid bytes, wrong field counts, empty and duplicate ids,
/// over-long values and the like. Deterministic.
fn awkward_health(rows: usize) -> Vec<u8> {
    let mut out =
        b"Patient ID,NHS Number,Forename,Middle Names,Surname,Date of Birth,Gender,Postcode\n"
            .to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let names = [
        "Amelia",
        "Mohammed",
        "Zoë",
        "O'Brien",
        "Łukasz",
        "Mary-Jane",
        "N/A",
        "",
        "BABY",
        "Nguyễn",
    ];
    let surnames = [
        "Smith",
        "Khan",
        "Kowalski",
        "Ó Súilleabháin",
        "Jones-Smith",
        "NULL",
        "Tran",
    ];
    let postcodes = [
        "SW1A 1AA", "ls6 2ab", "M1 1AE", "INVALID", "", "B33 8TH", "CR2 6XH", "DN55 1PT",
    ];
    let nhs = [
        "943 476 5919",
        "9434765918",
        "",
        "401 023 2137",
        "0000000000",
    ];
    for r in 0..rows {
        let id = match next(60) {
            0 => String::new(),
            1 => format!("H{}", r.saturating_sub(3)),
            _ => format!("H{r}"),
        };
        let given = match next(5) {
            0 => format!("Uniq{}", next(1_000_000)),
            _ => names[next(names.len() as u64) as usize].to_string(),
        };
        let middle = if next(3) == 0 {
            names[next(names.len() as u64) as usize].to_string()
        } else {
            String::new()
        };
        let family = match next(6) {
            0 => format!("Fam{}", next(100_000)),
            _ => surnames[next(surnames.len() as u64) as usize].to_string(),
        };
        let dob = match next(25) {
            0 => String::new(),
            1 => "31/02/2015".to_string(),
            2 => "not a date".to_string(),
            _ => format!(
                "{:02}/{:02}/{}",
                1 + next(28),
                1 + next(12),
                1995 + next(30)
            ),
        };
        let sex = ["M", "F", "U", "", "X"][next(5) as usize];
        let pc = postcodes[next(postcodes.len() as u64) as usize];
        let nh = nhs[next(nhs.len() as u64) as usize];
        let mut line = format!("{id},{nh},\"{given}\",{middle},\"{family}\",{dob},{sex},{pc}");
        match next(40) {
            0 => line.push_str(",extra"),
            1 => line = line.replacen(',', "", 1),
            2 => line = format!("{id},{nh},{},,Smith,01/01/2010,M,SW1A 1AA", "Z".repeat(300)),
            _ => {}
        }
        let mut bytes = line.into_bytes();
        if next(30) == 0 {
            // Bytes that are not UTF-8, inside the last field.
            bytes.extend_from_slice(b"\xff");
        }
        out.extend_from_slice(&bytes);
        out.push(b'\n');
    }
    out
}

#[test]
fn the_engine_encodes_testdata_exactly_as_the_naive_reference_does() {
    let key = key();
    let today = Date::new(2026, 6, 1).unwrap();
    for agency in ["health", "police", "education"] {
        let data = std::fs::read(testdata(&format!("{agency}.csv"))).unwrap();
        let bare = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&data);
        let map = map(agency);
        for (name, schema) in schemas() {
            let want = reference(bare, &key, &schema, &map, today);
            for (limits, lname) in [
                (super::engine::Limits::default(), "default"),
                (tiny_limits(), "tiny"),
            ] {
                let got = encode(&data, &key, &schema, &map, limits, 2);
                assert_same(&format!("{agency} / {name} / {lname} limits"), &got, &want);
            }
        }
    }
}

#[test]
fn the_engine_matches_the_reference_on_an_awkward_export() {
    let key = key();
    let today = Date::new(2026, 6, 1).unwrap();
    let data = awkward_health(3000);
    let map = map("health");
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, schema) in schemas() {
        let want = reference(&data, &key, &schema, &map, today);
        for r in &want.rejects {
            *reasons.entry(r.1).or_default() += 1;
        }
        for (limits, lname, threads) in [
            (super::engine::Limits::default(), "default", 2),
            (tiny_limits(), "tiny", 1),
            (tiny_limits(), "tiny", 2),
        ] {
            let got = encode(&data, &key, &schema, &map, limits, threads);
            assert_same(
                &format!("awkward / {name} / {lname} limits / {threads} threads"),
                &got,
                &want,
            );
        }
    }
    // The export reaches every kind of rejection the engine makes.
    for reason in [
        "wrong_field_count",
        "missing_record_id",
        "duplicate_record_id",
        "invalid_encoding",
        "too_few_fields",
    ] {
        assert!(reasons.contains_key(reason), "no {reason} in {reasons:?}");
    }
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of field values, valid and broken: values every normaliser accepts or refuses,
    /// null markers, non-ASCII text, bytes that are not UTF-8, a byte-order mark, quotes and
    /// spaces.
    const VALUES: &[&[u8]] = &[
        b"H1",
        b"H2",
        b"H10",
        b"9434765918",
        b"943 476 5919",
        b"0000000000",
        b"Zo\xc3\xab",
        b"O'Brien",
        b"Mary-Jane",
        b"N/A",
        b"Smith",
        b"\xc5\x81ukasz",
        b"12/03/2015",
        b"2015-03-12",
        b"31/02/2015",
        b"12-Mar-2015",
        b"SW1A 1AA",
        b"ls6 2ab",
        b"M",
        b"F",
        b"U",
        b" ",
        b"\xff",
        b"\xef\xbb\xbf",
        b"\"",
        b"\"\"",
        b"",
    ];

    /// What can break a line's structure: delimiters (`D` stands for the file's), line ends,
    /// quotes (opening, escaped, around a delimiter), a comma where it is not the delimiter.
    const BREAKS: &[&[u8]] = &[
        b"D", b"DD", b"\n", b"\r\n", b"\r", b"\"", b"\"\"", b"\"D\"", b",",
    ];

    /// The first line of an agency's testdata export (with its byte-order mark if it has one).
    fn header(agency: &str) -> Vec<u8> {
        let file = std::fs::read(testdata(&format!("{agency}.csv"))).unwrap();
        let end = file.iter().position(|&b| b == b'\n').unwrap() + 1;
        file[..end].to_vec()
    }

    /// A line of `n` fields apart by `delim`, each a few value pieces (a whole field
    /// sometimes quoted), now and then broken at one place.
    fn line(delim: u8, n: usize) -> impl Strategy<Value = Vec<u8>> {
        let field = (proptest::collection::vec(0..VALUES.len(), 0..3), 0..8u8);
        (
            proptest::collection::vec(field, n),
            proptest::option::weighted(0.3, (0..BREAKS.len(), any::<proptest::sample::Index>())),
            any::<bool>(),
        )
            .prop_map(move |(fields, brk, crlf)| {
                let mut out = Vec::new();
                for (i, (pieces, quote)) in fields.into_iter().enumerate() {
                    if i > 0 {
                        out.push(delim);
                    }
                    let quoted = quote == 0;
                    if quoted {
                        out.push(b'"');
                    }
                    for p in pieces {
                        let v = VALUES[p];
                        // Quotes inside a quoted field are escaped, as exports do.
                        if quoted && v.contains(&b'"') {
                            out.extend(v.iter().flat_map(|&b| {
                                if b == b'"' {
                                    vec![b'"', b'"']
                                } else {
                                    vec![b]
                                }
                            }));
                        } else {
                            out.extend_from_slice(v);
                        }
                    }
                    if quoted {
                        out.push(b'"');
                    }
                }
                if let Some((b, at)) = brk {
                    let at = at.index(out.len() + 1);
                    let piece = BREAKS[b].iter().map(|&c| if c == b'D' { delim } else { c });
                    out.splice(at..at, piece.collect::<Vec<u8>>());
                }
                out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any export, however broken, is encoded exactly as the naive reference encodes it
        /// (same records, rejects and counts), or refused with an error when it has no data
        /// rows at all; the engine never panics, and every row read is encoded or rejected.
        #[test]
        fn any_export_is_encoded_as_the_reference_does(
            (agency, delim, lines) in (
                prop_oneof![Just("health"), Just("police"), Just("education")],
                prop_oneof![Just(b','), Just(b';'), Just(b'\t'), Just(b'|')],
            ).prop_flat_map(|(a, d)| {
                let n = header(a).iter().filter(|&&b| b == b',').count() + 1;
                (Just(a), Just(d), proptest::collection::vec(line(d, n), 0..60))
            }),
            last_newline in any::<bool>(),
            threads in 1usize..3,
            tiny in any::<bool>(),
        ) {
            // The agency's header, its columns apart by `delim`.
            let mut data: Vec<u8> =
                header(agency).iter().map(|&b| if b == b',' { delim } else { b }).collect();
            let header_len = data.len();
            for l in lines {
                data.extend_from_slice(&l);
            }
            if !last_newline && data.len() > header_len {
                while data.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                    data.pop();
                }
            }
            let (key, mut map, schema) = (key(), map(agency), Schema::default_uk());
            map.delimiter = delim;
            let today = Date::new(2026, 6, 1).unwrap();
            let limits = if tiny { tiny_limits() } else { super::super::engine::Limits::default() };
            let opts = EncodeOptions { today, threads, ..Default::default() };
            let got = super::super::encode_reader_with(
                data.as_slice(), Path::new("arbitrary.csv"), data.len() as u64,
                &key, &schema, &map, &opts, limits,
            );
            let bare = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&data);
            let want = reference(bare, &key, &schema, &map, today);
            match got {
                Ok(got) => {
                    let r = &got.report;
                    prop_assert_eq!(r.rows_read, r.encoded + r.rejected);
                    prop_assert_eq!(r.encoded, got.records.len() as u64);
                    prop_assert_eq!(r.rejected, got.rejects.len() as u64);
                    assert_same("arbitrary export", &got, &want);
                }
                Err(e) => {
                    prop_assert!(e.to_string().contains("no data rows"), "{}", e);
                    prop_assert!(want.records.is_empty() && want.rejects.is_empty());
                }
            }
        }
    }
}
