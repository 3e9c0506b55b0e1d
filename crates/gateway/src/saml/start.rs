//! `/saml/login`: the start of a login (step 2 of the flow in [`crate::saml`]), the IdP
//! chooser when several IdPs are configured, and the login budget every start is charged to.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use saml_sp::authn_request::{new_message_id, AuthnRequest};
use saml_sp::bindings::redirect_url;
use serde::Deserialize;
use session_store::PendingRequest;

use crate::audit::{Event, Record};
use crate::cookies::{cookie, RELAY_TTL_SECS};
use crate::login_limit::Budgeted;
use crate::pages::{self, escape_html};
use crate::redirect::local_path;
use crate::state::{audit_record, reference, unix_now, SharedState};

use super::{redirect, Failure};

/// Query of `/saml/login`.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
    idp: Option<String>,
}

/// `GET /saml/login`: starts a login at the IdP, or shows the chooser when several could
/// serve it.
pub async fn login(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    note_unlisted_proxy(&state, peer, &headers);
    // Charged first, so that no answer of this endpoint (a login started, an unknown IdP
    // refused and audited) escapes the budget.
    if let Some(refused) = over_budget(&state, peer, &headers, Budgeted::Login).await {
        return refused;
    }
    let return_to = local_path(query.return_to.as_deref().unwrap_or("/"));
    let mut record = audit_record(peer, &headers, "/saml/login");
    let wanted = login_for(&state, &uri, &headers, &return_to);
    let (federation, chosen) = match pick_idp(&state, wanted.idp.as_deref(), query.idp.as_deref()) {
        Ok(Some(pick)) => pick,
        Ok(None) => return chooser_page(&state, &headers, &return_to),
        Err(failure) => {
            return failure
                .into_response(&state, peer, &headers, "/saml/login")
                .await
        }
    };
    record.idp = Some(federation.entity_id.clone());
    record.idp_name = Some(federation.idp.name.clone());
    match start_login(&state, federation, &return_to, wanted.max_authn_age, record).await {
        Ok(mut response) => {
            if chosen {
                let remember = state.cookies.remember_idp(&federation.idp.name);
                response.headers_mut().append(header::SET_COOKIE, remember);
            }
            response
        }
        Err(failure) => {
            failure
                .into_response(&state, peer, &headers, "/saml/login")
                .await
        }
    }
}

/// Set once a login start with `X-Forwarded-For` and no trusted proxy was warned of.
static UNLISTED_PROXY_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Warns, once per run, of a login start that carries `X-Forwarded-For` or `Forwarded` while
/// `server.trusted_proxies` is empty: most likely a load balancer nobody listed, behind which
/// every user is audited under its address and shares one login budget. (A client may send the
/// header itself, which is why this is a hint, not an error.)
fn note_unlisted_proxy(state: &SharedState, peer: SocketAddr, headers: &HeaderMap) {
    if state.config.trusted_proxies.is_empty()
        && (headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded"))
        && !UNLISTED_PROXY_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            peer = %peer.ip(),
            "a login start came with X-Forwarded-For or Forwarded from a peer that \
             server.trusted_proxies does not list (the list is empty); if the peer is a load \
             balancer or TLS terminator, \
             list it: until then every client behind it is audited under its address and shares \
             its login budget (warned once per run)"
        );
    }
}

