//! An HTTP proxy for fetching IdP metadata (`idp.metadata_proxy`), for networks where the
//! gateway reaches the internet only through one.
//!
//! The fetch asks the proxy to open a tunnel to the metadata server (`CONNECT host:port`) and
//! speaks to the server through it, TLS end to end for an https URL: the proxy sees where the
//! gateway goes, never what it fetches, and cannot change the answer without failing the
//! certificate check. The proxy is named in the config only; `HTTPS_PROXY` and the other
//! environment variables are not read, so that what the gateway contacts is in the one file an
//! operator reviews. The proxy's password, when the URL has one, is sent as `Basic`
//! `Proxy-Authorization` and never shown: not in errors, logs or `Debug` output.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::HeaderValue;
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service;

/// The proxy the metadata of one IdP is fetched through.
#[derive(Clone)]
pub struct MetadataProxy {
    /// Where the proxy listens: `http://host:port`, without credentials.
    uri: hyper::Uri,
    /// `Basic` credentials from the URL's user and password, marked sensitive.
    authorization: Option<HeaderValue>,
}

impl fmt::Debug for MetadataProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataProxy")
            .field("uri", &self.uri)
            .field("authorization", &self.authorization.as_ref().map(|_| "set"))
            .finish()
    }
}

impl MetadataProxy {
    /// Reads `http://[user:password@]host:port`. Errors never repeat the text, which may hold a
    /// password.
    pub fn parse(text: &str) -> Result<MetadataProxy, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if url.scheme() != "http" {
            // The scheme is not repeated either: `user:password@host` reads as scheme `user`.
            return Err(
                "must be an http:// URL, such as http://proxy.example:3128 (the \
                        gateway asks the proxy for a tunnel in plain HTTP; TLS to the metadata \
                        server runs inside it)"
                    .into(),
            );
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            Some(host) => host.to_string(),
            None => return Err("names no host".into()),
        };
        // Proxies listen on ports of their own (3128, 8080): one left out is a mistake, not
        // port 80. The URL type reads an explicit `:80` as none, so the text is asked.
        let authority = text
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
            .unwrap_or_default();
        let named = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
        let port = url
            .port_or_known_default()
            .filter(|_| named)
            .ok_or("must name the port, such as http://proxy.example:3128")?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("must be the proxy's address only, without a path or query".into());
        }
        let uri = format!("http://{host}:{port}")
            .parse()
            .map_err(|e| format!("not a proxy address: {e}"))?;
        let decoded = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|p| p.into_owned())
                .map_err(|_| "has a user or password that is not UTF-8 once decoded".to_string())
        };
        let authorization = match (url.username(), url.password()) {
            ("", None) => None,
            (user, password) => {
                let pair = format!("{}:{}", decoded(user)?, decoded(password.unwrap_or(""))?);
                let mut value =
                    HeaderValue::try_from(format!("Basic {}", STANDARD.encode(pair)))
                        .map_err(|_| "has a user or password that cannot be sent".to_string())?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(MetadataProxy { uri, authorization })
    }

    /// The proxy as errors and logs show it: scheme, host and port.
    pub fn shown(&self) -> String {
        self.uri.to_string()
    }

    /// A connector that reaches every destination through a tunnel this proxy opens, over
    /// connections `http` makes to it.
    pub fn tunnel(&self, http: HttpConnector) -> TunnelConnector {
        TunnelConnector {
            proxy: self.clone(),
            http,
        }
    }

    /// Opens a tunnel to `destination` over a new connection to the proxy.
    async fn open(
        &self,
        mut http: HttpConnector,
        destination: Uri,
    ) -> Result<TokioIo<TcpStream>, TunnelError> {
        let proxy = self.shown();
        let host = destination.host().ok_or(TunnelError::NoHost)?;
        let port = destination
            .port_u16()
            .unwrap_or(if destination.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        let target = format!("{host}:{port}");
        let mut stream = http
            .call(self.uri.clone())
            .await
            .map_err(|e| TunnelError::Unreachable {
                proxy: proxy.clone(),
                reason: e.to_string(),
            })?
            .into_inner();
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
        if let Some(value) = &self.authorization {
            request.extend_from_slice(b"Proxy-Authorization: ");
            request.extend_from_slice(value.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        let lost = |e: std::io::Error| TunnelError::Unreachable {
            proxy: proxy.clone(),
            reason: e.to_string(),
        };
        stream.write_all(&request).await.map_err(lost)?;
        // The answer's head. After a 2xx nothing may follow it: the server speaks only once it
        // is spoken to.
        let mut head = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        let end = loop {
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk).await.map_err(lost)?;
            if n == 0 {
                return Err(TunnelError::Closed { proxy });
            }
            if head.len() + n > MAX_ANSWER_HEAD {
                return Err(TunnelError::NotHttp { proxy });
            }
            head.extend_from_slice(&chunk[..n]);
        };
        // A refusal may come with a page; a tunnel has nothing but the head before the server.
        let status = status_line(&head)
            .filter(|(code, _)| end == head.len() || !(200..300).contains(code))
            .ok_or(TunnelError::NotHttp {
                proxy: proxy.clone(),
            })?;
        if !(200..300).contains(&status.0) {
            let hint = match status.0 {
                401 | 407 if self.authorization.is_some() => {
                    "; it refused the user and password of idp.metadata_proxy"
                }
                401 | 407 => {
                    "; it asks for credentials: give them in idp.metadata_proxy as \
                     http://user:password@host:port"
                }
                403 => "; it must allow CONNECT to that host and port",
                _ => "",
            };
            return Err(TunnelError::Refused {
                proxy,
                target,
                status: status.0,
                reason: status.1,
                hint,
            });
        }
        Ok(TokioIo::new(stream))
    }
}

/// The longest answer head a proxy may send to CONNECT.
const MAX_ANSWER_HEAD: usize = 8 * 1024;

/// The status code and reason phrase of an HTTP answer head (`HTTP/1.1 407 Proxy ...`); the
/// reason keeps visible ASCII and spaces only, at most 64 of them, since it ends up in logs.
fn status_line(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return None;
    }
    let code = code.parse().ok()?;
    let reason = parts
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect();
    Some((code, reason))
}

/// Why no tunnel was opened through the proxy.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The destination has no host to ask for.
    #[error("the metadata URL names no host")]
    NoHost,
    /// The proxy could not be reached, or the connection to it failed.
    #[error("cannot reach the proxy {proxy}: {reason}")]
    Unreachable {
        /// The proxy, without credentials.
        proxy: String,
        /// What failed.
        reason: String,
    },
    /// The proxy closed the connection before its answer was whole.
    #[error("the proxy {proxy} closed the connection before answering CONNECT")]
    Closed {
        /// The proxy, without credentials.
        proxy: String,
    },
    /// The proxy's answer was not an HTTP answer head.
    #[error("the proxy {proxy} did not answer CONNECT in HTTP")]
    NotHttp {
        /// The proxy, without credentials.
        proxy: String,
    },
    /// The proxy answered CONNECT with something other than 2xx.
    #[error("the proxy {proxy} refused to open a tunnel to {target}: {status} {reason}{hint}")]
    Refused {
        /// The proxy, without credentials.
        proxy: String,
        /// The `host:port` asked for.
        target: String,
        /// The proxy's status code.
        status: u16,
        /// Its reason phrase, cleaned.
        reason: String,
        /// What the status usually means here.
        hint: &'static str,
    },
}

