//! `deepsynth inspect`: one document through the model, every intermediate kept under the names of
//! DeepSeek-OCR's reference run (`images_ori`, `sam_out`, `clip_out`, `projector_out`, `logits`,
//! `generated_ids`), so a fine-tune can be debugged stage by stage and compared with the reference code.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};

use super::decoder::Prompt;
use super::model::{Document, Model};
use super::vision::clip::visual_features;

/// The intermediates of one prompt over `document`'s pages. `input_ids` (with one `<image>` per visual token)
/// replaces the prompt built from `instruction`; `new_tokens` greedy tokens are generated after it.
pub fn inspect(
    model: &Model,
    document: &Document,
    input_ids: Option<Vec<u32>>,
    instruction: &str,
    new_tokens: usize,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let pixels = model.pixels(document)?;
    let vision = &model.vision;
    let sam_out = vision.sam.forward_t(&pixels, false)?;
    let clip_out = vision.clip.forward_t(&sam_out, false)?;
    let projector_out = vision.projector.forward_t(&visual_features(&clip_out, &sam_out)?, false)?;
    let visual = vision.page_tokens(&projector_out, vision.grid(&pixels)?)?;
    let ids = match input_ids {
        Some(ids) => ids,
        None => model.prompt_ids(visual.dim(0)?, instruction)?,
    };
    let embeds = model.embed_prompt(&ids, &visual).context("--input-ids")?;
    let logits = model.decoder.forward(&embeds.unsqueeze(0)?, None)?.squeeze(0)?;
    let generated =
        model.decoder.generate_greedy(&Prompt::new(embeds.unsqueeze(0)?), new_tokens, Some(model.tokenizer.eos))?;
    let all_ids: Vec<i64> = ids.iter().chain(&generated[0]).map(|&id| i64::from(id)).collect();
    let n = all_ids.len();
    let cpu = |t: Tensor| t.to_device(&Device::Cpu);
    Ok(HashMap::from([
        ("images_ori".to_string(), cpu(pixels)?),
        ("sam_out".to_string(), cpu(sam_out)?),
        ("clip_out".to_string(), cpu(clip_out)?),
        ("projector_out".to_string(), cpu(projector_out)?),
        ("logits".to_string(), cpu(logits.to_dtype(DType::F32)?)?),
        ("generated_ids".to_string(), Tensor::from_vec(all_ids, n, &Device::Cpu)?),
    ]))
}

/// Reads `--input-ids`: a JSON array of token ids (or one such array inside another, as a batch of one).
pub fn read_input_ids(path: &Path) -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
    let list = match &value {
        serde_json::Value::Array(outer) if outer.len() == 1 && outer[0].is_array() => &outer[0],
        other => other,
    };
    let items = list.as_array().with_context(|| format!("{}: expected a JSON array of token ids", path.display()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .with_context(|| format!("{}: item {i} is {v}, not a token id", path.display()))
        })
        .collect()
}
