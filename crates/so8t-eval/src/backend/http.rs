//! A model behind an HTTP server: OpenAI's API (`/v1/completions` with `echo` and `logprobs` for
//! log-likelihoods, as lm-eval's `local-completions` asks `so8t serve` or llama.cpp's server) or
//! Ollama's (`/api/generate` raw and `/api/chat`; generation only, Ollama returns no prompt
//! log-probabilities). Failed requests are retried with backoff before the item is reported.

use std::time::Duration;

use serde_json::{json, Value};

use super::{cut_at_stop, move_trailing_spaces, Backend, BackendError, Generation, Loglikelihood};
use crate::tasks::Prompt;

/// Which API the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFlavor {
    /// OpenAI's `/v1/…`.
    OpenAi,
    /// Ollama's `/api/…`.
    Ollama,
}

/// A server and the model name to send.
pub struct HttpBackend {
    base: String,
    model: String,
    flavor: HttpFlavor,
    client: reqwest::blocking::Client,
    retries: usize,
    token: Option<String>,
}

impl HttpBackend {
    /// A client for `base` (e.g. `http://127.0.0.1:11434`; a trailing `/v1` is dropped) asking
    /// for `model`, with a per-request `timeout`, `retries` extra tries and an optional bearer
    /// token.
    pub fn new(
        base: &str,
        model: &str,
        flavor: HttpFlavor,
        timeout: Duration,
        retries: usize,
        token: Option<String>,
    ) -> Result<Self, BackendError> {
        let base = base.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_string();
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| BackendError(format!("HTTP client: {e}")))?;
        Ok(Self {
            base,
            model: model.to_string(),
            flavor,
            client,
            retries,
            token,
        })
    }

    /// POSTs `body` to `path`, retrying connection errors, timeouts, 429 and 5xx.
    fn post(&self, path: &str, body: &Value) -> Result<Value, BackendError> {
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << (attempt - 1).min(5)));
            }
            let mut req = self.client.post(&url).json(body);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            match req.send() {
                Err(e) => last = format!("POST {url}: {e}"),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().unwrap_or_default();
                    if status.is_success() {
                        return serde_json::from_str(&text).map_err(|e| {
                            BackendError(format!("POST {url}: the answer is not JSON ({e})"))
                        });
                    }
                    last = format!("POST {url}: HTTP {status}: {}", text.trim());
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        break; // the request itself is wrong: trying again will not help
                    }
                }
            }
        }
        Err(BackendError(format!(
            "{last} (after {} tries)",
            self.retries + 1
        )))
    }

    fn openai_loglikelihood(
        &self,
        context: &str,
        cont: &str,
    ) -> Result<Loglikelihood, BackendError> {
        let (ctx, cont) = move_trailing_spaces(context, cont);
        let body = json!({"model": self.model, "prompt": format!("{ctx}{cont}"), "echo": true,
                          "max_tokens": 1, "logprobs": 1, "temperature": 0});
        let v = self.post("/v1/completions", &body)?;
        let bad = |what: &str| BackendError(format!("/v1/completions: {what} in the answer"));
        let lp = &v["choices"][0]["logprobs"];
        let offsets = lp["text_offset"]
            .as_array()
            .ok_or_else(|| bad("no logprobs.text_offset (echo with logprobs)"))?;
        let lps = lp["token_logprobs"]
            .as_array()
            .ok_or_else(|| bad("no logprobs.token_logprobs"))?;
        let tokens = lp["tokens"]
            .as_array()
            .ok_or_else(|| bad("no logprobs.tokens"))?;
        let tops = lp["top_logprobs"]
            .as_array()
            .ok_or_else(|| bad("no logprobs.top_logprobs"))?;
        let n_prompt = v["usage"]["prompt_tokens"]
            .as_u64()
            .map(|n| n as usize)
            .unwrap_or(offsets.len().saturating_sub(1))
            .min(offsets.len());
        let ctx_chars = ctx.chars().count() as u64;
        let first = offsets[..n_prompt]
            .iter()
            .position(|o| o.as_u64().is_some_and(|o| o >= ctx_chars))
            .ok_or_else(|| bad("no continuation token"))?;
        if first == 0 {
            return Err(bad("no context token"));
        }
        let mut sum = 0f64;
        let mut greedy = true;
        for i in first..n_prompt {
            sum += lps[i]
                .as_f64()
                .ok_or_else(|| bad("a null prompt log-probability"))?;
            let tok = tokens[i].as_str().unwrap_or("");
            let best = tops[i].as_object().and_then(|o| {
                o.iter()
                    .max_by(|a, b| {
                        a.1.as_f64()
                            .unwrap_or(f64::MIN)
                            .total_cmp(&b.1.as_f64().unwrap_or(f64::MIN))
                    })
                    .map(|(k, _)| k.clone())
            });
            greedy &= best.as_deref() == Some(tok);
        }
        Ok(Loglikelihood {
            logprob: sum,
            greedy,
            tokens: n_prompt - first,
        })
    }
}

