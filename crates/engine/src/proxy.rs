//! Trusted reverse proxies: which TCP peers may say, in `X-Forwarded-For`, whom they forward.
//!
//! Behind a load balancer every connection comes from the balancer's address, so caps per
//! client address would count all clients as one. When the peer is trusted, the client is the
//! right-most address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
//! appends the address it received the request from; the left part is whatever the client
//! claimed, and is never believed). A missing or malformed header, or a peer that is not
//! trusted, leaves the peer's address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;

/// The most `X-Forwarded-For` entries looked at, from the right: a chain of proxies longer
/// than this is not a deployment, and a header is not worth unbounded work.
const MAX_HOPS: usize = 16;

/// A set of trusted proxy addresses: single IPs and CIDR blocks. Empty by default: nobody is
/// trusted, and every client is its TCP peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

/// An address block: the first `prefix` bits of `network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl Block {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Block {
    type Err = ProxyListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ProxyListError(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = address
            .parse::<IpAddr>()
            .map_err(|_| invalid())?
            .to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(invalid)?,
            None => bits,
        };
        Ok(Self { network, prefix })
    }
}

/// An entry of a trusted-proxy list that is neither an IP address nor a CIDR block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyListError(String);

impl fmt::Display for ProxyListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an IP address or CIDR block (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)",
            self.0
        )
    }
}

impl std::error::Error for ProxyListError {}

impl FromStr for TrustedProxies {
    type Err = ProxyListError;

    /// A comma-separated list of IP addresses and CIDR blocks (`10.0.0.1, 10.0.0.0/8`);
    /// empty for none.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let blocks = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(Block::from_str)
            .collect::<Result<_, _>>()?;
        Ok(Self { blocks })
    }
}

impl TrustedProxies {
    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The client's address of a request from `peer` with `headers`: the right-most address
    /// of `X-Forwarded-For` that is not a trusted proxy when `peer` is one; else `peer`.
    /// A malformed header (an entry that is no address) gives `peer`.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        self.forwarded_client(headers).unwrap_or(peer)
    }

    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        // Several header lines are one list, in order.
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            hops.extend(value.to_str().ok()?.split(','));
        }
        let mut last = None;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            let ip = parse_hop(hop.trim())?.to_canonical();
            if !self.contains(ip) {
                return Some(ip);
            }
            last = Some(ip);
        }
        // Every hop a trusted proxy: the left-most one looked at is the nearest to a client.
        last
    }
}

/// One `X-Forwarded-For` entry: an address, also as `[v6]` or with a port (`1.2.3.4:5`,
/// `[::1]:5`), which some proxies write.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (address, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                "x-forwarded-for",
                http::HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn addresses_and_blocks_are_parsed_and_anything_else_refused() {
        let proxies: TrustedProxies = " 10.0.0.0/8, 192.168.1.7 ,fd00::/8,".parse().expect("list");
        assert!(proxies.contains(ip("10.200.3.4")));
        assert!(proxies.contains(ip("192.168.1.7")));
        assert!(!proxies.contains(ip("192.168.1.8")));
        assert!(proxies.contains(ip("fd12::1")));
        assert!(
            proxies.contains(ip("::ffff:10.1.1.1")),
            "a mapped IPv4 address"
        );
        assert!(!proxies.contains(ip("11.0.0.1")));
        assert!("".parse::<TrustedProxies>().expect("none").is_empty());
        assert!(
            "0.0.0.0/0"
                .parse::<TrustedProxies>()
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
        for bad in ["10.0.0.0/33", "nginx", "10.0.0.1/x", "::/129", "10.0.0"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().expect("list");
        let peer = ip("10.0.0.2");
        let client = |values: &[&str]| proxies.client_addr(peer, &forwarded(values));
        assert_eq!(client(&["203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(
            client(&["1.1.1.1, 203.0.113.9, 10.0.0.5"]),
            ip("203.0.113.9"),
            "a spoofed left part and a second proxy are skipped"
        );
        assert_eq!(client(&["1.1.1.1", "203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(client(&["203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(client(&["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(
            client(&["10.0.0.9, 10.0.0.5"]),
            ip("10.0.0.9"),
            "all proxies"
        );
        assert_eq!(client(&[]), peer, "no header");
        assert_eq!(client(&["203.0.113.9, garbage"]), peer, "malformed");
        assert_eq!(client(&["unknown"]), peer, "malformed");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().expect("list");
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            proxies.client_addr(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        assert_eq!(
            TrustedProxies::default().client_addr(ip("10.0.0.2"), &headers),
            ip("10.0.0.2")
        );
    }
}
