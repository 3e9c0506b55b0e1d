//! Decryption of an `EncryptedAssertion` (XML Encryption 1.1) with the SP's private keys.
//!
//! The flow: the content key is unwrapped with RSA-OAEP (`xmlenc#rsa-oaep-mgf1p` or
//! `xmlenc11#rsa-oaep`, SHA-1 to SHA-512 digests) from the `EncryptedKey` inside the
//! `EncryptedData`'s `KeyInfo` or, as Okta sends it, beside the `EncryptedData`; no URI is ever
//! followed. The content is AES-GCM (128/192/256), or AES-CBC only when the caller allows it.
//! RSA PKCS#1 v1.5 key transport is never accepted (Bleichenbacher's oracle). Every failure is
//! the one [`DecryptionError`], whatever step failed, so that the ACS is no decryption oracle.
//! [`splice`] then puts the plaintext where the `EncryptedAssertion` stood; the result is
//! validated like any other response, so the decrypted Assertion must carry the IdP's signature.

use base64::Engine;
use openssl::md::{Md, MdRef};
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::symm::{decrypt_aead, Cipher, Crypter, Mode};
use quick_xml::events::Event;
use quick_xml::NsReader;

use crate::xml::Element;
use crate::{DS_NS, SAMLP_NS, SAML_NS};

/// XML Encryption namespace.
pub const XENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";
/// XML Encryption 1.1 namespace.
pub const XENC11_NS: &str = "http://www.w3.org/2009/xmlenc11#";

const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
const RSA_OAEP: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";

/// Largest ciphertext accepted, in bytes (the whole message is capped before this anyway).
const MAX_CIPHERTEXT: usize = 1024 * 1024;

/// The SP's decryption keys and what it accepts.
#[derive(Clone)]
pub struct Decryption {
    /// Private keys to try, newest first (two during a key rollover).
    pub keys: Vec<PKey<Private>>,
    /// Accept AES-CBC content encryption. Callers accept it only when the Response's signature
    /// covers the ciphertext: CBC alone has no integrity.
    pub allow_cbc: bool,
}

impl std::fmt::Debug for Decryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Decryption")
            .field("keys", &self.keys.len())
            .field("allow_cbc", &self.allow_cbc)
            .finish()
    }
}

/// The encrypted assertion could not be decrypted; deliberately says nothing about why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the encrypted assertion cannot be decrypted")]
pub struct DecryptionError;

/// A content-encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentAlgorithm {
    /// AES-GCM with a key of this many bytes: authenticated.
    Gcm(usize),
    /// AES-CBC with a key of this many bytes: not authenticated.
    Cbc(usize),
}

impl ContentAlgorithm {
    /// The algorithm named by an `EncryptionMethod` URI, when it is one of ours.
    pub fn from_uri(uri: &str) -> Option<ContentAlgorithm> {
        Some(match uri {
            "http://www.w3.org/2009/xmlenc11#aes128-gcm" => ContentAlgorithm::Gcm(16),
            "http://www.w3.org/2009/xmlenc11#aes192-gcm" => ContentAlgorithm::Gcm(24),
            "http://www.w3.org/2009/xmlenc11#aes256-gcm" => ContentAlgorithm::Gcm(32),
            "http://www.w3.org/2001/04/xmlenc#aes128-cbc" => ContentAlgorithm::Cbc(16),
            "http://www.w3.org/2001/04/xmlenc#aes192-cbc" => ContentAlgorithm::Cbc(24),
            "http://www.w3.org/2001/04/xmlenc#aes256-cbc" => ContentAlgorithm::Cbc(32),
            _ => return None,
        })
    }

    /// URIs of every content algorithm, GCM first, for SP metadata.
    pub fn uris(allow_cbc: bool) -> Vec<&'static str> {
        let mut uris = vec![
            "http://www.w3.org/2009/xmlenc11#aes256-gcm",
            "http://www.w3.org/2009/xmlenc11#aes128-gcm",
        ];
        if allow_cbc {
            uris.extend([
                "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
                "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
            ]);
        }
        uris
    }
}

/// The content algorithm of the `EncryptedAssertion` under `encrypted`.
pub fn content_algorithm(encrypted: &Element) -> Result<ContentAlgorithm, DecryptionError> {
    let data = encrypted
        .only_child(XENC_NS, "EncryptedData")
        .ok_or(DecryptionError)?;
    let method = data
        .only_child(XENC_NS, "EncryptionMethod")
        .and_then(|m| m.attr("Algorithm"))
        .ok_or(DecryptionError)?;
    ContentAlgorithm::from_uri(method).ok_or(DecryptionError)
}

