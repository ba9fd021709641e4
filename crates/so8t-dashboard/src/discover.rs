//! Finding runs and pipelines below the runs folder: a folder with a `run.db` is a training run,
//! one with a `pipeline.json` is a pipeline (its training runs live in its `work/train-*`).
//! Ids are paths relative to the runs folder, so a URL can never name a file outside it.

use std::path::{Component, Path, PathBuf};

/// A folder found below the runs folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Path relative to the runs folder, `/`-separated.
    pub id: String,
    /// Absolute (or as given) path.
    pub path: PathBuf,
    /// For a run: the pipeline folder it lies in, if any.
    pub pipeline: Option<String>,
}

/// Runs and pipelines below a folder.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Training runs.
    pub runs: Vec<Found>,
    /// Pipelines.
    pub pipelines: Vec<Found>,
}

/// Folders a run or pipeline keeps its own things in; never searched.
const SKIP: &[&str] = &[
    "checkpoints",
    "final",
    "model",
    "data",
    "store",
    "steps",
    "logs",
    "node_modules",
    "target",
];

fn id_of(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Walks `root` down to `depth` levels (the root itself may be a run or a pipeline).
pub fn scan(root: &Path, depth: usize) -> Catalog {
    let mut out = Catalog::default();
    walk(root, root, depth, None, &mut out);
    out.runs.sort_by(|a, b| a.id.cmp(&b.id));
    out.pipelines.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn walk(root: &Path, dir: &Path, depth: usize, pipeline: Option<&str>, out: &mut Catalog) {
    let id = id_of(root, dir);
    let mut pipeline = pipeline.map(str::to_string);
    if dir.join("pipeline.json").is_file() {
        out.pipelines.push(Found {
            id: id.clone(),
            path: dir.to_path_buf(),
            pipeline: None,
        });
        pipeline = Some(id.clone());
    }
    if dir.join(so8t_store::DB_FILE).is_file() {
        out.runs.push(Found {
            id,
            path: dir.to_path_buf(),
            pipeline,
        });
        // A run folder holds no further runs.
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        // Symbolic links to run folders count (the depth limit ends any loop).
        .filter(|e| e.path().is_dir())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && !SKIP.contains(&name.as_ref())
        })
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    for sub in subdirs {
        walk(root, &sub, depth - 1, pipeline.as_deref(), out);
    }
}

/// Turns an id from a URL into a folder below `root`, refusing anything that would leave it
/// (`..`, absolute paths, empty parts).
pub fn resolve(root: &Path, id: &str) -> Option<PathBuf> {
    if id == "." {
        return Some(root.to_path_buf());
    }
    if id.is_empty() || id.starts_with('/') || id.contains('\\') {
        return None;
    }
    let mut p = root.to_path_buf();
    for part in id.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        p.push(part);
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_runs_and_pipelines_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in [
            "a",
            "pipe/work/train-1",
            "pipe/steps/x",
            "deep/er",
            "a/checkpoints/s",
        ] {
            std::fs::create_dir_all(r.join(p)).unwrap();
        }
        std::fs::write(r.join("a/run.db"), b"").unwrap();
        std::fs::write(r.join("a/checkpoints/s/run.db"), b"").unwrap();
        std::fs::write(r.join("pipe/pipeline.json"), b"{}").unwrap();
        std::fs::write(r.join("pipe/work/train-1/run.db"), b"").unwrap();
        std::fs::write(r.join("pipe/steps/x/run.db"), b"").unwrap();
        std::fs::write(r.join("deep/er/run.db"), b"").unwrap();
        let f = scan(r, 4);
        let ids: Vec<_> = f.runs.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["a", "deep/er", "pipe/work/train-1"]);
        assert_eq!(f.runs[2].pipeline.as_deref(), Some("pipe"));
        assert_eq!(f.pipelines.len(), 1);
        assert_eq!(scan(r, 1).runs.len(), 1);
        assert_eq!(resolve(r, "deep/er"), Some(r.join("deep").join("er")));
        for bad in ["../x", "a/../../x", "/etc", "", "a//b", "a\\b"] {
            assert_eq!(resolve(r, bad), None, "{bad}");
        }
    }
}
