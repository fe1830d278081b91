//! The few Python `str` and `re` behaviours the reference scorers rely on. Rust's notions differ at the edges
//! (Python counts U+001C..U+001F as whitespace; `re`'s `\w` is letters and numbers by general category, while
//! `char::is_alphanumeric` also admits marks and symbols with the Alphabetic property, such as Ⓐ).

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII information separators.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` without arguments: runs of whitespace separate, empty pieces are dropped.
pub fn split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|piece| !piece.is_empty())
}

/// Python's `str.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Python's `str.rstrip()`.
pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `\w` of Python's `re` on a str pattern: `str.isalnum()` (every letter and number category) or `_`.
pub fn is_word(c: char) -> bool {
    c == '_'
        || matches!(
            get_general_category(c),
            G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::ModifierLetter
                | G::OtherLetter
                | G::DecimalNumber
                | G::LetterNumber
                | G::OtherNumber
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_and_word_characters() {
        assert_eq!(split(" a\u{1f}b\u{a0}\u{3000}c\t").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(strip("\u{1c} x \u{2003}"), "x");
        assert_eq!(rstrip(" x \n"), " x");
        assert!(!is_space('\u{200b}'));
        for c in ['a', 'É', 'ǅ', 'ʰ', '東', '٣', 'Ⅻ', '²', '_'] {
            assert!(is_word(c), "{c:?}");
        }
        for c in ['Ⓐ', '\u{301}', '\u{93e}', '-', '’', ' '] {
            assert!(!is_word(c), "{c:?}");
        }
    }
}
