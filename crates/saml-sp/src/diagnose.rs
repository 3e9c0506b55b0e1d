//! What a Response says next to what the SP expects: for login traces and `decode`, so that
//! an administrator sees which value differs (Audience, Destination, Issuer, the certificate
//! that signed, the clock difference) instead of only a reason code.
//!
//! Everything here is read from the document as received, **before and apart from** the
//! signature check: it explains a verdict, it never makes one. Nothing a session is made from
//! comes from here (see [`crate::response`]). [`redact`] prepares the document itself for a
//! trace file: signature values, certificates (shown as fingerprints) and ciphertexts are
//! replaced, and attribute values unless the caller keeps them.

use chrono::{DateTime, Utc};
use quick_xml::events::{BytesText, Event};
use quick_xml::{Reader, Writer};
use samael::crypto::CertificateDer;
use serde::Serialize;

use crate::metadata::certificate_fingerprint;
use crate::xml::{self, Element};
use crate::{DS_NS, SAMLP_NS, SAML_NS};

/// What the SP expects of a Response.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The IdP entity ID (Issuer).
    pub issuer: &'a str,
    /// The ACS URL (Destination, Recipient).
    pub acs_url: &'a str,
    /// The SP entity ID (Audience).
    pub audience: &'a str,
    /// The pending request's ID, when one is known.
    pub in_response_to: Option<&'a str>,
    /// The trusted signing certificates.
    pub trusted: &'a [CertificateDer],
    /// The SP's clock.
    pub now: DateTime<Utc>,
}

/// One compared value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// What the SP expects.
    pub expected: Option<String>,
    /// What the document has (`None`: absent).
    pub received: Option<String>,
    /// Whether they agree.
    pub ok: bool,
}

impl Check {
    fn equal(expected: Option<&str>, received: Option<&str>) -> Check {
        Check {
            ok: expected == received,
            expected: expected.map(str::to_string),
            received: received.map(str::to_string),
        }
    }
}

/// A signature found in the document.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SignatureFacts {
    /// The element it stands under (`Response` or `Assertion`).
    pub on: String,
    /// Its SignatureMethod.
    pub algorithm: Option<String>,
    /// SHA-256 fingerprint of the certificate in its KeyInfo, if any (never used to verify).
    pub key_info_certificate: Option<String>,
    /// Whether that certificate is one of the trusted ones.
    pub key_info_certificate_trusted: Option<bool>,
}

/// The times of the document against the SP's clock.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Clock {
    /// The SP's clock.
    pub now: String,
    /// The Response's IssueInstant.
    pub issue_instant: Option<String>,
    /// SP clock minus IssueInstant, in seconds (positive: the response is that old; negative:
    /// the IdP's clock is ahead).
    pub age_seconds: Option<i64>,
    /// Conditions NotBefore.
    pub not_before: Option<String>,
    /// Conditions NotOnOrAfter.
    pub not_on_or_after: Option<String>,
}

/// The comparison of a Response with the expectations.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Diagnosis {
    /// Whether the document parsed at all (the other fields are empty when not).
    pub parsed: bool,
    /// Response Issuer.
    pub issuer: Check,
    /// Response Destination.
    pub destination: Check,
    /// SubjectConfirmationData Recipient.
    pub recipient: Check,
    /// Audiences: expected is the SP entity ID, received all of them joined by `, `.
    pub audience: Check,
    /// Response InResponseTo.
    pub in_response_to: Check,
    /// Top-level status code.
    pub status: Option<String>,
    /// Whether the assertion is encrypted (then the assertion's fields are not shown).
    pub encrypted_assertion: bool,
    /// Signatures found.
    pub signatures: Vec<SignatureFacts>,
    /// Fingerprints of the trusted certificates.
    pub trusted_certificates: Vec<String>,
    /// Times.
    pub clock: Clock,
    /// Attribute Names and how many values each has.
    pub attributes: Vec<(String, usize)>,
}

fn text_of(e: Option<&Element>) -> Option<String> {
    e.map(|e| e.text().trim().to_string())
}

