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
#[derive(Debug, Clone)]
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

    /// Pages' pixels [P, 3, S, S] -> their visual tokens, one page after another (see
    /// [`DeepEncoder::page_tokens`]). `train` enables LoRA dropout.
    pub fn visual_tokens(&self, pixels: &Tensor, train: bool) -> Result<Tensor> {
        self.page_tokens(&self.features(pixels, train)?, self.grid(pixels)?)
    }

    /// The visual-token grid of pixels [P, 3, H, W]: SAM's patches, then the stride-2 compressor convolutions.
    pub fn grid(&self, pixels: &Tensor) -> Result<(usize, usize)> {
        let (_, _, h, w) = pixels.dims4()?;
        let step = self.sam.config().stride();
        Ok((h / step, w / step))
    }

    /// Projected features [P, h·w, n_embed] -> each page's tokens [h·(w + 1) + 1, n_embed], in the order they
    /// replace the prompt's `<image>` placeholders (rows with `image_newline`, then `view_seperator`), pages
    /// concatenated.
    pub fn page_tokens(&self, projected: &Tensor, grid: (usize, usize)) -> Result<Tensor> {
        let pages = (0..projected.dim(0)?)
            .map(|p| self.projector.image_tokens(&projected.get(p)?, grid))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&pages, 0)
    }
}
