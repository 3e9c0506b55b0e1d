//! State the gateway keeps between requests: sessions, pending login requests and the replay
//! cache of assertion IDs.
//!
//! The [`Store`] trait is what the gateway talks to; [`MemoryStore`] is the embedded default for a
//! single instance. [`RedisStore`] is the shared backend: a second implementation of the same
//! trait, so that several replicas see one set of sessions and one replay cache.
//!
//! Timestamps are Unix seconds passed in by the caller, so that tests control the clock.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

mod memory;
mod record;
mod redis;

pub use crate::redis::{RedisConnectError, RedisStore};
pub use memory::{MemoryLimits, MemoryStore};
pub use record::{PendingRequest, SessionId, SessionRecord, SESSION_VERSION};

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

/// Sessions, pending requests and the replay cache behind one interface.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new session under a fresh random ID and returns the ID. The session ends at the
    /// earlier of `now + max_lifetime` and `record.expires_at` when that is set.
    async fn create_session(
        &self,
        record: SessionRecord,
        now: UnixTime,
    ) -> Result<SessionId, StoreError>;

    /// Returns the live session with this ID and marks it used at `now`; `None` when it does not
    /// exist or has passed its idle or absolute timeout.
    async fn get_session(
        &self,
        id: &SessionId,
        now: UnixTime,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Ends a session; returns it when it existed.
    async fn delete_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;

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
