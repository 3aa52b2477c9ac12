//! Writing files safely: atomically (temp file + rename) and, for secrets, owner-only and
//! never over an existing file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How an atomic write treats an existing destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse with [`Error::OutputExists`]; the command offers `--force` to replace it.
    Refuse,
    /// Refuse, and nothing replaces it: keys, public keys and signed checkpoints (a replaced key
    /// file is a lost key).
    Never,
    /// Replace it.
    Replace,
}

impl Overwrite {
    /// The error for an existing `path` that this mode does not replace.
    fn exists(self, path: &Path) -> Error {
        Error::OutputExists {
            path: path.to_path_buf(),
            force: self == Overwrite::Refuse,
        }
    }
}

/// File permissions for a new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Readable by the owner only (0600): keys, mapping files.
    Private,
    /// The process default (umask).
    Default,
}

/// Whether `a` and `b` name the same file, whether or not it exists yet: their directories
/// are resolved (symbolic links included) and the names compared. Hard links to one file
/// under two names are only caught when both exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    fn resolved(p: &Path) -> Option<PathBuf> {
        if let Ok(c) = fs::canonicalize(p) {
            return Some(c);
        }
        let name = p.file_name()?;
        Some(fs::canonicalize(parent_dir(p)).ok()?.join(name))
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (fs::metadata(a), fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (resolved(a), resolved(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Fails early if the output file `path` is a directory, or exists and `overwrite` does not
/// replace it ([`Error::OutputExists`]), or its directory does not exist, so that a long job
/// does not fail only at the end.
pub fn check_output(path: &Path, overwrite: Overwrite) -> Result<()> {
    // A directory, device, pipe or socket (followed through symbolic links): an atomic write
    // would replace the node itself (`/dev/null` with a regular file), whatever `overwrite`
    // says.
    let meta = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        // A name longer than the file system allows, a path through a file, a loop of
        // symbolic links, a directory we may not search: the write would fail the same way,
        // but only at the end of the job.
        Err(e) => return Err(Error::io(path, e)),
    };
    if let Some(m) = meta {
        if m.is_dir() {
            return Err(Error::Usage(format!(
                "{} is a directory: give the path of the file to write",
                path.display()
            )));
        }
        if !m.is_file() {
            return Err(Error::Usage(format!(
                "{} is not a regular file (a device or pipe): outputs are written to a \
                 temporary file and renamed into place, which would replace it; give the path \
                 of a file",
                path.display()
            )));
        }
    }
    // `symlink_metadata`: a symbolic link to nothing is a name taken too (the hard link that
    // puts the output in place would fail on it, at the end of the job).
    if overwrite != Overwrite::Replace && fs::symlink_metadata(path).is_ok() {
        return Err(overwrite.exists(path));
    }
    check_parent(path)
}

/// Checks that the directory `path` would be created in exists (for outputs that are
/// directories themselves, such as `match`'s).
pub fn check_parent(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("directory {} does not exist", dir.display()),
            ),
        ));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn open_new(path: &Path, mode: Mode) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if mode == Mode::Private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = mode;
    opts.open(path)
}

/// Writes `path` atomically: the content goes to a temporary file in the same directory, is
/// flushed to disk, and only then renamed into place. A crash or error leaves no half-written
/// output. With [`Overwrite::Refuse`] or [`Overwrite::Never`] an existing file is never replaced
/// (checked by a hard link, so two concurrent writers cannot both win).
pub fn write_atomic<T>(
    path: &Path,
    overwrite: Overwrite,
    mode: Mode,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    let (prepared, value) = prepare_atomic(path, overwrite, mode, write)?;
    prepared.commit()?;
    Ok(value)
}

/// An output written to its temporary file and flushed to disk, not yet in place: see
/// [`prepare_atomic`]. Dropped without [`Prepared::commit`], its temporary is removed.
pub struct Prepared {
    path: PathBuf,
    temporary: Temporary,
    overwrite: Overwrite,
}

