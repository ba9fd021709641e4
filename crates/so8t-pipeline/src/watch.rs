//! The watch daemon: polls a folder of training runs and runs the post-training workflow exactly
//! once per finished run (a marker file in the run records it), with a PID file, size-rotated
//! logs, retries with exponential backoff and a graceful stop on SIGINT/SIGTERM.
//!
//! Layout under the watched folder `RUNS`:
//! - `RUNS/.so8t-watch/watch.pid`: the watcher's PID (a [`PidLock`]; removed on exit).
//! - `RUNS/.so8t-watch/watch.log` (+ `.1` … `.N`): one timestamped line per event.
//! - `RUN/.so8t-watch.json`: the [`Marker`] of each run the watcher has taken up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::lock::{pid_alive, read_pid, LockError, PidLock};
use crate::logrotate::RotatingLog;

/// The watcher's state folder inside the watched folder.
pub const STATE_DIR: &str = ".so8t-watch";
/// The marker file inside each run the watcher has taken up.
pub const MARKER_FILE: &str = ".so8t-watch.json";
/// A run's lock while its workflow runs (guards against two watchers of nested folders).
const RUN_LOCK_FILE: &str = ".so8t-watch.lock";
/// How often sleeps check the stop flag.
const SLICE: Duration = Duration::from_millis(50);

/// Why watching (or stopping a watcher) failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watched folder is missing.
    #[error("{0}: not a folder (expected a folder of training runs made by `so8t train --run-dir`, or one such run)")]
    NotAFolder(PathBuf),
    /// Another watcher holds the folder, or the PID file could not be written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A marker file could not be written.
    #[error("{path}: cannot write the watch marker: {message}")]
    Marker {
        /// The marker file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// SIGTERM could not be sent.
    #[error("cannot signal the watcher (PID {pid}, from {pid_file}): {source}")]
    Signal {
        /// The watcher.
        pid: u32,
        /// Its PID file.
        pid_file: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The watcher did not exit in time.
    #[error("the watcher (PID {pid}) got SIGTERM but still runs after {waited:?}: it finishes the current run's workflow first; check again with --status")]
    StopTimeout {
        /// The watcher.
        pid: u32,
        /// How long `stop` waited.
        waited: Duration,
    },
}

/// What a marker says about a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkerStatus {
    /// The workflow is running (or its watcher died while it ran: then it is retried).
    Running,
    /// The workflow succeeded; the run is never processed again.
    Done,
    /// Every attempt failed; retried only with `retry_failed`.
    Failed,
}

/// `RUN/.so8t-watch.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// Running, done or failed.
    pub status: MarkerStatus,
    /// Workflow attempts made so far.
    pub attempts: u32,
    /// When the watcher took the run up (seconds since the Unix epoch).
    pub started_unix: u64,
    /// When it finished (`None` while running).
    pub finished_unix: Option<u64>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// The watcher's PID.
    pub watcher_pid: u32,
}

/// Settings of [`watch`].
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The watched folder: a run itself, or a folder of runs (one level deep).
    pub runs: PathBuf,
    /// Time between polls.
    pub interval: Duration,
    /// Extra attempts after a failed one (`3`: up to four attempts).
    pub retries: u32,
    /// The wait before the first retry, doubled before each next one.
    pub backoff: Duration,
    /// One poll, then return.
    pub once: bool,
    /// Also take up runs whose marker says failed (once per [`watch`] call).
    pub retry_failed: bool,
    /// The log file is rotated before it grows past this.
    pub log_max_bytes: u64,
    /// Rotated log files kept.
    pub log_keep: usize,
    /// Set (by a signal handler, see [`install_stop_signals`]) to end the watch.
    pub stop: Arc<AtomicBool>,
    /// Point stdout/stderr at the log file (for a detached daemon).
    pub redirect_stdio: bool,
}

impl WatchOptions {
    /// The defaults for `runs`: 300 s interval, 3 retries from 30 s, 10 MiB logs, 5 kept.
    pub fn new(runs: impl Into<PathBuf>) -> Self {
        Self {
            runs: runs.into(),
            interval: Duration::from_secs(300),
            retries: 3,
            backoff: Duration::from_secs(30),
            once: false,
            retry_failed: false,
            log_max_bytes: 10 << 20,
            log_keep: 5,
            stop: Arc::new(AtomicBool::new(false)),
            redirect_stdio: false,
        }
    }
}

/// What a [`watch`] call did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchSummary {
    /// Polls made.
    pub polls: u64,
    /// Runs whose workflow succeeded.
    pub done: Vec<PathBuf>,
    /// Runs whose every attempt failed.
    pub failed: Vec<PathBuf>,
    /// Runs left `running` because a stop came during their retries.
    pub interrupted: Vec<PathBuf>,
}

