//! The sidecar role: a built-in bootstrap, so a proxy in a pod needs no
//! config file. Routes and backends come from the control plane; without
//! one, every connection passes through (outbound to its original
//! destination, inbound to the application).
//!
//! | listener | address | why |
//! |---|---|---|
//! | admin | `0.0.0.0:17000` | probes and metrics scraping from outside the pod |
//! | outbound | `127.0.0.1:17001` | the application's connections, redirected by `OUTPUT` rules |
//! | inbound | `0.0.0.0:17006` | connections to the pod, redirected by `PREROUTING` rules |

use vakt_api::config::{Listener, ListenerMode};
use vakt_api::{Config, Duration};

/// Default admin port.
pub const ADMIN_PORT: u16 = 17000;
/// Default outbound port.
pub const OUTBOUND_PORT: u16 = 17001;
/// Default inbound port.
pub const INBOUND_PORT: u16 = 17006;

/// Client connections from one address: everything outbound comes from
/// the application's own address, so the per-address limit of an edge
/// proxy would cap the application.
const MAX_CONNECTIONS_PER_IP: u32 = 1 << 20;

/// Flags of the sidecar role; ignored in the edge role.
#[derive(Clone, Debug, clap::Args)]
#[group(id = "sidecar")]
pub struct Options {
    /// Port of the outbound listener on 127.0.0.1.
    #[arg(long, env = "VAKT_OUTBOUND_PORT", default_value_t = OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Port of the inbound listener on 0.0.0.0.
    #[arg(long, env = "VAKT_INBOUND_PORT", default_value_t = INBOUND_PORT)]
    pub inbound_port: u16,
    /// Port of the admin listener on 0.0.0.0.
    #[arg(long, env = "VAKT_ADMIN_PORT", default_value_t = ADMIN_PORT)]
    pub admin_port: u16,
    /// Destination ports where the server speaks first (e.g. 3306,25):
    /// no protocol detection, straight TCP.
    #[arg(long, env = "VAKT_OPAQUE_PORTS", value_delimiter = ',')]
    pub opaque_ports: Vec<u16>,
    /// Connections to the application open at once; default no limit.
    #[arg(long, env = "VAKT_INBOUND_MAX_CONNECTIONS")]
    pub inbound_max_connections: Option<u32>,
    /// HTTP requests to the application in flight at once; more are
    /// answered 503. Default no limit.
    #[arg(long, env = "VAKT_INBOUND_MAX_REQUESTS")]
    pub inbound_max_requests: Option<u32>,
    /// How long protocol detection waits for a client's first bytes.
    #[arg(long, env = "VAKT_DETECT_TIMEOUT", default_value = "1s")]
    pub detect_timeout: Duration,
}

/// The sidecar's bootstrap config.
pub fn bootstrap(o: &Options) -> Config {
    let transparent = |name: &str, address: String, mode| Listener {
        name: name.into(),
        address,
        tls: None,
        trusted_proxies: Vec::new(),
        redirect_to_https: false,
        mode,
        opaque_ports: o.opaque_ports.clone(),
        detect_timeout: o.detect_timeout,
        max_connections: None,
        max_requests: None,
    };
    let outbound = transparent(
        "outbound",
        format!("127.0.0.1:{}", o.outbound_port),
        ListenerMode::Outbound,
    );
    let mut inbound = transparent(
        "inbound",
        format!("0.0.0.0:{}", o.inbound_port),
        ListenerMode::Inbound,
    );
    inbound.max_connections = o.inbound_max_connections;
    inbound.max_requests = o.inbound_max_requests;
    let mut config = Config {
        listeners: vec![outbound, inbound],
        ..Config::default()
    };
    config.admin.address = format!("0.0.0.0:{}", o.admin_port);
    config.limits.max_connections_per_ip = MAX_CONNECTIONS_PER_IP;
    config
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Role};

    #[test]
    fn the_defaults_are_the_documented_ports() {
        let cli = Cli::try_parse_from(["vakt-proxy", "--role", "sidecar"]).unwrap();
        assert_eq!(cli.role, Role::Sidecar);
        let c = bootstrap(&cli.sidecar);
        assert_eq!(c.admin.address, "0.0.0.0:17000");
        assert_eq!(c.listeners[0].address, "127.0.0.1:17001");
        assert_eq!(c.listeners[0].mode, ListenerMode::Outbound);
        assert_eq!(c.listeners[1].address, "0.0.0.0:17006");
        assert_eq!(c.listeners[1].mode, ListenerMode::Inbound);
        let mut problems = vakt_api::Problems::default();
        vakt_api::validate::check(&c, &mut problems);
        assert!(problems.is_empty(), "{problems}");
    }

    #[test]
    fn flags_set_ports_opaque_ports_and_limits() {
        let cli = Cli::try_parse_from([
            "vakt-proxy",
            "--role=sidecar",
            "--outbound-port=2",
            "--inbound-port=3",
            "--admin-port=4",
            "--opaque-ports=3306,25",
            "--inbound-max-connections=10",
            "--inbound-max-requests=5",
            "--detect-timeout=250ms",
        ])
        .unwrap();
        let c = bootstrap(&cli.sidecar);
        assert_eq!(c.admin.address, "0.0.0.0:4");
        assert_eq!(c.listeners[0].address, "127.0.0.1:2");
        assert_eq!(c.listeners[1].address, "0.0.0.0:3");
        assert_eq!(c.listeners[0].opaque_ports, [3306, 25]);
        assert_eq!(c.listeners[1].max_connections, Some(10));
        assert_eq!(c.listeners[1].max_requests, Some(5));
        assert_eq!(c.listeners[1].detect_timeout.get().as_millis(), 250);
        assert_eq!(c.listeners[0].max_requests, None);
    }
}
