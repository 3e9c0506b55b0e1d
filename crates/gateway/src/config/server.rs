//! The `server.*` section: the listeners beside `listen`, TLS, HSTS, the proxies in front of
//! the gateway, worker threads and the client timeout. [`check_server`] runs last but one and
//! gets `listen` and whether `public_url` is https.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{duration_text, parse_duration, ConfigError};

/// `server:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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

/// `server.client_timeout` when the file sets none: as long as nginx waits for a request head
/// (`client_header_timeout`), between two reads of a request body (`client_body_timeout`) or
/// between two writes to a client (`send_timeout`).
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `server.hsts_max_age` when the file sets none and `public_url` is https: a year.
const DEFAULT_HSTS_MAX_AGE: Duration = Duration::from_secs(365 * 86_400);

/// The checked `server.*` settings; each field is documented on the `Config` field of the same
/// name, which the top-level check fills from it.
pub(super) struct ServerSettings {
    pub(super) worker_threads: Option<usize>,
    pub(super) client_timeout: Duration,
    pub(super) trusted_proxies: crate::forwarded::TrustedProxies,
    pub(super) proxy_protocol: bool,
    pub(super) hsts: Option<hyper::header::HeaderValue>,
    pub(super) tls: Option<crate::tls::TlsFiles>,
    pub(super) admin_listen: Option<SocketAddr>,
    pub(super) redirect_http_listen: Option<SocketAddr>,
}

/// Checks `server.*`: the other listeners must differ from `listen`, and TLS, the HTTP
/// redirect and HSTS need an https `public_url` (`secure_cookies`).
pub(super) fn check_server(
    raw: RawServer,
    listen: SocketAddr,
    secure_cookies: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<ServerSettings, ConfigError> {
    if raw.worker_threads.is_some_and(|n| !(1..=256).contains(&n)) {
        return Err(err("server.worker_threads", "must be between 1 and 256"));
    }
    let client_timeout = match raw.client_timeout.as_deref() {
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
    for (i, entry) in raw.trusted_proxies.iter().enumerate() {
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
    let trusted_proxies = match raw.forwarded_header.as_deref() {
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
    if raw.proxy_protocol && trusted_proxies.is_empty() {
        return Err(err(
            "server.proxy_protocol",
            "needs server.trusted_proxies to list the load balancers that send the header: the \
             address in a header from any other peer is not believed",
        ));
    }

    let hsts = match raw.hsts_max_age.as_deref() {
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

    let tls = match &raw.tls {
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

    let admin_listen = match &raw.admin_listen {
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

    let redirect_http_listen = match &raw.redirect_http_listen {
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

    Ok(ServerSettings {
        worker_threads: raw.worker_threads,
        client_timeout,
        trusted_proxies,
        proxy_protocol: raw.proxy_protocol,
        hsts,
        tls,
        admin_listen,
        redirect_http_listen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error_of, load, GOOD};

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
