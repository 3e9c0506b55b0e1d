//! The shared harness of the `ResponseValidator` integration tests.
//!
//! Every signature here is made by an independent implementation, the `xmlsec1` command-line
//! tool, with keys and certificates made by the `openssl` command-line tool (both once per test
//! run, in a private temporary folder). A test builds a Response from one template ([`Spec`]),
//! changes the field it is about, signs it where needed, tampers with it where needed and checks
//! the validator's verdict by its stable error code.
// Each test binary uses a different part of the harness.
#![allow(dead_code)]

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

pub const IDP_ENTITY_ID: &str = "https://idp.example.org/saml2/idp/metadata.php";
pub const SP_ENTITY_ID: &str = "https://dash.example.com/saml/metadata";
pub const ACS_URL: &str = "https://dash.example.com/saml/acs";
pub const REQUEST_ID: &str = "_a3f9c1d27b5e48e0b6c4f1a2d3e4f5a6";
pub const RESPONSE_ID: &str = "_resp-7c1e2d3f4a5b6c7d8e9f";
pub const ASSERTION_ID: &str = "_assert-0a1b2c3d4e5f6a7b8c9d";
pub const PASSWORD_PROTECTED_TRANSPORT: &str =
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport";
pub const X509: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509";

pub const SAMLP_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const XSLT_TRANSFORM: &str = r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:template match="/"><xsl:copy-of select="."/></xsl:template></xsl:stylesheet></ds:Transform>"#;

