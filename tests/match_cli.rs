//! `bloomlink match`: refusals, outputs, determinism, and quality on the shipped testdata.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use common::*;
use predicates::prelude::*;
use predicates::str::contains;

const AGENCIES: [&str; 3] = ["health", "police", "education"];

fn encode_all(dir: &Path, key: &Path, extra: &[&str]) -> Vec<PathBuf> {
    AGENCIES
        .iter()
        .map(|a| {
            let out = dir.join(format!("{a}.clk"));
            bloomlink()
                .args(["encode", "--quiet", "--key"])
                .arg(key)
                .arg("--columns")
                .arg(root().join(format!("testdata/{a}.toml")))
                .arg(root().join(format!("testdata/{a}.csv")))
                .arg("-o")
                .arg(&out)
                .args(extra)
                .assert()
                .success();
            out
        })
        .collect()
}

/// A temporary directory with the demo key and the three testdata exports encoded with it.
fn encoded_testdata() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let files = encode_all(dir.path(), &key, &[]);
    (dir, key, files)
}

/// `bloomlink match FILES -o OUT`, to add options to.
fn match_cmd(files: &[PathBuf], out: &Path) -> assert_cmd::Command {
    let mut cmd = bloomlink();
    cmd.arg("match").args(files).arg("-o").arg(out);
    cmd
}

fn run_match(files: &[PathBuf], out: &Path) -> assert_cmd::assert::Assert {
    match_cmd(files, out).assert()
}

/// `--previous-links`: the same inputs again keep every link id (the table is byte-identical);
/// when police joins, the links that continue earlier ones keep their ids, which they do not
/// without the option (ids hash the job's inputs); a table naming an agency the job leaves out,
/// or ids bloomlink does not write, are refused.
#[test]
fn link_ids_carry_over_from_an_earlier_job() {
    let (dir, _, files) = encoded_testdata();
    let night1 = dir.path().join("night1");
    run_match(&files, &night1).success();
    let links1 = night1.join("links.csv");
    let table = |out: &Path| std::fs::read_to_string(out.join("links.csv")).unwrap();
    let ids = |out: &Path| -> HashMap<(String, String), String> {
        csv::Reader::from_path(out.join("links.csv"))
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                ((r[1].to_string(), r[2].to_string()), r[0].to_string())
            })
            .collect()
    };
    let again = dir.path().join("again");
    let j = success_json(
        match_cmd(&files, &again)
            .arg("--previous-links")
            .arg(&links1)
            .arg("--json"),
    );
    assert_eq!(table(&again), table(&night1));
    let c = &j["link_ids"];
    assert_eq!(c["kept"], c["previous_links"], "{c}");
    assert_eq!(
        (c["new"].as_u64(), c["retired"].as_u64()),
        (Some(0), Some(0))
    );

    // Police joins on a later night: the links of health and education continue with their
    // ids (with the option; none without it).
    let no_police: Vec<PathBuf> = files
        .iter()
        .filter(|f| !f.to_string_lossy().contains("police"))
        .cloned()
        .collect();
    assert_eq!(no_police.len(), 2);
    let before = dir.path().join("before");
    run_match(&no_police, &before).success();
    let night2 = dir.path().join("night2");
    match_cmd(&files, &night2)
        .arg("--previous-links")
        .arg(before.join("links.csv"))
        .assert()
        .success();
    let (before, after, without) = (ids(&before), ids(&night2), ids(&night1));
    let same = |now: &HashMap<(String, String), String>| {
        before
            .iter()
            .filter(|(k, v)| now.get(*k) == Some(*v))
            .count()
    };
    assert!(
        same(&after) * 100 > before.len() * 95,
        "{} of {}",
        same(&after),
        before.len()
    );
    assert_eq!(same(&without), 0);

    // The other way round, a table of a job with police for a job without it is refused:
    // police holds those ids, and they would join its records to links it is not part of.
    match_cmd(&no_police, &dir.path().join("night3"))
        .arg("--previous-links")
        .arg(&links1)
        .assert()
        .code(2)
        .stderr(contains("a job with police, which this job does not link"));
    // A link id bloomlink does not write is refused, not copied into every agency's table.
    let odd = dir.path().join("odd.csv");
    let t = table(&night1);
    let first = t
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&odd, t.replacen(&first, "\"L1,x\"", 1)).unwrap();
    match_cmd(&files, &dir.path().join("night4"))
        .arg("--previous-links")
        .arg(&odd)
        .assert()
        .code(1)
        .stderr(contains("row 1: the link id is not one bloomlink writes"));
}

