//! `bloomlink encode` as a user runs it: good input, every kind of bad input, outputs.

mod common;

use bloomlink::format::EncodingFile;
use common::*;
use predicates::prelude::*;
use predicates::str::contains;

const GOOD: &str = "H1,943 476 5919,Zoë,Mary,O'Brien,12/03/2015,F,sw1a 1aa\n\
H2,,Jack,,Smith-Jones,01/02/2016,M,LS6 2AB\n\
H3,,Aisha,,Khan,31/02/2015,F,M1 1AE\n";

#[test]
fn encodes_and_reconciles() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let j = success_json(f.encode().arg("--json"));
    let r = &j["report"];
    assert_eq!(r["rows_read"], 3);
    assert_eq!(r["encoded"], 3);
    assert_eq!(r["rejected"], 0);
    // The date that does not parse is counted as invalid, not fatal to the row.
    let dob = r["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["field"] == "date_of_birth")
        .unwrap();
    assert_eq!(dob["present"], 2);
    assert_eq!(dob["invalid"]["impossible_date"], 1);
    let file = EncodingFile::open(&f.path("out.clk")).unwrap();
    assert_eq!(file.len(), 3);
    assert_eq!(file.row_ref(0), "H1");
    assert_eq!(file.header().agency, "health");
    // The rejects file exists and has only its header.
    let rejects = f.rejects();
    assert_eq!(rejects.lines().count(), 1);
}

#[test]
fn human_summary_names_counts() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    f.encode()
        .assert()
        .success()
        .stdout(contains("rows read 3   encoded 3   rejected 0"))
        .stderr(contains("DEMO key"));
}

#[test]
fn missing_input_file() {
    let f = Fixture::new(b"");
    bloomlink()
        .args(["encode", "--quiet", "--key"])
        .arg(&f.key)
        .arg("--columns")
        .arg(&f.map)
        .arg(f.path("nope.csv"))
        .arg("-o")
        .arg(f.path("x.clk"))
        .assert()
        .code(1)
        .stderr(contains("nope.csv"));
}

#[test]
fn missing_column_lists_columns_found() {
    let f = Fixture::new(b"Patient ID,Forename,Surname\nH1,Jack,Smith\n");
    f.encode()
        .assert()
        .code(1)
        .stderr(contains(
            "no columns `Date of Birth`, `NHS Number`, `Middle Names`, `Postcode`, `Gender`",
        ))
        .stderr(contains(
            "columns found: `Patient ID`, `Forename`, `Surname`",
        ));
    assert!(!f.path("out.clk").exists());
}

#[test]
fn headerless_export_is_detected_without_echoing_values() {
    // The first row is data: its values must not appear in the error.
    let f = Fixture::new(b"H1,9434765919,Jack,,Smith,12/03/2015,M,LS6 2AB\n");
    f.encode()
        .assert()
        .code(1)
        .stderr(contains("looks like data"))
        .stderr(contains("Smith").not())
        .stderr(contains("9434765919").not());
}

/// Line 1 that is not evidently a header never has its cells shown: no header row with values
/// the date and identifier checks do not recognise, a wrong delimiter, a stray quote joining
/// the header to the first record.
#[test]
fn header_errors_never_echo_a_record() {
    let planted = ["ZZPLANTNAME", "ZZPLANTSUR", "ZX99 9Z"];
    let row = "HZZ1,9434765918,ZZPLANTNAME,,ZZPLANTSUR,2015-02-01,M,ZX99 9Z\n";
    let cases = [
        (row.to_string(), "looks like data"),
        (row.replace(',', ";"), "separated by `;`"),
        (
            format!("{}{row}", HEALTH_HEADER.replace("Postcode", "\"Postcode")),
            "unclosed quote",
        ),
        // The header's line break lost: line 1 holds the header and then the record, whose
        // names look like column names (found by fuzzing: before, they were listed).
        (
            format!("{}{row}", HEALTH_HEADER.trim_end()),
            "line 1 may run into a record: its column 9 looks like a value",
        ),
        // … also when the record starts with names, before any value-like cell (found by a
        // review: the names before the first value were still listed).
        (
            format!(
                "{},RefZZPLANTSUR,ZZPLANTNAME,12/03/2015,M,ZX99 9Z\n{GOOD}",
                HEALTH_HEADER.trim_end().replace(",Postcode", "")
            ),
            "line 1 may run into a record",
        ),
    ];
    for (input, says) in cases {
        let f = Fixture::new(input.as_bytes());
        let log = f.path("audit.jsonl");
        let mut a = f.encode().arg("--audit-log").arg(&log).assert().code(1);
        a = a.stderr(contains(says));
        for p in planted {
            a = a.stderr(contains(p).not());
        }
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(planted.iter().all(|p| !logged.contains(p)), "{logged}");
    }
    // A header whose names differ only in case is a header: listed, with the near miss named.
    let f =
        Fixture::new(format!("{}{GOOD}", HEALTH_HEADER.replace("Surname", "SURNAME")).as_bytes());
    f.encode()
        .assert()
        .code(1)
        .stderr(contains("the header has `SURNAME` for `Surname`"))
        .stderr(contains("columns found: `Patient ID`"));
    // Or in no-break spaces and invisible characters, written out since they look the same.
    let header = HEALTH_HEADER
        .replace("Date of Birth", "Date\u{a0}of Birth")
        .replace("Surname", "Surname\u{200b}");
    let f = Fixture::new(format!("{header}{GOOD}").as_bytes());
    f.encode().assert().code(1).stderr(
        contains("`Date\\u{00A0}of Birth` for `Date of Birth`")
            .and(contains("`Surname\\u{200B}` for `Surname`")),
    );
    // Lines that exporters write before the header are named, with the fix.
    for (line, says) in [
        (
            "#TYPE System.Data.DataRow\n",
            "Export-Csv -NoTypeInformation",
        ),
        ("sep=,\n", "Excel's `sep=` line"),
    ] {
        let f = Fixture::new(format!("{line}{HEALTH_HEADER}{GOOD}").as_bytes());
        f.encode().assert().code(1).stderr(contains(says));
    }
}

/// A stray quote swallows the lines up to the next quote into one field: the record is
/// rejected as `unclosed_quote`, the summary warns, and the swallowed lines count as rejected
/// rows towards --max-reject-rate (they were rows of the export).
#[test]
fn a_stray_quote_is_reported_with_the_lines_it_swallowed() {
    let mut rows = String::from(HEALTH_HEADER);
    for i in 1..=40 {
        let given = if i == 10 { "\"Stray" } else { "Jack" };
        let family = if i == 14 { "Smith\"" } else { "Smith" };
        rows.push_str(&format!("H{i},,{given},,{family},01/02/2016,M,LS6 2AB\n"));
    }
    let f = Fixture::new(rows.as_bytes());
    // Four lines (rows 10-14 as exported) became one record: 36 rows read, 4 lines swallowed.
    f.encode()
        .assert()
        .code(3)
        .stderr(contains("5 of 40 rows rejected").and(contains("4 line(s) swallowed")))
        .stderr(contains("rejects.csv"));
    let rejects = f.rejects();
    assert!(rejects.contains("unclosed_quote"), "{rejects}");
    assert!(rejects.contains("4 line break(s)"), "{rejects}");
    assert!(!f.path("out.clk").exists());
    let j = success_json(
        f.encode()
            .args(["--json", "--force", "--max-reject-rate", "0.2"]),
    );
    let r = &j["report"];
    assert_eq!(r["rows_read"], 36);
    assert_eq!(r["rejected"], 1);
    assert_eq!(r["reject_reasons"]["unclosed_quote"], 1);
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("swallowed 4 line(s)"), "{warnings}");
}

