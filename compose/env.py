#!/usr/bin/env python3
"""The compose chaos environment: N meshkitd, the probe agent, Prometheus with MeshKit's rules,
Alertmanager.

    compose/up   [--nodes 5] [--voters 3] [--contenders all|members] [--spares 3] [--project meshkit-chaos] [--port-base 18100] [--wait 120] [--json]
    compose/down [--project meshkit-chaos] [--json]
    compose/env.py status [--project meshkit-chaos] [--json]

`up` builds what is missing (the FROM-scratch meshkitd and meshkit-probe images with
scripts/static-image.sh; the
Prometheus and Alertmanager images from this machine's Debian binaries and the shared libraries
they load, FROM scratch too: there is no registry to pull a base image from), writes fresh
certificates (keeping the CA's key, certs/ca.key, from which the rotation drill issues new node
certificates), a token key and per-node configurations into compose/.run/PROJECT/, starts the
stack with docker-compose and waits until node 1 and node N see all N alive and node 1 (a voter) names a Raft leader.
Nodes name each other (`advertise = "meshkit-2:7001"`, `seeds = ["1@meshkit-1:7001"]`):
containers get their IPs only when they run. The control ports are published on 127.0.0.1
(node I at PORT_BASE + I, TCP and UDP, up to node 29: a larger stack, at most 100 nodes and no
spares, reaches the others on the project's network only), Prometheus at PORT_BASE + 90, Alertmanager at
PORT_BASE + 93, the probe agent's /metrics at PORT_BASE + 65. The agent (docs/probes.md) probes
every node with the observer certificate and sends its alerts to the stack's Alertmanager;
Prometheus scrapes it.

`--spares K` also writes certificates (from the run's CA), configurations and data directories for
nodes N+1..N+K, which nothing starts: `meshkit-chaos run` creates their containers through the
Docker API for a `membership-surge` fault (and removes them at the end of the run). `spares.json`
in the run directory says how (image, network, user, ports). Prometheus has a scrape job for each
spare whose target comes from a file (`prometheus-targets/node-I.json`, file-based discovery):
empty until the runner starts the spare, which writes its target there, and empties it again when
it removes it. The probe agent does not know them.

The `autoscaler` service (profile `autoscaler`, not started by `up`) is `meshkit-chaos autoscale`
in the meshkit/meshkit-chaos:dev image, on the project's network, with the Docker socket mounted:
it follows a queue's backpressure stream and starts or stops `meshctl queue work` containers,
writes its decisions to autoscale.jsonl and serves its metrics on port 9466 (published at
PORT_BASE + 66; Prometheus scrapes it as job `meshkit-autoscaler`). Its policy comes from
MESHKIT_AUTOSCALER_* variables (QUEUE, MIN_WORKERS, MAX_WORKERS, SCALE_OUT_AFTER,
SCALE_IN_AFTER, COOLDOWN, WORK, FOR, OUT), which docker-compose substitutes; `meshkit-chaos run`
sets them from a scenario's [autoscale] and starts it, and so can a user:
`MESHKIT_AUTOSCALER_MAX_WORKERS=3 docker-compose -p P -f compose/.run/P/docker-compose.json
--profile autoscaler up -d autoscaler` (decisions in compose/.run/P/autoscaler/ by default).

MESHKIT_MESHKITD_IMAGE, MESHKIT_PROBE_IMAGE and MESHKIT_CHAOS_IMAGE name other images than
meshkit/meshkitd:dev, meshkit/meshkit-probe:dev and meshkit/meshkit-chaos:dev (built with
scripts/static-image.sh --tag, --probe-tag and --chaos-tag).

`down` removes the project's containers, networks and volumes and the run directory (its keys),
and checks that docker lists none of them afterwards.

Exit status: 0 done, 1 the stack did not become healthy (its logs are printed), 2 the tool could
not run (bad arguments, no Docker, a missing Debian package: the message says which).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "compose" / ".run"
# Overridable, so that a stack can run images built from another tree without retagging the
# shared `:dev` ones (scripts/static-image.sh --tag/--probe-tag builds them).
MESHKITD_IMAGE = os.environ.get("MESHKIT_MESHKITD_IMAGE", "meshkit/meshkitd:dev")
PROBE_IMAGE = os.environ.get("MESHKIT_PROBE_IMAGE", "meshkit/meshkit-probe:dev")
PROBE_PORT = 9465
CHAOS_IMAGE = os.environ.get("MESHKIT_CHAOS_IMAGE", "meshkit/meshkit-chaos:dev")
# The autoscaler service's /metrics inside its container; published at PORT_BASE + 66.
AUTOSCALER_PORT = 9466
# Where the Docker daemon's socket is on this host (the autoscaler mounts it).
DOCKER_SOCKET = "/var/run/docker.sock"
PROMETHEUS_IMAGE = "meshkit/prometheus:dev"
ALERTMANAGER_IMAGE = "meshkit/alertmanager:dev"
GRAFANA_IMAGE = "grafana/grafana-oss:11.3.0"
# Debian's binaries, the package that has each, and the data it reads at run time (Debian's
# Alertmanager loads its notification templates from /usr/share, not from the binary).
DEBIAN_BINARIES = {
    PROMETHEUS_IMAGE: ("/usr/bin/prometheus", "prometheus", []),
    ALERTMANAGER_IMAGE: ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager",
                         ["/usr/share/prometheus/alertmanager"]),
}
GOSSIP_PORT = 7001
CONTROL_PORT = 8101
# Limits, in seconds: every wait ends by itself.
DOCKER_TIMEOUT = 120
IMAGE_BUILD_TIMEOUT = 2400
HEALTHY_TIMEOUT = 120
# Node I's control port is published at PORT_BASE + I up to this node (PORT_BASE + 30 on are the
# tools'); larger stacks (a scale measurement, no spares) reach the rest on their network.
MAX_PUBLISHED = 29
MAX_NODES = 100
# Containers besides the nodes: the probe agent, Prometheus, Alertmanager, and the autoscaler.
TOOL_CONTAINERS = 4
# `docker-compose up -d` and `down` take about a second a container on 2 cores: their bound
# grows with the stack (100 nodes did not start within DOCKER_TIMEOUT alone).
COMPOSE_SECS_PER_CONTAINER = 2
# The kernel's ARP (neighbour) table is one table for every network namespace, bounded by this
# sysctl of the host (1,024 by default): each container holds an entry for every other one it
# talks to, so a 35-node stack (about 39 x 38 entries) overflows it, and then new connections
# (a node's first dial, meshctl's) stall without an error ("neighbor table overflow!" in dmesg).
# MESHKIT_NEIGH_GC_THRESH3 names another file to read it from (the tests).
NEIGH_GC_THRESH3 = Path(os.environ.get("MESHKIT_NEIGH_GC_THRESH3", "/proc/sys/net/ipv4/neigh/default/gc_thresh3"))
# Prometheus' file-based discovery of the spares, in the run directory (prometheus_config).
SPARE_TARGETS = "prometheus-targets"


class ToolError(Exception):
    """The tool cannot run; the message says what to do (exit 2)."""


def log(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def run(cmd: list[str], timeout: float = DOCKER_TIMEOUT, check: bool = True, **kw) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError as e:
        raise ToolError(f"{cmd[0]} is not installed ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f} s") from e
    if check and done.returncode != 0:
        raise ToolError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False).returncode == 0


def ensure_docker() -> None:
    if run(["docker", "info"], check=False).returncode != 0:
        raise ToolError("no Docker daemon answers `docker info`: start it (the environment needs Docker and docker-compose)")
    run(["docker-compose", "version"])


def ensure_meshkitd_image(args: argparse.Namespace) -> None:
    """meshkitd's, meshkit-probe's and meshkit-chaos' images (one build makes the three)."""
    if image_exists(MESHKITD_IMAGE) and image_exists(PROBE_IMAGE) and image_exists(CHAOS_IMAGE):
        return
    log(args, f"building {MESHKITD_IMAGE}, {PROBE_IMAGE} and {CHAOS_IMAGE} (scripts/static-image.sh --profile dev --no-smoke; several minutes on 2 cores)")
    run([str(ROOT / "scripts" / "static-image.sh"), "--profile", "dev", "--no-smoke", "--tag", MESHKITD_IMAGE,
         "--probe-tag", PROBE_IMAGE, "--chaos-tag", CHAOS_IMAGE], timeout=IMAGE_BUILD_TIMEOUT)


