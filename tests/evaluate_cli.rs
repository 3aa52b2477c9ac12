//! `bloomlink evaluate` on small hand-made truth, link and twins files whose every count is
//! worked out by hand below.

mod common;

use std::path::PathBuf;

use assert_cmd::Command;
use common::{bloomlink, success_json};
use predicates::prelude::*;
use serde_json::Value;

/// Seven children. E2 has a within-agency duplicate (H2, H2b); E5 and E6 are twins; E7 has two
/// health records only.
///
/// True cross-agency pairs:
/// - education–health: E1 S1-H1; E2 S2-H2, S2-H2b; E5 S5-H5; E6 S6-H6 → 5
/// - education–police: E1 S1-P1 → 1
/// - health–police: E1 H1-P1; E3 H3-P3 → 2
const TRUTH: &str = "entity_id,agency,record_id
E1,health,H1
E1,police,P1
E1,education,S1
E2,health,H2
E2,health,H2b
E2,education,S2
E3,health,H3
E3,police,P3
E4,health,H4
E5,health,H5
E5,education,S5
E6,health,H6
E6,education,S6
E7,health,H7a
E7,health,H7b
";

const TWINS: &str = "entity_a,entity_b\nE5,E6\n";

const HEADER: &str = "link_id,agency,record_id,score,status\n";

/// Every entity in its own link (E4 unlinked, E7's records in no row at all).
const PERFECT: &str = "L1,health,H1,0.99,match
L1,police,P1,0.95,match
L1,education,S1,0.97,match
L2,health,H2,0.98,match
L2,health,H2b,0.98,match
L2,education,S2,0.98,match
L3,health,H3,0.91,match
L3,police,P3,0.91,match
,health,H4,,
L5,health,H5,0.9,match
L5,education,S5,0.9,match
L6,health,H6,0.9,match
L6,education,S6,0.9,match
";

/// H2b missed; E3 split and P3 falsely merged with H4; S6 (twin) falsely merged into E5's link;
/// H6 unlinked.
///
/// Predicted pairs: L1 e-h, e-p, h-p; L2 e-h; L4 h-p (P3-H4); L5 e-h H5-S5, e-h H5-S6.
/// - education–health: predicted 4, TP 3 (S1-H1, S2-H2, S5-H5), FP 1, FN 2 (S2-H2b, S6-H6)
/// - education–police: predicted 1, TP 1, FP 0, FN 0
/// - health–police: predicted 2, TP 1 (H1-P1), FP 1 (P3-H4), FN 1 (H3-P3)
/// - all: predicted 7, true 8, TP 5, FP 2, FN 3: P 5/7, R 5/8, F1 10/15
///
/// Exact: only E1, of 6 entities with two or more records (E1, E2, E3, E5, E6, E7), and of 5
/// in two or more agencies (E7 is health only).
///
/// Twins (E5, E6): predicted pairs within the set H5-S5, H5-S6 → 2, of which 1 false merge
/// (H5-S6): twin precision 0.5; true twin pairs H5-S5, H6-S6 → 2, of which 1 linked.
const FLAWED: &str = "L1,health,H1,0.99,match
L1,police,P1,0.95,match
L1,education,S1,0.97,match
L2,health,H2,0.98,match
L2,education,S2,0.98,match
,health,H2b,,
L3,health,H3,0.7,match
L4,police,P3,0.81,match
L4,health,H4,0.81,match
L5,health,H5,0.9,match
L5,education,S5,0.9,match
L5,education,S6,0.85,match
,health,H6,,
";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let f = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("truth.csv", TRUTH);
        f.write("twins.csv", TWINS);
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes `links.csv` with the header and `rows`.
    fn links(&self, rows: &str) -> PathBuf {
        self.write("links.csv", &format!("{HEADER}{rows}"))
    }

    fn evaluate(&self, links: &PathBuf) -> Command {
        let mut c = bloomlink();
        c.arg("evaluate")
            .arg("--truth")
            .arg(self.path("truth.csv"))
            .arg(links);
        c
    }

    fn json(&self, links: &PathBuf, extra: &[&str]) -> Value {
        success_json(self.evaluate(links).arg("--json").args(extra))
    }

    /// Runs `evaluate` expecting failure (exit 1) and returns stderr.
    fn refuse(&self, links: &PathBuf, extra: &[&str]) -> String {
        let out = self
            .evaluate(links)
            .args(extra)
            .assert()
            .code(1)
            .stdout("")
            .get_output()
            .stderr
            .clone();
        String::from_utf8(out).unwrap()
    }
}