/// A stray quote in a column the map does not read (free-text notes) leaves the rows the right
/// shape, so they are encoded; the summary warns, naming the line, and tells real multi-line
/// notes apart from swallowed rows by the delimiters after the line break.
#[test]
fn a_stray_quote_in_an_unmapped_column_is_warned_about() {
    let export = |notes: &dyn Fn(usize) -> String| {
        let mut rows = HEALTH_HEADER.replace('\n', ",Notes\n");
        for i in 1..=30 {
            let n = notes(i);
            rows.push_str(&format!("H{i},,Jack,,Smith,01/02/2016,M,LS6 2AB,{n}\n"));
        }
        rows
    };
    // Row 10's note opens a quote that row 14's note closes: rows 11-13 are swallowed.
    let stray = export(&|i| match i {
        10 => "\"Mum called".into(),
        14 => "\"GP ok\"".into(),
        _ => "seen".into(),
    });
    let f = Fixture::new(stray.as_bytes());
    let j = success_json(f.encode().arg("--json"));
    assert_eq!(j["report"]["rows_read"], 26, "{j}");
    let warnings = j["report"]["warnings"].to_string();
    assert!(
        warnings.contains("run over 4 line break(s), the first at line 11")
            && warnings.contains("a whole row's worth of delimiters")
            && warnings.contains("rows read counts records, not lines"),
        "{warnings}"
    );
    // A real note over two lines: the softer warning.
    let note = export(&|i| {
        if i == 5 {
            "\"line one\nline two\"".into()
        } else {
            "seen".into()
        }
    });
    let f = Fixture::new(note.as_bytes());
    let j = success_json(f.encode().arg("--json"));
    assert_eq!(j["report"]["rows_read"], 30, "{j}");
    let warnings = j["report"]["warnings"].to_string();
    assert!(
        warnings.contains("1 encoded row(s) have quoted values")
            && warnings.contains("multi-line notes, or a stray quote")
            && !warnings.contains("whole row's worth"),
        "{warnings}"
    );
    // Without line breaks in values, no such warning.
    let f = Fixture::new(export(&|_| "seen".into()).as_bytes());
    let j = success_json(f.encode().arg("--json"));
    assert!(
        !j["report"]["warnings"]
            .to_string()
            .contains("quoted values"),
        "{j}"
    );
}

/// A quote left open to the end of the file takes in the file's last line break too: that
/// one starts no line, so it is no swallowed row.
#[test]
fn a_quote_open_to_the_end_of_the_file_swallows_only_the_lines_after_it() {
    let rows = |stray: usize| {
        let mut rows = String::from(HEALTH_HEADER);
        for i in 1..=20 {
            let given = if i == stray { "\"Stray" } else { "Jack" };
            rows.push_str(&format!("H{i},,{given},,Smith,01/02/2016,M,LS6 2AB\n"));
        }
        rows
    };
    // The last row: one rejected row of 20, none swallowed, within the default 5 %.
    let f = Fixture::new(rows(20).as_bytes());
    let j = success_json(f.encode().arg("--json"));
    assert_eq!(j["report"]["rows_read"], 20, "{j}");
    assert_eq!(j["report"]["rejected"], 1, "{j}");
    let rejects = f.rejects();
    assert!(rejects.contains("runs to the end of the file"), "{rejects}");
    // Row 18 swallows rows 19 and 20: three of 20 rows lost.
    let f = Fixture::new(rows(18).as_bytes());
    f.encode()
        .assert()
        .code(3)
        .stderr(contains("3 of 20 rows rejected").and(contains("2 line(s) swallowed")));
    let rejects = f.rejects();
    assert!(
        rejects.contains("2 line break(s) to about line 21"),
        "{rejects}"
    );
}

/// A spreadsheet's blank rows (delimiters only, or spaces) are listed as `empty_row` but do not
/// fail the run; a repeated header line (two exports joined) is rejected, not encoded as a
/// child called Forename Surname.
#[test]
fn empty_rows_and_repeated_headers_are_rejected_for_what_they_are() {
    let mut rows = String::from(HEALTH_HEADER);
    for i in 1..=10 {
        rows.push_str(&format!("H{i},,Jack,,Smith,01/02/2016,M,LS6 2AB\n"));
    }
    rows.push_str(",,,,,,,\n   \n , , ,,,,,\n");
    rows.push_str(HEALTH_HEADER);
    rows.push_str("H11,,Amy,,Jones,01/02/2016,F,LS6 2AB\n");
    let f = Fixture::new(rows.as_bytes());
    let j = success_json(f.encode().args(["--json", "--max-reject-rate", "0.1"]));
    let r = &j["report"];
    assert_eq!(r["rows_read"], 15, "{j}");
    assert_eq!(r["encoded"], 11, "{j}");
    assert_eq!(r["reject_reasons"]["empty_row"], 3, "{j}");
    assert_eq!(r["reject_reasons"]["repeated_header"], 1, "{j}");
    let rejects = f.rejects();
    assert!(
        rejects.contains("11,12,,,empty_row") && rejects.contains("13,14,,,empty_row"),
        "{rejects}"
    );
    assert!(rejects.contains("14,15,,,repeated_header"), "{rejects}");
    // Two Excel exports joined (the second's byte-order mark before its header), and a
    // Windows-1252 export whose header has a non-ASCII name: still the header.
    let f = Fixture::new(
        format!("{HEALTH_HEADER}H1,,Ann,,Lee,01/03/2015,F,LS6 2AB\n\u{FEFF}{HEALTH_HEADER}")
            .as_bytes(),
    );
    let j = success_json(f.encode().args(["--json", "--max-reject-rate", "1"]));
    assert_eq!(j["report"]["reject_reasons"]["repeated_header"], 1, "{j}");
    let cp_map = HEALTH_MAP
        .replace("given_name = \"Forename\"", "given_name = \"Prénom\"")
        .replace("date_formats", "encoding = \"windows-1252\"\ndate_formats");
    let header = HEALTH_HEADER.replace("Forename", "Pr\u{e9}nom");
    let mut input: Vec<u8> = Vec::new();
    for line in [
        header.as_str(),
        "H1,,Zo\u{eb},,Lee,01/03/2015,F,LS6 2AB\n",
        header.as_str(),
    ] {
        input.extend(line.chars().map(|c| u8::try_from(u32::from(c)).unwrap()));
    }
    let f = Fixture::with_map(&input, &cp_map);
    let j = success_json(f.encode().args(["--json", "--max-reject-rate", "1"]));
    assert_eq!(j["report"]["encoded"], 1, "{j}");
    assert_eq!(j["report"]["reject_reasons"]["repeated_header"], 1, "{j}");
    // Nothing but empty rows is an empty export, as a header-only file is.
    let f = Fixture::new(format!("{HEALTH_HEADER},,,,,,,\n,,,,,,,\n").as_bytes());
    f.encode()
        .assert()
        .code(1)
        .stderr(contains("only 2 empty row(s)"));
    let f = Fixture::new(rows.as_bytes());
    // The repeated header counts towards the rate (1 of 12), the empty rows do not.
    f.encode()
        .args(["--force", "--max-reject-rate", "0.08"])
        .assert()
        .code(3)
        .stderr(contains("1 of 12 rows rejected"));
}

/// An export cut short (a failed transfer) still parses, its last row cut in a value: the
/// run warns when the file does not end with a line break, as a whole export does.
#[test]
fn a_file_cut_short_is_warned_about() {
    let whole = format!("{HEALTH_HEADER}{GOOD}");
    let cut = &whole[..whole.len() - 6]; // "...,M1 1AE\n" becomes "...,M1"
    for (input, warned) in [(whole.as_str(), false), (cut, true)] {
        let f = Fixture::new(input.as_bytes());
        let j = success_json(f.encode().arg("--json"));
        let w = j["report"]["warnings"].to_string();
        assert_eq!(
            w.contains("does not end with a line break") && w.contains("row 3"),
            warned,
            "{w}"
        );
    }
}

/// A stray quote whose swallowed lines happen to close it in a row of the right shape: the
/// row's mapped column holds line breaks, so it is rejected, not encoded with the swallowed
/// text as a name and the lost rows counted nowhere.
#[test]
fn a_stray_quote_in_a_row_of_the_right_shape_is_rejected() {
    let input = format!(
        "{HEALTH_HEADER}H1,,\"Jack,,Smith,01/02/2016,M,LS6 2AB\n\
         H2,,Amy,,Jones,01/02/2016,F,LS6 2AB\n\
         H3,,Tom\",,Brown,01/03/2016,M,LS6 2AB\n{GOOD}"
    );
    let f = Fixture::new(input.as_bytes());
    let j = success_json(f.encode().arg("--json").arg("--max-reject-rate").arg("1"));
    assert_eq!(j["report"]["rows_read"], 4, "{j}");
    assert_eq!(j["report"]["encoded"], 3, "{j}");
    let rejects = f.rejects();
    assert!(
        rejects.contains("1,2,Forename,,unclosed_quote") && rejects.contains("to about line 4"),
        "{rejects}"
    );
    // The swallowed lines count towards the reject rate: 3 of 6 here.
    f.encode()
        .arg("--force")
        .arg("--max-reject-rate")
        .arg("0.4")
        .assert()
        .code(3)
        .stderr(contains("2 line(s) swallowed"));
    // A name merely written over two lines, even with a comma, is one value, as before.
    let two_lines = format!("{HEALTH_HEADER}H1,,\"Mary\nJane, Ann\",,Smith,01/02/2016,F,LS6 2AB\n");
    let h = Fixture::new(two_lines.as_bytes());
    let j = success_json(h.encode().arg("--json"));
    assert_eq!(j["report"]["encoded"], 1, "{j}");
    // A line break in a column the map does not read is data, as before.
    let notes =
        "Patient ID,NHS Number,Forename,Middle Names,Surname,Date of Birth,Gender,Postcode,Notes\n\
                 H1,,Jack,,Smith,01/02/2016,M,LS6 2AB,\"two\nlines\"\n";
    let g = Fixture::new(notes.as_bytes());
    let j = success_json(g.encode().arg("--json"));
    assert_eq!(j["report"]["encoded"], 1, "{j}");
}

