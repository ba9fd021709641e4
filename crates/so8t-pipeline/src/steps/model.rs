//! The model steps: model A (the base), training of model B, bake, GGUF export, store import.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use so8t_gguf::export::{export, ExportOptions, Quant};
use so8t_model::bake::{bake, BakeOptions};
use so8t_model::init::{init_model, InitOptions, Preset};
use so8t_model::so8::RotationMethod;
use so8t_model::Arch;
use so8t_serve::library::{read_modelfile, Library};
use so8t_train::config::TrainConfig;
use so8t_train::run::{run as train_run, RunOptions};

use super::{copy_tree, Ctx};
use crate::journal::hash_parts;

/// The tiny Phi-3 of `so8t model init` as model A.
pub const BUILTIN_TINY: &str = "builtin:tiny";

/// A fingerprint of an external base model folder: its config, tokenizer and weight files by
/// name, size and modification time (hashing gigabytes on every run would be slow; a changed
/// file changes its size or time).
pub fn fingerprint_base(ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
    if ctx.cfg.base_model == BUILTIN_TINY {
        return Ok(Vec::new());
    }
    let dir = ctx.base_model();
    let mut v = Vec::new();
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("base_model {}: {e}", dir.display()))?;
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let m = e
            .metadata()
            .map_err(|x| format!("{}: {x}", e.path().display()))?;
        if m.is_file() {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            v.push(format!(
                "{}:{}:{t}",
                e.file_name().to_string_lossy(),
                m.len()
            ));
        }
    }
    if !dir.join("config.json").exists() {
        return Err(format!(
            "base_model {}: not an HF model folder (no config.json)",
            dir.display()
        ));
    }
    Ok(v)
}

