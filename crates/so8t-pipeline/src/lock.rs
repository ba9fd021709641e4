//! One process per directory: a lock file holding the owner's PID. A lock whose process is gone
//! (a crash, a power cut, SIGKILL) is stale and is taken over; a live owner is a clear refusal.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error("{path}: {what} is already running here (PID {pid}); stop it first or use another directory")]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the lock guards (e.g. "a pipeline").
        what: String,
        /// The owner.
        pid: u32,
    },
    /// The lock file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// True when a process with this PID exists (signal 0 probes without sending anything).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The PID written in a lock or PID file, if it holds one.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A held lock; the file is removed when it is dropped.
#[derive(Debug)]
pub struct PidLock {
    path: PathBuf,
}

impl PidLock {
    /// Takes the lock at `path` for this process. `what` names the guarded job in the refusal.
    /// A lock file of a dead process (or an unreadable one) is replaced.
    pub fn acquire(path: &Path, what: &str) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    return Ok(Self {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match read_pid(path) {
                    Some(pid) if pid == std::process::id() => {
                        return Ok(Self {
                            path: path.to_path_buf(),
                        })
                    }
                    Some(pid) if pid_alive(pid) => {
                        return Err(LockError::Held {
                            path: path.to_path_buf(),
                            what: what.to_string(),
                            pid,
                        })
                    }
                    _ => {
                        tracing::warn!("{}: removing a stale lock", path.display());
                        match std::fs::remove_file(path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io(e)),
                        }
                    }
                },
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other(
            "the lock file keeps changing; another process is racing for it",
        )))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        if read_pid(&self.path) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_by_live_owner_is_refused_and_stale_is_taken() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        // A live process other than us: PID 1 always exists.
        std::fs::write(&p, "1\n").unwrap();
        let e = PidLock::acquire(&p, "a pipeline").unwrap_err();
        assert!(e.to_string().contains("PID 1"), "{e}");
        // A dead PID: far above any pid_max.
        std::fs::write(&p, "2147483000\n").unwrap();
        let l = PidLock::acquire(&p, "a pipeline").unwrap();
        assert_eq!(read_pid(&p), Some(std::process::id()));
        drop(l);
        assert!(!p.exists());
        // Garbage is stale too.
        std::fs::write(&p, "not a pid").unwrap();
        let _l = PidLock::acquire(&p, "a pipeline").unwrap();
    }
}
