//! The audit records of refusals over the login budget that were not audited one by one.
//!
//! [`crate::login_limit`] audits the first refusal of a client's run before its `429` leaves and
//! counts the later ones per client and endpoint. Every [`SUMMARY_EVERY`], [`summarize`] writes
//! them: one `rate_limited` record per client and endpoint, with `count`, for at most
//! [`SUMMARIES_PER_PASS`] of them, and one record per endpoint for the rest together (`detail`
//! says how many summaries it stands for). A flood therefore costs a bounded number of records a minute,
//! whatever the number of addresses, and every refusal is in the audit log a minute later at
//! most. Records are handed to the audit writer together, so that they share its syncs.
//!
//! At shutdown, [`last_pass`] waits for a pass under way, then writes what is left, within
//! [`LAST_PASS_DEADLINE`]. A record that cannot be written joins the next pass's overflow; the
//! first failure of a pass stops it (the audit log is failing), and the rest waits too.

use std::time::Duration;

use crate::audit::{timestamp, AuditLog, Record};
use crate::login_limit::{
    LoginLimiter, RefusalOverflow, RefusalSummary, SUMMARIES_PER_PASS, SUMMARY_EVERY,
};
use crate::state::SharedState;

/// Longest time shutdown waits for the last summaries.
pub const LAST_PASS_DEADLINE: Duration = Duration::from_secs(5);

/// Records handed to the audit writer at once (they share its syncs).
const AT_ONCE: usize = 256;

/// Writes the summaries every [`SUMMARY_EVERY`], for as long as the gateway runs.
pub async fn summarize(state: SharedState) {
    if let Some(limiter) = &state.login_limit {
        summarize_every(limiter, &state.audit, SUMMARY_EVERY).await;
    }
}

/// The last pass, at shutdown: after the one under way, within [`LAST_PASS_DEADLINE`].
pub async fn last_pass(state: &SharedState) {
    let Some(limiter) = &state.login_limit else {
        return;
    };
    if tokio::time::timeout(LAST_PASS_DEADLINE, write_pass(limiter, &state.audit))
        .await
        .is_err()
    {
        tracing::warn!(
            "the last summaries of refusals over the login budget were not all written before \
             shutdown (saml_gateway_login_starts_refused_total counted them)"
        );
    }
}

/// [`write_pass`] every `every`, the first one `every` from now.
async fn summarize_every(limiter: &LoginLimiter, audit: &AuditLog, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        write_pass(limiter, audit).await;
    }
}

/// One pass: takes what waits and writes it; what cannot be written waits for the next pass.
async fn write_pass(limiter: &LoginLimiter, audit: &AuditLog) {
    let _pass = limiter.summary_pass().await;
    let taken = limiter.take_unaudited();
    let per_minute = limiter.per_minute();
    let mut failed = false;
    for chunk in taken.each.chunks(AT_ONCE) {
        if failed {
            chunk.iter().for_each(|s| limiter.summary_failed(s));
            continue;
        }
        let records = chunk
            .iter()
            .map(|s| summary_record(s, per_minute))
            .collect();
        for (summary, outcome) in chunk.iter().zip(audit.record_all(records).await) {
            if let Err(e) = outcome {
                if !failed {
                    tracing::error!(error = %e, reason = "rate_limited", "audit log write failed");
                }
                failed = true;
                limiter.summary_failed(summary);
            }
        }
    }
    for overflow in taken.overflow {
        if failed {
            limiter.overflow_failed(&overflow);
        } else if let Err(e) = audit.record(overflow_record(&overflow, per_minute)).await {
            tracing::error!(error = %e, reason = "rate_limited", "audit log write failed");
            failed = true;
            limiter.overflow_failed(&overflow);
        }
    }
}

/// The record of one client's refusals at one endpoint.
fn summary_record(summary: &RefusalSummary, per_minute: u32) -> Record {
    Record {
        event: Some(summary.charged.event()),
        reason: Some("rate_limited".into()),
        client_ip: Some(summary.ip.to_string()),
        path: Some(summary.charged.path().into()),
        count: Some(summary.count),
        detail: Some(format!(
            "{} more refused over {per_minute} login starts per minute from this client, from {} \
             to {}",
            summary.count,
            timestamp(summary.first),
            timestamp(summary.last)
        )),
        ..Record::default()
    }
}

