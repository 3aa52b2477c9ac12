//! Command-line definitions and dispatch.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod auditcmd;
mod demo;
mod encode;
mod evaluate;
mod inspect;
mod keycmd;
mod matchcmd;
mod output;
mod risk;
mod schemacmd;
mod signcmd;
mod synth;

/// Privacy-preserving record linkage across agencies, with keyed Bloom-filter encodings.
///
/// Agencies encode their exports with a shared secret key (`encode`); the linkage unit links
/// the encodings without the key; information-governance leads audit key use.
#[derive(Parser, Debug)]
#[command(name = "bloomlink", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 too many rejected rows or a \
mostly invalid field, 4 key refused, 5 encoding file or its signature refused, 6 audit log \
chain or checkpoint broken, 130/143 interrupted (SIGINT/SIGTERM).\nDocs: README.md and docs/ \
in the source tree."
)]
pub struct Cli {
    /// Audit log to append this command's entry to, for the audited commands: key,
    /// signing-key, encode, match, risk and audit checkpoint (others record nothing) [env:
    /// BLOOMLINK_AUDIT_LOG; default: bloomlink-audit.jsonl next to the command's main output].
    #[arg(long, global = true, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole story on fictitious data in a temporary directory.
    Demo(demo::DemoArgs),
    /// Create, inspect, rotate and retire linkage keys (key custodian).
    #[command(subcommand)]
    Key(keycmd::KeyCommand),
    /// Create an agency's Ed25519 signing key; print its public key (agency data team).
    #[command(subcommand)]
    SigningKey(signcmd::SigningKeyCommand),
    /// Print the default linkage schema or a schema's digest.
    #[command(subcommand)]
    Schema(schemacmd::SchemaCommand),
    /// Encode an agency export (CSV) into an encoding file (agency data team).
    Encode(encode::EncodeArgs),
    /// Link the encoding files of two or more agencies (linkage unit; takes no key).
    Match(matchcmd::MatchArgs),
    /// Measure a link table against a truth file: precision, recall, F1, cluster exactness, twins.
    Evaluate(evaluate::EvaluateArgs),
    /// Show an encoding file's header, counts and statistics, after checking it.
    Inspect(inspect::InspectArgs),
    /// Attack an export's own encodings (as someone without the key would) and report the
    /// re-identification risk, before the file leaves the agency.
    Risk(risk::RiskArgs),
    /// Verify, checkpoint and report on an audit log (IG lead).
    #[command(subcommand)]
    Audit(auditcmd::AuditCommand),
    /// Generate synthetic health, police and education exports with a truth file.
    Synth(synth::SynthArgs),
}

/// On SIGINT or SIGTERM, lets a command that is putting its outputs in place finish that (and
/// its audit entry), removes the temporary files and directories of outputs not yet in place,
/// then exits 130 or 143 as the default action would: an interrupted run leaves no hidden,
/// possibly complete and signed, encoding behind, nor an encoding without its audit entry (a
/// killed one still can).
fn remove_temporaries_when_interrupted() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        let first = signals.forever().next();
        if let Some(signal) = first {
            let code = 128 + signal;
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            // Outputs being put in place are finished (and audited) first: a few seconds at
            // most, even at national scale.
            let limit = std::time::Duration::from_secs(120);
            if !bloomlink::fsutil::interrupt(limit, auditcmd::completed) {
                // Recorded meanwhile (outputs in place, the entry written): the command ends
                // as it would have, with its own exit code, if it does within 2 s (it only
                // prints). One that goes on (the demo's later steps) or is stuck writing to a
                // full pipe is stopped then, or at once by a second signal (before, the signal
                // and every later one were dropped).
                let grace = std::time::Instant::now();
                while grace.elapsed() < std::time::Duration::from_secs(2)
                    && signals.pending().next().is_none()
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let message = format!(
                    "interrupted by {name} (exit {code}) after its audit entry was written: its \
                     outputs are complete and recorded"
                );
                print_interrupted(code, &message);
                std::process::exit(code);
            }
            bloomlink::fsutil::remove_temporaries();
            // An audited command stopped before its own entry: the interruption is the entry.
            let reason = format!("interrupted by {name} before it finished");
            let recorded = match auditcmd::record_interrupted(&reason) {
                Some(Ok(log)) => format!("; the interruption is recorded in {}", log.display()),
                Some(Err(e)) => {
                    eprintln!(
                        "error: the interruption could not be recorded in the audit log: {e:#}"
                    );
                    String::new()
                }
                None => String::new(),
            };
            // Said in the log, and with --json on stdout, so that a monitor sees why the run
            // ended rather than an empty log.
            let message = format!(
                "interrupted by {name} (exit {code}): temporary files removed; outputs already \
                 in place, if any, are complete and recorded in the audit log{recorded}"
            );
            print_interrupted(code, &message);
            std::process::exit(code);
        }
    });
}

