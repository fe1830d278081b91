//! BLEU as `sacrebleu` computes it with its defaults: the `13a` tokenizer (mteval-v13a), case kept, n-grams up to
//! 4, `exp` smoothing, the reference length closest to the hypothesis (the shorter of equals), n-gram matches
//! clipped by the most any one reference has.

use std::collections::HashMap;

use super::text;

pub const MAX_ORDER: usize = 4;

/// Sufficient statistics of one segment, or of a corpus (their sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub hyp_len: usize,
    pub ref_len: usize,
    pub correct: [usize; MAX_ORDER],
    pub total: [usize; MAX_ORDER],
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
    }
}

/// sacrebleu's `Tokenizer13a` on a segment (after its `rstrip`), tokens joined by single spaces.
pub fn tokenize_13a(segment: &str) -> String {
    let mut line = text::rstrip(segment).replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut spaced = String::with_capacity(line.len() * 2 + 2);
    spaced.push(' ');
    for c in line.chars() {
        // Symbols and ASCII punctuation except ' , - . stand alone.
        if matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/') {
            spaced.extend([' ', c, ' ']);
        } else {
            spaced.push(c);
        }
    }
    spaced.push(' ');
    let period_or_comma = |c: char| c == '.' || c == ',';
    let digit = |c: char| c.is_ascii_digit();
    let not_digit = |c: char| !c.is_ascii_digit();
    // The three later regexes of sacrebleu's TokenizerRegexp, each one pass over the previous one's output.
    let chars: Vec<char> = spaced.chars().collect();
    let chars = substitute_pairs(&chars, not_digit, period_or_comma, |a, b| vec![a, ' ', b, ' ']);
    let chars = substitute_pairs(&chars, period_or_comma, not_digit, |a, b| vec![' ', a, ' ', b]);
    let chars = substitute_pairs(&chars, digit, |c| c == '-', |a, b| vec![a, ' ', b, ' ']);
    let joined: String = chars.into_iter().collect();
    text::split(&joined).collect::<Vec<_>>().join(" ")
}

/// `re.sub` of a two-character pattern: matches found left to right, never overlapping, each replaced.
fn substitute_pairs(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    replace: impl Fn(char, char) -> Vec<char>,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 4);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && first(chars[i]) && second(chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn ngrams<'a>(tokens: &'a [&'a str]) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// One segment's statistics against its references (no reference means the reference "").
pub fn segment_stats(hypothesis: &str, references: &[String]) -> Stats {
    let none = [String::new()];
    let references = if references.is_empty() { &none[..] } else { references };
    let hyp_text = tokenize_13a(hypothesis);
    let hyp: Vec<&str> = hyp_text.split(' ').filter(|t| !t.is_empty()).collect();
    let ref_texts: Vec<String> = references.iter().map(|r| tokenize_13a(r)).collect();
    let refs: Vec<Vec<&str>> = ref_texts.iter().map(|r| r.split(' ').filter(|t| !t.is_empty()).collect()).collect();
    let mut ref_counts: HashMap<&[&str], usize> = HashMap::new();
    for tokens in &refs {
        for (gram, count) in ngrams(tokens) {
            let best = ref_counts.entry(gram).or_insert(0);
            *best = (*best).max(count);
        }
    }
    let mut ref_len = refs[0].len();
    for tokens in &refs[1..] {
        let (len, diff, best_diff) = (tokens.len(), tokens.len().abs_diff(hyp.len()), ref_len.abs_diff(hyp.len()));
        if diff < best_diff || (diff == best_diff && len < ref_len) {
            ref_len = len;
        }
    }
    let mut stats = Stats { hyp_len: hyp.len(), ref_len, ..Stats::default() };
    for (gram, count) in ngrams(&hyp) {
        stats.total[gram.len() - 1] += count;
        stats.correct[gram.len() - 1] += count.min(ref_counts.get(gram).copied().unwrap_or(0));
    }
    stats
}

/// BLEU (0..100) from statistics, `exp` smoothing. `effective_order` (sacrebleu's sentence default) averages only
/// the orders the hypothesis is long enough to have.
pub fn score(stats: &Stats, effective_order: bool) -> f64 {
    let Stats { hyp_len, ref_len, correct, total } = *stats;
    let mut bp = 1.0;
    if hyp_len < ref_len {
        bp = if hyp_len > 0 { (1.0 - ref_len as f64 / hyp_len as f64).exp() } else { 0.0 };
    }
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    let mut smooth = 1.0f64;
    let mut order = MAX_ORDER;
    for n in 0..MAX_ORDER {
        if total[n] == 0 {
            break;
        }
        if effective_order {
            order = n + 1;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    // sacrebleu floors log(0) at -9999999999 rather than -inf.
    let log = |p: f64| if p == 0.0 { -9999999999.0 } else { p.ln() };
    let sum = precisions[..order].iter().fold(0.0, |acc, &p| acc + log(p));
    bp * (sum / order as f64).exp()
}

/// `sacrebleu.corpus_bleu` over (hypothesis, references) pairs.
pub fn corpus_bleu<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [String])>) -> f64 {
    let mut stats = Stats::default();
    for (hypothesis, references) in pairs {
        stats += segment_stats(hypothesis, references);
    }
    score(&stats, false)
}

/// `sacrebleu.sentence_bleu` (effective order on).
pub fn sentence_bleu(hypothesis: &str, references: &[String]) -> f64 {
    score(&segment_stats(hypothesis, references), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a() {
        assert_eq!(tokenize_13a("Hello, world. It's 1,250.5 (approx)!"), "Hello , world . It's 1,250.5 ( approx ) !");
        assert_eq!(tokenize_13a("AT&amp;T 1990-2000 .5 x..y\n"), "AT & T 1990 - 2000 . 5 x . . y");
    }

    #[test]
    fn perfect_and_empty() {
        let refs = vec!["the cat sat on the mat".to_string()];
        assert!((sentence_bleu("the cat sat on the mat", &refs) - 100.0).abs() < 1e-9);
        assert_eq!(sentence_bleu("", &refs), 0.0);
    }
}
