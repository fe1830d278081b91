//! The Porter stemmer as NLTK's `PorterStemmer` runs it in its default mode (`NLTK_EXTENSIONS`), which is what
//! `rouge-score` stems with. The rules, their order and NLTK's departures from the 1980 paper are kept as they are:
//! the stems must be NLTK's, not the paper's.

/// Irregular forms NLTK maps directly (its `pool`).
const IRREGULAR: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// The stem of `word` (lower-cased first), as `PorterStemmer().stem(word)`.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, stem)) = IRREGULAR.iter().find(|(form, _)| *form == lower) {
        return stem.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(w);
    }
    w.into_iter().collect()
}

type Word = Vec<char>;

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// A `y` is a consonant exactly when the letter before it is not; every other non-vowel is one.
fn consonant_flags(word: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(word.len());
    for (i, &c) in word.iter().enumerate() {
        let consonant = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(consonant);
    }
    flags
}

fn is_consonant(word: &[char], i: usize) -> bool {
    consonant_flags(&word[..=i])[i]
}

/// m in [C](VC)^m[V]: the number of vowel-consonant transitions.
fn measure(stem: &[char]) -> usize {
    consonant_flags(stem).windows(2).filter(|pair| !pair[0] && pair[1]).count()
}

fn contains_vowel(stem: &[char]) -> bool {
    consonant_flags(stem).iter().any(|c| !c)
}

fn ends_double_consonant(word: &[char]) -> bool {
    let n = word.len();
    n >= 2 && word[n - 1] == word[n - 2] && is_consonant(word, n - 1)
}