/// Compares the Response `xml` with `expect`.
pub fn diagnose(xml: &str, expect: &Expectations<'_>) -> Diagnosis {
    let trusted_certificates: Vec<String> = expect
        .trusted
        .iter()
        .map(|c| certificate_fingerprint(c.der_data()))
        .collect();
    let root = xml::parse(xml).ok();
    let root = root.as_ref();
    let assertion = root.and_then(|r| r.only_child(SAML_NS, "Assertion"));
    let issuer = text_of(root.and_then(|r| r.only_child(SAML_NS, "Issuer")))
        .or_else(|| text_of(assertion.and_then(|a| a.only_child(SAML_NS, "Issuer"))));
    let confirmation = assertion
        .and_then(|a| a.only_child(SAML_NS, "Subject"))
        .and_then(|s| s.only_child(SAML_NS, "SubjectConfirmation"))
        .and_then(|c| c.only_child(SAML_NS, "SubjectConfirmationData"));
    let conditions = assertion.and_then(|a| a.only_child(SAML_NS, "Conditions"));
    let audiences: Vec<String> = conditions
        .map(|c| {
            c.children_named(SAML_NS, "AudienceRestriction")
                .flat_map(|r| r.children_named(SAML_NS, "Audience"))
                .map(|a| a.text().trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut signatures = Vec::new();
    for element in [root, assertion].into_iter().flatten() {
        if let Some(sig) = element.only_child(DS_NS, "Signature") {
            let cert = sig
                .only_child(DS_NS, "KeyInfo")
                .and_then(|k| k.only_child(DS_NS, "X509Data"))
                .and_then(|d| d.only_child(DS_NS, "X509Certificate"))
                .and_then(|c| {
                    use base64::Engine;
                    let compact: String = c.text().chars().filter(|c| !c.is_whitespace()).collect();
                    base64::engine::general_purpose::STANDARD
                        .decode(compact)
                        .ok()
                })
                .map(|der| certificate_fingerprint(&der));
            signatures.push(SignatureFacts {
                on: element.name.clone(),
                algorithm: sig
                    .only_child(DS_NS, "SignedInfo")
                    .and_then(|i| i.only_child(DS_NS, "SignatureMethod"))
                    .and_then(|m| m.attr("Algorithm"))
                    .map(str::to_string),
                key_info_certificate_trusted: cert
                    .as_ref()
                    .map(|c| trusted_certificates.contains(c)),
                key_info_certificate: cert,
            });
        }
    }
    let issue_instant = root
        .and_then(|r| r.attr("IssueInstant"))
        .map(str::to_string);
    let age_seconds = issue_instant
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| (expect.now - t.with_timezone(&Utc)).num_seconds());
    Diagnosis {
        parsed: root.is_some(),
        issuer: Check::equal(Some(expect.issuer), issuer.as_deref()),
        destination: Check::equal(
            Some(expect.acs_url),
            root.and_then(|r| r.attr("Destination")),
        ),
        recipient: Check::equal(
            Some(expect.acs_url),
            confirmation.and_then(|c| c.attr("Recipient")),
        ),
        audience: Check {
            ok: audiences.iter().any(|a| a == expect.audience),
            expected: Some(expect.audience.to_string()),
            received: (!audiences.is_empty()).then(|| audiences.join(", ")),
        },
        in_response_to: Check::equal(
            expect.in_response_to,
            root.and_then(|r| r.attr("InResponseTo")),
        ),
        status: root
            .and_then(|r| r.only_child(SAMLP_NS, "Status"))
            .and_then(|s| s.only_child(SAMLP_NS, "StatusCode"))
            .and_then(|c| c.attr("Value"))
            .map(str::to_string),
        encrypted_assertion: root
            .is_some_and(|r| r.only_child(SAML_NS, "EncryptedAssertion").is_some()),
        signatures,
        trusted_certificates,
        clock: Clock {
            now: expect.now.to_rfc3339(),
            issue_instant,
            age_seconds,
            not_before: conditions
                .and_then(|c| c.attr("NotBefore"))
                .map(str::to_string),
            not_on_or_after: conditions
                .and_then(|c| c.attr("NotOnOrAfter"))
                .map(str::to_string),
        },
        attributes: assertion
            .map(|a| {
                a.children_named(SAML_NS, "AttributeStatement")
                    .flat_map(|s| s.children_named(SAML_NS, "Attribute"))
                    .map(|at| {
                        (
                            at.attr("Name").unwrap_or_default().to_string(),
                            at.children_named(SAML_NS, "AttributeValue").count(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The document with signature values, certificates, ciphertexts and (unless
/// `keep_attribute_values`) attribute values replaced by placeholders; `None` when it does not
/// parse as XML.
pub fn redact(xml: &str, keep_attribute_values: bool) -> Option<String> {
    let mut reader = Reader::from_str(xml);
    let mut writer = Writer::new(Vec::new());
    // While inside an element whose content is replaced: its depth and placeholder. Nothing
    // is written until the depth is back at that element's own end tag.
    let mut hiding: Option<(usize, &'static str)> = None;
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().ok()?;
        match &event {
            Event::Start(start) => {
                depth += 1;
                if hiding.is_some() {
                    continue;
                }
                let local = start.local_name().into_inner().to_string();
                let placeholder = match local.as_str() {
                    "SignatureValue" | "CipherValue" => Some("[redacted]"),
                    "X509Certificate" => Some("[certificate]"),
                    "AttributeValue" if !keep_attribute_values => Some("[value]"),
                    _ => None,
                };
                writer.write_event(event.borrow()).ok()?;
                hiding = placeholder.map(|p| (depth, p));
                continue;
            }
            Event::End(_) => {
                let closing = depth;
                depth = depth.checked_sub(1)?;
                match hiding {
                    Some((level, placeholder)) if level == closing => {
                        writer
                            .write_event(Event::Text(BytesText::new(placeholder)))
                            .ok()?;
                        hiding = None;
                    }
                    Some(_) => continue,
                    None => {}
                }
            }
            Event::Eof => break,
            _ if hiding.is_some() => continue,
            _ => {}
        }
        writer.write_event(event.borrow()).ok()?;
    }
    String::from_utf8(writer.into_inner()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &str = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r" IssueInstant="2026-12-03T10:00:00Z" Destination="https://sp/acs" InResponseTo="_q"><saml:Issuer>https://idp</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status><saml:Assertion ID="_a"><saml:Issuer>https://idp</saml:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/></ds:SignedInfo><ds:SignatureValue>c2VjcmV0</ds:SignatureValue></ds:Signature><saml:Subject><saml:NameID>alice</saml:NameID><saml:SubjectConfirmation><saml:SubjectConfirmationData Recipient="https://sp/acs"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="2026-12-03T09:59:00Z"><saml:AudienceRestriction><saml:Audience>https://other</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AttributeStatement><saml:Attribute Name="mail"><saml:AttributeValue>alice@example.com</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion></samlp:Response>"#;

    #[test]
    fn names_what_differs() {
        let now: DateTime<Utc> = "2026-12-03T10:02:00Z".parse().unwrap();
        let d = diagnose(
            RESPONSE,
            &Expectations {
                issuer: "https://idp",
                acs_url: "https://sp/acs",
                audience: "https://sp/metadata",
                in_response_to: Some("_q"),
                trusted: &[],
                now,
            },
        );
        assert!(d.parsed && d.issuer.ok && d.destination.ok && d.recipient.ok);
        assert!(d.in_response_to.ok);
        assert!(!d.audience.ok);
        assert_eq!(d.audience.received.as_deref(), Some("https://other"));
        assert_eq!(d.clock.age_seconds, Some(120));
        assert_eq!(d.signatures.len(), 1);
        assert_eq!(d.signatures[0].on, "Assertion");
        assert_eq!(d.attributes, [("mail".to_string(), 1)]);
        let junk = diagnose("not xml", &Expectations { now, ..d_expect() });
        assert!(!junk.parsed && !junk.issuer.ok);
    }

    fn d_expect() -> Expectations<'static> {
        Expectations {
            issuer: "https://idp",
            acs_url: "https://sp/acs",
            audience: "https://sp/metadata",
            in_response_to: None,
            trusted: &[],
            now: Utc::now(),
        }
    }

    #[test]
    fn redaction_hides_signature_values_and_attribute_values() {
        let hidden = redact(RESPONSE, false).unwrap();
        assert!(!hidden.contains("c2VjcmV0") && !hidden.contains("alice@example.com"));
        assert!(hidden.contains("<ds:SignatureValue>[redacted]</ds:SignatureValue>"));
        assert!(hidden.contains("<saml:AttributeValue>[value]</saml:AttributeValue>"));
        assert!(hidden.contains("<saml:NameID>alice</saml:NameID>"));
        let kept = redact(RESPONSE, true).unwrap();
        assert!(kept.contains("alice@example.com") && !kept.contains("c2VjcmV0"));
        assert!(redact("<a><b></a>", false).is_none());
        // Nested elements, prefixes and CDATA inside a hidden element stay hidden.
        let tricky = r#"<a xmlns:x="urn:x"><AttributeValue><x:AttributeValue q="SECRET1">a</x:AttributeValue>SECRET2<![CDATA[SECRET3]]><NameID NameQualifier="SECRET4"/></AttributeValue><CipherValue>SECRET5</CipherValue><X509Certificate>SECRET6</X509Certificate><b>shown</b></a>"#;
        let hidden = redact(tricky, false).unwrap();
        assert!(!hidden.contains("SECRET"), "{hidden}");
        assert!(
            hidden.contains("<AttributeValue>[value]</AttributeValue>"),
            "{hidden}"
        );
        assert!(
            hidden.contains("<CipherValue>[redacted]</CipherValue>"),
            "{hidden}"
        );
        assert!(hidden.contains("<b>shown</b>"), "{hidden}");
        assert!(crate::xml::parse(&hidden).is_ok(), "{hidden}");
    }
}
