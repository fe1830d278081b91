//! `deepsynth train --config FILE`: the training configuration, JSON or TOML (by extension). Names follow HF's
//! `TrainingArguments` and PEFT's `LoraConfig`, which our users already know. Unknown keys are errors.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

use crate::engine::preset::{InstructionChoice, Preset};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Adapters on the `lora.target_modules` layers; base weights frozen.
    #[default]
    Lora,
    /// Every weight of the trained parts (decoder, instruction encoder; vision with `train_vision`).
    Full,
    /// Only the weights whose names contain one of `trainable_modules`.
    Modules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    #[default]
    Linear,
    Cosine,
}

/// PEFT's `LoraConfig` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraSettings {
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f32,
    /// Layer names (a path's last part), as PEFT matches them: the decoder's attention and MLP / expert
    /// projections by default.
    pub target_modules: Vec<String>,
    pub use_rslora: bool,
}

impl Default for LoraSettings {
    fn default() -> Self {
        Self {
            r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
            use_rslora: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Model directory or Hub id. With `init_preset`, a directory that does not exist yet is created first.
    pub model: String,
    pub init_preset: Option<Preset>,
    pub init_instruction: InstructionChoice,
    pub init_seed: u64,
    pub train_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub seed: u64,

    pub method: Method,
    pub lora: LoraSettings,
    /// For `method = "modules"`: weight-name fragments (e.g. "model.projector", "lm_head").
    pub trainable_modules: Vec<String>,
    /// Train the vision encoder too (frozen by default; its visual tokens are then computed once per document).
    pub train_vision: bool,
    /// Train the vision projector and the instruction projector fully (with any method).
    pub train_projector: bool,
    /// Weight of an auxiliary loss that makes each visual token name the characters drawn in its cell (a linear
    /// head trained alongside, kept out of the model); 0 turns it off. Needs train_vision or train_projector and
    /// a model whose lines are one visual token apart (the reader preset).
    pub glyph_loss_weight: f64,

    /// Answers longer than this many tokens are cut (the EOS target is kept).
    pub max_answer_tokens: usize,
    /// Instructions longer than this many tokens are cut.
    pub max_instruction_tokens: usize,

    pub per_device_train_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub num_train_epochs: f64,
    /// Overrides `num_train_epochs` when set.
    pub max_steps: Option<usize>,
    pub learning_rate: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub weight_decay: f64,
    pub lr_scheduler_type: Schedule,
    pub warmup_steps: usize,
    pub warmup_ratio: f64,
    /// Gradient clipping by global norm; 0 turns it off.
    pub max_grad_norm: f64,

    pub logging_steps: usize,
    /// Save a checkpoint every this many steps (0: only at the end and on interruption).
    pub save_steps: usize,
    /// Keep this many recent checkpoints (plus the best).
    pub save_total_limit: usize,
    /// Evaluate on the validation file every this many steps (0: only at the end).
    pub eval_steps: usize,
    /// How many validation records are answered (greedy) for exact match / F1 at each evaluation.
    pub eval_generate_samples: usize,
    /// Stop after this many evaluations without a better validation loss.
    pub early_stopping_patience: Option<usize>,
    pub resume_from_checkpoint: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            init_preset: None,
            init_instruction: InstructionChoice::Prompt,
            init_seed: 0,
            train_file: PathBuf::new(),
            validation_file: None,
            output_dir: PathBuf::new(),
            seed: 42,
            method: Method::Lora,
            lora: LoraSettings::default(),
            trainable_modules: Vec::new(),
            train_vision: false,
            train_projector: false,
            glyph_loss_weight: 0.0,
            max_answer_tokens: 64,
            max_instruction_tokens: 128,
            per_device_train_batch_size: 8,
            gradient_accumulation_steps: 1,
            num_train_epochs: 3.0,
            max_steps: None,
            learning_rate: 2e-4,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            weight_decay: 0.0,
            lr_scheduler_type: Schedule::Linear,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            max_grad_norm: 1.0,
            logging_steps: 10,
            save_steps: 500,
            save_total_limit: 2,
            eval_steps: 0,
            eval_generate_samples: 16,
            early_stopping_patience: None,
            resume_from_checkpoint: None,
        }
    }
}

