//! Downloads from the Hugging Face hub (`so8t pull`).
//!
//! [`pull`] lists a repository's files, picks the ones a model folder needs (or the ones matching
//! [`PullOptions::include`]), downloads them through `hf-hub`'s cache and copies them into a plain
//! output folder: regular files, no symlinks into the cache, each written atomically.
//!
//! ```no_run
//! use so8t_model::hub::{pull, PullOptions};
//! let opts = PullOptions::new("HuggingFaceTB/SmolLM2-135M-Instruct");
//! let report = pull(&opts, "smollm2".as_ref())?;
//! println!("{} files, {} bytes, commit {}", report.files.len(), report.bytes, report.commit);
//! # Ok::<(), so8t_model::Error>(())
//! ```

use std::fmt;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Component, Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// The hub used when neither [`PullOptions::endpoint`] nor `HF_ENDPOINT` says otherwise.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What a model pull takes when `include` is empty (top-level files only, whichever exist).
const MODEL_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "*.safetensors",
    "model.safetensors.index.json",
    "added_tokens.json",
];

/// The kind of hub repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RepoKind {
    /// A model repository (`{endpoint}/{repo_id}`).
    #[default]
    Model,
    /// A dataset repository (`{endpoint}/datasets/{repo_id}`).
    Dataset,
}

/// What to fetch.
#[derive(Clone)]
pub struct PullOptions {
    /// The repository, e.g. `"HuggingFaceTB/SmolLM2-135M-Instruct"`.
    pub repo_id: String,
    /// Model or dataset repository.
    pub repo_type: RepoKind,
    /// Branch, tag or commit; [`PullOptions::new`] sets `"main"`.
    pub revision: String,
    /// The hub's base URL; `None` takes `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// The `hf-hub` cache folder; `None` takes `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Access token; `None` takes `HF_TOKEN`, else the `token` file beside the cache folder.
    pub token: Option<String>,
    /// Filters on repository paths, `*` matching any run of characters (`/` included) and `?`
    /// one character. Empty: a model's config, tokenizer, chat template and top-level
    /// `*.safetensors` files; all of a dataset. A filter without wildcards must name a file.
    pub include: Vec<String>,
    /// Whether to draw a progress bar per file on stderr.
    pub progress: bool,
}

impl PullOptions {
    /// A model pull of `repo_id` at `main`, with every other setting from the environment.
    pub fn new(repo_id: impl Into<String>) -> Self {
        PullOptions {
            repo_id: repo_id.into(),
            repo_type: RepoKind::Model,
            revision: "main".into(),
            endpoint: None,
            cache_dir: None,
            token: None,
            include: Vec::new(),
            progress: false,
        }
    }
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("repo_id", &self.repo_id)
            .field("repo_type", &self.repo_type)
            .field("revision", &self.revision)
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("include", &self.include)
            .field("progress", &self.progress)
            .finish()
    }
}

/// What [`pull`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullReport {
    /// The files written, `out_dir` joined with each repository path, sorted.
    pub files: Vec<PathBuf>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// The commit the revision resolved to.
    pub commit: String,
}

