//! The Redis store: one set of sessions, pending requests and replay cache shared by every
//! gateway replica that points at the same Redis.
//!
//! # Key layout
//!
//! Every key starts with a namespace derived from the SP entity ID,
//! `saml-gw:{first 16 hex digits of sha256(entity_id)}`, so that two deployments sharing one
//! Redis never read each other's entries (the gateway also checks the record's entity ID).
//! Bearer values never appear in a key: sessions, pending requests and assertions are keyed by
//! the SHA-256 (hex) of their ID, so a `KEYS`/`MONITOR` view of Redis yields nothing usable.
//!
//! | key | value | expiry |
//! | --- | --- | --- |
//! | `{ns}:session:{sha256(session id)}` | [`SessionRecord`] as JSON, sealed with [`RecordKeys`] when set | min(idle deadline, absolute end) + [`EXPIRED_RECORD_SECS`] |
//! | `{ns}:ended:{sha256(session id)}` | the [`EndReason`] code of an ended session | [`END_MARKER_SECS`] |
//! | `{ns}:pending:{sha256(RelayState token)}` | pending request and its deadline, JSON | the deadline |
//! | `{ns}:pending-order` | sorted set of the pending hashes, scored by their deadline | the last one's deadline |
//! | `{ns}:assertion:{sha256(assertion ID)}` | `1` | the assertion's `NotOnOrAfter` |
//! | `{ns}:user:{sha256(NameID)}` | set of the user's session hashes | the latest absolute end + [`EXPIRED_RECORD_SECS`] |
//!
//! The `user` set is the index that Single Logout and revocation use to find every session of
//! a NameID on every replica ([`RedisStore::revoke_sessions_of_user`]). A session record
//! outlives its deadline by [`EXPIRED_RECORD_SECS`] so that the expiry can be reported (once:
//! the lookup that reports it deletes it, and only the one whose `DEL` removed the key reports).
//!
//! # Atomicity
//!
//! Pending requests are taken with `GETDEL` (one use even when two replicas race), assertion IDs
//! are recorded with `SET .. NX EX` (of two concurrent calls exactly one wins), and a session is
//! written together with its index entry in one `MULTI`.
//!
//! # Pending requests are capped
//!
//! Anyone can start a login, so pending requests must not grow until Redis is full (with
//! `noeviction`, every write then fails, signed-in users' included). About
//! [`MAX_PENDING`] are kept: one script drops those past their deadline from
//! `{ns}:pending-order`, gives up the oldest (by deadline, to the second; among those of one
//! second, any) when it is still full, and writes the new one,
//! so the cap holds across replicas. A user whose pending login gave way starts again. The cap
//! is approximate: deadlines are the writers' clocks, so a replica whose clock runs ahead drops
//! others' entries from the order a little early, and a replica of a version before the cap
//! writes entries the order does not count. The order key lives until its last deadline.
//!
//! # The idle-refresh rule
//!
//! Sliding the idle timeout on every request would turn every read into a write. Instead, a
//! read rewrites `last_seen` and the key's expiry only when more than the *refresh interval*
//! has passed since the stored `last_seen`: a tenth of the idle timeout or 60 s, whichever is
//! smaller (at least 1 s). So a busy session costs one write (a script) per interval, and a
//! session ends at most one refresh interval earlier than a strict sliding timeout would end
//! it. The rewrite changes only `last_seen` in the record as stored, keeping fields this version
//! does not know (a newer replica's, during a rolling upgrade), and happens only while the key
//! still holds the value read, so a session deleted meanwhile (logout on another replica) is
//! never brought back and another replica's refresh is not overwritten.
//!
//! # Time and failures
//!
//! Liveness is decided from the record and the caller's `now`, exactly as in the memory store;
//! Redis expiries (relative, from the same `now`) only collect what nobody reads again. A record
//! of an unknown version or that does not decode reads as logged out and is left in place (a
//! newer replica may be writing it during a rolling upgrade). Every Redis error is
//! [`StoreError::Unavailable`]; the connection manager reconnects on the next request.
//!
//! # A new password or new TLS files without a restart
//!
//! [`RedisStore::renew`] opens a connection with renewed [`RedisAccess`] (a rotated password, a
//! renewed client certificate or CA) and, once the server has answered a `PING` over it, puts
//! it in force for every later operation; the invalidation subscription subscribes again with
//! it within 5 seconds. Operations under way finish on the connection they started with. A
//! renewal that fails changes nothing.
//!
//! # Where the code is
//!
//! This file holds the store itself, its connection and key names; [`connect`] opens
//! connections, [`records`] seals, reads and classifies session records, [`store_impl`] is the
//! [`Store`] implementation, [`admin`] the administrator's operations and [`invalidation`] the
//! session cache's pub/sub channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::cache::{SessionCache, CACHE_TTL};
use crate::seal::RecordKeys;
use crate::sentinel::SentinelUrl;
use crate::{SessionTimeouts, StoreError};

