//! Validation of a SAML 2.0 `Response` posted to the ACS (HTTP-POST binding).
//!
//! The flow, in order, with the invariant each step keeps:
//! 1. The form value is size-checked, base64-decoded and must be UTF-8.
//! 2. The strict parser ([`crate::xml`]) refuses DOCTYPEs, other encodings, two roots, PIs, deep
//!    nesting and unbound prefixes before anything else reads the bytes.
//! 3. A non-Success `Status` is reported as such (it grants nothing, so it needs no signature).
//! 4. An `EncryptedAssertion` (only when decryption is configured) is decrypted into place
//!    after the Response's own signature, if any, verified ([`crate::encryption`]); from here
//!    on the plaintext Assertion is checked like any other, so it must carry its own signature.
//! 5. Shape: exactly one `saml:Assertion`, directly under the Response; no duplicate IDs; signatures only directly under the Response or the
//!    Assertion, each one SignedInfo with one Reference to its parent's ID
//!    ([`crate::signature::check_shape`]); at least one signature covers the Assertion.
//! 6. xmlsec verifies every signature against the configured IdP certificates only (never the
//!    message's KeyInfo) and hands back the verified content alone.
//! 7. Every claim is read from that verified XML: the Assertion (and, when the Response itself is
//!    signed, its Destination, Issuer and InResponseTo). Nothing is read from the original again.
//! 8. Issuer, Audience, bearer SubjectConfirmation (Recipient, NotOnOrAfter, InResponseTo),
//!    Conditions (NotBefore, NotOnOrAfter), IssueInstant age and SessionNotOnOrAfter are checked
//!    against the caller's clock with the configured skew. When accepted methods are configured,
//!    every AuthnStatement's AuthnContextClassRef must be one of them.
//! 9. Finally the assertion ID goes to the caller's [`ReplayCache`]; a second use is refused.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use samael::crypto::CertificateDer;

use crate::encryption::{self, ContentAlgorithm, Decryption};
use crate::error::{
    MessageError, PartyError, RequestError, SignatureError, StatusError, StructureError,
    SubjectError, TimeError, ValidationError,
};
use crate::signature::{self, AlgorithmPolicy};
use crate::xml::{self, Element};
use crate::{SAMLP_NS, SAML_NS};

const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// This service provider as the IdP must address it.
#[derive(Debug, Clone)]
pub struct ServiceProvider {
    /// The SP entity ID, expected in every Audience.
    pub entity_id: String,
    /// The ACS URL, expected as Destination and Recipient.
    pub acs_url: String,
}

/// The identity provider whose signatures are trusted.
#[derive(Debug, Clone)]
pub struct TrustedIdp {
    /// The IdP entity ID, expected as Issuer.
    pub entity_id: String,
    /// The signing certificates (DER) from configuration or trusted metadata.
    pub certificates: Vec<CertificateDer>,
}

/// Tunables of validation; the defaults are what most deployments want.
#[derive(Debug, Clone)]
pub struct ValidationOptions {
    /// Allowed difference between the IdP's clock and ours, on every time check.
    pub clock_skew: Duration,
    /// Oldest IssueInstant accepted (before skew).
    pub max_issue_age: Duration,
    /// Accept responses that answer no request (IdP-initiated login).
    pub allow_unsolicited: bool,
    /// Which signature algorithms are accepted.
    pub algorithms: AlgorithmPolicy,
    /// Largest base64 form value accepted, in bytes.
    pub max_message_bytes: usize,
    /// The SP's decryption keys; `None` refuses every `EncryptedAssertion`.
    pub decryption: Option<Decryption>,
    /// The AuthnContextClassRef URIs accepted in the AuthnStatement; empty accepts any (and
    /// none). The IdP is asked for these, but the request travels through the browser, so the
    /// answer is checked too.
    pub accepted_authn_contexts: Vec<String>,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            clock_skew: Duration::from_secs(180),
            max_issue_age: Duration::from_secs(300),
            allow_unsolicited: false,
            algorithms: AlgorithmPolicy::default(),
            max_message_bytes: 256 * 1024,
            decryption: None,
            accepted_authn_contexts: Vec::new(),
        }
    }
}

/// The replay cache could not answer; callers fail the login closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the replay cache is unavailable")]
pub struct ReplayCacheUnavailable;

