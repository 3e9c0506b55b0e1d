//! IdP metadata: where it comes from ([`MetadataSource`]), reading, parsing and
//! signature-checking it, and the PEM certificates an IdP's settings name.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the IdP's metadata comes from.
#[derive(Debug, Clone)]
pub enum MetadataSource {
    /// A local file, read when the config is loaded (at start-up and at each SIGHUP).
    File {
        /// The file.
        path: PathBuf,
        /// Its metadata, checked.
        metadata: saml_sp::metadata::IdpMetadata,
    },
    /// A URL fetched at start-up and in the background.
    Url {
        /// The URL (https, or http on loopback or with a metadata signing certificate).
        url: url::Url,
        /// Time between two fetches (shortened by the document's `cacheDuration`).
        refresh_interval: Duration,
        /// Keeps the last good copy, so that start-up works while the URL does not answer.
        backing_file: PathBuf,
        /// The HTTP proxy the fetch tunnels through, when the network needs one.
        proxy: Option<crate::fetch_proxy::MetadataProxy>,
    },
}

/// Reads, parses and (with `signers`) signature-checks a metadata file; the message names the
/// file.
pub fn read_metadata_file(
    path: &Path,
    entity_id: Option<&str>,
    signers: &[saml_sp::CertificateDer],
) -> Result<saml_sp::metadata::IdpMetadata, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_metadata(&text, entity_id, signers, None).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses metadata text, signature-checked against `signers` when there are any, and refused
/// past its `validUntil` when `now` is given.
pub fn parse_metadata(
    text: &str,
    entity_id: Option<&str>,
    signers: &[saml_sp::CertificateDer],
    now: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<saml_sp::metadata::IdpMetadata, saml_sp::metadata::MetadataError> {
    use saml_sp::metadata as md;
    match (signers.is_empty(), now) {
        (true, None) => md::parse_idp_metadata(text, entity_id),
        (true, Some(now)) => md::parse_current_idp_metadata(text, entity_id, now),
        // A signed document is checked against validUntil at `now`, or only read when the
        // caller keeps an older copy on purpose (start-up from the backing file).
        (false, now) => {
            let at = now.unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            md::parse_signed_idp_metadata(text, entity_id, signers, at)
        }
    }
}

/// `metadata` with `extra` signing certificates added (each once).
pub fn with_extra_certs(
    mut metadata: saml_sp::metadata::IdpMetadata,
    extra: &[saml_sp::CertificateDer],
) -> saml_sp::metadata::IdpMetadata {
    for cert in extra {
        if !metadata.signing_certificates.contains(cert) {
            metadata.signing_certificates.push(cert.clone());
        }
    }
    metadata
}

/// The PEM certificates in `path`, as DER; at least one.
pub(super) fn read_certificates(path: &Path) -> Result<Vec<saml_sp::CertificateDer>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = openssl::x509::X509::stack_from_pem(&pem)
        .map_err(|_| "is not a PEM certificate".to_string())?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    certs
        .iter()
        .map(|c| {
            c.to_der()
                .map(saml_sp::CertificateDer::from)
                .map_err(|_| "holds a certificate that cannot be encoded".to_string())
        })
        .collect()
}

/// Checks a metadata URL: https, or plain http only where nobody on the network can change
/// the answer unseen (a loopback host, unless it is reached `through_proxy`: then it is the
/// proxy's loopback, across the network) or where the document's signature is checked.
pub(super) fn check_metadata_url(
    text: &str,
    signature_checked: bool,
    through_proxy: bool,
) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    let loopback = crate::federation::is_loopback(&url) && !through_proxy;
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback || signature_checked => Ok(url),
        "http" => Err(
            "is plain http: anyone on the network path could swap the IdP's certificates; \
             use https, or set idp.metadata_signing_cert so that the document's signature is \
             checked"
                .into(),
        ),
        other => Err(format!("must be an https:// URL, not {other}:")),
    }
}
