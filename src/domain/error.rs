//! [`DomainError`]: why the core refused something, as a stable code and a sentence for people.

use std::fmt;

/// The stable, machine-readable reason of a refusal. Clients match on [`ErrorCode::as_str`];
/// the strings never change once published (PROTOCOL.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An argument had the wrong type or was missing (a number or an object where text belongs).
    InvalidArgument,
    /// The name is empty, too long or has characters outside the allowed set.
    InvalidName,
    /// The name is reserved for the server ("Server", in any case or width).
    NameReserved,
    /// Another user holds this name: connected, or away with a valid session (compared after
    /// NFKC and case folding).
    NameTaken,
    /// This connection already has another name; renaming is not allowed.
    AlreadyNamed,
    /// The connection has not chosen a name yet, so it cannot speak.
    NameRequired,
    /// The message is empty.
    InvalidMessage,
    /// The message is longer than the configured limit.
    MessageTooLong,
    /// The room name is empty, too long or has characters outside the allowed set.
    InvalidRoom,
    /// No room has this name.
    UnknownRoom,
    /// `room:create` of a room that exists.
    RoomExists,
    /// The user is not a member of the room.
    NotInRoom,
    /// Nobody holds this name.
    UnknownUser,
    /// The request needs the full protocol, and a tutorial-protocol user is involved (they
    /// live only in `general` and have no direct messages).
    NotSupported,
    /// The session token is unknown or expired.
    InvalidToken,
    /// Too much, too fast: retry a little later.
    RateLimited,
    /// A quota is used up (rooms per user or per address, rooms on the server): retrying
    /// soon will not help.
    LimitReached,
    /// History could not be read or written; the cause is in the server log.
    Unavailable,
}

impl ErrorCode {
    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::InvalidName => "invalid_name",
            Self::NameReserved => "name_reserved",
            Self::NameTaken => "name_taken",
            Self::AlreadyNamed => "already_named",
            Self::NameRequired => "name_required",
            Self::InvalidMessage => "invalid_message",
            Self::MessageTooLong => "message_too_long",
            Self::InvalidRoom => "invalid_room",
            Self::UnknownRoom => "unknown_room",
            Self::RoomExists => "room_exists",
            Self::NotInRoom => "not_in_room",
            Self::UnknownUser => "unknown_user",
            Self::InvalidToken => "invalid_token",
            Self::RateLimited => "rate_limited",
            Self::LimitReached => "limit_reached",
            Self::Unavailable => "unavailable",
            Self::NotSupported => "not_supported",
        }
    }
}

/// A refusal by the domain: a stable [`ErrorCode`] and a human sentence that is safe to show
/// (it never repeats input that failed validation, so it cannot carry markup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    code: ErrorCode,
    message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The sentence shown to the person who caused the error.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for DomainError {}
