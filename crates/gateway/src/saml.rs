//! The SAML endpoints under `/saml/`.
//!
//! The login flow, end to end:
//! 1. A browser without a session navigates to a protected page. The gateway answers `303` to
//!    `/saml/login?return_to=PATH` (other requests get `401`, see [`crate::gate`]).
//! 2. `/saml/login` draws a request ID (160 random bits) and a RelayState token (256 bits),
//!    stores `PendingRequest {request_id, return_to}` under the token for ten minutes, sets the
//!    relay cookie to the token (binding the login to this browser), writes `login_start` to the
//!    audit log and redirects to the IdP with the AuthnRequest (HTTP-Redirect, signed when
//!    configured) and the token as RelayState.
//! 3. The IdP POSTs `SAMLResponse` and `RelayState` to `/saml/acs`. The RelayState must equal
//!    the relay cookie; the pending request is taken from the store (one use); the response is
//!    validated by `saml-sp` against that request's ID; the assertion ID goes to the replay
//!    cache. Then a new session is created (a fresh ID at every login), `login_success` is
//!    audited, and the browser gets the session cookie and a `303` to `return_to`.
//!    Every failure is audited as `login_failure` with its reason code before a 4xx page that
//!    names the reason leaves; if the audit log cannot be written, the login fails closed.
//!    A post that answers no login started here (IdP-initiated, unbound, unknown RelayState,
//!    malformed form) is charged to the client's login budget first ([`crate::login_limit`]).
//! 4. `GET /saml/logout` shows a sign-out form; `POST /saml/logout` with the session's CSRF
//!    token ends the session, audits `logout` and shows the signed-out page.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use saml_sp::authn_request::{new_message_id, AuthnRequest};
use saml_sp::bindings::redirect_url;
use saml_sp::error::{MessageError, ValidationError};
use saml_sp::response::{ReplayCache, ReplayCacheUnavailable};
use saml_sp::Assertion;
use serde::Deserialize;
use session_store::{EndReason, PendingRequest, SessionId, SessionRecord, Store, SESSION_VERSION};

use crate::audit::{Event, Record};
use crate::cookies::{cookie, RELAY_TTL_SECS};
use crate::login_limit::Budgeted;
use crate::pages::{self, escape_html};
use crate::redirect::local_path;
use crate::state::{audit_record, reference, session_hash, unix_now, SharedState};

/// Longest time the ACS waits for the whole form body.
const ACS_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

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

/// `POST /saml/acs`: validates the IdP's response and creates the session.
pub async fn acs(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut record = audit_record(peer, &headers, "/saml/acs");
    let mut attempt = crate::trace::AcsTrace::default();
    match finish_login(&state, peer, &headers, body, &mut record, &mut attempt).await {
        Ok(response) => {
            if let Some(trace) = &state.trace {
                let user = record.user.as_deref().unwrap_or_default();
                trace.response(&state, &attempt, Ok(user), None).await;
            }
            response
        }
        Err(Refusal::OverBudget(mut response)) => {
            response
                .headers_mut()
                .append(header::SET_COOKIE, state.cookies.clear_relay());
            response
        }
        Err(Refusal::Failed(failure)) => {
            record.event = Some(Event::LoginFailure);
            let reference = reference();
            record.reference = Some(reference.clone());
            if let Some(trace) = &state.trace {
                trace
                    .response(&state, &attempt, Err(failure.reason), Some(&reference))
                    .await;
            }
            let mut response = failure.respond(&state, record).await;
            // A failed attempt ends this browser's pending login too.
            response
                .headers_mut()
                .append(header::SET_COOKIE, state.cookies.clear_relay());
            response
        }
    }
}

/// Why the ACS did not sign the browser in.
enum Refusal {
    /// A failure to audit and show.
    Failed(Failure),
    /// The client is past its login budget: the answer, audited already when due.
    OverBudget(Response),
}

impl From<Failure> for Refusal {
    fn from(failure: Failure) -> Refusal {
        Refusal::Failed(failure)
    }
}

