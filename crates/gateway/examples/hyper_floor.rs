//! The floor under the gateway's hot path, for benches/proxy/floor.py: a reverse proxy built
//! from the same parts as the gateway (tokio's current-thread runtime, hyper's HTTP/1.1 and
//! HTTP/2 server with upgrades and graceful shutdown, hyper's HTTP/1.1 client over pooled
//! keep-alive connections) that does nothing else than look the session cookie up in a hash
//! set. With `--headers`, it adds the six headers the gateway sends a signed-in user's requests
//! with (four identity headers, `X-Forwarded-For`, `X-Forwarded-Proto`). Not a product: no
//! timeouts, no header filtering (a client's own identity headers pass), and any error ends the
//! connection. Measure it over HTTP/1.1 only: an upgrade is answered but its sockets are never
//! joined, and an HTTP/2 request would go upstream without a `Host` header.
//!
//! ```text
//! hyper_floor --port 9002 --upstream-port 9001 --cookie COOKIE [--headers]
//! ```
//!
//! A request whose `Cookie` header is not exactly `saml-session=COOKIE` gets 401.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;
type Error = Box<dyn std::error::Error + Send + Sync>;

/// What `--headers` adds to every forwarded request: the gateway's names, values of a typical
/// length.
const ADDED: [(&str, &str); 6] = [
    ("x-auth-user", "alice"),
    ("x-auth-email", "alice@example.com"),
    ("x-auth-name", "Alice Example"),
    ("x-auth-groups", "staff,analysts"),
    ("x-forwarded-for", "127.0.0.1"),
    ("x-forwarded-proto", "http"),
];

struct Floor {
    sessions: HashSet<String>,
    added: Vec<(HeaderName, HeaderValue)>,
    upstream_port: u16,
    idle: Mutex<Vec<SendRequest<Body>>>,
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Result<String, Error> {
        let at = args
            .iter()
            .position(|a| a == name)
            .ok_or(format!("{name} missing"))?;
        Ok(args
            .get(at + 1)
            .ok_or(format!("{name} needs a value"))?
            .clone())
    };
    let port: u16 = value("--port")?.parse()?;
    let floor = Arc::new(Floor {
        sessions: HashSet::from([value("--cookie")?]),
        added: if args.iter().any(|a| a == "--headers") {
            ADDED
                .iter()
                .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
                .collect()
        } else {
            Vec::new()
        },
        upstream_port: value("--upstream-port")?.parse()?,
        idle: Mutex::new(Vec::new()),
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(port, floor))
}

async fn serve(port: u16, floor: Arc<Floor>) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    println!("listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let floor = floor.clone();
        let service = hyper::service::service_fn(move |request| answer(floor.clone(), request));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

async fn answer(floor: Arc<Floor>, request: Request<Incoming>) -> Result<Response<Body>, Error> {
    let signed_in = request
        .headers()
        .get(hyper::header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.strip_prefix("saml-session="))
        .is_some_and(|id| floor.sessions.contains(id));
    if !signed_in {
        let empty = http_body_util::Empty::new().map_err(|never| match never {});
        let mut response = Response::new(empty.boxed());
        *response.status_mut() = hyper::StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let mut request = request.map(BodyExt::boxed);
    for (name, value) in &floor.added {
        request.headers_mut().append(name.clone(), value.clone());
    }
    let idle = floor.idle.lock().map_err(|_| "pool lock poisoned")?.pop();
    let mut sender = match idle {
        Some(sender) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", floor.upstream_port)).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection.with_upgrades());
            sender
        }
    };
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    // Back at once: the next request to take it waits in `ready` for this body's end.
    floor
        .idle
        .lock()
        .map_err(|_| "pool lock poisoned")?
        .push(sender);
    Ok(response.map(BodyExt::boxed))
}
