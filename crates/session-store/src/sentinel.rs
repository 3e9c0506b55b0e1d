//! Redis behind Sentinel: a `redis+sentinel://` URL names the sentinels and the master's name
//! instead of a server, and the store asks the sentinels where the master is.
//!
//! # The flow
//!
//! 1. At connection, [`SentinelUrl::master`] asks each sentinel in turn
//!    `SENTINEL GET-MASTER-ADDR-BY-NAME`; the first answer wins. A sentinel that does not
//!    answer within [`SENTINEL_TIMEOUT`] is passed over, so one that hangs does not stop the
//!    others from being asked.
//! 2. The store connects to that address with the URL's user, password and database, and
//!    checks with `ROLE` that the server is the master ([`check_master`]); an ACL user without
//!    `ROLE` (it is in `@dangerous`) is taken at the sentinels' word.
//! 3. While the store lives, [`crate::failover`] asks the sentinels again every
//!    [`WATCH_INTERVAL`]; when they name another master (a failover), it connects there and
//!    puts that connection in force, as a renewal does (see the Redis store's documentation).
//!
//! The connection to the sentinel that answered is kept for the next look, so that a replica
//! does not open a connection (and, over TLS, make a handshake) every second. It is used only
//! with the same password and TLS settings and for [`KEEP_FOR`] at most, and dropped when it
//! fails or takes longer than [`KEPT_TIMEOUT`]; the sentinel is then asked on a new
//! connection, within what is left of its [`SENTINEL_TIMEOUT`].
//!
//! With `rediss+sentinel://`, the sentinels and the master are both reached over TLS, with the
//! same CA and client certificate, and each one's certificate is checked against the address
//! the URL or the sentinels give. Sentinels are asked without credentials; one that answers
//! `NOAUTH` (it has a password) is asked again with the master's user and password (the URL's,
//! or the password file's), or the password alone (the sentinel's `requirepass`) when it has
//! no such user. Given the sentinels' own password (`sessions.redis_sentinel_password_file`),
//! they are asked with it alone, and never see the master's.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use redis::aio::{ConnectionManager, MultiplexedConnection};

use crate::redis::{client_for, describe, open_connection, redact, RedisAccess, RedisConnectError};

/// How long one sentinel may take to connect and answer.
pub(crate) const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a store asks the sentinels where the master is.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A sentinel's port when the URL gives none.
const DEFAULT_PORT: u16 = 26379;
/// How long a look on a kept connection may take before a new connection is tried, within
/// the sentinel's [`SENTINEL_TIMEOUT`]: a connection whose peer went silent (a host gone
/// without a reset) must not cost the sentinel its turn.
const KEPT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a connection to a sentinel is kept: then a new one signs in again, so that a
/// password the sentinel no longer takes shows at once, not at the next failover.
const KEEP_FOR: Duration = Duration::from_secs(300);

/// A parsed `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]`.
/// No `Debug`: `redis` holds the password, and its own `Debug` shows it.
#[derive(Clone)]
pub(crate) struct SentinelUrl {
    /// The sentinels, in the order they are asked.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name under which the sentinels monitor the master.
    pub(crate) master_name: String,
    /// Database, user and password for the master.
    pub(crate) redis: redis::RedisConnectionInfo,
    /// Whether the sentinels and the master are reached over TLS (`rediss+sentinel://`).
    pub(crate) tls: bool,
    /// For each sentinel, the [`SignIn`] that worked last, shared by clones.
    sign_ins: Arc<[AtomicU8]>,
    /// For each sentinel, the connection of its last answer, shared by clones.
    kept: Arc<[Mutex<Option<Kept>>]>,
}

/// A connection to a sentinel kept for the next look, and the settings it was made with.
struct Kept {
    /// The connection, signed in.
    connection: MultiplexedConnection,
    /// The password and TLS settings it was made with; another look reuses it only with these.
    access: RedisAccess,
    /// When it was made: it is used for [`KEEP_FOR`] at most.
    made: Instant,
}

/// How a sentinel is signed in to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SignIn {
    /// Without credentials.
    Anonymous = 0,
    /// With the master's user (when the URL names one) and password.
    AsUser = 1,
    /// With the master's password alone, as the sentinel's `requirepass`.
    PasswordAlone = 2,
}