async fn finish_login(
    state: &SharedState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    record: &mut Record,
    attempt: &mut crate::trace::AcsTrace,
) -> Result<Response, Refusal> {
    let form = read_form(state, body).await;
    let now = unix_now();
    // A RelayState that is the token this browser's relay cookie holds names the pending
    // request the response must answer, and the IdP it was sent to: only that IdP's
    // certificates can verify the answer. Anything else is an IdP-initiated response:
    // refused, unless the IdP its Issuer names accepts them.
    let (bound, taken) = match &form {
        Ok((_, relay_state)) => match relay_state
            .as_deref()
            .filter(|r| cookie(headers, state.cookies.relay_name) == Some(*r))
        {
            Some(token) => (true, state.store.take_pending(token, now).await),
            None => (false, Ok(None)),
        },
        Err(_) => (false, Ok(None)),
    };
    // A post that answers no login started here (a malformed form, no RelayState bound to the
    // browser, an unknown or used one, a store that cannot tell) is charged to the client's
    // login budget as a start, before anything else is done with it: a real login was charged
    // when it started, while such posts would otherwise cost a parse (or a whole validation,
    // where IdP-initiated logins are on) and an audit record each, unbounded.
    if !matches!(taken, Ok(Some(_))) {
        let charged = over_budget(state, peer, headers, Budgeted::Acs).await;
        if let Some(response) = charged {
            return Err(Refusal::OverBudget(response));
        }
    }
    let (saml_response, relay_state) = form?;
    let pending = taken.map_err(|_| Failure::unavailable("store_unavailable"))?;
    if state.trace.is_some() {
        attempt.saml_response = Some(saml_response.clone());
    }

    let replay = StoreReplay {
        store: state.store.as_ref(),
        now,
    };
    let (assertion, return_to, federation, max_authn_age) = match pending {
        Some(pending) => {
            record.request_id = Some(pending.request_id.clone());
            attempt.request_id = Some(pending.request_id.clone());
            let federation = state
                .pending_idp(&pending)
                .ok_or(Failure::bad_request("unknown_idp"))?;
            note_idp(record, attempt, federation);
            // The trust in force when the response arrived: a refresh meanwhile changes the
            // next one.
            let trust = federation.current();
            let assertion = trust
                .validator
                .validate(
                    &saml_response,
                    Some(&pending.request_id),
                    chrono::Utc::now(),
                    &replay,
                )
                .await
                .map_err(Failure::from)?;
            (
                assertion,
                pending.return_to,
                federation,
                pending.max_authn_age,
            )
        }
        None if bound => return Err(Failure::bad_request("relay_state_unknown").into()),
        None => match unsolicited_idp(state, &saml_response)? {
            Some((federation, trust)) => {
                record.detail = Some("unsolicited".into());
                note_idp(record, attempt, federation);
                let unsolicited = trust
                    .unsolicited
                    .as_ref()
                    .ok_or(Failure::bad_request("relay_state_not_bound"))?;
                let assertion = unsolicited
                    .validate(&saml_response, None, chrono::Utc::now(), &replay)
                    .await
                    .map_err(Failure::from)?;
                let return_to = unsolicited_target(
                    relay_state.as_deref(),
                    &federation.idp.unsolicited_relay_state,
                );
                // The gate asks again for a recent sign-in where a route wants one.
                (assertion, return_to, federation, None)
            }
            None if relay_state.is_none() => {
                return Err(Failure::bad_request("relay_state_missing").into())
            }
            None => return Err(Failure::bad_request("relay_state_not_bound").into()),
        },
    };
    record.assertion_id = Some(assertion.id.clone());
    record.authn_context = assertion
        .authn_context
        .as_deref()
        .map(|c| printable_uri(c).to_string());
    record.user = Some(assertion.name_id.value.clone());
    record.authn_instant = assertion
        .authn_instant
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if let Some(max_age) = max_authn_age {
        check_authn_recent(&assertion, max_age, federation.idp.clock_skew, now)?;
    }

    let session = new_session(state, federation, &assertion)?;
    record.user = Some(session.user.clone());
    let id = state
        .store
        .create_session(session, now)
        .await
        .map_err(|_| Failure::unavailable("store_unavailable"))?;
    record.session = Some(session_hash(id.expose()));
    record.event = Some(Event::LoginSuccess);
    if let Err(e) = state.audit.record(record.clone()).await {
        // Fail closed: a login that is not in the audit log does not happen.
        let _ = state
            .store
            .delete_session(&id, EndReason::Aborted, now)
            .await;
        record.session = None;
        return Err(Failure::audit(&e).into());
    }
    tracing::info!(user = %record.user.as_deref().unwrap_or(""), "login");
    // A session this browser had before ends: one browser, one session, and none left behind
    // for whoever saw the old cookie.
    if let Some(old) = cookie(headers, state.cookies.session_name).and_then(SessionId::parse) {
        if let Err(e) = state
            .store
            .delete_session(&old, EndReason::Relogin, now)
            .await
        {
            tracing::warn!(error = %e, "could not end the previous session of this browser");
        }
    }

    let mut response = redirect(&return_to);
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, state.cookies.session(id.expose()));
    h.append(header::SET_COOKIE, state.cookies.clear_relay());
    Ok(response)
}

