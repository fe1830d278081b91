//! The command line: argument definitions and dispatch to the library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::data::convert::{self, ConvertOptions, Dataset, OnError};

#[derive(Debug, Parser)]
#[command(
    name = "deepsynth",
    version,
    about = "Fine-tune and serve document question-answering models of the DeepSeek-OCR kind",
    long_about = "deepsynth renders documents to page images, compresses each page into visual tokens with a \
                  DeepEncoder, and answers instructions with a mixture-of-experts decoder. One binary converts \
                  public QA datasets, trains (LoRA or full), generates, evaluates and serves.",
    propagate_version = true
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a public QA dataset, in its real distribution format, to deepsynth JSONL records.
    Convert(ConvertArgs),
    /// Dataset tooling on deepsynth JSONL: mix, split, validate, synth.
    #[command(subcommand)]
    Data(DataCommand),
    /// Write a new model directory (config.json, model.safetensors, tokenizer.json) from a preset.
    Init(NotBuiltArgs),
    /// Render a text document to the page image(s) the model sees.
    Render(NotBuiltArgs),
    /// Fine-tune (LoRA or full) from a JSON or TOML config file.
    Train(NotBuiltArgs),
    /// Answer an instruction about a document (single, batch file, or interactive).
    Instruct(NotBuiltArgs),
    /// Score predictions against references (SQuAD EM/F1, ROUGE-L, BLEU, CER).
    Eval(NotBuiltArgs),
    /// Serve the model over HTTP (JSON API, OpenAI-compatible chat, web page).
    Serve(NotBuiltArgs),
    /// Write a model's intermediate tensors for one page (debugging, parity checks).
    Inspect(NotBuiltArgs),
    /// Merge a LoRA adapter into its base model's weights.
    Merge(NotBuiltArgs),
    /// Run the whole pipeline on bundled data with a tiny model, on the CPU, in minutes.
    Quickstart(NotBuiltArgs),
}

/// Arguments of a subcommand that is not built yet: accepted, so that `--help` works, then refused.
#[derive(Debug, Args)]
pub struct NotBuiltArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Which dataset format to read.
    #[arg(value_enum)]
    pub dataset: Dataset,
    /// Input file(s), plain or gzip (detected by content). FiQA: the BEIR folder (corpus.jsonl,
    /// queries.jsonl, qrels/) or the folder holding the FiQA-2018 task-2 TSVs.
    #[arg(long, short, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Output JSONL file (written to a temporary file, then renamed into place).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Split to read where a format has several (FiQA BEIR qrels: train, dev, test).
    #[arg(long)]
    pub split: Option<String>,
    /// Stop after writing this many records.
    #[arg(long)]
    pub max_samples: Option<u64>,
    /// On a malformed record: stop with an error (fail, writes nothing) or skip and count it.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub on_error: OnError,
    /// NQ: when there is no long answer, the page text is cut to this many characters.
    #[arg(long, default_value_t = convert::DEFAULT_MAX_CHARS)]
    pub max_chars: usize,
    /// FiQA: number of distractor posts added to each record's text.
    #[arg(long, default_value_t = convert::DEFAULT_DISTRACTORS)]
    pub distractors: usize,
    /// Seed for every random choice (FiQA distractors and their order).
    #[arg(long, default_value_t = convert::DEFAULT_SEED)]
    pub seed: u64,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Mix several JSONL files with weights, drop duplicates, shuffle (seeded).
    Mix(NotBuiltArgs),
    /// Split one JSONL file into train/validation/test, stratified by source.
    Split(NotBuiltArgs),
    /// Check a JSONL file against the record schema; exit non-zero when invalid.
    Validate(NotBuiltArgs),
    /// Generate synthetic reading pages with random facts and questions about them.
    Synth(NotBuiltArgs),
}

fn not_built(what: &str) -> Result<()> {
    anyhow::bail!("`deepsynth {what}` is not built yet; see README.md for what works today")
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert(args) => run_convert(args),
        Command::Data(cmd) => match cmd {
            DataCommand::Mix(_) => not_built("data mix"),
            DataCommand::Split(_) => not_built("data split"),
            DataCommand::Validate(_) => not_built("data validate"),
            DataCommand::Synth(_) => not_built("data synth"),
        },
        Command::Init(_) => not_built("init"),
        Command::Render(_) => not_built("render"),
        Command::Train(_) => not_built("train"),
        Command::Instruct(_) => not_built("instruct"),
        Command::Eval(_) => not_built("eval"),
        Command::Serve(_) => not_built("serve"),
        Command::Inspect(_) => not_built("inspect"),
        Command::Merge(_) => not_built("merge"),
        Command::Quickstart(_) => not_built("quickstart"),
    }
}

fn run_convert(args: ConvertArgs) -> Result<()> {
    let opts = ConvertOptions {
        inputs: args.input,
        output: args.output,
        split: args.split,
        max_samples: args.max_samples,
        on_error: args.on_error,
        max_chars: args.max_chars,
        distractors: args.distractors,
        seed: args.seed,
    };
    let summary = convert::convert(args.dataset, &opts)?;
    eprintln!("deepsynth convert {}: {} -> {}", args.dataset.name(), summary, opts.output.display());
    for example in &summary.skipped_examples {
        eprintln!("  skipped: {example}");
    }
    Ok(())
}
