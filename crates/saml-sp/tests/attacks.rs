//! Hostile SAML Responses, one test per attack, grouped by class.
//!
//! Each test starts from a Response the IdP really signed (xmlsec1 with the IdP's key, see
//! `common`), applies one published attack to it and checks two things: the validator refuses it
//! with the expected stable reason code, and nothing of the message leaks into the refusal (no
//! `Assertion` comes back and the error text carries no NameID). Every case here has one exact
//! code: the checks run in a fixed order, and the first one that fails names the refusal.
//!
//! Cases that `validate.rs` already covers under another name are not repeated here; see
//! `docs/security.md` for the full table.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::process::Command;

use base64::Engine;
use chrono::TimeDelta;
use common::*;
use saml_sp::{Assertion, ValidationError};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The NameID an attacker wants to be.
const EVIL_NAME_ID: &str = "admin@corp.example";
const EVIL_RESPONSE_ID: &str = "_evil_response_ID";
const EVIL_ASSERTION_ID: &str = "_evil_assertion_ID";
const XPATH_TRANSFORM: &str = r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>not(ancestor-or-self::ds:Signature)</ds:XPath></ds:Transform>"#;
const HMAC_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256";
const INCLUSIVE_C14N: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
const INCLUSIVE_C14N_WITH_COMMENTS: &str =
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments";
const EXC_C14N_WITH_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";

/// Refused with `code`, and the refusal carries no claim of the message.
#[track_caller]
fn assert_refused(result: Result<Assertion, ValidationError>, code: &str) {
    assert_no_claims(&result);
    assert_code(result, code);
}

#[track_caller]
fn assert_no_claims(result: &Result<Assertion, ValidationError>) {
    match result {
        Ok(a) => panic!("accepted, NameID {:?} leaked", a.name_id.value),
        Err(e) => {
            let text = format!("{e} {e:?}");
            for claim in [EVIL_NAME_ID, "alice@corp.example", "finance"] {
                assert!(
                    !text.contains(claim),
                    "the refusal echoes {claim:?}: {text}"
                );
            }
        }
    }
}

/// The attacker's edit: every `alice@corp.example` claim becomes `admin@corp.example`.
fn evil(xml: &str) -> String {
    let out = xml.replace("alice@corp.example<", &format!("{EVIL_NAME_ID}<"));
    assert_ne!(out, xml, "the attacker's edit changed nothing");
    out
}

/// The first `ds:Signature` element of `xml`, as text.
fn signature_of(xml: &str) -> &str {
    let start = xml.find("<ds:Signature").expect("a signature");
    let end = xml[start..]
        .find("</ds:Signature>")
        .expect("a signature end")
        + start
        + "</ds:Signature>".len();
    &xml[start..end]
}

/// The text between the first `<tag>` and its `</tag>` (for elements without attributes).
fn content_of<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).expect("the element") + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).expect("its end") + start;
    &xml[start..end]
}

/// An element of `xml` (from `<tag` to the first `</tag>`), as text.
fn element_of<'a>(xml: &'a str, tag: &str) -> &'a str {
    let start = xml.find(&format!("<{tag}")).expect("the element");
    let close = format!("</{tag}>");
    let end = xml[start..].find(&close).expect("its end") + start + close.len();
    &xml[start..end]
}

