//! Closing client connections that have gone quiet: the defence against slow-header clients
//! (slowloris) and against idle connections piling up until file descriptors run out.
//!
//! A connection is closed when, for `server.client_timeout`, no request head has been
//! completed on it, nothing has been written to it, and no request of it is under way (its
//! response head not yet given). That covers a request head sent a byte at a time, a
//! keep-alive connection left idle, a connection that never sends anything, and a client that
//! stops reading a response; it never cuts a request whose upstream takes its time, nor a
//! response that keeps flowing. A slow request *body* is not cut either: its request is under
//! way. A WebSocket leaves this watch when it is upgraded (its own activity rules apply).
//!
//! The check costs no timer per request: each connection has one [`Activity`] (a few
//! counters, bumped with relaxed atomics) and one interval that looks at them four times per
//! timeout. hyper's own `header_read_timeout` arms a timer for every request head, which cost
//! 6 % more instructions per proxied request (docs/performance.md).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What one client connection has done, as counters only ever going up.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests whose head has been read.
    started: AtomicU64,
    /// Requests whose response head has been given to the connection.
    answered: AtomicU64,
    /// Writes to the client that moved bytes.
    writes: AtomicU64,
}

impl Activity {
    /// A request head has been read: a request is under way.
    pub fn request_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// The response head of a request has been given to the connection.
    pub fn request_answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, and whether a request is under way.
    fn snapshot(&self) -> ([u64; 3], bool) {
        let started = self.started.load(Ordering::Relaxed);
        let answered = self.answered.load(Ordering::Relaxed);
        let writes = self.writes.load(Ordering::Relaxed);
        ([started, answered, writes], started != answered)
    }
}

/// A client's stream that counts its writes in an [`Activity`].
#[derive(Debug)]
pub struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    /// `stream`, counted in `activity`.
    pub fn new(stream: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { stream, activity }
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// How a watched connection ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// The connection's own end, with its result.
    Finished(T),
    /// Quiet for the whole timeout: dropped, which closes it.
    TimedOut,
}

/// Runs `connection` until it ends, or until `activity` has stayed the same, with no request
/// under way, for `timeout`.
pub async fn run<F: Future>(
    connection: F,
    activity: &Activity,
    timeout: Duration,
) -> Ended<F::Output> {
    let mut connection = std::pin::pin!(connection);
    let period = timeout / 4;
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, _) = activity.snapshot();
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            // The connection first: it is what nearly every wake-up is for.
            biased;
            output = &mut connection => return Ended::Finished(output),
            _ = tick.tick() => {
                let (now, under_way) = activity.snapshot();
                if now != seen || under_way {
                    seen = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= timeout {
                    return Ended::TimedOut;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_closed_after_the_timeout() {
        let activity = Activity::default();
        let started = Instant::now();
        let ended = run(
            std::future::pending::<()>(),
            &activity,
            Duration::from_secs(60),
        )
        .await;
        assert!(matches!(ended, Ended::TimedOut));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(60) && took <= Duration::from_secs(75),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_under_way_keeps_its_connection() {
        let activity = Activity::default();
        activity.request_started();
        let connection = tokio::time::sleep(Duration::from_secs(600));
        let ended = run(connection, &activity, Duration::from_secs(60)).await;
        assert!(matches!(ended, Ended::Finished(())));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_puts_the_timeout_off() {
        let activity = Arc::new(Activity::default());
        let busy = activity.clone();
        // A request every 50 s, each answered at once, for 500 s: never 60 s quiet.
        let connection = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                busy.request_started();
                busy.request_answered();
            }
        };
        let ended = run(connection, &activity, Duration::from_secs(60)).await;
        assert!(matches!(ended, Ended::Finished(())));
    }

    #[tokio::test]
    async fn writes_that_move_bytes_are_counted() {
        let activity = Arc::new(Activity::default());
        let (client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, activity.clone());
        watched.write_all(b"hello").await.unwrap();
        watched.write_all(b"").await.unwrap();
        let mut client = client;
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(activity.snapshot(), ([0, 0, 1], false));
    }
}
