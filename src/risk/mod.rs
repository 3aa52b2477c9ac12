//! Re-identification risk check: an agency plays the attacker against its own encodings.
//!
//! The agency holds its plaintext export and the linkage key, so it can encode the export in
//! memory exactly as `encode` would ([`crate::encode::encode_csv`]) and then run published
//! attacks as the strongest realistic attacker: one who holds the encodings (filters and keyed
//! exact tokens, as in the `.clk` file) and knows the distribution of plaintext values (here:
//! the export itself, without the link between rows and encodings), but not the key. Because
//! the agency also knows which encoding came from which row, every guess is checked against the
//! truth.
//!
//! Attacks:
//! - [`frequency`]: frequency alignment of segment bit patterns and of keyed exact tokens;
//! - [`pattern`]: pattern mining on bit columns in the style of Christen et al. (2018).
//!
//! The attacker knows the schema, so with attribute salting a salted segment's reference values
//! include the salt and its tokens are salted as the encoder salts them.
//!
//! **Re-identified record** (see `docs/privacy.md`): every value the attack claims for the
//! record is correct, and together those values are held by no other record of the export (the
//! attacker has singled the child out). **Re-identified field value**: the attack claims the
//! record's value of that field, and every such claim is correct.
//!
//! The report carries counts and shares only; plaintext values appear only in the examples
//! requested with [`RiskOptions::show_values`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::colmap::ColumnMap;
use crate::date::Date;
use crate::encode::{self, EncodeOptions};
use crate::error::Result;
use crate::format::Header;
use crate::key::LinkageKey;
use crate::schema::Schema;

pub mod frequency;
pub mod pattern;
mod truth;

pub use pattern::PatternOptions;
use truth::{Target, Truth, NONE};

/// Options for [`assess`].
#[derive(Clone, Debug)]
pub struct RiskOptions {
    /// Date against which dates of birth are judged (as in encoding).
    pub today: Date,
    /// Encoder threads (0 = all cores); the attacks use rayon's pool.
    pub threads: usize,
    /// How far apart (in standard deviations of a count, `z·√count`, at least 1) neighbouring
    /// frequencies must be for the frequency attack to take a pairing as confident. 0 (the
    /// default) models an attacker who knows the distribution exactly; 2 one whose reference
    /// is a sample of similar size.
    pub frequency_z: f64,
    /// Pattern-mining tuning.
    pub pattern: PatternOptions,
    /// Include up to this many examples of re-identified records *with their values*.
    pub show_values: usize,
}

impl Default for RiskOptions {
    fn default() -> Self {
        RiskOptions {
            today: Date::today_utc(),
            threads: 0,
            frequency_z: 0.0,
            pattern: PatternOptions::default(),
            show_values: 0,
        }
    }
}

/// Overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Fewer than 0.1 % of records re-identified and no field's values above 5 %.
    Low,
    /// 0.1 % to 1 % of records, or some field's values above 5 %.
    Medium,
    /// 1 % of records or more.
    High,
}

/// One field's outcome under one attack.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FieldOutcome {
    /// Schema field.
    pub field: String,
    /// Records with a value in this field.
    pub present: u64,
    /// Records for which the attack claims a value of this field.
    pub claimed: u64,
    /// Records whose value the attack recovered correctly (all claims right).
    pub correct: u64,
    /// `correct / claimed` (1 when nothing was claimed).
    pub precision: f64,
    /// `correct / present`: share of the records' values recovered.
    pub share_of_records: f64,
    /// Distinct values of the field in the export.
    pub distinct_values: u64,
    /// Distinct values recovered for at least one record.
    pub distinct_recovered: u64,
    /// `distinct_recovered / distinct_values`.
    pub share_of_distinct_values: f64,
}

/// One target (segment or keyed token kind) under one attack.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetOutcome {
    /// `segment NAME` or `token NAME`.
    pub target: String,
    /// Records with a value for the target.
    pub present: u64,
    /// Records the attack guessed a value for.
    pub guessed: u64,
    /// Correct guesses.
    pub correct: u64,
    /// `correct / guessed` (1 when nothing was guessed).
    pub precision: f64,
}

