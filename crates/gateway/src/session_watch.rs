//! Closes the WebSockets of sessions that end.
//!
//! A WebSocket is authorized once, at its upgrade; after that, bytes flow both ways without the
//! gateway seeing a request. So [`crate::proxy`] gives every proxied socket a [`SessionWatch`]
//! and races it against the byte copy. The watch looks at the session every two seconds or so,
//! jittered so that sockets opened together do not query the store in step. When the user sent
//! a message over the socket since the last look ([`crate::ws_activity`]), the look is a use of
//! the session ([`session_store::Store::use_session`]) and slides its idle timeout; otherwise it
//! is [`session_store::Store::session_alive`], which never counts as use, so an open tab alone
//! does not keep an idle session alive. When the session has expired or was ended (logout,
//! revocation), on this replica or any other sharing the store, the copy stops, both
//! connections close, and `session_expired` or `session_revoked` goes to the audit log.
//!
//! After a reload of the routes, the watch checks the socket's route again: when it is gone,
//! points elsewhere, or its rule no longer lets the session in, the socket closes and
//! `access_denied` (`access_revoked`) goes to the audit log. On a route with `max_authn_age`,
//! the socket closes once the session's sign-in at the IdP is older than that
//! (`access_denied`, `reauthentication_required`): the app's page then reloads into a new
//! sign-in.
//!
//! When the store does not answer, the socket stays open for [`STORE_ERROR_GRACE`] (a Redis
//! restart should not drop every socket), then closes: a session that cannot be checked is
//! not trusted for longer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_store::{SessionId, SessionRecord, SessionState, UnixTime};

use crate::audit::{Event, Record};
use crate::state::{session_hash, unix_now, SharedState};

/// Mean pause between two looks at a session; each pause is this ± a quarter.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long a socket stays open while its session cannot be checked.
pub const STORE_ERROR_GRACE: Duration = Duration::from_secs(30);