fn counts(m: &Value) -> [u64; 5] {
    ["true_pairs", "predicted_pairs", "tp", "fp", "fn"].map(|k| m[k].as_u64().unwrap())
}

fn close(v: &Value, want: f64) -> bool {
    (v.as_f64().unwrap() - want).abs() < 1e-12
}

fn pair<'a>(j: &'a Value, name: &str) -> &'a Value {
    j["agency_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pair"] == name)
        .unwrap_or_else(|| panic!("no pair {name}"))
}

#[test]
fn perfect_links_score_one() {
    let f = Files::new();
    let links = f.links(PERFECT);
    let j = f.json(&links, &["--twins", f.path("twins.csv").to_str().unwrap()]);
    assert_eq!(counts(&j["overall"]), [8, 8, 8, 0, 0]);
    for k in ["precision", "recall", "f1"] {
        assert!(close(&j["overall"][k], 1.0), "{k}");
    }
    let names: Vec<&str> = j["agency_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pair"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["education–health", "education–police", "health–police"]
    );
    assert_eq!(counts(pair(&j, "education–health")), [5, 5, 5, 0, 0]);
    assert_eq!(counts(pair(&j, "education–police")), [1, 1, 1, 0, 0]);
    assert_eq!(counts(pair(&j, "health–police")), [2, 2, 2, 0, 0]);
    // E7 (two health records, in no link) is the one inexact entity.
    assert_eq!(j["clusters"]["entities"], 6);
    assert_eq!(j["clusters"]["exact"], 5);
    assert_eq!(j["clusters"]["multi_agency_entities"], 5);
    assert_eq!(j["clusters"]["multi_agency_exact"], 5);
    assert!(close(&j["clusters"]["multi_agency_exactness"], 1.0));
    let t = &j["twins"];
    assert_eq!(t["twin_pairs_predicted"], 2);
    assert_eq!(t["twin_false_merges"], 0);
    assert!(close(&t["twin_precision"], 1.0));
    assert!(close(&t["twin_recall"], 1.0));
    assert_eq!(j["records"]["truth_records"], 15);
    assert_eq!(j["records"]["entities"], 7);
    assert_eq!(j["records"]["links"], 5);
    assert_eq!(j["records"]["linked_records"], 12);
    assert_eq!(j["records"]["unlinked_rows"], 1);
    assert_eq!(j["status"], "match");
}

