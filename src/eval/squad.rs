//! SQuAD v2.0's official exact match and F1 (evaluate-v2.0.py): answers normalised (lower case, ASCII punctuation
//! and the articles a/an/the removed, whitespace collapsed), scored against each gold, best gold kept.

use std::collections::HashMap;

/// The official `normalize_answer`.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    let words: Vec<&str> = no_punct.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect();
    words.join(" ")
}

fn tokens(s: &str) -> Vec<String> {
    normalize_answer(s).split_whitespace().map(String::from).collect()
}

fn golds_or_empty(golds: &[String]) -> Vec<&str> {
    if golds.is_empty() {
        vec![""]
    } else {
        golds.iter().map(String::as_str).collect()
    }
}

/// 1 when the prediction equals a gold after normalisation (no gold: the empty answer), else 0.
pub fn exact_match(prediction: &str, golds: &[String]) -> f64 {
    let p = normalize_answer(prediction);
    let hit = golds_or_empty(golds).iter().any(|g| normalize_answer(g) == p);
    if hit {
        1.0
    } else {
        0.0
    }
}

/// Token F1 against the best gold.
pub fn f1(prediction: &str, golds: &[String]) -> f64 {
    let pred = tokens(prediction);
    golds_or_empty(golds).iter().map(|g| f1_one(&pred, &tokens(g))).fold(0.0, f64::max)
}

fn f1_one(pred: &[String], gold: &[String]) -> f64 {
    if pred.is_empty() || gold.is_empty() {
        return if pred == gold { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in gold {
        *counts.entry(t).or_default() += 1;
    }
    let mut common = 0;
    for t in pred {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / pred.len() as f64;
    let recall = common as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golds(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn official_normalisation_and_scores() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(exact_match("the Eiffel Tower", &golds(&["Eiffel Tower", "Paris"])), 1.0);
        assert_eq!(exact_match("", &[]), 1.0);
        assert_eq!(exact_match("x", &[]), 0.0);
        // pred "big red dog", gold "red dog": p = 2/3, r = 1, F1 = 0.8.
        assert!((f1("big red dog", &golds(&["red dog", "cat"])) - 0.8).abs() < 1e-12);
    }
}
