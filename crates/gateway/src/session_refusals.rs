//! The audit records of requests that sent the cookie of a session whose record in Redis no
//! key of `sessions.redis_record_key_file` sealed (`session_refused`), at a bounded rate.
//!
//! Such a record was written or copied there without the key, and every request that sends its
//! cookie is refused. One audit record per request would let whoever holds such a cookie fill
//! the audit log, and the writer's queue that logins wait on. So the first request of each
//! session is audited at once, with its client; later ones are counted, and every
//! [`SUMMARY_EVERY`] (and at shutdown, within [`LAST_PASS_DEADLINE`]) one `session_refused`
//! record per session says how many there were, with the last client. Then the count starts
//! again: a session refused all day costs two records a minute. At most [`MAX_SESSIONS`]
//! sessions are told apart in a minute; requests for any other are counted in one record.
//!
//! A pass writes its records 256 at a time (they share the writer's syncs); records
//! that fail to be written wait for the next pass ([`MAX_WAITING`] at most). Shutdown's last
//! pass comes after one under way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::audit::{AuditLog, Event, Record};
use crate::login_limit::SUMMARY_EVERY;
use crate::state::SharedState;

/// Sessions told apart in one minute, at most.
pub const MAX_SESSIONS: usize = 1024;

/// Longest time shutdown waits for the last summaries.
pub const LAST_PASS_DEADLINE: Duration = Duration::from_secs(5);

/// The reason of every `session_refused` record.
pub const REASON: &str = "record_not_sealed";

/// Records handed to the audit writer at once (they share its syncs).
const AT_ONCE: usize = 256;

/// Summaries kept for the next pass after failed writes, at most.
pub const MAX_WAITING: usize = 4 * MAX_SESSIONS;

/// The refused sessions seen since the last summary.
#[derive(Debug, Default)]
pub struct SessionRefusals {
    table: Mutex<Table>,
    /// Summaries a pass could not write, for the next one.
    waiting: Mutex<Vec<Record>>,
    /// Held by a pass while it writes.
    pass: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Table {
    /// By session hash: the requests after the one audited, and the last one's client.
    sessions: HashMap<String, Later>,
    /// Requests for sessions past [`MAX_SESSIONS`], none audited.
    others: u64,
}

#[derive(Debug)]
struct Later {
    count: u64,
    client_ip: Option<String>,
}

impl SessionRefusals {
    /// Notes a request that sent the refused session `hash` from `client_ip`; true when it is
    /// the session's first since the last summary, to be audited at once.
    pub fn first(&self, hash: &str, client_ip: &str) -> bool {
        let mut table = self.lock();
        if let Some(later) = table.sessions.get_mut(hash) {
            later.count += 1;
            later.client_ip = Some(client_ip.to_string());
            return false;
        }
        if table.sessions.len() >= MAX_SESSIONS {
            table.others += 1;
            return false;
        }
        let later = Later {
            count: 0,
            client_ip: None,
        };
        table.sessions.insert(hash.to_string(), later);
        true
    }

    /// The first request of `hash`, from `client_ip`, could not be audited: it is counted for
    /// the session's summary instead.
    pub fn audit_failed(&self, hash: &str, client_ip: &str) {
        let mut table = self.lock();
        if let Some(later) = table.sessions.get_mut(hash) {
            later.count += 1;
            later.client_ip = Some(client_ip.to_string());
        } else {
            table.others += 1;
        }
    }

