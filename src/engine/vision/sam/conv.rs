//! 2-D convolution on channels-last maps [B, H, W, C], as one matmul over gathered patches (im2col), so that the
//! SAM trunk, neck and compressor never leave the channels-last layout and every step has a backward pass.

use candle_core::{Result, Tensor};
use candle_nn::{init, VarBuilder};

/// PyTorch's `nn.Conv2d` (square kernel, same stride and zero padding on both axes, no groups); the weight keeps
/// PyTorch's [out, in, k, k] layout, so checkpoints load as they are.
#[derive(Debug, Clone)]
pub(super) struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Reads `<path>.weight` [out, in, k, k] (and `<path>.bias` [out] when `bias`); a fresh `VarMap` initialises
    /// them as `nn.Conv2d` does.
    pub fn load(
        vb: VarBuilder,
        (c_in, c_out): (usize, usize),
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", init::DEFAULT_KAIMING_UNIFORM)?;
        let bias = if bias {
            let bound = 1.0 / ((c_in * kernel * kernel) as f64).sqrt();
            Some(vb.get_with_hints(c_out, "bias", init::Init::Uniform { lo: -bound, up: bound })?)
        } else {
            None
        };
        Ok(Self { weight, bias, kernel, stride, padding })
    }

    /// x [B, H, W, C_in] -> [B, H_out, W_out, C_out] with H_out = (H + 2·padding - k) / stride + 1 (floored).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("conv: a {h}x{w} map (padding {p}) is smaller than the {k}x{k} kernel");
        }
        let (h_out, w_out) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let patches = if k == s && p == 0 {
            // Non-overlapping patches (the patch embedding): a reshape instead of k² gathers.
            x.narrow(1, 0, h_out * k)?
                .narrow(2, 0, w_out * k)?
                .reshape((b, h_out, k, w_out, k, c))?
                .permute((0, 1, 3, 2, 4, 5))?
                .reshape((b, h_out, w_out, k * k * c))?
        } else {
            // Zero padding, plus bottom/right rows that only make every offset's strided slice fit; they are never
            // read. Patches: k² shifted, strided views, concatenated (dy, dx, channel) to match the weight below.
            let x = x.pad_with_zeros(1, p, (k - 1 + s * h_out).saturating_sub(h + p))?;
            let x = x.pad_with_zeros(2, p, (k - 1 + s * w_out).saturating_sub(w + p))?;
            let mut views = Vec::with_capacity(k * k);
            for dy in 0..k {
                let rows = strided(&x, 1, dy, h_out, s)?;
                for dx in 0..k {
                    views.push(strided(&rows, 2, dx, w_out, s)?);
                }
            }
            Tensor::cat(&views, 3)?
        };
        let c_out = self.weight.dim(0)?;
        // [out, in, k, k] -> [out, k·k·in] in (dy, dx, channel) order.
        let weight = self.weight.permute((0, 2, 3, 1))?.reshape((c_out, k * k * c))?;
        let y = patches.reshape((b * h_out * w_out, k * k * c))?.matmul(&weight.t()?)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        y.reshape((b, h_out, w_out, c_out))
    }
}

/// Along `dim`: the `n` positions start, start + step, ... (x must extend to start + step · n on that axis).
fn strided(x: &Tensor, dim: usize, start: usize, n: usize, step: usize) -> Result<Tensor> {
    let x = x.narrow(dim, start, n * step)?;
    if step == 1 {
        return Ok(x);
    }
    let mut dims = x.dims().to_vec();
    dims.splice(dim..=dim, [n, step]);
    x.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    use crate::engine::test_pattern as random;

    /// Ours on channels-last vs candle's own conv2d (channels-first) on odd and even sizes.
    #[test]
    fn matches_candle_conv2d() {
        for (k, s, p, bias, h, w) in [
            (3, 1, 1, false, 7, 6),
            (3, 2, 1, false, 7, 6),
            (3, 2, 1, true, 8, 8),
            (1, 1, 0, false, 5, 4),
            (4, 4, 0, true, 9, 8),
        ] {
            let map = VarMap::new();
            let conv =
                Conv2d::load(VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu), (3, 5), k, s, p, bias).unwrap();
            let x = random(&[2, 3, h, w], k as u64 + s as u64);
            let ours = conv.forward(&x.permute((0, 2, 3, 1)).unwrap()).unwrap().permute((0, 3, 1, 2)).unwrap();
            let mut want = x.conv2d(&conv.weight, p, s, 1, 1).unwrap();
            if let Some(b) = &conv.bias {
                want = want.broadcast_add(&b.reshape((1, 5, 1, 1)).unwrap()).unwrap();
            }
            assert_eq!(ours.dims(), want.dims(), "k{k} s{s} p{p} {h}x{w}");
            let diff: f32 =
                (ours - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
            assert!(diff < 1e-5, "k{k} s{s} p{p} {h}x{w}: {diff}");
        }
    }
}
