//! `so8t serve` (the Ollama/OpenAI-compatible server), `so8t run` (chat in the terminal) and
//! `so8t ps` (models a running server holds).

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use so8t_serve::scheduler::SchedulerOptions;
use so8t_serve::server::error::Flavor;
use so8t_serve::server::models::Models;
use so8t_serve::server::prompt::{render_chat, tokenize, ChatMessage};
use so8t_serve::server::textgen::{self, Piece, TextJob};
use so8t_serve::server::{self, ollama, ServeOptions};

use super::store::{audit_path, StoreArg};
use super::RuntimeArgs;

/// Engine settings shared by `serve` and `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineArgs {
    /// Requests decoded together per model.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Most tokens in one forward pass.
    #[arg(long, default_value_t = 512)]
    pub batch_tokens: usize,
    /// Requests that may wait for a slot before new ones get 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Where the engine runs: `--device cpu` is the native CPU engine; a GPU runs candle's
    /// kernels on the GGUF blocks (quantized types stay quantized), activations in `--dtype`
    /// (auto: bf16 there).
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `so8t serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to bind (also `SO8T_HOST`, as `host` or `host:port`).
    #[arg(long)]
    pub host: Option<String>,
    /// Port (default 11434, Ollama's).
    #[arg(long)]
    pub port: Option<u16>,
    /// Serve a GGUF file or HF folder directly, as `NAME=PATH` or `PATH` (named after the file).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Require `Authorization: Bearer TOKEN` (also `SO8T_TOKEN`).
    #[arg(long, env = "SO8T_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Allow browser requests from this origin (`*` for any); CORS is off by default.
    #[arg(long = "cors")]
    pub cors: Vec<String>,
    /// Operator flag: pass the model's thinking through to clients (hidden by default).
    #[arg(long)]
    pub show_thinking: bool,
    /// Operator flag: keep the thinking text in the audit log (only hashes by default).
    #[arg(long)]
    pub store_thinking: bool,
    /// Audit database (default: audit.db in the models folder).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Do not write an audit log.
    #[arg(long)]
    pub no_audit: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body: usize,
    /// Header carrying the user id for the audit log.
    #[arg(long, default_value = "x-user-id")]
    pub user_header: String,
    /// Seconds a model stays loaded after its last request.
    #[arg(long, default_value_t = 300)]
    pub keep_alive: u64,
    /// Models kept loaded at once.
    #[arg(long, default_value_t = 2)]
    pub max_loaded: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub store: StoreArg,
}

fn addr(host: Option<&str>, port: Option<u16>) -> Result<SocketAddr> {
    let env = std::env::var("SO8T_HOST").ok().filter(|s| !s.is_empty());
    let h = host
        .map(str::to_string)
        .or(env)
        .unwrap_or_else(|| "127.0.0.1".into());
    let h = h
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // `host`, `host:port` or `[v6]:port`; an explicit --port wins over an embedded one.
    let (name, embedded) = match h.rsplit_once(':') {
        Some((n, p)) if !h.ends_with(']') => match p.parse::<u16>() {
            Ok(p) => (n, Some(p)),
            Err(_) => (h.as_str(), None),
        },
        _ => (h.as_str(), None),
    };
    let with_port = format!("{name}:{}", port.or(embedded).unwrap_or(11434));
    with_port
        .to_socket_addrs()
        .with_context(|| format!("bad address {with_port:?}"))?
        .next()
        .ok_or_else(|| anyhow!("{with_port:?} resolves to nothing"))
}

fn adhoc(specs: &[String]) -> Result<Vec<(String, PathBuf)>> {
    specs
        .iter()
        .map(|s| {
            let (name, path) = match s.split_once('=') {
                Some((n, p)) => (n.to_string(), PathBuf::from(p)),
                None => {
                    let p = PathBuf::from(s);
                    let stem = p
                        .file_stem()
                        .map(|x| x.to_string_lossy().to_string())
                        .unwrap_or_default();
                    (stem, p)
                }
            };
            if !path.exists() {
                bail!("--model {s}: {} does not exist", path.display());
            }
            Ok((name, path))
        })
        .collect()
}

fn sched(e: &EngineArgs, threads: Option<usize>) -> Result<SchedulerOptions> {
    let mut s = SchedulerOptions::default();
    s.device = e.runtime.device()?;
    s.dtype = e.runtime.dtype(&s.device)?;
    if let Some(t) = threads {
        s.threads = t.max(1);
    }
    s.parallel = e.parallel.max(1);
    s.batch_tokens = e.batch_tokens.max(1);
    s.max_queue = e.max_queue;
    Ok(s)
}

/// `so8t serve`.
pub fn serve(a: ServeArgs, threads: Option<usize>) -> Result<()> {
    let addr = addr(a.host.as_deref(), a.port)?;
    let lib = a.store.open()?;
    let mut models = Models::new(Some(lib), adhoc(&a.models)?, sched(&a.engine, threads)?);
    models.keep_alive = Duration::from_secs(a.keep_alive);
    models.max_loaded = a.max_loaded.max(1);
    let opts = ServeOptions {
        token: a.token.filter(|t| !t.is_empty()),
        cors_origins: a.cors,
        show_thinking: a.show_thinking,
        store_thinking: a.store_thinking,
        max_body: a.max_body,
        user_header: a.user_header.to_ascii_lowercase(),
        audit_path: if a.no_audit {
            None
        } else {
            Some(a.audit.unwrap_or_else(|| audit_path(&a.store)))
        },
    };
    let state = server::state(opts, models).map_err(|e| anyhow!("opening the audit log: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("so8t serve: listening on http://{local} (Ollama API /api, OpenAI API /v1)");
        let shutdown = async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            eprintln!("so8t serve: shutting down (finishing requests in flight)");
        };
        server::serve(state, listener, shutdown).await?;
        Ok(())
    })
}

/// `so8t run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A model of the store, or a GGUF file / HF folder.
    pub model: String,
    /// One prompt to answer (else an interactive chat; `/bye` or Ctrl-D ends it).
    pub prompt: Option<String>,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Most tokens per answer.
    #[arg(long)]
    pub num_predict: Option<i64>,
    /// RNG seed.
    #[arg(long)]
    pub seed: Option<i64>,
    /// Operator flag: show the model's thinking.
    #[arg(long)]
    pub show_thinking: bool,
    /// Do not write an audit row.
    #[arg(long)]
    pub no_audit: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub store: StoreArg,
}

