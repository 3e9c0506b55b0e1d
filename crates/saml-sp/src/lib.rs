//! SAML 2.0 Service Provider protocol, without HTTP server or sessions.
//!
//! - [`metadata`]: read the IdP's metadata, write this SP's.
//! - [`authn_request`]: the AuthnRequest that starts a login.
//! - [`bindings`]: HTTP-Redirect encoding (DEFLATE, base64, query signature).
//! - [`diagnose`]: what a Response says next to what the SP expects (for traces).
//! - [`encryption`]: decryption of an `EncryptedAssertion` with the SP's keys.
//! - [`logout`]: Single Logout messages, sent and received.
//! - [`response`]: validate a posted Response and return a verified [`response::Assertion`].
//! - [`signature`]: the accepted XML-signature shape and the xmlsec verification.
//! - [`xml`]: the strict XML tree every message is parsed into.
//! - [`error`]: typed failures with stable reason codes.
//!
//! Nothing here does I/O: the caller passes the clock, the pending request and a replay cache.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod authn_request;
pub mod bindings;
pub mod diagnose;
pub mod encryption;
pub mod error;
pub mod logout;
pub mod metadata;
pub mod response;
pub mod signature;
pub mod xml;

#[cfg(test)]
mod test_support;

pub use error::ValidationError;
pub use response::{Assertion, ReplayCache, ResponseValidator};
pub use samael::crypto::CertificateDer;

/// SAML 2.0 protocol namespace.
pub const SAMLP_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML 2.0 assertion namespace.
pub const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// SAML 2.0 metadata namespace.
pub const MD_NS: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// XML Signature namespace.
pub const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The `xml:` namespace.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
