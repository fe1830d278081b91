//! LayerNorm over the last dimension, written with plain ops (candle's fused `layer_norm` records no backward).
//! On channels-last maps it is also SAM's `LayerNorm2d` (normalising over channels).

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{init, VarBuilder};

#[derive(Debug, Clone)]
pub(super) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Reads `<path>.weight` and `<path>.bias` [size] (ones and zeros for a fresh `VarMap`).
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(size, "weight", init::Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", init::Init::Const(0.0))?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    /// (x - mean) / sqrt(biased variance + eps) · w + b.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let std = (centered.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        centered.broadcast_div(&std)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
