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

/// The unhardened schema (`testdata/schemas/none.toml`, the default before hardening was
/// switched on): its vectors pin the tokenisation and hashing underneath every hardening.
fn unhardened() -> Schema {
    Schema::load(&root().join("testdata/schemas/none.toml")).unwrap()
}

fn encode_rows(threads: usize) -> Records {
    encode_rows_with(&unhardened(), threads)
}

fn encode_rows_with(schema: &Schema, threads: usize) -> Records {
    encode_csv_rows(schema, HEALTH_MAP, ROWS, threads)
}

/// Encodes `rows` (health layout, after the header) with `schema` under the column map `map`.
fn encode_csv_rows(schema: &Schema, map: &str, rows: &str, threads: usize) -> Records {
    let dir = tempfile::tempdir().unwrap();
    let key = LinkageKey::load(&demo_key(dir.path()), Expiry::Enforce).unwrap();
    let map = ColumnMap::from_toml(map, Path::new("map.toml")).unwrap();
    let csv = format!("{HEALTH_HEADER}{rows}");
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
        schema,
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
const UNHARDENED_SCHEMA_DIGEST: &str =
    "209701d7e948c400585dd3ee9ca0aefd1efe5c575437baf5ab824db733171ed9";
const DEFAULT_SCHEMA_DIGEST: &str =
    "1d77fe3e001ed17dddc7c52466fddcdfcd2fa32d149331838990ac5eaa1257e3";

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
    assert_eq!(unhardened().digest, UNHARDENED_SCHEMA_DIGEST);
}

/// The default schema (salting by year of birth + diffusion): stored filters for the same rows.
/// The keyed tokens are not hardened, so they equal the unhardened ones.
const EXPECTED_DEFAULT: [&str; 3] = [
    "49877ac186c0fd19cb32230ebd93aea4a0d8b05386290b2c8b094d0e29b93562df4657b62ce242f3b4fc0500dc1dff08151a48db73acbf919a83fd07d82a722d3ec936c3e9d6e6f4f8bc6a6b87378ba6f105842b4947439c5de853b9791d7c6f802ab54a6d10368264ce860f8cc9340dd5270d8f41962f3094294c3caab70d4c",
    "b28088d92a81a20840ee031f1f379d3159a4b1df91ec44d18ebe5ddd1e194605414237e4b229964431a370fa3e535b69abc60135c8e9c9b716842b9b4229728a5bbc3b80ee4cf236d87994e230c296b718e02e3ac4b17040aba53e1faa56bf4e60b679fe89129650ed87018087f0650c42158e0e27527b3a8d91a2c918156667",
    "931946260c469a5c8a29341f4d4900823365c04b04200ae99981d5880181df51017cf0c14e10a110ccc1811946c592874ef78470ea834c4b6467111c861b9ff3e7c54fd9a0e547410000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
];

