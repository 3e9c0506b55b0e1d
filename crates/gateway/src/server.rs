//! Start-up and the URL map: load keys, open the audit log and the store, serve until a signal.
//!
//! The store is opened before the listener: with `sessions.store: redis`, a bad URL or a Redis
//! that does not answer stops start-up with a message naming the file and
//! `sessions.redis_url` (the server's address, never its password). With
//! `sessions.redis_connect_retry`, an unreachable Redis is tried again, with growing pauses,
//! until that time has passed (so that a gateway started together with its Redis waits for
//! it); a bad URL still stops start-up at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use session_store::{
    MemoryLimits, MemoryStore, RedisAccess, RedisConnectError, RedisStore, SessionTimeouts, Store,
};

use crate::audit::AuditLog;
use crate::client_timeout::{self, Tracked};
use crate::config::{Config, ConfigError, StoreKind};
use crate::keys::{self, SpKeys};
use crate::proxy::Peer;
use crate::state::{unix_now, AppState, SharedState};
use crate::{gate, saml};

/// Loads the SP key pair named by the config, generating it when both files are absent, and
/// the next pair of a rollover when configured (it must exist: `saml-gateway keygen`).
pub fn load_keys(config: &Config) -> anyhow::Result<(SpKeys, bool)> {
    let common_name = url::Url::parse(&config.public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "saml-gateway".into());
    let (mut keys, generated) =
        keys::load_or_generate(&config.sp.key_file, &config.sp.cert_file, &common_name)
            .with_context(|| format!("{}", config.file.display()))?;
    if let Some((key_file, cert_file)) = &config.sp.next_key_pair {
        let next = keys::load(
            key_file,
            cert_file,
            ["sp.next_key_file", "sp.next_cert_file"],
        )
        .with_context(|| format!("{}", config.file.display()))?;
        if next.cert.to_der()? == keys.cert.to_der()? {
            anyhow::bail!(
                "{}: sp.next_cert_file: is the current certificate; make a new pair with \
                 `saml-gateway keygen`",
                config.file.display()
            );
        }
        keys.next = Some(Box::new(next));
    }
    Ok((keys, generated))
}

/// Logs the settings that weaken security, so they are never silent, and the IdP
/// certificates that expire soon; `initial` holds the metadata of each IdP, in config order.
pub fn warnings(config: &Config, initial: &[crate::federation::Initial]) {
    if !config.secure_cookies {
        tracing::warn!(
            public_url = %config.public_url,
            "public_url is plain http: cookies are not Secure; use this only for local testing"
        );
    }
    // Without server.tls the gateway speaks plain HTTP: an https public URL means a TLS
    // terminator in front.
    if config.secure_cookies && config.tls.is_none() && config.trusted_proxies.is_empty() {
        tracing::warn!(
            "public_url is https, so a proxy terminates TLS in front of the gateway, but \
             server.trusted_proxies is empty: every client counts as that proxy's address, in \
             audit records (client_ip) and in the login budget (limits.login_starts_per_minute), \
             which all users then share; list the proxy in server.trusted_proxies"
        );
    }
    if let Some(tls) = &config.tls {
        crate::tls::key_file_warning(&tls.key_file, "the TLS key (server.tls.key_file)");
    }
    if let Some(trace) = &config.trace {
        tracing::warn!(
            file = %trace.file.display(),
            attribute_values = trace.attribute_values,
            "debug.trace_logins is on: every login attempt is described in this file, with the \
             user's NameID; switch it off when the problem is found"
        );
    }
    let sessions = &config.sessions;
    if matches!(sessions.store, StoreKind::Redis { .. }) && sessions.redis_record_key_file.is_none()
    {
        tracing::warn!(
            "session records in Redis are not sealed: whoever can write to Redis can make a \
             session that signs in as any user; set sessions.redis_record_key_file \
             (docs/redis.md#sealed-session-records)"
        );
    }
    if config.sessions.idle_timeout < Duration::from_secs(60) {
        tracing::warn!(
            idle_timeout_secs = config.sessions.idle_timeout.as_secs(),
            "sessions.idle_timeout is below 1m: users are signed out after a few moments \
             without a request; use this only for testing"
        );
    }
    if let Some(token) = &config.identity_token {
        identity_key_warnings(config, token);
    }
    for (idp, initial) in config.idps.iter().zip(initial) {
        idp_warnings(config, idp, &initial.metadata);
    }
}

