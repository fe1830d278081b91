//! MS MARCO QA: v2.1 (one columnar JSON object, as pandas writes it) and v1.1 (JSON lines).
//!
//! v2.1 is `{column: {row key: value}}` and can be ~1 GB gzipped, with its columns and rows in any order.
//! It is read in two streaming passes so that memory holds only the small columns: pass 1 keeps `query`,
//! `query_id`, `answers` and `wellFormedAnswers` by row key and skips `passages`; pass 2 streams `passages`
//! and writes each record as soon as its passages are read, so the output follows the passages column.
//!
//! `text` is the passages joined by a blank line; golds are `answers` without "No Answer Present.", then
//! `wellFormedAnswers` (a list, or the string "[]" for none).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::Result;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::{jsonscan, ConvertOptions, Sink};
use crate::data::error::{BadInput, Location};
use crate::data::io;
use crate::data::record::Record;

const SOURCE: &str = "marco";
/// MS MARCO's answer for a question its passages do not answer: not a gold.
const NO_ANSWER: &str = "No Answer Present.";
const EXPECTED: &str =
    "expected MS MARCO v2.1 JSON {\"passages\": {row: [...]}, \"query\": {row: \"...\"}, ...} or v1.1 JSON lines";

#[derive(Deserialize)]
struct Passage<'a> {
    #[serde(borrow)]
    passage_text: Cow<'a, str>,
}

/// One v1.1 line (`query_type` and the passages' `url`/`is_selected` are not needed).
#[derive(Deserialize)]
struct LineRecord<'a> {
    #[serde(borrow)]
    answers: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    passages: Vec<Passage<'a>>,
    #[serde(borrow)]
    query: Cow<'a, str>,
    query_id: u64,
}

pub fn convert(opts: &ConvertOptions, sink: &mut Sink) -> Result<()> {
    for path in &opts.inputs {
        if sink.is_full() {
            break;
        }
        match layout(path)? {
            Layout::Columnar => convert_columnar(path, sink)?,
            Layout::Lines => convert_lines(path, sink)?,
        }
    }
    Ok(())
}

/// The record for one question, or the field that makes it unusable and why.
fn record<'a>(
    id: u64,
    query: &str,
    passages: &[Passage],
    golds: impl IntoIterator<Item = Cow<'a, str>>,
) -> Result<Record, (&'static str, &'static str)> {
    if query.trim().is_empty() {
        return Err(("query", "empty query"));
    }
    if passages.is_empty() {
        return Err(("passages", "no passages"));
    }
    let text = passages.iter().map(|p| p.passage_text.as_ref()).collect::<Vec<_>>().join("\n\n");
    let golds = golds.into_iter().filter(|g| g.trim() != NO_ANSWER).map(Cow::into_owned);
    Ok(Record::new(id.to_string(), SOURCE, text, query, golds))
}

// ---- Which layout a file has ----

#[derive(Debug, Clone, Copy)]
enum Layout {
    /// v2.1: one object of columns.
    Columnar,
    /// v1.1: one record per line.
    Lines,
}

/// Both layouts start with `{`; in v2.1 the first key's value is an object of rows, in a v1.1 record it
/// never is. Parsing stops at that value's first byte, so a broken v1.1 first line is still read as v1.1.
fn layout(path: &Path) -> Result<Layout> {
    let found = Cell::new(None);
    let result = serde_json::Deserializer::from_reader(io::open(path)?).deserialize_map(FirstValue(&found));
    match (found.get(), result) {
        (Some(layout), _) => Ok(layout),
        // `{}`: no column to find; the columnar reader says what is missing.
        (None, Ok(())) => Ok(Layout::Columnar),
        (None, Err(e)) => Err(with_expected(BadInput::json(path, 1, &e)).into()),
    }
}

/// Reads the top-level object up to its first value's first byte, noting the layout in the cell; it
/// always ends with an error once the layout is known, so that nothing more is read.
struct FirstValue<'c>(&'c Cell<Option<Layout>>);

impl<'de> Visitor<'de> for FirstValue<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if map.next_key::<IgnoredAny>()?.is_none() {
            return Ok(());
        }
        // Anything but an object (a list, a string, a number, even broken JSON) means a v1.1 line.
        self.0.set(Some(Layout::Lines));
        map.next_value_seed(ObjectProbe(self.0))
    }
}

