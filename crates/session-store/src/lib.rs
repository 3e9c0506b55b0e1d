//! State the gateway keeps between requests: sessions, pending login requests and the replay
//! cache of assertion IDs.
//!
//! The [`Store`] trait is what the gateway talks to; [`MemoryStore`] is the embedded default for a
//! single instance. [`RedisStore`] is the shared backend: a second implementation of the same
//! trait, so that several replicas see one set of sessions and one replay cache.
//!
//! Timestamps are Unix seconds passed in by the caller, so that tests control the clock.
//!
//! # How a session ends, and how others learn of it
//!
//! A session ends by timeout (idle, absolute or `SessionNotOnOrAfter`) or by being ended
//! ([`Store::delete_session`], [`RedisStore::revoke_sessions_of_user`]). Both stores tell the
//! two apart for a while afterwards, so that whoever holds a WebSocket of the session can say
//! why it closes ([`SessionState`]):
//! - an expired record stays in the store for [`EXPIRED_RECORD_SECS`] after its deadline (never
//!   live again). The first [`Store::use_session`] that finds it removes it and reports
//!   [`SessionState::Expired`]; later lookups find nothing. So one expiry is reported once.
//! - an ended session leaves a marker with its [`EndReason`] for [`END_MARKER_SECS`].
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod cache;
mod failover;
mod memory;
mod record;
mod redis;
mod seal;
mod sentinel;

pub use crate::redis::StoredSession;
pub use crate::redis::{RedisAccess, RedisConnectError, RedisStore, RedisTls};
pub use crate::seal::{RecordKeys, MIN_KEY_BYTES};
pub use memory::{MemoryLimits, MemoryStore};
pub use record::{
    groups, signed_in_within, Groups, PendingRequest, SessionId, SessionRecord, SESSION_VERSION,
};

/// Unix time in seconds.
pub type UnixTime = i64;

/// A store operation failed; the caller answers 503 and fails logins closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is full (memory limits reached).
    #[error("the session store is full")]
    Full,
    /// The backend could not be reached or answered an error.
    #[error("the session store is unavailable")]
    Unavailable,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// A session unused for this many seconds ends.
    pub idle: i64,
    /// A session ends this many seconds after login whatever its use.
    pub max_lifetime: i64,
}

impl SessionTimeouts {
    /// When `record` stops being live unless used again: the earlier of its idle deadline and
    /// its absolute end.
    pub fn deadline(&self, record: &SessionRecord) -> UnixTime {
        record
            .expires_at
            .min(record.last_seen.saturating_add(self.idle))
    }

    /// How long a session's `last_seen` may lag behind its use, in seconds: a tenth of the idle
    /// timeout, at most 60 s, at least 1 s. Writing it at every request would cost a copy of
    /// the record (memory) or a write (Redis) per request; the idle timeout is that much less
    /// exact.
    pub fn refresh_interval(&self) -> i64 {
        (self.idle / 10).clamp(1, 60)
    }

    /// True when `record` is of the current format and before its deadline at `now`.
    pub fn is_live(&self, record: &SessionRecord, now: UnixTime) -> bool {
        record.version == SESSION_VERSION && now < self.deadline(record)
    }
}

/// How long an expired session record is kept (never live again) so that the next lookup can
/// report the expiry, in seconds.
pub const EXPIRED_RECORD_SECS: i64 = 3600;

/// How long the marker of an ended session (logout, revocation) is kept, in seconds. Longer
/// than any WebSocket check interval, including a store outage's grace period.
pub const END_MARKER_SECS: i64 = 300;

/// Why a session was ended before its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The user signed out.
    Logout,
    /// An administrator revoked it (`saml-gateway sessions revoke`).
    Admin,
    /// The same browser signed in again; its old session ended.
    Relogin,
    /// The login that made it could not be completed (its audit record was not written).
    Aborted,
    /// The IdP ended the user's sessions (a Single Logout request).
    Slo,
}

