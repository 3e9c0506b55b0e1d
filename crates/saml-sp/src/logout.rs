//! Single Logout: the LogoutRequest this SP sends, the LogoutResponse it answers with, and the
//! checks of the LogoutRequests and LogoutResponses an IdP sends.
//!
//! An IdP's message arrives over the HTTP-Redirect binding (the signature is over the query
//! string, [`verify_redirect_query`]) or the HTTP-POST binding (an enveloped XML signature on the
//! message's root, checked like a Response's). Either way a signature by a trusted IdP
//! certificate is required, and the fields are read from the verified message only: Issuer
//! must be the IdP, Destination this SP's SLO URL, IssueInstant recent, NotOnOrAfter not past;
//! a LogoutResponse's InResponseTo must be the request this SP sent.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::X509;
use samael::crypto::CertificateDer;

use crate::bindings::decode_redirect_value;
use crate::error::{
    MessageError, PartyError, RequestError, SignatureError, StatusError, StructureError,
    SubjectError, TimeError, ValidationError,
};
use crate::response::{decode_post_value, NameId};
use crate::signature::{self, AlgorithmPolicy};
use crate::xml::{self, escape, Element};
use crate::{DS_NS, SAMLP_NS, SAML_NS};

/// The top-level status of a successful logout.
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// The top-level status when this SP could not end the sessions.
pub const STATUS_RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";

/// A LogoutRequest this SP sends to the IdP.
#[derive(Debug, Clone)]
pub struct LogoutRequest {
    /// The request ID, later expected as the response's InResponseTo.
    pub id: String,
    /// When the request was made.
    pub issue_instant: DateTime<Utc>,
    /// The IdP's SLO endpoint.
    pub destination: String,
    /// This SP's entity ID.
    pub issuer: String,
    /// The user's NameID exactly as the IdP sent it at login.
    pub name_id: NameId,
    /// The IdP's SessionIndex of that login, when it sent one.
    pub session_index: Option<String>,
}

fn instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn optional_attr(name: &str, value: Option<&String>) -> String {
    value
        .map(|v| format!(" {name}=\"{}\"", escape(v)))
        .unwrap_or_default()
}

impl LogoutRequest {
    /// Serializes the request.
    pub fn to_xml(&self) -> String {
        let name_id = &self.name_id;
        let session_index = self
            .session_index
            .as_ref()
            .map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(s)))
            .unwrap_or_default();
        format!(
            "<samlp:LogoutRequest xmlns:samlp=\"{SAMLP_NS}\" xmlns:saml=\"{SAML_NS}\" ID=\"{}\" \
             Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\">\
             <saml:Issuer>{}</saml:Issuer><saml:NameID{}{}{}>{}</saml:NameID>{session_index}\
             </samlp:LogoutRequest>",
            escape(&self.id),
            instant(&self.issue_instant),
            escape(&self.destination),
            escape(&self.issuer),
            optional_attr("Format", name_id.format.as_ref()),
            optional_attr("NameQualifier", name_id.name_qualifier.as_ref()),
            optional_attr("SPNameQualifier", name_id.sp_name_qualifier.as_ref()),
            escape(&name_id.value),
        )
    }
}

/// The LogoutResponse this SP answers an IdP's LogoutRequest with.
#[derive(Debug, Clone)]
pub struct LogoutResponse {
    /// The response ID.
    pub id: String,
    /// When the response was made.
    pub issue_instant: DateTime<Utc>,
    /// The IdP's SLO response endpoint.
    pub destination: String,
    /// This SP's entity ID.
    pub issuer: String,
    /// The ID of the request answered.
    pub in_response_to: String,
    /// The top-level status code URI.
    pub status: &'static str,
}

impl LogoutResponse {
    /// Serializes the response.
    pub fn to_xml(&self) -> String {
        format!(
            "<samlp:LogoutResponse xmlns:samlp=\"{SAMLP_NS}\" xmlns:saml=\"{SAML_NS}\" ID=\"{}\" \
             Version=\"2.0\" IssueInstant=\"{}\" Destination=\"{}\" InResponseTo=\"{}\">\
             <saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value=\"{}\"/>\
             </samlp:Status></samlp:LogoutResponse>",
            escape(&self.id),
            instant(&self.issue_instant),
            escape(&self.destination),
            escape(&self.in_response_to),
            escape(&self.issuer),
            self.status,
        )
    }
}

