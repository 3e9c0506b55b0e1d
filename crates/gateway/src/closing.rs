//! The shutdown of the public listener's client connections. When the server stops
//! accepting, [`Closing::close_all`] asks every connection to close once its requests under
//! way are done (an idle keep-alive connection closes at once), then waits until the last has
//! ended; the server gives that `server::SHUTDOWN_DRAIN` at most. Each connection is counted
//! from its accept ([`Closing::open`]) to the end of its driver, `client_timeout::run`, which
//! reads the signal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// The shutdown of a server's client connections: asks each to close once its requests under
/// way are done, and tells when the last has ended. Each connection is counted from the moment
/// it is accepted ([`Closing::open`]) to the end of its driver, [`crate::client_timeout::run`].
#[derive(Debug, Default)]
pub struct Closing {
    /// Set once, when the server stops accepting: every connection is to close.
    asked: AtomicBool,
    /// Wakes the connections, idle ones included, when `asked` is set.
    ask: Notify,
    /// Connections accepted and not yet ended.
    open: AtomicUsize,
    /// Woken when the last open connection ends.
    last_ended: Notify,
}

/// One client connection counted by its [`Closing`] until this is dropped.
#[derive(Debug)]
pub struct Open {
    closing: Arc<Closing>,
}

impl Closing {
    /// Counts a connection just accepted as open, until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open {
            closing: self.clone(),
        }
    }

    /// Asks every connection to close once its requests under way are done, and waits until
    /// every open connection has ended.
    pub async fn close_all(&self) {
        self.asked.store(true, Ordering::Release);
        self.ask.notify_waiters();
        loop {
            let last_ended = self.last_ended.notified();
            let mut last_ended = std::pin::pin!(last_ended);
            // Registered before the count is read, so that an end in between still wakes it.
            last_ended.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            last_ended.await;
        }
    }

    /// True once the connections have been asked to close.
    pub fn is_asked(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }

    /// A future that is woken when the connections are asked to close (after it has been
    /// polled once; [`Closing::is_asked`] tells what happened before).
    pub fn asked(&self) -> Notified<'_> {
        self.ask.notified()
    }
}

impl Open {
    /// The [`Closing`] that counts this connection.
    pub fn closing(&self) -> &Closing {
        &self.closing
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if self.closing.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.closing.last_ended.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_timeout::{run, Activity, Ended};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    use std::time::Duration;
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    /// The client timeout of these tests' connections.
    const TIMEOUT: Duration = Duration::from_secs(60);

    /// Fails, rather than hangs, when a wake-up is lost: `future` must end within ten
    /// timeouts of the paused clock.
    async fn in_time<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(TIMEOUT * 10, future)
            .await
            .expect("still waiting after ten timeouts: a wake-up was lost")
    }

    /// A connection that ends `linger` after it is asked to close (never before), and the
    /// sender that asks it.
    fn closable(linger: Duration) -> (impl Future<Output = ()>, oneshot::Sender<()>) {
        let (ask, asked) = oneshot::channel::<()>();
        let connection = async move {
            if asked.await.is_ok() {
                tokio::time::sleep(linger).await;
            }
        };
        (connection, ask)
    }

    /// Runs a [`closable`] connection under `closing`, spawned as the server does; how long
    /// it ran and whether it timed out.
    fn spawn_closable(
        closing: &Arc<Closing>,
        linger: Duration,
    ) -> tokio::task::JoinHandle<(Duration, bool)> {
        let (connection, ask) = closable(linger);
        let open = closing.open();
        tokio::spawn(async move {
            let started = Instant::now();
            let activity = Activity::default();
            let close = move |_: Pin<&mut _>| {
                let _ = ask.send(());
            };
            let ended = in_time(run(connection, &activity, TIMEOUT, open, close)).await;
            (started.elapsed(), matches!(ended, Ended::TimedOut))
        })
    }

    /// Polls `future` once: whether it is ready.
    async fn ready_now<F: Future + Unpin>(future: &mut F) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn closing_with_no_connection_open_returns_at_once() {
        let closing = Arc::new(Closing::default());
        let started = Instant::now();
        in_time(closing.close_all()).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_wakes_idle_connections_and_waits_for_the_slowest() {
        let closing = Arc::new(Closing::default());
        let quick = spawn_closable(&closing, Duration::ZERO);
        let slow = spawn_closable(&closing, Duration::from_secs(20));
        // Both idle (polled, waiting) well inside the timeout when the shutdown comes.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let started = Instant::now();
        in_time(closing.close_all()).await;
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        let (quick_ran, quick_timed_out) = quick.await.unwrap();
        let (slow_ran, slow_timed_out) = slow.await.unwrap();
        assert_eq!(quick_ran, Duration::from_secs(5));
        assert_eq!(slow_ran, Duration::from_secs(25));
        assert!(!quick_timed_out && !slow_timed_out);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_first_polled_after_the_shutdown_closes_at_once() {
        let closing = Arc::new(Closing::default());
        let (connection, ask) = closable(Duration::ZERO);
        // Accepted (counted) before the shutdown, polled only after it has been asked.
        let open = closing.open();
        let mut close_all = Box::pin(closing.close_all());
        assert!(!ready_now(&mut close_all).await);
        let activity = Activity::default();
        let close = move |_: Pin<&mut _>| {
            let _ = ask.send(());
        };
        let started = Instant::now();
        let ended = in_time(run(connection, &activity, TIMEOUT, open, close)).await;
        assert!(matches!(ended, Ended::Finished(())));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(ready_now(&mut close_all).await);
    }
}
