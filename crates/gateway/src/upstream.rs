//! Keep-alive connections to the upstreams, shared by every request.
//!
//! A request takes an idle HTTP/1.1 connection to its upstream (the most recently used one
//! that is ready for a request) or opens a new one, and the connection goes back to the pool when the response body
//! has been read to its end ([`PooledBody`]). A response whose body is dropped early, a
//! `101 Switching Protocols` (the connection now carries the WebSocket) and a connection the
//! upstream closes never go back. A pooled connection that turns out closed when it is taken
//! is dropped; when the upstream closed it just as a request went out, the request was not
//! sent, and it goes again on another connection.
//!
//! This replaces a general-purpose client on the proxy's hot path: every upstream is a fixed
//! `http://host:port` of the config, so a connection is found by comparing that string, under
//! one short lock, with nothing hashed or spawned per request (docs/performance.md).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Idle connections kept per upstream, at most; beyond that the oldest is closed.
pub const MAX_IDLE_PER_UPSTREAM: usize = 256;

/// How long an idle connection is kept before it is closed instead of used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long opening a connection to an upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// `host:port` of the upstream.
        address: String,
        /// What the connect returned.
        source: std::io::Error,
    },
    /// The TCP connection was not open within [`CONNECT_TIMEOUT`].
    #[error("no connection to {address} within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout {
        /// `host:port` of the upstream.
        address: String,
    },
    /// The HTTP exchange failed (handshake, request or response head).
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Idle {
    /// True when the connection can serve no more: closed, or idle too long.
    fn is_spent(&self) -> bool {
        self.sender.is_closed() || self.since.elapsed() >= IDLE_TIMEOUT
    }
}

/// The idle connections of every upstream, one slot per upstream authority (`host:port` as
/// configured), slots kept for the life of the pool.
#[derive(Default)]
pub struct Pool {
    slots: Mutex<Vec<Slot>>,
}

struct Slot {
    authority: String,
    idle: Vec<Idle>,
}

/// Where a response's connection goes back to once its body is read.
pub struct Lease {
    pool: Arc<Pool>,
    slot: usize,
    sender: SendRequest<Body>,
    /// The request had a body: one the upstream answered before reading it all must not
    /// leave its connection to another request.
    sent_body: bool,
}

