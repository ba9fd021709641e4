//! Ollama's API (`/api/*`): generate, chat, embed, tags, show, ps, create, copy, delete,
//! version — the shapes the official `ollama` client reads, NDJSON streaming by default.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{parse_body, ApiError, Flavor};
use super::models::{canonical, LoadedModel};
use super::prompt::{render_chat, tokenize, ChatMessage};
use super::textgen::{self, Piece, Summary, TextJob};
use super::AppState;
use crate::scheduler::{GenEvent, GenParams};

/// Request `options` (and Modelfile PARAMETERs) that change generation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f64>,
    /// Nucleus mass.
    pub top_p: Option<f64>,
    /// Top-k (0 = off).
    pub top_k: Option<i64>,
    /// Most tokens to generate; -1 unlimited, -2 fill the context.
    pub num_predict: Option<i64>,
    /// Context size.
    pub num_ctx: Option<i64>,
    /// RNG seed.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<Vec<String>>,
    /// Repetition penalty.
    pub repeat_penalty: Option<f32>,
    /// Window of the repetition penalty.
    pub repeat_last_n: Option<i64>,
    /// Everything else (accepted and ignored, like Ollama).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Builds generation parameters from the model's defaults and the request's options.
pub fn gen_params(
    model: &LoadedModel,
    o: &Options,
    prompt_len: usize,
    flavor: Flavor,
) -> Result<(GenParams, Vec<String>), ApiError> {
    let bad = |f: &str, m: String| ApiError::bad_field(f, m).flavor(flavor);
    let d = &model.params;
    if !o.other.is_empty() {
        tracing::debug!("ignored options: {:?}", o.other.keys().collect::<Vec<_>>());
    }
    let mut p = GenParams::default();
    let s = &mut p.sampling;
    s.temperature = o
        .temperature
        .or(d.temperature.map(f64::from))
        .unwrap_or(0.8);
    if !(0.0..=100.0).contains(&s.temperature) {
        return Err(bad(
            "options.temperature",
            format!(
                "temperature must be between 0 and 100, got {}",
                s.temperature
            ),
        ));
    }
    s.top_p = o.top_p.or(d.top_p.map(f64::from)).unwrap_or(0.9);
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(bad(
            "options.top_p",
            format!("top_p must be in (0, 1], got {}", s.top_p),
        ));
    }
    let top_k = o.top_k.or(d.top_k.map(i64::from)).unwrap_or(40);
    if top_k < 0 {
        return Err(bad(
            "options.top_k",
            format!("top_k must be ≥ 0, got {top_k}"),
        ));
    }
    s.top_k = top_k as usize;
    s.repeat_penalty = o.repeat_penalty.or(d.repeat_penalty).unwrap_or(1.0);
    if s.repeat_penalty <= 0.0 {
        return Err(bad(
            "options.repeat_penalty",
            "repeat_penalty must be > 0".into(),
        ));
    }
    let rl = o.repeat_last_n.or(d.repeat_last_n).unwrap_or(64);
    s.repeat_last_n = if rl < 0 { usize::MAX } else { rl as usize };
    s.seed = match o.seed.or(d.seed) {
        Some(x) if x >= 0 => x as u64,
        _ => rand::random(),
    };
    let ctx_train = model.engine().cfg.ctx_train;
    let num_ctx = o.num_ctx.or(d.num_ctx.map(i64::from)).unwrap_or(4096);
    if num_ctx < 1 {
        return Err(bad(
            "options.num_ctx",
            format!("num_ctx must be ≥ 1, got {num_ctx}"),
        ));
    }
    p.num_ctx = (num_ctx as usize).min(ctx_train);
    let room = p.num_ctx.saturating_sub(prompt_len);
    let np = o.num_predict.or(d.num_predict).unwrap_or(-1);
    p.sampling.max_tokens = match np {
        -1 | -2 => room,
        n if n < -2 => {
            return Err(bad(
                "options.num_predict",
                format!("num_predict must be ≥ -2 (-1: until the context is full), got {n}"),
            ))
        }
        n => (n as usize).min(room),
    };
    p.sampling.stop_token_ids = model.tokenizer.stop_token_ids.clone();
    let mut stops = d.stop.clone();
    stops.extend(o.stop.clone().unwrap_or_default());
    stops.retain(|s| !s.is_empty());
    Ok((p, stops))
}

