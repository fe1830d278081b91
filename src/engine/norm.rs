//! RMSNorm written with plain ops, so it has a backward pass (candle's fused `rms_norm` records none).

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