impl Prepared {
    /// Puts the output in place (renamed, or hard-linked when an existing file must not be
    /// replaced).
    pub fn commit(self) -> Result<()> {
        let Prepared {
            path,
            temporary,
            overwrite,
        } = self;
        let tmp = temporary.0.clone().unwrap_or_default();
        match overwrite {
            Overwrite::Replace => fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?,
            Overwrite::Refuse | Overwrite::Never => {
                fs::hard_link(&tmp, &path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        overwrite.exists(&path)
                    } else {
                        Error::io(&path, e)
                    }
                })?;
                let _ = fs::remove_file(&tmp);
            }
        }
        temporary.keep();
        Ok(())
    }
}

/// Puts `outputs` in place, in order. If one cannot be, those already in place are undone: a
/// new output is removed, and a replaced file is put back. A command with several outputs
/// leaves all of them or what was there before (before, a forced run that failed on a later
/// output removed the files its earlier outputs had replaced: last night's encoding was lost).
/// The files replaced are kept until [`Committed::keep`], so that a step after this (the audit
/// entry) can still undo the lot.
pub fn commit_all(outputs: Vec<Prepared>) -> Result<Committed> {
    // Putting outputs in place is a finishing step: an interrupt waits for it and for the
    // audit entry that follows (the caller's, which ends the finishing steps).
    begin_finishing();
    let mut placed = Committed::default();
    for p in outputs {
        let path = p.path.clone();
        let old = if p.overwrite == Overwrite::Replace {
            keep_replaced(&path)?
        } else {
            None
        };
        if let Err(e) = p.commit() {
            if let Some(o) = &old {
                // Still in place (linked aside), or moved aside: put back.
                if fs::symlink_metadata(&path).is_ok() {
                    let _ = fs::remove_file(o);
                } else {
                    let _ = fs::rename(o, &path);
                }
            }
            return Err(e); // `placed` is undone as it is dropped
        }
        placed.0.push(Placed { path, old });
    }
    Ok(placed)
}

/// Outputs put in place (by [`commit_all`], or `match`'s output directory), each with what it
/// replaced (if anything) kept under a hidden name. [`Committed::keep`] keeps them; dropped
/// without it, they are undone: new outputs removed, what they replaced put back.
#[derive(Default)]
#[must_use = "dropped, the outputs are undone"]
pub struct Committed(Vec<Placed>);

struct Placed {
    path: PathBuf,
    /// What the output replaced, under a hidden name.
    old: Option<PathBuf>,
}

impl Committed {
    /// The output (file or directory) just put in place at `path`, replacing what is now at
    /// `old` (if anything).
    pub fn placed(path: PathBuf, old: Option<PathBuf>) -> Committed {
        Committed(vec![Placed { path, old }])
    }

    /// The outputs stay; what they replaced goes.
    pub fn keep(mut self) {
        for p in self.0.drain(..) {
            if let Some(o) = &p.old {
                remove(o);
            }
        }
    }
}

impl Drop for Committed {
    fn drop(&mut self) {
        for p in self.0.drain(..).rev() {
            remove(&p.path);
            if let Some(o) = p.old {
                let _ = fs::rename(o, &p.path);
            }
        }
    }
}

/// Keeps the file at `path` that an output is about to replace under a hidden name
/// (`.NAME.old-PID-N`), so that it can be put back; `None` if nothing is there. A hard link
/// where the file system allows one: the output's name keeps pointing at the old file until the
/// rename replaces it, so readers never find it missing. Otherwise (no hard links on the file
/// system, or another account's file under `protected_hardlinks`) the file is renamed aside,
/// and if that fails too the output is not put in place (before, it was replaced with no way
/// back, and an undo then removed the output and left nothing). A run killed before removing
/// it leaves it for [`abandoned_temporaries`] to report.
fn keep_replaced(path: &Path) -> Result<Option<PathBuf>> {
    // Nothing there, or a directory, which no file output replaces (its rename fails).
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => {}
        _ => return Ok(None),
    }
    let old = parent_dir(path).join(format!(
        ".{}.old-{}-{}",
        temporary_stem(path),
        std::process::id(),
        unique_suffix()
    ));
    if fs::hard_link(path, &old).is_err() {
        fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
    }
    Ok(Some(old))
}

