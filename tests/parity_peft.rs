//! LoRA adapters in PEFT's format against PEFT itself, both ways, on the decoder fixture (tests/fixtures/decoder/):
//! adapters written by PEFT load into deepsynth with PEFT's logits, and the adapter deepsynth writes, loaded by
//! `PeftModel.from_pretrained` onto the transformers decoder, gives deepsynth's logits.
//!
//! Fixtures in tests/fixtures/peft/, regenerated in this order (the script reads deepsynth-adapter/):
//!   DEEPSYNTH_WRITE_PEFT_FIXTURE=1 cargo test --test parity_peft
//!   /work/venv/bin/python scripts/make_peft_goldens.py

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{assert_close, max_abs, repo};
use deepsynth::engine::decoder::{Decoder, DecoderConfig};
use deepsynth::engine::lora::{load_adapter, save_adapter, AdapterConfig, ADAPTER_CONFIG, ADAPTER_WEIGHTS};

fn peft_fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/peft").join(name)
}

fn decoder() -> Decoder {
    let dir = repo().join("tests/fixtures/decoder");
    let cfg = DecoderConfig::from_file(&dir.join("config.json")).unwrap();
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    Decoder::new(&cfg, VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu)).unwrap()
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(peft_fixture("golden.safetensors"), &Device::Cpu).unwrap()
}

/// The logits of the golden input, and how far they are from the base model's (the adapter must matter).
fn logits(model: &Decoder) -> (Tensor, f32) {
    let ids = golden()["input_ids"].to_dtype(DType::U32).unwrap();
    let logits = model.forward(&model.embed(&ids).unwrap(), None).unwrap();
    let base = decoder().forward(&model.embed(&ids).unwrap(), None).unwrap();
    let moved = max_abs(&(&logits - base).unwrap());
    (logits, moved)
}

/// Loads a PEFT-written adapter; checks the layer count and the logits against PEFT's. Returns the model.
fn check_peft_adapter(name: &str, layers: usize) -> Decoder {
    let mut model = decoder();
    assert_eq!(load_adapter(&peft_fixture(name), model.linears_mut(), &Device::Cpu).unwrap(), layers);
    let (ours, moved) = logits(&model);
    assert!(moved > 1.0, "{name} barely changes the logits ({moved}): the comparison would prove little");
    let key = format!("{}_logits", name.replace('-', "_"));
    assert_close(&ours, &golden()[&key], name, 1e-5, 1e-6);
    model
}

fn scale_of(model: &mut Decoder, path: &str) -> f64 {
    let linear = model.linears_mut().into_iter().find(|l| l.path() == path).unwrap();
    linear.lora().unwrap().scale()
}

#[test]
fn peft_written_adapter_gives_peft_logits() {
    // Every projection: 3 layers x 4 attention, the dense MLP's 3, and 2 MoE layers x (8 experts + shared) x 3.
    let mut model = check_peft_adapter("peft-adapter", 12 + 3 + 2 * 9 * 3);
    assert_eq!(scale_of(&mut model, "model.layers.2.mlp.experts.7.up_proj"), 8.0 / 4.0);
}

#[test]
fn peft_written_rslora_adapter_gives_peft_logits() {
    // q_proj and v_proj of 3 layers, and every down_proj: the dense MLP's, 2 MoE layers x (8 experts + shared).
    let mut model = check_peft_adapter("peft-rslora-adapter", 6 + 1 + 2 * 9);
    // rsLoRA: alpha / sqrt(r) rather than alpha / r.
    assert_eq!(scale_of(&mut model, "model.layers.0.self_attn.q_proj"), 8.0 / 2.0);
}

/// Deterministic values in [-1, 1) with 24 significant bits (exact in f32): the same bytes on every machine.
fn pattern(shape: (usize, usize), seed: u64, scale: f32) -> Tensor {
    let data: Vec<f32> = (0..(shape.0 * shape.1) as u64)
        .map(|i| {
            let h = (i ^ (seed << 32)).wrapping_add(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            ((h >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// The decoder with a rank-2 adapter (alpha 4) on every adaptable projection, saved to `dir` by deepsynth.
fn save_deepsynth_adapter(dir: &Path) -> Decoder {
    let (rank, alpha) = (2, 4.0);
    let mut model = decoder();
    for (i, linear) in model.linears_mut().into_iter().enumerate() {
        let (out_dim, in_dim) = linear.weight().dims2().unwrap();
        // Updates comparable to the base projections (A ~ 1/sqrt(in), as PEFT's init), so that they matter.
        let a = pattern((rank, in_dim), 2 * i as u64, 1.0 / (in_dim as f32).sqrt());
        let b = pattern((out_dim, rank), 2 * i as u64 + 1, 0.5 / (rank as f32).sqrt());
        linear.attach_lora(a, b, alpha, 0.0).unwrap();
    }
    let cfg: AdapterConfig = serde_json::from_value(serde_json::json!({
        "peft_type": "LORA", "r": rank, "lora_alpha": alpha,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "base_model_name_or_path": "tests/fixtures/decoder"}))
    .unwrap();
    let linears = model.linears_mut().into_iter().map(|l| &*l).collect();
    assert_eq!(save_adapter(dir, &cfg, linears).unwrap(), 69);
    model
}

#[test]
fn deepsynth_written_adapter_gives_the_logits_peft_computes_with_it() {
    let fixture = peft_fixture("deepsynth-adapter");
    if std::env::var_os("DEEPSYNTH_WRITE_PEFT_FIXTURE").is_some() {
        save_deepsynth_adapter(&fixture);
        eprintln!("wrote {}: now run scripts/make_peft_goldens.py for its golden logits", fixture.display());
        return;
    }
    let fresh = tempfile::tempdir().unwrap();
    let model = save_deepsynth_adapter(fresh.path());
    // The fixture PEFT read is what deepsynth writes today.
    for file in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
        let committed = std::fs::read(fixture.join(file)).unwrap();
        assert!(committed == std::fs::read(fresh.path().join(file)).unwrap(), "{file} differs from a fresh save");
    }
    let (ours, moved) = logits(&model);
    assert!(moved > 1.0, "the adapter barely changes the logits ({moved})");
    assert_close(&ours, &golden()["deepsynth_adapter_logits"], "deepsynth adapter in PEFT", 1e-5, 1e-6);

    // Loaded back from the fixture, deepsynth computes the same.
    let mut loaded = decoder();
    assert_eq!(load_adapter(&fixture, loaded.linears_mut(), &Device::Cpu).unwrap(), 69);
    assert_eq!(max_abs(&(logits(&loaded).0 - ours).unwrap()), 0.0);
}