/// `assertion` with its ID changed from the genuine one to `id`.
fn with_assertion_id(assertion: &str, id: &str) -> String {
    replace_once(
        assertion,
        &format!(r#"ID="{ASSERTION_ID}""#),
        &format!(r#"ID="{id}""#),
    )
}

/// The Response's body (no XML declaration), signed as `spec` says.
fn body(spec: &Spec) -> String {
    without_declaration(&spec.signed()).to_string()
}

/// A Spec signed the usual way but with a changed SignatureTemplate.
fn with_template(spec: Spec, signature: SignatureTemplate) -> Spec {
    Spec { signature, ..spec }
}

// ---------------------------------------------------------------------------------------------
// 1. Signature wrapping: the XSW catalogue of Somorovsky et al., "On Breaking SAML" (2012), in
//    the form SAML Raider applies it. XSW1-2 wrap the signed Response, XSW3-8 the signed
//    Assertion. Each leaves the genuine signed element verifiable and adds an evil one that a
//    validator reading "the" Response or Assertion by a different rule would consume. Every
//    variant puts two SAML Assertions in the document, which is refused before any signature
//    is looked at.
// ---------------------------------------------------------------------------------------------

/// XSW1: the evil Response keeps the genuine signature, and the genuine Response (without its
/// signature) is moved inside that signature, where the Reference still finds it by ID.
#[test]
fn xsw1_signed_response_moved_into_its_signature_is_multiple_assertions() {
    let original = body(&Spec::response_signed());
    let clone = without_signatures(&original);
    let evil_response = evil(&original).replacen(
        &format!(r#"ID="{RESPONSE_ID}""#),
        &format!(r#"ID="{EVIL_RESPONSE_ID}""#),
        1,
    );
    let xml = replace_once(
        &evil_response,
        "</ds:Signature>",
        &format!("{clone}</ds:Signature>"),
    );
    assert_refused(validate(&xml), "multiple_assertions");
}

/// XSW2: as XSW1, with the genuine Response placed before the signature (a detached signature).
#[test]
fn xsw2_signed_response_beside_detached_signature_is_multiple_assertions() {
    let original = body(&Spec::response_signed());
    let clone = without_signatures(&original);
    let evil_response = evil(&original).replacen(
        &format!(r#"ID="{RESPONSE_ID}""#),
        &format!(r#"ID="{EVIL_RESPONSE_ID}""#),
        1,
    );
    let xml = replace_once(
        &evil_response,
        "<ds:Signature xmlns",
        &format!("{clone}<ds:Signature xmlns"),
    );
    assert_refused(validate(&xml), "multiple_assertions");
}

/// XSW3: an unsigned evil Assertion as the sibling before the signed one.
#[test]
fn xsw3_evil_assertion_before_signed_one_is_multiple_assertions() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let evil_assertion =
        with_assertion_id(&evil(&without_signatures(&original)), EVIL_ASSERTION_ID);
    let xml = replace_once(&xml, &original, &format!("{evil_assertion}{original}"));
    assert_refused(validate(&xml), "multiple_assertions");
}

/// XSW4: the signed Assertion moved into the evil one, as its last child.
#[test]
fn xsw4_signed_assertion_inside_evil_assertion_is_multiple_assertions() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let evil_assertion =
        with_assertion_id(&evil(&without_signatures(&original)), EVIL_ASSERTION_ID);
    let wrapper = replace_once(
        &evil_assertion,
        "</saml:Assertion>",
        &format!("{original}</saml:Assertion>"),
    );
    let xml = replace_once(&xml, &original, &wrapper);
    assert_refused(validate(&xml), "multiple_assertions");
}

/// XSW5: the evil Assertion carries the genuine signature; the genuine Assertion, unsigned, is
/// appended at the end of the Response.
#[test]
fn xsw5_evil_assertion_with_copied_signature_is_multiple_assertions() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let evil_signed = with_assertion_id(&evil(&original), EVIL_ASSERTION_ID);
    let xml = replace_once(&xml, &original, &evil_signed);
    let xml = replace_once(
        &xml,
        "</samlp:Response>",
        &format!("{}</samlp:Response>", without_signatures(&original)),
    );
    assert_refused(validate(&xml), "multiple_assertions");
}

/// XSW6: as XSW5, with the genuine Assertion moved inside the copied signature.
#[test]
fn xsw6_signed_assertion_inside_copied_signature_is_multiple_assertions() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let evil_signed = with_assertion_id(&evil(&original), EVIL_ASSERTION_ID);
    let evil_signed = replace_once(
        &evil_signed,
        "</ds:Signature>",
        &format!("{}</ds:Signature>", without_signatures(&original)),
    );
    let xml = replace_once(&xml, &original, &evil_signed);
    assert_refused(validate(&xml), "multiple_assertions");
}

/// XSW7: an `Extensions` element (in no namespace) holding an unsigned evil copy, with the same
/// ID, inserted before the genuine signed Assertion.
#[test]
fn xsw7_evil_assertion_in_extensions_before_signed_one_is_multiple_assertions() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let evil_assertion = evil(&without_signatures(&original));
    let xml = replace_once(
        &xml,
        &original,
        &format!("<Extensions>{evil_assertion}</Extensions>{original}"),
    );
    assert_refused(validate(&xml), "multiple_assertions");
}

/// XSW8: the evil Assertion keeps the genuine ID and signature; the genuine Assertion, unsigned,
/// sits in a `ds:Object` inside that signature.
#[test]
fn xsw8_signed_assertion_in_signature_object_is_multiple_assertions() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let evil_signed = replace_once(
        &evil(&original),
        "</ds:Signature>",
        &format!(
            "<ds:Object>{}</ds:Object></ds:Signature>",
            without_signatures(&original)
        ),
    );
    let xml = replace_once(&xml, &original, &evil_signed);
    assert_refused(validate(&xml), "multiple_assertions");
}