#[test]
fn outputs_must_not_collide_with_the_input_or_each_other() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let before = std::fs::read(&f.input).unwrap();
    f.encode()
        .arg("--rejects")
        .arg(&f.input)
        .arg("--force")
        .assert()
        .code(1)
        .stderr(contains(
            "is the export being encoded, which this run reads",
        ));
    assert_eq!(std::fs::read(&f.input).unwrap(), before);
    // Nor the key, the column map or the schema, which --force would replace for good.
    let schema = f.path("schema.toml");
    std::fs::write(&schema, bloomlink::schema::DEFAULT_SCHEMA_TOML).unwrap();
    for (target, what) in [
        (&f.key, "the linkage key"),
        (&f.map, "the column map"),
        (&schema, "the schema"),
    ] {
        let before = std::fs::read(target).unwrap();
        f.encode_with(&f.input, target)
            .arg("--schema")
            .arg(&schema)
            .arg("--force")
            .assert()
            .code(1)
            .stderr(contains(what));
        f.encode()
            .arg("--schema")
            .arg(&schema)
            .arg("--rejects")
            .arg(target)
            .arg("--force")
            .assert()
            .code(1)
            .stderr(contains(what));
        assert_eq!(std::fs::read(target).unwrap(), before);
    }
    f.encode()
        .arg("--opaque-ids")
        .arg(f.path("out.clk"))
        .arg("--force")
        .assert()
        .code(1)
        .stderr(contains(
            "the opaque id map and the encoding file (-o) are both",
        ));
    assert!(!f.path("out.clk").exists());
}

/// An output path that is a directory is refused before any work (it used to fail only when
/// the encoding was written, after the rejects file, which then blocked the next run).
#[test]
fn an_output_directory_is_refused_up_front() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    std::fs::create_dir(f.path("out.clk")).unwrap();
    f.encode()
        .arg("--force")
        .assert()
        .code(2)
        .stderr(contains("out.clk is a directory"));
    assert!(!f.path("out.rejects.csv").exists());
    // The same for a directory given where an encoding file is read.
    bloomlink()
        .arg("inspect")
        .arg(f.path("out.clk"))
        .assert()
        .code(5)
        .stderr(contains("is a directory, not an encoding file"));
    // And synth, which writes a directory, refuses a file.
    bloomlink()
        .args(["synth", "--children", "3", "-o"])
        .arg(&f.input)
        .assert()
        .code(1)
        .stderr(contains("is a file"));
}

/// An export declared Windows-1252 that is UTF-8 decodes without an invalid byte but garbles
/// every accented name; one declared UTF-8 that is Windows-1252 loses the rows of every accented
/// name as `invalid_encoding`, under the reject limit. Both are refused (exit 3, no encoding),
/// naming the encoding to set; the rejects file is written. A real Windows-1252 export, and a
/// UTF-8 one, pass.
#[test]
fn an_export_in_another_encoding_than_declared_is_refused() {
    let cp1252_map =
        HEALTH_MAP.replace("record_id = ", "encoding = \"windows-1252\"\nrecord_id = ");
    let mut utf8 = String::from(HEALTH_HEADER);
    for i in 0..30 {
        let given = if i % 10 == 0 { "Zoë" } else { "Jack" };
        utf8.push_str(&format!("H{i},,{given},,Smith,01/02/2016,M,LS6 2AB\n"));
    }
    let cp1252: Vec<u8> = utf8
        .replace("ë", "\u{1}")
        .bytes()
        .map(|b| if b == 1 { 0xEB } else { b })
        .collect();
    // UTF-8 declared Windows-1252.
    let f = Fixture::with_map(utf8.as_bytes(), &cp1252_map);
    let j = failure_json(&mut f.encode(), 3);
    assert_eq!(j["outcome"], "wrong_encoding", "{j}");
    assert_eq!(j["declared_encoding"], "windows-1252");
    assert_eq!(j["rows_written"], 0);
    let e = j["error"].as_str().unwrap();
    assert!(
        e.contains("almost certainly UTF-8") && e.contains("Set encoding = \"utf-8\""),
        "{e}"
    );
    assert!(!f.path("out.clk").exists());
    // Windows-1252 declared UTF-8: 3 rows of 30 rejected (under a raised reject limit).
    let f = Fixture::new(&cp1252);
    let j = failure_json(f.encode().args(["--max-reject-rate", "0.5"]), 3);
    assert_eq!(j["outcome"], "wrong_encoding", "{j}");
    let e = j["error"].as_str().unwrap();
    assert!(e.contains("the 3 row(s) with such bytes"), "{e}");
    assert!(e.contains("Set encoding = \"windows-1252\""), "{e}");
    assert!(f.rejects().contains("invalid_encoding"));
    assert!(!f.path("out.clk").exists());
    // UTF-8 declared Windows-1252 whose non-ASCII letters are only in a column the map does
    // not read: nothing read is changed, so it passes with a warning; a record id with them is
    // read, so that is refused.
    let with_notes = |id_suffix: &str| {
        let mut s = HEALTH_HEADER.replace('\n', ",Notes\n");
        for i in 0..30 {
            let id = if i == 7 {
                format!("H{i}{id_suffix}")
            } else {
                format!("H{i}")
            };
            s.push_str(&format!(
                "{id},,Jack,,Smith,01/02/2016,M,LS6 2AB,café visit\n"
            ));
        }
        s
    };
    let f = Fixture::with_map(with_notes("").as_bytes(), &cp1252_map);
    let j = success_json(f.encode().arg("--json"));
    assert_eq!(j["rows_written"], 30);
    let w = j["report"]["warnings"].to_string();
    assert!(
        w.contains("only in columns the map does not read")
            && w.contains("encoding = \\\"utf-8\\\""),
        "{w}"
    );
    let f = Fixture::with_map(with_notes("é").as_bytes(), &cp1252_map);
    assert_eq!(
        failure_json(&mut f.encode(), 3)["outcome"],
        "wrong_encoding"
    );
    // Declared right, both pass without a word about encodings.
    for (input, map) in [
        (utf8.as_bytes(), HEALTH_MAP),
        (&cp1252[..], cp1252_map.as_str()),
    ] {
        let f = Fixture::with_map(input, map);
        let j = success_json(f.encode().arg("--json"));
        assert_eq!(j["rows_written"], 30);
        assert!(
            !j["report"]["warnings"].to_string().contains("UTF-8"),
            "{j}"
        );
    }
    // A damaged UTF-8 file (one bad byte among UTF-8 names) is no other encoding: the row is
    // rejected and the summary says why.
    let mut damaged = utf8.clone().into_bytes();
    damaged.extend_from_slice(b"H99,,Ja\xffck,,Smith,01/02/2016,M,LS6 2AB\n");
    let f = Fixture::new(&damaged);
    let j = success_json(f.encode().args(["--json", "--max-reject-rate", "0.5"]));
    assert_eq!(j["report"]["rejected"], 1);
    assert!(
        j["report"]["warnings"]
            .to_string()
            .contains("1 row(s) rejected as invalid_encoding"),
        "{j}"
    );
}

/// Outputs that are not regular files are refused up front, with --force too: an atomic write
/// renames a temporary file over the path, which would replace a device (`/dev/null`) or a
/// pipe with a regular file. A socket stands in for them here.
#[cfg(unix)]
#[test]
fn an_output_that_is_not_a_regular_file_is_refused() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let sock = f.path("out.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    f.encode_with(&f.input, &sock)
        .arg("--force")
        .assert()
        .code(2)
        .stderr(contains("is not a regular file"));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
    // Nor is an input that is not a file (standard input, a pipe).
    f.encode_with(&sock, &f.path("x.clk"))
        .assert()
        .code(1)
        .stderr(contains("save it to a file first"));
    // A thread count the machine cannot start is a usage error, not a panic.
    f.encode()
        .args(["--threads", "20000"])
        .assert()
        .code(2)
        .stderr(contains("0..=1024"));
    // The encoding is pseudonymised personal data: owner-only.
    f.encode().assert().success();
    assert_eq!(mode_of(&f.path("out.clk")), 0o600);
}

