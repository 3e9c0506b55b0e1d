//! Typed verdicts for a refused SAML message.
//!
//! [`ValidationError`] groups failures by the check that made them, and every leaf has a stable
//! machine code ([`ValidationError::code`]) that the gateway writes verbatim as the audit
//! `reason`. Messages never contain the input: they name what failed, not what was sent.

use crate::xml::XmlError;

/// The message could not be decoded or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The form value is larger than the configured limit.
    #[error("the SAML message is larger than the limit")]
    TooLarge,
    /// The form value is not valid base64.
    #[error("the SAML message is not valid base64")]
    Base64,
    /// The decoded message is not UTF-8 text.
    #[error("the SAML message is not UTF-8 text")]
    NotUtf8,
    /// The Redirect-binding message does not inflate.
    #[error("the SAML message does not inflate")]
    Inflate,
    /// The XML was refused by the strict parser.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root element is not the expected protocol message.
    #[error("the message is not a SAML 2.0 Response")]
    NotAResponse,
    /// A required attribute or element of the protocol message is absent or empty.
    #[error("the message lacks a required element or attribute")]
    MissingField,
    /// The root element is another protocol message than the one expected here.
    #[error("the message is not the SAML 2.0 protocol message expected here")]
    WrongMessage,
}

/// The message's shape is not one the SP accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StructureError {
    /// The Response carries no Assertion.
    #[error("the response has no assertion")]
    AssertionMissing,
    /// The Response carries more than one Assertion.
    #[error("the response has more than one assertion")]
    MultipleAssertions,
    /// An Assertion is somewhere other than directly under the Response.
    #[error("an assertion is in an unexpected place")]
    AssertionMisplaced,
    /// The Response carries an EncryptedAssertion, which this SP is not configured to decrypt.
    #[error("the response has an encrypted assertion, which this service does not decrypt")]
    EncryptedAssertion,
    /// The EncryptedAssertion cannot be decrypted (one answer for every cause: no oracle).
    #[error("the encrypted assertion cannot be decrypted")]
    Decryption,
    /// Two elements share one ID.
    #[error("two elements share one ID")]
    DuplicateId,
}

/// The XML signature is absent, malformed, of a refused kind, or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Neither the Response nor the Assertion is signed.
    #[error("neither the response nor the assertion is signed")]
    Missing,
    /// A Signature is somewhere other than directly under the Response or the Assertion.
    #[error("a signature is in an unexpected place")]
    Misplaced,
    /// The Signature element does not have the one SignedInfo, one Reference shape.
    #[error("the signature is malformed")]
    Malformed,
    /// The Reference does not point at the element that carries the signature.
    #[error("the signature reference does not name the signed element")]
    Reference,
    /// A transform other than enveloped-signature and exclusive c14n.
    #[error("the signature uses a transform that is not allowed")]
    Transform,
    /// A signature, digest or canonicalization algorithm that is not allowed.
    #[error("the signature uses an algorithm that is not allowed")]
    Algorithm,
    /// The signature carries key material that is never used (KeyValue, RetrievalMethod, ...).
    #[error("the signature carries key material that is not accepted")]
    KeyInfo,
    /// The signature does not verify with any trusted IdP certificate.
    #[error("the signature does not verify with a trusted IdP certificate")]
    Invalid,
    /// The verified content is not the assertion the message declares.
    #[error("the signed content is not the expected assertion")]
    NotCovered,
}

/// A time condition failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// `NotBefore` is later than now plus the allowed clock skew.
    #[error("the assertion is not valid yet")]
    NotYetValid,
    /// `NotOnOrAfter` (Conditions or SubjectConfirmationData) has passed.
    #[error("the assertion has expired")]
    Expired,
    /// `IssueInstant` is older than the allowed age or in the future.
    #[error("the response was issued too long ago or in the future")]
    IssueInstant,
    /// A timestamp is not a valid xs:dateTime.
    #[error("a timestamp is not valid")]
    BadTimestamp,
}

/// The message is not for this SP or not from the trusted IdP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartyError {
    /// The Issuer is not the configured IdP entity ID.
    #[error("the issuer is not the trusted IdP")]
    Issuer,
    /// The Response's Destination is not this SP's ACS URL.
    #[error("the destination is not this service's ACS URL")]
    Destination,
    /// The SubjectConfirmationData Recipient is not this SP's ACS URL.
    #[error("the recipient is not this service's ACS URL")]
    Recipient,
    /// No AudienceRestriction names this SP's entity ID.
    #[error("the audience does not include this service")]
    Audience,
}

/// The subject or its confirmation is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// No NameID in the Subject, or an empty one.
    #[error("the assertion has no usable subject NameID")]
    NameIdMissing,
    /// No bearer SubjectConfirmation.
    #[error("the assertion has no bearer subject confirmation")]
    NoBearerConfirmation,
}

