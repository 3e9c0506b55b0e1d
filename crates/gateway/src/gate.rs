//! The gate in front of every proxied request: find the session, decide, then proxy.
//!
//! Without a live session, a top-level navigation (GET or HEAD that a browser makes to show a
//! page: `Sec-Fetch-Mode: navigate`, or `Accept: text/html` when that header is absent) is sent
//! to `/saml/login`; every other request (XHR, `/_stcore/*`, the WebSocket upgrade) gets `401`,
//! so that Streamlit's front end reloads the page instead of following a redirect into a socket.
//! Before anything, the path is normalized ([`crate::paths`]) and the route found
//! ([`crate::routing`]). With a session, the route's rule is checked ([`crate::authz`]), and the
//! request goes to [`crate::proxy`] with the normalized path. Public routes skip the session.
//! A route with `max_authn_age` treats a session whose sign-in at the IdP is older as no
//! session: the navigation goes to `/saml/login`, which asks the IdP to sign the user in again.

use std::borrow::Cow;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use session_store::{SessionId, SessionRecord, SessionState, StoreError};

use crate::audit::Event;
use crate::cookies::cookie;
use crate::pages::{self, escape_html};
use crate::proxy::{Peer, Upstream};
use crate::routing::{host_key, Route, RouteMatch, RouteTable};
use crate::session_watch::expiry_reason;
use crate::state::{audit_record, session_hash, unix_now, SharedState};

/// The session named by the request's session cookie, when live and made for this SP; the
/// lookup counts as use. The lookup that finds the session expired writes `session_expired`
/// (the store reports an expiry to one lookup only, so this happens once per session); one
/// that finds a record no key sealed writes `session_refused` with its client (what an
/// investigation looks for), for the first such request of the session in a minute, the later
/// ones summarized ([`crate::session_refusals`]).
pub async fn current_session(
    state: &SharedState,
    headers: &HeaderMap,
    peer: SocketAddr,
    path: &str,
) -> Result<Option<(SessionId, std::sync::Arc<SessionRecord>)>, StoreError> {
    let cookie = cookie(headers, state.cookies.session_name);
    session_named(state, cookie, headers, peer, path, unix_now()).await
}

/// [`current_session`] for the session cookie's value `cookie`, found in `headers` already,
/// at `now`.
async fn session_named(
    state: &SharedState,
    cookie: Option<&str>,
    headers: &HeaderMap,
    peer: SocketAddr,
    path: &str,
    now: i64,
) -> Result<Option<(SessionId, std::sync::Arc<SessionRecord>)>, StoreError> {
    let Some(id) = cookie.and_then(SessionId::parse) else {
        return Ok(None);
    };
    let session = match state.store.use_session(&id, now).await? {
        SessionState::Live(session) => session,
        SessionState::Expired(session) if session.sp_entity_id == state.config.sp.entity_id => {
            let mut record = audit_record(peer, headers, path);
            record.event = Some(Event::SessionExpired);
            record.reason = Some(expiry_reason(&session, now).to_string());
            record.user = Some(session.user.clone());
            record.idp = Some(session.idp.clone());
            record.session = Some(session_hash(id.expose()));
            if let Err(e) = state.audit.record(record).await {
                tracing::error!(error = %e, "audit log write failed for session_expired");
            }
            return Ok(None);
        }
        SessionState::Refused => {
            // Nothing of the record is believed, not even whose it says it is.
            let hash = session_hash(id.expose());
            let refusals = &state.session_refusals;
            if refusals.first(&hash, &peer.ip().to_string()) {
                let mut record = audit_record(peer, headers, path);
                record.event = Some(Event::SessionRefused);
                record.reason = Some(crate::session_refusals::REASON.to_string());
                record.session = Some(hash.clone());
                if let Err(e) = state.audit.record(record).await {
                    tracing::error!(error = %e, "audit log write failed for session_refused");
                    // Not lost: counted in the session's next summary.
                    refusals.audit_failed(&hash, &peer.ip().to_string());
                }
            }
            return Ok(None);
        }
        _ => return Ok(None),
    };
    // A session made by another deployment sharing the store is not ours (invariant 11).
    if session.sp_entity_id != state.config.sp.entity_id {
        return Ok(None);
    }
    Ok(Some((id, with_checked_idp(state, session))))
}

