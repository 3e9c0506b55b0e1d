//! Resident memory of the memory store holding N sessions of a user in 50 groups.
//!
//!     cargo run --release -p session-store --example memory_rss -- 100000
//!
//! Prints the process's resident set size (VmRSS from /proc/self/status) before and after
//! filling the store, and the difference per session. Linux only; run by hand.

use session_store::{MemoryLimits, MemoryStore, SessionRecord, SessionTimeouts, Store};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn record(i: usize) -> SessionRecord {
    SessionRecord {
        version: session_store::SESSION_VERSION,
        sp_entity_id: "https://dash.example.com/saml/metadata".into(),
        idp: "https://sts.windows.net/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/".into(),
        idp_name: String::new(),
        user: format!("user{i:06}@corp.example"),
        name_id: format!("user{i:06}@corp.example"),
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        session_index: Some(format!("_be9967abd904ddcae3c0eb4189adbe3f{i:010}")),
        name_qualifier: None,
        sp_name_qualifier: None,
        email: Some(format!("user{i:06}@corp.example")),
        display_name: Some(format!("User {i}")),
        given_name: None,
        surname: None,
        groups: session_store::groups((0..50).map(|g| format!("corp-analytics-team-{g:03}"))),
        attributes: Default::default(),
        csrf_token: "y3bS7bq0cBq0Xo2XkqOQ3Ww8k6q0b3rOq1Zc3v5y1aA".into(),
        created_at: 0,
        authn_instant: None,
        authn_context: None,
        expires_at: 0,
        last_seen: 0,
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let store = MemoryStore::new(
        SessionTimeouts {
            idle: 1800,
            max_lifetime: 8 * 3600,
        },
        MemoryLimits {
            max_sessions: n.max(1),
            ..MemoryLimits::default()
        },
    );
    let before = rss_kib();
    for i in 0..n {
        rt.block_on(store.create_session(record(i), 1_000))
            .expect("room for every session");
    }
    let after = rss_kib();
    let per = (after.saturating_sub(before) * 1024) / n.max(1) as u64;
    println!("sessions: {n} (50 groups each)");
    println!("VmRSS before: {before} KiB, after: {after} KiB");
    println!(
        "difference: {} MiB, {per} bytes per session",
        after.saturating_sub(before) / 1024
    );
}
