//! The audit log: one JSON object per line, a durable stream separate from `tracing` logs.
//!
//! Each record is written and flushed to disk (`fdatasync`) before the HTTP answer it describes
//! leaves, so that a crash never loses a login that the user saw succeed. When a record cannot
//! be written, [`AuditLog::record`] fails and the caller fails the login closed. Records never
//! carry secrets: the session appears only as a hash of its ID.
//!
//! One writer thread owns the file. Callers hand it their line through a bounded queue and wait
//! for its answer; the writer takes every line that is waiting (group commit), writes them in
//! one `write` and syncs once. A flood of requests that are audited (junk posted to the ACS,
//! anonymous `/saml/login`) therefore costs one sync per batch rather than per record, and
//! memory stays bounded: when the queue is full, callers wait their turn.
//!
//! Before each batch the writer checks that the path still names the file it holds open. When
//! `logrotate` (or an operator) has renamed or removed it, the writer opens the path anew, so
//! rotation needs no signal and no `copytruncate`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

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
    source: io::Error,
}

/// Lines waiting for the writer, at most; a caller beyond them waits for room.
const QUEUE: usize = 1024;

/// Lines the writer takes into one write and one sync, at most.
const BATCH: usize = 256;

/// One line for the writer, and where its outcome goes.
struct Pending {
    line: Vec<u8>,
    done: oneshot::Sender<io::Result<()>>,
}

/// An append-only JSON Lines file, written by its own thread.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    queue: mpsc::Sender<Pending>,
    /// Records written, by event and reason (the metrics' counters).
    counts: Arc<Mutex<EventCounts>>,
}

/// Records written per (event, reason); reasons are the stable codes, so the set stays small.
pub type EventCounts = std::collections::BTreeMap<(String, String), u64>;

impl AuditLog {
    /// Opens (creating, mode 0640) the audit file for appending and starts its writer thread.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let wrap = |source| AuditError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(wrap)?;
        }
        let file = open_append(path).map_err(wrap)?;
        let (queue, waiting) = mpsc::channel(QUEUE);
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            torn: false,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(waiting))
            .map_err(wrap)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            queue,
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

    /// Writes one record durably: returns once it is on disk.
    pub async fn record(&self, mut record: Record) -> Result<(), AuditError> {
        let error = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        record.ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut line = serde_json::to_vec(&record).map_err(|e| error(io::Error::other(e)))?;
        line.push(b'\n');
        let key = (
            record
                .event
                .and_then(|e| serde_json::to_value(e).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            record.reason.unwrap_or_default(),
        );
        let stopped = || error(io::Error::other("the audit writer has stopped"));
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Pending { line, done })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?.map_err(error)?;
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry(key).or_default() += 1;
        Ok(())
    }
}

/// The writer thread's side: the open file and what the last batch left behind.
struct Writer {
    path: PathBuf,
    file: File,
    /// The last write failed part-way, so the file may end inside a line.
    torn: bool,
}

impl Writer {
    /// Writes batches until every [`AuditLog`] handle is gone.
    fn run(mut self, mut waiting: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(BATCH);
        while waiting.blocking_recv_many(&mut batch, BATCH) > 0 {
            let outcome = self.write(&batch);
            if let Err(e) = &outcome {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
            }
            for pending in batch.drain(..) {
                let answer = match &outcome {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                // A caller that went away (its request was dropped) needs no answer.
                let _ = pending.done.send(answer);
            }
        }
    }

    /// Appends the batch's lines with one write and syncs them.
    fn write(&mut self, batch: &[Pending]) -> io::Result<()> {
        if self.rotated()? {
            self.file = open_append(&self.path)?;
            self.torn = false;
            tracing::info!(path = %self.path.display(), "audit log reopened after rotation");
        }
        let mut bytes = Vec::with_capacity(batch.iter().map(|p| p.line.len()).sum::<usize>() + 1);
        if self.torn {
            // End the line a failed write left unfinished, so that this batch's lines parse.
            bytes.push(b'\n');
        }
        for pending in batch {
            bytes.extend_from_slice(&pending.line);
        }
        self.torn = true;
        (&self.file).write_all(&bytes)?;
        self.torn = false;
        self.file.sync_data()
    }

    /// Whether the path no longer names the open file (renamed or removed by rotation).
    fn rotated(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let open = self.file.metadata()?;
        match std::fs::metadata(&self.path) {
            Ok(named) => Ok((named.dev(), named.ino()) != (open.dev(), open.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// Opens `path` for appending, creating it with mode 0640; a file it creates is made durable by
/// syncing its folder too.
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    if !existed {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
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

    fn failure(reason: &str) -> Record {
        Record {
            event: Some(Event::LoginFailure),
            reason: Some(reason.into()),
            ..Default::default()
        }
    }

    fn reasons(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].to_string())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_all_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        // More callers than the queue holds, so some wait for room and batches form.
        let writers: Vec<_> = (0..(QUEUE + 300))
            .map(|n| {
                let log = log.clone();
                tokio::spawn(async move { log.record(failure(&format!("r{n}"))).await })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        let mut seen = reasons(&path);
        seen.sort();
        let mut wanted: Vec<String> = (0..(QUEUE + 300)).map(|n| format!("\"r{n}\"")).collect();
        wanted.sort();
        assert_eq!(seen, wanted);
        let counted: u64 = log.counts().values().sum();
        assert_eq!(counted, (QUEUE + 300) as u64);
    }

    #[tokio::test]
    async fn a_rotated_file_is_followed_by_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(failure("before")).await.unwrap();
        // logrotate's default: rename, then (maybe) create; the writer must not follow the rename.
        let rotated = dir.path().join("audit.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.record(failure("after_rename")).await.unwrap();
        assert_eq!(reasons(&rotated), ["\"before\""]);
        assert_eq!(reasons(&path), ["\"after_rename\""]);
        // Removed outright: made again.
        std::fs::remove_file(&path).unwrap();
        log.record(failure("after_removal")).await.unwrap();
        assert_eq!(reasons(&path), ["\"after_removal\""]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[tokio::test]
    async fn a_file_that_cannot_take_the_record_fails_the_caller() {
        // /dev/full refuses every write with ENOSPC: the caller must see it, never a success.
        let log = AuditLog::open(Path::new("/dev/full")).unwrap();
        let err = log.record(failure("lost")).await.unwrap_err();
        assert!(err.to_string().contains("/dev/full"), "{err}");
        assert!(log.counts().is_empty());
    }

    #[tokio::test]
    async fn a_failed_write_does_not_spoil_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"{\"half\":").unwrap();
        let (done, _outcome) = oneshot::channel();
        let mut writer = Writer {
            path: path.clone(),
            file: open_append(&path).unwrap(),
            torn: true,
        };
        let line = b"{\"reason\":\"whole\"}\n".to_vec();
        writer.write(&[Pending { line, done }]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().last(), Some("{\"reason\":\"whole\"}"));
    }
}