/// Longest RelayState accepted (the bindings specification allows 80 bytes; some IdPs send
/// more).
pub const MAX_RELAY_STATE_BYTES: usize = 1024;

/// The other Issuer Microsoft Entra ID puts on logout messages, for its entity ID
/// `https://sts.windows.net/<tenant>/`: `https://login.microsoftonline.com/<tenant>/`.
pub fn entra_logout_issuer(entity_id: &str) -> Option<String> {
    let tenant = entity_id
        .strip_prefix("https://sts.windows.net/")?
        .strip_suffix('/')?;
    (!tenant.is_empty() && !tenant.contains('/'))
        .then(|| format!("https://login.microsoftonline.com/{tenant}/"))
}

/// The Issuer a logout message names, read without any check of trust: only to pick which
/// IdP's [`LogoutChecks`] verify it (several IdPs, one SLO endpoint); those checks then
/// require this Issuer and that IdP's signature. `value` is the `SAMLRequest` or
/// `SAMLResponse` parameter, deflated when `redirect` (HTTP-Redirect). Never a claim.
pub fn unverified_issuer(
    value: &str,
    redirect: bool,
    max_message_bytes: usize,
) -> Result<Option<String>, ValidationError> {
    let text = if redirect {
        decode_redirect_value(value, max_message_bytes)?
    } else {
        decode_post_value(value, max_message_bytes)?
    };
    let root = xml::parse(&text)?;
    Ok(root
        .only_child(SAML_NS, "Issuer")
        .map(|i| i.text().trim().to_string()))
}

/// How an IdP's message arrived.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    /// HTTP-Redirect: the raw (still percent-encoded) query string of the GET; its signature
    /// covers the RelayState too.
    Redirect(&'a str),
    /// HTTP-POST: the form value (base64 of the XML) and the form's RelayState (which the
    /// XML signature does not cover).
    Post {
        /// The `SAMLRequest` or `SAMLResponse` field.
        message: &'a str,
        /// The `RelayState` field.
        relay_state: Option<&'a str>,
    },
}

/// What an IdP's logout message is checked against.
#[derive(Debug, Clone)]
pub struct LogoutChecks<'a> {
    /// The IdP's entity ID, expected as Issuer.
    pub idp_entity_id: &'a str,
    /// Another Issuer the same IdP uses on logout messages (Entra's LogoutResponses say
    /// `https://login.microsoftonline.com/<tenant>/` where its entity ID is
    /// `https://sts.windows.net/<tenant>/`); the signature must still be by a trusted key.
    pub alternate_issuer: Option<&'a str>,
    /// The IdP's trusted signing certificates.
    pub certificates: &'a [CertificateDer],
    /// This SP's SLO URL, expected as Destination.
    pub slo_url: &'a str,
    /// Which signature algorithms are accepted.
    pub algorithms: AlgorithmPolicy,
    /// Allowed clock difference.
    pub clock_skew: std::time::Duration,
    /// Oldest IssueInstant accepted (before skew).
    pub max_issue_age: std::time::Duration,
    /// Largest message accepted, in bytes (encoded and inflated).
    pub max_message_bytes: usize,
    /// The caller's clock.
    pub now: DateTime<Utc>,
}

/// An IdP's LogoutRequest, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpLogoutRequest {
    /// The request ID, answered as InResponseTo; a replay cache keeps it until `fresh_until`.
    pub id: String,
    /// When the request stops passing the IssueInstant check: a replay cache may forget its ID
    /// then.
    pub fresh_until: DateTime<Utc>,
    /// The RelayState to send back with the answer (covered by the signature over
    /// HTTP-Redirect).
    pub relay_state: Option<String>,
    /// Whose sessions end.
    pub name_id: NameId,
    /// Which of that user's IdP sessions end; empty: all of them.
    pub session_indexes: Vec<String>,
}

/// An IdP's LogoutResponse, verified and successful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpLogoutResponse {
    /// The response ID.
    pub id: String,
}

