//! Single Logout in both directions, at `/saml/slo` (HTTP-Redirect and HTTP-POST).
//!
//! **SP-initiated.** `POST /saml/logout` ends the local session first, then, when the IdP
//! publishes a SingleLogoutService and `idp.single_logout` is on, [`start`] sends the browser
//! to the IdP with a signed LogoutRequest (HTTP-Redirect) that carries the NameID exactly as the
//! IdP sent it (value, Format, NameQualifier, SPNameQualifier) and the login's SessionIndex. The
//! request is pending under a random RelayState bound to this browser by the relay cookie, as a
//! login is. The IdP's LogoutResponse comes back to `/saml/slo`: its signature, Issuer,
//! Destination, age and InResponseTo are checked and the user lands on the signed-out page. A
//! response that fails a check is audited (`slo` with the reason) and the page says so: the user
//! is signed out here either way, but perhaps not at the IdP.
//!
//! **IdP-initiated.** A signed LogoutRequest at `/saml/slo` (at any time: Entra sends them when
//! the user signs out of another application) ends every live session that IdP made for that
//! NameID, limited to the SessionIndexes it names, on every replica at once (one store
//! operation). Open WebSockets of those sessions close within seconds (the session watcher sees
//! the `slo` end marker). Each ended session is audited as `slo`, and the IdP gets a signed
//! LogoutResponse (Success, or Responder when the store could not be reached) at its
//! SingleLogoutService. A request that fails a check is audited and refused with a 400 page;
//! no response is sent, since nothing in it can be trusted to say where.
//!
//! Every refused message is charged to the sender's login budget ([`crate::login_limit`])
//! before it is audited: past the budget it gets `429`, the first refusal of a run is written,
//! and the later ones only in summary records ([`crate::refusals`]), so a flood of junk cannot
//! fill the audit log. A message that passes its checks is never
//! charged: a signed LogoutRequest must end its sessions whoever shares the sender's address.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use saml_sp::authn_request::new_message_id;
use saml_sp::logout::{
    read_logout_request, read_logout_response, Incoming, LogoutChecks, LogoutRequest,
    LogoutResponse, STATUS_RESPONDER, STATUS_SUCCESS,
};
use saml_sp::response::NameId;
use saml_sp::signature::AlgorithmPolicy;
use saml_sp::ValidationError;
use session_store::{EndReason, PendingRequest, SessionRecord};

use crate::audit::{Event, Record};
use crate::cookies::{cookie, RELAY_TTL_SECS};
use crate::pages;
use crate::state::{audit_record, reference, unix_now, SharedState};

/// How old an IdP's logout message may be (before clock skew).
const MAX_MESSAGE_AGE: std::time::Duration = std::time::Duration::from_secs(300);
/// The longest POST body read at `/saml/slo`.
const MAX_FORM_BYTES: usize = 512 * 1024;
/// How long a POST body may take to arrive.
const FORM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// After the local session `session` has ended: the redirect that takes the browser to the
/// IdP with a signed LogoutRequest, or `None` when the IdP has no SLO (or it is switched off)
/// or the request cannot be made (the local sign-out stands; the reason is logged).
pub async fn start(state: &SharedState, session: &SessionRecord) -> Option<Response> {
    let federation = state.session_idp(session)?;
    let trust = federation.current();
    let endpoint = trust.metadata.slo.as_ref()?;
    let destination = &endpoint.location;
    if !federation.idp.single_logout {
        return None;
    }
    let (Ok(request_id), Ok(token)) = (new_message_id(), session_store::random_token()) else {
        tracing::error!("no random IDs: the IdP is not told of this sign-out");
        return None;
    };
    let now = unix_now();
    let pending = PendingRequest {
        request_id: request_id.clone(),
        return_to: "/saml/logged-out".into(),
        created_at: now,
        max_authn_age: None,
        idp: federation.idp.name.clone(),
    };
    if let Err(e) = state
        .store
        .put_pending(&token, pending, now + RELAY_TTL_SECS)
        .await
    {
        tracing::error!(error = %e, "the store is unavailable: the IdP is not told of this sign-out");
        return None;
    }
    let request = LogoutRequest {
        id: request_id,
        issue_instant: chrono::Utc::now(),
        destination: destination.clone(),
        issuer: state.config.sp.entity_id.clone(),
        name_id: NameId {
            value: session.name_id.clone(),
            format: session.name_id_format.clone(),
            name_qualifier: session.name_qualifier.clone(),
            sp_name_qualifier: session.sp_name_qualifier.clone(),
        },
        session_index: session.session_index.clone(),
    };
    let message = crate::saml::Message {
        param: "SAMLRequest",
        xml: &request.to_xml(),
        id: &request.id,
        relay_state: Some(&token),
    };
    let mut response = match crate::saml::send_to_idp(endpoint, false, message, Some(&state.sp_key))
    {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "signing the LogoutRequest failed");
            return None;
        }
    };
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookies.relay(&token));
    Some(response)
}

