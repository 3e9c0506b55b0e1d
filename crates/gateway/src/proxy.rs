//! The reverse proxy: HTTP with streamed bodies, and WebSocket upgrades as raw bytes.
//!
//! Before a request leaves, the hop-by-hop headers are dropped, every header that carries
//! identity (the configured identity headers and `X-Forwarded-*`) is removed and set anew from
//! the session, and the `Cookie` header keeps only the cookies the route forwards (never the
//! gateway's own, never a same-host IdP's). On the way back, a `Set-Cookie` for one of the
//! gateway's cookies is dropped. A WebSocket upgrade keeps its `Upgrade` and `Connection`
//! headers; when the upstream answers `101`, both upgraded connections are joined as raw bytes
//! ([`crate::ws_join`]), so whatever extension the two ends agree on (Streamlit's browser offers
//! permessage-deflate) passes through untouched. The join runs until both sides have closed,
//! either fails, or the session ends ([`crate::session_watch`]), whichever comes first.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use session_store::{SessionId, SessionRecord};

use crate::config::IdentityHeaders;
use crate::cookies::{for_upstream, strip_gateway_set_cookies, UpstreamCookies};
use crate::identity::Identity;
use crate::routing::Route;
use crate::session_watch::{SessionWatch, WatchedRoute};
use crate::state::{audit_record, SharedState};
use crate::upstream::PooledBody;

/// Headers that apply to one connection only (RFC 9110 7.6.1), never forwarded as they are.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The place of `name` in [`HOP_BY_HOP`], if it is one. Compared as header names, not as
/// text: a name `http` knows (nearly every one a browser or nginx sends, and seven of these
/// eight) is a one-byte tag, so each comparison is one of two bytes, with no string read
/// (this runs on every header of every request and response).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    HOP_BY_HOP.iter().position(|h| h == name)
}

/// Headers that tell an upstream who the client is or how it reached the proxy; a client's own
/// are never believed (beyond `X-Forwarded-*`, which goes as a family).
const CLIENT_CLAIM_HEADERS: [&str; 9] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-scheme",
    "x-remote-user",
];

/// `_` read as `-`, as CGI/WSGI-style servers read header names.
fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b
    }
}

