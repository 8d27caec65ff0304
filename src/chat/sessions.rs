//! A socket leaving ([`Chat::disconnect`], its grace period through [`super::Presence`]), and
//! the sockets registered during `on_connect` that the engine has not confirmed yet: one whose
//! connection closed while connecting is forgotten by the sweeper, and a user it created
//! whose token could never be sent is forgotten with it (its name free at once).

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use engine::{Socket, SocketId};
use tracing::debug;

use super::{Chat, Connection, Unconfirmed, now_ms_u64};
use crate::domain::UserId;

impl Chat {
    /// A socket left. `resumable`: its client may come back with connection-state recovery
    /// (its connection dropped), so a tutorial user is held for the grace period too.
    pub(crate) fn disconnect(&self, socket: &Socket<Connection>, resumable: bool) {
        let mut community = self.community();
        let notices =
            self.presence
                .socket_left(&mut community, socket.id(), resumable, now_ms_u64());
        socket.data().set_spelling(None);
        self.deliver(&community, None, &notices);
    }

    /// Remember a socket registered during `on_connect` (see `unconfirmed`); `fresh`: the
    /// token and user this connection created, if it created them; `unsent`: its `session`
    /// (the token) could not be sent, the connection having closed.
    pub(crate) fn registered_on_connect(
        &self,
        socket: &SocketId,
        fresh: Option<(String, UserId)>,
        unsent: bool,
    ) {
        let mut unconfirmed = self
            .unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        unconfirmed.insert(
            socket.clone(),
            Unconfirmed {
                registered_ms: now_ms_u64(),
                fresh,
                unsent,
            },
        );
    }

    /// A socket is gone: if it created its user and its connection closed before its
    /// `session` event (the token) could even be queued, nobody can ever use that token:
    /// forget the user, so its name is free at once rather than held for the session's 30
    /// days. Call after [`Chat::disconnect`]. Returns whether the user was forgotten.
    pub(crate) async fn forget_if_unconfirmed(&self, socket: &SocketId) -> bool {
        let entry = self
            .unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(socket);
        let Some(Unconfirmed {
            fresh: Some((token, user)),
            unsent: true,
            ..
        }) = entry
        else {
            return false;
        };
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        {
            let mut community = self.community();
            // Another socket of the user (it had the token after all) keeps it.
            let Some(mut notices) = community.forget_user(&user) else {
                return false;
            };
            debug!(socket = %socket, "new user's connection closed before its token was sent");
            notices.extend(community.users_notice());
            self.deliver(&community, None, &notices);
        }
        self.history.forget_user(&token, &user).await;
        self.publish_forgotten(&user);
        true
    }

    /// Sockets registered at least a second ago that the engine does not know: their
    /// connection closed during `on_connect`. Those it knows are confirmed and forgotten here.
    pub(super) fn unconfirmed_ghosts(&self, now: u64) -> Vec<(SocketId, Option<(String, UserId)>)> {
        let Some(io) = self.io() else {
            return Vec::new();
        };
        let mut unconfirmed = self
            .unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ghosts = Vec::new();
        unconfirmed.retain(|socket, entry| {
            if now.saturating_sub(entry.registered_ms) < 1_000 {
                return true;
            }
            let known = io
                .of("/")
                .is_some_and(|namespace| !namespace.to(socket.as_str()).is_empty());
            if !known {
                ghosts.push((socket.clone(), entry.fresh.take()));
            }
            false
        });
        ghosts
    }
}
