//! Model directories in the released layout: a scaled-down checkpoint under DeepSeek-OCR's own tensor names
//! loads (single file or index + shards), a missing or mis-shaped tensor is named with both shapes, and PEFT
//! adapters attach to it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{deepsynth, fails, repo};
use deepsynth::engine::model::Model;
use deepsynth::engine::preset::{self, InstructionChoice, Preset};

fn tiny(dir: &Path) -> std::path::PathBuf {
    let model = dir.join("tiny");
    preset::init(Preset::Tiny, InstructionChoice::Prompt, &model, 0).unwrap();
    model
}

fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn tiny_checkpoint_uses_the_released_tensor_names() {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("../shared/reference/deepseek-ocr/model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let released: BTreeSet<&str> = index["weight_map"].as_object().unwrap().keys().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let ours = tensors(&tiny(dir.path()));
    let stray: Vec<&String> = ours.keys().filter(|name| !released.contains(name.as_str())).collect();
    assert!(stray.is_empty(), "names the released checkpoint does not have: {stray:?}");
    // Every kind of tensor is there: vision, projector, separators, decoder, experts, head.
    for name in [
        "model.sam_model.net_3.weight",
        "model.vision_model.transformer.layers.1.self_attn.qkv_proj.weight",
        "model.projector.layers.weight",
        "model.view_seperator",
        "model.layers.2.mlp.experts.7.down_proj.weight",
        "model.layers.1.mlp.shared_experts.gate_proj.weight",
        "lm_head.weight",
    ] {
        assert!(ours.contains_key(name), "{name}");
    }
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let single = tiny(dir.path());
    let sharded = dir.path().join("sharded");
    std::fs::create_dir(&sharded).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(single.join(file), sharded.join(file)).unwrap();
    }
    let all = tensors(&single);
    let (mut first, mut second, mut map) = (HashMap::new(), HashMap::new(), serde_json::Map::new());
    for (i, (name, tensor)) in all.into_iter().enumerate() {
        let shard = if i % 2 == 0 { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" };
        map.insert(name.clone(), shard.into());
        if i % 2 == 0 {
            first.insert(name, tensor)
        } else {
            second.insert(name, tensor)
        };
    }
    candle_core::safetensors::save(&first, sharded.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&second, sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(sharded.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let ask = |model: &Path| {
        let out = deepsynth([
            "instruct",
            "--model",
            model.to_str().unwrap(),
            "--document",
            "Page text.",
            "--instruction",
            "Free OCR.",
            "--max-new-tokens",
            "8",
            "--json",
        ]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b) = (ask(&single), ask(&sharded));
    let answer = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["answer"].clone();
    assert_eq!(answer(&a), answer(&b));
}

#[test]
fn missing_and_mis_shaped_tensors_are_named_with_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path());
    let mut all = tensors(&model);
    let name = "model.layers.1.mlp.experts.3.up_proj.weight";
    let original = all.remove(name).unwrap();
    candle_core::safetensors::save(&all, model.join("model.safetensors")).unwrap();
    let err = format!("{:#}", Model::load(&model, &Device::Cpu).err().unwrap());
    assert!(err.contains(name), "{err}");

    all.insert(name.into(), original.narrow(0, 0, 10).unwrap());
    candle_core::safetensors::save(&all, model.join("model.safetensors")).unwrap();
    let err = format!("{:#}", Model::load(&model, &Device::Cpu).err().unwrap());
    assert!(err.contains(name) && err.contains("[96, 192]") && err.contains("[10, 192]"), "{err}");
    // The CLI says the same, without a panic.
    let err = fails(["instruct", "--model", model.to_str().unwrap(), "--document", "x", "--instruction", "y"]);
    assert!(err.contains(name), "{err}");
}

#[test]
fn peft_adapter_changes_answers_and_a_foreign_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny(dir.path());
    let adapter = dir.path().join("adapter");
    assert_eq!(common::random_q_proj_adapter(&model_dir, &adapter), 3);

    let run = |extra: &[&str]| {
        let mut args = vec![
            "instruct",
            "--model",
            model_dir.to_str().unwrap(),
            "--document",
            "Some page.",
            "--instruction",
            "Free OCR.",
            "--max-new-tokens",
            "16",
        ];
        args.extend(extra);
        let out = deepsynth(&args);
        assert!(out.status.success(), "{}", common::stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_ne!(run(&[]), run(&["--adapter", adapter.to_str().unwrap()]));

    // An adapter for a model with other layers names the stray tensor.
    let other = dir.path().join("other");
    preset::init(Preset::Tiny, InstructionChoice::Prompt, &other, 1).unwrap();
    let mut tensors = candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let key = tensors.keys().next().unwrap().clone();
    let renamed = key.replace("model.layers.", "model.decoder_layers.");
    let t = tensors.remove(&key).unwrap();
    tensors.insert(renamed.clone(), t);
    candle_core::safetensors::save(&tensors, adapter.join("adapter_model.safetensors")).unwrap();
    let err = fails([
        "instruct",
        "--model",
        other.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--document",
        "x",
        "--instruction",
        "y",
    ]);
    assert!(err.contains("adapter") && (err.contains(&renamed) || err.contains("only one of")), "{err}");
}
