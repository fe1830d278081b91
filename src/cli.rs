//! The command line: argument definitions and dispatch to the library.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::DType;
use clap::{Args, Parser, Subcommand};

use crate::data::convert::{self, ConvertOptions, Dataset, OnError};
use crate::data::mix::{self, WeightedInput};
use crate::data::split::{self, Fractions};
use crate::data::synth::{self, Card, Task, Values};
use crate::data::validate::{self, Limits};
use crate::engine::model::{self, Document, Model};
use crate::engine::preset::{self, InstructionChoice, Preset};
use crate::engine::sample::SamplingParams;
use crate::engine::{checkpoint, inspect};
use crate::page::{self, Mode, RenderConfig};
use crate::train::config::Method;
use crate::{eval, instruct, quickstart, train};

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
    Init(InitArgs),
    /// Render a text document to the page image(s) the model sees.
    Render(RenderArgs),
    /// Fine-tune (LoRA or full) from a JSON or TOML config file.
    Train(TrainArgs),
    /// Answer an instruction about a document (single, batch file, or interactive).
    Instruct(InstructArgs),
    /// Score predictions against references (SQuAD EM/F1, ROUGE-L, BLEU, CER).
    Eval(EvalArgs),
    /// Serve the model over HTTP (JSON API, OpenAI-compatible chat, web page).
    Serve(ServeArgs),
    /// Write a model's intermediate tensors for one page (debugging, parity checks).
    Inspect(InspectArgs),
    /// Merge a LoRA adapter into its base model's weights.
    Merge(MergeArgs),
    /// Rewrite a model directory with its weights in another dtype (bf16 halves an f32 checkpoint).
    Cast(CastArgs),
    /// Deepen a model's decoder: new layers that leave its answers unchanged until trained (block expansion).
    Grow(GrowArgs),
    /// Run the whole pipeline on bundled data with a tiny model, on the CPU, in minutes.
    Quickstart(QuickstartArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Routes: / (web page), /health, /ready, /api/inference/instruct, /api/render, /api/cache/stats, \
                  /api/cache/clear, /v1/models, /v1/chat/completions (OpenAI-compatible, stream: true for SSE), \
                  /metrics (Prometheus), /openapi.json. Prints `deepsynth serve: listening on http://ADDR` once \
                  bound; /ready turns 200 when the model is loaded. SIGINT/SIGTERM: requests in progress finish \
                  within --shutdown-grace-secs."
)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A LoRA adapter served under NAME (`adapter` in the JSON API, `model` in chat); repeatable.
    #[arg(long, value_name = "NAME=DIR", value_parser = parse_named_adapter)]
    pub adapter: Vec<(String, PathBuf)>,
    /// The base model's name in /v1/models and chat's `model` (default: the model directory's name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Address to bind (loopback by default; 0.0.0.0 to serve other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require this API key (`Authorization: Bearer KEY`) on every route but /, /health and /ready. Also read
    /// from the DEEPSYNTH_API_KEY environment variable.
    #[arg(long)]
    pub api_key: Option<String>,
    /// The most requests decoded together in one batch.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// How long the first request of a batch waits for others to join, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// Requests that may wait beyond a full batch; more get 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Pages run through the vision encoder in one pass.
    #[arg(long, default_value_t = 8)]
    pub vision_batch: usize,
    /// Memory for cached visual tokens, in MiB.
    #[arg(long, default_value_t = 512)]
    pub cache_mb: usize,
    /// The largest request body, in MiB (413 beyond).
    #[arg(long, default_value_t = 16)]
    pub max_body_mb: usize,
    /// The most tokens a request may ask for (422 beyond).
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// Tokens generated when a request does not say.
    #[arg(long, default_value_t = 128)]
    pub default_tokens: usize,
    /// The most pages a document may render to (422 beyond).
    #[arg(long, default_value_t = 8)]
    pub max_pages: usize,
    /// Seconds a request may take, queueing included (504 beyond; its generation is stopped).
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Seconds that requests in progress get to finish after SIGINT/SIGTERM before they are cut short.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a connection has to send a whole request head (slow clients are closed).
    #[arg(long, default_value_t = 30)]
    pub header_timeout_secs: u64,
}

