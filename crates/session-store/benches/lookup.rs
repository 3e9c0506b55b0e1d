//! Session lookups per second, memory and Redis stores, each beside a baseline measured in the
//! same run: a `Mutex<HashMap>` get-and-clone of the same record for the memory store, a plain
//! Redis `GET` of the same record's JSON over the same kind of connection for the Redis store.
//!
//!     cargo bench -p session-store --bench lookup            # REDIS_URL or 127.0.0.1:6379
//!
//! Run by hand (docs/performance.md has the figures); never part of the test suite.

use std::collections::HashMap;
use std::sync::Mutex;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use session_store::{
    MemoryLimits, MemoryStore, RedisStore, SessionId, SessionRecord, SessionTimeouts, Store,
    SESSION_VERSION,
};

const TIMEOUTS: SessionTimeouts = SessionTimeouts {
    idle: 1800,
    max_lifetime: 8 * 3600,
};

/// A user of an Entra or ADFS tenant: 50 groups.
fn record() -> SessionRecord {
    SessionRecord {
        version: SESSION_VERSION,
        sp_entity_id: "https://dash.example.com/saml/metadata".into(),
        idp: "https://sts.windows.net/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/".into(),
        idp_name: String::new(),
        user: "alice.analyst@corp.example".into(),
        name_id: "alice.analyst@corp.example".into(),
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        session_index: Some("_be9967abd904ddcae3c0eb4189adbe3f71e327cf93".into()),
        name_qualifier: None,
        sp_name_qualifier: None,
        email: Some("alice.analyst@corp.example".into()),
        display_name: Some("Alice Analyst".into()),
        given_name: None,
        surname: None,
        groups: session_store::groups((0..50).map(|i| format!("corp-analytics-team-{i:03}"))),
        attributes: Default::default(),
        csrf_token: "y3bS7bq0cBq0Xo2XkqOQ3Ww8k6q0b3rOq1Zc3v5y1aA".into(),
        created_at: 0,
        authn_instant: None,
        authn_context: None,
        expires_at: 0,
        last_seen: 0,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let store = MemoryStore::new(TIMEOUTS, MemoryLimits::default());
    // 10,000 live sessions, so the lookup is not into an empty map.
    let ids: Vec<SessionId> = (0..10_000)
        .map(|_| {
            rt.block_on(store.create_session(record(), 1_000))
                .expect("created")
        })
        .collect();
    let baseline: Mutex<HashMap<String, SessionRecord>> = Mutex::new(
        ids.iter()
            .map(|id| (id.expose().to_string(), record()))
            .collect(),
    );
    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("baseline: Mutex<HashMap> get + clone", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            let map = baseline.lock().expect("not poisoned");
            map.get(ids[i].expose()).cloned()
        })
    });
    group.bench_function("MemoryStore::get_session", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            rt.block_on(store.get_session(&ids[i], 1_001))
                .expect("store answers")
        })
    });
    group.finish();
}

fn redis(c: &mut Criterion) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let rt = runtime();
    let store = rt
        .block_on(RedisStore::connect(
            &url,
            &session_store::RedisAccess::default(),
            "https://bench.example/saml/metadata",
            TIMEOUTS,
        ))
        .expect("a Redis server at REDIS_URL (default 127.0.0.1:6379)");
    let now = 1_000;
    let ids: Vec<SessionId> = (0..1_000)
        .map(|_| {
            rt.block_on(store.create_session(record(), now))
                .expect("created")
        })
        .collect();
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let mut raw = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("a raw connection");
    let json = serde_json::to_string(&record()).expect("json");
    let raw_key = "saml-gw-bench:baseline";
    rt.block_on(async {
        redis::cmd("SET")
            .arg(raw_key)
            .arg(&json)
            .query_async::<()>(&mut raw)
            .await
    })
    .expect("SET");

    let mut group = c.benchmark_group("redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: raw GET of the same JSON", |b| {
        b.iter(|| {
            rt.block_on(async {
                redis::cmd("GET")
                    .arg(raw_key)
                    .query_async::<Option<String>>(&mut raw)
                    .await
            })
            .expect("GET")
        })
    });
    let mut i = 0usize;
    group.bench_function("RedisStore::get_session", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            // Within the refresh interval: a read, no write (the idle-timeout rule).
            rt.block_on(store.get_session(&ids[i], now + 1))
                .expect("store answers")
        })
    });
    group.finish();
    for id in &ids {
        let _ = rt.block_on(store.delete_session(id, session_store::EndReason::Logout, now));
    }
    let _ = rt.block_on(async {
        redis::cmd("DEL")
            .arg(raw_key)
            .query_async::<()>(&mut raw)
            .await
    });
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
