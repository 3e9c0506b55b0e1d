//! Tells whether the user did anything over a proxied WebSocket.
//!
//! Once a Streamlit page has loaded, clicks and widget changes travel as WebSocket messages, not
//! HTTP requests; they must count as use of the session, or an active user would be signed out
//! at the idle timeout. Browsers also answer the server's pings with pongs on their own, and
//! those must not count, or an open tab would keep a session alive for ever. So the bytes the
//! client sends are read as WebSocket frames (RFC 6455 5.2: every client frame is masked, its
//! header says its opcode and length) and only data frames (text, binary, continuation) mark
//! activity. Payloads are skipped, never read; compression (permessage-deflate) does not change
//! the framing.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a parse stands in the client's frame stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reading the first `need` header bytes of a frame (2, then more for long lengths).
    Header { have: usize },
    /// Skipping this many payload bytes.
    Payload(u64),
}

/// Reads client frame headers out of a byte stream, in whatever pieces it arrives.
#[derive(Debug)]
pub struct ClientFrames {
    step: Step,
    header: [u8; MAX_HEADER],
}

impl Default for ClientFrames {
    fn default() -> Self {
        ClientFrames {
            step: Step::Header { have: 0 },
            header: [0; MAX_HEADER],
        }
    }
}

impl ClientFrames {
    /// Feeds the next bytes the client sent; true when a data frame began in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut data = false;
        while !bytes.is_empty() {
            match self.step {
                Step::Payload(left) => {
                    let skip = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[skip..];
                    self.step = next_after(left - skip as u64);
                }
                // The common case: a whole header in view, read where it lies (its payload
                // is skipped by the arm above).
                Step::Header { have: 0 } if bytes.len() >= MAX_HEADER => {
                    let (header, after) = bytes.split_at(header_len(bytes));
                    data |= is_data(header[0]);
                    bytes = after;
                    self.step = next_after(payload_len(header));
                }
                Step::Header { have } => {
                    let need = header_len(&self.header[..have]);
                    let take = (need - have).min(bytes.len());
                    self.header[have..have + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let have = have + take;
                    if have < header_len(&self.header[..have]) {
                        self.step = Step::Header { have };
                        continue;
                    }
                    data |= is_data(self.header[0]);
                    self.step = next_after(payload_len(&self.header[..have]));
                }
            }
        }
        data
    }
}

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Whether a frame whose header starts with `first` carries the user's data: continuation,
/// text and binary frames do; close, ping and pong do not.
fn is_data(first: u8) -> bool {
    matches!(first & 0x0f, 0x0..=0x2)
}

fn next_after(payload_left: u64) -> Step {
    if payload_left == 0 {
        Step::Header { have: 0 }
    } else {
        Step::Payload(payload_left)
    }
}

/// The length of a frame header whose first `have` bytes are `start` (as far as they tell).
fn header_len(start: &[u8]) -> usize {
    let Some(&second) = start.get(1) else {
        return 2;
    };
    let masked = if second & 0x80 != 0 { 4 } else { 0 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + masked
}

fn payload_len(header: &[u8]) -> u64 {
    let len7 = header.get(1).map_or(0, |b| b & 0x7f);
    match len7 {
        126 => header
            .get(2..4)
            .map_or(0, |b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => header.get(2..10).map_or(0, |b| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(b);
            u64::from_be_bytes(eight)
        }),
        n => u64::from(n),
    }
}

/// Watches the bytes a client sends and raises a shared flag at each data frame.
#[derive(Debug)]
pub struct ActivityMark {
    frames: ClientFrames,
    active: Arc<AtomicBool>,
}

impl ActivityMark {
    /// Starts at a frame boundary; `active` is shared with whoever asks about activity.
    pub fn new(active: Arc<AtomicBool>) -> ActivityMark {
        ActivityMark {
            frames: ClientFrames::default(),
            active,
        }
    }

    /// Reads the next bytes the client sent; raises the flag if a data frame began in them.
    pub fn note(&mut self, bytes: &[u8]) {
        if self.frames.feed(bytes) {
            self.active.store(true, Ordering::Relaxed);
        }
    }
}

/// The client side of a proxied WebSocket: passes everything through and raises `active` when
/// the client sends a data frame.
pub struct TrackedClient<S> {
    inner: S,
    mark: ActivityMark,
}

impl<S> TrackedClient<S> {
    /// Wraps the client connection; `active` is shared with whoever asks about activity.
    pub fn new(inner: S, active: Arc<AtomicBool>) -> TrackedClient<S> {
        TrackedClient {
            inner,
            mark: ActivityMark::new(active),
        }
    }

    /// Reads bytes the client sent that reached the gateway before this wrapper did.
    pub fn note_sent(&mut self, bytes: &[u8]) {
        self.mark.note(bytes);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedClient<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.mark.note(&buf.filled()[before..]);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedClient<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with `opcode` and a payload of `len` bytes.
    fn frame(opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0x81, len)); // payload bytes that look like headers
        f
    }

    #[test]
    fn pongs_pings_and_closes_are_not_activity() {
        let mut p = ClientFrames::default();
        assert!(!p.feed(&frame(0xA, 4)));
        assert!(!p.feed(&frame(0x9, 0)));
        assert!(!p.feed(&[frame(0xA, 125), frame(0x8, 2)].concat()));
    }

    #[test]
    fn data_frames_of_every_length_are_activity_even_split_byte_by_byte() {
        for len in [0, 5, 125, 126, 300, 70_000] {
            let stream = [frame(0xA, 3), frame(0x2, len), frame(0xA, 3)].concat();
            let mut p = ClientFrames::default();
            assert!(p.feed(&stream), "binary frame of {len} bytes");
            let mut p = ClientFrames::default();
            let mut seen = false;
            for b in &stream {
                // Every byte goes in, so the parser is at a boundary afterwards.
                seen |= p.feed(std::slice::from_ref(b));
            }
            assert!(seen, "split, {len} bytes");
            // After the stream the parser stands at a frame boundary again.
            assert!(!p.feed(&frame(0xA, 1)));
        }
    }

    #[test]
    fn reads_cut_anywhere_find_what_single_bytes_find() {
        // Frames of every opcode, with lengths around each length encoding's edges.
        let lengths = [0, 1, 13, 14, 64, 125, 126, 127, 300, 65535, 65536];
        let opcodes = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA];
        let mut seed = 7u32;
        let mut next = move |n: usize| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as usize % n
        };
        let stream: Vec<u8> = (0..200)
            .flat_map(|_| frame(opcodes[next(opcodes.len())], lengths[next(lengths.len())]))
            .collect();
        for most in [1, 2, 5, 13, 14, 15, 29, 100, 4096, 40_000] {
            let (mut cut, mut whole_bytes) = (ClientFrames::default(), ClientFrames::default());
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let (read, after) = rest.split_at((1 + next(most)).min(rest.len()));
                let by_bytes = read.iter().fold(false, |seen, b| {
                    whole_bytes.feed(std::slice::from_ref(b)) | seen
                });
                assert_eq!(cut.feed(read), by_bytes, "reads of up to {most} bytes");
                assert_eq!(cut.step, whole_bytes.step, "reads of up to {most} bytes");
                rest = after;
            }
            assert_eq!(cut.step, Step::Header { have: 0 });
        }
    }

    #[test]
    fn payload_never_reads_as_a_header() {
        let mut p = ClientFrames::default();
        // A pong whose payload is full of bytes that would be a text frame header.
        assert!(!p.feed(&frame(0xA, 125)));
        assert!(p.feed(&frame(0x1, 2)));
    }
}