#[test]
fn links_testdata_with_high_precision_and_recall() {
    let (dir, _, files) = encoded_testdata();
    let out = dir.path().join("out");
    run_match(&files, &out).success().stdout(contains("links"));

    // Pairwise quality over cross-agency pairs against truth.csv.
    let truth: HashMap<(String, String), String> =
        csv::Reader::from_path(root().join("testdata/truth.csv"))
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                ((r[1].to_string(), r[2].to_string()), r[0].to_string())
            })
            .collect();
    let mut links: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in csv::Reader::from_path(out.join("links.csv"))
        .unwrap()
        .records()
    {
        let r = r.unwrap();
        assert!(!r[0].is_empty());
        if &r[4] == "match" {
            links
                .entry(r[0].to_string())
                .or_default()
                .push((r[1].to_string(), r[2].to_string()));
        }
    }
    let mut predicted = BTreeSet::new();
    for m in links.values() {
        let agencies: BTreeSet<&str> = m.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            agencies.len(),
            m.len(),
            "at most one record per agency in a link"
        );
        for (i, a) in m.iter().enumerate() {
            for b in &m[i + 1..] {
                predicted.insert((a.min(b).clone(), a.max(b).clone()));
            }
        }
    }
    let mut by_entity: HashMap<&str, Vec<&(String, String)>> = HashMap::new();
    for (k, e) in &truth {
        by_entity.entry(e.as_str()).or_default().push(k);
    }
    let mut true_pairs = BTreeSet::new();
    for m in by_entity.values() {
        for (i, a) in m.iter().enumerate() {
            for b in &m[i + 1..] {
                if a.0 != b.0 {
                    true_pairs.insert(((*a).min(*b).clone(), (*a).max(*b).clone()));
                }
            }
        }
    }
    let tp = predicted.intersection(&true_pairs).count() as f64;
    let precision = tp / predicted.len() as f64;
    let recall = tp / true_pairs.len() as f64;
    // Floors well below what the matcher reaches (see README), so that a regression fails.
    let f1 = 2.0 * precision * recall / (precision + recall);
    assert!(
        f1 > 0.965,
        "F1 {f1} (precision {precision}, recall {recall})"
    );
    assert!(precision > 0.95, "precision {precision}");
    assert!(recall > 0.95, "recall {recall}");

    // Per-agency files carry ids and link ids only, no scores.
    let police = std::fs::read_to_string(out.join("links-police.csv")).unwrap();
    assert!(police.starts_with("record_id,link_id\n"));
    assert!(police.lines().skip(1).all(|l| l.split(',').count() == 2));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for k in ["threshold", "review", "est_precision", "est_recall"] {
        let v = report["operating_point"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    // The model's estimate of the links' quality, made without the truth, is close to the
    // measured one (README: optimistic by about a point).
    let est = &report["estimated"];
    assert_eq!(
        est["linked_pairs"].as_u64().unwrap(),
        predicted.len() as u64,
        "the estimate is over the same pairs the truth is measured on"
    );
    for (k, measured) in [("precision", precision), ("recall", recall), ("f1", f1)] {
        let e = est[k].as_f64().unwrap();
        assert!(
            (e - measured).abs() < 0.04,
            "estimated {k} {e}, measured {measured}"
        );
    }
    assert!(
        report["operating_point"]["review"].as_f64()
            <= report["operating_point"]["threshold"].as_f64()
    );
    assert_eq!(report["inputs"].as_array().unwrap().len(), 3);
}

#[test]
fn outputs_are_byte_identical_whatever_the_thread_count() {
    let (dir, _, files) = encoded_testdata();
    let mut outs = Vec::new();
    for threads in ["1", "3"] {
        let out = dir.path().join(format!("out{threads}"));
        // `-q` only hides the progress display (never shown off a terminal anyway).
        let quiet: &[&str] = if threads == "3" { &["-q"] } else { &[] };
        bloomlink()
            .env("RAYON_NUM_THREADS", threads)
            .arg("match")
            .args(quiet)
            .args(&files)
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        outs.push(out);
    }
    for f in [
        "links.csv",
        "links-health.csv",
        "links-police.csv",
        "links-education.csv",
    ] {
        let a = std::fs::read(outs[0].join(f)).unwrap();
        let b = std::fs::read(outs[1].join(f)).unwrap();
        assert!(a == b, "{f} differs between thread counts");
    }
    // The report too, but for its timings: its estimates are sums over every record, which
    // must not depend on how the work was split.
    let report = |out: &std::path::Path| {
        let text = std::fs::read_to_string(out.join("report.json")).unwrap();
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).unwrap();
        v.remove("seconds").expect("report has timings");
        v
    };
    let (a, b) = (report(&outs[0]), report(&outs[1]));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_eq!(
            Some(v),
            b.get(k),
            "report.json `{k}` differs between thread counts"
        );
    }
}