impl SentinelUrl {
    /// Parses `url`; `None` when it is not a Sentinel URL at all.
    pub(crate) fn parse(url: &str) -> Option<Result<SentinelUrl, RedisConnectError>> {
        let (scheme, rest) = url.split_once("://")?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis+sentinel" => Some(parse_rest(rest, false)),
            "rediss+sentinel" => Some(parse_rest(rest, true)),
            _ => None,
        }
    }

    /// `master NAME of the sentinels A, B, database N`: safe to log (no credentials).
    pub(crate) fn describe(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|(host, port)| address(host, *port))
            .collect();
        format!(
            "master {} of the sentinels {}, database {}",
            self.master_name,
            sentinels.join(", "),
            self.redis.db
        )
    }

    /// Where the sentinels say the master is: the first sentinel that answers wins. `access`
    /// gives the TLS settings, and the password for a sentinel that asks for one.
    pub(crate) async fn master(
        &self,
        access: &RedisAccess,
    ) -> Result<(String, u16), RedisConnectError> {
        let mut reasons = Vec::new();
        for (index, (host, port)) in self.sentinels.iter().enumerate() {
            let asking = self.ask(index, access);
            let reason = match tokio::time::timeout(SENTINEL_TIMEOUT, asking).await {
                Ok(Ok(Some(master))) => return Ok(master),
                Ok(Ok(None)) => format!("does not know a master named {}", self.master_name),
                Ok(Err(reason)) => reason,
                Err(_) => format!("no answer within {} s", SENTINEL_TIMEOUT.as_secs()),
            };
            reasons.push(format!("{}: {reason}", address(host, *port)));
        }
        Err(RedisConnectError::Unreachable {
            address: self.describe(),
            reason: format!("no sentinel named the master ({})", reasons.join("; ")),
        })
    }

    /// Asks the sentinel at `index` for the master's address: with the sentinels' own password
    /// when `access` has one; otherwise without credentials and, when it answers `NOAUTH`,
    /// again with the master's user and password, then (should it have no such user) with the
    /// password alone, as its `requirepass`. The way that worked is tried first next time. The
    /// error is safe to show (no password).
    async fn ask(
        &self,
        index: usize,
        access: &RedisAccess,
    ) -> Result<Option<(String, u16)>, String> {
        let Some((host, port)) = self.sentinels.get(index) else {
            return Err("no such sentinel".to_string());
        };
        if let Some(answer) = self.ask_kept(index, access).await {
            return Ok(answer);
        }
        if let Some(password) = &access.sentinel_password {
            let redis = redis::RedisConnectionInfo {
                password: Some(password.clone()),
                ..Default::default()
            };
            return match self.ask_as(host, *port, redis, access).await {
                Ok((answer, connection)) => {
                    self.keep(index, connection, access);
                    Ok(answer)
                }
                Err(e) => {
                    let detail = redact(&e.detail(), Some(password));
                    let detail = redact(&detail, access.password.as_deref());
                    Err(format!("with the sentinels' own password: {detail}"))
                }
            };
        }
        let master = self.master_info((host.clone(), *port), access).redis;
        let password = master.password.clone();
        let remembered = self
            .sign_ins
            .get(index)
            .map_or(SignIn::Anonymous as u8, |s| s.load(Ordering::Relaxed));
        let mut order = vec![SignIn::Anonymous, SignIn::AsUser, SignIn::PasswordAlone];
        if let Some(first) = order.iter().position(|s| *s as u8 == remembered) {
            let first = order.remove(first);
            order.insert(0, first);
        }
        let mut failed: Option<(SignIn, AskError)> = None;
        for (attempt, sign_in) in order.into_iter().enumerate() {
            // The user and password only for the database 0 a sentinel has (no `SELECT`).
            let mut redis = redis::RedisConnectionInfo::default();
            match sign_in {
                SignIn::Anonymous => {}
                SignIn::AsUser => {
                    let Some(password) = &password else { continue };
                    redis.username = master.username.clone();
                    redis.password = Some(password.clone());
                }
                SignIn::PasswordAlone => {
                    let (Some(password), Some(_)) = (&password, &master.username) else {
                        continue;
                    };
                    redis.password = Some(password.clone());
                }
            }
            match self.ask_as(host, *port, redis, access).await {
                Ok((answer, connection)) => {
                    if let Some(slot) = self.sign_ins.get(index) {
                        slot.store(sign_in as u8, Ordering::Relaxed);
                    }
                    self.keep(index, connection, access);
                    return Ok(answer);
                }
                Err(e) => {
                    // After the way remembered, any failure tries the others from the start;
                    // then only a sentinel that asks for a password, or refuses the user, is
                    // asked again.
                    let go_on = (attempt == 0 && remembered != SignIn::Anonymous as u8)
                        || match sign_in {
                            SignIn::Anonymous => e.code() == Some("NOAUTH"),
                            SignIn::AsUser => e.auth_failed(),
                            SignIn::PasswordAlone => false,
                        };
                    // A refused password says more than the NOAUTH that follows it.
                    let password_refused = match &failed {
                        Some((SignIn::AsUser | SignIn::PasswordAlone, earlier)) => {
                            earlier.auth_failed()
                        }
                        _ => false,
                    };
                    if !(password_refused && sign_in == SignIn::Anonymous) {
                        failed = Some((sign_in, e));
                    }
                    if !go_on {
                        break;
                    }
                }
            }
        }
        match failed {
            None => Err("no way to sign in was tried".to_string()),
            Some((SignIn::Anonymous, e)) => Err(e.detail()),
            Some((_, e)) => {
                let detail = redact(&e.detail(), password.as_deref());
                Err(format!(
                    "it asks for a password; with the master's: {detail}"
                ))
            }
        }
    }

    /// The answer of the sentinel at `index` on the connection kept from its last answer,
    /// when there is one made with `access` less than [`KEEP_FOR`] ago; `None` when there is
    /// none, or it failed or did not answer within [`KEPT_TIMEOUT`] (it is then dropped). The connection is out of its slot while in use, so a look cut short by
    /// its time limit leaves none behind.
    async fn ask_kept(&self, index: usize, access: &RedisAccess) -> Option<Option<(String, u16)>> {
        let kept = self.kept_slot(index)?.take()?;
        if kept.access != *access || kept.made.elapsed() >= KEEP_FOR {
            return None;
        }
        let mut connection = kept.connection;
        let asking = self.get_master_addr(&mut connection);
        let answer = tokio::time::timeout(KEPT_TIMEOUT, asking)
            .await
            .ok()?
            .ok()?;
        if let Some(mut slot) = self.kept_slot(index) {
            *slot = Some(Kept { connection, ..kept });
        }
        Some(answer)
    }

    /// Keeps `connection`, made with `access`, for the next look at the sentinel at `index`.
    fn keep(&self, index: usize, connection: MultiplexedConnection, access: &RedisAccess) {
        if let Some(mut slot) = self.kept_slot(index) {
            *slot = Some(Kept {
                connection,
                access: access.clone(),
                made: Instant::now(),
            });
        }
    }

    /// The slot of the connection kept for the sentinel at `index` (a lock held only to take
    /// or put, never across a wait).
    fn kept_slot(&self, index: usize) -> Option<std::sync::MutexGuard<'_, Option<Kept>>> {
        let slot = self.kept.get(index)?;
        Some(slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Asks one sentinel for the master's address, signed in as `redis` says; with the
    /// connection, to keep.
    async fn ask_as(
        &self,
        host: &str,
        port: u16,
        redis: redis::RedisConnectionInfo,
        access: &RedisAccess,
    ) -> Result<(Option<(String, u16)>, MultiplexedConnection), AskError> {
        let info = redis::ConnectionInfo {
            addr: self.addr(host.to_string(), port),
            redis,
        };
        let client = client_for(info, access.tls.as_ref()).map_err(AskError::Settings)?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(AskError::Redis)?;
        let answer = self
            .get_master_addr(&mut connection)
            .await
            .map_err(AskError::Redis)?;
        Ok((answer, connection))
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` for the URL's master on `connection`.
    async fn get_master_addr(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Option<(String, u16)>> {
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .query_async(connection)
            .await
    }

    /// The address of a sentinel or the master, over TLS with a `rediss+sentinel://` URL.
    fn addr(&self, host: String, port: u16) -> redis::ConnectionAddr {
        if self.tls {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        }
    }

    /// The connection details of the master at `host:port`, with `access`'s password in place
    /// of the URL's when given.
    pub(crate) fn master_info(
        &self,
        (host, port): (String, u16),
        access: &RedisAccess,
    ) -> redis::ConnectionInfo {
        let mut redis = self.redis.clone();
        if let Some(password) = &access.password {
            redis.password = Some(password.clone());
        }
        redis::ConnectionInfo {
            addr: self.addr(host, port),
            redis,
        }
    }
}

/// Why one sentinel gave no answer.
enum AskError {
    /// The settings do not make a client (TLS files that do not parse).
    Settings(RedisConnectError),
    /// The connection or the command failed.
    Redis(redis::RedisError),
}

impl AskError {
    /// The Redis error code, such as `NOAUTH`.
    fn code(&self) -> Option<&str> {
        match self {
            AskError::Settings(_) => None,
            AskError::Redis(e) => e.code(),
        }
    }

    /// Whether the sentinel refused the credentials.
    fn auth_failed(&self) -> bool {
        matches!(self, AskError::Redis(e) if e.kind() == redis::ErrorKind::AuthenticationFailed)
    }

    /// What went wrong; callers remove the password.
    fn detail(&self) -> String {
        match self {
            AskError::Settings(e) => e.to_string(),
            AskError::Redis(e) => e.to_string(),
        }
    }
}

/// A client for the master at `master` and a connection to it, checked to be the master.
pub(crate) async fn open_master(
    sentinel: &SentinelUrl,
    master: (String, u16),
    access: &RedisAccess,
) -> Result<(redis::Client, ConnectionManager), RedisConnectError> {
    let info = sentinel.master_info(master, access);
    let password = info.redis.password.clone();
    let client = client_for(info, access.tls.as_ref())?;
    let mut connection = open_connection(&client).await?;
    check_master(&mut connection)
        .await
        .map_err(|reason| RedisConnectError::Unreachable {
            address: describe(&client),
            reason: redact(&reason, password.as_deref()),
        })?;
    Ok((client, connection))
}

/// `addr` as `host:port`, an IPv6 address in brackets.
pub(crate) fn shown_addr(addr: &redis::ConnectionAddr) -> String {
    match addr {
        redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } => address(host, *port),
        other => other.to_string(),
    }
}

