//! Closing client connections that have gone quiet: the defence against slow-header clients
//! (slowloris), clients that stop reading, and idle connections piling up until file
//! descriptors run out.
//!
//! Each request of a connection is tracked from its head to the end of its response body: an
//! [`UnderWay`] guard, carried by the response body ([`Tracked`]). Against
//! `server.client_timeout`:
//!
//! - while a request waits for its response head, it is never closed (an upstream that takes
//!   its time, or one that stops reading an upload), unless the gateway is waiting for a
//!   piece of a request body from the client;
//! - otherwise it is closed when, for the whole timeout, no request has started or ended, no
//!   piece of a request body has come in and no response has sent a piece of its body: a
//!   request head sent a byte at a time, a request body that stops coming (nginx's
//!   `client_body_timeout`; a slow upload that keeps moving is not cut), an idle
//!   keep-alive connection, a connection that never sends anything, a client that stops
//!   reading (or an HTTP/2 client that leaves its window shut), an upstream that stops
//!   sending. What the server writes on its own does not count: an HTTP/2 client could
//!   otherwise keep the connection open with PINGs, each answered.
//!
//! Body progress is counted where the body is polled ([`Tracked`] for responses, [`Upload`]
//! for requests): hyper polls the next piece only when the one before has gone out (or into
//! its bounded buffer), so a client that does not read stops the count. A request body is
//! the client's turn only while it is polled and has nothing: a body not yet asked for (the
//! upstream still connecting) or no longer asked for (an upstream that stops reading) is not.
//! On HTTP/2 the rule holds for the connection, not per stream: a stream whose upload has
//! stalled for the whole timeout closes the connection with its other streams.
//!
//! A WebSocket leaves the watch when it is upgraded: the tunnel then runs until either side
//! closes or the session ends (`session_watch`). A connection is closed by dropping it, without
//! an HTTP/2 GOAWAY; that happens only when no request has started for the whole timeout, or
//! when a response has stalled for it.
//!
//! The check costs no timer per request: each connection has one [`Activity`] (seven
//! counters, bumped with relaxed atomics; a request without a body touches four) and one
//! timer that looks at them four times per timeout. hyper's own `header_read_timeout` arms
//! a timer for every request head, which cost 6 % more instructions per proxied request
//! (docs/performance.md).
//!
//! The same driver ([`run`]) closes connections at shutdown:
//! [`crate::closing::Closing::close_all`] asks each to finish its requests under way and
//! close (idle keep-alive connections at once), and waits until the last has ended. Per
//! wake-up of a connection it reads an atomic flag and the timer's state, nothing more:
//! hyper-util's graceful-shutdown wrapper, with tokio's `select!` over the connection and an
//! interval, cost about 1,000 instructions per proxied request more (docs/performance.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::closing::Open;

/// What one client connection has done, as counters only ever going up.
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests whose head has been read.
    started: AtomicU64,
    /// Requests whose response head is ready, or that were given up before.
    answered: AtomicU64,
    /// Requests whose response has been sent to its end, or given up.
    finished: AtomicU64,
    /// Pieces of response bodies given to the connection.
    sent: AtomicU64,
    /// Times a request body was asked for a piece it did not have: the client's turn.
    waits: AtomicU64,
    /// Of those, the ones that are over (a piece came, the body ended or was dropped).
    waits_over: AtomicU64,
    /// Pieces of request bodies received.
    received: AtomicU64,
}

/// The counters of an [`Activity`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    started: u64,
    answered: u64,
    finished: u64,
    sent: u64,
    waits: u64,
    waits_over: u64,
    received: u64,
}

