//! RMSNorm and LayerNorm written with plain ops, so they have a backward pass (candle's fused `rms_norm` and
//! `layer_norm` record none). On channels-last maps LayerNorm is also SAM's `LayerNorm2d`.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{init, VarBuilder};

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Reads `<path>.weight` [size] (initialised to ones for a fresh `VarMap`).
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get_with_hints(size, "weight", init::Init::Const(1.0))?, eps })
    }
}

impl Module for RmsNorm {
    /// w · x / sqrt(mean(x²) + eps), the statistics in f32 whatever the input dtype (as the reference does).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?;
        x.broadcast_div(&rms)?.to_dtype(dtype)?.broadcast_mul(&self.weight)
    }
}

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