/// Downloads the selected files of a hub repository into `out_dir` (created if needed).
///
/// Files go through the `hf-hub` cache (a file already cached for the resolved commit is not
/// downloaded again), then are copied into `out_dir` atomically; sub-paths such as
/// `data/train.parquet` become sub-folders. Repository paths that are absolute or contain `..`
/// are refused before anything is downloaded. Every failure is an [`Error::Hub`] naming the
/// repository, the file where there is one, and the reason.
pub fn pull(opts: &PullOptions, out_dir: &Path) -> Result<PullReport> {
    let ctx = Ctx::new(opts)?;
    let repo = Repo::with_revision(
        opts.repo_id.clone(),
        match opts.repo_type {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        },
        opts.revision.clone(),
    );
    let mut builder = ApiBuilder::from_cache(Cache::new(ctx.cache_dir.clone()))
        .with_endpoint(ctx.endpoint.clone())
        .with_progress(opts.progress)
        .with_retries(3)
        .with_user_agent("so8t", env!("CARGO_PKG_VERSION"));
    if let Some(token) = &ctx.token {
        builder = builder.with_token(Some(token.clone()));
    }
    let api = builder.build().map_err(|e| ctx.fail(None, e))?;
    let api = api.repo(repo.clone());

    let info = ctx.call(None, || api.info())?;
    let commit = info.sha.clone();
    if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ctx.err(
            None,
            format!("the hub returned an invalid commit id {commit:?}"),
        ));
    }
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    for name in &names {
        check_repo_path(name)
            .map_err(|why| ctx.err(Some(name), format!("refusing this file: {why}")))?;
    }
    let selected = select(&names, opts, &ctx)?;

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let snapshot = Cache::new(ctx.cache_dir.clone())
        .path()
        .join(repo.folder_name())
        .join("snapshots")
        .join(&commit);
    let mut report = PullReport {
        files: Vec::new(),
        bytes: 0,
        commit,
    };
    for name in &selected {
        let remote = url_path(name);
        let expected = snapshot.join(&remote);
        let cached = if expected.is_file() {
            expected
        } else {
            let got = ctx.call(Some(name), || api.download(&remote))?;
            if got != expected {
                return Err(ctx.err(
                    Some(name),
                    format!(
                        "the hub served a commit other than {} (did the revision move during \
                         the pull? run it again)",
                        report.commit
                    ),
                ));
            }
            got
        };
        let target = out_dir.join(name);
        let mut src = File::open(&cached).map_err(|e| Error::io(&cached, e))?;
        let mut copied = 0u64;
        write_atomic(&target, |w| {
            copied = std::io::copy(&mut src, w)?;
            Ok(())
        })?;
        tracing::info!(file = %name, bytes = copied, "pulled");
        report.bytes += copied;
        report.files.push(target);
    }
    Ok(report)
}

/// The settled endpoint, cache and token of a pull, and how to word its errors.
struct Ctx {
    repo_id: String,
    noun: &'static str,
    revision: String,
    endpoint: String,
    cache_dir: PathBuf,
    /// The token to set on top of hf-hub's own (which is read from the token file).
    token: Option<String>,
    /// Whether any token will be sent (for the wording of 401/403/404 errors).
    has_token: bool,
}

