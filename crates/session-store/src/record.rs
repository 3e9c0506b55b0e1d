//! The records kept in a store.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::UnixTime;

/// A user's groups: shared names in a shared list.
pub type Groups = Arc<[Arc<str>]>;

/// Makes [`Groups`] from names.
pub fn groups<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Groups {
    names.into_iter().map(|n| Arc::from(n.as_ref())).collect()
}

/// Characters in a session ID: 256 random bits in URL-safe base64 without padding.
const ID_LEN: usize = 43;

/// An opaque session ID: 256 random bits, URL-safe base64. Held inline (no allocation per
/// request that presents one).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// Wraps a cookie value; `None` when it cannot be a session ID (wrong length or alphabet),
    /// so that junk never reaches a store lookup.
    pub fn parse(value: &str) -> Option<SessionId> {
        let bytes: [u8; ID_LEN] = value.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            .then_some(SessionId(bytes))
    }

    /// Draws a fresh random ID.
    pub fn generate() -> Result<SessionId, crate::StoreError> {
        // A token that is no ID would be a generator gone wrong.
        SessionId::parse(&crate::random_token()?).ok_or(crate::StoreError::Random)
    }

    /// The cookie value. Never log it: it is a bearer credential.
    pub fn expose(&self) -> &str {
        // ASCII by construction (`parse`), so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(..)")
    }
}

/// What the gateway knows about a signed-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Format version of this record; a record of an unknown version reads as logged out.
    pub version: u32,
    /// The SP entity ID the session was made for (sessions never cross deployments).
    pub sp_entity_id: String,
    /// The IdP entity ID that authenticated the user.
    pub idp: String,
    /// The configured name of that IdP (for rules that require an IdP).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idp_name: String,
    /// The user key (NameID or a configured attribute).
    pub user: String,
    /// The NameID exactly as received.
    pub name_id: String,
    /// The NameID Format, when sent.
    pub name_id_format: Option<String>,
    /// The IdP's SessionIndex, for Single Logout.
    pub session_index: Option<String>,
    /// The NameID's `NameQualifier`, when sent (Single Logout repeats it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_qualifier: Option<String>,
    /// The NameID's `SPNameQualifier`, when sent (Single Logout repeats it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_name_qualifier: Option<String>,
    /// The user's email, when the IdP sent one.
    pub email: Option<String>,
    /// The user's display name, when the IdP sent one.
    pub display_name: Option<String>,
    /// The user's given name, when the IdP sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// The user's surname, when the IdP sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    /// The user's groups; shared, so that copies of a record (one per request) and sessions
    /// of the same groups cost no copies of the names.
    pub groups: Groups,
    /// The assertion's other attributes by Name (those not read as groups), for access rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// A random token that logout forms must echo (CSRF protection).
    pub csrf_token: String,
    /// When the user logged in.
    pub created_at: UnixTime,
    /// When the IdP signed the user in (the assertion's AuthnInstant), for routes that want a
    /// recent sign-in; `None`: not sent, or a record from an older version (such a sign-in
    /// never counts as recent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn_instant: Option<UnixTime>,
    /// How the IdP signed the user in (the assertion's AuthnContextClassRef), for the apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authn_context: Option<String>,
    /// Absolute end of the session; set by the store from the timeouts and SessionNotOnOrAfter.
    pub expires_at: UnixTime,
    /// Last time the session was used (idle timeout).
    pub last_seen: UnixTime,
}

impl SessionRecord {
    /// Whether the IdP signed the user in at most `max_age` seconds before `now` (see
    /// [`signed_in_within`]).
    pub fn signed_in_within(&self, max_age: i64, skew: i64, now: UnixTime) -> bool {
        signed_in_within(self.authn_instant, max_age, skew, now)
    }

    /// Stamps a new session made at `now`: its creation and last use, and its end, the earlier
    /// of `now + max_lifetime` and the `expires_at` it came with (SessionNotOnOrAfter) if set.
    pub fn start(&mut self, now: UnixTime, timeouts: &crate::SessionTimeouts) {
        let cap = now.saturating_add(timeouts.max_lifetime);
        self.expires_at = if self.expires_at > 0 {
            self.expires_at.min(cap)
        } else {
            cap
        };
        self.created_at = now;
        self.last_seen = now;
    }
}

/// Whether a sign-in at the IdP at `authn_instant` is at most `max_age` seconds old at `now`,
/// the IdP's clock allowed to differ from ours by `skew` seconds either way. An unknown time
/// (no AuthnInstant, a session from an older version) is not recent, and neither is one later
/// than `now + skew`: a route that wants a recent sign-in never trusts one it cannot date.
pub fn signed_in_within(
    authn_instant: Option<UnixTime>,
    max_age: i64,
    skew: i64,
    now: UnixTime,
) -> bool {
    authn_instant.is_some_and(|at| {
        at <= now.saturating_add(skew) && now.saturating_sub(at) <= max_age.saturating_add(skew)
    })
}

/// The current session record format.
pub const SESSION_VERSION: u32 = 1;

/// A login in progress: what `/saml/login` sent and where the user goes afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// The AuthnRequest ID, expected as InResponseTo.
    pub request_id: String,
    /// The local path to return to after login.
    pub return_to: String,
    /// When the request was made.
    pub created_at: UnixTime,
    /// The configured name of the IdP the request was sent to: only its response answers it.
    #[serde(default)]
    pub idp: String,
    /// The login is for a route that wants a sign-in at most this many seconds old
    /// (`routes[N].max_authn_age`): it asked the IdP for a new one (ForceAuthn), and the
    /// response's AuthnInstant must be that recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_authn_age: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::signed_in_within;

    #[test]
    fn a_sign_in_is_recent_within_the_age_and_the_skew_and_only_when_dated() {
        let now = 1_900_000_000;
        // 300 s allowed, the IdP's clock 60 s off either way.
        let recent = |at| signed_in_within(at, 300, 60, now);
        assert!(recent(Some(now)));
        assert!(recent(Some(now - 360)));
        assert!(!recent(Some(now - 361)));
        assert!(recent(Some(now + 60)));
        assert!(!recent(Some(now + 61)), "a time to come beyond the skew");
        assert!(!recent(None), "an undated sign-in");
        // Extreme values saturate instead of overflowing.
        assert!(!signed_in_within(Some(i64::MIN), 300, 60, now));
        assert!(signed_in_within(Some(i64::MIN), i64::MAX, i64::MAX, now));
    }
}
