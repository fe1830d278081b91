//! Greedy decoding with the key/value cache: one prefill pass over the prompt, then one position per step.

use candle_core::{Result, Tensor, D};

use super::Decoder;

impl Decoder {
    /// Greedy continuation of prompt embeddings [batch, len, hidden] (rows of equal length, no padding). Returns
    /// per row up to `max_new_tokens` ids; a row stops after `eos` (included) while the others go on.
    pub fn generate_greedy(&self, prompt: &Tensor, max_new_tokens: usize, eos: Option<u32>) -> Result<Vec<Vec<u32>>> {
        let batch = prompt.dim(0)?;
        let mut out = vec![Vec::new(); batch];
        let mut cache = self.new_cache();
        let mut input = prompt.clone();
        for _ in 0..max_new_tokens {
            let logits = self.forward(&input, Some(&mut cache))?;
            let last = logits.narrow(1, logits.dim(1)? - 1, 1)?.squeeze(1)?;
            let next = last.argmax(D::Minus1)?.to_vec1::<u32>()?;
            for (row, &token) in out.iter_mut().zip(&next) {
                if eos.is_none() || row.last().copied() != eos {
                    row.push(token);
                }
            }
            if out.iter().all(|row| eos.is_some() && row.last().copied() == eos) {
                break;
            }
            input = self.embed(&Tensor::new(next, prompt.device())?.unsqueeze(1)?)?;
        }
        Ok(out)
    }
}