#[test]
fn false_merge_and_missed_links_counted_exactly() {
    let f = Files::new();
    let links = f.links(FLAWED);
    let j = f.json(&links, &[]);
    let o = &j["overall"];
    assert_eq!(counts(o), [8, 7, 5, 2, 3]);
    assert!(close(&o["precision"], 5.0 / 7.0));
    assert!(close(&o["recall"], 5.0 / 8.0));
    assert!(close(&o["f1"], 10.0 / 15.0));

    let eh = pair(&j, "education–health");
    assert_eq!(counts(eh), [5, 4, 3, 1, 2]);
    assert!(close(&eh["precision"], 0.75));
    assert!(close(&eh["recall"], 0.6));
    assert!(close(&eh["f1"], 6.0 / 9.0));
    assert_eq!(eh["agency_a"], "education");
    assert_eq!(eh["agency_b"], "health");

    let ep = pair(&j, "education–police");
    assert_eq!(counts(ep), [1, 1, 1, 0, 0]);

    let hp = pair(&j, "health–police");
    assert_eq!(counts(hp), [2, 2, 1, 1, 1]);
    assert!(close(&hp["precision"], 0.5));
    assert!(close(&hp["recall"], 0.5));
    assert!(close(&hp["f1"], 0.5));

    let c = &j["clusters"];
    assert_eq!(
        (c["entities"].as_u64(), c["exact"].as_u64()),
        (Some(6), Some(1))
    );
    assert!(close(&c["exactness"], 1.0 / 6.0));
    assert_eq!(c["multi_agency_entities"], 5);
    assert_eq!(c["multi_agency_exact"], 1);
    assert!(j["twins"].is_null());

    // The table shows the same numbers.
    f.evaluate(&links).assert().success().stdout(
        predicate::str::is_match(
            r"(?m)^  education–health +5 +4 +3 +1 +2 +0\.7500 +0\.6000 +0\.6667$",
        )
        .unwrap()
        .and(
            predicate::str::is_match(
                r"(?m)^  health–police +2 +2 +1 +1 +1 +0\.5000 +0\.5000 +0\.5000$",
            )
            .unwrap(),
        )
        .and(
            predicate::str::is_match(
                r"(?m)^  all agency pairs +8 +7 +5 +2 +3 +0\.7143 +0\.6250 +0\.6667$",
            )
            .unwrap(),
        )
        .and(predicate::str::contains(
            "cluster exactness  0.1667  (1 of 6 entities with 2 or more records)",
        ))
        .and(predicate::str::contains("twin").not()),
    );
}

#[test]
fn twin_false_merge_counted() {
    let f = Files::new();
    let links = f.links(FLAWED);
    let twins = f.path("twins.csv");
    let j = f.json(&links, &["--twins", twins.to_str().unwrap()]);
    let t = &j["twins"];
    assert_eq!(t["twin_pairs_listed"], 1);
    assert_eq!(t["twin_sets"], 1);
    assert_eq!(t["twin_entities_with_records"], 2);
    assert_eq!(t["twin_pairs_predicted"], 2);
    assert_eq!(t["twin_false_merges"], 1);
    assert!(close(&t["twin_precision"], 0.5));
    assert_eq!(t["twin_true_pairs"], 2);
    assert_eq!(t["twin_correct_pairs"], 1);
    assert!(close(&t["twin_recall"], 0.5));
    f.evaluate(&links)
        .arg("--twins")
        .arg(&twins)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "twin precision     0.5000  (1 of 2 predicted pairs within twin sets join two \
             co-twins)",
        ));
}

#[test]
fn twins_of_children_without_records_are_ignored_and_triplets_joined() {
    let f = Files::new();
    let links = f.links(FLAWED);
    // E5, E6 and a third triplet E9 who has no record; E10-E11 twins without records.
    let twins = f.write(
        "triplets.csv",
        "entity_a,entity_b\nE5,E6\nE5,E9\nE6,E9\nE10,E11\n",
    );
    let j = f.json(&links, &["--twins", twins.to_str().unwrap()]);
    let t = &j["twins"];
    assert_eq!(t["twin_pairs_listed"], 4);
    assert_eq!(t["twin_sets"], 2);
    assert_eq!(t["twin_entities_with_records"], 2);
    assert_eq!(t["twin_false_merges"], 1);
}

#[test]
fn review_rows_left_out_unless_status_all() {
    let f = Files::new();
    // The perfect links, with E3's link in the review band.
    let rows = PERFECT.replace("0.91,match", "0.75,review");
    let links = f.links(&rows);
    let j = f.json(&links, &[]);
    assert_eq!(j["records"]["review_rows_left_out"], 2);
    assert_eq!(counts(&j["overall"]), [8, 7, 7, 0, 1]);
    assert_eq!(counts(pair(&j, "health–police")), [2, 1, 1, 0, 1]);
    assert!(close(&j["overall"]["precision"], 1.0));
    assert!(close(&j["overall"]["recall"], 7.0 / 8.0));
    assert_eq!(j["clusters"]["exact"], 4);

    let j = f.json(&links, &["--status", "all"]);
    assert_eq!(j["status"], "all");
    assert_eq!(j["records"]["review_rows_left_out"], 0);
    assert_eq!(counts(&j["overall"]), [8, 8, 8, 0, 0]);
    assert_eq!(j["clusters"]["exact"], 5);

    f.evaluate(&links)
        .assert()
        .success()
        .stdout(predicate::str::contains("2 review rows left out"));
    f.evaluate(&links)
        .args(["--status", "bogus"])
        .assert()
        .code(2);
}

