//! The pure core of chinwag: names, rooms, messages, limits and who receives what.
//!
//! Nothing here performs I/O, awaits or reads a clock: values in, values out, so every rule is
//! unit-tested without a server. Types that carry user input are built only by `parse`
//! functions that return a [`DomainError`] with a stable [`ErrorCode`].
//!
//! # Layout
//! - [`error`]: [`DomainError`] and its stable [`ErrorCode`]s.
//! - [`name`]: [`UserName`] (validated display name) and [`NameKey`] (its comparison form).
//! - [`order`]: [`InOrder`], releasing each conversation's messages in sequence order.
//! - [`quota`]: [`Quotas`], how many rooms and new users one user or address may create.
//! - [`rate`]: [`RateLimit`], the per-connection message rate.
//! - [`room`]: [`RoomName`], and the default room `general`.
//! - [`session`]: identity as values: [`session::claim_name`] (whether a name is free for a
//!   claimant, the one rule both protocols use), session expiry and refresh.
//! - [`small_set`]: [`SmallSet`], the compact set of a user's sockets and rooms.
//! - [`tail`]: [`Tail`], the latest messages of a conversation, for catch-up.
//! - [`message`]: [`MessageBody`] and its length limit.
//! - [`community`]: [`Community`] — users, their sockets and rooms, presence, and who
//!   receives what, returned as [`Outgoing`] notices.

pub mod community;
pub mod error;
pub mod message;
pub mod name;
pub mod order;
pub mod quota;
pub mod rate;
pub mod room;
pub mod session;
pub mod small_set;
pub mod tail;

pub use community::{
    Audience, Community, Connected, Draft, Limits, MemberView, Message, Notice, Outgoing, Place,
    Protocol, RoomSummary, Speaker, Swept, UserId,
};
pub use error::{DomainError, ErrorCode};
pub use message::{DEFAULT_MAX_MESSAGE_CHARS, MessageBody};
pub use name::{MAX_NAME_CHARS, NameKey, SERVER_NAME, UserName};
pub use order::InOrder;
pub use quota::{QuotaLimits, Quotas, RoomReservation};
pub use rate::RateLimit;
pub use room::{GENERAL, RoomName};
pub use tail::Tail;
