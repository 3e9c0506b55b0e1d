//! The client's address when the gateway runs behind a load balancer or TLS terminator.
//!
//! By default the client is the TCP peer: `X-Forwarded-For` is the client's to write, so the
//! gateway ignores what arrives and sends its own. When `server.trusted_proxies` lists the
//! peer, the peer is a proxy that appends the address it received the request from, and the
//! client is read from `X-Forwarded-For`: its entries are walked from the right, past every
//! address of a trusted proxy, and the first other address is the client. Entries further left
//! were written by whoever sent the request and are never believed. An entry is an IP address,
//! with or without a port (`192.0.2.7:4711`, `[2001:db8::7]:4711`, as some load balancers
//! write it); anything else ends the walk at the last trusted hop, as does a header that is
//! absent. Entries are split on the raw bytes, so a byte that is not text spoils only the entry
//! it is in: a client cannot make the proxy's own entry unreadable by writing junk before it.
//!
//! Proxies that write the standard `Forwarded` header (RFC 7239) instead (Envoy, HAProxy's
//! `option forwarded`) are read the same way with `server.forwarded_header: forwarded`: the
//! `for=` parameter of each element, from the right; an obfuscated or `unknown` node ends the
//! walk like a malformed entry. Only the configured header is read.
//!
//! The address found is what the audit log's `client_ip`, the login budget and the
//! `X-Forwarded-For` sent to the apps use. The check runs per connection (is the peer a
//! trusted proxy?) and, only then, per request.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at, from the right.
const MAX_HOPS: usize = 32;

/// The proxies whose `X-Forwarded-For` (or `Forwarded`) is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<IpNet>,
    header: ForwardedHeader,
}

/// The header the trusted proxies name the client in (`server.forwarded_header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1, ...` (RFC 7239).
    Forwarded,
}

/// An entry of `server.trusted_proxies` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedProxyError {
    /// Not an address or a block.
    #[error("not an IP address or CIDR block, such as 10.0.0.0/8 or 192.0.2.7")]
    Syntax,
    /// A block that holds every address: any client could name its own address.
    #[error("trusts every address, so any client could choose the address it is audited under")]
    Everything,
}

impl TrustedProxies {
    /// Reads one entry: an address (one host) or a CIDR block.
    pub fn parse_entry(text: &str) -> Result<IpNet, TrustedProxyError> {
        let text = text.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => IpNet::from(
                text.parse::<IpAddr>()
                    .map_err(|_| TrustedProxyError::Syntax)?,
            ),
        };
        // Peers are compared in their canonical form: IPv4 written as IPv6 is IPv4.
        let net = match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map(IpNet::V4)
                    .unwrap_or(net),
                None => net,
            },
            _ => net,
        };
        if net.prefix_len() == 0 {
            return Err(TrustedProxyError::Everything);
        }
        Ok(net)
    }

    /// The proxies in `blocks`, naming the client in `X-Forwarded-For`.
    pub fn new(blocks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies {
            blocks,
            header: ForwardedHeader::XForwardedFor,
        }
    }

    /// The same proxies, naming the client in `header`.
    pub fn with_header(self, header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies { header, ..self }
    }

    /// No proxy is trusted: the client is always the TCP peer.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is a trusted proxy's address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.blocks.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer` (a trusted proxy) with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        let (name, read): (&str, fn(&str) -> Option<IpAddr>) = match self.header {
            ForwardedHeader::XForwardedFor => ("x-forwarded-for", hop_address),
            ForwardedHeader::Forwarded => ("forwarded", forwarded_for),
        };
        let entries = headers
            .get_all(name)
            .iter()
            .rev()
            .flat_map(|value| value.as_bytes().rsplit(|b| *b == b','))
            .take(MAX_HOPS);
        for entry in entries {
            let Some(hop) = std::str::from_utf8(entry).ok().and_then(read) else {
                break;
            };
            client = hop.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// The node of one `Forwarded` element's `for=` parameter (`for=192.0.2.7`,
/// `for="[2001:db8::7]:4711"`); `None` for an element without one, or whose node is not an
/// address (`unknown`, an obfuscated `_name`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let node = element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let node = node
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(node);
    // `[v6]` or `[v6]:port`; an IPv4 address with or without `:port`.
    match node.strip_prefix('[') {
        Some(rest) => rest.split_once(']').and_then(|(v6, port)| {
            (port.is_empty() || port.starts_with(':'))
                .then(|| v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))
                .flatten()
        }),
        None => hop_address(node).filter(IpAddr::is_ipv4),
    }
}

