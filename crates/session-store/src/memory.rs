//! The in-memory store: the embedded default for a single gateway instance.
//!
//! Everything lives in hash maps behind one mutex; critical sections are a lookup or an insert,
//! never I/O. Each map has a cap so that unauthenticated visitors cannot grow memory without
//! bound: when a map is full, expired entries are purged, and if it is still full the operation
//! fails with [`StoreError::Full`] (the gateway answers 503) rather than evicting live logins.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::record::SESSION_VERSION;
use crate::{
    PendingRequest, SessionId, SessionRecord, SessionTimeouts, Store, StoreError, UnixTime,
};

/// Caps on what the memory store holds.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// Most live sessions.
    pub max_sessions: usize,
    /// Most pending login requests.
    pub max_pending: usize,
    /// Most remembered assertion IDs.
    pub max_assertions: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            max_sessions: 1_000_000,
            max_pending: 100_000,
            max_assertions: 1_000_000,
        }
    }
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<SessionId, SessionRecord>,
    pending: HashMap<String, (PendingRequest, UnixTime)>,
    assertions: HashMap<String, UnixTime>,
}

/// Sessions, pending requests and replay cache in this process's memory.
pub struct MemoryStore {
    timeouts: SessionTimeouts,
    limits: MemoryLimits,
    maps: Mutex<Maps>,
}