def shared_libraries(binary: str) -> list[str]:
    """What the dynamic loader maps for `binary` (its `ldd` list, the loader included)."""
    out = run(["ldd", binary]).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def ensure_debian_image(args: argparse.Namespace, image: str) -> None:
    """An image FROM scratch holding a Debian binary and the libraries it loads."""
    if image_exists(image):
        return
    binary, package, data = DEBIAN_BINARIES[image]
    if not Path(binary).exists():
        raise ToolError(f"{binary} is missing: install Debian's package (apt-get install {package})")
    log(args, f"building {image} from {binary}")
    with tempfile.TemporaryDirectory(prefix="meshkit-image-") as ctx:
        files = [binary, *shared_libraries(binary)]
        for f in files:
            dest = Path(ctx) / "root" / f.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(f), dest)
        for d in data:
            shutil.copytree(d, Path(ctx) / "root" / d.lstrip("/"), symlinks=False)
        # Go's resolver reads these; Docker mounts /etc/hosts and /etc/resolv.conf itself.
        (Path(ctx) / "root" / "etc").mkdir(parents=True, exist_ok=True)
        (Path(ctx) / "root" / "etc" / "nsswitch.conf").write_text("hosts: files dns\n")
        (Path(ctx) / "root" / "tmp").mkdir(parents=True, exist_ok=True)
        (Path(ctx) / "Dockerfile").write_text(
            f"FROM scratch\nCOPY root/ /\nUSER 65532:65532\nENTRYPOINT [\"{binary}\"]\n"
        )
        run(["docker", "build", "--quiet", "-t", image, ctx], timeout=DOCKER_TIMEOUT,
            env={**os.environ, "DOCKER_BUILDKIT": "0"})


