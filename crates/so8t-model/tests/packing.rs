//! Packed rows (`Forward::segments`): tokens attend only within their own sequence and positions
//! restart per sequence, so a packed row gives the logits of its sequences run one by one — in
//! inference and training (differentiable) kernels, for plain, GQA and LongRoPE models.

mod common;

use candle_core::{DType, Device, Tensor};
use common::fixture;
use so8t_model::{Config, Forward, Model, RopeScaling, Weights};

fn load(name: &str) -> Model {
    let dir = fixture(name);
    let cfg = Config::from_file(&dir.join("config.json")).unwrap();
    let w = Weights::from_model_dir(&dir).unwrap();
    Model::from_weights(cfg, &w, DType::F32, &Device::Cpu).unwrap()
}

fn logits(
    m: &Model,
    rows: &[Vec<u32>],
    segments: Option<&[Vec<usize>]>,
    train: bool,
) -> Vec<Vec<Vec<f32>>> {
    let t = Tensor::new(rows.to_vec(), &Device::Cpu).unwrap();
    m.forward(
        &t,
        Forward {
            segments,
            train,
            ..Default::default()
        },
    )
    .unwrap()
    .to_vec3()
    .unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn seq(len: usize, start: u32, vocab: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (start + 7 * i) % vocab).collect()
}

#[test]
fn packed_rows_equal_sequences_run_alone() {
    for name in ["phi3-tiny", "llama-gqa-tiny", "phi3-longrope-tiny"] {
        let m = load(name);
        let vocab = m.cfg.vocab_size as u32;
        // Row 0 packs three sequences, row 1 two; the LongRoPE fixture switches to its long
        // factors for sequences longer than its original context, so lengths cross it there.
        let orig = match &m.cfg.rope.scaling {
            RopeScaling::LongRope {
                original_max_position_embeddings,
                ..
            } => *original_max_position_embeddings,
            _ => 8,
        };
        let lens = [vec![5, orig + 3, 4], vec![orig + 4, 8]];
        let mut rows = Vec::new();
        let mut alone = Vec::new();
        for (r, row_lens) in lens.iter().enumerate() {
            let mut row = Vec::new();
            for (i, &n) in row_lens.iter().enumerate() {
                let s = seq(n, 3 + 11 * (r * 3 + i) as u32, vocab);
                alone.push(logits(&m, std::slice::from_ref(&s), None, false).remove(0));
                row.extend(s);
            }
            rows.push(row);
        }
        assert_eq!(rows[0].len(), rows[1].len());
        for train in [false, true] {
            let packed = logits(&m, &rows, Some(&lens), train);
            let mut k = 0;
            for (r, row_lens) in lens.iter().enumerate() {
                let mut at = 0;
                for &n in row_lens {
                    let d = max_diff(&packed[r][at..at + n], &alone[k]);
                    assert!(
                        d < 2e-5,
                        "{name} train={train} row {r} seq at {at}: max |Δ| = {d:e}"
                    );
                    at += n;
                    k += 1;
                }
            }
            // Without segments the same row mixes sequences: the check above can fail.
            let plain = logits(&m, &rows[..1], None, train);
            assert!(
                max_diff(&plain[0][5..], &alone[1]) > 1e-3,
                "{name}: no cross-attention?"
            );
        }
    }
}

#[test]
fn bad_segments_are_errors() {
    let m = load("phi3-tiny");
    let t = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap();
    for segs in [
        vec![vec![1usize, 2]],
        vec![vec![4], vec![4]],
        vec![vec![0, 4]],
    ] {
        let e = m
            .forward(
                &t,
                Forward {
                    segments: Some(&segs),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("do not split"), "{segs:?}: {e}");
    }
}