fn ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// RFC 3339 UTC time.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = so8t_model::civil(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        r / 3600,
        r / 60 % 60,
        r % 60,
        d.subsec_nanos()
    )
}

fn keep_alive(v: &Option<Value>) -> Option<Duration> {
    match v {
        Some(Value::Number(n)) => n.as_f64().map(|s| Duration::from_secs_f64(s.max(0.0))),
        Some(Value::String(s)) => {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
            let x: f64 = num.parse().ok()?;
            let mult = match unit {
                "" | "s" => 1.0,
                "ms" => 0.001,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            Some(Duration::from_secs_f64((x * mult).max(0.0)))
        }
        _ => None,
    }
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": super::VERSION }))
}

fn adhoc_details(path: &std::path::Path) -> (Value, u64) {
    if path.is_dir() {
        return (
            json!({"format": "safetensors", "family": "", "families": [], "parameter_size": "", "quantization_level": "", "parent_model": ""}),
            1,
        );
    }
    match so8t_gguf::GgufFile::open(path) {
        Ok(f) => (
            serde_json::to_value(crate::library::details(&f)).unwrap_or(Value::Null),
            f.file_len(),
        ),
        Err(_) => (
            json!({"format": "safetensors", "family": "", "families": [], "parameter_size": "", "quantization_level": "", "parent_model": ""}),
            0,
        ),
    }
}

/// `GET /api/tags`.
pub async fn tags(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let st2 = st.clone();
    let models = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        if let Some(lib) = &st2.models.library {
            for e in lib.list().map_err(|e| ApiError::internal(e.to_string()))? {
                out.push(json!({"name": e.name, "model": e.name, "modified_at": rfc3339(e.modified), "size": e.size, "digest": e.digest, "details": e.details}));
            }
        }
        for (name, path) in &st2.models.adhoc {
            let (details, size) = adhoc_details(path);
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::now());
            out.push(json!({"name": name, "model": name, "modified_at": rfc3339(modified), "size": size.max(1), "digest": so8t_store::audit::sha256_hex(path.to_string_lossy().as_bytes()), "details": details}));
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(json!({ "models": models })))
}

/// `GET /api/ps`.
pub async fn ps(State(st): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<Value> = st
        .models
        .loaded()
        .iter()
        .map(|m| {
            let details = m.engine().gguf.as_ref().map(|f| serde_json::to_value(crate::library::details(f)).unwrap_or(Value::Null)).unwrap_or(Value::Null);
            let exp = *m.expires_at.lock().unwrap_or_else(|e| e.into_inner());
            json!({"name": m.name, "model": m.name, "size": m.size, "digest": m.digest, "details": details, "expires_at": rfc3339(exp), "size_vram": 0})
        })
        .collect();
    Json(json!({ "models": models }))
}

#[derive(Deserialize)]
struct ShowReq {
    #[serde(default)]
    model: String,
    #[serde(default)]
    name: String,
}

