"""Parser and comparer for the guest workload suite protocol (tests/guest/suite-run).

The protocol, as printed by suite-run (natively or on the guest's serial console):

    @@SUITE START
    @@BEGIN <name>
    ...program output: "result: <token>", "cpu: <key>=<value>", "info: <text>", other...
    @@END <name> status=<exit code | 128+signal | 124 timeout> guest_ns=<ns>
    @@SUITE DONE programs=<n> failed=<n>

Usage:

    run = parse(text_or_lines)            # or parse_file(path), parse_timestamped(text)
    diffs = compare(run_a, run_b, "native", "bochs")
    problems = failures(run)

parse() accepts a whole text, a file object, or an iterable of lines; a line may also be
a (host_seconds, text) pair, in which case each program gets "host_wall_s" (time between
its @@BEGIN and @@END lines as seen by the host).  Console noise is tolerated: protocol
markers are found anywhere in a line (a kernel message may precede them), trailing CR is
dropped, lines before @@SUITE START or between programs are kept in "noise".

Result shape:

    {"started": bool, "complete": bool, "done": bool (same as complete),
     "summary": {"programs": n, "failed": n} | None,
     "programs": [{"name", "status", "result", "cpu": {}, "info": [], "output": [],
                   "guest_s", "host_wall_s", "ended": bool, "problems": []}],
     "noise": [lines]}

"status" is None and "ended" False for a program whose @@END never came (truncated
output); "result" is the token of its "result:" line, or None if there was none.
"""
from __future__ import annotations

import re
from typing import Iterable, TextIO

__all__ = ["parse", "parse_file", "parse_timestamped", "compare", "failures"]

_MARK = re.compile(r"@@(SUITE START|SUITE DONE|BEGIN|END)(?=\s|$)(.*)$")
_TS_LINE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s(.*)$")


def _kv(fields: Iterable[str]) -> dict:
    out = {}
    for f in fields:
        if "=" in f:
            k, v = f.split("=", 1)
            try:
                out[k] = int(v)
            except ValueError:
                out[k] = v
    return out


def _new_program(name: str, t0: float | None) -> dict:
    return {"name": name, "status": None, "result": None, "cpu": {}, "info": [], "output": [],
            "guest_s": None, "host_wall_s": None, "ended": False, "problems": [],
            "_t0": t0, "_results": 0}


def _items(source) -> Iterable[tuple[float | None, str]]:
    if isinstance(source, str):
        for line in source.splitlines():
            yield None, line
        return
    for item in source:
        if isinstance(item, tuple):
            t, text = item
            yield (float(t) if t is not None else None), text
        else:
            yield None, item


def _finish(p: dict) -> None:
    if not p["ended"]:
        p["problems"].append("no @@END line (output truncated or program hung)")
    if p["_results"] == 0:
        p["problems"].append("no result line")
    elif p["_results"] > 1:
        p["problems"].append(f"{p['_results']} result lines")
    if p["result"] is not None and p["result"].startswith("FAIL"):
        p["problems"].append(f"result {p['result']}")
    if p["status"] not in (None, 0):
        p["problems"].append(f"exit status {p['status']}")
    del p["_t0"], p["_results"]


def parse(source: str | TextIO | Iterable) -> dict:
    """Parses suite-run output; see the module docstring for accepted inputs and the shape."""
    run = {"started": False, "complete": False, "done": False, "summary": None,
           "programs": [], "noise": []}
    cur: dict | None = None
    for t, raw in _items(source):
        line = raw.rstrip("\r\n").rstrip("\r")
        m = _MARK.search(line)
        if m:
            kind, rest = m.group(1), m.group(2).split()
            if kind == "SUITE START":
                run["started"] = True
            elif kind == "SUITE DONE":
                if cur is not None:
                    _finish(cur)
                    cur = None
                run["complete"] = run["done"] = True
                run["summary"] = {k: v for k, v in _kv(rest).items()}
            elif kind == "BEGIN":
                if cur is not None:
                    _finish(cur)
                cur = _new_program(rest[0] if rest else "?", t)
                run["programs"].append(cur)
            else:  # END
                name = rest[0] if rest else "?"
                fields = _kv(rest[1:])
                if cur is None or cur["name"] != name:
                    if cur is not None:
                        _finish(cur)
                    cur = _new_program(name, None)
                    cur["problems"].append("@@END without matching @@BEGIN")
                    run["programs"].append(cur)
                cur["ended"] = True
                st = fields.get("status")
                cur["status"] = st if isinstance(st, int) else None
                gns = fields.get("guest_ns")
                cur["guest_s"] = gns / 1e9 if isinstance(gns, int) else None
                if t is not None and cur["_t0"] is not None:
                    cur["host_wall_s"] = round(t - cur["_t0"], 3)
                _finish(cur)
                cur = None
            continue
        if cur is None:
            run["noise"].append(line)
            continue
        cur["output"].append(line)
        s = line.lstrip()
        if s.startswith("result:"):
            cur["_results"] += 1
            if cur["result"] is None:
                tok = s[len("result:"):].strip()
                cur["result"] = tok.split()[0] if tok else ""
        elif s.startswith("cpu:"):
            kv = s[len("cpu:"):].strip()
            if "=" in kv:
                k, v = kv.split("=", 1)
                cur["cpu"][k.strip()] = v.strip()
        elif s.startswith("info:"):
            cur["info"].append(s[len("info:"):].strip())
    if cur is not None:
        _finish(cur)
    return run


