//! The in-memory store: the embedded default for a single gateway instance.
//!
//! Everything lives in hash maps behind one mutex; critical sections are a lookup or an insert,
//! never I/O. Each map has a cap so that unauthenticated visitors cannot grow memory without
//! bound: when a map is full, expired entries are purged, and if it is still full the operation
//! fails with [`StoreError::Full`] (the gateway answers 503) rather than evicting live sessions
//! or replay-cache entries. Expired records and end markers are kept only while there is room:
//! a full map drops them first.
//!
//! Pending login requests are the exception: anyone can make them, so a full map gives up its
//! oldest one for the new one. A flood then costs a real user, at worst, a login started again,
//! and only if the flood makes the whole cap of starts while that user is at the IdP; refusing
//! instead would let the flood stop every login for as long as it lasts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::record::SESSION_VERSION;
use crate::{
    EndReason, Groups, PendingRequest, SessionId, SessionRecord, SessionState, SessionTimeouts,
    Store, StoreError, StoredSession, UnixTime, END_MARKER_SECS, EXPIRED_RECORD_SECS,
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

/// Most distinct group names kept for sharing; names beyond it are stored per session.
const MAX_SHARED_NAMES: usize = 200_000;

/// Most distinct group lists kept for sharing.
const MAX_SHARED_LISTS: usize = 100_000;

/// Group names and whole group lists shared by every session that has them: most users of a
/// deployment are in the same few hundred groups, and people of one team often in the same
/// set, so a session then holds one pointer instead of copies. Names and lists no live session
/// uses any more are dropped by the periodic purge.
#[derive(Default)]
struct SharedNames {
    names: HashSet<Arc<str>>,
    lists: HashSet<Groups>,
}

impl SharedNames {
    fn intern_all(&mut self, groups: &Groups) -> Groups {
        if let Some(shared) = self.lists.get(groups) {
            return shared.clone();
        }
        let list: Groups = groups.iter().map(|g| self.intern(g)).collect();
        if self.lists.len() < MAX_SHARED_LISTS {
            self.lists.insert(list.clone());
        }
        list
    }

    fn intern(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return shared.clone();
        }
        if self.names.len() < MAX_SHARED_NAMES {
            self.names.insert(name.clone());
        }
        name.clone()
    }

    /// Drops the lists and names only this table still holds.
    fn purge(&mut self) {
        self.lists.retain(|l| Arc::strong_count(l) > 1);
        self.names.retain(|n| Arc::strong_count(n) > 1);
    }
}

/// The maps keyed by session ID use FxHash, which is not keyed against chosen inputs: the
/// IDs in them are 256-bit random values the gateway made, so no one can make them collide,
/// and a lookup of a chosen ID costs one probe sequence like any other. SipHash cost about
/// 250 instructions per lookup of the proxy's hot path (docs/performance.md).
#[derive(Default)]
struct Maps {
    names: SharedNames,
    sessions: FxHashMap<SessionId, Arc<SessionRecord>>,
    pending: HashMap<String, (PendingRequest, UnixTime)>,
    /// The pending tokens, oldest first; some may be gone from `pending` already (taken or
    /// purged), until the next compaction.
    pending_order: VecDeque<String>,
    assertions: HashMap<String, UnixTime>,
    /// Ended sessions: why, and until when the marker is kept.
    ended: FxHashMap<SessionId, (EndReason, UnixTime)>,
    /// The second a full map was last swept: nothing more can expire within it.
    full_swept_at: Option<UnixTime>,
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
        self.timeouts.is_live(record, now)
    }

    /// Drops every expired entry (an expired session once [`EXPIRED_RECORD_SECS`] have passed
    /// since its deadline); the gateway calls this periodically.
    pub fn purge_expired(&self, now: UnixTime) -> Result<(), StoreError> {
        let mut maps = self.lock()?;
        let timeouts = self.timeouts;
        maps.sessions.retain(|_, r| {
            r.version == SESSION_VERSION
                && now < timeouts.deadline(r).saturating_add(EXPIRED_RECORD_SECS)
        });
        purge_others(&mut maps, now);
        Ok(())
    }

    /// Number of session records held: the live ones and the expired ones still kept to report
    /// their expiry (for metrics and tests).
    pub fn session_count(&self) -> Result<usize, StoreError> {
        Ok(self.lock()?.sessions.len())
    }
}

