//! Notifications when a pipeline or training run completes or fails: a desktop notification
//! (`notify-send`), a sound (the terminal bell, a synthesized chime or a WAV file played with
//! `paplay` / `aplay`) and a webhook (the [`Event`] POSTed as JSON, with retries).
//!
//! Every notifier is optional and configured in the `notify:` block of the pipeline YAML
//! ([`NotifyConfig`]). A failing notifier never fails the caller: [`send`] returns one
//! [`Outcome`] per configured notifier and logs the failures with `tracing::warn!`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How long a desktop notification command may run before it is killed.
const DESKTOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sound player may run before it is killed.
const SOUND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between two webhook attempts, whatever the backoff or `Retry-After` says.
const MAX_BACKOFF_SECS: f64 = 300.0;

/// The `notify:` block of the pipeline YAML. Every notifier is off unless configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Show a desktop notification with `notify-send` (when it is on `PATH`); urgency `critical`
    /// on failure.
    pub desktop: bool,
    /// Play a sound: `off` (the default), `bell`, `chime`, or the path of a WAV file.
    pub sound: Sound,
    /// POST the event as JSON to a URL, with retries.
    pub webhook: Option<WebhookConfig>,
}

/// The `sound` notifier; written in YAML as a plain string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sound {
    /// No sound (`off`).
    #[default]
    Off,
    /// The terminal bell: BEL written to stderr (`bell`).
    Bell,
    /// A short two-tone chime synthesized by so8t, played with `paplay` or `aplay` when present,
    /// else the terminal bell (`chime`).
    Chime,
    /// A WAV file played with `paplay` or `aplay` when present, else the terminal bell.
    File(PathBuf),
}

impl Sound {
    /// Parses the YAML spelling: `off` / `none` / `false` / empty, `bell`, `chime` (any case),
    /// anything else is the path of a WAV file.
    pub fn parse(s: &str) -> Self {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "" | "off" | "none" | "false" | "no" => Self::Off,
            "bell" => Self::Bell,
            "chime" => Self::Chime,
            _ => Self::File(PathBuf::from(t)),
        }
    }

    /// The YAML spelling: `off`, `bell`, `chime`, or the path.
    pub fn as_string(&self) -> String {
        match self {
            Self::Off => "off".into(),
            Self::Bell => "bell".into(),
            Self::Chime => "chime".into(),
            Self::File(p) => p.to_string_lossy().into_owned(),
        }
    }
}

impl Serialize for Sound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for Sound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Sound;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`off`, `bell`, `chime` or the path of a WAV file")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sound, E> {
                Ok(Sound::parse(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Sound, E> {
                Ok(if v { Sound::Bell } else { Sound::Off })
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Sound, E> {
                Ok(Sound::Off)
            }
        }
        d.deserialize_any(V)
    }
}

/// The `webhook` notifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL the event is POSTed to (`http://` or `https://`).
    pub url: String,
    /// Extra request headers, e.g. `Authorization: Bearer …`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Retries after the first attempt on connection errors, timeouts, HTTP 5xx and 429
    /// (default 3). Other 4xx answers are not retried.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Timeout of one attempt in seconds (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Wait before the first retry in seconds, doubled for each further retry (default 1).
    #[serde(default = "default_backoff")]
    pub backoff_secs: f64,
}

fn default_retries() -> u32 {
    3
}
fn default_timeout() -> f64 {
    10.0
}
fn default_backoff() -> f64 {
    1.0
}

impl WebhookConfig {
    /// A webhook to `url` with the default headers, retries, timeout and backoff.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: BTreeMap::new(),
            retries: default_retries(),
            timeout_secs: default_timeout(),
            backoff_secs: default_backoff(),
        }
    }
}

/// What happened; also the JSON body of the webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// A short title, e.g. `so8t pipeline phi35`.
    pub title: String,
    /// `completed` or `failed`.
    pub status: String,
    /// One or two lines for a human.
    pub message: String,
    /// The pipeline or run folder.
    pub dir: PathBuf,
    /// The report written, if any.
    pub report: Option<PathBuf>,
    /// Wall-clock duration in seconds.
    pub duration_s: f64,
}

impl Event {
    /// True for a failure (`status` other than `completed`).
    pub fn failed(&self) -> bool {
        self.status != "completed"
    }
}

/// The result of one notifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `desktop`, `sound` or `webhook`.
    pub notifier: &'static str,
    /// Whether it was delivered.
    pub ok: bool,
    /// What happened, or why it failed.
    pub detail: String,
}

/// One notifier, run on its own thread.
type Job = Box<dyn FnOnce() -> Outcome + Send>;

/// Runs every configured notifier (concurrently) and returns one [`Outcome`] each, in the order
/// desktop, sound, webhook. Never fails and never panics: failures are `ok: false` and logged.
pub fn send(cfg: &NotifyConfig, ev: &Event) -> Vec<Outcome> {
    send_with_search_path(cfg, ev, None)
}

