//! `so8t bench kernels`: each fused training op (RMSNorm, masked softmax, SwiGLU, rotary
//! embedding, the SO(8) gate's block rotation) against the composed candle graph it replaces, on the device: the largest
//! difference of the outputs and of the input gradients (through a random upstream gradient),
//! and the time of forward + backward of each.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var, D};
use so8t_model::{composite, fused, AttentionMask};

/// The composed gate rotation (`so8::apply_blocks`) as a candle result.
fn apply_blocks(z: &Tensor, m: &Tensor) -> candle_core::Result<Tensor> {
    so8t_model::so8::apply_blocks(z, m).map_err(candle_core::Error::wrap)
}

/// `bench kernels`.
#[derive(clap::Args)]
pub struct KernelBenchArgs {
    /// Device: auto, cpu, cuda, cuda:N (the fused ops run on CUDA only).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32 or bf16.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Batch × sequence of the shapes (Phi-3.5-mini: hidden 3072, 32 heads of 96, ffn 8192).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 1024)]
    pub seq: usize,
    /// Timed repetitions.
    #[arg(long, default_value_t = 20)]
    pub reps: usize,
}

/// A tensor function under test.
type OpFn = Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>;

/// One op: its composed and fused forms on the same input.
struct Case {
    name: String,
    input: Tensor,
    composed: OpFn,
    fused: OpFn,
}

/// A fused op's result, or an error where it did not apply.
fn applied(r: so8t_model::Result<Option<Tensor>>) -> candle_core::Result<Tensor> {
    r.map_err(candle_core::Error::wrap)?
        .ok_or_else(|| candle_core::Error::Msg("the fused op did not apply".into()))
}

