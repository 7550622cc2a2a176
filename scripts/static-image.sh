#!/usr/bin/env bash
# Builds meshkitd, meshctl, meshkit-probe and meshkit-chaos as static binaries (glibc, crt-static),
# puts the first two in an image built FROM scratch (compose/images/meshkitd.Dockerfile), the probe
# agent in one of its own (compose/images/meshkit-probe.Dockerfile) and meshkit-chaos in a third
# (compose/images/meshkit-chaos.Dockerfile, the compose stack's autoscaler service), and
# smoke-tests them: --help and --version, check-config on a good and two bad mounted configs,
# certificates made by the image's meshctl,
# and a node started in a container whose /healthz answers on a port published on 127.0.0.1.
#
#   scripts/static-image.sh [--profile release|dev] [--tag NAME:TAG] [--probe-tag NAME:TAG]
#                           [--chaos-tag NAME:TAG] [--no-smoke]
#
# --profile dev is what scripts/test.sh uses: an unoptimized build costs less than a release
# build (4.5 CPU-minutes here). Neither shares artifacts with the test build: --target gives the
# static build its own directory, and its host units (proc-macros, build scripts) hash apart.
# Every wait is bounded; the containers and the scratch directory are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
tag=meshkit/meshkitd:dev
probe_tag=meshkit/meshkit-probe:dev
chaos_tag=meshkit/meshkit-chaos:dev
smoke=1
while (($#)); do
  case "$1" in
    --profile) profile=${2:?--profile needs release or dev}; shift 2 ;;
    --tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
    --probe-tag) probe_tag=${2:?--probe-tag needs NAME:TAG}; shift 2 ;;
    --chaos-tag) chaos_tag=${2:?--chaos-tag needs NAME:TAG}; shift 2 ;;
    --no-smoke) smoke=0; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "static-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) profile_dir=release ;;
  dev) profile_dir=debug ;;
  *) echo "static-image.sh: --profile is release or dev, not $profile" >&2; exit 2 ;;
esac

# Limits, in seconds.
BUILD_TIMEOUT_SECS=1800   # cargo, on a busy 2-core machine
IMAGE_TIMEOUT_SECS=300    # docker build of two files
DOCKER_TIMEOUT_SECS=60    # any one docker run/rm/port/logs
HEALTHZ_TIMEOUT_SECS=30   # from container start to the first "ok"

step() { printf '\n--> %s\n' "$*"; }
fail() { echo "static-image.sh: FAILED: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed${2:+ ($2)}"; }
d() { timeout "$DOCKER_TIMEOUT_SECS" docker "$@"; }
size() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# No musl target here: the host triple with a static C runtime. Giving --target explicitly keeps
# RUSTFLAGS off build scripts and proc-macros (they stay dynamic host code, shared with ordinary
# builds) and puts the static artifacts in their own directory.
triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-target}
out="$target_dir/$triple/$profile_dir"

step "static build ($profile profile, $triple, crt-static)"
started=$SECONDS
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  timeout "$BUILD_TIMEOUT_SECS" nice -n 10 \
  cargo build --locked --profile "$profile" --target "$triple" -p meshkit-cli -p meshkit-probe \
  -p meshkit-chaos --bins
echo "built in $((SECONDS - started)) s"

step "the binaries are static"
for bin in meshkitd meshctl meshkit-probe meshkit-chaos; do
  path="$out/$bin"
  [[ -x "$path" ]] || fail "$path was not built"
  # ldd says "not a dynamic executable" (static) or "statically linked" (static-pie).
  linkage=$(ldd "$path" 2>&1 || true)
  grep -qE 'not a dynamic executable|statically linked' <<<"$linkage" \
    || fail "$path is dynamically linked: $linkage"
  if command -v file >/dev/null; then
    description=$(file -b "$path")
    grep -qE 'static(-pie)? linked|statically linked' <<<"$description" \
      || fail "file says $path is not static: $description"
    echo "$bin: $description"
  fi
  echo "$bin: ldd: $(tr -d '\t' <<<"$linkage")"
done
# The tests' fault-injection hook (a cargo feature of meshkit-node only the tests enable) must not
# be in what ships: its environment variable's name would be in the binary.
if grep -q MESHKITD_FAULT "$out/meshkitd"; then
  fail "$out/meshkitd has the tests' fault-injection hook (feature fault-injection)"
fi
echo "meshkitd: no fault-injection hook"

need docker
scratch=$(mktemp -d "${TMPDIR:-/tmp}/meshkit-image.XXXXXX")
containers=()
cleanup() {
  for c in "${containers[@]}"; do
    timeout "$DOCKER_TIMEOUT_SECS" docker rm -f "$c" >/dev/null 2>&1 || true
  done
  rm -rf "$scratch"
}
trap cleanup EXIT