impl Ctx {
    fn new(opts: &PullOptions) -> Result<Ctx> {
        let noun = match opts.repo_type {
            RepoKind::Model => "repository",
            RepoKind::Dataset => "dataset repository",
        };
        check_repo_id(&opts.repo_id).map_err(|why| {
            Error::Hub(format!("invalid repository id {:?}: {why}", opts.repo_id))
        })?;
        check_revision(&opts.revision).map_err(|why| {
            Error::Hub(format!(
                "{noun} {}: invalid revision {:?}: {why}",
                opts.repo_id, opts.revision
            ))
        })?;
        let endpoint = non_empty(opts.endpoint.clone())
            .or_else(|| non_empty(std::env::var("HF_ENDPOINT").ok()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = endpoint.trim().trim_end_matches('/').to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(Error::Hub(format!(
                "endpoint {endpoint:?} is not an http(s) URL"
            )));
        }
        let cache_dir = match &opts.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        // hf-hub itself reads only the token file (`<cache>/../token`); HF_TOKEN comes first.
        let token =
            non_empty(opts.token.clone()).or_else(|| non_empty(std::env::var("HF_TOKEN").ok()));
        let has_token = token.is_some() || Cache::new(cache_dir.clone()).token().is_some();
        Ok(Ctx {
            repo_id: opts.repo_id.clone(),
            noun,
            revision: opts.revision.clone(),
            endpoint,
            cache_dir,
            token,
            has_token,
        })
    }

    /// An error about the repository, or one of its files.
    fn err(&self, file: Option<&str>, reason: impl fmt::Display) -> Error {
        match file {
            Some(f) => Error::Hub(format!("{} {}: {f}: {reason}", self.noun, self.repo_id)),
            None => Error::Hub(format!(
                "{} {} (revision {}): {reason}",
                self.noun, self.repo_id, self.revision
            )),
        }
    }

    /// Runs one hf-hub call, turning its errors (and any panic inside it: hf-hub 0.4.3 unwraps
    /// a few things it reads from the server) into [`Error::Hub`].
    fn call<T>(
        &self,
        file: Option<&str>,
        f: impl FnOnce() -> std::result::Result<T, ApiError>,
    ) -> Result<T> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.fail(file, e)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".into());
                Err(self.err(
                    file,
                    format!(
                        "malformed reply from {} (hf-hub panicked: {msg})",
                        self.endpoint
                    ),
                ))
            }
        }
    }

    /// Words an hf-hub error.
    fn fail(&self, file: Option<&str>, e: ApiError) -> Error {
        let token_hint = if self.has_token {
            "check that HF_TOKEN grants access to it"
        } else {
            "set HF_TOKEN"
        };
        match e {
            ApiError::RequestError(e) => {
                let text = e.to_string();
                let Some(resp) = (*e).into_response() else {
                    return self.err(file, format!("network error: {text}"));
                };
                let status = resp.status();
                let code = resp.header("x-error-code").unwrap_or("").to_string();
                let server_msg = resp
                    .header("x-error-message")
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default();
                let (noun, repo, rev) = (self.noun, &self.repo_id, &self.revision);
                match (status, code.as_str(), file) {
                    (_, "RevisionNotFound", _) => {
                        Error::Hub(format!("revision {rev} not found in {noun} {repo}"))
                    }
                    (_, "EntryNotFound", Some(_)) | (404, "", Some(_)) => {
                        self.err(file, format!("file not found at revision {rev}"))
                    }
                    (_, "GatedRepo", _) | (403, _, _) => self.err(
                        file,
                        format!(
                            "access denied (HTTP {status}{server_msg}); a gated repository \
                             needs its conditions accepted at {}/{} and a token: {token_hint}",
                            self.endpoint,
                            web_path(self.noun, repo)
                        ),
                    ),
                    (401, _, _) | (404, _, _) | (_, "RepoNotFound", _) => Error::Hub(format!(
                        "{noun} {repo} not found or private ({token_hint}){}",
                        file.map(|f| format!(" while fetching {f}"))
                            .unwrap_or_default()
                    )),
                    (429, _, _) => self.err(
                        file,
                        format!(
                            "rate-limited by the hub (HTTP 429): wait and retry, or {token_hint}"
                        ),
                    ),
                    _ => {
                        let url = resp.get_url().to_string();
                        self.err(file, format!("HTTP {status} from {url}{server_msg}"))
                    }
                }
            }
            ApiError::MissingHeader(h) | ApiError::InvalidHeader(h) => self.err(
                file,
                format!(
                    "the reply has no valid `{h}` header (is {} a Hugging Face hub?)",
                    self.endpoint
                ),
            ),
            ApiError::IoError(e) if file.is_none() => {
                self.err(None, format!("unreadable file list from the hub: {e}"))
            }
            ApiError::IoError(e) => {
                self.err(file, format!("{e} (cache: {})", self.cache_dir.display()))
            }
            ApiError::TooManyRetries(inner) => self.fail(file, *inner),
            ApiError::LockAcquisition(p) => self.err(
                file,
                format!(
                    "another process is downloading it (lock {} is held)",
                    p.display()
                ),
            ),
            ApiError::InvalidResume => self.err(
                file,
                format!(
                    "a partial download in {} is larger than the file; delete the `*.part` files \
                     there and retry",
                    self.cache_dir.display()
                ),
            ),
            other => self.err(file, other),
        }
    }
}

fn web_path(noun: &str, repo: &str) -> String {
    if noun.starts_with("dataset") {
        format!("datasets/{repo}")
    } else {
        repo.to_string()
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// hf-hub's default cache (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`), found without
/// its `Cache::default`, which panics when there is no home folder.
fn default_cache_dir() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("HF_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home).join("hub"));
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Hub("no cache folder: set HF_HOME or give a cache folder".into()))?;
    Ok(PathBuf::from(home)
        .join(".cache")
        .join("huggingface")
        .join("hub"))
}

/// `owner/name` or `name`, of the characters the hub allows.
fn check_repo_id(id: &str) -> std::result::Result<(), &'static str> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err("expected `name` or `owner/name`");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
    {
        return Err("only letters, digits, `-`, `_` and `.` are allowed");
    }
    if id.contains("..") || parts.iter().any(|p| p.starts_with('.')) {
        return Err("`..` and leading dots are not allowed");
    }
    Ok(())
}

