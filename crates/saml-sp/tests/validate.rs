//! `ResponseValidator` on real signed SAML Responses: the accepted shapes and the checks of each
//! field. The harness (keys, the Response template, xmlsec1 signing) is in `common`; hostile
//! responses by attack class are in `attacks.rs`.

mod common;

use chrono::SecondsFormat;
use common::*;
use saml_sp::response::ValidationOptions;
use saml_sp::{Assertion, ResponseValidator, ValidationError};

// ---------------------------------------------------------------------------------------------
// 1. Valid responses
// ---------------------------------------------------------------------------------------------

#[test]
fn assertion_signed_only_is_accepted() {
    let assertion = validate(&Spec::assertion_signed().signed()).unwrap();
    assert_alice(&assertion);
}

#[test]
fn response_signed_only_is_accepted() {
    let assertion = validate(&Spec::response_signed().signed()).unwrap();
    assert_alice(&assertion);
}

#[test]
fn response_and_assertion_signed_is_accepted() {
    let assertion = validate(&Spec::both_signed().signed()).unwrap();
    assert_alice(&assertion);
}

// ---------------------------------------------------------------------------------------------
// 2-4. Tampering, foreign keys, no signature
// ---------------------------------------------------------------------------------------------

#[test]
fn attribute_changed_after_signing_is_signature_invalid() {
    for spec in [
        Spec::assertion_signed(),
        Spec::response_signed(),
        Spec::both_signed(),
    ] {
        let xml = replace_once(&spec.signed(), ">finance<", ">admins<");
        assert_code(validate(&xml), "signature_invalid");
    }
}

#[test]
fn signed_by_attacker_key_is_signature_invalid() {
    for spec in [Spec::assertion_signed(), Spec::response_signed()] {
        let xml = spec.signed_by(&keys().attacker);
        assert!(
            xml.contains("<ds:X509Certificate>"),
            "KeyInfo carries the attacker's certificate"
        );
        assert_code(validate(&xml), "signature_invalid");
    }
}

#[test]
fn unsigned_is_signature_missing() {
    assert_code(validate(&Spec::unsigned().template()), "signature_missing");
}

// ---------------------------------------------------------------------------------------------
// 5-6. Assertion count, placement and signature wrapping
// ---------------------------------------------------------------------------------------------

#[test]
fn second_assertion_is_multiple_assertions() {
    let xml = Spec::both_signed().signed();
    let evil = without_signatures(assertion_of(&xml))
        .replace(ASSERTION_ID, "_evil-assertion")
        .replace("alice@corp.example<", "admin@corp.example<");
    let xml = replace_once(
        &xml,
        "</samlp:Response>",
        &format!("{evil}</samlp:Response>"),
    );
    assert_code(validate(&xml), "multiple_assertions");
}

#[test]
fn assertion_inside_extensions_is_refused() {
    let xml = Spec::assertion_signed().signed();
    let assertion = assertion_of(&xml).to_string();
    let xml = replace_once(&xml, &assertion, "");
    let xml = replace_once(
        &xml,
        "<samlp:Status>",
        &format!("<samlp:Extensions>{assertion}</samlp:Extensions><samlp:Status>"),
    );
    assert_refused_as_one_of(
        validate(&xml),
        &["multiple_assertions", "assertion_misplaced"],
    );
}

#[test]
fn assertion_inside_advice_is_refused() {
    let xml = Spec::response_signed().signed();
    let advised = Spec {
        assertion_id: "_advice-assertion".into(),
        name_id: "admin@corp.example".into(),
        sign_assertion: false,
        ..Spec::default()
    }
    .assertion_xml();
    let xml = replace_once(
        &xml,
        "</saml:Conditions>",
        &format!("</saml:Conditions><saml:Advice>{advised}</saml:Advice>"),
    );
    assert_refused_as_one_of(
        validate(&xml),
        &["multiple_assertions", "assertion_misplaced"],
    );
}

#[test]
fn xsw_signed_assertion_moved_to_extensions_is_refused() {
    let xml = Spec::assertion_signed().signed();
    let original = assertion_of(&xml).to_string();
    let evil = without_signatures(&original).replace("alice@corp.example<", "admin@corp.example<");
    let xml = replace_once(&xml, &original, &evil);
    let xml = replace_once(
        &xml,
        "<samlp:Status>",
        &format!("<samlp:Extensions>{original}</samlp:Extensions><samlp:Status>"),
    );
    // Two Assertions in the document is the first check that fails; any later one would do.
    assert_refused_as_one_of(
        validate(&xml),
        &[
            "multiple_assertions",
            "assertion_misplaced",
            "duplicate_id",
            "signature_*",
        ],
    );
}

