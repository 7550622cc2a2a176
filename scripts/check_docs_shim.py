#!/usr/bin/env python3
"""The programs of scripts/check-docs.py's `shims` session: each documented program a block may
call, standing in for it. A shim runs the command for real when it is cheap, and otherwise asks
the program to check its arguments without running (`--dry-run`, `cargo nextest list`, cargo's
targets looked up in `cargo metadata`, `bash -n` and the flags a script handles, a Python file
compiled). Each invocation appends one JSON record to $CHECK_DOCS_RECORDS:
`{"line": <bash line>, "prog": ..., "argv": [...], "class": "run"|"parse"|"not-run",
"detail": ...}`; a failed check exits non-zero, which fails the block.

Invoked as `check_docs_shim.py NAME ARGS...` by the wrappers the checker writes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ["CHECK_DOCS_ROOT"])
DEBUG = ROOT / "target" / "debug"
REAL_CARGO = os.environ["CHECK_DOCS_CARGO"]
REAL_PYTHON = sys.executable
# A meshkit-sim run costs about its nodes x virtual seconds x runs; under this budget the debug
# build runs it for real (about 2 s here), above it only `--dry-run` checks it.
SIM_BUDGET = int(os.environ.get("CHECK_DOCS_SIM_BUDGET", "6000"))


def record(cls: str, detail: str, argv: list[str], prog: str) -> None:
    with open(os.environ["CHECK_DOCS_RECORDS"], "a") as f:
        f.write(
            json.dumps(
                {
                    "line": int(os.environ.get("CHECK_DOCS_LINE", "0")),
                    "prog": prog,
                    "argv": argv,
                    "class": cls,
                    "detail": detail,
                }
            )
            + "\n"
        )


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"check-docs: {message}", file=sys.stderr)
    sys.exit(3)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def materialize(pkg: dict, args: list[str]) -> None:
    """A release build puts its programs in target/release/ (and examples/): the sandbox gets
    shims there, so a later block that runs them finds them, and one that runs them before any
    build says where it was built fails, as on a fresh clone."""
    if "--release" not in args:
        return
    tree = Path(os.environ["CHECK_DOCS_TREE"])
    bins = [a for i, a in enumerate(args) if i and args[i - 1] == "--bin"]
    examples = [a for i, a in enumerate(args) if i and args[i - 1] == "--example"]
    if "--bins" in args or not (bins or examples or "--examples" in args):
        bins += targets(pkg, "bin")
    if "--examples" in args:
        examples += targets(pkg, "example")
    for name, sub in [(b, "") for b in bins] + [(e, "examples/") for e in examples]:
        path = tree / "target/release" / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} 'release/{sub}{name}' \"$@\"\n")
        path.chmod(0o755)


def meshkit_vars() -> list[str]:
    """The MESHKIT_* variables the block set for this command (the sessions set none)."""
    return sorted(v for v in os.environ if v.startswith("MESHKIT_"))


def metadata() -> dict:
    return json.loads(Path(os.environ["CHECK_DOCS_METADATA"]).read_text())


def package(name: str) -> dict:
    for p in metadata()["packages"]:
        if p["name"] == name:
            return p
    fail(f"cargo: no package `{name}` in the workspace")


def targets(pkg: dict, kind: str) -> list[str]:
    return [t["name"] for t in pkg["targets"] if kind in t["kind"]]


def sim(argv: list[str], prog: str) -> None:
    """meshkit-sim: `--dry-run` checks the scenarios and arguments and prints the plan; a
    `run` under SIM_BUDGET then runs for real with the debug build."""
    binary = str(DEBUG / "meshkit-sim")
    if "--help" in argv or "--version" in argv:
        out = run([binary, *argv])
        if out.returncode != 0:
            fail(f"meshkit-sim {shlex.join(argv)}: {out.stderr.strip()}")
        record("run", "", argv, prog)
        return
    plan = run([binary, *argv, "--dry-run"])
    if plan.returncode != 0:
        fail(f"meshkit-sim {shlex.join(argv)} --dry-run: exit {plan.returncode}: {plan.stderr.strip()}")
    cost = 0.0
    for m in re.finditer(r"(\d+) nodes, ([\d.]+) virtual s, .*?\((\d+) runs", plan.stdout):
        cost += int(m.group(1)) * float(m.group(2)) * int(m.group(3))
    if argv[:1] == ["run"] and cost <= SIM_BUDGET:
        out = subprocess.run([binary, *argv])
        if out.returncode != 0:
            fail(f"meshkit-sim {shlex.join(argv)}: exit {out.returncode}")
        record("run", f"debug build, {cost:.0f} node-virtual-seconds", argv, prog)
    else:
        record("parse", f"long ({cost:.0f} node-virtual-seconds): --dry-run: {plan.stdout.strip()}", argv, prog)


def dry_run_binary(binary: Path, argv: list[str], prog: str, why: str) -> None:
    out = run([str(binary), *argv, "--dry-run"])
    if out.returncode != 0:
        fail(f"{prog} {shlex.join(argv)} --dry-run: exit {out.returncode}: {out.stderr.strip()}")
    record("parse", f"{why}: --dry-run: {out.stdout.strip()}", argv, prog)


def release_binary(path: str, argv: list[str]) -> None:
    """target/release/<bin> or target/release/examples/<example>, as the docs call them after
    a release build: checked with the debug build's `--dry-run` (they are benchmarks)."""
    name = Path(path).name
    if Path(path).parent.name == "examples":
        dry_run_binary(DEBUG / "examples" / name, argv, path, "long (a benchmark of real processes)")
    elif name == "meshkit-sim":
        sim(argv, path)
    else:
        fail(f"{path}: no rule for this program")


