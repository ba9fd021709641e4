//! `so8t bench infer`: prompt-processing and generation tokens/s of the serve engine on a GGUF
//! file or HF folder, measured in process as `llama-bench -p P -n N -r R -t T` measures
//! llama.cpp, so the two can be put side by side (`bench/serve_vs_llama_cpp.py` does).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use so8t_serve::engine::bench::{self, BenchSpec, Rates};
use so8t_serve::engine::{EngineModel, Runner};

/// `bench infer`.
#[derive(clap::Args)]
pub struct InferBenchArgs {
    /// GGUF file or HF model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt tokens of the prompt-processing test (0 skips it).
    #[arg(short = 'p', long = "prompt", default_value_t = 512)]
    pub prompt: usize,
    /// Generated tokens of the generation test (0 skips it).
    #[arg(short = 'n', long = "generate", default_value_t = 128)]
    pub generate: usize,
    /// Repetitions of each test (after one untimed warm-up).
    #[arg(short = 'r', long = "reps", default_value_t = 5)]
    pub reps: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `bench infer` with `threads` compute threads (default: all cores).
pub fn run(a: InferBenchArgs, threads: Option<usize>) -> Result<()> {
    if a.reps == 0 || (a.prompt == 0 && a.generate == 0) {
        bail!("--reps must be at least 1 and one of --prompt / --generate non-zero");
    }
    let model = Arc::new(EngineModel::load(&a.model).map_err(|e| anyhow!("{e}"))?);
    if a.prompt + a.generate + 1 > model.cfg.ctx_train {
        bail!(
            "--prompt {} / --generate {} exceed the model's context of {} tokens",
            a.prompt,
            a.generate,
            model.cfg.ctx_train
        );
    }
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut runner = Runner::new(model.clone(), threads);
    let spec = BenchSpec {
        prompt: a.prompt,
        generate: a.generate,
        reps: a.reps,
    };
    let r = bench::run(&mut runner, spec);
    let size_mib = model.size_bytes() as f64 / (1 << 20) as f64;
    if a.json {
        let test = |name: String, rates: &Rates| {
            serde_json::json!({"test": name, "avg_ts": rates.mean(), "stddev_ts": rates.stddev(),
                               "best_ts": rates.best(), "samples_ts": rates.0})
        };
        let mut tests = Vec::new();
        if a.prompt > 0 {
            tests.push(test(format!("pp{}", a.prompt), &r.prompt));
        }
        if a.generate > 0 {
            tests.push(test(format!("tg{}", a.generate), &r.generate));
        }
        let doc = serde_json::json!({"model": a.model, "size_mib": size_mib, "threads": threads,
                                     "reps": a.reps, "tests": tests});
        println!("{doc}");
        return Ok(());
    }
    println!("| model | size | threads | test | t/s |\n| --- | ---: | ---: | --- | ---: |");
    let name = a.model.display();
    let row = |test: String, rates: &Rates| {
        println!(
            "| {name} | {size_mib:.1} MiB | {threads} | {test} | {:.2} ± {:.2} |",
            rates.mean(),
            rates.stddev()
        )
    };
    if a.prompt > 0 {
        row(format!("pp{}", a.prompt), &r.prompt);
    }
    if a.generate > 0 {
        row(format!("tg{}", a.generate), &r.generate);
    }
    Ok(())
}
