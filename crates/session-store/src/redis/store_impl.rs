//! The [`Store`] implementation of [`RedisStore`]: sessions (create, use with the idle
//! refresh, end), pending requests under their cap, and the replay cache of assertion IDs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::records::{decode, encode};
use super::{expiry, sha256_hex, unavailable, RedisStore, StoredSession};
use crate::{
    EndReason, PendingRequest, SessionId, SessionRecord, SessionState, Store, StoreCounters,
    StoreError, UnixTime, END_MARKER_SECS, EXPIRED_RECORD_SECS,
};

/// Lua for the idle refresh: writes `ARGV[2]` with an expiry of `ARGV[3]` seconds, only while
/// the key still holds `ARGV[1]` (the value read); 1 written, 2 changed meanwhile (left as it
/// is), 0 gone.
const REFRESH_LUA: &str = "local v = redis.call('GET', KEYS[1]) \
     if not v then return 0 end \
     if v ~= ARGV[1] then return 2 end \
     redis.call('SET', KEYS[1], ARGV[2], 'XX', 'EX', ARGV[3]) \
     return 1";

/// A pending request as stored, with its deadline (the key's expiry is only a clean-up).
#[derive(Serialize, Deserialize)]
struct StoredPending {
    request: PendingRequest,
    expires_at: UnixTime,
}