/// The warnings of one IdP and its metadata.
fn idp_warnings(
    config: &Config,
    idp: &crate::config::IdpConfig,
    metadata: &saml_sp::metadata::IdpMetadata,
) {
    let name = &idp.name;
    if idp.allow_sha1 {
        tracing::warn!(
            idp = %name,
            "{} is on: SHA-1 signatures are accepted from the IdP",
            config.idp_key(idp, "allow_sha1")
        );
    }
    if idp.allow_unsolicited {
        tracing::warn!(
            idp = %name,
            "{} is on: IdP-initiated logins are accepted",
            config.idp_key(idp, "allow_unsolicited")
        );
    }
    if metadata.want_authn_requests_signed && !config.sp.sign_authn_requests {
        tracing::warn!(idp = %name, "the IdP wants signed AuthnRequests but sp.sign_authn_requests is off");
    }
    crate::federation::log_expiry_warnings(name, metadata);
    if metadata
        .valid_until
        .is_some_and(|until| until <= chrono::Utc::now())
    {
        tracing::error!(idp = %name, "the IdP metadata is past its validUntil; get a current copy from the IdP");
    }
    if idp.single_logout && metadata.slo.is_none() {
        tracing::info!(
            idp = %name,
            "the IdP publishes no SingleLogoutService (HTTP-Redirect or HTTP-POST): sign-out \
             ends only the session here"
        );
    }
}

/// Warnings about the identity token's keys: one generated per replica, or readable by others.
fn identity_key_warnings(config: &Config, token: &crate::identity_token::IdentityTokenConfig) {
    let files = std::iter::once(&token.key_file).chain(token.next_key_file.as_ref());
    for file in files {
        match std::fs::metadata(file) {
            Ok(meta) if crate::tls::readable_by_others(&meta) => tracing::warn!(
                key_file = %file.display(),
                "the identity-token key is readable by other users; chmod 600 it"
            ),
            Ok(_) => {}
            Err(_) if matches!(config.sessions.store, StoreKind::Redis { .. }) => tracing::warn!(
                key_file = %file.display(),
                "the identity-token key does not exist and will be generated; with several \
                 replicas, generate it once and give every replica the same file, or each \
                 publishes its own keys"
            ),
            Err(_) => {}
        }
    }
}

/// Reads and checks `server.tls` (for `serve` and `check-config`), says which certificate it
/// serves and warns when that expires soon. `None`: plain HTTP.
pub fn load_tls(config: &Config) -> anyhow::Result<Option<crate::tls::Tls>> {
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    let tls = crate::tls::Tls::new(files.clone()).map_err(|e| crate::config::ConfigError {
        file: config.file.clone(),
        key: e.key.to_string(),
        message: e.message,
    })?;
    tls_notices(&tls);
    Ok(Some(tls))
}

/// Says which TLS certificate is served, and warns when it expires soon
/// ([`crate::tls::Validity::warn_days_left`]).
fn tls_notices(tls: &crate::tls::Tls) {
    let (fingerprint, validity) = tls.certificate();
    tracing::info!(%fingerprint, "TLS certificate (server.tls)");
    if let Some(days) = validity.and_then(|v| v.warn_days_left(unix_now())) {
        tracing::warn!(
            %fingerprint,
            days_left = days,
            "the TLS certificate expires soon; renew it and send SIGHUP"
        );
    }
}

/// On SIGHUP, reads the TLS certificate and key again (a renewal goes in force without a
/// restart); files that fail the checks change nothing.
async fn reload_tls_on_hangup(tls: Arc<crate::tls::Tls>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; a new TLS certificate needs a restart");
        return;
    };
    while hangup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => {
                tracing::info!("reloaded the TLS certificate and key");
                tls_notices(&tls);
            }
            Err(e) => tracing::error!(
                error = %e,
                "TLS reload refused; the certificate in force stays"
            ),
        }
    }
}

