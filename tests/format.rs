//! The encoding file: round trip, refusal of truncated/altered files, robustness of the reader.

mod common;

use std::path::Path;

use bloomlink::colmap::ColumnMap;
use bloomlink::encode::{encode_reader, EncodeOptions, Records};
use bloomlink::format::{self, EncodingFile, Header};
use bloomlink::fsutil::Overwrite;
use bloomlink::key::{Expiry, LinkageKey};
use bloomlink::schema::Schema;
use bloomlink::signing::{self, PublicKey, SigningKey};
use common::*;
use proptest::prelude::*;

fn sample_records() -> (Records, Header) {
    let dir = tempfile::tempdir().unwrap();
    let key = LinkageKey::load(&demo_key(dir.path()), Expiry::Enforce).unwrap();
    let schema = Schema::default_uk();
    let map = ColumnMap::from_toml(HEALTH_MAP, Path::new("map.toml")).unwrap();
    let csv = format!(
        "{HEALTH_HEADER}H1,943 476 5919,Zoë,Mary,O'Brien,12/03/2015,F,sw1a 1aa\n\
         H2,,Jack,,Smith-Jones,01/02/2016,M,LS6 2AB\nH3,,Aisha,,Khan,03/04/2012,F,M1 1AE\n"
    );
    let enc = encode_reader(
        csv.as_bytes(),
        Path::new("in.csv"),
        csv.len() as u64,
        &key,
        &schema,
        &map,
        &EncodeOptions::default(),
    )
    .unwrap();
    let header = Header {
        agency: "health".into(),
        created: "2026-01-01T00:00:00Z".into(),
        tool_version: "test".into(),
        key_fingerprint: key.info().fingerprint.clone(),
        key_epoch: 1,
        schema_name: schema.def.name.clone(),
        schema_digest: schema.digest.clone(),
        filter_bits: schema.def.filter_bits,
        segments: schema.segments.clone(),
        token_kinds: schema.tokens.iter().map(|t| t.name.clone()).collect(),
        rows_read: enc.report.rows_read,
        rows_rejected: enc.report.rejected,
        ..Default::default()
    };
    (enc.records, header)
}

fn written() -> (tempfile::TempDir, std::path::PathBuf, Records) {
    let (records, header) = sample_records();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.clk");
    format::write(&p, &header, &records, Overwrite::Refuse).unwrap();
    (dir, p, records)
}

#[test]
fn round_trip_is_exact_and_aligned() {
    let (_d, p, records) = written();
    let f = EncodingFile::open(&p).unwrap();
    assert_eq!(f.to_records(), records);
    assert_eq!(
        f.filters().as_ptr() as usize % 64,
        0,
        "filters are 64-byte aligned"
    );
    assert_eq!(f.header().records, 3);
    assert_eq!(
        f.popcounts_of(1)[0] as u32,
        f.filter(1).iter().map(|w| w.count_ones()).sum::<u32>()
    );
    assert_eq!(f.checksum_hex().len(), 64, "trailer is a SHA-256");
}

/// The agency label names output files and is printed: a file whose label no column map allows
/// (written elsewhere, or altered and its checksum recomputed) is refused.
#[test]
fn an_agency_label_no_column_map_allows_is_refused() {
    let (records, mut header) = sample_records();
    let dir = tempfile::tempdir().unwrap();
    for bad in ["x/../../y", "health\u{1b}[2J", "Health", ""] {
        header.agency = bad.to_string();
        let p = dir.path().join("f.clk");
        format::write(&p, &header, &records, Overwrite::Replace).unwrap();
        let e = EncodingFile::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("agency label that is not allowed"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn truncated_file_is_refused() {
    let (_d, p, _) = written();
    let bytes = std::fs::read(&p).unwrap();
    for cut in [1, 31, 32, 100, bytes.len() - 17] {
        std::fs::write(&p, &bytes[..bytes.len() - cut]).unwrap();
        let e = EncodingFile::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("truncated or altered") || e.contains("too short"),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn altered_byte_anywhere_is_refused() {
    let (_d, p, _) = written();
    let bytes = std::fs::read(&p).unwrap();
    for at in [20, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        std::fs::write(&p, &b).unwrap();
        let e = EncodingFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("truncated or altered"), "byte {at}: {e}");
    }
}

#[test]
fn wrong_magic_version_and_empty_are_explained() {
    let (_d, p, _) = written();
    let bytes = std::fs::read(&p).unwrap();
    let mut b = bytes.clone();
    b[8] = 9;
    std::fs::write(&p, &b).unwrap();
    let e = EncodingFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("format version 9"), "{e}");
    let mut b = bytes.clone();
    b[0] = b'X';
    std::fs::write(&p, &b).unwrap();
    let e = EncodingFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("not a bloomlink encoding file"), "{e}");
    std::fs::write(&p, b"").unwrap();
    assert!(EncodingFile::open(&p)
        .unwrap_err()
        .to_string()
        .contains("is empty"));
}

#[test]
fn inspect_refuses_altered_file_with_exit_5() {
    let (_d, p, _) = written();
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n / 2] ^= 0xff;
    std::fs::write(&p, &b).unwrap();
    bloomlink()
        .arg("inspect")
        .arg(&p)
        .assert()
        .code(5)
        .stderr(predicates::str::contains("truncated or altered"));
}

/// A signed (version 2) file's bytes, its records and header, and the signer's public key;
/// made once.
fn signed_sample() -> &'static (Vec<u8>, Records, Header, PublicKey) {
    static S: std::sync::OnceLock<(Vec<u8>, Records, Header, PublicKey)> =
        std::sync::OnceLock::new();
    S.get_or_init(|| {
        let (records, header) = sample_records();
        let k = SigningKey::generate("health").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.clk");
        format::write_with(&p, &header, &records, Overwrite::Refuse, Some(&k)).unwrap();
        let f = EncodingFile::open(&p).unwrap();
        let h = f.header().clone();
        (std::fs::read(&p).unwrap(), records, h, k.info().public_key)
    })
}