def meshctl_in_image(run_dir: Path, network: str | None, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    cmd = ["docker", "run", "--rm", "--entrypoint", "/usr/local/bin/meshctl",
           "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{run_dir}:/etc/meshkit"]
    if network:
        cmd += ["--network", network]
    return run([*cmd, MESHKITD_IMAGE, *argv], timeout=timeout, check=False)


def node_config(i: int, nodes: int, voters: int, contenders: str = "all") -> str:
    seeds = ", ".join(f'"{v}@meshkit-{v}:{GOSSIP_PORT}"' for v in range(1, voters + 1) if v != i)
    voter_ids = ", ".join(str(v) for v in range(1, voters + 1))
    # `--contenders members`: the voters run Raft and do not campaign, as the simulator's
    # `[leases]` sections have it (voters apart from contenders), so a kill of the holder is
    # never also a kill of the Raft leader.
    campaign = '"global-control"' if contenders == "all" or i > voters else ""
    return f"""# Written by compose/env.py up; a fresh run writes it again.
id = {i}
listen = "0.0.0.0:{GOSSIP_PORT}"
advertise = "meshkit-{i}:{GOSSIP_PORT}"
seeds = [{seeds}]
control = "0.0.0.0:{CONTROL_PORT}"

[tls]
cert = "certs/node-{i}.pem"
key = "certs/node-{i}.key"
ca = "certs/ca.pem"

[metadata]
cluster = "chaos"
region = "compose"

[access]
token_key = "certs/token-signing.pub"
audit_log = "/data/audit.jsonl"

[access.identities]
meshctl-admin = ["mesh.admin"]
meshctl-operator = ["mesh.operate"]
meshctl-observer = ["mesh.observe"]

[leadership]
voters = [{voter_ids}]
campaign = [{campaign}]
ttl = "3s"
data_dir = "/data/raft"

[shards]
# `jobs` carries the task queues the autoscaler scenario loads (queue-burst-autoscale).
namespaces = {{ orders = 16, jobs = 2 }}
ttl = "3s"

# Every shard's queue (docs/task-queues.md): backpressure at 60 pending, off again at 15, the
# signal the autoscaler (meshkit-chaos autoscale) follows; workers are `meshctl queue work`.
[queues]
data_dir = "/data/queues"
replicas = 1
lease_timeout = "5s"
high_watermark = 60
low_watermark = 15
cooldown = "1s"

[chaos]
enabled = true
allowed_kinds = ["partition", "latency", "loss", "bursty-loss", "duplicate", "reorder", "pause",
                 "transport-downgrade", "clock-skew", "certificate-expiry"]
max_duration = "10m"
# meshctl certs init's expired stand-in: what a certificate-expiry experiment serves.
stand_in_cert = "certs/node-{i}-expired.pem"
stand_in_key = "certs/node-{i}-expired.key"
"""


def probe_config(nodes: int) -> str:
    """The probe agent's probes.toml: every node's read API, authorization, leadership stream and
    transports, every second, alerts to the stack's Alertmanager."""
    targets = ", ".join(f'"meshkit-{i}:{CONTROL_PORT}"' for i in range(1, nodes + 1))
    return f"""[agent]
name = "compose"
listen = "0.0.0.0:{PROBE_PORT}"
reload_on_change = false

[credentials]
ca = "certs/ca.pem"
cert = "certs/meshctl-observer.pem"
key = "certs/meshctl-observer.key"

[defaults]
interval = "1s"
timeout = "1s"

[[group]]
name = "mesh"
cluster = "chaos"
namespace = "chaos"
targets = [{targets}]
probes = ["api", "authz", "watch", "transport"]
[group.api]
endpoints = ["peers", "versions", "leaders"]
[group.watch]
streams = ["leadership"]

[history]
path = "/data/history.sqlite"

[reports]
dir = "/data/reports"

[alerting]
alertmanager = ["http://alertmanager:9093"]
resend = "10s"
"""


def node_labels(i: int) -> dict:
    """The target labels the pack expects (dashboards/README.md): `cluster`, `namespace`, and
    `target`, the address the probe agent probes (its alerts are inhibited by the node's
    MeshKitNodeDown through it, since `instance` here is the node's name)."""
    return {"cluster": "chaos", "namespace": "chaos", "instance": f"node-{i}",
            "target": f"meshkit-{i}:{CONTROL_PORT}"}


def prometheus_config(nodes: int, spares: int = 0) -> str:
    jobs = []
    for i in range(1, nodes + spares + 1):
        # One job a node: Prometheus checks the server name per job, and node certificates
        # name node-I; the job label is set back to `meshkit`, which the dashboards select.
        job = {
            "job_name": f"meshkit-node-{i}",
            "scheme": "https",
            "tls_config": {"ca_file": "/etc/meshkit/certs/ca.pem",
                           "cert_file": "/etc/meshkit/certs/meshctl-observer.pem",
                           "key_file": "/etc/meshkit/certs/meshctl-observer.key",
                           "server_name": f"node-{i}"},
            "relabel_configs": [{"target_label": "job", "replacement": "meshkit"}],
        }
        if i <= nodes:
            job["static_configs"] = [{"targets": [f"meshkit-{i}:{CONTROL_PORT}"], "labels": node_labels(i)}]
        else:
            # A spare is scraped once the chaos runner starts it: it writes the target (with
            # node_labels) into this file, empty until then and again after its removal, so an
            # absent spare has no `up` series (and no MeshKitNodeDown).
            job["file_sd_configs"] = [{"files": [f"/etc/meshkit/{SPARE_TARGETS}/node-{i}.json"],
                                       "refresh_interval": "5s"}]
        jobs.append(job)
    jobs.append({
        "job_name": "meshkit-probe",
        # No `cluster` target label: the agent's per-probe series carry their group's own.
        "static_configs": [{"targets": [f"meshkit-probe:{PROBE_PORT}"]}],
    })
    # The autoscaler service (profile `autoscaler`): down (`up` 0, no alert selects this job)
    # unless a run or a user started it.
    jobs.append({
        "job_name": "meshkit-autoscaler",
        "static_configs": [{"targets": [f"autoscaler:{AUTOSCALER_PORT}"],
                            "labels": {"cluster": "chaos", "namespace": "chaos"}}],
    })
    return json.dumps({
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": ["/etc/meshkit/rules/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]},
        "scrape_configs": jobs,
    }, indent=2)


