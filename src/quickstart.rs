//! `deepsynth quickstart`: the whole pipeline on bundled data with the tiny model, offline, in minutes on a CPU:
//! init -> convert the bundled samples of every dataset (their real formats) + synthetic reading cards -> split ->
//! evaluate -> train -> evaluate again on held-out cards -> answer one question live -> say what to try next.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;

use crate::data::convert::{self, ConvertOptions, Dataset};
use crate::data::io::JsonlWriter;
use crate::data::synth::{self, Field, Task, Values};
use crate::data::Record;
use crate::engine::model::{Document, Model, Request};
use crate::engine::preset::{self, InstructionChoice, Preset};
use crate::engine::sample::SamplingParams;
use crate::eval;
use crate::train::config::{Method, Schedule, TrainConfig};
use crate::train::Trainer;

/// The bundled samples (data/ in the repository), compiled in so the quickstart works from any folder.
const BUNDLED_FILES: [(&str, &[u8]); 8] = [
    ("squad/dev-v2.0-sample.json", include_bytes!("../data/squad/dev-v2.0-sample.json")),
    ("nq/simplified-nq-train-sample.jsonl", include_bytes!("../data/nq/simplified-nq-train-sample.jsonl")),
    ("marco/dev_v2.1-sample.json", include_bytes!("../data/marco/dev_v2.1-sample.json")),
    ("marco/dev_v1.1-sample.jsonl", include_bytes!("../data/marco/dev_v1.1-sample.jsonl")),
    ("fiqa/beir/corpus.jsonl", include_bytes!("../data/fiqa/beir/corpus.jsonl")),
    ("fiqa/beir/queries.jsonl", include_bytes!("../data/fiqa/beir/queries.jsonl")),
    ("fiqa/beir/qrels/train.tsv", include_bytes!("../data/fiqa/beir/qrels/train.tsv")),
    ("fiqa/beir/qrels/test.tsv", include_bytes!("../data/fiqa/beir/qrels/test.tsv")),
];

/// Which converter reads which bundled input (a file, or FiQA's BEIR folder), and the split.
const CONVERSIONS: [(Dataset, &str, Option<&str>); 5] = [
    (Dataset::Squad, "squad/dev-v2.0-sample.json", None),
    (Dataset::Nq, "nq/simplified-nq-train-sample.jsonl", None),
    (Dataset::Marco, "marco/dev_v2.1-sample.json", None),
    (Dataset::Marco, "marco/dev_v1.1-sample.jsonl", None),
    (Dataset::Fiqa, "fiqa/beir", Some("train")),
];

#[derive(Debug, Clone)]
pub struct Options {
    pub output: PathBuf,
    /// Optimiser steps.
    pub steps: usize,
    /// Synthetic cards for training (held-out cards: a quarter of this, at least 16).
    pub cards: usize,
    pub seed: u64,
    pub method: Method,
}

/// Scores of one model on the held-out cards.
#[derive(Debug, Clone, Copy)]
struct Scores {
    exact: f64,
    f1: f64,
    cer: f64,
    /// Answers of the asked kind (a year for a year, a city for a city), whether or not the right one.
    kind: f64,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let start = Instant::now();
    let out = &opts.output;
    if out.exists() {
        anyhow::ensure!(
            out.join("quickstart.txt").is_file(),
            "{} exists and was not made by the quickstart: choose another --output",
            out.display()
        );
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out.join("data")).with_context(|| format!("cannot create {}", out.display()))?;
    crate::data::io::write_atomic(&out.join("quickstart.txt"), b"made by `deepsynth quickstart`; safe to delete\n")?;

    step(1, "initialise the tiny model");
    let model_dir = out.join("model");
    let parameters = preset::init(Preset::Tiny, InstructionChoice::Prompt, &model_dir, opts.seed)?;
    println!("    {} parameters -> {}", format_params(parameters), model_dir.display());

