//! `ResponseValidator` on real signed SAML Responses.
//!
//! Every signature here is made by an independent implementation, the `xmlsec1` command-line
//! tool, with keys and certificates made by the `openssl` command-line tool (both once per test
//! run, in a private temporary folder). Each test builds a Response from one template, changes
//! the field it is about, signs it where needed, tampers with it where needed and checks the
//! validator's verdict by its stable error code.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake};

use base64::Engine;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use saml_sp::response::{ReplayCacheUnavailable, ServiceProvider, TrustedIdp, ValidationOptions};
use saml_sp::{Assertion, CertificateDer, ReplayCache, ResponseValidator, ValidationError};

// ---------------------------------------------------------------------------------------------
// Parties and clock
// ---------------------------------------------------------------------------------------------

const IDP_ENTITY_ID: &str = "https://idp.example.org/saml2/idp/metadata.php";
const SP_ENTITY_ID: &str = "https://dash.example.com/saml/metadata";
const ACS_URL: &str = "https://dash.example.com/saml/acs";
const REQUEST_ID: &str = "_a3f9c1d27b5e48e0b6c4f1a2d3e4f5a6";
const RESPONSE_ID: &str = "_resp-7c1e2d3f4a5b6c7d8e9f";
const ASSERTION_ID: &str = "_assert-0a1b2c3d4e5f6a7b8c9d";

const SAMLP_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
const XSLT_TRANSFORM: &str = r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:template match="/"><xsl:copy-of select="."/></xsl:template></xsl:stylesheet></ds:Transform>"#;

/// The fixed clock every test validates at.
fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// `now` moved by `seconds`, as an xs:dateTime.
fn at(seconds: i64) -> String {
    (now() + TimeDelta::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

// ---------------------------------------------------------------------------------------------
// Keys (openssl CLI, once per run)
// ---------------------------------------------------------------------------------------------

struct KeyPair {
    key: PathBuf,
    cert: PathBuf,
}

struct Keys {
    dir: PathBuf,
    idp: KeyPair,
    attacker: KeyPair,
    idp_cert_der: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let unique = format!(
            "saml-sp-validate-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap();
        let idp = make_key_pair(&dir, "idp", "idp.example.org");
        let attacker = make_key_pair(&dir, "attacker", "idp.example.org");
        let der = dir.join("idp.der");
        run_tool(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&idp.cert)
                .arg("-out")
                .arg(&der),
        );
        let idp_cert_der = std::fs::read(&der).unwrap();
        Keys {
            dir,
            idp,
            attacker,
            idp_cert_der,
        }
    })
}

fn make_key_pair(dir: &Path, name: &str, common_name: &str) -> KeyPair {
    let key = dir.join(format!("{name}.key.pem"));
    let cert = dir.join(format!("{name}.cert.pem"));
    run_tool(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
            ])
            .arg("-subj")
            .arg(format!("/CN={common_name}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    KeyPair { key, cert }
}

fn run_tool(command: &mut Command) {
    let out = command.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs the first `ds:Signature` template found at or under the element whose ID is `node_id`.
fn xmlsec_sign(xml: &str, node_id: &str, pair: &KeyPair) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = &keys().dir;
    let input = dir.join(format!("in-{n}.xml"));
    let output = dir.join(format!("out-{n}.xml"));
    std::fs::write(&input, xml).unwrap();
    let mut key_arg = pair.key.clone().into_os_string();
    key_arg.push(",");
    key_arg.push(&pair.cert);
    run_tool(
        Command::new("xmlsec1")
            .arg("--sign")
            .arg("--privkey-pem")
            .arg(key_arg)
            .args(["--id-attr:ID", &format!("{SAML_NS}:Assertion")])
            .args(["--id-attr:ID", &format!("{SAMLP_NS}:Response")])
            .args(["--node-id", node_id])
            .arg("--output")
            .arg(&output)
            .arg(&input),
    );
    let signed = std::fs::read_to_string(&output).unwrap();
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    signed
}

// ---------------------------------------------------------------------------------------------
// The Response template
// ---------------------------------------------------------------------------------------------

/// The shape of the `ds:Signature` templates inserted before signing.
#[derive(Clone)]
struct SignatureTemplate {
    signature_method: &'static str,
    digest_method: &'static str,
    /// `None`: `#` plus the ID of the element that carries the signature.
    reference_uri: Option<String>,
    /// Extra `ds:Transform` elements after the two usual ones.
    extra_transforms: &'static str,
}

impl Default for SignatureTemplate {
    fn default() -> Self {
        SignatureTemplate {
            signature_method: RSA_SHA256,
            digest_method: SHA256,
            reference_uri: None,
            extra_transforms: "",
        }
    }
}

impl SignatureTemplate {
    fn render(&self, signed_id: &str) -> String {
        let uri = self
            .reference_uri
            .clone()
            .unwrap_or_else(|| format!("#{signed_id}"));
        format!(
            r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="{sm}"/><ds:Reference URI="{uri}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>{extra}</ds:Transforms><ds:DigestMethod Algorithm="{dm}"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature>"#,
            sm = self.signature_method,
            dm = self.digest_method,
            extra = self.extra_transforms,
        )
    }
}

/// One Response; every field is what ends up in the XML. Times are seconds relative to `now()`.
#[derive(Clone)]
struct Spec {
    response_id: String,
    assertion_id: String,
    destination: String,
    response_issuer: String,
    assertion_issuer: String,
    in_response_to: Option<String>,
    status: String,
    /// Raw XML content of the NameID element.
    name_id: String,
    recipient: String,
    audience: String,
    session_index: String,
    issue_instant: i64,
    not_before: i64,
    not_on_or_after: i64,
    confirmation_not_on_or_after: i64,
    sign_assertion: bool,
    sign_response: bool,
    signature: SignatureTemplate,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            response_id: RESPONSE_ID.into(),
            assertion_id: ASSERTION_ID.into(),
            destination: ACS_URL.into(),
            response_issuer: IDP_ENTITY_ID.into(),
            assertion_issuer: IDP_ENTITY_ID.into(),
            in_response_to: Some(REQUEST_ID.into()),
            status: "urn:oasis:names:tc:SAML:2.0:status:Success".into(),
            name_id: "alice@corp.example".into(),
            recipient: ACS_URL.into(),
            audience: SP_ENTITY_ID.into(),
            session_index: "_session-5d6e7f80".into(),
            issue_instant: -5,
            not_before: -35,
            not_on_or_after: 295,
            confirmation_not_on_or_after: 295,
            sign_assertion: true,
            sign_response: false,
            signature: SignatureTemplate::default(),
        }
    }
}

