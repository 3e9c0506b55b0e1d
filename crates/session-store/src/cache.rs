//! The Redis store's in-process session cache: a request whose session was read from Redis
//! within the last [`CACHE_TTL`] is served without a round trip or a JSON decode.
//!
//! Every end of a session (logout, revocation, Single Logout, on any replica or by
//! `saml-gateway sessions revoke`) is published on the deployment's invalidation channel from
//! inside the Redis script that ends it, and each replica's subscriber drops the entry as the
//! message arrives: a session ended elsewhere normally stops being served here within the
//! pub/sub delivery time. [`CACHE_TTL`], counted from the Redis read, bounds every other case
//! (a lost message, a subscription that hangs without closing, a replica of an older version
//! that does not publish). A record read before an invalidation arrived is never kept (the
//! invalidation count, `Ticket`). The cache is used only while the subscription is up: when
//! it drops, and again when it comes back, the cache is emptied. Liveness (idle and absolute
//! timeouts) is still decided from the record at each request, and the idle timeout still
//! slides in Redis at the refresh interval (a cached record older than that is read again).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::SessionRecord;

/// How long a record read from Redis is served from memory at most.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Most records held; beyond it, expired entries are dropped, then all of them.
const MAX_ENTRIES: usize = 50_000;

/// Session records by session hash, with the time they were read. FxHash, not a keyed hash:
/// an entry is made only for a session Redis holds, so every key is the SHA-256 of a random ID
/// the gateway made (see the memory store's maps).
#[derive(Default)]
pub(crate) struct SessionCache {
    entries: Mutex<FxHashMap<String, (Arc<SessionRecord>, Instant)>>,
    /// True while the invalidation subscription is up (changed under the entries' lock).
    enabled: AtomicBool,
    /// Counts invalidations (changed under the entries' lock).
    epoch: AtomicU64,
    ttl: Option<Duration>,
}

/// Taken before a record is read from Redis: when, and how many invalidations had arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    epoch: u64,
    at: Instant,
}

type Entries = FxHashMap<String, (Arc<SessionRecord>, Instant)>;

impl SessionCache {
    /// A cache whose entries live `ttl` from their read.
    pub(crate) fn new(ttl: Duration) -> Arc<SessionCache> {
        Arc::new(SessionCache {
            ttl: Some(ttl),
            ..SessionCache::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The record of `hash`, when it was read less than the TTL ago and invalidations are
    /// being received.
    pub(crate) fn get(&self, hash: &str) -> Option<Arc<SessionRecord>> {
        let ttl = self.ttl?;
        let found = {
            let mut entries = self.lock();
            if !self.enabled.load(Ordering::Acquire) {
                return None;
            }
            match entries.get(hash) {
                Some((record, read_at)) if read_at.elapsed() < ttl => Some(record.clone()),
                Some(_) => {
                    entries.remove(hash);
                    None
                }
                None => None,
            }
        };
        found
    }

    /// The ticket to take before reading a record from Redis.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            at: Instant::now(),
        }
    }

    /// Keeps `record` as read (or written) from Redis after `ticket` was taken, unless an
    /// invalidation arrived meanwhile (its session may have ended after the read).
    pub(crate) fn put(&self, hash: &str, record: &Arc<SessionRecord>, ticket: Ticket) {
        let Some(ttl) = self.ttl else {
            return;
        };
        let mut entries = self.lock();
        if !self.enabled.load(Ordering::Acquire)
            || self.epoch.load(Ordering::Acquire) != ticket.epoch
        {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, read_at)| read_at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash.to_string(), (record.clone(), ticket.at));
    }

    /// Forgets `hash` (its session ended, or its record changed).
    pub(crate) fn remove(&self, hash: &str) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(hash);
    }

    /// Switches serving from the cache on (the subscription is up) or off (it is down). Either
    /// way the entries are dropped: messages may have been missed before.
    pub(crate) fn set_enabled(&self, on: bool) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.enabled.store(on, Ordering::Release);
    }

    /// Whether serving from the cache is on.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        serde_json::from_str(
            r#"{"version":1,"sp_entity_id":"sp","idp":"idp","user":"u","name_id":"u",
            "name_id_format":null,"session_index":null,"email":null,"display_name":null,
            "groups":[],"csrf_token":"t","created_at":0,"expires_at":0,"last_seen":0}"#,
        )
        .unwrap()
    }

    #[test]
    fn serves_only_while_enabled_and_fresh() {
        let cache = SessionCache::new(Duration::from_millis(200));
        cache.put("h", &Arc::new(record()), cache.ticket());
        assert!(cache.get("h").is_none(), "not enabled yet");
        cache.set_enabled(true);
        cache.put("h", &Arc::new(record()), cache.ticket());
        assert!(cache.get("h").is_some());
        cache.remove("h");
        assert!(cache.get("h").is_none());
        cache.put("h", &Arc::new(record()), cache.ticket());
        cache.set_enabled(true);
        assert!(cache.get("h").is_none(), "a new subscription starts empty");
        cache.put("h", &Arc::new(record()), cache.ticket());
        cache.set_enabled(false);
        assert!(cache.get("h").is_none(), "no subscription, no cache");
        cache.set_enabled(true);
        let ticket = cache.ticket();
        std::thread::sleep(Duration::from_millis(250));
        cache.put("h", &Arc::new(record()), ticket);
        assert!(
            cache.get("h").is_none(),
            "entries expire counting from the read"
        );
    }

    #[test]
    fn a_record_read_before_an_invalidation_is_not_kept() {
        let cache = SessionCache::new(Duration::from_secs(60));
        cache.set_enabled(true);
        // use_session takes the ticket, reads Redis; meanwhile the session ends elsewhere.
        let before_read = cache.ticket();
        cache.remove("h");
        cache.put("h", &Arc::new(record()), before_read);
        assert!(cache.get("h").is_none());
        // An invalidation of another session also discards it: no harm, one more read.
        let before_read = cache.ticket();
        cache.remove("other");
        cache.put("h", &Arc::new(record()), before_read);
        assert!(cache.get("h").is_none());
        cache.put("h", &Arc::new(record()), cache.ticket());
        assert!(cache.get("h").is_some());
    }
}
