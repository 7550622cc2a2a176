#!/usr/bin/env python3
"""Synthetic checks and pictures of the MeshKit dashboards, against a live Prometheus.

    dashboards.py check  --prometheus URL [--window 15m | --start T --end T] ...
    dashboards.py render --prometheus URL --start T --end T --out DIR ...

`check` runs every panel query of every dashboard (dashboards/grafana/*.json) and every rule of
the pack (dashboards/rules/*.yml, as Prometheus loaded them) against a Prometheus, over a time
window, and fails when a query errors or returns nothing: after a deploy, a renamed metric, a
relabelled target or a rule file that did not load shows here, not as an empty panel weeks
later. For each recording rule it reads the series the rule records; for each alert, every
series selector of its expression (an alert that does not fire returns nothing by design, but
the series it reads must exist) and the expression itself (it must evaluate without error);
Prometheus's own health of every rule must be `ok`.

A query's outcome is one of: ok (a sample that is a number), nan (series, but every sample is
NaN: a quantile of a histogram without observations in the window), empty (no series), error.
`empty` and `error` fail the check; `nan` fails it with --strict. --allow-empty PATTERN
(fnmatch, on the check's key as printed) accepts an empty or nan outcome for what cannot have
data yet; with --strict, a pattern that matches no empty check fails too, so the list stays
minimal.

`render` draws each dashboard, with the data of the window, into an HTML page of SVG panels
(timeseries, stat and heatmap panels, laid out by their gridPos) and screenshots it with
headless Chromium into DIR/<uid>.png. Standard library only; no Grafana.

Exit status: 0 when every check passed (or the pictures were written), 1 when a check failed,
2 when the tool could not run (bad arguments, Prometheus unreachable, Chromium missing).
"""

from __future__ import annotations

import argparse
import fnmatch
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PACK = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------
# Durations and variables
# ----------------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """Bad arguments or an unusable setup: exit status 2."""


