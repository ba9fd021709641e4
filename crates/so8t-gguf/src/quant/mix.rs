//! The Q4_K_M type mix: which ggml type each tensor gets, mirroring `llama_tensor_get_type` in
//! llama.cpp's `src/llama-quant.cpp` for `LLAMA_FTYPE_MOSTLY_Q4_K_M` without overrides
//! (no `--pure`, `--output-tensor-type`, `--token-embedding-type` or `--tensor-type`).
//!
//! The rules, in llama.cpp's order:
//! - tensors llama.cpp does not quantize (fewer than 2 dims, names not ending in `weight`,
//!   `*_norm.weight`, `ffn_gate_inp.weight`, `rope_freqs`/`rope_factors_*` which are 1-D, …)
//!   keep their source type;
//! - `output.weight`, and `token_embd.weight` when the output is tied to it: Q6_K, or Q8_0 when
//!   `ne0 % 256 != 0` or the architecture is Falcon;
//! - `attn_v`, `attn_qkv` (fused Phi-3) and `attn_kv_b`: Q6_K for "use more bits" indices (the
//!   first and last eighth and every third between), Q4_K otherwise; Q5_K instead of Q4_K in a
//!   Llama-70B shape; Q8_0 with 8 experts;
//! - `attn_k`: Q8_0 with 8 experts; `attn_output`: Q5_K with 8 experts (not Falcon);
//! - `ffn_down`: Q6_K on "use more bits" layers (Falcon: Q6_K on the first 16th, Q5_K on the
//!   "more bits" layers, Q4_K elsewhere);
//! - everything else Q4_K;
//! - then the shape fallback when `ne0` is not a multiple of the block size: Q4_K → Q5_0,
//!   Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, and F16 when even that does not fit.

use super::GgmlType;

/// The GGUF key that holds the file type.
pub const FILE_TYPE_KEY: &str = "general.file_type";

/// llama.cpp's `llama_ftype` values that so8t writes into `general.file_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    /// `LLAMA_FTYPE_ALL_F32` (0).
    AllF32,
    /// `LLAMA_FTYPE_MOSTLY_F16` (1).
    MostlyF16,
    /// `LLAMA_FTYPE_MOSTLY_Q4_0` (2).
    MostlyQ4_0,
    /// `LLAMA_FTYPE_MOSTLY_Q8_0` (7).
    MostlyQ8_0,
    /// `LLAMA_FTYPE_MOSTLY_Q5_0` (8).
    MostlyQ5_0,
    /// `LLAMA_FTYPE_MOSTLY_Q4_K_M` (15).
    MostlyQ4_K_M,
    /// `LLAMA_FTYPE_MOSTLY_Q6_K` (18).
    MostlyQ6_K,
    /// `LLAMA_FTYPE_MOSTLY_BF16` (32).
    MostlyBF16,
}

impl FileType {
    /// The id stored under [`FILE_TYPE_KEY`].
    pub fn id(self) -> u32 {
        match self {
            FileType::AllF32 => 0,
            FileType::MostlyF16 => 1,
            FileType::MostlyQ4_0 => 2,
            FileType::MostlyQ8_0 => 7,
            FileType::MostlyQ5_0 => 8,
            FileType::MostlyQ4_K_M => 15,
            FileType::MostlyQ6_K => 18,
            FileType::MostlyBF16 => 32,
        }
    }

    /// The file type named like `llama-quantize`'s type argument (`Q4_K_M`, `Q8_0`, `F16`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.to_ascii_uppercase();
        Some(match n.as_str() {
            "F32" => FileType::AllF32,
            "F16" => FileType::MostlyF16,
            "BF16" => FileType::MostlyBF16,
            "Q4_0" => FileType::MostlyQ4_0,
            "Q8_0" => FileType::MostlyQ8_0,
            "Q5_0" => FileType::MostlyQ5_0,
            "Q4_K_M" => FileType::MostlyQ4_K_M,
            "Q6_K" => FileType::MostlyQ6_K,
            _ => return None,
        })
    }

    /// The base tensor type (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::AllF32 => GgmlType::F32,
            FileType::MostlyF16 => GgmlType::F16,
            FileType::MostlyBF16 => GgmlType::BF16,
            FileType::MostlyQ4_0 => GgmlType::Q4_0,
            FileType::MostlyQ8_0 => GgmlType::Q8_0,
            FileType::MostlyQ5_0 => GgmlType::Q5_0,
            FileType::MostlyQ4_K_M => GgmlType::Q4_K,
            FileType::MostlyQ6_K => GgmlType::Q6_K,
        }
    }
}

