//! `so8t data collect`: read datasets, map fields, normalize labels, drop duplicates, write the
//! unified JSONL and a stats report. Streaming: memory grows only with the dedup key set.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::dedup::ExactDedup;
use crate::error::{Error, Result};
use crate::label::Label;
use crate::neardup::{NearDedup, NearDedupConfig};
use crate::pii::{PiiCounts, PiiScrubber};
use crate::progress::Progress;
use crate::record::{FieldMap, Lang, Record};
use rayon::prelude::*;

/// What to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Input files or folders (any format [`crate::readers::open`] reads).
    pub inputs: Vec<PathBuf>,
    /// Output JSONL of unified records (written atomically).
    pub output: PathBuf,
    /// Field mapping.
    pub map: FieldMap,
    /// Count and skip bad records instead of failing on the first.
    pub skip_bad: bool,
    /// Where skipped records go with their reason (default: `<output>.rejects.jsonl` with `skip_bad`).
    pub rejects: Option<PathBuf>,
    /// Drop exact duplicates (normalized instruction + input). Default on.
    pub dedup: bool,
    /// Replace PII (e-mail, phone, credit card, IP, JP postal code) by typed placeholders
    /// before de-duplication. Default on.
    pub scrub_pii: bool,
    /// Drop near-duplicates (MinHash/LSH over instruction + input) with these settings.
    pub near_dup: Option<NearDedupConfig>,
    /// Where to report bytes read, for a progress bar.
    pub progress: Option<Arc<Progress>>,
}

impl CollectOptions {
    /// Defaults: no field overrides, stop at the first bad record, exact de-duplication, PII
    /// scrubbing and near-duplicate removal (threshold 0.8) on.
    pub fn new(inputs: Vec<PathBuf>, output: PathBuf) -> Self {
        Self {
            inputs,
            output,
            map: FieldMap::default(),
            skip_bad: false,
            rejects: None,
            dedup: true,
            scrub_pii: true,
            near_dup: Some(NearDedupConfig::default()),
            progress: None,
        }
    }
}

/// Counts of a collect run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CollectStats {
    /// Records read.
    pub read: u64,
    /// Records written.
    pub written: u64,
    /// Records rejected (with `skip_bad`).
    pub rejected: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Near-duplicates dropped.
    pub near_duplicates: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// PII replacements by kind (in written and dropped records alike).
    pub pii: PiiCounts,
    /// Written records per class.
    pub per_class: BTreeMap<String, u64>,
    /// Written records per source.
    pub per_source: BTreeMap<String, u64>,
    /// Written records per language guess.
    pub per_lang: BTreeMap<String, u64>,
    /// Instruction length in characters: p50, p90, p99, max.
    pub length_chars: BTreeMap<String, u64>,
}

fn percentiles(hist: &BTreeMap<u64, u64>, total: u64) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if total == 0 {
        return out;
    }
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&len, &n) in hist {
            seen += n;
            if seen >= rank {
                out.insert(name.to_string(), len);
                break;
            }
        }
    }
    out.insert("max".into(), hist.keys().next_back().copied().unwrap_or(0));
    out
}

/// Rows mapped and scrubbed per batch, in parallel.
const BATCH: usize = 4096;

/// A mapped record with its PII counts and dedup key, or the error and the raw row.
type Mapped = std::result::Result<(Record, PiiCounts, [u8; 16]), Box<(Error, Value)>>;

/// Maps one row to a record, scrubs its PII and computes its dedup key (any thread).
fn map_one(
    item: Result<(usize, Value)>,
    path: &Path,
    fallback_source: &str,
    opts: &CollectOptions,
    scrubber: &PiiScrubber,
) -> Mapped {
    let (line, v) = item.map_err(|e| Box::new((e, Value::Null)))?;
    let mut rec = opts
        .map
        .to_record(&v, &format!("{fallback_source}:{line}"), fallback_source)
        .map_err(|msg| {
            let e = Error::Record {
                path: path.to_path_buf(),
                line,
                column: 0,
                msg,
            };
            Box::new((e, v))
        })?;
    let mut counts = PiiCounts::default();
    if opts.scrub_pii {
        for field in [
            &mut rec.instruction,
            &mut rec.input,
            &mut rec.output,
            &mut rec.system,
        ] {
            let (clean, c) = scrubber.scrub_cow(field);
            if !c.is_empty() {
                *field = clean.into_owned();
                counts.add(&c);
            }
        }
    }
    let key = if opts.dedup {
        ExactDedup::key(&[&rec.instruction, &rec.input])
    } else {
        [0; 16]
    };
    Ok((rec, counts, key))
}