/// True when `a` reads as `b` once `_` is taken for `-` on both sides (header names arrive
/// lower-cased; configured names may be spelled with `_`, such as `Remote_User`).
fn same_folded(a: &HeaderName, b: &HeaderName) -> bool {
    let (a, b) = (a.as_str().as_bytes(), b.as_str().as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// The header names a client may not send: all of `X-Auth-*` and `X-Forwarded-*`, the
/// `CLIENT_CLAIM_HEADERS`, the configured identity headers and the token header, each also
/// in its `_` spelling (so `X_Auth_User` is caught too). Made once from the config.
#[derive(Debug, Clone)]
pub struct ClaimNames {
    /// The configured identity header names and the token header.
    configured: Vec<HeaderName>,
    /// Bit `b` set when a claim name can start with byte `b` (after [`fold`]): every other
    /// name is ruled out by its first byte, which is nearly every name a browser sends.
    first_bytes: u128,
}

impl ClaimNames {
    /// The claim names for identity headers `identity` and token header `token` (when tokens
    /// are on).
    pub fn new(identity: &IdentityHeaders, token: Option<&HeaderName>) -> ClaimNames {
        let configured: Vec<HeaderName> = identity.all().chain(token).cloned().collect();
        let fixed = [b"x-auth-".as_slice(), b"x-forwarded-"]
            .into_iter()
            .chain(CLIENT_CLAIM_HEADERS.iter().map(|h| h.as_bytes()));
        let first_bytes = fixed
            .chain(configured.iter().map(|n| n.as_str().as_bytes()))
            .filter_map(|name| name.first())
            .fold(0u128, |bits, b| bits | first_byte_bit(fold(*b)));
        ClaimNames {
            configured,
            first_bytes,
        }
    }

    /// True when a client-sent header `name` could pass for identity or routing information
    /// the gateway vouches for. Compared byte by byte, so that the common case (no claim
    /// header) allocates nothing.
    fn matches(&self, name: &HeaderName) -> bool {
        let bytes = name.as_str().as_bytes();
        let Some(first) = bytes.first() else {
            return false;
        };
        if self.first_bytes & first_byte_bit(fold(*first)) == 0 {
            return false;
        }
        let starts = |prefix: &[u8]| {
            bytes.len() >= prefix.len() && bytes.iter().zip(prefix).all(|(a, b)| fold(*a) == *b)
        };
        starts(b"x-auth-")
            || starts(b"x-forwarded-")
            || CLIENT_CLAIM_HEADERS
                .iter()
                .any(|h| h.len() == bytes.len() && starts(h.as_bytes()))
            || self.configured.iter().any(|n| same_folded(name, n))
    }
}

/// The bit of [`ClaimNames::first_bytes`] for byte `b`. Header names are visible ASCII; a
/// byte past it would share the top bit with DEL, and no name has either.
fn first_byte_bit(b: u8) -> u128 {
    1 << b.min(127)
}

/// Removes every client-sent header that `claims` names, then adds the headers of `identity`
/// (none on a public route). One function, so that no caller can add identity to a request
/// that still carries the client's claims; each is appended, since no value of its name is
/// left to look for or replace.
pub fn replace_claims(headers: &mut HeaderMap, claims: &ClaimNames, identity: Option<&Identity>) {
    strip_client_claims(headers, claims);
    if let Some(identity) = identity {
        headers.reserve(identity.headers.len());
        for (name, value) in &identity.headers {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// Removes every client-sent header that `claims` names.
fn strip_client_claims(headers: &mut HeaderMap, claims: &ClaimNames) {
    // Clients rarely send any: then one pass over the names, and nothing built.
    if !headers.keys().any(|n| claims.matches(n)) {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| claims.matches(n))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Encodes a claim for a header value: visible ASCII and space as they are, `%`, `,` and every
/// other byte (control characters, non-ASCII UTF-8) percent-encoded, so values never carry
/// CR, LF or NUL and list separators stay unambiguous.
pub fn header_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b == b' ' || b.is_ascii_graphic()) && b != b'%' && b != b',' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Drops the hop-by-hop headers of `headers`, and those its `Connection` names; true when a
/// `Host` header is left (what a request needs to know). One pass over the names finds them
/// and `Host`, without hashing or allocating.
fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Bit `i` set when `HOP_BY_HOP[i]` is present.
    let mut present = 0u8;
    // `Connection` names more than `keep-alive` (the usual value, nothing to look up).
    let mut names_more = false;
    let mut host = false;
    for (name, value) in headers.iter() {
        match hop_by_hop_index(name) {
            Some(index) => {
                present |= 1 << index;
                names_more |= index == 0 && !value.as_bytes().eq_ignore_ascii_case(b"keep-alive");
            }
            None => host |= name == header::HOST,
        }
    }
    // Most requests carry none of these (a response from nginx carries `Connection` only).
    if present == 0 {
        return host;
    }
    // Headers named in Connection are hop-by-hop too (`keep-alive` and the like are dropped
    // anyway; `close` is a name like any other: a `Close` field goes too).
    let listed: Vec<HeaderName> = if names_more {
        // Split as bytes: a value with a non-ASCII byte still names its other fields.
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|n| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(n))
            })
            .filter_map(|n| HeaderName::from_bytes(n).ok())
            .collect()
    } else {
        Vec::new()
    };
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
    for name in listed {
        headers.remove(name);
    }
    // `Connection` can name `Host` itself, which then goes too.
    host && (!names_more || headers.contains_key(header::HOST))
}

/// Where a request goes: its route, and what its `Cookie` headers need on the way.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'r> {
    /// The route the request matched.
    pub route: &'r Route,
    /// What [`crate::cookies::scan`] found the `Cookie` headers need for this route.
    pub cookies: UpstreamCookies,
}

