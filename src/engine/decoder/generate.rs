//! Generation with the key/value cache: one prefill pass over the prompt, then one position per step.

use std::time::{Duration, Instant};

use candle_core::{DType, Result, Tensor};

use super::{Decoder, KvCache};
use crate::engine::sample::Sampler;

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

/// The tokens generated for each row of a prompt, and where the time went.
#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<Vec<u32>>,
    /// The prompt pass (the first token's logits included).
    pub prefill: Duration,
    /// Every later step.
    pub decode: Duration,
}

impl Decoder {
    /// Continues each row of `prompt`, row `i`'s tokens chosen by `samplers[i]`, until each row has produced `eos`
    /// (kept in its output) or its sampler's `max_new_tokens`; rows that are done wait while the others go on.
    /// `on_token(row, token)` sees each token as it is chosen (for streaming) and returns whether that row goes on
    /// (false: the row stops here, e.g. its client went away).
    pub fn generate(
        &self,
        prompt: &Prompt,
        samplers: &mut [Sampler],
        eos: Option<u32>,
        mut on_token: impl FnMut(usize, u32) -> bool,
    ) -> Result<Generation> {
        let batch = prompt.embeds.dim(0)?;
        if samplers.len() != batch {
            candle_core::bail!("{} samplers for a batch of {batch} rows", samplers.len());
        }
        let mut tokens = vec![Vec::new(); batch];
        let mut stopped = vec![false; batch];
        let done = |row: &Vec<u32>, sampler: &Sampler, stopped: bool| {
            stopped || sampler.exhausted() || (eos.is_some() && row.last().copied() == eos)
        };
        let mut cache = KvCache::with_left_padding(self.layers.len(), prompt.left_pad.clone());
        let mut input = prompt.embeds.clone();
        let start = Instant::now();
        let mut prefill = None;
        while !(0..batch).all(|i| done(&tokens[i], &samplers[i], stopped[i])) {
            // Only the last position's logits choose the next token (the prompt pass skips the rest of lm_head).
            let hidden = self.hidden_states(&input, Some(&mut cache), false)?;
            let hidden = hidden.narrow(1, hidden.dim(1)? - 1, 1)?.squeeze(1)?;
            let last = self.logits(&hidden)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            let mut next = Vec::with_capacity(batch);
            for (i, ((row, sampler), logits)) in tokens.iter_mut().zip(samplers.iter_mut()).zip(&last).enumerate() {
                if done(row, sampler, stopped[i]) {
                    // A finished row still takes a position; its output is ignored.
                    next.push(eos.unwrap_or(0));
                    continue;
                }
                let token = sampler.next(logits);
                row.push(token);
                stopped[i] = !on_token(i, token);
                next.push(token);
            }
            prefill.get_or_insert_with(|| start.elapsed());
            input = self.embed(&Tensor::new(next, prompt.embeds.device())?.unsqueeze(1)?)?;
        }
        let prefill = prefill.unwrap_or_default();
        Ok(Generation { tokens, prefill, decode: start.elapsed().saturating_sub(prefill) })
    }

    /// Greedy continuation of each row: up to `max_new_tokens` ids per row, stopping a row after `eos`.
    pub fn generate_greedy(&self, prompt: &Prompt, max_new_tokens: usize, eos: Option<u32>) -> Result<Vec<Vec<u32>>> {
        let batch = prompt.embeds.dim(0)?;
        let mut samplers = vec![Sampler::greedy(max_new_tokens); batch];
        Ok(self.generate(prompt, &mut samplers, eos, |_, _| true)?.tokens)
    }
}
