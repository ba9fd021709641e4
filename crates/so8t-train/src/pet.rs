//! PET regularization (spec §3): a penalty on the second difference of the final hidden states
//! along positions, d_t = h_{t+2} − 2·h_{t+1} + h_t, which discourages abrupt changes of the
//! representation from token to token.
//!
//! L_PET(λ = 1) = Σ_valid Σ_k f(d_t,k) / (count_valid · H), with f(x) = x² (L2) or the Huber
//! function of torch's `huber_loss`: f(x) = ½x² for |x| ≤ δ, δ·(|x| − ½δ) otherwise. A triple
//! (t, t+1, t+2) is valid when all three positions are real tokens and, for packed rows, belong to
//! the same sequence. The trainer multiplies the result by λ(phase) from
//! [`PetSchedule`](crate::schedule::PetSchedule).

use candle_core::{DType, Error, Result, Tensor};

/// The PET penalty with λ = 1 and the number of valid triples.
///
/// - `hidden`: `[B, T, H]`, the final hidden states after the last RMSNorm
///   ([`so8t_model::Model::hidden_states`]). F16/BF16 inputs are upcast to F32 (the result is then
///   F32); otherwise the result has the dtype of `hidden`.
/// - `attention_mask`: `[B, T]`, any dtype; nonzero marks a real token.
/// - `huber_delta`: `None` for the square, `Some(δ)` (δ > 0) for the Huber function per element.
/// - `segments`: for packed rows, per batch row the lengths of its sequences (each > 0, summing to
///   T), as in [`so8t_model::Forward::segments`]; triples that straddle two sequences are skipped.
///
/// Returns a scalar tensor built from differentiable ops only (gradients reach `hidden` through
/// `narrow`, `sub`, `sqr`/`abs`, the mask product and the sums) and the count of valid triples.
/// With no valid triple (e.g. T < 3) the loss is a constant 0, never NaN. Padded positions are
/// multiplied by 0, so their hidden states must be finite.
pub fn pet_loss(
    hidden: &Tensor,
    attention_mask: &Tensor,
    huber_delta: Option<f64>,
    segments: Option<&[Vec<usize>]>,
) -> Result<(Tensor, usize)> {
    let (b, t, h) = hidden.dims3()?;
    let mask_dims = attention_mask.dims2()?;
    if mask_dims != (b, t) {
        return Err(Error::Msg(format!(
            "pet_loss: attention_mask is {mask_dims:?} but hidden states are [{b}, {t}, {h}]"
        )));
    }
    if let Some(d) = huber_delta {
        if !(d.is_finite() && d > 0.0) {
            return Err(Error::Msg(format!(
                "pet_loss: huber_delta must be > 0, got {d}"
            )));
        }
    }
    let hidden = match hidden.dtype() {
        DType::F16 | DType::BF16 => hidden.to_dtype(DType::F32)?,
        _ => hidden.clone(),
    };
    let (dt, dev) = (hidden.dtype(), hidden.device().clone());
    let (valid, count) = valid_triples(attention_mask, segments, b, t)?;
    if count == 0 {
        return Ok((Tensor::zeros((), dt, &dev)?, 0));
    }
    let n = t - 2;
    let d = ((hidden.narrow(1, 2, n)? - (hidden.narrow(1, 1, n)? * 2.0)?)?
        + hidden.narrow(1, 0, n)?)?;
    let per_elem = match huber_delta {
        None => d.sqr()?,
        Some(delta) => huber(&d, delta)?,
    };
    let w = Tensor::from_vec(valid, (b, n, 1), &dev)?.to_dtype(dt)?;
    let total = per_elem.broadcast_mul(&w)?.sum_all()?;
    Ok(((total / (count * h) as f64)?, count))
}

/// torch's Huber function per element: ½x² where |x| ≤ δ, δ·(|x| − ½δ) elsewhere.
pub fn huber(x: &Tensor, delta: f64) -> Result<Tensor> {
    let a = x.abs()?;
    let quad = (x.sqr()? * 0.5)?;
    let lin = ((&a - 0.5 * delta)? * delta)?;
    a.le(delta)?.where_cond(&quad, &lin)
}