struct ObjectProbe<'c>(&'c Cell<Option<Layout>>);

impl<'de> DeserializeSeed<'de> for ObjectProbe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectProbe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a column object")
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.0.set(Some(Layout::Columnar));
        Err(de::Error::custom(STOP))
    }
}

fn with_expected(mut bad: BadInput) -> BadInput {
    bad.message.push_str(&format!(" ({EXPECTED})"));
    bad
}

// ---- v1.1: JSON lines ----

fn convert_lines(path: &Path, sink: &mut Sink) -> Result<()> {
    let parse = |n, line: &str| {
        let rec: LineRecord = serde_json::from_str(line).map_err(|e| BadInput::json(path, n, &e))?;
        record(rec.query_id, &rec.query, &rec.passages, rec.answers)
            .map_err(|(field, kind)| BadInput::new(Location::line(path, n).field(field), kind, kind).into())
    };
    sink.each_line(path, parse, Sink::emit)
}

// ---- v2.1: columns ----

/// The columns read in pass 1, each a field of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Query,
    QueryId,
    Answers,
    WellFormedAnswers,
}

impl Field {
    const ALL: [Field; 4] = [Field::Query, Field::QueryId, Field::Answers, Field::WellFormedAnswers];

    fn name(self) -> &'static str {
        match self {
            Field::Query => "query",
            Field::QueryId => "query_id",
            Field::Answers => "answers",
            Field::WellFormedAnswers => "wellFormedAnswers",
        }
    }
}

const PASSAGES: &str = "passages";

/// A row's small columns. A value of the wrong type is kept as the row's error, reported (or skipped) in
/// pass 2 when the row's passages come, so that one bad row does not stop the file.
#[derive(Default)]
struct Row {
    query: Option<Box<str>>,
    id: Option<u64>,
    answers: Option<Vec<String>>,
    well_formed: Option<Vec<String>>,
    bad: Option<Box<BadInput>>,
}

impl Row {
    fn has(&self, field: Field) -> bool {
        match field {
            Field::Query => self.query.is_some(),
            Field::QueryId => self.id.is_some(),
            Field::Answers => self.answers.is_some(),
            Field::WellFormedAnswers => self.well_formed.is_some(),
        }
    }

    fn set(&mut self, field: Field, raw: &[u8]) -> serde_json::Result<()> {
        match field {
            Field::Query => self.query = Some(serde_json::from_slice::<String>(raw)?.into()),
            Field::QueryId => self.id = Some(serde_json::from_slice(raw)?),
            Field::Answers => self.answers = Some(serde_json::from_slice(raw)?),
            Field::WellFormedAnswers => {
                self.well_formed = Some(match serde_json::from_slice::<Vec<String>>(raw) {
                    Ok(list) => list,
                    // pandas wrote most rows' empty list as a string.
                    Err(_) if serde_json::from_slice::<&str>(raw).is_ok_and(|s| s == "[]") => Vec::new(),
                    Err(_) => {
                        let found = String::from_utf8_lossy(raw);
                        return Err(de::Error::custom(format!("expected a list of strings or \"[]\", found {found}")));
                    }
                });
            }
        }
        Ok(())
    }
}

/// A value of the wrong type inside a row, placed by row key and column (the parser's position is only
/// relative to the value).
fn bad_value(path: &Path, key: &str, field: &str, err: &serde_json::Error) -> BadInput {
    BadInput { location: row_location(path, key, field), ..BadInput::json(path, 1, err) }
}

fn row_location(path: &Path, key: &str, field: &str) -> Location {
    Location::file(path).within(format!("row {key:?}")).field(field)
}

/// What pass 1 learns: the small columns by row key, and which optional columns the file has
/// (the eval file has neither `answers` nor `wellFormedAnswers`).
#[derive(Default)]
struct Columns {
    rows: HashMap<Box<str>, Row>,
    present: Vec<Field>,
    has_passages: bool,
}