/// Drops everything that is not live, expired session records included.
fn purge(maps: &mut Maps, store: &MemoryStore, now: UnixTime) {
    maps.sessions.retain(|_, r| store.live(r, now));
    purge_others(maps, now);
}

fn purge_others(maps: &mut Maps, now: UnixTime) {
    maps.names.purge();
    maps.pending.retain(|_, (_, exp)| now < *exp);
    maps.assertions.retain(|_, exp| now < *exp);
    maps.ended.retain(|_, (_, exp)| now < *exp);
}

/// What `record` (or its absence) means at `now`, without changing anything.
fn classify(maps: &Maps, store: &MemoryStore, id: &SessionId, now: UnixTime) -> SessionState {
    match maps.sessions.get(id) {
        Some(r) if store.live(r, now) => SessionState::Live(r.clone()),
        Some(r) if r.version == SESSION_VERSION => SessionState::Expired(r.clone()),
        Some(_) => SessionState::Gone,
        None => match maps.ended.get(id) {
            Some((reason, until)) if now < *until => SessionState::Ended(*reason),
            _ => SessionState::Gone,
        },
    }
}

/// Makes room in a map that is at its cap, purging expired entries once. Expiry is counted in
/// whole seconds, so a second sweep within the same second would find nothing: a flood of
/// writes against a full map (anonymous login starts, say) gets its refusals without walking
/// every map under the lock each time, which would stall every session lookup.
fn ensure_room(
    maps: &mut Maps,
    store: &MemoryStore,
    now: UnixTime,
    len: fn(&Maps) -> usize,
    cap: usize,
) -> Result<(), StoreError> {
    if len(maps) >= cap {
        if maps.full_swept_at != Some(now) {
            purge(maps, store, now);
            maps.full_swept_at = Some(now);
        }
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
        record.start(now, &self.timeouts);
        let mut maps = self.lock()?;
        ensure_room(
            &mut maps,
            self,
            now,
            |m| m.sessions.len(),
            self.limits.max_sessions,
        )?;
        record.groups = maps.names.intern_all(&record.groups);
        maps.sessions.insert(id.clone(), Arc::new(record));
        Ok(id)
    }

    async fn use_session(&self, id: &SessionId, now: UnixTime) -> Result<SessionState, StoreError> {
        let mut maps = self.lock()?;
        // The record is shared with the requests that use it; `last_seen` is written (a copy,
        // when one of them still holds it) once per refresh interval. One lookup for a live
        // session, the request path's case.
        if let Some(record) = maps.sessions.get_mut(id) {
            if self.live(record, now) {
                if now.saturating_sub(record.last_seen) > self.timeouts.refresh_interval() {
                    Arc::make_mut(record).last_seen = now;
                }
                return Ok(SessionState::Live(record.clone()));
            }
        }
        let state = classify(&maps, self, id, now);
        if let SessionState::Expired(_) = state {
            // Reported once: the record goes as the expiry is reported.
            maps.sessions.remove(id);
        }
        Ok(state)
    }

    async fn session_alive(
        &self,
        id: &SessionId,
        now: UnixTime,
    ) -> Result<SessionState, StoreError> {
        let maps = self.lock()?;
        Ok(classify(&maps, self, id, now))
    }

    async fn delete_session(
        &self,
        id: &SessionId,
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let mut maps = self.lock()?;
        let removed = maps.sessions.remove(id).map(Arc::unwrap_or_clone);
        if removed.is_some() {
            // The marker only explains a closing WebSocket; without room it is left out rather
            // than failing the logout.
            if maps.ended.len() >= self.limits.max_sessions {
                maps.ended.retain(|_, (_, until)| now < *until);
            }
            if maps.ended.len() < self.limits.max_sessions {
                maps.ended
                    .insert(id.clone(), (reason, now.saturating_add(END_MARKER_SECS)));
            }
        }
        Ok(removed)
    }

    async fn end_sessions_of_subject(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let mut maps = self.lock()?;
        let matching: Vec<SessionId> = maps
            .sessions
            .iter()
            .filter(|(_, r)| {
                r.idp == idp
                    && r.name_id == name_id
                    && self.live(r, now)
                    && (session_indexes.is_empty()
                        || r.session_index
                            .as_ref()
                            .is_some_and(|s| session_indexes.contains(s)))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut ended = Vec::with_capacity(matching.len());
        for id in matching {
            if let Some(record) = maps.sessions.remove(&id) {
                if maps.ended.len() < self.limits.max_sessions {
                    maps.ended
                        .insert(id.clone(), (reason, now.saturating_add(END_MARKER_SECS)));
                }
                ended.push(StoredSession {
                    hash: crate::session_hash(id.expose()),
                    record: Arc::unwrap_or_clone(record),
                });
            }
        }
        Ok(ended)
    }

    async fn put_pending(
        &self,
        token: &str,
        request: PendingRequest,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let now = request.created_at;
        let cap = self.limits.max_pending;
        let mut guard = self.lock()?;
        let maps = &mut *guard;
        if ensure_room(maps, self, now, |m| m.pending.len(), cap).is_err() {
            // Still full of live requests: the oldest gives way.
            while maps.pending.len() >= cap {
                let oldest = maps.pending_order.pop_front().ok_or(StoreError::Full)?;
                maps.pending.remove(&oldest);
            }
        }
        maps.pending
            .insert(token.to_string(), (request, expires_at));
        maps.pending_order.push_back(token.to_string());
        // Tokens taken or purged stay in the order until it holds twice what is pending.
        if maps.pending_order.len() > 2 * maps.pending.len() + 1024 {
            let pending = &maps.pending;
            maps.pending_order.retain(|t| pending.contains_key(t));
        }
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
            idp_name: String::new(),
            user: "alice".into(),
            name_id: "alice".into(),
            name_id_format: None,
            session_index: None,
            name_qualifier: None,
            sp_name_qualifier: None,
            email: None,
            display_name: None,
            given_name: None,
            surname: None,
            groups: crate::groups(["analytics"]),
            attributes: Default::default(),
            csrf_token: "t".into(),
            created_at: 0,
            authn_instant: None,
            authn_context: None,
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
    async fn a_live_record_is_shared_and_its_last_seen_written_once_per_refresh_interval() {
        let s = store(MemoryLimits::default()); // idle 100 s: refresh interval 10 s
        let id = s.create_session(record(), 0).await.unwrap();
        let a = s.get_session(&id, 5).await.unwrap().unwrap();
        let b = s.get_session(&id, 10).await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "within the interval, one shared record"
        );
        assert_eq!(b.last_seen, 0);
        let c = s.get_session(&id, 11).await.unwrap().unwrap();
        assert_eq!(c.last_seen, 11, "written once the interval has passed");
        assert_eq!(
            a.last_seen, 0,
            "a copy: the record a request holds does not change"
        );
        // The idle deadline counts from the write.
        assert!(s
            .session_alive(&id, 110)
            .await
            .unwrap()
            .into_live()
            .is_some());
        assert!(s
            .session_alive(&id, 111)
            .await
            .unwrap()
            .into_live()
            .is_none());
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
            max_authn_age: None,
            idp: "default".into(),
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

    #[tokio::test]
    async fn a_full_map_is_swept_once_a_second() {
        let s = store(MemoryLimits {
            max_assertions: 2,
            ..MemoryLimits::default()
        });
        assert!(s.first_use_of_assertion("a", 5, 0).await.unwrap());
        assert!(s.first_use_of_assertion("b", 600, 0).await.unwrap());
        assert!(matches!(
            s.first_use_of_assertion("c", 600, 4).await,
            Err(StoreError::Full)
        ));
        assert_eq!(s.lock().unwrap().full_swept_at, Some(4));
        // "a" expires at 5: the first write of that second sweeps it away and takes its place.
        assert!(s.first_use_of_assertion("c", 600, 5).await.unwrap());
        assert_eq!(s.lock().unwrap().full_swept_at, Some(5));
        assert!(matches!(
            s.first_use_of_assertion("d", 600, 5).await,
            Err(StoreError::Full)
        ));
        assert!(!s.first_use_of_assertion("b", 600, 6).await.unwrap());
    }

    fn pending(created_at: UnixTime) -> PendingRequest {
        PendingRequest {
            request_id: format!("_r{created_at}"),
            return_to: "/".into(),
            created_at,
            max_authn_age: None,
            idp: "default".into(),
        }
    }

    #[tokio::test]
    async fn a_full_pending_map_gives_up_its_oldest_login() {
        let s = store(MemoryLimits {
            max_pending: 2,
            ..MemoryLimits::default()
        });
        s.put_pending("a", pending(0), 600).await.unwrap();
        s.put_pending("b", pending(1), 600).await.unwrap();
        s.put_pending("c", pending(2), 600).await.unwrap();
        assert!(s.take_pending("a", 3).await.unwrap().is_none());
        assert_eq!(s.take_pending("b", 3).await.unwrap(), Some(pending(1)));
        // "b" was taken: the next one finds room without giving anything up.
        s.put_pending("d", pending(4), 600).await.unwrap();
        assert_eq!(s.take_pending("c", 5).await.unwrap(), Some(pending(2)));
        assert_eq!(s.take_pending("d", 5).await.unwrap(), Some(pending(4)));
    }

    #[tokio::test]
    async fn the_order_of_pending_logins_stays_bounded() {
        // Every login is completed and the map never fills: only compaction bounds the order.
        let s = store(MemoryLimits {
            max_pending: 100_000,
            ..MemoryLimits::default()
        });
        for n in 0..10_000 {
            let token = format!("t{n}");
            s.put_pending(&token, pending(n), n + 600).await.unwrap();
            assert!(s.take_pending(&token, n).await.unwrap().is_some());
        }
        let maps = s.lock().unwrap();
        assert!(maps.pending.is_empty());
        assert!(
            maps.pending_order.len() <= 1024 + 1,
            "{}",
            maps.pending_order.len()
        );
    }

    #[tokio::test]
    async fn a_look_does_not_slide_the_idle_timeout() {
        let s = store(MemoryLimits::default());
        let id = s.create_session(record(), 0).await.unwrap();
        for t in [30, 60, 90] {
            assert!(matches!(
                s.session_alive(&id, t).await.unwrap(),
                SessionState::Live(_)
            ));
        }
        assert!(matches!(
            s.session_alive(&id, 100).await.unwrap(),
            SessionState::Expired(_)
        ));
        // Looking never removes: the expiry is still there to report, once.
        assert!(matches!(
            s.session_alive(&id, 100).await.unwrap(),
            SessionState::Expired(_)
        ));
        assert!(matches!(
            s.use_session(&id, 101).await.unwrap(),
            SessionState::Expired(r) if r.user == "alice"
        ));
        assert_eq!(s.use_session(&id, 102).await.unwrap(), SessionState::Gone);
        assert_eq!(s.session_alive(&id, 102).await.unwrap(), SessionState::Gone);
    }

    #[tokio::test]
    async fn expired_records_are_kept_for_a_while_then_purged() {
        let s = store(MemoryLimits::default());
        let id = s.create_session(record(), 0).await.unwrap();
        s.purge_expired(100 + EXPIRED_RECORD_SECS - 1).unwrap();
        assert_eq!(s.session_count().unwrap(), 1);
        s.purge_expired(100 + EXPIRED_RECORD_SECS).unwrap();
        assert_eq!(s.session_count().unwrap(), 0);
        assert_eq!(s.use_session(&id, 5000).await.unwrap(), SessionState::Gone);
    }

    #[tokio::test]
    async fn an_ended_session_says_why_for_a_while() {
        let s = store(MemoryLimits::default());
        let id = s.create_session(record(), 0).await.unwrap();
        let ended = s.delete_session(&id, EndReason::Logout, 10).await.unwrap();
        assert_eq!(ended.unwrap().user, "alice");
        assert_eq!(
            s.session_alive(&id, 11).await.unwrap(),
            SessionState::Ended(EndReason::Logout)
        );
        assert_eq!(s.get_session(&id, 11).await.unwrap(), None);
        s.purge_expired(10 + END_MARKER_SECS).unwrap();
        assert_eq!(
            s.session_alive(&id, 10 + END_MARKER_SECS).await.unwrap(),
            SessionState::Gone
        );
        assert!(s
            .delete_session(&id, EndReason::Admin, 20)
            .await
            .unwrap()
            .is_none());
    }

    #[test]
    fn end_reasons_have_stable_codes() {
        for r in [
            EndReason::Logout,
            EndReason::Admin,
            EndReason::Relogin,
            EndReason::Aborted,
            EndReason::Slo,
        ] {
            assert_eq!(EndReason::from_code(r.code()), Some(r));
        }
        assert_eq!(EndReason::from_code("nope"), None);
    }

    #[test]
    fn session_ids_are_validated_and_not_printed() {
        let id = SessionId::generate().unwrap();
        assert!(SessionId::parse(id.expose()).is_some());
        assert!(SessionId::parse("short").is_none());
        assert!(SessionId::parse(&"a".repeat(42).replace('a', "*")).is_none());
        // 43 bytes, but not 43 characters of the alphabet.
        assert!(SessionId::parse(&format!("{}a", "é".repeat(21))).is_none());
        assert!(SessionId::parse(&"a".repeat(44)).is_none());
        assert_eq!(
            SessionId::parse(&"a".repeat(43)).unwrap().expose(),
            "a".repeat(43)
        );
        assert_eq!(format!("{id:?}"), "SessionId(..)");
    }

    #[tokio::test]
    async fn sessions_share_group_names() {
        let store = store(MemoryLimits::default());
        let (mut a, mut b) = (record(), record());
        a.groups = crate::groups(["analytics", "staff"]);
        b.groups = crate::groups(["staff"]);
        let a = store.create_session(a, 1000).await.unwrap();
        let b = store.create_session(b, 1000).await.unwrap();
        let a = store
            .use_session(&a, 1001)
            .await
            .unwrap()
            .into_live()
            .unwrap();
        let b = store
            .use_session(&b, 1001)
            .await
            .unwrap()
            .into_live()
            .unwrap();
        assert!(
            Arc::ptr_eq(&a.groups[1], &b.groups[0]),
            "one copy of `staff`"
        );
        assert_eq!(&*b.groups[0], "staff");
    }

    #[tokio::test]
    async fn sessions_with_the_same_groups_share_the_list() {
        let store = store(MemoryLimits::default());
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut r = record();
            r.groups = crate::groups(["analytics", "staff"]);
            ids.push(store.create_session(r, 1000).await.unwrap());
        }
        let mut lists = Vec::new();
        for id in &ids {
            let live = store
                .use_session(id, 1001)
                .await
                .unwrap()
                .into_live()
                .unwrap();
            lists.push(live.groups.clone());
        }
        assert!(
            Arc::ptr_eq(&lists[0], &lists[1]),
            "one list for both sessions"
        );
        // Once no session has it, the purge forgets it.
        drop(lists);
        for id in &ids {
            store
                .delete_session(id, EndReason::Logout, 1002)
                .await
                .unwrap();
        }
        store.purge_expired(1002).unwrap();
        assert!(store.lock().unwrap().names.lists.is_empty());
    }
}