/// A run with a marker, for [`WatchStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct ProcessedRun {
    /// The run folder.
    pub run: PathBuf,
    /// Its marker.
    pub marker: Marker,
}

/// The state of a watched folder (`so8t watch --status`).
#[derive(Debug, Clone, Serialize)]
pub struct WatchStatus {
    /// The watched folder.
    pub runs_dir: PathBuf,
    /// The PID file.
    pub pid_file: PathBuf,
    /// The PID in it, when it exists.
    pub pid: Option<u32>,
    /// True when that process is alive.
    pub alive: bool,
    /// The current log file.
    pub log_file: PathBuf,
    /// Run folders found (those with `session.json`).
    pub runs: Vec<PathBuf>,
    /// Finished runs among them.
    pub finished: Vec<PathBuf>,
    /// Runs with a marker.
    pub processed: Vec<ProcessedRun>,
    /// Finished runs without a marker (the next poll takes them up).
    pub pending: Vec<PathBuf>,
    /// The last lines of the log.
    pub log_tail: Vec<String>,
}

/// What [`stop`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StopOutcome {
    /// The watcher got SIGTERM and exited (its PID file is gone).
    Stopped {
        /// Its PID.
        pid: u32,
    },
    /// No PID file: nothing to stop.
    NotRunning,
    /// The PID file named a dead process (or held no PID); it was removed.
    StaleRemoved {
        /// The PID it held, if any.
        pid: Option<u32>,
    },
}

/// `RUNS/.so8t-watch/watch.pid`.
pub fn pid_path(runs: &Path) -> PathBuf {
    runs.join(STATE_DIR).join("watch.pid")
}

/// `RUNS/.so8t-watch/watch.log`.
pub fn log_path(runs: &Path) -> PathBuf {
    runs.join(STATE_DIR).join("watch.log")
}

/// `RUN/.so8t-watch.json`.
pub fn marker_path(run: &Path) -> PathBuf {
    run.join(MARKER_FILE)
}

/// Registers SIGINT and SIGTERM to set the returned flag. A second signal of either kind ends
/// the process at once (exit status 1).
pub fn install_stop_signals() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

/// Candidate run folders: `dir` itself and its direct subfolders (hidden ones skipped) that hold
/// a `session.json`, sorted.
pub fn find_runs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if dir.join("session.json").is_file() {
        out.push(dir.to_path_buf());
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.join("session.json").is_file())
            .collect();
        subs.sort();
        out.extend(subs);
    }
    out
}

/// True when `run` is a finished training run: `session.json` says `"status": "completed"`, a
/// `checkpoints/step-*-final/manifest.json` exists and `final/bake.json` exists.
pub fn is_finished(run: &Path) -> bool {
    // Only the status is read: any session file that says completed will do.
    let completed = std::fs::read_to_string(run.join(so8t_store::Session::JSON_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("completed"));
    if !completed || !run.join("final").join("bake.json").is_file() {
        return false;
    }
    std::fs::read_dir(run.join("checkpoints")).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("step-")
                && name.ends_with("-final")
                && e.path().join("manifest.json").is_file()
        })
    })
}

/// The finished runs in `dir` (itself or its direct subfolders), sorted.
pub fn finished_runs(dir: &Path) -> Vec<PathBuf> {
    find_runs(dir)
        .into_iter()
        .filter(|r| is_finished(r))
        .collect()
}

/// The run's marker: `Ok(None)` without one, `Err` with a description when it is unreadable.
pub fn read_marker(run: &Path) -> Result<Option<Marker>, String> {
    let path = marker_path(run);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not a watch marker: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_marker(run: &Path, m: &Marker) -> Result<(), WatchError> {
    let path = marker_path(run);
    let text = serde_json::to_string_pretty(m).map_err(|e| WatchError::Marker {
        path: path.clone(),
        message: e.to_string(),
    })?;
    so8t_model::io::write_string_atomic(&path, &format!("{text}\n")).map_err(|e| {
        WatchError::Marker {
            path,
            message: e.to_string(),
        }
    })
}

fn now_unix() -> u64 {
    (so8t_store::now_ms() / 1000) as u64
}

/// Sleeps `d` in short slices; returns false when `stop` was set.
pub(crate) fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep(SLICE.min(end - now));
    }
}

/// Whether this watcher takes `run` up now, judged by its marker.
enum Decision {
    Take(Option<Marker>),
    Skip,
    BadMarker(String),
}