/// `POST /api/show`.
pub async fn show(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let r: ShowReq = parse_body(&body, Flavor::Ollama)?;
    let name = if r.model.is_empty() { r.name } else { r.model };
    let key = canonical(&name);
    let st2 = st.clone();
    tokio::task::spawn_blocking(move || -> Result<Json<Value>, ApiError> {
        if let Some((_, path)) = st2.models.adhoc.iter().find(|(n, _)| *n == key) {
            if path.is_dir() {
                let cfg = std::fs::read_to_string(path.join("config.json")).unwrap_or_default();
                let cfg: Value = serde_json::from_str(&cfg).unwrap_or(Value::Null);
                let family = cfg["model_type"].as_str().unwrap_or("").to_string();
                return Ok(Json(json!({
                    "modelfile": format!("FROM {}\n", path.display()), "parameters": "", "template": "",
                    "details": {"parent_model": "", "format": "safetensors", "family": family, "families": [family], "parameter_size": "", "quantization_level": "F32"},
                    "model_info": {"general.architecture": family},
                    "capabilities": ["completion", "embedding"], "modified_at": rfc3339(SystemTime::now()),
                })));
            }
            let f = so8t_gguf::GgufFile::open(path).map_err(|e| ApiError::internal(e.to_string()))?;
            let template = f.metadata("tokenizer.chat_template").and_then(|v| v.as_str()).unwrap_or("").to_string();
            return Ok(Json(json!({
                "modelfile": format!("FROM {}\n", path.display()), "parameters": "", "template": template,
                "details": crate::library::details(&f), "model_info": crate::library::model_info(&f),
                "capabilities": ["completion", "embedding"], "modified_at": rfc3339(SystemTime::now()),
            })));
        }
        let lib = st2.models.library.as_ref().ok_or_else(|| ApiError::no_model(&name))?;
        let i = lib.show(&key).map_err(|e| match e {
            crate::library::LibraryError::NotFound(_) | crate::library::LibraryError::BadName { .. } => ApiError::no_model(&name),
            other => ApiError::internal(other.to_string()),
        })?;
        let modified = std::fs::metadata(&i.model_path).and_then(|m| m.modified()).unwrap_or(SystemTime::now());
        Ok(Json(json!({
            "modelfile": i.modelfile, "parameters": i.parameters, "template": i.template.unwrap_or_default(),
            "system": i.system.unwrap_or_default(), "license": i.license.join("\n"),
            "details": i.details, "model_info": i.model_info,
            "capabilities": ["completion", "embedding"], "modified_at": rfc3339(modified),
        })))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

#[derive(Deserialize)]
struct GenerateReq {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    context: Option<Vec<u32>>,
    #[serde(default)]
    think: Option<Value>,
}

#[derive(Deserialize)]
struct ChatReq {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    think: Option<Value>,
}

fn unsupported(images: bool, format: &Option<Value>) -> Result<(), ApiError> {
    if images {
        return Err(ApiError::bad_field(
            "images",
            "this model has no vision support",
        ));
    }
    if matches!(format, Some(v) if !v.is_null() && v != "") {
        return Err(ApiError::bad_field(
            "format",
            "structured output (`format`) is not supported yet",
        ));
    }
    Ok(())
}

fn done_fields(s: &Summary, load_secs: f64) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("done_reason".into(), json!(s.finish));
    o.insert("total_duration".into(), json!(ns(s.total_secs + load_secs)));
    o.insert("load_duration".into(), json!(ns(load_secs)));
    o.insert("prompt_eval_count".into(), json!(s.usage.prompt_tokens));
    o.insert(
        "prompt_eval_duration".into(),
        json!(ns(s.usage.prompt_secs)),
    );
    o.insert("eval_count".into(), json!(s.usage.completion_tokens));
    o.insert("eval_duration".into(), json!(ns(s.usage.gen_secs)));
    o
}

/// Streams pieces as NDJSON, or collects them into one JSON object.
async fn respond(
    st: &Arc<AppState>,
    model: Arc<LoadedModel>,
    job: TextJob,
    stream: bool,
    chat: bool,
    load_secs: f64,
) -> Result<Response, ApiError> {
    let name = model.name.clone();
    let piece = move |text: &str, done: Option<&Summary>| -> Value {
        let mut o = Map::new();
        o.insert("model".into(), json!(name));
        o.insert("created_at".into(), json!(rfc3339(SystemTime::now())));
        if chat {
            o.insert(
                "message".into(),
                json!({"role": "assistant", "content": text}),
            );
        } else {
            o.insert("response".into(), json!(text));
        }
        o.insert("done".into(), json!(done.is_some()));
        if let Some(s) = done {
            o.extend(done_fields(s, load_secs));
        }
        Value::Object(o)
    };
    if !stream {
        let (s, _) = textgen::collect(st, job).await?;
        return Ok(Json(piece(&s.text, Some(&s))).into_response());
    }
    let rx = textgen::start(st, job)?;
    let body = futures_util::stream::unfold((rx, false), move |(mut rx, ended)| {
        let piece = piece.clone();
        async move {
            if ended {
                return None;
            }
            let line = match rx.recv().await? {
                Piece::Text(t) => (piece(&t, None), false),
                Piece::PromptLogprobs(_) => (json!({}), false),
                Piece::Done(s) => (piece("", Some(&s)), true),
                Piece::Error(e) => (e.body(), true),
            };
            let mut b = serde_json::to_vec(&line.0).unwrap_or_default();
            b.push(b'\n');
            Some((Ok::<_, Infallible>(Bytes::from(b)), (rx, line.1)))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

fn load_response(name: &str, chat: bool, reason: &str) -> Response {
    let mut v = json!({"model": name, "created_at": rfc3339(SystemTime::now()), "done": true, "done_reason": reason});
    if chat {
        v["message"] = json!({"role": "assistant", "content": ""});
    } else {
        v["response"] = json!("");
    }
    Json(v).into_response()
}

/// What a generate/chat request runs on: the loaded model and the seconds loading took, or —
/// when there is nothing to generate — Ollama's answer to a load (`keep_alive` > 0) or unload
/// (`keep_alive: 0`) request.
enum Prepared {
    Run(Arc<LoadedModel>, f64),
    Answer(Response),
}

async fn prepare(
    st: &AppState,
    name: &str,
    keep_alive_v: &Option<Value>,
    empty: bool,
    chat: bool,
) -> Result<Prepared, ApiError> {
    let ka = keep_alive(keep_alive_v);
    if empty && ka == Some(Duration::ZERO) {
        st.models.unload(name);
        return Ok(Prepared::Answer(load_response(
            &canonical(name),
            chat,
            "unload",
        )));
    }
    let t0 = std::time::Instant::now();
    let model = st.models.get(name, ka).await?;
    if empty {
        return Ok(Prepared::Answer(load_response(&model.name, chat, "load")));
    }
    Ok(Prepared::Run(model, t0.elapsed().as_secs_f64()))
}

/// `POST /api/generate`.
pub async fn generate(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: GenerateReq = parse_body(&body, Flavor::Ollama)?;
    unsupported(r.images.as_ref().is_some_and(|v| !v.is_empty()), &r.format)?;
    let _ = (&r.suffix, &r.context, &r.think);
    let (model, load_secs) =
        match prepare(&st, &r.model, &r.keep_alive, r.prompt.is_empty(), false).await? {
            Prepared::Run(m, secs) => (m, secs),
            Prepared::Answer(resp) => return Ok(resp),
        };
    let text = if r.raw {
        r.prompt.clone()
    } else if let Some(t) = &r.template {
        let t = crate::template::GoTemplate::parse(t)
            .map_err(|e| ApiError::bad_field("template", e.to_string()))?;
        let data = crate::template::TemplateData {
            system: r
                .system
                .clone()
                .or(model.system.clone())
                .unwrap_or_default(),
            prompt: r.prompt.clone(),
            ..Default::default()
        };
        t.render(&data)
            .map_err(|e| ApiError::bad_field("template", e.to_string()))?
    } else {
        let msgs = [ChatMessage {
            role: "user".into(),
            content: r.prompt.clone(),
        }];
        render_chat(&model, &msgs, r.system.as_deref())?
    };
    let ids = tokenize(&model, &text)?;
    let gen = gen_params(&model, &r.options, ids.len(), Flavor::Ollama)?;
    let job = TextJob::new(
        model.clone(),
        ids,
        gen,
        "/api/generate",
        st.user_id(&headers),
    );
    respond(&st, model, job, r.stream.unwrap_or(true), false, load_secs).await
}

/// `POST /api/chat`.
pub async fn chat(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let r: ChatReq = parse_body(&body, Flavor::Ollama)?;
    unsupported(false, &r.format)?;
    let _ = (&r.tools, &r.think);
    let (model, load_secs) =
        match prepare(&st, &r.model, &r.keep_alive, r.messages.is_empty(), true).await? {
            Prepared::Run(m, secs) => (m, secs),
            Prepared::Answer(resp) => return Ok(resp),
        };
    let text = render_chat(&model, &r.messages, None)?;
    let ids = tokenize(&model, &text)?;
    let gen = gen_params(&model, &r.options, ids.len(), Flavor::Ollama)?;
    let job = TextJob::new(model.clone(), ids, gen, "/api/chat", st.user_id(&headers));
    respond(&st, model, job, r.stream.unwrap_or(true), true, load_secs).await
}

/// Embeds each text (mean-pooled, L2-normalized final hidden states).
pub async fn embed_texts(
    model: &Arc<LoadedModel>,
    texts: &[String],
    flavor: Flavor,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let mut out = Vec::with_capacity(texts.len());
    let mut tokens = 0;
    for (i, t) in texts.iter().enumerate() {
        let ids = tokenize(model, t).map_err(|e| e.flavor(flavor))?;
        if ids.is_empty() {
            return Err(
                ApiError::bad_field(&format!("input[{i}]"), "the text is empty").flavor(flavor),
            );
        }
        tokens += ids.len();
        let params = GenParams {
            embed: true,
            num_ctx: model.engine().cfg.ctx_train,
            ..GenParams::default()
        };
        let mut rx = model.scheduler.submit(ids, params).map_err(|e| {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).flavor(flavor)
        })?;
        let mut got = None;
        while let Some(ev) = rx.recv().await {
            match ev {
                GenEvent::Embedding(v) => got = Some(v),
                GenEvent::Error(m) => {
                    return Err(ApiError::bad_field(&format!("input[{i}]"), m).flavor(flavor))
                }
                GenEvent::Done(..) => break,
                _ => {}
            }
        }
        out.push(got.ok_or_else(|| ApiError::internal("no embedding came back").flavor(flavor))?);
    }
    Ok((out, tokens))
}

#[derive(Deserialize)]
struct EmbedReq {
    model: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    options: Options,
}

/// The texts of an `input` that is a string or an array of strings.
pub fn input_texts(v: &Value, field: &str, flavor: Flavor) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_field(&format!("{field}[{i}]"), "expected a string")
                        .flavor(flavor)
                })
            })
            .collect(),
        Value::Null => Err(
            ApiError::bad_field(field, format!("the field `{field}` is required")).flavor(flavor),
        ),
        _ => Err(
            ApiError::bad_field(field, "expected a string or an array of strings").flavor(flavor),
        ),
    }
}

