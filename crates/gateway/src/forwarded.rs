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
//! Proxies that write the standard `Forwarded` header (RFC 7239) instead (HAProxy's
//! `option forwarded`) are read the same way with `server.forwarded_header: forwarded`: the
//! `for=` parameter of each element, from the right, split outside quoted strings only, with
//! their escapes (a proxy's element may quote and escape request data, such as the Host); a
//! malformed element, or an obfuscated or `unknown` node, ends the walk like a malformed
//! entry. Only the configured header is read. A proxy that copies request data into its
//! element unescaped lets the client write an element of its own, which no reader can tell
//! from a real hop: the configuration reference says which proxies are safe.
//!
//! The address found is what the audit log's `client_ip`, the login budget and the
//! `X-Forwarded-For` sent to the apps use. The check runs per connection (is the peer a
//! trusted proxy?) and, only then, per request.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Most `X-Forwarded-For` entries (or `Forwarded` elements) looked at, from the right.
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
        match self.header {
            ForwardedHeader::XForwardedFor => {
                let entries = headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .rev()
                    .flat_map(|value| value.as_bytes().rsplit(|b| *b == b','))
                    .map(|entry| std::str::from_utf8(entry).ok().and_then(hop_address));
                self.walk(peer, entries)
            }
            ForwardedHeader::Forwarded => {
                let elements = headers
                    .get_all("forwarded")
                    .iter()
                    .rev()
                    .flat_map(|value| forwarded_nodes(value.as_bytes()));
                self.walk(peer, elements)
            }
        }
    }

    /// Walks `hops` (last first; `None` for one that names no address) past the trusted
    /// proxies, from `peer`: the first other address is the client, and a hop that names none
    /// leaves the last trusted one as the client.
    fn walk(&self, peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut client = peer.to_canonical();
        for hop in hops.take(MAX_HOPS) {
            let Some(hop) = hop else {
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

/// The `for=` nodes of one `Forwarded` line's elements, last first (RFC 7239): an address, or
/// `None` for an element that names none and ends the walk. Elements are split only outside
/// quoted strings, reading quoted-pairs (`\"`, `\\`) as RFC 7239 writes them, so that text a
/// proxy quotes and escapes into its own element (a `host=` taken from the request) cannot
/// pose as another element; a malformed element (a quote left open, a backslash outside
/// quotes), one with no `for=` or two, or whose node is `unknown`, obfuscated or not an
/// address, is `None`. The scan stops at the first `None`, or after [`MAX_HOPS`] elements.
fn forwarded_nodes(line: &[u8]) -> Vec<Option<IpAddr>> {
    let mut nodes = Vec::new();
    let mut end = line.len();
    let mut quoted = false;
    let mut at = line.len();
    // How many backslashes stand right before `line[at]`.
    let backslashes_before =
        |at: usize| line[..at].iter().rev().take_while(|b| **b == b'\\').count();
    while at > 0 && nodes.len() < MAX_HOPS {
        at -= 1;
        match line[at] {
            b'"' => {
                let run = backslashes_before(at);
                match (quoted, run % 2 == 1) {
                    // An escaped quote inside the string: its escapes are part of it.
                    (true, true) => at -= run,
                    // The string's opening quote.
                    (true, false) if run == 0 => quoted = false,
                    // The string's closing quote; escaped backslashes may end the string.
                    (false, false) => {
                        quoted = true;
                        at -= run;
                    }
                    // A backslash outside quotes, or an escaped quote outside a string.
                    _ => {
                        nodes.push(None);
                        return nodes;
                    }
                }
            }
            b'\\' if !quoted => {
                nodes.push(None);
                return nodes;
            }
            b',' if !quoted => {
                let node = element_node(&line[at + 1..end]);
                nodes.push(node);
                if node.is_none() {
                    return nodes;
                }
                end = at;
            }
            _ => {}
        }
    }
    if nodes.len() < MAX_HOPS {
        nodes.push(if quoted {
            None
        } else {
            element_node(&line[..end])
        });
    }
    nodes
}

/// Space and horizontal tab, the only whitespace HTTP allows between parts of a header.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// The node of the one `for=` pair of a `Forwarded` element whose quoted strings are well
/// formed (checked by [`forwarded_nodes`]).
fn element_node(element: &[u8]) -> Option<IpAddr> {
    let mut pairs = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (at, b) in element.iter().enumerate() {
        match (quoted, escaped, *b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b';') => {
                pairs.push(&element[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    pairs.push(&element[start..]);
    let token = |t: &[u8]| {
        !t.is_empty()
            && t.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
    };
    let mut node = None;
    for pair in pairs {
        let pair = trim_ows(pair);
        if pair.is_empty() {
            continue;
        }
        let split = pair.iter().position(|b| *b == b'=')?;
        let (name, value) = (&pair[..split], &pair[split + 1..]);
        if !token(name) {
            return None;
        }
        if name.eq_ignore_ascii_case(b"for") {
            if node.is_some() {
                return None;
            }
            node = Some(value);
        }
    }
    let node = node?;
    let node = match node.strip_prefix(b"\"") {
        Some(inner) => inner.strip_suffix(b"\"")?,
        None => node,
    };
    // An address needs no escape: a node with one is not an address.
    node_address(std::str::from_utf8(node).ok()?)
}

/// The address of a `Forwarded` node: IPv4, or `[IPv6]`, with an optional port (digits, or an
/// obfuscated `_name`). `unknown` and obfuscated names are not addresses.
fn node_address(node: &str) -> Option<IpAddr> {
    let port_ok = |port: Option<&str>| match port {
        None => true,
        Some(p) => match p.strip_prefix('_') {
            Some(name) => {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            }
            None => {
                (1..=5).contains(&p.len())
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && p.parse::<u16>().is_ok_and(|n| n > 0)
            }
        },
    };
    match node.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            port_ok(port).then_some(())?;
            v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        }
        None => {
            let (v4, port) = match node.split_once(':') {
                Some((v4, port)) => (v4, Some(port)),
                None => (node, None),
            };
            port_ok(port).then_some(())?;
            v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
        }
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
        client_by(p, "x-forwarded-for", forwarded)
    }

    /// The client `p` finds from 10.0.0.2 in the lines `values` of the header `name`.
    fn client_by(p: &TrustedProxies, name: &'static str, values: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, value.parse().unwrap());
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

    /// The client named by `Forwarded` lines `values`, from 10.0.0.2, behind 10.0.0.0/8.
    fn forwarded_client(values: &[&str]) -> String {
        let p = proxies(&["10.0.0.0/8"]).with_header(ForwardedHeader::Forwarded);
        client_by(&p, "forwarded", values)
    }

    #[test]
    fn forwarded_ports_are_digits_or_obfuscated() {
        let client = |value: &str| forwarded_client(&[value]);
        assert_eq!(client("for=\"203.0.113.7:_p1\""), "203.0.113.7");
        assert_eq!(client("for=\"[2001:db8::7]:_p1\""), "2001:db8::7");
        assert_eq!(client("for=\"[2001:db8::7]:99999\""), "10.0.0.2");
        assert_eq!(client("for=\"203.0.113.7:0\""), "10.0.0.2");
        assert_eq!(client("for=\"[fe80::1%eth0]\""), "10.0.0.2", "a zone");
    }

    #[test]
    fn text_a_proxy_quotes_and_escapes_into_its_element_cannot_pose_as_an_element_or_a_pair() {
        let client = |value: &str| forwarded_client(&[value]);
        // A Host of `x,for=198.51.100.1;a=`, quoted by the proxy after its `for=`...
        assert_eq!(
            client("for=203.0.113.7;host=\"x,for=198.51.100.1;a=\""),
            "203.0.113.7"
        );
        // ... or before it.
        assert_eq!(
            client("proto=https;host=\"a;for=198.51.100.1;b=\";for=203.0.113.7"),
            "203.0.113.7"
        );
        // Two `for` in one element (a proxy that adds its own with `;`): refused.
        assert_eq!(client("for=198.51.100.1;for=203.0.113.7"), "10.0.0.2");
        // Quoted-pairs, as a proxy escapes a Host: read as part of the string.
        assert_eq!(client("for=203.0.113.7;host=\"a\\\"b\""), "203.0.113.7");
        assert_eq!(
            client("for=203.0.113.7;host=\"a\\\",for=198.51.100.1;b=\\\\\""),
            "203.0.113.7"
        );
        assert_eq!(
            client("host=\"x\\\"\\\\,for=198.51.100.1\";for=203.0.113.7"),
            "203.0.113.7"
        );
        // A backslash outside quotes, a quote left open, a name that is not a token, a port
        // that is not digits.
        assert_eq!(client("for=203.0.113.7;host=a\\b"), "10.0.0.2");
        assert_eq!(client("for=203.0.113.7;host=\"open"), "10.0.0.2");
        assert_eq!(client("for=203.0.113.7;ho st=x"), "10.0.0.2");
        assert_eq!(client("for=\"203.0.113.7:+1\""), "10.0.0.2");
        // Only space and tab are whitespace.
        assert_eq!(client("\u{a0}for=203.0.113.7"), "10.0.0.2");
        // Junk in the client's own elements stays there.
        assert_eq!(
            client("for=\"\\, for=203.0.113.7, for=10.1.1.1"),
            "203.0.113.7"
        );
    }

    #[test]
    fn with_the_default_header_forwarded_is_not_read() {
        let p = proxies(&["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.append("forwarded", "for=198.51.100.1".parse().unwrap());
        let client = p.client("10.0.0.2".parse().unwrap(), &headers);
        assert_eq!(client.to_string(), "10.0.0.2");
    }
}
