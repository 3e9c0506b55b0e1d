//! The audit log: one JSON object per line, a durable stream separate from `tracing` logs.
//!
//! Each record is written and flushed to disk (`fdatasync`) before the HTTP answer it describes
//! leaves, so that a crash never loses a login that the user saw succeed. When a record cannot
//! be written, [`AuditLog::record`] fails, the caller fails the login closed, and the writer cuts
//! what the disk took of the failed batch back out of the file, so that the log does not claim
//! what the user was told did not happen. (A caller that gave up waiting, after 10 s, is told
//! the write failed while its line may still be written later: a disk that hangs, then
//! recovers.) Records never carry secrets: the session appears only as a hash of its ID.
//!
//! One writer thread owns the file. Callers hand it their line through a bounded queue and wait
//! for its answer; the writer takes every line that is waiting (group commit), writes them in
//! one `write` and syncs once. A flood of requests that are audited (junk posted to the ACS,
//! anonymous `/saml/login`) therefore costs one sync per batch rather than per record, and
//! memory stays bounded: when the queue is full, callers wait their turn.
//!
//! Each batch is written under an exclusive `flock` on the file: `saml-gateway sessions revoke`
//! appends to the same file from its own process, and the lock keeps its lines out of a batch
//! that may have to be cut back.
//!
//! Before each batch the writer checks that the path still names the file it holds open. When
//! `logrotate` (or an operator) has renamed or removed it, the writer opens the path anew, so
//! rotation needs no signal and no `copytruncate`.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use rustix::fs::{flock, FlockOperation};
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
    /// A request named a session whose record in Redis no key of
    /// `sessions.redis_record_key_file` sealed (`reason`: `record_not_sealed`): a record
    /// written or copied there without the key. Read as signed out.
    SessionRefused,
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
    /// When the IdP signed the user in: the assertion's AuthnInstant (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authn_instant: Option<String>,
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
    /// How many events one summary record stands for (refusals over the login budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
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

/// Longest a caller waits for room in the queue and then for its record to be on disk. A disk
/// that hangs (a stalled network mount) fails the logins closed instead of holding them.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One line for the writer, what it counts as, and where its outcome goes.
struct Pending {
    line: Vec<u8>,
    key: (String, String),
    done: oneshot::Sender<io::Result<()>>,
}

/// An append-only JSON Lines file, written by its own thread.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    queue: mpsc::Sender<Pending>,
    /// Records written, by event and reason (the metrics' counters).
    counts: Arc<Mutex<EventCounts>>,
    /// Batches synced to disk.
    syncs: Arc<AtomicU64>,
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
        let (file, torn) = open_append(path).map_err(wrap)?;
        let (queue, waiting) = mpsc::channel(QUEUE);
        let counts = Arc::default();
        let syncs = Arc::default();
        let writer = Writer {
            path: path.to_path_buf(),
            file,
            torn,
            unlockable: false,
            counts: Arc::clone(&counts),
            syncs: Arc::clone(&syncs),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(waiting))
            .map_err(wrap)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            queue,
            counts,
            syncs,
        })
    }

    /// How many records of each event and reason were written since start-up.
    pub fn counts(&self) -> EventCounts {
        self.counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// How many batches were synced to disk since start-up.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Writes one record durably: returns once it is on disk.
    pub async fn record(&self, mut record: Record) -> Result<(), AuditError> {
        let error = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        record.ts = timestamp(Utc::now());
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
        let stalled = || {
            error(io::Error::new(
                io::ErrorKind::TimedOut,
                "the disk did not answer",
            ))
        };
        let (done, outcome) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + WAIT;
        tokio::time::timeout_at(deadline, self.queue.send(Pending { line, key, done }))
            .await
            .map_err(|_| stalled())?
            .map_err(|_| stopped())?;
        tokio::time::timeout_at(deadline, outcome)
            .await
            .map_err(|_| stalled())?
            .map_err(|_| stopped())?
            .map_err(error)
    }

    /// Writes `records` durably, handed to the writer together so that they share its syncs
    /// (a pass of summaries); the outcome of each, in order.
    pub async fn record_all(&self, records: Vec<Record>) -> Vec<Result<(), AuditError>> {
        let count = records.len();
        let mut writes = tokio::task::JoinSet::new();
        for (index, record) in records.into_iter().enumerate() {
            let audit = self.clone();
            writes.spawn(async move { (index, audit.record(record).await) });
        }
        let mut outcomes: Vec<Option<Result<(), AuditError>>> = (0..count).map(|_| None).collect();
        while let Some(done) = writes.join_next().await {
            // A write task cannot panic; if one did, its record counts as not written.
            if let Ok((index, outcome)) = done {
                if let Some(slot) = outcomes.get_mut(index) {
                    *slot = Some(outcome);
                }
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    Err(AuditError {
                        path: self.path.clone(),
                        source: io::Error::other("the write stopped"),
                    })
                })
            })
            .collect()
    }
}