/// Errors when a file with a header or schema has none of the columns a field must come from.
fn check_columns(path: &Path, columns: &[String], map: &FieldMap) -> Result<()> {
    for (field, names) in [("text", &map.text), ("label", &map.label)] {
        if !names.iter().any(|n| columns.contains(n)) {
            return Err(Error::Config(format!(
                "{}: no column for the {field}: expected one of {names:?}, found columns {columns:?} \
                 (map another one with --map {field}=COLUMN)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Errors when `output` is one of `inputs`: inputs are never modified.
pub(crate) fn refuse_output_among_inputs(inputs: &[PathBuf], output: &Path) -> Result<()> {
    let Ok(output) = output.canonicalize() else {
        return Ok(());
    };
    match inputs
        .iter()
        .find(|p| p.canonicalize().ok().as_ref() == Some(&output))
    {
        Some(p) => Err(Error::Config(format!(
            "{}: the output is an input; inputs are never modified",
            p.display()
        ))),
        None => Ok(()),
    }
}

/// Runs the collection; the output (and rejects file) replace their targets only when complete.
pub fn collect(opts: &CollectOptions) -> Result<CollectStats> {
    refuse_output_among_inputs(&opts.inputs, &opts.output)?;
    let mut stats = CollectStats::default();
    let mut hist: BTreeMap<u64, u64> = BTreeMap::new();
    let mut dedup = ExactDedup::new();
    let mut near = match &opts.near_dup {
        Some(cfg) => Some(NearDedup::new(cfg.clone()).map_err(Error::Config)?),
        None => None,
    };
    let scrubber = PiiScrubber::new();
    let rejects_path = opts.skip_bad.then(|| {
        opts.rejects.clone().unwrap_or_else(|| {
            let mut p = opts.output.clone().into_os_string();
            p.push(".rejects.jsonl");
            PathBuf::from(p)
        })
    });
    // Open every input first: a missing file or column fails before anything is written.
    let mut sources = Vec::with_capacity(opts.inputs.len());
    for path in &opts.inputs {
        let src = crate::readers::open(path)?;
        if let Some(cols) = &src.columns {
            check_columns(path, cols, &opts.map)?;
        }
        if let Some(p) = &opts.progress {
            p.add_total(src.total_bytes);
        }
        sources.push((path, src));
    }
    let mut failure: Option<Error> = None;
    let run = |w: &mut dyn Write, rejects: &mut dyn Write| -> Result<()> {
        let out_err = |e: std::io::Error| Error::io(&opts.output, e);
        let mut done_before = 0u64;
        for (path, src) in sources {
            let fallback_source = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("input")
                .to_string();
            let consumed = src.consumed.clone();
            let mut rows = src.rows;
            loop {
                let batch: Vec<_> = rows.by_ref().take(BATCH).collect();
                if batch.is_empty() {
                    break;
                }
                stats.read += batch.len() as u64;
                if let Some(p) = &opts.progress {
                    p.set_done(done_before + consumed.load(Ordering::Relaxed));
                }
                // Mapping, PII scrubbing and dedup keys on all cores; decisions in input order.
                let mapped: Vec<Mapped> = batch
                    .into_par_iter()
                    .map(|item| map_one(item, path, &fallback_source, opts, &scrubber))
                    .collect();
                for m in mapped {
                    let (rec, counts, key) = match m {
                        Ok(x) => x,
                        Err(bad) if opts.skip_bad && matches!(bad.0, Error::Record { .. }) => {
                            let (e, raw) = *bad;
                            stats.rejected += 1;
                            let row = serde_json::json!({"error": e.to_string(), "record": raw})
                                .to_string();
                            // Rejected records are scrubbed too: PII must not leak through the side file.
                            let row = if opts.scrub_pii {
                                scrubber.scrub_cow(&row).0
                            } else {
                                row.into()
                            };
                            rejects
                                .write_all(row.as_bytes())
                                .and_then(|_| rejects.write_all(b"\n"))
                                .map_err(out_err)?;
                            continue;
                        }
                        Err(bad) => return Err(bad.0),
                    };
                    stats.pii.add(&counts);
                    if opts.dedup && !dedup.insert_key(key) {
                        stats.duplicates += 1;
                        continue;
                    }
                    if let Some(near) = near.as_mut() {
                        let text = if rec.input.is_empty() {
                            std::borrow::Cow::Borrowed(rec.instruction.as_str())
                        } else {
                            format!("{}\n{}", rec.instruction, rec.input).into()
                        };
                        if !near.insert(&text) {
                            stats.near_duplicates += 1;
                            continue;
                        }
                    }
                    serde_json::to_writer(&mut *w, &rec).map_err(|e| out_err(e.into()))?;
                    w.write_all(b"\n").map_err(out_err)?;
                    stats.written += 1;
                    *stats
                        .per_class
                        .entry(rec.four_class_label.name().into())
                        .or_default() += 1;
                    *stats.per_source.entry(rec.source.clone()).or_default() += 1;
                    let lang = if rec.lang == Lang::Ja { "ja" } else { "en" };
                    *stats.per_lang.entry(lang.into()).or_default() += 1;
                    *hist
                        .entry(rec.instruction.chars().count() as u64)
                        .or_default() += 1;
                }
            }
            done_before += consumed.load(Ordering::Relaxed);
            if let Some(p) = &opts.progress {
                p.set_done(done_before);
            }
        }
        stats.bytes = done_before;
        Ok(())
    };
    let mut fail = |e: Error| {
        failure = Some(e);
        std::io::Error::other("collect")
    };
    let res = so8t_model::io::write_atomic(&opts.output, |w| match &rejects_path {
        // The rejects file is finished (renamed) just before the output.
        Some(rp) => so8t_model::io::write_atomic(rp, |r| run(w, r).map_err(&mut fail))
            .map_err(std::io::Error::other),
        None => run(w, &mut std::io::sink()).map_err(&mut fail),
    });
    if let Some(e) = failure {
        return Err(e);
    }
    res.map_err(|e| Error::Config(e.to_string()))?;
    for l in Label::ALL {
        stats.per_class.entry(l.name().into()).or_default();
    }
    stats.length_chars = percentiles(&hist, stats.written);
    Ok(stats)
}
