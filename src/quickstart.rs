//! `deepsynth quickstart`: the whole pipeline on bundled data, offline, in minutes on a CPU: load the bundled tiny
//! reader -> convert the bundled samples of every dataset (their real formats) + make reading cards of a kind it has
//! never seen -> evaluate -> fine-tune (LoRA) -> evaluate again on held-out cards -> answer one question live -> say
//! what to try next.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;

use crate::data::convert::{self, ConvertOptions, Dataset};
use crate::data::io::JsonlWriter;
use crate::data::synth::{self, Card, Task, Values};
use crate::data::Record;
use crate::engine::model::{Document, Model, Request};
use crate::engine::sample::SamplingParams;
use crate::engine::{bundled, checkpoint};
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
    /// Ticket cards to train on (with half as many person cards; held out: a tenth of this of each kind, 16 to 100).
    pub cards: usize,
    pub seed: u64,
    pub method: Method,
}

/// Scores of one model on held-out cards.
#[derive(Debug, Clone, Copy)]
pub struct Scores {
    pub exact: f64,
    pub cer: f64,
    /// Answers that are one of the card's values, right or not: read from the page, if perhaps from the wrong line.
    pub on_card: f64,
}

/// What the quickstart measured: held-out tickets (keys new to the reader) and person cards, before and after.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub tickets: [Scores; 2],
    pub people: [Scores; 2],
}

