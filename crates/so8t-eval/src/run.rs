//! Running tasks against a backend: items in parallel (`concurrency`), a progress bar with
//! items/s and ETA, per-item JSONL results and the `summary.json` numbers.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::backend::Backend;
use crate::score::{score_item, ItemResult};
use crate::stats::{confusion_matrix, macro_f1, mean_stderr};
use crate::tasks::{Item, TaskKind};

/// The four-class names in id order.
pub const CLASS_NAMES: [&str; 4] = ["ALLOW", "ESCALATION", "DENY", "REFUSE"];

/// Runs every item of one task; results come back in item order.
pub fn run_task(
    task: &str,
    kind: TaskKind,
    items: &[Item],
    backend: &dyn Backend,
    concurrency: usize,
    show_progress: bool,
) -> Vec<ItemResult> {
    let bar = if show_progress {
        indicatif::ProgressBar::new(items.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(task.to_string());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ItemResult>>> = Mutex::new(vec![None; items.len()]);
    let errors = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = score_item(task, kind, item, backend);
                if let Some(e) = &r.error {
                    let n = errors.fetch_add(1, Ordering::SeqCst) + 1;
                    bar.set_message(format!("{n} errors"));
                    bar.println(format!("{task} item {}: {e}", r.id));
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                bar.inc(1);
            });
        }
    });
    bar.finish();
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn rate(flags: impl Iterator<Item = bool>) -> (f64, f64) {
    let v: Vec<f64> = flags.map(|b| if b { 1.0 } else { 0.0 }).collect();
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (mean, mean_stderr(&v).unwrap_or(f64::NAN))
}

/// A percentile (linear interpolation) of `v`.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    crate::stats::percentile_linear(v, q).unwrap_or(f64::NAN)
}

/// The numbers of one task: `{metric: value, metric_stderr: …}` plus counts, latency and, for
/// the four-class task, macro-F1, per-class P/R/F1 and the confusion matrix.
pub fn summarize(kind: TaskKind, results: &[ItemResult], wall_s: f64) -> Map<String, Value> {
    let mut m = Map::new();
    let n = results.len();
    let put = |m: &mut Map<String, Value>, k: &str, (v, se): (f64, f64)| {
        m.insert(k.into(), json!(v));
        m.insert(
            format!("{k}_stderr"),
            json!(if se.is_finite() {
                json!(se)
            } else {
                Value::Null
            }),
        );
    };
    let (main, alt) = match kind {
        TaskKind::Mmlu | TaskKind::FourClass => ("acc", None),
        TaskKind::Hellaswag | TaskKind::JCommonsenseQa => ("acc", Some("acc_norm")),
        TaskKind::Gsm8k => ("exact_match", Some("exact_match_flexible")),
    };
    put(&mut m, main, rate(results.iter().map(|r| r.correct)));
    if let Some(alt) = alt {
        put(
            &mut m,
            alt,
            rate(results.iter().map(|r| r.correct_alt.unwrap_or(false))),
        );
    }
    if kind == TaskKind::FourClass {
        let labels: Vec<usize> = results.iter().map(|r| r.gold.unwrap_or(0)).collect();
        let preds: Vec<Option<usize>> = results.iter().map(|r| r.pred).collect();
        if let Ok(cm) = confusion_matrix(&labels, &preds, 4) {
            m.insert("macro_f1".into(), json!(cm.macro_f1()));
            m.insert(
                "macro_f1_stderr".into(),
                json!(macro_f1_stderr(&labels, &preds)),
            );
            let mut pc = Map::new();
            for (name, prf) in CLASS_NAMES.iter().zip(cm.per_class()) {
                pc.insert(name.to_string(), json!(prf));
            }
            m.insert("per_class".into(), Value::Object(pc));
            m.insert("confusion_matrix".into(), json!(cm.counts));
            m.insert("unparseable".into(), json!(cm.unparseable));
        }
    }
    let lat: Vec<f64> = results.iter().map(|r| r.latency_s).collect();
    m.insert("n".into(), json!(n));
    m.insert(
        "errors".into(),
        json!(results.iter().filter(|r| r.error.is_some()).count()),
    );
    m.insert("latency_p50_s".into(), json!(percentile(&lat, 0.5)));
    m.insert("latency_p95_s".into(), json!(percentile(&lat, 0.95)));
    m.insert("items_per_s".into(), json!(n as f64 / wall_s.max(1e-9)));
    let tokens: usize = results.iter().map(|r| r.tokens).sum();
    m.insert(
        "tokens_per_s".into(),
        json!(tokens as f64 / wall_s.max(1e-9)),
    );
    m.insert("wall_s".into(), json!(wall_s));
    m
}

/// Bootstrap standard error of macro-F1 (1,000 resamples of the items, seed 0), as lm-eval
/// reports for non-mean metrics; null for fewer than two items.
fn macro_f1_stderr(labels: &[usize], preds: &[Option<usize>]) -> Value {
    use rand::{Rng, SeedableRng};
    let n = labels.len();
    if n < 2 {
        return Value::Null;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (mut l, mut p) = (vec![0; n], vec![None; n]);
    let mut vals = Vec::with_capacity(1000);
    for _ in 0..1000 {
        for j in 0..n {
            let i = rng.gen_range(0..n);
            l[j] = labels[i];
            p[j] = preds[i];
        }
        if let Ok(f) = macro_f1(&l, &p, 4) {
            vals.push(f);
        }
    }
    let mean = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
    let var = vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (vals.len().max(2) - 1) as f64;
    json!(var.sqrt())
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Writes `results` as JSONL atomically (temp file, fsync, rename, fsync folder).
pub fn write_results(path: &Path, results: &[ItemResult]) -> std::io::Result<()> {
    let mut text = String::new();
    for r in results {
        text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Reads a results JSONL file; errors name the line.
pub fn read_results(path: &Path) -> Result<Vec<ItemResult>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| format!("{}:{}: not an item result: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Writes `bytes` to `path` atomically (so8t-model's temp file, fsync, rename, fsync folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    so8t_model::io::write_atomic(path, |w| w.write_all(bytes)).map_err(std::io::Error::other)
}

/// Wall-clock helper for a task run.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t0 = Instant::now();
    let v = f();
    (v, t0.elapsed().as_secs_f64())
}