/// `GET /saml/slo`: an IdP's LogoutRequest or LogoutResponse over HTTP-Redirect.
pub async fn redirect_binding(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let Some(fields) = message_fields(query.as_bytes()) else {
        return refused(&state, peer, &headers, "duplicate_parameter", None, None).await;
    };
    let incoming = Incoming::Redirect(&query);
    dispatch(&state, peer, &headers, &fields, true, incoming).await
}

/// The fields of a logout message's query or form body.
struct MessageFields {
    /// `SAMLRequest` or `SAMLResponse`, whichever comes first.
    kind: Option<String>,
    /// Its value.
    message: Option<String>,
    /// `RelayState`.
    relay_state: Option<String>,
}

/// Reads a query or form body; `None` when a parameter appears twice (by its decoded name,
/// as the signature check also refuses).
fn message_fields(form: &[u8]) -> Option<MessageFields> {
    let mut fields = MessageFields {
        kind: None,
        message: None,
        relay_state: None,
    };
    let mut seen = std::collections::HashSet::new();
    for (name, value) in url::form_urlencoded::parse(form) {
        if !seen.insert(name.clone()) {
            return None;
        }
        match name.as_ref() {
            "SAMLRequest" | "SAMLResponse" if fields.kind.is_none() => {
                fields.kind = Some(name.into_owned());
                fields.message = Some(value.into_owned());
            }
            "RelayState" => fields.relay_state = Some(value.into_owned()),
            _ => {}
        }
    }
    Some(fields)
}

/// `POST /saml/slo`: an IdP's LogoutRequest or LogoutResponse over HTTP-POST.
pub async fn post_binding(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let read = tokio::time::timeout(FORM_TIMEOUT, axum::body::to_bytes(body, MAX_FORM_BYTES));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return refused(&state, peer, &headers, "message_too_large", None, None).await
        }
        Err(_) => return refused(&state, peer, &headers, "request_timeout", None, None).await,
    };
    let Some(fields) = message_fields(&bytes) else {
        return refused(&state, peer, &headers, "duplicate_parameter", None, None).await;
    };
    let incoming = Incoming::Post {
        message: fields.message.as_deref().unwrap_or_default(),
        relay_state: fields.relay_state.as_deref(),
    };
    dispatch(&state, peer, &headers, &fields, false, incoming).await
}

async fn dispatch(
    state: &SharedState,
    peer: SocketAddr,
    headers: &HeaderMap,
    fields: &MessageFields,
    redirect: bool,
    incoming: Incoming<'_>,
) -> Response {
    if !state.idps.iter().any(|f| f.idp.single_logout) {
        // Switched off: no logout message is taken, in either direction.
        return refused(state, peer, headers, "single_logout_off", None, None).await;
    }
    match fields.kind.as_deref() {
        Some("SAMLRequest") => {
            // The IdP is the one the message's Issuer names; only its keys can verify it.
            let value = fields.message.as_deref().unwrap_or_default();
            let max = state.config.max_saml_response_bytes;
            let issuer = match saml_sp::logout::unverified_issuer(value, redirect, max) {
                Ok(issuer) => issuer,
                Err(e) => return refused(state, peer, headers, e.code(), Some(&e), None).await,
            };
            let Some(federation) = issuer.and_then(|i| logout_idp(state, &i)) else {
                return refused(state, peer, headers, "issuer_mismatch", None, None).await;
            };
            if !federation.idp.single_logout {
                let f = Some(federation);
                return refused(state, peer, headers, "single_logout_off", None, f).await;
            }
            idp_request(state, federation, peer, headers, incoming).await
        }
        Some(_) => {
            let relay_state = fields.relay_state.clone();
            idp_response(state, peer, headers, incoming, relay_state).await
        }
        None => refused(state, peer, headers, "saml_message_missing", None, None).await,
    }
}

/// The IdP whose entity ID (or, for Entra, whose logout Issuer) is `issuer`.
fn logout_idp<'s>(
    state: &'s SharedState,
    issuer: &str,
) -> Option<&'s crate::federation::Federation> {
    state.idp_by_entity_id(issuer).or_else(|| {
        state
            .idps
            .iter()
            .find(|f| alternate_issuer(f, &f.current()).as_deref() == Some(issuer))
    })
}

