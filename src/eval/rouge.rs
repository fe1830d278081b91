//! ROUGE-L as the `rouge-score` package computes it: `RougeScorer(["rougeL"], use_stemmer)` with its default
//! tokenizer, several golds through `score_multi` (the gold with the best F-measure).

use super::porter;

/// Precision, recall and F-measure of the longest common subsequence of tokens, each 0..1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// rouge-score's tokenizer: lower-case, every run of characters outside [a-z0-9] separates (so non-ASCII letters
/// do too), and with `stem` each token longer than 3 characters goes through the Porter stemmer.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| if stem && t.len() > 3 { porter::stem(t) } else { t.to_string() })
        .collect()
}

/// ROUGE-L of `prediction` against one `target` (no tokens on either side: all zero).
pub fn rouge_l(target: &str, prediction: &str, stem: bool) -> Score {
    score_tokens(&tokenize(target, stem), &tokenize(prediction, stem))
}

/// The score against the gold with the highest F-measure (the first of equals); no gold means the gold "".
pub fn rouge_l_multi(golds: &[String], prediction: &str, stem: bool) -> Score {
    let pred = tokenize(prediction, stem);
    let mut best: Option<Score> = None;
    for gold in golds {
        let score = score_tokens(&tokenize(gold, stem), &pred);
        if best.is_none_or(|b| score.fmeasure > b.fmeasure) {
            best = Some(score);
        }
    }
    best.unwrap_or_default()
}

fn score_tokens(target: &[String], prediction: &[String]) -> Score {
    if target.is_empty() || prediction.is_empty() {
        return Score::default();
    }
    let lcs = lcs_len(target, prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / target.len() as f64;
    let fmeasure = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    Score { precision, recall, fmeasure }
}

/// Length of the longest common subsequence, by the usual table kept one row at a time.
fn lcs_len(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(row[j]) };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_and_lcs() {
        assert_eq!(tokenize("Zoë's 2 CATS—running!", false), ["zo", "s", "2", "cats", "running"]);
        assert_eq!(tokenize("Zoë's 2 CATS—running!", true), ["zo", "s", "2", "cat", "run"]);
        let s = rouge_l("the cat sat on the mat", "the cat on a mat", false);
        assert_eq!((s.precision, s.recall), (4.0 / 5.0, 4.0 / 6.0));
        assert_eq!(rouge_l("東京", "東京", false), Score::default());
    }
}