/// Sends `request` to the route's upstream, as the session `signed_in` (its ID and its live
/// record) or, on a public route, without identity; returns the upstream's answer.
pub async fn forward(
    state: &SharedState,
    to: Upstream<'_>,
    signed_in: Option<(&SessionId, &SessionRecord, &Identity)>,
    client: &Peer,
    mut request: Request,
) -> Response {
    let route = to.route;
    let peer = client.addr;
    let upgrade = is_upgrade(request.headers());
    // The client's side of an upgrade, and the flag its join raises on activity.
    let client_upgrade = upgrade.then(|| {
        (
            hyper::upgrade::on(&mut request),
            Arc::new(AtomicBool::new(false)),
        )
    });
    // A socket of a session is closed when the session ends; a public route's has no session.
    let watch = match (&client_upgrade, signed_in) {
        (Some((_, active)), Some((id, session, identity))) => {
            let audit = audit_record(peer, request.headers(), request.uri().path());
            let route = WatchedRoute {
                name: route.name.clone(),
                upstream: route.upstream.clone(),
                generation: identity.generation(),
            };
            Some(SessionWatch::new(
                state.clone(),
                id.clone(),
                Arc::new(session.clone()),
                audit,
                active.clone(),
                route,
            ))
        }
        _ => None,
    };

    *request.version_mut() = axum::http::Version::HTTP_11;

    let headers = request.headers_mut();
    let host = strip_hop_by_hop(headers);
    // Room for every header added below (the identity's; the two `X-Forwarded-*`; `Host`;
    // `Connection` and `Upgrade` on an upgrade) at once: the map grows (its entries moved,
    // its index rebuilt) once, not once for the identity and again for `X-Forwarded-*`.
    let identity = signed_in.map(|(_, _, identity)| identity);
    let added = identity.map_or(0, |i| i.headers.len()) + 5;
    headers.reserve(added);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    for_upstream(headers, &route.forward_cookies, to.cookies);
    replace_claims(headers, &state.claim_names, identity);
    headers.insert(X_FORWARDED_FOR, client.forwarded_for.clone());
    let proto = if state.config.secure_cookies {
        "https"
    } else {
        "http"
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // HTTP/2 requests name their host in the target, not in a `Host` header.
    if !host {
        if let Some(host) = crate::upstream::host_header(&route.upstream) {
            headers.insert(header::HOST, host);
        }
    }

    let (mut response, lease) = match state.upstreams.send(&route.upstream, request).await {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(error = %e, upstream = %route.upstream, "upstream request failed");
            return bad_gateway();
        }
    };
    strip_gateway_set_cookies(response.headers_mut());

    if let Some((client_upgrade, active)) = client_upgrade {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            spawn_websocket(client_upgrade, upstream_upgrade, active, watch);
            // The connection now carries the WebSocket (the pool gave no lease for it).
            return response.map(Body::new);
        }
    }
    strip_hop_by_hop(response.headers_mut());
    match lease {
        Some(lease) => response.map(|body| Body::new(PooledBody::new(body, lease))),
        None => response.map(Body::new),
    }
}

/// Joins the client's and the upstream's upgraded connections as raw bytes in a task of their
/// own ([`crate::ws_join`]), until both sides have closed, either fails, or the session ends
/// (`watch`; none on a public route). `active` is raised on traffic, for the watch. Not
/// inlined: the task is large, and inlined into [`forward`] it widened the stack frame of
/// every proxied request (docs/performance.md).
#[inline(never)]
fn spawn_websocket(
    client_upgrade: OnUpgrade,
    upstream_upgrade: OnUpgrade,
    active: Arc<AtomicBool>,
    watch: Option<SessionWatch>,
) {
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok((client, upstream)) => {
                // Boxed, so that it can be dropped (both sockets closed) at the end.
                let mut joined = Box::pin(crate::ws_join::join(client, upstream, active));
                let mut watch = watch;
                let ended = async {
                    match watch.as_mut() {
                        Some(w) => w.until_ended().await,
                        None => std::future::pending().await,
                    }
                };
                let ending = tokio::select! {
                    result = &mut joined => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "websocket ended with an error");
                        }
                        None
                    }
                    ending = ended => Some(ending),
                };
                // The join has stopped; the record is written before the close, so
                // that whoever sees the socket closed finds it in the audit log.
                if let (Some(ending), Some(watch)) = (ending, watch) {
                    watch.report(ending).await;
                }
                // Closing both connections mid-stream is the only safe cut: a close
                // frame could land inside a frame the join had half passed on. The
                // browser sees an abnormal close, reconnects, gets 401 and reloads.
                drop(joined);
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
}

/// The client end of a connection, as requests from it are forwarded.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP address as the `X-Forwarded-For` value, written once per connection.
    pub forwarded_for: HeaderValue,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            forwarded_for: ip_header_value(addr.ip()),
        }
    }
}

