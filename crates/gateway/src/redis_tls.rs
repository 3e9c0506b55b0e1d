//! The files of `sessions.redis_tls`: what a `rediss://` connection trusts and shows, read and
//! checked when the store is opened (by `serve`, the session commands and `check-config`), and
//! handed to the store as the bytes that were checked. `serve` reads them again on SIGHUP
//! ([`renew_on_hangup`]): a renewed client certificate goes in force without a restart.

use openssl::x509::X509;
use session_store::{RedisStore, RedisTls};

use crate::config::{Config, ConfigError, StoreKind};
use crate::state::unix_now;

/// Reads and checks the files of `sessions.redis_tls` (for `serve`, the session commands and
/// `check-config`): the CA file holds PEM certificates, the client certificate is valid now
/// and the key is its key. `None`: no such settings (plain `redis://`, or `rediss://` with the
/// system's roots). Errors name the file, the setting and the path, never the key.
pub fn load(config: &Config) -> Result<Option<RedisTls>, ConfigError> {
    let Some(files) = &config.sessions.redis_tls else {
        return Ok(None);
    };
    let err = |key: &str, message: String| ConfigError {
        file: config.file.clone(),
        key: key.to_string(),
        message,
    };
    let ca_pem = match &files.ca_file {
        None => None,
        Some(path) => {
            let key = "sessions.redis_tls.ca_file";
            let pem = crate::tls::read(path).map_err(|m| err(key, m))?;
            let certs = X509::stack_from_pem(&pem).map_err(|_| {
                err(
                    key,
                    format!("not a file of PEM certificates: {}", path.display()),
                )
            })?;
            if certs.is_empty() {
                return Err(err(
                    key,
                    format!("holds no PEM certificate: {}", path.display()),
                ));
            }
            // The certificates as checked, written again: the TLS library reads plain
            // `CERTIFICATE` blocks only.
            let checked = crate::tls::to_pem(certs.iter().map(|c| &**c))
                .map_err(|_| err(key, format!("cannot be used: {}", path.display())))?;
            Some(checked)
        }
    };
    let client = match &files.client {
        None => None,
        Some(pair) => {
            let keys = crate::tls::PairKeys {
                cert: "sessions.redis_tls.cert_file",
                key: "sessions.redis_tls.key_file",
            };
            let checked =
                crate::tls::read_pair(pair, keys, unix_now()).map_err(|e| err(e.key, e.message))?;
            crate::tls::key_file_warning(
                &pair.key_file,
                "the Redis client key (sessions.redis_tls.key_file)",
            );
            let validity = crate::tls::validity(&checked.leaf);
            if let Some(days) = validity.and_then(|v| v.warn_days_left(unix_now())) {
                tracing::warn!(
                    cert_file = %pair.cert_file.display(),
                    days_left = days,
                    "the Redis client certificate (sessions.redis_tls.cert_file) expires soon; \
                     renew it and send SIGHUP"
                );
            }
            // What was checked is what is used, not the files read again.
            let chain =
                std::iter::once(&*checked.leaf).chain(checked.intermediates.iter().map(|c| &**c));
            let cert = crate::tls::to_pem(chain).map_err(|_| {
                err(
                    keys.cert,
                    format!("cannot be used: {}", pair.cert_file.display()),
                )
            })?;
            let key = checked.key.private_key_to_pem_pkcs8().map_err(|_| {
                err(
                    keys.key,
                    format!("cannot be used: {}", pair.key_file.display()),
                )
            })?;
            Some((cert, key))
        }
    };
    let tls = RedisTls { ca_pem, client };
    if let StoreKind::Redis { url, .. } = &config.sessions.store {
        RedisStore::check_url(url, Some(&tls))
            .map_err(|e| err("sessions.redis_tls", e.to_string()))?;
    }
    Ok(Some(tls))
}

/// On SIGHUP, reads the files of `sessions.redis_tls` again and, when they changed and pass the
/// checks of start-up, connects to Redis with them and uses that connection from then on;
/// `in_force` is what the store connected with. Files that fail the checks, or a server that
/// does not answer with them, change nothing (the next SIGHUP tries again).
pub async fn renew_on_hangup(config: Config, store: RedisStore, mut in_force: Option<RedisTls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; renewed Redis TLS files need a restart");
        return;
    };
    while hangup.recv().await.is_some() {
        let renewed = match load(&config) {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::error!(error = %e, "Redis TLS reload refused; the connection in force stays");
                continue;
            }
        };
        if renewed == in_force {
            tracing::info!("the Redis TLS files (sessions.redis_tls) are unchanged");
            continue;
        }
        match store.renew_tls(renewed.as_ref()).await {
            Ok(()) => {
                tracing::info!(
                    "reconnected to Redis with the renewed TLS files (sessions.redis_tls)"
                );
                in_force = renewed;
            }
            Err(e) => tracing::error!(
                error = %e,
                "Redis TLS reload refused: no connection with the new files; the connection in \
                 force stays"
            ),
        }
    }
}
