//! Pinned test vectors: for the demo key, the default schema and fixed rows, the exact filter
//! bits and keyed tokens. A change here changes every encoding ever made: it needs a format
//! version bump (`format::FORMAT_VERSION`) and a note in docs/FORMAT.md.

mod common;

use std::path::Path;

use bloomlink::colmap::ColumnMap;
use bloomlink::date::Date;
use bloomlink::encode::{encode_reader, EncodeOptions, Records};
use bloomlink::key::{Expiry, LinkageKey};
use bloomlink::schema::Schema;
use common::*;

const ROWS: &str = "V1,943 476 5919,Zoë,Mary-Jane,O'Brien,12/03/2015,F,sw1a 1aa\n\
V2,,Łukasz,,Nowak-Smith,01/02/2016,M,LS6 2AB\n\
V3,,Aisha,,Khan,,,\n";

fn encode_rows(threads: usize) -> Records {
    let dir = tempfile::tempdir().unwrap();
    let key = LinkageKey::load(&demo_key(dir.path()), Expiry::Enforce).unwrap();
    let map = ColumnMap::from_toml(HEALTH_MAP, Path::new("map.toml")).unwrap();
    let csv = format!("{HEALTH_HEADER}{ROWS}");
    let opts = EncodeOptions {
        today: Date::new(2026, 1, 1).unwrap(),
        threads,
        ..Default::default()
    };
    encode_reader(
        csv.as_bytes(),
        Path::new("vectors.csv"),
        0,
        &key,
        &Schema::default_uk(),
        &map,
        &opts,
    )
    .unwrap()
    .records
}

fn hex_words(w: &[u64]) -> String {
    w.iter()
        .map(|x| format!("{x:016x}"))
        .collect::<Vec<_>>()
        .join("")
}

const DEMO_FINGERPRINT: &str = "5592fafa185d4a77";
const DEFAULT_SCHEMA_DIGEST: &str =
    "209701d7e948c400585dd3ee9ca0aefd1efe5c575437baf5ab824db733171ed9";

/// (filter as 16 big-endian-printed u64 words, tokens) per row.
const EXPECTED: [(&str, &[&str]); 3] = [
    (
        "1001008008480800640041b040045220200040000040008010c0006001149e00c081820220a42c00060422703c8a0111c40908015e543000180200200800c82010d8400904440a2008413a0002a016409802400445c02078c0184110040412440020c0020060c00d041400405838000c852001424002401202a808021d280440",
        &["0046399d21fd1a17", "02b56a50ef06c151", "03a0092bf40ce9e3", "046e133cbd64d5b0", "053179f6c30cd709", "061ab1af20dec416"],
    ),
    (
        "c90409024000011009430809088440101b880004c0a0000a10600000840004000809008180c000c8aaa40a5a40ebf480011828185d00534805ae940680f639e0c406fc0490421f0505008086298902f91108102b0a00481c8240a801414a24010a1a182280500401000a424250a80b110402418200b010022800a04008088800",
        &["02e2e981eda06ba3", "03e866f142bbab61", "04efeda37554c46f", "050b4adce3610220", "0672e267adffdbc6"],
    ),
    (
        "044420000b2000000a00844200010800038018000010800d40405201080100148a000080000024030401000001100821900008001a0000a1021b05088430312200a40052048102200000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        &["045e4f891b6b461b"],
    ),
];

#[test]
fn demo_key_and_default_schema_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let key = LinkageKey::load(&demo_key(dir.path()), Expiry::Enforce).unwrap();
    assert_eq!(key.info().fingerprint, DEMO_FINGERPRINT);
    assert_eq!(Schema::default_uk().digest, DEFAULT_SCHEMA_DIGEST);
}

#[test]
fn filters_and_tokens_are_pinned() {
    let r = encode_rows(1);
    assert_eq!(r.len(), EXPECTED.len());
    for (i, (filter, tokens)) in EXPECTED.iter().enumerate() {
        assert_eq!(hex_words(r.filter(i)), *filter, "filter of row {}", i + 1);
        let got: Vec<String> = r.tokens_of(i).iter().map(|t| format!("{t:016x}")).collect();
        assert_eq!(got, *tokens, "tokens of row {}", i + 1);
    }
    // Row 3 has only names: nothing in the birth and address segments (words 9..16), and of
    // the keyed tokens only given_family (kind 4).
    assert!(r.filter(2)[9..].iter().all(|&w| w == 0));
    assert_eq!(r.tokens_of(2).len(), 1);
    assert_eq!(r.tokens_of(2)[0] >> 56, 4);
}

#[test]
fn thread_count_does_not_change_bits() {
    assert_eq!(encode_rows(1), encode_rows(3));
}
