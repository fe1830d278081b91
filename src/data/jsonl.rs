//! Reading deepsynth JSONL record files (shared by `data mix`, `split` and `validate`), and fingerprints
//! for finding duplicate records without keeping their text.

// `BadInput` is large, but a bad line is the rare path and `validate` needs its kind: no boxing.
#![allow(clippy::result_large_err)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value};

use super::error::{BadInput, Location};
use super::io;
use super::record::Record;

/// The record's fields, in schema order (DESIGN.md section 4).
const FIELDS: [&str; 6] = ["id", "source", "text", "instruction", "answer", "answers"];

/// Calls `f` with each line's number and its record, or why the line holds none (not UTF-8, not JSON,
/// not the record's shape). `f` decides whether that is fatal. Gzip input is detected by content.
pub fn for_each_record(path: &Path, mut f: impl FnMut(u64, Result<Record, BadInput>) -> Result<()>) -> Result<()> {
    let mut lines = io::Lines::open(path)?;
    while let Some((number, line)) = lines.next_line()? {
        f(number, line.and_then(|text| parse_record(path, number, text)))?;
    }
    Ok(())
}

/// Every record of a file; the first bad line is an error naming file, line and field.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for_each_record(path, |_, record| {
        records.push(record?);
        Ok(())
    })?;
    Ok(records)
}

/// Parses one line as a record: exactly the schema's fields with their types. The error names the field,
/// which serde's derived parser would not do for a wrong type.
pub fn parse_record(path: &Path, line: u64, text: &str) -> Result<Record, BadInput> {
    let at = || Location::line(path, line);
    if text.trim().is_empty() {
        return Err(BadInput::new(at(), "blank line", "blank line (expected one JSON record per line)"));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| BadInput::json(path, line, &e))?;
    let Value::Object(mut map) = value else {
        let found = type_name(&value);
        return Err(BadInput::new(at(), "not an object", format!("expected a JSON object (a record), found {found}")));
    };
    if let Some(key) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let message = format!("unknown field (a record has exactly: {})", FIELDS.join(", "));
        return Err(BadInput::new(at().field(key.as_str()), "unknown field", message));
    }
    let mut string = |name: &str| match take(&mut map, path, line, name)? {
        Value::String(s) => Ok(s),
        other => Err(wrong_type(at().field(name), "a string", &other)),
    };
    let (id, source, text, instruction, answer) =
        (string("id")?, string("source")?, string("text")?, string("instruction")?, string("answer")?);
    let items = match take(&mut map, path, line, "answers")? {
        Value::Array(items) => items,
        other => return Err(wrong_type(at().field("answers"), "an array of strings", &other)),
    };
    let answers = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s),
            other => Err(wrong_type(at().field(format!("answers[{i}]")), "a string", &other)),
        })
        .collect::<Result<_, _>>()?;
    Ok(Record { id, source, text, instruction, answer, answers })
}

fn take(map: &mut Map<String, Value>, path: &Path, line: u64, name: &str) -> Result<Value, BadInput> {
    map.remove(name)
        .ok_or_else(|| BadInput::new(Location::line(path, line).field(name), "missing field", "missing field"))
}

fn wrong_type(location: Location, expected: &str, found: &Value) -> BadInput {
    BadInput::new(location, "wrong type", format!("expected {expected}, found {}", type_name(found)))
}

/// How an error message names a JSON value's type ("a string", "an array", ...).
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A 128-bit hash of `value`, so that duplicate checks over large files keep 16 bytes per record; two
/// independently salted SipHash runs make an accidental collision practically impossible.
pub fn fingerprint<T: Hash + ?Sized>(value: &T) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        value.hash(&mut h);
        h.finish() as u128
    };
    half(0) << 64 | half(1)
}