// ---------------------------------------------------------------------------------------------
// 2. Other wrapping and structure attacks
// ---------------------------------------------------------------------------------------------

/// CVE-2025-23369 (libxml2 ID quirks): a DOCTYPE declares an ID attribute and entities so that
/// the verifier resolves the Reference to a copy of the signed Assertion hidden in a
/// `ds:Object`, while the Response's Assertion is the attacker's.
#[test]
fn dtd_declared_id_attribute_is_xml_doctype() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let signature = signature_of(&original).to_string();
    let hidden = with_assertion_id(
        &without_signatures(&original),
        &format!("&BypassIDUniqueness;{ASSERTION_ID}"),
    );
    let evil_assertion = with_assertion_id(
        &evil(&without_signatures(&original)),
        &format!("{ASSERTION_ID}ffff"),
    );
    let moved_signature = replace_once(
        &signature,
        "</ds:Signature>",
        &format!("<ds:Object>{hidden}</ds:Object></ds:Signature>"),
    );
    let xml = replace_once(&xml, &original, &evil_assertion);
    let xml = xml.replacen(
        "</saml:Issuer>",
        &format!("</saml:Issuer>{moved_signature}"),
        1,
    );
    let xml = replace_once(
        &xml,
        &format!(r#"ID="{RESPONSE_ID}""#),
        r#"ID="&idViaEntity;""#,
    );
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE samlp:Response [\
         <!ATTLIST samlp:Response ID ID #IMPLIED>\
         <!ENTITY idViaEntity \"{ASSERTION_ID}\"><!ENTITY BypassIDUniqueness \"&#x50;\">]>\n{}",
        without_declaration(&xml)
    );
    assert_refused(validate(&xml), "xml_doctype");
}

/// CVE-2022-41912 (crewjam/saml): the signed Assertion first, an unsigned evil copy after it,
/// for a validator that verifies the first and reads the last.
#[test]
fn cve_2022_41912_unsigned_assertion_after_signed_one_is_multiple_assertions() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let attack = with_assertion_id(
        &evil(&without_signatures(&original)),
        &format!("{ASSERTION_ID}_attack"),
    );
    let xml = replace_once(&xml, &original, &format!("{original}{attack}"));
    assert_refused(validate(&xml), "multiple_assertions");
}

/// The Response is signed (the Assertion is not) and an unsigned Assertion is added to it.
#[test]
fn response_signed_with_second_assertion_added_is_multiple_assertions() {
    let xml = Spec::response_signed().signed();
    let added = with_assertion_id(&evil(assertion_of(&xml)), EVIL_ASSERTION_ID);
    let xml = replace_once(
        &xml,
        "</samlp:Response>",
        &format!("{added}</samlp:Response>"),
    );
    assert_refused(validate(&xml), "multiple_assertions");
}

/// The only Assertion moved into a `ds:Object` of the Response's signature.
#[test]
fn assertion_in_signature_object_is_assertion_misplaced() {
    let xml = Spec::response_signed().signed();
    let assertion = assertion_of(&xml).to_string();
    let xml = replace_once(&xml, &assertion, "");
    let xml = replace_once(
        &xml,
        "</ds:Signature>",
        &format!("<ds:Object>{assertion}</ds:Object></ds:Signature>"),
    );
    assert_refused(validate(&xml), "assertion_misplaced");
}

