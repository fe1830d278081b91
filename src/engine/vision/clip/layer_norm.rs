//! LayerNorm written with plain ops, so it has a backward pass (candle's fused `layer_norm` records none).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{init, VarBuilder};

#[derive(Debug, Clone)]
pub struct LayerNorm {
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
    /// w · (x - mean) / sqrt(var + eps) + b over the last dim (biased variance), statistics in f32.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let std = (centred.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        centred.broadcast_div(&std)?.to_dtype(dtype)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}
