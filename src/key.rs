//! Linkage keys: generation, the key file, loading with safety checks, and subkey derivation.
//!
//! A linkage key is 256 bits from the operating system's CSPRNG. Its file is text: comment lines
//! carry the metadata (created, expires, partnership, purpose, epoch, fingerprint) and one line
//! carries the secret plus a check value. The check value is an HMAC under the secret over the
//! metadata, so a mangled secret *and* an edited expiry date are both detected.
//!
//! The secret lives in a [`Zeroizing`] buffer, is never printed (`Debug` shows the fingerprint
//! only) and is reachable only through [`LinkageKey::subkey`], which derives per-purpose keys with
//! HKDF-SHA256.
//!
//! Lifecycle: [`LinkageKey::rotate`] makes the next epoch's key, recording the old key's
//! fingerprint in a `# previous:` line; [`LinkageKey::retire`] adds a `# retired:` line. Both
//! lines are optional and, when present, covered by the check value, so removing the retirement
//! (or inventing a lineage) by editing the file is detected, while key files written before these
//! lines existed keep their check value and still load.

use std::fmt;
use std::path::Path;

use ring::{hkdf, hmac, rand::SecureRandom};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::date::{self, Date};
use crate::error::{Error, Result};
use crate::fsutil::{self, Mode, Overwrite};

/// Start of a linkage key file's secret line.
pub(crate) const SECRET_PREFIX: &str = "bloomlink-key-1:";
/// Start of a signing key file's secret line (see [`crate::signing`]): recognised here so that a
/// signing key offered as a linkage key is refused by name.
pub(crate) const SIGNING_PREFIX: &str = "bloomlink-signing-key";
const CHECK_LABEL: &[u8] = b"bloomlink key check v1\n";
const FINGERPRINT_LABEL: &[u8] = b"bloomlink key fingerprint v1";
const HKDF_SALT: &[u8] = b"bloomlink hkdf salt v1";
const SECRET_LEN: usize = 32;

/// Public facts about a key. Safe to print, log and store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// When the key was made (RFC 3339, UTC).
    pub created: String,
    /// Last day on which the key may be used (`YYYY-MM-DD` in JSON, as in the key file, the
    /// audit log and the text output).
    #[serde(serialize_with = "serialize_iso")]
    pub expires: Date,
    /// The partnership the key belongs to.
    pub partnership: String,
    /// What the key is for (e.g. `safeguarding-linkage`; `demo` for the shipped demo key).
    pub purpose: String,
    /// Rotation epoch, starting at 1.
    pub epoch: u32,
    /// Short one-way public identifier of the secret (16 hex digits).
    pub fingerprint: String,
    /// Fingerprint of the key this one replaced (set by `key rotate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// When the key was retired (RFC 3339, UTC; set by `key retire`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
}

/// Serialises a date as its `YYYY-MM-DD` text.
fn serialize_iso<S: serde::Serializer>(date: &Date, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(date)
}

/// How many days ahead of a key's expiry `encode` warns that it is about to expire, so that
/// a nightly job is not refused without notice.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

impl KeyInfo {
    /// True if `today` is after the expiry date.
    pub fn is_expired(&self, today: Date) -> bool {
        today > self.expires
    }

    /// Days from `today` to the last day of use: 0 on that day, negative once expired.
    pub fn days_to_expiry(&self, today: Date) -> i64 {
        self.expires.to_days() - today.to_days()
    }

    /// A warning when the key is still valid `today` but expires within
    /// [`EXPIRY_WARNING_DAYS`]; `None` otherwise (also when already expired: that is refused,
    /// or overridden and warned about, elsewhere).
    pub fn expiry_warning(&self, today: Date) -> Option<String> {
        let days = self.days_to_expiry(today);
        let when = match days {
            d if !(0..=EXPIRY_WARNING_DAYS).contains(&d) => return None,
            0 => "today".to_string(),
            1 => "tomorrow".to_string(),
            d => format!("in {d} days"),
        };
        Some(format!(
            "key {} expires {when} ({} is its last day of use); from the day after, encoding \
             with it is refused (exit 4): ask the key custodian for the next key (`key rotate`)",
            self.fingerprint, self.expires
        ))
    }

