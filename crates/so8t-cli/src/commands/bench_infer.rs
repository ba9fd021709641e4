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
    /// Instead of timing: compare the chosen device's logits with the native CPU engine's on
    /// `--prompt` tokens (half as one prompt pass, the rest one token a pass) and print how far
    /// apart they are. A check that a GPU computes what the CPU does.
    #[arg(long)]
    pub check: bool,
    /// Run the device engine (candle's kernels) even on the CPU (in f32): how its arithmetic is
    /// checked without a GPU (the native engine is the faster one on a CPU).
    #[arg(long)]
    pub device_engine: bool,
    /// With `--check`: the model the native CPU engine runs as the reference (default: the same
    /// one). Checking a quantized file against its F16/BF16 file on both engines shows whether
    /// the device adds error beyond the quantization's own.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Where the engine runs (the native engine on the CPU, candle's kernels on a GPU) and the
    /// activation dtype there.
    #[command(flatten)]
    pub runtime: super::RuntimeArgs,
}

/// Runs `bench infer` with `threads` compute threads (default: all cores).
pub fn run(a: InferBenchArgs, threads: Option<usize>) -> Result<()> {
    if a.reps == 0 || (a.prompt == 0 && a.generate == 0) {
        bail!("--reps must be at least 1 and one of --prompt / --generate non-zero");
    }
    if a.reference.is_some() && !a.check {
        bail!("--reference goes with --check");
    }
    let model = Arc::new(EngineModel::load(&a.model).map_err(|e| anyhow!("{e}"))?);
    let generate = if a.check { 0 } else { a.generate };
    if a.prompt + generate + 1 > model.cfg.ctx_train {
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
    let dev = a.runtime.device()?;
    let dtype = a.runtime.dtype(&dev)?;
    let mut runner = if a.device_engine && dev.is_cpu() {
        Runner::on_device(model.clone(), &dev, dtype, &mut |_, _| {})
    } else {
        Runner::for_device(model.clone(), &dev, threads, dtype)
    }
    .map_err(|e| anyhow!("{e}"))?;
    let device = runner.device_name();
    if a.check {
        if a.prompt < 2 {
            bail!("--check needs --prompt of at least 2 tokens");
        }
        let reference = match &a.reference {
            Some(p) => Arc::new(EngineModel::load(p).map_err(|e| anyhow!("{e}"))?),
            None => model.clone(),
        };
        if reference.cfg.vocab != model.cfg.vocab {
            bail!(
                "--reference has a vocabulary of {}, the model {}",
                reference.cfg.vocab,
                model.cfg.vocab
            );
        }
        let mut native = Runner::new(reference, threads);
        let g = bench::agreement(&mut runner, &mut native, a.prompt).map_err(|e| anyhow!("{e}"))?;
        let reference_path = a.reference.as_ref().unwrap_or(&a.model);
        let doc = serde_json::json!({"model": a.model, "device": device, "reference": reference_path,
            "positions": g.positions, "max_rel": g.max_rel, "mean_rel": g.mean_rel, "top1": g.top1});
        if a.json {
            println!("{doc}");
        } else {
            println!(
                "{device} vs the native CPU engine on {} over {} positions: max |Δlogit|/max|logit| {:.2e} (mean {:.2e}), same top token at {:.1} %",
                reference_path.display(),
                g.positions,
                g.max_rel,
                g.mean_rel,
                100.0 * g.top1
            );
        }
        return Ok(());
    }
    let spec = BenchSpec {
        prompt: a.prompt,
        generate: a.generate,
        reps: a.reps,
    };
    let r = bench::run(&mut runner, spec).map_err(|e| anyhow!("{e}"))?;
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
                                     "device": device, "reps": a.reps, "tests": tests});
        println!("{doc}");
        return Ok(());
    }
    println!("| model | size | device | threads | test | t/s |\n| --- | ---: | --- | ---: | --- | ---: |");
    let name = a.model.display();
    let row = |test: String, rates: &Rates| {
        println!(
            "| {name} | {size_mib:.1} MiB | {device} | {threads} | {test} | {:.2} ± {:.2} |",
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
