//! `bloomlink evaluate`

use std::path::PathBuf;
use std::time::Instant;

use bloomlink::evaluate::{self, Evaluation, PairMetrics, StatusFilter};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::output::{self, thousands};

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The link table to measure (`link_id,agency,record_id,score,status`), e.g. OUTDIR/links.csv.
    #[arg(value_name = "LINKS.csv")]
    pub links: PathBuf,
    /// Truth file: `entity_id,agency,record_id`, one row per record (`bloomlink synth` writes
    /// truth.csv).
    #[arg(long, value_name = "TRUTH.csv")]
    pub truth: PathBuf,
    /// Twins file: `entity_a,entity_b`, pairs of children of the same multiple birth
    /// (`bloomlink synth` writes twins.csv); adds twin precision and recall.
    #[arg(long, value_name = "TWINS.csv")]
    pub twins: Option<PathBuf>,
    /// Which links count as predicted: `match` (the confident links) or `all` (also the review
    /// band).
    #[arg(long, value_enum, default_value_t = Status::Match)]
    pub status: Status,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl EvaluateArgs {
    /// Default evaluation with a twins file, for `demo`.
    pub fn for_demo(truth: PathBuf, links: PathBuf, twins: PathBuf) -> EvaluateArgs {
        EvaluateArgs {
            links,
            truth,
            twins: Some(twins),
            status: Status::Match,
            json: false,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Links of status `match` only.
    Match,
    /// Links of status `match` and `review`.
    All,
}

/// The JSON output.
#[derive(Serialize)]
struct Summary<'a> {
    links_file: &'a PathBuf,
    truth_file: &'a PathBuf,
    twins_file: Option<&'a PathBuf>,
    #[serde(flatten)]
    evaluation: &'a Evaluation,
    seconds: f64,
}

pub fn run(a: EvaluateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let status = match a.status {
        Status::Match => StatusFilter::Match,
        Status::All => StatusFilter::All,
    };
    let (truth, links, twins) = evaluate::read_inputs(&a.truth, &a.links, a.twins.as_deref())?;
    let e = evaluate::evaluate(&truth, &links, twins.as_ref(), status);
    let summary = Summary {
        links_file: &a.links,
        truth_file: &a.truth,
        twins_file: a.twins.as_ref(),
        evaluation: &e,
        seconds: start.elapsed().as_secs_f64(),
    };
    if a.json {
        output::print_json(&summary)
    } else {
        output::print(&human(&summary))
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.4}"))
}

fn human(s: &Summary<'_>) -> String {
    let e = s.evaluation;
    let r = &e.records;
    let mut t = format!(
        "Linkage quality of {} against {}\n",
        s.links_file.display(),
        s.truth_file.display()
    );
    let status = match e.status {
        StatusFilter::Match => format!(
            "links of status match ({} review rows left out; --status all counts them)",
            thousands(r.review_rows_left_out)
        ),
        StatusFilter::All => "links of status match and review".to_string(),
    };
    t.push_str(&format!(
        "  {} records of {} entities; {} records in {} links evaluated, {} not linked\n  \
         counted: {status}\n\n",
        thousands(r.truth_records),
        thousands(r.entities),
        thousands(r.linked_records),
        thousands(r.links),
        thousands(r.truth_records - r.linked_records),
    ));

    // The pair table: one row per agency pair, then all pairs.
    let mut rows: Vec<(String, &PairMetrics)> = e
        .agency_pairs
        .iter()
        .map(|p| (p.pair.clone(), &p.metrics))
        .collect();
    rows.push(("all agency pairs".to_string(), &e.overall));
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|(_, m)| {
            [
                thousands(m.true_pairs),
                thousands(m.predicted_pairs),
                thousands(m.tp),
                thousands(m.fp),
                thousands(m.fn_),
                ratio(m.precision),
                ratio(m.recall),
                ratio(m.f1),
            ]
        })
        .collect();
    let heads = [
        "true",
        "predicted",
        "TP",
        "FP",
        "FN",
        "precision",
        "recall",
        "F1",
    ];
    let name_w = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0)
        .max("pairs".len());
    let widths: Vec<usize> = (0..heads.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .max()
                .unwrap_or(0)
                .max(heads[i].len())
        })
        .collect();
    t.push_str(&format!("  {:<name_w$}", "pairs"));
    for (h, w) in heads.iter().zip(&widths) {
        t.push_str(&format!("  {h:>w$}"));
    }
    t.push('\n');
    for ((name, _), c) in rows.iter().zip(&cells) {
        t.push_str(&format!("  {name:<name_w$}"));
        for (v, w) in c.iter().zip(&widths) {
            t.push_str(&format!("  {v:>w$}"));
        }
        t.push('\n');
    }

    let c = &e.clusters;
    t.push_str(&format!(
        "\n  cluster exactness  {}  ({} of {} entities with 2 or more records)\n  \
         {:19}{}  ({} of {} entities in 2 or more agencies)\n",
        ratio(c.exactness),
        thousands(c.exact),
        thousands(c.entities),
        "",
        ratio(c.multi_agency_exactness),
        thousands(c.multi_agency_exact),
        thousands(c.multi_agency_entities),
    ));
    if let Some(w) = &e.twins {
        t.push_str(&format!(
            "  twin precision     {}  ({} of {} predicted pairs within twin sets join two \
             co-twins)\n  twin recall        {}  ({} of {} true pairs of twins' records \
             linked)\n",
            ratio(w.twin_precision),
            thousands(w.twin_false_merges),
            thousands(w.twin_pairs_predicted),
            ratio(w.twin_recall),
            thousands(w.twin_correct_pairs),
            thousands(w.twin_true_pairs),
        ));
    }
    t.push_str(
        "\n  Pairs are of records of different agencies: true if of the same entity, predicted if\n  \
         in the same link. Exact: all the entity's records in one link holding no other record.\n",
    );
    if e.twins.is_some() {
        t.push_str(
            "  Twin precision = 1 - false merges (predicted pairs joining two co-twins) / predicted\n  \
             pairs within twin sets (a child's own records or a co-twin's).\n",
        );
    }
    t
}
