//! Training batches from `data tokenize` rows: right-padded ids, attention and label masks, and
//! the packed sequences of each row (attention stays inside each; see `Forward::segments`).

use candle_core::{Device, Tensor};
use so8t_data::tokenize::{Example, IGNORE};

use crate::error::{Error, Result};

/// One batch on a device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, T]` u32 token ids (padding 0).
    pub input_ids: Tensor,
    /// `[B, T]` u32: 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[B, T]` u32: 1 where the token is a training target.
    pub label_mask: Tensor,
    /// Per row, the lengths of its sequences, the padding as a last one (None if no row is
    /// packed: plain causal attention with the padding mask is then the same).
    pub segments: Option<Vec<Vec<usize>>>,
    /// Real tokens in the batch.
    pub tokens: usize,
    /// Target tokens in the batch.
    pub targets: usize,
}

/// Pads and stacks rows. The first token of every packed sequence is never a target: it cannot
/// be predicted from the sequence before it.
pub fn make_batch(rows: &[Example], device: &Device) -> Result<Batch> {
    let t = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
    if rows.is_empty() || t < 2 {
        return Err(Error::invalid(
            "data",
            "a batch needs at least one row of two or more tokens",
        ));
    }
    let b = rows.len();
    let (mut ids, mut att, mut lab) = (vec![0u32; b * t], vec![0u32; b * t], vec![0u32; b * t]);
    let packed = rows.iter().any(|r| r.seq_lens.len() > 1);
    let mut segments = Vec::with_capacity(b);
    let (mut tokens, mut targets) = (0, 0);
    for (i, r) in rows.iter().enumerate() {
        let n = r.input_ids.len();
        if r.labels.len() != n || r.seq_lens.iter().sum::<usize>() != n {
            return Err(Error::invalid(
                "data",
                format!(
                    "row {:?}: {} ids, {} labels, seq_lens summing to {}",
                    r.ids,
                    n,
                    r.labels.len(),
                    r.seq_lens.iter().sum::<usize>()
                ),
            ));
        }
        let row = &mut ids[i * t..i * t + n];
        row.copy_from_slice(&r.input_ids);
        att[i * t..i * t + n].fill(1);
        let mut starts = Vec::with_capacity(r.seq_lens.len());
        let mut at = 0;
        for &len in &r.seq_lens {
            starts.push(at);
            at += len;
        }
        for (j, &l) in r.labels.iter().enumerate() {
            if l != IGNORE && !starts.contains(&j) {
                lab[i * t + j] = 1;
                targets += 1;
            }
        }
        tokens += n;
        let mut seg = r.seq_lens.clone();
        if n < t {
            seg.push(t - n);
        }
        segments.push(seg);
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(ids, (b, t), device)?,
        attention_mask: Tensor::from_vec(att, (b, t), device)?,
        label_mask: Tensor::from_vec(lab, (b, t), device)?,
        segments: packed.then_some(segments),
        tokens,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32], labels: &[i64], seq_lens: &[usize]) -> Example {
        Example {
            input_ids: ids.to_vec(),
            labels: labels.to_vec(),
            seq_lens: seq_lens.to_vec(),
            ids: vec!["x".into()],
        }
    }

    #[test]
    fn pads_masks_and_never_targets_a_sequence_start() {
        let rows = [
            ex(&[5, 6, 7, 8, 9], &[5, 6, 7, 8, 9], &[3, 2]),
            ex(&[1, 2, 3], &[IGNORE, 2, 3], &[3]),
        ];
        let b = make_batch(&rows, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            [[5, 6, 7, 8, 9], [1, 2, 3, 0, 0]]
        );
        assert_eq!(
            b.attention_mask.to_vec2::<u32>().unwrap(),
            [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
        );
        // Position 0 and 3 start sequences of row 0: not targets.
        assert_eq!(
            b.label_mask.to_vec2::<u32>().unwrap(),
            [[0, 1, 1, 0, 1], [0, 1, 1, 0, 0]]
        );
        assert_eq!(b.segments, Some(vec![vec![3, 2], vec![3, 2]]));
        assert_eq!((b.tokens, b.targets), (8, 5));
        let e = make_batch(&[ex(&[1, 2], &[1], &[2])], &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("1 labels"), "{e}");
    }
}
