//! `RedisStore` against a real redis-server: `REDIS_URL`, default `redis://127.0.0.1:6379`.
//!
//! Each test uses its own random SP entity ID, hence its own key namespace, so tests run in
//! parallel on one server without seeing each other. An unreachable server fails every test
//! (scripts/test.sh starts one when none is running).

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use session_store::{
    random_token, EndReason, PendingRequest, RedisAccess, RedisConnectError, RedisStore, SessionId,
    SessionRecord, SessionState, SessionTimeouts, Store, EXPIRED_RECORD_SECS, SESSION_VERSION,
};
use sha2::{Digest, Sha256};

const TIMEOUTS: SessionTimeouts = SessionTimeouts {
    idle: 100,
    max_lifetime: 1000,
};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A store in a namespace of its own.
async fn store() -> RedisStore {
    store_for(&format!("https://sp.test/{}", random_token().unwrap())).await
}

/// A store without the session cache: these tests look at what Redis holds.
async fn store_for(entity_id: &str) -> RedisStore {
    store_with_cache(entity_id, Duration::ZERO).await
}

async fn store_with_cache(entity_id: &str, ttl: Duration) -> RedisStore {
    let url = redis_url();
    match RedisStore::connect_with_cache(&url, &RedisAccess::default(), entity_id, TIMEOUTS, ttl)
        .await
    {
        Ok(s) => s,
        Err(e) => panic!(
            "these tests need a running redis-server at REDIS_URL (now {url}): {e}. \
             Start one (redis-server --port 6379 --save '') or set REDIS_URL."
        ),
    }
}

/// A plain connection for looking at the keys the store wrote.
async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis-server at REDIS_URL")
}

fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn session_key(s: &RedisStore, id: &SessionId) -> String {
    format!("{}:session:{}", s.namespace(), sha256_hex(id.expose()))
}

async fn keys_of(s: &RedisStore) -> Vec<String> {
    let mut c = raw().await;
    let mut keys: Vec<String> = c.keys(format!("{}:*", s.namespace())).await.unwrap();
    keys.sort();
    keys
}

fn record(name_id: &str) -> SessionRecord {
    SessionRecord {
        version: SESSION_VERSION,
        sp_entity_id: "sp".into(),
        idp: "idp".into(),
        idp_name: String::new(),
        user: name_id.into(),
        name_id: name_id.into(),
        name_id_format: None,
        session_index: None,
        name_qualifier: None,
        sp_name_qualifier: None,
        email: None,
        display_name: None,
        given_name: None,
        surname: None,
        groups: session_store::groups(["analytics"]),
        attributes: Default::default(),
        csrf_token: "t".into(),
        created_at: 0,
        authn_instant: None,
        authn_context: None,
        expires_at: 0,
        last_seen: 0,
    }
}

fn pending(created_at: i64) -> PendingRequest {
    PendingRequest {
        request_id: "_r".into(),
        return_to: "/".into(),
        created_at,
        max_authn_age: None,
        idp: "default".into(),
    }
}

#[tokio::test]
async fn idle_timeout_slides_and_absolute_lifetime_caps() {
    let s = store().await;
    let id = s.create_session(record("alice"), 0).await.unwrap();
    // Used every 90 s: stays alive past one idle period...
    for t in [90, 180, 270, 360, 450, 540, 630, 720, 810, 900, 990] {
        assert!(s.get_session(&id, t).await.unwrap().is_some(), "at {t}");
    }
    // ...but never past max_lifetime.
    assert!(s.get_session(&id, 1000).await.unwrap().is_none());

    let idle = s.create_session(record("alice"), 0).await.unwrap();
    assert!(s.get_session(&idle, 99).await.unwrap().is_some());
    let idle = s.create_session(record("alice"), 0).await.unwrap();
    assert!(s.get_session(&idle, 100).await.unwrap().is_none());
}

