//! The YAML configuration: parsed once at start-up into typed, checked values.
//!
//! Loading goes YAML text -> `serde_yaml::Value` -> `${ENV}` expansion in string values ->
//! [`RawConfig`] (unknown keys refused, each error with its key path) -> [`Config`] (URLs,
//! durations, files and the IdP metadata checked). Every failure is a [`ConfigError`] that
//! names the file, the key and what is wrong. Relative paths are taken from the config file's
//! folder. Nothing reads files or the environment after this.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::attributes::{AttributeMapping, Preset};
use crate::identity_token::IdentityTokenConfig;
use crate::route_config::{check_routes, RawPaths, RawRoute};
use crate::routing::RouteTable;

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The key path, such as `sessions.idle_timeout` or `routes[0].upstream`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The file as written, before checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    listen: Option<String>,
    public_url: String,
    sp: RawSp,
    idp: Option<RawIdp>,
    idps: Option<Vec<RawIdp>>,
    #[serde(default)]
    sessions: RawSessions,
    routes: Vec<RawRoute>,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    identity_headers: RawIdentityHeaders,
    #[serde(default)]
    identity_token: RawIdentityToken,
    audit: RawAudit,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    debug: RawDebug,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebug {
    trace_logins: Option<PathBuf>,
    #[serde(default)]
    trace_attribute_values: bool,
}

/// Login tracing (`debug.trace_logins`).
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The JSON Lines file each login attempt is described in.
    pub file: PathBuf,
    /// Keep attribute values in the traced documents (off: replaced by `[value]`).
    pub attribute_values: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    worker_threads: Option<usize>,
    admin_listen: Option<String>,
    redirect_http_listen: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
    client_timeout: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
    hsts_max_age: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    forwarded_header: Option<String>,
    #[serde(default)]
    proxy_protocol: bool,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSp {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdp {
    name: Option<String>,
    label: Option<String>,
    metadata_file: Option<PathBuf>,
    metadata_url: Option<String>,
    metadata_proxy: Option<SecretText>,
    #[serde(default, deserialize_with = "duration_text")]
    refresh_interval: Option<String>,
    metadata_signing_cert: Option<PathBuf>,
    extra_signing_certs: Option<PathBuf>,
    entity_id: Option<String>,
    preset: Option<String>,
    user_from: Option<String>,
    authn_context: Option<Vec<String>>,
    attributes: Option<RawAttributes>,
    #[serde(default)]
    allow_sha1: bool,
    #[serde(default)]
    allow_unsolicited: bool,
    single_logout: Option<bool>,
    #[serde(default, deserialize_with = "duration_text")]
    unsolicited_max_age: Option<String>,
    unsolicited_relay_state: Option<Vec<String>>,
    #[serde(default)]
    allow_cbc_encryption: bool,
    clock_skew: Option<String>,
    name_id_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAttributes {
    Preset(String),
    Explicit(RawAttributeNames),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttributeNames {
    preset: Option<String>,
    user: Option<String>,
    email: Option<String>,
    display_name: Option<String>,
    groups: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    store: Option<String>,
    redis_url: Option<SecretText>,
    #[serde(default, deserialize_with = "duration_text")]
    idle_timeout: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
    max_lifetime: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
    redis_connect_retry: Option<String>,
    redis_tls: Option<RawRedisTls>,
    redis_password_file: Option<PathBuf>,
    redis_record_key_file: Option<PathBuf>,
}

/// A string of the file that may hold a password (a URL with credentials): read as any string,
/// never shown by `Debug`.
#[derive(Deserialize)]
#[serde(transparent)]
struct SecretText(String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// A duration as written: `30m`, or a bare number of seconds (YAML reads `0` as a number).
pub(crate) fn duration_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Number(u64),
        Text(String),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::Number(n) => n.to_string(),
        Text::Text(s) => s,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeaders {
    user: Option<String>,
    email: Option<String>,
    name: Option<String>,
    groups: Option<String>,
    given_name: Option<String>,
    surname: Option<String>,
    idp: Option<String>,
    auth_time: Option<String>,
    authn_context: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityToken {
    enabled: Option<bool>,
    header: Option<String>,
    key_file: Option<PathBuf>,
    next_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration_text")]
    lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_saml_response_bytes: Option<usize>,
    login_starts_per_minute: Option<u32>,
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

/// A trusted IdP.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// The name routes, rules, the chooser and `?idp=` use (`default` for a single `idp:`).
    pub name: String,
    /// The text the chooser page shows for it.
    pub label: String,
    /// Where the metadata comes from.
    pub source: MetadataSource,
    /// The IdP entity ID to pick out of the metadata (required for aggregates).
    pub entity_id: Option<String>,
    /// Certificates (DER) that must sign the metadata; empty: metadata is not signature-checked.
    pub metadata_signing_certs: Vec<saml_sp::CertificateDer>,
    /// Signing certificates trusted besides the metadata's (`idp.extra_signing_certs`): for
    /// an IdP that publishes only its active certificate, the next one ahead of a rollover.
    pub extra_signing_certs: Vec<saml_sp::CertificateDer>,
    /// The vendor preset the attribute mapping started from.
    pub preset: Preset,
    /// How attributes map to user, email, name and groups.
    pub attributes: AttributeMapping,
    /// AuthnContextClassRefs to request (Comparison `exact`); empty: no RequestedAuthnContext.
    pub authn_context: Vec<String>,
    /// Accept RSA-SHA1 / SHA-1 (legacy IdPs).
    pub allow_sha1: bool,
    /// Accept IdP-initiated (unsolicited) responses.
    pub allow_unsolicited: bool,
    /// Speak Single Logout with the IdP (when its metadata has an SLO endpoint); off: sign-out
    /// ends only the session here.
    pub single_logout: bool,
    /// Oldest IssueInstant an unsolicited response may have (before clock skew).
    pub unsolicited_max_age: Duration,
    /// Local path prefixes an unsolicited response's RelayState may send the user to; any
    /// other RelayState sends them to `/`.
    pub unsolicited_relay_state: Vec<String>,
    /// Accept AES-CBC encrypted assertions (only inside a signed Response).
    pub allow_cbc_encryption: bool,
    /// Clock skew allowed on time checks.
    pub clock_skew: Duration,
    /// NameIDPolicy Format to request, if any.
    pub name_id_format: Option<String>,
}

/// Two settings that go together: both values, or neither; otherwise the missing one's name
/// and `is required with OTHER{why}`.
fn both_or_neither<'a, T: ?Sized>(
    (a, a_name): (Option<&'a T>, &'static str),
    (b, b_name): (Option<&'a T>, &'static str),
    why: &str,
) -> Result<Option<(&'a T, &'a T)>, (&'static str, String)> {
    match (a, b) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (Some(_), None) => Err((b_name, format!("is required with {a_name}{why}"))),
        (None, Some(_)) => Err((a_name, format!("is required with {b_name}{why}"))),
    }
}

/// Whether the store is a Redis whose URL carries a password.
fn store_url_has_password(store: &StoreKind) -> bool {
    matches!(store, StoreKind::Redis { url, .. } if session_store::RedisStore::url_has_password(url))
}

/// Whether the store is a Redis reached over TLS (`rediss://`), as the store's client reads
/// the URL: it takes TLS settings only then.
fn store_url_is_tls(store: &StoreKind) -> bool {
    matches!(store, StoreKind::Redis { url, .. } if session_store::RedisStore::url_takes_tls(url))
}

/// Where sessions, pending logins and the replay cache live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process (one gateway instance).
    Memory,
    /// In the Redis at this URL, shared by every replica of the deployment.
    Redis {
        /// The URL as configured, credentials included: never log it.
        url: String,
        /// Where the server is, without credentials (for messages).
        description: String,
    },
}

impl std::fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Memory => f.write_str("Memory"),
            StoreKind::Redis { description, .. } => write!(f, "Redis({description})"),
        }
    }
}

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The store backend.
    pub store: StoreKind,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Absolute lifetime.
    pub max_lifetime: Duration,
    /// How long start-up keeps trying to reach Redis; zero: give up at the first failure.
    pub redis_connect_retry: Duration,
    /// The files of a `rediss://` connection beyond the system's roots (`sessions.redis_tls`);
    /// read when the store is opened ([`crate::redis_access::load`]).
    pub redis_tls: Option<RedisTlsFiles>,
    /// A file holding the Redis password, in place of the URL's (`sessions.redis_password_file`);
    /// read when the store is opened and on SIGHUP ([`crate::redis_access::load`]).
    pub redis_password_file: Option<PathBuf>,
    /// A file of secrets that seal session records in Redis
    /// (`sessions.redis_record_key_file`); read when the store is opened
    /// ([`crate::redis_access::load_record_keys`]).
    pub redis_record_key_file: Option<PathBuf>,
}

/// `sessions.redis_tls`: what a `rediss://` connection trusts and shows, as paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTlsFiles {
    /// PEM certificates trusted for the Redis server instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for a server that asks for one.
    pub client: Option<crate::tls::TlsFiles>,
}

/// Names of the identity headers sent upstream.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// The user key.
    pub user: hyper::header::HeaderName,
    /// The email.
    pub email: hyper::header::HeaderName,
    /// The display name.
    pub name: hyper::header::HeaderName,
    /// The groups, comma separated.
    pub groups: hyper::header::HeaderName,
    /// The given name, when configured (not sent by default).
    pub given_name: Option<hyper::header::HeaderName>,
    /// The surname, when configured (not sent by default).
    pub surname: Option<hyper::header::HeaderName>,
    /// The name of the IdP that made the session, when configured (not sent by default).
    pub idp: Option<hyper::header::HeaderName>,
    /// When the IdP signed the user in, in seconds since 1970, when configured (not sent by
    /// default).
    pub auth_time: Option<hyper::header::HeaderName>,
    /// How the IdP signed the user in (the AuthnContextClassRef), when configured (not sent by
    /// default).
    pub authn_context: Option<hyper::header::HeaderName>,
}

impl Default for IdentityHeaders {
    /// The default names: `X-Auth-User`, `X-Auth-Email`, `X-Auth-Name`, `X-Auth-Groups`, and
    /// none of the optional headers.
    fn default() -> IdentityHeaders {
        use hyper::header::HeaderName;
        IdentityHeaders {
            user: HeaderName::from_static("x-auth-user"),
            email: HeaderName::from_static("x-auth-email"),
            name: HeaderName::from_static("x-auth-name"),
            groups: HeaderName::from_static("x-auth-groups"),
            given_name: None,
            surname: None,
            idp: None,
            auth_time: None,
            authn_context: None,
        }
    }
}

