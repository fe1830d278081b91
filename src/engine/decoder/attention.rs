//! Multi-head self-attention (grouped-query ready) with rotate-half RoPE, and the causal / padding masks. The
//! instruction encoder's Qwen2 layers use it too (with q/k/v biases, bidirectional or causal).

use std::ops::Range;

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::{DecoderConfig, KvCache};
use crate::engine::linear::Linear;
use crate::engine::rope;

/// What every layer's attention shares in one forward pass.
pub(crate) struct Context<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// Additive [1 or batch, 1, len, seen + len] (0 or -inf); None when every new position sees every key.
    pub mask: Option<&'a Tensor>,
    pub train: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        Self::load(vb, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, false)
    }

    /// `{q,k,v,o}_proj` for heads of hidden / num_heads; `qkv_bias` gives q, k and v a bias (Qwen2), never o.
    pub fn load(vb: VarBuilder, hidden: usize, num_heads: usize, num_kv_heads: usize, qkv_bias: bool) -> Result<Self> {
        let head_dim = hidden / num_heads;
        Ok(Self {
            q_proj: Linear::load(vb.pp("q_proj"), hidden, num_heads * head_dim, qkv_bias)?,
            k_proj: Linear::load(vb.pp("k_proj"), hidden, num_kv_heads * head_dim, qkv_bias)?,
            v_proj: Linear::load(vb.pp("v_proj"), hidden, num_kv_heads * head_dim, qkv_bias)?,
            o_proj: Linear::load(vb.pp("o_proj"), num_heads * head_dim, hidden, false)?,
            num_heads,
            num_kv_heads,
            head_dim,
        })
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [&mut self.q_proj, &mut self.k_proj, &mut self.v_proj, &mut self.o_proj]
    }

    /// x [batch, len, hidden] -> [batch, len, hidden]; with a cache, `layer`'s keys/values are appended to it.
    pub fn forward(&self, x: &Tensor, ctx: &Context, cache: Option<(&mut KvCache, usize)>) -> Result<Tensor> {
        let (batch, len, _) = x.dims3()?;
        let heads = |proj: &Linear, n: usize| -> Result<Tensor> {
            proj.forward_t(x, ctx.train)?.reshape((batch, len, n, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = rope::apply(&heads(&self.q_proj, self.num_heads)?, ctx.cos, ctx.sin)?;
        let k = rope::apply(&heads(&self.k_proj, self.num_kv_heads)?, ctx.cos, ctx.sin)?;
        let v = heads(&self.v_proj, self.num_kv_heads)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v)?,
            None => (k, v),
        };
        let groups = self.num_heads / self.num_kv_heads;
        let (k, v) = (repeat_kv(&k, groups)?, repeat_kv(&v, groups)?);
        let out = scaled_dot_product(&q, &k, &v, ctx.mask)?;
        self.o_proj.forward_t(&out.transpose(1, 2)?.reshape((batch, len, self.num_heads * self.head_dim))?, ctx.train)
    }
}

/// softmax(q·kᵀ / sqrt(head_dim) + mask)·v for q [batch, heads, len, d], k and v [batch, heads, keys, d] and an
/// additive mask broadcastable to [batch, heads, len, keys]; the output is [batch, heads, len, d].
pub(crate) fn scaled_dot_product(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    // Softmax in f32 (as the reference), with plain ops: the fused softmax has no backward.
    let probs = candle_nn::ops::softmax(&scores.to_dtype(DType::F32)?, D::Minus1)?.to_dtype(q.dtype())?;
    probs.matmul(v)
}

/// [batch, kv_heads, seen, d] -> [batch, kv_heads * groups, seen, d], each kv head serving `groups` query heads.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (batch, kv_heads, seen, d) = x.dims4()?;
    Tensor::cat(&vec![x; groups], 2)?.reshape((batch, kv_heads * groups, seen, d))
}

/// RoPE positions and the additive attention mask for `len` new positions after `seen` cached ones.
///
/// Without padding: positions [len] and a causal mask [1, 1, len, seen + len] (None for one new position).
/// With `left_pad` (per row, how many leading positions are padding): positions [batch, 1, len] counted from each
/// row's first real token, and a mask [batch, 1, len, seen + len] that also hides padding keys. A padding query
/// still sees itself, so that its (unused) output stays finite rather than NaN from a fully masked row.
pub(super) fn positions_and_mask(
    len: usize,
    seen: usize,
    left_pad: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let keys = seen + len;
    if left_pad.iter().all(|&p| p == 0) {
        let positions = Tensor::arange(seen as u32, keys as u32, device)?;
        if len == 1 {
            return Ok((positions, None));
        }
        let mask = mask_values(seen..keys, keys, true, |_| false);
        return Ok((positions, Some(Tensor::from_vec(mask, (1, 1, len, keys), device)?.to_dtype(dtype)?)));
    }
    let positions: Vec<u32> =
        left_pad.iter().flat_map(|&pad| (seen..keys).map(move |q| q.saturating_sub(pad) as u32)).collect();
    let mask: Vec<f32> = left_pad.iter().flat_map(|&pad| mask_values(seen..keys, keys, true, |j| j < pad)).collect();
    let batch = left_pad.len();
    Ok((
        Tensor::from_vec(positions, (batch, 1, len), device)?,
        Some(Tensor::from_vec(mask, (batch, 1, len, keys), device)?.to_dtype(dtype)?),
    ))
}

/// The additive mask [batch, 1, len, len] for self-attention over rows whose padding is marked per position
/// (`real[b][j]` false: padding): padding keys are hidden, and with `causal` later keys too; None when nothing is.
/// A padding query still sees itself, so that its (unused) output stays finite.
pub(crate) fn padding_mask(real: &[Vec<bool>], causal: bool, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
    let len = real.first().map_or(0, Vec::len);
    if !causal && real.iter().flatten().all(|&r| r) {
        return Ok(None);
    }
    let mask: Vec<f32> = real.iter().flat_map(|row| mask_values(0..len, len, causal, |j| !row[j])).collect();
    Ok(Some(Tensor::from_vec(mask, (real.len(), 1, len, len), device)?.to_dtype(dtype)?))
}

/// One row's mask [queries, keys]: query q sees key j unless j is padding (and j != q) or, with `causal`, j > q.
fn mask_values(queries: Range<usize>, keys: usize, causal: bool, padding: impl Fn(usize) -> bool) -> Vec<f32> {
    let padding = &padding;
    queries
        .flat_map(|q| {
            (0..keys).map(move |j| if (causal && j > q) || (padding(j) && j != q) { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect()
}