/// Says which SP certificates are published, and warns when the signing one expires soon.
fn sp_key_notices(keys: &SpKeys) {
    let facts = |k: &SpKeys| {
        let der = k.cert.to_der().unwrap_or_default();
        (
            saml_sp::metadata::certificate_fingerprint(&der),
            saml_sp::metadata::certificate_not_after(&der),
        )
    };
    let (current, not_after) = facts(keys);
    if let Some(next) = &keys.next {
        tracing::info!(
            current = %current,
            next = %facts(next).0,
            "SP key rollover: the metadata publishes the next certificate too; promote it once \
             the IdP has the new metadata"
        );
    }
    let now = unix_now();
    if let Some(days) = not_after.map(|t| (t - now).div_euclid(86_400)) {
        if days < crate::federation::EXPIRY_WARNING_DAYS[0] {
            tracing::warn!(
                fingerprint = %current,
                days_left = days,
                "the SP certificate expires soon; roll it over (see `saml-gateway keygen --help`)"
            );
        }
    }
}

/// True when `path` may be one of the gateway's own endpoints, which the [`router`] serves
/// (its fallback, [`gate::protected`], takes the rest of these prefixes as before).
fn for_router(path: &str) -> bool {
    path.starts_with("/saml/") || path.starts_with("/.well-known/")
}

/// What axum does to a response of a top-level route, done for the requests that bypass the
/// router: `Content-Length` from an exactly known body size, and no body in an answer to HEAD
/// (hyper drops it over HTTP/1, but not over HTTP/2) or in a 2xx answer to CONNECT.
fn finish_response(method: &axum::http::Method, mut response: Response) -> Response {
    use axum::body::HttpBody;
    if method == axum::http::Method::CONNECT && response.status().is_success() {
        *response.body_mut() = axum::body::Body::empty();
        return response;
    }
    if !response.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(size) = response.body().size_hint().exact() {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
    }
    if method == axum::http::Method::HEAD {
        *response.body_mut() = axum::body::Body::empty();
    }
    response
}

/// What serves the requests of one client connection: a request under `/saml/` or
/// `/.well-known/` goes through the [`router`]; every other request (the proxied traffic,
/// nearly all of it) goes straight to [`gate::guard`], as the router's fallback
/// ([`gate::protected`]) would send it, without the router's matching and boxing on the way
/// ([`finish_response`] does what axum does after).
struct Front {
    state: SharedState,
    router: Router,
    peer: Peer,
    /// The peer is a trusted proxy: each request's client is read from its
    /// `X-Forwarded-For` ([`crate::forwarded`]).
    behind_proxy: bool,
    /// What the connection has done, for [`client_timeout`].
    activity: Arc<client_timeout::Activity>,
}

impl Front {
    /// The answer to one request of this connection: the [`router`]'s for the gateway's own
    /// endpoints, [`gate::guard`]'s for the rest. One `async fn` between hyper and the guard
    /// (a second one cost 184 instructions per request, docs/performance.md).
    async fn handle(
        front: Arc<Front>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<Tracked<axum::body::Body>>, std::convert::Infallible> {
        // Under way until the response has gone out, or the request is given up (the
        // future dropped): see `client_timeout`.
        let under_way = front.activity.request_started();
        // A request body must keep coming while its request waits (client_timeout); a
        // request without one (nearly every proxied request) is left as it is.
        let mut request = request.map(|body| {
            if hyper::body::Body::is_end_stream(&body) {
                axum::body::Body::new(body)
            } else {
                axum::body::Body::new(client_timeout::Upload::new(body, &front.activity))
            }
        });
        let forwarded;
        let peer = if front.behind_proxy {
            let proxies = &front.state.config.trusted_proxies;
            let client = proxies.client(front.peer.addr.ip(), request.headers());
            if client == front.peer.addr.ip() {
                &front.peer
            } else {
                forwarded = Peer::new(std::net::SocketAddr::new(client, front.peer.addr.port()));
                &forwarded
            }
        } else {
            &front.peer
        };
        let response = if for_router(request.uri().path()) {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer.addr));
            let mut router = front.router.clone();
            let Ok(response) = tower_service::Service::call(&mut router, request).await;
            response
        } else {
            let method = request.method().clone();
            let state = front.state.clone();
            finish_response(&method, gate::guard(state, peer, request).await)
        };
        Ok(response.map(|body| Tracked::new(body, under_way.answered())))
    }
}