impl IdentityHeaders {
    /// Every identity header name in use.
    pub fn all(&self) -> impl Iterator<Item = &hyper::header::HeaderName> {
        [&self.user, &self.email, &self.name, &self.groups]
            .into_iter()
            .chain(self.given_name.as_ref())
            .chain(self.surname.as_ref())
            .chain(self.idp.as_ref())
            .chain(self.auth_time.as_ref())
            .chain(self.authn_context.as_ref())
    }
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from.
    pub file: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// The public base URL, without a trailing slash.
    pub public_url: String,
    /// Whether cookies carry `Secure` (an `https` public URL).
    pub secure_cookies: bool,
    /// SP settings.
    pub sp: SpConfig,
    /// The IdPs, in the order configured (one for `idp:`); never empty.
    pub idps: Vec<IdpConfig>,
    /// True when the IdPs came as an `idps:` list (keys are then named `idps[N].key`).
    pub idps_listed: bool,
    /// Session settings.
    pub sessions: SessionConfig,
    /// Routes in lookup order.
    pub routes: RouteTable,
    /// Identity header names.
    pub identity_headers: IdentityHeaders,
    /// The signed identity token, unless switched off.
    pub identity_token: Option<IdentityTokenConfig>,
    /// The audit log file.
    pub audit_file: PathBuf,
    /// Largest SAMLResponse form value accepted.
    pub max_saml_response_bytes: usize,
    /// Logins one client address may start per minute; `None`: no budget.
    pub login_starts_per_minute: Option<u32>,
    /// Login tracing, when switched on.
    pub trace: Option<TraceConfig>,
    /// Where `/health` and `/metrics` are served, apart from the public listener; `None`: not
    /// served.
    pub admin_listen: Option<SocketAddr>,
    /// Threads serving requests; `None`: one per CPU the process may use. One thread runs
    /// everything on the main thread (the cheapest per request when pinned to one core).
    pub worker_threads: Option<usize>,
    /// How long a client connection may stay quiet (no request head completed, no piece of a
    /// request body received, nothing written to it, no request waiting for its answer unless
    /// the gateway waits for its body) before it is closed (`client_timeout`).
    pub client_timeout: Duration,
    /// The proxies whose `X-Forwarded-For` (or `Forwarded`) names the client
    /// (`server.trusted_proxies`, `server.forwarded_header`).
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// Every connection to `listen` begins with a PROXY protocol header
    /// (`server.proxy_protocol`, see [`crate::proxy_protocol`]).
    pub proxy_protocol: bool,
    /// The certificate and key the gateway serves `listen` with (`server.tls`, see
    /// [`crate::tls`]); `None`: plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Where plain-http requests are answered with a redirect to `public_url`
    /// (`server.redirect_http_listen`); `None`: no such listener.
    pub redirect_http_listen: Option<SocketAddr>,
    /// The `Strict-Transport-Security` value of the gateway's own answers
    /// (`server.hsts_max_age`); `None`: not sent (a plain-http public URL, or `0s`).
    pub hsts: Option<hyper::header::HeaderValue>,
}

impl Config {
    /// The ACS URL.
    pub fn acs_url(&self) -> String {
        format!("{}/saml/acs", self.public_url)
    }

    /// The Single Logout URL (both bindings).
    pub fn slo_url(&self) -> String {
        format!("{}/saml/slo", self.public_url)
    }

    /// The IdP named `name`.
    pub fn idp(&self, name: &str) -> Option<&IdpConfig> {
        self.idps.iter().find(|i| i.name == name)
    }

    /// The config key `key` of `idp` as the file spells it: `idp.key` or `idps[N].key`.
    pub fn idp_key(&self, idp: &IdpConfig, key: &str) -> String {
        match self.idps.iter().position(|i| i.name == idp.name) {
            Some(n) if self.idps_listed => format!("idps[{n}].{key}"),
            _ => format!("idp.{key}"),
        }
    }

    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("(file)", format!("cannot read the file: {e}")))?;
        let mut value: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| err("(file)", format!("not valid YAML: {e}")))?;
        expand_env(&mut value, "", &|name| std::env::var(name).ok())
            .map_err(|(key, message)| err(&key, message))?;
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            err(&key, e.into_inner().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        check(raw, path, base)
    }
}

