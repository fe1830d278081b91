//! A BERT encoder: HF's `BertModel` without the pooler (post-norm layers, exact GELU, absolute positions), e.g.
//! all-MiniLM-L6-v2. Module tree = tensor names: `embeddings.{word,position,token_type}_embeddings`,
//! `embeddings.LayerNorm`, `encoder.layer.N.{attention.{self.{query,key,value}, output.{dense,LayerNorm}},
//! intermediate.dense, output.{dense,LayerNorm}}`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{init, Embedding, VarBuilder};

use super::{BertConfig, Padding};
use crate::engine::decoder::attention::{padding_mask, scaled_dot_product};
use crate::engine::linear::Linear;
use crate::engine::norm::LayerNorm;

#[derive(Debug, Clone)]
struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    /// [type_vocab_size, hidden]; every token is of type 0 (one segment).
    token_type_embeddings: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let hidden = cfg.hidden_size;
        // Fresh weights as HF initialises BERT: N(0, 0.02).
        let normal = init::Init::Randn { mean: 0.0, stdev: 0.02 };
        let table = |name: &str, rows: usize| vb.pp(name).get_with_hints((rows, hidden), "weight", normal);
        Ok(Self {
            word_embeddings: Embedding::new(table("word_embeddings", cfg.vocab_size)?, hidden),
            position_embeddings: Embedding::new(table("position_embeddings", cfg.max_position_embeddings)?, hidden),
            token_type_embeddings: table("token_type_embeddings", cfg.type_vocab_size)?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), hidden, cfg.layer_norm_eps)?,
        })
    }

    fn forward(&self, ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let x = (self.word_embeddings.forward(ids)? + self.position_embeddings.forward(positions)?)?;
        self.layer_norm.forward(&x.broadcast_add(&self.token_type_embeddings.get(0)?)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    /// `attention.output.dense` and `attention.output.LayerNorm`.
    attention_dense: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    /// `output.dense` and `output.LayerNorm`.
    output_dense: Linear,
    output_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let (hidden, inner, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let (attention, qkv) = (vb.pp("attention"), vb.pp("attention").pp("self"));
        Ok(Self {
            query: Linear::load(qkv.pp("query"), hidden, hidden, true)?,
            key: Linear::load(qkv.pp("key"), hidden, hidden, true)?,
            value: Linear::load(qkv.pp("value"), hidden, hidden, true)?,
            attention_dense: Linear::load(attention.pp("output").pp("dense"), hidden, hidden, true)?,
            attention_norm: LayerNorm::load(attention.pp("output").pp("LayerNorm"), hidden, eps)?,
            intermediate: Linear::load(vb.pp("intermediate").pp("dense"), hidden, inner, true)?,
            output_dense: Linear::load(vb.pp("output").pp("dense"), inner, hidden, true)?,
            output_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), hidden, eps)?,
            heads: cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let heads = |proj: &Linear| -> Result<Tensor> {
            proj.forward_t(x, train)?
                .reshape((batch, len, self.heads, hidden / self.heads))?
                .transpose(1, 2)?
                .contiguous()
        };
        let attended = scaled_dot_product(&heads(&self.query)?, &heads(&self.key)?, &heads(&self.value)?, mask)?;
        let attended = attended.transpose(1, 2)?.reshape((batch, len, hidden))?;
        let x = self.attention_norm.forward(&(self.attention_dense.forward_t(&attended, train)? + x)?)?;
        let h = self.intermediate.forward_t(&x, train)?.gelu_erf()?;
        self.output_norm.forward(&(self.output_dense.forward_t(&h, train)? + x)?)
    }
}

#[derive(Debug, Clone)]
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    cfg: BertConfig,
}

impl Bert {
    /// Builds it from `vb` at the BERT's root (`embeddings.*`, `encoder.layer.N.*`; a `pooler` is not loaded).
    /// A missing tensor or one of the wrong shape is an error naming it (and both shapes).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let layers = vb.pp("encoder").pp("layer");
        Ok(Self {
            embeddings: Embeddings::new(cfg, vb.pp("embeddings"))?,
            layers: (0..cfg.num_hidden_layers).map(|i| Layer::new(cfg, layers.pp(i))).collect::<Result<_>>()?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Ids [batch, len] (u32) and mask [batch, len] (1 = token, 0 = padding) -> the last hidden states
    /// [batch, len, hidden]. Positions count a row's real tokens only, so its padding side does not matter.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_padded(ids, &Padding::new(ids, mask, self.cfg.max_position_embeddings)?, false)
    }

    /// See [`Bert::forward`]; `train` enables LoRA dropout.
    pub(super) fn forward_padded(&self, ids: &Tensor, padding: &Padding, train: bool) -> Result<Tensor> {
        let mut x = self.embeddings.forward(ids, &padding.positions)?;
        let mask = padding_mask(&padding.real, false, x.dtype(), x.device())?;
        for layer in &self.layers {
            x = layer.forward(&x, mask.as_ref(), train)?;
        }
        Ok(x)
    }

    /// Every attention, intermediate and output projection.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.query,
                    &mut l.key,
                    &mut l.value,
                    &mut l.attention_dense,
                    &mut l.intermediate,
                    &mut l.output_dense,
                ]
            })
            .collect()
    }
}

/// The mean of each row's real tokens: hidden [batch, len, dim], mask [batch, len] (1 = token) -> [batch, dim]
/// (sentence-transformers' mean pooling; a row without tokens gives zeros).
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?;
    let sums = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
    sums.broadcast_div(&mask.sum_keepdim(1)?.clamp(1e-9, f64::INFINITY)?)
}