#[test]
fn xsw_signed_response_wrapped_in_evil_response_is_refused() {
    let signed = Spec::response_signed().signed();
    let body = without_declaration(&signed);
    let evil = without_signatures(body).replace("alice@corp.example<", "admin@corp.example<");
    let xml = replace_once(
        &evil,
        "<samlp:Status>",
        &format!("<samlp:Extensions>{body}</samlp:Extensions><samlp:Status>"),
    );
    assert_refused_as_one_of(
        validate(&xml),
        &[
            "multiple_assertions",
            "assertion_misplaced",
            "duplicate_id",
            "signature_*",
        ],
    );
}

#[test]
fn element_sharing_the_assertion_id_is_duplicate_id() {
    let xml = Spec::response_signed().signed();
    let xml = replace_once(
        &xml,
        "<samlp:Status>",
        &format!(
            r#"<samlp:Extensions><x:Data xmlns:x="urn:x" ID="{ASSERTION_ID}"/></samlp:Extensions><samlp:Status>"#
        ),
    );
    assert_code(validate(&xml), "duplicate_id");
}

// ---------------------------------------------------------------------------------------------
// 7. Parties
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_audience_is_audience_mismatch() {
    let spec = Spec {
        audience: "https://other.example.com/saml/metadata".into(),
        ..Spec::assertion_signed()
    };
    assert_code(validate(&spec.signed()), "audience_mismatch");
}

#[test]
fn wrong_recipient_is_recipient_mismatch() {
    let spec = Spec {
        recipient: "https://other.example.com/saml/acs".into(),
        ..Spec::assertion_signed()
    };
    assert_code(validate(&spec.signed()), "recipient_mismatch");
}

#[test]
fn wrong_destination_is_destination_mismatch() {
    for spec in [Spec::assertion_signed(), Spec::response_signed()] {
        let spec = Spec {
            destination: "https://other.example.com/saml/acs".into(),
            ..spec
        };
        assert_code(validate(&spec.signed()), "destination_mismatch");
    }
}

#[test]
fn wrong_assertion_issuer_is_issuer_mismatch() {
    let spec = Spec {
        assertion_issuer: "https://evil.example.net/idp".into(),
        ..Spec::assertion_signed()
    };
    assert_code(validate(&spec.signed()), "issuer_mismatch");
}

// ---------------------------------------------------------------------------------------------
// 8. InResponseTo
// ---------------------------------------------------------------------------------------------

#[test]
fn other_in_response_to_is_unknown_in_response_to() {
    let xml = Spec::both_signed().signed();
    let result = validate_with(
        &validator(),
        &encode(&xml),
        Some("_another-request-id"),
        &Default::default(),
    );
    assert_code(result, "unknown_in_response_to");
}

#[test]
fn no_pending_request_is_unsolicited_response() {
    let xml = Spec::assertion_signed().signed();
    let result = validate_with(&validator(), &encode(&xml), None, &Default::default());
    assert_code(result, "unsolicited_response");
}

// ---------------------------------------------------------------------------------------------
// 9. Time
// ---------------------------------------------------------------------------------------------

#[test]
fn not_before_in_the_future_is_assertion_not_yet_valid() {
    let spec = Spec {
        not_before: 181 + 60,
        ..Spec::assertion_signed()
    };
    assert_code(validate(&spec.signed()), "assertion_not_yet_valid");
}

#[test]
fn conditions_not_on_or_after_past_is_assertion_expired() {
    let spec = Spec {
        not_before: -900,
        not_on_or_after: -181 - 60,
        ..Spec::assertion_signed()
    };
    assert_code(validate(&spec.signed()), "assertion_expired");
}

#[test]
fn confirmation_not_on_or_after_past_is_assertion_expired() {
    let spec = Spec {
        confirmation_not_on_or_after: -181 - 60,
        ..Spec::assertion_signed()
    };
    assert_code(validate(&spec.signed()), "assertion_expired");
}

#[test]
fn stale_issue_instant_is_issue_instant_invalid() {
    // Default max age 300 s plus 180 s skew: 10 minutes is too old.
    for spec in [Spec::assertion_signed(), Spec::response_signed()] {
        let spec = Spec {
            issue_instant: -600,
            not_before: -630,
            ..spec
        };
        assert_code(validate(&spec.signed()), "issue_instant_invalid");
    }
}

