//! SAM-style ViT with its neck and 16x compressor: the first half of DeepSeek-OCR's DeepEncoder.
//!
//! Pixels [B, 3, S, S] -> patch embedding (conv k = stride = patch) + absolute position embedding (bicubic-resized
//! for sizes other than the stored grid) -> blocks (windowed or global attention with decomposed relative positions)
//! -> neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) -> compressor (stride-2 3x3 convs `net_2`, `net_3`)
//! -> [B, 1024, S/64, S/64]. Tensor names follow the checkpoint under `model.sam_model`: `patch_embed.proj`,
//! `pos_embed`, `blocks.N.{norm1, attn.{qkv, proj, rel_pos_h, rel_pos_w}, norm2, mlp.{lin1, lin2}}`,
//! `neck.{0,1,2,3}`, `net_2`, `net_3`. Everything runs channels-last [B, H, W, C]; only the output is permuted.

mod block;
mod config;
mod conv;
mod softmax;

use candle_core::{Module, Result, Tensor};
use candle_nn::{init, VarBuilder};

pub use config::SamConfig;

use super::resize;
use crate::engine::linear::Linear;
use crate::engine::norm::LayerNorm;
use block::Block;
use conv::Conv2d;

/// The neck's LayerNorm2d eps: a constant of the reference code, not the blocks' `layer_norm_eps`.
const NECK_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
struct Neck {
    conv1: Conv2d,
    norm1: LayerNorm,
    conv2: Conv2d,
    norm2: LayerNorm,
}

#[derive(Debug, Clone)]
pub struct Sam {
    patch_embed: Conv2d,
    /// [1, grid, grid, width].
    pos_embed: Tensor,
    blocks: Vec<Block>,
    neck: Neck,
    /// `net_2`, `net_3`, ...
    compressor: Vec<Conv2d>,
    cfg: SamConfig,
}

impl Sam {
    /// Builds the encoder from `vb` at the SAM module's root (`model.sam_model` in a DeepSeek-OCR checkpoint). A
    /// missing tensor or one of the wrong shape is an error naming it.
    pub fn new(cfg: &SamConfig, vb: VarBuilder) -> Result<Self> {
        let (width, out) = (cfg.width, cfg.out_chans);
        let grid = cfg.grid();
        let neck = vb.pp("neck");
        let mut channels = out;
        let compressor = cfg
            .downsample_channels
            .iter()
            .enumerate()
            .map(|(i, &next)| {
                let conv = Conv2d::load(vb.pp(format!("net_{}", i + 2)), (channels, next), 3, 2, 1, false);
                channels = next;
                conv
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            patch_embed: Conv2d::load(
                vb.pp("patch_embed").pp("proj"),
                (3, width),
                cfg.patch_size,
                cfg.patch_size,
                0,
                true,
            )?,
            // Zeros, as the reference initialises it.
            pos_embed: vb.get_with_hints((1, grid, grid, width), "pos_embed", init::Init::Const(0.0))?,
            blocks: (0..cfg.layers).map(|i| Block::new(cfg, i, vb.pp("blocks").pp(i))).collect::<Result<_>>()?,
            neck: Neck {
                conv1: Conv2d::load(neck.pp(0), (width, out), 1, 1, 0, false)?,
                norm1: LayerNorm::load(neck.pp(1), out, NECK_EPS)?,
                conv2: Conv2d::load(neck.pp(2), (out, out), 3, 1, 1, false)?,
                norm2: LayerNorm::load(neck.pp(3), out, NECK_EPS)?,
            },
            compressor,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &SamConfig {
        &self.cfg
    }

    /// Inference: pixels [B, 3, S, S] (normalised) -> [B, 1024, S/64, S/64] (after `net_3`).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.forward_t(pixels, false)
    }

    /// [`Sam::forward`]; `train` enables LoRA dropout.
    pub fn forward_t(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.neck_features(pixels, train)?;
        for conv in &self.compressor {
            x = conv.forward(&x)?;
        }
        x.permute((0, 3, 1, 2))?.contiguous()
    }

    /// The neck's output before the compressor, channels-last: [B, S/16, S/16, out_chans].
    pub fn neck_features(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.patch_embed.forward(&pixels.permute((0, 2, 3, 1))?)?;
        let (_, h, w, _) = x.dims4()?;
        x = x.broadcast_add(&self.position_embedding(h, w)?)?;
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        let neck = &self.neck;
        let x = neck.norm1.forward(&neck.conv1.forward(&x)?)?;
        neck.norm2.forward(&neck.conv2.forward(&x)?)
    }

    /// The stored position embedding, resized to an h x w grid when it differs (bicubic with antialiasing, as the
    /// reference's `F.interpolate` call): [1, h, w, width].
    fn position_embedding(&self, h: usize, w: usize) -> Result<Tensor> {
        let (_, grid_h, grid_w, _) = self.pos_embed.dims4()?;
        if (h, w) == (grid_h, grid_w) {
            return Ok(self.pos_embed.clone());
        }
        resize::bicubic_antialias_grid(&self.pos_embed.squeeze(0)?, h, w)?.unsqueeze(0)
    }

    /// Every linear layer that can carry a LoRA adapter: each block's `attn.qkv`, `attn.proj`, `mlp.lin1`,
    /// `mlp.lin2`. Convolutions, norms and embeddings are not included.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        self.blocks.iter_mut().flat_map(Block::linears_mut).collect()
    }
}
