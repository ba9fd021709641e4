//! The attention mask: causal, sliding window, padding and packed sequences, as an additive
//! mask and (training on CUDA) as one key window per query for the flash kernels.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The attention mask of one forward pass in the two forms the attention paths take: the
/// additive mask `[B|1, 1, T, S]`, built on first use (the flash kernels never need it, and at
/// seq 2048 × 4 rows it is 64 MiB made on the host), and the key windows of
/// [`attention_windows`] where the flash kernels may run.
#[derive(Debug, Clone)]
pub struct AttentionMask {
    dense: OnceLock<Option<Tensor>>,
    spec: Option<MaskSpec>,
    windows: Option<Tensor>,
}

/// What [`attention_mask`] builds the additive mask from.
#[derive(Debug, Clone)]
struct MaskSpec {
    b: usize,
    t: usize,
    offset: usize,
    sliding_window: Option<usize>,
    pad: Option<Tensor>,
    segments: Option<Vec<Vec<usize>>>,
    device: Device,
}

impl AttentionMask {
    /// A mask given in its forms: the additive mask (`None`: nothing masked) and the key windows
    /// (`None`: no flash kernels).
    pub fn new(dense: Option<Tensor>, windows: Option<Tensor>) -> Self {
        Self {
            dense: OnceLock::from(dense),
            spec: None,
            windows,
        }
    }

    /// The mask of [`attention_mask`]'s arguments, built when first asked for; the padding's
    /// shape is checked now.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn lazy(
        b: usize,
        t: usize,
        offset: usize,
        sliding_window: Option<usize>,
        pad: Option<&Tensor>,
        segments: Option<&[Vec<usize>]>,
        device: &Device,
        windows: Option<Tensor>,
    ) -> Result<Self> {
        if let Some(p) = pad {
            check_pad(p, b, offset + t)?;
        }
        Ok(Self {
            dense: OnceLock::new(),
            spec: Some(MaskSpec {
                b,
                t,
                offset,
                sliding_window,
                pad: pad.cloned(),
                segments: segments.map(<[Vec<usize>]>::to_vec),
                device: device.clone(),
            }),
            windows,
        })
    }

    /// The additive mask, or `None` when no position needs masking.
    pub fn dense(&self) -> Result<Option<&Tensor>> {
        if let Some(m) = self.dense.get() {
            return Ok(m.as_ref());
        }
        let m = match &self.spec {
            Some(s) => attention_mask(
                s.b,
                s.t,
                s.offset,
                s.sliding_window,
                s.pad.as_ref(),
                s.segments.as_deref(),
                &s.device,
            )?,
            None => None,
        };
        Ok(self.dense.get_or_init(|| m).as_ref())
    }

    /// The key windows for the flash kernels, if this pass may use them.
    pub fn windows(&self) -> Option<&Tensor> {
        self.windows.as_ref()
    }
}

/// An error unless the padding mask `pad` is `[b, s]` (batch × cached + new positions).
fn check_pad(pad: &Tensor, b: usize, s: usize) -> Result<()> {
    let (pb, ps) = pad.dims2()?;
    if pb != b || ps != s {
        return Err(Error::Generation(format!(
            "attention mask is [{pb}, {ps}], expected [{b}, {s}] (batch × cached+new positions)"
        )));
    }
    Ok(())
}

/// The rows of the padding mask on the host (1 for a real token), checked to be `[b, s]`.
fn pad_rows(pad: Option<&Tensor>, b: usize, s: usize) -> Result<Option<Vec<Vec<u32>>>> {
    pad.map(|p| {
        check_pad(p, b, s)?;
        Ok(p.to_dtype(DType::U32)?.to_vec2::<u32>()?)
    })
    .transpose()
}

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
    let pad_rows = pad_rows(pad, b, s)?;
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