def compose_file(args: argparse.Namespace, run_dir: Path) -> dict:
    user = f"{os.getuid()}:{os.getgid()}"
    services: dict = {}
    for i in range(1, args.nodes + 1):
        port = args.port_base + i
        service = {
            "image": MESHKITD_IMAGE,
            "hostname": f"meshkit-{i}",
            "user": user,
            "command": ["--config", f"/etc/meshkit/node-{i}.toml"],
            # Bind mounts, owned by the user that runs the nodes: a named volume starts out
            # owned by root, and a scratch image has no shell to change that.
            "volumes": [f"{run_dir}:/etc/meshkit:ro", f"{run_dir}/data/node-{i}:/data"],
            "ports": [f"127.0.0.1:{port}:{CONTROL_PORT}/tcp", f"127.0.0.1:{port}:{CONTROL_PORT}/udp"],
            "networks": ["mesh"],
            "labels": {"io.meshkit.role": "node", "io.meshkit.node": str(i)},
        }
        if i > MAX_PUBLISHED:
            # PORT_BASE + 30 onwards are Grafana's, the agent's, Prometheus' and Alertmanager's:
            # a node beyond 29 (a scale measurement) is reached on the project's network only.
            del service["ports"]
        services[f"meshkit-{i}"] = service
    services["meshkit-probe"] = {
        "image": PROBE_IMAGE,
        "hostname": "meshkit-probe",
        "user": user,
        "command": ["--config", "/etc/meshkit/probes.toml"],
        "volumes": [f"{run_dir}:/etc/meshkit:ro", f"{run_dir}/data/probe:/data"],
        "ports": [f"127.0.0.1:{args.port_base + 65}:{PROBE_PORT}"],
        "networks": ["mesh"],
        "depends_on": [f"meshkit-{i}" for i in range(1, args.nodes + 1)],
        "labels": {"io.meshkit.role": "probe"},
    }
    services["prometheus"] = {
        "image": PROMETHEUS_IMAGE,
        "user": user,
        "command": ["--config.file=/etc/meshkit/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus",
                    "--web.listen-address=:9090", "--web.enable-admin-api"],
        "volumes": [f"{run_dir}:/etc/meshkit:ro"],
        "ports": [f"127.0.0.1:{args.port_base + 90}:9090"],
        "networks": ["mesh"],
    }
    services["alertmanager"] = {
        "image": ALERTMANAGER_IMAGE,
        "user": user,
        "command": ["--config.file=/etc/meshkit/alertmanager.yml", "--storage.path=/tmp/alertmanager",
                    "--web.listen-address=:9093", "--cluster.listen-address="],
        "volumes": [f"{run_dir}:/etc/meshkit:ro"],
        "ports": [f"127.0.0.1:{args.port_base + 93}:9093"],
        "networks": ["mesh"],
    }
    # The autoscaler (docs/chaos-environment.md, "The autoscaler service"): in a profile, since it
    # holds the Docker socket (root on this host, in effect) and its policy is a run's; the
    # runner starts it for a scenario with [autoscale], with that policy in the variables below.
    # The run directory and the output folder are mounted at their own paths: the workers it
    # creates bind the run directory by its host path, and the runner reads the decisions there.
    out = f"${{MESHKIT_AUTOSCALER_OUT:-{run_dir / 'autoscaler'}}}"
    var = lambda name, default: f"${{MESHKIT_AUTOSCALER_{name}:-{default}}}"  # noqa: E731
    socket = Path(DOCKER_SOCKET)
    services["autoscaler"] = {
        "image": CHAOS_IMAGE,
        "profiles": ["autoscaler"],
        "user": user,
        # The socket's group, so that a user other than root may use it.
        "group_add": [str(socket.stat().st_gid)] if socket.exists() else [],
        "command": ["autoscale", "--project", args.project, "--in-network",
                    "--metrics", f"0.0.0.0:{AUTOSCALER_PORT}",
                    "--queue", var("QUEUE", "jobs"),
                    "--min-workers", var("MIN_WORKERS", "1"), "--max-workers", var("MAX_WORKERS", "4"),
                    "--scale-out-after", var("SCALE_OUT_AFTER", "3s"),
                    "--scale-in-after", var("SCALE_IN_AFTER", "15s"),
                    "--cooldown", var("COOLDOWN", "10s"), "--work", var("WORK", "200ms"),
                    "--for", var("FOR", "1h"), "--out", out],
        "volumes": [f"{run_dir}:{run_dir}:ro", f"{DOCKER_SOCKET}:/var/run/docker.sock", f"{out}:{out}"],
        "ports": [f"127.0.0.1:{args.port_base + 66}:{AUTOSCALER_PORT}"],
        "networks": ["mesh"],
        "labels": {"io.meshkit.role": "autoscaler"},
        # SIGTERM: it stops its workers (10 s each to complete an item) and writes its summary.
        "stop_grace_period": "60s",
    }
    # Grafana, for users with a registry to pull it from (none here: documented, not tested). Not
    # started unless asked: `docker-compose -p P -f compose/.run/P/docker-compose.json
    # --profile grafana up -d grafana`; it provisions Prometheus and dashboards/grafana/.
    services["grafana"] = {
        "image": GRAFANA_IMAGE,
        "profiles": ["grafana"],
        "volumes": [f"{run_dir}/grafana:/etc/grafana/provisioning:ro",
                    f"{ROOT / 'dashboards' / 'grafana'}:/var/lib/meshkit-dashboards:ro"],
        "ports": [f"127.0.0.1:{args.port_base + 30}:3000"],
        "networks": ["mesh"],
    }
    return {"version": "3.8", "services": services, "networks": {"mesh": {}}}