/// The library reports each step of a job as it starts, in order, for the progress display;
/// reporting changes nothing in the outcome.
#[test]
fn a_job_reports_its_steps_in_order() {
    use bloomlink::linkage::job::{self, MatchOptions};
    use bloomlink::linkage::{InputPolicy, Inputs};
    let (_dir, _, files) = encoded_testdata();
    let inputs = Inputs::open(&files, InputPolicy { dedupe: false }).unwrap();
    let opts = MatchOptions::default();
    let kernel = bloomlink::similarity::Kernel::detect();
    let seen = std::sync::Mutex::new(Vec::new());
    let reported = job::run_reporting(&inputs, &opts, kernel, &|s| seen.lock().unwrap().push(s));
    assert_eq!(seen.into_inner().unwrap(), job::STAGES);
    let quiet = job::run(&inputs, &opts, kernel).unwrap();
    let without_timings = |o: &job::Outcome| {
        let mut v = serde_json::to_value(&o.report).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(without_timings(&reported.unwrap()), without_timings(&quiet));
}

#[test]
fn refuses_bad_input_sets() {
    let (dir, key, files) = encoded_testdata();
    let out = dir.path().join("out");
    // Zero or one input.
    bloomlink()
        .arg("match")
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("at least two"));
    run_match(&files[..1], &out)
        .code(2)
        .stderr(contains("at least two"));
    // The same agency twice, and the same file twice.
    let copy = dir.path().join("health-copy.clk");
    std::fs::copy(&files[0], &copy).unwrap();
    run_match(&[files[0].clone(), copy.clone()], &out)
        .code(2)
        .stderr(contains("both from agency `health`").and(contains("--dedupe")));
    // A key is refused outright.
    bloomlink()
        .arg("match")
        .args(&files)
        .arg("--key")
        .arg(&key)
        .arg("-o")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("never hold the linkage key"));
    // Threshold out of range.
    bloomlink()
        .arg("match")
        .args(&files)
        .args(["--threshold", "1.5", "-o"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(contains("between 0 and 1"));
    // Truncated and empty files.
    let bytes = std::fs::read(&files[1]).unwrap();
    let cut = dir.path().join("cut.clk");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    run_match(&[files[0].clone(), cut], &out)
        .code(5)
        .stderr(contains("truncated or altered"));
    let empty = dir.path().join("empty.clk");
    std::fs::write(&empty, b"").unwrap();
    run_match(&[files[0].clone(), empty], &out)
        .code(5)
        .stderr(contains("is empty"));
    // Unreadable (missing) file.
    run_match(&[files[0].clone(), dir.path().join("nope.clk")], &out)
        .code(1)
        .stderr(contains("nope.clk"));
    assert!(!out.exists(), "nothing written on refusal");
}

#[test]
fn refuses_different_keys_and_schemas_naming_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = demo_key(dir.path());
    let a = encode_all(dir.path(), &key, &[]);
    let other = dir.path().join("other.key");
    bloomlink()
        .args(["key", "new", "--partnership", "Other", "-o"])
        .arg(&other)
        .assert()
        .success();
    let sub = dir.path().join("b");
    std::fs::create_dir(&sub).unwrap();
    let b = encode_all(&sub, &other, &[]);
    let out = dir.path().join("out");
    run_match(&[a[0].clone(), b[1].clone()], &out)
        .code(2)
        .stderr(
            contains("different keys")
                .and(contains("police.clk"))
                .and(contains("health.clk")),
        );

    let schema = dir.path().join("schema.toml");
    let text =
        bloomlink::schema::DEFAULT_SCHEMA_TOML.replace("bits_per_token = 10", "bits_per_token = 9");
    std::fs::write(&schema, text).unwrap();
    let sub = dir.path().join("c");
    std::fs::create_dir(&sub).unwrap();
    let c = encode_all(&sub, &key, &["--schema", schema.to_str().unwrap()]);
    run_match(&[a[0].clone(), c[1].clone()], &out)
        .code(2)
        .stderr(contains("different linkage schemas"));
}