/// The first half of [`write_atomic`]: writes the content to a temporary file in `path`'s
/// directory and flushes it to disk, without putting it in place. A command with several
/// outputs prepares them all, so that a full disk fails it before any is in place, then puts
/// them in place with [`commit_all`].
pub fn prepare_atomic<T>(
    path: &Path,
    overwrite: Overwrite,
    mode: Mode,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<(Prepared, T)> {
    check_output(path, overwrite)?;
    let dir = parent_dir(path);
    let name = temporary_stem(path);
    let mut attempt = 0u32;
    let (guard, file) = loop {
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}-{attempt}",
            std::process::id(),
            unique_suffix()
        ));
        match Temporary::create(tmp, |t| open_new(t, mode)) {
            Ok(made) => break made,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    };
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let value = write(&mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    drop(file);
    let prepared = Prepared {
        path: path.to_path_buf(),
        temporary: guard,
        overwrite,
    };
    Ok((prepared, value))
}

/// Hidden temporaries of `path` left beside it by runs that were killed outright (SIGKILL,
/// power loss), whose process has ended: `.NAME.tmp-PID…` (and `match`'s `.NAME.old-PID`). A
/// killed `encode` can leave a complete encoding there that no audit entry records. Only on
/// Linux, where `/proc` tells whether the process still runs (a temporary of a run going on
/// now is not reported); elsewhere none are.
pub fn abandoned_temporaries(path: &Path) -> Vec<PathBuf> {
    if path.file_name().is_none() || !Path::new("/proc/self").exists() {
        return Vec::new();
    }
    let name = temporary_stem(path);
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            let Some(rest) = [".tmp-", ".old-"].iter().find_map(|tag| {
                file.strip_prefix('.')?
                    .strip_prefix(name.as_str())?
                    .strip_prefix(tag)
            }) else {
                return false;
            };
            let pid = rest.split('-').next().unwrap_or("");
            !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new("/proc").join(pid).exists()
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// The output's name as the temporary file's name starts, cut short so that the temporary's
/// name stays within the 255 bytes file systems allow a name (before, an output named with 220
/// to 255 bytes was refused as "File name too long" at the end of the job, although its own
/// name was fine). The temporary's name need not be the output's: it is unique by process id
/// and counter.
fn temporary_stem(path: &Path) -> String {
    /// Room left for `.`, `.tmp-`, the process id and two counters.
    const MAX_STEM: usize = 180;
    let mut name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    if name.len() > MAX_STEM {
        let mut cut = MAX_STEM;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Temporary files and directories in use, for [`remove_temporaries`].
static TEMPORARIES: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn temporaries() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    TEMPORARIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary file or directory that becomes an output when renamed into place. Until then it
/// is removed when dropped (error paths and panics) and by [`remove_temporaries`] (an
/// interrupted run).
pub struct Temporary(Option<PathBuf>);

impl Temporary {
    /// Registers `path`, which the caller has just created.
    pub fn new(path: PathBuf) -> Temporary {
        temporaries().push(path.clone());
        Temporary(Some(path))
    }

    /// Creates `path` with `make` and registers it, holding the registry meanwhile: an
    /// interrupt that has removed the temporaries keeps the registry locked, so this waits (for
    /// the exit) instead of creating a file that nobody removes (before, one SIGINT in 16 during
    /// a 1M-row encode left a `.NAME.tmp-PID` behind).
    pub fn create<T>(
        path: PathBuf,
        make: impl FnOnce(&Path) -> std::io::Result<T>,
    ) -> std::io::Result<(Temporary, T)> {
        let mut list = temporaries();
        let made = make(&path)?;
        list.push(path.clone());
        Ok((Temporary(Some(path)), made))
    }

    /// The temporary was renamed into place: it is the output now, keep it.
    pub fn keep(mut self) {
        if let Some(p) = self.0.take() {
            unregister(&p);
        }
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove(&p);
            unregister(&p);
        }
    }
}

fn unregister(path: &Path) {
    temporaries().retain(|p| p != path);
}

fn remove(path: &Path) {
    if path.is_dir() {
        let _ = fs::remove_dir_all(path);
    } else {
        let _ = fs::remove_file(path);
    }
}

/// Where the command is, for an interrupt: working, finishing (putting its outputs in place
/// and recording them in the audit log, which an interrupt waits for), or stopped by an
/// interrupt (after which it may not begin finishing). One lock for the three, so that an
/// interrupt and the command's first finishing step cannot both go ahead (before, a flag was
/// read by one and set by the other, and 27 of 1,100 SIGINTs in a review's stress run left an
/// output in place with an "interrupted" entry, or a hidden copy of the file it replaced).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Working,
    Finishing,
    Interrupted,
}

type PhaseLock = std::sync::Mutex<Phase>;

static PHASE: PhaseLock = std::sync::Mutex::new(Phase::Working);

fn lock(phase: &PhaseLock) -> std::sync::MutexGuard<'_, Phase> {
    phase.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the finishing steps (a no-op if they have started), which last until
/// [`end_finishing`]. After an interrupt it does not return: the handler exits the process.
pub fn begin_finishing() {
    begin_in(&PHASE);
}

/// Begins the finishing steps unless they have begun, and when dropped ends them if it began
/// them: for a step that is finishing by itself (an audit entry) and also part of a caller's
/// longer one (outputs, entry, and removing them again if the entry fails).
pub fn finishing() -> Finishing {
    Finishing(begin_in(&PHASE))
}

/// See [`finishing`].
pub struct Finishing(bool);

impl Drop for Finishing {
    fn drop(&mut self) {
        if self.0 {
            end_finishing();
        }
    }
}

/// Whether this call began the finishing steps (false if they had begun).
fn begin_in(phase: &PhaseLock) -> bool {
    let mut p = lock(phase);
    if *p == Phase::Interrupted {
        drop(p);
        loop {
            std::thread::park();
        }
    }
    let began = *p == Phase::Working;
    *p = Phase::Finishing;
    began
}

/// Ends the finishing steps (the audit entry is written).
pub fn end_finishing() {
    end_in(&PHASE)
}

fn end_in(phase: &PhaseLock) {
    let mut p = lock(phase);
    if *p == Phase::Finishing {
        *p = Phase::Working;
    }
}

/// Ends the finishing steps when dropped, on every path (errors, panics).
pub struct FinishingScope;

impl Drop for FinishingScope {
    fn drop(&mut self) {
        end_finishing();
    }
}

/// For a signal handler: waits, at most `limit`, while the command is finishing, then stops it
/// from beginning again; returns false instead, stopping nothing, if the command has `done` by
/// then (its outputs and audit entry are in place: it ends as it would have).
pub fn interrupt(limit: std::time::Duration, done: impl Fn() -> bool) -> bool {
    interrupt_in(&PHASE, limit, done)
}

fn interrupt_in(phase: &PhaseLock, limit: std::time::Duration, done: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        let mut p = lock(phase);
        if *p == Phase::Finishing && start.elapsed() < limit {
            drop(p);
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        }
        if done() {
            return false;
        }
        *p = Phase::Interrupted;
        return true;
    }
}

