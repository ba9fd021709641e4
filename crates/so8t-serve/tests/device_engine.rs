//! The device engine (candle's kernels; here on candle's CPU backend in f32, on a GPU in
//! `bench/gpu_check.py`) against the same references as the native engine: the HF fixtures'
//! transformers logits, incremental/batched/branched decoding against one-shot passes, and —
//! with the llama.cpp peers under `/tmp/peers` — SmolLM2's F16 / Q8_0 / Q4_K_M files and a LoRA
//! adapter against the native engine.

use std::sync::Arc;

mod common;

use candle_core::{DType, Device};
use common::{fixture, max_abs_diff, peers, reference};
use so8t_serve::engine::{BatchEntry, EngineModel, ForwardOut, Runner};

fn on_cpu_backend(model: Arc<EngineModel>) -> Runner {
    let mut layers = 0;
    let r = Runner::on_device(model, &Device::Cpu, DType::F32, &mut |done, _| {
        layers = done
    })
    .expect("device engine on candle's CPU backend");
    assert!(layers > 0, "no upload progress reported");
    r
}

/// max |Δ| / max |b| over all positions.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    max_abs_diff(a, b) / b.iter().fold(0f32, |m, x| m.max(x.abs()))
}

#[test]
fn device_engine_matches_transformers_on_the_fixtures() {
    for name in ["phi3-tiny", "phi3-longrope-tiny", "llama-gqa-tiny"] {
        let model = Arc::new(EngineModel::load(&fixture(name)).unwrap());
        let mut r = on_cpu_backend(model);
        assert_eq!(r.device_name(), "cpu");
        for case in reference(name)["cases"].as_array().unwrap() {
            let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
            let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
            let got = r.logits_all(&ids).unwrap();
            let d = max_abs_diff(&got, &want.concat());
            assert!(d < 1e-4, "{name} ({} tokens): max |Δlogit| {d}", ids.len());
        }
    }
}

fn entry(cache: usize, token: u32, pos: usize) -> BatchEntry {
    BatchEntry {
        cache,
        token,
        pos,
        logits: true,
    }
}

#[test]
fn device_engine_batches_sequences_and_branches_caches() {
    for name in ["llama-gqa-tiny", "phi3-tiny"] {
        let model = Arc::new(EngineModel::load(&fixture(name)).unwrap());
        let vocab = model.cfg.vocab as u32;
        let mut r = on_cpu_backend(model.clone());
        let a: Vec<u32> = (0..21).map(|i| (i * 37 + 5) % vocab).collect();
        let b: Vec<u32> = (0..13).map(|i| (i * 11 + 3) % vocab).collect();
        let (full_a, full_b) = (r.logits_all(&a).unwrap(), r.logits_all(&b).unwrap());
        let row = |full: &[f32], pos: usize| {
            full[pos * vocab as usize..(pos + 1) * vocab as usize].to_vec()
        };
        // a: a prompt of 7 then one token a step; b: a prompt of 3 then one a step, in the same
        // passes (runs of several positions and single tokens of two sequences).
        let (mut ca, mut cb) = (model.new_cache(), model.new_cache());
        let (mut pa, mut pb) = (0usize, 0usize);
        let mut out = ForwardOut::default();
        while pa < 10 {
            let (ta, tb) = (if pa == 0 { 7 } else { 1 }, if pb == 0 { 3 } else { 1 });
            let mut batch: Vec<BatchEntry> = (pa..pa + ta).map(|p| entry(0, a[p], p)).collect();
            batch.extend((pb..pb + tb).map(|p| entry(1, b[p], p)));
            r.forward(&mut [&mut ca, &mut cb], &batch, false, &mut out)
                .unwrap();
            let v = vocab as usize;
            for (k, e) in batch.iter().enumerate() {
                let want = row(if e.cache == 0 { &full_a } else { &full_b }, e.pos);
                let d = max_abs_diff(&out.logits[k * v..(k + 1) * v], &want);
                assert!(d < 1e-4, "{name}: cache {} pos {}: {d}", e.cache, e.pos);
            }
            (pa, pb) = (pa + ta, pb + tb);
        }
        assert_eq!((ca.len, cb.len), (10, 6));
        // Branch a's cache: the original goes on with a's tokens, the branch with b's; each
        // must see only its own keys (the caches share storage until written: copy on write).
        let mut branch = ca.clone();
        r.forward(&mut [&mut ca], &[entry(0, a[10], 10)], false, &mut out)
            .unwrap();
        assert!(
            max_abs_diff(&out.logits, &row(&full_a, 10)) < 1e-4,
            "{name}: original"
        );
        r.forward(&mut [&mut branch], &[entry(0, b[0], 10)], false, &mut out)
            .unwrap();
        let mut prefix: Vec<u32> = a[..10].to_vec();
        prefix.push(b[0]);
        let want_branch = r.logits_all(&prefix).unwrap();
        assert!(
            max_abs_diff(&out.logits, &row(&want_branch, 10)) < 1e-4,
            "{name}: branch"
        );
        r.forward(&mut [&mut ca], &[entry(0, a[11], 11)], false, &mut out)
            .unwrap();
        assert!(
            max_abs_diff(&out.logits, &row(&full_a, 11)) < 1e-4,
            "{name}: the original after the branch wrote"
        );
        // Only some entries want logits; hidden states of all of them.
        let mut c = model.new_cache();
        let batch: Vec<BatchEntry> = (0..5)
            .map(|p| BatchEntry {
                logits: p == 2 || p == 4,
                ..entry(0, a[p], p)
            })
            .collect();
        r.forward(&mut [&mut c], &batch, true, &mut out).unwrap();
        let v = vocab as usize;
        assert_eq!(out.logits.len(), 2 * v);
        assert_eq!(out.hidden.len(), 5 * model.cfg.n_embd);
        assert!(max_abs_diff(&out.logits[v..], &row(&full_a, 4)) < 1e-4);
    }
}