/// Reaches every destination through a CONNECT tunnel that one proxy opens: the connector
/// under TLS for a fetch through `idp.metadata_proxy`.
#[derive(Clone)]
pub struct TunnelConnector {
    proxy: MetadataProxy,
    http: HttpConnector,
}

impl Service<Uri> for TunnelConnector {
    type Response = TokioIo<TcpStream>;
    type Error = TunnelError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, TunnelError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TunnelError>> {
        // Each call makes its own connection to the proxy.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let (proxy, http) = (self.proxy.clone(), self.http.clone());
        Box::pin(async move { proxy.open(http, destination).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_with_credentials_gives_basic_authorization_never_shown() {
        let proxy =
            MetadataProxy::parse("http://svc%40corp:p%3Ass@proxy.corp.example:3128/").unwrap();
        assert_eq!(proxy.shown(), "http://proxy.corp.example:3128/");
        let value = proxy.authorization.as_ref().unwrap();
        assert!(value.is_sensitive());
        assert_eq!(
            value,
            &format!("Basic {}", STANDARD.encode("svc@corp:p:ss"))
        );
        let debug = format!("{proxy:?}");
        assert!(
            !debug.contains("cDpzcw") && !debug.contains("p:ss"),
            "{debug}"
        );
        assert!(debug.contains("set"), "{debug}");
        let anonymous = MetadataProxy::parse("http://[::1]:80").unwrap();
        assert_eq!(anonymous.shown(), "http://[::1]:80/");
        assert!(anonymous.authorization.is_none());
    }

    #[test]
    fn anything_but_a_proxy_address_is_refused_without_repeating_it() {
        for (text, words) in [
            ("https://u:secret@proxy:3128", "must be an http:// URL"),
            ("socks5://u:secret@proxy:1080", "must be an http:// URL"),
            ("http://u:secret@proxy", "must name the port"),
            ("http://[::1]", "must name the port"),
            ("http://u:8080@proxy", "must name the port"),
            ("http://u:secret@proxy:3128/path", "without a path"),
            ("http://u:secret@proxy:3128/?q=1", "without a path"),
            ("proxy:3128", "must be an http:// URL"),
            ("u:secret@proxy:3128", "must be an http:// URL"),
            ("secret", "not a URL"),
            ("http://u:%FFsecret@proxy:3128", "not UTF-8"),
        ] {
            let message = MetadataProxy::parse(text).unwrap_err();
            assert!(message.contains(words), "{text}: {message}");
            assert!(!message.contains("secret"), "{text}: {message}");
        }
    }

    #[test]
    fn the_proxys_status_line_is_read_and_its_reason_cleaned() {
        assert_eq!(
            status_line(b"HTTP/1.0 407 Proxy Authentication Required\r\nServer: x\r\n\r\n"),
            Some((407, "Proxy Authentication Required".into()))
        );
        assert_eq!(
            status_line(b"HTTP/1.1 200\r\n\r\n"),
            Some((200, String::new()))
        );
        let long = format!("HTTP/1.1 403 <b>\x1b[31m{}\r\n\r\n", "x".repeat(100));
        let (code, reason) = status_line(long.as_bytes()).unwrap();
        assert_eq!(code, 403);
        assert!(
            reason.starts_with("<b>[31mxxx") && reason.len() == 64,
            "{reason}"
        );
        for garbage in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/2 200\r\n",
        ] {
            assert_eq!(status_line(garbage), None);
        }
    }

    /// A proxy on 127.0.0.1 that reads one CONNECT request head, answers with each of
    /// `answer`'s pieces in turn (a pause between them), then echoes what comes through the
    /// tunnel, or closes when the answer has no end of head. Returns its address and the
    /// request head it read.
    async fn fake_proxy(
        answer: &'static [&'static [u8]],
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            for piece in answer {
                stream.write_all(piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            // An answer cut short is followed by the end of the connection.
            if answer.concat().windows(4).any(|w| w == b"\r\n\r\n") {
                let mut echo = [0u8; 64];
                if let Ok(n) = stream.read(&mut echo).await {
                    let _ = stream.write_all(&echo[..n]).await;
                }
            }
            String::from_utf8(head).unwrap()
        });
        (address, served)
    }

    async fn open_through(
        answer: &'static [&'static [u8]],
        credentials: &str,
        destination: &str,
    ) -> (
        Result<TokioIo<TcpStream>, TunnelError>,
        tokio::task::JoinHandle<String>,
    ) {
        let (address, served) = fake_proxy(answer).await;
        let proxy = MetadataProxy::parse(&format!("http://{credentials}{address}")).unwrap();
        let tunnel = proxy
            .open(HttpConnector::new(), destination.parse().unwrap())
            .await;
        (tunnel, served)
    }

