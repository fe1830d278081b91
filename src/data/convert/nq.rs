//! Natural Questions, JSONL (usually gzipped), in either distribution format, detected per line:
//! the original one (`document_tokens`: `{token, html_token, ...}`) or the simplified one (`document_text`:
//! the tokens joined by single spaces, HTML tags kept as `<...>` tokens).
//!
//! Spans are token offsets `[start_token, end_token)`; a long answer of `-1, -1` is absent. Answers, over all
//! annotations of an example (dev files carry five): the short answers if any annotation has one (one gold per
//! annotation, its spans joined with ", "), else the yes/no answers ("yes"/"no"), else the long answers, else none.
//! The text is the long-answer paragraph of the first annotation that has one; without a long answer it is the
//! whole page, cut to `--max-chars` characters (at the last whitespace before the limit when there is one).
//! HTML tokens are dropped from every text and answer; the rest is joined by single spaces.
//! `example_id` is kept digit for digit (it may not fit 64 bits), whether a JSON number or a string.

use std::borrow::Cow;
use std::path::Path;

use anyhow::Result;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ConvertOptions, Sink};
use crate::data::error::{BadInput, Location};
use crate::data::record::Record;

/// The fields of either format that we use; the rest (`document_html`, byte offsets, candidates) is skipped.
#[derive(Deserialize)]
struct Example<'a> {
    #[serde(borrow)]
    example_id: Option<&'a RawValue>,
    #[serde(borrow)]
    question_text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    document_tokens: Option<Vec<Token<'a>>>,
    #[serde(borrow)]
    document_text: Option<Cow<'a, str>>,
    annotations: Option<Vec<Annotation>>,
}

#[derive(Deserialize)]
struct Token<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    html_token: bool,
}

#[derive(Deserialize)]
struct Annotation {
    long_answer: Option<Span>,
    #[serde(default)]
    short_answers: Vec<Span>,
    #[serde(default)]
    yes_no_answer: YesNo,
}

#[derive(Deserialize, Clone, Copy)]
struct Span {
    start_token: i64,
    end_token: i64,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
enum YesNo {
    #[default]
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "YES")]
    Yes,
    #[serde(rename = "NO")]
    No,
}

/// One document token: its text and whether it is an HTML tag.
type Tok<'a> = (&'a str, bool);

pub fn convert(opts: &ConvertOptions, sink: &mut Sink) -> Result<()> {
    for path in &opts.inputs {
        convert_file(path, opts.max_chars, sink)?;
        if sink.is_full() {
            break;
        }
    }
    Ok(())
}

fn convert_file(path: &Path, max_chars: usize, sink: &mut Sink) -> Result<()> {
    sink.each_line(
        path,
        |n, line| to_record(line, max_chars, path, n),
        |sink, (record, cut)| {
            if cut {
                sink.note("page texts cut to --max-chars");
            }
            sink.emit(record)
        },
    )
}

/// Boxed: a `BadInput` is large beside the records it stands in for.
type Bad = Box<BadInput>;

/// One JSONL line to a record, and whether its page text was cut to `max_chars`.
fn to_record(line: &str, max_chars: usize, path: &Path, n: u64) -> Result<(Record, bool), Bad> {
    let at = |within: Option<String>, field: &str| Location { within, ..Location::line(path, n).field(field) };
    let missing = |field: &str| BadInput::new(at(None, field), "missing field", format!("missing `{field}`"));
    let ex: Example = serde_json::from_str(line).map_err(|e| BadInput::json(path, n, &e))?;

    let id = example_id(ex.example_id.ok_or_else(|| missing("example_id"))?).ok_or_else(|| {
        BadInput::new(at(None, "example_id"), "bad example_id", "expected an integer or a non-empty string")
    })?;
    let question = ex.question_text.as_deref().map(str::trim).unwrap_or_default();
    if question.is_empty() {
        return Err(BadInput::new(at(None, "question_text"), "missing question", "missing or empty question").into());
    }
    let tokens: Vec<Tok> = match (&ex.document_tokens, &ex.document_text) {
        (Some(tokens), _) => tokens.iter().map(|t| (t.token.as_ref(), t.html_token)).collect(),
        (None, Some(text)) => text.split(' ').map(|t| (t, is_html(t))).collect(),
        (None, None) => {
            let expected = "neither `document_tokens` (original NQ format) nor `document_text` (simplified NQ format)";
            return Err(BadInput::new(Location::line(path, n), "unknown format", expected).into());
        }
    };
    let annotations = ex.annotations.as_deref().ok_or_else(|| missing("annotations"))?;
    let (golds, long) = answers(annotations, &tokens, at)?;
    let (text, cut) = match long {
        Some(long) => (long, false),
        None => truncate(join(&tokens), max_chars),
    };
    Ok((Record::new(id, "nq", text, question, golds), cut))
}

