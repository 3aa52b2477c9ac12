//! Agencies' Ed25519 signing keys, trust files, and the verification of signed encoding files.
//!
//! Each agency holds one signing key (`bloomlink signing-key new`). It signs the **manifest** of
//! every encoding file it writes (see [`crate::format`]): the format version, the SHA-256 of the
//! header and of each section, and the signer's agency and public key. The linkage unit holds a
//! **trust file** mapping each agency to its public key and refuses, with [`check_inputs`], any
//! input that is unsigned (unless explicitly allowed), from an agency it does not know, labelled
//! as another agency than the key that signed it, or whose signature does not verify.
//!
//! The signing key file follows the linkage key file's style: text, mode 0600, create-new,
//! comment lines (agency, created, public key, fingerprint) and one secret line carrying the
//! PKCS#8 document and a check value over the metadata, so a mangled copy or an edited agency
//! line is refused. The secret is held in [`Zeroizing`] buffers and never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::colmap::{is_agency_label, AGENCY_LABEL_RULE};
use crate::error::{Error, Result};
use crate::format::EncodingFile;
use crate::fsutil::{self, Mode, Overwrite};
use crate::key::{SECRET_PREFIX, SIGNING_PREFIX};

const SIGNING_SECRET_PREFIX: &str = "bloomlink-signing-key-1:";
const CHECK_LABEL: &[u8] = b"bloomlink signing key check v1\n";
/// How a public key is written in trust files and public key files: `ed25519:` + 64 hex digits.
pub const PUBLIC_PREFIX: &str = "ed25519:";
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// Parses `ed25519:` + 64 hex digits.
    pub fn parse(s: &str) -> Option<PublicKey> {
        let h = s.trim().strip_prefix(PUBLIC_PREFIX)?;
        let mut k = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(h, &mut k).ok()?;
        Some(PublicKey(k))
    }

    /// A short public id of the key: the first 8 bytes of its SHA-256, hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(&digest::digest(&digest::SHA256, &self.0).as_ref()[..8])
    }

    /// True if `signature` is this key's Ed25519 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Public facts about a signing key. Safe to print, log and publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignerInfo {
    /// The agency whose key it is (the same label as in its column map).
    pub agency: String,
    /// When the key was made (RFC 3339, UTC).
    pub created: String,
    /// The public key.
    pub public_key: PublicKey,
    /// The public key's fingerprint.
    pub fingerprint: String,
}

impl SignerInfo {
    fn check_message(&self) -> Vec<u8> {
        let mut m = CHECK_LABEL.to_vec();
        for (k, v) in [("agency", &self.agency), ("created", &self.created)] {
            m.extend_from_slice(k.as_bytes());
            m.push(b'=');
            m.extend_from_slice(v.as_bytes());
            m.push(b'\n');
        }
        m
    }
}

