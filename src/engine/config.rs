//! A model directory's whole `config.json`: DeepSeek-OCR's own sections, read as they are, plus deepsynth's
//! additions under one extra key (`"deepsynth"`), every one of them with a default, so that a downloaded snapshot
//! of the released model loads unchanged.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::decoder::DecoderConfig;
use super::instruction::{InstructionConfig, InstructionMode};
use super::vision::clip::{ClipConfig, ProjectorConfig};
use super::vision::sam::SamConfig;
use crate::page::{self, Document, Mode, RenderConfig};

/// The key under which deepsynth keeps its own settings in `config.json`.
pub const DEEPSYNTH_KEY: &str = "deepsynth";

/// deepsynth's settings: how documents become pages and pixels, and how the instruction reaches the decoder.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeepsynthConfig {
    /// The resolution mode pages are resized to (DeepSeek-OCR's Base by default).
    pub mode: Mode,
    /// How text documents are drawn.
    pub render: RenderConfig,
    /// Instruction tokens in the prompt (DeepSeek-OCR's way, the default) or through an instruction encoder.
    pub instruction: InstructionConfig,
    /// Prompt mode: the instruction before the page (`<instruction>\n<image>\n`) instead of after it, so that the
    /// decoder reads the page already knowing the question.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub instruction_first: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub decoder: DecoderConfig,
    pub sam: SamConfig,
    pub clip: ClipConfig,
    pub projector: ProjectorConfig,
    pub deepsynth: DeepsynthConfig,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let value = super::read_model_config(path)?;
        Self::from_value(&value).with_context(|| format!("{}: bad model configuration", path.display()))
    }

    /// Every part's section of a parsed `config.json`, each validated, and checked against the others.
    pub fn from_value(value: &serde_json::Value) -> anyhow::Result<Self> {
        let deepsynth: DeepsynthConfig = match value.get(DEEPSYNTH_KEY) {
            Some(section) => {
                serde_json::from_value(section.clone()).with_context(|| format!("in \"{DEEPSYNTH_KEY}\""))?
            }
            None => DeepsynthConfig::default(),
        };
        if let InstructionMode::Encoder(enc) = &deepsynth.instruction.mode {
            enc.encoder.validate().with_context(|| format!("in \"{DEEPSYNTH_KEY}\".instruction.encoder"))?;
        }
        let cfg = Self {
            decoder: DecoderConfig::from_model_config(value)?,
            sam: SamConfig::from_model_config(value)?,
            clip: ClipConfig::from_model_config(value)?,
            projector: ProjectorConfig::from_model_config(value)?,
            deepsynth,
        };
        cfg.check_parts_fit()?;
        Ok(cfg)
    }

    /// The parts pass features to each other; their widths must agree.
    fn check_parts_fit(&self) -> anyhow::Result<()> {
        let sam_channels = self.sam.out_channels();
        anyhow::ensure!(
            self.clip.width == sam_channels,
            "CLIP width {} must equal SAM's output channels {} (CLIP takes SAM's features as patch embeddings)",
            self.clip.width,
            sam_channels
        );
        anyhow::ensure!(
            self.projector.input_dim == self.clip.width + sam_channels,
            "projector_config.input_dim {} must be CLIP width + SAM channels = {}",
            self.projector.input_dim,
            self.clip.width + sam_channels
        );
        anyhow::ensure!(
            self.projector.n_embed == self.decoder.hidden_size,
            "projector_config.n_embed {} must equal the decoder's hidden_size {}",
            self.projector.n_embed,
            self.decoder.hidden_size
        );
        Ok(())
    }

    /// `config.json` in DeepSeek-OCR's format (its loaders read it), with deepsynth's section added.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["DeepseekOCRForCausalLM"],
            "model_type": "deepseek_vl_v2",
            "language_config": self.decoder,
            "vision_config": {
                "image_size": self.sam.image_size,
                "model_type": "vision",
                "width": {"sam_vit_b": self.sam, "clip-l-14-224": self.clip},
            },
            "projector_config": self.projector,
            "torch_dtype": "float32",
            DEEPSYNTH_KEY: self.deepsynth,
        })
    }

    /// The side of a page's visual-token grid: SAM's patches, then the stride-2 compressor convolutions (S/64 for
    /// 16 px patches and two convs).
    pub fn grid(&self) -> usize {
        self.deepsynth.mode.size() as usize / self.sam.stride()
    }

    /// A document's pages as the model sees them (rendered text, or the image), padded to the mode's square,
    /// before normalisation.
    pub fn pages(&self, document: &Document) -> anyhow::Result<Vec<image::RgbImage>> {
        let size = self.deepsynth.mode.size();
        Ok(match document {
            Document::Text(text) => {
                page::render(text, &self.deepsynth.render)?.iter().map(|p| page::pad_square(p, size)).collect()
            }
            Document::Image(image) => vec![page::pad_square(image, size)],
        })
    }

    /// How many positions one page takes in the prompt: the grid, one `image_newline` per row, and the
    /// `view_seperator`.
    pub fn tokens_per_page(&self) -> usize {
        self.grid() * (self.grid() + 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> serde_json::Value {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/deepseek-ocr-random-2layer/config.json");
        crate::engine::read_model_config(&path).unwrap()
    }

    #[test]
    fn reads_the_reference_config_with_deepsynth_defaults() {
        let cfg = ModelConfig::from_value(&reference()).unwrap();
        assert_eq!((cfg.decoder.num_hidden_layers, cfg.sam.width, cfg.clip.width), (2, 768, 1024));
        assert_eq!(cfg.deepsynth, DeepsynthConfig::default());
        assert_eq!(cfg.tokens_per_page(), 273);
    }

    #[test]
    fn written_config_reads_back_equal() {
        let mut cfg = ModelConfig::from_value(&reference()).unwrap();
        cfg.deepsynth.mode = Mode::Small;
        let back = ModelConfig::from_value(&cfg.to_value()).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.tokens_per_page(), 10 * 11 + 1);
    }

    #[test]
    fn mismatched_widths_and_unknown_keys_are_named() {
        let mut value = reference();
        value["projector_config"]["n_embed"] = 1024.into();
        let err = format!("{:#}", ModelConfig::from_value(&value).unwrap_err());
        assert!(err.contains("n_embed 1024") && err.contains("hidden_size 1280"), "{err}");

        let mut value = reference();
        value[DEEPSYNTH_KEY] = serde_json::json!({"mode": "base", "modes": "x"});
        let err = format!("{:#}", ModelConfig::from_value(&value).unwrap_err());
        assert!(err.contains("deepsynth") && err.contains("modes"), "{err}");
    }
}
