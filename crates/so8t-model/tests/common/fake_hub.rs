//! A fake Hugging Face hub on 127.0.0.1 for tests (shared by so8t-model's hub tests and the
//! CLI's `data pull` test through `#[path]`).
//!
//! The fake answers what hf-hub 0.4.3's sync API asks for:
//! - `GET /api/{models|datasets}/{repo}/revision/{rev}`: the file list (`sha`, `siblings`);
//! - `GET [/datasets]/{repo}/resolve/{rev}/{path}` with `Range: bytes=0-0` (metadata: `etag` or
//!   `x-linked-etag`, `x-repo-commit`, `content-range`) and then `Range: bytes=N-` (the data);
//!   `*.safetensors` answer with a 302 to an absolute `/cdn/{etag}` URL like LFS files on the hub,
//!   `tokenizer.json` with a 307 to a relative `/api/resolve-cache/...` path like small files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The commit every fake repo is at.
pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
/// The server stops after this many connections...
pub const MAX_CONNECTIONS: usize = 200;
/// ...or this long after it started, whichever comes first.
pub const LIFETIME: Duration = Duration::from_secs(60);
pub const TOKEN: &str = "hf_fake_token";

#[derive(Clone)]
pub struct FakeRepo {
    pub dataset: bool,
    pub id: String,
    /// Files listed and served.
    pub files: Vec<(String, Vec<u8>)>,
    /// Names listed but never served.
    pub listed_only: Vec<String>,
    /// Answers 401 + `X-Error-Code: RepoNotFound`, as the hub does for private repos.
    pub private: bool,
}

impl FakeRepo {
    pub fn new(id: &str, dataset: bool, files: &[(&str, &[u8])]) -> Self {
        FakeRepo {
            dataset,
            id: id.into(),
            files: files
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_vec()))
                .collect(),
            listed_only: Vec::new(),
            private: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub auth: Option<String>,
}

pub struct FakeHub {
    pub addr: SocketAddr,
    pub stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<Request>>>,
    pub thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(repos: Vec<FakeRepo>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut served = 0;
            while !stop2.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && served < MAX_CONNECTIONS
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let _ = handle(stream, &repos, addr, &log2);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => break,
                }
            }
        });
        FakeHub {
            addr,
            stop,
            log,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }
}

pub fn handle(
    stream: TcpStream,
    repos: &[FakeRepo],
    addr: SocketAddr,
    log: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    if reader.fill_buf()?.first() == Some(&0x16) {
        return Ok(()); // a TLS ClientHello: hang up
    }
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut range, mut auth) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    log.lock().expect("log").push(Request {
        path: target.clone(),
        auth,
    });
    let resp = route(&target, range.as_deref(), repos, addr);
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {} Fake\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&resp.body)?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Write)
}

