//! softmax(scores + rel_h + rel_w) over the last dimension, the decomposed relative positions broadcast over the
//! key grid: one fused, multi-threaded pass on CPU (the attention's largest cost after the matmuls; candle's
//! elementwise ops are single-threaded and each makes a full pass), with its backward pass; plain candle ops on
//! other devices.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// scores [G, R, kh·kw], rel_h [G, R, kh], rel_w [G, R, kw] -> probabilities [G, R, kh·kw], where key (i, j) gets
/// scores + rel_h[i] + rel_w[j].
pub(super) fn biased_softmax(scores: &Tensor, rel_h: &Tensor, rel_w: &Tensor) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 {
        scores.contiguous()?.apply_op3(&rel_h.contiguous()?, &rel_w.contiguous()?, BiasedSoftmax)
    } else {
        composed(scores, rel_h, rel_w)
    }
}

fn composed(scores: &Tensor, rel_h: &Tensor, rel_w: &Tensor) -> Result<Tensor> {
    let (g, r, len) = scores.dims3()?;
    let (kh, kw) = (rel_h.dim(2)?, rel_w.dim(2)?);
    let biased = scores
        .reshape((g, r, kh, kw))?
        .broadcast_add(&rel_h.unsqueeze(3)?)?
        .broadcast_add(&rel_w.unsqueeze(2)?)?
        .reshape((g, r, len))?;
    candle_nn::ops::softmax(&biased, D::Minus1)
}

struct BiasedSoftmax;

/// The slice of a contiguous f32 storage.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("biased softmax: expects contiguous f32 inputs"),
    }
}

