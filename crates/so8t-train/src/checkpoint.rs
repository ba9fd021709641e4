//! Training checkpoints (spec §6): atomic, checksummed folders holding everything needed to
//! continue a run bit-identically — the trainable variables, the AdamW moments and step, and the
//! loop's own state (epoch, data cursor, RNG state, loss history).
//!
//! Layout of `run_dir/checkpoints/step-{step:08}-{kind}/`:
//!
//! - `trainable.safetensors`: every optimizer variable by name (f32), plus `{name}.adam_m` and
//!   `{name}.adam_v` for the variables that have moments;
//! - `state.json`: the [`TrainState`] and `optimizer_step`;
//! - `gates.safetensors`: the gates in the interchange format (when gates are trained);
//! - `adapter/`: the LoRA adapters as a PEFT folder (when LoRA is on);
//! - `manifest.json`: every other file with its size and sha256.
//!
//! A checkpoint is written into a hidden `checkpoints/.tmp-…` folder, every file fsynced, then
//! renamed to its final name and the parent folder fsynced: a crash leaves either no checkpoint
//! or a complete one. Hidden leftovers are ignored by [`latest_valid`] and removed by the next
//! [`save`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use so8t_model::io::{write_safetensors, write_string_atomic};

use crate::error::{Error, Result};
use crate::optim::Moments;
use crate::step::Trainer;

/// Why a checkpoint was written.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// Periodic; only the newest `keep_rolling` are kept.
    Rolling,
    /// At the end of a run; never deleted.
    Final,
    /// On SIGINT/SIGTERM before exit; never deleted.
    Emergency,
}

impl CheckpointKind {
    /// The lowercase name used in folder names and `state.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::Final => "final",
            Self::Emergency => "emergency",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "rolling" => Some(Self::Rolling),
            "final" => Some(Self::Final),
            "emergency" => Some(Self::Emergency),
            _ => None,
        }
    }
}

/// The training loop's state saved with a checkpoint (the optimizer's own state is saved
/// separately and restored by [`restore`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Current epoch (0-based).
    pub epoch: u64,
    /// Batches consumed in this epoch.
    pub cursor: u64,
    /// State of the loop's RNG (data shuffling).
    pub rng_state: u64,
    /// Lowest loss seen so far.
    pub best_loss: Option<f64>,
    /// Loss of every step so far (must be finite: JSON has no NaN).
    pub loss_history: Vec<f64>,
    /// Hash of the run's configuration (a resume with another configuration is the caller's
    /// call to refuse).
    pub config_hash: String,
    /// Why this checkpoint was written.
    pub kind: CheckpointKind,
    /// Wall-clock time of the save, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Loop state of other trainers (RL: the KL coefficient, the reward history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// The contents of `state.json`.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    #[serde(flatten)]
    state: TrainState,
    optimizer_step: u64,
}

/// One entry of `manifest.json`.
#[derive(Serialize, Deserialize)]
struct ManifestEntry {
    path: String,
    size: u64,
    sha256: String,
}

/// The contents of `manifest.json`.
#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    files: Vec<ManifestEntry>,
}

const FORMAT: u32 = 1;
const TRAINABLE: &str = "trainable.safetensors";
const STATE: &str = "state.json";
const MANIFEST: &str = "manifest.json";
const M_SUFFIX: &str = ".adam_m";
const V_SUFFIX: &str = ".adam_v";

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Model(so8t_model::Error::io(path, e))
}

fn ckpt_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid("checkpoint", format!("{}: {msg}", path.display()))
}

/// The folder name of a checkpoint: `step-{step:08}-{kind}`.
pub fn dir_name(step: u64, kind: CheckpointKind) -> String {
    format!("step-{step:08}-{}", kind.as_str())
}

fn parse_dir_name(name: &str) -> Option<(u64, CheckpointKind)> {
    let rest = name.strip_prefix("step-")?;
    let (step, kind) = rest.split_once('-')?;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((step.parse().ok()?, CheckpointKind::parse(kind)?))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, format!("{:x}", h.finalize())))
}

/// Every regular file under `dir` (relative, `/`-separated, sorted), except the manifest.
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| io_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let rel = format!("{prefix}{name}");
        let ty = e.file_type().map_err(|x| io_err(&e.path(), x))?;
        if ty.is_dir() {
            list_files(&e.path(), &format!("{rel}/"), out)?;
        } else if ty.is_file() && rel != MANIFEST {
            out.push(rel);
        }
    }
    Ok(())
}