    step(2, "build the data");
    let mut train = convert_bundled(&out.join("data"))?;
    println!(
        "    {} records converted from the bundled SQuAD, NQ, MS MARCO and FiQA samples (their real formats)",
        train.len()
    );
    let held_out =
        synth::generate((opts.cards / 4).max(16), opts.seed.wrapping_add(1_000_003), Task::Qa, Values::Pools);
    train.extend(synth::generate(opts.cards, opts.seed, Task::Qa, Values::Pools));
    println!(
        "    {} synthetic reading cards for training, {} fresh ones held out (years and codes are random: only \
         reading gets them)",
        opts.cards,
        held_out.len()
    );
    let train_file = write_records(&out.join("data/train.jsonl"), &train)?;
    let test_file = write_records(&out.join("data/held-out.jsonl"), &held_out)?;

    let device = Device::Cpu;
    step(3, "evaluate before training");
    let before = score(&Model::load(&model_dir, &device)?, &held_out)?;
    print_scores("before", &before);

    step(4, &format!("train ({} steps, {:?}, CPU)", opts.steps, opts.method));
    let cfg = TrainConfig {
        model: model_dir.to_string_lossy().into_owned(),
        train_file,
        validation_file: Some(test_file.clone()),
        output_dir: out.join("run"),
        seed: opts.seed,
        method: opts.method,
        max_answer_tokens: 48,
        max_steps: Some(opts.steps),
        per_device_train_batch_size: 8,
        learning_rate: if opts.method == Method::Lora { 5e-3 } else { 2e-3 },
        lr_scheduler_type: Schedule::Cosine,
        warmup_steps: opts.steps / 20,
        logging_steps: (opts.steps / 20).max(1),
        save_steps: 0,
        eval_steps: (opts.steps / 4).max(1),
        eval_generate_samples: 0,
        ..TrainConfig::default()
    };
    let train_start = Instant::now();
    let mut trainer = Trainer::new(cfg, &device, None)?;
    let outcome = trainer.run(&AtomicBool::new(false))?;
    let losses: Vec<f64> = outcome.state.log_history.iter().filter_map(|e| e.loss).collect();
    println!(
        "    training loss {:.3} -> {:.3}, best held-out loss {:.3}, {:.0} s",
        losses.first().copied().unwrap_or(f64::NAN),
        losses.last().copied().unwrap_or(f64::NAN),
        outcome.state.best_metric.unwrap_or(f64::NAN),
        train_start.elapsed().as_secs_f64()
    );

    step(5, "evaluate after training");
    let after = score(&trainer.model, &held_out)?;
    print_scores("after", &after);

    step(6, "answer one question live");
    let card = &held_out[0];
    let encoded = trainer.model.encode(&Document::Text(card.text.clone()))?;
    let params = SamplingParams { max_new_tokens: 16, ..SamplingParams::default() };
    let answer = trainer.model.answer(&[Request { document: &encoded, instruction: &card.instruction, params }])?;
    println!("    document:    {}", card.text.replace('\n', " | "));
    println!("    instruction: {}", card.instruction);
    println!("    answer:      {:?} (gold {:?})", answer[0].answer, card.answer);

    let final_dir = outcome.saved;
    println!("\nDone in {:.0} s. Written to {}:", start.elapsed().as_secs_f64(), out.display());
    println!("  model      {}", model_dir.display());
    println!("  trained    {}", final_dir.display());
    println!("  log, plot  {}, {}", out.join("run/train_log.jsonl").display(), out.join("run/loss.svg").display());
    println!("  data       {}", out.join("data").display());
    println!(
        "\nWhat this shows: the pipeline end to end, and what a {}-parameter model learns from scratch in minutes on \
         a CPU: the loss falls and answers take the asked kind ({:.0}% -> {:.0}% of answers), but it does not yet \
         read the page (exact match {:.0}% -> {:.0}%). A model that reads needs a pretrained checkpoint plus LoRA \
         (e.g. deepseek-ai/DeepSeek-OCR with `train` method = \"lora\"), or a longer pretraining run (the \
         reading recipe in configs/pretrain-tiny-*.toml: transcription first, then questions; BENCHMARKS.md).",
        format_params(parameters),
        before.kind,
        after.kind,
        before.exact,
        after.exact
    );
    let trained_model =
        if final_dir.join("model.safetensors").is_file() { final_dir.clone() } else { model_dir.clone() };
    let adapter = if final_dir.join("adapter_model.safetensors").is_file() {
        format!(" --adapter {}", final_dir.display())
    } else {
        String::new()
    };
    println!("\nNext:");
    println!(
        "  deepsynth instruct --model {}{adapter} --document \"Name: Ada  Year: 1987\" --instruction \"What is the year?\"",
        trained_model.display()
    );
    println!("  deepsynth eval --model {}{adapter} --dataset {}", trained_model.display(), test_file.display());
    let served = if adapter.is_empty() { String::new() } else { format!(" --adapter trained={}", final_dir.display()) };
    println!(
        "  deepsynth serve --model {}{served} --port 8000    # then open http://127.0.0.1:8000/",
        trained_model.display()
    );
    Ok(())
}