impl TrainConfig {
    /// Reads a `.json` or `.toml` file; relative paths in it are taken from the file's folder.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut cfg: Self = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Some("json") => {
                serde_json::from_str(&text).with_context(|| format!("{}: bad training config", path.display()))?
            }
            _ => bail!("{}: a training config is a .json or .toml file", path.display()),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        cfg.validate().with_context(|| format!("{}: bad training config", path.display()))?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.train_file);
        fix(&mut self.output_dir);
        if let Some(p) = &mut self.validation_file {
            fix(p);
        }
        if let Some(p) = &mut self.resume_from_checkpoint {
            fix(p);
        }
        let model = Path::new(&self.model);
        // A hub id stays as it is; a relative directory (existing, or to be made by init_preset) is local.
        if model.is_relative() && (base.join(model).exists() || self.init_preset.is_some()) {
            self.model = base.join(model).to_string_lossy().into_owned();
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.model.is_empty(), "model: missing (a model directory, a Hub id, or a directory to init)");
        ensure!(!self.output_dir.as_os_str().is_empty(), "output_dir: missing");
        ensure!(
            self.glyph_loss_weight.is_finite() && self.glyph_loss_weight >= 0.0,
            "glyph_loss_weight: {} must be 0 or more",
            self.glyph_loss_weight
        );
        ensure!(self.train_file.is_file(), "train_file: {} does not exist", self.train_file.display());
        if let Some(v) = &self.validation_file {
            ensure!(v.is_file(), "validation_file: {} does not exist", v.display());
        }
        if let Some(r) = &self.resume_from_checkpoint {
            ensure!(r.is_dir(), "resume_from_checkpoint: {} is not a checkpoint directory", r.display());
        }
        ensure!(self.per_device_train_batch_size > 0, "per_device_train_batch_size must be at least 1");
        ensure!(self.gradient_accumulation_steps > 0, "gradient_accumulation_steps must be at least 1");
        ensure!(self.learning_rate > 0.0 && self.learning_rate.is_finite(), "learning_rate must be positive");
        ensure!(
            self.max_steps.is_some_and(|s| s > 0) || self.num_train_epochs > 0.0,
            "num_train_epochs or max_steps must be positive"
        );
        ensure!((0.0..1.0).contains(&self.warmup_ratio), "warmup_ratio must be in [0, 1)");
        ensure!(self.max_answer_tokens > 0, "max_answer_tokens must be at least 1");
        ensure!(self.max_instruction_tokens > 0, "max_instruction_tokens must be at least 1");
        ensure!(self.logging_steps > 0, "logging_steps must be at least 1");
        if self.method == Method::Lora {
            ensure!(self.lora.r > 0, "lora.r must be at least 1");
            ensure!((0.0..1.0).contains(&self.lora.lora_dropout), "lora.lora_dropout must be in [0, 1)");
            ensure!(!self.lora.target_modules.is_empty(), "lora.target_modules is empty");
        }
        if self.method == Method::Modules {
            ensure!(!self.trainable_modules.is_empty(), "method \"modules\" needs trainable_modules");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_parses_and_validates() {
        // Each config is copied beside stand-ins for the data files it names (made by the commands in its header).
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let tmp = tempfile::tempdir().unwrap();
        let configs = tmp.path().join("configs");
        std::fs::create_dir(&configs).unwrap();
        let mut read = 0;
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = configs.join(entry.unwrap().file_name());
            std::fs::copy(shipped.join(path.file_name().unwrap()), &path).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let named = ["train_file", "validation_file"].map(|key| {
                let line = text.lines().find(|l| l.trim_start().trim_start_matches('"').starts_with(key));
                line.and_then(|l| l.split('"').rev().nth(1)).map(|p| configs.join(p))
            });
            for file in named.into_iter().flatten() {
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, "").unwrap();
            }
            TrainConfig::from_file(&path).unwrap_or_else(|e| panic!("{e:#}"));
            read += 1;
        }
        assert!(read >= 5, "{read} configs in {}", shipped.display());
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn toml_and_json_read_the_same_with_paths_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train.jsonl", "");
        let toml = write(
            dir.path(),
            "a.toml",
            "model = \"m\"\ninit_preset = \"tiny\"\ntrain_file = \"train.jsonl\"\noutput_dir = \"out\"\n\
             learning_rate = 1e-3\n[lora]\nr = 4\ntarget_modules = [\"q_proj\"]\n",
        );
        let json = write(
            dir.path(),
            "b.json",
            r#"{"model": "m", "init_preset": "tiny", "train_file": "train.jsonl", "output_dir": "out",
                "learning_rate": 1e-3, "lora": {"r": 4, "target_modules": ["q_proj"]}}"#,
        );
        let (a, b) = (TrainConfig::from_file(&toml).unwrap(), TrainConfig::from_file(&json).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.train_file, dir.path().join("train.jsonl"));
        assert_eq!(a.model, dir.path().join("m").to_string_lossy());
        assert_eq!((a.lora.r, a.lora.lora_alpha, a.seed), (4, 16.0, 42));
    }

    #[test]
    fn unknown_keys_wrong_types_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "train.jsonl", "");
        let base = "model = \"m\"\ntrain_file = \"train.jsonl\"\noutput_dir = \"out\"\n";
        let err = |text: &str| {
            let path = write(dir.path(), "c.toml", text);
            format!("{:#}", TrainConfig::from_file(&path).unwrap_err())
        };
        let e = err(&format!("{base}learning_rat = 1.0\n"));
        assert!(e.contains("learning_rat") && e.contains("c.toml"), "{e}");
        let e = err(&format!("{base}learning_rate = \"fast\"\n"));
        assert!(e.contains("learning_rate"), "{e}");
        let e = err("model = \"m\"\ntrain_file = \"nope.jsonl\"\noutput_dir = \"out\"\n");
        assert!(e.contains("train_file") && e.contains("nope.jsonl"), "{e}");
        let e = err(&format!("{base}[lora]\nalpha = 3\n"));
        assert!(e.contains("alpha"), "{e}");
    }
}