/// Serves the public listener until `shutdown` completes, then lets the requests under way
/// finish (for at most [`SHUTDOWN_DRAIN`]): each connection over HTTP/1.1 (with upgrades) or
/// HTTP/2, every request through a [`Front`], as `axum::serve` would with less glue per
/// request (no tower adapters, no boxed future per request). Each connection is closed when it
/// stays quiet for `server.client_timeout`, and asked to close at shutdown
/// ([`client_timeout::run`]).
async fn serve_public(
    listener: tokio::net::TcpListener,
    state: SharedState,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let router = router(state.clone());
    // No HTTP/2 extended CONNECT (RFC 8441): the gate refuses CONNECT, WebSockets come as
    // HTTP/1.1 upgrades.
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        hyper_util::rt::TokioExecutor::new(),
    ));
    let closing = Arc::new(crate::closing::Closing::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // The pause after a failed accept gives way to a shutdown.
                    tokio::select! {
                        () = accept_failed(e) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY, the last segment of a response waits for the client's delayed
        // ACK (Nagle): a 64 KiB page took ~40 ms at the 99th percentile.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
        let open = closing.open();
        let state = state.clone();
        let router = router.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let trusted = &state.config.trusted_proxies;
            // The client a load balancer's PROXY header names, read before any HTTP. Its
            // `X-Forwarded-For` is read only when the header named a client and that client is
            // itself a trusted proxy: with no client named (a health check, `UNKNOWN`), the
            // HTTP on the connection is whoever's the balancer passed on.
            let (peer, may_forward) = if state.config.proxy_protocol {
                let named = crate::proxy_protocol::client(&mut stream, peer, trusted);
                match until_closing(&open, named).await {
                    Some(Ok(Some(client))) => (client, true),
                    Some(Ok(None)) => (peer, false),
                    Some(Err(_)) | None => return,
                }
            } else {
                (peer, true)
            };
            let front = Front {
                behind_proxy: may_forward && trusted.contains(peer.ip()),
                state,
                router,
                peer: Peer::new(peer),
                activity: Arc::new(client_timeout::Activity::default()),
            };
            match tls {
                None => serve_connection(stream, front, &builder, open).await,
                Some(tls) => match until_closing(&open, tls.accept(stream)).await {
                    Some(Ok(stream)) => serve_connection(stream, front, &builder, open).await,
                    Some(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    None => {}
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_DRAIN, closing.close_all())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = SHUTDOWN_DRAIN.as_secs(),
            "requests still under way at shutdown were cut off after the drain time"
        );
    }
}

/// `work` (a PROXY header, a TLS handshake: what comes before any request), or `None` when
/// the server asks its connections to close first: shutdown does not wait for a client that
/// has not begun.
async fn until_closing<F: std::future::Future>(
    open: &crate::closing::Open,
    work: F,
) -> Option<F::Output> {
    let closing = open.closing();
    let asked = closing.asked();
    let mut asked = std::pin::pin!(asked);
    // Registered before the flag is read, so that a request in between still wakes it.
    asked.as_mut().enable();
    if closing.is_asked() {
        return None;
    }
    tokio::select! {
        output = work => Some(output),
        () = asked => None,
    }
}

/// Serves one client connection (plain TCP, or TLS over it) through `front` until it ends,
/// is closed by [`client_timeout`], or is asked to close at shutdown.
async fn serve_connection<I>(
    io: I,
    front: Front,
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    open: crate::closing::Open,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = front.peer.addr;
    let timeout = front.state.config.client_timeout;
    let activity = front.activity.clone();
    let front = Arc::new(front);
    let service = hyper::service::service_fn(move |request| Front::handle(front.clone(), request));
    let connection = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service)
        .into_owned();
    let close = |connection: std::pin::Pin<&mut _>| {
        hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(connection);
    };
    match client_timeout::run(connection, &activity, timeout, open, close).await {
        client_timeout::Ended::Finished(Ok(())) => {}
        client_timeout::Ended::Finished(Err(e)) => {
            tracing::trace!(error = %e, "client connection ended with an error");
        }
        client_timeout::Ended::TimedOut => {
            tracing::debug!(%peer, "closed a client connection quiet for server.client_timeout");
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime does for every
/// program. Each open WebSocket holds up to four descriptors (client, upstream, and the pipe
/// [`crate::ws_join`] makes for large messages) and each proxied request two, so the usual soft
/// limit of 1,024 could stop a gateway at about 250 open Streamlit tabs while the hard limit
/// allows far more.
/// Nothing changes when the hard limit is unlimited (Linux never has one for open files;
/// elsewhere the soft limit's own ceiling is unknown here).
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(target)) = (limit.current, limit.maximum) else {
        return;
    };
    if current >= target {
        return;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(from = current, to = target, "raised the open-file limit"),
        Err(e) => tracing::warn!(
            error = %e,
            limit = current,
            "cannot raise the open-file limit; each WebSocket holds up to four descriptors"
        ),
    }
}

/// How long a shutdown waits for the requests under way before it cuts them off.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);

/// After a failed accept: a connection that went away before it was taken is nothing; any
/// other error (too many open files) is logged, and accepting pauses for a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The URL map.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/saml/metadata", get(saml::metadata))
        .route("/saml/login", get(saml::login))
        .route("/saml/acs", axum::routing::post(saml::acs))
        .route("/saml/logout", get(saml::logout_page).post(saml::logout))
        .route("/saml/logged-out", get(saml::logged_out))
        .route(
            "/saml/slo",
            get(crate::slo::redirect_binding).post(crate::slo::post_binding),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .fallback(gate::protected)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            strict_transport,
        ))
        .with_state(state)
}