/// A date of birth invalid in a few percent of rows is warned about (other fields from 20 %):
/// those rows have no date to link on and, with salting, their names are salted as missing.
#[test]
fn a_few_invalid_dates_of_birth_are_warned_about() {
    let export = |bad: usize| {
        let mut rows = String::from(HEALTH_HEADER);
        for i in 0..50 {
            let dob = if i < bad { "2016-02-01" } else { "01/02/2016" };
            rows.push_str(&format!("H{i},,Jack,,Smith,{dob},M,LS6 2AB\n"));
        }
        rows
    };
    let warnings = |bad: usize| {
        let f = Fixture::new(export(bad).as_bytes());
        success_json(f.encode().arg("--json"))["report"]["warnings"].to_string()
    };
    let w = warnings(3);
    assert!(
        w.contains("field date_of_birth (column `Date of Birth`) is invalid in 6.0 % of rows")
            && w.contains("check date_formats")
            && w.contains("no date_of_birth to salt the salted fields with"),
        "{w}"
    );
    assert!(
        !warnings(1).contains("field date_of_birth"),
        "2 % is the limit"
    );
}

/// An NHS number column mostly invalid because a spreadsheet wrote the numbers in scientific
/// notation: the warning says to export them as text, without quoting any value.
#[test]
fn nhs_numbers_in_scientific_notation_get_the_spreadsheet_hint() {
    let mut rows = String::from(HEALTH_HEADER);
    for i in 0..20 {
        let nhs = if i < 6 { "9.43477E+09" } else { "943 476 5919" };
        rows.push_str(&format!("H{i},{nhs},Jack,,Smith,01/02/2016,M,LS6 2AB\n"));
    }
    let f = Fixture::new(rows.as_bytes());
    let j = success_json(f.encode().arg("--json"));
    let w = j["report"]["warnings"].to_string();
    assert!(
        w.contains("field nhs_number (column `NHS Number`) is invalid in 30.0 % of rows")
            && w.contains("export writes the numbers as text"),
        "{w}"
    );
    assert!(
        !w.contains("9.43477E+09"),
        "the value itself is not quoted: {w}"
    );
}

/// A mapped field that is mostly invalid (here a date format the export does not use) fails the
/// run: the encoding would link nothing on it (and a date of birth is the default schema's salt,
/// which the message says). The limit can be raised.
#[test]
fn a_mostly_invalid_field_fails_the_run() {
    let map = HEALTH_MAP.replace("%d/%m/%Y", "%Y-%m-%d");
    assert!(map.contains("%Y-%m-%d"));
    let mut rows = String::from(HEALTH_HEADER);
    for i in 1..=12 {
        rows.push_str(&format!("H{i},,Jack,,Smith,01/02/2016,M,LS6 2AB\n"));
    }
    let f = Fixture::with_map(rows.as_bytes(), &map);
    f.encode()
        .assert()
        .code(3)
        .stderr(contains(
            "field date_of_birth (column `Date of Birth`) is invalid in 100.0 %",
        ))
        .stderr(contains("check date_formats"))
        .stderr(contains(
            "it is also the salt: a row without it has given_name",
        ));
    assert!(!f.path("out.clk").exists());
    // Sex is no salt: its message says nothing about salts.
    let f = Fixture::with_map(rows.replace(",M,", ",Q,").as_bytes(), HEALTH_MAP);
    let e = failure_json(&mut f.encode(), 3)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.contains("field sex") && e.contains("[sex_codes]"), "{e}");
    assert!(!e.contains("salt"), "{e}");
    let j = success_json(
        f.encode()
            .args(["--json", "--force", "--max-invalid-rate", "1"]),
    );
    assert_eq!(j["report"]["encoded"], 12);
    assert_eq!(j["rows_written"], 12);
    // The shipped exports are far from the limit.
    for a in ["health", "police", "education"] {
        let out = f.path(&format!("{a}.clk"));
        bloomlink()
            .args(["encode", "-q", "--key"])
            .arg(&f.key)
            .arg("--columns")
            .arg(testdata(&format!("{a}.toml")))
            .arg(testdata(&format!("{a}.csv")))
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
    }
}

#[test]
fn empty_and_header_only_files() {
    let f = Fixture::new(b"");
    f.encode().assert().code(1).stderr(contains("is empty"));
    let f = Fixture::new(HEALTH_HEADER.as_bytes());
    f.encode().assert().code(1).stderr(contains("no data rows"));
    assert!(!f.path("out.clk").exists());
}

#[test]
fn wrong_field_count_is_rejected_with_row_and_line() {
    let input = format!("{HEALTH_HEADER}{GOOD}H4,Jack,Smith\n");
    let f = Fixture::new(input.as_bytes());
    f.encode()
        .arg("--max-reject-rate")
        .arg("0.5")
        .assert()
        .success();
    let rejects = f.rejects();
    assert!(
        rejects.contains("4,5,,,wrong_field_count,\"has 3 fields, the header has 8\""),
        "{rejects}"
    );
}

#[test]
fn too_many_rejects_fails_without_output() {
    let input = format!("{HEALTH_HEADER}{GOOD}H4,Jack,Smith\n");
    let f = Fixture::new(input.as_bytes());
    f.encode()
        .arg("--max-reject-rate")
        .arg("0.1")
        .assert()
        .code(3)
        .stderr(contains("1 of 4 rows rejected"));
    assert!(!f.path("out.clk").exists());
    // The rejects file is still written so the user can see why.
    assert!(f.path("out.rejects.csv").exists());
    // With --json, scripts still get the counts on stdout.
    let a = f
        .encode()
        .args(["--json", "--force", "--max-reject-rate", "0.1"])
        .assert()
        .code(3);
    let j: serde_json::Value = serde_json::from_slice(&a.get_output().stdout).unwrap();
    assert_eq!(j["outcome"], "too_many_rejects");
    assert_eq!(j["report"]["rows_read"], 4);
    assert_eq!(j["report"]["rejected"], 1);
    assert_eq!(j["report"]["encoded"], 3, "would have been encoded");
    assert_eq!(j["rows_written"], 0, "none was written");
    assert!(j["rejects_file"]
        .as_str()
        .unwrap()
        .ends_with("out.rejects.csv"));
    assert!(!f.path("out.clk").exists());
}

#[test]
fn json_has_an_outcome_for_every_ending() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let ok = f.encode().arg("--json").assert().success();
    // Warnings still reach stderr (the log) with --json: only stdout is reserved for JSON.
    let ok = ok.stderr(contains("DEMO key"));
    let ok: serde_json::Value = serde_json::from_slice(&ok.get_output().stdout).unwrap();
    assert_eq!(ok["outcome"], "done");
    assert_eq!(ok["report"]["encoded"], 3);

    let exists = failure_json(&mut f.encode(), 1);
    assert_eq!(exists["outcome"], "output_exists");

    set_mode(&f.key, 0o644);
    let key = failure_json(f.encode().arg("--force"), 4);
    assert_eq!(key["outcome"], "key_refused");
    set_mode(&f.key, 0o600);

    let mut c = bloomlink();
    c.args(["encode", "--quiet", "--force", "--key"])
        .arg(&f.key)
        .arg("--columns")
        .arg(&f.map)
        .arg(f.path("no-such-export.csv"))
        .arg("-o")
        .arg(f.path("out.clk"));
    let missing = failure_json(&mut c, 1);
    assert_eq!(missing["outcome"], "error");
    assert!(missing["error"]
        .as_str()
        .unwrap()
        .contains("no-such-export.csv"));

    // A run refused on its export keeps its counts, and says why.
    let bad = Fixture::new(format!("{HEALTH_HEADER}{GOOD}H4,Jack,Smith\n").as_bytes());
    let rejects = failure_json(bad.encode().args(["--max-reject-rate", "0.1"]), 3);
    assert_eq!(rejects["outcome"], "too_many_rejects");
    assert!(rejects["output"].is_null() && rejects.get("output").is_some());
    assert!(exists.get("output").is_none(), "{exists}");
    assert_eq!(rejects["report"]["rejected"], 1);
    assert_eq!(rejects["max_reject_rate"], 0.1);
    assert!(rejects["error"]
        .as_str()
        .unwrap()
        .contains("1 of 4 rows rejected"));
}

