//! `Library::create`: a model from a parsed Modelfile (FROM a GGUF file, an HF folder
//! converted to an F16 GGUF, or a model of the store).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as J};
use so8t_gguf::modelfile::{ParamValue, ParsedModelfile};
use so8t_gguf::GgufFile;

use super::store::{self, Layer, Manifest, ModelConfig, RootFs};
use super::{info, parse_name, Library, LibraryError, ModelEntry, Result};
use super::{
    MEDIA_ADAPTER, MEDIA_CONFIG, MEDIA_LICENSE, MEDIA_MANIFEST, MEDIA_MESSAGES, MEDIA_MODEL,
    MEDIA_PARAMS, MEDIA_SYSTEM, MEDIA_TEMPLATE,
};

/// `~/x` → `$HOME/x`; relative paths against `base`.
fn resolve_path(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The config blob of a GGUF.
fn config_of(path: &Path) -> Result<ModelConfig> {
    let f = GgufFile::open(path).map_err(|e| LibraryError::BadGguf {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let d = info::details(&f);
    Ok(ModelConfig {
        model_format: d.format,
        model_family: d.family,
        model_families: d.families,
        model_type: d.parameter_size,
        file_type: d.quantization_level,
        architecture: match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            a => a.into(),
        },
        os: std::env::consts::OS.into(),
        rootfs: RootFs::default(),
    })
}

/// Removes a folder when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Library {
    /// Ingests the GGUF at `path` as the model layer; returns it and its config.
    fn ingest_gguf(
        &self,
        path: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(Layer, ModelConfig)> {
        progress("parsing GGUF");
        let config = config_of(path)?;
        progress(&format!("copying file {}", path.display()));
        let (layer, fresh) = store::put_blob_file(&self.dir, MEDIA_MODEL, path)?;
        progress(&format!(
            "{} layer {}",
            if fresh {
                "creating new"
            } else {
                "using existing"
            },
            layer.digest
        ));
        Ok((layer, config))
    }

    /// Converts the HF folder `dir` to an F16 GGUF in a temporary folder of the store, then
    /// ingests it.
    fn ingest_hf(
        &self,
        from: &str,
        dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(Layer, ModelConfig)> {
        let tmp = TempDir(store::temp_path(&self.dir, "export"));
        progress(&format!("converting {} to an F16 GGUF", dir.display()));
        let report = so8t_gguf::export::export(&so8t_gguf::export::ExportOptions {
            model: dir.to_path_buf(),
            out: tmp.0.clone(),
            quants: vec![so8t_gguf::export::Quant::F16],
            name: "model".into(),
            system: None,
            tokenizer_pre: None,
            progress: None,
        })
        .map_err(|e| LibraryError::Source {
            what: "FROM",
            value: from.to_string(),
            msg: format!("converting the model folder failed: {e}"),
        })?;
        let file = report.files.first().ok_or_else(|| LibraryError::Source {
            what: "FROM",
            value: from.to_string(),
            msg: "the conversion wrote no GGUF".into(),
        })?;
        self.ingest_gguf(&file.path, progress)
    }

    /// Creates (or replaces) model `name` from `modelfile`; relative FROM/ADAPTER paths are
    /// taken from `base_dir`. FROM may be a GGUF file, an HF model folder (`config.json`;
    /// converted to F16), or a model of the store (its layers are inherited; TEMPLATE, SYSTEM,
    /// MESSAGEs and LICENSEs given here replace the inherited ones, PARAMETERs are merged over
    /// them, ADAPTERs are added). `progress` gets Ollama-style status lines.
    pub fn create(
        &self,
        name: &str,
        modelfile: &ParsedModelfile,
        base_dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<ModelEntry> {
        let target = parse_name(name)?;
        if let Some(t) = &modelfile.template {
            // A template that does not parse would fail every request: refuse it here.
            crate::template::GoTemplate::parse(t).map_err(|e| LibraryError::Source {
                what: "TEMPLATE",
                value: t.chars().take(60).collect(),
                msg: e.to_string(),
            })?;
        }
        let from = modelfile.from.as_str();
        let path = resolve_path(base_dir, from);
        let mut inherited: Vec<Layer> = Vec::new();
        let (model_layer, mut config) = if path.is_file() {
            self.ingest_gguf(&path, progress)?
        } else if path.is_dir() {
            if !path.join("config.json").is_file() {
                return Err(LibraryError::Source {
                    what: "FROM",
                    value: from.to_string(),
                    msg: format!(
                        "{} has no config.json (not an HF model folder)",
                        path.display()
                    ),
                });
            }
            self.ingest_hf(from, &path, progress)?
        } else {
            let base = parse_name(from).ok().and_then(|n| {
                let p = self.manifest_path(&n);
                p.is_file().then_some(n)
            });
            let Some(base) = base else {
                return Err(LibraryError::Source {
                    what: "FROM",
                    value: from.to_string(),
                    msg: format!(
                        "no such file or folder ({}) and no model of that name in {}",
                        path.display(),
                        self.dir.display()
                    ),
                });
            };
            let base_name = base.to_string();
            let r = self.resolve(&base_name)?;
            let (m, _, _) = self.manifest(&base_name)?;
            progress(&format!("using model {base_name}"));
            let mut model = None;
            for mut l in m.layers {
                if l.media_type == MEDIA_MODEL && model.is_none() {
                    l.from.get_or_insert_with(|| base_name.clone());
                    model = Some(l);
                } else {
                    inherited.push(l);
                }
            }
            let model = model.ok_or_else(|| LibraryError::BadManifest {
                model: base_name.clone(),
                msg: format!("no {MEDIA_MODEL} layer"),
            })?;
            (model, r.config)
        };

        let mut layers = vec![model_layer];
        let replaced = |t: &str| -> bool {
            match t {
                MEDIA_TEMPLATE => modelfile.template.is_some(),
                MEDIA_SYSTEM => modelfile.system.is_some(),
                MEDIA_MESSAGES => !modelfile.messages.is_empty(),
                MEDIA_LICENSE => !modelfile.licenses.is_empty(),
                MEDIA_PARAMS => !modelfile.parameters.is_empty(),
                _ => false,
            }
        };
        // Inherited parameters are merged under the new ones.
        let mut params: Map<String, J> = Map::new();
        for l in &inherited {
            if l.media_type == MEDIA_PARAMS && replaced(MEDIA_PARAMS) {
                let p = store::check_blob(&self.dir, from, l)?;
                let text = fs::read(&p).map_err(|e| LibraryError::Io {
                    path: p.clone(),
                    source: e,
                })?;
                params = serde_json::from_slice(&text).map_err(|e| LibraryError::BadManifest {
                    model: from.to_string(),
                    msg: format!("params layer {}: {e}", l.digest),
                })?;
            }
        }
        layers.extend(
            inherited
                .iter()
                .filter(|l| !replaced(&l.media_type))
                .cloned(),
        );
        for a in &modelfile.adapters {
            let p = resolve_path(base_dir, a);
            if !p.is_file() {
                return Err(LibraryError::Source {
                    what: "ADAPTER",
                    value: a.to_string(),
                    msg: format!("{} is not a file", p.display()),
                });
            }
            check_adapter(&p).map_err(|msg| LibraryError::Source {
                what: "ADAPTER",
                value: a.to_string(),
                msg,
            })?;
            progress(&format!("copying adapter {}", p.display()));
            layers.push(store::put_blob_file(&self.dir, MEDIA_ADAPTER, &p)?.0);
        }
        let mut text_layer = |media: &str, text: &str| -> Result<()> {
            let l = store::put_blob(&self.dir, media, text.as_bytes())?;
            progress(&format!(
                "creating {} layer {}",
                media.rsplit('.').next().unwrap_or(""),
                l.digest
            ));
            layers.push(l);
            Ok(())
        };
        if let Some(t) = &modelfile.template {
            text_layer(MEDIA_TEMPLATE, t)?;
        }
        if let Some(s) = &modelfile.system {
            text_layer(MEDIA_SYSTEM, s)?;
        }
        if !modelfile.parameters.is_empty() {
            if modelfile.param("stop").next().is_some() {
                params.remove("stop");
            }
            for (k, v) in &modelfile.parameters {
                match (k.as_str(), v) {
                    ("stop", ParamValue::Str(s)) => {
                        let e = params.entry("stop").or_insert_with(|| J::Array(vec![]));
                        if let J::Array(a) = e {
                            a.push(J::from(s.as_str()));
                        }
                    }
                    _ => {
                        params.insert(k.clone(), v.to_json());
                    }
                }
            }
            text_layer(MEDIA_PARAMS, &J::Object(params).to_string())?;
        }
        if !modelfile.messages.is_empty() {
            let msgs: Vec<J> = modelfile
                .messages
                .iter()
                .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                .collect();
            text_layer(MEDIA_MESSAGES, &J::Array(msgs).to_string())?;
        }
        for l in &modelfile.licenses {
            text_layer(MEDIA_LICENSE, l)?;
        }

        config.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
        };
        let config_json = serde_json::to_vec(&config).unwrap_or_default();
        let config_layer = store::put_blob(&self.dir, MEDIA_CONFIG, &config_json)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.into(),
            config: config_layer,
            layers,
        };
        progress("writing manifest");
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let mpath = self.manifest_path(&target);
        store::write_atomic(&mpath, &bytes)?;
        progress("success");
        let modified = fs::metadata(&mpath)
            .and_then(|m| m.modified())
            .map_err(|e| LibraryError::Io {
                path: mpath.clone(),
                source: e,
            })?;
        Ok(ModelEntry {
            name: target.to_string(),
            digest: store::digest_of(&bytes)["sha256:".len()..].to_string(),
            size: manifest.layers.iter().map(|l| l.size).sum(),
            modified,
            details: config.details(),
        })
    }
}

/// An ADAPTER must be a GGUF LoRA adapter (what the engine applies; llama.cpp's
/// `convert_lora_to_gguf.py` makes one from a PEFT folder).
fn check_adapter(p: &Path) -> std::result::Result<(), String> {
    let f = GgufFile::open(p).map_err(|e| {
        format!("{e} (ADAPTER takes a GGUF LoRA adapter, e.g. from llama.cpp's convert_lora_to_gguf.py)")
    })?;
    crate::engine::lora::check_adapter(&f).map_err(|e| format!("{}: {e}", p.display()))
}
