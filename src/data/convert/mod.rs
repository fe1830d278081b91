//! `deepsynth convert`: public QA datasets, read in their real distribution formats, to `Record` JSONL.
//!
//! Each converter reads its inputs and hands records (or the reason a record is bad) to a [`Sink`],
//! which applies the `--on-error` policy, `--max-samples`, and writes the output atomically.

pub mod fiqa;
mod jsonscan;
pub mod marco;
pub mod nq;
pub mod squad;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;

use super::error::BadInput;
use super::io::{JsonlWriter, Lines};
use super::record::Record;

/// The public datasets `convert` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dataset {
    /// SQuAD v1.1 / v2.0 JSON (data[].paragraphs[].qas[]).
    Squad,
    /// Natural Questions, original or simplified JSONL (detected per line).
    Nq,
    /// MS MARCO v2.1 (columnar JSON) or v1.1 (JSONL).
    Marco,
    /// FiQA: the BEIR layout or the FiQA-2018 task-2 TSVs.
    Fiqa,
}

impl Dataset {
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Squad => "squad",
            Dataset::Nq => "nq",
            Dataset::Marco => "marco",
            Dataset::Fiqa => "fiqa",
        }
    }
}

/// What to do with a record that does not have its format's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnError {
    /// Stop at the first bad record with an error naming file and line; write no output.
    #[default]
    Fail,
    /// Skip bad records, count them, and report them in the summary.
    Skip,
}

/// Options shared by every converter; each uses the ones that apply to its dataset.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    /// Dataset split, where the format holds several (FiQA BEIR qrels: train, dev, test).
    pub split: Option<String>,
    pub max_samples: Option<u64>,
    pub on_error: OnError,
    /// NQ: longest page text kept (characters) when there is no long answer.
    pub max_chars: usize,
    /// FiQA: distractor posts added to each document.
    pub distractors: usize,
    pub seed: u64,
}

impl ConvertOptions {
    pub fn new(inputs: Vec<PathBuf>, output: PathBuf) -> Self {
        ConvertOptions {
            inputs,
            output,
            split: None,
            max_samples: None,
            on_error: OnError::Fail,
            max_chars: DEFAULT_MAX_CHARS,
            distractors: DEFAULT_DISTRACTORS,
            seed: DEFAULT_SEED,
        }
    }
}

pub const DEFAULT_MAX_CHARS: usize = 20_000;
pub const DEFAULT_DISTRACTORS: usize = 3;
pub const DEFAULT_SEED: u64 = 42;

/// Where converters put records: applies `--on-error` and `--max-samples`, counts what happened.
pub struct Sink {
    out: JsonlWriter,
    on_error: OnError,
    max_samples: Option<u64>,
    summary: Summary,
}

/// What a converter decided about one input item, when items are decided on several cores: applied to the sink
/// in input order.
pub enum Decision {
    /// A record, already encoded as one JSON line (without its newline).
    Emit(Vec<u8>),
    Reject(BadInput),
    Note(&'static str),
}

/// What a conversion did: records written, records skipped (by kind), and notes about accepted records.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub written: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    /// The first few skipped records' full messages, for the report.
    pub skipped_examples: Vec<String>,
    /// Things worth knowing that did not stop a record (e.g. an answer_start that does not match).
    pub notes: BTreeMap<&'static str, u64>,
}

const SKIP_EXAMPLES: usize = 5;

/// JSON-lines input parsed per batch: large enough to keep every core busy, small enough to stream.
const LINE_BATCH_BYTES: usize = 8 << 20;

impl Sink {
    pub fn new(out: JsonlWriter, on_error: OnError, max_samples: Option<u64>) -> Self {
        Sink { out, on_error, max_samples, summary: Summary::default() }
    }

    /// True once `--max-samples` records are written: converters stop reading.
    pub fn is_full(&self) -> bool {
        self.max_samples.is_some_and(|m| self.out.count() >= m)
    }

    pub fn emit(&mut self, record: Record) -> Result<()> {
        if !self.is_full() {
            self.out.write(record)?;
        }
        Ok(())
    }

