//! A WebSocket echo server and a pipelining load client, for benches/proxy/bench.py: compiled,
//! so that the benchmark measures the proxy between them rather than an interpreter.
//!
//! Just enough of RFC 6455 for a benchmark: the opening handshake, binary frames with 7-, 16-
//! and 64-bit lengths, masking, and close. Fragmented messages, pings and extensions are not
//! used by either side.
//!
//! ```text
//! ws_echo serve --port 9001
//! ws_echo client --url ws://127.0.0.1:9001/ws --size 64 --window 32 --duration 5 \
//!     [--header 'Cookie: saml-session=...'] [--header 'Origin: http://127.0.0.1:8080']
//! ```
//!
//! The client keeps `window` messages in flight on one connection for `duration` seconds and
//! prints one JSON line: messages echoed, bytes of payload echoed, seconds, messages/s, MB/s.

use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("serve") => runtime.block_on(serve(&option(&args, "--port")?)),
        Some("client") => {
            let headers = args
                .windows(2)
                .filter(|w| w[0] == "--header")
                .map(|w| w[1].clone())
                .collect();
            runtime.block_on(client(
                &option(&args, "--url")?,
                option(&args, "--size")?.parse()?,
                option(&args, "--window")?.parse()?,
                Duration::from_secs_f64(option(&args, "--duration")?.parse()?),
                headers,
            ))
        }
        _ => Err("usage: ws_echo serve --port P | client --url U --size N --window W --duration S [--header H]...".into()),
    }
}

fn option(args: &[String], name: &str) -> Result<String, Error> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].clone())
        .ok_or_else(|| format!("{name} is missing").into())
}

/// A frame's header, with the mask key when there is one.
fn frame_header(opcode: u8, length: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut head = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if length < 126 {
        head.push(mask_bit | length as u8);
    } else if length < 1 << 16 {
        head.push(mask_bit | 126);
        head.extend_from_slice(&(length as u16).to_be_bytes());
    } else {
        head.push(mask_bit | 127);
        head.extend_from_slice(&(length as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        head.extend_from_slice(&key);
    }
    head
}

/// A parsed frame: opcode, payload range, mask key.
struct Frame {
    opcode: u8,
    start: usize,
    end: usize,
    mask: Option<[u8; 4]>,
}

/// The frame at `pos` of `buf`, or `None` when the buffer does not hold all of it yet.
fn parse_frame(buf: &[u8], pos: usize) -> Option<Frame> {
    let b = buf.get(pos..)?;
    if b.len() < 2 {
        return None;
    }
    let mut at = 2;
    let mut length = (b[1] & 0x7F) as usize;
    if length == 126 {
        length = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize;
        at = 4;
    } else if length == 127 {
        length = u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize;
        at = 10;
    }
    let mask = if b[1] & 0x80 != 0 {
        let key: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    if b.len() < at + length {
        return None;
    }
    Some(Frame {
        opcode: b[0] & 0x0F,
        start: pos + at,
        end: pos + at + length,
        mask,
    })
}

fn xor_mask(payload: &mut [u8], key: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Reads an HTTP/1.1 header block; returns it as text and keeps what followed in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String, Error> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Ok(head);
        }
        let mut chunk = vec![0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("closed before the end of the head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(port: &str) -> Result<(), Error> {
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("ws echo listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = echo(stream).await {
                eprintln!("ws echo: {e}");
            }
        });
    }
}

async fn echo(mut stream: TcpStream) -> Result<(), Error> {
    let mut buf = Vec::with_capacity(1 << 18);
    let head = read_head(&mut stream, &mut buf).await?;
    let key = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    let accept = base64::engine::general_purpose::STANDARD
        .encode(openssl::sha::sha1(format!("{key}{GUID}").as_bytes()));
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(answer.as_bytes()).await?;
    let mut chunk = vec![0u8; 1 << 18];
    let mut out = Vec::with_capacity(1 << 18);
    loop {
        let mut pos = 0;
        while let Some(frame) = parse_frame(&buf, pos) {
            let payload = &mut buf[frame.start..frame.end];
            if let Some(key) = frame.mask {
                xor_mask(payload, key);
            }
            out.extend_from_slice(&frame_header(frame.opcode, payload.len(), None));
            out.extend_from_slice(payload);
            pos = frame.end;
            if frame.opcode == OP_CLOSE {
                stream.write_all(&out).await?;
                return Ok(());
            }
        }
        buf.drain(..pos);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn client(
    url: &str,
    size: usize,
    window: usize,
    duration: Duration,
    headers: Vec<String>,
) -> Result<(), Error> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("the URL must start with ws://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for header in headers {
        request.push_str(&header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1 << 20);
    let head = read_head(&mut stream, &mut buf).await?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 101 ") && !status.ends_with(" 101") {
        return Err(format!("handshake failed: {status}").into());
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut message = frame_header(OP_BINARY, size, Some(mask));
    let mut payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    xor_mask(&mut payload, mask);
    message.extend_from_slice(&payload);
    // The writer runs beside the reader: a write of a window larger than the socket buffers
    // must not wait for a reader that is waiting for it.
    let (mut reader, mut writer) = stream.into_split();
    let (credits, mut to_send) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let frames = message.clone();
    let writing = tokio::spawn(async move {
        while let Some(n) = to_send.recv().await {
            writer.write_all(&frames.repeat(n)).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    credits.send(window)?;
    let (mut sent, mut received) = (window, 0usize);
    let start = Instant::now();
    let deadline = start + duration;
    let mut sending = true;
    let mut chunk = vec![0u8; 1 << 20];
    while received < sent {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed during the run".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let (mut pos, mut got) = (0, 0);
        while let Some(frame) = parse_frame(&buf, pos) {
            if frame.end - frame.start != size {
                return Err(format!(
                    "echoed a frame of {} bytes, sent {size}",
                    frame.end - frame.start
                )
                .into());
            }
            pos = frame.end;
            got += 1;
        }
        buf.drain(..pos);
        received += got;
        if sending && got > 0 {
            if Instant::now() >= deadline {
                sending = false;
            } else {
                credits.send(got)?;
                sent += got;
            }
        }
    }
    drop(credits);
    let mut stream = writing.await??;
    let elapsed = start.elapsed().as_secs_f64();
    let mut close = frame_header(OP_CLOSE, 2, Some(mask));
    let mut code = 1000u16.to_be_bytes();
    xor_mask(&mut code, mask);
    close.extend_from_slice(&code);
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&close)).await;
    println!(
        "{{\"messages\": {received}, \"bytes\": {}, \"seconds\": {elapsed:.3}, \
         \"messages_per_s\": {}, \"mb_per_s\": {}}}",
        received * size,
        received as f64 / elapsed,
        (received * size) as f64 / elapsed / 1e6
    );
    Ok(())
}
