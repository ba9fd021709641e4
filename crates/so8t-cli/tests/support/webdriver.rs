//! A minimal W3C WebDriver client for the integration tests: drives headless Debian Chromium
//! (`/usr/bin/chromium`) through `/usr/bin/chromedriver` (installed by `.ci/setup-browser`).
//!
//! Only `reqwest` (blocking) and `serde_json` are used. Typical use:
//!
//! ```ignore
//! if !Browser::available() { eprintln!("SKIP: no chromium/chromedriver"); return; }
//! let dl = tempdir();
//! let b = Browser::start(&dl)?;
//! b.goto("http://127.0.0.1:8080/")?;
//! let button = b.wait_for("#go", Duration::from_secs(5))?;
//! b.click(&button)?;
//! let csv = wait_download(&dl, ".csv", Duration::from_secs(10))?;
//! ```
//!
//! Downloads: the `download.*` prefs are set, and on top of that `start` sends the CDP command
//! `Browser.setDownloadBehavior {behavior: "allow", downloadPath}` through chromedriver's
//! `/goog/cdp/execute`, so downloads land in `download_dir` whatever the headless mode does with
//! the prefs.
// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};

/// Path of the Debian Chromium launcher.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Path of the Debian chromedriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key under which an element reference travels in JSON.
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const STATUS_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// How long the two phases of [`Browser::start`] took.
#[derive(Debug, Clone, Copy)]
pub struct StartTimings {
    /// From spawning chromedriver until its `/status` said ready.
    pub driver_ready: Duration,
    /// `POST /session` (launching Chromium) plus the download-behaviour CDP command.
    pub session: Duration,
}

/// A headless Chromium session driven through a private chromedriver process.
///
/// Dropping it deletes the session (Chromium quits) and kills chromedriver's process group,
/// then removes the temporary profile directory.
pub struct Browser {
    http: reqwest::blocking::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session_url: String,
    driver: Child,
    /// Temporary directory holding the Chromium profile and chromedriver's log.
    scratch: PathBuf,
    timings: StartTimings,
}

impl Browser {
    /// True when both `/usr/bin/chromium` and `/usr/bin/chromedriver` exist (tests should skip
    /// with a message otherwise).
    pub fn available() -> bool {
        Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file()
    }

    /// Spawns chromedriver on a free local port, waits (up to 20 s) for it to be ready and opens a
    /// headless Chromium session whose downloads go to `download_dir` (created if missing).
    pub fn start(download_dir: &Path) -> Result<Browser, String> {
        if !Browser::available() {
            return Err(format!(
                "{CHROMIUM} or {CHROMEDRIVER} missing (run .ci/setup-browser)"
            ));
        }
        fs::create_dir_all(download_dir)
            .map_err(|e| format!("create {}: {e}", download_dir.display()))?;
        let download_dir = download_dir
            .canonicalize()
            .map_err(|e| format!("canonicalize {}: {e}", download_dir.display()))?;
        let scratch = unique_temp_dir("so8t-webdriver")?;
        let profile = scratch.join("profile");
        fs::create_dir_all(&profile).map_err(|e| format!("create {}: {e}", profile.display()))?;
        let http = reqwest::blocking::Client::builder()
            .no_proxy() // never send 127.0.0.1 traffic through $http_proxy
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("reqwest client: {e}"))?;

        let t0 = Instant::now();
        let (driver, base) = match spawn_driver(&http, &scratch) {
            Ok(x) => x,
            Err(e) => {
                let _ = fs::remove_dir_all(&scratch);
                return Err(e);
            }
        };
        let driver_ready = t0.elapsed();
        // From here on, Drop cleans up (kills chromedriver, removes `scratch`).
        let mut browser = Browser {
            http,
            session_url: String::new(),
            driver,
            scratch,
            timings: StartTimings {
                driver_ready,
                session: Duration::ZERO,
            },
        };

