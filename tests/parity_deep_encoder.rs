//! The whole DeepEncoder on the released architecture: the reference page's pixels through SAM, CLIP and the
//! projector give DeepSeek-OCR's `projector_out`, and the visual tokens fill exactly the prompt's `<image>`
//! positions. Runs when DEEPSYNTH_REFERENCE_MODEL names the regenerated reference model directory
//! (scripts/regen_reference_weights.py); otherwise it says it was skipped.

mod common;

use candle_core::{DType, Device, IndexOp};
use candle_nn::VarBuilder;
use common::{assert_close, model_config, reference_io, reference_model_dir};
use deepsynth::engine::vision::clip::{ClipConfig, ProjectorConfig};
use deepsynth::engine::vision::sam::SamConfig;
use deepsynth::engine::vision::DeepEncoder;

/// The `<image>` token id of the released tokenizer.
const IMAGE_TOKEN: i64 = 128815;

#[test]
fn reference_page_gives_the_reference_visual_tokens() {
    let Some(dir) = reference_model_dir() else { return };
    let io = reference_io();
    let config = model_config(&dir);
    let sam = SamConfig::from_model_config(&config).unwrap();
    let clip = ClipConfig::from_model_config(&config).unwrap();
    let projector = ProjectorConfig::from_model_config(&config).unwrap();
    // SAFETY: the weights file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu) }
        .unwrap();
    let encoder = DeepEncoder::new(&sam, &clip, &projector, vb).unwrap();

    let pixels = io["images_ori"].i(0).unwrap();
    let tokens = encoder.visual_tokens(&pixels.unsqueeze(0).unwrap(), false).unwrap();
    // 16 rows of 16 positions, each row closed by image_newline, then view_seperator.
    let ids = io["input_ids"].to_vec2::<i64>().unwrap();
    let placeholders = ids[0].iter().filter(|&&id| id == IMAGE_TOKEN).count();
    assert_eq!(tokens.dims(), [placeholders, 1280]);
    let grid = tokens.narrow(0, 0, 16 * 17).unwrap().reshape((16, 17, 1280)).unwrap();
    let projected = grid.narrow(1, 0, 16).unwrap().reshape((1, 256, 1280)).unwrap();
    assert_close(&projected, &io["projector_out"], "pixels -> projector_out (Base 1024)", 1e-2, 1e-4);
}