/// `session` with the IdP name that rules and headers see: the running IdP that both its name
/// and its entity ID agree on. A name no running IdP has, or one now given to another entity ID
/// (a renamed or re-pointed IdP, a replica with another config on a shared store), becomes
/// empty, which no IdP rule lets in; a session recorded without a name gets that of its entity
/// ID's IdP (entity IDs are unique among the IdPs).
fn with_checked_idp(
    state: &SharedState,
    mut session: std::sync::Arc<SessionRecord>,
) -> std::sync::Arc<SessionRecord> {
    let checked = state.session_idp(&session).map(|f| f.idp.name.as_str());
    if checked != Some(session.idp_name.as_str()) {
        // A copy of this request's own (the store's stays as recorded).
        std::sync::Arc::make_mut(&mut session).idp_name = checked.unwrap_or_default().to_string();
    }
    session
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
    guard(state, &Peer::new(peer), request).await
}

/// [`protected`] for a connection whose [`Peer`] is known (the public listener makes one per
/// connection): checks the route and the session, then forwards or answers.
pub async fn guard(state: SharedState, client: &Peer, mut request: Request) -> Response {
    let peer = client.addr;
    // A tunnel is nothing an app behind the gateway serves (and an HTTP/2 extended CONNECT
    // would be a WebSocket without an `Upgrade` header, past the origin check below).
    if request.method() == Method::CONNECT {
        let mut response = pages::page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "<p>CONNECT is not served here.</p>",
        );
        response.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return response;
    }
    // Routing, rules and the upstream all see one normal form of the path (crate::paths).
    let path = match crate::paths::normalize(request.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            let body = format!(
                "<p>The address is not valid: {}.</p>",
                escape_html(&e.to_string())
            );
            return pages::page(StatusCode::BAD_REQUEST, "Bad request", &body);
        }
    };
    // `/saml/` belongs to the gateway: a path there that no endpoint serves is not the app's.
    if path == "/saml" || path.starts_with("/saml/") {
        return not_found("No such page.");
    }
    let Some(host) = request_host(&request) else {
        return pages::page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "<p>The request names two different hosts.</p>",
        );
    };
    let routes = state.routes.load_full();
    let (route, forwarded) = match routes.find(host.as_deref(), &path) {
        RouteMatch::Found(route, forwarded) => (route, forwarded),
        RouteMatch::NoRoute if path == "/" && !routes.has_catch_all() => {
            let cookie = cookie(request.headers(), state.cookies.session_name);
            let now = unix_now();
            return match session_named(&state, cookie, request.headers(), peer, &path, now).await {
                Ok(Some((_, session))) => index(&routes, &session),
                Ok(None) => unauthenticated(&request),
                Err(_) => crate::saml::store_unavailable_page(),
            };
        }
        RouteMatch::NoRoute | RouteMatch::CaseMismatch => return not_found("No application here."),
    };
    // The upstream gets an origin-form target with the path as routed; a request's own target
    // that is already that (nearly every one) is kept as it is.
    let uri = request.uri();
    let path = if uri.scheme().is_some() || uri.authority().is_some() || uri.path() != forwarded {
        let target = match uri.query() {
            Some(q) => format!("{forwarded}?{q}"),
            None => forwarded.into_owned(),
        };
        // The path no longer borrows the target it is about to replace.
        let path = Cow::Owned(path.into_owned());
        match target.parse::<Uri>() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return not_found("No application here."),
        }
        path
    } else {
        path
    };
    // One walk over the cookies finds the session's and what the upstream may see.
    let cookies = crate::cookies::scan(
        request.headers(),
        Some(state.cookies.session_name),
        &route.forward_cookies,
    );
    let to = Upstream {
        route,
        cookies: cookies.upstream,
    };
    if route.public {
        return crate::proxy::forward(&state, to, None, client, request).await;
    }
    let now = unix_now();
    let found = session_named(&state, cookies.session, request.headers(), peer, &path, now).await;
    let (id, session) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return unauthenticated(&request),
        Err(_) => return crate::saml::store_unavailable_page(),
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
    let identity = state.identity(&id, &session, route, routes.generation(), now);
    if !identity.allowed {
        return denied(&state, route, &id, &session, peer, request.headers(), &path).await;
    }
    // A route that wants a recent sign-in sends an older (or undated) one to sign in again,
    // as if it had no session (the login it starts asks the IdP for a new sign-in).
    if !state.signed_in_recently(route.max_authn_age, &session, now) {
        return unauthenticated(&request);
    }
    crate::proxy::forward(
        &state,
        to,
        Some((&id, &session, &identity)),
        client,
        request,
    )
    .await
}

fn not_found(text: &str) -> Response {
    pages::page(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("<p>{}</p>", escape_html(text)),
    )
}

