//! `so8t generate`: text from a prompt, streamed to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use so8t_model::generate::{generate, GenerateRequest, SamplingParams, StopReason};
use so8t_model::{lora, Message, TextTokenizer};

use super::{GateArgs, RuntimeArgs};

/// `generate`.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt (a user message with --chat).
    #[arg(long)]
    pub prompt: String,
    /// Render the prompt with the model's chat template as a user turn.
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Nucleus mass (1 disables).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Keep the k most likely tokens (0 disables).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Repeat penalty (1 disables).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Window of the repeat penalty.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 299_792_458)]
    pub seed: u64,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop strings (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// A PEFT LoRA adapter folder to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Print one JSON object (text, tokens, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Untimed warm-up runs (the prompt's prefill and one token) before the timed one, for
    /// benchmarks: a GPU's first forward also loads kernels and library handles.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    #[command(flatten)]
    pub gate: GateArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Runs `generate`.
pub fn run(a: GenerateArgs) -> Result<()> {
    let mut model = a.runtime.load(&a.model)?;
    if let Some(dir) = &a.adapter {
        lora::load(&mut model, dir)
            .with_context(|| format!("loading adapter {}", dir.display()))?;
    }
    let tok = TextTokenizer::from_dir(&a.model)?;
    let ids = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s));
        }
        msgs.push(Message::new("user", &a.prompt));
        let text = tok.apply_chat_template(&msgs, true)?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&a.prompt, true)?
    };
    let gates = a.gate.matrices(&model)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        repeat_penalty: a.repeat_penalty,
        repeat_last_n: a.repeat_last_n,
        seed: a.seed,
        max_tokens: a.max_tokens,
        stop_token_ids: vec![],
        stop_strings: a.stop.clone(),
    };
    let request = |params| GenerateRequest {
        model: &model,
        tokenizer: &tok,
        prompt: &ids,
        params,
        gates: gates.as_ref(),
    };
    for _ in 0..a.warmup {
        let warm = SamplingParams {
            max_tokens: 2,
            ..params.clone()
        };
        generate(request(warm), |_| {})?;
    }
    let req = request(params);
    let mut out = std::io::stdout().lock();
    let json = a.json;
    let mut write_err = None;
    let g = generate(req, |piece| {
        if !json && write_err.is_none() {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_err = Some(e);
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    let new = g.tokens.len();
    let decode_tokens = new.saturating_sub(1);
    let prefill_tps = g.prompt_tokens as f64 / g.prefill_secs.max(1e-9);
    let decode_tps = decode_tokens as f64 / g.decode_secs.max(1e-9);
    let stop = match &g.stop {
        StopReason::StopToken(t) => format!("stop token {t}"),
        StopReason::StopString(s) => format!("stop string {s:?}"),
        StopReason::Length => "max tokens".into(),
    };
    if json {
        let v = serde_json::json!({
            "text": g.text, "tokens": g.tokens, "prompt_tokens": g.prompt_tokens,
            "prefill_secs": g.prefill_secs, "decode_secs": g.decode_secs,
            "prefill_tokens_per_sec": prefill_tps, "decode_tokens_per_sec": decode_tps, "stop": stop,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
        eprintln!(
            "[{} prompt tokens, {:.1} tok/s prefill | {new} new tokens, {:.1} tok/s decode | {stop}]",
            g.prompt_tokens, prefill_tps, decode_tps
        );
    }
    Ok(())
}