/// Remembers assertion IDs until they expire, so each is accepted once.
pub trait ReplayCache {
    /// Records `assertion_id` until `until`; `Ok(true)` when it had not been seen before.
    fn first_use(
        &self,
        assertion_id: &str,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, ReplayCacheUnavailable>> + Send;
}

/// The subject's NameID exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameId {
    /// The NameID text.
    pub value: String,
    /// The `Format` attribute, when present.
    pub format: Option<String>,
    /// The `NameQualifier` attribute, when present.
    pub name_qualifier: Option<String>,
    /// The `SPNameQualifier` attribute, when present.
    pub sp_name_qualifier: Option<String>,
}

/// One SAML attribute with all its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAttribute {
    /// The attribute `Name`.
    pub name: String,
    /// The attribute `NameFormat`, when present.
    pub name_format: Option<String>,
    /// The text of each `AttributeValue`.
    pub values: Vec<String>,
}

/// A validated assertion: everything here was covered by a verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The assertion ID (recorded in the replay cache).
    pub id: String,
    /// The Issuer (equal to the trusted IdP's entity ID).
    pub issuer: String,
    /// The subject.
    pub name_id: NameId,
    /// The AuthnStatement SessionIndex, used for Single Logout.
    pub session_index: Option<String>,
    /// The AuthnStatement SessionNotOnOrAfter, which caps the session.
    pub session_not_on_or_after: Option<DateTime<Utc>>,
    /// The AuthnStatement's AuthnContextClassRef: how the IdP signed the user in.
    pub authn_context: Option<String>,
    /// The AuthnStatement's AuthnInstant: when the IdP signed the user in (`None` when absent
    /// or not a timestamp; it is only read, never a reason to refuse).
    pub authn_instant: Option<DateTime<Utc>>,
    /// When the assertion stops being valid (the later of its NotOnOrAfter values).
    pub not_on_or_after: DateTime<Utc>,
    /// The request this assertion answers, `None` for an unsolicited one.
    pub in_response_to: Option<String>,
    /// Every attribute, in document order; repeated Names are merged.
    pub attributes: Vec<SamlAttribute>,
}

impl Assertion {
    /// The values of the attribute named `name`, or an empty slice.
    pub fn attribute(&self, name: &str) -> &[String] {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.values.as_slice())
            .unwrap_or(&[])
    }
}

/// The AuthnContextClassRef of one AuthnStatement, trimmed; `None` when its AuthnContext has none
/// or more than one (a DeclRef alone, say), or when there is more than one AuthnContext.
fn class_ref(statement: &Element) -> Option<String> {
    statement
        .only_child(SAML_NS, "AuthnContext")
        .and_then(|c| c.only_child(SAML_NS, "AuthnContextClassRef"))
        .map(|r| r.text().trim().to_string())
}

/// Validates Responses for one SP and one trusted IdP.
#[derive(Debug, Clone)]
pub struct ResponseValidator {
    /// This SP.
    pub sp: ServiceProvider,
    /// The trusted IdP.
    pub idp: TrustedIdp,
    /// The tunables.
    pub options: ValidationOptions,
}

impl ResponseValidator {
    /// Validates the `SAMLResponse` form value. `expected_request` is the ID of the AuthnRequest
    /// this browser has pending (`None` when it has none); `now` is the caller's clock.
    pub async fn validate<R: ReplayCache>(
        &self,
        form_value: &str,
        expected_request: Option<&str>,
        now: DateTime<Utc>,
        replay: &R,
    ) -> Result<Assertion, ValidationError> {
        let assertion = self.validate_without_replay(form_value, expected_request, now)?;
        let until = assertion.not_on_or_after + skew(&self.options);
        match replay.first_use(&assertion.id, until).await {
            Ok(true) => Ok(assertion),
            Ok(false) => Err(ValidationError::Replay),
            Err(ReplayCacheUnavailable) => Err(ValidationError::ReplayCacheUnavailable),
        }
    }

