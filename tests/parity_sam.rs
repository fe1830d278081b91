//! The SAM encoder (ViT + neck + compressor) against the fixtures of scripts/make_sam_goldens.py: a tiny SAM with
//! every weight random, through HF transformers' SamVisionModel (native size) and DeepSeek-OCR's own
//! ImageEncoderViT (other sizes: resized position embedding and rel-pos tables); f32.
//! With DEEPSYNTH_REFERENCE_MODEL set: the real-size SAM on the regenerated random DeepSeek-OCR weights, Base mode
//! against the reference's `sam_out`, Tiny / Small / Large modes against DeepSeek-OCR's code.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, assert_every_var_has_gradient, max_abs, reference_io, reference_model_dir};
use deepsynth::engine::vision::sam::{Sam, SamConfig};

const PREFIX: &str = "model.sam_model";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam").join(name)
}

fn config() -> SamConfig {
    SamConfig::from_file(&fixture("config.json")).unwrap()
}

fn weights() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("model.safetensors"), &Device::Cpu).unwrap()
}

fn sam() -> Sam {
    Sam::new(&config(), VarBuilder::from_tensors(weights(), DType::F32, &Device::Cpu).pp(PREFIX)).unwrap()
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("golden.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn native_size_matches_transformers() {
    let (model, g) = (sam(), golden());
    let neck = model.neck_features(&g["pixels"], false).unwrap().permute((0, 3, 1, 2)).unwrap();
    assert_close(&neck, &g["neck_out"], "neck (HF last_hidden_state)", f32::INFINITY, 1e-5);
    let out = model.forward(&g["pixels"]).unwrap();
    assert_close(&out, &g["sam_out"], "after net_3", f32::INFINITY, 1e-5);
    // The batch is not degenerate: its two images give different outputs.
    assert!(max_abs(&(out.get(0).unwrap() - out.get(1).unwrap()).unwrap()) > 0.1);
}

#[test]
fn other_sizes_match_deepseek_ocr_code() {
    // 40 px: position embedding shrunk 8 -> 5, global rel-pos tables 15 -> 9 rows, windows padded, odd maps in the
    // compressor. 96 px: both enlarged (8 -> 12, 15 -> 23).
    let (model, g) = (sam(), golden());
    for size in [40, 96] {
        let out = model.forward(&g[&format!("pixels_{size}")]).unwrap();
        assert_close(&out, &g[&format!("sam_out_{size}")], &format!("{size} px"), f32::INFINITY, 1e-5);
    }
}

#[test]
fn every_weight_gets_a_gradient() {
    // A VarMap-backed model (as training builds it), set to the fixture's weights; a resized size so that the
    // position-embedding and rel-pos resizing are on the gradient path too.
    let mut varmap = VarMap::new();
    let model = Sam::new(&config(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp(PREFIX)).unwrap();
    let tensors = weights();
    varmap.load(fixture("model.safetensors")).unwrap();
    let out = model.forward_t(&golden()["pixels_40"], true).unwrap();
    let loss = (out.sqr().unwrap().sum_all().unwrap() + out.sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();

    let vars = varmap.data().lock().unwrap();
    assert_eq!(vars.len(), tensors.len(), "the model must use every tensor of the checkpoint");
    assert_every_var_has_gradient(&vars, &grads);
}

#[test]
fn lora_targets_are_the_block_linears() {
    let mut model = sam();
    let paths: Vec<String> = model.linears_mut().iter().map(|l| l.path().to_string()).collect();
    assert_eq!(paths.len(), 4 * config().layers);
    assert_eq!(
        paths[..4],
        [
            "model.sam_model.blocks.0.attn.qkv",
            "model.sam_model.blocks.0.attn.proj",
            "model.sam_model.blocks.0.mlp.lin1",
            "model.sam_model.blocks.0.mlp.lin2"
        ]
    );
}

#[test]
fn missing_or_mis_shaped_tensor_is_named() {
    let build = |tensors| Sam::new(&config(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu).pp(PREFIX));
    let mut tensors = weights();
    tensors.remove("model.sam_model.net_3.weight").unwrap();
    let msg = build(tensors).unwrap_err().to_string();
    assert!(msg.contains("model.sam_model.net_3.weight"), "{msg}");

    // A global block's rel-pos table is 2 · grid - 1 = 15 rows; a windowed block's 2 · window - 1 = 5.
    let mut tensors = weights();
    let name = "model.sam_model.blocks.1.attn.rel_pos_h";
    tensors.insert(name.into(), Tensor::zeros((5, 16), DType::F32, &Device::Cpu).unwrap());
    let msg = build(tensors).unwrap_err().to_string();
    assert!(msg.contains(name) && msg.contains("expected: [15, 16]") && msg.contains("got: [5, 16]"), "{msg}");
}

fn reference_sam(dir: &std::path::Path) -> Sam {
    let cfg = SamConfig::from_file(&dir.join("config.json")).unwrap();
    // Memory-mapped: only the SAM tensors are read.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu) };
    Sam::new(&cfg, vb.unwrap().pp(PREFIX)).unwrap()
}

/// scripts/make_sam_goldens.py's `noise_image`: [1, 3, size, size] values k / 1024 from an integer hash.
fn noise_image(size: usize, seed: u64) -> Tensor {
    let data: Vec<f32> = (0..(3 * size * size) as u64)
        .map(|i| {
            let mut h = (i.wrapping_mul(2654435761) + seed) & 0xFFFF_FFFF;
            h ^= h >> 15;
            h = h.wrapping_mul(2246822519) & 0xFFFF_FFFF;
            h ^= h >> 13;
            ((h % 2049) as i64 - 1024) as f32 / 1024.0
        })
        .collect();
    Tensor::from_vec(data, (1, 3, size, size), &Device::Cpu).unwrap()
}

#[test]
fn reference_base_mode_matches_deepseek_ocr() {
    let Some(dir) = reference_model_dir() else { return };
    let model = reference_sam(&dir);
    let io = reference_io();
    let pixels = io["images_ori"].to_dtype(DType::F32).unwrap();
    let out = model.forward(&pixels).unwrap();
    // Timed on a second run: the first one also pages the weights in from the memory map.
    let start = Instant::now();
    model.forward(&pixels).unwrap();
    eprintln!(
        "Base 1024 px: {:.2} s per page ({} threads)",
        start.elapsed().as_secs_f64(),
        candle_core::utils::get_num_threads()
    );
    assert_close(
        &out,
        &io["sam_out"].to_dtype(DType::F32).unwrap(),
        "Base 1024 vs reference sam_out",
        f32::INFINITY,
        1e-4,
    );
}

#[test]
fn reference_other_modes_match_deepseek_ocr() {
    let Some(dir) = reference_model_dir() else { return };
    let model = reference_sam(&dir);
    let want = candle_core::safetensors::load(fixture("modes.safetensors"), &Device::Cpu).unwrap();
    // (name, size, channel step of the stored subset)
    for (name, size, step) in [("tiny_512", 512, 2), ("small_640", 640, 8), ("large_1280", 1280, 16)] {
        let start = Instant::now();
        let out = model.forward(&noise_image(size, size as u64)).unwrap();
        eprintln!("{name}: {:.2} s", start.elapsed().as_secs_f64());
        let channels = out.dim(1).unwrap();
        let index = Tensor::arange_step(0u32, channels as u32, step, &Device::Cpu).unwrap();
        let subset = out.index_select(&index, 1).unwrap();
        assert_close(&subset, &want[name], name, f32::INFINITY, 1e-4);
    }
}