/// Creates the file `path` inside a registered temporary directory while holding the registry,
/// as [`Temporary::create`] does: after an interrupt has removed the temporaries this waits (for
/// the exit) instead of creating a file in a directory being removed (before, 7 of 367
/// interrupted `match` runs in a review left their hidden output directory behind).
pub fn create_in_temporary(path: &Path) -> std::io::Result<File> {
    let _list = temporaries();
    open_new(path, Mode::Private)
}

/// Reads a small input file (column map, schema, trust file) whole, refusing a device (such
/// as `/dev/zero`, read forever), a directory or a socket, and more than `max` bytes; a named
/// pipe is read to that bound.
pub fn read_small_file(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !is_fifo(&meta) {
        refuse_irregular(path, &meta)?;
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("is larger than {max} bytes: too large to be {what}"),
            ),
        ));
    }
    Ok(bytes)
}

/// Whether `meta` is a named pipe's (`--key <(…)` passes a secret through one).
pub fn is_fifo(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_fifo()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Refuses an input path that is not a regular file (followed through symbolic links): a
/// directory, device, pipe or socket.
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    refuse_irregular(path, &meta)
}

/// [`check_regular`] with `path`'s metadata at hand.
fn refuse_irregular(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "a device, pipe or socket"
    };
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is {kind}, not a regular file"),
        ),
    ))
}

