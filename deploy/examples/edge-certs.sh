#!/usr/bin/env bash
# Makes a self-signed certificate for the example edge (api.shop.example,
# localhost and 127.0.0.1) into deploy/examples/certs/: edge.crt and
# edge.key. Run it again to rotate: the running edge serves the new pair
# from its next handshake on. The files are never committed.
set -euo pipefail
command -v openssl >/dev/null || { echo "edge-certs.sh needs openssl" >&2; exit 1; }
dir="$(dirname "$0")/certs"
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.new.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -days "${DAYS:-30}" -subj "/CN=api.shop.example" \
  -addext "subjectAltName=DNS:api.shop.example,DNS:localhost,IP:127.0.0.1" \
  -keyout "$tmp/edge.key" -out "$tmp/edge.crt" 2>/dev/null
chmod 600 "$tmp/edge.key"
# Key first, then certificate: the edge only swaps in a pair that matches.
mv "$tmp/edge.key" "$dir/edge.key"
mv "$tmp/edge.crt" "$dir/edge.crt"
echo "wrote $dir/edge.crt and $dir/edge.key"
openssl x509 -in "$dir/edge.crt" -noout -subject -enddate
