//! The models the server can answer with: names resolved through the store (or given on the
//! command line as files/folders), loaded on first use, kept for `keep_alive`, evicted oldest
//! first beyond `max_loaded`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use so8t_model::TextTokenizer;

use super::error::ApiError;
use crate::engine::{EngineModel, ModelFormat};
use crate::library::{parse_name, Library, LibraryError, ModelParams};
use crate::scheduler::{Scheduler, SchedulerOptions};
use crate::template::GoTemplate;

/// A model in memory, ready to serve.
pub struct LoadedModel {
    /// Its name (`smol:latest`).
    pub name: String,
    /// The scheduler running it.
    pub scheduler: Scheduler,
    /// Its tokenizer (with stop ids and the Jinja chat template).
    pub tokenizer: Arc<TextTokenizer>,
    /// The Modelfile's Go template, when it has one.
    pub template: Option<GoTemplate>,
    /// The Modelfile's SYSTEM.
    pub system: Option<String>,
    /// The Modelfile's PARAMETERs.
    pub params: ModelParams,
    /// sha256 of the manifest (or of the file's path for ad-hoc models).
    pub digest: String,
    /// Bytes of weights.
    pub size: u64,
    /// When it stops being kept (renewed by each request).
    pub expires: Mutex<Instant>,
    /// Wall-clock time of expiry, for `/api/ps`.
    pub expires_at: Mutex<SystemTime>,
    /// Seconds it took to load.
    pub load_secs: f64,
}

impl LoadedModel {
    /// The model's weights and shape.
    pub fn engine(&self) -> &EngineModel {
        &self.scheduler.model
    }
}

/// Where models come from and which are loaded.
pub struct Models {
    /// The store, if any.
    pub library: Option<Library>,
    /// Ad-hoc models given on the command line: name → file or folder.
    pub adhoc: Vec<(String, PathBuf)>,
    loaded: Mutex<HashMap<String, Arc<LoadedModel>>>,
    loading: tokio::sync::Mutex<()>,
    /// Scheduler settings for each loaded model.
    pub sched: SchedulerOptions,
    /// Most models kept loaded at once.
    pub max_loaded: usize,
    /// Default keep-alive.
    pub keep_alive: Duration,
}

/// The canonical name: `name:tag`, `latest` by default.
pub fn canonical(name: &str) -> String {
    match parse_name(name) {
        Ok(n) => n.to_string(),
        Err(_) => name.to_string(),
    }
}

impl Models {
    /// A registry over `library` and ad-hoc paths.
    pub fn new(
        library: Option<Library>,
        adhoc: Vec<(String, PathBuf)>,
        sched: SchedulerOptions,
    ) -> Self {
        Self {
            library,
            adhoc: adhoc.into_iter().map(|(n, p)| (canonical(&n), p)).collect(),
            loaded: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            sched,
            max_loaded: 2,
            keep_alive: Duration::from_secs(300),
        }
    }

    /// Models in memory now.
    pub fn loaded(&self) -> Vec<Arc<LoadedModel>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LoadedModel>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets a loaded model (after `rm`, or `keep_alive: 0`).
    pub fn unload(&self, name: &str) {
        self.lock().remove(&canonical(name));
    }

    /// Drops models whose keep-alive ran out.
    pub fn expire(&self) {
        let now = Instant::now();
        self.lock().retain(|_, m| {
            *m.expires.lock().unwrap_or_else(|e| e.into_inner()) > now || m.scheduler.running() > 0
        });
    }

    /// The loaded model `name`, loading it if needed.
    pub async fn get(
        self: &Arc<Self>,
        name: &str,
        keep_alive: Option<Duration>,
    ) -> Result<Arc<LoadedModel>, ApiError> {
        if name.trim().is_empty() {
            return Err(ApiError::bad_field(
                "model",
                "the field `model` is required",
            ));
        }
        let key = canonical(name);
        let ka = keep_alive.unwrap_or(self.keep_alive);
        let touch = |m: &Arc<LoadedModel>| {
            *m.expires.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + ka;
            *m.expires_at.lock().unwrap_or_else(|e| e.into_inner()) = SystemTime::now() + ka;
        };
        if let Some(m) = self.lock().get(&key).cloned() {
            touch(&m);
            return Ok(m);
        }
        let _guard = self.loading.lock().await;
        if let Some(m) = self.lock().get(&key).cloned() {
            touch(&m);
            return Ok(m);
        }
        let this = self.clone();
        let k2 = key.clone();
        let m = tokio::task::spawn_blocking(move || this.load(&k2))
            .await
            .map_err(|e| ApiError::internal(format!("loading {key}: {e}")))??;
        let m = Arc::new(m);
        touch(&m);
        let mut map = self.lock();
        while map.len() >= self.max_loaded.max(1) {
            let oldest = map
                .iter()
                .filter(|(_, m)| m.scheduler.running() == 0)
                .min_by_key(|(_, m)| *m.expires.lock().unwrap_or_else(|e| e.into_inner()))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
        map.insert(key, m.clone());
        Ok(m)
    }

    fn load(&self, key: &str) -> Result<LoadedModel, ApiError> {
        let t0 = Instant::now();
        let (path, template, system, params, digest, adapters) = if let Some((_, p)) =
            self.adhoc.iter().find(|(n, _)| n == key)
        {
            (
                p.clone(),
                None,
                None,
                ModelParams::default(),
                so8t_store::audit::sha256_hex(p.to_string_lossy().as_bytes()),
                Vec::new(),
            )
        } else {
            let lib = self
                .library
                .as_ref()
                .ok_or_else(|| ApiError::no_model(key))?;
            let r = lib.resolve(key).map_err(|e| match e {
                LibraryError::NotFound(_) | LibraryError::BadName { .. } => ApiError::no_model(key),
                other => ApiError::internal(other.to_string()),
            })?;
            (
                r.model_path,
                r.template,
                r.system,
                r.params,
                r.digest,
                r.adapters,
            )
        };
        let mut model = EngineModel::load(&path)
            .map_err(|e| ApiError::internal(format!("loading model {key}: {e}")))?;
        for a in &adapters {
            model
                .apply_lora(a, 1.0)
                .map_err(|e| ApiError::internal(format!("model {key}: ADAPTER: {e}")))?;
        }
        let tokenizer = match (&model.format, &model.gguf) {
            (ModelFormat::Gguf, Some(f)) => crate::tokenizer::tokenizer_from_gguf(f)
                .map_err(|e| ApiError::internal(format!("model {key}: {e}")))?,
            _ => TextTokenizer::from_dir(&path)
                .map_err(|e| ApiError::internal(format!("model {key}: {e}")))?,
        };
        let template = match template {
            Some(src) => Some(
                GoTemplate::parse(&src)
                    .map_err(|e| ApiError::internal(format!("model {key}: template: {e}")))?,
            ),
            None => None,
        };
        let size = model.size_bytes() as u64;
        let mut sched = self.sched.clone();
        if let Some(n) = params.num_thread {
            sched.threads = n.max(1) as usize;
        }
        let scheduler = Scheduler::start(Arc::new(model), sched);
        Ok(LoadedModel {
            name: key.to_string(),
            scheduler,
            tokenizer: Arc::new(tokenizer),
            template,
            system,
            params,
            digest,
            size,
            expires: Mutex::new(Instant::now()),
            expires_at: Mutex::new(SystemTime::now()),
            load_secs: t0.elapsed().as_secs_f64(),
        })
    }
}