/// Verifies and reads an IdP's LogoutRequest.
pub fn read_logout_request(
    incoming: Incoming<'_>,
    checks: &LogoutChecks<'_>,
) -> Result<IdpLogoutRequest, ValidationError> {
    let (root, relay_state) = verified_message(incoming, "SAMLRequest", "LogoutRequest", checks)?;
    let issued = timestamp(required(&root, "IssueInstant")?)?;
    let max_age = TimeDelta::from_std(checks.max_issue_age).unwrap_or(TimeDelta::MAX);
    let fresh_until = issued
        .checked_add_signed(max_age)
        .and_then(|t| t.checked_add_signed(skew(checks)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if let Some(until) = root.attr("NotOnOrAfter") {
        let until = timestamp(until)?;
        if until + skew(checks) <= checks.now {
            return Err(TimeError::Expired.into());
        }
    }
    if root.only_child(SAML_NS, "EncryptedID").is_some() {
        return Err(SubjectError::NameIdMissing.into());
    }
    let name_id = root
        .only_child(SAML_NS, "NameID")
        .ok_or(SubjectError::NameIdMissing)?;
    let value = name_id.text().trim().to_string();
    if value.is_empty() || name_id.has_child_elements() {
        return Err(SubjectError::NameIdMissing.into());
    }
    let session_indexes = root
        .children_named(SAMLP_NS, "SessionIndex")
        .map(|s| s.text().trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Ok(IdpLogoutRequest {
        id: required(&root, "ID")?.to_string(),
        fresh_until,
        relay_state,
        name_id: NameId {
            value,
            format: name_id.attr("Format").map(str::to_string),
            name_qualifier: name_id.attr("NameQualifier").map(str::to_string),
            sp_name_qualifier: name_id.attr("SPNameQualifier").map(str::to_string),
        },
        session_indexes,
    })
}

/// Verifies and reads an IdP's LogoutResponse to the request `expected_request`.
pub fn read_logout_response(
    incoming: Incoming<'_>,
    checks: &LogoutChecks<'_>,
    expected_request: &str,
) -> Result<IdpLogoutResponse, ValidationError> {
    let (root, _) = verified_message(incoming, "SAMLResponse", "LogoutResponse", checks)?;
    if root.attr("InResponseTo") != Some(expected_request) {
        return Err(RequestError::UnknownInResponseTo.into());
    }
    let status = root.only_child(SAMLP_NS, "Status");
    let code = status.and_then(|s| s.only_child(SAMLP_NS, "StatusCode"));
    let value = code.and_then(|c| c.attr("Value")).unwrap_or_default();
    if value != STATUS_SUCCESS {
        return Err(StatusError {
            code: value.to_string(),
            sub_code: code
                .and_then(|c| c.only_child(SAMLP_NS, "StatusCode"))
                .and_then(|c| c.attr("Value"))
                .map(str::to_string),
            message: status
                .and_then(|s| s.only_child(SAMLP_NS, "StatusMessage"))
                .map(|m| m.text()),
        }
        .into());
    }
    Ok(IdpLogoutResponse {
        id: required(&root, "ID")?.to_string(),
    })
}

fn skew(checks: &LogoutChecks<'_>) -> TimeDelta {
    TimeDelta::from_std(checks.clock_skew).unwrap_or(TimeDelta::MAX)
}

fn timestamp(text: &str) -> Result<DateTime<Utc>, ValidationError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| TimeError::BadTimestamp.into())
}

fn required<'e>(element: &'e Element, name: &str) -> Result<&'e str, ValidationError> {
    element
        .attr(name)
        .filter(|v| !v.is_empty())
        .ok_or(MessageError::MissingField.into())
}