    #[tokio::test]
    async fn a_tunnel_opens_on_a_2xx_head_however_it_arrives() {
        let answer: &[&[u8]] = &[b"HTTP/1.1 200 Connection", b" established\r\n", b"\r\n"];
        let (tunnel, served) = open_through(answer, "gw:p%40ss@", "https://[2001:db8::1]/md").await;
        let mut stream = tunnel.unwrap().into_inner();
        stream.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping", "the tunnel carries bytes both ways");
        let head = served.await.unwrap();
        assert!(
            head.starts_with("CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n"),
            "{head}"
        );
        let basic = format!(
            "Proxy-Authorization: Basic {}\r\n",
            STANDARD.encode("gw:p@ss")
        );
        assert!(head.contains(&basic), "{head}");
        // Plain http goes to port 80 through the tunnel too; no credentials, no header.
        let (tunnel, served) =
            open_through(&[b"HTTP/1.0 200 OK\r\n\r\n"], "", "http://idp/md").await;
        drop(tunnel.unwrap());
        let head = served.await.unwrap();
        assert!(head.starts_with("CONNECT idp:80 HTTP/1.1\r\n"), "{head}");
        assert!(!head.contains("Proxy-Authorization"), "{head}");
    }

    #[tokio::test]
    async fn answers_that_open_no_tunnel_are_named() {
        let refused: &[&[u8]] = &[b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope."];
        match open_through(refused, "", "https://idp.example/md").await.0 {
            Err(e @ TunnelError::Refused { status: 403, .. }) => {
                let said = e.to_string();
                assert!(
                    said.contains("idp.example:443: 403 Forbidden; it must allow"),
                    "{said}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Bytes after a 2xx head would be taken for the server's: no tunnel.
        let extra: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0"];
        let outcome = open_through(extra, "", "https://idp.example/md").await.0;
        assert!(
            matches!(outcome, Err(TunnelError::NotHttp { .. })),
            "{outcome:?}"
        );
        let cut_short: &[&[u8]] = &[b"HTTP/1.1 200 OK\r\n"];
        let outcome = open_through(cut_short, "", "https://idp.example/md")
            .await
            .0;
        assert!(
            matches!(outcome, Err(TunnelError::Closed { .. })),
            "{outcome:?}"
        );
    }
}
