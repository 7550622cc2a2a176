#!/usr/bin/env python3
"""idle: where an idle meshkitd's CPU goes. Starts N meshkitd on 127.0.0.1 (configured like
meshbench.py's, `lan` profile, default probes), waits SETTLE seconds, then over WINDOW seconds
reads every thread's /proc/<pid>/task/<tid>/schedstat (run time, times scheduled) and
voluntary/involuntary context switches: per-thread figures for nodes 1 and 2, the mean CPU
(ms/s) and thread runs per second over all N. Optional last argument:
  strace   strace -f -c node 2 over the window (syscall counts)
  perf     perf record -g node 2 over the window ($MESHBENCH_OUT/perf.data)
  tcpdump  UDP datagrams between the nodes over the window, by payload size (run it in a network
           namespace of its own: `unshare -n sh -c 'ip link set lo up && exec python3 idle.py ...'`)
Env: EXTRA_TOML  lines appended to every node.toml ("\n" for newlines), e.g.
     EXTRA_TOML='\n[probes]\nbuiltins = false\n'
Usage: idle.py BIN_DIR N SETTLE WINDOW [strace|perf|tcpdump]
Every process it starts is killed (by PID) when it ends; its run directory is removed."""
import os, subprocess, sys, time, shutil, signal, json
bin_dir, N, settle, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
extra = sys.argv[5] if len(sys.argv) > 5 else ""
work = os.environ.get("MESHBENCH_OUT", "/tmp/meshbench")
run = os.path.join(work, f"idle-{os.getpid()}")
os.makedirs(run, exist_ok=True)
meshctl = os.path.join(bin_dir, "meshctl"); meshkitd = os.path.join(bin_dir, "meshkitd")
subprocess.run([meshctl, "certs", "init", "--out", f"{run}/certs", "--nodes", str(N)], check=True, capture_output=True)
procs = []
try:
    for i in range(1, N + 1):
        open(f"{run}/node-{i}.toml", "w").write(f'''id = {i}
listen = "127.0.0.1:{41000 + i}"
seeds = ["1@127.0.0.1:41001"]
control = "127.0.0.1:{43000 + i}"
profile = "lan"

[tls]
cert = "certs/node-{i}.pem"
key = "certs/node-{i}.key"
ca = "certs/ca.pem"

[access]
[access.identities]
meshctl-observer = ["mesh.observe"]
''' + os.environ.get("EXTRA_TOML", "").replace("\\n", "\n"))
        p = subprocess.Popen([meshkitd, "--config", f"{run}/node-{i}.toml"], cwd=run,
                             stdout=open(f"{run}/node-{i}.out", "w"), stderr=open(f"{run}/node-{i}.log", "w"))
        procs.append(p)
        time.sleep(0.2)
    time.sleep(settle)
    tck = os.sysconf("SC_CLK_TCK")
    def snap(pid):
        d = {}
        for t in os.listdir(f"/proc/{pid}/task"):
            st = open(f"/proc/{pid}/task/{t}/stat").read()
            name = st[st.index("(")+1:st.rindex(")")]
            f = st[st.rindex(")")+2:].split()
            ut, stt = int(f[11]), int(f[12])
            ss = open(f"/proc/{pid}/task/{t}/schedstat").read().split()
            sched = {l.split(":")[0].strip(): l.split(":")[1].strip() for l in open(f"/proc/{pid}/task/{t}/status") if "ctxt" in l}
            d[t] = (name, ut + stt, int(ss[0]), int(ss[2]), int(sched["voluntary_ctxt_switches"]), int(sched["nonvoluntary_ctxt_switches"]))
        return d
    before = {p.pid: snap(p.pid) for p in procs}
    t0 = time.monotonic()
    if extra == "strace":
        st = subprocess.Popen(["strace", "-f", "-c", "-o", f"{run}/strace.txt", "-p", str(procs[1].pid)])
    if extra == "perf":
        st = subprocess.Popen(["perf", "record", "-F", "2999", "-g", "-o", os.path.join(work, "perf.data"), "-p", str(procs[1].pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if extra == "tcpdump":
        st = subprocess.Popen(["tcpdump", "-i", "lo", "-nn", "-q", "-l", "udp"], stdout=open(f"{run}/dump.txt", "w"), stderr=subprocess.DEVNULL)
    time.sleep(window)
    if extra in ("strace", "tcpdump", "perf"):
        st.send_signal(signal.SIGINT); st.wait()
    el = time.monotonic() - t0
    after = {p.pid: snap(p.pid) for p in procs}
    tot_cpu = 0; tot_sw = 0
    for idx, p in enumerate(procs):
        b, a = before[p.pid], after[p.pid]
        cpu = sum(a[t][2] - b[t][2] for t in a if t in b) / 1e6 / el
        sw = sum(a[t][3] - b[t][3] for t in a if t in b) / el
        tot_cpu += cpu; tot_sw += sw
        if idx < 2:
            print(f"node-{idx+1} pid {p.pid}: {cpu:.3f} ms/s cpu (schedstat), {sw:.1f} runs/s, threads {len(a)}")
            for t in sorted(a):
                if t in b:
                    n, _, r0, c0, v0, nv0 = b[t]; _, _, r1, c1, v1, nv1 = a[t]
                    print(f"   {t:>7} {n:<16} {(r1-r0)/1e6/el:7.3f} ms/s  {(c1-c0)/el:6.1f} runs/s  vol {(v1-v0)/el:6.1f}/s  invol {(nv1-nv0)/el:5.1f}/s")
    print(f"mean over {N}: {tot_cpu/N:.3f} ms/s cpu, {tot_sw/N:.1f} runs/s; load {open('/proc/loadavg').read().split()[0]}")
    if extra == "strace":
        print(open(f"{run}/strace.txt").read())
    if extra == "tcpdump":
        import collections, re
        sizes = collections.Counter(); n = 0; tot = 0
        for line in open(f"{run}/dump.txt"):
            m = re.search(r"\.(\d+) > [\d.]+\.(\d+): UDP, length (\d+)", line)
            if not m: continue
            sp, dp, l = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if not (41000 < sp < 42000 and 41000 < dp < 42000): continue
            sizes[l] += 1; n += 1; tot += l + 28
        print(f"gossip udp: {n/el/N:.2f} packets/s per node, {tot/el/N:.1f} B/s per node (IP+UDP incl.)")
        for l, c in sorted(sizes.items()):
            print(f"   payload {l:5d}: {c/el/N:6.2f}/s per node")
finally:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    shutil.rmtree(run, ignore_errors=True)
