//! `/saml/acs`: the IdP's answer (step 3 of the flow in [`crate::saml`]), checked against the
//! pending request it names, or as an IdP-initiated login where the IdP accepts them; a new
//! session when it passes.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use saml_sp::error::{MessageError, ValidationError};
use saml_sp::response::{ReplayCache, ReplayCacheUnavailable};
use saml_sp::Assertion;
use session_store::{EndReason, SessionId, SessionRecord, Store, SESSION_VERSION};

use crate::audit::{Event, Record};
use crate::cookies::cookie;
use crate::login_limit::Budgeted;
use crate::redirect::local_path;
use crate::state::{audit_record, reference, session_hash, unix_now, SharedState};

use super::failure::uri_or_none;
use super::{over_budget, printable_uri, redirect_within, Failure};

/// Longest time the ACS waits for the whole form body.
const ACS_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

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

    let mut response = redirect_within(&return_to);
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
        // As the audit record has it: what is no URI is not handed to the apps either.
        authn_context: assertion
            .authn_context
            .as_deref()
            .and_then(uri_or_none)
            .map(str::to_string),
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
}