    fn check_message(&self) -> Vec<u8> {
        let mut m = CHECK_LABEL.to_vec();
        for (k, v) in self.fields() {
            m.extend_from_slice(k.as_bytes());
            m.push(b'=');
            m.extend_from_slice(v.as_bytes());
            m.push(b'\n');
        }
        m
    }

    /// The metadata lines covered by the check value, in file order. `previous` and `retired`
    /// appear only when set, so the check value of a key without them is what it always was.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("created", self.created.clone()),
            ("expires", self.expires.to_string()),
            ("partnership", self.partnership.clone()),
            ("purpose", self.purpose.clone()),
            ("epoch", self.epoch.to_string()),
        ];
        if let Some(p) = &self.previous {
            f.push(("previous", p.clone()));
        }
        if let Some(r) = &self.retired {
            f.push(("retired", r.clone()));
        }
        f
    }
}

/// Options for a new key.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// Partnership name (one line of text).
    pub partnership: String,
    /// Purpose label.
    pub purpose: String,
    /// Expiry date; `None` means 12 months from today.
    pub expires: Option<Date>,
    /// Epoch (1 for a first key).
    pub epoch: u32,
}

/// A loaded linkage key. The secret is zeroised on drop and never shown.
pub struct LinkageKey {
    secret: Zeroizing<[u8; SECRET_LEN]>,
    info: KeyInfo,
}

impl fmt::Debug for LinkageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkageKey")
            .field("fingerprint", &self.info.fingerprint)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How strictly [`LinkageKey::load`] treats expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Refuse an expired key.
    Enforce,
    /// Accept an expired key (explicit user override).
    Allow,
}

/// How strictly [`LinkageKey::load_for_use`] treats a retired key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retired {
    /// Refuse a retired key.
    Enforce,
    /// Accept a retired key (explicit user override).
    Allow,
}

impl LinkageKey {
    /// Generates a new key from the operating system's CSPRNG.
    pub fn generate(opts: &NewKey) -> Result<LinkageKey> {
        Self::generate_as_of(opts, Date::today_utc())
    }

    /// Generates a new key as if today were `today` (its creation date and default expiry are
    /// counted from it). Used to prepare keys ahead of a rotation date, and by tests of expiry.
    /// The expiry is the last day of use, so it may be today but not earlier.
    pub fn generate_as_of(opts: &NewKey, today: Date) -> Result<LinkageKey> {
        let expires = opts.expires.unwrap_or_else(|| today.add_months(12));
        if expires < today {
            return Err(Error::Usage(format!(
                "expiry date {expires} is in the past (today is {today}): give the key's last \
                 day of use, today or later"
            )));
        }
        for (what, v) in [
            ("partnership", &opts.partnership),
            ("purpose", &opts.purpose),
        ] {
            if v.trim().is_empty() || v.contains(['\n', '\r']) || v.len() > 200 {
                return Err(Error::Usage(format!(
                    "{what} must be one non-empty line of at most 200 bytes"
                )));
            }
        }
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        ring::rand::SystemRandom::new()
            .fill(&mut secret[..])
            .map_err(|_| Error::Usage("the operating system's random generator failed".into()))?;
        let info = KeyInfo {
            created: if today == Date::today_utc() {
                date::now_rfc3339()
            } else {
                format!("{today}T00:00:00Z")
            },
            expires,
            partnership: opts.partnership.trim().to_string(),
            purpose: opts.purpose.trim().to_string(),
            epoch: opts.epoch.max(1),
            fingerprint: fingerprint(&secret),
            previous: None,
            retired: None,
        };
        Ok(LinkageKey { secret, info })
    }

    /// Makes the next epoch's key: a fresh secret, the same partnership and purpose, epoch + 1,
    /// and this key's fingerprint as `previous` (the lineage). `expires` as for a new key.
    pub fn rotate(&self, expires: Option<Date>) -> Result<LinkageKey> {
        let epoch = self.info.epoch.checked_add(1).ok_or_else(|| {
            Error::Usage("the key's epoch is at its maximum and cannot be rotated".into())
        })?;
        let mut next = Self::generate(&NewKey {
            partnership: self.info.partnership.clone(),
            purpose: self.info.purpose.clone(),
            expires,
            epoch,
        })?;
        next.info.previous = Some(self.info.fingerprint.clone());
        Ok(next)
    }

