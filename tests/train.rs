//! Training: gradients reach every trainable parameter, a tiny model overfits a handful of examples (answers
//! chosen by the instruction), resume is exact, Ctrl-C saves a checkpoint, merge equals adapter, bad configs are
//! named.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use common::{deepsynth, fails, max_abs, ok};
use deepsynth::train::config::TrainConfig;
use deepsynth::train::Trainer;

/// Four cards, two questions each: the same card has different answers to its two questions.
const PEOPLE: [(&str, &str); 4] = [("Ada", "Oslo"), ("Bruno", "Lima"), ("Chen", "Pune"), ("Dana", "Kyiv")];

fn write_data(dir: &Path) -> PathBuf {
    let mut lines = String::new();
    for (i, (name, city)) in PEOPLE.iter().enumerate() {
        let text = format!("Card {i}\nName: {name}\nCity: {city}");
        for (field, answer) in [("name", name), ("city", city)] {
            let record = serde_json::json!({"id": format!("{i}-{field}"), "source": "synth", "text": text,
                "instruction": format!("Card {i}: what is the {field}?"), "answer": answer, "answers": [answer]});
            lines.push_str(&format!("{record}\n"));
        }
    }
    let path = dir.join("cards.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// A config (TOML) in `dir` training a tiny model made on first use; `extra` lines are appended.
fn config(dir: &Path, extra: &str) -> PathBuf {
    write_data(dir);
    let text = format!(
        "model = \"model\"\ninit_preset = \"tiny\"\ntrain_file = \"cards.jsonl\"\nvalidation_file = \"cards.jsonl\"\n\
         output_dir = \"out\"\nmax_answer_tokens = 8\nlogging_steps = 1\nsave_steps = 0\neval_generate_samples = 0\n{extra}"
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn trainer(dir: &Path, extra: &str, resume: Option<&Path>) -> Trainer {
    let cfg = TrainConfig::from_file(&config(dir, extra)).unwrap();
    Trainer::new(cfg, &Device::Cpu, resume).unwrap()
}

fn nonzero_gradients(trainer: &mut Trainer) -> Vec<String> {
    let (_, grads) = trainer.gradients(&[0, 1, 2, 3, 4, 5, 6, 7], 1, 1).unwrap();
    let mut dead: Vec<String> = trainer
        .params
        .iter()
        .filter(|(name, _)| grads.get(name).is_none_or(|g| max_abs(g) == 0.0))
        .map(|(name, _)| name.clone())
        .collect();
    dead.sort();
    dead
}

#[test]
fn every_parameter_of_a_full_run_gets_a_gradient() {
    let dir = tempfile::tempdir().unwrap();
    // Everything trains: vision, projectors, instruction encoder, decoder (experts included).
    let mut t = trainer(dir.path(), "method = \"full\"\ntrain_vision = true\ninit_instruction = \"qwen2\"\n", None);
    let names: Vec<&str> = t.params.iter().map(|(n, _)| n.as_str()).collect();
    for part in [
        "model.sam_model.",
        "model.vision_model.",
        "model.projector.",
        "instruction_encoder.",
        "instruction_projector.",
        "model.layers.2.mlp.experts.",
        "lm_head.weight",
    ] {
        assert!(names.iter().any(|n| n.starts_with(part)), "{part} is not trained");
    }
    let dead = nonzero_gradients(&mut t);
    assert_learns(&t, &dead);
}

/// Every parameter has a gradient, except routed experts that the batch sent no token to (a fresh model routes
/// most tokens to a few experts; tests/parity_decoder.rs shows every expert learns when routed); some experts
/// of each MoE layer do learn.
fn assert_learns(t: &Trainer, dead: &[String]) {
    let unexplained: Vec<&String> = dead.iter().filter(|n| !n.contains(".mlp.experts.")).collect();
    assert!(unexplained.is_empty(), "no gradient for {unexplained:?}");
    for layer in [1, 2] {
        let mut experts = t.params.iter().filter(|(n, _)| n.starts_with(&format!("model.layers.{layer}.mlp.experts.")));
        assert!(experts.any(|(n, _)| !dead.contains(n)), "no expert of layer {layer} learns");
    }
}

#[test]
fn every_lora_pair_gets_a_gradient_once_b_has_moved() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(dir.path(), "max_steps = 2\nlearning_rate = 1e-2\n[lora]\nr = 2\nlora_dropout = 0.1\n", None);
    // Decoder attention, dense MLP, shared and routed experts; nothing of the frozen vision encoder.
    assert!(t.params.iter().all(|(n, _)| n.starts_with("model.layers.") && n.contains(".lora_")));
    assert!(t.params.iter().any(|(n, _)| n.contains("mlp.experts.7.down_proj.lora_B")));
    // PEFT's init: B = 0, so A has no gradient before the first step; after it, every pair has one.
    t.step().unwrap();
    let dead = nonzero_gradients(&mut t);
    assert_learns(&t, &dead);
}

#[test]
fn overfits_eight_examples_with_answers_chosen_by_the_instruction() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "method = \"full\"\nmax_steps = 80\nper_device_train_batch_size = 8\nlearning_rate = 2e-3\n\
         lr_scheduler_type = \"constant\"\nwarmup_steps = 5\n",
    );
    ok(["train", "--config", cfg.to_str().unwrap()]);
    let model = dir.path().join("out/final");
    assert!(model.join("model.safetensors").is_file() && model.join("config.json").is_file());
    let input = dir.path().join("cards.jsonl");
    let preds = dir.path().join("preds.jsonl");
    ok([
        "instruct",
        "--model",
        model.to_str().unwrap(),
        "--batch",
        input.to_str().unwrap(),
        "--output",
        preds.to_str().unwrap(),
        "--max-new-tokens",
        "8",
    ]);
    for line in std::fs::read_to_string(&preds).unwrap().lines() {
        let pred: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(pred["prediction"], pred["answers"][0], "{}", pred["id"]);
    }
}

fn lora_values(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
    trainer.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())).collect()
}