/// Longest time a connection to `server.redirect_http_listen` may take to send its request
/// head, and to be answered in all.
const REDIRECT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const REDIRECT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `server.redirect_http_listen`: one request per connection (HTTP/1.1, no keep-alive),
/// its head within 10 s and the whole exchange within 30 s, so that idle or slow clients
/// cannot hold descriptors the public listener needs.
async fn serve_redirects(listener: tokio::net::TcpListener, state: SharedState) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let answer = to_public_url(&state, request.uri());
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REDIRECT_HEAD_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if tokio::time::timeout(REDIRECT_CONNECTION_TIMEOUT, connection)
                .await
                .is_err()
            {
                tracing::debug!("closed a slow connection to server.redirect_http_listen");
            }
        });
    }
}

/// The answer of `server.redirect_http_listen` to every request: `308` to the same path and
/// query under `public_url`, whatever `Host` the request named (a redirect never leads
/// elsewhere), without a body.
fn to_public_url(state: &SharedState, uri: &axum::http::Uri) -> Response {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    // One leading slash, so that the Location reads plainly as a path on public_url's host;
    // bytes outside ASCII (which a request line may carry) percent-encoded, as a header needs.
    use std::fmt::Write;
    let mut location = format!("{}/", state.config.public_url);
    for &byte in target.trim_start_matches('/').as_bytes() {
        if byte.is_ascii_graphic() {
            location.push(char::from(byte));
        } else {
            let _ = write!(location, "%{byte:02X}");
        }
    }
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Adds `Strict-Transport-Security` (`server.hsts_max_age`) to the gateway's own answers under
/// an https public URL, unless the answer has one: every user passes `/saml/login`, so the
/// browser learns to use https for the host without a header on every proxied response.
async fn strict_transport(State(state): State<SharedState>, mut response: Response) -> Response {
    if let Some(value) = &state.config.hsts {
        response
            .headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| value.clone());
    }
    response
}

