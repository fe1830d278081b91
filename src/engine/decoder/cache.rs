//! The key/value cache: per layer, the keys and values of every position seen so far (prefill, then one position
//! per generated token), and the batch's left padding, which later steps must keep masking.

use candle_core::{Result, Tensor};

/// One layer's keys and values in buffers [batch, kv_heads, capacity, head_dim], the first `len` positions used:
/// a step writes its position in place instead of copying the whole cache into a new tensor.
#[derive(Debug, Clone)]
struct Layer {
    k: Tensor,
    v: Tensor,
    len: usize,
}

/// Spare positions allocated beyond what is needed when a buffer (re)grows.
const SPARE: usize = 256;

#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<Layer>>,
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
            Some(Some(layer)) => layer.len,
            _ => 0,
        }
    }

    pub fn left_pad(&self) -> &[usize] {
        &self.left_pad
    }

    /// Appends this step's k, v [batch, kv_heads, new, head_dim] to layer `i` and returns all of the layer's k, v
    /// so far (views of its buffers).
    pub(super) fn append(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, heads, new, dim) = k.dims4()?;
        let len = self.layers[i].as_ref().map_or(0, |l| l.len);
        let capacity = self.layers[i].as_ref().map_or(0, |l| l.k.dim(2).unwrap_or(0));
        if len + new > capacity {
            // Grow: a new buffer with room to spare, holding what is cached so far.
            let size = (batch, heads, (2 * capacity).max(len + new + SPARE), dim);
            let (nk, nv) = (Tensor::zeros(size, k.dtype(), k.device())?, Tensor::zeros(size, v.dtype(), v.device())?);
            if let Some(old) = &self.layers[i] {
                nk.slice_set(&old.k.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                nv.slice_set(&old.v.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            }
            self.layers[i] = Some(Layer { k: nk, v: nv, len });
        }
        let layer = self.layers[i].as_mut().expect("allocated above");
        layer.k.slice_set(&k.contiguous()?, 2, len)?;
        layer.v.slice_set(&v.contiguous()?, 2, len)?;
        layer.len = len + new;
        Ok((layer.k.narrow(2, 0, layer.len)?, layer.v.narrow(2, 0, layer.len)?))
    }
}