/// An evil unsigned Response before the genuine signed one: two root elements (libxml2 in
/// recover mode would read one of them).
#[test]
fn two_root_elements_is_xml_root() {
    let genuine = body(&Spec::assertion_signed());
    let evil_response = evil(&without_signatures(&genuine));
    let xml = format!("{evil_response}\n{genuine}");
    assert_refused(validate(&xml), "xml_root");
}

/// Every signature of a signed Response removed.
#[test]
fn signature_removed_is_signature_missing() {
    for spec in [Spec::assertion_signed(), Spec::response_signed()] {
        let xml = evil(&without_signatures(&spec.signed()));
        assert_refused(validate(&xml), "signature_missing");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Only the Assertion signed: the unsigned Response around it is the attacker's to edit.
//    Its fields may only ever refuse (design invariant 10); claims come from the Assertion.
//    (A Destination edit is `validate.rs::wrong_destination_is_destination_mismatch`.)
// ---------------------------------------------------------------------------------------------

/// The Response's InResponseTo changed to another request: refused even though the signed
/// SubjectConfirmationData still names the pending one.
#[test]
fn assertion_signed_response_in_response_to_edited_is_unknown_in_response_to() {
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(
        &xml,
        &format!(r#"Destination="{ACS_URL}" InResponseTo="{REQUEST_ID}""#),
        &format!(r#"Destination="{ACS_URL}" InResponseTo="_forged-request-id""#),
    );
    assert_refused(validate(&xml), "unknown_in_response_to");
}

/// The Response's Status changed to a failure: the (unsigned, attacker-chosen) status is
/// reported as such and grants nothing.
#[test]
fn assertion_signed_response_status_edited_is_status_not_success() {
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(
        &xml,
        r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>"#,
        r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Requester"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:RequestDenied"/></samlp:StatusCode>"#,
    );
    let result = validate(&xml);
    assert_no_claims(&result);
    let Err(ValidationError::Status(status)) = result else {
        panic!("not a status refusal: {result:?}");
    };
    assert_eq!(
        ValidationError::Status(status.clone()).code(),
        "status_not_success"
    );
    assert_eq!(status.code, "urn:oasis:names:tc:SAML:2.0:status:Requester");
    assert_eq!(
        status.sub_code.as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:status:RequestDenied")
    );
}

/// The Response's Issuer changed to another entity.
#[test]
fn assertion_signed_response_issuer_edited_is_issuer_mismatch() {
    let xml = Spec::assertion_signed().signed();
    let xml = xml.replacen(
        &format!("<saml:Issuer>{IDP_ENTITY_ID}</saml:Issuer>"),
        "<saml:Issuer>https://evil.example.net/idp</saml:Issuer>",
        1,
    );
    assert_refused(validate(&xml), "issuer_mismatch");
}

// ---------------------------------------------------------------------------------------------
// 4. References and SignedInfo
// ---------------------------------------------------------------------------------------------

/// A Reference URI that is a bare ID (no `#`): a URL to xmlsec, which would fetch it.
#[test]
fn reference_uri_without_hash_is_signature_reference_invalid() {
    let spec = with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            reference_uri: Some(ASSERTION_ID.into()),
            ..SignatureTemplate::default()
        },
    );
    // Never signed: xmlsec1 would try to dereference the URI.
    let xml = with_dummy_values(&spec.template());
    assert_refused(validate(&xml), "signature_reference_invalid");
}

/// A second Reference added to the signed SignedInfo.
#[test]
fn two_references_is_signature_reference_invalid() {
    let xml = Spec::assertion_signed().signed();
    let reference = element_of(&xml, "ds:Reference").to_string();
    let second = reference.replace(&format!("#{ASSERTION_ID}"), &format!("#{RESPONSE_ID}"));
    let xml = replace_once(&xml, &reference, &format!("{reference}{second}"));
    assert_refused(validate(&xml), "signature_reference_invalid");
}

/// A second SignedInfo in the signature.
#[test]
fn two_signed_infos_is_signature_malformed() {
    let xml = Spec::assertion_signed().signed();
    let signed_info = element_of(&xml, "ds:SignedInfo").to_string();
    let xml = replace_once(&xml, &signed_info, &format!("{signed_info}{signed_info}"));
    assert_refused(validate(&xml), "signature_malformed");
}

/// A comment splitting the DigestValue does not hide an edited Assertion: the digest is the
/// whole text and still has to match.
#[test]
fn comment_inside_digest_value_is_signature_invalid() {
    let xml = Spec::assertion_signed().signed();
    let digest = content_of(&xml, "ds:DigestValue").to_string();
    let (head, tail) = digest.split_at(digest.len() / 2);
    let xml = replace_once(
        &xml,
        &format!("<ds:DigestValue>{digest}</ds:DigestValue>"),
        &format!("<ds:DigestValue>{head}<!-- x -->{tail}</ds:DigestValue>"),
    );
    let xml = replace_once(&xml, ">finance<", ">admins<");
    assert_refused(validate(&xml), "signature_invalid");
}

/// An XPath transform (XSLT is `validate.rs::xslt_transform_is_signature_transform_refused`).
#[test]
fn xpath_transform_is_signature_transform_refused() {
    let spec = with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            extra_transforms: XPATH_TRANSFORM,
            ..SignatureTemplate::default()
        },
    );
    let xml = with_dummy_values(&spec.template());
    assert_refused(validate(&xml), "signature_transform_refused");
}

