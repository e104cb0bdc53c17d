//! One endpoint of a backend: its address, its connection pool and the
//! load figures its balancer reads (requests in flight, peak-EWMA
//! latency).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::pool::Pool;

/// How fast old latency samples fade: the decay time constant.
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for an endpoint nothing is known about yet.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// A replica of a backend.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `ip:port`, for logs and metrics.
    pub label: Arc<str>,
    pub pool: Arc<Pool>,
    in_flight: AtomicUsize,
    ewma: Mutex<Ewma>,
}

#[derive(Debug)]
struct Ewma {
    cost_ns: f64,
    at: Instant,
}

/// Counts a request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, pool: Arc<Pool>) -> Self {
        Self {
            addr,
            label: addr.to_string().into(),
            pool,
            in_flight: AtomicUsize::new(0),
            ewma: Mutex::new(Ewma {
                cost_ns: DEFAULT_RTT.as_nanos() as f64,
                at: Instant::now(),
            }),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Peak-EWMA load: decayed latency times (requests in flight + 1).
    pub fn load(&self, now: Instant) -> f64 {
        let cost = {
            let e = self.ewma.lock().expect("ewma lock");
            e.decayed(now)
        };
        cost * (self.in_flight() + 1) as f64
    }

    /// Starts counting a request on this endpoint.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            started: Instant::now(),
        }
    }

    fn observe(&self, rtt: Duration, now: Instant) {
        let sample = rtt.as_nanos() as f64;
        let mut e = self.ewma.lock().expect("ewma lock");
        // Peak: a slower sample replaces the estimate at once; faster
        // ones pull it down gradually.
        e.cost_ns = if sample > e.cost_ns {
            sample
        } else {
            let w = (-(now - e.at).as_secs_f64() / EWMA_DECAY.as_secs_f64()).exp();
            e.cost_ns * w + sample * (1.0 - w)
        };
        e.at = now;
    }
}

impl Ewma {
    fn decayed(&self, now: Instant) -> f64 {
        let w = (-(now - self.at).as_secs_f64() / EWMA_DECAY.as_secs_f64()).exp();
        self.cost_ns * w
    }
}

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Records the time to the response head as a latency sample.
    pub fn responded(&self) {
        let now = Instant::now();
        self.endpoint.observe(now - self.started, now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
