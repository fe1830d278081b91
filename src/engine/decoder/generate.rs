//! Greedy decoding with the key/value cache: one prefill pass over the prompt, then one position per step.

use candle_core::{Result, Tensor, D};

use super::{Decoder, KvCache};

/// Prompt embeddings [batch, len, hidden] with, per row, how many leading positions are padding.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub embeds: Tensor,
    pub left_pad: Vec<usize>,
}

impl Prompt {
    /// Rows of equal length, no padding.
    pub fn new(embeds: Tensor) -> Self {
        Self { embeds, left_pad: Vec::new() }
    }

    /// Rows [len_i, hidden] of any lengths, left-padded with zeros to the longest, so that every row's next
    /// token is predicted at the same (last) position.
    pub fn left_padded(rows: &[Tensor]) -> Result<Self> {
        let lens = rows.iter().map(|r| r.dim(0)).collect::<Result<Vec<_>>>()?;
        let (Some(&longest), Some(first)) = (lens.iter().max(), rows.first()) else {
            candle_core::bail!("a prompt needs at least one row");
        };
        let hidden = first.dim(1)?;
        let padded = rows
            .iter()
            .zip(&lens)
            .map(|(row, &len)| {
                let pad = Tensor::zeros((longest - len, hidden), row.dtype(), row.device())?;
                Tensor::cat(&[&pad, row], 0)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { embeds: Tensor::stack(&padded, 0)?, left_pad: lens.iter().map(|len| longest - len).collect() })
    }
}

impl Decoder {
    /// Greedy continuation of each row of `prompt`: up to `max_new_tokens` ids per row; a row stops after `eos`
    /// (included) while the others go on.
    pub fn generate_greedy(&self, prompt: &Prompt, max_new_tokens: usize, eos: Option<u32>) -> Result<Vec<Vec<u32>>> {
        let batch = prompt.embeds.dim(0)?;
        let done = |row: &Vec<u32>| eos.is_some() && row.last().copied() == eos;
        let mut out = vec![Vec::new(); batch];
        let mut cache = KvCache::with_left_padding(self.layers.len(), prompt.left_pad.clone());
        let mut input = prompt.embeds.clone();
        for _ in 0..max_new_tokens {
            let logits = self.forward(&input, Some(&mut cache))?;
            let last = logits.narrow(1, logits.dim(1)? - 1, 1)?.squeeze(1)?;
            let next = last.argmax(D::Minus1)?.to_vec1::<u32>()?;
            for (row, &token) in out.iter_mut().zip(&next) {
                if !done(row) {
                    row.push(token);
                }
            }
            if out.iter().all(done) {
                break;
            }
            input = self.embed(&Tensor::new(next, prompt.embeds.device())?.unsqueeze(1)?)?;
        }
        Ok(out)
    }
}