/// One attack's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttackOutcome {
    /// `frequency`, `pattern_mining` or `all` (re-identified by either attack or by their
    /// claims pooled, conflicting claims dropped).
    pub attack: String,
    /// What it does, in one line.
    pub description: String,
    /// Records re-identified (see the module docs for the definition).
    pub records_reidentified: u64,
    /// Their share of all encoded records.
    pub share_reidentified: f64,
    /// Records with at least one claim.
    pub records_claimed: u64,
    /// Per field.
    pub fields: Vec<FieldOutcome>,
    /// Per target.
    pub targets: Vec<TargetOutcome>,
    /// Diagnostics (e.g. tokens identified per segment).
    pub notes: Vec<String>,
}

/// A re-identified record with its recovered values (only with `show_values`).
#[derive(Clone, Debug, Serialize)]
pub struct Example {
    /// The row's record id.
    pub record_id: String,
    /// Field → recovered value.
    pub values: Vec<(String, String)>,
}

/// Wall-clock seconds per stage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RiskSeconds {
    /// Encoding in memory.
    pub encode: f64,
    /// Reading the plaintext again (ground truth and reference).
    pub plaintext: f64,
    /// Frequency attack.
    pub frequency: f64,
    /// Pattern-mining attack.
    pub pattern_mining: f64,
    /// Checking guesses against the truth.
    pub scoring: f64,
}

/// The result of [`assess`].
#[derive(Clone, Debug, Serialize)]
pub struct RiskReport {
    /// The export assessed.
    pub input: PathBuf,
    /// Agency label.
    pub agency: String,
    /// SHA-256 of the export.
    pub input_sha256: String,
    /// Key fingerprint.
    pub key_fingerprint: String,
    /// Schema name.
    pub schema: String,
    /// Schema digest.
    pub schema_digest: String,
    /// Rows read, encoded and rejected.
    pub rows_read: u64,
    /// Records encoded (the population attacked).
    pub records: u64,
    /// What the attacker is assumed to hold.
    pub threat_model: String,
    /// The definition of a re-identified record.
    pub definition: String,
    /// Per attack, then `all`.
    pub attacks: Vec<AttackOutcome>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why.
    pub verdict_reason: String,
    /// What to change, for a non-specialist.
    pub advice: Vec<String>,
    /// Examples with personal values, only when requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<Vec<Example>>,
    /// Timing.
    pub seconds: RiskSeconds,
}

/// Threat model in one paragraph (also in `docs/privacy.md`).
pub const THREAT_MODEL: &str = "The attacker holds the encodings (Bloom filters with their \
segment layout and the keyed exact tokens, as in the .clk file), knows the schema (it is shared), \
and knows the distribution of plaintext values exactly (this export, without the link between \
rows and encodings), but not the key.";

/// Definition of a re-identified record (also in `docs/privacy.md`).
pub const DEFINITION: &str = "A record is re-identified when every value the attack claims for \
it is correct and those values together are held by no other record of the export. A field \
value is re-identified when the attack claims the record's value of that field and every such \
claim is correct.";

