//! [`MessageBody`]: the text of a chat message, within the length limit.

use super::error::{DomainError, ErrorCode};

/// Default longest message, in Unicode scalar values.
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 4_000;

/// The text of one message: not empty, at most the configured number of characters, without
/// the NUL character (PostgreSQL `text` cannot hold it, and C-string APIs would cut the text
/// there, so it is refused here rather than by a store: one rule for every store and both
/// protocols), and otherwise exactly what the sender typed. It is never escaped or trimmed here: clients
/// render it as text, and relaying it byte for byte is part of the tutorial contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Validate `raw` against `max_chars`.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError::new(
                ErrorCode::InvalidMessage,
                "a message cannot be empty",
            ));
        }
        if raw.contains('\0') {
            return Err(DomainError::new(
                ErrorCode::InvalidMessage,
                "a message cannot contain the NUL character",
            ));
        }
        if raw.chars().take(max_chars + 1).count() > max_chars {
            return Err(DomainError::new(
                ErrorCode::MessageTooLong,
                format!("a message can have at most {max_chars} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_kept_exactly_as_sent() {
        let raw = "  <img src=x onerror=alert(1)> & \"quotes\"\n";
        assert_eq!(
            MessageBody::parse(raw, 4_000).map(|m| m.into_string()),
            Ok(raw.to_owned())
        );
    }

    #[test]
    fn an_empty_message_is_refused() {
        let err = MessageBody::parse("", 4_000).err().map(|e| e.code());
        assert_eq!(err, Some(ErrorCode::InvalidMessage));
    }

    #[test]
    fn a_message_with_a_nul_character_is_invalid() {
        for raw in ["\0", "a\0b", "end\0"] {
            let err = MessageBody::parse(raw, 4_000).err().map(|e| e.code());
            assert_eq!(err, Some(ErrorCode::InvalidMessage), "{raw:?}");
        }
        // Other control characters are text like any other.
        assert!(MessageBody::parse("tab\there\u{1}", 4_000).is_ok());
    }

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        assert!(MessageBody::parse(&"é".repeat(4_000), 4_000).is_ok());
        let err = MessageBody::parse(&"é".repeat(4_001), 4_000)
            .err()
            .map(|e| e.code());
        assert_eq!(err, Some(ErrorCode::MessageTooLong));
    }
}
