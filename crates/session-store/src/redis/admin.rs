//! What an administrator does with the sessions of a deployment: list them, find a user's,
//! and revoke a user's on every replica.

use redis::AsyncCommands;

use super::{unavailable, RedisStore};
use crate::{EndReason, SessionRecord, StoreError, UnixTime, END_MARKER_SECS};

/// A session as listed or revoked by an administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 (hex) of the session ID: the key's suffix. Audit records show its first 24 hex
    /// digits. Never the ID itself.
    pub hash: String,
    /// The session.
    pub record: SessionRecord,
}

impl RedisStore {
    /// The hashes (SHA-256, hex) of the sessions of the user with this NameID that are live at
    /// `now`.
    pub async fn sessions_of_user(
        &self,
        name_id: &str,
        now: UnixTime,
    ) -> Result<Vec<String>, StoreError> {
        let mut c = self.connection();
        let members: Vec<String> = c
            .smembers(self.user_key(name_id))
            .await
            .map_err(unavailable)?;
        let sessions = self.load_sessions(members, now).await?;
        Ok(sessions.into_iter().map(|s| s.hash).collect())
    }

    /// Every session of this deployment that is live at `now`, by user and then login time.
    /// Walks the namespace with `SCAN` (never `KEYS`), so a large store is not blocked.
    pub async fn list_sessions(&self, now: UnixTime) -> Result<Vec<StoredSession>, StoreError> {
        let prefix = format!("{}:session:", self.namespace);
        let mut c = self.connection();
        let mut cursor: u64 = 0;
        let mut hashes = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            hashes.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(str::to_string),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key twice.
        hashes.sort();
        hashes.dedup();
        let mut sessions = self.load_sessions(hashes, now).await?;
        sessions.sort_by(|a, b| {
            (&a.record.user, a.record.created_at).cmp(&(&b.record.user, b.record.created_at))
        });
        Ok(sessions)
    }

    /// Ends every session of the user with this NameID, on every replica, leaving an end marker
    /// with `reason` for each; returns the sessions that were live at `now`. Atomic: a session
    /// cannot be added to the user's index half-way.
    pub async fn revoke_sessions_of_user(
        &self,
        name_id: &str,
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError> {
        const SCRIPT: &str = concat!(
            end_session_lua!(),
            "local out = {} \
            for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
              local v = end_session(ARGV[1] .. h, ARGV[2] .. h, ARGV[3], ARGV[4]) \
              if v then \
                redis.pcall('PUBLISH', ARGV[5], h) \
                table.insert(out, h) \
                table.insert(out, v) \
              end \
            end \
            redis.call('DEL', KEYS[1]) \
            return out"
        );
        let mut c = self.connection();
        // Bytes, not strings: one undecodable value must not hide the revocations that the
        // script has already carried out.
        let flat: Vec<Vec<u8>> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(self.user_key(name_id))
            .arg(format!("{}:session:", self.namespace))
            .arg(format!("{}:ended:", self.namespace))
            .arg(reason.code())
            .arg(END_MARKER_SECS)
            .arg(self.channel())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        self.forget_pairs(&flat);
        Ok(self.live_pairs(&flat, now))
    }

    /// The sessions of a script's flat `hash, record, hash, record, ...` answer that were live
    /// at `now`; a record that does not decode is left out.
    pub(super) fn live_pairs(&self, flat: &[Vec<u8>], now: UnixTime) -> Vec<StoredSession> {
        flat.chunks_exact(2)
            .filter_map(|pair| {
                let hash = String::from_utf8_lossy(&pair[0]);
                self.live_session(&hash, &String::from_utf8_lossy(&pair[1]), now)
            })
            .collect()
    }

    /// The session stored as `stored` under `hash`, when it opens and is live at `now`.
    fn live_session(&self, hash: &str, stored: &str, now: UnixTime) -> Option<StoredSession> {
        let record = self.opened(hash, stored)?;
        self.timeouts.is_live(&record, now).then(|| StoredSession {
            hash: hash.to_string(),
            record,
        })
    }

    /// Ends every session of the user with this NameID (an administrator's revocation) and
    /// returns how many were live at `now`.
    pub async fn delete_sessions_of_user(
        &self,
        name_id: &str,
        now: UnixTime,
    ) -> Result<usize, StoreError> {
        Ok(self
            .revoke_sessions_of_user(name_id, EndReason::Admin, now)
            .await?
            .len())
    }

    /// The sessions under these hashes that are live at `now`, read in one round trip.
    async fn load_sessions(
        &self,
        hashes: Vec<String>,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let mut out = Vec::new();
        let mut c = self.connection();
        for batch in hashes.chunks(500) {
            let keys: Vec<String> = batch.iter().map(|h| self.session_key(h)).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            for (hash, value) in batch.iter().zip(values) {
                out.extend(value.and_then(|stored| self.live_session(hash, &stored, now)));
            }
        }
        Ok(out)
    }
}