/// Checks that the server behind `connection` is a master; one whose ACL refuses `ROLE` is
/// taken as one.
pub(crate) async fn check_master(
    connection: &mut redis::aio::ConnectionManager,
) -> Result<(), String> {
    let role = redis::cmd("ROLE")
        .query_async::<redis::Value>(connection)
        .await;
    match role {
        Ok(redis::Value::Array(items)) => match items.first() {
            Some(redis::Value::BulkString(role)) if role.as_slice() == b"master" => Ok(()),
            Some(redis::Value::BulkString(role)) => Err(format!(
                "the sentinels named a server that is not the master (ROLE: {})",
                String::from_utf8_lossy(role)
            )),
            _ => Err("the server's answer to ROLE does not parse".to_string()),
        },
        Ok(_) => Err("the server's answer to ROLE does not parse".to_string()),
        Err(e) if e.code() == Some("NOPERM") => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `host:port`, an IPv6 address in brackets.
pub(crate) fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses what follows `redis+sentinel://` (or `rediss+sentinel://`, `tls`).
fn parse_rest(rest: &str, tls: bool) -> Result<SentinelUrl, RedisConnectError> {
    let invalid = RedisConnectError::InvalidUrl;
    let (authority, path) = rest.split_once('/').ok_or(invalid(
        "a Sentinel URL names the master after the sentinels: \
         redis+sentinel://HOST:PORT,HOST:PORT/MASTER",
    ))?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let mut redis = redis::RedisConnectionInfo::default();
    if let Some(userinfo) = userinfo {
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| invalid("the user or the password is not UTF-8"))
        };
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            redis.username = Some(decode(user)?);
        }
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            redis.password = Some(decode(password)?);
        }
    }
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        sentinels.push(parse_host(host).ok_or(invalid(
            "each sentinel is HOST or HOST:PORT, separated by commas ([IPV6]:PORT)",
        ))?);
    }
    let (master_name, db) = match path.split_once('/') {
        Some((name, db)) => (name, db),
        None => (path, ""),
    };
    let name_ok = !master_name.is_empty()
        && master_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(invalid(
            "the master's name after the sentinels is letters, digits, '.', '_' or '-'",
        ));
    }
    redis.db = match db {
        "" => 0,
        db => db
            .parse::<u16>()
            .map(i64::from)
            .map_err(|_| invalid("the database after the master's name is a number"))?,
    };
    Ok(SentinelUrl {
        sign_ins: sentinels.iter().map(|_| AtomicU8::new(0)).collect(),
        kept: sentinels.iter().map(|_| Mutex::new(None)).collect(),
        sentinels,
        master_name: master_name.to_string(),
        redis,
        tls,
    })
}