fn decide(run: &Path, o: &WatchOptions, attempted: &HashSet<PathBuf>) -> Decision {
    let me = std::process::id();
    match read_marker(run) {
        Err(e) => Decision::BadMarker(e),
        Ok(None) => Decision::Take(None),
        Ok(Some(m)) => {
            let take = match m.status {
                MarkerStatus::Done => false,
                MarkerStatus::Failed => o.retry_failed && !attempted.contains(run),
                // A running marker of a dead watcher (or of an earlier process that had our PID)
                // is a crash mid-workflow: the workflow is resumable, so run it again.
                MarkerStatus::Running => {
                    !attempted.contains(run) && (m.watcher_pid == me || !pid_alive(m.watcher_pid))
                }
            };
            if take {
                Decision::Take(Some(m))
            } else {
                Decision::Skip
            }
        }
    }
}

/// Watches `o.runs`: takes the PID lock `RUNS/.so8t-watch/watch.pid` (a second watcher of the
/// same folder is refused), then polls every `o.interval` and runs `workflow(run)` once for each
/// newly finished run, retrying with backoff, recording the outcome in the run's marker and each
/// event in `RUNS/.so8t-watch/watch.log`. Returns when `o.stop` is set (or after one poll with
/// `o.once`); the PID file is removed then.
pub fn watch(
    o: &WatchOptions,
    workflow: &mut dyn FnMut(&Path) -> Result<(), String>,
) -> Result<WatchSummary, WatchError> {
    if !o.runs.is_dir() {
        return Err(WatchError::NotAFolder(o.runs.clone()));
    }
    let lock = PidLock::acquire(&pid_path(&o.runs), "so8t watch")?;
    let lp = log_path(&o.runs);
    let mut log =
        RotatingLog::open(&lp, o.log_max_bytes, o.log_keep).map_err(|source| WatchError::Io {
            path: lp.clone(),
            source,
        })?;
    if o.redirect_stdio {
        log.redirect_stdio().map_err(|source| WatchError::Io {
            path: lp.clone(),
            source,
        })?;
    }
    log.line(&format!(
        "watch started: PID {}, folder {}, interval {:?}, retries {}",
        std::process::id(),
        o.runs.display(),
        o.interval,
        o.retries
    ));
    let mut summary = WatchSummary::default();
    let mut attempted = HashSet::new();
    let mut bad_markers = HashSet::new();
    loop {
        summary.polls += 1;
        poll(
            o,
            workflow,
            &mut log,
            &mut summary,
            &mut attempted,
            &mut bad_markers,
        );
        if o.once || !sleep_unless_stopped(o.interval, &o.stop) {
            break;
        }
    }
    let why = if o.stop.load(Ordering::SeqCst) {
        "stop requested"
    } else {
        "one poll done"
    };
    log.line(&format!(
        "watch stopped ({why}): {} done, {} failed",
        summary.done.len(),
        summary.failed.len()
    ));
    drop(lock);
    Ok(summary)
}

fn poll(
    o: &WatchOptions,
    workflow: &mut dyn FnMut(&Path) -> Result<(), String>,
    log: &mut RotatingLog,
    summary: &mut WatchSummary,
    attempted: &mut HashSet<PathBuf>,
    bad_markers: &mut HashSet<PathBuf>,
) {
    for run in finished_runs(&o.runs) {
        if o.stop.load(Ordering::SeqCst) {
            return;
        }
        let previous = match decide(&run, o, attempted) {
            Decision::Skip => continue,
            Decision::BadMarker(e) => {
                if bad_markers.insert(run.clone()) {
                    log.line(&format!("skipping {}: {e}", run.display()));
                }
                continue;
            }
            Decision::Take(m) => m,
        };
        // Guards against a second watcher of a nested folder taking the same run.
        let run_lock = match PidLock::acquire(&run.join(RUN_LOCK_FILE), "so8t watch") {
            Ok(l) => l,
            Err(e) => {
                log.line(&format!("skipping {} for now: {e}", run.display()));
                continue;
            }
        };
        attempted.insert(run.clone());
        // A marker that cannot be written (a read-only run folder, a full disk) skips the run
        // for this watcher's lifetime rather than risk running its workflow twice.
        if let Err(e) = process_run(o, &run, previous, workflow, log, summary) {
            log.line(&format!("skipping {}: {e}", run.display()));
        }
        drop(run_lock);
    }
}

