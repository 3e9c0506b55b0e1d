//! The SLO endpoint: arbitrary bytes as an IdP's LogoutRequest or LogoutResponse, checked with
//! the seeds' IdP certificate at a fixed clock. Every call must return, never panic.
//!
//! Each input is tried as what an attacker sends (the raw query string of a GET), as the XML
//! of a POST (base64-encoded here first) and as the XML of a Redirect (deflated and
//! base64-encoded here first), the last two also through `unverified_issuer`, which parses the
//! message before any signature is checked. A message read as valid must have passed the
//! signature check, so it must carry one.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use base64::Engine;
use chrono::{DateTime, Utc};
use flate2::write::DeflateEncoder;
use libfuzzer_sys::fuzz_target;
use saml_sp::logout::{
    read_logout_request, read_logout_response, unverified_issuer, Incoming, LogoutChecks,
};
use saml_sp::signature::AlgorithmPolicy;
use saml_sp::CertificateDer;

const CERT: &[u8] = include_bytes!("../fixtures/logout-idp.cert.der");
const LIMIT: usize = 64 * 1024;

fn fixed() -> &'static ([CertificateDer; 1], DateTime<Utc>) {
    static FIXED: OnceLock<([CertificateDer; 1], DateTime<Utc>)> = OnceLock::new();
    FIXED.get_or_init(|| {
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .expect("fixed clock")
            .with_timezone(&Utc);
        ([CertificateDer::from(CERT.to_vec())], now)
    })
}

fn read_both(incoming: Incoming<'_>, checks: &LogoutChecks<'_>) -> bool {
    let request = read_logout_request(incoming, checks);
    if let Ok(request) = &request {
        assert!(!request.id.is_empty() && !request.name_id.value.is_empty());
    }
    let response = read_logout_response(incoming, checks, "_sp-logout-1");
    request.is_ok() || response.is_ok()
}

fuzz_target!(|data: &[u8]| {
    let (certificates, now) = fixed();
    let checks = LogoutChecks {
        idp_entity_id: "https://idp.example/metadata",
        alternate_issuer: None,
        certificates,
        slo_url: "https://dash.example.com/saml/slo",
        algorithms: AlgorithmPolicy::default(),
        clock_skew: std::time::Duration::from_secs(180),
        max_issue_age: std::time::Duration::from_secs(300),
        max_message_bytes: LIMIT,
        now: *now,
    };
    let b64 = base64::engine::general_purpose::STANDARD;

    let query = String::from_utf8_lossy(data);
    if read_both(Incoming::Redirect(&query), &checks) {
        let signed = url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "Signature");
        assert!(signed, "read as valid without a signature");
    }

    let posted = b64.encode(data);
    let _ = unverified_issuer(&posted, false, LIMIT);
    let incoming = Incoming::Post {
        message: &posted,
        relay_state: Some("/dashboards/ops"),
    };
    if read_both(incoming, &checks) {
        assert!(
            data.windows(9).any(|w| w == b"Signature"),
            "read as valid without a signature"
        );
    }

    let mut deflater = DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    if deflater.write_all(data).is_ok() {
        if let Ok(deflated) = deflater.finish() {
            let _ = unverified_issuer(&b64.encode(deflated), true, LIMIT);
        }
    }
});
