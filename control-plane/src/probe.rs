//! The control plane's own probes: a TCP connect to every endpoint of
//! every backend each interval. Results feed the health verdict.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::state::Shared;

/// How long one connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Probes forever, every `interval`.
pub async fn run(shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let cur = shared.current();
        let mut probes = JoinSet::new();
        for b in &cur.objects.backends {
            for e in &b.endpoints {
                let key = (b.name.clone(), e.clone());
                probes.spawn(async move {
                    let connect = TcpStream::connect(key.1.as_str());
                    let ok = matches!(
                        tokio::time::timeout(CONNECT_TIMEOUT, connect).await,
                        Ok(Ok(_))
                    );
                    (key, ok)
                });
            }
        }
        let mut results = Vec::new();
        while let Some(r) = probes.join_next().await {
            results.extend(r.ok());
        }
        shared.with_health(|book| {
            for (key, ok) in results {
                book.probe(key, ok);
            }
        });
    }
}