impl Spec {
    fn assertion_signed() -> Spec {
        Spec::default()
    }

    fn response_signed() -> Spec {
        Spec {
            sign_assertion: false,
            sign_response: true,
            ..Spec::default()
        }
    }

    fn both_signed() -> Spec {
        Spec {
            sign_assertion: true,
            sign_response: true,
            ..Spec::default()
        }
    }

    fn unsigned() -> Spec {
        Spec {
            sign_assertion: false,
            sign_response: false,
            ..Spec::default()
        }
    }

    /// The Assertion element, with a signature template when it is to be signed.
    fn assertion_xml(&self) -> String {
        let irt = match &self.in_response_to {
            Some(id) => format!(r#" InResponseTo="{id}""#),
            None => String::new(),
        };
        let signature = if self.sign_assertion {
            self.signature.render(&self.assertion_id)
        } else {
            String::new()
        };
        format!(
            r#"<saml:Assertion xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="{aid}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{issuer}</saml:Issuer>{signature}<saml:Subject><saml:NameID SPNameQualifier="{sp}" Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="{scd_noa}" Recipient="{recipient}"{irt}/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{nb}" NotOnOrAfter="{noa}"><saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AuthnStatement AuthnInstant="{issued}" SessionNotOnOrAfter="{session_end}" SessionIndex="{session_index}"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement><saml:Attribute Name="mail" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue xsi:type="xs:string">alice@corp.example</saml:AttributeValue></saml:Attribute><saml:Attribute Name="groups" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue xsi:type="xs:string">analytics</saml:AttributeValue><saml:AttributeValue xsi:type="xs:string">finance</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>"#,
            aid = self.assertion_id,
            issued = at(self.issue_instant),
            issuer = self.assertion_issuer,
            sp = SP_ENTITY_ID,
            name_id = self.name_id,
            scd_noa = at(self.confirmation_not_on_or_after),
            recipient = self.recipient,
            nb = at(self.not_before),
            noa = at(self.not_on_or_after),
            audience = self.audience,
            session_end = at(8 * 3600),
            session_index = self.session_index,
        )
    }

    /// The whole Response, unsigned, with signature templates where signatures are wanted.
    fn template(&self) -> String {
        let irt = match &self.in_response_to {
            Some(id) => format!(r#" InResponseTo="{id}""#),
            None => String::new(),
        };
        let signature = if self.sign_response {
            self.signature.render(&self.response_id)
        } else {
            String::new()
        };
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<samlp:Response xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" ID="{rid}" Version="2.0" IssueInstant="{issued}" Destination="{destination}"{irt}><saml:Issuer>{issuer}</saml:Issuer>{signature}<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>{assertion}</samlp:Response>
"#,
            rid = self.response_id,
            issued = at(self.issue_instant),
            destination = self.destination,
            issuer = self.response_issuer,
            status = self.status,
            assertion = self.assertion_xml(),
        )
    }

    /// Signed by the IdP's key: the Assertion first, then the Response.
    fn signed(&self) -> String {
        self.signed_by(&keys().idp)
    }

    fn signed_by(&self, pair: &KeyPair) -> String {
        let mut xml = self.template();
        if self.sign_assertion {
            xml = xmlsec_sign(&xml, &self.assertion_id, pair);
        }
        if self.sign_response {
            xml = xmlsec_sign(&xml, &self.response_id, pair);
        }
        xml
    }
}

/// The `saml:Assertion` element of `xml`, as text.
fn assertion_of(xml: &str) -> &str {
    let start = xml.find("<saml:Assertion").expect("an assertion");
    let end = xml.rfind("</saml:Assertion>").expect("an assertion") + "</saml:Assertion>".len();
    &xml[start..end]
}

/// `xml` with its `ds:Signature` elements removed.
fn without_signatures(xml: &str) -> String {
    let mut out = xml.to_string();
    while let Some(start) = out.find("<ds:Signature") {
        let end = out[start..].find("</ds:Signature>").unwrap() + start + "</ds:Signature>".len();
        out.replace_range(start..end, "");
    }
    out
}

/// Fills empty DigestValue and SignatureValue elements with base64 that signs nothing.
fn with_dummy_values(xml: &str) -> String {
    xml.replace(
        "<ds:DigestValue></ds:DigestValue>",
        "<ds:DigestValue>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</ds:DigestValue>",
    )
    .replace(
        "<ds:SignatureValue></ds:SignatureValue>",
        "<ds:SignatureValue>AAAA</ds:SignatureValue>",
    )
}

/// `xml` without its leading `<?xml ...?>` declaration.
fn without_declaration(xml: &str) -> &str {
    let xml = xml.trim_start();
    match xml.strip_prefix("<?xml ") {
        Some(rest) => rest[rest.find("?>").unwrap() + 2..].trim_start(),
        None => xml,
    }
}

/// Replaces the one occurrence of `from` in `xml` (so that a typo cannot make a test vacuous).
fn replace_once(xml: &str, from: &str, to: &str) -> String {
    assert_eq!(
        xml.matches(from).count(),
        1,
        "expected one {from:?} in the response"
    );
    xml.replacen(from, to, 1)
}

// ---------------------------------------------------------------------------------------------
// Validator, replay cache and a tiny executor
// ---------------------------------------------------------------------------------------------

fn validator() -> ResponseValidator {
    ResponseValidator {
        sp: ServiceProvider {
            entity_id: SP_ENTITY_ID.into(),
            acs_url: ACS_URL.into(),
        },
        idp: TrustedIdp {
            entity_id: IDP_ENTITY_ID.into(),
            certificates: vec![CertificateDer::from(keys().idp_cert_der.clone())],
        },
        options: ValidationOptions::default(),
    }
}

#[derive(Default)]
struct MemoryReplayCache {
    seen: Mutex<HashSet<String>>,
}

impl ReplayCache for MemoryReplayCache {
    fn first_use(
        &self,
        assertion_id: &str,
        _until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, ReplayCacheUnavailable>> + Send {
        let fresh = self.seen.lock().unwrap().insert(assertion_id.to_string());
        std::future::ready(Ok(fresh))
    }
}

/// Runs a future to completion on this thread.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn encode(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

fn validate_with(
    validator: &ResponseValidator,
    form_value: &str,
    expected_request: Option<&str>,
    replay: &MemoryReplayCache,
) -> Result<Assertion, ValidationError> {
    block_on(validator.validate(form_value, expected_request, now(), replay))
}

/// Validates `xml` with the default validator, the pending request and a fresh replay cache.
fn validate(xml: &str) -> Result<Assertion, ValidationError> {
    validate_with(
        &validator(),
        &encode(xml),
        Some(REQUEST_ID),
        &Default::default(),
    )
}

#[track_caller]
fn assert_code(result: Result<Assertion, ValidationError>, code: &str) {
    match result {
        Ok(a) => panic!("accepted (NameID {:?}), expected {code}", a.name_id.value),
        Err(e) => assert_eq!(e.code(), code, "refused for another reason: {e}"),
    }
}

#[track_caller]
fn assert_refused_as_one_of(result: Result<Assertion, ValidationError>, codes: &[&str]) {
    match result {
        Ok(a) => panic!(
            "accepted (NameID {:?}), expected one of {codes:?}",
            a.name_id.value
        ),
        Err(e) => assert!(
            codes.iter().any(|c| match c.strip_suffix('*') {
                Some(prefix) => e.code().starts_with(prefix),
                None => e.code() == *c,
            }),
            "refused as {} ({e}), expected one of {codes:?}",
            e.code()
        ),
    }
}

#[track_caller]
fn assert_alice(assertion: &Assertion) {
    assert_eq!(assertion.id, ASSERTION_ID);
    assert_eq!(assertion.issuer, IDP_ENTITY_ID);
    assert_eq!(assertion.name_id.value, "alice@corp.example");
    assert_eq!(
        assertion.name_id.format.as_deref(),
        Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress")
    );
    assert_eq!(
        assertion.session_index.as_deref(),
        Some("_session-5d6e7f80")
    );
    assert_eq!(assertion.in_response_to.as_deref(), Some(REQUEST_ID));
    assert_eq!(assertion.attribute("mail"), ["alice@corp.example"]);
    assert_eq!(assertion.attribute("groups"), ["analytics", "finance"]);
    assert_eq!(assertion.not_on_or_after, now() + TimeDelta::seconds(295));
    assert_eq!(
        assertion.session_not_on_or_after,
        Some(now() + TimeDelta::seconds(8 * 3600))
    );
}

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