/// Replaces `${NAME}` in every string value; an unset variable is an error naming the key.
fn expand_env(
    value: &mut serde_yaml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    match value {
        serde_yaml::Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after
                    .find('}')
                    .ok_or((key.to_string(), "unclosed ${ in value".to_string()))?;
                let name = &after[..end];
                let v = lookup(name).ok_or((
                    key.to_string(),
                    format!("environment variable {name} is not set"),
                ))?;
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let name = k.as_str().unwrap_or("?");
                let child = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}.{name}")
                };
                expand_env(v, &child, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `server.client_timeout` when the file sets none: as long as nginx waits for a request head
/// (`client_header_timeout`), between two reads of a request body (`client_body_timeout`) or
/// between two writes to a client (`send_timeout`).
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `server.hsts_max_age` when the file sets none and `public_url` is https: a year.
const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(365 * 86_400);

/// Parses `90s`, `30m`, `8h`, `1d` (or a bare number of seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(factor).map(Duration::from_secs)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn check(raw: RawConfig, file: &Path, base: &Path) -> Result<Config, ConfigError> {
    let err = |key: &str, message: &str| ConfigError {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    };
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:8080");
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| err("listen", "not an address such as 127.0.0.1:8080"))?;

    let public = Url::parse(&raw.public_url).map_err(|_| {
        err(
            "public_url",
            "not an absolute URL such as https://dash.example.com",
        )
    })?;
    let secure_cookies = match public.scheme() {
        "https" => true,
        "http" if is_loopback_host(&public) => false,
        "http" => return Err(err(
            "public_url",
            "must be https (plain http is accepted only for a loopback host, for local testing)",
        )),
        _ => return Err(err("public_url", "the scheme must be https")),
    };
    if public.path() != "/" || public.query().is_some() || public.fragment().is_some() {
        return Err(err("public_url", "must not have a path, query or fragment"));
    }
    let public_url = raw.public_url.trim_end_matches('/').to_string();

    let next_key_pair = both_or_neither(
        (raw.sp.next_key_file.as_deref(), "sp.next_key_file"),
        (raw.sp.next_cert_file.as_deref(), "sp.next_cert_file"),
        " (the next key pair is both files)",
    )
    .map_err(|(key, message)| err(key, &message))?
    .map(|(key, cert)| (resolve(key), resolve(cert)));
    let sp = SpConfig {
        entity_id: raw
            .sp
            .entity_id
            .unwrap_or_else(|| format!("{public_url}/saml/metadata")),
        key_file: resolve(&raw.sp.key_file),
        cert_file: resolve(&raw.sp.cert_file),
        next_key_pair,
        sign_authn_requests: raw.sp.sign_authn_requests,
        encrypted_assertions: raw.sp.encrypted_assertions,
    };
    if sp.entity_id.trim().is_empty() {
        return Err(err("sp.entity_id", "must not be empty"));
    }

    let single_idp = raw.idp.is_some();
    let idps = check_idps(raw.idp, raw.idps, file, &resolve)?;
    if let Some(i) = idps.iter().position(|idp| idp.allow_cbc_encryption) {
        if !sp.encrypted_assertions {
            let key = if single_idp {
                "idp.allow_cbc_encryption".to_string()
            } else {
                format!("idps[{i}].allow_cbc_encryption")
            };
            return Err(err(&key, "applies only with sp.encrypted_assertions: true"));
        }
    }

    let store = match (
        raw.sessions.store.as_deref().unwrap_or("memory"),
        raw.sessions.redis_url.map(|url| url.0),
    ) {
        ("memory", None) => StoreKind::Memory,
        ("memory", Some(_)) => {
            // Replicas each with a memory store would each accept a replayed assertion.
            return Err(err(
                "sessions.redis_url",
                "is set but sessions.store is `memory`; set sessions.store: redis to use it",
            ));
        }
        ("redis", None) => {
            return Err(err(
                "sessions.redis_url",
                "is required with sessions.store: redis (such as redis://127.0.0.1:6379/0; \
                 ${REDIS_URL} takes it from the environment)",
            ))
        }
        ("redis", Some(url)) => {
            let description = session_store::RedisStore::check_url(&url, &Default::default())
                .map_err(|e| err("sessions.redis_url", &e.to_string()))?;
            StoreKind::Redis { url, description }
        }
        _ => return Err(err("sessions.store", "must be `memory` or `redis`")),
    };
    let duration =
        |key: &str, value: Option<&str>, default: u64| -> Result<Duration, ConfigError> {
            match value {
                None => Ok(Duration::from_secs(default)),
                Some(v) => parse_duration(v)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| err(key, "not a duration such as 90s, 30m, 8h or 1d")),
            }
        };
    // The keys that only a Redis store reads.
    if store == StoreKind::Memory {
        let redis_only = [
            (
                "sessions.redis_connect_retry",
                raw.sessions.redis_connect_retry.is_some(),
            ),
            ("sessions.redis_tls", raw.sessions.redis_tls.is_some()),
            (
                "sessions.redis_password_file",
                raw.sessions.redis_password_file.is_some(),
            ),
            (
                "sessions.redis_record_key_file",
                raw.sessions.redis_record_key_file.is_some(),
            ),
        ];
        if let Some((key, _)) = redis_only.into_iter().find(|(_, set)| *set) {
            return Err(err(key, "applies only with sessions.store: redis"));
        }
    }
    let redis_connect_retry = match raw.sessions.redis_connect_retry.as_deref() {
        None => Duration::ZERO,
        Some(v) => parse_duration(v)
            .filter(|d| *d <= Duration::from_secs(3600))
            .ok_or_else(|| {
                err(
                    "sessions.redis_connect_retry",
                    "not a duration of at most 1h, such as 0, 30s or 2m",
                )
            })?,
    };
    let redis_tls = match raw.sessions.redis_tls {
        None => None,
        Some(_) if !store_url_is_tls(&store) => {
            return Err(err(
                "sessions.redis_tls",
                "applies only to a rediss:// or rediss+sentinel:// sessions.redis_url (Redis \
                 over TLS)",
            ))
        }
        Some(t) => {
            let client = both_or_neither(
                (t.cert_file.as_deref(), "sessions.redis_tls.cert_file"),
                (t.key_file.as_deref(), "sessions.redis_tls.key_file"),
                "",
            )
            .map_err(|(key, message)| err(key, &message))?
            .map(|(cert, key)| crate::tls::TlsFiles {
                cert_file: resolve(cert),
                key_file: resolve(key),
            });
            Some(RedisTlsFiles {
                ca_file: t.ca_file.as_deref().map(resolve),
                client,
            })
        }
    };
    let redis_password_file = match raw.sessions.redis_password_file {
        None => None,
        Some(_) if store_url_has_password(&store) => {
            return Err(err(
                "sessions.redis_password_file",
                "sessions.redis_url holds a password too; keep the password in one place \
                 (redis://USER@HOST:PORT/DB, redis+sentinel://USER@HOSTS/MASTER/DB or \
                 unix:///PATH?user=USER, with the password in this file)",
            ))
        }
        Some(path) => Some(resolve(&path)),
    };
    let redis_record_key_file = raw.sessions.redis_record_key_file.as_deref().map(resolve);
    let sessions = SessionConfig {
        redis_tls,
        redis_password_file,
        redis_record_key_file,
        redis_connect_retry,
        store,
        idle_timeout: duration(
            "sessions.idle_timeout",
            raw.sessions.idle_timeout.as_deref(),
            1800,
        )?,
        max_lifetime: duration(
            "sessions.max_lifetime",
            raw.sessions.max_lifetime.as_deref(),
            8 * 3600,
        )?,
    };

    let idp_names: Vec<&str> = idps.iter().map(|i| i.name.as_str()).collect();
    let routes = check_routes(raw.routes, raw.paths, &idp_names, &|k, m| err(k, m))?;

    let header = |key: &str, value: Option<String>, default: &str| {
        let name = value.unwrap_or_else(|| default.to_string());
        identity_header_name(&name).map_err(|m| err(&format!("identity_headers.{key}"), m))
    };
    let optional = |key: &str, value: Option<String>| {
        value.map(|name| header(key, Some(name), "")).transpose()
    };
    let h = raw.identity_headers;
    let identity_headers = IdentityHeaders {
        user: header("user", h.user, "X-Auth-User")?,
        email: header("email", h.email, "X-Auth-Email")?,
        name: header("name", h.name, "X-Auth-Name")?,
        groups: header("groups", h.groups, "X-Auth-Groups")?,
        given_name: optional("given_name", h.given_name)?,
        surname: optional("surname", h.surname)?,
        idp: optional("idp", h.idp)?,
        auth_time: optional("auth_time", h.auth_time)?,
        authn_context: optional("authn_context", h.authn_context)?,
    };

    let identity_token = check_identity_token(raw.identity_token, &sp, &resolve, &err)?;
    let h = &identity_headers;
    let mut taken: Vec<(&str, &hyper::header::HeaderName)> = [
        ("identity_headers.user", Some(&h.user)),
        ("identity_headers.email", Some(&h.email)),
        ("identity_headers.name", Some(&h.name)),
        ("identity_headers.groups", Some(&h.groups)),
        ("identity_headers.given_name", h.given_name.as_ref()),
        ("identity_headers.surname", h.surname.as_ref()),
        ("identity_headers.idp", h.idp.as_ref()),
        ("identity_headers.auth_time", h.auth_time.as_ref()),
        ("identity_headers.authn_context", h.authn_context.as_ref()),
    ]
    .into_iter()
    .filter_map(|(key, name)| Some((key, name?)))
    .collect();
    if let Some(t) = &identity_token {
        taken.push(("identity_token.header", &t.header));
    }
    for (i, (key, name)) in taken.iter().enumerate() {
        let folded = |n: &hyper::header::HeaderName| n.as_str().replace('_', "-");
        if taken[..i]
            .iter()
            .any(|(_, other)| folded(other) == folded(name))
        {
            return Err(err(key, "is the same header as another identity header"));
        }
    }

    let max_saml_response_bytes = raw.limits.max_saml_response_bytes.unwrap_or(256 * 1024);
    if !(1024..=16 * 1024 * 1024).contains(&max_saml_response_bytes) {
        return Err(err(
            "limits.max_saml_response_bytes",
            "must be between 1024 and 16777216",
        ));
    }
    let login_starts_per_minute = match raw.limits.login_starts_per_minute {
        None => Some(300),
        Some(0) => None,
        Some(n @ 1..=60_000) => Some(n),
        Some(_) => {
            return Err(err(
                "limits.login_starts_per_minute",
                "must be between 0 (no budget) and 60000",
            ))
        }
    };

    if raw
        .server
        .worker_threads
        .is_some_and(|n| !(1..=256).contains(&n))
    {
        return Err(err("server.worker_threads", "must be between 1 and 256"));
    }
    let client_timeout = match raw.server.client_timeout.as_deref() {
        None => DEFAULT_CLIENT_TIMEOUT,
        Some(v) => parse_duration(v)
            .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(d))
            .ok_or_else(|| {
                err(
                    "server.client_timeout",
                    "not a duration from 1s to 1h, such as 30s or 2m",
                )
            })?,
    };

    let mut trusted_proxies = Vec::new();
    for (i, entry) in raw.server.trusted_proxies.iter().enumerate() {
        let block = crate::forwarded::TrustedProxies::parse_entry(entry).map_err(|e| {
            err(
                &format!("server.trusted_proxies[{i}]"),
                &format!("{e}: {entry}"),
            )
        })?;
        trusted_proxies.push(block);
    }
    if ipnet::IpNet::aggregate(&trusted_proxies)
        .iter()
        .any(|block| block.prefix_len() == 0)
    {
        return Err(err(
            "server.trusted_proxies",
            "together the blocks hold every IPv4 or every IPv6 address, so any client could \
             choose the address it is audited under",
        ));
    }
    let trusted_proxies = crate::forwarded::TrustedProxies::new(trusted_proxies);
    let trusted_proxies = match raw.server.forwarded_header.as_deref() {
        None => trusted_proxies,
        Some(_) if trusted_proxies.is_empty() => {
            return Err(err(
                "server.forwarded_header",
                "applies only with server.trusted_proxies (the proxies that write it)",
            ))
        }
        Some(name) => {
            let header = match name.to_ascii_lowercase().as_str() {
                "x-forwarded-for" => crate::forwarded::ForwardedHeader::XForwardedFor,
                "forwarded" => crate::forwarded::ForwardedHeader::Forwarded,
                _ => {
                    return Err(err(
                        "server.forwarded_header",
                        "must be x-forwarded-for or forwarded",
                    ))
                }
            };
            trusted_proxies.with_header(header)
        }
    };
    if raw.server.proxy_protocol && trusted_proxies.is_empty() {
        return Err(err(
            "server.proxy_protocol",
            "needs server.trusted_proxies to list the load balancers that send the header: the \
             address in a header from any other peer is not believed",
        ));
    }

    let hsts = match raw.server.hsts_max_age.as_deref() {
        None => DEFAULT_HSTS_MAX_AGE,
        Some(v) => parse_duration(v)
            .filter(|d| *d <= Duration::from_secs(2 * 365 * 86_400))
            .ok_or_else(|| {
                err(
                    "server.hsts_max_age",
                    "not a duration from 0s (not sent) to 730d, such as 365d",
                )
            })?,
    };
    // Never under a plain-http public URL: the browser would ignore it there anyway.
    let hsts = Some(hsts)
        .filter(|d| secure_cookies && !d.is_zero())
        .map(|d| {
            hyper::header::HeaderValue::from_str(&format!("max-age={}", d.as_secs()))
                .unwrap_or(hyper::header::HeaderValue::from_static("max-age=31536000"))
        });

    let tls = match &raw.server.tls {
        None => None,
        Some(t) => {
            if !secure_cookies {
                return Err(err(
                    "server.tls",
                    "public_url must be https when the gateway serves TLS itself",
                ));
            }
            // The files are read by `server::load_tls` (serve and check-config), not here: a
            // certificate that expired must not block a reload of the routes, which reads this
            // file again; TLS has its own reload.
            Some(crate::tls::TlsFiles {
                cert_file: resolve(&t.cert_file),
                key_file: resolve(&t.key_file),
            })
        }
    };

    let admin_listen = match &raw.server.admin_listen {
        None => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            err(
                "server.admin_listen",
                &format!("not an IP address and port, such as 127.0.0.1:9090: {text}"),
            )
        })?),
    };
    if admin_listen.is_some() && admin_listen == Some(listen) {
        return Err(err(
            "server.admin_listen",
            "must differ from listen: the admin endpoints are not for the public",
        ));
    }

    let redirect_http_listen = match &raw.server.redirect_http_listen {
        None => None,
        Some(text) => {
            let address = text.parse::<SocketAddr>().map_err(|_| {
                err(
                    "server.redirect_http_listen",
                    &format!("not an IP address and port, such as 0.0.0.0:80: {text}"),
                )
            })?;
            if !secure_cookies {
                return Err(err(
                    "server.redirect_http_listen",
                    "redirects to an https public_url; this one is http",
                ));
            }
            if address == listen || Some(address) == admin_listen {
                return Err(err(
                    "server.redirect_http_listen",
                    "must differ from listen and server.admin_listen",
                ));
            }
            Some(address)
        }
    };

    if raw.debug.trace_attribute_values && raw.debug.trace_logins.is_none() {
        return Err(err(
            "debug.trace_attribute_values",
            "applies only with debug.trace_logins",
        ));
    }
    let trace = raw.debug.trace_logins.as_ref().map(|file| TraceConfig {
        file: resolve(file),
        attribute_values: raw.debug.trace_attribute_values,
    });
    if trace
        .as_ref()
        .is_some_and(|t| t.file == resolve(&raw.audit.file))
    {
        return Err(err(
            "debug.trace_logins",
            "is the audit file; give the trace a file of its own",
        ));
    }

    Ok(Config {
        trace,
        admin_listen,
        worker_threads: raw.server.worker_threads,
        client_timeout,
        trusted_proxies,
        proxy_protocol: raw.server.proxy_protocol,
        tls,
        hsts,
        redirect_http_listen,
        file: file.to_path_buf(),
        listen,
        public_url,
        secure_cookies,
        sp,
        idps,
        idps_listed: !single_idp,
        sessions,
        routes,
        identity_headers,
        identity_token,
        audit_file: resolve(&raw.audit.file),
        max_saml_response_bytes,
        login_starts_per_minute,
    })
}

