//! `deepsynth train`: LoRA or full fine-tuning with AdamW, checkpoints that resume exactly, evaluation, logs.
//!
//! Determinism: the k-th training example is the (k mod n)-th of epoch k / n's seeded permutation, and each
//! micro-step reseeds the dropout stream from (seed, step), so a run resumed from checkpoint N continues with the
//! very data and masks an uninterrupted run would have used.

pub mod config;
mod glyph;
pub mod optim;
pub mod params;
pub mod plot;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::jsonl;
use crate::data::Record;
use crate::engine::dropout;
use crate::engine::model::{Document, Encoded, Model, Request};
use crate::engine::preset;
use crate::engine::sample::SamplingParams;
use config::TrainConfig;
use optim::{AdamW, Params};
pub use state::{latest_checkpoint, TrainerState};

/// One training record, tokenized.
struct Example {
    record: Record,
    /// The instruction, cut to `max_instruction_tokens`.
    instruction: String,
    /// Answer ids then EOS, cut to `max_answer_tokens` + 1.
    targets: Vec<u32>,
}

/// A logged event: a training window or an evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub step: usize,
    pub epoch: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub learning_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub samples_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_exact_match: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_f1: Option<f64>,
    /// The auxiliary glyph loss over the logging window (`glyph_loss_weight`), unweighted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub glyph_loss: Option<f64>,
    /// Character error rate of the greedy answers, in percent (edits over reference characters, corpus-wide).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_cer: Option<f64>,
}

/// What a finished (or interrupted) run leaves.
#[derive(Debug)]
pub struct Outcome {
    pub state: TrainerState,
    pub output_dir: PathBuf,
    /// `final/`, or the checkpoint written on interruption.
    pub saved: PathBuf,
    pub interrupted: bool,
}

pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Model,
    /// Trainable parameters by name: full tensors under their checkpoint names, LoRA pairs as
    /// `<path>.lora_A.weight` / `.lora_B.weight`.
    pub params: Params,
    optimizer: AdamW,
    train: Vec<Example>,
    validation: Vec<Example>,
    /// Visual tokens per document text, when nothing on the vision side trains.
    visual_cache: Option<HashMap<String, Tensor>>,
    /// The auxiliary glyph head (`glyph_loss_weight` > 0); its weight is also in `params`.
    glyph: Option<glyph::GlyphHead>,
    /// Sum and count of glyph losses since the last log line.
    glyph_window: (f64, usize),
    pub state: TrainerState,
    total_steps: usize,
    warmup_steps: usize,
}