fn checks<'a>(
    state: &'a SharedState,
    federation: &'a crate::federation::Federation,
    trust: &'a crate::federation::Trust,
    slo_url: &'a str,
    alternate_issuer: Option<&'a str>,
) -> LogoutChecks<'a> {
    LogoutChecks {
        idp_entity_id: &trust.metadata.entity_id,
        alternate_issuer,
        certificates: &trust.metadata.signing_certificates,
        slo_url,
        algorithms: AlgorithmPolicy {
            allow_sha1: federation.idp.allow_sha1,
        },
        clock_skew: federation.idp.clock_skew,
        max_issue_age: MAX_MESSAGE_AGE,
        max_message_bytes: state.config.max_saml_response_bytes,
        now: chrono::Utc::now(),
    }
}

/// An IdP's LogoutRequest: end the sessions, answer with a LogoutResponse.
async fn idp_request(
    state: &SharedState,
    federation: &crate::federation::Federation,
    peer: SocketAddr,
    headers: &HeaderMap,
    incoming: Incoming<'_>,
) -> Response {
    let trust = federation.current();
    let slo_url = state.config.slo_url();
    let alternate = alternate_issuer(federation, &trust);
    let checks = checks(state, federation, &trust, &slo_url, alternate.as_deref());
    let f = Some(federation);
    let request = match read_logout_request(incoming, &checks) {
        Ok(request) => request,
        Err(e) => return refused(state, peer, headers, e.code(), Some(&e), f).await,
    };
    let now = unix_now();
    // Each request is taken once: a captured one (the query sits in browser histories and
    // access logs) cannot end the sessions of a later login.
    let key = format!("logout-request:{}", request.id);
    match state
        .store
        .first_use_of_assertion(&key, request.fresh_until.timestamp(), now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return refused(state, peer, headers, "logout_request_replayed", None, f).await
        }
        Err(_) => return refused(state, peer, headers, "replay_cache_unavailable", None, f).await,
    }
    let ended = state
        .store
        .end_sessions_of_subject(
            &trust.metadata.entity_id,
            &request.name_id.value,
            &request.session_indexes,
            EndReason::Slo,
            now,
        )
        .await;
    let mut base = audit_record(peer, headers, "/saml/slo");
    base.event = Some(Event::Slo);
    base.idp = Some(trust.metadata.entity_id.clone());
    base.idp_name = Some(federation.idp.name.clone());
    base.user = Some(request.name_id.value.clone());
    base.request_id = Some(request.id.clone());
    // This browser's session cookie is cleared only when its session is among those ended:
    // a request sent through someone else's browser leaves that browser's cookie alone.
    let mine = cookie(headers, state.cookies.session_name)
        .and_then(session_store::SessionId::parse)
        .map(|id| crate::state::session_hash(id.expose()));
    let ended_here = match (&ended, &mine) {
        (Ok(sessions), Some(mine)) => sessions.iter().any(|s| s.hash.get(..24) == Some(mine)),
        _ => false,
    };
    let finish = |response: Response| {
        if ended_here {
            clear_session(state, response)
        } else {
            response
        }
    };
    let status = match &ended {
        Ok(sessions) => {
            for session in sessions {
                let mut record = base.clone();
                record.reason = Some("idp_logout_request".into());
                record.user = Some(session.record.user.clone());
                record.session = Some(session.hash.chars().take(24).collect());
                audit(state, record).await;
            }
            if sessions.is_empty() {
                let mut record = base.clone();
                record.reason = Some("idp_logout_request".into());
                record.detail = Some("no live session".into());
                audit(state, record).await;
            }
            tracing::info!(sessions = sessions.len(), "IdP-initiated logout");
            STATUS_SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "IdP-initiated logout: the store is unavailable");
            let mut record = base.clone();
            record.reason = Some("store_unavailable".into());
            audit(state, record).await;
            STATUS_RESPONDER
        }
    };
    let Some(endpoint) = trust.metadata.slo.clone() else {
        return finish(signed_out(StatusCode::OK));
    };
    let destination = endpoint.response_location.clone();
    let Ok(id) = new_message_id() else {
        return finish(signed_out(StatusCode::OK));
    };
    let response = LogoutResponse {
        id,
        issue_instant: chrono::Utc::now(),
        destination: destination.clone(),
        issuer: state.config.sp.entity_id.clone(),
        in_response_to: request.id,
        status,
    };
    let message = crate::saml::Message {
        param: "SAMLResponse",
        xml: &response.to_xml(),
        id: &response.id,
        relay_state: request.relay_state.as_deref(),
    };
    match crate::saml::send_to_idp(&endpoint, true, message, Some(&state.sp_key)) {
        Ok(answer) => finish(answer),
        Err(e) => {
            tracing::error!(error = %e, "signing the LogoutResponse failed");
            finish(signed_out(StatusCode::OK))
        }
    }
}