// Named only in doc links, which do not count as a use outside rustdoc.
#[cfg(doc)]
use crate::{EndReason, SessionRecord, Store, StoreCounters, END_MARKER_SECS, EXPIRED_RECORD_SECS};

/// Lua for ending one session inside a script: removes the record and, when there was one,
/// leaves the end marker with the reason, atomically. Shared by logout and revocation.
macro_rules! end_session_lua {
    () => {
        "local function end_session(session_key, marker_key, reason, secs) \
           local v = redis.call('GETDEL', session_key) \
           if v then redis.call('SET', marker_key, reason, 'EX', secs) end \
           return v \
         end "
    };
}

mod admin;
mod connect;
mod invalidation;
mod records;
mod store_impl;

pub use admin::StoredSession;
pub(crate) use connect::{client_for, describe, open_connection, redact};
pub use connect::{RedisAccess, RedisConnectError, RedisTls};

use connect::open;
use invalidation::{follow_invalidations, invalidation_channel};

/// Most pending login requests kept in Redis, for all replicas together: about 200 MB at most.
pub(crate) const MAX_PENDING: usize = 100_000;

/// Sessions, pending requests and replay cache in Redis (see the module documentation).
#[derive(Clone)]
pub struct RedisStore {
    /// The connection in force; replaced whole by [`RedisStore::renew`].
    connection: Arc<ArcSwap<ConnectionManager>>,
    /// The client the invalidation subscription connects with, replaced along with it.
    client: Arc<ArcSwap<redis::Client>>,
    /// The password and TLS settings the connection in force was made with.
    access: Arc<ArcSwap<RedisAccess>>,
    /// Held while a connection is replaced (a renewal, a new master), one at a time.
    replacing: Arc<tokio::sync::Mutex<()>>,
    /// The server's URL (its password included: never logged), for a renewal.
    url: Arc<str>,
    namespace: String,
    /// Most pending requests kept ([`MAX_PENDING`] unless set for a test).
    max_pending: usize,
    timeouts: SessionTimeouts,
    /// Records read recently, dropped when any replica ends their session.
    cache: Arc<SessionCache>,
    /// The secrets that seal session records (see [`crate::seal`]); `None`: records are plain.
    /// Replaced whole by [`RedisStore::set_record_keys`].
    record_keys: Arc<ArcSwapOption<RecordKeys>>,
    /// What the metrics show, shared by every clone.
    counters: Arc<Counters>,
}

/// The live counts behind [`StoreCounters`].
#[derive(Default)]
pub(crate) struct Counters {
    records_refused: AtomicU64,
    /// When a refused record was last warned of, in seconds since the Unix epoch (0: never).
    refusal_warned_at: AtomicU64,
    /// Incremented by the failover watch.
    pub(crate) master_changes: AtomicU64,
    renewals: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (with `access`) for the deployment
    /// whose SP entity ID is `sp_entity_id`. Fails when the URL is bad or the server does not
    /// answer a `PING`.
    pub async fn connect(
        url: &str,
        access: &RedisAccess,
        sp_entity_id: &str,
        timeouts: SessionTimeouts,
    ) -> Result<RedisStore, RedisConnectError> {
        Self::connect_with_cache(url, access, sp_entity_id, timeouts, CACHE_TTL).await
    }

    /// [`RedisStore::connect`] with the session cache's entries living `cache_ttl`
    /// (see [`crate::cache`]); zero switches the cache off.
    pub async fn connect_with_cache(
        url: &str,
        access: &RedisAccess,
        sp_entity_id: &str,
        timeouts: SessionTimeouts,
        cache_ttl: Duration,
    ) -> Result<RedisStore, RedisConnectError> {
        let (client, connection) = open(url, access).await?;
        let client = Arc::new(ArcSwap::from_pointee(client));
        let namespace = namespace_for(sp_entity_id);
        let cache = if cache_ttl.is_zero() {
            Arc::new(SessionCache::default())
        } else {
            let cache = SessionCache::new(cache_ttl);
            let channel = invalidation_channel(&namespace);
            follow_invalidations(client.clone(), channel, cache.clone());
            cache
        };
        let store = RedisStore {
            connection: Arc::new(ArcSwap::from_pointee(connection)),
            client,
            access: Arc::new(ArcSwap::from_pointee(access.clone())),
            replacing: Arc::default(),
            url: url.into(),
            namespace,
            max_pending: MAX_PENDING,
            timeouts,
            cache,
            record_keys: Arc::default(),
            counters: Arc::default(),
        };
        if let Some(Ok(sentinel)) = SentinelUrl::parse(url) {
            let master = store.client.load().get_connection_info().addr.clone();
            tracing::info!(
                master = %crate::sentinel::shown_addr(&master),
                "Redis Sentinel: connected to the master the sentinels name"
            );
            crate::failover::follow_master(
                crate::failover::Watched {
                    connection: Arc::downgrade(&store.connection),
                    client: store.client.clone(),
                    access: store.access.clone(),
                    replacing: store.replacing.clone(),
                    cache: Arc::downgrade(&store.cache),
                    counters: store.counters.clone(),
                },
                sentinel,
            );
        }
        Ok(store)
    }

