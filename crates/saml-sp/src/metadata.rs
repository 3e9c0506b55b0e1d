//! SAML metadata: reading the IdP's `EntityDescriptor` and writing this SP's.

use base64::Engine;
use chrono::{DateTime, Utc};
use openssl::x509::X509;
use samael::crypto::CertificateDer;

use crate::error::SignatureError;
use crate::signature::{self, AlgorithmPolicy};
use crate::xml::{self, escape, Element, XmlError};
use crate::{DS_NS, MD_NS};

/// The HTTP-Redirect binding URI.
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// The HTTP-POST binding URI.
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Why IdP metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The XML was refused by the strict parser.
    #[error("the metadata is not acceptable XML: {0}")]
    Xml(#[from] XmlError),
    /// No EntityDescriptor with an IDPSSODescriptor (and the wanted entity ID) was found.
    #[error("the metadata has no identity provider entity{}", .0.as_deref().map(|e| format!(" with entityID {e}")).unwrap_or_default())]
    NoIdp(Option<String>),
    /// Several IdP entities and no entity ID to choose one.
    #[error(
        "the metadata describes several identity providers; set the IdP entity ID to pick one"
    )]
    AmbiguousIdp,
    /// A certificate in a signing KeyDescriptor does not decode.
    #[error("a signing certificate in the metadata is not a valid X.509 certificate")]
    BadCertificate,
    /// The IdP publishes no signing certificate; responses could not be verified.
    #[error("the metadata has no signing certificate for the identity provider")]
    NoSigningCertificate,
    /// The IdP has no SingleSignOnService for a binding this SP speaks.
    #[error("the metadata has no SingleSignOnService with the HTTP-Redirect or HTTP-POST binding")]
    NoSsoEndpoint,
    /// A metadata signing certificate is configured and the document carries no signature.
    #[error("the metadata is not signed, and a metadata signing certificate is configured")]
    Unsigned,
    /// The document's signature is malformed or does not verify with the configured
    /// metadata signing certificate.
    #[error("the metadata signature was refused: {0}")]
    Signature(SignatureError),
    /// `validUntil` has passed: the publisher says the document must no longer be used.
    #[error("the metadata expired at {0} (its validUntil)")]
    Expired(String),
    /// A `validUntil` or `cacheDuration` value does not parse.
    #[error("the metadata has an unreadable {0}")]
    BadValidity(&'static str),
}

/// How a message is sent to an IdP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// HTTP-Redirect: DEFLATE and base64 in the URL query, signed over the query string.
    Redirect,
    /// HTTP-POST: base64 in a form the browser posts, signed by an enveloped XML signature.
    Post,
}

impl Binding {
    /// The binding's URI.
    pub fn uri(self) -> &'static str {
        match self {
            Binding::Redirect => BINDING_REDIRECT,
            Binding::Post => BINDING_POST,
        }
    }
}

/// An IdP endpoint: where, and by which binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The binding (HTTP-Redirect when the IdP offers it, else HTTP-POST).
    pub binding: Binding,
    /// The endpoint's `Location`.
    pub location: String,
    /// Where responses go: its `ResponseLocation`, else its `Location`.
    pub response_location: String,
}

/// What this SP needs to know about the IdP, from its metadata.
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    /// The IdP's entity ID.
    pub entity_id: String,
    /// Certificates that may sign responses (DER); all of them are trusted at once.
    pub signing_certificates: Vec<CertificateDer>,
    /// The SingleSignOnService that AuthnRequests go to.
    pub sso: Endpoint,
    /// The SingleLogoutService that LogoutRequests (and our LogoutResponses) go to, when
    /// published.
    pub slo: Option<Endpoint>,
    /// `WantAuthnRequestsSigned` of the IDPSSODescriptor.
    pub want_authn_requests_signed: bool,
    /// The earliest `validUntil` of the entity and its enclosing document, if any.
    pub valid_until: Option<DateTime<Utc>>,
    /// The shortest `cacheDuration` of the entity and its enclosing document, if any: how long
    /// the publisher wants a copy kept before it is fetched again.
    pub cache_duration: Option<std::time::Duration>,
}