/// `POST /api/embed`.
pub async fn embed(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let r: EmbedReq = parse_body(&body, Flavor::Ollama)?;
    let _ = (&r.truncate, &r.options, &r.prompt);
    let texts = input_texts(&r.input, "input", Flavor::Ollama)?;
    let t0 = std::time::Instant::now();
    let model = st.models.get(&r.model, keep_alive(&r.keep_alive)).await?;
    let load = t0.elapsed().as_secs_f64();
    let (embeddings, n) = embed_texts(&model, &texts, Flavor::Ollama).await?;
    Ok(Json(
        json!({"model": model.name, "embeddings": embeddings, "total_duration": ns(t0.elapsed().as_secs_f64()), "load_duration": ns(load), "prompt_eval_count": n}),
    ))
}

/// `POST /api/embeddings` (the older single-prompt form).
pub async fn embeddings(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let r: EmbedReq = parse_body(&body, Flavor::Ollama)?;
    let text = r
        .prompt
        .clone()
        .ok_or_else(|| ApiError::bad_field("prompt", "the field `prompt` is required"))?;
    let model = st.models.get(&r.model, keep_alive(&r.keep_alive)).await?;
    let (mut e, _) = embed_texts(&model, &[text], Flavor::Ollama).await?;
    Ok(Json(json!({ "embedding": e.pop().unwrap_or_default() })))
}