#[test]
fn resume_after_interruption_equals_an_uninterrupted_run() {
    let extra =
        "max_steps = 4\nper_device_train_batch_size = 2\ngradient_accumulation_steps = 2\nlearning_rate = 5e-3\n\
                 lr_scheduler_type = \"cosine\"\nwarmup_steps = 1\n[lora]\nr = 4\nlora_dropout = 0.2\n";
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = trainer(straight_dir.path(), extra, None);
    straight.run(&AtomicBool::new(false)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(dir.path(), extra, None);
    // A raised stop flag ends the run after its first step, with a checkpoint, as Ctrl-C does.
    let outcome = first.run(&AtomicBool::new(true)).unwrap();
    assert!(outcome.interrupted && outcome.state.global_step == 1);
    let mut resumed = trainer(dir.path(), extra, Some(&dir.path().join("out/checkpoint-1")));
    assert_eq!(resumed.state.global_step, 1);
    resumed.run(&AtomicBool::new(false)).unwrap();

    for ((name, a), (_, b)) in lora_values(&straight).iter().zip(lora_values(&resumed)) {
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "{name}: differs by {diff}");
    }
    assert!(lora_values(&straight).iter().any(|(n, v)| n.contains("lora_B") && v.iter().any(|&x| x != 0.0)));
    // The log holds each step once, the interrupted run's lines replaced by the resumed run's.
    let log = std::fs::read_to_string(dir.path().join("out/train_log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e.get("loss").is_some())
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_finishes_then_merge_equals_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "max_steps = 40\nper_device_train_batch_size = 2\n[lora]\nr = 4\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepsynth"))
        .args(["train", "--config", cfg.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = dir.path().join("out/train_log.jsonl");
    while std::fs::read_to_string(&log).map_or(true, |l| l.is_empty()) {
        assert!(child.try_wait().unwrap().is_none(), "training ended before its first step was logged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted at step") && err.contains("--resume"), "{err}");
    assert!(deepsynth::train::latest_checkpoint(&dir.path().join("out")).unwrap().is_some());

    // Without --resume the folder is refused; with it the run finishes.
    let refused = fails(["train", "--config", cfg.to_str().unwrap()]);
    assert!(refused.contains("--resume"), "{refused}");
    ok(["train", "--config", cfg.to_str().unwrap(), "--resume"]);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/final/trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["global_step"], 40);
    assert!(dir.path().join("out/loss.svg").is_file());

    // The adapter and the merged model answer alike.
    let (model, adapter, merged) = (dir.path().join("model"), dir.path().join("out/final"), dir.path().join("merged"));
    ok([
        "merge",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--output",
        merged.to_str().unwrap(),
    ]);
    let answer = |args: &[&str]| {
        let mut all = vec![
            "instruct",
            "--document",
            "Card 1\nName: Bruno",
            "--instruction",
            "Card 1: what is the name?",
            "--json",
        ];
        all.extend(args);
        let out = deepsynth(&all);
        assert!(out.status.success(), "{}", common::stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["answer"].clone()
    };
    assert_eq!(
        answer(&["--model", model.to_str().unwrap(), "--adapter", adapter.to_str().unwrap()]),
        answer(&["--model", merged.to_str().unwrap()])
    );
}

#[test]
fn bad_configs_are_named_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "learning_rat = 0.1\n");
    let err = fails(["train", "--config", cfg.to_str().unwrap()]);
    assert!(err.contains("learning_rat") && err.contains("train.toml"), "{err}");
    let cfg = config(dir.path(), "[lora]\ntarget_modules = [\"no_such_proj\"]\n");
    let err = fails(["train", "--config", cfg.to_str().unwrap()]);
    assert!(err.contains("no_such_proj"), "{err}");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn merged_weights_differ_from_the_base_only_where_adapted() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(
        dir.path(),
        "max_steps = 2\nlearning_rate = 1e-2\n[lora]\nr = 2\ntarget_modules = [\"q_proj\"]\n",
        None,
    );
    t.run(&AtomicBool::new(false)).unwrap();
    let merged = dir.path().join("merged");
    ok([
        "merge",
        "--model",
        dir.path().join("model").to_str().unwrap(),
        "--adapter",
        dir.path().join("out/final").to_str().unwrap(),
        "--output",
        merged.to_str().unwrap(),
    ]);
    let base = candle_core::safetensors::load(dir.path().join("model/model.safetensors"), &Device::Cpu).unwrap();
    let new = candle_core::safetensors::load(merged.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(base.len(), new.len());
    for (name, tensor) in &base {
        let changed = max_abs(&(tensor - &new[name]).unwrap()) > 0.0;
        assert_eq!(changed, name.ends_with("q_proj.weight"), "{name}");
    }
}

#[test]
fn the_glyph_loss_trains_a_head_kept_out_of_the_model_and_restored_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "method = \"full\"\ntrain_vision = true\nglyph_loss_weight = 1.0\nmax_steps = 8\n\
                 per_device_train_batch_size = 8\nlearning_rate = 2e-3\nlr_scheduler_type = \"constant\"\n";
    let path = config(dir.path(), extra);
    let text = std::fs::read_to_string(&path).unwrap().replace("init_preset = \"tiny\"", "init_preset = \"reader\"");
    std::fs::write(&path, text).unwrap();
    let mut t = Trainer::new(TrainConfig::from_file(&path).unwrap(), &Device::Cpu, None).unwrap();
    // A raised stop flag ends the run after its first step, with a checkpoint.
    assert!(t.run(&AtomicBool::new(true)).unwrap().interrupted);
    let checkpoint = dir.path().join("out/checkpoint-1");
    let head = candle_core::safetensors::load(checkpoint.join("glyph_head.safetensors"), &Device::Cpu).unwrap();
    let weights = candle_core::safetensors::load(checkpoint.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(!weights.keys().any(|k| k.contains("glyph")), "the head stays out of the model's weights");

    let mut resumed = Trainer::new(TrainConfig::from_file(&path).unwrap(), &Device::Cpu, Some(&checkpoint)).unwrap();
    let (_, var) = resumed.params.iter().find(|(n, _)| n == "glyph_head.weight").unwrap();
    let diff = (var.as_tensor() - &head["glyph_head.weight"]).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "the head is restored");
    let outcome = resumed.run(&AtomicBool::new(false)).unwrap();
    let glyph: Vec<f64> = outcome.state.log_history.iter().filter_map(|e| e.glyph_loss).collect();
    assert_eq!(glyph.len(), 8, "every logged step has its glyph loss");
    assert!(glyph[7] < glyph[0] * 0.9, "the glyph loss falls on repeated pages: {glyph:?}");

    let tiny = tempfile::tempdir().unwrap();
    let cfg = config(tiny.path(), "train_vision = true\nglyph_loss_weight = 1.0\n");
    let err = fails(["train", "--config", cfg.to_str().unwrap()]);
    assert!(err.contains("glyph_loss_weight"), "{err}");
}