/// Runs `bench kernels`.
pub fn run(a: KernelBenchArgs) -> Result<()> {
    let dev = so8t_model::device::open(&a.device)?;
    let dt = match a.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        o => bail!("--dtype {o:?}: expected f32 or bf16"),
    };
    let probe = Tensor::zeros(1, dt, &dev)?;
    if !fused::applies(&probe) {
        bail!(
            "the fused kernels do not run on {} in {dt:?} (they need a CUDA build and a GPU; \
             SO8T_FUSED=0 turns them off)",
            so8t_model::device::name_of(&dev)
        );
    }
    let (b, t, h, nh, hd, ffn) = (a.batch, a.seq, 3072, 32, 96, 8192);
    let n = b * t;
    let rnd = |shape: &[usize], scale: f64| -> Result<Tensor> {
        Ok((Tensor::randn(0f32, 1f32, shape, &dev)? * scale)?.to_dtype(dt)?)
    };
    let w = (rnd(&[h], 0.1)?.to_dtype(DType::F32)? + 1.0)?.to_dtype(dt)?;
    let eps = 1e-5f32;
    let mut m = vec![0f32; t * t];
    for i in 0..t {
        for j in i + 1..t {
            m[i * t + j] = f32::MIN;
        }
    }
    let mask = Tensor::from_vec(m, (1, 1, t, t), &dev)?;
    let half = hd / 2;
    let pos = Tensor::arange(0u32, t as u32, &dev)?.to_dtype(DType::F32)?;
    let inv = Tensor::from_vec(
        (0..half)
            .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
            .collect::<Vec<_>>(),
        (1, half),
        &dev,
    )?;
    let ang = pos.unsqueeze(1)?.broadcast_mul(&inv)?;
    let (cos, sin) = (ang.cos()?, ang.sin()?);
    // Near-identity gate matrices (f32, as the trainer makes them) and a gate input.
    let gate_m = (Tensor::eye(8, DType::F32, &dev)?.broadcast_as((h / 8, 8, 8))?
        + (Tensor::randn(0f32, 1f32, (h / 8, 8, 8), &dev)? * 0.1)?)?;
    let gate_z = rnd(&[n, h], 1.0)?;
    let heads = composite::Heads {
        heads: nh,
        kv_heads: nh,
        head_dim: hd,
    };
    let cases = vec![
        Case {
            name: "rms-norm [4096, 3072]".into(),
            input: rnd(&[n, h], 1.0)?,
            composed: {
                let w = w.clone();
                Box::new(move |x| {
                    let xf = x.to_dtype(DType::F32)?;
                    let r = (xf.sqr()?.mean_keepdim(D::Minus1)? + f64::from(eps))?.sqrt()?;
                    xf.broadcast_div(&r)?.to_dtype(x.dtype())?.broadcast_mul(&w)
                })
            },
            fused: {
                let w = w.clone();
                Box::new(move |x| applied(fused::rms_norm(x, &w, eps)))
            },
        },
        Case {
            name: "softmax + causal mask [4, 32, 1024, 1024]".into(),
            input: rnd(&[b, nh, t, t], 3.0)?,
            composed: {
                let mask = mask.clone();
                Box::new(move |x| {
                    let a = x.to_dtype(DType::F32)?.broadcast_add(&mask)?;
                    candle_nn::ops::softmax(&a, D::Minus1)?.to_dtype(x.dtype())
                })
            },
            fused: {
                let mask = mask.clone();
                Box::new(move |x| applied(fused::softmax(x, Some(&mask))))
            },
        },
        Case {
            name: "swiglu [4096, 2·8192]".into(),
            input: rnd(&[n, 2 * ffn], 1.0)?,
            composed: Box::new(move |gu| {
                let g = gu.narrow(D::Minus1, 0, ffn)?;
                let u = gu.narrow(D::Minus1, ffn, ffn)?;
                g.silu()? * u
            }),
            fused: Box::new(|gu| applied(fused::swiglu(gu))),
        },
        Case {
            name: "rope [4, 32, 1024, 96]".into(),
            input: rnd(&[b, nh, t, hd], 1.0)?,
            composed: {
                let (c, s) = (
                    Tensor::cat(&[&cos, &cos], D::Minus1)?.to_dtype(dt)?,
                    Tensor::cat(&[&sin, &sin], D::Minus1)?.to_dtype(dt)?,
                );
                Box::new(move |x| {
                    let x1 = x.narrow(D::Minus1, 0, half)?;
                    let x2 = x.narrow(D::Minus1, half, half)?;
                    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
                    x.broadcast_mul(&c)? + rot.broadcast_mul(&s)?
                })
            },
            fused: {
                let (c, s) = (cos.clone(), sin.clone());
                Box::new(move |x| applied(fused::rope(x, &c, &s)))
            },
        },
        Case {
            name: "attention node (layout kernels) [4, 1024, 3·3072]".into(),
            input: rnd(&[b, t, 3 * nh * hd], 1.0)?,
            composed: {
                let (c, s, m) = (cos.clone(), sin.clone(), mask.clone());
                Box::new(move |x| {
                    composite::attention_composed(x, heads, &c, &s, Some(&m))
                        .map_err(candle_core::Error::wrap)
                })
            },
            fused: {
                let (c, s) = (cos.clone(), sin.clone());
                let m = AttentionMask::new(Some(mask.clone()), None);
                Box::new(move |x| {
                    composite::attention(x, heads, &c, &s, &m).map_err(candle_core::Error::wrap)
                })
            },
        },
        Case {
            name: "so8 gate, dz [4096, 3072]".into(),
            input: rnd(&[n, h], 1.0)?,
            composed: {
                let m = gate_m.clone();
                Box::new(move |z| apply_blocks(z, &m))
            },
            fused: {
                let m = gate_m.clone();
                Box::new(move |z| applied(fused::apply_blocks(z, &m)))
            },
        },
        Case {
            name: "so8 gate, dM [384, 8, 8]".into(),
            input: gate_m.clone(),
            composed: {
                let z = gate_z.clone();
                Box::new(move |m| apply_blocks(&z, m))
            },
            fused: {
                let z = gate_z.clone();
                Box::new(move |m| applied(fused::apply_blocks(&z, m)))
            },
        },
    ];
    let mut cases = cases;
    // Flash attention (bf16): Phi-3.5's heads (causal, and packed rows of three sequences),
    // then grouped-query heads of 128 (Llama 3) and 64 (SmolLM2) wide.
    let flash_shapes = [
        (heads, vec![t]),
        (heads, vec![t / 2, t / 4, t - t / 2 - t / 4]),
        (
            composite::Heads {
                heads: 32,
                kv_heads: 8,
                head_dim: 128,
            },
            vec![t],
        ),
        (
            composite::Heads {
                heads: 9,
                kv_heads: 3,
                head_dim: 64,
            },
            vec![t / 3, t - t / 3],
        ),
    ];
    for (heads, segments) in flash_shapes {
        if dt == DType::BF16 {
            cases.push(flash_case(&dev, dt, b, heads, &segments)?);
        }
    }
    println!(
        "fused ops vs the composed graph on {} in {dt:?} (batch {b} × seq {t}), {} reps",
        so8t_model::device::name_of(&dev),
        a.reps
    );
    println!("| op | max |Δ| out / max |out| | max |Δ| grad / max |grad| | composed fwd+bwd | fused fwd+bwd | speed-up |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for c in &cases {
        let x = Var::from_tensor(&c.input)?;
        let up = rnd((c.composed)(&c.input)?.dims(), 1.0)?;
        let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| -> Result<(Tensor, Tensor)> {
            let y = f(x.as_tensor())?;
            let loss = (y.to_dtype(DType::F32)? * up.to_dtype(DType::F32)?)?.sum_all()?;
            let g = loss.backward()?;
            let gx = g
                .get(x.as_tensor())
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no gradient"))?;
            Ok((y, gx))
        };
        let (y0, g0) = run(&*c.composed)?;
        let (y1, g1) = run(&*c.fused)?;
        let rel = |a: &Tensor, b: &Tensor| -> Result<f64> {
            let a = a.to_dtype(DType::F32)?;
            let d = (&a - b.to_dtype(DType::F32)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            let m = a.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-30);
            Ok(f64::from(d / m))
        };
        let (ey, eg) = (rel(&y0, &y1)?, rel(&g0, &g1)?);
        let time = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| -> Result<f64> {
            run(f)?;
            dev.synchronize()?;
            let s = Instant::now();
            for _ in 0..a.reps {
                run(f)?;
            }
            dev.synchronize()?;
            Ok(s.elapsed().as_secs_f64() * 1e3 / a.reps as f64)
        };
        let (tc, tf) = (time(&*c.composed)?, time(&*c.fused)?);
        println!(
            "| {} | {ey:.1e} | {eg:.1e} | {tc:.2} ms | {tf:.2} ms | {:.1}× |",
            c.name,
            tc / tf
        );
    }
    adamw_check(&dev, a.reps)
}