/// The IdP's answer to our LogoutRequest.
async fn idp_response(
    state: &SharedState,
    peer: SocketAddr,
    headers: &HeaderMap,
    incoming: Incoming<'_>,
    relay_state: Option<String>,
) -> Response {
    let bound = relay_state
        .as_deref()
        .filter(|r| cookie(headers, state.cookies.relay_name) == Some(*r));
    let Some(token) = bound else {
        return refused(state, peer, headers, "relay_state_not_bound", None, None).await;
    };
    let pending = match state.store.take_pending(token, unix_now()).await {
        Ok(Some(pending)) => pending,
        Ok(None) => return refused(state, peer, headers, "relay_state_unknown", None, None).await,
        Err(_) => return refused(state, peer, headers, "store_unavailable", None, None).await,
    };
    // The answer comes from the IdP the request went to, and only its keys verify it.
    let Some(federation) = state.pending_idp(&pending) else {
        return refused(state, peer, headers, "unknown_idp", None, None).await;
    };
    let trust = federation.current();
    let slo_url = state.config.slo_url();
    let alternate = alternate_issuer(federation, &trust);
    let verdict = read_logout_response(
        incoming,
        &checks(state, federation, &trust, &slo_url, alternate.as_deref()),
        &pending.request_id,
    );
    let mut record = audit_record(peer, headers, "/saml/slo");
    record.event = Some(Event::Slo);
    record.idp = Some(trust.metadata.entity_id.clone());
    record.idp_name = Some(federation.idp.name.clone());
    record.request_id = Some(pending.request_id.clone());
    match verdict {
        Ok(_) => {
            record.reason = Some("idp_logout_response".into());
            audit(state, record).await;
            let mut response = crate::saml::redirect_within(&pending.return_to);
            response
                .headers_mut()
                .append(header::SET_COOKIE, state.cookies.clear_relay());
            response
        }
        Err(e) => refused(state, peer, headers, e.code(), Some(&e), Some(federation)).await,
    }
}

/// The other Issuer the IdP's logout messages may carry (Entra only).
fn alternate_issuer(
    federation: &crate::federation::Federation,
    trust: &crate::federation::Trust,
) -> Option<String> {
    (federation.idp.preset == crate::attributes::Preset::Entra)
        .then(|| saml_sp::logout::entra_logout_issuer(&trust.metadata.entity_id))
        .flatten()
}

async fn audit(state: &SharedState, record: Record) {
    if let Err(e) = state.audit.record(record).await {
        tracing::error!(error = %e, "audit log write failed for a Single Logout message");
    }
}

/// A refused logout message: charged to the sender's login budget (past it, `429`, audited
/// once per run), else audited (naming the IdP it was judged against, when one was picked) and
/// answered with a 400 page naming the reason.
async fn refused(
    state: &SharedState,
    peer: SocketAddr,
    headers: &HeaderMap,
    reason: &'static str,
    error: Option<&ValidationError>,
    federation: Option<&crate::federation::Federation>,
) -> Response {
    if let Some(over) =
        crate::saml::over_budget(state, peer, headers, crate::login_limit::Budgeted::Slo).await
    {
        return over;
    }
    let reference = reference();
    let mut record = audit_record(peer, headers, "/saml/slo");
    record.event = Some(Event::Slo);
    record.idp = federation.map(|f| f.entity_id.clone());
    record.idp_name = federation.map(|f| f.idp.name.clone());
    record.reason = Some(reason.into());
    record.reference = Some(reference.clone());
    record.detail = error.map(|e| e.to_string());
    audit(state, record).await;
    tracing::warn!(reason, reference = %reference, "Single Logout message refused");
    // The page names the reason code only: the validator's sentences are written for logins.
    let detail = "The sign-out message could not be accepted (the reason code below is in the \
                  audit log with this reference). If you were signing out, you are signed out \
                  of this site, but perhaps not at your identity provider.";
    let mut response = pages::error(
        StatusCode::BAD_REQUEST,
        "Sign-out message refused",
        reason,
        detail,
        &reference,
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookies.clear_relay());
    response
}

fn signed_out(status: StatusCode) -> Response {
    pages::page(status, "Signed out", "<p>You are signed out.</p>")
}

fn clear_session(state: &SharedState, mut response: Response) -> Response {
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookies.clear_session());
    response
}