#[test]
fn invalid_utf8_names_row_and_column_not_value() {
    // A UTF-8 export (more UTF-8 characters than bad bytes: damaged, not Windows-1252).
    let mut input =
        format!("{HEALTH_HEADER}{GOOD}H5,,Chloë,,Brontë,12/03/2015,F,M1 1AE\n").into_bytes();
    input.extend_from_slice(b"H9,,Zo\xeb,,Sm\xefth,12/03/2015,F,M1 1AE\n");
    let f = Fixture::new(&input);
    f.encode()
        .arg("--max-reject-rate")
        .arg("1")
        .assert()
        .success();
    let rejects = f.rejects();
    assert!(
        rejects.contains("5,6,Forename,,invalid_encoding"),
        "{rejects}"
    );
    assert!(rejects.contains("windows-1252"), "hint missing: {rejects}");
    assert!(!rejects.contains("Zo"), "{rejects}");
}

#[test]
fn windows_1252_export_encodes_like_utf8() {
    let utf8 = format!("{HEALTH_HEADER}H1,,Zoë,,Łukasz-Nowak,12/03/2015,F,M1 1AE\n");
    let a = Fixture::new(utf8.as_bytes());
    a.encode().assert().success();
    let legacy = utf8.replace('Ł', "L");
    let (cp, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&legacy);
    assert!(!unmappable);
    assert!(std::str::from_utf8(&cp).is_err(), "really non-UTF-8 bytes");
    let b = Fixture::with_map(
        &cp,
        &HEALTH_MAP.replace("date_formats", "encoding = \"windows-1252\"\ndate_formats"),
    );
    b.encode().assert().success();
    // Demo key, same schema: Zoë and Łukasz fold to the same canonical values either way.
    let fa = EncodingFile::open(&a.path("out.clk")).unwrap();
    let fb = EncodingFile::open(&b.path("out.clk")).unwrap();
    assert_eq!(fa.filter(0), fb.filter(0));
    assert_eq!(fa.tokens_of(0), fb.tokens_of(0));
}

#[test]
fn utf8_bom_is_accepted_and_utf16_refused() {
    let mut input = b"\xEF\xBB\xBF".to_vec();
    input.extend_from_slice(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    Fixture::new(&input).encode().assert().success();

    let f = Fixture::with_map(
        &input,
        &HEALTH_MAP.replace("date_formats", "encoding = \"windows-1252\"\ndate_formats"),
    );
    f.encode()
        .assert()
        .code(1)
        .stderr(contains("byte-order mark"))
        .stderr(contains("encoding = \"utf-8\""));

    let f = Fixture::new(b"\xFF\xFEP\x00a\x00");
    f.encode().assert().code(1).stderr(contains("UTF-16"));

    // A workbook or archive given by mistake is named as such.
    for (bytes, what) in [
        (&b"PK\x03\x04\x14\x00\x06\x00"[..], "(.xlsx)"),
        (&b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1"[..], "(.xls)"),
        (&b"\x1F\x8B\x08\x00\x00\x00"[..], "gzip-compressed"),
    ] {
        let f = Fixture::new(bytes);
        f.encode()
            .assert()
            .code(1)
            .stderr(contains(what).and(contains("save or export the sheet as CSV")));
    }
}

#[test]
fn quoted_newlines_keep_row_and_line_numbers() {
    let input =
        format!("{HEALTH_HEADER}H1,,\"Mary\nJane\",,Smith,12/03/2015,F,M1 1AE\nH2,,Jack,Smith\n");
    let f = Fixture::new(input.as_bytes());
    f.encode()
        .arg("--max-reject-rate")
        .arg("1")
        .assert()
        .success();
    let rejects = f.rejects();
    // Row 2 starts on line 4 because row 1 spans lines 2-3.
    assert!(rejects.contains("2,4,,,wrong_field_count"), "{rejects}");
}

#[test]
fn megabyte_field_is_invalid_not_fatal() {
    let big = "A".repeat(1 << 20);
    let input = format!("{HEALTH_HEADER}H1,,{big},,Smith,12/03/2015,F,M1 1AE\n");
    let f = Fixture::new(input.as_bytes());
    let j = success_json(f.encode().arg("--json"));
    let given = &j["report"]["fields"][0];
    assert_eq!(given["field"], "given_name");
    assert_eq!(given["invalid"]["too_long"], 1);
    assert_eq!(j["report"]["encoded"], 1);
}

/// Some exporters end every data row with a delimiter but not the header: the empty extra
/// field holds nothing, so the rows encode as they would without it. Anything else in an extra
/// field is still a row of the wrong shape.
#[test]
fn a_delimiter_ending_every_data_row_is_read_as_nothing() {
    let plain = format!("{HEALTH_HEADER}{GOOD}");
    let trailing: String = plain
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else {
                format!("{l},\n")
            }
        })
        .collect();
    assert!(trailing.contains("LS6 2AB,\n"));
    let records = |input: &str| {
        let f = Fixture::new(input.as_bytes());
        let j = success_json(f.encode().arg("--json"));
        assert_eq!(j["report"]["rejected"], 0, "{j}");
        let e = EncodingFile::open(&f.path("out.clk")).unwrap();
        (0..e.len())
            .map(|i| (e.filter(i).to_vec(), e.tokens_of(i).to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(records(&plain), records(&trailing));
    // A header ending with a delimiter over rows that do not: its empty last cell names no
    // column (every row was rejected as wrong_field_count).
    let header_only = plain.replacen('\n', ",\n", 1);
    assert!(header_only.starts_with(&HEALTH_HEADER.replace('\n', ",\n")));
    assert_eq!(records(&plain), records(&header_only));
    let extra = plain.replace("LS6 2AB\n", "LS6 2AB,x\n");
    let f = Fixture::new(extra.as_bytes());
    f.encode()
        .args(["--max-reject-rate", "1"])
        .assert()
        .success();
    assert!(f.rejects().contains("wrong_field_count"), "{}", f.rejects());
    // In an export whose rows do not end so, a row of that shape is a value with an unquoted
    // delimiter (`Smith, Jr`) and its last value empty: read as the header's fields, its values
    // would be shifted into the wrong columns, so it is rejected.
    let mut shifted = String::from(HEALTH_HEADER);
    for i in 0..20 {
        shifted.push_str(&format!("H{i},,Jack,,Smith,01/02/2016,M,LS6 2AB\n"));
    }
    shifted.push_str("H20,,Jack,,Smith, Jr,01/02/2016,M,\n");
    let f = Fixture::new(shifted.as_bytes());
    let j = success_json(f.encode().args(["--json", "--max-reject-rate", "1"]));
    assert_eq!(j["report"]["reject_reasons"]["wrong_field_count"], 1, "{j}");
    assert_eq!(j["report"]["encoded"], 20);
    assert!(
        f.rejects().contains("21,22,,,wrong_field_count"),
        "{}",
        f.rejects()
    );
}

#[test]
fn duplicate_record_ids_are_rejected() {
    let input = format!("{HEALTH_HEADER}{GOOD}H1,,Other,,Person,12/03/2015,F,M1 1AE\n");
    let f = Fixture::new(input.as_bytes());
    f.encode()
        .arg("--max-reject-rate")
        .arg("1")
        .assert()
        .success()
        .stdout(contains(
            "1 row(s) repeat the record id of an earlier row and were rejected as \
             duplicate_record_id: the first row of each id is the one encoded",
        ));
    let rejects = f.rejects();
    assert!(
        rejects.contains("4,5,Patient ID,,duplicate_record_id,record id already used by row 1"),
        "{rejects}"
    );
    assert_eq!(EncodingFile::open(&f.path("out.clk")).unwrap().len(), 3);
}

#[test]
fn existing_output_needs_force() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    f.encode().assert().success();
    let before = std::fs::read(f.path("out.clk")).unwrap();
    f.encode()
        .assert()
        .code(1)
        .stderr(contains("already exists").and(contains("pass --force")));
    assert_eq!(std::fs::read(f.path("out.clk")).unwrap(), before);
    f.encode().arg("--force").assert().success();
}

/// A hidden temporary left by a run that was killed outright (its process has ended) is named
/// in a warning; one of a run still going on is not.
#[test]
#[cfg(target_os = "linux")]
fn temporaries_of_killed_runs_are_warned_about() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    // Beyond any Linux pid_max, so never a running process.
    let dead = f.path(".out.clk.tmp-999999999-0-0");
    std::fs::write(&dead, b"a complete encoding, perhaps").unwrap();
    let live = f.path(&format!(".out.clk.tmp-{}-0-0", std::process::id()));
    std::fs::write(&live, b"a run going on now").unwrap();
    let unrelated = f.path(".other.clk.tmp-999999999-0-0");
    std::fs::write(&unrelated, b"another output's").unwrap();
    let out = f.encode().assert().success().get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".out.clk.tmp-999999999-0-0") && err.contains("killed"),
        "{err}"
    );
    assert!(
        !err.contains(&format!(".out.clk.tmp-{}", std::process::id())),
        "{err}"
    );
    assert!(!err.contains(".other.clk"), "{err}");
    // Reported, never removed: deleting is the user's call.
    assert!(dead.exists());
}

