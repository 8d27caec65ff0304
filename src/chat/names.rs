//! Tutorial users' names in the store, which nodes may share: a tutorial user claims its name
//! there for [`TUTORIAL_NAME_TTL_MS`] when it arrives, the sweeper refreshes the claims of
//! those present and releases the claims of those gone. A node that dies stops refreshing, so
//! its tutorial users' names are free again a TTL later.
//!
//! Full-protocol users claim their names for as long as their sessions last (see
//! `socket/full.rs` and [`crate::store::History::save_session`]).

use std::sync::PoisonError;

use super::{Chat, now_ms};
use crate::domain::session::TUTORIAL_NAME_TTL_MS;
use crate::domain::{DomainError, UserId, UserName};

impl Chat {
    /// Claim `name` in the store for the tutorial user `user` is about to become: refused as
    /// taken when someone holds it, on any node.
    pub(crate) async fn claim_tutorial_name(
        &self,
        user: &UserId,
        name: &UserName,
    ) -> Result<(), DomainError> {
        let now = now_ms();
        self.history
            .claim_name(user, name, now.saturating_add(TUTORIAL_NAME_TTL_MS), now)
            .await
    }

    /// After [`Chat::claim_tutorial_name`]: the user arrived (its claim is refreshed while it
    /// is present), or did not (its claim is released now).
    pub(crate) async fn tutorial_claimed(&self, user: UserId, name: UserName, arrived: bool) {
        if arrived {
            self.tutorial_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(user, name);
        } else {
            self.history.release_name(&user, &name).await;
        }
    }

    /// Release the name claims of the tutorial users no longer present here (at once when
    /// one leaves, so its name is free for the next claimant on any node).
    pub(crate) async fn release_departed_tutorial_names(&self) {
        // Most servers have no tutorial users: no need to take the community then.
        if self
            .tutorial_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            return;
        }
        let gone: Vec<(UserId, UserName)> = {
            let community = self.community();
            let mut names = self
                .tutorial_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if names.is_empty() {
                return;
            }
            let gone: Vec<UserId> = names
                .keys()
                .filter(|user| !community.is_present(user))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|user| names.remove_entry(&user))
                .collect()
        };
        self.history.release_names(gone).await;
    }

    /// Refresh the name claims of the tutorial users present here. Called by the sweeper
    /// well within the claims' TTL.
    pub(crate) async fn refresh_tutorial_names(&self) {
        let present: Vec<(UserId, UserName)> = self
            .tutorial_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(user, name)| (user.clone(), name.clone()))
            .collect();
        if !present.is_empty() {
            self.history
                .refresh_tutorial_names(&present, now_ms())
                .await;
        }
    }
}
