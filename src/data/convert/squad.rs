//! SQuAD v1.1 and v2.0: one JSON document, `data[].paragraphs[].qas[]`.
//!
//! The context is kept byte-for-byte; unanswerable v2 questions (`is_impossible`) get no golds, and
//! `plausible_answers` are never gold. `answer_start` counts characters: an answer whose text is not
//! at that offset is kept, and counted as a note in the summary.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::Result;
use rayon::prelude::*;
use serde::Deserialize;

use super::jsonscan::{self, Start};
use super::{ConvertOptions, Decision, Sink};
use crate::data::error::{BadInput, Location};
use crate::data::io;
use crate::data::record::{distinct_golds, EncodedTextRecord};

#[derive(Deserialize)]
struct Article<'a> {
    #[serde(borrow)]
    paragraphs: Vec<Paragraph<'a>>,
}

#[derive(Deserialize)]
struct Paragraph<'a> {
    #[serde(borrow)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    qas: Vec<Qa<'a>>,
}

#[derive(Deserialize)]
struct Qa<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    question: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    answers: Vec<Answer<'a>>,
    #[serde(default)]
    is_impossible: bool,
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    answer_start: Option<i64>,
}

pub fn convert(opts: &ConvertOptions, sink: &mut Sink) -> Result<()> {
    for path in &opts.inputs {
        convert_file(path, sink)?;
        if sink.is_full() {
            break;
        }
    }
    Ok(())
}

/// Articles parsed per batch: large enough to keep every core busy, small enough to stream.
const BATCH_BYTES: usize = 8 << 20;

const EXPECTED: &str = "expected a SQuAD v1.1/v2.0 JSON file: {\"data\": [{\"paragraphs\": [{\"context\", \"qas\"}]}]}";

