//! The library's error type.
//!
//! Every variant says *where* (file, row, column, field) but never carries a personal value:
//! error text ends up in tickets and emails. Messages are written for a person and end with the
//! fix when there is one.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in bloomlink's library code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error on a named file.
    #[error("{path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The output exists and is not to be replaced.
    #[error("{path} already exists: {}", exists_fix(*.force))]
    OutputExists {
        /// The existing output.
        path: PathBuf,
        /// The command offers `--force` to replace it (keys and checkpoints are never replaced).
        force: bool,
    },

    /// A key file was refused.
    #[error("key file {path}: {problem}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },

    /// A linkage schema could not be used.
    #[error("schema {origin}: {problem}")]
    Schema {
        /// The schema file, or `built-in default`.
        origin: String,
        /// What is wrong.
        problem: String,
    },

    /// A column map could not be used.
    #[error("column map {path}: {problem}")]
    ColumnMap {
        /// The column map file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// The input CSV as a whole is unusable (as opposed to single rows, which are rejected).
    #[error("{path}: {problem}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// What is wrong, naming row/line/column where it applies.
        problem: String,
    },

    /// Too many rows were rejected: the export is probably broken.
    #[error(
        "{path}: {rejected} of {read} rows rejected ({rate:.2} %), above the limit of {limit:.2} %; \
         no output written. See {} for row numbers and reasons{hint}", .rejects_file.display()
    )]
    TooManyRejects {
        /// The input file.
        path: PathBuf,
        /// The rejects file written.
        rejects_file: PathBuf,
        /// Rows rejected.
        rejected: u64,
        /// Rows read.
        read: u64,
        /// Rejection rate in percent.
        rate: f64,
        /// The limit in percent.
        limit: f64,
        /// Extra advice (may be empty).
        hint: String,
    },

    /// A mapped field is invalid in too many rows: the column map (or the export) is wrong.
    #[error(
        "{path}: field {field} (column `{column}`) is invalid in {rate:.1} % of rows, above the \
         limit of {limit:.1} %{hint}; no output written. A field this broken makes the \
         encoding useless for linking; pass --max-invalid-rate 1 to encode it anyway"
    )]
    TooManyInvalid {
        /// The input file.
        path: PathBuf,
        /// The schema field.
        field: String,
        /// Its column.
        column: String,
        /// Invalid share in percent.
        rate: f64,
        /// The limit in percent.
        limit: f64,
        /// What to check.
        hint: String,
    },

    /// The export's bytes are not in the character encoding its column map declares: read as
    /// declared, names with accents would be garbled or their rows rejected.
    #[error("{path}: {problem}")]
    WrongEncoding {
        /// The input file.
        path: PathBuf,
        /// What the bytes show, what reading them as declared does, and the encoding to set.
        problem: String,
    },

    /// An encoding file is malformed, truncated, altered or of an unsupported version.
    #[error("encoding file {path}: {problem}")]
    Format {
        /// The encoding file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// An encoding file was refused by the trust check: unsigned, signed by an unknown or
    /// untrusted key, labelled as another agency than its signer, not matching its content, or
    /// made with another linkage key than the one the trust file names.
    #[error("encoding file {path}: {problem}")]
    Signature {
        /// The encoding file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },

    /// A trust file (agency → public signing key) could not be used.
    #[error("trust file {path}: {problem}")]
    Trust {
        /// The trust file.
        path: PathBuf,
        /// What is wrong, with the line where it applies.
        problem: String,
    },

    /// A signed audit checkpoint is malformed, does not verify, is not trusted, or its head is
    /// no longer in the log.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// Invalid options or option combinations.
    #[error("{0}")]
    Usage(String),

    /// The audit log cannot be appended to (it exists but its end is not a complete entry).
    #[error("audit log {path}: {problem}")]
    AuditWrite {
        /// The audit log.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },

    /// An audit log's hash chain is broken: an entry was edited, removed, reordered, truncated
    /// or appended from another log.
    #[error("audit log {path}: line {line}{}: {kind}: {problem}", seq.map(|s| format!(" (seq {s})")).unwrap_or_default())]
    AuditChain {
        /// The audit log.
        path: PathBuf,
        /// Line number (from 1) of the first bad entry.
        line: usize,
        /// Its sequence number, when readable.
        seq: Option<u64>,
        /// `edited`, `removed`, `reordered`, `truncated`, `foreign` or `malformed`.
        kind: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The fix for an existing output, by whether the command can replace it.
fn exists_fix(force: bool) -> &'static str {
    if force {
        "choose another output or pass --force to replace it"
    } else {
        "choose another output (bloomlink never replaces this kind of file: move the old one \
         away first if it is really no longer needed)"
    }
}

/// A TOML file's parse error as a message that names the line and column but never quotes the
/// file. The `toml` crate's own message shows the offending line, and the file may not be what
/// the user meant to give: a key file passed as `--schema` would have its secret printed, a CSV
/// passed as `--columns` a child's record, both then kept in the audit log.
pub fn toml_problem(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            format!("not valid TOML at line {line}, column {column}: {message}")
        }
        None => format!("not valid TOML: {message}"),
    }
}

impl Error {
    /// Shorthand for an [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for an [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// Shorthand for an [`Error::Input`].
    pub fn input(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// Shorthand for an [`Error::Key`].
    pub fn key(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Key {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// The process exit code the command-line tool uses for this error (see README, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::TooManyRejects { .. }
            | Error::TooManyInvalid { .. }
            | Error::WrongEncoding { .. } => 3,
            Error::Key { .. } => 4,
            Error::Format { .. } | Error::Signature { .. } => 5,
            Error::AuditChain { .. } | Error::Checkpoint { .. } => 6,
            _ => 1,
        }
    }
}