/// The ACS form's `SAMLResponse` and `RelayState`, each at most once.
async fn read_form(state: &SharedState, body: Body) -> Result<(String, Option<String>), Failure> {
    // Room for the form's other fields and percent-encoding of the base64 value.
    let limit = state.config.max_saml_response_bytes * 3 / 2 + 4096;
    // A browser posts the form at once; a client that trickles it holds a connection and a
    // buffer for nothing.
    let bytes = tokio::time::timeout(ACS_BODY_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| Failure::timeout())?
        .map_err(|_| Failure::from(ValidationError::Message(MessageError::TooLarge)))?;
    let mut saml_response = None;
    let mut relay_state = None;
    for (name, value) in url::form_urlencoded::parse(&bytes) {
        let slot = match name.as_ref() {
            "SAMLResponse" => &mut saml_response,
            "RelayState" => &mut relay_state,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(Failure::bad_request("duplicate_parameter"));
        }
    }
    let saml_response = saml_response.ok_or(Failure::bad_request("saml_response_missing"))?;
    Ok((saml_response, relay_state))
}

/// Where an IdP-initiated login lands: its RelayState when that is a local path under one of
/// `allowed` (whole segments), otherwise `/`.
fn unsolicited_target(relay_state: Option<&str>, allowed: &[String]) -> String {
    let Some(target) = relay_state else {
        return "/".into();
    };
    if local_path(target) != target {
        return "/".into();
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    let under = |prefix: &String| {
        let prefix = prefix.trim_end_matches('/');
        prefix.is_empty()
            || path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if allowed.iter().any(under) {
        target.to_string()
    } else {
        "/".into()
    }
}

/// Records in the audit record and the trace which IdP an ACS attempt is judged against.
fn note_idp(
    record: &mut Record,
    attempt: &mut crate::trace::AcsTrace,
    federation: &crate::federation::Federation,
) {
    record.idp = Some(federation.entity_id.clone());
    record.idp_name = Some(federation.idp.name.clone());
    attempt.idp = Some(federation.idp.name.clone());
}

/// The IdP, and its trust in force (which has a validator for IdP-initiated responses), that an
/// unsolicited response is judged against: the one its Issuer names, among those that accept such responses. The
/// Issuer is read unverified, only to pick; that IdP's validator then checks it and the
/// signature. `None`: no IdP accepts it (the caller refuses it as unbound).
fn unsolicited_idp<'s>(
    state: &'s SharedState,
    saml_response: &str,
) -> Result<
    Option<(
        &'s crate::federation::Federation,
        std::sync::Arc<crate::federation::Trust>,
    )>,
    Failure,
> {
    if !state.idps.iter().any(|f| f.idp.allow_unsolicited) {
        return Ok(None);
    }
    let issuer =
        saml_sp::response::unverified_issuer(saml_response, state.config.max_saml_response_bytes)
            .map_err(Failure::from)?;
    Ok(issuer
        .and_then(|issuer| state.idp_by_entity_id(&issuer))
        .map(|f| (f, f.current()))
        .filter(|(_, trust)| trust.unsolicited.is_some()))
}

fn new_session(
    state: &SharedState,
    federation: &crate::federation::Federation,
    assertion: &Assertion,
) -> Result<SessionRecord, Failure> {
    let mapping = &federation.idp.attributes;
    check_groups_overage(state, federation, assertion)?;
    let user = mapping
        .user(assertion)
        .ok_or(Failure::forbidden("user_attribute_missing"))?;
    let csrf_token =
        session_store::random_token().map_err(|_| Failure::unavailable("random_unavailable"))?;
    Ok(SessionRecord {
        version: SESSION_VERSION,
        sp_entity_id: state.config.sp.entity_id.clone(),
        idp: assertion.issuer.clone(),
        idp_name: federation.idp.name.clone(),
        user,
        name_id: assertion.name_id.value.clone(),
        name_id_format: assertion.name_id.format.clone(),
        session_index: assertion.session_index.clone(),
        name_qualifier: assertion.name_id.name_qualifier.clone(),
        sp_name_qualifier: assertion.name_id.sp_name_qualifier.clone(),
        email: mapping.email(assertion),
        display_name: mapping.display_name(assertion),
        given_name: mapping.given_name(assertion),
        surname: mapping.surname(assertion),
        groups: session_store::groups(mapping.groups(assertion)),
        attributes: mapping.other_attributes(assertion),
        csrf_token,
        created_at: 0,
        authn_instant: assertion.authn_instant.map(|t| t.timestamp()),
        authn_context: assertion
            .authn_context
            .as_deref()
            .map(|c| c.trim().to_string()),
        // SessionNotOnOrAfter caps the session; the store caps it further by max_lifetime.
        expires_at: assertion
            .session_not_on_or_after
            .map(|t| t.timestamp())
            .unwrap_or(0),
        last_seen: 0,
    })
}

/// Entra replaces the groups of a user in more than 150 with a `groups.link` claim, or (as its
/// newer documentation says) leaves the groups out. Either way the login fails closed rather
/// than making a session that group rules would judge on no groups.
fn check_groups_overage(
    state: &SharedState,
    federation: &crate::federation::Federation,
    assertion: &Assertion,
) -> Result<(), Failure> {
    let link = !assertion
        .attribute(crate::attributes::CLAIM_GROUPS_LINK)
        .is_empty();
    // Only routes this IdP's sessions could pass count.
    let name = &federation.idp.name;
    let needs_groups = state.routes.load().routes().iter().any(|r| {
        !r.public
            && !r.rule.groups.is_empty()
            && (r.rule.idps.is_empty() || r.rule.idps.contains(name))
    });
    let omitted = federation.idp.preset == crate::attributes::Preset::Entra
        && needs_groups
        && !federation.idp.attributes.has_groups_attribute(assertion);
    if !(link || omitted) {
        return Ok(());
    }
    let what = if link {
        "The identity provider sent a link to the user's groups (groups.link) instead of the \
         groups: the user is in more than 150 groups."
    } else {
        "The identity provider sent no groups claim, and access here depends on groups: the \
         user is in no group, or in more than 150, which Entra leaves out."
    };
    Err(Failure {
        status: StatusCode::FORBIDDEN,
        reason: "groups_overage",
        detail: format!(
            "{what} Ask the identity provider's administrator to emit only the groups assigned \
             to this application (Entra: Token configuration, groups claim, \"Groups assigned to \
             the application\"), or to filter the groups claim."
        ),
        audit_detail: Some(if link {
            "groups.link claim instead of groups".into()
        } else {
            "no groups claim while routes need groups".into()
        }),
    })
}

/// A login started for a route with `routes[N].max_authn_age` asked the IdP to sign the user in
/// again (ForceAuthn); its assertion's AuthnInstant must be at most `max_age` seconds old at
/// `now`, by the same rule as the gate's ([`session_store::signed_in_within`], with the IdP's
/// clock skew), so that a login accepted here is never sent to sign in again at once. An IdP
/// that answered from an older sign-in, did not say when it signed the user in, or named a
/// time to come is refused (`authn_too_old`).
fn check_authn_recent(
    assertion: &Assertion,
    max_age: i64,
    skew: std::time::Duration,
    now: i64,
) -> Result<(), Failure> {
    let skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
    let instant = assertion.authn_instant.map(|t| t.timestamp());
    if session_store::signed_in_within(instant, max_age, skew, now) {
        return Ok(());
    }
    let (detail, audit_detail) = match instant.map(|at| now.saturating_sub(at)) {
        Some(age) if age >= 0 => (
            format!(
                "This application needs a sign-in from the last {max_age} s, and the identity \
                 provider answered with one from {age} s ago instead of asking you to sign in \
                 again. Start again; if this goes on, the identity provider's administrator must \
                 let it honour ForceAuthn for this application."
            ),
            format!("signed in {age} s ago; the route allows {max_age} s"),
        ),
        Some(age) => (
            "This application needs a recent sign-in, and the identity provider named a sign-in \
             time to come."
                .to_string(),
            format!("signed in {} s from now", age.saturating_neg()),
        ),
        None => (
            "This application needs a recent sign-in, and the identity provider did not say \
             when it signed you in (no AuthnInstant)."
                .to_string(),
            "no AuthnInstant".to_string(),
        ),
    };
    Err(Failure {
        status: StatusCode::FORBIDDEN,
        reason: "authn_too_old",
        detail,
        audit_detail: Some(audit_detail),
    })
}

/// The replay cache over the session store.
struct StoreReplay<'a> {
    store: &'a dyn Store,
    now: i64,
}