/// Removes a folder by first renaming it to a hidden name, so a crash midway never leaves a
/// half-deleted folder that looks like a checkpoint.
fn remove_dir_hidden(ckpt: &Path, name: &str) -> Result<()> {
    let from = ckpt.join(name);
    let to = ckpt.join(format!(".del-{name}-{}", std::process::id()));
    fs::rename(&from, &to).map_err(|e| io_err(&from, e))?;
    sync_dir(ckpt)?;
    fs::remove_dir_all(&to).map_err(|e| io_err(&to, e))
}

fn write_contents(dir: &Path, trainer: &Trainer, state: &TrainState) -> Result<()> {
    if let Some(x) = state.loss_history.iter().find(|x| !x.is_finite()) {
        return Err(ckpt_err(
            dir,
            format!("loss_history holds {x}; JSON cannot store it"),
        ));
    }
    let cpu = Device::Cpu;
    let mut tensors = BTreeMap::new();
    for (name, var) in trainer.opt.vars() {
        let t = var.as_tensor().to_dtype(DType::F32)?.to_device(&cpu)?;
        tensors.insert(name.clone(), t);
        if let Some(mo) = trainer.opt.moments.get(name) {
            let m = mo.m.to_dtype(DType::F32)?.to_device(&cpu)?;
            let v = mo.v.to_dtype(DType::F32)?.to_device(&cpu)?;
            tensors.insert(format!("{name}{M_SUFFIX}"), m);
            tensors.insert(format!("{name}{V_SUFFIX}"), v);
        }
    }
    write_safetensors(&dir.join(TRAINABLE), &tensors)?;
    if let Some(g) = &trainer.gates {
        g.save(&dir.join("gates.safetensors"))?;
    }
    if let Some(l) = &trainer.cfg.lora {
        so8t_model::lora::save(&trainer.model, l, &dir.join("adapter"), "so8t")?;
    }
    let sf = StateFile {
        format: FORMAT,
        state: state.clone(),
        optimizer_step: trainer.opt.step,
    };
    let text = serde_json::to_string_pretty(&sf).map_err(|e| ckpt_err(dir, e))?;
    write_string_atomic(&dir.join(STATE), &text)?;
    let mut files = Vec::new();
    list_files(dir, "", &mut files)?;
    let mut manifest = Manifest {
        format: FORMAT,
        files: Vec::new(),
    };
    for rel in files {
        let p = dir.join(&rel);
        let (size, sha256) = sha256_file(&p).map_err(|e| io_err(&p, e))?;
        manifest.files.push(ManifestEntry {
            path: rel,
            size,
            sha256,
        });
    }
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| ckpt_err(dir, e))?;
    write_string_atomic(&dir.join(MANIFEST), &text)?;
    if dir.join("adapter").is_dir() {
        sync_dir(&dir.join("adapter"))?;
    }
    sync_dir(dir)
}

/// Writes a checkpoint of `trainer` and `state` to `run_dir/checkpoints/step-{step:08}-{kind}/`
/// atomically and returns its folder. An existing checkpoint of the same name is replaced.
/// Hidden leftovers of interrupted saves are removed first. After a
/// [`Rolling`](CheckpointKind::Rolling) save the oldest rolling checkpoints beyond
/// `keep_rolling` (at least 1: the one just written is always kept) are deleted; final and
/// emergency checkpoints are never deleted.
pub fn save(
    run_dir: &Path,
    trainer: &Trainer,
    state: &TrainState,
    keep_rolling: usize,
) -> Result<PathBuf> {
    let ckpt = run_dir.join("checkpoints");
    fs::create_dir_all(&ckpt).map_err(|e| io_err(&ckpt, e))?;
    for e in fs::read_dir(&ckpt).map_err(|e| io_err(&ckpt, e))? {
        let e = e.map_err(|x| io_err(&ckpt, x))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp-") || name.starts_with(".del-") || name.starts_with(".old-") {
            let p = e.path();
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|x| io_err(&p, x))?;
        }
    }
    let name = dir_name(state.step, state.kind);
    let tmp = ckpt.join(format!(".tmp-{name}-{}", std::process::id()));
    fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
    if let Err(e) = write_contents(&tmp, trainer, state) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let fin = ckpt.join(&name);
    let old = ckpt.join(format!(".old-{name}-{}", std::process::id()));
    let replaced = fin.exists();
    if replaced {
        fs::rename(&fin, &old).map_err(|e| io_err(&fin, e))?;
    }
    fs::rename(&tmp, &fin).map_err(|e| io_err(&fin, e))?;
    sync_dir(&ckpt)?;
    if replaced {
        fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
    }
    if state.kind == CheckpointKind::Rolling {
        let mut rolling: Vec<(u64, String)> = candidates(&ckpt)?
            .into_iter()
            .filter(|(_, k, n)| *k == CheckpointKind::Rolling && *n != name)
            .map(|(s, _, n)| (s, n))
            .collect();
        rolling.sort_by(|a, b| b.cmp(a));
        for (_, n) in rolling.into_iter().skip(keep_rolling.max(1) - 1) {
            remove_dir_hidden(&ckpt, &n)?;
        }
    }
    Ok(fin)
}

