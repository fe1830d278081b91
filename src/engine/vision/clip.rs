//! The CLIP-style ViT of the DeepEncoder (DeepSeek-OCR's `VitModel`, CLIP-L/14 shaped) and the projector.
//!
//! DeepSeek-OCR feeds it no pixels: the SAM features after the compressor, [B, width, h, w], are its patch
//! embeddings (the checkpoint's `patch_embedding` conv is never used, so it is not loaded). The class embedding
//! goes first, position embeddings are added (the stored 16x16 grid resized for other grids), then `pre_layrnorm`
//! and pre-norm transformer layers with bidirectional attention; there is no post-layernorm. Module tree =
//! tensor names: `model.vision_model.{embeddings.{class_embedding,position_embedding}, pre_layrnorm,
//! transformer.layers.N.{layer_norm1,self_attn.{qkv_proj,out_proj},layer_norm2,mlp.{fc1,fc2}}}`.

mod config;
mod projector;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{init, VarBuilder};

pub use config::{ClipConfig, ProjectorConfig};
pub use projector::{visual_features, Projector};

use super::resize;
use crate::engine::linear::Linear;
use crate::engine::norm::LayerNorm;

/// Multi-head self-attention over all positions, with q, k, v from one fused projection.
#[derive(Debug, Clone)]
struct Attention {
    /// [3·width, width]: rows are q, then k, then v, each split into heads in order (DeepSeek-OCR views the output
    /// as [B, L, 3, heads, head_dim]).
    qkv_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv_proj: Linear::load(vb.pp("qkv_proj"), cfg.width, 3 * cfg.width, true)?,
            out_proj: Linear::load(vb.pp("out_proj"), cfg.width, cfg.width, true)?,
            heads: cfg.heads,
            head_dim: cfg.width / cfg.heads,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (batch, len, width) = x.dims3()?;
        let qkv = self.qkv_proj.forward_t(x, train)?.reshape((batch, len, 3, self.heads, self.head_dim))?;
        // [batch, heads, len, head_dim] for q (0), k (1), v (2).
        let part = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
        // Scaling q rather than the scores: len·width products instead of heads·len².
        let q = (part(0)? * (1.0 / (self.head_dim as f64).sqrt()))?;
        let (k, v) = (part(1)?, part(2)?);
        let scores = q.matmul(&k.t()?)?;
        // Softmax in f32, with plain ops: the fused softmax has no backward.
        let probs = candle_nn::ops::softmax(&scores.to_dtype(DType::F32)?, D::Minus1)?.to_dtype(q.dtype())?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, width))?;
        self.out_proj.forward_t(&out, train)
    }
}

/// fc2(quick_gelu(fc1(x))), quick_gelu(x) = x · sigmoid(1.702 x).
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let ffn = cfg.ffn_hidden_size();
        Ok(Self {
            fc1: Linear::load(vb.pp("fc1"), cfg.width, ffn, true)?,
            fc2: Linear::load(vb.pp("fc2"), ffn, cfg.width, true)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.fc1.forward_t(x, train)?;
        let h = (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?;
        self.fc2.forward_t(&h, train)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    layer_norm1: LayerNorm,
    self_attn: Attention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl Layer {
    fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.layernorm_epsilon;
        Ok(Self {
            layer_norm1: LayerNorm::load(vb.pp("layer_norm1"), cfg.width, eps)?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::load(vb.pp("layer_norm2"), cfg.width, eps)?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = (x + self.self_attn.forward_t(&self.layer_norm1.forward(x)?, train)?)?;
        &x + self.mlp.forward_t(&self.layer_norm2.forward(&x)?, train)?
    }
}

#[derive(Debug, Clone)]
pub struct Clip {
    /// [width]
    class_embedding: Tensor,
    /// [1 + grid², width]: the class position, then the grid row by row.
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    layers: Vec<Layer>,
    cfg: ClipConfig,
}

impl Clip {
    /// Builds the ViT from `vb` at the checkpoint's root (tensors `model.vision_model.*`). A missing tensor or one
    /// of the wrong shape is an error naming it.
    pub fn new(cfg: &ClipConfig, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("model").pp("vision_model");
        let embeddings = vb.pp("embeddings");
        // Fresh weights as PyTorch makes them: randn for the class embedding, N(0, 1) for nn.Embedding.
        let randn = init::Init::Randn { mean: 0.0, stdev: 1.0 };
        let class_embedding = embeddings.get_with_hints(cfg.width, "class_embedding", randn)?;
        let position_embedding =
            embeddings.pp("position_embedding").get_with_hints((cfg.num_positions(), cfg.width), "weight", randn)?;
        let layers = vb.pp("transformer").pp("layers");
        Ok(Self {
            class_embedding,
            position_embedding,
            pre_layrnorm: LayerNorm::load(vb.pp("pre_layrnorm"), cfg.width, cfg.layernorm_epsilon)?,
            layers: (0..cfg.layers).map(|i| Layer::new(cfg, layers.pp(i))).collect::<Result<_>>()?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// The position embeddings for an h x w grid, [1 + h·w, width]: the stored ones for the stored grid, else the
    /// stored grid resized as DeepSeek-OCR's `get_abs_pos` does (bicubic, antialiased, in f32), the class
    /// position kept as it is.
    pub fn position_embeddings(&self, h: usize, w: usize) -> Result<Tensor> {
        let grid = self.cfg.grid();
        if (h, w) == (grid, grid) {
            return Ok(self.position_embedding.clone());
        }
        let dtype = self.position_embedding.dtype();
        let stored = self.position_embedding.narrow(0, 1, grid * grid)?.reshape((grid, grid, self.cfg.width))?;
        let resized = resize::bicubic_antialias_grid(&stored.to_dtype(DType::F32)?, h, w)?;
        Tensor::cat(&[self.position_embedding.narrow(0, 0, 1)?, resized.reshape((h * w, ()))?.to_dtype(dtype)?], 0)
    }

    /// Patch embeddings [B, width, h, w] (the SAM features) -> hidden states [B, 1 + h·w, width], the class
    /// position first. `train` enables LoRA dropout.
    pub fn forward_t(&self, patch_embeds: &Tensor, train: bool) -> Result<Tensor> {
        let (batch, channels, h, w) = patch_embeds.dims4()?;
        if channels != self.cfg.width {
            candle_core::bail!("CLIP expects {} feature channels, got {channels}", self.cfg.width);
        }
        let patches = patch_embeds.flatten_from(2)?.transpose(1, 2)?;
        let class = self.class_embedding.reshape((1, 1, channels))?.broadcast_as((batch, 1, channels))?;
        let x = Tensor::cat(&[class, patches], 1)?.broadcast_add(&self.position_embeddings(h, w)?)?;
        let mut x = self.pre_layrnorm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward_t(&x, train)?;
        }
        Ok(x)
    }

    /// Inference: [`Clip::forward_t`] without dropout.
    pub fn forward(&self, patch_embeds: &Tensor) -> Result<Tensor> {
        self.forward_t(patch_embeds, false)
    }

    /// Every linear layer that can carry a LoRA adapter: each layer's `qkv_proj`, `out_proj`, `fc1`, `fc2`.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.self_attn.qkv_proj, &mut l.self_attn.out_proj, &mut l.mlp.fc1, &mut l.mlp.fc2])
            .collect()
    }
}
