//! Opening connections to Redis: the URL and TLS checks, the client for a URL or a Sentinel
//! master, and a managed connection that has answered a `PING`; errors never show the password.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::RedisStore;
use crate::sentinel::SentinelUrl;

/// How long one connection attempt may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its answer.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection attempts after the first one, each time a connection is needed. Kept small so
/// that during an outage a request fails in about a second (503) instead of queueing.
const CONNECT_RETRIES: usize = 1;
/// Longest pause between connection attempts, in milliseconds.
const CONNECT_RETRY_DELAY_MS: u64 = 500;

/// The store could not be opened at start-up. Messages name the server (address and database)
/// but never the password.
#[derive(Debug, thiserror::Error)]
pub enum RedisConnectError {
    /// The URL is not one this build can use.
    #[error(
        "not a Redis URL such as redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB] or \
         redis[s]+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB] ({0})"
    )]
    InvalidUrl(&'static str),
    /// The TLS settings cannot be used with the URL, or their certificates do not parse.
    #[error("the Redis TLS settings cannot be used: {0}")]
    InvalidTls(&'static str),
    /// The server did not answer, refused the connection or refused the credentials.
    #[error("cannot connect to Redis at {address}: {reason}")]
    Unreachable {
        /// Address and database, without credentials.
        address: String,
        /// Why, with any occurrence of the password removed.
        reason: String,
    },
}

/// What a `rediss://` connection trusts and shows beyond the defaults (the system's trusted
/// roots, no client certificate), as PEM. Its `Debug` shows what is set, never the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// Certificates trusted for the server, instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A certificate chain and its private key, for a server that asks clients for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// What a connection to Redis signs in with and trusts beyond its URL, as read from files that
/// may be renewed without a restart ([`RedisStore::renew`]). Its `Debug` shows what is set,
/// never the password or the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisAccess {
    /// The password, in place of the URL's, sent with the URL's user name (or `default`).
    pub password: Option<String>,
    /// For a `rediss://` URL: what the connection trusts and shows beyond the defaults.
    pub tls: Option<RedisTls>,
    /// Behind Sentinel: the sentinels' own password (their `requirepass`), sent to them in
    /// place of the master's, which they then never see.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("password", &self.password.is_some())
            .field("tls", &self.tls)
            .field("sentinel_password", &self.sentinel_password.is_some())
            .finish()
    }
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl RedisStore {
    /// Checks that `url` (with `access`) is a Redis server this build can connect to, without
    /// connecting; returns a description of the server that is safe to log (no credentials).
    pub fn check_url(url: &str, access: &RedisAccess) -> Result<String, RedisConnectError> {
        match SentinelUrl::parse(url) {
            Some(sentinel) => {
                let sentinel = sentinel?;
                // The client the master will get, built now to check the settings.
                let master = sentinel.master_info(("localhost".to_string(), 6379), access);
                client_for(master, access.tls.as_ref())?;
                Ok(sentinel.describe())
            }
            None => open_client(url, access).map(|client| describe(&client)),
        }
    }

    /// Whether `url` reaches Redis over TLS as the client reads it (the parsed address, not
    /// the spelling of the scheme): only then do TLS settings apply.
    pub fn url_takes_tls(url: &str) -> bool {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        if let Some(sentinel) = SentinelUrl::parse(url) {
            return sentinel.is_ok_and(|s| s.tls);
        }
        url.into_connection_info()
            .is_ok_and(|info| matches!(info.addr, ConnectionAddr::TcpTls { .. }))
    }

    /// Whether `url` names sentinels (`redis+sentinel://` or `rediss+sentinel://`) rather than
    /// a server.
    pub fn url_names_sentinels(url: &str) -> bool {
        SentinelUrl::parse(url).is_some()
    }

    /// Whether `url` carries a password (`redis://[USER]:PASSWORD@...`), as the client reads it.
    pub fn url_has_password(url: &str) -> bool {
        use redis::IntoConnectionInfo;
        if let Some(sentinel) = SentinelUrl::parse(url) {
            return sentinel.is_ok_and(|s| s.redis.password.is_some());
        }
        url.into_connection_info()
            .is_ok_and(|info| info.redis.password.is_some())
    }
}

