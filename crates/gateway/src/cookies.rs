//! The gateway's cookies and the filtering of the `Cookie` header sent upstream.
//!
//! Two cookies: the session cookie (opaque 256-bit ID, `HttpOnly`, `SameSite=Lax`) and the
//! short-lived relay cookie that binds a pending login's RelayState token to this browser. With
//! an `https` public URL both are `Secure` and use the `__Host-` prefix, and the relay cookie is
//! `SameSite=None` so that the IdP's cross-site POST to the ACS carries it. Plain `http` is
//! allowed only on loopback (local testing): then neither is `Secure`, and the relay cookie is
//! `SameSite=Lax`, which still works because a loopback IdP is same-site.

use axum::http::{header, HeaderMap, HeaderValue};

/// Cookie names and attributes for one deployment.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    /// Name of the session cookie.
    pub session_name: &'static str,
    /// Name of the relay cookie.
    pub relay_name: &'static str,
    secure: bool,
}

/// Name of the cookie that remembers the IdP last chosen on the chooser page (not a secret:
/// it only orders the chooser's list).
pub const REMEMBERED_IDP: &str = "saml-gateway-idp";

/// Lifetime of the relay cookie and of a pending login, in seconds.
pub const RELAY_TTL_SECS: i64 = 600;

impl CookiePolicy {
    /// The policy for a deployment served over https (`secure`) or loopback http.
    pub fn new(secure: bool) -> CookiePolicy {
        if secure {
            CookiePolicy {
                session_name: "__Host-saml-session",
                relay_name: "__Host-saml-relay",
                secure,
            }
        } else {
            CookiePolicy {
                session_name: "saml-session",
                relay_name: "saml-relay",
                secure,
            }
        }
    }

    fn attributes(&self, same_site: &str, max_age: Option<i64>) -> String {
        let mut out = String::from("; Path=/; HttpOnly");
        if self.secure {
            out.push_str("; Secure");
        }
        out.push_str("; SameSite=");
        out.push_str(same_site);
        if let Some(age) = max_age {
            out.push_str(&format!("; Max-Age={age}"));
        }
        out
    }

    /// `Set-Cookie` for a new session (a session cookie: the server enforces the lifetime).
    pub fn session(&self, id: &str) -> HeaderValue {
        header_value(format!(
            "{}={id}{}",
            self.session_name,
            self.attributes("Lax", None)
        ))
    }

    /// `Set-Cookie` that clears the session cookie.
    pub fn clear_session(&self) -> HeaderValue {
        header_value(format!(
            "{}={}",
            self.session_name,
            self.attributes("Lax", Some(0))
        ))
    }

    /// `Set-Cookie` binding a RelayState token to this browser.
    pub fn relay(&self, token: &str) -> HeaderValue {
        let same_site = if self.secure { "None" } else { "Lax" };
        header_value(format!(
            "{}={token}{}",
            self.relay_name,
            self.attributes(same_site, Some(RELAY_TTL_SECS))
        ))
    }

    /// `Set-Cookie` remembering IdP `name` (a checked IdP name) for the chooser, for a year.
    pub fn remember_idp(&self, name: &str) -> HeaderValue {
        let mut text = format!(
            "{REMEMBERED_IDP}={name}; Path=/saml; HttpOnly; SameSite=Lax; Max-Age=31536000"
        );
        if self.secure {
            text.push_str("; Secure");
        }
        header_value(text)
    }

    /// `Set-Cookie` that clears the relay cookie.
    pub fn clear_relay(&self) -> HeaderValue {
        let same_site = if self.secure { "None" } else { "Lax" };
        header_value(format!(
            "{}={}",
            self.relay_name,
            self.attributes(same_site, Some(0))
        ))
    }
}

fn header_value(text: String) -> HeaderValue {
    // Names and values are ours (fixed names, base64url tokens), so this cannot fail; fall back
    // to an empty value rather than panic.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

/// Every `name=value` pair of the request's `Cookie` headers (a header with anything but
/// visible ASCII, space and tab is skipped whole).
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(cookie_pair)
}

/// One `name=value` piece of a `Cookie` header, both sides trimmed; `None` without a `=`.
/// Checked header text is ASCII, so trimming ASCII whitespace is all of it: bytes are
/// compared, nothing is decoded (this runs on every request).
fn cookie_pair(piece: &str) -> Option<(&str, &str)> {
    let eq = piece.bytes().position(|b| b == b'=')?;
    let (name, value) = (&piece[..eq], &piece[eq + 1..]);
    Some((name.trim_ascii(), value.trim_ascii()))
}

/// The value of cookie `name`; `None` when absent or sent more than once (ambiguous). As
/// [`scan`] finds the session cookie, for requests that do not go upstream.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    scan(headers, Some(name), &[]).session
}

