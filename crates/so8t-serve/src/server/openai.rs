//! OpenAI's API (`/v1/*`): models, chat completions and legacy completions (SSE streaming),
//! `echo` + `logprobs` exactly as lm-eval's `local-completions` reads them, and embeddings.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{parse_body, ApiError, Flavor};
use super::models::LoadedModel;
use super::ollama::{embed_texts, gen_params, Options};
use super::prompt::{render_chat, tokenize, ChatMessage};
use super::textgen::{self, Piece, Summary, TextJob};
use super::AppState;
use crate::scheduler::TokenLogprob;

const F: Flavor = Flavor::OpenAi;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`.
pub async fn models(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let st2 = st.clone();
    let names = tokio::task::spawn_blocking(move || {
        let mut v: Vec<String> = st2
            .models
            .library
            .as_ref()
            .and_then(|l| l.list().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect();
        v.extend(st2.models.adhoc.iter().map(|(n, _)| n.clone()));
        v
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()).flavor(F))?;
    let data: Vec<Value> = names
        .into_iter()
        .map(|n| json!({"id": n, "object": "model", "created": now(), "owned_by": "so8t"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

fn stop_list(v: &Option<Value>) -> Result<Option<Vec<String>>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_field("stop", "expected strings").flavor(F))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(ApiError::bad_field("stop", "expected a string or an array of strings").flavor(F)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Sampling {
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    seed: Option<i64>,
    stop: Option<Value>,
    n: Option<u32>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    stream_options: Option<Value>,
}

impl Sampling {
    fn options(&self, default_max: Option<i64>) -> Result<Options, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_field("n", "only n = 1 is supported").flavor(F));
        }
        let max = self
            .max_completion_tokens
            .or(self.max_tokens)
            .or(default_max);
        if let Some(m) = max {
            if m < 0 {
                return Err(ApiError::bad_field(
                    "max_tokens",
                    format!("max_tokens must be ≥ 0, got {m}"),
                )
                .flavor(F));
            }
        }
        let _ = (self.frequency_penalty, self.presence_penalty);
        Ok(Options {
            temperature: Some(self.temperature.unwrap_or(1.0)),
            top_p: Some(self.top_p.unwrap_or(1.0)),
            top_k: Some(0),
            num_predict: max,
            seed: self.seed,
            stop: stop_list(&self.stop)?,
            ..Options::default()
        })
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

#[derive(Deserialize)]
struct ChatReq {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: Sampling,
}

fn message(i: usize, v: &Value) -> Result<ChatMessage, ApiError> {
    let role = v
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_field(&format!("messages[{i}].role"), "missing").flavor(F))?;
    let content = match v.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => Ok(t.to_string()),
                    _ => Err(ApiError::bad_field(
                        &format!("messages[{i}].content"),
                        "only text parts are supported",
                    )
                    .flavor(F)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(""),
        Some(_) => {
            return Err(ApiError::bad_field(
                &format!("messages[{i}].content"),
                "expected a string or an array of parts",
            )
            .flavor(F))
        }
    };
    Ok(ChatMessage {
        role: if role == "developer" {
            "system".into()
        } else {
            role.into()
        },
        content,
    })
}

fn usage(s: &Summary) -> Value {
    json!({"prompt_tokens": s.usage.prompt_tokens, "completion_tokens": s.usage.completion_tokens, "total_tokens": s.usage.prompt_tokens + s.usage.completion_tokens})
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!(
        "data: {}\n\n",
        serde_json::to_string(v).unwrap_or_default()
    ))
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: ChatReq = parse_body(&body, F)?;
    let msgs = r
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    if msgs.is_empty() {
        return Err(ApiError::bad_field("messages", "at least one message is required").flavor(F));
    }
    let opts = r.sampling.options(None)?;
    let model = st
        .models
        .get(&r.model, None)
        .await
        .map_err(|e| e.flavor(F))?;
    let text = render_chat(&model, &msgs, None).map_err(|e| e.flavor(F))?;
    let ids = tokenize(&model, &text).map_err(|e| e.flavor(F))?;
    let gen = gen_params(&model, &opts, ids.len(), F)?;
    let job = TextJob::new(
        model.clone(),
        ids,
        gen,
        "/v1/chat/completions",
        st.user_id(&headers),
    );
    let id = format!("chatcmpl-{}", job.request_id);
    let created = now();
    let name = model.name.clone();
    if !r.stream {
        let (s, _) = textgen::collect(&st, job).await.map_err(|e| e.flavor(F))?;
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": s.text}, "logprobs": null, "finish_reason": s.finish}],
            "usage": usage(&s),
        })).into_response());
    }
    let include_usage = r.sampling.include_usage();
    let rx = textgen::start(&st, job).map_err(|e| e.flavor(F))?;
    let chunk = move |delta: Value, finish: Option<&str>| json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    let first = sse(&chunk(json!({"role": "assistant", "content": ""}), None));
    let body =
        futures_util::stream::unfold((rx, Some(first), false), move |(mut rx, first, ended)| {
            let chunk = chunk.clone();
            async move {
                if let Some(f) = first {
                    return Some((Ok::<_, Infallible>(f), (rx, None, false)));
                }
                if ended {
                    return None;
                }
                let (bytes, end) = match rx.recv().await {
                    Some(Piece::Text(t)) => (sse(&chunk(json!({"content": t}), None)), false),
                    Some(Piece::PromptLogprobs(_)) => (Bytes::new(), false),
                    Some(Piece::Done(s)) => {
                        let mut b = sse(&chunk(json!({}), Some(s.finish))).to_vec();
                        if include_usage {
                            let mut u = chunk(json!({}), None);
                            u["choices"] = json!([]);
                            u["usage"] = usage(&s);
                            b.extend_from_slice(&sse(&u));
                        }
                        b.extend_from_slice(b"data: [DONE]\n\n");
                        (Bytes::from(b), true)
                    }
                    Some(Piece::Error(e)) => (sse(&e.flavor(F).body()), true),
                    None => return None,
                };
                Some((Ok(bytes), (rx, None, end)))
            }
        });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[derive(Deserialize)]
struct CompletionReq {
    model: String,
    #[serde(default)]
    prompt: Value,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    logprobs: Option<u32>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// The prompts of a completions request: text or token ids, one or many.
enum PromptIn {
    Text(String),
    Ids(Vec<u32>),
}

fn prompts(v: &Value) -> Result<Vec<PromptIn>, ApiError> {
    let ids = |a: &[Value], f: &str| -> Result<Vec<u32>, ApiError> {
        a.iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::bad_field(f, "expected token ids (non-negative integers)")
                            .flavor(F)
                    })
            })
            .collect()
    };
    match v {
        Value::String(s) => Ok(vec![PromptIn::Text(s.clone())]),
        Value::Array(a) if a.is_empty() => {
            Err(ApiError::bad_field("prompt", "the prompt is empty").flavor(F))
        }
        Value::Array(a) if a[0].is_number() => Ok(vec![PromptIn::Ids(ids(a, "prompt")?)]),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(PromptIn::Text(s.clone())),
                Value::Array(t) => Ok(PromptIn::Ids(ids(t, &format!("prompt[{i}]"))?)),
                _ => Err(ApiError::bad_field(
                    &format!("prompt[{i}]"),
                    "expected a string or token ids",
                )
                .flavor(F)),
            })
            .collect(),
        Value::Null => {
            Err(ApiError::bad_field("prompt", "the field `prompt` is required").flavor(F))
        }
        _ => {
            Err(ApiError::bad_field("prompt", "expected a string, strings, or token ids").flavor(F))
        }
    }
}

fn piece_text(m: &LoadedModel, id: u32) -> String {
    m.tokenizer.decode(&[id], false).unwrap_or_default()
}

fn logprob_block(
    m: &LoadedModel,
    prompt: &[u32],
    plp: Option<&[Option<TokenLogprob>]>,
    gen: &[(u32, Option<TokenLogprob>)],
) -> Value {
    let (mut tokens, mut lps, mut tops, mut offs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut off = 0usize;
    let mut push = |id: u32, lp: Option<&TokenLogprob>| {
        let t = piece_text(m, id);
        offs.push(off);
        off += t.chars().count();
        tokens.push(t);
        lps.push(lp.map_or(Value::Null, |l| json!(l.logprob)));
        tops.push(lp.map_or(Value::Null, |l| {
            let mut o = Map::new();
            for (tid, v) in &l.top {
                o.entry(piece_text(m, *tid)).or_insert(json!(v));
            }
            Value::Object(o)
        }));
    };
    if let Some(plp) = plp {
        for (i, &id) in prompt.iter().enumerate() {
            push(id, plp.get(i).and_then(|x| x.as_ref()));
        }
    }
    for (id, lp) in gen {
        push(*id, lp.as_ref());
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs})
}

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: CompletionReq = parse_body(&body, F)?;
    if r.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_field("suffix", "suffix is not supported").flavor(F));
    }
    let ps = prompts(&r.prompt)?;
    if r.stream && (ps.len() != 1 || r.echo) {
        return Err(
            ApiError::bad_field("stream", "streaming takes one prompt and no echo").flavor(F),
        );
    }
    let opts = r.sampling.options(Some(16))?;
    let model = st
        .models
        .get(&r.model, None)
        .await
        .map_err(|e| e.flavor(F))?;
    let created = now();
    let rid = textgen::request_id();
    let mut jobs = Vec::new();
    for (i, p) in ps.into_iter().enumerate() {
        let (ids, text) = match p {
            PromptIn::Text(t) => (tokenize(&model, &t).map_err(|e| e.flavor(F))?, t),
            PromptIn::Ids(ids) => {
                if let Some(&bad) = ids
                    .iter()
                    .find(|&&t| t as usize >= model.engine().cfg.vocab)
                {
                    return Err(ApiError::bad_field(
                        &format!("prompt[{i}]"),
                        format!("token id {bad} is outside the vocabulary"),
                    )
                    .flavor(F));
                }
                let t = model.tokenizer.decode(&ids, false).unwrap_or_default();
                (ids, t)
            }
        };
        let (mut params, stops) = gen_params(&model, &opts, ids.len(), F)?;
        if let Some(k) = r.logprobs {
            params.logprobs = Some(k.min(20) as usize);
            if r.echo {
                params.prompt_logprobs = Some(k.min(20) as usize);
            }
        }
        jobs.push((
            ids.clone(),
            text,
            TextJob {
                model: model.clone(),
                prompt: ids,
                params,
                stops,
                endpoint: "/v1/completions",
                user_id: st.user_id(&headers),
                request_id: format!("{rid}-{i}"),
            },
        ));
    }
    let id = format!("cmpl-{rid}");
    let name = model.name.clone();
    if r.stream {
        let (_, _, job) = jobs
            .pop()
            .ok_or_else(|| ApiError::bad("no prompt").flavor(F))?;
        let rx = textgen::start(&st, job).map_err(|e| e.flavor(F))?;
        let chunk = move |text: &str, finish: Option<&str>| json!({"id": id, "object": "text_completion", "created": created, "model": name, "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]});
        let body = futures_util::stream::unfold((rx, false), move |(mut rx, ended)| {
            let chunk = chunk.clone();
            async move {
                if ended {
                    return None;
                }
                let (b, end) = match rx.recv().await? {
                    Piece::Text(t) => (sse(&chunk(&t, None)), false),
                    Piece::PromptLogprobs(_) => (Bytes::new(), false),
                    Piece::Done(s) => {
                        let mut b = sse(&chunk("", Some(s.finish))).to_vec();
                        b.extend_from_slice(b"data: [DONE]\n\n");
                        (Bytes::from(b), true)
                    }
                    Piece::Error(e) => (sse(&e.flavor(F).body()), true),
                };
                Some((Ok::<_, Infallible>(b), (rx, end)))
            }
        });
        return Ok((
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response());
    }
    let mut choices = Vec::new();
    let (mut pt, mut ct) = (0usize, 0usize);
    for (i, (ids, text, job)) in jobs.into_iter().enumerate() {
        let (s, plp) = textgen::collect(&st, job).await.map_err(|e| e.flavor(F))?;
        pt += s.usage.prompt_tokens;
        ct += s.usage.completion_tokens;
        let logprobs = match (r.logprobs, &s.tokens) {
            (Some(_), Some(gen)) => {
                logprob_block(&model, &ids, plp.as_deref().filter(|_| r.echo), gen)
            }
            (Some(_), None) if r.echo => logprob_block(&model, &ids, plp.as_deref(), &[]),
            _ => Value::Null,
        };
        let out = if r.echo {
            format!("{text}{}", s.text)
        } else {
            s.text.clone()
        };
        choices.push(
            json!({"index": i, "text": out, "logprobs": logprobs, "finish_reason": s.finish}),
        );
    }
    Ok(Json(json!({"id": id, "object": "text_completion", "created": created, "model": model.name, "choices": choices, "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}})).into_response())
}

#[derive(Deserialize)]
struct EmbeddingsReq {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let r: EmbeddingsReq = parse_body(&body, F)?;
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_field(
                "encoding_format",
                format!("expected \"float\" or \"base64\", got {other:?}"),
            )
            .flavor(F))
        }
    };
    let _ = r.dimensions;
    let model = st
        .models
        .get(&r.model, None)
        .await
        .map_err(|e| e.flavor(F))?;
    let texts: Vec<String> = match prompts(&r.input) {
        Ok(ps) => ps
            .into_iter()
            .map(|p| match p {
                PromptIn::Text(t) => t,
                PromptIn::Ids(ids) => model.tokenizer.decode(&ids, false).unwrap_or_default(),
            })
            .collect(),
        Err(_) => {
            return Err(
                ApiError::bad_field("input", "expected a string, strings, or token ids").flavor(F),
            )
        }
    };
    let (vecs, n) = embed_texts(&model, &texts, F).await?;
    let data: Vec<Value> = vecs
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let e = if base64 {
                json!(base64_f32(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": e})
        })
        .collect();
    Ok(Json(
        json!({"object": "list", "data": data, "model": model.name, "usage": {"prompt_tokens": n, "total_tokens": n}}),
    ))
}

/// Little-endian f32 bytes in standard base64 (what `encoding_format: "base64"` returns).
fn base64_f32(v: &[f32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f → "AACAPw=="
        assert_eq!(super::base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(super::base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    }
}
