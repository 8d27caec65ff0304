//! Who a connecting client is, for both protocols: [`claim_identity`] turns what it brings
//! (a session token, or a name) into a returning user or a name free for a new one, with
//! the rule of [`session::claim_name`] applied to everyone who may hold the name: users in
//! the community (present, or away within their grace period) and valid sessions in history.

use crate::chat::Chat;
use crate::domain::session::{self, Claim};
use crate::domain::{DomainError, ErrorCode, UserName};
use crate::store::history::Session;

/// Who a client turned out to be.
#[derive(Debug)]
pub enum Identity {
    /// A returning full-protocol user: the token it brought, its valid session, and whether
    /// the session's expiry is due to be pushed back. The community knows it (again, if it
    /// had forgotten it, e.g. after a restart: its rooms are read back from history).
    Returning {
        token: String,
        session: Session,
        refresh_due: bool,
    },
    /// A name nobody else holds, for a new user.
    New(UserName),
}

/// Resolve `claim` at `now_ms`: an unknown or expired token is `invalid_token`; a name is
/// refused as the user-name rules say, or as taken when someone holds it (see
/// [`session::claim_name`]).
pub async fn claim_identity(
    chat: &Chat,
    claim: Claim,
    now_ms: i64,
) -> Result<Identity, DomainError> {
    match claim {
        Claim::Token(token) => {
            let Some((session, refresh_due)) = chat.history.session(&token, now_ms).await? else {
                return Err(DomainError::new(
                    ErrorCode::InvalidToken,
                    "this session token is unknown or expired; connect with a name",
                ));
            };
            // Not here and not remembered (e.g. the server restarted): its rooms are in history.
            let known = chat.community().knows_user(&session.user);
            if !known && let Ok(name) = UserName::parse(&session.name) {
                let rooms = chat.history.user_rooms(&session.user).await?;
                chat.community()
                    .restore_member(session.user.clone(), name, rooms);
            }
            Ok(Identity::Returning {
                token,
                session,
                refresh_due,
            })
        }
        Claim::Name(raw) => {
            let name = UserName::parse(&raw)?;
            // A name belongs to its user while that user's session is valid, present or not.
            let stored = chat.history.user_named(&name, now_ms).await?;
            let here = chat.community().user_named(name.as_str()).ok();
            let holders = stored.iter().chain(here.iter()).map(|(user, _)| user);
            session::claim_name(&name, None, holders)?;
            Ok(Identity::New(name))
        }
    }
}
