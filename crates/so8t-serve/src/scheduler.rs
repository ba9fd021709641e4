//! Serving many requests with one model: a scheduler thread admits requests into a fixed number
//! of sequence slots and, every step, runs one batched forward pass holding the next token of
//! every generating sequence plus a slice of pending prompts (continuous batching). A request
//! whose receiver is dropped (the client went away) leaves at the next step and frees its slot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use so8t_model::generate::{Sampler, SamplingParams};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::engine::{BatchEntry, EngineModel, ForwardOut, Runner, SeqCache};

/// What a request wants from the model.
#[derive(Debug, Clone)]
pub struct GenParams {
    /// Sampling, token budget and stop tokens (stop strings are the caller's business).
    pub sampling: SamplingParams,
    /// Context size of this request: prompt + generated tokens must fit.
    pub num_ctx: usize,
    /// Log-probabilities of the prompt tokens with this many alternatives (lm-eval's `echo`).
    pub prompt_logprobs: Option<usize>,
    /// Log-probabilities of generated tokens with this many alternatives.
    pub logprobs: Option<usize>,
    /// Return a mean-pooled, L2-normalized embedding of the prompt instead of generating.
    pub embed: bool,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            num_ctx: 2048,
            prompt_logprobs: None,
            logprobs: None,
            embed: false,
        }
    }
}

/// A token's log-probability and the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub token: u32,
    /// log p(token | tokens before it).
    pub logprob: f32,
    /// The `n` most likely tokens there, best first.
    pub top: Vec<(u32, f32)>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token came.
    Stop,
    /// The token budget ran out.
    Length,
    /// The context is full.
    Context,
}

/// Counts and timings of a finished request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Seconds waiting for a slot.
    pub queue_secs: f64,
    /// Seconds of prompt processing.
    pub prompt_secs: f64,
    /// Seconds of generation after the prompt.
    pub gen_secs: f64,
}

/// What the scheduler sends back for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// Log-probabilities of the prompt: entry 0 is `None` (nothing precedes it).
    PromptLogprobs(Vec<Option<TokenLogprob>>),
    /// One generated token (stop tokens included, flagged by the following `Done`).
    Token {
        /// The token.
        id: u32,
        /// Its log-probability, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// The pooled embedding.
    Embedding(Vec<f32>),
    /// The end; nothing follows.
    Done(Finish, Usage),
    /// The request could not run.
    Error(String),
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Compute threads.
    pub threads: usize,
    /// Sequences in flight at once.
    pub parallel: usize,
    /// Most tokens in one forward pass.
    pub batch_tokens: usize,
    /// Most requests waiting for a slot before new ones are refused.
    pub max_queue: usize,
    /// Longest time generated tokens are held back to be handed over together. Each hand-over
    /// wakes the request's task, and on a machine whose cores all compute, that wake-up
    /// preempts a compute thread that the others then wait for; at a few milliseconds a token,
    /// one hand-over per token cost 10–25 % of the generation speed. The first token and the
    /// last always go at once. Zero hands over every token.
    pub flush_interval: Duration,
    /// Where the passes run: the CPU (the native engine) or a CUDA device (the device engine).
    pub device: candle_core::Device,
    /// Activation dtype on a device (ignored on the CPU).
    pub dtype: candle_core::DType,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            parallel: 8,
            batch_tokens: 512,
            max_queue: 256,
            flush_interval: Duration::from_millis(20),
            device: candle_core::Device::Cpu,
            dtype: candle_core::DType::BF16,
        }
    }
}

struct Job {
    prompt: Vec<u32>,
    params: GenParams,
    events: UnboundedSender<GenEvent>,
    queued: Instant,
}

/// A handle to a running scheduler; cheap to clone. The thread ends when every handle is gone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Job>,
    /// The model it serves.
    pub model: Arc<EngineModel>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    max_queue: usize,
}

/// The scheduler refused a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// Too many requests are waiting.
    #[error("the server is busy: {0} requests are waiting")]
    Busy(usize),
    /// The scheduler thread has stopped.
    #[error("the model's scheduler has stopped")]
    Stopped,
}

impl Scheduler {
    /// Starts the scheduler thread for `model`.
    pub fn start(model: Arc<EngineModel>, opts: SchedulerOptions) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let (m, w, r) = (model.clone(), waiting.clone(), running.clone());
        let max_queue = opts.max_queue;
        std::thread::Builder::new()
            .name("so8t-scheduler".into())
            .spawn(move || run(m, opts, rx, w, r))
            .expect("spawning the scheduler thread");
        Self {
            tx,
            model,
            waiting,
            running,
            max_queue,
        }
    }

    /// Queues a request; events arrive on the returned receiver. Dropping the receiver cancels.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        params: GenParams,
    ) -> Result<UnboundedReceiver<GenEvent>, SubmitError> {
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting >= self.max_queue {
            return Err(SubmitError::Busy(waiting));
        }
        let (events, rx) = unbounded_channel();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            prompt,
            params,
            events,
            queued: Instant::now(),
        };
        if self.tx.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(rx)
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Requests in a slot.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

