//! Size-rotated log files: `watch.log` is appended to until the next write would push it past
//! `max_bytes`; then `watch.log.{keep-1}` → `watch.log.{keep}`, …, `watch.log` → `watch.log.1`
//! (the oldest dropped) and a fresh `watch.log` is started. Lines get an RFC 3339 UTC timestamp.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// An append-only log file that rotates by size and keeps at most `keep` old files.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    keep: usize,
    redirect_stdio: bool,
}

impl RotatingLog {
    /// Opens (or creates) `path` for appending. A file already larger than `max_bytes` is rotated
    /// on the first write. `keep` is the number of old files (`path.1` … `path.{keep}`) kept;
    /// with `keep == 0` the file is simply started afresh.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            max_bytes: max_bytes.max(1),
            keep,
            redirect_stdio: false,
        })
    }

    /// The current log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `n`-th old file (`path.n`).
    pub fn rotated_path(&self, n: usize) -> PathBuf {
        rotated(&self.path, n)
    }

    /// Points this process's stdout and stderr at the current log file, now and after every
    /// rotation (for a daemon whose stray output must follow the log rather than stay attached to
    /// an old, renamed file). Bytes written that way count towards `max_bytes`.
    pub fn redirect_stdio(&mut self) -> io::Result<()> {
        self.redirect_stdio = true;
        self.apply_redirect()
    }

    /// Writes one line, `2026-01-02T03:04:05.678Z msg`. Errors (a full disk) are ignored: a
    /// log must never stop the work it records.
    pub fn line(&mut self, msg: &str) {
        let text = format!("{} {}\n", rfc3339_utc(SystemTime::now()), msg.trim_end());
        let _ = self.write_all(text.as_bytes());
        let _ = self.flush();
    }

    /// Renames the current file to `path.1` (shifting older ones, dropping `path.{keep}`) and
    /// starts a fresh one.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            remove_if_exists(&self.path)?;
        } else {
            remove_if_exists(&rotated(&self.path, self.keep))?;
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            if self.path.exists() {
                std::fs::rename(&self.path, rotated(&self.path, 1))?;
            }
        }
        self.file = open_append(&self.path)?;
        if self.redirect_stdio {
            self.apply_redirect()?;
        }
        Ok(())
    }

    fn apply_redirect(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            // SAFETY: dup2 on a file descriptor we own onto the standard descriptors.
            if unsafe { libc::dup2(self.file.as_raw_fd(), target) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Write for RotatingLog {
    /// Writes all of `buf` to one file: rotates first when it would push the file past
    /// `max_bytes` (a file that is still empty takes it whatever its size).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The file's real length, so output written through redirected stdio counts too.
        let size = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        if size > 0 && size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last `n` lines of `path` (reading at most its last 64 KiB, then the rotated `path.1`
/// when the current file holds fewer lines).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    fn tail_of(path: &Path) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(64 << 10);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&buf);
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // a partial first line
        }
        lines
    }
    let mut lines = tail_of(path);
    if lines.len() < n {
        let mut old = path.as_os_str().to_os_string();
        old.push(".1");
        let mut older = tail_of(Path::new(&old));
        older.append(&mut lines);
        lines = older;
    }
    let skip = lines.len().saturating_sub(n);
    lines.split_off(skip)
}

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z` (times before 1970
/// print as the epoch).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = so8t_model::civil(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // last second of 2025
        assert_eq!(rfc3339_utc(t), "2025-12-31T23:59:59.000Z");
    }

    #[test]
    fn rotates_by_size_and_keeps_at_most_keep_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.log");
        let mut log = RotatingLog::open(&p, 100, 3).unwrap();
        let line = [b'x'; 39];
        let write = |log: &mut RotatingLog| log.write_all(&[&line[..], b"\n"].concat()).unwrap();
        // 40-byte lines, 100-byte limit: two lines per file.
        for _ in 0..2 {
            write(&mut log);
        }
        assert!(!log.rotated_path(1).exists());
        write(&mut log); // third line rotates
        assert!(log.rotated_path(1).exists());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 40);
        for _ in 0..20 {
            write(&mut log);
        }
        for n in 1..=3 {
            assert_eq!(std::fs::metadata(log.rotated_path(n)).unwrap().len(), 80);
        }
        assert!(!log.rotated_path(4).exists());
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        let files = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(files, 4, "the current file and keep=3 old ones");
    }

    #[test]
    fn keep_zero_truncates_and_line_adds_timestamp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.log");
        let mut log = RotatingLog::open(&p, 64, 0).unwrap();
        for i in 0..10 {
            log.line(&format!("event {i}"));
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let text = std::fs::read_to_string(&p).unwrap();
        let last = text.lines().last().unwrap();
        assert!(last.ends_with("Z event 9"), "{last}");
        assert_eq!(&last[4..5], "-");
        assert_eq!(&last[10..11], "T");
    }
}