#[test]
fn unwritable_output_fails_before_work() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    bloomlink()
        .args(["encode", "--quiet", "--key"])
        .arg(&f.key)
        .arg("--columns")
        .arg(&f.map)
        .arg(&f.input)
        .arg("-o")
        .arg(f.path("no/such/dir/out.clk"))
        .assert()
        .code(1)
        .stderr(contains("does not exist"));
    // A directory where the output should go.
    std::fs::create_dir(f.path("adir")).unwrap();
    bloomlink()
        .args(["encode", "--quiet", "--force", "--key"])
        .arg(&f.key)
        .arg("--columns")
        .arg(&f.map)
        .arg(&f.input)
        .arg("-o")
        .arg(f.path("adir"))
        .assert()
        .failure();
}

#[test]
fn opaque_ids_replace_record_ids_and_write_private_map() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    f.encode()
        .arg("--opaque-ids")
        .arg(f.path("ids.csv"))
        .assert()
        .success();
    let file = EncodingFile::open(&f.path("out.clk")).unwrap();
    assert!(file.header().opaque_ids);
    let bytes = std::fs::read(f.path("out.clk")).unwrap();
    for id in ["H1", "H2", "H3"] {
        assert!(
            !bytes.windows(2).any(|w| w == id.as_bytes()),
            "{id} in file"
        );
    }
    let map = std::fs::read_to_string(f.path("ids.csv")).unwrap();
    assert!(map.starts_with("opaque_ref,record_id\n"));
    assert!(map.contains(&format!("{},H1", file.row_ref(0))));
    assert_eq!(mode_of(&f.path("ids.csv")), 0o600);
}

/// Record ids that are identifiers (an NHS number as the health record id, a UPN as the
/// school's) would go out in clear beside the filters: refused, naming the fix, unless they
/// are replaced by opaque references. The check never shows an id.
#[test]
fn record_ids_that_are_identifiers_are_refused_without_opaque_ids() {
    // The id column is also mapped as a field.
    let map = HEALTH_MAP.replace("record_id = \"Patient ID\"", "record_id = \"NHS Number\"");
    let input = format!(
        "{HEALTH_HEADER}H1,943 476 5919,Ann,,Lee,01/03/2015,F,LS6 2AB\n\
         H2,401 023 2137,Jo,,Khan,02/03/2015,F,LS6 2AB\n"
    );
    let f = Fixture::with_map(input.as_bytes(), &map);
    let j = failure_json(&mut f.encode(), 2);
    let e = j["error"].as_str().unwrap();
    assert!(
        e.contains("`NHS Number` is also mapped as nhs_number") && e.contains("--opaque-ids"),
        "{e}"
    );
    assert!(!f.path("out.clk").exists());
    f.encode()
        .arg("--opaque-ids")
        .arg(f.path("ids.csv"))
        .assert()
        .success();

    // Not mapped, but NHS numbers all the same (and a local id that is 10 digits is not).
    let rows = |ids: &[&str]| {
        let mut csv = String::from(HEALTH_HEADER);
        for (i, id) in ids.iter().enumerate() {
            csv.push_str(&format!("{id},,Ann,,Lee,0{}/03/2015,F,LS6 2AB\n", i + 1));
        }
        csv
    };
    let f = Fixture::new(rows(&["9434765919", "943 476 5870", "4010232137", "H12"]).as_bytes());
    let out = f.encode().assert().code(2).get_output().clone();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("look like NHS numbers") && e.contains("--opaque-ids"),
        "{e}"
    );
    assert!(
        !e.contains("9434765919") && !e.contains("4010232137"),
        "{e}"
    );
    assert!(!f.path("out.clk").exists());
    f.encode()
        .arg("--opaque-ids")
        .arg(f.path("ids.csv"))
        .assert()
        .success();
    let f = Fixture::new(rows(&["9434765919", "1234567890", "1000000001", "H12"]).as_bytes());
    f.encode().assert().success();
    // With letters around the number, still NHS numbers in clear.
    let f = Fixture::new(rows(&["N9434765919", "NHS-9434765870", "4010232137A", "H12"]).as_bytes());
    f.encode()
        .assert()
        .code(2)
        .stderr(contains("look like NHS numbers"));
}

/// The opaque id map of a key epoch is kept from night to night: each run adds its new ids,
/// so links of earlier nights still map back. A map written under another key is refused.
#[test]
fn the_opaque_id_map_grows_night_by_night_under_one_key() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let ids = f.path("ids.csv");
    f.encode().arg("--opaque-ids").arg(&ids).assert().success();
    let night2 = f.path("night2.csv");
    let rows = GOOD.lines().skip(1).collect::<Vec<_>>().join("\n");
    std::fs::write(
        &night2,
        format!("{HEALTH_HEADER}{rows}\nH4,,Ann,,Lee,01/03/2015,F,LS6 2AB\n"),
    )
    .unwrap();
    let mut run2 = f.encode_with(&night2, &f.path("night2.clk"));
    run2.arg("--opaque-ids").arg(&ids).assert().success();
    let map = std::fs::read_to_string(&ids).unwrap();
    let lines: Vec<&str> = map.lines().collect();
    assert_eq!(lines.len(), 5, "{map}");
    for id in ["H1", "H2", "H3", "H4"] {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.ends_with(&format!(",{id}")))
                .count(),
            1,
            "{map}"
        );
    }
    let file = EncodingFile::open(&f.path("night2.clk")).unwrap();
    assert!(map.contains(&format!("{},H4", file.row_ref(2))), "{map}");
    assert_eq!(mode_of(&ids), 0o600);

    // H2's reference changed: a map of another key epoch.
    let h2 = lines.iter().find(|l| l.ends_with(",H2")).unwrap();
    let other = format!(
        "{}{}",
        if h2.starts_with('0') { "1" } else { "0" },
        &h2[1..]
    );
    std::fs::write(&ids, map.replace(h2, &other)).unwrap();
    let mut run3 = f.encode_with(&night2, &f.path("night3.clk"));
    let out = run3.arg("--opaque-ids").arg(&ids).assert().code(2);
    let e = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(e.contains("another key") && !e.contains("H2"), "{e}");
    assert!(!f.path("night3.clk").exists());
    // A map of another agency (or key) is refused even when it shares no id with tonight's
    // export: every entry is checked against tonight's key and agency.
    let police = HEALTH_MAP.replace("agency = \"health\"", "agency = \"police\"");
    let p = Fixture::with_map(format!("{HEALTH_HEADER}{GOOD}").as_bytes(), &police);
    p.encode()
        .arg("--opaque-ids")
        .arg(p.path("police-ids.csv"))
        .assert()
        .success();
    let mut run5 = f.encode_with(&night2, &f.path("night5.clk"));
    std::fs::write(
        &night2,
        format!("{HEALTH_HEADER}H7,,Ann,,Lee,01/03/2015,F,LS6 2AB\n"),
    )
    .unwrap();
    run5.arg("--opaque-ids")
        .arg(p.path("police-ids.csv"))
        .assert()
        .code(2)
        .stderr(contains("another key or for another agency"));
    // Not a map at all.
    std::fs::write(&ids, "name,dob\n").unwrap();
    let mut run4 = f.encode_with(&night2, &f.path("night4.clk"));
    run4.arg("--opaque-ids")
        .arg(&ids)
        .assert()
        .code(2)
        .stderr(contains("is not an opaque id map"));
}

#[test]
fn key_problems_are_refused_with_the_fix() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    set_mode(&f.key, 0o644);
    f.encode().assert().code(4).stderr(contains("chmod 600"));
    set_mode(&f.key, 0o600);

    // One flipped hex digit in the secret.
    let text = std::fs::read_to_string(&f.key).unwrap();
    let secret_at = text.find("bloomlink-key-1:").unwrap() + 20;
    let mut bytes = text.into_bytes();
    bytes[secret_at] = if bytes[secret_at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&f.key, &bytes).unwrap();
    f.encode().assert().code(4).stderr(contains("checksum"));
}