fn step(n: usize, what: &str) {
    println!("[{n}/6] {what}");
}

fn format_params(n: usize) -> String {
    format!("{:.1}M", n as f64 / 1e6)
}

fn print_scores(label: &str, s: &Scores) {
    println!(
        "    {label}: exact match {:.1}%, F1 {:.1}, character error rate {:.1}%, answers of the asked kind {:.1}%",
        s.exact, s.f1, s.cer, s.kind
    );
}

/// Writes the bundled samples in their real formats and converts each with its converter.
fn convert_bundled(dir: &Path) -> anyhow::Result<Vec<Record>> {
    let raw = dir.join("raw");
    for (name, bytes) in BUNDLED_FILES {
        let path = raw.join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut records = Vec::new();
    for (i, (dataset, input, split)) in CONVERSIONS.into_iter().enumerate() {
        let output = dir.join(format!("{i}-{}.jsonl", dataset.name()));
        let mut opts = ConvertOptions::new(vec![raw.join(input)], output.clone());
        opts.split = split.map(String::from);
        // Long documents take many pages; the quickstart keeps them short.
        opts.max_chars = 1500;
        convert::convert(dataset, &opts)?;
        records.extend(crate::data::jsonl::read_records(&output)?);
    }
    Ok(records)
}

fn write_records(path: &Path, records: &[Record]) -> anyhow::Result<PathBuf> {
    let mut writer = JsonlWriter::create(path)?;
    for record in records {
        writer.write(record.clone())?;
    }
    writer.commit()?;
    Ok(path.to_path_buf())
}

/// Greedy answers to every card, scored as `deepsynth eval` scores them, plus the answer-kind rate.
fn score(model: &Model, cards: &[Record]) -> anyhow::Result<Scores> {
    let params = SamplingParams { max_new_tokens: 16, ..SamplingParams::default() };
    let encoded: Vec<_> =
        cards.iter().map(|c| model.encode(&Document::Text(c.text.clone()))).collect::<anyhow::Result<_>>()?;
    let mut scored = Vec::new();
    let mut kind = 0usize;
    for (chunk, docs) in cards.chunks(8).zip(encoded.chunks(8)) {
        let requests: Vec<Request> = chunk
            .iter()
            .zip(docs)
            .map(|(c, d)| Request { document: d, instruction: &c.instruction, params: params.clone() })
            .collect();
        for (card, answer) in chunk.iter().zip(model.answer(&requests)?) {
            kind += usize::from(Field::asked_in(&card.instruction).is_some_and(|f| f.accepts(&answer.answer)));
            let example = eval::Example {
                id: card.id.clone(),
                source: card.source.clone(),
                golds: card.answers.clone(),
                prediction: answer.answer,
            };
            scored.push(eval::score(&example, false));
        }
    }
    let metrics = eval::aggregate(&scored);
    Ok(Scores {
        exact: metrics.exact,
        f1: metrics.f1,
        cer: metrics.cer.unwrap_or(f64::NAN),
        kind: 100.0 * kind as f64 / cards.len().max(1) as f64,
    })
}
