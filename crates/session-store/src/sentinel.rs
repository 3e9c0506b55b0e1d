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
//! 3. While the store lives, it asks the sentinels again every [`WATCH_INTERVAL`]; when they name
//!    another master (a failover), it connects there and puts that connection in force, as a
//!    renewal does (see the Redis store's documentation).
//!
//! Sentinels are asked over plain TCP without credentials; TLS is not supported with Sentinel.

use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::redis::RedisConnectError;

/// How long one sentinel may take to connect and answer.
pub(crate) const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a store asks the sentinels where the master is.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A sentinel's port when the URL gives none.
const DEFAULT_PORT: u16 = 26379;

/// A parsed `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]`.
#[derive(Clone)]
pub(crate) struct SentinelUrl {
    /// The sentinels, in the order they are asked.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name under which the sentinels monitor the master.
    pub(crate) master_name: String,
    /// Database, user and password for the master.
    pub(crate) redis: redis::RedisConnectionInfo,
}

impl SentinelUrl {
    /// Parses `url`; `None` when it is not a Sentinel URL at all.
    pub(crate) fn parse(url: &str) -> Option<Result<SentinelUrl, RedisConnectError>> {
        let (scheme, rest) = url.split_once("://")?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis+sentinel" => Some(parse_rest(rest)),
            "rediss+sentinel" => Some(Err(RedisConnectError::InvalidUrl(
                "TLS with Sentinel (rediss+sentinel://) is not supported",
            ))),
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

    /// Where the sentinels say the master is: the first sentinel that answers wins.
    pub(crate) async fn master(&self) -> Result<(String, u16), RedisConnectError> {
        let mut reasons = Vec::new();
        for (host, port) in &self.sentinels {
            let asked = tokio::time::timeout(SENTINEL_TIMEOUT, self.ask(host, *port)).await;
            let reason = match asked {
                Ok(Ok(Some(master))) => return Ok(master),
                Ok(Ok(None)) => format!("does not know a master named {}", self.master_name),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} s", SENTINEL_TIMEOUT.as_secs()),
            };
            reasons.push(format!("{}: {reason}", address(host, *port)));
        }
        Err(RedisConnectError::Unreachable {
            address: self.describe(),
            reason: format!("no sentinel named the master ({})", reasons.join("; ")),
        })
    }

    /// Asks one sentinel for the master's address.
    async fn ask(&self, host: &str, port: u16) -> redis::RedisResult<Option<(String, u16)>> {
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host.to_string(), port),
            redis: redis::RedisConnectionInfo::default(),
        };
        let client = redis::Client::open(info)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .query_async(&mut connection)
            .await
    }

    /// The connection details of the master at `host:port`, with `password` in place of the
    /// URL's when given.
    pub(crate) fn master_info(
        &self,
        (host, port): (String, u16),
        password: Option<&str>,
    ) -> redis::ConnectionInfo {
        let mut redis = self.redis.clone();
        if let Some(password) = password {
            redis.password = Some(password.to_string());
        }
        redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host, port),
            redis,
        }
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

fn parse_rest(rest: &str) -> Result<SentinelUrl, RedisConnectError> {
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
            .parse()
            .map_err(|_| invalid("the database after the master's name is a number"))?,
    };
    Ok(SentinelUrl {
        sentinels,
        master_name: master_name.to_string(),
        redis,
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
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
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
        let info = plain.master_info(("10.0.0.9".to_string(), 6380), Some("from-file"));
        assert_eq!(info.redis.password.as_deref(), Some("from-file"));
        assert_eq!(info.addr.to_string(), "10.0.0.9:6380");
    }

    #[test]
    fn other_urls_are_not_sentinel_urls_and_bad_ones_are_refused() {
        assert!(SentinelUrl::parse("redis://h:6379/0").is_none());
        assert!(SentinelUrl::parse("not a url").is_none());
        assert!(refused("rediss+sentinel://h/m").contains("not supported"));
        assert!(refused("redis+sentinel://h:26379").contains("names the master"));
        assert!(refused("redis+sentinel://h:26379/").contains("master's name"));
        assert!(refused("redis+sentinel://h:26379/m m").contains("master's name"));
        assert!(refused("redis+sentinel://h:26379/m/x").contains("database"));
        assert!(refused("redis+sentinel://h:0/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://h:x/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://a,,b/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://[::1/m").contains("each sentinel"));
        assert!(refused("redis+sentinel://:%FF@h/m").contains("UTF-8"));
        let e = refused("redis+sentinel://:s3cret@h:x/m");
        assert!(!e.contains("s3cret"), "{e}");
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
        let e = url.master().await.unwrap_err().to_string();
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