/// `HOST`, `HOST:PORT`, `[IPV6]` or `[IPV6]:PORT`.
fn parse_host(text: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        match after {
            "" => (host, None),
            port => (host, Some(port.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port.parse().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> SentinelUrl {
        match SentinelUrl::parse(url) {
            Some(Ok(parsed)) => parsed,
            _ => panic!("{url} does not parse"),
        }
    }

    fn refused(url: &str) -> String {
        match SentinelUrl::parse(url) {
            Some(Err(e)) => e.to_string(),
            _ => panic!("{url} is not refused"),
        }
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_master_and_the_credentials() {
        let url = parsed("redis+sentinel://gw:p%40ss@10.0.0.1:26380,s2,[::1]:26381/mymaster/3");
        assert_eq!(
            url.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26380),
                ("s2".to_string(), 26379),
                ("::1".to_string(), 26381)
            ]
        );
        assert_eq!(url.master_name, "mymaster");
        assert_eq!(url.redis.db, 3);
        assert_eq!(url.redis.username.as_deref(), Some("gw"));
        assert_eq!(url.redis.password.as_deref(), Some("p@ss"));
        assert_eq!(
            url.describe(),
            "master mymaster of the sentinels 10.0.0.1:26380, s2:26379, [::1]:26381, database 3"
        );
        let plain = parsed("REDIS+SENTINEL://127.0.0.1:26379/m");
        assert_eq!(plain.redis.db, 0);
        assert_eq!(plain.redis.username, None);
        assert_eq!(plain.redis.password, None);
        let access = RedisAccess {
            password: Some("from-file".to_string()),
            ..RedisAccess::default()
        };
        let info = plain.master_info(("10.0.0.9".to_string(), 6380), &access);
        assert_eq!(info.redis.password.as_deref(), Some("from-file"));
        assert!(matches!(info.addr, redis::ConnectionAddr::Tcp(_, 6380)));
        assert!(!plain.tls);
        let tls = parsed("rediss+sentinel://s1:26380/m");
        assert!(tls.tls);
        let info = tls.master_info(("10.0.0.9".to_string(), 6380), &RedisAccess::default());
        assert!(matches!(
            info.addr,
            redis::ConnectionAddr::TcpTls {
                port: 6380,
                insecure: false,
                ..
            }
        ));
    }

    #[test]
    fn other_urls_are_not_sentinel_urls_and_bad_ones_are_refused() {
        assert!(SentinelUrl::parse("redis://h:6379/0").is_none());
        assert!(SentinelUrl::parse("not a url").is_none());
        assert!(refused("redis+sentinel://h:26379").contains("names the master"));
        assert!(refused("redis+sentinel://h:26379/").contains("master's name"));
        assert!(refused("redis+sentinel://h:26379/m m").contains("master's name"));
        assert!(refused("redis+sentinel://h:26379/m/x").contains("database"));
        assert!(refused("redis+sentinel://h:26379/m/-1").contains("database"));
        assert_eq!(
            parsed("redis+sentinel://redis_sentinel_1/m").sentinels[0].1,
            26379
        );
        assert!(refused("redis+sentinel://h:0/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://h:x/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://a,,b/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://[::1/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://:%FF@h/m").contains("UTF-8"));
        let e = refused("redis+sentinel://:s3cret@h:x/m");
        assert!(!e.contains("s3cret"), "{e}");
    }

    /// How a fake server treats `AUTH`.
    #[derive(Clone, Copy)]
    enum FakeAuth {
        /// Any `AUTH` is accepted, and nothing asks for one.
        Open,
        /// As a sentinel with `requirepass pw` and no ACL user: `AUTH pw` alone signs in,
        /// every other command before it answers `NOAUTH`, and `SELECT` is unknown.
        RequirePass,
    }

    /// What a fake server saw, and a switch to make it hang up.
    #[derive(Default)]
    struct Seen {
        /// `AUTH` commands received.
        auths: std::sync::atomic::AtomicUsize,
        /// Their arguments.
        auth_args: std::sync::Mutex<Vec<String>>,
        /// Connections accepted.
        connections: std::sync::atomic::AtomicUsize,
        /// When set, the next command is not answered: its connection is closed (and this
        /// cleared).
        hang_up: std::sync::atomic::AtomicBool,
        /// When set, the next command is not answered and its connection stays open, silent
        /// from then on (and this cleared): a peer gone without a reset.
        fall_silent: std::sync::atomic::AtomicBool,
    }

    /// A server that answers RESP commands by their name (`answer(name)`), treating `AUTH` as
    /// `auth` says; returns its port and what it saw.
    async fn fake_server(auth: FakeAuth, answer: fn(&str) -> String) -> (u16, Arc<Seen>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let counted = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.connections.fetch_add(1, Ordering::SeqCst);
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let mut signed_in = false;
                    while let Ok(n) = socket.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        // Each whole command: `*N`, then N `$len` and their bytes.
                        while let Some((args, used)) = first_command(&buffer) {
                            buffer.drain(..used);
                            if counted.hang_up.swap(false, Ordering::SeqCst) {
                                return;
                            }
                            if counted.fall_silent.swap(false, Ordering::SeqCst) {
                                std::future::pending::<()>().await;
                            }
                            let name = args[0].to_ascii_uppercase();
                            let reply = match (auth, name.as_str()) {
                                (_, "AUTH") => {
                                    counted.auths.fetch_add(1, Ordering::SeqCst);
                                    counted.auth_args.lock().unwrap().push(args[1..].join(" "));
                                    signed_in = matches!(auth, FakeAuth::Open)
                                        || args[1..] == ["pw".to_string()];
                                    if signed_in {
                                        "+OK\r\n".to_string()
                                    } else {
                                        "-WRONGPASS invalid username-password pair\r\n".to_string()
                                    }
                                }
                                (FakeAuth::RequirePass, "SELECT") => {
                                    "-ERR unknown command 'SELECT'\r\n".to_string()
                                }
                                (FakeAuth::RequirePass, _) if !signed_in => {
                                    "-NOAUTH Authentication required.\r\n".to_string()
                                }
                                _ => answer(&name),
                            };
                            if socket.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    /// The arguments of the first whole command in `buffer` and its length, if it holds one.
    fn first_command(buffer: &[u8]) -> Option<(Vec<String>, usize)> {
        let text = std::str::from_utf8(buffer).ok()?;
        let mut lines = text.split("\r\n");
        let count: usize = lines.next()?.strip_prefix('*')?.parse().ok()?;
        let mut used = text.find("\r\n")? + 2;
        let mut args = Vec::new();
        for _ in 0..count {
            let len_line = lines.next()?;
            let len: usize = len_line.strip_prefix('$')?.parse().ok()?;
            let value = lines.next()?;
            if value.len() != len {
                return None;
            }
            used += len_line.len() + 2 + len + 2;
            args.push(value.to_string());
        }
        (used <= buffer.len() && !args.is_empty()).then_some((args, used))
    }

    /// A sentinel that names the master at the port in `MASTER_PORT`.
    fn sentinel_answer(name: &str) -> String {
        match name {
            "SENTINEL" => {
                let port = MASTER_PORT
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .to_string();
                format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n", port.len())
            }
            _ => "-ERR unknown command\r\n".to_string(),
        }
    }

    static MASTER_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

    /// A sentinel that names the master at 127.0.0.1:6399.
    fn sentinel_at_6399(name: &str) -> String {
        match name {
            "SENTINEL" => "*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6399\r\n".to_string(),
            _ => "-ERR unknown command\r\n".to_string(),
        }
    }

    /// A server that answers `PING` and answers `ROLE` with `role`.
    fn with_role(name: &str, role: &str) -> String {
        match name {
            "PING" => "+PONG\r\n".to_string(),
            "ROLE" => role.to_string(),
            _ => "-ERR unknown command\r\n".to_string(),
        }
    }

    #[tokio::test]
    async fn the_server_the_sentinels_name_must_say_it_is_the_master() {
        let fake = |answer| fake_server(FakeAuth::Open, answer);
        let (replica, _) =
            fake(|name| with_role(name, "*3\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n")).await;
        let (master, _) = fake(|name| with_role(name, "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")).await;
        let (limited, _) = fake(|name| {
            with_role(
                name,
                "-NOPERM this user has no permissions to run the 'role' command\r\n",
            )
        })
        .await;
        let (broken, _) = fake(|name| with_role(name, "-ERR unknown command 'ROLE'\r\n")).await;
        let (sentinel, _) = fake(sentinel_answer).await;
        let url = parsed(&format!("redis+sentinel://:s3cret@127.0.0.1:{sentinel}/m"));
        let access = RedisAccess::default();
        let cases = [
            (replica, Some("is not the master (ROLE: slave)")),
            (master, None),
            (limited, None),
            (broken, Some("unknown command 'ROLE'")),
        ];
        for (port, refusal) in cases {
            MASTER_PORT.store(port, Ordering::SeqCst);
            let named = url.master(&access).await.unwrap();
            assert_eq!(named, ("127.0.0.1".to_string(), port));
            let opened = open_master(&url, named, &access).await;
            match (opened, refusal) {
                (Ok(_), None) => {}
                (Err(e), Some(expected)) => {
                    let e = e.to_string();
                    assert!(e.contains(expected), "{e}");
                    assert!(!e.contains("s3cret"), "{e}");
                }
                (Ok(_), Some(expected)) => panic!("taken for the master: {expected}"),
                (Err(e), None) => panic!("the master was refused: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_sentinel_gets_the_password_only_when_it_asks_and_the_way_that_worked_first() {
        let (open, open_seen) = fake_server(FakeAuth::Open, sentinel_at_6399).await;
        let (locked, locked_seen) = fake_server(FakeAuth::RequirePass, sentinel_at_6399).await;
        let access = RedisAccess::default();
        // A sentinel without a password never sees the master's.
        let url = parsed(&format!(
            "redis+sentinel://saml-gateway:pw@127.0.0.1:{open}/m/3"
        ));
        assert_eq!(url.master(&access).await.unwrap().1, 6399);
        assert_eq!(open_seen.auths.load(Ordering::SeqCst), 0);
        // One with `requirepass` and no such user: NOAUTH, the user refused, then the password
        // alone; in database 0, which is all a sentinel has.
        let url = parsed(&format!(
            "redis+sentinel://saml-gateway:pw@127.0.0.1:{locked}/m/3"
        ));
        assert_eq!(url.master(&access).await.unwrap().1, 6399);
        assert_eq!(locked_seen.auths.load(Ordering::SeqCst), 2);
        // The next look on a new connection (the settings changed, so the kept one is not
        // used) signs in the way that worked, at once.
        let same_password = RedisAccess {
            password: Some("pw".to_string()),
            ..RedisAccess::default()
        };
        assert_eq!(url.master(&same_password).await.unwrap().1, 6399);
        assert_eq!(locked_seen.auths.load(Ordering::SeqCst), 3);
        // After a rotation on the sentinel the remembered way fails: named as a password
        // refused, not as the NOAUTH of the anonymous try that follows.
        let url = parsed(&format!("redis+sentinel://:pw@127.0.0.1:{locked}/m"));
        assert_eq!(url.master(&access).await.unwrap().1, 6399);
        let rotated = RedisAccess {
            password: Some("s3cret-old".to_string()),
            ..RedisAccess::default()
        };
        let e = url.master(&rotated).await.unwrap_err().to_string();
        assert!(
            e.contains("it asks for a password; with the master's"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        // A wrong password is named as such, and not shown.
        let url = parsed(&format!(
            "redis+sentinel://saml-gateway:s3cret@127.0.0.1:{locked}/m"
        ));
        let e = url.master(&access).await.unwrap_err().to_string();
        assert!(
            e.contains("it asks for a password; with the master's"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        // Without a password to give: its own answer.
        let url = parsed(&format!("redis+sentinel://127.0.0.1:{locked}/m"));
        let e = url.master(&access).await.unwrap_err().to_string();
        assert!(e.contains("NOAUTH"), "{e}");
    }

    #[tokio::test]
    async fn the_connection_of_the_last_answer_is_kept_until_it_fails() {
        let (locked, seen) = fake_server(FakeAuth::RequirePass, sentinel_at_6399).await;
        let url = parsed(&format!("redis+sentinel://:pw@127.0.0.1:{locked}/m"));
        let clone = url.clone();
        let access = RedisAccess::default();
        // NOAUTH on the first connection, then the password on a second: kept from then on,
        // by every clone.
        for look in [&url, &clone, &url] {
            assert_eq!(look.master(&access).await.unwrap().1, 6399);
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        assert_eq!(seen.auths.load(Ordering::SeqCst), 1);
        // Other settings: a connection of their own, kept in place of the first.
        let other = RedisAccess {
            password: Some("pw".to_string()),
            ..RedisAccess::default()
        };
        assert_eq!(url.master(&other).await.unwrap().1, 6399);
        assert_eq!(url.master(&other).await.unwrap().1, 6399);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
        // The sentinel hangs up: that look still answers, on a new connection, kept again.
        seen.hang_up.store(true, Ordering::SeqCst);
        assert_eq!(url.master(&other).await.unwrap().1, 6399);
        assert_eq!(url.master(&other).await.unwrap().1, 6399);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
        assert!(!seen.hang_up.load(Ordering::SeqCst));
        // It falls silent without closing: within the sentinel's second, a new connection
        // answers.
        seen.fall_silent.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        assert_eq!(url.master(&other).await.unwrap().1, 6399);
        assert!(
            started.elapsed() < SENTINEL_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(seen.connections.load(Ordering::SeqCst), 5);
        assert!(!seen.fall_silent.load(Ordering::SeqCst));
        // Kept for five minutes at most: then it signs in anew.
        if let Some(kept) = url.kept_slot(0).unwrap().as_mut() {
            kept.made = Instant::now().checked_sub(KEEP_FOR).unwrap();
        }
        assert_eq!(url.master(&other).await.unwrap().1, 6399);
        assert_eq!(url.master(&other).await.unwrap().1, 6399);
        assert_eq!(seen.connections.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn the_sentinels_own_password_is_all_they_see() {
        let (locked, seen) = fake_server(FakeAuth::RequirePass, sentinel_at_6399).await;
        let url = parsed(&format!(
            "redis+sentinel://saml-gateway:master-s3cret@127.0.0.1:{locked}/m"
        ));
        let access = RedisAccess {
            sentinel_password: Some("pw".to_string()),
            ..RedisAccess::default()
        };
        assert_eq!(url.master(&access).await.unwrap().1, 6399);
        assert_eq!(*seen.auth_args.lock().unwrap(), ["pw"]);
        // A password the sentinel refuses is named as the sentinels' own, and not shown; the
        // master's is not tried.
        let refused = RedisAccess {
            sentinel_password: Some("wrong-s3cret".to_string()),
            ..RedisAccess::default()
        };
        let e = url.master(&refused).await.unwrap_err().to_string();
        assert!(e.contains("with the sentinels' own password"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let sent = seen.auth_args.lock().unwrap().clone();
        assert_eq!(sent, ["pw", "wrong-s3cret"]);
    }

    #[tokio::test]
    async fn sentinels_that_do_not_answer_are_each_named() {
        // One port nothing listens on, one that accepts and never answers.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let url = parsed(&format!(
            "redis+sentinel://:s3cret@127.0.0.1:{closed_port},127.0.0.1:{silent_port}/m"
        ));
        let started = std::time::Instant::now();
        let e = url
            .master(&RedisAccess::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < SENTINEL_TIMEOUT * 3, "{e}");
        assert!(e.contains(&format!("127.0.0.1:{closed_port}: ")), "{e}");
        assert!(
            e.contains(&format!("127.0.0.1:{silent_port}: no answer within 1 s")),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        drop(silent);
    }
}