#[test]
fn signed_files_are_version_2_and_verify() {
    let (bytes, records, header, pk) = signed_sample();
    assert_eq!(&bytes[8..12], &format::FORMAT_VERSION_SIGNED.to_le_bytes());
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s.clk");
    std::fs::write(&p, bytes).unwrap();
    let f = EncodingFile::open(&p).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(&f.to_records(), records);
    assert_eq!(f.header(), header);
    let sig = signing::embedded(&f).unwrap();
    assert_eq!(sig.agency, "health");
    assert_eq!(&sig.public_key, pk);
    assert!(sig.valid);
    let m = String::from_utf8(f.manifest().unwrap()).unwrap();
    for line in [
        "format_version 2",
        "header_sha256 ",
        "tokens_sha256 ",
        "signer_agency health",
    ] {
        assert!(m.contains(line), "{m}");
    }
    // Unsigned files stay version 1, with no signature.
    let (_d, p1, _) = written();
    let f1 = EncodingFile::open(&p1).unwrap();
    assert_eq!(f1.version(), 1);
    assert!(f1.signature().is_none() && signing::embedded(&f1).is_none());
}

#[test]
fn a_signing_key_of_another_agency_cannot_sign() {
    let (records, header) = sample_records();
    let k = SigningKey::generate("police").unwrap();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s.clk");
    let e = format::write_with(&p, &header, &records, Overwrite::Refuse, Some(&k)).unwrap_err();
    assert!(e.to_string().contains("police"), "{e}");
    assert!(!p.exists());
}

#[test]
fn a_version_2_file_without_its_signature_block_is_refused() {
    // An unsigned file claiming version 2, and a signed file claiming version 1.
    let (_d, p, _) = written();
    let mut b = std::fs::read(&p).unwrap();
    b[8] = 2;
    reforge(&mut b);
    std::fs::write(&p, &b).unwrap();
    let e = EncodingFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("without a signature block"), "{e}");
    let mut b = signed_sample().0.clone();
    b[8] = 1;
    reforge(&mut b);
    std::fs::write(&p, &b).unwrap();
    let e = EncodingFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("unexpected bytes after its last section"), "{e}");
}

/// A header length stated too short (trailer re-forged) is refused with a reason, not with
/// bincode's empty text for a read past the end.
#[test]
fn a_header_cut_short_by_its_stated_length_says_so() {
    let (_d, p, _) = written();
    let mut b = std::fs::read(&p).unwrap();
    let hlen = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    b[12..16].copy_from_slice(&(hlen / 2).to_le_bytes());
    reforge(&mut b);
    std::fs::write(&p, &b).unwrap();
    let e = EncodingFile::open(&p).unwrap_err().to_string();
    assert!(
        e.contains("has an unreadable header: it ends before its fields do"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn mutated_files_with_valid_checksum_never_panic(
        at in 0usize..4096,
        xor in 1u8..=255,
        cut in 0usize..64,
    ) {
        let (_d, p, _) = written();
        let mut b = std::fs::read(&p).unwrap();
        let body = b.len() - 32;
        let at = at % body;
        b[at] ^= xor;
        if cut > 0 && cut < body {
            b.drain(body - cut..body);
        }
        reforge(&mut b);
        std::fs::write(&p, &b).unwrap();
        if let Ok(f) = EncodingFile::open(&p) {
            // Anything accepted must be fully readable without panics.
            for i in 0..f.len() {
                let _ = f.filter(i);
                let _ = f.popcounts_of(i);
                let _ = f.tokens_of(i);
                let _ = f.row_ref(i);
            }
        }
    }

    /// Any change to a signed file, wherever it lands (sections, padding, header, signature
    /// block) and with the trailer re-forged, is either refused by the reader or fails the
    /// signature check under the signer's key: content that verifies is the content signed.
    #[test]
    fn mutated_signed_files_never_verify_with_other_content(
        at in 0usize..4096,
        from_end in any::<bool>(),
        xor in 1u8..=255,
        cut in 0usize..16,
    ) {
        let (bytes, records, header, pk) = signed_sample();
        let mut b = bytes.clone();
        let body = b.len() - 32;
        // Half the cases aim at the last 200 bytes: the signature block and what precedes it.
        let at = if from_end { body - 1 - at % 200.min(body) } else { at % body };
        b[at] ^= xor;
        if cut > 0 && cut < body {
            b.drain(body - cut..body);
        }
        reforge(&mut b);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.clk");
        std::fs::write(&p, &b).unwrap();
        if let Ok(f) = EncodingFile::open(&p) {
            for i in 0..f.len() {
                let _ = f.filter(i);
                let _ = f.popcounts_of(i);
                let _ = f.tokens_of(i);
                let _ = f.row_ref(i);
            }
            if let Some(sig) = signing::embedded(&f) {
                if sig.valid && sig.public_key == *pk {
                    prop_assert_eq!(&f.to_records(), records);
                    prop_assert_eq!(f.header(), header);
                    prop_assert_eq!(sig.agency, "health");
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.clk");
        let mut b = b"BLOOMLNK\x01\x00\x00\x00".to_vec();
        b.extend_from_slice(&bytes);
        if b.len() >= 48 { reforge(&mut b); }
        std::fs::write(&p, &b).unwrap();
        let _ = EncodingFile::open(&p);
    }
}