/// The address of one `X-Forwarded-For` entry: an IP address, with or without a port.
fn hop_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            blocks
                .iter()
                .map(|b| TrustedProxies::parse_entry(b).unwrap())
                .collect(),
        )
    }

    fn client(p: &TrustedProxies, forwarded: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        p.client("10.0.0.2".parse().unwrap(), &headers).to_string()
    }

    #[test]
    fn the_first_address_right_of_the_trusted_hops_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, &["203.0.113.7"]), "203.0.113.7");
        // What the client wrote itself, left of its own address, is not believed.
        assert_eq!(client(&p, &["1.2.3.4, 203.0.113.7"]), "203.0.113.7");
        // Two trusted hops (a CDN's edge in 10/8 forwarding to the balancer).
        assert_eq!(
            client(&p, &["1.2.3.4, 203.0.113.7, 10.1.1.1"]),
            "203.0.113.7"
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(&p, &["1.2.3.4", "203.0.113.7 , 10.1.1.1"]),
            "203.0.113.7"
        );
        // IPv6, and IPv4 written as IPv6.
        assert_eq!(client(&p, &["2001:db8::7"]), "2001:db8::7");
        assert_eq!(client(&p, &["::ffff:203.0.113.9"]), "203.0.113.9");
        // With a port, as Azure Application Gateway writes it.
        assert_eq!(client(&p, &["203.0.113.7:4711, 10.1.1.1"]), "203.0.113.7");
        assert_eq!(client(&p, &["[2001:db8::7]:4711"]), "2001:db8::7");
    }

    #[test]
    fn junk_bytes_spoil_only_their_own_entry() {
        // nginx appends the real address to the client's own line: "\xff, 203.0.113.7".
        let p = proxies(&["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        let value = axum::http::HeaderValue::from_bytes(b"\xff, 203.0.113.7").unwrap();
        headers.append("x-forwarded-for", value);
        let peer = "10.0.0.2".parse().unwrap();
        assert_eq!(p.client(peer, &headers).to_string(), "203.0.113.7");
        let value = axum::http::HeaderValue::from_bytes(b"203.0.113.7, \xff").unwrap();
        headers.insert("x-forwarded-for", value);
        assert_eq!(p.client(peer, &headers).to_string(), "10.0.0.2");
        // A peer written as IPv6 is named in its IPv4 form when it is the client.
        let mapped = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(p.client(mapped, &HeaderMap::new()).to_string(), "10.0.0.2");
    }

    #[test]
    fn without_a_usable_entry_the_last_trusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, &[]), "10.0.0.2");
        assert_eq!(client(&p, &[""]), "10.0.0.2");
        assert_eq!(client(&p, &["203.0.113.7, unknown"]), "10.0.0.2");
        assert_eq!(client(&p, &["203.0.113.7, bad:4711"]), "10.0.0.2");
        assert_eq!(client(&p, &["203.0.113.7, garbage, 10.1.1.1"]), "10.1.1.1");
        assert_eq!(client(&p, &["10.3.3.3, 10.1.1.1"]), "10.3.3.3");
        let many = ["10.9.9.9"; 40].join(",");
        assert_eq!(client(&p, &[&format!("203.0.113.7,{many}")]), "10.9.9.9");
    }

    #[test]
    fn entries_are_addresses_or_blocks_but_never_everything() {
        let net = TrustedProxies::parse_entry(" 192.0.2.7 ").unwrap();
        assert_eq!(net.to_string(), "192.0.2.7/32");
        let net = TrustedProxies::parse_entry("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert_eq!(
            TrustedProxies::parse_entry("fd00::/8").unwrap().to_string(),
            "fd00::/8"
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0.1:80"] {
            assert_eq!(
                TrustedProxies::parse_entry(bad),
                Err(TrustedProxyError::Syntax),
                "{bad}"
            );
        }
        // IPv4 written as IPv6 is IPv4, as peers are compared.
        let net = TrustedProxies::parse_entry("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        for all in ["0.0.0.0/0", "::/0"] {
            assert_eq!(
                TrustedProxies::parse_entry(all),
                Err(TrustedProxyError::Everything)
            );
        }
    }

    #[test]
    fn a_peer_is_trusted_by_its_block_whatever_its_spelling() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::1"]);
        assert!(p.contains("10.200.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.200.0.1".parse().unwrap()));
        assert!(p.contains("2001:db8::1".parse().unwrap()));
        assert!(!p.contains("2001:db8::2".parse().unwrap()));
        assert!(!p.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn forwarded_elements_are_read_by_their_for_parameter() {
        let p = proxies(&["10.0.0.0/8"]).with_header(ForwardedHeader::Forwarded);
        let client = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("forwarded", value.parse().unwrap());
            }
            // An X-Forwarded-For is not read when the proxies write Forwarded.
            headers.append("x-forwarded-for", "198.51.100.99".parse().unwrap());
            p.client("10.0.0.2".parse().unwrap(), &headers).to_string()
        };
        assert_eq!(client(&["for=203.0.113.7"]), "203.0.113.7");
        assert_eq!(
            client(&["for=198.51.100.66, for=203.0.113.7;proto=https;by=10.0.0.2"]),
            "203.0.113.7"
        );
        assert_eq!(
            client(&["For=\"[2001:db8:cafe::17]:4711\", for=10.1.1.1:80"]),
            "2001:db8:cafe::17"
        );
        assert_eq!(
            client(&["for=198.51.100.66", "proto=https;for=203.0.113.7"]),
            "203.0.113.7"
        );
        // Nodes that name no address end the walk at the last trusted hop.
        assert_eq!(client(&["for=203.0.113.7, for=unknown"]), "10.0.0.2");
        assert_eq!(
            client(&["for=203.0.113.7, for=_hidden, for=10.1.1.1"]),
            "10.1.1.1"
        );
        assert_eq!(client(&["proto=https"]), "10.0.0.2");
        // IPv6 must be bracketed; a bare one is not an RFC 7239 node.
        assert_eq!(client(&["for=2001:db8::7"]), "10.0.0.2");
        assert_eq!(client(&["for=\"[2001:db8::7]junk\""]), "10.0.0.2");
        // A client's unterminated quote does not reach the proxy's own element.
        assert_eq!(
            client(&["for=\"198.51.100.66, for=203.0.113.7"]),
            "203.0.113.7"
        );
        assert_eq!(client(&[]), "10.0.0.2");
    }
}