/// The client for `url`: `redis://` (or a Unix socket) in plain TCP, `rediss://` over TLS,
/// verified against `access`'s CA or else the system's roots, never unverified (`#insecure`);
/// `access`'s password, when set, in place of the URL's.
fn open_client(url: &str, access: &RedisAccess) -> Result<redis::Client, RedisConnectError> {
    use redis::IntoConnectionInfo;
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    if !matches!(scheme, "redis" | "redis+unix" | "unix" | "rediss") {
        return Err(RedisConnectError::InvalidUrl(
            "the scheme must be redis:// or rediss://",
        ));
    }
    let mut info = url
        .into_connection_info()
        .map_err(|_| RedisConnectError::InvalidUrl("the URL does not parse"))?;
    if let Some(password) = &access.password {
        info.redis.password = Some(password.clone());
    }
    client_for(info, access.tls.as_ref())
}

/// The client for `info`: over TLS when its address says so, verified against `tls`'s CA or
/// else the system's roots, never unverified; TLS settings for a plain address are refused.
pub(crate) fn client_for(
    info: redis::ConnectionInfo,
    tls: Option<&RedisTls>,
) -> Result<redis::Client, RedisConnectError> {
    use redis::ConnectionAddr;
    // TLS or not as the connection will be made: from the parsed address.
    match info.addr {
        ConnectionAddr::TcpTls { insecure: true, .. } => Err(RedisConnectError::InvalidUrl(
            "#insecure would accept any server certificate; name the server's CA in the TLS \
             settings instead",
        )),
        ConnectionAddr::TcpTls { .. } => {
            let tls = tls.cloned().unwrap_or_default();
            let certificates = redis::TlsCertificates {
                client_tls: tls
                    .client
                    .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                root_cert: tls.ca_pem,
            };
            redis::Client::build_with_tls(info, certificates).map_err(|_| {
                RedisConnectError::InvalidTls("a certificate or the key does not parse")
            })
        }
        _ if tls.is_some() => Err(RedisConnectError::InvalidTls(
            "TLS settings need a rediss:// or rediss+sentinel:// URL",
        )),
        _ => redis::Client::open(info)
            .map_err(|_| RedisConnectError::InvalidUrl("the URL does not parse")),
    }
}

/// A client for `url` and a connection through it that has answered a `PING`; behind Sentinel,
/// to the master the sentinels name now.
pub(super) async fn open(
    url: &str,
    access: &RedisAccess,
) -> Result<(redis::Client, ConnectionManager), RedisConnectError> {
    match SentinelUrl::parse(url) {
        None => {
            let client = open_client(url, access)?;
            let connection = open_connection(&client).await?;
            Ok((client, connection))
        }
        Some(sentinel) => {
            let sentinel = sentinel?;
            let master = sentinel.master(access).await?;
            crate::sentinel::open_master(&sentinel, master, access).await
        }
    }
}