/// Decrypts the `EncryptedAssertion` element `encrypted` and returns the plaintext XML.
pub fn decrypt_assertion(
    encrypted: &Element,
    decryption: &Decryption,
) -> Result<String, DecryptionError> {
    let algorithm = content_algorithm(encrypted)?;
    if matches!(algorithm, ContentAlgorithm::Cbc(_)) && !decryption.allow_cbc {
        return Err(DecryptionError);
    }
    let data = encrypted
        .only_child(XENC_NS, "EncryptedData")
        .ok_or(DecryptionError)?;
    let encrypted_key = data
        .only_child(DS_NS, "KeyInfo")
        .and_then(|k| k.only_child(XENC_NS, "EncryptedKey"))
        .or_else(|| encrypted.only_child(XENC_NS, "EncryptedKey"))
        .ok_or(DecryptionError)?;
    let wrapped = cipher_value(encrypted_key)?;
    // Everything that can fail on its own is checked before the RSA step, so that the work
    // after it is the same whatever the key transport's padding held.
    let content = cipher_value(data)?;
    let key = decryption
        .keys
        .iter()
        .find_map(|k| unwrap_key(encrypted_key, &wrapped, k).ok())
        .ok_or(DecryptionError)?;
    let plain = match algorithm {
        ContentAlgorithm::Gcm(len) => decrypt_gcm(len, &key, &content)?,
        ContentAlgorithm::Cbc(len) => decrypt_cbc(len, &key, &content)?,
    };
    String::from_utf8(plain).map_err(|_| DecryptionError)
}

fn cipher_value(parent: &Element) -> Result<Vec<u8>, DecryptionError> {
    let text = parent
        .only_child(XENC_NS, "CipherData")
        .and_then(|d| d.only_child(XENC_NS, "CipherValue"))
        .ok_or(DecryptionError)?
        .text();
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > MAX_CIPHERTEXT * 4 / 3 + 4 {
        return Err(DecryptionError);
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| DecryptionError)
}

fn digest_by_uri(uri: Option<&str>) -> Result<&'static MdRef, DecryptionError> {
    Ok(match uri {
        None | Some("http://www.w3.org/2000/09/xmldsig#sha1") => Md::sha1(),
        Some("http://www.w3.org/2001/04/xmlenc#sha256") => Md::sha256(),
        Some("http://www.w3.org/2001/04/xmldsig-more#sha384") => Md::sha384(),
        Some("http://www.w3.org/2001/04/xmlenc#sha512") => Md::sha512(),
        _ => return Err(DecryptionError),
    })
}

fn mgf_by_uri(uri: Option<&str>) -> Result<&'static MdRef, DecryptionError> {
    Ok(match uri {
        None | Some("http://www.w3.org/2009/xmlenc11#mgf1sha1") => Md::sha1(),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha256") => Md::sha256(),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha384") => Md::sha384(),
        Some("http://www.w3.org/2009/xmlenc11#mgf1sha512") => Md::sha512(),
        _ => return Err(DecryptionError),
    })
}

fn unwrap_key(
    encrypted_key: &Element,
    wrapped: &[u8],
    key: &PKey<Private>,
) -> Result<Vec<u8>, DecryptionError> {
    let method = encrypted_key
        .only_child(XENC_NS, "EncryptionMethod")
        .ok_or(DecryptionError)?;
    let digest = digest_by_uri(
        method
            .only_child(DS_NS, "DigestMethod")
            .and_then(|d| d.attr("Algorithm")),
    )?;
    let mgf = match method.attr("Algorithm") {
        Some(RSA_OAEP_MGF1P) => Md::sha1(),
        Some(RSA_OAEP) => mgf_by_uri(
            method
                .only_child(XENC11_NS, "MGF")
                .and_then(|m| m.attr("Algorithm")),
        )?,
        _ => return Err(DecryptionError),
    };
    // OAEPparams (a label) is legal but unused by every IdP; refuse rather than guess.
    if method.only_child(XENC_NS, "OAEPparams").is_some() {
        return Err(DecryptionError);
    }
    let step = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut ctx = PkeyCtx::new(key)?;
        ctx.decrypt_init()?;
        ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
        ctx.set_rsa_oaep_md(digest)?;
        ctx.set_rsa_mgf1_md(mgf)?;
        let mut out = Vec::new();
        ctx.decrypt_to_vec(wrapped, &mut out)?;
        Ok(out)
    };
    step().map_err(|_| DecryptionError)
}