/// The record of the refusals at one endpoint not summarized per client.
fn overflow_record(overflow: &RefusalOverflow, per_minute: u32) -> Record {
    Record {
        event: Some(overflow.charged.event()),
        reason: Some("rate_limited".into()),
        path: Some(overflow.charged.path().into()),
        count: Some(overflow.count),
        detail: Some(format!(
            "{} more refused over {per_minute} login starts per minute, from {} summaries of \
             clients and endpoints past the {SUMMARIES_PER_PASS} written one by one in a minute \
             (or not written), from {} to {}",
            overflow.count,
            overflow.summaries,
            timestamp(overflow.first),
            timestamp(overflow.last)
        )),
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login_limit::{Budgeted, Verdict};

    /// An audit log in a folder of its own (removed when the first value is dropped).
    fn audit_log() -> (tempfile::TempDir, std::path::PathBuf, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = AuditLog::open(&path).unwrap();
        (dir, path, audit)
    }

    fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn refusals_not_audited_one_by_one_are_summarized_each_interval() {
        let (_dir, path, audit) = audit_log();
        let limiter = LoginLimiter::new(1);
        let client: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let refuse = |n: usize, charged| {
            for _ in 0..n {
                assert_ne!(limiter.check(client, charged), Verdict::Allowed);
            }
        };
        let every = Duration::from_millis(40);
        let run_for = Duration::from_millis(300);
        assert_eq!(limiter.check(client, Budgeted::Login), Verdict::Allowed);
        // The first refusal is the caller's to audit; two wait for the summary.
        refuse(3, Budgeted::Acs);
        let _ = tokio::time::timeout(run_for, summarize_every(&limiter, &audit, every)).await;
        let written = records(&path);
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0]["event"], "login_failure");
        assert_eq!(written[0]["reason"], "rate_limited");
        assert_eq!(written[0]["path"], "/saml/acs");
        assert_eq!(written[0]["client_ip"], "192.0.2.7");
        assert_eq!(written[0]["count"], 2);
        // Later refusals make a summary of their own at a later tick.
        refuse(5, Budgeted::Slo);
        let _ = tokio::time::timeout(run_for, summarize_every(&limiter, &audit, every)).await;
        let written = records(&path);
        assert_eq!(written.len(), 2, "{written:?}");
        assert_eq!(written[1]["event"], "slo");
        assert_eq!(written[1]["count"], 5);
        assert!(written[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("5 more refused over 1 login starts per minute from this client, from "));
    }

    #[tokio::test]
    async fn past_the_cap_clients_are_summarized_together() {
        let (_dir, path, audit) = audit_log();
        let limiter = LoginLimiter::new(1);
        let clients = SUMMARIES_PER_PASS + 7;
        for n in 0..clients {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n as u32));
            // Allowed, refused and audited, then two waiting for the summary.
            for _ in 0..4 {
                limiter.check(ip, Budgeted::Login);
            }
        }
        last_pass_of(&limiter, &audit).await;
        let written = records(&path);
        assert_eq!(written.len(), SUMMARIES_PER_PASS + 1);
        let total: u64 = written.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 2 * clients as u64, "every refusal is counted once");
        let overflow = written
            .iter()
            .find(|r| r.get("client_ip").is_none())
            .unwrap();
        assert_eq!(overflow["count"], 14);
        assert!(
            overflow["detail"]
                .as_str()
                .unwrap()
                .contains("from 7 summaries"),
            "{overflow}"
        );
    }

    #[tokio::test]
    async fn the_rest_is_counted_per_endpoint() {
        let (_dir, path, audit) = audit_log();
        let limiter = LoginLimiter::new(1);
        let clients = SUMMARIES_PER_PASS;
        for n in 0..clients {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + n as u32));
            limiter.check(ip, Budgeted::Login);
            // Audited at once, then one waiting at each endpoint: two summaries per client.
            limiter.check(ip, Budgeted::Login);
            limiter.check(ip, Budgeted::Login);
            limiter.check(ip, Budgeted::Acs);
        }
        last_pass_of(&limiter, &audit).await;
        let written = records(&path);
        let (each, rest): (Vec<_>, Vec<_>) =
            written.iter().partition(|r| r.get("client_ip").is_some());
        assert_eq!(each.len(), SUMMARIES_PER_PASS);
        assert!((1..=2).contains(&rest.len()), "{rest:?}");
        for r in &rest {
            assert!(
                ["/saml/login", "/saml/acs"].contains(&r["path"].as_str().unwrap()),
                "{r}"
            );
        }
        let total: u64 = written.iter().map(|r| r["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 2 * clients as u64);
    }

    #[tokio::test]
    async fn what_cannot_be_written_waits_for_the_next_pass() {
        let (_dir, path, audit) = audit_log();
        let limiter = LoginLimiter::new(1);
        let client: std::net::IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..5 {
            limiter.check(client, Budgeted::Login);
        }
        // As if the audit log had failed: the summary goes back, into the overflow.
        let taken = limiter.take_unaudited();
        let [summary] = taken.each.as_slice() else {
            panic!("one summary: {taken:?}");
        };
        assert_eq!(summary.count, 3);
        limiter.summary_failed(summary);
        last_pass_of(&limiter, &audit).await;
        let written = records(&path);
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0]["count"], 3);
        assert!(written[0].get("client_ip").is_none());
        assert_eq!(written[0]["path"], "/saml/login");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failing_audit_log_loses_no_refusal() {
        // /dev/full takes the file open and refuses every write (ENOSPC), as a full disk does.
        let full = AuditLog::open(std::path::Path::new("/dev/full")).unwrap();
        let limiter = LoginLimiter::new(1);
        for n in 0..3u32 {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + n));
            for _ in 0..4 {
                limiter.check(ip, Budgeted::Slo);
            }
        }
        last_pass_of(&limiter, &full).await;
        // Once the disk takes writes again, the refusals are written, together.
        let (_dir, path, audit) = audit_log();
        last_pass_of(&limiter, &audit).await;
        let written = records(&path);
        assert_eq!(written.len(), 1, "{written:?}");
        assert_eq!(written[0]["event"], "slo");
        assert_eq!(written[0]["path"], "/saml/slo");
        assert_eq!(written[0]["count"], 6);
        assert!(written[0]["detail"]
            .as_str()
            .unwrap()
            .contains("from 3 summaries"));
    }

    async fn last_pass_of(limiter: &LoginLimiter, audit: &AuditLog) {
        tokio::time::timeout(LAST_PASS_DEADLINE, write_pass(limiter, audit))
            .await
            .unwrap();
    }
}
