//! The gate in front of every proxied request: find the session, decide, then proxy.
//!
//! Without a live session, a top-level navigation (GET or HEAD that a browser makes to show a
//! page: `Sec-Fetch-Mode: navigate`, or `Accept: text/html` when that header is absent) is sent
//! to `/saml/login`; every other request (XHR, `/_stcore/*`, the WebSocket upgrade) gets `401`,
//! so that Streamlit's front end reloads the page instead of following a redirect into a socket.
//! With a session, the route's group rule is checked, and the request goes to [`crate::proxy`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use session_store::{SessionId, SessionRecord, SessionState, StoreError};

use crate::audit::Event;
use crate::config::Route;
use crate::cookies::cookie;
use crate::pages::{self, escape_html};
use crate::session_watch::expiry_reason;
use crate::state::{audit_record, reference, session_hash, unix_now, SharedState};

/// The session named by the request's session cookie, when live and made for this SP; the
/// lookup counts as use. The lookup that finds the session expired writes `session_expired`
/// (the store reports an expiry to one lookup only, so this happens once per session).
pub async fn current_session(
    state: &SharedState,
    headers: &HeaderMap,
    peer: SocketAddr,
    path: &str,
) -> Result<Option<(SessionId, SessionRecord)>, StoreError> {
    let Some(id) = cookie(headers, state.cookies.session_name).and_then(SessionId::parse) else {
        return Ok(None);
    };
    let now = unix_now();
    let session = match state.store.use_session(&id, now).await? {
        SessionState::Live(session) => session,
        SessionState::Expired(session) if session.sp_entity_id == state.config.sp.entity_id => {
            let mut record = audit_record(peer, headers, path);
            record.event = Some(Event::SessionExpired);
            record.reason = Some(expiry_reason(&session, now).to_string());
            record.user = Some(session.user);
            record.idp = Some(session.idp);
            record.session = Some(session_hash(id.expose()));
            if let Err(e) = state.audit.record(record).await {
                tracing::error!(error = %e, "audit log write failed for session_expired");
            }
            return Ok(None);
        }
        _ => return Ok(None),
    };
    // A session made by another deployment sharing the store is not ours (invariant 11).
    if session.sp_entity_id != state.config.sp.entity_id {
        return Ok(None);
    }
    Ok(Some((id, session)))
}

/// The route whose prefix matches `path` (routes are sorted longest first).
pub fn route_for<'c>(routes: &'c [Route], path: &str) -> Option<&'c Route> {
    routes.iter().find(|r| {
        r.path == "/"
            || path == r.path
            || (path.starts_with(&r.path) && path.as_bytes().get(r.path.len()) == Some(&b'/'))
    })
}

/// True when the request is a browser's top-level page load.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    if headers.contains_key(header::UPGRADE) {
        return false;
    }
    match headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) {
        Some(mode) => mode == "navigate",
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
    }
}

/// The fallback handler: every path that is not a gateway endpoint.
pub async fn protected(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    // Routing and group rules see the path as sent; refuse any path that the upstream could
    // read differently (`..`, `//`, encoded separators), so that no rule can be walked around.
    if !crate::redirect::is_canonical_path(&path) {
        return pages::page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "<p>The address is not in canonical form.</p>",
        );
    }
    // `/saml/` belongs to the gateway: a path there that no endpoint serves is not the app's.
    if path == "/saml" || path.starts_with("/saml/") {
        return pages::page(StatusCode::NOT_FOUND, "Not found", "<p>No such page.</p>");
    }
    let Some(route) = route_for(&state.config.routes, &path) else {
        return pages::page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<p>No application here.</p>",
        );
    };
    let session = match current_session(&state, request.headers(), peer, &path).await {
        Ok(s) => s,
        Err(_) => {
            return pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "store_unavailable",
                "The session store cannot be reached. Try again in a moment.",
                &reference(),
            )
        }
    };
    let Some((id, session)) = session else {
        return unauthenticated(&request);
    };
    // A WebSocket carries the session cookie from any page that opens it; only this site's
    // own pages may (cross-site WebSocket hijacking), whatever the upstream checks itself.
    if request.headers().contains_key(header::UPGRADE)
        && !origin_allowed(request.headers(), &state.config.public_url)
    {
        return pages::page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "<p>This connection was not opened by this site.</p>",
        );
    }
    if !route.allow_groups.is_empty()
        && !session
            .groups
            .iter()
            .any(|g| route.allow_groups.contains(g))
    {
        let mut record = audit_record(peer, request.headers(), &path);
        record.event = Some(Event::AccessDenied);
        record.reason = Some("group_not_allowed".into());
        record.user = Some(session.user.clone());
        record.idp = Some(session.idp.clone());
        record.session = Some(session_hash(id.expose()));
        if let Err(e) = state.audit.record(record).await {
            tracing::error!(error = %e, "audit log write failed for access_denied");
        }
        let body = format!(
            "<p>You are signed in as <strong>{}</strong>, but this application is open only to \
             members of certain groups.</p><p><a href=\"/saml/logout\">Sign out</a></p>",
            escape_html(&session.user)
        );
        return pages::page(StatusCode::FORBIDDEN, "Access denied", &body);
    }
    crate::proxy::forward(&state, route, &id, &session, peer, request).await
}

/// True when the request has no `Origin` (not a browser) or the gateway's own.
pub fn origin_allowed(headers: &HeaderMap, public_url: &str) -> bool {
    headers.get(header::ORIGIN).is_none_or(|origin| {
        origin
            .as_bytes()
            .eq_ignore_ascii_case(public_url.as_bytes())
    })
}

fn unauthenticated(request: &Request) -> Response {
    if is_navigation(request.method(), request.headers()) {
        let target = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let return_to = crate::redirect::local_path(target);
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", &return_to)
            .finish();
        let location = format!("/saml/login?{query}");
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(value) = header::HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        return response;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "sign-in required\n").into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn route(path: &str) -> Route {
        Route {
            path: path.into(),
            upstream: "http://127.0.0.1:1".parse().unwrap(),
            allow_groups: vec![],
            forward_cookies: vec![],
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let routes = vec![route("/sales"), route("/")];
        assert_eq!(route_for(&routes, "/sales/x").unwrap().path, "/sales");
        assert_eq!(route_for(&routes, "/sales").unwrap().path, "/sales");
        assert_eq!(route_for(&routes, "/salesforce").unwrap().path, "/");
        let no_root = vec![route("/sales")];
        assert!(route_for(&no_root, "/ops").is_none());
    }

    #[test]
    fn websocket_origin_must_be_ours() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&h, "https://dash.example.com"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://DASH.example.com"),
        );
        assert!(origin_allowed(&h, "https://dash.example.com"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example.com"),
        );
        assert!(!origin_allowed(&h, "https://dash.example.com"));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_allowed(&h, "https://dash.example.com"));
    }

    #[test]
    fn navigation_detection() {
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(is_navigation(&Method::GET, &h));
        assert!(!is_navigation(&Method::POST, &h));
        h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert!(!is_navigation(&Method::GET, &h));
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        assert!(is_navigation(&Method::GET, &h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_navigation(&Method::GET, &h));
        assert!(!is_navigation(&Method::GET, &HeaderMap::new()));
    }
}
