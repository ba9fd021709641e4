//! The pipeline panel: the journal's steps (as `so8t pipeline status`), the pipeline's training
//! runs, the A/B result (`steps/ab/ab.json`) and the report's files, served only from the list.

use std::path::Path;

use serde_json::{json, Value};

use crate::state::AppState;
use crate::{Error, Result};

/// Kinds of report files shown, with their content types.
const FILE_TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("json", "application/json"),
];

fn content_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?;
    FILE_TYPES.iter().find(|(e, _)| *e == ext).map(|(_, t)| *t)
}

/// The report's files of the pipeline in `dir`: `(relative path, bytes)`.
pub fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("steps/ab")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                if out.len() < 200 {
                    stack.push(p);
                }
            } else if content_type(&p).is_some() {
                if let Ok(rel) = p.strip_prefix(dir) {
                    let rel: Vec<String> = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect();
                    out.push((rel.join("/"), md.len()));
                }
            }
        }
    }
    out.sort();
    out
}

/// `/api/pipeline`.
pub fn overview(state: &AppState, id: &str) -> Result<Value> {
    let dir = state.pipeline_dir(id)?;
    let status = so8t_pipeline::status::status(&dir).map_err(Error::Unreadable)?;
    let mut v = serde_json::to_value(&status).unwrap_or(Value::Null);
    let runs: Vec<String> = state
        .catalog()
        .runs
        .into_iter()
        .filter(|r| r.pipeline.as_deref() == Some(id))
        .map(|r| r.id)
        .collect();
    let ab = std::fs::read_to_string(dir.join("steps/ab/ab.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    v["id"] = json!(id);
    v["runs"] = json!(runs);
    v["ab"] = ab.unwrap_or(Value::Null);
    v["files"] = files(&dir)
        .into_iter()
        .map(|(path, bytes)| json!({"path": path, "bytes": bytes}))
        .collect();
    Ok(v)
}

/// `/api/pipeline/file`: one listed file's bytes and content type.
pub fn file(state: &AppState, id: &str, path: &str) -> Result<(Vec<u8>, &'static str)> {
    let dir = state.pipeline_dir(id)?;
    if !files(&dir).iter().any(|(p, _)| p == path) {
        return Err(Error::NotFound(format!(
            "{path:?} is not a report file of pipeline {id:?}"
        )));
    }
    let full = dir.join(path);
    let ty = content_type(&full).unwrap_or("application/octet-stream");
    let bytes =
        std::fs::read(&full).map_err(|e| Error::NotFound(format!("{}: {e}", full.display())))?;
    Ok((bytes, ty))
}