#[test]
fn expired_key_needs_override() {
    use bloomlink::date::Date;
    use bloomlink::key::{LinkageKey, NewKey};
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let old = LinkageKey::generate_as_of(
        &NewKey {
            partnership: "P".into(),
            purpose: "test".into(),
            expires: Some(Date::new(2021, 1, 1).unwrap()),
            epoch: 1,
        },
        Date::new(2020, 1, 1).unwrap(),
    )
    .unwrap();
    let kp = f.path("old.key");
    old.save(&kp).unwrap();
    let run = || {
        let mut c = bloomlink();
        c.args(["encode", "--quiet", "--key"])
            .arg(&kp)
            .arg("--columns")
            .arg(&f.map)
            .arg(&f.input)
            .arg("-o")
            .arg(f.path("old.clk"));
        c
    };
    run()
        .assert()
        .code(4)
        .stderr(contains("expired on 2021-01-01"))
        .stderr(contains("--allow-expired"));
    run()
        .arg("--allow-expired")
        .assert()
        .success()
        .stderr(contains("expired"));
    bloomlink()
        .args(["key", "show"])
        .arg(&kp)
        .assert()
        .success()
        .stdout(contains("EXPIRED"));
}

#[test]
fn a_key_about_to_expire_is_warned_about_ahead_of_time() {
    use bloomlink::date::Date;
    use bloomlink::key::{LinkageKey, NewKey};
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let today = Date::today_utc();
    let key_expiring_in = |days: i64| {
        let k = LinkageKey::generate_as_of(
            &NewKey {
                partnership: "P".into(),
                purpose: "test".into(),
                expires: Some(Date::from_days(today.to_days() + days)),
                epoch: 1,
            },
            today,
        )
        .unwrap();
        let p = f.path(&format!("in-{days}.key"));
        k.save(&p).unwrap();
        p
    };
    let encode = |key: &std::path::Path, out: &str| {
        let mut c = bloomlink();
        c.args(["encode", "--quiet", "--key"])
            .arg(key)
            .arg("--columns")
            .arg(&f.map)
            .arg(&f.input)
            .arg("-o")
            .arg(f.path(out));
        c
    };

    let soon = key_expiring_in(10);
    let j = success_json(encode(&soon, "soon.clk").arg("--json"));
    assert_eq!(j["key_expires_in_days"], 10);
    assert_eq!(
        j["key_expires"],
        Date::from_days(today.to_days() + 10).to_string()
    );
    let warnings = j["report"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("expires in 10 days")),
        "{warnings:?}"
    );
    encode(&soon, "soon2.clk")
        .assert()
        .success()
        .stdout(contains("warning: key").and(contains("expires in 10 days")));

    // From 30 days ahead, not before.
    for (days, warned) in [(0, true), (1, true), (30, true), (31, false)] {
        let j = success_json(encode(&key_expiring_in(days), &format!("k{days}.clk")).arg("--json"));
        let warned_now = j["report"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("last day of use"));
        assert_eq!(warned_now, warned, "key expiring in {days} days: {j}");
    }
}

/// `bloomlink encode --json --quiet` of the fixture whose key is a named pipe (made here), so
/// that the run blocks reading its key until the test has done what it must do mid-run.
#[cfg(unix)]
fn encode_with_key_fifo(
    f: &Fixture,
    extra: &[&str],
) -> (std::process::Command, std::path::PathBuf) {
    let fifo = f.path("fifo.key");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("bloomlink"));
    cmd.env_remove("BLOOMLINK_AUDIT_LOG")
        .args(["encode", "--json", "--quiet", "--key"])
        .arg(&fifo)
        .arg("--columns")
        .arg(&f.map)
        .arg(&f.input)
        .arg("-o")
        .arg(f.path("out.clk"))
        .args(extra);
    (cmd, fifo)
}

/// An interrupted run says so, on stderr and with --json on stdout, and exits 143.
#[cfg(unix)]
#[test]
fn an_interrupted_run_says_so_in_the_log_and_the_json() {
    use std::process::Stdio;
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    // The key is a named pipe: encode blocks reading it until the test has sent the signal,
    // so the interrupt always comes mid-run (never before the handler is installed).
    let (mut cmd, fifo) = encode_with_key_fifo(&f, &[]);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the pipe for writing returns once encode has opened it for reading.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(std::fs::File::create(path).unwrap()).unwrap());
    let writer = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("encode opens its key");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    drop(writer);
    assert_eq!(out.status.code(), Some(143));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(j["outcome"], "interrupted");
    assert_eq!(j["exit_code"], 143);
    assert!(!f.path("out.clk").exists());
    // The audit log records the run that was stopped (before, it had no entry), and the log
    // still verifies.
    let log = f.path("bloomlink-audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{text}");
    let e = &entries[0];
    assert_eq!(e["action"], "encode", "{e}");
    assert_eq!(e["outcome"], "refused", "{e}");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted by SIGTERM"),
        "{e}"
    );
    assert!(
        stderr.contains("the interruption is recorded in"),
        "{stderr}"
    );
    bloomlink()
        .args(["audit", "verify"])
        .arg(&log)
        .assert()
        .success();
}

#[test]
fn encode_help_says_what_a_failed_run_leaves_and_prints() {
    let help = bloomlink().args(["encode", "--help"]).assert().success();
    let help = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    // The rate limits leave the rejects file (README: "the rejects file written").
    assert!(!help.contains("no output written"), "{help}");
    assert_eq!(help.matches("only the rejects file").count(), 2, "{help}");
    assert!(help.contains("whatever the outcome"), "{help}");
    let top = bloomlink().arg("--help").assert().success();
    assert!(String::from_utf8_lossy(&top.get_output().stdout).contains("130/143 interrupted"));
}

