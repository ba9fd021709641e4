//! `so8t pull` against a fake hub served from this process on 127.0.0.1 (no internet).
//!
//! The fake answers what hf-hub 0.4.3's sync API asks for:
//! - `GET /api/{models|datasets}/{repo}/revision/{rev}`: the file list (`sha`, `siblings`);
//! - `GET [/datasets]/{repo}/resolve/{rev}/{path}` with `Range: bytes=0-0` (metadata: `etag` or
//!   `x-linked-etag`, `x-repo-commit`, `content-range`) and then `Range: bytes=N-` (the data);
//!   `*.safetensors` answer with a 302 to an absolute `/cdn/{etag}` URL like LFS files on the hub,
//!   `tokenizer.json` with a 307 to a relative `/api/resolve-cache/...` path like small files.

mod common;

use std::path::{Path, PathBuf};

use common::fake_hub::*;

use so8t_model::hub::{pull, PullOptions, RepoKind};
use so8t_model::Error;

fn weights() -> Vec<u8> {
    (0..5000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn model_repo(id: &str) -> FakeRepo {
    let w = weights();
    FakeRepo::new(
        id,
        false,
        &[
            ("config.json", br#"{"model_type":"llama","hidden_size":8}"#),
            ("model.safetensors", &w),
            ("tokenizer.json", br#"{"version":"1.0","model":{}}"#),
            ("tokenizer_config.json", br#"{"eos_token":"</s>"}"#),
            ("README.md", b"# tiny model\n"),
            (".gitattributes", b"*.safetensors filter=lfs\n"),
            ("original/params.json", br#"{"dim":8}"#),
            ("pytorch_model.bin", b"not a pickle"),
        ],
    )
}

fn dataset_repo(id: &str) -> FakeRepo {
    FakeRepo::new(
        id,
        true,
        &[
            ("README.md", b"# tiny data\n"),
            (".gitattributes", b"*.parquet filter=lfs\n"),
            ("data/train.jsonl", b"{\"text\":\"a\"}\n{\"text\":\"b\"}\n"),
            ("data/nested dir/test split.jsonl", b"{\"text\":\"c\"}\n"),
        ],
    )
}

fn options(hub: &FakeHub, tmp: &Path, repo_id: &str, kind: RepoKind) -> PullOptions {
    PullOptions {
        repo_type: kind,
        endpoint: Some(hub.endpoint()),
        cache_dir: Some(tmp.join("hf").join("hub")),
        token: Some(TOKEN.into()),
        ..PullOptions::new(repo_id)
    }
}

/// Every file under `dir`, as sorted `/`-separated relative paths (hidden files included).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            assert!(!ft.is_symlink(), "{} is a symlink", e.path().display());
            if ft.is_dir() {
                walk(base, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(base).expect("prefix").to_path_buf();
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn hub_error(r: so8t_model::Result<so8t_model::hub::PullReport>) -> String {
    match r {
        Err(Error::Hub(msg)) => {
            eprintln!("hub error: {msg}");
            msg
        }
        Err(other) => panic!("expected a hub error, got {other:?}"),
        Ok(rep) => panic!("expected a hub error, got {rep:?}"),
    }
}

fn assert_same_files(repo: &FakeRepo, out: &Path, names: &[&str]) {
    assert_eq!(
        tree(out),
        names.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    for name in names {
        let want = lookup(repo, name).expect("served file");
        let got = std::fs::read(out.join(name)).expect("pulled file");
        assert_eq!(got, want, "{name} differs");
    }
}

// === Tests ===

#[test]
fn model_pull_gets_exactly_the_model_files() {
    let repo = model_repo("acme/tiny-model");
    let hub = FakeHub::start(vec![repo.clone()]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let report = pull(
        &options(&hub, tmp.path(), "acme/tiny-model", RepoKind::Model),
        &out,
    )
    .expect("pull");

    let expected = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    assert_same_files(&repo, &out, &expected);
    assert_eq!(
        report.files,
        expected
            .iter()
            .map(|n| out.join(n))
            .collect::<Vec<PathBuf>>()
    );
    let total: usize = expected
        .iter()
        .map(|n| lookup(&repo, n).map_or(0, |b| b.len()))
        .sum();
    assert_eq!(report.bytes, total as u64);
    assert_eq!(report.commit, SHA);

    let reqs = hub.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path == "/api/models/acme/tiny-model/revision/main"),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().any(|r| r.path.starts_with("/cdn/")),
        "the LFS redirect was not followed: {reqs:?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.path.starts_with("/api/resolve-cache/")),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.contains("README.md") || r.path.contains("pytorch_model")),
        "{reqs:?}"
    );
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        reqs.iter()
            .all(|r| r.auth.as_deref() == Some(bearer.as_str())),
        "token not sent: {reqs:?}"
    );
}

#[test]
fn second_pull_is_served_from_the_cache() {
    let repo = model_repo("acme/tiny-model");
    let hub = FakeHub::start(vec![repo.clone()]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = options(&hub, tmp.path(), "acme/tiny-model", RepoKind::Model);
    pull(&opts, &tmp.path().join("a")).expect("first pull");
    let before = hub.requests().len();
    let report = pull(&opts, &tmp.path().join("b")).expect("second pull");
    let again: Vec<Request> = hub.requests().split_off(before);
    assert_eq!(
        again.len(),
        1,
        "only the file list should be fetched again: {again:?}"
    );
    assert!(again[0].path.starts_with("/api/models/"));
    assert_eq!(report.files.len(), 4);
    assert_same_files(
        &repo,
        &tmp.path().join("b"),
        &[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ],
    );
}

#[test]
fn include_filters_select_files() {
    let repo = model_repo("acme/tiny-model");
    let hub = FakeHub::start(vec![repo.clone()]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = options(&hub, tmp.path(), "acme/tiny-model", RepoKind::Model);

    let out = tmp.path().join("json");
    let opts = PullOptions {
        include: vec!["*.json".into()],
        ..base.clone()
    };
    pull(&opts, &out).expect("pull *.json");
    assert_same_files(
        &repo,
        &out,
        &[
            "config.json",
            "original/params.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ],
    );

    let out = tmp.path().join("named");
    let opts = PullOptions {
        include: vec!["README.md".into(), "origin?l/*".into()],
        ..base.clone()
    };
    let report = pull(&opts, &out).expect("pull README + original/");
    assert_same_files(&repo, &out, &["README.md", "original/params.json"]);
    assert_eq!(
        report.files,
        vec![out.join("README.md"), out.join("original/params.json")]
    );

    let opts = PullOptions {
        include: vec!["config.json".into(), "missing.bin".into()],
        ..base.clone()
    };
    let msg = hub_error(pull(&opts, &tmp.path().join("missing")));
    assert!(
        msg.contains("acme/tiny-model") && msg.contains("missing.bin"),
        "{msg}"
    );
    assert!(!tmp.path().join("missing").exists());

    let opts = PullOptions {
        include: vec!["*.gguf".into()],
        ..base
    };
    let msg = hub_error(pull(&opts, &tmp.path().join("gguf")));
    assert!(
        msg.contains("no file matching") && msg.contains("*.gguf"),
        "{msg}"
    );
}

#[test]
fn dataset_pull_gets_everything_with_subfolders() {
    let repo = dataset_repo("acme/tiny-data");
    let hub = FakeHub::start(vec![repo.clone(), model_repo("acme/tiny-data")]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("data");
    let report = pull(
        &options(&hub, tmp.path(), "acme/tiny-data", RepoKind::Dataset),
        &out,
    )
    .expect("pull");
    assert_same_files(
        &repo,
        &out,
        &[
            ".gitattributes",
            "README.md",
            "data/nested dir/test split.jsonl",
            "data/train.jsonl",
        ],
    );
    assert_eq!(report.files.len(), 4);
    let reqs = hub.requests();
    assert!(
        reqs.iter()
            .any(|r| r.path == "/api/datasets/acme/tiny-data/revision/main"),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().any(|r| r.path
            == "/datasets/acme/tiny-data/resolve/main/data/nested%20dir/test%20split.jsonl"),
        "{reqs:?}"
    );
    assert!(
        !reqs.iter().any(|r| r.path.starts_with("/acme/")),
        "model URLs used for a dataset: {reqs:?}"
    );
}

#[test]
fn missing_or_private_repo_is_a_clear_error() {
    let mut private = model_repo("acme/secret");
    private.private = true;
    let hub = FakeHub::start(vec![model_repo("acme/tiny-model"), private]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");

    let msg = hub_error(pull(
        &options(&hub, tmp.path(), "acme/nope", RepoKind::Model),
        &out,
    ));
    assert!(
        msg.contains("acme/nope") && msg.contains("not found or private"),
        "{msg}"
    );

    let msg = hub_error(pull(
        &options(&hub, tmp.path(), "acme/secret", RepoKind::Model),
        &out,
    ));
    assert!(
        msg.contains("acme/secret") && msg.contains("not found or private"),
        "{msg}"
    );

    let opts = PullOptions {
        revision: "v9".into(),
        ..options(&hub, tmp.path(), "acme/tiny-model", RepoKind::Model)
    };
    let msg = hub_error(pull(&opts, &out));
    assert!(
        msg.contains("acme/tiny-model") && msg.contains("revision v9 not found"),
        "{msg}"
    );

    let msg = hub_error(pull(
        &options(&hub, tmp.path(), "acme/tiny-model", RepoKind::Dataset),
        &out,
    ));
    assert!(msg.contains("dataset repository acme/tiny-model"), "{msg}");
    assert!(!out.exists(), "nothing should be written on failure");
}

#[test]
fn listed_file_missing_on_the_server_is_a_clear_error() {
    let mut repo = model_repo("acme/broken");
    repo.listed_only.push("generation_config.json".into());
    let hub = FakeHub::start(vec![repo]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let msg = hub_error(pull(
        &options(&hub, tmp.path(), "acme/broken", RepoKind::Model),
        &tmp.path().join("out"),
    ));
    assert!(
        msg.contains("acme/broken")
            && msg.contains("generation_config.json")
            && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn model_without_safetensors_is_refused() {
    let repo = FakeRepo::new(
        "acme/pickles",
        false,
        &[("config.json", b"{}"), ("pytorch_model.bin", b"x")],
    );
    let hub = FakeHub::start(vec![repo]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let msg = hub_error(pull(
        &options(&hub, tmp.path(), "acme/pickles", RepoKind::Model),
        &tmp.path().join("out"),
    ));
    assert!(
        msg.contains("acme/pickles") && msg.contains("safetensors"),
        "{msg}"
    );
}

#[test]
fn unsafe_filenames_from_the_server_are_refused() {
    let evil = [
        "../escape.txt",
        "data/../../escape.txt",
        "/tmp/so8t-hub-test-abs.txt",
        "data\\..\\escape.txt",
    ];
    let mut repos = Vec::new();
    for (i, name) in evil.iter().enumerate() {
        let mut r = dataset_repo(&format!("acme/evil{i}"));
        r.listed_only.push(name.to_string());
        repos.push(r);
    }
    // A model pull checks every listed name too, not only the selected ones.
    let mut m = model_repo("acme/evil-model");
    m.listed_only.push("../model.safetensors".into());
    repos.push(m);
    let hub = FakeHub::start(repos);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("a").join("out");

    let cases = evil
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("acme/evil{i}"), RepoKind::Dataset, n.to_string()));
    let cases = cases.chain([(
        "acme/evil-model".to_string(),
        RepoKind::Model,
        "../model.safetensors".to_string(),
    )]);
    for (id, kind, name) in cases {
        let msg = hub_error(pull(&options(&hub, tmp.path(), &id, kind), &out));
        assert!(
            msg.contains(&id) && msg.contains(&name) && msg.contains("refusing"),
            "{msg}"
        );
    }
    assert!(!out.exists());
    assert!(!tmp.path().join("a").join("escape.txt").exists());
    assert!(!tmp.path().join("escape.txt").exists());
    let reqs = hub.requests();
    assert!(
        reqs.iter().all(|r| r.path.starts_with("/api/")),
        "nothing may be downloaded: {reqs:?}"
    );
}

#[test]
fn https_endpoint_has_tls_compiled_in() {
    // hf-hub's `ureq` feature keeps ureq's default `tls` feature (rustls + webpki roots). Without a
    // TLS backend ureq fails with "Unknown Scheme: ... no TLS backend is configured"; with one it
    // starts a handshake, which this plain-HTTP server cuts short.
    let hub = FakeHub::start(Vec::new());
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = PullOptions {
        endpoint: Some(format!("https://{}", hub.addr)),
        ..options(&hub, tmp.path(), "acme/tiny-model", RepoKind::Model)
    };
    let msg = hub_error(pull(&opts, &tmp.path().join("out")));
    assert!(msg.contains("network error"), "{msg}");
    assert!(
        !msg.contains("Unknown Scheme") && !msg.contains("no TLS backend"),
        "{msg}"
    );
}

#[test]
fn bad_arguments_are_refused_before_any_request() {
    let hub = FakeHub::start(Vec::new());
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    for id in ["", "../x", "a/b/c", "a b"] {
        let msg = hub_error(pull(&options(&hub, tmp.path(), id, RepoKind::Model), &out));
        assert!(msg.contains("invalid repository id"), "{msg}");
    }
    let opts = PullOptions {
        revision: "../../x".into(),
        ..options(&hub, tmp.path(), "acme/m", RepoKind::Model)
    };
    assert!(hub_error(pull(&opts, &out)).contains("invalid revision"));
    let opts = PullOptions {
        endpoint: Some("ftp://example".into()),
        ..options(&hub, tmp.path(), "acme/m", RepoKind::Model)
    };
    assert!(hub_error(pull(&opts, &out)).contains("not an http(s) URL"));
    assert!(hub.requests().is_empty());
    assert!(
        !format!("{opts:?}").contains(TOKEN),
        "Debug must not print the token"
    );
}