/// What the Q4_K_M rules need to know about the model and about one tensor.
///
/// Model fields stay fixed for a file; the per-tensor fields (`i_attn_v`, `i_ffn_down`, `ne0`,
/// `n_dims`, `src_type`) change per call. [`q4_k_m_plan`] fills them in llama.cpp's order.
#[derive(Debug, Clone)]
pub struct MixContext {
    /// `general.architecture` (`llama`, `phi3`, `falcon`, …).
    pub arch: String,
    /// Number of transformer blocks (`n_ffn_down` in llama.cpp is this too).
    pub n_layer: usize,
    /// Experts per MoE layer (0 or 1 for dense models).
    pub n_expert: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Key/value heads (GQA).
    pub n_head_kv: usize,
    /// The output projection is tied to `token_embd.weight` (the file has no `output.weight`).
    pub tied_embeddings: bool,
    /// Number of `attn_v`/`attn_qkv`/`attn_kv_b` tensors in the file.
    pub n_attn_v: usize,
    /// Index of this tensor among them, in llama.cpp's order (by layer, then name).
    pub i_attn_v: usize,
    /// Index of this `ffn_down` tensor among the model's `ffn_down` tensors (dense models).
    pub i_ffn_down: usize,
    /// Row length (`ne[0]`, the innermost dimension; the HF `in_features`).
    pub ne0: usize,
    /// Number of dimensions of the tensor.
    pub n_dims: usize,
    /// The type the tensor has in the source file; tensors left unquantized keep it.
    pub src_type: GgmlType,
}

impl MixContext {
    /// A context for a dense model, with per-tensor fields zeroed (`src_type` F32).
    pub fn new(arch: &str, n_layer: usize, n_head: usize, n_head_kv: usize, tied: bool) -> Self {
        MixContext {
            arch: arch.to_string(),
            n_layer,
            n_expert: 0,
            n_head,
            n_head_kv,
            tied_embeddings: tied,
            n_attn_v: n_layer,
            i_attn_v: 0,
            i_ffn_down: 0,
            ne0: 0,
            n_dims: 2,
            src_type: GgmlType::F32,
        }
    }

