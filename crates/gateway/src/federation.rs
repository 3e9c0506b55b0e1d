//! The IdP trust in force, and how it follows the IdP's metadata.
//!
//! With `idp.metadata_file`, the trust is that file's, read when the config is loaded: at
//! start-up and again at each SIGHUP ([`Federation::replace`]).
//!
//! With `idp.metadata_url`, [`initial`] fetches the URL at start-up. A good document (it parses,
//! names the IdP, is within its `validUntil` and, with `idp.metadata_signing_cert`, carries a
//! valid signature by that certificate) is put in force and written to the backing file
//! (`idp.metadata_file`) in one rename. When the URL does not answer, or answers with something
//! that is not a good document, start-up uses the backing file's copy (checked the same way,
//! except for `validUntil`, which is only warned about) and says so; without a usable copy,
//! start-up stops. [`refresh`] then fetches again every `refresh_interval` (sooner when the
//! document's `cacheDuration` or `validUntil` asks for it). A refresh that fails in any way
//! keeps the trust in force, logs the reason, counts it and shows it in the health detail; it
//! never drops the trust. A document for another entity ID is refused: a change of IdP needs a
//! restart. Every signing certificate in the document is trusted at once, so a key the IdP
//! publishes ahead of a rollover verifies its responses as soon as the refresh that brings it
//! has run, and a key removed from the document stops verifying at the refresh that removes it.
//! Each change of the trusted certificates or endpoints is an audit record
//! (`idp_trust_changed`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use saml_sp::metadata::{certificate_fingerprint, certificate_not_after, IdpMetadata};
use saml_sp::ResponseValidator;
use serde::Serialize;

use crate::config::{parse_metadata, Config, ConfigError, IdpConfig, MetadataSource};
use crate::fetch_proxy::MetadataProxy;

/// Largest metadata document fetched.
const MAX_METADATA_BYTES: usize = 10 * 1024 * 1024;
/// How long one fetch may take, connection and body included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest pause before a failed refresh is tried again.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);
/// Certificates expiring within these many days are warned about.
pub const EXPIRY_WARNING_DAYS: [i64; 3] = [60, 30, 7];

/// Where the trust in force was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `idp.metadata_file`, as configured.
    File,
    /// A fetch of `idp.metadata_url`.
    Url,
    /// The backing copy of an earlier fetch (the URL did not give a good document at start-up).
    BackingFile,
}

/// The IdP trust in force: its metadata and the response validator built on it.
pub struct Trust {
    /// The IdP's metadata.
    pub metadata: IdpMetadata,
    /// Validates responses against exactly these certificates and this entity ID.
    pub validator: ResponseValidator,
    /// The same for IdP-initiated responses (no InResponseTo, a shorter maximum age), when
    /// `idp.allow_unsolicited` is on.
    pub unsolicited: Option<ResponseValidator>,
    /// Where the metadata was read from.
    pub origin: Origin,
    /// When it was put in force (Unix seconds).
    pub loaded_at: i64,
}

/// What the background refresh has done so far, for the health detail and the metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshStatus {
    /// The last fetch attempt (Unix seconds).
    pub last_attempt: Option<i64>,
    /// The last attempt that put a good document in force.
    pub last_success: Option<i64>,
    /// Why the last attempt failed, when it did (no secrets: URL host and path, the reason).
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// Failed attempts since start-up.
    pub failures_total: u64,
    /// Good fetches since start-up, the start-up fetch included.
    pub successes_total: u64,
    /// When the next attempt is due.
    pub next_attempt: Option<i64>,
}

/// One IdP: its settings and its trust, swappable while requests use it.
pub struct Federation {
    /// The IdP's settings.
    pub idp: IdpConfig,
    /// The IdP's entity ID: that of the metadata at start-up, which no refresh or reload
    /// changes (a document for another entity ID is refused).
    pub entity_id: String,
    current: ArcSwap<Trust>,
    /// The validator with everything but the IdP: each new trust is a copy of it.
    template: ResponseValidator,
    /// The maximum age of unsolicited responses, when they are accepted.
    unsolicited_max_age: Option<Duration>,
    status: Mutex<RefreshStatus>,
}

