//! `so8t data tokenize`: chats → training examples. Each chat is rendered with the model's chat
//! template and tokenized; labels cover the assistant's tokens only (found from the rendered
//! template: everything after the generation prompt), unless `train_on_prompt`. Examples longer
//! than `max_seq_len` are cut at the right; one whose `分類:` line would be cut is counted and
//! dropped (or kept with `keep_cut_class`), never cut silently. Optionally examples are packed
//! into rows of `max_seq_len` tokens (best fit), and the order is shuffled by a seed.
//!
//! Memory holds only a small index per example: tokens go to a temporary file next to the
//! output and are read back in the final order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use so8t_model::{ChatTemplate, Message, TextTokenizer, PHI35_TEMPLATE};

use crate::error::{Error, Result};

/// The label value of tokens that do not count in the loss (as in HF transformers).
pub const IGNORE: i64 = -100;

/// One training row (a line of `data tokenize`'s output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Target ids at the same positions (unshifted, as HF), [`IGNORE`] where not trained.
    pub labels: Vec<i64>,
    /// Lengths of the sequences packed into this row (one entry when not packed); tokens attend
    /// only within their sequence and positions restart at 0 for each.
    pub seq_lens: Vec<usize>,
    /// The chat ids of the packed sequences, in order.
    pub ids: Vec<String>,
}

/// A tokenized chat before packing.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Token ids of the whole rendered chat.
    pub input_ids: Vec<u32>,
    /// Labels ([`IGNORE`] for prompt tokens unless `train_on_prompt`).
    pub labels: Vec<i64>,
    /// Tokens needed to keep the `分類:` line whole (None if the answer has none).
    pub class_line_tokens: Option<usize>,
    /// Byte offset in the rendered text where the trained part starts.
    pub assistant_start: usize,
}

/// Renders and tokenizes one chat whose last message is the assistant's.
pub fn encode_chat(
    messages: &[Message],
    tok: &TextTokenizer,
    template: &ChatTemplate,
    train_on_prompt: bool,
) -> std::result::Result<Encoded, String> {
    let (last, prompt_msgs) = messages
        .split_last()
        .ok_or_else(|| "no messages".to_string())?;
    if last.role != "assistant" {
        return Err(format!(
            "the last message must be the assistant's, found {:?}",
            last.role
        ));
    }
    if prompt_msgs.is_empty() {
        return Err("no prompt before the assistant message".into());
    }
    let full = template
        .render(messages, false)
        .map_err(|e| format!("chat template: {e}"))?;
    let prompt = template
        .render(prompt_msgs, true)
        .map_err(|e| format!("chat template: {e}"))?;
    // The trained part: what the template adds after the generation prompt. Templates that
    // rewrite earlier turns fall back to where the assistant's text appears last.
    let start = if full.starts_with(&prompt) {
        prompt.len()
    } else {
        full.rfind(last.content.as_str())
            .ok_or("the rendered chat does not contain the assistant's text")?
    };
    let enc = tok
        .inner()
        .encode(full.as_str(), false)
        .map_err(|e| format!("tokenizer: {e}"))?;
    let ids = enc.get_ids().to_vec();
    let offsets = enc.get_offsets();
    let labels = ids
        .iter()
        .zip(offsets)
        .map(|(&id, &(_, end))| {
            if train_on_prompt || end > start {
                id as i64
            } else {
                IGNORE
            }
        })
        .collect();
    let class_line_tokens = full[start..].find("分類").map(|at| {
        let at = start + at;
        let line_end = full[at..].find('\n').map_or(full.len(), |n| at + n);
        offsets
            .iter()
            .position(|&(_, end)| end >= line_end)
            .map_or(ids.len(), |i| i + 1)
    });
    Ok(Encoded {
        input_ids: ids,
        labels,
        class_line_tokens,
        assistant_start: start,
    })
}

/// The template to train a model with: its tokenizer's own, else Phi-3.5's with the tokenizer's
/// BOS/EOS (EOS `<|endoftext|>` if it declares none).
pub fn training_template(tok: &TextTokenizer) -> Result<ChatTemplate> {
    let (source, bos, eos) = match &tok.chat_template {
        Some(t) => (
            t.source.as_str(),
            t.bos_token.as_str(),
            t.eos_token.as_str(),
        ),
        None => (
            PHI35_TEMPLATE,
            tok.bos_token.as_deref().unwrap_or(""),
            tok.eos_token.as_deref().unwrap_or("<|endoftext|>"),
        ),
    };
    ChatTemplate::new(source, bos, eos).map_err(|e| Error::Config(format!("chat template: {e}")))
}

