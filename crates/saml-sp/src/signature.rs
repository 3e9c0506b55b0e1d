//! XML signature checks: the shape we accept, then xmlsec's verdict.
//!
//! Before xmlsec sees a message, [`check_shape`] makes sure each `ds:Signature` is the plain
//! enveloped kind SAML uses: one `SignedInfo`, one `Reference` whose URI is `#` plus the ID of the
//! element that carries the signature, only the enveloped-signature and exclusive-c14n transforms,
//! allowed algorithms, no `ds:Object`, and no key material we would never use. That leaves
//! xmlsec nothing to fetch and nothing to transform. [`verify_and_reduce`] then asks samael (over
//! xmlsec) to verify every signature against the trusted certificates only and to return just the
//! verified content, which is what claims are read from.

use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};

use crate::error::SignatureError;
use crate::xml::Element;
use crate::{DS_NS, SAML_NS};

const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

/// Signature methods accepted by default (SHA-256 or stronger).
const STRONG_SIGNATURES: [&str; 6] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
/// Digest methods accepted by default.
const STRONG_DIGESTS: [&str; 3] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
const SHA1_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const SHA1_DIGEST: &str = "http://www.w3.org/2000/09/xmldsig#sha1";

/// The same default set, in samael's terms, handed to xmlsec as a second line of defence.
const XMLSEC_ALLOWED: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// Which algorithms a signature may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlgorithmPolicy {
    /// Accept RSA-SHA1 signatures and SHA-1 digests (legacy IdPs only).
    pub allow_sha1: bool,
}

impl AlgorithmPolicy {
    fn signature_ok(&self, uri: &str) -> bool {
        STRONG_SIGNATURES.contains(&uri) || (self.allow_sha1 && uri == SHA1_SIGNATURE)
    }

    fn digest_ok(&self, uri: &str) -> bool {
        STRONG_DIGESTS.contains(&uri) || (self.allow_sha1 && uri == SHA1_DIGEST)
    }
}

/// Checks that `signature` (a `ds:Signature` child of the element whose ID is `signed_id`) has the
/// one shape accepted.
pub fn check_shape(
    signature: &Element,
    signed_id: &str,
    policy: AlgorithmPolicy,
) -> Result<(), SignatureError> {
    let mut signed_info = None;
    let mut signature_value = None;
    for child in signature.elements() {
        match (child.ns.as_deref(), child.name.as_str()) {
            (Some(DS_NS), "SignedInfo") if signed_info.is_none() => signed_info = Some(child),
            (Some(DS_NS), "SignatureValue") if signature_value.is_none() => {
                signature_value = Some(child)
            }
            (Some(DS_NS), "KeyInfo") => check_key_info(child)?,
            _ => return Err(SignatureError::Malformed),
        }
    }
    let (Some(signed_info), Some(value)) = (signed_info, signature_value) else {
        return Err(SignatureError::Malformed);
    };
    if value.text().trim().is_empty() || value.has_child_elements() {
        return Err(SignatureError::Malformed);
    }

    let mut children = signed_info.elements();
    let (Some(c14n), Some(method)) = (children.next(), children.next()) else {
        return Err(SignatureError::Malformed);
    };
    let references: Vec<&Element> = children.collect();
    if !c14n.is(DS_NS, "CanonicalizationMethod") || !method.is(DS_NS, "SignatureMethod") {
        return Err(SignatureError::Malformed);
    }
    if c14n.attr("Algorithm") != Some(EXC_C14N) {
        return Err(SignatureError::Algorithm);
    }
    if !method
        .attr("Algorithm")
        .is_some_and(|a| policy.signature_ok(a))
    {
        return Err(SignatureError::Algorithm);
    }
    let [reference] = references.as_slice() else {
        return Err(SignatureError::Reference);
    };
    if !reference.is(DS_NS, "Reference") {
        return Err(SignatureError::Malformed);
    }
    match reference.attr("URI") {
        Some(uri) if uri.strip_prefix('#') == Some(signed_id) && !signed_id.is_empty() => {}
        _ => return Err(SignatureError::Reference),
    }
    check_reference_body(reference, policy)
}

fn check_reference_body(
    reference: &Element,
    policy: AlgorithmPolicy,
) -> Result<(), SignatureError> {
    let mut digest_method = None;
    let mut digest_value = None;
    for child in reference.elements() {
        match (child.ns.as_deref(), child.name.as_str()) {
            (Some(DS_NS), "Transforms") if digest_method.is_none() => {
                for transform in child.elements() {
                    if !transform.is(DS_NS, "Transform") {
                        return Err(SignatureError::Malformed);
                    }
                    match transform.attr("Algorithm") {
                        Some(ENVELOPED) if !transform.has_child_elements() => {}
                        Some(EXC_C14N) => check_inclusive_namespaces(transform)?,
                        _ => return Err(SignatureError::Transform),
                    }
                }
            }
            (Some(DS_NS), "DigestMethod") if digest_method.is_none() => digest_method = Some(child),
            (Some(DS_NS), "DigestValue") if digest_method.is_some() && digest_value.is_none() => {
                digest_value = Some(child)
            }
            _ => return Err(SignatureError::Malformed),
        }
    }
    let (Some(method), Some(value)) = (digest_method, digest_value) else {
        return Err(SignatureError::Malformed);
    };
    if !method
        .attr("Algorithm")
        .is_some_and(|a| policy.digest_ok(a))
    {
        return Err(SignatureError::Algorithm);
    }
    if value.text().trim().is_empty() || value.has_child_elements() {
        return Err(SignatureError::Malformed);
    }
    Ok(())
}

