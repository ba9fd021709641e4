//! The model store, laid out like Ollama's `~/.ollama/models` so that either program can read
//! the other's models:
//!
//! ```text
//! <models>/blobs/sha256-<hex>                          content-addressed blobs
//! <models>/manifests/<host>/<namespace>/<model>/<tag>  JSON manifests (schema 2)
//! ```
//!
//! A manifest names a config blob (format, family, parameter size, quantization) and layers:
//! the GGUF (`application/vnd.ollama.image.model`), and optionally an adapter, the Go chat
//! template, the SYSTEM prompt, the parameters (JSON), licenses and MESSAGEs.
//!
//! Where the store is: [`Library::open`] takes the models folder itself (so
//! `--store ~/.ollama/models` serves what Ollama pulled); [`default_models_dir`] is
//! `<root>/models` with the root [`default_root`]: `$SO8T_HOME`, else `~/.so8t`.
//!
//! Templates: when a Modelfile has no `TEMPLATE`, no template layer is stored (also when the
//! base model is a GGUF with `tokenizer.chat_template`): [`ResolvedModel::template`] is then
//! `None` and the server uses the GGUF's Jinja chat template.
//!
//! Blobs are written once (temp file in `blobs/`, fsync, rename, fsync the folder) and never
//! rewritten; manifests are replaced atomically; inputs are only read. [`Library::resolve`]
//! checks every blob's size and, once per process per blob version, its sha256.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Value as J};
use so8t_gguf::modelfile::{ModelfileError, ModelfileMessage, ParsedModelfile};

mod create;
mod info;
mod name;
mod store;

pub use info::{details, human_number, model_info, ModelDetails, ModelParams};
pub use name::{parse_name, ModelName, DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG};
pub use store::{
    Layer, Manifest, ModelConfig, RootFs, MEDIA_ADAPTER, MEDIA_CONFIG, MEDIA_LICENSE,
    MEDIA_MANIFEST, MEDIA_MESSAGES, MEDIA_MODEL, MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE,
};

/// Errors of the store; each names the model, file or digest at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryError {
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A model name breaks Ollama's rules.
    #[error("invalid model name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No such model in the store.
    #[error("model {0:?} not found")]
    NotFound(String),
    /// A blob's content does not hash to its digest.
    #[error("{path}: corrupt blob {digest}: its content hashes to {actual}")]
    CorruptBlob {
        /// The expected digest.
        digest: String,
        /// The blob file.
        path: PathBuf,
        /// The digest of what is there.
        actual: String,
    },
    /// A blob named by a manifest is absent.
    #[error("model {model}: blob {digest} is missing ({path})")]
    MissingBlob {
        /// The model.
        model: String,
        /// The digest.
        digest: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// A blob has another size than its manifest says.
    #[error(
        "model {model}: blob {digest} ({path}) has {actual} bytes, the manifest says {expected}"
    )]
    BlobSize {
        /// The model.
        model: String,
        /// The digest.
        digest: String,
        /// The blob file.
        path: PathBuf,
        /// Bytes per the manifest.
        expected: u64,
        /// Bytes on disk.
        actual: u64,
    },
    /// A manifest or a layer it names cannot be read.
    #[error("model {model}: bad manifest: {msg}")]
    BadManifest {
        /// The model.
        model: String,
        /// What is wrong.
        msg: String,
    },
    /// A file is not a valid GGUF.
    #[error("{path}: not a valid GGUF file: {msg}")]
    BadGguf {
        /// The file.
        path: PathBuf,
        /// The reader's error.
        msg: String,
    },
    /// The Modelfile's FROM (or ADAPTER) cannot be used.
    #[error("{what} {value:?}: {msg}")]
    Source {
        /// `FROM` or `ADAPTER`.
        what: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong.
        msg: String,
    },
    /// A Modelfile does not parse.
    #[error(transparent)]
    Modelfile(#[from] ModelfileError),
    /// The Modelfile at `path` does not parse.
    #[error("{path}: {source}")]
    ModelfileAt {
        /// The Modelfile.
        path: PathBuf,
        /// The error, with its line.
        source: ModelfileError,
    },
}