def parse_duration(text: str, what: str) -> float:
    """Seconds of a Prometheus-style duration (`90s`, `1m30s`, `500ms`)."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise UsageError(f"{what}: {text!r} is not a duration such as 30s, 5m or 1h30m")
    return total


def prom_duration(seconds: float) -> str:
    """A duration as PromQL takes it, in whole milliseconds."""
    ms = max(1, int(round(seconds * 1000)))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def parse_time(text: str, what: str) -> float:
    """Unix seconds, or `now`, or `now-<duration>`."""
    if text == "now":
        return time.time()
    if text.startswith("now-"):
        return time.time() - parse_duration(text[4:], what)
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not Unix seconds, now or now-<duration>") from None


@dataclass
class Window:
    """The time range queried and the variables Grafana would fill in."""

    start: float
    end: float
    step: float
    scrape_interval: float
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def rate_interval(self) -> float:
        # Grafana's $__rate_interval: max($__interval + scrape interval, 4 * scrape interval).
        return max(self.step + self.scrape_interval, 4 * self.scrape_interval)

    def substitute(self, expr: str) -> str:
        """`expr` with Grafana's variables replaced: the built-in intervals, and each dashboard
        variable by its value (a regex; `.*`, Grafana's "All", when not given)."""
        builtins = {
            "__rate_interval": prom_duration(self.rate_interval),
            "__interval": prom_duration(self.step),
            "__range": prom_duration(self.end - self.start),
        }

        def value(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            if name in builtins:
                return builtins[name]
            return self.variables.get(name, ".*")

        return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


# ----------------------------------------------------------------------------------------------
# The pack: dashboards and rule names
# ----------------------------------------------------------------------------------------------


@dataclass
class Target:
    ref: str
    expr: str
    legend: str
    heatmap: bool


@dataclass
class Panel:
    id: int
    type: str
    title: str
    description: str
    unit: str
    grid: dict
    targets: list[Target]


@dataclass
class Dashboard:
    uid: str
    title: str
    path: Path
    panels: list[Panel]


def load_dashboards(directory: Path) -> list[Dashboard]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise UsageError(f"no dashboard (*.json) in {directory}")
    out = []
    for path in files:
        try:
            model = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: not a readable JSON dashboard: {e}") from None
        flat = []
        for p in model.get("panels", []):
            flat.append(p)
            flat.extend(p.get("panels", []))  # panels inside a collapsed row
        panels = []
        for p in flat:
            if p.get("type") == "row":
                continue
            targets = [
                Target(
                    ref=t.get("refId", "?"),
                    expr=t["expr"],
                    legend=t.get("legendFormat", ""),
                    heatmap=t.get("format") == "heatmap",
                )
                for t in p.get("targets", [])
                if t.get("expr")
            ]
            panels.append(
                Panel(
                    id=p.get("id", 0),
                    type=p.get("type", "timeseries"),
                    title=p.get("title", "(untitled)"),
                    description=p.get("description", ""),
                    unit=p.get("fieldConfig", {}).get("defaults", {}).get("unit", "none"),
                    grid=p.get("gridPos", {"x": 0, "y": 0, "w": 12, "h": 8}),
                    targets=targets,
                )
            )
        out.append(Dashboard(model.get("uid", path.stem), model.get("title", path.stem), path, panels))
    return out


_RULE_NAME = re.compile(r"^\s*-\s*(record|alert):\s*(\S+)\s*$")


def rule_names(files: list[Path]) -> dict[str, str]:
    """`name -> record|alert` of the rule files, read from their `- record:`/`- alert:` lines
    (the pack writes one per line; no YAML parser in the standard library)."""
    names: dict[str, str] = {}
    for path in files:
        try:
            text = path.read_text()
        except OSError as e:
            raise UsageError(f"cannot read the rule file {path}: {e}") from None
        for line in text.splitlines():
            m = _RULE_NAME.match(line)
            if m:
                names[m.group(2)] = m.group(1)
    if not names:
        raise UsageError(f"no `- record:` or `- alert:` line in {', '.join(map(str, files))}")
    return names


# ----------------------------------------------------------------------------------------------
# PromQL: the series selectors of an expression
# ----------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<num>0x[0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=@{}()\[\],])
    """,
    re.X,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}


def tokens(expr: str) -> list[tuple[str, str, int, int]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r}")
        kind = m.lastgroup or "?"
        if kind != "ws":
            out.append((kind, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def _closing(toks: list, i: int, open_: str, close: str) -> int:
    depth = 0
    for j in range(i, len(toks)):
        if toks[j][1] == open_ and toks[j][0] == "op":
            depth += 1
        elif toks[j][1] == close and toks[j][0] == "op":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {open_}{close}")


def selectors(expr: str) -> list[str]:
    """The series selectors of `expr` (metric name and matchers, without ranges or offsets),
    in order, each once."""
    toks = tokens(expr)
    out: list[str] = []
    i = 0
    while i < len(toks):
        kind, text, start, _ = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in _GROUPING:
            i = _closing(toks, i + 1, "(", ")") + 1 if nxt == "(" else i + 1
            continue
        if kind == "ident" and (text.lower() in _KEYWORDS or nxt in ("(", "by", "without")):
            i += 1  # a keyword, a function, or an aggregation (its grouping may come first)
            continue
        if kind == "ident" or (kind == "op" and text == "{"):
            end = toks[i][3]
            j = i + 1 if kind == "ident" else i
            if j < len(toks) and toks[j][1] == "{":
                k = _closing(toks, j, "{", "}")
                end = toks[k][3]
                j = k + 1
            selector = expr[start:end]
            if selector not in out:
                out.append(selector)
            i = j
            continue
        if kind == "op" and text == "[":
            i = _closing(toks, i, "[", "]") + 1  # a range or a subquery's range and step
            continue
        i += 1
    return out


# ----------------------------------------------------------------------------------------------
# Prometheus's HTTP API
# ----------------------------------------------------------------------------------------------


class QueryError(Exception):
    """Prometheus refused or failed a query."""


class Prometheus:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, params: dict[str, str] | None = None) -> dict:
        data = urllib.parse.urlencode(params).encode() if params is not None else None
        request = urllib.request.Request(self.url + path, data=data)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            # 400 and 422 carry Prometheus's reason in a JSON body.
            try:
                body = json.load(e)
            except ValueError:
                raise QueryError(f"HTTP {e.code} from {self.url}{path}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise UsageError(
                f"cannot reach Prometheus at {self.url} ({e}): is it running, and is "
                "--prometheus its base URL (http://host:9090)?"
            ) from None
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    def query_range(self, expr: str, w: Window) -> list[dict]:
        data = self._call(
            "/api/v1/query_range",
            {"query": expr, "start": f"{w.start:.3f}", "end": f"{w.end:.3f}", "step": f"{w.step:g}"},
        )
        return data["result"]

    def query(self, expr: str, at: float) -> dict:
        return self._call("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})

    def rules(self) -> list[dict]:
        return [r for g in self._call("/api/v1/rules")["groups"] for r in g["rules"]]


def outcome(result: list[dict]) -> str:
    """ok, nan or empty, for a matrix or vector result."""
    if not result:
        return "empty"
    for series in result:
        values = series.get("values") or [series.get("value")]
        if any(v and v[1] != "NaN" for v in values):
            return "ok"
    return "nan"


# ----------------------------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------------------------


@dataclass
class Check:
    key: str
    expr: str
    status: str = "pending"
    series: int = 0
    detail: str = ""


def run_checks(prom: Prometheus, w: Window, dashboards: list[Dashboard], names: dict[str, str]) -> list[Check]:
    checks: list[Check] = []
    for d in dashboards:
        for p in d.panels:
            for t in p.targets:
                c = Check(f"panel {d.uid}/{p.title}/{t.ref}", w.substitute(t.expr))
                try:
                    result = prom.query_range(c.expr, w)
                    c.status, c.series = outcome(result), len(result)
                except QueryError as e:
                    c.status, c.detail = "error", str(e)
                checks.append(c)

    loaded: dict[str, list[dict]] = {}
    for rule in prom.rules():
        loaded.setdefault(rule["name"], []).append(rule)
    for name, kind in sorted(names.items(), key=lambda kv: (kv[1] != "record", kv[0])):
        rules = [r for r in loaded.get(name, []) if (r["type"] == "recording") == (kind == "record")]
        if not rules:
            checks.append(Check(f"{kind} {name}", "", "error", 0, "not loaded in Prometheus (check its rule_files and its log)"))
            continue
        for i, rule in enumerate(rules):
            suffix = f"#{i + 1}" if len(rules) > 1 else ""
            health = rule.get("health", "unknown")
            if health != "ok":
                detail = rule.get("lastError") or "not evaluated yet: run again after one evaluation interval"
                checks.append(Check(f"{kind} {name}{suffix} health", rule["query"], "error", 0, f"health {health}: {detail}"))
            if kind == "record":
                c = Check(f"record {name}", name)
                try:
                    result = prom.query_range(name, w)
                    c.status, c.series = outcome(result), len(result)
                except QueryError as e:
                    c.status, c.detail = "error", str(e)
                checks.append(c)
                continue
            # An alert: the expression evaluates, and every series it reads exists.
            c = Check(f"alert {name}{suffix} expression", rule["query"])
            try:
                prom.query(rule["query"], w.end)
                c.status, c.detail = "ok", "evaluates"
            except QueryError as e:
                c.status, c.detail = "error", str(e)
            checks.append(c)
            try:
                found = selectors(rule["query"])
            except ValueError as e:
                checks.append(Check(f"alert {name}{suffix} selectors", rule["query"], "error", 0, str(e)))
                continue
            for sel in found:
                if any(x.key == f"alert {name}: {sel}" for x in checks):
                    continue
                c = Check(f"alert {name}: {sel}", sel)
                span = prom_duration(max(w.end - w.start, w.step))
                try:
                    result = prom.query(f"last_over_time({sel}[{span}])", w.end)["result"]
                    c.status, c.series = outcome(result), len(result)
                except QueryError as e:
                    c.status, c.detail = "error", str(e)
                checks.append(c)
    return checks


def cmd_check(args: argparse.Namespace) -> int:
    w = window(args)
    dashboards = load_dashboards(Path(args.dashboards))
    rule_files = [Path(f) for f in args.rules] if args.rules else sorted((PACK / "rules").glob("*.yml"))
    names = rule_names(rule_files)
    prom = Prometheus(args.prometheus, args.timeout)
    checks = run_checks(prom, w, dashboards, names)

    failed_allowances = []
    for pattern in args.allow_empty:
        matched = [c for c in checks if fnmatch.fnmatchcase(c.key, pattern)]
        soft = [c for c in matched if c.status in ("empty", "nan")]
        for c in soft:
            c.detail = f"allowed by --allow-empty {pattern!r}"
            c.status = f"allowed-{c.status}"
        if not soft:
            failed_allowances.append(pattern)
    failing = {"empty", "error"} | ({"nan"} if args.strict else set())
    failures = [c for c in checks if c.status in failing]

    if args.json:
        print(json.dumps({
            "prometheus": prom.url,
            "start": w.start, "end": w.end, "step": w.step,
            "rate_interval": prom_duration(w.rate_interval),
            "checks": [c.__dict__ for c in checks],
            "unused_allow_empty": failed_allowances,
            "passed": not failures and not (args.strict and failed_allowances),
        }, indent=2))
    else:
        for c in checks:
            mark = {"ok": "ok", "nan": "NAN", "empty": "EMPTY", "error": "ERROR"}.get(c.status, c.status)
            extra = f"  {c.series} series" if c.series else ""
            extra += f"  ({c.detail})" if c.detail else ""
            print(f"{mark:<14} {c.key}{extra}")
            if c.status in failing:
                print(f"{'':14}   query: {c.expr}")
        counts: dict[str, int] = {}
        for c in checks:
            counts[c.status] = counts.get(c.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"\n{len(checks)} checks against {prom.url} over {prom_duration(w.end - w.start)} "
              f"(step {prom_duration(w.step)}, $__rate_interval {prom_duration(w.rate_interval)}): {summary}")
        for pattern in failed_allowances:
            print(f"--allow-empty {pattern!r} matched no empty check"
                  + (": remove it (--strict)" if args.strict else ""))
        if failures:
            print(f"FAILED: {len(failures)} queries returned nothing or an error "
                  "(a metric renamed, a target without its cluster label, a rule file not loaded?)")
    if failures or (args.strict and failed_allowances):
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# render
# ----------------------------------------------------------------------------------------------

PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c"]

_SI = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _si(v: float, suffix: str) -> str:
    for scale, prefix in _SI:
        if abs(v) >= scale:
            return f"{_num(v / scale)} {prefix}{suffix}".rstrip()
    return f"{_num(v)} {suffix}".rstrip()


def format_value(v: float, unit: str) -> str:
    """A value as Grafana's unit would show it (the units the pack uses)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if unit == "s":
        a = abs(v)
        for limit, div, name in ((1e-3, 1e-6, "µs"), (1, 1e-3, "ms"), (60, 1, "s"),
                                 (3600, 60, "min"), (86400, 3600, "hour"), (365 * 86400, 86400, "day"),
                                 (math.inf, 365 * 86400, "year")):
            if a < limit:
                return f"{_num(v / div)} {name}"
    if unit == "percentunit":
        return f"{_num(v * 100)}%"
    suffix = {"ops": "ops/s", "reqps": "req/s", "pps": "p/s", "Bps": "B/s", "bytes": "B"}.get(unit, "")
    return _si(v, suffix)


def legend(fmt: str, labels: dict[str, str]) -> str:
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or "value"
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}" if shown else "value"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.floor(lo / step) * step
    count = math.ceil((hi - first) / step - 1e-9)
    return [first + i * step for i in range(count + 1)]  # the last tick at or above hi


def _series(result: list[dict]) -> list[tuple[dict, list[tuple[float, float]]]]:
    out = []
    for s in result:
        points = [(float(t), float(v)) for t, v in s.get("values", [])]
        out.append((s.get("metric", {}), points))
    return out


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def _time_axis(w: Window, left: float, width: float, y: float) -> str:
    """Five time labels under a plot, the first and last inside its edges."""
    labels = []
    for i in range(5):
        t = w.start + (w.end - w.start) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        labels.append(f'<text x="{left + width * i / 4:.1f}" y="{y}" class="xlab" '
                      f'style="text-anchor:{anchor}">{_clock(t)}</text>')
    return "".join(labels)


def svg_timeseries(panel: Panel, data: list, w: Window, width: int, height: int) -> str:
    lines = [(legend(t.legend, m), pts) for t, res in data for m, pts in _series(res)]
    finite = [v for _, pts in lines for _, v in pts if math.isfinite(v)]
    legend_rows = min(len(lines), 4)
    left, right, top, bottom = 76, 12, 8, 22 + 16 * legend_rows
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    if not finite:
        out.append(f'<text x="{width / 2}" y="{height / 2}" class="nodata">No data</text></svg>')
        return "".join(out)
    lo, hi = min(finite), max(finite)
    lo = min(lo, 0) if lo >= 0 else lo
    if hi == lo:
        hi = lo + (abs(lo) or 1)
    ticks = _nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

    def x(t: float) -> float:
        return left + (t - w.start) / max(w.end - w.start, 1e-9) * pw

    def y(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    for tv in ticks:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(tv):.1f}" y2="{y(tv):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y(tv) + 4:.1f}" class="ylab">{html.escape(format_value(tv, panel.unit))}</text>')
    out.append(_time_axis(w, left, pw, top + ph + 15))
    for n, (name, pts) in enumerate(lines):
        color = PALETTE[n % len(PALETTE)]
        segments, current, last = [], [], None
        for t, v in pts:
            # A missing sample (the series was absent at a step) or NaN ends a segment.
            gap = last is not None and t - last > w.step * 1.5
            if current and (gap or not math.isfinite(v)):
                segments.append(current)
                current = []
            if math.isfinite(v):
                current.append(f"{x(t):.1f},{y(v):.1f}")
            last = t
        if current:
            segments.append(current)
        for seg in segments:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{color}"/>')
            else:
                out.append(f'<polyline points="{" ".join(seg)}" stroke="{color}" fill="none" stroke-width="1.5"/>')
    # The legend: up to four rows, as many entries a row as fit.
    per_row = max(1, math.ceil(len(lines) / legend_rows)) if legend_rows else 1
    col = pw / per_row
    for n, (name, _) in enumerate(lines[: legend_rows * per_row]):
        lx = left + (n % per_row) * col
        ly = top + ph + 32 + (n // per_row) * 16
        label = name if len(name) * 6.5 < col - 16 else name[: max(3, int((col - 16) / 6.5) - 1)] + "…"
        out.append(f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="3" fill="{PALETTE[n % len(PALETTE)]}"/>'
                   f'<text x="{lx + 14:.1f}" y="{ly - 3}" class="legend">{html.escape(label)}</text>')
    if len(lines) > legend_rows * per_row:
        out.append(f'<text x="{left + pw}" y="{height - 4}" class="more">+{len(lines) - legend_rows * per_row} more</text>')
    out.append("</svg>")
    return "".join(out)


def svg_stat(panel: Panel, data: list, width: int, height: int) -> str:
    values = []
    for t, res in data:
        for m, pts in _series(res):
            last = next((v for _, v in reversed(pts) if math.isfinite(v)), math.nan)
            values.append((legend(t.legend, m), last))
    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    if not values:
        out.append(f'<text x="{width / 2}" y="{height / 2}" class="nodata">No data</text></svg>')
        return "".join(out)
    n = len(values)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    cw, rh = width / cols, height / rows
    size = max(12, min(rh * 0.45, cw / 5))
    fit = max(4, int(cw / 7.5))  # characters of the name that fit in a cell at 12 px
    for i, (name, v) in enumerate(values):
        cx, cy = (i % cols + 0.5) * cw, (i // cols) * rh
        name = name if len(name) <= fit else name[: fit - 1] + "…"
        out.append(f'<text x="{cx:.1f}" y="{cy + rh * 0.3:.1f}" class="statname">{html.escape(name)}</text>')
        out.append(f'<text x="{cx:.1f}" y="{cy + rh * 0.3 + size:.1f}" class="statvalue" '
                   f'style="font-size:{size:.0f}px">{html.escape(format_value(v, panel.unit))}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_heatmap(panel: Panel, data: list, w: Window, width: int, height: int) -> str:
    buckets: dict[float, dict[float, float]] = {}
    for _, res in data:
        for m, pts in _series(res):
            le = float(m.get("le", "+Inf"))
            for t, v in pts:
                buckets.setdefault(t, {})[le] = v
    out = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    bounds = sorted({le for col in buckets.values() for le in col})
    if not buckets or not bounds:
        out.append(f'<text x="{width / 2}" y="{height / 2}" class="nodata">No data</text></svg>')
        return "".join(out)
    left, right, top, bottom = 76, 12, 8, 22
    pw, ph = width - left - right, height - top - bottom
    times = sorted(buckets)
    cells = {}
    peak = 0.0
    for t in times:  # cumulative buckets to counts per bucket, as Grafana's heatmap format does
        prev = 0.0
        for le in bounds:
            v = buckets[t].get(le, prev)
            v = v if math.isfinite(v) else prev
            cells[(t, le)] = max(v - prev, 0.0)
            peak = max(peak, cells[(t, le)])
            prev = v
    cw = pw / len(times)
    rh = ph / len(bounds)
    for (t, le), v in cells.items():
        if v <= 0:
            continue
        a = 0.15 + 0.85 * (v / peak if peak else 0)
        cx = left + times.index(t) * cw
        cy = top + ph - (bounds.index(le) + 1) * rh
        out.append(f'<rect x="{cx:.1f}" y="{cy:.1f}" width="{max(cw - 1, 1):.1f}" height="{max(rh - 1, 1):.1f}" '
                   f'fill="#fade2a" fill-opacity="{a:.2f}"/>')
    every = max(1, math.ceil(len(bounds) / max(1, int(ph / 14))))
    for i, le in enumerate(bounds):
        if i % every == 0:
            label = "+Inf" if math.isinf(le) else format_value(le, panel.unit)
            out.append(f'<text x="{left - 6}" y="{top + ph - i * rh - rh / 2 + 4:.1f}" class="ylab">{html.escape(label)}</text>')
    out.append(_time_axis(w, left, pw, top + ph + 15))
    out.append("</svg>")
    return "".join(out)


PAGE_WIDTH = 1440
ROW_HEIGHT = 30  # Grafana's grid row, in pixels
STYLE = """
body { margin: 0; background: #111217; color: #ccccdc; font-family: 'DejaVu Sans', sans-serif; }
header { padding: 12px 16px 4px; }
header h1 { font-size: 20px; margin: 0 0 4px; font-weight: 500; }
header p { font-size: 12px; margin: 0; color: #8e8e9e; }
.grid { position: relative; margin: 8px; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f; border: 1px solid #2c3235;
         border-radius: 2px; padding: 6px 8px; overflow: hidden; }
.panel h2 { font-size: 13px; margin: 0; font-weight: 500; white-space: nowrap; }
.panel .desc { font-size: 10.5px; color: #8e8e9e; margin: 2px 0 4px; height: 26px; overflow: hidden; }
svg text { font-family: 'DejaVu Sans', sans-serif; fill: #ccccdc; }
svg .grid { stroke: #2c3235; stroke-width: 1; }
svg .ylab { font-size: 10px; text-anchor: end; fill: #8e8e9e; }
svg .xlab { font-size: 10px; text-anchor: middle; fill: #8e8e9e; }
svg .legend { font-size: 10.5px; }
svg .more { font-size: 10px; text-anchor: end; fill: #8e8e9e; }
svg .nodata { font-size: 14px; text-anchor: middle; fill: #8e8e9e; }
svg .statname { font-size: 12px; text-anchor: middle; fill: #8e8e9e; }
svg .statvalue { text-anchor: middle; fill: #73bf69; font-weight: 600; }
"""


def render_dashboard(prom: Prometheus, d: Dashboard, w: Window) -> tuple[str, int]:
    col = (PAGE_WIDTH - 16) / 24
    blocks, bottom = [], 0
    for p in d.panels:
        g = p.grid
        left, top = g.get("x", 0) * col, g.get("y", 0) * ROW_HEIGHT
        width, height = g.get("w", 12) * col - 6, g.get("h", 8) * ROW_HEIGHT - 6
        bottom = max(bottom, top + height)
        data = []
        for t in p.targets:
            try:
                data.append((t, prom.query_range(w.substitute(t.expr), w)))
            except QueryError as e:
                print(f"{d.uid}/{p.title}/{t.ref}: {e}", file=sys.stderr)
        sw, sh = int(width - 18), int(height - 50)
        if p.type == "stat":
            svg = svg_stat(p, data, sw, sh)
        elif p.type == "heatmap":
            svg = svg_heatmap(p, data, w, sw, sh)
        else:
            svg = svg_timeseries(p, data, w, sw, sh)
        blocks.append(
            f'<div class="panel" style="left:{left:.0f}px;top:{top:.0f}px;width:{width:.0f}px;height:{height:.0f}px">'
            f"<h2>{html.escape(p.title)}</h2><div class=\"desc\">{html.escape(p.description)}</div>{svg}</div>"
        )
    variables = ", ".join(f"{k}={v}" for k, v in sorted(w.variables.items())) or "every cluster and instance"
    page = (
        f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(d.title)}</title>"
        f"<style>{STYLE}</style></head><body><header><h1>{html.escape(d.title)}</h1>"
        f"<p>{html.escape(d.uid)} · {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(w.start))} to "
        f"{_clock(w.end)} UTC · {html.escape(variables)} · $__rate_interval {prom_duration(w.rate_interval)} · "
        f"drawn by dashboards/tools/dashboards.py render from Prometheus query_range</p></header>"
        f'<div class="grid" style="height:{bottom + 8:.0f}px">{"".join(blocks)}</div></body></html>'
    )
    return page, int(bottom + 80)


def find_chromium(given: str | None) -> str:
    for name in ([given] if given else ["chromium", "chromium-browser", "google-chrome"]):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise UsageError("no headless Chromium found (apt-get install chromium, or --chromium PATH)")


def cmd_render(args: argparse.Namespace) -> int:
    w = window(args)
    dashboards = load_dashboards(Path(args.dashboards))
    prom = Prometheus(args.prometheus, args.timeout)
    chromium = find_chromium(args.chromium)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="meshkit-dashboards-") as scratch:
        pages = Path(args.html) if args.html else Path(scratch)
        pages.mkdir(parents=True, exist_ok=True)
        for d in dashboards:
            page, height = render_dashboard(prom, d, w)
            page_path = pages / f"{d.uid}.html"
            page_path.write_text(page)
            png = out / f"{d.path.stem}.png"
            profile = Path(scratch) / "profile"
            command = [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                f"--window-size={PAGE_WIDTH},{height}", f"--screenshot={png}", page_path.as_uri(),
            ]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout * 4)
            except subprocess.TimeoutExpired:
                print(f"{chromium} took longer than {args.timeout * 4:g} s on {page_path}", file=sys.stderr)
                return 2
            if done.returncode != 0 or not png.exists():
                print(f"{chromium} failed on {page_path} ({done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
                return 2
            print(f"{png} ({len(d.panels)} panels, {png.stat().st_size // 1024} KiB)")
    return 0


# ----------------------------------------------------------------------------------------------


def window(args: argparse.Namespace) -> Window:
    step = parse_duration(args.step, "--step")
    scrape = parse_duration(args.scrape_interval, "--scrape-interval")
    end = parse_time(args.end, "--end")
    start = parse_time(args.start, "--start") if args.start else end - parse_duration(args.window, "--window")
    if start >= end:
        raise UsageError(f"--start ({start:.0f}) must be before --end ({end:.0f})")
    variables = {}
    for pair in args.var:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--var {pair!r}: expected NAME=REGEX, e.g. --var cluster=prod-eu")
        variables[name] = value
    return Window(start, end, step, scrape, variables)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prometheus", required=True, help="base URL of the Prometheus, e.g. http://127.0.0.1:9090")
    common.add_argument("--window", default="15m", help="how far back from --end (default 15m)")
    common.add_argument("--start", help="Unix seconds or now-<duration> (instead of --window)")
    common.add_argument("--end", default="now", help="Unix seconds, now or now-<duration> (default now)")
    common.add_argument("--step", default="30s", help="query_range step, Grafana's $__interval (default 30s)")
    common.add_argument("--scrape-interval", default="15s",
                        help="the targets' scrape interval, for $__rate_interval (default 15s, Grafana's)")
    common.add_argument("--var", action="append", default=[], metavar="NAME=REGEX",
                        help="a dashboard variable's value (default .*, Grafana's All)")
    common.add_argument("--dashboards", default=str(PACK / "grafana"), help="directory of the dashboard JSON files")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request (default 30)")

    check = sub.add_parser("check", parents=[common], help="run every panel and rule expression")
    check.add_argument("--rules", action="append", default=[], metavar="FILE",
                       help="rule file whose rules must be loaded and have data (default dashboards/rules/*.yml)")
    check.add_argument("--allow-empty", action="append", default=[], metavar="PATTERN",
                       help="accept an empty (or NaN) result for the checks whose key matches (fnmatch)")
    check.add_argument("--strict", action="store_true",
                       help="NaN-only results fail too, and so does an --allow-empty that matches nothing empty")
    check.add_argument("--json", action="store_true", help="print the checks as JSON")

    render = sub.add_parser("render", parents=[common], help="draw every dashboard into PNGs")
    render.add_argument("--out", required=True, help="directory of the PNGs (<dashboard file stem>.png)")
    render.add_argument("--html", help="keep the HTML pages in this directory")
    render.add_argument("--chromium", help="the Chromium binary (default: chromium on PATH)")

    args = parser.parse_args(argv)
    try:
        return cmd_check(args) if args.command == "check" else cmd_render(args)
    except UsageError as e:
        print(f"dashboards.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
