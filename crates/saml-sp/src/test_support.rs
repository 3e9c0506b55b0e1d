//! Helpers shared by the unit tests.

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};

/// A fresh RSA-2048 key and a self-signed certificate (DER) for it, valid for a day.
pub(crate) fn key_and_cert() -> (PKey<Private>, Vec<u8>) {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut builder = openssl::x509::X509Builder::new().unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "idp").unwrap();
    let name = name.build();
    builder.set_version(2).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    let serial = openssl::bn::BigNum::from_u32(1)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    builder.set_serial_number(&serial).unwrap();
    builder
        .set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    builder.set_pubkey(&key).unwrap();
    builder.sign(&key, MessageDigest::sha256()).unwrap();
    let der = builder.build().to_der().unwrap();
    (key, der)
}