/// The identity token's public keys (JWKS); 404 when tokens are switched off.
async fn jwks(State(state): State<SharedState>) -> Response {
    let Some(tokens) = &state.tokens else {
        return (StatusCode::NOT_FOUND, "identity tokens are switched off\n").into_response();
    };
    let mut response = tokens.jwks().to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Verifiers may cache the keys briefly; a rotation publishes the next key well ahead.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `new` when it lists the IdPs in force, by the same names in the same order; otherwise the
/// error that refuses the reload. The IdPs are set at start-up (their trust, refresh and
/// pending logins hang on them), so routes checked against another list must not go in force
/// beside the old one: a route that lost `allow.idps` along with a removed IdP would let that
/// IdP's users in until the restart.
fn same_idps(state: &AppState, new: Config) -> Result<Config, crate::config::ConfigError> {
    let running: Vec<&str> = state.idps.iter().map(|f| f.idp.name.as_str()).collect();
    let listed: Vec<&str> = new.idps.iter().map(|i| i.name.as_str()).collect();
    if running == listed {
        return Ok(new);
    }
    Err(crate::config::ConfigError {
        file: new.file.clone(),
        key: if new.idps_listed { "idps" } else { "idp" }.into(),
        message: format!(
            "the IdPs ({}) differ from those in force ({}); a change of IdPs needs a restart",
            listed.join(", "),
            running.join(", ")
        ),
    })
}

/// On SIGHUP, reads the config file again and puts its routes (rules, paths, headers filters)
/// in force for every request from then on, open sessions included. A file that fails its
/// checks changes nothing; other settings need a restart.
async fn reload_on_hangup(state: SharedState) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; reloading routes needs a restart");
        return;
    };
    while hangup.recv().await.is_some() {
        let mut record = crate::audit::Record {
            event: Some(crate::audit::Event::RoutesReloaded),
            ..crate::audit::Record::default()
        };
        let outcome = match Config::load(&state.config.file).and_then(|new| same_idps(&state, new))
        {
            Ok(new) => {
                let count = new.routes.routes().len();
                // A metadata file is read again with the routes (a rollover by hand); a
                // metadata URL is followed by its own refresh.
                for federation in &state.idps {
                    let Some(crate::config::MetadataSource::File { metadata, .. }) =
                        new.idp(&federation.idp.name).map(|i| &i.source)
                    else {
                        continue;
                    };
                    let name = &federation.idp.name;
                    let expected = federation.entity_id.clone();
                    if metadata.entity_id == expected {
                        crate::federation::log_expiry_warnings(name, metadata);
                        let origin = crate::federation::Origin::File;
                        if let Some(change) = federation.replace(metadata.clone(), origin) {
                            tracing::info!(idp = %name, %change, "the IdP metadata file changed");
                            crate::federation::audit_change(&state, federation, change).await;
                        }
                    } else {
                        tracing::error!(
                            idp = %name,
                            found = %metadata.entity_id,
                            %expected,
                            "the metadata file now names another IdP; restart to change the IdP"
                        );
                    }
                }
                // Identities cached for the old table are never used with the new one (each
                // entry names its table); clearing only frees their memory.
                state.routes.store(Arc::new(new.routes));
                state.identities.clear();
                record.detail = Some(format!("{count} routes"));
                Ok(count)
            }
            Err(e) => {
                // The message can quote a value of the file, and a value may come from
                // `${ENV}` (a secret): the durable record names only where the problem is.
                record.reason = Some("config_invalid".into());
                record.detail = Some(format!("{}: {}", e.file.display(), e.key));
                Err(e)
            }
        };
        if let Err(e) = state.audit.record(record).await {
            tracing::error!(error = %e, "audit log write failed for a reload");
        }
        // Logged once the audit record is written: the line marks the reload as done.
        match outcome {
            Ok(count) => tracing::info!(
                routes = count,
                "reloaded routes and paths from the config file; other settings take effect at \
                 the next restart"
            ),
            Err(e) => tracing::error!(error = %e, "reload refused; the routes in force stay"),
        }
    }
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    // First, so that a bad TLS file stops start-up before keys are generated or Redis waited
    // for.
    let tls = load_tls(&config)?.map(Arc::new);
    let (keys, generated) = load_keys(&config)?;
    if generated {
        tracing::warn!(
            key_file = %config.sp.key_file.display(),
            cert_file = %config.sp.cert_file.display(),
            "generated a new SP key pair; give the IdP the new metadata"
        );
    }
    sp_key_notices(&keys);
    let initial = crate::federation::initial_all(&config, true).await?;
    warnings(&config, &initial);
    for (idp, initial) in config.idps.iter().zip(&initial) {
        let fingerprints: Vec<String> = crate::federation::certificates(&initial.metadata)
            .into_iter()
            .map(|c| c.fingerprint)
            .collect();
        tracing::info!(
            idp = %idp.name,
            entity_id = %initial.metadata.entity_id,
            origin = ?initial.origin,
            certificates = %fingerprints.join(", "),
            "trusting the IdP's signing certificates"
        );
    }
    let audit = AuditLog::open(&config.audit_file)
        .with_context(|| format!("{}: audit.file", config.file.display()))?;
    let store = open_store(&config).await?;
    let listen = config.listen;
    let admin_listen = config.admin_listen;
    let state = Arc::new(AppState::new(config, keys, initial, store, audit)?);

    tokio::spawn(reload_on_hangup(state.clone()));
    tokio::spawn(crate::refusals::summarize(state.clone()));
    if state.config.sessions.redis_record_key_file.is_some() {
        tokio::spawn(crate::session_refusals::summarize(state.clone()));
    }
    if let Some(tls) = &tls {
        tokio::spawn(reload_tls_on_hangup(tls.clone()));
    }
    for index in 0..state.idps.len() {
        tokio::spawn(crate::federation::refresh(state.clone(), index));
    }
    if let Some(admin) = admin_listen {
        let listener = tokio::net::TcpListener::bind(admin)
            .await
            .with_context(|| format!("cannot listen on {admin} (server.admin_listen)"))?;
        tracing::info!(%admin, "admin endpoints (/health, /metrics) listening");
        let app = crate::admin::router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the admin listener stopped");
            }
        });
    }

    if let Some(address) = state.config.redirect_http_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} (server.redirect_http_listen)"))?;
        tracing::info!(%address, "plain-http requests redirected to public_url");
        tokio::spawn(serve_redirects(listener, state.clone()));
    }

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, public_url = %state.config.public_url, "saml-gateway listening");
    serve_public(listener, state.clone(), tls, shutdown_signal()).await;
    // The refusals counted since the last summary would be lost with the process.
    crate::refusals::last_pass(&state).await;
    crate::session_refusals::last_pass(&state).await;
    tracing::info!("saml-gateway stopped");
    Ok(())
}