/// `base`: for `builtin:tiny`, the tiny Phi-3 with a tokenizer trained on the /think chats;
/// otherwise the given folder is model A (nothing is copied).
pub fn base(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    if ctx.cfg.base_model != BUILTIN_TINY {
        let dir = ctx.base_model();
        return Ok(json!({"model": dir.display().to_string()}));
    }
    let chats = ctx.out("think").join("think_train.jsonl");
    let text = std::fs::read_to_string(&chats).map_err(|e| format!("{}: {e}", chats.display()))?;
    let corpus = out.join("tokenizer_corpus.txt");
    let mut lines = String::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).map_err(|e| format!("{}: {e}", chats.display()))?;
        lines.push_str(v["text"].as_str().unwrap_or(""));
        lines.push('\n');
    }
    std::fs::write(&corpus, lines).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let seed = init_seed(ctx.cfg);
    let cfg = init_model(
        &InitOptions {
            arch: Arch::Phi3,
            preset: Preset::Tiny,
            seed,
            tokenizer_corpus: vec![corpus.clone()],
            dtype: None,
            vocab_size: Some(ctx.cfg.data.tokenizer_vocab),
        },
        &out.join("model"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::remove_file(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    (ctx.log)(&format!(
        "   tiny Phi-3: {} layers, hidden {}, vocab {} (tokenizer trained on the /think chats)",
        cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    ));
    Ok(
        json!({"model": "model", "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
              "vocab": cfg.vocab_size}),
    )
}

/// The seed of the built-in base model's weights: the training seed (`train.training.seed`,
/// 42 when not given, as in a training config).
pub fn init_seed(cfg: &crate::config::PipelineConfig) -> u64 {
    cfg.train
        .get("training")
        .and_then(|t| t.get("seed"))
        .and_then(|s| s.as_u64())
        .unwrap_or(42)
}

/// The training config: the `train:` section with `model` and `data.train` filled in.
fn train_config(ctx: &Ctx<'_>) -> Result<TrainConfig, String> {
    let mut v = ctx.cfg.train.clone();
    let map = v
        .as_mapping_mut()
        .ok_or("`train` must be a mapping of training config keys")?;
    map.insert(
        "model".into(),
        ctx.base_model().display().to_string().into(),
    );
    let data = map
        .entry("data".into())
        .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
    let data = data
        .as_mapping_mut()
        .ok_or("`train.data` must be a mapping")?;
    let chats = ctx.out("think").join("think_train.jsonl");
    data.insert("train".into(), chats.display().to_string().into());
    let text = serde_yaml_ng::to_string(&v).map_err(|e| e.to_string())?;
    let cfg = TrainConfig::from_yaml(&text, &ctx.cfg_dir, "pipeline config `train`")
        .map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The base fingerprint, and that of an adopted run's `final/`.
pub fn fingerprint_train_run(ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
    let mut v = fingerprint_base(ctx)?;
    if let Some(run) = &ctx.cfg.train_run {
        let fin = ctx.resolve(run).join("final");
        v.push(crate::journal::tree_hash(&fin).map_err(|e| format!("{}: {e}", fin.display()))?);
    }
    Ok(v)
}

/// Adopts the finished run `run` as model B.
fn adopt_run(ctx: &Ctx<'_>, run: &Path, out: &Path) -> Result<Value, String> {
    let run = ctx.resolve(run);
    if !crate::watch::is_finished(&run) {
        return Err(format!(
            "train_run {}: the run has not finished (a completed session, a final checkpoint \
             and final/bake.json are needed)",
            run.display()
        ));
    }
    let steps = so8t_store::Session::read_json(&run).ok().map(|s| s.step);
    copy_tree(&run.join("final"), &out.join("final"))
        .map_err(|e| format!("copying {}/final: {e}", run.display()))?;
    Ok(json!({"run_dir": run.display().to_string(), "steps": steps, "adopted": true}))
}

/// `train`: SO8T fine-tuning of model B in `work/train-HASH` (resumed from its newest valid
/// checkpoint when the pipeline resumes); its `final/` is the step's output.
pub fn train(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    if let Some(run) = &ctx.cfg.train_run {
        return adopt_run(ctx, run, out);
    }
    let cfg = train_config(ctx)?;
    let run_dir = ctx.dir.join("work").join(format!(
        "train-{}",
        &hash_parts(&[cfg.hash(), ctx.base_model().display().to_string()])[..12]
    ));
    let start = Instant::now();
    let log = Arc::clone(&ctx.log);
    let mut first_step = None;
    let session = train_run(RunOptions {
        config: cfg,
        run_dir: run_dir.clone(),
        stop_after: None,
        interrupt: Arc::clone(&ctx.interrupt),
        on_step: Some(Box::new(move |m, s| {
            let first = *first_step.get_or_insert(m.step);
            let every = (s.total_steps / 10).max(1);
            if m.step % every == 0 || m.step == s.total_steps {
                let done = (m.step + 1 - first) as f64;
                let eta = start.elapsed().as_secs_f64() / done * (s.total_steps - m.step) as f64;
                log(&format!(
                    "   step {:>5}/{}: loss {:.4} (ce {:.4}) α {:.3} λ {:.2} ({}) · ETA {eta:.0}s",
                    m.step,
                    s.total_steps,
                    m.loss,
                    m.ce,
                    m.alpha,
                    m.pet_lambda,
                    m.phase.as_str()
                ));
            }
        })),
    })
    .map_err(|e| e.to_string())?;
    if ctx.interrupt.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    copy_tree(&run_dir.join("final"), &out.join("final"))
        .map_err(|e| format!("copying {}/final: {e}", run_dir.display()))?;
    Ok(
        json!({"run_dir": run_dir.display().to_string(), "steps": session.step,
              "best_loss": session.best_loss}),
    )
}

/// `bake`: the trained gates (and adapter) folded into `o_proj` of a plain HF folder; the baked
/// model's logits are checked against the gated one's.
pub fn bake_step(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    let final_dir = ctx.out("train").join("final");
    let p = final_dir.join("bake.json");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let b: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
    let base = b["base_model"].as_str().ok_or("bake.json: no base_model")?;
    // A base inside the run folder is relative to it (`./final/model` with full fine-tuning):
    // its copy lives next to this `final/`.
    let base = if Path::new(base).is_relative() {
        // `./final/model` lives in our copy of `final/`; `./model` (the built-in tiny base of
        // a run made by `so8t train`) in the run folder itself.
        let ours = ctx.out("train").join(base);
        match read_info(&ctx.out("train"))?["run_dir"].as_str() {
            Some(run) if !ours.exists() => Path::new(run).join(base),
            _ => ours,
        }
    } else {
        PathBuf::from(base)
    };
    let alpha = b["alpha"].as_f64().ok_or("bake.json: no alpha")?;
    let gates = b["gates"]
        .as_str()
        .map(|g| final_dir.join(g))
        .ok_or("the run trained no SO(8) gates: nothing to bake (enable so8t in `train`)")?;
    let method: RotationMethod = b["method"]
        .as_str()
        .unwrap_or("exp")
        .parse()
        .map_err(|e: so8t_model::Error| e.to_string())?;
    let adapter = b["adapter"].as_str().map(|a| final_dir.join(a));
    let tok = so8t_model::TextTokenizer::from_dir(&base).map_err(|e| e.to_string())?;
    let prompt = tok
        .encode("How do I bake bread? パンの焼き方は？", false)
        .map_err(|e| e.to_string())?;
    let report = bake(
        &base,
        &out.join("model"),
        &BakeOptions {
            gates,
            alpha,
            layers: None,
            method,
            adapter,
            check_prompts: vec![prompt],
        },
    )
    .map_err(|e| e.to_string())?;
    let diff = report
        .check_max_abs_diff
        .first()
        .copied()
        .unwrap_or(f64::NAN);
    if diff.is_nan() || diff >= 1e-3 {
        return Err(format!(
            "the baked model's logits differ from the gated model's by {diff}"
        ));
    }
    (ctx.log)(&format!(
        "   {} layers baked at α = {alpha:.4}; max |Δlogits| baked vs gated = {diff:.2e}",
        report.layers.len()
    ));
    Ok(json!({"alpha": alpha, "layers": report.layers, "max_abs_logit_diff": diff}))
}

/// `export`: GGUF files (and Modelfiles) of A in `a/` and B in `b/`.
pub fn export_step(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    let quants = ctx
        .cfg
        .export
        .quants
        .iter()
        .map(|q| Quant::parse(q).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let (name_a, name_b) = ctx.model_names();
    let mut files = Vec::new();
    for (label, model, name) in [
        ("a", ctx.base_model(), name_a),
        ("b", ctx.out("bake").join("model"), name_b),
    ] {
        let r = export(&ExportOptions {
            model,
            out: out.join(label),
            quants: quants.clone(),
            name,
            system: None,
            tokenizer_pre: None,
            progress: None,
        })
        .map_err(|e| e.to_string())?;
        for f in r.files {
            (ctx.log)(&format!(
                "   {} ({:.1} MB) → {}",
                f.path.strip_prefix(out).unwrap_or(&f.path).display(),
                f.bytes as f64 / 1e6,
                f.ollama_name
            ));
            files.push(json!({"model": label, "quant": format!("{:?}", f.quant),
                "file": f.path.strip_prefix(out).unwrap_or(&f.path).display().to_string(),
                "sha256": f.sha256, "modelfile": f.modelfile.strip_prefix(out).unwrap_or(&f.modelfile).display().to_string(),
                "name": f.ollama_name}));
        }
    }
    Ok(json!({"files": files}))
}

/// `import`: every exported Modelfile into the store; `import.json` names the models.
pub fn import_step(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    let exported = ctx.out("export");
    let lib = Library::open(&ctx.store_dir()).map_err(|e| e.to_string())?;
    let info = read_info(&exported)?;
    let mut models = Vec::new();
    for f in info["files"].as_array().cloned().unwrap_or_default() {
        let mf_path = exported.join(f["modelfile"].as_str().unwrap_or_default());
        let name = f["name"].as_str().unwrap_or_default().to_string();
        let mf = read_modelfile(&mf_path).map_err(|e| e.to_string())?;
        let base = mf_path.parent().unwrap_or(&exported).to_path_buf();
        let e = lib
            .create(&name, &mf, &base, &mut |_| {})
            .map_err(|e| format!("creating {name}: {e}"))?;
        (ctx.log)(&format!("   {} ({:.1} MB)", e.name, e.size as f64 / 1e6));
        models.push(json!({"model": f["model"], "quant": f["quant"], "name": e.name, "digest": e.digest, "gguf_sha256": f["sha256"]}));
    }
    let v = json!({"store": ctx.store_dir().display().to_string(), "models": models});
    let p = out.join("import.json");
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(v)
}

/// The `info` of a finished step, from its `info.json`.
pub(crate) fn read_info(step_dir: &Path) -> Result<Value, String> {
    let p = step_dir.join(crate::runner::INFO);
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

/// The imported models still resolve in the store to the same manifests.
pub fn import_still_valid(ctx: &Ctx<'_>, info: &Value) -> bool {
    let Ok(lib) = Library::open(&ctx.store_dir()) else {
        return false;
    };
    let Ok(list) = lib.list() else { return false };
    info["models"].as_array().is_some_and(|ms| {
        ms.iter().all(|m| {
            list.iter().any(|e| {
                Some(e.name.as_str()) == m["name"].as_str()
                    && Some(e.digest.as_str()) == m["digest"].as_str()
            })
        })
    })
}

/// The store name of model `which` ('a' or 'b') in the evaluated flavour.
pub(crate) fn store_name(ctx: &Ctx<'_>, which: char) -> Result<String, String> {
    let info = read_info(&ctx.out("import"))?;
    let quant = format!(
        "{:?}",
        Quant::parse(ctx.cfg.eval_quant()).map_err(|e| e.to_string())?
    );
    info["models"]
        .as_array()
        .and_then(|ms| {
            ms.iter().find(|m| {
                m["model"].as_str() == Some(&which.to_string())
                    && m["quant"].as_str() == Some(&quant)
            })
        })
        .and_then(|m| m["name"].as_str().map(str::to_string))
        .ok_or_else(|| format!("no imported model {which} in {quant}"))
}