impl MemoryStore {
    /// An empty store with these timeouts and limits.
    pub fn new(timeouts: SessionTimeouts, limits: MemoryLimits) -> MemoryStore {
        MemoryStore {
            timeouts,
            limits,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Maps>, StoreError> {
        // A poisoned lock means a panic elsewhere while holding it; refuse rather than guess.
        self.maps.lock().map_err(|_| StoreError::Unavailable)
    }

    fn live(&self, record: &SessionRecord, now: UnixTime) -> bool {
        record.version == SESSION_VERSION
            && now < record.expires_at
            && now < record.last_seen.saturating_add(self.timeouts.idle)
    }

    /// Drops every expired entry; the gateway calls this periodically.
    pub fn purge_expired(&self, now: UnixTime) -> Result<(), StoreError> {
        let mut maps = self.lock()?;
        purge(&mut maps, self, now);
        Ok(())
    }

    /// Number of live sessions (for metrics and tests).
    pub fn session_count(&self) -> Result<usize, StoreError> {
        Ok(self.lock()?.sessions.len())
    }
}

fn purge(maps: &mut Maps, store: &MemoryStore, now: UnixTime) {
    maps.sessions.retain(|_, r| store.live(r, now));
    maps.pending.retain(|_, (_, exp)| now < *exp);
    maps.assertions.retain(|_, exp| now < *exp);
}

/// Makes room in a map that is at its cap, purging expired entries once.
fn ensure_room(
    maps: &mut Maps,
    store: &MemoryStore,
    now: UnixTime,
    len: fn(&Maps) -> usize,
    cap: usize,
) -> Result<(), StoreError> {
    if len(maps) >= cap {
        purge(maps, store, now);
        if len(maps) >= cap {
            return Err(StoreError::Full);
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn create_session(
        &self,
        mut record: SessionRecord,
        now: UnixTime,
    ) -> Result<SessionId, StoreError> {
        let id = SessionId::generate()?;
        let cap = now.saturating_add(self.timeouts.max_lifetime);
        record.expires_at = if record.expires_at > 0 {
            record.expires_at.min(cap)
        } else {
            cap
        };
        record.created_at = now;
        record.last_seen = now;
        let mut maps = self.lock()?;
        ensure_room(
            &mut maps,
            self,
            now,
            |m| m.sessions.len(),
            self.limits.max_sessions,
        )?;
        maps.sessions.insert(id.clone(), record);
        Ok(id)
    }

    async fn get_session(
        &self,
        id: &SessionId,
        now: UnixTime,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut maps = self.lock()?;
        let Some(record) = maps.sessions.get_mut(id) else {
            return Ok(None);
        };
        if !self.live(record, now) {
            maps.sessions.remove(id);
            return Ok(None);
        }
        record.last_seen = now;
        Ok(Some(record.clone()))
    }

    async fn delete_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock()?.sessions.remove(id))
    }

    async fn put_pending(
        &self,
        token: &str,
        request: PendingRequest,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let now = request.created_at;
        let mut maps = self.lock()?;
        ensure_room(
            &mut maps,
            self,
            now,
            |m| m.pending.len(),
            self.limits.max_pending,
        )?;
        maps.pending
            .insert(token.to_string(), (request, expires_at));
        Ok(())
    }

    async fn take_pending(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Option<PendingRequest>, StoreError> {
        let taken = self.lock()?.pending.remove(token);
        Ok(taken.filter(|(_, exp)| now < *exp).map(|(r, _)| r))
    }

    async fn first_use_of_assertion(
        &self,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut maps = self.lock()?;
        if let Some(exp) = maps.assertions.get(assertion_id) {
            if now < *exp {
                return Ok(false);
            }
        }
        ensure_room(
            &mut maps,
            self,
            now,
            |m| m.assertions.len(),
            self.limits.max_assertions,
        )?;
        maps.assertions.insert(assertion_id.to_string(), expires_at);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limits: MemoryLimits) -> MemoryStore {
        MemoryStore::new(
            SessionTimeouts {
                idle: 100,
                max_lifetime: 1000,
            },
            limits,
        )
    }

    fn record() -> SessionRecord {
        SessionRecord {
            version: SESSION_VERSION,
            sp_entity_id: "sp".into(),
            idp: "idp".into(),
            user: "alice".into(),
            name_id: "alice".into(),
            name_id_format: None,
            session_index: None,
            email: None,
            display_name: None,
            groups: vec!["analytics".into()],
            csrf_token: "t".into(),
            created_at: 0,
            expires_at: 0,
            last_seen: 0,
        }
    }

    #[tokio::test]
    async fn idle_timeout_slides_and_absolute_lifetime_caps() {
        let s = store(MemoryLimits::default());
        let id = s.create_session(record(), 0).await.unwrap();
        // Used every 90 s: stays alive past one idle period...
        for t in [90, 180, 270, 360, 450, 540, 630, 720, 810, 900, 990] {
            assert!(s.get_session(&id, t).await.unwrap().is_some(), "at {t}");
        }
        // ...but never past max_lifetime.
        assert!(s.get_session(&id, 1000).await.unwrap().is_none());

        let idle = s.create_session(record(), 0).await.unwrap();
        assert!(s.get_session(&idle, 100).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn record_expiry_caps_the_session() {
        let s = store(MemoryLimits::default());
        let mut r = record();
        r.expires_at = 50;
        let id = s.create_session(r, 0).await.unwrap();
        assert!(s.get_session(&id, 49).await.unwrap().is_some());
        assert!(s.get_session(&id, 50).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn unknown_version_reads_as_logged_out() {
        let s = store(MemoryLimits::default());
        let mut r = record();
        r.version = SESSION_VERSION + 1;
        let id = s.create_session(r, 0).await.unwrap();
        assert!(s.get_session(&id, 1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn pending_requests_are_used_once_and_expire() {
        let s = store(MemoryLimits::default());
        let req = PendingRequest {
            request_id: "_r".into(),
            return_to: "/".into(),
            created_at: 0,
        };
        s.put_pending("tok", req.clone(), 10).await.unwrap();
        assert_eq!(s.take_pending("tok", 5).await.unwrap(), Some(req.clone()));
        assert_eq!(s.take_pending("tok", 5).await.unwrap(), None);
        s.put_pending("old", req, 10).await.unwrap();
        assert_eq!(s.take_pending("old", 10).await.unwrap(), None);
    }

    #[tokio::test]
    async fn assertion_ids_are_accepted_once_until_expiry() {
        let s = store(MemoryLimits::default());
        assert!(s.first_use_of_assertion("a", 10, 0).await.unwrap());
        assert!(!s.first_use_of_assertion("a", 10, 5).await.unwrap());
        assert!(s.first_use_of_assertion("a", 20, 10).await.unwrap());
    }

    #[tokio::test]
    async fn full_maps_refuse_instead_of_evicting() {
        let s = store(MemoryLimits {
            max_sessions: 1,
            max_pending: 1,
            max_assertions: 1,
        });
        s.create_session(record(), 0).await.unwrap();
        assert!(matches!(
            s.create_session(record(), 1).await,
            Err(StoreError::Full)
        ));
        // Once the first session expires there is room again.
        s.create_session(record(), 2000).await.unwrap();
    }

    #[test]
    fn session_ids_are_validated_and_not_printed() {
        let id = SessionId::generate().unwrap();
        assert!(SessionId::parse(id.expose()).is_some());
        assert!(SessionId::parse("short").is_none());
        assert!(SessionId::parse(&"a".repeat(42).replace('a', "*")).is_none());
        assert_eq!(format!("{id:?}"), "SessionId(..)");
    }
}