/// Decodes the message, checks its signature and returns the verified root element after the
/// checks every logout message shares, with the RelayState.
fn verified_message(
    incoming: Incoming<'_>,
    param: &str,
    root_name: &str,
    checks: &LogoutChecks<'_>,
) -> Result<(Element, Option<String>), ValidationError> {
    let (root, relay_state) = match incoming {
        Incoming::Redirect(query) => {
            let (value, relay_state) =
                verify_redirect_query(query, param, checks.certificates, checks.algorithms)?;
            let text = decode_redirect_value(&value, checks.max_message_bytes)?;
            let root = xml::parse(&text)?;
            // The query signature covers the message; an XML signature inside it is not read.
            if root.descendants().iter().any(|e| e.is(DS_NS, "Signature")) {
                return Err(SignatureError::Misplaced.into());
            }
            (root, relay_state)
        }
        Incoming::Post {
            message,
            relay_state,
        } => {
            if relay_state.is_some_and(|r| r.len() > MAX_RELAY_STATE_BYTES) {
                return Err(MessageError::TooLarge.into());
            }
            let text = decode_post_value(message, checks.max_message_bytes)?;
            let original = xml::parse(&text)?;
            if xml::has_duplicate_ids(&original) {
                return Err(StructureError::DuplicateId.into());
            }
            let sig = original
                .only_child(DS_NS, "Signature")
                .ok_or(SignatureError::Missing)?;
            let id = required(&original, "ID")?;
            signature::check_shape(sig, id, checks.algorithms)?;
            let signatures = original
                .descendants()
                .into_iter()
                .filter(|e| e.is(DS_NS, "Signature"))
                .count();
            if signatures != 1 {
                return Err(SignatureError::Misplaced.into());
            }
            let verified =
                signature::verify_and_reduce(&text, checks.certificates, checks.algorithms)?;
            let root = xml::parse(&verified)?;
            if root.attr("ID") != Some(id) {
                return Err(SignatureError::NotCovered.into());
            }
            (root, relay_state.map(str::to_string))
        }
    };
    if !root.is(SAMLP_NS, root_name) {
        return Err(MessageError::WrongMessage.into());
    }
    if root.attr("Version") != Some("2.0") {
        return Err(MessageError::MissingField.into());
    }
    let issuer = root
        .only_child(SAML_NS, "Issuer")
        .map(|i| i.text().trim().to_string());
    let known = issuer.as_deref() == Some(checks.idp_entity_id)
        || (issuer.is_some() && issuer.as_deref() == checks.alternate_issuer);
    if !known {
        return Err(PartyError::Issuer.into());
    }
    if root.attr("Destination") != Some(checks.slo_url) {
        return Err(PartyError::Destination.into());
    }
    let issued = timestamp(required(&root, "IssueInstant")?)?;
    let max_age = TimeDelta::from_std(checks.max_issue_age).unwrap_or(TimeDelta::MAX);
    if issued > checks.now + skew(checks) || issued + max_age + skew(checks) < checks.now {
        return Err(TimeError::IssueInstant.into());
    }
    Ok((root, relay_state))
}

/// The RSA signature algorithms a Redirect-binding signature may use, with their digests.
fn redirect_digest(sig_alg: &str, policy: AlgorithmPolicy) -> Option<MessageDigest> {
    match sig_alg {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => Some(MessageDigest::sha256()),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => Some(MessageDigest::sha384()),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => Some(MessageDigest::sha512()),
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1" if policy.allow_sha1 => {
            Some(MessageDigest::sha1())
        }
        _ => None,
    }
}

