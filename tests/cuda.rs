//! The engine on a CUDA device (built only with `--features cuda`; needs a GPU): the parity fixtures of the CPU
//! tests (decoder, SAM, CLIP: tiny, random, checked against HF transformers) give the same answers on the GPU, in
//! f32 and, for the decoder, in bf16; the decoder's backward pass on the GPU gives the CPU's gradients.
//! scripts/cuda_check.sh builds this test and runs it on a GPU machine.
#![cfg(feature = "cuda")]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, assert_every_var_has_gradient, max_abs};
use deepsynth::engine::decoder::{Decoder, DecoderConfig, Prompt};
use deepsynth::engine::vision::clip::{Clip, ClipConfig};
use deepsynth::engine::vision::sam::{Sam, SamConfig};

fn gpu() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

fn fixture(path: &str) -> PathBuf {
    common::repo().join("tests/fixtures").join(path)
}

fn load(path: &str, device: &Device) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(path), device).unwrap()
}

fn cpu(t: &Tensor) -> Tensor {
    t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap()
}

fn decoder(dtype: DType, device: &Device) -> Decoder {
    let cfg = DecoderConfig::from_file(&fixture("decoder/config.json")).unwrap();
    Decoder::new(&cfg, VarBuilder::from_tensors(load("decoder/model.safetensors", device), dtype, device)).unwrap()
}

#[test]
fn decoder_matches_transformers_on_gpu() {
    let dev = gpu();
    let g = load("decoder/golden.safetensors", &dev);
    let ids = g["input_ids"].to_dtype(DType::U32).unwrap();
    let model = decoder(DType::F32, &dev);
    let logits = model.forward(&model.embed(&ids).unwrap(), None).unwrap();
    assert!(logits.device().is_cuda());
    assert_close(&cpu(&logits), &cpu(&g["logits"]), "decoder f32 on GPU", 1e-4, 1e-4);

    // Greedy generation runs the cache, masks and argmax on the GPU.
    let want: Vec<Vec<u32>> = g["generated_ids"].to_dtype(DType::U32).unwrap().to_vec2().unwrap();
    let prompt = Prompt::new(model.embed(&ids).unwrap());
    let ours = model.generate_greedy(&prompt, want[0].len(), Some(model.config().eos_token_id)).unwrap();
    assert_eq!(ours, want);

    // bf16 weights and activations (as the released checkpoint is used on GPU): close to the f32 reference
    // (3.2e-2 of the largest logit on an H200; bf16 keeps 8 bits of mantissa).
    let model = decoder(DType::BF16, &dev);
    let logits = model.forward(&model.embed(&ids).unwrap(), None).unwrap();
    assert_eq!(logits.dtype(), DType::BF16);
    assert_close(&cpu(&logits), &cpu(&g["logits"]), "decoder bf16 on GPU", f32::INFINITY, 5e-2);
}

#[test]
fn decoder_gradients_on_gpu_match_cpu() {
    let run = |device: &Device| {
        let cfg = DecoderConfig::from_file(&fixture("decoder/config.json")).unwrap();
        let mut varmap = VarMap::new();
        let model = Decoder::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, device)).unwrap();
        varmap.load(fixture("decoder/model.safetensors")).unwrap();
        let ids = load("decoder/golden.safetensors", device)["input_ids"].to_dtype(DType::U32).unwrap();
        let len = ids.dim(1).unwrap();
        let embeds = model.embed(&ids.narrow(1, 0, len - 1).unwrap()).unwrap();
        let logits = model.logits(&model.hidden_states(&embeds, None, true).unwrap()).unwrap();
        let targets = ids.narrow(1, 1, len - 1).unwrap().flatten_all().unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits.flatten_to(1).unwrap(), &targets).unwrap();
        let grads = loss.backward().unwrap();
        let vars = varmap.data().lock().unwrap().clone();
        assert_every_var_has_gradient(&vars, &grads);
        let grads: HashMap<String, Tensor> =
            vars.iter().map(|(name, var)| (name.clone(), cpu(grads.get(var.as_tensor()).unwrap()))).collect();
        (cpu(&loss), grads)
    };
    let (gpu_loss, gpu_grads) = run(&gpu());
    let (cpu_loss, cpu_grads) = run(&Device::Cpu);
    assert_close(&gpu_loss, &cpu_loss, "loss", 1e-4, 1e-5);
    let mut worst = 0f32;
    for (name, want) in &cpu_grads {
        let err = max_abs(&(&gpu_grads[name] - want).unwrap()) / max_abs(want);
        assert!(err < 1e-3, "{name}: gradient differs by {err:e} of its largest magnitude");
        worst = worst.max(err);
    }
    eprintln!("{} gradients: worst relative difference GPU vs CPU {worst:.3e}", cpu_grads.len());
}

#[test]
fn sam_matches_transformers_on_gpu() {
    let dev = gpu();
    let cfg = SamConfig::from_file(&fixture("sam/config.json")).unwrap();
    let vb = VarBuilder::from_tensors(load("sam/model.safetensors", &dev), DType::F32, &dev);
    let model = Sam::new(&cfg, vb.pp("model.sam_model")).unwrap();
    let g = load("sam/golden.safetensors", &dev);
    // Native size, then 40 px (resized position embedding and rel-pos tables, padded windows).
    for (pixels, want) in [("pixels", "sam_out"), ("pixels_40", "sam_out_40")] {
        let out = model.forward(&g[pixels]).unwrap();
        assert_close(&cpu(&out), &cpu(&g[want]), &format!("SAM {pixels} on GPU"), f32::INFINITY, 1e-4);
    }
}

#[test]
fn clip_matches_transformers_on_gpu() {
    let dev = gpu();
    let config = deepsynth::engine::read_model_config(&fixture("clip/config.json")).unwrap();
    let cfg = ClipConfig::from_model_config(&config).unwrap();
    let clip =
        Clip::new(&cfg, VarBuilder::from_tensors(load("clip/model.safetensors", &dev), DType::F32, &dev)).unwrap();
    let g = load("clip/golden.safetensors", &dev);
    let out = clip.forward(&g["patch_embeds"]).unwrap();
    assert_close(&cpu(&out), &cpu(&g["clip_out"]), "CLIP on GPU", 1e-4, 1e-4);
}
