//! `vakt-control stat`: each route's and backend's request rate, success
//! rate and p99 latency, read straight from the proxies' admin `/metrics`,
//! for a look at the mesh before Prometheus is set up.
//!
//! Every refresh scrapes each proxy, sums the counters and histogram
//! buckets of `vakt_requests_total` and `vakt_request_duration_seconds`
//! over proxies and listeners, and shows what changed since the previous
//! scrape. A request is a success unless its status is 5xx, as in the
//! recording rules of `deploy/prometheus`.

mod counts;
mod fetch;

use std::time::Duration;

use anyhow::bail;

pub use counts::{Counts, Kind, Totals, Window};

/// Options of `vakt-control stat`.
#[derive(Clone, Debug, clap::Args)]
pub struct StatOptions {
    /// A proxy's admin address (`host:port`) to read `/metrics` from;
    /// repeat for several proxies. Without any, every connected node the
    /// control plane (`--server`) lists with an admin address is read.
    #[arg(long = "proxy", value_name = "HOST:PORT")]
    pub proxies: Vec<String>,
    /// Time between two scrapes.
    #[arg(long, default_value = "2s")]
    pub interval: vakt_api::Duration,
    /// Print one table, measured over one interval, and exit.
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub client: crate::cli::ClientOptions,
}

/// Runs the live view until interrupted, or prints one table with
/// `--once`.
pub async fn run(opts: StatOptions) -> anyhow::Result<()> {
    let every = opts.interval.get().max(Duration::from_millis(100));
    let proxies = match opts.proxies.is_empty() {
        true => from_nodes(&opts.client).await?,
        false => opts.proxies.clone(),
    };
    let mut before = scrape_all(&proxies).await?;
    loop {
        let wait = tokio::time::sleep(every);
        if !opts.once {
            tokio::select! {
                _ = wait => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        } else {
            wait.await;
        }
        let now = scrape_all(&proxies).await?;
        let table = Window::between(&before, &now, every).render();
        if opts.once {
            print!("{table}");
            return Ok(());
        }
        // Clear the screen and go home before each frame.
        print!("\x1b[2J\x1b[H{table}");
        before = now;
    }
}

/// The admin addresses of the connected nodes the control plane lists.
async fn from_nodes(client: &crate::cli::ClientOptions) -> anyhow::Result<Vec<String>> {
    let req = vakt_api::pb::control::v1::ListNodesRequest {};
    let nodes = crate::cli::connect(client).await?.list_nodes(req).await?;
    let found: Vec<String> = nodes
        .into_inner()
        .nodes
        .into_iter()
        .filter(|n| n.connected && !n.admin_address.is_empty())
        .map(|n| n.admin_address)
        .collect();
    if found.is_empty() {
        bail!("no connected node reports an admin address; name proxies with --proxy");
    }
    Ok(found)
}

/// Scrapes every proxy; one that does not answer is named on standard
/// error and left out, and an error is returned when none answers.
async fn scrape_all(proxies: &[String]) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    let mut answered = 0;
    for p in proxies {
        match fetch::metrics(p).await {
            Ok(text) => {
                totals.add_text(&text)?;
                answered += 1;
            }
            Err(e) => eprintln!("{p}: {e:#}"),
        }
    }
    if answered == 0 {
        bail!("no proxy answered on /metrics");
    }
    Ok(totals)
}
