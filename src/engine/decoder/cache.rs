//! The key/value cache: per layer, the keys and values of every position seen so far (prefill, then one position
//! per generated token), and the batch's left padding, which later steps must keep masking.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone)]
pub struct KvCache {
    /// Per layer: k and v [batch, kv_heads, seen, head_dim].
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Per row, its number of leading padding positions; empty when there is none.
    left_pad: Vec<usize>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self::with_left_padding(num_layers, Vec::new())
    }

    /// For a batch of prompts left-padded to one length (see `Prompt::left_padded`).
    pub fn with_left_padding(num_layers: usize, left_pad: Vec<usize>) -> Self {
        Self { layers: vec![None; num_layers], left_pad }
    }

    /// Positions already cached (padding included): the index of the next position.
    pub fn seq_len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn left_pad(&self) -> &[usize] {
        &self.left_pad
    }

    /// Appends this step's k, v to layer `i` and returns all of the layer's k, v so far.
    pub(super) fn append(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let kv = match self.layers[i].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.layers[i] = Some(kv.clone());
        Ok(kv)
    }
}
