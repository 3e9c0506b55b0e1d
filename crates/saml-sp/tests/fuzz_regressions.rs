//! The committed fixture that the benchmark and the fuzz targets start from, and every input a
//! fuzz target ever failed on, kept as plain tests (see "Fuzzing" in docs/security.md).
//!
//! No xmlsec1 here: the fixture was signed once by `benches/fixtures/generate.sh` and is read
//! with a fixed clock, so these tests mean the same thing on any day.

use chrono::{DateTime, Utc};
use saml_sp::response::{ServiceProvider, TrustedIdp, ValidationOptions};
use saml_sp::{CertificateDer, ResponseValidator};

const FORM_VALUE: &str = include_str!("../benches/fixtures/response.b64");
const IDP_CERT: &[u8] = include_bytes!("../benches/fixtures/idp.cert.der");
const REQUEST_ID: &str = "id-8d1f0c5e4b3a29187766554433221100ffeeddcc";

fn validator() -> ResponseValidator {
    ResponseValidator {
        sp: ServiceProvider {
            entity_id: "https://dash.example.com/saml/metadata".into(),
            acs_url: "https://dash.example.com/saml/acs".into(),
        },
        idp: TrustedIdp {
            entity_id: "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/".into(),
            certificates: vec![CertificateDer::from(IDP_CERT.to_vec())],
        },
        options: ValidationOptions::default(),
    }
}

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(time)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn bench_fixture_validates_at_its_fixed_clock() {
    let assertion = validator()
        .validate_without_replay(FORM_VALUE, Some(REQUEST_ID), at("2026-11-22T10:00:00Z"))
        .unwrap();
    assert_eq!(assertion.name_id.value, "alice.wonderland@corp.example");
    assert_eq!(assertion.attributes.len(), 10);
    assert_eq!(
        assertion
            .attribute("http://schemas.microsoft.com/identity/claims/groups")
            .len(),
        30
    );
}

#[test]
fn bench_fixture_is_refused_outside_its_window() {
    let err = validator()
        .validate_without_replay(FORM_VALUE, Some(REQUEST_ID), at("2026-11-23T10:00:00Z"))
        .unwrap_err();
    assert_eq!(err.code(), "issue_instant_invalid");
}

// ---------------------------------------------------------------------------------------------
// xml_parse: a byte order mark shifted every comment cut by three bytes
// ---------------------------------------------------------------------------------------------

/// Found by `xml_parse` (minimized): quick-xml does not count a leading byte order mark in its
/// positions, so `without_comments` cut three bytes too early and left `-->` behind.
const BOM_AND_COMMENT: &str = "\u{feff}<a:r xmlns:a=\"r\"><!----></a:r>";

#[test]
fn comment_cut_after_byte_order_mark_keeps_the_tree() {
    let cut = saml_sp::xml::without_comments(BOM_AND_COMMENT).unwrap();
    assert_eq!(cut, "\u{feff}<a:r xmlns:a=\"r\"></a:r>");
    assert_eq!(
        saml_sp::xml::parse(&cut).unwrap(),
        saml_sp::xml::parse(BOM_AND_COMMENT).unwrap()
    );
}

#[test]
fn signed_response_with_byte_order_mark_and_comment_is_accepted() {
    use base64::Engine;
    let xml = std::str::from_utf8(
        &base64::engine::general_purpose::STANDARD
            .decode(FORM_VALUE.trim())
            .unwrap(),
    )
    .unwrap()
    .replacen(
        "</Signature><Subject>",
        "</Signature><!-- x --><Subject>",
        1,
    )
    .replacen(
        "<AttributeValue>Alice Wonderland<",
        "<AttributeValue>Alice <!-- y -->Wonderland<",
        1,
    );
    assert_eq!(xml.matches("<!--").count(), 2);
    let form_value = base64::engine::general_purpose::STANDARD.encode(format!("\u{feff}{xml}"));
    let assertion = validator()
        .validate_without_replay(&form_value, Some(REQUEST_ID), at("2026-11-22T10:00:00Z"))
        .unwrap();
    assert_eq!(
        assertion.attribute("http://schemas.microsoft.com/identity/claims/displayname"),
        ["Alice Wonderland"]
    );
}
