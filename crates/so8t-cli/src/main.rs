//! `so8t`: the SO8T life cycle in one binary. This crate only parses arguments and wires the
//! library crates together; each subcommand lives in `commands/`.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// so8t: SO(8)-gated fine-tuning, baking, export and serving of Phi-3 / Llama chat models.
#[derive(Parser)]
#[command(name = "so8t", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Worker threads for CPU kernels (default: all cores).
    #[arg(long, global = true, env = "SO8T_THREADS")]
    threads: Option<usize>,
    /// Log filter, e.g. `info` or `so8t_model=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Datasets: collect four-class records.
    #[command(subcommand)]
    Data(commands::data::DataCmd),
    /// Inspect, create and run model folders.
    #[command(subcommand)]
    Model(commands::model::ModelCmd),
    /// Generate text from a prompt (optionally as a chat, optionally with SO(8) gates).
    Generate(commands::generate::GenerateArgs),
    /// Fold SO(8) gates (and a LoRA adapter) into o_proj and write a plain HF model folder.
    Bake(commands::bake::BakeArgs),
    /// Download a model (or dataset) repository from the Hugging Face hub.
    Pull(commands::pull::PullArgs),
    /// Fine-tune with SO(8) gates, LoRA, PET and alpha annealing in a crash-safe run folder.
    Train(commands::train::TrainArgs),
    /// Reinforcement learning (PPO or GRPO) with alpha-gate annealing on the four-class task.
    Rl(commands::rl::RlArgs),
    /// Export a model folder: GGUF files (F16 / Q8_0 / Q4_K_M) with Ollama Modelfiles.
    #[command(subcommand)]
    Export(commands::gguf::ExportCmd),
    /// Inspect and verify GGUF files.
    #[command(subcommand)]
    Gguf(commands::gguf::GgufCmd),
    /// Serve models over Ollama's and OpenAI's APIs (thinking hidden, audit log on).
    Serve(commands::serve::ServeArgs),
    /// Chat with a model in the terminal (or answer one prompt).
    Run(commands::serve::RunArgs),
    /// Models a running server holds.
    Ps(commands::serve::PsArgs),
    /// Create a model in the store from a Modelfile.
    Create(commands::store::CreateArgs),
    /// Models in the store.
    #[command(alias = "ls")]
    List(commands::store::ListArgs),
    /// A model's details, Modelfile, template or parameters.
    Show(commands::store::ShowArgs),
    /// Remove models from the store.
    Rm(commands::store::RmArgs),
    /// Copy a model under a new name.
    Cp(commands::store::CpArgs),
    /// Check the audit log of served requests.
    #[command(subcommand)]
    Audit(commands::store::AuditCmd),
    /// Benchmarks (MMLU, HellaSwag, GSM8K, four-class) with per-item results and a summary.
    Eval(commands::eval::EvalArgs),
    /// The paired A/B test of two models or two eval results, with a report.
    Ab(commands::ab::AbArgs),
    /// Run the whole flow available so far on the bundled tiny model.
    Quickstart(commands::quickstart::QuickstartArgs),
    /// The whole flow as one resumable pipeline: run it, or show its status.
    #[command(subcommand)]
    Pipeline(commands::pipeline::PipelineCmd),
    /// Watch a folder of training runs and run the post-training workflow once per finished run.
    Watch(commands::watch::WatchArgs),
    /// The live web dashboard: runs, curves, gauges, checkpoints, pipelines, A/B results.
    Dashboard(commands::dashboard::DashboardArgs),
    /// Benchmarks: training steps on a device, inference as llama-bench (compare with the peers).
    #[command(subcommand)]
    Bench(commands::bench::BenchCmd),
    /// Power-on resume: install the systemd unit (or Windows task) that resumes unfinished work.
    #[command(subcommand)]
    Service(commands::service::ServiceCmd),
}

/// glibc's allocator returns every freed block above 128 KiB (its starting mmap threshold) to
/// the kernel at once, so each activation tensor of a training step costs an mmap, page faults
/// and an munmap: a third of the time of a small model's step. Keeping blocks up to 32 MiB (the
/// largest threshold glibc accepts) on the heap, with a 1 GiB trim threshold, halves that
/// model's step time. Variables of the same names in the environment still win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    let set = |env: &str, param: i32, value: i32| {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
            unsafe { libc::mallopt(param, value) };
        }
    };
    set("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20);
    set("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 1 << 30);
    set("MALLOC_TOP_PAD_", libc::M_TOP_PAD, 64 << 20);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// candle's element-wise worker spins 25,000 rounds after each op before it sleeps; in a training
/// step that is most of the time between ops, taken from the gemm threads next to it (a fifth of
/// all CPU time on two cores). 2,000 rounds keep back-to-back ops on a spinning worker and let
/// the matmuls have the cores (CPU training +10–15 %). An explicit setting still wins.
fn tune_candle_pool() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, "2000");
    }
}

fn main() -> ExitCode {
    tune_allocator();
    tune_candle_pool();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // candle's CPU kernels (gemm, rayon) read this when their pools start.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let filter = std::env::var("RUST_LOG").unwrap_or(cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Data(c) => commands::data::run(c),
        Command::Model(c) => commands::model::run(c),
        Command::Generate(a) => commands::generate::run(a),
        Command::Bake(a) => commands::bake::run(a),
        Command::Pull(a) => commands::pull::run(a),
        Command::Quickstart(a) => commands::quickstart::run(a),
        Command::Train(a) => commands::train::run_cmd(a),
        Command::Rl(a) => commands::rl::run_cmd(a),
        Command::Export(c) => commands::gguf::run_export(c),
        Command::Gguf(c) => commands::gguf::run(c),
        Command::Serve(a) => commands::serve::serve(a, cli.threads),
        Command::Run(a) => commands::serve::run(a, cli.threads),
        Command::Ps(a) => commands::serve::ps(a),
        Command::Create(a) => commands::store::create(a),
        Command::List(a) => commands::store::list(a),
        Command::Show(a) => commands::store::show(a),
        Command::Rm(a) => commands::store::rm(a),
        Command::Cp(a) => commands::store::cp(a),
        Command::Audit(c) => commands::store::audit(c),
        Command::Eval(a) => commands::eval::eval(a, cli.threads),
        Command::Ab(a) => commands::ab::ab(a, cli.threads),
        Command::Pipeline(c) => commands::pipeline::run(c, cli.threads),
        Command::Watch(a) => commands::watch::run(a),
        Command::Service(c) => commands::service::run(c),
        Command::Dashboard(a) => commands::dashboard::run(a),
        Command::Bench(c) => commands::bench::run(c, cli.threads),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("so8t: {e:#}");
            ExitCode::from(2)
        }
    }
}
