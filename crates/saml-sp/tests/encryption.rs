//! Decryption of EncryptedAssertion elements made by an independent tool: the xmlsec1 command
//! line (`xmlsec1 --encrypt` with the SP's certificate), never by this crate. The first half
//! tests the decryption step alone, the second whole responses through the validator.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use openssl::pkey::{PKey, Private};
use saml_sp::encryption::{
    decrypt_assertion, splice, ContentAlgorithm, Decryption, DecryptionError,
};
use saml_sp::xml;
use saml_sp::ResponseValidator;
use saml_sp::{SAMLP_NS, SAML_NS};

use common::{assert_alice, assert_code, encode, validate_with, xmlsec_sign, Spec, REQUEST_ID};

const RESPONSE: &str = r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1"><saml:Issuer>idp</saml:Issuer><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature><saml:EncryptedAssertion><saml:Assertion ID="a1"><saml:Issuer>idp</saml:Issuer><saml:Subject><saml:NameID>alice@corp.example</saml:NameID></saml:Subject></saml:Assertion></saml:EncryptedAssertion></samlp:Response>"#;

const GCM256: &str = "http://www.w3.org/2009/xmlenc11#aes256-gcm";
const GCM128: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
const CBC256: &str = "http://www.w3.org/2001/04/xmlenc#aes256-cbc";
const CBC128: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";

struct KeyPair {
    key: PKey<Private>,
    cert: PathBuf,
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("saml-sp-enc-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn key_pair(dir: &Path, name: &str) -> KeyPair {
    let key_path = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=sp"])
        .arg("-keyout")
        .arg(&key_path)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = PKey::private_key_from_pem(&std::fs::read(&key_path).unwrap()).unwrap();
    KeyPair { key, cert }
}

/// Runs `xmlsec1 --encrypt` on the (only) `saml:Assertion` of `document` for the certificate
/// `cert`, with RSA-OAEP key transport and `content_algorithm`; returns the output document.
fn xmlsec_encrypt(dir: &Path, document: &str, cert: &Path, content_algorithm: &str) -> String {
    let session_key = if content_algorithm.contains("128") {
        "aes-128"
    } else {
        "aes-256"
    };
    let template = format!(
        r#"<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Type="http://www.w3.org/2001/04/xmlenc#Element"><xenc:EncryptionMethod Algorithm="{content_algorithm}"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"><ds:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/></xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedData>"#
    );
    let template_path = dir.join("template.xml");
    let data_path = dir.join("response.xml");
    let out_path = dir.join("encrypted.xml");
    std::fs::write(&template_path, template).unwrap();
    std::fs::write(&data_path, document).unwrap();
    let out = Command::new("xmlsec1")
        .args(["--encrypt", "--pubkey-cert-pem"])
        .arg(cert)
        .args(["--session-key", session_key, "--xml-data"])
        .arg(&data_path)
        .args(["--node-xpath", "//*[local-name()='Assertion']", "--output"])
        .arg(&out_path)
        .arg(&template_path)
        .output()
        .expect("xmlsec1 runs (apt-get install xmlsec1)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    text.strip_prefix("<?xml version=\"1.0\"?>\n")
        .unwrap_or(&text)
        .to_string()
}

/// Encrypts the Assertion of `RESPONSE` for `to` with xmlsec1; `key_beside` moves the
/// EncryptedKey out of KeyInfo to sit beside the EncryptedData, as Okta sends it.
fn encrypt(dir: &Path, to: &KeyPair, content_algorithm: &str, key_beside: bool) -> String {
    let text = xmlsec_encrypt(dir, RESPONSE, &to.cert, content_algorithm);
    if !key_beside {
        return text;
    }
    let start = text.find("<xenc:EncryptedKey>").unwrap();
    let end = text.find("</xenc:EncryptedKey>").unwrap() + "</xenc:EncryptedKey>".len();
    let key = text[start..end].replace(
        "<xenc:EncryptedKey>",
        r#"<xenc:EncryptedKey xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Id="k1">"#,
    );
    let without = format!(
        "{}<ds:RetrievalMethod URI=\"#k1\" Type=\"http://www.w3.org/2001/04/xmlenc#EncryptedKey\"/>{}",
        &text[..start],
        &text[end..]
    );
    without.replace(
        "</xenc:EncryptedData>",
        &format!("</xenc:EncryptedData>{key}"),
    )
}

fn encrypted_element(text: &str) -> xml::Element {
    let root = xml::parse(text).unwrap();
    assert!(root.is(SAMLP_NS, "Response"));
    root.only_child(SAML_NS, "EncryptedAssertion")
        .unwrap()
        .clone()
}

fn decryption(keys: Vec<PKey<Private>>, allow_cbc: bool) -> Decryption {
    Decryption { keys, allow_cbc }
}

#[test]
fn aes_gcm_assertion_decrypts_and_splices_into_place() {
    let dir = work_dir("gcm");
    let sp = key_pair(&dir, "sp");
    for algorithm in [GCM256, GCM128] {
        let text = encrypt(&dir, &sp, algorithm, false);
        assert!(!text.contains("alice"), "xmlsec1 did not encrypt");
        let plain = decrypt_assertion(
            &encrypted_element(&text),
            &decryption(vec![sp.key.clone()], false),
        )
        .unwrap();
        assert!(plain.starts_with("<saml:Assertion ID=\"a1\">"), "{plain}");
        let spliced = splice(&text, &plain).unwrap();
        let root = xml::parse(&spliced).unwrap();
        let assertion = root.only_child(SAML_NS, "Assertion").unwrap();
        assert_eq!(assertion.attr("ID"), Some("a1"));
        assert!(root.only_child(SAML_NS, "EncryptedAssertion").is_none());
        // The Response's own signature covered the ciphertext and is cut.
        assert!(!spliced.contains("ds:Signature"));
    }
}

#[test]
fn encrypted_key_beside_the_data_is_found_without_following_the_uri() {
    let dir = work_dir("beside");
    let sp = key_pair(&dir, "sp");
    let text = encrypt(&dir, &sp, GCM256, true);
    assert!(text.contains("RetrievalMethod"));
    let plain = decrypt_assertion(
        &encrypted_element(&text),
        &decryption(vec![sp.key.clone()], false),
    )
    .unwrap();
    assert!(plain.contains("alice@corp.example"));
}

#[test]
fn cbc_is_refused_unless_allowed() {
    let dir = work_dir("cbc");
    let sp = key_pair(&dir, "sp");
    for algorithm in [CBC256, CBC128] {
        let element = encrypted_element(&encrypt(&dir, &sp, algorithm, false));
        assert_eq!(
            decrypt_assertion(&element, &decryption(vec![sp.key.clone()], false)),
            Err(DecryptionError)
        );
        let plain = decrypt_assertion(&element, &decryption(vec![sp.key.clone()], true)).unwrap();
        assert!(plain.ends_with("</saml:Assertion>"), "{plain}");
    }
}

#[test]
fn another_key_fails_and_the_right_one_among_several_works() {
    let dir = work_dir("keys");
    let sp = key_pair(&dir, "sp");
    let other = key_pair(&dir, "other");
    let element = encrypted_element(&encrypt(&dir, &sp, GCM256, false));
    assert_eq!(
        decrypt_assertion(&element, &decryption(vec![other.key.clone()], false)),
        Err(DecryptionError)
    );
    // During a rollover both keys are configured; the newer one may come first.
    assert!(decrypt_assertion(&element, &decryption(vec![other.key, sp.key], false)).is_ok());
}

#[test]
fn tampered_gcm_ciphertext_fails_uniformly() {
    let dir = work_dir("tamper");
    let sp = key_pair(&dir, "sp");
    let text = encrypt(&dir, &sp, GCM256, false);
    // Flip one character of the last CipherValue (the content, after the wrapped key).
    let at = text.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len() + 20;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        decrypt_assertion(&encrypted_element(&text), &decryption(vec![sp.key], false)),
        Err(DecryptionError)
    );
}

