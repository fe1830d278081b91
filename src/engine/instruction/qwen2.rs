//! A Qwen2-style encoder: HF's `Qwen2Model` (no LM head), bidirectional or causal. Its layers are built from the
//! decoder's attention (here with q/k/v biases) and gated MLP. Module tree = tensor names: `embed_tokens`,
//! `layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}`, `norm`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{init, Embedding, VarBuilder};

use super::{Padding, Qwen2Config};
use crate::engine::decoder::attention::{padding_mask, Attention, Context};
use crate::engine::decoder::mlp::Mlp;
use crate::engine::linear::Linear;
use crate::engine::norm::RmsNorm;
use crate::engine::rope::RotaryEmbedding;

#[derive(Debug, Clone)]
struct Layer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Layer {
    fn new(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self> {
        let (hidden, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), hidden, eps)?,
            self_attn: Attention::load(
                vb.pp("self_attn"),
                hidden,
                cfg.num_attention_heads,
                cfg.num_key_value_heads,
                true,
            )?,
            post_attention_layernorm: RmsNorm::load(vb.pp("post_attention_layernorm"), hidden, eps)?,
            mlp: Mlp::new(vb.pp("mlp"), hidden, cfg.intermediate_size)?,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        let x = (x + self.self_attn.forward(&self.input_layernorm.forward(x)?, ctx, None)?)?;
        &x + self.mlp.forward_t(&self.post_attention_layernorm.forward(&x)?, ctx.train)?
    }
}

#[derive(Debug, Clone)]
pub struct Qwen2Encoder {
    embed_tokens: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    rope: RotaryEmbedding,
    cfg: Qwen2Config,
}

impl Qwen2Encoder {
    /// Builds it from `vb` at the encoder's root (`embed_tokens.weight`, ...). A missing tensor or one of the wrong
    /// shape is an error naming it (and both shapes).
    pub fn new(cfg: &Qwen2Config, vb: VarBuilder) -> Result<Self> {
        let embeddings = vb.pp("embed_tokens").get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "weight",
            init::Init::Randn { mean: 0.0, stdev: 1.0 },
        )?;
        Ok(Self {
            embed_tokens: Embedding::new(embeddings, cfg.hidden_size),
            layers: (0..cfg.num_hidden_layers)
                .map(|i| Layer::new(cfg, vb.pp("layers").pp(i)))
                .collect::<Result<_>>()?,
            norm: RmsNorm::load(vb.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            rope: RotaryEmbedding::new(cfg.hidden_size / cfg.num_attention_heads, cfg.rope_theta, vb.device())?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    /// Ids [batch, len] -> final-norm hidden states [batch, len, hidden]; `train` enables LoRA dropout.
    pub(super) fn forward_t(&self, ids: &Tensor, padding: &Padding, train: bool) -> Result<Tensor> {
        let x = self.embed_tokens.forward(ids)?;
        let (dtype, device) = (x.dtype(), x.device());
        let (cos, sin) = self.rope.cos_sin(&padding.positions.unsqueeze(1)?, dtype)?;
        let mask = padding_mask(&padding.real, self.cfg.causal, dtype, device)?;
        let ctx = Context { cos: &cos, sin: &sin, mask: mask.as_ref(), train };
        let mut x = x;
        for layer in &self.layers {
            x = layer.forward(&x, &ctx)?;
        }
        self.norm.forward(&x)
    }

    /// Every attention and MLP projection.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers.iter_mut().flat_map(|l| l.self_attn.linears_mut().into_iter().chain(l.mlp.linears_mut())).collect()
    }
}
