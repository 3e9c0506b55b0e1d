//! The YAML configuration: parsed once at start-up into typed, checked values.
//!
//! Loading goes YAML text -> `serde_yaml::Value` -> `${ENV}` expansion in string values ->
//! [`RawConfig`] (unknown keys refused, each error with its key path) -> [`Config`] (URLs,
//! durations, files and the IdP metadata checked). Every failure is a [`ConfigError`] that
//! names the file, the key and what is wrong. Relative paths are taken from the config file's
//! folder. Nothing reads files or the environment after this.
//!
//! `check` reads `listen`, `public_url` and `limits` itself and hands every other section to
//! its own module, always in this order, so that a file with several problems reports the same
//! first one: `sp`, the IdPs (`idp`), `sessions`, the routes ([`crate::route_config`]),
//! `identity_headers` and `identity_token` (`identity`), `limits`, `server`, `debug`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::identity_token::IdentityTokenConfig;
use crate::route_config::{check_routes, RawPaths, RawRoute};
use crate::routing::RouteTable;

mod debug;
mod env;
mod identity;
mod idp;
mod metadata;
mod server;
mod sessions;
mod sp;

pub use debug::TraceConfig;
pub use identity::IdentityHeaders;
pub use idp::{is_idp_name, IdpConfig};
pub use metadata::{parse_metadata, read_metadata_file, with_extra_certs, MetadataSource};
pub use server::DEFAULT_CLIENT_TIMEOUT;
pub use sessions::{RedisTlsFiles, SessionConfig, StoreKind};
pub use sp::SpConfig;

use debug::{check_debug, RawDebug};
use env::expand_env;
use identity::{check_identity, RawIdentityHeaders, RawIdentityToken};
use idp::{check_idps, RawIdp};
use server::{check_server, RawServer, ServerSettings};
use sessions::{check_sessions, RawSessions};
use sp::{check_sp, RawSp};

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

    let sp = check_sp(raw.sp, &public_url, &resolve, &err)?;

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

    let sessions = check_sessions(raw.sessions, &resolve, &err)?;

    let idp_names: Vec<&str> = idps.iter().map(|i| i.name.as_str()).collect();
    let routes = check_routes(raw.routes, raw.paths, &idp_names, &|k, m| err(k, m))?;

    let (identity_headers, identity_token) = check_identity(
        raw.identity_headers,
        raw.identity_token,
        &sp,
        &resolve,
        &err,
    )?;

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

    let ServerSettings {
        worker_threads,
        client_timeout,
        trusted_proxies,
        proxy_protocol,
        hsts,
        tls,
        admin_listen,
        redirect_http_listen,
    } = check_server(raw.server, listen, secure_cookies, &resolve, &err)?;

    let trace = check_debug(raw.debug, &raw.audit.file, &resolve, &err)?;

    Ok(Config {
        trace,
        admin_listen,
        worker_threads,
        client_timeout,
        trusted_proxies,
        proxy_protocol,
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

/// The tests of loading as a whole, and the helpers (`GOOD`, `load`, `error_of`, `with_idps`)
/// the section modules' tests share.
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

    const METADATA: &str = r#"<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example"><IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><KeyDescriptor use="signing"><KeyInfo xmlns="http://www.w3.org/2000/09/xmldsig#"><X509Data><X509Certificate>CERT</X509Certificate></X509Data></KeyInfo></KeyDescriptor><SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example/sso"/></IDPSSODescriptor></EntityDescriptor>"#;

    /// A small valid config: one IdP whose metadata [`load`] writes, one route.
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

    /// Loads `config` with [`load`] and returns the error it fails with.
    pub(crate) fn error_of(config: &str) -> ConfigError {
        let (_dir, result) = load(config);
        result.unwrap_err()
    }

    /// GOOD with `idps:` listing `items` (YAML list items, indented by two) instead of `idp:`.
    pub(crate) fn with_idps(items: &str) -> String {
        GOOD.replace(
            "idp:\n  metadata_file: idp.xml\n",
            &format!("idps:\n{items}"),
        )
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
}
