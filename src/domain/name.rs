//! [`UserName`]: a validated display name, and [`NameKey`], the form names are compared in.

use std::fmt;
use std::sync::Arc;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use super::error::{DomainError, ErrorCode};

/// Longest name, in Unicode scalar values.
pub const MAX_NAME_CHARS: usize = 32;

/// The name the server speaks as; nobody else may take it, in any case or width.
pub const SERVER_NAME: &str = "Server";

/// A person's display name: trimmed, 1–32 characters, only letters (any script), digits,
/// spaces and `_ - .`, never "Server". Built only by [`UserName::parse`], so a `UserName`
/// can never carry markup. Shared (`Arc`): a user's name is kept in several maps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserName(Arc<str>);

/// The comparison form of a name: NFKC-normalised, then case-folded, then NFKC again
/// (NFKC_Casefold, closely): two names with the same key are the same name ("Ann", "ANN"
/// and fullwidth "Ａｎｎ" collide, and so do "Straße" and "STRASSE", "ΣΑΣ" and "σασ").
/// Keys are stored (users' names in history): changing this function needs a migration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey(String);

impl UserName {
    /// The refusal of this name when someone else holds it (present, away within a grace
    /// period, or with a valid session).
    pub fn taken(&self) -> DomainError {
        DomainError::new(
            ErrorCode::NameTaken,
            format!("the name {self} is already taken, please choose another"),
        )
    }

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
        // Checked in the NFKC form too: compatibility characters may normalise to others.
        let normalised: String = name.nfkc().collect();
        let allowed = |text: &str| text.chars().all(|c| is_name_char(c) && !is_invisible(c));
        if !allowed(name) || !allowed(&normalised) {
            return Err(DomainError::new(
                ErrorCode::InvalidName,
                "a name may contain only letters, digits, spaces and _ - .",
            ));
        }
        if name.chars().next().is_some_and(is_combining) {
            return Err(DomainError::new(
                ErrorCode::InvalidName,
                "a name cannot start with a combining mark",
            ));
        }
        let key = NameKey::of(name);
        if key == NameKey::of(SERVER_NAME) || looks_like_server(&key) {
            return Err(DomainError::new(
                ErrorCode::NameReserved,
                format!("the name {SERVER_NAME} is reserved"),
            ));
        }
        Ok(Self(name.into()))
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
        // Full case folding, approximated by uppercasing then lowercasing: that maps "ß" to
        // "ss" and final "ς" to "σ" as folding does (plain lowercasing does neither), and
        // it merges a few pairs folding keeps apart (such as dotless "ı" and "i"), which
        // only makes names more distinct from each other. Normalise again at the end:
        // case mapping can produce sequences that NFKC composes differently.
        let normalised = name.nfkc().collect::<String>();
        let folded = normalised.to_uppercase().to_lowercase();
        Self(folded.nfkc().collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Letters of any script (with their combining marks), digits, space and `_ - .`.
fn is_name_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || matches!(c, ' ' | '_' | '-' | '.') || is_mark(c)
}

/// Code points that render as nothing (or as blank) and so let one name pass for another:
/// Unicode's default-ignorable code points (joiners, fillers, variation selectors, bidi and
/// other format controls, tags) and every other format character.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
        || c.general_category() == GeneralCategory::Format
}

/// A combining mark (it belongs after a letter, not at the start of a name).
fn is_combining(c: char) -> bool {
    c.general_category_group() == GeneralCategoryGroup::Mark
}

/// Whether a name key reads "server" once common Cyrillic and Greek look-alikes of Latin
/// letters are taken as those letters ("Ѕеrvеr" in Cyrillic). Only "Server" is guarded
/// this way; other mixed-script look-alikes are not detected.
fn looks_like_server(key: &NameKey) -> bool {
    let skeleton: String = key
        .as_str()
        .chars()
        .map(|c| match c {
            'а' | 'α' => 'a',
            'с' | 'ϲ' => 'c',
            'е' | 'ε' => 'e',
            'і' | 'ι' => 'i',
            'о' | 'ο' => 'o',
            'р' | 'ρ' => 'p',
            'ѕ' => 's',
            'ѵ' | 'ν' => 'v',
            'г' => 'r',
            'х' | 'χ' => 'x',
            'у' | 'γ' => 'y',
            other => other,
        })
        .collect();
    skeleton == "server"
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
            UserName::parse("  ann  ").map(|n| n.0.to_string()),
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
    fn invisible_and_blank_characters_and_a_leading_mark_are_refused() {
        for name in [
            "Server\u{034F}",
            "S\u{034F}erver",
            "ann\u{034F}",
            "\u{034F}",
            "Server\u{3164}",
            "\u{3164}",
            "a\u{115F}",
            "a\u{1160}",
            "a\u{FFA0}",
            "a\u{200B}b",
            "a\u{200D}b",
            "a\u{2060}b",
            "a\u{FE0F}",
            "a\u{E0100}",
            "a\u{00AD}b",
            "\u{0301}ann",
        ] {
            assert_eq!(
                code(name),
                Some(ErrorCode::InvalidName),
                "{name:?} should be refused"
            );
        }
        assert!(
            UserName::parse("Zoe\u{0308}").is_ok(),
            "a mark after a letter is fine"
        );
    }

    #[test]
    fn server_look_alikes_in_other_scripts_are_reserved() {
        for name in ["\u{0405}\u{0435}rv\u{0435}r", "S\u{0435}rver", "ѕегvег"] {
            assert_eq!(code(name), Some(ErrorCode::NameReserved), "{name:?}");
        }
    }

    #[test]
    fn keys_use_full_case_folding() {
        let key = |s: &str| UserName::parse(s).map(|n| n.key());
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_eq!(key("ΣΑΣ"), key("σασ"));
        assert_eq!(key("ΣΑΣ"), key("σας"));
        assert_ne!(key("Strasse"), key("Strase"));
    }

    #[test]
    fn a_huge_input_is_refused_without_counting_all_of_it() {
        assert_eq!(code(&"a".repeat(1_000_000)), Some(ErrorCode::InvalidName));
    }
}
