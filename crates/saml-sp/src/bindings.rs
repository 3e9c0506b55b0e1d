//! Encodings of the SAML bindings: HTTP-Redirect (DEFLATE + base64 + URL query) and the
//! base64 form value of HTTP-POST (see [`crate::response::decode_post_value`]).

use std::io::{Read, Write};

use base64::Engine;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;

use crate::error::MessageError;

/// The only SigAlg this SP signs Redirect-binding messages with.
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// Failure to sign an outgoing message.
#[derive(Debug, thiserror::Error)]
#[error("signing the SAML message failed")]
pub struct SigningError;

/// Percent-encodes a query parameter value.
fn query_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Builds an HTTP-Redirect binding URL for `message_xml` sent to `endpoint` as `param`
/// (`SAMLRequest` or `SAMLResponse`), signed with `key` when given (SAML bindings 3.4.4.1: the
/// signature covers `param=..&RelayState=..&SigAlg=..` exactly as they appear in the URL).
pub fn redirect_url(
    endpoint: &str,
    param: &str,
    message_xml: &str,
    relay_state: Option<&str>,
    key: Option<&PKey<Private>>,
) -> Result<String, SigningError> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(message_xml.as_bytes())
        .map_err(|_| SigningError)?;
    let deflated = encoder.finish().map_err(|_| SigningError)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(deflated);

    let mut query = format!("{param}={}", query_encode(&encoded));
    if let Some(relay_state) = relay_state {
        query.push_str("&RelayState=");
        query.push_str(&query_encode(relay_state));
    }
    if let Some(key) = key {
        query.push_str("&SigAlg=");
        query.push_str(&query_encode(RSA_SHA256));
        let mut signer = Signer::new(MessageDigest::sha256(), key).map_err(|_| SigningError)?;
        let signature = signer
            .sign_oneshot_to_vec(query.as_bytes())
            .map_err(|_| SigningError)?;
        query.push_str("&Signature=");
        query.push_str(&query_encode(
            &base64::engine::general_purpose::STANDARD.encode(signature),
        ));
    }
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    Ok(format!("{endpoint}{separator}{query}"))
}

/// The HTTP-POST binding form value for `message_xml` (base64 of the XML), with an enveloped
/// signature by `key` over the element whose ID is `id` when a key is given.
pub fn post_value(
    message_xml: &str,
    id: &str,
    key: Option<&PKey<Private>>,
) -> Result<String, SigningError> {
    let xml = match key {
        Some(key) => {
            crate::signature::sign_enveloped(message_xml, id, key).map_err(|_| SigningError)?
        }
        None => message_xml.to_string(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(xml))
}

/// Decodes an HTTP-Redirect binding value (base64 of raw DEFLATE), inflating at most
/// `max_inflated` bytes so that a DEFLATE bomb stops while streaming.
pub fn decode_redirect_value(value: &str, max_inflated: usize) -> Result<String, MessageError> {
    if value.len() > max_inflated {
        return Err(MessageError::TooLarge);
    }
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| MessageError::Base64)?;
    let mut inflated = Vec::new();
    let limit = u64::try_from(max_inflated)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    DeflateDecoder::new(compressed.as_slice())
        .take(limit)
        .read_to_end(&mut inflated)
        .map_err(|_| MessageError::Inflate)?;
    if inflated.len() > max_inflated {
        return Err(MessageError::TooLarge);
    }
    String::from_utf8(inflated).map_err(|_| MessageError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_round_trip_and_signature_covers_query() {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let url = redirect_url(
            "https://idp/sso?x=1",
            "SAMLRequest",
            "<a/>",
            Some("r s"),
            Some(&key),
        )
        .unwrap();
        let query = url.strip_prefix("https://idp/sso?x=1&").unwrap();
        let (signed, signature) = query.split_once("&Signature=").unwrap();
        assert!(signed.ends_with(&format!("SigAlg={}", query_encode(RSA_SHA256))));
        let signature: String = url::form_urlencoded::parse(format!("s={signature}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .unwrap();
        let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &key).unwrap();
        assert!(verifier
            .verify_oneshot(&signature, signed.as_bytes())
            .unwrap());

        let value: String = url::form_urlencoded::parse(signed.as_bytes())
            .find(|(k, _)| k == "SAMLRequest")
            .unwrap()
            .1
            .into_owned();
        assert_eq!(decode_redirect_value(&value, 1000).unwrap(), "<a/>");
    }

    #[test]
    fn inflate_stops_at_the_limit() {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![b'a'; 10 * 1024 * 1024]).unwrap();
        let bomb = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
        assert_eq!(
            decode_redirect_value(&bomb, 64 * 1024),
            Err(MessageError::TooLarge)
        );
    }

    #[test]
    fn post_values_carry_an_enveloped_signature_that_verifies_and_breaks_when_changed() {
        let (key, cert) = crate::test_support::key_and_cert();
        let request = crate::logout::LogoutRequest {
            id: "_post-1".into(),
            issue_instant: chrono::Utc::now(),
            destination: "https://idp/slo".into(),
            issuer: "https://sp/metadata".into(),
            name_id: crate::response::NameId {
                value: "alice".into(),
                format: None,
                name_qualifier: None,
                sp_name_qualifier: None,
            },
            session_index: Some("s1".into()),
        };
        let value = post_value(&request.to_xml(), &request.id, Some(&key)).unwrap();
        let xml = crate::response::decode_post_value(&value, 1 << 20).unwrap();
        let root = crate::xml::parse(&xml).unwrap();
        let signature = root
            .only_child(crate::DS_NS, "Signature")
            .expect("the signature sits under the root");
        let policy = crate::signature::AlgorithmPolicy::default();
        crate::signature::check_shape(signature, "_post-1", policy).unwrap();
        let trusted = [samael::crypto::CertificateDer::from(cert)];
        let verified = crate::signature::verify_and_reduce(&xml, &trusted, policy).unwrap();
        assert!(verified.contains(">alice<"), "{verified}");
        let changed = xml.replace(">alice<", ">mallory<");
        assert!(crate::signature::verify_and_reduce(&changed, &trusted, policy).is_err());
        // Unsigned when no key is given.
        let plain = post_value("<x/>", "_x", None).unwrap();
        assert_eq!(
            crate::response::decode_post_value(&plain, 99).unwrap(),
            "<x/>"
        );
    }
}