/// What `data tokenize` reads and writes.
#[derive(Debug, Clone)]
pub struct TokenizeOptions {
    /// JSONL files of chats: `data think` output or any rows with `messages` (and an `id`).
    pub inputs: Vec<PathBuf>,
    /// The output JSONL of [`Example`] rows (written atomically).
    pub output: PathBuf,
    /// Longest row in tokens.
    pub max_seq_len: usize,
    /// Train on the prompt tokens too.
    pub train_on_prompt: bool,
    /// Pack several examples into each row.
    pub pack: bool,
    /// Shuffle with this seed (None keeps the input order).
    pub seed: Option<u64>,
    /// Keep examples whose `分類:` line does not fit (cut) instead of dropping them.
    pub keep_cut_class: bool,
    /// Where to report bytes read, for a progress bar.
    pub progress: Option<std::sync::Arc<crate::progress::Progress>>,
}

/// Counts of a `data tokenize` run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TokenizeStats {
    /// Chats read.
    pub chats: u64,
    /// Examples written (sequences, packed or not).
    pub examples: u64,
    /// Output rows.
    pub rows: u64,
    /// Tokens written.
    pub tokens: u64,
    /// Tokens with a label.
    pub label_tokens: u64,
    /// Examples cut to `max_seq_len` (their `分類:` line intact).
    pub truncated: u64,
    /// Examples dropped because their `分類:` line did not fit.
    pub class_line_cut_dropped: u64,
    /// Examples kept although their `分類:` line was cut (`keep_cut_class`).
    pub class_line_cut_kept: u64,
    /// Examples dropped because no trained token fit.
    pub no_labels_dropped: u64,
    /// Longest chat in tokens before truncation.
    pub longest: u64,
    /// Share of the `rows × max_seq_len` token slots that hold tokens.
    pub fill: f64,
}

/// Deletes the temporary token file however the run ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Entry {
    offset: u64,
    len: u32,
    id: String,
}

const CHUNK: usize = 1024;

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Parses one input line into (id, messages).
fn chat_of(line: &str, path: &Path, n: usize) -> Result<(String, Vec<Message>)> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(default)]
        id: Option<serde_json::Value>,
        messages: Vec<Message>,
    }
    let row: Row = serde_json::from_str(line).map_err(|e| Error::Record {
        path: path.to_path_buf(),
        line: n,
        column: e.column(),
        msg: format!("expected a chat row with `messages` (OpenAI format): {e}"),
    })?;
    let id = match row.id {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => format!("{}:{n}", path.display()),
    };
    Ok((id, row.messages))
}

