//! The SO(8) rotation gate of spec §1: per selected layer a generator [H/8, 28], rotation
//! R_b = exp(A_b) (or Cayley) per 8-wide block, blend M_b = (1 − α)I + α R_b, applied to the
//! merged attention output right before `o_proj` as z'_b = M_b z_b (column convention).
//!
//! The rotation is a candle custom op: forward and backward run per block in f64 on the host
//! (an 8×8 exponential and its Fréchet derivative), so gradients reach the generators exactly.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::expm::{self, GEN};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// How a generator becomes a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RotationMethod {
    /// R = exp(A) (scaling and squaring, per block).
    #[default]
    Exp,
    /// R = (I − A/2)⁻¹ (I + A/2).
    Cayley,
}

impl std::str::FromStr for RotationMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exp" | "expm" => Ok(Self::Exp),
            "cayley" => Ok(Self::Cayley),
            other => Err(Error::Gate(format!(
                "unknown rotation method {other:?}, expected exp or cayley"
            ))),
        }
    }
}

/// Which decoder layers carry a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    /// Every layer.
    All,
    /// These layer indices.
    List(Vec<usize>),
    /// `spread:K`: K layers evenly spread over the depth, the last layer included (for 32
    /// layers and K = 8: 3, 7, 11, …, 31).
    Spread(usize),
}

impl std::str::FromStr for LayerSelection {
    type Err = Error;
    /// Parses `all`, `spread:K`, or a comma-separated list such as `0,1,5` (ranges `2-4`
    /// allowed).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        if let Some(k) = s.strip_prefix("spread:") {
            return match k.trim().parse::<usize>() {
                Ok(k) if k > 0 => Ok(Self::Spread(k)),
                _ => Err(Error::Gate(format!(
                    "layer selection {s:?}: spread:K needs a count K ≥ 1"
                ))),
            };
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                Error::Gate(format!(
                    "layer selection {s:?}: {part:?} is not an index or a range a-b"
                ))
            };
            if let Some((a, b)) = part.split_once('-') {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            } else {
                out.push(part.parse().map_err(|_| bad())?);
            }
        }
        Ok(Self::List(out))
    }
}

impl LayerSelection {
    /// The sorted layer indices for a model of `num_layers` layers. An empty selection or an
    /// index out of range is an error (never silently no gates).
    pub fn resolve(&self, num_layers: usize) -> Result<Vec<usize>> {
        let mut v = match self {
            Self::All => (0..num_layers).collect(),
            Self::List(l) => l.clone(),
            Self::Spread(k) => {
                let k = (*k).min(num_layers);
                (1..=k).map(|i| i * num_layers / k - 1).collect()
            }
        };
        v.sort_unstable();
        v.dedup();
        if v.is_empty() {
            return Err(Error::Gate(
                "the layer selection is empty; use `all` or list layer indices".into(),
            ));
        }
        if let Some(&bad) = v.iter().find(|&&i| i >= num_layers) {
            return Err(Error::Gate(format!(
                "layer {bad} is out of range: the model has {num_layers} layers (0..={})",
                num_layers.saturating_sub(1)
            )));
        }
        Ok(v)
    }
}

/// The custom op generator [nb, 28] → rotation [nb, 8, 8] (same float dtype, f32 or f64).
#[derive(Debug, Clone, Copy)]
struct RotationOp(RotationMethod);

fn host_values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

impl RotationOp {
    /// The blocks are independent: computed on all cores (same values as one by one).
    fn forward_f64(&self, g: &[f64]) -> Vec<f64> {
        let blocks: Vec<Vec<f64>> = g
            .par_chunks(GEN)
            .map(|row| {
                let a = expm::skew_from_generator(row);
                match self.0 {
                    RotationMethod::Exp => expm::expm(&a, 8),
                    RotationMethod::Cayley => expm::cayley(&a, 8),
                }
            })
            .collect();
        blocks.concat()
    }
}

