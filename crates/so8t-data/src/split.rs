//! Stratified, seeded train / validation / test split of `collect`'s JSON Lines output.
//!
//! Two streaming passes over the input: the first reads only each line's `four_class_label`
//! and keeps per-class lists of line ordinals (4 bytes per record, never the records); each
//! class list is shuffled with [`crate::shuffle::shuffle`] under a per-class seed and cut by
//! largest-remainder rounding, so every class is split in the requested ratios to within one
//! record and the counts add up exactly. The second pass copies every line byte for byte, in
//! input order, into `train.jsonl`, `validation.jsonl` or `test.jsonl`. All three are written
//! to temporary files first and renamed into place only after all three are complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::label::Label;
use crate::shuffle::{mix64, shuffle};

/// Names of the three splits, in the order of [`SplitOptions::ratios`]; the output files are
/// `<name>.jsonl`.
pub const SPLIT_NAMES: [&str; 3] = ["train", "validation", "test"];

/// What to split, where to, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitOptions {
    /// `collect`'s JSON Lines of [`crate::Record`]s (read only, never modified).
    pub input: PathBuf,
    /// Folder for `train.jsonl`, `validation.jsonl` and `test.jsonl` (created if missing);
    /// must not be the folder holding the input.
    pub out_dir: PathBuf,
    /// Shares of train, validation and test: each ≥ 0, summing to 1 within 1e-6.
    pub ratios: [f64; 3],
    /// Seed of the per-class shuffles; the same seed and input give identical files.
    pub seed: u64,
}

/// Records per split and class.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SplitStats {
    /// `train` / `validation` / `test` → class name (`ALLOW`, …) → records; every split and
    /// class is present, zeros included.
    pub per_split: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records in the input (blank lines are not records).
    pub total: u64,
}

/// Only the label of a line; other fields are skipped without being stored.
#[derive(Deserialize)]
struct LabelOnly {
    four_class_label: Label,
}

/// Splits `opts.input` into the three files in `opts.out_dir`; see the module docs.
pub fn split(opts: &SplitOptions) -> Result<SplitStats> {
    check_ratios(&opts.ratios)?;
    check_paths(opts)?;

    // Pass 1: per-class ordinals of the (non-blank) lines.
    let mut by_class: [Vec<u32>; 4] = Default::default();
    let mut n: u32 = 0;
    for_each_line(&opts.input, |line_no, text| {
        let label = parse_label(&opts.input, line_no, text)?;
        by_class[label.id() as usize].push(n);
        n = n.checked_add(1).ok_or_else(|| {
            Error::Config(format!(
                "{}: more than {} records; split supports at most that many",
                opts.input.display(),
                u32::MAX
            ))
        })?;
        Ok(())
    })?;

    // Assignment: one byte per record.
    let mut assign = vec![0u8; n as usize];
    let mut stats = SplitStats {
        total: u64::from(n),
        ..Default::default()
    };
    for name in SPLIT_NAMES {
        let classes = Label::ALL
            .iter()
            .map(|l| (l.name().to_string(), 0))
            .collect();
        stats.per_split.insert(name.to_string(), classes);
    }
    for label in Label::ALL {
        let mut list = std::mem::take(&mut by_class[label.id() as usize]);
        shuffle(&mut list, class_seed(opts.seed, label));
        let counts = largest_remainder(list.len() as u64, &opts.ratios);
        let mut pos = 0usize;
        for (s, &count) in counts.iter().enumerate() {
            for &ord in &list[pos..pos + count as usize] {
                assign[ord as usize] = s as u8;
            }
            pos += count as usize;
            *stats
                .per_split
                .get_mut(SPLIT_NAMES[s])
                .and_then(|m| m.get_mut(label.name()))
                .expect("all splits and classes are present") += count;
        }
    }

    // Pass 2: copy lines into the three files, each written atomically; the innermost closure
    // streams all three, so no file is renamed into place before all three are complete.
    let paths = SPLIT_NAMES.map(|s| opts.out_dir.join(format!("{s}.jsonl")));
    let mut failure: Option<Error> = None;
    let outcome = so8t_model::io::write_atomic(&paths[0], |train| {
        nested(&paths[1], &mut failure, |failure, validation| {
            nested(&paths[2], failure, |failure, test| {
                let mut outs: [&mut dyn Write; 3] = [train, validation, test];
                copy_lines(&opts.input, &assign, &mut outs).map_err(|e| {
                    let io = std::io::Error::other(e.to_string());
                    *failure = Some(e);
                    io
                })
            })
        })
    });
    match (failure, outcome) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(model_error(e)),
        (None, Ok(())) => Ok(stats),
    }
}