/// `429 Too Many Requests` when the client's address has started more logins than its budget
/// allows (see [`crate::login_limit`]); the first refusal of a run is audited (as `slo` for a
/// logout message, else `login_failure`), the later ones in summaries ([`crate::refusals`]).
pub(crate) async fn over_budget(
    state: &SharedState,
    peer: SocketAddr,
    headers: &HeaderMap,
    charged: Budgeted,
) -> Option<Response> {
    let limiter = state.login_limit.as_ref()?;
    let crate::login_limit::Verdict::Refused { retry_after, audit } =
        limiter.check(peer.ip(), charged)
    else {
        return None;
    };
    let reference = reference();
    if audit {
        let mut record = audit_record(peer, headers, charged.path());
        record.event = Some(charged.event());
        record.reason = Some("rate_limited".into());
        record.detail = Some(format!(
            "over {} login starts per minute from this client",
            limiter.per_minute()
        ));
        record.reference = Some(reference.clone());
        if let Err(e) = state.audit.record(record).await {
            tracing::error!(error = %e, reason = "rate_limited", "audit log write failed");
            limiter.audit_failed(peer.ip(), charged);
        }
        tracing::warn!(client = %peer.ip(), reference = %reference, "login starts over budget");
    }
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = pages::error(
        StatusCode::TOO_MANY_REQUESTS,
        if charged == Budgeted::Slo {
            "Sign-out message refused"
        } else {
            "Sign-in failed"
        },
        "rate_limited",
        &format!("Too many sign-in or sign-out messages came from your address. Try again in {seconds} s."),
        &reference,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    Some(response)
}

/// What the route of `return_to` asks of a login, as the gate finds that route (the path
/// normalized the same way; a `return_to` that does not normalize has no route).
#[derive(Debug, Default)]
struct LoginFor {
    /// The route's own IdP (`routes[N].idp`).
    idp: Option<String>,
    /// The route's `max_authn_age`, in seconds: the login asks the IdP for a new sign-in.
    max_authn_age: Option<i64>,
}

/// [`LoginFor`] the route of `return_to` on the request's host (from its `Host` header, or
/// its target's authority over HTTP/2, as the gate reads it).
fn login_for(state: &SharedState, uri: &Uri, headers: &HeaderMap, return_to: &str) -> LoginFor {
    let Some(host) = crate::gate::host_of(uri, headers) else {
        return LoginFor::default();
    };
    let path = return_to.split(['?', '#']).next().unwrap_or("/");
    let routes = state.routes.load();
    let Ok(path) = crate::paths::normalize(path) else {
        return LoginFor::default();
    };
    match routes.find(host.as_deref(), &path) {
        crate::routing::RouteMatch::Found(route, _) => LoginFor {
            idp: route.idp.clone(),
            max_authn_age: route.max_authn_age,
        },
        _ => LoginFor::default(),
    }
}

/// The IdP a login goes to, and whether the browser chose it (`?idp=`): the route's own IdP
/// (`bound`), else the one named in the query, else the only one. `None`: the browser must
/// choose.
fn pick_idp<'s>(
    state: &'s SharedState,
    bound: Option<&str>,
    asked: Option<&str>,
) -> Result<Option<(&'s crate::federation::Federation, bool)>, Failure> {
    if let Some(name) = bound {
        return state
            .idp(name)
            .map(|f| Some((f, false)))
            .ok_or(Failure::bad_request("unknown_idp"));
    }
    if let Some(name) = asked {
        return state
            .idp(name)
            .map(|f| Some((f, true)))
            .ok_or(Failure::bad_request("unknown_idp"));
    }
    Ok(match state.idps.as_slice() {
        [only] => Some((only, false)),
        _ => None,
    })
}

/// The page that lets the browser pick an IdP: one link per IdP, the one chosen last first.
/// Plain links in a list, so that keyboards and screen readers need nothing more.
fn chooser_page(state: &SharedState, headers: &HeaderMap, return_to: &str) -> Response {
    let remembered = cookie(headers, crate::cookies::REMEMBERED_IDP);
    let idps: Vec<(&str, &str)> = state
        .idps
        .iter()
        .map(|f| (f.idp.name.as_str(), f.idp.label.as_str()))
        .collect();
    pages::page(
        StatusCode::OK,
        "Choose how to sign in",
        &chooser_html(&idps, remembered, return_to),
    )
}

/// The chooser's list for `idps` (name, label), the `remembered` one first and marked, each
/// link carrying `return_to`. Every value is escaped.
fn chooser_html(idps: &[(&str, &str)], remembered: Option<&str>, return_to: &str) -> String {
    let remembered = remembered.filter(|r| idps.iter().any(|(name, _)| name == r));
    let mut order: Vec<&(&str, &str)> = idps.iter().collect();
    order.sort_by_key(|(name, _)| Some(*name) != remembered);
    let encoded: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
    let items: String = order
        .iter()
        .map(|(name, label)| {
            let last = if Some(*name) == remembered {
                " <small>(last used)</small>"
            } else {
                ""
            };
            format!(
                "<li><a href=\"/saml/login?idp={}&amp;return_to={}\">{}</a>{last}</li>",
                escape_html(name),
                escape_html(&encoded),
                escape_html(label),
            )
        })
        .collect();
    format!("<p>Sign in with:</p><ul class=\"idps\">{items}</ul>")
}