/// The stored record `json` with its `last_seen` set to `now` and every other field, known to
/// this version or not, kept; `None` when it is not a JSON object.
fn with_last_seen(json: &str, now: UnixTime) -> Option<String> {
    let mut fields = match serde_json::from_str(json) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => return None,
    };
    fields.insert("last_seen".to_string(), now.into());
    serde_json::to_string(&fields).ok()
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn counters(&self) -> StoreCounters {
        let c = &self.counters;
        StoreCounters {
            records_refused: c.records_refused.load(Ordering::Relaxed),
            master_changes: c.master_changes.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
        }
    }

    async fn create_session(
        &self,
        mut record: SessionRecord,
        now: UnixTime,
    ) -> Result<SessionId, StoreError> {
        let id = SessionId::generate()?;
        record.start(now, &self.timeouts);
        let ttl = self.session_ttl(&record, now);
        if ttl <= 0 {
            // Already past SessionNotOnOrAfter: an ID that names nothing.
            return Ok(id);
        }
        let hash = sha256_hex(id.expose());
        let user_key = self.user_key(&record.name_id);
        let user_ttl = expiry(
            record
                .expires_at
                .saturating_sub(now)
                .saturating_add(EXPIRED_RECORD_SECS),
        );
        let mut c = self.connection();
        // The index lives as long as the longest-lived session in it: `NX` sets an expiry on a
        // new set, `GT` lengthens an existing one, and neither ever shortens it.
        redis::pipe()
            .atomic()
            .set_ex(
                self.session_key(&hash),
                self.sealed(&hash, encode(&record)?),
                expiry(ttl.saturating_add(EXPIRED_RECORD_SECS)),
            )
            .ignore()
            .sadd(&user_key, &hash)
            .ignore()
            .cmd("EXPIRE")
            .arg(&user_key)
            .arg(user_ttl)
            .arg("NX")
            .ignore()
            .cmd("EXPIRE")
            .arg(&user_key)
            .arg(user_ttl)
            .arg("GT")
            .ignore()
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    async fn use_session(&self, id: &SessionId, now: UnixTime) -> Result<SessionState, StoreError> {
        let hash = sha256_hex(id.expose());
        if let Some(record) = self.cache.get(&hash) {
            // Served from memory while live and while its idle timeout needs no sliding (its
            // `last_seen` lags by less than the refresh interval, as in Redis).
            if self.timeouts.is_live(&record, now)
                && now.saturating_sub(record.last_seen) <= self.refresh_interval()
            {
                return Ok(SessionState::Live(record));
            }
        }
        let key = self.session_key(&hash);
        let ticket = self.cache.ticket();
        let mut looked = self.look(&hash).await?;
        let mut record = match self.classify(&mut looked, now) {
            SessionState::Live(record) => record,
            SessionState::Expired(record) => {
                self.cache.remove(&hash);
                // Of every lookup on every replica, only the one whose DEL removes the key
                // reports the expiry.
                let mut c = self.connection();
                let (deleted, ()): (u32, ()) = redis::pipe()
                    .del(&key)
                    .srem(self.user_key(&record.name_id), &hash)
                    .query_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                return Ok(if deleted > 0 {
                    SessionState::Expired(record)
                } else {
                    SessionState::Gone
                });
            }
            other => return Ok(other),
        };
        if now.saturating_sub(record.last_seen) > self.refresh_interval() {
            Arc::make_mut(&mut record).last_seen = now;
            let ttl = expiry(
                self.session_ttl(&record, now)
                    .saturating_add(EXPIRED_RECORD_SECS),
            );
            // Only `last_seen` is changed in the record as stored, so that fields this version
            // does not know (written by a newer replica during a rolling upgrade) stay; and only
            // while the stored value is the one read, so that a logout in between is not undone
            // and another replica's write is not lost (it refreshed the session already).
            // A live record was read from a stored value.
            let Some(stored) = looked.stored else {
                return Ok(SessionState::Gone);
            };
            let json = stored
                .get(looked.json_at..)
                .and_then(|json| with_last_seen(json, now))
                .map_or_else(|| encode(&record), Ok)?;
            let mut c = self.connection();
            let outcome: i64 = redis::cmd("EVAL")
                .arg(REFRESH_LUA)
                .arg(1)
                .arg(&key)
                .arg(&stored)
                .arg(self.sealed(&hash, json))
                .arg(ttl)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            let written = outcome != 0;
            if !written {
                self.cache.remove(&hash);
                return Ok(SessionState::Gone);
            }
        }
        // Cached as Redis holds it, so that the refresh rule keeps counting from the write.
        self.cache.put(&hash, &record, ticket);
        Ok(SessionState::Live(record))
    }

    async fn session_alive(
        &self,
        id: &SessionId,
        now: UnixTime,
    ) -> Result<SessionState, StoreError> {
        let hash = sha256_hex(id.expose());
        let mut looked = self.look(&hash).await?;
        Ok(self.classify(&mut looked, now))
    }

    async fn delete_session(
        &self,
        id: &SessionId,
        reason: EndReason,
        _now: UnixTime,
    ) -> Result<Option<SessionRecord>, StoreError> {
        const SCRIPT: &str = concat!(
            end_session_lua!(),
            "local v = end_session(KEYS[1], KEYS[2], ARGV[1], ARGV[2]) \
             if v then redis.pcall('PUBLISH', ARGV[3], ARGV[4]) end \
             return v"
        );
        let hash = sha256_hex(id.expose());
        self.cache.remove(&hash);
        let mut c = self.connection();
        // One script: a watcher that no longer finds the record finds the reason, and no
        // failure can leave a removed session without its marker.
        let json: Option<Vec<u8>> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg(self.session_key(&hash))
            .arg(self.ended_key(&hash))
            .arg(reason.code())
            .arg(END_MARKER_SECS)
            .arg(self.channel())
            .arg(&hash)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let Some(json) = json else {
            return Ok(None);
        };
        let Some(record) = self.opened(&hash, &String::from_utf8_lossy(&json)) else {
            return Ok(None);
        };
        let _: () = c
            .srem(self.user_key(&record.name_id), &hash)
            .await
            .map_err(unavailable)?;
        Ok(Some(record))
    }

    async fn end_sessions_of_subject(
        &self,
        idp: &str,
        name_id: &str,
        session_indexes: &[String],
        reason: EndReason,
        now: UnixTime,
    ) -> Result<Vec<StoredSession>, StoreError> {
        // One script: a session is read, matched and ended without another replica's use of
        // it in between. The user's index names the candidates; the record says which match.
        // A sealed record is matched on its JSON unchecked; what is reported is opened (its
        // seal checked) in Rust.
        const SCRIPT: &str = concat!(
            end_session_lua!(),
            "local out = {} \
            local wanted = {} \
            for i = 7, #ARGV do wanted[ARGV[i]] = true end \
            local any = #ARGV < 7 \
            for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
              local v = redis.call('GET', ARGV[1] .. h) \
              if not v then \
                redis.call('SREM', KEYS[1], h) \
              else \
                local j = v \
                if string.sub(v, 1, 3) == 'm1:' then \
                  local i = string.find(v, '\\n', 1, true) \
                  j = i and string.sub(v, i + 1) or '' \
                end \
                local ok, r = pcall(cjson.decode, j) \
                if ok and type(r) == 'table' and r.idp == ARGV[5] and (any or \
                    (type(r.session_index) == 'string' and wanted[r.session_index])) then \
                  end_session(ARGV[1] .. h, ARGV[2] .. h, ARGV[3], ARGV[4]) \
                  redis.pcall('PUBLISH', ARGV[6], h) \
                  redis.call('SREM', KEYS[1], h) \
                  table.insert(out, h) \
                  table.insert(out, v) \
                end \
              end \
            end \
            return out"
        );
        let mut c = self.connection();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT)
            .arg(1)
            .arg(self.user_key(name_id))
            .arg(format!("{}:session:", self.namespace))
            .arg(format!("{}:ended:", self.namespace))
            .arg(reason.code())
            .arg(END_MARKER_SECS)
            .arg(idp)
            .arg(self.channel());
        for index in session_indexes {
            cmd.arg(index);
        }
        let flat: Vec<Vec<u8>> = cmd.query_async(&mut c).await.map_err(unavailable)?;
        self.forget_pairs(&flat);
        Ok(self.live_pairs(&flat, now))
    }

    async fn put_pending(
        &self,
        token: &str,
        request: PendingRequest,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let ttl = expires_at.saturating_sub(request.created_at);
        if ttl <= 0 {
            return Ok(());
        }
        let request_created_at = request.created_at;
        let value = encode(&StoredPending {
            request,
            expires_at,
        })?;
        // KEYS: the order, the request's key. ARGV: its hash, its value, its TTL, its deadline,
        // now, the cap, the prefix of pending keys.
        const SCRIPT: &str = "\
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5]) \
            local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[6]) + 1 \
            if over > 0 then \
              local oldest = redis.call('ZPOPMIN', KEYS[1], over) \
              for i = 1, #oldest, 2 do redis.call('DEL', ARGV[7] .. oldest[i]) end \
            end \
            redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3]) \
            redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1]) \
            local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES') \
            local ttl = math.max(1, tonumber(last[2]) - tonumber(ARGV[5])) \
            redis.call('EXPIRE', KEYS[1], ttl) \
            return 0";
        let hash = sha256_hex(token);
        let prefix = format!("{}:pending:", self.namespace);
        let mut c = self.connection();
        let _: () = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg(self.pending_order_key())
            .arg(format!("{prefix}{hash}"))
            .arg(&hash)
            .arg(value)
            .arg(expiry(ttl))
            .arg(expires_at)
            .arg(request_created_at)
            .arg(self.max_pending)
            .arg(prefix)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_pending(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<Option<PendingRequest>, StoreError> {
        const SCRIPT: &str = "\
            local v = redis.call('GETDEL', KEYS[2]) \
            redis.call('ZREM', KEYS[1], ARGV[1]) \
            return v";
        let hash = sha256_hex(token);
        let mut c = self.connection();
        let json: Option<String> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg(self.pending_order_key())
            .arg(format!("{}:pending:{hash}", self.namespace))
            .arg(&hash)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(json
            .and_then(|j| decode::<StoredPending>(&j, "pending request"))
            .filter(|p| now < p.expires_at)
            .map(|p| p.request))
    }

    async fn first_use_of_assertion(
        &self,
        assertion_id: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let key = format!("{}:assertion:{}", self.namespace, sha256_hex(assertion_id));
        let mut c = self.connection();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(expiry(expires_at.saturating_sub(now)))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }
}