/// How audit records write a time: UTC with milliseconds, `2026-12-07T10:00:00.000Z`.
pub fn timestamp(at: impl Into<chrono::DateTime<Utc>>) -> String {
    at.into().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The writer thread's side: the open file and what the last batch left behind.
struct Writer {
    path: PathBuf,
    file: File,
    /// The file may end inside a line (a write that failed part-way, or a crash before this
    /// process started): the next batch starts with a line break.
    torn: bool,
    /// The file system refused a lock once (warned of then).
    unlockable: bool,
    counts: Arc<Mutex<EventCounts>>,
    syncs: Arc<AtomicU64>,
}

impl Writer {
    /// Writes batches until every [`AuditLog`] handle is gone.
    fn run(mut self, mut waiting: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(BATCH);
        while waiting.blocking_recv_many(&mut batch, BATCH) > 0 {
            let outcome = self.write(&batch);
            match &outcome {
                Ok(()) => {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    // Counted here, not by the callers: a caller that went away (its request
                    // was dropped) still has its record on disk.
                    let mut counts = self
                        .counts
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    for pending in &batch {
                        *counts.entry(pending.key.clone()).or_default() += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
                }
            }
            for pending in batch.drain(..) {
                let answer = match &outcome {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                // A caller that went away needs no answer.
                let _ = pending.done.send(answer);
            }
        }
    }

    /// Appends the batch's lines with one write and syncs them. A batch that fails is cut back
    /// out of the file: its callers are told it failed (a login fails closed), so none of its
    /// lines may stay behind to say otherwise.
    fn write(&mut self, batch: &[Pending]) -> io::Result<()> {
        if self.rotated()? {
            (self.file, self.torn) = open_append(&self.path)?;
            tracing::info!(path = %self.path.display(), "audit log reopened after rotation");
        }
        let mut bytes = Vec::with_capacity(batch.iter().map(|p| p.line.len()).sum::<usize>() + 1);
        if self.torn {
            // End the line left unfinished, so that this batch's lines parse.
            bytes.push(b'\n');
        }
        for pending in batch {
            bytes.extend_from_slice(&pending.line);
        }
        // Another process may append to the same file (`saml-gateway sessions revoke`): under
        // the lock its lines cannot land inside this batch's span, which a cut takes back.
        let locked = self.lock()?;
        let outcome = self.write_locked(&bytes);
        if locked {
            let _ = flock(&self.file, FlockOperation::Unlock);
        }
        outcome
    }

    /// Takes the exclusive lock on the file; `false` when the file system has no locks (an NFS
    /// mount with `nolock`): the batch is then written without one (warned of once), since
    /// failing every record would fail every login closed for want of a protection against a
    /// rare command.
    fn lock(&mut self) -> io::Result<bool> {
        use rustix::io::Errno;
        match flock(&self.file, FlockOperation::LockExclusive) {
            Ok(()) => Ok(true),
            Err(e) if [Errno::NOLCK, Errno::NOTSUP, Errno::NOSYS].contains(&e) => {
                if !self.unlockable {
                    self.unlockable = true;
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "the audit log's file system takes no locks; batches are written \
                         without one"
                    );
                }
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends `bytes` and syncs them, or cuts what was written back out; the file is locked.
    fn write_locked(&mut self, bytes: &[u8]) -> io::Result<()> {
        let before = (self.file.metadata()?.len(), self.torn);
        let (written, mut outcome) = self.append(bytes);
        if outcome.is_ok() {
            outcome = self.file.sync_data();
        }
        if outcome.is_err() && written > 0 {
            self.cut_back(before, written);
        }
        outcome
    }

    /// Writes `bytes` at the end of the file; returns how many the file took, and whether
    /// that was all.
    fn append(&mut self, bytes: &[u8]) -> (u64, io::Result<()>) {
        let mut written = 0;
        while written < bytes.len() {
            match (&self.file).write(&bytes[written..]) {
                Ok(0) => return (written as u64, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    written += n;
                    // Part of the batch is in the file: until the rest is, it ends mid-line.
                    self.torn = written < bytes.len();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (written as u64, Err(e)),
            }
        }
        (written as u64, Ok(()))
    }

    /// Cuts the `written` bytes of a failed batch back out of the file, which was `len` long
    /// and ended mid-line (`torn`) before it, and syncs the cut. A write may have stopped
    /// part-way (a full disk) or the sync failed after a whole write: either way the batch's
    /// lines go. Only when the file ends with them: a process that appends without taking the
    /// lock may have written after them, and its lines stay.
    fn cut_back(&mut self, (len, torn): (u64, bool), written: u64) {
        let cut = self.file.metadata().and_then(|now| {
            if now.len() != len.saturating_add(written) {
                return Err(io::Error::other(
                    "another process wrote to the file after the batch",
                ));
            }
            self.file.set_len(len)?;
            self.torn = torn;
            self.file.sync_data()
        });
        if let Err(e) = cut {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot take a failed batch back out of the audit log: it may hold records \
                 whose callers were told they failed"
            );
        }
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

/// Opens `path` for appending, creating it with mode 0640, and syncs its folder (so that a file
/// made here or by a rotation survives a crash); also tells whether the file ends mid-line.
fn open_append(path: &Path) -> io::Result<(File, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()?;
    let mut torn = false;
    if file.metadata()?.len() > 0 {
        let mut last = [0u8];
        let mut reader = &file;
        reader.seek(SeekFrom::End(-1))?;
        reader.read_exact(&mut last)?;
        torn = last[0] != b'\n';
    }
    Ok((file, torn))
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
        // Records that waited together were synced together.
        assert!(
            log.syncs() < (QUEUE + 300) as u64 / 2,
            "{} syncs",
            log.syncs()
        );
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
    async fn a_line_left_unfinished_does_not_spoil_the_next_one() {
        // A previous run stopped in the middle of a line (a full disk, then a restart).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"{\"reason\":\"first\"}\n{\"half\":").unwrap();
        let log = AuditLog::open(&path).unwrap();
        log.record(failure("whole")).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], "{\"half\":");
        let last: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["reason"], "whole");
        // A whole file gets no extra line break.
        log.record(failure("next")).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
    }

    #[test]
    fn a_cut_takes_the_failed_batch_only_never_what_another_process_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"{\"n\":1}\n").unwrap();
        let (file, torn) = open_append(&path).unwrap();
        let mut writer = Writer {
            path: path.clone(),
            file,
            torn,
            unlockable: false,
            counts: Arc::default(),
            syncs: Arc::default(),
        };
        let before = (8, false);
        // The disk took 6 bytes of a batch, then failed, leaving the file mid-line.
        let (_, outcome) = writer.append(b"{\"n\":2");
        outcome.unwrap();
        writer.torn = true;
        writer.cut_back(before, 6);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"n\":1}\n");
        assert!(!writer.torn);
        // Again, but another process appended its line after the batch's part: nothing is cut.
        let (_, outcome) = writer.append(b"{\"n\":2");
        outcome.unwrap();
        let mut other = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        other.write_all(b"{\"other\":1}\n").unwrap();
        writer.cut_back(before, 6);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{\"n\":1}\n{\"n\":2{\"other\":1}\n"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_waits_for_the_lock_another_process_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        // Another open file description of the file, as another process has.
        let other = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        flock(&other, FlockOperation::LockExclusive).unwrap();
        let record = tokio::spawn({
            let log = log.clone();
            async move { log.record(failure("waited")).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!record.is_finished(), "the writer must wait for the lock");
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        (&other).write_all(b"{\"reason\":\"other\"}\n").unwrap();
        flock(&other, FlockOperation::Unlock).unwrap();
        record.await.unwrap().unwrap();
        assert_eq!(reasons(&path), ["\"other\"", "\"waited\""]);
    }

    /// Names the folder for [`a_batch_the_disk_takes_only_in_part_leaves_no_line_of_itself`]'s
    /// child process, which runs under the file size limit.
    const UNDER_FSIZE_LIMIT: &str = "SAML_GATEWAY_TEST_AUDIT_UNDER_FSIZE_LIMIT";

    /// The file size limit of that child process, in bytes.
    const FSIZE_LIMIT: u64 = 4096;

    #[test]
    fn a_batch_the_disk_takes_only_in_part_leaves_no_line_of_itself() {
        // A write across RLIMIT_FSIZE stops short at the limit and the next one fails (EFBIG):
        // a full disk that takes part of a batch. The limit is per process, so the records are
        // written by a child, this test binary again under `prlimit`, with SIGXFSZ ignored (an
        // ignored signal stays ignored across exec) so that the write fails instead of killing it.
        if let Some(dir) = std::env::var_os(UNDER_FSIZE_LIMIT) {
            return write_under_the_limit(Path::new(&dir));
        }
        let dir = tempfile::tempdir().unwrap();
        let test = "audit::tests::a_batch_the_disk_takes_only_in_part_leaves_no_line_of_itself";
        let child = std::process::Command::new("sh")
            .args(["-c", "trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\""])
            .arg(FSIZE_LIMIT.to_string())
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(UNDER_FSIZE_LIMIT, dir.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&child.stdout).into_owned()
            + &String::from_utf8_lossy(&child.stderr);
        assert!(child.status.success(), "{said}");
        // The child ran the checks, not an empty filter.
        assert!(said.contains("1 passed"), "{said}");
        // The cut left the file at a line's end: a writer without the limit appends whole lines.
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let record = log.record(failure("after"));
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(record)
            .unwrap();
        assert_eq!(reasons(&path), ["\"filler\"", "\"after\""]);
    }

    /// The child's part: a file a little short of the limit, then records that do not fit.
    fn write_under_the_limit(dir: &Path) {
        let path = dir.join("audit.jsonl");
        let mut filler = serde_json::to_vec(&failure("filler")).unwrap();
        filler.splice(
            1..1,
            format!("\"pad\":\"{}\",", "x".repeat(3900)).into_bytes(),
        );
        filler.push(b'\n');
        std::fs::write(&path, &filler).unwrap();
        let room = FSIZE_LIMIT - filler.len() as u64;
        let log = AuditLog::open(&path).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for reason in ["first", "second"] {
            let record = failure(&format!("{reason}_{}", "y".repeat(room as usize)));
            let err = runtime.block_on(log.record(record)).unwrap_err();
            assert!(err.to_string().contains("File too large"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), filler);
        }
        // The first write stopped part-way, for certain: the disk took some of it.
        assert!(room > 0 && room < 200, "{room} bytes of room");
    }
}