def parse_file(path: str, timestamped: bool = False) -> dict:
    """Parses a file of suite-run output.  timestamped=True reads "<seconds> <text>" lines
    (the console-ts.txt format of ci/run-guest)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return parse_timestamped(text) if timestamped else parse(text)


def parse_timestamped(text: str) -> dict:
    """Parses lines of the form "<host seconds> <text>"; other lines get no time stamp."""
    items = []
    for line in text.splitlines():
        m = _TS_LINE.match(line)
        items.append((float(m.group(1)), m.group(2)) if m else (None, line))
    return parse(items)


def failures(run: dict) -> list[str]:
    """Problems of one run: incomplete suite, programs with problems."""
    out = []
    if not run.get("started"):
        out.append("suite did not start (no @@SUITE START)")
    if not run.get("complete"):
        out.append("suite incomplete (no @@SUITE DONE)")
    for p in run.get("programs", []):
        for prob in p.get("problems", []):
            out.append(f"{p['name']}: {prob}")
    return out


def compare(a: dict, b: dict, a_name: str = "a", b_name: str = "b",
            names: Iterable[str] | None = None,
            cpu_lines_except: Iterable[str] | None = None) -> list[str]:
    """Compares two parsed runs program by program: result token and exit status.
    info: lines and timings are ignored, and cpu: lines too unless cpu_lines_except is
    given: then every program's cpu: lines must be the same, except those of the programs
    it names.  names restricts the comparison to those programs (missing ones are
    reported).  Returns human-readable differences; [] if the runs agree."""
    cpu_skip = None if cpu_lines_except is None else set(cpu_lines_except)
    diffs = []
    for run, label in ((a, a_name), (b, b_name)):
        if not run.get("complete"):
            diffs.append(f"{label}: suite incomplete (no @@SUITE DONE)")
    pa = {p["name"]: p for p in a.get("programs", [])}
    pb = {p["name"]: p for p in b.get("programs", [])}
    if names is not None:
        order = list(names)
    else:
        order = list(pa) + [n for n in pb if n not in pa]
    for n in order:
        x, y = pa.get(n), pb.get(n)
        if x is None or y is None:
            missing = [lab for lab, p in ((a_name, x), (b_name, y)) if p is None]
            diffs.append(f"{n}: not run in {' and '.join(missing)}")
            continue
        if x["status"] != y["status"]:
            diffs.append(f"{n}: status {a_name}={_fmt(x['status'])} {b_name}={_fmt(y['status'])}")
        if x["result"] != y["result"]:
            diffs.append(f"{n}: result {a_name}={_fmt(x['result'])} {b_name}={_fmt(y['result'])}")
        elif x["result"] is None:
            diffs.append(f"{n}: no result line in either run")
        if cpu_skip is not None and n not in cpu_skip:
            cx, cy = x.get("cpu") or {}, y.get("cpu") or {}
            for k in sorted(set(cx) | set(cy)):
                if cx.get(k) != cy.get(k):
                    diffs.append(f"{n}: cpu: {k} {a_name}={_fmt(cx.get(k))} "
                                 f"{b_name}={_fmt(cy.get(k))}")
    return diffs


def _fmt(v) -> str:
    if v is None:
        return "(none)"
    return str(v)