/// Sends the browser to `federation`'s IdP with a new AuthnRequest, remembering where it
/// returns to; `max_authn_age` (a route's) asks the IdP to sign the user in again (ForceAuthn)
/// and the ACS to check that it did.
async fn start_login(
    state: &SharedState,
    federation: &crate::federation::Federation,
    return_to: &str,
    max_authn_age: Option<i64>,
    mut record: Record,
) -> Result<Response, Failure> {
    let now = unix_now();
    let request_id = new_message_id().map_err(|_| Failure::unavailable("random_unavailable"))?;
    let token =
        session_store::random_token().map_err(|_| Failure::unavailable("random_unavailable"))?;
    let pending = PendingRequest {
        request_id: request_id.clone(),
        return_to: return_to.to_string(),
        created_at: now,
        max_authn_age,
        idp: federation.idp.name.clone(),
    };
    state
        .store
        .put_pending(&token, pending, now + RELAY_TTL_SECS)
        .await
        .map_err(|_| Failure::unavailable("store_unavailable"))?;
    let trust = federation.current();
    let sso = &trust.metadata.sso;
    let request = AuthnRequest {
        id: request_id.clone(),
        issue_instant: chrono::Utc::now(),
        destination: sso.location.clone(),
        issuer: state.config.sp.entity_id.clone(),
        acs_url: state.config.acs_url(),
        name_id_format: federation.idp.name_id_format.clone(),
        force_authn: max_authn_age.is_some(),
        authn_context: federation.idp.authn_context.clone(),
    };
    let request_xml = request.to_xml();
    let mut response = send_to_idp(
        sso,
        false,
        Message {
            param: "SAMLRequest",
            xml: &request_xml,
            id: &request_id,
            relay_state: Some(&token),
        },
        state.request_signing_key.as_ref(),
    )
    .map_err(|_| Failure::unavailable("request_signing_failed"))?;
    if let Some(trace) = &state.trace {
        trace
            .authn_request(&request_id, &sso.location, &request_xml)
            .await;
    }

    record.event = Some(Event::LoginStart);
    record.request_id = Some(request_id);
    state
        .audit
        .record(record)
        .await
        .map_err(|e| Failure::audit(&e))?;

    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookies.relay(&token));
    Ok(response)
}

/// A SAML message the browser carries to the IdP.
pub(crate) struct Message<'a> {
    /// `SAMLRequest` or `SAMLResponse`.
    pub param: &'static str,
    /// The message.
    pub xml: &'a str,
    /// Its root's ID (what an enveloped signature references).
    pub id: &'a str,
    /// The RelayState to send along.
    pub relay_state: Option<&'a str>,
}

/// Sends `message` to the IdP `endpoint` (its `response_location` when `response`) through
/// the browser, by the endpoint's binding: a 303 to the signed query (HTTP-Redirect), or a
/// page that posts the form (HTTP-POST, with an enveloped signature). Signed with `key` when
/// given.
pub(crate) fn send_to_idp(
    endpoint: &saml_sp::metadata::Endpoint,
    response: bool,
    message: Message<'_>,
    key: Option<&openssl::pkey::PKey<openssl::pkey::Private>>,
) -> Result<Response, saml_sp::bindings::SigningError> {
    let url = if response {
        &endpoint.response_location
    } else {
        &endpoint.location
    };
    match endpoint.binding {
        saml_sp::metadata::Binding::Redirect => {
            let location = redirect_url(url, message.param, message.xml, message.relay_state, key)?;
            Ok(redirect(&location))
        }
        saml_sp::metadata::Binding::Post => {
            let value = saml_sp::bindings::post_value(message.xml, message.id, key)?;
            let mut fields = vec![(message.param, value.as_str())];
            if let Some(relay_state) = message.relay_state {
                fields.push(("RelayState", relay_state));
            }
            Ok(pages::auto_post(url, &fields))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chooser_escapes_labels_and_the_return_path() {
        let idps = [("staff", "Staff <b>\"&'"), ("partners", "Partners")];
        let html = chooser_html(&idps, Some("partners"), "/a?x=\"><script>&y");
        assert!(
            !html.contains("<b>") && !html.contains("<script>"),
            "{html}"
        );
        assert!(html.contains("Staff &lt;b&gt;&quot;&amp;&#39;"), "{html}");
        assert!(
            html.contains("return_to=%2Fa%3Fx%3D%22%3E%3Cscript%3E%26y"),
            "{html}"
        );
        let partners = html.find("idp=partners").unwrap();
        assert!(
            partners < html.find("idp=staff").unwrap(),
            "the remembered IdP comes first"
        );
        assert_eq!(html.matches("(last used)").count(), 1);
        // A remembered name that is no IdP marks nothing and keeps the config order.
        let html = chooser_html(&idps, Some("<x>"), "/");
        assert!(
            !html.contains("last used") && !html.contains("<x>"),
            "{html}"
        );
        assert!(html.find("idp=staff").unwrap() < html.find("idp=partners").unwrap());
    }
}