/// Parses IdP metadata that must carry a signature, on its root element, by one of `trusted`
/// (the configured metadata signing certificates); the IdP is read from the verified content
/// only. `now` is compared with `validUntil`.
pub fn parse_signed_idp_metadata(
    text: &str,
    entity_id: Option<&str>,
    trusted: &[CertificateDer],
    now: DateTime<Utc>,
) -> Result<IdpMetadata, MetadataError> {
    let root = xml::parse(text)?;
    if xml::has_duplicate_ids(&root) {
        return Err(MetadataError::Signature(SignatureError::Reference));
    }
    let sig = root
        .only_child(DS_NS, "Signature")
        .ok_or(MetadataError::Unsigned)?;
    let signed_id = root
        .attr("ID")
        .ok_or(MetadataError::Signature(SignatureError::Reference))?;
    signature::check_shape(sig, signed_id, AlgorithmPolicy::default())
        .map_err(MetadataError::Signature)?;
    // One signature, on the root: a signature elsewhere could make the verified content
    // something other than the document that is read.
    let signatures = root
        .descendants()
        .into_iter()
        .filter(|e| e.is(DS_NS, "Signature"))
        .count();
    if signatures != 1 {
        return Err(MetadataError::Signature(SignatureError::Misplaced));
    }
    let verified = signature::verify_and_reduce(text, trusted, AlgorithmPolicy::default())
        .map_err(MetadataError::Signature)?;
    let verified_root = xml::parse(&verified)?;
    if verified_root.name != root.name || verified_root.attr("ID") != Some(signed_id) {
        return Err(MetadataError::Signature(SignatureError::NotCovered));
    }
    idp_from_root(&verified_root, entity_id, now)
}