fn parse_named_adapter(arg: &str) -> std::result::Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => Ok((name.to_string(), PathBuf::from(dir))),
        _ => Err(format!("expected NAME=DIR, got {arg:?}")),
    }
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

#[derive(Debug, Args)]
#[command(after_help = "A text that needs several pages is written to <stem>-1.png, <stem>-2.png, ... beside \
                        --output (page-1.png, page-2.png, ... by default); one page goes to --output itself. \
                        Files are written to a temporary file, then renamed into place.")]
pub struct RenderArgs {
    /// UTF-8 text file to render; a PNG or JPEG image (recognised by content) is shown instead as the padded
    /// square the model sees in --mode.
    #[arg(long, short)]
    pub document: PathBuf,
    /// Output PNG file.
    #[arg(long, short, default_value = "page.png")]
    pub output: PathBuf,
    /// Page width in pixels.
    #[arg(long, default_value_t = RenderConfig::default().width)]
    pub width: u32,
    /// Page height in pixels.
    #[arg(long, default_value_t = RenderConfig::default().height)]
    pub height: u32,
    /// Font size in pixels per em (DejaVu Sans Mono advances 0.6 em a character).
    #[arg(long, default_value_t = RenderConfig::default().font_size)]
    pub font_size: f32,
    /// Baseline-to-baseline distance in pixels [default: the font's height plus 1 px, 32 at size 26].
    #[arg(long)]
    pub line_pitch: Option<u32>,
    /// Blank border on each side in pixels.
    #[arg(long, default_value_t = RenderConfig::default().margin)]
    pub margin: u32,
    /// Resolution mode, for an image document: tiny 512, small 640, base 1024, large 1280 px.
    #[arg(long, value_enum, default_value_t = Mode::Base)]
    pub mode: Mode,
    /// Render as this model does (its page size, type size and mode), instead of the options above: a model
    /// directory, or tiny-reader (the bundled reader).
    #[arg(long, conflicts_with_all = ["width", "height", "font_size", "line_pitch", "margin", "mode"])]
    pub model: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Writes config.json (DeepSeek-OCR's format), tokenizer.json (one token per UTF-8 byte, made \
                        by deepsynth) and model.safetensors (seeded random weights: the same seed gives the same \
                        files).")]
pub struct InitArgs {
    /// tiny: the whole architecture at small widths (~3M parameters, fast on a CPU); deepseek-ocr: the released
    /// model's dimensions and tensor names (3.3B parameters, bf16, ~6.7 GB).
    #[arg(long, value_enum)]
    pub preset: Preset,
    /// Model directory to write (created if missing).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How the model reads instructions: in its prompt, or through a Qwen2-style instruction encoder.
    #[arg(long, value_enum, default_value_t = InstructionChoice::Prompt)]
    pub instruction: InstructionChoice,
}

/// Where a model comes from and what runs it.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model directory (config.json, model.safetensors or an index with shards, tokenizer.json), a Hugging Face
    /// Hub id (fetched when online, e.g. deepseek-ai/DeepSeek-OCR), or tiny-reader: the small reader bundled with
    /// deepsynth.
    #[arg(long, short, default_value = crate::engine::bundled::NAME)]
    pub model: String,
    /// Compute device: cpu, or cuda / cuda:N (builds with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// How answers are generated.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = SamplingParams::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample among the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample among the most likely tokens whose probabilities add up to p (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Divide (or, when negative, multiply) the logits of tokens already in the prompt or answer by this (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Seed of the sampling (the same seed gives the same answer).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    fn params(&self) -> SamplingParams {
        SamplingParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  deepsynth instruct --model tiny --document report.txt --instruction \"What is the total?\"\n  \
                        deepsynth instruct --model tiny --batch dev.jsonl --output predictions.jsonl\n  \
                        deepsynth instruct --model tiny --document page.png --interactive"
)]
pub struct InstructArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// LoRA adapter directory in PEFT's format (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The document: a text file, a PNG/JPEG page, or the text itself.
    #[arg(long, short, required_unless_present = "batch")]
    pub document: Option<String>,
    /// What to do with the document (a question, "Free OCR.", ...).
    #[arg(long, short, required_unless_present_any = ["batch", "interactive"], conflicts_with = "interactive")]
    pub instruction: Option<String>,
    /// Print a JSON object: answer, tokens_generated, prompt_tokens, vision_tokens, finished, timings.
    #[arg(long, conflicts_with_all = ["batch", "interactive"])]
    pub json: bool,
    /// Answer every record of a JSONL file (deepsynth's record schema); needs --output.
    #[arg(long, conflicts_with_all = ["document", "instruction", "interactive"], requires = "output")]
    pub batch: Option<PathBuf>,
    /// Predictions file for --batch (JSONL: id, source, instruction, prediction, answers, token counts).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// How many --batch records are generated together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Read instructions from standard input, one per line, about one --document (:q quits).
    #[arg(long)]
    pub interactive: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Writes checkpoint-N/ folders (adapter or model weights, optimizer state, trainer_state.json), \
                        final/, train_log.jsonl and loss.svg into the config's output_dir. Ctrl-C saves a \
                        checkpoint before exiting; --resume continues exactly where it stopped. See configs/ for \
                        examples and README for every key."
)]
pub struct TrainArgs {
    /// Training configuration, JSON or TOML.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Continue from the latest checkpoint-N in output_dir (same data order, same optimizer state).
    #[arg(long)]
    pub resume: bool,
    /// Compute device: cpu, or cuda / cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Base model directory.
    #[arg(long, short)]
    pub model: PathBuf,
    /// LoRA adapter directory (PEFT format).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Output model directory (config.json, tokenizer.json, model.safetensors with the adapter folded in).
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct CastArgs {
    /// Model directory.
    #[arg(long, short)]
    pub model: PathBuf,
    /// The dtype to store floating-point weights in.
    #[arg(long, value_enum)]
    pub dtype: CastDtype,
    /// Output model directory (config.json, tokenizer.json, model.safetensors).
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "Example (the tiny reading recipe's stage 2b, configs/pretrain-tiny-qa-grown.toml):\n  \
                        deepsynth grow --model runs/pretrain-tiny/qa/final --before 1,2 --output runs/pretrain-tiny/qa-5-layers")]