# Builds image TAG from compose/images/DOCKERFILE with the binaries BIN... in a context of its
# own (NAME-context), without debug information (the release profile keeps line tables for
# profiling); symbols stay, so a panic's backtrace still names functions. The classic builder:
# BuildKit needs the buildx plugin, and there is nothing for it to pull.
image() {
  local name=$1 dockerfile=$2 image_tag=$3 bin
  shift 3
  mkdir "$scratch/$name-context"
  for bin in "$@"; do
    cp "$out/$bin" "$scratch/$name-context/$bin"
    if command -v strip >/dev/null; then
      strip --strip-debug "$scratch/$name-context/$bin"
    fi
  done
  DOCKER_BUILDKIT=0 timeout "$IMAGE_TIMEOUT_SECS" docker build --quiet \
    -f "compose/images/$dockerfile" -t "$image_tag" "$scratch/$name-context" \
    >"$scratch/$name-build.log" 2>&1 || { cat "$scratch/$name-build.log" >&2; fail "docker build ($name)"; }
}

step "image $tag (FROM scratch)"
image meshkitd meshkitd.Dockerfile "$tag" meshkitd meshctl
image_bytes=$(d image inspect -f '{{.Size}}' "$tag")
image probe meshkit-probe.Dockerfile "$probe_tag" meshkit-probe
probe_image_bytes=$(d image inspect -f '{{.Size}}' "$probe_tag")
image chaos meshkit-chaos.Dockerfile "$chaos_tag" meshkit-chaos
chaos_image_bytes=$(d image inspect -f '{{.Size}}' "$chaos_tag")

step "sizes"
for bin in meshkitd meshctl; do
  printf '%-9s %s built, %s in the image\n' "$bin" \
    "$(mib "$(size "$out/$bin")")" "$(mib "$(size "$scratch/meshkitd-context/$bin")")"
done
printf '%-9s %s\n' image "$(mib "$image_bytes")"
printf '%-9s %s built, image %s\n' probe "$(mib "$(size "$out/meshkit-probe")")" "$(mib "$probe_image_bytes")"
printf '%-9s %s built, image %s\n' chaos "$(mib "$(size "$out/meshkit-chaos")")" "$(mib "$chaos_image_bytes")"

if ((smoke == 0)); then
  echo "image built; smoke test skipped (--no-smoke)"
  exit 0
fi

need curl "to ask /healthz from the host"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# The mounted directory belongs to the caller and its keys are mode 0600: run as the caller.
user="$(id -u):$(id -g)"
work="$scratch/work"
mkdir "$work"
run() { d run --rm --user "$user" --network none -v "$work:/etc/meshkit" "$@"; }

step "smoke: --help and --version"
help=$(d run --rm --network none "$tag")
grep -q 'check-config' <<<"$help" || fail "meshkitd --help (the default command): $help"
[[ "$(d run --rm --network none "$tag" --version)" == "meshkitd $version" ]] \
  || fail "meshkitd --version is not 'meshkitd $version'"
[[ "$(d run --rm --network none --entrypoint /usr/local/bin/meshctl "$tag" --version)" == "meshctl $version" ]] \
  || fail "meshctl --version is not 'meshctl $version'"
[[ "$(d run --rm --network none "$probe_tag" --version)" == "meshkit-probe $version" ]] \
  || fail "meshkit-probe --version is not 'meshkit-probe $version'"
[[ "$(d run --rm --network none "$chaos_tag" --version)" == "meshkit-chaos $version" ]] \
  || fail "meshkit-chaos --version is not 'meshkit-chaos $version'"
echo "meshkitd $version, meshctl $version, meshkit-probe $version and meshkit-chaos $version answer"

step "smoke: meshctl certs init in the container"
run --entrypoint /usr/local/bin/meshctl "$tag" certs init --out certs --nodes 1 >/dev/null 2>&1 \
  || fail "meshctl certs init in the container"
[[ -s "$work/certs/ca.pem" && -s "$work/certs/node-1.key" ]] || fail "no certificates written"
echo "certificates in $(ls "$work/certs" | wc -l) files"

# listen on every interface of the container (ports are published from there); peers dial the
# advertised address, and this one-node mesh only has itself.
cat >"$work/node.toml" <<'TOML'
id = 1
listen = "0.0.0.0:7001"
advertise = "127.0.0.1:7001"
control = "0.0.0.0:8101"
seeds = []

