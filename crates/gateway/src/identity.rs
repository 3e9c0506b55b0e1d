//! What the gateway decides and tells an app about a user, built once per session and route.
//!
//! A session's claims never change after login, and a route's rule changes only by a reload,
//! so the access decision, the identity header values and the identity token of a (session,
//! route) pair are the same for every request until the token is due for renewal. They are
//! built on the first request and reused: the per-request cost of a user in 500 groups, and of
//! an ECDSA signature, is paid once. An entry is valid only for the route table it was made
//! with (a reload makes every entry stale) and only until half the token's lifetime has
//! passed. The session itself is still looked up on every request, so a logout or a
//! revocation takes effect at once; stale entries are swept when the cache is full.

use std::sync::{Arc, Mutex};

use axum::http::header::{HeaderName, HeaderValue};
use rustc_hash::FxHashMap;
use session_store::{SessionId, SessionRecord};

use crate::config::IdentityHeaders;
use crate::identity_token::{IdentityTokenConfig, TokenIssuer};
use crate::proxy::header_text;
use crate::routing::Route;

/// Most sessions with cached identities; beyond it, stale entries are swept, then all.
const CACHE_SESSIONS: usize = 20_000;
/// Most bytes of cached header values (a token for a user in 500 groups is tens of KB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The decision and the headers for one session at one route.
#[derive(Debug)]
pub struct Identity {
    /// The route's rule lets this session in.
    pub allowed: bool,
    /// The identity headers (and token) to set on requests to the app, in order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    route: String,
    generation: u64,
    until: i64,
}

/// Identities by session ID (kept only in this map, never logged), then route.
#[derive(Default)]
pub struct IdentityCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// FxHash: the keys are the IDs of live sessions, random values the gateway made (see
    /// the memory store's maps).
    by_session: FxHashMap<String, Vec<Arc<Identity>>>,
    /// Header bytes held, for [`CACHE_BYTES`].
    bytes: usize,
}

impl Identity {
    fn bytes(&self) -> usize {
        self.headers.iter().map(|(_, v)| v.len() + 32).sum()
    }
}

impl Entries {
    fn recount(&mut self) {
        self.bytes = self.by_session.values().flatten().map(|i| i.bytes()).sum();
    }
}

/// What building an identity needs besides the session and the route.
pub struct IdentitySources<'a> {
    /// Identity header names.
    pub names: &'a IdentityHeaders,
    /// The token settings and issuer, when tokens are on.
    pub tokens: Option<(&'a IdentityTokenConfig, &'a TokenIssuer)>,
}

/// Builds the identity of `session` for `route` at `now` (`generation`: the route table's).
pub fn build(
    sources: &IdentitySources<'_>,
    session: &SessionRecord,
    route: &Route,
    generation: u64,
    now: i64,
) -> Identity {
    let allowed = route.compiled.allows(session);
    let mut headers = Vec::new();
    let mut until = i64::MAX;
    if allowed {
        let groups = route.groups_filter.apply(&session.groups, &route.compiled);
        let names = sources.names;
        let mut put = |name: &HeaderName, text: String| {
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.push((name.clone(), v));
            }
        };
        put(&names.user, header_text(&session.user));
        if let Some(email) = &session.email {
            put(&names.email, header_text(email));
        }
        if let Some(name) = &session.display_name {
            put(&names.name, header_text(name));
        }
        if let (Some(header), Some(given)) = (&names.given_name, &session.given_name) {
            put(header, header_text(given));
        }
        if let (Some(header), Some(surname)) = (&names.surname, &session.surname) {
            put(header, header_text(surname));
        }
        if let Some(header) = names.idp.as_ref().filter(|_| !session.idp_name.is_empty()) {
            put(header, header_text(&session.idp_name));
        }
        if let (Some(header), Some(at)) = (&names.auth_time, session.authn_instant) {
            put(header, at.to_string());
        }
        if let (Some(header), Some(how)) = (&names.authn_context, &session.authn_context) {
            put(header, header_text(how));
        }
        let listed: Vec<String> = groups.iter().map(|g| header_text(g)).collect();
        put(&names.groups, listed.join(","));
        if let Some((config, issuer)) = sources.tokens {
            match issuer.sign(session, &route.name, &groups, now) {
                Ok(token) => {
                    put(&config.header, token);
                    // Renewed at half its lifetime, so that an app never receives a nearly
                    // expired one.
                    until = now + issuer.lifetime_secs() / 2;
                }
                Err(e) => {
                    tracing::error!(error = %e, "identity token signing failed");
                    // Not kept: the next request tries again.
                    until = now;
                }
            }
        }
    }
    Identity {
        allowed,
        headers,
        route: route.name.clone(),
        generation,
        until,
    }
}

