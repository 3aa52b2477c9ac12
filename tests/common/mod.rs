//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the demo key into `dir` with mode 0600 (git does not keep modes) and returns its path.
pub fn demo_key(dir: &Path) -> PathBuf {
    let p = dir.join("demo.key");
    std::fs::copy(root().join("keys/demo.key"), &p).unwrap();
    set_mode(&p, 0o600);
    p
}

/// Sets a file's Unix mode.
pub fn set_mode(p: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (p, mode);
}

/// A file's Unix permission bits (0o600 where there are none, so owner-only checks pass).
pub fn mode_of(p: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = p;
        0o600
    }
}

/// The bloomlink binary, with a fixed creation time for reproducible outputs.
pub fn bloomlink() -> Command {
    let mut c = Command::cargo_bin("bloomlink").unwrap();
    c.env("SOURCE_DATE_EPOCH", "1767225600");
    // Tests write their audit entries next to their outputs, never to a log set by the caller.
    c.env_remove("BLOOMLINK_AUDIT_LOG");
    c
}

/// A column map for the small hand-written health CSVs used in tests.
pub const HEALTH_MAP: &str = r#"
agency = "health"
record_id = "Patient ID"
date_formats = ["%d/%m/%Y"]
[columns]
nhs_number = "NHS Number"
given_name = "Forename"
other_names = "Middle Names"
family_name = "Surname"
date_of_birth = "Date of Birth"
sex = "Gender"
postcode = "Postcode"
"#;

/// Header line matching [`HEALTH_MAP`].
pub const HEALTH_HEADER: &str =
    "Patient ID,NHS Number,Forename,Middle Names,Surname,Date of Birth,Gender,Postcode\n";

/// A directory with the demo key, the health map and `input` written as `in.csv`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub map: PathBuf,
    pub input: PathBuf,
}

impl Fixture {
    pub fn new(input: &[u8]) -> Fixture {
        Self::with_map(input, HEALTH_MAP)
    }

    pub fn with_map(input: &[u8], map: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = demo_key(dir.path());
        let map_path = dir.path().join("map.toml");
        std::fs::write(&map_path, map).unwrap();
        let input_path = dir.path().join("in.csv");
        std::fs::write(&input_path, input).unwrap();
        Fixture {
            dir,
            key,
            map: map_path,
            input: input_path,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The rejects file of [`Fixture::encode`]'s run.
    pub fn rejects(&self) -> String {
        std::fs::read_to_string(self.path("out.rejects.csv")).unwrap()
    }

    /// `bloomlink encode` on the fixture, writing `out.clk`.
    pub fn encode(&self) -> Command {
        let mut c = self.encode_with(&self.input, &self.path("out.clk"));
        c.arg("--quiet");
        c
    }

    /// `bloomlink encode` with the fixture's key and map, of `input` to `output`.
    pub fn encode_with(&self, input: &Path, output: &Path) -> Command {
        let mut c = bloomlink();
        c.arg("encode")
            .arg("--key")
            .arg(&self.key)
            .arg("--columns")
            .arg(&self.map)
            .arg(input)
            .arg("-o")
            .arg(output);
        c
    }
}

/// A file of the shipped testdata.
pub fn testdata(name: &str) -> PathBuf {
    root().join("testdata").join(name)
}

/// Every personal value of an export (all mapped columns except the record id), as decoded
/// text, in raw and upper-case form.
pub fn personal_values(agency: &str) -> BTreeSet<String> {
    let map = bloomlink::colmap::ColumnMap::load(&testdata(&format!("{agency}.toml"))).unwrap();
    let bytes = std::fs::read(testdata(&format!("{agency}.csv"))).unwrap();
    let text = match map.encoding {
        bloomlink::colmap::TextEncoding::Windows1252 => {
            encoding_rs::WINDOWS_1252.decode(&bytes).0.into_owned()
        }
        _ => String::from_utf8(bytes).unwrap(),
    };
    let mut rdr = csv::Reader::from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let header = rdr.headers().unwrap().clone();
    let cols: Vec<usize> = map
        .columns
        .values()
        .map(|c| header.iter().position(|h| h == c).unwrap())
        .collect();
    let mut out = BTreeSet::new();
    for rec in rdr.records() {
        let rec = rec.unwrap();
        for &c in &cols {
            let v = rec[c].trim();
            // Short values (sex codes, 3-letter names) would match random bytes by chance.
            if v.len() >= 5 {
                out.insert(v.to_string());
                out.insert(v.to_uppercase());
                out.insert(v.replace(' ', ""));
            }
        }
    }
    out
}

/// The first of `needles` found in `hay`, by length only (never print a value).
pub fn any_found(hay: &[u8], needles: &BTreeSet<String>) -> Option<usize> {
    let ac = aho_corasick::AhoCorasick::new(needles).unwrap();
    ac.find(hay).map(|m| m.len())
}

/// Runs `cmd` with --json, expects exit `code`, and parses stdout as one JSON object, which
/// must carry that exit code and an error message.
pub fn failure_json(cmd: &mut Command, code: i32) -> serde_json::Value {
    let out = cmd.arg("--json").assert().code(code).get_output().clone();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(j["exit_code"], code, "{j}");
    assert!(j["error"].as_str().is_some_and(|s| !s.is_empty()), "{j}");
    j
}

/// Re-forges an encoding file's SHA-256 trailer after an edit of its bytes, as an attacker (or
/// an older writer) would: then the structural checks or the signature, not the checksum, have
/// to catch the change.
pub fn reforge(b: &mut [u8]) {
    let n = b.len();
    let d = ring::digest::digest(&ring::digest::SHA256, &b[..n - 32]);
    b[n - 32..].copy_from_slice(d.as_ref());
}

/// Runs `cmd`, expects success, and parses its standard output as JSON.
pub fn success_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("JSON on stdout")
}
