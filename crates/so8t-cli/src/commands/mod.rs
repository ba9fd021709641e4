//! One module per subcommand, plus the options they share.

pub mod ab;
pub mod bake;
pub mod bench;
pub mod bench_infer;
pub mod bench_kernels;
pub mod dashboard;
pub mod data;
pub mod eval;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod pipeline;
pub mod pull;
pub mod quickstart;
pub mod rl;
pub mod serve;
pub mod service;
pub mod store;
pub mod train;
pub mod train_status;
pub mod watch;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use so8t_model::so8::{GateMatrices, LayerSelection, RotationMethod, So8Gates};
use so8t_model::Model;

/// Where and in which precision a model runs.
#[derive(clap::Args, Clone, Debug)]
pub struct RuntimeArgs {
    /// Device: auto (CUDA when this build has it and a GPU is present, else CPU), cpu, cuda,
    /// cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute dtype: auto (f32 on CPU, bf16 on CUDA), f32, f16, bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

impl RuntimeArgs {
    /// The candle device.
    pub fn device(&self) -> Result<Device> {
        Ok(so8t_model::device::open(&self.device)?)
    }

    /// The compute dtype on `device`.
    pub fn dtype(&self, device: &Device) -> Result<DType> {
        Ok(match self.dtype.as_str() {
            "auto" if device.is_cpu() => DType::F32,
            "auto" => DType::BF16,
            "f32" | "float32" => DType::F32,
            "f16" | "float16" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            other => bail!("unknown dtype {other:?}, expected auto, f32, f16 or bf16"),
        })
    }

    /// Loads the model folder.
    pub fn load(&self, dir: &std::path::Path) -> Result<Model> {
        let device = self.device()?;
        let dtype = self.dtype(&device)?;
        Model::load(dir, dtype, &device).with_context(|| format!("loading model {}", dir.display()))
    }
}

/// SO(8) gate options shared by `model logits`, `generate` and `bake`.
#[derive(clap::Args, Clone, Debug)]
pub struct GateArgs {
    /// Gates file (safetensors with `layers.{i}.generator` [H/8, 28]).
    #[arg(long)]
    pub gates: Option<PathBuf>,
    /// Blend α: M = (1 − α)I + αR.
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Layers to gate: `all` or a list such as `0,1,4-7` (default: every layer in the file).
    #[arg(long)]
    pub layers: Option<String>,
    /// Rotation map: exp or cayley.
    #[arg(long, default_value = "exp")]
    pub method: String,
}

impl GateArgs {
    /// The gate matrices for `model`, or `None` without `--gates`.
    pub fn matrices(&self, model: &Model) -> Result<Option<GateMatrices>> {
        let Some(path) = &self.gates else {
            if self.layers.is_some() {
                bail!("--layers needs --gates FILE");
            }
            return Ok(None);
        };
        let n = model.cfg.num_hidden_layers;
        let mut gates = So8Gates::load(path, model.cfg.attn_out_dim(), n, model.device())
            .with_context(|| format!("loading gates {}", path.display()))?;
        if let Some(sel) = self.selection()? {
            gates = gates.select(&sel, n)?;
        }
        gates.method = self.method()?;
        let alpha = candle_core::Tensor::new(self.alpha as f32, model.device())?;
        Ok(Some(gates.matrices(&alpha, n)?))
    }

    /// The parsed `--layers`.
    pub fn selection(&self) -> Result<Option<LayerSelection>> {
        Ok(match &self.layers {
            Some(s) => Some(s.parse()?),
            None => None,
        })
    }

    /// The parsed `--method`.
    pub fn method(&self) -> Result<RotationMethod> {
        Ok(self.method.parse()?)
    }
}

/// Parses `1,2,3` into token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse::<u32>()
                .with_context(|| format!("--ids: {x:?} is not a token id"))
        })
        .collect()
}
