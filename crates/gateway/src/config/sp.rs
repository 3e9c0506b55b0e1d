//! The `sp:` section: this gateway's own SAML settings ([`SpConfig`]), its entity ID and key
//! pairs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{both_or_neither, ConfigError};

/// `sp:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSp {
    entity_id: Option<String>,
    key_file: PathBuf,
    cert_file: PathBuf,
    next_key_file: Option<PathBuf>,
    next_cert_file: Option<PathBuf>,
    #[serde(default)]
    sign_authn_requests: bool,
    #[serde(default)]
    encrypted_assertions: bool,
}

/// This SP's own settings.
#[derive(Debug, Clone)]
pub struct SpConfig {
    /// The SP entity ID.
    pub entity_id: String,
    /// The SP private key (PEM); generated with the certificate when both are absent.
    pub key_file: PathBuf,
    /// The SP certificate (PEM).
    pub cert_file: PathBuf,
    /// The next key pair (PEM), published in metadata before it is promoted; both or neither.
    pub next_key_pair: Option<(PathBuf, PathBuf)>,
    /// Sign AuthnRequests (HTTP-Redirect binding signature).
    pub sign_authn_requests: bool,
    /// Publish the SP certificate for encryption and decrypt `EncryptedAssertion`s with the
    /// SP key.
    pub encrypted_assertions: bool,
}

/// Checks `sp.*`; the entity ID defaults to the metadata URL under `public_url`.
pub(super) fn check_sp(
    raw: RawSp,
    public_url: &str,
    resolve: &dyn Fn(&Path) -> PathBuf,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<SpConfig, ConfigError> {
    let next_key_pair = both_or_neither(
        (raw.next_key_file.as_deref(), "sp.next_key_file"),
        (raw.next_cert_file.as_deref(), "sp.next_cert_file"),
        " (the next key pair is both files)",
    )
    .map_err(|(key, message)| err(key, &message))?
    .map(|(key, cert)| (resolve(key), resolve(cert)));
    let sp = SpConfig {
        entity_id: raw
            .entity_id
            .unwrap_or_else(|| format!("{public_url}/saml/metadata")),
        key_file: resolve(&raw.key_file),
        cert_file: resolve(&raw.cert_file),
        next_key_pair,
        sign_authn_requests: raw.sign_authn_requests,
        encrypted_assertions: raw.encrypted_assertions,
    };
    if sp.entity_id.trim().is_empty() {
        return Err(err("sp.entity_id", "must not be empty"));
    }
    Ok(sp)
}
