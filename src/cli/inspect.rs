//! `bloomlink inspect`

use std::path::PathBuf;

use bloomlink::format::EncodingFile;
use bloomlink::signing::{self, EmbeddedSignature, InputSignature, Trust, Unsigned};
use bloomlink::tokens::token_kind;
use clap::Args;
use serde::Serialize;

use super::output::{self, thousands};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The encoding file.
    pub file: PathBuf,
    /// Also check the signature against this trust file (agency → public key); refused (exit 5)
    /// if the file is unsigned or its signature is not trusted or does not verify.
    #[arg(long, value_name = "TRUST.toml")]
    pub trust: Option<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Stats {
    min: u32,
    mean: f64,
    max: u32,
    fill: f64,
}

#[derive(Serialize)]
struct SegmentStats {
    name: String,
    bits: u32,
    popcount: Stats,
}

#[derive(Serialize)]
struct TokenStats {
    name: String,
    records_with_token: u64,
    share: f64,
}

#[derive(Serialize)]
struct Inspection<'a> {
    file: &'a PathBuf,
    checksum_sha256: String,
    format_version: u32,
    signature: Option<EmbeddedSignature>,
    trusted: Option<InputSignature>,
    header: &'a bloomlink::format::Header,
    popcount: Stats,
    segments: Vec<SegmentStats>,
    tokens: Vec<TokenStats>,
}

fn stats(values: impl Iterator<Item = u32>, bits: u32) -> Stats {
    let (mut min, mut max, mut sum, mut n) = (u32::MAX, 0u32, 0u64, 0u64);
    for v in values {
        min = min.min(v);
        max = max.max(v);
        sum += u64::from(v);
        n += 1;
    }
    let mean = if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    Stats {
        min: if n == 0 { 0 } else { min },
        mean,
        max,
        fill: mean / f64::from(bits.max(1)),
    }
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let f = EncodingFile::open(&a.file)?;
    let trusted = match &a.trust {
        Some(t) => Some(signing::check_file(&f, &Trust::load(t)?, Unsigned::Refuse)?),
        None => None,
    };
    let signature = signing::embedded(&f);
    let h = f.header();
    let n = f.len();
    let k = 1 + h.segments.len();
    let pcs = f.popcounts();
    let popcount = stats((0..n).map(|i| u32::from(pcs[i * k])), h.filter_bits);
    let segments = h
        .segments
        .iter()
        .enumerate()
        .map(|(s, seg)| SegmentStats {
            name: seg.name.clone(),
            bits: seg.bits,
            popcount: stats((0..n).map(|i| u32::from(pcs[i * k + 1 + s])), seg.bits),
        })
        .collect();
    let mut with = vec![0u64; h.token_kinds.len()];
    for i in 0..n {
        let mut last = usize::MAX;
        for &t in f.tokens_of(i) {
            let kind = token_kind(t);
            if kind != last {
                with[kind] += 1;
                last = kind;
            }
        }
    }
    let tokens = h
        .token_kinds
        .iter()
        .zip(&with)
        .map(|(name, &c)| TokenStats {
            name: name.clone(),
            records_with_token: c,
            share: if n == 0 { 0.0 } else { c as f64 / n as f64 },
        })
        .collect();
    let ins = Inspection {
        file: &a.file,
        checksum_sha256: f.checksum_hex(),
        format_version: f.version(),
        signature,
        trusted,
        header: h,
        popcount,
        segments,
        tokens,
    };
    // A signature that does not hold by itself (altered or relabelled after signing): the
    // report is printed, and the command fails (exit 5), trust file or not, so that
    // `inspect f && send f` never passes it.
    let forged = signing::check_embedded(&f).err();
    if a.json {
        // `outcome` as in every command's JSON; a signature that does not hold is a failure
        // (exit 5) whose object is the report itself.
        let mut j = serde_json::to_value(&ins)?;
        if let Some(o) = j.as_object_mut() {
            let outcome = if forged.is_some() {
                "signature_invalid"
            } else {
                "done"
            };
            o.insert("outcome".into(), outcome.into());
            if forged.is_some() {
                o.insert("exit_code".into(), 5.into());
            }
        }
        let printed = output::print_json(&j);
        return refused_or(forged, printed);
    }
    let mut t = format!(
        "{}: bloomlink encoding file, checksum OK\n  agency          {}\n  created         {} \
         (bloomlink {})\n  key fingerprint {} (epoch {})\n  schema          {} {}\n  records         \
         {} of {} rows read ({} rejected){}\n  filter          {} bits, mean popcount {:.1} ({:.1} \
         % of bits set), min {}, max {}\n",
        a.file.display(),
        h.agency,
        h.created,
        h.tool_version,
        h.key_fingerprint,
        h.key_epoch,
        h.schema_name,
        h.schema_digest,
        thousands(h.records),
        thousands(h.rows_read),
        thousands(h.rows_rejected),
        if h.opaque_ids { ", opaque row references" } else { "" },
        h.filter_bits,
        ins.popcount.mean,
        ins.popcount.fill * 100.0,
        ins.popcount.min,
        ins.popcount.max,
    );
    t.push_str(&match (&ins.signature, &ins.trusted) {
        (None, _) => "  signature       none (unsigned, format version 1)\n".to_string(),
        (Some(s), Some(_)) => format!(
            "  signature       signed by {} (key {}): verified against the trust file {}\n",
            s.agency,
            s.fingerprint,
            a.trust
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        (Some(s), None) => format!(
            "  signature       signed by {} (key {}): {} under the key it carries; not checked \
             against a trust file (pass --trust)\n",
            s.agency,
            s.fingerprint,
            if s.valid { "valid" } else { "INVALID" }
        ),
    });
    t.push_str("  segments\n");
    for s in &ins.segments {
        t.push_str(&format!(
            "    {:<18} {:>5} bits, mean popcount {:>6.1} ({:>4.1} %)\n",
            s.name,
            s.bits,
            s.popcount.mean,
            s.popcount.fill * 100.0
        ));
    }
    t.push_str("  keyed tokens    ");
    let parts: Vec<String> = ins
        .tokens
        .iter()
        .map(|x| format!("{} {:.1} %", x.name, x.share * 100.0))
        .collect();
    t.push_str(&parts.join(", "));
    t.push('\n');
    let printed = output::print(&t);
    refused_or(forged, printed)
}

/// The refusal of a file whose signature does not hold, else the outcome of printing its
/// report: a reader that closed the pipe early (`inspect f | head`, a broken pipe, which the
/// caller treats as success) must not turn the refusal into exit 0.
fn refused_or(forged: Option<bloomlink::Error>, printed: anyhow::Result<()>) -> anyhow::Result<()> {
    match forged {
        Some(e) => Err(e.into()),
        None => printed,
    }
}
