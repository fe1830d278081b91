//! From the two feature maps to the visual tokens the decoder sees: concatenation, the linear projector, and the
//! 2-D layout with `image_newline` after each row and `view_seperator` (sic, the checkpoint's name) at the end.

use candle_core::{Result, Tensor};
use candle_nn::{init, VarBuilder};

use super::ProjectorConfig;
use crate::engine::linear::Linear;

/// Per grid position, the CLIP output (class position dropped) then the SAM features, as DeepSeek-OCR
/// concatenates them: clip_out [B, 1 + h·w, c1], sam_out [B, c2, h, w] -> [B, h·w, c1 + c2].
pub fn visual_features(clip_out: &Tensor, sam_out: &Tensor) -> Result<Tensor> {
    let (batch, len, _) = clip_out.dims3()?;
    let (sam_batch, _, h, w) = sam_out.dims4()?;
    if sam_batch != batch || len != h * w + 1 {
        candle_core::bail!(
            "CLIP output {:?} does not fit SAM features {:?}: expected [{sam_batch}, 1 + {h}·{w}, _]",
            clip_out.dims(),
            sam_out.dims()
        );
    }
    let sam = sam_out.flatten_from(2)?.transpose(1, 2)?;
    Tensor::cat(&[&clip_out.narrow(1, 1, h * w)?, &sam], 2)
}

/// DeepSeek-OCR's `MlpProjector` of type "linear" plus the two learned layout vectors.
#[derive(Debug, Clone)]
pub struct Projector {
    layers: Linear,
    /// [n_embed], after each row of the grid.
    image_newline: Tensor,
    /// [n_embed], after the whole view.
    view_seperator: Tensor,
}

impl Projector {
    /// Builds it from `vb` at the checkpoint's root: `model.projector.layers`, `model.image_newline`,
    /// `model.view_seperator`.
    pub fn new(cfg: &ProjectorConfig, vb: VarBuilder) -> Result<Self> {
        let model = vb.pp("model");
        // Fresh layout vectors as DeepSeek-OCR draws them: randn / sqrt(n_embed).
        let randn = init::Init::Randn { mean: 0.0, stdev: 1.0 / (cfg.n_embed as f64).sqrt() };
        Ok(Self {
            layers: Linear::load(model.pp("projector").pp("layers"), cfg.input_dim, cfg.n_embed, true)?,
            image_newline: model.get_with_hints(cfg.n_embed, "image_newline", randn)?,
            view_seperator: model.get_with_hints(cfg.n_embed, "view_seperator", randn)?,
        })
    }

    /// Features [..., input_dim] -> [..., n_embed]. `train` enables LoRA dropout.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        self.layers.forward_t(features, train)
    }

    /// One view's projected grid [h·w, n] (row-major) -> its tokens [h·(w + 1) + 1, n]: each row followed by
    /// `image_newline`, then `view_seperator` (Base-style single view, no tiles).
    pub fn image_tokens(&self, projected: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let (len, n) = projected.dims2()?;
        if len != h * w {
            candle_core::bail!("{len} projected positions do not form a {h}x{w} grid");
        }
        let newlines = self.image_newline.reshape((1, 1, n))?.broadcast_as((h, 1, n))?;
        let rows = Tensor::cat(&[&projected.reshape((h, w, n))?, &newlines], 1)?.reshape((h * (w + 1), n))?;
        Tensor::cat(&[&rows, &self.view_seperator.reshape((1, n))?], 0)
    }

    /// The projector's linear layer, for LoRA.
    pub fn linears_mut(&mut self) -> [&mut Linear; 1] {
        [&mut self.layers]
    }
}