/// The host the request is for, as routes compare it; `Some(None)` when it names none, `None`
/// when an absolute-form target and the `Host` header disagree.
fn request_host(request: &Request) -> Option<Option<Cow<'_, str>>> {
    host_of(request.uri(), request.headers())
}

/// [`request_host`] from a request's target and headers.
pub(crate) fn host_of<'r>(uri: &'r Uri, headers: &'r HeaderMap) -> Option<Option<Cow<'r, str>>> {
    let from_header = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_key);
    let from_target = uri.authority().map(|a| host_key(a.as_str()));
    match (from_target, from_header) {
        (Some(t), Some(h)) if t != h => None,
        (Some(t), _) => Some(Some(t)),
        (None, h) => Some(h),
    }
}

/// 403 for a signed-in user the route's rule does not let in, with its audit record.
async fn denied(
    state: &SharedState,
    route: &Route,
    id: &SessionId,
    session: &SessionRecord,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
) -> Response {
    let wrong_idp = !route.compiled.idp_allows(session);
    let mut record = audit_record(peer, headers, path);
    record.event = Some(Event::AccessDenied);
    record.reason = Some(
        if wrong_idp {
            "idp_not_allowed"
        } else if route.rule.groups.is_empty() {
            "user_not_allowed"
        } else {
            "group_not_allowed"
        }
        .into(),
    );
    record.route = Some(route.name.clone());
    record.user = Some(session.user.clone());
    record.idp = Some(session.idp.clone());
    record.idp_name = Some(session.idp_name.clone()).filter(|n| !n.is_empty());
    record.session = Some(session_hash(id.expose()));
    if let Err(e) = state.audit.record(record).await {
        tracing::error!(error = %e, "audit log write failed for access_denied");
    }
    if wrong_idp {
        let labels: Vec<String> = route
            .rule
            .idps
            .iter()
            .map(|n| {
                let label = state.idp(n).map_or(n.as_str(), |f| f.idp.label.as_str());
                format!("<strong>{}</strong>", escape_html(label))
            })
            .collect();
        let body = format!(
            "<p>You are signed in as <strong>{}</strong>, but <strong>{}</strong> accepts only \
             sign-ins with {}. Sign out, then sign in with {}.</p>\
             <p>Reason: <code>idp_not_allowed</code></p>\
             <p><a href=\"/saml/logout\">Sign out</a></p>",
            escape_html(&session.user),
            escape_html(&route.name),
            labels.join(" or "),
            labels.join(" or "),
        );
        return pages::page(StatusCode::FORBIDDEN, "Access denied", &body);
    }
    let body = format!(
        "<p>You are signed in as <strong>{}</strong>, but <strong>{}</strong> is open only to \
         certain users or groups. Ask its owner for access, or sign in as someone else.</p>\
         <p><a href=\"/saml/logout\">Sign out</a></p>",
        escape_html(&session.user),
        escape_html(&route.name),
    );
    pages::page(StatusCode::FORBIDDEN, "Access denied", &body)
}

/// `/` without a catch-all route: the apps this user may open.
fn index(routes: &RouteTable, session: &SessionRecord) -> Response {
    let links: String = routes
        .routes()
        .iter()
        .filter(|r| r.host.is_none() && (r.public || r.compiled.allows(session)))
        .map(|r| {
            format!(
                "<li><a href=\"{}/\">{}</a></li>",
                escape_html(&r.path),
                escape_html(&r.name)
            )
        })
        .collect();
    let body = if links.is_empty() {
        "<p>No application here is open to you.</p>".to_string()
    } else {
        format!("<ul>{links}</ul>")
    };
    let body = format!(
        "<p>Signed in as <strong>{}</strong>.</p>{body}<p><a href=\"/saml/logout\">Sign out</a></p>",
        escape_html(&session.user)
    );
    pages::page(StatusCode::OK, "Applications", &body)
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
    fn the_host_is_read_from_the_target_over_http2_or_the_host_header() {
        let uri: Uri = "https://Dash.Example.com:8443/saml/login".parse().unwrap();
        let none = HeaderMap::new();
        assert_eq!(host_of(&uri, &none), Some(Some("dash.example.com".into())));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("dash.example.com"));
        let origin_form: Uri = "/saml/login".parse().unwrap();
        assert_eq!(
            host_of(&origin_form, &headers),
            Some(Some("dash.example.com".into()))
        );
        headers.insert(header::HOST, HeaderValue::from_static("other.example.com"));
        assert_eq!(
            host_of(&uri, &headers),
            None,
            "a target and a header that disagree"
        );
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
