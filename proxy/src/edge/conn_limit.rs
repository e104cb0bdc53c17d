//! Connections per client address. The accept loop asks for a
//! [`ConnGuard`] before serving a connection and drops the connection when
//! none is given; the guard lives as long as the connection and gives its
//! slot back when dropped.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

/// Open connections per client address, shared by the listeners of one
/// proxy.
#[derive(Debug)]
pub struct ConnLimiter {
    max: AtomicU32,
    open: DashMap<IpAddr, u32>,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// Allows `max` connections at once from one address (`limits.
    /// maxConnectionsPerIp`, default 1024).
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self {
            max: AtomicU32::new(max),
            open: DashMap::new(),
        })
    }

    /// Changes the limit for connections accepted from now on; open ones
    /// are kept.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Counts a new connection from `ip`, or `None` when `ip` already holds
    /// the maximum.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let ip = ip.to_canonical();
        let max = self.max.load(Ordering::Relaxed);
        match self.open.entry(ip) {
            Entry::Occupied(mut e) if *e.get() < max => *e.get_mut() += 1,
            Entry::Occupied(_) => return None,
            Entry::Vacant(e) if max > 0 => {
                e.insert(1);
            }
            Entry::Vacant(_) => return None,
        }
        Some(ConnGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open.get(&ip.to_canonical()).map_or(0, |n| *n)
    }

    /// Addresses with at least one open connection.
    pub fn clients(&self) -> usize {
        self.open.len()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.limiter.open.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_frees_on_drop() {
        let l = ConnLimiter::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = l.try_acquire(a).unwrap();
        let g2 = l.try_acquire("::ffff:192.0.2.1".parse().unwrap()).unwrap();
        assert!(l.try_acquire(a).is_none());
        let gb = l.try_acquire(b).unwrap();
        assert_eq!((l.open(a), l.open(b)), (2, 1));

        drop(g1);
        let g3 = l.try_acquire(a).unwrap();
        drop((g2, g3, gb));
        assert_eq!(l.clients(), 0);

        l.set_max(0);
        assert!(l.try_acquire(a).is_none());
        assert_eq!(l.clients(), 0);
    }

    #[tokio::test]
    async fn guards_follow_real_connections() {
        let l = ConnLimiter::new(1);
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let _c1 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _c2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s1, p1) = server.accept().await.unwrap();
        let (s2, p2) = server.accept().await.unwrap();
        let held = l.try_acquire(p1.ip()).map(|g| (s1, g));
        assert!(held.is_some());
        assert!(l.try_acquire(p2.ip()).is_none());
        drop(s2);
        drop(held);
        assert!(l.try_acquire(p2.ip()).is_some());
    }
}