#[test]
fn device_cache_errors_are_reported_not_panics() {
    let model = Arc::new(EngineModel::load(&fixture("phi3-tiny")).unwrap());
    let mut r = on_cpu_backend(model.clone());
    let mut c = model.new_cache();
    let mut out = ForwardOut::default();
    // An entry naming a cache that was not passed.
    let e = r
        .forward(&mut [&mut c], &[entry(1, 3, 0)], false, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("on cpu") && e.contains("cache 1 of 1"), "{e}");
    // The CPU backend computes in f32 only.
    let e = Runner::on_device(model, &Device::Cpu, DType::BF16, &mut |_, _| {})
        .err()
        .expect("bf16 on the CPU backend")
        .to_string();
    assert!(e.contains("f32"), "{e}");
}

#[test]
fn device_engine_matches_the_native_engine_on_quantized_gguf_and_lora() {
    let Some(p) = peers("device_engine_matches_the_native_engine_on_quantized_gguf_and_lora")
    else {
        return;
    };
    let ids: Vec<u32> = vec![
        504, 3575, 282, 4649, 314, 7042, 30, 378, 1345, 2013, 282, 6893, 314,
    ];
    let f16 = p.join("models/smollm2-135m-f16.gguf");
    let reference = Runner::new(Arc::new(EngineModel::load(&f16).unwrap()), 2)
        .logits_all(&ids)
        .unwrap();
    let argmax_last = |v: &[f32]| {
        let last = &v[v.len() - 49152..];
        (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]))
            .unwrap()
    };
    for file in [
        "smollm2-135m-f16.gguf",
        "smollm2-135m-q8_0.gguf",
        "smollm2-135m-q4_k_m.gguf",
    ] {
        let model = Arc::new(EngineModel::load(&p.join("models").join(file)).unwrap());
        let native = Runner::new(model.clone(), 2).logits_all(&ids).unwrap();
        let dev = on_cpu_backend(model).logits_all(&ids).unwrap();
        // Both engines quantize activations for quantized matrices (Q8_0 / Q8_K blocks), and in
        // this small model a flipped rounding moves logits by percents: judge the device engine
        // by its distance to the F16 logits against the native engine's own distance.
        let (d, noise) = (rel(&dev, &reference), rel(&native, &reference));
        eprintln!(
            "{file}: vs the F16 logits, device engine {d:.2e}, native engine {noise:.2e} (device vs native {:.2e})",
            rel(&dev, &native)
        );
        assert!(d < 1.5 * noise + 3e-3, "{file}: {d} (native {noise})");
        assert_eq!(
            argmax_last(&dev),
            argmax_last(&native),
            "{file}: a different next token"
        );
    }
    // A runtime LoRA adapter (llama.cpp's and Ollama's ADAPTER) on the device engine.
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("lora.gguf");
    common::make_lora_adapter(&p, &f16, &adapter);
    let mut model = EngineModel::load(&f16).unwrap();
    model.apply_lora(&adapter, 1.0).unwrap();
    let model = Arc::new(model);
    let native = Runner::new(model.clone(), 2).logits_all(&ids).unwrap();
    let dev = on_cpu_backend(model).logits_all(&ids).unwrap();
    let base = Runner::new(Arc::new(EngineModel::load(&f16).unwrap()), 2)
        .logits_all(&ids)
        .unwrap();
    let (d, moved) = (rel(&dev, &native), rel(&base, &native));
    eprintln!(
        "with the adapter: device vs native {d:.2e}; the adapter moves the logits by {moved:.2e}"
    );
    assert!(d < 2e-3 && moved > 20.0 * d, "{d} / {moved}");
}
