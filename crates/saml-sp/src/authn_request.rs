//! The AuthnRequest this SP sends to start a login (HTTP-Redirect binding).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::xml::escape;
use crate::{SAMLP_NS, SAML_NS};

/// Random IDs could not be drawn from the operating system.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Returns a fresh message ID: `_` and 40 hex digits (160 random bits), a valid xs:ID.
pub fn new_message_id() -> Result<String, RandomError> {
    let mut bytes = [0u8; 20];
    openssl::rand::rand_bytes(&mut bytes).map_err(|_| RandomError)?;
    let mut id = String::with_capacity(41);
    id.push('_');
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

/// What goes into an AuthnRequest.
#[derive(Debug, Clone)]
pub struct AuthnRequest {
    /// The request ID, later expected as InResponseTo.
    pub id: String,
    /// When the request was made.
    pub issue_instant: DateTime<Utc>,
    /// The IdP's SSO endpoint the request is sent to.
    pub destination: String,
    /// This SP's entity ID.
    pub issuer: String,
    /// Where the IdP must POST the response.
    pub acs_url: String,
    /// A NameIDPolicy Format to ask for; `None` sends no format (what most IdPs want).
    pub name_id_format: Option<String>,
    /// Ask the IdP to authenticate the user again.
    pub force_authn: bool,
    /// AuthnContextClassRefs to require (Comparison `exact`); empty sends no
    /// RequestedAuthnContext, which is what most IdPs want (Entra answers AADSTS75011 when the
    /// user signed in another way than the one requested).
    pub authn_context: Vec<String>,
}

impl AuthnRequest {
    /// Serializes the request.
    pub fn to_xml(&self) -> String {
        let instant = self
            .issue_instant
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let force = if self.force_authn {
            " ForceAuthn=\"true\""
        } else {
            ""
        };
        let policy = match &self.name_id_format {
            Some(f) => format!(
                "<samlp:NameIDPolicy Format=\"{}\" AllowCreate=\"true\"/>",
                escape(f)
            ),
            None => "<samlp:NameIDPolicy AllowCreate=\"true\"/>".to_string(),
        };
        let context = if self.authn_context.is_empty() {
            String::new()
        } else {
            let refs: String = self
                .authn_context
                .iter()
                .map(|c| {
                    format!(
                        "<saml:AuthnContextClassRef>{}</saml:AuthnContextClassRef>",
                        escape(c)
                    )
                })
                .collect();
            format!("<samlp:RequestedAuthnContext Comparison=\"exact\">{refs}</samlp:RequestedAuthnContext>")
        };
        format!(
            "<samlp:AuthnRequest xmlns:samlp=\"{SAMLP_NS}\" xmlns:saml=\"{SAML_NS}\" ID=\"{}\" \
             Version=\"2.0\" IssueInstant=\"{instant}\" Destination=\"{}\" \
             AssertionConsumerServiceURL=\"{}\" \
             ProtocolBinding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\"{force}>\
             <saml:Issuer>{}</saml:Issuer>{policy}{context}</samlp:AuthnRequest>",
            escape(&self.id),
            escape(&self.destination),
            escape(&self.acs_url),
            escape(&self.issuer),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_random_ncnames() {
        let a = new_message_id().unwrap();
        let b = new_message_id().unwrap();
        assert_eq!(a.len(), 41);
        assert!(a.starts_with('_'));
        assert_ne!(a, b);
    }

    #[test]
    fn request_xml_parses_and_carries_fields() {
        let request = AuthnRequest {
            id: "_abc".into(),
            issue_instant: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            destination: "https://idp/sso".into(),
            issuer: "https://sp/<x>".into(),
            acs_url: "https://sp/saml/acs".into(),
            name_id_format: None,
            force_authn: false,
            authn_context: Vec::new(),
        };
        let root = crate::xml::parse(&request.to_xml()).unwrap();
        assert!(root.only_child(SAMLP_NS, "RequestedAuthnContext").is_none());
        let with_context = AuthnRequest {
            authn_context: vec!["urn:oasis:names:tc:SAML:2.0:ac:classes:X509".into()],
            ..request.clone()
        };
        let context = crate::xml::parse(&with_context.to_xml()).unwrap();
        let requested = context
            .only_child(SAMLP_NS, "RequestedAuthnContext")
            .unwrap();
        assert_eq!(requested.attr("Comparison"), Some("exact"));
        assert_eq!(
            requested
                .only_child(SAML_NS, "AuthnContextClassRef")
                .unwrap()
                .text(),
            "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
        );
        assert!(root.is(SAMLP_NS, "AuthnRequest"));
        assert_eq!(root.attr("IssueInstant"), Some("2023-11-14T22:13:20Z"));
        assert_eq!(
            root.only_child(SAML_NS, "Issuer").unwrap().text(),
            "https://sp/<x>"
        );
    }
}