/// An agency's Ed25519 signing key. The PKCS#8 document is zeroised on drop and never shown.
pub struct SigningKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: Ed25519KeyPair,
    info: SignerInfo,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("agency", &self.info.agency)
            .field("fingerprint", &self.info.fingerprint)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Generates a new key for `agency` from the operating system's CSPRNG.
    pub fn generate(agency: &str) -> Result<SigningKey> {
        if !is_agency_label(agency) {
            return Err(Error::Usage(AGENCY_LABEL_RULE.into()));
        }
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Usage("the operating system's random generator failed".into()))?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        Self::from_parts(pkcs8, agency.to_string(), crate::date::now_rfc3339())
            .map_err(Error::Usage)
    }

    fn from_parts(
        pkcs8: Zeroizing<Vec<u8>>,
        agency: String,
        created: String,
    ) -> std::result::Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| "the secret is not a valid Ed25519 PKCS#8 key".to_string())?;
        let mut pk = [0u8; PUBLIC_KEY_LEN];
        pk.copy_from_slice(pair.public_key().as_ref());
        let public_key = PublicKey(pk);
        Ok(SigningKey {
            pkcs8,
            pair,
            info: SignerInfo {
                agency,
                created,
                fingerprint: public_key.fingerprint(),
                public_key,
            },
        })
    }

    /// The key's public facts.
    pub fn info(&self) -> &SignerInfo {
        &self.info
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(self.pair.sign(message).as_ref());
        s
    }

    fn check_value(&self) -> [u8; 8] {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &self.pkcs8);
        let tag = hmac::sign(&k, &self.info.check_message());
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag.as_ref()[..8]);
        out
    }

    fn to_file_text(&self) -> Zeroizing<String> {
        let i = &self.info;
        // Reserved up front so that no reallocation leaves a copy of the secret behind.
        let mut text = Zeroizing::new(String::with_capacity(2048));
        text.push_str(
            "# bloomlink signing key (Ed25519). SECRET: keep it mode 0600 at the agency, never \
             send it anywhere.\n# Publish the public key instead: bloomlink signing-key public \
             FILE\n",
        );
        text.push_str(&format!(
            "# agency: {}\n# created: {}\n# public-key: {}\n# fingerprint: {}\n",
            i.agency, i.created, i.public_key, i.fingerprint
        ));
        text.push_str(SIGNING_SECRET_PREFIX);
        let hex_secret = Zeroizing::new(hex::encode(&self.pkcs8[..]));
        text.push_str(&hex_secret);
        text.push(':');
        text.push_str(&hex::encode(self.check_value()));
        text.push('\n');
        text
    }

    /// Writes the key file: mode 0600, never over an existing file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.to_file_text();
        fsutil::write_text_atomic(path, Overwrite::Never, Mode::Private, &text)
    }

    /// The public key file's text: comment lines and one `agency = "ed25519:…"` line, which is
    /// exactly the line to add under `[agencies]` in the linkage unit's trust file.
    pub fn public_file_text(&self) -> String {
        let i = &self.info;
        format!(
            "# bloomlink public signing key (Ed25519) of agency {agency}. Safe to publish.\n\
             # The linkage unit adds the last line under [agencies] in its trust.toml, after \
             checking the fingerprint with the agency by phone or in person.\n\
             # agency: {agency}\n# created: {}\n# fingerprint: {}\n{agency} = \"{}\"\n",
            i.created,
            i.fingerprint,
            i.public_key,
            agency = i.agency,
        )
    }

    /// Loads a signing key file, refusing a file readable by group or others, a mangled secret
    /// or edited metadata, and a linkage key or public key given in its place.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let bytes = crate::key::read_secret_file(path, "a signing key")?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::key(path, "is not a text file; is this really a signing key?"))?;
        parse_key_text(path, text)
    }
}

