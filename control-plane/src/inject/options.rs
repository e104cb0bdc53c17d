//! What `vakt-control inject` adds, as flags: the image, the control
//! plane's address, the token secret and the port lists. The numbers the
//! proxy, the iptables script and the injector share are fixed here.

/// The injector's version, written into `vakt.dev/injected`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The image of both injected containers unless `--image` says otherwise.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/vakt-mesh/vakt-proxy:", env!("CARGO_PKG_VERSION"));
/// The control plane as the sidecar reaches it inside the cluster.
pub const DEFAULT_CONTROL_PLANE: &str = "http://vakt-control.vakt-system.svc:7070";
/// The Secret (in the app's namespace) holding the proxy's token.
pub const DEFAULT_TOKEN_SECRET: &str = "vakt-node-token";
/// Where the sidecar reads its token: key `token` of the Secret.
pub const TOKEN_FILE: &str = "/var/run/vakt/token/token";
/// The directory the token Secret is mounted on.
pub const TOKEN_DIR: &str = "/var/run/vakt/token";
/// Where the sidecar keeps its last good snapshot: an `emptyDir`, so a
/// restarted sidecar starts from it while the control plane is away.
pub const CACHE_DIR: &str = "/var/run/vakt/cache";
/// The proxy's UID and GID; iptables never redirects its traffic.
pub const PROXY_UID: i64 = 1717;
/// The admin listener: probes and metrics.
pub const ADMIN_PORT: u16 = 17000;
/// The outbound listener (iptables OUTPUT REDIRECT).
pub const OUTBOUND_PORT: u16 = 17001;
/// The inbound listener (iptables PREROUTING REDIRECT).
pub const INBOUND_PORT: u16 = 17006;

/// Settings of an injection; the defaults match the shipped manifests.
#[derive(Clone, Debug, clap::Args)]
pub struct InjectOptions {
    /// Image of the `vakt-init` and `vakt-proxy` containers.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Control-plane URL given to the sidecar.
    #[arg(long, default_value = DEFAULT_CONTROL_PLANE)]
    pub control_plane: String,
    /// Secret in the app's namespace whose key `token` the sidecar
    /// presents to the control plane; mounted optional.
    #[arg(long, default_value = DEFAULT_TOKEN_SECRET)]
    pub token_secret: String,
    /// Destination ports where the server speaks first (comma-separated);
    /// none by default. Annotation `vakt.dev/opaque-ports` overrides it.
    #[arg(long, value_delimiter = ',', value_parser = port)]
    pub opaque_ports: Vec<u16>,
    /// Inbound ports not redirected to the proxy, beside the admin port
    /// 17000. Annotation `vakt.dev/inbound-ports-to-ignore` overrides it.
    #[arg(long, value_delimiter = ',', value_parser = port)]
    pub inbound_ports_to_ignore: Vec<u16>,
    /// Outbound destination ports not redirected to the proxy.
    /// Annotation `vakt.dev/outbound-ports-to-ignore` overrides it.
    #[arg(long, value_delimiter = ',', value_parser = port)]
    pub outbound_ports_to_ignore: Vec<u16>,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.into(),
            control_plane: DEFAULT_CONTROL_PLANE.into(),
            token_secret: DEFAULT_TOKEN_SECRET.into(),
            opaque_ports: Vec::new(),
            inbound_ports_to_ignore: Vec::new(),
            outbound_ports_to_ignore: Vec::new(),
        }
    }
}

/// Reads one port number, 1 to 65535.
pub fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port number (1-65535)")),
    }
}

/// Reads a comma-separated list of ports; blank means none.
pub fn port_list(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(port)
        .collect()
}

/// Writes ports as the comma-separated list the proxy and script read.
pub fn join(ports: &[u16]) -> String {
    let text: Vec<String> = ports.iter().map(u16::to_string).collect();
    text.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_read_and_write_back() {
        assert_eq!(port_list(" 3306, 25 ,").unwrap(), [3306, 25]);
        assert!(port_list("").unwrap().is_empty());
        assert!(port_list("0").is_err());
        assert!(port_list("80,http").is_err());
        assert!(port_list("65536").is_err());
        assert_eq!(join(&[17000, 9090]), "17000,9090");
    }
}
