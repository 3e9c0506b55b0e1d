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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{SessionCache, CACHE_TTL};
use crate::record::SESSION_VERSION;
use crate::seal::{self, RecordKeys};
use crate::sentinel::SentinelUrl;
use crate::{
    EndReason, PendingRequest, SessionId, SessionRecord, SessionState, SessionTimeouts, Store,
    StoreCounters, StoreError, UnixTime, END_MARKER_SECS, EXPIRED_RECORD_SECS,
};
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

/// Lua for the idle refresh: writes `ARGV[2]` with an expiry of `ARGV[3]` seconds, only while
/// the key still holds `ARGV[1]` (the value read); 1 written, 2 changed meanwhile (left as it
/// is), 0 gone.
const REFRESH_LUA: &str = "local v = redis.call('GET', KEYS[1]) \
     if not v then return 0 end \
     if v ~= ARGV[1] then return 2 end \
     redis.call('SET', KEYS[1], ARGV[2], 'XX', 'EX', ARGV[3]) \
     return 1";

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection attempts after the first one, each time a connection is needed. Kept small so
/// that during an outage a request fails in about a second (503) instead of queueing.
const CONNECT_RETRIES: usize = 1;
/// Longest pause between connection attempts, in milliseconds.
const CONNECT_RETRY_DELAY_MS: u64 = 500;