#[test]
fn pkcs1_v15_key_transport_is_refused() {
    let dir = work_dir("rsa15");
    let sp = key_pair(&dir, "sp");
    let text = encrypt(&dir, &sp, GCM256, false).replace(
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
        "http://www.w3.org/2001/04/xmlenc#rsa-1_5",
    );
    assert_eq!(
        decrypt_assertion(&encrypted_element(&text), &decryption(vec![sp.key], false)),
        Err(DecryptionError)
    );
}

#[test]
fn splice_needs_exactly_one_encrypted_assertion_under_the_response() {
    assert_eq!(splice("<r/>", "<a/>"), Err(DecryptionError));
    let two = RESPONSE.replace(
        "</samlp:Response>",
        "<saml:EncryptedAssertion/></samlp:Response>",
    );
    assert_eq!(splice(&two, "<a/>"), Err(DecryptionError));
}

// ---------------------------------------------------------------------------------------------
// Whole responses: the IdP signs the Assertion, encrypts it, maybe signs the Response
// ---------------------------------------------------------------------------------------------

/// A response from `spec`: Assertion signed (when the spec says so), then encrypted for `sp`
/// with `content_algorithm`, then the Response signed (when the spec says so), as an IdP does.
fn encrypted_response(spec: &Spec, sp: &KeyPair, content_algorithm: &str) -> String {
    let keys = common::keys();
    let mut xml = spec.template();
    if spec.sign_assertion {
        xml = xmlsec_sign(&xml, &spec.assertion_id, &keys.idp);
    }
    let start = xml.find("<saml:Assertion").unwrap();
    let end = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    let wrapped = format!(
        "{}<saml:EncryptedAssertion>{}</saml:EncryptedAssertion>{}",
        &xml[..start],
        &xml[start..end],
        &xml[end..]
    );
    // Tests run in parallel: each encryption gets its own folder.
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = work_dir(&format!("flow-{run}"));
    let mut xml = xmlsec_encrypt(&dir, &wrapped, &sp.cert, content_algorithm);
    assert!(!xml.contains("alice@corp.example"));
    if spec.sign_response {
        xml = xmlsec_sign(&xml, &spec.response_id, &keys.idp);
    }
    xml
}

