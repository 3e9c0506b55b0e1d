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

/// The refused sessions seen since the last summary.
#[derive(Debug, Default)]
pub struct SessionRefusals {
    table: Mutex<Table>,
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
    pub fn first(&self, hash: &str, client_ip: Option<&str>) -> bool {
        let mut table = self.lock();
        if let Some(later) = table.sessions.get_mut(hash) {
            later.count += 1;
            later.client_ip = client_ip.map(str::to_string);
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
        write(&state.audit, state.session_refusals.take()).await;
    }
}

/// The last pass, at shutdown, within [`LAST_PASS_DEADLINE`].
pub async fn last_pass(state: &SharedState) {
    let records = state.session_refusals.take();
    if tokio::time::timeout(LAST_PASS_DEADLINE, write(&state.audit, records))
        .await
        .is_err()
    {
        tracing::warn!(
            "the last summaries of refused sessions were not all written before shutdown \
             (saml_gateway_session_records_refused_total counted them)"
        );
    }
}

/// Writes `records`; the first failure stops the pass (the audit log is failing, and said so
/// once), and the rest are lost, still counted by the metric.
async fn write(audit: &AuditLog, records: Vec<Record>) {
    for record in records {
        if let Err(e) = audit.record(record).await {
            tracing::error!(error = %e, reason = REASON, "audit log write failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_request_of_a_session_is_audited_and_later_ones_summarized() {
        let refusals = SessionRefusals::default();
        assert!(refusals.first("aaa", Some("10.0.0.1")));
        assert!(!refusals.first("aaa", Some("10.0.0.2")));
        assert!(!refusals.first("aaa", Some("10.0.0.3")));
        assert!(refusals.first("bbb", Some("10.0.0.4")));
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
        assert!(refusals.first("aaa", Some("10.0.0.1")));
        assert!(refusals.first("bbb", Some("10.0.0.1")));
    }

    #[test]
    fn sessions_past_the_limit_are_counted_together() {
        let refusals = SessionRefusals::default();
        for i in 0..MAX_SESSIONS {
            assert!(refusals.first(&format!("{i:x}"), None));
        }
        assert!(!refusals.first("one-more", Some("10.0.0.9")));
        assert!(!refusals.first("and-another", Some("10.0.0.9")));
        // Known sessions are still counted one by one.
        assert!(!refusals.first("0", None));
        let records = refusals.take();
        assert_eq!(records.len(), 2, "{records:?}");
        let others = records.iter().find(|r| r.session.is_none()).unwrap();
        assert_eq!(others.count, Some(2));
        assert!(others.detail.as_deref().unwrap().contains("past the 1024"));
        let zero = records.iter().find(|r| r.session.is_some()).unwrap();
        assert_eq!((zero.session.as_deref(), zero.count), (Some("0"), Some(1)));
    }
}
