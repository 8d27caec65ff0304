//! [`Lobby`]: the rules of the default room's chat — who may speak, and who receives what.
//!
//! Every operation returns the notices to deliver as values ([`Outgoing`]), so the rules are
//! tested without a server and the socket layer only translates them into emits.

use std::hash::Hash;

use super::directory::{Added, Directory};
use super::error::{DomainError, ErrorCode};
use super::message::{DEFAULT_MAX_MESSAGE_CHARS, MessageBody};
use super::name::{SERVER_NAME, UserName};
use super::room::RoomName;

/// Limits the lobby enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest message, in characters.
    pub max_message_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
        }
    }
}

/// Who a notice goes to. "Members" are the connections that have a name in this lobby.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience<C> {
    /// Only this connection.
    Only(C),
    /// Every member.
    Members,
    /// Every member except this connection.
    MembersExcept(C),
}

/// Who a chat line is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    /// The server itself ("Server" on the wire).
    Server,
    User(UserName),
}

impl Speaker {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Server => SERVER_NAME,
            Self::User(name) => name.as_str(),
        }
    }
}

/// Something a client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A chat line (the tutorial's `updateChat(speaker, text)`).
    Chat { from: Speaker, text: String },
    /// The full list of members, in arrival order (the tutorial's `updateUsers(map)`).
    Users(Vec<UserName>),
}

/// One notice and its audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<C> {
    pub to: Audience<C>,
    pub notice: Notice,
}

/// The default room's chat: its members and its rules.
#[derive(Debug)]
pub struct Lobby<C> {
    room: RoomName,
    members: Directory<C>,
    limits: Limits,
}

impl<C: Clone + Eq + Hash> Lobby<C> {
    pub fn new(limits: Limits) -> Self {
        Self {
            room: RoomName::general(),
            members: Directory::new(),
            limits,
        }
    }

    /// The room this lobby is.
    pub fn room(&self) -> &RoomName {
        &self.room
    }

    /// `connection` asks to be called `raw_name`. On success the newcomer is greeted, the
    /// others are told, and everyone gets the new list. Repeating one's own name is a no-op.
    pub fn add_user(
        &mut self,
        connection: &C,
        raw_name: &str,
    ) -> Result<Vec<Outgoing<C>>, DomainError> {
        let name = UserName::parse(raw_name)?;
        if self.members.add(connection, name.clone())? == Added::AlreadyThere {
            return Ok(Vec::new());
        }
        Ok(vec![
            Outgoing {
                to: Audience::Only(connection.clone()),
                notice: server_says("you have connected".to_owned()),
            },
            Outgoing {
                to: Audience::MembersExcept(connection.clone()),
                notice: server_says(format!("{name} has connected")),
            },
            Outgoing {
                to: Audience::Members,
                notice: Notice::Users(self.members.names()),
            },
        ])
    }

    /// `connection` says `raw_text` to everyone, itself included.
    pub fn send_chat(
        &self,
        connection: &C,
        raw_text: &str,
    ) -> Result<Vec<Outgoing<C>>, DomainError> {
        let Some(name) = self.members.name_of(connection) else {
            return Err(DomainError::new(
                ErrorCode::NameRequired,
                "choose a name before sending messages",
            ));
        };
        let body = MessageBody::parse(raw_text, self.limits.max_message_chars)?;
        Ok(vec![Outgoing {
            to: Audience::Members,
            notice: Notice::Chat {
                from: Speaker::User(name.clone()),
                text: body.into_string(),
            },
        }])
    }

    /// `connection` is gone (however it left). A named member's departure is announced to
    /// the others with the new list; an unnamed connection leaves silently.
    pub fn disconnect(&mut self, connection: &C) -> Vec<Outgoing<C>> {
        let Some(name) = self.members.remove(connection) else {
            return Vec::new();
        };
        vec![
            Outgoing {
                to: Audience::Members,
                notice: Notice::Users(self.members.names()),
            },
            Outgoing {
                to: Audience::Members,
                notice: server_says(format!("{name} has disconnected.")),
            },
        ]
    }

    /// The name of `connection`, if it has added itself.
    pub fn name_of(&self, connection: &C) -> Option<&UserName> {
        self.members.name_of(connection)
    }

    /// Number of named members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
}