def stack_timeout(nodes: int) -> float:
    """The bound on `docker-compose up -d` or `down` of a stack of `nodes` nodes."""
    return DOCKER_TIMEOUT + COMPOSE_SECS_PER_CONTAINER * (nodes + TOOL_CONTAINERS)


def check_neighbour_table(nodes: int) -> None:
    """Refuses a stack the host's neighbour table cannot hold (see NEIGH_GC_THRESH3)."""
    containers = nodes + TOOL_CONTAINERS
    needed = containers * containers
    try:
        limit = int(NEIGH_GC_THRESH3.read_text().strip())
    except (OSError, ValueError):
        return  # not Linux, or not readable here: nothing to check
    if needed > limit:
        raise ToolError(
            f"{nodes} nodes need about {needed} entries in the host's neighbour (ARP) table, and "
            f"net.ipv4.neigh.default.gc_thresh3 is {limit}: connections between containers would "
            f"stall once it overflows. Raise it on the host (as root): sysctl -w "
            f"net.ipv4.neigh.default.gc_thresh1={needed} net.ipv4.neigh.default.gc_thresh2={2 * needed} "
            f"net.ipv4.neigh.default.gc_thresh3={4 * needed}")


def compose(args: argparse.Namespace, run_dir: Path, *argv: str, timeout: float = DOCKER_TIMEOUT) -> subprocess.CompletedProcess:
    return run(["docker-compose", "-p", args.project, "-f", str(run_dir / "docker-compose.json"), *argv],
               timeout=timeout)