/// Checks the IdPs: `idp:` (one) or `idps:` (a list), never both.
fn check_idps(
    one: Option<RawIdp>,
    many: Option<Vec<RawIdp>>,
    file: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Vec<IdpConfig>, ConfigError> {
    let err = |key: &str, message: &str| ConfigError {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    };
    let idps = match (one, many) {
        (Some(_), Some(_)) => {
            return Err(err(
                "idps",
                "is set beside idp; list every IdP under idps (or keep the one under idp)",
            ))
        }
        (None, None) => return Err(err("idp", "is required (or idps, a list of IdPs)")),
        (Some(raw), None) => vec![check_idp(raw, "idp", false, file, resolve)?],
        (None, Some(list)) if list.is_empty() => {
            return Err(err("idps", "must list at least one IdP"))
        }
        (None, Some(list)) => list
            .into_iter()
            .enumerate()
            .map(|(i, raw)| check_idp(raw, &format!("idps[{i}]"), true, file, resolve))
            .collect::<Result<Vec<_>, _>>()?,
    };
    for (i, idp) in idps.iter().enumerate() {
        if let Some(j) = idps[..i].iter().position(|o| o.name == idp.name) {
            return Err(err(
                &format!("idps[{i}].name"),
                &format!("`{}` is also the name of idps[{j}]", idp.name),
            ));
        }
    }
    Ok(idps)
}

/// True when `name` can name an IdP: 1 to 32 of a-z, 0-9, `-` and `_`, not starting with `-`
/// or `_` (it appears in URLs, cookies, metrics labels and rules).
pub fn is_idp_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_'])
}

fn check_idp(
    raw: RawIdp,
    prefix: &str,
    listed: bool,
    file: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<IdpConfig, ConfigError> {
    // Keys are written as `idp.x` below and reported under this IdP's own prefix.
    let err = |key: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        key: format!("{prefix}{}", key.strip_prefix("idp").unwrap_or(key)),
        message,
    };
    let name = match raw.name {
        Some(n) if is_idp_name(&n) => n,
        Some(_) => {
            return Err(err(
                "idp.name",
                "must be 1 to 32 of a-z, 0-9, - and _, starting with a letter or digit".into(),
            ))
        }
        None if listed => {
            return Err(err(
                "idp.name",
                "is required for each IdP of idps (such as staff or partners)".into(),
            ))
        }
        None => "default".to_string(),
    };
    let label = match raw.label {
        Some(l) if l.trim().is_empty() || l.chars().count() > 100 => {
            return Err(err("idp.label", "must be 1 to 100 characters".into()))
        }
        Some(l) => l,
        None => name.clone(),
    };
    let metadata_signing_certs = match &raw.metadata_signing_cert {
        None => Vec::new(),
        Some(path) => {
            let path = resolve(path);
            read_certificates(&path).map_err(|m| {
                err(
                    "idp.metadata_signing_cert",
                    format!("{}: {m}", path.display()),
                )
            })?
        }
    };
    let extra_signing_certs = match &raw.extra_signing_certs {
        None => Vec::new(),
        Some(path) => {
            let path = resolve(path);
            read_certificates(&path).map_err(|m| {
                err(
                    "idp.extra_signing_certs",
                    format!("{}: {m}", path.display()),
                )
            })?
        }
    };
    let source = match (&raw.metadata_url, &raw.metadata_file) {
        (None, None) => {
            return Err(err(
                "idp.metadata_file",
                "is required (or idp.metadata_url with idp.metadata_file as its backing copy)"
                    .into(),
            ))
        }
        (None, Some(file)) => {
            if raw.refresh_interval.is_some() {
                return Err(err(
                    "idp.refresh_interval",
                    "applies only with idp.metadata_url; a metadata_file is read again at SIGHUP"
                        .into(),
                ));
            }
            if raw.metadata_proxy.is_some() {
                return Err(err(
                    "idp.metadata_proxy",
                    "applies only with idp.metadata_url; a metadata_file is not fetched".into(),
                ));
            }
            let path = resolve(file);
            let metadata =
                read_metadata_file(&path, raw.entity_id.as_deref(), &metadata_signing_certs)
                    .map_err(|m| err("idp.metadata_file", m))?;
            let metadata = with_extra_certs(metadata, &extra_signing_certs);
            MetadataSource::File { path, metadata }
        }
        (Some(_), None) => {
            return Err(err(
                "idp.metadata_file",
                "is required with idp.metadata_url: it keeps the last good copy of the metadata, \
                 so that the gateway starts while the URL does not answer"
                    .into(),
            ))
        }
        (Some(text), Some(file)) => {
            let proxy = raw
                .metadata_proxy
                .as_ref()
                .map(|text| crate::fetch_proxy::MetadataProxy::parse(&text.0))
                .transpose()
                .map_err(|m| err("idp.metadata_proxy", m))?;
            let url = check_metadata_url(text, !metadata_signing_certs.is_empty(), proxy.is_some())
                .map_err(|m| err("idp.metadata_url", m))?;
            let refresh_interval = match raw.refresh_interval.as_deref() {
                None => Duration::from_secs(3600),
                Some(v) => parse_duration(v)
                    .filter(|d| (1..=7 * 86_400).contains(&d.as_secs()))
                    .ok_or_else(|| {
                        err(
                            "idp.refresh_interval",
                            "not a duration between 1s and 7d, such as 1h".into(),
                        )
                    })?,
            };
            MetadataSource::Url {
                url,
                refresh_interval,
                backing_file: resolve(file),
                proxy,
            }
        }
    };

    let top_preset = match raw.preset.as_deref() {
        None => None,
        Some(name) => {
            Some(Preset::parse(name).ok_or_else(|| err("idp.preset", unknown_preset(name)))?)
        }
    };
    let attributes_preset = match &raw.attributes {
        Some(RawAttributes::Preset(name)) => Some((name.as_str(), "idp.attributes")),
        Some(RawAttributes::Explicit(names)) => names
            .preset
            .as_deref()
            .map(|p| (p, "idp.attributes.preset")),
        None => None,
    };
    if let (Some(_), Some((_, key))) = (top_preset, attributes_preset) {
        return Err(err(
            key,
            "names a preset while idp.preset is set; keep one of them".into(),
        ));
    }
    let preset = match attributes_preset {
        None => top_preset.unwrap_or(Preset::Generic),
        Some((name, key)) => Preset::parse(name).ok_or_else(|| err(key, unknown_preset(name)))?,
    };
    let mut attributes = AttributeMapping::preset(preset);
    if let Some(RawAttributes::Explicit(names)) = raw.attributes {
        if raw.user_from.is_some() && names.user.is_some() {
            return Err(err(
                "idp.user_from",
                "and idp.attributes.user both name the user key; keep one of them".into(),
            ));
        }
        let overrides: BTreeMap<&str, Option<String>> = [
            ("user", names.user),
            ("email", names.email),
            ("display_name", names.display_name),
            ("groups", names.groups),
            ("given_name", names.given_name),
            ("surname", names.surname),
        ]
        .into_iter()
        .collect();
        for (field, value) in overrides {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    return Err(err(
                        &format!("idp.attributes.{field}"),
                        "must not be empty".into(),
                    ));
                }
                attributes.set(field, v);
            }
        }
    }
    if let Some(from) = raw.user_from {
        if from.trim().is_empty() {
            return Err(err(
                "idp.user_from",
                "must be name_id or an attribute Name".into(),
            ));
        }
        attributes.set("user", from);
    }
    // Trimmed as the assertion's AuthnContextClassRef is, so that the two compare.
    let authn_context: Vec<String> = raw
        .authn_context
        .unwrap_or_default()
        .iter()
        .map(|c| c.trim().to_string())
        .collect();
    if let Some(i) = authn_context.iter().position(String::is_empty) {
        return Err(err(
            &format!("idp.authn_context[{i}]"),
            "must be an AuthnContextClassRef URI".into(),
        ));
    }
    let clock_skew = match raw.clock_skew.as_deref() {
        None => Duration::from_secs(180),
        Some(v) => parse_duration(v)
            .filter(|d| d.as_secs() <= 900)
            .ok_or_else(|| {
                err(
                    "idp.clock_skew",
                    "not a duration of at most 15m, such as 3m".into(),
                )
            })?,
    };
    if !raw.allow_unsolicited
        && (raw.unsolicited_max_age.is_some() || raw.unsolicited_relay_state.is_some())
    {
        let key = if raw.unsolicited_max_age.is_some() {
            "idp.unsolicited_max_age"
        } else {
            "idp.unsolicited_relay_state"
        };
        return Err(err(
            key,
            "applies only with idp.allow_unsolicited: true".into(),
        ));
    }
    let unsolicited_max_age = match raw.unsolicited_max_age.as_deref() {
        None => Duration::from_secs(120),
        Some(v) => parse_duration(v)
            .filter(|d| (1..=300).contains(&d.as_secs()))
            .ok_or_else(|| {
                err(
                    "idp.unsolicited_max_age",
                    "not a duration between 1s and 5m, such as 2m".into(),
                )
            })?,
    };
    let unsolicited_relay_state = raw.unsolicited_relay_state.unwrap_or_default();
    for (i, prefix) in unsolicited_relay_state.iter().enumerate() {
        if !crate::redirect::is_canonical_path(prefix) || prefix.contains(['?', '#']) {
            return Err(err(
                &format!("idp.unsolicited_relay_state[{i}]"),
                "must be a local path such as /sales (one leading /, no //, no .., no query)"
                    .into(),
            ));
        }
    }
    Ok(IdpConfig {
        name,
        label,
        single_logout: raw.single_logout.unwrap_or(true),
        unsolicited_max_age,
        unsolicited_relay_state,
        source,
        entity_id: raw.entity_id,
        metadata_signing_certs,
        extra_signing_certs,
        preset,
        attributes,
        authn_context,
        allow_sha1: raw.allow_sha1,
        allow_unsolicited: raw.allow_unsolicited,
        allow_cbc_encryption: raw.allow_cbc_encryption,
        clock_skew,
        name_id_format: raw.name_id_format,
    })
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
fn read_certificates(path: &Path) -> Result<Vec<saml_sp::CertificateDer>, String> {
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
fn check_metadata_url(
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

fn unknown_preset(name: &str) -> String {
    format!(
        "unknown preset `{}`; use one of {}",
        name.escape_debug(),
        Preset::NAMES.join(", ")
    )
}

/// Headers that carry HTTP framing, routing or credentials: an identity value there would
/// change what the request means to the upstream.
const RESERVED_HEADERS: [&str; 16] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "cookie",
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "origin",
    "expect",
];

/// A header name for identity: valid, not reserved, not of the `X-Forwarded-*` family.
fn identity_header_name(name: &str) -> Result<hyper::header::HeaderName, &'static str> {
    let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "not a valid HTTP header name")?;
    let folded = name.as_str().replace('_', "-");
    if RESERVED_HEADERS.contains(&folded.as_str())
        || folded.starts_with("x-forwarded-")
        || folded.starts_with("sec-")
    {
        return Err("is a header with its own meaning in HTTP; choose another name");
    }
    Ok(name)
}