/// A checkpoint folder of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Step it was taken at.
    pub step: u64,
    /// Why it was written.
    pub kind: CheckpointKind,
    /// The folder.
    pub dir: PathBuf,
    /// Bytes of its files.
    pub bytes: u64,
}

/// The complete-looking checkpoint folders of `run_dir`, by step (validity is checked by
/// [`latest_valid`], not here).
pub fn list(run_dir: &Path) -> Result<Vec<Listed>> {
    let ckpt = run_dir.join("checkpoints");
    if !ckpt.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<Listed> = candidates(&ckpt)?
        .into_iter()
        .map(|(step, kind, name)| {
            let dir = ckpt.join(name);
            let bytes = dir_bytes(&dir);
            Listed {
                step,
                kind,
                dir,
                bytes,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.step, &a.dir).cmp(&(b.step, &b.dir)));
    Ok(out)
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_bytes(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The checkpoint folders under `ckpt` (hidden and unparsable names ignored).
fn candidates(ckpt: &Path) -> Result<Vec<(u64, CheckpointKind, String)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(ckpt).map_err(|e| io_err(ckpt, e))? {
        let e = e.map_err(|x| io_err(ckpt, x))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some((step, kind)) = parse_dir_name(&name) {
            if e.path().is_dir() {
                out.push((step, kind, name));
            }
        }
    }
    Ok(out)
}

/// Checks the files of a checkpoint folder against its `manifest.json`: every listed path stays
/// inside the folder and has the listed size; with `hashes`, also the listed sha256 (reads every
/// byte). The error is the reason the checkpoint is damaged. The dashboard shows this check.
pub fn check_manifest(dir: &Path, hashes: bool) -> std::result::Result<(), String> {
    read_manifest(dir).and_then(|m| check_files(dir, &m, hashes))
}

fn read_manifest(dir: &Path) -> std::result::Result<Manifest, String> {
    let text = fs::read_to_string(dir.join(MANIFEST)).map_err(|e| format!("{MANIFEST}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{MANIFEST}: parse error: {e}"))
}

fn check_files(dir: &Path, manifest: &Manifest, hashes: bool) -> std::result::Result<(), String> {
    for f in &manifest.files {
        let rel = Path::new(&f.path);
        if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
            return Err(format!("{MANIFEST}: bad path `{}`", f.path));
        }
        let p = dir.join(rel);
        let meta = fs::metadata(&p).map_err(|e| format!("{}: {e}", f.path))?;
        if meta.len() != f.size {
            return Err(format!(
                "{}: size {} but the manifest says {}",
                f.path,
                meta.len(),
                f.size
            ));
        }
        if hashes {
            let (_, sha) = sha256_file(&p).map_err(|e| format!("{}: {e}", f.path))?;
            if sha != f.sha256 {
                return Err(format!("{}: sha256 mismatch", f.path));
            }
        }
    }
    Ok(())
}

/// Checks a checkpoint folder against its manifest; the error is the reason it is damaged.
fn verify(dir: &Path) -> std::result::Result<StateFile, String> {
    let manifest = read_manifest(dir)?;
    for required in [TRAINABLE, STATE] {
        if !manifest.files.iter().any(|f| f.path == required) {
            return Err(format!("{required}: not listed in {MANIFEST}"));
        }
    }
    check_files(dir, &manifest, true)?;
    let text = fs::read_to_string(dir.join(STATE)).map_err(|e| format!("{STATE}: {e}"))?;
    let sf: StateFile =
        serde_json::from_str(&text).map_err(|e| format!("{STATE}: parse error: {e}"))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string());
    if let Some((step, kind)) = name.as_deref().and_then(parse_dir_name) {
        if (step, kind) != (sf.state.step, sf.state.kind) {
            return Err(format!(
                "{STATE}: step {} ({}) does not match the folder name",
                sf.state.step,
                sf.state.kind.as_str()
            ));
        }
    }
    Ok(sf)
}