fn validator_for(sp: &KeyPair, allow_cbc: bool) -> ResponseValidator {
    let mut validator = common::validator();
    validator.options.decryption = Some(decryption(vec![sp.key.clone()], allow_cbc));
    validator
}

fn validate_encrypted(
    validator: &ResponseValidator,
    xml: &str,
) -> Result<saml_sp::Assertion, saml_sp::ValidationError> {
    validate_with(
        validator,
        &encode(xml),
        Some(REQUEST_ID),
        &Default::default(),
    )
}

fn sp_keys(name: &str) -> KeyPair {
    key_pair(&work_dir(name), "sp")
}

#[test]
fn encrypted_signed_assertion_is_accepted() {
    let sp = sp_keys("accept");
    for spec in [Spec::assertion_signed(), Spec::both_signed()] {
        for algorithm in [GCM256, GCM128] {
            let xml = encrypted_response(&spec, &sp, algorithm);
            assert_alice(&validate_encrypted(&validator_for(&sp, false), &xml).unwrap());
        }
    }
}

#[test]
fn without_decryption_keys_encrypted_assertion_is_unsupported() {
    let sp = sp_keys("nokeys");
    let xml = encrypted_response(&Spec::assertion_signed(), &sp, GCM256);
    assert_code(
        validate_encrypted(&common::validator(), &xml),
        "encrypted_assertion_unsupported",
    );
}

#[test]
fn encrypted_for_another_sp_is_decryption_failed() {
    let sp = sp_keys("mine");
    let other = sp_keys("theirs");
    let xml = encrypted_response(&Spec::assertion_signed(), &other, GCM256);
    assert_code(
        validate_encrypted(&validator_for(&sp, true), &xml),
        "decryption_failed",
    );
}

#[test]
fn cbc_needs_a_signed_response_and_the_switch() {
    let sp = sp_keys("cbc-flow");
    // Only the Assertion signed: the CBC ciphertext itself is unauthenticated, so it is never
    // decrypted (no padding oracle), even when CBC is allowed.
    let unsigned = encrypted_response(&Spec::assertion_signed(), &sp, CBC256);
    assert_code(
        validate_encrypted(&validator_for(&sp, true), &unsigned),
        "decryption_failed",
    );
    let signed = encrypted_response(&Spec::both_signed(), &sp, CBC256);
    assert_code(
        validate_encrypted(&validator_for(&sp, false), &signed),
        "decryption_failed",
    );
    assert_alice(&validate_encrypted(&validator_for(&sp, true), &signed).unwrap());
}

#[test]
fn decrypted_assertion_must_carry_its_own_signature() {
    let sp = sp_keys("unsigned-inner");
    let xml = encrypted_response(&Spec::response_signed(), &sp, GCM256);
    assert_code(
        validate_encrypted(&validator_for(&sp, false), &xml),
        "signature_missing",
    );
}

#[test]
fn ciphertext_changed_under_a_response_signature_is_signature_invalid() {
    let sp = sp_keys("tamper-flow");
    let xml = encrypted_response(&Spec::both_signed(), &sp, GCM256);
    let at = xml.rfind("<xenc:CipherValue>").unwrap() + "<xenc:CipherValue>".len() + 20;
    let mut bytes = xml.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let xml = String::from_utf8(bytes).unwrap();
    assert_code(
        validate_encrypted(&validator_for(&sp, false), &xml),
        "signature_invalid",
    );
}

#[test]
fn two_encrypted_assertions_are_multiple_assertions() {
    let sp = sp_keys("two");
    let xml = encrypted_response(&Spec::assertion_signed(), &sp, GCM256);
    let start = xml.find("<saml:EncryptedAssertion>").unwrap();
    let end = xml.find("</saml:EncryptedAssertion>").unwrap() + "</saml:EncryptedAssertion>".len();
    let doubled = format!("{}{}{}", &xml[..end], &xml[start..end], &xml[end..]);
    assert_code(
        validate_encrypted(&validator_for(&sp, false), &doubled),
        "multiple_assertions",
    );
}

#[test]
fn metadata_offers_cbc_only_when_allowed() {
    assert!(ContentAlgorithm::uris(false)
        .iter()
        .all(|u| u.ends_with("-gcm")));
    assert!(ContentAlgorithm::uris(true)
        .iter()
        .any(|u| u.ends_with("-cbc")));
}