impl CustomOp3 for BiasedSoftmax {
    fn name(&self) -> &'static str {
        "sam-biased-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (scores, rel_h, rel_w) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let (g, r, len) = l1.shape().dims3()?;
        let (kh, kw) = (l2.shape().dims3()?.2, l3.shape().dims3()?.2);
        if kh * kw != len || l2.shape().dims3()? != (g, r, kh) || l3.shape().dims3()? != (g, r, kw) {
            candle_core::bail!(
                "biased softmax: scores {:?} do not match rel_h {:?} and rel_w {:?}",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let mut out = vec![0f32; g * r * len];
        let softmax_row = row_kernel();
        // On rayon's pool, which candle's matmuls use too: threads of our own would compete with its spinning ones.
        out.par_chunks_mut(len).enumerate().with_min_len(16).for_each(|(row, out)| {
            let (h, w) = (&rel_h[row * kh..(row + 1) * kh], &rel_w[row * kw..(row + 1) * kw]);
            softmax_row(&scores[row * len..(row + 1) * len], h, w, out);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// With p the output: d scores = p · (g - Σ g·p); d rel_h and d rel_w sum it over the other key axis.
    fn bwd(
        &self,
        _scores: &Tensor,
        rel_h: &Tensor,
        rel_w: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g, r, _) = probs.dims3()?;
        let (kh, kw) = (rel_h.dim(2)?, rel_w.dim(2)?);
        let d_scores = (probs * grad.broadcast_sub(&(grad * probs)?.sum_keepdim(D::Minus1)?)?)?;
        let grid = d_scores.reshape((g, r, kh, kw))?;
        Ok((Some(d_scores.clone()), Some(grid.sum(3)?), Some(grid.sum(2)?)))
    }
}

type RowKernel = fn(&[f32], &[f32], &[f32], &mut [f32]);

/// [`softmax_row`] compiled for the widest vector instructions this CPU has (the default build targets SSE2).
fn row_kernel() -> RowKernel {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512(scores: &[f32], h: &[f32], w: &[f32], out: &mut [f32]) {
            softmax_row(scores, h, w, out)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(scores: &[f32], h: &[f32], w: &[f32], out: &mut [f32]) {
            softmax_row(scores, h, w, out)
        }
        // SAFETY: each is called only where the CPU has the features it was compiled for.
        if is_x86_feature_detected!("avx512f") {
            return |s, h, w, o| unsafe { avx512(s, h, w, o) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return |s, h, w, o| unsafe { avx2(s, h, w, o) };
        }
    }
    softmax_row
}

/// out = softmax(scores + h[i] + w[j]) for key (i, j) = i·kw + j. Written so that the compiler vectorises each
/// pass (lane-wise accumulators, [`exp`] without a libm call).
#[inline(always)]
fn softmax_row(scores: &[f32], h: &[f32], w: &[f32], out: &mut [f32]) {
    // Accumulators: one AVX-512 vector, or two AVX2 ones.
    const LANES: usize = 16;
    let mut max = [f32::NEG_INFINITY; LANES];
    for ((out, scores), &hi) in out.chunks_mut(w.len()).zip(scores.chunks(w.len())).zip(h) {
        for ((o, &s), &wj) in out.iter_mut().zip(scores).zip(w) {
            *o = s + hi + wj;
        }
    }
    let mut blocks = out.chunks_exact(LANES);
    for block in &mut blocks {
        for (m, &o) in max.iter_mut().zip(block) {
            *m = if o > *m { o } else { *m };
        }
    }
    let max = blocks.remainder().iter().chain(&max).fold(f32::NEG_INFINITY, |m, &o| if o > m { o } else { m });
    let mut sum = [0f32; LANES];
    let mut blocks = out.chunks_exact_mut(LANES);
    for block in &mut blocks {
        for (acc, o) in sum.iter_mut().zip(block) {
            *o = exp(*o - max);
            *acc += *o;
        }
    }
    let mut total = 0f32;
    for o in blocks.into_remainder() {
        *o = exp(*o - max);
        total += *o;
    }
    let inv = 1.0 / (total + sum.iter().sum::<f32>());
    out.iter_mut().for_each(|o| *o *= inv);
}

/// e^x for x <= 0 (here: score - row max), within a few ulp of `f32::exp`: x = n·ln2 + r with |r| <= ln2/2,
/// e^r by a degree-7 polynomial (the Cephes `expf` coefficients), 2^n put in the exponent bits. Below -87, where
/// e^x nears the smallest normal float, it returns e^-87 (~1.6e-38): negligible against the row's maximum term 1.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split into a part exact in few bits and the rest, so that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5·2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // The integer n sits in the low mantissa bits of `shifted`: 2^n from integer ops alone.
    let two_n = (shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23;
    e_r * f32::from_bits(two_n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn random(shape: (usize, usize, usize), seed: u64) -> Tensor {
        let n = shape.0 * shape.1 * shape.2;
        let data: Vec<f32> =
            (0..n).map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 200.0 - 2.5).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f32;
        for i in 0..=2_000_000 {
            let x = -87.0 * i as f32 / 2_000_000.0;
            let (ours, want) = (exp(x), x.exp());
            worst = worst.max((ours - want).abs() / want);
        }
        assert!(worst < 4.0 * f32::EPSILON, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
    }

    /// The fused op against plain candle ops: values, and gradients for all three inputs (under a loss that
    /// weighs each probability differently, so that the gradients are not trivially zero). Large enough for
    /// several threads.
    #[test]
    fn fused_matches_composed_with_gradients() {
        let (g, r, kh, kw) = (3, 40, 24, 25);
        let vars = [random((g, r, kh * kw), 1), random((g, r, kh), 2), random((g, r, kw), 3)]
            .map(|t| Var::from_tensor(&t).unwrap());
        let [s, h, w] = &vars;
        let weights = random((g, r, kh * kw), 4);
        let fused = biased_softmax(s.as_tensor(), h.as_tensor(), w.as_tensor()).unwrap();
        let plain = composed(s.as_tensor(), h.as_tensor(), w.as_tensor()).unwrap();
        assert!(max_abs_diff(&fused, &plain) < 1e-6);
        let rows = fused.sum(2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(rows.iter().all(|&x| (x - 1.0).abs() < 1e-5));

        let loss = |p: &Tensor| (p * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gp) = (loss(&fused), loss(&plain));
        for var in &vars {
            let (a, b) = (gf.get(var.as_tensor()).unwrap(), gp.get(var.as_tensor()).unwrap());
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(scale > 1e-3 && max_abs_diff(a, b) < 1e-5 * scale.max(1.0), "{:?}", var.dims());
        }
    }
}
