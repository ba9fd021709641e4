//! The list of unfinished work that the boot-time service resumes: pipelines and training runs
//! register themselves when they start (with the `so8t` arguments that resume them) and
//! unregister when they complete; `so8t service resume` runs [`resume_all`].
//!
//! The registry is `resume.json` in [`registry_dir`]. Writes are atomic (temp file, fsync,
//! rename, fsync of the folder) and serialized between processes by an exclusive `flock` on
//! the sibling `resume.json.lock`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One piece of unfinished work.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// `pipeline` or `train`.
    pub kind: String,
    /// The pipeline or run folder (absolute); also the working folder of the resumed process.
    pub dir: PathBuf,
    /// The `so8t` arguments that resume it, e.g.
    /// `["pipeline", "run", "--config", "/abs/p.yaml", "--resume"]`.
    pub args: Vec<String>,
    /// When it was registered (seconds since the Unix epoch).
    pub registered_unix: u64,
}

/// The file format: a version and the entries.
#[derive(Serialize, Deserialize, Default)]
struct File {
    version: u32,
    entries: Vec<Entry>,
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Reading, locking or creating a file or folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The registry file is not valid JSON of the expected shape.
    #[error(
        "{path}: not a valid resume registry at line {line}, column {column}: {message} \
         (fix the file, or delete it to forget all registered work)"
    )]
    Corrupt {
        /// The registry file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde's message.
        message: String,
    },
    /// The atomic write failed.
    #[error("writing {path}: {message}")]
    Write {
        /// The registry file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The registry's folder: `$SO8T_STATE_DIR`, else `$XDG_STATE_HOME/so8t`, else
/// `$HOME/.local/state/so8t` (relative `XDG_STATE_HOME` values are ignored, as the XDG spec says).
pub fn registry_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SO8T_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return d.join("so8t");
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/so8t")
}

/// The registry file, `resume.json` in [`registry_dir`].
pub fn registry_path() -> PathBuf {
    registry_dir().join("resume.json")
}

/// An exclusive `flock` on `resume.json.lock`, released when dropped (the file is closed).
struct FileLock(#[allow(dead_code)] std::fs::File);

fn lock(path: &Path) -> Result<FileLock, RegistryError> {
    let lock_path = path.with_file_name("resume.json.lock");
    let io = |source| RegistryError::Io {
        path: lock_path.clone(),
        source,
    };
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io)?;
    loop {
        // SAFETY: flock on a file descriptor we own; it stays open as long as the guard lives.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(FileLock(f));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io(e));
        }
    }
}

fn read(path: &Path) -> Result<File, RegistryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(File::default()),
        Err(source) => {
            return Err(RegistryError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if text.trim().is_empty() {
        return Ok(File::default());
    }
    serde_json::from_str(&text).map_err(|e| RegistryError::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

fn write(path: &Path, mut file: File) -> Result<(), RegistryError> {
    file.version = 1;
    let text = serde_json::to_string_pretty(&file).map_err(|e| RegistryError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })? + "\n";
    so8t_model::io::write_string_atomic(path, &text).map_err(|e| RegistryError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Applies `f` to the entries under the lock and writes the result when `f` changed them.
fn update(f: impl FnOnce(&mut Vec<Entry>)) -> Result<(), RegistryError> {
    let path = registry_path();
    let _guard = lock(&path)?;
    let mut file = read(&path)?;
    let before = file.entries.clone();
    f(&mut file.entries);
    if file.entries != before || !path.exists() {
        write(&path, file)?;
    }
    Ok(())
}

/// Adds `e`, replacing an entry with the same `dir`. A relative `dir` is made absolute first.
pub fn register(mut e: Entry) -> Result<(), RegistryError> {
    if e.dir.is_relative() {
        e.dir = std::path::absolute(&e.dir).map_err(|source| RegistryError::Io {
            path: e.dir.clone(),
            source,
        })?;
    }
    update(|entries| {
        entries.retain(|x| x.dir != e.dir);
        entries.push(e);
    })
}

/// Removes the entry of `dir` (absolute or relative to the working folder); no entry is fine.
pub fn unregister(dir: &Path) -> Result<(), RegistryError> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let path = registry_path();
    if !path.exists() {
        return Ok(());
    }
    update(|entries| entries.retain(|x| x.dir != abs && x.dir != dir))
}

/// The registered entries, in registration order.
pub fn list() -> Result<Vec<Entry>, RegistryError> {
    Ok(read(&registry_path())?.entries)
}

/// The order of resumption: pipelines, then training runs, then anything else; oldest first.
fn rank(kind: &str) -> u8 {
    match kind {
        "pipeline" => 0,
        "train" => 1,
        "rl" => 2,
        _ => 3,
    }
}

/// Set by SIGTERM / SIGINT while [`resume_all`] waits for a child.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT handlers that set [`STOP`]; the previous handlers come back on drop.
struct StopSignals(Vec<(libc::c_int, libc::sigaction)>);

impl StopSignals {
    fn install() -> Self {
        STOP.store(false, Ordering::SeqCst);
        let mut old = Vec::new();
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which is
            // async-signal-safe.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut prev: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut prev) == 0 {
                    old.push((sig, prev));
                }
            }
        }
        Self(old)
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for (sig, prev) in &self.0 {
            // SAFETY: restores the handler saved by install.
            unsafe {
                libc::sigaction(*sig, prev, std::ptr::null_mut());
            }
        }
    }
}