pub fn run(opts: &Options) -> anyhow::Result<Outcome> {
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

    let device = Device::Cpu;
    step(1, "load the bundled tiny reader");
    let model_dir = bundled::dir()?;
    let base = Model::load(&model_dir, &device)?;
    println!(
        "    {} parameters, pretrained to read pages of up to 8 lines of 16 characters (configs/pretrain-tiny-*.toml) \
         -> {}",
        format_params(checkpoint::parameter_count(&model_dir)?),
        model_dir.display()
    );

    step(2, "build the data");
    let converted = convert_bundled(&out.join("data"))?;
    println!(
        "    {} records converted from the bundled SQuAD, NQ, MS MARCO and FiQA samples (their real formats) -> {}; \
         their paragraphs are longer than the reader's page, so it does not train on them",
        converted,
        out.join("data").display()
    );
    let held = (opts.cards / 10).clamp(16, 100);
    let tickets = synth::generate_sized(
        held,
        opts.seed.wrapping_add(1_000_003),
        Task::Qa,
        Values::Random,
        Card::Ticket,
        3..=4,
        &[],
    );
    let people = synth::generate(held, opts.seed.wrapping_add(2_000_003), Task::Qa, Values::Random);
    let mut train = synth::generate_sized(opts.cards, opts.seed, Task::Qa, Values::Random, Card::Ticket, 3..=4, &[]);
    // Cards of the kind it already reads, so that learning the new keys does not wash out the old ones.
    train.extend(synth::generate(opts.cards / 2, opts.seed.wrapping_add(1), Task::Qa, Values::Random));
    println!(
        "    {} training cards: tickets (Flight, Gate, Seat, Zone: keys the reader has never seen, values fresh and \
         random) and half as many person cards (Name, City, Colour, Year, Code: what it was trained on); {} \
         fresh cards of each kind held out",
        train.len(),
        held
    );
    let train_file = write_records(&out.join("data/train.jsonl"), &train)?;
    let test_file = write_records(&out.join("data/held-out-tickets.jsonl"), &tickets)?;
    write_records(&out.join("data/held-out-people.jsonl"), &people)?;

    step(3, "evaluate before fine-tuning");
    let before = [score(&base, &tickets)?, score(&base, &people)?];
    print_scores("before", &before);
    drop(base);

    step(4, &format!("fine-tune ({} steps, {:?}, CPU)", opts.steps, opts.method));
    let cfg = TrainConfig {
        model: model_dir.to_string_lossy().into_owned(),
        train_file,
        validation_file: Some(test_file.clone()),
        output_dir: out.join("run"),
        seed: opts.seed,
        method: opts.method,
        max_answer_tokens: 16,
        max_steps: Some(opts.steps),
        per_device_train_batch_size: 8,
        learning_rate: if opts.method == Method::Lora { 2e-3 } else { 3e-4 },
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

    step(5, "evaluate after fine-tuning");
    let after = [score(&trainer.model, &tickets)?, score(&trainer.model, &people)?];
    print_scores("after", &after);

    step(6, "answer one question live");
    let card = &tickets[0];
    let encoded = trainer.model.encode(&Document::Text(card.text.clone()))?;
    let params = SamplingParams { max_new_tokens: 16, ..SamplingParams::default() };
    let answer = trainer.model.answer(&[Request { document: &encoded, instruction: &card.instruction, params }])?;
    println!("    document:    {}", card.text.replace('\n', " | "));
    println!("    instruction: {}", card.instruction);
    println!("    answer:      {:?} (gold {:?})", answer[0].answer, card.answer);

    let final_dir = outcome.saved;
    println!("\nDone in {:.0} s. Written to {}:", start.elapsed().as_secs_f64(), out.display());
    println!("  base model {} (--model {})", model_dir.display(), bundled::NAME);
    println!("  trained    {}", final_dir.display());
    println!("  log, plot  {}, {}", out.join("run/train_log.jsonl").display(), out.join("run/loss.svg").display());
    println!("  data       {}", out.join("data").display());
    println!(
        "\nWhat this shows: the bundled reader answers questions by reading the page ({:.0}% exact on fresh person \
         cards, whose values are random letters and digits); on tickets, whose keys it has never seen, it gets \
         {:.0}%. Fine-tuning ({:?}, {} steps) on the new kind of card took that to {:.0}%, and {:.0}% on person cards.",
        before[1].exact, before[0].exact, opts.method, opts.steps, after[0].exact, after[1].exact
    );
    let (trained_model, adapter) = if final_dir.join("adapter_model.safetensors").is_file() {
        (bundled::NAME.to_string(), format!(" --adapter {}", final_dir.display()))
    } else {
        (final_dir.display().to_string(), String::new())
    };
    println!("\nNext:");
    println!(
        "  deepsynth instruct --model {trained_model}{adapter} --document $'Flight: KL1234\\nGate: C7' --instruction \
         \"What is the gate?\""
    );
    println!("  deepsynth eval --model {trained_model}{adapter} --dataset {}", test_file.display());
    let served = if adapter.is_empty() { String::new() } else { format!(" --adapter tickets={}", final_dir.display()) };
    println!("  deepsynth serve --model {trained_model}{served} --port 8000    # then open http://127.0.0.1:8000/");
    Ok(Outcome { tickets: [before[0], after[0]], people: [before[1], after[1]] })
}

fn step(n: usize, what: &str) {
    println!("[{n}/6] {what}");
}

fn format_params(n: usize) -> String {
    format!("{:.1}M", n as f64 / 1e6)
}

/// Scores on held-out tickets, then on held-out person cards.
fn print_scores(label: &str, [tickets, people]: &[Scores; 2]) {
    for (cards, s) in [("tickets (new keys)", tickets), ("person cards", people)] {
        println!(
            "    {label}, {cards:<18}: exact match {:5.1}%, character error rate {:5.1}%, answers that are a value on \
             the card {:5.1}%",
            s.exact, s.cer, s.on_card
        );
    }
}

/// Writes the bundled samples in their real formats and converts each with its converter.
fn convert_bundled(dir: &Path) -> anyhow::Result<u64> {
    let raw = dir.join("raw");
    for (name, bytes) in BUNDLED_FILES {
        let path = raw.join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut records = 0;
    for (i, (dataset, input, split)) in CONVERSIONS.into_iter().enumerate() {
        let output = dir.join(format!("{i}-{}.jsonl", dataset.name()));
        let mut opts = ConvertOptions::new(vec![raw.join(input)], output);
        opts.split = split.map(String::from);
        records += convert::convert(dataset, &opts)?.written;
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

/// Greedy answers to every card, scored as `deepsynth eval` scores them, plus how many are values on the card.
fn score(model: &Model, cards: &[Record]) -> anyhow::Result<Scores> {
    let params = SamplingParams { max_new_tokens: 16, ..SamplingParams::default() };
    let encoded: Vec<_> =
        cards.iter().map(|c| model.encode(&Document::Text(c.text.clone()))).collect::<anyhow::Result<_>>()?;
    let mut scored = Vec::new();
    let mut on_card = 0usize;
    for (chunk, docs) in cards.chunks(8).zip(encoded.chunks(8)) {
        let requests: Vec<Request> = chunk
            .iter()
            .zip(docs)
            .map(|(c, d)| Request { document: d, instruction: &c.instruction, params: params.clone() })
            .collect();
        for (card, answer) in chunk.iter().zip(model.answer(&requests)?) {
            on_card +=
                usize::from(card.text.lines().any(|l| l.split_once(": ").is_some_and(|(_, v)| v == answer.answer)));
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
        cer: metrics.cer.unwrap_or(f64::NAN),
        on_card: 100.0 * on_card as f64 / cards.len().max(1) as f64,
    })
}
