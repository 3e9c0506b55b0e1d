//! `/saml/logout` and `/saml/logged-out`: the local sign-out (step 4 of the flow in
//! [`crate::saml`]), with the CSRF token of the session; Single Logout continues in
//! [`crate::slo`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use session_store::EndReason;

use crate::audit::Event;
use crate::pages::{self, escape_html};
use crate::state::{audit_record, reference, session_hash, unix_now, SharedState};

use super::{redirect, signed_out_page, store_unavailable_page, with_cleared_session};

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