/// Consonant-vowel-consonant ending, the last not w, x or y; NLTK also accepts a two-letter vowel-consonant word.
fn ends_cvc(word: &[char]) -> bool {
    let n = word.len();
    (n >= 3
        && is_consonant(word, n - 3)
        && !is_consonant(word, n - 2)
        && is_consonant(word, n - 1)
        && !matches!(word[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(word, 0) && is_consonant(word, 1))
}

fn ends_with(word: &[char], suffix: &str) -> bool {
    let n = suffix.chars().count();
    word.len() >= n && word[word.len() - n..].iter().copied().eq(suffix.chars())
}

fn replace_suffix(word: &[char], suffix: &str, replacement: &str) -> Word {
    let mut out = word[..word.len() - suffix.chars().count()].to_vec();
    out.extend(replacement.chars());
    out
}

type Condition<'a> = &'a dyn Fn(&[char]) -> bool;

/// One rule: suffix, replacement, condition on the stem. The suffix `*d` stands for a double consonant.
type Rule<'a> = (&'a str, String, Option<Condition<'a>>);

/// The first rule whose suffix the word has decides: its replacement when the condition holds, else no change.
fn apply_rules(word: Word, rules: &[Rule]) -> Word {
    for (suffix, replacement, condition) in rules {
        let stem = if *suffix == "*d" && ends_double_consonant(&word) {
            word[..word.len() - 2].to_vec()
        } else if ends_with(&word, suffix) {
            replace_suffix(&word, suffix, "")
        } else {
            continue;
        };
        if condition.is_none_or(|holds| holds(&stem)) {
            let mut out = stem;
            out.extend(replacement.chars());
            return out;
        }
        return word;
    }
    word
}

fn rules<'a>(list: &[(&'a str, &str, Condition<'a>)]) -> Vec<Rule<'a>> {
    list.iter().map(|(s, r, c)| (*s, r.to_string(), Some(*c))).collect()
}

fn positive_measure(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn step1a(word: Word) -> Word {
    if ends_with(&word, "ies") && word.len() == 4 {
        return replace_suffix(&word, "ies", "ie");
    }
    let plain = |s: &'static str, r: &str| -> Rule<'static> { (s, r.to_string(), None) };
    apply_rules(word, &[plain("sses", "ss"), plain("ies", "i"), plain("ss", "ss"), plain("s", "")])
}

fn step1b(word: Word) -> Word {
    if ends_with(&word, "ied") {
        return replace_suffix(&word, "ied", if word.len() == 4 { "ie" } else { "i" });
    }
    if ends_with(&word, "eed") {
        let stem = replace_suffix(&word, "eed", "");
        return if measure(&stem) > 0 { replace_suffix(&word, "eed", "ee") } else { word };
    }
    let Some(stem) = ["ed", "ing"]
        .iter()
        .filter(|s| ends_with(&word, s))
        .map(|s| replace_suffix(&word, s, ""))
        .find(|stem| contains_vowel(stem))
    else {
        return word;
    };
    let last = *stem.last().expect("a stem with a vowel is not empty");
    let not_lsz = |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let cvc = |s: &[char]| measure(s) == 1 && ends_cvc(s);
    let list: [Rule; 5] = [
        ("at", "ate".into(), None),
        ("bl", "ble".into(), None),
        ("iz", "ize".into(), None),
        ("*d", last.to_string(), Some(&not_lsz as Condition)),
        ("", "e".into(), Some(&cvc as Condition)),
    ];
    apply_rules(stem, &list)
}

fn step1c(word: Word) -> Word {
    let condition: Condition = &|stem| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(word, &rules(&[("y", "i", condition)]))
}

fn step2(word: Word) -> Word {
    if ends_with(&word, "alli") && positive_measure(&replace_suffix(&word, "alli", "")) {
        return step2(replace_suffix(&word, "alli", "al"));
    }
    let m: Condition = &positive_measure;
    // NLTK tests "logi" on the word less "ogi", not on the stem.
    let without_ogi = word[..word.len().saturating_sub(3)].to_vec();
    let logi: Condition = &|_| positive_measure(&without_ogi);
    let list = rules(&[
        ("ational", "ate", m),
        ("tional", "tion", m),
        ("enci", "ence", m),
        ("anci", "ance", m),
        ("izer", "ize", m),
        ("bli", "ble", m),
        ("alli", "al", m),
        ("entli", "ent", m),
        ("eli", "e", m),
        ("ousli", "ous", m),
        ("ization", "ize", m),
        ("ation", "ate", m),
        ("ator", "ate", m),
        ("alism", "al", m),
        ("iveness", "ive", m),
        ("fulness", "ful", m),
        ("ousness", "ous", m),
        ("aliti", "al", m),
        ("iviti", "ive", m),
        ("biliti", "ble", m),
        ("fulli", "ful", m),
        ("logi", "log", logi),
    ]);
    apply_rules(word, &list)
}

fn step3(word: Word) -> Word {
    let m: Condition = &positive_measure;
    let list = rules(&[
        ("icate", "ic", m),
        ("ative", "", m),
        ("alize", "al", m),
        ("iciti", "ic", m),
        ("ical", "ic", m),
        ("ful", "", m),
        ("ness", "", m),
    ]);
    apply_rules(word, &list)
}

fn step4(word: Word) -> Word {
    let m: Condition = &|stem| measure(stem) > 1;
    let ion: Condition = &|stem| measure(stem) > 1 && matches!(stem.last(), Some('s' | 't'));
    let list = rules(&[
        ("al", "", m),
        ("ance", "", m),
        ("ence", "", m),
        ("er", "", m),
        ("ic", "", m),
        ("able", "", m),
        ("ible", "", m),
        ("ant", "", m),
        ("ement", "", m),
        ("ment", "", m),
        ("ent", "", m),
        ("ion", "", ion),
        ("ou", "", m),
        ("ism", "", m),
        ("ate", "", m),
        ("iti", "", m),
        ("ous", "", m),
        ("ive", "", m),
        ("ize", "", m),
    ]);
    apply_rules(word, &list)
}

fn step5a(word: Word) -> Word {
    if ends_with(&word, "e") {
        let stem = replace_suffix(&word, "e", "");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    word
}

fn step5b(word: Word) -> Word {
    // The condition is on the word less one letter, not on the stem.
    let long = measure(&word[..word.len().saturating_sub(1)]) > 1;
    let condition: Condition = &|_| long;
    apply_rules(word, &rules(&[("ll", "l", condition)]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_stems() {
        for (word, want) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("died", "die"),
            ("agreed", "agre"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("skies", "sky"),
            ("controll", "control"),
            ("by", "by"),
        ] {
            assert_eq!(super::stem(word), want, "{word}");
        }
    }
}
