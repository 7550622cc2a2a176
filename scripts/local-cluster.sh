#!/usr/bin/env bash
# A local three-node MeshKit cluster with leases, on 127.0.0.1: development certificates, three
# node.toml files (all three are Raft voters contending for `global-control` and take 16 shards),
# three meshkitd.
# Ctrl-C stops them. Usage: scripts/local-cluster.sh [DIR]   (default target/local-cluster)
# MESHKIT_BIN=DIR uses the meshkitd and meshctl in DIR instead of building the release ones
# (scripts/check-docs.py runs this script with the debug build the tests made).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/local-cluster}

if [[ -n "${MESHKIT_BIN:-}" ]]; then
  bin=$(cd "$MESHKIT_BIN" && pwd)
else
  cargo build --release --locked -p meshkit-cli
  bin=$PWD/target/release
fi
mkdir -p "$dir"
# Absolute, so that the commands printed below work from any directory.
dir=$(cd "$dir" && pwd)
rm -rf "$dir/certs"
"$bin/meshctl" certs init --out "$dir/certs" --nodes 3 >/dev/null 2>&1

for i in 1 2 3; do
  cat >"$dir/node-$i.toml" <<EOF
id = $i
listen = "127.0.0.1:700$i"          # QUIC (gossip and Raft)
seeds = ["1@127.0.0.1:7001"]
control = "127.0.0.1:810$i"         # HTTP/3 (UDP) and HTTP/2 over TLS (TCP), same port number

[tls]
cert = "certs/node-$i.pem"
key = "certs/node-$i.key"
ca = "certs/ca.pem"

[metadata]
cluster = "local"
region = "loopback"

[access]
token_key = "certs/token-signing.pub"

[access.identities]
meshctl-admin = ["mesh.admin"]
meshctl-operator = ["mesh.operate"]
meshctl-observer = ["mesh.observe"]

[leadership]
voters = [1, 2, 3]
campaign = ["global-control"]
ttl = "3s"

[shards]
namespaces = { orders = 16 }
ttl = "3s"
EOF
  "$bin/meshkitd" check-config "$dir/node-$i.toml"
done

pids=()
stop() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
# Ctrl-C or SIGTERM is how this script is meant to end: stop the nodes and exit 0.
trap 'stop; exit 0' INT TERM
trap stop EXIT
for i in 1 2 3; do
  "$bin/meshkitd" --config "$dir/node-$i.toml" &
  pids+=($!)
done

cat <<EOF

Three nodes are running. In another shell:

  export MESHCTL_CA=$dir/certs/ca.pem MESHCTL_CERT=$dir/certs/meshctl-operator.pem \
         MESHCTL_KEY=$dir/certs/meshctl-operator.key MESHCTL_ADDR=127.0.0.1:8101
  $bin/meshctl peers list
  $bin/meshctl leaders status                  # names the holder of global-control
  $bin/meshctl leaders watch --addr 127.0.0.1:8102
  $bin/meshctl drain --addr 127.0.0.1:810N     # N: the holder; another node takes global-control
  $bin/meshctl resume --addr 127.0.0.1:810N
  $bin/meshctl shards list                     # owners, moves in flight, shards per node
  $bin/meshctl shards rebalance --dry-run      # the coordinator's plan, nothing moved
  $bin/meshctl transport stats --addr 127.0.0.1:8101

Ctrl-C here stops the cluster.
EOF
wait