impl ReplayCache for StoreReplay<'_> {
    async fn first_use(
        &self,
        assertion_id: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, ReplayCacheUnavailable> {
        self.store
            .first_use_of_assertion(assertion_id, until.timestamp(), self.now)
            .await
            .map_err(|_| ReplayCacheUnavailable)
    }
}

/// Form of `POST /saml/logout`.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// `GET /saml/logout`: a page with the sign-out button (POST with the CSRF token).
pub async fn logout_page(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match crate::gate::current_session(&state, &headers, peer, "/saml/logout").await {
        Ok(Some((_, session))) => {
            let body = format!(
                "<p>Signed in as <strong>{}</strong>.</p>\
                 <form method=\"post\" action=\"/saml/logout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                escape_html(&session.user),
                escape_html(&session.csrf_token),
            );
            pages::page(StatusCode::OK, "Sign out", &body)
        }
        Ok(None) => signed_out_page(),
        Err(_) => store_unavailable_page(),
    }
}

/// `POST /saml/logout`: ends the session when the CSRF token matches.
pub async fn logout(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LogoutForm>,
) -> Response {
    let (id, session) =
        match crate::gate::current_session(&state, &headers, peer, "/saml/logout").await {
            Ok(Some(found)) => found,
            Ok(None) => return with_cleared_session(&state, signed_out_page()),
            Err(_) => return store_unavailable_page(),
        };
    let mut record = audit_record(peer, &headers, "/saml/logout");
    record.user = Some(session.user.clone());
    record.idp = Some(session.idp.clone());
    record.idp_name = Some(session.idp_name.clone()).filter(|n| !n.is_empty());
    record.session = Some(session_hash(id.expose()));
    let token_ok = form.csrf.len() == session.csrf_token.len()
        && openssl::memcmp::eq(form.csrf.as_bytes(), session.csrf_token.as_bytes());
    if !token_ok {
        let reference = reference();
        record.event = Some(Event::LogoutRefused);
        record.reason = Some("csrf_token_invalid".into());
        record.reference = Some(reference.clone());
        // Nothing changed, so the refusal stands even when it cannot be recorded.
        if let Err(e) = state.audit.record(record).await {
            tracing::error!(error = %e, "audit log write failed for a refused logout");
        }
        return pages::error(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "csrf_token_invalid",
            "The sign-out form was not sent by this site. Open the sign-out page and try again.",
            &reference,
        );
    }
    if state
        .store
        .delete_session(&id, EndReason::Logout, unix_now())
        .await
        .is_err()
    {
        return store_unavailable_page();
    }
    state.identities.forget(&id);
    record.event = Some(Event::Logout);
    // The IdP is told next (Single Logout), when it can be; the local sign-out stands anyway.
    let to_idp = crate::slo::start(&state, &session).await;
    if to_idp.is_some() {
        record.detail = Some("logout request sent to the IdP".into());
    }
    if let Err(e) = state.audit.record(record).await {
        tracing::error!(error = %e, "audit log write failed for logout");
    }
    with_cleared_session(
        &state,
        to_idp.unwrap_or_else(|| redirect("/saml/logged-out")),
    )
}

