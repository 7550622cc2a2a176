#!/usr/bin/env python3
"""meshbench: N real meshkitd processes on 127.0.0.1, the MeshKit side of mlbench.

One run: certificates (`meshctl certs init`), N config files (no [leadership]: pure
membership, like memberlist), N daemons, wait until every node counts N alive, settle,
a steady-state window with nothing polling the daemons (CPU from /proc/<pid>/stat, payload
bytes from mesh_transport_channel_*_total, wire bytes from the loopback counters), then
kill -9 one node and poll every other node's GET /meshkit/peers until each reports it
dead (or left / gone). Each observer's detection time is taken two ways:
  * poll:  the time of the first answer that said dead (an upper bound, ~poll interval);
  * exact: that answer's receive time minus its `last_change_s_ago` (when the observer's
           core changed the victim's state), resolution ~ the request's latency.
Every loop is bounded; only the processes this script started are killed, by PID.

Usage: meshbench.py --nodes 16 --seed 1 --out result.json
       meshbench.py --nodes 32 --soak 1800 --loss 5 --kills 0 --out soak.json
         (a soak: after the steady window, drop --loss % of the UDP datagrams with nftables for
         --soak seconds, scraping every node every 10 s: suspicions raised and confirmed, the
         fewest members any node held alive. Only inside a network namespace of its own.)
Env:   MESHKIT_BIN  directory holding meshkitd and meshctl (default ./target/release)
       MESHBENCH_OUT  directory for run directories (default $TMPDIR/meshbench)
"""
import argparse
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

CHILDREN = []  # Popen objects this script started


def kill_children():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in CHILDREN:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def on_signal(signum, frame):
    kill_children()
    sys.exit(128 + signum)


def nr(xs, p):
    """nearest-rank percentile (same as mlbench)."""
    s = sorted(x for x in xs if x is not None)
    if not s:
        return None
    r = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[r]


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def lo_counters():
    with open("/proc/net/dev") as f:
        for line in f:
            line = line.strip()
            if line.startswith("lo:"):
                fs = line[3:].split()
                return {"rx_bytes": int(fs[0]), "rx_pkts": int(fs[1]), "tx_bytes": int(fs[8]), "tx_pkts": int(fs[9])}
    return {}


def snmp_udp():
    hdr = None
    with open("/proc/net/snmp") as f:
        for line in f:
            fs = line.split()
            if fs and fs[0] == "Udp:":
                if hdr is None:
                    hdr = fs
                else:
                    return {k: int(v) for k, v in zip(hdr[1:], fs[1:])}
    return {}


def own_netns():
    """Whether this process runs in a network namespace made for the run: its only interface is
    lo (`/proc/net/dev` is per namespace), so nftables rules added here touch nothing else."""
    with open("/proc/net/dev") as f:
        names = [line.split(":")[0].strip() for line in f if ":" in line]
    return names == ["lo"]


LOSS_TABLE = "meshbench_loss"


