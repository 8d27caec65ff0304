//! [`RoomName`]: a validated room name; [`RoomName::general`] is the default room where the
//! tutorial's users live.

use std::fmt;
use std::sync::{Arc, OnceLock};

use unicode_normalization::UnicodeNormalization;

use super::error::{DomainError, ErrorCode};
use super::name::is_invisible;

/// NFKC, full case folding (upper then lower), NFKC again: the form names compare in.
fn fold(text: &str) -> String {
    let normalised: String = text.nfkc().collect();
    normalised.to_uppercase().to_lowercase().nfkc().collect()
}

/// Longest room name, in Unicode scalar values.
pub const MAX_ROOM_CHARS: usize = 48;

/// The room every user is in by default, and the only room tutorial clients know.
pub const GENERAL: &str = "general";

/// A room's name: trimmed, 1–48 characters, letters (any script), digits and `_ - .`
/// (no spaces, so it reads well after a `#`). Built only by [`RoomName::parse`].
/// Shared (`Arc`): every user's room set holds its rooms' names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Validate `raw` and put it in canonical form: trimmed, NFKC-normalised and case-folded
    /// (as names are compared, see [`super::name`]), so `General` and fullwidth `ｇｅｎｅｒａｌ` are
    /// `general`, not look-alike rooms of their own.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let folded = fold(raw.trim());
        let name = folded.as_str();
        let length = name.chars().take(MAX_ROOM_CHARS + 1).count();
        if length == 0 || length > MAX_ROOM_CHARS {
            return Err(DomainError::new(
                ErrorCode::InvalidRoom,
                format!("a room name must have 1 to {MAX_ROOM_CHARS} characters"),
            ));
        }
        let allowed =
            |c: char| (c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) && !is_invisible(c);
        if !name.chars().all(allowed) {
            return Err(DomainError::new(
                ErrorCode::InvalidRoom,
                "a room name may contain only letters, digits and _ - .",
            ));
        }
        Ok(Self(name.into()))
    }

    /// The default room (one shared name, not an allocation per call).
    pub fn general() -> Self {
        static GENERAL_NAME: OnceLock<Arc<str>> = OnceLock::new();
        Self(GENERAL_NAME.get_or_init(|| GENERAL.into()).clone())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_room_is_a_valid_room_name() {
        assert_eq!(RoomName::parse(GENERAL), Ok(RoomName::general()));
    }

    #[test]
    fn room_names_are_case_folded_and_normalised() {
        for raw in ["General", "GENERAL", "ｇｅｎｅｒａｌ", " general "] {
            assert_eq!(RoomName::parse(raw), Ok(RoomName::general()), "{raw:?}");
        }
        assert_eq!(
            RoomName::parse("Straße").map(|r| r.0.to_string()),
            Ok("strasse".to_owned())
        );
        let code = RoomName::parse("dev\u{3164}").err().map(|e| e.code());
        assert_eq!(code, Some(ErrorCode::InvalidRoom), "a blank filler");
    }

    #[test]
    fn room_names_without_markup_or_spaces_are_accepted() {
        assert!(RoomName::parse("rust-lang.fr_2").is_ok());
        for bad in ["", "a b", "<script>", &"r".repeat(49)] {
            let code = RoomName::parse(bad).err().map(|e| e.code());
            assert_eq!(code, Some(ErrorCode::InvalidRoom), "{bad:?}");
        }
    }
}