/// The fixed clock every test validates at.
pub fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// `now` moved by `seconds`, as an xs:dateTime.
pub fn at(seconds: i64) -> String {
    (now() + TimeDelta::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

// ---------------------------------------------------------------------------------------------
// Keys (openssl CLI, once per run)
// ---------------------------------------------------------------------------------------------

pub struct KeyPair {
    pub key: PathBuf,
    pub cert: PathBuf,
}

pub struct Keys {
    pub dir: PathBuf,
    pub idp: KeyPair,
    pub attacker: KeyPair,
    pub idp_cert_der: Vec<u8>,
}

pub fn keys() -> &'static Keys {
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

pub fn make_key_pair(dir: &Path, name: &str, common_name: &str) -> KeyPair {
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

pub fn run_tool(command: &mut Command) {
    let out = command.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs the first `ds:Signature` template found at or under the element whose ID is `node_id`.
pub fn xmlsec_sign(xml: &str, node_id: &str, pair: &KeyPair) -> String {
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
pub struct SignatureTemplate {
    pub signature_method: &'static str,
    pub digest_method: &'static str,
    /// `None`: `#` plus the ID of the element that carries the signature.
    pub reference_uri: Option<String>,
    /// Extra `ds:Transform` elements after the two usual ones.
    pub extra_transforms: &'static str,
    /// The SignedInfo `CanonicalizationMethod` algorithm.
    pub canonicalization: &'static str,
    /// The `ds:KeyInfo` element xmlsec1 fills in when signing.
    pub key_info: &'static str,
}

impl Default for SignatureTemplate {
    fn default() -> Self {
        SignatureTemplate {
            signature_method: RSA_SHA256,
            digest_method: SHA256,
            reference_uri: None,
            extra_transforms: "",
            canonicalization: EXC_C14N,
            key_info: "<ds:KeyInfo><ds:X509Data/></ds:KeyInfo>",
        }
    }
}

impl SignatureTemplate {
    pub fn render(&self, signed_id: &str) -> String {
        let uri = self
            .reference_uri
            .clone()
            .unwrap_or_else(|| format!("#{signed_id}"));
        format!(
            r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{c14n}"/><ds:SignatureMethod Algorithm="{sm}"/><ds:Reference URI="{uri}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>{extra}</ds:Transforms><ds:DigestMethod Algorithm="{dm}"/><ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>{key_info}</ds:Signature>"#,
            c14n = self.canonicalization,
            key_info = self.key_info,
            sm = self.signature_method,
            dm = self.digest_method,
            extra = self.extra_transforms,
        )
    }
}

/// One Response; every field is what ends up in the XML. Times are seconds relative to `now()`.
#[derive(Clone)]
pub struct Spec {
    pub response_id: String,
    pub assertion_id: String,
    pub destination: String,
    pub response_issuer: String,
    pub assertion_issuer: String,
    pub in_response_to: Option<String>,
    pub status: String,
    /// Raw XML content of the NameID element.
    pub name_id: String,
    pub recipient: String,
    pub audience: String,
    pub session_index: String,
    pub issue_instant: i64,
    pub not_before: i64,
    pub not_on_or_after: i64,
    pub confirmation_not_on_or_after: i64,
    pub session_not_on_or_after: i64,
    pub sign_assertion: bool,
    pub sign_response: bool,
    pub signature: SignatureTemplate,
    /// The AuthnStatement's AuthnContextClassRef; `None` leaves its AuthnContext empty.
    pub authn_context: Option<String>,
    /// The AuthnStatement's AuthnInstant, in seconds from now.
    pub authn_instant: i64,
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
            session_not_on_or_after: 8 * 3600,
            sign_assertion: true,
            sign_response: false,
            signature: SignatureTemplate::default(),
            authn_context: Some(PASSWORD_PROTECTED_TRANSPORT.into()),
            authn_instant: -5,
        }
    }
}

impl Spec {
    pub fn assertion_signed() -> Spec {
        Spec::default()
    }

    pub fn response_signed() -> Spec {
        Spec {
            sign_assertion: false,
            sign_response: true,
            ..Spec::default()
        }
    }

    pub fn both_signed() -> Spec {
        Spec {
            sign_assertion: true,
            sign_response: true,
            ..Spec::default()
        }
    }

    pub fn unsigned() -> Spec {
        Spec {
            sign_assertion: false,
            sign_response: false,
            ..Spec::default()
        }
    }

    /// The Assertion element, with a signature template when it is to be signed.
    pub fn assertion_xml(&self) -> String {
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
            r#"<saml:Assertion xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="{aid}" Version="2.0" IssueInstant="{issued}"><saml:Issuer>{issuer}</saml:Issuer>{signature}<saml:Subject><saml:NameID SPNameQualifier="{sp}" Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{name_id}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="{scd_noa}" Recipient="{recipient}"{irt}/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{nb}" NotOnOrAfter="{noa}"><saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AuthnStatement AuthnInstant="{authn_instant}" SessionNotOnOrAfter="{session_end}" SessionIndex="{session_index}"><saml:AuthnContext>{class_ref}</saml:AuthnContext></saml:AuthnStatement><saml:AttributeStatement><saml:Attribute Name="mail" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue xsi:type="xs:string">alice@corp.example</saml:AttributeValue></saml:Attribute><saml:Attribute Name="groups" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic"><saml:AttributeValue xsi:type="xs:string">analytics</saml:AttributeValue><saml:AttributeValue xsi:type="xs:string">finance</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>"#,
            aid = self.assertion_id,
            issued = at(self.issue_instant),
            authn_instant = at(self.authn_instant),
            issuer = self.assertion_issuer,
            sp = SP_ENTITY_ID,
            name_id = self.name_id,
            scd_noa = at(self.confirmation_not_on_or_after),
            recipient = self.recipient,
            nb = at(self.not_before),
            noa = at(self.not_on_or_after),
            audience = self.audience,
            session_end = at(self.session_not_on_or_after),
            session_index = self.session_index,
            class_ref = self
                .authn_context
                .as_deref()
                .map_or(String::new(), |c| format!(
                    "<saml:AuthnContextClassRef>{c}</saml:AuthnContextClassRef>"
                )),
        )
    }

    /// The whole Response, unsigned, with signature templates where signatures are wanted.
    pub fn template(&self) -> String {
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
    pub fn signed(&self) -> String {
        self.signed_by(&keys().idp)
    }

    pub fn signed_by(&self, pair: &KeyPair) -> String {
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
pub fn assertion_of(xml: &str) -> &str {
    let start = xml.find("<saml:Assertion").expect("an assertion");
    let end = xml.rfind("</saml:Assertion>").expect("an assertion") + "</saml:Assertion>".len();
    &xml[start..end]
}

/// `xml` with its `ds:Signature` elements removed.
pub fn without_signatures(xml: &str) -> String {
    let mut out = xml.to_string();
    while let Some(start) = out.find("<ds:Signature") {
        let end = out[start..].find("</ds:Signature>").unwrap() + start + "</ds:Signature>".len();
        out.replace_range(start..end, "");
    }
    out
}

/// Fills empty DigestValue and SignatureValue elements with base64 that signs nothing.
pub fn with_dummy_values(xml: &str) -> String {
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
pub fn without_declaration(xml: &str) -> &str {
    let xml = xml.trim_start();
    match xml.strip_prefix("<?xml ") {
        Some(rest) => rest[rest.find("?>").unwrap() + 2..].trim_start(),
        None => xml,
    }
}

/// Replaces the one occurrence of `from` in `xml` (so that a typo cannot make a test vacuous).
pub fn replace_once(xml: &str, from: &str, to: &str) -> String {
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

pub fn validator() -> ResponseValidator {
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
pub struct MemoryReplayCache {
    pub seen: Mutex<HashSet<String>>,
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
pub fn block_on<F: Future>(future: F) -> F::Output {
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

pub fn encode(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

pub fn validate_with(
    validator: &ResponseValidator,
    form_value: &str,
    expected_request: Option<&str>,
    replay: &MemoryReplayCache,
) -> Result<Assertion, ValidationError> {
    block_on(validator.validate(form_value, expected_request, now(), replay))
}

/// Validates `xml` with the default validator, the pending request and a fresh replay cache.
pub fn validate(xml: &str) -> Result<Assertion, ValidationError> {
    validate_with(
        &validator(),
        &encode(xml),
        Some(REQUEST_ID),
        &Default::default(),
    )
}

#[track_caller]
pub fn assert_code(result: Result<Assertion, ValidationError>, code: &str) {
    match result {
        Ok(a) => panic!("accepted (NameID {:?}), expected {code}", a.name_id.value),
        Err(e) => assert_eq!(e.code(), code, "refused for another reason: {e}"),
    }
}

#[track_caller]
pub fn assert_refused_as_one_of(result: Result<Assertion, ValidationError>, codes: &[&str]) {
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
pub fn assert_alice(assertion: &Assertion) {
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