/// An exclusive c14n WithComments transform in the Reference.
#[test]
fn c14n_with_comments_transform_is_signature_transform_refused() {
    let spec = with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            extra_transforms: r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#WithComments"/>"#,
            ..SignatureTemplate::default()
        },
    );
    assert_refused(validate(&spec.signed()), "signature_transform_refused");
}

/// A `ds:Object` (with any content) inside a signature.
#[test]
fn object_in_signature_is_signature_malformed() {
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(
        &xml,
        "</ds:Signature>",
        r#"<ds:Object><x:Data xmlns:x="urn:x">data</x:Data></ds:Object></ds:Signature>"#,
    );
    assert_refused(validate(&xml), "signature_malformed");
}

// ---------------------------------------------------------------------------------------------
// 5. Keys and algorithms
//    (An attacker's certificate in X509Certificate is
//    `validate.rs::signed_by_attacker_key_is_signature_invalid`.)
// ---------------------------------------------------------------------------------------------

/// Signed by the attacker, whose public key travels in `KeyInfo/KeyValue`.
#[test]
fn attacker_key_in_key_value_is_signature_key_info_refused() {
    let spec = with_template(
        Spec {
            name_id: EVIL_NAME_ID.into(),
            ..Spec::assertion_signed()
        },
        SignatureTemplate {
            key_info: "<ds:KeyInfo><ds:KeyValue/></ds:KeyInfo>",
            ..SignatureTemplate::default()
        },
    );
    let xml = spec.signed_by(&keys().attacker);
    assert!(
        xml.contains("RSAKeyValue>"),
        "KeyValue carries the attacker's key"
    );
    assert_refused(validate(&xml), "signature_key_info_refused");
}

/// A `RetrievalMethod` pointing at a key elsewhere (never fetched, never used).
#[test]
fn retrieval_method_in_key_info_is_signature_key_info_refused() {
    let spec = with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            key_info: r#"<ds:KeyInfo><ds:RetrievalMethod URI="http://127.0.0.1:9/key" Type="http://www.w3.org/2000/09/xmldsig#X509Data"/></ds:KeyInfo>"#,
            ..SignatureTemplate::default()
        },
    );
    let xml = with_dummy_values(&spec.template());
    assert_refused(validate(&xml), "signature_key_info_refused");
}

/// HMAC-SHA256 keyed with the IdP's public certificate (key confusion): a valid HMAC anyone
/// can compute.
#[test]
fn hmac_signature_method_is_signature_algorithm_refused() {
    let spec = with_template(
        Spec {
            name_id: EVIL_NAME_ID.into(),
            ..Spec::assertion_signed()
        },
        SignatureTemplate {
            signature_method: HMAC_SHA256,
            key_info: "",
            ..SignatureTemplate::default()
        },
    );
    let xml = hmac_sign(&spec.template(), ASSERTION_ID);
    assert_refused(validate(&xml), "signature_algorithm_refused");
}

