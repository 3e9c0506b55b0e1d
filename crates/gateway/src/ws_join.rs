//! Joins the two sides of a proxied WebSocket once both have switched protocols.
//!
//! What the client sends is read into a buffer, so that its frame headers tell whether the user
//! did anything ([`crate::ws_activity`]), and written on to the upstream. What the upstream
//! sends (Streamlit's page deltas, and its dataframes and charts, which can be large) is read
//! into a smaller buffer while it comes in small pieces; when a read fills that buffer (a large
//! message, or a backlog), the bytes go by `splice(2)` instead: from the upstream socket into a
//! pipe and from the pipe to the client socket, inside the kernel, never through the gateway's
//! memory, for as long as each splice moves enough to be worth its two system calls. The
//! pipe is made when the first large message comes. Measured, this holds 48 KiB of buffers
//! per socket instead of 64; its CPU saving for large messages was within the benchmark
//! machine's noise (docs/performance.md).
//!
//! When one side has finished sending, the other side's sending half is shut down, as
//! `copy_bidirectional` does; the join ends when both directions have finished, or when either
//! fails. Dropping the join closes both sockets.
//!
//! Both upgraded connections are plain TCP sockets unless the gateway serves TLS itself
//! (`server.tls`); its upstreams are `http://`. When either is not a plain socket, or no
//! full-size pipe can be made (the process is out of file descriptors, say), both directions
//! are copied through user space instead.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws_activity::{ActivityMark, TrackedClient};

/// What one read from the client takes and one write to the upstream gives. With tokio's 8 KiB,
/// 64 KiB messages went through at a quarter of the direct rate (docs/performance.md).
const CLIENT_BUFFER: usize = 32 * 1024;

/// Joins `client` and `upstream` until both have finished; `active` is raised whenever the
/// client sends a data frame.
pub async fn join(client: Upgraded, upstream: Upgraded, active: Arc<AtomicBool>) -> io::Result<()> {
    // The server's connections are read through hyper-util's version detection, which wraps
    // them; its own downcast unwraps them.
    let client =
        match hyper_util::server::conn::auto::upgrade::downcast::<TokioIo<TcpStream>>(client) {
            Ok(parts) => parts,
            Err(client) => {
                tracing::debug!("websocket client side is not a TCP socket; copying in user space");
                return copy_in_user_space(
                    TokioIo::new(client),
                    &[],
                    TokioIo::new(upstream),
                    &[],
                    active,
                )
                .await;
            }
        };
    let client_early = client.read_buf;
    let client = client.io.into_inner();
    let upstream = match upstream.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => parts,
        Err(upstream) => {
            tracing::debug!("websocket upstream side is not a TCP socket; copying in user space");
            return copy_in_user_space(client, &client_early, TokioIo::new(upstream), &[], active)
                .await;
        }
    };
    let upstream_early = upstream.read_buf;
    let upstream = upstream.io.into_inner();
    join_sockets(client, &client_early, upstream, &upstream_early, active).await
}

/// Joins two TCP sockets: `client_early` and `upstream_early` are bytes each side sent that were
/// read before the upgrade completed.
async fn join_sockets(
    mut client: TcpStream,
    client_early: &[u8],
    mut upstream: TcpStream,
    upstream_early: &[u8],
    active: Arc<AtomicBool>,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let mark = ActivityMark::new(active);
        splice::join(
            &mut client,
            client_early,
            &mut upstream,
            upstream_early,
            mark,
        )
        .await
    }
    #[cfg(not(target_os = "linux"))]
    copy_in_user_space(client, client_early, upstream, upstream_early, active).await
}

/// Joins both sides through user-space buffers ([`CLIENT_BUFFER`] each way), after passing on
/// what each side sent before the upgrade completed.
async fn copy_in_user_space<C, U>(
    client: C,
    client_early: &[u8],
    mut upstream: U,
    upstream_early: &[u8],
    active: Arc<AtomicBool>,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = TrackedClient::new(client, active);
    client.note_sent(client_early);
    tokio::try_join!(
        upstream.write_all(client_early),
        client.write_all(upstream_early)
    )?;
    tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut upstream,
        CLIENT_BUFFER,
        CLIENT_BUFFER,
    )
    .await
    .map(drop)
}

