//! SQuAD v2 exact match and F1, as the official `evaluate-v2.0.py` computes them per question.

use std::collections::HashMap;

use super::text;

/// Lower-cases, removes ASCII punctuation (`string.punctuation`), replaces the words a/an/the by a space (`\b`
/// with Python's Unicode `\w`) and collapses whitespace, in the official script's order.
pub fn normalize_answer(s: &str) -> String {
    let no_punct: String = s.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    let mut no_articles = String::with_capacity(no_punct.len());
    let mut rest = no_punct.as_str();
    while let Some(first) = rest.chars().next() {
        let word = text::is_word(first);
        let end = rest.find(|c| text::is_word(c) != word).unwrap_or(rest.len());
        let run = &rest[..end];
        // A run of word characters is what `\b(a|an|the)\b` can match whole.
        no_articles.push_str(if word && matches!(run, "a" | "an" | "the") { " " } else { run });
        rest = &rest[end..];
    }
    text::split(&no_articles).collect::<Vec<_>>().join(" ")
}

/// 1.0 when the normalised prediction equals a normalised gold, else 0.0. Golds that normalise to nothing are
/// dropped; none left (an unanswerable question) means the only right answer is "".
pub fn exact_match(prediction: &str, golds: &[String]) -> f64 {
    scores(prediction, golds).0
}

/// The best token-overlap F1 (0..1) of the prediction against each gold, golds chosen as for `exact_match`.
pub fn f1(prediction: &str, golds: &[String]) -> f64 {
    scores(prediction, golds).1
}

/// Exact match and F1 together, normalising each text once.
pub(crate) fn scores(prediction: &str, golds: &[String]) -> (f64, f64) {
    let pred = normalize_answer(prediction);
    let mut normalized: Vec<String> = golds.iter().map(|g| normalize_answer(g)).filter(|g| !g.is_empty()).collect();
    if normalized.is_empty() {
        normalized.push(String::new());
    }
    let pred_tokens: Vec<&str> = text::split(&pred).collect();
    let (mut em, mut f1) = (0.0f64, 0.0f64);
    for gold in &normalized {
        em = em.max(if *gold == pred { 1.0 } else { 0.0 });
        f1 = f1.max(token_f1(&text::split(gold).collect::<Vec<_>>(), &pred_tokens));
    }
    (em, f1)
}

fn token_f1(gold: &[&str], pred: &[&str]) -> f64 {
    if gold.is_empty() || pred.is_empty() {
        // No answer on either side: right only when both say none.
        return if gold == pred { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for token in gold {
        *counts.entry(token).or_default() += 1;
    }
    let mut same = 0usize;
    for token in pred {
        if let Some(left) = counts.get_mut(token).filter(|n| **n > 0) {
            *left -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golds(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalisation_follows_the_official_order() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(normalize_answer("theatre, an\tapple"), "theatre apple");
        // Punctuation goes first, so "a.b" is one word; Ⓐ is no word character, so "an" after it is an article.
        assert_eq!(normalize_answer("a.b Ⓐan"), "ab ⓐ");
        assert_eq!(normalize_answer("“The”"), "“ ”");
    }

    #[test]
    fn golds_that_normalise_to_nothing_count_as_no_answer() {
        assert_eq!(exact_match("", &golds(&["The", "..."])), 1.0);
        assert_eq!(f1("", &golds(&[])), 1.0);
        assert_eq!(f1("x", &golds(&[])), 0.0);
        let f = f1("the cat sat", &golds(&["a cat", "cat sat down"]));
        assert!((f - 0.8).abs() < 1e-12, "{f}");
    }
}
