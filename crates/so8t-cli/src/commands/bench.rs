//! `so8t bench train`: times SO8T fine-tuning steps (gates + LoRA + PET, AdamW) on random tokens,
//! the same work as `../shared/gpu/torch_so8t_bench.py` does in PyTorch, and prints tokens/s,
//! the step time, the device's peak memory and the model-FLOPs utilization.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use so8t_data::tokenize::Example;
use so8t_model::Model;
use so8t_train::batch::make_batch;
use so8t_train::config::TrainConfig;
use so8t_train::step::Trainer;

/// `bench`.
#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Time SFT steps (SO(8) gates + LoRA + PET, AdamW) on random tokens of a model folder.
    Train(TrainBenchArgs),
    /// The fused CUDA training ops against the composed graph: differences and times.
    Kernels(super::bench_kernels::KernelBenchArgs),
    /// Prompt-processing and generation tokens/s of the serve engine (as llama-bench).
    Infer(super::bench_infer::InferBenchArgs),
}

/// `bench train`.
#[derive(clap::Args)]
pub struct TrainBenchArgs {
    /// HF model folder (e.g. `so8t model init --preset phi3.5-mini --out DIR`).
    #[arg(long)]
    pub model: PathBuf,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute dtype of the frozen base: auto (f32 on CPU, bf16 on CUDA), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Tokens per row.
    #[arg(long, default_value_t = 1024)]
    pub seq: usize,
    /// Rows per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// LoRA rank on qkv_proj, o_proj, gate_up_proj, down_proj (0: no LoRA).
    #[arg(long, default_value_t = 64)]
    pub lora_rank: usize,
    /// SO(8) gate layers: all, none, or a list (`0,5,9`).
    #[arg(long, default_value = "all")]
    pub gates: String,
    /// Leave PET out of the loss.
    #[arg(long)]
    pub no_pet: bool,
    /// Recompute each decoder layer in the backward pass.
    #[arg(long)]
    pub checkpointing: bool,
    /// Storage of the frozen base's linear weights: same (the compute dtype) or int8 (Q8_0
    /// blocks, dequantized per layer on use; `training.base_dtype`).
    #[arg(long, default_value = "same", value_parser = ["same", "int8"])]
    pub base_dtype: String,
    /// Peak dense throughput of the device in TFLOP/s for the MFU figure (H100 SXM bf16: 989).
    #[arg(long, default_value_t = 989.0)]
    pub peak_tflops: f64,
}

/// Runs a bench subcommand.
pub fn run(cmd: BenchCmd, threads: Option<usize>) -> Result<()> {
    match cmd {
        BenchCmd::Train(a) => train(a),
        BenchCmd::Kernels(a) => super::bench_kernels::run(a),
        BenchCmd::Infer(a) => super::bench_infer::run(a, threads),
    }
}

