//! Dropout with a seedable mask: candle's CPU random numbers cannot be seeded, and training must be exactly
//! reproducible (a resumed run equals an uninterrupted one), so masks come from one ChaCha stream that the
//! trainer reseeds before each micro-step.

use std::sync::Mutex;

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

static RNG: Mutex<Option<ChaCha8Rng>> = Mutex::new(None);

/// Reseeds the mask stream (the trainer passes a value derived from its seed and step).
pub fn seed(seed: u64) {
    *RNG.lock().unwrap_or_else(|e| e.into_inner()) = Some(ChaCha8Rng::seed_from_u64(seed));
}

/// Zeroes each element with probability `p` and scales the rest by 1 / (1 - p); differentiable in `x`.
pub fn dropout(x: &Tensor, p: f32) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let n = x.elem_count();
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = {
        let mut guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
        let rng = guard.get_or_insert_with(|| ChaCha8Rng::seed_from_u64(0));
        (0..n).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect()
    };
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_seed_same_mask_and_expected_scale() {
        let x = Tensor::ones(10_000, candle_core::DType::F32, &Device::Cpu).unwrap();
        seed(3);
        let a = dropout(&x, 0.25).unwrap().to_vec1::<f32>().unwrap();
        seed(3);
        let b = dropout(&x, 0.25).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!((2300..2700).contains(&zeros), "{zeros}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
    }
}