/// True when `name` matches one of `patterns` (exact, or a prefix ending in `*`).
pub fn allowed(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    })
}

/// The gateway's own cookie names in both policies: never sent upstream, whatever a route's
/// `forward_cookies` patterns say (a session ID in the app's hands is a stolen session).
const GATEWAY_COOKIES: [&str; 4] = [
    "__Host-saml-session",
    "__Host-saml-relay",
    "saml-session",
    "saml-relay",
];

/// True when `name` is one of the gateway's own cookies.
pub fn is_gateway_cookie(name: &str) -> bool {
    GATEWAY_COOKIES.contains(&name)
}

/// Removes the upstream's `Set-Cookie` headers that would set or clear one of the gateway's own
/// cookies: an app must not be able to plant a session ID (session fixation) or log users out.
pub fn strip_gateway_set_cookies(headers: &mut HeaderMap) {
    // Most responses set none of the gateway's cookies: then nothing is copied (this runs on
    // every proxied response).
    if !headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(sets_gateway_cookie)
    {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !sets_gateway_cookie(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// True when a `Set-Cookie` value would set or clear one of the gateway's cookies, or names
/// none (a nameless cookie, `=saml-session=x`, reaches a browser as `saml-session=x`).
fn sets_gateway_cookie(value: &HeaderValue) -> bool {
    let text = String::from_utf8_lossy(value.as_bytes());
    let name = text
        .split_once('=')
        .map_or(text.as_ref(), |(n, _)| n)
        .trim();
    name.is_empty() || is_gateway_cookie(name)
}

/// What one walk over a request's `Cookie` headers found, for the gate and the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieScan<'h> {
    /// The session cookie's value; `None` when absent or sent more than once (ambiguous).
    pub session: Option<&'h str>,
    /// What the `Cookie` headers need before the request goes upstream.
    pub upstream: UpstreamCookies,
}

/// What a request's `Cookie` headers need before going upstream ([`for_upstream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCookies {
    /// Nothing to drop (no header, or one well-formed header the app may see all of).
    AsTheyAre,
    /// Nothing the app may see: the headers go.
    Remove,
    /// Some go, some stay: one header is written with those that stay.
    Rebuild,
}

/// Walks the request's `Cookie` headers once: the value of cookie `session_name` (when given),
/// and what the headers need for an upstream that may see the cookies matching `patterns`,
/// less the gateway's own (this runs on every proxied request).
pub fn scan<'h>(
    headers: &'h HeaderMap,
    session_name: Option<&str>,
    patterns: &[String],
) -> CookieScan<'h> {
    let (mut fields, mut kept, mut dropped) = (0usize, 0usize, 0usize);
    let (mut session, mut sessions) = (None, 0usize);
    for field in headers.get_all(header::COOKIE) {
        fields += 1;
        // A header with anything but visible ASCII, space and tab is dropped whole.
        let Ok(text) = field.to_str() else {
            dropped += 1;
            continue;
        };
        for piece in text.split(';') {
            // A piece without `=` is not a cookie: it is dropped.
            let Some((name, value)) = cookie_pair(piece) else {
                dropped += 1;
                continue;
            };
            if Some(name) == session_name {
                sessions += 1;
                session = Some(value);
            }
            if for_app(name, patterns) {
                kept += 1;
            } else {
                dropped += 1;
            }
        }
    }
    let upstream = if fields == 0 || (dropped == 0 && fields == 1) {
        UpstreamCookies::AsTheyAre
    } else if kept == 0 {
        UpstreamCookies::Remove
    } else {
        UpstreamCookies::Rebuild
    };
    CookieScan {
        session: session.filter(|_| sessions == 1),
        upstream,
    }
}

/// True when the upstream may see cookie `name`: it matches `patterns`, and is not the
/// gateway's own.
fn for_app(name: &str, patterns: &[String]) -> bool {
    allowed(name, patterns) && !is_gateway_cookie(name)
}