pub fn route(target: &str, range: Option<&str>, repos: &[FakeRepo], addr: SocketAddr) -> Response {
    let path = target.split('?').next().unwrap_or("");
    let seg: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let seg: Vec<&str> = seg.iter().map(|s| s.as_str()).collect();
    let find = |dataset: bool, owner: &str, name: &str| {
        let id = format!("{owner}/{name}");
        repos.iter().find(|r| r.dataset == dataset && r.id == id)
    };
    let repo_error = |repo: Option<&FakeRepo>, rev: &str| match repo {
        None => Some(Response::new(404).body(r#"{"error":"Not Found"}"#)),
        Some(r) if r.private => Some(
            Response::new(401)
                .header("X-Error-Code", "RepoNotFound")
                .header("X-Error-Message", "Repository not found"),
        ),
        Some(_) if rev != "main" && rev != SHA => {
            Some(Response::new(404).header("X-Error-Code", "RevisionNotFound"))
        }
        Some(_) => None,
    };
    match seg.as_slice() {
        ["api", kind @ ("models" | "datasets"), owner, name, "revision", rev] => {
            let repo = find(*kind == "datasets", owner, name);
            if let Some(e) = repo_error(repo, rev) {
                return e;
            }
            let Some(repo) = repo else {
                return Response::new(500);
            };
            let names = repo
                .files
                .iter()
                .map(|(n, _)| n.clone())
                .chain(repo.listed_only.iter().cloned());
            let siblings: Vec<_> = names
                .map(|n| serde_json::json!({ "rfilename": n }))
                .collect();
            let body = serde_json::json!({ "id": repo.id, "sha": SHA, "siblings": siblings });
            Response::new(200)
                .header("Content-Type", "application/json")
                .body(body.to_string())
        }
        ["api", "resolve-cache", kind @ ("models" | "datasets"), owner, name, sha, file @ ..]
            if *sha == SHA =>
        {
            match find(*kind == "datasets", owner, name).and_then(|r| lookup(r, &file.join("/"))) {
                Some(bytes) => serve(bytes, range)
                    .header("ETag", format!("\"{}\"", etag(bytes)))
                    .header("X-Repo-Commit", SHA),
                None => Response::new(404),
            }
        }
        ["cdn", tag] => {
            let all = repos.iter().flat_map(|r| r.files.iter());
            match all.map(|(_, b)| b).find(|b| etag(b) == *tag) {
                Some(bytes) => serve(bytes, range),
                None => Response::new(404),
            }
        }
        ["datasets", owner, name, "resolve", rev, file @ ..] => {
            resolve(find(true, owner, name), rev, file, range, addr, &repo_error)
        }
        [owner, name, "resolve", rev, file @ ..] => resolve(
            find(false, owner, name),
            rev,
            file,
            range,
            addr,
            &repo_error,
        ),
        _ => Response::new(404),
    }
}

pub fn resolve(
    repo: Option<&FakeRepo>,
    rev: &str,
    file: &[&str],
    range: Option<&str>,
    addr: SocketAddr,
    repo_error: &dyn Fn(Option<&FakeRepo>, &str) -> Option<Response>,
) -> Response {
    if let Some(e) = repo_error(repo, rev) {
        return e;
    }
    let Some(repo) = repo else {
        return Response::new(500);
    };
    let name = file.join("/");
    let Some(bytes) = lookup(repo, &name) else {
        return Response::new(404).header("X-Error-Code", "EntryNotFound");
    };
    let tag = etag(bytes);
    if name.ends_with(".safetensors") {
        // An LFS file: an absolute redirect to the CDN, the real etag in X-Linked-Etag.
        Response::new(302)
            .header("Location", format!("http://{addr}/cdn/{tag}"))
            .header("ETag", "W/\"pointer\"")
            .header("X-Linked-Etag", format!("\"{tag}\""))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("X-Repo-Commit", SHA)
    } else if name == "tokenizer.json" {
        // A relative redirect, which hf-hub follows itself for the metadata.
        let kind = if repo.dataset { "datasets" } else { "models" };
        Response::new(307)
            .header(
                "Location",
                format!(
                    "/api/resolve-cache/{kind}/{}/{SHA}/{}",
                    repo.id,
                    file.join("/")
                ),
            )
            .header("X-Repo-Commit", SHA)
    } else {
        serve(bytes, range)
            .header("ETag", format!("\"{tag}\""))
            .header("X-Repo-Commit", SHA)
    }
}

pub fn lookup<'a>(repo: &'a FakeRepo, name: &str) -> Option<&'a [u8]> {
    repo.files
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b.as_slice())
}

/// 200 with the whole body, or 206 with `Content-Range` for `Range: bytes=a-[b]`.
pub fn serve(bytes: &[u8], range: Option<&str>) -> Response {
    let len = bytes.len();
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return Response::new(200).body(bytes);
    };
    let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
    let start: usize = a.parse().unwrap_or(0);
    let end: usize = b
        .parse()
        .unwrap_or(len.saturating_sub(1))
        .min(len.saturating_sub(1));
    if start >= len || end < start {
        return Response::new(416).header("Content-Range", format!("bytes */{len}"));
    }
    Response::new(206)
        .header("Content-Range", format!("bytes {start}-{end}/{len}"))
        .body(&bytes[start..=end])
}

/// FNV-1a, as hex: a stand-in for the hub's sha256 etags.
pub fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === Fixtures and helpers ===