/// `GET /saml/logged-out`: the signed-out page.
pub async fn logged_out() -> Response {
    signed_out_page()
}

/// `GET /saml/metadata`: this SP's metadata for the IdP admin.
pub async fn metadata(State(state): State<SharedState>) -> Response {
    let mut response = state.sp_metadata_xml.clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    response
}

pub(crate) fn signed_out_page() -> Response {
    pages::page(
        StatusCode::OK,
        "Signed out",
        "<p>You are signed out of this site.</p><p><a href=\"/\">Sign in again</a></p>",
    )
}

/// The answer when the session store cannot tell whether a session is live (503).
pub(crate) fn store_unavailable_page() -> Response {
    pages::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "store_unavailable",
        "The session store cannot be reached. Try again in a moment.",
        &reference(),
    )
}

pub(crate) fn with_cleared_session(state: &SharedState, mut response: Response) -> Response {
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookies.clear_session());
    response
}

pub(crate) fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(_) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/"))],
        )
            .into_response(),
    }
}

/// Why a login step failed: the status, the stable reason code and a sentence for the user.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    reason: &'static str,
    detail: String,
    /// Extra audit detail (the IdP's status code, or the sign-in method that came).
    audit_detail: Option<String>,
}

impl Failure {
    fn bad_request(reason: &'static str) -> Failure {
        let detail = match reason {
            "relay_state_unknown" => {
                "This sign-in attempt has expired or was already used. Start again."
            }
            "relay_state_not_bound" | "relay_state_missing" => {
                "This sign-in response does not belong to a sign-in started in this browser."
            }
            "unknown_idp" => "No identity provider of that name is configured here.",
            _ => "The sign-in request is malformed.",
        };
        Failure {
            status: StatusCode::BAD_REQUEST,
            reason,
            detail: detail.to_string(),
            audit_detail: None,
        }
    }