[tls]
cert = "certs/node-1.pem"
key = "certs/node-1.key"
ca = "certs/ca.pem"
TOML
printf 'colour = 1\n' >"$work/unknown-key.toml"
sed 's/^id = 1$/id = 2/' "$work/node.toml" >"$work/wrong-id.toml"

step "smoke: check-config"
good=$(run "$tag" check-config node.toml 2>&1) || fail "check-config of a good file: $good"
echo "$good"
expect_refusal() { # FILE WHAT-THE-MESSAGE-NAMES
  local message
  if message=$(run "$tag" check-config "$1" 2>&1); then
    fail "check-config accepted $1: $message"
  fi
  grep -qF -- "$2" <<<"$message" || fail "check-config of $1 does not name $2: $message"
  echo "refused, naming $2: $(tail -n1 <<<"$message")"
}
expect_refusal unknown-key.toml 'colour'
expect_refusal wrong-id.toml 'key `id`'

step "smoke: meshkit-probe check-config in its container"
printf '[agent]\nname = "smoke"\ncolour = 1\n' >"$work/probes-bad.toml"
if message=$(run "$probe_tag" check-config /etc/meshkit/probes-bad.toml 2>&1); then
  fail "meshkit-probe check-config accepted an unknown key: $message"
fi
grep -qF -- 'colour' <<<"$message" || fail "meshkit-probe check-config does not name the bad key: $message"
echo "refused, naming colour: $(tail -n1 <<<"$message")"

step "smoke: a node in a container, /healthz from the host"
# The control endpoint serves HTTP/2 over TLS on TCP and HTTP/3 on UDP, one port number (Alt-Svc
# names it): publish both on 127.0.0.1 under one free host port, retried if another process
# takes it meanwhile.
name=""
port=""
for attempt in 1 2 3; do
  candidate=$((20000 + RANDOM % 20000))
  ss -Htuln 2>/dev/null | awk '{ print $5 }' | grep -q ":$candidate\$" && continue
  name="meshkit-smoke-$$-$attempt"
  containers+=("$name")
  if d run -d --name "$name" --user "$user" -v "$work:/etc/meshkit:ro" \
    -p "127.0.0.1:$candidate:8101/tcp" -p "127.0.0.1:$candidate:8101/udp" \
    "$tag" --config node.toml >/dev/null; then
    port=$candidate
    break
  fi
done
[[ -n "$port" ]] || fail "could not publish the control port on 127.0.0.1"
# curl speaks HTTP/2 over TLS; it checks the node's certificate (DNS name node-1) against the CA.
healthz() {
  curl -sS --max-time 2 --cacert "$work/certs/ca.pem" -w ' (HTTP/%{http_version})' \
    --resolve "node-1:$port:127.0.0.1" "https://node-1:$port/healthz" 2>&1
}
deadline=$((SECONDS + HEALTHZ_TIMEOUT_SECS))
until answer=$(healthz) && [[ "$answer" == "ok"$'\n'" (HTTP/2)" ]]; do
  if ((SECONDS >= deadline)); then
    echo "--- container logs" >&2
    d logs "$name" >&2 || true
    fail "/healthz on 127.0.0.1:$port did not answer ok within $HEALTHZ_TIMEOUT_SECS s: $answer"
  fi
  if [[ "$(d inspect -f '{{.State.Running}}' "$name")" != true ]]; then
    d logs "$name" >&2 || true
    fail "the node's container exited"
  fi
  sleep 0.5
done
echo "curl https://node-1:$port/healthz via 127.0.0.1: $(tr '\n' ' ' <<<"$answer")"
# meshctl (the static binary just built, run on the host) over HTTP/3 only: QUIC through the
# published UDP port. transport stats probes /healthz and counts what answered.
stats=$(timeout 30 "$out/meshctl" transport stats --addr "127.0.0.1:$port" --requests 2 \
  --protocol h3 --ca "$work/certs/ca.pem" --transport-state "$scratch/meshctl-state.json" --reset \
  --prometheus 2>&1) || fail "meshctl over HTTP/3: $stats"
grep -q 'mesh_transport_client_requests_total{protocol="h3"} 2' <<<"$stats" \
  || fail "meshctl's two /healthz probes were not answered over HTTP/3: $stats"
echo "meshctl transport stats --protocol h3: 2 /healthz probes answered over HTTP/3"
logs=$(d logs "$name" 2>&1)
grep -q 'node-1 gossip' <<<"$logs" || fail "the node did not print its addresses: $logs"
grep -m1 'node-1 gossip' <<<"$logs"
d stop --time 5 "$name" >/dev/null

echo
echo "static image smoke test passed ($tag, $(mib "$image_bytes"))"
