//! `so8t data collect`: read datasets, map fields, normalize labels, drop duplicates, write the
//! unified JSONL and a stats report. Streaming: memory grows only with the dedup key set.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::dedup::ExactDedup;
use crate::error::{Error, Result};
use crate::jsonl::{read_json, JsonlReader};
use crate::label::Label;
use crate::pii::{PiiCounts, PiiScrubber};
use crate::record::{FieldMap, Lang};

/// What to collect.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Input files (`.jsonl`, `.json`).
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

enum Source {
    Lines(JsonlReader),
    Values(std::vec::IntoIter<(usize, Value)>),
}

fn open(path: &Path) -> Result<Source> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "ndjson" => Ok(Source::Lines(JsonlReader::open(path)?)),
        "json" => Ok(Source::Values(read_json(path)?.into_iter())),
        other => Err(Error::Config(format!(
            "{}: unsupported input format {other:?}; expected .jsonl, .ndjson or .json",
            path.display()
        ))),
    }
}

/// Runs the collection; the output (and rejects file) replace their targets only when complete.
pub fn collect(opts: &CollectOptions) -> Result<CollectStats> {
    let output = opts.output.canonicalize().ok();
    if let Some(p) = opts
        .inputs
        .iter()
        .find(|p| output.is_some() && p.canonicalize().ok() == output)
    {
        return Err(Error::Config(format!(
            "{}: the output is an input; inputs are never modified",
            p.display()
        )));
    }
    let mut stats = CollectStats::default();
    let mut hist: BTreeMap<u64, u64> = BTreeMap::new();
    let mut dedup = ExactDedup::new();
    let scrubber = PiiScrubber::new();
    let mut rejects: Vec<u8> = Vec::new();
    let mut failure: Option<Error> = None;
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        for path in &opts.inputs {
            let fallback_source = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("input")
                .to_string();
            let src = match open(path) {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("input"));
                }
            };
            let items: Box<dyn Iterator<Item = Result<(usize, Value)>>> = match src {
                Source::Lines(r) => Box::new(r),
                Source::Values(v) => Box::new(v.map(Ok)),
            };
            for item in items {
                stats.read += 1;
                let mapped = item
                    .map_err(|e| Box::new((e, Value::Null)))
                    .and_then(|(line, v)| {
                        opts.map
                            .to_record(&v, &format!("{fallback_source}:{line}"), &fallback_source)
                            .map_err(|msg| {
                                Box::new((
                                    Error::Record {
                                        path: path.clone(),
                                        line,
                                        column: 0,
                                        msg,
                                    },
                                    v,
                                ))
                            })
                    });
                let mut rec = match mapped {
                    Ok(r) => r,
                    Err(bad) if opts.skip_bad && matches!(bad.0, Error::Record { .. }) => {
                        let (e, raw) = *bad;
                        stats.rejected += 1;
                        let row =
                            serde_json::json!({"error": e.to_string(), "record": raw}).to_string();
                        // Rejected records are scrubbed too: PII must not leak through the side file.
                        let row = if opts.scrub_pii {
                            scrubber.scrub_cow(&row).0
                        } else {
                            row.into()
                        };
                        rejects.extend(row.bytes());
                        rejects.push(b'\n');
                        continue;
                    }
                    Err(bad) => {
                        failure = Some(bad.0);
                        return Err(std::io::Error::other("record"));
                    }
                };
                if opts.scrub_pii {
                    for field in [
                        &mut rec.instruction,
                        &mut rec.input,
                        &mut rec.output,
                        &mut rec.system,
                    ] {
                        let (clean, counts) = scrubber.scrub_cow(field);
                        if !counts.is_empty() {
                            *field = clean.into_owned();
                            stats.pii.add(&counts);
                        }
                    }
                }
                if opts.dedup && !dedup.insert(&[&rec.instruction, &rec.input]) {
                    stats.duplicates += 1;
                    continue;
                }
                serde_json::to_writer(&mut *w, &rec)?;
                w.write_all(b"\n")?;
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
        Ok(())
    };
    let res = so8t_model::io::write_atomic(&opts.output, write);
    if let Some(e) = failure {
        return Err(e);
    }
    res.map_err(|e| Error::Config(e.to_string()))?;
    if opts.skip_bad {
        let path = opts.rejects.clone().unwrap_or_else(|| {
            let mut p = opts.output.clone().into_os_string();
            p.push(".rejects.jsonl");
            PathBuf::from(p)
        });
        so8t_model::io::write_atomic(&path, |w| w.write_all(&rejects))
            .map_err(|e| Error::Config(e.to_string()))?;
    }
    for l in Label::ALL {
        stats.per_class.entry(l.name().into()).or_default();
    }
    stats.length_chars = percentiles(&hist, stats.written);
    Ok(stats)
}
