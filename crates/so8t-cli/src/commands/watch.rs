//! `so8t watch`: poll a folder of training runs and run the post-training workflow once per
//! finished run, in the foreground or as a detached daemon; `--status` and `--stop` manage it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use so8t_pipeline::watch::{self as w, MarkerStatus, StopOutcome, WatchOptions, WatchStatus};

/// Set in the environment of the process `--daemon` starts.
const DAEMON_ENV: &str = "SO8T_WATCH_DAEMON";

/// `watch`.
#[derive(clap::Args)]
pub struct WatchArgs {
    /// The folder to watch: a training run folder itself, or a folder whose direct subfolders are
    /// runs (`so8t train --run-dir`).
    #[arg(long, value_name = "DIR")]
    runs: PathBuf,
    /// Seconds between polls.
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
    /// The post-training workflow YAML handed to each run's workflow (default: the built-in one).
    #[arg(long, value_name = "FILE")]
    workflow: Option<PathBuf>,
    /// Poll once, process what is finished, then exit.
    #[arg(long)]
    once: bool,
    /// Also take up runs whose marker says failed (once each per watcher start).
    #[arg(long)]
    retry_failed: bool,
    /// Extra attempts after a failed workflow (3: up to four attempts per run).
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
    /// Seconds before the first retry, doubled before each next one.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    backoff: u64,
    /// Rotate `watch.log` before it grows past this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 10 << 20)]
    log_max_bytes: u64,
    /// Rotated log files kept (`watch.log.1` … `watch.log.N`).
    #[arg(long, value_name = "N", default_value_t = 5)]
    log_keep: usize,
    /// Show the watcher's state (PID, runs found, processed, pending, last log lines) and exit.
    #[arg(long, conflicts_with_all = ["stop", "daemon", "once"])]
    status: bool,
    /// With --status: print JSON.
    #[arg(long, requires = "status")]
    json: bool,
    /// Stop the running watcher of --runs (SIGTERM, then wait for it to exit).
    #[arg(long, conflicts_with_all = ["daemon", "once"])]
    stop: bool,
    /// With --stop: seconds to wait for the watcher to exit (it finishes a running workflow first).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    stop_timeout: u64,
    /// Start the watcher detached in the background (output appended to its log) and exit.
    #[arg(long, conflicts_with = "once")]
    daemon: bool,
    /// Tests: run this shell command (`sh -c`, with `SO8T_RUN_DIR` set) instead of the workflow.
    #[arg(long, hide = true, value_name = "CMD")]
    workflow_cmd: Option<String>,
}

/// Runs `watch`.
pub fn run(a: WatchArgs) -> Result<()> {
    if a.status {
        return print_status(&w::status(&a.runs), a.json);
    }
    if a.stop {
        return stop(&a.runs, Duration::from_secs(a.stop_timeout));
    }
    if !a.runs.is_dir() {
        bail!(
            "--runs {}: not a folder (expected a training run folder or a folder of runs)",
            a.runs.display()
        );
    }
    if let Some(f) = &a.workflow {
        if !f.is_file() {
            bail!("--workflow {}: no such file", f.display());
        }
    }
    if a.daemon {
        return daemonize(&a.runs);
    }
    let stop = so8t_pipeline::watch::install_stop_signals()
        .context("cannot install the SIGINT/SIGTERM handlers")?;
    let opts = WatchOptions {
        runs: a.runs.clone(),
        interval: Duration::from_secs(a.interval),
        retries: a.retries,
        backoff: Duration::from_secs(a.backoff),
        once: a.once,
        retry_failed: a.retry_failed,
        log_max_bytes: a.log_max_bytes,
        log_keep: a.log_keep,
        stop,
        redirect_stdio: std::env::var_os(DAEMON_ENV).is_some(),
    };
    eprintln!(
        "so8t watch: watching {} every {} s (log: {}); Ctrl-C stops",
        a.runs.display(),
        a.interval,
        w::log_path(&a.runs).display()
    );
    let workflow = a.workflow.clone();
    let cmd = a.workflow_cmd.clone();
    let summary = w::watch(&opts, &mut |run: &Path| match &cmd {
        Some(cmd) => run_shell(cmd, run, workflow.as_deref()),
        None => crate::commands::pipeline::post_training(workflow.as_deref(), run)
            .map_err(|e| format!("{e:#}")),
    })?;
    eprintln!(
        "so8t watch: stopped after {} poll(s): {} done, {} failed",
        summary.polls,
        summary.done.len(),
        summary.failed.len()
    );
    Ok(())
}