/// Signs with xmlsec1 using the IdP's certificate file, as bytes, for the HMAC key.
fn hmac_sign(xml: &str, node_id: &str) -> String {
    let dir = &keys().dir;
    let input = dir.join(format!("hmac-in-{node_id}.xml"));
    let output = dir.join(format!("hmac-out-{node_id}.xml"));
    std::fs::write(&input, xml).unwrap();
    run_tool(
        Command::new("xmlsec1")
            .arg("--sign")
            .arg("--hmackey")
            .arg(&keys().idp.cert)
            .args(["--id-attr:ID", &format!("{SAML_NS}:Assertion")])
            .args(["--node-id", node_id])
            .arg("--output")
            .arg(&output)
            .arg(&input),
    );
    std::fs::read_to_string(&output).unwrap()
}

/// SHA-1 as the DigestMethod under an RSA-SHA256 SignatureMethod.
#[test]
fn sha1_digest_with_rsa_sha256_is_signature_algorithm_refused() {
    assert_refused(
        validate(&sha1_digest_spec().signed()),
        "signature_algorithm_refused",
    );
}

/// The same response passes when the configuration allows SHA-1 for a legacy IdP.
#[test]
fn sha1_digest_with_rsa_sha256_is_accepted_when_allowed() {
    let mut validator = validator();
    validator.options.algorithms.allow_sha1 = true;
    let form_value = encode(&sha1_digest_spec().signed());
    let result = validate_with(
        &validator,
        &form_value,
        Some(REQUEST_ID),
        &Default::default(),
    );
    assert_alice(&result.unwrap());
}

fn sha1_digest_spec() -> Spec {
    with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            digest_method: SHA1,
            ..SignatureTemplate::default()
        },
    )
}

/// The SignatureValue emptied.
#[test]
fn empty_signature_value_is_signature_malformed() {
    let xml = Spec::assertion_signed().signed();
    let value = content_of(&xml, "ds:SignatureValue").to_string();
    let xml = replace_once(
        &xml,
        &format!("<ds:SignatureValue>{value}</ds:SignatureValue>"),
        "<ds:SignatureValue></ds:SignatureValue>",
    );
    assert_refused(validate(&evil(&xml)), "signature_malformed");
}

/// Inclusive c14n 1.0 as the CanonicalizationMethod (really signed).
#[test]
fn inclusive_c14n_canonicalization_is_signature_algorithm_refused() {
    let spec = with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            canonicalization: INCLUSIVE_C14N,
            ..SignatureTemplate::default()
        },
    );
    assert_refused(validate(&spec.signed()), "signature_algorithm_refused");
}

/// Inclusive c14n 1.0 WithComments as the CanonicalizationMethod (really signed).
#[test]
fn inclusive_c14n_with_comments_canonicalization_is_signature_algorithm_refused() {
    let spec = with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            canonicalization: INCLUSIVE_C14N_WITH_COMMENTS,
            ..SignatureTemplate::default()
        },
    );
    assert_refused(validate(&spec.signed()), "signature_algorithm_refused");
}

/// Exclusive c14n WithComments as the CanonicalizationMethod (really signed).
#[test]
fn exclusive_c14n_with_comments_canonicalization_is_signature_algorithm_refused() {
    let spec = with_template(
        Spec::assertion_signed(),
        SignatureTemplate {
            canonicalization: EXC_C14N_WITH_COMMENTS,
            ..SignatureTemplate::default()
        },
    );
    assert_refused(validate(&spec.signed()), "signature_algorithm_refused");
}

// ---------------------------------------------------------------------------------------------
// 6. Parser
//    (A parameter-entity DOCTYPE is `validate.rs::doctype_is_xml_doctype`, UTF-7 is
//    `validate.rs::utf7_declaration_is_xml_encoding`.)
// ---------------------------------------------------------------------------------------------

fn with_doctype(doctype: &str, xml: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{doctype}\n{}",
        without_declaration(xml)
    )
}

/// An external entity (XXE) read into the NameID.
#[test]
fn xxe_external_entity_is_xml_doctype() {
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(
        &xml,
        ">alice@corp.example</saml:NameID>",
        ">&xxe;</saml:NameID>",
    );
    let xml = with_doctype(
        r#"<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#,
        &xml,
    );
    assert_refused(validate(&xml), "xml_doctype");
}