fn server_says(text: String) -> Notice {
    Notice::Chat {
        from: Speaker::Server,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lobby() -> Lobby<u32> {
        Lobby::new(Limits::default())
    }

    fn chat(from: &str, text: &str) -> Notice {
        let from = if from == SERVER_NAME {
            Speaker::Server
        } else {
            Speaker::User(UserName::parse(from).unwrap_or_else(|e| panic!("{e}")))
        };
        Notice::Chat {
            from,
            text: text.to_owned(),
        }
    }

    fn users(names: &[&str]) -> Notice {
        Notice::Users(
            names
                .iter()
                .map(|n| UserName::parse(n).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
        )
    }

    fn code<T>(result: Result<T, DomainError>) -> Option<ErrorCode> {
        result.err().map(|e| e.code())
    }

    #[test]
    fn a_newcomer_is_greeted_announced_to_the_others_and_everyone_gets_the_list() {
        let mut lobby = lobby();
        assert!(lobby.add_user(&1, "ann").is_ok());
        let notices = lobby.add_user(&2, " bob ");
        assert_eq!(
            notices,
            Ok(vec![
                Outgoing {
                    to: Audience::Only(2),
                    notice: chat("Server", "you have connected")
                },
                Outgoing {
                    to: Audience::MembersExcept(2),
                    notice: chat("Server", "bob has connected"),
                },
                Outgoing {
                    to: Audience::Members,
                    notice: users(&["ann", "bob"])
                },
            ])
        );
    }

    #[test]
    fn a_message_goes_to_every_member_including_the_sender_exactly_as_sent() {
        let mut lobby = lobby();
        assert!(lobby.add_user(&1, "ann").is_ok());
        let text = "<img src=x onerror=alert(1)>";
        assert_eq!(
            lobby.send_chat(&1, text),
            Ok(vec![Outgoing {
                to: Audience::Members,
                notice: chat("ann", text)
            }])
        );
    }

    #[test]
    fn sending_before_choosing_a_name_is_refused() {
        let lobby = lobby();
        assert_eq!(
            code(lobby.send_chat(&1, "hi")),
            Some(ErrorCode::NameRequired)
        );
    }

    #[test]
    fn a_message_over_the_limit_is_refused() {
        let mut lobby = Lobby::new(Limits {
            max_message_chars: 5,
        });
        assert!(lobby.add_user(&1, "ann").is_ok());
        assert!(lobby.send_chat(&1, "12345").is_ok());
        assert_eq!(
            code(lobby.send_chat(&1, "123456")),
            Some(ErrorCode::MessageTooLong)
        );
    }

    #[test]
    fn a_taken_name_is_refused_and_nobody_is_told() {
        let mut lobby = lobby();
        assert!(lobby.add_user(&1, "ann").is_ok());
        assert_eq!(code(lobby.add_user(&2, "ANN")), Some(ErrorCode::NameTaken));
        assert_eq!(lobby.member_count(), 1);
        assert_eq!(
            code(lobby.send_chat(&2, "hi")),
            Some(ErrorCode::NameRequired)
        );
    }

    #[test]
    fn invalid_and_reserved_names_are_refused() {
        let mut lobby = lobby();
        assert_eq!(
            code(lobby.add_user(&1, "<b>x</b>")),
            Some(ErrorCode::InvalidName)
        );
        assert_eq!(
            code(lobby.add_user(&1, "server")),
            Some(ErrorCode::NameReserved)
        );
        assert_eq!(lobby.member_count(), 0);
    }

    #[test]
    fn adding_oneself_again_is_silent_and_renaming_is_refused() {
        let mut lobby = lobby();
        assert!(lobby.add_user(&1, "ann").is_ok());
        assert_eq!(lobby.add_user(&1, "ann"), Ok(Vec::new()));
        assert_eq!(
            code(lobby.add_user(&1, "bob")),
            Some(ErrorCode::AlreadyNamed)
        );
        assert_eq!(lobby.name_of(&1).map(UserName::as_str), Some("ann"));
    }

    #[test]
    fn a_departure_is_announced_to_the_remaining_members_with_the_new_list() {
        let mut lobby = lobby();
        assert!(lobby.add_user(&1, "ann").is_ok());
        assert!(lobby.add_user(&2, "bob").is_ok());
        assert_eq!(
            lobby.disconnect(&1),
            vec![
                Outgoing {
                    to: Audience::Members,
                    notice: users(&["bob"])
                },
                Outgoing {
                    to: Audience::Members,
                    notice: chat("Server", "ann has disconnected.")
                },
            ]
        );
        assert!(lobby.add_user(&3, "ann").is_ok(), "the name is free again");
    }

    #[test]
    fn an_unnamed_connection_leaves_silently() {
        let mut lobby = lobby();
        assert!(lobby.add_user(&1, "ann").is_ok());
        assert_eq!(lobby.disconnect(&2), Vec::new());
        assert_eq!(lobby.member_count(), 1);
    }
}
