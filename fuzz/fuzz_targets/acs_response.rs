//! The ACS entry point: arbitrary bytes as the `SAMLResponse` form value, validated with the
//! benchmark fixture's IdP certificate at a fixed clock. It must return, never panic.
//!
//! Each input is tried twice: as the form value itself (what an attacker posts), and as the
//! decoded XML (base64-encoded here first), so that mutations reach the parser, the structure
//! checks and xmlsec instead of dying in base64.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use saml_sp::response::{ServiceProvider, TrustedIdp, ValidationOptions};
use saml_sp::{CertificateDer, ResponseValidator};

const IDP_CERT: &[u8] = include_bytes!("../../crates/saml-sp/benches/fixtures/idp.cert.der");
const REQUEST_ID: &str = "id-8d1f0c5e4b3a29187766554433221100ffeeddcc";

fn validator() -> &'static (ResponseValidator, DateTime<Utc>) {
    static VALIDATOR: OnceLock<(ResponseValidator, DateTime<Utc>)> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let validator = ResponseValidator {
            sp: ServiceProvider {
                entity_id: "https://dash.example.com/saml/metadata".into(),
                acs_url: "https://dash.example.com/saml/acs".into(),
            },
            idp: TrustedIdp {
                entity_id: "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/".into(),
                certificates: vec![CertificateDer::from(IDP_CERT.to_vec())],
            },
            options: ValidationOptions::default(),
        };
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .expect("fixed clock")
            .with_timezone(&Utc);
        (validator, now)
    })
}

fuzz_target!(|data: &[u8]| {
    let (validator, now) = validator();
    let form_value = String::from_utf8_lossy(data);
    let _ = validator.validate_without_replay(&form_value, Some(REQUEST_ID), *now);
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let _ = validator.validate_without_replay(&encoded, Some(REQUEST_ID), *now);
});