fn parse_key_text(path: &Path, text: &str) -> Result<SigningKey> {
    let bad = |what: String| Error::key(path, what);
    let mut parts = crate::key::split_key_file(text, SIGNING_SECRET_PREFIX, |n, line| {
        if line.starts_with(SECRET_PREFIX) {
            "is a linkage key, not a signing key: give the agency's signing key (made by \
             `bloomlink signing-key new`) instead"
                .into()
        } else if is_public_key_line(line) {
            "is a public key: signing needs the agency's private signing key file (made by \
             `bloomlink signing-key new`)"
                .into()
        } else if line.starts_with(SIGNING_PREFIX) {
            format!("line {n} is a signing key of a version this bloomlink does not read")
        } else {
            format!(
                "line {n} is neither a comment nor the secret line; is this really a bloomlink \
                 signing key?"
            )
        }
    })
    .map_err(bad)?;
    let mut field = |name: &str| parts.fields.remove(name);
    let (agency, created, stated_pk, stated_fp) = (
        field("agency"),
        field("created"),
        field("public-key"),
        field("fingerprint"),
    );
    let secret_line = parts.secret;
    let (line_no, secret_line) = secret_line.ok_or_else(|| {
        bad(format!(
            "has no secret line (starting `{SIGNING_SECRET_PREFIX}`); is this really a bloomlink \
             signing key?"
        ))
    })?;
    let mangled = || {
        bad(format!(
            "line {line_no} (the secret) is mangled: it must be `{SIGNING_SECRET_PREFIX}` + hex \
             + `:` + 16 hex digits. Restore the file from the agency's backup"
        ))
    };
    let rest = &secret_line[SIGNING_SECRET_PREFIX.len()..];
    let (hex_secret, hex_check) = rest.split_once(':').ok_or_else(mangled)?;
    if hex_check.len() != 16 || hex_secret.len() > 1024 || hex_secret.len() % 2 != 0 {
        return Err(mangled());
    }
    let pkcs8 = Zeroizing::new(hex::decode(hex_secret).map_err(|_| mangled())?);
    let mut check = [0u8; 8];
    hex::decode_to_slice(hex_check, &mut check).map_err(|_| mangled())?;
    let missing = |what: &str| bad(format!("has no `# {what}:` line"));
    let agency = agency.ok_or_else(|| missing("agency"))?;
    if !is_agency_label(&agency) {
        return Err(bad(format!(
            "the `# agency:` line is invalid: {AGENCY_LABEL_RULE}"
        )));
    }
    let created = created.ok_or_else(|| missing("created"))?;
    let key = SigningKey::from_parts(pkcs8, agency, created).map_err(bad)?;
    let expected = key.check_value();
    if expected
        .iter()
        .zip(&check)
        .fold(0u8, |a, (x, y)| a | (x ^ y))
        != 0
    {
        return Err(bad(
            "failed its checksum: the secret line or a metadata line (agency, created) was \
             altered or mangled in copying. Restore the file from the agency's backup"
                .into(),
        ));
    }
    if let Some(pk) = stated_pk {
        if PublicKey::parse(&pk) != Some(key.info.public_key) {
            return Err(bad(
                "the `# public-key:` line does not match the secret: the file was edited".into(),
            ));
        }
    }
    if let Some(fp) = stated_fp {
        if fp != key.info.fingerprint {
            return Err(bad(
                "the `# fingerprint:` line does not match the secret: the file was edited".into(),
            ));
        }
    }
    Ok(key)
}

/// True if `line` looks like a public key line (`agency = "ed25519:…"`), used to refuse a public
/// key file offered as a secret key.
pub(crate) fn is_public_key_line(line: &str) -> bool {
    line.contains(&format!("\"{PUBLIC_PREFIX}"))
}

