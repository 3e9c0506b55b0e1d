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

/// The `logout_message` target's seeds, signed once by `fuzz/fixtures/generate-logout.sh`.
mod logout_seeds {
    use super::at;
    use base64::Engine;
    use saml_sp::logout::{
        read_logout_request, read_logout_response, unverified_issuer, Incoming, LogoutChecks,
    };
    use saml_sp::signature::AlgorithmPolicy;
    use saml_sp::CertificateDer;

    const CERT: &[u8] = include_bytes!("../../../fuzz/fixtures/logout-idp.cert.der");
    const REQUEST_QUERY: &str =
        include_str!("../../../fuzz/corpus/logout_message/seed-request.query");
    const RESPONSE_QUERY: &str =
        include_str!("../../../fuzz/corpus/logout_message/seed-response.query");
    const REQUEST_XML: &[u8] =
        include_bytes!("../../../fuzz/corpus/logout_message/seed-request.xml");
    const RESPONSE_XML: &[u8] =
        include_bytes!("../../../fuzz/corpus/logout_message/seed-response.xml");
    const IDP: &str = "https://idp.example/metadata";

    fn checks<'a>(certificates: &'a [CertificateDer], now: &str) -> LogoutChecks<'a> {
        LogoutChecks {
            idp_entity_id: IDP,
            alternate_issuer: None,
            certificates,
            slo_url: "https://dash.example.com/saml/slo",
            algorithms: AlgorithmPolicy::default(),
            clock_skew: std::time::Duration::from_secs(180),
            max_issue_age: std::time::Duration::from_secs(300),
            max_message_bytes: 64 * 1024,
            now: at(now),
        }
    }

    fn post(xml: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(xml)
    }

    #[test]
    fn the_seeds_are_genuine_at_the_targets_clock() {
        let certs = [CertificateDer::from(CERT.to_vec())];
        let checks = checks(&certs, "2026-11-22T10:00:00Z");
        let request = read_logout_request(Incoming::Redirect(REQUEST_QUERY), &checks).unwrap();
        assert_eq!(request.id, "_redirect-req-1");
        assert_eq!(request.name_id.value, "alice");
        assert_eq!(request.relay_state.as_deref(), Some("/dashboards/ops"));
        let posted = post(REQUEST_XML);
        let incoming = Incoming::Post {
            message: &posted,
            relay_state: None,
        };
        let request = read_logout_request(incoming, &checks).unwrap();
        assert_eq!(request.id, "_post-req-1");
        assert_eq!(request.session_indexes, ["_s1"]);
        assert_eq!(
            unverified_issuer(&posted, false, 64 * 1024)
                .unwrap()
                .as_deref(),
            Some(IDP)
        );
        let response =
            read_logout_response(Incoming::Redirect(RESPONSE_QUERY), &checks, "_sp-logout-1")
                .unwrap();
        assert_eq!(response.id, "_redirect-res-1");
        let posted = post(RESPONSE_XML);
        let incoming = Incoming::Post {
            message: &posted,
            relay_state: None,
        };
        let response = read_logout_response(incoming, &checks, "_sp-logout-1").unwrap();
        assert_eq!(response.id, "_post-res-1");
    }

    #[test]
    fn the_seeds_are_refused_when_changed_or_late() {
        let certs = [CertificateDer::from(CERT.to_vec())];
        let checks = checks(&certs, "2026-11-22T10:00:00Z");
        // Another RelayState under the same Redirect signature.
        let moved = REQUEST_QUERY.replace("%2Fdashboards%2Fops", "%2Fdashboards%2Fopz");
        assert_ne!(moved, REQUEST_QUERY);
        assert!(read_logout_request(Incoming::Redirect(&moved), &checks).is_err());
        // Another user in the signed XML.
        let other = String::from_utf8_lossy(REQUEST_XML).replace(">alice<", ">mallory<");
        let posted = post(other.as_bytes());
        let incoming = Incoming::Post {
            message: &posted,
            relay_state: None,
        };
        assert!(read_logout_request(incoming, &checks).is_err());
        // Ten minutes after it was issued (at most 5 minutes and 3 of skew).
        let late = self::checks(&certs, "2026-11-22T10:10:00Z");
        assert!(read_logout_request(Incoming::Redirect(REQUEST_QUERY), &late).is_err());
        // An answer to another request.
        assert!(
            read_logout_response(Incoming::Redirect(RESPONSE_QUERY), &checks, "_other").is_err()
        );
    }
}