def cargo(argv: list[str]) -> None:
    args = list(argv)
    sub = args.pop(0) if args else ""
    rest: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, rest = args[:i], args[i + 1 :]
    pkgs = [args[i + 1] for i, a in enumerate(args) if a in ("-p", "--package")]
    opt = lambda flag: [args[i + 1] for i, a in enumerate(args) if a == flag]  # noqa: E731
    for p in pkgs:
        package(p)
    if sub == "build":
        for p in pkgs:
            pkg = package(p)
            for b in opt("--bin"):
                if b not in targets(pkg, "bin"):
                    fail(f"cargo build: package {p} has no binary {b}")
            for e in opt("--example"):
                if e not in targets(pkg, "example"):
                    fail(f"cargo build: package {p} has no example {e}")
            materialize(pkg, args)
        record("parse", "a build (the checker uses the debug build the tests made): targets found in cargo metadata", argv, "cargo")
    elif sub == "run":
        (p,) = pkgs or fail("cargo run without -p")
        pkg = package(p)
        examples = opt("--example")
        if examples:
            (e,) = examples
            if e not in targets(pkg, "example"):
                fail(f"cargo run: package {p} has no example {e}")
            dry_run_binary(DEBUG / "examples" / e, rest, f"cargo run --example {e}", "long (a benchmark of real processes)")
            return
        bins = opt("--bin") or targets(pkg, "bin")
        if len(bins) != 1:
            fail(f"cargo run -p {p}: give --bin (it has {bins})")
        if bins[0] == "meshkit-sim":
            sim(rest, "cargo run -p meshkit-sim")
        elif bins[0] == "meshkit-benches":
            dry_run_binary(DEBUG / "meshkit-benches", rest, "cargo run -p meshkit-benches", "long (benchmark tables, 10,000-node runs)")
        else:
            fail(f"cargo run -p {p}: no rule for binary {bins[0]}")
    elif sub == "bench":
        for p in pkgs:
            if not targets(package(p), "bench"):
                fail(f"cargo bench: package {p} has no bench target")
        record("parse", "long (criterion benches): the package's bench targets found in cargo metadata; criterion's own flags are not checked", argv, "cargo")
    elif sub == "nextest":
        nextest(args[1:] if args[:1] == ["run"] else fail(f"cargo nextest {args[:1]}"), rest, argv)
    elif sub == "install":
        record("not-run", "installs a tool (cargo install)", argv, "cargo")
    elif sub in ("package", "publish"):
        if sub == "publish" and "--dry-run" not in args:
            fail("cargo publish without --dry-run in the docs")
        record("parse", f"long (cargo {sub} builds every crate): packages found in cargo metadata", argv, "cargo")
    elif sub == "mutants":
        for i, a in enumerate(args):
            if a == "--package":
                package(args[i + 1])
        record("parse", "long (mutation testing): the package found in cargo metadata", argv, "cargo")
    else:
        fail(f"cargo {sub}: no rule for this cargo command")


# nextest flags that only change how a run reports; `nextest list` does not take them.
RUN_ONLY = {"--no-capture", "--no-fail-fast"}
RUN_ONLY_WITH_VALUE = {"--success-output", "--failure-output"}