/// The trust file: which public key each agency signs with and, optionally, the fingerprint of
/// the partnership's current linkage key (public), so that encodings made with a retired or
/// otherwise wrong key are refused at the linkage unit too.
///
/// ```toml
/// [agencies]
/// health = "ed25519:3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
/// police = "ed25519:…"
///
/// [linkage_key]                       # optional
/// fingerprint = "0c1d2e3f40516273"    # `bloomlink key show` of the current key
/// ```
#[derive(Clone, Debug)]
pub struct Trust {
    path: PathBuf,
    agencies: BTreeMap<String, PublicKey>,
    linkage_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    agencies: BTreeMap<String, String>,
    #[serde(default)]
    linkage_key: Option<LinkageKeyPin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkageKeyPin {
    fingerprint: String,
}

impl Trust {
    /// Loads and checks a trust file.
    pub fn load(path: &Path) -> Result<Trust> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > 1024 * 1024 {
            return Err(Error::Trust {
                path: path.to_path_buf(),
                problem: "is too large to be a trust file".into(),
            });
        }
        let bytes = crate::fsutil::read_small_file(path, 1024 * 1024, "a trust file")?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Trust {
            path: path.to_path_buf(),
            problem: "is not UTF-8 text".into(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses trust file TOML; `path` is used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Trust> {
        let bad = |problem: String| Error::Trust {
            path: path.to_path_buf(),
            problem,
        };
        let f: TrustFile =
            toml::from_str(text).map_err(|e| bad(crate::error::toml_problem(&e, text)))?;
        if f.agencies.is_empty() {
            return Err(bad("lists no agencies under [agencies]".into()));
        }
        let mut agencies = BTreeMap::new();
        let mut seen: BTreeMap<PublicKey, String> = BTreeMap::new();
        for (agency, key) in f.agencies {
            if !is_agency_label(&agency) {
                return Err(bad(format!("agency `{agency}`: {AGENCY_LABEL_RULE}")));
            }
            let pk = PublicKey::parse(&key).ok_or_else(|| {
                bad(format!(
                    "agency {agency}: the key must be `{PUBLIC_PREFIX}` + 64 hex digits, as \
                     printed by `bloomlink signing-key public`"
                ))
            })?;
            if let Some(other) = seen.insert(pk, agency.clone()) {
                return Err(bad(format!(
                    "agencies {other} and {agency} have the same public key: each agency must \
                     have its own signing key"
                )));
            }
            agencies.insert(agency, pk);
        }
        let linkage_key = match f.linkage_key {
            None => None,
            Some(pin) => {
                let fp = pin.fingerprint.trim().to_ascii_lowercase();
                if fp.len() != 16 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(
                        "[linkage_key] fingerprint must be the 16 hex digits `bloomlink key show` \
                         prints"
                            .into(),
                    ));
                }
                Some(fp)
            }
        };
        Ok(Trust {
            path: path.to_path_buf(),
            agencies,
            linkage_key,
        })
    }

    /// The fingerprint of the linkage key inputs must have been made with, if the trust file
    /// names one.
    pub fn linkage_key(&self) -> Option<&str> {
        self.linkage_key.as_deref()
    }

    /// The trust file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The trusted key of `agency`.
    pub fn key_of(&self, agency: &str) -> Option<&PublicKey> {
        self.agencies.get(agency)
    }

    /// The agency a trusted key belongs to.
    pub fn agency_of(&self, key: &PublicKey) -> Option<&str> {
        self.agencies
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(a, _)| a.as_str())
    }

    /// Checks that `key` is the trusted key of `agency`; the problem otherwise, for a person.
    pub fn check_signer(&self, agency: &str, key: &PublicKey) -> std::result::Result<(), String> {
        let trust = self.path.display();
        match self.key_of(agency) {
            None => Err(format!(
                "agency {agency} is not in the trust file {trust}: add its public key (checked \
                 with the agency) or find out who sent this"
            )),
            Some(k) if k == key => Ok(()),
            Some(k) => Err(format!(
                "is signed by key {}{}, not by {agency}'s trusted key {} in {trust}: refused \
                 (signed by someone else claiming to be {agency}, or {agency} changed its \
                 signing key and the trust file was not updated)",
                key.fingerprint(),
                self.agency_of(key)
                    .map(|a| format!(" (the trust file's key of {a})"))
                    .unwrap_or_default(),
                k.fingerprint()
            )),
        }
    }
}

/// Whether unsigned inputs are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsigned {
    /// Refuse unsigned files.
    Refuse,
    /// Accept them (`--allow-unsigned`), marking them `allowed-unsigned`.
    Allow,
}

/// The outcome of checking one input's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureStatus {
    /// Signed by the agency's trusted key, and the signature verifies.
    Verified,
    /// Not signed, accepted because `--allow-unsigned` was given.
    AllowedUnsigned,
}

impl SignatureStatus {
    /// The label used in reports and the audit log.
    pub fn label(self) -> &'static str {
        match self {
            SignatureStatus::Verified => "verified",
            SignatureStatus::AllowedUnsigned => "allowed-unsigned",
        }
    }
}