/// Rewrites the `Cookie` headers as `plan` (from [`scan`] with the same `patterns`) says, to
/// keep only the cookies the upstream may see.
pub fn for_upstream(headers: &mut HeaderMap, patterns: &[String], plan: UpstreamCookies) {
    let mut value = String::new();
    match plan {
        UpstreamCookies::AsTheyAre => return,
        UpstreamCookies::Remove => {}
        UpstreamCookies::Rebuild => {
            for (name, v) in request_cookies(headers).filter(|(n, _)| for_app(n, patterns)) {
                if !value.is_empty() {
                    value.push_str("; ");
                }
                value.push_str(name);
                value.push('=');
                value.push_str(v);
            }
        }
    }
    headers.remove(header::COOKIE);
    if !value.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::COOKIE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the proxy does with the `Cookie` headers of a request to an upstream that may see
    /// `patterns`.
    fn filter_for_upstream(headers: &mut HeaderMap, patterns: &[String]) {
        let plan = scan(headers, None, patterns).upstream;
        for_upstream(headers, patterns, plan);
    }

    #[test]
    fn secure_policy_uses_host_prefix() {
        let p = CookiePolicy::new(true);
        let v = p.session("abc");
        let v = v.to_str().unwrap();
        assert!(v.starts_with("__Host-saml-session=abc; Path=/; HttpOnly; Secure; SameSite=Lax"));
        assert!(p.relay("t").to_str().unwrap().contains("SameSite=None"));
        assert!(!CookiePolicy::new(false)
            .session("a")
            .to_str()
            .unwrap()
            .contains("Secure"));
    }

    #[test]
    fn cookie_headers_with_nothing_to_drop_go_as_they_are() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1;b=2"));
        filter_for_upstream(&mut h, &["*".to_string()]);
        assert_eq!(h[header::COOKIE], "a=1;b=2");
        // A piece without `=` is not a cookie: the header is rebuilt without it.
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; saml-session"),
        );
        filter_for_upstream(&mut h, &["*".to_string()]);
        assert_eq!(h[header::COOKIE], "a=1");
        // Nothing the app may see: no header at all.
        h.insert(header::COOKIE, HeaderValue::from_static("saml-session=s"));
        filter_for_upstream(&mut h, &["*".to_string()]);
        assert!(!h.contains_key(header::COOKIE));
        // Two headers become one.
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        filter_for_upstream(&mut h, &["*".to_string()]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn only_allowed_cookies_go_upstream() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("saml-session=s; _streamlit_xsrf=x"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("SimpleSAMLSessionID=i; PHPSESSID=p"),
        );
        filter_for_upstream(&mut h, &["_streamlit_*".to_string()]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "_streamlit_xsrf=x");
    }

    #[test]
    fn gateway_cookies_never_go_upstream_even_when_a_pattern_matches() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("saml-session=s; __Host-saml-relay=r; app=1"),
        );
        filter_for_upstream(&mut h, &["*".to_string()]);
        assert_eq!(h[header::COOKIE], "app=1");
        for policy in [CookiePolicy::new(true), CookiePolicy::new(false)] {
            assert!(GATEWAY_COOKIES.contains(&policy.session_name));
            assert!(GATEWAY_COOKIES.contains(&policy.relay_name));
        }
    }

    #[test]
    fn upstream_cannot_set_gateway_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("saml-session=planted; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static(" __Host-saml-session=x"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("_streamlit_xsrf=t; Path=/"),
        );
        strip_gateway_set_cookies(&mut h);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["_streamlit_xsrf=t; Path=/"]);
    }

    #[test]
    fn one_walk_finds_the_session_and_what_goes_upstream() {
        let app = ["_streamlit_*".to_string()];
        let scanned = |fields: &[&'static [u8]]| {
            let mut h = HeaderMap::new();
            for f in fields {
                h.append(header::COOKIE, HeaderValue::from_bytes(f).unwrap());
            }
            let found = scan(&h, Some("saml-session"), &app);
            (found.session.map(str::to_string), found.upstream)
        };
        use UpstreamCookies::*;
        assert_eq!(scanned(&[]), (None, AsTheyAre));
        assert_eq!(scanned(&[b"saml-session=s"]), (Some("s".into()), Remove));
        assert_eq!(
            scanned(&[b"_streamlit_xsrf=x; saml-session = s "]),
            (Some("s".into()), Rebuild)
        );
        assert_eq!(
            scanned(&[b"_streamlit_a=1;_streamlit_b=2"]),
            (None, AsTheyAre)
        );
        // Sent twice: no session, whatever the values.
        assert_eq!(
            scanned(&[b"saml-session=s", b"saml-session=s"]),
            (None, Remove)
        );
        // Two fields the app may see all of still become one.
        assert_eq!(
            scanned(&[b"_streamlit_a=1", b"_streamlit_b=2"]),
            (None, Rebuild)
        );
        // A piece without `=`, a field that is not text: dropped.
        assert_eq!(scanned(&[b"_streamlit_a=1; junk"]), (None, Rebuild));
        assert_eq!(scanned(&[b"_streamlit_a=\xff"]), (None, Remove));
        assert_eq!(scanned(&[b"PHPSESSID=p"]), (None, Remove));
        // The session cookie's name has to match exactly.
        assert_eq!(scanned(&[b"Saml-Session=s"]), (None, Remove));
    }

    #[test]
    fn duplicate_cookies_are_ambiguous() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; a=2; b=3"));
        assert_eq!(cookie(&h, "a"), None);
        assert_eq!(cookie(&h, "b"), Some("3"));
    }
}
