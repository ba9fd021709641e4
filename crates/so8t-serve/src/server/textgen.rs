//! From token events to what a client may see: incremental detokenization, stop strings, the
//! hidden-thinking filter, and one audit row per request. Every text endpoint goes through
//! [`start`], so no route can forget the filter.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use so8t_model::generate::TextStream;
use so8t_model::TextTokenizer;
use so8t_store::audit::{sha256_hex, AuditEntry};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::error::ApiError;
use super::models::LoadedModel;
use super::AppState;
use crate::scheduler::{Finish, GenEvent, GenParams, SubmitError, TokenLogprob, Usage};
use crate::think::{ThinkFilter, ThinkMode};

/// One text generation to run.
pub struct TextJob {
    /// The model.
    pub model: Arc<LoadedModel>,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Sampling and limits.
    pub params: GenParams,
    /// Stop strings (the text is cut before the first one).
    pub stops: Vec<String>,
    /// The route, for the audit log (`/api/chat`, …).
    pub endpoint: &'static str,
    /// The caller's user id (from the configured header).
    pub user_id: Option<String>,
    /// This request's id.
    pub request_id: String,
}

impl TextJob {
    /// A job with a fresh request id.
    pub fn new(
        model: Arc<LoadedModel>,
        prompt: Vec<u32>,
        (params, stops): (GenParams, Vec<String>),
        endpoint: &'static str,
        user_id: Option<String>,
    ) -> Self {
        Self {
            model,
            prompt,
            params,
            stops,
            endpoint,
            user_id,
            request_id: request_id(),
        }
    }
}

/// How a generation ended, with what the client may see.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `stop` or `length`.
    pub finish: &'static str,
    /// Counts and timings.
    pub usage: Usage,
    /// Seconds from submission to the end.
    pub total_secs: f64,
    /// All visible text.
    pub text: String,
    /// Generated tokens with log-probabilities, only when nothing was hidden from the output.
    pub tokens: Option<Vec<(u32, Option<TokenLogprob>)>>,
    /// The class parsed from the final answer.
    pub class: Option<String>,
}

/// A piece of a response.
#[derive(Debug)]
pub enum Piece {
    /// Visible text.
    Text(String),
    /// The prompt's log-probabilities (echo).
    PromptLogprobs(Vec<Option<TokenLogprob>>),
    /// The end.
    Done(Box<Summary>),
    /// A failure after the request was accepted.
    Error(ApiError),
}

/// Incremental detokenizer: decodes a window of recent tokens and emits only complete text.
struct Detok {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detok {
    /// The text of the window before and after the tokens not yet shown.
    fn window(&self, tok: &TextTokenizer) -> (String, String) {
        let dec = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default();
        (
            dec(&self.ids[self.prefix..self.read]),
            dec(&self.ids[self.prefix..]),
        )
    }