/// Exclusive c14n may carry one `InclusiveNamespaces PrefixList` (Okta sends it); nothing else.
fn check_inclusive_namespaces(transform: &Element) -> Result<(), SignatureError> {
    let mut children = transform.elements();
    match (children.next(), children.next()) {
        (None, _) => Ok(()),
        (Some(e), None) if e.is(EXC_C14N, "InclusiveNamespaces") && !e.has_child_elements() => {
            Ok(())
        }
        _ => Err(SignatureError::Transform),
    }
}

/// KeyInfo may name a certificate (never used: the trusted ones are); anything that points
/// elsewhere or carries a raw key is refused.
fn check_key_info(key_info: &Element) -> Result<(), SignatureError> {
    for child in key_info.elements() {
        match (child.ns.as_deref(), child.name.as_str()) {
            (Some(DS_NS), "X509Data") => {
                for item in child.elements() {
                    let allowed = item.ns.as_deref() == Some(DS_NS)
                        && matches!(
                            item.name.as_str(),
                            "X509Certificate" | "X509IssuerSerial" | "X509SubjectName" | "X509SKI"
                        );
                    if !allowed {
                        return Err(SignatureError::KeyInfo);
                    }
                }
            }
            (Some(DS_NS), "KeyName") => {}
            _ => return Err(SignatureError::KeyInfo),
        }
    }
    Ok(())
}

/// Verifies every signature in `xml` against `trusted` certificates (DER) and returns the XML of
/// the verified content only.
pub fn verify_and_reduce(
    xml: &str,
    trusted: &[CertificateDer],
    policy: AlgorithmPolicy,
) -> Result<String, SignatureError> {
    if trusted.is_empty() {
        // samael skips verification without certificates; never let that happen.
        return Err(SignatureError::Invalid);
    }
    let allowed = if policy.allow_sha1 {
        // samael's list has no SHA-1 entry; check_shape has already enforced the policy.
        None
    } else {
        Some(&XMLSEC_ALLOWED[..])
    };
    // Comments are not digested (exclusive c14n without comments); with them cut, the verified
    // copy keeps text that a comment split as one whole string (invariant 5).
    let xml = crate::xml::without_comments(xml).map_err(|_| SignatureError::Malformed)?;
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        &xml,
        trusted,
        ReduceMode::ValidateAndMarkNoAncestors,
        allowed,
    )
    .map_err(|_| SignatureError::Invalid)
}

/// The enveloped signature this SP puts on the messages it sends over HTTP-POST: exclusive
/// c14n, RSA-SHA256 over a SHA-256 digest of the element whose ID is `{id}` (the shape
/// [`check_shape`] accepts). xmlsec fills in the digest and signature values.
const SIGNATURE_TEMPLATE: &str = "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\
<ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
<ds:Reference URI=\"#{id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue/>\
</ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature>";

/// Signs the SAML protocol message `xml` (our own AuthnRequest, LogoutRequest or
/// LogoutResponse, whose root has an `ID` and whose first child is its `saml:Issuer`) with an
/// enveloped signature by `key`, placed right after the Issuer as the schema orders it.
pub fn sign_enveloped(
    xml: &str,
    id: &str,
    key: &openssl::pkey::PKey<openssl::pkey::Private>,
) -> Result<String, SignatureError> {
    const ISSUER_END: &str = "</saml:Issuer>";
    let at = xml.find(ISSUER_END).ok_or(SignatureError::Malformed)? + ISSUER_END.len();
    let template = SIGNATURE_TEMPLATE.replace("{id}", &crate::xml::escape(id));
    let unsigned = format!("{}{template}{}", &xml[..at], &xml[at..]);
    let der = key
        .private_key_to_der()
        .map_err(|_| SignatureError::Malformed)?;
    Crypto::sign_xml(unsigned, &der).map_err(|_| SignatureError::Invalid)
}

/// True when `element` has a `ds:Signature` child.
pub fn has_signature(element: &Element) -> bool {
    element.children_named(DS_NS, "Signature").next().is_some()
}

/// Makes sure signatures stand only directly under the Response or the Assertion, once each.
pub fn check_placement(root: &Element) -> Result<(), SignatureError> {
    fn walk(e: &Element, may_hold: bool) -> Result<(), SignatureError> {
        let mut count = 0;
        for child in e.elements() {
            if child.is(DS_NS, "Signature") {
                count += 1;
                if !may_hold || count > 1 {
                    return Err(SignatureError::Misplaced);
                }
                if child.descendants().iter().any(|d| d.is(DS_NS, "Object")) {
                    return Err(SignatureError::Malformed);
                }
                continue;
            }
            walk(child, child.is(SAML_NS, "Assertion"))?;
        }
        Ok(())
    }
    walk(root, true)
}