/// Nested internal entities expanding to gigabytes ("billion laughs").
#[test]
fn billion_laughs_is_xml_doctype() {
    let mut doctype = String::from(r#"<!DOCTYPE samlp:Response [<!ENTITY lol0 "lol">"#);
    for i in 1..=9 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        doctype.push_str(&format!(r#"<!ENTITY lol{i} "{refs}">"#));
    }
    doctype.push_str("]>");
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(&xml, ">finance<", ">&lol9;<");
    assert_refused(validate(&with_doctype(&doctype, &xml)), "xml_doctype");
}

/// An entity reference with no declaration at all: never resolved, never dropped.
#[test]
fn undeclared_entity_reference_is_xml_entity() {
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(&xml, ">finance<", ">&admins;<");
    assert_refused(validate(&xml), "xml_entity");
}

/// An `xi:include` inserted into the signed Assertion.
#[test]
fn xinclude_in_signed_assertion_is_signature_invalid() {
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(
        &xml,
        "<saml:Subject>",
        r#"<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/><saml:Subject>"#,
    );
    assert_refused(validate(&xml), "signature_invalid");
}

/// An `xi:include` the IdP itself signed inside the NameID is never expanded: the NameID has a
/// child element and no text, so there is no subject.
#[test]
fn xinclude_in_name_id_is_name_id_missing() {
    let spec = Spec {
        name_id: r#"<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/hostname" parse="text"/>"#.into(),
        ..Spec::assertion_signed()
    };
    assert_refused(validate(&spec.signed()), "name_id_missing");
}

/// The only Assertion is in a foreign namespace (its `saml` prefix rebound), posing as the SAML
/// one to a validator that matches local names.
#[test]
fn assertion_in_foreign_namespace_is_assertion_missing() {
    let xml = Spec::assertion_signed().signed();
    let xml = replace_once(
        &xml,
        "<saml:Assertion ",
        r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion:evil" "#,
    );
    assert_refused(validate(&evil(&xml)), "assertion_missing");
}

/// A NameID in a foreign namespace (signed by the IdP): no SAML NameID, no subject.
#[test]
fn name_id_in_foreign_namespace_is_name_id_missing() {
    let template = replace_once(
        &Spec::assertion_signed().template(),
        "<saml:NameID ",
        r#"<saml:NameID xmlns:saml="urn:oasis:names:tc:SAML:1.0:assertion" "#,
    );
    let xml = xmlsec_sign(&template, ASSERTION_ID, &keys().idp);
    assert_refused(validate(&xml), "name_id_missing");
}

/// Elements nested deeper than `MAX_DEPTH`.
#[test]
fn nesting_beyond_max_depth_is_xml_too_large() {
    let depth = saml_sp::xml::MAX_DEPTH + 1;
    let nested = format!(
        "{}{}",
        r#"<x:e xmlns:x="urn:x">"#.repeat(depth),
        "</x:e>".repeat(depth)
    );
    let xml = replace_once(
        &Spec::assertion_signed().signed(),
        "<samlp:Status>",
        &format!("<samlp:Extensions>{nested}</samlp:Extensions><samlp:Status>"),
    );
    assert_refused(validate(&xml), "xml_too_large");
}

/// More elements than `MAX_ELEMENTS`, within the size limit.
#[test]
fn too_many_elements_is_xml_too_large() {
    let many = r#"<x:e/>"#.repeat(saml_sp::xml::MAX_ELEMENTS + 1);
    let xml = replace_once(
        &Spec::assertion_signed().signed(),
        "<samlp:Status>",
        &format!(r#"<samlp:Extensions xmlns:x="urn:x">{many}</samlp:Extensions><samlp:Status>"#),
    );
    assert!(
        encode(&xml).len() <= saml_sp::response::ValidationOptions::default().max_message_bytes
    );
    assert_refused(validate(&xml), "xml_too_large");
}

/// A decoded body over the limit (padding inside the XML, not line breaks in the form value).
#[test]
fn decoded_body_over_limit_is_message_too_large() {
    let limit = saml_sp::response::ValidationOptions::default().max_message_bytes;
    let padding = " ".repeat(limit);
    let xml = replace_once(
        &Spec::assertion_signed().signed(),
        "<samlp:Status>",
        &format!("<samlp:Extensions>{padding}</samlp:Extensions><samlp:Status>"),
    );
    assert_refused(validate(&xml), "message_too_large");
}

// ---------------------------------------------------------------------------------------------
// 7. Protocol
// ---------------------------------------------------------------------------------------------

/// A holder-of-key SubjectConfirmation: this SP cannot check the key, so it is no bearer.
#[test]
fn holder_of_key_confirmation_is_subject_confirmation_invalid() {
    let template = replace_once(
        &Spec::assertion_signed().template(),
        r#"Method="urn:oasis:names:tc:SAML:2.0:cm:bearer""#,
        r#"Method="urn:oasis:names:tc:SAML:2.0:cm:holder-of-key""#,
    );
    let xml = xmlsec_sign(&template, ASSERTION_ID, &keys().idp);
    assert_refused(validate(&xml), "subject_confirmation_invalid");
}

/// No InResponseTo anywhere (an unsolicited response) while this browser has a request pending.
#[test]
fn missing_in_response_to_with_pending_request_is_unknown_in_response_to() {
    let spec = Spec {
        in_response_to: None,
        ..Spec::both_signed()
    };
    assert_refused(validate(&spec.signed()), "unknown_in_response_to");
}

/// SessionNotOnOrAfter is handed to the caller, which caps the session with it.
#[test]
fn session_not_on_or_after_is_reported() {
    let spec = Spec {
        session_not_on_or_after: 3600,
        ..Spec::assertion_signed()
    };
    let assertion = validate(&spec.signed()).unwrap();
    assert_eq!(
        assertion.session_not_on_or_after,
        Some(now() + TimeDelta::seconds(3600))
    );
}

/// A SessionNotOnOrAfter already past (beyond the skew) refuses the login.
#[test]
fn session_not_on_or_after_past_is_assertion_expired() {
    let spec = Spec {
        session_not_on_or_after: -181 - 60,
        ..Spec::assertion_signed()
    };
    assert_refused(validate(&spec.signed()), "assertion_expired");
}

// ---------------------------------------------------------------------------------------------
// 8. Redirect binding: a DEFLATE bomb
// ---------------------------------------------------------------------------------------------

/// Bytes currently allocated, and the peak, by the calling thread (tests run on many threads).
struct CountingAllocator;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(grown: usize, shrunk: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(grown).saturating_sub(shrunk);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note_allocation(layout.size(), 0);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        note_allocation(0, layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note_allocation(new_size, layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// 100 MiB of zeros as raw DEFLATE (about 100 KB). Built from one compressed MiB repeated, so
/// that the test does not spend its time compressing: each repeat's back-references reach only
/// into zeros.
fn deflate_bomb() -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 1024 * 1024]).unwrap();
    encoder.flush().unwrap();
    let chunk = std::mem::take(encoder.get_mut());
    let end = encoder.finish().unwrap();
    let mut bomb = chunk.repeat(100);
    bomb.extend_from_slice(&end);
    bomb
}

#[test]
fn deflate_bomb_is_refused_without_inflating_past_the_cap() {
    let bomb = deflate_bomb();
    // The stream really is 100 MiB of zeros.
    let mut inflated = 0u64;
    let mut decoder = flate2::read::DeflateDecoder::new(bomb.as_slice());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut decoder, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == 0));
        inflated += n as u64;
    }
    assert_eq!(inflated, 100 * 1024 * 1024);
    drop(buf);

    let cap = 256 * 1024;
    let value = base64::engine::general_purpose::STANDARD.encode(&bomb);
    assert!(
        value.len() < cap,
        "the bomb must pass the encoded-length check"
    );

    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let result = saml_sp::bindings::decode_redirect_value(&value, cap);
    let peak = PEAK.with(Cell::get) - before;

    let error = result.expect_err("the bomb was accepted");
    assert_eq!(ValidationError::from(error).code(), "message_too_large");
    // The compressed input, the decoder's state and an output buffer that may double once
    // past the cap: a few times the cap, never the 100 MiB.
    assert!(
        peak < 4 * cap + 2 * bomb.len() + 256 * 1024,
        "the decoder allocated {peak} bytes for a cap of {cap}"
    );
}
