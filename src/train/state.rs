//! Checkpoints (`checkpoint-N/`, `final/`), `trainer_state.json`, and `train_log.jsonl`.
//!
//! A checkpoint holds the trained weights (a PEFT adapter for LoRA pairs; a complete model directory when full
//! tensors train), `optimizer.safetensors` (AdamW moments) and `trainer_state.json` (step, log history, best
//! evaluation). It is written to `checkpoint-N.partial/` and renamed, so a crash never leaves half a checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::Params;
use super::{LogEntry, Trainer};
use crate::engine::checkpoint::{self, WEIGHTS};
use crate::engine::lora::{self, AdapterConfig, ADAPTER_WEIGHTS};

pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const TRAINER_STATE: &str = "trainer_state.json";
/// The run's log, one JSON object per line (training windows and evaluations).
pub const TRAINER_STATE_LOG: &str = "train_log.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    pub global_step: usize,
    pub total_steps: usize,
    /// Lowest validation loss so far and its step.
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// Evaluations since the best one (for early stopping).
    pub evals_without_improvement: usize,
    pub trainable_parameters: usize,
    pub log_history: Vec<LogEntry>,
}

impl TrainerState {
    pub fn new(total_steps: usize, params: &Params) -> Self {
        Self {
            global_step: 0,
            total_steps,
            best_metric: None,
            best_step: None,
            evals_without_improvement: 0,
            trainable_parameters: params.iter().map(|(_, v)| v.elem_count()).sum(),
            log_history: Vec::new(),
        }
    }

    pub fn read(checkpoint: &Path) -> anyhow::Result<Self> {
        let path = checkpoint.join(TRAINER_STATE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a trainer state", path.display()))
    }

    /// Records an evaluation's loss; returns whether early stopping's patience has run out.
    pub fn record_eval(&mut self, loss: f64, patience: Option<usize>) -> bool {
        if self.best_metric.is_none_or(|best| loss < best) {
            self.best_metric = Some(loss);
            self.best_step = Some(self.global_step);
            self.evals_without_improvement = 0;
        } else {
            self.evals_without_improvement += 1;
        }
        patience.is_some_and(|p| self.evals_without_improvement >= p)
    }
}

pub fn checkpoint_dir(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("checkpoint-{step}"))
}

/// The checkpoint with the highest step in `output_dir`, if any.
pub fn latest_checkpoint(output_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    Ok(checkpoints(output_dir)?.into_iter().max_by_key(|(step, _)| *step).map(|(_, p)| p))
}

fn checkpoints(output_dir: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    if !output_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(output_dir).with_context(|| format!("reading {}", output_dir.display()))? {
        let path = entry?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|n| n.parse().ok());
        if let Some(step) = step {
            if path.join(TRAINER_STATE).is_file() {
                found.push((step, path));
            }
        }
    }
    Ok(found)
}

/// Writes `checkpoint-<step>/` atomically, then keeps only the newest `save_total_limit` checkpoints and the best.
pub fn save_checkpoint(trainer: &Trainer, _is_best: bool) -> anyhow::Result<PathBuf> {
    let out = &trainer.cfg.output_dir;
    let dir = checkpoint_dir(out, trainer.state.global_step);
    write_dir(&dir, |tmp| {
        save_weights(trainer, tmp)?;
        checkpoint::save_atomic(&trainer.optimizer.state_tensors()?, &tmp.join(OPTIMIZER))?;
        crate::data::io::write_atomic(
            &tmp.join(TRAINER_STATE),
            serde_json::to_string_pretty(&trainer.state)?.as_bytes(),
        )
    })?;
    let mut all = checkpoints(out)?;
    all.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    let keep = trainer.cfg.save_total_limit.max(1);
    for (i, (step, path)) in all.iter().enumerate() {
        if i >= keep && trainer.state.best_step != Some(*step) {
            std::fs::remove_dir_all(path).with_context(|| format!("removing old {}", path.display()))?;
        }
    }
    Ok(dir)
}

