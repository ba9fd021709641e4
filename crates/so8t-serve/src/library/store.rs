//! Ollama's on-disk pieces: content-addressed blobs (`blobs/sha256-<hex>`), manifests
//! (schema 2, Docker's media types for the manifest and the config, Ollama's for layers) and
//! the config blob; atomic writes; sha256 verification cached per process.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::LibraryError;

/// The manifest's media type.
pub const MEDIA_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The config blob's media type.
pub const MEDIA_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The GGUF weights.
pub const MEDIA_MODEL: &str = "application/vnd.ollama.image.model";
/// A LoRA adapter.
pub const MEDIA_ADAPTER: &str = "application/vnd.ollama.image.adapter";
/// The Go chat template (text).
pub const MEDIA_TEMPLATE: &str = "application/vnd.ollama.image.template";
/// The SYSTEM prompt (text).
pub const MEDIA_SYSTEM: &str = "application/vnd.ollama.image.system";
/// The parameters (JSON object; `stop` an array).
pub const MEDIA_PARAMS: &str = "application/vnd.ollama.image.params";
/// A license (text).
pub const MEDIA_LICENSE: &str = "application/vnd.ollama.image.license";
/// The MESSAGEs (JSON array of `{role, content}`).
pub const MEDIA_MESSAGES: &str = "application/vnd.ollama.image.messages";

/// A manifest entry: one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// The model this layer was inherited from (Ollama's optional `from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A manifest (`manifests/HOST/NAMESPACE/MODEL/TAG`), as Ollama writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MEDIA_MANIFEST`].
    #[serde(default)]
    pub media_type: String,
    /// The config blob.
    pub config: Layer,
    /// The layers.
    pub layers: Vec<Layer>,
}

/// `rootfs` of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The layers' digests.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The config blob (Ollama's `ConfigV2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModelConfig {
    /// `gguf`.
    #[serde(default)]
    pub model_format: String,
    /// `general.architecture`.
    #[serde(default)]
    pub model_family: String,
    /// The families (the architecture).
    #[serde(default)]
    pub model_families: Vec<String>,
    /// The parameter count as Ollama prints it (`134.52M`).
    #[serde(default)]
    pub model_type: String,
    /// The quantization (`Q8_0`).
    #[serde(default)]
    pub file_type: String,
    /// `amd64`/`arm64`.
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// The layers.
    #[serde(default)]
    pub rootfs: RootFs,
}

impl ModelConfig {
    /// The details `/api/tags` reports, as recorded at creation.
    pub fn details(&self) -> super::ModelDetails {
        super::ModelDetails {
            parent_model: String::new(),
            format: self.model_format.clone(),
            family: self.model_family.clone(),
            families: self.model_families.clone(),
            parameter_size: self.model_type.clone(),
            quantization_level: self.file_type.clone(),
        }
    }
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `blobs/sha256-<hex>` for `sha256:<hex>`.
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs").join(digest.replacen(':', "-", 1))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LibraryError + '_ {
    move |source| LibraryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary path in `dir` (hidden, with the process id and a counter).
pub fn temp_path(dir: &Path, what: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{what}-{}-{n}", std::process::id()))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Fsyncs `tmp`'s data, renames it to `path` and fsyncs the folder; removes `tmp` on failure.
fn commit(file: File, tmp: &Path, path: &Path) -> Result<(), LibraryError> {
    let r = file
        .sync_all()
        .and_then(|_| fs::rename(tmp, path))
        .map_err(io_err(path));
    if r.is_err() {
        let _ = fs::remove_file(tmp);
    }
    r?;
    if let Some(d) = path.parent() {
        sync_dir(d);
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file in the same folder, fsync, rename, fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LibraryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = temp_path(dir, "write");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    if let Err(e) = f.write_all(bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    commit(f, &tmp, path)
}

/// Stores `bytes` as a blob (not rewritten when present); returns its layer.
pub fn put_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Result<Layer, LibraryError> {
    let digest = digest_of(bytes);
    let path = blob_path(dir, &digest);
    if fs::metadata(&path).map(|m| m.len()).ok() != Some(bytes.len() as u64) {
        write_atomic(&path, bytes)?;
    }
    Ok(Layer {
        media_type: media_type.to_string(),
        digest,
        size: bytes.len() as u64,
        from: None,
    })
}

/// Copies file `src` into the blobs, hashing while copying; the blob is renamed into place
/// only when no blob of that digest exists. Returns its layer and whether it was new.
pub fn put_blob_file(
    dir: &Path,
    media_type: &str,
    src: &Path,
) -> Result<(Layer, bool), LibraryError> {
    let blobs = dir.join("blobs");
    let tmp = temp_path(&blobs, "blob");
    let mut input = File::open(src).map_err(io_err(src))?;
    let mut out = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let copied = (|| -> Result<(), LibraryError> {
        loop {
            let n = input.read(&mut buf).map_err(io_err(src))?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&tmp))?;
            size += n as u64;
        }
    })();
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let digest = format!("sha256:{}", hex(&hasher.finalize()));
    let path = blob_path(dir, &digest);
    let fresh = fs::metadata(&path).map(|m| m.len()).ok() != Some(size);
    if fresh {
        commit(out, &tmp, &path)?;
    } else {
        drop(out);
        let _ = fs::remove_file(&tmp);
    }
    let layer = Layer {
        media_type: media_type.to_string(),
        digest,
        size,
        from: None,
    };
    Ok((layer, fresh))
}

/// A blob version whose sha256 was checked: path, digest, size, mtime (ns).
type VerifiedKey = (PathBuf, String, u64, u128);

/// The blob's path after checking that it exists, has the manifest's size and (once per
/// process per file version) that its sha256 matches.
pub fn check_blob(dir: &Path, model: &str, layer: &Layer) -> Result<PathBuf, LibraryError> {
    if !valid_digest(&layer.digest) {
        return Err(LibraryError::BadManifest {
            model: model.to_string(),
            msg: format!("layer digest {:?} is not sha256:<64 hex>", layer.digest),
        });
    }
    let path = blob_path(dir, &layer.digest);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            return Err(LibraryError::MissingBlob {
                model: model.to_string(),
                digest: layer.digest.clone(),
                path,
            })
        }
    };
    if meta.len() != layer.size {
        return Err(LibraryError::BlobSize {
            model: model.to_string(),
            digest: layer.digest.clone(),
            path,
            expected: layer.size,
            actual: meta.len(),
        });
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = (path.clone(), layer.digest.clone(), meta.len(), mtime);
    static VERIFIED: OnceLock<Mutex<HashSet<VerifiedKey>>> = OnceLock::new();
    let cache = VERIFIED.get_or_init(|| Mutex::new(HashSet::new()));
    if cache.lock().map(|c| c.contains(&key)).unwrap_or(false) {
        return Ok(path);
    }
    let mut f = File::open(&path).map_err(io_err(&path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(&path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = format!("sha256:{}", hex(&hasher.finalize()));
    if actual != layer.digest {
        return Err(LibraryError::CorruptBlob {
            digest: layer.digest.clone(),
            path,
            actual,
        });
    }
    if let Ok(mut c) = cache.lock() {
        c.insert(key);
    }
    Ok(path)
}

/// Reads and parses the manifest at `path`.
pub fn read_manifest(path: &Path, model: &str) -> Result<(Manifest, Vec<u8>), LibraryError> {
    let bytes = fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LibraryError::NotFound(model.to_string())
        } else {
            io_err(path)(e)
        }
    })?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| LibraryError::BadManifest {
        model: model.to_string(),
        msg: format!("{}: {e}", path.display()),
    })?;
    Ok((m, bytes))
}
