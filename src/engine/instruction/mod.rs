//! The instruction encoder: a Qwen2-style encoder (bidirectional or causal) or a BERT reads the instruction; a
//! learned projector maps its per-token hidden states into the decoder's space, where they are inserted as the
//! instruction's embeddings. (In prompt mode none of this exists: the instruction is plain prompt tokens.)
//!
//! Tensor names: the encoder under `instruction_encoder.` with HF's own names below it (`Qwen2Model`'s or
//! `BertModel`'s), the projector as `instruction_projector.linear_1` (encoder hidden -> decoder hidden, bias),
//! GELU (exact), `instruction_projector.linear_2` (decoder hidden -> decoder hidden, bias).
//!
//! Padding: a mask marks each row's real tokens; padding keys are hidden from attention and positions count real
//! tokens only, so a row's real tokens come out as if the row were alone, padded on either side.

mod bert;
mod config;
mod qwen2;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

pub use bert::{mean_pool, Bert};
pub use config::{BertConfig, EncoderConfig, EncoderInstruction, InstructionConfig, InstructionMode, Qwen2Config};
pub use qwen2::Qwen2Encoder;

use crate::engine::linear::Linear;

/// linear_2(gelu(linear_1(x))): encoder hidden states -> decoder embeddings.
#[derive(Debug, Clone)]
pub struct Projector {
    linear_1: Linear,
    linear_2: Linear,
}

impl Projector {
    /// Reads `linear_1` [decoder_hidden, encoder_hidden] and `linear_2` [decoder_hidden, decoder_hidden] (weights
    /// and biases) from `vb` at the projector's root.
    pub fn new(vb: VarBuilder, encoder_hidden: usize, decoder_hidden: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(vb.pp("linear_1"), encoder_hidden, decoder_hidden, true)?,
            linear_2: Linear::load(vb.pp("linear_2"), decoder_hidden, decoder_hidden, true)?,
        })
    }

    /// [..., encoder_hidden] -> [..., decoder_hidden]; `train` enables LoRA dropout.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.linear_2.forward_t(&self.linear_1.forward_t(x, train)?.gelu_erf()?, train)
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 2] {
        [&mut self.linear_1, &mut self.linear_2]
    }
}

#[derive(Debug, Clone)]
enum Encoder {
    Qwen2(Qwen2Encoder),
    Bert(Bert),
}

#[derive(Debug, Clone)]
pub struct InstructionEncoder {
    encoder: Encoder,
    projector: Projector,
    cfg: EncoderConfig,
}

impl InstructionEncoder {
    /// Builds the encoder and projector from `vb` at the checkpoint's root (`instruction_encoder.*`,
    /// `instruction_projector.*`). A missing tensor or one of the wrong shape is an error naming it.
    pub fn new(cfg: &EncoderConfig, decoder_hidden: usize, vb: VarBuilder) -> Result<Self> {
        let root = vb.pp("instruction_encoder");
        let encoder = match cfg {
            EncoderConfig::Qwen2(c) => Encoder::Qwen2(Qwen2Encoder::new(c, root)?),
            EncoderConfig::Bert(c) => Encoder::Bert(Bert::new(c, root)?),
        };
        let projector = Projector::new(vb.pp("instruction_projector"), cfg.hidden_size(), decoder_hidden)?;
        Ok(Self { encoder, projector, cfg: cfg.clone() })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Ids [batch, len] (u32) and mask [batch, len] (1 = token, 0 = padding) -> the encoder's hidden states
    /// [batch, len, encoder_hidden] (inference).
    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.encode_t(ids, mask, false)
    }

    /// The projected hidden states [batch, len, decoder_hidden]: the instruction's embeddings for the decoder (see
    /// [`InstructionEncoder::encode`]); `train` enables LoRA dropout.
    pub fn forward_t(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        self.projector.forward_t(&self.encode_t(ids, mask, train)?, train)
    }

    fn encode_t(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let padding = Padding::new(ids, mask, self.cfg.max_positions())?;
        match &self.encoder {
            Encoder::Qwen2(enc) => enc.forward_t(ids, &padding, train),
            Encoder::Bert(enc) => enc.forward_padded(ids, &padding, train),
        }
    }

    /// Every linear layer of the encoder and the projector, for LoRA or full fine-tuning (see [`Linear::path`]).
    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut all = match &mut self.encoder {
            Encoder::Qwen2(enc) => enc.linears_mut(),
            Encoder::Bert(enc) => enc.linears_mut(),
        };
        all.extend(self.projector.linears_mut());
        all
    }
}

/// A batch's padding, read from its mask.
struct Padding {
    /// Per row and position: a real token (not padding).
    real: Vec<Vec<bool>>,
    /// [batch, len] u32: how many real tokens come before, in the row (padding gets its neighbour's position).
    positions: Tensor,
}

impl Padding {
    /// `mask` [batch, len] (1 = token, 0 = padding, any dtype) for `ids` [batch, len]; a row may have at most
    /// `max_positions` real tokens.
    fn new(ids: &Tensor, mask: &Tensor, max_positions: usize) -> Result<Self> {
        if ids.dims() != mask.dims() || ids.rank() != 2 {
            candle_core::bail!("instruction ids {:?} and mask {:?} must both be [batch, len]", ids.dims(), mask.dims());
        }
        let real: Vec<Vec<bool>> = mask
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .iter()
            .map(|row| row.iter().map(|&m| m != 0.0).collect())
            .collect();
        let mut positions = Vec::with_capacity(ids.elem_count());
        for row in &real {
            let mut seen = 0u32;
            for &r in row {
                seen += r as u32;
                positions.push(seen.saturating_sub(1));
            }
            if seen as usize > max_positions {
                candle_core::bail!(
                    "an instruction of {seen} tokens is longer than the encoder's max_position_embeddings \
                     {max_positions}"
                );
            }
        }
        Ok(Self { real, positions: Tensor::from_vec(positions, ids.dims2()?, ids.device())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn positions_count_real_tokens_on_either_side() {
        let ids = Tensor::zeros((2, 5), DType::U32, &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 0, 0], [0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
        let padding = Padding::new(&ids, &mask, 3).unwrap();
        assert_eq!(padding.positions.to_vec2::<u32>().unwrap(), [[0, 1, 2, 2, 2], [0, 0, 0, 1, 2]]);
        assert_eq!(padding.real[1], [false, false, true, true, true]);
        let err = Padding::new(&ids, &mask, 2).err().unwrap().to_string();
        assert!(err.contains("3 tokens") && err.contains("2"), "{err}");
        assert!(Padding::new(&ids, &mask.narrow(1, 0, 4).unwrap(), 3).is_err());
    }
}