/// The upstream-to-client direction through a pipe, by `splice(2)`.
#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::pipe::{pipe_with, PipeFlags, SpliceFlags};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
    use tokio::net::tcp::{ReadHalf, WriteHalf};
    use tokio::net::TcpStream;

    use super::CLIENT_BUFFER;
    use crate::ws_activity::ActivityMark;

    /// The most one splice asks to move from the upstream socket: a pipe's default capacity.
    const CHUNK: usize = 64 * 1024;

    /// What one read from the upstream takes while it sends small messages.
    const UPSTREAM_BUFFER: usize = 16 * 1024;

    /// A splice that moves less than this is not worth its two system calls: a pipe has 16
    /// slots and each takes one received segment, so small messages make small splices.
    const WORTH_SPLICING: usize = 16 * 1024;

    /// Reads through the buffer after a small splice before a full read may lead to splicing
    /// again.
    const COPIES_AFTER_SMALL_SPLICE: u32 = 16;

    /// How many slots a pipe needs to be worth splicing through: a pipe's default.
    const PIPE_SLOTS: usize = 16;

    /// How the upstream's next bytes go to the client: read into a buffer and written, or
    /// spliced. Copying comes first; a read that fills the buffer means a large message or a
    /// backlog, so splicing comes next, and lasts while splices move at least
    /// [`WORTH_SPLICING`] (HAProxy's `splice-auto` decides the same way).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Way {
        /// Through the buffer; splicing may be tried after `before_splice` more reads.
        Copy { before_splice: u32 },
        /// Through the pipe.
        Splice,
        /// Through the buffer for good: no pipe could be made.
        CopyOnly,
    }

    impl Way {
        /// The way after a read or splice (in this way) that moved `moved` bytes.
        fn next(self, moved: usize) -> Way {
            match self {
                Way::Copy { before_splice: 0 } if moved >= UPSTREAM_BUFFER => Way::Splice,
                Way::Copy { before_splice } => Way::Copy {
                    before_splice: before_splice.saturating_sub(1),
                },
                Way::Splice if moved < WORTH_SPLICING => Way::Copy {
                    before_splice: COPIES_AFTER_SMALL_SPLICE,
                },
                Way::Splice => Way::Splice,
                Way::CopyOnly => Way::CopyOnly,
            }
        }
    }

    /// Reads what the client sends, marks its data frames, and writes it to the upstream until the
    /// client has finished; then shuts down the upstream's receiving side of the join.
    async fn client_to_upstream(
        client: &mut ReadHalf<'_>,
        client_early: &[u8],
        upstream: &mut WriteHalf<'_>,
        mut mark: ActivityMark,
    ) -> io::Result<()> {
        mark.note(client_early);
        upstream.write_all(client_early).await?;
        let mut buffer = vec![0u8; CLIENT_BUFFER];
        loop {
            let n = client.read(&mut buffer).await?;
            let Some(read) = buffer.get(..n).filter(|read| !read.is_empty()) else {
                // A TCP FIN: nothing more will come.
                return upstream.shutdown().await;
            };
            mark.note(read);
            upstream.write_all(read).await?;
        }
    }

    /// A pipe the upstream's bytes pass through; empty between transfers.
    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        /// A new non-blocking pipe (two file descriptors, closed on drop), made only when a
        /// socket first has a large message to splice (most Streamlit sockets never do).
        /// Refused with fewer than [`PIPE_SLOTS`] slots: once a user's pipes pass
        /// `fs.pipe-user-pages-soft`, Linux gives new ones one or two, and splicing a segment
        /// at a time costs more than the user-space copy.
        fn new() -> io::Result<Pipe> {
            let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            let slots = rustix::pipe::fcntl_getpipe_size(&write)? / rustix::param::page_size();
            if slots < PIPE_SLOTS {
                return Err(io::Error::other(format!(
                    "a new pipe has {slots} slots (fs.pipe-user-pages-soft reached)"
                )));
            }
            Ok(Pipe { read, write })
        }
    }

    /// The bytes the upstream sent, by the way they went to the client.
    #[derive(Debug, Default, Clone, Copy)]
    struct Carried {
        /// Read into the buffer and written.
        copied: u64,
        /// Spliced through the pipe.
        spliced: u64,
    }

    /// Joins the two sockets: client to upstream through user space, upstream to client
    /// through user space or a pipe ([`Way`]).
    ///
    /// tokio's reads and writes spend the task's budget, so a peer that keeps sending cannot
    /// hold the worker thread and starve the other direction.
    pub(super) async fn join(
        client: &mut TcpStream,
        client_early: &[u8],
        upstream: &mut TcpStream,
        upstream_early: &[u8],
        mark: ActivityMark,
    ) -> io::Result<()> {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let ((), carried) = tokio::try_join!(
            client_to_upstream(&mut client_read, client_early, &mut upstream_write, mark),
            upstream_to_client(&mut upstream_read, upstream_early, &mut client_write),
        )?;
        tracing::debug!(
            copied = carried.copied,
            spliced = carried.spliced,
            "websocket: bytes from the upstream"
        );
        Ok(())
    }

    /// Moves what the upstream sends to the client until the upstream has finished; then shuts
    /// down the client's receiving side of the join.
    async fn upstream_to_client(
        upstream: &mut ReadHalf<'_>,
        upstream_early: &[u8],
        client: &mut WriteHalf<'_>,
    ) -> io::Result<Carried> {
        client.write_all(upstream_early).await?;
        let mut carried = Carried::default();
        let mut way = Way::Copy { before_splice: 0 };
        let mut pipe = None;
        let mut buffer = vec![0u8; UPSTREAM_BUFFER];
        loop {
            if way == Way::Splice && pipe.is_none() {
                match Pipe::new() {
                    Ok(made) => pipe = Some(made),
                    Err(e) => {
                        tracing::debug!(error = %e, "no pipe for a websocket; copying in user space");
                        way = Way::CopyOnly;
                    }
                }
            }
            let moved = match (way, &pipe) {
                (Way::Splice, Some(pipe)) => {
                    let n = splice_once(upstream.as_ref(), client.as_ref(), pipe).await?;
                    carried.spliced += n as u64;
                    n
                }
                _ => {
                    let n = upstream.read(&mut buffer).await?;
                    client
                        .write_all(buffer.get(..n).unwrap_or_default())
                        .await?;
                    carried.copied += n as u64;
                    n
                }
            };
            if moved == 0 {
                client.shutdown().await?;
                return Ok(carried);
            }
            way = way.next(moved);
        }
    }

    /// Splices what the upstream has (up to [`CHUNK`]) into the pipe and all of it on to the
    /// client; how much, 0 at the upstream's end.
    async fn splice_once(
        upstream: &TcpStream,
        client: &TcpStream,
        pipe: &Pipe,
    ) -> io::Result<usize> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        // The pipe is empty here, so only the socket can be not ready (EAGAIN), which is what
        // tokio's readiness needs to hear. (Urgent data at the head of the upstream's queue
        // would also read as EAGAIN and stall this direction; upstreams are the operator's own
        // apps, which send none.)
        let filled = upstream
            .async_io(Interest::READABLE, || {
                Ok(rustix::pipe::splice(
                    upstream,
                    None,
                    &pipe.write,
                    None,
                    CHUNK,
                    flags,
                )?)
            })
            .await?;
        // The pipe holds `left` bytes, so only the client socket can be not ready. A client
        // gone away makes this splice raise SIGPIPE, which Rust's runtime ignores before
        // `main`: it fails with EPIPE instead.
        let mut left = filled;
        while left > 0 {
            let moved = client
                .async_io(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(
                        &pipe.read, None, client, None, left, flags,
                    )?)
                })
                .await?;
            if moved == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= moved;
        }
        Ok(filled)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::ws_join::tests::socket_pair;

        #[test]
        fn a_full_read_leads_to_splicing_and_a_small_splice_back_to_copying() {
            let start = Way::Copy { before_splice: 0 };
            assert_eq!(start.next(100), start);
            assert_eq!(start.next(UPSTREAM_BUFFER), Way::Splice);
            assert_eq!(Way::Splice.next(CHUNK), Way::Splice);
            assert_eq!(Way::Splice.next(WORTH_SPLICING), Way::Splice);
            let back = Way::Splice.next(WORTH_SPLICING - 1);
            assert_eq!(
                back,
                Way::Copy {
                    before_splice: COPIES_AFTER_SMALL_SPLICE
                }
            );
            // Full reads right after a small splice copy on until the count is spent.
            let mut way = back;
            for _ in 0..COPIES_AFTER_SMALL_SPLICE {
                way = way.next(UPSTREAM_BUFFER);
                assert!(matches!(way, Way::Copy { .. }));
            }
            assert_eq!(way.next(UPSTREAM_BUFFER), Way::Splice);
            assert_eq!(Way::CopyOnly.next(UPSTREAM_BUFFER), Way::CopyOnly);
        }

        /// Sends 20 messages of 100 bytes from `app`, each read by `browser` before the next.
        async fn small_messages(app: &mut TcpStream, browser: &mut TcpStream) {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for i in 0..20u8 {
                app.write_all(&[i; 100]).await.unwrap();
                let mut got = [0u8; 100];
                browser.read_exact(&mut got).await.unwrap();
                assert_eq!(got, [i; 100]);
            }
        }

        #[tokio::test]
        async fn small_messages_are_copied_a_large_one_spliced_and_small_ones_copied_again() {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut browser, mut client) = socket_pair().await;
            let (mut app, mut upstream) = socket_pair().await;
            let run = tokio::spawn(async move {
                let (mut upstream_read, _) = upstream.split();
                let (_, mut client_write) = client.split();
                upstream_to_client(&mut upstream_read, &[], &mut client_write).await
            });
            small_messages(&mut app, &mut browser).await;
            let large: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
            let mut got = vec![0u8; large.len()];
            let (sent, read) = tokio::join!(app.write_all(&large), browser.read_exact(&mut got));
            sent.unwrap();
            read.unwrap();
            assert!(got == large);
            small_messages(&mut app, &mut browser).await;
            app.shutdown().await.unwrap();
            let mut rest = Vec::new();
            browser.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            let carried = run.await.unwrap().unwrap();
            assert_eq!(carried.copied + carried.spliced, 4_000 + (4 << 20));
            assert!(carried.spliced >= 3 << 20, "{carried:?}");
            // The first messages, the large one's first full read, and at least 19 of the
            // last messages (the first may end a splice) went through the buffer.
            assert!(
                carried.copied >= 2_000 + UPSTREAM_BUFFER as u64 + 1_900,
                "{carried:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Two connected loopback sockets: (the end a test holds, the end the join holds).
    pub(super) async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (near, far) = tokio::join!(TcpStream::connect(address), listener.accept());
        (near.unwrap(), far.unwrap().0)
    }

    /// A masked client frame with `opcode` and `len` payload bytes of `fill`.
    fn frame(opcode: u8, len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![0x80 | opcode, 0x80 | 127];
        f.extend_from_slice(&(len as u64).to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(fill, len));
        f
    }

    /// Bytes that repeat no shorter pattern, so that a reordered or lost piece shows.
    fn numbered(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
            .collect()
    }

    /// Starts a join, by splice or in user space, of `client` and `upstream` with early bytes.
    fn start(
        spliced: bool,
        (client, client_early): (TcpStream, Vec<u8>),
        (upstream, upstream_early): (TcpStream, Vec<u8>),
        active: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<io::Result<()>> {
        tokio::spawn(async move {
            if spliced {
                join_sockets(client, &client_early, upstream, &upstream_early, active).await
            } else {
                copy_in_user_space(client, &client_early, upstream, &upstream_early, active).await
            }
        })
    }

    /// Runs the join with early bytes on both sides, the client's the first bytes of a pong
    /// header; checks both directions byte for byte, the half-closes, and the activity mark.
    async fn carries_everything_in_order(spliced: bool) {
        let (mut browser, client) = socket_pair().await;
        let (mut app, upstream) = socket_pair().await;
        let active = Arc::new(AtomicBool::new(false));
        // A pong whose payload would read as text frame headers if the parser lost its place
        // (had it missed the early bytes, say).
        let pong = frame(0xA, 300, 0x81);
        let up_rest = [frame(0x2, 3 << 20, 0x82), frame(0xA, 10, 0)].concat();
        let down = numbered(5 << 20);
        let joined = start(
            spliced,
            (client, pong[..3].to_vec()),
            (upstream, down[..100].to_vec()),
            active.clone(),
        );
        browser.write_all(&pong[3..]).await.unwrap();
        // Nothing but a pong yet: no activity.
        let mut first = vec![0; pong.len()];
        app.read_exact(&mut first).await.unwrap();
        assert_eq!(first, pong);
        assert!(!active.load(Ordering::Relaxed));

        let (mut app_read, mut app_write) = app.split();
        let (mut browser_read, mut browser_write) = browser.split();
        let app_side = async {
            app_write.write_all(&down[100..]).await.unwrap();
            app_write.shutdown().await.unwrap();
            let mut got = Vec::new();
            app_read.read_to_end(&mut got).await.unwrap();
            got
        };
        let browser_side = async {
            browser_write.write_all(&up_rest).await.unwrap();
            browser_write.shutdown().await.unwrap();
            let mut got = Vec::new();
            browser_read.read_to_end(&mut got).await.unwrap();
            got
        };
        let (app_got, browser_got) = tokio::join!(app_side, browser_side);
        assert!(app_got == up_rest, "client to upstream, spliced: {spliced}");
        assert!(
            browser_got == down,
            "upstream to client, spliced: {spliced}"
        );
        assert!(active.load(Ordering::Relaxed));
        joined.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn splice_join_carries_both_directions_in_order_and_passes_half_closes() {
        carries_everything_in_order(true).await;
    }

    #[tokio::test]
    async fn user_space_join_carries_both_directions_in_order_and_passes_half_closes() {
        carries_everything_in_order(false).await;
    }

    #[tokio::test]
    async fn small_and_large_upstream_writes_arrive_whole_whichever_way_they_go() {
        let (browser, client) = socket_pair().await;
        let (mut app, upstream) = socket_pair().await;
        let active = Arc::new(AtomicBool::new(false));
        let joined = start(true, (client, Vec::new()), (upstream, Vec::new()), active);
        let data = numbered(6 << 20);
        // Small pieces, one large, small ones again: the join copies, splices, then copies.
        let (head, rest) = data.split_at(300_000);
        let (large, tail) = rest.split_at(5 << 20);
        let app_side = async {
            for piece in head.chunks(100) {
                app.write_all(piece).await.unwrap();
            }
            app.write_all(large).await.unwrap();
            for piece in tail.chunks(100) {
                app.write_all(piece).await.unwrap();
            }
            app.shutdown().await.unwrap();
        };
        let (mut browser_read, mut browser_write) = browser.into_split();
        browser_write.shutdown().await.unwrap();
        let browser_side = async {
            let mut got = Vec::new();
            browser_read.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(app_side, browser_side);
        assert!(got == data, "{} of {} bytes", got.len(), data.len());
        joined.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_data_frame_among_the_early_bytes_is_activity() {
        for spliced in [true, false] {
            let (_browser, client) = socket_pair().await;
            let (mut app, upstream) = socket_pair().await;
            let active = Arc::new(AtomicBool::new(false));
            let text = frame(0x1, 5, b'a');
            let _joined = start(
                spliced,
                (client, text.clone()),
                (upstream, Vec::new()),
                active.clone(),
            );
            let mut got = vec![0; text.len()];
            app.read_exact(&mut got).await.unwrap();
            assert_eq!(got, text);
            assert!(active.load(Ordering::Relaxed), "spliced: {spliced}");
        }
    }

    #[tokio::test]
    async fn a_client_that_closes_is_passed_on_and_the_join_ends_when_the_upstream_closes() {
        let (browser, client) = socket_pair().await;
        let (mut app, upstream) = socket_pair().await;
        let joined = tokio::spawn(join_sockets(
            client,
            &[],
            upstream,
            &[],
            Arc::new(AtomicBool::new(false)),
        ));
        drop(browser);
        // The app hears the end of the client's stream ...
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert!(!joined.is_finished());
        // ... and once it closes too, nothing is left to carry.
        drop(app);
        joined.await.unwrap().unwrap();
    }
}
