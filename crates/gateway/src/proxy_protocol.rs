//! The PROXY protocol (HAProxy's, versions 1 and 2) on the public listener, for load balancers
//! that pass connections on at the TCP level: an AWS Network Load Balancer (TLS listeners
//! included), HAProxy or nginx `stream` in TCP mode, Kubernetes load balancers with the
//! protocol switched on. They cannot add `X-Forwarded-For`; they write the client's address in
//! a header before the connection's first byte instead.
//!
//! With `server.proxy_protocol: true`, every connection must begin with such a header. It is
//! read before any HTTP, in the connection's own task (the accept loop never waits for it),
//! within [`HEADER_TIMEOUT`]; a connection without one, with a malformed one, or whose header
//! does not arrive in time is closed, counted, and warned of at most once a minute. The header
//! is read exactly, never a byte of the HTTP after it, so the connection stays a plain
//! `TcpStream` (the WebSocket join splices into it).
//!
//! The address the header names is believed only when the TCP peer is listed in
//! `server.trusted_proxies`: anyone else who reaches the listener could name any address. A
//! `LOCAL` header (the balancer's own health check) and one that names no IP address
//! (`UNKNOWN`, a UNIX socket) leave the TCP peer as the client, and no `X-Forwarded-For` on
//! such a connection is believed: the balancer passes the client's bytes on unchanged, so the
//! header would be the client's own word. The address found plays the TCP peer's part
//! everywhere: the audit log, the login budget, and whether the connection's
//! `X-Forwarded-For` is read ([`crate::forwarded`]), for a balancer in front of an HTTP proxy
//! that is itself listed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest wait for a connection's header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest version 1 header, its CRLF included (the specification's limit).
const V1_MAX: usize = 107;

/// Longest version 2 header accepted: 16 fixed bytes, then addresses and TLVs. Balancers send
/// a few hundred bytes at most (AWS: the addresses and the VPC endpoint ID).
const V2_MAX: usize = 16 + 2048;

/// The first 12 bytes of a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection's PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The connection began with something else (plain HTTP, most likely).
    #[error("the connection did not begin with a PROXY protocol header")]
    Missing,
    /// A header the parser refused.
    #[error("malformed PROXY protocol header ({0})")]
    Malformed(String),
    /// A version 2 header longer than 2,064 bytes, or a version 1 line longer than 107.
    #[error("PROXY protocol header longer than allowed")]
    TooLong,
    /// The header had not come after [`HEADER_TIMEOUT`].
    #[error("no PROXY protocol header within {} s", HEADER_TIMEOUT.as_secs())]
    TimedOut,
    /// The connection failed or closed before the header ended.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header at the start of `stream`, and not one byte more. Returns the client's
/// address it names, or `None` when it names none (`LOCAL`, `UNKNOWN`, a UNIX socket).
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Option<SocketAddr>, HeaderError> {
    // Both versions are longer than 8 bytes ("PROXY UNKNOWN\r\n" is the shortest, 15), and
    // 8 bytes tell them apart.
    let mut start = [0u8; 8];
    stream.read_exact(&mut start).await?;
    if start == V2_SIGNATURE[..8] {
        read_v2(stream, start).await
    } else if start.starts_with(b"PROXY ") {
        read_v1(stream, start).await
    } else {
        Err(HeaderError::Missing)
    }
}

