//! `saml-gateway sessions list|revoke`: sessions seen and ended from outside the gateway.
//!
//! Both commands work on the shared store (`sessions.store: redis`): they connect to the Redis
//! the replicas use, in the same key namespace (derived from the SP entity ID, so the config
//! file must be the replicas' own). A revoked session ends on every replica at once, and the
//! WebSockets open under it close within seconds ([`crate::session_watch`]). Sessions are shown
//! by the hash that audit records carry, never by their ID.
//!
//! The memory store lives inside one gateway process: no other process can list or end its
//! sessions, so with `sessions.store: memory` both commands refuse and say so.

use chrono::{DateTime, Utc};
use session_store::{EndReason, RedisStore, StoredSession, UnixTime};

use crate::audit::{AuditLog, Event, Record};
use crate::config::{Config, ConfigError, StoreKind};
use crate::server::connect_redis;
use crate::state::unix_now;

/// Digits of the session hash shown, as in audit records.
const SHOWN_HASH_DIGITS: usize = 24;

/// Prints the live sessions of the deployment.
pub async fn list(config: &Config) -> anyhow::Result<()> {
    let store = open(config).await?;
    let now = unix_now();
    let sessions = store
        .list_sessions(now)
        .await
        .map_err(|e| anyhow::anyhow!("listing the sessions failed: {e}"))?;
    print!("{}", render(&sessions, now));
    Ok(())
}

/// Ends every session of the user with this NameID and audits each as `session_revoked`
/// (reason `admin`).
pub async fn revoke(config: &Config, name_id: &str) -> anyhow::Result<()> {
    // Opened first: a revocation that cannot be audited is not started.
    let audit = AuditLog::open(&config.audit_file)
        .map_err(|e| anyhow::anyhow!("{}: audit.file: {e}", config.file.display()))?;
    let store = open(config).await?;
    let revoked = store
        .revoke_sessions_of_user(name_id, EndReason::Admin, unix_now())
        .await
        .map_err(|e| anyhow::anyhow!("revoking the sessions failed: {e}"))?;
    let mut audit_failed = None;
    for session in &revoked {
        let record = Record {
            event: Some(Event::SessionRevoked),
            reason: Some(EndReason::Admin.code().to_string()),
            user: Some(session.record.user.clone()),
            idp: Some(session.record.idp.clone()),
            idp_name: Some(session.record.idp_name.clone()).filter(|n| !n.is_empty()),
            session: Some(shown_hash(session).to_string()),
            detail: Some("saml-gateway sessions revoke".to_string()),
            ..Record::default()
        };
        if let Err(e) = audit.record(record).await {
            audit_failed = Some(e);
        }
        println!("revoked {}", shown_hash(session));
    }
    println!(
        "{} live session(s) of {name_id} revoked on every replica",
        revoked.len()
    );
    match audit_failed {
        Some(e) => Err(anyhow::anyhow!(
            "the sessions are revoked, but the audit log was not fully written: {e}"
        )),
        None => Ok(()),
    }
}

async fn open(config: &Config) -> anyhow::Result<RedisStore> {
    match &config.sessions.store {
        StoreKind::Memory => Err(ConfigError {
            file: config.file.clone(),
            key: "sessions.store".to_string(),
            message: "is `memory`: sessions live inside each gateway process, and no other \
                      process can list or end them (restarting the gateway ends them all). With \
                      sessions.store: redis, these commands work on every replica's sessions"
                .to_string(),
        }
        .into()),
        StoreKind::Redis { url, .. } => Ok(connect_redis(config, url, std::time::Duration::ZERO)
            .await?
            .0),
    }
}

fn shown_hash(session: &StoredSession) -> &str {
    session
        .hash
        .get(..SHOWN_HASH_DIGITS)
        .unwrap_or(&session.hash)
}

/// The IdP of a session as listed: its configured name, or its entity ID for a session
/// recorded without one.
fn idp_shown(record: &session_store::SessionRecord) -> &str {
    if record.idp_name.is_empty() {
        &record.idp
    } else {
        &record.idp_name
    }
}

fn time(t: UnixTime) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The table `sessions list` prints.
fn render(sessions: &[StoredSession], now: UnixTime) -> String {
    let header = [
        "USER",
        "NAMEID",
        "SESSION",
        "CREATED",
        "LAST SEEN",
        "EXPIRES",
        "IDP",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = sessions
        .iter()
        .map(|s| {
            [
                s.record.user.escape_debug().to_string(),
                s.record.name_id.escape_debug().to_string(),
                shown_hash(s).to_string(),
                time(s.record.created_at),
                time(s.record.last_seen),
                time(s.record.expires_at),
                idp_shown(&s.record).escape_debug().to_string(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "{} live session(s) at {}\n",
        rows.len(),
        time(now)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_store::{SessionRecord, SESSION_VERSION};

    #[test]
    fn the_table_shows_hashes_and_times_never_ids() {
        let record = SessionRecord {
            version: SESSION_VERSION,
            sp_entity_id: "sp".into(),
            idp: "idp".into(),
            idp_name: String::new(),
            user: "alice\n".into(),
            name_id: "alice".into(),
            name_id_format: None,
            session_index: None,
            name_qualifier: None,
            sp_name_qualifier: None,
            email: None,
            display_name: None,
            given_name: None,
            surname: None,
            groups: session_store::groups::<&str>([]),
            attributes: Default::default(),
            csrf_token: "csrf-secret".into(),
            created_at: 0,
            authn_instant: None,
            authn_context: None,
            expires_at: 28800,
            last_seen: 60,
        };
        let text = render(
            &[StoredSession {
                hash: "ab".repeat(32),
                record,
            }],
            120,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("USER"), "{text}");
        assert!(lines[1].contains(&"ab".repeat(12)), "{text}");
        assert!(!lines[1].contains(&"ab".repeat(13)), "{text}");
        assert!(lines[1].starts_with("alice\\n "), "{text}");
        assert!(lines[1].contains("1970-01-01T00:01:00Z"), "{text}");
        assert!(lines[1].contains("1970-01-01T08:00:00Z"), "{text}");
        assert!(
            lines[1].trim_end().ends_with(" idp"),
            "no name: the entity ID; {text}"
        );
        assert!(!text.contains("csrf-secret"));
        assert_eq!(lines[2], "1 live session(s) at 1970-01-01T00:02:00Z");
    }
}
