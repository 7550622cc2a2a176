#!/usr/bin/env python3
"""Side-by-side tables from $MESHBENCH_OUT/results: ml-n*-r*.json (mlbench, memberlist) and
mk-n*-r*.json (meshbench.py, meshkitd), plus their *.load.json sidecars. Usage: aggregate.py [DIR]"""
import glob, json, math, os, re, statistics, sys, tempfile

R = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("MESHBENCH_OUT", os.path.join(tempfile.gettempdir(), "meshbench")), "results")


def nr(xs, p):
    s = sorted(x for x in xs if x is not None)
    if not s:
        return float("nan")
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def f(x, d=2):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def load(prefix, kind):
    out = {}
    for p in glob.glob(f"{R}/{prefix}-n*-r*.json"):
        m = re.search(prefix + r"-n(\d+)-r(\d+)\.json$", p)
        if not m:
            continue
        d = json.load(open(p))
        lp = p[:-5] + ".load.json"
        d["_load"] = json.load(open(lp)) if os.path.exists(lp) else {}
        d["_run"] = int(m.group(2))
        out.setdefault(int(m.group(1)), []).append(d)
    for v in out.values():
        v.sort(key=lambda d: d["_run"])
    return out


ml, mk = load("ml", "memberlist"), load("mk", "meshkit")
Ns = sorted(set(ml) | set(mk))
rows = {}
print("| N | system | runs ok | detect p50 / p99 / max (s), pooled | per-run p50 (s) | CPU ms/s per node | payload out B/s/node | lo wire tx B/s/node | the same less the self-checks' | join to all alive (s), median | load avg 1-min at start of each run |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in Ns:
    for name, runs in (("memberlist", ml.get(n, [])), ("meshkitd", mk.get(n, []))):
        ok = [r for r in runs if "crash" in r and "steady" in r and not r.get("error")]
        lat = [x for r in ok for x in (r["crash"].get("latencies_s") or []) if x is not None]
        if name == "memberlist":
            cpu = med(r["steady"]["cpu_cores_used"] * 1000 / n for r in ok)
            pay = med(r["steady"]["total_payload_out_Bps_node"] for r in ok)
            join = med(r["join_converge_s"] for r in ok)
        else:
            cpu = med(r["steady"]["cpu_ms_per_s_node_mean"] for r in ok)
            pay = med(r["steady"]["payload_out_Bps_node_mean"] for r in ok)
            # From the last daemon's start (memberlist's: from the first Join() with every
            # node created); older results without it: from the first daemon's start.
            join = med(r.get("converge_after_last_start_s", r.get("converge_s")) for r in ok)
        wire = med(r["steady"]["lo_tx_Bps_node"] for r in ok)
        # meshkitd's built-in HTTP self-checks call its own control port (meshbench.py counts
        # them apart in a namespace of its own); memberlist has none, so its wire is all mesh.
        mesh_wire = [r["steady"].get("lo_tx_Bps_node_without_control") for r in ok]
        mesh_wire = wire if name == "memberlist" else (
            med(mesh_wire) if mesh_wire and None not in mesh_wire else None)
        det = (nr(lat, 50), nr(lat, 99), nr(lat, 100))
        undetected = sum(r["crash"]["observers"] - r["crash"]["detected"] for r in ok)
        rows[(n, name)] = dict(det=det, cpu=cpu, pay=pay, wire=wire, mesh_wire=mesh_wire, join=join)
        loads = " / ".join(r["_load"].get("load_before", "?").split()[0] for r in runs)
        print(f"| {n} | {name} | {len(ok)}/{len(runs)} | {' / '.join(f(x) for x in det)}"
              f"{' (' + str(undetected) + ' undetected)' if undetected else ''} | "
              f"{' / '.join(f(r['crash']['p50_s']) for r in ok)} | {f(cpu)} | {f(pay, 1)} | {f(wire, 1)} | {f(mesh_wire, 1) if mesh_wire is not None else '-'} | {f(join)} | {loads} |")

print("\n| N | ratio meshkitd / memberlist: detect p50 | p99 | max | CPU per node | payload B/s per node | wire B/s per node | less the self-checks' | join |")
print("|---|---|---|---|---|---|---|---|---|")
for n in Ns:
    a, b = rows.get((n, "meshkitd")), rows.get((n, "memberlist"))
    if not a or not b:
        continue
    q = lambda x, y: x / y if y else float("nan")
    print(f"| {n} | {f(q(a['det'][0], b['det'][0]))} | {f(q(a['det'][1], b['det'][1]))} | {f(q(a['det'][2], b['det'][2]))} | "
          f"{f(q(a['cpu'], b['cpu']))} | {f(q(a['pay'], b['pay']))} | {f(q(a['wire'], b['wire']))} | "
          f"{f(q(a['mesh_wire'], b['mesh_wire'])) if a['mesh_wire'] is not None else '-'} | {f(q(a['join'], b['join']))} |")

print("\n### meshkitd details per run")
print("| N | run | victim | detected | exact p50/max (s) | poll p50/max (s) | first suspect (s) | sweep p50/max (s) | conv from first / last start (s) | susp/refut in window | extra suspect/dead after | unexpected exits | log levels | error |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for n in Ns:
    for r in mk.get(n, []):
        c, s = r.get("crash", {}), r.get("steady", {})
        print(f"| {n} | {r['_run']} | {c.get('victim')} | {c.get('detected')}/{c.get('observers')} | {f(c.get('p50_s'))}/{f(c.get('max_s'))} | "
              f"{f(c.get('poll_p50_s'))}/{f(c.get('poll_max_s'))} | {f(c.get('first_suspect_s'))} | {f(c.get('sweep_s_p50'),3)}/{f(c.get('sweep_s_max'),3)} | "
              f"{f(r.get('converge_s'))}/{f(r.get('converge_after_last_start_s'))} | {s.get('suspicions_raised_in_window')}/{s.get('refutations_in_window')} | "
              f"{c.get('observers_with_extra_suspect_or_dead_2s_after')} | {r.get('unexpected_exits')} | {r.get('log_levels')} | {r.get('error', '')} |")
print("\n### memberlist details per run")
print("| N | run | victim | detected | p50/max (s) | first suspect log (s) | suspect lines (others) | FP leave events | CPU cores (whole process) |")
print("|---|---|---|---|---|---|---|---|---|")
for n in Ns:
    for r in ml.get(n, []):
        c = r.get("crash", {})
        print(f"| {n} | {r['_run']} | {c.get('victim')} | {c.get('detected')}/{c.get('observers')} | {f(c.get('p50_s'))}/{f(c.get('max_s'))} | "
              f"{f(c.get('first_suspect_log_s'))} | {c.get('suspect_log_lines_other_nodes')} | {c.get('false_positive_leave_events')} | {f(r['steady']['cpu_cores_used'], 4)} |")
print("\n### meshkitd joins and probers' health per run")
print("| N | run | processes started in (s) | join after last start (s) | sweeps (last: s after last start, converged, fewest alive, sweep s) | suspicions / refutations / probes failed during join | connections / dials failed / datagrams dropped during join | health score at kill: max, nodes > 0 | handshakes in window |")
print("|---|---|---|---|---|---|---|---|---|")
for n in Ns:
    for r in mk.get(n, []):
        j, c, s = r.get("join_totals", {}), r.get("crash", {}), r.get("steady", {})
        tr = r.get("converge_trace") or []
        h = c.get("health_at_kill") or []
        print(f"| {n} | {r['_run']} | {f(r.get('start_all_s'))} | {f(r.get('converge_after_last_start_s'))} | {len(tr)} ({tr[-1] if tr else ''}) | "
              f"{j.get('gossip_suspicions_raised', '?'):.0f} / {j.get('gossip_refutations', 0):.0f} / {j.get('gossip_probes_failed', 0):.0f} | "
              f"{j.get('transport_connections_opened', 0):.0f} / {j.get('transport_dials_failed', 0):.0f} / {j.get('transport_datagrams_dropped', 0):.0f} | "
              f"{max(h) if h else 'n/a'}, {sum(1 for x in h if x > 0)} | {s.get('connections_opened_in_window')} |"
              if j else f"| {n} | {r['_run']} | {f(r.get('start_all_s'))} | {f(r.get('converge_after_last_start_s'))} | (no join record) | | | | |")
