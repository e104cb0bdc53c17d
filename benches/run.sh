#!/usr/bin/env bash
# vakt-proxy side by side with NGINX and HAProxy on loopback: builds the
# proxy, the example upstream and the harness, then runs mesh-bench.
#
#   benches/run.sh                 # full run, release build (~15 minutes)
#   benches/run.sh --smoke         # seconds long, debug build: proves it works
#   benches/run.sh --rounds 5 --duration 10 --out /tmp/results
#   benches/run.sh --soak          # vakt-proxy alone, 10 minutes at half
#                                  # its saturating rate: soak.md, .json, .svg
#   benches/run.sh --soak --soak-seconds 120 --soak-rate 5000
#
# Needs nginx and haproxy (apt-get install nginx haproxy). Results go to
# benches/results/ unless --out says otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
profile=release
flag=--release
for arg in "$@"; do
  if [ "$arg" = --smoke ]; then profile=debug; flag=; fi
done
cargo build $flag --quiet --locked --manifest-path "$root/Cargo.toml" \
  -p vakt-proxy -p vakt-tests -p vakt-benches \
  --bin vakt-proxy --bin vakt-example --bin mesh-bench
exec "$target/$profile/mesh-bench" --bin-dir "$target/$profile" "$@"