struct Active {
    job: Job,
    cache: SeqCache,
    sampler: Sampler,
    /// Prompt tokens already in the cache.
    done: usize,
    history: Vec<u32>,
    prompt_lp: Vec<Option<TokenLogprob>>,
    embed_sum: Vec<f32>,
    started: Instant,
    prompt_secs: f64,
    queue_secs: f64,
    finished: bool,
    /// Generated tokens not yet handed over (see [`SchedulerOptions::flush_interval`]).
    held: Vec<GenEvent>,
    last_flush: Instant,
}

impl Active {
    /// Tokens generated so far.
    fn generated(&self) -> usize {
        self.history.len() - self.job.prompt.len()
    }

    /// Hands the held tokens over; marks the request finished if its receiver is gone.
    fn flush(&mut self) {
        for e in std::mem::take(&mut self.held) {
            if self.job.events.send(e).is_err() {
                self.finished = true;
                return;
            }
        }
        self.last_flush = Instant::now();
    }
}

/// log p(`token`) under `logits` (log-softmax in f64, rounded to f32) and the `top_n` most likely
/// tokens: what the APIs return as logprobs, and what `so8t eval` sums.
pub fn log_softmax_pick(logits: &[f32], token: u32, top_n: usize) -> TokenLogprob {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let lse = max as f64
        + logits
            .iter()
            .map(|&x| ((x - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let lp = |x: f32| (x as f64 - lse) as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if top_n > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = top_n.min(idx.len());
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        idx.truncate(k);
        idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        top = idx
            .into_iter()
            .map(|i| (i, lp(logits[i as usize])))
            .collect();
    }
    TokenLogprob {
        token,
        logprob: lp(logits
            .get(token as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY)),
        top,
    }
}

fn admit(model: &EngineModel, job: Job, waiting: &AtomicUsize) -> Option<Active> {
    waiting.fetch_sub(1, Ordering::SeqCst);
    let p = &job.params;
    let ctx = p.num_ctx.min(model.cfg.ctx_train).max(1);
    let err = |msg: String| {
        let _ = job.events.send(GenEvent::Error(msg));
    };
    if job.prompt.is_empty() {
        err("the prompt is empty".into());
        return None;
    }
    if let Some(&bad) = job.prompt.iter().find(|&&t| t as usize >= model.cfg.vocab) {
        err(format!(
            "token id {bad} is outside the vocabulary of {}",
            model.cfg.vocab
        ));
        return None;
    }
    if job.prompt.len() > ctx {
        err(format!(
            "the prompt has {} tokens but the context holds {ctx} (raise num_ctx, at most {}, or shorten the prompt)",
            job.prompt.len(),
            model.cfg.ctx_train
        ));
        return None;
    }
    let cache = model.cache_for(ctx);
    let sampler = Sampler::new(p.sampling.clone());
    let queue_secs = job.queued.elapsed().as_secs_f64();
    Some(Active {
        history: job.prompt.clone(),
        prompt_lp: if p.prompt_logprobs.is_some() {
            vec![None]
        } else {
            vec![]
        },
        embed_sum: if p.embed {
            vec![0.0; model.cfg.n_embd]
        } else {
            vec![]
        },
        job,
        cache,
        sampler,
        done: 0,
        started: Instant::now(),
        prompt_secs: 0.0,
        queue_secs,
        finished: false,
        held: Vec::new(),
        last_flush: Instant::now(),
    })
}

fn run(
    model: Arc<EngineModel>,
    opts: SchedulerOptions,
    rx: mpsc::Receiver<Job>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
) {
    let mut runner = match Runner::for_device(model.clone(), &opts.device, opts.threads, opts.dtype)
    {
        Ok(r) => r,
        Err(e) => {
            // The weights did not fit (or the device is gone): every request says so.
            tracing::error!("{}: {e}", model.path.display());
            while let Ok(job) = rx.recv() {
                waiting.fetch_sub(1, Ordering::SeqCst);
                let _ = job.events.send(GenEvent::Error(e.to_string()));
            }
            return;
        }
    };
    let mut active: Vec<Active> = Vec::new();
    let mut out = ForwardOut::default();
    let vocab = model.cfg.vocab;
    loop {
        // Admit: block only when nothing runs.
        while active.len() < opts.parallel.max(1) {
            let job = if active.is_empty() {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            if let Some(a) = admit(&model, job, &waiting) {
                active.push(a);
            }
        }
        active.retain(|a| !a.job.events.is_closed());
        running.store(active.len(), Ordering::SeqCst);
        if active.is_empty() {
            continue;
        }
        // One step: every generating sequence's next token, then prompt slices in turn.
        let mut batch: Vec<BatchEntry> = Vec::new();
        let mut budget = opts.batch_tokens.max(1);
        for (i, a) in active.iter().enumerate() {
            if a.done >= a.job.prompt.len() && budget > 0 {
                let pos = a.history.len() - 1;
                batch.push(BatchEntry {
                    cache: i,
                    token: a.history[pos],
                    pos,
                    logits: true,
                });
                budget -= 1;
            }
        }
        for (i, a) in active.iter().enumerate() {
            let n = a.job.prompt.len();
            if a.done < n && budget > 0 {
                let take = (n - a.done).min(budget);
                let all_logits = a.job.params.prompt_logprobs.is_some();
                for pos in a.done..a.done + take {
                    let last = pos == n - 1;
                    batch.push(BatchEntry {
                        cache: i,
                        token: a.job.prompt[pos],
                        pos,
                        logits: (all_logits || last) && !a.job.params.embed,
                    });
                }
                budget -= take;
            }
        }
        let want_hidden = active.iter().any(|a| a.job.params.embed);
        {
            let mut caches: Vec<&mut SeqCache> = active.iter_mut().map(|a| &mut a.cache).collect();
            if let Err(e) = runner.forward(&mut caches, &batch, want_hidden, &mut out) {
                // A device failure (out of memory, a lost GPU): every request in this pass
                // ends with the error; the next requests start on fresh caches.
                tracing::error!("forward pass failed: {e}");
                for a in active.drain(..) {
                    let _ = a.job.events.send(GenEvent::Error(e.to_string()));
                }
                running.store(0, Ordering::SeqCst);
                continue;
            }
        }
        // Hand out the results.
        let mut li = 0usize;
        let d = model.cfg.n_embd;
        for (bi, e) in batch.iter().enumerate() {
            let a = &mut active[e.cache];
            let n = a.job.prompt.len();
            let in_prompt = e.pos < n;
            if a.job.params.embed && in_prompt {
                for (s, h) in a
                    .embed_sum
                    .iter_mut()
                    .zip(&out.hidden[bi * d..(bi + 1) * d])
                {
                    *s += h;
                }
            }
            if !e.logits {
                continue;
            }
            let logits = &out.logits[li * vocab..(li + 1) * vocab];
            li += 1;
            if in_prompt && e.pos + 1 < n {
                if let Some(k) = a.job.params.prompt_logprobs {
                    a.prompt_lp
                        .push(Some(log_softmax_pick(logits, a.job.prompt[e.pos + 1], k)));
                }
                continue;
            }
            // The last prompt position or a generated one: sample.
            if e.pos + 1 == n {
                a.prompt_secs = a.started.elapsed().as_secs_f64();
                if a.job.params.prompt_logprobs.is_some() {
                    let lp = std::mem::take(&mut a.prompt_lp);
                    if a.job.events.send(GenEvent::PromptLogprobs(lp)).is_err() {
                        a.finished = true;
                        continue;
                    }
                }
            }
            if a.job.params.sampling.max_tokens == 0 {
                finish(a, Finish::Length);
                continue;
            }
            let next = a.sampler.sample(logits, &a.history);
            let logprob = a
                .job
                .params
                .logprobs
                .map(|k| log_softmax_pick(logits, next, k));
            a.history.push(next);
            a.held.push(GenEvent::Token { id: next, logprob });
            if a.generated() == 1 || a.last_flush.elapsed() >= opts.flush_interval {
                a.flush();
                if a.finished {
                    continue;
                }
            }
            let ctx = a.job.params.num_ctx.min(model.cfg.ctx_train);
            if a.job.params.sampling.stop_token_ids.contains(&next) {
                finish(a, Finish::Stop);
            } else if a.generated() >= a.job.params.sampling.max_tokens {
                finish(a, Finish::Length);
            } else if a.history.len() >= ctx {
                finish(a, Finish::Context);
            }
        }
        // Advance prompt cursors.
        for e in &batch {
            let a = &mut active[e.cache];
            if e.pos < a.job.prompt.len() {
                a.done = a.done.max(e.pos + 1);
            }
        }
        for a in active.iter_mut() {
            if a.job.params.embed && !a.finished && a.done >= a.job.prompt.len() {
                let n = a.job.prompt.len() as f32;
                let mut v: Vec<f32> = a.embed_sum.iter().map(|s| s / n).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
                let _ = a.job.events.send(GenEvent::Embedding(v));
                a.prompt_secs = a.started.elapsed().as_secs_f64();
                finish(a, Finish::Stop);
            }
        }
        active.retain(|a| !a.finished);
    }
}

fn finish(a: &mut Active, why: Finish) {
    a.flush();
    let total = a.started.elapsed().as_secs_f64();
    let usage = Usage {
        prompt_tokens: a.job.prompt.len(),
        completion_tokens: a.generated(),
        queue_secs: a.queue_secs,
        prompt_secs: a.prompt_secs,
        gen_secs: (total - a.prompt_secs).max(0.0),
    };
    let _ = a.job.events.send(GenEvent::Done(why, usage));
    a.finished = true;
}