/// Writes `final/`: the trained weights (adapter and/or model directory) and the trainer state.
pub fn save_final(trainer: &Trainer) -> anyhow::Result<PathBuf> {
    let dir = trainer.cfg.output_dir.join("final");
    write_dir(&dir, |tmp| {
        save_weights(trainer, tmp)?;
        crate::data::io::write_atomic(
            &tmp.join(TRAINER_STATE),
            serde_json::to_string_pretty(&trainer.state)?.as_bytes(),
        )
    })?;
    Ok(dir)
}

/// Fills `<dir>.partial/` with `fill`, then renames it to `dir` (replacing an older one).
fn write_dir(dir: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let name = dir.file_name().context("checkpoint folder has no name")?.to_string_lossy().into_owned();
    let tmp = dir.with_file_name(format!("{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    fill(&tmp).with_context(|| format!("writing {}", dir.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("cannot write {}", dir.display()))
}

/// LoRA pairs as a PEFT adapter; full tensors as a complete model directory (the base checkpoint with the
/// trained tensors replaced, plus config and tokenizer), so a checkpoint works with `instruct --model`.
fn save_weights(trainer: &Trainer, dir: &Path) -> anyhow::Result<()> {
    let (head, params): (Vec<_>, Vec<_>) = trainer.params.iter().partition(|(n, _)| n == super::glyph::NAME);
    if !head.is_empty() {
        let tensors: HashMap<String, Tensor> = head
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<_>>()?;
        checkpoint::save_atomic(&tensors, &dir.join(super::glyph::FILE))?;
    }
    let (lora_params, full): (Vec<_>, Vec<_>) = params.into_iter().partition(|(n, _)| n.contains(".lora_"));
    if !lora_params.is_empty() {
        let lora = &trainer.cfg.lora;
        let cfg: AdapterConfig = serde_json::from_value(serde_json::json!({
            "peft_type": "LORA", "r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
            "target_modules": lora.target_modules, "use_rslora": lora.use_rslora,
            "base_model_name_or_path": trainer.cfg.model, "task_type": "CAUSAL_LM", "bias": "none",
            "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "modules_to_save": null,
        }))?;
        let tensors: HashMap<String, Tensor> =
            lora_params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        lora::write_adapter(dir, &cfg, &tensors)?;
    }
    if !full.is_empty() {
        let mut tensors = checkpoint::load_all(&trainer.model.dir)?;
        for (name, var) in full {
            tensors.insert(name.clone(), var.as_tensor().to_device(&Device::Cpu)?);
        }
        checkpoint::write_model_dir(&trainer.model.dir, dir, &tensors)?;
    }
    Ok(())
}

/// Sets the trainable parameters from a checkpoint's adapter and/or model weights.
pub fn load_params(checkpoint: &Path, params: &Params) -> anyhow::Result<()> {
    let device = params.first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu);
    let mut stored = HashMap::new();
    for (file, prefix) in [(ADAPTER_WEIGHTS, lora::KEY_PREFIX), (WEIGHTS, ""), (super::glyph::FILE, "")] {
        let path = checkpoint.join(file);
        if path.is_file() {
            let tensors = candle_core::safetensors::load(&path, &device)
                .with_context(|| format!("reading {}", path.display()))?;
            stored.extend(tensors.into_iter().map(|(n, t)| (n.strip_prefix(prefix).unwrap_or(&n).to_string(), t)));
        }
    }
    for (name, var) in params {
        let tensor =
            stored.get(name).with_context(|| format!("{}: no saved value for {name}", checkpoint.display()))?;
        var.set(tensor).with_context(|| format!("{}: {name}", checkpoint.display()))?;
    }
    Ok(())
}

pub fn append_log(output_dir: &Path, entry: &LogEntry) -> anyhow::Result<()> {
    let path = output_dir.join(TRAINER_STATE_LOG);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(entry)?).with_context(|| format!("writing {}", path.display()))
}

/// Rewrites the log from a (resumed) history, dropping lines an interrupted run wrote after its checkpoint.
pub fn rewrite_log(output_dir: &Path, history: &[LogEntry]) -> anyhow::Result<()> {
    let mut text = String::new();
    for entry in history {
        text.push_str(&serde_json::to_string(entry)?);
        text.push('\n');
    }
    crate::data::io::write_atomic(&output_dir.join(TRAINER_STATE_LOG), text.as_bytes())
}