/// Checks the HTTP-Redirect binding signature of a query string (SAML bindings 3.4.4.1): the
/// signature covers `param=..&RelayState=..&SigAlg=..` exactly as those parameters appear in
/// the URL, still percent-encoded. Returns `param`'s decoded value and the (signed) RelayState.
/// A parameter given twice, under any spelling of its name, is refused.
pub fn verify_redirect_query(
    raw_query: &str,
    param: &str,
    certificates: &[CertificateDer],
    policy: AlgorithmPolicy,
) -> Result<(String, Option<String>), ValidationError> {
    let decode = |raw: &str| -> String {
        url::form_urlencoded::parse(format!("v={raw}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let mut message = None;
    let mut relay_state = None;
    let mut sig_alg = None;
    let mut signature_value = None;
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Matched by the decoded name, so that `Relay%53tate` is the same parameter to us as
        // to any other reader of the URL.
        let slot = match decode(name).as_str() {
            n if n == param => &mut message,
            "RelayState" => &mut relay_state,
            "SigAlg" => &mut sig_alg,
            "Signature" => &mut signature_value,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(MessageError::MissingField.into());
        }
    }
    let message = message.ok_or(MessageError::MissingField)?;
    let (Some(sig_alg), Some(signature_value)) = (sig_alg, signature_value) else {
        return Err(SignatureError::Missing.into());
    };
    let relay_state_text = relay_state.map(decode);
    if relay_state_text
        .as_ref()
        .is_some_and(|r| r.len() > MAX_RELAY_STATE_BYTES)
    {
        return Err(MessageError::TooLarge.into());
    }
    let digest = redirect_digest(&decode(sig_alg), policy).ok_or(SignatureError::Algorithm)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(decode(signature_value).trim())
        .map_err(|_| SignatureError::Malformed)?;
    let mut signed = format!("{param}={message}");
    if let Some(relay_state) = relay_state {
        signed.push_str("&RelayState=");
        signed.push_str(relay_state);
    }
    signed.push_str("&SigAlg=");
    signed.push_str(sig_alg);
    let verifies = |cert: &CertificateDer| -> bool {
        let Ok(key) = X509::from_der(cert.der_data()).and_then(|c| c.public_key()) else {
            return false;
        };
        // The SigAlg names RSA: a certificate with another key type never verifies it.
        if key.id() != openssl::pkey::Id::RSA {
            return false;
        }
        Verifier::new(digest, &key)
            .and_then(|mut v| v.verify_oneshot(&signature, signed.as_bytes()))
            .unwrap_or(false)
    };
    if certificates.is_empty() || !certificates.iter().any(verifies) {
        return Err(SignatureError::Invalid.into());
    }
    Ok((decode(message), relay_state_text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::redirect_url;

    const IDP: &str = "https://idp.example/metadata";
    const SLO: &str = "https://sp.example/saml/slo";

    fn keys() -> (openssl::pkey::PKey<openssl::pkey::Private>, CertificateDer) {
        let (key, der) = crate::test_support::key_and_cert();
        (key, CertificateDer::from(der))
    }

    fn checks<'a>(certs: &'a [CertificateDer], now: DateTime<Utc>) -> LogoutChecks<'a> {
        LogoutChecks {
            idp_entity_id: IDP,
            alternate_issuer: None,
            certificates: certs,
            slo_url: SLO,
            algorithms: AlgorithmPolicy::default(),
            clock_skew: std::time::Duration::from_secs(60),
            max_issue_age: std::time::Duration::from_secs(300),
            max_message_bytes: 64 * 1024,
            now,
        }
    }

    fn idp_request(issuer: &str, destination: &str, at: DateTime<Utc>) -> String {
        LogoutRequest {
            id: "_req1".into(),
            issue_instant: at,
            destination: destination.into(),
            issuer: issuer.into(),
            name_id: NameId {
                value: "alice".into(),
                format: Some("urn:oasis:names:tc:SAML:2.0:nameid-format:transient".into()),
                name_qualifier: Some("https://idp.example/metadata".into()),
                sp_name_qualifier: None,
            },
            session_index: Some("_s1".into()),
        }
        .to_xml()
    }

    fn query_of(url: &str) -> &str {
        url.split_once('?').unwrap().1
    }

    #[test]
    fn a_signed_redirect_logout_request_is_read() {
        let (key, cert) = keys();
        let now = Utc::now();
        let url = redirect_url(
            SLO,
            "SAMLRequest",
            &idp_request(IDP, SLO, now),
            Some("rs"),
            Some(&key),
        )
        .unwrap();
        let certs = [cert];
        let request =
            read_logout_request(Incoming::Redirect(query_of(&url)), &checks(&certs, now)).unwrap();
        assert_eq!(request.id, "_req1");
        assert_eq!(request.name_id.value, "alice");
        assert_eq!(
            request.name_id.name_qualifier.as_deref(),
            Some("https://idp.example/metadata")
        );
        assert_eq!(request.session_indexes, ["_s1"]);
        assert_eq!(request.relay_state.as_deref(), Some("rs"));
        assert!(request.fresh_until > now + TimeDelta::minutes(5));
    }

    #[test]
    fn redirect_logout_requests_are_refused_for_each_failed_check() {
        let (key, cert) = keys();
        let (other_key, _) = keys();
        let now = Utc::now();
        let certs = [cert];
        let refused = |url: String| {
            read_logout_request(Incoming::Redirect(query_of(&url)), &checks(&certs, now))
                .unwrap_err()
                .code()
        };
        let good = idp_request(IDP, SLO, now);
        let signed =
            |xml: &str, key| redirect_url(SLO, "SAMLRequest", xml, None, Some(key)).unwrap();
        assert_eq!(
            refused(redirect_url(SLO, "SAMLRequest", &good, None, None).unwrap()),
            "signature_missing"
        );
        assert_eq!(refused(signed(&good, &other_key)), "signature_invalid");
        assert_eq!(
            refused(signed(&idp_request("https://evil", SLO, now), &key)),
            "issuer_mismatch"
        );
        assert_eq!(
            refused(signed(&idp_request(IDP, "https://other/slo", now), &key)),
            "destination_mismatch"
        );
        let old = now - TimeDelta::minutes(30);
        assert_eq!(
            refused(signed(&idp_request(IDP, SLO, old), &key)),
            "issue_instant_invalid"
        );
        // A RelayState added after signing breaks the signature.
        let url = redirect_url(SLO, "SAMLRequest", &good, Some("a"), Some(&key)).unwrap();
        assert_eq!(
            refused(url.replace("RelayState=a", "RelayState=b")),
            "signature_invalid"
        );
        // Parameters given twice are refused.
        let url = signed(&good, &key);
        let twice = format!("{url}&SigAlg=x");
        assert_eq!(refused(twice), "required_field_missing");
        // ...also when the second spelling is percent-encoded.
        let url = redirect_url(SLO, "SAMLRequest", &good, Some("a"), Some(&key)).unwrap();
        assert_eq!(
            refused(format!("{url}&Relay%53tate=evil")),
            "required_field_missing"
        );
        // An overlong RelayState is refused before it is echoed anywhere.
        let long = "r".repeat(MAX_RELAY_STATE_BYTES + 1);
        let overlong = redirect_url(SLO, "SAMLRequest", &good, Some(&long), Some(&key)).unwrap();
        assert_eq!(refused(overlong), "message_too_large");
        // SHA-1 is refused by default.
        let sha1 = url.replace(
            "SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256",
            "SigAlg=http%3A%2F%2Fwww.w3.org%2F2000%2F09%2Fxmldsig%23rsa-sha1",
        );
        assert_eq!(refused(sha1), "signature_algorithm_refused");
    }

    #[test]
    fn a_logout_response_must_answer_our_request_with_success() {
        let (key, cert) = keys();
        let now = Utc::now();
        let certs = [cert];
        let response = |status: &'static str, irt: &str| {
            let xml = LogoutResponse {
                id: "_resp".into(),
                issue_instant: now,
                destination: SLO.into(),
                issuer: IDP.into(),
                in_response_to: irt.into(),
                status,
            }
            .to_xml();
            redirect_url(SLO, "SAMLResponse", &xml, Some("tok"), Some(&key)).unwrap()
        };
        let read = |url: String| {
            read_logout_response(
                Incoming::Redirect(query_of(&url)),
                &checks(&certs, now),
                "_mine",
            )
        };
        assert_eq!(read(response(STATUS_SUCCESS, "_mine")).unwrap().id, "_resp");
        assert_eq!(
            read(response(STATUS_SUCCESS, "_other")).unwrap_err().code(),
            "unknown_in_response_to"
        );
        assert_eq!(
            read(response(STATUS_RESPONDER, "_mine"))
                .unwrap_err()
                .code(),
            "status_not_success"
        );
        // A LogoutRequest is not a LogoutResponse.
        let url = redirect_url(
            SLO,
            "SAMLResponse",
            &idp_request(IDP, SLO, now),
            None,
            Some(&key),
        )
        .unwrap();
        assert_eq!(read(url).unwrap_err().code(), "wrong_message_type");
    }

    #[test]
    fn entra_logout_issuers() {
        assert_eq!(
            entra_logout_issuer("https://sts.windows.net/72f988bf/").as_deref(),
            Some("https://login.microsoftonline.com/72f988bf/")
        );
        assert_eq!(entra_logout_issuer("https://sts.windows.net//"), None);
        assert_eq!(entra_logout_issuer("https://sts.windows.net/a/b/"), None);
        assert_eq!(entra_logout_issuer("https://idp.example/"), None);
    }

    #[test]
    fn our_request_carries_the_name_id_as_received() {
        let xml = idp_request(IDP, SLO, Utc::now());
        let root = xml::parse(&xml).unwrap();
        let name_id = root.only_child(SAML_NS, "NameID").unwrap();
        assert_eq!(name_id.attr("NameQualifier"), Some(IDP));
        assert_eq!(name_id.attr("SPNameQualifier"), None);
        assert_eq!(
            root.only_child(SAMLP_NS, "SessionIndex").unwrap().text(),
            "_s1"
        );
    }
}
