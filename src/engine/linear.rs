//! Our linear layer: y = x·Wᵀ + b, optionally plus a LoRA pair (PEFT's form): y += (alpha/r)·(dropout(x)·Aᵀ)·Bᵀ.

use candle_core::{Module, Result, Tensor};
use candle_nn::{init, VarBuilder};

/// A low-rank adapter on one [`Linear`]: A [r, in], B [out, r], scale alpha / r, dropout on its input in training.
#[derive(Debug, Clone)]
pub struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f32,
}

impl Lora {
    pub fn a(&self) -> &Tensor {
        &self.a
    }

    pub fn b(&self) -> &Tensor {
        &self.b
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: Option<Lora>,
    /// The checkpoint path of this layer (`model.layers.0.self_attn.q_proj`): adapters are keyed by it.
    path: String,
}

impl Linear {
    /// Reads `<path>.weight` [out, in] (and `<path>.bias` [out] when `bias`) from `vb`; for a fresh `VarMap`
    /// the hints initialise them as PyTorch's `nn.Linear` does.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init::DEFAULT_KAIMING_UNIFORM)?;
        let bias = if bias {
            let bound = 1.0 / (in_dim as f64).sqrt();
            Some(vb.get_with_hints(out_dim, "bias", init::Init::Uniform { lo: -bound, up: bound })?)
        } else {
            None
        };
        Ok(Self { weight, bias, lora: None, path: vb.prefix() })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// Attaches (or replaces) the adapter. Pass a `Var`'s tensor for A and B to train them; `dropout` applies to
    /// the adapter's input in [`Linear::forward_t`] with `train` set.
    pub fn attach_lora(&mut self, a: Tensor, b: Tensor, alpha: f64, dropout: f32) -> Result<()> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let (rank, a_in) = a.dims2()?;
        let (b_out, b_rank) = b.dims2()?;
        if a_in != in_dim || b_out != out_dim || b_rank != rank || rank == 0 {
            candle_core::bail!(
                "LoRA for {}: A must be [r, {in_dim}] and B [{out_dim}, r] with r > 0, got A {:?} and B {:?}",
                self.path,
                a.dims(),
                b.dims()
            );
        }
        if !(0.0..1.0).contains(&dropout) {
            candle_core::bail!("LoRA for {}: dropout must be in [0, 1), got {dropout}", self.path);
        }
        self.lora = Some(Lora { a, b, scale: alpha / rank as f64, dropout });
        Ok(())
    }

    pub fn detach_lora(&mut self) -> Option<Lora> {
        self.lora.take()
    }

    /// `train` enables the adapter's dropout; the base layer has none.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = matmul_t(x, &self.weight)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(lora) = &self.lora {
            let x = if train && lora.dropout > 0.0 { super::dropout::dropout(x, lora.dropout)? } else { x.clone() };
            let delta = matmul_t(&matmul_t(&x, &lora.a)?, &lora.b)?;
            y = (y + (delta * lora.scale)?)?;
        }
        Ok(y)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}

/// x [..., in] · Wᵀ for W [out, in]: leading dims are flattened so that one 2-D matmul does the work.
fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let in_dim = dims.pop().unwrap_or(1);
    let rows = dims.iter().product::<usize>();
    let x = x.reshape((rows, in_dim))?;
    let y = match super::gemv::matmul_t(&x, w)? {
        Some(y) => y,
        None => x.matmul(&w.t()?)?,
    };
    dims.push(w.dim(0)?);
    y.reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    use crate::engine::test_pattern as random;

    fn layer() -> Linear {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        Linear::load(vb.pp("proj"), 6, 5, true).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn base_layer_is_x_wt_plus_b_over_leading_dims() {
        let lin = layer();
        assert_eq!(lin.path(), "proj");
        let x = random(&[2, 3, 6], 1);
        let y = lin.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 3, 5]);
        let manual = x.broadcast_matmul(&lin.weight.t().unwrap()).unwrap().broadcast_add(lin.bias.as_ref().unwrap());
        assert!(max_abs_diff(&y, &manual.unwrap()) < 1e-6);
    }

    #[test]
    fn zero_b_leaves_the_output_unchanged() {
        let mut lin = layer();
        let x = random(&[4, 6], 2);
        let before = lin.forward(&x).unwrap();
        lin.attach_lora(random(&[2, 6], 3), Tensor::zeros((5, 2), DType::F32, &Device::Cpu).unwrap(), 16.0, 0.0)
            .unwrap();
        assert_eq!(max_abs_diff(&lin.forward(&x).unwrap(), &before), 0.0);
    }

    #[test]
    fn nonzero_b_adds_scaled_low_rank_update() {
        let mut lin = layer();
        let x = random(&[4, 6], 4);
        let (a, b) = (random(&[2, 6], 5), random(&[5, 2], 6));
        let base = lin.forward(&x).unwrap();
        lin.attach_lora(a.clone(), b.clone(), 8.0, 0.0).unwrap();
        assert_eq!(lin.lora().unwrap().scale(), 4.0);
        // Explicit element sums rather than our matmul helper: y[n,o] += 4 · Σ_r B[o,r] · Σ_i A[r,i] x[n,i].
        let (xv, av, bv) = (x.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
        let base = base.to_vec2::<f32>().unwrap();
        let got = lin.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let mut changed = false;
        for n in 0..4 {
            for o in 0..5 {
                let ax: Vec<f32> = (0..2).map(|r| (0..6).map(|i| av[r][i] * xv[n][i]).sum()).collect();
                let want = base[n][o] + 4.0 * (0..2).map(|r| bv[o][r] * ax[r]).sum::<f32>();
                assert!((got[n][o] - want).abs() < 1e-5, "[{n},{o}]: {} vs {want}", got[n][o]);
                changed |= (got[n][o] - base[n][o]).abs() > 1e-3;
            }
        }
        assert!(changed, "the adapter changed nothing");
    }

    #[test]
    fn mis_shaped_adapter_is_rejected_with_the_layer_path() {
        let mut lin = layer();
        let err = lin.attach_lora(random(&[2, 5], 1), random(&[5, 2], 2), 1.0, 0.0).unwrap_err().to_string();
        assert!(err.contains("proj") && err.contains("[2, 5]"), "{err}");
        assert!(lin.attach_lora(random(&[2, 6], 1), random(&[5, 2], 2), 1.0, 1.0).is_err());
    }

    #[test]
    fn adapter_b_gets_gradient_and_dropout_only_in_training() {
        let mut lin = layer();
        let a = Var::from_tensor(&random(&[2, 6], 7)).unwrap();
        let b = Var::zeros((5, 2), DType::F32, &Device::Cpu).unwrap();
        lin.attach_lora(a.as_tensor().clone(), b.as_tensor().clone(), 2.0, 0.5).unwrap();
        let x = random(&[8, 6], 8);
        assert_eq!(max_abs_diff(&lin.forward_t(&x, false).unwrap(), &lin.forward(&x).unwrap()), 0.0);
        let loss = lin.forward_t(&x, true).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let gb = grads.get(b.as_tensor()).expect("gradient for B");
        assert!(gb.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }
}