/// Reads and parses the Modelfile at `path` (errors name the file and the line).
pub fn read_modelfile(path: &Path) -> Result<ParsedModelfile> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    so8t_gguf::modelfile::parse(&text).map_err(|source| LibraryError::ModelfileAt {
        path: path.to_path_buf(),
        source,
    })
}

/// `Result` with [`LibraryError`].
pub type Result<T, E = LibraryError> = std::result::Result<T, E>;

/// The so8t home: `$SO8T_HOME` when set and not empty, else `~/.so8t` (`$HOME`; `.so8t` in the
/// current folder when there is no home).
pub fn default_root() -> PathBuf {
    match std::env::var_os("SO8T_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map_or_else(
                || PathBuf::from(".so8t"),
                |h| PathBuf::from(h).join(".so8t"),
            ),
    }
}

/// The models folder: `explicit` when given, else `<default_root()>/models`.
pub fn default_models_dir(explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| default_root().join("models"), Path::to_path_buf)
}

/// A model in [`Library::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// Short name (`smol:latest`).
    pub name: String,
    /// sha256 (hex) of the manifest file.
    pub digest: String,
    /// Sum of the layers' sizes.
    pub size: u64,
    /// The manifest's modification time.
    pub modified: SystemTime,
    /// Format, family, parameter size and quantization, from the config blob (as Ollama's
    /// `/api/tags` reports them; empty when the config cannot be read).
    pub details: ModelDetails,
}

/// What [`Library::show`] reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Short name.
    pub name: String,
    /// A Modelfile recreating the model (FROM the model blob's path), like `ollama show
    /// --modelfile`.
    pub modelfile: String,
    /// The Go template layer, if any.
    pub template: Option<String>,
    /// The SYSTEM layer, if any.
    pub system: Option<String>,
    /// The parameters as `ollama show` prints them (`name<padding> value` lines).
    pub parameters: String,
    /// The parameters layer (JSON object; empty when absent).
    pub params: Map<String, J>,
    /// The license layers.
    pub license: Vec<String>,
    /// The MESSAGEs.
    pub messages: Vec<ModelfileMessage>,
    /// The GGUF blob.
    pub model_path: PathBuf,
    /// Format, family, parameter size, quantization.
    pub details: ModelDetails,
    /// The GGUF metadata as JSON (arrays of more than 5 items as null).
    pub model_info: Map<String, J>,
    /// The manifest.
    pub manifest: Manifest,
}

/// A model ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    /// Short name.
    pub name: String,
    /// The GGUF blob.
    pub model_path: PathBuf,
    /// Adapter blobs.
    pub adapters: Vec<PathBuf>,
    /// The Go template (None: use the GGUF's `tokenizer.chat_template`).
    pub template: Option<String>,
    /// The SYSTEM prompt.
    pub system: Option<String>,
    /// Typed parameters.
    pub params: ModelParams,
    /// The MESSAGEs (a conversation prefix).
    pub messages: Vec<ModelfileMessage>,
    /// The config blob.
    pub config: ModelConfig,
    /// sha256 (hex) of the manifest.
    pub digest: String,
}