    fn timeout() -> Failure {
        Failure {
            status: StatusCode::REQUEST_TIMEOUT,
            reason: "request_timeout",
            detail: "The sign-in response arrived too slowly. Start again.".to_string(),
            audit_detail: None,
        }
    }

    fn forbidden(reason: &'static str) -> Failure {
        Failure {
            status: StatusCode::FORBIDDEN,
            reason,
            detail: "The identity provider did not send the attribute that names the user."
                .to_string(),
            audit_detail: None,
        }
    }

    fn unavailable(reason: &'static str) -> Failure {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason,
            detail: "Sign-in is temporarily unavailable. Try again in a moment.".to_string(),
            audit_detail: None,
        }
    }

    fn audit(error: &crate::audit::AuditError) -> Failure {
        tracing::error!(error = %error, "audit log write failed; refusing the login");
        Failure::unavailable("audit_unavailable")
    }

    /// Audits the failure (best effort: the answer is already a refusal) and renders the page.
    async fn respond(self, state: &SharedState, mut record: Record) -> Response {
        // The caller may have drawn the reference already (for the login trace).
        let reference = record.reference.clone().unwrap_or_else(reference);
        record.reason = Some(self.reason.to_string());
        record.reference = Some(reference.clone());
        // An IdP-initiated attempt stays marked as such, whatever else the failure says.
        record.detail = match (record.detail.take(), self.audit_detail.clone()) {
            (Some(mark), Some(detail)) => Some(format!("{mark}: {detail}")),
            (mark, detail) => detail.or(mark),
        };
        if self.reason != "audit_unavailable" {
            if let Err(e) = state.audit.record(record).await {
                tracing::error!(error = %e, reason = self.reason, "audit log write failed");
            }
        }
        tracing::warn!(reason = self.reason, reference = %reference, "login refused");
        pages::error(
            self.status,
            "Sign-in failed",
            self.reason,
            &self.detail,
            &reference,
        )
    }

    async fn into_response(
        self,
        state: &SharedState,
        peer: SocketAddr,
        headers: &HeaderMap,
        path: &str,
    ) -> Response {
        let mut record = audit_record(peer, headers, path);
        record.event = Some(Event::LoginFailure);
        self.respond(state, record).await
    }
}

