//! Why a login step failed ([`Failure`]): the status, the stable reason code, the sentence
//! the page shows, and what the audit record adds; the IdP's status codes read for a hint.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use saml_sp::error::{MessageError, ValidationError};

use crate::audit::{Event, Record};
use crate::pages;
use crate::state::{audit_record, reference, SharedState};

/// Why a login step failed: the status, the stable reason code and a sentence for the user.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The HTTP status of the page.
    pub(crate) status: StatusCode,
    /// The stable reason code (audit `reason`, shown on the page).
    pub(crate) reason: &'static str,
    /// The sentence the page shows.
    pub(crate) detail: String,
    /// Extra audit detail (the IdP's status code, or the sign-in method that came).
    pub(crate) audit_detail: Option<String>,
}

impl Failure {
    /// A malformed or unbound request (400), with a sentence for its reason.
    pub(crate) fn bad_request(reason: &'static str) -> Failure {
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

    /// A form that arrived too slowly (408).
    pub(crate) fn timeout() -> Failure {
        Failure {
            status: StatusCode::REQUEST_TIMEOUT,
            reason: "request_timeout",
            detail: "The sign-in response arrived too slowly. Start again.".to_string(),
            audit_detail: None,
        }
    }

    /// A valid answer that names no user the gateway can use (403).
    pub(crate) fn forbidden(reason: &'static str) -> Failure {
        Failure {
            status: StatusCode::FORBIDDEN,
            reason,
            detail: "The identity provider did not send the attribute that names the user."
                .to_string(),
            audit_detail: None,
        }
    }

    /// Something the login needs cannot be reached (503).
    pub(crate) fn unavailable(reason: &'static str) -> Failure {
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason,
            detail: "Sign-in is temporarily unavailable. Try again in a moment.".to_string(),
            audit_detail: None,
        }
    }

    /// The audit log cannot be written: the login fails closed (503).
    pub(crate) fn audit(error: &crate::audit::AuditError) -> Failure {
        tracing::error!(error = %error, "audit log write failed; refusing the login");
        Failure::unavailable("audit_unavailable")
    }

    /// Audits the failure (best effort: the answer is already a refusal) and renders the page.
    pub(crate) async fn respond(self, state: &SharedState, mut record: Record) -> Response {
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

    /// Audits the failure as a `login_failure` of `path` from `peer` and renders the page.
    pub(crate) async fn into_response(
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

/// `value` when it looks like a URI (printable ASCII, 1 to 256 bytes), for the audit log;
/// otherwise a placeholder.
pub(crate) fn printable_uri(value: &str) -> &str {
    uri_or_none(value).unwrap_or("not a URI")
}

/// `value` when it looks like a URI (printable ASCII, 1 to 256 bytes).
pub(crate) fn uri_or_none(value: &str) -> Option<&str> {
    let printable = value.bytes().all(|b| b.is_ascii_graphic());
    (printable && (1..=256).contains(&value.len())).then_some(value)
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
    fn a_uri_is_printable_ascii_of_1_to_256_bytes() {
        let mfa = "http://schemas.microsoft.com/claims/multipleauthn";
        assert_eq!(uri_or_none(mfa), Some(mfa));
        assert_eq!(uri_or_none(&"u".repeat(256)).map(str::len), Some(256));
        for odd in ["", "a b", "a\r\nX-Evil: 1", "zoë", &"u".repeat(257)] {
            assert_eq!(uri_or_none(odd), None, "{odd:?}");
        }
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