        let t1 = Instant::now();
        let dir = download_dir.to_string_lossy().into_owned();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--no-first-run",
                        "--window-size=1600,1200",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                    "prefs": {
                        "download.default_directory": dir,
                        "download.prompt_for_download": false,
                        "download.directory_upgrade": true,
                        "safebrowsing.enabled": false,
                    },
                },
            }},
        });
        let created = request(
            &browser.http,
            Method::POST,
            &format!("{base}/session"),
            Some(caps),
        )
        .map_err(|e| format!("{e}\n{}", browser.driver_log_tail()))?;
        let id = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("POST /session: no sessionId in {created}"))?;
        browser.session_url = format!("{base}/session/{id}");
        browser.set_download_dir(&download_dir)?;
        browser.timings.session = t1.elapsed();
        Ok(browser)
    }

    /// How long chromedriver and the session took to start.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// Sends `Browser.setDownloadBehavior {behavior: "allow", downloadPath: dir}` over CDP, so
    /// downloads (e.g. `<a download>` clicks) are saved to `dir` without a prompt.
    pub fn set_download_dir(&self, dir: &Path) -> Result<(), String> {
        self.cdp(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": dir.to_string_lossy() }),
        )
        .map(|_| ())
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver
    /// (`POST /session/{id}/goog/cdp/execute`) and returns its result.
    pub fn cdp(&self, cmd: &str, params: Value) -> Result<Value, String> {
        self.call(
            Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
    }

    /// Navigates to `url` and waits for the page load (W3C "normal" page-load strategy).
    pub fn goto(&self, url: &str) -> Result<(), String> {
        self.call(Method::POST, "/url", Some(json!({ "url": url })))
            .map(|_| ())
    }

    /// The URL of the current page.
    pub fn current_url(&self) -> Result<String, String> {
        let v = self.call(Method::GET, "/url", None)?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("GET /url: not a string: {v}"))
    }

    /// The first element matching the CSS selector, as a WebDriver element id (no waiting: see
    /// [`Browser::wait_for`]).
    pub fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .call(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .map_err(|e| format!("find {css:?}: {e}"))?;
        element_id(&v)
    }

    /// All elements matching the CSS selector (empty when none, or on error).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        match self.call(
            Method::POST,
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        ) {
            Ok(Value::Array(items)) => items.iter().filter_map(|v| element_id(v).ok()).collect(),
            _ => Vec::new(),
        }
    }

    /// Polls [`Browser::find`] until the selector matches or `timeout` passes.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(css) {
                Ok(id) => return Ok(id),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {css:?}: {e}"
                    ))
                }
                Err(_) => sleep(POLL),
            }
        }
    }

    /// Polls `cond` (every 50 ms) until it returns `Ok(true)`; an `Err` from `cond` aborts the
    /// wait. Fails when `timeout` passes first.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&Browser) -> Result<bool, String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("condition not met within {timeout:?}"));
            }
            sleep(POLL);
        }
    }

    /// The rendered (visible) text of an element.
    pub fn text(&self, elem: &str) -> Result<String, String> {
        let v = self.call(Method::GET, &format!("/element/{elem}/text"), None)?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("element text: not a string: {v}"))
    }

    /// An attribute of an element as written in the HTML (`href="/x"` gives `"/x"`, not the
    /// resolved URL; boolean attributes give `Some("true")`); `None` when absent.
    pub fn attr(&self, elem: &str, name: &str) -> Option<String> {
        match self.call(
            Method::GET,
            &format!("/element/{elem}/attribute/{name}"),
            None,
        ) {
            Ok(Value::String(s)) => Some(s),
            Ok(Value::Null) | Err(_) => None,
            Ok(other) => Some(other.to_string()),
        }
    }

    /// A DOM property of an element as JSON (`"href"` gives the resolved URL, `"value"` an
    /// input's current value, `"checked"` a bool); `Value::Null` when undefined.
    pub fn prop(&self, elem: &str, name: &str) -> Result<Value, String> {
        self.call(
            Method::GET,
            &format!("/element/{elem}/property/{name}"),
            None,
        )
    }

    /// Clicks an element (scrolls it into view first; fails if it is hidden or covered).
    pub fn click(&self, elem: &str) -> Result<(), String> {
        self.call(
            Method::POST,
            &format!("/element/{elem}/click"),
            Some(json!({})),
        )
        .map(|_| ())
    }

    /// Types `text` into an element (an input or textarea).
    pub fn send_keys(&self, elem: &str, text: &str) -> Result<(), String> {
        self.call(
            Method::POST,
            &format!("/element/{elem}/value"),
            Some(json!({ "text": text })),
        )
        .map(|_| ())
    }

    /// Empties an input or textarea.
    pub fn clear(&self, elem: &str) -> Result<(), String> {
        self.call(
            Method::POST,
            &format!("/element/{elem}/clear"),
            Some(json!({})),
        )
        .map(|_| ())
    }

    /// Runs `script` as the body of a function (`execute/sync`): `arguments[i]` are `args`,
    /// and what it `return`s comes back as JSON (elements as `{ELEMENT_KEY: id}`).
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Result<Value, String> {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let v = self.call(Method::GET, "/screenshot", None)?;
        let b64 = v
            .as_str()
            .ok_or_else(|| format!("screenshot: not a string: {v}"))?;
        let png = base64_decode(b64)?;
        fs::write(path, png).map_err(|e| format!("write {}: {e}", path.display()))
    }

    /// One WebDriver command relative to the session URL; returns the response's `value`.
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        request(
            &self.http,
            method,
            &format!("{}{path}", self.session_url),
            body,
        )
    }

    /// The last lines of chromedriver's output, for error messages.
    fn driver_log_tail(&self) -> String {
        let log = fs::read_to_string(self.scratch.join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "chromedriver log (tail):\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session_url.is_empty() {
            // Quits Chromium cleanly (and removes its child processes).
            let _ = self
                .http
                .delete(&self.session_url)
                .timeout(Duration::from_secs(10))
                .send();
        }
        kill_group(&mut self.driver);
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

/// A WebDriver element value argument for [`Browser::exec`] (`arguments[i]` is then the element).
pub fn elem_arg(elem: &str) -> Value {
    json!({ ELEMENT_KEY: elem })
}

/// Waits until a complete download whose name ends with `suffix` is in `dir`: no `*.crdownload`
/// left in `dir` and the file's size unchanged over one poll. Returns the newest such file.
///
/// Chromium overwrites a download of the same name (no `data (1).csv`), and an earlier file
/// satisfies this at once: start each download with an empty directory (or a fresh one set with
/// [`Browser::set_download_dir`]).
pub fn wait_download(dir: &Path, suffix: &str, timeout: Duration) -> Result<PathBuf, String> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<(PathBuf, u64)> = None;
    loop {
        let mut partial = false;
        let mut newest: Option<(PathBuf, SystemTime, u64)> = None;
        for entry in fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".crdownload") {
                partial = true;
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !name.ends_with(suffix) {
                continue;
            }
            let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
            if newest.as_ref().is_none_or(|(_, t, _)| mtime > *t) {
                newest = Some((entry.path(), mtime, meta.len()));
            }
        }
        match newest {
            Some((path, _, len)) if !partial => {
                if last.as_ref() == Some(&(path.clone(), len)) {
                    return Ok(path);
                }
                last = Some((path, len));
            }
            _ => last = None,
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            return Err(format!(
                "no complete *{suffix} download in {} after {timeout:?} (contents: {names:?})",
                dir.display()
            ));
        }
        sleep(Duration::from_millis(100));
    }
}

