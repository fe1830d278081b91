//! Multi-head self-attention (grouped-query ready), rotate-half RoPE, and the key/value cache it appends to.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::DecoderConfig;
use crate::engine::linear::Linear;
use crate::engine::rope;

/// Keys and values of every layer for the positions seen so far (prefill, then one step per generated token).
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: k and v [batch, kv_heads, seen, head_dim].
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers] }
    }

    /// Positions already cached: the position of the next token.
    pub fn seq_len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Appends this step's k, v to layer `i` and returns all of the layer's k, v so far.
    fn append(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let kv = match self.layers[i].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.layers[i] = Some(kv.clone());
        Ok(kv)
    }
}

/// What every layer's attention shares in one forward pass.
pub(super) struct Context<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    /// Additive [1, 1, len, seen + len] (0 or -inf); None for a single new position, which sees everything.
    pub mask: Option<&'a Tensor>,
    pub train: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Attention {
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
        let (hidden, head_dim) = (cfg.hidden_size, cfg.head_dim());
        let (num_heads, num_kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Self {
            q_proj: Linear::load(vb.pp("q_proj"), hidden, num_heads * head_dim, false)?,
            k_proj: Linear::load(vb.pp("k_proj"), hidden, num_kv_heads * head_dim, false)?,
            v_proj: Linear::load(vb.pp("v_proj"), hidden, num_kv_heads * head_dim, false)?,
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

        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = ctx.mask {
            scores = scores.broadcast_add(mask)?;
        }
        // Softmax in f32 (as the reference), with plain ops: the fused softmax has no backward.
        let probs = candle_nn::ops::softmax(&scores.to_dtype(DType::F32)?, D::Minus1)?.to_dtype(q.dtype())?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, self.num_heads * self.head_dim))?;
        self.o_proj.forward_t(&out, ctx.train)
    }
}

/// [batch, kv_heads, seen, d] -> [batch, kv_heads * groups, seen, d], each kv head serving `groups` query heads.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (batch, kv_heads, seen, d) = x.dims4()?;
    Tensor::cat(&vec![x; groups], 2)?.reshape((batch, kv_heads * groups, seen, d))
}

/// The additive causal mask [1, 1, len, seen + len]: new position i sees cached positions and new ones up to i.
pub(super) fn causal_mask(len: usize, seen: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| (0..seen + len).map(move |j| if j > seen + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (1, 1, len, seen + len), device)?.to_dtype(dtype)
}