    fn is_llama_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        Category::AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        Category::AttnKvB
    } else if name.contains("attn_v.weight") {
        Category::AttnV
    } else if name.contains("attn_k.weight") {
        Category::AttnK
    } else if name.contains("attn_q.weight") {
        Category::AttnQ
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_up") {
        Category::FfnUp
    } else if name.contains("ffn_gate") {
        Category::FfnGate
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

fn is_attn_v_like(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// Name fragments of tensors llama.cpp never quantizes (`tensor_allows_quantization`).
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// Whether llama.cpp would quantize this tensor at all (2+ dims, a `weight`, not a norm, …).
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    n_dims >= 2
        && name.ends_with("weight")
        && !NEVER_QUANTIZED.iter().any(|f| name.contains(f))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// "Use more bits" layers: the first and last eighth, and every third layer between.
pub fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The layer of `blk.N.…`, if the name has one.
pub fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("blk.")?;
    let end = rest.find('.')?;
    rest[..end].parse().ok()
}

/// llama.cpp's `tensor_type_fallback`: a type whose block fits `ne0` (F16 as last resort).
pub fn fallback_type(target: GgmlType, ne0: usize) -> GgmlType {
    if ne0.is_multiple_of(target.block_size()) {
        return target;
    }
    let ret = match target {
        GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::Q4_0,
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if !ne0.is_multiple_of(ret.block_size()) {
        GgmlType::F16
    } else {
        ret
    }
}

/// The type llama.cpp's Q4_K_M mix gives tensor `name` (see the module docs for the rules).
pub fn q4_k_m_type(name: &str, ctx: &MixContext) -> GgmlType {
    if !allows_quantization(name, ctx.n_dims) {
        return ctx.src_type;
    }
    let cat = category(name);
    let falcon = ctx.arch == "falcon";
    let mut t = GgmlType::Q4_K;
    if cat == Category::Output || (ctx.tied_embeddings && cat == Category::TokenEmbd) {
        t = if falcon || !ctx.ne0.is_multiple_of(GgmlType::Q4_K.block_size()) {
            GgmlType::Q8_0
        } else {
            GgmlType::Q6_K
        };
    } else if cat == Category::TokenEmbd {
        // untied embeddings keep the base type
    } else if is_attn_v_like(cat) {
        if use_more_bits(ctx.i_attn_v, ctx.n_attn_v) {
            t = GgmlType::Q6_K;
        }
        if ctx.is_llama_70b() && t == GgmlType::Q4_K {
            t = GgmlType::Q5_K;
        }
        if ctx.n_expert == 8 {
            t = GgmlType::Q8_0;
        }
    } else if cat == Category::AttnK {
        if ctx.n_expert == 8 {
            t = GgmlType::Q8_0;
        }
    } else if cat == Category::FfnDown {
        let i_layer = if ctx.n_expert > 1 {
            layer_of(name).unwrap_or(ctx.i_ffn_down)
        } else {
            ctx.i_ffn_down
        };
        let n_layer = ctx.n_layer;
        if falcon {
            t = if i_layer < n_layer / 16 {
                GgmlType::Q6_K
            } else if use_more_bits(i_layer, n_layer) {
                GgmlType::Q5_K
            } else {
                GgmlType::Q4_K
            };
        } else if use_more_bits(i_layer, n_layer) {
            t = GgmlType::Q6_K;
        }
    } else if cat == Category::AttnOutput && !falcon && ctx.n_expert == 8 {
        t = GgmlType::Q5_K;
    }
    fallback_type(t, ctx.ne0)
}

/// llama.cpp's tensor order (`weight_name_comparer`): by `blk.N` layer (none first), then name.
fn llama_order(a: &str, b: &str) -> std::cmp::Ordering {
    let la = layer_of(a).map_or(-1, |l| l as i64);
    let lb = layer_of(b).map_or(-1, |l| l as i64);
    la.cmp(&lb).then_with(|| a.cmp(b))
}

/// The Q4_K_M type of every tensor of a file, given as `(name, ggml shape with ne0 first)`.
///
/// `model` supplies the model fields (its per-tensor fields and `tied_embeddings`/`n_attn_v`
/// are recomputed here: tied when there is no `output.weight`). Tensors keep `model.src_type`
/// when they are not quantized. Results are in the input order.
pub fn q4_k_m_plan(model: &MixContext, tensors: &[(&str, &[usize])]) -> Vec<GgmlType> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| llama_order(tensors[a].0, tensors[b].0));
    let mut ctx = model.clone();
    ctx.tied_embeddings = !tensors.iter().any(|(n, _)| *n == "output.weight");
    ctx.n_attn_v = tensors
        .iter()
        .filter(|(n, _)| is_attn_v_like(category(n)))
        .count();
    ctx.i_attn_v = 0;
    ctx.i_ffn_down = 0;
    let mut out = vec![GgmlType::F32; tensors.len()];
    for i in order {
        let (name, shape) = tensors[i];
        ctx.ne0 = shape.first().copied().unwrap_or(0);
        ctx.n_dims = shape.iter().rposition(|&d| d != 1).map_or(1, |p| p + 1);
        out[i] = q4_k_m_type(name, &ctx);
        if allows_quantization(name, ctx.n_dims) {
            let cat = category(name);
            let routed = cat == Category::Output || cat == Category::TokenEmbd;
            if !routed && is_attn_v_like(cat) {
                ctx.i_attn_v += 1;
            } else if !routed && cat == Category::FfnDown {
                ctx.i_ffn_down += 1;
            }
        }
    }
    out
}