impl Trainer {
    /// Loads (or initialises) the model, attaches what trains, reads the data; resumes from `resume` when given.
    pub fn new(cfg: TrainConfig, device: &Device, resume: Option<&Path>) -> anyhow::Result<Self> {
        let model_dir = Path::new(&cfg.model);
        if let (Some(preset), false) = (cfg.init_preset, model_dir.exists()) {
            preset::init(preset, cfg.init_instruction, model_dir, cfg.init_seed)?;
        }
        let dir = crate::engine::checkpoint::resolve(&cfg.model)?;
        let (mut model, mut params) = params::load_trainable(&cfg, &dir, device)?;
        if cfg.method == config::Method::Lora {
            params.extend(params::attach_lora(&cfg, &mut model)?);
        }
        anyhow::ensure!(!params.is_empty(), "nothing to train: the configuration selects no weights");
        let train = read_examples(&model, &cfg, &cfg.train_file)?;
        anyhow::ensure!(!train.is_empty(), "train_file: {} has no records", cfg.train_file.display());
        let validation = match &cfg.validation_file {
            Some(path) => read_examples(&model, &cfg, path)?,
            None => Vec::new(),
        };
        let per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps;
        let total_steps = match cfg.max_steps {
            Some(steps) => steps,
            None => ((cfg.num_train_epochs * train.len() as f64) / per_step as f64).ceil().max(1.0) as usize,
        };
        let warmup_steps = cfg.warmup_steps.max((cfg.warmup_ratio * total_steps as f64).ceil() as usize);
        let optimizer =
            AdamW::new(cfg.learning_rate, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_epsilon, cfg.weight_decay);
        let visual_cache = (!params::vision_trains(&cfg, &params)).then(HashMap::new);
        let glyph = if cfg.glyph_loss_weight > 0.0 {
            anyhow::ensure!(visual_cache.is_none(), "glyph_loss_weight: needs train_vision or train_projector");
            let head = glyph::GlyphHead::new(&model, device)?;
            params.push((glyph::NAME.to_string(), head.weight.clone()));
            Some(head)
        } else {
            None
        };
        let mut trainer = Self {
            state: TrainerState::new(total_steps, &params),
            cfg,
            model,
            params,
            optimizer,
            train,
            validation,
            visual_cache,
            glyph,
            glyph_window: (0.0, 0),
            total_steps,
            warmup_steps,
        };
        if let Some(checkpoint) = resume {
            trainer.restore(checkpoint)?;
        }
        Ok(trainer)
    }

    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// The example at position `k` of the endless, epoch-by-epoch shuffled stream.
    fn example_index(&self, k: usize) -> usize {
        let n = self.train.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.cfg.seed.wrapping_add((k / n) as u64)));
        order[k % n]
    }

    /// Visual tokens of each document (cached when the vision side is frozen); the uncached documents' pages go
    /// through the vision encoder as one batch.
    fn visuals(&mut self, texts: &[String], train: bool) -> anyhow::Result<Vec<Tensor>> {
        let cached: Vec<Option<Tensor>> =
            texts.iter().map(|t| self.visual_cache.as_ref().and_then(|c| c.get(t)).cloned()).collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| cached[i].is_none()).collect();
        let pixels = missing
            .iter()
            .map(|&i| self.model.pixels(&Document::Text(texts[i].clone())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pages: usize = pixels.iter().map(|p| p.dim(0)).sum::<candle_core::Result<usize>>()?;
        let mut fresh = self.model.visual_tokens_of(&pixels.iter().collect::<Vec<_>>(), pages, train)?.into_iter();
        let mut out = Vec::with_capacity(texts.len());
        for (text, cached) in texts.iter().zip(cached) {
            out.push(match cached {
                Some(tokens) => tokens,
                None => {
                    let tokens = fresh.next().expect("one encoding per missing document");
                    match &mut self.visual_cache {
                        Some(cache) => {
                            let tokens = tokens.detach();
                            cache.insert(text.clone(), tokens.clone());
                            tokens
                        }
                        None => tokens,
                    }
                }
            });
        }
        Ok(out)
    }

    /// Mean cross-entropy over the answer tokens (and EOS) of `batch`; prompt, image and padding positions are
    /// not scored. Returns the loss, the number of scored tokens, and in training with a glyph head its loss.
    fn loss(
        &mut self,
        batch: &[usize],
        validation: bool,
        train: bool,
    ) -> anyhow::Result<(Tensor, usize, Option<Tensor>)> {
        let mut rows = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        let mut targets = Vec::new();
        let examples = if validation { &self.validation } else { &self.train };
        let (texts, asks): (Vec<String>, Vec<(String, Vec<u32>)>) = batch
            .iter()
            .map(|&i| (examples[i].record.text.clone(), (examples[i].instruction.clone(), examples[i].targets.clone())))
            .unzip();
        let visuals = self.visuals(&texts, train)?;
        let glyph_loss = match (&self.glyph, train) {
            (Some(head), true) => {
                let targets = texts.iter().map(|t| head.targets(&self.model, t)).collect::<anyhow::Result<Vec<_>>>()?;
                head.loss(&visuals, &targets)?
            }
            _ => None,
        };
        for ((instruction, answer_targets), visual) in asks.into_iter().zip(visuals) {
            let (prompt, _) = self.model.prompt(&visual, &instruction, train)?;
            let inputs = &answer_targets[..answer_targets.len() - 1];
            let row = if inputs.is_empty() {
                prompt.clone()
            } else {
                let answer = self.model.decoder.embed(&Tensor::new(inputs, self.model.device())?)?;
                Tensor::cat(&[&prompt, &answer], 0)?
            };
            // Position p predicts token p + 1: the answer is predicted from the prompt's last position on.
            spans.push((prompt.dim(0)? - 1, answer_targets.len()));
            targets.extend_from_slice(&answer_targets);
            rows.push(row);
        }
        let longest =
            rows.iter().map(|r| r.dim(0)).collect::<candle_core::Result<Vec<_>>>()?.into_iter().max().unwrap_or(0);
        let padded = rows
            .iter()
            .map(|r| {
                let pad = longest - r.dim(0)?;
                if pad == 0 {
                    Ok(r.clone())
                } else {
                    r.pad_with_zeros(0, 0, pad)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let hidden = self.model.decoder.hidden_states(&Tensor::stack(&padded, 0)?, None, train)?;
        let scored = spans
            .iter()
            .enumerate()
            .map(|(b, &(start, len))| hidden.get(b)?.narrow(0, start, len))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let logits = self.model.decoder.logits(&Tensor::cat(&scored, 0)?)?;
        let n = targets.len();
        let targets = Tensor::new(targets, self.model.device())?;
        Ok((candle_nn::loss::cross_entropy(&logits, &targets)?, n, glyph_loss))
    }

    /// The training examples of micro-step `micro` of optimiser step `step` (positions in the data stream).
    fn micro_batch(&self, step: usize, micro: usize) -> Vec<usize> {
        let (size, accum) = (self.cfg.per_device_train_batch_size, self.cfg.gradient_accumulation_steps);
        let first = (step * accum + micro) * size;
        (first..first + size).map(|k| self.example_index(k)).collect()
    }

    /// Loss and gradients (by parameter name) of training examples `batch`, dropout seeded by `dropout_seed`;
    /// the gradients are of the loss divided by `divide` (gradient accumulation).
    pub fn gradients(
        &mut self,
        batch: &[usize],
        dropout_seed: u64,
        divide: usize,
    ) -> anyhow::Result<(f64, HashMap<String, Tensor>)> {
        dropout::seed(dropout_seed);
        let (loss, _, glyph_loss) = self.loss(batch, false, true)?;
        let value = f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        let total = match glyph_loss {
            Some(glyph) => {
                self.glyph_window.0 += f64::from(glyph.to_scalar::<f32>()?);
                self.glyph_window.1 += 1;
                (loss.to_dtype(DType::F32)? + (glyph * self.cfg.glyph_loss_weight)?)?
            }
            None => loss,
        };
        let store = (total / divide as f64)?.backward()?;
        let grads =
            self.params.iter().filter_map(|(name, var)| store.get(var.as_tensor()).map(|g| (name.clone(), g.clone())));
        Ok((value, grads.collect()))
    }

    /// One optimiser step (gradient accumulation included); returns (loss, grad norm before clipping).
    pub fn step(&mut self) -> anyhow::Result<(f64, f64)> {
        let step = self.state.global_step;
        let accum = self.cfg.gradient_accumulation_steps;
        let mut grads: HashMap<String, Tensor> = HashMap::new();
        let mut loss_sum = 0.0;
        for micro in 0..accum {
            let batch = self.micro_batch(step, micro);
            let seed = self.cfg.seed ^ ((step * accum + micro) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (loss, micro_grads) = self.gradients(&batch, seed, accum)?;
            loss_sum += loss;
            for (name, g) in micro_grads {
                let g = match grads.remove(&name) {
                    Some(sum) => (sum + g)?,
                    None => g,
                };
                grads.insert(name, g);
            }
        }
        let norm = optim::clip_grad_norm(&mut grads, self.cfg.max_grad_norm)?;
        self.optimizer.lr = self.learning_rate(step);
        self.optimizer.step(&self.params, &grads)?;
        self.state.global_step += 1;
        Ok((loss_sum / accum as f64, norm))
    }

    fn learning_rate(&self, step: usize) -> f64 {
        let cfg = &self.cfg;
        optim::learning_rate(cfg.lr_scheduler_type, cfg.learning_rate, step, self.warmup_steps, self.total_steps)
    }

    fn epoch(&self) -> f64 {
        let seen = self.state.global_step * self.cfg.per_device_train_batch_size * self.cfg.gradient_accumulation_steps;
        seen as f64 / self.train.len() as f64
    }

    /// Validation loss over every validation record, and exact match / F1 of greedy answers to the first
    /// `eval_generate_samples` of them.
    pub fn evaluate(&mut self) -> anyhow::Result<Option<LogEntry>> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        let (mut total, mut tokens) = (0.0, 0);
        let indices: Vec<usize> = (0..self.validation.len()).collect();
        for batch in indices.chunks(self.cfg.per_device_train_batch_size) {
            let (loss, n, _) = self.loss(batch, true, false)?;
            total += f64::from(loss.to_scalar::<f32>()?) * n as f64;
            tokens += n;
        }
        let take = self.cfg.eval_generate_samples.min(self.validation.len());
        let (mut em, mut f1) = (0.0, 0.0);
        let mut cer = crate::eval::cer::Counts::default();
        if take > 0 {
            let params = SamplingParams { max_new_tokens: self.cfg.max_answer_tokens, ..SamplingParams::default() };
            // The loss pass above encoded these documents already (cached while the vision side is frozen).
            let per_page = self.model.config.tokens_per_page();
            let texts: Vec<String> = self.validation[..take].iter().map(|ex| ex.record.text.clone()).collect();
            let docs = self
                .visuals(&texts, false)?
                .into_iter()
                .map(|tokens| Ok(Encoded { pages: tokens.dim(0)? / per_page, tokens, time: Duration::ZERO }))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let requests: Vec<Request> = docs
                .iter()
                .zip(&self.validation)
                .map(|(doc, ex)| Request { document: doc, instruction: &ex.instruction, params: params.clone() })
                .collect();
            for (chunk, examples) in requests
                .chunks(self.cfg.per_device_train_batch_size)
                .zip(self.validation.chunks(self.cfg.per_device_train_batch_size))
            {
                for (answer, ex) in self.model.answer(chunk)?.iter().zip(examples) {
                    em += crate::eval::squad::exact_match(&answer.answer, &ex.record.answers);
                    f1 += crate::eval::squad::f1(&answer.answer, &ex.record.answers);
                    if let Some(counts) = crate::eval::cer::best_gold(&answer.answer, &ex.record.answers) {
                        cer.edits += counts.edits;
                        cer.ref_len += counts.ref_len;
                    }
                }
            }
        }
        Ok(Some(LogEntry {
            step: self.state.global_step,
            epoch: self.epoch(),
            eval_loss: Some(total / tokens.max(1) as f64),
            eval_exact_match: (take > 0).then(|| 100.0 * em / take as f64),
            eval_f1: (take > 0).then(|| 100.0 * f1 / take as f64),
            eval_cer: (take > 0).then(|| 100.0 * cer.rate()),
            glyph_loss: None,
            loss: None,
            learning_rate: None,
            grad_norm: None,
            samples_per_second: None,
        }))
    }

    /// Trains to the end (or until `stop` is raised, or early stopping), checkpointing and evaluating on the way.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<Outcome> {
        let out = self.cfg.output_dir.clone();
        std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        state::rewrite_log(&out, &self.state.log_history)?;
        let bar = crate::data::io::progress_bar(self.total_steps as u64, "training");
        bar.set_position(self.state.global_step as u64);
        let per_step = self.cfg.per_device_train_batch_size * self.cfg.gradient_accumulation_steps;
        let (mut window_loss, mut window_steps, mut window_start) = (0.0, 0, Instant::now());
        let mut interrupted = false;
        while self.state.global_step < self.total_steps {
            let lr = self.learning_rate(self.state.global_step);
            let (loss, norm) = self.step()?;
            anyhow::ensure!(
                loss.is_finite(),
                "the loss became {loss} at step {}: lower learning_rate",
                self.state.global_step
            );
            bar.inc(1);
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
            (window_loss, window_steps) = (window_loss + loss, window_steps + 1);
            let step = self.state.global_step;
            if step.is_multiple_of(self.cfg.logging_steps) || step == self.total_steps {
                let seconds = window_start.elapsed().as_secs_f64();
                let entry = LogEntry {
                    step,
                    epoch: self.epoch(),
                    loss: Some(window_loss / window_steps as f64),
                    glyph_loss: match std::mem::take(&mut self.glyph_window) {
                        (_, 0) => None,
                        (sum, n) => Some(sum / n as f64),
                    },
                    learning_rate: Some(lr),
                    grad_norm: Some(norm),
                    samples_per_second: Some((window_steps * per_step) as f64 / seconds.max(1e-9)),
                    eval_loss: None,
                    eval_exact_match: None,
                    eval_f1: None,
                    eval_cer: None,
                };
                self.log(entry)?;
                (window_loss, window_steps, window_start) = (0.0, 0, Instant::now());
            }
            let evaluate =
                (self.cfg.eval_steps > 0 && step.is_multiple_of(self.cfg.eval_steps)) || step == self.total_steps;
            let mut stop_early = false;
            if evaluate {
                if let Some(entry) = self.evaluate()? {
                    stop_early = self
                        .state
                        .record_eval(entry.eval_loss.unwrap_or(f64::INFINITY), self.cfg.early_stopping_patience);
                    bar.println(format!(
                        "step {step}: eval loss {:.4}{}",
                        entry.eval_loss.unwrap_or(f64::NAN),
                        entry
                            .eval_exact_match
                            .map(|em| {
                                format!(
                                    ", exact match {em:.1}, F1 {:.1}, CER {:.1}",
                                    entry.eval_f1.unwrap_or(0.0),
                                    entry.eval_cer.unwrap_or(0.0)
                                )
                            })
                            .unwrap_or_default()
                    ));
                    self.log(entry)?;
                }
            }
            interrupted = stop.load(Ordering::SeqCst);
            let periodic = self.cfg.save_steps > 0 && step.is_multiple_of(self.cfg.save_steps);
            if periodic || interrupted || (evaluate && self.state.best_step == Some(step)) {
                state::save_checkpoint(self, evaluate && self.state.best_step == Some(step))?;
            }
            if interrupted || stop_early {
                break;
            }
        }
        bar.finish_and_clear();
        self.plot()?;
        let saved =
            if interrupted { state::checkpoint_dir(&out, self.state.global_step) } else { state::save_final(self)? };
        Ok(Outcome { state: self.state.clone(), output_dir: out, saved, interrupted })
    }

    fn log(&mut self, entry: LogEntry) -> anyhow::Result<()> {
        state::append_log(&self.cfg.output_dir, &entry)?;
        self.state.log_history.push(entry);
        Ok(())
    }

    /// Draws `loss.svg` from the log history.
    pub fn plot(&self) -> anyhow::Result<()> {
        let pick = |f: fn(&LogEntry) -> Option<f64>| -> Vec<(f64, f64)> {
            self.state.log_history.iter().filter_map(|e| f(e).map(|v| (e.step as f64, v))).collect()
        };
        let series = [
            plot::Series { name: "training loss", colour: "#1f77b4", points: pick(|e| e.loss) },
            plot::Series { name: "validation loss", colour: "#d62728", points: pick(|e| e.eval_loss) },
        ];
        plot::write_svg(&self.cfg.output_dir.join("loss.svg"), "deepsynth train: loss per step", &series)
    }

    fn restore(&mut self, checkpoint: &Path) -> anyhow::Result<()> {
        let state = TrainerState::read(checkpoint)?;
        anyhow::ensure!(
            state.total_steps == self.total_steps,
            "{}: made for {} steps, this configuration gives {}: resume with the same configuration",
            checkpoint.display(),
            state.total_steps,
            self.total_steps
        );
        state::load_params(checkpoint, &self.params)?;
        self.optimizer.load_state(&checkpoint.join(state::OPTIMIZER), state.global_step, &self.params)?;
        self.state = state;
        Ok(())
    }
}

/// Reads and tokenizes a record file.
fn read_examples(model: &Model, cfg: &TrainConfig, path: &Path) -> anyhow::Result<Vec<Example>> {
    let records = jsonl::read_records(path)?;
    records
        .into_iter()
        .map(|record| {
            let mut instruction_ids = model.tokenizer.encode(&record.instruction)?;
            instruction_ids.truncate(cfg.max_instruction_tokens);
            let instruction = model.tokenizer.decode(&instruction_ids)?;
            let mut targets = model.tokenizer.encode(&record.answer)?;
            targets.truncate(cfg.max_answer_tokens);
            targets.push(model.tokenizer.eos);
            Ok(Example { record, instruction, targets })
        })
        .collect()
}

/// `deepsynth train`: reads the config, resumes when asked (`--resume`: the latest checkpoint in output_dir),
/// stops cleanly on SIGINT/SIGTERM after saving a checkpoint.
pub fn train(config_path: &Path, resume_latest: bool, device: &str) -> anyhow::Result<Outcome> {
    let cfg = TrainConfig::from_file(config_path)?;
    let resume = match (&cfg.resume_from_checkpoint, resume_latest) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(
            latest_checkpoint(&cfg.output_dir)?
                .with_context(|| format!("--resume: no checkpoint-N folder in {}", cfg.output_dir.display()))?,
        ),
        (None, false) => None,
    };
    if resume.is_none() && cfg.output_dir.join(state::TRAINER_STATE_LOG).exists() {
        bail!(
            "{} already holds a run: pass --resume to continue it, or choose another output_dir",
            cfg.output_dir.display()
        );
    }
    let device = crate::engine::model::device(device)?;
    let mut trainer = Trainer::new(cfg, &device, resume.as_deref())?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // A second signal while saving falls back to the default (immediate) exit.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    trainer.run(&stop)
}