/// Creates the directory `path`, owner-only (0700): for an output directory of files that are
/// themselves owner-only.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)
}

/// Removes every temporary file and directory in use. For a signal handler that then exits:
/// an interrupted run leaves nothing behind but what it had finished (the registry stays
/// locked, so no new temporary is registered after this).
pub fn remove_temporaries() {
    let list = temporaries();
    remove_all(&list);
    std::mem::forget(list);
}

fn remove_all(list: &[PathBuf]) {
    for p in list {
        remove(p);
    }
}

/// Writes a small text file atomically; see [`write_atomic`].
pub fn write_text_atomic(path: &Path, overwrite: Overwrite, mode: Mode, text: &str) -> Result<()> {
    prepare_text(path, overwrite, mode, text)?.commit()
}

/// [`write_text_atomic`] up to the file's being put in place; see [`prepare_atomic`].
pub fn prepare_text(path: &Path, overwrite: Overwrite, mode: Mode, text: &str) -> Result<Prepared> {
    let (prepared, ()) = prepare_atomic(path, overwrite, mode, |w| {
        w.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
    })?;
    Ok(prepared)
}

/// True if the file's permissions let group or others read or write it (always false off Unix).
pub fn is_group_or_world_accessible(meta: &fs::Metadata) -> Option<u32> {
    mode_if_any(meta, 0o777, 0o077)
}

/// The permission bits (`Some`) if others (not only the group) may write to `meta`'s file or
/// directory.
pub fn is_world_writable(meta: &fs::Metadata) -> Option<u32> {
    mode_if_any(meta, 0o7777, 0o002)
}

/// `meta`'s permission bits under `shown` if any of `bits` is set (always `None` off Unix).
fn mode_if_any(meta: &fs::Metadata, shown: u32, bits: u32) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & shown;
        (mode & bits != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = (meta, shown, bits);
        None
    }
}