impl CustomOp1 for RotationOp {
    fn name(&self) -> &'static str {
        "so8-rotation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (nb, k) = l.shape().dims2()?;
        if k != GEN {
            candle_core::bail!("so8 generator must be [nb, {GEN}], got {:?}", l.shape())
        }
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("so8 generator must be contiguous")
        };
        let shape = Shape::from((nb, 8, 8));
        Ok(match s {
            CpuStorage::F32(v) => {
                let g: Vec<f64> = v[start..end].iter().map(|&x| x as f64).collect();
                let r = self.forward_f64(&g).into_iter().map(|x| x as f32).collect();
                (CpuStorage::F32(r), shape)
            }
            CpuStorage::F64(v) => (CpuStorage::F64(self.forward_f64(&v[start..end])), shape),
            _ => candle_core::bail!("so8 generator must be f32 or f64"),
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::{BackendDevice, BackendStorage};
        let cpu = s.to_cpu_storage()?;
        let (out, shape) = self.cpu_fwd(&cpu, l)?;
        let dev = s.device().clone();
        Ok((dev.storage_from_cpu_storage_owned(out)?, shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let to_c = |e: Error| candle_core::Error::Msg(e.to_string());
        let g = host_values(arg).map_err(to_c)?;
        let dr = host_values(grad_res).map_err(to_c)?;
        let out: Vec<f64> = g
            .par_chunks(GEN)
            .zip(dr.par_chunks(64))
            .map(|(row, gr)| {
                let a = expm::skew_from_generator(row);
                let da = match self.0 {
                    RotationMethod::Exp => expm::expm_frechet(&expm::transpose(&a, 8), gr, 8),
                    RotationMethod::Cayley => expm::cayley_grad(&a, gr, 8),
                };
                expm::generator_grad(&da)
            })
            .collect::<Vec<_>>()
            .concat();
        let t = Tensor::from_vec(out, arg.shape(), &Device::Cpu)?
            .to_dtype(arg.dtype())?
            .to_device(arg.device())?;
        Ok(Some(t))
    }
}

/// Rotations [nb, 8, 8] of a generator tensor [nb, 28]; differentiable with respect to it.
/// On the CPU (and for Cayley) a custom op computes them in f64 per block; on a GPU the
/// exponential is composed from batched tensor ops ([`super::composed`]) so that nothing goes
/// through the host.
pub fn rotations(generator: &Tensor, method: RotationMethod) -> Result<Tensor> {
    if method == RotationMethod::Exp && generator.device().is_cuda() {
        return super::composed::rotations_composed(&generator.contiguous()?);
    }
    Ok(generator.contiguous()?.apply_op1(RotationOp(method))?)
}

/// M = (1 − α) I + α R for rotations [nb, 8, 8] and a scalar α tensor (differentiable in both).
pub fn blend(r: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let eye = Tensor::eye(8, r.dtype(), r.device())?.unsqueeze(0)?;
    let alpha = alpha.to_dtype(r.dtype())?.reshape(())?;
    Ok(eye.broadcast_add(&r.broadcast_sub(&eye)?.broadcast_mul(&alpha)?)?)
}

/// Applies per-block matrices M [nb, 8, 8] to z [.., nb·8]: z'_b = M_b z_b.
pub fn apply_blocks(z: &Tensor, m: &Tensor) -> Result<Tensor> {
    let dims = z.dims().to_vec();
    let d = *dims.last().unwrap_or(&0);
    let nb = m.dim(0)?;
    if d != nb * 8 {
        return Err(Error::Gate(format!(
            "gate has {nb} blocks (width {}), activation width is {d}",
            nb * 8
        )));
    }
    let n = z.elem_count() / d;
    let zb = z.reshape((n, nb, 8))?.transpose(0, 1)?.contiguous()?; // [nb, n, 8]
    let mt = m.to_dtype(z.dtype())?.transpose(1, 2)?.contiguous()?; // [nb, 8, 8] = Mᵀ
    let out = zb.matmul(&mt)?; // row convention of (M z)ᵀ = zᵀ Mᵀ
    Ok(out.transpose(0, 1)?.reshape(dims)?)
}

/// W' = W · blockdiag(M): each 8-column block of `w` [out, nb·8] right-multiplied by M_b.
pub fn fold_into_weight(w: &Tensor, m: &Tensor) -> Result<Tensor> {
    let (out, d) = w.dims2()?;
    let nb = m.dim(0)?;
    if d != nb * 8 {
        return Err(Error::Gate(format!(
            "gate has {nb} blocks (width {}), o_proj has {d} input columns",
            nb * 8
        )));
    }
    let wb = w.reshape((out, nb, 8))?.transpose(0, 1)?.contiguous()?; // [nb, out, 8]
    let folded = wb.matmul(&m.to_dtype(w.dtype())?.contiguous()?)?; // [nb, out, 8]
    Ok(folded.transpose(0, 1)?.reshape((out, d))?)
}

/// Per-layer blend matrices handed to the model's forward pass (`None` = no gate on that layer).
#[derive(Debug, Clone)]
pub struct GateMatrices {
    /// Indexed by layer.
    pub layers: Vec<Option<Tensor>>,
}

impl GateMatrices {
    /// The same matrices cut from the autograd graph (for passes that take no gradients).
    pub fn detach(&self) -> Self {
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| l.as_ref().map(Tensor::detach))
                .collect(),
        }
    }
}