def write_run_dir(args: argparse.Namespace, run_dir: Path) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    total = args.nodes + args.spares
    # --keep-ca-key: the rotation drill (meshkit-chaos, certificate-rotation) issues new node
    # certificates from this run's CA.
    certs = meshctl_in_image(run_dir, None, "certs", "init", "--out", "certs", "--nodes", str(total),
                             "--keep-ca-key")
    if certs.returncode != 0:
        raise ToolError(f"meshctl certs init failed: {certs.stderr.strip()}")
    for i in range(1, total + 1):
        (run_dir / "data" / f"node-{i}").mkdir(parents=True)
    (run_dir / "data" / "probe").mkdir(parents=True)
    (run_dir / "autoscaler").mkdir()
    (run_dir / "probes.toml").write_text(probe_config(args.nodes))
    for i in range(1, total + 1):
        (run_dir / f"node-{i}.toml").write_text(node_config(i, args.nodes, args.voters, args.contenders))
    # What the chaos runner needs to start a spare as compose starts the nodes (compose_file).
    (run_dir / "spares.json").write_text(json.dumps({
        "nodes": list(range(args.nodes + 1, total + 1)),
        "image": MESHKITD_IMAGE,
        "network": f"{args.project}_mesh",
        "user": f"{os.getuid()}:{os.getgid()}",
        "port_base": args.port_base,
        "control_port": CONTROL_PORT,
        # Where the runner writes a started spare's scrape target (prometheus_config).
        "targets_dir": SPARE_TARGETS,
    }, indent=2))
    (run_dir / "prometheus.yml").write_text(prometheus_config(args.nodes, args.spares))
    (run_dir / SPARE_TARGETS).mkdir()
    for i in range(args.nodes + 1, total + 1):
        (run_dir / SPARE_TARGETS / f"node-{i}.json").write_text("[]\n")
    shutil.copy(ROOT / "dashboards" / "alertmanager.yml", run_dir / "alertmanager.yml")
    shutil.copytree(ROOT / "dashboards" / "rules", run_dir / "rules", ignore=shutil.ignore_patterns("tests"))
    grafana = run_dir / "grafana"
    (grafana / "datasources").mkdir(parents=True)
    (grafana / "dashboards").mkdir(parents=True)
    (grafana / "datasources" / "prometheus.json").write_text(json.dumps({
        "apiVersion": 1,
        "datasources": [{"name": "Prometheus", "type": "prometheus", "access": "proxy",
                         "url": "http://prometheus:9090", "isDefault": True}]}))
    (grafana / "dashboards" / "meshkit.json").write_text(json.dumps({
        "apiVersion": 1,
        "providers": [{"name": "meshkit", "type": "file", "folder": "MeshKit",
                       "options": {"path": "/var/lib/meshkit-dashboards"}}]}))
    (run_dir / "docker-compose.json").write_text(json.dumps(compose_file(args, run_dir), indent=2))