/// Spawns chromedriver (in its own process group) on a free port and waits for `/status` ready.
/// Retries with another port if chromedriver exits early (port taken in between).
fn spawn_driver(
    http: &reqwest::blocking::Client,
    scratch: &Path,
) -> Result<(Child, String), String> {
    let log_path = scratch.join("chromedriver.log");
    let mut last_err = String::new();
    for _attempt in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("find a free port: {e}"))?
            .port();
        let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0) // so Drop can kill chromedriver and any Chromium it left behind
            .spawn()
            .map_err(|e| format!("spawn {CHROMEDRIVER}: {e}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + STATUS_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_err = format!("chromedriver exited early ({status})");
                break;
            }
            if let Ok(v) = request(http, Method::GET, &format!("{base}/status"), None) {
                if v["ready"].as_bool() == Some(true) {
                    return Ok((child, base));
                }
            }
            if Instant::now() >= deadline {
                kill_group(&mut child);
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "chromedriver not ready within {STATUS_TIMEOUT:?}; log:\n{log}"
                ));
            }
            sleep(POLL);
        }
    }
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    Err(format!("{last_err}; log:\n{log}"))
}

/// Kills the child's whole process group (chromedriver + any Chromium it started) and reaps it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends one WebDriver HTTP request; returns the response's `value`, or the W3C error as text.
fn request(
    http: &reqwest::blocking::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let what = format!("{method} {url}");
    let mut req = http.request(method, url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().map_err(|e| format!("{what}: {e}"))?;
    let status = resp.status();
    let mut text = String::new();
    resp.take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| format!("{what}: read body: {e}"))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{what}: HTTP {status}, not JSON ({e}): {text:.300}"))?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    if !status.is_success() {
        let error = value["error"].as_str().unwrap_or("unknown error");
        let message = value["message"].as_str().unwrap_or("");
        return Err(format!("{what}: HTTP {status}: {error}: {message}"));
    }
    Ok(value)
}

fn element_id(v: &Value) -> Result<String, String> {
    v[ELEMENT_KEY]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("not an element reference: {v}"))
}

/// A new empty directory under the system temp dir.
fn unique_temp_dir(prefix: &str) -> Result<PathBuf, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Standard base64 (with or without padding; whitespace ignored).
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => return Err(format!("invalid base64 byte {c:#x}")),
        };
        acc = ((acc << 6) | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}
