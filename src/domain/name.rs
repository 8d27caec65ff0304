//! [`UserName`]: a validated display name, and [`NameKey`], the form names are compared in.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::error::{DomainError, ErrorCode};

/// Longest name, in Unicode scalar values.
pub const MAX_NAME_CHARS: usize = 32;

/// The name the server speaks as; nobody else may take it, in any case or width.
pub const SERVER_NAME: &str = "Server";

/// A person's display name: trimmed, 1–32 characters, only letters (any script), digits,
/// spaces and `_ - .`, never "Server". Built only by [`UserName::parse`], so a `UserName`
/// can never carry markup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(String);

/// The comparison form of a name: NFKC-normalised, then lowercased. Two names with the same
/// key are the same name ("Ann", "ANN" and fullwidth "Ａｎｎ" collide).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(String);

impl UserName {
    /// Validate `raw` (surrounding whitespace is trimmed first).
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let name = raw.trim();
        let length = name.chars().take(MAX_NAME_CHARS + 1).count();
        if length == 0 || length > MAX_NAME_CHARS {
            return Err(DomainError::new(
                ErrorCode::InvalidName,
                format!("a name must have 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if !name.chars().all(is_name_char) {
            return Err(DomainError::new(
                ErrorCode::InvalidName,
                "a name may contain only letters, digits, spaces and _ - .",
            ));
        }
        if NameKey::of(name) == NameKey::of(SERVER_NAME) {
            return Err(DomainError::new(
                ErrorCode::NameReserved,
                format!("the name {SERVER_NAME} is reserved"),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form this name is compared in for uniqueness.
    pub fn key(&self) -> NameKey {
        NameKey::of(&self.0)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NameKey {
    fn of(name: &str) -> Self {
        // Normalise again after lowercasing: lowercasing can produce sequences that NFKC
        // composes differently, and the key must be stable under both steps.
        let lowered = name.nfkc().collect::<String>().to_lowercase();
        Self(lowered.nfkc().collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Letters of any script (with their combining marks), digits, space and `_ - .`.
fn is_name_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || matches!(c, ' ' | '_' | '-' | '.') || is_mark(c)
}

/// Combining marks that scripts such as Devanagari or Thai need inside words. `is_alphabetic`
/// covers most of them; this adds the common combining blocks it leaves out.
fn is_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}' // combining diacritical marks
        | '\u{0483}'..='\u{0489}'
        | '\u{0591}'..='\u{05BD}'
        | '\u{0610}'..='\u{061A}'
        | '\u{064B}'..='\u{065F}'
        | '\u{0900}'..='\u{0903}'
        | '\u{093A}'..='\u{094F}'
        | '\u{0E31}' | '\u{0E34}'..='\u{0E3A}' | '\u{0E47}'..='\u{0E4E}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE20}'..='\u{FE2F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(raw: &str) -> Option<ErrorCode> {
        UserName::parse(raw).err().map(|e| e.code())
    }

    #[test]
    fn a_name_is_trimmed() {
        assert_eq!(
            UserName::parse("  ann  ").map(|n| n.0),
            Ok("ann".to_owned())
        );
    }

    #[test]
    fn names_of_one_to_thirty_two_characters_are_accepted() {
        assert!(UserName::parse("a").is_ok());
        assert!(
            UserName::parse(&"é".repeat(32)).is_ok(),
            "32 two-byte characters fit"
        );
        assert_eq!(code(&"a".repeat(33)), Some(ErrorCode::InvalidName));
    }

    #[test]
    fn an_empty_or_blank_name_is_refused() {
        assert_eq!(code(""), Some(ErrorCode::InvalidName));
        assert_eq!(code("   \t "), Some(ErrorCode::InvalidName));
    }

    #[test]
    fn letters_of_any_script_digits_space_and_some_punctuation_are_allowed() {
        for name in [
            "Ann Lee",
            "o_k",
            "a-b.c_d",
            "Zoë",
            "Дарья",
            "李小龙",
            "محمد",
            "नमस्ते",
            "42",
        ] {
            assert!(UserName::parse(name).is_ok(), "{name} should be accepted");
        }
    }

    #[test]
    fn markup_and_other_symbols_are_refused() {
        for name in [
            "<b>ann</b>",
            "ann&co",
            "a\"b",
            "a'b",
            "a/b",
            "ann\u{0}",
            "a\nb",
            "😀",
            "a\u{202E}b",
        ] {
            assert_eq!(
                code(name),
                Some(ErrorCode::InvalidName),
                "{name:?} should be refused"
            );
        }
    }

    #[test]
    fn server_is_reserved_in_any_case_and_width() {
        for name in ["Server", "server", "SERVER", " sErVeR ", "Ｓｅｒｖｅｒ"] {
            assert_eq!(
                code(name),
                Some(ErrorCode::NameReserved),
                "{name:?} should be reserved"
            );
        }
        assert!(UserName::parse("Servers").is_ok());
    }

    #[test]
    fn keys_compare_case_insensitively_and_after_nfkc() {
        let key = |s: &str| UserName::parse(s).map(|n| n.key());
        assert_eq!(key("Ann"), key("aNN"));
        assert_eq!(key("Ann"), key("Ａｎｎ"));
        assert_eq!(
            key("Zoë"),
            key("Zoe\u{0308}"),
            "composed and decomposed forms collide"
        );
        assert_ne!(key("Ann"), key("Anne"));
    }

    #[test]
    fn a_huge_input_is_refused_without_counting_all_of_it() {
        assert_eq!(code(&"a".repeat(1_000_000)), Some(ErrorCode::InvalidName));
    }
}
