//! Printing helpers: stdout that tolerates a closed pipe, progress bars, number formatting.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Writes text to stdout; a closed pipe surfaces as an io::Error the caller maps to exit 0.
pub fn print(text: &str) -> anyhow::Result<()> {
    // With --json, an interrupt may have printed its object already: then nothing more, and
    // the handler exits the process with the interrupt's code.
    if !super::claim_stdout() {
        super::wait_for_interrupt_exit();
    }
    write_stdout(text)
}

/// Writes text to stdout as it is (for the interrupt handler, which has taken stdout).
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    print(&s)
}

/// A value as pretty JSON text with a final line break, to print later with [`print`].
pub fn json_text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// The progress display last shown, so that an interrupt can clear it before saying why the run
/// ended ([`clear_progress`]): the signal handler exits without running destructors.
static SHOWN: std::sync::Mutex<Option<indicatif::WeakProgressBar>> = std::sync::Mutex::new(None);

fn shown(pb: ProgressBar) -> ProgressBar {
    if let Ok(mut s) = SHOWN.lock() {
        *s = Some(pb.downgrade());
    }
    pb
}

/// Clears the progress display, if one is still on the terminal.
pub fn clear_progress() {
    let bar = SHOWN.lock().ok().and_then(|mut s| s.take());
    if let Some(pb) = bar.and_then(|w| w.upgrade()) {
        pb.finish_and_clear();
    }
}

/// A byte-progress bar on stderr when it is a terminal and `quiet` is off; hidden otherwise.
pub fn byte_progress(total: u64, quiet: bool, what: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = shown(ProgressBar::with_draw_target(
        Some(total),
        ProgressDrawTarget::stderr(),
    ));
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

/// A spinner with `what` on stderr for a step without a measure of progress (hidden when
/// `quiet` or when stderr is not a terminal). Dropped unfinished (an error returned past it), it
/// clears itself, so the error is not printed after a stale line.
pub fn spinner(quiet: bool, what: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = shown(
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_finish(indicatif::ProgressFinish::AndClear),
    );
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Percentage of `part` in `whole`, "0.0" when whole is 0.
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

pub use bloomlink::fsutil::csv_field;
