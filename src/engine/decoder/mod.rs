//! DeepSeek-OCR's language model: a DeepSeek-V2-style MoE decoder with plain multi-head attention.
//!
//! The module tree is the checkpoint's name tree: `model.embed_tokens`, `model.layers.N.{input_layernorm,
//! self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.*}`, `model.norm`, `lm_head`. The forward pass takes
//! input embeddings, so that vision and instruction features can be spliced in before it.

pub(crate) mod attention;
mod cache;
mod config;
mod generate;
pub(crate) mod mlp;

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{init, Embedding, VarBuilder};

pub use cache::KvCache;
pub(crate) use config::check_heads;
pub use config::DecoderConfig;
pub use generate::{Generation, Prompt};

use crate::engine::linear::Linear;
use crate::engine::norm::RmsNorm;
use crate::engine::rope::RotaryEmbedding;
use attention::{positions_and_mask, Attention, Context};
use mlp::{Mlp, Moe};

#[derive(Debug, Clone)]
enum FeedForward {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: FeedForward,
}

impl DecoderLayer {
    fn new(cfg: &DecoderConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let mlp = if cfg.is_moe_layer(index) {
            FeedForward::Moe(Moe::new(cfg, vb.pp("mlp"))?)
        } else {
            FeedForward::Dense(Mlp::new(vb.pp("mlp"), cfg.hidden_size, cfg.intermediate_size)?)
        };
        Ok(Self {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            mlp,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Context, cache: Option<(&mut KvCache, usize)>) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.input_layernorm.forward(x)?, ctx, cache)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        let h = match &self.mlp {
            FeedForward::Dense(mlp) => mlp.forward_t(&h, ctx.train)?,
            FeedForward::Moe(moe) => moe.forward_t(&h, ctx.train)?,
        };
        x + h
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all: Vec<&mut Linear> = self.self_attn.linears_mut().into_iter().collect();
        match &mut self.mlp {
            FeedForward::Dense(mlp) => all.extend(mlp.linears_mut()),
            FeedForward::Moe(moe) => all.extend(moe.linears_mut()),
        }
        all
    }
}

#[derive(Debug, Clone)]
pub struct Decoder {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RotaryEmbedding,
    cfg: DecoderConfig,
}

impl Decoder {
    /// Builds the decoder from `vb` at the checkpoint's root (tensors `model.*` and `lm_head.*`). A missing tensor
    /// or one of the wrong shape is an error naming it (and both shapes).
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let model = vb.pp("model");
        let embeddings = model.pp("embed_tokens").get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "weight",
            init::Init::Randn { mean: 0.0, stdev: 1.0 },
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, i, model.pp("layers").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self {
            embed_tokens: Embedding::new(embeddings, cfg.hidden_size),
            layers,
            norm: RmsNorm::load(model.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            lm_head: Linear::load(vb.pp("lm_head"), cfg.hidden_size, cfg.vocab_size, false)?,
            rope: RotaryEmbedding::new(cfg.head_dim(), cfg.rope_theta, vb.device())?,
            cfg: cfg.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.embeddings().device()
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// A cache with one slot per layer, for prefill then incremental decoding.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Token ids [batch, len] (u32) -> embeddings [batch, len, hidden].
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    /// Final-norm hidden states [batch, len, hidden] for embeddings [batch, len, hidden] that follow the cache's
    /// positions (0 without a cache); the cache is extended and its left padding masked. `train` enables LoRA
    /// dropout. (Training needs no padding mask: right padding cannot affect earlier positions.)
    pub fn hidden_states(&self, embeds: &Tensor, mut cache: Option<&mut KvCache>, train: bool) -> Result<Tensor> {
        let (batch, len, _) = embeds.dims3()?;
        if len == 0 {
            candle_core::bail!("the decoder needs at least one position");
        }
        let (seen, left_pad) = cache.as_ref().map_or((0, &[][..]), |c| (c.seq_len(), c.left_pad()));
        if !left_pad.is_empty() && left_pad.len() != batch {
            candle_core::bail!("left padding is given for {} rows, the batch has {batch}", left_pad.len());
        }
        let (positions, mask) = positions_and_mask(len, seen, left_pad, embeds.dtype(), embeds.device())?;
        let (cos, sin) = self.rope.cos_sin(&positions, embeds.dtype())?;
        let ctx = Context { cos: &cos, sin: &sin, mask: mask.as_ref(), train };
        let mut x = embeds.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &ctx, cache.as_deref_mut().map(|c| (c, i)))?;
        }
        self.norm.forward(&x)
    }

    /// Hidden states [..., hidden] -> logits [..., vocab].
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Inference: logits [batch, len, vocab] for embeddings [batch, len, hidden] (see [`Decoder::hidden_states`]).
    pub fn forward(&self, embeds: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.logits(&self.hidden_states(embeds, cache, false)?)
    }

    /// Every linear layer that can carry a LoRA adapter (see [`Linear::path`] for its checkpoint name): attention
    /// projections, MLP and expert projections. The router, embeddings and `lm_head` are not included.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers.iter_mut().flat_map(DecoderLayer::linears_mut).collect()
    }
}
