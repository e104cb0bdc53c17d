//! The client address of a request and the `x-forwarded-for` sent
//! upstream.
//!
//! A peer inside the listener's `trustedProxies` is a proxy we believe: its
//! `x-forwarded-for` is read from the right, skipping trusted hops, and
//! the first untrusted hop is the client; the value sent upstream is the
//! incoming one with the peer appended. Any other peer is the client
//! itself, and whatever `x-forwarded-for` it sent is replaced by its
//! address, so a client cannot choose the address rate limits and logs
//! see.
//!
//! The pipeline calls [`TrustedProxies::forwarded`] once per request
//! before routing, uses [`Forwarded::client`] for rate-limit keys and the
//! access log, and sets [`Forwarded::header`] on the upstream request.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue};

/// Why a `trustedProxies` entry was refused.
#[derive(Debug, thiserror::Error)]
#[error("trusted proxy {0:?} is not a CIDR")]
pub struct InvalidCidr(pub String);

/// The CIDRs of one listener whose `x-forwarded-for` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

/// The client of one request as the edge sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The right-most untrusted address: the peer itself unless it is a
    /// trusted proxy.
    pub client: IpAddr,
    /// The `x-forwarded-for` value to send upstream.
    pub header: HeaderValue,
}

impl TrustedProxies {
    /// Parses CIDRs such as `10.0.0.0/8`, `fd00::/8` or a bare address.
    pub fn from_config(cidrs: &[String]) -> Result<Self, InvalidCidr> {
        let nets = cidrs
            .iter()
            .map(|c| {
                vakt_api::validate::parse_cidr(c)
                    .map(|(ip, len)| (canonical(ip), len))
                    .ok_or_else(|| InvalidCidr(c.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    /// Whether `ip` is inside one of the CIDRs.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|&(net, len)| in_net(ip, net, len))
    }

    /// The client address and upstream `x-forwarded-for` for a request
    /// from `peer` carrying `headers`.
    pub fn forwarded(&self, peer: IpAddr, headers: &HeaderMap) -> Forwarded {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return Forwarded {
                client: peer,
                header: ip_value(peer),
            };
        }
        let mut incoming = headers.get_all("x-forwarded-for").iter();
        let Some(first) = incoming.next() else {
            return Forwarded {
                client: peer,
                header: ip_value(peer),
            };
        };
        let mut joined = first.as_bytes().to_vec();
        for more in incoming {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(more.as_bytes());
        }
        let client = self.right_most_untrusted(&joined, peer);
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(peer.to_string().as_bytes());
        let header = HeaderValue::from_bytes(&joined).unwrap_or_else(|_| ip_value(peer));
        Forwarded { client, header }
    }

    /// Walks the hops from the right. An entry that is not an address
    /// stops the walk: the hop to its right, which is trusted, is the
    /// best address known.
    fn right_most_untrusted(&self, xff: &[u8], peer: IpAddr) -> IpAddr {
        let mut client = peer;
        for hop in xff.rsplit(|&b| b == b',') {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `x-forwarded-for` entry: an address, optionally with a port
/// (`192.0.2.1:8080`, `[2001:db8::1]:443`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(hop).ok()?.trim();
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = s.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse().ok()
        })?;
    Some(canonical(ip))
}

/// IPv4 clients reaching a dual-stack socket appear as `::ffff:a.b.c.d`;
/// they are the same client as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => prefix_eq(&a.octets(), &n.octets(), len),
        (IpAddr::V6(a), IpAddr::V6(n)) => prefix_eq(&a.octets(), &n.octets(), len),
        _ => false,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (whole, rest) = (usize::from(len / 8), len % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The address as a header value. Formatting it costs more than the rest
/// of the request's header work, and a sidecar's peer is nearly always
/// the same local address, so each thread keeps the last one it made.
fn ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some((cached, value)) if *cached == ip => value.clone(),
            _ => {
                let value = HeaderValue::try_from(ip.to_string())
                    .expect("an address is a valid header value");
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(cidrs: &[&str]) -> TrustedProxies {
        let owned: Vec<String> = cidrs.iter().map(|s| s.to_string()).collect();
        TrustedProxies::from_config(&owned).unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_replaces_whatever_it_sent() {
        let t = trusted(&["10.0.0.0/8"]);
        let f = t.forwarded(ip("198.51.100.9"), &xff(&["1.2.3.4"]));
        assert_eq!(f.client, ip("198.51.100.9"));
        assert_eq!(f.header, "198.51.100.9");
        let f = TrustedProxies::default().forwarded(ip("::ffff:192.0.2.5"), &HeaderMap::new());
        assert_eq!(f.client, ip("192.0.2.5"));
        assert_eq!(f.header, "192.0.2.5");
    }

    #[test]
    fn a_trusted_peer_appends_and_the_right_most_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let h = xff(&["6.6.6.6, 203.0.113.1", "10.1.1.1"]);
        let f = t.forwarded(ip("10.0.0.2"), &h);
        assert_eq!(f.client, ip("203.0.113.1"));
        assert_eq!(f.header, "6.6.6.6, 203.0.113.1, 10.1.1.1, 10.0.0.2");

        let f = t.forwarded(
            ip("fd00::1"),
            &xff(&["[2001:db8::7]:4711", "203.0.113.1:80"]),
        );
        assert_eq!(f.client, ip("203.0.113.1"));

        // Every hop trusted: the left-most is the best we know.
        let f = t.forwarded(ip("10.0.0.2"), &xff(&["10.9.9.9"]));
        assert_eq!(f.client, ip("10.9.9.9"));

        // No header from a trusted proxy: the proxy is the client.
        let f = t.forwarded(ip("10.0.0.2"), &HeaderMap::new());
        assert_eq!(f.client, ip("10.0.0.2"));
        assert_eq!(f.header, "10.0.0.2");
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let f = t.forwarded(ip("10.0.0.2"), &xff(&["203.0.113.1, unknown, 10.3.3.3"]));
        assert_eq!(f.client, ip("10.3.3.3"));
        let f = t.forwarded(ip("10.0.0.2"), &xff(&["evil"]));
        assert_eq!(f.client, ip("10.0.0.2"));
    }

    #[test]
    fn cidr_membership() {
        let t = trusted(&["192.168.4.0/22", "2001:db8::/33", "127.0.0.1"]);
        assert!(t.contains(ip("192.168.7.255")));
        assert!(!t.contains(ip("192.168.8.0")));
        assert!(t.contains(ip("::ffff:192.168.5.1")));
        assert!(t.contains(ip("2001:db8:7fff::1")));
        assert!(!t.contains(ip("2001:db8:8000::1")));
        assert!(t.contains(ip("127.0.0.1")));
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(trusted(&["0.0.0.0/0"]).contains(ip("8.8.8.8")));
        assert!(TrustedProxies::from_config(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn address_values_follow_the_address() {
        for text in ["127.0.0.1", "127.0.0.1", "::1", "10.0.0.2", "127.0.0.1"] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_value(ip).to_str().unwrap(), text);
        }
    }
}
