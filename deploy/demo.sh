#!/usr/bin/env bash
# A mesh on loopback, no root needed: vakt-control on its embedded store,
# an edge vakt-proxy, service A and two endpoints of service B, each app
# behind its own sidecar vakt-proxy. Routes and backends are pushed with
# `vakt-control apply`; then real requests travel edge -> A -> B, one B
# endpoint is made to fail (ejected), then both (breaker opens, fallback).
#
# Without iptables nothing is intercepted, so every hop names its proxy:
# the edge sends to A's sidecar, which hands requests to the A app; the A
# app calls B through its sidecar's outbound listener with `host: b`; that
# sidecar balances over the B sidecars, which hand requests to their apps.
# In a pod the same hops happen transparently (deploy/iptables).
#
# Stays up until Ctrl-C; with --exit (or VAKT_DEMO_EXIT=1) it stops after
# the walk-through. Everything it started stops when it ends.
# Env: VAKT_BIN_DIR (use built binaries, skip cargo), VAKT_DEMO_PORT_BASE
# (default 16000: ports BASE to BASE+70 are used).
set -euo pipefail
cd "$(dirname "$0")/.."

exit_after=${VAKT_DEMO_EXIT:-}
for arg in "$@"; do
  case "$arg" in
    --exit) exit_after=1 ;;
    --keep-running) exit_after="" ;;
    *) echo "usage: $0 [--exit | --keep-running]" >&2; exit 2 ;;
  esac
done

if [ -n "${VAKT_BIN_DIR:-}" ]; then
  bin=$VAKT_BIN_DIR
else
  echo "building (release) ..."
  cargo build --release --quiet -p vakt-proxy -p vakt-control -p vakt-tests --bins
  bin=${CARGO_TARGET_DIR:-target}/release
fi

base=${VAKT_DEMO_PORT_BASE:-16000}
lo=127.0.0.1
control=$lo:$((base + 70))
edge=$lo:$base edge_admin=$lo:$((base + 1))
a_app=$lo:$((base + 10)) a_in=$lo:$((base + 11)) a_out=$lo:$((base + 12)) a_admin=$lo:$((base + 13))
b1_app=$lo:$((base + 20)) b1_in=$lo:$((base + 21)) b1_admin=$lo:$((base + 23))
b2_app=$lo:$((base + 30)) b2_in=$lo:$((base + 31)) b2_admin=$lo:$((base + 33))

for port in $(seq "$base" $((base + 33))) $((base + 70)); do
  if (exec 3<>"/dev/tcp/$lo/$port") 2>/dev/null; then
    echo "port $port is in use; choose other ports with VAKT_DEMO_PORT_BASE" >&2
    exit 1
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vakt-demo.XXXXXX")
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "stopped: ${pids[*]}"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in the background, its log in $work/NAME.log.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}

