#!/usr/bin/env bash
# vakt-proxy side by side with NGINX and HAProxy under the same load, on
# loopback: each proxy pinned to one core in front of the same upstream.
#
#   benches/peers.sh                    # one round, defaults of the harness
#   RUNS=3 DURATION=10 benches/peers.sh
#
# Needs nginx, haproxy, wrk and h2load (apt-get install nginx haproxy wrk
# nghttp2-client) and the side-by-side harness, found at $PEERS
# (default: ../shared/bench/peers.sh beside the repository).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS:-$root/../shared/bench/peers.sh}
[ -f "$peers" ] || { echo "peers.sh: harness not found at $peers (set PEERS)" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p vakt-proxy
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/proxy.yaml" <<YAML
admin: {address: 127.0.0.1:19000}
listeners: [{name: outbound, address: 127.0.0.1:19080}]
routes:
  - name: bench
    rules: [{backendRefs: [{name: upstream}]}]
backends:
  - name: upstream
    endpoints: [127.0.0.1:18080]
    connectionPool: {maxIdlePerEndpoint: 256}
YAML

export PRODUCT=127.0.0.1:19080 PRODUCT_H2=127.0.0.1:19080
export PRODUCT_CMD="$root/target/release/vakt-proxy --config $dir/proxy.yaml --workers 1 --access-log ${ACCESS_LOG:-false}"
exec bash "$peers"
