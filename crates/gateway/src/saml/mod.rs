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
//!
//! One file per step: `start` (2), `acs` (3), `logout` (4); `failure` is how a refused step is
//! audited and shown. Single Logout is [`crate::slo`].

mod acs;
mod failure;
mod logout;
mod start;

pub use acs::acs;
pub(crate) use failure::printable_uri;
use failure::Failure;
pub use logout::{logged_out, logout, logout_page, LogoutForm};
pub use start::{login, LoginQuery};
pub(crate) use start::{over_budget, send_to_idp, Message};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::pages;
use crate::state::{reference, SharedState};

/// `GET /saml/metadata`: this SP's metadata for the IdP admin.
pub async fn metadata(State(state): State<SharedState>) -> Response {
    let mut response = state.sp_metadata_xml.clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    response
}

/// The signed-out page.
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

/// `response` with the session cookie cleared.
pub(crate) fn with_cleared_session(state: &SharedState, mut response: Response) -> Response {
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookies.clear_session());
    response
}

/// `303 See Other` back into the site after a login or a sign-out: to `target` when it is a safe
/// local path ([`crate::redirect::local_path`]), otherwise to `/`. Targets come back from the
/// store, which whoever can write to a shared Redis could have changed (invariant 12).
pub(crate) fn redirect_within(target: &str) -> Response {
    redirect(&crate::redirect::local_path(target))
}

/// `303 See Other` to `location` (to `/` when it is no valid header value).
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