fn train(a: TrainBenchArgs) -> Result<()> {
    if a.seq < 2 || a.batch == 0 || a.steps == 0 {
        bail!("--seq must be at least 2, --batch and --steps at least 1");
    }
    let device = so8t_model::device::open(&a.device)?;
    let rt = super::RuntimeArgs {
        device: a.device.clone(),
        dtype: a.dtype.clone(),
    };
    let dtype = rt.dtype(&device)?;
    let t0 = Instant::now();
    let model = Model::load(&a.model, dtype, &device)
        .with_context(|| format!("loading model {}", a.model.display()))?;
    let (vocab, layers, hidden) = (
        model.cfg.vocab_size,
        model.cfg.num_hidden_layers,
        model.cfg.hidden_size,
    );
    let n_base: usize = model
        .named_tensors()?
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    let mut model = model;
    if a.base_dtype == "int8" {
        let q = so8t_model::quant::quantize_base(&mut model)?;
        eprintln!(
            "int8 base: {} linears, {:.2} -> {:.2} GiB",
            q.quantized,
            q.bytes_before as f64 / (1u64 << 30) as f64,
            q.bytes_after as f64 / (1u64 << 30) as f64
        );
    }
    let mut cfg = TrainConfig::default();
    cfg.training.base_dtype = a.base_dtype.clone();
    cfg.so8t.enabled = a.gates != "none";
    if cfg.so8t.enabled {
        cfg.so8t.layer_indices = a.gates.clone();
    }
    cfg.pet.enabled = !a.no_pet;
    cfg.lora.enabled = a.lora_rank > 0;
    cfg.lora.r = a.lora_rank.max(1);
    cfg.lora.alpha = 2.0 * a.lora_rank as f64;
    cfg.lora.dropout = 0.0;
    cfg.training.gradient_checkpointing = a.checkpointing;
    cfg.optimizer.warmup_steps = 0;
    let total = (a.warmup + a.steps) as u64;
    let mut trainer = Trainer::new(model, cfg.step_config(total))?;
    let n_train: usize = trainer.opt.vars().values().map(|v| v.elem_count()).sum();
    eprintln!(
        "built in {:.1} s on {} ({dtype:?}): base {:.2} B params, trainable {:.1} M, seq {} batch {}, \
         LoRA r={}, gates {}, PET {}, checkpointing {}",
        t0.elapsed().as_secs_f64(),
        so8t_model::device::name_of(&device),
        n_base as f64 / 1e9,
        n_train as f64 / 1e6,
        a.seq,
        a.batch,
        a.lora_rank,
        a.gates,
        !a.no_pet,
        a.checkpointing
    );
    // Random tokens, every position a target (as the PyTorch side).
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let rows: Vec<Example> = (0..a.batch)
        .map(|i| {
            let ids: Vec<u32> = (0..a.seq)
                .map(|_| {
                    state = so8t_model::dropout::mix64(state.wrapping_add(1));
                    (state % vocab as u64) as u32
                })
                .collect();
            Example {
                labels: ids.iter().map(|&x| i64::from(x)).collect(),
                input_ids: ids,
                seq_lens: vec![a.seq],
                ids: vec![format!("bench-{i}")],
            }
        })
        .collect();
    let batch = make_batch(&rows, &device)?;
    let monitor = MemoryMonitor::start(&device);
    let mut loss = 0.0;
    for _ in 0..a.warmup {
        loss = trainer.step(std::slice::from_ref(&batch))?.loss;
    }
    device.synchronize()?;
    monitor.reset();
    let t = Instant::now();
    for _ in 0..a.steps {
        loss = trainer.step(std::slice::from_ref(&batch))?.loss;
    }
    device.synchronize()?;
    let dt = t.elapsed().as_secs_f64() / a.steps as f64;
    let tok = (a.batch * a.seq) as f64 / dt;
    // Model FLOPs per token as the PyTorch side counts them: forward 2N + input gradients 2N (the
    // base is frozen) + attention 12·L·T·H; recomputation not counted.
    let flops = tok * (4.0 * n_base as f64 + 12.0 * (layers * a.seq * hidden) as f64);
    let peak = monitor.stop();
    println!(
        "RESULT so8t seq={} batch={} ckpt={} lora={}{}: {:.0} ms/step, {tok:.0} tokens/s, peak {}, \
         ~{:.0} TFLOP/s model flops (MFU {:.0}% of {:.0}), loss {loss:.3}",
        a.seq,
        a.batch,
        u8::from(a.checkpointing),
        u8::from(a.lora_rank > 0),
        if a.base_dtype == "int8" { " base=int8" } else { "" },
        dt * 1e3,
        peak.map_or("n/a (CPU)".into(), |b| format!(
            "{:.1} GiB",
            b as f64 / (1u64 << 30) as f64
        )),
        flops / 1e12,
        flops / (a.peak_tflops * 1e12) * 100.0,
        a.peak_tflops
    );
    Ok(())
}

/// Samples the device's used memory (total − free) every few milliseconds on a thread and keeps
/// the highest value: the peak of the whole process on that GPU, caching allocator included.
struct MemoryMonitor {
    inner: Option<MonitorThread>,
}

struct MonitorThread {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

impl MemoryMonitor {
    fn start(device: &Device) -> Self {
        let Some(used) = used_memory_fn(device) else {
            return Self { inner: None };
        };
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let peak = std::sync::Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(u) = used() {
                    p.fetch_max(u, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        Self {
            inner: Some(MonitorThread { stop, peak, handle }),
        }
    }

    /// Forgets the peak so far (after the warm-up steps).
    fn reset(&self) {
        if let Some(m) = &self.inner {
            m.peak.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The peak in bytes (None off a GPU).
    fn stop(self) -> Option<u64> {
        let m = self.inner?;
        m.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = m.handle.join();
        Some(m.peak.load(std::sync::atomic::Ordering::Relaxed))
    }
}

type UsedFn = Box<dyn Fn() -> Option<u64> + Send>;

#[cfg(feature = "cuda")]
fn used_memory_fn(device: &Device) -> Option<UsedFn> {
    let Device::Cuda(d) = device else {
        return None;
    };
    let ctx = d.cuda_stream().context().clone();
    Some(Box::new(move || {
        let (free, total) = ctx.mem_get_info().ok()?;
        Some((total - free) as u64)
    }))
}

#[cfg(not(feature = "cuda"))]
fn used_memory_fn(_device: &Device) -> Option<UsedFn> {
    None
}