    /// Connects again with `access` (a rotated password or renewed TLS files for the same
    /// server) and, once the server answers over the new connection, uses it for everything
    /// from now on; on failure the connection in force stays. Every clone of this store follows.
    pub async fn renew(&self, access: &RedisAccess) -> Result<(), RedisConnectError> {
        let _one_at_a_time = self.replacing.lock().await;
        let (client, connection) = open(&self.url, access).await?;
        // Behind Sentinel the renewal may reach a new master: no cache until the subscription
        // is on the new connection (turned off before and after, see `follow_invalidations`).
        self.cache.set_enabled(false);
        self.connection.store(Arc::new(connection));
        self.client.store(Arc::new(client));
        self.access.store(Arc::new(access.clone()));
        self.cache.set_enabled(false);
        self.counters.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A handle on the connection in force, for one operation.
    fn connection(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.connection.load())
    }

    /// The same store sealing its session records with `keys` and reading only records that
    /// one of them sealed (see [`RecordKeys`]); `None`: plain records.
    pub fn with_record_keys(self, keys: Option<RecordKeys>) -> RedisStore {
        self.set_record_keys(keys);
        self
    }

    /// Puts `keys` in force for every clone of this store (new keys read on SIGHUP); returns
    /// whether they differ from the keys in force.
    pub fn set_record_keys(&self, keys: Option<RecordKeys>) -> bool {
        let keys = keys.map(Arc::new);
        let old = self.record_keys.swap(keys.clone());
        old != keys
    }

    /// The same store with at most `max_pending` pending requests (at least 1).
    pub fn with_max_pending(mut self, max_pending: usize) -> RedisStore {
        self.max_pending = max_pending.max(1);
        self
    }

    /// The sorted set of the pending requests' hashes, scored by their deadline.
    fn pending_order_key(&self) -> String {
        format!("{}:pending-order", self.namespace)
    }

    /// The key prefix of this deployment, `saml-gw:{16 hex digits}`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key of the session record whose ID hashes to `hash`.
    fn session_key(&self, hash: &str) -> String {
        format!("{}:session:{hash}", self.namespace)
    }

    /// The key of the end marker of the session whose ID hashes to `hash`.
    fn ended_key(&self, hash: &str) -> String {
        format!("{}:ended:{hash}", self.namespace)
    }

    /// The key of the index of the sessions of the user with this NameID.
    fn user_key(&self, name_id: &str) -> String {
        format!("{}:user:{}", self.namespace, sha256_hex(name_id))
    }
}

/// The key prefix of the deployment whose SP entity ID is `sp_entity_id`.
fn namespace_for(sp_entity_id: &str) -> String {
    format!("saml-gw:{}", &sha256_hex(sp_entity_id)[..16])
}

/// SHA-256 of `value` in lower-case hex, the form in which IDs, tokens and names appear in
/// keys.
fn sha256_hex(value: &str) -> String {
    crate::hex(&Sha256::digest(value.as_bytes()))
}

/// A Redis error as every operation reports it: logged, then [`StoreError::Unavailable`].
fn unavailable(error: redis::RedisError) -> StoreError {
    // The error text carries no key contents or credentials; it helps find an outage.
    tracing::warn!(error = %error, "session store (Redis) error");
    StoreError::Unavailable
}

/// Seconds as a Redis `EX` argument (Redis refuses 0 and negative expiries).
fn expiry(seconds: i64) -> u64 {
    u64::try_from(seconds.max(1)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_lower_case_hex_sha256() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_hex("").len(), 64);
    }

    #[test]
    fn namespace_depends_on_the_entity_id_only() {
        assert_eq!(namespace_for("https://a/"), namespace_for("https://a/"));
        assert_ne!(namespace_for("https://a/"), namespace_for("https://b/"));
        assert_eq!(namespace_for("x").len(), "saml-gw:".len() + 16);
    }
}