def set_loss(percent):
    """Drops `percent` % of UDP datagrams entering any interface of this namespace (on lo each
    datagram enters once), or removes the rule when `percent` is 0."""
    subprocess.run(["nft", "delete", "table", "inet", LOSS_TABLE], capture_output=True, timeout=10)
    if percent <= 0:
        return
    per_mille = int(round(percent * 10))
    script = (f"table inet {LOSS_TABLE} {{\n chain input {{\n type filter hook input priority 0;\n"
              f" meta l4proto udp numgen random mod 1000 < {per_mille} counter drop\n }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True, timeout=10)


def loss_dropped():
    """Datagrams the loss rule dropped so far (its counter), or None without the rule."""
    out = subprocess.run(["nft", "list", "table", "inet", LOSS_TABLE], capture_output=True, text=True, timeout=10)
    m = re.search(r"counter packets (\d+)", out.stdout)
    return int(m.group(1)) if m else None


CONTROL_TABLE = "meshbench_control"


def count_control(first, last):
    """Counts the loopback packets to and from the control ports first..last (the nodes' own
    HTTP self-checks in a window nothing else polls: node-to-itself traffic, which crosses no
    network in a deployment and has no counterpart in memberlist). One rule per direction on
    the output hook, so each packet on lo counts once. Only in a namespace made for the run."""
    subprocess.run(["nft", "delete", "table", "inet", CONTROL_TABLE], capture_output=True, timeout=10)
    script = (f"table inet {CONTROL_TABLE} {{\n chain output {{\n type filter hook output priority 0;\n"
              f" th dport {first}-{last} counter\n th sport {first}-{last} counter\n }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True, timeout=10)


def control_counters():
    """(packets, bytes) the control-port rules counted so far, or None without them. nft counts
    the IP packet; /proc/net/dev counts lo's 14-byte link header too, added here to match."""
    out = subprocess.run(["nft", "list", "table", "inet", CONTROL_TABLE], capture_output=True, text=True, timeout=10)
    found = re.findall(r"counter packets (\d+) bytes (\d+)", out.stdout)
    if not found:
        return None
    packets = sum(int(p) for p, _ in found)
    return packets, sum(int(b) for _, b in found) + 14 * packets


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


class Conn:
    """One keep-alive HTTP/1.1-over-TLS connection to a node's control API."""

    def __init__(self, port, ctx, timeout):
        self.port, self.ctx, self.timeout = port, ctx, timeout
        self.c = None
        self.errors = 0

    def get(self, path):
        for attempt in range(2):
            try:
                if self.c is None:
                    self.c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=self.timeout)
                self.c.request("GET", path)
                r = self.c.getresponse()
                body = r.read()
                return r.status, body
            except (OSError, http.client.HTTPException, ssl.SSLError):
                self.errors += 1
                try:
                    if self.c is not None:
                        self.c.close()
                except Exception:
                    pass
                self.c = None
        return None, b""

    def close(self):
        if self.c is not None:
            try:
                self.c.close()
            except Exception:
                pass
            self.c = None


def soak(a, procs, scrape_all, tick):
    """--soak seconds with --loss % of UDP dropped: every 10 s a scrape of every node (over TCP,
    which the rule leaves alone). No node is killed, so every suspicion is of a healthy member
    and every confirmed one (`mesh_gossip_suspicions_confirmed_total`: a node's own verdict
    `dead`) is a healthy node declared dead."""
    n = len(procs)
    set_loss(a.loss)
    try:
        m0 = scrape_all()
        c0 = {i: cpu_ticks(p.pid) for i, p in procs.items()}
        t0 = time.monotonic()
        min_alive, max_dead, samples = n, 0, 0
        for _ in range(int(a.soak / 10) + 1):
            left = a.soak - (time.monotonic() - t0)
            if left <= 0:
                break
            time.sleep(min(10.0, left))
            m = scrape_all()
            samples += 1
            for i in procs:
                mm = m.get(i, {})
                min_alive = min(min_alive, int(mm.get('mesh_gossip_members{state="alive"}', 0)))
                max_dead = max(max_dead, int(mm.get('mesh_gossip_members{state="dead"}', 0)))
            el = time.monotonic() - t0
            raised = sum(m.get(i, {}).get("mesh_gossip_suspicions_raised_total", 0)
                         - m0.get(i, {}).get("mesh_gossip_suspicions_raised_total", 0) for i in procs)
            print(f"soak {el:6.0f}/{a.soak:.0f} s: suspicions {raised:.0f}, fewest alive {min_alive}, "
                  f"most dead {max_dead}", flush=True)
        dt = time.monotonic() - t0
        c1 = {i: cpu_ticks(p.pid) for i, p in procs.items()}
        m1 = scrape_all()
        dropped = loss_dropped()
    finally:
        set_loss(0)

    def delta(name):
        return sum(m1.get(i, {}).get(name, 0) - m0.get(i, {}).get(name, 0) for i in procs)

    node_hours = n * dt / 3600
    out = {
        "loss_percent": a.loss, "seconds": dt, "samples": samples, "datagrams_dropped": dropped,
        "suspicions_raised": delta("mesh_gossip_suspicions_raised_total"),
        "suspicions_per_node_hour": delta("mesh_gossip_suspicions_raised_total") / node_hours,
        "healthy_declared_dead": delta("mesh_gossip_suspicions_confirmed_total"),
        "refutations": delta("mesh_gossip_refutations_total"),
        "probes_failed": delta("mesh_gossip_probes_failed_total"),
        "fewest_alive_seen": min_alive, "most_dead_seen": max_dead,
        "cpu_ms_per_s_node_mean": sum(c1[i] - c0[i] for i in procs) / tick / dt * 1000 / n,
        "exits": [i for i, p in procs.items() if p.poll() is not None],
    }
    print(f"soak {dt:.0f} s at {a.loss}% loss, N={n}: {out['suspicions_per_node_hour']:.2f} suspicions "
          f"per node-hour, {out['healthy_declared_dead']:.0f} healthy nodes declared dead, fewest alive "
          f"{min_alive}, {dropped} datagrams dropped", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--bin-dir", default=os.environ.get("MESHKIT_BIN", "target/release"))
    ap.add_argument("--work", default=os.environ.get("MESHBENCH_OUT", os.path.join(tempfile.gettempdir(), "meshbench")))
    ap.add_argument("--profile", default="lan")
    ap.add_argument("--membership", default="", help="extra [membership] TOML lines")
    ap.add_argument("--extra-toml", default="",
                    help="TOML appended to every node.toml (\\n for newlines), e.g. "
                         "'[probes]\\ndisable = [\"control-h3\", \"control-h2\"]': the built-in "
                         "HTTP self-checks' requests travel on the loopback too")
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--converge-limit", type=float, default=180.0)
    ap.add_argument("--detect-wait", type=float, default=90.0)
    ap.add_argument("--poll-ms", type=float, default=100.0)
    # Below Linux's ephemeral range (32768-60999): a port there may already be some client
    # socket's (the nodes' own HTTP/3 self-check clients bind one), and a node then fails to start.
    ap.add_argument("--gossip-base", type=int, default=21000)
    ap.add_argument("--control-base", type=int, default=23000)
    ap.add_argument("--rust-log", default="info")
    ap.add_argument("--deadline", type=float, default=540.0, help="hard limit for the whole run (s), on top of --soak")
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--kills", type=int, default=1,
                    help="kill this many nodes one after another (each once the last is detected everywhere); "
                         "the first is `crash`, the rest `crash_extra`")
    ap.add_argument("--soak", type=float, default=0.0,
                    help="after the steady window, run this many seconds with --loss applied")
    ap.add_argument("--loss", type=float, default=0.0,
                    help="percent of UDP datagrams nftables drops during --soak (needs its own netns)")
    a = ap.parse_args()
    if a.loss and not own_netns():
        ap.error("--loss changes the network namespace's firewall: run it inside one made for it "
                 "(unshare -n sh -c 'ip link set lo up; python3 meshbench.py ...')")
    if not 0 <= a.loss < 100:
        ap.error("--loss is a percentage in [0, 100)")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(a.deadline + a.soak))  # the deadline bounds the run around the soak

    N = a.nodes
    rng = random.Random(a.seed)
    meshkitd = os.path.abspath(os.path.join(a.bin_dir, "meshkitd"))
    meshctl = os.path.abspath(os.path.join(a.bin_dir, "meshctl"))
    run_dir = os.path.join(a.work, f"run-n{N}-s{a.seed}-{os.getpid()}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    res = {"n": N, "seed": a.seed, "profile": a.profile, "membership_overrides": a.membership,
           "processes": N, "load_start": loadavg(), "meshkitd_version": subprocess.run(
               [meshkitd, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()}
    try:
        subprocess.run([meshctl, "certs", "init", "--out", os.path.join(run_dir, "certs"), "--nodes", str(N)],
                       check=True, capture_output=True, timeout=120)
        for i in range(1, N + 1):
            with open(os.path.join(run_dir, f"node-{i}.toml"), "w") as f:
                f.write(f'''id = {i}
listen = "127.0.0.1:{a.gossip_base + i}"
seeds = ["1@127.0.0.1:{a.gossip_base + 1}"]
control = "127.0.0.1:{a.control_base + i}"
profile = "{a.profile}"

[tls]
cert = "certs/node-{i}.pem"
key = "certs/node-{i}.key"
ca = "certs/ca.pem"

[membership]
{a.membership}

[access]
[access.identities]
meshctl-observer = ["mesh.observe"]
''' + "\n" + a.extra_toml.replace("\\n", "\n") + "\n")
        chk = subprocess.run([meshkitd, "check-config", os.path.join(run_dir, "node-1.toml")],
                             capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise RuntimeError(f"check-config: {chk.stdout} {chk.stderr}")

        ctx = ssl.create_default_context(cafile=os.path.join(run_dir, "certs", "ca.pem"))
        ctx.load_cert_chain(os.path.join(run_dir, "certs", "meshctl-observer.pem"),
                            os.path.join(run_dir, "certs", "meshctl-observer.key"))
        ctx.check_hostname = False  # node certs name node-<i>, not 127.0.0.1; the CA is still verified
        ctx.set_alpn_protocols(["http/1.1"])

        # ---- start ----
        env = dict(os.environ, RUST_LOG=a.rust_log)
        procs = {}
        t_start = time.monotonic()
        for i in range(1, N + 1):
            out = open(os.path.join(run_dir, f"node-{i}.out"), "w")
            err = open(os.path.join(run_dir, f"node-{i}.log"), "w")
            p = subprocess.Popen([meshkitd, "--config", os.path.join(run_dir, f"node-{i}.toml")],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=run_dir)
            CHILDREN.append(p)
            procs[i] = p
            # wait (bounded) for the address line
            for _ in range(200):
                if os.path.getsize(os.path.join(run_dir, f"node-{i}.out")) > 0 or p.poll() is not None:
                    break
                time.sleep(0.05)
            if p.poll() is not None or os.path.getsize(os.path.join(run_dir, f"node-{i}.out")) == 0:
                raise RuntimeError(f"node-{i} did not start (rc={p.poll()}); see {run_dir}/node-{i}.log")
        res["start_all_s"] = time.monotonic() - t_start
        conns = {i: Conn(a.control_base + i, ctx, 3.0) for i in range(1, N + 1)}

        def alive_total(i):
            st, body = conns[i].get("/meshkit/peers?state=alive&limit=1")
            if st != 200:
                return None
            return json.loads(body)["total"]

        def scrape_all():
            m = {}
            for i in procs:
                if procs[i].poll() is None:
                    st, body = conns[i].get("/metrics")
                    m[i] = parse_metrics(body.decode()) if st == 200 else {}
            return m

        # ---- converge ----
        conv_at = {}
        # One entry per sweep over the nodes not yet converged: (seconds after the last start
        # when the sweep ended, nodes converged, fewest alive any polled node counted, seconds
        # the sweep took): how a slow join progressed, and how much of it the polling was.
        trace = []
        deadline = t_start + a.converge_limit
        for _ in range(int(a.converge_limit / 0.2) + 1):
            s0 = time.monotonic()
            fewest = N
            for i in range(1, N + 1):
                if i not in conv_at:
                    total = alive_total(i)
                    fewest = min(fewest, total if total is not None else 0)
                    if total == N:
                        conv_at[i] = time.monotonic() - t_start
            s1 = time.monotonic()
            trace.append((round(s1 - t_start - res["start_all_s"], 2), len(conv_at), fewest, round(s1 - s0, 2)))
            if len(conv_at) == N or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        res["converge_trace"] = trace
        # What the join cost and met, summed over the nodes, from each process's start.
        mj = scrape_all()
        def family(m, name):  # a counter's value, its labelled series summed
            return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))
        res["join_totals"] = {name: sum(family(mj[i], f"mesh_{name}_total") for i in mj) for name in (
            "gossip_suspicions_raised", "gossip_refutations", "gossip_probes_failed",
            "gossip_introductions_refused", "gossip_syncs", "transport_connections_opened",
            "transport_dials_failed", "transport_datagrams_dropped", "transport_redials")}
        res["converged_nodes"] = len(conv_at)
        if len(conv_at) < N:
            res["error"] = f"did not converge: {len(conv_at)}/{N} nodes saw {N} alive within {a.converge_limit}s"
            raise RuntimeError(res["error"])
        res["converge_s"] = max(conv_at.values())
        # memberlist's figure starts at its first Join() with every node created; the closest
        # here is from the moment the last daemon printed its address (all processes running).
        res["converge_after_last_start_s"] = res["converge_s"] - res["start_all_s"]
        time.sleep(a.settle)

        # ---- steady window (nothing polls the daemons inside it) ----
        m0 = scrape_all()
        for c in conns.values():  # idle connections only; no requests during the window
            pass
        tick = os.sysconf("SC_CLK_TCK")
        load_w0 = loadavg()
        if own_netns():
            count_control(a.control_base + 1, a.control_base + N)
        ctl0 = control_counters()
        lo0, udp0 = lo_counters(), snmp_udp()
        c0 = {i: cpu_ticks(p.pid) for i, p in procs.items()}
        t0 = time.monotonic()
        time.sleep(a.window)
        c1 = {i: cpu_ticks(p.pid) for i, p in procs.items()}
        t1 = time.monotonic()
        lo1, udp1 = lo_counters(), snmp_udp()
        ctl1 = control_counters()
        # Bytes to and from the control ports in the window, or None outside a namespace of its own.
        ctl = None if ctl0 is None or ctl1 is None else ctl1[1] - ctl0[1]
        load_w1 = loadavg()
        rss = {i: rss_kib(p.pid) for i, p in procs.items()}
        m1 = scrape_all()
        dt = t1 - t0

        def ch(m, fam, direction):
            return sum(m.get(f'mesh_transport_channel_{fam}_total{{channel="{c}",direction="{direction}"}}', 0.0)
                       for c in ("membership", "lease"))

        per_cpu = sorted((c1[i] - c0[i]) / tick / dt * 1000 for i in procs)
        per_out = sorted((ch(m1[i], "bytes", "sent") - ch(m0[i], "bytes", "sent")) / dt for i in procs)
        per_in = sorted((ch(m1[i], "bytes", "received") - ch(m0[i], "bytes", "received")) / dt for i in procs)
        per_dg = sorted((ch(m1[i], "datagrams", "sent") - ch(m0[i], "datagrams", "sent")) / dt for i in procs)

        def delta_sum(name):
            return sum(m1[i].get(name, 0) - m0[i].get(name, 0) for i in procs)

        res["steady"] = {
            "window_s": dt,
            "load_before": load_w0, "load_after": load_w1,
            "cpu_ms_per_s_node_mean": sum(per_cpu) / N,
            "cpu_ms_per_s_node_p50": nr(per_cpu, 50), "cpu_ms_per_s_node_max": per_cpu[-1],
            "cpu_cores_all_nodes": sum(per_cpu) / 1000,
            "payload_out_Bps_node_mean": sum(per_out) / N,
            "payload_out_Bps_node_p50": nr(per_out, 50), "payload_out_Bps_node_max": per_out[-1],
            "payload_in_Bps_node_mean": sum(per_in) / N,
            "datagrams_out_ps_node_mean": sum(per_dg) / N,
            "lo_tx_Bps_node": (lo1.get("tx_bytes", 0) - lo0.get("tx_bytes", 0)) / dt / N,
            "lo_tx_pkts_ps_node": (lo1.get("tx_pkts", 0) - lo0.get("tx_pkts", 0)) / dt / N,
            # The same less the control ports' packets (the self-checks): the mesh's own wire.
            "lo_tx_Bps_node_without_control": None if ctl is None else
            (lo1.get("tx_bytes", 0) - lo0.get("tx_bytes", 0) - ctl) / dt / N,
            "control_Bps_node": None if ctl is None else ctl / dt / N,
            "udp_out_dgrams_ps_node": (udp1.get("OutDatagrams", 0) - udp0.get("OutDatagrams", 0)) / dt / N,
            "udp_rcvbuf_errors": udp1.get("RcvbufErrors", 0) - udp0.get("RcvbufErrors", 0),
            "rss_kib_node_p50": nr(list(rss.values()), 50),
            "suspicions_raised_in_window": delta_sum("mesh_gossip_suspicions_raised_total"),
            "refutations_in_window": delta_sum("mesh_gossip_refutations_total"),
            # Handshakes in the window: a pair's first contact (round-robin probing reaches
            # every member once per N probe intervals, so pairs keep connecting until then).
            "connections_opened_in_window": delta_sum("mesh_transport_connections_opened_total"),
            "probes_failed_in_window": delta_sum("mesh_gossip_probes_failed_total"),
            "min_alive_seen_after_window": min(m1[i].get('mesh_gossip_members{state="alive"}', 0) for i in procs),
        }
        st = res["steady"]
        print(f"N={N} steady {dt:.0f}s: cpu {st['cpu_ms_per_s_node_mean']:.2f} ms/s/node, payload out "
              f"{st['payload_out_Bps_node_mean']:.1f} B/s/node, lo {st['lo_tx_Bps_node']:.1f} B/s/node, "
              f"load {load_w0} -> {load_w1}", flush=True)

        # ---- soak under loss (optional) ----
        if a.soak > 0:
            res["soak"] = soak(a, procs, scrape_all, tick)
        # ---- crash detection (one or more kills, one at a time) ----
        candidates = list(range(2, N + 1))
        killed = []
        for kill_no in range(a.kills):
            victim = rng.choice([c for c in candidates if c not in killed])
            killed.append(victim)
            observers = [i for i in procs if i not in killed]
            pre = {i: alive_total(i) for i in observers}
            res["alive_seen_before_kill"] = {"min": min(v or 0 for v in pre.values()), "max": max(v or 0 for v in pre.values())}
            m_pre = scrape_all()
            load_kill = loadavg()
            tk, tk_unix = time.monotonic(), time.time()
            os.kill(procs[victim].pid, signal.SIGKILL)
            procs[victim].wait(timeout=10)
            t_kill = tk
            path = f"/meshkit/peers?after={victim - 1}&limit=1"
            det_poll, det_exact, susp_exact, last_not_dead, states_seen = {}, {}, {}, {}, {}
            polls, sweeps, sweep_durs, errors = 0, 0, [], 0
            dl = t_kill + a.detect_wait
            max_sweeps = int(a.detect_wait * 1000 / a.poll_ms) + 2
            for _ in range(max_sweeps):
                s0 = time.monotonic()
                for i in observers:
                    if i in det_poll:
                        continue
                    st_, body = conns[i].get(path)
                    tr = time.monotonic()
                    polls += 1
                    if st_ != 200:
                        errors += 1
                        continue
                    d = json.loads(body)
                    p = next((x for x in d["peers"] if x["id"] == victim), None)
                    state = p["state"] if p else "gone"
                    states_seen.setdefault(i, set()).add(state)
                    if state in ("dead", "left", "gone"):
                        det_poll[i] = tr - t_kill
                        det_exact[i] = (tr - p["last_change_s_ago"] - t_kill) if p else None
                    elif state == "suspect":
                        if i not in susp_exact:
                            susp_exact[i] = tr - p["last_change_s_ago"] - t_kill
                        last_not_dead[i] = tr - t_kill
                    else:
                        last_not_dead[i] = tr - t_kill
                sweeps += 1
                sweep_durs.append(time.monotonic() - s0)
                if len(det_poll) == len(observers) or time.monotonic() > dl:
                    break
                time.sleep(max(0.0, a.poll_ms / 1000 - (time.monotonic() - s0)))
            exact = [det_exact[i] for i in observers if det_exact.get(i) is not None]
            pollv = [det_poll[i] for i in observers if i in det_poll]
            res["load_at_kill"] = load_kill
            time.sleep(2)
            m_post = scrape_all()
            post_states = {}
            for i in observers:
                mm = m_post.get(i, {})
                post_states[i] = {s: mm.get(f'mesh_gossip_members{{state="{s}"}}', None) for s in ("alive", "suspect", "dead", "left")}
            false_dead = sum(1 for i in observers if (post_states[i]["dead"] or 0) + (post_states[i]["left"] or 0) > len(killed)
                             or (post_states[i]["suspect"] or 0) > 0)

            def dsum(name):
                return sum(m_post.get(i, {}).get(name, 0) - m_pre.get(i, {}).get(name, 0) for i in observers)

            crash = {
                "victim": victim, "kill_unix_s": tk_unix, "observers": len(observers), "detected": len(pollv),
                "p50_s": nr(exact, 50), "p99_s": nr(exact, 99), "max_s": nr(exact, 100), "min_s": nr(exact, 0),
                "poll_p50_s": nr(pollv, 50), "poll_p99_s": nr(pollv, 99), "poll_max_s": nr(pollv, 100),
                "first_suspect_s": nr(list(susp_exact.values()), 0),
                "suspect_seen_by": len(susp_exact),
                "latencies_s": [det_exact.get(i) for i in observers],
                "latencies_poll_s": [det_poll.get(i) for i in observers],
                "resolution_max_s": max((det_poll[i] - last_not_dead.get(i, 0)) for i in det_poll) if det_poll else None,
                "polls": polls, "sweeps": sweeps, "poll_errors": errors,
                "sweep_s_p50": nr(sweep_durs, 50), "sweep_s_max": nr(sweep_durs, 100),
                "states_seen": {str(k): sorted(v) for k, v in states_seen.items()},
                "observers_with_extra_suspect_or_dead_2s_after": false_dead,
                "post_state_counts_min_alive": min((v["alive"] or 0) for v in post_states.values()),
                "post_state_counts_max_dead": max((v["dead"] or 0) for v in post_states.values()),
                # Lifeguard's local health score of every observer just before the kill: a
                # score h stretches that node's probe interval (h + 1) times, so a loaded mesh
                # probes the victim less often and suspects it later.
                "health_at_kill": sorted(m_pre.get(i, {}).get("mesh_gossip_health_score", 0) for i in observers),
                "suspicions_raised_during": dsum("mesh_gossip_suspicions_raised_total"),
                "refutations_during": dsum("mesh_gossip_refutations_total"),
            }
            cr = crash
            if kill_no == 0:
                res["crash"] = crash
            else:
                res.setdefault("crash_extra", []).append(crash)
            print(f"N={N} crash {kill_no + 1} node-{victim}: detected {cr['detected']}/{cr['observers']}, exact p50 {cr['p50_s']} "
                  f"p99 {cr['p99_s']} max {cr['max_s']}; poll p50 {cr['poll_p50_s']} max {cr['poll_max_s']}; "
                  f"first suspect {cr['first_suspect_s']}; sweep p50 {cr['sweep_s_p50']}", flush=True)
            if kill_no + 1 < a.kills:
                time.sleep(3)
        res["load_end"] = loadavg()
        res["conn_errors"] = sum(c.errors for c in conns.values())
        for c in conns.values():
            c.close()
    except Exception as e:  # record and fall through to cleanup
        res["error"] = res.get("error") or f"{type(e).__name__}: {e}"
        print(f"ERROR {res['error']}", file=sys.stderr, flush=True)
    finally:
        # exits of daemons other than the victim, then stop ours
        victims = [res.get("crash", {}).get("victim")] + [c["victim"] for c in res.get("crash_extra", [])]
        res["unexpected_exits"] = [i for i, p in enumerate(CHILDREN, 1) if p.poll() is not None and i not in victims]
        kill_children()
        signal.alarm(0)
    # ---- logs: WARN/ERROR lines, panics ----
    levels, samples = {}, []
    for i in range(1, N + 1):
        lp = os.path.join(run_dir, f"node-{i}.log")
        if not os.path.exists(lp):
            continue
        with open(lp, errors="replace") as f:
            for line in f:
                clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
                m = re.search(r"\b(ERROR|WARN|INFO|DEBUG|TRACE)\b", clean)
                lvl = m.group(1) if m else ("PANIC" if "panicked" in clean else "OTHER")
                levels[lvl] = levels.get(lvl, 0) + 1
                if lvl in ("ERROR", "WARN", "PANIC", "OTHER") and len(samples) < 20:
                    samples.append(f"node-{i}: {clean.strip()[:300]}")
    res["log_levels"] = levels
    res["log_samples"] = samples
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1, default=list)
    if not a.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if "error" not in res else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_children()
