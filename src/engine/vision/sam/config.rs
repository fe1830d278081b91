//! The SAM encoder's configuration: DeepSeek-OCR's `vision_config.width.sam_vit_b` object as it is, plus keys that
//! the released config leaves to the reference code's constants (every key has the SAM ViT-B default).

use std::path::Path;

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamConfig {
    /// Transformer width (embedding size).
    pub width: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    pub heads: usize,
    /// Blocks that attend over the whole grid; the others attend within `window_size` windows.
    pub global_attn_indexes: Vec<usize>,
    /// Output channels of the stride-2 compressor convs `net_2`, `net_3`, ... (one conv per entry).
    pub downsample_channels: Vec<usize>,
    /// The image size the weights were made for: it sets the stored position-embedding grid
    /// (`image_size / patch_size` square) and the global blocks' relative-position tables (2 · grid - 1 rows).
    /// Other input sizes resize both, as the reference does.
    pub image_size: usize,
    pub patch_size: usize,
    /// MLP hidden size; `None`: 4 · width (the reference builds SAM with mlp_ratio 4, whatever
    /// `vision_config.mlp_ratio` says: that key is not read by the SAM part).
    pub mlp_dim: Option<usize>,
    pub layer_norm_eps: f64,
    pub qkv_bias: bool,
    pub window_size: usize,
    /// Channels of the neck (`neck.0` 1x1 conv, `neck.2` 3x3 conv).
    pub out_chans: usize,
}

impl Default for SamConfig {
    /// SAM ViT-B as DeepSeek-OCR builds it.
    fn default() -> Self {
        Self {
            width: 768,
            layers: 12,
            heads: 12,
            global_attn_indexes: vec![2, 5, 8, 11],
            downsample_channels: vec![512, 1024],
            image_size: 1024,
            patch_size: 16,
            mlp_dim: None,
            layer_norm_eps: 1e-6,
            qkv_bias: true,
            window_size: 14,
            out_chans: 256,
        }
    }
}

impl SamConfig {
    /// Reads a model's `config.json` (see [`SamConfig::from_model_config`]).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let value = crate::engine::read_model_config(path)?;
        Self::from_model_config(&value).with_context(|| format!("{}: bad SAM encoder configuration", path.display()))
    }

    /// The SAM part of a parsed model config: DeepSeek-OCR's `vision_config.width.sam_vit_b`, or a bare SAM
    /// config at the top level; validated.
    pub fn from_model_config(value: &serde_json::Value) -> anyhow::Result<Self> {
        let (section, sam) = match value.pointer("/vision_config/width/sam_vit_b") {
            Some(inner) => ("vision_config.width.sam_vit_b", inner),
            None => ("top level", value),
        };
        let cfg: Self = serde_json::from_value(sam.clone()).with_context(|| format!("in {section}"))?;
        cfg.validate().with_context(|| format!("in {section}"))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.heads > 0 && self.width.is_multiple_of(self.heads),
            "width {} must split into {} heads",
            self.width,
            self.heads
        );
        ensure!(self.patch_size > 0, "patch_size must be positive");
        ensure!(
            self.image_size >= self.patch_size && self.image_size.is_multiple_of(self.patch_size),
            "image_size {} must be a positive multiple of patch_size {}",
            self.image_size,
            self.patch_size
        );
        ensure!(self.window_size > 0, "window_size must be positive (global blocks are named in global_attn_indexes)");
        if let Some(&i) = self.global_attn_indexes.iter().find(|&&i| i >= self.layers) {
            anyhow::bail!("global_attn_indexes names block {i}, but there are {} layers", self.layers);
        }
        ensure!(self.downsample_channels.iter().all(|&c| c > 0), "downsample_channels must be positive");
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    pub fn mlp_dim(&self) -> usize {
        self.mlp_dim.unwrap_or(4 * self.width)
    }

    /// Side of the stored position-embedding grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// The attention window of block `i`; `None` for a global block.
    pub fn window(&self, i: usize) -> Option<usize> {
        (!self.global_attn_indexes.contains(&i)).then_some(self.window_size)
    }

    /// Pixels per visual token along each side: the patch, halved in resolution by each compressor conv (64 for
    /// DeepSeek-OCR's 16 px patches and two convs).
    pub fn stride(&self) -> usize {
        self.patch_size << self.downsample_channels.len()
    }

    /// Channels of the encoder's output: the last compressor conv's (the neck's without a compressor).
    pub fn out_channels(&self) -> usize {
        self.downsample_channels.last().copied().unwrap_or(self.out_chans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_released_vision_config_with_vit_b_defaults() {
        // The released `vision_config`, as it is.
        let value = serde_json::json!({"vision_config": {
            "image_size": 1024, "mlp_ratio": 3.7362, "model_name": "deeplip_b_l", "model_type": "vision",
            "width": {
                "clip-l-14-224": {"heads": 16, "image_size": 224, "layers": 24, "patch_size": 14, "width": 1024},
                "sam_vit_b": {"downsample_channels": [512, 1024], "global_attn_indexes": [2, 5, 8, 11],
                              "heads": 12, "layers": 12, "width": 768}}}});
        let cfg = SamConfig::from_model_config(&value).unwrap();
        assert_eq!(cfg, SamConfig::default());
        assert_eq!((cfg.mlp_dim(), cfg.head_dim(), cfg.grid(), cfg.out_channels()), (3072, 64, 64, 1024));
        assert_eq!((cfg.window(1), cfg.window(2)), (Some(14), None));
    }

    #[test]
    fn bad_values_are_named() {
        let bad = |json: serde_json::Value| SamConfig::from_model_config(&json).unwrap_err();
        let err = format!("{:#}", bad(serde_json::json!({"width": 100, "heads": 12})));
        assert!(err.contains("width 100") && err.contains("top level"), "{err}");
        let err = format!("{:#}", bad(serde_json::json!({"layers": 4, "global_attn_indexes": [1, 4]})));
        assert!(err.contains("block 4"), "{err}");
        let err = format!("{:#}", bad(serde_json::json!({"vision_config": {"width": {"sam_vit_b": {"heads": "12"}}}})));
        assert!(err.contains("vision_config.width.sam_vit_b") && err.contains("invalid type"), "{err}");
    }
}