async fn read_v2<R: AsyncRead + Unpin>(
    stream: &mut R,
    start: [u8; 8],
) -> Result<Option<SocketAddr>, HeaderError> {
    let mut header = Vec::with_capacity(64);
    header.extend_from_slice(&start);
    header.resize(16, 0);
    stream.read_exact(&mut header[8..]).await?;
    if header[..12] != V2_SIGNATURE[..] {
        return Err(HeaderError::Missing);
    }
    let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if 16 + length > V2_MAX {
        return Err(HeaderError::TooLong);
    }
    header.resize(16 + length, 0);
    stream.read_exact(&mut header[16..]).await?;
    let parsed = ppp::v2::Header::try_from(header.as_slice())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

async fn read_v1<R: AsyncRead + Unpin>(
    stream: &mut R,
    start: [u8; 8],
) -> Result<Option<SocketAddr>, HeaderError> {
    // Byte by byte: whatever follows the line is HTTP, and hyper must read it from the socket.
    // A new connection through a balancer costs some 40 reads more; version 2 costs two.
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(&start);
    while !line.ends_with(b"\r\n") {
        if line.len() == V1_MAX {
            return Err(HeaderError::TooLong);
        }
        line.push(stream.read_u8().await?);
    }
    let parsed = ppp::v1::Header::try_from(line.as_slice())
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// The client of a connection from `peer` that begins with a PROXY header: the header's
/// address when `peer` is a trusted proxy and the header names one; `None` otherwise (the
/// caller takes `peer`, and believes no `X-Forwarded-For` on the connection). An error closes
/// the connection; it is counted in [`refused_total`] and warned of at most once a minute.
pub async fn client<R: AsyncRead + Unpin>(
    stream: &mut R,
    peer: SocketAddr,
    trusted: &crate::forwarded::TrustedProxies,
) -> Result<Option<SocketAddr>, HeaderError> {
    let read = match tokio::time::timeout(HEADER_TIMEOUT, read_header(stream)).await {
        Ok(read) => read,
        Err(_) => Err(HeaderError::TimedOut),
    };
    match read {
        Ok(Some(client)) if trusted.contains(peer.ip()) => Ok(Some(client)),
        Ok(named) => {
            if named.is_some() {
                tracing::debug!(%peer, "PROXY header from a peer not in server.trusted_proxies: its address is ignored");
            }
            Ok(None)
        }
        Err(e) => {
            refused(&e, peer);
            Err(e)
        }
    }
}

/// Connections closed for want of a good header since start-up.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// When the last warning was logged, in seconds since the Unix epoch.
static WARNED_AT: AtomicU64 = AtomicU64::new(0);

/// Connections closed for want of a good PROXY header since start-up.
pub fn refused_total() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

fn refused(error: &HeaderError, peer: SocketAddr) {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    let now = u64::try_from(crate::state::unix_now()).unwrap_or(0);
    let last = WARNED_AT.load(Ordering::Relaxed);
    if now >= last.saturating_add(60)
        && WARNED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            %peer,
            error = %error,
            "closed a connection without a good PROXY protocol header (server.proxy_protocol is on: \
             does the load balancer send one? warned at most once a minute; the count is \
             saml_gateway_proxy_protocol_refused_total)"
        );
    } else {
        tracing::debug!(%peer, error = %error, "closed a connection without a good PROXY protocol header");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let mut rest = bytes;
        let result = read_header(&mut rest).await;
        (result, rest.to_vec())
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[tokio::test]
    async fn version_1_names_the_client_and_leaves_the_http_after_it() {
        let (r, rest) =
            read(b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(r.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (r, rest) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\nGET").await;
        assert_eq!(r.unwrap(), Some("[2001:db8::7]:51234".parse().unwrap()));
        assert_eq!(rest, b"GET");
        let (r, rest) = read(b"PROXY UNKNOWN\r\nGET").await;
        assert_eq!(r.unwrap(), None);
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn version_2_names_the_client_and_leaves_the_http_after_it() {
        let mut addresses = vec![203, 0, 113, 7, 10, 0, 0, 5];
        addresses.extend_from_slice(&51234u16.to_be_bytes());
        addresses.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses (an AWS VPC endpoint ID), which is skipped.
        addresses.extend_from_slice(&[0xEA, 0x00, 0x04, 1, b'v', b'p', b'c']);
        let mut bytes = v2(1, 0x11, &addresses);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (r, rest) = read(&bytes).await;
        assert_eq!(r.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");

        let mut addresses = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        addresses.extend_from_slice(&[0; 16]);
        addresses.extend_from_slice(&[0xC8, 0x22, 0x01, 0xBB]);
        let (r, _) = read(&v2(1, 0x21, &addresses)).await;
        assert_eq!(r.unwrap(), Some("[2001:db8::7]:51234".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_health_check_or_a_header_without_an_address_names_no_one() {
        // LOCAL, whatever addresses it carries.
        let (r, rest) = read(
            &[
                v2(0, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]),
                b"GET".to_vec(),
            ]
            .concat(),
        )
        .await;
        assert_eq!(r.unwrap(), None);
        assert_eq!(rest, b"GET");
        let (r, _) = read(&v2(1, 0x00, &[])).await;
        assert_eq!(r.unwrap(), None);
        let (r, _) = read(&v2(1, 0x31, &[0; 216])).await;
        assert_eq!(r.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let (r, _) = read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(matches!(r, Err(HeaderError::Missing)), "{r:?}");
        // A v2 signature broken after its first 8 bytes.
        let mut broken = v2(1, 0x00, &[]);
        broken[10] = b'X';
        let (r, _) = read(&broken).await;
        assert!(matches!(r, Err(HeaderError::Missing)), "{r:?}");
        let (r, _) = read(b"PROXY TCP4 not-an-address 10.0.0.5 1 2\r\n").await;
        assert!(matches!(r, Err(HeaderError::Malformed(_))), "{r:?}");
        // Too short for the family's addresses.
        let (r, _) = read(&v2(1, 0x11, &[1, 2, 3])).await;
        assert!(matches!(r, Err(HeaderError::Malformed(_))), "{r:?}");
        // Version 3.
        let mut v3 = v2(1, 0x00, &[]);
        v3[12] = 0x31;
        let (r, _) = read(&v3).await;
        assert!(matches!(r, Err(HeaderError::Malformed(_))), "{r:?}");
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        let (r, _) = read(&long).await;
        assert!(matches!(r, Err(HeaderError::TooLong)), "{r:?}");
        let (r, _) = read(&v2(1, 0x11, &[0; 4000])).await;
        assert!(matches!(r, Err(HeaderError::TooLong)), "{r:?}");
        // The connection ends mid-header.
        let (r, _) = read(b"PROXY TCP4 203.0.113.7").await;
        assert!(matches!(r, Err(HeaderError::Io(_))), "{r:?}");
        let (r, _) = read(b"PROX").await;
        assert!(matches!(r, Err(HeaderError::Io(_))), "{r:?}");
    }

    #[tokio::test]
    async fn only_a_trusted_peer_names_the_client() {
        let trusted = crate::forwarded::TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 443\r\n";
        let balancer: SocketAddr = "10.0.0.9:40000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:40000".parse().unwrap();
        let mut rest = &header[..];
        assert_eq!(
            client(&mut rest, balancer, &trusted).await.unwrap(),
            Some("203.0.113.7:51234".parse().unwrap())
        );
        let mut rest = &header[..];
        assert_eq!(client(&mut rest, stranger, &trusted).await.unwrap(), None);
        // A trusted balancer's header that names no one names no client either.
        let mut rest = &b"PROXY UNKNOWN\r\n"[..];
        assert_eq!(client(&mut rest, balancer, &trusted).await.unwrap(), None);
        let before = refused_total();
        let mut rest = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert!(client(&mut rest, balancer, &trusted).await.is_err());
        assert!(refused_total() > before);
    }

    #[tokio::test]
    async fn mangled_headers_never_panic_nor_take_a_byte_past_the_header() {
        // Every good header of the tests above, with bytes flipped, cut or added by a fixed
        // xorshift sequence: whatever the parse says, it never panics, and a header it takes
        // is taken exactly, to its last byte and not one more (the HTTP after it stays whole).
        let mut seeds = vec![
            b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(1, 0x11, &[203, 0, 113, 7, 10, 0, 0, 5, 0xC8, 0x22, 1, 0xBB]),
            v2(1, 0x21, &[7; 36]),
            v2(0, 0x00, &[]),
        ];
        for seed in &mut seeds {
            seed.extend_from_slice(b"GET");
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..30_000u32 {
            let mut bytes = seeds[round as usize % seeds.len()].clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, next() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let (result, rest) = read(&bytes).await;
            if result.is_ok() {
                // Exactly the header: up to the first CRLF (v1), or 16 bytes and the length
                // they announce (v2).
                let taken = bytes.len() - rest.len();
                let expected = if bytes.starts_with(V2_SIGNATURE) {
                    16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]))
                } else {
                    bytes.windows(2).position(|w| w == b"\r\n").unwrap() + 2
                };
                assert_eq!(taken, expected, "round {round}: {bytes:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_that_does_not_come_times_out() {
        let trusted = crate::forwarded::TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let (mut quiet, _writer) = tokio::io::duplex(64);
        let r = client(&mut quiet, "10.0.0.9:1".parse().unwrap(), &trusted).await;
        assert!(matches!(r, Err(HeaderError::TimedOut)), "{r:?}");
    }
}
