//! The vision encoder (DeepEncoder): SAM-style ViT + compressor -> CLIP-style ViT -> projector -> visual tokens.

pub mod clip;
pub mod resize;
pub mod sam;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use clip::{visual_features, Clip, ClipConfig, Projector, ProjectorConfig};
use sam::{Sam, SamConfig};

/// DeepSeek-OCR's vision path for one view: pixels -> SAM features (compressed 16x) -> CLIP over those features
/// -> concat -> projector -> the view's visual tokens.
pub struct DeepEncoder {
    pub sam: Sam,
    pub clip: Clip,
    pub projector: Projector,
}

impl DeepEncoder {
    /// Builds it from `vb` at the checkpoint's root (`model.sam_model.*`, `model.vision_model.*`,
    /// `model.projector.*`, `model.image_newline`, `model.view_seperator`).
    pub fn new(sam: &SamConfig, clip: &ClipConfig, projector: &ProjectorConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            sam: Sam::new(sam, vb.pp("model").pp("sam_model"))?,
            clip: Clip::new(clip, vb.clone())?,
            projector: Projector::new(projector, vb)?,
        })
    }

    /// Pixels [B, 3, S, S] (normalised) -> projected features [B, h·w, n_embed] with h = w = S / 64.
    /// `train` enables LoRA dropout.
    pub fn features(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        let sam_out = self.sam.forward_t(pixels, train)?;
        let clip_out = self.clip.forward_t(&sam_out, train)?;
        self.projector.forward_t(&visual_features(&clip_out, &sam_out)?, train)
    }

    /// One page's pixels [3, S, S] -> its visual tokens [h·(w + 1) + 1, n_embed], in the order they replace the
    /// prompt's `<image>` placeholders (rows with `image_newline`, then `view_seperator`).
    pub fn image_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, h, w) = pixels.dims3()?;
        let grid = (h / 64, w / 64);
        let projected = self.features(&pixels.unsqueeze(0)?, false)?.squeeze(0)?;
        self.projector.image_tokens(&projected, grid)
    }
}