fn decrypt_gcm(key_len: usize, key: &[u8], content: &[u8]) -> Result<Vec<u8>, DecryptionError> {
    const IV: usize = 12;
    const TAG: usize = 16;
    let cipher = match key_len {
        16 => Cipher::aes_128_gcm(),
        24 => Cipher::aes_192_gcm(),
        32 => Cipher::aes_256_gcm(),
        _ => return Err(DecryptionError),
    };
    if key.len() != key_len || content.len() < IV + TAG {
        return Err(DecryptionError);
    }
    let (iv, rest) = content.split_at(IV);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG);
    decrypt_aead(cipher, key, Some(iv), &[], ciphertext, tag).map_err(|_| DecryptionError)
}

fn decrypt_cbc(key_len: usize, key: &[u8], content: &[u8]) -> Result<Vec<u8>, DecryptionError> {
    const BLOCK: usize = 16;
    let cipher = match key_len {
        16 => Cipher::aes_128_cbc(),
        24 => Cipher::aes_192_cbc(),
        32 => Cipher::aes_256_cbc(),
        _ => return Err(DecryptionError),
    };
    if key.len() != key_len || content.len() < 2 * BLOCK || !content.len().is_multiple_of(BLOCK) {
        return Err(DecryptionError);
    }
    let (iv, ciphertext) = content.split_at(BLOCK);
    let run = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut crypter = Crypter::new(cipher, Mode::Decrypt, key, Some(iv))?;
        // XML Encryption padding: any bytes, the last one counts them; not PKCS#7.
        crypter.pad(false);
        let mut out = vec![0u8; ciphertext.len() + BLOCK];
        let mut n = crypter.update(ciphertext, &mut out)?;
        n += crypter.finalize(&mut out[n..])?;
        out.truncate(n);
        Ok(out)
    };
    let mut plain = run().map_err(|_| DecryptionError)?;
    let pad = usize::from(*plain.last().ok_or(DecryptionError)?);
    if pad == 0 || pad > BLOCK || pad > plain.len() {
        return Err(DecryptionError);
    }
    plain.truncate(plain.len() - pad);
    Ok(plain)
}

/// `text` (a Response) with its `EncryptedAssertion` replaced by `plaintext` and its own
/// `ds:Signature` cut out: that signature covered the ciphertext, was verified by the caller
/// before decrypting, and cannot verify over the plaintext.
pub fn splice(text: &str, plaintext: &str) -> Result<String, DecryptionError> {
    let mut reader = NsReader::from_str(text);
    let mut depth = 0usize;
    let mut encrypted = None;
    let mut signature = None;
    let mut open: Option<(usize, bool)> = None; // (start offset, is the EncryptedAssertion)
    loop {
        let before = offset(reader.buffer_position())?;
        let (resolved, event) = reader.read_resolved_event().map_err(|_| DecryptionError)?;
        let ns = match resolved {
            quick_xml::name::ResolveResult::Bound(ns) => Some(ns.0.to_string()),
            _ => None,
        };
        let is = |e: &quick_xml::events::BytesStart<'_>, want_ns: &str, name: &str| {
            ns.as_deref() == Some(want_ns) && e.local_name().as_ref() == name
        };
        match event {
            Event::Start(e) => {
                if depth == 0 && !is(&e, SAMLP_NS, "Response") {
                    return Err(DecryptionError);
                }
                if depth == 1 && open.is_none() {
                    if is(&e, SAML_NS, "EncryptedAssertion") {
                        open = Some((before, true));
                    } else if is(&e, DS_NS, "Signature") {
                        open = Some((before, false));
                    }
                }
                depth += 1;
            }
            Event::Empty(e) if depth == 1 && is(&e, SAML_NS, "EncryptedAssertion") => {
                return Err(DecryptionError);
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or(DecryptionError)?;
                if depth == 1 {
                    if let Some((start, is_encrypted)) = open.take() {
                        let range = start..offset(reader.buffer_position())?;
                        let slot = if is_encrypted {
                            &mut encrypted
                        } else {
                            &mut signature
                        };
                        if slot.replace(range).is_some() {
                            return Err(DecryptionError);
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let encrypted = encrypted.ok_or(DecryptionError)?;
    let mut cuts = vec![(encrypted, plaintext)];
    if let Some(signature) = signature {
        cuts.push((signature, ""));
    }
    cuts.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(text.len() + plaintext.len());
    let mut from = 0;
    for (range, replacement) in cuts {
        out.push_str(text.get(from..range.start).ok_or(DecryptionError)?);
        out.push_str(replacement);
        from = range.end;
    }
    out.push_str(text.get(from..).ok_or(DecryptionError)?);
    Ok(out)
}

fn offset(p: u64) -> Result<usize, DecryptionError> {
    usize::try_from(p).map_err(|_| DecryptionError)
}
