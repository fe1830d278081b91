//! The CLIP and projector configurations, read from DeepSeek-OCR's `config.json` as it is.

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

/// The CLIP-L block of DeepSeek-OCR's config (`vision_config.width["clip-l-14-224"]`). The released block holds
/// `width`, `layers`, `heads`, `image_size`, `patch_size`; the rest are fixed in DeepSeek-OCR's code
/// (`vit_model_cfg`) and may be given here under that code's names. Missing keys take CLIP-L's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    #[serde(default = "default_width")]
    pub width: usize,
    #[serde(default = "default_layers")]
    pub layers: usize,
    #[serde(default = "default_heads")]
    pub heads: usize,
    /// With `patch_size`, sets the stored position grid: (224 / 14)² = 256 patch positions + the class position.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    /// The MLP width; DeepSeek-OCR's 4096 is 4 × width, the default here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_hidden_size: Option<usize>,
    /// Epsilon of every LayerNorm (DeepSeek-OCR's `layernorm_epsilon` and `pre_layernorm_epsilon` are both 1e-5).
    #[serde(default = "default_eps")]
    pub layernorm_epsilon: f64,
}

fn default_width() -> usize {
    1024
}
fn default_layers() -> usize {
    24
}
fn default_heads() -> usize {
    16
}
fn default_image_size() -> usize {
    224
}
fn default_patch_size() -> usize {
    14
}
fn default_eps() -> f64 {
    1e-5
}

/// Where the CLIP block sits in DeepSeek-OCR's config.
const CLIP_KEY: &str = "clip-l-14-224";

impl ClipConfig {
    /// The CLIP part of a parsed model config, validated.
    pub fn from_model_config(value: &serde_json::Value) -> anyhow::Result<Self> {
        let block = value
            .get("vision_config")
            .and_then(|v| v.get("width"))
            .and_then(|w| w.get(CLIP_KEY))
            .with_context(|| format!("vision_config.width[\"{CLIP_KEY}\"] is missing"))?;
        let cfg: Self =
            serde_json::from_value(block.clone()).with_context(|| format!("in vision_config.width[\"{CLIP_KEY}\"]"))?;
        cfg.validate().with_context(|| format!("in vision_config.width[\"{CLIP_KEY}\"]"))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.layers > 0 && self.width > 0, "width and layers must be positive");
        ensure!(
            self.heads > 0 && self.width.is_multiple_of(self.heads),
            "width {} must split into {} heads",
            self.width,
            self.heads
        );
        ensure!(
            self.patch_size > 0 && self.image_size >= self.patch_size,
            "image_size {} must hold at least one patch of {}",
            self.image_size,
            self.patch_size
        );
        ensure!(self.ffn_hidden_size != Some(0), "ffn_hidden_size must be positive");
        Ok(())
    }

    pub fn ffn_hidden_size(&self) -> usize {
        self.ffn_hidden_size.unwrap_or(4 * self.width)
    }

    /// Side of the stored (square) grid of patch positions.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Rows of `embeddings.position_embedding`: the grid plus the class position.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

/// DeepSeek-OCR's `projector_config`: `MlpProjector` of type "linear", Linear(input_dim -> n_embed, bias).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectorConfig {
    pub projector_type: String,
    /// CLIP width + SAM channels: the two feature maps are concatenated per position.
    pub input_dim: usize,
    /// The decoder's hidden size.
    pub n_embed: usize,
}

impl ProjectorConfig {
    pub fn from_model_config(value: &serde_json::Value) -> anyhow::Result<Self> {
        let block = value.get("projector_config").context("projector_config is missing")?;
        let cfg: Self = serde_json::from_value(block.clone()).context("in projector_config")?;
        if cfg.projector_type != "linear" {
            bail!("in projector_config: projector_type {:?} is not supported (only \"linear\")", cfg.projector_type);
        }
        ensure!(cfg.input_dim > 0 && cfg.n_embed > 0, "in projector_config: input_dim and n_embed must be positive");
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released() -> serde_json::Value {
        // The released config's vision and projector parts, as they are.
        serde_json::json!({
            "projector_config": {"input_dim": 2048, "model_type": "mlp_projector", "n_embed": 1280,
                                 "projector_type": "linear"},
            "vision_config": {"image_size": 1024, "mlp_ratio": 3.7362, "model_name": "deeplip_b_l",
                "model_type": "vision", "width": {
                    "clip-l-14-224": {"heads": 16, "image_size": 224, "layers": 24, "patch_size": 14, "width": 1024},
                    "sam_vit_b": {"downsample_channels": [512, 1024], "global_attn_indexes": [2, 5, 8, 11],
                                  "heads": 12, "layers": 12, "width": 768}}}})
    }

    #[test]
    fn reads_released_config_with_clip_l_defaults() {
        let cfg = ClipConfig::from_model_config(&released()).unwrap();
        assert_eq!((cfg.width, cfg.layers, cfg.heads, cfg.ffn_hidden_size()), (1024, 24, 16, 4096));
        assert_eq!((cfg.grid(), cfg.num_positions(), cfg.layernorm_epsilon), (16, 257, 1e-5));
        let proj = ProjectorConfig::from_model_config(&released()).unwrap();
        assert_eq!((proj.input_dim, proj.n_embed), (2048, 1280));
    }

    #[test]
    fn names_missing_block_and_bad_values() {
        let mut value = released();
        value["vision_config"]["width"].as_object_mut().unwrap().remove("clip-l-14-224");
        let err = format!("{:#}", ClipConfig::from_model_config(&value).unwrap_err());
        assert!(err.contains("clip-l-14-224"), "{err}");

        let mut value = released();
        value["vision_config"]["width"]["clip-l-14-224"]["heads"] = 7.into();
        let err = format!("{:#}", ClipConfig::from_model_config(&value).unwrap_err());
        assert!(err.contains("clip-l-14-224") && err.contains("7 heads"), "{err}");

        let mut value = released();
        value["projector_config"]["projector_type"] = "mlp_gelu".into();
        let err = format!("{:#}", ProjectorConfig::from_model_config(&value).unwrap_err());
        assert!(err.contains("mlp_gelu"), "{err}");
    }
}