impl Backend for HttpBackend {
    fn describe(&self) -> String {
        let api = match self.flavor {
            HttpFlavor::OpenAi => "OpenAI API",
            HttpFlavor::Ollama => "Ollama API",
        };
        format!("{} at {} ({api})", self.model, self.base)
    }

    fn loglikelihood(
        &self,
        context: &str,
        continuations: &[String],
    ) -> Result<Vec<Loglikelihood>, BackendError> {
        match self.flavor {
            HttpFlavor::OpenAi => continuations
                .iter()
                .map(|c| self.openai_loglikelihood(context, c))
                .collect(),
            HttpFlavor::Ollama => Err(BackendError(
                "Ollama's API returns no prompt log-probabilities: score multiple-choice tasks \
                 in-process or through an OpenAI-compatible server (so8t serve, llama.cpp's \
                 llama-server)"
                    .into(),
            )),
        }
    }

    fn generate(
        &self,
        prompt: &Prompt,
        until: &[String],
        max_tokens: usize,
    ) -> Result<Generation, BackendError> {
        let stops: Vec<&String> = until.iter().filter(|s| !s.is_empty()).take(4).collect();
        let msgs = |m: &[(String, String)]| -> Vec<Value> {
            m.iter()
                .map(|(r, c)| json!({"role": r, "content": c}))
                .collect()
        };
        let (mut text, prompt_tokens, tokens) = match (self.flavor, prompt) {
            (HttpFlavor::OpenAi, Prompt::Text(p)) => {
                let v = self.post(
                    "/v1/completions",
                    &json!({"model": self.model, "prompt": p,
                    "max_tokens": max_tokens, "temperature": 0, "stop": stops}),
                )?;
                (
                    v["choices"][0]["text"].as_str().unwrap_or("").to_string(),
                    v["usage"]["prompt_tokens"].as_u64(),
                    v["usage"]["completion_tokens"].as_u64(),
                )
            }
            (HttpFlavor::OpenAi, Prompt::Chat(m)) => {
                let v = self.post(
                    "/v1/chat/completions",
                    &json!({"model": self.model,
                    "messages": msgs(m), "max_tokens": max_tokens, "temperature": 0}),
                )?;
                (
                    v["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    v["usage"]["prompt_tokens"].as_u64(),
                    v["usage"]["completion_tokens"].as_u64(),
                )
            }
            (HttpFlavor::Ollama, p) => {
                let options = json!({"temperature": 0, "num_predict": max_tokens, "stop": stops});
                let v = match p {
                    Prompt::Text(p) => self.post(
                        "/api/generate",
                        &json!({"model": self.model,
                        "prompt": p, "raw": true, "stream": false, "options": options}),
                    )?,
                    Prompt::Chat(m) => self.post(
                        "/api/chat",
                        &json!({"model": self.model,
                        "messages": msgs(m), "stream": false, "options": options}),
                    )?,
                };
                let t = v["response"]
                    .as_str()
                    .or_else(|| v["message"]["content"].as_str());
                (
                    t.unwrap_or("").to_string(),
                    v["prompt_eval_count"].as_u64(),
                    v["eval_count"].as_u64(),
                )
            }
        };
        cut_at_stop(&mut text, until);
        Ok(Generation {
            text,
            prompt_tokens: prompt_tokens.unwrap_or(0) as usize,
            tokens: tokens.unwrap_or(0) as usize,
        })
    }
}