impl EndReason {
    /// A stable code, used as the audit `reason`.
    pub fn code(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Admin => "admin",
            EndReason::Relogin => "relogin",
            EndReason::Aborted => "login_aborted",
            EndReason::Slo => "slo",
        }
    }

    /// The reason with this code.
    pub fn from_code(code: &str) -> Option<EndReason> {
        [
            EndReason::Logout,
            EndReason::Admin,
            EndReason::Relogin,
            EndReason::Aborted,
            EndReason::Slo,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// What a look at a session ID found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// The session is live.
    Live(std::sync::Arc<SessionRecord>),
    /// The session passed its idle or absolute timeout.
    Expired(std::sync::Arc<SessionRecord>),
    /// The session was ended before its time, for this reason.
    Ended(EndReason),
    /// Nothing is known of this ID (never issued, long gone, or of an unknown record format).
    Gone,
    /// A record is stored under this ID, but no key of `sessions.redis_record_key_file`
    /// sealed it there (written without the key, or copied from another ID): signed out, and
    /// worth an audit record. Only a Redis store with record keys reports it.
    Refused,
}

impl SessionState {
    /// The record when live.
    pub fn into_live(self) -> Option<std::sync::Arc<SessionRecord>> {
        match self {
            SessionState::Live(record) => Some(record),
            _ => None,
        }
    }
}

/// What a store counted since it was opened, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounters {
    /// Session records refused because no key of the store sealed them (forged, copied under
    /// another ID, or written without the key).
    pub records_refused: u64,
    /// Times the store moved to a new Redis master after a Sentinel failover.
    pub master_changes: u64,
    /// Times a renewal (a new password or new TLS files, on SIGHUP) put a connection in force.
    pub renewals: u64,
}

/// Sessions, pending requests and the replay cache behind one interface.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// What the store counted since it was opened; zeros for a store that counts nothing.
    fn counters(&self) -> StoreCounters {
        StoreCounters::default()
    }

    /// Stores a new session under a fresh random ID and returns the ID. The session ends at the
    /// earlier of `now + max_lifetime` and `record.expires_at` when that is set.
    async fn create_session(
        &self,
        record: SessionRecord,
        now: UnixTime,
    ) -> Result<SessionId, StoreError>;

    /// Looks a session up for a request and, when live, marks it used at `now` (sliding the
    /// idle timeout). An expired record is removed as it is reported, so that of all lookups,
    /// on every replica, exactly one sees [`SessionState::Expired`].
    async fn use_session(&self, id: &SessionId, now: UnixTime) -> Result<SessionState, StoreError>;

    /// Returns the live session with this ID and marks it used at `now`; `None` when it does not
    /// exist, was ended or has passed its idle or absolute timeout.
    async fn get_session(
        &self,
        id: &SessionId,
        now: UnixTime,
    ) -> Result<Option<std::sync::Arc<SessionRecord>>, StoreError> {
        Ok(self.use_session(id, now).await?.into_live())
    }

    /// Looks at a session without using it: never slides the idle timeout and never removes
    /// anything. For watchers such as an open WebSocket; one round trip for Redis.
    async fn session_alive(
        &self,
        id: &SessionId,
        now: UnixTime,
    ) -> Result<SessionState, StoreError>;

    /// Ends a session and leaves a marker with `reason` (see [`END_MARKER_SECS`]); returns the
    /// session when it existed.
    async fn delete_session(
        &self,
        id: &SessionId,
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Ends, on every replica, each live session that IdP `idp` made for the NameID `name_id`
    /// with a SessionIndex among `session_indexes` (every such session when the list is
    /// empty), leaving a marker with `reason`; returns the sessions ended (Single Logout).
    async fn end_sessions_of_subject(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError>;

    /// Records a pending login request under `token` until `expires_at`.
    async fn put_pending(
        &self,
        token: &str,
        request: PendingRequest,
        expires_at: UnixTime,
    ) -> Result<(), StoreError>;

    /// Removes and returns the pending request under `token` (one use), when still valid.
    async fn take_pending(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Option<PendingRequest>, StoreError>;

    /// Records an assertion ID until `expires_at`; `true` when it had not been seen before.
    /// Atomic: of two concurrent calls with one ID, exactly one gets `true`.
    async fn first_use_of_assertion(
        &self,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError>;
}

/// The name of a session in audit records, logs and listings: the first 96 bits of the SHA-256
/// of its ID, in hex. Never the ID, which is a bearer credential.
pub fn session_hash(id: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(id.as_bytes())[..12])
}

/// `bytes` in lower-case hex, written digit by digit (a `format!` per byte cost about 600
/// instructions each, on the Redis store's every session lookup; docs/performance.md).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Draws `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| StoreError::Random)?;
    Ok(bytes)
}

/// A random URL-safe token of 256 bits (43 characters).
pub fn random_token() -> Result<String, StoreError> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}
