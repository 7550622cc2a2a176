#!/usr/bin/env python3
"""Runs every shell command of README.md and docs/*.md as written, or, when it is long, checks
that its program accepts it, and fails on any it cannot account for.

Every fenced shell block (``sh``, ``bash``, ``shell``, ``console``) must have an entry in BLOCKS
below that says how it is checked; a block without one, or an unlabelled fence, fails the run, so
a new command in the docs forces a decision. Blocks run in bash, verbatim, with ``set -eo
pipefail``; a DEBUG trap records each line bash executes, so every command line of a block is
accounted for: it ran (exit status checked), was parsed only (a long command: its program was
asked to check the arguments and print what it would do, ``--dry-run``, or cargo's targets were
looked up), or is listed as not run with its reason. A line that never executed fails the run.

Sessions (see BLOCKS):
* ``hosting``: docs/hosting.md's walkthrough end to end in one shell, against real meshkitd
  processes, in a network namespace of its own (the documented ports 7001-7003 and 8101-8103
  cannot collide with anything on the machine), with a scratch HOME.
* ``cluster``: scripts/local-cluster.sh as the README runs it; the ``export`` and meshctl
  lines it prints are run from another directory, and the README's own lines from the
  repository's directory.
* ``shims``: everything else. PATH holds only shims (scripts/check_docs_shim.py) and a few
  plain tools, so a program the checker does not know is "command not found": the shims run
  a command for real when it is cheap (meshkit-sim runs under a size budget, with the debug
  build) and otherwise only parse it.

Usage: scripts/check-docs.sh [--list] [--only FILE]   (the .sh builds what it needs first)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL_LANGS = {"sh", "bash", "shell", "console"}
OTHER_LANGS = {"text", "toml", "json", "rust", "yaml", "promql", "go", "python", "diff", "ini"}


@dataclass
class Command:
    """One logical command line of a block: continuation lines joined, comments kept."""

    first: int  # index of its first line in the block
    last: int  # index of its last line
    text: str


@dataclass
class Block:
    file: str
    line: int  # line of the opening fence in the file
    lang: str
    lines: list[str]
    commands: list[Command] = field(default_factory=list)
    entry: "Entry | None" = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def first_command(self) -> str:
        return self.commands[0].text if self.commands else ""


def split_commands(lines: list[str]) -> list[Command]:
    """Logical commands: a line ending in a backslash continues; a `for ...; do` runs to its
    `done`; a line holding only a comment is no command."""
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        first = i
        text = lines[i]
        depth = 1 if re.match(r"^\s*(for|while|if)\b", lines[i]) else 0
        if depth and re.search(r"\b(done|fi)\s*$", lines[i].split("#")[0]):
            depth = 0
        while i + 1 < len(lines) and (lines[i].rstrip().endswith("\\") or depth):
            i += 1
            text += "\n" + lines[i]
            if re.match(r"^\s*(done|fi)\b", lines[i]):
                depth = 0
        commands.append(Command(first, i, text))
        i += 1
    return commands


def extract(files: list[Path]) -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    errors: list[str] = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            lang = m.group(2)
            start = i
            i += 1
            body = []
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i][len(m.group(1)) :] if lines[i].startswith(m.group(1)) else lines[i])
                i += 1
            i += 1
            if lang == "":
                errors.append(f"{rel}:{start + 1}: a fence without a language; label it (`text` for output, `sh` for commands)")
            elif lang in SHELL_LANGS:
                b = Block(rel, start + 1, lang, body)
                b.commands = split_commands(body)
                blocks.append(b)
            elif lang not in OTHER_LANGS:
                errors.append(f"{rel}:{start + 1}: unknown fence language `{lang}`")
    return blocks, errors


@dataclass
class Entry:
    """How one block is checked: matched by its file and its first command (a regex)."""

    file: str
    first: str
    session: str  # "hosting", "cluster", "shims" or "not-run"
    reason: str = ""  # not-run: why
    before: str = ""  # shell run just before the block, in its session (not counted)
    after: str = ""  # shell run just after it
    subst: tuple[tuple[str, str], ...] = ()  # placeholders filled in, (text, replacement)


# Placeholders of the benchmark and mutation commands: a sample value each (reported).
SAMPLE = (
    ("<s>", "crash-one"),
    ("<before|after>", "after"),
    ("<after>", "$PWD"),
    ("<before>", "$PWD"),
    ("<filter>", "shard::"),
    ("<files>", "mesh/src/shard/*.rs"),
    ("<module>", "shard"),
)

BLOCKS: list[Entry] = [
    # README.md
    Entry("README.md", r"cargo run --release -p meshkit-sim -- run$", "shims"),
    Entry("README.md", r"cargo run --release -p meshkit-sim -- run scenarios/partition-heal", "shims"),
    Entry("README.md", r"cargo run --release -p meshkit-sim -- sweep", "shims"),
    Entry("README.md", r"cargo run --release -p meshkit-benches", "shims"),
    Entry("README.md", r"scripts/local-cluster.sh", "cluster"),
    # docs/
    Entry("docs/architecture.md", r"cargo nextest run -p meshkit-tests --test turmoil_mesh", "shims"),
    Entry("docs/benchmarks-criterion.md", r"cargo bench", "shims"),
    Entry(
        "docs/benchmarks.md",
        r"cargo test --release -p meshkit-runtime --lib probe_host_overhead",
        "not-run",
        reason="a 35 s CPU measurement in a release build of meshkit-runtime; the test is compiled by the suite's build and ignored there",
    ),
    Entry(
        "docs/benchmarks.md",
        r"CARGO_TARGET_DIR=target-static scripts/static-image.sh --profile release",
        "not-run",
        reason="builds release images and brings up a 50-node compose stack (Docker, a raised neighbour table, minutes); tests/tests/compose_env.rs (run by scripts/test.sh after the image) runs up and down",
    ),
    Entry("docs/benchmarks.md", r".", "shims", subst=SAMPLE),
    Entry("docs/metrics.md", r"cargo nextest run", "shims"),
    Entry("docs/diagnostics.md", r"cargo run -p meshkit-node --example probes", "shims"),
    Entry(
        "docs/diagnostics.md",
        r"cargo run -p meshkit-node --example slow_disk",
        "not-run",
        reason="the suite runs the example's own test (test = true in backends/node/Cargo.toml: meshkit-node::example/slow_disk), which checks what the docs print",
    ),
    Entry("docs/scenarios.md", r"cargo run --release -p meshkit-sim", "shims"),
    Entry("docs/testing.md", r".", "shims", subst=SAMPLE),
    Entry("docs/hosting.md", r"scripts/static-image.sh", "shims"),
    Entry(
        "docs/hosting.md",
        r"docker run",
        "not-run",
        reason="needs the image scripts/static-image.sh builds; its smoke test (run by scripts/test.sh) does the same with a free port",
    ),
    Entry(
        "docs/chaos-environment.md",
        r"compose/up",
        "not-run",
        reason="needs Docker and the images; tests/tests/compose_env.rs (run by scripts/test.sh after the image) runs up and down",
    ),
    Entry(
        "docs/chaos-environment.md",
        r"cargo run -p meshkit-chaos",
        "not-run",
        reason="needs Docker, the images and a minute or more a run; backends/chaos/tests/compose_run.rs (run by scripts/test.sh after the image) runs crash-one through the runner, and its unit tests the mapping",
    ),
    Entry(
        "docs/chaos-environment.md",
        r"P=meshkit-chaos",
        "not-run",
        reason="needs Docker, the images and a stack that is up; backends/chaos/tests/compose_run.rs (run by scripts/test.sh after the image) starts the autoscaler service through the runner and checks Prometheus scraped it",
    ),
    # The walkthrough: everything else in docs/hosting.md (HOSTING_GLUE adds the steps between).
    Entry("docs/hosting.md", r".", "hosting"),
]


def classify(blocks: list[Block]) -> list[str]:
    errors = []
    for b in blocks:
        matches = [e for e in BLOCKS if e.file == b.file and re.match(e.first, b.first_command)]
        if not matches:
            errors.append(f"{b.where}: no entry in BLOCKS for this block (first command: {b.first_command.splitlines()[0]!r}); decide how it is checked")
        else:
            b.entry = matches[0]
    return errors


# ---- running blocks in bash, with every executed line recorded ---------------------------------

PRELUDE = r"""set -eo pipefail
set -T
trap 'export CHECK_DOCS_LINE=$LINENO; echo "$LINENO" >> "$CHECK_DOCS_LINES"' DEBUG
"""


@dataclass
class Script:
    """A bash script made of blocks (verbatim, so bash's line numbers map back to the docs)."""

    text: list[str] = field(default_factory=list)
    where: dict[int, tuple[Block, int]] = field(default_factory=dict)  # script line -> block, command index

    def add(self, shell: str) -> None:
        self.text.extend(shell.rstrip("\n").split("\n") if shell else [])

    def add_block(self, b: Block) -> None:
        body = "\n".join(b.lines)
        for old, new in b.entry.subst:
            body = body.replace(old, new)
        lines = body.split("\n")
        assert len(lines) == len(b.lines), f"{b.where}: a substitution changed the line count"
        start = len(self.text) + 1
        for ci, c in enumerate(b.commands):
            for k in range(c.first, c.last + 1):
                self.where[start + k] = (b, ci)
        self.text.extend(lines)


@dataclass
class Outcome:
    block: Block
    index: int
    cls: str = ""  # run, parse, not-run
    detail: list[str] = field(default_factory=list)


def run_script(script: Script, cwd: Path, env: dict[str, str], wrap: list[str], timeout: float, name: str, work: Path) -> tuple[int, str, list[int], list[dict]]:
    """Runs the script; its exit status, output, the lines bash executed (in order) and the
    shims' records."""
    path = work / f"{name}.sh"
    path.write_text(PRELUDE + "\n".join(script.text) + "\n")
    # PRELUDE's lines come first: shift the map.
    offset = PRELUDE.count("\n")
    lines_file, records_file = work / f"{name}.lines", work / f"{name}.records"
    lines_file.write_text("")
    records_file.write_text("")
    env = dict(env, CHECK_DOCS_LINES=str(lines_file), CHECK_DOCS_RECORDS=str(records_file))
    started = time.monotonic()
    try:
        p = subprocess.run([*wrap, "bash", str(path)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        status, output = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        status, output = -1, f"timed out after {timeout:.0f} s\n" + ((e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")) + ((e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or ""))
    elapsed = time.monotonic() - started
    executed = [int(l) - offset for l in lines_file.read_text().split() if l.strip().isdigit()]
    records = [json.loads(l) for l in records_file.read_text().splitlines() if l.strip()]
    for r in records:
        r["line"] -= offset
    print(f"  session {name}: bash exit {status} after {elapsed:.1f} s")
    return status, output, executed, records


# ---- the hosting walkthrough -------------------------------------------------------------------

# Functions the glue between blocks uses (the doc's own lines never call them).
HOSTING_PRELUDE = r"""
ip link set lo up
trap 'for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
__poll() {  # __poll SECONDS WHAT COMMAND...: until COMMAND succeeds, polling every 0.2 s
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "check-docs: no $what within $limit s" >&2
  return 1
}
__as_node1() { meshctl "$@" --addr 127.0.0.1:8101 --ca certs/ca.pem --cert certs/node-1.pem --key certs/node-1.key; }
__alive_at_least() { [ "$(__as_node1 peers list --json | grep -o '"state":"alive"' | wc -l)" -ge "$1" ]; }
__mesh_formed() { __alive_at_least 3; }
__mesh_of_five() { __alive_at_least 5; }
__raft_leader() { __as_node1 leaders status --json | grep -Eq '"leader":[1-9]'; }
"""


def hosting_configs(blocks: list[Block], doc: str) -> str:
    """Shell that writes node-1.toml from the doc's config block and node-2/3 by the doc's rule
    (the same with 2 and 3 in place of every 1 but the seed's)."""
    text = (ROOT / doc).read_text()
    m = re.search(r"```toml\n(id = 1\n.*?)```", text, re.S)
    if not m:
        raise SystemExit(f"{doc}: the walkthrough's node-1.toml block (```toml starting `id = 1`) is gone")
    base = m.group(1)
    out = []
    for i in (1, 2, 3):
        lines = []
        for line in base.split("\n"):
            if not line.startswith("seeds"):
                line = re.sub(r"^id = 1$", f"id = {i}", line)
                for a, b in (("7001", f"700{i}"), ("8101", f"810{i}"), ("node-1", f"node-{i}"), ("raft-1", f"raft-{i}")):
                    line = line.replace(a, b)
            lines.append(line)
        out.append(f"cat > node-{i}.toml <<'__EOF'\n" + "\n".join(lines).rstrip("\n") + "\n__EOF")
    return "\n".join(out)


# Glue after a walkthrough block, keyed by a regex on its first command.
HOSTING_GLUE = [
    (r"cargo build -p meshkit-cli", 'cd "$CHECK_DOCS_SCRATCH"   # the walkthrough makes its directory here, not in the repository'),
    (r"mkdir cluster", "{configs}"),
    (r"meshkitd --config node-1.toml &", "__poll 30 'mesh of three' __mesh_formed\n__poll 30 'Raft leader' __raft_leader"),
    # "Once `meshctl peers list` shows them alive": the joining voters 4 and 5.
    (r"for i in 4 5; do", "__poll 30 'nodes 4 and 5 alive' __mesh_of_five"),
]


def hosting_session(blocks: list[Block], work: Path, bin_dir: Path, base_env: dict[str, str], timeout: float) -> tuple[int, str, list[int], list[dict], Script]:
    doc = "docs/hosting.md"
    script = Script()
    script.add(HOSTING_PRELUDE)
    for b in blocks:
        script.add_block(b)
        for pattern, glue in HOSTING_GLUE:
            if re.match(pattern, b.first_command):
                script.add(glue.replace("{configs}", hosting_configs(blocks, doc)))
    home = work / "home"
    home.mkdir()
    env = dict(base_env, HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")
    return (*run_script(script, ROOT, env, ["unshare", "-rn"], timeout, "hosting", work), script)


# ---- the README's local cluster ----------------------------------------------------------------

CLUSTER_PRELUDE = r"""
ip link set lo up
__script_pid=
trap 'for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
__poll() {
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "check-docs: no $what within $limit s" >&2
  return 1
}
__printed() { grep -q '^Three nodes are running' "$CHECK_DOCS_SCRATCH/cluster.out"; }
__ctl() { "$CHECK_DOCS_ROOT/target/debug/meshctl" "$@" --ca target/local-cluster/certs/ca.pem --cert target/local-cluster/certs/meshctl-operator.pem --key target/local-cluster/certs/meshctl-operator.key; }
__holder() { __ctl leaders status --json --addr 127.0.0.1:8101 | python3 -c 'import json,sys; v=json.load(sys.stdin); print(next(l["holder"] for l in v["table"] if l["scope"]=="global-control"))'; }
__held() { __holder >/dev/null; }
# A command that runs until stopped (leaders watch): it must still run after 3 s and have printed
# something; then it is stopped.
__until_stopped() {
  local out="$CHECK_DOCS_SCRATCH/until-stopped.out"
  "$@" >"$out" 2>&1 &
  local pid=$!
  sleep 3
  if ! kill -0 $pid 2>/dev/null; then wait $pid; echo "check-docs: $* ended by itself" >&2; cat "$out" >&2; return 1; fi
  kill $pid; wait $pid 2>/dev/null || true
  [ -s "$out" ] || { echo "check-docs: $* printed nothing in 3 s" >&2; return 1; }
}
"""

CLUSTER_BEFORE = r"""
__script_pid=$!
__poll 120 'addresses printed by the script' __printed
__poll 30 'holder of global-control' __held
N=$(__holder)
M=$(( N % 3 + 1 ))
# The lines the script printed, from another directory (their paths are absolute).
sed -n '/^Three nodes are running/,/^Ctrl-C here/p' "$CHECK_DOCS_SCRATCH/cluster.out" | sed -n 's/^  //p' \
  | sed -e "s/810N/810$N/g" -e 's/^\(.*leaders watch.*\)$/__until_stopped \1/' > "$CHECK_DOCS_SCRATCH/printed.sh"
mkdir -p "$CHECK_DOCS_SCRATCH/elsewhere"
(cd "$CHECK_DOCS_SCRATCH/elsewhere" && unset MESHCTL_CA MESHCTL_CERT MESHCTL_KEY MESHCTL_ADDR \
  && set -x && . "$CHECK_DOCS_SCRATCH/printed.sh") 2> "$CHECK_DOCS_SCRATCH/printed.trace"
# They drained and resumed the holder: the README's lines start from whoever holds it now.
__poll 30 'holder of global-control' __held
N=$(__holder)
M=$(( N % 3 + 1 ))
"""

CLUSTER_AFTER = r"""
# Ctrl-C or SIGTERM ends the script with status 0.
kill -TERM "$__script_pid"
wait "$__script_pid"
"""

CLUSTER_SUBST = (
    ("scripts/local-cluster.sh            #", 'MESHKIT_BIN=target/debug scripts/local-cluster.sh >"$CHECK_DOCS_SCRATCH/cluster.out" 2>&1 & #'),
    ("target/release/meshctl", "target/debug/meshctl"),
    ("810N", "810$N"),
    ("810M", "810$M"),
    ("--to M", "--to $M"),
    ("$meshctl leaders watch", "__until_stopped $meshctl leaders watch"),
    ("$meshctl shards watch", "__until_stopped $meshctl shards watch"),
)


def cluster_session(blocks: list[Block], work: Path, base_env: dict[str, str], timeout: float) -> tuple[int, str, list[int], list[dict], Script]:
    (b,) = blocks
    for old, _ in CLUSTER_SUBST:
        if old not in "\n".join(b.lines):
            raise SystemExit(f"{b.where}: the cluster block no longer has {old!r}; update CLUSTER_SUBST")
    b.entry.subst = CLUSTER_SUBST
    # The block's first line starts the script; the glue after it waits for the nodes and runs
    # what the script printed, then the block goes on.
    script = Script()
    script.add(CLUSTER_PRELUDE)
    script.add_block(b)
    # Move the glue between the first line and the rest: rebuild the text around it.
    start = len(script.text) - len(b.lines)
    script.text[start + 1 : start + 1] = CLUSTER_BEFORE.strip("\n").split("\n")
    shift = len(CLUSTER_BEFORE.strip("\n").split("\n"))
    script.where = {(k if k <= start + 1 else k + shift): v for k, v in script.where.items()}
    script.add(CLUSTER_AFTER)
    env = dict(base_env, HOME=str(work / "home"), PATH=os.environ["PATH"])
    (work / "home").mkdir(exist_ok=True)
    return (*run_script(script, ROOT, env, ["unshare", "-rn"], timeout, "cluster", work), script)


def printed_commands(work: Path) -> tuple[list[str], str]:
    """The commands the cluster script printed, and bash's trace of running them."""
    printed = (work / "printed.sh").read_text() if (work / "printed.sh").exists() else ""
    trace = (work / "printed.trace").read_text() if (work / "printed.trace").exists() else ""
    return [c.text for c in split_commands(printed.split("\n"))], trace


# ---- the shims session -------------------------------------------------------------------------

SHIM = ROOT / "scripts" / "check_docs_shim.py"
# Plain tools a block may use as they are (they neither build nor run anything long).
PLAIN_TOOLS = ["sh", "bash", "mkdir", "cat", "grep", "seq", "ls", "true", "false", "env", "rm", "sort", "wc", "head", "tail", "tee", "sed", "tr", "dirname", "basename", "echo", "test"]


def wrapper(path: Path, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {SHIM} '{name}' \"$@\"\n")
    path.chmod(0o755)


def make_sandbox(work: Path, metadata: dict) -> tuple[Path, Path, Path]:
    """A tree that stands in for the repository in the shims session (data linked, programs
    replaced by shims), its PATH directory, and the hosting session's (cargo alone)."""
    tree, bin_dir, hosting_bin = work / "tree", work / "bin", work / "hosting-bin"
    tree.mkdir()
    (tree / "scenarios").symlink_to(ROOT / "scenarios")
    for d in ("scripts", "benches/anchors/memberlist"):
        for f in sorted((ROOT / d).iterdir()):
            if not f.is_file():
                continue
            dest = tree / d / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix == ".sh":
                wrapper(dest, f"script/{d}/{f.name}")
            else:
                dest.symlink_to(f)
    # target/release/ fills as the blocks build (the cargo shim), as on a fresh clone.
    for name in ("cargo", "python3", "go", "unshare", "nice", "ip"):
        wrapper(bin_dir / name, name)
    for tool in PLAIN_TOOLS:
        real = shutil.which(tool)
        if real:
            (bin_dir / tool).symlink_to(real)
    wrapper(hosting_bin / "cargo", "cargo")
    return tree, bin_dir, hosting_bin


# ---- accounting --------------------------------------------------------------------------------


RANK = {"": 0, "run": 1, "parse": 2, "not-run": 3}


def account(script: Script, executed: list[int], records: list[dict], outcomes: dict[tuple[str, int, int], Outcome]) -> list[str]:
    """Gives each command of the script's blocks its class (the most cautious of what its lines
    did: a line bash executed ran, unless a shim recorded that it only parsed it or did not run
    it); returns the script's commands never reached."""
    executed_set = set(executed)
    mine = {(b.file, b.line, ci) for b, ci in script.where.values()}
    for line, (b, ci) in script.where.items():
        o = outcomes.setdefault((b.file, b.line, ci), Outcome(b, ci))
        if line in executed_set and RANK[o.cls] < RANK["run"]:
            o.cls = "run"
    for r in records:
        hit = script.where.get(r["line"])
        if not hit:
            continue
        b, ci = hit
        o = outcomes.setdefault((b.file, b.line, ci), Outcome(b, ci))
        if RANK[r["class"]] > RANK[o.cls]:
            o.cls = r["class"]
        if r["detail"]:
            o.detail.append(r["detail"])
    unreached = []
    for key, o in outcomes.items():
        ci = key[2]
        if key in mine and not o.cls and o.block.entry.session != "not-run":
            c = o.block.commands[ci]
            unreached.append(f"{o.block.file}:{doc_line(o.block, ci)}: never executed: {c.text.splitlines()[0]}")
    return unreached


def doc_line(b: Block, ci: int) -> int:
    return b.line + 1 + b.commands[ci].first


def stopped_at(script: Script, executed: list[int]) -> str:
    """The documented command a failed session stopped at: the last of its lines bash began."""
    for line in reversed(executed):
        if line in script.where:
            b, ci = script.where[line]
            return f"{b.file}:{doc_line(b, ci)}: {b.commands[ci].text.splitlines()[0].strip()}"
    return "before the first documented command (the checker's own setup)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the blocks and how each is checked; run nothing")
    parser.add_argument("--only", choices=["hosting", "cluster", "shims"], action="append", help="run only these sessions")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    blocks, errors = extract(files)
    errors += classify(blocks)
    total = sum(len(b.commands) for b in blocks)
    print(f"check-docs: {len(blocks)} shell blocks, {total} commands in README.md and docs/*.md")
    if args.list or errors:
        for b in blocks:
            how = b.entry.session + (f" ({b.entry.reason})" if b.entry and b.entry.reason else "") if b.entry else "UNCLASSIFIED"
            print(f"  {b.where:<32} {how:<10} {b.first_command.splitlines()[0][:80]}")
        for e in errors:
            print(f"check-docs: error: {e}", file=sys.stderr)
        return 1 if errors else 0

    sessions = set(args.only or ["hosting", "cluster", "shims"])
    cargo = shutil.which("cargo")
    metadata_text = subprocess.run([cargo, "metadata", "--format-version", "1", "--no-deps", "--locked"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    metadata = json.loads(metadata_text)
    for binary in ("meshkitd", "meshctl", "meshkit-sim", "meshkit-benches"):
        if not (ROOT / "target/debug" / binary).exists():
            print(f"check-docs: target/debug/{binary} is missing: scripts/check-docs.sh builds it", file=sys.stderr)
            return 1
    work = Path(tempfile.mkdtemp(prefix="meshkit-check-docs-"))
    try:
        (work / "metadata.json").write_text(metadata_text)
        tree, bin_dir, hosting_bin = make_sandbox(work, metadata)
        base_env = {
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "CHECK_DOCS_ROOT": str(ROOT),
            "CHECK_DOCS_CARGO": cargo,
            "CHECK_DOCS_PATH": os.environ["PATH"],
            "CHECK_DOCS_METADATA": str(work / "metadata.json"),
            "CHECK_DOCS_SCRATCH": str(work),
            "CHECK_DOCS_TREE": str(work / "tree"),
            "CARGO_HOME": os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
            "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
            # What decides how cargo builds (CARGO_INCREMENTAL, CARGO_TARGET_DIR, RUSTFLAGS...),
            # as the suite was built: without it the shims' `cargo nextest list` rebuilt every
            # test binary under another profile hash (minutes, and gigabytes of disk in CI).
            **{k: v for k, v in os.environ.items() if k.startswith(("CARGO_", "RUSTFLAGS", "RUSTDOCFLAGS"))},
        }
        outcomes: dict[tuple[str, int, int], Outcome] = {}
        failures: list[str] = []
        printed: list[str] = []

        def report_failure(name: str, status: int, output: str, script: Script, executed: list[int]) -> None:
            if status != 0:
                # The nodes' logs share the output: the last lines hold the command's own error.
                tail = "\n".join(output.strip().splitlines()[-40:])
                failures.append(f"session {name}: exit {status}, stopped at {stopped_at(script, executed)}\n" + textwrap.indent(tail, "    "))

        for b in blocks:
            if b.entry.session == "not-run":
                for ci in range(len(b.commands)):
                    outcomes[(b.file, b.line, ci)] = Outcome(b, ci, "not-run", [b.entry.reason])

        if "hosting" in sessions:
            hb = [b for b in blocks if b.entry.session == "hosting"]
            status, output, executed, records, script = hosting_session(hb, work, hosting_bin, base_env, 600)
            report_failure("hosting", status, output, script, executed)
            unreached = account(script, executed, records, outcomes)
            failures += [] if status else unreached
        if "cluster" in sessions:
            cb = [b for b in blocks if b.entry.session == "cluster"]
            status, output, executed, records, script = cluster_session(cb, work, base_env, 600)
            report_failure("cluster", status, output, script, executed)
            unreached = account(script, executed, records, outcomes)
            failures += [] if status else unreached
            printed, trace = printed_commands(work)
            if not printed:
                failures.append("cluster: the script printed no commands to run from another directory")
        if "shims" in sessions:
            for b in [b for b in blocks if b.entry.session == "shims"]:
                script = Script()
                script.add_block(b)
                env = dict(base_env, PATH=str(bin_dir), HOME=str(work / "home"))
                status, output, executed, records = run_script(script, tree, env, [], 900, f"shims-{Path(b.file).stem}-{b.line}", work)
                report_failure(f"shims {b.where}", status, output, script, executed)
                unreached = account(script, executed, records, outcomes)
                failures += [] if status else unreached

        counts = {"run": 0, "parse": 0, "not-run": 0}
        print()
        for b in blocks:
            for ci, c in enumerate(b.commands):
                o = outcomes.get((b.file, b.line, ci))
                if o is None:
                    continue
                label = {"run": "run", "parse": "not run: long (parsed)", "not-run": "not run", "": "NOT REACHED"}[o.cls]
                if o.cls:
                    counts[o.cls] += 1
                first = re.sub(r"\s+", " ", c.text.replace("\\\n", " "))[:110]
                print(f"  {b.file}:{doc_line(b, ci):<5} {label:<22} {first}")
                for d in dict.fromkeys(o.detail):
                    print(f"  {'':<34}{d[:200]}")
        if printed:
            print("\n  commands scripts/local-cluster.sh printed, run from another directory:")
            for p in printed:
                print(f"    run  {p.strip()[:110]}")
        print(
            f"\ncheck-docs: {counts['run']} commands run, {counts['parse']} long ones parsed only, "
            f"{counts['not-run']} not run (reasons above), {len(printed)} printed by the cluster script run; "
            f"{total - sum(counts.values())} of {total} not accounted for"
            + ("" if args.only is None else " (--only: the other sessions did not run)")
        )
        failures = list(dict.fromkeys(failures))
        for f in failures:
            print(f"check-docs: FAILED: {f}", file=sys.stderr)
        selected = sum(len(b.commands) for b in blocks if b.entry.session in sessions | {"not-run"})
        return 1 if failures or selected != sum(counts.values()) else 0
    finally:
        if args.keep:
            print(f"check-docs: scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