/// The store could not be opened at start-up. Messages name the server (address and database)
/// but never the password.
#[derive(Debug, thiserror::Error)]
pub enum RedisConnectError {
    /// The URL is not one this build can use.
    #[error(
        "not a Redis URL such as redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB] or \
         redis[s]+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB] ({0})"
    )]
    InvalidUrl(&'static str),
    /// The TLS settings cannot be used with the URL, or their certificates do not parse.
    #[error("the Redis TLS settings cannot be used: {0}")]
    InvalidTls(&'static str),
    /// The server did not answer, refused the connection or refused the credentials.
    #[error("cannot connect to Redis at {address}: {reason}")]
    Unreachable {
        /// Address and database, without credentials.
        address: String,
        /// Why, with any occurrence of the password removed.
        reason: String,
    },
}

/// What a `rediss://` connection trusts and shows beyond the defaults (the system's trusted
/// roots, no client certificate), as PEM. Its `Debug` shows what is set, never the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// Certificates trusted for the server, instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A certificate chain and its private key, for a server that asks clients for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// What a connection to Redis signs in with and trusts beyond its URL, as read from files that
/// may be renewed without a restart ([`RedisStore::renew`]). Its `Debug` shows what is set,
/// never the password or the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAccess {
    /// The password, in place of the URL's, sent with the URL's user name (or `default`).
    pub password: Option<String>,
    /// For a `rediss://` URL: what the connection trusts and shows beyond the defaults.
    pub tls: Option<RedisTls>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("password", &self.password.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

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

/// Seconds between two warnings of a refused session record.
const REFUSAL_WARN_EVERY: u64 = 60;

/// Whether a refusal at `now` (seconds since the Unix epoch) is warned of: the first, and then
/// one at most every [`REFUSAL_WARN_EVERY`]; `warned_at` records the last one warned of.
fn warning_due(warned_at: &AtomicU64, now: u64) -> bool {
    let last = warned_at.load(Ordering::Relaxed);
    (last == 0 || now >= last.saturating_add(REFUSAL_WARN_EVERY))
        && warned_at
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Seconds since the Unix epoch (0 for a clock set before it).
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A session as listed or revoked by an administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 (hex) of the session ID: the key's suffix. Audit records show its first 24 hex
    /// digits. Never the ID itself.
    pub hash: String,
    /// The session.
    pub record: SessionRecord,
}

/// A pending request as stored, with its deadline (the key's expiry is only a clean-up).
#[derive(Serialize, Deserialize)]
struct StoredPending {
    request: PendingRequest,
    expires_at: UnixTime,
}

impl RedisStore {
    /// Checks that `url` (with `access`) is a Redis server this build can connect to, without
    /// connecting; returns a description of the server that is safe to log (no credentials).
    pub fn check_url(url: &str, access: &RedisAccess) -> Result<String, RedisConnectError> {
        match SentinelUrl::parse(url) {
            Some(sentinel) => {
                let sentinel = sentinel?;
                // The client the master will get, built now to check the settings.
                let master = sentinel.master_info(("localhost".to_string(), 6379), access);
                client_for(master, access.tls.as_ref())?;
                Ok(sentinel.describe())
            }
            None => open_client(url, access).map(|client| describe(&client)),
        }
    }

    /// Whether `url` reaches Redis over TLS as the client reads it (the parsed address, not
    /// the spelling of the scheme): only then do TLS settings apply.
    pub fn url_takes_tls(url: &str) -> bool {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        if let Some(sentinel) = SentinelUrl::parse(url) {
            return sentinel.is_ok_and(|s| s.tls);
        }
        url.into_connection_info()
            .is_ok_and(|info| matches!(info.addr, ConnectionAddr::TcpTls { .. }))
    }

    /// Whether `url` carries a password (`redis://[USER]:PASSWORD@...`), as the client reads it.
    pub fn url_has_password(url: &str) -> bool {
        use redis::IntoConnectionInfo;
        if let Some(sentinel) = SentinelUrl::parse(url) {
            return sentinel.is_ok_and(|s| s.redis.password.is_some());
        }
        url.into_connection_info()
            .is_ok_and(|info| info.redis.password.is_some())
    }

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

    /// What to store for the record JSON `json` under the session `hash`: sealed when keys are set.
    fn sealed(&self, hash: &str, json: String) -> String {
        seal::seal(
            self.record_keys.load().as_deref(),
            &self.session_key(hash),
            json,
        )
    }

    /// The session record stored under `hash`, when its seal checks (or no keys are set) and
    /// it decodes; otherwise `None`, as for a record of an unknown version.
    fn opened(&self, hash: &str, stored: &str) -> Option<SessionRecord> {
        let key = self.session_key(hash);
        let Some(json) = seal::open(self.record_keys.load().as_deref(), &key, stored) else {
            let refused = self
                .counters
                .records_refused
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            let session = hash.get(..24).unwrap_or(hash);
            // A forger who can write to Redis, or a key turned on over plain records, could
            // otherwise fill the log at the request rate; the metric counts every refusal.
            if warning_due(&self.counters.refusal_warned_at, unix_seconds()) {
                tracing::warn!(
                    session,
                    refused_since_start = refused,
                    "a session record in Redis is not sealed with a key of \
                     sessions.redis_record_key_file; it reads as signed out (warned at most \
                     once a minute; saml_gateway_session_records_refused_total counts each)"
                );
            } else {
                tracing::debug!(
                    session,
                    "a session record in Redis is not sealed; signed out"
                );
            }
            return None;
        };
        decode::<SessionRecord>(json, "session")
    }

    /// The same store with at most `max_pending` pending requests (at least 1).
    pub fn with_max_pending(mut self, max_pending: usize) -> RedisStore {
        self.max_pending = max_pending.max(1);
        self
    }

    fn pending_order_key(&self) -> String {
        format!("{}:pending-order", self.namespace)
    }

    fn channel(&self) -> String {
        invalidation_channel(&self.namespace)
    }

    /// Drops the cached records of the sessions a script answered with (`hash, record, ...`).
    fn forget_pairs(&self, flat: &[Vec<u8>]) {
        for pair in flat.chunks_exact(2) {
            self.cache.remove(&String::from_utf8_lossy(&pair[0]));
        }
    }

    /// The key prefix of this deployment, `saml-gw:{16 hex digits}`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The hashes (SHA-256, hex) of the sessions of the user with this NameID that are live at
    /// `now`.
    pub async fn sessions_of_user(
        &self,
        name_id: &str,
        now: UnixTime,
    ) -> Result<Vec<String>, StoreError> {
        let mut c = self.connection();
        let members: Vec<String> = c
            .smembers(self.user_key(name_id))
            .await
            .map_err(unavailable)?;
        let sessions = self.load_sessions(members, now).await?;
        Ok(sessions.into_iter().map(|s| s.hash).collect())
    }

    /// Every session of this deployment that is live at `now`, by user and then login time.
    /// Walks the namespace with `SCAN` (never `KEYS`), so a large store is not blocked.
    pub async fn list_sessions(&self, now: UnixTime) -> Result<Vec<StoredSession>, StoreError> {
        let prefix = format!("{}:session:", self.namespace);
        let mut c = self.connection();
        let mut cursor: u64 = 0;
        let mut hashes = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            hashes.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(str::to_string),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice.
        hashes.sort();
        hashes.dedup();
        let mut sessions = self.load_sessions(hashes, now).await?;
        sessions.sort_by(|a, b| {
            (&a.record.user, a.record.created_at).cmp(&(&b.record.user, b.record.created_at))
        });
        Ok(sessions)
    }

    /// Ends every session of the user with this NameID, on every replica, leaving an end marker
    /// with `reason` for each; returns the sessions that were live at `now`. Atomic: a session
    /// cannot be added to the user's index half-way.
    pub async fn revoke_sessions_of_user(
        &self,
        name_id: &str,
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError> {
        const SCRIPT: &str = concat!(
            end_session_lua!(),
            "local out = {} \
            for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
              local v = end_session(ARGV[1] .. h, ARGV[2] .. h, ARGV[3], ARGV[4]) \
              if v then \
                redis.pcall('PUBLISH', ARGV[5], h) \
                table.insert(out, h) \
                table.insert(out, v) \
              end \
            end \
            redis.call('DEL', KEYS[1]) \
            return out"
        );
        let mut c = self.connection();
        // Bytes, not strings: one undecodable value must not hide the revocations that the
        // script has already carried out.
        let flat: Vec<Vec<u8>> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(self.user_key(name_id))
            .arg(format!("{}:session:", self.namespace))
            .arg(format!("{}:ended:", self.namespace))
            .arg(reason.code())
            .arg(END_MARKER_SECS)
            .arg(self.channel())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        self.forget_pairs(&flat);
        Ok(self.live_pairs(&flat, now))
    }

    /// The sessions of a script's flat `hash, record, hash, record, ...` answer that were live
    /// at `now`; a record that does not decode is left out.
    fn live_pairs(&self, flat: &[Vec<u8>], now: UnixTime) -> Vec<StoredSession> {
        flat.chunks_exact(2)
            .filter_map(|pair| {
                let hash = String::from_utf8_lossy(&pair[0]);
                let record = self.opened(&hash, &String::from_utf8_lossy(&pair[1]))?;
                self.timeouts.is_live(&record, now).then(|| StoredSession {
                    hash: hash.into_owned(),
                    record,
                })
            })
            .collect()
    }

    /// Ends every session of the user with this NameID (an administrator's revocation) and
    /// returns how many were live at `now`.
    pub async fn delete_sessions_of_user(
        &self,
        name_id: &str,
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        Ok(self
            .revoke_sessions_of_user(name_id, EndReason::Admin, now)
            .await?
            .len())
    }

    /// The sessions under these hashes that are live at `now`, read in one round trip.
    async fn load_sessions(
        &self,
        hashes: Vec<String>,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let mut out = Vec::new();
        let mut c = self.connection();
        for batch in hashes.chunks(500) {
            let keys: Vec<String> = batch.iter().map(|h| self.session_key(h)).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            for (hash, value) in batch.iter().zip(values) {
                let Some(record) = value.and_then(|stored| self.opened(hash, &stored)) else {
                    continue;
                };
                if self.timeouts.is_live(&record, now) {
                    out.push(StoredSession {
                        hash: hash.clone(),
                        record,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Reads a session record and its end marker in one round trip: the record when it opens
    /// and decodes, the value as stored, and the end reason.
    async fn look(
        &self,
        hash: &str,
    ) -> Result<(Option<SessionRecord>, Option<String>, Option<EndReason>), StoreError> {
        let mut c = self.connection();
        let (record, ended): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(self.session_key(hash))
            .arg(self.ended_key(hash))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok((
            record
                .as_deref()
                .and_then(|stored| self.opened(hash, stored)),
            record,
            ended.as_deref().and_then(EndReason::from_code),
        ))
    }

    fn session_key(&self, hash: &str) -> String {
        format!("{}:session:{hash}", self.namespace)
    }

    fn ended_key(&self, hash: &str) -> String {
        format!("{}:ended:{hash}", self.namespace)
    }

    fn user_key(&self, name_id: &str) -> String {
        format!("{}:user:{}", self.namespace, sha256_hex(name_id))
    }

    fn live(&self, record: &SessionRecord, now: UnixTime) -> bool {
        self.timeouts.is_live(record, now)
    }

    /// Seconds from `now` until the session stops being live: the earlier of the idle deadline
    /// and the absolute end. Its key is kept [`EXPIRED_RECORD_SECS`] longer.
    fn session_ttl(&self, record: &SessionRecord, now: UnixTime) -> i64 {
        self.timeouts.deadline(record).saturating_sub(now)
    }

    /// What a record and end marker read by [`RedisStore::look`] mean at `now`.
    fn classify(
        &self,
        (record, present, ended): (Option<SessionRecord>, bool, Option<EndReason>),
        now: UnixTime,
    ) -> SessionState {
        match record {
            Some(record) if self.live(&record, now) => SessionState::Live(Arc::new(record)),
            Some(record) if record.version == SESSION_VERSION => {
                SessionState::Expired(Arc::new(record))
            }
            // Another format (a newer replica) or undecodable: logged out, left in place.
            Some(_) => SessionState::Gone,
            None if present => SessionState::Gone,
            None => ended.map_or(SessionState::Gone, SessionState::Ended),
        }
    }

    /// See the module documentation and [`SessionTimeouts::refresh_interval`].
    fn refresh_interval(&self) -> i64 {
        self.timeouts.refresh_interval()
    }
}

/// The client for `url`: `redis://` (or a Unix socket) in plain TCP, `rediss://` over TLS,
/// verified against `access`'s CA or else the system's roots, never unverified (`#insecure`);
/// `access`'s password, when set, in place of the URL's.
fn open_client(url: &str, access: &RedisAccess) -> Result<redis::Client, RedisConnectError> {
    use redis::IntoConnectionInfo;
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !matches!(scheme, "redis" | "redis+unix" | "unix" | "rediss") {
        return Err(RedisConnectError::InvalidUrl(
            "the scheme must be redis:// or rediss://",
        ));
    }
    let mut info = url
        .into_connection_info()
        .map_err(|_| RedisConnectError::InvalidUrl("the URL does not parse"))?;
    if let Some(password) = &access.password {
        info.redis.password = Some(password.clone());
    }
    client_for(info, access.tls.as_ref())
}

/// The client for `info`: over TLS when its address says so, verified against `tls`'s CA or
/// else the system's roots, never unverified; TLS settings for a plain address are refused.
pub(crate) fn client_for(
    info: redis::ConnectionInfo,
    tls: Option<&RedisTls>,
) -> Result<redis::Client, RedisConnectError> {
    use redis::ConnectionAddr;
    // TLS or not as the connection will be made: from the parsed address.
    match info.addr {
        ConnectionAddr::TcpTls { insecure: true, .. } => Err(RedisConnectError::InvalidUrl(
            "#insecure would accept any server certificate; name the server's CA in the TLS \
             settings instead",
        )),
        ConnectionAddr::TcpTls { .. } => {
            let tls = tls.cloned().unwrap_or_default();
            let certificates = redis::TlsCertificates {
                client_tls: tls
                    .client
                    .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                root_cert: tls.ca_pem,
            };
            redis::Client::build_with_tls(info, certificates).map_err(|_| {
                RedisConnectError::InvalidTls("a certificate or the key does not parse")
            })
        }
        _ if tls.is_some() => Err(RedisConnectError::InvalidTls(
            "TLS settings need a rediss:// or rediss+sentinel:// URL",
        )),
        _ => redis::Client::open(info)
            .map_err(|_| RedisConnectError::InvalidUrl("the URL does not parse")),
    }
}

/// A client for `url` and a connection through it that has answered a `PING`; behind Sentinel,
/// to the master the sentinels name now.
async fn open(
    url: &str,
    access: &RedisAccess,
) -> Result<(redis::Client, ConnectionManager), RedisConnectError> {
    match SentinelUrl::parse(url) {
        None => {
            let client = open_client(url, access)?;
            let connection = open_connection(&client).await?;
            Ok((client, connection))
        }
        Some(sentinel) => {
            let sentinel = sentinel?;
            let master = sentinel.master(access).await?;
            crate::sentinel::open_master(&sentinel, master, access).await
        }
    }
}

/// A managed connection through `client` that has answered a `PING`.
pub(crate) async fn open_connection(
    client: &redis::Client,
) -> Result<ConnectionManager, RedisConnectError> {
    let address = describe(client);
    let password = client.get_connection_info().redis.password.clone();
    let unreachable = |e: redis::RedisError| RedisConnectError::Unreachable {
        address: address.clone(),
        reason: redact(&e.to_string(), password.as_deref()),
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(CONNECT_RETRIES)
        .set_max_delay(CONNECT_RETRY_DELAY_MS);
    let mut connection = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(unreachable)?;
    // The handshake alone does not prove the credentials work on every server version.
    redis::cmd("PING")
        .query_async::<()>(&mut connection)
        .await
        .map_err(unreachable)?;
    Ok(connection)
}

/// `127.0.0.1:6379, database 0`: where the store is, without credentials.
pub(crate) fn describe(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    let address = crate::sentinel::shown_addr(&info.addr);
    format!("{address}, database {}", info.redis.db)
}

/// Removes the password from a message, should a library ever echo it.
pub(crate) fn redact(message: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => message.replace(p, "***"),
        _ => message.to_string(),
    }
}

fn namespace_for(sp_entity_id: &str) -> String {
    format!("saml-gw:{}", &sha256_hex(sp_entity_id)[..16])
}

/// SHA-256 of `value` in lower-case hex, the form in which IDs, tokens and names appear in
/// keys.
fn sha256_hex(value: &str) -> String {
    crate::hex(&Sha256::digest(value.as_bytes()))
}

fn unavailable(error: redis::RedisError) -> StoreError {
    // The error text carries no key contents or credentials; it helps find an outage.
    tracing::warn!(error = %error, "session store (Redis) error");
    StoreError::Unavailable
}

/// Seconds as a Redis `EX` argument (Redis refuses 0 and negative expiries).
fn expiry(seconds: i64) -> u64 {
    u64::try_from(seconds.max(1)).unwrap_or(1)
}

/// The pub/sub channel on which every end of a session of this deployment is announced.
fn invalidation_channel(namespace: &str) -> String {
    format!("{namespace}:invalidate")
}

/// Keeps `cache` in step with the invalidation channel for as long as the store lives: while
/// subscribed, each announced session hash is dropped; while not, the cache is off and empty.
/// The announcements are published with `pcall`, so a Redis that refuses them still ends the
/// sessions (the cache then relies on its TTL).
fn follow_invalidations(
    client: Arc<ArcSwap<redis::Client>>,
    channel: String,
    cache: Arc<SessionCache>,
) {
    use futures_util::StreamExt;
    let weak = Arc::downgrade(&cache);
    drop(cache);
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            // Every store is gone: stop.
            if weak.strong_count() == 0 {
                return;
            }
            // The client in force: renewed access applies from the next connection.
            let current = client.load_full();
            let mut renewed = false;
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, current.get_async_pubsub()).await;
            if let Ok(Ok(mut pubsub)) = connected {
                if pubsub.subscribe(&channel).await.is_ok() {
                    match weak.upgrade() {
                        Some(cache) => cache.set_enabled(true),
                        None => return,
                    }
                    // A connection put in force meanwhile (a failover): off again, and subscribe
                    // there, or sign-outs announced on it would be missed with the cache on.
                    // (The swap turns the cache off after it, too.)
                    if !Arc::ptr_eq(&current, &client.load()) {
                        if let Some(cache) = weak.upgrade() {
                            cache.set_enabled(false);
                        }
                        continue;
                    }
                    if warned {
                        tracing::info!("session cache: the invalidation subscription is back");
                        warned = false;
                    }
                    let (mut sink, mut messages) = pubsub.split();
                    let mut check = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tokio::select! {
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let Some(cache) = weak.upgrade() else { return };
                                if let Ok(hash) = message.get_payload::<String>() {
                                    cache.remove(&hash);
                                }
                            }
                            _ = check.tick() => {
                                if weak.strong_count() == 0 {
                                    return;
                                }
                                // Renewed access: subscribe again with it, so that the old
                                // certificate or password (rotated out, perhaps) is not used
                                // for as long as this connection lasts.
                                if !Arc::ptr_eq(&current, &client.load()) {
                                    renewed = true;
                                    break;
                                }
                                // A connection that hangs without closing would lose
                                // announcements unseen: it must answer a ping.
                                let pong = tokio::time::timeout(
                                    RESPONSE_TIMEOUT,
                                    sink.ping::<redis::Value>(),
                                )
                                .await;
                                if !matches!(pong, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if let Some(cache) = weak.upgrade() {
                let was_on = cache.is_enabled();
                // Announcements may be missed until the next subscription: no cache meanwhile.
                cache.set_enabled(false);
                if renewed {
                    tracing::info!(
                        "session cache: subscribing again on the connection now in force"
                    );
                    continue;
                }
                if was_on || !warned {
                    tracing::warn!(
                        "session cache: no invalidation subscription to Redis; every request \
                         reads Redis until it is back"
                    );
                    warned = true;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// The stored record `json` with its `last_seen` set to `now` and every other field, known to
/// this version or not, kept; `None` when it is not a JSON object.
fn with_last_seen(json: &str, now: UnixTime) -> Option<String> {
    let mut fields = match serde_json::from_str(json) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => return None,
    };
    fields.insert("last_seen".to_string(), now.into());
    serde_json::to_string(&fields).ok()
}

fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|_| StoreError::Unavailable)
}

/// Decodes a stored value; anything that does not decode is treated as absent.
fn decode<T: for<'de> Deserialize<'de>>(json: &str, what: &str) -> Option<T> {
    match serde_json::from_str(json) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(error = %e, what, "undecodable entry in the session store; ignored");
            None
        }
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn counters(&self) -> StoreCounters {
        let c = &self.counters;
        StoreCounters {
            records_refused: c.records_refused.load(Ordering::Relaxed),
            master_changes: c.master_changes.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
        }
    }

    async fn create_session(
        &self,
        mut record: SessionRecord,
        now: UnixTime,
    ) -> Result<SessionId, StoreError> {
        let id = SessionId::generate()?;
        record.start(now, &self.timeouts);
        let ttl = self.session_ttl(&record, now);
        if ttl <= 0 {
            // Already past SessionNotOnOrAfter: an ID that names nothing.
            return Ok(id);
        }
        let hash = sha256_hex(id.expose());
        let user_key = self.user_key(&record.name_id);
        let user_ttl = expiry(
            record
                .expires_at
                .saturating_sub(now)
                .saturating_add(EXPIRED_RECORD_SECS),
        );
        let mut c = self.connection();
        // The index lives as long as the longest-lived session in it: `NX` sets an expiry on a
        // new set, `GT` lengthens an existing one, and neither ever shortens it.
        redis::pipe()
            .atomic()
            .set_ex(
                self.session_key(&hash),
                self.sealed(&hash, encode(&record)?),
                expiry(ttl.saturating_add(EXPIRED_RECORD_SECS)),
            )
            .ignore()
            .sadd(&user_key, &hash)
            .ignore()
            .cmd("EXPIRE")
            .arg(&user_key)
            .arg(user_ttl)
            .arg("NX")
            .ignore()
            .cmd("EXPIRE")
            .arg(&user_key)
            .arg(user_ttl)
            .arg("GT")
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    async fn use_session(&self, id: &SessionId, now: UnixTime) -> Result<SessionState, StoreError> {
        let hash = sha256_hex(id.expose());
        if let Some(record) = self.cache.get(&hash) {
            // Served from memory while live and while its idle timeout needs no sliding (its
            // `last_seen` lags by less than the refresh interval, as in Redis).
            if self.timeouts.is_live(&record, now)
                && now.saturating_sub(record.last_seen) <= self.refresh_interval()
            {
                return Ok(SessionState::Live(record));
            }
        }
        let key = self.session_key(&hash);
        let ticket = self.cache.ticket();
        let (looked, stored, ended) = self.look(&hash).await?;
        let mut record = match self.classify((looked, stored.is_some(), ended), now) {
            SessionState::Live(record) => record,
            SessionState::Expired(record) => {
                self.cache.remove(&hash);
                // Of every lookup on every replica, only the one whose DEL removes the key
                // reports the expiry.
                let mut c = self.connection();
                let (deleted, ()): (u32, ()) = redis::pipe()
                    .del(&key)
                    .srem(self.user_key(&record.name_id), &hash)
                    .query_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                return Ok(if deleted > 0 {
                    SessionState::Expired(record)
                } else {
                    SessionState::Gone
                });
            }
            other => return Ok(other),
        };
        if now.saturating_sub(record.last_seen) > self.refresh_interval() {
            Arc::make_mut(&mut record).last_seen = now;
            let ttl = expiry(
                self.session_ttl(&record, now)
                    .saturating_add(EXPIRED_RECORD_SECS),
            );
            // Only `last_seen` is changed in the record as stored, so that fields this version
            // does not know (written by a newer replica during a rolling upgrade) stay; and only
            // while the stored value is the one read, so that a logout in between is not undone
            // and another replica's write is not lost (it refreshed the session already).
            // A live record was read from a stored value.
            let Some(stored) = stored else {
                return Ok(SessionState::Gone);
            };
            let json = seal::open(self.record_keys.load().as_deref(), &key, &stored)
                .and_then(|json| with_last_seen(json, now))
                .map_or_else(|| encode(&record), Ok)?;
            let mut c = self.connection();
            let outcome: i64 = redis::cmd("EVAL")
                .arg(REFRESH_LUA)
                .arg(1)
                .arg(&key)
                .arg(&stored)
                .arg(self.sealed(&hash, json))
                .arg(ttl)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            let written = outcome != 0;
            if !written {
                self.cache.remove(&hash);
                return Ok(SessionState::Gone);
            }
        }
        // Cached as Redis holds it, so that the refresh rule keeps counting from the write.
        self.cache.put(&hash, &record, ticket);
        Ok(SessionState::Live(record))
    }

    async fn session_alive(
        &self,
        id: &SessionId,
        now: UnixTime,
    ) -> Result<SessionState, StoreError> {
        let hash = sha256_hex(id.expose());
        let (record, stored, ended) = self.look(&hash).await?;
        Ok(self.classify((record, stored.is_some(), ended), now))
    }

    async fn delete_session(
        &self,
        id: &SessionId,
        reason: EndReason,
        _now: UnixTime,
    ) -> Result<Option<SessionRecord>, StoreError> {
        const SCRIPT: &str = concat!(
            end_session_lua!(),
            "local v = end_session(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) \
             if v then redis.pcall('PUBLISH', ARGV[3], ARGV[4]) end \
             return v"
        );
        let hash = sha256_hex(id.expose());
        self.cache.remove(&hash);
        let mut c = self.connection();
        // One script: a watcher that no longer finds the record finds the reason, and no
        // failure can leave a removed session without its marker.
        let json: Option<Vec<u8>> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg(self.session_key(&hash))
            .arg(self.ended_key(&hash))
            .arg(reason.code())
            .arg(END_MARKER_SECS)
            .arg(self.channel())
            .arg(&hash)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let Some(json) = json else {
            return Ok(None);
        };
        let Some(record) = self.opened(&hash, &String::from_utf8_lossy(&json)) else {
            return Ok(None);
        };
        let _: () = c
            .srem(self.user_key(&record.name_id), &hash)
            .await
            .map_err(unavailable)?;
        Ok(Some(record))
    }

    async fn end_sessions_of_subject(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError> {
        // One script: a session is read, matched and ended without another replica's use of
        // it in between. The user's index names the candidates; the record says which match.
        // A sealed record is matched on its JSON unchecked; what is reported is opened (its
        // seal checked) in Rust.
        const SCRIPT: &str = concat!(
            end_session_lua!(),
            "local out = {} \
            local wanted = {} \
            for i = 7, #ARGV do wanted[ARGV[i]] = true end \
            local any = #ARGV < 7 \
            for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
              local v = redis.call('GET', ARGV[1] .. h) \
              if not v then \
                redis.call('SREM', KEYS[1], h) \
              else \
                local j = v \
                if string.sub(v, 1, 3) == 'm1:' then \
                  local i = string.find(v, '\\n', 1, true) \
                  j = i and string.sub(v, i + 1) or '' \
                end \
                local ok, r = pcall(cjson.decode, j) \
                if ok and type(r) == 'table' and r.idp == ARGV[5] and (any or \
                    (type(r.session_index) == 'string' and wanted[r.session_index])) then \
                  end_session(ARGV[1] .. h, ARGV[2] .. h, ARGV[3], ARGV[4]) \
                  redis.pcall('PUBLISH', ARGV[6], h) \
                  redis.call('SREM', KEYS[1], h) \
                  table.insert(out, h) \
                  table.insert(out, v) \
                end \
              end \
            end \
            return out"
        );
        let mut c = self.connection();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT)
            .arg(1)
            .arg(self.user_key(name_id))
            .arg(format!("{}:session:", self.namespace))
            .arg(format!("{}:ended:", self.namespace))
            .arg(reason.code())
            .arg(END_MARKER_SECS)
            .arg(idp)
            .arg(self.channel());
        for index in session_indexes {
            cmd.arg(index);
        }
        let flat: Vec<Vec<u8>> = cmd.query_async(&mut c).await.map_err(unavailable)?;
        self.forget_pairs(&flat);
        Ok(self.live_pairs(&flat, now))
    }

    async fn put_pending(
        &self,
        token: &str,
        request: PendingRequest,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let ttl = expires_at.saturating_sub(request.created_at);
        if ttl <= 0 {
            return Ok(());
        }
        let request_created_at = request.created_at;
        let value = encode(&StoredPending {
            request,
            expires_at,
        })?;
        // KEYS: the order, the request's key. ARGV: its hash, its value, its TTL, its deadline,
        // now, the cap, the prefix of pending keys.
        const SCRIPT: &str = "\
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5]) \
            local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[6]) + 1 \
            if over > 0 then \
              local oldest = redis.call('ZPOPMIN', KEYS[1], over) \
              for i = 1, #oldest, 2 do redis.call('DEL', ARGV[7] .. oldest[i]) end \
            end \
            redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) \
            redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) \
            local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES') \
            local ttl = math.max(1, tonumber(last[2]) - tonumber(ARGV[5])) \
            redis.call('EXPIRE', KEYS[1], ttl) \
            return 0";
        let hash = sha256_hex(token);
        let prefix = format!("{}:pending:", self.namespace);
        let mut c = self.connection();
        let _: () = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg(self.pending_order_key())
            .arg(format!("{prefix}{hash}"))
            .arg(&hash)
            .arg(value)
            .arg(expiry(ttl))
            .arg(expires_at)
            .arg(request_created_at)
            .arg(self.max_pending)
            .arg(prefix)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_pending(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Option<PendingRequest>, StoreError> {
        const SCRIPT: &str = "\
            local v = redis.call('GETDEL', KEYS[2]) \
            redis.call('ZREM', KEYS[1], ARGV[1]) \
            return v";
        let hash = sha256_hex(token);
        let mut c = self.connection();
        let json: Option<String> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg(self.pending_order_key())
            .arg(format!("{}:pending:{hash}", self.namespace))
            .arg(&hash)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(json
            .and_then(|j| decode::<StoredPending>(&j, "pending request"))
            .filter(|p| now < p.expires_at)
            .map(|p| p.request))
    }

    async fn first_use_of_assertion(
        &self,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let key = format!("{}:assertion:{}", self.namespace, sha256_hex(assertion_id));
        let mut c = self.connection();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(expiry(expires_at.saturating_sub(now)))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }
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
    fn refused_records_are_warned_of_at_most_once_a_minute() {
        let warned_at = AtomicU64::new(0);
        assert!(warning_due(&warned_at, 1_000));
        assert!(!warning_due(&warned_at, 1_000));
        assert!(!warning_due(&warned_at, 1_059));
        assert!(warning_due(&warned_at, 1_060));
        assert!(!warning_due(&warned_at, 1_061));
        // A clock read as 0 (set before 1970) still records the warning.
        let warned_at = AtomicU64::new(0);
        assert!(warning_due(&warned_at, 0));
        assert!(!warning_due(&warned_at, 0));
        assert!(warning_due(&warned_at, 61));
    }

    #[test]
    fn urls_are_checked_and_described_without_credentials() {
        let d = RedisStore::check_url("redis://:s3cret@127.0.0.1:6390/2", &RedisAccess::default())
            .unwrap();
        assert_eq!(d, "127.0.0.1:6390, database 2");
        let d = RedisStore::check_url(
            "rediss://gw:s3cret@db.internal:6380/1",
            &RedisAccess::default(),
        )
        .unwrap();
        assert_eq!(d, "db.internal:6380, database 1");
        assert!(matches!(
            RedisStore::check_url("rediss://h:6379/#insecure", &RedisAccess::default()),
            Err(RedisConnectError::InvalidUrl(_))
        ));
        assert!(matches!(
            RedisStore::check_url("http://h:6379", &RedisAccess::default()),
            Err(RedisConnectError::InvalidUrl(_))
        ));
        let e = RedisStore::check_url("redis://:s3cret@[::1", &RedisAccess::default()).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn tls_is_read_from_the_parsed_address() {
        assert!(RedisStore::url_takes_tls("rediss://:pw@h:6380/0"));
        assert!(RedisStore::url_takes_tls("REDISS://h:6380"));
        assert!(RedisStore::url_takes_tls("rediss+sentinel://s1,s2/m"));
        assert!(!RedisStore::url_takes_tls("redis+sentinel://s1,s2/m"));
        assert!(!RedisStore::url_takes_tls("redis://h:6379"));
        assert!(!RedisStore::url_takes_tls("unix:///run/redis.sock"));
        assert!(!RedisStore::url_takes_tls("rediss://[::1"));
    }

    fn with_tls(tls: RedisTls) -> RedisAccess {
        RedisAccess {
            password: None,
            tls: Some(tls),
        }
    }

    #[test]
    fn a_password_given_apart_replaces_the_urls_and_is_never_shown() {
        let access = RedisAccess {
            password: Some("from-file-s3cret".to_string()),
            tls: None,
        };
        let client = open_client("redis://gw@127.0.0.1:6390/2", &access).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.redis.username.as_deref(), Some("gw"));
        assert_eq!(info.redis.password.as_deref(), Some("from-file-s3cret"));
        let client = open_client("redis://:in-url@127.0.0.1:6390/2", &access).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.redis.password.as_deref(), Some("from-file-s3cret"));
        let none = open_client("redis://127.0.0.1:6390/2", &RedisAccess::default()).unwrap();
        assert_eq!(none.get_connection_info().redis.password, None);
        let described = RedisStore::check_url("redis://gw@127.0.0.1:6390/2", &access).unwrap();
        assert!(!described.contains("s3cret"), "{described}");
        let shown = format!("{access:?}");
        assert_eq!(shown, "RedisAccess { password: true, tls: None }");
    }

    #[test]
    fn a_password_in_the_url_is_found() {
        assert!(RedisStore::url_has_password("redis://:pw@h:6379/0"));
        assert!(RedisStore::url_has_password("rediss://gw:pw@h:6380"));
        assert!(!RedisStore::url_has_password("redis://gw@h:6379"));
        assert!(!RedisStore::url_has_password("redis://h:6379"));
        // Percent-encoded, and empty (no password at all).
        assert!(RedisStore::url_has_password("redis://gw:%41b@h:6379"));
        assert!(!RedisStore::url_has_password("redis://:@h:6379"));
        assert!(!RedisStore::url_has_password("redis://gw:@h:6379"));
        assert!(RedisStore::url_has_password(
            "redis+sentinel://gw:pw@s1,s2/m"
        ));
        assert!(!RedisStore::url_has_password("redis+sentinel://gw@s1,s2/m"));
    }

    #[test]
    fn tls_settings_need_a_rediss_url_and_certificates_that_parse() {
        let tls = RedisTls {
            ca_pem: Some(
                b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
            ),
            client: None,
        };
        assert!(matches!(
            RedisStore::check_url("redis://h:6379", &with_tls(RedisTls::default())),
            Err(RedisConnectError::InvalidTls(_))
        ));
        assert!(matches!(
            RedisStore::check_url("rediss://h:6379", &with_tls(tls)),
            Err(RedisConnectError::InvalidTls(_))
        ));
        let key =
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let tls = RedisTls {
            ca_pem: None,
            client: Some((Vec::new(), key.to_vec())),
        };
        let shown = format!("{tls:?}");
        assert_eq!(shown, "RedisTls { ca: false, client_certificate: true }");
    }

    #[test]
    fn namespace_depends_on_the_entity_id_only() {
        assert_eq!(namespace_for("https://a/"), namespace_for("https://a/"));
        assert_ne!(namespace_for("https://a/"), namespace_for("https://b/"));
        assert_eq!(namespace_for("x").len(), "saml-gw:".len() + 16);
    }

    #[test]
    fn redaction_removes_the_password() {
        assert_eq!(redact("bad pw hunter2!", Some("hunter2")), "bad pw ***!");
        assert_eq!(redact("no password", None), "no password");
        assert_eq!(redact("empty", Some("")), "empty");
    }
}
