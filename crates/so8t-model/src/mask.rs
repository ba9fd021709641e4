//! The additive attention mask: causal, sliding window, padding and packed sequences.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The additive attention mask `[B|1, 1, T, S]` (0 or a very negative number), or `None`
/// when no position needs masking.
pub(crate) fn attention_mask(
    b: usize,
    t: usize,
    offset: usize,
    sliding_window: Option<usize>,
    pad: Option<&Tensor>,
    segments: Option<&[Vec<usize>]>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let s = offset + t;
    let window = sliding_window.filter(|&w| w < s);
    if t == 1 && window.is_none() && pad.is_none() && segments.is_none() {
        return Ok(None);
    }
    let pad_rows: Option<Vec<Vec<u32>>> = match pad {
        Some(p) => {
            let (pb, ps) = p.dims2()?;
            if pb != b || ps != s {
                return Err(Error::Generation(format!(
                    "attention mask is [{pb}, {ps}], expected [{b}, {s}] (batch × cached+new positions)"
                )));
            }
            Some(p.to_dtype(DType::U32)?.to_vec2::<u32>()?)
        }
        None => None,
    };
    // Sequence number of every position, per row (packed rows only).
    let seg_ids: Option<Vec<Vec<usize>>> = segments.map(|rows| {
        rows.iter()
            .map(|lens| {
                lens.iter()
                    .enumerate()
                    .flat_map(|(i, &n)| std::iter::repeat_n(i, n))
                    .collect()
            })
            .collect()
    });
    let rows = if pad_rows.is_some() || seg_ids.is_some() {
        b
    } else {
        1
    };
    let neg = f32::MIN;
    let mut m = vec![0f32; rows * t * s];
    for r in 0..rows {
        for i in 0..t {
            let q = offset + i;
            for k in 0..s {
                let masked = k > q
                    || window.is_some_and(|w| q - k.min(q) >= w)
                    || pad_rows.as_ref().is_some_and(|p| p[r][k] == 0)
                    || seg_ids.as_ref().is_some_and(|g| g[r][k] != g[r][q]);
                if masked {
                    m[(r * t + i) * s + k] = neg;
                }
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, (rows, 1, t, s), device)?))
}