fn convert_columnar(path: &Path, sink: &mut Sink) -> Result<()> {
    let columns = read_columns(path)?;
    for required in [Some(Field::Query), Some(Field::QueryId), None] {
        let found = match required {
            Some(field) => columns.present.contains(&field),
            None => columns.has_passages,
        };
        if !found {
            let name = required.map_or(PASSAGES, Field::name);
            let bad = BadInput::new(Location::file(path), "missing column", format!("no `{name}` column"));
            return Err(with_expected(bad).into());
        }
    }
    stream_passages(path, columns, sink)
}

/// Pass 1: the small columns, parsed; `passages` only scanned. A syntax error in the file's structure is fatal
/// whatever `--on-error` says: no later row can be found after it.
fn read_columns(path: &Path) -> Result<Columns> {
    let mut columns = Columns::default();
    let wanted = |name: &str| name == PASSAGES || Field::ALL.iter().any(|f| f.name() == name);
    jsonscan::columns(io::open(path)?, path, wanted, |name, key, raw| {
        if name == PASSAGES {
            // Each column is seen once, so its first row is where its presence is learnt.
            columns.has_passages = true;
            return Ok(ControlFlow::Continue(()));
        }
        let field = Field::ALL.into_iter().find(|f| f.name() == name).expect("wanted column");
        if !columns.present.contains(&field) {
            columns.present.push(field);
        }
        let row = columns.rows.entry(Box::from(key)).or_default();
        if let Err(e) = row.set(field, raw) {
            // The first bad field of a row is the one reported.
            row.bad.get_or_insert_with(|| Box::new(bad_value(path, key, field.name(), &e)));
        }
        Ok(ControlFlow::Continue(()))
    })
    .map_err(|e| match e.downcast::<BadInput>() {
        Ok(bad) => with_expected(bad).into(),
        Err(e) => e,
    })?;
    Ok(columns)
}

/// Pass 2: streams the passages column and writes each row's record as soon as its passages are read.
fn stream_passages(path: &Path, mut columns: Columns, sink: &mut Sink) -> Result<()> {
    jsonscan::columns(
        io::open(path)?,
        path,
        |name| name == PASSAGES,
        |_, key, raw| {
            emit_row(path, &mut columns, sink, key, raw)?;
            Ok(if sink.is_full() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        },
    )?;
    if sink.is_full() {
        return Ok(());
    }
    let mut left: Vec<(Box<str>, Row)> = columns.rows.into_iter().collect();
    // Row keys are numbers written as strings: sort them as numbers.
    left.sort_by(|(a, _), (b, _)| (a.len(), a).cmp(&(b.len(), b)));
    for (key, _) in left {
        let at = row_location(path, &key, PASSAGES);
        sink.reject(BadInput::new(at, "missing field", "row has no `passages`"))?;
    }
    Ok(())
}

fn emit_row(path: &Path, columns: &mut Columns, sink: &mut Sink, key: &str, raw: &[u8]) -> Result<()> {
    let mut row = columns.rows.remove(key).unwrap_or_default();
    if let Some(bad) = row.bad.take() {
        return sink.reject(*bad);
    }
    let missing = |field: Field| {
        let message = format!("row has passages but no `{}`", field.name());
        BadInput::new(row_location(path, key, field.name()), "missing field", message)
    };
    let (Some(query), Some(id)) = (row.query.as_deref(), row.id) else {
        return sink.reject(missing(if row.query.is_none() { Field::Query } else { Field::QueryId }));
    };
    if let Some(&field) = columns.present.iter().find(|&&f| !row.has(f)) {
        return sink.reject(missing(field));
    }
    let passages: Vec<Passage> = match serde_json::from_slice(raw) {
        Ok(passages) => passages,
        Err(e) => return sink.reject(bad_value(path, key, PASSAGES, &e)),
    };
    let golds = row.answers.into_iter().chain(row.well_formed).flatten().map(Cow::Owned);
    match record(id, query, &passages, golds) {
        Ok(record) => sink.emit(record)?,
        Err((field, kind)) => return sink.reject(BadInput::new(row_location(path, key, field), kind, kind)),
    }
    if !columns.present.contains(&Field::Answers) {
        sink.note("questions without gold answers (the file has no `answers` column, as in eval)");
    }
    Ok(())
}

/// The error a visitor returns to stop the parser early; callers know from their own state why.
const STOP: &str = "stopped reading";
