//! The Redis store's in-process session cache: a request whose session was read from Redis
//! within the last [`CACHE_TTL`] is served without a round trip or a JSON decode.
//!
//! Every end of a session (logout, revocation, Single Logout, on any replica or by
//! `saml-gateway sessions revoke`) is published on the deployment's invalidation channel from
//! inside the Redis script that ends it, and each replica's subscriber drops the entry as the
//! message arrives: a session ended elsewhere stops being served here within the pub/sub
//! latency (milliseconds), and at the latest when its entry's [`CACHE_TTL`] runs out if a
//! message were lost. The cache is used only while the subscription is up: when it drops, the
//! cache is emptied and every request reads Redis until the subscriber is back. Liveness (idle
//! and absolute timeouts) is still decided from the record at each request, and the idle
//! timeout still slides in Redis at the refresh interval (a cached record older than that is
//! read again and rewritten).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::SessionRecord;

/// How long a record read from Redis is served from memory at most.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Most records held; a full cache is emptied (the next requests read Redis again).
const MAX_ENTRIES: usize = 100_000;

/// Session records by session hash, with the time they were read.
#[derive(Default)]
pub(crate) struct SessionCache {
    entries: Mutex<HashMap<String, (SessionRecord, Instant)>>,
    /// True while the invalidation subscription is up.
    enabled: AtomicBool,
    ttl: Option<Duration>,
}

impl SessionCache {
    /// A cache whose entries live `ttl`.
    pub(crate) fn new(ttl: Duration) -> Arc<SessionCache> {
        Arc::new(SessionCache {
            ttl: Some(ttl),
            ..SessionCache::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SessionRecord, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The record of `hash`, when it was read less than the TTL ago and invalidations are
    /// being received.
    pub(crate) fn get(&self, hash: &str) -> Option<SessionRecord> {
        let ttl = self.ttl?;
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.lock();
        let (record, read_at) = entries.get(hash)?;
        (read_at.elapsed() < ttl).then(|| record.clone())
    }

    /// Keeps `record` as just read (or written) from Redis.
    pub(crate) fn put(&self, hash: &str, record: &SessionRecord) {
        if self.ttl.is_none() || !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash.to_string(), (record.clone(), Instant::now()));
    }

    /// Forgets `hash` (its session ended, or its record changed).
    pub(crate) fn remove(&self, hash: &str) {
        self.lock().remove(hash);
    }

    /// Switches serving from the cache on (the subscription is up) or off (it is down, so
    /// entries could be stale: they are dropped).
    pub(crate) fn set_enabled(&self, on: bool) {
        if !on {
            self.lock().clear();
        }
        self.enabled.store(on, Ordering::Release);
        if !on {
            // An entry put between the clear and the store above is dropped too.
            self.lock().clear();
        }
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
        cache.put("h", &record());
        assert!(cache.get("h").is_none(), "not enabled yet");
        cache.set_enabled(true);
        cache.put("h", &record());
        assert!(cache.get("h").is_some());
        cache.remove("h");
        assert!(cache.get("h").is_none());
        cache.put("h", &record());
        cache.set_enabled(false);
        cache.set_enabled(true);
        assert!(
            cache.get("h").is_none(),
            "a dropped subscription empties the cache"
        );
        cache.put("h", &record());
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("h").is_none(), "entries expire");
    }
}
