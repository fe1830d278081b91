//! The DeepEncoder's CLIP-style ViT and projector against HF transformers' CLIP on the tiny fixture of
//! scripts/make_clip_goldens.py (every weight random, f32), and, with DEEPSYNTH_REFERENCE_MODEL set, against
//! DeepSeek-OCR's own outputs on the released-size random reference weights.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, assert_every_var_has_gradient, max_abs, model_config, reference_io, reference_model_dir};
use deepsynth::engine::vision::clip::{visual_features, Clip, ClipConfig, Projector, ProjectorConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip").join(name)
}

fn configs(dir: &Path) -> (ClipConfig, ProjectorConfig) {
    let value = model_config(dir);
    (ClipConfig::from_model_config(&value).unwrap(), ProjectorConfig::from_model_config(&value).unwrap())
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn weights() -> HashMap<String, Tensor> {
    load(&fixture("model.safetensors"))
}

fn tiny() -> (Clip, Projector) {
    let (clip_cfg, proj_cfg) = configs(&fixture(""));
    let vb = VarBuilder::from_tensors(weights(), DType::F32, &Device::Cpu);
    (Clip::new(&clip_cfg, vb.clone()).unwrap(), Projector::new(&proj_cfg, vb).unwrap())
}

#[test]
fn config_reads_deepseek_format() {
    let (clip, proj) = configs(&fixture(""));
    assert_eq!((clip.width, clip.layers, clip.heads, clip.ffn_hidden_size()), (32, 4, 4, 64));
    assert_eq!((clip.grid(), clip.num_positions(), clip.layernorm_epsilon), (4, 17, 1e-5));
    assert_eq!((proj.input_dim, proj.n_embed), (64, 48));
}

#[test]
fn clip_matches_transformers() {
    let (clip, _) = tiny();
    let g = load(&fixture("golden.safetensors"));
    let out = clip.forward(&g["patch_embeds"]).unwrap();
    assert_close(&out, &g["clip_out"], "tiny CLIP, 4x4 grid, batch 2", 1e-4, 1e-4);
    // The batch rows differ, and the class position is not a copy of a patch position.
    assert!(max_abs(&(out.get(0).unwrap() - out.get(1).unwrap()).unwrap()) > 0.1);
}

#[test]
fn other_grids_resize_positions_as_deepseek_ocr() {
    let (clip, _) = tiny();
    let g = load(&fixture("golden.safetensors"));
    for grid in [2, 3, 6] {
        let positions = clip.position_embeddings(grid, grid).unwrap();
        assert_close(&positions, &g[&format!("positions_{grid}")], &format!("positions {grid}x{grid}"), 1e-5, 1e-5);
        let out = clip.forward(&g[&format!("patch_embeds_{grid}")]).unwrap();
        assert_close(&out, &g[&format!("clip_out_{grid}")], &format!("tiny CLIP, {grid}x{grid} grid"), 1e-4, 1e-4);
    }
}

#[test]
fn projector_and_token_layout_match_deepseek_ocr() {
    let (_, projector) = tiny();
    let g = load(&fixture("golden.safetensors"));
    let features = visual_features(&g["clip_out"], &g["patch_embeds"]).unwrap();
    assert_eq!(features.dims(), &[2, 16, 64]);
    let projected = projector.forward_t(&features, false).unwrap();
    assert_close(&projected, &g["projector_out"], "projector", 1e-5, 1e-5);

    let tokens = projector.image_tokens(&projected.get(0).unwrap(), (4, 4)).unwrap();
    assert_close(&tokens, &g["image_tokens"], "image tokens", 1e-5, 1e-5);
    // The layout itself: 4 rows of 4 grid positions, each row closed by image_newline, then view_seperator.
    let w = weights();
    let (newline, separator) = (&w["model.image_newline"], &w["model.view_seperator"]);
    assert_eq!(tokens.dims(), &[4 * 5 + 1, 48]);
    for row in 0..4 {
        for col in 0..4 {
            let want = projected.get(0).unwrap().get(row * 4 + col).unwrap();
            assert_eq!(max_abs(&(tokens.get(row * 5 + col).unwrap() - want).unwrap()), 0.0, "({row}, {col})");
        }
        assert_eq!(max_abs(&(tokens.get(row * 5 + 4).unwrap() - newline).unwrap()), 0.0, "newline {row}");
    }
    assert_eq!(max_abs(&(tokens.get(20).unwrap() - separator).unwrap()), 0.0);
    assert!(projector.image_tokens(&projected.get(0).unwrap(), (3, 4)).is_err());
}

#[test]
fn visual_features_put_clip_first_and_drop_the_class_position() {
    let g = load(&fixture("golden.safetensors"));
    let (clip_out, sam) = (&g["clip_out"], &g["patch_embeds"]);
    let features = visual_features(clip_out, sam).unwrap();
    // Position 5 = grid (1, 1): CLIP's position 6 (after the class one), then SAM's channels at [1, 1].
    let at = features.get(1).unwrap().get(5).unwrap();
    let clip_part = clip_out.get(1).unwrap().get(6).unwrap();
    let sam_part = sam.get(1).unwrap().flatten_from(1).unwrap().narrow(1, 5, 1).unwrap().squeeze(1).unwrap();
    assert_eq!(max_abs(&(at.narrow(0, 0, 32).unwrap() - clip_part).unwrap()), 0.0);
    assert_eq!(max_abs(&(at.narrow(0, 32, 32).unwrap() - sam_part).unwrap()), 0.0);
    let err = visual_features(&clip_out.narrow(1, 0, 16).unwrap(), sam).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn every_parameter_gets_a_gradient() {
    // VarMap-backed modules (as training builds them), set to the fixture's weights. Two grids: the stored one
    // and a resized one, so that the position table trains through both paths.
    let (clip_cfg, proj_cfg) = configs(&fixture(""));
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let (clip, projector) = (Clip::new(&clip_cfg, vb.clone()).unwrap(), Projector::new(&proj_cfg, vb).unwrap());
    varmap.load(fixture("model.safetensors")).unwrap();
    let g = load(&fixture("golden.safetensors"));
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (sam, grid) in [(&g["patch_embeds"], 4), (&g["patch_embeds_3"], 3)] {
        let features = visual_features(&clip.forward_t(sam, true).unwrap(), sam).unwrap();
        let projected = projector.forward_t(&features, true).unwrap();
        let tokens = projector.image_tokens(&projected.get(0).unwrap(), (grid, grid)).unwrap();
        loss = (loss + tokens.sqr().unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();

    let vars = varmap.data().lock().unwrap();
    // Every tensor of the checkpoint but the patch_embedding conv, which DeepSeek-OCR never uses.
    let mut expected: Vec<String> = weights().into_keys().filter(|k| !k.contains("patch_embedding")).collect();
    let mut loaded: Vec<String> = vars.keys().cloned().collect();
    expected.sort();
    loaded.sort();
    assert_eq!(loaded, expected);
    assert_every_var_has_gradient(&vars, &grads);
}

#[test]
fn missing_or_mis_shaped_tensor_is_named() {
    let (clip_cfg, _) = configs(&fixture(""));
    let mut tensors = weights();
    let name = "model.vision_model.transformer.layers.3.self_attn.qkv_proj.weight";
    tensors.remove(name).unwrap();
    let err = Clip::new(&clip_cfg, VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu)).unwrap_err();
    assert!(err.to_string().contains(name), "{err}");

    tensors.insert(name.into(), Tensor::zeros((32, 32), DType::F32, &Device::Cpu).unwrap());
    let err = Clip::new(&clip_cfg, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(name) && msg.contains("expected: [96, 32]") && msg.contains("got: [32, 32]"), "{msg}");
}

/// The formula input of scripts/make_clip_goldens.py's `mode_input`: [1, width, grid, grid].
fn mode_input(width: usize, grid: usize) -> Tensor {
    let mut data = Vec::with_capacity(width * grid * grid);
    for c in 0..width {
        for i in 0..grid {
            for j in 0..grid {
                let x = 0.37 * c as f64 + 1.3 * i as f64 + 0.71 * j as f64 + 0.1 * grid as f64;
                data.push((2.0 * x.sin()) as f32);
            }
        }
    }
    Tensor::from_vec(data, (1, width, grid, grid), &Device::Cpu).unwrap()
}

/// Every `stride`-th channel of the last dim, as the modes fixture stores them.
fn every_nth_channel(t: &Tensor, stride: usize) -> Tensor {
    let last = t.rank() - 1;
    let width = t.dim(last).unwrap();
    let index = Tensor::arange_step(0u32, width as u32, stride as u32, &Device::Cpu).unwrap();
    t.index_select(&index, last).unwrap()
}

#[test]
fn reference_model_matches_deepseek_ocr() {
    let Some(dir) = reference_model_dir() else { return };
    let io = reference_io();
    let (clip_cfg, proj_cfg) = configs(&dir);
    // SAFETY: the weights file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu) }
        .unwrap();
    let (clip, projector) = (Clip::new(&clip_cfg, vb.clone()).unwrap(), Projector::new(&proj_cfg, vb).unwrap());

    let start = Instant::now();
    let clip_out = clip.forward(&io["sam_out"]).unwrap();
    eprintln!("CLIP-L on a 16x16 grid (Base, 1024 px): {:.2} s", start.elapsed().as_secs_f64());
    assert_close(&clip_out, &io["clip_out"], "reference CLIP (Base 1024)", 1e-2, 1e-4);

    let projected = projector.forward_t(&visual_features(&io["clip_out"], &io["sam_out"]).unwrap(), false).unwrap();
    assert_close(&projected, &io["projector_out"], "reference projector (Base 1024)", 1e-2, 1e-4);
    // One `<image>` id per token of the layout: 16 rows of 16 + newline, then the separator.
    let tokens = projector.image_tokens(&projected.get(0).unwrap(), (16, 16)).unwrap();
    let image_ids = io["input_ids"].to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(tokens.dim(0).unwrap(), image_ids.iter().filter(|&&id| id == 128815).count());

    // Tiny 512, Small 640, Large 1280: DeepSeek-OCR's own code on the same weights (every 32nd channel stored).
    let modes = load(&fixture("reference-modes.safetensors"));
    for grid in [8, 10, 20] {
        let positions = every_nth_channel(&clip.position_embeddings(grid, grid).unwrap(), 32);
        assert_close(&positions, &modes[&format!("positions_{grid}")], &format!("positions {grid}x{grid}"), 1e-5, 1e-5);
        let out = every_nth_channel(&clip.forward(&mode_input(clip_cfg.width, grid)).unwrap(), 32);
        assert_close(&out, &modes[&format!("clip_out_{grid}")], &format!("reference CLIP {grid}x{grid}"), 1e-2, 1e-4);
    }
}