pub struct GrowArgs {
    /// Model directory.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Insert a copy of each of these decoder layers (0-based) before it, with its attention output and MLP down
    /// projections zeroed.
    #[arg(long, value_delimiter = ',', required = true)]
    pub before: Vec<usize>,
    /// Output model directory (config.json, tokenizer.json, model.safetensors).
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CastDtype {
    F32,
    F16,
    Bf16,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  deepsynth eval --predictions predictions.jsonl --references dev.jsonl\n  \
                        deepsynth eval --model tiny --dataset dev.jsonl --json\n\
                        EM and F1 are the official SQuAD v2 script's, ROUGE-L rouge-score's, BLEU sacrebleu's \
                        corpus BLEU (13a, exp smoothing), CER jiwer's; all on a 0-100 scale. A question without \
                        gold answers is right only when answered with nothing. The per-example file (JSONL) goes \
                        to --per-example, by default <predictions stem>.scores.jsonl beside the predictions.")]
pub struct EvalArgs {
    /// Predictions: JSONL lines with `id` and `prediction` (`instruct --batch` output), or one JSON object
    /// id -> answer (SQuAD's format).
    #[arg(long, short, required_unless_present = "model", conflicts_with = "model")]
    pub predictions: Option<PathBuf>,
    /// Reference records (the dataset schema), joined with the predictions by id [default: the `answers` and
    /// `source` on each prediction line].
    #[arg(long, short, conflicts_with = "model")]
    pub references: Option<PathBuf>,
    /// Generate the predictions first with this model (a directory or Hub id), on --dataset.
    #[arg(long, short, requires = "dataset")]
    pub model: Option<String>,
    /// LoRA adapter directory in PEFT's format, for --model.
    #[arg(long, requires = "model")]
    pub adapter: Option<PathBuf>,
    /// Records to answer and score against, with --model.
    #[arg(long, requires = "model", conflicts_with = "predictions")]
    pub dataset: Option<PathBuf>,
    /// Where --model writes its predictions [default: <dataset stem>.predictions.jsonl beside the dataset].
    #[arg(long, requires = "model")]
    pub predictions_output: Option<PathBuf>,
    /// Compute device for --model: cpu, or cuda / cuda:N (builds with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// How many --dataset records are generated together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Per-example scores file (JSONL).
    #[arg(long)]
    pub per_example: Option<PathBuf>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Porter-stem words for ROUGE-L (rouge-score's `use_stemmer`).
    #[arg(long)]
    pub rouge_stem: bool,
    /// A reference without a prediction: leave it out (listed), score it as an empty answer (listed), or fail.
    #[arg(long, value_enum, default_value_t = eval::Missing::Skip)]
    pub missing: eval::Missing,
}

#[derive(Debug, Args)]
#[command(after_help = "The names are those of DeepSeek-OCR's reference run: images_ori [pages,3,S,S], sam_out, \
                        clip_out (class position included), projector_out, logits [positions, vocab] for every \
                        prompt position, generated_ids (prompt then greedy tokens, int64).")]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The page: a PNG/JPEG image, or a text file (rendered as the model renders it).
    #[arg(long)]
    pub image: PathBuf,
    /// Resolution mode [default: the model's].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Prompt token ids (a JSON array, one <image> id per visual token) instead of the model's own prompt.
    #[arg(long)]
    pub input_ids: Option<PathBuf>,
    /// The instruction of the model's own prompt (when --input-ids is not given).
    #[arg(long, default_value = "Free OCR.")]
    pub instruction: String,
    /// Greedy tokens to generate after the prompt.
    #[arg(long, default_value_t = 4)]
    pub new_tokens: usize,
    /// Output safetensors file.
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output JSONL file (deepsynth records).
    #[arg(long, short)]
    pub output: PathBuf,
    /// How many cards.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Seed (the same seed gives the same cards).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// qa: one question per card; ocr: "Free OCR." with the whole card as the answer; glyphs: "Free OCR." of
    /// lines of random letters and digits (no keys; --min/--max-fields count its lines).
    #[arg(long, value_enum, default_value_t = Task::Qa)]
    pub task: Task,
    /// pools: names, cities and colours from small lists; random: every value fresh random letters (years and
    /// codes are always fresh).
    #[arg(long, value_enum, default_value_t = Values::Pools)]
    pub values: Values,
    /// person: Name, City, Colour, Year, Code (what the bundled reader was trained on); ticket: Flight, Gate, Seat,
    /// Zone (keys it never saw).
    #[arg(long, value_enum, default_value_t = Card::Person)]
    pub card: Card,
    /// Lines a card has, at least (1-5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub min_fields: u8,
    /// Lines a card has, at most (1-5, not below --min-fields).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub max_fields: u8,
    /// qa only: ask only about these fields of the card (e.g. city,code), each card holding all of them, so that
    /// keys a model confuses stand side by side.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub ask: Vec<synth::Field>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Runs offline, in minutes on a laptop CPU: loads the bundled tiny reader, converts the bundled \
                        samples of each dataset, makes reading cards of a kind the reader has never seen (tickets), \
                        evaluates, fine-tunes, evaluates again on held-out cards, answers one question, and prints \
                        the next commands to try."
)]
pub struct QuickstartArgs {
    /// Folder for everything it writes (replaced if an earlier quickstart made it).
    #[arg(long, short, default_value = "deepsynth-quickstart")]
    pub output: PathBuf,
    /// Training steps (batches of 8).
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Ticket cards to train on (half as many person cards join them; a tenth as many fresh cards of each kind,
    /// 16 to 100, are held out).
    #[arg(long, default_value_t = 2000)]
    pub cards: usize,
    /// Seed of the model, the data and the training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// lora: adapters on the bundled reader, its weights frozen; full: every decoder weight trains.
    #[arg(long, value_enum, default_value_t = QuickstartMethod::Lora)]
    pub method: QuickstartMethod,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QuickstartMethod {
    Full,
    Lora,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Mix several JSONL files with weights, drop duplicates, shuffle (seeded).
    Mix(MixArgs),
    /// Split one JSONL file into train/validation/test, stratified by source.
    Split(SplitArgs),
    /// Check a JSONL file against the record schema; exit non-zero when invalid.
    Validate(ValidateArgs),
    /// Generate synthetic reading pages with random facts and questions about them.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Records whose text and instruction match after Unicode lower-casing and whitespace \
                        collapsing are duplicates: the first in input order is kept, before weights apply. \
                        Summary on stderr.")]
pub struct MixArgs {
    /// Input record file(s), plain or gzip, each as PATH or PATH:WEIGHT (WEIGHT a number >= 0, default 1).
    /// An input of n records gives round(WEIGHT*n): 1 every record once, 2 every record twice, 0.5 a
    /// seeded random half; a fractional part is sampled without replacement (2.5: all twice, plus half).
    /// The split is at the last ':' and only when a number follows, so paths holding ':' work as they are.
    #[arg(long, short, num_args = 1.., required = true, value_name = "PATH[:WEIGHT]")]
    pub input: Vec<WeightedInput>,
    /// Output JSONL file (written to a temporary file, then renamed into place).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Seed for the weighted sampling and the shuffle.
    #[arg(long, default_value_t = convert::DEFAULT_SEED)]
    pub seed: u64,
}

#[derive(Debug, Args)]
#[command(after_help = "Each source's records are shuffled (seeded) and cut by the fractions, rounded so \
                        that the counts add up (largest remainders); each output keeps the input's order.")]
pub struct SplitArgs {
    /// Input record file, plain or gzip.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Folder for train.jsonl, validation.jsonl and test.jsonl (created if missing).
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Train, validation and test fractions: non-negative, summing to 1 (else a usage error, exit 2).
    #[arg(long, default_value_t = Fractions::default(), value_name = "TRAIN,VALIDATION,TEST")]
    pub fractions: Fractions,
    /// Seed for the shuffle within each source.
    #[arg(long, default_value_t = convert::DEFAULT_SEED)]
    pub seed: u64,
}

#[derive(Debug, Args)]
#[command(after_help = "Prints \"valid: N records\" and exits 0 on a clean file; otherwise prints counts per \
                        problem kind and the first problems (file:line, field) and exits 1.")]
pub struct ValidateArgs {
    /// Record file to check, plain or gzip.
    pub file: PathBuf,
    /// Longest `text` accepted, in characters.
    #[arg(long, default_value_t = validate::DEFAULT_MAX_TEXT_CHARS)]
    pub max_text_chars: usize,
    /// Longest `instruction` accepted, in characters.
    #[arg(long, default_value_t = validate::DEFAULT_MAX_INSTRUCTION_CHARS)]
    pub max_instruction_chars: usize,
    /// Longest `answer` (and each of `answers`) accepted, in characters.
    #[arg(long, default_value_t = validate::DEFAULT_MAX_ANSWER_CHARS)]
    pub max_answer_chars: usize,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert(args) => run_convert(args),
        Command::Data(cmd) => match cmd {
            DataCommand::Mix(args) => run_mix(args),
            DataCommand::Split(args) => run_split(args),
            DataCommand::Validate(args) => run_validate(args),
            DataCommand::Synth(args) => run_synth(args),
        },
        Command::Init(args) => run_init(args),
        Command::Render(args) => run_render(args),
        Command::Train(args) => run_train(args),
        Command::Instruct(args) => run_instruct(args),
        Command::Eval(args) => run_eval(args),
        Command::Serve(args) => run_serve(args),
        Command::Inspect(args) => run_inspect(args),
        Command::Merge(args) => run_merge(args),
        Command::Cast(args) => run_cast(args),
        Command::Grow(args) => {
            let layers = crate::engine::grow::grow(&args.model, &args.output, &args.before)?;
            eprintln!("deepsynth grow: {layers} decoder layers -> {}", args.output.display());
            Ok(())
        }
        Command::Quickstart(args) => quickstart::run(&quickstart::Options {
            output: args.output,
            steps: args.steps,
            cards: args.cards,
            seed: args.seed,
            method: match args.method {
                QuickstartMethod::Full => Method::Full,
                QuickstartMethod::Lora => Method::Lora,
            },
        })
        .map(|_| ()),
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

fn run_render(args: RenderArgs) -> Result<()> {
    let config = RenderConfig {
        width: args.width,
        height: args.height,
        font_size: args.font_size,
        line_pitch: args.line_pitch.unwrap_or_else(|| RenderConfig::natural_line_pitch(args.font_size)),
        margin: args.margin,
    };
    let (config, mode) = match &args.model {
        Some(spec) => {
            let dir = checkpoint::resolve(spec)?;
            let model = crate::engine::config::ModelConfig::from_file(&dir.join(checkpoint::CONFIG))?;
            (model.deepsynth.render, model.deepsynth.mode)
        }
        None => (config, args.mode),
    };
    let written = page::render_document(&args.document, &args.output, &config, mode)?;
    for path in &written {
        eprintln!("deepsynth render: {} -> {}", args.document.display(), path.display());
    }
    Ok(())
}

fn run_init(args: InitArgs) -> Result<()> {
    let params = preset::init(args.preset, args.instruction, &args.output, args.seed)?;
    eprintln!(
        "deepsynth init: {:?} model, {:.1}M parameters, seed {} -> {}",
        args.preset,
        params as f64 / 1e6,
        args.seed,
        args.output.display()
    );
    Ok(())
}

fn run_instruct(args: InstructArgs) -> Result<()> {
    let params = args.sampling.params();
    params.validate()?;
    let model = instruct::load_model(&args.model.model, args.adapter.as_deref(), &args.model.device)?;
    if let Some(input) = &args.batch {
        let output = args.output.as_ref().expect("clap requires --output with --batch");
        let count = instruct::batch(&model, input, output, args.batch_size, &params)?;
        eprintln!("deepsynth instruct: {count} predictions -> {}", output.display());
        return Ok(());
    }
    let document = args.document.as_deref().expect("clap requires --document");
    if args.interactive {
        return instruct::interactive(&model, document, &params, std::io::stdin().lock(), std::io::stdout());
    }
    let instruction = args.instruction.as_deref().expect("clap requires --instruction");
    let answer = instruct::single(&model, document, instruction, &params)?;
    if args.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        println!("{}", answer.answer);
    }
    Ok(())
}

fn run_train(args: TrainArgs) -> Result<()> {
    let outcome = train::train(&args.config, args.resume, &args.device)?;
    let state = &outcome.state;
    let last_loss = state.log_history.iter().rev().find_map(|e| e.loss);
    if outcome.interrupted {
        anyhow::bail!(
            "interrupted at step {}/{}; checkpoint saved to {}. Continue with: deepsynth train --config {} --resume",
            state.global_step,
            state.total_steps,
            outcome.saved.display(),
            args.config.display()
        );
    }
    eprintln!(
        "deepsynth train: {} steps, last training loss {}, best validation loss {} -> {} (log: {}, plot: {})",
        state.global_step,
        last_loss.map_or("-".into(), |l| format!("{l:.4}")),
        state.best_metric.map_or("-".into(), |l| format!("{l:.4}")),
        outcome.saved.display(),
        outcome.output_dir.join("train_log.jsonl").display(),
        outcome.output_dir.join("loss.svg").display()
    );
    Ok(())
}

fn run_merge(args: MergeArgs) -> Result<()> {
    let merged = crate::engine::lora::merge(&args.model, &args.adapter, &args.output)?;
    eprintln!("deepsynth merge: {merged} weights updated -> {}", args.output.display());
    Ok(())
}

fn run_cast(args: CastArgs) -> Result<()> {
    let dtype = match args.dtype {
        CastDtype::F32 => DType::F32,
        CastDtype::F16 => DType::F16,
        CastDtype::Bf16 => DType::BF16,
    };
    let changed = checkpoint::cast(&args.model, &args.output, dtype)?;
    eprintln!("deepsynth cast: {changed} tensors stored as {dtype:?} -> {}", args.output.display());
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let generate = match (args.model, args.dataset) {
        (Some(model), Some(dataset)) => Some(eval::Generate {
            model,
            adapter: args.adapter,
            device: args.device,
            dataset,
            output: args.predictions_output,
            batch_size: args.batch_size,
            params: args.sampling.params(),
        }),
        _ => None,
    };
    let options = eval::Options {
        predictions: args.predictions,
        references: args.references,
        generate,
        per_example: args.per_example,
        rouge_stem: args.rouge_stem,
        missing: args.missing,
    };
    let report = eval::run(&options)?;
    if !args.json {
        print!("{report}");
        return Ok(());
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    // The table lists them itself; beside JSON on stdout, a person still sees them.
    if !report.missing.is_empty() {
        let ids = eval::list_ids(&report.missing);
        eprintln!("deepsynth eval: {} references have no prediction: {ids}", report.missing.len());
    }
    Ok(())
}

fn run_inspect(args: InspectArgs) -> Result<()> {
    let device = model::device(&args.model.device)?;
    let dir = checkpoint::resolve(&args.model.model)?;
    let mut model = Model::load(&dir, &device)?;
    if let Some(mode) = args.mode {
        model.config.deepsynth.mode = mode;
    }
    let document = Document::from_file(&args.image)?;
    let input_ids = args.input_ids.as_deref().map(inspect::read_input_ids).transpose()?;
    let tensors = inspect::inspect(&model, &document, input_ids, &args.instruction, args.new_tokens)?;
    checkpoint::save_atomic(&tensors, &args.output)?;
    eprintln!("deepsynth inspect: {} tensors -> {}", tensors.len(), args.output.display());
    Ok(())
}

fn run_synth(args: SynthArgs) -> Result<()> {
    let records = {
        anyhow::ensure!(args.min_fields <= args.max_fields, "--min-fields is above --max-fields");
        let fields = usize::from(args.min_fields)..=usize::from(args.max_fields);
        if !args.ask.is_empty() {
            anyhow::ensure!(args.task == Task::Qa, "--ask is for --task qa (the other tasks ask no question)");
            for (i, f) in args.ask.iter().enumerate() {
                let key = f.key().to_lowercase();
                anyhow::ensure!(args.card.fields().contains(f), "--ask {key}: a {:?} card has no such line", args.card);
                anyhow::ensure!(!args.ask[..i].contains(f), "--ask names {key} twice");
            }
        }
        synth::generate_sized(args.count, args.seed, args.task, args.values, args.card, fields, &args.ask)
    };
    let mut writer = crate::data::io::JsonlWriter::create(&args.output)?;
    for record in records {
        writer.write(record)?;
    }
    let n = writer.commit()?;
    eprintln!("deepsynth data synth: {n} cards -> {}", args.output.display());
    Ok(())
}

fn run_mix(args: MixArgs) -> Result<()> {
    let summary = mix::mix(&args.input, &args.output, args.seed)?;
    eprintln!("deepsynth data mix -> {}: {summary}", args.output.display());
    Ok(())
}

fn run_split(args: SplitArgs) -> Result<()> {
    let summary = split::split(&args.input, &args.output_dir, args.fractions, args.seed)?;
    eprintln!("deepsynth data split -> {}: {summary}", args.output_dir.display());
    Ok(())
}

fn run_validate(args: ValidateArgs) -> Result<()> {
    let limits =
        Limits { text: args.max_text_chars, instruction: args.max_instruction_chars, answer: args.max_answer_chars };
    let report = validate::validate(&args.file, limits)?;
    // The report is the command's output (stdout); the exit code says whether the file is clean.
    println!("{report}");
    anyhow::ensure!(report.is_clean(), "{} is not valid: {} problems", args.file.display(), report.problem_total());
    Ok(())
}

fn run_serve(args: ServeArgs) -> Result<()> {
    let api_key = args.api_key.or_else(|| std::env::var(crate::serve::API_KEY_ENV).ok()).filter(|k| !k.is_empty());
    const MIB: usize = 1 << 20;
    crate::serve::run(crate::serve::Options {
        model: args.model.model,
        adapters: args.adapter,
        model_name: args.model_name,
        device: args.model.device,
        host: args.host,
        port: args.port,
        api_key,
        max_batch: args.max_batch,
        batch_wait: std::time::Duration::from_millis(args.batch_wait_ms),
        max_queue: args.max_queue,
        vision_batch: args.vision_batch,
        cache_bytes: args.cache_mb * MIB,
        max_body_bytes: args.max_body_mb * MIB,
        max_tokens: args.max_tokens,
        default_tokens: args.default_tokens,
        max_pages: args.max_pages,
        timeout: std::time::Duration::from_secs(args.timeout_secs),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
        max_connections: args.max_connections,
        header_timeout: std::time::Duration::from_secs(args.header_timeout_secs),
    })
}