impl Activity {
    /// A request head has been read: the request is under way until the returned guard is
    /// dropped (with the response body it is moved into, see [`Tracked`]).
    pub fn request_started(self: &Arc<Self>) -> UnderWay {
        self.started.fetch_add(1, Ordering::Relaxed);
        UnderWay {
            activity: self.clone(),
            answered: false,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            started: self.started.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            waits_over: self.waits_over.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// One request under way on a client connection. Dropped when its response has been sent
/// to its end, or when the request is given up (the client went away, an HTTP/2 stream was
/// reset): either way the connection no longer waits for it.
#[derive(Debug)]
pub struct UnderWay {
    activity: Arc<Activity>,
    answered: bool,
}

impl UnderWay {
    /// The response head is ready: what follows is its body going out.
    pub fn answered(mut self) -> UnderWay {
        self.activity.answered.fetch_add(1, Ordering::Relaxed);
        self.answered = true;
        self
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        if !self.answered {
            self.activity.answered.fetch_add(1, Ordering::Relaxed);
        }
        self.activity.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a [`Watched`] body reports to: told of each piece the body yields and of each poll
/// that found none, and dropped at the body's end.
pub trait Watcher {
    /// The body has yielded a piece.
    fn piece(&mut self);

    /// The body was asked for a piece and has none yet.
    fn pending(&mut self) {}
}

/// A body that tells its [`Watcher`] what happens to it, and drops it at the body's end (its
/// end of stream, a failure, or the body's own drop). It holds the body as it is (nothing
/// allocated).
#[derive(Debug)]
pub struct Watched<B, W> {
    body: B,
    watcher: Option<W>,
}

/// A response body that keeps its request [`UnderWay`] until it has been sent to its end,
/// has failed, or is dropped, and counts its pieces as the connection's activity.
pub type Tracked<B> = Watched<B, UnderWay>;

/// A request body that counts its pieces as the connection's activity, and the times the
/// gateway waits for one ([`Receiving`]). A request without a body needs none.
pub type Upload<B> = Watched<B, Receiving>;

impl<B> Tracked<B> {
    /// `body`, the response of the request `under_way`.
    pub fn new(body: B, under_way: UnderWay) -> Tracked<B> {
        Watched {
            body,
            watcher: Some(under_way),
        }
    }
}

impl<B> Upload<B> {
    /// `body`, a request body that has yet to come in on the connection of `activity`.
    pub fn new(body: B, activity: &Arc<Activity>) -> Upload<B> {
        Watched {
            body,
            watcher: Some(Receiving {
                activity: activity.clone(),
                waiting: false,
            }),
        }
    }
}

impl Watcher for UnderWay {
    fn piece(&mut self) {
        self.activity.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request body coming in on its connection: its pieces, and whether the gateway is
/// waiting for the next one.
#[derive(Debug)]
pub struct Receiving {
    activity: Arc<Activity>,
    /// Asked for a piece and found none: a wait counted in `waits`, not yet over.
    waiting: bool,
}

impl Receiving {
    fn wait_over(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.activity.waits_over.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Watcher for Receiving {
    fn piece(&mut self) {
        self.wait_over();
        self.activity.received.fetch_add(1, Ordering::Relaxed);
    }

    fn pending(&mut self) {
        if !self.waiting {
            self.waiting = true;
            self.activity.waits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.wait_over();
    }
}

impl<B: Body + Unpin, W: Watcher + Unpin> Body for Watched<B, W> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(watcher) = &mut self.watcher {
                    watcher.piece();
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.watcher = None,
            Poll::Pending => {
                if let Some(watcher) = &mut self.watcher {
                    watcher.pending();
                }
            }
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

/// How a watched connection ended.
#[derive(Debug)]
pub enum Ended<T> {
    /// The connection's own end, with its result.
    Finished(T),
    /// Quiet for the whole timeout: dropped, which closes it.
    TimedOut,
}

/// True when a connection that went from `before` to `now` has shown no sign of life: no
/// request started or ended and no body moved, and no request waits for its response head
/// (the upstream's turn) unless the gateway is waiting for a piece of a request body (the
/// client's turn).
fn quiet(before: Snapshot, now: Snapshot) -> bool {
    let upstream_turn = now.answered != now.started && now.waits == now.waits_over;
    now == before && !upstream_turn
}

/// Runs `connection` (counted by `open`) until it ends, or until `activity` has been quiet
/// (see `quiet`) for `timeout`. When its [`crate::closing::Closing`] is asked, `close` is
/// called once on the connection (hyper's graceful shutdown: no new request, then the end).
///
/// This is polled on every wake-up of a connection, so it costs next to nothing per poll: the
/// shutdown signal and the check timer each register the task's waker once (the timer again
/// after each check), and between times only an atomic flag and the timer's state are read.
/// That holds only because a task's waker does not change from one poll to the next: await
/// it directly in the task that runs the connection, never under a combinator that gives
/// each future a waker of its own (`FuturesUnordered` and the like).
pub async fn run<F: Future>(
    connection: F,
    activity: &Activity,
    timeout: Duration,
    open: Open,
    close: impl FnOnce(Pin<&mut F>),
) -> Ended<F::Output> {
    let closing = open.closing();
    let mut connection = std::pin::pin!(connection);
    let mut close = Some(close);
    let asked = closing.asked();
    let mut asked = std::pin::pin!(asked);
    let period = timeout / 4;
    let mut tick = std::pin::pin!(tokio::time::sleep(period));
    // Whether the timer holds this task's waker for its current deadline.
    let mut tick_armed = false;
    let mut since = activity.snapshot();
    let mut quiet_since = Instant::now();
    let mut first = true;
    std::future::poll_fn(move |cx| {
        if close.is_some() {
            // The first poll registers for the signal; the flag tells after that.
            let signalled = first && asked.as_mut().poll(cx).is_ready();
            if signalled || closing.is_asked() {
                if let Some(close) = close.take() {
                    close(connection.as_mut());
                }
            }
        }
        first = false;
        // The connection first: it is what nearly every wake-up is for.
        if let Poll::Ready(output) = connection.as_mut().poll(cx) {
            return Poll::Ready(Ended::Finished(output));
        }
        while !tick_armed || tick.is_elapsed() {
            if tick.is_elapsed() {
                let now = activity.snapshot();
                if !quiet(since, now) {
                    since = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= timeout {
                    return Poll::Ready(Ended::TimedOut);
                }
                tick.as_mut().reset(Instant::now() + period);
            }
            if tick.as_mut().poll(cx).is_pending() {
                // Out of tokio's cooperative budget, the timer returns before it takes the
                // waker: then it is polled again on the next wake-up (which the budget's end
                // arranges).
                tick_armed = tokio::task::coop::has_budget_remaining();
                break;
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closing::Closing;
    use http_body_util::BodyExt;
    use hyper::body::Bytes;
    use std::convert::Infallible;

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// Runs `connection` watched by `activity`; how long it took and whether it timed out.
    async fn watch<F: Future<Output = ()>>(connection: F, activity: &Activity) -> (Duration, bool) {
        let started = Instant::now();
        let open = Arc::new(Closing::default()).open();
        let ended = run(connection, activity, TIMEOUT, open, |_| {});
        // Fails, rather than hangs, when a wake-up is lost (the clock is paused).
        let ended = tokio::time::timeout(TIMEOUT * 20, ended)
            .await
            .expect("still running after twenty timeouts: a wake-up was lost");
        (started.elapsed(), matches!(ended, Ended::TimedOut))
    }

    /// Reads `body` to its end on a connection watched by `activity`; whether it timed out.
    async fn read_watched<B: Body<Error = Infallible>>(body: B, activity: &Activity) -> bool {
        let read = async move {
            body.collect().await.unwrap();
        };
        watch(read, activity).await.1
    }

    /// A connection that has `count` requests, one every 50 s, each answered at once.
    async fn requests_every_50_s(activity: Arc<Activity>, count: usize) {
        for _ in 0..count {
            tokio::time::sleep(Duration::from_secs(50)).await;
            drop(activity.request_started().answered());
        }
    }

    /// A body of `left` one-byte pieces, one every `every`.
    struct Trickle {
        left: usize,
        every: Duration,
        sleep: Pin<Box<tokio::time::Sleep>>,
    }

    fn trickle(left: usize, every: Duration) -> Trickle {
        let sleep = Box::pin(tokio::time::sleep(every));
        Trickle { left, every, sleep }
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.left -= 1;
            let next = Instant::now() + self.every;
            self.sleep.as_mut().reset(next);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_closed_after_the_timeout() {
        let activity = Activity::default();
        let (took, timed_out) = watch(std::future::pending(), &activity).await;
        assert!(timed_out);
        assert!(took >= TIMEOUT && took <= TIMEOUT * 5 / 4, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_its_answer_keeps_its_connection() {
        let activity = Arc::new(Activity::default());
        let under_way = activity.request_started();
        let (_, timed_out) = watch(tokio::time::sleep(TIMEOUT * 10), &activity).await;
        assert!(!timed_out);
        drop(under_way);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_put_the_timeout_off() {
        let activity = Arc::new(Activity::default());
        // A request every 50 s, each answered at once, for 500 s: never 60 s without one.
        let connection = requests_every_50_s(activity.clone(), 10);
        let (_, timed_out) = watch(connection, &activity).await;
        assert!(!timed_out);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_time_counts_from_the_end_of_the_last_response() {
        let activity = Arc::new(Activity::default());
        // A response that ends just before a check: the idle time starts at its end.
        let under_way = activity.request_started().answered();
        let connection = async move {
            tokio::time::sleep(Duration::from_secs(14)).await;
            drop(under_way);
            // The connection ends 59 s after the response did: never a whole timeout quiet.
            tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
        };
        let (_, timed_out) = watch(connection, &activity).await;
        assert!(
            !timed_out,
            "closed before the timeout had passed since the response ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_quiet_after_its_requests_is_closed_a_timeout_after_the_last() {
        let activity = Arc::new(Activity::default());
        // A request every 50 s for 200 s, then nothing: only the check timer wakes it.
        let requests = requests_every_50_s(activity.clone(), 4);
        let connection = async move {
            requests.await;
            std::future::pending::<()>().await;
        };
        let (took, timed_out) = watch(connection, &activity).await;
        let last = Duration::from_secs(200);
        assert!(timed_out);
        assert!(
            took >= last + TIMEOUT && took <= last + TIMEOUT * 5 / 4,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_going_out_keeps_its_connection_and_a_stalled_one_does_not() {
        let activity = Arc::new(Activity::default());
        // A piece every 30 s for 300 s, read as it comes.
        let body = Tracked::new(
            trickle(10, Duration::from_secs(30)),
            activity.request_started().answered(),
        );
        assert!(!read_watched(body, &activity).await);
        // A body nobody reads (a client that stops reading): nothing moves.
        let stalled = Tracked::new(
            trickle(10, Duration::from_secs(1)),
            activity.request_started().answered(),
        );
        let (took, timed_out) = watch(std::future::pending(), &activity).await;
        assert!(timed_out && took <= TIMEOUT * 5 / 4, "{took:?}");
        drop(stalled);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_keeps_coming_keeps_its_connection_and_a_stalled_one_does_not() {
        let activity = Arc::new(Activity::default());
        // A piece every 30 s for 300 s, its request waiting for its answer all along.
        let under_way = activity.request_started();
        let upload = Upload::new(trickle(10, Duration::from_secs(30)), &activity);
        assert!(!read_watched(upload, &activity).await);
        // Received to its end: waiting for the answer is the upstream's turn, never cut.
        let (_, timed_out) = watch(tokio::time::sleep(TIMEOUT * 10), &activity).await;
        assert!(!timed_out);
        // A body nobody has asked for yet (the upstream still connecting): not the client's
        // turn either.
        let unasked = Upload::new(trickle(10, Duration::from_secs(1)), &activity);
        let (_, timed_out) = watch(tokio::time::sleep(TIMEOUT * 10), &activity).await;
        assert!(!timed_out);
        // A body asked for a piece that does not come (slowloris on the body): cut.
        let mut stalled = Upload::new(trickle(1, TIMEOUT * 1000), &activity);
        let (took, timed_out) = watch(
            async move {
                stalled.frame().await;
            },
            &activity,
        )
        .await;
        assert!(timed_out && took <= TIMEOUT * 5 / 4, "{took:?}");
        // Dropped with the connection, it is no longer waited for.
        let (_, timed_out) = watch(tokio::time::sleep(TIMEOUT * 10), &activity).await;
        assert!(!timed_out);
        drop((unasked, under_way));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_counts_its_pieces_and_the_waits_for_them() {
        let activity = Arc::new(Activity::default());
        let counts = |a: &Activity| {
            let now = a.snapshot();
            (now.waits, now.waits_over, now.received)
        };
        let mut upload = Upload::new(trickle(3, Duration::from_secs(1)), &activity);
        assert_eq!(counts(&activity), (0, 0, 0), "nothing asked yet");
        // Asked, nothing yet (a wait), then the piece comes.
        assert!(upload.frame().await.is_some());
        assert_eq!(counts(&activity), (1, 1, 1));
        assert!(upload.frame().await.is_some());
        assert_eq!(counts(&activity), (2, 2, 2));
        // A wait given up before the piece came (the request dropped mid-body).
        let asked = tokio::time::timeout(Duration::from_millis(1), upload.frame()).await;
        assert!(asked.is_err());
        assert_eq!(counts(&activity), (3, 2, 2));
        drop(upload);
        assert_eq!(counts(&activity), (3, 3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_given_up_before_its_answer_is_no_longer_under_way() {
        let activity = Arc::new(Activity::default());
        // A service future dropped before it answered (an HTTP/2 stream reset).
        drop(activity.request_started());
        let (_, timed_out) = watch(std::future::pending(), &activity).await;
        assert!(timed_out);
        assert_eq!(activity.snapshot().answered, 1);
        assert_eq!(activity.snapshot().finished, 1);
    }

    #[tokio::test]
    async fn a_tracked_body_counts_its_pieces_and_ends_its_request() {
        let activity = Arc::new(Activity::default());
        let mut body = Tracked::new(
            http_body_util::Full::new(Bytes::from_static(b"ok")),
            activity.request_started().answered(),
        );
        assert!(body.frame().await.is_some());
        assert_eq!(activity.snapshot().sent, 1);
        // Under way until the body says it has ended (hyper's HTTP/2 may still hold the
        // last piece, waiting for window), not at its last piece.
        assert_eq!(activity.snapshot().finished, 0);
        assert!(body.frame().await.is_none());
        assert_eq!(activity.snapshot().finished, 1);
        drop(body);
        assert_eq!(activity.snapshot().finished, 1);
        let body = Tracked::new(
            http_body_util::Full::new(Bytes::from_static(b"ok")),
            activity.request_started().answered(),
        );
        assert_eq!(activity.snapshot().finished, 1);
        drop(body);
        assert_eq!(activity.snapshot().finished, 2);
    }
}
