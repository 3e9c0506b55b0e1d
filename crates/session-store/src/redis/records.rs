//! Session records as stored: sealed with the record keys and opened again (with a warning,
//! rate-limited, for a refused one), read with their end marker and classified into a
//! [`SessionState`] at a given time. The idle-refresh rule that `refresh_interval` serves is
//! described in the documentation of the parent module, `redis`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{unavailable, RedisStore};
use crate::record::SESSION_VERSION;
use crate::seal;
use crate::{EndReason, SessionRecord, SessionState, StoreError, UnixTime};

// Named only in doc links, which do not count as a use outside rustdoc.
#[cfg(doc)]
use crate::{SessionTimeouts, EXPIRED_RECORD_SECS};

/// Seconds between two warnings of a refused session record.
const REFUSAL_WARN_EVERY: u64 = 60;

/// Whether a refusal at `now` (seconds since the Unix epoch) is warned of: the first, and then
/// one at most every [`REFUSAL_WARN_EVERY`]; `warned_at` records the last one warned of.
fn warning_due(warned_at: &AtomicU64, now: u64) -> bool {
    let last = warned_at.load(Ordering::Relaxed);
    (last == 0 || now >= last.saturating_add(REFUSAL_WARN_EVERY))
        && warned_at
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Seconds since the Unix epoch (0 for a clock set before it).
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stored session record that no key sealed.
struct Refused;

/// A session record and its end marker, as [`RedisStore::look`] read them.
pub(super) struct Looked {
    /// The record, when it opened and decoded.
    pub(super) record: Option<SessionRecord>,
    /// The value as stored, when there is one.
    pub(super) stored: Option<String>,
    /// Where the record's JSON starts in `stored`, once its seal checked: a refresh edits it
    /// there without checking the seal again.
    pub(super) json_at: usize,
    /// Whether the value stored failed its seal check.
    refused: bool,
    /// Why the session was ended, when a marker says.
    ended: Option<EndReason>,
}

impl RedisStore {
    /// What to store for the record JSON `json` under the session `hash`: sealed when keys are set.
    pub(super) fn sealed(&self, hash: &str, json: String) -> String {
        seal::seal(
            self.record_keys.load().as_deref(),
            &self.session_key(hash),
            json,
        )
    }

    /// The session record stored under `hash`, when its seal checks (or no keys are set) and
    /// it decodes; otherwise `None`, as for a record of an unknown version.
    pub(super) fn opened(&self, hash: &str, stored: &str) -> Option<SessionRecord> {
        self.open_record(hash, stored)
            .ok()
            .flatten()
            .map(|(record, _)| record)
    }

    /// [`RedisStore::opened`], telling a refused seal (`Err`) from a record that does not
    /// decode (`Ok(None)`); with where its JSON starts in `stored`.
    fn open_record(
        &self,
        hash: &str,
        stored: &str,
    ) -> Result<Option<(SessionRecord, usize)>, Refused> {
        let key = self.session_key(hash);
        let Some(json) = seal::open(self.record_keys.load().as_deref(), &key, stored) else {
            let refused = self
                .counters
                .records_refused
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            let session = hash.get(..24).unwrap_or(hash);
            // A forger who can write to Redis, or a key turned on over plain records, could
            // otherwise fill the log at the request rate; the metric counts every refusal.
            if warning_due(&self.counters.refusal_warned_at, unix_seconds()) {
                tracing::warn!(
                    session,
                    refused_since_start = refused,
                    "a session record in Redis is not sealed with a key of \
                     sessions.redis_record_key_file; it reads as signed out (warned at most \
                     once a minute; saml_gateway_session_records_refused_total counts each)"
                );
            } else {
                tracing::debug!(
                    session,
                    "a session record in Redis is not sealed; signed out"
                );
            }
            return Err(Refused);
        };
        // The JSON is the end of `stored` (after the seal, when there is one).
        let json_at = stored.len().saturating_sub(json.len());
        Ok(decode::<SessionRecord>(json, "session").map(|record| (record, json_at)))
    }

    /// Reads a session record and its end marker in one round trip.
    pub(super) async fn look(&self, hash: &str) -> Result<Looked, StoreError> {
        let mut c = self.connection();
        let (stored, ended): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(self.session_key(hash))
            .arg(self.ended_key(hash))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let opened = stored
            .as_deref()
            .map(|stored| self.open_record(hash, stored));
        let refused = matches!(opened, Some(Err(Refused)));
        let (record, json_at) = match opened {
            Some(Ok(Some((record, json_at)))) => (Some(record), json_at),
            _ => (None, 0),
        };
        Ok(Looked {
            refused,
            record,
            json_at,
            stored,
            ended: ended.as_deref().and_then(EndReason::from_code),
        })
    }

    /// Whether `record` is live at `now` under this store's timeouts.
    fn live(&self, record: &SessionRecord, now: UnixTime) -> bool {
        self.timeouts.is_live(record, now)
    }

    /// Seconds from `now` until the session stops being live: the earlier of the idle deadline
    /// and the absolute end. Its key is kept [`EXPIRED_RECORD_SECS`] longer.
    pub(super) fn session_ttl(&self, record: &SessionRecord, now: UnixTime) -> i64 {
        self.timeouts.deadline(record).saturating_sub(now)
    }

    /// What a record and end marker read by [`RedisStore::look`] mean at `now`; the record is
    /// taken out of `looked` (the value as stored stays, for a refresh).
    pub(super) fn classify(&self, looked: &mut Looked, now: UnixTime) -> SessionState {
        match looked.record.take() {
            Some(record) if self.live(&record, now) => SessionState::Live(Arc::new(record)),
            Some(record) if record.version == SESSION_VERSION => {
                SessionState::Expired(Arc::new(record))
            }
            // Another format (a newer replica) or undecodable: logged out, left in place.
            Some(_) => SessionState::Gone,
            None if looked.refused => SessionState::Refused,
            None if looked.stored.is_some() => SessionState::Gone,
            None => looked.ended.map_or(SessionState::Gone, SessionState::Ended),
        }
    }

    /// See the module documentation and [`SessionTimeouts::refresh_interval`].
    pub(super) fn refresh_interval(&self) -> i64 {
        self.timeouts.refresh_interval()
    }
}

/// `value` as the JSON that is stored; one that does not encode fails as [`StoreError::Unavailable`].
pub(super) fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|_| StoreError::Unavailable)
}

/// Decodes a stored value; anything that does not decode is treated as absent.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(json: &str, what: &str) -> Option<T> {
    match serde_json::from_str(json) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(error = %e, what, "undecodable entry in the session store; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_records_are_warned_of_at_most_once_a_minute() {
        let warned_at = AtomicU64::new(0);
        assert!(warning_due(&warned_at, 1_000));
        assert!(!warning_due(&warned_at, 1_000));
        assert!(!warning_due(&warned_at, 1_059));
        assert!(warning_due(&warned_at, 1_060));
        assert!(!warning_due(&warned_at, 1_061));
        // A clock read as 0 (set before 1970) still records the warning.
        let warned_at = AtomicU64::new(0);
        assert!(warning_due(&warned_at, 0));
        assert!(!warning_due(&warned_at, 0));
        assert!(warning_due(&warned_at, 61));
    }
}