    /// The summary records of what was counted since the last call, which starts anew.
    pub fn take(&self) -> Vec<Record> {
        let table = std::mem::take(&mut *self.lock());
        let per_session = table.sessions.into_iter().filter(|(_, l)| l.count > 0);
        let mut records: Vec<Record> = per_session
            .map(|(hash, later)| Record {
                session: Some(hash),
                client_ip: later.client_ip,
                count: Some(later.count),
                detail: Some(format!(
                    "{} more requests sent this session's cookie (the last from client_ip), \
                     after the one audited",
                    later.count
                )),
                ..summary()
            })
            .collect();
        if table.others > 0 {
            records.push(Record {
                count: Some(table.others),
                detail: Some(format!(
                    "{} requests sent the cookies of refused sessions past the \
                     {MAX_SESSIONS} told apart in a minute",
                    table.others
                )),
                ..summary()
            });
        }
        records
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The records a failed pass left, then those of [`SessionRefusals::take`].
    fn take_with_waiting(&self) -> Vec<Record> {
        let mut records = std::mem::take(&mut *self.waiting());
        records.extend(self.take());
        records
    }

    /// Keeps `records`, which could not be written, for the next pass; beyond [`MAX_WAITING`]
    /// they are dropped (the metric still counted their requests).
    fn keep_waiting(&self, records: Vec<Record>) {
        let mut waiting = self.waiting();
        let room = MAX_WAITING.saturating_sub(waiting.len());
        if records.len() > room {
            tracing::warn!(
                dropped = records.len() - room,
                "summaries of refused sessions dropped: the audit log has failed for a while"
            );
        }
        waiting.extend(records.into_iter().take(room));
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What every summary record says.
fn summary() -> Record {
    Record {
        event: Some(Event::SessionRefused),
        reason: Some(REASON.to_string()),
        ..Record::default()
    }
}

/// Writes the summaries every [`SUMMARY_EVERY`], for as long as the gateway runs.
pub async fn summarize(state: SharedState) {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        write_pass(&state.session_refusals, &state.audit).await;
    }
}

/// The last pass, at shutdown: after the one under way, within [`LAST_PASS_DEADLINE`].
pub async fn last_pass(state: &SharedState) {
    let pass = write_pass(&state.session_refusals, &state.audit);
    if tokio::time::timeout(LAST_PASS_DEADLINE, pass)
        .await
        .is_err()
    {
        tracing::warn!(
            "the last summaries of refused sessions were not all written before shutdown \
             (saml_gateway_session_records_refused_total counted them)"
        );
    }
}

/// One pass: writes what waits, [`AT_ONCE`] records at a time. After the first failure (the
/// audit log is failing, and said so once) the rest waits for the next pass.
async fn write_pass(refusals: &SessionRefusals, audit: &AuditLog) {
    let _pass = refusals.pass.lock().await;
    let records = refusals.take_with_waiting();
    let mut failed: Vec<Record> = Vec::new();
    for chunk in records.chunks(AT_ONCE) {
        if !failed.is_empty() {
            failed.extend_from_slice(chunk);
            continue;
        }
        for (record, outcome) in chunk.iter().zip(audit.record_all(chunk.to_vec()).await) {
            if let Err(e) = outcome {
                if failed.is_empty() {
                    tracing::error!(error = %e, reason = REASON, "audit log write failed");
                }
                failed.push(record.clone());
            }
        }
    }
    if !failed.is_empty() {
        refusals.keep_waiting(failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_of_a_session_is_audited_and_later_ones_summarized() {
        let refusals = SessionRefusals::default();
        assert!(refusals.first("aaa", "10.0.0.1"));
        assert!(!refusals.first("aaa", "10.0.0.2"));
        assert!(!refusals.first("aaa", "10.0.0.3"));
        assert!(refusals.first("bbb", "10.0.0.4"));
        let records = refusals.take();
        // Only "aaa" had later requests.
        assert_eq!(records.len(), 1, "{records:?}");
        let r = &records[0];
        assert_eq!(r.event, Some(Event::SessionRefused));
        assert_eq!(r.reason.as_deref(), Some(REASON));
        assert_eq!(r.session.as_deref(), Some("aaa"));
        assert_eq!(r.client_ip.as_deref(), Some("10.0.0.3"));
        assert_eq!(r.count, Some(2));
        // Counted anew: the next request of either is audited again.
        assert!(refusals.take().is_empty());
        assert!(refusals.first("aaa", "10.0.0.1"));
        assert!(refusals.first("bbb", "10.0.0.1"));
    }

    #[tokio::test]
    async fn summaries_that_fail_to_be_written_wait_for_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = AuditLog::open(&path).unwrap();
        let refusals = SessionRefusals::default();
        for hash in ["aaa", "bbb"] {
            assert!(refusals.first(hash, "10.0.0.1"));
            assert!(!refusals.first(hash, "10.0.0.2"));
        }
        // The audit log cannot be written: a folder where the file was.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        write_pass(&refusals, &audit).await;
        assert_eq!(refusals.waiting().len(), 2);
        assert!(refusals.take().is_empty());
        // It can again: both are written by the next pass, with one that came meanwhile.
        std::fs::remove_dir(&path).unwrap();
        assert!(refusals.first("ccc", "10.0.0.9"));
        assert!(!refusals.first("ccc", "10.0.0.9"));
        write_pass(&refusals, &audit).await;
        assert!(refusals.waiting().is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        let mut sessions: Vec<String> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .map(|r| r["session"].as_str().unwrap().to_string())
            .collect();
        sessions.sort();
        assert_eq!(sessions, ["aaa", "bbb", "ccc"]);
    }

    #[test]
    fn a_first_request_that_could_not_be_audited_is_counted_for_the_summary() {
        let refusals = SessionRefusals::default();
        assert!(refusals.first("aaa", "10.0.0.1"));
        refusals.audit_failed("aaa", "10.0.0.1");
        let records = refusals.take();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].count, Some(1));
        assert_eq!(records[0].client_ip.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn sessions_past_the_limit_are_counted_together() {
        let refusals = SessionRefusals::default();
        for i in 0..MAX_SESSIONS {
            assert!(refusals.first(&format!("{i:x}"), "10.0.0.9"));
        }
        assert!(!refusals.first("one-more", "10.0.0.9"));
        assert!(!refusals.first("and-another", "10.0.0.9"));
        // Known sessions are still counted one by one.
        assert!(!refusals.first("0", "10.0.0.9"));
        let records = refusals.take();
        assert_eq!(records.len(), 2, "{records:?}");
        let others = records.iter().find(|r| r.session.is_none()).unwrap();
        assert_eq!(others.count, Some(2));
        assert!(others.detail.as_deref().unwrap().contains("past the 1024"));
        let zero = records.iter().find(|r| r.session.is_some()).unwrap();
        assert_eq!((zero.session.as_deref(), zero.count), (Some("0"), Some(1)));
    }
}