/// A failed run keeps its exit code when whatever reads its --json has gone away: only a
/// successful run may treat the closed pipe as nothing to report.
#[cfg(unix)]
#[test]
fn a_failed_run_keeps_its_exit_code_when_stdout_is_closed() {
    use std::io::Write;
    use std::process::Stdio;
    let bad = Fixture::new(format!("{HEALTH_HEADER}{GOOD}H4,Jack,Smith\n").as_bytes());
    let key = std::fs::read(&bad.key).unwrap();
    for (max_reject_rate, code) in [("0.1", 3), ("1", 0)] {
        // The key is a named pipe, so that the test closes the reading end of stdout before
        // the run prints anything: encode blocks reading its key until then.
        let _ = std::fs::remove_file(bad.path("fifo.key"));
        let (mut cmd, fifo) =
            encode_with_key_fifo(&bad, &["--force", "--max-reject-rate", max_reject_rate]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .unwrap()
            .write_all(&key)
            .unwrap();
        assert_eq!(
            child.wait().unwrap().code(),
            Some(code),
            "rate {max_reject_rate}"
        );
    }
}

#[test]
fn key_new_never_overwrites_and_show_hides_secret() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.key");
    bloomlink()
        .args(["key", "new", "--partnership", "Test", "-o"])
        .arg(&p)
        .assert()
        .success()
        .stdout(contains("fingerprint"));
    let text = std::fs::read_to_string(&p).unwrap();
    let secret = text
        .lines()
        .find(|l| l.starts_with("bloomlink-key-1:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string();
    bloomlink()
        .args(["key", "new", "--partnership", "Test", "-o"])
        .arg(&p)
        .assert()
        .code(1)
        // `key new` has no --force: the message must not send the user looking for one.
        .stderr(contains("already exists").and(contains("never replaces")))
        .stderr(contains("--force").not());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    for args in [vec!["key", "show"], vec!["key", "show", "--json"]] {
        bloomlink()
            .args(args)
            .arg(&p)
            .assert()
            .success()
            .stdout(contains(&secret[..16]).not());
    }
}

/// A key file or an export given where a TOML file belongs: the parse error names the line and
/// column but never quotes it, on screen or in the audit log.
#[test]
fn a_wrong_file_given_as_toml_is_not_quoted() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let key_text = std::fs::read_to_string(&f.key).unwrap();
    let secret = key_text
        .lines()
        .find(|l| l.starts_with("bloomlink-key-1:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string();
    let log = f.path("audit.jsonl");
    let no_secret = || contains(&secret[..16]).not();
    bloomlink()
        .args(["schema", "digest"])
        .arg(&f.key)
        .assert()
        .code(1)
        .stderr(contains("not valid TOML at line").and(no_secret()));
    f.encode()
        .arg("--schema")
        .arg(&f.key)
        .arg("--audit-log")
        .arg(&log)
        .assert()
        .code(1)
        .stderr(contains("not valid TOML at line").and(no_secret()));
    // The export itself (a data row, no header) as the column map.
    let rows = f.path("rows.csv");
    std::fs::write(&rows, GOOD).unwrap();
    let planted = GOOD.split(',').nth(2).unwrap();
    assert!(planted.len() >= 3, "a name from the row: {planted}");
    bloomlink()
        .arg("encode")
        .arg("--key")
        .arg(&f.key)
        .arg("--columns")
        .arg(&rows)
        .arg(&f.input)
        .arg("-o")
        .arg(f.path("out.clk"))
        .arg("--audit-log")
        .arg(&log)
        .assert()
        .code(1)
        .stderr(contains("not valid TOML at line 1").and(contains(planted).not()));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("not valid TOML"), "{logged}");
    assert!(!logged.contains(&secret[..16]) && !logged.contains(planted));
}

#[test]
fn unknown_schema_field_in_map_is_explained() {
    let f = Fixture::with_map(
        format!("{HEALTH_HEADER}{GOOD}").as_bytes(),
        "agency = \"x\"\nrecord_id = \"Patient ID\"\n[columns]\nshoe_size = \"Forename\"\n",
    );
    f.encode()
        .assert()
        .code(1)
        .stderr(contains("shoe_size"))
        .stderr(contains("family_name"));
}

#[test]
fn min_fields_outside_one_to_the_fields_in_the_filter_is_refused() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let schema = f.path("schema.toml");
    for (min_fields, expect) in [
        ("min_fields = 0", "min_fields is 0"),
        ("min_fields = 7", "min_fields (2 when not set) is 7"),
    ] {
        std::fs::write(
            &schema,
            bloomlink::schema::DEFAULT_SCHEMA_TOML.replacen("min_fields = 2", min_fields, 1),
        )
        .unwrap();
        bloomlink()
            .args(["schema", "digest"])
            .arg(&schema)
            .assert()
            .code(1)
            .stderr(
                contains(format!("schema {}: {expect}", schema.display()))
                    .and(contains("set min_fields between 1 and 6")),
            );
        f.encode()
            .arg("--schema")
            .arg(&schema)
            .assert()
            .code(1)
            .stderr(contains(expect));
        assert!(!f.path("out.clk").exists());
    }
    std::fs::write(
        &schema,
        bloomlink::schema::DEFAULT_SCHEMA_TOML.replacen("min_fields = 2", "min_fields = 6", 1),
    )
    .unwrap();
    bloomlink()
        .args(["schema", "digest"])
        .arg(&schema)
        .assert()
        .success();
}

/// A device given as the key, column map or schema is refused at once: `/dev/zero` was read
/// until memory ran out. (A named pipe is allowed for them: `--key <(…)` passes a secret without
/// writing it to disk; the interrupt tests below use one.)
#[cfg(target_os = "linux")]
#[test]
fn devices_given_as_inputs_are_refused() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let zero = std::path::Path::new("/dev/zero");
    for flag in ["--key", "--columns", "--schema"] {
        let mut c = bloomlink();
        c.arg("encode")
            .arg(&f.input)
            .arg("-o")
            .arg(f.path("out.clk"));
        if flag != "--key" {
            c.arg("--key").arg(&f.key);
        }
        if flag != "--columns" {
            c.arg("--columns").arg(&f.map);
        }
        c.arg(flag).arg(zero);
        c.timeout(std::time::Duration::from_secs(20))
            .assert()
            .failure()
            .stderr(contains("is a device"));
    }
    assert!(!f.path("out.clk").exists());
}

/// One NHS number (or date of birth, or address) on many rows is a placeholder, which makes
/// unrelated children alike: the summary says so, naming the first row, never the value. The
/// shipped exports, with their twins and siblings, raise no such warning.
#[test]
fn a_placeholder_shared_by_many_rows_is_warned_about() {
    let mut input = String::from(HEALTH_HEADER);
    for i in 1..=60 {
        let nhs = if i >= 3 && i % 2 == 1 {
            "943 476 5919"
        } else {
            ""
        };
        input.push_str(&format!(
            "H{i},{nhs},Jack{},,Smith{},0{}/02/2016,M,LS6 2AB\n",
            i % 7,
            i % 5,
            1 + i % 9
        ));
    }
    let f = Fixture::new(input.as_bytes());
    let j = success_json(f.encode().arg("--json"));
    let w = j["report"]["warnings"].to_string();
    assert!(
        w.contains("29 records (48.3 %) share one value of nhs_number (keyed token `nhs`), the first at row 3"),
        "{w}"
    );
    assert!(!w.contains("943") && !w.contains("5919"), "{w}");
    for a in ["health", "police", "education"] {
        let out = f.path(&format!("{a}.clk"));
        let o = bloomlink()
            .args(["encode", "-q", "--json", "--key"])
            .arg(&f.key)
            .arg("--columns")
            .arg(testdata(&format!("{a}.toml")))
            .arg(testdata(&format!("{a}.csv")))
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let w = j["report"]["warnings"].to_string();
        assert!(!w.contains("share"), "{a}: {w}");
    }
}

/// DOS-era exports end with Ctrl-Z (0x1A) after the last line: an empty row, not a broken one
/// (it failed the run as a rejected row of the wrong shape, and warned of a file cut short).
#[test]
fn a_dos_end_of_file_mark_is_an_empty_row() {
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}\u{1a}").as_bytes());
    let j = success_json(f.encode().arg("--json"));
    assert_eq!(j["report"]["reject_reasons"]["empty_row"], 1, "{j}");
    assert_eq!(j["report"]["encoded"], 3, "{j}");
    assert!(
        !j["report"]["warnings"].to_string().contains("line break"),
        "{j}"
    );
}

/// A NUL byte is no text: a value holding one is rejected as invalid_encoding saying so (a
/// name `Ya\0smin` was read as `YA SMIN`, an id kept its NUL into the encoding), and a header
/// holding them (UTF-16 without a byte-order mark) is refused naming UTF-16.
#[test]
fn nul_bytes_are_no_text() {
    let input = format!("{HEALTH_HEADER}{GOOD}H7,,Ya\0smin,,Khan,01/02/2016,F,M1 1AE\nH8\0,,Amy,,Khan,01/02/2016,F,M1 1AE\n");
    let f = Fixture::new(input.as_bytes());
    let j = success_json(f.encode().args(["--json", "--max-reject-rate", "1"]));
    assert_eq!(j["report"]["reject_reasons"]["invalid_encoding"], 2, "{j}");
    let rejects = f.rejects();
    assert!(
        rejects.contains("column `Forename` holds a NUL byte")
            && rejects.contains("column `Patient ID` holds a NUL byte"),
        "{rejects}"
    );
    let utf16: Vec<u8> = HEALTH_HEADER.bytes().flat_map(|b| [b, 0]).collect();
    let f = Fixture::new(&utf16);
    f.encode()
        .assert()
        .code(1)
        .stderr(contains("probably UTF-16"));
}

/// Names whose accented letters an export replaced with `?` or U+FFFD are read as two parts:
/// the summary says so (a few are typing slips, so from three).
#[test]
fn names_with_letters_replaced_by_question_marks_are_warned_about() {
    let mut input = String::from(HEALTH_HEADER);
    for (i, name) in ["Bj?rn", "Zo?", "Chlo\u{fffd}", "Ren?e", "Jack"]
        .iter()
        .enumerate()
    {
        input.push_str(&format!("H{i},,{name},,Smith,01/02/2016,M,LS6 2AB\n"));
    }
    let f = Fixture::new(input.as_bytes());
    let j = success_json(f.encode().arg("--json"));
    let w = j["report"]["warnings"].to_string();
    assert!(
        w.contains("found 3 times") && w.contains("export the file as UTF-8"),
        "{w}"
    );
    let f = Fixture::new(format!("{HEALTH_HEADER}{GOOD}").as_bytes());
    let j = success_json(f.encode().arg("--json"));
    assert!(
        !j["report"]["warnings"].to_string().contains("U+FFFD"),
        "{j}"
    );
}

/// Sex codes the map does not list warn from 2 % (a gap in [sex_codes]: `Male` in an export
/// mapped for `M`), where other fields warn from 20 %.
#[test]
fn a_few_unlisted_sex_codes_are_warned_about() {
    let mut input = String::from(HEALTH_HEADER);
    for i in 0..40 {
        let sex = if i < 5 { "Q" } else { "M" };
        input.push_str(&format!(
            "H{i},,Jack,,Smith,0{}/02/2016,{sex},LS6 2AB\n",
            1 + i % 9
        ));
    }
    let f = Fixture::new(input.as_bytes());
    let j = success_json(f.encode().arg("--json"));
    let w = j["report"]["warnings"].to_string();
    assert!(
        w.contains("field sex (column `Gender`) is invalid in 12.5 % of rows")
            && w.contains("[sex_codes]"),
        "{w}"
    );
}