/// Streams the file's `data` list; articles are parsed and converted on every core, a batch at a time, and
/// their records applied in file order. A broken document cannot be skipped past: a syntax error, or an
/// article of the wrong shape, is an error whatever `--on-error` says.
fn convert_file(path: &Path, sink: &mut Sink) -> Result<()> {
    let mut batch: Vec<(usize, Start, Vec<u8>)> = Vec::new();
    let mut bytes = 0;
    jsonscan::list_items(io::open(path)?, path, "data", |raw, start| {
        batch.push((batch.len(), start, raw.to_vec()));
        bytes += raw.len();
        if bytes >= BATCH_BYTES {
            convert_batch(path, &mut batch, sink)?;
            bytes = 0;
        }
        Ok(if sink.is_full() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
    })
    .map_err(|e| match e.downcast::<BadInput>() {
        Ok(mut bad) => {
            bad.message.push_str(&format!(" ({EXPECTED})"));
            bad.into()
        }
        Err(e) => e,
    })?;
    convert_batch(path, &mut batch, sink)
}

fn convert_batch(path: &Path, batch: &mut Vec<(usize, Start, Vec<u8>)>, sink: &mut Sink) -> Result<()> {
    let decided: Vec<Result<Vec<Decision>, Box<BadInput>>> =
        batch.par_iter().map(|(a, start, raw)| convert_article(path, *a, *start, raw)).collect();
    // Indices count on across batches.
    let next = batch.last().map_or(0, |(a, _, _)| a + 1);
    batch.clear();
    batch.reserve(next.min(1024));
    for decisions in decided {
        sink.apply(decisions.map_err(|bad| *bad)?)?;
    }
    Ok(())
}

/// Boxed: a `BadInput` is large beside the records it stands in for.
fn convert_article(path: &Path, a: usize, start: Start, raw: &[u8]) -> Result<Vec<Decision>, Box<BadInput>> {
    let article: Article = serde_json::from_slice(raw).map_err(|e| {
        let location = start.locate(path, &e).within(format!("data[{a}]"));
        Box::new(BadInput { location, ..BadInput::json(path, 1, &e) })
    })?;
    let mut out = Vec::new();
    for (p, paragraph) in article.paragraphs.iter().enumerate() {
        let at = |field: &str, q: Option<usize>| {
            let within = match q {
                Some(q) => format!("data[{a}].paragraphs[{p}].qas[{q}]"),
                None => format!("data[{a}].paragraphs[{p}]"),
            };
            Location::file(path).within(within).field(field)
        };
        let Some(context) = paragraph.context.as_deref() else {
            out.push(Decision::Reject(BadInput::new(at("context", None), "missing context", "missing context")));
            continue;
        };
        let mut chars = CharOffsets::new(context);
        // Escaped once for all the paragraph's questions.
        let text = serde_json::value::to_raw_value(context).expect("a string always encodes");
        for (q, qa) in paragraph.qas.iter().enumerate() {
            let (Some(id), Some(question)) = (qa.id.as_deref(), qa.question.as_deref()) else {
                let field = if qa.id.is_none() { "id" } else { "question" };
                let bad = BadInput::new(at(field, Some(q)), "missing field", format!("missing `{field}`"));
                out.push(Decision::Reject(bad));
                continue;
            };
            if question.trim().is_empty() {
                out.push(Decision::Reject(BadInput::new(at("question", Some(q)), "empty question", "empty question")));
                continue;
            }
            let mut golds = Vec::with_capacity(qa.answers.len());
            let mut bad = None;
            if !qa.is_impossible {
                for (i, ans) in qa.answers.iter().enumerate() {
                    let Some(text) = ans.text.as_deref() else {
                        bad = Some(format!("answers[{i}].text"));
                        break;
                    };
                    if !chars.text_at(ans.answer_start, text) {
                        out.push(Decision::Note("answers whose answer_start does not point at their text"));
                    }
                    golds.push(text.to_string());
                }
            }
            match bad {
                Some(field) => out.push(Decision::Reject(BadInput::new(
                    at(&field, Some(q)),
                    "missing answer text",
                    "missing answer text",
                ))),
                None => {
                    let answers = distinct_golds(golds);
                    let answer = answers.first().map_or("", String::as_str);
                    let record = EncodedTextRecord {
                        id,
                        source: "squad",
                        text: &text,
                        instruction: question,
                        answer,
                        answers: &answers,
                    };
                    out.push(Decision::Emit(serde_json::to_vec(&record).expect("a record always encodes")));
                }
            }
        }
    }
    Ok(out)
}

/// Character offsets into a context, turned into byte offsets; the table is built once per paragraph, and only
/// when the context is not ASCII (where both are the same).
struct CharOffsets<'a> {
    context: &'a str,
    bytes: Option<Vec<usize>>,
}

impl<'a> CharOffsets<'a> {
    fn new(context: &'a str) -> Self {
        CharOffsets { context, bytes: None }
    }

    /// Whether `text` starts at character offset `start` of the context.
    fn text_at(&mut self, start: Option<i64>, text: &str) -> bool {
        let Some(start) = start.and_then(|s| usize::try_from(s).ok()) else {
            return false;
        };
        let context = self.context;
        let byte = if context.is_ascii() {
            Some(start)
        } else {
            let bytes = self
                .bytes
                .get_or_insert_with(|| context.char_indices().map(|(b, _)| b).chain([context.len()]).collect());
            bytes.get(start).copied()
        };
        byte.and_then(|b| context.get(b..)).is_some_and(|rest| rest.starts_with(text))
    }
}

#[cfg(test)]
mod tests {
    use super::CharOffsets;

    #[test]
    fn answer_start_counts_characters_not_bytes() {
        let mut ctx = CharOffsets::new("Café au lait — über");
        assert!(ctx.text_at(Some(5), "au lait"));
        assert!(!ctx.text_at(Some(6), "au lait"));
        assert!(ctx.text_at(Some(15), "über"));
        assert!(!ctx.text_at(Some(-1), "Café"));
        assert!(!ctx.text_at(Some(99), "über"));
        let mut ascii = CharOffsets::new("abc");
        assert!(ascii.text_at(Some(1), "bc"));
        assert!(!ascii.text_at(Some(9), "bc"));
    }
}