/// `so8t run`.
pub fn run(a: RunArgs, threads: Option<usize>) -> Result<()> {
    let lib = a.store.open()?;
    let path = PathBuf::from(&a.model);
    let (name, adhoc) = if path.exists() {
        let n = path
            .file_stem()
            .map(|x| x.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        (n.clone(), vec![(n, path)])
    } else {
        (a.model.clone(), vec![])
    };
    let models = Models::new(Some(lib), adhoc, sched(&a.engine, threads)?);
    let opts = ServeOptions {
        show_thinking: a.show_thinking,
        audit_path: (!a.no_audit).then(|| audit_path(&a.store)),
        ..ServeOptions::default()
    };
    let state = server::state(opts, models).map_err(|e| anyhow!("opening the audit log: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let model = state
            .models
            .get(&name, None)
            .await
            .map_err(|e| anyhow!("{}", e.message))?;
        let options = ollama::Options {
            temperature: a.temperature,
            num_predict: a.num_predict,
            seed: a.seed,
            ..Default::default()
        };
        let mut history: Vec<ChatMessage> = Vec::new();
        let interactive = a.prompt.is_none();
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            let user = match &a.prompt {
                Some(p) => p.clone(),
                None => {
                    eprint!(">>> ");
                    std::io::stderr().flush().ok();
                    match lines.next() {
                        Some(Ok(l)) => l,
                        _ => break,
                    }
                }
            };
            let t = user.trim();
            if t == "/bye" || t == "/exit" {
                break;
            }
            if t.is_empty() {
                continue;
            }
            history.push(ChatMessage {
                role: "user".into(),
                content: user.clone(),
            });
            let text = render_chat(&model, &history, None).map_err(|e| anyhow!("{}", e.message))?;
            let ids = tokenize(&model, &text).map_err(|e| anyhow!("{}", e.message))?;
            let gen = ollama::gen_params(&model, &options, ids.len(), Flavor::Ollama)
                .map_err(|e| anyhow!("{}", e.message))?;
            let job = TextJob::new(
                model.clone(),
                ids,
                gen,
                "so8t run",
                std::env::var("USER").ok(),
            );
            let mut rx = textgen::start(&state, job).map_err(|e| anyhow!("{}", e.message))?;
            let mut answer = String::new();
            let mut out = std::io::stdout();
            while let Some(p) = rx.recv().await {
                match p {
                    Piece::Text(t) => {
                        answer.push_str(&t);
                        out.write_all(t.as_bytes())?;
                        out.flush()?;
                    }
                    Piece::Done(_) => break,
                    Piece::Error(e) => bail!("{}", e.message),
                    Piece::PromptLogprobs(_) => {}
                }
            }
            println!();
            history.push(ChatMessage {
                role: "assistant".into(),
                content: answer,
            });
            if !interactive {
                break;
            }
        }
        Ok(())
    })
}

/// `so8t ps`.
#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// The server (default `SO8T_HOST` or 127.0.0.1:11434).
    #[arg(long)]
    pub host: Option<String>,
}

/// `so8t ps`: asks a running server which models it holds.
pub fn ps(a: PsArgs) -> Result<()> {
    let addr = addr(a.host.as_deref(), None)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("no server at {addr} (start one with `so8t serve`)"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET /api/ps HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body)
        .with_context(|| format!("unexpected answer from {addr}: {body:?}"))?;
    println!("{:<32}  {:>9}  UNTIL", "NAME", "SIZE");
    for m in v["models"].as_array().into_iter().flatten() {
        println!(
            "{:<32}  {:>6.1} MB  {}",
            m["name"].as_str().unwrap_or(""),
            m["size"].as_f64().unwrap_or(0.0) / 1e6,
            m["expires_at"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