impl Identity {
    /// The route table this identity was decided with.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl IdentityCache {
    /// The cached identity of session `id` for `route`, when made with route table
    /// `generation` and still fresh at `now`.
    pub fn get(
        &self,
        id: &SessionId,
        route: &str,
        generation: u64,
        now: i64,
    ) -> Option<Arc<Identity>> {
        let entries = self.entries.lock().ok()?;
        entries
            .by_session
            .get(id.expose())?
            .iter()
            .find(|i| i.route == route && i.generation == generation && now < i.until)
            .cloned()
    }

    /// Keeps `identity` for session `id`, replacing that route's older entry.
    pub fn put(&self, id: &SessionId, identity: Arc<Identity>, now: i64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if now >= identity.until {
            return;
        }
        let full = entries.bytes + identity.bytes() > CACHE_BYTES
            || (entries.by_session.len() >= CACHE_SESSIONS
                && !entries.by_session.contains_key(id.expose()));
        if full {
            // Stale entries first; then, if still over, down to three quarters of the caps, so
            // that the next inserts do not sweep again at once.
            entries
                .by_session
                .retain(|_, list| list.iter().any(|i| now < i.until));
            entries.recount();
            let (max_sessions, max_bytes) = (CACHE_SESSIONS * 3 / 4, CACHE_BYTES * 3 / 4);
            let (mut sessions, mut bytes) = (entries.by_session.len(), entries.bytes);
            entries.by_session.retain(|_, list| {
                if sessions <= max_sessions && bytes <= max_bytes {
                    return true;
                }
                sessions -= 1;
                bytes = bytes.saturating_sub(list.iter().map(|i| i.bytes()).sum());
                false
            });
            entries.recount();
        }
        entries.bytes += identity.bytes();
        let list = entries
            .by_session
            .entry(id.expose().to_string())
            .or_default();
        let mut freed = 0;
        list.retain(|i| {
            let keep = i.route != identity.route;
            if !keep {
                freed += i.bytes();
            }
            keep
        });
        list.push(identity);
        entries.bytes = entries.bytes.saturating_sub(freed);
    }

