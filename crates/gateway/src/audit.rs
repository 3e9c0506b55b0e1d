//! The audit log: one JSON object per line, a durable stream separate from `tracing` logs.
//!
//! Each record is written and flushed to disk (`fdatasync`) before the HTTP answer it describes
//! leaves, so that a crash never loses a login that the user saw succeed. When a record cannot
//! be written, [`AuditLog::record`] fails and the caller fails the login closed. Records never
//! carry secrets: the session appears only as a hash of its ID.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A login was started (AuthnRequest sent).
    LoginStart,
    /// A response was accepted and a session made.
    LoginSuccess,
    /// A response or login request was refused.
    LoginFailure,
    /// A user signed out.
    Logout,
    /// A sign-out was refused (`reason`: `csrf_token_invalid`); the session goes on.
    LogoutRefused,
    /// A Single Logout message: an IdP's LogoutRequest that ended sessions (one record per
    /// session), the IdP's LogoutResponse to ours, or either refused (`reason`).
    Slo,
    /// A signed-in user was refused by a route's rule.
    AccessDenied,
    /// A session passed its idle or absolute timeout: found so by a request (once per
    /// session), or by the watcher of an open WebSocket, which it closed.
    SessionExpired,
    /// A session was ended before its time (`reason`: `logout`, `admin`, ...) and an open
    /// WebSocket of it was closed; or an administrator revoked it (`reason`: `admin`).
    SessionRevoked,
    /// SIGHUP: the routes were reloaded, or the reload was refused (`reason`:
    /// `config_invalid`, `detail`: the config error).
    RoutesReloaded,
    /// The IdP's trusted certificates or endpoints changed: a metadata refresh or a SIGHUP
    /// brought a different document (`detail`: what was added and removed).
    IdpTrustChanged,
}

/// One audit record; empty fields are left out of the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    /// UTC time with milliseconds, filled in by [`AuditLog::record`].
    pub ts: String,
    /// The event.
    pub event: Option<Event>,
    /// A stable reason code for failures and denials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The user (NameID or configured user key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The IdP entity ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// The IdP's configured name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_name: Option<String>,
    /// The assertion ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assertion_id: Option<String>,
    /// How the IdP signed the user in: the assertion's AuthnContextClassRef.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authn_context: Option<String>,
    /// A hash of the session ID, never the ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The client's User-Agent, truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The request path (without query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The route (app) name, for access decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The AuthnRequest ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The reference shown to the user on an error page.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Further detail (such as the IdP's status code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The audit record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("the audit log {path} cannot be written: {source}")]
pub struct AuditError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// An append-only JSON Lines file.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    /// Records written, by event and reason (the metrics' counters).
    counts: Arc<Mutex<EventCounts>>,
}

/// Records written per (event, reason); reasons are the stable codes, so the set stays small.
pub type EventCounts = std::collections::BTreeMap<(String, String), u64>;

impl AuditLog {
    /// Opens (creating, mode 0640) the audit file for appending.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let wrap = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(wrap)?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(wrap)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
            counts: Arc::default(),
        })
    }

    /// How many records of each event and reason were written since start-up.
    pub fn counts(&self) -> EventCounts {
        self.counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Writes one record durably.
    pub async fn record(&self, mut record: Record) -> Result<(), AuditError> {
        record.ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut line = serde_json::to_vec(&record).map_err(|e| AuditError {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let key = (
            record
                .event
                .and_then(|e| serde_json::to_value(e).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            record.reason.clone().unwrap_or_default(),
        );
        let file = self.file.clone();
        let path = self.path.clone();
        let io_error = |source| AuditError {
            path: path.clone(),
            source,
        };
        // File writes and fsync block; keep them off the async workers.
        tokio::task::spawn_blocking(move || {
            let file = file
                .lock()
                .map_err(|_| std::io::Error::other("audit log lock poisoned"))?;
            (&*file).write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(|e| io_error(std::io::Error::other(e)))?
        .map_err(io_error)?;
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry(key).or_default() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for reason in ["signature_invalid", "audience_mismatch"] {
            log.record(Record {
                event: Some(Event::LoginFailure),
                reason: Some(reason.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["event"], "login_failure");
        assert_eq!(lines[1]["reason"], "audience_mismatch");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
        assert!(lines[0].get("user").is_none());
    }
}