/// One input's signature, as checked against a trust file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InputSignature {
    /// The encoding file.
    pub file: PathBuf,
    /// The agency in its header.
    pub agency: String,
    /// The outcome.
    pub status: SignatureStatus,
    /// The agency whose key signed it.
    pub signer: Option<String>,
    /// The fingerprint of the key that signed it.
    pub signer_fingerprint: Option<String>,
}

/// What an encoding file's signature says, checked only against the public key it carries
/// (not against a trust file): who claims to have signed it and whether the signature matches
/// the content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EmbeddedSignature {
    /// The signer's agency, as the signature block says.
    pub agency: String,
    /// The signer's public key.
    pub public_key: PublicKey,
    /// Its fingerprint.
    pub fingerprint: String,
    /// True if the signature matches the file's manifest under that key.
    pub valid: bool,
}

/// The signature an encoding file carries, verified against its own public key only; `None` if
/// it is unsigned.
pub fn embedded(f: &EncodingFile) -> Option<EmbeddedSignature> {
    let s = f.signature()?;
    Some(EmbeddedSignature {
        agency: s.agency.clone(),
        public_key: s.public_key,
        fingerprint: s.public_key.fingerprint(),
        valid: s.public_key.verifies(&f.manifest()?, &s.signature),
    })
}

/// Refuses a file whose embedded signature does not hold by itself: it does not verify under
/// the public key the file carries, or it names another agency than the file's header (the
/// writer never signs as another agency). Neither needs a trust file to see: the file was
/// altered or relabelled after signing. Whether the key is the agency's is what a trust file
/// adds ([`check_file`]). An unsigned file passes.
pub fn check_embedded(f: &EncodingFile) -> Result<()> {
    let Some(s) = embedded(f) else {
        return Ok(());
    };
    let agency = &f.header().agency;
    let problem = if !s.valid {
        "its signature does not verify under the public key it carries: the file (or its \
         signature block) was altered after signing; do not use it, ask the agency to encode \
         and sign it again"
            .to_string()
    } else if s.agency != *agency {
        format!(
            "is labelled agency {agency} but signed as agency {}: relabelled after signing; do \
             not use it",
            s.agency
        )
    } else {
        return Ok(());
    };
    Err(Error::Signature {
        path: f.path().to_path_buf(),
        problem,
    })
}

/// Checks one encoding file against `trust`: it must be signed (unless `unsigned` allows it), by
/// the trusted key of the agency named in its header, and the signature must verify; if the
/// trust file names the current linkage key, the file must have been made with it.
pub fn check_file(f: &EncodingFile, trust: &Trust, unsigned: Unsigned) -> Result<InputSignature> {
    let agency = f.header().agency.clone();
    let refuse = |problem: String| Error::Signature {
        path: f.path().to_path_buf(),
        problem,
    };
    if let Some(fp) = trust.linkage_key() {
        let h = f.header();
        if h.key_fingerprint != fp {
            return Err(refuse(format!(
                "was encoded with linkage key {} (epoch {}), not the partnership's current key \
                 {fp} named in the trust file {}: ask {agency} to re-encode with the current key",
                h.key_fingerprint,
                h.key_epoch,
                trust.path().display()
            )));
        }
    }
    let Some(sig) = embedded(f) else {
        return match unsigned {
            Unsigned::Allow => Ok(InputSignature {
                file: f.path().to_path_buf(),
                agency,
                status: SignatureStatus::AllowedUnsigned,
                signer: None,
                signer_fingerprint: None,
            }),
            Unsigned::Refuse => Err(refuse(format!(
                "is not signed: ask the {agency} data team to encode with --sign-with their \
                 signing key (or, to match it anyway, pass --allow-unsigned to match: recorded \
                 in the audit log and report)"
            ))),
        };
    };
    if sig.agency != agency {
        return Err(refuse(format!(
            "is labelled agency {agency} but signed with agency {}'s key ({}): refused",
            sig.agency, sig.fingerprint
        )));
    }
    trust
        .check_signer(&agency, &sig.public_key)
        .map_err(refuse)?;
    if !sig.valid {
        return Err(refuse(format!(
            "has a bad signature: the signature does not match the file's content under \
             {agency}'s key {} (altered after signing, or forged). Ask {agency} to send the file \
             again",
            sig.fingerprint
        )));
    }
    Ok(InputSignature {
        file: f.path().to_path_buf(),
        agency,
        status: SignatureStatus::Verified,
        signer: Some(sig.agency),
        signer_fingerprint: Some(sig.fingerprint),
    })
}

