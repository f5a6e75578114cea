//! The real client behind a trusted proxy: who sent a request, when the
//! connection comes from nginx (or another proxy we were told to trust).
//!
//! Behind the shipped nginx every connection's peer is 127.0.0.1, so without
//! this the per-IP write budget is shared by the whole site, every cookie-less
//! client (curl, the seed routes) is one visitor, and logs show no real
//! address. nginx says who its client was in `X-Forwarded-For`, appending the
//! address it saw to whatever the client sent. Only the proxies' own entries
//! can be believed: the client may write anything to the left of them. So the
//! client is the right-most address in the header that is not itself a
//! trusted proxy, and the header is read only when the peer is trusted; a
//! forged left part changes nothing.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network, as in `127.0.0.1/32` or `::1/128`; a bare address is a /32 (/128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network's first address (the bits past the prefix are zero).
    net: IpAddr,
    /// How many leading bits name the network.
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask4(ip.into(), self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask6(ip.into(), self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

/// `bits` with all but their leading `prefix` bits cleared.
fn mask4(bits: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => bits & (u32::MAX << (32 - u32::from(p))),
    }
}

fn mask6(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p))),
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let ip = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("not an address: {addr:?}"))?,
        );
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            width
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("not a prefix length for {addr}: {prefix:?}"))?
        };
        let net = match ip {
            IpAddr::V4(v4) => IpAddr::V4(mask4(v4.into(), prefix).into()),
            IpAddr::V6(v6) => IpAddr::V6(mask6(v6.into(), prefix).into()),
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Who sent a request that arrived from `peer` with these `X-Forwarded-For`
/// values (every such header, in order), given the `trusted` proxies.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return canonical(peer);
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
    let mut client = canonical(peer);
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            // Not an address: what lies left of it cannot be believed either.
            None => return client,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]` or with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    /// Networks parse strictly and contain what they should.
    #[test]
    fn cidrs_parse_and_contain() {
        let lo: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(lo.contains(ip("127.1.2.3")) && !lo.contains(ip("128.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")), "v4-mapped v6 is v4");
        let one: Cidr = "10.1.2.3".parse().unwrap();
        assert!(one.contains(ip("10.1.2.3")) && !one.contains(ip("10.1.2.4")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        assert_eq!(
            "192.168.1.77/24".parse::<Cidr>().unwrap().to_string(),
            "192.168.1.0/24"
        );
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::1/129",
            "localhost",
            "1.2.3.4/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    /// The client is the right-most address that is not a trusted proxy; a
    /// forged left part changes nothing; an untrusted peer is the client.
    #[test]
    fn right_most_untrusted_address() {
        let trusted = cidrs(&["127.0.0.1/32", "10.0.0.0/8"]);
        let from = |peer: &str, xff: &[&str]| client_ip(ip(peer), xff.iter().copied(), &trusted);
        assert_eq!(from("127.0.0.1", &["203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(
            from("127.0.0.1", &["6.6.6.6, 203.0.113.7"]),
            ip("203.0.113.7"),
            "forged left part"
        );
        assert_eq!(
            from("127.0.0.1", &["203.0.113.7, 10.0.0.2"]),
            ip("203.0.113.7"),
            "two proxies"
        );
        assert_eq!(
            from("127.0.0.1", &["203.0.113.7", "10.0.0.2"]),
            ip("203.0.113.7"),
            "two headers"
        );
        assert_eq!(
            from("198.51.100.1", &["203.0.113.7"]),
            ip("198.51.100.1"),
            "peer not trusted"
        );
        assert_eq!(
            from("127.0.0.1", &[]),
            ip("127.0.0.1"),
            "no header: the proxy itself"
        );
        assert_eq!(
            from("127.0.0.1", &["nonsense, 10.0.0.2"]),
            ip("10.0.0.2"),
            "garbage stops the walk"
        );
        assert_eq!(from("127.0.0.1", &["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), ["203.0.113.7"].into_iter(), &[]),
            ip("127.0.0.1"),
            "nothing trusted"
        );
    }
}