/// The same mask as [`attention_mask`] (no cache offset) as one window of keys `[lo, hi]` per
/// query row: u32 `[B, T, 2]`, what the flash attention kernels take. Both ends are
/// non-decreasing along a row. A query whose every key is masked gets an empty window
/// (`lo > hi`). `None` where the mask is not of that form: a padding row whose real tokens are
/// not one contiguous run.
pub(crate) fn attention_windows(
    b: usize,
    t: usize,
    sliding_window: Option<usize>,
    pad: Option<&Tensor>,
    segments: Option<&[Vec<usize>]>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let pad_rows = pad_rows(pad, b, t)?;
    let mut w = Vec::with_capacity(b * t * 2);
    for r in 0..b {
        // The real tokens' run [first, last] (an empty run: first > last).
        let (first, last) = match &pad_rows {
            Some(p) => {
                let ones: Vec<usize> = (0..t).filter(|&k| p[r][k] != 0).collect();
                match (ones.first(), ones.last()) {
                    (Some(&a), Some(&z)) if z + 1 - a == ones.len() => (a, z),
                    (Some(_), Some(_)) => return Ok(None),
                    _ => (t, 0),
                }
            }
            None => (0, t - 1),
        };
        // Start and end (exclusive) of the sequence of every position.
        let mut bounds = vec![(0, t); t];
        if let Some(rows) = segments {
            let lens = rows.get(r).ok_or_else(|| {
                Error::Generation(format!("segments for {} rows, expected {b}", rows.len()))
            })?;
            let mut at = 0;
            for &n in lens {
                for bound in bounds.iter_mut().skip(at).take(n) {
                    *bound = (at, at + n);
                }
                at += n;
            }
        }
        for (q, &(start, end)) in bounds.iter().enumerate() {
            let mut lo = start.max(first);
            if let Some(win) = sliding_window.filter(|&x| x > 0) {
                lo = lo.max((q + 1).saturating_sub(win));
            }
            let hi = q.min(end - 1).min(last);
            w.push(lo as u32);
            w.push(hi as u32);
        }
    }
    Ok(Some(Tensor::from_vec(w, (b, t, 2), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window holds exactly the keys the additive mask leaves open, for causal rows,
    /// sliding windows, right and left padding and packed sequences; both ends never decrease.
    #[test]
    fn windows_describe_the_mask() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t) = (3, 9);
        let pads = [
            None,
            Some(vec![1u32, 1, 1, 1, 1, 1, 1, 0, 0]),
            Some(vec![0u32, 0, 1, 1, 1, 1, 1, 1, 1]),
        ];
        let segs: Vec<Vec<usize>> = vec![vec![4, 5], vec![2, 5, 2], vec![9]];
        let mut checked = 0;
        for window in [None, Some(3), Some(20)] {
            for pad in &pads {
                let pad = pad
                    .as_ref()
                    .map(|p| Tensor::from_vec(p.repeat(b), (b, t), &dev))
                    .transpose()?;
                for seg in [None, Some(segs.as_slice())] {
                    let m =
                        attention_mask(b, t, 0, window, pad.as_ref(), seg, &dev)?.expect("a mask");
                    let rows = m.dim(0)?;
                    let m = m.flatten_all()?.to_vec1::<f32>()?;
                    let w = attention_windows(b, t, window, pad.as_ref(), seg, &dev)?
                        .expect("windows")
                        .to_vec3::<u32>()?;
                    for (r, wr) in w.iter().enumerate() {
                        let mr = if rows == 1 { 0 } else { r };
                        for q in 0..t {
                            let [lo, hi] = [wr[q][0] as usize, wr[q][1] as usize];
                            if q > 0 {
                                assert!(lo >= wr[q - 1][0] as usize && hi >= wr[q - 1][1] as usize);
                            }
                            for k in 0..t {
                                let open = m[(mr * t + q) * t + k] == 0.0;
                                assert_eq!(open, lo <= k && k <= hi, "row {r} q {q} k {k}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 2 * b * t * t);
        // Real tokens in two runs: no window form.
        let holes = Tensor::from_vec([1u32, 0, 1, 1, 1, 1, 1, 1, 1].repeat(b), (b, t), &dev)?;
        assert!(attention_windows(b, t, None, Some(&holes), None, &dev)?.is_none());
        Ok(())
    }

    /// The lazy mask checks the padding's shape when made and builds the same additive mask as
    /// `attention_mask` when asked.
    #[test]
    fn the_lazy_mask_is_the_mask() -> Result<()> {
        let dev = Device::Cpu;
        let pad = Tensor::from_vec([1u32, 1, 1, 0, 1, 1, 1, 1].to_vec(), (2, 4), &dev)?;
        let segs = vec![vec![2, 2], vec![4]];
        let lazy = AttentionMask::lazy(2, 4, 0, Some(2), Some(&pad), Some(&segs), &dev, None)?;
        let want = attention_mask(2, 4, 0, Some(2), Some(&pad), Some(&segs), &dev)?.expect("mask");
        let got = lazy.dense()?.expect("mask");
        assert_eq!(
            got.flatten_all()?.to_vec1::<f32>()?,
            want.flatten_all()?.to_vec1::<f32>()?
        );
        assert!(lazy.windows().is_none());
        let e = AttentionMask::lazy(3, 4, 0, None, Some(&pad), None, &dev, None).unwrap_err();
        assert!(e.to_string().contains("expected [3, 4]"), "{e}");
        Ok(())
    }
}
