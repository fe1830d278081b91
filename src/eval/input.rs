//! Reading predictions (deepsynth's JSONL, minimal `{"id", "prediction"}` lines, or SQuAD's one JSON object
//! id -> answer) and reference records, and joining them by id.

// `BadInput` is large, but a bad line is the rare path (and fatal here): no boxing, as in data::jsonl.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use super::Example;
use crate::data::error::{BadInput, Location};
use crate::data::{io, jsonl};

/// One predicted answer and where it came from.
#[derive(Debug)]
pub struct Prediction {
    pub id: String,
    pub text: String,
    /// Present on `instruct --batch` lines: they can be scored without a reference file.
    pub source: Option<String>,
    pub answers: Option<Vec<String>>,
    pub location: Location,
}

/// Predictions in file order. A file that is one JSON object without a `prediction` key is SQuAD's format;
/// anything else is read as JSONL, one object per line with at least `id` and `prediction`.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let bytes = io::read_all(path)?;
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) {
        if !map.contains_key("prediction") {
            return squad_predictions(path, map);
        }
    }
    let mut predictions = Vec::new();
    let mut lines = io::Lines::open(path)?;
    while let Some((number, line)) = lines.next_line()? {
        predictions.push(parse_line(path, number, line?)?);
    }
    Ok(predictions)
}

fn squad_predictions(path: &Path, map: Map<String, Value>) -> Result<Vec<Prediction>> {
    map.into_iter()
        .map(|(id, value)| {
            let location = Location::file(path).field(id.as_str());
            match value {
                Value::String(text) => Ok(Prediction { id, text, source: None, answers: None, location }),
                other => Err(wrong_type(location, "a string (SQuAD predictions map id -> answer)", &other).into()),
            }
        })
        .collect()
}

fn parse_line(path: &Path, number: u64, line: &str) -> Result<Prediction, BadInput> {
    let at = Location::line(path, number);
    if line.trim().is_empty() {
        return Err(BadInput::new(at, "blank line", "blank line (expected one JSON object per line)"));
    }
    let value: Value = serde_json::from_str(line).map_err(|e| BadInput::json(path, number, &e))?;
    let Value::Object(mut map) = value else {
        return Err(wrong_type(at, "a JSON object with `id` and `prediction`", &value));
    };
    let mut string = |name: &str, required: bool| match map.remove(name) {
        Some(Value::String(s)) => Ok(Some(s)),
        None if !required => Ok(None),
        None => Err(BadInput::new(at.clone().field(name), "missing field", "missing field")),
        Some(other) => Err(wrong_type(at.clone().field(name), "a string", &other)),
    };
    let id = string("id", true)?.expect("required");
    let text = string("prediction", true)?.expect("required");
    let source = string("source", false)?;
    let answers = match map.remove("answers") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    other => Err(wrong_type(at.clone().field(format!("answers[{i}]")), "a string", &other)),
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(other) => return Err(wrong_type(at.field("answers"), "an array of strings", &other)),
    };
    Ok(Prediction { id, text, source, answers, location: at })
}

fn wrong_type(location: Location, expected: &str, found: &Value) -> BadInput {
    let found = crate::data::jsonl::type_name(found);
    BadInput::new(location, "wrong type", format!("expected {expected}, found {found}"))
}

/// Every reference in file order, each with the prediction of the same id (`None`: missing), and the prediction
/// ids that no reference has.
#[derive(Debug, Default)]
pub struct Joined {
    pub pairs: Vec<(Example, bool)>,
    pub unmatched: Vec<String>,
}

/// Pairs each reference record with the prediction of the same id; a missing prediction is paired as "" and
/// marked `false`.
pub fn join(predictions: Vec<Prediction>, references: &Path) -> Result<Joined> {
    let mut by_id: HashMap<String, Prediction> = HashMap::with_capacity(predictions.len());
    let mut order = Vec::with_capacity(predictions.len());
    for prediction in predictions {
        if let Some(first) = by_id.get(&prediction.id) {
            anyhow::bail!(
                "{}: duplicate prediction id {:?} (first at {})",
                prediction.location,
                first.id,
                first.location
            );
        }
        order.push(prediction.id.clone());
        by_id.insert(prediction.id.clone(), prediction);
    }
    let mut joined = Joined::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    jsonl::for_each_record(references, |line, record| {
        let record = record?;
        if let Some(first) = seen.insert(record.id.clone(), line) {
            let at = Location::line(references, line);
            anyhow::bail!("{at}: duplicate reference id {:?} (first at line {first})", record.id);
        }
        let prediction = by_id.remove(&record.id);
        let found = prediction.is_some();
        let example = Example {
            id: record.id,
            source: record.source,
            golds: record.answers,
            prediction: prediction.map(|p| p.text).unwrap_or_default(),
        };
        joined.pairs.push((example, found));
        Ok(())
    })?;
    joined.unmatched = order.into_iter().filter(|id| by_id.contains_key(id)).collect();
    Ok(joined)
}

/// Examples from predictions that carry their golds (`instruct --batch` output), for scoring without references.
pub fn self_contained(predictions: Vec<Prediction>) -> Result<Vec<Example>> {
    let mut seen: HashMap<String, Location> = HashMap::new();
    predictions
        .into_iter()
        .map(|p| {
            if let Some(first) = seen.insert(p.id.clone(), p.location.clone()) {
                anyhow::bail!("{}: duplicate prediction id {:?} (first at {first})", p.location, p.id);
            }
            let golds = p.answers.with_context(|| {
                format!(
                    "{}: field `answers`: missing (without --references each prediction needs its golds)",
                    p.location
                )
            })?;
            Ok(Example { id: p.id, source: p.source.unwrap_or_default(), golds, prediction: p.text })
        })
        .collect()
}
