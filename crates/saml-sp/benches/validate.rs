//! Throughput of `ResponseValidator::validate_without_replay` on a realistic signed Response.
//!
//! The fixture (`fixtures/response.b64`, made once by `fixtures/generate.sh`) is an Entra
//! ID-shaped Response of about 7.5 KB: the Assertion signed with RSA-SHA256, ten attributes,
//! one of them 30 group IDs. The clock is fixed inside the fixture's validity window, so the
//! benchmark keeps passing whatever today's date is. Run by hand:
//!
//! ```text
//! cargo bench -p saml-sp --bench validate
//! ```

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use saml_sp::response::{ServiceProvider, TrustedIdp, ValidationOptions};
use saml_sp::{CertificateDer, ResponseValidator};

const FORM_VALUE: &str = include_str!("fixtures/response.b64");
const IDP_CERT: &[u8] = include_bytes!("fixtures/idp.cert.der");
const REQUEST_ID: &str = "id-8d1f0c5e4b3a29187766554433221100ffeeddcc";
/// Five seconds after the fixture's IssueInstant.
const NOW: &str = "2026-11-22T10:00:00Z";

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

fn now() -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(NOW) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("bad fixed clock {NOW}: {e}"),
    }
}

fn validate(c: &mut Criterion) {
    let validator = validator();
    let now = now();
    // A benchmark of a refusal would measure nothing useful: check the fixture passes first.
    let assertion = match validator.validate_without_replay(FORM_VALUE, Some(REQUEST_ID), now) {
        Ok(a) => a,
        Err(e) => panic!("the fixture must validate: {} ({e})", e.code()),
    };
    assert_eq!(assertion.name_id.value, "alice.wonderland@corp.example");
    assert_eq!(
        assertion
            .attribute("http://schemas.microsoft.com/identity/claims/groups")
            .len(),
        30
    );

    let mut group = c.benchmark_group("response");
    group.throughput(Throughput::Elements(1));
    group.bench_function("validate_without_replay/entra_8k_rsa_sha256", |b| {
        b.iter(|| {
            validator.validate_without_replay(
                black_box(FORM_VALUE),
                black_box(Some(REQUEST_ID)),
                black_box(now),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