/// A managed connection through `client` that has answered a `PING`.
pub(crate) async fn open_connection(
    client: &redis::Client,
) -> Result<ConnectionManager, RedisConnectError> {
    let address = describe(client);
    let password = client.get_connection_info().redis.password.clone();
    let unreachable = |e: redis::RedisError| RedisConnectError::Unreachable {
        address: address.clone(),
        reason: redact(&e.to_string(), password.as_deref()),
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(CONNECT_RETRIES)
        .set_max_delay(CONNECT_RETRY_DELAY_MS);
    let mut connection = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(unreachable)?;
    // The handshake alone does not prove the credentials work on every server version.
    redis::cmd("PING")
        .query_async::<()>(&mut connection)
        .await
        .map_err(unreachable)?;
    Ok(connection)
}

/// `127.0.0.1:6379, database 0`: where the store is, without credentials.
pub(crate) fn describe(client: &redis::Client) -> String {
    let info = client.get_connection_info();
    let address = crate::sentinel::shown_addr(&info.addr);
    format!("{address}, database {}", info.redis.db)
}

/// Removes the password from a message, should a library ever echo it.
pub(crate) fn redact(message: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => message.replace(p, "***"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_described_without_credentials() {
        let d = RedisStore::check_url("redis://:s3cret@127.0.0.1:6390/2", &RedisAccess::default())
            .unwrap();
        assert_eq!(d, "127.0.0.1:6390, database 2");
        let d = RedisStore::check_url(
            "rediss://gw:s3cret@db.internal:6380/1",
            &RedisAccess::default(),
        )
        .unwrap();
        assert_eq!(d, "db.internal:6380, database 1");
        assert!(matches!(
            RedisStore::check_url("rediss://h:6379/#insecure", &RedisAccess::default()),
            Err(RedisConnectError::InvalidUrl(_))
        ));
        assert!(matches!(
            RedisStore::check_url("http://h:6379", &RedisAccess::default()),
            Err(RedisConnectError::InvalidUrl(_))
        ));
        let e = RedisStore::check_url("redis://:s3cret@[::1", &RedisAccess::default()).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn tls_is_read_from_the_parsed_address() {
        assert!(RedisStore::url_takes_tls("rediss://:pw@h:6380/0"));
        assert!(RedisStore::url_takes_tls("REDISS://h:6380"));
        assert!(RedisStore::url_takes_tls("rediss+sentinel://s1,s2/m"));
        assert!(!RedisStore::url_takes_tls("redis+sentinel://s1,s2/m"));
        assert!(!RedisStore::url_takes_tls("redis://h:6379"));
        assert!(!RedisStore::url_takes_tls("unix:///run/redis.sock"));
        assert!(!RedisStore::url_takes_tls("rediss://[::1"));
        assert!(RedisStore::url_names_sentinels("REDIS+SENTINEL://s1/m"));
        assert!(RedisStore::url_names_sentinels("rediss+sentinel://s1,s2/m"));
        assert!(!RedisStore::url_names_sentinels("rediss://h:6380"));
    }

    fn with_tls(tls: RedisTls) -> RedisAccess {
        RedisAccess {
            tls: Some(tls),
            ..RedisAccess::default()
        }
    }

    #[test]
    fn a_password_given_apart_replaces_the_urls_and_is_never_shown() {
        let access = RedisAccess {
            password: Some("from-file-s3cret".to_string()),
            ..RedisAccess::default()
        };
        let client = open_client("redis://gw@127.0.0.1:6390/2", &access).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.redis.username.as_deref(), Some("gw"));
        assert_eq!(info.redis.password.as_deref(), Some("from-file-s3cret"));
        let client = open_client("redis://:in-url@127.0.0.1:6390/2", &access).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.redis.password.as_deref(), Some("from-file-s3cret"));
        let none = open_client("redis://127.0.0.1:6390/2", &RedisAccess::default()).unwrap();
        assert_eq!(none.get_connection_info().redis.password, None);
        let described = RedisStore::check_url("redis://gw@127.0.0.1:6390/2", &access).unwrap();
        assert!(!described.contains("s3cret"), "{described}");
        let shown = format!("{access:?}");
        assert_eq!(
            shown,
            "RedisAccess { password: true, tls: None, sentinel_password: false }"
        );
    }

    #[test]
    fn a_password_in_the_url_is_found() {
        assert!(RedisStore::url_has_password("redis://:pw@h:6379/0"));
        assert!(RedisStore::url_has_password("rediss://gw:pw@h:6380"));
        assert!(!RedisStore::url_has_password("redis://gw@h:6379"));
        assert!(!RedisStore::url_has_password("redis://h:6379"));
        // Percent-encoded, and empty (no password at all).
        assert!(RedisStore::url_has_password("redis://gw:%41b@h:6379"));
        assert!(!RedisStore::url_has_password("redis://:@h:6379"));
        assert!(!RedisStore::url_has_password("redis://gw:@h:6379"));
        assert!(RedisStore::url_has_password(
            "redis+sentinel://gw:pw@s1,s2/m"
        ));
        assert!(!RedisStore::url_has_password("redis+sentinel://gw@s1,s2/m"));
    }

    #[test]
    fn tls_settings_need_a_rediss_url_and_certificates_that_parse() {
        let tls = RedisTls {
            ca_pem: Some(
                b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
            ),
            client: None,
        };
        assert!(matches!(
            RedisStore::check_url("redis://h:6379", &with_tls(RedisTls::default())),
            Err(RedisConnectError::InvalidTls(_))
        ));
        assert!(matches!(
            RedisStore::check_url("rediss://h:6379", &with_tls(tls)),
            Err(RedisConnectError::InvalidTls(_))
        ));
        let key =
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let tls = RedisTls {
            ca_pem: None,
            client: Some((Vec::new(), key.to_vec())),
        };
        let shown = format!("{tls:?}");
        assert_eq!(shown, "RedisTls { ca: false, client_certificate: true }");
    }

    #[test]
    fn redaction_removes_the_password() {
        assert_eq!(redact("bad pw hunter2!", Some("hunter2")), "bad pw ***!");
        assert_eq!(redact("no password", None), "no password");
        assert_eq!(redact("empty", Some("")), "empty");
    }
}