/// [`send`] looking external programs up in `search_path` instead of `$PATH` (for tests: `PATH`
/// is process-global).
#[doc(hidden)]
pub fn send_with_search_path(
    cfg: &NotifyConfig,
    ev: &Event,
    search_path: Option<&OsStr>,
) -> Vec<Outcome> {
    let path: Option<OsString> = search_path
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("PATH"));
    let mut jobs: Vec<(&'static str, Job)> = Vec::new();
    if cfg.desktop {
        let (ev, path) = (ev.clone(), path.clone());
        jobs.push(("desktop", Box::new(move || desktop(&ev, path.as_deref()))));
    }
    if cfg.sound != Sound::Off {
        let (sound, path) = (cfg.sound.clone(), path.clone());
        jobs.push(("sound", Box::new(move || play(&sound, path.as_deref()))));
    }
    if let Some(w) = &cfg.webhook {
        let (w, ev) = (w.clone(), ev.clone());
        jobs.push(("webhook", Box::new(move || webhook(&w, &ev))));
    }
    // One thread per notifier: a slow webhook does not hold the desktop notification back, a
    // panic stays inside its thread, and reqwest's blocking client never runs inside an async
    // runtime of the caller.
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(name, job)| {
            (
                name,
                std::thread::Builder::new()
                    .name(format!("notify-{name}"))
                    .spawn(job),
            )
        })
        .collect();
    let mut out = Vec::new();
    for (name, h) in handles {
        let o = match h {
            Ok(h) => h.join().unwrap_or_else(|_| Outcome {
                notifier: name,
                ok: false,
                detail: "the notifier panicked".into(),
            }),
            Err(e) => Outcome {
                notifier: name,
                ok: false,
                detail: format!("cannot start a thread: {e}"),
            },
        };
        if o.ok {
            tracing::debug!("notify {}: {}", o.notifier, o.detail);
        } else {
            tracing::warn!("notification by {} failed: {}", o.notifier, o.detail);
        }
        out.push(o);
    }
    out
}

/// The first executable file called `name` in the directories of `path` (a `PATH`-style list).
pub fn find_program(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `cmd` with stdin and stdout closed, killing it after `timeout`; an error holds the end
/// of its stderr.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<ExitStatus, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    // Drain stderr in a thread so a chatty child never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = s.by_ref().take(64 * 1024).read_to_end(&mut buf);
            let _ = std::io::copy(&mut s, &mut std::io::sink());
            String::from_utf8_lossy(&buf).trim().to_string()
        })
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "{:?} did not finish within {} s; killed",
                    cmd.get_program(),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("waiting for {:?}: {e}", cmd.get_program()));
            }
        }
    };
    let err_text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    match status {
        Ok(st) if st.success() => Ok(st),
        Ok(st) if err_text.is_empty() => Err(format!("{:?} exited with {st}", cmd.get_program())),
        Ok(st) => Err(format!(
            "{:?} exited with {st}: {}",
            cmd.get_program(),
            last_line(&err_text)
        )),
        Err(e) => Err(e),
    }
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s)
}

fn desktop(ev: &Event, path: Option<&OsStr>) -> Outcome {
    let outcome = |ok, detail| Outcome {
        notifier: "desktop",
        ok,
        detail,
    };
    let Some(prog) = find_program("notify-send", path) else {
        return outcome(false, "notify-send is not on PATH".into());
    };
    let urgency = if ev.failed() { "critical" } else { "normal" };
    let mut cmd = Command::new(&prog);
    cmd.arg("--app-name=so8t")
        .arg(format!("--urgency={urgency}"))
        .arg("--")
        .arg(&ev.title)
        .arg(&ev.message);
    match run_with_timeout(&mut cmd, DESKTOP_TIMEOUT) {
        Ok(_) => outcome(true, format!("shown with {}", prog.display())),
        Err(e) => outcome(false, e),
    }
}

fn bell() -> Result<(), String> {
    let mut err = std::io::stderr().lock();
    err.write_all(b"\x07")
        .and_then(|()| err.flush())
        .map_err(|e| format!("cannot write the bell to stderr: {e}"))
}

fn play(sound: &Sound, path: Option<&OsStr>) -> Outcome {
    let outcome = |ok, detail| Outcome {
        notifier: "sound",
        ok,
        detail,
    };
    let file = match sound {
        Sound::Off => return outcome(true, "off".into()),
        Sound::Bell => {
            return match bell() {
                Ok(()) => outcome(true, "terminal bell".into()),
                Err(e) => outcome(false, e),
            }
        }
        Sound::Chime => match TempWav::write(&chime_wav()) {
            Ok(t) => Some(t),
            Err(e) => {
                let rung = bell().is_ok();
                return outcome(rung, format!("{e}; rang the terminal bell instead"));
            }
        },
        Sound::File(p) => {
            if !p.is_file() {
                let _ = bell();
                return outcome(
                    false,
                    format!("{}: no such WAV file; rang the terminal bell", p.display()),
                );
            }
            None
        }
    };
    let wav: &Path = match (&file, sound) {
        (Some(t), _) => &t.0,
        (None, Sound::File(p)) => p,
        (None, _) => return outcome(false, "nothing to play".into()),
    };
    let mut errors = Vec::new();
    for player in ["paplay", "aplay"] {
        let Some(prog) = find_program(player, path) else {
            continue;
        };
        let mut cmd = Command::new(&prog);
        if player == "aplay" {
            cmd.arg("-q");
        }
        cmd.arg(wav);
        match run_with_timeout(&mut cmd, SOUND_TIMEOUT) {
            Ok(_) => return outcome(true, format!("played with {player}")),
            Err(e) => errors.push(e),
        }
    }
    let rung = bell();
    if errors.is_empty() {
        match rung {
            Ok(()) => outcome(
                true,
                "neither paplay nor aplay is on PATH; rang the terminal bell".into(),
            ),
            Err(e) => outcome(false, format!("neither paplay nor aplay is on PATH; {e}")),
        }
    } else {
        outcome(
            false,
            format!("{}; rang the terminal bell instead", errors.join("; ")),
        )
    }
}