/// Says why the run ended on stderr, and with `--json` on stdout (unless the command has printed
/// its object), so that a monitor sees it rather than an empty log.
fn print_interrupted(code: i32, message: &str) {
    output::clear_progress();
    if take_json_stdout() {
        let object = serde_json::json!({
            "outcome": "interrupted",
            "exit_code": code,
            "error": message,
        });
        if let Ok(text) = output::json_text(&object) {
            let _ = output::write_stdout(&text);
        }
    }
    eprintln!("error: {message}");
}

/// Who prints on stdout of a command run with `--json`, so that stdout gets exactly one JSON
/// object: [`NO_JSON`] (not run with `--json`), [`JSON_DUE`] (nothing printed yet),
/// [`JSON_BY_COMMAND`] (its result or failure, see `output::print`), [`JSON_BY_INTERRUPT`].
static JSON_STDOUT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(NO_JSON);
const NO_JSON: u8 = 0;
const JSON_DUE: u8 = 1;
const JSON_BY_COMMAND: u8 = 2;
const JSON_BY_INTERRUPT: u8 = 3;

/// Declares that the running command prints one JSON object on stdout (an interrupt then prints
/// its own if the command has not printed yet: every command, `match` and `risk` included).
fn expect_json_stdout() {
    JSON_STDOUT.store(JSON_DUE, std::sync::atomic::Ordering::SeqCst);
}

/// For the interrupt handler: takes stdout for its JSON object; false if the command has
/// printed (or the command was not run with `--json`).
fn take_json_stdout() -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    JSON_STDOUT
        .compare_exchange(JSON_DUE, JSON_BY_INTERRUPT, SeqCst, SeqCst)
        .is_ok()
}

/// For the command, before it prints: false if the interrupt handler has printed its object
/// (the command must print nothing more).
pub(crate) fn claim_stdout() -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    match JSON_STDOUT.compare_exchange(JSON_DUE, JSON_BY_COMMAND, SeqCst, SeqCst) {
        Ok(_) => true,
        Err(now) => now != JSON_BY_INTERRUPT,
    }
}

/// Whether a command run with `--json` has printed nothing yet.
fn json_due() -> bool {
    JSON_STDOUT.load(std::sync::atomic::Ordering::SeqCst) == JSON_DUE
}

