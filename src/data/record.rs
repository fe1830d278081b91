//! The one dataset record every converter writes and every later stage reads (DESIGN.md section 4).

use serde::{Deserialize, Serialize};

/// One question about one document, with its gold answers.
///
/// `answer` is the first gold answer or `""` when the question has none (unanswerable);
/// `answers` holds every distinct gold in source order (empty when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    pub source: String,
    pub text: String,
    pub instruction: String,
    pub answer: String,
    pub answers: Vec<String>,
}

impl Record {
    /// Builds a record from golds in source order: duplicates and empty strings are dropped, order kept.
    pub fn new(
        id: impl Into<String>,
        source: &str,
        text: impl Into<String>,
        instruction: impl Into<String>,
        golds: impl IntoIterator<Item = String>,
    ) -> Self {
        let answers = distinct_golds(golds);
        Record {
            id: id.into(),
            source: source.to_string(),
            text: text.into(),
            instruction: instruction.into(),
            answer: answers.first().cloned().unwrap_or_default(),
            answers,
        }
    }
}

/// Golds in source order with empty strings and duplicates dropped.
pub fn distinct_golds(golds: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut answers: Vec<String> = Vec::new();
    for g in golds {
        if !g.is_empty() && !answers.contains(&g) {
            answers.push(g);
        }
    }
    answers
}

/// A record whose `text` is already JSON-encoded: a document shared by many questions (a SQuAD paragraph) is
/// escaped once, not once per question. Serialises exactly as the `Record` with that text.
#[derive(Serialize)]
pub struct EncodedTextRecord<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub text: &'a serde_json::value::RawValue,
    pub instruction: &'a str,
    pub answer: &'a str,
    pub answers: &'a [String],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golds_are_deduplicated_in_order() {
        let r = Record::new("1", "squad", "t", "q", ["b", "a", "b", "", "a"].map(String::from));
        assert_eq!(r.answers, vec!["b", "a"]);
        assert_eq!(r.answer, "b");
        let text = serde_json::value::to_raw_value("t\"ü").unwrap();
        let full = Record::new("1", "squad", "t\"ü", "q", r.answers.clone());
        let view = EncodedTextRecord {
            id: "1",
            source: "squad",
            text: &text,
            instruction: "q",
            answer: &full.answer,
            answers: &full.answers,
        };
        assert_eq!(serde_json::to_string(&view).unwrap(), serde_json::to_string(&full).unwrap());
        let none = Record::new("2", "squad", "t", "q", Vec::new());
        assert_eq!(none.answer, "");
        assert!(none.answers.is_empty());
    }
}