/// A branch, tag or commit; it becomes a path in the cache (`refs/<revision>`), so no `..`.
fn check_revision(rev: &str) -> std::result::Result<(), &'static str> {
    if rev.is_empty() {
        return Err("empty");
    }
    if rev
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err("contains whitespace, a control character or `\\`");
    }
    if rev.starts_with('/')
        || rev
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err("contains an empty, `.` or `..` path segment");
    }
    Ok(())
}

/// A repository path must stay inside the output folder: relative, `/`-separated, no `..`.
fn check_repo_path(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty path");
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err("path contains `\\` or a control character");
    }
    if name.starts_with('/') || Path::new(name).is_absolute() {
        return Err("absolute path");
    }
    if name
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err("path contains an empty, `.` or `..` segment");
    }
    if !Path::new(name)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err("path is not a plain relative path");
    }
    Ok(())
}

/// The files of the repository to pull, sorted.
fn select(names: &[String], opts: &PullOptions, ctx: &Ctx) -> Result<Vec<String>> {
    for pattern in &opts.include {
        if !pattern.contains(['*', '?']) && !names.iter().any(|n| n == pattern) {
            return Err(ctx.err(Some(pattern), "no such file in the repository"));
        }
    }
    let mut picked: Vec<String> = names
        .iter()
        .filter(|n| {
            if !opts.include.is_empty() {
                opts.include.iter().any(|p| glob_match(p, n))
            } else {
                match opts.repo_type {
                    RepoKind::Model => {
                        !n.contains('/') && MODEL_FILES.iter().any(|p| glob_match(p, n))
                    }
                    RepoKind::Dataset => true,
                }
            }
        })
        .cloned()
        .collect();
    picked.sort();
    picked.dedup();
    if picked.is_empty() {
        let what = if opts.include.is_empty() {
            "has no files".to_string()
        } else {
            format!("has no file matching {:?}", opts.include)
        };
        return Err(ctx.err(None, what));
    }
    if opts.include.is_empty()
        && opts.repo_type == RepoKind::Model
        && !picked.iter().any(|n| n.ends_with(".safetensors"))
    {
        return Err(ctx.err(
            None,
            "has no top-level *.safetensors weights (so8t reads safetensors only; use include \
             filters to pull other files)",
        ));
    }
    Ok(picked)
}

/// Shell-style match of a whole string: `*` is any run of characters (`/` included), `?` one.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The repository path as it goes into `{endpoint}/{repo}/resolve/{revision}/{path}`: hf-hub
/// does not escape it, so bytes outside `A-Za-z0-9-._~/` are percent-encoded here (as
/// `huggingface_hub` does). Plain names are unchanged.
fn url_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(glob_match("*.safetensors", "sub/model.safetensors"));
        assert!(!glob_match("*.safetensors", "model.safetensors.index.json"));
        assert!(glob_match("config.json", "config.json"));
        assert!(!glob_match("config.json", "xconfig.json"));
        assert!(glob_match("tokenizer?json", "tokenizer.json"));
        assert!(glob_match("data/*", "data/a/b.parquet"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("**", "x"));
    }

    #[test]
    fn repo_paths() {
        for ok in [
            "config.json",
            "data/train.parquet",
            "a b/c%2e.txt",
            ".gitattributes",
        ] {
            assert!(check_repo_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\b",
            "a/..",
            "x\0",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_and_revisions() {
        assert!(check_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct").is_ok());
        assert!(check_repo_id("gpt2").is_ok());
        for bad in ["", "a/b/c", "../x", "a/..", "a b", "/a", "a/"] {
            assert!(check_repo_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_revision("main").is_ok());
        assert!(check_revision("refs/pr/1").is_ok());
        for bad in ["", "../x", "a/../b", "/x", "a b"] {
            assert!(check_revision(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("data/train-0.parquet"), "data/train-0.parquet");
        assert_eq!(url_path("a b#?.txt"), "a%20b%23%3F.txt");
        assert_eq!(url_path("é"), "%C3%A9");
    }
}