/// The attention node with flash kernels against the composed attention (additive mask), for
/// rows of `b` × the sequences `segments` (each causal, one window of keys per query).
fn flash_case(
    dev: &candle_core::Device,
    dt: DType,
    b: usize,
    heads: composite::Heads,
    segments: &[usize],
) -> Result<Case> {
    let t: usize = segments.iter().sum();
    let hd = heads.head_dim;
    let (mut mask, mut windows) = (vec![f32::MIN; t * t], Vec::with_capacity(b * t * 2));
    let mut start = 0;
    for &len in segments {
        for q in start..start + len {
            mask[q * t + start..=q * t + q].fill(0.0);
            windows.extend([start as u32, q as u32]);
        }
        start += len;
    }
    let mask = Tensor::from_vec(mask, (1, 1, t, t), dev)?;
    let windows = Tensor::from_vec(windows.repeat(b), (b, t, 2), dev)?;
    // Rotary tables with positions restarting at every sequence, as packing makes them.
    let pos: Vec<f32> = segments
        .iter()
        .flat_map(|&n| (0..n).map(|p| p as f32))
        .collect();
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let ang = Tensor::from_vec(pos, (t, 1), dev)?.broadcast_mul(&Tensor::from_vec(
        inv,
        (1, hd / 2),
        dev,
    )?)?;
    let (cos, sin) = (ang.cos()?, ang.sin()?);
    let w = (heads.heads + 2 * heads.kv_heads) * hd;
    let input = (Tensor::randn(0f32, 1f32, (b, t, w), dev)?).to_dtype(dt)?;
    let (c, s, m) = (cos.clone(), sin.clone(), mask);
    let (c2, s2, mask2) = (cos, sin, AttentionMask::new(None, Some(windows)));
    Ok(Case {
        name: format!(
            "attention node, flash: {}/{} heads of {hd}, sequences {segments:?} [{b}, {t}, {w}]",
            heads.heads, heads.kv_heads
        ),
        input,
        composed: Box::new(move |x| {
            composite::attention_composed(x, heads, &c, &s, Some(&m))
                .map_err(candle_core::Error::wrap)
        }),
        fused: Box::new(move |x| {
            if !fused::flash::flash_applies(x, heads.head_dim) {
                candle_core::bail!("the flash kernels do not apply (bf16 on CUDA only)")
            }
            composite::attention(x, heads, &c2, &s2, &mask2).map_err(candle_core::Error::wrap)
        }),
    })
}