/// Runs `exe ARGS…` in `dir` and waits; SIGTERM / SIGINT received meanwhile are passed on to the
/// child (systemd's `KillMode=mixed` signals only the main process) and stop the caller's loop.
fn run_child(exe: &Path, e: &Entry) -> Result<ExitStatus, String> {
    let mut child = Command::new(exe)
        .args(&e.args)
        .current_dir(&e.dir)
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", exe.display()))?;
    let mut forwarded = false;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st),
            Ok(None) => {}
            Err(err) => return Err(format!("waiting for {}: {err}", exe.display())),
        }
        if STOP.load(Ordering::SeqCst) && !forwarded {
            tracing::warn!("stop requested: passing SIGTERM on to PID {}", child.id());
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Resumes every registered entry whose `dir` still exists by running `exe ARGS…` (with `dir`
/// as the working folder), one after the other: pipelines first, then training runs. Entries
/// whose folder vanished are dropped from the registry (kept, and reported, on a dry run) and
/// come back with an error. On a dry run nothing is started and each entry reports success.
/// A SIGTERM or SIGINT is passed on to the running child and stops the loop. Finished work
/// unregisters itself; this function does not unregister entries whose process succeeded.
pub fn resume_all(exe: &Path, dry_run: bool) -> Vec<(Entry, Result<ExitStatus, String>)> {
    use std::os::unix::process::ExitStatusExt;
    let mut entries = match list() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{e}");
            return Vec::new();
        }
    };
    entries.sort_by_key(|e| (rank(&e.kind), e.registered_unix));
    // Two resume services (a user unit and a system unit) must not run the same work twice.
    let _lock = if dry_run {
        None
    } else {
        match crate::lock::PidLock::acquire(
            &registry_dir().join("resume.pid"),
            "so8t service resume",
        ) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("{e}");
                return Vec::new();
            }
        }
    };
    let _signals = (!dry_run).then(StopSignals::install);
    let mut out = Vec::new();
    for e in entries {
        if !e.dir.is_dir() {
            let msg = format!("{} no longer exists", e.dir.display());
            if dry_run {
                tracing::info!("{msg}: would drop it from the registry");
            } else {
                tracing::warn!("{msg}: dropping it from the registry");
                if let Err(err) = unregister(&e.dir) {
                    tracing::warn!("{err}");
                }
            }
            out.push((e, Err(format!("{msg}; dropped from the registry"))));
            continue;
        }
        if STOP.load(Ordering::SeqCst) {
            tracing::warn!("stop requested: not resuming {}", e.dir.display());
            out.push((e, Err("not started: stop requested".into())));
            continue;
        }
        let shown = format!("{} {}", exe.display(), e.args.join(" "));
        if dry_run {
            tracing::info!("would resume {} {}: {shown}", e.kind, e.dir.display());
            out.push((e, Ok(ExitStatus::from_raw(0))));
            continue;
        }
        tracing::info!("resuming {} {}: {shown}", e.kind, e.dir.display());
        let r = run_child(exe, &e);
        match &r {
            Ok(st) if st.success() => tracing::info!("{}: {shown} finished", e.dir.display()),
            Ok(st) => tracing::warn!("{}: {shown} ended with {st}", e.dir.display()),
            Err(err) => tracing::warn!("{}: {err}", e.dir.display()),
        }
        out.push((e, r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_ranked() {
        let mut v = [("train", 1), ("other", 0), ("pipeline", 5), ("pipeline", 2)];
        v.sort_by_key(|(k, t)| (rank(k), *t));
        assert_eq!(
            v,
            [("pipeline", 2), ("pipeline", 5), ("train", 1), ("other", 0)]
        );
    }
}