    /// Every check except the replay cache; callers must record the assertion ID themselves.
    pub fn validate_without_replay(
        &self,
        form_value: &str,
        expected_request: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Assertion, ValidationError> {
        if expected_request.is_none() && !self.options.allow_unsolicited {
            return Err(RequestError::Unsolicited.into());
        }
        let text = decode_post_value(form_value, self.options.max_message_bytes)?;
        let root = xml::parse(&text)?;
        if !root.is(SAMLP_NS, "Response") {
            return Err(MessageError::NotAResponse.into());
        }
        check_status(&root)?;
        // An encrypted Assertion is decrypted into place first; what follows then checks the
        // plaintext Assertion exactly as if it had come unencrypted, its signature included.
        let (text, root) = match self.decrypt_in_place(&text, &root)? {
            Some(spliced) => {
                let root = xml::parse(&spliced)?;
                (spliced, root)
            }
            None => (text, root),
        };
        let original_assertion = check_structure(&root, self.options.algorithms)?;
        // Refusal-only checks on the original: they can refuse, never grant.
        if let Some(dest) = root.attr("Destination") {
            if dest != self.sp.acs_url {
                return Err(PartyError::Destination.into());
            }
        }
        // Signed or not, the Response must not answer another request than the pending one.
        check_in_response_to(root.attr("InResponseTo"), expected_request)?;
        if let Some(issuer) = root.only_child(SAML_NS, "Issuer") {
            if issuer.text().trim() != self.idp.entity_id {
                return Err(PartyError::Issuer.into());
            }
        }

        let verified =
            signature::verify_and_reduce(&text, &self.idp.certificates, self.options.algorithms)?;
        let verified = xml::parse(&verified).map_err(|_| SignatureError::NotCovered)?;
        let (signed_response, assertion) = locate_verified(&root, original_assertion, &verified)?;
        if let Some(response) = signed_response {
            self.check_signed_response(response, expected_request, now)?;
        }
        self.read_assertion(assertion, expected_request, now)
    }

    /// For a Response with an `EncryptedAssertion`: verifies the Response's own signature, if
    /// any, over the ciphertext; refuses AES-CBC without it (CBC has no integrity, so decrypting
    /// forged CBC ciphertext would make the ACS a padding oracle); decrypts; and returns the
    /// Response with the plaintext Assertion in place and the Response signature cut. `None`
    /// when the Response has no `EncryptedAssertion`.
    fn decrypt_in_place(
        &self,
        text: &str,
        root: &Element,
    ) -> Result<Option<String>, ValidationError> {
        let all = root.descendants();
        let encrypted = all
            .iter()
            .filter(|e| e.is(SAML_NS, "EncryptedAssertion"))
            .count();
        if encrypted == 0 {
            return Ok(None);
        }
        let decryption = self
            .options
            .decryption
            .as_ref()
            .ok_or(StructureError::EncryptedAssertion)?;
        if encrypted > 1 || all.iter().any(|e| e.is(SAML_NS, "Assertion")) {
            return Err(StructureError::MultipleAssertions.into());
        }
        let response_signed = signature::has_signature(root);
        // With a Response signature, everything below reads the verified copy (invariant 1).
        let base = if response_signed {
            signature::check_placement(root)?;
            let sig = root
                .children_named(crate::DS_NS, "Signature")
                .next()
                .ok_or(SignatureError::Missing)?;
            let id = root.attr("ID").ok_or(SignatureError::Reference)?;
            signature::check_shape(sig, id, self.options.algorithms)?;
            signature::verify_and_reduce(text, &self.idp.certificates, self.options.algorithms)?
        } else {
            text.to_string()
        };
        let base_root = xml::parse(&base).map_err(|_| SignatureError::NotCovered)?;
        if response_signed && base_root.attr("ID") != root.attr("ID") {
            return Err(SignatureError::NotCovered.into());
        }
        let element = base_root
            .only_child(SAML_NS, "EncryptedAssertion")
            .ok_or(StructureError::AssertionMisplaced)?;
        let algorithm =
            encryption::content_algorithm(element).map_err(|_| StructureError::Decryption)?;
        if matches!(algorithm, ContentAlgorithm::Cbc(_)) && !response_signed {
            return Err(StructureError::Decryption.into());
        }
        let plaintext = encryption::decrypt_assertion(element, decryption)
            .map_err(|_| StructureError::Decryption)?;
        let spliced =
            encryption::splice(&base, &plaintext).map_err(|_| StructureError::Decryption)?;
        Ok(Some(spliced))
    }

    fn check_signed_response(
        &self,
        response: &Element,
        expected_request: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), ValidationError> {
        check_in_response_to(response.attr("InResponseTo"), expected_request)?;
        let issued = timestamp(response.attr("IssueInstant"))?;
        self.check_issue_instant(issued, now)
    }

    fn check_issue_instant(
        &self,
        issued: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), ValidationError> {
        let skew = skew(&self.options);
        let max_age = TimeDelta::from_std(self.options.max_issue_age).unwrap_or(TimeDelta::MAX);
        if issued > now + skew || issued + max_age + skew < now {
            return Err(TimeError::IssueInstant.into());
        }
        Ok(())
    }

    fn read_assertion(
        &self,
        assertion: &Element,
        expected_request: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Assertion, ValidationError> {
        let skew = skew(&self.options);
        let id = required_attr(assertion, "ID")?;
        let issuer = assertion
            .only_child(SAML_NS, "Issuer")
            .map(|i| i.text().trim().to_string())
            .ok_or(PartyError::Issuer)?;
        if issuer != self.idp.entity_id {
            return Err(PartyError::Issuer.into());
        }
        self.check_issue_instant(timestamp(assertion.attr("IssueInstant"))?, now)?;

        let subject = assertion
            .only_child(SAML_NS, "Subject")
            .ok_or(SubjectError::NameIdMissing)?;
        let name_id = read_name_id(subject)?;
        let (confirmation_expiry, in_response_to) =
            self.check_confirmation(subject, expected_request, now)?;

        let conditions = assertion
            .only_child(SAML_NS, "Conditions")
            .ok_or(PartyError::Audience)?;
        if let Some(not_before) = optional_timestamp(conditions.attr("NotBefore"))? {
            if not_before > now + skew {
                return Err(TimeError::NotYetValid.into());
            }
        }
        let conditions_expiry = optional_timestamp(conditions.attr("NotOnOrAfter"))?;
        if let Some(expiry) = conditions_expiry {
            if now >= expiry + skew {
                return Err(TimeError::Expired.into());
            }
        }
        self.check_audience(conditions)?;

        let authn = assertion.children_named(SAML_NS, "AuthnStatement").next();
        let session_index = authn
            .and_then(|a| a.attr("SessionIndex"))
            .map(str::to_string);
        let session_not_on_or_after =
            optional_timestamp(authn.and_then(|a| a.attr("SessionNotOnOrAfter")))?;
        if let Some(end) = session_not_on_or_after {
            if now >= end + skew {
                return Err(TimeError::Expired.into());
            }
        }
        self.check_authn_context(assertion)?;
        let authn_context = authn.and_then(class_ref);
        let authn_instant = optional_timestamp(authn.and_then(|a| a.attr("AuthnInstant")))
            .ok()
            .flatten();
        let not_on_or_after =
            conditions_expiry.map_or(confirmation_expiry, |c| c.max(confirmation_expiry));
        Ok(Assertion {
            id: id.to_string(),
            issuer,
            name_id,
            session_index,
            session_not_on_or_after,
            authn_context,
            authn_instant,
            not_on_or_after,
            in_response_to,
            attributes: read_attributes(assertion),
        })
    }

    /// When accepted methods are configured, refuses an assertion without an AuthnStatement or
    /// with one whose AuthnContextClassRef is not among them.
    fn check_authn_context(&self, assertion: &Element) -> Result<(), ValidationError> {
        let accepted = &self.options.accepted_authn_contexts;
        if accepted.is_empty() {
            return Ok(());
        }
        let mut statements = assertion
            .children_named(SAML_NS, "AuthnStatement")
            .peekable();
        if statements.peek().is_none() {
            return Err(ValidationError::AuthnContext { found: None });
        }
        for statement in statements {
            let found = class_ref(statement);
            if !found
                .as_deref()
                .is_some_and(|f| accepted.iter().any(|a| a == f))
            {
                return Err(ValidationError::AuthnContext { found });
            }
        }
        Ok(())
    }

    /// Finds a bearer SubjectConfirmation whose data passes; returns its NotOnOrAfter and
    /// InResponseTo.
    fn check_confirmation(
        &self,
        subject: &Element,
        expected_request: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, Option<String>), ValidationError> {
        let skew = skew(&self.options);
        let mut first_error = None;
        for confirmation in subject.children_named(SAML_NS, "SubjectConfirmation") {
            if confirmation.attr("Method") != Some(BEARER) {
                continue;
            }
            let result = (|| -> Result<_, ValidationError> {
                let data = confirmation
                    .only_child(SAML_NS, "SubjectConfirmationData")
                    .ok_or(SubjectError::NoBearerConfirmation)?;
                if data.attr("Recipient") != Some(self.sp.acs_url.as_str()) {
                    return Err(PartyError::Recipient.into());
                }
                let expiry = timestamp(data.attr("NotOnOrAfter"))?;
                if now >= expiry + skew {
                    return Err(TimeError::Expired.into());
                }
                if let Some(not_before) = optional_timestamp(data.attr("NotBefore"))? {
                    if not_before > now + skew {
                        return Err(TimeError::NotYetValid.into());
                    }
                }
                let irt = data.attr("InResponseTo");
                check_confirmation_in_response_to(irt, expected_request)?;
                Ok((expiry, irt.map(str::to_string)))
            })();
            match result {
                Ok(found) => return Ok(found),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(SubjectError::NoBearerConfirmation.into()))
    }

    fn check_audience(&self, conditions: &Element) -> Result<(), ValidationError> {
        let mut restrictions = conditions
            .children_named(SAML_NS, "AudienceRestriction")
            .peekable();
        if restrictions.peek().is_none() {
            return Err(PartyError::Audience.into());
        }
        // Every AudienceRestriction must be satisfied (SAML core 2.5.1.4).
        for restriction in restrictions {
            let ours = restriction
                .children_named(SAML_NS, "Audience")
                .any(|a| a.text().trim() == self.sp.entity_id);
            if !ours {
                return Err(PartyError::Audience.into());
            }
        }
        Ok(())
    }
}

fn skew(options: &ValidationOptions) -> TimeDelta {
    TimeDelta::from_std(options.clock_skew).unwrap_or(TimeDelta::zero())
}

/// The Issuer a `SAMLResponse` form value names: the Response's, else that of its one plain
/// Assertion; `None` when it names none. Nothing here is checked for trust: the answer only
/// picks which IdP's [`ResponseValidator`] to run (several IdPs, one ACS), and that validator
/// then requires this same Issuer and that IdP's signature. Never a claim.
pub fn unverified_issuer(
    form_value: &str,
    max_bytes: usize,
) -> Result<Option<String>, ValidationError> {
    let text = decode_post_value(form_value, max_bytes)?;
    let root = xml::parse(&text)?;
    if !root.is(SAMLP_NS, "Response") {
        return Err(MessageError::NotAResponse.into());
    }
    let issuer = root.only_child(SAML_NS, "Issuer").or_else(|| {
        root.only_child(SAML_NS, "Assertion")
            .and_then(|a| a.only_child(SAML_NS, "Issuer"))
    });
    Ok(issuer.map(|i| i.text().trim().to_string()))
}

/// Decodes an HTTP-POST binding value: base64 (line breaks allowed) of UTF-8 XML.
pub fn decode_post_value(value: &str, max_bytes: usize) -> Result<String, MessageError> {
    if value.len() > max_bytes {
        return Err(MessageError::TooLarge);
    }
    let compact: Vec<u8> = value.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| MessageError::Base64)?;
    String::from_utf8(bytes).map_err(|_| MessageError::NotUtf8)
}

fn check_status(root: &Element) -> Result<(), ValidationError> {
    let code = root
        .only_child(SAMLP_NS, "Status")
        .and_then(|s| s.only_child(SAMLP_NS, "StatusCode"))
        .ok_or(MessageError::MissingField)?;
    let value = code.attr("Value").unwrap_or_default();
    if value == STATUS_SUCCESS {
        return Ok(());
    }
    let status = root.only_child(SAMLP_NS, "Status");
    Err(StatusError {
        code: value.to_string(),
        sub_code: code
            .only_child(SAMLP_NS, "StatusCode")
            .and_then(|c| c.attr("Value"))
            .map(str::to_string),
        message: status
            .and_then(|s| s.only_child(SAMLP_NS, "StatusMessage"))
            .map(|m| m.text()),
    }
    .into())
}

/// Checks the shape of the original document and returns its one Assertion.
fn check_structure(root: &Element, policy: AlgorithmPolicy) -> Result<&Element, ValidationError> {
    let all = root.descendants();
    if all.iter().any(|e| e.is(SAML_NS, "EncryptedAssertion")) {
        return Err(StructureError::EncryptedAssertion.into());
    }
    let assertions = all.iter().filter(|e| e.is(SAML_NS, "Assertion")).count();
    let assertion = match assertions {
        0 => return Err(StructureError::AssertionMissing.into()),
        1 => root
            .only_child(SAML_NS, "Assertion")
            .ok_or(StructureError::AssertionMisplaced)?,
        _ => return Err(StructureError::MultipleAssertions.into()),
    };
    if crate::xml::has_duplicate_ids(root) {
        return Err(StructureError::DuplicateId.into());
    }
    signature::check_placement(root)?;
    let mut covered = false;
    for element in [root, assertion] {
        if let Some(sig) = element.children_named(crate::DS_NS, "Signature").next() {
            let id = element.attr("ID").ok_or(SignatureError::Reference)?;
            signature::check_shape(sig, id, policy)?;
            covered = true;
        }
    }
    if !covered {
        return Err(SignatureError::Missing.into());
    }
    Ok(assertion)
}

/// Finds, in the verified document, the Response (when it was signed) and the Assertion, and
/// makes sure they are the very elements the original declared.
fn locate_verified<'v>(
    original: &Element,
    original_assertion: &Element,
    verified: &'v Element,
) -> Result<(Option<&'v Element>, &'v Element), ValidationError> {
    let assertion_id = original_assertion.attr("ID");
    let (response, assertion) = if verified.is(SAMLP_NS, "Response") {
        if verified.attr("ID") != original.attr("ID") || !signature::has_signature(original) {
            return Err(SignatureError::NotCovered.into());
        }
        let assertion = verified
            .only_child(SAML_NS, "Assertion")
            .ok_or(SignatureError::NotCovered)?;
        (Some(verified), assertion)
    } else if verified.is(SAML_NS, "Assertion") {
        (None, verified)
    } else {
        return Err(SignatureError::NotCovered.into());
    };
    if assertion.attr("ID").is_none() || assertion.attr("ID") != assertion_id {
        return Err(SignatureError::NotCovered.into());
    }
    Ok((response, assertion))
}

/// The Response's InResponseTo may be absent; when present it must name the pending request.
fn check_in_response_to(found: Option<&str>, expected: Option<&str>) -> Result<(), RequestError> {
    match (found, expected) {
        (None, _) => Ok(()),
        (Some(f), Some(e)) if f == e => Ok(()),
        _ => Err(RequestError::UnknownInResponseTo),
    }
}

/// The bearer confirmation's InResponseTo must name the pending request exactly, and be absent
/// only in an unsolicited response.
fn check_confirmation_in_response_to(
    found: Option<&str>,
    expected: Option<&str>,
) -> Result<(), RequestError> {
    if found == expected {
        Ok(())
    } else {
        Err(RequestError::UnknownInResponseTo)
    }
}

fn read_name_id(subject: &Element) -> Result<NameId, ValidationError> {
    let name_id = subject
        .only_child(SAML_NS, "NameID")
        .ok_or(SubjectError::NameIdMissing)?;
    let value = name_id.text().trim().to_string();
    if value.is_empty() || name_id.has_child_elements() {
        return Err(SubjectError::NameIdMissing.into());
    }
    Ok(NameId {
        value,
        format: name_id.attr("Format").map(str::to_string),
        name_qualifier: name_id.attr("NameQualifier").map(str::to_string),
        sp_name_qualifier: name_id.attr("SPNameQualifier").map(str::to_string),
    })
}

fn read_attributes(assertion: &Element) -> Vec<SamlAttribute> {
    let mut out: Vec<SamlAttribute> = Vec::new();
    for statement in assertion.children_named(SAML_NS, "AttributeStatement") {
        for attribute in statement.children_named(SAML_NS, "Attribute") {
            let Some(name) = attribute.attr("Name") else {
                continue;
            };
            let values = attribute
                .children_named(SAML_NS, "AttributeValue")
                .filter(|v| !v.has_child_elements())
                .map(|v| v.text());
            match out.iter_mut().find(|a| a.name == name) {
                Some(existing) => existing.values.extend(values),
                None => out.push(SamlAttribute {
                    name: name.to_string(),
                    name_format: attribute.attr("NameFormat").map(str::to_string),
                    values: values.collect(),
                }),
            }
        }
    }
    out
}

fn required_attr<'e>(element: &'e Element, name: &str) -> Result<&'e str, MessageError> {
    element
        .attr(name)
        .filter(|v| !v.is_empty())
        .ok_or(MessageError::MissingField)
}

fn timestamp(value: Option<&str>) -> Result<DateTime<Utc>, ValidationError> {
    optional_timestamp(value)?.ok_or(MessageError::MissingField.into())
}

fn optional_timestamp(value: Option<&str>) -> Result<Option<DateTime<Utc>>, ValidationError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| TimeError::BadTimestamp.into())
        })
        .transpose()
}