/// One AdamW step of a LoRA-sized f32 parameter [64, 3072] (third step: moments present,
/// weight decay, a clipping factor) by the fused kernel against the formula in tensor ops.
fn adamw_check(dev: &candle_core::Device, reps: usize) -> Result<()> {
    let shape = (64, 3072);
    let r =
        |s: f32| -> Result<Tensor> { Ok((Tensor::randn(0f32, 1f32, shape, dev)? * f64::from(s))?) };
    let (p, g, m) = (r(0.02)?, r(1e-3)?, r(1e-4)?);
    let v = r(1e-4)?.sqr()?;
    let (lr, b1, b2, eps, wd, scale) = (2e-4, 0.9, 0.999, 1e-8, 0.01, 0.5);
    let (bc1, bc2) = (1.0 - b1 * b1 * b1, 1.0 - b2 * b2 * b2);
    let composed = || -> Result<[Tensor; 3]> {
        let g = (&g * scale)?;
        let m1 = ((&m * b1)? + (&g * (1.0 - b1))?)?;
        let v1 = ((&v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
        let upd = ((&m1 / bc1)? / ((&v1 / bc2)?.sqrt()? + eps)?)?;
        let p1 = ((&p * (1.0 - lr * wd))? - (upd * lr)?)?;
        Ok([p1, m1, v1])
    };
    let step = fused::AdamStep {
        lr,
        beta1: b1,
        beta2: b2,
        eps,
        decay: wd,
        bias_correction: (bc1, bc2),
        grad_scale: scale,
    };
    let fused_step = || -> Result<Tensor> {
        fused::adamw(&p, &g, Some((&m, &v)), &step)?
            .ok_or_else(|| anyhow::anyhow!("the fused AdamW did not apply"))
    };
    let want = composed()?;
    let got = fused_step()?;
    let mut diffs = Vec::new();
    for (i, w) in want.iter().enumerate() {
        let d = (w - got.get(i)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let mx = w.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-30);
        diffs.push(format!("{:.1e}", d / mx));
    }
    let time = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
        f()?;
        dev.synchronize()?;
        let s = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        dev.synchronize()?;
        Ok(s.elapsed().as_secs_f64() * 1e3 / reps as f64)
    };
    let tc = time(&|| composed().map(|_| ()))?;
    let tf = time(&|| fused_step().map(|_| ()))?;
    println!(
        "| adamw [64, 3072] (p / m / v) | {} | | {tc:.3} ms | {tf:.3} ms | {:.1}× |",
        diffs.join(" / "),
        tc / tf
    );
    Ok(())
}
