//! `deepsynth data validate`: checks every line of a record file and reports what is wrong, by kind.
//!
//! A line that is not a record of the schema's shape (bad UTF-8 or JSON, not an object, unknown, missing or
//! mistyped field) is reported once, for its first fault. A record of the right shape is then checked for
//! empty fields, `answer` agreeing with `answers`, repeated or empty golds, length limits, and duplicates of
//! an earlier line (same id; same text, instruction and answer).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::error::{BadInput, Location};
use super::jsonl::{fingerprint, for_each_record};
use super::record::Record;

/// Longest field values accepted, in characters (Unicode scalar values).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub text: usize,
    pub instruction: usize,
    /// Applies to `answer` and to each of `answers`.
    pub answer: usize,
}

pub const DEFAULT_MAX_TEXT_CHARS: usize = 200_000;
pub const DEFAULT_MAX_INSTRUCTION_CHARS: usize = 4_000;
pub const DEFAULT_MAX_ANSWER_CHARS: usize = 20_000;

/// Problems shown in full in the report; the rest are only counted.
const SHOWN: usize = 10;

/// What `validate` found.
#[derive(Debug, Default)]
pub struct Report {
    pub path: PathBuf,
    pub lines: u64,
    /// Lines that hold a record with no problem.
    pub valid: u64,
    pub problems: BTreeMap<&'static str, u64>,
    /// The first few problems, with file:line and field.
    pub examples: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn problem_total(&self) -> u64 {
        self.problems.values().sum()
    }

    fn add(&mut self, problem: BadInput) {
        *self.problems.entry(problem.kind).or_default() += 1;
        if self.examples.len() < SHOWN {
            self.examples.push(problem.to_string());
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "valid: {} records", self.valid);
        }
        let (path, total) = (self.path.display(), self.problem_total());
        write!(f, "invalid: {path}: {total} problems; {} of {} lines valid", self.valid, self.lines)?;
        for (kind, n) in &self.problems {
            write!(f, "\n  {kind}: {n}")?;
        }
        write!(f, "\nfirst problems:")?;
        for example in &self.examples {
            write!(f, "\n  {example}")?;
        }
        if total > self.examples.len() as u64 {
            write!(f, "\n  ... and {} more", total - self.examples.len() as u64)?;
        }
        Ok(())
    }
}

/// Checks every line of `path`. An unreadable file is an error; problems in it are in the report.
pub fn validate(path: &Path, limits: Limits) -> Result<Report> {
    let mut report = Report { path: path.to_path_buf(), ..Default::default() };
    // Where each id and each (text, instruction, answer) was first seen, to name it in the duplicate's report.
    let mut ids: HashMap<u128, u64> = HashMap::new();
    let mut contents: HashMap<u128, u64> = HashMap::new();
    for_each_record(path, |line, record| {
        report.lines += 1;
        let record = match record {
            Ok(record) => record,
            Err(bad) => {
                report.add(bad);
                return Ok(());
            }
        };
        let at = |field: &str| Location::line(path, line).field(field);
        let mut problems = check_record(&record, limits, at);
        let id_seen = *ids.entry(fingerprint(&record.id)).or_insert(line);
        if id_seen != line {
            problems.push(BadInput::new(at("id"), "duplicate id", format!("id already used on line {id_seen}")));
        }
        let key = fingerprint(&(&record.text, &record.instruction, &record.answer));
        let content_seen = *contents.entry(key).or_insert(line);
        if content_seen != line {
            let message = format!("same text, instruction and answer as line {content_seen}");
            problems.push(BadInput::new(Location::line(path, line), "duplicate record", message));
        }
        if problems.is_empty() {
            report.valid += 1;
        }
        problems.into_iter().for_each(|p| report.add(p));
        Ok(())
    })?;
    Ok(report)
}

/// The problems of one well-shaped record on its own (duplicates need the whole file).
fn check_record(record: &Record, limits: Limits, at: impl Fn(&str) -> Location) -> Vec<BadInput> {
    let mut problems = Vec::new();
    let required =
        [("id", &record.id), ("source", &record.source), ("text", &record.text), ("instruction", &record.instruction)];
    for (field, value) in required {
        if value.trim().is_empty() {
            problems.push(BadInput::new(at(field), "empty field", "empty (or only whitespace)"));
        }
    }
    let expected = record.answers.first().map_or("", String::as_str);
    if record.answer != expected {
        let message = format!("is {:?} but the first of `answers` is {expected:?} (\"\" when none)", record.answer);
        problems.push(BadInput::new(at("answer"), "answer mismatch", message));
    }
    for (i, gold) in record.answers.iter().enumerate() {
        let field = format!("answers[{i}]");
        if gold.is_empty() {
            problems.push(BadInput::new(at(&field), "invalid answers", "empty gold answer"));
        } else if record.answers[..i].contains(gold) {
            problems.push(BadInput::new(at(&field), "invalid answers", "repeats an earlier gold answer"));
        }
    }
    let answers = record.answers.iter().enumerate().map(|(i, a)| (format!("answers[{i}]"), a, limits.answer));
    let lengths = [
        ("text".to_string(), &record.text, limits.text),
        ("instruction".to_string(), &record.instruction, limits.instruction),
        ("answer".to_string(), &record.answer, limits.answer),
    ];
    for (field, value, max) in lengths.into_iter().chain(answers) {
        let chars = value.chars().count();
        if chars > max {
            problems.push(BadInput::new(at(&field), "too long", format!("{chars} characters, limit {max}")));
        }
    }
    problems
}
