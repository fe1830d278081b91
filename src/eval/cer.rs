//! Character error rate as `jiwer.cer` computes it: both texts stripped of surrounding whitespace, Levenshtein
//! distance over Unicode code points, divided by the reference length (summed over a corpus). An empty reference
//! gives the number of insertions, as jiwer does. Questions without a gold have no CER.

use super::text;

/// Edit distance and reference length of one example against its closest gold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub edits: usize,
    pub ref_len: usize,
}

impl Counts {
    pub fn rate(&self) -> f64 {
        if self.ref_len == 0 {
            self.edits as f64
        } else {
            self.edits as f64 / self.ref_len as f64
        }
    }
}

/// The counts against the gold with the lowest error rate (the first of equals); `None` without golds.
pub fn best_gold(prediction: &str, golds: &[String]) -> Option<Counts> {
    let hyp: Vec<char> = text::strip(prediction).chars().collect();
    let score = |gold: &str| {
        let reference: Vec<char> = text::strip(gold).chars().collect();
        Counts { edits: levenshtein(&reference, &hyp), ref_len: reference.len() }
    };
    let mut best = score(golds.first()?);
    for gold in &golds[1..] {
        let counts = score(gold);
        if counts.rate() < best.rate() {
            best = counts;
        }
    }
    Some(best)
}

/// Insertions, deletions and substitutions that turn `a` into `b`, at unit cost.
pub fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0usize; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(x != y);
            row[j + 1] = substitute.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_rates() {
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(levenshtein(&chars("kitten"), &chars("sitting")), 3);
        assert_eq!(levenshtein(&chars(""), &chars("abc")), 3);
        let golds = vec!["Zoë".to_string(), " Zoe ".to_string()];
        assert_eq!(best_gold(" Zoe\n", &golds), Some(Counts { edits: 0, ref_len: 3 }));
        assert_eq!(best_gold("ab", &["".to_string()]).map(|c| c.rate()), Some(2.0));
        assert_eq!(best_gold("ab", &[]), None);
    }
}
