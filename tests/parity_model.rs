//! The whole model against DeepSeek-OCR's own code on the released architecture (2 decoder layers, real vision
//! dims, random weights): `deepsynth inspect` on the reference page with the reference prompt ids gives the
//! reference run's pixels, SAM / CLIP / projector outputs, logits and greedy ids. Runs when
//! DEEPSYNTH_REFERENCE_MODEL names the regenerated model directory (scripts/regen_reference_weights.py), about
//! a minute; otherwise it says it was skipped.

mod common;

use candle_core::{DType, Device, IndexOp};
use common::{assert_close, ok, reference_io, reference_model_dir, repo};

#[test]
fn inspect_on_the_reference_page_matches_the_reference_run() {
    let Some(dir) = reference_model_dir() else { return };
    let io = reference_io();
    let work = tempfile::tempdir().unwrap();
    let ids_file = work.path().join("input_ids.json");
    let ids = io["input_ids"].to_vec2::<i64>().unwrap();
    std::fs::write(&ids_file, serde_json::to_string(&ids).unwrap()).unwrap();
    let output = work.path().join("inspect.safetensors");
    let page = repo().join("../shared/reference/deepseek-ocr-random-2layer/input-base-1024.png");
    ok([
        "inspect",
        "--model",
        dir.to_str().unwrap(),
        "--image",
        page.to_str().unwrap(),
        "--mode",
        "base",
        "--input-ids",
        ids_file.to_str().unwrap(),
        "--new-tokens",
        "4",
        "--output",
        output.to_str().unwrap(),
    ]);
    let ours = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();

    assert_close(&ours["images_ori"], &io["images_ori"], "images_ori", 1e-6, 1e-6);
    assert_close(&ours["sam_out"], &io["sam_out"], "sam_out", 1e-2, 1e-4);
    assert_close(&ours["clip_out"], &io["clip_out"], "clip_out", 1e-2, 1e-4);
    assert_close(&ours["projector_out"], &io["projector_out"], "projector_out", 1e-2, 1e-4);
    let logits = &ours["logits"];
    assert_eq!(logits.dims(), [ids[0].len(), 129280]);
    assert_close(&logits.i(0..8).unwrap(), &io["logits_first8"], "logits, positions 0-7", 1e-2, 1e-4);
    let last = logits.i(ids[0].len() - 1..).unwrap();
    assert_close(&last, &io["logits_last"], "logits, last position", 1e-2, 1e-4);
    let generated = ours["generated_ids"].to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(generated, io["generated_ids"].to_vec1::<i64>().unwrap(), "greedy ids");
}