/// The response does not answer the request this browser made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// `InResponseTo` names no request pending for this browser.
    #[error("the response answers a request this browser did not make")]
    UnknownInResponseTo,
    /// The response has no `InResponseTo` and unsolicited responses are off.
    #[error("unsolicited responses are not accepted")]
    Unsolicited,
}

/// The IdP answered with a status other than Success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the identity provider answered {code}{}", sub_code.as_deref().map(|s| format!(" / {s}")).unwrap_or_default())]
pub struct StatusError {
    /// The top-level StatusCode value.
    pub code: String,
    /// The nested StatusCode value, when present.
    pub sub_code: Option<String>,
    /// The StatusMessage, when present.
    pub message: Option<String>,
}

/// Every way a SAML Response can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Decoding or parsing failed.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The message's structure is refused.
    #[error(transparent)]
    Structure(#[from] StructureError),
    /// The signature is missing, refused or invalid.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A time condition failed.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// Issuer, Destination, Recipient or Audience mismatch.
    #[error(transparent)]
    Party(#[from] PartyError),
    /// The subject is unusable.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// The response does not match a pending request.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The IdP's status is not Success.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The IdP signed the user in with a method (AuthnContextClassRef) that is not accepted.
    #[error("the identity provider signed the user in with a method this service does not accept")]
    AuthnContext {
        /// The AuthnContextClassRef of the signed assertion, when it has one.
        found: Option<String>,
    },
    /// The assertion ID was seen before.
    #[error("the assertion was already used")]
    Replay,
    /// The replay cache could not be consulted, so the login fails closed.
    #[error("the replay cache is unavailable")]
    ReplayCacheUnavailable,
}

impl From<XmlError> for ValidationError {
    fn from(e: XmlError) -> Self {
        ValidationError::Message(MessageError::Xml(e))
    }
}

impl ValidationError {
    /// The stable machine code of this failure, used as the audit `reason`.
    pub fn code(&self) -> &'static str {
        use ValidationError as V;
        match self {
            V::Message(m) => match m {
                MessageError::TooLarge => "message_too_large",
                MessageError::Base64 => "base64_invalid",
                MessageError::NotUtf8 => "encoding_invalid",
                MessageError::Inflate => "inflate_failed",
                MessageError::Xml(x) => match x {
                    XmlError::Malformed => "xml_malformed",
                    XmlError::Doctype => "xml_doctype",
                    XmlError::Encoding => "xml_encoding",
                    XmlError::ProcessingInstruction => "xml_processing_instruction",
                    XmlError::Root => "xml_root",
                    XmlError::TooLarge => "xml_too_large",
                    XmlError::UnboundPrefix => "xml_unbound_prefix",
                    XmlError::UnknownEntity => "xml_entity",
                },
                MessageError::NotAResponse => "not_a_response",
                MessageError::MissingField => "required_field_missing",
                MessageError::WrongMessage => "wrong_message_type",
            },
            V::Structure(s) => match s {
                StructureError::AssertionMissing => "assertion_missing",
                StructureError::MultipleAssertions => "multiple_assertions",
                StructureError::AssertionMisplaced => "assertion_misplaced",
                StructureError::EncryptedAssertion => "encrypted_assertion_unsupported",
                StructureError::Decryption => "decryption_failed",
                StructureError::DuplicateId => "duplicate_id",
            },
            V::Signature(s) => match s {
                SignatureError::Missing => "signature_missing",
                SignatureError::Misplaced => "signature_misplaced",
                SignatureError::Malformed => "signature_malformed",
                SignatureError::Reference => "signature_reference_invalid",
                SignatureError::Transform => "signature_transform_refused",
                SignatureError::Algorithm => "signature_algorithm_refused",
                SignatureError::KeyInfo => "signature_key_info_refused",
                SignatureError::Invalid => "signature_invalid",
                SignatureError::NotCovered => "signature_not_covering_assertion",
            },
            V::Time(t) => match t {
                TimeError::NotYetValid => "assertion_not_yet_valid",
                TimeError::Expired => "assertion_expired",
                TimeError::IssueInstant => "issue_instant_invalid",
                TimeError::BadTimestamp => "timestamp_invalid",
            },
            V::Party(p) => match p {
                PartyError::Issuer => "issuer_mismatch",
                PartyError::Destination => "destination_mismatch",
                PartyError::Recipient => "recipient_mismatch",
                PartyError::Audience => "audience_mismatch",
            },
            V::Subject(s) => match s {
                SubjectError::NameIdMissing => "name_id_missing",
                SubjectError::NoBearerConfirmation => "subject_confirmation_invalid",
            },
            V::Request(r) => match r {
                RequestError::UnknownInResponseTo => "unknown_in_response_to",
                RequestError::Unsolicited => "unsolicited_response",
            },
            V::Status(_) => "status_not_success",
            V::AuthnContext { .. } => "authn_context_mismatch",
            V::Replay => "assertion_replayed",
            V::ReplayCacheUnavailable => "replay_cache_unavailable",
        }
    }
}
