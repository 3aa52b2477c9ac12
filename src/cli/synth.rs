//! `bloomlink synth`

use std::path::PathBuf;
use std::time::Instant;

use bloomlink::synth::{self, SynthConfig};
use clap::Args;

use super::output::{self, thousands};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Number of children in the synthetic population.
    #[arg(long, default_value_t = 10_000)]
    pub children: usize,
    /// Random seed (same seed and size give byte-identical files).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Write into an existing non-empty directory, replacing files of the same names.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SynthArgs) -> anyhow::Result<()> {
    if a.children == 0 {
        anyhow::bail!("--children must be at least 1");
    }
    if a.output.exists() && !a.output.is_dir() {
        anyhow::bail!(
            "{} is a file: synth writes a directory of CSVs and column maps; give a directory \
             path (it is created if missing)",
            a.output.display()
        );
    }
    if !a.force {
        if let Ok(mut entries) = std::fs::read_dir(&a.output) {
            if entries.next().is_some() {
                return Err(bloomlink::Error::OutputExists {
                    path: a.output,
                    force: true,
                }
                .into());
            }
        }
    }
    let start = Instant::now();
    let cfg = SynthConfig::new(a.children, a.seed);
    let s = synth::generate(&cfg, &a.output)?;
    if a.json {
        return output::print_json(&serde_json::json!({
            "output": a.output,
            "children": s.children,
            "rows": s.rows.iter().map(|(k, v)| (k.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "twin_pairs": s.twins_pairs,
            "files": s.files,
            "seconds": start.elapsed().as_secs_f64(),
        }));
    }
    let mut t = format!(
        "Synthetic population of {} {} (seed {}) written to {} in {:.1} s\n",
        thousands(s.children as u64),
        if s.children == 1 { "child" } else { "children" },
        a.seed,
        a.output.display(),
        start.elapsed().as_secs_f64()
    );
    for (agency, rows) in &s.rows {
        t.push_str(&format!(
            "  {agency:<10} {:>10} {}\n",
            thousands(*rows as u64),
            if *rows == 1 { "row" } else { "rows" }
        ));
    }
    t.push_str(&format!(
        "  twin pairs {}\n  truth file truth.csv (entity_id,agency,record_id), twins.csv \
         (entity_a,entity_b); column maps health.toml, police.toml, education.toml\n  All names, dates, postcodes and identifiers \
         are fictitious.\n",
        thousands(s.twins_pairs as u64)
    ));
    output::print(&t)
}