#[test]
fn existing_output_directory_needs_force() {
    let (dir, _, files) = encoded_testdata();
    let out = dir.path().join("out");
    run_match(&files, &out).success();
    run_match(&files, &out)
        .code(1)
        .stderr(contains("already exists"));
    bloomlink()
        .arg("match")
        .args(&files)
        .arg("-o")
        .arg(&out)
        .arg("--force")
        .assert()
        .success();
    assert!(out.join("links.csv").exists());
    // The link tables join the agencies' record ids: owner-only, as encodings are.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700);
        for e in std::fs::read_dir(&out).unwrap() {
            assert_eq!(mode(&e.unwrap().path()), 0o600);
        }
    }
    // The old output was moved aside and removed; nothing hidden is left beside the new one.
    let hidden: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
    // A directory holding anything match does not write is not replaced, even with --force:
    // here the job's own encodings (`-o .` beside them) and a note.
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let inputs_dir = files[0].parent().unwrap().to_path_buf();
    for (target, name) in [(&out, "keep.txt"), (&inputs_dir, ".clk")] {
        bloomlink()
            .arg("match")
            .args(&files)
            .arg("-o")
            .arg(target)
            .arg("--force")
            .assert()
            .code(2)
            .stderr(contains(name).and(contains("which match does not write")));
    }
    assert!(out.join("keep.txt").exists() && out.join("links.csv").exists());
    assert!(files.iter().all(|f| f.exists()));
    // A file where the output directory belongs is not replaced, even with --force.
    let file = dir.path().join("links-file");
    std::fs::write(&file, "mine").unwrap();
    bloomlink()
        .arg("match")
        .args(&files)
        .arg("-o")
        .arg(&file)
        .arg("--force")
        .assert()
        .failure()
        .stderr(contains("not a directory"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

/// With --json a failed job prints one JSON object on stdout (outcome, exit code, error), as a
/// successful one prints its report: a monitor parses stdout whatever happened.
#[test]
fn a_failed_job_prints_json_with_its_exit_code() {
    let (dir, key, files) = encoded_testdata();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let failed = |extra: &[&str], code: i32| {
        let mut c = bloomlink();
        c.arg("match").args(&files).arg("-o").arg(&out);
        failure_json(c.args(extra), code)
    };
    let j = failed(&[], 1);
    assert_eq!(j["outcome"], "output_exists", "{j}");
    assert_eq!(j["exit_code"], 1, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("already exists"),
        "{j}"
    );
    let j = failed(&["--force", "--key", key.to_str().unwrap()], 2);
    assert_eq!(j["outcome"], "usage", "{j}");
    assert_eq!(j["exit_code"], 2, "{j}");
}

/// Every array in a JSON value, with its path.
fn arrays<'a>(
    v: &'a serde_json::Value,
    path: String,
    out: &mut Vec<(String, &'a Vec<serde_json::Value>)>,
) {
    match v {
        serde_json::Value::Array(a) => {
            out.push((path.clone(), a));
            for (i, x) in a.iter().enumerate() {
                arrays(x, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                arrays(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn released_outputs_hold_no_scores_below_the_review_band() {
    // Culnane, Rubinstein & Teague (2017): released similarity scores are themselves a leak.
    let (dir, _, files) = encoded_testdata();
    for (run, extra) in [
        ("default", &["--include-unlinked"][..]),
        (
            "narrow",
            &[
                "--include-unlinked",
                "--threshold",
                "0.9",
                "--review",
                "0.6",
            ][..],
        ),
    ] {
        let out = dir.path().join(run);
        bloomlink()
            .arg("match")
            .args(&files)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .assert()
            .success();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        let review = report["operating_point"]["review"].as_f64().unwrap();
        if run == "narrow" {
            assert_eq!(review, 0.6);
        }
        // links.csv: a score only on linked records, never below the review band (scores are
        // printed with 4 decimals); unlinked records carry neither score nor status.
        let (mut linked, mut unlinked) = (0, 0);
        for r in csv::Reader::from_path(out.join("links.csv"))
            .unwrap()
            .records()
        {
            let r = r.unwrap();
            if r[0].is_empty() {
                unlinked += 1;
                assert!(
                    r[3].is_empty() && r[4].is_empty(),
                    "{run}: unlinked row with a score"
                );
            } else {
                linked += 1;
                let score: f64 = r[3].parse().unwrap();
                assert!(
                    score >= review - 5e-5,
                    "{run}: score {score} below the review band {review}"
                );
                assert!(&r[4] == "match" || &r[4] == "review");
            }
        }
        assert!(
            linked > 0 && unlinked > 0,
            "{run}: {linked} linked, {unlinked} unlinked"
        );
        // links-<agency>.csv: record id and link id only.
        for a in AGENCIES {
            let text = std::fs::read_to_string(out.join(format!("links-{a}.csv"))).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some("record_id,link_id"));
            for l in lines {
                let cols: Vec<&str> = l.split(',').collect();
                assert_eq!(
                    cols.len(),
                    2,
                    "{run}: links-{a}.csv has more than two columns"
                );
                assert!(cols[1].starts_with('L') && cols[1].parse::<f64>().is_err());
                assert!(!cols[1].contains('.'), "{run}: links-{a}.csv: {l}");
            }
        }
        // report.json: score and Dice distributions as 20-bin histograms summing to the pairs
        // scored; no list anywhere as long as a per-pair or per-record list would be.
        let pairs = report["pairs_scored"].as_u64().unwrap();
        for h in ["posterior_histogram", "dice_histogram"] {
            let bins = report[h].as_array().unwrap();
            assert_eq!(bins.len(), 20, "{h}");
            assert_eq!(
                bins.iter().map(|b| b.as_u64().unwrap()).sum::<u64>(),
                pairs,
                "{h}"
            );
        }
        let mut all = Vec::new();
        arrays(&report, String::new(), &mut all);
        for (path, a) in all {
            assert!(
                a.len() <= 64,
                "{run}: report.json{path} has {} entries",
                a.len()
            );
        }
    }
}

#[test]
fn check_blocking_measures_blocking_against_exhaustive_comparison() {
    let (dir, _, files) = encoded_testdata();
    let mut cmd = bloomlink();
    cmd.arg("match")
        .args(&files)
        .arg("-o")
        .arg(dir.path().join("out"))
        .args(["--candidates", "blocking", "--check-blocking", "--json"]);
    let report = success_json(&mut cmd);
    assert_eq!(report["outcome"], "done");
    let b = &report["blocking_check"];
    let (ex, found) = (
        b["exhaustive_link_pairs"].as_u64().unwrap(),
        b["found_by_blocking"].as_u64().unwrap(),
    );
    // testdata has about 1,600 cross-agency true pairs; exhaustive comparison links most.
    assert!(ex > 1_000, "{b}");
    assert!(found <= ex && found <= b["blocked_link_pairs"].as_u64().unwrap());
    let recall = b["recall"].as_f64().unwrap();
    assert!((recall - found as f64 / ex as f64).abs() < 1e-12);
    assert!(recall > 0.95, "blocking recall {recall}");
    // Every pair of the testdata's three files was compared.
    let sizes: Vec<u64> = report["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["records"].as_u64().unwrap())
        .collect();
    let cross = sizes[0] * sizes[1] + sizes[0] * sizes[2] + sizes[1] * sizes[2];
    assert_eq!(b["exhaustive_comparisons"].as_u64().unwrap(), cross);
}

#[test]
fn lsh_blocks_add_candidates_and_keep_outputs_independent_of_threads() {
    let (dir, _, files) = encoded_testdata();
    let run = |out: &str, threads: &str, lsh: bool| {
        let mut cmd = bloomlink();
        cmd.env("RAYON_NUM_THREADS", threads)
            .arg("match")
            .args(&files)
            .arg("-o")
            .arg(dir.path().join(out))
            .args(["--candidates", "blocking", "--json"]);
        if lsh {
            cmd.arg("--lsh");
        }
        success_json(&mut cmd)
    };
    let plain = run("plain", "2", false);
    let one = run("lsh1", "1", true);
    let three = run("lsh3", "3", true);
    assert!(
        one["candidate_pairs"].as_u64() > plain["candidate_pairs"].as_u64(),
        "LSH adds candidate pairs"
    );
    let lsh_blocks = one["candidates"]["blocks_used"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k[0] == "lsh")
        .map(|k| k[1].as_u64().unwrap());
    assert!(lsh_blocks.unwrap_or(0) > 0, "{}", one["candidates"]);
    for f in [
        "links.csv",
        "links-health.csv",
        "links-police.csv",
        "links-education.csv",
    ] {
        assert_eq!(
            std::fs::read(dir.path().join("lsh1").join(f)).unwrap(),
            std::fs::read(dir.path().join("lsh3").join(f)).unwrap(),
            "{f} differs between 1 and 3 threads"
        );
    }
    assert_eq!(one["candidate_pairs"], three["candidate_pairs"]);
}

/// Inputs encoded by different bloomlink versions are linked with a warning, in the summary and
/// in report.json: names are folded with each build's Unicode tables, so a rare name can
/// encode differently and miss its links, which no digest or fingerprint shows.
#[test]
fn inputs_of_different_versions_are_warned_about() {
    let (dir, _, files) = encoded_testdata();
    let same = run_match(&files, &dir.path().join("same"))
        .success()
        .get_output()
        .clone();
    assert!(!String::from_utf8_lossy(&same.stdout).contains("warning"));
    // Police's file as an older version would have written it (same length, checksum redone).
    let version = env!("CARGO_PKG_VERSION");
    let older = "0".repeat(version.len());
    let mut b = std::fs::read(&files[1]).unwrap();
    let at = b
        .windows(version.len())
        .position(|w| w == version.as_bytes())
        .unwrap();
    b[at..at + older.len()].copy_from_slice(older.as_bytes());
    reforge(&mut b);
    std::fs::write(&files[1], &b).unwrap();
    let out = dir.path().join("mixed");
    let got = run_match(&files, &out).success().get_output().clone();
    let stdout = String::from_utf8_lossy(&got.stdout);
    let mut both = [older.as_str(), version];
    both.sort();
    assert!(
        stdout.contains(&format!(
            "different bloomlink versions ({})",
            both.join(", ")
        )),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["warnings"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["inputs"][1]["tool_version"], older.as_str());
}