#[derive(Deserialize)]
struct CreateReq {
    #[serde(default)]
    model: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    modelfile: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    license: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
}

fn quoted(s: &str) -> Result<String, ApiError> {
    if s.contains("\"\"\"") {
        return Err(ApiError::bad("values may not contain \"\"\""));
    }
    Ok(format!("\"\"\"{s}\"\"\""))
}

/// `POST /api/create`: `modelfile` text (older clients) or `from` + fields (current ones).
pub async fn create(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let r: CreateReq = parse_body(&body, Flavor::Ollama)?;
    let name = if r.model.is_empty() {
        r.name.clone()
    } else {
        r.model.clone()
    };
    if name.is_empty() {
        return Err(ApiError::bad_field(
            "model",
            "the field `model` is required",
        ));
    }
    let text = match (&r.modelfile, &r.from) {
        (Some(m), _) => m.clone(),
        (None, Some(from)) => {
            let mut t = format!("FROM {from}\n");
            if let Some(x) = &r.template {
                t += &format!("TEMPLATE {}\n", quoted(x)?);
            }
            if let Some(x) = &r.system {
                t += &format!("SYSTEM {}\n", quoted(x)?);
            }
            for (k, v) in r.parameters.iter().flatten() {
                let vals: Vec<Value> = match v {
                    Value::Array(a) => a.clone(),
                    v => vec![v.clone()],
                };
                for v in vals {
                    let s = match v {
                        Value::String(s) => quoted(&s)?,
                        other => other.to_string(),
                    };
                    t += &format!("PARAMETER {k} {s}\n");
                }
            }
            match &r.license {
                Some(Value::String(s)) => t += &format!("LICENSE {}\n", quoted(s)?),
                Some(Value::Array(a)) => {
                    for s in a.iter().filter_map(Value::as_str) {
                        t += &format!("LICENSE {}\n", quoted(s)?);
                    }
                }
                _ => {}
            }
            t
        }
        (None, None) => {
            return Err(ApiError::bad_field(
                "from",
                "give `from` (a model, a GGUF path or a folder) or `modelfile`",
            ))
        }
    };
    let parsed = so8t_gguf::modelfile::parse(&text)
        .map_err(|e| ApiError::bad_field("modelfile", e.to_string()))?;
    let lib = st
        .models
        .library
        .clone()
        .ok_or_else(|| ApiError::internal("the server has no model store"))?;
    let st2 = st.clone();
    let key = canonical(&name);
    let res = tokio::task::spawn_blocking(move || {
        let base = std::env::current_dir().unwrap_or_default();
        lib.create(&name, &parsed, &base, &mut |_| {})
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    match res {
        Ok(_) => {
            st2.models.unload(&key);
            if r.stream.unwrap_or(true) {
                let lines = "{\"status\":\"parsing modelfile\"}\n{\"status\":\"writing manifest\"}\n{\"status\":\"success\"}\n";
                Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], lines).into_response())
            } else {
                Ok(Json(json!({"status": "success"})).into_response())
            }
        }
        Err(e) => Err(ApiError::bad(e.to_string())),
    }
}