/// Why a fetch or a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached, or the exchange broke off.
    #[error("cannot fetch {url}: {reason}")]
    Unreachable {
        /// The URL without query or credentials.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// An HTTP status other than 200.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL without query or credentials.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The document is refused (not metadata, unsigned, badly signed, expired, ...).
    #[error("the metadata from {url} was refused: {reason}")]
    Refused {
        /// The URL without query or credentials.
        url: String,
        /// The parser's reason.
        reason: String,
    },
    /// The document is for another IdP than the one in force.
    #[error(
        "the metadata from {url} is for {found}, not {expected}; a change of IdP is never taken \
         from the URL alone: set idp.entity_id to the IdP meant (and remove the backing copy)"
    )]
    OtherIdp {
        /// The URL without query or credentials.
        url: String,
        /// The entity ID in force.
        expected: String,
        /// The entity ID of the new document.
        found: String,
    },
}

/// A URL as it may appear in logs: scheme, host, port and path only.
pub fn shown(url: &url::Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.set_query(None);
    clean.set_fragment(None);
    clean.to_string()
}

/// Fetches `url` (https with the system's trusted CAs, or http), at most
/// `MAX_METADATA_BYTES`, without following redirects; through a tunnel `proxy` opens, when set.
pub async fn fetch(url: &url::Url, proxy: Option<&MetadataProxy>) -> Result<String, FetchError> {
    let shown_url = shown(url);
    let unreachable = |reason: String| FetchError::Unreachable {
        url: shown_url.clone(),
        reason,
    };
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let tls = hyper_tls::native_tls::TlsConnector::builder()
        .min_protocol_version(Some(hyper_tls::native_tls::Protocol::Tlsv12))
        .build()
        .map_err(|e| unreachable(format!("TLS set-up failed: {e}")))?;
    let request = hyper::Request::get(url.as_str())
        .header(
            hyper::header::ACCEPT,
            "application/samlmetadata+xml, application/xml, text/xml",
        )
        .header(hyper::header::USER_AGENT, "saml-gateway")
        .body(Empty::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let exchange = async {
        let answer = match proxy {
            None => send(hyper_tls::HttpsConnector::from((http, tls.into())), request).await,
            Some(proxy) => {
                let tunnel = proxy.tunnel(http);
                send(
                    hyper_tls::HttpsConnector::from((tunnel, tls.into())),
                    request,
                )
                .await
            }
        };
        let response = answer.map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        if status != hyper::StatusCode::OK {
            return Err(FetchError::Status {
                url: shown_url.clone(),
                status: status.as_u16(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_METADATA_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the body: {e}")))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| FetchError::Refused {
            url: shown_url.clone(),
            reason: "the document is not UTF-8".into(),
        })
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())))?
}

/// Sends `request` with a one-off client over `connector`.
async fn send<C>(
    connector: C,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector)
        .request(request)
        .await
}

