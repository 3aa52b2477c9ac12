//! `bloomlink demo`: the whole story on synthetic data, in a temporary directory.

use std::path::{Path, PathBuf};

use bloomlink::colmap::ColumnMap;
use bloomlink::encode::{self, EncodeOptions};
use bloomlink::format::{self, EncodingFile, Header};
use bloomlink::fsutil::Overwrite;
use bloomlink::key::{Expiry, LinkageKey};
use bloomlink::schema::Schema;
use bloomlink::signing::SigningKey;
use bloomlink::synth::{self, SynthConfig};
use clap::Args;

use super::output::{self, thousands};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Children in the synthetic population (generated afresh with `synth`).
    #[arg(long, default_value_t = 5_000)]
    pub children: usize,
    /// Keep the working directory here instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

/// The demo key shipped in keys/, embedded so the demo runs from any directory.
const DEMO_KEY: &str = include_str!("../../keys/demo.key");

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let tmp;
    let dir: &Path = match &a.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path()
        }
    };
    let say = |s: String| output::print(&format!("{s}\n"));
    say(format!("bloomlink demo, working in {}\n", dir.display()))?;

    say(
        "1. Synthetic exports: one population of children, seen by health, police and \
         education, each in its own format (fictitious people only)."
            .into(),
    )?;
    let data = dir.join("exports");
    let s = synth::generate(&SynthConfig::new(a.children, 42), &data)?;
    for (agency, rows) in &s.rows {
        say(format!(
            "   {agency:<10} {:>7} rows  exports/{agency}.csv",
            thousands(*rows as u64)
        ))?;
    }

    say(
        "\n2. The key custodian's linkage key: here the shipped DEMO key (never for real data)."
            .into(),
    )?;
    let key_path = dir.join("demo.key");
    write_private(&key_path, DEMO_KEY)?;
    let key = LinkageKey::load(&key_path, Expiry::Enforce)?;
    say(format!(
        "   fingerprint {}  (public id, safe to print)",
        key.info().fingerprint
    ))?;

    say(
        "\n3. Each agency encodes its export with the key and signs it with its own Ed25519 \
         signing key: no raw personal data leaves."
            .into(),
    )?;
    let schema = Schema::default_uk();
    let mut trust = String::from("[agencies]\n");
    for agency in ["health", "police", "education"] {
        // In real use made once with `signing-key new` and kept at the agency.
        let signer = SigningKey::generate(agency)?;
        trust.push_str(&format!("{agency} = \"{}\"\n", signer.info().public_key));
        let map = ColumnMap::load(&data.join(format!("{agency}.toml")))?;
        let input = data.join(format!("{agency}.csv"));
        let enc = encode::encode_csv(&input, &key, &schema, &map, &EncodeOptions::default())?;
        let header = Header::for_encoding(key.info(), &schema, &enc.report, false);
        let out = dir.join(format!("{agency}.clk"));
        let w = format::write_with(
            &out,
            &header,
            &enc.records,
            Overwrite::Replace,
            Some(&signer),
        )?;
        let f = EncodingFile::open(&out)?;
        let mean_fill = f
            .popcounts()
            .chunks(1 + f.header().segments.len())
            .map(|p| f64::from(p[0]))
            .sum::<f64>()
            / f.len().max(1) as f64
            / f64::from(f.header().filter_bits);
        say(format!(
            "   {agency:<10} {:>7} encoded, {:>4} rejected  → {agency}.clk ({} bytes, {:.0} % of \
             filter bits set, signed with key {})",
            thousands(enc.report.encoded),
            enc.report.rejected,
            thousands(w.bytes),
            mean_fill * 100.0,
            signer.info().fingerprint
        ))?;
    }
    let trust_path = dir.join("trust.toml");
    bloomlink::fsutil::write_text_atomic(
        &trust_path,
        Overwrite::Replace,
        bloomlink::fsutil::Mode::Default,
        &trust,
    )?;
    say(
        "\n   Try: bloomlink inspect FILE.clk — the files hold filters, keyed tokens and row \
         references only."
            .into(),
    )?;
    say(
        "\n4. The linkage unit checks every signature against trust.toml (the agencies' public \
         keys) and links the three encodings, without the key.\n"
            .into(),
    )?;
    let out = dir.join("links");
    let mut args = super::matchcmd::MatchArgs::for_demo(
        ["health", "police", "education"]
            .iter()
            .map(|a| dir.join(format!("{a}.clk")))
            .collect(),
        out.clone(),
    );
    args.trust = Some(trust_path);
    super::matchcmd::run(args, Some(&dir.join(bloomlink::audit::DEFAULT_FILE_NAME)))?;
    say(
        "\n5. Each agency gets back links-<agency>.csv (its own record ids → link ids). Here, \
         and only here, a truth file exists, so we can measure the result:\n"
            .into(),
    )?;
    super::evaluate::run(super::evaluate::EvaluateArgs::for_demo(
        data.join("truth.csv"),
        out.join("links.csv"),
        data.join("twins.csv"),
    ))?;
    if a.keep.is_none() {
        say(
            "\nThe working directory is removed now; pass --keep DIR to look at the files.".into(),
        )?;
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    bloomlink::fsutil::write_text_atomic(
        path,
        Overwrite::Replace,
        bloomlink::fsutil::Mode::Private,
        text,
    )?;
    Ok(())
}