fn check_identity_token(
    raw: RawIdentityToken,
    sp: &SpConfig,
    resolve: &dyn Fn(&Path) -> PathBuf,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<Option<IdentityTokenConfig>, ConfigError> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let header = raw.header.unwrap_or_else(|| "X-Auth-Jwt".into());
    let header = identity_header_name(&header).map_err(|m| err("identity_token.header", m))?;
    let key_file = match raw.key_file {
        Some(p) => resolve(&p),
        None => sp
            .key_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("jwt.key"),
    };
    let next_key_file = raw.next_key_file.map(|p| resolve(&p));
    if next_key_file.as_ref() == Some(&key_file) {
        return Err(err(
            "identity_token.next_key_file",
            "must be another file than identity_token.key_file",
        ));
    }
    let lifetime = match raw.lifetime.as_deref() {
        None => Duration::from_secs(300),
        Some(v) => parse_duration(v)
            .filter(|d| (10..=3600).contains(&d.as_secs()))
            .ok_or_else(|| {
                err(
                    "identity_token.lifetime",
                    "not a duration between 10s and 1h, such as 5m",
                )
            })?,
    };
    Ok(Some(IdentityTokenConfig {
        header,
        key_file,
        next_key_file,
        lifetime,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("8h"), Some(Duration::from_secs(28800)));
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_duration("3 weeks"), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn the_raw_file_never_shows_a_password_in_debug() {
        let raw: RawConfig = serde_yaml::from_str(&format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: redis://:pw-s3cret@db:6379/0\n"
        ))
        .unwrap();
        let debug = format!("{raw:?}");
        assert!(!debug.contains("pw-s3cret"), "{debug}");
        assert!(debug.contains("SecretText(..)"), "{debug}");
        let idp: RawIdp = serde_yaml::from_str(
            "metadata_file: idp.xml\nmetadata_proxy: http://gw:proxy-s3cret@proxy:3128\n",
        )
        .unwrap();
        let debug = format!("{idp:?}");
        assert!(!debug.contains("proxy-s3cret"), "{debug}");
    }

    #[test]
    fn env_expansion_names_the_key() {
        let mut v: serde_yaml::Value =
            serde_yaml::from_str("sessions:\n  redis_url: redis://${HOST}:${PORT}/0\n").unwrap();
        let lookup = |n: &str| (n == "HOST").then(|| "db".to_string());
        let e = expand_env(&mut v, "", &lookup).unwrap_err();
        assert_eq!(e.0, "sessions.redis_url");
        assert!(e.1.contains("PORT"));
        let lookup = |n: &str| Some(n.to_lowercase());
        expand_env(&mut v, "", &lookup).unwrap();
        assert_eq!(
            v["sessions"]["redis_url"].as_str(),
            Some("redis://host:port/0")
        );
    }

    const METADATA: &str = r#"<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example"><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data><X509Certificate>CERT</X509Certificate></X509Data></KeyInfo></KeyDescriptor><SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/></IDPSSODescriptor></EntityDescriptor>"#;

    pub(crate) const GOOD: &str = "public_url: https://dash.example.com
sp:
  key_file: sp.key
  cert_file: sp.crt
idp:
  metadata_file: idp.xml
routes:
  - path: /
    upstream: http://127.0.0.1:8501
audit:
  file: audit.jsonl
";

    /// Writes `config` and a valid IdP metadata file into a fresh folder and loads it.
    pub(crate) fn load(config: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let keys = crate::keys::generate("idp", 1).unwrap();
        let cert = base64::engine::general_purpose::STANDARD.encode(keys.cert.to_der().unwrap());
        std::fs::write(dir.path().join("idp.xml"), METADATA.replace("CERT", &cert)).unwrap();
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, config).unwrap();
        let result = Config::load(&path);
        (dir, result)
    }

    #[test]
    fn the_forwarded_header_is_named_with_trusted_proxies() {
        let with = |lines: &str| format!("{GOOD}server:\n{lines}");
        let (_dir, c) = load(&with(
            "  trusted_proxies: [10.0.0.0/8]\n  forwarded_header: Forwarded\n",
        ));
        let expected = crate::forwarded::TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()])
            .with_header(crate::forwarded::ForwardedHeader::Forwarded);
        assert_eq!(c.unwrap().trusted_proxies, expected);
        let e = error_of(&with("  forwarded_header: forwarded\n"));
        assert_eq!(e.key, "server.forwarded_header");
        let e = error_of(&with(
            "  trusted_proxies: [10.0.0.0/8]\n  forwarded_header: x-real-ip\n",
        ));
        assert_eq!(e.key, "server.forwarded_header");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let (_dir, c) = load(&format!(
            "{GOOD}server:\n  trusted_proxies: [10.0.0.0/8, 192.0.2.7]\n"
        ));
        let proxies = c.unwrap().trusted_proxies;
        assert!(proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(proxies.contains("192.0.2.7".parse().unwrap()));
        assert!(!proxies.contains("192.0.2.8".parse().unwrap()));
        let (_dir, c) = load(GOOD);
        assert!(c.unwrap().trusted_proxies.is_empty());
        let e = error_of(&format!(
            "{GOOD}server:\n  trusted_proxies: [10.0.0.0/8, lb.example]\n"
        ));
        assert_eq!(e.key, "server.trusted_proxies[1]");
        assert!(e.message.contains("lb.example"), "{}", e.message);
        let e = error_of(&format!("{GOOD}server:\n  trusted_proxies: [0.0.0.0/0]\n"));
        assert!(e.message.contains("trusts every address"), "{}", e.message);
        let e = error_of(&format!(
            "{GOOD}server:\n  trusted_proxies: [0.0.0.0/1, 128.0.0.0/1]\n"
        ));
        assert_eq!(e.key, "server.trusted_proxies");
        assert!(e.message.contains("every IPv4"), "{}", e.message);
    }

    #[test]
    fn tls_needs_an_https_url_and_both_files() {
        let certs = tempfile::tempdir().unwrap();
        let pair = crate::tls::tests::write_pair(certs.path(), "tls", -1, 30);
        let tls = format!(
            "server:\n  tls:\n    cert_file: {}\n    key_file: {}\n",
            pair.cert_file.display(),
            pair.key_file.display()
        );
        let (_dir, c) = load(&format!("{GOOD}{tls}"));
        assert_eq!(c.unwrap().tls, Some(pair.clone()));
        let (_dir, c) = load(GOOD);
        assert_eq!(c.unwrap().tls, None);
        let http = GOOD.replace("https://dash.example.com", "http://127.0.0.1:8080");
        let e = error_of(&format!("{http}{tls}"));
        assert_eq!(e.key, "server.tls");
        assert!(e.message.contains("must be https"), "{}", e.message);
        // The files themselves are read by `server::load_tls`, not by the config: a reload of
        // the routes must not fail on an expired certificate.
        let (_dir, c) = load(&format!(
            "{GOOD}server:\n  tls:\n    cert_file: {}\n    key_file: /nonexistent/tls.key\n",
            pair.cert_file.display()
        ));
        assert!(c.is_ok());
        let e = error_of(&format!("{GOOD}server:\n  tls:\n    cert_file: a.crt\n"));
        assert!(e.message.contains("key_file"), "{}", e.message);
    }

    #[test]
    fn hsts_is_a_year_under_https_and_never_under_http() {
        let hsts = |extra: &str| {
            let (_dir, c) = load(&format!("{GOOD}{extra}"));
            c.unwrap()
                .hsts
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        assert_eq!(hsts("").as_deref(), Some("max-age=31536000"));
        assert_eq!(
            hsts("server:\n  hsts_max_age: 30d\n").as_deref(),
            Some("max-age=2592000")
        );
        assert_eq!(hsts("server:\n  hsts_max_age: 0s\n"), None);
        let http = GOOD.replace("https://dash.example.com", "http://127.0.0.1:8080");
        let (_dir, c) = load(&http);
        assert_eq!(c.unwrap().hsts, None);
        let e = error_of(&format!("{GOOD}server:\n  hsts_max_age: 800d\n"));
        assert_eq!(e.key, "server.hsts_max_age");
        // Checked under http too, though never sent there.
        let e = error_of(&format!("{http}server:\n  hsts_max_age: soon\n"));
        assert_eq!(e.key, "server.hsts_max_age");
    }

    #[test]
    fn the_http_redirect_listener_needs_https_and_a_port_of_its_own() {
        let (_dir, c) = load(&format!(
            "{GOOD}server:\n  redirect_http_listen: 0.0.0.0:80\n"
        ));
        assert_eq!(
            c.unwrap().redirect_http_listen,
            Some("0.0.0.0:80".parse().unwrap())
        );
        let http = GOOD.replace("https://dash.example.com", "http://127.0.0.1:8080");
        let e = error_of(&format!(
            "{http}server:\n  redirect_http_listen: 0.0.0.0:80\n"
        ));
        assert_eq!(e.key, "server.redirect_http_listen");
        let e = error_of(&format!(
            "{GOOD}server:\n  redirect_http_listen: 127.0.0.1:8080\n"
        ));
        assert!(e.message.contains("must differ"), "{}", e.message);
        let e = error_of(&format!("{GOOD}server:\n  redirect_http_listen: port80\n"));
        assert!(e.message.contains("port80"), "{}", e.message);
    }

    #[test]
    fn the_proxy_protocol_needs_trusted_proxies() {
        let (_dir, c) = load(GOOD);
        assert!(!c.unwrap().proxy_protocol);
        let (_dir, c) = load(&format!(
            "{GOOD}server:\n  proxy_protocol: true\n  trusted_proxies: [10.0.0.0/8]\n"
        ));
        assert!(c.unwrap().proxy_protocol);
        let e = error_of(&format!("{GOOD}server:\n  proxy_protocol: true\n"));
        assert_eq!(e.key, "server.proxy_protocol");
        assert!(
            e.message.contains("server.trusted_proxies"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_login_budget_defaults_to_300_and_0_switches_it_off() {
        let (_dir, c) = load(GOOD);
        assert_eq!(c.unwrap().login_starts_per_minute, Some(300));
        let (_dir, c) = load(&format!("{GOOD}limits:\n  login_starts_per_minute: 0\n"));
        assert_eq!(c.unwrap().login_starts_per_minute, None);
        let (_dir, c) = load(&format!("{GOOD}limits:\n  login_starts_per_minute: 20\n"));
        assert_eq!(c.unwrap().login_starts_per_minute, Some(20));
        let e = error_of(&format!(
            "{GOOD}limits:\n  login_starts_per_minute: 60001\n"
        ));
        assert_eq!(e.key, "limits.login_starts_per_minute");
    }

    fn error_of(config: &str) -> ConfigError {
        let (_dir, result) = load(config);
        result.unwrap_err()
    }

    /// GOOD with `idps:` listing `items` (YAML list items, indented by two) instead of `idp:`.
    fn with_idps(items: &str) -> String {
        GOOD.replace(
            "idp:\n  metadata_file: idp.xml\n",
            &format!("idps:\n{items}"),
        )
    }

    #[test]
    fn several_idps_load_with_names_labels_and_indexed_keys() {
        let two = with_idps(
            "  - name: staff\n    label: Staff sign-in\n    metadata_file: idp.xml\n    allow_sha1: true\n  - name: partners\n    metadata_file: idp.xml\n",
        );
        let (_dir, result) = load(&two);
        let c = result.unwrap();
        assert!(c.idps_listed);
        let names: Vec<(&str, &str)> = c
            .idps
            .iter()
            .map(|i| (i.name.as_str(), i.label.as_str()))
            .collect();
        assert_eq!(
            names,
            [("staff", "Staff sign-in"), ("partners", "partners")]
        );
        assert!(c.idps[0].allow_sha1 && !c.idps[1].allow_sha1);
        assert_eq!(
            c.idp_key(&c.idps[1], "metadata_file"),
            "idps[1].metadata_file"
        );
        let (_dir, one) = load(GOOD);
        let one = one.unwrap();
        assert_eq!(one.idps[0].name, "default");
        assert_eq!(
            one.idp_key(&one.idps[0], "metadata_file"),
            "idp.metadata_file"
        );

        let e = error_of(&with_idps("  - metadata_file: idp.xml\n"));
        assert_eq!(e.key, "idps[0].name");
        let e = error_of(&with_idps(
            "  - name: a\n    metadata_file: idp.xml\n  - name: a\n    metadata_file: idp.xml\n",
        ));
        assert_eq!(e.key, "idps[1].name");
        assert!(e.message.contains("idps[0]"), "{}", e.message);
        let e = error_of(&with_idps("  - name: Staff!\n    metadata_file: idp.xml\n"));
        assert_eq!(e.key, "idps[0].name");
        let e = error_of(&with_idps("  - name: b\n    metadata_file: nowhere.xml\n"));
        assert_eq!(e.key, "idps[0].metadata_file");
        let e = error_of(&with_idps(
            "  - name: b\n    metadata_file: idp.xml\n    clock_skew: 1h\n",
        ));
        assert_eq!(e.key, "idps[0].clock_skew");
        assert_eq!(
            error_of(&with_idps("  []\n").replace("idps:\n  []", "idps: []")).key,
            "idps"
        );
        let both = GOOD.replace(
            "routes:",
            "idps:\n  - name: b\n    metadata_file: idp.xml\nroutes:",
        );
        assert_eq!(error_of(&both).key, "idps");
        assert_eq!(
            error_of(&GOOD.replace("idp:\n  metadata_file: idp.xml\n", "")).key,
            "idp"
        );
    }

    #[tokio::test]
    async fn two_idps_with_one_entity_id_stop_start_up() {
        let (_dir, c) = load(&with_idps(
            "  - name: a\n    metadata_file: idp.xml\n  - name: b\n    metadata_file: idp.xml\n",
        ));
        let c = c.unwrap();
        let e = crate::federation::initial_all(&c, false).await.unwrap_err();
        assert_eq!(e.key, "idps[1].metadata_file");
        assert!(
            e.message.contains("the same IdP entity ID as idps[0]"),
            "{}",
            e.message
        );
    }

    #[test]
    fn max_authn_age_is_a_duration_on_a_route_with_sign_in() {
        let with = |extra: &str| {
            GOOD.replace(
                "    upstream: http://127.0.0.1:8501\n",
                &format!("    upstream: http://127.0.0.1:8501\n{extra}"),
            )
        };
        let (_dir, c) = load(&with("    max_authn_age: 15m\n"));
        assert_eq!(c.unwrap().routes.routes()[0].max_authn_age, Some(900));
        let (_dir, c) = load(GOOD);
        assert_eq!(c.unwrap().routes.routes()[0].max_authn_age, None);
        for bad in ["0s", "soon", "400d"] {
            let e = error_of(&with(&format!("    max_authn_age: {bad}\n")));
            assert_eq!(e.key, "routes[0].max_authn_age", "{bad}");
        }
        let e = error_of(&with("    max_authn_age: 1h\n    public: true\n"));
        assert_eq!(e.key, "routes[0].max_authn_age");
        // A second way into the same app without the recent sign-in is refused, even when
        // both routes say the app checks access itself.
        for shared in ["", "    shared_upstream: true\n"] {
            let two = with(&format!("    max_authn_age: 1h\n{shared}")).replace(
                "audit:\n",
                &format!("  - path: /again\n    upstream: http://127.0.0.1:8501\n{shared}audit:\n"),
            );
            let e = error_of(&two);
            assert_eq!(e.key, "routes[1].max_authn_age", "{shared}");
        }
    }

    #[test]
    fn routes_name_only_configured_idps() {
        let two = |route_extra: &str| {
            with_idps("  - name: staff\n    metadata_file: idp.xml\n  - name: partners\n    metadata_file: idp.xml\n")
                .replace("    upstream: http://127.0.0.1:8501\n", &format!("    upstream: http://127.0.0.1:8501\n{route_extra}"))
        };
        let (_dir, c) = load(&two("    idp: partners\n"));
        let c = c.unwrap();
        let route = &c.routes.routes()[0];
        assert_eq!(route.idp.as_deref(), Some("partners"));
        assert_eq!(
            route.rule.idps,
            ["partners"],
            "the route's IdP is also required"
        );
        let (_dir, c) = load(&two("    allow: { idps: [staff] }\n"));
        assert_eq!(c.unwrap().routes.routes()[0].rule.idps, ["staff"]);
        let e = error_of(&two("    idp: nobody\n"));
        assert_eq!(e.key, "routes[0].idp");
        assert!(e.message.contains("staff, partners"), "{}", e.message);
        assert_eq!(
            error_of(&two("    allow: { idps: [nobody] }\n")).key,
            "routes[0].allow.idps[0]"
        );
        assert_eq!(
            error_of(&two("    idp: staff\n    allow: { idps: [partners] }\n")).key,
            "routes[0].idp"
        );
        assert_eq!(
            error_of(&two("    idp: staff\n    public: true\n")).key,
            "routes[0].idp"
        );
    }

    #[test]
    fn good_config_loads_with_defaults_and_relative_paths() {
        let (dir, result) = load(GOOD);
        let c = result.unwrap();
        assert_eq!(c.sp.entity_id, "https://dash.example.com/saml/metadata");
        assert_eq!(c.acs_url(), "https://dash.example.com/saml/acs");
        assert_eq!(c.audit_file, dir.path().join("audit.jsonl"));
        assert!(c.secure_cookies);
        match &c.idps[0].source {
            MetadataSource::File { metadata, path } => {
                assert_eq!(metadata.entity_id, "https://idp.example");
                assert_eq!(path, &dir.path().join("idp.xml"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.sessions.idle_timeout, Duration::from_secs(1800));
        assert_eq!(
            c.routes.routes()[0].forward_cookies,
            vec!["_streamlit_*".to_string()]
        );
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = error_of(&GOOD.replace(
            "  - path: /\n    upstream: http://127.0.0.1:8501",
            "  - path: /\n    upstream: ftp://x",
        ));
        assert_eq!(e.key, "routes[0].upstream");
        assert!(
            e.to_string()
                .contains("gateway.yaml: routes[0].upstream: must be an http:// URL"),
            "{e}"
        );

        let e = error_of(&format!("{GOOD}sessions:\n  idle_timeout: soon\n"));
        assert_eq!(e.key, "sessions.idle_timeout");

        let e = error_of(&GOOD.replace("key_file", "keyfile"));
        assert_eq!(e.key, "sp.keyfile");
        assert!(e.message.contains("keyfile"), "{e}");

        let e = error_of(&GOOD.replace("https://dash.example.com", "http://dash.example.com"));
        assert_eq!(e.key, "public_url");

        let e = error_of(&GOOD.replace("idp.xml", "missing.xml"));
        assert_eq!(e.key, "idp.metadata_file");
    }

    #[test]
    fn metadata_urls() {
        let with = |lines: &str| {
            GOOD.replace(
                "  metadata_file: idp.xml\n",
                &format!("  metadata_file: idp.xml\n{lines}"),
            )
        };
        let (_dir, c) = load(&with(
            "  metadata_url: https://idp.example/md\n  refresh_interval: 10m\n  metadata_proxy: http://proxy.corp:3128\n",
        ));
        match c.unwrap().idps.remove(0).source {
            MetadataSource::Url {
                url,
                refresh_interval,
                backing_file,
                proxy,
            } => {
                assert_eq!(url.as_str(), "https://idp.example/md");
                assert_eq!(refresh_interval, Duration::from_secs(600));
                assert!(backing_file.ends_with("idp.xml"));
                assert_eq!(proxy.unwrap().shown(), "http://proxy.corp:3128/");
            }
            other => panic!("{other:?}"),
        }
        // Loopback http is fine; http elsewhere only with a signature check.
        assert!(load(&with("  metadata_url: http://127.0.0.1:9/md\n"))
            .1
            .is_ok());
        for (lines, key, says) in [
            (
                "  metadata_url: http://idp.example/md\n",
                "idp.metadata_url",
                "plain http",
            ),
            (
                "  metadata_url: ftp://idp.example/md\n",
                "idp.metadata_url",
                "https://",
            ),
            ("  metadata_url: nowhere\n", "idp.metadata_url", "not a URL"),
            (
                "  metadata_url: https://idp.example/md\n  refresh_interval: 0s\n",
                "idp.refresh_interval",
                "between 1s and 7d",
            ),
            (
                "  refresh_interval: 1h\n",
                "idp.refresh_interval",
                "only with",
            ),
            (
                "  metadata_proxy: http://proxy.corp:3128\n",
                "idp.metadata_proxy",
                "only with",
            ),
            (
                "  metadata_url: https://idp.example/md\n  metadata_proxy: http://u:secret@proxy.corp\n",
                "idp.metadata_proxy",
                "must name the port",
            ),
            (
                "  metadata_url: http://127.0.0.1:9/md\n  metadata_proxy: http://proxy.corp:3128\n",
                "idp.metadata_url",
                "plain http",
            ),
            (
                "  metadata_signing_cert: missing.pem\n",
                "idp.metadata_signing_cert",
                "cannot read",
            ),
        ] {
            let e = error_of(&with(lines));
            assert_eq!(e.key, key, "{lines}");
            assert!(e.message.contains(says), "{lines}: {e}");
        }
        let e = error_of(&GOOD.replace(
            "  metadata_file: idp.xml\n",
            "  metadata_url: https://idp.example/md\n",
        ));
        assert_eq!(e.key, "idp.metadata_file");
        assert!(e.message.contains("last good copy"), "{e}");

        let e = error_of(&format!("{GOOD}listen: nowhere\n"));
        assert_eq!(e.key, "listen");

        let e = error_of(&GOOD.replace("audit.jsonl", "${SAML_GATEWAY_TEST_UNSET_VARIABLE}"));
        assert_eq!(e.key, "audit.file");
        assert!(e.message.contains("SAML_GATEWAY_TEST_UNSET_VARIABLE"));

        let e = error_of("public_url: [1\n");
        assert_eq!(e.key, "(file)");
    }

    #[test]
    fn encryption_and_unsolicited_switches() {
        let with_sp = |extra: &str| {
            GOOD.replace(
                "  cert_file: sp.crt\n",
                &format!("  cert_file: sp.crt\n{extra}"),
            )
        };
        let with_idp = |sp: &str, idp: &str| {
            with_sp(sp).replace(
                "  metadata_file: idp.xml\n",
                &format!("  metadata_file: idp.xml\n{idp}"),
            )
        };
        let (_dir, result) = load(&with_idp(
            "  encrypted_assertions: true\n",
            "  allow_cbc_encryption: true\n",
        ));
        let c = result.unwrap();
        assert!(c.sp.encrypted_assertions && c.idps[0].allow_cbc_encryption);

        let e = error_of(&with_idp("", "  allow_cbc_encryption: true\n"));
        assert_eq!(e.key, "idp.allow_cbc_encryption");

        let (_dir, result) = load(&with_idp(
            "",
            "  allow_unsolicited: true\n  unsolicited_max_age: 30s\n  unsolicited_relay_state: [/sales, /ops/]\n",
        ));
        let c = result.unwrap();
        assert!(c.idps[0].allow_unsolicited);
        assert_eq!(c.idps[0].unsolicited_max_age, Duration::from_secs(30));
        assert_eq!(c.idps[0].unsolicited_relay_state, ["/sales", "/ops/"]);
        let (_dir, result) = load(&with_idp("", "  allow_unsolicited: true\n"));
        let c = result.unwrap();
        assert_eq!(c.idps[0].unsolicited_max_age, Duration::from_secs(120));
        assert!(c.idps[0].unsolicited_relay_state.is_empty());
        for (lines, key) in [
            ("  unsolicited_max_age: 1m\n", "idp.unsolicited_max_age"),
            (
                "  unsolicited_relay_state: [/a]\n",
                "idp.unsolicited_relay_state",
            ),
            (
                "  allow_unsolicited: true\n  unsolicited_max_age: 1h\n",
                "idp.unsolicited_max_age",
            ),
            (
                "  allow_unsolicited: true\n  unsolicited_relay_state: [/a, //evil.example]\n",
                "idp.unsolicited_relay_state[1]",
            ),
            (
                "  allow_unsolicited: true\n  unsolicited_relay_state: [https://evil.example/]\n",
                "idp.unsolicited_relay_state[0]",
            ),
        ] {
            assert_eq!(error_of(&with_idp("", lines)).key, key, "{lines}");
        }
    }

    #[test]
    fn vendor_presets_user_key_and_authn_context() {
        let with = |lines: &str| {
            GOOD.replace(
                "  metadata_file: idp.xml\n",
                &format!("  metadata_file: idp.xml\n{lines}"),
            )
        };
        let (_dir, c) = load(&with(
            "  preset: keycloak\n  user_from: email\n  authn_context: [urn:oasis:names:tc:SAML:2.0:ac:classes:X509]\n",
        ));
        let c = c.unwrap();
        assert_eq!(c.idps[0].preset, Preset::Keycloak);
        assert_eq!(c.idps[0].attributes.user, ["email"]);
        assert!(c.idps[0].attributes.groups.contains(&"Role".to_string()));
        assert_eq!(
            c.idps[0].authn_context,
            ["urn:oasis:names:tc:SAML:2.0:ac:classes:X509"]
        );
        // Trimmed, as the assertion's AuthnContextClassRef is before the two are compared.
        let (_dir, c) = load(&with("  authn_context: [' urn:x ', \"urn:y\\n\"]\n"));
        assert_eq!(c.unwrap().idps[0].authn_context, ["urn:x", "urn:y"]);
        let (_dir, c) = load(&with("  attributes: {preset: google, groups: teams}\n"));
        let c = c.unwrap();
        assert_eq!(c.idps[0].preset, Preset::Google);
        assert_eq!(c.idps[0].attributes.groups, ["teams"]);
        assert!(c.idps[0].authn_context.is_empty());
        for (lines, key, says) in [
            ("  preset: azure\n", "idp.preset", "unknown preset"),
            (
                "  preset: entra\n  attributes: okta\n",
                "idp.attributes",
                "keep one of them",
            ),
            (
                "  preset: entra\n  attributes: {preset: okta}\n",
                "idp.attributes.preset",
                "keep one of them",
            ),
            (
                "  user_from: upn\n  attributes: {user: mail}\n",
                "idp.user_from",
                "keep one of them",
            ),
            (
                "  user_from: ' '\n",
                "idp.user_from",
                "name_id or an attribute",
            ),
            ("  authn_context: ['']\n", "idp.authn_context[0]", "URI"),
        ] {
            let e = error_of(&with(lines));
            assert_eq!(e.key, key, "{lines}");
            assert!(e.message.contains(says), "{lines}: {e}");
        }
    }

    #[test]
    fn session_store_choice() {
        let (_dir, result) = load(GOOD);
        assert_eq!(result.unwrap().sessions.store, StoreKind::Memory);

        let redis = format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: redis://:pw-s3cret@db.internal:6380/2\n"
        );
        let (_dir, result) = load(&redis);
        let c = result.unwrap();
        let StoreKind::Redis { url, description } = &c.sessions.store else {
            panic!("{:?}", c.sessions.store)
        };
        assert_eq!(url, "redis://:pw-s3cret@db.internal:6380/2");
        assert_eq!(description, "db.internal:6380, database 2");
        assert!(!format!("{c:?}").contains("pw-s3cret"));

        let e = error_of(&format!("{GOOD}sessions:\n  store: redis\n"));
        assert_eq!(e.key, "sessions.redis_url");
        assert!(e.message.contains("required"), "{e}");

        let e = error_of(&format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: http://:pw-s3cret@db/\n"
        ));
        assert_eq!(e.key, "sessions.redis_url");
        assert!(!e.to_string().contains("pw-s3cret"), "{e}");

        let e = error_of(&format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: redis://:pw-s3cret@[::1\n"
        ));
        assert_eq!(e.key, "sessions.redis_url");
        assert!(!e.to_string().contains("pw-s3cret"), "{e}");

        let e = error_of(&format!(
            "{GOOD}sessions:\n  redis_url: redis://127.0.0.1:6379\n"
        ));
        assert_eq!(e.key, "sessions.redis_url");
        assert!(e.message.contains("store is `memory`"), "{e}");

        let e = error_of(&format!("{GOOD}sessions:\n  store: memcached\n"));
        assert_eq!(e.key, "sessions.store");

        let e = error_of(&format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: ${{SAML_GATEWAY_TEST_UNSET_REDIS}}\n"
        ));
        assert_eq!(e.key, "sessions.redis_url");
        assert!(e.message.contains("SAML_GATEWAY_TEST_UNSET_REDIS"), "{e}");
    }

    #[test]
    fn redis_tls_needs_a_rediss_url_and_both_halves_of_a_client_pair() {
        let redis = |url: &str, tls: &str| {
            format!("{GOOD}sessions:\n  store: redis\n  redis_url: {url}\n  redis_tls:\n{tls}")
        };
        let (_dir, result) = load(&redis(
            "rediss://gw:pw@db.internal:6380/0",
            "    ca_file: ca.pem\n    cert_file: c.pem\n    key_file: /etc/k.pem\n",
        ));
        let c = result.unwrap();
        let files = c.sessions.redis_tls.unwrap();
        assert!(files.ca_file.unwrap().ends_with("ca.pem"));
        let client = files.client.unwrap();
        assert!(client.cert_file.is_absolute() && client.cert_file.ends_with("c.pem"));
        assert_eq!(client.key_file, Path::new("/etc/k.pem"));
        let e = error_of(&redis("redis://db:6379", "    ca_file: ca.pem\n"));
        assert_eq!(e.key, "sessions.redis_tls");
        assert!(e.message.contains("rediss://"), "{}", e.message);
        let e = error_of(&redis("rediss://db:6380", "    cert_file: c.pem\n"));
        assert_eq!(e.key, "sessions.redis_tls.key_file");
        let e = error_of(&redis("rediss://db:6380", "    key_file: k.pem\n"));
        assert_eq!(e.key, "sessions.redis_tls.cert_file");
        let e = error_of(&redis(
            "rediss://:pw-s3cret@db:6380/#insecure",
            "    ca_file: a\n",
        ));
        assert_eq!(e.key, "sessions.redis_url");
        assert!(e.message.contains("#insecure") && !e.message.contains("pw-s3cret"));
        let e = error_of(&format!(
            "{GOOD}sessions:\n  redis_tls:\n    ca_file: ca.pem\n"
        ));
        assert_eq!(e.key, "sessions.redis_tls");
        assert!(e.message.contains("sessions.store: redis"), "{}", e.message);
    }

    #[test]
    fn a_redis_password_file_needs_redis_and_a_url_without_a_password() {
        let redis = |url: &str| {
            format!(
                "{GOOD}sessions:\n  store: redis\n  redis_url: {url}\n  \
                 redis_password_file: secrets/redis-password\n"
            )
        };
        let (_dir, result) = load(&redis("redis://saml-gateway@db.internal:6379/0"));
        let path = result.unwrap().sessions.redis_password_file.unwrap();
        assert!(path.is_absolute() && path.ends_with("secrets/redis-password"));
        let e = error_of(&redis("redis://saml-gateway:pw-s3cret@db.internal:6379/0"));
        assert_eq!(e.key, "sessions.redis_password_file");
        assert!(e.message.contains("in one place"), "{}", e.message);
        assert!(!e.to_string().contains("pw-s3cret"), "{e}");
        let e = error_of(&format!(
            "{GOOD}sessions:\n  redis_password_file: /run/secrets/redis\n"
        ));
        assert_eq!(e.key, "sessions.redis_password_file");
        assert!(e.message.contains("sessions.store: redis"), "{}", e.message);
    }

    #[test]
    fn a_record_key_file_needs_redis() {
        let (_dir, result) = load(&format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: redis://db:6379/0\n  \
             redis_record_key_file: keys\n"
        ));
        assert!(result
            .unwrap()
            .sessions
            .redis_record_key_file
            .unwrap()
            .is_absolute());
        let e = error_of(&format!("{GOOD}sessions:\n  redis_record_key_file: keys\n"));
        assert_eq!(e.key, "sessions.redis_record_key_file");
        assert!(e.message.contains("sessions.store: redis"), "{}", e.message);
    }

    #[test]
    fn short_timeouts_and_redis_connect_retry() {
        let (_dir, result) = load(&format!("{GOOD}sessions:\n  idle_timeout: 4s\n"));
        let c = result.unwrap();
        assert_eq!(c.sessions.idle_timeout, Duration::from_secs(4));
        assert_eq!(c.sessions.redis_connect_retry, Duration::ZERO);

        let redis = format!("{GOOD}sessions:\n  store: redis\n  redis_url: redis://db:6379\n");
        let (_dir, result) = load(&format!("{redis}  redis_connect_retry: 30s\n"));
        assert_eq!(
            result.unwrap().sessions.redis_connect_retry,
            Duration::from_secs(30)
        );
        let (_dir, result) = load(&format!("{redis}  redis_connect_retry: 0\n"));
        assert_eq!(result.unwrap().sessions.redis_connect_retry, Duration::ZERO);
        let e = error_of(&format!("{redis}  redis_connect_retry: 2h\n"));
        assert_eq!(e.key, "sessions.redis_connect_retry");
        let e = error_of(&format!("{GOOD}sessions:\n  redis_connect_retry: 10s\n"));
        assert_eq!(e.key, "sessions.redis_connect_retry");
        assert!(e.message.contains("only with sessions.store: redis"), "{e}");
    }

    #[test]
    fn loopback_http_is_allowed_without_secure_cookies() {
        let (_dir, result) =
            load(&GOOD.replace("https://dash.example.com", "http://127.0.0.1:8080"));
        assert!(!result.unwrap().secure_cookies);
    }

    #[test]
    fn routes_rules_and_token_settings() {
        let routes = |block: &str| {
            GOOD.replace(
                "routes:\n  - path: /\n    upstream: http://127.0.0.1:8501\n",
                &format!("routes:\n{block}"),
            )
        };
        let two = routes(
            "  - path: /sales\n    upstream: http://127.0.0.1:8502\n    allow:\n      groups: [analytics]\n      email_domains: [example.test]\n    groups_header: rule\n  - path: /ops/\n    name: operations\n    upstream: http://127.0.0.1:8503\n    allow_groups: [ops]\n  - path: /status\n    upstream: http://127.0.0.1:8504\n    public: true\n",
        );
        let (dir, result) = load(&two);
        let c = result.unwrap();
        let names: Vec<&str> = c.routes.routes().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["status", "sales", "operations"]);
        assert_eq!(c.routes.routes()[2].path, "/ops");
        let token = c.identity_token.unwrap();
        assert_eq!(token.key_file, dir.path().join("jwt.key"));
        assert_eq!(token.lifetime, Duration::from_secs(300));
        assert_eq!(token.header.as_str(), "x-auth-jwt");

        for (block, key, words) in [
            ("  - path: /a/../b\n    upstream: http://h:1\n", "routes[0].path", "normal form"),
            ("  - path: /a;x\n    upstream: http://h:1\n", "routes[0].path", "normal form"),
            ("  - path: /a\n    upstream: http://u:p@h:1\n", "routes[0].upstream", "user name"),
            ("  - path: /saml\n    upstream: http://h:1\n", "routes[0].path", "reserved"),
            ("  - path: /a\n    upstream: http://h:1\n    allow: {}\n", "routes[0].allow", "no entries"),
            ("  - path: /a\n    upstream: http://h:1\n    allow: {groups: [x]}\n    allow_groups: [y]\n", "routes[0].allow_groups", "not both"),
            ("  - path: /a\n    upstream: http://h:1\n    allow: {group: [x]}\n", "routes[0].allow.group", "unknown field"),
            ("  - path: /a\n    upstream: http://h:1\n    public: true\n    allow_groups: [y]\n", "routes[0].public", "cannot have"),
            ("  - path: /a\n    upstream: http://h:1\n    groups_header: rule\n", "routes[0].groups_header", "names no groups"),
            ("  - path: /a\n    upstream: http://h:1\n    groups_header: some\n", "routes[0].groups_header", "prefix:"),
            ("  - path: /a\n    upstream: http://h:1\n    name: a b\n", "routes[0].name", "letters"),
            ("  - path: /a\n    upstream: http://h:1\n  - path: /b\n    name: a\n    upstream: http://h:1\n", "routes[1].name", "unique"),
            ("  - path: /a\n    upstream: http://h:1\n    host: Dash.example.com:443\n", "routes[0].host", "without port"),
            ("  - path: /a\n    upstream: http://h:1\n  - path: /a/\n    name: b\n    upstream: http://h:2\n", "routes[1].path", "earlier route"),
            ("  - path: /a\n    upstream: http://h:1\n  - path: /A\n    name: b\n    upstream: http://h:2\n", "routes[1].path", "only in case"),
            ("  - path: //\n    upstream: http://h:1\n", "routes[0].path", "normal form"),
            ("  - path: /a\n    upstream: http://h:1\n    allow_groups: []\n", "routes[0].allow_groups", "is empty"),
            ("  - path: /\n    upstream: http://h:1\n    allow_groups: [a]\n  - path: /admin\n    upstream: http://h:1\n    allow_groups: [admins]\n", "routes[1].upstream", "protects an upstream"),
            ("  - path: /a\n    upstream: http://h:1\n  - path: /a/health\n    upstream: http://h:1\n    public: true\n    shared_upstream: true\n", "routes[1].upstream", "shared_upstream: true on both"),
            ("  - path: /a\n    upstream: http://h\n  - path: /b\n    upstream: http://H:80\n    public: true\n", "routes[1].upstream", "other access"),
        ] {
            let e = error_of(&routes(block));
            assert_eq!(e.key, key, "{block}: {e}");
            assert!(e.message.contains(words), "{block}: {e}");
        }
        let e = error_of(&format!(
            "{}paths:\n  case_sensitive: false\n",
            routes("  - path: /a\n    upstream: http://h:1\n  - path: /A\n    name: b\n    upstream: http://h:1\n")
        ));
        assert_eq!(e.key, "routes[1].path");

        // Both routes opt in: the app checks access itself.
        let (_dir, result) = load(&routes(
            "  - path: /a\n    upstream: http://h:1\n    shared_upstream: true\n  - path: /a/health\n    upstream: http://h:1\n    public: true\n    shared_upstream: true\n",
        ));
        assert_eq!(result.unwrap().routes.routes().len(), 2);
        for (block, key) in [
            (
                "identity_headers:\n  user: Content-Length\n",
                "identity_headers.user",
            ),
            (
                "identity_headers:\n  groups: X-Forwarded-User\n",
                "identity_headers.groups",
            ),
            (
                "identity_token:\n  header: Authorization\n",
                "identity_token.header",
            ),
            (
                "identity_token:\n  header: X-Auth-User\n",
                "identity_token.header",
            ),
            (
                "identity_headers:\n  email: X-Auth-User\n",
                "identity_headers.email",
            ),
            (
                "identity_headers:\n  auth_time: x_auth_groups\n",
                "identity_headers.auth_time",
            ),
            (
                "identity_headers:\n  auth_time: Cookie\n",
                "identity_headers.auth_time",
            ),
            (
                "identity_headers:\n  auth_time: X-Auth-Time\n  authn_context: x-auth-time\n",
                "identity_headers.authn_context",
            ),
        ] {
            let e = error_of(&format!("{GOOD}{block}"));
            assert_eq!(e.key, key, "{block}: {e}");
        }

        let (_dir, result) = load(&format!("{GOOD}server:\n  worker_threads: 1\n"));
        assert_eq!(result.unwrap().worker_threads, Some(1));
        let e = error_of(&format!("{GOOD}server:\n  worker_threads: 0\n"));
        assert_eq!(e.key, "server.worker_threads");

        let (_dir, result) = load(&format!(
            "{GOOD}identity_headers:\n  auth_time: X-Auth-Time\n  authn_context: X-Auth-Context\n"
        ));
        let names = result.unwrap().identity_headers;
        assert_eq!(
            names.auth_time.as_ref().map(|n| n.as_str()),
            Some("x-auth-time")
        );
        assert_eq!(
            names.authn_context.as_ref().map(|n| n.as_str()),
            Some("x-auth-context")
        );
        assert_eq!(names.all().count(), 6);
        let (_dir, result) = load(&format!("{GOOD}identity_token:\n  enabled: false\n"));
        assert!(result.unwrap().identity_token.is_none());
        let e = error_of(&format!("{GOOD}identity_token:\n  lifetime: 2h\n"));
        assert_eq!(e.key, "identity_token.lifetime");
        let e = error_of(&format!(
            "{GOOD}identity_token:\n  key_file: a.key\n  next_key_file: a.key\n"
        ));
        assert_eq!(e.key, "identity_token.next_key_file");
    }

    #[test]
    fn client_timeout_is_checked() {
        let (_dir, result) = load(GOOD);
        assert_eq!(result.unwrap().client_timeout, DEFAULT_CLIENT_TIMEOUT);
        let (_dir, result) = load(&format!("{GOOD}server:\n  client_timeout: 5s\n"));
        assert_eq!(result.unwrap().client_timeout, Duration::from_secs(5));
        for bad in ["0", "2h", "soon"] {
            let e = error_of(&format!("{GOOD}server:\n  client_timeout: {bad}\n"));
            assert_eq!(e.key, "server.client_timeout", "{bad}");
            assert!(e.message.contains("from 1s to 1h"), "{}", e.message);
        }
    }
}