fn process_run(
    o: &WatchOptions,
    run: &Path,
    previous: Option<Marker>,
    workflow: &mut dyn FnMut(&Path) -> Result<(), String>,
    log: &mut RotatingLog,
    summary: &mut WatchSummary,
) -> Result<(), WatchError> {
    match &previous {
        None => log.line(&format!("finished run found: {}", run.display())),
        Some(m) => log.line(&format!(
            "taking up {} again (its marker said {:?}, watcher PID {})",
            run.display(),
            m.status,
            m.watcher_pid
        )),
    }
    let mut marker = Marker {
        status: MarkerStatus::Running,
        attempts: previous.as_ref().map_or(0, |m| m.attempts),
        started_unix: now_unix(),
        finished_unix: None,
        error: None,
        watcher_pid: std::process::id(),
    };
    write_marker(run, &marker)?;
    let mut wait = o.backoff;
    for attempt in 0..=o.retries {
        if attempt > 0 {
            log.line(&format!(
                "retrying {} in {:?} (retry {attempt} of {})",
                run.display(),
                wait,
                o.retries
            ));
            if !sleep_unless_stopped(wait, &o.stop) {
                log.line(&format!(
                    "stop requested: {} left marked running; the next watcher retries it",
                    run.display()
                ));
                summary.interrupted.push(run.to_path_buf());
                return Ok(());
            }
            wait = wait.saturating_mul(2);
        }
        marker.attempts += 1;
        write_marker(run, &marker)?;
        log.line(&format!(
            "workflow started for {} (attempt {})",
            run.display(),
            marker.attempts
        ));
        let started = Instant::now();
        match workflow(run) {
            Ok(()) => {
                marker.status = MarkerStatus::Done;
                marker.error = None;
                marker.finished_unix = Some(now_unix());
                write_marker(run, &marker)?;
                log.line(&format!(
                    "workflow done for {} in {:.1} s",
                    run.display(),
                    started.elapsed().as_secs_f64()
                ));
                summary.done.push(run.to_path_buf());
                return Ok(());
            }
            Err(e) => {
                log.line(&format!(
                    "workflow failed for {} (attempt {}): {e}",
                    run.display(),
                    marker.attempts
                ));
                marker.error = Some(e);
                write_marker(run, &marker)?;
            }
        }
    }
    marker.status = MarkerStatus::Failed;
    marker.finished_unix = Some(now_unix());
    write_marker(run, &marker)?;
    log.line(&format!(
        "giving up on {} after {} attempts; `so8t watch --retry-failed` tries it again",
        run.display(),
        o.retries + 1
    ));
    summary.failed.push(run.to_path_buf());
    Ok(())
}

/// The state of the watched folder `runs`: the watcher's PID and liveness, runs found, finished,
/// processed (with their markers) and pending, and the last 10 log lines.
pub fn status(runs: &Path) -> WatchStatus {
    let pid_file = pid_path(runs);
    let pid = read_pid(&pid_file);
    let alive = pid.is_some_and(pid_alive);
    let found = find_runs(runs);
    let finished: Vec<PathBuf> = found.iter().filter(|r| is_finished(r)).cloned().collect();
    let mut processed = Vec::new();
    let mut pending = Vec::new();
    for run in &found {
        match read_marker(run) {
            Ok(Some(marker)) => processed.push(ProcessedRun {
                run: run.clone(),
                marker,
            }),
            _ if finished.contains(run) => pending.push(run.clone()),
            _ => {}
        }
    }
    let log_file = log_path(runs);
    WatchStatus {
        runs_dir: runs.to_path_buf(),
        pid_file,
        pid,
        alive,
        log_tail: crate::logrotate::tail(&log_file, 10),
        log_file,
        runs: found,
        finished,
        processed,
        pending,
    }
}

/// Stops the watcher of `runs`: sends SIGTERM to the PID in its PID file and waits up to
/// `timeout` for the PID file to disappear. No PID file → [`StopOutcome::NotRunning`]; a PID file
/// of a dead process → removed, [`StopOutcome::StaleRemoved`].
pub fn stop(runs: &Path, timeout: Duration) -> Result<StopOutcome, WatchError> {
    let pid_file = pid_path(runs);
    if !pid_file.exists() {
        return Ok(StopOutcome::NotRunning);
    }
    let pid = read_pid(&pid_file);
    let live = pid.filter(|&p| pid_alive(p) && p != std::process::id());
    let Some(pid) = live else {
        match std::fs::remove_file(&pid_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(WatchError::Io {
                    path: pid_file,
                    source: e,
                })
            }
            _ => return Ok(StopOutcome::StaleRemoved { pid }),
        }
    };
    // SAFETY: kill sends a signal; the PID was checked to be a live process other than us.
    if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
        return Err(WatchError::Signal {
            pid,
            pid_file,
            source: std::io::Error::last_os_error(),
        });
    }
    let started = Instant::now();
    while started.elapsed() < timeout {
        if !pid_file.exists() || read_pid(&pid_file) != Some(pid) {
            return Ok(StopOutcome::Stopped { pid });
        }
        if !pid_alive(pid) {
            // Killed before it could clean up: the PID file is stale now.
            let _ = std::fs::remove_file(&pid_file);
            return Ok(StopOutcome::Stopped { pid });
        }
        std::thread::sleep(SLICE);
    }
    Err(WatchError::StopTimeout {
        pid,
        waited: timeout,
    })
}