/// A field of a CSV file we write, quoted when it holds a comma, quote or line break.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an interrupted run removes: the registered temporaries of outputs not yet in place
    /// (files and directories), not an output already renamed into place, nor anything once
    /// the write is done.
    #[test]
    fn interrupted_writes_leave_no_temporaries() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join(".out.clk.tmp-1");
        std::fs::write(&file, b"partial").unwrap();
        let dir = d.path().join(".links.tmp-1");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("links.csv"), b"partial").unwrap();
        let kept = d.path().join("done.clk");
        std::fs::write(&kept, b"complete").unwrap();
        let (f, g, k) = (
            Temporary::new(file.clone()),
            Temporary::new(dir.clone()),
            Temporary::new(kept.clone()),
        );
        k.keep();
        let ours: Vec<PathBuf> = temporaries()
            .iter()
            .filter(|p| p.starts_with(d.path()))
            .cloned()
            .collect();
        assert_eq!(ours, [file.clone(), dir.clone()]);
        remove_all(&ours);
        assert!(!file.exists() && !dir.exists() && kept.exists());
        // Dropped (an error path): removed and forgotten.
        std::fs::write(&file, b"again").unwrap();
        drop(f);
        assert!(!file.exists());
        drop(g);
        assert!(temporaries().iter().all(|p| !p.starts_with(d.path())));
        // A whole atomic write registers nothing that outlives it.
        let out = d.path().join("x.txt");
        write_text_atomic(&out, Overwrite::Refuse, Mode::Default, "x").unwrap();
        assert!(temporaries().iter().all(|p| !p.starts_with(d.path())));
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "{left:?}"); // done.clk and x.txt
    }

    /// Several outputs go in place together or not at all, and a failure on a later one puts
    /// back the files the earlier ones had replaced (`--force`), leaving no hidden files.
    #[test]
    fn a_failed_commit_puts_replaced_files_back() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        std::fs::write(&a, "old a").unwrap();
        let prepare = |path: &Path, text: &'static str| {
            prepare_atomic(path, Overwrite::Replace, Mode::Default, |w| {
                w.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
            })
            .unwrap()
            .0
        };
        let outputs = vec![
            prepare(&a, "new a"),
            prepare(&c, "new c"),
            prepare(&b, "new b"),
        ];
        // `b` cannot be put in place: a directory with something in it took its name.
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("x"), "x").unwrap();
        assert!(commit_all(outputs).is_err());
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert!(!c.exists(), "a new output is removed again");
        let names = |d: &Path| {
            let mut n: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(d.path()), ["a", "b"]);
        // Once every output can go in place, all do.
        std::fs::remove_dir_all(&b).unwrap();
        std::fs::write(&b, "old b").unwrap();
        let placed = commit_all(vec![prepare(&a, "new a"), prepare(&b, "new b")]).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new b");
        // Until kept, the files replaced are there to go back to (a later step can fail: the
        // audit entry), and dropped, the outputs are undone.
        assert_eq!(names(d.path()).len(), 4);
        drop(placed);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "old b");
        assert_eq!(names(d.path()), ["a", "b"]);
        commit_all(vec![
            prepare(&a, "new a"),
            prepare(&b, "new b"),
            prepare(&c, "new c"),
        ])
        .unwrap()
        .keep();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "new c");
        assert_eq!(names(d.path()), ["a", "b", "c"]);
    }

    /// `match`'s output directory: dropped without being kept, the new one goes and the one it
    /// replaced comes back; kept, the old one goes.
    #[test]
    fn a_directory_put_in_place_is_undone_unless_kept() {
        let d = tempfile::tempdir().unwrap();
        let (out, old) = (d.path().join("out"), d.path().join(".out.old-1"));
        for (kept, replaced) in [(false, true), (true, true), (false, false)] {
            let _ = fs::remove_dir_all(&out);
            if replaced {
                fs::create_dir(&old).unwrap();
                fs::write(old.join("links.csv"), "old").unwrap();
            }
            fs::create_dir(&out).unwrap();
            fs::write(out.join("links.csv"), "new").unwrap();
            let placed = Committed::placed(out.clone(), replaced.then(|| old.clone()));
            if kept {
                placed.keep();
            } else {
                drop(placed);
            }
            let now = fs::read_to_string(out.join("links.csv")).ok();
            let want = match (kept, replaced) {
                (true, _) => Some("new"),
                (false, true) => Some("old"),
                (false, false) => None,
            };
            assert_eq!(now.as_deref(), want, "kept {kept}, replaced {replaced}");
            assert!(!old.exists());
        }
    }

    /// An interrupt waits while a command finishes putting its outputs in place, and only then;
    /// a command that has finished is not stopped; once stopped, a command cannot begin
    /// finishing. (On a phase of its own: the process's is shared by the other tests.)
    #[test]
    fn an_interrupt_waits_for_the_finishing_steps() {
        use std::time::{Duration, Instant};
        static TEST_PHASE: PhaseLock = std::sync::Mutex::new(Phase::Working);
        // Finished meanwhile: nothing is stopped.
        begin_in(&TEST_PHASE);
        let ended = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            end_in(&TEST_PHASE);
        });
        let t = Instant::now();
        assert!(!interrupt_in(&TEST_PHASE, Duration::from_secs(30), || true));
        assert!(t.elapsed() >= Duration::from_millis(100));
        ended.join().unwrap();
        assert!(*lock(&TEST_PHASE) == Phase::Working);
        // Not finished: stopped, and a later start of the finishing steps never returns.
        let t = Instant::now();
        assert!(interrupt_in(&TEST_PHASE, Duration::from_secs(30), || false));
        assert!(t.elapsed() < Duration::from_secs(1), "nothing to wait for");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            begin_in(&TEST_PHASE);
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
}