#[tokio::test]
async fn a_use_within_the_refresh_interval_is_not_written() {
    // idle 100 s: the refresh interval is 10 s.
    let s = store().await;
    let id = s.create_session(record("alice"), 0).await.unwrap();
    let before: String = raw().await.get(session_key(&s, &id)).await.unwrap();
    let seen = s.get_session(&id, 10).await.unwrap().unwrap();
    assert_eq!(seen.last_seen, 0, "the caller sees the use as recorded");
    let after: String = raw().await.get(session_key(&s, &id)).await.unwrap();
    assert_eq!(before, after, "no write within the interval");
    // So the idle deadline still counts from the last write (0), not from 10.
    assert!(s.get_session(&id, 100).await.unwrap().is_none());

    // Past the interval the use is written and the deadline moves.
    let id = s.create_session(record("alice"), 0).await.unwrap();
    assert!(s.get_session(&id, 11).await.unwrap().is_some());
    let stored: SessionRecord = serde_json::from_str(
        &raw()
            .await
            .get::<_, String>(session_key(&s, &id))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored.last_seen, 11);
    assert!(s.get_session(&id, 110).await.unwrap().is_some());
}

#[tokio::test]
async fn an_idle_refresh_keeps_the_fields_a_newer_version_wrote() {
    // During a rolling upgrade a newer replica writes fields this version does not know; this
    // version's refresh moves `last_seen` and leaves them. (idle 100 s: refresh every 10 s.)
    let s = store().await;
    let mut r = record("carol");
    r.display_name = Some(r#"Carol "last_seen":5 {"x":1}"#.to_string());
    let id = s.create_session(r, 0).await.unwrap();
    let key = session_key(&s, &id);
    let mut c = raw().await;
    let written: String = c.get(&key).await.unwrap();
    let newer = written.replacen('{', r#"{"future":{"step_up":true,"last_seen":7},"#, 1);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&newer)
        .arg("KEEPTTL")
        .query_async(&mut c)
        .await
        .unwrap();
    let seen = s.get_session(&id, 11).await.unwrap().unwrap();
    assert_eq!(seen.last_seen, 11);
    let stored: String = c.get(&key).await.unwrap();
    let decoded: SessionRecord = serde_json::from_str(&stored).unwrap();
    assert_eq!(decoded.last_seen, 11, "{stored}");
    assert_eq!(
        decoded.display_name.as_deref(),
        Some(r#"Carol "last_seen":5 {"x":1}"#)
    );
    let fields = |json: &str| serde_json::from_str::<serde_json::Value>(json).unwrap();
    let mut expected = fields(&newer);
    expected["last_seen"] = 11.into();
    assert_eq!(fields(&stored), expected, "only last_seen changed");
    // The expiry moved with the use: alive at 110 (idle deadline 11 + 100), as without the field.
    assert!(s.get_session(&id, 110).await.unwrap().is_some());
}

#[tokio::test]
async fn sealed_records_are_read_refreshed_listed_and_ended_and_forged_ones_are_not() {
    let entity_id = format!("https://sp.test/{}", random_token().unwrap());
    let key = |k: &[u8]| session_store::RecordKeys::new(vec![k.repeat(32)]);
    let sealed = store_for(&entity_id).await.with_record_keys(key(b"k"));
    let plain = store_for(&entity_id).await;
    let other_key = store_for(&entity_id).await.with_record_keys(key(b"o"));
    let mut alice = record("alice");
    alice.session_index = Some("idx-1".into());
    let id = sealed.create_session(alice, 0).await.unwrap();
    let mut c = raw().await;
    let stored: String = c.get(session_key(&sealed, &id)).await.unwrap();
    assert!(stored.starts_with("m1:"), "{stored}");
    // Read, and refreshed past the interval (idle 100 s: every 10 s), sealed again.
    assert!(sealed.get_session(&id, 11).await.unwrap().is_some());
    let stored: String = c.get(session_key(&sealed, &id)).await.unwrap();
    assert!(
        stored.starts_with("m1:") && stored.contains(r#""last_seen":11"#),
        "{stored}"
    );
    assert!(sealed.get_session(&id, 12).await.unwrap().is_some());
    // Without keys it is read unchecked; under another key it is not read.
    assert!(plain.get_session(&id, 12).await.unwrap().is_some());
    assert!(other_key.get_session(&id, 12).await.unwrap().is_none());

    // A record written without the key (someone with write access to Redis), and the genuine
    // record copied under an ID of the copier's choosing: neither signs anyone in.
    let forged = plain.create_session(record("mallory"), 0).await.unwrap();
    assert!(sealed.get_session(&forged, 1).await.unwrap().is_none());
    let chosen = plain.create_session(record("mallory"), 0).await.unwrap();
    let _: () = c.set(session_key(&sealed, &chosen), &stored).await.unwrap();
    assert!(sealed.get_session(&chosen, 12).await.unwrap().is_none());
    assert_eq!(sealed.counters().records_refused, 2);
    // Told apart from a session that is not there, for the audit log.
    let refused = sealed.use_session(&forged, 1).await.unwrap();
    assert_eq!(refused, SessionState::Refused);
    let refused = sealed.session_alive(&chosen, 12).await.unwrap();
    assert_eq!(refused, SessionState::Refused);
    let unknown = SessionId::generate().unwrap();
    assert_eq!(
        sealed.use_session(&unknown, 12).await.unwrap(),
        SessionState::Gone
    );
    assert_eq!(sealed.counters().records_refused, 4);
    let listed = sealed.list_sessions(12).await.unwrap();
    let users: Vec<&str> = listed.iter().map(|s| s.record.user.as_str()).collect();
    assert_eq!(users, ["alice"]);

    // Single Logout finds the sealed record by its SessionIndex and ends it.
    let ended = sealed
        .end_sessions_of_subject("idp", "alice", &["idx-1".to_string()], EndReason::Slo, 13)
        .await
        .unwrap();
    assert_eq!(ended.len(), 1);
    assert!(sealed.get_session(&id, 13).await.unwrap().is_none());

    // New keys go in force for every clone; the same keys again change nothing.
    let clone = sealed.clone();
    assert!(!sealed.set_record_keys(key(b"k")));
    assert!(sealed.set_record_keys(key(b"n")));
    let id = clone.create_session(record("bob"), 0).await.unwrap();
    assert!(other_key.get_session(&id, 1).await.unwrap().is_none());
    assert!(store_for(&entity_id)
        .await
        .with_record_keys(key(b"n"))
        .get_session(&id, 1)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn keys_expire_with_the_session_and_hold_no_raw_ids() {
    let s = store().await;
    let id = s.create_session(record("alice"), 0).await.unwrap();
    s.put_pending("relay-token", pending(0), 600).await.unwrap();
    assert!(s
        .first_use_of_assertion("_assertion-1", 300, 0)
        .await
        .unwrap());

    let keys = keys_of(&s).await;
    assert_eq!(keys.len(), 5, "{keys:?}");
    let mut c = raw().await;
    for key in &keys {
        for secret in [id.expose(), "relay-token", "_assertion-1", "alice"] {
            assert!(!key.contains(secret), "{key} contains {secret}");
        }
        let ttl: i64 = c.ttl(key).await.unwrap();
        let want = match key.split(':').nth(2) {
            // The idle deadline (before the absolute end), kept a while to report the expiry.
            Some("session") => 100 + EXPIRED_RECORD_SECS,
            Some("pending") => 600,
            // The order of pending requests lives as long as the last one.
            Some("pending-order") => 600,
            Some("assertion") => 300,
            // The absolute end of the user's longest session, and as long again.
            Some("user") => 1000 + EXPIRED_RECORD_SECS,
            other => panic!("unexpected key kind {other:?}"),
        };
        assert!((want - 5..=want).contains(&ttl), "{key}: ttl {ttl}");
    }
}

#[tokio::test]
async fn record_expiry_caps_the_session() {
    let s = store().await;
    let mut r = record("alice");
    r.expires_at = 50;
    let id = s.create_session(r, 0).await.unwrap();
    let ttl: i64 = raw().await.ttl(session_key(&s, &id)).await.unwrap();
    let want = 50 + EXPIRED_RECORD_SECS;
    assert!((want - 5..=want).contains(&ttl), "ttl {ttl}");
    assert!(s.get_session(&id, 49).await.unwrap().is_some());
    assert!(s.get_session(&id, 50).await.unwrap().is_none());

    // SessionNotOnOrAfter already past: no session at all.
    let mut r = record("alice");
    r.expires_at = 5;
    let id = s.create_session(r, 10).await.unwrap();
    assert!(s.get_session(&id, 10).await.unwrap().is_none());
}

#[tokio::test]
async fn unknown_version_or_bad_json_reads_as_logged_out() {
    let s = store().await;
    let mut r = record("alice");
    r.version = SESSION_VERSION + 1;
    let id = s.create_session(r, 0).await.unwrap();
    assert!(s.get_session(&id, 1).await.unwrap().is_none());

    // A newer format with fields this version does not know, and junk.
    let id = s.create_session(record("alice"), 0).await.unwrap();
    let key = session_key(&s, &id);
    let mut c = raw().await;
    for junk in [
        "{\"version\":2,\"other\":[1,2]}",
        "not json",
        "",
        "{\"version\":1}",
    ] {
        let _: () = c.set(&key, junk).await.unwrap();
        assert!(s.get_session(&id, 1).await.unwrap().is_none(), "{junk:?}");
    }
    assert!(s
        .delete_session(&id, EndReason::Logout, 1)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn sessions_are_deleted_and_stay_deleted() {
    let s = store().await;
    let id = s.create_session(record("alice"), 0).await.unwrap();
    let got = s.get_session(&id, 1).await.unwrap().unwrap();
    assert_eq!(got.user, "alice");
    assert_eq!(got.created_at, 0);
    assert_eq!(got.expires_at, 1000);
    let deleted = s
        .delete_session(&id, EndReason::Logout, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.name_id, "alice");
    assert!(s.get_session(&id, 50).await.unwrap().is_none());
    assert!(s
        .delete_session(&id, EndReason::Logout, 1)
        .await
        .unwrap()
        .is_none());
    assert!(s.sessions_of_user("alice", 1).await.unwrap().is_empty());
    // A new login gets a new ID.
    let again = s.create_session(record("alice"), 2).await.unwrap();
    assert_ne!(again, id);
}

#[tokio::test]
async fn pending_requests_are_capped_and_the_oldest_gives_way() {
    let s = store().await.with_max_pending(3);
    for (n, token) in ["a", "b", "c"].into_iter().enumerate() {
        s.put_pending(token, pending(n as i64), n as i64 + 600)
            .await
            .unwrap();
    }
    // Taken ones leave the order: "d" finds room.
    assert!(s.take_pending("b", 3).await.unwrap().is_some());
    s.put_pending("d", pending(3), 603).await.unwrap();
    assert!(s.take_pending("a", 4).await.unwrap().is_some());
    s.put_pending("a2", pending(4), 604).await.unwrap();
    // Full with c, d, a2: "e" pushes out the oldest, "c" (the order is by deadline, to the
    // second; all pending logins live equally long).
    s.put_pending("e", pending(5), 605).await.unwrap();
    assert_eq!(s.take_pending("c", 6).await.unwrap(), None);
    for token in ["d", "a2", "e"] {
        assert!(s.take_pending(token, 6).await.unwrap().is_some(), "{token}");
    }
    // Many starts from a flood leave no more than the cap behind.
    for n in 0..50 {
        s.put_pending(&format!("flood-{n}"), pending(6), 606)
            .await
            .unwrap();
    }
    let pending_keys = keys_of(&s)
        .await
        .into_iter()
        .filter(|k| k.split(':').nth(2) == Some("pending"))
        .count();
    assert_eq!(pending_keys, 3);
    // Past their deadline, pending requests leave the order and count no more.
    for token in ["x", "y", "z"] {
        s.put_pending(token, pending(700), 710).await.unwrap();
    }
    s.put_pending("w", pending(710), 1310).await.unwrap();
    let order = format!("{}:pending-order", s.namespace());
    let members: i64 = raw().await.zcard(order).await.unwrap();
    assert_eq!(members, 1);
    assert!(s.take_pending("w", 711).await.unwrap().is_some());
    // The order lives until its last deadline, whatever the TTL of the latest entry.
    s.put_pending("long", pending(800), 1700).await.unwrap();
    s.put_pending("short", pending(800), 850).await.unwrap();
    let ttl: i64 = raw()
        .await
        .ttl(format!("{}:pending-order", s.namespace()))
        .await
        .unwrap();
    assert!((895..=900).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn pending_requests_are_used_once_and_expire() {
    let s = store().await;
    let req = pending(0);
    s.put_pending("tok", req.clone(), 10).await.unwrap();
    assert_eq!(s.take_pending("tok", 5).await.unwrap(), Some(req.clone()));
    assert_eq!(s.take_pending("tok", 5).await.unwrap(), None);
    s.put_pending("old", req, 10).await.unwrap();
    assert_eq!(s.take_pending("old", 10).await.unwrap(), None);
    assert_eq!(s.take_pending("never", 0).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_takes_of_one_pending_request_succeed_once() {
    let s = Arc::new(store().await);
    s.put_pending("tok", pending(0), 600).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.spawn(async move { s.take_pending("tok", 1).await.unwrap().is_some() });
    }
    let won = tasks.join_all().await.into_iter().filter(|w| *w).count();
    assert_eq!(won, 1);
}

#[tokio::test]
async fn assertion_ids_are_accepted_once_until_expiry() {
    let s = store().await;
    assert!(s.first_use_of_assertion("a", 10, 0).await.unwrap());
    assert!(!s.first_use_of_assertion("a", 10, 5).await.unwrap());
    assert!(!s.first_use_of_assertion("a", 20, 9).await.unwrap());
    assert!(s.first_use_of_assertion("b", 10, 0).await.unwrap());

    // Redis expires the entry on its own clock: one second here.
    let now = 1_000_000;
    assert!(s
        .first_use_of_assertion("short", now + 1, now)
        .await
        .unwrap());
    assert!(!s
        .first_use_of_assertion("short", now + 1, now)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(s
        .first_use_of_assertion("short", now + 3, now + 2)
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_uses_of_one_assertion_id_succeed_once() {
    // Two replicas (two connections, one namespace) and many tasks racing.
    let entity_id = format!("https://sp.test/{}", random_token().unwrap());
    let replicas = [
        Arc::new(store_for(&entity_id).await),
        Arc::new(store_for(&entity_id).await),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let s = replicas[i % 2].clone();
        tasks.spawn(async move { s.first_use_of_assertion("_race", 600, 0).await.unwrap() });
    }
    let firsts = tasks.join_all().await.into_iter().filter(|f| *f).count();
    assert_eq!(firsts, 1);
}

#[tokio::test]
async fn replicas_of_one_deployment_share_everything() {
    let entity_id = format!("https://sp.test/{}", random_token().unwrap());
    let a = store_for(&entity_id).await;
    let b = store_for(&entity_id).await;
    assert_eq!(a.namespace(), b.namespace());
    let id = a.create_session(record("alice"), 0).await.unwrap();
    assert_eq!(b.get_session(&id, 1).await.unwrap().unwrap().user, "alice");
    a.put_pending("tok", pending(0), 600).await.unwrap();
    assert!(b.take_pending("tok", 1).await.unwrap().is_some());
    assert!(a.take_pending("tok", 1).await.unwrap().is_none());
    assert!(a.first_use_of_assertion("x", 600, 0).await.unwrap());
    assert!(!b.first_use_of_assertion("x", 600, 0).await.unwrap());
    b.delete_session(&id, EndReason::Logout, 1).await.unwrap();
    assert!(a.get_session(&id, 2).await.unwrap().is_none());
}

#[tokio::test]
async fn two_deployments_on_one_redis_see_nothing_of_each_other() {
    let a = store().await;
    let b = store().await;
    assert_ne!(a.namespace(), b.namespace());
    let id = a.create_session(record("alice"), 0).await.unwrap();
    assert!(b.get_session(&id, 1).await.unwrap().is_none());
    assert!(b
        .delete_session(&id, EndReason::Logout, 1)
        .await
        .unwrap()
        .is_none());
    assert!(a.get_session(&id, 1).await.unwrap().is_some());
    assert!(b.sessions_of_user("alice", 1).await.unwrap().is_empty());
    assert_eq!(b.delete_sessions_of_user("alice", 1).await.unwrap(), 0);
    assert!(a.get_session(&id, 2).await.unwrap().is_some());

    a.put_pending("tok", pending(0), 600).await.unwrap();
    assert!(b.take_pending("tok", 1).await.unwrap().is_none());
    assert!(a.take_pending("tok", 1).await.unwrap().is_some());

    assert!(a.first_use_of_assertion("x", 600, 0).await.unwrap());
    assert!(b.first_use_of_assertion("x", 600, 0).await.unwrap());
}

/// Waits (up to 5 s) until `b` serves sessions from its cache: a record deleted behind its
/// back (no announcement) is still served.
async fn until_cache_serves(b: &RedisStore) {
    let mut c = raw().await;
    for _ in 0..50 {
        let probe = b.create_session(record("probe"), 0).await.unwrap();
        assert!(b.get_session(&probe, 1).await.unwrap().is_some());
        let _: () = c.del(session_key(b, &probe)).await.unwrap();
        if b.get_session(&probe, 1).await.unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the session cache never came up");
}

/// Polls `check` for up to 5 s.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..50 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn an_end_on_one_replica_empties_the_cache_of_the_others() {
    // Entries would live a minute: only the announcement can make replica b forget them.
    let entity = format!("https://sp.test/{}", random_token().unwrap());
    let a = store_with_cache(&entity, Duration::from_secs(60)).await;
    let b = store_with_cache(&entity, Duration::from_secs(60)).await;
    until_cache_serves(&b).await;

    let logout = a.create_session(record("alice"), 0).await.unwrap();
    let revoked = a.create_session(record("bob"), 0).await.unwrap();
    let slo = a.create_session(record("carol"), 0).await.unwrap();
    for id in [&logout, &revoked, &slo] {
        assert!(b.get_session(id, 1).await.unwrap().is_some());
    }
    a.delete_session(&logout, EndReason::Logout, 1)
        .await
        .unwrap();
    a.revoke_sessions_of_user("bob", EndReason::Admin, 1)
        .await
        .unwrap();
    a.end_sessions_of_subject("idp", "carol", &[], EndReason::Slo, 1)
        .await
        .unwrap();
    for id in [&logout, &revoked, &slo] {
        assert!(
            eventually(|| async { b.get_session(id, 1).await.unwrap().is_none() }).await,
            "replica b still serves an ended session"
        );
    }
    // And the replica that ended them never serves them again.
    for id in [&logout, &revoked, &slo] {
        assert!(a.get_session(id, 1).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn single_logout_ends_the_sessions_of_one_login() {
    single_logout_scenario(&store().await).await;
    let memory = session_store::MemoryStore::new(TIMEOUTS, Default::default());
    single_logout_scenario(&memory).await;
}

/// SLO's store operation, the same for every store.
async fn single_logout_scenario(s: &dyn Store) {
    let with = |name_id: &str, idp: &str, index: &str| SessionRecord {
        idp: idp.into(),
        idp_name: String::new(),
        session_index: Some(index.into()),
        ..record(name_id)
    };
    let a1 = s
        .create_session(with("alice", "idp", "_s1"), 0)
        .await
        .unwrap();
    let a2 = s
        .create_session(with("alice", "idp", "_s2"), 0)
        .await
        .unwrap();
    let other_idp = s
        .create_session(with("alice", "other", "_s1"), 0)
        .await
        .unwrap();
    let bob = s
        .create_session(with("bob", "idp", "_s1"), 0)
        .await
        .unwrap();

    let ended = s
        .end_sessions_of_subject("idp", "alice", &["_s1".to_string()], EndReason::Slo, 1)
        .await
        .unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].record.session_index.as_deref(), Some("_s1"));
    assert_eq!(ended[0].record.idp, "idp");
    assert!(matches!(
        s.session_alive(&a1, 1).await.unwrap(),
        SessionState::Ended(EndReason::Slo)
    ));
    for live in [&a2, &other_idp, &bob] {
        assert!(s.get_session(live, 1).await.unwrap().is_some());
    }
    // No SessionIndex: every session of that NameID from that IdP, and no other.
    let ended = s
        .end_sessions_of_subject("idp", "alice", &[], EndReason::Slo, 1)
        .await
        .unwrap();
    assert_eq!(ended.len(), 1);
    assert!(s.get_session(&a2, 1).await.unwrap().is_none());
    assert!(s.get_session(&other_idp, 1).await.unwrap().is_some());
    assert!(s.get_session(&bob, 1).await.unwrap().is_some());
    assert!(s
        .end_sessions_of_subject("idp", "nobody", &[], EndReason::Slo, 1)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn all_sessions_of_a_user_can_be_found_and_ended() {
    let s = store().await;
    let a1 = s.create_session(record("alice"), 0).await.unwrap();
    let a2 = s.create_session(record("alice"), 0).await.unwrap();
    let b1 = s.create_session(record("bob"), 0).await.unwrap();
    let mut found = s.sessions_of_user("alice", 1).await.unwrap();
    found.sort();
    let mut want = vec![sha256_hex(a1.expose()), sha256_hex(a2.expose())];
    want.sort();
    assert_eq!(found, want);

    // A logged-out session leaves the index.
    s.delete_session(&a2, EndReason::Logout, 1).await.unwrap();
    assert_eq!(
        s.sessions_of_user("alice", 1).await.unwrap(),
        vec![sha256_hex(a1.expose())]
    );

    assert_eq!(s.delete_sessions_of_user("alice", 1).await.unwrap(), 1);
    assert!(s.get_session(&a1, 1).await.unwrap().is_none());
    assert!(s.sessions_of_user("alice", 1).await.unwrap().is_empty());
    assert!(s.get_session(&b1, 1).await.unwrap().is_some());
}

#[tokio::test]
async fn a_look_does_not_slide_the_idle_timeout_and_an_expiry_is_reported_once() {
    let entity_id = format!("https://sp.test/{}", random_token().unwrap());
    let a = store_for(&entity_id).await;
    let b = store_for(&entity_id).await;
    let id = a.create_session(record("alice"), 0).await.unwrap();
    let before: String = raw().await.get(session_key(&a, &id)).await.unwrap();
    for t in [30, 60, 99] {
        assert!(matches!(
            b.session_alive(&id, t).await.unwrap(),
            SessionState::Live(_)
        ));
    }
    let after: String = raw().await.get(session_key(&a, &id)).await.unwrap();
    assert_eq!(before, after, "a look writes nothing");
    // Past the idle deadline the record is still there to report, to looks as often as asked...
    for _ in 0..2 {
        assert!(matches!(
            b.session_alive(&id, 100).await.unwrap(),
            SessionState::Expired(_)
        ));
    }
    // ...and to one use, on whichever replica comes first.
    assert!(matches!(
        a.use_session(&id, 101).await.unwrap(),
        SessionState::Expired(r) if r.user == "alice"
    ));
    assert_eq!(b.use_session(&id, 101).await.unwrap(), SessionState::Gone);
    assert_eq!(a.session_alive(&id, 101).await.unwrap(), SessionState::Gone);
    assert!(a.sessions_of_user("alice", 101).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_ended_session_says_why_on_every_replica() {
    let entity_id = format!("https://sp.test/{}", random_token().unwrap());
    let a = store_for(&entity_id).await;
    let b = store_for(&entity_id).await;
    let id = a.create_session(record("alice"), 0).await.unwrap();
    a.delete_session(&id, EndReason::Logout, 1).await.unwrap();
    assert_eq!(
        b.session_alive(&id, 2).await.unwrap(),
        SessionState::Ended(EndReason::Logout)
    );
    let other = SessionId::generate().unwrap();
    assert_eq!(
        b.session_alive(&other, 2).await.unwrap(),
        SessionState::Gone
    );

    let one = a.create_session(record("bob"), 0).await.unwrap();
    let two = a.create_session(record("bob"), 5).await.unwrap();
    let revoked = b
        .revoke_sessions_of_user("bob", EndReason::Admin, 10)
        .await
        .unwrap();
    let mut hashes: Vec<String> = revoked.iter().map(|s| s.hash.clone()).collect();
    hashes.sort();
    let mut want = vec![sha256_hex(one.expose()), sha256_hex(two.expose())];
    want.sort();
    assert_eq!(hashes, want);
    assert!(revoked.iter().all(|s| s.record.user == "bob"));
    for id in [&one, &two] {
        assert_eq!(
            a.session_alive(id, 11).await.unwrap(),
            SessionState::Ended(EndReason::Admin)
        );
    }
}

#[tokio::test]
async fn live_sessions_are_listed_without_their_ids() {
    let s = store().await;
    let b1 = s.create_session(record("bob"), 10).await.unwrap();
    let a1 = s.create_session(record("alice"), 20).await.unwrap();
    let a0 = s.create_session(record("alice"), 0).await.unwrap();
    let gone = s.create_session(record("carol"), 0).await.unwrap();
    s.delete_session(&gone, EndReason::Logout, 1).await.unwrap();
    let listed = s.list_sessions(50).await.unwrap();
    let got: Vec<(String, String, i64)> = listed
        .iter()
        .map(|x| (x.record.user.clone(), x.hash.clone(), x.record.created_at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("alice".into(), sha256_hex(a0.expose()), 0),
            ("alice".into(), sha256_hex(a1.expose()), 20),
            ("bob".into(), sha256_hex(b1.expose()), 10),
        ]
    );
    // At 105 the sessions made at 0 have passed their idle deadline.
    let later: Vec<String> = s
        .list_sessions(105)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.hash)
        .collect();
    assert_eq!(
        later,
        vec![sha256_hex(a1.expose()), sha256_hex(b1.expose())]
    );
}

#[tokio::test]
async fn connect_errors_name_the_server_and_never_the_password() {
    // A port nothing listens on: bind one, note it, and close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2-secret@127.0.0.1:{port}/3");
    let e = RedisStore::connect(&url, &RedisAccess::default(), "sp", TIMEOUTS)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, RedisConnectError::Unreachable { .. }), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port}, database 3")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");

    // A wrong password on the real server.
    let mut bad = url::Url::parse(&redis_url()).unwrap();
    bad.set_password(Some("hunter2-secret")).unwrap();
    bad.set_username("nobody-here").unwrap();
    let e = RedisStore::connect(bad.as_str(), &RedisAccess::default(), "sp", TIMEOUTS)
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let e = RedisStore::connect(
        "redis://:hunter2-secret@[::1",
        &RedisAccess::default(),
        "sp",
        TIMEOUTS,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RedisConnectError::InvalidUrl(_)));
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[tokio::test]
async fn a_subscribed_connection_answers_pings() {
    // The session cache's subscriber pings its connection to find one that hangs; a
    // subscribed connection must answer.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("saml-gw:test:invalidate").await.unwrap();
    let (mut sink, _messages) = pubsub.split();
    let pong = tokio::time::timeout(Duration::from_secs(2), sink.ping::<redis::Value>()).await;
    assert!(matches!(pong, Ok(Ok(_))), "{pong:?}");
}

#[tokio::test]
async fn a_renewal_refused_by_its_checks_changes_nothing_and_one_that_connects_keeps_the_sessions()
{
    let s = store().await;
    let clone = s.clone();
    let id = s.create_session(record("rene"), 1000).await.unwrap();
    // TLS settings for a plain redis:// server: refused, and the connection in force stays.
    let tls = session_store::RedisTls {
        ca_pem: Some(b"not a certificate".to_vec()),
        client: None,
    };
    let access = RedisAccess {
        tls: Some(tls),
        ..RedisAccess::default()
    };
    let refused = s.renew(&access).await.unwrap_err();
    assert_eq!(
        clone.counters().renewals,
        0,
        "a refused renewal does not count"
    );
    assert!(
        matches!(refused, RedisConnectError::InvalidTls(_)),
        "{refused}"
    );
    assert!(matches!(
        clone.use_session(&id, 1001).await.unwrap(),
        SessionState::Live(_)
    ));
    // A renewal that connects is in force for every clone, and the sessions are the same.
    // (That the new password or files are the ones used is shown in test_redis_ops.py and
    // test_redis_tls.py.)
    s.renew(&RedisAccess::default()).await.unwrap();
    assert_eq!(clone.counters().renewals, 1);
    assert!(matches!(
        clone.use_session(&id, 1002).await.unwrap(),
        SessionState::Live(_)
    ));
}
