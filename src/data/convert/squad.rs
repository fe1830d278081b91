//! SQuAD v1.1 and v2.0: one JSON document, `data[].paragraphs[].qas[]`.
//!
//! The context is kept byte-for-byte; unanswerable v2 questions (`is_impossible`) get no golds, and
//! `plausible_answers` are never gold. `answer_start` counts characters: an answer whose text is not
//! at that offset is kept, and counted as a note in the summary.

use std::borrow::Cow;
use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

use super::{ConvertOptions, Sink};
use crate::data::error::{BadInput, Location};
use crate::data::io;
use crate::data::record::Record;

#[derive(Deserialize)]
struct SquadFile<'a> {
    #[serde(borrow)]
    data: Vec<Article<'a>>,
}

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

fn convert_file(path: &Path, sink: &mut Sink) -> Result<()> {
    let bytes = io::read_all(path)?;
    // A broken document cannot be skipped past: it is an error whatever --on-error says.
    let file: SquadFile = serde_json::from_slice(&bytes).map_err(|e| {
        let mut bad = BadInput::json(path, 1, &e);
        bad.message.push_str(
            " (expected a SQuAD v1.1/v2.0 JSON file: {\"data\": [{\"paragraphs\": [{\"context\", \"qas\"}]}]})",
        );
        bad
    })?;
    for (a, article) in file.data.iter().enumerate() {
        for (p, paragraph) in article.paragraphs.iter().enumerate() {
            let at = |field: &str, q: Option<usize>| {
                let within = match q {
                    Some(q) => format!("data[{a}].paragraphs[{p}].qas[{q}]"),
                    None => format!("data[{a}].paragraphs[{p}]"),
                };
                Location::file(path).within(within).field(field)
            };
            let Some(context) = paragraph.context.as_deref() else {
                sink.reject(BadInput::new(at("context", None), "missing context", "missing context"))?;
                continue;
            };
            let mut chars = CharOffsets::new(context);
            for (q, qa) in paragraph.qas.iter().enumerate() {
                let (Some(id), Some(question)) = (qa.id.as_deref(), qa.question.as_deref()) else {
                    let field = if qa.id.is_none() { "id" } else { "question" };
                    sink.reject(BadInput::new(at(field, Some(q)), "missing field", format!("missing `{field}`")))?;
                    continue;
                };
                if question.trim().is_empty() {
                    sink.reject(BadInput::new(at("question", Some(q)), "empty question", "empty question"))?;
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
                            sink.note("answers whose answer_start does not point at their text");
                        }
                        golds.push(text.to_string());
                    }
                }
                if let Some(field) = bad {
                    sink.reject(BadInput::new(at(&field, Some(q)), "missing answer text", "missing answer text"))?;
                    continue;
                }
                sink.emit(Record::new(id, "squad", context, question, golds))?;
                if sink.is_full() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
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