/// `X-Forwarded-For`, set anew on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`, set anew on every request.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The client's address as a header value; an IPv4 address is written without the
/// formatting machinery (this runs on every request).
fn ip_header_value(ip: std::net::IpAddr) -> HeaderValue {
    let std::net::IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            text[len] = b'0' + d;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn bad_gateway() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        "the application is not reachable\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_name_is_found_in_its_place() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(index), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::HOST), None);
        // Parsed from a request, a name is compared as it arrives, not as spelled.
        let parsed = HeaderName::from_bytes(b"Keep-Alive").unwrap();
        assert_eq!(hop_by_hop_index(&parsed), Some(1));
        let parsed = HeaderName::from_bytes(b"Connection").unwrap();
        assert_eq!(hop_by_hop_index(&parsed), Some(0));
    }

    #[test]
    fn client_addresses_as_header_values() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.9.99",
            "::1",
            "fe80::1",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header_value(parsed), ip);
        }
    }

    #[test]
    fn header_text_never_carries_control_characters() {
        assert_eq!(header_text("alice"), "alice");
        assert_eq!(header_text("a\r\nb\0"), "a%0D%0Ab%00");
        assert_eq!(header_text("Zoë"), "Zo%C3%AB");
        assert_eq!(header_text("a,b%"), "a%2Cb%25");
    }

    #[test]
    fn claims_in_any_spelling_are_stripped() {
        let names = IdentityHeaders {
            user: HeaderName::from_static("remote_user"),
            ..IdentityHeaders::default()
        };
        let mut h = HeaderMap::new();
        for n in [
            "x_auth_user",
            "x-auth-anything",
            "remote-user",
            "remote_user",
            "x-forwarded-prefix",
            "x_forwarded_host",
            "true-client-ip",
            "forwarded",
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
        }
        h.insert("accept", HeaderValue::from_static("text/html"));
        h.insert("x_identity_token", HeaderValue::from_static("x"));
        let token = HeaderName::from_static("x-identity-token");
        strip_client_claims(&mut h, &ClaimNames::new(&names, Some(&token)));
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn the_first_byte_filter_never_rules_out_a_claim() {
        let names = IdentityHeaders {
            user: HeaderName::from_static("_user"),
            email: HeaderName::from_static("mail"),
            idp: Some(HeaderName::from_static("idp")),
            ..IdentityHeaders::default()
        };
        let token = HeaderName::from_static("jwt");
        let claims = ClaimNames::new(&names, Some(&token));
        for claim in [
            "-user",
            "_user",
            "mail",
            "idp",
            "jwt",
            "x-auth-x",
            "x_forwarded_for",
            "forwarded",
            "true-client-ip",
            "true_client_ip",
            "x-real-ip",
            "x-remote-user",
        ] {
            let name = HeaderName::from_bytes(claim.as_bytes()).unwrap();
            assert!(claims.matches(&name), "{claim}");
        }
        for other in [
            "accept", "cookie", "host", "user", "mailer", "te", "x-other", "idp2", "jw",
        ] {
            let name = HeaderName::from_bytes(other.as_bytes()).unwrap();
            assert!(!claims.matches(&name), "{other}");
        }
        // Only the fixed families and the configured names' first bytes pass the filter.
        let defaults = ClaimNames::new(&crate::identity::tests::names(), None);
        let passing: Vec<char> = (0u8..128)
            .filter(|b| defaults.first_bytes & first_byte_bit(*b) != 0)
            .map(char::from)
            .collect();
        assert_eq!(passing, ['f', 't', 'x']);
    }

    #[test]
    fn a_request_keeps_its_host_unless_connection_names_it() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("app"));
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["host"]);
        h.append(header::CONNECTION, HeaderValue::from_static("Host"));
        assert!(!strip_hop_by_hop(&mut h));
        assert!(h.is_empty(), "{h:?}");
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        assert!(!strip_hop_by_hop(&mut h));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("app"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        h.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        h.append("x-secret", HeaderValue::from_static("1"));
        h.append("x-other", HeaderValue::from_static("2"));
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append(header::TE, HeaderValue::from_static("trailers"));
        h.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "accept"]);
        // Without Connection, a header that it could have named stays.
        let mut h = HeaderMap::new();
        h.append("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("x-secret"));
        // `keep-alive` alone names nothing more; a second Connection field still does.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-secret"]
        );
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-secret"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        // A byte outside ASCII in the value does not hide the names beside it.
        h.append("x-secret", HeaderValue::from_static("1"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, \xff").unwrap(),
        );
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }
}