#[test]
fn times_within_default_skew_are_accepted() {
    let cases = [
        Spec {
            not_before: 170,
            ..Spec::both_signed()
        },
        Spec {
            not_before: -900,
            not_on_or_after: -170,
            ..Spec::both_signed()
        },
        Spec {
            confirmation_not_on_or_after: -170,
            ..Spec::both_signed()
        },
        Spec {
            issue_instant: -300 - 170,
            not_before: -500,
            ..Spec::both_signed()
        },
        Spec {
            issue_instant: 170,
            ..Spec::both_signed()
        },
    ];
    for (i, spec) in cases.into_iter().enumerate() {
        let result = validate(&spec.signed());
        assert!(
            result.is_ok(),
            "case {i} refused: {:?}",
            result.err().map(|e| e.code())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10-11. Status and replay
// ---------------------------------------------------------------------------------------------

#[test]
fn status_responder_is_status_not_success() {
    let xml = format!(
        r#"<samlp:Response xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" ID="{RESPONSE_ID}" Version="2.0" IssueInstant="{issued}" Destination="{ACS_URL}" InResponseTo="{REQUEST_ID}"><saml:Issuer>{IDP_ENTITY_ID}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"/></samlp:StatusCode><samlp:StatusMessage>Wrong password</samlp:StatusMessage></samlp:Status></samlp:Response>"#,
        issued = at(-5),
    );
    let err = validate(&xml).unwrap_err();
    assert_eq!(err.code(), "status_not_success");
    let ValidationError::Status(status) = err else {
        panic!("not a status error: {err:?}");
    };
    assert_eq!(status.code, "urn:oasis:names:tc:SAML:2.0:status:Responder");
    assert_eq!(
        status.sub_code.as_deref(),
        Some("urn:oasis:names:tc:SAML:2.0:status:AuthnFailed")
    );
    assert_eq!(status.message.as_deref(), Some("Wrong password"));
}

#[test]
fn same_response_twice_is_assertion_replayed() {
    let form_value = encode(&Spec::both_signed().signed());
    let replay = MemoryReplayCache::default();
    let validator = validator();
    validate_with(&validator, &form_value, Some(REQUEST_ID), &replay).unwrap();
    let second = validate_with(&validator, &form_value, Some(REQUEST_ID), &replay);
    assert_code(second, "assertion_replayed");
}

// ---------------------------------------------------------------------------------------------
// 12. Decoding and parsing
// ---------------------------------------------------------------------------------------------

/// The signed response's body, without the declaration xmlsec1 writes.
fn signed_body() -> String {
    let signed = Spec::assertion_signed().signed();
    without_declaration(&signed).to_string()
}

#[test]
fn doctype_is_xml_doctype() {
    let xml = format!(
        "<!DOCTYPE samlp:Response [<!ENTITY % ext SYSTEM \"http://127.0.0.1:9/x\"> %ext;]>\n{}",
        signed_body()
    );
    assert_code(validate(&xml), "xml_doctype");
}

#[test]
fn utf7_declaration_is_xml_encoding() {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-7\"?>\n{}",
        signed_body()
    );
    assert_code(validate(&xml), "xml_encoding");
}

#[test]
fn bad_base64_is_base64_invalid() {
    let result = validate_with(
        &validator(),
        "PHNhbWxwOlJlc3BvbnNl!!*not base64*",
        Some(REQUEST_ID),
        &Default::default(),
    );
    assert_code(result, "base64_invalid");
}

#[test]
fn not_xml_is_xml_malformed() {
    let body = signed_body();
    let truncated = &body[..body.len() / 2];
    assert_code(validate(truncated), "xml_malformed");
}

#[test]
fn over_max_message_bytes_is_message_too_large() {
    let options = ValidationOptions::default();
    let mut form_value = encode(&Spec::assertion_signed().signed());
    // Line breaks are legal in the form value, so the limit must count them too.
    form_value.push_str(&"\r\n".repeat(options.max_message_bytes / 2 + 1));
    let result = validate_with(
        &validator(),
        &form_value,
        Some(REQUEST_ID),
        &Default::default(),
    );
    assert_code(result, "message_too_large");
}

// ---------------------------------------------------------------------------------------------
// 13. SHA-1
// ---------------------------------------------------------------------------------------------

fn sha1_spec() -> Spec {
    Spec {
        signature: SignatureTemplate {
            signature_method: RSA_SHA1,
            digest_method: SHA1,
            ..SignatureTemplate::default()
        },
        ..Spec::assertion_signed()
    }
}

#[test]
fn rsa_sha1_is_signature_algorithm_refused() {
    assert_code(
        validate(&sha1_spec().signed()),
        "signature_algorithm_refused",
    );
}

#[test]
fn rsa_sha1_is_accepted_when_allowed() {
    let mut validator = validator();
    validator.options.algorithms.allow_sha1 = true;
    let form_value = encode(&sha1_spec().signed());
    let assertion = validate_with(
        &validator,
        &form_value,
        Some(REQUEST_ID),
        &Default::default(),
    )
    .unwrap();
    assert_alice(&assertion);
}

// ---------------------------------------------------------------------------------------------
// 14. Comments inside NameID
// ---------------------------------------------------------------------------------------------

#[test]
fn comment_inside_name_id_reads_whole_text() {
    for spec in [Spec::assertion_signed(), Spec::response_signed()] {
        let spec = Spec {
            name_id: "alice@corp.example<!---->.evil.example".into(),
            ..spec
        };
        let assertion = validate(&spec.signed()).unwrap();
        assert_eq!(assertion.name_id.value, "alice@corp.example.evil.example");
    }
}

// ---------------------------------------------------------------------------------------------
// 15. Signature shape
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_reference_uri_is_signature_reference_invalid() {
    for spec in [Spec::assertion_signed(), Spec::response_signed()] {
        let spec = Spec {
            signature: SignatureTemplate {
                reference_uri: Some(String::new()),
                ..SignatureTemplate::default()
            },
            ..spec
        };
        assert_code(validate(&spec.signed()), "signature_reference_invalid");
    }
}

#[test]
fn reference_naming_another_element_is_signature_reference_invalid() {
    let spec = Spec {
        signature: SignatureTemplate {
            reference_uri: Some(format!("#{RESPONSE_ID}")),
            ..SignatureTemplate::default()
        },
        ..Spec::assertion_signed()
    };
    assert_code(validate(&spec.signed()), "signature_reference_invalid");
}

#[test]
fn xslt_transform_is_signature_transform_refused() {
    let spec = Spec {
        signature: SignatureTemplate {
            extra_transforms: XSLT_TRANSFORM,
            ..SignatureTemplate::default()
        },
        ..Spec::assertion_signed()
    };
    let xml = with_dummy_values(&spec.template());
    assert_code(validate(&xml), "signature_transform_refused");
}

#[test]
fn comment_between_elements_is_accepted() {
    let spec = Spec {
        name_id: "alice@corp.example".into(),
        ..Spec::assertion_signed()
    };
    let template = replace_once(
        &spec.template(),
        "</saml:NameID>",
        "</saml:NameID><!-- between elements -->",
    );
    let xml = xmlsec_sign(&template, ASSERTION_ID, &keys().idp);
    assert_alice(&validate(&xml).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Several IdPs: the unverified Issuer only picks a validator
// ---------------------------------------------------------------------------------------------

#[test]
fn unverified_issuer_picks_and_the_other_idps_validator_refuses() {
    let xml = Spec::assertion_signed().signed();
    let value = encode(&xml);
    assert_eq!(
        saml_sp::response::unverified_issuer(&value, 1 << 20).unwrap(),
        Some(IDP_ENTITY_ID.to_string())
    );
    // The Response names no Issuer of its own: the Assertion's is taken.
    let bare = replace_once(
        &xml,
        &format!("<saml:Issuer>{IDP_ENTITY_ID}</saml:Issuer><samlp:Status>"),
        "<samlp:Status>",
    );
    assert_eq!(
        saml_sp::response::unverified_issuer(&encode(&bare), 1 << 20).unwrap(),
        Some(IDP_ENTITY_ID.to_string())
    );
    assert!(saml_sp::response::unverified_issuer("not base64!", 1 << 20).is_err());
    // Another IdP of the same SP, with its own entity ID and key, never accepts it: not under
    // its own name, and not when the Issuer is changed to its name (the signature breaks).
    let mut other = validator();
    other.idp.entity_id = "https://partners.example.org/idp".into();
    let pem = std::fs::read(&keys().attacker.cert).unwrap();
    let der = openssl::x509::X509::from_pem(&pem)
        .unwrap()
        .to_der()
        .unwrap();
    other.idp.certificates = vec![saml_sp::CertificateDer::from(der)];
    let judge =
        |xml: &str| validate_with(&other, &encode(xml), Some(REQUEST_ID), &Default::default());
    assert_code(judge(&xml), "issuer_mismatch");
    let renamed = xml.replace(IDP_ENTITY_ID, "https://partners.example.org/idp");
    assert_code(judge(&renamed), "signature_invalid");
}

// ---------------------------------------------------------------------------------------------
// 16. Authentication context
// ---------------------------------------------------------------------------------------------

/// The default validator, accepting only the AuthnContextClassRefs in `accepted`.
fn accepting(accepted: &[&str]) -> ResponseValidator {
    let mut v = validator();
    v.options.accepted_authn_contexts = accepted.iter().map(|a| a.to_string()).collect();
    v
}

fn validate_accepting(accepted: &[&str], xml: &str) -> Result<Assertion, ValidationError> {
    validate_with(
        &accepting(accepted),
        &encode(xml),
        Some(REQUEST_ID),
        &Default::default(),
    )
}

#[test]
fn authn_context_is_read_and_any_is_accepted_when_none_is_required() {
    let assertion = validate(&Spec::default().signed()).unwrap();
    assert_eq!(
        assertion.authn_context.as_deref(),
        Some(PASSWORD_PROTECTED_TRANSPORT)
    );
    let bare = Spec {
        authn_context: None,
        ..Spec::default()
    };
    assert_eq!(validate(&bare.signed()).unwrap().authn_context, None);
}

#[test]
fn authn_instant_is_read_from_the_verified_authn_statement() {
    // An hour before the assertion was issued (-5 s): an IdP's single sign-on session.
    let spec = Spec {
        authn_instant: -3600,
        ..Spec::default()
    };
    let assertion = validate(&spec.signed()).unwrap();
    let read = assertion.authn_instant.expect("the AuthnInstant");
    assert_eq!(read.to_rfc3339_opts(SecondsFormat::Secs, true), at(-3600));
}

#[test]
fn required_authn_context_that_came_is_accepted() {
    let xml = Spec::default().signed();
    let assertion = validate_accepting(&[X509, PASSWORD_PROTECTED_TRANSPORT], &xml).unwrap();
    assert_alice(&assertion);
}

#[test]
fn other_authn_context_than_required_is_authn_context_mismatch() {
    let xml = Spec::default().signed();
    let result = validate_accepting(&[X509], &xml);
    assert_code(result.clone(), "authn_context_mismatch");
    assert_eq!(
        result.unwrap_err(),
        ValidationError::AuthnContext {
            found: Some(PASSWORD_PROTECTED_TRANSPORT.to_string())
        }
    );
    // Compared whole: a prefix or another case of an accepted URI is another method.
    assert_code(
        validate_accepting(&["urn:oasis:names:tc:SAML:2.0:ac:classes:Password"], &xml),
        "authn_context_mismatch",
    );
    let shouted = PASSWORD_PROTECTED_TRANSPORT.to_uppercase();
    assert_code(
        validate_accepting(&[shouted.as_str()], &xml),
        "authn_context_mismatch",
    );
}

#[test]
fn no_authn_context_when_one_is_required_is_authn_context_mismatch() {
    let bare = Spec {
        authn_context: None,
        ..Spec::default()
    };
    let result = validate_accepting(&[PASSWORD_PROTECTED_TRANSPORT], &bare.signed());
    assert_eq!(
        result.unwrap_err(),
        ValidationError::AuthnContext { found: None }
    );
}

#[test]
fn every_authn_statement_must_name_an_accepted_method() {
    // A second AuthnStatement, signed with the rest, naming another method.
    let two = Spec {
        authn_context: Some(format!(
            "{PASSWORD_PROTECTED_TRANSPORT}</saml:AuthnContextClassRef></saml:AuthnContext>\
             </saml:AuthnStatement><saml:AuthnStatement AuthnInstant=\"2026-01-01T00:00:00Z\">\
             <saml:AuthnContext><saml:AuthnContextClassRef>{X509}"
        )),
        ..Spec::default()
    };
    let xml = two.signed();
    assert_eq!(
        validate_accepting(&[PASSWORD_PROTECTED_TRANSPORT], &xml).unwrap_err(),
        ValidationError::AuthnContext {
            found: Some(X509.to_string())
        }
    );
    let both = validate_accepting(&[X509, PASSWORD_PROTECTED_TRANSPORT], &xml).unwrap();
    assert_eq!(
        both.authn_context.as_deref(),
        Some(PASSWORD_PROTECTED_TRANSPORT)
    );
}