#[test]
fn nothing_linked_has_no_precision() {
    let f = Files::new();
    let links = f.links(",health,H1,,\n");
    let j = f.json(&links, &[]);
    assert_eq!(counts(&j["overall"]), [8, 0, 0, 0, 8]);
    assert!(j["overall"]["precision"].is_null());
    assert!(close(&j["overall"]["recall"], 0.0));
    assert!(close(&j["overall"]["f1"], 0.0));
    f.evaluate(&links).assert().success().stdout(
        predicate::str::is_match(r"all agency pairs +8 +0 +0 +0 +8 +n/a +0\.0000").unwrap(),
    );
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

#[test]
fn refuses_bad_truth_files() {
    let f = Files::new();
    let links = f.links(PERFECT);
    let truth = f.path("truth.csv");
    let t = truth.display().to_string();

    std::fs::remove_file(&truth).unwrap();
    let e = f.refuse(&links, &[]);
    assert!(e.starts_with(&format!("error: {t}: ")), "{e}");
    assert!(e.contains("No such file"), "{e}");

    f.write("truth.csv", "");
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains(&format!(
            "{t}: is empty: expected the header `entity_id,agency,record_id`"
        )),
        "{e}"
    );

    f.write("truth.csv", "entity_id,agency,record_id\n");
    let e = f.refuse(&links, &[]);
    assert!(e.contains("has a header but no records"), "{e}");

    f.write("truth.csv", "entity,agency,record\nE1,health,H1\n");
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains(
            "line 1: the header is `entity,agency,record`, expected `entity_id,agency,record_id`"
        ),
        "{e}"
    );

    // No header: the first row is data and is not echoed.
    f.write("truth.csv", "E1,health,H1\nE2,health,H2\n");
    let e = f.refuse(&links, &[]);
    assert!(e.contains("line 1 looks like data, not the header"), "{e}");
    assert!(!e.contains("H1"), "{e}");

    f.write(
        "truth.csv",
        "entity_id,agency,record_id\nE1,health,H1\nE2,police,H1\nE3,health,H1\n",
    );
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains(
            "line 4: the record (agency health, column `record_id`) is listed twice, first on \
             line 2"
        ),
        "{e}"
    );
    assert!(!e.contains("H1"), "{e}");

    f.write(
        "truth.csv",
        "entity_id,agency,record_id\nE1,health,H1\nE2,health\n",
    );
    let e = f.refuse(&links, &[]);
    assert!(e.contains("line 3: has 2 fields, expected 3"), "{e}");

    f.write("truth.csv", "entity_id,agency,record_id\nE1,,H1\n");
    let e = f.refuse(&links, &[]);
    assert!(e.contains("line 2, column `agency`: is empty"), "{e}");
}