    /// A bad record: an error under `--on-error fail`, counted and skipped under `skip`.
    pub fn reject(&mut self, bad: BadInput) -> Result<()> {
        match self.on_error {
            OnError::Fail => Err(bad.into()),
            OnError::Skip => {
                tracing::debug!("skipped: {bad}");
                *self.summary.skipped.entry(bad.kind).or_default() += 1;
                if self.summary.skipped_examples.len() < SKIP_EXAMPLES {
                    self.summary.skipped_examples.push(bad.to_string());
                }
                Ok(())
            }
        }
    }

    /// Reads a JSON-lines file: `parse` turns each non-blank line (with its number) into a value or the reason
    /// the line is bad, on every core, batch by batch; `take` then gets the values in file order, and bad lines
    /// go to `reject`. Stops once the sink is full. A line that is not UTF-8 is rejected here.
    pub fn each_line<T: Send>(
        &mut self,
        path: &Path,
        parse: impl Fn(u64, &str) -> Result<T, Box<BadInput>> + Sync,
        mut take: impl FnMut(&mut Sink, T) -> Result<()>,
    ) -> Result<()> {
        let mut lines = Lines::open(path)?;
        let mut batch: Vec<(u64, Result<String, BadInput>)> = Vec::new();
        loop {
            let mut bytes = 0;
            let mut more = true;
            while bytes < LINE_BATCH_BYTES {
                let Some((n, line)) = lines.next_line()? else {
                    more = false;
                    break;
                };
                bytes += line.as_ref().map_or(0, |l| l.len());
                batch.push((n, line.map(str::to_owned)));
            }
            let parsed: Vec<Option<Result<T, Box<BadInput>>>> = std::mem::take(&mut batch)
                .into_par_iter()
                .map(|(n, line)| match line {
                    Ok(line) if line.trim().is_empty() => None,
                    Ok(line) => Some(parse(n, &line)),
                    Err(bad) => Some(Err(Box::new(bad))),
                })
                .collect();
            for item in parsed.into_iter().flatten() {
                match item {
                    Ok(value) => take(self, value)?,
                    Err(bad) => self.reject(*bad)?,
                }
                if self.is_full() {
                    return Ok(());
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    pub fn note(&mut self, kind: &'static str) {
        *self.summary.notes.entry(kind).or_default() += 1;
    }

    /// Applies decisions in order, stopping once the sink is full.
    pub fn apply(&mut self, decisions: Vec<Decision>) -> Result<()> {
        for decision in decisions {
            if self.is_full() {
                break;
            }
            match decision {
                Decision::Emit(line) => self.out.write_encoded(line)?,
                Decision::Reject(bad) => self.reject(bad)?,
                Decision::Note(kind) => self.note(kind),
            }
        }
        Ok(())
    }

    /// Moves the output into place and returns the summary.
    pub fn finish(self) -> Result<Summary> {
        let mut summary = self.summary;
        summary.written = self.out.commit()?;
        Ok(summary)
    }
}

impl Summary {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} records written, {} skipped", self.written, self.skipped_total())?;
        if !self.skipped.is_empty() {
            let why: Vec<String> = self.skipped.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            write!(f, " ({})", why.join(", "))?;
        }
        for (k, n) in &self.notes {
            write!(f, "; note: {n} {k}")?;
        }
        Ok(())
    }
}

/// Converts `dataset` as `opts` says; the output file exists only if this returns `Ok`.
pub fn convert(dataset: Dataset, opts: &ConvertOptions) -> Result<Summary> {
    anyhow::ensure!(!opts.inputs.is_empty(), "no --input given");
    let mut sink = Sink::new(JsonlWriter::create(&opts.output)?, opts.on_error, opts.max_samples);
    match dataset {
        Dataset::Squad => squad::convert(opts, &mut sink)?,
        Dataset::Nq => nq::convert(opts, &mut sink)?,
        Dataset::Marco => marco::convert(opts, &mut sink)?,
        Dataset::Fiqa => fiqa::convert(opts, &mut sink)?,
    }
    sink.finish()
}
