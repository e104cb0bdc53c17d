#!/usr/bin/env bash
# A local mesh on loopback: two example services, vakt-proxy in front of
# them with its built-in config, and real requests sent through it.
# Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p vakt-proxy -p vakt-tests --bins
bin=${CARGO_TARGET_DIR:-target}/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$bin/vakt-example" --listen 127.0.0.1:18080 --name orders 2>/dev/null &
pids+=($!)
"$bin/vakt-example" --listen 127.0.0.1:18081 --name payments 2>/dev/null &
pids+=($!)
log=$(mktemp)
"$bin/vakt-proxy" 2>"$log" &
pids+=($!)

ready=""
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:15000/ready >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "vakt-proxy did not become ready (are ports 15000, 15001, 18080, 18081 free?):" >&2
  cat "$log" >&2
  exit 1
fi
echo "vakt-proxy is ready: listener 127.0.0.1:15001, admin 127.0.0.1:15000"

show() { echo; echo "\$ ${*@Q}"; "$@"; echo; }
show curl -s -i -H 'host: orders' http://127.0.0.1:15001/orders/42
show curl -s -i --http2-prior-knowledge -H 'host: payments' http://127.0.0.1:15001/pay
show curl -s -i -H 'host: unknown' http://127.0.0.1:15001/
echo "\$ recommendations is down: its callers get the fallback at once, its breaker opens"
for _ in 1 2 3 4; do
  curl -s -o /dev/null -H 'host: recommendations' http://127.0.0.1:15001/recs \
    -w '%{http_code} vakt-fallback: %header{vakt-fallback} in %{time_total}s\n'
done
curl -s http://127.0.0.1:15000/metrics | grep -E '^vakt_(breaker_state|fallbacks_total)'
echo
echo "\$ 200 requests to orders over HTTP/1.1 keep-alive"
codes=$(for _ in $(seq 1 200); do
    echo 'url = "http://127.0.0.1:15001/orders/1"'
    echo 'header = "host: orders"'
    echo 'output = "/dev/null"'
  done | curl -s -K - -w '%{http_code}\n' | sort | uniq -c)
echo "$codes"
echo
echo "\$ curl -s http://127.0.0.1:15000/metrics | grep vakt_requests_total"
curl -s http://127.0.0.1:15000/metrics | grep '^vakt_requests_total'
echo
echo "one access-log line:"
grep -m1 '^{' "$log" || true
rm -f "$log"