# wait_for WHAT CMD...: retries CMD for up to 10 s.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 1 100); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$what did not come up; logs in $work:" >&2
  tail -n 5 "$work"/*.log >&2
  exit 1
}

od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$work/token"
echo >>"$work/token"
export VAKT_SERVER=http://$control VAKT_TOKEN_FILE=$work/token
ctl() { "$bin/vakt-control" "$@"; }

start control "$bin/vakt-control" serve --listen "$control" --data-dir "$work/data" \
  --token-file "$work/token"
wait_for vakt-control ctl get routes

# The mesh's routes and backends, the same for every proxy: requests for
# host `a` go to A's sidecar, for host `b` to the sidecars of B1 and B2.
cat >"$work/mesh.yaml" <<EOF
routes:
  - name: a
    hostnames: [a]
    rules:
      - backendRefs: [{name: a}]
        timeouts: {request: 5s}
  - name: b
    hostnames: [b]
    rules:
      - backendRefs: [{name: b}]
        timeouts: {request: 2s, backendRequest: 500ms}
        retry: {attempts: 2, codes: [502, 503, 504], backoff: 10ms}
        fallback:
          status: 200
          headers: {content-type: text/plain}
          body: "fallback (b is unavailable)\n"
backends:
  - name: a
    endpoints: [$a_in]
  - name: b
    endpoints: [$b1_in, $b2_in]
    loadBalancer: round-robin
    circuitBreaker: {consecutiveFailures: 5, openFor: 10s}
    outlierDetection: {consecutiveFailures: 2, ejectionTime: 30s, maxEjectionPercent: 50}
EOF
echo "\$ vakt-control apply -f mesh.yaml"
ctl apply -f "$work/mesh.yaml"

# run_proxy NAME SERVICE: vakt-proxy on $work/NAME.yaml and vakt-control.
run_proxy() {
  start "$1" "$bin/vakt-proxy" --config "$work/$1.yaml" --access-log false \
    --control-plane "http://$control" --token-file "$work/token" \
    --node-id "$1" --service "$2" --cache-dir "$work/cache-$1"
}

# sidecar NAME SERVICE ADMIN INBOUND APP [OUTBOUND]: a proxy whose own file
# holds its listeners and the inbound route to its app, which wins over
# the mesh's route for the same host (file routes come first).
sidecar() {
  local name=$1 service=$2 admin=$3 inbound=$4 app=$5 outbound=${6:-}
  {
    echo "admin: {address: \"$admin\"}"
    echo "listeners:"
    echo "  - {name: inbound, address: \"$inbound\"}"
    [ -z "$outbound" ] || echo "  - {name: outbound, address: \"$outbound\"}"
    echo "routes:"
    echo "  - name: $name-inbound"
    echo "    listeners: [inbound]"
    echo "    hostnames: [$service]"
    echo "    rules: [{backendRefs: [{name: $name-app}]}]"
    echo "backends: [{name: $name-app, endpoints: [\"$app\"]}]"
  } >"$work/$name.yaml"
  run_proxy "$name" "$service"
}

start b1-app "$bin/vakt-example" --listen "$b1_app" --name b1
start b2-app "$bin/vakt-example" --listen "$b2_app" --name b2
start a-app "$bin/vakt-example" --listen "$a_app" --name a \
  --call "http://$a_out/work" --call-host b
sidecar b1 b "$b1_admin" "$b1_in" "$b1_app"
sidecar b2 b "$b2_admin" "$b2_in" "$b2_app"
sidecar a a "$a_admin" "$a_in" "$a_app" "$a_out"
printf 'admin: {address: "%s"}\nlisteners: [{name: edge, address: "%s"}]\n' \
  "$edge_admin" "$edge" >"$work/edge.yaml"
run_proxy edge edge
for admin in "$edge_admin" "$a_admin" "$b1_admin" "$b2_admin"; do
  wait_for "the proxy with admin $admin" curl -fs "http://$admin/ready"
done
wait_for "the chain edge -> A -> B" curl -fs -H "host: a" "http://$edge/chain"
echo "the mesh is up: pids ${pids[*]}"

# chain N: N requests edge -> A -> B, answers counted.
chain() {
  for _ in $(seq 1 "$1"); do
    curl -s -H "host: a" "http://$edge/chain" -w ' (%{http_code})' | tr -d '\n'
    echo
  done | sort | uniq -c
}
metrics() {
  echo "\$ curl -s http://$a_admin/metrics  (A's sidecar, backend b)"
  curl -s "http://$a_admin/metrics" |
    grep -E '^vakt_(breaker_state|ejections_total|fallbacks_total|retries_total)\{[^}]*backend="b"' || true
}

echo
echo "== 1. edge -> A -> B: A's sidecar balances over B1 and B2"
echo "\$ curl -H 'host: a' http://$edge/chain"
chain 8
echo
echo "== 2. B1 fails every request: its endpoint is ejected, retries go to B2"
echo "\$ curl -X POST http://$b1_app/admin/fail"
curl -s -X POST "http://$b1_app/admin/fail"
chain 20
metrics
echo
echo "== 3. B2 fails too: the breaker of backend b opens, A gets the fallback"
echo "\$ curl -X POST http://$b2_app/admin/fail"
curl -s -X POST "http://$b2_app/admin/fail"
chain 12
metrics
echo
echo "== 4. both heal; after its 10 s open period the breaker lets a probe through and closes"
echo "\$ curl -X POST 'http://$b1_app/admin/fail?on=false'  (and B2)"
curl -s -X POST "http://$b1_app/admin/fail?on=false" >/dev/null
curl -s -X POST "http://$b2_app/admin/fail?on=false" >/dev/null
echo "waiting for the breaker of b to close ..."
for _ in $(seq 1 30); do
  curl -s -H "host: a" "http://$edge/chain" | grep -q fallback || break
  sleep 0.5
done
chain 8
metrics
echo
echo "== where to look"
echo "metrics:  edge http://$edge_admin/metrics   A http://$a_admin/metrics"
echo "          B1 http://$b1_admin/metrics   B2 http://$b2_admin/metrics"
echo "backends: curl http://$a_admin/backends  (breaker, endpoints, ejections)"
echo "logs:     $work/*.log (removed when the demo stops)"
echo "\$ VAKT_SERVER=$VAKT_SERVER VAKT_TOKEN_FILE=$VAKT_TOKEN_FILE vakt-control get nodes"
ctl get nodes

if [ -n "$exit_after" ]; then
  exit 0
fi
echo
echo "running; Ctrl-C stops everything"
wait