#[test]
fn default_schema_filters_are_pinned() {
    let r = encode_rows_with(&Schema::default_uk(), 1);
    let plain = encode_rows(1);
    assert_eq!(r.len(), EXPECTED_DEFAULT.len());
    for (i, filter) in EXPECTED_DEFAULT.iter().enumerate() {
        assert_eq!(
            hex_words(r.filter(i)),
            *filter,
            "default filter of row {}",
            i + 1
        );
        assert_ne!(r.filter(i), plain.filter(i), "row {} is hardened", i + 1);
        assert_eq!(
            r.tokens_of(i),
            plain.tokens_of(i),
            "tokens of row {}",
            i + 1
        );
    }
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

/// The example schemas of `testdata/schemas/`, one per hardening method.
fn example(name: &str) -> Schema {
    Schema::load(&root().join(format!("testdata/schemas/{name}.toml"))).unwrap()
}

/// Pinned stored filters (hex words, as above) per hardening method, for the demo key and
/// the rows above. Row 3 has no birth or address: those segments stay empty under every
/// method. Regenerate only with a format version bump.
const HARDENED: [(&str, [&str; 3]); 5] = [
    (
        "balance",
        [
            "9c79d504b5a13dc387f5852a040e3a99b6488c32dea6b2e34ff9a629e17a4bd28bcf1ff573010560754214b240157451c59f2b70622775f7f92df197b90b90ee38b4d266988729eb7dd252fb54aba6b05941117fe7e2ac866ff8c2910176e9207064ed92499c6a0745f581a6f413bdf22c10145802a22ad7f96573d34324096b697de4f72a0c629f377acd7ee2ff5e8f7d19113a6ee2aad7fc87c95439d6faf6c70be26ab8d8dd165bf390da8d4c972c8c210eb4c2a80eb034eb7d0266412b5678930e35cab81665654537c100ff38871c7536aeff87a6a01dae0b7fc7d01bec964d31a1d3b937a65bed3eb3443c12c930567261f1a2299863ca60a73cd17559",
            "dc79c50e34172fd384a703ea74a096c8965e81b99b2192eb6ffca60b696a89e42bc25fb06a5d84f9654416458a153041b58f347860b3c1f3dd2dfb8f3d47900fa2b65e4791e55153fcf452f75cabe21857fa0fa2ef805d0549452c43407cce6a62e5c3db3b1b5a9b481351856c0100b037e008fa8c9afef5cbc9266c5ea6cb2ba86d07ff7f159cdb333acf64254f55a66f1840ae36c0109313d2c84735dfaab1623abe425d02dd74434f07dab8c49839997cc4b28a172eef1793d7bb7fd8e332b4964e750ab81025e1f71bd398dd1b8330ad16e6ef1b3e28658b033b946219ce20a973a103dd7da65be7bee3520d52e2b056e631fdea29c82bca63972f4038d7",
            "de39cf8734873fc307c10b0a10083b99945e873e9af182c34fe1e20bc16ac9c853f65bb4fa494431774295dd8d352811959f2f686286ddf3fde9f3ca3d1e825cba905cc6b9a5707b7c1542ff04abc298194659ff66e7c81193eca093615e6538562ea89ec90fe28b40e5d4c6e715259234c21c181fc27bd7bbf987cb4a2c2061616dca772bc023a7fb728d4ee9ef0d8b00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ],
    ),
    (
        "xorfold",
        [
            "553e8009048260009302418429200108a03028340884922a1e062250348ac931d4d148085a103a2012c82234708a310821594283740081098500c1404062801f06bc08424510044c",
            "100200a2708002240808c044400204d0c42520044d118141af0a9e5cc01dcd60c51ed41ccd424c4db2105873862113b784c803b00e2842140e1859a080e01403280ae20258a08311",
            "32400a021200a0000c3a0101350020028484080834120028061a05088520390390a408521e8102810000000000000000000000000000000000000000000000000000000000000000",
        ],
    ),
    (
        "salt-yob",
        [
            "009200022208294050088011a40450020034000c0e1060010000040004400030180610010a004011081082a0a44005080252912000512824570081496212081400aa2481c200590008413a0002a016409802400445c02078c0184110040412440020c0020060c00d041400405838000c852001424002401202a808021d280440",
            "90a02a10802100248000011d18008210108228090008000801504025000004500004a4008001040474bd303a1296888143b0e8a082a80082091203ac3410e2d09fa42042a328ce0605008086298902f91108102b0a00481c8240a801414a24010a1a182280500401000a424250a80b110402418200b010022800a04008088800",
            "202094800080042a3000602018200000012000001000000801c8a00044020120130000802200600009010800040101e4120e0823220022000140c029019000001041801200080c100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ],
    ),
    (
        "blip",
        [
            "10018004084a0800650041b0422c4220300040000148008114c0126001149e00c081820222a42c00060422703c8a0111c40d08115a543200080608200a00c82010da400904440a2028032a0042a0d6409806400445c02058c0384110040412440020c0120260820d061400405878000c072001404002001012a808021da00440",
            "c90401004000011009638889098440101b980004c0a4000a106000008400040009190281c0c020c8aaa40b7a48efd482133828185d00514a0dae908680f639e0c406fc0490621f05051082862b8182f91118302b0a004c5e82402801414224010a1a183280580a01000a420650a80b1104c2418208b010032800a04008088800",
            "044422000b2000001a04844a00010800038018020010800d60405201080100149a0010c0800024030401000001100821900809003a000081021b05098420313a00e40052068302600000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ],
    ),
    (
        "diffusion",
        [
            "d54c3fee608d12896830d1a3015709c8346d4a9611dc8849b372ec6eaa018a7b2511e97e935074c82d6f13ec6e20bdad951656936f00bcbd1941c0c4ea719d84363996b9a0ac952ef8bc6a6b87378ba6f105842b4947439c5de853b9791d7c6f802ab54a6d10368264ce860f8cc9340dd5270d8f41962f3094294c3caab70d4c",
            "644e6b46172b622aae6357367ae1f0c08adf373dc0eaa89c100225c20210928c342d8e12096d9839781885dc1e4fb8719618c8757048e95db18913049136d97e97f8a4aeabc3aef3d87994e230c296b718e02e3ac4b17040aba53e1faa56bf4e60b679fe89129650ed87018087f0650c42158e0e27527b3a8d91a2c918156667",
            "20a0d2e162b56462169228e7ad0a791343480208909296f299720c0857b84755893cb4647896c0ba43e0abb9e1c98db9e45a90c50101307307226d5c9461e01dc72a0a8d27d931190000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ],
    ),
];

#[test]
fn hardened_filters_are_pinned() {
    let mut failures = Vec::new();
    for (name, expected) in HARDENED {
        let schema = example(name);
        let r = encode_rows_with(&schema, 1);
        assert_eq!(r.len(), 3);
        assert_eq!(r.words, schema.stored_words(), "{name}");
        for (i, want) in expected.iter().enumerate() {
            let got = hex_words(r.filter(i));
            if got != *want {
                failures.push(format!("{name} row {}: {got}", i + 1));
            }
        }
        // Hardening never touches the keyed exact tokens.
        for (i, (_, tokens)) in EXPECTED.iter().enumerate() {
            let got: Vec<String> = r.tokens_of(i).iter().map(|t| format!("{t:016x}")).collect();
            assert_eq!(got, *tokens, "{name}: tokens of row {}", i + 1);
        }
        // Row 3's birth and address segments stay empty.
        let seg = &schema.stored_segments;
        let empty_from = seg[2].start_bit as usize / 64;
        assert!(r.filter(2)[empty_from..].iter().all(|&w| w == 0), "{name}");
        assert!(r.filter(2)[..empty_from].iter().any(|&w| w != 0), "{name}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn salting_changes_only_the_salted_segments() {
    let plain = encode_rows(1);
    let salted = encode_rows_with(&example("salt-yob"), 1);
    // Rows 1 and 2 have a year of birth: given and family bits (words 0..9) change, birth and
    // address (words 9..16) do not. Row 3 has none: its names are hashed with the no-salt
    // marker, which also differs from unsalted hashing.
    for i in 0..3 {
        assert_ne!(plain.filter(i)[..9], salted.filter(i)[..9], "row {}", i + 1);
        assert_eq!(plain.filter(i)[9..], salted.filter(i)[9..], "row {}", i + 1);
    }
}

#[test]
fn hardened_bits_do_not_depend_on_thread_count() {
    for name in [
        "salt-yob+blip",
        "balance+salt-yob",
        "salt-yob+diffusion",
        "xorfold",
    ] {
        let s = example(name);
        assert_eq!(encode_rows_with(&s, 1), encode_rows_with(&s, 3), "{name}");
    }
}

/// A column map's `[missing]` table: `keep` reads a built-in marker or placeholder as the name
/// it is in this export (the surname Na), `extra` reads the export's own marker as missing; any
/// other value encodes as without the table.
#[test]
fn a_column_maps_missing_table_changes_only_the_values_it_lists() {
    let rows = "M1,,Na,,Na,12/03/2015,F,LS6 2AB\n\
                M2,,,,,12/03/2015,F,LS6 2AB\n\
                M3,,zzz,,Smith,12/03/2015,F,LS6 2AB\n\
                M4,,,,Smith,12/03/2015,F,LS6 2AB\n\
                M5,,Baby,,Jones,12/03/2015,F,LS6 2AB\n\
                M6,,,,Jones,12/03/2015,F,LS6 2AB\n\
                M7,,Aisha,Na,Khan,01/02/2016,F,SW1A 1AA\n";
    let table = "[missing]\nextra = [' ZZZ']\nkeep = ['na', 'Baby']\n";
    let plain = encode_csv_rows(&Schema::default_uk(), HEALTH_MAP, rows, 1);
    let listed = encode_csv_rows(
        &Schema::default_uk(),
        &format!("{HEALTH_MAP}{table}"),
        rows,
        1,
    );
    // Without the table: Na and Baby are missing, zzz is a name.
    assert_eq!(plain.filter(0), plain.filter(1));
    assert_ne!(plain.filter(2), plain.filter(3));
    assert_eq!(plain.filter(4), plain.filter(5));
    // With it: the other way round.
    assert_ne!(listed.filter(0), listed.filter(1));
    assert_eq!(listed.filter(2), listed.filter(3));
    assert_ne!(listed.filter(4), listed.filter(5));
    // Rows with no listed value encode as before.
    for i in [1, 3, 5] {
        assert_eq!(plain.filter(i), listed.filter(i), "row {}", i + 1);
    }
    // The middle name Na is kept too: it shares the given-names segment (words 0..5) with
    // Aisha; the family, birth and address segments are untouched.
    assert_ne!(plain.filter(6)[..5], listed.filter(6)[..5]);
    assert_eq!(plain.filter(6)[5..], listed.filter(6)[5..]);
}