#[derive(Deserialize)]
struct CopyReq {
    source: String,
    destination: String,
}

/// `POST /api/copy`.
pub async fn copy(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let r: CopyReq = parse_body(&body, Flavor::Ollama)?;
    let lib = st
        .models
        .library
        .clone()
        .ok_or_else(|| ApiError::no_model(&r.source))?;
    let src = r.source.clone();
    tokio::task::spawn_blocking(move || lib.copy(&r.source, &r.destination))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            crate::library::LibraryError::NotFound(_) => ApiError::no_model(&src),
            other => ApiError::bad(other.to_string()),
        })?;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /api/delete`.
pub async fn delete(State(st): State<Arc<AppState>>, body: Bytes) -> Result<Response, ApiError> {
    let r: ShowReq = parse_body(&body, Flavor::Ollama)?;
    let name = if r.model.is_empty() { r.name } else { r.model };
    let lib = st
        .models
        .library
        .clone()
        .ok_or_else(|| ApiError::no_model(&name))?;
    let n2 = name.clone();
    tokio::task::spawn_blocking(move || lib.remove(&n2))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            crate::library::LibraryError::NotFound(_)
            | crate::library::LibraryError::BadName { .. } => ApiError::no_model(&name),
            other => ApiError::internal(other.to_string()),
        })?;
    st.models.unload(&name);
    Ok(StatusCode::OK.into_response())
}
