//! Identity as values: who may use a name, and how long a session lasts.
//!
//! A full-protocol user is known by a session token (random, made by the caller: the domain
//! reads no randomness nor clock) that holds its name for [`SESSION_TTL_MS`] after its last
//! use; a tutorial user holds its name while present (in the store, which nodes may share,
//! for [`TUTORIAL_NAME_TTL_MS`] at a time, refreshed meanwhile). Both protocols ask [`claim_name`]
//! whether a name is theirs to take, so the rule and its refusal live here once.

use super::error::DomainError;
use super::name::UserName;

/// How long a session token stays valid after its last use.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// A session's expiry is pushed back on connect when it was last pushed back longer ago than
/// this: a reconnect storm (a restart) then costs no writes.
pub const SESSION_REFRESH_MS: i64 = 60 * 60 * 1000;

/// How long a tutorial user's claim on its name lasts in the store unless refreshed: the
/// name is free this long after its node stopped refreshing it (it crashed).
pub const TUTORIAL_NAME_TTL_MS: i64 = 30_000;

/// How often the claims of present tutorial users are refreshed (well within the TTL).
pub const TUTORIAL_NAME_REFRESH_MS: i64 = 10_000;

/// Random bytes in a session token (hex-encoded on the wire).
pub const TOKEN_BYTES: usize = 32;

/// Random bytes in a user id.
pub const USER_ID_BYTES: usize = 16;

/// What a connecting client brings to say who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A session token from an earlier `session` event: the user it belongs to.
    Token(String),
    /// A name, for a new user.
    Name(String),
}

impl Claim {
    /// A token wins over a name (a returning user keeps its own name); neither: no claim.
    pub fn of(token: Option<String>, name: Option<String>) -> Option<Self> {
        token.map(Self::Token).or(name.map(Self::Name))
    }
}

/// Whether `claimant` (`None`: a user not made yet) may have `name`, given the users that
/// hold it now, wherever they are recorded (present or away in the community, or with a
/// valid session in history): only when none of them is someone else.
pub fn claim_name<'a, U: PartialEq + 'a>(
    name: &UserName,
    claimant: Option<&U>,
    holders: impl IntoIterator<Item = &'a U>,
) -> Result<(), DomainError> {
    let mut holders = holders.into_iter();
    match holders.find(|holder| claimant != Some(*holder)) {
        Some(_) => Err(name.taken()),
        None => Ok(()),
    }
}

/// When a session saved (or refreshed) at `now_ms` expires.
pub fn expires_at(now_ms: i64) -> i64 {
    now_ms.saturating_add(SESSION_TTL_MS)
}

/// Whether a session expiring at `expires_at_ms`, used at `now_ms`, is due to have its
/// expiry pushed back (see [`SESSION_REFRESH_MS`]).
pub fn refresh_due(expires_at_ms: i64, now_ms: i64) -> bool {
    let refreshed_at = expires_at_ms.saturating_sub(SESSION_TTL_MS);
    now_ms.saturating_sub(refreshed_at) >= SESSION_REFRESH_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorCode;

    fn name(raw: &str) -> UserName {
        UserName::parse(raw).expect("a valid name")
    }

    #[test]
    fn a_name_nobody_holds_is_free_for_a_new_user() {
        assert_eq!(claim_name::<u32>(&name("ann"), None, []), Ok(()));
    }

    #[test]
    fn a_name_held_by_someone_else_is_taken_with_its_sentence() {
        let refused = claim_name(&name("Ann"), Some(&2), [&1]).expect_err("taken");
        assert_eq!(refused.code(), ErrorCode::NameTaken);
        assert_eq!(
            refused.message(),
            "the name Ann is already taken, please choose another"
        );
        assert!(
            claim_name(&name("ann"), None, [&1]).is_err(),
            "by a new user"
        );
        assert!(
            claim_name(&name("ann"), Some(&1), [&1, &3]).is_err(),
            "by one of two"
        );
    }

    #[test]
    fn a_user_may_claim_the_name_it_holds_itself() {
        assert_eq!(claim_name(&name("ann"), Some(&1), [&1, &1]), Ok(()));
    }

    #[test]
    fn a_token_wins_over_a_name() {
        let claim = Claim::of(Some("t".to_owned()), Some("ann".to_owned()));
        assert_eq!(claim, Some(Claim::Token("t".to_owned())));
        assert_eq!(
            Claim::of(None, Some("ann".to_owned())),
            Some(Claim::Name("ann".to_owned()))
        );
        assert_eq!(Claim::of(None, None), None);
    }

    #[test]
    fn a_session_is_refreshed_an_hour_after_its_last_refresh() {
        let saved = 1_000;
        let expires = expires_at(saved);
        assert_eq!(expires, saved + SESSION_TTL_MS);
        assert!(!refresh_due(expires, saved));
        assert!(!refresh_due(expires, saved + SESSION_REFRESH_MS - 1));
        assert!(refresh_due(expires, saved + SESSION_REFRESH_MS));
    }
}