/// Orthogonality diagnostics of one layer's rotations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateDiagnostics {
    /// max |RᵀR − I| over blocks and entries.
    pub max_orth_err: f64,
    /// max |det R − 1| over blocks.
    pub max_det_err: f64,
}

/// The SO(8) gates of a model: a generator [H/8, 28] per selected layer.
#[derive(Debug, Clone)]
pub struct So8Gates {
    /// layer index → generator tensor (a `Var` while training).
    pub generators: BTreeMap<usize, Tensor>,
    /// Exponential or Cayley.
    pub method: RotationMethod,
    /// Width the gate acts on (the input width of `o_proj`).
    pub width: usize,
}

impl So8Gates {
    fn check_width(width: usize) -> Result<usize> {
        if width == 0 || !width.is_multiple_of(8) {
            return Err(Error::Gate(format!(
                "the attention output width {width} is not divisible by 8; SO(8) gates need 8-wide blocks"
            )));
        }
        Ok(width / 8)
    }

    /// Random generators, entries ~ N(0, init_scale²) from a seeded RNG (spec default 0.05).
    pub fn random(
        layers: &[usize],
        width: usize,
        init_scale: f64,
        seed: u64,
        method: RotationMethod,
        device: &Device,
    ) -> Result<Self> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let nb = Self::check_width(width)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0, init_scale).map_err(|e| Error::Gate(e.to_string()))?;
        let mut generators = BTreeMap::new();
        for &l in layers {
            let v: Vec<f32> = (0..nb * GEN)
                .map(|_| normal.sample(&mut rng) as f32)
                .collect();
            generators.insert(l, Tensor::from_vec(v, (nb, GEN), device)?);
        }
        Ok(Self {
            generators,
            method,
            width,
        })
    }

    /// Reads `layers.{i}.generator` [width/8, 28] tensors from a gates file; other tensors in the
    /// file are ignored. Layers beyond `num_layers` or wrong shapes are errors naming the tensor.
    pub fn load(path: &Path, width: usize, num_layers: usize, device: &Device) -> Result<Self> {
        let nb = Self::check_width(width)?;
        let w = Weights::from_files(&[path.to_path_buf()])?;
        let mut generators = BTreeMap::new();
        for name in w.names() {
            let Some(rest) = name.strip_prefix("layers.") else {
                continue;
            };
            let Some((idx, field)) = rest.split_once('.') else {
                continue;
            };
            if field != "generator" {
                continue;
            }
            let layer: usize = idx.parse().map_err(|_| Error::Config {
                path: path.to_path_buf(),
                msg: format!("tensor `{name}`: `{idx}` is not a layer index"),
            })?;
            if layer >= num_layers {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    msg: format!("tensor `{name}`: layer {layer} is out of range for a model with {num_layers} layers"),
                });
            }
            let t = w.get(&name, &[nb, GEN], DType::F32, device)?;
            generators.insert(layer, t);
        }
        if generators.is_empty() {
            return Err(Error::Config {
                path: path.to_path_buf(),
                msg: "no `layers.{i}.generator` tensors found (expected shape [H/8, 28] f32)"
                    .into(),
            });
        }
        Ok(Self {
            generators,
            method: RotationMethod::Exp,
            width,
        })
    }

    /// Writes the gates in the interchange format (`layers.{i}.generator`, f32), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = BTreeMap::new();
        for (l, g) in &self.generators {
            map.insert(
                format!("layers.{l}.generator"),
                g.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
            );
        }
        crate::io::write_safetensors(path, &map)
    }

    /// Keeps only the selected layers; selecting a layer without a generator is an error.
    pub fn select(&self, selection: &LayerSelection, num_layers: usize) -> Result<Self> {
        let layers = selection.resolve(num_layers)?;
        let mut generators = BTreeMap::new();
        for l in layers {
            let g = self.generators.get(&l).ok_or_else(|| {
                Error::Gate(format!(
                    "layer {l} is selected but the gates have generators only for layers {:?}",
                    self.generators.keys().collect::<Vec<_>>()
                ))
            })?;
            generators.insert(l, g.clone());
        }
        Ok(Self {
            generators,
            ..self.clone()
        })
    }

    /// The rotation R [nb, 8, 8] of every gated layer. All layers go through one [`rotations`]
    /// call (forward and backward), however many are gated: on the CPU one pass of the f64 op,
    /// on a GPU one batch of composed kernels.
    pub fn rotations(&self) -> Result<BTreeMap<usize, Tensor>> {
        if self.generators.is_empty() {
            return Ok(BTreeMap::new());
        }
        let gens: Vec<&Tensor> = self.generators.values().collect();
        let all = rotations(&Tensor::cat(&gens, 0)?, self.method)?;
        let mut out = BTreeMap::new();
        let mut at = 0;
        for (&l, g) in &self.generators {
            let nb = g.dim(0)?;
            out.insert(l, all.narrow(0, at, nb)?);
            at += nb;
        }
        Ok(out)
    }

    /// The blend matrices M for the forward pass of a model with `num_layers` layers.
    pub fn matrices(&self, alpha: &Tensor, num_layers: usize) -> Result<GateMatrices> {
        Self::matrices_from(&self.rotations()?, alpha, num_layers)
    }

    /// The blend matrices M of given rotations (layer → R, as [`Self::rotations`] returns).
    pub fn matrices_from(
        rotations: &BTreeMap<usize, Tensor>,
        alpha: &Tensor,
        num_layers: usize,
    ) -> Result<GateMatrices> {
        let mut layers = vec![None; num_layers];
        for (&l, r) in rotations {
            let slot = layers.get_mut(l).ok_or_else(|| {
                Error::Gate(format!(
                    "gate for layer {l}, but the model has {num_layers} layers"
                ))
            })?;
            *slot = Some(blend(r, alpha)?);
        }
        Ok(GateMatrices { layers })
    }

    /// Orthogonality and determinant errors of each layer's rotations.
    pub fn diagnostics(&self) -> Result<BTreeMap<usize, GateDiagnostics>> {
        let mut out = BTreeMap::new();
        for (l, r) in self.rotations()? {
            let v = host_values(&r)?;
            let mut d = GateDiagnostics {
                max_orth_err: 0.0,
                max_det_err: 0.0,
            };
            for block in v.chunks(64) {
                let rtr = expm::matmul(&expm::transpose(block, 8), block, 8);
                for (x, i) in rtr.iter().zip(expm::eye(8)) {
                    d.max_orth_err = d.max_orth_err.max((x - i).abs());
                }
                d.max_det_err = d.max_det_err.max((expm::det(block, 8) - 1.0).abs());
            }
            out.insert(l, d);
        }
        Ok(out)
    }

    /// L_orth = reg · mean over blocks of ‖RᵀR − I‖²_F, summed over layers (differentiable).
    pub fn orthogonality_loss(&self, reg: f64) -> Result<Option<Tensor>> {
        Self::orthogonality_loss_from(&self.rotations()?, reg)
    }

    /// L_orth of given rotations (layer → R, as [`Self::rotations`] returns).
    pub fn orthogonality_loss_from(
        rotations: &BTreeMap<usize, Tensor>,
        reg: f64,
    ) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for r in rotations.values() {
            let eye = Tensor::eye(8, r.dtype(), r.device())?.unsqueeze(0)?;
            let rtr = r.transpose(1, 2)?.matmul(r)?.broadcast_sub(&eye)?;
            let per_block = rtr.sqr()?.sum(D::Minus1)?.sum(D::Minus1)?; // [nb]
            let l = (per_block.mean_all()? * reg)?;
            total = Some(match total {
                Some(t) => (t + l)?,
                None => l,
            });
        }
        Ok(total)
    }
}