/// An error and its sources, joined: hyper's own message says little ("client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Fetches and checks the document at `url` for `idp` at time `now`; returns the metadata and
/// the document's text (for the backing file).
async fn fetch_checked(
    idp: &IdpConfig,
    url: &url::Url,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(IdpMetadata, String), FetchError> {
    let proxy = match &idp.source {
        MetadataSource::Url { proxy, .. } => proxy.as_ref(),
        MetadataSource::File { .. } => None,
    };
    let text = fetch(url, proxy).await?;
    let refused = |reason: String| FetchError::Refused {
        url: shown(url),
        reason,
    };
    let metadata = parse_metadata(
        &text,
        idp.entity_id.as_deref(),
        &idp.metadata_signing_certs,
        Some(now),
    )
    .map_err(|e| refused(e.to_string()))?;
    let metadata = crate::config::with_extra_certs(metadata, &idp.extra_signing_certs);
    // Over plain http the signature is the only protection, and an old signed document still
    // verifies: without a validUntil it could be served back forever.
    // Through a proxy, a loopback host is the proxy's, across the network.
    let loopback = is_loopback(url) && proxy.is_none();
    if url.scheme() == "http" && !loopback && metadata.valid_until.is_none() {
        return Err(refused(
            "the document has no validUntil; over plain http a signed document must say until \
             when it may be used"
                .into(),
        ));
    }
    Ok((metadata, text))
}

/// True when the URL's host is this machine.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so that a crash never leaves
/// half a document behind.
fn write_backing(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The IdP metadata a gateway starts with.
#[derive(Debug, Clone)]
pub struct Initial {
    /// The metadata.
    pub metadata: IdpMetadata,
    /// Where it was read from.
    pub origin: Origin,
    /// Why the URL gave no good document, when the backing copy was used instead.
    pub fetch_error: Option<String>,
}

/// The metadata of `idp` (one of `config`'s) to start with. With a URL: fetched (and, with
/// `keep_copy`, written to the backing file), else the backing file's copy, else an error
/// naming the file and key.
pub async fn initial(
    config: &Config,
    idp: &IdpConfig,
    keep_copy: bool,
) -> Result<Initial, ConfigError> {
    let (url, backing_file) = match &idp.source {
        MetadataSource::File { metadata, .. } => {
            return Ok(Initial {
                metadata: metadata.clone(),
                origin: Origin::File,
                fetch_error: None,
            })
        }
        MetadataSource::Url {
            url, backing_file, ..
        } => (url, backing_file),
    };
    // The IdP of the last good copy: a fetched document for another IdP is refused (a change
    // of IdP is made by pinning idp.entity_id or removing the copy, never by the URL alone).
    let previous = std::fs::read_to_string(backing_file).ok().and_then(|text| {
        parse_metadata(
            &text,
            idp.entity_id.as_deref(),
            &idp.metadata_signing_certs,
            None,
        )
        .ok()
    });
    let fetched = match fetch_checked(idp, url, chrono::Utc::now()).await {
        Ok((metadata, _))
            if previous
                .as_ref()
                .is_some_and(|p| p.entity_id != metadata.entity_id) =>
        {
            Err(FetchError::OtherIdp {
                url: shown(url),
                expected: previous
                    .as_ref()
                    .map(|p| p.entity_id.clone())
                    .unwrap_or_default(),
                found: metadata.entity_id,
            })
        }
        other => other,
    };
    let fetch_error = match fetched {
        Ok((metadata, text)) => {
            if keep_copy {
                if let Err(e) = write_backing(backing_file, &text) {
                    tracing::warn!(
                        backing_file = %backing_file.display(),
                        error = %e,
                        "cannot write the backing copy of the IdP metadata; a start-up while \
                         the URL does not answer will fail"
                    );
                }
            }
            return Ok(Initial {
                metadata,
                origin: Origin::Url,
                fetch_error: None,
            });
        }
        Err(e) => e,
    };
    let copy = std::fs::read_to_string(backing_file)
        .map_err(|e| format!("cannot read it: {e}"))
        .and_then(|text| {
            parse_metadata(
                &text,
                idp.entity_id.as_deref(),
                &idp.metadata_signing_certs,
                None,
            )
            .map_err(|e| e.to_string())
            .map(|m| crate::config::with_extra_certs(m, &idp.extra_signing_certs))
        });
    match copy {
        Ok(metadata) => {
            tracing::warn!(
                idp = %idp.name,
                error = %fetch_error,
                backing_file = %backing_file.display(),
                "the IdP metadata URL gave no good document; starting with the last good copy"
            );
            if metadata
                .valid_until
                .is_some_and(|until| until <= chrono::Utc::now())
            {
                tracing::error!(
                    idp = %idp.name,
                    backing_file = %backing_file.display(),
                    "the last good copy of the IdP metadata is past its validUntil; it stays in \
                     force until the URL answers with a current document"
                );
            }
            Ok(Initial {
                metadata,
                origin: Origin::BackingFile,
                fetch_error: Some(fetch_error.to_string()),
            })
        }
        Err(copy_error) => Err(ConfigError {
            file: config.file.clone(),
            key: config.idp_key(idp, "metadata_url"),
            message: format!(
                "{fetch_error}; and no usable copy in idp.metadata_file {}: {copy_error}",
                backing_file.display()
            ),
        }),
    }
}

/// The metadata of every IdP of `config` to start with, in config order (see [`initial`]);
/// two IdPs with one entity ID stop start-up, since a response could not be told apart.
pub async fn initial_all(config: &Config, keep_copy: bool) -> Result<Vec<Initial>, ConfigError> {
    let mut all: Vec<Initial> = Vec::with_capacity(config.idps.len());
    for idp in &config.idps {
        let found = initial(config, idp, keep_copy).await?;
        let entity_id = &found.metadata.entity_id;
        if let Some(i) = all.iter().position(|o| &o.metadata.entity_id == entity_id) {
            let key = if matches!(idp.source, MetadataSource::Url { .. }) {
                "metadata_url"
            } else {
                "metadata_file"
            };
            return Err(ConfigError {
                file: config.file.clone(),
                key: config.idp_key(idp, key),
                message: format!(
                    "gives the same IdP entity ID as idps[{i}] ({entity_id}); each IdP needs its \
                     own"
                ),
            });
        }
        all.push(found);
    }
    Ok(all)
}

impl Federation {
    /// The federation of `idp` for the `initial` metadata, with `template` supplying
    /// everything but the IdP's entity ID and certificates.
    pub fn new(idp: IdpConfig, template: ResponseValidator, initial: Initial) -> Federation {
        let unsolicited_max_age = idp.allow_unsolicited.then_some(idp.unsolicited_max_age);
        let now = crate::state::unix_now();
        let Initial {
            metadata,
            origin,
            fetch_error,
        } = initial;
        let trust = build(&template, unsolicited_max_age, metadata, origin, now);
        let fetched = origin != Origin::File;
        let failed = fetch_error.is_some();
        let status = RefreshStatus {
            last_attempt: fetched.then_some(now),
            last_success: (origin == Origin::Url).then_some(now),
            successes_total: u64::from(origin == Origin::Url),
            consecutive_failures: u64::from(failed),
            failures_total: u64::from(failed),
            last_error: fetch_error,
            ..RefreshStatus::default()
        };
        Federation {
            idp,
            entity_id: trust.metadata.entity_id.clone(),
            current: ArcSwap::from_pointee(trust),
            template,
            unsolicited_max_age,
            status: Mutex::new(status),
        }
    }

    /// The trust in force.
    pub fn current(&self) -> Arc<Trust> {
        self.current.load_full()
    }

    /// Puts `metadata` in force; returns a description of what changed in the trusted
    /// certificates and endpoints, or `None` when nothing did.
    pub fn replace(&self, metadata: IdpMetadata, origin: Origin) -> Option<String> {
        let old = self.current();
        let change = describe_change(&old.metadata, &metadata);
        self.current.store(Arc::new(build(
            &self.template,
            self.unsolicited_max_age,
            metadata,
            origin,
            crate::state::unix_now(),
        )));
        change
    }

    /// A copy of the refresh status.
    pub fn status(&self) -> RefreshStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn update_status(&self, f: impl FnOnce(&mut RefreshStatus)) {
        let mut guard = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard);
    }
}

fn build(
    template: &ResponseValidator,
    unsolicited_max_age: Option<Duration>,
    metadata: IdpMetadata,
    origin: Origin,
    now: i64,
) -> Trust {
    let mut validator = template.clone();
    validator.idp = saml_sp::response::TrustedIdp {
        entity_id: metadata.entity_id.clone(),
        certificates: metadata.signing_certificates.clone(),
    };
    validator.options.allow_unsolicited = false;
    let unsolicited = unsolicited_max_age.map(|age| {
        let mut v = validator.clone();
        v.options.allow_unsolicited = true;
        v.options.max_issue_age = age;
        v
    });
    Trust {
        metadata,
        validator,
        unsolicited,
        origin,
        loaded_at: now,
    }
}

/// What differs between two metadata documents in what the gateway uses from them.
fn describe_change(old: &IdpMetadata, new: &IdpMetadata) -> Option<String> {
    let prints = |m: &IdpMetadata| -> Vec<String> {
        m.signing_certificates
            .iter()
            .map(|c| certificate_fingerprint(c.der_data()))
            .collect()
    };
    let (before, after) = (prints(old), prints(new));
    let mut parts = Vec::new();
    let added: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
    let removed: Vec<&String> = before.iter().filter(|f| !after.contains(f)).collect();
    if !added.is_empty() {
        parts.push(format!("signing certificates added: {}", join(&added)));
    }
    if !removed.is_empty() {
        parts.push(format!("signing certificates removed: {}", join(&removed)));
    }
    if old.sso != new.sso {
        parts.push(format!("SSO URL now {}", shown_endpoint(&new.sso)));
    }
    if old.slo != new.slo {
        parts.push(format!(
            "SLO URL now {}",
            new.slo.as_ref().map_or("none".into(), shown_endpoint)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// An endpoint in a change description: its location, and its binding unless HTTP-Redirect;
/// its response location when that differs.
fn shown_endpoint(e: &saml_sp::metadata::Endpoint) -> String {
    let mut text = e.location.clone();
    if e.response_location != e.location {
        text.push_str(&format!(" (responses to {})", e.response_location));
    }
    if e.binding == saml_sp::metadata::Binding::Post {
        text.push_str(" (HTTP-POST)");
    }
    text
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A trusted certificate and when it expires.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateInfo {
    /// SHA-256 fingerprint.
    pub fingerprint: String,
    /// Its notAfter (Unix seconds); `None` when it cannot be read.
    pub not_after: Option<i64>,
}

/// The signing certificates of `metadata` with their expiry.
pub fn certificates(metadata: &IdpMetadata) -> Vec<CertificateInfo> {
    metadata
        .signing_certificates
        .iter()
        .map(|c| CertificateInfo {
            fingerprint: certificate_fingerprint(c.der_data()),
            not_after: certificate_not_after(c.der_data()),
        })
        .collect()
}

/// Sentences about the certificates of `metadata` that expire within 60 days of `now` (or have
/// expired), most urgent first, with the number of days left.
pub fn expiry_warnings(metadata: &IdpMetadata, now: i64) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = certificates(metadata)
        .into_iter()
        .filter_map(|c| {
            let left = (c.not_after? - now).div_euclid(86_400);
            (left < EXPIRY_WARNING_DAYS[0]).then(|| {
                let sentence = if left < 0 {
                    format!("IdP signing certificate {} has expired", c.fingerprint)
                } else {
                    format!(
                        "IdP signing certificate {} expires in {left} day(s); make sure the IdP \
                         publishes its successor in the metadata",
                        c.fingerprint
                    )
                };
                (left, sentence)
            })
        })
        .collect();
    out.sort_by_key(|(left, _)| *left);
    out
}

/// Logs [`expiry_warnings`] of IdP `name`: errors within 7 days, warnings within 60.
pub fn log_expiry_warnings(name: &str, metadata: &IdpMetadata) {
    for (left, sentence) in expiry_warnings(metadata, crate::state::unix_now()) {
        if left < EXPIRY_WARNING_DAYS[2] {
            tracing::error!(idp = %name, days_left = left, "{sentence}");
        } else {
            tracing::warn!(idp = %name, days_left = left, "{sentence}");
        }
    }
}

/// When the next fetch is due after a good one: the configured interval, shortened by the
/// document's `cacheDuration` and by its `validUntil`, but never sooner than a second.
fn next_pause(interval: Duration, metadata: &IdpMetadata, now: i64) -> Duration {
    let mut pause = interval;
    if let Some(cache) = metadata.cache_duration {
        pause = pause.min(cache);
    }
    if let Some(until) = metadata.valid_until {
        let left = u64::try_from(until.timestamp() - now).unwrap_or(0);
        pause = pause.min(Duration::from_secs(left));
    }
    pause.max(Duration::from_secs(1))
}

/// Refreshes the metadata of IdP number `index` from its URL for as long as the gateway runs
/// (returns at once for a metadata file).
pub async fn refresh(state: crate::state::SharedState, index: usize) {
    let Some(federation) = state.idps.get(index) else {
        return;
    };
    let MetadataSource::Url {
        url,
        refresh_interval,
        backing_file,
        ..
    } = &federation.idp.source
    else {
        return;
    };
    let name = &federation.idp.name;
    let retry = (*refresh_interval).min(MAX_RETRY_PAUSE);
    // Started on the backing copy: the URL is tried again soon, not a whole interval later.
    let mut pause = if federation.status().consecutive_failures > 0 {
        retry
    } else {
        next_pause(
            *refresh_interval,
            &federation.current().metadata,
            crate::state::unix_now(),
        )
    };
    loop {
        let due = crate::state::unix_now() + i64::try_from(pause.as_secs()).unwrap_or(i64::MAX);
        federation.update_status(|s| s.next_attempt = Some(due));
        tokio::time::sleep(pause).await;
        let now = crate::state::unix_now();
        let expected = federation.entity_id.clone();
        let in_force_until = federation.current().metadata.valid_until;
        let outcome = match fetch_checked(&federation.idp, url, chrono::Utc::now()).await {
            Ok((metadata, _)) if metadata.entity_id != expected => Err(FetchError::OtherIdp {
                url: shown(url),
                expected,
                found: metadata.entity_id,
            }),
            // A document that expires before the one in force is an older one served again.
            Ok((metadata, _))
                if metadata
                    .valid_until
                    .zip(in_force_until)
                    .is_some_and(|(new, old)| new < old) =>
            {
                Err(FetchError::Refused {
                    url: shown(url),
                    reason: "its validUntil is earlier than that of the metadata in force (an \
                             older document served again)"
                        .into(),
                })
            }
            other => other,
        };
        match outcome {
            Ok((metadata, text)) => {
                pause = next_pause(*refresh_interval, &metadata, now);
                log_expiry_warnings(name, &metadata);
                let change = federation.replace(metadata, Origin::Url);
                federation.update_status(|s| {
                    s.last_attempt = Some(now);
                    s.last_success = Some(now);
                    s.last_error = None;
                    s.consecutive_failures = 0;
                    s.successes_total += 1;
                });
                if let Err(e) = write_backing(backing_file, &text) {
                    tracing::warn!(
                        idp = %name,
                        backing_file = %backing_file.display(),
                        error = %e,
                        "cannot write the backing copy of the IdP metadata"
                    );
                }
                if let Some(change) = change {
                    tracing::info!(idp = %name, %change, "the IdP metadata changed; the new trust is in force");
                    audit_change(&state, federation, change).await;
                } else {
                    tracing::debug!(idp = %name, "the IdP metadata was refreshed; nothing changed");
                }
            }
            Err(e) => {
                pause = retry;
                tracing::error!(
                    idp = %name,
                    error = %e,
                    retry_secs = retry.as_secs(),
                    "IdP metadata refresh failed; the trust in force stays"
                );
                federation.update_status(|s| {
                    s.last_attempt = Some(now);
                    s.last_error = Some(e.to_string());
                    s.consecutive_failures += 1;
                    s.failures_total += 1;
                });
            }
        }
    }
}

/// Writes the `idp_trust_changed` audit record of `federation`'s IdP.
pub async fn audit_change(state: &crate::state::AppState, federation: &Federation, change: String) {
    let record = crate::audit::Record {
        event: Some(crate::audit::Event::IdpTrustChanged),
        idp: Some(federation.entity_id.clone()),
        idp_name: Some(federation.idp.name.clone()),
        detail: Some(change),
        ..crate::audit::Record::default()
    };
    if let Err(e) = state.audit.record(record).await {
        tracing::error!(error = %e, "audit log write failed for an IdP trust change");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(certs: &[&[u8]]) -> IdpMetadata {
        IdpMetadata {
            entity_id: "https://idp".into(),
            signing_certificates: certs
                .iter()
                .map(|c| saml_sp::CertificateDer::from(c.to_vec()))
                .collect(),
            sso: saml_sp::metadata::Endpoint {
                binding: saml_sp::metadata::Binding::Redirect,
                location: "https://idp/sso".into(),
                response_location: "https://idp/sso".into(),
            },
            slo: None,
            want_authn_requests_signed: false,
            valid_until: None,
            cache_duration: None,
        }
    }

    #[test]
    fn changes_name_added_and_removed_certificates() {
        let (a, b) = (metadata(&[b"a"]), metadata(&[b"a", b"b"]));
        assert_eq!(describe_change(&a, &a), None);
        let added = describe_change(&a, &b).unwrap();
        assert!(added.starts_with("signing certificates added: "), "{added}");
        assert!(!added.contains("removed"), "{added}");
        let removed = describe_change(&b, &metadata(&[b"b"])).unwrap();
        assert!(
            removed.starts_with("signing certificates removed: "),
            "{removed}"
        );
        let mut moved = a.clone();
        moved.sso.location = "https://idp/new".into();
        moved.sso.response_location = "https://idp/new".into();
        assert_eq!(
            describe_change(&a, &moved).unwrap(),
            "SSO URL now https://idp/new"
        );
    }

    #[test]
    fn refresh_comes_sooner_when_the_document_asks() {
        let hour = Duration::from_secs(3600);
        let mut m = metadata(&[b"a"]);
        assert_eq!(next_pause(hour, &m, 0), hour);
        m.cache_duration = Some(Duration::from_secs(600));
        assert_eq!(next_pause(hour, &m, 0), Duration::from_secs(600));
        m.valid_until = chrono::DateTime::from_timestamp(120, 0);
        assert_eq!(next_pause(hour, &m, 0), Duration::from_secs(120));
        assert_eq!(next_pause(hour, &m, 500), Duration::from_secs(1));
    }

    #[test]
    fn shown_urls_carry_no_credentials_or_query() {
        let url = url::Url::parse("https://u:secret@idp.example/md?token=abc#x").unwrap();
        assert_eq!(shown(&url), "https://idp.example/md");
    }

    #[test]
    fn expiry_warnings_start_sixty_days_ahead() {
        let keys = crate::keys::generate("idp", 20).unwrap();
        let der = keys.cert.to_der().unwrap();
        let m = metadata(&[&der]);
        let now = crate::state::unix_now();
        let warnings = expiry_warnings(&m, now);
        assert_eq!(warnings.len(), 1);
        assert!((19..=20).contains(&warnings[0].0), "{warnings:?}");
        assert!(warnings[0].1.contains("expires in"), "{warnings:?}");
        assert!(expiry_warnings(&m, now - 61 * 86_400).is_empty());
        assert!(expiry_warnings(&m, now + 30 * 86_400)[0]
            .1
            .contains("has expired"));
    }
}