/// Runs `data tokenize` with a tokenizer and the chat template to render with.
pub fn tokenize(
    opts: &TokenizeOptions,
    tok: &TextTokenizer,
    template: &ChatTemplate,
) -> Result<TokenizeStats> {
    if opts.max_seq_len < 2 {
        return Err(Error::Config(format!(
            "max_seq_len {} is too small",
            opts.max_seq_len
        )));
    }
    crate::collect::refuse_output_among_inputs(&opts.inputs, &opts.output)?;
    let dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = opts
        .output
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let tmp = TempFile(dir.join(format!(".{name}.tokens-{}", std::process::id())));
    let mut stats = TokenizeStats::default();
    let mut index: Vec<Entry> = Vec::new();
    {
        let mut w = BufWriter::new(File::create(&tmp.0).map_err(io(&tmp.0))?);
        let mut offset = 0u64;
        if let Some(p) = &opts.progress {
            for path in &opts.inputs {
                p.add_total(std::fs::metadata(path).map_err(io(path))?.len());
            }
        }
        for path in &opts.inputs {
            let mut lines = BufReader::with_capacity(1 << 20, File::open(path).map_err(io(path))?)
                .lines()
                .enumerate();
            loop {
                let mut chunk = Vec::with_capacity(CHUNK);
                for (i, line) in lines.by_ref() {
                    let line = line.map_err(|e| Error::Record {
                        path: path.clone(),
                        line: i + 1,
                        column: 0,
                        msg: format!("unreadable line: {e}"),
                    })?;
                    if let Some(p) = &opts.progress {
                        p.add_done(line.len() as u64 + 1);
                    }
                    if !line.trim().is_empty() {
                        chunk.push((i + 1, line));
                    }
                    if chunk.len() == CHUNK {
                        break;
                    }
                }
                if chunk.is_empty() {
                    break;
                }
                let encoded: Vec<Result<(String, Encoded)>> = chunk
                    .par_iter()
                    .map(|(n, line)| {
                        let (id, msgs) = chat_of(line, path, *n)?;
                        let e = encode_chat(&msgs, tok, template, opts.train_on_prompt).map_err(
                            |msg| Error::Record {
                                path: path.clone(),
                                line: *n,
                                column: 0,
                                msg,
                            },
                        )?;
                        Ok((id, e))
                    })
                    .collect();
                for item in encoded {
                    let (id, mut e) = item?;
                    stats.chats += 1;
                    let n = e.input_ids.len();
                    stats.longest = stats.longest.max(n as u64);
                    if n > opts.max_seq_len {
                        if e.class_line_tokens.is_some_and(|c| c > opts.max_seq_len) {
                            if !opts.keep_cut_class {
                                stats.class_line_cut_dropped += 1;
                                continue;
                            }
                            stats.class_line_cut_kept += 1;
                        } else {
                            stats.truncated += 1;
                        }
                        e.input_ids.truncate(opts.max_seq_len);
                        e.labels.truncate(opts.max_seq_len);
                    }
                    let labeled = e.labels.iter().filter(|&&l| l != IGNORE).count() as u64;
                    if labeled == 0 {
                        stats.no_labels_dropped += 1;
                        continue;
                    }
                    stats.label_tokens += labeled;
                    for &t in &e.input_ids {
                        w.write_all(&t.to_le_bytes()).map_err(io(&tmp.0))?;
                    }
                    for &l in &e.labels {
                        w.write_all(&(l as i32).to_le_bytes()).map_err(io(&tmp.0))?;
                    }
                    let len = e.input_ids.len();
                    index.push(Entry {
                        offset,
                        len: len as u32,
                        id,
                    });
                    offset += 8 * len as u64;
                }
            }
        }
        w.flush().map_err(io(&tmp.0))?;
    }
    let mut order: Vec<u32> = (0..index.len() as u32).collect();
    if let Some(seed) = opts.seed {
        crate::shuffle::shuffle(&mut order, seed);
    }
    let rows = if opts.pack {
        pack_best_fit(&order, |i| index[i as usize].len as usize, opts.max_seq_len)
    } else {
        order.iter().map(|&i| vec![i]).collect()
    };
    let mut src = File::open(&tmp.0).map_err(io(&tmp.0))?;
    let mut failure = None;
    let res = so8t_model::io::write_atomic(&opts.output, |w| {
        let mut buf = Vec::new();
        for row in &rows {
            let mut ex = Example {
                input_ids: Vec::new(),
                labels: Vec::new(),
                seq_lens: Vec::with_capacity(row.len()),
                ids: Vec::with_capacity(row.len()),
            };
            for &i in row {
                let e = &index[i as usize];
                let len = e.len as usize;
                buf.resize(8 * len, 0);
                src.seek(SeekFrom::Start(e.offset))
                    .and_then(|_| src.read_exact(&mut buf))
                    .inspect_err(|e| failure = Some(format!("{}: {e}", tmp.0.display())))?;
                let (ids, labels) = buf.split_at(4 * len);
                ex.input_ids.extend(
                    ids.chunks_exact(4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                ex.labels.extend(
                    labels
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64),
                );
                ex.seq_lens.push(len);
                ex.ids.push(e.id.clone());
            }
            stats.tokens += ex.input_ids.len() as u64;
            serde_json::to_writer(&mut *w, &ex)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    });
    if let Some(msg) = failure {
        return Err(Error::Config(msg));
    }
    res.map_err(|e| Error::Config(e.to_string()))?;
    stats.examples = index.len() as u64;
    stats.rows = rows.len() as u64;
    if stats.rows > 0 {
        stats.fill = stats.tokens as f64 / (stats.rows as f64 * opts.max_seq_len as f64);
    }
    Ok(stats)
}

/// Packs items (in the given order) into bins of `capacity`: each goes into the open bin with
/// the least room that still fits it, or a new bin. Bins keep their items' order.
pub fn pack_best_fit(order: &[u32], len: impl Fn(u32) -> usize, capacity: usize) -> Vec<Vec<u32>> {
    let mut bins: Vec<Vec<u32>> = Vec::new();
    // remaining room → bins with that much room
    let mut room: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in order {
        let n = len(i).min(capacity);
        // The tightest bin that still fits (lists in `room` are never left empty).
        let tightest = room
            .range_mut(n..)
            .next()
            .and_then(|(&r, v)| Some((r, v.pop()?)));
        let (bin, left) = match tightest {
            Some((r, b)) => {
                if room.get(&r).is_some_and(Vec::is_empty) {
                    room.remove(&r);
                }
                (b, r - n)
            }
            None => {
                bins.push(Vec::new());
                (bins.len() - 1, capacity - n)
            }
        };
        bins[bin].push(i);
        if left > 0 {
            room.entry(left).or_default().push(bin);
        }
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_fills_the_tightest_bin_and_never_overflows() {
        let lens = [6usize, 5, 4, 3, 2, 2, 1, 7];
        let order: Vec<u32> = (0..lens.len() as u32).collect();
        let bins = pack_best_fit(&order, |i| lens[i as usize], 8);
        for b in &bins {
            assert!(
                b.iter().map(|&i| lens[i as usize]).sum::<usize>() <= 8,
                "{bins:?}"
            );
        }
        let mut all: Vec<u32> = bins.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, order);
        // 6+2, 5+3, 4+2+1 … best fit puts 3 beside 5 (room 3), not beside 6 (room 2 too small).
        assert_eq!(bins[0], vec![0, 4]);
        assert_eq!(bins[1], vec![1, 3]);
        assert_eq!(bins.len(), 4);
    }
}