    /// Forgets the identities of one session (at logout).
    pub fn forget(&self, id: &SessionId) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(list) = entries.by_session.remove(id.expose()) {
                let freed: usize = list.iter().map(|i| i.bytes()).sum();
                entries.bytes = entries.bytes.saturating_sub(freed);
            }
        }
    }

    /// Forgets every identity.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.by_session.clear();
            entries.bytes = 0;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::authz::{GroupsFilter, Rule};
    use axum::http::HeaderMap;

    /// The default identity header names.
    pub(crate) fn names() -> IdentityHeaders {
        IdentityHeaders::default()
    }

    fn route(name: &str, groups: &[&str], filter: GroupsFilter) -> Route {
        let rule = Rule {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Rule::default()
        };
        Route {
            name: name.into(),
            path: format!("/{name}"),
            host: None,
            upstream: "http://127.0.0.1:1".parse().unwrap(),
            public: false,
            max_authn_age: None,
            compiled: rule.compile(),
            rule,
            groups_filter: filter,
            forward_cookies: vec![],
            idp: None,
        }
    }

    fn session() -> SessionRecord {
        SessionRecord {
            version: 1,
            sp_entity_id: String::new(),
            idp: String::new(),
            idp_name: String::new(),
            user: "alice".into(),
            name_id: "alice".into(),
            name_id_format: None,
            session_index: None,
            name_qualifier: None,
            sp_name_qualifier: None,
            email: None,
            display_name: Some("Zoë\r\nX-Evil: 1".into()),
            given_name: None,
            surname: None,
            groups: session_store::groups(["a", "b,c"]),
            attributes: Default::default(),
            csrf_token: String::new(),
            created_at: 0,
            authn_instant: None,
            authn_context: None,
            expires_at: 0,
            last_seen: 0,
        }
    }

    #[test]
    fn client_identity_headers_are_stripped_and_the_sessions_set() {
        let names = names();
        let sources = IdentitySources {
            names: &names,
            tokens: None,
        };
        let identity = build(
            &sources,
            &session(),
            &route("app", &[], GroupsFilter::All),
            1,
            0,
        );
        assert!(identity.allowed);
        let mut h = HeaderMap::new();
        h.append("x-auth-user", HeaderValue::from_static("mallory"));
        h.append("x-auth-user", HeaderValue::from_static("mallory2"));
        h.append("x-auth-email", HeaderValue::from_static("m@evil"));
        let claims = crate::proxy::ClaimNames::new(&names, None);
        crate::proxy::replace_claims(&mut h, &claims, Some(&identity));
        assert_eq!(
            h.get_all("x-auth-user").iter().collect::<Vec<_>>(),
            ["alice"]
        );
        assert!(h.get("x-auth-email").is_none());
        assert_eq!(h["x-auth-groups"], "a,b%2Cc");
        assert_eq!(h["x-auth-name"], "Zo%C3%AB%0D%0AX-Evil: 1");
    }

    #[test]
    fn when_and_how_the_user_signed_in_are_sent_when_named_and_known() {
        let names = IdentityHeaders {
            auth_time: Some(HeaderName::from_static("x-auth-time")),
            authn_context: Some(HeaderName::from_static("x-auth-context")),
            ..names()
        };
        let sources = IdentitySources {
            names: &names,
            tokens: None,
        };
        let route = route("app", &[], GroupsFilter::All);
        let sent = |session: &SessionRecord| {
            let identity = build(&sources, session, &route, 1, 0);
            let mut h = HeaderMap::new();
            h.append("x-auth-time", HeaderValue::from_static("1"));
            h.append("x-auth-context", HeaderValue::from_static("forged"));
            let claims = crate::proxy::ClaimNames::new(&names, None);
            crate::proxy::replace_claims(&mut h, &claims, Some(&identity));
            ["x-auth-time", "x-auth-context"].map(|name| {
                h.get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
        };
        let mut signed_in = session();
        signed_in.authn_instant = Some(1_765_000_000);
        signed_in.authn_context =
            Some("urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport".into());
        assert_eq!(
            sent(&signed_in),
            [
                vec!["1765000000".to_string()],
                vec!["urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport".into()]
            ]
        );
        // Not known: no header, and the client's are gone all the same.
        assert_eq!(sent(&session()), [Vec::<String>::new(), Vec::new()]);
    }

    #[test]
    fn denied_identities_carry_no_headers_and_filters_apply() {
        let names = names();
        let sources = IdentitySources {
            names: &names,
            tokens: None,
        };
        let denied = build(
            &sources,
            &session(),
            &route("ops", &["ops"], GroupsFilter::All),
            1,
            0,
        );
        assert!(!denied.allowed && denied.headers.is_empty());
        let only = build(
            &sources,
            &session(),
            &route("a", &["a"], GroupsFilter::Rule),
            1,
            0,
        );
        let groups: Vec<_> = only
            .headers
            .iter()
            .filter(|(n, _)| n == "x-auth-groups")
            .collect();
        assert_eq!(groups[0].1, "a");
    }

    #[test]
    fn cache_entries_belong_to_one_session_route_and_table() {
        let names = names();
        let sources = IdentitySources {
            names: &names,
            tokens: None,
        };
        let cache = IdentityCache::default();
        let id = SessionId::generate().unwrap();
        let other = SessionId::generate().unwrap();
        let mut identity = build(
            &sources,
            &session(),
            &route("app", &[], GroupsFilter::All),
            7,
            0,
        );
        identity.until = 100;
        cache.put(&id, Arc::new(identity), 0);
        assert!(cache.get(&id, "app", 7, 99).is_some());
        assert!(cache.get(&id, "app", 7, 100).is_none(), "due for renewal");
        assert!(cache.get(&id, "app", 8, 0).is_none(), "another route table");
        assert!(cache.get(&id, "ops", 7, 0).is_none(), "another route");
        assert!(cache.get(&other, "app", 7, 0).is_none(), "another session");
        cache.forget(&id);
        assert!(cache.get(&id, "app", 7, 0).is_none());
    }

    #[test]
    fn a_full_cache_sheds_a_quarter_and_keeps_the_newest() {
        let names = names();
        let sources = IdentitySources {
            names: &names,
            tokens: None,
        };
        let cache = IdentityCache::default();
        let route = route("app", &[], GroupsFilter::All);
        let mut last = None;
        for _ in 0..=CACHE_SESSIONS {
            let id = SessionId::generate().unwrap();
            cache.put(&id, Arc::new(build(&sources, &session(), &route, 1, 0)), 0);
            last = Some(id);
        }
        let held = cache.entries.lock().unwrap().by_session.len();
        assert!(held <= CACHE_SESSIONS * 3 / 4 + 1, "{held}");
        assert!(cache.get(&last.unwrap(), "app", 1, 0).is_some());
    }
}