def nextest(args: list[str], rest: list[str], argv: list[str]) -> None:
    """`cargo nextest run ARGS` is checked with `cargo nextest list`, which must list at least
    one test: the packages, targets and filters exist (the suite itself runs them). `-p`,
    `--test` and `--lib` become a filterset over `--workspace`, so the list reuses the test
    build's feature set instead of building the package on its own."""
    expr: list[str] = []
    listed: list[str] = []
    it = iter(args)
    for a in it:
        if a in RUN_ONLY:
            continue
        if a in RUN_ONLY_WITH_VALUE:
            next(it, None)
        elif a in ("-p", "--package"):
            expr.append(f"package({next(it)})")
        elif a == "--test":
            expr.append(f"binary({next(it)})")
        elif a == "--lib":
            expr.append("kind(lib)")
        else:
            listed.append(a)
    cmd = [REAL_CARGO, "nextest", "list", "--workspace", "--locked", "--cargo-quiet", "--message-format", "oneline"]
    if expr:
        cmd += ["-E", " & ".join(expr)]
    # The caller's PATH, not the session's shims: cargo finds its `nextest` subcommand there.
    env = dict(os.environ, PATH=os.environ["CHECK_DOCS_PATH"])
    out = run([*cmd, *listed, *(["--", *rest] if rest else [])], cwd=ROOT, env=env)
    if out.returncode != 0:
        fail(f"cargo nextest list {shlex.join(cmd[3:] + listed)}: {out.stderr.strip()[-2000:]}")
    tests = [l for l in out.stdout.splitlines() if l.strip()]
    if not tests:
        fail(f"cargo nextest run {shlex.join(args)}: the filters match no test")
    sources = "".join(
        p.read_text() for d in ("mesh", "sim", "tests", "benches", "backends") for p in (ROOT / d).rglob("*.rs")
    )
    for var in meshkit_vars():
        if var not in sources:
            fail(f"cargo nextest run: no test reads {var}")
    record("parse", f"the test suite runs it: `cargo nextest list` finds {len(tests)} test(s)", argv, "cargo")


def script(path: str, argv: list[str]) -> None:
    """A shell script of the repository: `bash -n`, and every flag given appears in it."""
    real = ROOT / path.lstrip("./")
    if not real.is_file():
        fail(f"{path}: no such script")
    syntax = run(["bash", "-n", str(real)])
    if syntax.returncode != 0:
        fail(f"{path}: bash -n: {syntax.stderr.strip()}")
    text = real.read_text()
    for a in argv:
        if a.startswith("--") and a.split("=")[0] not in text:
            fail(f"{path}: the script does not handle {a}")
    for var in meshkit_vars():
        if var not in text:
            fail(f"{path}: the script does not read {var}")
    record("parse", "long: bash -n and the flags found in the script", [path, *argv], path)


def python(argv: list[str]) -> None:
    if argv[:1] == ["-c"]:
        try:
            compile(argv[1], "<-c>", "exec")
        except SyntaxError as e:
            fail(f"python3 -c: {e}")
        record("parse", "it reads the files a long run writes: compiled only", ["python3", *argv[:1], "..."], "python3")
        return
    real = ROOT / argv[0]
    if not real.is_file():
        fail(f"python3 {argv[0]}: no such file")
    text = real.read_text()
    try:
        compile(text, str(real), "exec")
    except SyntaxError as e:
        fail(f"python3 {argv[0]}: {e}")
    for a in argv[1:]:
        if a.startswith("--") and a not in text:
            fail(f"{argv[0]}: does not take {a}")
    record("parse", "long: compiled, and the flags found in the file", ["python3", *argv], "python3")


def main() -> None:
    name, argv = sys.argv[1], sys.argv[2:]
    if name == "cargo":
        cargo(argv)
    elif name == "python3":
        python(argv)
    elif name.startswith("release/"):
        release_binary(name, argv)
    elif name.startswith("script/"):
        script(name.removeprefix("script/"), argv)
    elif name == "go":
        if argv[:1] != ["build"] or not (ROOT / argv[-1]).is_file():
            fail(f"go {shlex.join(argv)}: expected `go build ... FILE` of a file in the repository")
        record("not-run", "needs Go and memberlist's sources (the side-by-side harness, docs/benchmarks.md)", ["go", *argv], "go")
    elif name == "unshare":
        # unshare -n sh -c '...': what runs inside is checked by its own shims.
        if argv[:1] != ["-n"]:
            fail(f"unshare {shlex.join(argv)}: no rule")
        sys.exit(subprocess.run(argv[1:]).returncode)
    elif name == "nice":
        i = 2 if argv[:1] == ["-n"] else 0
        sys.exit(subprocess.run(argv[i:]).returncode)
    elif name == "ip":
        # Network setup inside a namespace the shims do not make: nothing to do.
        return
    else:
        fail(f"{name}: no rule for this program")


if __name__ == "__main__":
    main()