/// Parses IdP metadata and refuses it once its `validUntil` has passed at `now`.
pub fn parse_current_idp_metadata(
    text: &str,
    entity_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<IdpMetadata, MetadataError> {
    idp_from_root(&xml::parse(text)?, entity_id, now)
}

fn idp_from_root(
    root: &Element,
    entity_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<IdpMetadata, MetadataError> {
    let metadata = read_idp(root, entity_id)?;
    if let Some(until) = metadata.valid_until {
        if until <= now {
            return Err(MetadataError::Expired(until.to_rfc3339()));
        }
    }
    Ok(metadata)
}

/// Parses IdP metadata; `entity_id` picks one entity out of an aggregate. `validUntil` is read
/// but not enforced (see [`parse_current_idp_metadata`]).
pub fn parse_idp_metadata(
    text: &str,
    entity_id: Option<&str>,
) -> Result<IdpMetadata, MetadataError> {
    read_idp(&xml::parse(text)?, entity_id)
}

fn read_idp(root: &Element, entity_id: Option<&str>) -> Result<IdpMetadata, MetadataError> {
    let mut candidates: Vec<&Element> = root
        .descendants()
        .into_iter()
        .filter(|e| e.is(MD_NS, "EntityDescriptor"))
        .filter(|e| e.only_child(MD_NS, "IDPSSODescriptor").is_some())
        .filter(|e| entity_id.is_none_or(|want| e.attr("entityID") == Some(want)))
        .collect();
    let entity = match candidates.len() {
        0 => return Err(MetadataError::NoIdp(entity_id.map(str::to_string))),
        1 => candidates.remove(0),
        _ => return Err(MetadataError::AmbiguousIdp),
    };
    let descriptor = entity
        .only_child(MD_NS, "IDPSSODescriptor")
        .ok_or(MetadataError::NoIdp(None))?;

    let mut signing_certificates = Vec::new();
    for key in descriptor.children_named(MD_NS, "KeyDescriptor") {
        if !matches!(key.attr("use"), None | Some("signing")) {
            continue;
        }
        for key_info in key.children_named(DS_NS, "KeyInfo") {
            for data in key_info.children_named(DS_NS, "X509Data") {
                for cert in data.children_named(DS_NS, "X509Certificate") {
                    let der = decode_certificate(&cert.text())?;
                    if !signing_certificates.contains(&der) {
                        signing_certificates.push(der);
                    }
                }
            }
        }
    }
    if signing_certificates.is_empty() {
        return Err(MetadataError::NoSigningCertificate);
    }
    // HTTP-Redirect when offered (no form page, no XML signature to make), else HTTP-POST.
    let endpoint = |name: &str| {
        [Binding::Redirect, Binding::Post]
            .into_iter()
            .find_map(|binding| {
                let e = descriptor
                    .children_named(MD_NS, name)
                    .find(|e| e.attr("Binding") == Some(binding.uri()))?;
                let location = e.attr("Location")?.to_string();
                Some(Endpoint {
                    binding,
                    response_location: e.attr("ResponseLocation").unwrap_or(&location).to_string(),
                    location,
                })
            })
    };
    // The entity's own validity and that of the document around it (an aggregate's root).
    let holders: Vec<&Element> = if std::ptr::eq(entity, root) {
        vec![entity]
    } else {
        vec![root, entity]
    };
    let mut valid_until: Option<DateTime<Utc>> = None;
    let mut cache_duration: Option<std::time::Duration> = None;
    for holder in holders {
        if let Some(text) = holder.attr("validUntil") {
            let t = DateTime::parse_from_rfc3339(text.trim())
                .map_err(|_| MetadataError::BadValidity("validUntil"))?
                .with_timezone(&Utc);
            valid_until = Some(valid_until.map_or(t, |v| v.min(t)));
        }
        if let Some(text) = holder.attr("cacheDuration") {
            let d = parse_xs_duration(text).ok_or(MetadataError::BadValidity("cacheDuration"))?;
            cache_duration = Some(cache_duration.map_or(d, |c| c.min(d)));
        }
    }
    Ok(IdpMetadata {
        valid_until,
        cache_duration,
        entity_id: entity.attr("entityID").unwrap_or_default().to_string(),
        signing_certificates,
        sso: endpoint("SingleSignOnService").ok_or(MetadataError::NoSsoEndpoint)?,
        slo: endpoint("SingleLogoutService"),
        want_authn_requests_signed: descriptor.attr("WantAuthnRequestsSigned") == Some("true"),
    })
}

/// Parses an `xs:duration` such as `PT6H` or `P1DT30M` (years and months count as 365 and 30
/// days; negative durations are refused).
pub fn parse_xs_duration(text: &str) -> Option<std::time::Duration> {
    let rest = text.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    fn fields(part: &str, units: &[(char, f64)]) -> Option<f64> {
        let mut total = 0.0;
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let index = units[next_unit..].iter().position(|(u, _)| *u == c)? + next_unit;
            let value: f64 = number.parse().ok()?;
            total += value * units[index].1;
            number.clear();
            next_unit = index + 1;
        }
        number.is_empty().then_some(total)
    }
    let day = 86_400.0;
    let mut seconds = fields(date, &[('Y', 365.0 * day), ('M', 30.0 * day), ('D', day)])?;
    if let Some(time) = time {
        seconds += fields(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if rest.is_empty() {
        return None;
    }
    // Finite but huge values (P1000000000000Y) do not fit a Duration: refused, not a panic.
    std::time::Duration::try_from_secs_f64(seconds).ok()
}

/// When the certificate (DER) stops being valid, as Unix seconds.
pub fn certificate_not_after(der: &[u8]) -> Option<i64> {
    unix_time(X509::from_der(der).ok()?.not_after())
}

/// An ASN.1 time (a certificate's `notBefore` or `notAfter`) in Unix seconds.
pub fn unix_time(time: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(time).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// The SHA-256 fingerprint of a certificate (DER), as lowercase hex pairs joined by `:`.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn decode_certificate(text: &str) -> Result<CertificateDer, MetadataError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| MetadataError::BadCertificate)?;
    X509::from_der(&der).map_err(|_| MetadataError::BadCertificate)?;
    Ok(CertificateDer::from(der))
}

/// This SP's metadata, as published at `/saml/metadata` for the IdP admin to import.
#[derive(Debug, Clone)]
pub struct SpMetadata {
    /// The SP entity ID.
    pub entity_id: String,
    /// The ACS URL (HTTP-POST binding).
    pub acs_url: String,
    /// The SLO URL (HTTP-Redirect binding), when Single Logout is offered.
    pub slo_url: Option<String>,
    /// Certificates (DER) the SP signs with; two during a key rollover.
    pub signing_certificates: Vec<Vec<u8>>,
    /// Certificates (DER) IdPs encrypt assertions to; empty when the SP takes no encryption.
    pub encryption_certificates: Vec<Vec<u8>>,
    /// Content-encryption algorithm URIs offered with each encryption certificate, preferred
    /// first (IdPs fall back to AES-CBC when the SP lists none).
    pub encryption_methods: Vec<String>,
    /// Whether AuthnRequests are signed.
    pub authn_requests_signed: bool,
    /// NameID formats the SP accepts.
    pub name_id_formats: Vec<String>,
}

impl SpMetadata {
    /// Serializes the `EntityDescriptor`.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        out.push('\n');
        out.push_str(&format!(
            r#"<md:EntityDescriptor xmlns:md="{MD_NS}" xmlns:ds="{DS_NS}" entityID="{}">"#,
            escape(&self.entity_id)
        ));
        out.push_str(&format!(
            "\n  <md:SPSSODescriptor AuthnRequestsSigned=\"{}\" WantAssertionsSigned=\"true\" \
             protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">",
            self.authn_requests_signed
        ));
        for der in &self.signing_certificates {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            out.push_str(&format!(
                "\n    <md:KeyDescriptor use=\"signing\"><ds:KeyInfo><ds:X509Data>\
                 <ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>\
                 </md:KeyDescriptor>"
            ));
        }
        for der in &self.encryption_certificates {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            out.push_str(&format!(
                "\n    <md:KeyDescriptor use=\"encryption\"><ds:KeyInfo><ds:X509Data>\
                 <ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
            ));
            for method in &self.encryption_methods {
                out.push_str(&format!(
                    "<md:EncryptionMethod Algorithm=\"{}\"/>",
                    escape(method)
                ));
            }
            out.push_str("</md:KeyDescriptor>");
        }
        if let Some(slo) = &self.slo_url {
            for binding in [BINDING_REDIRECT, BINDING_POST] {
                out.push_str(&format!(
                    "\n    <md:SingleLogoutService Binding=\"{binding}\" Location=\"{}\"/>",
                    escape(slo)
                ));
            }
        }
        for format in &self.name_id_formats {
            out.push_str(&format!(
                "\n    <md:NameIDFormat>{}</md:NameIDFormat>",
                escape(format)
            ));
        }
        out.push_str(&format!(
            "\n    <md:AssertionConsumerService Binding=\"{BINDING_POST}\" Location=\"{}\" \
             index=\"0\" isDefault=\"true\"/>",
            escape(&self.acs_url)
        ));
        out.push_str("\n  </md:SPSSODescriptor>\n</md:EntityDescriptor>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_b64() -> String {
        base64::engine::general_purpose::STANDARD.encode(crate::test_support::key_and_cert().1)
    }

    #[test]
    fn reads_idp_metadata_with_bom_and_two_certs() {
        let (a, b) = (cert_b64(), cert_b64());
        let text = format!(
            "\u{feff}<EntityDescriptor xmlns=\"{MD_NS}\" entityID=\"https://idp\"><IDPSSODescriptor \
             WantAuthnRequestsSigned=\"true\">\
             <KeyDescriptor use=\"signing\"><KeyInfo xmlns=\"{DS_NS}\"><X509Data><X509Certificate>{a}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>\
             <KeyDescriptor><KeyInfo xmlns=\"{DS_NS}\"><X509Data><X509Certificate>\n{b}\n</X509Certificate></X509Data></KeyInfo></KeyDescriptor>\
             <KeyDescriptor use=\"encryption\"><KeyInfo xmlns=\"{DS_NS}\"><X509Data><X509Certificate>AAAA</X509Certificate></X509Data></KeyInfo></KeyDescriptor>\
             <SingleSignOnService Binding=\"{BINDING_POST}\" Location=\"https://idp/post\"/>\
             <SingleSignOnService Binding=\"{BINDING_REDIRECT}\" Location=\"https://idp/redirect\"/>\
             </IDPSSODescriptor></EntityDescriptor>"
        );
        let md = parse_idp_metadata(&text, None).unwrap();
        assert_eq!(md.entity_id, "https://idp");
        assert_eq!(md.signing_certificates.len(), 2);
        assert_eq!(
            (md.sso.binding, md.sso.location.as_str()),
            (Binding::Redirect, "https://idp/redirect"),
            "HTTP-Redirect is preferred"
        );
        assert!(md.slo.is_none());
        assert!(md.want_authn_requests_signed);
        // Without a Redirect endpoint, the POST one is used; ResponseLocation is kept apart.
        let post_only = text
            .replace(
                &format!("<SingleSignOnService Binding=\"{BINDING_REDIRECT}\" Location=\"https://idp/redirect\"/>"),
                &format!("<SingleLogoutService Binding=\"{BINDING_POST}\" Location=\"https://idp/slo\" ResponseLocation=\"https://idp/slo-answer\"/>"),
            );
        let md = parse_idp_metadata(&post_only, None).unwrap();
        assert_eq!(
            (md.sso.binding, md.sso.location.as_str()),
            (Binding::Post, "https://idp/post")
        );
        let slo = md.slo.unwrap();
        assert_eq!(
            (
                slo.binding,
                slo.location.as_str(),
                slo.response_location.as_str()
            ),
            (Binding::Post, "https://idp/slo", "https://idp/slo-answer")
        );
        let none = post_only.replace(BINDING_POST, "urn:oasis:names:tc:SAML:2.0:bindings:SOAP");
        assert_eq!(
            parse_idp_metadata(&none, None).unwrap_err(),
            MetadataError::NoSsoEndpoint
        );
        assert_eq!(
            parse_idp_metadata(&text, Some("https://other")).unwrap_err(),
            MetadataError::NoIdp(Some("https://other".into()))
        );
    }

    fn aggregate(root_attrs: &str, entity_attrs: &str) -> String {
        let a = cert_b64();
        format!(
            "<EntitiesDescriptor xmlns=\"{MD_NS}\" {root_attrs}><EntityDescriptor entityID=\"https://idp\" {entity_attrs}>\
             <IDPSSODescriptor><KeyDescriptor><KeyInfo xmlns=\"{DS_NS}\"><X509Data><X509Certificate>{a}</X509Certificate></X509Data></KeyInfo></KeyDescriptor>\
             <SingleSignOnService Binding=\"{BINDING_REDIRECT}\" Location=\"https://idp/redirect\"/>\
             </IDPSSODescriptor></EntityDescriptor></EntitiesDescriptor>"
        )
    }

    #[test]
    fn validity_comes_from_the_entity_and_the_document_around_it() {
        let text = aggregate(
            r#"validUntil="2030-01-01T00:00:00Z" cacheDuration="P1D""#,
            r#"validUntil="2029-06-01T00:00:00Z" cacheDuration="PT6H""#,
        );
        let md = parse_idp_metadata(&text, None).unwrap();
        assert_eq!(
            md.valid_until.unwrap().to_rfc3339(),
            "2029-06-01T00:00:00+00:00"
        );
        assert_eq!(
            md.cache_duration,
            Some(std::time::Duration::from_secs(6 * 3600))
        );
        let before = "2029-05-31T23:59:59Z".parse().unwrap();
        assert!(parse_current_idp_metadata(&text, None, before).is_ok());
        let at = "2029-06-01T00:00:00Z".parse().unwrap();
        assert!(matches!(
            parse_current_idp_metadata(&text, None, at),
            Err(MetadataError::Expired(_))
        ));
        let bad = aggregate(r#"validUntil="soon""#, "");
        assert_eq!(
            parse_idp_metadata(&bad, None).unwrap_err(),
            MetadataError::BadValidity("validUntil")
        );
    }

    #[test]
    fn unsigned_metadata_is_refused_when_a_signer_is_configured() {
        let text = aggregate("ID=\"m1\"", "");
        let trusted = [CertificateDer::from(vec![1, 2, 3])];
        let now = Utc::now();
        assert_eq!(
            parse_signed_idp_metadata(&text, None, &trusted, now).unwrap_err(),
            MetadataError::Unsigned
        );
    }

    #[test]
    fn xs_durations() {
        let secs = |t: &str| parse_xs_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("PT6H"), Some(21_600));
        assert_eq!(secs("P1DT30M"), Some(88_200));
        assert_eq!(secs("PT1.5S").map(|_| ()), Some(()));
        assert_eq!(secs("P1Y"), Some(365 * 86_400));
        for bad in [
            "", "P", "PT", "6H", "-PT6H", "PT6X", "PT6", "PTH", "P1H", "PT1S1M",
        ] {
            assert_eq!(secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn certificate_facts() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(cert_b64())
            .unwrap();
        let not_after = certificate_not_after(&der).unwrap();
        let now = Utc::now().timestamp();
        assert!(not_after > now && not_after < now + 400 * 86_400);
        assert_eq!(certificate_fingerprint(&der).len(), 32 * 3 - 1);
    }

    #[test]
    fn refuses_metadata_without_signing_certificate() {
        let text = format!(
            "<EntityDescriptor xmlns=\"{MD_NS}\" entityID=\"https://idp\"><IDPSSODescriptor>\
             <SingleSignOnService Binding=\"{BINDING_REDIRECT}\" Location=\"https://idp/r\"/>\
             </IDPSSODescriptor></EntityDescriptor>"
        );
        assert_eq!(
            parse_idp_metadata(&text, None).unwrap_err(),
            MetadataError::NoSigningCertificate
        );
    }

    #[test]
    fn sp_metadata_is_parseable_and_escaped() {
        let md = SpMetadata {
            entity_id: "https://sp/?a=1&b=2".into(),
            acs_url: "https://sp/saml/acs".into(),
            slo_url: None,
            signing_certificates: vec![vec![1, 2, 3]],
            encryption_certificates: vec![vec![4, 5, 6]],
            encryption_methods: vec!["http://www.w3.org/2009/xmlenc11#aes256-gcm".into()],
            authn_requests_signed: true,
            name_id_formats: vec![],
        };
        let root = xml::parse(&md.to_xml()).unwrap();
        assert_eq!(root.attr("entityID"), Some("https://sp/?a=1&b=2"));
        let sp = root.only_child(MD_NS, "SPSSODescriptor").unwrap();
        assert_eq!(sp.attr("AuthnRequestsSigned"), Some("true"));
        let uses: Vec<_> = sp
            .children_named(MD_NS, "KeyDescriptor")
            .map(|k| k.attr("use").unwrap())
            .collect();
        assert_eq!(uses, ["signing", "encryption"]);
        let encryption = sp.children_named(MD_NS, "KeyDescriptor").nth(1).unwrap();
        let method = encryption.only_child(MD_NS, "EncryptionMethod").unwrap();
        assert_eq!(
            method.attr("Algorithm"),
            Some("http://www.w3.org/2009/xmlenc11#aes256-gcm")
        );
    }
}