/// Encodes `input` in memory and runs the attacks against it; see the module docs.
pub fn assess(
    input: &Path,
    key: &LinkageKey,
    schema: &Schema,
    map: &ColumnMap,
    opts: &RiskOptions,
) -> Result<RiskReport> {
    let mut seconds = RiskSeconds::default();
    let t = Instant::now();
    let enc_opts = EncodeOptions {
        today: opts.today,
        threads: opts.threads,
        opaque_ids: false,
        progress: None,
    };
    let encoded = encode::encode_csv(input, key, schema, map, &enc_opts)?;
    let records = &encoded.records;
    // The layout as stored in an encoding file: what an attacker holding the file sees.
    let header = Header::for_encoding(key.info(), schema, &encoded.report, false);
    seconds.encode = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let truth = truth::load(input, schema, &header.segments, map, opts.today, records)?;
    seconds.plaintext = t.elapsed().as_secs_f64();

    let na = truth.attrs.len();
    let t = Instant::now();
    let freq: Vec<Vec<u32>> = truth
        .attrs
        .par_iter()
        .map(|a| {
            let (ids, distinct) = truth::encoding_ids(records, &a.target);
            frequency::align(&ids, distinct, &a.counts, opts.frequency_z)
        })
        .collect();
    seconds.frequency = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut mined: Vec<Vec<u32>> = vec![vec![NONE; truth.n]; na];
    let mut pattern_notes = Vec::new();
    for (ai, a) in truth.attrs.iter().enumerate() {
        if let Target::Segment { .. } = a.target {
            let out = pattern::attack(records, a, &opts.pattern);
            pattern_notes.push(format!(
                "{}: {} tokens' bit positions identified in {} mining steps",
                a.name,
                out.identified.len(),
                out.steps
            ));
            mined[ai] = out.guesses;
        }
    }
    seconds.pattern_mining = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let pooled = pool(&[&freq, &mined]);
    let mut attacks = vec![
        score(
            &truth,
            schema,
            &[&freq],
            "frequency",
            "frequency alignment of segment bit patterns and keyed exact tokens (Kuzu et al. 2011)",
        ),
        score(
            &truth,
            schema,
            &[&mined],
            "pattern_mining",
            "bit-column pattern mining of frequent tokens, then value matching (Christen et al. 2018)",
        ),
        score(
            &truth,
            schema,
            &[&freq, &mined, &pooled],
            "all",
            "re-identified by either attack, or by their claims pooled (conflicting claims dropped)",
        ),
    ];
    attacks[1].notes = pattern_notes;
    seconds.scoring = t.elapsed().as_secs_f64();

    let (verdict, verdict_reason) = verdict(&attacks[2]);
    let advice = advice(&attacks, verdict);
    let examples = (opts.show_values > 0)
        .then(|| examples(&truth, schema, records, &pooled, opts.show_values));
    Ok(RiskReport {
        input: input.to_path_buf(),
        agency: map.agency.clone(),
        input_sha256: encoded.report.input_sha256.clone(),
        key_fingerprint: key.info().fingerprint.clone(),
        schema: schema.def.name.clone(),
        schema_digest: schema.digest.clone(),
        rows_read: encoded.report.rows_read,
        records: records.len() as u64,
        threat_model: THREAT_MODEL.into(),
        definition: DEFINITION.into(),
        attacks,
        verdict,
        verdict_reason,
        advice,
        examples,
        seconds,
    })
}