impl Pool {
    /// The slot of `authority`, and its most recently used idle connection that is still open
    /// and fresh.
    fn take_idle(&self, authority: &str) -> (usize, Option<SendRequest<Body>>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match slots.iter().position(|s| s.authority == authority) {
            Some(slot) => slot,
            None => {
                slots.push(Slot {
                    authority: authority.to_string(),
                    idle: Vec::new(),
                });
                slots.len() - 1
            }
        };
        // From the most recently used: closed and stale connections go; one still busy (an
        // upload the upstream answered before reading it all) stays for later, so that no
        // request waits behind another's.
        let idle = &mut slots[slot].idle;
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].is_spent() {
                idle.remove(i);
            } else if idle[i].sender.is_ready() {
                return (slot, Some(idle.remove(i).sender));
            }
        }
        (slot, None)
    }

    /// Puts a connection whose last response has ended back as idle.
    fn put(&self, slot: usize, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let entry = Idle {
            sender,
            since: Instant::now(),
        };
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(idle) = slots.get_mut(slot).map(|s| &mut s.idle) else {
            return;
        };
        if idle.len() >= MAX_IDLE_PER_UPSTREAM {
            idle.retain(|e| !e.is_spent());
            if idle.len() >= MAX_IDLE_PER_UPSTREAM {
                idle.remove(0);
            }
        }
        idle.push(entry);
    }

    /// The number of idle connections to `authority`.
    pub fn idle_count(&self, authority: &str) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .find(|s| s.authority == authority)
            .map_or(0, |s| s.idle.len())
    }

    /// The slot of `upstream`, an idle connection to it or a new one, and whether it is one
    /// that served requests before.
    async fn take(
        &self,
        upstream: &hyper::Uri,
    ) -> Result<(usize, SendRequest<Body>, bool), UpstreamError> {
        let (slot, idle) = self.take_idle(authority(upstream));
        if let Some(sender) = idle {
            return Ok((slot, sender, true));
        }
        let address = address(upstream);
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&address))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => return Err(UpstreamError::Connect { address, source }),
                Err(_) => return Err(UpstreamError::ConnectTimeout { address }),
            };
        // Without it, a response's last segment can wait for a delayed ACK (Nagle).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an upstream connection");
        }
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok((slot, sender, false))
    }

    /// Sends `request` (`Host` set; an absolute-form target goes in origin form) to `upstream`
    /// (an `http://host:port` URL); returns the response and the lease of its connection, which
    /// [`PooledBody`] gives back. There is no lease when the connection now carries something
    /// else: after a `101 Switching Protocols`, or a `2xx` to CONNECT.
    pub async fn send(
        self: &Arc<Self>,
        upstream: &hyper::Uri,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        // A connection carries the target in origin form (path and query).
        if request.uri().authority().is_some() {
            let path_and_query = request.uri().path_and_query().cloned();
            *request.uri_mut() = path_and_query.map_or_else(hyper::Uri::default, hyper::Uri::from);
        }
        let sent_body = !hyper::body::Body::is_end_stream(request.body());
        let connect = request.method() == hyper::Method::CONNECT;
        loop {
            let (slot, mut sender, reused) = self.take(upstream).await?;
            if let Err(e) = sender.ready().await {
                // A pooled connection the upstream has closed since: try the next one.
                if reused {
                    continue;
                }
                return Err(e.into());
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let switched = status == hyper::StatusCode::SWITCHING_PROTOCOLS
                        || (connect && status.is_success());
                    let lease = (!switched).then(|| Lease {
                        pool: self.clone(),
                        slot,
                        sender,
                        sent_body,
                    });
                    return Ok((response, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed as the request went out.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

/// A response body from an upstream that gives its connection back to the pool once read
/// to its end (or when dropped at its end, for a body the server never polls).
pub struct PooledBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    /// `body`, whose connection goes back through `lease` at its end.
    pub fn new(body: Incoming, lease: Lease) -> PooledBody {
        PooledBody {
            body,
            lease: Some(lease),
        }
    }

    fn release(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        // A request body still going out when its response has ended: the upstream answered
        // early, and the rest of the body would reach it as the start of the next request
        // unless it reads or closes; the connection goes, not back.
        if lease.sent_body && !lease.sender.is_ready() {
            return;
        }
        lease.pool.put(lease.slot, lease.sender);
    }
}

impl hyper::body::Body for PooledBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
            // A body that failed mid-way leaves its connection in an unknown state.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped before its end, the connection cannot carry another request (hyper closes
        // it); at its end (an empty body, or the last frame read), it can.
        if hyper::body::Body::is_end_stream(&self.body) {
            self.release();
        }
    }
}

/// The `Host` header for a request to `upstream` that names none (HTTP/2 requests name their
/// host in the target): its host and port as configured.
pub fn host_header(upstream: &hyper::Uri) -> Option<hyper::header::HeaderValue> {
    let host = upstream.host()?;
    let value = match upstream.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    hyper::header::HeaderValue::from_str(&value).ok()
}

/// The authority of an upstream URL, as configured: the pool's key.
fn authority(upstream: &hyper::Uri) -> &str {
    upstream.authority().map_or("", |a| a.as_str())
}

/// `host:port` of an `http://` upstream URL (port 80 when it names none), to connect to.
fn address(upstream: &hyper::Uri) -> String {
    let host = upstream.host().unwrap_or_default();
    format!("{host}:{}", upstream.port_u16().unwrap_or(80))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A loopback listener on a free port that counts the connections it accepts and serves
    /// each with `serve`.
    async fn listen<F, Fut>(serve: F) -> (hyper::Uri, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        let uri = format!("http://127.0.0.1:{port}").parse().unwrap();
        (uri, accepted)
    }

    /// An upstream that answers `body` to every request (with `Connection: close` when
    /// `close` is set).
    async fn upstream(body: &'static str, close: bool) -> (hyper::Uri, Arc<AtomicUsize>) {
        listen(move |stream| async move {
            let service = hyper::service::service_fn(move |_req| async move {
                let mut response = Response::new(http_body_util::Full::new(
                    hyper::body::Bytes::from_static(body.as_bytes()),
                ));
                if close {
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await
    }

    /// An upstream that answers each connection's first request with the bytes `answer` at
    /// once, then keeps the connection open, reading whatever comes.
    async fn raw_upstream(answer: &'static [u8]) -> (hyper::Uri, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        listen(move |mut stream| async move {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(answer).await;
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await
    }

    fn get(upstream: &hyper::Uri) -> Request<Body> {
        Request::builder()
            .uri("/x")
            .header(hyper::header::HOST, upstream.authority().unwrap().as_str())
            .body(Body::empty())
            .unwrap()
    }

    async fn read(pool: &Arc<Pool>, upstream: &hyper::Uri) -> String {
        let (response, lease) = pool.send(upstream, get(upstream)).await.unwrap();
        let body = PooledBody::new(response.into_body(), lease.unwrap());
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_serves_one_request_after_another() {
        let (uri, accepted) = upstream("hello", false).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..5 {
            assert_eq!(read(&pool, &uri).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(authority(&uri)), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_keeps_its_connection_out_of_the_pool() {
        let (uri, accepted) = upstream("a body that nobody reads", false).await;
        let pool = Arc::new(Pool::default());
        let (response, lease) = pool.send(&uri, get(&uri)).await.unwrap();
        drop(PooledBody::new(response.into_body(), lease.unwrap()));
        assert_eq!(pool.idle_count(authority(&uri)), 0);
        assert_eq!(read(&pool, &uri).await, "a body that nobody reads");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A request body that never ends (a slow upload).
    struct EndlessUpload;

    impl hyper::body::Body for EndlessUpload {
        type Data = hyper::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn no_request_waits_behind_an_upload_still_going_out() {
        // The upstream answers before the upload ends: the response is read to its end, so
        // its connection goes back to the pool, but it cannot carry a request yet.
        // (a server that refuses an upload early)
        let (uri, accepted) =
            raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\ntoo large").await;
        let pool = Arc::new(Pool::default());
        let upload = Request::builder()
            .method("POST")
            .uri("/upload")
            .header(hyper::header::HOST, uri.authority().unwrap().as_str())
            .header(hyper::header::CONTENT_LENGTH, "1000000")
            .body(Body::new(EndlessUpload))
            .unwrap();
        let (response, lease) = pool.send(&uri, upload).await.unwrap();
        let body = PooledBody::new(response.into_body(), lease.unwrap());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "too large");
        let next = tokio::time::timeout(Duration::from_secs(10), read(&pool, &uri)).await;
        assert_eq!(next.expect("the next request waited").as_str(), "too large");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_that_switched_protocols_is_never_pooled() {
        let (uri, _) = raw_upstream(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
              Upgrade: websocket\r\n\r\n",
        )
        .await;
        let pool = Arc::new(Pool::default());
        let mut upgrade = get(&uri);
        upgrade.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        upgrade.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("websocket"),
        );
        let (response, lease) = pool.send(&uri, upgrade).await.unwrap();
        assert_eq!(response.status(), hyper::StatusCode::SWITCHING_PROTOCOLS);
        assert!(lease.is_none(), "a lease for a switched connection");
        assert_eq!(pool.idle_count(authority(&uri)), 0);
    }

    #[tokio::test]
    async fn an_absolute_target_goes_in_origin_form() {
        // An upstream that answers with the target it was sent.
        let (uri, _) = listen(|stream| async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let target = request.uri().to_string();
                let body = http_body_util::Full::new(hyper::body::Bytes::from(target));
                Ok::<_, std::convert::Infallible>(Response::new(body))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await;
        let pool = Arc::new(Pool::default());
        let mut request = get(&uri);
        *request.uri_mut() = format!("http://{}/abs?q=1", uri.authority().unwrap())
            .parse()
            .unwrap();
        let (response, lease) = pool.send(&uri, request).await.unwrap();
        let body = PooledBody::new(response.into_body(), lease.unwrap());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "/abs?q=1");
    }

    #[test]
    fn host_headers_name_host_and_port_only() {
        let uri: hyper::Uri = "http://app.internal:8501".parse().unwrap();
        assert_eq!(host_header(&uri).unwrap(), "app.internal:8501");
        let uri: hyper::Uri = "http://app.internal".parse().unwrap();
        assert_eq!(host_header(&uri).unwrap(), "app.internal");
    }

    #[tokio::test]
    async fn connections_the_upstream_closes_are_replaced() {
        let (uri, accepted) = upstream("bye", true).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            assert_eq!(read(&pool, &uri).await, "bye");
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_upstream_that_does_not_listen_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri: hyper::Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let pool = Arc::new(Pool::default());
        let error = pool.send(&uri, get(&uri)).await.err().unwrap();
        assert!(matches!(error, UpstreamError::Connect { .. }), "{error}");
    }

    #[test]
    fn addresses_default_to_port_80() {
        let uri: hyper::Uri = "http://app.internal".parse().unwrap();
        assert_eq!(address(&uri), "app.internal:80");
        let uri: hyper::Uri = "http://[::1]:8501".parse().unwrap();
        assert_eq!(address(&uri), "[::1]:8501");
    }
}