def peers_alive(run_dir: Path, network: str, node: int) -> tuple[int, str | None]:
    """(members node sees alive, the Raft leader it names), through the image's meshctl."""
    env = ["--ca", "/etc/meshkit/certs/ca.pem", "--cert", "/etc/meshkit/certs/meshctl-observer.pem",
           "--key", "/etc/meshkit/certs/meshctl-observer.key", "--addr", f"meshkit-{node}:{CONTROL_PORT}"]
    peers = meshctl_in_image(run_dir, network, "peers", "list", "--json", *env)
    alive = 0
    if peers.returncode == 0:
        try:
            alive = sum(1 for p in json.loads(peers.stdout).get("peers", []) if p.get("state") == "alive")
        except (json.JSONDecodeError, AttributeError):
            alive = 0
    leaders = meshctl_in_image(run_dir, network, "leaders", "status", "--json", *env)
    leader = None
    if leaders.returncode == 0:
        try:
            leader = (json.loads(leaders.stdout).get("raft") or {}).get("leader")
        except (json.JSONDecodeError, AttributeError):
            leader = None
    return alive, leader


def ready(url: str) -> bool:
    """Whether a Prometheus or Alertmanager answers its readiness endpoint."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def up(args: argparse.Namespace) -> int:
    if not 1 <= args.voters <= args.nodes:
        raise ToolError(f"--voters is 1..=--nodes ({args.nodes}), not {args.voters}")
    if args.spares < 0 or (args.spares and args.nodes + args.spares > MAX_PUBLISHED):
        # Node I's port is PORT_BASE + I, and PORT_BASE + 30 is Grafana's; the runner reaches
        # every node (spares included) through its published port.
        raise ToolError(f"with spares, --nodes + --spares is at most {MAX_PUBLISHED} "
                        f"(ports PORT_BASE+1..), not {args.nodes + args.spares}")
    if not 1 <= args.nodes <= MAX_NODES:
        raise ToolError(f"--nodes is 1..={MAX_NODES}, not {args.nodes}")
    check_neighbour_table(args.nodes)
    ensure_docker()
    ensure_meshkitd_image(args)
    for image in DEBIAN_BINARIES:
        ensure_debian_image(args, image)
    run_dir = RUNS / args.project
    started = time.monotonic()
    write_run_dir(args, run_dir)
    log(args, f"starting {args.nodes} nodes ({args.voters} voters), Prometheus and Alertmanager as project {args.project}")
    compose(args, run_dir, "up", "-d", timeout=stack_timeout(args.nodes))
    network = f"{args.project}_mesh"
    deadline = time.monotonic() + args.wait
    seen: dict[int, tuple[int, str | None]] = {}
    tools = [False, False, False]
    while time.monotonic() < deadline:
        seen = {i: peers_alive(run_dir, network, i) for i in (1, args.nodes)}
        tools = [ready(f"http://127.0.0.1:{args.port_base + p}/-/ready") for p in (90, 93)]
        tools.append(ready(f"http://127.0.0.1:{args.port_base + 65}/-/healthy"))
        # Every node alive in the first voter's view and in the last node's, and a Raft
        # leader named by the first voter (members run no Raft and name none).
        if all(tools) and all(alive == args.nodes for alive, _ in seen.values()) and seen[1][1]:
            break
        time.sleep(1)
    else:
        logs = compose(args, run_dir, "logs", "--no-color", "--tail", "30", timeout=DOCKER_TIMEOUT).stdout
        print(logs, file=sys.stderr)
        print(f"the stack was not healthy after {args.wait} s: {seen} (node: alive, leader), "
              f"Prometheus, Alertmanager and the probe agent ready: {tools}; "
              f"`compose/down --project {args.project}` removes it", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    summary = {
        "project": args.project, "nodes": args.nodes, "voters": args.voters,
        "spares": args.spares,
        "healthy_after_s": round(took, 1), "leader": seen[1][1], "run_dir": str(run_dir),
        "control": {f"node-{i}": f"127.0.0.1:{args.port_base + i}"
                    for i in range(1, min(args.nodes, MAX_PUBLISHED) + 1)},
        "prometheus": f"http://127.0.0.1:{args.port_base + 90}",
        "alertmanager": f"http://127.0.0.1:{args.port_base + 93}",
        "probe_agent": f"http://127.0.0.1:{args.port_base + 65}",
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.nodes} nodes healthy in {took:.1f} s (Raft leader {summary['leader']}); "
              f"Prometheus {summary['prometheus']}, Alertmanager {summary['alertmanager']}, "
              f"probe agent {summary['probe_agent']}/metrics")
        c = run_dir / "certs"
        print(f"  export MESHCTL_CA={c}/ca.pem MESHCTL_CERT={c}/meshctl-admin.pem "
              f"MESHCTL_KEY={c}/meshctl-admin.key MESHCTL_ADDR=127.0.0.1:{args.port_base + 1}")
        print(f"  meshctl peers list; compose/down --project {args.project}")
    return 0


def leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, cmd in {
        "containers": ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"],
        "networks": ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"],
        "volumes": ["docker", "volume", "ls", "--filter", label, "--format", "{{.Name}}"],
    }.items():
        found[kind] = [line for line in run(cmd).stdout.splitlines() if line]
    return found


def down(args: argparse.Namespace) -> int:
    ensure_docker()
    run_dir = RUNS / args.project
    if (run_dir / "docker-compose.json").exists():
        # The profile named, so that an autoscaler a run left running is removed too.
        compose(args, run_dir, "--profile", "autoscaler", "down", "--volumes", "--remove-orphans",
                "--timeout", "5", timeout=stack_timeout(MAX_NODES))
    else:
        # No run directory (removed by hand): remove what carries the project's label.
        # Containers first: a network in use cannot be removed.
        remove = {"containers": ["docker", "rm", "-f"],
                  "networks": ["docker", "network", "rm"],
                  "volumes": ["docker", "volume", "rm"]}
        for kind, names in leftovers(args.project).items():
            if names:
                run(remove[kind] + names)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    left = leftovers(args.project)
    if args.json:
        print(json.dumps({"project": args.project, "left": left}, indent=2))
    if any(left.values()):
        print(f"still present after down: {left}", file=sys.stderr)
        return 1
    log(args, f"project {args.project}: no containers, networks, volumes or run directory left")
    return 0


def status(args: argparse.Namespace) -> int:
    ensure_docker()
    left = leftovers(args.project)
    print(json.dumps(left, indent=2) if args.json else
          "\n".join(f"{k}: {', '.join(v) or '-'}" for k, v in left.items()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--project", default="meshkit-chaos", help="docker-compose project name")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "up":
            p.add_argument("--nodes", type=int, default=5, help="meshkitd containers (default 5)")
            p.add_argument("--voters", type=int, default=3, help="of them, Raft voters (default 3)")
            p.add_argument("--contenders", choices=["all", "members"], default="all",
                           help="who campaigns for global-control: every node (default), or only the "
                                "nodes that are not voters (the simulator's [leases] layout)")
            p.add_argument("--spares", type=int, default=3,
                           help="nodes prepared but not started, for membership-surge faults (default 3)")
            p.add_argument("--wait", type=float, default=HEALTHY_TIMEOUT,
                           help=f"seconds to wait for a healthy mesh (default {HEALTHY_TIMEOUT})")
            p.add_argument("--port-base", type=int, default=18100,
                           help="node I's control port on 127.0.0.1 is PORT_BASE+I; Prometheus +90, Alertmanager +93")
    args = parser.parse_args()
    if args.command == "up" and args.voters > args.nodes:
        args.voters = args.nodes
    try:
        return {"up": up, "down": down, "status": status}[args.command](args)
    except ToolError as e:
        print(f"compose/env.py {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
