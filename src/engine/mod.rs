//! The model: `model` puts the parts together (the `vision` encoder, the language `decoder`) over a model
//! directory (`config`, `checkpoint`, `tokenizer`); `preset` makes new ones, `grow` deepens one, `bundled` is the
//! one shipped; `sample` picks tokens; `linear`, `norm` and `rope` are the building blocks the parts share.
//!
//! Module trees mirror checkpoint tensor names, so a tensor's code is found by its name. Every op on a training
//! path has a backward pass: candle's fused softmax / RMSNorm / RoPE kernels record none (DESIGN.md section 3).

pub mod bundled;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod dropout;
mod gemv;
pub mod grow;
pub mod inspect;
pub mod instruction;
pub mod linear;
pub mod lora;
pub mod model;
pub mod norm;
pub mod preset;
pub mod rope;
pub mod sample;
pub mod tokenizer;
pub mod vision;

use std::path::Path;

use anyhow::Context;

/// A model directory's `config.json`, parsed; each part (decoder, SAM, CLIP, ...) reads its own section from it.
pub fn read_model_config(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

/// A fixed pseudo-random tensor for unit tests (candle's CPU RNG cannot be seeded).
#[cfg(test)]
pub(crate) fn test_pattern(shape: &[usize], seed: u64) -> candle_core::Tensor {
    let n = shape.iter().product::<usize>();
    let data: Vec<f32> = (0..n).map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0).collect();
    candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu).unwrap()
}