/// The store at one models folder.
#[derive(Debug, Clone)]
pub struct Library {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Library {
    /// Opens (creating `blobs/` and `manifests/` when absent) the models folder `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        for sub in ["blobs", "manifests"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io(&p))?;
        }
        Ok(Library {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens [`default_models_dir`]`(None)`.
    pub fn open_default() -> Result<Self> {
        Self::open(&default_models_dir(None))
    }

    /// The models folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        store::blob_path(&self.dir, digest)
    }

    fn manifest_path(&self, name: &ModelName) -> PathBuf {
        self.dir.join("manifests").join(name.manifest_rel())
    }

    /// The manifest of `name`, its bytes and its parsed name.
    pub fn manifest(&self, name: &str) -> Result<(Manifest, Vec<u8>, ModelName)> {
        let n = parse_name(name)?;
        let (m, bytes) = store::read_manifest(&self.manifest_path(&n), &n.to_string())?;
        Ok((m, bytes, n))
    }

    /// Every model, sorted by name.
    pub fn list(&self) -> Result<Vec<ModelEntry>> {
        let mut out = Vec::new();
        let root = self.dir.join("manifests");
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            for e in fs::read_dir(&dir).map_err(io(&dir))? {
                let e = e.map_err(io(&dir))?;
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if depth < 3 {
                    if p.is_dir() {
                        stack.push((p, depth + 1));
                    }
                    continue;
                }
                let rel: Vec<String> = p
                    .strip_prefix(&root)
                    .unwrap_or(&p)
                    .iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect();
                let Ok(name) = parse_name(&format!("{}/{}/{}:{}", rel[0], rel[1], rel[2], rel[3]))
                else {
                    continue;
                };
                let Ok((m, bytes)) = store::read_manifest(&p, &name.to_string()) else {
                    continue;
                };
                let modified = e.metadata().and_then(|m| m.modified()).map_err(io(&p))?;
                let details = self
                    .json_layer::<ModelConfig>(&name.to_string(), &m.config)
                    .map(|c| c.details())
                    .unwrap_or_default();
                out.push(ModelEntry {
                    name: name.to_string(),
                    digest: store::digest_of(&bytes)["sha256:".len()..].to_string(),
                    size: m.layers.iter().map(|l| l.size).sum(),
                    modified,
                    details,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn text_layer(&self, model: &str, l: &Layer) -> Result<String> {
        let p = store::check_blob(&self.dir, model, l)?;
        let bytes = fs::read(&p).map_err(io(&p))?;
        String::from_utf8(bytes).map_err(|_| LibraryError::BadManifest {
            model: model.to_string(),
            msg: format!("{} layer {} is not UTF-8", l.media_type, l.digest),
        })
    }

    fn json_layer<T: serde::de::DeserializeOwned>(&self, model: &str, l: &Layer) -> Result<T> {
        let text = self.text_layer(model, l)?;
        serde_json::from_str(&text).map_err(|e| LibraryError::BadManifest {
            model: model.to_string(),
            msg: format!("{} layer {}: {e}", l.media_type, l.digest),
        })
    }

    /// Everything about `name` (reads the GGUF's header for the details).
    pub fn show(&self, name: &str) -> Result<ModelInfo> {
        let r = self.resolve(name)?;
        let (manifest, _, n) = self.manifest(name)?;
        let model = n.to_string();
        let (mut params, mut license) = (Map::new(), Vec::new());
        for l in &manifest.layers {
            match l.media_type.as_str() {
                MEDIA_PARAMS => params = self.json_layer(&model, l)?,
                MEDIA_LICENSE => license.push(self.text_layer(&model, l)?),
                _ => {}
            }
        }
        let gguf = so8t_gguf::GgufFile::open(&r.model_path).map_err(|e| LibraryError::BadGguf {
            path: r.model_path.clone(),
            msg: e.to_string(),
        })?;
        let mut details = info::details(&gguf);
        details.parent_model = manifest
            .layers
            .iter()
            .find(|l| l.media_type == MEDIA_MODEL)
            .and_then(|l| l.from.clone())
            .unwrap_or_default();
        let mf = ParsedModelfile {
            from: r.model_path.display().to_string(),
            adapters: r.adapters.iter().map(|p| p.display().to_string()).collect(),
            template: r.template.clone(),
            system: r.system.clone(),
            parameters: info::params_to_modelfile(&params),
            licenses: license.clone(),
            messages: r.messages.clone(),
        };
        let modelfile = format!(
            "# Modelfile generated by \"so8t show\"\n# To build a new Modelfile based on this, \
             replace FROM with:\n# FROM {model}\n\n{}",
            mf.to_text()
        );
        Ok(ModelInfo {
            name: model,
            modelfile,
            template: r.template,
            system: r.system,
            parameters: info::params_text(&params),
            params,
            license,
            messages: r.messages,
            model_path: r.model_path,
            details,
            model_info: info::model_info(&gguf),
            manifest,
        })
    }

    /// The files and settings of `name`, after checking every blob (size always; sha256 once
    /// per process per blob version: a mismatch is [`LibraryError::CorruptBlob`]).
    pub fn resolve(&self, name: &str) -> Result<ResolvedModel> {
        let (m, bytes, n) = self.manifest(name)?;
        let model = n.to_string();
        let config: ModelConfig = self.json_layer(&model, &m.config)?;
        let mut r = ResolvedModel {
            name: model.clone(),
            model_path: PathBuf::new(),
            adapters: Vec::new(),
            template: None,
            system: None,
            params: ModelParams::default(),
            messages: Vec::new(),
            config,
            digest: store::digest_of(&bytes)["sha256:".len()..].to_string(),
        };
        for l in &m.layers {
            let path = store::check_blob(&self.dir, &model, l)?;
            match l.media_type.as_str() {
                MEDIA_MODEL => r.model_path = path,
                MEDIA_ADAPTER => r.adapters.push(path),
                MEDIA_TEMPLATE => r.template = Some(self.text_layer(&model, l)?),
                MEDIA_SYSTEM => r.system = Some(self.text_layer(&model, l)?),
                MEDIA_PARAMS => r.params = ModelParams::from_json(&self.json_layer(&model, l)?),
                MEDIA_MESSAGES => {
                    let msgs: Vec<Map<String, J>> = self.json_layer(&model, l)?;
                    r.messages = msgs
                        .iter()
                        .map(|m| ModelfileMessage {
                            role: m.get("role").and_then(J::as_str).unwrap_or("").into(),
                            content: m.get("content").and_then(J::as_str).unwrap_or("").into(),
                        })
                        .collect();
                }
                _ => {}
            }
        }
        if r.model_path.as_os_str().is_empty() {
            return Err(LibraryError::BadManifest {
                model,
                msg: format!("no {MEDIA_MODEL} layer"),
            });
        }
        Ok(r)
    }

    /// Removes `name`'s manifest, then the blobs it used that no other manifest uses.
    pub fn remove(&self, name: &str) -> Result<()> {
        let (m, _, n) = self.manifest(name)?;
        let path = self.manifest_path(&n);
        fs::remove_file(&path).map_err(io(&path))?;
        // Empty folders up to manifests/ go too.
        let top = self.dir.join("manifests");
        let mut d = path.parent();
        while let Some(p) = d {
            if p == top || fs::remove_dir(p).is_err() {
                break;
            }
            d = p.parent();
        }
        let mut used = std::collections::HashSet::new();
        for e in self.list()? {
            if let Ok((other, _, _)) = self.manifest(&e.name) {
                used.insert(other.config.digest.clone());
                used.extend(other.layers.iter().map(|l| l.digest.clone()));
            }
        }
        for l in m.layers.iter().chain(std::iter::once(&m.config)) {
            if store::valid_digest(&l.digest) && !used.contains(&l.digest) {
                let p = self.blob_path(&l.digest);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&p)(e)),
                }
            }
        }
        Ok(())
    }

    /// Copies `src`'s manifest to the name `dst` (blobs are shared).
    pub fn copy(&self, src: &str, dst: &str) -> Result<()> {
        let (_, bytes, _) = self.manifest(src)?;
        let d = parse_name(dst)?;
        store::write_atomic(&self.manifest_path(&d), &bytes)
    }
}