/// The session timeouts of the config, in the store's terms.
pub fn store_timeouts(config: &Config) -> SessionTimeouts {
    SessionTimeouts {
        idle: duration_secs(config.sessions.idle_timeout),
        max_lifetime: duration_secs(config.sessions.max_lifetime),
    }
}

/// First pause between two attempts to reach Redis at start-up; it doubles up to
/// [`MAX_CONNECT_PAUSE`].
const FIRST_CONNECT_PAUSE: Duration = Duration::from_millis(250);
/// Longest pause between two attempts to reach Redis at start-up.
const MAX_CONNECT_PAUSE: Duration = Duration::from_secs(5);

/// Connects to the configured Redis, trying again until `retry` has passed when it does not
/// answer; also returns the password and TLS settings it connected with. Errors name the file
/// and `sessions.redis_url`, never the password.
pub async fn connect_redis(
    config: &Config,
    url: &str,
    retry: Duration,
) -> Result<(RedisStore, RedisAccess), ConfigError> {
    let access = crate::redis_access::load(config)?;
    let record_keys = crate::redis_access::load_record_keys(config)?;
    let give_up = tokio::time::Instant::now() + retry;
    let mut pause = FIRST_CONNECT_PAUSE;
    let mut attempts = 1u32;
    loop {
        let timeouts = store_timeouts(config);
        let connecting = RedisStore::connect(url, &access, &config.sp.entity_id, timeouts);
        let error = match connecting.await {
            Ok(store) => return Ok((store.with_record_keys(record_keys), access)),
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        let retryable = matches!(error, RedisConnectError::Unreachable { .. });
        if !retryable || now >= give_up {
            let mut message = error.to_string();
            if let (true, Some(path)) = (retryable, &config.sessions.redis_password_file) {
                message.push_str(&format!(
                    " (signed in with the password in sessions.redis_password_file: {})",
                    path.display()
                ));
            }
            // Only where the sentinels were asked in vain: not for a master that refused.
            let sentinels_refused = message.contains("no sentinel named the master");
            let sentinel_file = &config.sessions.redis_sentinel_password_file;
            if let (true, Some(path)) = (sentinels_refused, sentinel_file) {
                message.push_str(&format!(
                    " (the sentinels asked with the password in \
                     sessions.redis_sentinel_password_file: {})",
                    path.display()
                ));
            }
            if retryable && !retry.is_zero() {
                message.push_str(&format!(
                    " (gave up after {attempts} attempts in sessions.redis_connect_retry: {}s)",
                    retry.as_secs()
                ));
            }
            return Err(ConfigError {
                file: config.file.clone(),
                key: "sessions.redis_url".to_string(),
                message,
            });
        }
        let wait = pause.min(give_up - now);
        tracing::warn!(
            error = %error,
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "Redis is not reachable yet; trying again until sessions.redis_connect_retry has passed"
        );
        tokio::time::sleep(wait).await;
        pause = (pause * 2).min(MAX_CONNECT_PAUSE);
        attempts += 1;
    }
}

/// Opens the configured store; the memory store gets its periodic purge, a Redis store with
/// a password file, a sentinel password file, `sessions.redis_tls` or a record key file its
/// renewal on SIGHUP.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let timeouts = store_timeouts(config);
    match &config.sessions.store {
        StoreKind::Memory => {
            let store = Arc::new(MemoryStore::new(timeouts, MemoryLimits::default()));
            // Expired entries are dropped lazily on lookup; this bounds what is never looked
            // up again.
            let purged = store.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    if let Err(e) = purged.purge_expired(unix_now()) {
                        tracing::error!(error = %e, "session purge failed");
                    }
                }
            });
            tracing::info!("session store: memory (this instance only)");
            Ok(store)
        }
        StoreKind::Redis { url, description } => {
            // Redis expires its own keys; there is nothing to purge.
            let (store, access) =
                connect_redis(config, url, config.sessions.redis_connect_retry).await?;
            let sessions = &config.sessions;
            let renewable = [
                sessions.redis_tls.is_some(),
                sessions.redis_password_file.is_some(),
                sessions.redis_sentinel_password_file.is_some(),
                sessions.redis_record_key_file.is_some(),
            ];
            if renewable.contains(&true) {
                let renewal =
                    crate::redis_access::renew_on_hangup(config.clone(), store.clone(), access);
                tokio::spawn(renewal);
            }
            tracing::info!(
                redis = %description,
                namespace = store.namespace(),
                "session store: Redis (shared by every replica of this SP entity ID)"
            );
            Ok(Arc::new(store))
        }
    }
}