#[test]
fn refuses_bad_link_files() {
    let f = Files::new();
    let l = f.path("links.csv").display().to_string();

    let missing = f.path("nowhere.csv");
    let e = f.refuse(&missing, &[]);
    assert!(e.contains("nowhere.csv: No such file"), "{e}");

    let links = f.write("links.csv", "");
    let e = f.refuse(&links, &[]);
    assert!(e.contains(&format!("{l}: is empty")), "{e}");

    let links = f.write("links.csv", "link,agency,record_id,score,status\n");
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains("expected `link_id,agency,record_id,score,status`"),
        "{e}"
    );

    let links = f.links("L1,health,H1,0.9,match\nL1,social care,C1,0.9,match\n");
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains(&format!(
            "{l}: line 3: agency `social care` is not in the truth file"
        )),
        "{e}"
    );
    assert!(
        e.contains("(its agencies: education, health, police)"),
        "{e}"
    );

    // An "agency" that looks like an id is not echoed.
    let links = f.links("L1,H1,health,0.9,match\n");
    let e = f.refuse(&links, &[]);
    assert!(e.contains("line 2: the agency (not shown"), "{e}");
    assert!(!e.contains("H1"), "{e}");

    let links =
        f.links("L1,health,H1,0.9,match\nL2,police,P1,0.9,match\nL3,health,H1,0.8,review\n");
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains(
            "line 4: the record (agency health, column `record_id`) is listed again, first on \
             line 2: a record may be in one link only"
        ),
        "{e}"
    );

    let links = f.links(
        "L1,health,H1,0.9,match\nL1,health,NOPE1,0.9,match\nL2,police,P1,0.9,match\n\
         L2,police,NOPE2,0.9,match\nL3,education,NOPE3,0.9,match\n",
    );
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains(
            "3 rows name a record id that is not in the truth file {} (first on line 3)"
                .replace("{}", &f.path("truth.csv").display().to_string())
                .as_str()
        ),
        "{e}"
    );
    assert!(!e.contains("NOPE"), "{e}");

    let links = f.links("L1,health,H1,0.9,maybe\n");
    let e = f.refuse(&links, &[]);
    assert!(
        e.contains("line 2, column `status`: expected `match` or `review`"),
        "{e}"
    );
}

#[test]
fn refuses_bad_twin_files() {
    let f = Files::new();
    let links = f.links(PERFECT);
    let twins = f.write("bad-twins.csv", "a,b\nE5,E6\n");
    let e = f.refuse(&links, &["--twins", twins.to_str().unwrap()]);
    assert!(
        e.contains("line 1: the header is `a,b`, expected `entity_a,entity_b`"),
        "{e}"
    );
    let twins = f.write("bad-twins.csv", "entity_a,entity_b\nE5,E5\n");
    let e = f.refuse(&links, &["--twins", twins.to_str().unwrap()]);
    assert!(
        e.contains("line 2: `entity_a` and `entity_b` are the same entity"),
        "{e}"
    );
    let twins = f.write("bad-twins.csv", "entity_a,entity_b\nX1,X2\n");
    let e = f.refuse(&links, &["--twins", twins.to_str().unwrap()]);
    assert!(
        e.contains("none of its entities is in the truth file"),
        "{e}"
    );
    // A file with no pairs is fine (a small population may have no twins).
    let twins = f.write("bad-twins.csv", "entity_a,entity_b\n");
    let j = f.json(&links, &["--twins", twins.to_str().unwrap()]);
    assert_eq!(j["twins"]["twin_sets"], 0);
    assert!(j["twins"]["twin_precision"].is_null());
}

#[test]
fn synth_twins_file_evaluates() {
    // The synthetic generator's truth and twins files are accepted as they are.
    let f = Files::new();
    let out = f.path("synth");
    bloomlink()
        .args(["synth", "--children", "400", "--seed", "3", "-o"])
        .arg(&out)
        .assert()
        .success();
    // Link every record to its true entity: a perfect link table.
    let truth = std::fs::read_to_string(out.join("truth.csv")).unwrap();
    let mut rows = String::from(HEADER);
    for line in truth.lines().skip(1) {
        let mut p = line.split(',');
        let (e, a, r) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        rows.push_str(&format!("L{e},{a},{r},1.0,match\n"));
    }
    let links = f.write("synth-links.csv", &rows);
    let j: Value = success_json(
        bloomlink()
            .arg("evaluate")
            .arg("--truth")
            .arg(out.join("truth.csv"))
            .arg("--twins")
            .arg(out.join("twins.csv"))
            .arg(&links)
            .arg("--json"),
    );
    assert!(close(&j["overall"]["f1"], 1.0));
    assert_eq!(j["clusters"]["exact"], j["clusters"]["entities"]);
    assert_eq!(j["twins"]["twin_false_merges"], 0);
}