impl From<ValidationError> for Failure {
    fn from(error: ValidationError) -> Failure {
        use ValidationError as V;
        let status = match &error {
            V::Message(MessageError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            V::Message(_) | V::Structure(_) => StatusCode::BAD_REQUEST,
            V::ReplayCacheUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        };
        // The status is unsigned text from the message: only the standard SAML status names
        // are shown or audited, never free text an attacker chose.
        let idp_status = match &error {
            V::Status(s) => {
                let names: Vec<&str> = std::iter::once(s.code.as_str())
                    .chain(s.sub_code.as_deref())
                    .filter_map(standard_status_name)
                    .collect();
                Some(if names.is_empty() {
                    "non-standard status".to_string()
                } else {
                    names.join(" / ")
                })
            }
            _ => None,
        };
        let hint = match &error {
            V::Status(s) => s
                .sub_code
                .as_deref()
                .and_then(standard_status_name)
                .and_then(status_hint)
                .or_else(|| standard_status_name(&s.code).and_then(status_hint)),
            _ => None,
        };
        let detail = match (&idp_status, hint) {
            (Some(names), Some(hint)) => format!(
                "The identity provider did not sign you in (status {names}). Likely cause: {hint}"
            ),
            (Some(names), None) => {
                format!("The identity provider did not sign you in (status {names}).")
            }
            (None, _) => format!("The identity provider's response was refused: {error}."),
        };
        // The method is signed by the IdP; the audit record names it so that an admin sees
        // what came instead of what was asked for.
        let audit_detail = match &error {
            V::AuthnContext { found } => Some(format!(
                "authn context {}",
                found.as_deref().map_or("none", printable_uri)
            )),
            _ => idp_status,
        };
        Failure {
            status,
            reason: error.code(),
            detail,
            audit_detail,
        }
    }
}

/// `value` when it looks like a URI (printable ASCII, at most 256 bytes), for the audit log;
/// otherwise a placeholder.
pub(crate) fn printable_uri(value: &str) -> &str {
    if value.len() <= 256 && value.bytes().all(|b| b.is_ascii_graphic()) {
        value
    } else {
        "not a URI"
    }
}

/// What a standard SAML status most often means, and what to change: for the user and for the
/// admin the page sends them to. Vendors' own codes (AADSTS..., MSIS...) travel only in the
/// status message, which is never shown, so the hints name them where they map.
fn status_hint(name: &str) -> Option<&'static str> {
    Some(match name {
        "AuthnFailed" => {
            "the sign-in at the identity provider did not succeed (a wrong password, \
            or a second factor not completed). Try again."
        }
        "RequestDenied" => {
            "the identity provider does not let this user into this application; \
            its administrator must assign the user (or one of their groups) to it."
        }
        "InvalidNameIDPolicy" => {
            "the identity provider cannot send the NameID format this gateway \
            asks for (AD FS: MSIS7070); remove idp.name_id_format, or set the IdP's NameID for \
            this application."
        }
        "NoAuthnContext" => {
            "the identity provider cannot sign in the way the request asks \
            (Entra ID: AADSTS75011); remove the requested authentication context."
        }
        "UnknownPrincipal" => "the identity provider does not know this user.",
        "NoPassive" => {
            "the identity provider needed to ask the user something and was not \
            allowed to. Try again."
        }
        "RequestUnsupported" | "VersionMismatch" | "UnsupportedBinding" => {
            "the identity \
            provider does not accept this kind of request; check its settings for this \
            application."
        }
        "Requester" => {
            "the identity provider found the request wrong: check that it knows this \
            gateway's Entity ID and ACS URL exactly as /saml/metadata publishes them (Entra ID: \
            AADSTS700016, AADSTS50011)."
        }
        "Responder" => {
            "the identity provider failed on its side; its administrator finds the \
            reason in its logs for this application."
        }
        _ => return None,
    })
}

