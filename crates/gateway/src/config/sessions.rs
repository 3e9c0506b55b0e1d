//! The `sessions.*` section: where sessions live ([`StoreKind`]), the keys only a Redis store
//! reads, and the session timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{both_or_neither, duration_text, parse_duration, ConfigError, SecretText};

/// `sessions:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSessions {
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
    redis_sentinel_password_file: Option<PathBuf>,
    redis_record_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// Whether the store is a Redis whose URL carries a password.
fn store_url_has_password(store: &StoreKind) -> bool {
    matches!(store, StoreKind::Redis { url, .. } if session_store::RedisStore::url_has_password(url))
}

/// Whether the store is a Redis behind Sentinel (`redis+sentinel://`, `rediss+sentinel://`).
fn store_url_names_sentinels(store: &StoreKind) -> bool {
    matches!(store, StoreKind::Redis { url, .. } if session_store::RedisStore::url_names_sentinels(url))
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
    /// Behind Sentinel, a file holding the sentinels' own password
    /// (`sessions.redis_sentinel_password_file`), sent to them in place of the master's; read
    /// when the store is opened and on SIGHUP ([`crate::redis_access::load`]).
    pub redis_sentinel_password_file: Option<PathBuf>,
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

/// Checks `sessions.*`: the store first, then the Redis-only keys against it, then the timeouts.
pub(super) fn check_sessions(
    raw: RawSessions,
    resolve: &dyn Fn(&Path) -> PathBuf,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<SessionConfig, ConfigError> {
    let store = match (
        raw.store.as_deref().unwrap_or("memory"),
        raw.redis_url.map(|url| url.0),
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
                raw.redis_connect_retry.is_some(),
            ),
            ("sessions.redis_tls", raw.redis_tls.is_some()),
            (
                "sessions.redis_password_file",
                raw.redis_password_file.is_some(),
            ),
            (
                "sessions.redis_sentinel_password_file",
                raw.redis_sentinel_password_file.is_some(),
            ),
            (
                "sessions.redis_record_key_file",
                raw.redis_record_key_file.is_some(),
            ),
        ];
        if let Some((key, _)) = redis_only.into_iter().find(|(_, set)| *set) {
            return Err(err(key, "applies only with sessions.store: redis"));
        }
    }
    let redis_connect_retry = match raw.redis_connect_retry.as_deref() {
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
    let redis_tls = match raw.redis_tls {
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
    let redis_password_file = match raw.redis_password_file {
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
    let redis_sentinel_password_file = match raw.redis_sentinel_password_file {
        None => None,
        Some(_) if !store_url_names_sentinels(&store) => {
            return Err(err(
                "sessions.redis_sentinel_password_file",
                "applies only to a redis+sentinel:// or rediss+sentinel:// sessions.redis_url \
                 (Redis behind Sentinel)",
            ))
        }
        Some(path) => Some(resolve(&path)),
    };
    let redis_record_key_file = raw.redis_record_key_file.as_deref().map(resolve);
    Ok(SessionConfig {
        redis_tls,
        redis_password_file,
        redis_sentinel_password_file,
        redis_record_key_file,
        redis_connect_retry,
        store,
        idle_timeout: duration("sessions.idle_timeout", raw.idle_timeout.as_deref(), 1800)?,
        max_lifetime: duration(
            "sessions.max_lifetime",
            raw.max_lifetime.as_deref(),
            8 * 3600,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error_of, load, GOOD};

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
    fn a_sentinel_password_file_needs_sentinels() {
        let sentinel =
            format!("{GOOD}sessions:\n  store: redis\n  redis_url: redis+sentinel://s1,s2/m/0\n");
        let (_dir, result) = load(&format!(
            "{sentinel}  redis_sentinel_password_file: secrets/sentinel\n"
        ));
        let path = result
            .unwrap()
            .sessions
            .redis_sentinel_password_file
            .unwrap();
        assert!(path.is_absolute() && path.ends_with("secrets/sentinel"));
        let e = error_of(&format!(
            "{GOOD}sessions:\n  store: redis\n  redis_url: redis://db:6379/0\n  \
             redis_sentinel_password_file: secrets/sentinel\n"
        ));
        assert_eq!(e.key, "sessions.redis_sentinel_password_file");
        assert!(e.message.contains("redis+sentinel://"), "{}", e.message);
        let e = error_of(&format!(
            "{GOOD}sessions:\n  redis_sentinel_password_file: secrets/sentinel\n"
        ));
        assert_eq!(e.key, "sessions.redis_sentinel_password_file");
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
}