/// The `[B, T−2]` 0/1 weights of the triples starting at each position (flattened row-major) and
/// their count. Empty when T < 3.
fn valid_triples(
    attention_mask: &Tensor,
    segments: Option<&[Vec<usize>]>,
    b: usize,
    t: usize,
) -> Result<(Vec<f64>, usize)> {
    let seg_ids: Option<Vec<Vec<usize>>> = match segments {
        None => None,
        Some(rows) => {
            if rows.len() != b
                || rows
                    .iter()
                    .any(|r| r.iter().sum::<usize>() != t || r.contains(&0))
            {
                return Err(Error::Msg(format!(
                    "pet_loss: segments {rows:?} do not split {b} rows of {t} tokens into \
                     non-empty sequences"
                )));
            }
            Some(
                rows.iter()
                    .map(|lens| {
                        lens.iter()
                            .enumerate()
                            .flat_map(|(i, &len)| std::iter::repeat_n(i, len))
                            .collect()
                    })
                    .collect(),
            )
        }
    };
    if t < 3 {
        return Ok((Vec::new(), 0));
    }
    let mask = attention_mask.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut valid = Vec::with_capacity(b * (t - 2));
    let mut count = 0;
    for (row, m) in mask.iter().enumerate() {
        for i in 0..t - 2 {
            let real = m[i] != 0.0 && m[i + 1] != 0.0 && m[i + 2] != 0.0;
            let same = seg_ids.as_ref().is_none_or(|s| s[row][i] == s[row][i + 2]);
            let ok = real && same;
            count += usize::from(ok);
            valid.push(if ok { 1.0 } else { 0.0 });
        }
    }
    Ok((valid, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// One row, H = 1, h = t²: every second difference is 2.
    #[test]
    fn quadratic_has_constant_second_difference() {
        let h: Vec<f64> = (0..6).map(|t| (t * t) as f64).collect();
        let h = Tensor::from_vec(h, (1, 6, 1), &Device::Cpu).unwrap();
        let m = Tensor::ones((1, 6), DType::U32, &Device::Cpu).unwrap();
        let (l, n) = pet_loss(&h, &m, None, None).unwrap();
        assert_eq!((scalar(&l), n), (4.0, 4));
        // Huber with δ = 1: |2| > 1 → 1·(2 − 0.5) = 1.5
        let (l, _) = pet_loss(&h, &m, Some(1.0), None).unwrap();
        assert_eq!(scalar(&l), 1.5);
        // δ = 3: inside → 0.5·4 = 2
        let (l, _) = pet_loss(&h, &m, Some(3.0), None).unwrap();
        assert_eq!(scalar(&l), 2.0);
        // a linear sequence has no curvature
        let lin = Tensor::arange(0f64, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 6, 1))
            .unwrap();
        assert_eq!(scalar(&pet_loss(&lin, &m, None, None).unwrap().0), 0.0);
    }

    #[test]
    fn divides_by_count_times_hidden() {
        // H = 2; row 0 has 5 real tokens (3 triples), row 1 only 2 (no triple)
        let mut v = Vec::new();
        for t in 0..5 {
            v.extend([(t * t) as f32, 3.0 * (t * t) as f32]); // d = (2, 6)
        }
        v.extend([9.0f32; 10]);
        let h = Tensor::from_vec(v, (2, 5, 2), &Device::Cpu).unwrap();
        let m = Tensor::new(&[[1i64, 1, 1, 1, 1], [1, 1, 0, 0, 0]], &Device::Cpu).unwrap();
        let (l, n) = pet_loss(&h, &m, None, None).unwrap();
        assert_eq!(n, 3);
        assert_eq!(l.dtype(), DType::F32);
        assert!((scalar(&l) - 3.0 * 40.0 / (3.0 * 2.0)).abs() < 1e-6);
    }

    #[test]
    fn no_valid_triple_is_zero_not_nan() {
        let dev = Device::Cpu;
        let h = Tensor::ones((2, 4, 8), DType::F32, &dev).unwrap();
        let m = Tensor::new(&[[1u8, 1, 0, 0], [1, 0, 1, 1]], &dev).unwrap();
        let (l, n) = pet_loss(&h, &m, None, None).unwrap();
        assert_eq!((scalar(&l), n), (0.0, 0));
        let short = Tensor::ones((1, 2, 8), DType::F32, &dev).unwrap();
        let m2 = Tensor::ones((1, 2), DType::F32, &dev).unwrap();
        let (l, n) = pet_loss(&short, &m2, Some(0.5), None).unwrap();
        assert_eq!((scalar(&l), n), (0.0, 0));
        assert_eq!(l.dims(), &[] as &[usize]);
    }

    #[test]
    fn half_precision_is_upcast() {
        let h: Vec<f32> = (0..6).map(|t| (t * t) as f32).collect();
        let h = Tensor::from_vec(h, (1, 6, 1), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let m = Tensor::ones((1, 6), DType::F32, &Device::Cpu).unwrap();
        let (l, _) = pet_loss(&h, &m, None, None).unwrap();
        assert_eq!(l.dtype(), DType::F32);
        assert_eq!(scalar(&l), 4.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dev = Device::Cpu;
        let h = Tensor::zeros((1, 4, 2), DType::F32, &dev).unwrap();
        let m = Tensor::ones((1, 4), DType::F32, &dev).unwrap();
        let wrong = Tensor::ones((1, 5), DType::F32, &dev).unwrap();
        assert!(pet_loss(&h, &wrong, None, None).is_err());
        assert!(pet_loss(&h.squeeze(0).unwrap(), &m, None, None).is_err());
        assert!(pet_loss(&h, &m, Some(0.0), None).is_err());
        assert!(pet_loss(&h, &m, Some(f64::NAN), None).is_err());
        for segs in [vec![vec![2, 1]], vec![vec![4, 0]], vec![vec![4], vec![4]]] {
            let e = pet_loss(&h, &m, None, Some(&segs)).unwrap_err();
            assert!(e.to_string().contains("segments"), "{e}");
        }
    }
}