/// Why a watched socket closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The session passed a timeout; the code says which (`idle_timeout`, `lifetime_ended`).
    Expired(&'static str),
    /// As `Expired`, but a request or another socket reported the expiry already.
    ExpiryReported(&'static str),
    /// The session was ended; the code says why (`logout`, `admin`, ..., or `session_gone`
    /// when it vanished without a marker).
    Ended(&'static str),
    /// The store has not answered for [`STORE_ERROR_GRACE`].
    StoreUnavailable,
    /// A reload changed the socket's route so that this session may no longer use it.
    AccessRevoked,
    /// The route wants a more recent sign-in than the session's (`max_authn_age`).
    ReauthenticationRequired,
}

/// The route a watched socket was authorized for.
pub struct WatchedRoute {
    /// The route's name.
    pub name: String,
    /// Its upstream, which must stay the same.
    pub upstream: hyper::Uri,
    /// The route table the socket was authorized with.
    pub generation: u64,
}

/// The watch over one WebSocket's session.
pub struct SessionWatch {
    state: SharedState,
    id: SessionId,
    session: Arc<SessionRecord>,
    /// When the session stops being live unless used, as last seen.
    deadline: UnixTime,
    /// The upgrade request's audit fields (client, path).
    audit: Record,
    /// Raised by the proxy when the client sent a data frame; lowered at each look.
    active: Arc<AtomicBool>,
    /// The route, checked again after every reload.
    route: WatchedRoute,
}

impl SessionWatch {
    /// A watch over the session `id`, found live as `session` when the socket was opened.
    pub fn new(
        state: SharedState,
        id: SessionId,
        session: Arc<SessionRecord>,
        audit: Record,
        active: Arc<AtomicBool>,
        route: WatchedRoute,
    ) -> SessionWatch {
        let deadline = deadline(&state, &session);
        SessionWatch {
            state,
            id,
            session,
            deadline,
            audit,
            active,
            route,
        }
    }

    /// After a reload: true while the route still exists, with the same upstream, and its
    /// rule still lets this session in.
    fn still_allowed(&mut self) -> bool {
        let routes = self.state.routes.load();
        if routes.generation() == self.route.generation {
            return true;
        }
        let allowed = routes.by_name(&self.route.name).is_some_and(|r| {
            r.upstream == self.route.upstream && !r.public && r.compiled.allows(&self.session)
        });
        self.route.generation = routes.generation();
        allowed
    }

    /// True when the route (as configured now) wants a more recent sign-in than the session's.
    fn sign_in_too_old(&self, now: UnixTime) -> bool {
        let routes = self.state.routes.load();
        let max_age = routes
            .by_name(&self.route.name)
            .and_then(|r| r.max_authn_age);
        !self.state.signed_in_recently(max_age, &self.session, now)
    }

    /// Waits until the session ends (or cannot be checked for too long) and says why.
    pub async fn until_ended(&mut self) -> Ending {
        let mut failing_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(jittered(CHECK_INTERVAL)).await;
            // The route is checked against the session as last seen, so a reload that takes
            // access away closes the socket even while the store cannot be reached.
            if !self.still_allowed() {
                return Ending::AccessRevoked;
            }
            let now = unix_now();
            if self.sign_in_too_old(now) {
                return Ending::ReauthenticationRequired;
            }
            let store = &self.state.store;
            let looked = if self.active.swap(false, Ordering::Relaxed) {
                store.use_session(&self.id, now).await
            } else {
                store.session_alive(&self.id, now).await
            };
            match looked {
                Ok(SessionState::Live(record)) => {
                    failing_since = None;
                    self.deadline = deadline(&self.state, &record);
                    self.session = record;
                }
                Ok(SessionState::Expired(record)) => {
                    // Claim the expiry: whoever removes the record reports it, once.
                    let reason = expiry_reason(&record, now);
                    return match store.use_session(&self.id, now).await {
                        Ok(SessionState::Expired(_)) => Ending::Expired(reason),
                        _ => Ending::ExpiryReported(reason),
                    };
                }
                Ok(SessionState::Ended(reason)) => return Ending::Ended(reason.code()),
                // Removed without a marker: by whoever reported its expiry first, or it is
                // otherwise unknown now (store emptied, record of another format).
                Ok(SessionState::Gone) if now >= self.deadline => {
                    return Ending::Expired(expiry_reason(&self.session, now));
                }
                Ok(SessionState::Gone) => return Ending::Ended("session_gone"),
                // Its record in Redis no longer opens (a record key removed, or a record
                // rewritten without the key); past its time, it is over anyway.
                Ok(SessionState::Refused) if now >= self.deadline => {
                    return Ending::Expired(expiry_reason(&self.session, now));
                }
                Ok(SessionState::Refused) => return Ending::Ended("session_refused"),
                Err(e) => {
                    // What is known already still counts: a session past its time is over.
                    if now >= self.deadline {
                        return Ending::Expired(expiry_reason(&self.session, now));
                    }
                    if failing_since.is_none() {
                        // Once per socket: an outage must not flood the log.
                        tracing::warn!(error = %e, "cannot check the session of an open WebSocket");
                    }
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= STORE_ERROR_GRACE {
                        return Ending::StoreUnavailable;
                    }
                }
            }
        }
    }

    /// Writes what ended the socket: to the audit log for a session that ended, to the
    /// service log for a store that did not answer.
    pub async fn report(self, ending: Ending) {
        let mut record = self.audit;
        record.user = Some(self.session.user.clone());
        record.idp = Some(self.session.idp.clone());
        record.session = Some(session_hash(self.id.expose()));
        let (event, reason) = match ending {
            Ending::Expired(reason) => (Event::SessionExpired, reason),
            Ending::Ended(reason) => (Event::SessionRevoked, reason),
            Ending::AccessRevoked => {
                record.route = Some(self.route.name.clone());
                (Event::AccessDenied, "access_revoked")
            }
            Ending::ReauthenticationRequired => {
                record.route = Some(self.route.name.clone());
                (Event::AccessDenied, "reauthentication_required")
            }
            Ending::ExpiryReported(reason) => {
                tracing::info!(
                    session = record.session.as_deref().unwrap_or(""),
                    reason,
                    "closed a WebSocket: its session expired (already in the audit log)"
                );
                return;
            }
            Ending::StoreUnavailable => {
                tracing::warn!(
                    session = record.session.as_deref().unwrap_or(""),
                    grace_secs = STORE_ERROR_GRACE.as_secs(),
                    "closed a WebSocket: its session could not be checked (session store \
                     unavailable)"
                );
                return;
            }
        };
        tracing::info!(
            session = record.session.as_deref().unwrap_or(""),
            reason,
            "closed a WebSocket: its session ended"
        );
        record.event = Some(event);
        record.reason = Some(reason.to_string());
        if let Err(e) = self.state.audit.record(record).await {
            tracing::error!(error = %e, "audit log write failed for a closed WebSocket");
        }
    }
}

/// `idle_timeout` or `lifetime_ended` (max_lifetime or the IdP's `SessionNotOnOrAfter`).
pub fn expiry_reason(record: &SessionRecord, now: UnixTime) -> &'static str {
    if now >= record.expires_at {
        "lifetime_ended"
    } else {
        "idle_timeout"
    }
}

fn deadline(state: &SharedState, record: &SessionRecord) -> UnixTime {
    crate::server::store_timeouts(&state.config).deadline(record)
}

/// `mean` ± 25 %, from the system random generator (the mean when it fails).
fn jittered(mean: Duration) -> Duration {
    let spread = session_store::random_bytes::<2>()
        .map(u16::from_le_bytes)
        .unwrap_or(u16::MAX / 2);
    // 0.75 .. 1.25 of the mean.
    let factor = 0.75 + f64::from(spread) / f64::from(u16::MAX) / 2.0;
    mean.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_spread_around_two_seconds() {
        for _ in 0..100 {
            let d = jittered(CHECK_INTERVAL);
            assert!(d >= Duration::from_millis(1500) && d <= Duration::from_millis(2500));
        }
    }
}