fn duration_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[tokio::test]
    async fn what_comes_before_a_request_gives_way_to_a_shutdown() {
        use crate::closing::Closing;
        let closing = Arc::new(Closing::default());
        let open = closing.open();
        let waiting =
            tokio::spawn(async move { until_closing(&open, std::future::pending::<()>()).await });
        tokio::task::yield_now().await;
        // close_all waits for every open connection: it ends only when the wait gave way.
        tokio::time::timeout(Duration::from_secs(10), closing.close_all())
            .await
            .unwrap();
        assert_eq!(waiting.await.unwrap(), None);
        // Asked before it began: at once.
        let open = closing.open();
        assert_eq!(
            until_closing(&open, std::future::pending::<()>()).await,
            None
        );
        // Work that ends first is what counts.
        let running = Arc::new(Closing::default());
        let open = running.open();
        assert_eq!(until_closing(&open, async { 7 }).await, Some(7));
    }

    #[test]
    fn bypassed_answers_get_a_length_and_no_body_for_head() {
        let page = || (StatusCode::UNAUTHORIZED, "sign-in required").into_response();
        let get = finish_response(&Method::GET, page());
        assert_eq!(get.headers()[header::CONTENT_LENGTH], "16");
        let head = finish_response(&Method::HEAD, page());
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "16");
        use axum::body::HttpBody;
        assert!(head.body().is_end_stream(), "no body in an answer to HEAD");
        let connect = finish_response(&Method::CONNECT, (StatusCode::OK, "x").into_response());
        assert!(connect.body().is_end_stream());
    }

    #[test]
    fn only_gateway_prefixes_go_through_the_router() {
        for path in [
            "/saml/login",
            "/saml/acs",
            "/saml/anything",
            "/.well-known/jwks.json",
        ] {
            assert!(for_router(path), "{path}");
        }
        for path in [
            "/",
            "/saml",
            "/samlx/login",
            "/_stcore/stream",
            "/app/.well-known/x",
        ] {
            assert!(!for_router(path), "{path}");
        }
    }
}