    /// Marks the key file at `path` retired: adds a `# retired:` line with the current time
    /// (covered by the check value) and rewrites the file atomically, mode 0600. Refuses a key
    /// that is already retired. Returns the retired key.
    pub fn retire(path: &Path) -> Result<LinkageKey> {
        // The retired key is written to a new file renamed over `path`: another name for the
        // old file (the target of a symbolic link, a hard link) would keep the key unretired.
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
            return Err(Error::key(
                path,
                format!(
                    "is a symbolic link to {}: retire the key file itself, so that the link \
                     and any other name for it see the retirement",
                    target.display()
                ),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if meta.nlink() > 1 {
                return Err(Error::key(
                    path,
                    format!(
                        "has {} other name(s) (hard links to the same file), which retiring \
                         this name would leave unretired: remove the other names first \
                         (`find / -samefile {}` lists them)",
                        meta.nlink() - 1,
                        path.display()
                    ),
                ));
            }
        }
        let mut key = Self::load_unchecked_expiry(path)?;
        if let Some(when) = &key.info.retired {
            return Err(Error::key(
                path,
                format!("key {} was already retired on {when}", key.info.fingerprint),
            ));
        }
        key.info.retired = Some(date::now_rfc3339());
        let text = key.to_file_text();
        fsutil::write_text_atomic(path, Overwrite::Replace, Mode::Private, &text)?;
        Ok(key)
    }

    /// The key's public metadata.
    pub fn info(&self) -> &KeyInfo {
        &self.info
    }

    /// The key file text. Contains the secret: write it only with [`LinkageKey::save`].
    fn to_file_text(&self) -> Zeroizing<String> {
        let i = &self.info;
        let mut s = String::new();
        s.push_str(
            "# bloomlink linkage key. SECRET: keep it mode 0600, never email or commit it.\n",
        );
        s.push_str("# Hand it to agencies out of band. The linkage unit must never hold it.\n");
        for (k, v) in i.fields() {
            s.push_str(&format!("# {k}: {v}\n"));
        }
        s.push_str(&format!("# fingerprint: {}\n", i.fingerprint));
        let check = self.check_value();
        let mut text = Zeroizing::new(s);
        text.push_str(SECRET_PREFIX);
        let hex_secret = Zeroizing::new(hex::encode(&self.secret[..]));
        text.push_str(&hex_secret);
        text.push(':');
        text.push_str(&hex::encode(check));
        text.push('\n');
        text
    }

    fn check_value(&self) -> [u8; 8] {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &self.secret[..]);
        let tag = hmac::sign(&k, &self.info.check_message());
        let mut out = [0u8; 8];
        out.copy_from_slice(&tag.as_ref()[..8]);
        out
    }

    /// Writes the key file: mode 0600, never over an existing file, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.to_file_text();
        fsutil::write_text_atomic(path, Overwrite::Never, Mode::Private, &text)
    }

    /// Loads a key file, refusing (with the fix in the message) a file readable by group or
    /// others, a mangled secret or edited metadata, a signing key, a retired key, and, unless
    /// allowed, an expired key.
    pub fn load(path: &Path, expiry: Expiry) -> Result<LinkageKey> {
        Self::load_for_use(path, expiry, Retired::Enforce)
    }

    /// [`LinkageKey::load`] with an explicit policy for retired keys (`--allow-retired`).
    pub fn load_for_use(path: &Path, expiry: Expiry, retired: Retired) -> Result<LinkageKey> {
        let key = Self::load_unchecked_expiry(path)?;
        if retired == Retired::Enforce {
            if let Some(when) = &key.info.retired {
                return Err(Error::key(
                    path,
                    format!(
                        "key {} (epoch {}) was retired on {when}: ask the key custodian for the \
                         current key (or pass --allow-retired, which is recorded)",
                        key.info.fingerprint, key.info.epoch
                    ),
                ));
            }
        }
        if expiry == Expiry::Enforce && key.info.is_expired(Date::today_utc()) {
            return Err(Error::key(
                path,
                format!(
                    "key {} expired on {}: ask the key custodian for the current key \
                     (or pass --allow-expired, which is recorded)",
                    key.info.fingerprint, key.info.expires
                ),
            ));
        }
        Ok(key)
    }

    /// Loads a key file with every check except expiry (used by `key show`).
    pub fn load_unchecked_expiry(path: &Path) -> Result<LinkageKey> {
        let bytes = read_secret_file(path, "a linkage key")?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::key(path, "is not a text file; is this really a key file?"))?;
        parse_key_text(path, text)
    }

    /// The fingerprint a key file *claims* in its `# fingerprint:` comment line, read without
    /// loading or checking the secret (for recording a refused key in the audit log). Not
    /// verified: a mangled or forged file can claim anything.
    pub fn claimed_fingerprint(path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() || meta.len() > 64 * 1024 {
            return None;
        }
        let bytes = Zeroizing::new(std::fs::read(path).ok()?);
        let text = std::str::from_utf8(&bytes).ok()?;
        text.lines()
            .filter_map(|l| l.strip_prefix("# fingerprint:"))
            .map(str::trim)
            .find(|f| !f.is_empty() && f.len() <= 64 && f.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_string)
    }

    /// Derives a 256-bit HMAC key for one purpose (`label`) with HKDF-SHA256.
    pub fn subkey(&self, label: &str) -> hmac::Key {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT);
        let prk = salt.extract(&self.secret[..]);
        let info = [label.as_bytes()];
        // `expand` fails only if the output is longer than 255 hash lengths; ours is one.
        match prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            Err(_) => unreachable!("HKDF output of one hash length is always valid"),
        }
    }
}