/// `sh -c CMD` with `SO8T_RUN_DIR` (and `SO8T_WORKFLOW` when given); exit status 0 = success.
fn run_shell(cmd: &str, run: &Path, workflow: Option<&Path>) -> std::result::Result<(), String> {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .env("SO8T_RUN_DIR", run)
        .stdin(std::process::Stdio::null());
    if let Some(f) = workflow {
        c.env("SO8T_WORKFLOW", f);
    }
    match c.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("workflow command {cmd:?} exited with {s}")),
        Err(e) => Err(format!("cannot run workflow command {cmd:?}: {e}")),
    }
}

/// Re-runs this binary with the same arguments minus `--daemon`, detached (own process group,
/// stdin null, output appended to the log), and waits until it holds the PID file.
fn daemonize(runs: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let st = w::status(runs);
    if let Some(pid) = st.pid.filter(|_| st.alive) {
        bail!(
            "{}: so8t watch is already running here (PID {pid}); `so8t watch --runs {} --stop` stops it",
            st.pid_file.display(),
            runs.display()
        );
    }
    let log = w::log_path(runs);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open the log {}", log.display()))?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let mut child = std::process::Command::new(&exe)
        .args(&args)
        .env(DAEMON_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let pid = child.id();
    let pid_file = w::pid_path(runs);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(status) = child.try_wait()? {
            let tail = so8t_pipeline::logrotate::tail(&log, 10).join("\n");
            bail!(
                "the watcher exited at once ({status}); its log {} ends:\n{tail}",
                log.display()
            );
        }
        if so8t_pipeline::lock::read_pid(&pid_file) == Some(pid) {
            println!("so8t watch: started in the background, PID {pid}");
            println!("log: {}", log.display());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "the watcher (PID {pid}) has not written {} after 30 s; see {}",
        pid_file.display(),
        log.display()
    )
}

fn stop(runs: &Path, timeout: Duration) -> Result<()> {
    match w::stop(runs, timeout)? {
        StopOutcome::Stopped { pid } => println!("so8t watch: stopped the watcher (PID {pid})"),
        StopOutcome::NotRunning => println!(
            "so8t watch: not running for {} (no {})",
            runs.display(),
            w::pid_path(runs).display()
        ),
        StopOutcome::StaleRemoved { pid } => println!(
            "so8t watch: not running; removed a stale PID file {} ({})",
            w::pid_path(runs).display(),
            pid.map_or("no PID in it".to_string(), |p| format!("PID {p} is gone"))
        ),
    }
    Ok(())
}

fn print_status(st: &WatchStatus, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(st)?);
        return Ok(());
    }
    let watcher = match (st.pid, st.alive) {
        (Some(pid), true) => format!("running (PID {pid})"),
        (Some(pid), false) => format!(
            "not running (stale PID file {} names PID {pid})",
            st.pid_file.display()
        ),
        (None, _) => "not running".to_string(),
    };
    let count = |s: MarkerStatus| st.processed.iter().filter(|p| p.marker.status == s).count();
    println!("watcher: {watcher}");
    println!("folder:  {}", st.runs_dir.display());
    println!(
        "runs:    {} found, {} finished, {} done, {} failed, {} running, {} pending",
        st.runs.len(),
        st.finished.len(),
        count(MarkerStatus::Done),
        count(MarkerStatus::Failed),
        count(MarkerStatus::Running),
        st.pending.len()
    );
    for p in &st.processed {
        let status = match p.marker.status {
            MarkerStatus::Done => "done",
            MarkerStatus::Failed => "failed",
            MarkerStatus::Running => "running",
        };
        let error = p
            .marker
            .error
            .as_deref()
            .filter(|_| p.marker.status != MarkerStatus::Done)
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        println!(
            "  {status:<8} {} (attempts {}){error}",
            p.run.display(),
            p.marker.attempts
        );
    }
    for r in &st.pending {
        println!("  {:<8} {}", "pending", r.display());
    }
    println!("log:     {}", st.log_file.display());
    for l in &st.log_tail {
        println!("  {l}");
    }
    Ok(())
}