/// A temporary WAV file, removed when dropped.
struct TempWav(PathBuf);

impl TempWav {
    fn write(bytes: &[u8]) -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("so8t-chime-{}-{nanos}.wav", std::process::id()));
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempWav {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A mono 16-bit PCM WAV file (RIFF/WAVE, one `fmt ` and one `data` chunk).
pub fn wav_pcm16(sample_rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVE");
    b.extend_from_slice(b"fmt ");
    b.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&sample_rate.to_le_bytes());
    b.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // byte rate
    b.extend_from_slice(&2u16.to_le_bytes()); // block align
    b.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

/// The chime: two sine tones (880 Hz for 0.15 s, then 1318.5 Hz for 0.3 s) with short fades,
/// 22 050 Hz mono 16-bit PCM.
pub fn chime_wav() -> Vec<u8> {
    const RATE: u32 = 22_050;
    let mut samples = Vec::new();
    for (freq, secs) in [(880.0f64, 0.15f64), (1318.5, 0.30)] {
        let n = (RATE as f64 * secs) as usize;
        let fade = (RATE as f64 * 0.01) as usize;
        for i in 0..n {
            let t = i as f64 / RATE as f64;
            let edge = i.min(n - 1 - i);
            let env = if edge < fade {
                edge as f64 / fade as f64
            } else {
                1.0
            };
            // A gentle decay over the tone.
            let decay = (-3.0 * i as f64 / n as f64).exp();
            let v = (2.0 * std::f64::consts::PI * freq * t).sin() * env * decay * 0.4;
            samples.push((v * i16::MAX as f64) as i16);
        }
    }
    wav_pcm16(RATE, &samples)
}

/// Whether an HTTP status is worth another attempt.
fn retryable_status(code: u16) -> bool {
    code == 429 || (500..600).contains(&code)
}

fn webhook(w: &WebhookConfig, ev: &Event) -> Outcome {
    let outcome = |ok, detail| Outcome {
        notifier: "webhook",
        ok,
        detail,
    };
    let timeout = if w.timeout_secs.is_finite() && w.timeout_secs > 0.0 {
        w.timeout_secs.min(3600.0)
    } else {
        default_timeout()
    };
    let backoff = if w.backoff_secs.is_finite() && w.backoff_secs >= 0.0 {
        w.backoff_secs.min(MAX_BACKOFF_SECS)
    } else {
        default_backoff()
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &w.headers {
        let name = match reqwest::header::HeaderName::from_bytes(k.as_bytes()) {
            Ok(n) => n,
            Err(e) => return outcome(false, format!("header name {k:?}: {e}")),
        };
        let value = match reqwest::header::HeaderValue::from_str(v) {
            Ok(v) => v,
            Err(e) => return outcome(false, format!("header {k}: {e}")),
        };
        headers.insert(name, value);
    }
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs_f64(timeout))
        .user_agent(concat!("so8t/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .build()
    {
        Ok(c) => c,
        Err(e) => return outcome(false, format!("cannot build the HTTP client: {e}")),
    };
    let attempts = w.retries.saturating_add(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        let mut wait = backoff * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        match client.post(&w.url).json(ev).send() {
            Ok(resp) => {
                let code = resp.status();
                if code.is_success() {
                    return outcome(true, format!("HTTP {code} after {attempt} attempt(s)"));
                }
                last = format!("HTTP {code} from {}", w.url);
                if !retryable_status(code.as_u16()) {
                    return outcome(false, format!("{last} (not retried)"));
                }
                if let Some(secs) = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                {
                    wait = secs;
                }
            }
            Err(e) if e.is_builder() => {
                return outcome(false, format!("{}: {e}", w.url));
            }
            Err(e) => {
                last = format!("{}: {}", w.url, error_chain(&e));
            }
        }
        if attempt < attempts {
            tracing::debug!("webhook attempt {attempt}/{attempts} failed ({last}); retrying");
            std::thread::sleep(Duration::from_secs_f64(wait.min(MAX_BACKOFF_SECS)));
        }
    }
    outcome(false, format!("{last} (after {attempts} attempt(s))"))
}

/// An error with its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