/// The golds of an example (short answers, else yes/no, else long answers, over all annotations) and the text of
/// its first long answer. Every span is checked, whichever kind ends up gold, so that no broken line passes.
fn answers(
    annotations: &[Annotation],
    tokens: &[Tok],
    at: impl Fn(Option<String>, &str) -> Location,
) -> Result<(Vec<String>, Option<String>), Bad> {
    let text = |span: Span, within: String| -> Result<String, Bad> {
        let len = tokens.len() as i64;
        match (span.start_token, span.end_token) {
            (s, e) if 0 <= s && s < e && e <= len => Ok(join(&tokens[s as usize..e as usize])),
            (s, e) => {
                let field = if (0..len).contains(&s) { "end_token" } else { "start_token" };
                let msg = format!("span [{s}, {e}) does not lie within the document's {len} tokens");
                Err(BadInput::new(at(Some(within), field), "span out of range", msg).into())
            }
        }
    };
    let (mut shorts, mut yes_nos, mut longs) = (Vec::new(), Vec::new(), Vec::new());
    for (a, ann) in annotations.iter().enumerate() {
        if let Some(span) = ann.long_answer.filter(|s| (s.start_token, s.end_token) != (-1, -1)) {
            longs.push(text(span, format!("annotations[{a}].long_answer"))?);
        }
        let mut spans = Vec::with_capacity(ann.short_answers.len());
        for (s, &span) in ann.short_answers.iter().enumerate() {
            spans.push(text(span, format!("annotations[{a}].short_answers[{s}]"))?);
        }
        spans.retain(|s| !s.is_empty());
        if !spans.is_empty() {
            shorts.push(spans.join(", "));
        }
        match ann.yes_no_answer {
            YesNo::Yes => yes_nos.push("yes".to_string()),
            YesNo::No => yes_nos.push("no".to_string()),
            YesNo::None => {}
        }
    }
    let first_long = longs.iter().find(|l| !l.is_empty()).cloned();
    let golds = [shorts, yes_nos, longs].into_iter().find(|g| !g.is_empty()).unwrap_or_default();
    Ok((golds, first_long))
}

/// The example id as written: the digits of a JSON integer, or the contents of a JSON string.
fn example_id(raw: &RawValue) -> Option<String> {
    let raw = raw.get();
    let id = if raw.starts_with('"') { serde_json::from_str::<String>(raw).ok()? } else { raw.to_string() };
    let digits = id.strip_prefix('-').unwrap_or(&id);
    let is_integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    (is_integer || (raw.starts_with('"') && !id.trim().is_empty())).then_some(id)
}

/// Whether a simplified-format token is an HTML tag (`<P>`, `</Td>`, `<Th_colspan="2">`), not text such as `<`.
fn is_html(token: &str) -> bool {
    let inner = token.strip_prefix('<').and_then(|t| t.strip_suffix('>'));
    inner.and_then(|t| t.trim_start_matches('/').chars().next()).is_some_and(|c| c.is_ascii_alphabetic())
}

/// The text tokens of `tokens` joined by single spaces (HTML tags and empty tokens dropped).
fn join(tokens: &[Tok]) -> String {
    let words: Vec<&str> = tokens.iter().filter(|(t, html)| !html && !t.is_empty()).map(|(t, _)| *t).collect();
    words.join(" ")
}

/// Cuts `text` to at most `max_chars` characters, at the last whitespace before the limit when there is one;
/// also says whether it cut.
fn truncate(text: String, max_chars: usize) -> (String, bool) {
    let Some((limit, _)) = text.char_indices().nth(max_chars) else {
        return (text, false);
    };
    let head = &text[..limit];
    let at_space = text[limit..].starts_with(char::is_whitespace);
    let end = match head.rfind(char::is_whitespace) {
        Some(space) if !at_space && space > 0 => space,
        _ => limit,
    };
    (text[..end].trim_end().to_string(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_prefers_whitespace_and_char_boundaries() {
        let t = |s: &str, n| truncate(s.to_string(), n);
        assert_eq!(t("Zürich ist schön", 100), ("Zürich ist schön".to_string(), false));
        assert_eq!(t("Zürich ist schön", 16), ("Zürich ist schön".to_string(), false));
        assert_eq!(t("Zürich ist schön", 13), ("Zürich ist".to_string(), true));
        // The limit falls just before a space: the whole word is kept.
        assert_eq!(t("Zürich ist schön", 10), ("Zürich ist".to_string(), true));
        // No whitespace before the limit: a hard cut, on a character boundary.
        assert_eq!(t("東京都千代田区", 3), ("東京都".to_string(), true));
        assert_eq!(t("abc", 0), (String::new(), true));
    }

    #[test]
    fn html_tokens_of_the_simplified_format() {
        for tag in ["<P>", "</P>", "<Table>", "</Td>", "<Th_colspan=\"2\">", "<H1>"] {
            assert!(is_html(tag), "{tag}");
        }
        for text in ["<", ">", "<>", "<=>", "</>", "a<b>", "<3"] {
            assert!(!is_html(text), "{text}");
        }
    }

    #[test]
    fn example_ids_kept_as_written() {
        let id = |s: &str| example_id(&serde_json::from_str::<Box<RawValue>>(s).unwrap());
        assert_eq!(id("18446744073709551617123").as_deref(), Some("18446744073709551617123"));
        assert_eq!(id("-6382713429587625036").as_deref(), Some("-6382713429587625036"));
        assert_eq!(id("\"0042\"").as_deref(), Some("0042"));
        for bad in ["1.5", "\"\"", "null", "true", "[1]", "1e5"] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }
}
