//! Rotary position embedding, rotate-half layout (the first and second halves of a head form the pairs), written
//! with plain ops so it has a backward pass (candle's fused `rope` records none).

use candle_core::{DType, Device, Result, Tensor, D};

#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// theta^(-2i/d) for i < d/2, f32.
    inv_freq: Tensor,
}

impl RotaryEmbedding {
    pub fn new(head_dim: usize, theta: f64, device: &Device) -> Result<Self> {
        let inv_freq: Vec<f32> =
            (0..head_dim / 2).map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32).collect();
        Ok(Self { inv_freq: Tensor::from_vec(inv_freq, head_dim / 2, device)? })
    }

    /// cos and sin [..., head_dim] for integer `positions` [...], computed in f32 then cast to `dtype`.
    pub fn cos_sin(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let freqs = positions.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?.broadcast_mul(&self.inv_freq)?;
        let angles = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
        Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
    }
}

/// x·cos + rotate_half(x)·sin for x [batch, heads, len, head_dim] and cos/sin [len, head_dim] or
/// [batch, 1, len, head_dim].
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (x.narrow(D::Minus1, 0, half)?, x.narrow(D::Minus1, half, half)?);
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_each_pair_by_position_times_frequency() {
        let rope = RotaryEmbedding::new(4, 100.0, &Device::Cpu).unwrap();
        let positions = Tensor::new(&[3u32, 4], &Device::Cpu).unwrap();
        let (cos, sin) = rope.cos_sin(&positions, DType::F32).unwrap();
        // Head of 4: pairs (0,2) at frequency 1 and (1,3) at 100^(-1/2) = 0.1.
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap().reshape((1, 1, 1, 4)).unwrap();
        let x = x.broadcast_as((1, 1, 2, 4)).unwrap().contiguous().unwrap();
        let y = apply(&x, &cos, &sin).unwrap().reshape((2, 4)).unwrap().to_vec2::<f32>().unwrap();
        for (row, pos) in [3f32, 4.].iter().enumerate() {
            for (i, freq) in [(0, 1f32), (1, 0.1)] {
                let (a, b, angle) = ([1f32, 2.][i], [3f32, 4.][i], pos * freq);
                assert!((y[row][i] - (a * angle.cos() - b * angle.sin())).abs() < 1e-5);
                assert!((y[row][i + 2] - (b * angle.cos() + a * angle.sin())).abs() < 1e-5);
            }
        }
    }
}