/// A checkpoint found by [`latest_valid`].
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Its folder.
    pub dir: PathBuf,
    /// Its loop state.
    pub state: TrainState,
    /// Newer checkpoints passed over as damaged, with the reason (e.g.
    /// `trainable.safetensors: sha256 mismatch`).
    pub skipped: Vec<(PathBuf, String)>,
}

/// The newest checkpoint of `run_dir` whose files all match its manifest, or `None` if there is
/// none (or no `checkpoints/` folder). Ties of step put emergency and final checkpoints before
/// rolling ones. Damaged newer checkpoints are logged and listed in [`Loaded::skipped`].
pub fn latest_valid(run_dir: &Path) -> Result<Option<Loaded>> {
    let ckpt = run_dir.join("checkpoints");
    if !ckpt.is_dir() {
        return Ok(None);
    }
    let mut cands = candidates(&ckpt)?;
    let rank = |k: CheckpointKind| u8::from(k == CheckpointKind::Rolling);
    cands.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(rank(a.1).cmp(&rank(b.1)))
            .then(a.2.cmp(&b.2))
    });
    let mut skipped = Vec::new();
    for (_, _, name) in cands {
        let dir = ckpt.join(&name);
        match verify(&dir) {
            Ok(sf) => {
                return Ok(Some(Loaded {
                    dir,
                    state: sf.state,
                    skipped,
                }))
            }
            Err(reason) => {
                tracing::warn!("skipping damaged checkpoint {}: {reason}", dir.display());
                skipped.push((dir, reason));
            }
        }
    }
    Ok(None)
}

/// Restores the checkpoint in `dir` into `trainer`: every variable's value, the AdamW moments
/// and step. The checkpoint must verify against its manifest and hold exactly the trainer's
/// variables with the same shapes (the error names the first difference). Returns the loop
/// state to continue from.
pub fn restore(trainer: &mut Trainer, dir: &Path) -> Result<TrainState> {
    let sf = verify(dir).map_err(|r| ckpt_err(dir, r))?;
    let path = dir.join(TRAINABLE);
    let saved =
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| ckpt_err(&path, e))?;
    let mut values = BTreeMap::new();
    let mut moments: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, t) in saved {
        if let Some(base) = name.strip_suffix(M_SUFFIX) {
            moments.entry(base.to_string()).or_default().0 = Some(t);
        } else if let Some(base) = name.strip_suffix(V_SUFFIX) {
            moments.entry(base.to_string()).or_default().1 = Some(t);
        } else {
            values.insert(name, t);
        }
    }
    let vars = trainer.opt.vars();
    let first_diff = values
        .keys()
        .find(|k| !vars.contains_key(*k))
        .map(|k| format!("variable `{k}` is in the checkpoint but not in the trainer"))
        .or_else(|| {
            vars.keys()
                .find(|k| !values.contains_key(*k))
                .map(|k| format!("variable `{k}` is in the trainer but not in the checkpoint"))
        });
    if let Some(msg) = first_diff {
        return Err(ckpt_err(&path, msg));
    }
    for (name, var) in vars {
        let t = &values[name];
        if t.dims() != var.dims() || t.dtype() != DType::F32 {
            let (got, want) = (t.dims(), var.dims());
            let msg = format!(
                "variable `{name}` has shape {got:?} ({:?}) in the checkpoint but {want:?} (F32 \
                 expected) in the trainer",
                t.dtype()
            );
            return Err(ckpt_err(&path, msg));
        }
    }
    let mut new_moments = BTreeMap::new();
    for (name, (m, v)) in moments {
        let Some(var) = vars.get(&name) else {
            return Err(ckpt_err(
                &path,
                format!("moments of `{name}`, which is not a variable"),
            ));
        };
        let (Some(m), Some(v)) = (m, v) else {
            return Err(ckpt_err(
                &path,
                format!("variable `{name}` has only one of its two AdamW moments"),
            ));
        };
        for (t, which) in [(&m, M_SUFFIX), (&v, V_SUFFIX)] {
            if t.dims() != var.dims() || t.dtype() != DType::F32 {
                return Err(ckpt_err(
                    &path,
                    format!(
                        "`{name}{which}` is {:?} {:?}, expected F32 {:?}",
                        t.dtype(),
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
        }
        let m = m.to_device(var.device())?;
        let v = v.to_device(var.device())?;
        new_moments.insert(name, Moments { m, v });
    }
    for (name, var) in vars {
        var.set(
            &values[name]
                .to_dtype(var.dtype())?
                .to_device(var.device())?,
        )?;
    }
    trainer.opt.moments = new_moments;
    trainer.opt.step = sf.optimizer_step;
    Ok(sf.state)
}