/// Checks every input with [`check_file`]; the first refusal is returned.
pub fn check_inputs(
    files: &[EncodingFile],
    trust: &Trust,
    unsigned: Unsigned,
) -> Result<Vec<InputSignature>> {
    files
        .iter()
        .map(|f| check_file(f, trust, unsigned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("health.sig");
        let k = SigningKey::generate("health").unwrap();
        k.save(&p).unwrap();
        let back = SigningKey::load(&p).unwrap();
        assert_eq!(back.info(), k.info());
        let sig = back.sign(b"message");
        assert!(k.info().public_key.verifies(b"message", &sig));
        assert!(!k.info().public_key.verifies(b"messagE", &sig));
        assert!(!format!("{k:?}").contains(&hex::encode(&k.pkcs8[..])));
        let text = std::fs::read_to_string(&p).unwrap();
        // An edited agency line is detected.
        let edited = text.replace("# agency: health", "# agency: police");
        let e = parse_key_text(&p, &edited).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // A public key file is not a signing key.
        let e = parse_key_text(&p, &k.public_file_text())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a public key"), "{e}");
        assert!(SigningKey::generate("Health Team").is_err());
    }

    #[test]
    fn a_byte_order_mark_and_trailing_whitespace_are_ignored() {
        let k = SigningKey::generate("health").unwrap();
        let mut text = String::from("\u{feff}");
        for line in k.to_file_text().lines() {
            text.push_str(line);
            text.push_str(" \t\r\n");
        }
        let p = Path::new("health.sig");
        let back = parse_key_text(p, &text).unwrap();
        assert_eq!(back.info(), k.info());
        // One changed digit of the secret still fails the checksum (or the PKCS#8 parse).
        let at = text.find(SIGNING_SECRET_PREFIX).unwrap() + SIGNING_SECRET_PREFIX.len() + 40;
        let mut b = text.into_bytes();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        let e = parse_key_text(p, &String::from_utf8(b).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("checksum") || e.contains("PKCS#8"), "{e}");
    }

    #[test]
    fn trust_file_is_checked() {
        let a = SigningKey::generate("health").unwrap();
        let b = SigningKey::generate("police").unwrap();
        let text = format!(
            "[agencies]\nhealth = \"{}\"\npolice = \"{}\"\n",
            a.info().public_key,
            b.info().public_key
        );
        let t = Trust::from_toml(&text, Path::new("t.toml")).unwrap();
        assert!(t.check_signer("health", &a.info().public_key).is_ok());
        let e = t.check_signer("health", &b.info().public_key).unwrap_err();
        assert!(e.contains("police"), "{e}");
        assert!(t.check_signer("education", &a.info().public_key).is_err());
        let dup = format!(
            "[agencies]\nhealth = \"{0}\"\npolice = \"{0}\"\n",
            a.info().public_key
        );
        assert!(Trust::from_toml(&dup, Path::new("t")).is_err());
        assert!(Trust::from_toml("[agencies]\nhealth = \"abc\"\n", Path::new("t")).is_err());
        // The public key file's last line is a valid trust entry.
        let line = a.public_file_text().lines().last().unwrap().to_string();
        assert!(Trust::from_toml(&format!("[agencies]\n{line}\n"), Path::new("t")).is_ok());
    }
}