/// Reads a file holding a secret (`what`: "a linkage key", "a signing key"), refusing a
/// directory, a file that group or others can access (with the `chmod` to run) and one that is
/// too large to be a key file.
pub(crate) fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    // Before the mode check: a directory's usual mode 0755 would otherwise ask for a `chmod`.
    if meta.is_dir() {
        return Err(Error::key(
            path,
            format!(
                "is a directory, not a key file: give the path of {what} file, not of the \
                 directory holding it"
            ),
        ));
    }
    // A device (`/dev/zero`) would be read forever. A named pipe is allowed (a secret passed
    // from a vault without touching the disk, `--key <(…)`), and read to a bound below.
    if !meta.is_file() && !fsutil::is_fifo(&meta) {
        return Err(Error::key(
            path,
            format!("is a device or socket, not a file: give the path of {what} file"),
        ));
    }
    if let Some(mode) = fsutil::is_group_or_world_accessible(&meta) {
        // A public key file is readable by all on purpose: name the mix-up, not a `chmod`.
        let public = meta.is_file()
            && meta.len() <= 64 * 1024
            && std::fs::read_to_string(path)
                .is_ok_and(|t| t.lines().any(crate::signing::is_public_key_line));
        if public {
            return Err(Error::key(
                path,
                format!(
                    "is an agency's public signing key (shared, and readable by anyone), not \
                     {what}: give the private key file instead"
                ),
            ));
        }
        return Err(Error::key(
            path,
            format!(
                "is accessible by group or others (mode {mode:04o}); {what} must be private: \
                 run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    const MAX: u64 = 64 * 1024;
    let too_large = || Error::key(path, "is too large to be a bloomlink key file");
    if meta.len() > MAX {
        return Err(too_large());
    }
    // Room for all of it up front: a growing buffer would leave copies of the secret behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX as usize + 1));
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.take(MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Constant-time equality of two check values.
fn ct_eq(a: &[u8; 8], b: &[u8; 8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn fingerprint(secret: &[u8; SECRET_LEN]) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hex::encode(&hmac::sign(&k, FINGERPRINT_LABEL).as_ref()[..8])
}

/// A key file's text: its `# name: value` comment fields (the last of a name wins) and its one
/// secret line (1-based line number, text). Shared by linkage and signing key files.
pub(crate) struct KeyFileText<'a> {
    pub(crate) fields: std::collections::BTreeMap<String, String>,
    pub(crate) secret: Option<(usize, &'a str)>,
}

/// Splits a key file's text. A line that is neither a comment, blank, nor starts with
/// `secret_prefix` is refused with the message `other` gives for it (1-based line number and
/// text): a key of the wrong kind, or not a key file at all.
///
/// What editors on Windows add is ignored: a UTF-8 byte order mark at the start, CRLF line ends
/// and spaces or tabs at the end of a line. The secret and check value are still checked exactly.
pub(crate) fn split_key_file<'a>(
    text: &'a str,
    secret_prefix: &str,
    other: impl Fn(usize, &str) -> String,
) -> std::result::Result<KeyFileText<'a>, String> {
    let mut out = KeyFileText {
        fields: Default::default(),
        secret: None,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches([' ', '\t', '\r']);
        if let Some(c) = line.strip_prefix('#') {
            if let Some((k, v)) = c.split_once(':') {
                out.fields
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        } else if line.trim().is_empty() {
            continue;
        } else if line.starts_with(secret_prefix) {
            if out.secret.is_some() {
                return Err("has more than one secret line".into());
            }
            out.secret = Some((n + 1, line));
        } else {
            return Err(other(n + 1, line));
        }
    }
    Ok(out)
}

fn parse_key_text(path: &Path, text: &str) -> Result<LinkageKey> {
    let bad = |what: String| Error::key(path, what);
    let mut parts = split_key_file(text, SECRET_PREFIX, |n, line| {
        if line.starts_with(SIGNING_PREFIX) {
            "is a signing key, not a linkage key: give the partnership linkage key instead".into()
        } else if crate::signing::is_public_key_line(line) {
            "is an agency's public signing key, not a linkage key: give the partnership \
             linkage key instead"
                .into()
        } else {
            format!(
                "line {n} is neither a comment nor the secret line; is this really a bloomlink \
                 linkage key?"
            )
        }
    })
    .map_err(bad)?;
    let mut field = |name: &str| parts.fields.remove(name);
    let (created, expires, partnership, purpose, epoch) = (
        field("created"),
        field("expires"),
        field("partnership"),
        field("purpose"),
        field("epoch"),
    );
    let (previous, retired, stated_fingerprint) =
        (field("previous"), field("retired"), field("fingerprint"));
    let secret_line = parts.secret;
    let (line_no, secret_line) = secret_line.ok_or_else(|| {
        bad("has no secret line (starting `bloomlink-key-1:`); is this really a bloomlink linkage key?".into())
    })?;
    let mangled = || {
        bad(format!(
            "line {line_no} (the secret) is mangled: it must be `bloomlink-key-1:` + 64 hex digits \
             + `:` + 16 hex digits. Ask the key custodian for a fresh copy"
        ))
    };
    let rest = &secret_line[SECRET_PREFIX.len()..];
    let (hex_secret, hex_check) = rest.split_once(':').ok_or_else(mangled)?;
    if hex_secret.len() != 2 * SECRET_LEN || hex_check.len() != 16 {
        return Err(mangled());
    }
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    hex::decode_to_slice(hex_secret, &mut secret[..]).map_err(|_| mangled())?;
    let mut check = [0u8; 8];
    hex::decode_to_slice(hex_check, &mut check).map_err(|_| mangled())?;

    let missing = |what: &str| bad(format!("has no `# {what}:` line"));
    let expires_text = expires.ok_or_else(|| missing("expires"))?;
    let info = KeyInfo {
        created: created.ok_or_else(|| missing("created"))?,
        expires: Date::parse_iso(&expires_text)
            .ok_or_else(|| bad("the `# expires:` line is not a YYYY-MM-DD date".into()))?,
        partnership: partnership.ok_or_else(|| missing("partnership"))?,
        purpose: purpose.ok_or_else(|| missing("purpose"))?,
        epoch: epoch
            .ok_or_else(|| missing("epoch"))?
            .parse()
            .map_err(|_| bad("the `# epoch:` line is not a number".into()))?,
        fingerprint: fingerprint(&secret),
        previous,
        retired,
    };
    let key = LinkageKey { secret, info };
    if !ct_eq(&key.check_value(), &check) {
        return Err(bad(
            "failed its checksum: the secret line or a metadata line (created, expires, \
             partnership, purpose, epoch, previous, retired) was altered, added, removed or \
             mangled in copying. Ask the key custodian for a fresh copy"
                .into(),
        ));
    }
    if let Some(fp) = stated_fingerprint {
        if fp != key.info.fingerprint {
            return Err(bad(format!(
                "the `# fingerprint:` line does not match the secret (the secret's fingerprint \
                 is {}): the file was edited. Ask the key custodian for a fresh copy",
                key.info.fingerprint
            )));
        }
    }
    Ok(key)
}

/// A fresh random key for unit tests: partnership `partnership`, created 2026-01-01 with the
/// default expiry.
#[cfg(test)]
pub(crate) fn test_key(partnership: &str) -> LinkageKey {
    let opts = NewKey {
        partnership: partnership.into(),
        purpose: "test".into(),
        expires: None,
        epoch: 1,
    };
    LinkageKey::generate_as_of(&opts, Date::new(2026, 1, 1).unwrap()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key() -> LinkageKey {
        LinkageKey::generate(&NewKey {
            partnership: "Test Partnership".into(),
            purpose: "test".into(),
            expires: None,
            epoch: 1,
        })
        .unwrap()
    }

    #[test]
    fn round_trip_through_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let k = new_key();
        k.save(&p).unwrap();
        let back = LinkageKey::load(&p, Expiry::Enforce).unwrap();
        assert_eq!(back.info(), k.info());
        assert_eq!(back.secret[..], k.secret[..]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        new_key().save(&p).unwrap();
        let before = std::fs::read(&p).unwrap();
        assert!(matches!(
            new_key().save(&p),
            Err(Error::OutputExists { .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let err = LinkageKey::load(dir.path(), Expiry::Enforce).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("is a directory, not a key file"), "{msg}");
        assert!(!msg.contains("chmod"), "{msg}");
        assert_eq!(err.exit_code(), 4);
    }

    #[test]
    fn the_expiry_may_be_today_but_not_earlier() {
        let today = Date::new(2026, 3, 1).unwrap();
        let opts = |expires| NewKey {
            partnership: "P".into(),
            purpose: "test".into(),
            expires: Some(expires),
            epoch: 1,
        };
        // The expiry is the last day of use: a key expiring today is valid today.
        let k = LinkageKey::generate_as_of(&opts(today), today).unwrap();
        assert_eq!(k.info.expires, today);
        assert!(!k.info.is_expired(today));
        let yesterday = Date::new(2026, 2, 28).unwrap();
        let err = LinkageKey::generate_as_of(&opts(yesterday), today).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("expiry date 2026-02-28 is in the past (today is 2026-03-01)"),
            "{err}"
        );
    }

    #[test]
    fn json_gives_the_expiry_as_an_iso_date() {
        let k = test_key("P");
        let j = serde_json::to_value(k.info()).unwrap();
        assert_eq!(j["expires"], "2027-01-01");
        assert_eq!(j["expires"], k.info.expires.to_string());
        assert_eq!(j["fingerprint"], k.info.fingerprint);
    }

    #[test]
    fn debug_hides_secret() {
        let k = new_key();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex::encode(&k.secret[..])));
        assert!(dbg.contains(&k.info.fingerprint));
    }

    #[test]
    fn keys_differ_and_fingerprint_is_short_hex() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a.secret[..], b.secret[..]);
        assert_ne!(a.info.fingerprint, b.info.fingerprint);
        assert_eq!(a.info.fingerprint.len(), 16);
        assert!(a.info.fingerprint.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn edited_expiry_is_detected() {
        let k = new_key();
        let text = k.to_file_text();
        let edited = text.replace(
            &format!("# expires: {}", k.info.expires),
            "# expires: 2099-01-01",
        );
        let err = parse_key_text(Path::new("k"), &edited).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    /// `text` as a Windows editor may save it: a UTF-8 byte order mark, CRLF line ends, and
    /// spaces and tabs after every line (the secret line included).
    fn windows_copy(text: &str) -> String {
        let mut out = String::from("\u{feff}");
        for (i, line) in text.lines().enumerate() {
            out.push_str(line);
            out.push_str(if i % 2 == 0 { "  \t" } else { "\t " });
            out.push_str("\r\n");
        }
        out
    }

    /// `text` with the first hex digit of the secret replaced by another hex digit.
    fn flip_secret_digit(text: &str) -> String {
        let at = text.find(SECRET_PREFIX).unwrap() + SECRET_PREFIX.len();
        let mut b = text.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn a_byte_order_mark_and_trailing_whitespace_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let k = new_key();
        let text = windows_copy(&k.to_file_text());
        assert!(text.starts_with('\u{feff}'));
        assert!(text.contains(" \r\n") && text.contains("\t\r\n"));
        let p = dir.path().join("k.key");
        fsutil::write_text_atomic(&p, Overwrite::Never, Mode::Private, &text).unwrap();
        let back = LinkageKey::load(&p, Expiry::Enforce).unwrap();
        assert_eq!(back.info(), k.info());
        assert_eq!(back.secret[..], k.secret[..]);
        assert_eq!(
            LinkageKey::claimed_fingerprint(&p),
            Some(k.info.fingerprint)
        );
        // The secret is still checked exactly: one changed digit fails the checksum.
        let err = parse_key_text(&p, &flip_secret_digit(&text)).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        // Whitespace inside the secret line is not ignored.
        let split = text.replacen(SECRET_PREFIX, &format!("{SECRET_PREFIX} "), 1);
        let err = parse_key_text(&p, &split).unwrap_err();
        assert!(err.to_string().contains("mangled"), "{err}");
    }

    #[test]
    fn an_edited_fingerprint_line_is_refused_without_claiming_to_show_the_secret() {
        let k = new_key();
        let text = k.to_file_text();
        let forged = text.replace(
            &format!("# fingerprint: {}", k.info.fingerprint),
            "# fingerprint: 0123456789abcdef",
        );
        assert_ne!(*forged, *text);
        let err = parse_key_text(Path::new("k"), &forged)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "(the secret's fingerprint is {})",
                k.info.fingerprint
            )),
            "{err}"
        );
        assert!(!err.contains("the secret is"), "{err}");
        assert!(!err.contains(&hex::encode(&k.secret[..])), "{err}");
    }

    #[test]
    fn rotation_records_lineage_under_the_check_value() {
        let old = new_key();
        let next = old.rotate(None).unwrap();
        assert_eq!(next.info.epoch, old.info.epoch + 1);
        assert_eq!(next.info.partnership, old.info.partnership);
        assert_eq!(next.info.purpose, old.info.purpose);
        assert_eq!(next.info.previous.as_deref(), Some(&*old.info.fingerprint));
        assert_ne!(next.secret[..], old.secret[..]);
        let text = next.to_file_text();
        assert!(text.contains(&format!("# previous: {}\n", old.info.fingerprint)));
        let back = parse_key_text(Path::new("k"), &text).unwrap();
        assert_eq!(back.info(), next.info());
        // A forged lineage is detected.
        let forged = text.replace(&old.info.fingerprint, "0123456789abcdef");
        let err = parse_key_text(Path::new("k"), &forged).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn retirement_is_refused_and_cannot_be_edited_away() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        new_key().save(&p).unwrap();
        let retired = LinkageKey::retire(&p).unwrap();
        assert!(retired.info.retired.is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // A symbolic link or a hard link to a key is not retired in its place: the other name
        // would keep the key in use.
        #[cfg(unix)]
        {
            let other = dir.path().join("other.key");
            new_key().save(&other).unwrap();
            let link = dir.path().join("link.key");
            std::os::unix::fs::symlink(&other, &link).unwrap();
            let e = LinkageKey::retire(&link).unwrap_err().to_string();
            assert!(e.contains("is a symbolic link"), "{e}");
            let hard = dir.path().join("hard.key");
            std::fs::hard_link(&other, &hard).unwrap();
            let e = LinkageKey::retire(&hard).unwrap_err().to_string();
            assert!(e.contains("has 1 other name(s)"), "{e}");
            assert!(LinkageKey::load(&other, Expiry::Enforce).is_ok());
        }
        let err = LinkageKey::load(&p, Expiry::Enforce).unwrap_err();
        assert!(err.to_string().contains("retired"), "{err}");
        assert_eq!(err.exit_code(), 4);
        assert!(LinkageKey::load_for_use(&p, Expiry::Enforce, Retired::Allow).is_ok());
        assert!(LinkageKey::retire(&p)
            .unwrap_err()
            .to_string()
            .contains("already retired"));
        // Deleting the `# retired:` line breaks the check value.
        let text = std::fs::read_to_string(&p).unwrap();
        let edited: String = text
            .lines()
            .filter(|l| !l.starts_with("# retired:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(edited, text);
        let err = parse_key_text(&p, &edited).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn subkeys_are_distinct_and_deterministic() {
        let k = new_key();
        let t1 = hmac::sign(&k.subkey("a"), b"x");
        let t2 = hmac::sign(&k.subkey("a"), b"x");
        let t3 = hmac::sign(&k.subkey("b"), b"x");
        assert_eq!(t1.as_ref(), t2.as_ref());
        assert_ne!(t1.as_ref(), t3.as_ref());
    }
}