/// `write_atomic` on `path` inside another `write_atomic` callback: errors are stashed in
/// `failure` (for the caller) and reported upwards as `io::Error`s so every temp file is removed.
fn nested(
    path: &Path,
    failure: &mut Option<Error>,
    body: impl FnOnce(&mut Option<Error>, &mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut inner: Option<Error> = None;
    let r = so8t_model::io::write_atomic(path, |w| body(&mut inner, w));
    match (inner, r) {
        (Some(e), _) => {
            let io = std::io::Error::other(e.to_string());
            *failure = Some(e);
            Err(io)
        }
        (None, Err(e)) => {
            let e = model_error(e);
            let io = std::io::Error::other(e.to_string());
            *failure = Some(e);
            Err(io)
        }
        (None, Ok(())) => Ok(()),
    }
}

fn model_error(e: so8t_model::Error) -> Error {
    match e {
        so8t_model::Error::Io { path, source } => Error::Io { path, source },
        other => Error::Config(other.to_string()),
    }
}

/// Pass 2: every non-blank line to the output its ordinal was assigned to.
fn copy_lines(input: &Path, assign: &[u8], outs: &mut [&mut dyn Write; 3]) -> Result<()> {
    let mut ord = 0usize;
    let changed = || {
        Error::Config(format!(
            "{}: the file changed while it was being split (record count differs between passes)",
            input.display()
        ))
    };
    for_each_line(input, |_, text| {
        let s = *assign.get(ord).ok_or_else(changed)? as usize;
        ord += 1;
        let w = &mut outs[s];
        w.write_all(text).map_err(|e| Error::io(input, e))?;
        if !text.ends_with(b"\n") {
            w.write_all(b"\n").map_err(|e| Error::io(input, e))?;
        }
        Ok(())
    })?;
    if ord != assign.len() {
        return Err(changed());
    }
    Ok(())
}

/// Calls `f(line_no, raw_line)` for each non-blank line (1-based physical line numbers; the
/// raw line keeps its line ending; a UTF-8 byte-order mark at the start of the file is dropped).
fn for_each_line(path: &Path, mut f: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let mut text = &buf[..];
        if line_no == 1 {
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        f(line_no, text)?;
    }
}

fn parse_label(path: &Path, line: usize, text: &[u8]) -> Result<Label> {
    let err = |column: usize, msg: String| Error::Record {
        path: path.to_path_buf(),
        line,
        column,
        msg,
    };
    let s = std::str::from_utf8(text).map_err(|e| {
        let col = String::from_utf8_lossy(&text[..e.valid_up_to()])
            .chars()
            .count()
            + 1;
        err(
            col,
            format!("invalid UTF-8 (byte {} of the line)", e.valid_up_to() + 1),
        )
    })?;
    serde_json::from_str::<LabelOnly>(s)
        .map(|r| r.four_class_label)
        .map_err(|e| {
            let full = e.to_string();
            let msg = full.rfind(" at line ").map_or(&full[..], |i| &full[..i]);
            err(
                e.column(),
                format!("not a record with a four_class_label (ALLOW, ESCALATION, DENY or REFUSE): {msg}"),
            )
        })
}

fn check_ratios(r: &[f64; 3]) -> Result<()> {
    let bad = r.iter().any(|x| !x.is_finite() || *x < 0.0);
    let sum: f64 = r.iter().sum();
    if bad || (sum - 1.0).abs() > 1e-6 {
        return Err(Error::Config(format!(
            "split ratios {r:?} (train, validation, test): each must be ≥ 0 and they must sum to 1, e.g. [0.8, 0.1, 0.1]"
        )));
    }
    Ok(())
}

/// The input must exist and must not live in the output folder (where it could be overwritten
/// or mistaken for an output).
fn check_paths(opts: &SplitOptions) -> Result<()> {
    let input = opts
        .input
        .canonicalize()
        .map_err(|e| Error::io(&opts.input, e))?;
    if let Ok(out) = opts.out_dir.canonicalize() {
        if input.parent() == Some(out.as_path()) {
            return Err(Error::Config(format!(
                "output folder {} holds the input {}: choose another folder for the splits",
                opts.out_dir.display(),
                opts.input.display()
            )));
        }
    }
    Ok(())
}

/// The shuffle seed of one class: the split seed mixed with the class id.
fn class_seed(seed: u64, label: Label) -> u64 {
    mix64(seed ^ (u64::from(label.id()) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Splits `n` items by `ratios` (summing to 1) into integer counts summing to exactly `n`:
/// floors first, then one more to the largest remainders (ties to the earlier split); a zero
/// ratio never receives anything.
fn largest_remainder(n: u64, ratios: &[f64; 3]) -> [u64; 3] {
    let quotas = ratios.map(|r| n as f64 * r);
    let mut counts = quotas.map(|q| (q.floor() as u64).min(n));
    while counts.iter().sum::<u64>() > n {
        // Only reachable through rounding error: take back from the largest.
        let i = (0..3).max_by_key(|&i| counts[i]).unwrap_or(0);
        counts[i] -= 1;
    }
    let mut order: Vec<usize> = (0..3).filter(|&i| ratios[i] > 0.0).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (quotas[a] - counts[a] as f64, quotas[b] - counts[b] as f64);
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut left = n - counts.iter().sum::<u64>();
    let mut k = 0;
    while left > 0 && !order.is_empty() {
        counts[order[k % order.len()]] += 1;
        left -= 1;
        k += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_remainder_adds_up() {
        assert_eq!(largest_remainder(10, &[0.8, 0.1, 0.1]), [8, 1, 1]);
        assert_eq!(largest_remainder(1, &[0.8, 0.1, 0.1]), [1, 0, 0]);
        assert_eq!(largest_remainder(2, &[0.5, 0.25, 0.25]), [1, 1, 0]);
        assert_eq!(largest_remainder(3, &[0.0, 0.5, 0.5]), [0, 2, 1]);
        assert_eq!(largest_remainder(0, &[0.8, 0.1, 0.1]), [0, 0, 0]);
        assert_eq!(largest_remainder(7, &[1.0, 0.0, 0.0]), [7, 0, 0]);
        for n in 0..200 {
            for r in [
                [0.7, 0.2, 0.1],
                [1.0 / 3.0; 3],
                [0.05, 0.9, 0.05],
                [0.0, 0.0, 1.0],
            ] {
                let c = largest_remainder(n, &r);
                assert_eq!(c.iter().sum::<u64>(), n, "n={n} r={r:?}");
                for i in 0..3 {
                    assert!(
                        (c[i] as f64 - n as f64 * r[i]).abs() < 1.0 + 1e-9,
                        "n={n} r={r:?} {c:?}"
                    );
                    if r[i] == 0.0 {
                        assert_eq!(c[i], 0);
                    }
                }
            }
        }
    }

    #[test]
    fn class_seeds_differ() {
        let s: Vec<u64> = Label::ALL.iter().map(|&l| class_seed(0, l)).collect();
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(s[i], s[j]);
            }
        }
    }
}
