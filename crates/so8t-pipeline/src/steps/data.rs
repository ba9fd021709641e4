//! The data steps: records → split, and /think chats of the train and test splits (plus the
//! four-class evaluation file, the test split asked with the training's system prompt).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use so8t_data::collect::{collect, CollectOptions};
use so8t_data::split::{split, SplitOptions};
use so8t_data::think::{think, Renderer, ThinkFormat, ThinkOptions};

use super::model::BUILTIN_TINY;
use super::Ctx;
use crate::journal::{sha256_file, tree_hash};

/// The bundled sample as an input.
pub const BUILTIN_SAMPLE: &str = "builtin:sample";

fn input_paths(ctx: &Ctx<'_>, out: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let mut v = Vec::new();
    for i in &ctx.cfg.data.inputs {
        if i == BUILTIN_SAMPLE {
            if let Some(out) = out {
                let p = out.join("sample_four_class.jsonl");
                std::fs::write(&p, so8t_data::SAMPLE_FOUR_CLASS)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                v.push(p);
            }
        } else {
            let p = ctx.resolve(Path::new(i));
            if !p.exists() {
                return Err(format!("data.inputs: {} does not exist", p.display()));
            }
            v.push(p);
        }
    }
    if v.is_empty() && out.is_some() {
        return Err("data.inputs: no input".into());
    }
    Ok(v)
}

/// Content hashes of the dataset inputs.
pub fn fingerprint_inputs(ctx: &Ctx<'_>) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for p in input_paths(ctx, None)? {
        let h = if p.is_dir() {
            tree_hash(&p).map_err(|e| format!("{}: {e}", p.display()))?
        } else {
            sha256_file(&p).map_err(|e| format!("{}: {e}", p.display()))?
        };
        v.push(format!("{}={h}", p.display()));
    }
    Ok(v)
}

/// `data`: collect (PII scrubbed, exact and near duplicates dropped) and a stratified split.
pub fn collect_and_split(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    let inputs = input_paths(ctx, Some(out))?;
    let records = out.join("records.jsonl");
    let c = collect(&CollectOptions::new(inputs, records.clone())).map_err(|e| e.to_string())?;
    (ctx.log)(&format!(
        "   read {}, kept {} ({} duplicates, {} near-duplicates)",
        c.read, c.written, c.duplicates, c.near_duplicates
    ));
    let sp = split(&SplitOptions {
        input: records,
        out_dir: out.join("split"),
        ratios: ctx.cfg.data.split,
        seed: ctx.cfg.data.seed,
    })
    .map_err(|e| e.to_string())?;
    let sizes: serde_json::Map<String, Value> = sp
        .per_split
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.values().sum::<u64>())))
        .collect();
    (ctx.log)(&format!("   split {}", Value::Object(sizes.clone())));
    Ok(
        json!({"read": c.read, "kept": c.written, "duplicates": c.duplicates,
              "near_duplicates": c.near_duplicates, "per_class": c.per_class, "split": sizes}),
    )
}

fn renderer(ctx: &Ctx<'_>) -> Result<Renderer, String> {
    if ctx.cfg.base_model == BUILTIN_TINY {
        Renderer::phi35().map_err(|e| e.to_string())
    } else {
        Renderer::from_model_dir(&ctx.base_model()).map_err(|e| e.to_string())
    }
}

/// `think`: the /think chats of the train and test splits, and `eval_four_class.jsonl`.
pub fn think_chats(ctx: &Ctx<'_>, out: &Path) -> Result<Value, String> {
    let format: ThinkFormat = ctx.cfg.data.think_format.parse()?;
    let r = renderer(ctx)?;
    let split = ctx.out("data").join("split");
    let mut info = serde_json::Map::new();
    for part in ["train", "test"] {
        let input = split.join(format!("{part}.jsonl"));
        if !input.exists() {
            continue;
        }
        let output = out.join(format!("think_{part}.jsonl"));
        let t = think(
            &ThinkOptions {
                inputs: vec![input],
                output,
                format,
                system: None,
                map: Default::default(),
                progress: None,
            },
            &r,
        )
        .map_err(|e| e.to_string())?;
        info.insert(part.into(), json!(t.written));
    }
    // The test chats as four-class items: the user turn, the system prompt the model was
    // trained with, the gold label.
    let test = out.join("think_test.jsonl");
    let eval = out.join("eval_four_class.jsonl");
    let mut f = std::fs::File::create(&eval).map_err(|e| format!("{}: {e}", eval.display()))?;
    let mut n = 0;
    if test.exists() {
        let text =
            std::fs::read_to_string(&test).map_err(|e| format!("{}: {e}", test.display()))?;
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", test.display(), i + 1))?;
            let turn = |role: &str| {
                v["messages"]
                    .as_array()
                    .and_then(|m| m.iter().find(|x| x["role"] == role))
                    .and_then(|x| x["content"].as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let item = json!({"id": v["id"], "instruction": turn("user"), "system": turn("system"),
                              "four_class_label": v["four_class_label"], "lang": v["lang"]});
            writeln!(f, "{item}").map_err(|e| format!("{}: {e}", eval.display()))?;
            n += 1;
        }
    }
    f.sync_all()
        .map_err(|e| format!("{}: {e}", eval.display()))?;
    info.insert("eval_four_class".into(), json!(n));
    Ok(Value::Object(info))
}