    fn push(&mut self, tok: &TextTokenizer, id: u32) -> String {
        self.ids.push(id);
        let (before, after) = self.window(tok);
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') && after.starts_with(&before)
        {
            let delta = after[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            delta
        } else {
            // Incomplete UTF-8 (or a window whose decoding changed): wait for more tokens.
            String::new()
        }
    }

    /// Whatever is still held back at the end.
    fn flush(&mut self, tok: &TextTokenizer) -> String {
        let (before, after) = self.window(tok);
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        after
            .strip_prefix(before.as_str())
            .unwrap_or("")
            .to_string()
    }
}

/// Submits `job` and returns the stream of pieces (429 when the queue is full).
pub fn start(state: &Arc<AppState>, job: TextJob) -> Result<UnboundedReceiver<Piece>, ApiError> {
    let events = job
        .model
        .scheduler
        .submit(job.prompt.clone(), job.params.clone())
        .map_err(|e| match e {
            SubmitError::Busy(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
            SubmitError::Stopped => ApiError::internal(e.to_string()),
        })?;
    let (tx, rx) = unbounded_channel();
    let state = state.clone();
    tokio::spawn(async move { pump(state, job, events, tx).await });
    Ok(rx)
}

async fn pump(
    state: Arc<AppState>,
    job: TextJob,
    mut events: UnboundedReceiver<GenEvent>,
    tx: UnboundedSender<Piece>,
) {
    let t0 = Instant::now();
    let tok = job.model.tokenizer.clone();
    let stop_ids = &job.params.sampling.stop_token_ids;
    let mut detok = Detok {
        ids: Vec::new(),
        prefix: 0,
        read: 0,
    };
    let mut raw = String::new();
    let mut stream = TextStream::new(job.stops.clone());
    let mode = if state.opts.show_thinking {
        ThinkMode::Show
    } else {
        ThinkMode::Hide
    };
    let mut filter = ThinkFilter::new(mode);
    let mut visible = String::new();
    let mut tokens: Vec<(u32, Option<TokenLogprob>)> = Vec::new();
    let mut finish = "stop";
    let mut usage = Usage::default();
    let mut client_gone = false;
    let mut hit_stop = false;
    let emit = |s: String, visible: &mut String| {
        if !s.is_empty() {
            visible.push_str(&s);
            if tx.send(Piece::Text(s)).is_err() {
                return false;
            }
        }
        true
    };
    while let Some(ev) = events.recv().await {
        match ev {
            GenEvent::PromptLogprobs(v) => {
                if tx.send(Piece::PromptLogprobs(v)).is_err() {
                    client_gone = true;
                    break;
                }
            }
            GenEvent::Token { id, logprob } => {
                tokens.push((id, logprob));
                usage.completion_tokens += 1;
                if stop_ids.contains(&id) {
                    continue;
                }
                raw.push_str(&detok.push(&tok, id));
                let (delta, hit) = stream.push(&raw, false);
                let shown = filter.push(&delta);
                if !emit(shown, &mut visible) {
                    client_gone = true;
                    break;
                }
                if hit.is_some() {
                    finish = "stop";
                    hit_stop = true;
                    break;
                }
            }
            GenEvent::Done(f, u) => {
                finish = match f {
                    Finish::Stop => "stop",
                    Finish::Length | Finish::Context => "length",
                };
                usage = u;
                break;
            }
            GenEvent::Embedding(_) => {}
            GenEvent::Error(msg) => {
                let _ = tx.send(Piece::Error(ApiError::bad(msg)));
                return;
            }
        }
    }
    drop(events); // cancels the sequence if it still runs
    if usage.prompt_tokens == 0 {
        usage.prompt_tokens = job.prompt.len();
        usage.completion_tokens = tokens.len();
        usage.gen_secs = t0.elapsed().as_secs_f64();
    }
    if !hit_stop {
        raw.push_str(&detok.flush(&tok));
    }
    let (delta, _) = stream.push(&raw, true);
    let mut shown = filter.push(&delta);
    let outcome = filter.finish();
    shown.push_str(&outcome.tail);
    if !client_gone {
        emit(shown, &mut visible);
    }
    let class = outcome.class.map(|c| c.name().to_string());
    let hidden_nothing = visible == raw;
    let total_secs = t0.elapsed().as_secs_f64();
    if let Some(audit) = state.audit.clone() {
        let entry = AuditEntry {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            request_id: job.request_id.clone(),
            user_id: job.user_id.clone(),
            model: job.model.name.clone(),
            endpoint: job.endpoint.to_string(),
            thinking_sha256: sha256_hex(outcome.thinking.as_bytes()),
            final_sha256: sha256_hex(outcome.final_text.as_bytes()),
            class: class.clone(),
            latency_ms: total_secs * 1000.0,
            thinking_text: state.opts.store_thinking.then(|| outcome.thinking.clone()),
        };
        let r = tokio::task::spawn_blocking(move || {
            let log = audit.lock().unwrap_or_else(|e| e.into_inner());
            log.append(&entry).map(|_| ())
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("audit log: {e}"),
            Err(e) => tracing::error!("audit log: {e}"),
        }
    }
    let summary = Summary {
        finish,
        usage,
        total_secs,
        text: visible,
        tokens: hidden_nothing.then_some(tokens),
        class,
    };
    let _ = tx.send(Piece::Done(Box::new(summary)));
}

/// Runs a job to the end and returns its summary (non-streaming responses).
pub async fn collect(
    state: &Arc<AppState>,
    job: TextJob,
) -> Result<(Summary, Option<Vec<Option<TokenLogprob>>>), ApiError> {
    let mut rx = start(state, job)?;
    let mut prompt_lp = None;
    while let Some(p) = rx.recv().await {
        match p {
            Piece::Text(_) => {}
            Piece::PromptLogprobs(v) => prompt_lp = Some(v),
            Piece::Done(s) => return Ok((*s, prompt_lp)),
            Piece::Error(e) => return Err(e),
        }
    }
    Err(ApiError::internal("the generation ended without a result"))
}

/// A fresh request id.
pub fn request_id() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    format!("{:016x}{:08x}", r.gen::<u64>(), r.gen::<u32>())
}
