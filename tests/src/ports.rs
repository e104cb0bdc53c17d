//! Free loopback addresses for servers that must be told their address
//! before they start (a proxy's listeners and admin).
//!
//! Ports come from 20000..32000, below Linux's ephemeral range (32768 and
//! up), so neither `bind(0)` nor outgoing connections in parallel tests can
//! take a port between the moment it is handed out and the moment the proxy
//! binds it. A process-wide set keeps one port from being handed out twice.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(Default::default)
}

/// A `127.0.0.1` address whose port was free when checked and has not been
/// handed out before in this process.
///
/// # Panics
/// When no port in the range can be bound after many tries.
pub fn free_addr() -> SocketAddr {
    for _ in 0..1_000 {
        let port = fastrand::u16(FIRST..LAST);
        if !taken().lock().expect("port set").insert(port) {
            continue;
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port in {FIRST}..{LAST}");
}

/// The port of [`free_addr`].
pub fn free_port() -> u16 {
    free_addr().port()
}