/// Pools the guesses of several attacks: per target and record, the guess they agree on;
/// conflicting guesses are dropped.
fn pool(attacks: &[&Vec<Vec<u32>>]) -> Vec<Vec<u32>> {
    let na = attacks.first().map_or(0, |a| a.len());
    (0..na)
        .map(|ai| {
            let n = attacks[0][ai].len();
            (0..n)
                .map(|r| {
                    let mut g = NONE;
                    for a in attacks {
                        let x = a[ai][r];
                        if x == NONE {
                            continue;
                        }
                        if g == NONE {
                            g = x;
                        } else if g != x {
                            return NONE;
                        }
                    }
                    g
                })
                .collect()
        })
        .collect()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Checks guesses (`guesses[target][record]`) against the truth. With several sets of
/// guesses, a record or field value counts as re-identified when any set re-identifies it (an
/// attacker runs every attack and keeps what works); targets are scored on the last set.
fn score(
    truth: &Truth,
    schema: &Schema,
    sets: &[&[Vec<u32>]],
    name: &str,
    description: &str,
) -> AttackOutcome {
    let n = truth.n;
    let attrs = &truth.attrs;
    let last: &[Vec<u32>] = sets.last().copied().unwrap_or(&[]);
    let targets = attrs
        .iter()
        .zip(last)
        .map(|(a, g)| {
            let present = a.truth.iter().filter(|&&t| t != NONE).count() as u64;
            let guessed = g.iter().filter(|&&x| x != NONE).count() as u64;
            let correct = g
                .iter()
                .zip(&a.truth)
                .filter(|(x, t)| **x != NONE && x == t)
                .count() as u64;
            TargetOutcome {
                target: a.name.clone(),
                present,
                guessed,
                correct,
                precision: if guessed == 0 {
                    1.0
                } else {
                    ratio(correct, guessed)
                },
            }
        })
        .collect();

    // Fields any target reveals.
    let mut fields: Vec<usize> = attrs.iter().flat_map(|a| a.fields.clone()).collect();
    fields.sort_unstable();
    fields.dedup();
    let field_outcomes = fields
        .iter()
        .map(|&f| {
            let ids = &truth.field_ids[f];
            let present = ids.iter().filter(|&&x| x != NONE).count() as u64;
            let distinct_values = truth.field_text[f].len() as u64;
            let (mut claimed, mut correct) = (0u64, 0u64);
            let mut recovered = vec![false; truth.field_text[f].len()];
            for r in 0..n {
                let (mut any_claim, mut any_right) = (false, false);
                for guesses in sets {
                    let mut any = false;
                    let mut all_right = true;
                    for (a, g) in attrs.iter().zip(guesses.iter()) {
                        let Some(pos) = a.fields.iter().position(|&x| x == f) else {
                            continue;
                        };
                        let x = g[r];
                        if x == NONE {
                            continue;
                        }
                        let claim = a.components[x as usize][pos];
                        if claim == NONE && ids[r] == NONE {
                            continue; // "no value": nothing personal claimed
                        }
                        any = true;
                        all_right &= claim == ids[r];
                    }
                    any_claim |= any;
                    any_right |= any && all_right;
                }
                if any_claim {
                    claimed += 1;
                }
                if any_right {
                    correct += 1;
                    recovered[ids[r] as usize] = true;
                }
            }
            let distinct_recovered = recovered.iter().filter(|&&b| b).count() as u64;
            FieldOutcome {
                field: schema.fields[f].def.name.clone(),
                present,
                claimed,
                correct,
                precision: if claimed == 0 {
                    1.0
                } else {
                    ratio(correct, claimed)
                },
                share_of_records: ratio(correct, present),
                distinct_values,
                distinct_recovered,
                share_of_distinct_values: ratio(distinct_recovered, distinct_values),
            }
        })
        .collect();

    let mut claimed = vec![false; n];
    let mut singled = vec![false; n];
    for guesses in sets {
        let (c, s) = reidentified(truth, guesses);
        for r in 0..n {
            claimed[r] |= c[r];
            singled[r] |= s[r];
        }
    }
    let records_reidentified = singled.iter().filter(|&&b| b).count() as u64;
    AttackOutcome {
        attack: name.into(),
        description: description.into(),
        records_reidentified,
        share_reidentified: ratio(records_reidentified, n as u64),
        records_claimed: claimed.iter().filter(|&&b| b).count() as u64,
        fields: field_outcomes,
        targets,
        notes: Vec::new(),
    }
}

/// Per record: whether the guesses claim anything about it, and whether it is re-identified by
/// the definition in the module docs.
fn reidentified(truth: &Truth, guesses: &[Vec<u32>]) -> (Vec<bool>, Vec<bool>) {
    let n = truth.n;
    let attrs = &truth.attrs;
    let mut claimed = vec![false; n];
    // Records whose claims are all correct, grouped by the set of targets claimed.
    let mut by_mask: HashMap<Vec<u16>, Vec<usize>> = HashMap::new();
    for r in 0..n {
        let mut mask = Vec::new();
        let mut right = true;
        for (ai, (a, g)) in attrs.iter().zip(guesses).enumerate() {
            let x = g[r];
            if x == NONE {
                continue;
            }
            mask.push(ai as u16);
            right &= x == a.truth[r];
        }
        if mask.is_empty() {
            continue;
        }
        claimed[r] = true;
        if right {
            by_mask.entry(mask).or_default().push(r);
        }
    }
    let groups: Vec<(Vec<u16>, Vec<usize>)> = by_mask.into_iter().collect();
    let unique: Vec<Vec<usize>> = groups
        .par_iter()
        .map(|(mask, rs)| {
            // How many records of the export hold each combination of values over `mask`.
            let mut counts: HashMap<Vec<u32>, u32> = HashMap::new();
            for r in 0..n {
                let key: Vec<u32> = mask.iter().map(|&ai| attrs[ai as usize].truth[r]).collect();
                if key.contains(&NONE) {
                    continue;
                }
                *counts.entry(key).or_default() += 1;
            }
            rs.iter()
                .copied()
                .filter(|&r| {
                    let key: Vec<u32> =
                        mask.iter().map(|&ai| attrs[ai as usize].truth[r]).collect();
                    counts.get(&key) == Some(&1)
                })
                .collect()
        })
        .collect();
    let mut out = vec![false; n];
    for r in unique.into_iter().flatten() {
        out[r] = true;
    }
    (claimed, out)
}

fn verdict(all: &AttackOutcome) -> (Verdict, String) {
    let share = all.share_reidentified * 100.0;
    let worst = all
        .fields
        .iter()
        .max_by(|a, b| a.share_of_records.total_cmp(&b.share_of_records));
    let worst_text = worst
        .map(|f| {
            format!(
                "; the most exposed field is {} ({:.2} % of its values recovered)",
                f.field,
                f.share_of_records * 100.0
            )
        })
        .unwrap_or_default();
    let worst_share = worst.map_or(0.0, |f| f.share_of_records * 100.0);
    let v = if share >= 1.0 {
        Verdict::High
    } else if share >= 0.1 || worst_share > 5.0 {
        Verdict::Medium
    } else {
        Verdict::Low
    };
    (
        v,
        format!(
            "{:.3} % of records re-identified by the attacks{worst_text}",
            share
        ),
    )
}

fn advice(attacks: &[AttackOutcome], verdict: Verdict) -> Vec<String> {
    let mut out = Vec::new();
    let exposed = |a: &AttackOutcome| -> Vec<(String, u64)> {
        a.targets
            .iter()
            .filter(|t| t.correct > 0 && t.correct * 1000 >= t.present.max(1))
            .map(|t| (t.target.clone(), t.correct))
            .collect()
    };
    for (t, c) in exposed(&attacks[0]) {
        if let Some(tok) = t.strip_prefix("token ") {
            out.push(format!(
                "The keyed token `{tok}` gives values away by how often each one occurs \
                 ({c} records' values recovered): remove it from the schema's [[token]] list, or \
                 combine it with a \
                 rarer part, and check blocking recall afterwards."
            ));
        } else if let Some(seg) = t.strip_prefix("segment ") {
            out.push(format!(
                "In segment `{seg}` the same value always gives the same bit pattern, so common \
                 values can be read off by frequency ({c} records' values recovered): enable \
                 salting by year of \
                 birth or randomised response (BLIP) so equal values stop looking alike."
            ));
        }
    }
    for (t, c) in exposed(&attacks[1]) {
        if let Some(seg) = t.strip_prefix("segment ") {
            out.push(format!(
                "In segment `{seg}` the bit positions of common name parts can be found by \
                 pattern mining ({c} records' values recovered): enable the diffusion layer, \
                 balancing or XOR folding (fewer bits per token is no remedy: in our tests \
                 sparser filters were easier to mine)."
            ));
        }
    }
    if out.is_empty() && verdict == Verdict::Low {
        out.push(
            "No change needed against these attacks. Run the check again whenever the schema \
             or the export changes; other attacks (e.g. graph matching) are not covered."
                .into(),
        );
    }
    out
}

fn examples(
    truth: &Truth,
    schema: &Schema,
    records: &crate::encode::Records,
    pooled: &[Vec<u32>],
    limit: usize,
) -> Vec<Example> {
    let (_, singled) = reidentified(truth, pooled);
    let mut out = Vec::new();
    for r in (0..truth.n).filter(|&r| singled[r]).take(limit) {
        let mut values = Vec::new();
        for (a, g) in truth.attrs.iter().zip(pooled) {
            let x = g[r];
            if x == NONE {
                continue;
            }
            for (pos, &f) in a.fields.iter().enumerate() {
                let c = a.components[x as usize][pos];
                if c != NONE {
                    let item = (
                        schema.fields[f].def.name.clone(),
                        truth.field_text[f][c as usize].clone(),
                    );
                    if !values.contains(&item) {
                        values.push(item);
                    }
                }
            }
        }
        out.push(Example {
            record_id: records.id(r).to_string(),
            values,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NewKey;
    use crate::tokens::Hasher;

    fn key() -> LinkageKey {
        LinkageKey::generate(&NewKey {
            partnership: "test".into(),
            purpose: "test".into(),
            expires: None,
            epoch: 1,
        })
        .unwrap()
    }

    /// The plaintext read back must be what the encoder encoded: the keyed token of every
    /// record's truth message equals the record's encoded token, and equal truth values of a
    /// segment give equal bit patterns.
    #[test]
    fn ground_truth_lines_up_with_the_encodings() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
        lines_up(Schema::default_uk());
        // Salted segments: the truth includes the salt, so one value still has one pattern.
        lines_up(Schema::load(&root.join("schemas/salt-yob.toml")).unwrap());
    }

    fn lines_up(schema: Schema) {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let key = key();
        let map = ColumnMap::load(&root.join("police.toml")).unwrap();
        let input = root.join("police.csv");
        let encoded =
            encode::encode_csv(&input, &key, &schema, &map, &EncodeOptions::default()).unwrap();
        let records = &encoded.records;
        let header = Header::for_encoding(key.info(), &schema, &encoded.report, false);
        let truth = truth::load(
            &input,
            &schema,
            &header.segments,
            &map,
            Date::today_utc(),
            records,
        )
        .unwrap();
        let hasher = Hasher::new(&key, &schema);
        let mut checked = 0;
        for a in &truth.attrs {
            let (enc, _) = truth::encoding_ids(records, &a.target);
            let mut pattern_of_value: HashMap<u32, u32> = HashMap::new();
            for (r, (&t, &e)) in a.truth.iter().zip(&enc).enumerate() {
                assert_eq!(t == NONE, e == NONE, "{} record {r}", a.name);
                if t == NONE {
                    continue;
                }
                let seen = *pattern_of_value.entry(t).or_insert(e);
                assert_eq!(seen, e, "{}: one value, two encodings", a.name);
                checked += 1;
            }
            if let Target::Token { kind } = a.target {
                // Rebuild the message of one record per value and hash it.
                let t = &schema.tokens[kind];
                for r in (0..truth.n).filter(|&r| a.truth[r] != NONE).take(50) {
                    let parts: Vec<String> = t
                        .parts
                        .iter()
                        .map(|&(f, tr)| {
                            let text = &truth.field_text[f][truth.field_ids[f][r] as usize];
                            let v = match schema.fields[f].def.normaliser {
                                crate::schema::Normaliser::Date => {
                                    crate::tokens::Value::Date(Date::parse_iso(text).unwrap())
                                }
                                _ => crate::tokens::Value::Text(text.clone()),
                            };
                            crate::tokens::part_text(&v, tr).unwrap()
                        })
                        .collect();
                    let msg = parts.join("\u{1f}");
                    let tok = hasher.exact_token(kind, msg.as_bytes());
                    assert!(records.tokens_of(r).contains(&tok), "{} record {r}", a.name);
                }
            }
        }
        assert!(checked > records.len(), "checked {checked}");
    }
}