/// The short name of a standard SAML 2.0 status code URI (`Responder`, `AuthnFailed`, ...).
fn standard_status_name(uri: &str) -> Option<&str> {
    let name = uri.strip_prefix("urn:oasis:names:tc:SAML:2.0:status:")?;
    (!name.is_empty() && name.len() <= 40 && name.bytes().all(|b| b.is_ascii_alphabetic()))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_for_a_recent_sign_in_needs_a_recent_authn_instant() {
        let now = 1_900_000_000;
        let with = |instant: Option<i64>| Assertion {
            id: "_a".into(),
            issuer: "https://idp.example/".into(),
            name_id: saml_sp::response::NameId {
                value: "alice".into(),
                format: None,
                name_qualifier: None,
                sp_name_qualifier: None,
            },
            session_index: None,
            session_not_on_or_after: None,
            authn_context: None,
            authn_instant: instant.and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            not_on_or_after: chrono::Utc::now(),
            in_response_to: None,
            attributes: Vec::new(),
        };
        let skew = std::time::Duration::from_secs(60);
        let check = |instant| check_authn_recent(&with(instant), 300, skew, now);
        assert!(check(Some(now)).is_ok());
        assert!(check(Some(now - 300)).is_ok());
        // The IdP's clock may be behind by the skew.
        assert!(check(Some(now - 360)).is_ok());
        let old = check(Some(now - 361)).unwrap_err();
        assert_eq!(
            (old.status, old.reason),
            (StatusCode::FORBIDDEN, "authn_too_old")
        );
        assert_eq!(
            old.audit_detail.as_deref(),
            Some("signed in 361 s ago; the route allows 300 s")
        );
        let missing = check(None).unwrap_err();
        assert_eq!(missing.reason, "authn_too_old");
        assert_eq!(missing.audit_detail.as_deref(), Some("no AuthnInstant"));
        // A time to come is trusted only within the skew.
        assert!(check(Some(now + 60)).is_ok());
        let ahead = check(Some(now + 61)).unwrap_err();
        assert_eq!(
            ahead.audit_detail.as_deref(),
            Some("signed in 61 s from now")
        );
    }

    #[test]
    fn unsolicited_logins_land_only_under_allowed_paths() {
        let allowed = ["/sales".to_string(), "/ops/".to_string()];
        for (relay, lands) in [
            (None, "/"),
            (Some("/sales"), "/sales"),
            (Some("/sales/page?x=1"), "/sales/page?x=1"),
            (Some("/ops"), "/ops"),
            (Some("/ops/a"), "/ops/a"),
            (Some("/salesforce"), "/"),
            (Some("/other"), "/"),
            (Some("https://evil.example/sales"), "/"),
            (Some("//evil.example/sales"), "/"),
            (Some("/sales/../admin"), "/"),
            (Some("/sales\\..\\admin"), "/"),
            (Some("token-from-the-idp"), "/"),
        ] {
            assert_eq!(unsolicited_target(relay, &allowed), lands, "{relay:?}");
        }
        assert_eq!(unsolicited_target(Some("/sales"), &[]), "/");
        assert_eq!(unsolicited_target(Some("/x"), &["/".to_string()]), "/x");
    }

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

    #[test]
    fn known_statuses_name_a_likely_fix() {
        let nameid = status_hint("InvalidNameIDPolicy").unwrap();
        assert!(nameid.contains("idp.name_id_format") && nameid.contains("MSIS7070"));
        assert!(status_hint("Requester").unwrap().contains("/saml/metadata"));
        assert!(status_hint("RequestDenied").unwrap().contains("assign"));
        assert_eq!(status_hint("Success"), None);
        assert_eq!(status_hint("SomethingElse"), None);
    }

    #[test]
    fn only_standard_status_names_are_shown() {
        assert_eq!(
            standard_status_name("urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"),
            Some("AuthnFailed")
        );
        assert_eq!(standard_status_name("<script>"), None);
        assert_eq!(
            standard_status_name("urn:oasis:names:tc:SAML:2.0:status:<b>"),
            None
        );
    }

    #[test]
    fn an_authn_context_mismatch_is_a_403_that_audits_the_method_that_came() {
        let failure = Failure::from(ValidationError::AuthnContext {
            found: Some("urn:oasis:names:tc:SAML:2.0:ac:classes:Password".into()),
        });
        assert_eq!(failure.status, StatusCode::FORBIDDEN);
        assert_eq!(failure.reason, "authn_context_mismatch");
        assert_eq!(
            failure.audit_detail.as_deref(),
            Some("authn context urn:oasis:names:tc:SAML:2.0:ac:classes:Password")
        );
        assert!(!failure.detail.contains("classes:Password"));
        let none = Failure::from(ValidationError::AuthnContext { found: None });
        assert_eq!(none.audit_detail.as_deref(), Some("authn context none"));
        let odd = Failure::from(ValidationError::AuthnContext {
            found: Some("a b\n<c>".into()),
        });
        assert_eq!(odd.audit_detail.as_deref(), Some("authn context not a URI"));
        assert_eq!(printable_uri(&"u".repeat(257)), "not a URI");
    }
}
