//! The engine rooms the chat uses, so that delivering to a group is one broadcast:
//! - `tutorial:camelCase` / `tutorial:lowercase`: named tutorial sockets, by spelling (see
//!   [`super::outgoing::Spelling::room`]);
//! - [`FULL_ROOM`]: every full-protocol socket (they are all in `general`);
//! - [`user_room`]: every full-protocol socket of one user (tabs);
//! - [`PRESENCE_ROOM`]: the full-protocol sockets that asked for everyone's presence
//!   (`presence:subscribe`).
//!
//! A room other than `general` is reached as the union of its members' `user:` rooms, so a
//! user's other tabs follow a room joined in one tab without any per-socket bookkeeping.

use crate::domain::UserId;

/// Engine room of every full-protocol socket.
pub const FULL_ROOM: &str = "full";

/// Engine room of the sockets that asked for every user's presence.
pub const PRESENCE_ROOM: &str = "presence";

/// Engine room of one user's full-protocol sockets.
pub fn user_room(user: &UserId) -> String {
    format!("user:{}", user.as_str())
}