/// For a command whose JSON the interrupt handler printed: waits for the handler to exit the
/// process (with the interrupt's code), so that nothing more is printed and the exit code is
/// the interrupt's.
pub(crate) fn wait_for_interrupt_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// Parses arguments, runs the command, prints errors; returns the exit code.
pub fn main() -> i32 {
    // Before the handler, so that an interrupt even while the arguments are parsed prints its
    // JSON object (refined once they are).
    if std::env::args_os().any(|a| a == "--json") {
        expect_json_stdout();
    }
    remove_temporaries_when_interrupted();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let log = cli.audit_log.as_deref();
    let json = cli.command.prints_json();
    if json {
        expect_json_stdout();
    } else {
        // `--json` was an option's value, not the flag.
        use std::sync::atomic::Ordering::SeqCst;
        let _ = JSON_STDOUT.compare_exchange(JSON_DUE, NO_JSON, SeqCst, SeqCst);
    }
    let result = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Key(c) => keycmd::run(c, log),
        Command::SigningKey(c) => signcmd::run(c, log),
        Command::Schema(c) => schemacmd::run(c),
        Command::Encode(a) => encode::run(a, log),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Match(a) => matchcmd::run(a, log),
        Command::Risk(a) => risk::run(a, log),
        Command::Audit(c) => auditcmd::run(c),
        Command::Synth(a) => synth::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // With --json, every failure prints one JSON object on stdout, unless the command
            // printed its own (encode's with its counts, inspect's report of a forged file):
            // a monitor or IG script parses stdout whatever happened (before, only encode and
            // match did, and `audit verify --json` on a broken chain printed nothing).
            if json_due() {
                let _ = output::print_json(&failure_json(&e, Default::default()));
            }
            report_error(&e)
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON on stdout (`--json`).
    fn prints_json(&self) -> bool {
        use auditcmd::AuditCommand as A;
        use keycmd::KeyCommand as K;
        use signcmd::SigningKeyCommand as S;
        match self {
            Command::Demo(_) | Command::Schema(_) => false,
            Command::Key(K::New { json, .. } | K::Show { json, .. })
            | Command::Key(K::Rotate { json, .. } | K::Retire { json, .. })
            | Command::SigningKey(S::New { json, .. } | S::Public { json, .. })
            | Command::Audit(A::Verify { json, .. } | A::Checkpoint { json, .. })
            | Command::Audit(A::Report { json, .. }) => *json,
            Command::Encode(a) => a.json,
            Command::Match(a) => a.json,
            Command::Evaluate(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Risk(a) => a.json,
            Command::Synth(a) => a.json,
        }
    }
}

fn report_error(e: &anyhow::Error) -> i32 {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::BrokenPipe {
            return 0;
        }
    }
    let _ = std::io::stdout().flush();
    eprintln!("error: {e:#}");
    exit_code_of(e)
}

/// The exit code for a command's error (see README, "Exit codes").
pub(crate) fn exit_code_of(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<bloomlink::Error>()
        .map(bloomlink::Error::exit_code)
        .unwrap_or(1)
}

/// A path argument with `-` meaning standard output is not supported: outputs are files written
/// atomically. This helper gives the rejects file path next to an output.
/// The stem is kept byte for byte: a name that is not valid UTF-8 keeps its bytes (before, they
/// became U+FFFD, so the rejects file of `-o $'\xff'.clk` was written under another name).
pub(crate) fn sibling(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = path
        .file_stem()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_else(|| "output".into());
    name.push(suffix);
    path.with_file_name(name)
}

/// Warns about hidden temporaries of these outputs left by runs that were killed outright: one
/// may hold a complete encoding that no audit entry records (see `fsutil::abandoned_temporaries`).
pub(crate) fn warn_abandoned(outputs: &[&std::path::Path]) {
    for out in outputs {
        for t in bloomlink::fsutil::abandoned_temporaries(out) {
            eprintln!(
                "warning: {} was left beside {} by a run that was killed (its process has \
                 ended); it is not an output of any finished run and may hold personal data \
                 that no audit entry records: delete it",
                t.display(),
                out.display()
            );
        }
    }
}

/// The `--json` object of a failed command: `outcome`, `exit_code` and `error` added to
/// `extra`, so that a monitor parses stdout whatever happened (README, "Exit codes").
pub(crate) fn failure_json(
    e: &anyhow::Error,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    use bloomlink::Error;
    let outcome = match e.downcast_ref::<Error>() {
        Some(Error::TooManyRejects { .. }) => "too_many_rejects",
        Some(Error::TooManyInvalid { .. }) => "too_many_invalid",
        Some(Error::WrongEncoding { .. }) => "wrong_encoding",
        Some(Error::Key { .. }) => "key_refused",
        Some(Error::OutputExists { .. }) => "output_exists",
        Some(Error::Usage(_)) => "usage",
        _ => "error",
    };
    extra.insert("outcome".into(), outcome.into());
    extra.insert("exit_code".into(), exit_code_of(e).into());
    extra.insert("error".into(), format!("{e:#}").into());
    serde_json::Value::Object(extra)
}
