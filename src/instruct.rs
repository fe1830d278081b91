//! `deepsynth instruct`: answer an instruction about a document, for one question, a JSONL file of records, or
//! interactively on one document.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::data::io::JsonlWriter;
use crate::data::jsonl;
use crate::engine::model::{Answer, Document, Encoded, Model, Request};
use crate::engine::sample::SamplingParams;

/// Loads `--model` (a directory or a Hub id) on `device`, with `--adapter` attached.
pub fn load_model(spec: &str, adapter: Option<&Path>, device: &str) -> anyhow::Result<Model> {
    let device = crate::engine::model::device(device)?;
    let dir = crate::engine::checkpoint::resolve(spec)?;
    let mut model = Model::load(&dir, &device)?;
    if let Some(adapter) = adapter {
        let layers = model.load_adapter(adapter)?;
        tracing::info!("adapter {}: {layers} layers adapted", adapter.display());
    }
    Ok(model)
}

/// One answer, as text or as its JSON record.
pub fn single(model: &Model, document: &str, instruction: &str, params: &SamplingParams) -> anyhow::Result<Answer> {
    let encoded = model.encode(&Document::from_arg(document)?)?;
    let request = Request { document: &encoded, instruction, params: params.clone() };
    Ok(model.answer(std::slice::from_ref(&request))?.remove(0))
}

/// A line of `--batch` output: the record's identity and golds beside the prediction, ready for `deepsynth eval`.
#[derive(Debug, Serialize)]
struct Prediction<'a> {
    id: &'a str,
    source: &'a str,
    instruction: &'a str,
    prediction: &'a str,
    answers: &'a [String],
    tokens_generated: usize,
    prompt_tokens: usize,
    vision_tokens: usize,
}

/// Answers every record of `input` (the dataset schema), `batch_size` at a time, writing predictions to
/// `output` (atomically: nothing is left on failure). Records that share a document reuse its encoding.
/// Returns the number of records answered.
pub fn batch(
    model: &Model,
    input: &Path,
    output: &Path,
    batch_size: usize,
    params: &SamplingParams,
) -> anyhow::Result<u64> {
    Ok(batch_timed(model, input, output, batch_size, params)?.0)
}

/// One chunk of `batch_timed`: its records, the tokens they generated, its wall time (encoding included).
#[derive(Debug, Clone, Copy)]
pub struct BatchTiming {
    pub records: usize,
    pub tokens_generated: usize,
    pub seconds: f64,
}

/// `batch`, also returning each chunk's timing (for `deepsynth eval`'s speed figures).
pub fn batch_timed(
    model: &Model,
    input: &Path,
    output: &Path,
    batch_size: usize,
    params: &SamplingParams,
) -> anyhow::Result<(u64, Vec<BatchTiming>)> {
    anyhow::ensure!(batch_size > 0, "--batch-size must be at least 1");
    params.validate()?;
    let records = jsonl::read_records(input)?;
    let mut writer = JsonlWriter::create(output)?;
    let bar = crate::data::io::progress_bar(records.len() as u64, "answering");
    // Recent documents' encodings (SQuAD-like files ask many questions of one context in a row).
    let mut encodings: HashMap<&str, Encoded> = HashMap::new();
    let mut timings = Vec::with_capacity(records.len().div_ceil(batch_size));
    for chunk in records.chunks(batch_size) {
        let start = std::time::Instant::now();
        if encodings.len() > 64 {
            encodings.clear();
        }
        for record in chunk {
            if !encodings.contains_key(record.text.as_str()) {
                let encoded = model
                    .encode(&Document::Text(record.text.clone()))
                    .with_context(|| format!("{}: record {:?}", input.display(), record.id))?;
                encodings.insert(&record.text, encoded);
            }
        }
        let requests: Vec<Request> = chunk
            .iter()
            .map(|r| Request {
                document: &encodings[r.text.as_str()],
                instruction: &r.instruction,
                params: params.clone(),
            })
            .collect();
        let answers = model.answer(&requests)?;
        timings.push(BatchTiming {
            records: chunk.len(),
            tokens_generated: answers.iter().map(|a| a.tokens_generated).sum(),
            seconds: start.elapsed().as_secs_f64(),
        });
        for (record, answer) in chunk.iter().zip(&answers) {
            let line = serde_json::to_vec(&Prediction {
                id: &record.id,
                source: &record.source,
                instruction: &record.instruction,
                prediction: &answer.answer,
                answers: &record.answers,
                tokens_generated: answer.tokens_generated,
                prompt_tokens: answer.prompt_tokens,
                vision_tokens: answer.vision_tokens,
            })?;
            writer.write_encoded(line)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((writer.commit()?, timings))
}

/// A read-answer loop on one document: each line of `input` is an instruction; `:q` or end of input stops.
pub fn interactive(
    model: &Model,
    document: &str,
    params: &SamplingParams,
    input: impl BufRead,
    mut output: impl Write,
) -> anyhow::Result<()> {
    let encoded = model.encode(&Document::from_arg(document)?)?;
    eprintln!(
        "document: {} page(s), {} visual tokens. Type an instruction and Enter; :q to quit.",
        encoded.pages,
        encoded.tokens.dim(0)?
    );
    eprint!("> ");
    for line in input.lines() {
        let line = line.context("reading an instruction")?;
        let instruction = line.trim();
        if instruction == ":q" || instruction == ":quit" {
            break;
        }
        if !instruction.is_empty() {
            let request = Request { document: &encoded, instruction, params: params.clone() };
            let answer = model.answer(std::slice::from_ref(&request))?.remove(0);
            writeln!(output, "{}", answer.answer)?;
            output.flush()?;
        }
        eprint!("> ");
    }
    Ok(())
}
